/* qimg - VMDK3 ("COWD") sparse extents: vmfsSparse, and the old hosted
 * sparse files of GSX / Workstation 3.  Also the small two-level table
 * helpers that seSparse (sesparse.c) shares.
 *
 * On-disk layout (VMware "Virtual Disk Format 1.1", "ESX Server Sparse
 * Extents"; little endian, as qemu 7.2 reads it):
 *     0  magic "COWD"
 *     4  version (u32)               not checked
 *     8  flags (u32)                 not checked
 *    12  capacity (u32 sectors)      the extent's size (the descriptor's
 *                                    sector count is not used)
 *    16  granularity (u32 sectors)   the grain size; at most 0x200000
 *    20  grain directory (u32 sector)
 *    24  grain directory entries (u32), at most 32 Mi
 *    28  ... (file sectors, geometry: not used)
 * The grain directory holds u32 sectors of grain tables; a grain table is
 * 4096 u32 sectors of grains (0: unallocated).  There is no zeroed-grain
 * entry and no redundant directory.
 *
 * qemu opens a COWD file named as the image itself only when the sector
 * after the header happens to hold "CID=" (it looks for the descriptor's
 * CID there); vmdk.c reads that as for any monolithic file.
 *
 * Deliberate difference: a granularity of 0 makes qemu 7.2 divide by zero
 * (SIGFPE) on the first read; qimg opens the image (info is the same) and
 * fails every read with EIO.
 */
#include <errno.h>
#include <inttypes.h>

#include "vmdk.h"

#define COWD_GT_ENTRIES 4096u
#define COWD_MAX_GRAIN_SECTORS 0x200000u   /* qemu: 1 GiB per grain */
#define COWD_MAX_GD_ENTRIES (32u << 20)    /* qemu's bound on any directory */

/* ------------------------------------------------ shared table helpers */

int vmdk_load_directory(struct vmdk_extent *e, uint64_t off, uint64_t entries,
                        unsigned entry_size, uint64_t file_size, struct vmdk_directory *d)
{
    memset(d, 0, sizeof *d);
    d->entries = entries;
    d->entry_size = entry_size;
    /* qemu reads the whole table with offsets as signed 64-bit numbers */
    if (off > (uint64_t)INT64_MAX - entries * entry_size)
        return qimg_error(-EIO, "Could not read l1 table from extent '%s': %s",
                          e->file->filename, strerror(EIO));
    /* entries past the end of the file read as 0 without taking memory */
    uint64_t in_file = 0;
    if (off < file_size)
        in_file = QIMG_MIN(entries, qimg_div_round_up(file_size - off, entry_size));
    d->raw = qimg_calloc_from_image(in_file ? in_file : 1, entry_size, "VMDK grain directory");
    if (!d->raw)
        return -ENOMEM;
    d->loaded = in_file;
    if (!in_file)
        return 0;
    int r = qimg_io_pread(e->file, d->raw, (size_t)(in_file * entry_size), off);
    if (r < 0)
        return qimg_error(r, "Could not read l1 table from extent '%s': %s", e->file->filename,
                          strerror(-r));
    return 0;
}

uint64_t vmdk_directory_entry(const struct vmdk_directory *d, uint64_t i)
{
    if (i >= d->loaded)
        return 0;
    const uint8_t *p = d->raw + i * d->entry_size;
    return d->entry_size == 8 ? qimg_le64(p) : qimg_le32(p);
}

void vmdk_directory_free(struct vmdk_directory *d)
{
    free(d->raw);
    d->raw = NULL;
}

