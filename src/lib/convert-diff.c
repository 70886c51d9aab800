/* qimg - convert -D: write the target as an overlay of its backing file
 * (the "diff base") holding only what differs between the source and it.
 *
 * Per target cluster: equal in source and base -> left unallocated (reads
 * fall through to the base); the source reads zero and the base does not
 * -> a zero cluster; otherwise the source's data (compressed with -c).
 *
 * How it works: one walker (under a mutex) skips, by block status, ranges
 * where both images read as zeros, and hands out cluster-aligned units of
 * work of at most DIFF_CHUNK bytes.  Worker threads read both images for a
 * unit, decide cluster by cluster, compress when asked, then write their
 * unit in guest order.
 *
 * Incremental backup (diff_since, qimg's --from-snapshot): the source's
 * storage (rbd's object map through diff-iterate) says which ranges
 * changed since the snapshot the base was made from; the walker skips the
 * unchanged ones without reading either image, and a unit never reaches
 * past the changed range it starts in.
 */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"
#include "readahead.h"

#define DIFF_CHUNK (512u << 10)  /* two buffers a worker: 2 MiB units doubled the peak memory */
#define DEFAULT_CLUSTER 65536u
#define READAHEAD_UNITS 4       /* how far ahead of the walker the kernel reads */

enum diff_op { OP_SKIP, OP_ZERO, OP_DATA };

struct diff_unit {
    uint64_t seq, off, len;
};

struct diff {
    const struct qimg_convert_params *p;
    qimg_image *src, *base, *t;
    uint64_t size;                /* the source's size: what the target holds */
    struct qimg_io *since_io;     /* diff_since: the source's storage */
    uint64_t cluster, chunk;

    pthread_mutex_t lock;
    pthread_cond_t turn;
    uint64_t off;                 /* the walker's position */
    uint64_t seq_next, seq_write;
    uint64_t done;                /* bytes decided, for progress */
    int err;
    char *errmsg;
};

static void diff_fail(struct diff *d, int err)
{
    pthread_mutex_lock(&d->lock);
    if (!d->err) {
        d->err = err;
        d->errmsg = qimg_strdup(qimg_last_error());
    }
    pthread_cond_broadcast(&d->turn);
    pthread_mutex_unlock(&d->lock);
}

/* Status of img at off, reading as zeros past its end. */
static int status_at(qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    uint64_t size = qimg_size(img);
    if (off >= size) {
        *ext = (struct qimg_extent){ .offset = off, .length = len,
                                     .flags = QIMG_STATUS_ZERO };
        return 0;
    }
    int r = qimg_block_status_chain(img, off, QIMG_MIN(len, size - off), ext);
    if (r == 0 && ext->length == 0)
        return qimg_error(-EIO, "block status made no progress at byte %" PRIu64, off);
    return r;
}

/* Length of the range at off where both images read as zeros (0 if none). */
static int both_zero_run(struct diff *d, uint64_t off, uint64_t *run)
{
    uint64_t pos = off;
    while (pos < d->size) {
        struct qimg_extent es, eb;
        int r = status_at(d->src, pos, d->size - pos, &es);
        if (r < 0)
            return r;
        if (!(es.flags & QIMG_STATUS_ZERO))
            break;
        r = status_at(d->base, pos, es.length, &eb);
        if (r < 0)
            return r;
        if (!(eb.flags & QIMG_STATUS_ZERO))
            break;
        pos += QIMG_MIN(es.length, eb.length);
    }
    *run = QIMG_MIN(pos, d->size) - off;
    return 0;
}

static void report_progress(struct diff *d)
{
    if (d->p->progress && d->size)
        d->p->progress(100.0 * (double)d->done / (double)d->size, d->p->progress_opaque);
}

/* diff_since: is the range at off changed since the snapshot, and for how
 * long (*len, at most max) does that hold? */
static int changed_run(struct diff *d, uint64_t off, uint64_t max, bool *changed, uint64_t *len)
{
    uint64_t pos = off;
    *len = 0;
    while (pos < off + max) {
        uint64_t n;
        bool ch;
        int r = d->since_io->ops->changed_extent(d->since_io, d->p->diff_since, pos,
                                                 off + max - pos, &n, &ch);
        if (r < 0)
            return r;
        if (n == 0)
            return qimg_error(-EIO, "change tracking made no progress at byte %" PRIu64, pos);
        if (pos == off)
            *changed = ch;
        else if (ch != *changed)
            break;
        pos += n;
    }
    *len = pos - off;
    return 0;
}

