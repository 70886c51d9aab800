/* qimg - VMDK hosted sparse extents ("KDMV": monolithicSparse,
 * twoGbMaxExtentSparse, streamOptimized).
 *
 * The header, sector 0, little-endian:
 *     0  magic "KDMV"                 44  grain table entries (u32, <= 512)
 *     4  version (u32): 1; 2 with     48  redundant grain directory (u64 sector)
 *        zeroed grains; 3 stream      56  grain directory (u64 sector); all ones:
 *     8  flags (u32): 1 newline test,     in the footer (streamOptimized)
 *        2 redundant directory,       64  first grain (u64 sector)
 *        4 zeroed-grain entries,      72  unclean shutdown (u8)
 *        0x10000 compressed grains,   73  "\n \r\n" (newline test bytes)
 *        0x20000 markers              77  compression (u16): 1 deflate
 *    12  capacity (u64 sectors)
 *    20  grain size (u64 sectors)
 *    28  descriptor (u64 sector)
 *    36  descriptor size (u64 sectors)
 *
 * The grain directory is a u32 array of grain table sectors, one per
 * (entries x grain size) sectors of guest disk; a grain table holds the
 * sector of each grain, 0 when unallocated, 1 (with the zeroed-grain
 * flag) for a grain that reads as zeros.  The redundant directory points
 * at a second set of tables, kept equal.  A compressed grain starts with
 * a marker (u64 guest sector, u32 size) followed by size bytes of zlib
 * data (RFC 1950); streamOptimized files write the header's copy (the
 * footer) at the end of the file: marker, header, end-of-stream marker.
 */
#include <errno.h>
#include <inttypes.h>

#include "vmdk.h"
#include "codec.h"

enum {
    H_VERSION = 4, H_FLAGS = 8, H_CAPACITY = 12, H_GRAIN = 20, H_DESC = 28, H_DESC_SIZE = 36,
    H_GTES = 44, H_RGD = 48, H_GD = 56, H_OVERHEAD = 64, H_UNCLEAN = 72, H_CHECK = 73,
    H_COMPRESS = 77,
};
#define F_NL_DETECT 0x1u
#define F_RGD 0x2u
#define F_ZERO_GRAIN 0x4u
#define F_COMPRESSED 0x10000u
#define F_MARKER 0x20000u
#define GD_AT_END UINT64_MAX
#define GTE_ZEROED 1u
#define MAX_GTES 512u
#define MAX_GRAIN_SECTORS 0x200000u     /* 1 GiB: qemu's bound */
#define MAX_GD_ENTRIES (32u << 20)      /* qemu's bound on the directory */
#define MARKER_EOS 0u
#define MARKER_FOOTER 3u
#define GT_CACHE 64

struct gt_slot {
    uint32_t gd_index;
    uint64_t use;              /* LRU clock */
    bool valid;
    uint32_t *entries;         /* host order */
};

struct sparse {
    uint32_t version, flags;
    uint64_t grain_sectors, grain_bytes;
    uint32_t gtes;             /* entries in a grain table */
    uint64_t gd_entries;       /* the directory's length (qemu's l1_size) */
    uint64_t gd_sector, rgd_sector;   /* rgd 0: none */
    uint32_t *gd, *rgd;        /* host order; past `loaded` entries are 0 */
    uint64_t gd_loaded;
    bool zeroed_grain, compressed, markers;
    uint64_t next_sector;      /* where the next grain goes */
    struct gt_slot cache[GT_CACHE];
    uint64_t clock;
};

bool vmdk_sparse_zeroed_grain(const struct vmdk_extent *e)
{
    const struct sparse *sp = e->priv;
    return sp && sp->zeroed_grain;
}

