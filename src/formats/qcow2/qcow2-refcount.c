/* qimg - qcow2 refcounts for writing: a small cache of refcount blocks,
 * get/set for every entry width (1 to 64 bits), new refcount blocks
 * (placed inside the range they describe, so they count themselves) and
 * refcount table growth.
 *
 * Everything here runs with img->lock held.  Ordering on disk, so that a
 * crash leaves at worst leaked clusters: a new refcount block is written
 * before the table entry that points to it; a new table is written (with
 * its blocks) before the header points to it; dirty blocks are written
 * before any L2 table (qcow2-read.c calls qcow2_refcount_flush first). */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"

void qcow2_note_used(struct qcow2_state *s, uint64_t cluster, uint64_t count)
{
    uint64_t end = (cluster + count) << s->cluster_bits;
    if (end > s->file_size)
        s->file_size = end;
}

int qcow2_refcount_init(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    w->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++) {
        w->refblocks[i].data = qimg_alloc_from_image(s->cluster_size, "refcount block");
        if (!w->refblocks[i].data)
            return -ENOMEM;
    }
    return 0;
}

void qcow2_refcount_free(struct qcow2_state *s)
{
    if (!s->ws)
        return;
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++)
        free(s->ws->refblocks[i].data);
}

static void refblock_set(const struct qcow2_state *s, uint8_t *b, uint64_t i, uint64_t v)
{
    unsigned shift;
    switch (s->refcount_order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << s->refcount_order;
        unsigned per_byte = 8 / bits;
        shift = (unsigned)(i % per_byte) * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        b[i / per_byte] = (uint8_t)((b[i / per_byte] & ~mask) | ((v << shift) & mask));
        break;
    }
    case 3: b[i] = (uint8_t)v; break;
    case 4: qimg_put_be16(b + 2 * i, (uint16_t)v); break;
    case 5: qimg_put_be32(b + 4 * i, (uint32_t)v); break;
    default: qimg_put_be64(b + 8 * i, v); break;
    }
}

static int write_block(struct qimg_image *img, struct qcow2_refblock *rb)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!rb->dirty)
        return 0;
    qimg_io_event(img->file, QIMG_EV_REFBLOCK_UPDATE_PART);
    int r = qimg_io_pwrite(img->file, rb->data, s->cluster_size, rb->offset);
    if (r < 0)
        return qimg_error(r, "Could not write refcount block: %s", strerror(-r));
    rb->dirty = false;
    return 0;
}

int qcow2_refcount_flush(struct qimg_image *img)
{
    struct qcow2_wstate *w = qcow2_state(img)->ws;
    for (int i = 0; w && i < QCOW2_REFBLOCK_CACHE; i++) {
        int r = write_block(img, &w->refblocks[i]);
        if (r < 0)
            return r;
    }
    return 0;
}

/* A cache slot for the block at offset: the block itself when cached,
 * else the least recently used slot, written back and emptied. */
static int refblock_slot(struct qimg_image *img, uint64_t offset, struct qcow2_refblock **out,
                         bool *hit)
{
    struct qcow2_wstate *w = qcow2_state(img)->ws;
    struct qcow2_refblock *victim = &w->refblocks[0];
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++) {
        struct qcow2_refblock *rb = &w->refblocks[i];
        if (rb->offset == offset) {
            rb->last_use = ++w->refblock_clock;
            *out = rb;
            *hit = true;
            return 0;
        }
        if (rb->last_use < victim->last_use)
            victim = rb;
    }
    int r = write_block(img, victim);
    if (r < 0)
        return r;
    victim->offset = 0;
    victim->last_use = ++w->refblock_clock;
    *out = victim;
    *hit = false;
    return 0;
}

/* The cached block at offset, read when missing.  Updates announce
 * refblock_load whether cached or not, lookups never (qemu's events). */
static int load_refblock(struct qimg_image *img, uint64_t offset, uint64_t table_index,
                         bool for_update, struct qcow2_refblock **out)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!qimg_is_aligned(offset, s->cluster_size) ||
        !qimg_range_ok(offset, s->cluster_size, s->file_size))
        return qimg_error(-EIO, "qcow2: Refblock offset %#" PRIx64 " is invalid (reftable index %#"
                          PRIx64 ")", offset, table_index);
    if (for_update)
        qimg_io_event(img->file, QIMG_EV_REFBLOCK_LOAD);
    bool hit;
    int r = refblock_slot(img, offset, out, &hit);
    if (r < 0 || hit)
        return r;
    r = qimg_io_pread(img->file, (*out)->data, s->cluster_size, offset);
    if (r < 0)
        return qimg_error(r, "Could not read refcount block: %s", strerror(-r));
    (*out)->offset = offset;
    (*out)->dirty = false;
    return 0;
}

