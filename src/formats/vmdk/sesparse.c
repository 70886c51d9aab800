/* qimg - VMDK seSparse extents (ESXi's space-efficient sparse format,
 * descriptor createType "seSparse", extent type SESPARSE), read-only as in
 * qemu 7.2.
 *
 * On-disk layout (little endian; sizes and offsets in 512-byte sectors):
 *   sector 0, the constant header, 26 u64 then zero padding:
 *       magic 0xcafebabe, version 0x0000000200000001, capacity,
 *       grain size (8), grain table size (64), flags (0), 4 reserved (0),
 *       volatile header offset and size, journal header offset and size,
 *       journal offset and size, grain directory offset and size,
 *       grain tables offset and size, free bitmap offset and size,
 *       backmap offset and size, grains offset and size
 *   the volatile header: magic 0xcafecafe, free grain table number, next
 *       transaction sequence number, replay-journal flag (must be 0), zero
 *       padding to 512 bytes
 * The grain directory is an array of u64: 0 = no grain table, else
 * 0x1000_0000_TTTT_TTTT with T the index of a table among the grain tables
 * (each 4096 u64 = 64 sectors).  A grain table entry's top nibble gives
 * its kind: 0 unallocated (the whole entry 0), 1 unmapped and 2 zero (both
 * read as zeros), 3 allocated, whose grain index is the entry's bits 0-47
 * shifted up by 12 plus bits 48-59; the grain is at grains offset + index x
 * grain size.  Anything else is an I/O error.
 *
 * What qemu checks at open (its messages): every constant header field
 * above that has a fixed value, zero padding of both headers, the journal
 * not needing a replay.  A grain directory larger than 32 Mi entries is
 * "L1 size too big"; its entry count is the directory size in bytes / 8 cut
 * to 32 bits, as qemu computes it.
 */
#include <errno.h>
#include <inttypes.h>

#include "vmdk.h"

#define SE_CONST_MAGIC 0xcafebabeull
#define SE_VOLATILE_MAGIC 0xcafecafeull
#define SE_VERSION 0x0000000200000001ull
#define SE_GRAIN_SECTORS 8u
#define SE_GT_SECTORS 64u
#define SE_GT_ENTRIES (SE_GT_SECTORS * VMDK_SECTOR / 8)
#define SE_MAX_GD_ENTRIES (32u << 20)

enum {   /* constant header fields, as u64 indexes */
    C_MAGIC, C_VERSION, C_CAPACITY, C_GRAIN, C_GT_SIZE, C_FLAGS, C_RES1, C_RES2, C_RES3, C_RES4,
    C_VOL_OFF, C_VOL_SIZE, C_JH_OFF, C_JH_SIZE, C_J_OFF, C_J_SIZE, C_GD_OFF, C_GD_SIZE,
    C_GT_OFF, C_GT_SIZE_TOTAL, C_FB_OFF, C_FB_SIZE, C_BM_OFF, C_BM_SIZE, C_GRAINS_OFF,
    C_GRAINS_SIZE, C_COUNT
};

struct sesparse {
    uint64_t gt_sector, grains_sector;
    struct vmdk_directory gd;
    struct vmdk_table_cache gts;
};

static uint64_t field(const uint8_t *hdr, int i)
{
    return qimg_le64(hdr + 8 * i);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return qimg_is_zero(p, n);
}

