/* qimg - the "file" storage backend: a local regular file or block device.
 *
 * Full-length pread/pwrite loops (EINTR, short I/O), fallocate for zeroing
 * and discard, SEEK_DATA/SEEK_HOLE for extents, O_DIRECT/O_DSYNC for the
 * cache modes, and qemu-compatible OFD locks so an image that a running VM
 * holds is not opened for writing behind its back.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

struct file_state {
    int fd;                  /* the file (O_DIRECT with cache=none) */
    int buffered_fd;         /* with O_DIRECT: a second fd without it, for unaligned I/O */
    int stream_fd;           /* QIMG_IO_STREAM: O_DIRECT, for data not in the cache */
    bool stream;             /* streaming (cleared, atomically, if O_DIRECT fails) */
    uint64_t last_end;       /* streaming: where the last buffered read ended */
    uint64_t ra_end;         /* streaming: where our read-ahead window ends */
    uint64_t ra_size;        /* streaming: its size (0: no sequential run yet) */
    bool is_block;           /* a block device: size from ioctl, no truncate */
    /* Learnt "unsupported here" flags, set and read by many threads at
     * once (the thread contract): atomic, relaxed (a stale read only costs
     * one more failing syscall). */
    bool no_punch;           /* fallocate punch-hole unsupported here */
    bool no_zero_range;
    bool no_seek_data;
    dev_t dev;               /* identity, from the fstat at open (see file_same) */
    ino_t ino;
};

/* ---- qemu's lock protocol ----
 * qemu locks one byte per permission: 100+bit while it holds the
 * permission, 200+bit while it refuses to share it.  Before taking a
 * permission it tests the other side's "refuse" byte and the other way
 * round.  Bits: 0 consistent read, 1 write, 2 write unchanged, 3 resize. */
/* The main descriptor of an open file io. */
static inline int file_fd(const struct qimg_io *io)
{
    return ((const struct file_state *)io->priv)->fd;
}

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200
static const char *const perm_names[] = { "consistent read", "write", "write unchanged", "resize" };

static int lock_byte(int fd, off_t off, short type, int cmd)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };
    int r;
    do
        r = fcntl(fd, cmd, &fl);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (cmd == F_OFD_GETLK && fl.l_type != F_UNLCK)
        return -EAGAIN;
    return 0;
}

static int file_lock(struct qimg_io *io, unsigned take, unsigned unshare)
{
    if (io->flags & QIMG_IO_NOLOCK)
        return 0;
    for (unsigned bit = 0; bit < 4; bit++) {
        if ((take & (1u << bit)) && lock_byte(file_fd(io), LOCK_PERM_BASE + bit, F_RDLCK, F_OFD_SETLK) < 0)
            goto failed_set;
        if ((unshare & (1u << bit)) && lock_byte(file_fd(io), LOCK_SHARED_BASE + bit, F_RDLCK, F_OFD_SETLK) < 0)
            goto failed_set;
    }
    for (unsigned bit = 0; bit < 4; bit++) {
        if ((take & (1u << bit)) && lock_byte(file_fd(io), LOCK_SHARED_BASE + bit, F_WRLCK, F_OFD_GETLK) == -EAGAIN)
            return qimg_error(-EAGAIN, "Failed to get \"%s\" lock\nIs another process using the image [%s]?",
                              perm_names[bit], io->filename);
        if ((unshare & (1u << bit)) && lock_byte(file_fd(io), LOCK_PERM_BASE + bit, F_WRLCK, F_OFD_GETLK) == -EAGAIN)
            return qimg_error(-EAGAIN, "Failed to get shared \"%s\" lock\nIs another process using the image [%s]?",
                              perm_names[bit], io->filename);
    }
    return 0;
failed_set:
    /* A filesystem without OFD locks (some network ones): go on
     * unlocked, as qemu does when locking is unsupported. */
    return 0;
}

