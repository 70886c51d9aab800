/* qimg - the VHDX format (Microsoft's MS-VHDX, "VHDX Format Specification
 * v1.0"): shared definitions of the driver's files.
 *
 * On-disk layout (every integer little-endian, GUIDs in Microsoft's mixed
 * byte order, kept as the 16 bytes found on disk):
 *
 *   0      file type identifier: "vhdxfile", then the creator (UTF-16,
 *          512 bytes); never written after creation
 *   64 KiB header 1, 128 KiB header 2 (4 KiB each):
 *            0 "head"           4 CRC-32C of the 4 KiB, this field as zero
 *            8 sequence number (the valid header with the larger one is current)
 *           16 file write GUID  32 data write GUID  48 log GUID (zero: no log)
 *           64 log version (0)  66 version (1)  68 log length  72 log offset
 *   192 KiB region table, 256 KiB its copy (64 KiB each): "regi", CRC-32C
 *          of the 64 KiB, entry count (<= 2047), then 32-byte entries
 *          (GUID, file offset u64, length u32, required u32).  The regions
 *          we know: the BAT and the metadata region, 1 MiB aligned.
 *   the log (at the headers' log offset): a ring of entries, each a 4 KiB
 *          descriptor sector or more ("loge" header of 64 bytes, then 32-byte
 *          "desc" (one 4 KiB sector to write) or "zero" (a range to zero)
 *          descriptors) followed by one "data" sector per "desc".  Every
 *          change to the region table, the metadata region, the BAT and
 *          the sector bitmaps goes through the log, so a crash in the
 *          middle of one is replayed at the next open.
 *   the metadata region: a 64 KiB table ("metadata", entry count, 32-byte
 *          entries: item GUID, offset, length, flags) then the items:
 *          file parameters (block size, leave-blocks-allocated, has-parent),
 *          virtual disk size, virtual disk id, logical and physical sector
 *          size, and for a differencing disk the parent locator.
 *   the BAT: one u64 a block, state in bits 0-2, file offset in MiB in
 *          bits 20-63.  After each chunk_ratio payload entries comes one
 *          sector-bitmap entry (a 1 MiB block of one bit per sector: which
 *          sectors a differencing disk holds itself).
 */
#ifndef QIMG_VHDX_H
#define QIMG_VHDX_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

#define VHDX_MiB (1ull << 20)
#define VHDX_HEADER1_OFF (64u << 10)
#define VHDX_HEADER2_OFF (128u << 10)
#define VHDX_REGION1_OFF (192u << 10)
#define VHDX_REGION2_OFF (256u << 10)
#define VHDX_HEADER_SIZE 4096u
#define VHDX_REGION_SIZE (64u << 10)
#define VHDX_META_TABLE_SIZE (64u << 10)
#define VHDX_LOG_SECTOR 4096u
#define VHDX_MAX_ENTRIES 2047u
#define VHDX_MAX_DISK_SIZE (64ull << 40)
#define VHDX_MIN_BLOCK (1u << 20)
#define VHDX_MAX_BLOCK (256u << 20)
#define VHDX_SB_BLOCK (1u << 20)          /* a sector bitmap block */
#define VHDX_SECTORS_PER_SB (1ull << 23)  /* sectors one bitmap block covers */

/* BAT entry states */
enum {
    VHDX_PAYLOAD_NOT_PRESENT = 0,
    VHDX_PAYLOAD_UNDEFINED = 1,
    VHDX_PAYLOAD_ZERO = 2,
    VHDX_PAYLOAD_UNMAPPED = 3,
    VHDX_PAYLOAD_FULLY_PRESENT = 6,
    VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
    VHDX_SB_NOT_PRESENT = 0,
    VHDX_SB_PRESENT = 6,
};
#define VHDX_BAT_STATE(e) ((unsigned)((e) & 7))
#define VHDX_BAT_OFFSET(e) ((e) & ~(VHDX_MiB - 1))

