/* qimg - "amend": change format options of an existing image in place. */
#include <errno.h>

#include "cli.h"

enum { OPT_FORCE = CLI_OPT_COMMAND };

static int print_amend_help(const char *fmt)
{
    CLEANUP_FREE char *text = NULL;
    if (qimg_amend_help(fmt, &text) < 0) {
        error_report("%s", qimg_last_error());
        return 1;
    }
    fputs(text, stdout);
    return 0;
}

/* After the image is open: help, checks, then the driver's amend. */
static int amend_image(qimg_image *img, const char *options, bool force, struct progress *prog)
{
    if (cli_has_help_option(options))
        return print_amend_help(qimg_format(img));
    if (!qimg_format_supports(qimg_format(img), QIMG_CAP_AMEND)) {
        error_report("Format driver '%s' does not support option amendment", qimg_format(img));
        return 1;
    }
    qimg_opts *opts = NULL;
    int r = qimg_opts_parse(&opts, options);
    if (r == 0)
        r = qimg_amend_check(img, opts);
    if (r == 0) {
        progress_print(prog, 0, 0);
        r = qimg_amend(img, opts, force, progress_callback, prog);
        progress_print(prog, 100, 0);
    }
    if (r < 0)
        error_report("%s", qimg_last_error());
    qimg_opts_free(opts);
    return r < 0;
}

int cmd_amend(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        { "force", no_argument, NULL, OPT_FORCE },
        CLI_LONGOPT_END,
    };
    CLEANUP_FREE char *options = NULL;
    const char *fmt = NULL, *cache = "writeback";
    bool progress = false, quiet = false, image_opts = false, force = false;
    int c;
    while ((c = cli_getopt(argc, argv, ":ho:f:t:pq", longopts)) != -1) {
        switch (c) {
        case 'o': cli_accumulate_options(&options, optarg); break;
        case 'f': fmt = optarg; break;
        case 't': cache = optarg; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case OPT_FORCE: force = true; break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (!options)
        error_exit("Must specify options (-o)");

    struct progress prog;
    progress_init(&prog, progress && !quiet, 1.0f);
    int ret = 1;
    unsigned flags = QIMG_OPEN_RDWR;
    qimg_image *img = NULL;
    if (fmt && cli_has_help_option(options)) {
        /* a format was given: help without opening anything */
        ret = print_amend_help(fmt);
    } else if (optind != argc - 1) {
        error_report("Expecting one image file name");
    } else if (parse_cache_mode(cache, &flags) < 0) {
        error_report("Invalid cache option: %s", cache);
    } else if ((img = cli_open(argv[argc - 1], fmt, flags, image_opts)) != NULL) {
        ret = amend_image(img, options, force, &prog);
    }
    progress_end(&prog);
    if (img)
        qimg_close(img);
    return ret;
}
