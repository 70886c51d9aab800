/* qimg - qemu-img create. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ------------------------------------------------------- create --from */

/* Is this a create --from command line?  Only then are the options below
 * known: without --from, create parses exactly as qemu-img's does. */
static bool wants_from(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return false;
        if (strcmp(a, "--from") == 0 || strncmp(a, "--from=", 7) == 0)
            return true;
        if (strcmp(a, "--object") == 0) {
            i++;                            /* its value */
        } else if (a[0] == '-' && a[1] && a[1] != '-') {
            for (const char *c = a + 1; *c; c++) {
                if (strchr("Fbfo", *c)) {   /* takes a value: the rest or the next */
                    if (!c[1])
                        i++;
                    break;
                }
            }
        }
    }
    return false;
}

enum { OPT_FROM = CLI_OPT_COMMAND, OPT_FS, OPT_PARTITION, OPT_SIZE, OPT_LABEL, OPT_REPRODUCIBLE };

/* SIZE or +EXTRA */
static int parse_from_size(const char *arg, struct qimg_create_from_params *p)
{
    int64_t v;
    bool extra = arg[0] == '+';
    if (cli_cvtnum(extra ? "extra size" : "image size", extra ? arg + 1 : arg, 0, INT64_MAX,
                   &v) < 0)
        return -1;
    if (p->has_size || p->extra) {
        error_report("The image size must be specified only once");
        return -1;
    }
    if (extra) {
        p->extra = (uint64_t)v;
    } else {
        p->size = (uint64_t)v;
        p->has_size = true;
    }
    return 0;
}

static int source_date_epoch(struct qimg_create_from_params *p)
{
    const char *env = getenv("SOURCE_DATE_EPOCH");
    char *end;
    if (!env || !*env)
        return 0;
    errno = 0;
    long long v = strtoll(env, &end, 10);
    if (errno || *end || v < 0) {
        error_report("SOURCE_DATE_EPOCH must be a number of seconds since 1970: '%s'", env);
        return -1;
    }
    p->reproducible = true;
    p->source_date_epoch = v;
    p->epoch_from_source = false;
    return 0;
}

struct from_cli {
    bool quiet;
    struct progress prog;
    bool progress;
};

static void print_plan(const struct qimg_create_from_params *p, void *opaque)
{
    struct from_cli *c = opaque;
    char size[32];
    if (c->quiet)
        return;
    qimg_format_size(p->chosen_size, size, sizeof size);
    const char *part = p->partition && strcmp(p->partition, "none") ? p->partition : NULL;
    printf("Creating '%s' (%s, %s%s%s%s, %s) from '%s'\n", p->filename, p->fmt ? p->fmt : "raw",
           p->fs_type ? p->fs_type : "ext4", part ? " in a " : "", part ? part : "",
           part ? " partition" : "", size, strcmp(p->source, "-") ? p->source : "stdin");
    fflush(stdout);
    if (c->progress)
        progress_init(&c->prog, true, 1.0f);
}

static int create_from(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        { "from", required_argument, NULL, OPT_FROM },
        { "fs", required_argument, NULL, OPT_FS },
        { "partition", required_argument, NULL, OPT_PARTITION },
        { "size", required_argument, NULL, OPT_SIZE },
        { "label", required_argument, NULL, OPT_LABEL },
        { "reproducible", no_argument, NULL, OPT_REPRODUCIBLE },
        CLI_LONGOPT_END,
    };
    struct qimg_create_from_params p = { .fmt = "raw" };
    struct from_cli cli = { 0 };
    CLEANUP_FREE char *options = NULL;
    int c;

    while ((c = cli_getopt(argc, argv, ":F:b:f:ho:pqu", longopts)) != -1) {
        switch (c) {
        case 'F': case 'b': case 'u':
            error_report("create --from makes a new filesystem: it takes no backing file");
            return 1;
        case 'f': p.fmt = optarg; break;
        case 'o': cli_accumulate_options(&options, optarg); break;
        case 'p': cli.progress = true; break;
        case 'q': cli.quiet = true; break;
        case OPT_FROM: p.source = optarg; break;
        case OPT_FS: p.fs_type = optarg; break;
        case OPT_PARTITION: p.partition = optarg; break;
        case OPT_SIZE:
            if (parse_from_size(optarg, &p) < 0)
                return 1;
            break;
        case OPT_LABEL: p.label = optarg; break;
        case OPT_REPRODUCIBLE:
            p.reproducible = true;
            p.epoch_from_source = true;
            break;
        default: cli_common_option(c, NULL); break;
        }
    }
    const char *filename = optind < argc ? argv[optind] : NULL;
    if (options && cli_has_help_option(options))
        return cli_print_create_help(p.fmt, filename);
    if (optind >= argc)
        error_exit("Expecting image file name");
    p.filename = argv[optind++];
    if (optind < argc && parse_from_size(argv[optind++], &p) < 0)
        return 1;
    if (optind != argc)
        error_exit("Unexpected argument: %s", argv[optind]);
    if (source_date_epoch(&p) < 0)
        return 1;

    qimg_opts *opts = NULL;
    if (options)
        qimg_opts_parse(&opts, options);
    p.opts = opts;
    p.planned = print_plan;
    p.planned_opaque = &cli;
    p.progress = cli.progress ? progress_callback : NULL;
    p.progress_opaque = &cli.prog;
    int r = qimg_create_from(&p);
    if (cli.progress && p.chosen_size)
        progress_end(&cli.prog);
    if (r < 0)
        report_lib_error("%s", p.filename);
    qimg_opts_free(opts);
    return r < 0 ? 1 : 0;
}

/* qemu-img 7.2 prints the hint after "Backing file specified without
 * backing format" ("Detected format of qcow2.") without a newline. */
static void report_create_error(const char *filename)
{
    const char *msg = qimg_last_error();
    const char *last = strrchr(msg, '\n');
    if (!last || strncmp(last + 1, "Detected format of ", 19) != 0) {
        report_lib_error("%s", filename);
        return;
    }
    fprintf(stderr, "%s: %s: %s", prog_name, filename, msg);
    fflush(stderr);
}

int cmd_create(int argc, char **argv)
{
    if (wants_from(argc, argv))
        return create_from(argc, argv);

    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_END,
    };
    struct qimg_create_params p = { .fmt = "raw", .atomic = true };
    CLEANUP_FREE char *options = NULL;
    int c;

    while ((c = cli_getopt(argc, argv, ":F:b:f:ho:qu", longopts)) != -1) {
        switch (c) {
        case 'F': p.backing_fmt = optarg; break;
        case 'b': p.backing_file = optarg; break;
        case 'f': p.fmt = optarg; break;
        case 'o': cli_accumulate_options(&options, optarg); break;
        case 'q': p.quiet = true; break;
        case 'u': p.no_open_backing = true; break;
        default: cli_common_option(c, NULL); break;
        }
    }

    const char *filename = optind < argc ? argv[optind] : NULL;
    if (options && cli_has_help_option(options))
        return cli_print_create_help(p.fmt, filename);
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
        report_create_error(p.filename);
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
        report_create_error(p.filename);
    qimg_opts_free(opts);
    return r < 0 ? 1 : 0;
}
