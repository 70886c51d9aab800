/* qimg - "bitmap": edit the persistent dirty bitmaps of an image.  The
 * actions run in the order given; the first failure stops them.
 *
 * Beyond qemu-img: "bitmap --dump FILE NAME [--output=human|json]" prints
 * the dirty ranges of a bitmap, read-only (-f, --image-opts, --object and
 * -U as for the other read-only commands).  A range is a run of set bits,
 * in guest bytes: it starts on a granularity boundary and ends on one or
 * at the end of the disk.  Human output: one line per range, "START LENGTH"
 * in decimal bytes, nothing when the bitmap is clean.  JSON: a list of
 * {"start": S, "length": L} objects, one per line as "map" prints its
 * entries, "[]" when clean.  Errors read as the other actions':
 * "Operation dump on bitmap NAME failed: ...". */
#include <errno.h>
#include <inttypes.h>

#include "cli.h"

enum { OPT_ADD = CLI_OPT_COMMAND, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE, OPT_MERGE };

struct action { int op; const char *src; };

static const char *op_name(int op)
{
    switch (op) {
    case OPT_ADD: return "add";
    case OPT_REMOVE: return "remove";
    case OPT_CLEAR: return "clear";
    case OPT_ENABLE: return "enable";
    case OPT_DISABLE: return "disable";
    default: return "merge";
    }
}

static int run_action(const struct action *a, qimg_image *img, qimg_image *src,
                      const char *bitmap, uint64_t granularity)
{
    switch (a->op) {
    case OPT_ADD: return qimg_bitmap_add(img, bitmap, granularity);
    case OPT_REMOVE: return qimg_bitmap_remove(img, bitmap);
    case OPT_CLEAR: return qimg_bitmap_clear(img, bitmap);
    case OPT_ENABLE: return qimg_bitmap_set_enabled(img, bitmap, true);
    case OPT_DISABLE: return qimg_bitmap_set_enabled(img, bitmap, false);
    default: return qimg_bitmap_merge(img, bitmap, src, a->src);
    }
}

/* The usage checks qemu-img makes after parsing, in its order. */
static bool usage_ok(size_t nact, bool add, bool merge, int64_t granularity,
                     const char *src_file, const char *src_fmt, int nargs)
{
    const char *msg = NULL;
    if (nact == 0)
        msg = "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge";
    else if (granularity && !add)
        msg = "granularity only supported with --add";
    else if (src_fmt && !src_file)
        msg = "-F only supported with -b";
    else if (src_file && !merge)
        msg = "Merge bitmap source file only supported with --merge";
    else if (nargs != 2)
        msg = "Expecting filename and bitmap name";
    if (msg)
        error_report("%s", msg);
    return msg == NULL;
}

static int run_all(const struct action *acts, size_t nact, qimg_image *img, qimg_image *src,
                   const char *bitmap, uint64_t granularity)
{
    for (size_t i = 0; i < nact; i++) {
        if (run_action(&acts[i], img, src, bitmap, granularity) < 0) {
            error_report("Operation %s on bitmap %s failed: %s", op_name(acts[i].op), bitmap,
                         qimg_last_error());
            return 1;
        }
    }
    return 0;
}

/* --dump: the dirty ranges of one bitmap. */
static int print_ranges(qimg_image *img, const char *bitmap, enum output_format out)
{
    uint64_t off = 0, start, len;
    bool first = true;
    int r;
    while ((r = qimg_bitmap_next_dirty(img, bitmap, off, &start, &len)) == 0) {
        if (out == OUTPUT_JSON)
            printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 " }",
                   first ? "[" : ",\n", start, len);
        else
            printf("%" PRIu64 " %" PRIu64 "\n", start, len);
        first = false;
        off = start + len;
    }
    if (r < 0) {
        if (out == OUTPUT_JSON && !first)
            printf("]\n");
        fflush(stdout);
        error_report("Operation dump on bitmap %s failed: %s", bitmap, qimg_last_error());
        return 1;
    }
    if (out == OUTPUT_JSON)
        printf("%s]\n", first ? "[" : "");
    return 0;
}