static int check_const_header(const uint8_t *h)
{
    if (field(h, C_MAGIC) != SE_CONST_MAGIC)
        return qimg_error(-EINVAL, "Bad const header magic: 0x%016" PRIx64, field(h, C_MAGIC));
    if (field(h, C_VERSION) != SE_VERSION)
        return qimg_error(-ENOTSUP, "Unsupported version: 0x%016" PRIx64, field(h, C_VERSION));
    if (field(h, C_GRAIN) != SE_GRAIN_SECTORS)
        return qimg_error(-ENOTSUP, "Unsupported grain size: %" PRIu64, field(h, C_GRAIN));
    if (field(h, C_GT_SIZE) != SE_GT_SECTORS)
        return qimg_error(-ENOTSUP, "Unsupported grain table size: %" PRIu64, field(h, C_GT_SIZE));
    if (field(h, C_FLAGS) != 0)
        return qimg_error(-ENOTSUP, "Unsupported flags: 0x%016" PRIx64, field(h, C_FLAGS));
    if (field(h, C_RES1) | field(h, C_RES2) | field(h, C_RES3) | field(h, C_RES4))
        return qimg_error(-ENOTSUP, "Unsupported reserved bits: 0x%016" PRIx64 " 0x%016" PRIx64
                          " 0x%016" PRIx64 " 0x%016" PRIx64, field(h, C_RES1),
                          field(h, C_RES2), field(h, C_RES3), field(h, C_RES4));
    if (!all_zero(h + 8 * C_COUNT, VMDK_SECTOR - 8 * C_COUNT))
        return qimg_error(-ENOTSUP, "Unsupported non-zero const header padding");
    return 0;
}

static int check_volatile_header(struct vmdk_extent *e, uint64_t sector)
{
    uint8_t v[VMDK_SECTOR];
    int r = sector > ((uint64_t)INT64_MAX - VMDK_SECTOR) / VMDK_SECTOR ? -EIO :
            qimg_io_pread(e->file, v, sizeof v, sector * VMDK_SECTOR);
    if (r < 0)
        return qimg_error(r, "Could not read volatile header from file '%s': %s",
                          e->file->filename, strerror(-r));
    if (qimg_le64(v) != SE_VOLATILE_MAGIC)
        return qimg_error(-EINVAL, "Bad volatile header magic: 0x%016" PRIx64, qimg_le64(v));
    if (qimg_le64(v + 24) != 0)
        return qimg_error(-ENOTSUP, "Image is dirty, Replaying journal not supported");
    if (!all_zero(v + 32, VMDK_SECTOR - 32))
        return qimg_error(-ENOTSUP, "Unsupported non-zero volatile header padding");
    return 0;
}

static void se_close(struct vmdk_extent *e)
{
    struct sesparse *s = e->priv;
    if (!s)
        return;
    vmdk_directory_free(&s->gd);
    vmdk_table_cache_free(&s->gts);
    free(s);
    e->priv = NULL;
}

static int se_open(struct qimg_image *img, struct vmdk_extent *e, const uint8_t *hdr,
                   uint64_t file_size)
{
    /* qemu refuses before it looks at the file */
    if (img->flags & QIMG_OPEN_RDWR)
        return qimg_error(-ENOTSUP, "No write support for seSparse images available");
    int r = check_const_header(hdr);
    if (r == 0)
        r = check_volatile_header(e, field(hdr, C_VOL_OFF));
    if (r < 0)
        return r;
    /* qemu's arithmetic: u64 bytes / 8, kept in 32 bits */
    uint32_t gd_entries = (uint32_t)(field(hdr, C_GD_SIZE) * VMDK_SECTOR / 8);
    if (gd_entries > SE_MAX_GD_ENTRIES)
        return qimg_error(-EFBIG, "L1 size too big");
    struct sesparse *s = qimg_xcalloc(1, sizeof *s);
    e->priv = s;
    s->gt_sector = field(hdr, C_GT_OFF);
    s->grains_sector = field(hdr, C_GRAINS_OFF);
    s->gts.entries = SE_GT_ENTRIES;
    s->gts.entry_size = 8;
    e->sectors = field(hdr, C_CAPACITY);
    e->cluster_size = SE_GRAIN_SECTORS * VMDK_SECTOR;
    uint64_t gd_sector = field(hdr, C_GD_OFF);
    if (gd_sector > (uint64_t)INT64_MAX / VMDK_SECTOR)
        r = qimg_error(-EIO, "Could not read l1 table from extent '%s': %s", e->file->filename,
                       strerror(EIO));
    else
        r = vmdk_load_directory(e, gd_sector * VMDK_SECTOR, gd_entries, 8, file_size, &s->gd);
    if (r < 0)
        se_close(e);
    return r;
}

static int se_invalid(void)
{
    return qimg_error(-EIO, "%s", strerror(EIO));
}

