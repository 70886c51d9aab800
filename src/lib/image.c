/* qimg - the image layer: open by name with probing, backing chains,
 * guest I/O and block status through the chain. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>

#include "internal.h"

#define PROBE_BYTES 512

/* ---- accessors ---- */

uint64_t qimg_size(const qimg_image *img) { return img->size; }
const char *qimg_filename(const qimg_image *img) { return img->filename; }
const char *qimg_format(const qimg_image *img) { return img->drv->name; }
qimg_image *qimg_backing(const qimg_image *img) { return img->backing; }
const char *qimg_backing_filename(const qimg_image *img) { return img->backing_file; }
const char *qimg_full_backing_filename(const qimg_image *img) { return img->full_backing_filename; }
const char *qimg_backing_format(const qimg_image *img) { return img->backing_fmt; }

char *qimg_backing_path(const qimg_image *img, const char *name)
{
    return qimg_path_combine(img->file->filename, name);
}

/* ---- open ---- */

static unsigned io_flags_for(unsigned flags)
{
    unsigned io = 0;
    if (flags & QIMG_OPEN_RDWR) io |= QIMG_IO_RDWR;
    if (flags & QIMG_OPEN_FORCE_SHARE) io |= QIMG_IO_NOLOCK;
    if (flags & QIMG_OPEN_CACHE_DIRECT) io |= QIMG_IO_DIRECT;
    if (flags & QIMG_OPEN_CACHE_SYNC) io |= QIMG_IO_DSYNC;
    if (flags & QIMG_OPEN_CACHE_UNSAFE) io |= QIMG_IO_UNSAFE;
    if (flags & QIMG_OPEN_STREAM) io |= QIMG_IO_STREAM;
    return io;
}

static int probe_format(struct qimg_io *io, const char *filename, const struct qimg_driver **drv)
{
    uint8_t buf[PROBE_BYTES];
    uint64_t size;
    int r = qimg_io_get_size(io, &size);
    if (r < 0)
        return r;
    size_t len = (size_t)QIMG_MIN(size, (uint64_t)PROBE_BYTES);
    memset(buf, 0, sizeof buf);
    if (len > 0) {
        r = qimg_io_pread(io, buf, len, 0);
        if (r < 0)
            return qimg_error(r, "Could not read image for determining its format: %s", strerror(-r));
    }
    *drv = qimg_driver_probe(buf, len, size, filename);
    return 0;
}

void qimg_warn_probed_raw(const char *filename)
{
    qimg_warn("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
              "         Automatically detecting the format is dangerous for raw images, "
              "write operations on block 0 will be restricted.\n"
              "         Specify the 'raw' format explicitly to remove the restrictions.",
              filename);
}

/* Take qemu's locks: a reader holds "consistent read" (not for info,
 * which does no I/O), a writer also "write" and "resize"; a format with
 * metadata of its own refuses to share write and resize, since another
 * writer would change its metadata under it.  raw shares everything. */
static int lock_image(qimg_image *img)
{
    unsigned take = 0, unshare = 0;
    if (!(img->flags & QIMG_OPEN_NO_IO))
        take |= QIMG_PERM_READ;
    if (img->flags & QIMG_OPEN_RDWR)
        take |= QIMG_PERM_READ | QIMG_PERM_WRITE | QIMG_PERM_RESIZE;
    if (qimg_drv_has_metadata(img->drv))
        unshare = QIMG_PERM_WRITE | QIMG_PERM_RESIZE;
    return qimg_io_lock(img->file, take, unshare);
}

static int read_only_driver(const struct qimg_driver *drv)
{
    return qimg_error(-EACCES, "Driver '%s' can only be used for read-only devices", drv->name);
}

/* Open one node (no backing) on an already-named storage object. */
static int open_node(qimg_image **out, const char *display_name, const char *file_name,
                     const char *fmt, unsigned flags)
{
    const struct qimg_driver *drv = NULL;
    int r;
    if (fmt) {
        drv = qimg_driver_find(fmt);
        if (!drv)
            return qimg_error(-EINVAL, "Unknown driver '%s'", fmt);
    }
    if ((flags & QIMG_OPEN_RDWR) && drv && (drv->flags & QIMG_DRV_READ_ONLY))
        return read_only_driver(drv);

    qimg_image *img = qimg_xcalloc(1, sizeof *img);
    pthread_mutex_init(&img->lock, NULL);
    img->filename = qimg_strdup(display_name);
    img->flags = flags;
    img->read_only = !(flags & QIMG_OPEN_RDWR);
    r = qimg_io_open(&img->file, file_name, io_flags_for(flags));
    if (r < 0)
        goto fail;
    if (!drv) {
        r = probe_format(img->file, file_name, &drv);
        if (r < 0)
            goto fail;
        if ((flags & QIMG_OPEN_RDWR) && (drv->flags & QIMG_DRV_READ_ONLY)) {
            r = read_only_driver(drv);
            goto fail;
        }
        if (drv == &qimg_driver_raw && (flags & QIMG_OPEN_RDWR)) {
            img->probed_raw = true;
            if (!(flags & QIMG_OPEN_NO_PROBE_WARNING))
                qimg_warn_probed_raw(display_name);
        }
    }
    img->drv = drv;
    r = lock_image(img);
    if (r < 0) {
        img->drv = NULL;
        goto fail;
    }
    r = drv->open(img, flags);
    if (r < 0) {
        img->drv = NULL;
        goto fail;
    }
    if (img->backing_file && img->backing_file[0])
        img->full_backing_filename = qimg_path_combine(file_name, img->backing_file);
    *out = img;
    return 0;
fail:
    qimg_close(img);
    return r;
}