static int cmd_bitmap_dump(int argc, char **argv)
{
    enum { D_DUMP = CLI_OPT_COMMAND, D_OUTPUT };
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        { "dump", no_argument, NULL, D_DUMP },
        { "output", required_argument, NULL, D_OUTPUT },
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    const char *fmt = NULL;
    bool image_opts = false, force_share = false;
    enum output_format out = OUTPUT_HUMAN;
    int c;
    while ((c = cli_getopt(argc, argv, ":f:hU", longopts)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': force_share = true; break;
        case D_OUTPUT: out = parse_output_format(optarg); break;
        case D_DUMP: break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (argc - optind != 2) {
        error_report("Expecting filename and bitmap name");
        return 1;
    }
    unsigned flags = QIMG_OPEN_NO_BACKING | (force_share ? QIMG_OPEN_FORCE_SHARE : 0);
    qimg_image *img = cli_open(argv[optind], fmt, flags, image_opts);
    if (!img)
        return 1;
    int ret = print_ranges(img, argv[optind + 1], out);
    qimg_close(img);
    return ret;
}

/* --dump takes its own option set (qemu-img's bitmap has no --output). */
static bool wants_dump(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (strcmp(argv[i], "--dump") == 0)
            return true;
    return false;
}

int cmd_bitmap(int argc, char **argv)
{
    if (wants_dump(argc, argv))
        return cmd_bitmap_dump(argc, argv);

    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        { "add", no_argument, NULL, OPT_ADD },
        { "remove", no_argument, NULL, OPT_REMOVE },
        { "clear", no_argument, NULL, OPT_CLEAR },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        { "merge", required_argument, NULL, OPT_MERGE },
        { "granularity", required_argument, NULL, 'g' },
        { "source-file", required_argument, NULL, 'b' },
        { "source-format", required_argument, NULL, 'F' },
        CLI_LONGOPT_END,
    };
    CLEANUP_FREE struct action *acts = xcalloc((size_t)argc + 1, sizeof *acts);
    size_t nact = 0;
    const char *fmt = NULL, *src_file = NULL, *src_fmt = NULL;
    bool image_opts = false, add = false, merge = false;
    int64_t granularity = 0;
    int c;
    while ((c = cli_getopt(argc, argv, ":b:f:F:g:h", longopts)) != -1) {
        switch (c) {
        case 'b': src_file = optarg; break;
        case 'f': fmt = optarg; break;
        case 'F': src_fmt = optarg; break;
        case 'g':
            if (cli_cvtnum("granularity", optarg, 0, INT64_MAX, &granularity) < 0)
                return 1;
            break;
        case OPT_ADD: case OPT_REMOVE: case OPT_CLEAR: case OPT_ENABLE: case OPT_DISABLE:
        case OPT_MERGE:
            acts[nact].op = c;
            acts[nact++].src = c == OPT_MERGE ? optarg : NULL;
            add |= c == OPT_ADD;
            merge |= c == OPT_MERGE;
            break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (!usage_ok(nact, add, merge, granularity, src_file, src_fmt, argc - optind))
        return 1;
    const char *filename = argv[optind], *bitmap = argv[optind + 1];

    /* bitmaps live in this image only: no backing chain needed */
    qimg_image *img = cli_open(filename, fmt, QIMG_OPEN_RDWR | QIMG_OPEN_NO_BACKING, image_opts);
    if (!img)
        return 1;
    qimg_image *src = img;
    if (src_file) {
        src = cli_open(src_file, src_fmt, QIMG_OPEN_NO_BACKING, false);
        if (!src) {
            qimg_close(img);
            return 1;
        }
    }
    int ret = run_all(acts, nact, img, src, bitmap, (uint64_t)granularity);
    if (src != img)
        qimg_close(src);
    qimg_close(img);
    return ret;
}
