/* qimg - internal interfaces: storage backends (struct qimg_io),
 * format drivers (struct qimg_driver) and the image node (struct qimg_image).
 * See docs/architecture.md for how they fit together. */
#ifndef QIMG_INTERNAL_H
#define QIMG_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"

/* ================================================================ errors */

/* Set this thread's error message and return err (a negative errno), so
 * callers write:  return qimg_error(-EINVAL, "bad %s", x);  */
int qimg_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Put "prefix: " in front of the current message (keeps errno). */
void qimg_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Set an error from errno text: "<msg>: <strerror>". */
int qimg_error_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A warning through the handler of qimg_set_warn_handler (qimg.h). */
void qimg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

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
    QIMG_IO_STREAM = 1u << 8,   /* read once, front to back: bypass the cache (file.c) */
};

/* Extent kinds from the storage (SEEK_DATA/SEEK_HOLE for files).
 * UNKNOWN: the storage cannot say (null-co without read-zeroes); raw
 * reports such a range as neither data nor zero, as qemu does. */
enum { QIMG_IO_EXT_DATA = 1, QIMG_IO_EXT_HOLE = 2, QIMG_IO_EXT_UNKNOWN = 3 };

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

/* Open a storage object by name: "null-co://", "null-aio://",
 * "blkdebug:RULES:IMAGE", "file:NAME" pick their backend, anything else is
 * a local file.  FIFOs, sockets, directories and devices we cannot use
 * are refused without blocking. */
int qimg_io_open(struct qimg_io **out, const char *filename, unsigned flags);
/* Open from an option tree relative to the storage node: "driver" (absent:
 * from the filename's prefix), "filename" and the backend's keys.  Keys
 * nobody uses stay unused in opts for the caller to report. */
int qimg_io_open_opts(struct qimg_io **out, qimg_opts *opts, unsigned flags);
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
int qimg_io_copy_range(struct qimg_io *src, uint64_t soff, struct qimg_io *dst,
                       uint64_t doff, uint64_t len);
int qimg_io_lock(struct qimg_io *io, unsigned take, unsigned unshare);
void qimg_io_hint(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len);
void qimg_io_event(struct qimg_io *io, enum qimg_io_event ev);

extern const struct qimg_io_ops qimg_io_file_ops;
extern const struct qimg_io_ops qimg_io_null_co_ops;
extern const struct qimg_io_ops qimg_io_null_aio_ops;
extern const struct qimg_io_ops qimg_io_blkdebug_ops;

/* ========================================================= option lists */

enum qimg_opt_type { QIMG_OPT_STRING, QIMG_OPT_SIZE, QIMG_OPT_BOOL, QIMG_OPT_NUMBER };

/* One create/amend option of a driver, in the order qemu lists it. */
struct qimg_opt_desc {
    const char *name;
    enum qimg_opt_type type;
    const char *help;            /* text after "- " in -o help */
    const char *def_value;       /* printed in "Formatting" when not given; NULL = omit */
};

/* A parsed option list: ordered name=value pairs (later values win). */
struct qimg_opt_pair { char *name; char *value; bool used; };
struct qimg_opts {
    struct qimg_opt_pair *v;
    size_t n, cap;
};

/* Typed getters; they mark the option used.  Return 0 when absent (out
 * untouched), 1 when found, <0 with an error set on a bad value. */
int qimg_opts_get_bool(qimg_opts *o, const char *name, bool *out);
int qimg_opts_get_number(qimg_opts *o, const char *name, uint64_t *out);
int qimg_opts_get_string(qimg_opts *o, const char *name, const char **out);
/* Options under "prefix." with the prefix removed (a bare "prefix" key
 * becomes "filename"), marked used in o; NULL when none.  This is how an
 * option tree (flattened dotted keys, as json:{...} and --image-opts give
 * them) is handed down one layer: image -> driver -> child -> storage. */
