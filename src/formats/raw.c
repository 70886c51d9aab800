/* qimg - the raw format: guest offset == file offset. */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"

static const struct qimg_opt_desc raw_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { NULL, 0, NULL, NULL },
};

static int raw_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    return 1;   /* anything is a raw image; every real format scores higher */
}

/* The window of the file the image is: "offset" and "size" options. */
struct raw_state {
    uint64_t offset;
    bool has_size;             /* a fixed size: no resizing */
};

static uint64_t raw_offset(const struct qimg_image *img)
{
    const struct raw_state *s = img->opaque;
    return s ? s->offset : 0;
}

/* qemu's checks of offset and size against the file (its size in whole
 * sectors), with its messages. */
static int raw_window(struct qimg_image *img, struct raw_state *s, uint64_t file_size,
                      uint64_t size)
{
    if (s->offset > file_size)
        return qimg_error(-EINVAL, "Offset (%" PRIu64 ") cannot be greater than size of the "
                          "containing file (%" PRIu64 ")", s->offset, file_size);
    if (!s->has_size) {
        img->size = file_size - s->offset;
        return 0;
    }
    if (size > file_size - s->offset)
        return qimg_error(-EINVAL, "The sum of offset (%" PRIu64 ") and size (%" PRIu64 ") has "
                          "to be smaller or equal to the  actual size of the containing file (%"
                          PRIu64 ")", s->offset, size, file_size);
    if (size % 512)
        return qimg_error(-EINVAL, "Specified size is not multiple of 512");
    img->size = size;
    return 0;
}

/* qemu shows a raw image's size rounded up to whole 512-byte sectors;
 * the tail past EOF reads as zeros. */
static int raw_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    uint64_t size = 0, file_size;
    struct raw_state st = { 0 };
    int r = qimg_opts_get_size(opts, "offset", &st.offset);
    if (r >= 0)
        r = qimg_opts_get_size(opts, "size", &size);
    if (r < 0)
        return r;
    st.has_size = r == 1;
    r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return r;
    if (!qimg_round_up_ok(file_size, 512, &file_size))
        return qimg_error(-EFBIG, "Image size is too large");
    r = raw_window(img, &st, file_size, size);
    if (r < 0)
        return r;
    if (st.offset || st.has_size) {
        img->opaque = qimg_xmalloc(sizeof st);
        memcpy(img->opaque, &st, sizeof st);
    }
    return 0;
}

static void raw_close(struct qimg_image *img)
{
    free(img->opaque);
    img->opaque = NULL;
}

static int raw_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    return qimg_io_pread(img->file, buf, len, off + raw_offset(img));
}

/* A raw image whose format was guessed must not get a header of another
 * format in its first sector: the next probe would trust it. */
static int guard_block0(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    if (!img->probed_raw || off >= 512)
        return 0;
    uint8_t sector[512];
    int r = qimg_io_pread(img->file, sector, sizeof sector, 0);
    if (r < 0)
        return r;
    memcpy(sector + off, buf, QIMG_MIN(len, sizeof sector - off));
    if (qimg_driver_probe(sector, sizeof sector, img->size, img->filename) != &qimg_driver_raw)
        return qimg_error(-EPERM, "Operation not permitted");
    return 0;
}

static int raw_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    int r = guard_block0(img, off, buf, len);
    if (r < 0)
        return r;
    return qimg_io_pwrite(img->file, buf, len, off + raw_offset(img));
}

static int raw_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    return qimg_io_zero(img->file, off + raw_offset(img), len, flags & QIMG_ZERO_MAY_UNMAP);
}

static int raw_discard(struct qimg_image *img, uint64_t off, uint64_t len)
{
    return qimg_io_discard(img->file, off + raw_offset(img), len);
}

static int raw_flush(struct qimg_image *img)
{
    /* what qemu's flush of a format node announces to its file */
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_OS);
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_DISK);
    return qimg_io_flush(img->file);
}

static int raw_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    int kind;
    uint64_t pnum;
    int r = qimg_io_extent(img->file, off + raw_offset(img), len, &pnum, &kind);
    if (r < 0)
        return r;
    ext->length = pnum;
    ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET |
                 (kind == QIMG_IO_EXT_DATA ? QIMG_STATUS_DATA :
                  kind == QIMG_IO_EXT_DATA_ZERO ? QIMG_STATUS_DATA | QIMG_STATUS_ZERO : QIMG_STATUS_ZERO);
    if (img->file->ops->not_protocol || img->file->ops->synthesized)
        ext->flags &= ~(unsigned)QIMG_STATUS_OFFSET;   /* no host file to point into */
    if (kind == QIMG_IO_EXT_UNKNOWN)
        ext->flags = 0;         /* the storage cannot say (null-co): as qemu */
    ext->host_offset = off + raw_offset(img);
    ext->host_file = img->file->filename;
    return 0;
}

