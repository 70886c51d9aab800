/* qimg - compare the guest content of two images, as qemu-img compare.
 *
 * Sizes count rounded up to 512 bytes, as qemu-img sees raw files.  A
 * walker reads the block status of both images in order and hands out
 * units of at most CHUNK bytes; ranges that read as zeros in both are
 * skipped without reading.  Workers compare units in parallel; the result
 * is the lowest mismatching offset whatever the order the workers finish
 * in, because the walker stops handing out units past a known mismatch
 * and the smallest one found wins.  Offsets are reported rounded down to
 * 512 (the sector holding the first differing byte).
 *
 * Past the end of the smaller image the larger one must read as zeros.
 * Strict mode also requires equal sizes and equal block status flags.
 */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"

#define CHUNK (512u << 10)
#define SECTOR 512u
#define STRICT_FLAGS (QIMG_STATUS_DATA | QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED | \
                      QIMG_STATUS_OFFSET | QIMG_STATUS_EOF)
#define NO_MISMATCH UINT64_MAX
#define MAX_THREADS 4

struct side {
    qimg_image *img;
    uint64_t size;            /* padded to 512 */
    uint64_t ext_end;         /* cached status until here */
    unsigned flags;
};

/* qemu-img compare quotes its arguments as given. */
static const char *given_name(const qimg_image *img)
{
    return img->given_name ? img->given_name : qimg_filename(img);
}

struct cunit {
    uint64_t seq;
    uint64_t off, len;
    bool zero_a, zero_b;      /* that side reads as zeros: no read */
    bool tail;                /* past the end of the smaller image */
};

struct compare {
    struct side a, b;
    bool strict;
    pthread_mutex_t lock;
    uint64_t off, common, total;
    uint64_t mismatch;        /* lowest content mismatch found */
    uint64_t status_mismatch; /* strict: where the flags differ */
    int err;
    bool status_error;
    char *errmsg;
    uint64_t err_off;         /* errors past a mismatch do not count */
    /* progress is reported in guest order: units in flight, each with the
     * skipped (zero in both) bytes that followed it */
    struct { uint64_t seq, len, skipped; bool done; } pend[MAX_THREADS + 1];
    unsigned pend_head, pend_count;
    uint64_t seq_next;
    uint64_t done;
    qimg_progress_fn progress;
    void *opaque;
};

static uint64_t padded_size(const qimg_image *img)
{
    return (qimg_size(img) + SECTOR - 1) & ~(uint64_t)(SECTOR - 1);
}

/* Record an error at offset off; only the first (lowest) one is kept. */
static void record_error(struct compare *c, int err, uint64_t off, bool status)
{
    if (c->err && off >= c->err_off)
        return;
    free(c->errmsg);
    c->err = err;
    c->err_off = off;
    c->status_error = status;
    c->errmsg = qimg_strdup(qimg_last_error());
}

static int side_status(struct side *s, uint64_t off, uint64_t limit)
{
    if (off < s->ext_end)
        return 0;
    if (off >= qimg_size(s->img)) {       /* the padding up to 512 */
        s->flags = QIMG_STATUS_ZERO | QIMG_STATUS_EOF;
        s->ext_end = s->size;
        return 0;
    }
    struct qimg_extent ext;
    int r = qimg_block_status_chain(s->img, off, QIMG_MIN(limit, qimg_size(s->img)) - off, &ext);
    if (r < 0)
        return qimg_error(r, "Sector allocation test failed for %s", given_name(s->img));
    s->flags = ext.flags;
    s->ext_end = off + ext.length;
    /* a hole ending where a file ends inside a sector goes on past it, as
     * qemu reports it: merge the extents that follow with the same status */
    while (s->ext_end % SECTOR && s->ext_end < QIMG_MIN(limit, qimg_size(s->img))) {
        struct qimg_extent next;
        uint64_t end = QIMG_MIN(limit, qimg_size(s->img));
        r = qimg_block_status_chain(s->img, s->ext_end, end - s->ext_end, &next);
        if (r < 0)
            return qimg_error(r, "Sector allocation test failed for %s", given_name(s->img));
        if ((next.flags & ~QIMG_STATUS_EOF) != (s->flags & ~QIMG_STATUS_EOF))
            break;
        s->flags = next.flags;
        s->ext_end += next.length;
    }
    if (s->ext_end >= qimg_size(s->img))
        s->ext_end = s->size;
    return 0;
}

