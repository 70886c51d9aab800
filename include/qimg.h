/* qimg - disk image library.
 *
 * Conventions: every function that can fail returns 0 (or a non-negative
 * count) on success and a negative errno on failure; the failure's message
 * is kept per thread and read with qimg_last_error().  Handles are opaque.
 */
#ifndef QIMG_H
#define QIMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QIMG_VERSION_MAJOR 0
#define QIMG_VERSION_MINOR 1
#define QIMG_VERSION_PATCH 0
#define QIMG_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- errors */

/* Message of the last failure in this thread ("" when none). */
const char *qimg_last_error(void);
/* errno of the last failure in this thread (positive), 0 when none. */
int qimg_last_errno(void);
/* Forget this thread's last failure (after one the caller chose to ignore). */
void qimg_error_clear(void);

/* The library prints nothing: its warnings (a probed raw image opened for
 * writing, a dirty image repaired...) go to this handler, one message
 * without a trailing newline.  None is installed: warnings are dropped.
 * A message starting with "WARNING:" is meant to be printed as it is;
 * one starting with "ERROR: " is an error line that does not stop the
 * operation (qemu's error_report at close: "PROG: rest"); others are
 * qemu's "warning: ..." lines, where a second line on is a note qemu
 * prints after the warning as it is, without a newline of its own. */
typedef void (*qimg_warn_fn)(const char *msg);
void qimg_set_warn_handler(qimg_warn_fn fn);

/* ------------------------------------------------------------ open/close */

typedef struct qimg_image qimg_image;

enum qimg_open_flags {
    QIMG_OPEN_RDWR        = 1u << 0,  /* read-write; default read-only */
    QIMG_OPEN_NO_BACKING  = 1u << 1,  /* do not open the backing chain */
    QIMG_OPEN_FORCE_SHARE = 1u << 2,  /* -U: take no locks (read-only only) */
    QIMG_OPEN_NO_IO       = 1u << 3,  /* metadata only (info) */
    QIMG_OPEN_CACHE_DIRECT = 1u << 4, /* O_DIRECT (cache none / directsync) */
    QIMG_OPEN_CACHE_SYNC  = 1u << 5,  /* O_DSYNC (writethrough / directsync) */
    QIMG_OPEN_CACHE_UNSAFE = 1u << 6, /* never flush */
    QIMG_OPEN_NO_PROBE_WARNING = 1u << 7, /* do not print the probed-raw warning */
    QIMG_OPEN_CHECK       = 1u << 8,  /* for check -r: a corrupt image opens read-write
                                         and a dirty one is not repaired at open */
    QIMG_OPEN_STREAM      = 1u << 9,  /* a hint: the data is read once, in order, or (with
                                         RDWR) written once (convert); local files not
                                         already in the page cache are read around it
                                         (O_DIRECT), rbd writes go around librbd's cache */
    QIMG_OPEN_SAFE        = 1u << 10, /* safe mode for this open (see qimg_set_safe_mode) */
    QIMG_OPEN_UNMAP       = 1u << 11, /* discard=unmap: storage a zero write frees is
                                         discarded below too (qemu-img's convert target
                                         and commit chain) */
    QIMG_OPEN_NO_SHARE    = 1u << 12, /* refuse others write and resize on this image
                                         (not its backing files), as qemu-img's convert
                                         does for its sources: converting onto a source
                                         fails as in qemu-img, never destroys it */
};

/* What this build has: storage backends (file, null-co, blkdebug...) by
 * index (NULL past the end), compression codecs ("deflate zlib zstd ..."),
 * and the optional libraries it was built without ("zstd bzip2", "" when
 * none), as named by scripts/configure. */
const char *qimg_protocol_name(size_t i);
const char *qimg_codecs(void);
const char *qimg_features_lacking(void);

/* Safe mode: an image may not make qimg open a file the user did not name
 * (backing files, external data files; a child given through
 * --image-opts/json: keys such as backing.file.filename, or as -b/-B, is
 * allowed), and opening an image is bounded in memory and time
 * (QIMG_SAFE_MEM, default 512 MiB; QIMG_SAFE_SECONDS, default 30).
 * Process-wide (the CLI: --safe, QIMG_SAFE=1); QIMG_OPEN_SAFE asks for it
 * on one open. */