qimg_opts *qimg_opts_subtree(qimg_opts *o, const char *prefix);
qimg_opts *qimg_opts_copy(const qimg_opts *o);
/* First option not used by anyone, or NULL (for "Invalid parameter 'x'"). */
const char *qimg_opts_first_unused(const qimg_opts *o);
/* The same in the order qemu reports it (its dictionary's hash order). */
const char *qimg_opts_first_unused_qemu(const qimg_opts *o);
/* True when text is "help" or "?" (qemu's -o help). */
bool qimg_opts_is_help(const char *text);

static inline void qimg_cleanup_opts(qimg_opts **o) { qimg_opts_free(*o); }
#define CLEANUP_OPTS __attribute__((cleanup(qimg_cleanup_opts)))

/* qimg_keyval_parse (qimg.h); with bare_is_error a non-first key without "=" fails with
 * qemu's "Expected '=' after parameter 'x'" (as --object does). */
int qimg_keyval_parse_strict(qimg_opts **opts, const char *text, const char *implied_key,
                             bool bare_is_error);
/* The value json's null leaves for a "backing" key ("backing": null:
 * no backing image); no text option can spell it. */
#define QIMG_OPTS_NULL "\001null"
/* Parse a "json:{...}" filename into flattened dotted keys
 * ({"file":{"filename":"x"}} -> file.filename=x). */
int qimg_json_filename_parse(qimg_opts **opts, const char *json_text);

/* The store of --object secrets (qimg_object_add). */
/* Secret bytes by id (malloc'ed, NUL-terminated, *len set). */
int qimg_secret_lookup(const char *id, char **data, size_t *len);

/* ============================================================ JSON output */

/* A small value tree printed exactly as qemu prints a QObject:
 * objects print their keys in QDict hash order (see json.c). */
enum qimg_json_type { QIMG_JSON_OBJECT, QIMG_JSON_ARRAY, QIMG_JSON_STRING,
                      QIMG_JSON_INT, QIMG_JSON_UINT, QIMG_JSON_BOOL, QIMG_JSON_DOUBLE };
/* Building and printing: qimg.h. */
struct qimg_json *qimg_json_get(const struct qimg_json *obj, const char *key);
struct qimg_json *qimg_json_double(double v);   /* prints as %.17g */
/* One-line form as in qemu's json:{...} filenames: {"a": 1, "b": [1, 2]}. */
char *qimg_json_to_string_compact(const struct qimg_json *v);
/* qemu's human "QDict dump" used for "Format specific information:":
 * appended to *out at the given indent (spaces). */
void qimg_json_dump_human(const struct qimg_json *v, int indent, char **out);
/* The QDict bucket of a key: tdb hash % 512 (exposed for tests). */
unsigned qimg_json_key_bucket(const char *key);

