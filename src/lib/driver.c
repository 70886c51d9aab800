/* qimg - the capability layer: what a format driver can do, and every
 * call of its optional callbacks from the core.  A missing callback
 * means "not supported"; what that means for each operation, and
 * qemu-img's message for it, is decided here once. */
#include <errno.h>

#include "codec.h"
#include "internal.h"

bool qimg_drv_can(const struct qimg_driver *drv, enum qimg_capability cap)
{
    switch (cap) {
    case QIMG_CAP_CREATE: return drv->create != NULL;
    case QIMG_CAP_WRITE: return drv->write != NULL && !(drv->flags & QIMG_DRV_READ_ONLY);
    case QIMG_CAP_COMPRESS: return drv->compress && drv->write_compressed;
    case QIMG_CAP_BACKING: return drv->flags & QIMG_DRV_SUPPORTS_BACKING;
    case QIMG_CAP_SNAPSHOTS: return drv->snapshot_create != NULL;
    case QIMG_CAP_BITMAPS: return drv->bitmap_add != NULL;
    case QIMG_CAP_AMEND: return drv->amend != NULL;
    case QIMG_CAP_CHECK: return drv->check != NULL;
    case QIMG_CAP_RESIZE: return drv->resize != NULL;
    case QIMG_CAP_MEASURE: return drv->measure != NULL;
    case QIMG_CAP_MAKE_EMPTY: return drv->make_empty != NULL;
    case QIMG_CAP_METADATA: return qimg_drv_has_metadata(drv);
    case QIMG_CAP_MANY_FILES: return drv->flags & QIMG_DRV_MANY_FILES;
    case QIMG_CAP_RAW_BACKING: return drv->flags & QIMG_DRV_RAW_BACKING;
    }
    return false;
}

/* ---- by format name (the CLI's questions) ---- */

const char *qimg_format_name(size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (!qimg_drivers[k])
            return NULL;
    return qimg_drivers[i] ? qimg_drivers[i]->name : NULL;
}

bool qimg_format_known(const char *fmt)
{
    return qimg_driver_find(fmt) != NULL;
}

bool qimg_storage_cannot_create(const char *name)
{
    const struct qimg_io_ops *ops = qimg_io_backend_find(name);
    return ops && !ops->can_create && !ops->create_by_opening && ops != &qimg_io_file_ops;
}

bool qimg_qemu_driver_known(const char *name)
{
    /* qemu-img 7.2's (Debian build) "Supported formats" */
    static const char *const qemu_drivers[] = {
        "blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress",
        "copy-before-write", "copy-on-read", "dmg", "file", "ftp", "ftps", "gluster",
        "host_cdrom", "host_device", "http", "https", "iscsi", "iser", "luks", "nbd",
        "nfs", "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow",
        "qcow2", "qed", "quorum", "raw", "rbd", "replication", "snapshot-access", "ssh",
        "throttle", "vdi", "vhdx", "vmdk", "vpc", "vvfat",
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(qemu_drivers); i++)
        if (strcmp(qemu_drivers[i], name) == 0)
            return true;
    return qimg_format_known(name) || qimg_io_backend_find(name) != NULL;
}

const struct qimg_io_ops *qimg_create_protocol(const char *fmt)
{
    const struct qimg_io_ops *ops = qimg_driver_find(fmt) ? NULL : qimg_io_backend_find(fmt);
    return ops && (ops->can_create || ops->create_by_opening) && !ops->not_protocol ? ops : NULL;
}

bool qimg_protocol_creatable(const char *fmt)
{
    return qimg_create_protocol(fmt) != NULL;
}

bool qimg_format_supports(const char *fmt, enum qimg_capability cap)
{
    const struct qimg_driver *drv = qimg_driver_find(fmt);
    return drv && qimg_drv_can(drv, cap);
}

/* ---- per image ---- */

int64_t qimg_image_cluster_size(qimg_image *img)
{
    struct qimg_driver_info info;
    int r = qimg_drv_info(img, &info);
    qimg_json_free(info.format_specific);
    return r < 0 || info.cluster_size < 0 ? 0 : info.cluster_size;
}

bool qimg_image_has_zero_init(qimg_image *img)
{
    return img->drv->has_zero_init && img->drv->has_zero_init(img);
}

/* ---- wrappers ---- */

