/* qimg - qemu-img resize FILE [+|-]SIZE.
 *
 * As in qemu-img, the size is taken off the end of argv before option
 * parsing, so "-1M" is a size and not an option; it is parsed as a QemuOpts
 * size (hence "Parameter 'size' expects ..." messages), then applied
 * absolutely or relative to the current length. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_PREALLOCATION = CLI_OPT_COMMAND, OPT_SHRINK };

static bool valid_prealloc(const char *mode)
{
    static const char *const modes[] = { "off", "metadata", "falloc", "full" };
    for (size_t i = 0; i < ARRAY_SIZE(modes); i++)
        if (strcmp(mode, modes[i]) == 0)
            return true;
    return false;
}

/* The size text after an optional sign, as qemu's "size" option. */
static int parse_size_param(const char *text, uint64_t *out)
{
    qimg_opts *o = NULL;
    qimg_opts_set(&o, "size", text);
    int r = qimg_opts_get_size(o, "size", out);
    qimg_opts_free(o);
    if (r < 0)
        error_report("%s", qimg_last_error());
    return r < 0 ? -1 : 0;
}

int cmd_resize(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        { "preallocation", required_argument, NULL, OPT_PREALLOCATION },
        { "shrink", no_argument, NULL, OPT_SHRINK },
        CLI_LONGOPT_END,
    };
    const char *fmt = NULL, *prealloc = "off";
    bool image_opts = false, quiet = false, shrink = false;
    int c;

    if (argc < 3)
        error_exit("Not enough arguments");
    const char *size_text = argv[--argc];

    while ((c = cli_getopt(argc, argv, ":f:hq", longopts)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case OPT_SHRINK: shrink = true; break;
        case OPT_PREALLOCATION:
            if (!valid_prealloc(optarg)) {
                error_report("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            prealloc = optarg;
            break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (optind != argc - 1)
        error_exit("Expecting image file name and size");
    const char *filename = argv[optind];

    int relative = 0;
    if (size_text[0] == '+' || size_text[0] == '-')
        relative = size_text[0] == '+' ? 1 : -1;
    uint64_t n;
    if (parse_size_param(size_text + (relative != 0), &n) < 0)
        return 1;

    /* safe mode: this command reads no backing file, so none is opened */
    unsigned flags = QIMG_OPEN_RDWR | (qimg_safe_mode() ? QIMG_OPEN_NO_BACKING : 0);
    qimg_image *img = cli_open(filename, fmt, flags, image_opts);
    if (!img)
        return 1;
    int ret = 1;
    int64_t current = (int64_t)qimg_size(img);
    /* qemu computes in int64: wrap-around makes huge sizes non-positive */
    int64_t total = relative ? (int64_t)((uint64_t)current + n * (uint64_t)(int64_t)relative)
                             : (int64_t)n;
    if (total <= 0) {
        error_report("New image size must be positive");
        goto out;
    }
    if (total <= current && strcmp(prealloc, "off") != 0) {
        error_report("Preallocation can only be used for growing images");
        goto out;
    }
    if (total < current && !shrink) {
        error_report("Use the --shrink option to perform a shrink operation.");
        warn_report("Shrinking an image will delete all data beyond the shrunken image's end. "
                  "Before performing such an operation, make sure there is no important data there.");
        goto out;
    }
    if (qimg_resize(img, (uint64_t)total, prealloc, shrink) < 0) {
        error_report("%s", qimg_last_error());
        goto out;
    }
    ret = 0;
    if (!quiet)
        printf("Image resized.\n");
out:
    if (qimg_close(img) < 0 && ret == 0) {
        error_report("%s", qimg_last_error());
        ret = 1;
    }
    return ret;
}
