/* qimg - cloop, the compressed loop device images of Knoppix-style live
 * systems (read-only), written from the format's description.
 *
 * A 136-byte header: a shell-script preamble padded to 128 bytes (its
 * 12th to 15th bytes say "V2.0" or "V4.0"), then block_size and n_blocks
 * (32-bit big-endian).  Then n_blocks + 1 64-bit big-endian pointers:
 * block i's compressed bytes lie between pointer i and pointer i + 1.
 *   Version 2 (what create_compressed_fs of cloop-utils writes, and all
 *   qemu reads): header first, every block one zlib stream.
 *   Version 4 (cloop 4.x, beyond qemu): a pointer's top 4 bits say how
 *   its block is stored (0 zlib, 1 as it is, 2 xz, 3 lz4, 4 lzo1x) and
 *   the low 60 bits are the offset; the header and the pointers may also
 *   sit at the end of the file, pointers first ("header last").
 * Every block decodes to block_size bytes: the disk is n_blocks of them.
 *
 * qemu reads any file given as cloop as version 2 with the header first
 * (it does not look at the signature), and probes only version 2's
 * preamble.  qimg does the same for such files and, beyond qemu, reads
 * version 4 (probed by its preamble at the start or at the end).  Beyond
 * qemu too, the pointers must lie inside the file and not over the header
 * or the table, and the table must fit in the file. */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"
#include "codec.h"
#include "unit-reader.h"

#define HEADER_SIZE     136
#define PREAMBLE_SIZE   128
#define SIGNATURE_AT    0x0b
#define MAX_BLOCK_SIZE  (64u << 20)          /* as qemu */
#define MAX_TABLE_BYTES (512u << 20)         /* as qemu */
#define PTR_FLAGS(p)    ((unsigned)((p) >> 60))
#define PTR_OFFSET(p)   ((p) & 0x0fffffffffffffffull)

enum { METHOD_ZLIB, METHOD_NONE, METHOD_XZ, METHOD_LZ4, METHOD_LZO, METHOD_COUNT };

static const char v2_magic[] = "#!/bin/sh\n#V2.0 Format\n"
                               "modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
static const char v4_start[] = "#!/bin/sh\n#V4.0 Format\n";

struct cloop_state {
    uint32_t block_size, n_blocks;
    unsigned version;            /* 2 or 4 */
    bool header_last;
    uint64_t *offset;            /* n_blocks + 1 byte offsets */
    uint8_t *method;             /* n_blocks methods (version 4), else NULL */
    struct unit_cache *cache;
};

static struct cloop_state *state(struct qimg_image *img) { return img->opaque; }

/* ------------------------------------------------------------- probing */

static int cloop_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    if (len == 0)
        return 0;
    /* qemu compares as much of version 2's preamble as it was given */
    size_t n = QIMG_MIN(len, sizeof v2_magic - 1);
    if (memcmp(buf, v2_magic, n) == 0)
        return 2;
    if (len >= sizeof v4_start - 1 && memcmp(buf, v4_start, sizeof v4_start - 1) == 0)
        return 2;
    return 0;
}

static bool is_v4_header(const uint8_t *h)
{
    return memcmp(h, v4_start, sizeof v4_start - 1) == 0;
}

/* Beyond qemu: a version 4 image with its header last. */
static bool cloop_probe_tail(const uint8_t *tail, size_t len, uint64_t file_size)
{
    return len >= HEADER_SIZE && is_v4_header(tail + len - HEADER_SIZE);
}

/* ------------------------------------------------------------- opening */

static int corrupt(const char *what, uint32_t index)
{
    return qimg_error(-EINVAL, "%s at index %" PRIu32 ", image file is corrupt", what, index);
}

