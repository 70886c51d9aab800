/* qimg - User-Mode Linux copy-on-write files ("cow"), as the UML block
 * driver (ubd) and uml_mkcow write them.  qemu read them until 2.1; qemu-img
 * 7.2 no longer knows the format, so the layout below is the oracle.
 *
 * A cow file is a header naming a raw backing file, a bitmap with one bit
 * per sector (bit n % 8 of byte n / 8, set when sector n was written) and a
 * data area holding every sector at data_offset + n * 512 (the file is as
 * long as the disk, sparse).  A sector whose bit is clear reads from the
 * backing file.  Headers (the magic 0x4f4f4f4d, "MOOO"):
 *   version 1 (host order, little-endian here): u32 magic, u32 version,
 *       char[256] backing, u32 mtime, u64 size, s32 sector size; 280 bytes,
 *       the bitmap right after it
 *   version 2 (big-endian): u32 magic, u32 version, char[4096] backing,
 *       u32 mtime, u64 size, s32 sector size; 4120 bytes, the bitmap right
 *       after it; the bitmap's length rounds down (a bug UML keeps:
 *       (size + 511) / 4096 bytes), the data starts at the next sector
 *   version 3 (big-endian): u32 magic, u32 version, u32 mtime, u64 size,
 *       u32 sector size, u32 alignment, u32 format (0: the bitmap),
 *       char[4096] backing; 4128 bytes; the bitmap and then the data each
 *       start at a multiple of the alignment.  64-bit builds before 2006
 *       wrote the same fields unpacked (a 64-bit mtime at 8, size at 16 ...
 *       backing at 36, 4136 bytes); such a file shows four zero bytes where
 *       the packed layout has the backing file's name, which is how UML
 *       tells them apart, and so do we.
 * uml_mkcow writes version 3 with 512-byte sectors, 4096-byte alignment,
 * the backing file's absolute name, size and modification time; UML refuses
 * a cow file whose backing file has another size or time.  The backing
 * file is read as raw, as UML reads it (never probed).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "internal.h"

#define COW_MAGIC        0x4f4f4f4du
#define COW_SECTOR       512u
#define COW_ALIGN        4096u             /* uml_mkcow's */
#define COW_PATH_V1      256u
#define COW_PATH_V3      4096u
#define COW_HEADER_V1    280u
#define COW_HEADER_V2    4120u
#define COW_HEADER_V3    4128u
#define COW_HEADER_V3B   4136u
#define COW_ALIGN_MAX    (1u << 20)
#define COW_BITMAP_CHUNK 4096u             /* bitmap bytes looked at per step */

struct cow_state {
    uint32_t version;
    bool broken_v3;          /* the unpacked 64-bit layout */
    uint64_t bitmap_offset;
    uint64_t bitmap_len;     /* bytes the header's size accounts for */
    uint64_t data_offset;
    uint64_t sectors;        /* bits in use: the disk's sectors */
    bool writable;
};

static const struct qimg_opt_desc cow_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "backing_file", QIMG_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Must be 'raw' if present", NULL },
    { NULL, 0, NULL, NULL },
};

static inline struct cow_state *cow_state(struct qimg_image *img) { return img->opaque; }

/* The version, or 0 when the bytes are no cow header. */
static uint32_t header_version(const uint8_t *h)
{
    if (qimg_be32(h) == COW_MAGIC)
        return qimg_be32(h + 4);
    if (qimg_le32(h) == COW_MAGIC && qimg_le32(h + 4) == 1)
        return 1;
    return 0;
}

static int cow_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    if (len < 8)
        return 0;
    uint32_t v = header_version(buf);
    return v >= 1 && v <= 3 ? 100 : 0;
}

/* Where a version's fields are. */
struct cow_layout {
    uint32_t header_len, path_off, path_len, mtime_off, size_off, sector_off, align_off, format_off;
    bool little_endian;
};

static struct cow_layout layout_of(uint32_t version, bool broken)
{
    switch (version) {
    case 1:
        return (struct cow_layout){ COW_HEADER_V1, 8, COW_PATH_V1, 264, 268, 276, 0, 0, true };
    case 2:
        return (struct cow_layout){ COW_HEADER_V2, 8, COW_PATH_V3, 4104, 4108, 4116, 0, 0, false };
    default:
        if (broken)
            return (struct cow_layout){ COW_HEADER_V3B, 36, COW_PATH_V3, 8, 16, 24, 28, 32, false };
        return (struct cow_layout){ COW_HEADER_V3, 32, COW_PATH_V3, 8, 12, 20, 24, 28, false };
    }
}

