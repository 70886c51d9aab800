/* qimg - Bochs "growing" disk images (the redolog format of bximage).
 *
 * On-disk layout (integers little-endian), written from Bochs' images and
 * qemu's reading of them:
 *   0x000  char[32] "Bochs Virtual HD Image", NUL padded
 *   0x020  char[16] type "Redolog"
 *   0x030  char[16] subtype: "Growing" (qemu reads no other: "Undoable"
 *          and "Volatile" redologs only make sense over a base image)
 *   0x040  u32 version: 0x00020000, or 0x00010000 for the first layout
 *   0x044  u32 header size (512: the catalog follows it)
 *   0x048  u32 catalog entries, u32 bitmap bytes, u32 extent bytes
 *   0x054  version 2: u32 timestamp, u64 disk size at 0x058;
 *          version 1: u64 disk size at 0x054
 *   header size: the catalog, one u32 per guest extent: the index of its
 *          host extent, 0xffffffff when never written
 *   then the host extents, each a bitmap (whole 512-byte blocks, one bit
 *   per sector, the lowest bit first, set when the sector was written) and
 *   the extent's sectors.  An unwritten sector reads as zeros.
 *
 * qemu 7.2 refuses what its driver cannot address (catalog over 1 Mi
 * entries, extent sizes) with its own words, which we keep; it accepts a
 * catalog, a bitmap or extents that lie past the end of the file and reads
 * them as zeros.  qimg refuses those with an error (silent zeros would be
 * data loss), after qemu's checks.
 *
 * Writing is beyond qemu-img (which opens bochs read-only): a new extent
 * goes after the last one (bitmap and data zeroed, as Bochs writes them),
 * then the data, the bitmap and the catalog entry, in that order.
 */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"

#define BOCHS_MAGIC        "Bochs Virtual HD Image"
#define BOCHS_TYPE_REDOLOG "Redolog"
#define BOCHS_SUB_GROWING  "Growing"
#define BOCHS_VERSION_1    0x00010000u
#define BOCHS_VERSION_2    0x00020000u
#define BOCHS_HEADER_LEN   512u
#define BOCHS_SECTOR       512u
#define BOCHS_UNALLOCATED  0xffffffffu
/* qemu's limits */
#define BOCHS_CATALOG_MAX  0x100000u
#define BOCHS_EXTENT_MAX   0x800000u

enum {
    H_MAGIC = 0x00, H_TYPE = 0x20, H_SUBTYPE = 0x30, H_VERSION = 0x40, H_HEADER = 0x44,
    H_CATALOG = 0x48, H_BITMAP = 0x4c, H_EXTENT = 0x50, H_DISK_V1 = 0x54, H_DISK_V2 = 0x58,
};

struct bochs_state {
    uint32_t *catalog;        /* host order */
    uint32_t catalog_size;
    uint32_t header_size;     /* where the catalog starts */
    uint32_t bitmap_bytes;    /* bytes of a bitmap in use (the header's) */
    uint64_t bitmap_len;      /* on disk: whole blocks */
    uint64_t extent_size;
    uint64_t data_offset;     /* the first host extent */
    uint32_t next_extent;     /* host extents in the file */
    bool writable;
};

static const struct qimg_opt_desc bochs_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { NULL, 0, NULL, NULL },
};

static inline struct bochs_state *bochs_state(struct qimg_image *img) { return img->opaque; }

/* A text field holding exactly s (NUL terminated inside the field). */
static bool field_is(const uint8_t *field, size_t field_len, const char *s)
{
    size_t n = strlen(s) + 1;
    return n <= field_len && memcmp(field, s, n) == 0;
}

static bool header_known(const uint8_t *h)
{
    uint32_t v = qimg_le32(h + H_VERSION);
    return field_is(h + H_MAGIC, 32, BOCHS_MAGIC) && field_is(h + H_TYPE, 16, BOCHS_TYPE_REDOLOG) &&
           field_is(h + H_SUBTYPE, 16, BOCHS_SUB_GROWING) &&
           (v == BOCHS_VERSION_1 || v == BOCHS_VERSION_2);
}

static int bochs_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    return len >= BOCHS_HEADER_LEN && header_known(buf) ? 100 : 0;
}