static int stream_footer(struct vmdk_extent *e, uint64_t file_size, uint8_t *hdr)
{
    uint8_t f[3 * VMDK_SECTOR];
    /* qemu: the last three sectors of the file's size rounded up to a
     * sector (what lies past the end reads as zeros) */
    uint64_t end = qimg_div_round_up(file_size, VMDK_SECTOR) * VMDK_SECTOR;
    int r = end < sizeof f ? -EIO : qimg_io_pread(e->file, f, sizeof f, end - sizeof f);
    if (r < 0)
        return qimg_error(r, "Failed to read footer: %s", strerror(-r));
    const uint8_t *marker = f, *footer = f + VMDK_SECTOR, *eos = f + 2 * VMDK_SECTOR;
    if (memcmp(footer, "KDMV", 4) != 0 || qimg_le32(marker + 8) != 0 ||
        qimg_le32(marker + 12) != MARKER_FOOTER || qimg_le64(eos) != 0 ||
        qimg_le32(eos + 8) != 0 || qimg_le32(eos + 12) != MARKER_EOS)
        return qimg_error(-EINVAL, "Invalid footer");
    memcpy(hdr, footer, VMDK_SECTOR);
    return 0;
}

/* A directory: the entries inside the file are read, those past its end
 * read as 0 (unallocated) without taking memory. */
static int read_directory(struct vmdk_extent *e, struct sparse *sp, uint64_t sector,
                          uint64_t file_size, uint32_t **out, uint64_t *loaded)
{
    /* qemu shifts the sector into a byte offset (wrapping past 64 bits:
     * 2^60 reads at 0) and reads with signed 64-bit offsets: one beyond
     * them is an I/O error */
    uint64_t off = sector * VMDK_SECTOR, in_file = 0;
    if (off > (uint64_t)INT64_MAX - sp->gd_entries * 4)
        return qimg_error(-EIO, "Could not read l1 table from extent '%s': %s",
                          e->file->filename, strerror(EIO));
    if (off < file_size)
        in_file = QIMG_MIN(sp->gd_entries, (file_size - off) / 4 + 1);
    *loaded = in_file;
    *out = qimg_calloc_from_image(in_file ? in_file : 1, 4, "VMDK grain directory");
    if (!*out)
        return -ENOMEM;
    if (!in_file)
        return 0;
    int r = qimg_io_pread(e->file, *out, (size_t)(in_file * 4), off);
    if (r < 0)
        return qimg_error(r, "Could not read l1 table from extent '%s'", e->file->filename);
    for (uint64_t i = 0; i < in_file; i++)
        (*out)[i] = qimg_le32(&(*out)[i]);
    return 0;
}

static int check_header(struct qimg_image *img, struct vmdk_extent *e, struct sparse *sp,
                        const uint8_t *hdr, uint64_t file_size)
{
    sp->version = qimg_le32(hdr + H_VERSION);
    sp->flags = qimg_le32(hdr + H_FLAGS);
    sp->compressed = qimg_le16(hdr + H_COMPRESS) == 1;
    if (sp->version > 3)
        return qimg_error(-ENOTSUP, "Unsupported VMDK version %" PRIu32, sp->version);
    if (sp->version == 3 && (img->flags & QIMG_OPEN_RDWR) && !sp->compressed)
        return qimg_error(-EINVAL, "VMDK version 3 must be read only");
    sp->gtes = qimg_le32(hdr + H_GTES);
    if (sp->gtes > MAX_GTES)
        return qimg_error(-EINVAL, "L2 table size too big");
    sp->grain_sectors = qimg_le64(hdr + H_GRAIN);
    uint64_t capacity = qimg_le64(hdr + H_CAPACITY);
    /* qemu keeps the sectors one table covers in 32 bits */
    uint32_t per_gt = (uint32_t)((uint64_t)sp->gtes * sp->grain_sectors);
    if (per_gt == 0)
        return qimg_error(-EINVAL, "L1 entry size is invalid");
    /* qemu cuts the directory's length to 32 bits too: a capacity that
     * overflows it opens there with a short directory; qimg refuses it
     * below ("L1 size too big") */
    sp->gd_entries = capacity / per_gt + (capacity % per_gt != 0);
    sp->rgd_sector = (sp->flags & F_RGD) ? qimg_le64(hdr + H_RGD) : 0;
    uint64_t overhead = qimg_le64(hdr + H_OVERHEAD);
    if (file_size / VMDK_SECTOR < overhead)
        return qimg_error(-EINVAL, "File truncated, expecting at least %" PRId64 " bytes",
                          (int64_t)(overhead * VMDK_SECTOR));
    if (sp->grain_sectors > MAX_GRAIN_SECTORS)
        return qimg_error(-EFBIG, "Invalid granularity, image may be corrupt");
    if (sp->gd_entries > MAX_GD_ENTRIES)
        return qimg_error(-EFBIG, "L1 size too big");
    if (capacity > ((uint64_t)INT64_MAX / VMDK_SECTOR))
        return qimg_error(-EFBIG, "VMDK capacity too large");
    sp->grain_bytes = sp->grain_sectors * VMDK_SECTOR;
    sp->gd_sector = qimg_le64(hdr + H_GD);
    sp->zeroed_grain = sp->flags & F_ZERO_GRAIN;
    sp->markers = sp->flags & F_MARKER;
    e->sectors = capacity;
    e->cluster_size = sp->grain_bytes;
    e->compressed = sp->compressed;
    /* the next grain goes after everything in the file, grain-aligned */
    uint64_t file_sectors = file_size / VMDK_SECTOR + (file_size % VMDK_SECTOR != 0);
    sp->next_sector = qimg_div_round_up(file_sectors, sp->grain_sectors) * sp->grain_sectors;
    return 0;
}