/* ---- read-once streaming (QIMG_IO_STREAM) ----
 * convert reads every source byte once, in order.  What the page cache does
 * not hold yet is read with O_DIRECT into the caller's buffer: one copy less
 * and no cache filled with data nobody reads again (in a VM that hands freed
 * memory back to its host, each newly cached page also costs a host page
 * fault: twice the time on our bench machine).  The kernel keeps O_DIRECT
 * reads coherent with dirty cached pages, so the residency check (cachestat,
 * Linux 6.5) is only a guess about speed, never about content.
 *
 * Requests that are not aligned for O_DIRECT (headers, compressed clusters,
 * 512-byte clusters) or that find some of their range cached are read
 * through the cache.  The kernel's own read-ahead is off for the file: it
 * plants markers in the pages it reads, and any later read of a marked page
 * (even of one that was cached for a header) starts more read-ahead, so the
 * whole file would end up cached ahead of us.  Small sequential reads still
 * need read-ahead, so we ask for windows ourselves (POSIX_FADV_WILLNEED
 * plants no markers) while unaligned reads follow each other. */

#define STREAM_WINDOW_FIRST ((uint64_t)128 << 10)
#define STREAM_WINDOW ((uint64_t)4 << 20)

#if !defined(__NR_cachestat) && (defined(__x86_64__) || defined(__aarch64__) || \
                                 defined(__i386__) || defined(__riscv) || defined(__arm__))
#define __NR_cachestat 451
#endif

struct cache_range { uint64_t off, len; };
struct cache_stat { uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted; };

/* How many pages of [off, off+len) are cached; -1 when the kernel cannot say. */
static int64_t cached_pages(int fd, uint64_t off, uint64_t len)
{
#ifdef __NR_cachestat
    struct cache_range range = { off, len };
    struct cache_stat st;
    if (syscall(__NR_cachestat, fd, &range, &st, 0) == 0)
        return (int64_t)QIMG_MIN(st.nr_cache, (uint64_t)INT64_MAX);
#else
    (void)fd, (void)off, (void)len;
#endif
    return -1;
}

static int open_fd(const char *filename, unsigned flags);
static void set_blocking(int fd);

static void stream_setup(struct qimg_io *io)
{
    struct file_state *s = io->priv;
    if (cached_pages(file_fd(io), 0, 1) < 0)
        return;                 /* no cachestat (old kernel, or not allowed) */
    s->stream_fd = open_fd(io->filename, (io->flags & ~QIMG_IO_STREAM) | QIMG_IO_DIRECT);
    if (s->stream_fd < 0)
        return;                 /* no O_DIRECT here (tmpfs...) */
    set_blocking(s->stream_fd);
    posix_fadvise(file_fd(io), 0, 0, POSIX_FADV_RANDOM);
    s->stream = true;
}

/* Before a read too small or unaligned for O_DIRECT: when it continues the
 * previous such read, keep the kernel reading ahead of it, in windows that
 * start small and double up to STREAM_WINDOW as the run goes on (a new one
 * when less than half of the last is left), as the kernel's read-ahead
 * does.  Aligned reads never move the window: those that find their range
 * cached would otherwise drag the window, and the cache, through the file. */
static void stream_read_ahead(struct qimg_io *io, uint64_t off, size_t len)
{
    struct file_state *s = io->priv;
    if (off > INT64_MAX / 2 || len > INT64_MAX / 2)
        return;
    uint64_t end = off + len;
    uint64_t last = __atomic_exchange_n(&s->last_end, end, __ATOMIC_RELAXED);
    if (off + STREAM_WINDOW < last || off > last + STREAM_WINDOW) {
        /* not sequential: the next run starts its own window */
        __atomic_store_n(&s->ra_size, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->ra_end, 0, __ATOMIC_RELAXED);
        return;
    }
    uint64_t ra = __atomic_load_n(&s->ra_end, __ATOMIC_RELAXED);
    uint64_t size = __atomic_load_n(&s->ra_size, __ATOMIC_RELAXED);
    if (size && ra >= end + size / 2)
        return;                         /* far enough ahead already */
    size = size ? QIMG_MIN(size * 2, STREAM_WINDOW) : STREAM_WINDOW_FIRST;
    uint64_t from = QIMG_MAX(ra, off), to = end + size;
    if (from < to && __atomic_compare_exchange_n(&s->ra_end, &ra, to, false, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED)) {
        __atomic_store_n(&s->ra_size, size, __ATOMIC_RELAXED);
        posix_fadvise(file_fd(io), (off_t)from, (off_t)(to - from), POSIX_FADV_WILLNEED);
    }
}

