/* qimg - the compare command, as qemu-img 7.2 compare.
 *
 * Exit codes (qemu-img's): 0 identical, 1 different (and usage errors),
 * 2 an image could not be opened (or a bad -T / --image-opts with -f),
 * 3 block status failed, 4 a read failed.  Messages go to stdout and -q
 * silences them; the content mismatch offset is the first differing
 * byte's offset rounded down to 512.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"


struct compare_opts {
    const char *fmt1, *fmt2, *cache;
    bool progress, quiet, strict, force_share, image_opts;
};

static void parse_args(int argc, char **argv, struct compare_opts *o)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    int c;
    while ((c = cli_getopt(argc, argv, ":hf:F:T:pqsU", longopts)) != -1) {
        switch (c) {
        case 'f': o->fmt1 = optarg; break;
        case 'F': o->fmt2 = optarg; break;
        case 'T': o->cache = optarg; break;
        case 'p': o->progress = true; break;
        case 'q': o->quiet = true; break;
        case 's': o->strict = true; break;
        case 'U': o->force_share = true; break;
        default: cli_common_option(c, &o->image_opts); break;
        }
    }
}

/* stdout text unless -q */
static void say(const struct compare_opts *o, const char *text)
{
    if (!o->quiet)
        fputs(text, stdout);
}

static int report(const struct compare_opts *o, const struct qimg_compare_result *res, int r)
{
    char line[128];
    if (r < 0) {
        if (res->size_mismatch)
            say(o, "Warning: Image size mismatch!\n");
        error_report("%s", qimg_last_error());
        return res->status_error ? 3 : 4;
    }
    if (r == 0) {
        if (res->size_mismatch)
            say(o, "Warning: Image size mismatch!\n");
        say(o, "Images are identical.\n");
        return 0;
    }
    if (o->strict && res->size_mismatch) {
        say(o, "Strict mode: Image size mismatch!\n");
        return 1;
    }
    if (res->status_mismatch) {
        snprintf(line, sizeof line, "Strict mode: Offset %" PRIu64 " block status mismatch!\n",
                 res->mismatch_offset);
        say(o, line);
        return 1;
    }
    if (res->size_mismatch)
        say(o, "Warning: Image size mismatch!\n");
    snprintf(line, sizeof line, "Content mismatch at offset %" PRIu64 "!\n", res->mismatch_offset);
    say(o, line);
    return 1;
}

int cmd_compare(int argc, char **argv)
{
    struct compare_opts o = { 0 };
    parse_args(argc, argv, &o);
    if (argc - optind != 2)
        error_exit("Expecting two image file names");
    if (o.quiet)
        o.progress = false;
    unsigned flags = 0;
    if (o.force_share)
        flags |= QIMG_OPEN_FORCE_SHARE;
    if (parse_cache_mode(o.cache ? o.cache : "writeback", &flags) < 0) {
        error_report("Invalid source cache option: %s", o.cache);
        return 2;
    }
    const char *name1 = argv[optind], *name2 = argv[optind + 1];
    qimg_image *a = cli_open(name1, o.fmt1, flags, o.image_opts);
    if (!a)
        return 2;
    qimg_image *b = cli_open(name2, o.fmt2, flags, o.image_opts);
    if (!b) {
        qimg_close(a);
        return 2;
    }
    struct progress prog;
    progress_init(&prog, o.progress, 2.0f);
    progress_print(&prog, 0, 100);
    struct qimg_compare_result res;
    int r = qimg_compare(a, b, o.strict, &res, o.progress ? progress_callback : NULL, &prog);
    int ret = report(&o, &res, r);
    progress_end(&prog);
    qimg_close(b);
    qimg_close(a);
    return ret;
}