/* The header's numbers, checked as qemu checks them. */
static int check_header(struct cloop_state *s)
{
    if (s->block_size == 0)
        return qimg_error(-EINVAL, "block_size cannot be zero");
    if (s->block_size % 512)
        return qimg_error(-EINVAL, "block_size %" PRIu32 " must be a multiple of 512",
                          s->block_size);
    if (s->block_size > MAX_BLOCK_SIZE)
        return qimg_error(-EINVAL, "block_size %" PRIu32 " must be %u MB or less",
                          s->block_size, MAX_BLOCK_SIZE >> 20);
    uint32_t max_blocks = (UINT32_MAX - 1) / 8;
    if (s->n_blocks > max_blocks)
        return qimg_error(-EINVAL, "n_blocks %" PRIu32 " must be %" PRIu32 " or less",
                          s->n_blocks, max_blocks);
    if (((uint64_t)s->n_blocks + 1) * 8 > MAX_TABLE_BYTES)
        return qimg_error(-EINVAL, "image requires too many offsets, try increasing block size");
    return 0;
}

/* Pointers to offsets (and methods), each checked against its neighbour,
 * the file and the table's place [table_start, table_end). */
static int take_pointers(struct cloop_state *s, const uint8_t *raw, uint64_t file_size,
                         uint64_t table_start, uint64_t table_end)
{
    for (uint32_t i = 0; i <= s->n_blocks; i++) {
        uint64_t p = qimg_be64(raw + (uint64_t)i * 8);
        s->offset[i] = s->version == 4 ? PTR_OFFSET(p) : p;
        if (s->method && i < s->n_blocks) {
            if (PTR_FLAGS(p) >= METHOD_COUNT)
                return qimg_error(-EINVAL, "unknown compression method %u of block %" PRIu32
                                  ", image file is corrupt", PTR_FLAGS(p), i);
            s->method[i] = (uint8_t)PTR_FLAGS(p);
        }
        if (i > 0) {
            if (s->offset[i] < s->offset[i - 1])
                return corrupt("offsets not monotonically increasing", i);
            if (s->offset[i] - s->offset[i - 1] > 2ull * MAX_BLOCK_SIZE)
                return corrupt("invalid compressed block size", i);
        }
        if (s->offset[i] > file_size)
            return corrupt("offset past the end of the file", i);
    }
    /* blocks over the header or the table: the table lies between them
     * when the header is last */
    bool clear = s->header_last ? s->offset[s->n_blocks] <= table_start
                                : s->offset[0] >= table_end;
    if (!clear)
        return corrupt("block data over the offsets table", s->header_last ? s->n_blocks : 0);
    return 0;
}

static int open_image(struct qimg_image *img, struct cloop_state *s)
{
    uint64_t file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return r;
    uint8_t h[HEADER_SIZE];
    if ((r = qimg_io_pread(img->file, h, sizeof h, 0)) < 0)
        return r;
    uint64_t header_at = 0;
    s->version = is_v4_header(h) ? 4 : 2;
    if (s->version == 2 && memcmp(h + SIGNATURE_AT, "V2.0", 4) != 0 && file_size >= HEADER_SIZE) {
        uint8_t t[HEADER_SIZE];
        if ((r = qimg_io_pread(img->file, t, sizeof t, file_size - HEADER_SIZE)) < 0)
            return r;
        if (is_v4_header(t)) {
            memcpy(h, t, sizeof h);
            s->version = 4;
            s->header_last = true;
            header_at = file_size - HEADER_SIZE;
        }
    }
    s->block_size = qimg_be32(h + PREAMBLE_SIZE);
    s->n_blocks = qimg_be32(h + PREAMBLE_SIZE + 4);
    if ((r = check_header(s)) < 0)
        return r;

    uint64_t table_bytes = ((uint64_t)s->n_blocks + 1) * 8;
    uint64_t table_start = s->header_last ? header_at - QIMG_MIN(header_at, table_bytes)
                                          : HEADER_SIZE;
    if (!qimg_range_ok(HEADER_SIZE, table_bytes, file_size) ||
        (s->header_last && header_at < table_bytes))
        return qimg_error(-EINVAL, "image file is too small for %" PRIu32 " blocks",
                          s->n_blocks);
    CLEANUP_FREE uint8_t *raw = qimg_alloc_from_image(table_bytes, "cloop offsets table");
    s->offset = qimg_alloc_from_image(table_bytes, "cloop offsets table");
    if (!raw || !s->offset)
        return -ENOMEM;
    if (s->version == 4 && !(s->method = qimg_alloc_from_image(s->n_blocks + 1, "cloop methods")))
        return -ENOMEM;
    if ((r = qimg_io_pread(img->file, raw, table_bytes, table_start)) < 0)
        return r;
    if ((r = take_pointers(s, raw, file_size, table_start, table_start + table_bytes)) < 0)
        return r;
    img->size = (uint64_t)s->n_blocks * s->block_size;
    s->cache = unit_cache_new();
    return 0;
}