/* Identity of a file for loop detection. */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
        return strcmp(a, b) == 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int qimg_open_backing_chain(qimg_image *top)
{
    qimg_image *img = top;
    unsigned depth = 0;
    unsigned flags = (top->flags & ~QIMG_OPEN_RDWR) | QIMG_OPEN_NO_PROBE_WARNING;
    while (img->full_backing_filename) {
        if (++depth > QIMG_MAX_CHAIN_DEPTH)
            return qimg_error(-ELOOP, "Backing chain of '%s' is too long", top->filename);
        for (qimg_image *seen = top; seen; seen = seen->backing)
            if (same_file(seen->file->filename, img->full_backing_filename))
                return qimg_error(-ELOOP, "Backing file '%s' creates an infinite loop.",
                                  img->full_backing_filename);
        qimg_image *b;
        int r = open_node(&b, img->full_backing_filename, img->full_backing_filename,
                          img->backing_fmt, flags);
        if (r < 0) {
            qimg_error_prefix("Could not open backing file");
            return r;
        }
        img->backing = b;
        img = b;
    }
    return 0;
}

static bool only_simple_keys(const qimg_opts *o)
{
    static const char *const simple[] = { "driver", "file", "filename", "file.driver", "file.filename" };
    for (size_t i = 0; i < o->n; i++) {
        bool known = false;
        for (size_t k = 0; k < QIMG_ARRAY_SIZE(simple); k++)
            known |= strcmp(o->v[i].name, simple[k]) == 0;
        if (!known)
            return false;
    }
    return true;
}

/* json:{"driver":"raw","file":{"driver":"file","filename":"x"}} and
 * --image-opts strings name the format and the file with dotted keys. */
static int open_from_opts(qimg_image **out, qimg_opts *o, const char *display, const char *fmt,
                          unsigned flags)
{
    const char *driver = qimg_opts_get(o, "driver");
    const char *file = qimg_opts_get(o, "file.filename");
    if (!file)
        file = qimg_opts_get(o, "file");
    if (!file)
        file = qimg_opts_get(o, "filename");
    if (driver && strcmp(driver, "file") == 0) {
        driver = NULL;
        file = qimg_opts_get(o, "filename");
    }
    if (!file)
        return qimg_error(-EINVAL, "A block device must be specified for \"file\"");
    if (fmt && driver && strcmp(fmt, driver) != 0)
        return qimg_error(-EINVAL, "Cannot use image format '%s' with driver '%s'", fmt, driver);
    /* qemu names the image after its file when the options say nothing
     * more than driver and file name. */
    if (only_simple_keys(o))
        display = file;
    int r = open_node(out, display, file, driver ? driver : fmt, flags);
    if (r == 0 && !(flags & QIMG_OPEN_NO_BACKING))
        r = qimg_open_backing_chain(*out);
    return r;
}

int qimg_open(qimg_image **out, const char *filename, const char *fmt, unsigned flags)
{
    *out = NULL;
    qimg_error_clear();
    if (strncmp(filename, "json:", 5) == 0) {
        qimg_opts *o = NULL;
        int r = qimg_json_filename_parse(&o, filename + 5);
        if (r == 0)
            r = open_from_opts(out, o, filename, fmt, flags);
        qimg_opts_free(o);
        return r;
    }
    int r = open_node(out, filename, filename, fmt, flags);
    if (r == 0 && !(flags & QIMG_OPEN_NO_BACKING)) {
        r = qimg_open_backing_chain(*out);
        if (r < 0) {
            qimg_close(*out);
            *out = NULL;
        }
    }
    return r;
}

int qimg_open_opts(qimg_image **out, const char *optstr, unsigned flags)
{
    qimg_opts *o = NULL;
    *out = NULL;
    int r = qimg_keyval_parse(&o, optstr, NULL);
    if (r == 0)
        r = open_from_opts(out, o, optstr, NULL, flags);
    qimg_opts_free(o);
    return r;
}

int qimg_close(qimg_image *img)
{
    int r = 0;
    while (img) {
        qimg_image *next = img->backing;
        if (img->drv) {
            if (!img->read_only && img->drv->flush)
                r = r ? r : img->drv->flush(img);
            img->drv->close(img);
        }
        qimg_io_close(img->file);
        free(img->filename);
        free(img->backing_file);
        free(img->backing_fmt);
        free(img->full_backing_filename);
        pthread_mutex_destroy(&img->lock);
        free(img);
        img = next;
    }
    return r;
}

/* ---- guest I/O ---- */

