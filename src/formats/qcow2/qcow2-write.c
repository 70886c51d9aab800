/* qimg - qcow2 writing: guest writes with copy-on-write of partial
 * clusters and subclusters, zero writes, discard, flush, compressed
 * clusters, resize, the backing file name, emptying after commit and the
 * dirty bit of lazy refcounts.
 *
 * Concurrency: metadata changes run under img->lock.  A write that needs
 * new clusters allocates them under the lock, registers the guest range
 * as in flight, writes data (and copy-on-write fill) outside the lock,
 * then links the L2 entries under the lock; other writers touching an
 * in-flight range wait for it.  Writes into clusters already owned
 * (refcount 1) go straight to the file.
 *
 * Crash ordering: data is written before the L2 entry that points to it
 * reaches the disk (entries are set after the data write returned; tables
 * are written at flush or eviction); refcount increments reach the disk
 * before the L2 tables and L1 entries that use them; a cluster is freed
 * only after the table that stopped pointing to it was written.  A crash
 * leaves at worst leaked clusters. */
#include <errno.h>
#include <inttypes.h>

#include "codec.h"
#include "qcow2.h"
#include "qcow2-bitmap.h"
#include "qcow2-empty.h"
#include "qcow2-zerocow.h"


/* ============================================================ header */

static int write_header_bytes(struct qimg_image *img, uint64_t off, const void *p, size_t len)
{
    int r = qimg_io_pwrite(img->file, p, len, off);
    return r < 0 ? qimg_error(r, "Could not update qcow2 header: %s", strerror(-r)) : 0;
}

static int write_incompat(struct qimg_image *img, uint64_t features)
{
    uint8_t be[8];
    qimg_put_be64(be, features);
    int r = write_header_bytes(img, QCOW2_HDR_INCOMPATIBLE_FEATURES, be, 8);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        qcow2_state(img)->incompatible_features = features;
    return r;
}

/* Before the first metadata change: with lazy refcounts set the dirty
 * bit.  (A dirty image was repaired when it was opened read-write.) */
static int prepare_metadata_change(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    if (w->marked_dirty)
        return 0;
    if (s->version >= 3 && (s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS)) {
        int r = write_incompat(img, s->incompatible_features | QCOW2_INCOMPAT_DIRTY);
        if (r < 0)
            return r;
    }
    w->marked_dirty = true;
    return 0;
}

/* ========================================================= open, close */

int qcow2_write_open(struct qimg_image *img, unsigned flags)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!(flags & QIMG_OPEN_RDWR) || (flags & QIMG_OPEN_NO_IO))
        return 0;
    s->ws = qimg_xcalloc(1, sizeof *s->ws);
    s->ws->writethrough = flags & QIMG_OPEN_CACHE_SYNC;
    pthread_cond_init(&s->ws->inflight_done, NULL);
    return qcow2_refcount_init(img);
}

/* Compressed data ends anywhere: the file is rounded up to a sector, as
 * qemu leaves it, so that sector-based readers see whole sectors. */
static int align_file_end(struct qimg_image *img)
{
    uint64_t size;
    int r = qimg_io_get_size(img->file, &size);
    if (r == 0 && size % 512)
        r = qimg_io_truncate(img->file, (size + 511) & ~511ull);
    if (r == 0)
        qcow2_state(img)->ws->compressed_written = false;
    return r;
}

static int flush_locked(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = qcow2_l2_cache_flush(img);
    if (r == 0 && s->ws->compressed_written)
        r = align_file_end(img);
    if (r == 0 && s->data_io != img->file)
        r = qimg_io_flush(s->data_io);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

int qcow2_write_flush(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws)
        return 0;
    pthread_mutex_lock(&img->lock);
    int r = flush_locked(img);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* The image layer's flush (the driver's .flush), with the debug events
 * qemu's flush of a format node gives its file: flush_to_os before the
 * caches are written, flush_to_disk before the file is flushed (the
 * second flush finds nothing left to write).  Internal flushes (snapshot,
 * make_empty ...) announce nothing, as in qemu. */
int qcow2_flush(struct qimg_image *img)
{
    if (!qcow2_state(img)->ws || qcow2_state(img)->ws->broken)
        return 0;
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_OS);
    int r = qcow2_write_flush(img);
    if (r == 0 && !(img->file->flags & QIMG_IO_UNSAFE)) {
        qimg_io_event(img->file, QIMG_EV_FLUSH_TO_DISK);
        r = qimg_io_flush(img->file);
    }
    return r;
}

/* Writethrough (-t writethrough): as qemu, every request that succeeded
 * is followed by a flush of the L2 and refcount caches and the file. */
static int request_done(struct qimg_image *img, int r)
{
    if (r == 0 && qcow2_state(img)->ws->writethrough)
        r = qcow2_write_flush(img);
    return r;
}

/* At close the caches are written as qemu's inactivation does: L2 tables
 * (with the refcount blocks they depend on), then refcount blocks, each
 * followed by a flush of the file; a failure is reported and keeps the
 * dirty bit. */
static int close_flush(struct qimg_image *img, bool l2)
{
    int r = 0;
    if (!l2 || qcow2_l2_cache_dirty(img))
        r = qcow2_refcount_flush(img);
    if (r == 0 && l2 && qcow2_l2_cache_dirty(img))
        r = qimg_io_flush(img->file);
    if (r == 0 && l2)
        r = qcow2_l2_cache_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        qimg_warn("ERROR: Failed to flush the %s cache: %s",
                  l2 ? "L2 table" : "refcount block", strerror(-r));
    return r;
}

void qcow2_write_close(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s || !s->ws)
        return;
    if (!s->ws->broken) {
        int r = close_flush(img, true);
        if (close_flush(img, false) < 0 || r < 0)
            goto out;
        /* a clean close: everything written, the dirty bit goes; qemu then
         * writes the whole first cluster again (its header update), which
         * allocates all of it on the host */
        if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY && s->ws->marked_dirty &&
            flush_locked(img) == 0 &&
            write_incompat(img, s->incompatible_features & ~QCOW2_INCOMPAT_DIRTY) == 0)
            qcow2_rewrite_header_locked(img);
    }
out:
    qcow2_refcount_free(s);
    pthread_cond_destroy(&s->ws->inflight_done);
    free(s->ws);
    s->ws = NULL;
}

bool qcow2_has_zero_init_w(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    /* a preallocated image has its first L2 table: zeros only as far as
     * its data file reads as zeros (a raw external one may hold anything),
     * and never when encrypted (its allocated zeros decrypt to noise) */
    bool preallocated = s->l1_size > 0 && s->l1_table[0] != 0;
    if (!preallocated)
        return true;
    if (s->crypt_method != 0)
        return false;
    return !(qcow2_has_data_file(s) && qcow2_data_file_is_raw(s));
}

/* ========================================================= in flight */