static void free_state(struct qimg_image *img)
{
    struct cloop_state *s = state(img);
    if (!s)
        return;
    free(s->offset);
    free(s->method);
    unit_cache_free(s->cache);
    free(s);
    img->opaque = NULL;
}

static int cloop_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    img->opaque = qimg_xcalloc(1, sizeof(struct cloop_state));
    int r = open_image(img, state(img));
    if (r < 0)
        free_state(img);
    return r;
}

static void cloop_close(struct qimg_image *img)
{
    free_state(img);
}

/* ------------------------------------------------------------- reading */

static int locate(struct qimg_image *img, uint64_t off, struct unit_loc *loc)
{
    struct cloop_state *s = state(img);
    uint64_t i = off / s->block_size;
    *loc = (struct unit_loc){ .kind = UNIT_CODED, .id = i, .start = i * s->block_size,
                              .len = s->block_size, .stored_offset = s->offset[i],
                              .stored_len = s->offset[i + 1] - s->offset[i] };
    return 0;
}

static const enum qimg_codec method_codec[METHOD_COUNT] = {
    [METHOD_ZLIB] = QIMG_CODEC_ZLIB, [METHOD_XZ] = QIMG_CODEC_XZ,
    [METHOD_LZ4] = QIMG_CODEC_LZ4, [METHOD_LZO] = QIMG_CODEC_LZO1X,
};

/* Block loc->id from its stored bytes in[0..stored_len). */
static int decode_from(struct qimg_image *img, const struct unit_loc *loc, const uint8_t *in,
                       void *out)
{
    struct cloop_state *s = state(img);
    uint32_t i = (uint32_t)loc->id;
    uint64_t in_len = loc->stored_len;
    unsigned method = s->method ? s->method[i] : METHOD_ZLIB;
    if (method == METHOD_NONE) {
        if (in_len != s->block_size)
            return qimg_error(-EIO, "cloop block %" PRIu32 " is stored with %" PRIu64
                              " bytes instead of %" PRIu32, i, in_len, s->block_size);
        memcpy(out, in, in_len);
        return 0;
    }
    size_t got = 0;
    int r = qimg_codec_decompress(method_codec[method], in, in_len, out, s->block_size, &got);
    if (r < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", qimg_last_error());
        return qimg_error(r == -ENOTSUP ? r : -EIO, "cloop block %" PRIu32 ": %s", i, why);
    }
    if (got == s->block_size)
        return 0;
    /* cloop 4 writers may store the last block short */
    if (method != METHOD_ZLIB && i == s->n_blocks - 1) {
        memset((uint8_t *)out + got, 0, s->block_size - got);
        return 0;
    }
    return qimg_error(-EIO, "cloop block %" PRIu32 " decodes to %zu bytes instead of %" PRIu32,
                      i, got, s->block_size);
}

static int decode(struct qimg_image *img, const struct unit_loc *loc, void *out)
{
    CLEANUP_FREE uint8_t *in = qimg_alloc_from_image(loc->stored_len, "cloop block");
    if (!in)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, in, loc->stored_len, loc->stored_offset);
    return r < 0 ? r : decode_from(img, loc, in, out);
}

static const struct unit_reader_ops cloop_units = {
    .locate = locate, .decode = decode, .decode_from = decode_from,
};

static int cloop_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    return unit_read(img, state(img)->cache, &cloop_units, off, buf, len);
}

/* As qemu (no block status of its own): all data, nowhere in the file. */
static int cloop_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                              struct qimg_extent *ext)
{
    ext->length = len;
    ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED;
    return 0;
}

const struct qimg_driver qimg_driver_cloop = {
    .name           = "cloop",
    .flags          = QIMG_DRV_READ_ONLY,
    .probe          = cloop_probe,
    .open           = cloop_open,
    .close          = cloop_close,
    .read           = cloop_read,
    .block_status   = cloop_block_status,
    .probe_tail     = cloop_probe_tail,
};
