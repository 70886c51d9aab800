/* qimg - qemu-img check.  The driver fills struct qimg_check_result and
 * logs each problem (printed on stderr as it is found); this file prints
 * qemu's summary, human or JSON, and picks qemu's exit code:
 * 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 no check. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_OUTPUT = CLI_OPT_COMMAND };

#define RC_NOT_SUPPORTED 63

/* Check lines go to stderr as they come; error reports after the program
 * name.  Installed for every command: a dirty image repaired when it is
 * opened read-write reports as check -r all does. */
void cli_check_log(const char *line, void *opaque)
{
    (void)opaque;
    size_t n = strlen(QIMG_CHECK_LOG_REPORT);
    if (strncmp(line, QIMG_CHECK_LOG_REPORT, n) == 0)
        fprintf(stderr, "%s: %s\n", prog_name, line + n);
    else
        fprintf(stderr, "%s\n", line);
}

static void print_human(const struct qimg_check_result *r)
{
    if (r->corruptions == 0 && r->leaks == 0 && r->check_errors == 0) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%" PRId64 " errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   r->corruptions);
        if (r->leaks)
            printf("\n%" PRId64 " leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n", r->leaks);
        if (r->check_errors)
            printf("\n%" PRId64 " internal errors have occurred during the check.\n",
                   r->check_errors);
    }
    if (r->total_clusters != 0 && r->allocated_clusters != 0)
        printf("%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, "
               "%0.2f%% compressed clusters\n", r->allocated_clusters, r->total_clusters,
               r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %" PRId64 "\n", r->image_end_offset);
}

/* ImageCheck: check-errors always, every other count only when non-zero. */
static void print_json(const struct qimg_check_result *r, const char *filename, const char *fmt)
{
    struct qimg_json *o = qimg_json_object();
    qimg_json_set(o, "filename", qimg_json_string(filename));
    qimg_json_set(o, "format", qimg_json_string(fmt));
    qimg_json_set(o, "check-errors", qimg_json_int(r->check_errors));
    const struct { const char *key; int64_t v; } opt[] = {
        { "corruptions", r->corruptions },
        { "leaks", r->leaks },
        { "corruptions-fixed", r->corruptions_fixed },
        { "leaks-fixed", r->leaks_fixed },
        { "image-end-offset", r->image_end_offset },
        { "total-clusters", r->total_clusters },
        { "allocated-clusters", r->allocated_clusters },
        { "fragmented-clusters", r->fragmented_clusters },
        { "compressed-clusters", r->compressed_clusters },
    };
    for (size_t i = 0; i < ARRAY_SIZE(opt); i++)
        if (opt[i].v)
            qimg_json_set(o, opt[i].key, qimg_json_int(opt[i].v));
    CLEANUP_FREE char *text = qimg_json_to_string(o);
    printf("%s\n", text);
    qimg_json_free(o);
}

static int run_check(qimg_image *img, unsigned fix, enum output_format of, bool quiet,
                     const char *filename)
{
    struct qimg_check_result res;
    int r = qimg_check(img, &res, fix);
    if (r == -ENOTSUP) {
        error_report("This image format does not support checks");
        return RC_NOT_SUPPORTED;
    }
    if (r == 0 && (res.corruptions_fixed || res.leaks_fixed)) {
        int64_t corruptions_fixed = res.corruptions_fixed, leaks_fixed = res.leaks_fixed;
        if (of == OUTPUT_HUMAN && !quiet)
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %" PRId64 " leaked clusters\n"
                   "    %" PRId64 " corruptions\n\n"
                   "Double checking the fixed image now...\n", leaks_fixed, corruptions_fixed);
        r = qimg_check(img, &res, 0);
        res.corruptions_fixed = corruptions_fixed;
        res.leaks_fixed = leaks_fixed;
    }
    if (r == 0 && !quiet) {
        if (of == OUTPUT_HUMAN)
            print_human(&res);
        else
            print_json(&res, filename, qimg_format(img));
    }
    if (r < 0 || res.check_errors) {
        if (r < 0)
            error_report("Check failed: %s", strerror(-r));
        else
            error_report("Check failed");
        return 1;
    }
    if (res.corruptions)
        return 2;
    return res.leaks ? 3 : 0;
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        { "format", required_argument, NULL, 'f' },
        { "repair", required_argument, NULL, 'r' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    const char *fmt = NULL, *output = NULL, *cache = "writeback";
    bool image_opts = false, force_share = false, quiet = false;
    unsigned fix = 0;
    int c;
    while ((c = cli_getopt(argc, argv, ":hf:r:T:qU", longopts)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0)
                fix = QIMG_FIX_LEAKS;
            else if (strcmp(optarg, "all") == 0)
                fix = QIMG_FIX_LEAKS | QIMG_FIX_ERRORS;
            else
                error_exit("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            break;
        case 'T': cache = optarg; break;
        case 'q': quiet = true; break;
        case 'U': force_share = true; break;
        case OPT_OUTPUT: output = optarg; break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (optind != argc - 1)
        error_exit("Expecting one image file name");
    const char *filename = argv[optind];
    enum output_format of = output ? parse_output_format(output) : OUTPUT_HUMAN;

    unsigned flags = 0;
    if (parse_cache_mode(cache, &flags) < 0) {
        error_report("Invalid source cache option: %s", cache);
        return 1;
    }
    /* qemu opens for a check even without -r: a broken snapshot table is
     * then reported by the check instead of failing the open */
    flags |= QIMG_OPEN_CHECK;
    if (fix)
        flags |= QIMG_OPEN_RDWR;
    if (force_share) {
        if (fix) {
            error_report("Could not open '%s': force-share=on can only be used with "
                         "read-only images", filename);
            return 1;
        }
        flags |= QIMG_OPEN_FORCE_SHARE;
    }
    /* safe mode: this command reads no backing file, so none is opened */
    if (qimg_safe_mode())
        flags |= QIMG_OPEN_NO_BACKING;
    qimg_image *img = cli_open(filename, fmt, flags, image_opts);
    if (!img)
        return 1;
    int ret = run_check(img, fix, of, quiet, filename);
    qimg_close(img);
    return ret;
}
