/* qimg - the "quorum" storage backend: one disk kept on several children
 * (replicas), read by vote, as qemu's quorum driver documents it
 * (BlockdevOptionsQuorum).
 *
 * Options: children.N.* (N = 0, 1, ... until the first missing N; a child
 * given as a string names another node, which qimg cannot have),
 * vote-threshold (required, 1..number of children), read-pattern
 * (quorum, the default, or fifo), blkverify and rewrite-corrupted (read
 * in quorum mode only).
 *
 * Reads, quorum mode: every child is read; the contents at least
 * vote-threshold children agree on win, else EIO.  With rewrite-corrupted
 * the winner is written back to the children that disagreed.  With
 * blkverify (two children, threshold 2) a mismatch is fatal, as in qemu:
 * a line on stderr and exit status 1.  fifo mode: the first child whose
 * read succeeds answers.
 * Writes (and zero, discard, flush) go to every child; they succeed when
 * at least vote-threshold children succeed.
 *
 * A quorum node has no file name and no directory of its own: qemu names
 * it by its options (json:{...}) and cannot resolve a relative backing
 * name next to it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

struct quorum {
    struct qimg_io **child;
    size_t n;
    size_t threshold;
    bool fifo;
    bool blkverify;
    bool rewrite;
};

static struct quorum *priv_of(struct qimg_io *io) { return io->priv; }

/* ---- options ---- */

/* Is there a "children.N" or "children.N.*" key? */
static bool child_given(const qimg_opts *opts, size_t n)
{
    char prefix[48];
    int len = snprintf(prefix, sizeof prefix, "children.%zu", n);
    for (size_t i = 0; i < qimg_opts_count(opts); i++) {
        const char *k = qimg_opts_name(opts, i);
        if (strncmp(k, prefix, (size_t)len) == 0 && (k[len] == '\0' || k[len] == '.'))
            return true;
    }
    return false;
}

static size_t count_children(const qimg_opts *opts)
{
    size_t n = 0;
    while (n < 4096 && child_given(opts, n))
        n++;
    return n;
}

/* vote-threshold: a number as qemu reads one (base prefixes, leading
 * blanks, a minus wraps), kept in an int as qemu keeps it. */
static int parse_threshold(qimg_opts *opts, int *out)
{
    const char *text = NULL;
    *out = 0;
    if (qimg_opts_get_string(opts, "vote-threshold", &text) != 1)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 0);
    if (end == text || *end || errno)
        return qimg_error(-EINVAL, "Parameter 'vote-threshold' expects a number");
    *out = (int)(uint32_t)v;
    return 0;
}

/* The checks in qemu's order: children; the typed options (blkverify,
 * rewrite-corrupted, vote-threshold); the threshold's range; the read
 * pattern; then what blkverify and rewrite-corrupted allow (they mean
 * nothing in fifo mode). */
static int parse_options(struct quorum *q, qimg_opts *opts)
{
    q->n = count_children(opts);
    if (q->n < 1)
        return qimg_error(-EINVAL, "Number of provided children must be 1 or more");
    int threshold = 0, r;
    if ((r = qimg_opts_get_bool(opts, "blkverify", &q->blkverify)) < 0 ||
        (r = qimg_opts_get_bool(opts, "rewrite-corrupted", &q->rewrite)) < 0 ||
        (r = parse_threshold(opts, &threshold)) < 0)
        return r;
    if (threshold < 1)
        return qimg_error(-EINVAL, "Parameter 'vote-threshold' expects a value >= 1");
    if ((size_t)threshold > q->n)
        return qimg_error(-EINVAL, "threshold may not exceed children count");
    q->threshold = (size_t)threshold;
    const char *pattern = "quorum";
    qimg_opts_get_string(opts, "read-pattern", &pattern);
    if (strcmp(pattern, "fifo") != 0 && strcmp(pattern, "quorum") != 0)
        return qimg_error(-EINVAL, "Please set read-pattern as fifo or quorum");
    q->fifo = strcmp(pattern, "fifo") == 0;
    if (q->fifo) {
        q->blkverify = q->rewrite = false;
        return 0;
    }
    if (q->blkverify && (q->n != 2 || q->threshold != 2))
        return qimg_error(-EINVAL, "blkverify=on can only be set if there are exactly two "
                                   "files and vote-threshold is 2");
    if (q->rewrite && q->blkverify)
        return qimg_error(-EINVAL, "rewrite-corrupted=on cannot be used with blkverify=on");
    return 0;
}

