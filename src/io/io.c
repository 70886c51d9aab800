/* qimg - the storage layer's generic half: the backend registry, opening
 * by filename or by option tree, and the qimg_io_* wrappers that give every
 * optional op its default (see the thread contract in internal.h). */
#include <errno.h>

#include "internal.h"

const struct qimg_io_ops *const qimg_io_backends[] = {
    &qimg_io_file_ops,
    &qimg_io_null_co_ops,
    &qimg_io_null_aio_ops,
    &qimg_io_blkdebug_ops,
    &qimg_io_quorum_ops,
    &qimg_io_vvfat_ops,
    &qimg_io_nbd_ops,
    &qimg_io_http_ops,
    &qimg_io_https_ops,
    &qimg_io_ftp_ops,
    &qimg_io_ftps_ops,
    &qimg_io_rbd_ops,
    NULL,
};

const struct qimg_io_ops *qimg_io_backend_find(const char *name)
{
    for (size_t i = 0; qimg_io_backends[i]; i++)
        if (strcmp(qimg_io_backends[i]->name, name) == 0)
            return qimg_io_backends[i];
    return NULL;
}

/* ---- events: qemu's BlkdebugEvent names, in enum order ---- */

static const char *const event_names[QIMG_EV__MAX] = {
    [QIMG_EV_L1_UPDATE] = "l1_update",
    [QIMG_EV_L1_GROW_ALLOC_TABLE] = "l1_grow_alloc_table",
    [QIMG_EV_L1_GROW_WRITE_TABLE] = "l1_grow_write_table",
    [QIMG_EV_L1_GROW_ACTIVATE_TABLE] = "l1_grow_activate_table",
    [QIMG_EV_L2_LOAD] = "l2_load",
    [QIMG_EV_L2_UPDATE] = "l2_update",
    [QIMG_EV_L2_UPDATE_COMPRESSED] = "l2_update_compressed",
    [QIMG_EV_L2_ALLOC_COW_READ] = "l2_alloc_cow_read",
    [QIMG_EV_L2_ALLOC_WRITE] = "l2_alloc_write",
    [QIMG_EV_READ_AIO] = "read_aio",
    [QIMG_EV_READ_BACKING_AIO] = "read_backing_aio",
    [QIMG_EV_READ_COMPRESSED] = "read_compressed",
    [QIMG_EV_WRITE_AIO] = "write_aio",
    [QIMG_EV_WRITE_COMPRESSED] = "write_compressed",
    [QIMG_EV_VMSTATE_LOAD] = "vmstate_load",
    [QIMG_EV_VMSTATE_SAVE] = "vmstate_save",
    [QIMG_EV_COW_READ] = "cow_read",
    [QIMG_EV_COW_WRITE] = "cow_write",
    [QIMG_EV_REFTABLE_LOAD] = "reftable_load",
    [QIMG_EV_REFTABLE_GROW] = "reftable_grow",
    [QIMG_EV_REFTABLE_UPDATE] = "reftable_update",
    [QIMG_EV_REFBLOCK_LOAD] = "refblock_load",
    [QIMG_EV_REFBLOCK_UPDATE] = "refblock_update",
    [QIMG_EV_REFBLOCK_UPDATE_PART] = "refblock_update_part",
    [QIMG_EV_REFBLOCK_ALLOC] = "refblock_alloc",
    [QIMG_EV_REFBLOCK_ALLOC_HOOKUP] = "refblock_alloc_hookup",
    [QIMG_EV_REFBLOCK_ALLOC_WRITE] = "refblock_alloc_write",
    [QIMG_EV_REFBLOCK_ALLOC_WRITE_BLOCKS] = "refblock_alloc_write_blocks",
    [QIMG_EV_REFBLOCK_ALLOC_WRITE_TABLE] = "refblock_alloc_write_table",
    [QIMG_EV_REFBLOCK_ALLOC_SWITCH_TABLE] = "refblock_alloc_switch_table",
    [QIMG_EV_CLUSTER_ALLOC] = "cluster_alloc",
    [QIMG_EV_CLUSTER_ALLOC_BYTES] = "cluster_alloc_bytes",
    [QIMG_EV_CLUSTER_FREE] = "cluster_free",
    [QIMG_EV_FLUSH_TO_OS] = "flush_to_os",
    [QIMG_EV_FLUSH_TO_DISK] = "flush_to_disk",
    [QIMG_EV_PWRITEV_RMW_HEAD] = "pwritev_rmw_head",
    [QIMG_EV_PWRITEV_RMW_AFTER_HEAD] = "pwritev_rmw_after_head",
    [QIMG_EV_PWRITEV_RMW_TAIL] = "pwritev_rmw_tail",
    [QIMG_EV_PWRITEV_RMW_AFTER_TAIL] = "pwritev_rmw_after_tail",
    [QIMG_EV_PWRITEV] = "pwritev",
    [QIMG_EV_PWRITEV_ZERO] = "pwritev_zero",
    [QIMG_EV_PWRITEV_DONE] = "pwritev_done",
    [QIMG_EV_EMPTY_IMAGE_PREPARE] = "empty_image_prepare",
    [QIMG_EV_L1_SHRINK_WRITE_TABLE] = "l1_shrink_write_table",
    [QIMG_EV_L1_SHRINK_FREE_L2_CLUSTERS] = "l1_shrink_free_l2_clusters",
    [QIMG_EV_COR_WRITE] = "cor_write",
    [QIMG_EV_CLUSTER_ALLOC_SPACE] = "cluster_alloc_space",
    [QIMG_EV_NONE] = "none",
};

