/* qimg - the VMDK driver's internal interface (src/formats/vmdk/).
 *
 * A VMDK image is a text descriptor and a list of extents.  The descriptor
 * is either a file of its own (monolithicFlat, twoGbMaxExtent*, vmfs, ...)
 * or embedded in a hosted sparse extent (monolithicSparse,
 * streamOptimized).  Each extent line reads
 *     ACCESS SECTORS TYPE "FILE" [OFFSET]
 * with ACCESS one of RW, RDONLY, NOACCESS and TYPE one of FLAT, VMFS,
 * SPARSE, VMFSSPARSE, SESPARSE, ZERO (see descriptor.c).  The extents
 * follow each other in the guest disk, in descriptor order.
 *
 * Files:
 *   vmdk.c        the driver: probe, open (descriptor, extents, parent),
 *                 guest I/O dispatched to extents, info, create
 *   descriptor.c  the descriptor text: parsing, the fields qemu reads,
 *                 the text qemu writes
 *   flat.c        FLAT / VMFS extents (raw data at an offset) and ZERO
 *   sparse.c      hosted sparse extents (KDMV header, grain directory and
 *                 grain tables, monolithicSparse and streamOptimized reads)
 *   stream.c      streamOptimized writing (vmdkstream helper)
 *   cowd.c        VMDK3 / COWD and vmfsSparse extents (vmdkstream helper)
 *   sesparse.c    seSparse extents (vmdkstream helper)
 *
 * Adding an extent kind: a file defining one `const struct
 * vmdk_extent_ops`, declared below, and one line in vmdk.c's
 * vmdk_kinds[] (descriptor TYPE word -> ops) or vmdk_magics[] (a sparse
 * file recognised by its first four bytes).
 */
#ifndef QIMG_VMDK_H
#define QIMG_VMDK_H

#include "internal.h"

#define VMDK_SECTOR 512u

/* Access word of an extent line. */
enum vmdk_access { VMDK_ACCESS_RW, VMDK_ACCESS_RDONLY, VMDK_ACCESS_NOACCESS };

struct vmdk_extent_ops;

/*
 * One extent.  vmdk.c fills the common part (everything but priv and the
 * info fields) before ops->open, and frees it after ops->close.
 */
struct vmdk_extent {
    const struct vmdk_extent_ops *ops;
    enum vmdk_access access;
    /* the TYPE word of the descriptor ("FLAT", "SPARSE" ...), as info
     * prints it: NULL for the extent of a monolithic sparse file (qemu
     * prints "") */
    char *type;
    uint64_t start;            /* first guest sector */
    uint64_t sectors;          /* guest sectors it holds */
    struct qimg_io *file;      /* its storage (NULL for ZERO) */
    bool owns_file;            /* false when file is the image's own file */
    uint64_t flat_offset;      /* FLAT: byte offset of its data in file */

    /* Set by ops->open for info (qemu's "extents" list) */
    uint64_t cluster_size;     /* bytes; 0: flat, no cluster size printed */
    bool compressed;           /* printed only when true */

    void *priv;                /* the kind's own state */
};

/*
 * What an extent kind does.  Offsets are bytes from the start of the
 * extent; [off, off+len) never crosses its end.  Return 0 or a negative
 * errno with the error set.
 */
struct vmdk_extent_ops {
    const char *name;
    /* e->file is open (hdr: its first 512 bytes, zero padded; file_size:
     * its size).  Read and check the metadata, set e->priv,
     * e->cluster_size and e->compressed.  May set e->sectors for a sparse
     * file opened as the whole image (capacity from its header). */
    int (*open)(struct qimg_image *img, struct vmdk_extent *e, const uint8_t *hdr,
                uint64_t file_size);
    void (*close)(struct vmdk_extent *e);
    /* Guest data; an unallocated range is read through
     * vmdk_read_unallocated (the parent image or zeros). */
    int (*read)(struct qimg_image *img, struct vmdk_extent *e, uint64_t off, uint8_t *buf,
                size_t len);
    /* NULL: the kind cannot be written.  Called with img->lock NOT held;
     * a kind serialises its metadata updates with img->lock. */
    int (*write)(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                 const uint8_t *buf, size_t len);
    /* Make [off, off+len) read as zeros without writing data (zeroed
     * grains), or -ENOTSUP (nothing done) when the kind cannot for this
     * range: the zeros are then written as data.  dry_run: only answer.
     * NULL: always -ENOTSUP. */
    int (*write_zeroes)(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                        uint64_t len, bool dry_run);
    /* Fill ext as a driver's block_status does (ext->length <= len,
     * flags, host_offset, host_file); ext->offset is set by the caller. */
    int (*block_status)(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                        uint64_t len, struct qimg_extent *ext);
    /* NULL: flushing e->file is all there is. */
    int (*flush)(struct qimg_image *img, struct vmdk_extent *e);
    /* Make the extent hold `sectors` guest sectors (more than it holds);
     * NULL: it cannot grow.  The descriptor is vmdk.c's. */
    int (*grow)(struct qimg_image *img, struct vmdk_extent *e, uint64_t sectors);
    /* NULL: nothing to check.  As qemu: the first problem is reported with
     * qimg_check_log ("ERROR: ... for sector N", N a guest sector) and
     * returned as an error (qemu counts one corruption and fails). */
    int (*check)(struct qimg_image *img, struct vmdk_extent *e, struct qimg_check_result *res);
};