void qimg_set_safe_mode(bool on);
bool qimg_safe_mode(void);
/* Extent files an image names (VMDK) must be regular files inside the
 * image's directory: a name that is absolute, climbs out with "..", or
 * leads (through symbolic links) outside it, or a device, FIFO, socket or
 * directory, is refused (OpenStack's CVE-2024-32498), unless this is on
 * (the CLI: QIMG_ALLOW_EXTERNAL_EXTENTS=1) or the user names the file
 * (extents.N.filename=...). */
void qimg_set_allow_external_extents(bool on);
/* May img's recorded backing file be opened (info --backing-chain walks the
 * chain itself)?  0, or <0 with the safe-mode error set. */
int qimg_backing_permitted(qimg_image *img);

/* Open an image.  fmt may be NULL to probe.  filename may be a plain path,
 * a "json:{...}" filename, or (with QIMG_OPEN_IMAGE_OPTS semantics through
 * qimg_open_opts) an option string. */
int qimg_open(qimg_image **out, const char *filename, const char *fmt, unsigned flags);
/* Open from an --image-opts string "driver=raw,file.filename=x,...". */
int qimg_open_opts(qimg_image **out, const char *optstr, unsigned flags);
/* Close an image and its backing chain; returns the first flush error. */
int qimg_close(qimg_image *img);

/* ------------------------------------------------------------------- I/O */

uint64_t qimg_size(const qimg_image *img);            /* virtual size */
const char *qimg_filename(const qimg_image *img);
const char *qimg_format(const qimg_image *img);        /* "raw", "qcow2"... */
qimg_image *qimg_backing(const qimg_image *img);       /* NULL when none */
/* The backing file as the image records it (NULL when none), the same
 * name resolved against the image's directory, and the recorded format
 * (NULL when not recorded).  Known without opening the chain. */
const char *qimg_backing_filename(const qimg_image *img);
const char *qimg_full_backing_filename(const qimg_image *img);
const char *qimg_backing_format(const qimg_image *img);
/* Open the backing chain of an image opened with QIMG_OPEN_NO_BACKING
 * (0 when it records none). */
int qimg_open_backing_chain(qimg_image *img);
/* name resolved as img resolves its own backing file name (relative to the
 * directory of its file); malloc'ed. */
char *qimg_backing_path(const qimg_image *img, const char *name);
/* A backing name resolved against the directory of the image file that
 * names it, as qemu does: absolute and protocol names are kept; the image
 * name's own protocol prefix stays ("image:top", "base" -> "image:base"). */
char *qimg_path_combine(const char *image, const char *backing);
/* The image's cluster size in bytes, 0 when its format has none. */
int64_t qimg_image_cluster_size(qimg_image *img);
/* Does the image, freshly created, read as zeros without being written? */
bool qimg_image_has_zero_init(qimg_image *img);

/* Guest reads see the whole chain: unallocated ranges read from the
 * backing image, or as zeros past its end. */
int qimg_read(qimg_image *img, uint64_t offset, void *buf, size_t len);
int qimg_write(qimg_image *img, uint64_t offset, const void *buf, size_t len);

enum qimg_zero_flags {
    QIMG_ZERO_MAY_UNMAP = 1u << 0,  /* a hole is fine */
    QIMG_ZERO_FAST      = 1u << 1,  /* fail with -ENOTSUP rather than write zeros */
};
int qimg_write_zeroes(qimg_image *img, uint64_t offset, uint64_t len, unsigned flags);
int qimg_discard(qimg_image *img, uint64_t offset, uint64_t len);
int qimg_flush(qimg_image *img);
/* A buffer for qimg_read/qimg_write suited to every open mode (aligned
 * for O_DIRECT); free it with free().  Aborts when out of memory. */
void *qimg_io_buffer(size_t size);
/* Does buf hold only zero bytes? */
bool qimg_is_zero(const void *buf, size_t len);

/* ---------------------------------------------------------- block status */

enum qimg_status_flags {
    QIMG_STATUS_DATA      = 1u << 0, /* reads come from a file */
    QIMG_STATUS_ZERO      = 1u << 1, /* reads as zeros */
    QIMG_STATUS_ALLOCATED = 1u << 2, /* answered by this layer (not backing) */
    QIMG_STATUS_OFFSET    = 1u << 3, /* host_offset is valid */
    QIMG_STATUS_EOF       = 1u << 4, /* the range reaches the end of the image */
    QIMG_STATUS_COMPRESSED = 1u << 5,
};

