/* qimg - "rebase": change the backing file of an image, keeping its
 * content (safe mode) or only rewriting the header (-u). */
#include <errno.h>

#include "cli.h"


struct rebase_args {
    const char *fmt, *cache, *src_cache, *base, *base_fmt;
    bool unsafe, force_share, quiet, image_opts;
};

/* Safe mode: the new backing, either a layer of the image's own chain or
 * opened here (relative names are relative to the image's directory). */
static int open_new_backing(qimg_image *img, const struct rebase_args *a, unsigned src_flags,
                            qimg_image **out, bool *opened)
{
    *out = NULL;
    *opened = false;
    if (a->unsafe || !a->base[0])
        return 0;
    CLEANUP_FREE char *path = qimg_backing_path(img, a->base);
    *out = qimg_find_backing_image(img, path);
    if (*out)
        return 0;
    if (a->force_share)
        src_flags |= QIMG_OPEN_FORCE_SHARE;
    if (qimg_open(out, path, a->base_fmt, src_flags) < 0) {
        error_report("Could not open new backing file '%s': %s", a->base, qimg_last_error());
        return -1;
    }
    *opened = true;
    return 0;
}

static int rebase_image(const char *filename, const struct rebase_args *a, struct progress *prog)
{
    unsigned flags = QIMG_OPEN_RDWR | (a->unsafe ? QIMG_OPEN_NO_BACKING : 0);
    unsigned src_flags = 0;
    if (parse_cache_mode(a->cache, &flags) < 0) {
        error_report("Invalid cache option: %s", a->cache);
        return 1;
    }
    if (parse_cache_mode(a->src_cache, &src_flags) < 0) {
        error_report("Invalid source cache option: %s", a->src_cache);
        return 1;
    }
    qimg_image *img = cli_open(filename, a->fmt, flags, a->image_opts);
    if (!img)
        return 1;
    int ret = 1;
    qimg_image *new_backing = NULL;
    bool opened = false;
    struct rebase_args args = *a;
    if (!args.base_fmt && qimg_format_supports(qimg_format(img), QIMG_CAP_RAW_BACKING))
        args.base_fmt = "raw";   /* the only backing such an image has */
    a = &args;
    if (a->base_fmt && !qimg_qemu_driver_known(a->base_fmt))
        error_report("Invalid format name: '%s'", a->base_fmt);
    else if (open_new_backing(img, a, src_flags, &new_backing, &opened) == 0) {
        struct qimg_rebase_params p = {
            .img = img, .backing_file = a->base, .backing_fmt = a->base_fmt,
            .new_backing = new_backing, .unsafe = a->unsafe,
            .progress = progress_callback, .progress_opaque = prog,
        };
        ret = qimg_rebase(&p) < 0;
        if (ret)
            error_report("%s", qimg_last_error());
    }
    if (opened)
        qimg_close(new_backing);
    qimg_close(img);
    return ret;
}

int cmd_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    struct rebase_args a = { .cache = "writeback", .src_cache = "writeback" };
    bool progress = false;
    int c;
    while ((c = cli_getopt(argc, argv, ":hf:F:b:upt:T:qU", longopts)) != -1) {
        switch (c) {
        case 'f': a.fmt = optarg; break;
        case 'F': a.base_fmt = optarg; break;
        case 'b': a.base = optarg; break;
        case 'u': a.unsafe = true; break;
        case 'p': progress = true; break;
        case 't': a.cache = optarg; break;
        case 'T': a.src_cache = optarg; break;
        case 'q': a.quiet = true; break;
        case 'U': a.force_share = true; break;
        default: cli_common_option(c, &a.image_opts); break;
        }
    }
    if (optind != argc - 1)
        error_exit("Expecting one image file name");
    if (!a.unsafe && !a.base)
        error_exit("Must specify backing file (-b) or use unsafe mode (-u)");

    struct progress prog;
    progress_init(&prog, progress && !a.quiet, 2.0f);
    progress_print(&prog, 0, 100);
    int ret = rebase_image(argv[optind], &a, &prog);
    progress_end(&prog);
    return ret;
}
