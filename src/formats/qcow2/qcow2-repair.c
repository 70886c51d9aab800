/* qimg - qcow2 repair: the writes behind qemu-img check -r leaks / -r all.
 *
 * The check (qcow2-check.c) decides what to repair and reports it in
 * qemu's words; this file changes the image:
 *   - stored refcounts set to the counted references (leaks, refcounts
 *     too low), through the write path's refcount cache;
 *   - the refcount structures rebuilt from scratch from the counted
 *     references when they are themselves broken (a refcount of 0 for a
 *     cluster in use, a refcount block that is unaligned, outside the
 *     image or shared...): new refcount blocks and a new refcount table
 *     in clusters nobody uses, then one header write switches to them;
 *   - COPIED flags of L1 and L2 entries;
 *   - the corrupt and dirty bits.
 * Guest data is never written: a repair changes metadata only, so data
 * that was readable stays readable. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2-repair.h"

/* ========================================================= refcounts */

int qcow2_repair_refcount(struct qimg_image *img, uint64_t cluster, uint64_t stored,
                          uint64_t counted)
{
    if (stored == counted)
        return 0;
    /* refcounts fit in 63 bits in any image that can be repaired */
    int64_t delta = counted > stored ? (int64_t)(counted - stored) : -(int64_t)(stored - counted);
    int r = qcow2_update_refcounts(img, cluster, 1, delta);
    if (r < 0 || counted != 0)
        return r;
    /* a leaked cluster is free now: give its space back, as qemu does */
    struct qcow2_state *s = qcow2_state(img);
    if (img->file->ops->discard)
        img->file->ops->discard(img->file, cluster << s->cluster_bits, s->cluster_size);
    return 0;
}

int qcow2_repair_refcounts_flush(struct qimg_image *img)
{
    int r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

/* Forget every refcount block the write path cached (the table that
 * pointed to them is gone) and look for free clusters from the start. */
static void drop_refblock_cache(struct qcow2_state *s)
{
    struct qcow2_wstate *w = s->ws;
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++) {
        w->refblocks[i].offset = 0;
        w->refblocks[i].dirty = false;
    }
    w->free_cluster_index = 0;
    w->free_byte_offset = 0;
}

/* Entry i of a refcount block in its on-disk form. */
static void refblock_put(const struct qcow2_state *s, uint8_t *b, uint64_t i, uint64_t v)
{
    unsigned order = s->refcount_order;
    if (order < 3) {
        unsigned bits = 1u << order, per_byte = 8 / bits;
        unsigned shift = (unsigned)(i % per_byte) * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        b[i / per_byte] = (uint8_t)((b[i / per_byte] & ~mask) | ((v << shift) & mask));
        return;
    }
    switch (order) {
    case 3: b[i] = (uint8_t)v; break;
    case 4: qimg_put_be16(b + 2 * i, (uint16_t)v); break;
    case 5: qimg_put_be32(b + 4 * i, (uint32_t)v); break;
    default: qimg_put_be64(b + 8 * i, v); break;
    }
}

/* ====================================================== overlap check */

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/* The metadata structure (qemu's name for it) that a write of
 * [offset, offset + len) would overwrite, NULL when none; `own` is the
 * kind being written (never reported).  Refcount blocks are taken from
 * the refcount table in memory, as they are before a rebuild switches.
 * The snapshot table is [snaptable, snaptable + snaptable_len) (length 0:
 * not checked).  qemu reports the first kind in its order. */
static const char *overlapped_metadata_with(struct qcow2_state *s, uint64_t offset, uint64_t len,
                                            const char *own, uint64_t snaptable,
                                            uint64_t snaptable_len)
{
    /* the kind being written is skipped, the others still count */
#define OTHER(kind) (!own || strcmp(own, kind) != 0)
    uint64_t cs = s->cluster_size;
    if (OTHER("qcow2_header") && overlaps(offset, len, 0, cs))
        return "qcow2_header";
    if (OTHER("active L1 table") &&
        overlaps(offset, len, s->l1_table_offset, (uint64_t)s->l1_size * 8))
        return "active L1 table";
    if (OTHER("refcount table") && overlaps(offset, len, s->refcount_table_offset,
                                            (uint64_t)s->refcount_table_clusters * cs))
        return "refcount table";
    for (uint64_t i = 0; OTHER("refcount block") && i < s->refcount_table_size; i++) {
        uint64_t b = qimg_round_down(s->refcount_table[i] & ~QCOW2_REFT_RESERVED, cs);
        if (b && overlaps(offset, len, b, cs))
            return "refcount block";
    }
    /* the check reads the table first: NULL only before it did.  Where
     * both overlap, qemu names an inactive L1 table before the snapshot
     * table. */
    for (uint32_t i = 0; OTHER("inactive L1 table") && s->snapshots && i < s->nb_snapshots; i++)
        if (overlaps(offset, len, s->snapshots[i].l1_table_offset,
                     (uint64_t)s->snapshots[i].l1_size * 8))
            return "inactive L1 table";
    if (OTHER("snapshot table") && overlaps(offset, len, snaptable, snaptable_len))
        return "snapshot table";
#undef OTHER
    return NULL;
}