static uint32_t get32(const struct cow_layout *l, const uint8_t *p)
{
    return l->little_endian ? qimg_le32(p) : qimg_be32(p);
}

static uint64_t get64(const struct cow_layout *l, const uint8_t *p)
{
    return l->little_endian ? qimg_le64(p) : qimg_be64(p);
}

/* The bitmap and data offsets for a disk of size bytes, as UML computes
 * them (see the header comment for version 2's rounding). */
static int compute_offsets(struct cow_state *s, uint64_t size, uint64_t header_len, uint32_t align)
{
    uint64_t bitmap_end;
    s->sectors = qimg_div_round_up(size, COW_SECTOR);
    if (s->version < 3) {
        s->bitmap_offset = header_len;
        s->bitmap_len = (size + COW_SECTOR - 1) / (8 * COW_SECTOR);
    } else {
        if (!qimg_round_up_ok(header_len, align, &s->bitmap_offset))
            return -EINVAL;
        s->bitmap_len = qimg_div_round_up(s->sectors, 8);
    }
    if (!qimg_add_ok(s->bitmap_offset, s->bitmap_len, &bitmap_end) ||
        !qimg_round_up_ok(bitmap_end, align, &s->data_offset))
        return qimg_error(-EFBIG, "cow image size %" PRIu64 " is too large", size);
    /* every sector needs its bit before the data starts (version 2's
     * short bitmap usually has room in the padding) */
    if (s->bitmap_offset + qimg_div_round_up(s->sectors, 8) > s->data_offset)
        return qimg_error(-EINVAL, "cow bitmap of %" PRIu64 " bytes has no room for the bits of %"
                          PRIu64 " sectors", s->bitmap_len, s->sectors);
    return 0;
}

static int parse_header(struct qimg_image *img, struct cow_state *s, const uint8_t *h,
                        uint64_t file_size)
{
    s->version = header_version(h);
    if (s->version < 1 || s->version > 3)
        return s->version == 0 ? qimg_error(-EINVAL, "Image not in cow format")
                               : qimg_error(-ENOTSUP, "cow version %" PRIu32 " is not supported",
                                            s->version);
    s->broken_v3 = s->version == 3 && qimg_be32(h + 32) == 0;
    struct cow_layout l = layout_of(s->version, s->broken_v3);
    if (file_size < l.header_len)
        return qimg_error(-EINVAL, "cow header is cut short (%" PRIu64 " of %" PRIu32 " bytes)",
                          file_size, l.header_len);
    uint64_t size = get64(&l, h + l.size_off);
    uint32_t sector = get32(&l, h + l.sector_off);
    uint32_t align = s->version == 3 ? get32(&l, h + l.align_off) : sector;
    if (sector != COW_SECTOR)
        return qimg_error(-ENOTSUP, "cow sector size %" PRIu32 " is not supported (only %u)",
                          sector, COW_SECTOR);
    if (s->version == 3 && get32(&l, h + l.format_off) != 0)
        return qimg_error(-ENOTSUP, "cow format %" PRIu32 " is not supported (only 0, a bitmap)",
                          get32(&l, h + l.format_off));
    if (!qimg_is_pow2(align) || align > COW_ALIGN_MAX)
        return qimg_error(-EINVAL, "cow alignment %" PRIu32 " is invalid (a power of two up to %u)",
                          align, COW_ALIGN_MAX);
    if (size > INT64_MAX - COW_ALIGN_MAX)
        return qimg_error(-EFBIG, "cow image size %" PRIu64 " is too large", size);
    int r = compute_offsets(s, size, l.header_len, align);
    if (r < 0)
        return r;
    uint64_t bits_end = s->bitmap_offset + qimg_div_round_up(s->sectors, 8);
    if (bits_end > file_size)
        return qimg_error(-EINVAL, "cow bitmap (%" PRIu64 " bytes at offset %" PRIu64 ") ends past "
                          "the end of the file", qimg_div_round_up(s->sectors, 8), s->bitmap_offset);
    const char *name = (const char *)h + l.path_off;
    if (!memchr(name, '\0', l.path_len))
        return qimg_error(-EINVAL, "cow backing file name is not terminated");
    img->size = size;
    if (name[0]) {
        img->backing_file = qimg_strdup(name);
        img->backing_fmt = qimg_strdup("raw");
    }
    return 0;
}

