/* qimg - the copy engine behind convert: concatenates the sources into the
 * target, skipping what already reads as zeros and turning zero runs into
 * holes.
 *
 * How it works: one walker (under a mutex) turns the sources' block status
 * into units of work of at most CHUNK bytes; -m worker threads take units
 * in order, read and scan them in parallel and write them one after the
 * other in guest order (unless out_of_order, qemu's -W).
 *
 * Read-ahead under ordered writes from remote storage: a worker whose unit
 * was read before its turn to write does not wait for it.  It parks the
 * filled buffer (see setup_parking) and reads the next unit; whoever
 * writes the unit before a parked one writes the parked ones after it, in
 * order.  Over a network whose every connection is slow and uneven,
 * waiting workers would otherwise leave connections idle.
 *
 * Geometry, as qemu-img 7.2 does it: every source counts for its size
 * rounded up to 512 bytes (a 1000-byte raw file is a 1024-byte disk), so
 * the next source starts at a multiple of 512 and the padding reads as
 * zeros.  Zero detection (-S) works on 512-byte sectors: a run of zero
 * sectors at least sparse_size long is not written (or is written as a
 * zero range when the target does not already read as zeros).
 */
#include <errno.h>
#include <inttypes.h>
#include <time.h>

#include "internal.h"

#define CHUNK (2u << 20)          /* bytes per unit of work, as qemu's buffer */
#define ZERO_UNIT_MAX (1ull << 30) /* zero ranges need no buffer: larger units */
#define SECTOR 512u
#define MAX_REQUEST_SECTORS ((uint64_t)INT32_MAX / SECTOR)  /* qemu's largest request */

enum unit_kind { UNIT_DATA, UNIT_ZERO };

/* do_unit's answer besides 0 (written) and errors: parked, or not written
 * after a failure elsewhere */
#define UNIT_HANDED_OFF 1

struct unit {
    uint64_t seq;            /* order of the writes */
    size_t src;              /* index of the source */
    uint64_t soff;           /* offset in the source */
    uint64_t doff;           /* offset in the target */
    uint64_t len;
    enum unit_kind kind;
    bool counted;            /* counts for progress */
    bool from_file;          /* data held at host_offset == soff in the source's own file */
};

/* A unit read before its turn to write, with its buffer (NULL: zeros)
 * and, with -c, its clusters as do_compressed_unit prepared them. */
struct parked {
    struct unit u;
    uint8_t *buf;
    struct ccluster *cl;
    uint8_t *out;
    bool full;
};

struct convert {
    const struct qimg_convert_params *p;
    pthread_mutex_t lock;
    pthread_cond_t turn;

    /* the walker: position and the cached status of the current extent */
    size_t src;
    uint64_t off, base;
    uint64_t ext_end;
    unsigned ext_flags, ext_depth;
    uint64_t seq_next, seq_write;

    /* first failure, carried back to the caller's thread */
    int err;
    char *errmsg;

    /* progress and rate limit */
    uint64_t total, done;
    uint64_t written;
    struct timespec start;

    const uint8_t *zeros;    /* CHUNK zero bytes for -S 0 */

    /* -c, or a target that takes only compressed writes (streamOptimized
     * vmdk, as qemu-img's needs_compressed_writes): units are whole target
     * clusters, compressed by the workers */
    /* writes go out as they are ready: -W, or a raw target on storage
     * where order costs round trips and buys nothing (rbd) */
    bool unordered;
    bool compress;
    uint64_t cluster;        /* the target's cluster size */
    uint64_t total_len;      /* sum of the padded source sizes (-c, --salvage) */

    /* parking (under the lock): a unit parks only while its seq is less
     * than `window` after seq_write, in slot seq % window; 0: no parking */
    struct parked *park;
    uint64_t window;
    uint8_t **spare;         /* buffers handed back by the writers */
    size_t nspare;
};

static uint64_t padded_size(const qimg_image *img)
{
    uint64_t v = qimg_size(img);
    /* sizes are < 2^63: no overflow */
    return (v + SECTOR - 1) & ~(uint64_t)(SECTOR - 1);
}

/* ---- errors across threads ---- */

static void fail(struct convert *c, int err)
{
    pthread_mutex_lock(&c->lock);
    if (!c->err) {
        c->err = err;
        c->errmsg = qimg_strdup(qimg_last_error());
    }
    pthread_cond_broadcast(&c->turn);
    pthread_mutex_unlock(&c->lock);
}

/* ---- the walker ---- */

/* --salvage: qemu-img asks for the status of the rest of the disk (at most
 * its largest request), and after a failure for a quarter of that (in
 * sectors, rounded up), down to one sector, which is then reported and
 * copied as data. */
