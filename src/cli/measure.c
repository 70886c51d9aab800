/* qimg - qemu-img measure: the file size a new image needs, for a given
 * virtual size or for the content of an existing image. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_OUTPUT = CLI_OPT_COMMAND, OPT_SIZE };

/* Is name one of the storage backends (not a format)? */
static bool is_storage_name(const char *name)
{
    for (size_t i = 0; qimg_protocol_name(i); i++)
        if (strcmp(qimg_protocol_name(i), name) == 0)
            return true;
    return false;
}

static void print_measure(enum output_format of, const struct qimg_measure *m)
{
    if (of == OUTPUT_HUMAN) {
        printf("required size: %" PRIu64 "\n", m->required);
        printf("fully allocated size: %" PRIu64 "\n", m->fully_allocated);
        if (m->has_bitmaps)
            printf("bitmaps size: %" PRIu64 "\n", m->bitmaps);
        return;
    }
    struct qimg_json *o = qimg_json_object();
    /* qemu prints these as signed 64-bit numbers */
    qimg_json_set(o, "required", qimg_json_int((int64_t)m->required));
    qimg_json_set(o, "fully-allocated", qimg_json_int((int64_t)m->fully_allocated));
    if (m->has_bitmaps)
        qimg_json_set(o, "bitmaps", qimg_json_int((int64_t)m->bitmaps));
    CLEANUP_FREE char *text = qimg_json_to_string(o);
    printf("%s\n", text);
    qimg_json_free(o);
}

int cmd_measure(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_OBJECT,
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "size", required_argument, NULL, OPT_SIZE },
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    const char *fmt = NULL, *out_fmt = "raw", *snapshot = NULL, *filename = NULL;
    CLEANUP_FREE char *options = NULL;
    enum output_format of = OUTPUT_HUMAN;
    bool image_opts = false, force_share = false, has_size = false;
    int64_t size = 0;
    int c;
    /* qemu-img's measure has no ':' in its option string: getopt prints
     * its own message ("measure: invalid option -- 'Z'") and the command
     * shows the help, exit code 0. */
    opterr = 1;
    while ((c = getopt_long(argc, argv, "hf:O:o:l:U", longopts, NULL)) != -1) {
        switch (c) {
        case '?':
        case 'h': help();
        case 'f': fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'o': cli_accumulate_options(&options, optarg); break;
        case 'l':
            if (cli_check_snapshot_param(optarg) < 0)
                return 1;
            snapshot = optarg;
            break;
        case 'U': force_share = true; break;
        case OPT_OUTPUT: of = parse_output_format(optarg); break;
        case OPT_SIZE:
            if (cli_cvtnum("image size", optarg, 0, INT64_MAX, &size) < 0)
                return 1;
            has_size = true;
            break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (argc - optind > 1) {
        error_report("At most one filename argument is allowed.");
        return 1;
    }
    if (argc - optind == 1)
        filename = argv[optind];
    if (!filename && (image_opts || fmt || snapshot)) {
        error_report("--image-opts, -f, and -l require a filename argument.");
        return 1;
    }
    if (filename && has_size) {
        error_report("--size N cannot be used together with a filename.");
        return 1;
    }
    if (!filename && !has_size) {
        error_report("Either --size N or one filename must be specified.");
        return 1;
    }

    qimg_image *src = NULL;
    qimg_opts *opts = NULL;
    int ret = 1;
    if (filename) {
        src = cli_open(filename, fmt, force_share ? QIMG_OPEN_FORCE_SHARE : 0, image_opts);
        if (!src)
            return 1;
        if (snapshot && cli_load_snapshot(src, snapshot) < 0)
            goto out;
    }
    if (!qimg_format_known(out_fmt) && !qimg_storage_cannot_create(out_fmt)) {
        if (is_storage_name(out_fmt))   /* file, nbd, rbd: qemu asks the protocol */
            error_report("Block driver '%s' does not support size measurement", out_fmt);
        else
            error_report("Unknown file format '%s'", out_fmt);
        goto out;
    }
    if (!qimg_format_supports(out_fmt, QIMG_CAP_CREATE)) {
        error_report("Format driver '%s' does not support image creation", out_fmt);
        goto out;
    }
    if (options)
        qimg_opts_parse(&opts, options);
    if (opts && qimg_create_opts_validate(out_fmt, opts) < 0) {
        error_report("%s", qimg_last_error());
        error_report("Invalid options for file format '%s'", out_fmt);
        goto out;
    }
    if (has_size) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRId64, size);
        qimg_opts_set(&opts, "size", buf);
    }
    struct qimg_measure m;
    if (qimg_measure(out_fmt, opts, src, (uint64_t)size, &m) < 0) {
        error_report("%s", qimg_last_error());
        goto out;
    }
    print_measure(of, &m);
    ret = 0;
out:
    qimg_opts_free(opts);
    qimg_close(src);
    return ret;
}