static bool overlaps_inflight(struct qcow2_state *s, uint64_t start, uint64_t end)
{
    pthread_t self = pthread_self();
    for (struct qcow2_inflight *f = s->ws->inflight; f; f = f->next)
        if (f->start < end && start < f->end && !pthread_equal(f->owner, self))
            return true;
    return false;
}

/* Called with the lock held, after wait_inflight. */
static void inflight_add(struct qimg_image *img, struct qcow2_inflight *f, uint64_t start,
                         uint64_t end)
{
    struct qcow2_state *s = qcow2_state(img);
    *f = (struct qcow2_inflight){ .start = start, .end = end, .owner = pthread_self(),
                                  .next = s->ws->inflight };
    s->ws->inflight = f;
}

static void wait_inflight(struct qimg_image *img, uint64_t start, uint64_t end)
{
    struct qcow2_state *s = qcow2_state(img);
    while (overlaps_inflight(s, start, end))
        pthread_cond_wait(&s->ws->inflight_done, &img->lock);
}

static void inflight_remove(struct qimg_image *img, struct qcow2_inflight *f)
{
    struct qcow2_state *s = qcow2_state(img);
    for (struct qcow2_inflight **p = &s->ws->inflight; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            break;
        }
    }
    pthread_cond_broadcast(&s->ws->inflight_done);
}

/* ============================================================ L1 / L2 */

static int write_l1_entry(struct qimg_image *img, uint64_t l1i)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t be[8];
    qimg_put_be64(be, s->l1_table[l1i]);
    qimg_io_event(img->file, QIMG_EV_L1_UPDATE);
    int r = qimg_io_pwrite(img->file, be, 8, s->l1_table_offset + l1i * 8);
    return r < 0 ? qimg_error(r, "Could not write L1 table: %s", strerror(-r)) : 0;
}

/* The L2 table for guest offset off, ours alone (refcount 1): a new one
 * when the L1 entry has none, a copy when it is shared with a snapshot. */
static int l2_for_write(struct qimg_image *img, uint64_t off, uint64_t *l2_offset, uint8_t **table)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t l1i = qcow2_l1_index(s, off);
    if (l1i >= s->l1_size)
        return qimg_error(-EIO, "qcow2: write beyond the L1 table");
    uint64_t l1e = s->l1_table[l1i];
    uint64_t old = l1e & QCOW2_OFFSET_MASK;
    if (old && !qimg_is_aligned(old, s->cluster_size))
        return qimg_error(-EIO, "qcow2: L2 table offset %#" PRIx64 " unaligned (L1 index: %#"
                          PRIx64 ")", old, l1i);
    if (old && (l1e & QCOW2_OFLAG_COPIED)) {
        *l2_offset = old;
        return qcow2_l2_cache_get(img, old, table);
    }
    int r = prepare_metadata_change(img);
    if (r < 0)
        return r;
    /* qemu's order and events: the cluster, its refcount on disk, the
     * table (a copy of the shared one) written, then the L1
     * entry; a failure gives the cluster back */
    uint64_t host = 0, got;
    r = qcow2_alloc_clusters(img, 1, &host, &got);
    if (r == 0)
        r = qcow2_refcount_flush(img);
    CLEANUP_FREE uint8_t *buf = qimg_xcalloc(1, s->cluster_size);
    if (r == 0 && old) {
        uint8_t *t;
        /* what is cached of the old one reaches the disk before it is left */
        qimg_io_event(img->file, QIMG_EV_L2_ALLOC_COW_READ);
        r = qcow2_l2_cache_get(img, old, &t);
        if (r == 0) {
            memcpy(buf, t, s->cluster_size);
            r = qcow2_l2_cache_write_now(img, old);
        }
    }
    if (r == 0) {
        qimg_io_event(img->file, QIMG_EV_L2_ALLOC_WRITE);
        qimg_io_event(img->file, QIMG_EV_L2_UPDATE);   /* qemu writes it from its cache */
        r = qimg_io_pwrite(img->file, buf, s->cluster_size, host);
        if (r < 0)
            qimg_error(r, "Could not write L2 table: %s", strerror(-r));
    }
    if (r == 0) {
        s->l1_table[l1i] = host | QCOW2_OFLAG_COPIED;
        r = write_l1_entry(img, l1i);
        if (r < 0)
            s->l1_table[l1i] = l1e;
    }
    if (r < 0) {
        if (host) {
            CLEANUP_FREE char *why = qimg_strdup(qimg_last_error());
            qcow2_free_clusters(img, host, s->cluster_size, false);
            qimg_error(r, "%s", why);
        }
        return r;
    }
    if (old) {
        qcow2_l2_cache_drop(img, old);
        r = qcow2_free_clusters(img, old, s->cluster_size, false);
        if (r < 0)
            return r;
    }
    *l2_offset = host;
    return qcow2_l2_cache_install(img, host, buf, table);
}

int qcow2_l2_for_write(struct qimg_image *img, uint64_t off, uint64_t *l2_offset, uint8_t **table)
{
    return l2_for_write(img, off, l2_offset, table);
}

static void get_entry(const struct qcow2_state *s, const uint8_t *table, uint64_t idx,
                      uint64_t *entry, uint64_t *bitmap)
{
    const uint8_t *e = table + idx * s->l2_entry_bytes;
    *entry = qimg_be64(e);
    *bitmap = s->extended_l2 ? qimg_be64(e + 8) : 0;
}

static void set_entry(const struct qcow2_state *s, uint8_t *table, uint64_t idx,
                      uint64_t entry, uint64_t bitmap)
{
    uint8_t *e = table + idx * s->l2_entry_bytes;
    qimg_put_be64(e, entry);
    if (s->extended_l2)
        qimg_put_be64(e + 8, bitmap);
}

/* Host cluster an entry owns alone (refcount 1), or 0. */
static uint64_t owned_host(const struct qcow2_state *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return 0;
    uint64_t off = entry & QCOW2_OFFSET_MASK;
    bool allocated = off != 0 || (qcow2_has_data_file(s) && (entry & QCOW2_OFLAG_COPIED));
    return allocated && (entry & QCOW2_OFLAG_COPIED) ? (off | 1) : 0;   /* |1: nonzero for offset 0 */
}

/* Does the entry hold a cluster (normal or compressed) that must be
 * dropped when the entry is replaced? */
static bool holds_cluster(const struct qcow2_state *s, uint64_t entry)
{
    if (qcow2_has_data_file(s))
        return false;
    return (entry & QCOW2_OFLAG_COMPRESSED) || (entry & QCOW2_OFFSET_MASK);
}

/* ============================================================= write */

enum plan { PLAN_INPLACE, PLAN_LINK, PLAN_ALLOC };

/* One cluster of a write: how it is reached and what it becomes. */
struct cjob {
    uint64_t guest;                /* guest offset of the cluster */
    uint64_t ws, we;               /* bytes written, relative to the cluster */
    uint64_t host;                 /* host offset of the cluster */
    uint64_t old_entry, old_bitmap;
    uint64_t new_entry, new_bitmap;
    uint64_t fill[2][2];           /* copy-on-write ranges [start, end) in the cluster */
    int nfill;
    bool free_old;
};