static int salvage_status(const struct convert *c, qimg_image *img, struct qimg_extent *ext)
{
    uint64_t sectors = QIMG_MIN((c->total_len - (c->base + c->off)) / SECTOR, MAX_REQUEST_SECTORS);
    for (;;) {
        uint64_t len = QIMG_MIN(sectors * SECTOR, qimg_size(img) - c->off);
        int r = qimg_block_status_chain(img, c->off, len, ext);
        if (r == 0)
            return 0;
        if (sectors > 1) {
            sectors = qimg_div_round_up(sectors, 4);
            continue;
        }
        if (!c->p->quiet)
            qimg_warn("error while reading block status at offset %" PRIu64 ": %s", c->off,
                      strerror(-r));
        *ext = (struct qimg_extent){ .offset = c->off, .length = SECTOR,
                                     .flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED };
        return 0;
    }
}

/* Status of the source at c->off, cached until the extent ends. */
static int source_status(struct convert *c, qimg_image *img, uint64_t size)
{
    if (c->off < c->ext_end)
        return 0;
    if (c->off >= qimg_size(img)) {        /* padding up to 512 */
        c->ext_flags = QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED;
        c->ext_depth = 0;
        c->ext_end = size;
        return 0;
    }
    struct qimg_extent ext;
    int r = c->p->salvage ? salvage_status(c, img, &ext) :
            qimg_block_status_chain(img, c->off, qimg_size(img) - c->off, &ext);
    if (r < 0)   /* qemu's words (a storage error reaches here through blkdebug) */
        return qimg_error(r, "error while reading block status at offset %" PRIu64 ": %s", c->off,
                          strerror(-r));
    c->ext_flags = ext.flags;
    c->ext_depth = ext.depth;
    c->ext_end = c->off + ext.length;
    if (c->ext_end >= qimg_size(img))
        c->ext_end = size;                 /* the padding goes with the last extent */
    return 0;
}

enum walk_action { ACT_SKIP, ACT_DATA, ACT_ZERO };

/* What to do with an extent of these flags at this depth. */
static enum walk_action classify_flags(const struct convert *c, unsigned flags, unsigned depth,
                                       bool *counted)
{
    const struct qimg_convert_params *p = c->p;
    bool zero = flags & QIMG_STATUS_ZERO;
    *counted = false;
    if (p->target_has_backing &&
        (!(flags & QIMG_STATUS_ALLOCATED) || depth > 0))
        return ACT_SKIP;                   /* the target's backing provides it */
    if (!zero) {
        *counted = true;
        return ACT_DATA;
    }
    if (p->sparse_size == 0) {             /* -S 0: write every byte */
        *counted = true;
        return ACT_ZERO;
    }
    return p->target_is_zero ? ACT_SKIP : ACT_ZERO;
}

/* What to do with the current extent. */
static enum walk_action classify(const struct convert *c, bool *counted)
{
    return classify_flags(c, c->ext_flags, c->ext_depth, counted);
}

/* Next unit of work, or 0 at the end (or after a failure).  Called with
 * the lock held. */
static int next_unit(struct convert *c, struct unit *u)
{
    const struct qimg_convert_params *p = c->p;
    if (c->compress) {
        /* target-relative, cluster-aligned units; c->off runs over the target */
        if (c->err || c->off >= c->total_len)
            return 0;
        uint64_t step = QIMG_MAX(c->cluster, (uint64_t)CHUNK / c->cluster * c->cluster);
        *u = (struct unit){ .seq = c->seq_next++, .doff = c->off, .kind = UNIT_DATA, .counted = true,
                            .len = QIMG_MIN(step, c->total_len - c->off) };
        c->off += u->len;
        return 1;
    }
    while (!c->err && c->src < p->nsources) {
        qimg_image *img = p->sources[c->src];
        uint64_t size = padded_size(img);
        if (c->off >= size) {
            c->base += size;
            c->src++;
            c->off = 0;
            c->ext_end = 0;
            continue;
        }
        int r = source_status(c, img, size);
        if (r < 0)
            return r;
        bool counted;
        enum walk_action act = classify(c, &counted);
        uint64_t avail = c->ext_end - c->off;
        if (act == ACT_SKIP) {
            c->off = c->ext_end;
            continue;
        }
        uint64_t max = (act == ACT_DATA || counted) ? CHUNK : ZERO_UNIT_MAX;
        *u = (struct unit){
            .seq = c->seq_next++, .src = c->src, .soff = c->off,
            .doff = c->base + c->off, .len = QIMG_MIN(avail, max),
            .kind = act == ACT_DATA ? UNIT_DATA : UNIT_ZERO, .counted = counted,
            .from_file = c->ext_depth == 0 && (c->ext_flags & QIMG_STATUS_OFFSET),
        };
        c->off += u->len;
        return 1;
    }
    return 0;
}

