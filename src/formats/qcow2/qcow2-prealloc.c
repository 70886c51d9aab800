/* qimg - qcow2 resize with preallocation (metadata, falloc, full).
 *
 * What qemu-img 7.2 does when it grows a qcow2 image with preallocation,
 * as observed (qemu-img resize, then map, check and the file's layout):
 *  - metadata (and every mode with an external data file): the new guest
 *    range gets host clusters and L2 entries, allocated as a write would
 *    allocate them: per L2 table, the table first, then one contiguous
 *    run of data clusters (the first run of a request anywhere free, the
 *    following ones right after the previous run or the request ends);
 *    nothing is written but the copy-on-write parts of a partly covered
 *    first and last cluster (zeros, or the old data of the first one).
 *    The file (or the data file) is then made to reach the last byte
 *    mapped: sparse for metadata, fallocated or written for falloc/full.
 *  - falloc/full without a data file: a new, exactly sized refcount table
 *    (with the refcount blocks it needs) goes right after the last used
 *    cluster, counting the whole new area; the data clusters follow it;
 *    the file is grown to their end with fallocate or written zeros; then
 *    the L2 entries are set (L2 tables come from the normal allocator, so
 *    the freed old refcount table's cluster first).  A partly covered first
 *    cluster moves to the new area with its old data.
 * New entries keep their subcluster bitmap (extended L2): the clusters
 * are allocated, their subclusters still read as before.
 */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"
#include "qcow2-create.h"

#define PREALLOC_MAX_REQUEST 0x7ffffe00ull     /* bytes of one allocation request */
#define PREALLOC_MAX_REFTABLE_ENTRIES (8ull << 20)

enum prealloc_mode { MODE_OFF, MODE_METADATA, MODE_FALLOC, MODE_FULL };

/* The old bytes of the first guest cluster that a preallocation copies
 * into a new host cluster: read before img->lock is taken. */
struct head_cow {
    uint64_t guest;                /* start of the cluster */
    uint64_t from, to;             /* bytes in the cluster */
    uint8_t *data;                 /* to - from bytes */
};

static void get_l2e(const struct qcow2_state *s, const uint8_t *t, uint64_t i, uint64_t *e, uint64_t *bm)
{
    *e = qimg_be64(t + i * s->l2_entry_bytes);
    *bm = s->extended_l2 ? qimg_be64(t + i * s->l2_entry_bytes + 8) : 0;
}

static void set_l2e(const struct qcow2_state *s, uint8_t *t, uint64_t i, uint64_t e)
{
    qimg_put_be64(t + i * s->l2_entry_bytes, e);
}

/* A normal cluster this image alone owns: its host offset (guest offset
 * with a data file), or false. */
static bool owned(const struct qcow2_state *s, uint64_t gc, uint64_t entry, uint64_t *host)
{
    if ((entry & QCOW2_OFLAG_COMPRESSED) || !(entry & QCOW2_OFLAG_COPIED))
        return false;
    *host = qcow2_has_data_file(s) ? gc << s->cluster_bits : entry & QCOW2_OFFSET_MASK;
    return qcow2_has_data_file(s) || *host != 0;
}

/* Read guest bytes [off, off+len) of the image as it is (zeros past its
 * end): the source of a copy-on-write. */
static int read_guest(struct qimg_image *img, uint64_t off, uint8_t *buf, uint64_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    memset(buf, 0, len);
    uint64_t readable = off < s->size ? QIMG_MIN(len, s->size - off) : 0;
    return readable ? qcow2_read(img, off, buf, readable) : 0;
}

static int head_prepare(struct qimg_image *img, uint64_t old, uint64_t unit, struct head_cow *h)
{
    struct qcow2_state *s = qcow2_state(img);
    memset(h, 0, sizeof *h);
    uint64_t in = qcow2_offset_into_cluster(s, old);
    if (in == 0)
        return 0;
    h->guest = old - in;
    h->from = qimg_round_down(in, unit);
    h->to = in;
    if (h->from == h->to)
        return 0;
    h->data = qimg_xmalloc(h->to - h->from);
    return read_guest(img, h->guest + h->from, h->data, h->to - h->from);
}

static int write_data(struct qimg_image *img, const void *buf, uint64_t len, uint64_t host)
{
    int r = qimg_io_pwrite(qcow2_state(img)->data_io, buf, len, host);
    return r < 0 ? qimg_error(r, "Could not write: %s", strerror(-r)) : 0;
}

