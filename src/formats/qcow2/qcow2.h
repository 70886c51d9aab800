/* qimg - qcow2 driver internals: on-disk layout constants and the state of
 * an open image.  Shared by the driver's files:
 *   qcow2.c          probe, open (header, extensions, tables), close, info,
 *                    snapshots list, the driver table
 *   qcow2-read.c     guest-to-host mapping, L2 cache, read, block status
 *   qcow2-compress.c decompression of compressed clusters (zlib, zstd)
 * and by the files that add writing (allocation, refcounts, COW) and
 * create/measure.  Layout facts follow docs/interop/qcow2.txt; every
 * integer on disk is big-endian.
 */
#ifndef QIMG_QCOW2_H
#define QIMG_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* ---------------------------------------------------------------- header */

#define QCOW2_MAGIC             0x514649fbu     /* "QFI\xfb" */

/* Byte offsets of the header fields. */
enum {
    QCOW2_HDR_MAGIC                 = 0,
    QCOW2_HDR_VERSION               = 4,
    QCOW2_HDR_BACKING_FILE_OFFSET   = 8,
    QCOW2_HDR_BACKING_FILE_SIZE     = 16,
    QCOW2_HDR_CLUSTER_BITS          = 20,
    QCOW2_HDR_SIZE                  = 24,
    QCOW2_HDR_CRYPT_METHOD          = 32,
    QCOW2_HDR_L1_SIZE               = 36,
    QCOW2_HDR_L1_TABLE_OFFSET       = 40,
    QCOW2_HDR_REFCOUNT_TABLE_OFFSET = 48,
    QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS = 56,
    QCOW2_HDR_NB_SNAPSHOTS          = 60,
    QCOW2_HDR_SNAPSHOTS_OFFSET      = 64,
    /* version 3 */
    QCOW2_HDR_INCOMPATIBLE_FEATURES = 72,
    QCOW2_HDR_COMPATIBLE_FEATURES   = 80,
    QCOW2_HDR_AUTOCLEAR_FEATURES    = 88,
    QCOW2_HDR_REFCOUNT_ORDER        = 96,
    QCOW2_HDR_HEADER_LENGTH         = 100,
    QCOW2_HDR_COMPRESSION_TYPE      = 104,
};

