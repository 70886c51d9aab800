/* qimg - VHDX: changing the parent (rebase) and emptying a differencing
 * disk after commit, beyond qemu-img (which opens no differencing VHDX).
 *
 * The parent locator is rewritten in place when it fits, else after the
 * last item of the metadata region; the table entry, the file parameters'
 * has-parent bit and the locator go through one log entry. */
#include <errno.h>
#include <inttypes.h>

#include "vhdx.h"

static const uint8_t guid_file_params[16] = {
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
    0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
};
static const uint8_t guid_parent_locator[16] = {
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
    0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c,
};
#define LOCATOR_MAX (20 + 36 + 2 * (64 + 2 * 4096))

/* The parent's data write GUID in the locator's text form. */
static int linkage_of(const char *path, char out[39])
{
    struct qimg_io *io;
    int r = qimg_io_open(&io, path, QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    struct qimg_image tmp = { .file = io, .filename = (char *)path };
    struct vhdx_state st = { 0 };
    uint8_t sig[8];
    r = qimg_io_pread(io, sig, sizeof sig, 0);
    if (r == 0 && memcmp(sig, "vhdxfile", 8) != 0)
        r = qimg_error(-EINVAL, "The parent of a differencing VHDX must be a VHDX");
    if (r == 0)
        r = vhdx_read_headers(&tmp, &st);
    qimg_io_close(io);
    if (r == 0)
        vhdx_guid_format(st.header + VH_DATA_GUID, out);
    for (char *c = out; r == 0 && *c; c++)
        if (*c >= 'A' && *c <= 'F')
            *c = (char)(*c - 'A' + 'a');
    return r;
}

int vhdx_parent_linkage(const char *path, char out[39])
{
    return linkage_of(path, out);
}

/* Rewrite the metadata: the locator for (linkage, relative), or none. */
static int write_locator(struct qimg_image *img, struct vhdx_state *s, const char *linkage,
                         const char *relative)
{
    size_t span = s->meta_length;
    CLEANUP_FREE uint8_t *m = qimg_alloc_from_image(span, "VHDX metadata region");
    CLEANUP_FREE uint8_t *old = qimg_alloc_from_image(span, "VHDX metadata region");
    if (!m || !old)
        return -ENOMEM;
    int r = vhdx_pread(img, s, m, span, s->meta_offset);
    if (r < 0)
        return r;
    memcpy(old, m, span);
    uint32_t n = QIMG_MIN(qimg_le16(m + 10), VHDX_MAX_ENTRIES), end = VHDX_META_TABLE_SIZE;
    int params = -1, loc = -1;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = m + 32 + 32 * (size_t)i;
        if (qimg_le32(e + 24) & 1)
            continue;
        if (memcmp(e, guid_file_params, 16) == 0)
            params = (int)i;
        if (memcmp(e, guid_parent_locator, 16) == 0)
            loc = (int)i;
        end = QIMG_MAX(end, qimg_le32(e + 16) + qimg_le32(e + 20));
    }
    if (params < 0)
        return qimg_error(-EINVAL, "VHDX file parameters not found");
    uint8_t *pe = m + 32 + 32 * (size_t)params;
    uint8_t *pv = m + qimg_le32(pe + 16);
    qimg_put_le32(pv + 4, (qimg_le32(pv + 4) & ~2u) | (linkage ? 2u : 0u));
    if (linkage) {
        uint8_t item[LOCATOR_MAX];
        size_t len = vhdx_build_locator(item, linkage, relative);
        if (loc < 0) {
            if (n >= VHDX_MAX_ENTRIES)
                return qimg_error(-ENOSPC, "VHDX metadata table full");
            loc = (int)n++;
            qimg_put_le16(m + 10, (uint16_t)n);
        }
        uint8_t *le = m + 32 + 32 * (size_t)loc;
        uint32_t off = qimg_le32(le + 16);
        if (!off || qimg_le32(le + 20) < len)
            off = (uint32_t)((end + 7) & ~7u);
        if ((uint64_t)off + len > span)
            return qimg_error(-ENOSPC, "No room for the VHDX parent locator");
        memcpy(le, guid_parent_locator, 16);
        qimg_put_le32(le + 16, off);
        qimg_put_le32(le + 20, (uint32_t)len);
        qimg_put_le32(le + 24, 4);    /* IsRequired */
        memcpy(m + off, item, len);
    } else if (loc >= 0) {
        /* the last entry takes its place */
        memmove(m + 32 + 32 * (size_t)loc, m + 32 + 32 * (size_t)(n - 1), 32);
        memset(m + 32 + 32 * (size_t)(n - 1), 0, 32);
        qimg_put_le16(m + 10, (uint16_t)(n - 1));
    }
    uint64_t offs[64];
    uint8_t *data[64];
    size_t k = 0;
    for (size_t sec = 0; sec < span / VHDX_LOG_SECTOR; sec++) {
        size_t at = sec * VHDX_LOG_SECTOR;
        if (memcmp(m + at, old + at, VHDX_LOG_SECTOR) == 0)
            continue;
        if (k == QIMG_ARRAY_SIZE(offs))
            return qimg_error(-ENOSPC, "VHDX metadata change too large");
        offs[k] = s->meta_offset + at;
        data[k++] = m + at;
    }
    return vhdx_log_write_sectors(img, s, offs, data, k);
}