static void sparse_close(struct vmdk_extent *e)
{
    struct sparse *sp = e->priv;
    if (!sp)
        return;
    for (size_t i = 0; i < GT_CACHE; i++)
        free(sp->cache[i].entries);
    free(sp->gd);
    free(sp->rgd);
    free(sp);
    e->priv = NULL;
}

static int sparse_open(struct qimg_image *img, struct vmdk_extent *e, const uint8_t *hdr0,
                       uint64_t file_size)
{
    uint8_t hdr[VMDK_SECTOR];
    memcpy(hdr, hdr0, sizeof hdr);
    if (qimg_le64(hdr + H_CAPACITY) == 0 && qimg_le64(hdr + H_DESC) != 0 &&
        e->file != img->file)
        return qimg_error(-EINVAL, "Invalid extent: a descriptor inside an extent");
    struct sparse *sp = qimg_xcalloc(1, sizeof *sp);
    e->priv = sp;
    int r = 0;
    if (qimg_le64(hdr + H_GD) == GD_AT_END)
        r = stream_footer(e, file_size, hdr);
    if (r == 0)
        r = check_header(img, e, sp, hdr, file_size);
    uint64_t rgd_loaded;
    if (r == 0)
        r = read_directory(e, sp, sp->gd_sector, file_size, &sp->gd, &sp->gd_loaded);
    if (r == 0 && sp->rgd_sector) {
        r = read_directory(e, sp, sp->rgd_sector, file_size, &sp->rgd, &rgd_loaded);
        if (r < 0)
            qimg_error(r, "Could not read l1 backup table from extent '%s'", e->file->filename);
    }
    if (r < 0)
        sparse_close(e);
    return r;
}

/* ----------------------------------------------------------- lookups */

static uint32_t gd_entry(const struct sparse *sp, uint64_t i)
{
    return i < sp->gd_loaded ? sp->gd[i] : 0;
}

/* The grain table of directory entry i, through the cache.  Called with
 * img->lock held. */
static int load_gt(struct vmdk_extent *e, struct sparse *sp, uint64_t i, uint32_t **out)
{
    struct gt_slot *victim = &sp->cache[0];
    for (size_t k = 0; k < GT_CACHE; k++) {
        struct gt_slot *c = &sp->cache[k];
        if (c->valid && c->gd_index == i) {
            c->use = ++sp->clock;
            *out = c->entries;
            return 0;
        }
        if (!c->valid || c->use < victim->use)
            victim = c;
    }
    if (!victim->entries)
        victim->entries = qimg_xmalloc(MAX_GTES * 4);
    victim->valid = false;
    qimg_io_event(e->file, QIMG_EV_L2_LOAD);
    int r = qimg_io_pread(e->file, victim->entries, sp->gtes * 4u,
                          (uint64_t)gd_entry(sp, i) * VMDK_SECTOR);
    if (r < 0)
        return r;
    for (uint32_t k = 0; k < sp->gtes; k++)
        victim->entries[k] = qimg_le32(&victim->entries[k]);
    victim->gd_index = (uint32_t)i;
    victim->valid = true;
    victim->use = ++sp->clock;
    *out = victim->entries;
    return 0;
}