static const char *overlapped_metadata(struct qcow2_state *s, uint64_t offset, uint64_t len,
                                       const char *own)
{
    return overlapped_metadata_with(s, offset, len, own, 0, 0);
}

static int report_overlap(struct qimg_image *img, const char *hit)
{
    qimg_check_log("qcow2: Marking image as corrupt: Preventing invalid write on metadata "
                   "(overlaps with %s); further corruption events will be suppressed", hit);
    if (qcow2_repair_mark_corrupt(img) < 0)
        qimg_error_clear();
    return -EIO;
}

int qcow2_repair_overlap_check_snaptable(struct qimg_image *img, uint64_t offset, uint64_t len,
                                         uint64_t old_table, uint64_t old_len)
{
    const char *hit = overlapped_metadata_with(qcow2_state(img), offset, len, NULL,
                                               old_table, old_len);
    return hit ? report_overlap(img, hit) : 0;
}

/* qemu refuses a write over other metadata: the image is marked corrupt. */
static int overlap_check(struct qimg_image *img, uint64_t offset, uint64_t len, const char *own)
{
    const char *hit = overlapped_metadata(qcow2_state(img), offset, len, own);
    return hit ? report_overlap(img, hit) : 0;
}

/* ============================================================ rebuild */

struct rebuild {
    struct qimg_image *img;
    struct qcow2_state *s;
    struct qcow2_refcount_map *map;
    uint64_t first_free;       /* every cluster below it is in use */
    uint64_t *blocks;          /* cluster of the new refcount block per table index, 0 none */
    uint64_t nb_blocks;        /* entries of blocks[] */
};

static uint64_t map_size(struct rebuild *b)
{
    return b->map->nb_clusters(b->map->opaque);
}

/* First fit from cluster `from`: the first run of n clusters with no
 * reference (clusters past the end of the map are free), counted as used
 * from now on. */
static int alloc_run(struct rebuild *b, uint64_t from, uint64_t n, uint64_t *start)
{
    uint64_t size = map_size(b), k = QIMG_MAX(from, b->first_free), run = 0;
    while (run < n) {
        if (k >= size || b->map->get(b->map->opaque, k) == 0)
            run++;
        else
            run = 0;
        k++;
    }
    *start = k - n;
    for (uint64_t i = *start; i < k; i++) {
        int r = b->map->set(b->map->opaque, i, 1);
        if (r < 0)
            return r;
    }
    while (b->first_free < map_size(b) && b->map->get(b->map->opaque, b->first_free) != 0)
        b->first_free++;
    return 0;
}

static int grow_blocks(struct rebuild *b, uint64_t n)
{
    if (n <= b->nb_blocks)
        return 0;
    uint64_t *t = qimg_calloc_from_image(n, sizeof *t, "refcount table");
    if (!t)
        return -ENOMEM;
    if (b->nb_blocks)
        memcpy(t, b->blocks, b->nb_blocks * sizeof *t);
    free(b->blocks);
    b->blocks = t;
    b->nb_blocks = n;
    return 0;
}

static bool range_in_use(struct rebuild *b, uint64_t ti)
{
    uint64_t E = b->s->refcount_block_entries, end = QIMG_MIN((ti + 1) * E, map_size(b));
    for (uint64_t k = ti * E; k < end; k++)
        if (b->map->get(b->map->opaque, k))
            return true;
    return false;
}

/* A refcount block for every range of clusters that holds a cluster in
 * use, ranges in order.  A block goes to the first free cluster at or
 * after the start of its own range (as qemu places them: never into a
 * range whose block is already done); it may land in a later range,
 * which then needs a block of its own (the loop reaches it). */
static int place_refblocks(struct rebuild *b)
{
    uint64_t E = b->s->refcount_block_entries;
    for (uint64_t ti = 0; ti * E < map_size(b); ti++) {
        int r = grow_blocks(b, ti + 1);
        if (r < 0)
            return r;
        if (b->blocks[ti] || !range_in_use(b, ti))
            continue;
        uint64_t k;
        r = alloc_run(b, ti * E, 1, &k);
        if (r < 0)
            return r;
        r = grow_blocks(b, ti + 1);
        if (r < 0)
            return r;
        b->blocks[ti] = k;
    }
    return 0;
}