static uint64_t block_offset(const struct qcow2_state *s, uint64_t table_index)
{
    if (table_index >= s->refcount_table_size)
        return 0;
    return s->refcount_table[table_index] & ~QCOW2_REFT_RESERVED;
}

int qcow2_get_refcount(struct qimg_image *img, uint64_t cluster, uint64_t *rc)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t ti = cluster / s->refcount_block_entries;
    uint64_t off = block_offset(s, ti);
    *rc = 0;
    if (off == 0)
        return 0;
    struct qcow2_refblock *rb;
    int r = load_refblock(img, off, ti, false, &rb);
    if (r < 0)
        return r;
    *rc = qcow2_refblock_get(s, rb->data, cluster % s->refcount_block_entries);
    return 0;
}

int qcow2_update_refcounts(struct qimg_image *img, uint64_t cluster, uint64_t count, int64_t delta)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    uint64_t E = s->refcount_block_entries;
    while (count > 0) {
        uint64_t ti = cluster / E, i = cluster % E;
        uint64_t n = QIMG_MIN(count, E - i);
        uint64_t off = block_offset(s, ti);
        /* qemu looks a block up for an update through its allocation
         * function, whose event comes first */
        qimg_io_event(img->file, QIMG_EV_REFBLOCK_ALLOC);
        if (off == 0)
            return qimg_error(-EIO, "qcow2: no refcount block for cluster %#" PRIx64, cluster);
        struct qcow2_refblock *rb;
        int r = load_refblock(img, off, ti, true, &rb);
        if (r < 0)
            return r;
        for (uint64_t k = 0; k < n; k++) {
            uint64_t v = qcow2_refblock_get(s, rb->data, i + k);
            if (delta < 0 && v < (uint64_t)-delta)   /* qemu's code for it */
                return qimg_error(-EINVAL, "qcow2: refcount of cluster %#" PRIx64 " would go "
                                  "below zero", cluster + k);
            if (delta > 0 && w->refcount_max - v < (uint64_t)delta)
                return qimg_error(-ERANGE, "qcow2: refcount of cluster %#" PRIx64 " would "
                                  "exceed %" PRIu64, cluster + k, w->refcount_max);
            v += (uint64_t)delta;
            refblock_set(s, rb->data, i + k, v);
            if (v == 0 && cluster + k < w->free_cluster_index)
                w->free_cluster_index = cluster + k;
        }
        rb->dirty = true;
        cluster += n, count -= n;
    }
    return 0;
}

int qcow2_refblock_peek(struct qimg_image *img, uint64_t ti, const uint8_t **data)
{
    uint64_t off = block_offset(qcow2_state(img), ti);
    *data = NULL;
    if (off == 0)
        return 0;
    struct qcow2_refblock *rb;
    int r = load_refblock(img, off, ti, false, &rb);
    if (r == 0)
        *data = rb->data;
    return r;
}

/* ------------------------------------------------------ table growth */

static int write_table_entry(struct qimg_image *img, uint64_t ti)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t be[8];
    qimg_put_be64(be, s->refcount_table[ti]);
    qimg_io_event(img->file, QIMG_EV_REFTABLE_UPDATE);
    int r = qimg_io_pwrite(img->file, be, 8, s->refcount_table_offset + ti * 8);
    return r < 0 ? qimg_error(r, "Could not write refcount table: %s", strerror(-r)) : 0;
}

/* A refcount block for table index ti at cluster `at`, which lies in the
 * block's own range and is free: the block counts itself. */
static int new_refblock(struct qimg_image *img, uint64_t ti, uint64_t at)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t offset = at << s->cluster_bits;
    struct qcow2_refblock *rb;
    bool hit;
    int r = refblock_slot(img, offset, &rb, &hit);
    if (r < 0)
        return r;
    memset(rb->data, 0, s->cluster_size);
    if (at / s->refcount_block_entries == ti)     /* in its own range: counts itself */
        refblock_set(s, rb->data, at % s->refcount_block_entries, 1);
    rb->offset = offset;
    rb->dirty = true;
    qcow2_note_used(s, at, 1);
    r = write_block(img, rb);
    if (r < 0)
        return r;
    s->refcount_table[ti] = offset;
    return write_table_entry(img, ti);
}

/* The table is too small for index ti: build a larger one together with
 * the refcount blocks for its own clusters, all placed from cluster `at`
 * (beyond what the old table covers, hence free), then point the header
 * to it and free the old table. */
