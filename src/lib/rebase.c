/* qimg - rebase: give an image a new backing file.  Safe mode keeps the
 * guest content: every range the image does not hold itself, and where
 * the old and the new backing read differently, is first written into
 * the image; then the driver records the new name. */
#include <errno.h>
#include <fcntl.h>

#include "internal.h"
#include "readahead.h"

#define REBASE_CHUNK ((uint64_t)2 << 20)
#define SECTOR 512

static bool in_chain_of(qimg_image *img, qimg_image *layer)
{
    for (qimg_image *l = img->backing; l; l = l->backing)
        if (l == layer)
            return true;
    return false;
}

/* Length of the run of sectors from the start of a and b that all match
 * or all differ (as the first one does); *differ says which. */
static size_t same_status_run(const uint8_t *a, const uint8_t *b, size_t len, bool *differ)
{
    size_t first = QIMG_MIN(len, (size_t)SECTOR);
    *differ = memcmp(a, b, first) != 0;
    size_t done = first;
    while (done < len) {
        size_t n = QIMG_MIN(len - done, (size_t)SECTOR);
        if ((memcmp(a + done, b + done, n) != 0) != *differ)
            break;
        done += n;
    }
    return done;
}

/* A step of the walk, as qemu's rebase loop takes them: from off, n bytes
 * with one answer.  Steps that need I/O read the old and the new backing
 * over [off, off+n); old_zero: the old backing has nothing there. */
struct step {
    uint64_t off, n;
    bool io, old_zero, new_zero;
};

/* Plan the step at off from metadata only (the image's block status,
 * the layers between the old and the new backing, the backing sizes). */
static int plan_step(const struct qimg_rebase_params *p, bool prefix, uint64_t off,
                     struct step *st)
{
    qimg_image *img = p->img, *old_b = img->backing, *new_b = p->new_backing;
    struct qimg_extent ext;
    memset(st, 0, sizeof *st);
    st->off = off;
    st->n = QIMG_MIN(REBASE_CHUNK, img->size - off);
    int r = qimg_block_status(img, off, st->n, &ext);
    if (r < 0)
        return qimg_error(r, "error while reading image metadata: %s", strerror(-r));
    st->n = ext.length;
    if (ext.flags & QIMG_STATUS_ALLOCATED)
        return 0;
    if (prefix) {
        /* unchanged since the new backing: nothing to do */
        r = qimg_chain_is_allocated_above(old_b, new_b, off, st->n, &st->n);
        if (r < 0)
            return qimg_error(r, "error while reading image metadata: %s", strerror(-r));
        if (r == 0)
            return 0;
    }
    st->io = true;
    st->old_zero = !old_b || off >= old_b->size;
    if (!st->old_zero)
        st->n = QIMG_MIN(st->n, old_b->size - off);
    st->new_zero = !new_b || off >= new_b->size;
    if (!st->new_zero)
        st->n = QIMG_MIN(st->n, new_b->size - off);
    return 0;
}

static int read_side(qimg_image *b, bool zero, const struct step *st, uint8_t *buf,
                     const char *which)
{
    if (zero) {
        memset(buf, 0, (size_t)st->n);
        return 0;
    }
    int r = qimg_read(b, st->off, buf, (size_t)st->n);
    if (r < 0)
        return qimg_error(r, "error while reading from %s backing file", which);
    return 0;
}

static int write_differences(qimg_image *img, const struct step *st, const uint8_t *old_buf,
                             const uint8_t *new_buf)
{
    uint64_t done = 0;
    while (done < st->n) {
        bool differ;
        size_t run = same_status_run(old_buf + done, new_buf + done, (size_t)(st->n - done), &differ);
        if (differ) {
            uint64_t at = st->off + done;
            int r = st->old_zero ? qimg_write_zeroes(img, at, run, 0)
                                 : qimg_write(img, at, old_buf + done, run);
            if (r < 0)
                return qimg_error(r, "Error while writing to COW image: %s", strerror(-r));
        }
        done += run;
    }
    return 0;
}

