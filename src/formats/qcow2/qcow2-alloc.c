/* qimg - qcow2 cluster allocation as qemu does it: the first run of n
 * contiguous free clusters from a hint (runs too short are passed over),
 * new refcount blocks placed right after the run they are needed for, a
 * byte allocator for compressed data, and freeing.
 * All with img->lock held. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"

/* Host offsets must fit the L2 entry's offset bits. */
#define QCOW2_MAX_HOST_OFFSET (QCOW2_OFFSET_MASK + 512)

/* Refcount blocks are scanned in place, a block at a time: the search
 * for free clusters looks at the cached block's bytes directly (a word at
 * a time over runs of zeros) instead of asking for each cluster. */

/* First entry in [i, end) of refcount block b that is nonzero, or end. */
static uint64_t first_used(const struct qcow2_state *s, const uint8_t *b, uint64_t i, uint64_t end)
{
    if (s->refcount_order < 3) {
        for (; i < end; i++)
            if (qcow2_refblock_get(s, b, i))
                return i;
        return end;
    }
    unsigned shift = s->refcount_order - 3;      /* bytes per entry: 1 << shift */
    uint64_t p = i << shift, pend = end << shift;
    while (p < pend && (p & 7))
        if (b[p++])
            return (p - 1) >> shift;
    for (; p + 8 <= pend; p += 8) {
        uint64_t w;
        memcpy(&w, b + p, 8);
        if (w)
            break;
    }
    for (; p < pend; p++)
        if (b[p])
            return p >> shift;
    return end;
}

/* First entry in [i, end) of refcount block b that is zero, or end. */
static uint64_t first_free(const struct qcow2_state *s, const uint8_t *b, uint64_t i, uint64_t end)
{
    if (s->refcount_order == 4) {           /* the default: 16 bits */
        for (; i < end; i++)
            if ((b[2 * i] | b[2 * i + 1]) == 0)
                return i;
        return end;
    }
    for (; i < end; i++)
        if (qcow2_refblock_get(s, b, i) == 0)
            return i;
    return end;
}

static int too_large(void)
{
    return qimg_error(-EFBIG, "qcow2: the image file would become too large");
}

/* The first n contiguous free clusters at or after `from` (clusters
 * without a refcount block are free). */
static int find_free_run(struct qimg_image *img, uint64_t from, uint64_t n, uint64_t *start)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries;
    uint64_t max_cluster = QCOW2_MAX_HOST_OFFSET >> s->cluster_bits;
    uint64_t c = from, run = 0;
    while (run < n) {
        if (c > max_cluster)
            return too_large();
        uint64_t ti = c / E, i = c % E;
        const uint8_t *b;
        int r = qcow2_refblock_peek(img, ti, &b);
        if (r < 0)
            return r;
        if (!b) {                       /* no block: all free */
            uint64_t take = QIMG_MIN(n - run, E - i);
            if (run == 0)
                *start = c;
            run += take;
            c += take;
            continue;
        }
        if (run == 0) {
            uint64_t j = first_free(s, b, i, E);
            c = ti * E + j;
            if (j == E)
                continue;           /* the whole rest of the block is used */
            *start = c;
            i = j;
        }
        uint64_t limit = QIMG_MIN(E, i + (n - run));
        uint64_t k = first_used(s, b, i, limit);
        if (k < limit) {            /* too short: look again after it */
            run = 0;
            c = ti * E + k + 1;
        } else {
            run += k - i;
            c = ti * E + k;
        }
    }
    return 0;
}

/* The refcount table is full and block ti (for `cluster`) is missing:
 * the block goes to free cluster `at` in its own range, then a new table
 * (room to grow by half) with the blocks it lacks is built after the
 * range of every block in use, as qemu does. */
static int grow_with_block(struct qimg_image *img, uint64_t ti, uint64_t cluster, uint64_t at)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries, cs = s->cluster_size;
    CLEANUP_FREE uint8_t *blk = qimg_xcalloc(1, cs);
    uint64_t i = at % E;
    if (s->refcount_order < 3)
        blk[i >> (3 - s->refcount_order)] |= (uint8_t)(1u << ((i << s->refcount_order) & 7));
    else
        blk[((i + 1) << (s->refcount_order - 3)) - 1] = 1;
    qimg_io_event(img->file, QIMG_EV_REFBLOCK_ALLOC_WRITE);
    int r = qimg_io_pwrite(img->file, blk, cs, at * cs);
    if (r < 0)
        return qimg_error(r, "Could not write refcount block: %s", strerror(-r));
    qcow2_note_used(s, at, 1);
    uint64_t blocks_used = qimg_div_round_up(QIMG_MAX(cluster, at) + 1, E);
    uint64_t end;
    return qcow2_refcount_area(img, blocks_used * E * cs, 0, false, ti, at * cs, &end);
}