static int open_one_child(struct qimg_io *io, qimg_opts *opts, size_t i)
{
    char key[48];
    snprintf(key, sizeof key, "children.%zu", i);
    const char *ref = qimg_opts_get(opts, key);
    if (ref)
        return qimg_error(-EINVAL, "Cannot find device='%s' nor node-name='%s'", ref, ref);
    CLEANUP_OPTS qimg_opts *sub = qimg_opts_subtree(opts, key);
    if (!qimg_opts_get(sub, "driver") && !qimg_opts_get(sub, "file"))
        return qimg_error(-EINVAL, "Must specify either driver or file");
    return qimg_open_storage(&priv_of(io)->child[i], sub, io->flags);
}

static int quorum_get_size(struct qimg_io *io, uint64_t *size);

static int quorum_open(struct qimg_io *io, qimg_opts *opts)
{
    struct quorum *q = qimg_xcalloc(1, sizeof *q);
    io->priv = q;
    int r = parse_options(q, opts);
    if (r < 0) {
        q->n = 0;
        return r;
    }
    q->child = qimg_xcalloc(q->n, sizeof *q->child);
    for (size_t i = 0; i < q->n && r == 0; i++)
        r = open_one_child(io, opts, i);
    if (r < 0)
        return r;
    /* rewriting needs write access, which a read-only open cannot give */
    if (q->rewrite && !(io->flags & QIMG_IO_RDWR))
        return qimg_error(-EPERM, "Block node is read-only");
    uint64_t size;
    if ((r = quorum_get_size(io, &size)) < 0)
        return qimg_error(r, "Could not refresh total sector count: %s", strerror(-r));
    for (size_t i = 0; i < q->n; i++)
        io->align = QIMG_MAX(io->align, q->child[i]->align);
    return 0;
}

static void quorum_close(struct qimg_io *io)
{
    struct quorum *q = io->priv;
    if (!q)
        return;
    for (size_t i = 0; q->child && i < q->n; i++)
        qimg_io_close(q->child[i]);
    free(q->child);
    free(q);
}

/* ---- reads ---- */

static int read_fifo(struct quorum *q, void *buf, size_t len, uint64_t off)
{
    int r = -EIO;
    for (size_t i = 0; i < q->n; i++)
        if ((r = qimg_io_pread(q->child[i], buf, len, off)) == 0)
            return 0;
    return r;
}

/* blkverify: qemu stops the process at the first mismatch, naming the
 * request and the first byte that differs. */
static void blkverify_check(const uint8_t *a, const uint8_t *b, size_t len, uint64_t off)
{
    size_t i = 0;
    while (i < len && a[i] == b[i])
        i++;
    if (i == len)
        return;
    fprintf(stderr, "quorum: offset=%" PRIu64 " bytes=%zu contents mismatch at offset %" PRIu64 "\n",
            off, len, off + i);
    exit(1);
}

/* Is child i's version the first read of those contents? */
static bool first_of_version(uint8_t *const *bufs, const int *res, size_t i, size_t len)
{
    for (size_t k = 0; k < i; k++)
        if (res[k] == 0 && memcmp(bufs[i], bufs[k], len) == 0)
            return false;
    return true;
}

/* The version most successful children agree on and its votes.  On a
 * tie the version first read last wins, as in qemu (its list of versions
 * grows at the head and the first with the most votes wins). */