static void cow_close(struct qimg_image *img)
{
    free(img->opaque);
    img->opaque = NULL;
}

static int cow_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    uint8_t h[COW_HEADER_V3B];
    uint64_t file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r == 0)
        r = qimg_io_pread(img->file, h, sizeof h, 0);
    if (r < 0)
        return r;
    struct cow_state *s = qimg_xcalloc(1, sizeof *s);
    img->opaque = s;
    r = parse_header(img, s, h, file_size);
    if (r < 0) {
        cow_close(img);
        free(img->backing_file);
        free(img->backing_fmt);
        img->backing_file = img->backing_fmt = NULL;
        return r;
    }
    s->writable = !img->read_only && (flags & QIMG_OPEN_RDWR);
    return 0;
}

/* ================================================================ bitmap */

/* How many sectors from `first` (at most max) share the bit of `first`;
 * *set: that bit.  One read of the bitmap, at most COW_BITMAP_CHUNK bytes. */
static int bit_run(struct qimg_image *img, uint64_t first, uint64_t max, bool *set, uint64_t *run)
{
    struct cow_state *s = cow_state(img);
    uint8_t bits[COW_BITMAP_CHUNK];
    uint64_t last = first + max - 1;
    uint64_t len = QIMG_MIN(last / 8 - first / 8 + 1, (uint64_t)COW_BITMAP_CHUNK);
    int r = qimg_io_pread(img->file, bits, len, s->bitmap_offset + first / 8);
    if (r < 0)
        return r;
    uint64_t end = QIMG_MIN(last + 1, (first / 8 + len) * 8);
    *set = bits[0] >> (first % 8) & 1;
    uint64_t k = first + 1;
    while (k < end) {
        uint8_t b = bits[k / 8 - first / 8];
        if (k % 8 == 0 && (b == 0x00 || b == 0xff) && (b != 0) == *set && k + 8 <= end) {
            k += 8;   /* a whole byte alike */
            continue;
        }
        if ((bool)(b >> (k % 8) & 1) != *set)
            break;
        k++;
    }
    *run = k - first;
    return 0;
}

/* ================================================================= read */

static int cow_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    struct cow_state *s = cow_state(img);
    uint8_t *p = buf;
    while (len > 0) {
        uint64_t sec = off / COW_SECTOR, last = (off + len - 1) / COW_SECTOR, run;
        bool set;
        int r = bit_run(img, sec, last - sec + 1, &set, &run);
        if (r < 0)
            return r;
        uint64_t n = QIMG_MIN((sec + run) * COW_SECTOR - off, (uint64_t)len);
        r = set ? qimg_io_pread(img->file, p, n, s->data_offset + off)
                : qimg_read_backing(img, off, p, (size_t)n);
        if (r < 0)
            return r;
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return 0;
}

static int cow_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    struct cow_state *s = cow_state(img);
    uint64_t sec = off / COW_SECTOR, last = (off + len - 1) / COW_SECTOR, run;
    bool set;
    int r = bit_run(img, sec, last - sec + 1, &set, &run);
    if (r < 0)
        return r;
    ext->length = QIMG_MIN((sec + run) * COW_SECTOR - off, len);
    ext->flags = 0;
    if (set) {
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET;
        ext->host_offset = s->data_offset + off;
        ext->host_file = img->file->filename;
    }
    return 0;
}

/* ================================================================ write */

/* Set the bits of sectors [first, last] (under the lock: two writers may
 * share a byte). */
static int set_bits(struct qimg_image *img, uint64_t first, uint64_t last)
{
    struct cow_state *s = cow_state(img);
    uint8_t bits[COW_BITMAP_CHUNK];
    while (first <= last) {
        uint64_t len = QIMG_MIN(last / 8 - first / 8 + 1, (uint64_t)COW_BITMAP_CHUNK);
        uint64_t end = QIMG_MIN(last, (first / 8 + len) * 8 - 1);
        uint64_t at = s->bitmap_offset + first / 8;
        int r = qimg_io_pread(img->file, bits, len, at);
        if (r < 0)
            return r;
        for (uint64_t k = first; k <= end; k++)
            bits[k / 8 - first / 8] |= (uint8_t)(1u << (k % 8));
        r = qimg_io_pwrite(img->file, bits, len, at);
        if (r < 0)
            return r;
        first = end + 1;
    }
    return 0;
}

