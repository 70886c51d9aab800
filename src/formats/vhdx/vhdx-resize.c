/* qimg - VHDX: growing and shrinking a disk (qemu-img cannot resize VHDX
 * at all).
 *
 * The new blocks are ZERO (a differencing disk's NOT_PRESENT: its parent's),
 * or given their place in the file at once for a fixed disk.  When the BAT
 * region has no room for the new entries, the whole table is written to a
 * new region at the end of the file first; then one log entry moves the
 * region (both region tables) and changes the disk size, so a crash leaves
 * the disk either as it was or grown. */
#include <errno.h>
#include <inttypes.h>

#include "vhdx.h"

static const uint8_t guid_bat[16] = {
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
};

/* The 4 KiB sectors of both region tables with the BAT at off/len. */
static int region_sectors(struct qimg_image *img, struct vhdx_state *s, uint64_t off,
                          uint32_t len, uint8_t *tables, uint64_t *offs, uint8_t **data)
{
    int r = vhdx_pread(img, s, tables, VHDX_REGION_SIZE, VHDX_REGION1_OFF);
    if (r < 0)
        return r;
    uint32_t n = QIMG_MIN(qimg_le32(tables + 8), VHDX_MAX_ENTRIES);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = tables + 16 + 32 * (size_t)i;
        if (memcmp(e, guid_bat, 16) == 0) {
            qimg_put_le64(e + 16, off);
            qimg_put_le32(e + 24, len);
        }
    }
    qimg_put_le32(tables + 4, vhdx_checksum(tables, VHDX_REGION_SIZE, 4));
    memcpy(tables + VHDX_REGION_SIZE, tables, VHDX_REGION_SIZE);
    size_t per = VHDX_REGION_SIZE / VHDX_LOG_SECTOR;
    for (size_t k = 0; k < 2 * per; k++) {
        offs[k] = (k < per ? VHDX_REGION1_OFF : VHDX_REGION2_OFF) + (k % per) * VHDX_LOG_SECTOR;
        data[k] = tables + k * VHDX_LOG_SECTOR;
    }
    return (int)(2 * per);
}

/* The sector holding the disk size item, changed. */
static int size_sector(struct qimg_image *img, struct vhdx_state *s, uint64_t size,
                       uint64_t *off, uint8_t *sec)
{
    CLEANUP_FREE uint8_t *t = qimg_xmalloc(VHDX_META_TABLE_SIZE);
    int r = vhdx_pread(img, s, t, VHDX_META_TABLE_SIZE, s->meta_offset);
    if (r < 0)
        return r;
    uint32_t n = QIMG_MIN(qimg_le16(t + 10), VHDX_MAX_ENTRIES);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = t + 32 + 32 * (size_t)i;
        if (memcmp(e, vhdx_guid_disk_size, 16) != 0 || (qimg_le32(e + 24) & 1))
            continue;
        uint64_t at = s->meta_offset + qimg_le32(e + 16);
        *off = qimg_round_down(at, VHDX_LOG_SECTOR);
        if (at + 8 > *off + VHDX_LOG_SECTOR)
            break;
        r = vhdx_pread(img, s, sec, VHDX_LOG_SECTOR, *off);
        if (r == 0)
            qimg_put_le64(sec + (at - *off), size);
        return r;
    }
    return qimg_error(-ENOTSUP, "VHDX disk size item cannot be changed in place");
}

/* The table in memory, longer; the new entries as the disk type wants. */
static int grow_table(struct qimg_image *img, struct vhdx_state *s, uint64_t size)
{
    uint32_t cr;
    uint64_t pb, entries;
    vhdx_geometry(size, s->block_size, s->logical_sector, s->has_parent, &cr, &pb, &entries);
    uint64_t *bat = qimg_alloc_from_image(entries * 8, "VHDX block allocation table");
    if (!bat)
        return -ENOMEM;
    memcpy(bat, s->bat, s->bat_entries * 8);
    memset(bat + s->bat_entries, 0, (entries - s->bat_entries) * 8);
    uint64_t nsec_old = qimg_div_round_up(s->bat_entries * 8, VHDX_LOG_SECTOR);
    uint64_t nsec = qimg_div_round_up(entries * 8, VHDX_LOG_SECTOR);
    uint8_t *dirty = qimg_xcalloc(1, nsec);
    memcpy(dirty, s->dirty_bat, nsec_old);
    free(s->bat);
    free(s->dirty_bat);
    uint64_t old_entries = s->bat_entries;
    s->bat = bat;
    s->dirty_bat = dirty;
    s->bat_entries = entries;
    uint64_t first_new = s->payload_blocks;
    s->payload_blocks = pb;
    for (uint64_t b = first_new; b < pb; b++) {
        uint64_t e = s->has_parent ? VHDX_PAYLOAD_NOT_PRESENT : VHDX_PAYLOAD_ZERO;
        if (s->leave_allocated && !s->has_parent) {
            e = s->alloc_offset | VHDX_PAYLOAD_FULLY_PRESENT;
            s->alloc_offset += s->block_size;
        }
        vhdx_bat_set(s, vhdx_bat_index(s, b), e);
    }
    for (uint64_t i = old_entries; i < entries; i++)   /* written, even as zeros */
        vhdx_bat_set(s, i, s->bat[i]);
    if (s->has_parent) {
        int r = vhdx_alloc_bitmaps(img, s);
        if (r < 0)
            return r;
    }
    if (s->alloc_offset > s->file_size) {
        int r = qimg_io_truncate(img->file, s->alloc_offset);
        if (r < 0)
            return r;
        s->file_size = s->alloc_offset;
    }
    return 0;
}