/* The kinds. */
extern const struct vmdk_extent_ops vmdk_flat_ops;    /* flat.c: FLAT and VMFS */
extern const struct vmdk_extent_ops vmdk_zero_ops;    /* flat.c: ZERO */
extern const struct vmdk_extent_ops vmdk_sparse_ops;  /* sparse.c: KDMV hosted sparse */

/* The driver's state (img->opaque). */
struct vmdk_state {
    struct vmdk_extent *extents;
    size_t nb_extents;
    char *create_type;
    uint32_t cid, parent_cid;
    /* where the descriptor lives in img->file: 0 for a descriptor file,
     * 512 for one embedded in a monolithic sparse file */
    uint64_t desc_offset;
    bool cid_updated;          /* a new CID was written since open */
    bool cid_checked;          /* the parent's CID matched parentCID */
};

/* Read the guest range [off, off+len) of extent e that e does not hold:
 * from the parent image (whose CID must match parentCID, else -EINVAL as
 * in qemu), or zeros. */
int vmdk_read_unallocated(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                          uint8_t *buf, size_t len);

/* ---- descriptor.c ---- */

/* text with lines (whole lines) inserted after the index-th extent line;
 * NULL when there is no such line. */
char *vmdk_desc_add_extents(const char *text, size_t index, const char *lines);
/* text with extent line `index` (counted as vmdk_desc_extents counts
 * them) given `sectors`, and "ddb.geometry.cylinders" set for `bytes`
 * (heads from "ddb.geometry.heads"); malloc'ed, NULL when there is no
 * such line. */
char *vmdk_desc_resized(const char *text, size_t index, uint64_t sectors, uint64_t bytes);

/* The value of `key="value"` (or `key=value` up to the line's end) as qemu
 * finds it: the first occurrence of key anywhere in text.  malloc'ed, or
 * NULL when absent or longer than max. */
char *vmdk_desc_value(const char *text, const char *key, size_t max);
/* CID / parentCID as qemu reads them (hex after the first "CID=" /
 * "parentCID="); -EINVAL when missing. */
int vmdk_desc_cid(const char *text, bool parent, uint32_t *cid);

/* One parsed extent line. */
struct vmdk_desc_extent {
    enum vmdk_access access;
    uint64_t sectors;
    char type[16];
    char *filename;
    uint64_t flat_offset;      /* bytes */
};
/* Every extent line of the descriptor, in order (lines qimg cannot use are
 * skipped as qemu skips them; a malformed one is "Invalid extent line").
 * *out is malloc'ed, each filename too: vmdk_desc_extents_free. */
int vmdk_desc_extents(const char *text, struct vmdk_desc_extent **out, size_t *n);
void vmdk_desc_extents_free(struct vmdk_desc_extent *x, size_t n);

/* ---- create.c: the pieces of qemu's layout (stream.c reuses them) ---- */

struct vmdk_create_opts {
    const char *subformat, *adapter_type, *hw_version, *toolsversion;
    bool compat6, zeroed_grain;
};
/* The -o options, checked as qemu checks them (hw_version "4" or "6"
 * when not given). */
int vmdk_read_create_opts(struct qimg_create_ctx *ctx, struct vmdk_create_opts *o);
/* The CID of ctx->backing_file (which must be a vmdk). */
int vmdk_parent_cid(struct qimg_create_ctx *ctx, uint32_t *cid);
/* qemu-img's descriptor text, a new random CID in it; extent_lines are
 * the "RW ..." lines, each ending with a newline. */
char *vmdk_descriptor_text(const struct vmdk_create_opts *o, uint32_t parent_cid,
                           const char *backing, const char *extent_lines, uint64_t size);
uint32_t vmdk_random_cid(void);
/* A new hosted sparse extent's header, directories and (holes) tables,
 * extended to its first grain; compress: a streamOptimized header. */
int vmdk_write_sparse_header(struct qimg_io *io, uint64_t capacity, bool zeroed_grain,
                             bool compress);
/* A new extent file at path (which must not exist yet): flat (bytes, a
 * hole) or hosted sparse. */