static size_t vote(uint8_t *const *bufs, const int *res, size_t n, size_t len, size_t *votes)
{
    size_t best = n, best_votes = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i] < 0 || !first_of_version(bufs, res, i, len))
            continue;
        size_t v = 0;
        for (size_t k = i; k < n; k++)
            if (res[k] == 0 && memcmp(bufs[i], bufs[k], len) == 0)
                v++;
        if (v >= best_votes)
            best = i, best_votes = v;
    }
    *votes = best_votes;
    return best;
}

/* Write the winner back to the children that read something else. */
static void rewrite_losers(struct quorum *q, uint8_t *const *bufs, const int *res, size_t win,
                           size_t len, uint64_t off)
{
    for (size_t i = 0; i < q->n; i++)
        if (res[i] == 0 && memcmp(bufs[i], bufs[win], len) != 0)
            qimg_io_pwrite(q->child[i], bufs[win], len, off);   /* best effort, as qemu */
}

static int read_vote(struct quorum *q, void *buf, size_t len, uint64_t off)
{
    uint8_t **bufs = qimg_xcalloc(q->n, sizeof *bufs);
    int *res = qimg_xcalloc(q->n, sizeof *res);
    size_t ok = 0;
    int err = -EIO;
    for (size_t i = 0; i < q->n; i++) {
        bufs[i] = qimg_io_buffer(len ? len : 1);
        res[i] = qimg_io_pread(q->child[i], bufs[i], len, off);
        if (res[i] == 0)
            ok++;
        else if (err == -EIO)
            err = res[i];
    }
    if (q->blkverify && ok == q->n)
        blkverify_check(bufs[0], bufs[1], len, off);
    size_t votes = 0, win = vote(bufs, res, q->n, len, &votes);
    int r = 0;
    if (ok < q->threshold)
        r = err;
    else if (votes < q->threshold)
        r = qimg_error(-EIO, "%s", strerror(EIO));
    if (r == 0) {
        memcpy(buf, bufs[win], len);
        if (q->rewrite && votes < ok)
            rewrite_losers(q, bufs, res, win, len, off);
    }
    for (size_t i = 0; i < q->n; i++)
        free(bufs[i]);
    free(bufs);
    free(res);
    return r;
}

static int quorum_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct quorum *q = io->priv;
    return q->fifo ? read_fifo(q, buf, len, off) : read_vote(q, buf, len, off);
}

/* ---- writes: every child, successful when enough children succeed ---- */

enum wop { W_WRITE, W_ZERO, W_DISCARD, W_FLUSH };
struct wreq { enum wop op; const void *buf; uint64_t off, len; unsigned flags; };

static int child_write(struct qimg_io *c, const struct wreq *w)
{
    switch (w->op) {
    case W_WRITE:   return qimg_io_pwrite(c, w->buf, (size_t)w->len, w->off);
    case W_ZERO:    return qimg_io_zero(c, w->off, w->len, w->flags & QIMG_IO_ZERO_MAY_UNMAP);
    case W_DISCARD: return qimg_io_discard(c, w->off, w->len);
    default:        return qimg_io_flush(c);
    }
}

static int write_all(struct qimg_io *io, const struct wreq *w)
{
    struct quorum *q = io->priv;
    size_t ok = 0;
    int err = 0;
    for (size_t i = 0; i < q->n; i++) {
        int r = child_write(q->child[i], w);
        if (r == 0)
            ok++;
        else if (!err)
            err = r;
    }
    return ok >= q->threshold ? 0 : err;
}

static int quorum_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    return write_all(io, &(struct wreq){ W_WRITE, buf, off, len, 0 });
}

static int quorum_zero(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags)
{
    if (flags & QIMG_IO_ZERO_NO_FALLBACK)
        return -ENOTSUP;   /* all or nothing is not promised across children */
    return write_all(io, &(struct wreq){ W_ZERO, NULL, off, len, flags });
}

static int quorum_discard(struct qimg_io *io, uint64_t off, uint64_t len)
{
    return write_all(io, &(struct wreq){ W_DISCARD, NULL, off, len, 0 });
}