/* Whole sectors are copied on write: a partial one takes the rest of its
 * bytes from what the image reads there (the backing file's if its bit is
 * clear).  Data first, then the bits; under the lock, so that writers of
 * one sector do not merge with each other's old bytes. */
static int write_locked(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct cow_state *s = cow_state(img);
    uint64_t head = off % COW_SECTOR, end = off + len;
    uint64_t wend = QIMG_MIN(qimg_div_round_up(end, COW_SECTOR) * COW_SECTOR, img->size);
    const uint8_t *p = buf;
    CLEANUP_FREE uint8_t *whole = NULL;
    if (head || wend != end) {
        uint64_t start = off - head, span = wend - start;
        uint64_t tail = qimg_round_down(wend - 1, COW_SECTOR);
        whole = qimg_xmalloc(span);
        int r = 0;
        if (head)
            r = cow_read(img, start, whole, (size_t)QIMG_MIN(span, (uint64_t)COW_SECTOR));
        if (r == 0 && wend != end && (!head || tail > start))
            r = cow_read(img, tail, whole + (tail - start), (size_t)(wend - tail));
        if (r < 0)
            return r;
        memcpy(whole + head, buf, len);
        p = whole;
        off = start;
        len = (size_t)span;
    }
    int r = qimg_io_pwrite(img->file, p, len, s->data_offset + off);
    if (r == 0)
        r = set_bits(img, off / COW_SECTOR, (off + len - 1) / COW_SECTOR);
    return r;
}

static int cow_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct cow_state *s = cow_state(img);
    if (!s->writable)
        return -EACCES;
    if (len == 0)
        return 0;
    pthread_mutex_lock(&img->lock);
    int r = write_locked(img, off, buf, len);
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int cow_flush(struct qimg_image *img)
{
    return qimg_io_flush(img->file);
}

/* ======================================================= backing changes */

/* The modification time UML compares with the header's (0 when the name
 * is no local file). */
static uint32_t backing_mtime(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 ? (uint32_t)st.st_mtime : 0;
}

/* A name as uml_mkcow stores it: its directory's real absolute path and
 * its last component (relative names are taken against the image's
 * directory, as qemu-img takes -b). */
static char *absolute_name(const char *image, const char *backing)
{
    CLEANUP_FREE char *combined = qimg_path_combine(image, backing);
    if (qimg_path_has_protocol(combined))
        return qimg_strdup(combined);
    CLEANUP_FREE char *dir = qimg_path_dirname(combined);
    const char *slash = strrchr(combined, '/');
    const char *base = slash ? slash + 1 : combined;
    CLEANUP_FREE char *real = realpath(dir, NULL);
    if (real)
        return qimg_asprintf("%s/%s", strcmp(real, "/") == 0 ? "" : real, base);
    char cwd[4096];
    if (combined[0] == '/' || !getcwd(cwd, sizeof cwd))
        return qimg_strdup(combined);
    return qimg_asprintf("%s/%s", cwd, combined);
}

/* Write the backing name (and its time) into the header in place. */
static int store_backing(struct qimg_image *img, struct cow_state *s, const char *name)
{
    struct cow_layout l = layout_of(s->version, s->broken_v3);
    size_t len = name ? strlen(name) : 0;
    if (len >= l.path_len)
        return qimg_error(-ENAMETOOLONG, "cow backing file name is too long (at most %" PRIu32
                          " bytes)", l.path_len - 1);
    if (s->version == 3 && !s->broken_v3 && len < 4)
        return qimg_error(-EINVAL, "cow backing file name '%s' is too short for a version 3 "
                          "header (UML would take it for the unpacked layout)", name ? name : "");
    CLEANUP_FREE uint8_t *field = qimg_xcalloc(1, l.path_len);
    if (len)
        memcpy(field, name, len);
    int r = qimg_io_pwrite(img->file, field, l.path_len, l.path_off);
    if (r < 0)
        return r;
    return 0;
}

static int store_mtime(struct qimg_image *img, struct cow_state *s, uint32_t mtime)
{
    struct cow_layout l = layout_of(s->version, s->broken_v3);
    uint8_t b[4];
    if (l.little_endian)
        qimg_put_le32(b, mtime);
    else
        qimg_put_be32(b, mtime);
    return qimg_io_pwrite(img->file, b, sizeof b, l.mtime_off);
}