static uint32_t subcluster_mask(const struct qcow2_state *s, uint64_t ws, uint64_t we)
{
    uint32_t first = (uint32_t)(ws / s->subcluster_size);
    uint32_t last = (uint32_t)((we - 1) / s->subcluster_size);
    uint64_t m = ((2ull << last) - 1) & ~((1ull << first) - 1);
    return (uint32_t)m;
}

/* What writing [ws, we) of the cluster with this entry takes. */
static enum plan plan_for(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                          uint64_t ws, uint64_t we)
{
    uint64_t own = owned_host(s, entry);
    if (!own)
        return qcow2_has_data_file(s) ? PLAN_LINK : PLAN_ALLOC;
    if (!s->extended_l2)
        return (entry & QCOW2_OFLAG_ZERO) ? PLAN_LINK : PLAN_INPLACE;
    uint32_t m = subcluster_mask(s, ws, we);
    return (QCOW2_L2_BITMAP_ALLOC(bitmap) & m) == m ? PLAN_INPLACE : PLAN_LINK;
}

static void add_fill(struct cjob *j, uint64_t a, uint64_t b)
{
    if (a < b) {
        j->fill[j->nfill][0] = a;
        j->fill[j->nfill][1] = b;
        j->nfill++;
    }
}

/* Fill ranges, new entry and bitmap of a cluster job whose host is set. */
static void complete_job(const struct qcow2_state *s, struct cjob *j, enum plan p)
{
    uint64_t cs = s->cluster_size;
    bool keeps_old_data = (j->old_entry & QCOW2_OFLAG_COMPRESSED) ||
                          ((j->old_entry & QCOW2_OFFSET_MASK) && p == PLAN_ALLOC);
    j->nfill = 0;
    j->free_old = p == PLAN_ALLOC && holds_cluster(s, j->old_entry);
    uint64_t host_bits = qcow2_has_data_file(s) ? j->guest : j->host;
    j->new_entry = host_bits | QCOW2_OFLAG_COPIED;
    if (!s->extended_l2) {
        if (p != PLAN_INPLACE) {
            add_fill(j, 0, j->ws);
            add_fill(j, j->we, cs);
        }
        j->new_bitmap = 0;
        return;
    }
    uint32_t m = subcluster_mask(s, j->ws, j->we);
    uint32_t alloc = QCOW2_L2_BITMAP_ALLOC(j->old_bitmap);
    uint32_t zero = QCOW2_L2_BITMAP_ZERO(j->old_bitmap);
    if (keeps_old_data) {
        /* the old cluster's content moves: copy all of it */
        add_fill(j, 0, j->ws);
        add_fill(j, j->we, cs);
        j->new_bitmap = 0xffffffffull;
        return;
    }
    if (p == PLAN_ALLOC)
        alloc = 0;
    uint64_t sc = s->subcluster_size;
    uint64_t head = qimg_round_down(j->ws, sc), tail = qimg_round_down(j->we - 1, sc) + sc;
    if (!(alloc & (1u << (j->ws / sc))))
        add_fill(j, head, j->ws);
    if (!(alloc & (1u << ((j->we - 1) / sc))))
        add_fill(j, j->we, tail);
    alloc |= m;
    zero &= ~m;
    j->new_bitmap = (uint64_t)zero << 32 | alloc;
}

/* Copy-on-write: the old content of the fill ranges (read through the
 * image, so backing files, zeros and compressed clusters all work), then
 * written to the new place. */
static int do_fill(struct qimg_image *img, const struct cjob *j, uint8_t **bounce, bool zero_cow)
{
    struct qcow2_state *s = qcow2_state(img);
    int z = zero_cow ? qcow2_fill_zero(img, j->host, j->fill, j->nfill) : 0;
    if (z != 0)
        return z < 0 ? z : 0;   /* qcow2-zerocow.c: zeros made on the host */
    for (int k = 0; k < j->nfill; k++) {
        uint64_t a = j->fill[k][0], b = j->fill[k][1];
        if (!*bounce)
            *bounce = qimg_io_buffer(s->cluster_size);
        memset(*bounce, 0, b - a);
        /* past the end of the disk the cluster holds zeros */
        uint64_t size = s->size;
        uint64_t ga = j->guest + a;
        uint64_t readable = ga < size ? QIMG_MIN(b - a, size - ga) : 0;
        qimg_io_event(s->data_io, QIMG_EV_COW_READ);
        int r = readable ? qcow2_read(img, ga, *bounce, readable) : 0;
        qimg_io_event(s->data_io, QIMG_EV_COW_WRITE);
        if (r == 0)
            r = qcow2_data_pwrite(img, *bounce, b - a, j->host + a, ga);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Classify the clusters of [off, off+len) inside one L2 table: the plan
 * of the first one and how many following ones share it (contiguous on
 * the host for in-place writes and links). */
static uint64_t group_clusters(const struct qcow2_state *s, const uint8_t *table, uint64_t off,
                               uint64_t len, enum plan *plan)
{
    uint64_t cs = s->cluster_size;
    uint64_t idx = qcow2_l2_index(s, off);
    uint64_t pos = off, end = off + len, n = 0, expect = 0;
    for (; idx < s->l2_entries && pos < end; idx++) {
        uint64_t entry, bitmap;
        get_entry(s, table, idx, &entry, &bitmap);
        uint64_t ws = qcow2_offset_into_cluster(s, pos);
        uint64_t we = QIMG_MIN(cs, ws + (end - pos));
        enum plan p = plan_for(s, entry, bitmap, ws, we);
        uint64_t host = qcow2_has_data_file(s) ? qimg_round_down(pos, cs) : entry & QCOW2_OFFSET_MASK;
        if (n == 0)
            *plan = p;
        else if (p != *plan || (p != PLAN_ALLOC && host != expect))
            break;
        expect = host + cs;
        n++;
        pos += we - ws;
    }
    return n;
}

/* Link the jobs' new entries, then drop what they replaced. */
static int link_jobs(struct qimg_image *img, uint64_t l2_offset, struct cjob *jobs, uint64_t n)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t *table;
    int r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r < 0)
        return r;
    bool frees = false;
    for (uint64_t i = 0; i < n; i++) {
        set_entry(s, table, qcow2_l2_index(s, jobs[i].guest), jobs[i].new_entry, jobs[i].new_bitmap);
        frees |= jobs[i].free_old;
    }
    qcow2_l2_cache_mark_dirty(img, l2_offset);
    if (!frees)
        return 0;
    /* the table stops pointing to the old clusters before they are freed */
    r = qcow2_l2_cache_write_now(img, l2_offset);
    for (uint64_t i = 0; i < n && r == 0; i++)
        if (jobs[i].free_old)
            r = qcow2_free_l2_entry(img, jobs[i].old_entry, false);
    return r;
}