/* ---- the walk, with the backing reads done ahead on worker threads ----
 *
 * Steps are planned ahead and their reads run on workers, but each step
 * is checked again and written in order: a write can allocate the cluster
 * a later step starts in (steps need not be cluster aligned), and then
 * that step is planned again, so the image ends up exactly as with one
 * step after the other (same writes, same order, same progress).  Each
 * slot holds two buffers of REBASE_CHUNK: three (one being written while
 * both workers read) keep the peak memory under qemu-img's. */
#define REBASE_SLOTS 3
#define REBASE_THREADS 2

struct slot {
    struct step st;
    uint8_t *old_buf, *new_buf;
    bool ready;
    int err;
    char *errmsg;
    struct rebase_walk *w;
};

struct rebase_walk {
    const struct qimg_rebase_params *p;
    bool prefix;
    struct slot slots[REBASE_SLOTS];
    unsigned head, count;          /* ring of planned steps, in order */
    uint64_t plan_off;             /* where planning goes on */
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct qimg_pool *pool;
};

static void read_job(void *opaque)
{
    struct slot *sl = opaque;
    struct rebase_walk *w = sl->w;
    const struct qimg_rebase_params *p = w->p;
    int r = read_side(p->img->backing, sl->st.old_zero, &sl->st, sl->old_buf, "old");
    if (r == 0)
        r = read_side(p->new_backing, sl->st.new_zero, &sl->st, sl->new_buf, "new");
    pthread_mutex_lock(&w->lock);
    sl->err = r;
    sl->errmsg = r < 0 ? qimg_strdup(qimg_last_error()) : NULL;
    sl->ready = true;
    pthread_cond_broadcast(&w->ready);
    pthread_mutex_unlock(&w->lock);
}