/* A growable string buffer. */
struct qimg_strbuf { char *s; size_t len, cap; };
void qimg_strbuf_addf(struct qimg_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qimg_strbuf_add(struct qimg_strbuf *b, const char *s);

/* ============================================================ drivers */

struct qimg_image;
struct qimg_bitmap_info;   /* defined in qimg.h */

/* What a driver reports for info. */
struct qimg_driver_info {
    int64_t cluster_size;           /* >0 to print cluster_size */
    bool has_dirty;                 /* print dirty-flag */
    bool dirty;
    bool encrypted;
    struct qimg_json *format_specific; /* {type, data} or NULL; caller frees */
};


/* Values a driver's create sees (already typed and validated by the core). */
struct qimg_create_ctx {
    const char *filename;
    uint64_t size;
    const char *backing_file;
    const char *backing_fmt;
    qimg_opts *opts;          /* remaining driver options; mark used */
    const char *prealloc;     /* "off" unless given */
};



enum qimg_driver_flags {
    /* The image is the guest disk itself, with no metadata of its own
     * (raw): it shares write and resize with other processes, takes the
     * file protocol's preallocation modes and may use copy offload. */
    QIMG_DRV_NO_METADATA = 1u << 0,
    QIMG_DRV_SUPPORTS_BACKING = 1u << 1,
    /* No write support at all: opening read-write fails, probed or not,
     * and the driver has no write, write_zeroes, discard nor create. */
    QIMG_DRV_READ_ONLY = 1u << 2,
};

/*
 * A format driver.  Only name, probe, open, close, read and block_status
 * are required; every other callback may be NULL, meaning "not supported"
 * (the core then gives qemu-img's error for that operation).
 * Fields are only ever appended.
 */
struct qimg_driver {
    const char *name;
    unsigned flags;                   /* enum qimg_driver_flags */
    const struct qimg_opt_desc *create_opts;  /* NULL-name terminated, qemu order */
    const struct qimg_opt_desc *amend_opts;

    /* Score 0..100 from the first bytes (len <= 512), the file size and the
     * name: highest wins, raw answers 1. */
    int (*probe)(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename);

    /* img->file is open; fill img->size, img->opaque, backing names.
     * opts: the node's option tree without "driver" and the "file" and
     * "backing" subtrees (already marked used); the driver marks what it
     * takes (qimg_opts_get_*) and hands child subtrees ("data-file") to
     * qimg_open_child; the image layer reports the first option left. */
    int (*open)(struct qimg_image *img, qimg_opts *opts, unsigned flags);
    void (*close)(struct qimg_image *img);

    int (*create)(struct qimg_create_ctx *ctx);

    /* Guest I/O inside [0, img->size).  read handles unallocated ranges by
     * calling qimg_read_backing(). */
    int (*read)(struct qimg_image *img, uint64_t off, void *buf, size_t len);
    int (*write)(struct qimg_image *img, uint64_t off, const void *buf, size_t len);
    int (*write_zeroes)(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags);
    int (*discard)(struct qimg_image *img, uint64_t off, uint64_t len);
    int (*flush)(struct qimg_image *img);

    /* Status of this layer only from off: set ext->length (>0, <= len),
     * flags (DATA/ZERO/ALLOCATED/OFFSET/COMPRESSED), host_offset, host_file. */
    int (*block_status)(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext);

    int (*info)(struct qimg_image *img, struct qimg_driver_info *info);
    int (*check)(struct qimg_image *img, struct qimg_check_result *res, unsigned fix);
    int (*resize)(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink);
    int (*amend)(struct qimg_image *img, qimg_opts *opts, bool force, qimg_progress_fn progress, void *opaque);
    /* size given: measure a new image of that size; src given: of its content */
    int (*measure)(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out);

    int (*snapshot_list)(struct qimg_image *img, struct qimg_snapshot_info **list, size_t *n);
    int (*snapshot_create)(struct qimg_image *img, const char *name);
    int (*snapshot_apply)(struct qimg_image *img, const char *id_or_name);
    int (*snapshot_delete)(struct qimg_image *img, const char *id, const char *name);

    /* Change the recorded backing file (rebase -u). */
    int (*change_backing)(struct qimg_image *img, const char *backing, const char *fmt);
    /* Empty the image after commit (qcow2, qcow, vdi). */
    int (*make_empty)(struct qimg_image *img);
    /* Does a new image read as zeros? (raw on a fresh file: yes) */
    bool (*has_zero_init)(struct qimg_image *img);

    /* Persistent dirty bitmaps (qemu-img bitmap).  A driver without
     * bitmap_add cannot store bitmaps; without bitmap_list it has none.
     * Names are checked by the core (non-empty); granularity is a power of
     * two >= 512, chosen by the core when the user gave none. */
    int (*bitmap_list)(struct qimg_image *img, struct qimg_bitmap_info **list, size_t *n);
    int (*bitmap_add)(struct qimg_image *img, const char *name, uint32_t granularity);
    int (*bitmap_remove)(struct qimg_image *img, const char *name);
    int (*bitmap_clear)(struct qimg_image *img, const char *name);
    int (*bitmap_set_enabled)(struct qimg_image *img, const char *name, bool enabled);
    /* First dirty byte range at or after off: 0 with start and len set, or 1
     * when the rest of the bitmap is clean. */
    int (*bitmap_next_dirty)(struct qimg_image *img, const char *name, uint64_t off,
                             uint64_t *start, uint64_t *len);
    /* Mark [off, off+len) dirty (rounded out to the granularity). */
    int (*bitmap_set_dirty)(struct qimg_image *img, const char *name, uint64_t off, uint64_t len);

    /* Compressed clusters (convert -c).  compress: one whole cluster (or
     * the disk's last, partial one) into out (cluster_size bytes); -ENOSPC
     * when it does not get smaller.  No lock, any thread.  write_compressed:
     * store what compress made for the cluster at off. */
    int (*compress)(struct qimg_image *img, const void *buf, size_t len, void *out, size_t *out_len);
    int (*write_compressed)(struct qimg_image *img, uint64_t off, const void *data, size_t len);

    /* Bitmaps: write what bitmap_set_dirty changed in memory (merge calls
     * it once at the end).  bitmap_set_dirty with len 0 only checks that
     * the bitmap can take changes. */
    int (*bitmap_store)(struct qimg_image *img);
    /* Can this image hold persistent bitmaps? (qcow2: version 3 only) */
    bool (*bitmap_supported)(struct qimg_image *img);
};

/* The registry: one explicit table (src/formats/registry.c). */
extern const struct qimg_driver *const qimg_drivers[];
const struct qimg_driver *qimg_driver_find(const char *name);
/* Probe the file's first bytes: the best driver (raw as fallback). */
const struct qimg_driver *qimg_driver_probe(const uint8_t *buf, size_t len,
                                            uint64_t file_size, const char *filename);

extern const struct qimg_driver qimg_driver_raw;
extern const struct qimg_driver qimg_driver_qcow2;

/* ====================================================== capability layer */

/* driver.c: the core asks a driver what it can do and calls its optional
 * callbacks only through these, so a new driver answers once and every
 * command follows.  Each wrapper decides in one place what a missing
 * callback means, with qemu-img's message. */
bool qimg_drv_can(const struct qimg_driver *drv, enum qimg_capability cap);
static inline bool qimg_drv_has_metadata(const struct qimg_driver *drv)
{ return !(drv->flags & QIMG_DRV_NO_METADATA); }

int qimg_drv_create(const struct qimg_driver *drv, struct qimg_create_ctx *ctx);
int qimg_drv_measure(const struct qimg_driver *drv, qimg_opts *opts, struct qimg_image *src,
                     uint64_t size, struct qimg_measure *out);
/* info zeroed first; a driver without info reports nothing (0). */
int qimg_drv_info(struct qimg_image *img, struct qimg_driver_info *info);
int qimg_drv_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix);
int qimg_drv_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink);
int qimg_drv_amend(struct qimg_image *img, qimg_opts *opts, bool force,
                   qimg_progress_fn progress, void *opaque);