#define QCOW2_HDR_V2_LENGTH     72u     /* fixed for version 2 */
#define QCOW2_HDR_V3_MIN_LENGTH 104u    /* version 3: at least this */
#define QCOW2_HDR_V3_LENGTH     112u    /* what qemu writes (with compression_type) */

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY        (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN        0x1full
/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS     (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)
#define QCOW2_AUTOCLEAR_KNOWN       0x3ull

enum qcow2_feature_type { QCOW2_FEAT_INCOMPAT = 0, QCOW2_FEAT_COMPAT = 1, QCOW2_FEAT_AUTOCLEAR = 2 };
#define QCOW2_FEATURE_NAME_LEN  46
#define QCOW2_FEATURE_ENTRY_LEN 48
/* qemu's own feature name table (qcow2-amend.c), written by every header
 * update of a v3 image in place of the image's */
#define QCOW2_STD_FEATURE_TABLE_LEN (8 * QCOW2_FEATURE_ENTRY_LEN)
void qcow2_std_feature_table(uint8_t *table);
/* qemu writes its feature table into v3 headers of clusters above 4 KiB only */
#define QCOW2_FEATURE_TABLE_MIN_CLUSTER 8192u

enum { QCOW2_CRYPT_NONE = 0, QCOW2_CRYPT_AES = 1, QCOW2_CRYPT_LUKS = 2 };
enum { QCOW2_COMPRESSION_ZLIB = 0, QCOW2_COMPRESSION_ZSTD = 1 };

/* Header extension types. */
#define QCOW2_EXT_END           0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS       0x23852875u
#define QCOW2_EXT_CRYPTO        0x0537be77u
#define QCOW2_EXT_DATA_FILE     0x44415441u
#define QCOW2_EXT_BITMAPS_LEN   24u     /* nb_bitmaps, reserved, dir size, dir offset */
#define QCOW2_EXT_CRYPTO_LEN    16u     /* offset, length */

/* ----------------------------------------------------------------- limits */

#define QCOW2_MIN_CLUSTER_BITS  9
#define QCOW2_MAX_CLUSTER_BITS  21
#define QCOW2_MIN_CLUSTER_BITS_EXTL2 14
#define QCOW2_MAX_REFCOUNT_ORDER 6
#define QCOW2_MAX_BACKING_NAME  1023u
/* qemu keeps a backing format name in 16 bytes: a longer one (a driver
 * name like "copy-before-write") is stored cut to 15 characters. */
#define QCOW2_BACKING_FMT_MAX 15
#define QCOW2_MAX_L1_BYTES      (32ull << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8ull << 20)
#define QCOW2_MAX_SNAPSHOTS     65536u
#define QCOW2_MAX_SNAPSHOT_TABLE (64ull << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024u
#define QCOW2_MAX_BITMAPS       65535u
#define QCOW2_MAX_BITMAP_DIR    (1024ull * QCOW2_MAX_BITMAPS)
#define QCOW2_MAX_BITMAP_TABLE  0x8000000u      /* entries */
#define QCOW2_MAX_BITMAP_BYTES  (512ull << 20)  /* data of one bitmap */
#define QCOW2_MAX_BITMAP_NAME   1023u
/* Memory for cached L2 tables (qemu's default maximum on Linux). */
#define QCOW2_L2_CACHE_MAX_BYTES (32ull << 20)
#define QCOW2_L2_CACHE_MIN_TABLES 4u
/* The cache's tables are allocated this many bytes at a time (qcow2-read.c). */
#define QCOW2_L2_SLAB_BYTES     (1ull << 20)

/* ----------------------------------------------------- L1 / L2 entries */

#define QCOW2_OFLAG_COPIED      (1ull << 63)    /* refcount is exactly 1 */
#define QCOW2_OFLAG_COMPRESSED  (1ull << 62)
#define QCOW2_OFLAG_ZERO        (1ull << 0)     /* v3, standard L2 entry */
/* Bits 9..55: host offset of an L2 table / data cluster / refcount block. */
#define QCOW2_OFFSET_MASK       0x00fffffffffffe00ull
#define QCOW2_L1E_RESERVED      0x7f000000000001ffull
#define QCOW2_L2E_STD_RESERVED  0x3f000000000001feull
#define QCOW2_REFT_RESERVED     0x00000000000001ffull

/* Extended L2 entries: 32 subclusters per cluster; the second word holds
 * the allocation bitmap (bits 0..31) and the zero bitmap (bits 32..63). */
#define QCOW2_SUBCLUSTERS       32u
#define QCOW2_L2_BITMAP_ALLOC(bm)  ((uint32_t)(bm))
#define QCOW2_L2_BITMAP_ZERO(bm)   ((uint32_t)((bm) >> 32))

#define QCOW2_COMPRESSED_SECTOR 512u

/* What a guest cluster (or subcluster) is. */
enum qcow2_cluster_kind {
    QCOW2_KIND_UNALLOCATED,        /* falls through to the backing file */
    QCOW2_KIND_UNALLOCATED_ALLOC,  /* the same, a subcluster of an allocated cluster */
    QCOW2_KIND_ZERO_PLAIN,         /* reads as zeros, no host cluster */
    QCOW2_KIND_ZERO_ALLOC,         /* reads as zeros, host cluster preallocated */
    QCOW2_KIND_NORMAL,             /* data at a host offset */
    QCOW2_KIND_COMPRESSED,         /* compressed descriptor */
};

/* ---------------------------------------------------------- open state */

/* A header extension this driver does not interpret, kept to be written
 * back unchanged. */
struct qcow2_unknown_ext {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
};

struct qcow2_feature_name {
    uint8_t type;                  /* enum qcow2_feature_type */
    uint8_t bit;
    char name[QCOW2_FEATURE_NAME_LEN + 1];
};

struct qcow2_bitmap {
    char *name;
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;                /* bit 0 in_use, 1 auto, 2 extra_data_compatible */
    uint8_t type;
    uint8_t granularity_bits;
    uint32_t extra_data_size;
};
#define QCOW2_BME_IN_USE        (1u << 0)
#define QCOW2_BME_AUTO          (1u << 1)
#define QCOW2_BME_EXTRA_COMPAT  (1u << 2)
#define QCOW2_BME_RESERVED      0xfffffff8u
#define QCOW2_BME_HEADER_LEN    24u

struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id, *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;        /* 64-bit field of the extra data when present */
    uint64_t disk_size;            /* virtual size when the snapshot was taken */
    int64_t icount;                /* -1 when absent */
    uint32_t extra_data_size;
    uint8_t *extra_data;           /* all extra bytes as stored (kept for rewrite) */
};
#define QCOW2_SNAPSHOT_HEADER_LEN 40u
#define QCOW2_SNAPSHOT_EXTRA_VMSTATE 8u   /* vm_state_size_large */
#define QCOW2_SNAPSHOT_EXTRA_DISKSIZE 16u /* + disk_size */
#define QCOW2_SNAPSHOT_EXTRA_ICOUNT 24u   /* + icount */