/* Plan steps into the free slots, starting their reads. */
static int plan_ahead(struct rebase_walk *w)
{
    uint64_t size = w->p->img->size;
    while (w->count < REBASE_SLOTS && w->plan_off < size) {
        struct slot *sl = &w->slots[(w->head + w->count) % REBASE_SLOTS];
        int r = plan_step(w->p, w->prefix, w->plan_off, &sl->st);
        if (r < 0)
            return r;
        w->plan_off += sl->st.n;
        w->count++;
        free(sl->errmsg);
        sl->errmsg = NULL;
        sl->err = 0;
        sl->ready = !sl->st.io;
        if (sl->st.io) {
            if (!sl->st.old_zero)
                qimg_chain_readahead(w->p->img->backing, NULL, sl->st.off, sl->st.n);
            if (!sl->st.new_zero)
                qimg_chain_readahead(w->p->new_backing, NULL, sl->st.off, sl->st.n);
            r = qimg_pool_submit(w->pool, read_job, sl);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static void wait_ready(struct rebase_walk *w, struct slot *sl)
{
    pthread_mutex_lock(&w->lock);
    while (!sl->ready)
        pthread_cond_wait(&w->ready, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

/* Drop every planned step (their reads finish first). */
static void drop_plan(struct rebase_walk *w, uint64_t from)
{
    for (unsigned i = 0; i < w->count; i++)
        wait_ready(w, &w->slots[(w->head + i) % REBASE_SLOTS]);
    w->count = 0;
    w->plan_off = from;
}

static bool same_step(const struct step *a, const struct step *b)
{
    return a->off == b->off && a->n == b->n && a->io == b->io &&
           a->old_zero == b->old_zero && a->new_zero == b->new_zero;
}

/* Take the next step in order: 1 with *out set, 0 at the end, <0 error. */
static int next_step(struct rebase_walk *w, struct slot **out)
{
    for (;;) {
        int r = plan_ahead(w);
        if (r < 0)
            return r;
        if (w->count == 0)
            return 0;
        struct slot *sl = &w->slots[w->head];
        struct step now;
        r = plan_step(w->p, w->prefix, sl->st.off, &now);
        if (r < 0)
            return r;
        if (!same_step(&now, &sl->st)) {
            drop_plan(w, sl->st.off);
            continue;
        }
        wait_ready(w, sl);
        w->head = (w->head + 1) % REBASE_SLOTS;
        w->count--;
        *out = sl;
        return 1;
    }
}

/* Start the writeback of what was written every WRITEBACK_STEP bytes, so
 * that the final flush does not write it all at once (see commit.c). */
#define WRITEBACK_STEP ((uint64_t)32 << 20)

static void start_writeback(struct qimg_io *io)
{
    qimg_io_hint(io, QIMG_IO_HINT_WRITEBACK, 0, 0);   /* 0, 0: the whole file */
}

static int walk(struct rebase_walk *w)
{
    const struct qimg_rebase_params *p = w->p;
    uint64_t size = p->img->size;
    /* qemu advances its progress by one chunk's share per step with I/O */
    double step = size ? 100.0 / (double)(size / QIMG_MIN(size, REBASE_CHUNK)) : 0;
    double percent = 0;
    uint64_t handled = 0;
    struct slot *sl;
    int r;
    while ((r = next_step(w, &sl)) == 1) {
        if (!sl->st.io)
            continue;
        if (sl->err < 0)
            return qimg_error(sl->err, "%s", sl->errmsg);
        r = write_differences(p->img, &sl->st, sl->old_buf, sl->new_buf);
        if (r < 0)
            return r;
        if ((handled + sl->st.n) / WRITEBACK_STEP != handled / WRITEBACK_STEP)
            start_writeback(p->img->file);
        handled += sl->st.n;
        if (p->progress) {
            percent = QIMG_MIN(percent + step, 100.0);
            p->progress(percent, p->progress_opaque);
        }
    }
    return r;
}

static int copy_differences(const struct qimg_rebase_params *p)
{
    struct rebase_walk w = { .p = p };
    w.prefix = p->new_backing && in_chain_of(p->img, p->new_backing);
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.ready, NULL);
    for (int i = 0; i < REBASE_SLOTS; i++) {
        w.slots[i].old_buf = qimg_io_buffer(REBASE_CHUNK);
        w.slots[i].new_buf = qimg_io_buffer(REBASE_CHUNK);
        w.slots[i].w = &w;
    }
    int r = qimg_pool_new(&w.pool, REBASE_THREADS);
    if (r == 0) {
        r = walk(&w);
        drop_plan(&w, 0);
        qimg_pool_free(w.pool);
    }
    for (int i = 0; i < REBASE_SLOTS; i++) {
        free(w.slots[i].old_buf);
        free(w.slots[i].new_buf);
        free(w.slots[i].errmsg);
    }
    pthread_cond_destroy(&w.ready);
    pthread_mutex_destroy(&w.lock);
    return r;
}

static int change_backing(const struct qimg_rebase_params *p)
{
    qimg_image *img = p->img;
    bool named = p->backing_file && p->backing_file[0];
    const char *file = named ? p->backing_file : NULL;
    const char *fmt = named ? p->backing_fmt : NULL;
    const char *shown = p->backing_file ? p->backing_file : "(null)";
    int r;
    if (file && !fmt)
        r = -EINVAL;   /* a recorded backing file needs its format (qemu >= 6.1) */
    else
        r = qimg_drv_change_backing(img, file, fmt);
    if (r == -ENOSPC)
        return qimg_error(r, "Could not change the backing file to '%s': No space left in the file header", shown);
    if (r == -EINVAL && p->backing_file && !p->backing_fmt)
        return qimg_error(r, "Could not change the backing file to '%s': backing format must be specified", shown);
    if (r < 0)
        return qimg_error(r, "Could not change the backing file to '%s': %s", shown, strerror(-r));
    return 0;
}

int qimg_rebase(const struct qimg_rebase_params *p)
{
    if (!p->unsafe) {
        int r = copy_differences(p);
        if (r < 0)
            return r;
    }
    /* qemu-img shows 100% whether or not the header change works */
    if (p->progress)
        p->progress(100, p->progress_opaque);
    return change_backing(p);
}