static int grow_table(struct qimg_image *img, uint64_t ti, uint64_t at)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries, cs = s->cluster_size;
    uint64_t entries_per_cluster = cs / 8;
    uint64_t nblocks = 1, tclusters = 0, new_entries = 0;
    for (int iter = 0; iter < 64; iter++) {
        uint64_t end = at + nblocks + tclusters;          /* exclusive */
        uint64_t last_ti = (end - 1) / E;
        uint64_t want = QIMG_MAX(QIMG_MAX(last_ti, ti) + 1, s->refcount_table_size * 3 / 2);
        new_entries = qimg_div_round_up(want, entries_per_cluster) * entries_per_cluster;
        uint64_t t = new_entries / entries_per_cluster;
        uint64_t b = (at + nblocks + t - 1) / E - at / E + 1;
        if (t == tclusters && b == nblocks)
            break;
        tclusters = t;
        nblocks = QIMG_MAX(b, nblocks);
    }
    if (new_entries * 8 > QCOW2_MAX_REFTABLE_BYTES)
        return qimg_error(-EFBIG, "qcow2: the refcount table would exceed %llu bytes",
                          QCOW2_MAX_REFTABLE_BYTES);
    uint64_t blocks_start = at, table_start = at + nblocks;
    uint64_t area_end = table_start + tclusters;
    CLEANUP_FREE uint8_t *blk = qimg_xcalloc(1, cs);
    uint64_t *table = qimg_xcalloc(new_entries, 8);
    memcpy(table, s->refcount_table, s->refcount_table_size * 8);
    int r = 0;
    for (uint64_t k = 0; k < nblocks && r == 0; k++) {
        uint64_t bti = at / E + k;
        memset(blk, 0, cs);
        for (uint64_t c = QIMG_MAX(bti * E, at); c < QIMG_MIN((bti + 1) * E, area_end); c++)
            refblock_set(s, blk, c % E, 1);
        uint64_t boff = (blocks_start + k) << s->cluster_bits;
        qimg_io_event(img->file, QIMG_EV_REFBLOCK_ALLOC_WRITE_BLOCKS);
        r = qimg_io_pwrite(img->file, blk, cs, boff);
        table[bti] = boff;
    }
    CLEANUP_FREE uint8_t *be = qimg_xmalloc(tclusters * cs);
    memset(be, 0, tclusters * cs);
    for (uint64_t k = 0; k < new_entries; k++)
        qimg_put_be64(be + 8 * k, table[k]);
    qimg_io_event(img->file, QIMG_EV_REFBLOCK_ALLOC_WRITE_TABLE);
    if (r == 0)
        r = qimg_io_pwrite(img->file, be, tclusters * cs, table_start << s->cluster_bits);
    if (r == 0)
        r = qimg_io_flush(img->file);
    uint8_t hdr[12];
    qimg_put_be64(hdr, table_start << s->cluster_bits);
    qimg_put_be32(hdr + 8, (uint32_t)tclusters);
    qimg_io_event(img->file, QIMG_EV_REFBLOCK_ALLOC_SWITCH_TABLE);
    if (r == 0)
        r = qimg_io_pwrite(img->file, hdr, 12, QCOW2_HDR_REFCOUNT_TABLE_OFFSET);
    if (r < 0) {
        free(table);
        return qimg_error(r, "Could not grow the refcount table: %s", strerror(-r));
    }
    uint64_t old_off = s->refcount_table_offset, old_clusters = s->refcount_table_clusters;
    free(s->refcount_table);
    s->refcount_table = table;
    s->refcount_table_size = new_entries;
    s->refcount_table_offset = table_start << s->cluster_bits;
    s->refcount_table_clusters = (uint32_t)tclusters;
    qcow2_note_used(s, at, area_end - at);
    /* the old table's clusters are free now */
    return qcow2_free_clusters(img, old_off, old_clusters * cs, false);
}

void qcow2_refblock_forget(struct qimg_image *img, uint64_t offset)
{
    struct qcow2_wstate *w = qcow2_state(img)->ws;
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++)
        if (w->refblocks[i].offset == offset) {
            w->refblocks[i].offset = 0;
            w->refblocks[i].dirty = false;
        }
}

int qcow2_new_refblock_at(struct qimg_image *img, uint64_t ti, uint64_t at)
{
    return new_refblock(img, ti, at);
}

int qcow2_ensure_refblocks(struct qimg_image *img, uint64_t cluster, uint64_t count)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries;
    for (uint64_t ti = cluster / E; ti <= (cluster + count - 1) / E; ti++) {
        if (block_offset(s, ti) != 0)
            continue;
        /* clusters without a block have refcount 0: take the first one of
         * the range asked for inside this block's range */
        uint64_t at = QIMG_MAX(cluster, ti * E);
        int r = ti < s->refcount_table_size ? new_refblock(img, ti, at) : grow_table(img, ti, at);
        return r < 0 ? r : 1;
    }
    return 0;
}