static int write_refblocks(struct rebuild *b)
{
    struct qcow2_state *s = b->s;
    uint64_t E = s->refcount_block_entries;
    CLEANUP_FREE uint8_t *buf = qimg_alloc_from_image(s->cluster_size, "refcount block");
    if (!buf)
        return -ENOMEM;
    for (uint64_t ti = 0; ti < b->nb_blocks; ti++) {
        if (!b->blocks[ti])
            continue;
        memset(buf, 0, s->cluster_size);
        uint64_t end = QIMG_MIN((ti + 1) * E, map_size(b));
        for (uint64_t k = ti * E; k < end; k++)
            refblock_put(s, buf, k - ti * E, b->map->get(b->map->opaque, k));
        int r = qcow2_repair_overlap_check_snaptable(b->img, b->blocks[ti] << s->cluster_bits,
                                                     s->cluster_size, b->map->snaptable_offset,
                                                     b->map->snaptable_size);
        if (r == 0)
            r = qimg_io_pwrite(b->img->file, buf, s->cluster_size,
                               b->blocks[ti] << s->cluster_bits);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The header's refcount table offset and size, in one write. */
static int write_reftable_header(struct qimg_image *img, uint64_t offset, uint32_t clusters)
{
    uint8_t hdr[12];
    qimg_put_be64(hdr, offset);
    qimg_put_be32(hdr + 8, clusters);
    int r = qimg_io_pwrite(img->file, hdr, sizeof hdr, QCOW2_HDR_REFCOUNT_TABLE_OFFSET);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

static int install_reftable(struct rebuild *b, uint64_t table_cluster, uint64_t clusters)
{
    struct qcow2_state *s = b->s;
    uint64_t entries = clusters * s->cluster_size / sizeof(uint64_t);
    uint64_t *table = qimg_calloc_from_image(entries, sizeof *table, "refcount table");
    uint8_t *be = qimg_calloc_from_image(clusters, s->cluster_size, "refcount table");
    if (!table || !be) {
        free(table);
        free(be);
        return -ENOMEM;
    }
    for (uint64_t ti = 0; ti < b->nb_blocks && ti < entries; ti++) {
        table[ti] = b->blocks[ti] << s->cluster_bits;
        qimg_put_be64(be + 8 * ti, table[ti]);
    }
    uint64_t offset = table_cluster << s->cluster_bits;
    int r = qcow2_repair_overlap_check_snaptable(b->img, offset, clusters * s->cluster_size,
                                                 b->map->snaptable_offset,
                                                 b->map->snaptable_size);
    if (r == 0)
        r = qimg_io_pwrite(b->img->file, be, clusters * s->cluster_size, offset);
    free(be);
    if (r == 0)
        r = qimg_io_flush(b->img->file);
    if (r == 0)
        r = write_reftable_header(b->img, offset, (uint32_t)clusters);
    if (r < 0) {
        free(table);
        return r;
    }
    free(s->refcount_table);
    s->refcount_table = table;
    s->refcount_table_size = entries;
    s->refcount_table_offset = offset;
    s->refcount_table_clusters = (uint32_t)clusters;
    return 0;
}

int qcow2_repair_rebuild_refcounts(struct qimg_image *img, struct qcow2_refcount_map *map,
                                   bool writes_refused)
{
    struct qcow2_state *s = qcow2_state(img);
    struct rebuild b = { .img = img, .s = s, .map = map };
    uint64_t E = s->refcount_block_entries, per_cluster = s->cluster_size / sizeof(uint64_t);
    uint64_t table_cluster = 0, table_clusters = 0;
    int r = 0;
    /* refcount blocks, then the table after them; the table may need
     * blocks for its own clusters, and more blocks a larger table */
    for (;;) {
        r = place_refblocks(&b);
        if (r < 0)
            goto out;
        uint64_t want = qimg_div_round_up(qimg_div_round_up(map_size(&b), E), per_cluster);
        if (want <= table_clusters)
            break;
        for (uint64_t k = 0; k < table_clusters; k++)
            map->set(map->opaque, table_cluster + k, 0);
        if (table_cluster < b.first_free)
            b.first_free = table_cluster;
        if (want * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
            r = qimg_error(-EFBIG, "qcow2: the refcount table would exceed %llu bytes",
                           QCOW2_MAX_REFTABLE_BYTES);
            goto out;
        }
        table_clusters = want;
        r = alloc_run(&b, 0, table_clusters, &table_cluster);
        if (r < 0)
            goto out;
    }
    if (writes_refused) {
        r = -EIO;
        qimg_check_log(QCOW2_LOG_ERROR_REPORT "ERROR writing refblock: %s", strerror(EIO));
        goto out;
    }
    r = write_refblocks(&b);
    if (r < 0) {
        qimg_check_log(QCOW2_LOG_ERROR_REPORT "ERROR writing refblock: %s", strerror(-r));
        goto out;
    }
    r = install_reftable(&b, table_cluster, table_clusters);
    if (r < 0) {
        qimg_check_log(QCOW2_LOG_ERROR_REPORT "ERROR writing reftable: %s", strerror(-r));
        goto out;
    }
    drop_refblock_cache(s);
    qcow2_note_used(s, 0, map_size(&b));
out:
    free(b.blocks);
    return r;
}

int qcow2_repair_extend_file(struct qimg_image *img, uint64_t end)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = qimg_io_truncate(img->file, end);
    if (r < 0)
        return r;
    if (end > s->file_size)
        s->file_size = end;
    return 0;
}

/* ====================================================== COPIED flags */

int qcow2_repair_l1_entry(struct qimg_image *img, uint32_t l1_index, uint64_t entry)
{
    struct qcow2_state *s = qcow2_state(img);
    /* qemu writes (and checks) the 512 bytes of the table around the entry */
    uint64_t sector = s->l1_table_offset + 8ull * (l1_index & ~63u);
    int r = overlap_check(img, sector, 512, "active L1 table");
    if (r < 0)
        return r;
    uint8_t be[8];
    qimg_put_be64(be, entry);
    r = qimg_io_pwrite(img->file, be, sizeof be, s->l1_table_offset + 8ull * l1_index);
    if (r < 0)
        return r;
    s->l1_table[l1_index] = entry;
    return 0;
}

int qcow2_repair_overlap_check(struct qimg_image *img, uint64_t offset, uint64_t len)
{
    return overlap_check(img, offset, len, NULL);
}

int qcow2_repair_write_l2(struct qimg_image *img, uint64_t l2_offset, const uint8_t *table)
{
    struct qcow2_state *s = qcow2_state(img);
    qcow2_l2_cache_drop(img, l2_offset);
    return qimg_io_pwrite(img->file, table, s->l2_table_bytes, l2_offset);
}

int qcow2_repair_l2_entry(struct qimg_image *img, uint64_t l2_offset, uint64_t index,
                          uint64_t entry)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = overlap_check(img, l2_offset, s->l2_table_bytes, NULL);
    if (r < 0)
        return r;
    qcow2_l2_cache_drop(img, l2_offset);
    uint8_t be[8];
    qimg_put_be64(be, entry);
    return qimg_io_pwrite(img->file, be, sizeof be, l2_offset + index * s->l2_entry_bytes);
}

/* ====================================================== feature bits */

static int write_incompat(struct qimg_image *img, uint64_t features)
{
    struct qcow2_state *s = qcow2_state(img);
    if (s->version < 3 || features == s->incompatible_features)
        return 0;
    uint8_t be[8];
    qimg_put_be64(be, features);
    int r = qimg_io_flush(img->file);
    if (r == 0)
        r = qimg_io_pwrite(img->file, be, sizeof be, QCOW2_HDR_INCOMPATIBLE_FEATURES);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        s->incompatible_features = features;
    return r;
}

int qcow2_repair_mark_corrupt(struct qimg_image *img)
{
    return write_incompat(img, qcow2_state(img)->incompatible_features | QCOW2_INCOMPAT_CORRUPT);
}

int qcow2_repair_mark_clean(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = write_incompat(img, s->incompatible_features &
                           ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT));
    if (r == 0 && s->ws)
        s->ws->marked_dirty = false;
    return r;
}

/* ====================================================== dirty images */

int qcow2_repair_dirty_on_open(struct qimg_image *img, unsigned flags)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws || (flags & QIMG_OPEN_CHECK) || !(s->incompatible_features & QCOW2_INCOMPAT_DIRTY))
        return 0;
    struct qimg_check_result res;
    int r = qcow2_check(img, &res, QIMG_FIX_LEAKS | QIMG_FIX_ERRORS);
    if (r == 0 && res.check_errors)
        r = -EIO;
    if (r < 0)
        return qimg_error(r, "Could not repair dirty image: %s", strerror(-r));
    return 0;
}