static uint64_t disk_size(const uint8_t *h)
{
    uint64_t disk = qimg_le64(h + (qimg_le32(h + H_VERSION) == BOCHS_VERSION_1 ? H_DISK_V1 : H_DISK_V2));
    return qimg_round_down(disk, BOCHS_SECTOR);   /* qemu counts whole sectors */
}

/* The checks qemu makes, in its order and words. */
static int check_qemu_limits(const uint8_t *h, uint64_t size)
{
    uint32_t catalog = qimg_le32(h + H_CATALOG), extent = qimg_le32(h + H_EXTENT);
    if (!header_known(h))
        return qimg_error(-EINVAL, "Image not in Bochs format");
    if (catalog > BOCHS_CATALOG_MAX)
        return qimg_error(-EFBIG, "Catalog size is too large");
    if (extent < BOCHS_SECTOR)
        return qimg_error(-EINVAL, "Extent size must be at least 512");
    if (!qimg_is_pow2(extent))
        return qimg_error(-EINVAL, "Extent size %" PRIu32 " is not a power of two", extent);
    if (extent > BOCHS_EXTENT_MAX)
        return qimg_error(-EINVAL, "Extent size %" PRIu32 " is too large", extent);
    if (catalog < qimg_div_round_up(size / BOCHS_SECTOR, extent / BOCHS_SECTOR))
        return qimg_error(-EINVAL, "Catalog size is too small for this disk size");
    return 0;
}

/* Beyond qemu: what it would read as zeros without a word. */
static int check_layout(struct bochs_state *s, uint64_t file_size)
{
    if (s->header_size < BOCHS_HEADER_LEN)
        return qimg_error(-EINVAL, "Bochs header size %" PRIu32 " is smaller than the header (%u)",
                          s->header_size, BOCHS_HEADER_LEN);
    uint64_t catalog_end = (uint64_t)s->header_size + (uint64_t)s->catalog_size * 4;
    if (catalog_end > file_size)
        return qimg_error(-EINVAL, "Bochs catalog (%" PRIu32 " entries at offset %" PRIu32
                          ") ends past the end of the file", s->catalog_size, s->header_size);
    uint64_t sectors = s->extent_size / BOCHS_SECTOR, need = qimg_div_round_up(sectors, 8);
    if (s->bitmap_bytes < need ||
        qimg_div_round_up(s->bitmap_bytes, BOCHS_SECTOR) != qimg_div_round_up(need, BOCHS_SECTOR))
        return qimg_error(-EINVAL, "Bochs bitmap size %" PRIu32 " does not fit the extent size %"
                          PRIu64 " (it needs %" PRIu64 " bytes)", s->bitmap_bytes, s->extent_size, need);
    return 0;
}

static uint64_t extent_host(const struct bochs_state *s, uint32_t entry)
{
    return s->data_offset + (uint64_t)entry * (s->bitmap_len + s->extent_size);
}

/* Every allocated extent (bitmap and data, which Bochs writes whole) must
 * lie inside the file. */
static int load_catalog(struct qimg_image *img, struct bochs_state *s, uint64_t file_size)
{
    s->catalog = qimg_alloc_from_image((uint64_t)QIMG_MAX(s->catalog_size, 1u) * 4, "Bochs catalog");
    if (!s->catalog)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, s->catalog, (uint64_t)s->catalog_size * 4, s->header_size);
    if (r < 0)
        return r;
    uint64_t room = file_size > s->data_offset ? file_size - s->data_offset : 0;
    uint64_t in_file = room / (s->bitmap_len + s->extent_size);
    for (uint32_t i = 0; i < s->catalog_size; i++) {
        uint32_t e = qimg_le32(&s->catalog[i]);
        s->catalog[i] = e;
        if (e == BOCHS_UNALLOCATED)
            continue;
        if (e >= in_file)
            return qimg_error(-EINVAL, "Bochs catalog entry %" PRIu32 " points past the end of the "
                              "file (extent %" PRIu32 " at offset %" PRIu64 ")", i, e, extent_host(s, e));
        if (e >= s->next_extent)
            s->next_extent = e + 1;
    }
    return 0;
}