int qimg_drv_change_backing(struct qimg_image *img, const char *backing, const char *fmt);
int qimg_drv_make_empty(struct qimg_image *img);          /* -ENOTSUP when it cannot */

int qimg_drv_snapshot_list(struct qimg_image *img, struct qimg_snapshot_info **list, size_t *n);
int qimg_drv_snapshot_create(struct qimg_image *img, const char *name);
int qimg_drv_snapshot_apply(struct qimg_image *img, const char *id_or_name);
int qimg_drv_snapshot_delete(struct qimg_image *img, const char *id, const char *name);

/* A driver without bitmap_list has no bitmaps (an empty list). */
int qimg_drv_bitmap_list(struct qimg_image *img, struct qimg_bitmap_info **list, size_t *n);
int qimg_drv_bitmap_add(struct qimg_image *img, const char *name, uint32_t granularity);
int qimg_drv_bitmap_remove(struct qimg_image *img, const char *name);
int qimg_drv_bitmap_clear(struct qimg_image *img, const char *name);
int qimg_drv_bitmap_set_enabled(struct qimg_image *img, const char *name, bool enabled);
int qimg_drv_bitmap_next_dirty(struct qimg_image *img, const char *name, uint64_t off,
                               uint64_t *start, uint64_t *len);
int qimg_drv_bitmap_set_dirty(struct qimg_image *img, const char *name, uint64_t off, uint64_t len);
int qimg_drv_bitmap_store(struct qimg_image *img);        /* nothing to store: 0 */
bool qimg_drv_bitmap_supported(struct qimg_image *img);