/* Write at most one L2 table's worth of [off, off+len); *done gets the
 * bytes handled. */
static int write_step(struct qimg_image *img, uint64_t off, const uint8_t *buf, uint64_t len,
                      uint64_t *done)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    uint64_t span = cs << s->l2_bits;
    uint64_t table_end = qimg_round_down(off, span) + span;
    len = QIMG_MIN(len, table_end - off);
    uint64_t cstart = qimg_round_down(off, cs);
    uint64_t cend = qimg_round_down(off + len - 1, cs) + cs;

    pthread_mutex_lock(&img->lock);
    wait_inflight(img, cstart, cend);
    uint64_t l2_offset;
    uint8_t *table;
    int r = l2_for_write(img, off, &l2_offset, &table);
    if (r < 0) {
        pthread_mutex_unlock(&img->lock);
        return r;
    }
    enum plan plan = PLAN_INPLACE;
    uint64_t n = group_clusters(s, table, off, len, &plan);
    uint64_t bytes = QIMG_MIN(len, n * cs - qcow2_offset_into_cluster(s, off));
    uint64_t idx = qcow2_l2_index(s, off);

    if (plan == PLAN_INPLACE) {
        uint64_t entry, bitmap;
        get_entry(s, table, idx, &entry, &bitmap);
        uint64_t host = qcow2_has_data_file(s) ? cstart : entry & QCOW2_OFFSET_MASK;
        pthread_mutex_unlock(&img->lock);
        qimg_io_event(s->data_io, QIMG_EV_WRITE_AIO);
        r = qcow2_data_pwrite(img, buf, bytes, host + qcow2_offset_into_cluster(s, off), off);
        *done = bytes;
        return r < 0 ? qimg_error(r, "Could not write: %s", strerror(-r)) : 0;
    }

    r = prepare_metadata_change(img);
    uint64_t host = 0, got = n;
    if (r == 0 && plan == PLAN_ALLOC && !qcow2_has_data_file(s))
        r = qcow2_alloc_clusters(img, n, &host, &got);
    if (r < 0) {
        pthread_mutex_unlock(&img->lock);
        return r;
    }
    /* the table may have moved in the cache while allocating */
    r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r < 0) {
        pthread_mutex_unlock(&img->lock);
        return r;
    }
    n = got;
    bytes = QIMG_MIN(len, n * cs - qcow2_offset_into_cluster(s, off));
    CLEANUP_FREE struct cjob *jobs = qimg_xcalloc(n, sizeof *jobs);
    uint64_t pos = off, end = off + bytes;
    for (uint64_t i = 0; i < n; i++) {
        struct cjob *j = &jobs[i];
        j->guest = qimg_round_down(pos, cs);
        j->ws = pos - j->guest;
        j->we = QIMG_MIN(cs, end - j->guest);
        get_entry(s, table, idx + i, &j->old_entry, &j->old_bitmap);
        if (plan == PLAN_ALLOC && !qcow2_has_data_file(s))
            j->host = host + i * cs;
        else
            j->host = qcow2_has_data_file(s) ? j->guest : j->old_entry & QCOW2_OFFSET_MASK;
        complete_job(s, j, plan);
        pos = j->guest + j->we;
    }
    struct qcow2_inflight f;
    inflight_add(img, &f, cstart, jobs[n - 1].guest + cs);
    pthread_mutex_unlock(&img->lock);

    CLEANUP_FREE uint8_t *bounce = NULL;
    bool zero_cow = plan == PLAN_ALLOC && !qcow2_has_data_file(s);
    for (uint64_t i = 0; i < n && zero_cow; i++)
        zero_cow = qcow2_fill_reads_zero(img, jobs[i].guest, jobs[i].fill, jobs[i].nfill);
    for (uint64_t i = 0; i < n && r == 0; i++)
        r = do_fill(img, &jobs[i], &bounce, zero_cow);
    qimg_io_event(s->data_io, QIMG_EV_WRITE_AIO);
    if (r == 0)
        r = qcow2_data_pwrite(img, buf, bytes, jobs[0].host + jobs[0].ws, off);

    pthread_mutex_lock(&img->lock);
    if (r == 0)
        r = link_jobs(img, l2_offset, jobs, n);
    else
        r = qimg_error(r, "Could not write: %s", strerror(-r));
    inflight_remove(img, &f);
    pthread_mutex_unlock(&img->lock);
    *done = bytes;
    return r;
}

int qcow2_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    int rb = qcow2_crypt_write_unaligned(img, off, buf, len);
    if (rb != 0)
        return rb < 0 ? rb : 0;
    rb = qcow2_bitmap_note_write(img, off, len);   /* enabled bitmaps record it */
    if (rb < 0)
        return rb;
    const uint8_t *p = buf;
    while (len > 0) {
        uint64_t done = 0;
        int r = write_step(img, off, p, len, &done);
        if (r < 0)
            return r;
        off += done, p += done, len -= done;
    }
    return request_done(img, 0);
}

/* ======================================================= zero, discard */

/* Turn whole clusters [off, off+len) (one L2 table) into zero clusters
 * (zero) or unallocated ones (!zero).  unmap: their host clusters may go. */
static int zero_clusters_step(struct qimg_image *img, uint64_t off, uint64_t len, bool zero,
                              bool unmap, bool discard, uint64_t *done)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    uint64_t span = cs << s->l2_bits;
    uint64_t table_end = qimg_round_down(off, span) + span;
    len = QIMG_MIN(len, table_end - off);
    *done = len;
    pthread_mutex_lock(&img->lock);
    wait_inflight(img, off, off + len);
    uint64_t l1i = qcow2_l1_index(s, off);
    int r = 0;
    if (!zero && (l1i >= s->l1_size || !(s->l1_table[l1i] & QCOW2_OFFSET_MASK))) {
        pthread_mutex_unlock(&img->lock);     /* nothing allocated here */
        return 0;
    }
    uint64_t l2_offset;
    uint8_t *table;
    r = l2_for_write(img, off, &l2_offset, &table);
    if (r == 0)
        r = prepare_metadata_change(img);
    if (r == 0)
        r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r < 0) {
        pthread_mutex_unlock(&img->lock);
        return r;
    }
    uint64_t first = qcow2_l2_index(s, off), count = len / cs;
    CLEANUP_FREE uint64_t *to_free = qimg_xcalloc(count, sizeof *to_free);
    uint64_t nfree = 0;
    bool changed = false;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t entry, bitmap, ne, nb = 0;
        get_entry(s, table, first + i, &entry, &bitmap);
        uint64_t own = owned_host(s, entry);
        bool keep = own && !unmap;
        if (qcow2_has_data_file(s) && own)
            keep = true;                    /* the data file is not refcounted */
        if (keep) {
            ne = entry & (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COPIED);
            if (s->extended_l2)
                nb = zero ? 0xffffffffull << 32 : 0;
            else if (zero)
                ne |= QCOW2_OFLAG_ZERO;
        } else {
            ne = 0;
            if (zero) {
                if (s->extended_l2)
                    nb = 0xffffffffull << 32;
                else
                    ne = QCOW2_OFLAG_ZERO;
            }
            if (holds_cluster(s, entry))
                to_free[nfree++] = entry;
        }
        if (ne != entry || nb != bitmap) {
            set_entry(s, table, first + i, ne, nb);
            changed = true;
        }
    }
    if (changed)
        qcow2_l2_cache_mark_dirty(img, l2_offset);
    if (nfree)
        r = qcow2_l2_cache_write_now(img, l2_offset);
    for (uint64_t i = 0; i < nfree && r == 0; i++)
        r = qcow2_free_l2_entry(img, to_free[i], discard);
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int zero_clusters(struct qimg_image *img, uint64_t off, uint64_t len, bool zero,
                         bool unmap, bool discard)
{
    while (len > 0) {
        uint64_t done;
        int r = zero_clusters_step(img, off, len, zero, unmap, discard, &done);
        if (r < 0)
            return r;
        off += done, len -= done;
    }
    return 0;
}

