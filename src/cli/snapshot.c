/* qimg - "snapshot": list, create, apply or delete internal snapshots.
 * Beyond qemu-img: -f names the format, and -d also takes an id. */
#include <errno.h>
#include <inttypes.h>
#include <sys/time.h>
#include <time.h>

#include "cli.h"

enum action { ACT_NONE, ACT_LIST, ACT_APPLY, ACT_CREATE, ACT_DELETE };

static void print_row(const struct qimg_snapshot_info *sn)
{
    char size[32], date[32] = "", clock[64], icount[32] = "";
    qimg_format_size(sn->vm_state_size, size, sizeof size);
    time_t t = (time_t)sn->date_sec;
    struct tm tm;
    if (localtime_r(&t, &tm))
        strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t ms = sn->vm_clock_nsec / 1000000;
    snprintf(clock, sizeof clock, "%02" PRIu64 ":%02u:%02u.%03u", ms / 3600000,
             (unsigned)(ms / 60000 % 60), (unsigned)(ms / 1000 % 60), (unsigned)(ms % 1000));
    if (sn->icount >= 0)
        snprintf(icount, sizeof icount, "%" PRId64, sn->icount);
    printf("%-9s %-16s %8s%20s%13s%11s\n", sn->id ? sn->id : "", sn->name ? sn->name : "",
           size, date, clock, icount);
}

/* Nothing at all for images without snapshots (or formats without them). */
static void list_snapshots(qimg_image *img)
{
    struct qimg_snapshot_info *list;
    size_t n;
    if (qimg_snapshot_list(img, &list, &n) < 0 || n == 0)
        return;
    printf("Snapshot list:\n");
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (size_t i = 0; i < n; i++)
        print_row(&list[i]);
    qimg_snapshot_list_free(list, n);
}

static int run_action(qimg_image *img, enum action act, const char *name)
{
    int r;
    switch (act) {
    case ACT_LIST:
        list_snapshots(img);
        return 0;
    case ACT_CREATE:
        r = qimg_snapshot_create(img, name);
        if (r < 0)
            error_report("Could not create snapshot '%s': %d (%s)", name, r, strerror(-r));
        return r < 0;
    case ACT_APPLY:
        r = qimg_snapshot_apply(img, name);
        if (r < 0)
            error_report("Could not apply snapshot '%s': %s", name, qimg_last_error());
        return r < 0;
    case ACT_DELETE:
        r = qimg_snapshot_delete(img, name);
        if (r < 0)
            error_report("Could not delete snapshot '%s': %s", name, qimg_last_error());
        return r < 0;
    default:
        return 0;
    }
}

int cmd_snapshot(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    enum action act = ACT_NONE;
    const char *name = NULL, *fmt = NULL;
    bool image_opts = false;
    unsigned flags = QIMG_OPEN_RDWR;
    int c;
    while ((c = cli_getopt(argc, argv, ":la:c:d:f:hqU", longopts)) != -1) {
        switch (c) {
        case 'l': case 'a': case 'c': case 'd':
            if (act != ACT_NONE)
                error_exit("Cannot mix '-l', '-a', '-c', '-d'");
            act = c == 'l' ? ACT_LIST : c == 'a' ? ACT_APPLY : c == 'c' ? ACT_CREATE : ACT_DELETE;
            if (c == 'l')
                flags &= ~(unsigned)QIMG_OPEN_RDWR;
            else
                name = optarg;
            break;
        case 'f': fmt = optarg; break;
        case 'q': break;   /* snapshot prints nothing but errors anyway */
        case 'U': flags |= QIMG_OPEN_FORCE_SHARE; break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (optind != argc - 1)
        error_exit("Expecting one image file name");
    const char *filename = argv[optind];
    if ((flags & QIMG_OPEN_FORCE_SHARE) && (flags & QIMG_OPEN_RDWR)) {
        error_report("Could not open '%s': force-share=on can only be used with read-only images",
                     filename);
        return 1;
    }
    /* safe mode: this command reads no backing file, so none is opened */
    if (qimg_safe_mode())
        flags |= QIMG_OPEN_NO_BACKING;
    qimg_image *img = cli_open(filename, fmt, flags, image_opts);
    if (!img)
        return 1;
    int ret = run_action(img, act, name);
    qimg_close(img);
    return ret;
}
