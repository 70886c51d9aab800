/* qimg - commit: copy what the upper layers of a backing chain hold into a
 * lower one, generically over block status and guest I/O.  Also finds a
 * layer of a chain by name (commit -b, rebase). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <time.h>

#include "internal.h"
#include "readahead.h"

#define COMMIT_CHUNK ((uint64_t)1 << 20)

/* ---- finding a layer by name ---- */

static bool same_real_path(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    if (!realpath(a, ra) || !realpath(b, rb))
        return false;
    return strcmp(ra, rb) == 0;
}

qimg_image *qimg_find_backing_image(qimg_image *img, const char *name)
{
    bool protocol = qimg_path_has_protocol(name);
    for (qimg_image *cur = img; cur && cur->backing; cur = cur->backing) {
        const char *recorded = cur->backing_file ? cur->backing_file : "";
        if (protocol || qimg_path_has_protocol(recorded)) {
            if (strcmp(name, recorded) == 0 ||
                (cur->full_backing_filename && strcmp(name, cur->full_backing_filename) == 0))
                return cur->backing;
            continue;
        }
        if (strcmp(name, recorded) == 0)
            return cur->backing;
        CLEANUP_FREE char *wanted = qimg_path_combine(cur->file ? cur->file->filename : cur->filename, name);
        if (cur->full_backing_filename && same_real_path(wanted, cur->full_backing_filename))
            return cur->backing;
    }
    return NULL;
}

/* ---- allocation across layers ---- */

int qimg_chain_is_allocated_above(qimg_image *top, qimg_image *base, uint64_t off,
                                  uint64_t len, uint64_t *pnum)
{
    for (qimg_image *l = top; l && l != base; l = l->backing) {
        if (off >= l->size) {
            *pnum = len;
            return 1;
        }
        struct qimg_extent ext;
        int r = qimg_block_status(l, off, len, &ext);
        if (r < 0)
            return r;
        if (ext.flags & QIMG_STATUS_ALLOCATED) {
            *pnum = ext.length;
            return 1;
        }
        len = ext.length;   /* unallocated here for this long */
    }
    *pnum = len;
    return 0;
}