struct qimg_extent {
    uint64_t offset;       /* guest offset */
    uint64_t length;
    unsigned flags;        /* enum qimg_status_flags */
    uint64_t host_offset;  /* with QIMG_STATUS_OFFSET */
    unsigned depth;        /* layer of the chain that answered (0 = top);
                              for unallocated ranges, the chain length */
    const char *host_file; /* file holding the data (with OFFSET), else NULL */
};

/* Status of [offset, offset+len) for this image only (no backing walk):
 * fills *ext with the longest uniform prefix. */
int qimg_block_status(qimg_image *img, uint64_t offset, uint64_t len, struct qimg_extent *ext);
/* Status through the chain: ALLOCATED means some layer has it, depth says
 * which.  Ranges no layer holds read as zeros (ZERO set, ALLOCATED clear). */
int qimg_block_status_chain(qimg_image *img, uint64_t offset, uint64_t len, struct qimg_extent *ext);

/* ------------------------------------------------------------ sizes etc */

/* Parse a size as qemu does ("1G", "0x1000", "1.5M", "512b"); 0 or -EINVAL/-ERANGE. */
int qimg_parse_size(const char *str, uint64_t *out);
/* Human size as qemu prints it ("10 GiB", "408 KiB", "0 B"); buf >= 32 bytes. */
void qimg_format_size(uint64_t size, char *buf, size_t buflen);

/* --------------------------------------------------------------- formats */

/* What a format can do.  The answer comes from its driver, so every
 * command follows when a driver gains a callback. */
enum qimg_capability {
    QIMG_CAP_CREATE,        /* create new images (qemu-img create, convert -O) */
    QIMG_CAP_WRITE,         /* open images read-write */
    QIMG_CAP_COMPRESS,      /* compressed clusters (convert -c) */
    QIMG_CAP_BACKING,       /* images with a backing file */
    QIMG_CAP_SNAPSHOTS,     /* internal snapshots */
    QIMG_CAP_BITMAPS,       /* persistent dirty bitmaps (in some of its images) */
    QIMG_CAP_AMEND,         /* amend -o */
    QIMG_CAP_CHECK,         /* consistency checks */
    QIMG_CAP_RESIZE,
    QIMG_CAP_MEASURE,
    QIMG_CAP_MAKE_EMPTY,    /* emptied after commit */
    QIMG_CAP_METADATA,      /* metadata of its own (every format but raw) */
    QIMG_CAP_MANY_FILES,    /* create may make files named after the image (vmdk's
                               extents): a new image is written in place */
    QIMG_CAP_RAW_BACKING,   /* the backing file is always raw (UML cow): -b needs no -F */
};
/* The registered formats in order ("qcow2", "raw"...), NULL past the last. */
const char *qimg_format_name(size_t i);
bool qimg_format_known(const char *fmt);
/* A protocol that can be the format of a new image (create -f rbd,
 * convert -O file): its storage object is the image. */
bool qimg_protocol_creatable(const char *fmt);
/* Is name a storage backend that cannot make new storage (null-co, blkdebug,
 * vvfat, http ...)?  qemu-img takes such a name as a format that does not
 * support image creation, where an unknown name is an unknown format. */
bool qimg_storage_cannot_create(const char *name);
/* Is name one of qemu-img 7.2's block drivers (formats and protocols, as
 * its --help lists them), whether qimg has it or not?  rebase -F takes
 * any of them, as qemu does, to record as the backing format. */
bool qimg_qemu_driver_known(const char *name);
/* false for an unknown format too. */
bool qimg_format_supports(const char *fmt, enum qimg_capability cap);

/* ---------------------------------------------------------------- create */

typedef struct qimg_opts qimg_opts;   /* a parsed -o option list */

/* Parse "-o" text ("a=b,c=d,,e"); several calls merge into *opts. */
int qimg_opts_parse(qimg_opts **opts, const char *text);
/* Check an -o text the way qemu does before parsing ("Invalid option list"). */
int qimg_opts_check_text(const char *text);
/* qemu's key=value syntax with ",," escapes (--image-opts, --object, -l,
 * --trace); keys without "=" get the value of implied_key (or "on"). */