static int check_range(const qimg_image *img, uint64_t off, uint64_t len)
{
    if (!qimg_range_ok(off, len, img->size))
        return qimg_error(-EIO, "Request out of range (offset %" PRIu64 ", length %" PRIu64
                          ", image size %" PRIu64 ")", off, len, img->size);
    return 0;
}

static int check_writable(const qimg_image *img)
{
    if (img->read_only)
        return qimg_error(-EACCES, "Image '%s' is read-only", img->filename);
    return 0;
}

int qimg_read(qimg_image *img, uint64_t off, void *buf, size_t len)
{
    int r = check_range(img, off, len);
    if (r < 0 || len == 0)
        return r;
    return img->drv->read(img, off, buf, len);
}

int qimg_read_backing(qimg_image *img, uint64_t off, void *buf, size_t len)
{
    qimg_image *b = img->backing;
    uint64_t avail = 0;
    if (b && off < b->size)
        avail = QIMG_MIN((uint64_t)len, b->size - off);
    if (avail > 0) {
        int r = b->drv->read(b, off, buf, (size_t)avail);
        if (r < 0)
            return r;
    }
    memset((uint8_t *)buf + avail, 0, len - (size_t)avail);
    return 0;
}

int qimg_write(qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    int r = check_writable(img);
    if (r == 0)
        r = check_range(img, off, len);
    if (r < 0 || len == 0)
        return r;
    if (!img->drv->write)
        return qimg_error(-ENOTSUP, "Driver '%s' does not support writing", img->drv->name);
    return img->drv->write(img, off, buf, len);
}

/* Fallback for drivers without write_zeroes: write a zero buffer. */
static int write_zero_buffer(qimg_image *img, uint64_t off, uint64_t len)
{
    size_t chunk = (size_t)QIMG_MIN(len, (uint64_t)1 << 20);
    CLEANUP_FREE uint8_t *zeros = qimg_xcalloc(1, chunk);
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN(len, (uint64_t)chunk);
        int r = img->drv->write(img, off, zeros, n);
        if (r < 0)
            return r;
        off += n, len -= n;
    }
    return 0;
}

int qimg_write_zeroes(qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    int r = check_writable(img);
    if (r == 0)
        r = check_range(img, off, len);
    if (r < 0 || len == 0)
        return r;
    if (img->drv->write_zeroes) {
        r = img->drv->write_zeroes(img, off, len, flags);
        if (r != -ENOTSUP || (flags & QIMG_ZERO_FAST))
            return r;
    } else if (flags & QIMG_ZERO_FAST) {
        return -ENOTSUP;
    }
    if (!img->drv->write)
        return qimg_error(-ENOTSUP, "Driver '%s' does not support writing", img->drv->name);
    return write_zero_buffer(img, off, len);
}

int qimg_discard(qimg_image *img, uint64_t off, uint64_t len)
{
    int r = check_writable(img);
    if (r == 0)
        r = check_range(img, off, len);
    if (r < 0 || len == 0 || !img->drv->discard)
        return r;
    return img->drv->discard(img, off, len);
}

int qimg_flush(qimg_image *img)
{
    if (img->read_only || !img->drv->flush)
        return 0;
    return img->drv->flush(img);
}

/* ---- block status ---- */

int qimg_block_status(qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    memset(ext, 0, sizeof *ext);
    ext->offset = off;
    if (off >= img->size || len == 0)
        return qimg_error(-EINVAL, "Block status request out of range");
    len = QIMG_MIN(len, img->size - off);
    int r = img->drv->block_status(img, off, len, ext);
    if (r < 0)
        return r;
    if (ext->length == 0 || ext->length > len)
        return qimg_error(-EIO, "Driver '%s' returned a bad block status", img->drv->name);
    ext->offset = off;
    if (off + ext->length == img->size)
        ext->flags |= QIMG_STATUS_EOF;
    return 0;
}

/* Walk down while the range is unallocated; depth counts layers visited.
 * A range past the end of a backing image reads as zeros from the layer
 * above it, so the walk stops there. */
int qimg_block_status_chain(qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    qimg_image *top = img;
    unsigned depth = 0;
    int r = qimg_block_status(img, off, len, ext);
    if (r < 0)
        return r;
    len = ext->length;
    while (!(ext->flags & QIMG_STATUS_ALLOCATED) && img->backing && off < img->backing->size) {
        img = img->backing;
        depth++;
        r = qimg_block_status(img, off, len, ext);
        if (r < 0)
            return r;
        len = ext->length;
    }
    if (!(ext->flags & QIMG_STATUS_ALLOCATED)) {
        /* Zeros from the last layer visited; a host offset it reported
         * (a qcow2 subcluster unallocated in an allocated cluster) is
         * kept, as qemu-img map shows it. */
        ext->flags = (ext->flags & (QIMG_STATUS_EOF | QIMG_STATUS_OFFSET)) | QIMG_STATUS_ZERO;
        if (!(ext->flags & QIMG_STATUS_OFFSET))
            ext->host_file = NULL;
    }
    ext->depth = depth;
    /* EOF is about the top image */
    ext->flags &= ~QIMG_STATUS_EOF;
    if (off + ext->length == top->size)
        ext->flags |= QIMG_STATUS_EOF;
    return 0;
}