/* Stop streaming: read everything through the cache, with read-ahead. */
static void stream_stop(struct qimg_io *io)
{
    struct file_state *s = io->priv;
    if (__atomic_exchange_n(&s->stream, false, __ATOMIC_RELAXED))
        posix_fadvise(file_fd(io), 0, 0, POSIX_FADV_NORMAL);
}

/* ---- open ---- */

static int check_file_type(const char *filename, const struct stat *st, bool *is_block)
{
    *is_block = S_ISBLK(st->st_mode);
    if (S_ISREG(st->st_mode) || S_ISBLK(st->st_mode) || S_ISCHR(st->st_mode))
        return 0;
    if (S_ISDIR(st->st_mode))
        return qimg_error(-EISDIR, "'file' driver requires '%s' to be a regular file", filename);
    return qimg_error(-EINVAL, "'file' driver requires '%s' to be a regular file", filename);
}

static int open_fd(const char *filename, unsigned flags)
{
    int oflags = O_CLOEXEC | O_NONBLOCK;   /* O_NONBLOCK: never hang on a FIFO */
    oflags |= (flags & QIMG_IO_RDWR) ? O_RDWR : O_RDONLY;
    if (flags & QIMG_IO_CREATE) oflags |= O_CREAT;
    if (flags & QIMG_IO_TRUNC) oflags |= O_TRUNC;
    if (flags & QIMG_IO_EXCL) oflags |= O_EXCL;
    if (flags & QIMG_IO_DIRECT) oflags |= O_DIRECT;
    if (flags & QIMG_IO_DSYNC) oflags |= O_DSYNC;
    int fd;
    do
        fd = open(filename, oflags, 0644);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

/* Drop O_NONBLOCK once the file is known to be a file. */
static void set_blocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
}

/* "file:NAME" is the local file NAME, colons and all; a relative NAME
 * that would itself read as a protocol ("file:a:b") becomes "./a:b", as
 * qemu names it from then on. */
static int file_parse_filename(const char *filename, qimg_opts *opts)
{
    if (strncmp(filename, "file:", 5) != 0)    /* -f file NAME */
        return qimg_opts_set(&opts, "filename", filename);
    const char *path = filename + strlen("file:");
    if (!qimg_path_has_protocol(path))
        return qimg_opts_set(&opts, "filename", path);
    CLEANUP_FREE char *dotted = qimg_asprintf("./%s", path);
    return qimg_opts_set(&opts, "filename", dotted);
}

/* Options: "filename" (used by io.c already), "locking" (on, off, auto). */
static int file_options(struct qimg_io *io, qimg_opts *opts)
{
    const char *v;
    qimg_opts_get_string(opts, "filename", &v);
    if (qimg_opts_get_string(opts, "locking", &v) == 1) {
        if (strcmp(v, "off") == 0)
            io->flags |= QIMG_IO_NOLOCK;
        else if (strcmp(v, "on") && strcmp(v, "auto"))
            return qimg_error(-EINVAL, "Parameter 'locking' does not accept value '%s'", v);
    }
    return 0;
}