int qimg_keyval_parse(qimg_opts **opts, const char *text, const char *implied_key);
int qimg_opts_set(qimg_opts **opts, const char *name, const char *value);
const char *qimg_opts_get(const qimg_opts *opts, const char *name);
/* A size value as qemu reads "size": 0 when absent, 1 when found, <0
 * with qemu's message when it is not a size. */
int qimg_opts_get_size(qimg_opts *o, const char *name, uint64_t *out);
/* The options in order: count, then name and value of each. */
size_t qimg_opts_count(const qimg_opts *opts);
const char *qimg_opts_name(const qimg_opts *opts, size_t i);
const char *qimg_opts_value(const qimg_opts *opts, size_t i);
void qimg_opts_free(qimg_opts *opts);

/* --object secret,id=X,data=..|file=..[,format=raw|base64]. */
int qimg_object_add(const char *text);

/* The "-o help" text of a format (malloc'ed): its create options, sorted;
 * with_protocol adds those of the file protocol (qemu lists them only
 * when a filename is given). */
int qimg_create_help(const char *fmt, bool with_protocol, char **out);
/* The same for amend ("Amend options for 'F':"). */
int qimg_amend_help(const char *fmt, char **out);
/* Check -o options against fmt's create options plus the file protocol's
 * ("Invalid parameter 'x'", typed values), as create and measure do. */
int qimg_create_opts_validate(const char *fmt, qimg_opts *opts);

/* What qemu checks on a new image's name before its options: a protocol
 * prefix it knows ("Unknown protocol 'x'") whose backend can create
 * ("Protocol driver 'x' does not support image creation"). */
int qimg_create_name_check(const char *filename);

struct qimg_create_params {
    const char *filename;
    const char *fmt;              /* NULL = raw */
    uint64_t size;                /* with has_size */
    bool has_size;
    const char *backing_file;     /* NULL = none */
    const char *backing_fmt;
    bool no_open_backing;         /* -u */
    const qimg_opts *opts;        /* may be NULL */
    bool quiet;                   /* no "Formatting ..." line */
    bool atomic;                  /* write under a temporary name, rename at commit */
};
/* Create an image.  Prints nothing; qimg_create_describe() gives the
 * "Formatting ..." line. */
int qimg_create(const struct qimg_create_params *p);
/* The "Formatting 'F', fmt=X ..." text (malloc'ed, no newline). */
char *qimg_create_describe(const struct qimg_create_params *p);

/* A new image written under a temporary name next to its final one and
 * renamed into place when complete, so a failed run leaves no file that
 * looks finished.  in_place (or a name that is not a plain local file):
 * the name itself is written.  name is kept, not copied. */
typedef struct qimg_target qimg_target;
qimg_target *qimg_target_new(const char *name, bool in_place);
const char *qimg_target_path(const qimg_target *t);       /* the name to write */
/* msg with the temporary name replaced by the user's (malloc'ed). */
char *qimg_target_message(const qimg_target *t, const char *msg);
void qimg_target_discard(const qimg_target *t);            /* removes the temporary */
int qimg_target_commit(const qimg_target *t);              /* rename into place */
/* The existing file the target replaces, locked as qemu-img's creation
 * locks it: fails (qemu's "Failed to get \"write\" lock") while another
 * process or one of the command's own sources uses it; held until free. */
int qimg_target_lock(qimg_target *t);
void qimg_target_free(qimg_target *t);

/* ------------------------------------------------------------------ JSON */

/* A JSON value printed exactly as qemu-img prints its output (objects
 * keep qemu's key order).  Containers take ownership of what is put in. */
typedef struct qimg_json qimg_json;
qimg_json *qimg_json_object(void);
qimg_json *qimg_json_array(void);
qimg_json *qimg_json_string(const char *s);
qimg_json *qimg_json_int(int64_t v);
qimg_json *qimg_json_uint(uint64_t v);
qimg_json *qimg_json_bool(bool v);
void qimg_json_set(qimg_json *obj, const char *key, qimg_json *val);
void qimg_json_append(qimg_json *arr, qimg_json *val);
/* Pretty text (4-space indent), no trailing newline; malloc'ed. */
char *qimg_json_to_string(const qimg_json *v);
void qimg_json_free(qimg_json *v);

