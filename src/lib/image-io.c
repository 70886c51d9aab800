/* qimg - a format node under a filter: json:{"driver": "blkdebug",
 * "image": {"driver": "qcow2", "file": {...}}} puts qemu's filter above the
 * qcow2 node, so that its rules see guest offsets, reads and block status
 * queries of the guest disk (qemu-iotests 251 injects block-status errors
 * that way).
 *
 * Two small pieces make that from the storage layer's parts:
 *  - the "image" storage backend: a storage object whose bytes are the
 *    guest disk of an image opened from an option tree (a storage tree
 *    whose "driver" names a format lands here, see qimg_io_open_opts);
 *  - the filter's format: an image whose storage holds such an image (the
 *    filter over it) reads and writes it as it is, and is named by the
 *    filter ("blkdebug"), as qemu shows it; no probing of the guest's bytes.
 */
#include <errno.h>

#include "internal.h"

/* ---- the "image" storage backend ---- */

static qimg_image *io_image(struct qimg_io *io)
{
    return io->priv;
}

static unsigned image_flags_for(unsigned ioflags)
{
    return qimg_open_flags_for_io(ioflags) | QIMG_OPEN_NO_PROBE_WARNING;
}

/* The part of [off, off+len) inside the image; the rest reads as zeros. */
static size_t inside(const qimg_image *img, uint64_t off, size_t len)
{
    uint64_t size = qimg_size(img);
    return off >= size ? 0 : (size_t)QIMG_MIN((uint64_t)len, size - off);
}

static int iimg_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    size_t n = inside(io_image(io), off, len);
    int r = n ? qimg_read(io_image(io), off, buf, n) : 0;
    if (r == 0)
        memset((uint8_t *)buf + n, 0, len - n);
    return r;
}

static int iimg_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    return qimg_write(io_image(io), off, buf, len);
}

static int iimg_zero(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags)
{
    if (flags & QIMG_IO_ZERO_NO_FALLBACK)
        return -ENOTSUP;
    return qimg_write_zeroes(io_image(io), off, len,
                             (flags & QIMG_IO_ZERO_MAY_UNMAP) ? QIMG_ZERO_MAY_UNMAP : 0);
}

static int iimg_discard(struct qimg_io *io, uint64_t off, uint64_t len)
{
    return qimg_discard(io_image(io), off, len);
}

static int iimg_flush(struct qimg_io *io)
{
    return qimg_flush(io_image(io));
}

static int iimg_get_size(struct qimg_io *io, uint64_t *size)
{
    *size = qimg_size(io_image(io));
    return 0;
}

/* Guest block status as storage extents: zeros are holes. */
static int iimg_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    struct qimg_extent ext;
    int r = qimg_block_status_chain(io_image(io), off, len, &ext);
    if (r < 0)
        return r;
    *pnum = ext.length;
    *kind = (ext.flags & QIMG_STATUS_ZERO) ? QIMG_IO_EXT_HOLE :
            (ext.flags & QIMG_STATUS_DATA) ? QIMG_IO_EXT_DATA : QIMG_IO_EXT_UNKNOWN;
    return 0;
}

static int64_t iimg_allocated_size(struct qimg_io *io)
{
    return qimg_io_allocated_size(io_image(io)->file);
}

/* The image took its own locks when it was opened. */
static int iimg_lock(struct qimg_io *io, unsigned take, unsigned unshare)
{
    return 0;
}

static bool iimg_same(struct qimg_io *a, struct qimg_io *b)
{
    return qimg_io_same(io_image(a)->file, io_image(b)->file);
}

/* Named by the image's storage, as qemu names a format node. */
static char *iimg_exact_filename(struct qimg_io *io)
{
    return qimg_io_exact_filename(io_image(io)->file);
}

static void iimg_close(struct qimg_io *io)
{
    qimg_close(io_image(io));
}

static const struct qimg_io_ops image_io_ops = {
    .name     = "image",
    .pread    = iimg_pread,
    .pwrite   = iimg_pwrite,
    .zero     = iimg_zero,
    .discard  = iimg_discard,
    .flush    = iimg_flush,
    .get_size = iimg_get_size,
    .extent   = iimg_extent,
    .allocated_size = iimg_allocated_size,
    .lock     = iimg_lock,
    .same     = iimg_same,
    .exact_filename = iimg_exact_filename,
    .close    = iimg_close,
};