/* header fields */
enum {
    VH_SIG = 0, VH_CRC = 4, VH_SEQ = 8, VH_FILE_GUID = 16, VH_DATA_GUID = 32,
    VH_LOG_GUID = 48, VH_LOG_VERSION = 64, VH_VERSION = 66, VH_LOG_LENGTH = 68,
    VH_LOG_OFFSET = 72,
};

/* A byte range of the file that one structure owns. */
struct vhdx_range { uint64_t start, end; };

/* One change the log holds: a 4 KiB sector (data) or a range to zero
 * (data NULL). */
struct vhdx_log_op {
    uint64_t off, len;
    uint8_t *data;
};

/* The replay a log calls for, found at open. */
struct vhdx_log_replay {
    struct vhdx_log_op *ops;
    size_t nops;
    uint64_t flushed_offset, last_offset;
};

struct vhdx_state {
    uint8_t header[VHDX_HEADER_SIZE];   /* the current header as on disk */
    int cur_header;                     /* 0: at 64 KiB, 1: at 128 KiB */
    uint64_t log_offset;
    uint32_t log_length;
    bool log_region_ok;                 /* log offset and length are usable */

    uint64_t bat_offset, meta_offset;
    uint32_t bat_length, meta_length;
    struct vhdx_range regions[3];       /* log, then the regions as registered */
    int nregions;

    uint32_t block_size;
    uint32_t logical_sector, physical_sector;
    bool leave_allocated, has_parent;
    uint64_t disk_size;
    uint8_t disk_id[16];
    uint32_t chunk_ratio;
    uint64_t payload_blocks, bat_entries;
    uint64_t *bat;                      /* host order */

    uint64_t file_size;                 /* the file's length as we know it */
    uint64_t alloc_offset;              /* where the next block goes */

    /* a log found at open: replayed (read-write) or laid over every read
     * (read-only) */
    struct vhdx_log_replay pending;
    bool log_replayed_on_open;
    bool log_corrupt;                   /* kept only for check -r */
    bool log_guid_stale;                /* a log GUID naming no entry */
    char *log_error;

    /* write session */
    bool writable;
    bool session_started;               /* headers carry our file write GUID */
    bool data_guid_changed;
    bool log_guid_set;
    uint32_t log_head;                  /* where the next entry goes */
    uint64_t log_seq;                   /* the last entry's sequence number */
    uint8_t *dirty_bat;                 /* one flag a 4 KiB sector of the BAT */
    uint64_t ndirty;
    pthread_mutex_t alloc_lock;         /* one block allocation at a time */

    /* parent locator (differencing disks) */
    char *parent_linkage, *parent_linkage2;
    char *parent_relative, *parent_absolute, *parent_volume;
    struct vhdx_bitmap **sb;            /* per chunk, loaded at first use */
    uint64_t nsb;                       /* entries of sb */
    uint64_t sb_ndirty;                 /* changed 4 KiB sectors of them */
    uint64_t sb_loaded;                 /* how many are in memory */
};

/* One chunk's sector bitmap block in memory (a differencing disk): a bit
 * a logical sector, set when this file holds the sector itself. */
struct vhdx_bitmap {
    uint8_t *bits;                              /* VHDX_SB_BLOCK bytes */
    uint8_t dirty[VHDX_SB_BLOCK / VHDX_LOG_SECTOR];   /* sectors to commit */
};

static inline struct vhdx_state *vhdx_state(struct qimg_image *img) { return img->opaque; }