/* ------------------------------------------------------------------ info */

/* JSON text of ImageInfo as qemu-img info --output=json prints it (one
 * image), and the human text.  Both malloc'ed. */
int qimg_info_json(qimg_image *img, char **out);
int qimg_info_human(qimg_image *img, char **out);
/* ImageInfo of one image (no backing walk) as a JSON tree. */
int qimg_info_build(qimg_image *img, qimg_json **out);

/* ----------------------------------------------------------------- check */

/* Results of a consistency check, as qemu's ImageCheck. */
struct qimg_check_result {
    int64_t corruptions, leaks, check_errors;
    int64_t corruptions_fixed, leaks_fixed;
    int64_t image_end_offset;
    int64_t total_clusters, allocated_clusters, fragmented_clusters, compressed_clusters;
    bool has_stats;              /* totals known */
};
enum qimg_check_fix { QIMG_FIX_LEAKS = 1, QIMG_FIX_ERRORS = 2 };
/* -ENOTSUP when the format has no check. */
int qimg_check(qimg_image *img, struct qimg_check_result *res, unsigned fix);
/* Each problem a check finds ("Leaked cluster 5 refcount=1 reference=0")
 * goes to this handler as it is found (also the repairs of a dirty image
 * opened read-write).  A line starting with QIMG_CHECK_LOG_REPORT is an
 * error report (qemu-img prints it after its name). */
typedef void (*qimg_check_log_fn)(const char *line, void *opaque);
void qimg_check_set_log(qimg_check_log_fn fn, void *opaque);
#define QIMG_CHECK_LOG_REPORT "\001"

/* ---------------------------------------------------------- resize, measure */

/* Change the virtual size (prealloc: "off" when NULL). */
int qimg_resize(qimg_image *img, uint64_t size, const char *prealloc, bool shrink);

/* Size a new image needs (BlockMeasureInfo). */
struct qimg_measure { uint64_t required, fully_allocated, bitmaps; bool has_bitmaps; };
/* For size bytes, or for the content of src when not NULL.  opts:
 * validated -o options (qimg_create_opts_validate), may be NULL. */
int qimg_measure(const char *fmt, qimg_opts *opts, qimg_image *src, uint64_t size,
                 struct qimg_measure *out);

/* ------------------------------------------------------------- operations */

typedef void (*qimg_progress_fn)(double percent, void *opaque);

struct qimg_convert_params {
    qimg_image **sources;         /* concatenated in order */
    size_t nsources;
    qimg_image *target;           /* opened read-write, size >= total */
    uint64_t sparse_size;         /* -S in bytes (0 = write everything) */
    bool has_sparse_size;
    unsigned coroutines;          /* -m (1..16), worker threads */
    bool out_of_order;            /* -W */
    bool target_is_zero;          /* target already reads as zeros */
    bool target_has_backing;      /* copy only top-layer data */
    bool copy_range;              /* -C */
    uint64_t rate_limit;          /* -r bytes/s, 0 = none */
    qimg_progress_fn progress;
    void *progress_opaque;
    bool compress;                /* -c: compressed clusters (qcow2) */
    /* -D: the target's backing file (opened) is the diff base: write only
     * the clusters where the single source differs from it (zero clusters
     * where the source reads zeros and the base does not). */
    bool diff;
    /* --salvage: a source range whose block status fails is copied as
     * data, sectors that fail to read are copied as zeros; each is reported
     * through the warning handler (qemu's "error while reading ..."),
     * unless quiet.  The copy then goes in order, one request at a time. */
    bool salvage;
    bool quiet;
    /* With diff: the base holds the source's content as it was at its
     * storage's snapshot of this name (an RBD snapshot: the previous
     * backup was made from it).  Only the ranges the storage says changed
     * since then are read and compared; the rest is left to the base
     * unread.  The source must be raw on a storage that can tell (rbd). */
    const char *diff_since;
    /* The target is a new file under a temporary name, removed when the
     * copy fails: what a failure leaves cannot show the write order, so
     * convert may write out of order where the layout does not depend on
     * it (a raw target from remote sources, luks). */
    bool target_discarded_on_failure;
};
int qimg_convert(const struct qimg_convert_params *p);

