/* qimg - VMDK FLAT and VMFS extents (the guest data as it is, in a file
 * from a byte offset on) and ZERO extents (no file, reads as zeros). */
#include <errno.h>
#include <inttypes.h>

#include "vmdk.h"

static int flat_open(struct qimg_image *img, struct vmdk_extent *e, const uint8_t *hdr,
                     uint64_t file_size)
{
    uint64_t bytes, end;
    if (!qimg_mul_ok(e->sectors, VMDK_SECTOR, &bytes) ||
        !qimg_add_ok(e->flat_offset, bytes, &end) || end > (uint64_t)INT64_MAX)
        return qimg_error(-EINVAL, "Invalid extent: offset and size overflow");
    e->cluster_size = 0;
    return 0;
}

static void flat_close(struct vmdk_extent *e) { }

/* A flat file shorter than its extent reads as zeros past its end (the
 * storage's pread fills them). */
static int flat_read(struct qimg_image *img, struct vmdk_extent *e, uint64_t off, uint8_t *buf,
                     size_t len)
{
    qimg_io_event(e->file, QIMG_EV_READ_AIO);
    return qimg_io_pread(e->file, buf, len, e->flat_offset + off);
}

static int flat_write(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                      const uint8_t *buf, size_t len)
{
    qimg_io_event(e->file, QIMG_EV_WRITE_AIO);
    return qimg_io_pwrite(e->file, buf, len, e->flat_offset + off);
}

/* Data at its offset, and, as qemu looks into the file under a flat
 * extent, holes and the range past the file's end read as zeros. */
static int flat_block_status(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                             uint64_t len, struct qimg_extent *ext)
{
    ext->length = len;
    ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
    ext->host_offset = e->flat_offset + off;
    ext->host_file = e->file->filename;
    qimg_extent_look_into_file(e->file, ext, true);
    return 0;
}

/* qemu's check: the data must start inside the file. */
static int flat_check(struct qimg_image *img, struct vmdk_extent *e,
                      struct qimg_check_result *res)
{
    uint64_t size;
    int r = qimg_io_get_size(e->file, &size);
    if (r < 0)
        return r;
    if (e->flat_offset >= size) {
        qimg_check_log("ERROR: cluster offset for sector %" PRIu64 " points after EOF", e->start);
        return -EINVAL;
    }
    return 0;
}

/* The file extended to hold the new sectors (a hole). */
static int flat_grow(struct qimg_image *img, struct vmdk_extent *e, uint64_t sectors)
{
    uint64_t size, end;
    int r = qimg_io_get_size(e->file, &size);
    if (r < 0)
        return r;
    if (!qimg_add_ok(e->flat_offset, sectors * VMDK_SECTOR, &end) || end > (uint64_t)INT64_MAX)
        return qimg_error(-EFBIG, "VMDK extent too large");
    if (end > size)
        r = qimg_io_truncate(e->file, end);
    if (r == 0)
        e->sectors = sectors;
    return r;
}

const struct vmdk_extent_ops vmdk_flat_ops = {
    .grow = flat_grow,
    .check = flat_check,
    .name = "FLAT",
    .open = flat_open,
    .close = flat_close,
    .read = flat_read,
    .write = flat_write,
    .block_status = flat_block_status,
};

/* ---- ZERO ---- */

static int zero_open(struct qimg_image *img, struct vmdk_extent *e, const uint8_t *hdr,
                     uint64_t file_size)
{
    return 0;
}

static int zero_read(struct qimg_image *img, struct vmdk_extent *e, uint64_t off, uint8_t *buf,
                     size_t len)
{
    memset(buf, 0, len);
    return 0;
}

static int zero_block_status(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                             uint64_t len, struct qimg_extent *ext)
{
    ext->length = len;
    ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_ZERO;
    return 0;
}

const struct vmdk_extent_ops vmdk_zero_ops = {
    .name = "ZERO",
    .open = zero_open,
    .close = flat_close,
    .read = zero_read,
    .block_status = zero_block_status,
};