/* qemu's placement of missing refcount block ti, needed for `cluster`:
 * the first free cluster from `from` (right after the run being
 * allocated).  Inside the range the block describes, it counts itself
 * (a full table is rebuilt then); elsewhere it is counted by the block of
 * its own range, which is placed first the same way when missing (the
 * caller then starts over).  1: placed, 0: left to the generic path. */
static int place_refblock(struct qimg_image *img, uint64_t ti, uint64_t cluster, uint64_t from, int depth)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries;
    uint64_t at = 0;
    int r = find_free_run(img, from, 1, &at);
    if (r < 0)
        return r;
    if (at / E == ti) {
        r = ti < s->refcount_table_size ? qcow2_new_refblock_at(img, ti, at)
                                        : grow_with_block(img, ti, cluster, at);
        return r < 0 ? r : 1;
    }
    if (ti >= s->refcount_table_size || depth > 2)
        return 0;
    const uint8_t *b;
    r = qcow2_refblock_peek(img, at / E, &b);
    if (r < 0)
        return r;
    if (!b)            /* the block that would count it first */
        return place_refblock(img, at / E, at, at + 1, depth + 1);
    r = qcow2_update_refcounts(img, at, 1, 1);
    if (r == 0)
        r = qcow2_new_refblock_at(img, ti, at);
    return r < 0 ? r : 1;
}

/* The first refcount block [start, start+n) lacks, placed as qemu does;
 * the search then starts over from the run.  1: placed, 0: none missing
 * (or left to the generic path). */
static int place_refblock_after(struct qimg_image *img, uint64_t start, uint64_t n)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries;
    for (uint64_t ti = start / E; ti <= (start + n - 1) / E; ti++) {
        const uint8_t *b;
        int r = qcow2_refblock_peek(img, ti, &b);
        if (r < 0)
            return r;
        if (b)
            continue;
        r = place_refblock(img, ti, QIMG_MAX(start, ti * E), start + n, 0);
        if (r > 0)
            s->ws->free_cluster_index = start;
        return r;
    }
    return 0;
}

int qcow2_alloc_clusters(struct qimg_image *img, uint64_t n, uint64_t *host, uint64_t *got)
{
    qimg_io_event(img->file, QIMG_EV_CLUSTER_ALLOC);
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    for (;;) {
        uint64_t start = 0;
        int r = find_free_run(img, w->free_cluster_index, n, &start);
        if (r < 0)
            return r;
        if (((start + n) << s->cluster_bits) > QCOW2_MAX_HOST_OFFSET ||
            start + n > (UINT64_MAX >> s->cluster_bits))
            return too_large();
        r = place_refblock_after(img, start, n);
        if (r == 0)
            r = qcow2_ensure_refblocks(img, start, n);
        if (r < 0)
            return r;
        if (r > 0)
            continue;       /* new metadata took clusters: look again */
        r = qcow2_update_refcounts(img, start, n, 1);
        if (r < 0)
            return r;
        w->free_cluster_index = start + n;
        qcow2_note_used(s, start, n);
        *host = start << s->cluster_bits;
        *got = n;
        return 0;
    }
}

/* Compressed clusters are packed: the next one starts where the last one
 * ended, in the same host cluster while it has room and its refcount can
 * grow, or spilling into the next cluster when that one is free. */
