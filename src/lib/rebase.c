/* qimg - rebase: give an image a new backing file.  Safe mode keeps the
 * guest content: every range the image does not hold itself, and where
 * the old and the new backing read differently, is first written into
 * the image; then the driver records the new name. */
#include <errno.h>

#include "internal.h"

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

/* Read [off, off+*n) of a backing image into buf, clamping *n to the
 * backing's end; zeros when there is none or off is past its end. */
static int read_backing(qimg_image *b, uint64_t off, uint64_t *n, uint8_t *buf, bool *zero,
                        const char *which)
{
    *zero = false;
    if (!b || off >= b->size) {
        memset(buf, 0, (size_t)*n);
        *zero = true;
        return 0;
    }
    *n = QIMG_MIN(*n, b->size - off);
    int r = qimg_read(b, off, buf, (size_t)*n);
    if (r < 0)
        return qimg_error(r, "error while reading from %s backing file", which);
    return 0;
}

static int write_differences(qimg_image *img, uint64_t off, uint64_t n, const uint8_t *old_buf,
                             const uint8_t *new_buf, bool old_is_zero)
{
    uint64_t done = 0;
    while (done < n) {
        bool differ;
        size_t run = same_status_run(old_buf + done, new_buf + done, (size_t)(n - done), &differ);
        if (differ) {
            int r = old_is_zero ? qimg_write_zeroes(img, off + done, run, 0)
                                : qimg_write(img, off + done, old_buf + done, run);
            if (r < 0)
                return qimg_error(r, "Error while writing to COW image: %s", strerror(-r));
        }
        done += run;
    }
    return 0;
}

/* One step of the safe-mode walk from off; *n is set to the bytes handled. */
static int rebase_step(const struct qimg_rebase_params *p, bool prefix, uint64_t off, uint64_t *n,
                       uint8_t *old_buf, uint8_t *new_buf, bool *did_io)
{
    qimg_image *img = p->img;
    struct qimg_extent ext;
    *did_io = false;
    int r = qimg_block_status(img, off, *n, &ext);
    if (r < 0)
        return qimg_error(r, "error while reading image metadata: %s", strerror(-r));
    *n = ext.length;
    if (ext.flags & QIMG_STATUS_ALLOCATED)
        return 0;
    if (prefix) {
        /* unchanged since the new backing: nothing to do */
        r = qimg_chain_is_allocated_above(img->backing, p->new_backing, off, *n, n);
        if (r < 0)
            return qimg_error(r, "error while reading image metadata: %s", strerror(-r));
        if (r == 0)
            return 0;
    }
    bool old_is_zero, new_is_zero;
    r = read_backing(img->backing, off, n, old_buf, &old_is_zero, "old");
    if (r == 0)
        r = read_backing(p->new_backing, off, n, new_buf, &new_is_zero, "new");
    if (r == 0)
        r = write_differences(img, off, *n, old_buf, new_buf, old_is_zero);
    *did_io = true;
    return r;
}

static int copy_differences(const struct qimg_rebase_params *p)
{
    qimg_image *img = p->img;
    uint64_t size = img->size;
    bool prefix = p->new_backing && in_chain_of(img, p->new_backing);
    CLEANUP_FREE uint8_t *old_buf = qimg_io_buffer(REBASE_CHUNK);
    CLEANUP_FREE uint8_t *new_buf = qimg_io_buffer(REBASE_CHUNK);
    /* qemu advances its progress by one chunk's share per chunk read */
    double step = size ? 100.0 / (double)(size / QIMG_MIN(size, REBASE_CHUNK)) : 0;
    double percent = 0;
    for (uint64_t off = 0; off < size;) {
        uint64_t n = QIMG_MIN(REBASE_CHUNK, size - off);
        bool did_io;
        int r = rebase_step(p, prefix, off, &n, old_buf, new_buf, &did_io);
        if (r < 0)
            return r;
        off += n;
        if (did_io && p->progress) {
            percent = QIMG_MIN(percent + step, 100.0);
            p->progress(percent, p->progress_opaque);
        }
    }
    return 0;
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
    else if (!img->drv->change_backing)
        r = -ENOTSUP;
    else
        r = img->drv->change_backing(img, file, fmt);
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