/* Format nodes inside format nodes: an image's backing name can nest them
 * (json:{"driver":"qcow2","file":{"driver":"qcow2",...}}), and one that
 * names the image itself would recurse without end. */
#define MAX_NESTED_IMAGES 16
static _Thread_local unsigned nested_images;

int qimg_io_open_image(struct qimg_io **out, qimg_opts *opts, unsigned ioflags)
{
    *out = NULL;
    const char *file = qimg_opts_get(opts, "file.filename");
    const char *display = file ? file : qimg_opts_get(opts, "driver");
    if (nested_images >= MAX_NESTED_IMAGES)
        return qimg_error(-ELOOP, "Too many format nodes nested in each other");
    qimg_image *img;
    nested_images++;
    int r = qimg_open_tree(&img, opts, display, image_flags_for(ioflags));
    nested_images--;
    if (r < 0)
        return r;
    struct qimg_io *io = qimg_xcalloc(1, sizeof *io);
    io->ops = &image_io_ops;
    io->filename = qimg_strdup(qimg_filename(img));
    io->flags = ioflags;
    io->align = 1;
    io->priv = img;
    *out = io;
    return 0;
}

/* The image io holds (itself or below its filters), or NULL. */
static qimg_image *held_image(struct qimg_io *io)
{
    while (io && io->ops != &image_io_ops)
        io = qimg_io_blkdebug_child(io);
    return io ? io_image(io) : NULL;
}

bool qimg_io_holds_image(struct qimg_io *io)
{
    return held_image(io) != NULL;
}

qimg_image *qimg_filtered_image(qimg_image *img)
{
    return img->drv == &qimg_driver_filter ? held_image(img->file) : NULL;
}

/* ---- the filter's format: the storage as it is ---- */

static int filter_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    return 0;     /* never probed: chosen when the storage holds an image */
}

static int filter_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    return qimg_io_get_size(img->file, &img->size);
}

static void filter_close(struct qimg_image *img)
{
}

static int filter_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    return qimg_io_pread(img->file, buf, len, off);
}

static int filter_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    return qimg_io_pwrite(img->file, buf, len, off);
}

static int filter_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    return qimg_io_zero(img->file, off, len, flags & QIMG_ZERO_MAY_UNMAP);
}

static int filter_discard(struct qimg_image *img, uint64_t off, uint64_t len)
{
    return qimg_io_discard(img->file, off, len);
}

static int filter_flush(struct qimg_image *img)
{
    return qimg_io_flush(img->file);
}

/* qemu shows the filtered image's cluster size, nothing more. */
static int filter_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    qimg_image *below = held_image(img->file);
    int64_t cluster = below ? qimg_image_cluster_size(below) : 0;
    info->cluster_size = cluster > 0 ? cluster : 0;
    info->has_dirty = true;     /* "dirty-flag": false */
    return 0;
}

static int filter_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                               struct qimg_extent *ext)
{
    int kind;
    uint64_t pnum;
    int r = qimg_io_extent(img->file, off, len, &pnum, &kind);
    if (r < 0)
        return r;
    ext->length = pnum;
    ext->flags = kind == QIMG_IO_EXT_DATA ? QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA :
                 kind == QIMG_IO_EXT_HOLE ? QIMG_STATUS_ALLOCATED | QIMG_STATUS_ZERO :
                 kind == QIMG_IO_EXT_DATA_ZERO ? QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_ZERO : 0;
    return 0;
}

const struct qimg_driver qimg_driver_filter = {
    .name         = "blkdebug",
    .probe        = filter_probe,
    .open         = filter_open,
    .close        = filter_close,
    .read         = filter_read,
    .write        = filter_write,
    .write_zeroes = filter_write_zeroes,
    .discard      = filter_discard,
    .flush        = filter_flush,
    .block_status = filter_block_status,
    .info         = filter_info,
};