/* One cached L2 table: the on-disk bytes (big-endian), so a writer can
 * modify entries in place and write the table back as it is. */
struct qcow2_l2_entry {
    uint64_t offset;               /* host offset of the table; 0 = free slot */
    uint8_t *table;                /* l2_table_bytes */
    bool dirty;                    /* modified, not yet written (write path) */
    struct qcow2_l2_entry *hash_next;
    struct qcow2_l2_entry *lru_prev, *lru_next;   /* most recent at head */
};

struct qcow2_l2_cache {
    struct qcow2_l2_entry *entries;  /* capacity slots, tables allocated on use */
    uint32_t capacity, used;
    struct qcow2_l2_entry **buckets; /* hash on the table offset */
    uint32_t nbuckets;               /* power of two */
    struct qcow2_l2_entry *lru_head, *lru_tail;
    uint64_t hits, misses;
    uint8_t **slabs;                 /* table memory, allocated as slots are first used */
    uint32_t nslabs, slab_tables;    /* slabs allocated; tables per slab */
};

struct qcow2_state {
    /* header, as read (version 2 images: v3 fields hold their implied values) */
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;

    /* derived geometry */
    uint64_t cluster_size;
    bool extended_l2;
    uint32_t l2_entry_bytes;       /* 8, or 16 with extended L2 */
    uint32_t l2_bits;              /* log2(entries per L2 table) */
    uint64_t l2_entries;           /* entries per L2 table */
    uint64_t l2_table_bytes;       /* == cluster_size */
    uint64_t subcluster_size;      /* == cluster_size without extended L2 */
    uint32_t subclusters_per_cluster;   /* 1 or 32 */
    uint32_t csize_shift;          /* compressed descriptor: sector count position */
    uint64_t csize_mask;
    uint64_t cluster_offset_mask;  /* compressed descriptor: host offset bits */
    uint32_t refcount_bits;
    uint64_t refcount_block_entries;
    uint64_t file_size;            /* of the image file when opened */
    uint32_t l1_vm_state_index;    /* first L1 entry beyond the guest disk */

    /* header extensions */
    char *backing_fmt;             /* also copied to img->backing_fmt */
    char *data_file_name;          /* external data file name extension */
    struct qcow2_feature_name *features;
    size_t nb_features;
    bool has_bitmaps_ext;
    uint32_t nb_bitmaps;
    uint64_t bitmap_directory_size, bitmap_directory_offset;
    struct qcow2_bitmap *bitmaps;  /* parsed directory (only when consistent) */
    bool has_crypto_ext;
    uint64_t crypto_header_offset, crypto_header_length;
    struct qcow2_unknown_ext *unknown_exts;   /* last first, as qemu writes them back */
    size_t nb_unknown_exts;
    bool bitmaps_ext_ignored;      /* no autoclear bit: a rw open drops the extension */

