/* qimg - internal: storage backends: struct qimg_io, the backend registry and its wrappers.
 * Part of internal.h (which includes every part); see docs/architecture.md. */
#ifndef QIMG_LIB_IO_H
#define QIMG_LIB_IO_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"
#include "errors.h"

/* ======================================================= storage backends */

struct qimg_io;

enum qimg_io_open_flags {
    QIMG_IO_RDWR   = 1u << 0,
    QIMG_IO_CREATE = 1u << 1,   /* create if missing (O_CREAT) */
    QIMG_IO_TRUNC  = 1u << 2,   /* truncate to 0 */
    QIMG_IO_EXCL   = 1u << 3,   /* O_EXCL */
    QIMG_IO_DIRECT = 1u << 4,   /* O_DIRECT */
    QIMG_IO_DSYNC  = 1u << 5,   /* O_DSYNC */
    QIMG_IO_NOLOCK = 1u << 6,   /* -U / force-share: no locks */
    QIMG_IO_UNSAFE = 1u << 7,   /* flush is a no-op */
    QIMG_IO_STREAM = 1u << 8,   /* read once, front to back: bypass the cache (file.c);
                                   with RDWR written once: bypass librbd's cache */
};

/* Extent kinds from the storage (SEEK_DATA/SEEK_HOLE for files).
 * UNKNOWN: the storage cannot say (null-co without read-zeroes); raw
 * reports such a range as neither data nor zero, as qemu does. */
/* DATA_ZERO: allocated data that reads as zeros (an NBD extent with only
 * the "zero" bit; qemu's map shows it "zero": true, "data": true). */
enum { QIMG_IO_EXT_DATA = 1, QIMG_IO_EXT_HOLE = 2, QIMG_IO_EXT_UNKNOWN = 3, QIMG_IO_EXT_DATA_ZERO = 4 };

/* Flags of the zero op.  MAY_UNMAP allows a hole.  NO_FALLBACK: only an
 * efficient zeroing that keeps the range allocated (fallocate ZERO_RANGE),
 * never written zero buffers; -ENOTSUP when the storage cannot, and then
 * nothing was changed (qcow2's copy-on-write from zeros copies instead). */
enum { QIMG_IO_ZERO_MAY_UNMAP = 1u << 0, QIMG_IO_ZERO_NO_FALLBACK = 1u << 1 };

/* Hints: advice, never an error.  WILLNEED: the range will be read soon
 * (read-ahead).  WRITEBACK: start writing back what was written so far,
 * without waiting (a later flush then has less to do). */
enum qimg_io_hint { QIMG_IO_HINT_WILLNEED = 1, QIMG_IO_HINT_WRITEBACK = 2 };

/* Debug events (qemu's BlkdebugEvent names, see io.c): format drivers
 * announce the metadata or data request they are about to make on their
 * file with qimg_io_event(); blkdebug arms error rules and changes state
 * on them, every other backend ignores them. */
