/* qimg - qemu-img map: where the guest data lives, through the backing
 * chain.  Adjacent extents merge when they agree on everything qemu
 * compares (depth, present, zero, data, offset presence, contiguous host
 * offsets) and come from the same file. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_OUTPUT = CLI_OPT_COMMAND, OPT_START, OPT_MAX_LENGTH };

/* qemu-img asks for at most this much at a time. */
#define MAP_CHUNK (1ull << 30)

struct map_entry {
    uint64_t start, length, offset;
    unsigned depth;
    bool present, zero, data, has_offset;
    const char *file;        /* file holding the data, NULL when none */
    char *file_copy;
};

static void entry_from_extent(struct map_entry *e, const struct qimg_extent *x)
{
    e->start = x->offset;
    e->length = x->length;
    e->depth = x->depth;
    e->present = x->flags & QIMG_STATUS_ALLOCATED;
    e->zero = x->flags & QIMG_STATUS_ZERO;
    e->data = x->flags & QIMG_STATUS_DATA;
    e->has_offset = x->flags & QIMG_STATUS_OFFSET;
    e->offset = e->has_offset ? x->host_offset : 0;
    free(e->file_copy);
    e->file_copy = x->host_file && e->has_offset ? xstrdup(x->host_file) : NULL;
    e->file = e->file_copy;
}

static bool same_file(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool mergeable(const struct map_entry *cur, const struct map_entry *next)
{
    if (cur->length == 0)
        return false;
    if (cur->depth != next->depth || cur->present != next->present ||
        cur->zero != next->zero || cur->data != next->data ||
        cur->has_offset != next->has_offset || !same_file(cur->file, next->file))
        return false;
    return !cur->has_offset || cur->offset + cur->length == next->offset;
}

/* Prints one entry; next says whether more follow (JSON separators). */
static int dump_entry(enum output_format of, const struct map_entry *e, bool more)
{
    if (of == OUTPUT_HUMAN) {
        if (e->data && !e->has_offset) {
            error_report("File contains external, encrypted or compressed clusters.");
            return -1;
        }
        if (e->data && !e->zero)
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start, e->length,
                   e->offset, e->file ? e->file : "");
        return 0;
    }
    printf("{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %u,"
           " \"present\": %s, \"zero\": %s, \"data\": %s",
           (int64_t)e->start, (int64_t)e->length, e->depth, e->present ? "true" : "false",
           e->zero ? "true" : "false", e->data ? "true" : "false");
    if (e->has_offset)
        printf(", \"offset\": %" PRId64, (int64_t)e->offset);
    printf("}%s", more ? ",\n" : "]\n");
    return 0;
}

static int map_image(qimg_image *img, enum output_format of, uint64_t start, int64_t max_length)
{
    uint64_t end = qimg_size(img);
    struct map_entry cur = { .start = start }, next = { 0 };
    int ret = 0;
    if (max_length >= 0 && start + (uint64_t)max_length < end)
        end = start + (uint64_t)max_length;
    if (of == OUTPUT_HUMAN)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    else
        printf("[");
    for (uint64_t off = start; off < end; off += next.length) {
        struct qimg_extent x;
        uint64_t n = MIN(MAP_CHUNK, end - off);
        int r = qimg_block_status_chain(img, off, n, &x);
        if (r < 0) {
            error_report("Could not read file metadata: %s", strerror(-r));
            ret = -1;
            goto out;
        }
        entry_from_extent(&next, &x);
        if (mergeable(&cur, &next)) {
            cur.length += next.length;
            continue;
        }
        if (cur.length > 0 && dump_entry(of, &cur, true) < 0) {
            ret = -1;
            goto out;
        }
        /* cur takes next's content (and its file name) */
        free(cur.file_copy);
        cur = next;
        next.file_copy = NULL;
        next.file = NULL;
    }
    ret = dump_entry(of, &cur, false);
out:
    free(cur.file_copy);
    free(next.file_copy);
    return ret;
}

int cmd_map(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        { "format", required_argument, NULL, 'f' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        { "start-offset", required_argument, NULL, OPT_START },
        { "max-length", required_argument, NULL, OPT_MAX_LENGTH },
        CLI_LONGOPT_END,
    };
    const char *fmt = NULL, *output = NULL;
    bool image_opts = false, force_share = false;
    int64_t start = 0, max_length = -1;
    int c;
    while ((c = cli_getopt(argc, argv, ":f:hU", longopts)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': force_share = true; break;
        case OPT_OUTPUT: output = optarg; break;
        case OPT_START:
            if (cli_cvtnum("start offset", optarg, 0, INT64_MAX, &start) < 0)
                return 1;
            break;
        case OPT_MAX_LENGTH:
            if (cli_cvtnum("max length", optarg, 0, INT64_MAX, &max_length) < 0)
                return 1;
            break;
        default: cli_common_option(c, &image_opts); break;
        }
    }
    if (optind != argc - 1)
        error_exit("Expecting one image file name");
    const char *filename = argv[optind];
    enum output_format of = output ? parse_output_format(output) : OUTPUT_HUMAN;

    unsigned flags = force_share ? QIMG_OPEN_FORCE_SHARE : 0;
    qimg_image *img = cli_open(filename, fmt, flags, image_opts);
    if (!img)
        return 1;
    int ret = map_image(img, of, (uint64_t)start, max_length);
    qimg_close(img);
    return ret < 0 ? 1 : 0;
}