/* Extended L2: mark whole subclusters of one cluster as zeros. */
static int zero_subclusters(struct qimg_image *img, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    uint64_t cstart = qimg_round_down(off, cs);
    pthread_mutex_lock(&img->lock);
    wait_inflight(img, cstart, cstart + cs);
    uint64_t l2_offset;
    uint8_t *table;
    int r = l2_for_write(img, off, &l2_offset, &table);
    if (r == 0)
        r = prepare_metadata_change(img);
    if (r == 0)
        r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r == 0) {
        uint64_t idx = qcow2_l2_index(s, off), entry, bitmap;
        get_entry(s, table, idx, &entry, &bitmap);
        if (entry & QCOW2_OFLAG_COMPRESSED) {
            r = -ENOTSUP;     /* no subclusters: the caller writes zeros */
        } else {
            uint32_t m = subcluster_mask(s, off - cstart, off - cstart + len);
            uint32_t alloc = QCOW2_L2_BITMAP_ALLOC(bitmap) & ~m;
            uint32_t zero = QCOW2_L2_BITMAP_ZERO(bitmap) | m;
            if (!owned_host(s, entry) && (entry & QCOW2_OFFSET_MASK))
                r = -ENOTSUP; /* shared cluster: copy on write instead */
            else {
                set_entry(s, table, idx, entry, (uint64_t)zero << 32 | alloc);
                qcow2_l2_cache_mark_dirty(img, l2_offset);
            }
        }
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int write_zero_bytes(struct qimg_image *img, uint64_t off, uint64_t len)
{
    CLEANUP_FREE uint8_t *zeros = qimg_xcalloc(1, (size_t)QIMG_MIN(len, 1u << 20));
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN(len, 1u << 20);
        int r = qcow2_write(img, off, zeros, n);
        if (r < 0)
            return r;
        off += n, len -= n;
    }
    return 0;
}

/* Does [off, off+len) read as zeros by block status (this image and its
 * backing chain)?  Past the end of the disk counts as zeros. */
static bool status_zero(struct qimg_image *img, uint64_t off, uint64_t len)
{
    uint64_t size = qcow2_state(img)->size;
    if (off >= size)
        return true;
    len = QIMG_MIN(len, size - off);
    while (len > 0) {
        struct qimg_extent ext;
        if (qimg_block_status_chain(img, off, len, &ext) < 0) {
            qimg_error_clear();
            return false;
        }
        if (!(ext.flags & QIMG_STATUS_ZERO) || ext.length == 0)
            return false;
        off += ext.length, len -= QIMG_MIN(len, ext.length);
    }
    return true;
}

static int zero_partial_owned(struct qimg_image *img, uint64_t off, uint64_t len);

/* A piece smaller than a cluster: subcluster zero bits where they are
 * whole, zero bytes for the rest.  As qemu does, a piece whose cluster
 * (subcluster) reads as zeros around it zeroes the whole unit.  The
 * cluster is in flight meanwhile: a concurrent write into the rest of it
 * must not land between "reads as zeros" and the zeroing of it all. */
static int zero_partial(struct qimg_image *img, uint64_t off, uint64_t len)
{
    uint64_t cs = qcow2_state(img)->cluster_size;
    uint64_t cstart = qimg_round_down(off, cs), cend = qimg_round_down(off + len + cs - 1, cs);
    struct qcow2_inflight f;
    pthread_mutex_lock(&img->lock);
    wait_inflight(img, cstart, cend);
    inflight_add(img, &f, cstart, cend);
    pthread_mutex_unlock(&img->lock);
    int r = zero_partial_owned(img, off, len);
    pthread_mutex_lock(&img->lock);
    inflight_remove(img, &f);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* zero_partial, with the cluster in flight, owned by this thread. */
static int zero_partial_owned(struct qimg_image *img, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t unit = s->subcluster_size;
    uint64_t us = qimg_round_down(off, unit), ue = qimg_round_down(off + len + unit - 1, unit);
    if (s->version >= 3 && (us < off || ue > off + len) &&
        status_zero(img, us, off - us) && status_zero(img, off + len, ue - off - len)) {
        if (!s->extended_l2)
            return zero_clusters(img, us, unit, true, false, false);
        off = us;
        len = ue - us;
    }
    if (s->extended_l2) {
        uint64_t sc = s->subcluster_size;
        uint64_t a, b = qimg_round_down(off + len, sc);
        if (!qimg_round_up_ok(off, sc, &a))
            return -EINVAL;
        if (a < b) {
            int r = zero_subclusters(img, a, b - a);
            if (r == 0) {
                if (a > off && (r = write_zero_bytes(img, off, a - off)) < 0)
                    return r;
                return b < off + len ? write_zero_bytes(img, b, off + len - b) : 0;
            }
            if (r != -ENOTSUP)
                return r;
        }
    }
    return write_zero_bytes(img, off, len);
}

int qcow2_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    int rb = qcow2_bitmap_note_write(img, off, len);   /* enabled bitmaps record it */
    if (rb < 0)
        return rb;
    bool has_zero_flag = s->version >= 3;
    bool backing = img->backing_file != NULL;
    if (!has_zero_flag && backing)
        return -ENOTSUP;          /* v2 over a backing file: real zeros */
    if (qcow2_has_data_file(s) && qcow2_data_file_is_raw(s)) {
        /* the data file stays a valid raw image */
        int r = qimg_io_zero(s->data_io, off, len, flags & QIMG_ZERO_MAY_UNMAP);
        if (r < 0)
            return r;
    }
    uint64_t cs = s->cluster_size;
    uint64_t end = off + len;
    uint64_t a, b = qimg_round_down(end, cs);
    if (end == s->size)
        b = qimg_round_down(end + cs - 1, cs);   /* the last partial cluster counts whole */
    a = qimg_round_down(off + cs - 1, cs);
    /* within one cluster; a range across a boundary without a whole
     * cluster (a == b) goes below as two partial pieces */
    if (a > b)
        return request_done(img, zero_partial(img, off, len));
    int r = 0;
    if (off < a)
        r = zero_partial(img, off, a - off);
    if (r == 0)
        r = zero_clusters(img, a, b - a, has_zero_flag, (flags & QIMG_ZERO_MAY_UNMAP) || !has_zero_flag,
                          (img->flags & QIMG_OPEN_UNMAP) != 0);
    if (r == 0 && b < end)
        r = zero_partial(img, b, end - b);
    return request_done(img, r);
}