static void bochs_close(struct qimg_image *img)
{
    struct bochs_state *s = bochs_state(img);
    if (!s)
        return;
    free(s->catalog);
    free(s);
    img->opaque = NULL;
}

static int bochs_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    uint8_t h[BOCHS_HEADER_LEN];
    uint64_t file_size;
    int r = qimg_io_pread(img->file, h, sizeof h, 0);
    if (r == 0)
        r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return r;
    uint64_t size = disk_size(h);
    r = check_qemu_limits(h, size);
    if (r < 0)
        return r;
    struct bochs_state *s = qimg_xcalloc(1, sizeof *s);
    img->opaque = s;
    s->catalog_size = qimg_le32(h + H_CATALOG);
    s->header_size = qimg_le32(h + H_HEADER);
    s->bitmap_bytes = qimg_le32(h + H_BITMAP);
    s->extent_size = qimg_le32(h + H_EXTENT);
    s->bitmap_len = qimg_div_round_up(s->bitmap_bytes, BOCHS_SECTOR) * BOCHS_SECTOR;
    s->data_offset = (uint64_t)s->header_size + (uint64_t)s->catalog_size * 4;
    r = check_layout(s, file_size);
    if (r == 0)
        r = load_catalog(img, s, file_size);
    if (r < 0) {
        bochs_close(img);
        return r;
    }
    s->writable = !img->read_only && (flags & QIMG_OPEN_RDWR);
    img->size = size;
    return 0;
}

/* ================================================================= read */

/* [off, off+n) inside the extent of catalog entry `entry`: sectors whose
 * bit is set from the file, the others zeros. */
static int read_in_extent(struct qimg_image *img, uint32_t entry, uint64_t off, uint8_t *p, size_t n)
{
    struct bochs_state *s = bochs_state(img);
    if (entry == BOCHS_UNALLOCATED) {
        memset(p, 0, n);
        return 0;
    }
    uint64_t host = extent_host(s, entry), in_extent = off % s->extent_size;
    uint64_t first = in_extent / BOCHS_SECTOR, last = (in_extent + n - 1) / BOCHS_SECTOR;
    uint8_t bits[BOCHS_EXTENT_MAX / BOCHS_SECTOR / 8];
    int r = qimg_io_pread(img->file, bits, last / 8 - first / 8 + 1, host + first / 8);
    if (r < 0)
        return r;
    /* runs of sectors with the same bit: one read or one memset each */
    uint64_t pos = in_extent, end = in_extent + n;
    while (pos < end) {
        uint64_t sec = pos / BOCHS_SECTOR;
        bool set = bits[sec / 8 - first / 8] >> (sec % 8) & 1;
        uint64_t run_end = pos;
        while (run_end < end) {
            uint64_t k = run_end / BOCHS_SECTOR;
            if ((bool)(bits[k / 8 - first / 8] >> (k % 8) & 1) != set)
                break;
            run_end = QIMG_MIN((k + 1) * BOCHS_SECTOR, end);
        }
        uint8_t *dst = p + (pos - in_extent);
        if (set) {
            r = qimg_io_pread(img->file, dst, run_end - pos, host + s->bitmap_len + pos);
            if (r < 0)
                return r;
        } else {
            memset(dst, 0, run_end - pos);
        }
        pos = run_end;
    }
    return 0;
}

static int read_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct bochs_state *s = bochs_state(img);
    pthread_mutex_lock(&img->lock);
    uint32_t entry = s->catalog[off / s->extent_size];
    pthread_mutex_unlock(&img->lock);
    return read_in_extent(img, entry, off, p, n);
}

static int bochs_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    return qimg_for_each_piece(img, off, buf, len, bochs_state(img)->extent_size, read_piece);
}

/* qemu's bochs driver has no block status: every byte is data with no
 * host offset (map --output=human refuses such an image, as qemu-img). */
static int bochs_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    ext->length = len;
    ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED;
    return 0;
}

static bool bochs_has_zero_init(struct qimg_image *img) { return true; }

/* ================================================================ write */

/* A new host extent after the last one the catalog uses: the file grows
 * to hold it, and its bitmap is zeroed (the place may hold an extent a
 * crash left behind before its catalog entry was written). */