enum qimg_io_event {
    QIMG_EV_L1_UPDATE, QIMG_EV_L1_GROW_ALLOC_TABLE, QIMG_EV_L1_GROW_WRITE_TABLE,
    QIMG_EV_L1_GROW_ACTIVATE_TABLE,
    QIMG_EV_L2_LOAD, QIMG_EV_L2_UPDATE, QIMG_EV_L2_UPDATE_COMPRESSED,
    QIMG_EV_L2_ALLOC_COW_READ, QIMG_EV_L2_ALLOC_WRITE,
    QIMG_EV_READ_AIO, QIMG_EV_READ_BACKING_AIO, QIMG_EV_READ_COMPRESSED,
    QIMG_EV_WRITE_AIO, QIMG_EV_WRITE_COMPRESSED,
    QIMG_EV_VMSTATE_LOAD, QIMG_EV_VMSTATE_SAVE,
    QIMG_EV_COW_READ, QIMG_EV_COW_WRITE,
    QIMG_EV_REFTABLE_LOAD, QIMG_EV_REFTABLE_GROW, QIMG_EV_REFTABLE_UPDATE,
    QIMG_EV_REFBLOCK_LOAD, QIMG_EV_REFBLOCK_UPDATE, QIMG_EV_REFBLOCK_UPDATE_PART,
    QIMG_EV_REFBLOCK_ALLOC, QIMG_EV_REFBLOCK_ALLOC_HOOKUP, QIMG_EV_REFBLOCK_ALLOC_WRITE,
    QIMG_EV_REFBLOCK_ALLOC_WRITE_BLOCKS, QIMG_EV_REFBLOCK_ALLOC_WRITE_TABLE,
    QIMG_EV_REFBLOCK_ALLOC_SWITCH_TABLE,
    QIMG_EV_CLUSTER_ALLOC, QIMG_EV_CLUSTER_ALLOC_BYTES, QIMG_EV_CLUSTER_FREE,
    QIMG_EV_FLUSH_TO_OS, QIMG_EV_FLUSH_TO_DISK,
    QIMG_EV_PWRITEV_RMW_HEAD, QIMG_EV_PWRITEV_RMW_AFTER_HEAD, QIMG_EV_PWRITEV_RMW_TAIL,
    QIMG_EV_PWRITEV_RMW_AFTER_TAIL, QIMG_EV_PWRITEV, QIMG_EV_PWRITEV_ZERO, QIMG_EV_PWRITEV_DONE,
    QIMG_EV_EMPTY_IMAGE_PREPARE, QIMG_EV_L1_SHRINK_WRITE_TABLE,
    QIMG_EV_L1_SHRINK_FREE_L2_CLUSTERS, QIMG_EV_COR_WRITE, QIMG_EV_CLUSTER_ALLOC_SPACE,
    QIMG_EV_NONE,
    QIMG_EV__MAX
};
/* qemu's name of an event ("l2_load"), and back (-1 when unknown). */
const char *qimg_io_event_name(enum qimg_io_event ev);
int qimg_io_event_lookup(const char *name);

/*
 * A storage backend.  Required: name, pread, get_size, close, and pwrite
 * unless the backend is read-only; every other op may be NULL and the
 * qimg_io_* wrapper then supplies a default (io.c): zero writes zero
 * buffers in bounded chunks (NO_FALLBACK: -ENOTSUP), extent says "all
 * data", discard/hint/event/lock do nothing, flush succeeds,
 * allocated_size/copy_range/truncate/preallocate give -ENOTSUP.
 *
 * Thread contract (what the image layer and the drivers may rely on):
 * - pread, pwrite, zero, discard, extent, get_size, hint and event may be
 *   called from many threads at once on one io (convert's workers, the
 *   qcow2 driver outside its lock).  A backend keeps any state they share
 *   consistent itself (atomics; file.c only caches "unsupported" flags).
 * - flush may run concurrently with that I/O; it covers what completed
 *   before it was called.
 * - open, close, truncate, preallocate, lock and copy_range's setup are
 *   single-threaded: no other op runs on that io meanwhile.
 */