static int file_length(struct qimg_io *io, uint64_t *len)
{
    int r = io->ops->get_size(io, len);
    return r < 0 ? qimg_error(r, "Could not get the file size: %s", strerror(-r)) : 0;
}

/* Grow a file to `end`: sparse, fallocated or written with zeros. */
static int grow_file(struct qimg_io *io, uint64_t end, enum prealloc_mode mode)
{
    uint64_t len;
    int r = file_length(io, &len);
    if (r < 0 || end <= len)
        return r;
    if (mode == MODE_FALLOC || mode == MODE_FULL) {
        if (!io->ops->preallocate)
            return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'",
                              mode == MODE_FULL ? "full" : "falloc");
        return io->ops->preallocate(io, len, end - len, mode == MODE_FULL);
    }
    return qimg_io_truncate(io, end);
}

/* ------------------------------------------------------ allocation */

/* n contiguous free clusters, skipping holes that are too small (their
 * clusters are left free; the search goes on after them). */
static int alloc_contiguous(struct qimg_image *img, uint64_t n, uint64_t *first)
{
    struct qcow2_state *s = qcow2_state(img);
    for (;;) {
        uint64_t host, got;
        int r = qcow2_alloc_clusters(img, n, &host, &got);
        if (r < 0)
            return r;
        if (got == n) {
            *first = host >> s->cluster_bits;
            return 0;
        }
        r = qcow2_free_clusters(img, host, got << s->cluster_bits, false);
        if (r < 0)
            return r;
        s->ws->free_cluster_index = (host >> s->cluster_bits) + got;
    }
}

/* Up to n clusters at exactly `first`: *got = how many were free there. */
static int alloc_at(struct qimg_image *img, uint64_t first, uint64_t n, uint64_t *got)
{
    struct qcow2_state *s = qcow2_state(img);
    for (;;) {
        uint64_t i = 0, rc = 0;
        while (i < n) {
            int r = qcow2_get_refcount(img, first + i, &rc);
            if (r < 0)
                return r;
            if (rc)
                break;
            i++;
        }
        *got = i;
        if (i == 0)
            return 0;
        int r = qcow2_ensure_refblocks(img, first, i);
        if (r < 0)
            return r;
        if (r > 0)
            continue;          /* a new refcount block took a cluster: count again */
        r = qcow2_update_refcounts(img, first, i, 1);
        if (r < 0)
            return r;
        qcow2_note_used(s, first, i);
        return 0;
    }
}

/* ---------------------------------------------------- metadata mode */

struct meta_run {
    uint64_t old, new;             /* sizes */
    uint64_t unit;                 /* copy-on-write granularity */
    const struct head_cow *head;
    uint64_t end_host;             /* host end of the last request */
};

/* Set the entries of n clusters from guest cluster gc to host clusters
 * from `host` (or the guest offsets with a data file), then write the
 * copy-on-write parts of a partly covered first or last cluster. */
static int link_new(struct qimg_image *img, struct meta_run *m, uint64_t l2_offset, uint64_t gc,
                    uint64_t host, uint64_t n)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t *table;
    int r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r < 0)
        return r;
    uint64_t idx = gc & (s->l2_entries - 1);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t h = qcow2_has_data_file(s) ? (gc + i) << s->cluster_bits : host + i * s->cluster_size;
        set_l2e(s, table, idx + i, h | QCOW2_OFLAG_COPIED);
    }
    qcow2_l2_cache_mark_dirty(img, l2_offset);
    if (qcow2_has_data_file(s))
        host = gc << s->cluster_bits;
    const struct head_cow *hc = m->head;
    if (hc->data && gc == hc->guest >> s->cluster_bits) {
        r = write_data(img, hc->data, hc->to - hc->from, host + hc->from);
        if (r < 0)
            return r;
    }
    uint64_t last = gc + n - 1, cs = s->cluster_size;
    if (last == (m->new - 1) >> s->cluster_bits && m->new % m->unit) {
        /* the rest of the last (sub)cluster: what the guest would read
         * there without a size limit, the backing file's data or zeros */
        uint64_t in = m->new - (last << s->cluster_bits);
        uint64_t end = QIMG_MIN(qimg_round_down(in + m->unit - 1, m->unit), cs);
        CLEANUP_FREE uint8_t *buf = qimg_xcalloc(1, end - in);
        r = qimg_read_backing(img, m->new, buf, end - in);
        if (r == 0)
            r = write_data(img, buf, end - in, host + (n - 1) * cs + in);
    }
    return r;
}