static void set_names(struct qimg_image *img, struct vhdx_state *s, const char *linkage,
                      const char *backing)
{
    free(s->parent_linkage);
    free(s->parent_linkage2);
    free(s->parent_relative);
    free(s->parent_absolute);
    free(s->parent_volume);
    s->parent_linkage = linkage ? qimg_strdup(linkage) : NULL;
    s->parent_linkage2 = s->parent_absolute = s->parent_volume = NULL;
    s->parent_relative = backing ? qimg_strdup(backing) : NULL;
    qimg_image_set_backing_names(img, backing, "vhdx");
}

/* A dynamic disk becoming differencing: its unwritten blocks read zeros
 * and must go on doing so (ZERO), and its table takes the differencing
 * layout's entries. */
static int to_differencing(struct vhdx_state *s)
{
    uint32_t cr;
    uint64_t pb, entries;
    vhdx_geometry(s->disk_size, s->block_size, s->logical_sector, true, &cr, &pb, &entries);
    if (entries * 8 > s->bat_length)
        return qimg_error(-ENOSPC, "No room in the VHDX BAT for a differencing disk's table");
    if (entries > s->bat_entries) {
        uint64_t *bat = qimg_alloc_from_image(entries * 8, "VHDX block allocation table");
        if (!bat)
            return -ENOMEM;
        memcpy(bat, s->bat, s->bat_entries * 8);
        memset(bat + s->bat_entries, 0, (entries - s->bat_entries) * 8);
        uint8_t *dirty = qimg_xcalloc(1, qimg_div_round_up(entries * 8, VHDX_LOG_SECTOR));
        memcpy(dirty, s->dirty_bat, qimg_div_round_up(s->bat_entries * 8, VHDX_LOG_SECTOR));
        free(s->bat);
        free(s->dirty_bat);
        s->bat = bat;
        s->dirty_bat = dirty;
        s->bat_entries = entries;
    }
    for (uint64_t b = 0; b < s->payload_blocks; b++) {
        uint64_t i = vhdx_bat_index(s, b);
        if (VHDX_BAT_STATE(s->bat[i]) == VHDX_PAYLOAD_NOT_PRESENT)
            vhdx_bat_set(s, i, VHDX_PAYLOAD_ZERO);
    }
    return 0;
}

/* A differencing disk losing its parent: blocks that still read from it
 * are made whole first (the parent's data copied in). */
static int to_dynamic(struct qimg_image *img, struct vhdx_state *s)
{
    for (uint64_t b = 0; b < s->payload_blocks; b++) {
        uint64_t e = s->bat[vhdx_bat_index(s, b)];
        unsigned st = VHDX_BAT_STATE(e);
        if (st != VHDX_PAYLOAD_PARTIALLY_PRESENT && st != VHDX_PAYLOAD_NOT_PRESENT)
            continue;
        if (st == VHDX_PAYLOAD_NOT_PRESENT && !img->backing) {
            vhdx_bat_set(s, vhdx_bat_index(s, b), VHDX_PAYLOAD_ZERO);
            continue;
        }
        uint64_t off = b * (uint64_t)s->block_size;
        size_t len = (size_t)QIMG_MIN(s->block_size, img->size - off);
        CLEANUP_FREE uint8_t *buf = qimg_xmalloc(len);
        pthread_mutex_unlock(&img->lock);
        int r = vhdx_read(img, off, buf, len);
        if (r == 0)
            r = qimg_is_zero(buf, len) ? 0 : vhdx_write(img, off, buf, len);
        pthread_mutex_lock(&img->lock);
        if (r < 0)
            return r;
        if (VHDX_BAT_STATE(s->bat[vhdx_bat_index(s, b)]) != VHDX_PAYLOAD_FULLY_PRESENT)
            vhdx_bat_set(s, vhdx_bat_index(s, b), VHDX_PAYLOAD_ZERO);
    }
    return 0;
}

