/* qimg - emptying a qcow2 image after commit by rebuilding it as a fresh
 * one: header cluster kept, then one refcount table cluster, one refcount
 * block and a zeroed L1 table, and the file cut after them (what qemu-img
 * commit leaves: a file of 3 + L1 clusters).
 *
 * Only for images where nothing else owns clusters: version 3 (the dirty
 * bit guards the rebuild), no snapshots, no bitmaps, no LUKS header, no
 * external data file, and header + tables counted by one refcount block.
 * Other images are emptied cluster by cluster by the write path.
 *
 * The steps and their order are qemu's, with its debug events, so that a
 * failure leaves the file as qemu leaves it: dirty bit set (a failure
 * here changes nothing); old L1 table zeroed (l1_update); clusters 1 to
 * 2 + L1 zeroed (empty_image_prepare); header pointed at the new tables
 * (l1_update, reftable_update); the refcount block entered in the table
 * (refblock_alloc); refcounts set.  A failure from the L1 wipe on leaves
 * on-disk refcounts that no longer match what we hold: the image is then
 * "broken" (qemu ejects its driver), written no more, and left dirty for
 * the next open to repair.  Then the refcounts are written, the dirty bit
 * cleared and the file cut.
 */
#include <errno.h>

#include "qcow2.h"
#include "qcow2-empty.h"

static uint64_t l1_clusters(const struct qcow2_state *s)
{
    uint64_t bytes = (uint64_t)s->l1_size * 8;
    return (bytes + s->cluster_size - 1) / s->cluster_size;
}

bool qcow2_can_empty_completely(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    return s->ws && s->version >= 3 && s->nb_snapshots == 0 && s->nb_bitmaps == 0 &&
           s->crypt_method != QCOW2_CRYPT_LUKS && !qcow2_has_data_file(s) &&
           3 + l1_clusters(s) <= s->refcount_block_entries;
}

static int set_incompat(struct qimg_image *img, uint64_t features)
{
    uint8_t be[8];
    qimg_put_be64(be, features);
    int r = qimg_io_pwrite(img->file, be, 8, QCOW2_HDR_INCOMPATIBLE_FEATURES);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        qcow2_state(img)->incompatible_features = features;
    return r;
}

/* Forget every cached L2 table and refcount block (all clean: flushed). */
static void drop_caches(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_cache *c = &s->l2_cache;
    for (uint32_t i = 0; i < c->used; i++)
        if (c->entries[i].offset)
            qcow2_l2_cache_drop(img, c->entries[i].offset);
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++) {
        s->ws->refblocks[i].offset = 0;
        s->ws->refblocks[i].dirty = false;
    }
}

/* Write zeros over [off, off + len) of the file. */
static int zero_file(struct qimg_image *img, uint64_t off, uint64_t len)
{
    int r = qimg_io_zero(img->file, off, len, false);
    return r < 0 ? qimg_error(r, "%s", strerror(-r)) : 0;
}

static int write_file_sync(struct qimg_image *img, const void *buf, size_t len, uint64_t off)
{
    int r = qimg_io_pwrite(img->file, buf, len, off);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

/* Wipe the old tables and write the new ones: the header points at an
 * empty refcount table in cluster 1 and an empty L1 table from cluster
 * 3; the table's first entry then names the refcount block in cluster 2.
 * Any failure here leaves the image broken. */
static int write_new_tables(struct qimg_image *img, uint64_t l1c)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    qimg_io_event(img->file, QIMG_EV_L1_UPDATE);
    int r = zero_file(img, s->l1_table_offset, l1c * cs);
    if (r < 0)
        return r;
    drop_caches(img);
    memset(s->l1_table, 0, (size_t)s->l1_size * 8);
    qimg_io_event(img->file, QIMG_EV_EMPTY_IMAGE_PREPARE);
    r = zero_file(img, cs, (2 + l1c) * cs);
    if (r < 0)
        return r;
    uint8_t hdr[20];
    qimg_put_be64(hdr, 3 * cs);                    /* l1_table_offset */
    qimg_put_be64(hdr + 8, cs);                    /* refcount_table_offset */
    qimg_put_be32(hdr + 16, 1);                    /* refcount_table_clusters */
    qimg_io_event(img->file, QIMG_EV_L1_UPDATE);
    qimg_io_event(img->file, QIMG_EV_REFTABLE_UPDATE);
    r = write_file_sync(img, hdr, sizeof hdr, QCOW2_HDR_L1_TABLE_OFFSET);
    if (r < 0)
        return r;
    uint8_t entry[8];
    qimg_put_be64(entry, 2 * cs);
    qimg_io_event(img->file, QIMG_EV_REFBLOCK_ALLOC);
    return write_file_sync(img, entry, sizeof entry, cs);
}

/* The in-memory state of the rebuilt image. */
static void adopt_new_tables(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    s->l1_table_offset = 3 * cs;
    s->refcount_table_offset = cs;
    s->refcount_table_clusters = 1;
    free(s->refcount_table);
    s->refcount_table_size = cs / 8;
    s->refcount_table = qimg_xcalloc(s->refcount_table_size, 8);
    s->refcount_table[0] = 2 * cs;
    s->ws->free_cluster_index = 0;
    s->ws->free_byte_offset = 0;
    s->metadata_prealloc_checked = false;
}

static int rebuild_locked(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t l1c = l1_clusters(s);
    uint64_t clean = s->incompatible_features & ~QCOW2_INCOMPAT_DIRTY;
    int r = set_incompat(img, s->incompatible_features | QCOW2_INCOMPAT_DIRTY);
    if (r < 0)
        return r;
    r = write_new_tables(img, l1c);
    if (r == 0) {
        adopt_new_tables(img);
        uint64_t at = 0, got = 0;
        r = qcow2_alloc_clusters(img, 3 + l1c, &at, &got);
        if (r == 0 && at != 0)
            r = qimg_error(-EIO, "First cluster in emptied image is in use");
    }
    if (r < 0) {
        s->ws->broken = true;
        return r;
    }
    /* what is held is true again: a failure from here leaves an image
     * that is sound, only dirty or longer than needed */
    r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = set_incompat(img, clean);
    if (r == 0)
        s->ws->marked_dirty = false;   /* the next change sets it again if lazy */
    if (r == 0)
        r = qimg_io_truncate(img->file, (3 + l1c) * s->cluster_size);
    if (r == 0)
        s->file_size = (3 + l1c) * s->cluster_size;
    return r;
}

int qcow2_make_completely_empty(struct qimg_image *img)
{
    int r = qcow2_write_flush(img);
    if (r < 0)
        return r;
    pthread_mutex_lock(&img->lock);
    r = rebuild_locked(img);
    pthread_mutex_unlock(&img->lock);
    return r;
}