static int quorum_flush(struct qimg_io *io)
{
    if (io->flags & QIMG_IO_UNSAFE)
        return 0;
    return write_all(io, &(struct wreq){ W_FLUSH, NULL, 0, 0, 0 });
}

/* ---- the rest ---- */

/* The children must agree on the size (qemu: EIO otherwise). */
static int quorum_get_size(struct qimg_io *io, uint64_t *size)
{
    struct quorum *q = io->priv;
    int r = qimg_io_get_size(q->child[0], size);
    for (size_t i = 1; i < q->n && r == 0; i++) {
        uint64_t other;
        r = qimg_io_get_size(q->child[i], &other);
        if (r == 0 && other != *size)
            r = qimg_error(-EIO, "%s", strerror(EIO));
    }
    return r;
}

/* Zero where every child reads zeros (over the shortest such run), else
 * data up to where the first children's answers stop agreeing, as qemu's
 * quorum answers: it never claims less than "data" for a range a child
 * holds data in. */
static int quorum_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    struct quorum *q = io->priv;
    uint64_t count = len;
    *kind = QIMG_IO_EXT_DATA;
    for (size_t i = 0; i < q->n; i++) {
        uint64_t n = 0;
        int k = 0;
        if (qimg_io_extent(q->child[i], off, count, &n, &k) < 0) {
            *pnum = count;
            return 0;
        }
        if (n > 0 && n < count)
            count = n;
        if (k != QIMG_IO_EXT_HOLE) {
            *pnum = count;
            return 0;
        }
    }
    *pnum = count;
    *kind = QIMG_IO_EXT_HOLE;
    return 0;
}

/* The host space of all children together (qemu's sum for such nodes). */
static int64_t quorum_allocated_size(struct qimg_io *io)
{
    struct quorum *q = io->priv;
    int64_t sum = 0;
    for (size_t i = 0; i < q->n; i++) {
        int64_t s = qimg_io_allocated_size(q->child[i]);
        if (s < 0)
            return s;
        sum += s;
    }
    return sum;
}

static int quorum_lock(struct qimg_io *io, unsigned take, unsigned unshare)
{
    struct quorum *q = io->priv;
    for (size_t i = 0; i < q->n; i++) {
        int r = qimg_io_lock(q->child[i], take, unshare);
        if (r < 0)
            return r;
    }
    return 0;
}

static void quorum_hint(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len)
{
    struct quorum *q = io->priv;
    for (size_t i = 0; i < q->n; i++)
        qimg_io_hint(q->child[i], kind, off, len);
}

static bool quorum_same(struct qimg_io *a, struct qimg_io *b)
{
    struct quorum *qa = a->priv, *qb = b->priv;
    if (qa->n != qb->n)
        return false;
    for (size_t i = 0; i < qa->n; i++)
        if (!qimg_io_same(qa->child[i], qb->child[i]))
            return false;
    return true;
}

/* Named by its options only. */
static char *quorum_exact_filename(struct qimg_io *io)
{
    (void)io;
    return NULL;
}

/* No directory of its own, whatever its children's. */
static char *quorum_dirname(struct qimg_io *io)
{
    (void)io;
    qimg_error(-EINVAL, "Cannot generate a base directory for quorum nodes");
    return NULL;
}

const struct qimg_io_ops qimg_io_quorum_ops = {
    .name           = "quorum",
    .open           = quorum_open,
    .exact_filename = quorum_exact_filename,
    .pread          = quorum_pread,
    .pwrite         = quorum_pwrite,
    .zero           = quorum_zero,
    .discard        = quorum_discard,
    .flush          = quorum_flush,
    .get_size       = quorum_get_size,
    .extent         = quorum_extent,
    .allocated_size = quorum_allocated_size,
    .lock           = quorum_lock,
    .hint           = quorum_hint,
    .same           = quorum_same,
    .close          = quorum_close,
    .dirname        = quorum_dirname,
    .not_protocol    = true,
};
