/* qimg - qemu-img create. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Several -o are joined with ',' as qemu does; each must be a valid list. */
static void accumulate_options(char **options, const char *text)
{
    if (qimg_opts_check_text(text) < 0) {
        error_report("%s", qimg_last_error());
        exit(1);
    }
    char *joined = *options ? qimg_asprintf("%s,%s", *options, text) : qimg_strdup(text);
    free(*options);
    *options = joined;
}

/* qemu's has_help_option: any option named "help" or "?". */
static bool has_help_option(const char *text)
{
    qimg_opts *o = NULL;
    bool help = false;
    if (qimg_opts_parse(&o, text) == 0)
        for (size_t i = 0; i < o->n; i++)
            help = help || qimg_opts_is_help(o->v[i].name);
    qimg_opts_free(o);
    return help;
}

static int print_option_help(const char *filename, const char *fmt)
{
    CLEANUP_FREE char *text = NULL;
    if (qimg_create_help(fmt, filename != NULL, &text) < 0) {
        error_report("%s", qimg_last_error());
        return 1;
    }
    fputs(text, stdout);
    return 0;
}

int cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, 256 },
        { NULL, 0, NULL, 0 },
    };
    struct qimg_create_params p = { .fmt = "raw", .atomic = true };
    CLEANUP_FREE char *options = NULL;
    int c;

    while ((c = cli_getopt(argc, argv, ":F:b:f:ho:qu", longopts)) != -1) {
        switch (c) {
        case 'h': help();
        case 'F': p.backing_fmt = optarg; break;
        case 'b': p.backing_file = optarg; break;
        case 'f': p.fmt = optarg; break;
        case 'o': accumulate_options(&options, optarg); break;
        case 'q': p.quiet = true; break;
        case 'u': p.no_open_backing = true; break;
        case 256: cli_object_add(optarg); break;
        }
    }

    const char *filename = optind < argc ? argv[optind] : NULL;
    if (options && has_help_option(options))
        return print_option_help(filename, p.fmt);
    if (optind >= argc)
        error_exit("Expecting image file name");
    p.filename = argv[optind++];
    if (optind < argc) {
        int64_t size;
        if (cli_cvtnum("image size", argv[optind++], 0, INT64_MAX, &size) < 0)
            return 1;
        p.size = (uint64_t)size;
        p.has_size = true;
    }
    if (optind != argc)
        error_exit("Unexpected argument: %s", argv[optind]);

    qimg_opts *opts = NULL;
    if (options)
        qimg_opts_parse(&opts, options);
    p.opts = opts;
    char *text = qimg_create_describe(&p);
    if (!text) {
        report_lib_error("%s", p.filename);
        qimg_opts_free(opts);
        return 1;
    }
    if (!p.quiet) {
        printf("%s\n", text);
        fflush(stdout);
    }
    free(text);
    int r = qimg_create(&p);
    if (r < 0)
        report_lib_error("%s", p.filename);
    qimg_opts_free(opts);
    return r < 0 ? 1 : 0;
}