static bool reads_zero(unsigned flags) { return flags & QIMG_STATUS_ZERO; }

static void report_progress(struct compare *c, uint64_t bytes)
{
    c->done += bytes;
    if (c->progress && bytes)
        c->progress(100.0 * (double)c->done / (double)c->total, c->opaque);
}

/* Zero-in-both bytes after the units in flight count when they do. */
static void skipped(struct compare *c, uint64_t bytes)
{
    if (c->pend_count == 0)
        report_progress(c, bytes);
    else
        c->pend[(c->pend_head + c->pend_count - 1) % (MAX_THREADS + 1)].skipped += bytes;
}

/* A unit compared equal: report what is now done in order. */
static void unit_done(struct compare *c, uint64_t seq)
{
    for (unsigned i = 0; i < c->pend_count; i++) {
        unsigned slot = (c->pend_head + i) % (MAX_THREADS + 1);
        if (c->pend[slot].seq == seq)
            c->pend[slot].done = true;
    }
    while (c->pend_count && c->pend[c->pend_head].done) {
        report_progress(c, c->pend[c->pend_head].len);
        report_progress(c, c->pend[c->pend_head].skipped);
        c->pend_head = (c->pend_head + 1) % (MAX_THREADS + 1);
        c->pend_count--;
    }
}

/* Next unit to compare; 0 at the end or once a mismatch lies before the
 * walker.  Called with the lock held. */
static int next_unit(struct compare *c, struct cunit *u)
{
    while (c->off < c->total && !c->err && c->mismatch == NO_MISMATCH &&
           c->status_mismatch == NO_MISMATCH) {
        uint64_t off = c->off;
        bool tail = off >= c->common;
        struct side *big = c->a.size >= c->b.size ? &c->a : &c->b;
        uint64_t end;
        bool za, zb;
        if (!tail) {
            int r = side_status(&c->a, off, c->common);
            if (r == 0)
                r = side_status(&c->b, off, c->common);
            if (r < 0) {
                record_error(c, r, off, true);
                return r;
            }
            end = QIMG_MIN(QIMG_MIN(c->a.ext_end, c->b.ext_end), c->common);
            if (c->strict && (c->a.flags & STRICT_FLAGS) != (c->b.flags & STRICT_FLAGS)) {
                c->status_mismatch = off;
                return 0;
            }
            za = reads_zero(c->a.flags);
            zb = reads_zero(c->b.flags);
        } else {
            int r = side_status(big, off, big->size);
            if (r < 0) {
                record_error(c, r, off, true);
                return r;
            }
            end = big->ext_end;
            za = zb = true;
            if (big == &c->a)
                za = reads_zero(big->flags);
            else
                zb = reads_zero(big->flags);
        }
        if (za && zb) {                    /* nothing to read */
            c->off = end;
            skipped(c, end - off);
            continue;
        }
        *u = (struct cunit){ .seq = c->seq_next++, .off = off,
                             .len = QIMG_MIN(end - off, (uint64_t)CHUNK),
                             .zero_a = za, .zero_b = zb, .tail = tail };
        unsigned slot = (c->pend_head + c->pend_count++) % (MAX_THREADS + 1);
        c->pend[slot].seq = u->seq;
        c->pend[slot].len = u->len;
        c->pend[slot].skipped = 0;
        c->pend[slot].done = false;
        c->off = off + u->len;
        return 1;
    }
    return 0;
}

static int read_side(struct compare *c, struct side *s, const struct cunit *u,
                     uint8_t *buf, bool zero)
{
    uint64_t size = qimg_size(s->img);
    size_t real = (!zero && u->off < size) ? (size_t)QIMG_MIN(u->len, size - u->off) : 0;
    if (real) {
        int r = qimg_read(s->img, u->off, buf, real);
        if (r < 0)
            return qimg_error(r, "Error while reading offset %" PRIu64 " of %s: %s",
                              u->off, given_name(s->img), strerror(-r));
    }
    memset(buf + real, 0, (size_t)u->len - real);
    return 0;
}