/* One request as a guest write would allocate it: guest [off, off+*bytes)
 * mapped one L2 table at a time, contiguous on the host; stops early when
 * the run cannot go on.  *bytes gets what was mapped. */
static int meta_request(struct qimg_image *img, struct meta_run *m, uint64_t off, uint64_t *bytes)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size, done = 0, next = 0, first_host = 0;
    while (done < *bytes) {
        uint64_t pos = off + done, gc = pos >> s->cluster_bits;
        uint64_t l2_offset;
        uint8_t *table;
        int r = qcow2_l2_for_write(img, pos, &l2_offset, &table);
        if (r < 0)
            return r;
        uint64_t idx = gc & (s->l2_entries - 1);
        uint64_t want = qimg_div_round_up(qcow2_offset_into_cluster(s, pos) + (*bytes - done), cs);
        want = QIMG_MIN(want, s->l2_entries - idx);
        want = QIMG_MIN(want, PREALLOC_MAX_REQUEST >> s->cluster_bits);
        uint64_t entry, bm, host, got = 0;
        get_l2e(s, table, idx, &entry, &bm);
        if (owned(s, gc, entry, &host)) {
            if (next && host != next)
                break;
            got = 1;
        } else {
            uint64_t n = 1;
            while (n < want) {
                uint64_t h;
                get_l2e(s, table, idx + n, &entry, &bm);
                if (owned(s, gc + n, entry, &h))
                    break;
                n++;
            }
            if (qcow2_has_data_file(s)) {
                host = gc << s->cluster_bits;
                got = n;
            } else if (!next) {
                uint64_t c;
                r = alloc_contiguous(img, n, &c);
                host = c << s->cluster_bits;
                got = n;
            } else {
                host = next;
                r = alloc_at(img, next >> s->cluster_bits, n, &got);
            }
            if (r == 0 && got)
                r = link_new(img, m, l2_offset, gc, host, got);
            if (r < 0)
                return r;
            if (got == 0)
                break;
        }
        if (!next)
            first_host = host + qcow2_offset_into_cluster(s, pos);
        next = host + got * cs;
        done += QIMG_MIN(got * cs - qcow2_offset_into_cluster(s, pos), *bytes - done);
    }
    *bytes = done;
    if (done)
        m->end_host = first_host + done;
    return 0;
}

static int prealloc_metadata(struct qimg_image *img, uint64_t old, uint64_t new,
                             const struct head_cow *head, enum prealloc_mode mode)
{
    struct qcow2_state *s = qcow2_state(img);
    struct meta_run m = { .old = old, .new = new, .unit = s->subcluster_size, .head = head };
    uint64_t off = old;
    while (off < new) {
        uint64_t bytes = QIMG_MIN(new - off, qimg_round_down(INT32_MAX, s->cluster_size));
        int r = meta_request(img, &m, off, &bytes);
        if (r < 0)
            return r;
        if (bytes == 0)
            return qimg_error(-EIO, "qcow2: preallocation made no progress");
        off += bytes;
    }
    /* the file must reach the last byte mapped */
    if (m.end_host == 0)
        return 0;
    if (mode == MODE_METADATA)
        mode = MODE_OFF;
    return grow_file(s->data_io, m.end_host, mode);
}

/* ------------------------------------------------ falloc/full mode */

static void refblock_set_one(const struct qcow2_state *s, uint8_t *b, uint64_t i)
{
    unsigned order = s->refcount_order;
    if (order < 3) {
        unsigned bits = 1u << order, per_byte = 8 / bits;
        b[i / per_byte] |= (uint8_t)(1u << ((i % per_byte) * bits));
        return;
    }
    unsigned bytes = 1u << (order - 3);
    b[i * bytes + bytes - 1] = 1;        /* big-endian 1 */
}