/* Bytes that count for progress: data, and zeros too with -S 0. */
static int count_total(struct convert *c)
{
    const struct qimg_convert_params *p = c->p;
    for (size_t i = 0; i < p->nsources; i++) {
        qimg_image *img = p->sources[i];
        uint64_t size = padded_size(img);
        c->off = 0;
        c->ext_end = 0;
        if (i > 0)
            c->base += padded_size(p->sources[i - 1]);
        while (c->off < size) {
            int r = source_status(c, img, size);
            if (r < 0)
                return r;
            bool counted;
            classify(c, &counted);
            if (counted)
                c->total += c->ext_end - c->off;
            c->off = c->ext_end;
        }
    }
    c->off = 0;
    c->ext_end = 0;
    c->base = 0;
    return 0;
}

/* ---- workers ---- */

/* Wait for this unit's turn to write; true when another unit failed
 * meanwhile (nothing more is written then, as qemu-img). */
static bool wait_turn(struct convert *c, const struct unit *u)
{
    pthread_mutex_lock(&c->lock);
    while (!c->unordered && c->seq_write != u->seq && !c->err)
        pthread_cond_wait(&c->turn, &c->lock);
    bool failed = c->err != 0;
    pthread_mutex_unlock(&c->lock);
    return failed;
}

enum turn { TURN_WRITE, TURN_PARKED, TURN_FAILED };

/* After reading pk->u (pk->buf NULL for a zero unit): its turn to write,
 * or parked (the slot owns what pk held, and pk->buf is a spare buffer, or
 * NULL when none is free), or a failure elsewhere (nothing more is written
 * then, as qemu-img).  Beyond the window it waits, as before parking. */