static int cow_change_backing(struct qimg_image *img, const char *backing, const char *fmt)
{
    struct cow_state *s = cow_state(img);
    if (!s->writable)
        return -EACCES;
    if (fmt && strcmp(fmt, "raw") != 0)
        return qimg_error(-ENOTSUP, "cow backing files are raw (UML reads them as they are), "
                          "not '%s'", fmt);
    CLEANUP_FREE char *name = backing ? absolute_name(img->file->filename, backing) : NULL;
    pthread_mutex_lock(&img->lock);
    int r = store_backing(img, s, name);
    if (r == 0)
        r = store_mtime(img, s, backing_mtime(name));
    if (r == 0)
        r = qimg_io_flush(img->file);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    qimg_image_set_backing_names(img, name, name ? "raw" : NULL);
    return 0;
}

/* After commit: no sector of our own (the bitmap cleared, the data area
 * punched out) and the backing file's new time recorded, so that UML
 * still takes the pair. */
static int cow_make_empty(struct qimg_image *img)
{
    struct cow_state *s = cow_state(img);
    if (!s->writable)
        return -EACCES;
    pthread_mutex_lock(&img->lock);
    int r = qimg_io_zero(img->file, s->bitmap_offset, s->data_offset - s->bitmap_offset, 0);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = qimg_io_truncate(img->file, s->data_offset);
    if (r == 0)
        r = qimg_io_truncate(img->file, s->data_offset + img->size);
    if (r == 0 && img->backing_file)
        r = store_mtime(img, s, backing_mtime(img->full_backing_filename));
    if (r == 0)
        r = qimg_io_flush(img->file);
    pthread_mutex_unlock(&img->lock);
    return r;
}

static bool cow_has_zero_init(struct qimg_image *img) { return true; }

/* =============================================================== create */

/* uml_mkcow's file: a version 3 header, a zeroed bitmap, the data area
 * as a hole up to the disk's end. */
static int cow_create(struct qimg_create_ctx *ctx)
{
    if (strcmp(ctx->prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", ctx->prealloc);
    if (ctx->backing_fmt && strcmp(ctx->backing_fmt, "raw") != 0)
        return qimg_error(-EINVAL, "cow backing files are raw (UML reads them as they are), "
                          "not '%s'", ctx->backing_fmt);
    CLEANUP_FREE char *name = ctx->backing_file ? absolute_name(ctx->filename, ctx->backing_file)
                                                : NULL;
    size_t len = name ? strlen(name) : 0;
    if (len >= COW_PATH_V3)
        return qimg_error(-ENAMETOOLONG, "cow backing file name is too long (at most %u bytes)",
                          COW_PATH_V3 - 1);
    if (len < 4)
        return qimg_error(-EINVAL, "A cow image needs a backing file (-b) whose absolute name "
                          "has at least 4 bytes");
    struct cow_state s = { .version = 3 };
    int r = compute_offsets(&s, ctx->size, COW_HEADER_V3, COW_ALIGN);
    if (r < 0)
        return r;
    uint64_t end;
    if (!qimg_add_ok(s.data_offset, ctx->size, &end) || end > INT64_MAX)
        return qimg_error(-EFBIG, "cow image size %" PRIu64 " is too large", ctx->size);
    uint8_t h[COW_HEADER_V3] = { 0 };
    qimg_put_be32(h, COW_MAGIC);
    qimg_put_be32(h + 4, 3);
    qimg_put_be32(h + 8, backing_mtime(name));
    qimg_put_be64(h + 12, ctx->size);
    qimg_put_be32(h + 20, COW_SECTOR);
    qimg_put_be32(h + 24, COW_ALIGN);
    memcpy(h + 32, name, len);
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = qimg_io_truncate(io, 0);
    if (r == 0)
        r = qimg_io_pwrite(io, h, sizeof h, 0);
    if (r == 0)
        r = qimg_io_truncate(io, end);
    qimg_io_close(io);
    return r;
}

const struct qimg_driver qimg_driver_cow = {
    .name           = "cow",
    .flags          = QIMG_DRV_SUPPORTS_BACKING | QIMG_DRV_RAW_BACKING,
    .create_opts    = cow_create_opts,
    .probe          = cow_probe,
    .open           = cow_open,
    .close          = cow_close,
    .create         = cow_create,
    .read           = cow_read,
    .write          = cow_write,
    .flush          = cow_flush,
    .block_status   = cow_block_status,
    .change_backing = cow_change_backing,
    .make_empty     = cow_make_empty,
    .has_zero_init  = cow_has_zero_init,
};