    /* tables */
    uint64_t *l1_table;            /* host order, l1_size entries */
    uint64_t *refcount_table;      /* host order */
    uint64_t refcount_table_size;  /* entries */
    struct qcow2_snapshot *snapshots;

    /* data: img->file, or the external data file */
    struct qimg_io *data_io;
    bool own_data_io;

    struct qcow2_l2_cache l2_cache;  /* under img->lock */

    /* qemu looks into the data file's holes for block status only when the
     * image looks metadata-preallocated (more refcounted clusters than the
     * file holds); decided once, under img->lock. */
    bool metadata_prealloc_checked;
    bool metadata_prealloc;

    struct qcow2_wstate *ws;         /* write path (qcow2-write.c); NULL read-only */

    struct qcow2_bm_state *bm;       /* bitmaps in memory (qcow2-bitmap.c); NULL until used */

    /* v3 header fields past the ones qemu knows (header_length beyond
     * 112 bytes): a header update keeps them after the known ones */
    uint8_t *unknown_header_fields;
    uint32_t unknown_header_fields_len;

    struct qcow2_crypt *crypt;       /* encryption (qcow2-crypt.c); NULL without */
};

/* The header length an update writes: qemu's fields and the unknown ones
 * (a version 2 header has no room for them: they go, where qemu would
 * write them where extensions are looked for). */
static inline uint32_t qcow2_written_header_length(const struct qcow2_state *s)
{
    return s->version >= 3 ? QCOW2_HDR_V3_LENGTH + s->unknown_header_fields_len
                           : QCOW2_HDR_V2_LENGTH;
}

static inline struct qcow2_state *qcow2_state(struct qimg_image *img)
{
    return img->opaque;
}

static inline bool qcow2_has_data_file(const struct qcow2_state *s)
{
    return s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE;
}

static inline bool qcow2_header_has_feature_table(const struct qcow2_state *s)
{
    return s->version >= 3 && s->cluster_size >= QCOW2_FEATURE_TABLE_MIN_CLUSTER;
}

static inline bool qcow2_data_file_is_raw(const struct qcow2_state *s)
{
    return s->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
}

static inline uint64_t qcow2_offset_into_cluster(const struct qcow2_state *s, uint64_t off)
{
    return off & (s->cluster_size - 1);
}

/* L1 index and L2 index of a guest offset. */
static inline uint64_t qcow2_l1_index(const struct qcow2_state *s, uint64_t off)
{
    return off >> (s->cluster_bits + s->l2_bits);
}

static inline uint64_t qcow2_l2_index(const struct qcow2_state *s, uint64_t off)
{
    return (off >> s->cluster_bits) & (s->l2_entries - 1);
}

/* Number of L1 entries a disk of `size` bytes needs; false on overflow. */
bool qcow2_l1_entries_for_size(uint64_t size, uint32_t cluster_bits, bool extended_l2,
                               uint64_t *entries);

/* --------------------------------------------------------- qcow2-read.c */

int qcow2_l2_cache_init(struct qcow2_state *s);
void qcow2_l2_cache_free(struct qcow2_state *s);
/* With img->lock held: the cached L2 table at host offset l2_offset, read
 * (and checked) on a miss.  The pointer stays valid while the lock is held. */
int qcow2_l2_cache_get(struct qimg_image *img, uint64_t l2_offset, uint8_t **table);
/* With img->lock held: write every dirty table back (write path). */
int qcow2_l2_cache_flush(struct qimg_image *img);

/* A run of guest bytes with one kind and, for NORMAL/ZERO_ALLOC,
 * contiguous host offsets. */