static int file_open(struct qimg_io *io, qimg_opts *opts)
{
    struct stat st;
    struct file_state *s = qimg_xcalloc(1, sizeof *s);
    s->fd = -1;
    s->buffered_fd = -1;
    s->stream_fd = -1;
    io->priv = s;
    int r = file_options(io, opts);
    if (r < 0)
        return r;
    /* Look before opening: opening a FIFO for writing would block and
     * opening a socket fails with an unclear error. */
    if (stat(io->filename, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        bool blk;
        r = check_file_type(io->filename, &st, &blk);
        if (r < 0)
            return r;   /* a character device goes on to be opened */
    }
    int fd = open_fd(io->filename, io->flags);
    if (fd < 0)
        return qimg_error_errno(fd, (io->flags & QIMG_IO_CREATE) ? "Could not create '%s'" : "Could not open '%s'",
                                io->filename);
    s->fd = fd;
    if (fstat(fd, &st) < 0)
        return qimg_error_errno(-errno, "Could not stat '%s'", io->filename);
    r = check_file_type(io->filename, &st, &s->is_block);
    if (r < 0)
        return r;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    set_blocking(fd);
    io->align = 1;
    if (io->flags & QIMG_IO_DIRECT) {
        /* Unaligned requests (probing, headers) go through a buffered fd;
         * the kernel keeps the two coherent. */
        s->buffered_fd = open_fd(io->filename, io->flags & ~(QIMG_IO_DIRECT | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_EXCL));
        if (s->buffered_fd < 0)
            return qimg_error_errno(s->buffered_fd, "Could not open '%s'", io->filename);
        set_blocking(s->buffered_fd);
    }
    if ((io->flags & (QIMG_IO_STREAM | QIMG_IO_RDWR | QIMG_IO_DIRECT)) == QIMG_IO_STREAM)
        stream_setup(io);
    return 0;
}

/* ---- I/O ---- */

/* O_DIRECT needs buffer, length and offset aligned to the logical block
 * size; 4096 covers every device. */
static bool direct_ok(const void *buf, size_t len, uint64_t off)
{
    return !(((uintptr_t)buf | len | off) & 4095);
}

static int fd_for(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    struct file_state *s = io->priv;
    if (s->buffered_fd >= 0 && !direct_ok(buf, len, off))
        return s->buffered_fd;
    return file_fd(io);
}

static int file_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct file_state *s = io->priv;
    uint8_t *p = buf;
    int fd = -1;
    if (len && __atomic_load_n(&s->stream, __ATOMIC_RELAXED)) {
        if (!direct_ok(buf, len, off))
            stream_read_ahead(io, off, len);
        else if (cached_pages(file_fd(io), off, len) == 0)
            fd = s->stream_fd;         /* aligned and not cached: O_DIRECT */
    }
    while (len > 0) {
        if (fd < 0)
            fd = fd_for(io, p, len, off);
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && fd == s->stream_fd) {
            stream_stop(io);   /* O_DIRECT refused after all */
            fd = -1;
            continue;
        }
        if (n < 0)
            return qimg_error_errno(-errno, "Could not read from '%s'", io->filename);
        if (n == 0) {           /* past EOF reads as zeros */
            memset(p, 0, len);
            return 0;
        }
        p += n, off += (uint64_t)n, len -= (size_t)n;
        fd = -1;                /* after a short read the rest may be unaligned: choose again */
    }
    return 0;
}

static int file_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd_for(io, p, len, off), p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return qimg_error_errno(-errno, "Could not write to '%s'", io->filename);
        }
        p += n, off += (uint64_t)n, len -= (size_t)n;
    }
    return 0;
}

static int try_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
    int r;
    do
        r = fallocate(fd, mode, (off_t)off, (off_t)len);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int file_get_size(struct qimg_io *io, uint64_t *size);

static bool unsupported(int r) { return r == -EOPNOTSUPP || r == -ENOSYS || r == -EINVAL; }

/* NO_FALLBACK (qcow2's copy-on-write from zeros, as qemu zeroes): one
 * fallocate(ZERO_RANGE), all or nothing, even past EOF. */
static int zero_range_only(struct qimg_io *io, uint64_t off, uint64_t len)
{
    if (off > INT64_MAX || len > INT64_MAX)
        return -ENOTSUP;
    int r = try_fallocate(file_fd(io), FALLOC_FL_ZERO_RANGE, off, len);
    return r == 0 ? 0 : -ENOTSUP;
}

