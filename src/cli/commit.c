/* qimg - "commit": write an image's data into its backing file (or a
 * deeper layer with -b), then empty the image unless -d. */
#include <errno.h>

#include "cli.h"


static int commit_image(qimg_image *img, const char *filename, const char *base, bool drop,
                        int64_t rate, struct progress *prog)
{
    qimg_image *base_img;
    if (base) {
        base_img = qimg_find_backing_image(img, base);
        if (!base_img) {
            error_report("Did not find '%s' in the backing chain of '%s'", base, filename);
            return 1;
        }
    } else {
        /* qemu-img's default is the immediate backing file, not the bottom */
        base_img = qimg_backing(img);
        if (!base_img) {
            error_report("Image does not have a backing file");
            return 1;
        }
    }
    struct qimg_commit_params p = {
        .top = img, .base = base_img, .keep_top = drop, .rate_limit = (uint64_t)rate,
        .progress = progress_callback, .progress_opaque = prog,
    };
    if (qimg_commit(&p) < 0)
        return -1;   /* reported after the close, as qemu-img does */
    return 0;
}

int cmd_commit(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_END,
    };
    const char *fmt = NULL, *cache = "writeback", *base = NULL;
    bool drop = false, progress = false, quiet = false, image_opts = false;
    int64_t rate = 0;
    int c;
    while ((c = cli_getopt(argc, argv, ":f:ht:b:dpqr:", longopts)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 't': cache = optarg; break;
        case 'b': base = optarg; drop = true; break;   /* -b implies -d */
        case 'd': drop = true; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 'r':
            if (cli_cvtnum("rate limit", optarg, 0, INT64_MAX, &rate) < 0)
                return 1;
            break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (quiet)
        progress = false;
    if (optind != argc - 1)
        error_exit("Expecting one image file name");
    const char *filename = argv[optind];
    unsigned flags = QIMG_OPEN_RDWR | QIMG_OPEN_UNMAP;   /* as qemu-img's commit */
    if (parse_cache_mode(cache, &flags) < 0) {
        error_report("Invalid cache option: %s", cache);
        return 1;
    }
    qimg_image *img = cli_open(filename, fmt, flags, image_opts);
    if (!img)
        return 1;
    struct progress prog;
    progress_init(&prog, progress, 1.0f);
    progress_print(&prog, 0, 100);
    int ret = commit_image(img, filename, base, drop, rate, &prog);
    progress_end(&prog);
    /* qemu-img reports a failed commit once the images are closed: what
     * the close reports (caches it could not write) comes first */
    CLEANUP_FREE char *why = ret < 0 ? strdup(qimg_last_error()) : NULL;
    qimg_close(img);
    if (ret < 0) {
        error_report("%s", why ? why : "");
        ret = 1;
    }
    if (ret == 0 && !quiet)
        printf("Image committed.\n");
    return ret;
}
