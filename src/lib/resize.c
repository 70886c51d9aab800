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
    /* the file protocol under a raw image knows only these */
    if (qimg_drv_can(img->drv, QIMG_CAP_RESIZE) && !qimg_drv_has_metadata(img->drv) &&
        strcmp(prealloc, "off") && strcmp(prealloc, "falloc") && strcmp(prealloc, "full"))
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode: %s", prealloc);
    return qimg_drv_resize(img, size, prealloc, shrink);
}

int qimg_measure(const char *fmt, qimg_opts *opts, qimg_image *src, uint64_t size,
                 struct qimg_measure *out)
{
    const struct qimg_driver *drv = qimg_driver_find(fmt);
    memset(out, 0, sizeof *out);
    if (!drv)
        return qimg_error(-EINVAL, "Unknown file format '%s'", fmt);
    return qimg_drv_measure(drv, opts, src, size, out);
}
