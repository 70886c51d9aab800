/* qimg - the dd command: copy a range of an image into a new image, with
 * qemu-img 7.2's operands (bs=, count=, skip=, if=, of=) and messages.
 *
 * Deliberate difference: count= is counted after skip=, as dd(1) does.
 * qemu-img 7.2 measures count from the start of the input, so that
 * "bs=64k count=4 skip=2" copies 128 KiB there and 256 KiB here.
 *
 * As qemu-img (and dd(1)), a skip past the end of the input prints
 * "IF: cannot skip to specified offset", creates an empty output and
 * exits with status 0.  The output is created complete (qimg_create
 * atomic) and then filled; every block is written, zeros included, so
 * that the output is allocated as qemu-img's (same map, same disk use).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DD_CHUNK (2u << 20)


struct dd_opts {
    const char *fmt, *out_fmt, *in, *out;
    bool force_share, image_opts;
    int64_t bs, count, skip;
    bool has_count, has_skip;
};

static void parse_args(int argc, char **argv, struct dd_opts *o)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    int c;
    while ((c = cli_getopt(argc, argv, ":hf:O:U", longopts)) != -1) {
        switch (c) {
        case 'f': o->fmt = optarg; break;
        case 'O': o->out_fmt = optarg; break;
        case 'U': o->force_share = true; break;
        default: cli_common_option(c, &o->image_opts); break;
        }
    }
}

/* One "key=value" operand; exits on an error as qemu-img does. */
static void parse_operand(struct dd_opts *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq) {
        error_report("unrecognized operand %s", arg);
        exit(1);
    }
    size_t klen = (size_t)(eq - arg);
    const char *val = eq + 1;
    int r = 0;
    if (klen == 2 && strncmp(arg, "bs", 2) == 0) {
        r = cli_cvtnum("bs", val, 1, INT_MAX, &o->bs);
    } else if (klen == 5 && strncmp(arg, "count", 5) == 0) {
        r = cli_cvtnum("count", val, 0, INT64_MAX, &o->count);
        o->has_count = true;
    } else if (klen == 4 && strncmp(arg, "skip", 4) == 0) {
        r = cli_cvtnum("skip", val, 0, INT64_MAX, &o->skip);
        o->has_skip = true;
    } else if (klen == 2 && strncmp(arg, "if", 2) == 0) {
        o->in = val;
    } else if (klen == 2 && strncmp(arg, "of", 2) == 0) {
        o->out = val;
    } else {
        error_report("unrecognized operand %.*s", (int)klen, arg);
        exit(1);
    }
    if (r < 0)
        exit(1);
}

/* Bytes to copy from *start: count blocks after skip, capped by the input. */
static uint64_t copy_length(const struct dd_opts *o, uint64_t in_size, uint64_t *start,
                            bool *past_end)
{
    uint64_t skip_bytes, len = in_size;
    *past_end = false;
    *start = 0;
    if (o->has_skip) {
        if (__builtin_mul_overflow((uint64_t)o->skip, (uint64_t)o->bs, &skip_bytes) || skip_bytes > in_size) {
            *past_end = true;
            *start = in_size;
            return 0;
        }
        *start = skip_bytes;
        len = in_size - skip_bytes;
    }
    uint64_t count_bytes;
    if (o->has_count && !__builtin_mul_overflow((uint64_t)o->count, (uint64_t)o->bs, &count_bytes))
        len = MIN(len, count_bytes);
    return len;
}

static int copy_range(qimg_image *in, qimg_image *out, uint64_t start, uint64_t len)
{
    CLEANUP_FREE uint8_t *buf = qimg_io_buffer(DD_CHUNK);
    uint64_t in_real = qimg_size(in);
    for (uint64_t done = 0; done < len;) {
        size_t n = (size_t)MIN(len - done, (uint64_t)DD_CHUNK);
        uint64_t off = start + done;
        size_t real = off < in_real ? (size_t)MIN((uint64_t)n, in_real - off) : 0;
        if (real && qimg_read(in, off, buf, real) < 0) {
            error_report("error while reading from input image file: %s", qimg_last_error());
            return -1;
        }
        memset(buf + real, 0, n - real);
        if (qimg_write(out, done, buf, n) < 0) {
            error_report("error while writing to output image file: %s", qimg_last_error());
            return -1;
        }
        done += n;
    }
    return 0;
}

int cmd_dd(int argc, char **argv)
{
    struct dd_opts o = { .bs = 512 };
    parse_args(argc, argv, &o);
    for (int i = optind; i < argc; i++)
        parse_operand(&o, argv[i]);
    if (!o.in || !o.out) {
        error_report("Must specify both input and output files");
        return 1;
    }
    if (!o.out_fmt)
        o.out_fmt = "raw";
    unsigned in_flags = o.force_share ? QIMG_OPEN_FORCE_SHARE : 0;
    qimg_image *in = cli_open(o.in, o.fmt, in_flags, o.image_opts);
    if (!in)
        return 1;
    int ret = 1;
    qimg_image *out = NULL;
    bool protocol = qimg_protocol_creatable(o.out_fmt);
    if (!qimg_format_known(o.out_fmt) && !protocol && !qimg_storage_cannot_create(o.out_fmt)) {
        error_report("Unknown file format");
        goto done;
    }
    if (!protocol && !qimg_format_supports(o.out_fmt, QIMG_CAP_CREATE)) {
        error_report("Format driver '%s' does not support image creation", o.out_fmt);
        goto done;
    }
    /* qemu-img sees a raw file as a whole number of 512-byte sectors */
    uint64_t in_size = (qimg_size(in) + 511) & ~(uint64_t)511;
    uint64_t start;
    bool past_end;
    uint64_t len = copy_length(&o, in_size, &start, &past_end);
    if (past_end)
        error_report("%s: cannot skip to specified offset", o.in);

    struct qimg_create_params cp = {
        .filename = o.out, .fmt = o.out_fmt, .size = len, .has_size = true,
        .quiet = true, .atomic = true,
    };
    if (qimg_create(&cp) < 0) {
        error_report("%s: error while creating output image: %s", o.out, qimg_last_error());
        goto done;
    }
    out = cli_open(o.out, o.out_fmt, QIMG_OPEN_RDWR | QIMG_OPEN_NO_PROBE_WARNING, false);
    if (!out)
        goto done;
    if (copy_range(in, out, start, MIN(len, qimg_size(out))) < 0)
        goto done;
    ret = 0;
done:
    if (out && qimg_close(out) < 0 && ret == 0) {
        error_report("%s", qimg_last_error());
        ret = 1;
    }
    qimg_close(in);
    return ret;
}