/* The old last block's bytes past the old size read as zeros from now. */
static int clear_tail(struct qimg_image *img, struct vhdx_state *s, uint64_t old, uint64_t size)
{
    if (old % s->block_size == 0)
        return 0;
    uint64_t e = s->bat[vhdx_bat_index(s, old / s->block_size)];
    if (VHDX_BAT_STATE(e) != VHDX_PAYLOAD_FULLY_PRESENT)
        return 0;
    uint64_t end = QIMG_MIN(size, (old / s->block_size + 1) * (uint64_t)s->block_size);
    return qimg_io_zero(img->file, VHDX_BAT_OFFSET(e) + old % s->block_size, end - old, false);
}

/* The whole table at a new region at the end of the file. */
static int move_table(struct qimg_image *img, struct vhdx_state *s, uint64_t *off, uint32_t *len)
{
    uint64_t bytes = qimg_div_round_up(s->bat_entries * 8, VHDX_MiB) * VHDX_MiB;
    if (bytes > UINT32_MAX)
        return qimg_error(-EFBIG, "VHDX BAT too large");
    *off = s->alloc_offset;
    *len = (uint32_t)bytes;
    s->alloc_offset += bytes;
    CLEANUP_FREE uint8_t *buf = qimg_xcalloc(1, bytes);
    for (uint64_t i = 0; i < s->bat_entries; i++)
        qimg_put_le64(buf + 8 * i, s->bat[i]);
    int r = qimg_io_pwrite(img->file, buf, bytes, *off);
    if (r == 0 && *off + bytes > s->file_size)
        s->file_size = *off + bytes;
    return r;
}

static int grow(struct qimg_image *img, struct vhdx_state *s, uint64_t size)
{
    uint64_t old = s->disk_size;
    int r = vhdx_bat_commit(img, s);
    if (r == 0)
        r = vhdx_begin_write(img, s, true);
    if (r == 0)
        r = clear_tail(img, s, old, size);
    if (r == 0)
        r = grow_table(img, s, size);
    if (r < 0)
        return r;
    uint64_t offs[40], moff = 0, new_off = 0;
    uint8_t *data[40], sec[VHDX_LOG_SECTOR];
    CLEANUP_FREE uint8_t *tables = NULL;
    size_t n = 0;
    uint32_t new_len = 0;
    if (s->bat_entries * 8 > s->bat_length) {
        r = move_table(img, s, &new_off, &new_len);
        if (r < 0)
            return r;
        tables = qimg_xmalloc(2 * VHDX_REGION_SIZE);
        r = region_sectors(img, s, new_off, new_len, tables, offs, data);
        if (r < 0)
            return r;
        n = (size_t)r;
    } else {
        r = vhdx_bat_commit(img, s);
        if (r < 0)
            return r;
    }
    r = size_sector(img, s, size, &moff, sec);
    if (r < 0)
        return r;
    offs[n] = moff;
    data[n++] = sec;
    r = vhdx_log_write_sectors(img, s, offs, data, n);
    if (r < 0)
        return r;
    if (new_len) {
        /* the table now lives in the new region */
        for (int i = 0; i < s->nregions; i++)
            if (s->regions[i].start == s->bat_offset)
                s->regions[i] = (struct vhdx_range){ new_off, new_off + new_len };
        s->bat_offset = new_off;
        s->bat_length = new_len;
        memset(s->dirty_bat, 0, qimg_div_round_up(s->bat_entries * 8, VHDX_LOG_SECTOR));
        s->ndirty = 0;
    }
    s->disk_size = size;
    img->size = size;
    return 0;
}