/* Last cluster below `len` bytes with a nonzero refcount, or -1. */
static int last_used(struct qimg_image *img, uint64_t len, int64_t *last)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t c = qimg_div_round_up(len, s->cluster_size);
    *last = -1;
    while (c-- > 0) {
        uint64_t rc;
        int r = qcow2_get_refcount(img, c, &rc);
        if (r < 0)
            return r;
        if (rc) {
            *last = (int64_t)c;
            return 0;
        }
    }
    return 0;
}

static int write_reftable(struct qimg_image *img, const uint64_t *table, uint64_t entries,
                          uint64_t offset)
{
    CLEANUP_FREE uint8_t *be = qimg_xmalloc(entries * 8);
    for (uint64_t i = 0; i < entries; i++)
        qimg_put_be64(be + 8 * i, table[i]);
    int r = qimg_io_pwrite(img->file, be, entries * 8, offset);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

/* A new refcount table at `start` (a free area up to the end of the
 * file), with new refcount blocks first for every block index from the
 * one of `start` on that has none; it counts the start/cs + additional
 * clusters (exactly, or with room to grow by half), and every cluster of
 * the area has refcount 1.  new_block (when nonzero) is a block already
 * written for index new_index, beyond the old table.  The old table is
 * freed.  *end = end of the area. */
int qcow2_refcount_area(struct qimg_image *img, uint64_t start, uint64_t additional, bool exact,
                        uint64_t new_index, uint64_t new_block, uint64_t *end)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size, E = s->refcount_block_entries, blocks;
    qcow2_refcount_metadata_size(start / cs + additional, cs, s->refcount_order, !exact, &blocks);
    uint64_t table_size = exact ? blocks : blocks + qimg_div_round_up(blocks, 2);
    table_size = qimg_div_round_up(table_size, cs / 8) * (cs / 8);
    if (blocks > PREALLOC_MAX_REFTABLE_ENTRIES || table_size > PREALLOC_MAX_REFTABLE_ENTRIES ||
        (new_block && new_index >= blocks))
        return qimg_error(-EFBIG, "qcow2: the refcount table would be too large");
    uint64_t table_clusters = table_size * 8 / cs, first_index = start / cs / E;
    uint64_t old_entries = QIMG_MIN(table_size, s->refcount_table_size);
    CLEANUP_FREE uint64_t *table = qimg_xcalloc(table_size, 8);
    memcpy(table, s->refcount_table, old_entries * 8);
    if (new_block)
        table[new_index] = new_block;
    uint64_t missing = 0;
    for (uint64_t i = first_index; i < blocks; i++)
        missing += (table[i] & ~QCOW2_REFT_RESERVED) == 0;
    uint64_t table_offset = start + missing * cs;
    uint64_t area_first = start / cs, area_end = (table_offset / cs) + table_clusters;
    CLEANUP_FREE uint8_t *blk = qimg_xmalloc(cs);
    uint64_t next = start;
    int r = 0;
    for (uint64_t i = first_index; i < blocks && r == 0; i++) {
        uint64_t lo = QIMG_MAX(i * E, area_first), hi = QIMG_MIN((i + 1) * E, area_end);
        uint64_t off = table[i] & ~QCOW2_REFT_RESERVED;
        if (off && i < old_entries && off == (s->refcount_table[i] & ~QCOW2_REFT_RESERVED)) {
            if (lo < hi)       /* a block of the old table: through the cache */
                r = qcow2_update_refcounts(img, lo, hi - lo, 1);
            continue;
        }
        if (off) {             /* new_block: on disk only */
            r = qimg_io_pread(img->file, blk, cs, off);
        } else {
            qcow2_refblock_forget(img, next);   /* no stale copy of what was there */
            memset(blk, 0, cs);
            off = next;
            next += cs;
            table[i] = off;
        }
        for (uint64_t c = lo; c < hi && r == 0; c++)
            refblock_set_one(s, blk, c - i * E);
        if (r == 0)
            r = qimg_io_pwrite(img->file, blk, cs, off);
    }
    if (r == 0)
        r = qcow2_refcount_flush(img);
    if (r == 0)
        r = write_reftable(img, table, table_size, table_offset);
    if (r == 0) {
        uint8_t hdr[12];
        qimg_put_be64(hdr, table_offset);
        qimg_put_be32(hdr + 8, (uint32_t)table_clusters);
        r = qimg_io_pwrite(img->file, hdr, sizeof hdr, QCOW2_HDR_REFCOUNT_TABLE_OFFSET);
        if (r == 0)
            r = qimg_io_flush(img->file);
    }
    if (r < 0)
        return qimg_error(r, "Could not write the refcount table: %s", strerror(-r));
    uint64_t old_off = s->refcount_table_offset, old_clusters = s->refcount_table_clusters;
    free(s->refcount_table);
    s->refcount_table = table;
    table = NULL;
    s->refcount_table_size = table_size;
    s->refcount_table_offset = table_offset;
    s->refcount_table_clusters = (uint32_t)table_clusters;
    qcow2_note_used(s, area_first, area_end - area_first);
    *end = area_end * cs;
    return qcow2_free_clusters(img, old_off, old_clusters * cs, false);
}

