/* ext2/3/4: the I/O manager through which libext2fs reads and writes the
 * device (qimg_fs_dev_*), with a write-back block cache so that metadata
 * updates do not become one image write each and neighbouring blocks go
 * back in one request; and the translation of libext2fs's error codes. */
#ifdef HAVE_EXT2FS

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <et/com_err.h>

#include "ext.h"
#include "internal.h"
#include "util.h"

/* ----------------------------------------------------------- error codes */

static int errno_of(errcode_t code)
{
    if (code > 0 && code < 4096)
        return -(int)code;
    switch (code) {
    case EXT2_ET_NO_MEMORY: return -ENOMEM;
    case EXT2_ET_BLOCK_ALLOC_FAIL:
    case EXT2_ET_INODE_ALLOC_FAIL:
    case EXT2_ET_DIR_NO_SPACE:
    case EXT2_ET_DIR_NO_SPACE_FOR_CSUM:
    case EXT2_ET_EA_NO_SPACE:
        return -ENOSPC;
    case EXT2_ET_FILE_NOT_FOUND: return -ENOENT;
    case EXT2_ET_DIR_EXISTS: return -EEXIST;
    case EXT2_ET_RO_FILSYS: return -EROFS;
    case EXT2_ET_NO_DIRECTORY: return -ENOTDIR;
    case EXT2_ET_UNSUPP_FEATURE:
    case EXT2_ET_RO_UNSUPP_FEATURE:
        return -ENOTSUP;
    case EXT2_ET_FILE_TOO_BIG: return -EFBIG;
    default: return -EIO;
    }
}

static pthread_once_t error_table_once = PTHREAD_ONCE_INIT;

static void add_error_table_once(void)
{
    /* libext2fs registers its messages only when one of its calls fails
     * in certain paths; error_message() needs them from the start */
    initialize_ext2_error_table();
}

const char *ext_error_message(errcode_t code)
{
    if (qimg_ext2fs_load() < 0)    /* not reached: a code comes from libext2fs */
        return "unknown error";
    pthread_once(&error_table_once, add_error_table_once);
    return error_message(code);
}

int ext_err(struct ext_io *io, errcode_t code, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (io && io->err && code == (errcode_t)-io->err) {
        int r = io->err;
        io->err = 0;
        qimg_error_prefix("%s", what);
        return r;
    }
    return qimg_error(errno_of(code), "%s: %s", what, ext_error_message(code));
}

/* ------------------------------------------------------------ I/O manager */

#define EXT_CACHE_BYTES (16u << 20)
#define EXT_RUN_BLOCKS 256u       /* write-back requests of up to 256 blocks */

static struct ext_io *chan_io(io_channel ch) { return ch->private_data; }

static errcode_t io_fail(struct ext_io *io, int r)
{
    io->err = r;
    return (errcode_t)-r;
}

static errcode_t dev_pread(struct ext_io *io, uint64_t off, void *buf, size_t len)
{
    int r = qimg_fs_dev_read(io->dev, off, buf, len);
    return r < 0 ? io_fail(io, r) : 0;
}

static errcode_t dev_pwrite(struct ext_io *io, uint64_t off, const void *buf, size_t len)
{
    int r = qimg_fs_dev_write(io->dev, off, buf, len);
    return r < 0 ? io_fail(io, r) : 0;
}

static void cache_alloc(struct ext_io *io)
{
    if (io->cache)
        return;
    io->nslots = EXT_CACHE_BYTES / (unsigned)io->block_size;
    io->cache = qimg_xcalloc(io->nslots, sizeof *io->cache);
}

static bool slot_follows(const struct ext_cache_slot *t, blk64_t blk)
{
    return t->valid && t->dirty && t->blk == blk;
}

/* Writes back a dirty slot together with its dirty neighbours holding the
 * blocks next to it (blocks allocated one after the other sit in
 * consecutive slots): one request per run of consecutive blocks. */
static errcode_t slot_writeback(struct ext_io *io, struct ext_cache_slot *s)
{
    if (!s->valid || !s->dirty)
        return 0;
    size_t bs = (size_t)io->block_size;
    unsigned first = (unsigned)(s - io->cache), n = 1;
    while (first > 0 && n < EXT_RUN_BLOCKS && s->blk >= n &&
           slot_follows(&io->cache[first - 1], s->blk - n)) {
        first--;
        n++;
    }
    blk64_t start = io->cache[first].blk;
    while (first + n < io->nslots && n < EXT_RUN_BLOCKS &&
           slot_follows(&io->cache[first + n], start + n))
        n++;
    errcode_t e;
    if (n == 1) {
        e = dev_pwrite(io, start * bs, io->cache[first].data, bs);
    } else {
        if (!io->run_buf)
            io->run_buf = qimg_xmalloc(EXT_RUN_BLOCKS * bs);
        for (unsigned i = 0; i < n; i++)
            memcpy(io->run_buf + i * bs, io->cache[first + i].data, bs);
        e = dev_pwrite(io, start * bs, io->run_buf, n * bs);
    }
    if (!e)
        for (unsigned i = 0; i < n; i++)
            io->cache[first + i].dirty = false;
    return e;
}