/* The blocks past the new end, as file ranges (their entries' places). */
static struct vhdx_range *dropped_blocks(struct vhdx_state *s, uint64_t first_block,
                                         uint64_t entries, size_t *n)
{
    struct vhdx_range *v = qimg_xcalloc(s->bat_entries - entries + s->payload_blocks -
                                        first_block + 1, sizeof *v);
    *n = 0;
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        uint64_t e = s->bat[i];
        unsigned st = VHDX_BAT_STATE(e);
        bool sb = i % (s->chunk_ratio + 1) == s->chunk_ratio;
        bool gone = i >= entries || (!sb && i - i / (s->chunk_ratio + 1) >= first_block);
        bool placed = sb ? st == VHDX_SB_PRESENT
                         : st == VHDX_PAYLOAD_FULLY_PRESENT ||
                               st == VHDX_PAYLOAD_PARTIALLY_PRESENT;
        if (gone && placed && VHDX_BAT_OFFSET(e))
            v[(*n)++] = (struct vhdx_range){ VHDX_BAT_OFFSET(e),
                                             VHDX_BAT_OFFSET(e) + (sb ? VHDX_SB_BLOCK
                                                                      : s->block_size) };
    }
    return v;
}

/* After a shrink: the space of the dropped blocks given back, the file cut
 * after what it still holds.  Runs once the new table is in place and
 * the log empty (a replay then changes nothing, and the log's recorded
 * file size no longer matters). */
static int give_back(struct qimg_image *img, struct vhdx_state *s,
                     const struct vhdx_range *gone, size_t n)
{
    int r = qimg_io_flush(img->file);
    if (r == 0 && s->log_guid_set)
        r = vhdx_set_log_guid(img, s, false);
    if (r < 0)
        return r;
    uint64_t end = qimg_div_round_up(vhdx_used_end(s), VHDX_MiB) * VHDX_MiB;
    for (size_t i = 0; i < n; i++)
        if (gone[i].start < end)
            (void)qimg_io_discard(img->file, gone[i].start,
                                  QIMG_MIN(gone[i].end, end) - gone[i].start);
    if (end < s->file_size) {
        r = qimg_io_truncate(img->file, end);
        if (r < 0)
            return r;
        s->file_size = end;
    }
    s->alloc_offset = QIMG_MAX(end, s->file_size);
    return 0;
}

/* Shrink (--shrink, beyond qemu-img): the blocks past the new end are
 * dropped from the table, the entries past the new count zeroed, then the
 * size changes through the log; then the dropped blocks' space is given
 * back (holes, and the file cut after its last used MiB).  What the new
 * last block holds past the end is cleared if it grows again
 * (clear_tail). */
static int shrink_to(struct qimg_image *img, struct vhdx_state *s, uint64_t size)
{
    int r = vhdx_bat_commit(img, s);
    if (r == 0)
        r = vhdx_begin_write(img, s, true);
    if (r < 0)
        return r;
    uint32_t cr;
    uint64_t pb, entries;
    vhdx_geometry(size, s->block_size, s->logical_sector, s->has_parent, &cr, &pb, &entries);
    size_t ngone;
    CLEANUP_FREE struct vhdx_range *gone = dropped_blocks(s, pb, entries, &ngone);
    for (uint64_t b = pb; b < s->payload_blocks; b++)
        vhdx_bat_set(s, vhdx_bat_index(s, b), 0);
    for (uint64_t i = entries; i < s->bat_entries; i++)
        vhdx_bat_set(s, i, 0);
    r = vhdx_bat_commit(img, s);
    uint64_t off = 0;
    uint8_t sec[VHDX_LOG_SECTOR], *data[1] = { sec };
    if (r == 0)
        r = size_sector(img, s, size, &off, sec);
    if (r == 0)
        r = vhdx_log_write_sectors(img, s, &off, data, 1);
    if (r < 0)
        return r;
    s->payload_blocks = pb;
    s->bat_entries = entries;
    s->disk_size = size;
    img->size = size;
    /* bitmaps of chunks that are gone */
    vhdx_bitmaps_drop(s);
    return give_back(img, s, gone, ngone);
}

int vhdx_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    struct vhdx_state *s = vhdx_state(img);
    if (prealloc && strcmp(prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    uint64_t want = qimg_div_round_up(size, 512) * 512;
    if (want == 0)
        return qimg_error(-EINVAL, "VHDX disk size must not be zero");
    if (want > VHDX_MAX_DISK_SIZE)
        return qimg_error(-EFBIG, "Image size too large; max of 64TB");
    if (want == s->disk_size)
        return 0;
    pthread_mutex_lock(&img->lock);
    int r = want < s->disk_size ? shrink_to(img, s, want) : grow(img, s, want);
    pthread_mutex_unlock(&img->lock);
    return r < 0 ? r : qimg_io_flush(img->file);
}