int vmdk_table_get(struct vmdk_table_cache *c, struct vmdk_extent *e, uint64_t host_off,
                   const uint8_t **table)
{
    size_t bytes = (size_t)c->entries * c->entry_size;
    struct vmdk_table_slot *victim = &c->slot[0];
    for (size_t k = 0; k < VMDK_TABLE_CACHE; k++) {
        struct vmdk_table_slot *s = &c->slot[k];
        if (s->valid && s->host_off == host_off) {
            s->use = ++c->clock;
            *table = s->raw;
            return 0;
        }
        if (!s->valid || s->use < victim->use)
            victim = s;
    }
    if (!victim->raw) {
        victim->raw = qimg_alloc_from_image(bytes, "VMDK grain table");
        if (!victim->raw)
            return -ENOMEM;
    }
    victim->valid = false;
    qimg_io_event(e->file, QIMG_EV_L2_LOAD);
    int r = qimg_io_pread(e->file, victim->raw, bytes, host_off);
    if (r < 0)
        return qimg_error(r, "vmdk: could not read a grain table: %s", strerror(-r));
    victim->host_off = host_off;
    victim->valid = true;
    victim->use = ++c->clock;
    *table = victim->raw;
    return 0;
}

void vmdk_table_cache_free(struct vmdk_table_cache *c)
{
    for (size_t k = 0; k < VMDK_TABLE_CACHE; k++) {
        free(c->slot[k].raw);
        c->slot[k].raw = NULL;
        c->slot[k].valid = false;
    }
}

/* qemu's check of a sparse extent, for a kind that answers grain by grain:
 * every grain is looked up; one that cannot be is "could not get
 * cluster_offset" (qemu returns its internal -1, EPERM), one whose data
 * starts at or after the end of the file "points after EOF" (EINVAL).
 * Both stop the check. */