enum grain_kind { GRAIN_UNALLOC, GRAIN_ZERO, GRAIN_DATA };

/* What grain g (of the extent) is, and its sector in the file.  With
 * img->lock held. */
static int grain_lookup(struct vmdk_extent *e, struct sparse *sp, uint64_t g,
                        enum grain_kind *kind, uint64_t *sector)
{
    uint64_t i = g / sp->gtes;
    *sector = 0;
    if (i >= sp->gd_entries)
        return qimg_error(-EIO, "Input/output error");
    if (gd_entry(sp, i) == 0) {
        *kind = GRAIN_UNALLOC;
        return 0;
    }
    uint32_t *gt;
    int r = load_gt(e, sp, i, &gt);
    if (r < 0)
        return r;
    uint32_t v = gt[g % sp->gtes];
    if (v == GTE_ZEROED && sp->zeroed_grain)
        *kind = GRAIN_ZERO;
    else if (v == 0)
        *kind = GRAIN_UNALLOC;
    else
        *kind = GRAIN_DATA;
    *sector = v;
    return 0;
}

static int locked_lookup(struct qimg_image *img, struct vmdk_extent *e, uint64_t g,
                         enum grain_kind *kind, uint64_t *sector)
{
    pthread_mutex_lock(&img->lock);
    int r = grain_lookup(e, e->priv, g, kind, sector);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ------------------------------------------------------------- reads */

/* Part of a compressed grain: the marker's size bounds what is read. */
static int read_compressed(struct vmdk_extent *e, struct sparse *sp, uint64_t sector,
                           uint64_t in_grain, uint8_t *buf, size_t len)
{
    /* qemu accepts a compressed size of up to two grains (it reads that
     * much from the grain's start); one read takes the marker and up to a
     * grain and a sector of data, a second one the rest of a larger grain */
    const size_t marker = sp->markers ? 12 : 0, limit = (size_t)sp->grain_bytes * 2;
    size_t head = marker + (size_t)sp->grain_bytes + (sp->markers ? VMDK_SECTOR : 0);
    CLEANUP_FREE uint8_t *raw = qimg_alloc_from_image(marker + limit, "VMDK compressed grain");
    CLEANUP_FREE uint8_t *out = qimg_alloc_from_image(sp->grain_bytes, "VMDK grain");
    if (!raw || !out)
        return -ENOMEM;
    uint64_t host = sector * VMDK_SECTOR;
    qimg_io_event(e->file, QIMG_EV_READ_COMPRESSED);
    int r = qimg_io_pread(e->file, raw, head, host);
    if (r < 0)
        return r;
    /* without markers qemu inflates one grain's worth of bytes */
    size_t size = sp->markers ? qimg_le32(raw + 8) : (size_t)sp->grain_bytes;
    if (size == 0 || size > limit)
        return qimg_error(-EINVAL, "Invalid argument");
    if (marker + size > head) {
        r = qimg_io_pread(e->file, raw + head, marker + size - head, host + head);
        if (r < 0)
            return r;
    }
    size_t produced;
    r = qimg_codec_decompress(QIMG_CODEC_ZLIB, raw + marker, size, out, (size_t)sp->grain_bytes,
                              &produced);
    if (r < 0 || in_grain + len > produced)
        return qimg_error(-EINVAL, "Invalid argument");
    memcpy(buf, out + in_grain, len);
    return 0;
}

static int sparse_read(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                       uint8_t *buf, size_t len)
{
    struct sparse *sp = e->priv;
    while (len > 0) {
        uint64_t g = off / sp->grain_bytes, in_grain = off % sp->grain_bytes;
        size_t n = (size_t)QIMG_MIN((uint64_t)len, sp->grain_bytes - in_grain);
        enum grain_kind kind;
        uint64_t sector;
        pthread_mutex_lock(&img->lock);
        int r = grain_lookup(e, sp, g, &kind, &sector);
        /* grains that follow each other in the file too: one read */
        while (r == 0 && kind == GRAIN_DATA && !sp->compressed && n < len) {
            enum grain_kind next;
            uint64_t next_sector;
            if (grain_lookup(e, sp, g + (in_grain + n) / sp->grain_bytes, &next,
                             &next_sector) < 0 || next != GRAIN_DATA ||
                next_sector != sector + (in_grain + n) / VMDK_SECTOR)
                break;
            n = (size_t)QIMG_MIN((uint64_t)len, n + sp->grain_bytes);
        }
        pthread_mutex_unlock(&img->lock);
        if (r < 0)
            return r;
        if (kind == GRAIN_UNALLOC)
            r = vmdk_read_unallocated(img, e, off, buf, n);
        else if (kind == GRAIN_ZERO)
            memset(buf, 0, n);
        else if (sp->compressed)
            r = read_compressed(e, sp, sector, in_grain, buf, n);
        else {
            qimg_io_event(e->file, QIMG_EV_READ_AIO);
            r = qimg_io_pread(e->file, buf, n, sector * VMDK_SECTOR + in_grain);
        }
        if (r < 0)
            return r;
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

/* Per grain as qemu answers, but a run of unallocated or zeroed grains is
 * one answer (map merges them anyway). */
static int sparse_block_status(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                               uint64_t len, struct qimg_extent *ext)
{
    struct sparse *sp = e->priv;
    uint64_t g = off / sp->grain_bytes, in_grain = off % sp->grain_bytes;
    uint64_t n = QIMG_MIN(len, sp->grain_bytes - in_grain);
    enum grain_kind kind;
    uint64_t sector;
    pthread_mutex_lock(&img->lock);
    int r = grain_lookup(e, sp, g, &kind, &sector);
    /* a lookup failing further on only ends the run; data grains join it
     * while they follow each other in the file */
    while (r == 0 && n < len && !(kind == GRAIN_DATA && sp->compressed)) {
        enum grain_kind next;
        uint64_t next_sector;
        if (grain_lookup(e, sp, (off + n) / sp->grain_bytes, &next, &next_sector) < 0 ||
            next != kind ||
            (kind == GRAIN_DATA && next_sector != sector + (in_grain + n) / VMDK_SECTOR))
            break;
        n = QIMG_MIN(len, n + sp->grain_bytes);
    }
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    ext->length = n;
    switch (kind) {
    case GRAIN_UNALLOC:
        ext->flags = 0;
        break;
    case GRAIN_ZERO:
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_ZERO;
        break;
    case GRAIN_DATA:
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA;
        ext->host_file = e->file->filename;
        if (!sp->compressed) {
            ext->flags |= QIMG_STATUS_OFFSET;
            ext->host_offset = sector * VMDK_SECTOR + in_grain;
        }
        break;
    }
    return 0;
}

/* ------------------------------------------------------------ writes */

/* Set entry g of its grain table, and of the redundant one, to v.  With
 * img->lock held; the grain's data is already written. */
static int set_gte(struct vmdk_extent *e, struct sparse *sp, uint64_t g, uint32_t v)
{
    uint64_t i = g / sp->gtes, k = g % sp->gtes;
    uint8_t le[4];
    qimg_put_le32(le, v);
    qimg_io_event(e->file, QIMG_EV_L2_UPDATE);
    int r = qimg_io_pwrite(e->file, le, 4, (uint64_t)gd_entry(sp, i) * VMDK_SECTOR + 4 * k);
    if (r == 0 && sp->rgd && i < sp->gd_loaded && sp->rgd[i])
        r = qimg_io_pwrite(e->file, le, 4, (uint64_t)sp->rgd[i] * VMDK_SECTOR + 4 * k);
    if (r < 0)
        return r;
    uint32_t *gt;
    r = load_gt(e, sp, i, &gt);
    if (r == 0)
        gt[k] = v;
    return r;
}

/* A new grain for guest grain g holding buf at in_grain: the rest comes
 * from the parent (or zeros; a zeroed grain's rest is zeros), the whole
 * grain is written at the end of the file, then the table points at it.
 * With img->lock held, so two writers never allocate one grain twice. */
static int allocate_grain(struct qimg_image *img, struct vmdk_extent *e, struct sparse *sp,
                          uint64_t g, bool zeroed, uint64_t in_grain, const uint8_t *buf,
                          size_t len)
{
    uint64_t sector = sp->next_sector, end;
    if (!qimg_add_ok(sector, sp->grain_sectors, &end) || end > UINT32_MAX)
        return qimg_error(-ENOSPC, "VMDK extent '%s' is full", e->file->filename);
    CLEANUP_FREE uint8_t *grain = qimg_alloc_from_image(sp->grain_bytes, "VMDK grain");
    if (!grain)
        return -ENOMEM;
    uint64_t base = g * sp->grain_bytes;
    int r = 0;
    if (zeroed || !img->backing) {
        memset(grain, 0, sp->grain_bytes);
    } else {
        /* the parts around the data, as qemu copies them */
        if (in_grain)
            r = vmdk_read_unallocated(img, e, base, grain, (size_t)in_grain);
        uint64_t tail = in_grain + len;
        if (r == 0 && tail < sp->grain_bytes)
            r = vmdk_read_unallocated(img, e, base + tail, grain + tail,
                                      (size_t)(sp->grain_bytes - tail));
    }
    if (r < 0)
        return r;
    /* head and tail, then the data, as qemu writes them (and announces
     * them to blkdebug) */
    uint64_t host = sector * VMDK_SECTOR, tail = in_grain + len;
    if (in_grain) {
        qimg_io_event(e->file, QIMG_EV_COW_WRITE);
        r = qimg_io_pwrite(e->file, grain, (size_t)in_grain, host);
    }
    if (r == 0 && tail < sp->grain_bytes) {
        qimg_io_event(e->file, QIMG_EV_COW_WRITE);
        r = qimg_io_pwrite(e->file, grain + tail, (size_t)(sp->grain_bytes - tail), host + tail);
    }
    if (r == 0) {
        qimg_io_event(e->file, QIMG_EV_WRITE_AIO);
        r = qimg_io_pwrite(e->file, buf, len, host + in_grain);
    }
    if (r < 0)
        return r;
    sp->next_sector = end;
    return set_gte(e, sp, g, (uint32_t)sector);
}

static int write_grain_piece(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                             const uint8_t *buf, size_t n)
{
    struct sparse *sp = e->priv;
    uint64_t g = off / sp->grain_bytes, in_grain = off % sp->grain_bytes;
    enum grain_kind kind;
    uint64_t sector;
    pthread_mutex_lock(&img->lock);
    int r = grain_lookup(e, sp, g, &kind, &sector);
    if (r == 0 && kind != GRAIN_DATA) {
        if (gd_entry(sp, g / sp->gtes) == 0)
            r = qimg_error(-ENOTSUP, "VMDK extent '%s' has no grain table for offset %" PRIu64,
                           e->file->filename, off);
        else
            r = allocate_grain(img, e, sp, g, kind == GRAIN_ZERO, in_grain, buf, n);
        pthread_mutex_unlock(&img->lock);
        return r;
    }
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    qimg_io_event(e->file, QIMG_EV_WRITE_AIO);
    return qimg_io_pwrite(e->file, buf, n, sector * VMDK_SECTOR + in_grain);
}

/* ---- compressed grains (streamOptimized), for stream.c ---- */

int vmdk_sparse_grain_allocated(struct qimg_image *img, struct vmdk_extent *e, uint64_t g,
                                bool *allocated)
{
    enum grain_kind kind;
    uint64_t sector;
    int r = locked_lookup(img, e, g, &kind, &sector);
    *allocated = r == 0 && kind == GRAIN_DATA;
    return r;
}

int vmdk_sparse_append_grain(struct qimg_image *img, struct vmdk_extent *e, uint64_t g,
                             const void *data, size_t len, size_t keep)
{
    struct sparse *sp = e->priv;
    enum grain_kind kind;
    uint64_t sector, end;
    pthread_mutex_lock(&img->lock);
    int r = grain_lookup(e, sp, g, &kind, &sector);
    if (r == 0 && kind == GRAIN_DATA)
        r = -EEXIST;
    else if (r == 0 && gd_entry(sp, g / sp->gtes) == 0)
        r = qimg_error(-ENOTSUP, "VMDK extent '%s' has no grain table for offset %" PRIu64,
                       e->file->filename, g * sp->grain_bytes);
    sector = sp->next_sector;
    if (r == 0 && (!qimg_add_ok(sector, keep / VMDK_SECTOR, &end) || end > UINT32_MAX))
        r = qimg_error(-ENOSPC, "VMDK extent '%s' is full", e->file->filename);
    if (r == 0) {
        qimg_io_event(e->file, QIMG_EV_WRITE_COMPRESSED);
        r = qimg_io_pwrite(e->file, data, len, sector * VMDK_SECTOR);
    }
    if (r == 0) {
        sp->next_sector = end;
        r = set_gte(e, sp, g, (uint32_t)sector);
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int sparse_write(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                        const uint8_t *buf, size_t len)
{
    struct sparse *sp = e->priv;
    if (sp->compressed)
        return vmdk_stream_write(img, e, off, buf, len);
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN((uint64_t)len, sp->grain_bytes - off % sp->grain_bytes);
        int r = write_grain_piece(img, e, off, buf, n);
        if (r < 0)
            return r;
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

/* Whole grains of an extent with zeroed-grain entries become zeroed
 * grains (an allocated grain's data is left behind, as in qemu); anything
 * else is written as zeros by the caller. */
static int sparse_write_zeroes(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                               uint64_t len, bool dry_run)
{
    struct sparse *sp = e->priv;
    if (!sp->zeroed_grain || sp->compressed || off % sp->grain_bytes || len % sp->grain_bytes)
        return -ENOTSUP;
    if (dry_run)
        return 0;
    int r = 0;
    pthread_mutex_lock(&img->lock);
    for (uint64_t g = off / sp->grain_bytes; r == 0 && g < (off + len) / sp->grain_bytes; g++) {
        enum grain_kind kind;
        uint64_t sector;
        r = grain_lookup(e, sp, g, &kind, &sector);
        if (r == 0 && kind != GRAIN_ZERO) {
            if (gd_entry(sp, g / sp->gtes) == 0)
                r = -ENOTSUP;
            else
                r = set_gte(e, sp, g, GTE_ZEROED);
        }
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ------------------------------------------------------------- check */

/* Every grain's entry, as qemu's check walks them: one that cannot be
 * looked up, or data that starts past the end of the file, fails. */
static int sparse_check(struct qimg_image *img, struct vmdk_extent *e,
                        struct qimg_check_result *res)
{
    struct sparse *sp = e->priv;
    uint64_t file_size;
    int r = qimg_io_get_size(e->file, &file_size);
    if (r < 0)
        return r;
    for (uint64_t s = 0; s < e->sectors; s += sp->grain_sectors) {
        enum grain_kind kind;
        uint64_t sector;
        pthread_mutex_lock(&img->lock);
        r = grain_lookup(e, sp, s / sp->grain_sectors, &kind, &sector);
        pthread_mutex_unlock(&img->lock);
        if (r < 0) {
            qimg_check_log("ERROR: could not get cluster_offset for sector %" PRIu64,
                           e->start + s);
            return -EPERM;     /* qemu returns its VMDK_ERROR, -1 */
        }
        if (kind == GRAIN_DATA && sector * VMDK_SECTOR >= file_size) {
            qimg_check_log("ERROR: cluster offset for sector %" PRIu64 " points after EOF",
                           e->start + s);
            return -EINVAL;
        }
        if ((s & 0xfffff) == 0 && qimg_budget_check() < 0)
            return -ETIMEDOUT;
    }
    return 0;
}

/* ------------------------------------------------------------- grow */

/* Write the directory dir (entries entries) at sector at. */
static int write_directory(struct vmdk_extent *e, const uint32_t *dir, uint64_t entries,
                           uint64_t at)
{
    size_t bytes = (size_t)qimg_div_round_up(entries * 4, VMDK_SECTOR) * VMDK_SECTOR;
    CLEANUP_FREE uint8_t *raw = qimg_xcalloc(1, bytes ? bytes : 1);
    for (uint64_t i = 0; i < entries; i++)
        qimg_put_le32(raw + 4 * i, dir[i]);
    return qimg_io_pwrite(e->file, raw, bytes, at * VMDK_SECTOR);
}

/* More guest sectors (beyond qemu-img, which resizes no vmdk): tables for
 * the new part at the end of the file (for both directories), the
 * directories moved there too when they outgrow their sectors, then the
 * header.  A crash before the header leaves the old disk intact. */
static int sparse_grow(struct qimg_image *img, struct vmdk_extent *e, uint64_t sectors)
{
    struct sparse *sp = e->priv;
    if (sp->compressed)
        /* a stream is written once, front to back, its directory in the
         * footer: growing it means writing it anew (convert) */
        return qimg_error(-ENOTSUP, "Growing a streamOptimized VMDK is not supported: "
                          "convert it to another subformat, resize that, convert back");
    if (sp->gd_loaded != sp->gd_entries)
        return qimg_error(-EINVAL, "VMDK grain directory is incomplete");
    uint64_t per_gt = (uint64_t)sp->gtes * sp->grain_sectors;
    uint64_t entries = qimg_div_round_up(sectors, per_gt);
    if (entries > MAX_GD_ENTRIES || sectors > (uint64_t)INT64_MAX / VMDK_SECTOR)
        return qimg_error(-EFBIG, "L1 size too big");
    uint64_t gt_sectors = qimg_div_round_up(sp->gtes * 4ull, VMDK_SECTOR);
    uint64_t room = qimg_div_round_up(sp->gd_entries * 4, VMDK_SECTOR) * VMDK_SECTOR / 4;
    bool move = entries > room;
    uint64_t dir_sectors = qimg_div_round_up(entries * 4, VMDK_SECTOR);
    uint64_t copies = sp->rgd ? 2 : 1, at = sp->next_sector;
    uint64_t need = copies * ((entries - sp->gd_entries) * gt_sectors + (move ? dir_sectors : 0));
    uint64_t end = qimg_div_round_up(at + need, sp->grain_sectors) * sp->grain_sectors;
    if (end > UINT32_MAX)
        return qimg_error(-EFBIG, "VMDK extent too large");
    uint32_t *gd = qimg_calloc_from_image(entries, 4, "VMDK grain directory");
    uint32_t *rgd = sp->rgd ? qimg_calloc_from_image(entries, 4, "VMDK grain directory") : NULL;
    if (!gd || (sp->rgd && !rgd)) {
        free(gd);
        free(rgd);
        return -ENOMEM;
    }
    memcpy(gd, sp->gd, sp->gd_entries * 4);
    if (rgd)
        memcpy(rgd, sp->rgd, sp->gd_entries * 4);
    for (uint64_t i = sp->gd_entries; i < entries; i++) {
        gd[i] = (uint32_t)at;
        at += gt_sectors;
        if (rgd) {
            rgd[i] = (uint32_t)at;
            at += gt_sectors;
        }
    }
    uint64_t gd_at = sp->gd_sector, rgd_at = sp->rgd_sector;
    if (move) {
        gd_at = at;
        at += dir_sectors;
        if (rgd) {
            rgd_at = at;
            at += dir_sectors;
        }
    }
    int r = qimg_io_truncate(e->file, end * VMDK_SECTOR);   /* new tables: zeros */
    if (r == 0)
        r = write_directory(e, gd, entries, gd_at);
    if (r == 0 && rgd)
        r = write_directory(e, rgd, entries, rgd_at);
    if (r == 0)
        r = qimg_io_flush(e->file);
    uint8_t h[24];
    qimg_put_le64(h, sectors);
    if (r == 0)
        r = qimg_io_pwrite(e->file, h, 8, H_CAPACITY);
    qimg_put_le64(h, rgd_at);
    qimg_put_le64(h + 8, gd_at);
    if (r == 0)
        r = qimg_io_pwrite(e->file, h, 16, H_RGD);
    if (r < 0) {
        free(gd);
        free(rgd);
        return r;
    }
    free(sp->gd);
    free(sp->rgd);
    sp->gd = gd;
    sp->rgd = rgd;
    sp->gd_entries = sp->gd_loaded = entries;
    sp->gd_sector = gd_at;
    sp->rgd_sector = rgd_at;
    sp->next_sector = end;
    for (size_t k = 0; k < GT_CACHE; k++)
        sp->cache[k].valid = false;
    e->sectors = sectors;
    return 0;
}

const struct vmdk_extent_ops vmdk_sparse_ops = {
    .grow = sparse_grow,
    .check = sparse_check,
    .write = sparse_write,
    .write_zeroes = sparse_write_zeroes,
    .name = "SPARSE",
    .open = sparse_open,
    .close = sparse_close,
    .read = sparse_read,
    .block_status = sparse_block_status,
};