int qimg_drv_compress(struct qimg_image *img, const void *buf, size_t len, void *out,
                      size_t *out_len);
int qimg_drv_write_compressed(struct qimg_image *img, uint64_t off, const void *data, size_t len);

/* ============================================================ image node */

struct qimg_image {
    const struct qimg_driver *drv;
    void *opaque;                   /* driver state */
    struct qimg_io *file;           /* the storage holding the image */
    char *filename;                 /* as opened (or json:{...}) */
    uint64_t size;                  /* virtual size, set by open */
    unsigned flags;                 /* enum qimg_open_flags */
    bool read_only;
    bool probed_raw;                /* guard block 0 against format headers */

    /* backing: names as recorded in the image (set by driver open) */
    char *backing_file;             /* NULL when none */
    char *backing_fmt;              /* NULL when not recorded */
    char *full_backing_filename;    /* resolved against the image's dir */
    struct qimg_image *backing;     /* opened chain (NULL with NO_BACKING) */

    qimg_opts *node_opts;           /* the option tree this node was opened
                                       with, unmarked (qimg_reopen_rw) */
    qimg_opts *backing_opts;        /* the user's "backing" subtree, or NULL */
    char *backing_ref;              /* a bare "backing=NAME" (a node reference) */
    bool no_backing;                /* "backing": null */

    pthread_mutex_t lock;           /* drivers serialize metadata with it */
};

/* qemu's three-line warning when probing guessed raw for an image
 * opened for writing. */
void qimg_warn_probed_raw(const char *filename);

/* Read [off, off+len) of img's backing image into buf: zeros where there
 * is no backing image or past its end.  Drivers call it for unallocated
 * ranges. */
int qimg_read_backing(struct qimg_image *img, uint64_t off, void *buf, size_t len);

/* qimg_open_backing_chain (qimg.h) is depth-limited and loop-detected. */

/* Close img's driver and storage and open both again read-write in place
 * from the same option tree, keeping the layers below (commit writes into
 * a backing layer).  cache_flags: QIMG_OPEN_CACHE_* to use. */
int qimg_reopen_rw(struct qimg_image *img, unsigned cache_flags);

/* ---- child files: one policy for every file an image names ----
 *
 * kind says what the parent's metadata names: a backing image, an
 * external data file (qcow2), later VMDK extents and VHD parents.
 *
 *  - user_opts: the subtree the user gave for this child (--image-opts or
 *    json: keys such as backing.file.filename, data-file.filename); it is
 *    used as given, in any mode, and name_in_image is ignored.
 *  - otherwise name_in_image, the name stored in the image:
 *    * refused in safe mode (unless the user named that file with -b/-B,
 *      see qimg_safe_allow_file);
 *    * a data file or extent name is a plain local path, never json: or a
 *      protocol (CVE-2024-4467): {driver=file, filename=NAME};
 *    * a backing name keeps qemu's forms: json:{...} is parsed into the
 *      child's tree, a protocol prefix picks a storage backend, a plain name
 *      is resolved against the parent's directory (qimg_path_combine);
 *  - FIFOs, sockets and directories are refused by the file backend before
 *    anything blocks.
 *
 * qimg_child_opts gives the child's option tree (an image node for
 * QIMG_CHILD_BACKING, a storage node otherwise; *out NULL: no child) and
 * its display name; qimg_open_child opens a storage child with ioflags and
 * reports options nobody used ("Block protocol 'file' doesn't support the
 * option 'x'").  *out is NULL (and 0 returned) when there is no child. */