/* Does refcount block b count nothing, its own entry `self` aside? */
static bool counts_nothing(const struct qcow2_state *s, const uint8_t *b, int64_t self)
{
    uint64_t E = s->refcount_block_entries;
    for (uint64_t i = 0; i < E; i++)
        if ((int64_t)i != self && qcow2_refblock_get(s, b, i))
            return false;
    return true;
}

int qcow2_shrink_reftable(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size, E = s->refcount_block_entries, n = s->refcount_table_size;
    CLEANUP_FREE uint64_t *table = qimg_xmalloc(n * 8);
    memcpy(table, s->refcount_table, n * 8);
    int r = 0;
    for (uint64_t i = 0; i < n && r == 0; i++) {
        uint64_t off = table[i] & ~QCOW2_REFT_RESERVED;
        const uint8_t *b;
        if (!off || (r = qcow2_refblock_peek(img, i, &b)) < 0)
            continue;
        int64_t self = (off / cs) / E == i ? (int64_t)((off / cs) % E) : -1;
        if (counts_nothing(s, b, self))
            table[i] = 0;
    }
    if (r == 0)
        r = write_reftable(img, table, n, s->refcount_table_offset);
    if (r < 0)
        return qimg_error(r, "Could not write the refcount table: %s", strerror(-r));
    for (uint64_t i = 0; i < n && r == 0; i++) {
        uint64_t off = s->refcount_table[i] & ~QCOW2_REFT_RESERVED;
        if (!off || table[i])
            continue;
        qcow2_refblock_forget(img, off);
        s->refcount_table[i] = 0;
        if ((off / cs) / E != i) {      /* counted by another block */
            r = qcow2_free_clusters(img, off, cs, true);
            continue;
        }
        if (off / cs < s->ws->free_cluster_index)
            s->ws->free_cluster_index = off / cs;   /* free now: nothing counts it */
        if (img->file->ops->discard)
            img->file->ops->discard(img->file, off, cs);
    }
    return r;
}

/* Point the entries of guest clusters [gc, gc+n) to host clusters from
 * `host`, one L2 table at a time; the first cluster's old data (partly
 * covered by the old size) moves along, its old cluster is freed. */
static int link_area(struct qimg_image *img, uint64_t gc, uint64_t host, uint64_t n,
                     const struct head_cow *head, bool alloc_subclusters)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    while (n > 0) {
        uint64_t l2_offset;
        uint8_t *table;
        int r = qcow2_l2_for_write(img, gc << s->cluster_bits, &l2_offset, &table);
        if (r < 0)
            return r;
        uint64_t idx = gc & (s->l2_entries - 1);
        uint64_t k = QIMG_MIN(n, s->l2_entries - idx);
        uint64_t old_head = 0, bm;
        bool moves = head->data && gc == head->guest >> s->cluster_bits;
        if (moves) {
            r = write_data(img, head->data, head->to - head->from, host + head->from);
            if (r < 0)
                return r;
            get_l2e(s, table, idx, &old_head, &bm);
        }
        for (uint64_t i = 0; i < k; i++) {
            set_l2e(s, table, idx + i, (host + i * cs) | QCOW2_OFLAG_COPIED);
            if (s->extended_l2 && alloc_subclusters)
                qimg_put_be64(table + (idx + i) * s->l2_entry_bytes + 8, 0xffffffffull);
        }
        qcow2_l2_cache_mark_dirty(img, l2_offset);
        if (moves && ((old_head & QCOW2_OFLAG_COMPRESSED) || (old_head & QCOW2_OFFSET_MASK))) {
            /* the table stops pointing to the old cluster before it is freed */
            r = qcow2_l2_cache_write_now(img, l2_offset);
            if (r == 0)
                r = qcow2_free_l2_entry(img, old_head, false);
            if (r < 0)
                return r;
        }
        gc += k, host += k * cs, n -= k;
    }
    return 0;
}