static errcode_t cache_writeback_all(struct ext_io *io)
{
    errcode_t first = 0;
    if (!io->cache)
        return 0;
    for (unsigned i = 0; i < io->nslots; i++) {
        errcode_t e = slot_writeback(io, &io->cache[i]);
        if (e && !first)
            first = e;
    }
    return first;
}

static void cache_free(struct ext_io *io)
{
    if (!io->cache)
        return;
    for (unsigned i = 0; i < io->nslots; i++)
        free(io->cache[i].data);
    free(io->cache);
    io->cache = NULL;
    free(io->run_buf);
    io->run_buf = NULL;
}

/* Calls fn for every valid slot holding a block of the byte range. */
static void cache_each_in_range(struct ext_io *io, uint64_t off, uint64_t len,
                                void (*fn)(struct ext_io *, struct ext_cache_slot *, uint64_t,
                                           uint64_t, void *),
                                void *arg)
{
    if (!io->cache || len == 0)
        return;
    uint64_t bs = (uint64_t)io->block_size;
    uint64_t first = off / bs, last = (off + len - 1) / bs;
    if (last - first + 1 <= io->nslots) {
        for (uint64_t b = first; b <= last; b++) {
            struct ext_cache_slot *s = &io->cache[b % io->nslots];
            if (s->valid && s->blk == b)
                fn(io, s, off, len, arg);
        }
    } else {
        for (unsigned i = 0; i < io->nslots; i++) {
            struct ext_cache_slot *s = &io->cache[i];
            if (s->valid && s->blk >= first && s->blk <= last)
                fn(io, s, off, len, arg);
        }
    }
}

/* The overlap of a slot's block with [off, off+len): block-relative and
 * range-relative offsets and the length. */
static void slot_overlap(struct ext_io *io, struct ext_cache_slot *s, uint64_t off, uint64_t len,
                         size_t *in_block, size_t *in_range, size_t *n)
{
    uint64_t bs = (uint64_t)io->block_size;
    uint64_t bstart = s->blk * bs;
    uint64_t start = QIMG_MAX(bstart, off), end = QIMG_MIN(bstart + bs, off + len);
    *in_block = (size_t)(start - bstart);
    *in_range = (size_t)(start - off);
    *n = (size_t)(end - start);
}

/* After a direct read: dirty cached blocks are newer than the device. */
static void overlay_dirty(struct ext_io *io, struct ext_cache_slot *s, uint64_t off,
                          uint64_t len, void *buf)
{
    if (!s->dirty)
        return;
    size_t ib, ir, n;
    slot_overlap(io, s, off, len, &ib, &ir, &n);
    memcpy((char *)buf + ir, s->data + ib, n);
}

/* After a direct write (buf) or zeroing (buf NULL): cached copies follow. */
static void update_slot(struct ext_io *io, struct ext_cache_slot *s, uint64_t off,
                        uint64_t len, void *buf)
{
    size_t ib, ir, n;
    slot_overlap(io, s, off, len, &ib, &ir, &n);
    if (buf)
        memcpy(s->data + ib, (const char *)buf + ir, n);
    else
        memset(s->data + ib, 0, n);
}

static errcode_t cached_read_block(struct ext_io *io, blk64_t blk, void *data)
{
    size_t bs = (size_t)io->block_size;
    cache_alloc(io);
    struct ext_cache_slot *s = &io->cache[blk % io->nslots];
    if (!(s->valid && s->blk == blk)) {
        errcode_t e = slot_writeback(io, s);
        if (e)
            return e;
        if (!s->data)
            s->data = qimg_xmalloc(bs);
        s->valid = false;
        e = dev_pread(io, blk * (uint64_t)bs, s->data, bs);
        if (e)
            return e;
        s->blk = blk;
        s->valid = true;
        s->dirty = false;
    }
    memcpy(data, s->data, bs);
    return 0;
}

static errcode_t cached_write_block(struct ext_io *io, blk64_t blk, const void *data)
{
    size_t bs = (size_t)io->block_size;
    cache_alloc(io);
    struct ext_cache_slot *s = &io->cache[blk % io->nslots];
    if (!(s->valid && s->blk == blk)) {
        errcode_t e = slot_writeback(io, s);
        if (e)
            return e;
        if (!s->data)
            s->data = qimg_xmalloc(bs);
    }
    memcpy(s->data, data, bs);
    s->blk = blk;
    s->valid = true;
    s->dirty = true;
    return 0;
}

/* count > 0: blocks; count < 0: -count bytes. */
static errcode_t io_range(io_channel ch, unsigned long long block, int count, uint64_t *off,
                          uint64_t *len)
{
    struct ext_io *io = chan_io(ch);
    uint64_t bs = (uint64_t)io->block_size;
    *len = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * bs;
    if (!qimg_mul_ok(block, bs, off))
        return io_fail(io, qimg_error(-EIO, "ext: block %llu is out of range", block));
    return 0;
}