enum qimg_child_kind {
    QIMG_CHILD_BACKING,
    QIMG_CHILD_DATA_FILE,
    QIMG_CHILD_EXTENT,
    QIMG_CHILD_PARENT_LOCATOR,
};
int qimg_child_opts(struct qimg_image *parent, enum qimg_child_kind kind,
                    const char *name_in_image, const qimg_opts *user_opts,
                    qimg_opts **out, char **display);
int qimg_open_child(struct qimg_image *parent, enum qimg_child_kind kind,
                    const char *name_in_image, qimg_opts *user_opts, unsigned ioflags,
                    struct qimg_io **out);
/* May a child the image names be opened?  0, or the safe-mode error. */
int qimg_child_permitted(struct qimg_image *parent, enum qimg_child_kind kind,
                         const char *name_in_image);
/* Is safe mode on for this image (process-wide or QIMG_OPEN_SAFE)? */
bool qimg_image_safe(const struct qimg_image *img);
/* A file the user named (-b, -B): safe mode lets images name it. */
void qimg_safe_allow_file(const char *path);
/* Mark the options every node accepts (node-name, read-only, cache.*...). */
void qimg_opts_take_common(qimg_opts *o);
/* Open a storage node from its tree and report an option left unused. */
int qimg_open_storage(struct qimg_io **out, qimg_opts *opts, unsigned ioflags);

/* The per-open budget of safe mode (thread-local): begin/end nest (the
 * outermost decides whether it is active: safe); while active,
 * qimg_alloc_from_image charges it, and every charge or qimg_budget_check
 * checks the deadline. */
void qimg_budget_begin(bool safe);
void qimg_budget_end(void);
int qimg_budget_check(void);

/* Byte-size limit of one chain. */
#define QIMG_MAX_CHAIN_DEPTH 1000

/* ============================================================ targets */

/* A new image written under a temporary name, renamed into place when
 * complete (target.c; the public calls are in qimg.h).  Paths that are not
 * plain local files (json:, protocols, devices, dangling symlinks) are
 * written in place (tmp NULL). */
struct qimg_target {
    const char *name;             /* as the user gave it */
    char *final;                  /* where it ends up (symlinks resolved) */
    char *tmp;                    /* written under this name, or NULL: in place */
    bool existed;                 /* name was there before */
    bool local;                   /* a local path (not json: nor a protocol) */
    bool replaces;                /* final exists: its mode is kept */
    mode_t mode;
};
/* A target on the stack: plan fills it, release frees what it holds. */
void qimg_target_plan(struct qimg_target *t, const char *name);
void qimg_target_release(struct qimg_target *t);

/* ============================================================ threads */

/* convert -D (convert-diff.c), called by qimg_convert */
int qimg_convert_diff(const struct qimg_convert_params *p, unsigned nthreads);

struct qimg_pool;
/* A fixed pool of n worker threads running jobs from a queue. */
int qimg_pool_new(struct qimg_pool **out, unsigned nthreads);
int qimg_pool_submit(struct qimg_pool *p, void (*fn)(void *), void *arg);
void qimg_pool_wait(struct qimg_pool *p);      /* until the queue is empty and idle */
void qimg_pool_free(struct qimg_pool *p);      /* waits, joins */

/* ============================================================ chains */

/* Is [off, off+len) allocated in a layer from top down to (not including)
 * base (NULL = the whole chain)?  1 yes, 0 no, <0 error; *pnum is the
 * length of the prefix with that answer.  A layer shorter than the range
 * reads as zeros there, which counts as allocated in it (as in qemu). */
int qimg_chain_is_allocated_above(qimg_image *top, qimg_image *base, uint64_t off,
                                  uint64_t len, uint64_t *pnum);

/* ============================================================ commands */

/* check.c: drivers report each problem a check finds with qimg_check_log;
 * the handler of qimg_check_set_log (qimg.h) prints it. */
void qimg_check_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