/* Compare guest content: 0 identical, 1 differ (*mismatch set), <0 error. */
struct qimg_compare_result {
    bool size_mismatch;
    uint64_t mismatch_offset;
    bool status_mismatch;         /* strict: block status differs at mismatch_offset */
    bool status_error;            /* on error: block status failed (else a read) */
    /* size_mismatch is also set on error when the error lies past the
     * smaller size (qemu-img has warned by then) */
};
int qimg_compare(qimg_image *a, qimg_image *b, bool strict,
                 struct qimg_compare_result *res,
                 qimg_progress_fn progress, void *opaque);

/* ------------------------------ backing chains, snapshots, bitmaps, amend */

/* The layer below img that `name` designates, as qemu-img commit -b and
 * rebase find it: the backing name as recorded in the layer above, or a
 * path naming the same file (relative names are taken from the directory
 * of the layer above).  NULL when no layer matches. */
qimg_image *qimg_find_backing_image(qimg_image *img, const char *name);

struct qimg_commit_params {
    qimg_image *top;              /* opened read-write with its backing chain */
    qimg_image *base;             /* a layer below top; NULL = top's backing */
    bool keep_top;                /* -d: do not empty top afterwards */
    uint64_t rate_limit;          /* bytes per second, 0 = unlimited */
    qimg_progress_fn progress;    /* percent done, may be NULL */
    void *progress_opaque;
};
/* Copy what top and the layers between it and base hold into base (base
 * grows when smaller than top), then empty top when its format can. */
int qimg_commit(const struct qimg_commit_params *p);

struct qimg_rebase_params {
    qimg_image *img;              /* read-write; with its old chain unless unsafe */
    const char *backing_file;     /* name to record; NULL or "" = no backing file */
    const char *backing_fmt;      /* format to record (required with a name) */
    qimg_image *new_backing;      /* safe mode: the new backing, opened (may be a
                                     layer of img's chain); NULL = none */
    bool unsafe;                  /* only rewrite the header */
    qimg_progress_fn progress;    /* percent done, may be NULL */
    void *progress_opaque;
};
/* Safe mode first writes into img every range it does not hold itself
 * where the old and the new backing differ, so its content stays the
 * same; then records the new backing file. */
int qimg_rebase(const struct qimg_rebase_params *p);

/* Internal snapshots.  The list is freed with qimg_snapshot_list_free. */
struct qimg_snapshot_info {
    char *id, *name;
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    int64_t icount;             /* -1 when absent */
};
int qimg_snapshot_list(qimg_image *img, struct qimg_snapshot_info **list, size_t *n);
void qimg_snapshot_list_free(struct qimg_snapshot_info *list, size_t n);
int qimg_snapshot_create(qimg_image *img, const char *name);
int qimg_snapshot_apply(qimg_image *img, const char *id_or_name);
/* Delete by name; when no snapshot has that name, by id. */
int qimg_snapshot_delete(qimg_image *img, const char *name_or_id);
/* Show a snapshot instead of the active state of a read-only image, until
 * it is closed (convert -l, measure -l).  The image keeps its current
 * virtual size.  Either or both of id and name (both must then match). */
int qimg_snapshot_load_tmp(qimg_image *img, const char *id, const char *name);
/* qemu-img's -l NAME: by id, then, if none has that id, by name. */
int qimg_snapshot_load_tmp_by_id_or_name(qimg_image *img, const char *id_or_name);

/* Persistent dirty bitmaps. */
struct qimg_bitmap_info {
    char *name;
    uint32_t granularity;
    bool enabled;                 /* "auto": records writes */
    bool in_use;                  /* inconsistent (not stored cleanly) */
};
int qimg_bitmap_list(qimg_image *img, struct qimg_bitmap_info **list, size_t *n);
void qimg_bitmap_list_free(struct qimg_bitmap_info *list, size_t n);
/* granularity 0: the format's default (its cluster size, at least 4 KiB) */
int qimg_bitmap_add(qimg_image *img, const char *name, uint64_t granularity);
int qimg_bitmap_remove(qimg_image *img, const char *name);
int qimg_bitmap_clear(qimg_image *img, const char *name);
int qimg_bitmap_set_enabled(qimg_image *img, const char *name, bool enabled);
/* Add src_name's dirty ranges (from src, which may be img) to name. */
int qimg_bitmap_merge(qimg_image *img, const char *name, qimg_image *src, const char *src_name);
/* The first dirty byte range of a bitmap at or after off: 0 with start
 * and len set, 1 when the rest is clean, <0 on error. */