int vmdk_new_extent_file(const char *path, uint64_t bytes, bool flat, bool zeroed_grain);
/* Does this hosted sparse extent use zeroed-grain tables? */
bool vmdk_sparse_zeroed_grain(const struct vmdk_extent *e);
/* The first grain's sector of a new sparse extent of capacity sectors. */
uint64_t vmdk_sparse_first_grain(uint64_t capacity);
int vmdk_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out);
/* Create (vmdk's driver create).  streamOptimized goes to stream.c: the
 * line that refuses it in vmdk_create is where its call goes. */
int vmdk_create(struct qimg_create_ctx *ctx);

/* ---- hooks the streamOptimized code (stream.c) plugs into ----
 * A hosted sparse extent whose header says compressed grains (flag bit 16,
 * compressAlgorithm 1) is read by sparse.c itself: each grain is a marker
 * (u64 LBA, u32 size) followed by size bytes of zlib data (RFC 1950). */

/* ---- kinds of the vmdkstream helper: cowd.c, sesparse.c, stream.c ---- */

extern const struct vmdk_extent_ops vmdk_cowd_ops;      /* cowd.c: COWD / VMFSSPARSE */
extern const struct vmdk_extent_ops vmdk_sesparse_ops;  /* sesparse.c: SESPARSE */

/* What a grain of a sparse extent is. */
enum vmdk_grain { VMDK_GRAIN_UNALLOC, VMDK_GRAIN_ZERO, VMDK_GRAIN_DATA };

/* A grain directory (qemu's L1) in memory: entries of 4 or 8 bytes as
 * stored (little endian); those past the end of the file are not loaded
 * and read as 0. */
struct vmdk_directory {
    uint8_t *raw;
    uint64_t entries, loaded;
    unsigned entry_size;
};
/* Load `entries` entries from byte off of e->file (bounded by file_size
 * and the memory budget); "Could not read l1 table from extent" on error. */
int vmdk_load_directory(struct vmdk_extent *e, uint64_t off, uint64_t entries,
                        unsigned entry_size, uint64_t file_size, struct vmdk_directory *d);
uint64_t vmdk_directory_entry(const struct vmdk_directory *d, uint64_t i);
void vmdk_directory_free(struct vmdk_directory *d);

/* A small LRU cache of grain tables (qemu's L2), keyed by host offset.
 * The caller sets entries and entry_size and holds img->lock. */
#define VMDK_TABLE_CACHE 16
struct vmdk_table_slot {
    uint64_t host_off, use;
    bool valid;
    uint8_t *raw;
};
struct vmdk_table_cache {
    uint32_t entries;
    unsigned entry_size;
    struct vmdk_table_slot slot[VMDK_TABLE_CACHE];
    uint64_t clock;
};
int vmdk_table_get(struct vmdk_table_cache *c, struct vmdk_extent *e, uint64_t host_off,
                   const uint8_t **table);
void vmdk_table_cache_free(struct vmdk_table_cache *c);

/* qemu's check of a sparse extent, grain by grain, through the kind's
 * lookup (kind and host byte offset of extent offset off). */
int vmdk_check_grains(struct qimg_image *img, struct vmdk_extent *e, uint64_t grain_bytes,
                      int (*lookup)(struct qimg_image *, struct vmdk_extent *, uint64_t,
                                    enum vmdk_grain *, uint64_t *),
                      struct qimg_check_result *res);

/* ---- streamOptimized writing (stream.c) and its hooks in sparse.c ---- */

/* Room a compressed grain of grain_bytes may take (marker, zlib data,
 * padding to the sector). */
size_t vmdk_stream_bound(uint64_t grain_bytes);
/* One grain (len <= grain size) into out: marker (its LBA set when
 * written), zlib data, zeros to the sector; *out_len a multiple of 512. */
int vmdk_stream_compress(const void *buf, size_t len, void *out, size_t out_cap, size_t *out_len);
/* Append what vmdk_stream_compress made for the grain at extent offset off
 * (qemu's errors for a grain already written). */
int vmdk_stream_write_compressed(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                                 const void *blob, size_t len);
/* A plain write to a compressed extent: whole grains only, each once. */
int vmdk_stream_write(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                      const uint8_t *buf, size_t len);
/* sparse.c: does grain g hold data?  Append data (len bytes) as grain g at
 * the extent's next free sector, which moves on by keep bytes, and point
 * the grain tables at it: -EEXIST when g holds data.  Both take img->lock. */
int vmdk_sparse_grain_allocated(struct qimg_image *img, struct vmdk_extent *e, uint64_t g,
                                bool *allocated);
int vmdk_sparse_append_grain(struct qimg_image *img, struct vmdk_extent *e, uint64_t g,
                             const void *data, size_t len, size_t keep);

#endif