static errcode_t qio_read_blk64(io_channel ch, unsigned long long block, int count, void *data)
{
    struct ext_io *io = chan_io(ch);
    if (count == 1)
        return cached_read_block(io, block, data);
    uint64_t off, len;
    errcode_t e = io_range(ch, block, count, &off, &len);
    if (e)
        return e;
    e = dev_pread(io, off, data, (size_t)len);
    if (e)
        return e;
    cache_each_in_range(io, off, len, overlay_dirty, data);
    return 0;
}

static errcode_t qio_write_blk64(io_channel ch, unsigned long long block, int count,
                                 const void *data)
{
    struct ext_io *io = chan_io(ch);
    if (count == 1)
        return cached_write_block(io, block, data);
    uint64_t off, len;
    errcode_t e = io_range(ch, block, count, &off, &len);
    if (e)
        return e;
    e = dev_pwrite(io, off, data, (size_t)len);
    if (e)
        return e;
    cache_each_in_range(io, off, len, update_slot, (void *)data);
    return 0;
}

static errcode_t qio_read_blk(io_channel ch, unsigned long block, int count, void *data)
{
    return qio_read_blk64(ch, block, count, data);
}

static errcode_t qio_write_blk(io_channel ch, unsigned long block, int count, const void *data)
{
    return qio_write_blk64(ch, block, count, data);
}

static errcode_t qio_write_byte(io_channel ch, unsigned long offset, int count, const void *data)
{
    struct ext_io *io = chan_io(ch);
    if (count < 0)
        return EXT2_ET_INVALID_ARGUMENT;
    errcode_t e = dev_pwrite(io, offset, data, (size_t)count);
    if (e)
        return e;
    cache_each_in_range(io, offset, (uint64_t)count, update_slot, (void *)data);
    return 0;
}

static errcode_t qio_zeroout(io_channel ch, unsigned long long block, unsigned long long count)
{
    struct ext_io *io = chan_io(ch);
    uint64_t bs = (uint64_t)io->block_size, off, len;
    if (!qimg_mul_ok(block, bs, &off) || !qimg_mul_ok(count, bs, &len))
        return EXT2_ET_INVALID_ARGUMENT;
    int r = qimg_fs_dev_zero(io->dev, off, len);
    if (r < 0)
        return io_fail(io, r);
    cache_each_in_range(io, off, len, update_slot, NULL);
    return 0;
}

static errcode_t qio_set_blksize(io_channel ch, int blksize)
{
    struct ext_io *io = chan_io(ch);
    if (blksize <= 0 || blksize > EXT2_MAX_BLOCK_SIZE)
        return EXT2_ET_INVALID_ARGUMENT;
    if (blksize == io->block_size)
        return 0;
    errcode_t e = cache_writeback_all(io);
    if (e)
        return e;
    cache_free(io);
    io->block_size = ch->block_size = blksize;
    return 0;
}

static errcode_t qio_flush(io_channel ch)
{
    struct ext_io *io = chan_io(ch);
    errcode_t e = cache_writeback_all(io);
    if (e)
        return e;
    int r = qimg_fs_dev_flush(io->dev);
    return r < 0 ? io_fail(io, r) : 0;
}

static errcode_t qio_set_option(io_channel ch, const char *option, const char *arg)
{
    return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t qio_close(io_channel ch)
{
    if (--ch->refcount > 0)
        return 0;
    struct ext_io *io = chan_io(ch);
    errcode_t e = cache_writeback_all(io);
    cache_free(io);
    free(ch->name);
    free(ch);
    return e;
}

static errcode_t qio_open(const char *name, int flags, io_channel *out)
{
    void *ptr = NULL;
    if (!name || sscanf(name, "qimg:%p", &ptr) != 1 || !ptr)
        return EXT2_ET_BAD_DEVICE_NAME;
    struct ext_io *io = ptr;
    io_channel ch = calloc(1, sizeof *ch);
    if (!ch)
        return EXT2_ET_NO_MEMORY;
    ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    ch->manager = qimg_ext_io_manager;
    ch->name = strdup(name);
    if (!ch->name) {
        free(ch);
        return EXT2_ET_NO_MEMORY;
    }
    ch->block_size = 1024;
    ch->refcount = 1;
    ch->private_data = io;
    io->block_size = 1024;
    io->err = 0;
    io->cache = NULL;
    io->run_buf = NULL;
    io->nslots = 0;
    *out = ch;
    return 0;
}

static struct struct_io_manager qimg_io_manager_struct = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "qimg I/O manager",
    .open = qio_open,
    .close = qio_close,
    .set_blksize = qio_set_blksize,
    .read_blk = qio_read_blk,
    .write_blk = qio_write_blk,
    .flush = qio_flush,
    .write_byte = qio_write_byte,
    .set_option = qio_set_option,
    .read_blk64 = qio_read_blk64,
    .write_blk64 = qio_write_blk64,
    .zeroout = qio_zeroout,
};

io_manager qimg_ext_io_manager = &qimg_io_manager_struct;

char *ext_io_name(struct ext_io *io)
{
    return qimg_asprintf("qimg:%p", (void *)io);
}

#endif /* HAVE_EXT2FS */
