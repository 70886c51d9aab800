/* qimg - resize and measure: the core side of qemu-img resize/measure. */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"

/* qemu's block layer refuses lengths above 2^63 - 2^30. */
#define MAX_IMAGE_LENGTH (INT64_MAX - ((1ull << 30) - 1))

int qimg_resize(qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    if (!prealloc)
        prealloc = "off";
    if (img->read_only)
        return qimg_error(-EACCES, "Image is read-only");
    if (size > MAX_IMAGE_LENGTH)
        return qimg_error(-EFBIG, "offset(%" PRIu64 ") exceeds maximum(%" PRIu64 ")",
                          size, (uint64_t)MAX_IMAGE_LENGTH);
    if (!img->drv->resize)
        return qimg_error(-ENOTSUP, "Image format driver does not support resize");
    /* the file protocol under a raw image knows only these */
    if ((img->drv->flags & QIMG_DRV_PROTOCOL_ONLY) && strcmp(prealloc, "off") &&
        strcmp(prealloc, "falloc") && strcmp(prealloc, "full"))
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode: %s", prealloc);
    return img->drv->resize(img, size, prealloc, shrink);
}

int qimg_measure(const char *fmt, qimg_opts *opts, qimg_image *src, uint64_t size,
                 struct qimg_measure *out)
{
    const struct qimg_driver *drv = qimg_driver_find(fmt);
    memset(out, 0, sizeof *out);
    if (!drv)
        return qimg_error(-EINVAL, "Unknown file format '%s'", fmt);
    if (!drv->measure)
        return qimg_error(-ENOTSUP, "Block driver '%s' does not support size measurement", fmt);
    return drv->measure(opts, src, size, out);
}