int vhdx_change_backing(struct qimg_image *img, const char *backing, const char *fmt)
{
    struct vhdx_state *s = vhdx_state(img);
    if (backing && (!fmt || strcmp(fmt, "vhdx") != 0))
        return qimg_error(-ENOTSUP, "The parent of a differencing VHDX must be a VHDX");
    char linkage[39];
    if (backing) {
        CLEANUP_FREE char *path = qimg_image_resolve_name(img, backing);
        if (!path)
            return -EINVAL;
        int r = linkage_of(path, linkage);
        if (r < 0)
            return r;
    }
    pthread_mutex_lock(&img->lock);
    int r = vhdx_begin_write(img, s, true);
    if (r == 0 && backing && !s->has_parent)
        r = to_differencing(s);
    if (r == 0 && backing && !s->has_parent) {
        s->has_parent = true;       /* the bitmaps' entries exist from now */
        r = vhdx_alloc_bitmaps(img, s);
        s->has_parent = false;
    }
    else if (r == 0 && !backing && s->has_parent)
        r = to_dynamic(img, s);
    if (r == 0)
        r = vhdx_bat_commit(img, s);
    CLEANUP_FREE char *relative = NULL;
    if (backing) {
        relative = qimg_strdup(backing);
        for (char *p = relative; *p; p++)
            if (*p == '/')
                *p = '\\';
    }
    if (r == 0)
        r = write_locator(img, s, backing ? linkage : NULL, relative);
    if (r == 0) {
        s->has_parent = backing != NULL;
        set_names(img, s, backing ? linkage : NULL, backing);
    }
    pthread_mutex_unlock(&img->lock);
    return r < 0 ? r : qimg_io_flush(img->file);
}

/* After commit: every block reads from the parent again, and the parent
 * (whose data write GUID the commit changed) is linked anew. */
int vhdx_make_empty(struct qimg_image *img)
{
    struct vhdx_state *s = vhdx_state(img);
    if (!s->has_parent || !img->backing || img->backing->drv != img->drv)
        return -ENOTSUP;
    const struct vhdx_state *p = img->backing->opaque;
    char linkage[39];
    vhdx_guid_format(p->header + VH_DATA_GUID, linkage);
    for (char *c = linkage; *c; c++)
        if (*c >= 'A' && *c <= 'F')
            *c = (char)(*c - 'A' + 'a');
    pthread_mutex_lock(&img->lock);
    int r = vhdx_begin_write(img, s, true);
    for (uint64_t i = 0; r == 0 && i < s->bat_entries; i++)
        if (s->bat[i] && i % (s->chunk_ratio + 1) != s->chunk_ratio)
            vhdx_bat_set(s, i, 0);
    /* the bitmaps stay: no sector is present any more */
    vhdx_bitmaps_drop(s);
    for (uint64_t i = s->chunk_ratio; r == 0 && i < s->bat_entries; i += s->chunk_ratio + 1)
        if (VHDX_BAT_STATE(s->bat[i]) == VHDX_SB_PRESENT)
            r = qimg_io_zero(img->file, VHDX_BAT_OFFSET(s->bat[i]), VHDX_SB_BLOCK, false);
    if (r == 0)
        r = vhdx_bat_commit(img, s);
    CLEANUP_FREE char *relative = s->parent_relative ? qimg_strdup(s->parent_relative) : NULL;
    if (r == 0 && relative)
        r = write_locator(img, s, linkage, relative);
    if (r == 0) {
        free(s->parent_linkage);
        s->parent_linkage = qimg_strdup(linkage);
    }
    pthread_mutex_unlock(&img->lock);
    return r < 0 ? r : qimg_io_flush(img->file);
}