static int allocate_extent(struct qimg_image *img, struct bochs_state *s, uint32_t index)
{
    if (s->next_extent >= s->catalog_size)
        return qimg_error(-ENOSPC, "Bochs image has no room for a new extent");
    uint32_t e = s->next_extent;
    uint64_t end = extent_host(s, e) + s->bitmap_len + s->extent_size, file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r == 0 && file_size < end)
        r = qimg_io_truncate(img->file, end);
    if (r == 0 && file_size > extent_host(s, e))
        r = qimg_io_zero(img->file, extent_host(s, e), s->bitmap_len, false);
    if (r < 0)
        return r;
    s->next_extent++;
    s->catalog[index] = e;
    return 0;
}

static int store_catalog_entry(struct qimg_image *img, struct bochs_state *s, uint32_t index)
{
    uint8_t le[4];
    qimg_put_le32(le, s->catalog[index]);
    return qimg_io_pwrite(img->file, le, sizeof le, (uint64_t)s->header_size + (uint64_t)index * 4);
}

/* Mark sectors [first, last] of the extent at host written. */
static int set_bits(struct qimg_image *img, uint64_t host, uint64_t first, uint64_t last)
{
    uint8_t bits[BOCHS_EXTENT_MAX / BOCHS_SECTOR / 8];
    size_t len = (size_t)(last / 8 - first / 8 + 1);
    int r = qimg_io_pread(img->file, bits, len, host + first / 8);
    if (r < 0)
        return r;
    for (uint64_t k = first; k <= last; k++)
        bits[k / 8 - first / 8] |= (uint8_t)(1u << (k % 8));
    return qimg_io_pwrite(img->file, bits, len, host + first / 8);
}

/* [off, off+n) inside one extent, under the lock.  A partly written
 * sector keeps the bytes it read before (zeros when its bit was clear). */
static int write_locked(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct bochs_state *s = bochs_state(img);
    uint32_t index = (uint32_t)(off / s->extent_size);
    uint64_t in_extent = off % s->extent_size;
    uint64_t first = in_extent / BOCHS_SECTOR, last = (in_extent + n - 1) / BOCHS_SECTOR;
    uint64_t head = in_extent % BOCHS_SECTOR, tail = (in_extent + n) % BOCHS_SECTOR;
    int r = 0;
    CLEANUP_FREE uint8_t *whole = NULL;
    if (head || tail) {
        /* whole sectors: merge with what the image reads there */
        uint64_t span = (last - first + 1) * BOCHS_SECTOR;
        whole = qimg_xmalloc(span);
        r = read_in_extent(img, s->catalog[index], off - head, whole, span);
        if (r < 0)
            return r;
        memcpy(whole + head, p, n);
        p = whole;
        n = span;
        in_extent -= head;
    }
    bool new_extent = s->catalog[index] == BOCHS_UNALLOCATED;
    if (new_extent)
        r = allocate_extent(img, s, index);
    uint64_t host = 0;
    if (r == 0) {
        host = extent_host(s, s->catalog[index]);
        r = qimg_io_pwrite(img->file, p, n, host + s->bitmap_len + in_extent);
    }
    if (r == 0)
        r = set_bits(img, host, first, last);
    if (r == 0 && new_extent)
        r = store_catalog_entry(img, s, index);
    return r;
}

static int write_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    pthread_mutex_lock(&img->lock);
    int r = write_locked(img, off, p, n);
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int bochs_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct bochs_state *s = bochs_state(img);
    if (!s->writable)
        return -EACCES;
    return qimg_for_each_piece(img, off, (uint8_t *)buf, len, s->extent_size, write_piece);
}

static int bochs_flush(struct qimg_image *img)
{
    return qimg_io_flush(img->file);
}

/* =============================================================== create */

/* bximage's geometry for a disk of size bytes: starting from 512 entries
 * of 4 KiB extents (a 1-byte bitmap), the bitmap and the catalog double in
 * turn until they cover the disk. */