/* vhdx-header.c */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len);
/* CRC-32C of buf with the 4 bytes at crc_off taken as zero */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t crc_off);
void vhdx_guid_generate(uint8_t *g);
bool vhdx_guid_is_zero(const uint8_t *g);
void vhdx_guid_format(const uint8_t *g, char out[39]);   /* "{xxxxxxxx-...}" */
int vhdx_guid_parse(const char *s, uint8_t *g);
int vhdx_read_headers(struct qimg_image *img, struct vhdx_state *s);
int vhdx_write_header(struct qimg_image *img, struct vhdx_state *s);
int vhdx_read_regions(struct qimg_image *img, struct vhdx_state *s);
/* Does [start, end) overlap a known structure?  Prints qemu's message. */
bool vhdx_range_overlaps(const struct vhdx_state *s, uint64_t start, uint64_t end, bool report);
void vhdx_range_add(struct vhdx_state *s, uint64_t start, uint64_t end);
/* Read file bytes as the metadata stands (the pending log laid over them). */
int vhdx_pread(struct qimg_image *img, struct vhdx_state *s, void *buf, size_t len, uint64_t off);
/* Start a write session: headers updated with new GUIDs before anything
 * else is written (user_visible: also the data write GUID). */
int vhdx_begin_write(struct qimg_image *img, struct vhdx_state *s, bool user_visible);
int vhdx_set_log_guid(struct qimg_image *img, struct vhdx_state *s, bool set);

/* vhdx-log.c */
int vhdx_log_open(struct qimg_image *img, struct vhdx_state *s, unsigned flags);
int vhdx_log_replay(struct qimg_image *img, struct vhdx_state *s);
void vhdx_log_overlay(const struct vhdx_state *s, uint8_t *buf, size_t len, uint64_t off);
void vhdx_log_free(struct vhdx_log_replay *r);
/* Write sectors (4 KiB each, at 4 KiB-aligned offsets) through the log:
 * log entry, flush, in place, flush. */
int vhdx_log_write_sectors(struct qimg_image *img, struct vhdx_state *s,
                           const uint64_t *offs, uint8_t *const *data, size_t n);

/* vhdx-meta.c */
int vhdx_read_metadata(struct qimg_image *img, struct vhdx_state *s);
/* The metadata region a new disk starts with (64 KiB table + items);
 * *len set to the bytes to write. */
uint8_t *vhdx_build_metadata(uint32_t block_size, uint64_t disk_size, bool fixed,
                             const char *parent_linkage, const char *relative,
                             const char *absolute, size_t *len);
int vhdx_meta_item_update(struct qimg_image *img, struct vhdx_state *s, const uint8_t *guid,
                          const void *value, uint32_t len);
extern const uint8_t vhdx_guid_disk_size[16];

/* vhdx-bat.c */
void vhdx_geometry(uint64_t disk_size, uint32_t block_size, uint32_t lss, bool has_parent,
                   uint32_t *chunk_ratio, uint64_t *payload_blocks, uint64_t *entries);
int vhdx_read_bat(struct qimg_image *img, struct vhdx_state *s, bool for_check, int64_t *errors);
uint64_t vhdx_bat_index(const struct vhdx_state *s, uint64_t block);
int vhdx_read(struct qimg_image *img, uint64_t off, void *buf, size_t len);
int vhdx_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len);
int vhdx_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags);
int vhdx_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext);
/* Write the BAT sectors changed since the last commit through the log. */
int64_t vhdx_check_entries(struct vhdx_state *s, uint64_t file_size);
int vhdx_alloc_bitmaps(struct qimg_image *img, struct vhdx_state *s);
int vhdx_bat_commit(struct qimg_image *img, struct vhdx_state *s);
void vhdx_bat_set(struct vhdx_state *s, uint64_t index, uint64_t entry);
uint64_t vhdx_used_end(const struct vhdx_state *s);
/* Forget the bitmaps held in memory (after they changed on disk). */
void vhdx_bitmaps_drop(struct vhdx_state *s);

/* The parent locator item (VHDX type) into p; its length. */
size_t vhdx_build_locator(uint8_t *p, const char *linkage, const char *relative);

/* vhdx-chain.c */
int vhdx_parent_linkage(const char *path, char out[39]);
int vhdx_change_backing(struct qimg_image *img, const char *backing, const char *fmt);
int vhdx_make_empty(struct qimg_image *img);

/* vhdx-resize.c */
int vhdx_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink);

#endif