struct qcow2_mapping {
    enum qcow2_cluster_kind kind;
    uint64_t length;               /* bytes from the guest offset asked */
    uint64_t host_offset;          /* NORMAL/ZERO_ALLOC: of the guest offset asked */
    uint64_t l2_entry;             /* COMPRESSED: the descriptor */
};
/* Map [off, off+len) from its start: the longest uniform run. */
int qcow2_map(struct qimg_image *img, uint64_t off, uint64_t len, struct qcow2_mapping *m);

/* Refcount of a host cluster, read from disk (0 past the refcount table
 * or in a missing refcount block).  refblock: a cluster-sized buffer the
 * caller keeps between calls, *refblock_offset the offset it holds (0 at
 * first), so that a scan reads each block once. */
int qcow2_read_refcount(struct qimg_image *img, uint64_t cluster_index, uint8_t *refblock,
                        uint64_t *refblock_offset, uint64_t *refcount);
/* Refcount entry i of a refcount block in its on-disk form. */
uint64_t qcow2_refblock_get(const struct qcow2_state *s, const uint8_t *refblock, uint64_t i);

int qcow2_read(struct qimg_image *img, uint64_t off, void *buf, size_t len);
int qcow2_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                       struct qimg_extent *ext);

/* ----------------------------------------------------- qcow2-compress.c */

/* Host byte range of a compressed descriptor. */
void qcow2_compressed_range(const struct qcow2_state *s, uint64_t l2_entry,
                            uint64_t *host_off, uint64_t *nbytes);
/* Decompress src into exactly dst_len bytes with the image's compression
 * type (trailing input is ignored, as after the final block). */
int qcow2_decompress(const struct qcow2_state *s, void *dst, size_t dst_len,
                     const void *src, size_t src_len);
/* Read and decompress the compressed cluster described by l2_entry into
 * cluster (cluster_size bytes). */
int qcow2_read_compressed_cluster(struct qimg_image *img, uint64_t l2_entry, uint8_t *cluster);

/* -------------------------------------------------------- qcow2-check.c */

/* qemu-img check: counts references, compares them with the stored
 * refcounts, checks COPIED flags; problems go to qimg_check_log. */
int qcow2_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix);

/* ====================================== write path (refcount, alloc, write) */

/* A cached refcount block (on-disk bytes). */
struct qcow2_refblock {
    uint64_t offset;               /* host offset; 0 = free slot */
    uint8_t *data;
    bool dirty;
    uint64_t last_use;
};
#define QCOW2_REFBLOCK_CACHE 32

/* A guest range whose clusters are being allocated and written outside
 * the lock: other writers to it wait until it is linked. */
struct qcow2_inflight {
    uint64_t start, end;           /* guest bytes, cluster aligned */
    pthread_t owner;               /* its own nested requests do not wait for it */
    struct qcow2_inflight *next;
};

struct qcow2_wstate {
    struct qcow2_refblock refblocks[QCOW2_REFBLOCK_CACHE];
    uint64_t refblock_clock;
    uint64_t refcount_max;
    uint64_t free_cluster_index;   /* no free cluster below it */
    uint64_t free_byte_offset;     /* compressed data: next free byte, 0 = none */
    struct qcow2_inflight *inflight;
    pthread_cond_t inflight_done;
    bool marked_dirty;             /* lazy refcounts: dirty bit set by us */
    bool compressed_written;       /* round the file up to 512 bytes at flush */
    bool writethrough;             /* flush after every request (-t writethrough) */
    bool batch_discards;           /* collect freed ranges, discard them merged */
    uint64_t (*discards)[2];       /* host [start, end) byte ranges, merged */
    size_t nb_discards, discards_cap;
    bool broken;                   /* on-disk refcounts no longer what we hold
                                      (a failed make_empty): write nothing more */
};

/* qcow2-refcount.c, all with img->lock held */
int qcow2_refcount_init(struct qimg_image *img);
void qcow2_refcount_free(struct qcow2_state *s);
int qcow2_get_refcount(struct qimg_image *img, uint64_t cluster, uint64_t *rc);
/* Add delta (may be negative) to the refcounts of count clusters. Every
 * refcount block they need must exist (qcow2_ensure_refblocks). */