int qcow2_discard(struct qimg_image *img, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    int rb = qcow2_bitmap_note_write(img, off, len);   /* enabled bitmaps record it */
    if (rb < 0)
        return rb;
    uint64_t cs = s->cluster_size;
    uint64_t end = off + len;
    uint64_t a = qimg_round_down(off + cs - 1, cs);
    uint64_t b = end == s->size ? qimg_round_down(end + cs - 1, cs) : qimg_round_down(end, cs);
    if (a >= b)
        return 0;                 /* partial clusters are not discarded */
    /* v3 keeps discarded clusters reading as zeros over a backing file */
    bool zero = s->version >= 3 && img->backing_file != NULL;
    return request_done(img, zero_clusters(img, a, b - a, zero, true, true));
}

/* ======================================================== compressed */

int qcow2_compress(struct qimg_image *img, const void *buf, size_t len, void *out, size_t *out_len)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    if (len > cs)
        return qimg_error(-EINVAL, "qcow2: compressed writes must be whole clusters");
    if (qcow2_has_data_file(s))
        return qimg_error(-ENOTSUP, "Cannot use compression with an external data file");
    /* qemu cannot encrypt compressed clusters: it fails the write (EIO)
     * and so does qimg, never storing them in the clear */
    if (s->crypt_method != QCOW2_CRYPT_NONE)
        return qimg_error(-EIO, "Input/output error");
    /* the last cluster of a disk that ends inside it is padded with zeros */
    CLEANUP_FREE uint8_t *whole = NULL;
    if (len < cs) {
        whole = qimg_xcalloc(1, cs);
        memcpy(whole, buf, len);
        buf = whole;
    }
    /* type zlib is raw deflate (qemu's level, zlib's default); stored
     * compressed only when smaller than a cluster */
    bool zstd = s->compression_type == QCOW2_COMPRESSION_ZSTD;
    int r = qimg_codec_compress(zstd ? QIMG_CODEC_ZSTD : QIMG_CODEC_DEFLATE,
                                QIMG_CODEC_LEVEL_DEFAULT, buf, cs, out, cs - 1, out_len);
    if (r == -ENOTSUP)
        return qimg_error(-ENOTSUP, "qcow2: %s compression is not available",
                          zstd ? "zstd" : "zlib");
    return r;
}

int qcow2_write_compressed(struct qimg_image *img, uint64_t off, const void *data, size_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    if (!qimg_is_aligned(off, cs) || len == 0 || len >= cs || off >= s->size)
        return qimg_error(-EINVAL, "qcow2: bad compressed cluster write");
    if (s->crypt_method != QCOW2_CRYPT_NONE)
        return qimg_error(-EIO, "Input/output error");
    int rb = qcow2_bitmap_note_write(img, off, cs);   /* enabled bitmaps record it */
    if (rb < 0)
        return rb;
    pthread_mutex_lock(&img->lock);
    wait_inflight(img, off, off + cs);
    uint64_t l2_offset, host = 0, entry, bitmap;
    uint8_t *table;
    int r = l2_for_write(img, off, &l2_offset, &table);
    if (r == 0)
        r = prepare_metadata_change(img);
    if (r == 0)
        r = qcow2_alloc_bytes(img, len, &host);
    qimg_io_event(img->file, QIMG_EV_WRITE_COMPRESSED);
    if (r == 0)
        r = qimg_io_pwrite(img->file, data, len, host);
    if (r == 0)
        s->ws->compressed_written = true;
    if (r == 0)
        r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r == 0) {
        uint64_t idx = qcow2_l2_index(s, off);
        get_entry(s, table, idx, &entry, &bitmap);
        uint64_t sectors = ((host + len - 1) >> 9) - (host >> 9);
        set_entry(s, table, idx, host | QCOW2_OFLAG_COMPRESSED | sectors << s->csize_shift, 0);
        qcow2_l2_cache_mark_dirty(img, l2_offset);
        if (holds_cluster(s, entry)) {
            r = qcow2_l2_cache_write_now(img, l2_offset);
            if (r == 0)
                r = qcow2_free_l2_entry(img, entry, false);
        }
    }
    pthread_mutex_unlock(&img->lock);
    return request_done(img, r);
}

/* ============================================================ resize */

static int write_l1_header(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t be[12];
    qimg_put_be32(be, s->l1_size);
    qimg_put_be64(be + 4, s->l1_table_offset);
    return write_header_bytes(img, QCOW2_HDR_L1_SIZE, be, 12);
}

/* A larger L1 table elsewhere; the old one is freed. */
static int grow_l1(struct qimg_image *img, uint64_t entries)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    if (entries * 8 > QCOW2_MAX_L1_BYTES)
        return qimg_error(-EFBIG, "L1 table is too large");
    uint64_t clusters = qimg_div_round_up(entries * 8, cs);
    uint64_t host, got;
    int r;
    do {
        r = qcow2_alloc_clusters(img, clusters, &host, &got);
        if (r == 0 && got < clusters) {
            /* not contiguous: skip past this run */
            r = qcow2_free_clusters(img, host, got * cs, false);
            s->ws->free_cluster_index = (host >> s->cluster_bits) + got;
        }
        if (r < 0)
            return r;
    } while (got < clusters);
    uint64_t *t = qimg_xcalloc(entries, 8);
    memcpy(t, s->l1_table, (size_t)s->l1_size * 8);
    CLEANUP_FREE uint8_t *be = qimg_xcalloc(clusters, cs);
    for (uint64_t i = 0; i < entries; i++)
        qimg_put_be64(be + 8 * i, t[i]);
    r = qcow2_refcount_flush(img);
    qimg_io_event(img->file, QIMG_EV_L1_GROW_WRITE_TABLE);
    if (r == 0)    /* the entries only, as qemu (the rest of the cluster stays a hole) */
        r = qimg_io_pwrite(img->file, be, entries * 8, host);
    if (r == 0)
        r = qimg_io_flush(img->file);
    uint64_t old_off = s->l1_table_offset, old_size = s->l1_size;
    if (r == 0) {
        s->l1_table_offset = host;
        s->l1_size = (uint32_t)entries;
        r = write_l1_header(img);
    }
    if (r < 0) {
        s->l1_table_offset = old_off;
        s->l1_size = (uint32_t)old_size;
        free(t);
        return r;
    }
    free(s->l1_table);
    s->l1_table = t;
    if (old_size)
        r = qcow2_free_clusters(img, old_off, qimg_div_round_up(old_size * 8, cs) * cs, false);
    return r;
}