int qimg_drv_create(const struct qimg_driver *drv, struct qimg_create_ctx *ctx)
{
    if (!drv->create)
        return qimg_error(-ENOTSUP, "Format driver '%s' does not support image creation",
                          drv->name);
    return drv->create(ctx);
}

int qimg_drv_measure(const struct qimg_driver *drv, qimg_opts *opts, qimg_image *src,
                     uint64_t size, struct qimg_measure *out)
{
    memset(out, 0, sizeof *out);
    if (!drv->measure)
        return qimg_error(-ENOTSUP, "Block driver '%s' does not support size measurement",
                          drv->name);
    return drv->measure(opts, src, size, out);
}

int qimg_drv_info(qimg_image *img, struct qimg_driver_info *info)
{
    memset(info, 0, sizeof *info);
    return img->drv->info ? img->drv->info(img, info) : 0;
}

int qimg_drv_check(qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    if (!img->drv->check)
        return qimg_error(-ENOTSUP, "This image format does not support checks");
    return img->drv->check(img, res, fix);
}

int qimg_drv_resize(qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    if (!img->drv->resize)
        return qimg_error(-ENOTSUP, "Image format driver does not support resize");
    return img->drv->resize(img, size, prealloc, shrink);
}

int qimg_drv_amend(qimg_image *img, qimg_opts *opts, bool force, qimg_progress_fn progress,
                   void *opaque)
{
    if (!img->drv->amend)
        return qimg_error(-ENOTSUP, "Format driver '%s' does not support option amendment",
                          img->drv->name);
    return img->drv->amend(img, opts, force, progress, opaque);
}

int qimg_drv_change_backing(qimg_image *img, const char *backing, const char *fmt)
{
    if (!img->drv->change_backing)
        return qimg_error(-ENOTSUP, "%s", strerror(ENOTSUP));
    return img->drv->change_backing(img, backing, fmt);
}

int qimg_drv_make_empty(qimg_image *img)
{
    if (!img->drv->make_empty)
        return qimg_error(-ENOTSUP, "Format driver '%s' cannot empty an image", img->drv->name);
    return img->drv->make_empty(img);
}

/* ---- snapshots ---- */

static int no_snapshots(void)
{
    return qimg_error(-ENOTSUP, "Block driver does not support snapshots");
}

/* qemu's fallback: a format without snapshots of its own (raw) passes
 * them to its storage when that has them (rbd). */
static struct qimg_io *snapshot_storage(qimg_image *img)
{
    return img->file && img->file->ops->snapshot_list ? img->file : NULL;
}

int qimg_drv_snapshot_list(qimg_image *img, struct qimg_snapshot_info **list, size_t *n)
{
    *list = NULL;
    *n = 0;
    if (img->drv->snapshot_list)
        return img->drv->snapshot_list(img, list, n);
    struct qimg_io *io = snapshot_storage(img);
    return io ? io->ops->snapshot_list(io, list, n) : no_snapshots();
}

bool qimg_drv_has_snapshot_list(qimg_image *img)
{
    return img->drv->snapshot_list || snapshot_storage(img);
}

int qimg_drv_snapshot_create(qimg_image *img, const char *name)
{
    if (img->drv->snapshot_create)
        return img->drv->snapshot_create(img, name);
    struct qimg_io *io = snapshot_storage(img);
    return io ? io->ops->snapshot_create(io, name) : no_snapshots();
}

int qimg_drv_snapshot_apply(qimg_image *img, const char *id_or_name)
{
    if (img->drv->snapshot_apply)
        return img->drv->snapshot_apply(img, id_or_name);
    struct qimg_io *io = snapshot_storage(img);
    if (!io)
        return no_snapshots();
    int r = io->ops->snapshot_apply(io, id_or_name);
    if (r < 0)
        return qimg_error(r, "Failed to load snapshot: %s", strerror(-r));
    return 0;
}

int qimg_drv_snapshot_delete(qimg_image *img, const char *id, const char *name)
{
    if (img->drv->snapshot_delete)
        return img->drv->snapshot_delete(img, id, name);
    struct qimg_io *io = snapshot_storage(img);
    return io ? io->ops->snapshot_delete(io, name) : no_snapshots();
}

int qimg_drv_snapshot_load_tmp(qimg_image *img, const char *id, const char *name)
{
    if (!img->drv->snapshot_load_tmp)
        return qimg_error(-ENOTSUP, "Block format '%s' used by device '' does not support "
                          "temporarily loading internal snapshots", img->drv->name);
    return img->drv->snapshot_load_tmp(img, id, name);
}