/* diff_since: the unchanged run at off (whole clusters, or to the end),
 * and how far the changed range from off reaches (cluster-aligned). */
static int since_skip(struct diff *d, uint64_t off, uint64_t *skip, uint64_t *changed_len)
{
    bool changed = false;
    uint64_t run;
    int r = changed_run(d, off, d->size - off, &changed, &run);
    if (r < 0)
        return r;
    *skip = 0;
    *changed_len = d->size - off;
    if (!changed)
        *skip = off + run >= d->size ? d->size - off : run / d->cluster * d->cluster;
    else
        *changed_len = QIMG_MIN(d->size - off, qimg_div_round_up(run, d->cluster) * d->cluster);
    /* less than a cluster unchanged before a change: read with it */
    if (!changed && !*skip)
        *changed_len = QIMG_MIN(d->size - off, qimg_div_round_up(run + 1, d->cluster) * d->cluster);
    return 0;
}

/* Next unit, or 0 at the end.  Called with the lock held. */
static int next_unit(struct diff *d, struct diff_unit *u)
{
    while (!d->err && d->off < d->size) {
        uint64_t run, reach = d->size - d->off;
        if (d->since_io) {
            uint64_t skip;
            int r = since_skip(d, d->off, &skip, &reach);
            if (r < 0)
                return r;
            if (skip) {
                d->off += skip;
                d->done += skip;
                report_progress(d);
                continue;
            }
        }
        int r = both_zero_run(d, d->off, &run);
        if (r < 0)
            return r;
        /* skip whole clusters only: a unit starts on a cluster boundary */
        uint64_t skip = d->off + run >= d->size ? d->size - d->off
                                                : (run / d->cluster) * d->cluster;
        if (skip) {
            d->off += skip;
            d->done += skip;
            report_progress(d);
            continue;
        }
        *u = (struct diff_unit){ .seq = d->seq_next++, .off = d->off,
                                 .len = QIMG_MIN(QIMG_MIN(d->chunk, d->size - d->off), reach) };
        d->off += u->len;
        /* both files are read cold: start the kernel on units to come */
        uint64_t ahead = d->off + (READAHEAD_UNITS - 1) * d->chunk;
        if (ahead < d->size && !d->since_io) {
            qimg_chain_readahead(d->src, NULL, ahead, QIMG_MIN(d->chunk, d->size - ahead));
            qimg_chain_readahead(d->base, NULL, ahead, QIMG_MIN(d->chunk, d->size - ahead));
        }
        return 1;
    }
    return 0;
}

/* Marks in known_zero[] the clusters of [off, off+len) that img's block
 * status proves read as zeros. */
static int mark_zero_clusters(struct diff *d, qimg_image *img, uint64_t off, uint64_t len,
                              bool *known_zero)
{
    size_t n = (size_t)qimg_div_round_up(len, d->cluster);
    for (size_t k = 0; k < n; k++)
        known_zero[k] = true;
    uint64_t pos = off;
    while (pos < off + len) {
        struct qimg_extent e;
        int r = status_at(img, pos, off + len - pos, &e);
        if (r < 0)
            return r;
        uint64_t end = QIMG_MIN(pos + e.length, off + len);
        if (!(e.flags & QIMG_STATUS_ZERO))
            for (uint64_t k = (pos - off) / d->cluster; k <= (end - 1 - off) / d->cluster; k++)
                known_zero[k] = false;
        pos = end;
    }
    return 0;
}

/* Reads [off, off+len) of img into buf, zeros past its end. */
static int read_padded(qimg_image *img, uint64_t off, uint8_t *buf, uint64_t len)
{
    uint64_t size = qimg_size(img);
    size_t real = off < size ? (size_t)QIMG_MIN(len, size - off) : 0;
    if (real) {
        int r = qimg_read(img, off, buf, real);
        if (r < 0)
            return qimg_error(r, "error while reading at byte %" PRIu64 ": %s", off,
                              strerror(-r));
    }
    memset(buf + real, 0, (size_t)len - real);
    return 0;
}