struct qimg_io_ops {
    const char *name;                        /* "file", "null-co", "blkdebug" ... */
    /* Filename prefix that selects this backend ("null-co://", "blkdebug:"),
     * or NULL. */
    const char *prefix;
    /* Turn a filename with the prefix into options (e.g. blkdebug's
     * "config" and "image"); NULL: the name goes to "filename" as is. */
    int (*parse_filename)(const char *filename, qimg_opts *opts);
    bool can_create;        /* QIMG_IO_CREATE makes a new object (file) */
    /* Open io (filename and flags set) with its options; mark what is used. */
    int (*open)(struct qimg_io *io, qimg_opts *opts);
    /* Full-length I/O: short reads past EOF are zero-filled by pread. */
    int (*pread)(struct qimg_io *io, void *buf, size_t len, uint64_t off);
    int (*pwrite)(struct qimg_io *io, const void *buf, size_t len, uint64_t off);
    /* Make [off, off+len) read as zeros (QIMG_IO_ZERO_* flags). */
    int (*zero)(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags);
    int (*discard)(struct qimg_io *io, uint64_t off, uint64_t len);
    int (*flush)(struct qimg_io *io);
    int (*get_size)(struct qimg_io *io, uint64_t *size);
    int (*truncate)(struct qimg_io *io, uint64_t size);
    /* Preallocate [off, off+len): full=false -> fallocate, true -> write zeros. */
    int (*preallocate)(struct qimg_io *io, uint64_t off, uint64_t len, bool full);
    /* Kind of the extent starting at off, and its length (capped at len). */
    int (*extent)(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind);
    /* Bytes the storage uses on the host (st_blocks*512), or <0 if unknown. */
    int64_t (*allocated_size)(struct qimg_io *io);
    /* Copy offload (copy_file_range); may return -ENOTSUP. */
    int (*copy_range)(struct qimg_io *src, uint64_t soff, struct qimg_io *dst,
                      uint64_t doff, uint64_t len);
    /* qemu's lock protocol: hold the permissions in take, refuse to share
     * those in unshare (QIMG_PERM_* bits); fails when another process
     * conflicts. */
    int (*lock)(struct qimg_io *io, unsigned take, unsigned unshare);
    void (*hint)(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len);
    void (*event)(struct qimg_io *io, enum qimg_io_event ev);
    /* Same underlying object as b (b has the same ops)?  NULL: same name. */
    bool (*same)(struct qimg_io *a, struct qimg_io *b);
    void (*close)(struct qimg_io *io);
    /* The name that opens this very storage again, as qemu shows it for an
     * image given by options ("blkdebug:RULES:IMAGE", "./a:b" for a local
     * file whose name looks like a protocol); NULL when options are needed
     * (malloc'ed). */
    char *(*exact_filename)(struct qimg_io *io);
    /* The directory relative names next to this storage resolve against,
     * as a prefix to put before them ("/dir/", "", "image:"); malloc'ed,
     * NULL with an error when it cannot be known.  NULL op: the prefix of
     * the exact filename (or the name).  A filter answers for its child. */
    char *(*dirname)(struct qimg_io *io);
    /* Not a protocol in qemu (quorum): an option it does not take is
     * reported as a format's ("Block format 'x' does not ..."), its
     * extents have no host offset (map shows none) and it has no "dirty"
     * information for info. */
    bool not_protocol;
    /* The bytes are made, not stored (vvfat): extents have no host offset
     * (map shows none) and there is no "dirty" information for info. */
    bool synthesized;
    /* More protocol names that select this backend (nbd: "nbd+unix" ...),
     * NULL-terminated, or NULL. */
    const char *const *protocols;
    /* Creating an image on it opens what exists (qemu's "simple" create of
     * protocols that cannot make storage: nbd): the new image's size must
     * fit, preallocation is refused, the first sector is zeroed. */
    bool create_by_opening;
    /* qemu's driver answers no "get info" (curl, nbd): info over it shows
     * no dirty flag. */
    bool no_info;
    /* No write path at all (curl): pwrite, zero, discard, truncate and
     * preallocate are NULL and open refuses QIMG_IO_RDWR. */
    bool read_only;
    /* qemu names an image on this storage by its options (json:{...}),
     * even one given as a name string (rbd: keeps no filename). */
    bool json_name;
    /* The protocol's create options, merged after a format's own (NULL:
     * the file protocol's size, nocow, preallocation, extent_size_hint). */
    const struct qimg_opt_desc *create_opts;
    /* info's cluster_size of a raw image on this storage (rbd's object
     * size); NULL or <=0: none. */
    int64_t (*cluster_size)(struct qimg_io *io);
    /* Snapshots of the storage itself, which a format without snapshots of
     * its own (raw) passes down to as qemu does (its fallback to the
     * file).  Snapshots are named: id and name are the same. */
    int (*snapshot_list)(struct qimg_io *io, struct qimg_snapshot_info **list, size_t *n);
    int (*snapshot_create)(struct qimg_io *io, const char *name);
    int (*snapshot_apply)(struct qimg_io *io, const char *name);
    int (*snapshot_delete)(struct qimg_io *io, const char *name);
    /* What changed since the storage's snapshot `since`: the extent at off
     * (at most len) changed or not, its length in *pnum.  Reads nothing but
     * the storage's own metadata (rbd's object map).  -ENOTSUP: the
     * storage cannot tell. */
    int (*changed_extent)(struct qimg_io *io, const char *since, uint64_t off, uint64_t len,
                          uint64_t *pnum, bool *changed);
    /* Writes in guest order buy nothing here (no file layout, each
     * request a network round trip: rbd): convert into raw on it writes
     * as -W does. */
    bool unordered_writes;
    /* Each request waits on a server across a network (nbd, http, rbd):
     * convert keeps as many requests in flight as -m asks, however few the
     * CPUs, since the threads mostly wait. */
    bool remote;
};