const char *qimg_io_event_name(enum qimg_io_event ev)
{
    return (unsigned)ev < QIMG_EV__MAX ? event_names[ev] : NULL;
}

int qimg_io_event_lookup(const char *name)
{
    for (int i = 0; i < QIMG_EV__MAX; i++)
        if (strcmp(event_names[i], name) == 0)
            return i;
    return -1;
}

/* ---- open ---- */

/* qemu keeps a protocol name in 128 bytes: a longer one is cut when
 * reported. */
#define PROTOCOL_NAME_MAX 127

static bool is_protocol(const char *proto, const char *name, size_t len)
{
    return strlen(proto) == len && strncmp(proto, name, len) == 0;
}

const struct qimg_io_ops *qimg_io_protocol(const char *name)
{
    if (!qimg_path_has_protocol(name))
        return &qimg_io_file_ops;
    size_t len = strcspn(name, ":");
    for (size_t i = 0; qimg_io_backends[i]; i++) {
        const struct qimg_io_ops *ops = qimg_io_backends[i];
        if (ops->not_protocol)
            continue;
        /* the protocol is the prefix's name ("fat" for vvfat), else the backend's */
        const char *proto = ops->prefix ? ops->prefix : ops->name;
        size_t plen = ops->prefix ? strcspn(proto, ":") : strlen(proto);
        if (plen == len && strncmp(proto, name, len) == 0)
            return ops;
        for (size_t k = 0; ops->protocols && ops->protocols[k]; k++)
            if (is_protocol(ops->protocols[k], name, len))
                return ops;
    }
    qimg_error(-EINVAL, "Unknown protocol '%.*s'", (int)QIMG_MIN(len, (size_t)PROTOCOL_NAME_MAX), name);
    return NULL;
}

int qimg_io_name_opts(qimg_opts **opts, const char *name)
{
    if (!qimg_path_has_protocol(name))
        return qimg_opts_set(opts, "filename", name);
    const struct qimg_io_ops *ops = qimg_io_protocol(name);
    if (!ops)
        return -EINVAL;
    return qimg_io_name_opts_for(opts, ops, name);
}