static int write_size(struct qimg_image *img, uint64_t size)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t be[8];
    qimg_put_be64(be, size);
    int r = write_header_bytes(img, QCOW2_HDR_SIZE, be, 8);
    if (r == 0) {
        s->size = size;
        img->size = size;
    }
    return r;
}

/* Last cluster with a nonzero refcount, or -1. */
static int64_t last_used_cluster(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t c = qimg_div_round_up(s->file_size, s->cluster_size);
    while (c-- > 0) {
        uint64_t rc;
        if (qcow2_get_refcount(img, c, &rc) < 0)
            return -1;
        if (rc)
            return (int64_t)c;
    }
    return -1;
}

static int shrink(struct qimg_image *img, uint64_t size)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    uint64_t from = qimg_round_down(size + cs - 1, cs);
    uint64_t old_end = qimg_round_down(s->size + cs - 1, cs);
    int r = 0;
    qcow2_discards_begin(img);      /* freed clusters discarded in merged runs, as qemu */
    if (from < old_end)
        r = zero_clusters(img, from, old_end - from, false, true, true);
    if (r < 0) {
        pthread_mutex_lock(&img->lock);
        qcow2_discards_end(img);
        pthread_mutex_unlock(&img->lock);
        return r;
    }
    uint64_t needed;
    qcow2_l1_entries_for_size(size, s->cluster_bits, s->extended_l2, &needed);
    pthread_mutex_lock(&img->lock);
    r = qcow2_discards_end(img);    /* L2 tables are discarded one by one */
    for (uint64_t i = needed; i < s->l1_size && r == 0; i++) {
        uint64_t l2 = s->l1_table[i] & QCOW2_OFFSET_MASK;
        if (!l2)
            continue;
        s->l1_table[i] = 0;
        r = write_l1_entry(img, i);
        if (r == 0) {
            qcow2_l2_cache_drop(img, l2);
            r = qcow2_free_clusters(img, l2, cs, true);
        }
    }
    if (r == 0)
        r = write_size(img, size);
    if (r == 0)
        r = flush_locked(img);
    if (r == 0)
        r = qcow2_shrink_reftable(img);     /* qcow2-prealloc.c */
    if (r == 0) {
        int64_t last = last_used_cluster(img);
        uint64_t new_len = (uint64_t)(last + 1) * cs;
        if (last >= 0 && new_len < s->file_size && qimg_io_truncate(img->file, new_len) == 0)
            s->file_size = new_len;
    }
    s->l1_vm_state_index = (uint32_t)needed;
    pthread_mutex_unlock(&img->lock);
    return r;
}

int qcow2_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink_ok)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws)
        return qimg_error(-EACCES, "Image is read-only");
    bool prealloc_on = prealloc && strcmp(prealloc, "off");
    if (prealloc_on && strcmp(prealloc, "metadata") && strcmp(prealloc, "falloc") &&
        strcmp(prealloc, "full"))
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    if (s->version < 3 && s->nb_snapshots)
        return qimg_error(-ENOTSUP, "Can't resize a v2 image which has snapshots");
    if (size % 512)
        return qimg_error(-EINVAL, "The new size must be a multiple of 512");
    if (size < s->size && !shrink_ok)
        return qimg_error(-ENOTSUP, "qcow2 doesn't support shrinking images yet");
    int rb = qcow2_bitmap_resize_prepare(img);    /* bitmaps follow the size */
    if (rb < 0)
        return rb;
    if (size < s->size && prealloc_on)
        return qimg_error(-EINVAL, "Preallocation can't be used for shrinking an image");
    if (size < s->size) {
        int rs = shrink(img, size);
        return rs == 0 ? qcow2_bitmap_resized(img) : rs;
    }
    uint64_t needed;
    if (!qcow2_l1_entries_for_size(size, s->cluster_bits, s->extended_l2, &needed))
        return qimg_error(-EFBIG, "Image is too big");
    pthread_mutex_lock(&img->lock);
    int r = 0;     /* the dirty bit only for preallocation (as qemu): qcow2-prealloc.c */
    if (r == 0 && needed > s->l1_size)
        r = grow_l1(img, needed);
    uint64_t old_size = s->size;
    if (r == 0 && prealloc_on) {
        pthread_mutex_unlock(&img->lock);
        r = qcow2_resize_prealloc(img, s->size, size, prealloc);    /* qcow2-prealloc.c */
        pthread_mutex_lock(&img->lock);
    } else if (r == 0 && qcow2_has_data_file(s) && qcow2_data_file_is_raw(s)) {
        /* a raw data file is mapped one to one: always preallocated */
        pthread_mutex_unlock(&img->lock);
        r = qcow2_resize_prealloc(img, s->size, size, "metadata");
        pthread_mutex_lock(&img->lock);
    } else if (r == 0) {
        r = qcow2_resize_data_file(img, size);
    }
    bool zero_new = qcow2_resize_needs_zeroing(img, old_size, prealloc);
    if (r == 0 && zero_new && s->version < 3)
        r = qimg_error(-ENOTSUP, "Failed to zero out new clusters: %s", strerror(ENOTSUP));
    if (r == 0)
        r = write_size(img, size);
    if (r == 0) {
        s->l1_vm_state_index = (uint32_t)needed;
        r = flush_locked(img);
    }
    pthread_mutex_unlock(&img->lock);
    if (r == 0 && zero_new)
        r = qcow2_resize_zero_new(img, old_size, size);
    return r == 0 ? qcow2_bitmap_resized(img) : r;
}

/* ============================================= backing file, make empty */

static void put_ext(uint8_t *buf, size_t *pos, uint32_t type, const void *data, uint32_t len)
{
    qimg_put_be32(buf + *pos, type);
    qimg_put_be32(buf + *pos + 4, len);
    memcpy(buf + *pos + 8, data, len);
    *pos += 8 + ((len + 7) & ~7u);
}

static size_t ext_size(uint32_t len)
{
    return 8 + ((len + 7) & ~7u);
}