/* ---- bitmaps ---- */

static int no_bitmaps(qimg_image *img)
{
    return qimg_error(-ENOTSUP, "Format driver '%s' does not support bitmaps", img->drv->name);
}

int qimg_drv_bitmap_list(qimg_image *img, struct qimg_bitmap_info **list, size_t *n)
{
    *list = NULL;
    *n = 0;
    return img->drv->bitmap_list ? img->drv->bitmap_list(img, list, n) : 0;
}

int qimg_drv_bitmap_add(qimg_image *img, const char *name, uint32_t granularity)
{
    return img->drv->bitmap_add ? img->drv->bitmap_add(img, name, granularity) : no_bitmaps(img);
}

int qimg_drv_bitmap_remove(qimg_image *img, const char *name)
{
    return img->drv->bitmap_remove ? img->drv->bitmap_remove(img, name) : no_bitmaps(img);
}

int qimg_drv_bitmap_clear(qimg_image *img, const char *name)
{
    return img->drv->bitmap_clear ? img->drv->bitmap_clear(img, name) : no_bitmaps(img);
}

int qimg_drv_bitmap_set_enabled(qimg_image *img, const char *name, bool enabled)
{
    return img->drv->bitmap_set_enabled ? img->drv->bitmap_set_enabled(img, name, enabled)
                                        : no_bitmaps(img);
}

int qimg_drv_bitmap_next_dirty(qimg_image *img, const char *name, uint64_t off, uint64_t *start,
                               uint64_t *len)
{
    return img->drv->bitmap_next_dirty ? img->drv->bitmap_next_dirty(img, name, off, start, len)
                                       : no_bitmaps(img);
}

int qimg_drv_bitmap_set_dirty(qimg_image *img, const char *name, uint64_t off, uint64_t len)
{
    return img->drv->bitmap_set_dirty ? img->drv->bitmap_set_dirty(img, name, off, len)
                                      : no_bitmaps(img);
}

int qimg_drv_bitmap_store(qimg_image *img)
{
    return img->drv->bitmap_store ? img->drv->bitmap_store(img) : 0;
}

bool qimg_drv_bitmap_supported(qimg_image *img)
{
    return img->drv->bitmap_supported && img->drv->bitmap_supported(img);
}

/* ---- compressed clusters ---- */

static int no_compression(void)
{
    return qimg_error(-ENOTSUP, "Compression not supported for this file format");
}

int qimg_drv_compress(qimg_image *img, const void *buf, size_t len, void *out, size_t *out_len)
{
    return img->drv->compress ? img->drv->compress(img, buf, len, out, out_len)
                              : no_compression();
}

int qimg_drv_write_compressed(qimg_image *img, uint64_t off, const void *data, size_t len)
{
    return img->drv->write_compressed ? img->drv->write_compressed(img, off, data, len)
                                      : no_compression();
}

/* ---- what this build has (qimg --help) ---- */

const char *qimg_protocol_name(size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (!qimg_io_backends[k])
            return NULL;
    return qimg_io_backends[i] ? qimg_io_backends[i]->name : NULL;
}

const char *qimg_codecs(void)
{
    return qimg_codec_list();
}

/* QIMG_FEATURES_KNOWN (build/config.h) names every optional library
 * configure looks for, QIMG_FEATURES those it found; the others are
 * lacking. */
static char lacking_text[256];
static pthread_once_t lacking_once = PTHREAD_ONCE_INIT;

static void find_lacking(void)
{
    const char *have = " " QIMG_FEATURES " ";
    const char *known = QIMG_FEATURES_KNOWN;
    size_t len = 0;
    while (*known) {
        size_t n = strcspn(known, " ");
        char word[40];
        if (n > 0 && n < sizeof word - 2) {
            snprintf(word, sizeof word, " %.*s ", (int)n, known);
            if (!strstr(have, word) && len < sizeof lacking_text)
                len += (size_t)snprintf(lacking_text + len, sizeof lacking_text - len, "%s%.*s",
                                        len ? " " : "", (int)n, known);
        }
        known += n;
        known += strspn(known, " ");
    }
}

const char *qimg_features_lacking(void)
{
    pthread_once(&lacking_once, find_lacking);
    return lacking_text;
}