/* ---- rate limit ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep until `done` bytes since `start` fit the rate. */
static void rate_wait(double start, uint64_t done, uint64_t rate)
{
    if (rate == 0)
        return;
    double ahead = (double)done / (double)rate - (now_seconds() - start);
    if (ahead <= 0)
        return;
    struct timespec ts = { (time_t)ahead, (long)((ahead - (double)(time_t)ahead) * 1e9) };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- commit ---- */

static bool in_chain(qimg_image *top, qimg_image *layer)
{
    for (qimg_image *l = top->backing; l; l = l->backing)
        if (l == layer)
            return true;
    return false;
}

/* ---- what the job copies ----
 *
 * qemu's commit job works in granules of the base's cluster size (at
 * least 4 KiB; 64 KiB when the format has none): a granule is copied when
 * any byte of it is allocated above base.  For a run of such granules it
 * asks the status of the whole chain at the run's start: a uniform prefix
 * of at least one granule without data becomes a zero write (or a discard
 * when it does not even read as zeros), anything else is copied as data,
 * read through the chain - so a partly allocated granule lands in base
 * whole. */
static uint64_t base_granularity(qimg_image *base)
{
    int64_t cluster = qimg_image_cluster_size(base);
    if (cluster > 0 && cluster <= (int64_t)1 << 30)
        return (uint64_t)QIMG_MAX(cluster, (int64_t)4096);
    return 65536;
}

/* Bytes from off (up to end) where nothing is allocated above base. */
static int clean_prefix(qimg_image *top, qimg_image *base, uint64_t off, uint64_t end,
                        uint64_t *len)
{
    uint64_t pos = off;
    while (pos < end) {
        uint64_t n;
        int r = qimg_chain_is_allocated_above(top, base, pos, end - pos, &n);
        if (r < 0)
            return r;
        if (r == 1)
            break;
        pos += n;
    }
    *len = pos - off;
    return 0;
}

/* off is a dirty granule's start: the end of the run of dirty granules. */
static int dirty_run_end(qimg_image *top, qimg_image *base, uint64_t g, uint64_t off,
                         uint64_t end, uint64_t *run_end)
{
    uint64_t pos = off;
    while (pos < end) {
        uint64_t clean;
        int r = clean_prefix(top, base, pos, end, &clean);
        if (r < 0)
            return r;
        uint64_t gend = QIMG_MIN(qimg_round_down(pos, g) + g, end);
        if (pos + clean >= gend && pos == qimg_round_down(pos, g))
            break;                         /* a whole clean granule */
        if (pos + clean >= gend) {
            pos = gend;                    /* the granule was dirty before pos */
            continue;
        }
        /* allocated at pos + clean: dirty through that granule at least */
        uint64_t n;
        r = qimg_chain_is_allocated_above(top, base, pos + clean, end - pos - clean, &n);
        if (r < 0)
            return r;
        pos = QIMG_MIN(qimg_round_down(pos + clean + n + g - 1, g), end);
    }
    *run_end = pos;
    return 0;
}

enum method { COPY, ZERO, DISCARD };

/* From off (a granule start) inside a dirty run ending at end: how many
 * bytes to handle at once and how. */
static int plan_io(qimg_image *top, uint64_t g, uint64_t off, uint64_t end, uint64_t *len,
                   enum method *how, qimg_image **src)
{
    struct qimg_extent ext;
    int r = qimg_block_status_chain(top, off, end - off, &ext);
    if (r < 0)
        return r;
    uint64_t io = qimg_round_down(ext.length, g);
    *how = COPY;
    *src = top;
    if (io < g) {
        io = g;
    } else if (!(ext.flags & QIMG_STATUS_DATA)) {
        *how = (ext.flags & QIMG_STATUS_ZERO) ? ZERO : DISCARD;
    } else {
        /* one layer answered for all of it: read it there, not through
         * the layers above (the same bytes, fewer lookups) */
        io = QIMG_MIN(io, COMMIT_CHUNK);
        for (unsigned d = 0; d < ext.depth && (*src)->backing; d++)
            *src = (*src)->backing;
    }
    *len = QIMG_MIN(io, end - off);
    return 0;
}

static int do_io(qimg_image *src, qimg_image *base, enum method how, uint64_t off, uint64_t len,
                 uint8_t *buf)
{
    if (how == ZERO)
        return qimg_write_zeroes(base, off, len, QIMG_ZERO_MAY_UNMAP);
    if (how == DISCARD)
        return qimg_discard(base, off, len);
    int r = qimg_read(src, off, buf, (size_t)len);
    if (r == 0)
        r = qimg_write(base, off, buf, (size_t)len);
    return r;
}

static int grow_base(qimg_image *base, uint64_t size)
{
    if (base->size >= size)
        return 0;
    return qimg_drv_resize(base, size, "off", false);
}

/* The copy runs on a few worker threads, each taking the next chunk of
 * the disk (the order clusters land in base does not matter: qemu's own
 * job copies with concurrent requests too).  With a rate limit, one. */
#define COMMIT_THREADS 4

struct commit_job {
    const struct qimg_commit_params *p;
    qimg_image *base;
    uint64_t granularity;       /* base's cluster size, see plan_io */
    uint64_t chunk;             /* bytes handed out at once (granules) */
    pthread_mutex_t lock;
    uint64_t next;              /* next chunk to hand out */
    uint64_t done;              /* bytes of the disk handled */
    uint64_t copied;            /* bytes written (rate limit) */
    double start;
    int err;                    /* first failure */
};

/* Chunks read ahead of the one handed out (see readahead.c). */
#define COMMIT_READAHEAD 8

static bool take_chunk(struct commit_job *j, uint64_t *off, uint64_t *len)
{
    uint64_t size = j->p->top->size;
    pthread_mutex_lock(&j->lock);
    bool ok = j->err == 0 && j->next < size;
    if (ok) {
        *off = j->next;
        *len = QIMG_MIN(j->chunk, size - *off);
        j->next += *len;
    }
    pthread_mutex_unlock(&j->lock);
    uint64_t ahead = ok ? *off + COMMIT_READAHEAD * j->chunk : size;
    if (ahead < size)
        qimg_chain_readahead(j->p->top, j->base, ahead, j->chunk);
    return ok;
}

/* With a writeback cache, the data written stays dirty in the page cache
 * until the final flush, which then writes all of it while nothing else
 * happens.  Starting the writeback every WRITEBACK_STEP bytes overlaps it
 * with the copy (it does not wait, and changes nothing on durability). */
#define WRITEBACK_STEP ((uint64_t)32 << 20)

static void start_writeback(struct qimg_io *io)
{
    qimg_io_hint(io, QIMG_IO_HINT_WRITEBACK, 0, 0);   /* 0, 0: the whole file */
}

/* Account for a handled run; progress as the share of the disk handled. */
static void note_done(struct commit_job *j, uint64_t handled, uint64_t copied)
{
    const struct qimg_commit_params *p = j->p;
    pthread_mutex_lock(&j->lock);
    j->done += handled;
    bool writeback = (j->copied + copied) / WRITEBACK_STEP != j->copied / WRITEBACK_STEP;
    j->copied += copied;
    uint64_t total = j->copied;
    if (p->progress)
        p->progress((double)j->done * 100.0 / (double)p->top->size, p->progress_opaque);
    pthread_mutex_unlock(&j->lock);
    if (writeback)
        start_writeback(j->base->file);
    rate_wait(j->start, total, p->rate_limit);
}

/* One chunk (granule aligned): clean granules skipped, dirty runs handled
 * in pieces as plan_io says. */
static int commit_chunk(struct commit_job *j, uint64_t off, uint64_t len, uint8_t *buf)
{
    qimg_image *top = j->p->top;
    uint64_t g = j->granularity, end = off + len;
    while (off < end) {
        uint64_t clean;
        int r = clean_prefix(top, j->base, off, end, &clean);
        if (r < 0)
            return r;
        uint64_t skip = off + clean == end ? clean : qimg_round_down(clean, g);
        if (skip) {
            note_done(j, skip, 0);
            off += skip;
            continue;
        }
        uint64_t run;
        r = dirty_run_end(top, j->base, g, off, end, &run);
        if (r < 0)
            return r;
        while (off < run) {
            uint64_t n;
            enum method how;
            qimg_image *src;
            r = plan_io(top, g, off, run, &n, &how, &src);
            if (r == 0)
                r = do_io(src, j->base, how, off, n, buf);
            if (r < 0)
                return r;
            note_done(j, n, n);
            off += n;
        }
    }
    return 0;
}

static void commit_worker(void *opaque)
{
    struct commit_job *j = opaque;
    CLEANUP_FREE uint8_t *buf = qimg_io_buffer(j->chunk);
    uint64_t off, len;
    while (take_chunk(j, &off, &len)) {
        int r = commit_chunk(j, off, len, buf);
        if (r < 0) {
            pthread_mutex_lock(&j->lock);
            if (j->err == 0)
                j->err = r;
            pthread_mutex_unlock(&j->lock);
        }
    }
}

/* The copy itself, qemu's block job: its failures are reported as
 * "Block job failed: <reason>". */
static int commit_job(const struct qimg_commit_params *p, qimg_image *base)
{
    int r = grow_base(base, p->top->size);
    if (r < 0)
        return r;
    struct commit_job j = { .p = p, .base = base, .start = now_seconds() };
    j.granularity = base_granularity(base);
    j.chunk = QIMG_MAX(COMMIT_CHUNK, j.granularity);
    pthread_mutex_init(&j.lock, NULL);
    unsigned nthreads = p->rate_limit ? 1 : COMMIT_THREADS;
    struct qimg_pool *pool = NULL;
    r = qimg_pool_new(&pool, nthreads);
    for (unsigned i = 0; i < nthreads && r == 0; i++)
        r = qimg_pool_submit(pool, commit_worker, &j);
    if (pool) {
        qimg_pool_wait(pool);
        qimg_pool_free(pool);
    }
    pthread_mutex_destroy(&j.lock);
    if (r == 0)
        r = j.err;
    return r < 0 ? r : qimg_flush(base);
}

int qimg_commit(const struct qimg_commit_params *p)
{
    qimg_image *top = p->top;
    qimg_image *base = p->base ? p->base : top->backing;
    if (!base)
        return qimg_error(-EINVAL, "Image does not have a backing file");
    if (!in_chain(top, base))
        return qimg_error(-EINVAL, "Base image is not in the backing chain of '%s'", top->filename);
    int r = 0;
    if (base->read_only)
        r = qimg_reopen_rw(base, top->flags);
    if (r < 0)
        return r;
    r = commit_job(p, base);
    if (r < 0)
        return qimg_error(r, "Block job failed: %s", strerror(-r));
    if (!p->keep_top) {
        r = qimg_drv_make_empty(top);
        if (r < 0 && r != -ENOTSUP)
            return qimg_error(r, "Failed to empty %s: %s", top->filename, strerror(-r));
    }
    return 0;
}