static int file_zero(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags)
{
    struct file_state *s = io->priv;
    bool may_unmap = flags & QIMG_IO_ZERO_MAY_UNMAP;
    uint64_t size;
    int r;
    if (flags & QIMG_IO_ZERO_NO_FALLBACK)
        return zero_range_only(io, off, len);
    if (len == 0)
        return 0;
    /* Past EOF a file reads as zeros already: only its size must grow.
     * Writing the last byte grows it and, unlike ftruncate, can never cut
     * data that another writer has put further out meanwhile; only that
     * one block gets allocated. */
    if (!s->is_block && file_get_size(io, &size) == 0 && off >= size) {
        uint8_t zero = 0;
        return file_pwrite(io, &zero, 1, off + len - 1);
    }
    if (may_unmap && !__atomic_load_n(&s->no_punch, __ATOMIC_RELAXED)) {
        r = try_fallocate(file_fd(io), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        if (r == 0)
            return 0;
        if (unsupported(r))
            __atomic_store_n(&s->no_punch, true, __ATOMIC_RELAXED);
    }
    if (!__atomic_load_n(&s->no_zero_range, __ATOMIC_RELAXED)) {
        r = try_fallocate(file_fd(io), FALLOC_FL_ZERO_RANGE, off, len);
        if (r == 0)
            return 0;
        if (unsupported(r))
            __atomic_store_n(&s->no_zero_range, true, __ATOMIC_RELAXED);
    }
    return qimg_io_write_zero_buffers(io, off, len);
}

static int file_discard(struct qimg_io *io, uint64_t off, uint64_t len)
{
    struct file_state *s = io->priv;
    if (__atomic_load_n(&s->no_punch, __ATOMIC_RELAXED) || len == 0)
        return 0;
    int r = try_fallocate(file_fd(io), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    if (unsupported(r))
        __atomic_store_n(&s->no_punch, true, __ATOMIC_RELAXED);
    return 0;   /* discard is advisory */
}

static int file_flush(struct qimg_io *io)
{
    if (io->flags & QIMG_IO_UNSAFE)
        return 0;
    if (fdatasync(file_fd(io)) < 0)
        return qimg_error_errno(-errno, "Could not flush '%s'", io->filename);
    return 0;
}

static int file_get_size(struct qimg_io *io, uint64_t *size)
{
    struct file_state *s = io->priv;
    if (s->is_block) {
        uint64_t v;
        if (ioctl(file_fd(io), BLKGETSIZE64, &v) < 0)
            return qimg_error_errno(-errno, "Could not get size of '%s'", io->filename);
        *size = v;
        return 0;
    }
    struct stat st;
    if (fstat(file_fd(io), &st) < 0)
        return qimg_error_errno(-errno, "Could not stat '%s'", io->filename);
    *size = (uint64_t)st.st_size;
    return 0;
}

static int file_truncate(struct qimg_io *io, uint64_t size)
{
    struct file_state *s = io->priv;
    if (s->is_block) {
        uint64_t cur;
        int r = file_get_size(io, &cur);
        if (r == 0 && size > cur)
            return qimg_error(-EINVAL, "Cannot grow device files");
        return r;
    }
    if (ftruncate(file_fd(io), (off_t)size) < 0)
        return qimg_error_errno(-errno, "Could not resize file");
    return 0;
}

static int file_preallocate(struct qimg_io *io, uint64_t off, uint64_t len, bool full)
{
    if (len == 0)
        return 0;
    if (!full) {
        int r = try_fallocate(file_fd(io), 0, off, len);
        if (r < 0)
            return qimg_error(r, "Could not preallocate new data: %s", strerror(-r));
        return 0;
    }
    return qimg_io_write_zero_buffers(io, off, len);
}

static int file_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    struct file_state *s = io->priv;
    uint64_t size;
    int r = file_get_size(io, &size);
    if (r < 0)
        return r;
    if (off >= size) {        /* past EOF: a hole */
        *kind = QIMG_IO_EXT_HOLE;
        *pnum = len;
        return 0;
    }
    if (__atomic_load_n(&s->no_seek_data, __ATOMIC_RELAXED) || s->is_block)
        goto all_data;
    off_t data = lseek(file_fd(io), (off_t)off, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) {     /* no data after off: hole to EOF */
            *kind = QIMG_IO_EXT_HOLE;
            *pnum = QIMG_MIN(len, size - off);
            return 0;
        }
        __atomic_store_n(&s->no_seek_data, true, __ATOMIC_RELAXED);
        goto all_data;
    }
    if ((uint64_t)data > off) {
        *kind = QIMG_IO_EXT_HOLE;
        *pnum = QIMG_MIN(len, (uint64_t)data - off);
        return 0;
    }
    off_t hole = lseek(file_fd(io), (off_t)off, SEEK_HOLE);
    if (hole < 0 || (uint64_t)hole <= off)
        goto all_data;
    *kind = QIMG_IO_EXT_DATA;
    *pnum = QIMG_MIN(len, (uint64_t)hole - off);
    return 0;
all_data:
    *kind = QIMG_IO_EXT_DATA;
    *pnum = QIMG_MIN(len, size - off);
    return 0;
}