int vmdk_check_grains(struct qimg_image *img, struct vmdk_extent *e, uint64_t grain_bytes,
                      int (*lookup)(struct qimg_image *, struct vmdk_extent *, uint64_t,
                                    enum vmdk_grain *, uint64_t *),
                      struct qimg_check_result *res)
{
    uint64_t file_size;
    int r = qimg_io_get_size(e->file, &file_size);
    if (r < 0)
        return r;
    uint64_t bytes = e->sectors * VMDK_SECTOR;
    for (uint64_t off = 0; off < bytes && grain_bytes; off += grain_bytes) {
        enum vmdk_grain kind;
        uint64_t host;
        uint64_t sector = e->start + off / VMDK_SECTOR;
        if (lookup(img, e, off, &kind, &host) < 0) {
            qimg_check_log("ERROR: could not get cluster_offset for sector %" PRIu64, sector);
            res->check_errors++;
            return qimg_error(-EPERM, "%s", strerror(EPERM));
        }
        if (kind == VMDK_GRAIN_DATA && host >= file_size) {
            qimg_check_log("ERROR: cluster offset for sector %" PRIu64 " points after EOF",
                           sector);
            res->corruptions++;
            return qimg_error(-EINVAL, "%s", strerror(EINVAL));
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- COWD */

struct cowd {
    uint64_t grain_sectors, grain_bytes;
    struct vmdk_directory gd;
    struct vmdk_table_cache gts;
    uint64_t next_sector;          /* where the next grain goes */
};

static void cowd_close(struct vmdk_extent *e)
{
    struct cowd *c = e->priv;
    if (!c)
        return;
    vmdk_directory_free(&c->gd);
    vmdk_table_cache_free(&c->gts);
    free(c);
    e->priv = NULL;
}

static int cowd_open(struct qimg_image *img, struct vmdk_extent *e, const uint8_t *hdr,
                     uint64_t file_size)
{
    (void)img;
    uint32_t capacity = qimg_le32(hdr + 12), grain = qimg_le32(hdr + 16);
    uint32_t gd_sector = qimg_le32(hdr + 20), gd_entries = qimg_le32(hdr + 24);
    if (grain > COWD_MAX_GRAIN_SECTORS)
        return qimg_error(-EFBIG, "Invalid granularity, image may be corrupt");
    if (gd_entries > COWD_MAX_GD_ENTRIES)
        return qimg_error(-EFBIG, "L1 size too big");
    struct cowd *c = qimg_xcalloc(1, sizeof *c);
    e->priv = c;
    c->grain_sectors = grain;
    c->grain_bytes = (uint64_t)grain * VMDK_SECTOR;
    c->gts.entries = COWD_GT_ENTRIES;
    c->gts.entry_size = 4;
    e->sectors = capacity;
    e->cluster_size = c->grain_bytes;
    /* new grains go after everything in the file, grain-aligned (qemu) */
    uint64_t file_sectors = qimg_div_round_up(file_size, VMDK_SECTOR);
    c->next_sector = grain ? qimg_div_round_up(file_sectors, grain) * grain : file_sectors;
    int r = vmdk_load_directory(e, (uint64_t)gd_sector * VMDK_SECTOR, gd_entries, 4, file_size,
                                &c->gd);
    if (r < 0)
        cowd_close(e);
    return r;
}

/* Grain of extent offset off: its kind and host byte offset (of off).
 * With img->lock held (the table cache). */
static int cowd_lookup_locked(struct vmdk_extent *e, struct cowd *c, uint64_t off,
                              enum vmdk_grain *kind, uint64_t *host)
{
    *kind = VMDK_GRAIN_UNALLOC;
    *host = 0;
    if (c->grain_bytes == 0)
        return qimg_error(-EIO, "vmdk: COWD extent '%s' has a granularity of 0",
                          e->file->filename);
    uint64_t g = off / c->grain_bytes;
    uint64_t i = g / COWD_GT_ENTRIES;
    if (i >= c->gd.entries)
        return qimg_error(-EIO, "%s", strerror(EIO));
    uint64_t gt_sector = vmdk_directory_entry(&c->gd, i);
    if (gt_sector == 0)
        return 0;
    const uint8_t *gt;
    int r = vmdk_table_get(&c->gts, e, gt_sector * VMDK_SECTOR, &gt);
    if (r < 0)
        return r;
    uint32_t v = qimg_le32(gt + (g % COWD_GT_ENTRIES) * 4);
    if (v == 0)
        return 0;
    *kind = VMDK_GRAIN_DATA;
    *host = (uint64_t)v * VMDK_SECTOR + off % c->grain_bytes;
    return 0;
}

static int cowd_lookup(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                       enum vmdk_grain *kind, uint64_t *host)
{
    pthread_mutex_lock(&img->lock);
    int r = cowd_lookup_locked(e, e->priv, off, kind, host);
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int cowd_read(struct qimg_image *img, struct vmdk_extent *e, uint64_t off, uint8_t *buf,
                     size_t len)
{
    struct cowd *c = e->priv;
    while (len > 0) {
        enum vmdk_grain kind;
        uint64_t host;
        int r = cowd_lookup(img, e, off, &kind, &host);
        if (r < 0)
            return r;
        size_t n = (size_t)QIMG_MIN((uint64_t)len, c->grain_bytes - off % c->grain_bytes);
        if (kind == VMDK_GRAIN_DATA)
            r = qimg_io_pread(e->file, buf, n, host);
        else
            r = vmdk_read_unallocated(img, e, off, buf, n);
        if (r < 0)
            return r;
        buf += n, off += n, len -= n;
    }
    return 0;
}

static int cowd_block_status(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                             uint64_t len, struct qimg_extent *ext)
{
    struct cowd *c = e->priv;
    enum vmdk_grain kind;
    uint64_t host;
    int r = cowd_lookup(img, e, off, &kind, &host);
    if (r < 0)
        return r;
    ext->length = QIMG_MIN(len, c->grain_bytes - off % c->grain_bytes);
    ext->flags = 0;
    if (kind == VMDK_GRAIN_DATA) {
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
        ext->host_offset = host;
        ext->host_file = e->file->filename;
    }
    return 0;
}

/* ------------------------------------------------------------- writes */

/* A new grain for extent offset off (in grain g) holding buf: the rest of
 * the grain comes from the parent or is zeros, the whole grain goes to the
 * end of the file, then its grain table entry points at it.  With
 * img->lock held. */
static int cowd_allocate(struct qimg_image *img, struct vmdk_extent *e, struct cowd *c,
                         uint64_t off, const uint8_t *buf, size_t len)
{
    uint64_t g = off / c->grain_bytes, in_grain = off % c->grain_bytes, base = g * c->grain_bytes;
    uint64_t gt_sector = vmdk_directory_entry(&c->gd, g / COWD_GT_ENTRIES), end;
    /* qemu 7.2 writes a missing grain table over the header (at sector 0) */
    if (gt_sector == 0)
        return qimg_error(-ENOTSUP, "VMDK extent '%s' has no grain table for offset %" PRIu64,
                          e->file->filename, off);
    if (!qimg_add_ok(c->next_sector, c->grain_sectors, &end) || end > UINT32_MAX)
        return qimg_error(-ENOSPC, "VMDK extent '%s' is full", e->file->filename);
    CLEANUP_FREE uint8_t *grain = qimg_alloc_from_image(c->grain_bytes, "VMDK grain");
    if (!grain)
        return -ENOMEM;
    int r = 0;
    if (in_grain)
        r = vmdk_read_unallocated(img, e, base, grain, (size_t)in_grain);
    uint64_t tail = in_grain + len;
    if (r == 0 && tail < c->grain_bytes)
        r = vmdk_read_unallocated(img, e, base + tail, grain + tail,
                                  (size_t)(c->grain_bytes - tail));
    if (r < 0)
        return r;
    memcpy(grain + in_grain, buf, len);
    qimg_io_event(e->file, QIMG_EV_CLUSTER_ALLOC);
    r = qimg_io_pwrite(e->file, grain, (size_t)c->grain_bytes, c->next_sector * VMDK_SECTOR);
    if (r < 0)
        return r;
    uint8_t le[4];
    qimg_put_le32(le, (uint32_t)c->next_sector);
    uint64_t entry = gt_sector * VMDK_SECTOR + (g % COWD_GT_ENTRIES) * 4;
    qimg_io_event(e->file, QIMG_EV_L2_UPDATE);
    r = qimg_io_pwrite(e->file, le, sizeof le, entry);
    if (r < 0)
        return r;
    const uint8_t *gt;
    if (vmdk_table_get(&c->gts, e, gt_sector * VMDK_SECTOR, &gt) == 0)
        memcpy((uint8_t *)gt + (g % COWD_GT_ENTRIES) * 4, le, sizeof le);
    c->next_sector = end;
    return 0;
}

static int cowd_write(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                      const uint8_t *buf, size_t len)
{
    struct cowd *c = e->priv;
    while (len > 0) {
        enum vmdk_grain kind;
        uint64_t host;
        int r = cowd_lookup(img, e, off, &kind, &host);
        if (r < 0)
            return r;
        size_t n = (size_t)QIMG_MIN((uint64_t)len, c->grain_bytes - off % c->grain_bytes);
        if (kind != VMDK_GRAIN_DATA) {
            pthread_mutex_lock(&img->lock);
            /* another writer may have allocated it meanwhile */
            r = cowd_lookup_locked(e, c, off, &kind, &host);
            if (r == 0 && kind != VMDK_GRAIN_DATA)
                r = cowd_allocate(img, e, c, off, buf, n);
            else if (r == 0)
                r = 1;
            pthread_mutex_unlock(&img->lock);
            if (r < 0)
                return r;
        }
        if (kind == VMDK_GRAIN_DATA) {
            qimg_io_event(e->file, QIMG_EV_WRITE_AIO);
            r = qimg_io_pwrite(e->file, buf, n, host);
            if (r < 0)
                return r;
        }
        buf += n, off += n, len -= n;
    }
    return 0;
}

static int cowd_check(struct qimg_image *img, struct vmdk_extent *e, struct qimg_check_result *res)
{
    struct cowd *c = e->priv;
    return vmdk_check_grains(img, e, c->grain_bytes, cowd_lookup, res);
}

const struct vmdk_extent_ops vmdk_cowd_ops = {
    .name = "COWD",
    .open = cowd_open,
    .close = cowd_close,
    .read = cowd_read,
    .write = cowd_write,
    .block_status = cowd_block_status,
    .check = cowd_check,
};