/* Permission bits of qemu's image locking (byte 100+bit held, 200+bit
 * refused to others). */
enum { QIMG_PERM_READ = 1u << 0, QIMG_PERM_WRITE = 1u << 1, QIMG_PERM_RESIZE = 1u << 3 };

struct qimg_io {
    const struct qimg_io_ops *ops;
    char *filename;         /* as given (file: the local path) */
    unsigned flags;         /* enum qimg_io_open_flags */
    uint32_t align;         /* required I/O alignment (512 or 4096 with O_DIRECT, else 1) */
    void *priv;             /* backend state */
};

/* The registry (io.c), NULL-terminated. */
extern const struct qimg_io_ops *const qimg_io_backends[];
const struct qimg_io_ops *qimg_io_backend_find(const char *name);

/* The option tree a storage name given as a string stands for, as qemu
 * reads such a name: "PROTO:..." (a colon before any slash) picks the
 * backend named PROTO, whose parse_filename turns the name into options
 * ("file:a:b" -> filename=./a:b, "blkdebug:RULES:IMAGE"), with "driver"
 * set; an unknown PROTO is qemu's "Unknown protocol 'PROTO'"; anything
 * else is {filename=NAME}, a local file.  A "filename" inside json: or
 * --image-opts is never read this way: it names a local file as it is. */
int qimg_io_name_opts(qimg_opts **opts, const char *name);
/* The backend such a name selects (the file backend for a plain name);
 * NULL with the "Unknown protocol" error. */
const struct qimg_io_ops *qimg_io_protocol(const char *name);
/* The tree of a name given as a string to a backend chosen by name (-f
 * file NAME): the backend's parse_filename reads it, prefix or not. */
int qimg_io_name_opts_for(qimg_opts **opts, const struct qimg_io_ops *ops, const char *name);
/* Open a storage object by name (qimg_io_name_opts).  FIFOs, sockets,
 * directories and devices we cannot use are refused without blocking. */
int qimg_io_open(struct qimg_io **out, const char *filename, unsigned flags);
/* Open from an option tree relative to the storage node: "driver" (absent:
 * a local file), "filename" and the backend's keys.  Keys
 * nobody uses stay unused in opts for the caller to report. */
int qimg_io_open_opts(struct qimg_io **out, qimg_opts *opts, unsigned flags);
/* Create and open a new storage object by name; the protocol's own create
 * options (create_opts but size: rbd's cluster_size) are taken from
 * create_opts. */
int qimg_io_open_new(struct qimg_io **out, const char *filename, qimg_opts *create_opts,
                     unsigned flags);