static int64_t file_allocated_size(struct qimg_io *io)
{
    struct stat st;
    if (fstat(file_fd(io), &st) < 0)
        return -errno;
    return (int64_t)st.st_blocks * 512;
}

static int file_copy_range(struct qimg_io *src, uint64_t soff, struct qimg_io *dst,
                           uint64_t doff, uint64_t len)
{
    if (src->ops != dst->ops)
        return -ENOTSUP;
    while (len > 0) {
        loff_t in = (loff_t)soff, out = (loff_t)doff;
        ssize_t n = copy_file_range(file_fd(src), &in, file_fd(dst), &out, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;   /* caller falls back to read+write */
        }
        if (n == 0)
            return -ENOTSUP;
        soff += (uint64_t)n, doff += (uint64_t)n, len -= (uint64_t)n;
    }
    return 0;
}

/* WILLNEED: read-ahead of a range.  WRITEBACK: start writing back the
 * dirty pages (sync_file_range without waiting); pointless when nothing is
 * cached dirty (O_DIRECT) or nothing will be flushed (cache=unsafe). */
static void file_hint(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len)
{
    if (off > INT64_MAX || len > INT64_MAX)
        return;
    if (kind == QIMG_IO_HINT_WILLNEED)
        posix_fadvise(file_fd(io), (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
    else if (kind == QIMG_IO_HINT_WRITEBACK && !(io->flags & (QIMG_IO_UNSAFE | QIMG_IO_DIRECT)))
        sync_file_range(file_fd(io), (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
}

/* The same file: device and inode, as found when each was opened (an
 * open descriptor keeps its inode; a chain of n layers asks n^2/2 times). */
static bool file_same(struct qimg_io *a, struct qimg_io *b)
{
    const struct file_state *sa = a->priv, *sb = b->priv;
    return sa->dev == sb->dev && sa->ino == sb->ino;
}

static void file_close(struct qimg_io *io)
{
    struct file_state *s = io->priv;
    if (s && s->fd >= 0)
        close(s->fd);
    if (s && s->buffered_fd >= 0)
        close(s->buffered_fd);
    if (s && s->stream_fd >= 0)
        close(s->stream_fd);
    free(s);
}

/* The path as opened ("a:b" from json: stays "a:b": qemu shows it so). */
static char *file_exact_filename(struct qimg_io *io)
{
    return qimg_strdup(io->filename);
}

const struct qimg_io_ops qimg_io_file_ops = {
    .name           = "file",
    .prefix         = "file:",
    .exact_filename = file_exact_filename,
    .parse_filename = file_parse_filename,
    .can_create     = true,
    .open           = file_open,
    .pread          = file_pread,
    .pwrite         = file_pwrite,
    .zero           = file_zero,
    .discard        = file_discard,
    .flush          = file_flush,
    .get_size       = file_get_size,
    .truncate       = file_truncate,
    .preallocate    = file_preallocate,
    .extent         = file_extent,
    .allocated_size = file_allocated_size,
    .copy_range     = file_copy_range,
    .lock           = file_lock,
    .hint           = file_hint,
    .same           = file_same,
    .close          = file_close,
};