int qimg_io_name_opts_for(qimg_opts **opts, const struct qimg_io_ops *ops, const char *name)
{
    int r = qimg_opts_set(opts, "driver", ops->name);
    if (r == 0)
        r = qimg_opts_set(opts, "filename", name);
    if (r == 0 && ops->parse_filename)
        r = ops->parse_filename(name, *opts);
    return r;
}

static int open_backend(struct qimg_io **out, const struct qimg_io_ops *ops, const char *name,
                        qimg_opts *opts, unsigned flags)
{
    if ((flags & QIMG_IO_CREATE) && !ops->can_create && !ops->create_by_opening)
        return qimg_error(-ENOTSUP, "Protocol driver '%s' does not support image creation", ops->name);
    struct qimg_io *io = qimg_xcalloc(1, sizeof *io);
    io->ops = ops;
    io->filename = qimg_strdup(name);
    io->flags = flags;
    io->align = 1;
    int r = ops->open(io, opts);
    if (r < 0) {
        qimg_io_close(io);
        return r;
    }
    *out = io;
    return 0;
}

int qimg_io_open(struct qimg_io **out, const char *filename, unsigned flags)
{
    qimg_opts *opts = NULL;
    int r = qimg_io_name_opts(&opts, filename);
    if (r == 0)
        r = qimg_io_open_opts(out, opts, flags);
    qimg_opts_free(opts);
    return r;
}

int qimg_io_open_new(struct qimg_io **out, const char *filename, qimg_opts *create_opts,
                     unsigned flags)
{
    qimg_opts *opts = NULL;
    int r = qimg_io_name_opts(&opts, filename);
    const struct qimg_opt_desc *d = NULL;
    if (r == 0) {
        const char *driver = qimg_opts_get(opts, "driver");
        const struct qimg_io_ops *ops = driver ? qimg_io_backend_find(driver) : NULL;
        d = ops ? ops->create_opts : NULL;
    }
    for (; r == 0 && d && d->name; d++) {
        const char *v = strcmp(d->name, "size") ? qimg_opts_get(create_opts, d->name) : NULL;
        if (v)
            r = qimg_opts_set(&opts, d->name, v);
    }
    if (r == 0)
        r = qimg_io_open_opts(out, opts, flags | QIMG_IO_CREATE);
    qimg_opts_free(opts);
    return r;
}

int qimg_io_open_opts(struct qimg_io **out, qimg_opts *opts, unsigned flags)
{
    const char *driver = NULL;
    qimg_opts_get_string(opts, "driver", &driver);
    const char *filename = qimg_opts_get(opts, "filename");
    const struct qimg_io_ops *ops = &qimg_io_file_ops;
    if (driver) {
        ops = qimg_io_backend_find(driver);
        if (!ops && qimg_driver_find(driver))
            return qimg_io_open_image(out, opts, flags);   /* a format node below a filter */
        if (!ops)
            return qimg_error(-EINVAL, "Unknown driver '%s'", driver);
    }
    /* The io is named as the user named it: a local file by its path
     * (after "file:"), another backend by its name string or its prefix. */
    const char *name = filename ? filename : ops->prefix ? ops->prefix : ops->name;
    if (ops == &qimg_io_file_ops && (!filename || (!filename[0] && !(flags & QIMG_IO_CREATE))))
        return qimg_error(-EINVAL, "The '%s' block driver requires a file name", ops->name);
    return open_backend(out, ops, name, opts, flags);
}

void qimg_io_close(struct qimg_io *io)
{
    if (!io)
        return;
    if (io->ops->close)
        io->ops->close(io);
    free(io->filename);
    free(io);
}

bool qimg_io_same(struct qimg_io *a, struct qimg_io *b)
{
    if (a == b)
        return true;
    if (!a || !b || a->ops != b->ops)
        return false;
    if (a->ops->same)
        return a->ops->same(a, b);
    return strcmp(a->filename, b->filename) == 0;
}

/* ---- I/O wrappers with defaults ---- */

int qimg_io_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    return io->ops->pread(io, buf, len, off);
}