void qimg_io_close(struct qimg_io *io);
/* Same underlying object (backing chain loop detection). */
bool qimg_io_same(struct qimg_io *a, struct qimg_io *b);

int qimg_io_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off);
int qimg_io_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off);
int qimg_io_zero(struct qimg_io *io, uint64_t off, uint64_t len, bool may_unmap);
/* Zero efficiently keeping the range allocated; -ENOTSUP (and nothing
 * done) when the storage cannot. */
int qimg_io_zero_fast(struct qimg_io *io, uint64_t off, uint64_t len);
int qimg_io_discard(struct qimg_io *io, uint64_t off, uint64_t len);
int qimg_io_flush(struct qimg_io *io);
int qimg_io_get_size(struct qimg_io *io, uint64_t *size);
int qimg_io_truncate(struct qimg_io *io, uint64_t size);
int qimg_io_preallocate(struct qimg_io *io, uint64_t off, uint64_t len, bool full);
int qimg_io_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind);
int64_t qimg_io_allocated_size(struct qimg_io *io);
/* Zero a range by writing zero buffers (the default for backends without
 * an efficient zero). */
int qimg_io_write_zero_buffers(struct qimg_io *io, uint64_t off, uint64_t len);
/* See exact_filename; NULL when the backend cannot name itself. */
char *qimg_io_exact_filename(struct qimg_io *io);
/* See dirname: never NULL but with an error set. */
char *qimg_io_dirname(struct qimg_io *io);
int qimg_io_copy_range(struct qimg_io *src, uint64_t soff, struct qimg_io *dst,
                       uint64_t doff, uint64_t len);
int qimg_io_lock(struct qimg_io *io, unsigned take, unsigned unshare);
void qimg_io_hint(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len);
void qimg_io_event(struct qimg_io *io, enum qimg_io_event ev);

extern const struct qimg_io_ops qimg_io_file_ops;
extern const struct qimg_io_ops qimg_io_null_co_ops;
extern const struct qimg_io_ops qimg_io_null_aio_ops;
extern const struct qimg_io_ops qimg_io_blkdebug_ops;
extern const struct qimg_io_ops qimg_io_quorum_ops;
extern const struct qimg_io_ops qimg_io_vvfat_ops;
extern const struct qimg_io_ops qimg_io_nbd_ops;
extern const struct qimg_io_ops qimg_io_http_ops;
extern const struct qimg_io_ops qimg_io_https_ops;
extern const struct qimg_io_ops qimg_io_ftp_ops;
extern const struct qimg_io_ops qimg_io_ftps_ops;
extern const struct qimg_io_ops qimg_io_rbd_ops;

/* The storage below a blkdebug filter, NULL for any other backend. */
struct qimg_io *qimg_io_blkdebug_child(struct qimg_io *io);
/* image-io.c: a storage tree whose "driver" names a format: the guest disk
 * of that image as storage (under a filter: json:{"driver":"blkdebug",
 * "image":{"driver":"qcow2",...}}); and does io hold such an image (itself
 * or below its filters)? */
int qimg_io_open_image(struct qimg_io **out, qimg_opts *opts, unsigned ioflags);
bool qimg_io_holds_image(struct qimg_io *io);
/* The format node under img when img is a filter over one (blkdebug over
 * a qcow2 node), else NULL. */
qimg_image *qimg_filtered_image(qimg_image *img);

/* http-parse.c: what the curl backends (curl.c) read from users and
 * servers.  qemu's check that a URL starts with "PROTO://" (error set);
 * is a response header line (not NUL-terminated) "Accept-Ranges: bytes"?;
 * "Content-Range: bytes FIRST-LAST/TOTAL": 1 with first and last, 0 for
 * another header, -EINVAL when malformed. */
int qimg_http_url_check(const char *proto, const char *url);
bool qimg_http_accepts_ranges(const char *line, size_t len);
int qimg_http_content_range(const char *line, size_t len, uint64_t *first, uint64_t *last);

#endif