int qcow2_alloc_bytes(struct qimg_image *img, uint64_t size, uint64_t *host)
{
    qimg_io_event(img->file, QIMG_EV_CLUSTER_ALLOC_BYTES);
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    uint64_t cs = s->cluster_size;
    uint64_t off = w->free_byte_offset;
    int r;
    if (off && qimg_is_aligned(off, cs))
        off = 0;
    if (off) {
        uint64_t rc;
        r = qcow2_get_refcount(img, off >> s->cluster_bits, &rc);
        if (r < 0)
            return r;
        if (rc == w->refcount_max)
            off = 0;
    }
    uint64_t room = off ? cs - (off & (cs - 1)) : 0;
    if (off && size <= room) {
        r = qcow2_update_refcounts(img, off >> s->cluster_bits, 1, 1);
        if (r < 0)
            return r;
        *host = off;
    } else {
        /* a new cluster for (the rest of) the data: size < one cluster */
        uint64_t start, got;
        r = qcow2_alloc_clusters(img, 1, &start, &got);
        if (r < 0)
            return r;
        if (off && start == qimg_round_down(off, cs) + cs) {
            /* contiguous: the data spans from the old cluster */
            r = qcow2_update_refcounts(img, off >> s->cluster_bits, 1, 1);
            if (r < 0)
                return r;
            *host = off;
        } else {
            *host = start;
        }
    }
    w->free_byte_offset = *host + size;
    return 0;
}

static void queue_discard(struct qcow2_wstate *w, uint64_t start, uint64_t end)
{
    if (w->nb_discards && w->discards[w->nb_discards - 1][1] == start) {
        w->discards[w->nb_discards - 1][1] = end;
        return;
    }
    if (w->nb_discards == w->discards_cap) {
        w->discards_cap = w->discards_cap ? w->discards_cap * 2 : 64;
        w->discards = qimg_xrealloc(w->discards, w->discards_cap * sizeof *w->discards);
    }
    w->discards[w->nb_discards][0] = start;
    w->discards[w->nb_discards][1] = end;
    w->nb_discards++;
}

void qcow2_discards_begin(struct qimg_image *img)
{
    qcow2_state(img)->ws->batch_discards = true;
}

static int cmp_range(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

int qcow2_discards_end(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    w->batch_discards = false;
    qsort(w->discards, w->nb_discards, sizeof *w->discards, cmp_range);
    int r = 0;
    for (size_t i = 0; i < w->nb_discards && r == 0; ) {
        uint64_t start = w->discards[i][0], end = w->discards[i][1];
        for (i++; i < w->nb_discards && w->discards[i][0] <= end; i++)
            end = QIMG_MAX(end, w->discards[i][1]);
        /* only what is still free, in runs */
        uint64_t c = start >> s->cluster_bits, last = end >> s->cluster_bits, run = c;
        for (; c <= last && r == 0; c++) {
            uint64_t rc = 1;
            if (c < last)
                r = qcow2_get_refcount(img, c, &rc);
            if (rc && c > run && img->file->ops->discard)
                img->file->ops->discard(img->file, run << s->cluster_bits, (c - run) << s->cluster_bits);
            if (rc)
                run = c + 1;
        }
    }
    free(w->discards);
    w->discards = NULL;
    w->nb_discards = w->discards_cap = 0;
    return r;
}

int qcow2_free_clusters(struct qimg_image *img, uint64_t host, uint64_t bytes, bool discard)
{
    struct qcow2_state *s = qcow2_state(img);
    qimg_io_event(img->file, QIMG_EV_CLUSTER_FREE);   /* as qemu's, even for nothing */
    if (bytes == 0)
        return 0;
    uint64_t first = host >> s->cluster_bits;
    uint64_t last = (host + bytes - 1) >> s->cluster_bits;
    int r = qcow2_update_refcounts(img, first, last - first + 1, -1);
    if (r < 0 || !discard)
        return r;
    if (s->ws->batch_discards) {
        queue_discard(s->ws, first << s->cluster_bits, (last + 1) << s->cluster_bits);
        return 0;
    }
    /* give the host space back where clusters became free */
    for (uint64_t c = first; c <= last; c++) {
        uint64_t rc;
        if (qcow2_get_refcount(img, c, &rc) == 0 && rc == 0 && img->file->ops->discard)
            img->file->ops->discard(img->file, c << s->cluster_bits, s->cluster_size);
    }
    return 0;
}

int qcow2_free_l2_entry(struct qimg_image *img, uint64_t entry, bool discard)
{
    struct qcow2_state *s = qcow2_state(img);
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off = entry & s->cluster_offset_mask;
        uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
        return qcow2_free_clusters(img, off & ~511ull, sectors * 512, discard);
    }
    uint64_t off = entry & QCOW2_OFFSET_MASK;
    if (off == 0 || qcow2_has_data_file(s))
        return 0;
    return qcow2_free_clusters(img, off, s->cluster_size, discard);
}
