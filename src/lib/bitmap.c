/* qimg - persistent dirty bitmaps: the checks qemu makes before it asks the
 * format, and merge done generically over the driver's dirty ranges. */
#include <errno.h>

#include "internal.h"

void qimg_bitmap_list_free(struct qimg_bitmap_info *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i].name);
    free(list);
}

int qimg_bitmap_list(qimg_image *img, struct qimg_bitmap_info **list, size_t *n)
{
    return qimg_drv_bitmap_list(img, list, n);
}

/* 1 when the image has a bitmap of that name, 0 when not, <0 on error. */
static int bitmap_exists(qimg_image *img, const char *name)
{
    struct qimg_bitmap_info *list;
    size_t n;
    int r = qimg_bitmap_list(img, &list, &n);
    if (r < 0)
        return r;
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            found = 1;
    qimg_bitmap_list_free(list, n);
    return found;
}

static int need_bitmap(qimg_image *img, const char *name)
{
    int r = bitmap_exists(img, name);
    if (r == 0)
        return qimg_error(-ENOENT, "Dirty bitmap '%s' not found", name);
    return r < 0 ? r : 0;
}

/* The cluster size, within 4 KiB..64 KiB; 64 KiB when the format has none. */
static uint32_t default_granularity(qimg_image *img)
{
    int64_t cluster = qimg_image_cluster_size(img);
    if (cluster > 0)
        return (uint32_t)QIMG_MIN(QIMG_MAX(cluster, (int64_t)4096), (int64_t)65536);
    return 65536;
}

int qimg_bitmap_add(qimg_image *img, const char *name, uint64_t granularity)
{
    if (!name[0])
        return qimg_error(-EINVAL, "Bitmap name cannot be empty");
    if (granularity && (granularity < 512 || !qimg_is_pow2(granularity) ||
                        granularity > (uint64_t)1 << 31))
        return qimg_error(-EINVAL, "Granularity must be power of 2 and at least 512");
    if (!qimg_drv_can(img->drv, QIMG_CAP_BITMAPS))
        /* qemu names the node here ("#block123"), a number that changes
         * from run to run */
        return qimg_error(-ENOTSUP, "Can't store persistent bitmaps to #block%03u: %s",
                          100u + (unsigned)(strlen(img->filename) % 900), strerror(ENOTSUP));
    int r = bitmap_exists(img, name);
    if (r > 0)
        return qimg_error(-EEXIST, "Bitmap already exists: %s", name);
    if (r < 0)
        return r;
    return qimg_drv_bitmap_add(img, name, granularity ? (uint32_t)granularity : default_granularity(img));
}

int qimg_bitmap_remove(qimg_image *img, const char *name)
{
    int r = need_bitmap(img, name);
    if (r == 0)
        r = qimg_drv_bitmap_remove(img, name);
    return r;
}

int qimg_bitmap_clear(qimg_image *img, const char *name)
{
    int r = need_bitmap(img, name);
    if (r == 0)
        r = qimg_drv_bitmap_clear(img, name);
    return r;
}

int qimg_bitmap_set_enabled(qimg_image *img, const char *name, bool enabled)
{
    int r = need_bitmap(img, name);
    if (r == 0)
        r = qimg_drv_bitmap_set_enabled(img, name, enabled);
    return r;
}

int qimg_bitmap_merge(qimg_image *img, const char *name, qimg_image *src, const char *src_name)
{
    int r = need_bitmap(img, name);
    if (r == 0)
        r = need_bitmap(src, src_name);
    if (r < 0)
        return r;
    if (img->size != src->size)
        return qimg_error(-EINVAL, "Bitmaps are incompatible and can't be merged");
    if (!src->drv->bitmap_next_dirty || !img->drv->bitmap_set_dirty)
        return qimg_error(-ENOTSUP, "Bitmaps are incompatible and can't be merged");
    /* the target must take changes (an inconsistent one does not) */
    r = qimg_drv_bitmap_set_dirty(img, name, 0, 0);
    if (r < 0)
        return r;
    uint64_t off = 0, start, len;
    while (off < src->size &&
           (r = qimg_drv_bitmap_next_dirty(src, src_name, off, &start, &len)) == 0) {
        if (len == 0 || start < off || !qimg_add_ok(start, len, &off))
            return qimg_error(-EIO, "Bad dirty range in bitmap '%s'", src_name);
        r = qimg_drv_bitmap_set_dirty(img, name, start, len);
        if (r < 0)
            return r;
    }
    if (r < 0)
        return r;
    return qimg_drv_bitmap_store(img);
}

int qimg_bitmap_next_dirty(qimg_image *img, const char *name, uint64_t off, uint64_t *start,
                           uint64_t *len)
{
    int r = need_bitmap(img, name);
    if (r < 0)
        return r;
    if (off >= img->size && img->drv->bitmap_next_dirty)
        return 1;
    return qimg_drv_bitmap_next_dirty(img, name, off, start, len);
}

bool qimg_bitmap_supported(qimg_image *img)
{
    return qimg_drv_bitmap_supported(img);
}