int qcow2_update_refcounts(struct qimg_image *img, uint64_t cluster, uint64_t count, int64_t delta);
/* Make sure refcount blocks cover [cluster, cluster+count): 0 when they
 * all existed, 1 when clusters were allocated for new metadata (the
 * caller must look for free clusters again), <0 on error. */
int qcow2_ensure_refblocks(struct qimg_image *img, uint64_t cluster, uint64_t count);
/* Write every dirty refcount block. */
int qcow2_refcount_flush(struct qimg_image *img);
/* The cached bytes of refcount block ti (valid until the next refcount
 * call), or NULL when the table has no block there. */
int qcow2_refblock_peek(struct qimg_image *img, uint64_t ti, const uint8_t **data);
/* A new refcount block for table index ti at free cluster `at`: inside
 * the range it describes it counts itself, else the caller has counted
 * it already. */
int qcow2_new_refblock_at(struct qimg_image *img, uint64_t ti, uint64_t at);
/* Drop the cached copy of the refcount block at offset (not written):
 * its cluster was rewritten directly or freed. */
void qcow2_refblock_forget(struct qimg_image *img, uint64_t offset);
/* Grow s->file_size to cover a cluster range handed out. */
void qcow2_note_used(struct qcow2_state *s, uint64_t cluster, uint64_t count);

/* qcow2-alloc.c, with img->lock held */
/* Allocate a run of 1..n contiguous clusters (refcount 1): *host the byte
 * offset, *got the number. */
int qcow2_alloc_clusters(struct qimg_image *img, uint64_t n, uint64_t *host, uint64_t *got);
/* Allocate size bytes (< one cluster) for compressed data. */
int qcow2_alloc_bytes(struct qimg_image *img, uint64_t size, uint64_t *host);
/* Drop one reference of each cluster of [host, host+bytes); discard:
 * punch clusters that become free. */
int qcow2_free_clusters(struct qimg_image *img, uint64_t host, uint64_t bytes, bool discard);
/* Batched discards (qemu merges the discards of one operation): between
 * begin and end, clusters freed with discard are collected; end discards
 * the merged ranges whose clusters are still free. */
void qcow2_discards_begin(struct qimg_image *img);
int qcow2_discards_end(struct qimg_image *img);
/* Drop the reference an L2 entry holds (normal or compressed cluster). */
int qcow2_free_l2_entry(struct qimg_image *img, uint64_t entry, bool discard);

/* qcow2-write.c */
int qcow2_write_open(struct qimg_image *img, unsigned flags);
void qcow2_write_close(struct qimg_image *img);
int qcow2_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len);
int qcow2_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags);
int qcow2_discard(struct qimg_image *img, uint64_t off, uint64_t len);
int qcow2_write_flush(struct qimg_image *img);
int qcow2_flush(struct qimg_image *img);   /* the driver's .flush: with qemu's flush events */
int qcow2_compress(struct qimg_image *img, const void *buf, size_t len, void *out, size_t *out_len);
int qcow2_write_compressed(struct qimg_image *img, uint64_t off, const void *data, size_t len);
int qcow2_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink);
int qcow2_change_backing(struct qimg_image *img, const char *backing, const char *fmt);
int qcow2_make_empty(struct qimg_image *img);
bool qcow2_has_zero_init_w(struct qimg_image *img);
/* For other metadata writers (bitmaps), with img->lock held: the checks
 * and dirty bit before a first metadata change; flush every cache; write
 * cluster 0 again from the state (extensions included). */