/* Offset of the first differing byte, or len. */
static size_t first_difference(const uint8_t *x, const uint8_t *y, size_t len)
{
    size_t pos = 0;
    /* memcmp in blocks first: fast path for equal data */
    while (pos < len) {
        size_t n = QIMG_MIN((size_t)4096, len - pos);
        if (memcmp(x + pos, y + pos, n) != 0)
            break;
        pos += n;
    }
    while (pos < len && x[pos] == y[pos])
        pos++;
    return pos;
}

struct worker_bufs { uint8_t *a, *b; };

static void compare_unit(struct compare *c, const struct cunit *u, struct worker_bufs *w)
{
    int r = read_side(c, &c->a, u, w->a, u->zero_a);
    if (r == 0)
        r = read_side(c, &c->b, u, w->b, u->zero_b);
    pthread_mutex_lock(&c->lock);
    if (r < 0) {
        record_error(c, r, u->off, false);
    } else {
        size_t pos = first_difference(w->a, w->b, (size_t)u->len);
        if (pos < u->len) {
            uint64_t at = (u->off + pos) & ~(uint64_t)(SECTOR - 1);
            if (at < c->mismatch)
                c->mismatch = at;
        } else {
            unit_done(c, u->seq);
        }
    }
    pthread_mutex_unlock(&c->lock);
}

static void worker(void *opaque)
{
    struct compare *c = opaque;
    struct worker_bufs w = { qimg_io_buffer(CHUNK), qimg_io_buffer(CHUNK) };
    struct cunit u;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        int r = next_unit(c, &u);
        pthread_mutex_unlock(&c->lock);
        if (r <= 0)
            break;
        compare_unit(c, &u, &w);
    }
    free(w.a);
    free(w.b);
}

/* Compare with up to nthreads workers. */
static int run(struct compare *c, unsigned nthreads)
{
    struct qimg_pool *pool;
    int r = qimg_pool_new(&pool, nthreads);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < nthreads && r == 0; i++)
        r = qimg_pool_submit(pool, worker, c);
    qimg_pool_wait(pool);
    qimg_pool_free(pool);
    return r;
}

int qimg_compare(qimg_image *a, qimg_image *b, bool strict,
                 struct qimg_compare_result *res,
                 qimg_progress_fn progress, void *opaque)
{
    memset(res, 0, sizeof *res);
    struct compare c = {
        .a = { .img = a, .size = padded_size(a) },
        .b = { .img = b, .size = padded_size(b) },
        .strict = strict, .mismatch = NO_MISMATCH, .status_mismatch = NO_MISMATCH,
        .progress = progress, .opaque = opaque,
    };
    if (strict && c.a.size != c.b.size) {
        res->size_mismatch = true;
        return 1;
    }
    c.common = QIMG_MIN(c.a.size, c.b.size);
    c.total = QIMG_MAX(c.a.size, c.b.size);
    pthread_mutex_init(&c.lock, NULL);
    int r = run(&c, MAX_THREADS);
    pthread_mutex_destroy(&c.lock);
    /* a mismatch before the failing offset is the answer; else the error */
    uint64_t first = QIMG_MIN(c.mismatch, c.status_mismatch);
    if (r == 0 && c.err && c.err_off < first) {
        res->status_error = c.status_error;
        r = qimg_error(c.err, "%s", c.errmsg);
        first = c.err_off;
    }
    free(c.errmsg);
    /* qemu-img warns once the common part compared equal, before it looks
     * at the rest of the larger image (where an error may still come) */
    res->size_mismatch = c.a.size != c.b.size && first >= c.common;
    if (r < 0)
        return r;
    if (first == NO_MISMATCH)
        return 0;
    res->mismatch_offset = first;
    res->status_mismatch = c.status_mismatch < c.mismatch;
    return 1;
}