/* Rewrite the first cluster's header, extensions and backing name. */
static int rewrite_header(struct qimg_image *img, const char *backing, const char *fmt)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    size_t blen = backing ? strlen(backing) : 0;
    size_t flen = fmt ? strlen(fmt) : 0;
    if (blen > QCOW2_MAX_BACKING_NAME)
        return -EINVAL;
    /* the space needed */
    uint32_t hlen = qcow2_written_header_length(s);
    size_t need = hlen;
    if (fmt)
        need += ext_size((uint32_t)flen);
    if (s->data_file_name)
        need += ext_size((uint32_t)strlen(s->data_file_name));
    if (s->has_crypto_ext)
        need += ext_size(QCOW2_EXT_CRYPTO_LEN);
    if (qcow2_header_has_feature_table(s))
        need += ext_size(QCOW2_STD_FEATURE_TABLE_LEN);
    if (s->has_bitmaps_ext)
        need += ext_size(QCOW2_EXT_BITMAPS_LEN);
    for (size_t i = 0; i < s->nb_unknown_exts; i++)
        need += ext_size(s->unknown_exts[i].len);
    need += 8 + blen;
    if (need > cs)
        return -ENOSPC;

    CLEANUP_FREE uint8_t *buf = qimg_xcalloc(1, cs);
    /* the known header fields as they are on disk now (a v3 header of
     * 104 bytes gets the compression type byte: zlib), the feature bits
     * as they are in memory, the unknown fields after them */
    uint32_t known = s->version >= 3 ? QCOW2_HDR_V3_LENGTH : QCOW2_HDR_V2_LENGTH;
    int r = qimg_io_pread(img->file, buf, QIMG_MIN(known, s->header_length), 0);
    if (r < 0)
        return r;
    if (s->version >= 3) {
        qimg_put_be64(buf + QCOW2_HDR_INCOMPATIBLE_FEATURES, s->incompatible_features);
        qimg_put_be64(buf + QCOW2_HDR_COMPATIBLE_FEATURES, s->compatible_features);
        qimg_put_be64(buf + QCOW2_HDR_AUTOCLEAR_FEATURES, s->autoclear_features);
        qimg_put_be32(buf + QCOW2_HDR_HEADER_LENGTH, hlen);
        if (s->unknown_header_fields_len)
            memcpy(buf + known, s->unknown_header_fields, s->unknown_header_fields_len);
    }
    size_t pos = hlen;
    if (fmt)
        put_ext(buf, &pos, QCOW2_EXT_BACKING_FORMAT, fmt, (uint32_t)flen);
    if (s->data_file_name)
        put_ext(buf, &pos, QCOW2_EXT_DATA_FILE, s->data_file_name, (uint32_t)strlen(s->data_file_name));
    if (s->has_crypto_ext) {
        uint8_t c[QCOW2_EXT_CRYPTO_LEN];
        qimg_put_be64(c, s->crypto_header_offset);
        qimg_put_be64(c + 8, s->crypto_header_length);
        put_ext(buf, &pos, QCOW2_EXT_CRYPTO, c, sizeof c);
    }
    if (qcow2_header_has_feature_table(s)) {
        /* qemu's table, whatever the image had */
        uint8_t ft[QCOW2_STD_FEATURE_TABLE_LEN];
        qcow2_std_feature_table(ft);
        put_ext(buf, &pos, QCOW2_EXT_FEATURE_TABLE, ft, sizeof ft);
    }
    if (s->has_bitmaps_ext) {
        uint8_t b[QCOW2_EXT_BITMAPS_LEN] = { 0 };
        qimg_put_be32(b, s->nb_bitmaps);
        qimg_put_be64(b + 8, s->bitmap_directory_size);
        qimg_put_be64(b + 16, s->bitmap_directory_offset);
        put_ext(buf, &pos, QCOW2_EXT_BITMAPS, b, sizeof b);
    }
    for (size_t i = 0; i < s->nb_unknown_exts; i++)
        put_ext(buf, &pos, s->unknown_exts[i].type, s->unknown_exts[i].data, s->unknown_exts[i].len);
    pos += 8;                                 /* end marker: zeros */
    uint64_t boff = backing ? pos : 0;
    if (backing)
        memcpy(buf + pos, backing, blen);
    qimg_put_be64(buf + QCOW2_HDR_BACKING_FILE_OFFSET, boff);
    qimg_put_be32(buf + QCOW2_HDR_BACKING_FILE_SIZE, (uint32_t)blen);
    r = qimg_io_pwrite(img->file, buf, cs, 0);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        return r;
    s->backing_file_offset = boff;
    s->backing_file_size = (uint32_t)blen;
    s->header_length = hlen;
    free(s->backing_fmt);
    s->backing_fmt = fmt ? qimg_strdup(fmt) : NULL;
    return 0;
}

int qcow2_begin_metadata_change(struct qimg_image *img)
{
    return prepare_metadata_change(img);
}

int qcow2_flush_locked(struct qimg_image *img)
{
    return flush_locked(img);
}

int qcow2_rewrite_header_locked(struct qimg_image *img)
{
    /* rewrite_header replaces s->backing_fmt: hand it a copy */
    CLEANUP_FREE char *fmt = qcow2_state(img)->backing_fmt ? qimg_strdup(qcow2_state(img)->backing_fmt) : NULL;
    int r = rewrite_header(img, img->backing_file, fmt);
    return r < 0 ? qimg_error(r, "Could not update qcow2 header: %s", strerror(-r)) : 0;
}

/* A read-write open (not commit's reopen of its base) updates the header
 * when it holds autoclear bits unknown to us, which it clears, or an
 * ignored bitmaps extension, which it drops; the update writes qemu's
 * feature table and the unknown extensions in reverse order, as qemu's. */
int qcow2_update_header_on_open(struct qimg_image *img, unsigned flags)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws || (flags & QIMG_OPEN_REOPEN))
        return 0;
    if (!(s->autoclear_features & ~QCOW2_AUTOCLEAR_KNOWN) && !s->bitmaps_ext_ignored)
        return 0;
    s->autoclear_features &= QCOW2_AUTOCLEAR_KNOWN;
    s->bitmaps_ext_ignored = false;
    pthread_mutex_lock(&img->lock);
    int r = qcow2_rewrite_header_locked(img);
    pthread_mutex_unlock(&img->lock);
    return r;
}

int qcow2_change_backing(struct qimg_image *img, const char *backing, const char *fmt)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws)
        return -EACCES;
    if (backing && qcow2_has_data_file(s) && qcow2_data_file_is_raw(s))
        return -EINVAL;
    CLEANUP_FREE char *stored_fmt = backing && fmt ? strndup(fmt, QCOW2_BACKING_FMT_MAX) : NULL;
    if (backing && fmt && !stored_fmt)
        return -ENOMEM;
    pthread_mutex_lock(&img->lock);
    int r = flush_locked(img);
    if (r == 0)
        r = rewrite_header(img, backing, stored_fmt);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    qimg_image_set_backing_names(img, backing, stored_fmt);
    return 0;
}

/* After commit: every cluster of the active layer goes (the data now
 * lives in the backing file), leaving an image that reads through. */
int qcow2_make_empty(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->ws)
        return -EACCES;
    if (qcow2_can_empty_completely(img))
        return qcow2_make_completely_empty(img);   /* qcow2-empty.c */
    uint64_t cs = s->cluster_size;
    uint64_t end = qimg_round_down(s->size + cs - 1, cs);
    return zero_clusters(img, 0, end, false, true, true);
}