struct diff_bufs {
    uint8_t *src, *base, *out;
    bool *src_zero, *base_zero;
    enum diff_op *op;
    size_t *clen;                 /* compressed length, 0 = stored as it is */
};

static int decide_clusters(struct diff *d, const struct diff_unit *u, struct diff_bufs *b)
{
    size_t n = (size_t)qimg_div_round_up(u->len, d->cluster);
    int r = mark_zero_clusters(d, d->src, u->off, u->len, b->src_zero);
    if (r == 0)
        r = mark_zero_clusters(d, d->base, u->off, u->len, b->base_zero);
    if (r < 0)
        return r;
    bool need_src = false, need_base = false;
    for (size_t k = 0; k < n; k++) {
        need_src |= !b->src_zero[k];
        need_base |= !b->base_zero[k];
    }
    r = need_src ? read_padded(d->src, u->off, b->src, u->len) : (memset(b->src, 0, u->len), 0);
    if (r == 0)
        r = need_base ? read_padded(d->base, u->off, b->base, u->len)
                      : (memset(b->base, 0, u->len), 0);
    if (r < 0)
        return r;
    for (size_t k = 0; k < n; k++) {
        uint64_t at = k * d->cluster, len = QIMG_MIN(d->cluster, u->len - at);
        b->clen[k] = 0;
        if ((b->src_zero[k] && b->base_zero[k]) || !memcmp(b->src + at, b->base + at, len))
            b->op[k] = OP_SKIP;
        else if (b->src_zero[k] || qimg_is_zero(b->src + at, len))
            b->op[k] = OP_ZERO;
        else
            b->op[k] = OP_DATA;
        /* -c: whole clusters, and the image's last one even when short */
        if (b->op[k] == OP_DATA && d->p->compress &&
            (len == d->cluster || u->off + at + len == qimg_size(d->t))) {
            r = qimg_drv_compress(d->t, b->src + at, len, b->out + at, &b->clen[k]);
            if (r == -ENOSPC)
                b->clen[k] = 0, r = 0;
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static int write_error_at(int r, uint64_t off)
{
    return qimg_error(r, "error while writing at byte %" PRIu64 ": %s", off, strerror(-r));
}

/* Writes the unit's clusters, merging neighbours with the same operation. */
static int write_clusters(struct diff *d, const struct diff_unit *u, const struct diff_bufs *b)
{
    size_t n = (size_t)qimg_div_round_up(u->len, d->cluster);
    for (size_t k = 0; k < n;) {
        size_t e = k + 1;
        uint64_t at = k * d->cluster;
        int r = 0;
        if (b->op[k] == OP_DATA && b->clen[k]) {
            r = qimg_drv_write_compressed(d->t, u->off + at, b->out + at, b->clen[k]);
        } else if (b->op[k] != OP_SKIP) {
            while (e < n && b->op[e] == b->op[k] && !b->clen[e])
                e++;
            uint64_t len = QIMG_MIN(e * d->cluster, u->len) - at;
            /* no unmap: a hole would show the base's data */
            r = b->op[k] == OP_ZERO ? qimg_write_zeroes(d->t, u->off + at, len, 0)
                                    : qimg_write(d->t, u->off + at, b->src + at, (size_t)len);
        }
        if (r < 0)
            return write_error_at(r, u->off + at);
        k = e;
    }
    return 0;
}

static void wait_for_turn(struct diff *d, const struct diff_unit *u)
{
    pthread_mutex_lock(&d->lock);
    while (d->seq_write != u->seq && !d->err)
        pthread_cond_wait(&d->turn, &d->lock);
    pthread_mutex_unlock(&d->lock);
}

static void unit_done(struct diff *d, const struct diff_unit *u)
{
    pthread_mutex_lock(&d->lock);
    d->seq_write = u->seq + 1;
    d->done += u->len;
    report_progress(d);
    pthread_cond_broadcast(&d->turn);
    pthread_mutex_unlock(&d->lock);
}

static void diff_worker(void *opaque)
{
    struct diff *d = opaque;
    size_t n = (size_t)(d->chunk / d->cluster);
    CLEANUP_FREE uint8_t *src = qimg_io_buffer(d->chunk);
    CLEANUP_FREE uint8_t *base = qimg_io_buffer(d->chunk);
    CLEANUP_FREE uint8_t *out = d->p->compress ? qimg_xmalloc(d->chunk) : NULL;
    CLEANUP_FREE bool *src_zero = qimg_xcalloc(n, sizeof(bool));
    CLEANUP_FREE bool *base_zero = qimg_xcalloc(n, sizeof(bool));
    CLEANUP_FREE enum diff_op *op = qimg_xcalloc(n, sizeof *op);
    CLEANUP_FREE size_t *clen = qimg_xcalloc(n, sizeof *clen);
    struct diff_bufs b = { src, base, out, src_zero, base_zero, op, clen };
    struct diff_unit u;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        int r = next_unit(d, &u);
        pthread_mutex_unlock(&d->lock);
        if (r <= 0) {
            if (r < 0)
                diff_fail(d, r);
            return;
        }
        r = decide_clusters(d, &u, &b);
        if (r == 0) {
            wait_for_turn(d, &u);
            if (!d->err)
                r = write_clusters(d, &u, &b);
        }
        if (r < 0) {
            diff_fail(d, r);
            return;
        }
        unit_done(d, &u);
    }
}

static uint64_t target_cluster_size(qimg_image *t)
{
    int64_t cluster = qimg_image_cluster_size(t);
    if (cluster < 512 || !qimg_is_pow2((uint64_t)cluster))
        return DEFAULT_CLUSTER;
    return (uint64_t)cluster;
}

/* The storage that tells what changed in src since a snapshot: src must be
 * raw (guest offsets are storage offsets) on a storage that can. */
static int since_storage(qimg_image *src, struct qimg_io **out)
{
    struct qimg_io *io = src->file;
    uint64_t io_size = 0;
    if (!(src->drv->flags & QIMG_DRV_NO_METADATA) || src->backing || !io ||
        !io->ops->changed_extent || qimg_io_get_size(io, &io_size) < 0 || io_size != qimg_size(src))
        return qimg_error(-ENOTSUP, "--from-snapshot needs a raw source on storage that tracks "
                          "changes between snapshots (rbd)");
    *out = io;
    return 0;
}

int qimg_convert_diff(const struct qimg_convert_params *p, unsigned nthreads)
{
    if (p->nsources != 1)
        return qimg_error(-EINVAL, "-D takes exactly one source image");
    struct diff d = { .p = p, .src = p->sources[0], .t = p->target };
    d.base = qimg_backing(p->target);
    if (!d.base)
        return qimg_error(-EINVAL, "The target image has no backing file to compare with");
    if (p->compress && !qimg_drv_can(d.t->drv, QIMG_CAP_COMPRESS))
        return qimg_error(-ENOTSUP, "Compression not supported for this file format");
    if (p->diff_since) {
        int r = since_storage(d.src, &d.since_io);
        if (r < 0)
            return r;
    }
    d.size = qimg_size(d.src);
    d.cluster = target_cluster_size(d.t);
    d.chunk = QIMG_MAX(d.cluster, (uint64_t)DIFF_CHUNK / d.cluster * d.cluster);
    if (qimg_size(d.t) < d.size)
        return qimg_error(-ENOSPC, "output file is smaller than input file");
    uint64_t first = QIMG_MIN((READAHEAD_UNITS - 1) * d.chunk, d.size);
    if (!d.since_io) {
        qimg_chain_readahead(d.src, NULL, 0, first);
        qimg_chain_readahead(d.base, NULL, 0, first);
    }
    pthread_mutex_init(&d.lock, NULL);
    pthread_cond_init(&d.turn, NULL);
    struct qimg_pool *pool = NULL;
    int r = qimg_pool_new(&pool, nthreads);
    if (r == 0) {
        for (unsigned i = 0; i < nthreads && r == 0; i++)
            r = qimg_pool_submit(pool, diff_worker, &d);
        qimg_pool_wait(pool);
        qimg_pool_free(pool);
    }
    if (r == 0 && d.err)
        r = qimg_error(d.err, "%s", d.errmsg);
    free(d.errmsg);
    pthread_cond_destroy(&d.turn);
    pthread_mutex_destroy(&d.lock);
    return r;
}