int qimg_bitmap_next_dirty(qimg_image *img, const char *name, uint64_t off, uint64_t *start,
                           uint64_t *len);
/* Can the image hold persistent bitmaps at all? */
bool qimg_bitmap_supported(qimg_image *img);

/* Check opts against the format's amend options (qemu's messages). */
int qimg_amend_check(qimg_image *img, qimg_opts *opts);
/* Change format options in place (-o of qemu-img amend); opts are checked
 * with qimg_amend_check first. */
int qimg_amend(qimg_image *img, qimg_opts *opts, bool force,
               qimg_progress_fn progress, void *opaque);

/* ------------------------------------------- files inside images (issue 7) */

/* A filesystem (ext2/3/4 or FAT) on a whole disk image or on one of its
 * partitions.  Reads go through the image's backing chain; writes land in
 * the top image only. */
typedef struct qimg_fs qimg_fs;

/* partition: 0 = the whole disk, N = the Nth partition of its MBR/GPT. */
int qimg_fs_open(qimg_fs **out, qimg_image *img, unsigned partition, bool writable);
int qimg_fs_close(qimg_fs *fs);
/* "ext2", "ext3", "ext4", "fat12", "fat16", "fat32". */
const char *qimg_fs_type(const qimg_fs *fs);

struct qimg_fs_entry {
    char *name;
    uint32_t mode;                /* S_IFMT | permission bits */
    uint32_t uid, gid;
    uint64_t size;
    uint32_t nlink;
    uint64_t ino;
    int64_t mtime;                /* seconds since the epoch */
    uint32_t mtime_ns;
    char *link_target;            /* symlinks, else NULL */
};
/* The entries of a directory sorted by name ("." and ".." left out), or the
 * one entry of a path that is not a directory. */
int qimg_fs_list(qimg_fs *fs, const char *path, struct qimg_fs_entry **list, size_t *n);
void qimg_fs_list_free(struct qimg_fs_entry *list, size_t n);
/* Write the content of a regular file to fd. */
int qimg_fs_cat(qimg_fs *fs, const char *path, int fd);
/* Copy a file or a directory tree out into the existing local directory
 * localdir (sparse files stay sparse; modes and times kept, owners when
 * running as root). */
int qimg_fs_copy_out(qimg_fs *fs, const char *path, const char *localdir);
/* Copy a local file or directory tree into the directory dir of fs; an
 * existing file of the same name is replaced. */
int qimg_fs_copy_in(qimg_fs *fs, const char *localpath, const char *dir);

struct qimg_create_from_params {
    const char *filename;         /* the image to create */
    const char *fmt;              /* NULL = raw */
    const qimg_opts *opts;        /* -o of the format, may be NULL */
    const char *source;           /* a directory, a tar archive, or "-" (tar on stdin) */
    const char *fs_type;          /* "ext4" (NULL), "ext3", "ext2", "vfat" */
    const char *partition;        /* "none" (NULL), "mbr", "gpt" */
    uint64_t size;                /* with has_size: the disk size */
    bool has_size;
    uint64_t extra;               /* without has_size: bytes added to the minimum */
    const char *label;
    bool reproducible;            /* --reproducible or SOURCE_DATE_EPOCH */
    int64_t source_date_epoch;    /* with reproducible: times clamped to it */
    qimg_progress_fn progress;
    void *progress_opaque;
    uint64_t chosen_size;         /* out: the disk size used */
    /* Added with create --from's command line: */
    bool epoch_from_source;       /* with reproducible: the epoch is the newest
                                     mtime in source (no SOURCE_DATE_EPOCH) */
    /* Called once chosen_size is known, before anything is written; may be NULL. */
    void (*planned)(const struct qimg_create_from_params *p, void *opaque);
    void *planned_opaque;
    uint64_t skipped;             /* out: entries the filesystem cannot hold
                                     (vfat: symlinks, devices...), each warned */
};
/* Make an image holding a new filesystem filled from source. */
int qimg_create_from(struct qimg_create_from_params *p);

#ifdef __cplusplus
}
#endif
#endif