static enum turn claim_turn(struct convert *c, struct parked *pk)
{
    enum turn t;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        if (c->err) {
            t = TURN_FAILED;
            break;
        }
        if (c->unordered || c->seq_write == pk->u.seq) {
            t = TURN_WRITE;
            break;
        }
        /* units before u are unwritten, so u.seq > seq_write; the parked
         * seqs are distinct and within the window: distinct slots */
        if (pk->u.seq - c->seq_write < c->window) {
            struct parked *slot = &c->park[pk->u.seq % c->window];
            *slot = *pk;
            slot->full = true;
            if (pk->buf)
                pk->buf = c->nspare ? c->spare[--c->nspare] : NULL;
            pk->cl = NULL;
            pk->out = NULL;
            t = TURN_PARKED;
            break;
        }
        pthread_cond_wait(&c->turn, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return t;
}

static double elapsed(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* After a unit: let the next one write, report progress, keep to -r. */
static void finish_unit(struct convert *c, const struct unit *u, uint64_t bytes_written)
{
    double delay = 0;
    pthread_mutex_lock(&c->lock);
    if (!c->unordered)
        c->seq_write = u->seq + 1;
    pthread_cond_broadcast(&c->turn);
    if (u->counted) {
        c->done += u->len;
        if (c->p->progress && c->total)
            c->p->progress(100.0 * (double)c->done / (double)c->total, c->p->progress_opaque);
    }
    if (c->p->rate_limit) {
        c->written += bytes_written;
        delay = (double)c->written / (double)c->p->rate_limit - elapsed(&c->start);
    }
    pthread_mutex_unlock(&c->lock);
    if (delay > 0) {
        struct timespec ts = { (time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9) };
        nanosleep(&ts, NULL);
    }
}

/* --salvage after a failed read: sector by sector, those that fail are
 * reported and read as zeros. */
static void salvage_read(const struct convert *c, qimg_image *img, uint64_t off, uint8_t *buf,
                         size_t len)
{
    for (size_t pos = 0; pos < len; pos += SECTOR) {
        size_t n = QIMG_MIN((size_t)SECTOR, len - pos);
        int r = qimg_read(img, off + pos, buf + pos, n);
        if (r == 0)
            continue;
        if (!c->p->quiet)
            qimg_warn("error while reading offset %" PRIu64 ": %s", off + pos, strerror(-r));
        memset(buf + pos, 0, n);
    }
    qimg_error_clear();
}

/* Read a unit; the part past the source's real end reads as zeros. */
static int read_unit(const struct convert *c, const struct unit *u, uint8_t *buf)
{
    qimg_image *img = c->p->sources[u->src];
    uint64_t size = qimg_size(img);
    size_t real = u->soff < size ? (size_t)QIMG_MIN(u->len, size - u->soff) : 0;
    if (real) {
        int r = qimg_read(img, u->soff, buf, real);
        if (r < 0 && c->p->salvage) {
            salvage_read(c, img, u->soff, buf, real);
            r = 0;
        }
        if (r < 0) {
            return qimg_error(r, "error while reading at byte %" PRIu64 ": %s",
                              u->doff, strerror(-r));
        }
    }
    memset(buf + real, 0, (size_t)u->len - real);
    return 0;
}

static int write_error(int r, uint64_t off)
{
    return qimg_error(r, "error while writing at byte %" PRIu64 ": %s", off, strerror(-r));
}

static int write_zeros(const struct convert *c, uint64_t off, uint64_t len)
{
    const struct qimg_convert_params *p = c->p;
    int r;
    if (p->sparse_size == 0) {             /* -S 0: allocate, write real zeros */
        while (len > 0) {
            size_t n = (size_t)QIMG_MIN(len, (uint64_t)CHUNK);
            r = qimg_write(p->target, off, c->zeros, n);
            if (r < 0)
                return write_error(r, off);
            off += n, len -= n;
        }
        return 0;
    }
    if (p->target_is_zero)
        return 0;
    /* with a backing file a hole would show the backing's data */
    r = qimg_write_zeroes(p->target, off, len, p->target_has_backing ? 0 : QIMG_ZERO_MAY_UNMAP);
    return r < 0 ? write_error(r, off) : 0;
}

/* Length of the run starting at buf[pos] of sectors that are all zero
 * (zero == true) or not all zero; the last sector may be short. */
static size_t sector_run(const uint8_t *buf, size_t pos, size_t len, bool zero)
{
    size_t end = pos;
    while (end < len) {
        /* a zero run is crossed in 64 KiB, then 4 KiB strides: sector by
         * sector only where its data begins */
        if (zero && end + 65536 <= len && qimg_is_zero(buf + end, 65536)) {
            end += 65536;
            continue;
        }
        if (zero && end + 4096 <= len && qimg_is_zero(buf + end, 4096)) {
            end += 4096;
            continue;
        }
        size_t n = QIMG_MIN((size_t)SECTOR, len - end);
        if (qimg_is_zero(buf + end, n) != zero)
            break;
        end += n;
    }
    return end - pos;
}

/* The run of sectors at buf[pos] that is all zeros (*zero) or data, with
 * its end moved onto the alignment as qemu-img 7.2 does (unless it reaches
 * the end of the buffer): a zero run ends
 * aligned down, and one that does not reach the next boundary counts as
 * data; a data run ends aligned up (at most to len).  off is buf's offset
 * in the target. */
static size_t aligned_run(const uint8_t *buf, size_t pos, size_t len, uint64_t off,
                          uint64_t align, bool *zero)
{
    *zero = qimg_is_zero(buf + pos, QIMG_MIN((size_t)SECTOR, len - pos));
    size_t n = sector_run(buf, pos, len, *zero);
    if (pos + n == len)
        return n;                 /* the rest is all alike: kept whole */
    size_t tail = (size_t)((off + pos + n) % align);
    if (tail) {
        if (*zero && n <= tail)
            *zero = false;
        if (*zero)
            n -= tail;
        else
            n = QIMG_MIN(n + align - tail, len - pos);
    }
    return n;
}

/* Write a data buffer as qemu does with -S: runs of zero sectors are left
 * out (or written as zero ranges) where they are at least sparse_size long
 * or start the buffer; shorter ones between data go with the data.  Run
 * ends follow the alignment: sparse_size rounded down to a power of two,
 * at most 4 KiB (what qemu-img 7.2's maps show for every -S). */
static int write_scanned(const struct convert *c, uint64_t off, const uint8_t *buf, size_t len)
{
    const struct qimg_convert_params *p = c->p;
    uint64_t align = SECTOR;
    while (align * 2 <= p->sparse_size && align * 2 <= CHUNK)
        align *= 2;
    size_t pos = 0;
    while (pos < len) {
        bool zero;
        size_t n = aligned_run(buf, pos, len, off, align, &zero);
        if (zero) {
            int r = write_zeros(c, off + pos, n);
            if (r < 0)
                return r;
            pos += n;
            continue;
        }
        /* data: take in the short zero runs that follow, up to the last data */
        size_t end = pos + n, q = end;
        while (q < len) {
            size_t m = aligned_run(buf, q, len, off, align, &zero);
            q += m;
            if (!zero)
                end = q;
            else if (m >= p->sparse_size)
                break;
        }
        int r = qimg_write(p->target, off + pos, buf + pos, end - pos);
        if (r < 0)
            return write_error(r, off + pos);
        pos = end;
    }
    return 0;
}

/* Copy offload (-C): the kernel copies raw data between the two files. */
static int try_copy_range(const struct convert *c, const struct unit *u)
{
    const struct qimg_convert_params *p = c->p;
    qimg_image *src = p->sources[u->src];
    struct qimg_io *in = src->file, *out = p->target->file;
    if (!p->copy_range || !u->from_file || qimg_drv_has_metadata(src->drv) ||
        qimg_drv_has_metadata(p->target->drv) || !in->ops->copy_range ||
        src->opaque || p->target->opaque ||  /* raw with an offset/size window */
        u->soff + u->len > qimg_size(src))
        return -ENOTSUP;
    return in->ops->copy_range(in, u->soff, out, u->doff, u->len);
}

/* ---- -c: compressed clusters ---- */

/* The source holding target offset doff, its offset there and how many
 * bytes of it follow (up to the source's padded end). */
static size_t source_at(const struct convert *c, uint64_t doff, uint64_t *soff, uint64_t *avail)
{
    const struct qimg_convert_params *p = c->p;
    uint64_t base = 0;
    for (size_t i = 0; i < p->nsources; i++) {
        uint64_t size = padded_size(p->sources[i]);
        if (doff < base + size) {
            *soff = doff - base;
            *avail = base + size - doff;
            return i;
        }
        base += size;
    }
    *soff = *avail = 0;
    return p->nsources;
}

/* What a target range needs: data when any part is data, else zeros
 * unless all of it can be skipped. */
static int range_action(const struct convert *c, uint64_t doff, uint64_t len, enum walk_action *act)
{
    bool data = false, skip = true, any_skip = false;
    while (len > 0 && !data) {
        uint64_t soff, avail, n;
        size_t i = source_at(c, doff, &soff, &avail);
        if (i >= c->p->nsources)
            break;
        qimg_image *img = c->p->sources[i];
        unsigned flags = QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED, depth = 0;
        n = QIMG_MIN(len, avail);
        if (soff < qimg_size(img)) {
            struct qimg_extent ext;
            int r = qimg_block_status_chain(img, soff, QIMG_MIN(n, qimg_size(img) - soff), &ext);
            if (r < 0)
                return r;
            flags = ext.flags, depth = ext.depth, n = ext.length;
        }
        bool counted;
        enum walk_action a = classify_flags(c, flags, depth, &counted);
        data |= a == ACT_DATA;
        skip &= a == ACT_SKIP;
        any_skip |= a == ACT_SKIP;
        doff += n, len -= n;
    }
    /* A cluster is written whole: when part of it comes from the target's
     * backing file and the rest is zeros, the backing part must be copied
     * too, so it is data (read, and written as zeros if it all reads so). */
    *act = data || (any_skip && !skip) ? ACT_DATA : skip ? ACT_SKIP : ACT_ZERO;
    return 0;
}

/* Read target range [doff, doff+len) from the concatenated sources. */
static int read_target_range(const struct convert *c, uint64_t doff, uint8_t *buf, uint64_t len)
{
    while (len > 0) {
        uint64_t soff, avail;
        size_t i = source_at(c, doff, &soff, &avail);
        if (i >= c->p->nsources) {
            memset(buf, 0, len);
            return 0;
        }
        struct unit u = { .src = i, .soff = soff, .doff = doff, .len = QIMG_MIN(len, avail) };
        int r = read_unit(c, &u, buf);
        if (r < 0)
            return r;
        buf += u.len, doff += u.len, len -= u.len;
    }
    return 0;
}

/* Per cluster of the unit: skip, zeros, or data compressed into out
 * (clen 0: stored as it is). */
struct ccluster {
    enum walk_action act;
    size_t clen;
    int err;                /* compression failed: reported at its turn */
};

/* Write the clusters of a unit as do_compressed_unit prepared them. */
static int write_compressed_unit(const struct convert *c, const struct unit *u, const uint8_t *buf,
                                 const struct ccluster *cl, const uint8_t *out)
{
    qimg_image *t = c->p->target;
    uint64_t cs = c->cluster;
    size_t n = (size_t)qimg_div_round_up(u->len, cs);
    int r = 0;
    for (size_t k = 0; k < n && r == 0; k++) {
        uint64_t off = u->doff + k * cs, len = QIMG_MIN(cs, u->len - k * cs);
        if (cl[k].act == ACT_ZERO)
            r = write_zeros(c, off, len);
        else if (cl[k].act == ACT_DATA && cl[k].err)
            r = cl[k].err;
        else if (cl[k].act == ACT_DATA && cl[k].clen)
            r = qimg_drv_write_compressed(t, off, out + k * 2 * cs, cl[k].clen);
        else if (cl[k].act == ACT_DATA)
            r = qimg_write(t, off, buf + k * cs, (size_t)len);
        if (r < 0)
            r = write_error(r, off);
    }
    return r;
}

/* Read and compress a unit's clusters into *buf, then write them at their
 * turn, or park them (*buf replaced) when reading from remote storage. */
static int do_compressed_unit(struct convert *c, const struct unit *u, uint8_t **bufp)
{
    const struct qimg_convert_params *p = c->p;
    qimg_image *t = p->target;
    uint64_t cs = c->cluster;
    uint8_t *buf = *bufp;
    size_t n = (size_t)qimg_div_round_up(u->len, cs);
    CLEANUP_FREE struct ccluster *cl = qimg_xcalloc(n, sizeof *cl);
    /* a driver may store a cluster that does not shrink a little larger
     * (vmdk's streamOptimized grains): room for two clusters each */
    CLEANUP_FREE uint8_t *out = qimg_xmalloc(n * 2 * cs);
    int r = 0;
    for (size_t k = 0; k < n && r == 0; k++) {
        uint64_t len = QIMG_MIN(cs, u->len - k * cs);
        r = range_action(c, u->doff + k * cs, len, &cl[k].act);
        /* qemu-img copies a short last cluster even where the target's
         * backing file would provide it, and with -S 0 compresses zeros too */
        if ((len < cs && cl[k].act == ACT_SKIP) || (p->sparse_size == 0 && cl[k].act == ACT_ZERO))
            cl[k].act = ACT_DATA;
    }
    /* runs of data clusters in one read each: few, large requests */
    for (size_t k = 0; k < n && r == 0;) {
        size_t end = k;
        while (end < n && cl[end].act == ACT_DATA)
            end++;
        if (end > k)
            r = read_target_range(c, u->doff + k * cs, buf + k * cs,
                                  QIMG_MIN((end - k) * cs, u->len - k * cs));
        k = end > k ? end : k + 1;
    }
    for (size_t k = 0; k < n && r == 0; k++) {
        uint64_t off = u->doff + k * cs, len = QIMG_MIN(cs, u->len - k * cs);
        if (cl[k].act != ACT_DATA)
            continue;
        if (p->sparse_size && qimg_is_zero(buf + k * cs, len)) {
            cl[k].act = p->target_is_zero ? ACT_SKIP : ACT_ZERO;
            continue;
        }
        /* a partial cluster that is not the disk's last one is stored as it is */
        if (len < cs && off + len != qimg_size(t))
            continue;
        r = qimg_drv_compress(t, buf + k * cs, len, out + k * 2 * cs, &cl[k].clen);
        if (r == -ENOSPC) {
            cl[k].clen = 0;
            r = 0;
        }
        /* a driver that cannot store this compressed write fails it as
         * qemu's compressed write fails (an encrypted qcow2), in order */
        if (r == -EIO) {
            cl[k].err = r;
            r = 0;
        }
    }
    if (r < 0)
        return r;
    struct parked pk = { .u = *u, .buf = buf, .cl = cl, .out = out };
    switch (claim_turn(c, &pk)) {
    case TURN_WRITE:
        return write_compressed_unit(c, u, buf, cl, out);
    case TURN_PARKED:
        *bufp = pk.buf;
        cl = NULL;
        out = NULL;
        return UNIT_HANDED_OFF;
    default:      /* after a failure qemu-img writes no more: no second report of it */
        return UNIT_HANDED_OFF;
    }
}

/* ---- parking: read-ahead under ordered writes ---- */

/* Write a unit read into buf (a zero unit has none). */
static int write_unit(const struct convert *c, const struct unit *u, const uint8_t *buf)
{
    const struct qimg_convert_params *p = c->p;
    if (u->kind == UNIT_ZERO)
        return write_zeros(c, u->doff, u->len);
    if (p->sparse_size == 0 || p->copy_range) {
        int r = qimg_write(p->target, u->doff, buf, (size_t)u->len);
        return r < 0 ? write_error(r, u->doff) : 0;
    }
    return write_scanned(c, u->doff, buf, (size_t)u->len);
}

/* After a unit was written: write the parked ones whose turn follows, in
 * order, as long as the next one is there; their buffers become spares. */
static void write_parked(struct convert *c)
{
    while (c->window) {
        pthread_mutex_lock(&c->lock);
        struct parked *slot = &c->park[c->seq_write % c->window];
        if (c->err || !slot->full || slot->u.seq != c->seq_write) {
            pthread_mutex_unlock(&c->lock);
            return;
        }
        struct parked pk = *slot;
        slot->full = false;
        pthread_mutex_unlock(&c->lock);
        int r = c->compress ? write_compressed_unit(c, &pk.u, pk.buf, pk.cl, pk.out) :
                write_unit(c, &pk.u, pk.buf);
        free(pk.cl);
        free(pk.out);
        if (pk.buf) {
            pthread_mutex_lock(&c->lock);
            c->spare[c->nspare++] = pk.buf;   /* room for every buffer: see setup_parking */
            pthread_mutex_unlock(&c->lock);
        }
        if (r < 0) {
            fail(c, r);
            return;
        }
        finish_unit(c, &pk.u, pk.u.kind == UNIT_DATA ? pk.u.len : 0);
    }
}

/* ---- one unit ---- */

/* Copy a unit (0), or hand it off (UNIT_HANDED_OFF: parked with *buf,
 * which is then replaced, or not written after a failure elsewhere). */
static int do_unit(struct convert *c, const struct unit *u, uint8_t **buf)
{
    const struct qimg_convert_params *p = c->p;
    int r;
    if (c->compress)
        return do_compressed_unit(c, u, buf);
    struct parked pk = { .u = *u };
    if (u->kind == UNIT_ZERO)
        return claim_turn(c, &pk) == TURN_WRITE ? write_unit(c, u, NULL) : UNIT_HANDED_OFF;
    if (p->copy_range) {
        if (wait_turn(c, u))
            return UNIT_HANDED_OFF;
        r = try_copy_range(c, u);
        if (r == 0)
            return 0;
    }
    r = read_unit(c, u, *buf);
    if (r < 0)
        return r;
    pk.buf = *buf;
    enum turn t = claim_turn(c, &pk);
    if (t == TURN_PARKED)
        *buf = pk.buf;
    return t == TURN_WRITE ? write_unit(c, u, *buf) : UNIT_HANDED_OFF;
}

static void worker(void *opaque)
{
    struct convert *c = opaque;
    size_t bufsize = (size_t)QIMG_MAX((uint64_t)CHUNK, c->cluster);
    CLEANUP_FREE uint8_t *buf = NULL;
    struct unit u;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        int r = next_unit(c, &u);
        pthread_mutex_unlock(&c->lock);
        if (r < 0)
            fail(c, r);
        if (r <= 0)
            return;
        if (!buf)
            buf = qimg_io_buffer(bufsize);
        r = do_unit(c, &u, &buf);
        if (r < 0) {
            fail(c, r);
            return;
        }
        if (r == UNIT_HANDED_OFF)
            continue;
        finish_unit(c, &u, u.kind == UNIT_DATA ? u.len : 0);
        write_parked(c);
    }
}

static int check_params(const struct qimg_convert_params *p)
{
    uint64_t total = 0;
    if (!p->target || (p->nsources && !p->sources))
        return qimg_error(-EINVAL, "No source or target image");
    if (p->coroutines < 1 || p->coroutines > 16)
        return qimg_error(-EINVAL, "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
    if (p->sparse_size % SECTOR || p->sparse_size > (16u << 20))
        return qimg_error(-EINVAL, "Invalid sparse size");
    for (size_t i = 0; i < p->nsources; i++)
        if (!qimg_add_ok(total, padded_size(p->sources[i]), &total))
            return qimg_error(-EFBIG, "Sources too large");
    if (qimg_size(p->target) < total)
        return qimg_error(-ENOSPC, "output file is smaller than input file");
    return 0;
}

/* -c, or a target that can be written only compressed: whole clusters.
 * qemu-img's words: a format that cannot compress, then a cluster size
 * its buffer cannot take. */
static int setup_compress(struct convert *c)
{
    qimg_image *t = c->p->target;
    struct qimg_driver_info info;
    int r = qimg_drv_info(t, &info);
    qimg_json_free(info.format_specific);
    c->compress = c->p->compress || (r == 0 && info.needs_compressed_writes);
    if (!c->compress)
        return 0;
    if (!qimg_drv_can(t->drv, QIMG_CAP_COMPRESS))
        return qimg_error(-ENOTSUP, "Compression not supported for this file format");
    int64_t cluster = r < 0 ? 0 : info.cluster_size;
    if (cluster <= 0 || cluster > CHUNK || !qimg_is_pow2((uint64_t)cluster))
        return qimg_error(-EINVAL, "invalid cluster size");
    c->cluster = (uint64_t)cluster;
    return 0;
}

/* A source (or one of its backing files) or the target on a remote
 * storage (io.h's `remote`). */
static bool image_is_remote(qimg_image *img)
{
    for (; img; img = img->backing)
        if (img->file && img->file->ops->remote)
            return true;
    return false;
}

static bool any_source_remote(const struct qimg_convert_params *p)
{
    for (size_t i = 0; i < p->nsources; i++)
        if (image_is_remote(p->sources[i]))
            return true;
    return false;
}

static bool any_remote(const struct qimg_convert_params *p)
{
    return any_source_remote(p) || image_is_remote(p->target);
}

/* -m asks for that many requests in flight; more threads than twice the
 * CPUs only add switching (measured: 8 threads on 2 CPUs are slower than
 * 4), so the threads are capped and each works on 2 MiB at a time.  Not
 * with a remote source or target: there each request waits on a server
 * (a connection of its own over nbd and http), and more in flight is what
 * fills a network whose every connection or round trip is slow. */
static unsigned worker_threads(const struct qimg_convert_params *p)
{
    if (any_remote(p))
        return p->coroutines;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned cap = cpus > 1 ? (unsigned)QIMG_MIN(cpus * 2, 64L) : 2;
    return QIMG_MIN(p->coroutines, cap);
}

/* Parking for ordered writes, with more than one worker and a source on
 * remote storage: a unit may park while it is less than 4 units per worker
 * after the unit being written, at most 64 MiB of units (32 at the default
 * -m 8 over a network).  What parking must cover is the lag of the slowest
 * unit times the rate of all connections, which grows with the workers.
 * Measured (256 MiB over HTTP at 8 MiB/s per connection, -m 8): 6.4-9.8 s
 * without parking, 4.3-6.9 s with 1 unit per worker, 4.7-5.8 s with 2,
 * 3.7-4.6 s with 4 (-W: 4.6-5.3 s); each unit more holds 2 MiB more.
 * From local storage reads are fast and even: there parking only holds
 * memory (a local qcow2→qcow2 ran slower with it, and 16 MiB larger).
 * A -c unit parks with its room for compressed clusters (twice the unit:
 * 6 MiB in all), so fewer of them park (measured: 256 MiB to qcow2 -c over
 * the same HTTP, 10.4 s without parking, 7.5 s with 10 units, -W 4.7-5.6). */
#define PARK_MAX_BYTES (64u << 20)
static void setup_parking(struct convert *c, unsigned nthreads)
{
    const struct qimg_convert_params *p = c->p;
    if (c->unordered || nthreads < 2 || !any_source_remote(p))
        return;
    /* do_compressed_unit's out: 2 clusters per cluster of at most CHUNK */
    uint64_t unit_bytes = c->compress ? 3 * (uint64_t)CHUNK : CHUNK;
    c->window = QIMG_MIN(4 * (uint64_t)nthreads, PARK_MAX_BYTES / unit_bytes);
    c->park = qimg_xcalloc(c->window, sizeof *c->park);
    /* every buffer there is: one per worker and one per parked unit */
    c->spare = qimg_xcalloc(nthreads + c->window, sizeof *c->spare);
}

/* Parked units left by a failure and the spare buffers. */
static void free_parking(struct convert *c)
{
    for (uint64_t i = 0; i < c->window; i++) {
        if (!c->park[i].full)
            continue;
        free(c->park[i].buf);
        free(c->park[i].cl);
        free(c->park[i].out);
    }
    for (size_t i = 0; i < c->nspare; i++)
        free(c->spare[i]);
    free(c->park);
    free(c->spare);
}

/* Writes go out as they are ready (-W) where order buys nothing: a raw
 * target on storage where order only costs round trips (rbd); or a new
 * target, removed if the copy fails (so the order cannot show), whose
 * layout does not depend on it: luks (in order, each unit's encryption
 * would wait for its turn: serpent used one core of two) and raw from
 * remote sources (in order, a slow unit holds the others' buffers:
 * capped HTTP 1 GiB, 4.95 s with parking against 3.2 s). */
static bool writes_in_any_order(const struct qimg_convert_params *p)
{
    const qimg_image *t = p->target;
    bool raw = t->drv->flags & QIMG_DRV_NO_METADATA;
    if (p->out_of_order)
        return true;
    if (p->salvage)
        return false;
    if (raw && t->file && t->file->ops->unordered_writes)
        return true;
    if (!p->target_discarded_on_failure)
        return false;
    return (t->drv->flags & QIMG_DRV_FIXED_PLACEMENT) || (raw && any_source_remote(p));
}

int qimg_convert(const struct qimg_convert_params *p)
{
    int r = check_params(p);
    if (r < 0)
        return r;
    if (p->diff)
        return qimg_convert_diff(p, worker_threads(p));
    struct convert c = { .p = p };
    c.unordered = writes_in_any_order(p);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.turn, NULL);
    clock_gettime(CLOCK_MONOTONIC, &c.start);
    CLEANUP_FREE uint8_t *zeros = NULL;
    if (p->sparse_size == 0)
        c.zeros = zeros = qimg_xcalloc(1, CHUNK);
    for (size_t i = 0; i < p->nsources; i++)
        c.total_len += padded_size(p->sources[i]);   /* checked by check_params */
    r = setup_compress(&c);
    /* qemu-img always walks the sources once to count: with --salvage its
     * warnings come from that walk too */
    if (r == 0 && (p->progress || p->salvage))
        r = c.compress ? (c.total = c.total_len, 0) : count_total(&c);
    struct qimg_pool *pool = NULL;
    /* --salvage reports in order: one request at a time */
    unsigned nthreads = p->salvage ? 1 : worker_threads(p);
    if (r == 0)
        r = qimg_pool_new(&pool, nthreads);
    if (r == 0)
        setup_parking(&c, nthreads);
    if (r == 0) {
        for (unsigned i = 0; i < nthreads && r == 0; i++)
            r = qimg_pool_submit(pool, worker, &c);
        qimg_pool_wait(pool);
        qimg_pool_free(pool);
    }
    if (r == 0 && c.err)
        r = qimg_error(c.err, "%s", c.errmsg);
    free_parking(&c);
    free(c.errmsg);
    pthread_cond_destroy(&c.turn);
    pthread_mutex_destroy(&c.lock);
    return r;
}
