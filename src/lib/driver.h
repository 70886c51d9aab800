/* qimg - internal: format drivers: struct qimg_driver, the registry and the capability layer.
 * Part of internal.h (which includes every part); see docs/architecture.md. */
#ifndef QIMG_LIB_DRIVER_H
#define QIMG_LIB_DRIVER_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"
#include "errors.h"
#include "options.h"
#include "json.h"

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
    /* "disk size" when the image is more than its file (vmdk's extents):
     * bytes, or <0 unknown; used when has_actual_size */
    bool has_actual_size;
    int64_t actual_size;
    /* The image takes only compressed writes of whole clusters (vmdk
     * streamOptimized): convert then compresses as with -c (qemu's
     * BlockDriverInfo.needs_compressed_writes). */
    bool needs_compressed_writes;
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



/* An open flag the library alone sets (never a caller's): drv->open is a
 * read-write reopen of an image that was open read-only (commit's base).
 * qemu's reopen leaves the header as it is, where an open may update it. */
#define QIMG_OPEN_REOPEN (1u << 30)

enum qimg_driver_flags {
    /* The image is the guest disk itself, with no metadata of its own
     * (raw): it shares write and resize with other processes, takes the
     * file protocol's preallocation modes and may use copy offload. */
    QIMG_DRV_NO_METADATA = 1u << 0,
    QIMG_DRV_SUPPORTS_BACKING = 1u << 1,
    /* No write support at all: opening read-write fails, probed or not,
     * and the driver has no write, write_zeroes, discard nor create. */
    QIMG_DRV_READ_ONLY = 1u << 2,
    /* qemu cannot reopen an open image of this format read-write (no
     * reopen support: parallels), so commit cannot write into it. */
    QIMG_DRV_NO_REOPEN = 1u << 3,
    /* create may write files next to the image, named after it (vmdk's
     * extents), so a new image cannot be written under a temporary name. */
    QIMG_DRV_MANY_FILES = 1u << 4,
    /* The backing file is always read as raw (UML cow): create takes -b
     * without -F, as if -F raw were given. */
    QIMG_DRV_RAW_BACKING = 1u << 5,
    /* Every guest byte has a fixed place in the file and a write allocates
     * nothing (luks: payload offset + guest offset), so the order of
     * writes cannot change the image: convert writes a new target's units
     * as they are ready (-W). */
    QIMG_DRV_FIXED_PLACEMENT = 1u << 6,
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
     * the disk's last, partial one) into out (room for 2 x cluster_size
     * bytes); -ENOSPC when it does not get smaller (a format that must
     * store it compressed may return more than cluster_size bytes).  No lock, any thread.  write_compressed:
     * store what compress made for the cluster at off. */
    int (*compress)(struct qimg_image *img, const void *buf, size_t len, void *out, size_t *out_len);
    int (*write_compressed)(struct qimg_image *img, uint64_t off, const void *data, size_t len);

    /* Bitmaps: write what bitmap_set_dirty changed in memory (merge calls
     * it once at the end).  bitmap_set_dirty with len 0 only checks that
     * the bitmap can take changes. */
    int (*bitmap_store)(struct qimg_image *img);
    /* Can this image hold persistent bitmaps? (qcow2: version 3 only) */
    bool (*bitmap_supported)(struct qimg_image *img);

    /* Read a snapshot instead of the active state until close, without
     * writing anything (convert -l, measure -l); the image is read-only.
     * id, name or both (then both must match); -ENOENT when none does. */
    int (*snapshot_load_tmp)(struct qimg_image *img, const char *id, const char *name);

    /* Called when img's backing image has been opened: may refuse it
     * (vpc: a parent whose unique id is not the one the child records). */
    int (*backing_opened)(struct qimg_image *img);

    /* Beyond qemu's probing: does the file end (its last len <= 512 bytes,
     * file_size in all) say it is this format?  Asked only when the first
     * bytes probed as raw (vpc: a fixed VHD's footer). */
    bool (*probe_tail)(const uint8_t *tail, size_t len, uint64_t file_size);
};

/* The registry: one explicit table (src/formats/registry.c). */
extern const struct qimg_driver *const qimg_drivers[];
const struct qimg_driver *qimg_driver_find(const char *name);
/* Probe the file's first bytes: the best driver (raw as fallback). */
const struct qimg_driver *qimg_driver_probe(const uint8_t *buf, size_t len,
                                            uint64_t file_size, const char *filename);

/* The driver whose probe_tail claims the file's last bytes, else raw. */
const struct qimg_driver *qimg_driver_probe_tail(const uint8_t *tail, size_t len,
                                                 uint64_t file_size);

extern const struct qimg_driver qimg_driver_raw;
/* A storage backend named as the format of a new image (qemu-img create
 * -f rbd, -f file): NULL unless fmt names no format and such a backend
 * that can create. */
const struct qimg_io_ops *qimg_create_protocol(const char *fmt);
/* image-io.c: the format of a filter over a format node (not probed, not
 * in the registry): its storage as it is, named "blkdebug". */
extern const struct qimg_driver qimg_driver_filter;
extern const struct qimg_driver qimg_driver_qcow2;
extern const struct qimg_driver qimg_driver_vdi;
extern const struct qimg_driver qimg_driver_parallels;
extern const struct qimg_driver qimg_driver_vpc;
extern const struct qimg_driver qimg_driver_vmdk;
extern const struct qimg_driver qimg_driver_luks;
extern const struct qimg_driver qimg_driver_qed;
extern const struct qimg_driver qimg_driver_qcow;
extern const struct qimg_driver qimg_driver_vhdx;
extern const struct qimg_driver qimg_driver_bochs;
extern const struct qimg_driver qimg_driver_cow;
extern const struct qimg_driver qimg_driver_cloop;
extern const struct qimg_driver qimg_driver_dmg;

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
/* Does the image list snapshots (its format's, or its storage's under raw)? */
bool qimg_drv_has_snapshot_list(struct qimg_image *img);
int qimg_drv_snapshot_apply(struct qimg_image *img, const char *id_or_name);
int qimg_drv_snapshot_delete(struct qimg_image *img, const char *id, const char *name);
int qimg_drv_snapshot_load_tmp(struct qimg_image *img, const char *id, const char *name);

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

#endif