static int prealloc_falloc(struct qimg_image *img, uint64_t old, uint64_t new,
                           const struct head_cow *head, enum prealloc_mode mode)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size, len;
    int r = file_length(img->file, &len);
    int64_t last;
    if (r == 0)
        r = last_used(img, len, &last);
    if (r < 0)
        return r;
    uint64_t start = last >= 0 ? (uint64_t)(last + 1) * cs : qimg_round_down(len + cs - 1, cs);
    uint64_t first_gc = old >> s->cluster_bits;
    uint64_t clusters = qimg_div_round_up(new, cs) - first_gc;
    /* room in the refcounts for the L2 tables too, wherever they go */
    uint64_t l2_tables = qimg_div_round_up(clusters, s->l2_entries) + 1;
    uint64_t data_start = 0, got = 0;
    r = qcow2_refcount_area(img, start, clusters + l2_tables, true, 0, 0, &data_start);
    if (r == 0)
        r = alloc_at(img, data_start / cs, clusters, &got);
    if (r < 0)
        return r;
    if (got != clusters)
        return qimg_error(-EIO, "qcow2: the preallocated area is not free");
    r = grow_file(img->file, data_start + clusters * cs, mode);
    if (r < 0)
        return r;
    /* over a backing file that reaches into the new area, its subclusters
     * are marked allocated: they read as the zeros preallocated */
    return link_area(img, first_gc, data_start, clusters, head, qcow2_resize_backing_covers(img, old));
}

/* ------------------------------------------------------------ entry */

int qcow2_resize_data_file(struct qimg_image *img, uint64_t new)
{
    struct qcow2_state *s = qcow2_state(img);
    return qcow2_has_data_file(s) ? grow_file(s->data_io, new, MODE_OFF) : 0;
}

bool qcow2_resize_backing_covers(struct qimg_image *img, uint64_t old)
{
    return img->backing && img->backing->size > old;
}

bool qcow2_resize_needs_zeroing(struct qimg_image *img, uint64_t old, const char *mode)
{
    bool whole_area_allocated = mode && (!strcmp(mode, "falloc") || !strcmp(mode, "full")) &&
                                !qcow2_has_data_file(qcow2_state(img));
    return qcow2_resize_backing_covers(img, old) && !whole_area_allocated;
}

int qcow2_resize_zero_new(struct qimg_image *img, uint64_t old, uint64_t new)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t zero_start = qimg_round_down(old + s->subcluster_size - 1, s->subcluster_size);
    int r = 0;
    if (new > zero_start)
        r = qcow2_write_zeroes(img, zero_start, new - zero_start, 0);
    if (r == 0 && zero_start > old) {
        uint64_t len = QIMG_MIN(zero_start, new) - old;
        CLEANUP_FREE uint8_t *z = qimg_xcalloc(1, len);
        r = qcow2_write(img, old, z, len);
    }
    return r;
}

int qcow2_resize_prealloc(struct qimg_image *img, uint64_t old, uint64_t new, const char *mode_name)
{
    struct qcow2_state *s = qcow2_state(img);
    enum prealloc_mode mode = !strcmp(mode_name, "metadata") ? MODE_METADATA :
                              !strcmp(mode_name, "falloc") ? MODE_FALLOC : MODE_FULL;
    if (new <= old)
        return 0;
    bool whole_clusters = mode != MODE_METADATA && !qcow2_has_data_file(s);
    struct head_cow head;
    /* falloc/full moves the whole old part of the first cluster; metadata
     * copies the old part of its subcluster when the cluster is new */
    int r = head_prepare(img, old, whole_clusters ? s->cluster_size : s->subcluster_size, &head);
    if (r < 0) {
        free(head.data);
        return r;
    }
    pthread_mutex_lock(&img->lock);
    r = qcow2_begin_metadata_change(img);
    if (r == 0)
        r = whole_clusters ? prealloc_falloc(img, old, new, &head, mode)
                           : prealloc_metadata(img, old, new, &head, mode);
    if (r == 0)
        r = qcow2_flush_locked(img);
    pthread_mutex_unlock(&img->lock);
    free(head.data);
    return r;
}