static int pick_geometry(uint64_t size, uint32_t *catalog, uint32_t *bitmap, uint32_t *extent)
{
    uint64_t entries = 512, bits = 1;
    for (unsigned turn = 1;; turn++) {
        uint64_t ext = bits * 8 * BOCHS_SECTOR;
        if (entries * ext >= size) {
            *catalog = (uint32_t)entries;
            *bitmap = (uint32_t)bits;
            *extent = (uint32_t)ext;
            break;
        }
        if (turn & 1)
            bits *= 2;
        else
            entries *= 2;
        if (entries > BOCHS_CATALOG_MAX || bits * 8 * BOCHS_SECTOR > BOCHS_EXTENT_MAX)
            return qimg_error(-EFBIG, "Image size too large for a Bochs image (at most %" PRIu64
                              " bytes)", (uint64_t)BOCHS_CATALOG_MAX * BOCHS_EXTENT_MAX);
    }
    return 0;
}

static int bochs_create(struct qimg_create_ctx *ctx)
{
    if (strcmp(ctx->prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", ctx->prealloc);
    if (ctx->backing_file)
        return qimg_error(-ENOTSUP, "Backing file not supported for file format 'bochs'");
    uint64_t size;
    uint32_t catalog = 0, bitmap = 0, extent = 0;
    if (!qimg_round_up_ok(ctx->size, BOCHS_SECTOR, &size))
        return qimg_error(-EFBIG, "Image size too large for a Bochs image");
    int r = pick_geometry(size, &catalog, &bitmap, &extent);
    if (r < 0)
        return r;
    uint64_t len = BOCHS_HEADER_LEN + (uint64_t)catalog * 4;
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(len);
    memset(buf, 0, BOCHS_HEADER_LEN);
    memset(buf + BOCHS_HEADER_LEN, 0xff, len - BOCHS_HEADER_LEN);
    memcpy(buf + H_MAGIC, BOCHS_MAGIC, strlen(BOCHS_MAGIC));
    memcpy(buf + H_TYPE, BOCHS_TYPE_REDOLOG, strlen(BOCHS_TYPE_REDOLOG));
    memcpy(buf + H_SUBTYPE, BOCHS_SUB_GROWING, strlen(BOCHS_SUB_GROWING));
    qimg_put_le32(buf + H_VERSION, BOCHS_VERSION_2);
    qimg_put_le32(buf + H_HEADER, BOCHS_HEADER_LEN);
    qimg_put_le32(buf + H_CATALOG, catalog);
    qimg_put_le32(buf + H_BITMAP, bitmap);
    qimg_put_le32(buf + H_EXTENT, extent);
    qimg_put_le64(buf + H_DISK_V2, size);
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = qimg_io_truncate(io, 0);
    if (r == 0)
        r = qimg_io_pwrite(io, buf, len, 0);
    qimg_io_close(io);
    return r;
}

/* ============================================================== measure */

/* qemu-img cannot measure bochs.  The header and the catalog, then one
 * bitmap and extent per extent that holds data (block status: an upper
 * bound, convert may still find zeros). */
static int bochs_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    uint64_t vsize = src ? qimg_size(src) : size, rounded;
    uint32_t catalog = 0, bitmap = 0, extent = 0;
    if (!qimg_round_up_ok(vsize, BOCHS_SECTOR, &rounded))
        return qimg_error(-EFBIG, "Image size too large for a Bochs image");
    int r = pick_geometry(rounded, &catalog, &bitmap, &extent);
    if (r < 0)
        return r;
    uint64_t meta = BOCHS_HEADER_LEN + (uint64_t)catalog * 4;
    uint64_t per_extent = qimg_div_round_up(bitmap, BOCHS_SECTOR) * BOCHS_SECTOR + extent;
    uint64_t used = 0;
    if (src && (r = qimg_count_data_blocks(src, 0, vsize, extent, &used)) < 0)
        return r;
    out->required = meta + used * per_extent;
    out->fully_allocated = meta + qimg_div_round_up(rounded, extent) * per_extent;
    return 0;
}

const struct qimg_driver qimg_driver_bochs = {
    .name           = "bochs",
    .create_opts    = bochs_create_opts,
    .probe          = bochs_probe,
    .open           = bochs_open,
    .close          = bochs_close,
    .create         = bochs_create,
    .read           = bochs_read,
    .write          = bochs_write,
    .flush          = bochs_flush,
    .block_status   = bochs_block_status,
    .measure        = bochs_measure,
    .has_zero_init  = bochs_has_zero_init,
};