/* Grain of extent offset off: its kind and host byte offset (of off). */
static int se_lookup(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                     enum vmdk_grain *kind, uint64_t *host)
{
    struct sesparse *s = e->priv;
    const uint64_t grain_bytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
    uint64_t g = off / grain_bytes;
    uint64_t i = g / SE_GT_ENTRIES;
    *kind = VMDK_GRAIN_UNALLOC;
    *host = 0;
    if (i >= s->gd.entries)
        return se_invalid();
    uint64_t gde = vmdk_directory_entry(&s->gd, i);
    if (gde == 0)
        return 0;
    if ((gde & 0xffffffff00000000ull) != 0x1000000000000000ull)
        return se_invalid();
    /* qemu keeps the table's sector in 32 bits */
    uint64_t gt_sector = s->gt_sector + (gde & 0xffffffffull) * SE_GT_SECTORS;
    if (gt_sector < s->gt_sector || gt_sector > 0xffffffffull)
        return se_invalid();
    pthread_mutex_lock(&img->lock);
    const uint8_t *gt;
    int r = vmdk_table_get(&s->gts, e, gt_sector * VMDK_SECTOR, &gt);
    uint64_t v = r == 0 ? qimg_le64(gt + (g % SE_GT_ENTRIES) * 8) : 0;
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    switch (v >> 60) {
    case 0:
        return v == 0 ? 0 : se_invalid();
    case 1:    /* unmapped */
    case 2:    /* zero */
        *kind = VMDK_GRAIN_ZERO;
        return 0;
    case 3: {
        uint64_t index = ((v & 0x0fff000000000000ull) >> 48) | ((v & 0x0000ffffffffffffull) << 12);
        /* qemu's arithmetic wraps; a read then fails (se_read) */
        uint64_t byte = (s->grains_sector + index * SE_GRAIN_SECTORS) * VMDK_SECTOR +
                        off % grain_bytes;
        *kind = VMDK_GRAIN_DATA;
        *host = byte;
        return 0;
    }
    default:
        return se_invalid();
    }
}

static int se_read(struct qimg_image *img, struct vmdk_extent *e, uint64_t off, uint8_t *buf,
                   size_t len)
{
    const uint64_t grain_bytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
    while (len > 0) {
        enum vmdk_grain kind;
        uint64_t host;
        int r = se_lookup(img, e, off, &kind, &host);
        if (r < 0)
            return r;
        size_t n = (size_t)QIMG_MIN((uint64_t)len, grain_bytes - off % grain_bytes);
        if (kind == VMDK_GRAIN_DATA && host > (uint64_t)INT64_MAX - n)
            r = se_invalid();
        else if (kind == VMDK_GRAIN_DATA)
            r = qimg_io_pread(e->file, buf, n, host);
        else if (kind == VMDK_GRAIN_ZERO)
            memset(buf, 0, n);
        else
            r = vmdk_read_unallocated(img, e, off, buf, n);
        if (r < 0)
            return r;
        buf += n, off += n, len -= n;
    }
    return 0;
}

static int se_block_status(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                           uint64_t len, struct qimg_extent *ext)
{
    const uint64_t grain_bytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
    enum vmdk_grain kind;
    uint64_t host;
    int r = se_lookup(img, e, off, &kind, &host);
    if (r < 0)
        return r;
    ext->length = QIMG_MIN(len, grain_bytes - off % grain_bytes);
    switch (kind) {
    case VMDK_GRAIN_UNALLOC:
        ext->flags = 0;
        break;
    case VMDK_GRAIN_ZERO:
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_ZERO;
        break;
    case VMDK_GRAIN_DATA:
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
        ext->host_offset = host;
        ext->host_file = e->file->filename;
        break;
    }
    return 0;
}

static int se_check(struct qimg_image *img, struct vmdk_extent *e, struct qimg_check_result *res)
{
    return vmdk_check_grains(img, e, SE_GRAIN_SECTORS * VMDK_SECTOR, se_lookup, res);
}

const struct vmdk_extent_ops vmdk_sesparse_ops = {
    .name = "SESPARSE",
    .open = se_open,
    .close = se_close,
    .read = se_read,
    .block_status = se_block_status,
    .check = se_check,
};