int qcow2_begin_metadata_change(struct qimg_image *img);
int qcow2_flush_locked(struct qimg_image *img);
int qcow2_rewrite_header_locked(struct qimg_image *img);
int qcow2_update_header_on_open(struct qimg_image *img, unsigned flags);
/* Write the L2 table cached for l2_offset now (crash ordering). */
int qcow2_l2_cache_write_now(struct qimg_image *img, uint64_t l2_offset);
/* Mark the cached table at l2_offset modified (qcow2-read.c). */
void qcow2_l2_cache_mark_dirty(struct qimg_image *img, uint64_t l2_offset);
/* Put a table just written at l2_offset into the cache (no read). */
int qcow2_l2_cache_install(struct qimg_image *img, uint64_t l2_offset, const uint8_t *data,
                           uint8_t **table);
/* Does any cached L2 table wait to be written? */
bool qcow2_l2_cache_dirty(struct qimg_image *img);
/* Forget a cached table (its cluster was freed) without writing it. */
void qcow2_l2_cache_drop(struct qimg_image *img, uint64_t l2_offset);
/* Every table changed and not yet written forgotten (an image found corrupt). */
void qcow2_l2_cache_drop_dirty(struct qimg_image *img);
/* With img->lock held: the L2 table for guest offset off, allocated (or
 * copied from a shared one) when needed. */
int qcow2_l2_for_write(struct qimg_image *img, uint64_t off, uint64_t *l2_offset, uint8_t **table);

/* qcow2-prealloc.c: grow from old to new bytes with preallocation mode
 * metadata, falloc or full (takes img->lock); the L1 table already covers
 * the new size, the header size is written by the caller. */
int qcow2_resize_prealloc(struct qimg_image *img, uint64_t old, uint64_t new, const char *mode);
/* A new refcount table (and the refcount blocks it lacks) at `start`,
 * counting start/cluster_size + additional clusters, exactly or with room
 * to grow; new_block (nonzero): a block written for new_index beyond the
 * old table.  *end: the end of the new metadata. */
int qcow2_refcount_area(struct qimg_image *img, uint64_t start, uint64_t additional, bool exact,
                        uint64_t new_index, uint64_t new_block, uint64_t *end);
/* After a shrink (img->lock held, caches flushed): refcount blocks that
 * count nothing but themselves leave the table, which is written whole;
 * the clusters of those counted elsewhere are freed, as qemu does. */
int qcow2_shrink_reftable(struct qimg_image *img);
/* A backing file longer than the old size would show through the new
 * area: qemu makes it read as zeros (zero clusters, zeros written in the
 * old last subcluster), except where falloc/full preallocated it. */
bool qcow2_resize_backing_covers(struct qimg_image *img, uint64_t old);
bool qcow2_resize_needs_zeroing(struct qimg_image *img, uint64_t old, const char *mode);
/* With the new size already set. */
int qcow2_resize_zero_new(struct qimg_image *img, uint64_t old, uint64_t new);
/* Without preallocation: an external data file grows to the new size. */
int qcow2_resize_data_file(struct qimg_image *img, uint64_t new);

/* qcow2-crypt.c: encryption (LUKS and the legacy AES) */
int qcow2_crypt_open(struct qimg_image *img, struct qcow2_state *s, qimg_opts *opts, unsigned flags);
void qcow2_crypt_close(struct qcow2_state *s);
/* Is data en/decrypted (a key is loaded)? */
bool qcow2_crypt_active(const struct qcow2_state *s);
int qcow2_crypt_run(const struct qcow2_state *s, bool encrypt, uint64_t host, uint64_t guest,
                    uint8_t *buf, size_t len);
/* Guest data written to the data file at host (encrypted when it is). */
int qcow2_data_pwrite(struct qimg_image *img, const void *buf, size_t len, uint64_t host, uint64_t guest);
/* 1: an unaligned request on an encrypted image was served; 0: go on. */
int qcow2_crypt_read_unaligned(struct qimg_image *img, uint64_t off, void *buf, size_t len);
int qcow2_crypt_write_unaligned(struct qimg_image *img, uint64_t off, const void *buf, size_t len);
struct qimg_json *qcow2_crypt_info(const struct qcow2_state *s);
int qcow2_crypt_amend(struct qimg_image *img, qimg_opts *opts, bool force);

#endif