static int raw_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    /* qemu asks the storage: null-co has no such information */
    info->has_dirty = img->file->ops != &qimg_io_null_co_ops && img->file->ops != &qimg_io_null_aio_ops &&
                     !img->file->ops->not_protocol && !img->file->ops->synthesized &&
                     !img->file->ops->no_info;
    info->dirty = false;
    /* the storage's allocation unit (rbd's object size), as qemu asks it */
    if (img->file->ops->cluster_size)
        info->cluster_size = img->file->ops->cluster_size(img->file);
    /* rbd named as the format (driver=rbd): qemu shows its (empty)
     * encryption information */
    if (img->protocol_format && img->file->ops == &qimg_io_rbd_ops) {
        info->format_specific = qimg_json_object();
        qimg_json_set(info->format_specific, "type", qimg_json_string("rbd"));
        qimg_json_set(info->format_specific, "data", qimg_json_object());
    }
    return 0;
}

static int preallocate(struct qimg_io *io, uint64_t from, uint64_t to, const char *prealloc)
{
    if (to <= from || strcmp(prealloc, "off") == 0)
        return 0;
    return qimg_io_preallocate(io, from, to - from, strcmp(prealloc, "full") == 0);
}

static int check_prealloc(const char *prealloc)
{
    if (strcmp(prealloc, "off") && strcmp(prealloc, "falloc") && strcmp(prealloc, "full"))
        return qimg_error(-EINVAL, "Invalid parameter '%s'", prealloc);
    return 0;
}

static int raw_create(struct qimg_create_ctx *ctx)
{
    struct qimg_io *io;
    int r = check_prealloc(ctx->prealloc);
    if (r < 0)
        return r;
    r = qimg_io_open_new(&io, ctx->filename, ctx->opts, QIMG_IO_RDWR | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = qimg_io_truncate(io, ctx->size);
    if (r == 0)
        r = preallocate(io, 0, ctx->size, ctx->prealloc);
    /* Like qemu, allocate the first block so that later probing and
     * O_DIRECT alignment detection see real data there ("full" has
     * written it already); only on a file, as qemu.  Storage that existed
     * before (nbd) had its first sector zeroed by the create step. */
    if (r == 0 && strcmp(ctx->prealloc, "full") != 0 && ctx->size > 0 && io->ops == &qimg_io_file_ops) {
        uint8_t zeros[4096] = { 0 };
        r = qimg_io_pwrite(io, zeros, (size_t)QIMG_MIN(ctx->size, sizeof zeros), 0);
    }
    qimg_io_close(io);
    return r;
}

static int raw_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    uint64_t old;
    int r = check_prealloc(prealloc);
    if (r < 0)
        return r;
    const struct raw_state *s = img->opaque;
    if (s && s->has_size)
        return qimg_error(-ENOTSUP, "Cannot resize fixed-size raw disks");
    uint64_t end;
    if (!qimg_add_ok(size, raw_offset(img), &end))
        return qimg_error(-EFBIG, "Image size is too large");
    r = qimg_io_get_size(img->file, &old);
    if (r < 0)
        return r;
    r = qimg_io_truncate(img->file, end);
    if (r == 0)
        r = preallocate(img->file, old, end, prealloc);
    if (r == 0)
        img->size = size;
    return r;
}

/* raw needs exactly the guest size, sparse or not. */
static int raw_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    uint64_t v = src ? qimg_size(src) : size;
    if (!qimg_round_up_ok(v, 512, &v))
        return qimg_error(-EFBIG, "Image size is too large");
    out->required = out->fully_allocated = v;
    return 0;
}

/* Storage that existed before the image (nbd) keeps its old bytes. */
static bool raw_has_zero_init(struct qimg_image *img) { return !img->file->ops->create_by_opening; }

const struct qimg_driver qimg_driver_raw = {
    .name           = "raw",
    .flags          = QIMG_DRV_NO_METADATA,
    .create_opts    = raw_create_opts,
    .probe          = raw_probe,
    .open           = raw_open,
    .close          = raw_close,
    .create         = raw_create,
    .read           = raw_read,
    .write          = raw_write,
    .write_zeroes   = raw_write_zeroes,
    .discard        = raw_discard,
    .flush          = raw_flush,
    .block_status   = raw_block_status,
    .info           = raw_info,
    .resize         = raw_resize,
    .measure        = raw_measure,
    .has_zero_init  = raw_has_zero_init,
};