int qimg_io_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    if (!io->ops->pwrite)
        return qimg_error(-EACCES, "'%s' is read-only", io->filename);
    return io->ops->pwrite(io, buf, len, off);
}

/* Default zeroing: zero buffers of at most 1 MiB (also the file backend's
 * last resort). */
int qimg_io_write_zero_buffers(struct qimg_io *io, uint64_t off, uint64_t len)
{
    size_t chunk = (size_t)QIMG_MIN(len, (uint64_t)1 << 20);
    CLEANUP_FREE void *zeros = qimg_io_buffer(chunk);
    memset(zeros, 0, chunk);
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN(len, (uint64_t)chunk);
        int r = qimg_io_pwrite(io, zeros, n, off);
        if (r < 0)
            return r;
        off += n, len -= n;
    }
    return 0;
}

int qimg_io_zero(struct qimg_io *io, uint64_t off, uint64_t len, bool may_unmap)
{
    if (len == 0)
        return 0;
    if (!io->ops->zero)
        return qimg_io_write_zero_buffers(io, off, len);
    return io->ops->zero(io, off, len, may_unmap ? QIMG_IO_ZERO_MAY_UNMAP : 0);
}

int qimg_io_zero_fast(struct qimg_io *io, uint64_t off, uint64_t len)
{
    if (!io->ops->zero)
        return -ENOTSUP;
    return io->ops->zero(io, off, len, QIMG_IO_ZERO_NO_FALLBACK);
}

int qimg_io_discard(struct qimg_io *io, uint64_t off, uint64_t len)
{
    return io->ops->discard ? io->ops->discard(io, off, len) : 0;
}

int qimg_io_flush(struct qimg_io *io)
{
    return io->ops->flush ? io->ops->flush(io) : 0;
}

int qimg_io_get_size(struct qimg_io *io, uint64_t *size)
{
    return io->ops->get_size(io, size);
}

int qimg_io_truncate(struct qimg_io *io, uint64_t size)
{
    if (!io->ops->truncate)
        return qimg_error(-ENOTSUP, "Image format driver does not support resize");
    return io->ops->truncate(io, size);
}

int qimg_io_preallocate(struct qimg_io *io, uint64_t off, uint64_t len, bool full)
{
    if (!io->ops->preallocate)
        return qimg_error(-ENOTSUP, "Preallocation is not supported on '%s'", io->filename);
    return io->ops->preallocate(io, off, len, full);
}

int qimg_io_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    if (io->ops->extent)
        return io->ops->extent(io, off, len, pnum, kind);
    *kind = QIMG_IO_EXT_DATA;
    *pnum = len;
    return 0;
}

char *qimg_io_exact_filename(struct qimg_io *io)
{
    return io->ops->exact_filename ? io->ops->exact_filename(io) : NULL;
}

char *qimg_io_dirname(struct qimg_io *io)
{
    if (io->ops->dirname)
        return io->ops->dirname(io);
    CLEANUP_FREE char *exact = qimg_io_exact_filename(io);
    return qimg_path_combine(exact ? exact : io->filename, "");
}

int64_t qimg_io_allocated_size(struct qimg_io *io)
{
    return io->ops->allocated_size ? io->ops->allocated_size(io) : -ENOTSUP;
}

int qimg_io_copy_range(struct qimg_io *src, uint64_t soff, struct qimg_io *dst,
                       uint64_t doff, uint64_t len)
{
    if (!src->ops->copy_range || src->ops != dst->ops)
        return -ENOTSUP;
    return src->ops->copy_range(src, soff, dst, doff, len);
}

int qimg_io_lock(struct qimg_io *io, unsigned take, unsigned unshare)
{
    return io->ops->lock ? io->ops->lock(io, take, unshare) : 0;
}

void qimg_io_hint(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len)
{
    if (io->ops->hint)
        io->ops->hint(io, kind, off, len);
}

void qimg_io_event(struct qimg_io *io, enum qimg_io_event ev)
{
    if (io && io->ops->event)
        io->ops->event(io, ev);
}
