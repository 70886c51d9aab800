/* The FAT filesystem driver's internals, shared by fat.c (open, close, the
 * FAT, nodes, attributes), fat-dir.c (directories), fat-file.c (file data)
 * and fat-mkfs.c (mkfs, min_size). */
#ifndef QIMG_FAT_INT_H
#define QIMG_FAT_INT_H

#include "fat-format.h"
#include "fs.h"

/* A hash index from a 32-bit hash to directory slots (several slots may
 * share a hash; stale slots are possible and checked by the caller). */
struct fat_ix {
    uint32_t cap, used;       /* cap: a power of two or 0 */
    uint32_t *hash, *slot1;   /* slot1: slot + 1, 0 = empty */
};
void fat_ix_free(struct fat_ix *ix);
void fat_ix_insert(struct fat_ix *ix, uint32_t h, uint32_t slot);
/* Position of the first / next entry with hash h, UINT32_MAX at the end. */
uint32_t fat_ix_first(const struct fat_ix *ix, uint32_t h);
uint32_t fat_ix_next(const struct fat_ix *ix, uint32_t h, uint32_t pos);
/* Hash of a name folded with fat_upcase, and of a raw 8.3 name. */
uint32_t fat_name_hash(const uint16_t *name, size_t len);
uint32_t fat_short_hash(const uint8_t name[11]);

/* A directory's entries, loaded whole and kept while the handle is open
 * (within a byte budget); writes go to both the copy and the device. */
struct fat_dir {
    uint8_t *data;            /* nent * 32 bytes */
    uint32_t nent;
    uint32_t *clusters;       /* its cluster chain; NULL for the fixed root */
    uint32_t ncl;
    uint32_t free_hint;       /* no free slot before this one */
    bool indexed;             /* names and shorts built (lookups, creates) */
    struct fat_ix names;      /* long and short names, case-folded -> slot */
    struct fat_ix shorts;     /* raw 8.3 names -> slot */
    uint8_t tail_basis[11];   /* the last basis given a "~N" tail... */
    uint32_t tail_next;       /* ...and the N to try first next time */
};

/* A node: a file or directory named by an entry of its parent directory.
 * Its id is index + 1; index 0 is the root. */
struct fat_node {
    uint32_t parent;          /* index of the parent directory's node */
    uint32_t slot;            /* index of the short entry in the parent */
    uint8_t nlfn;             /* long-name entries just before it */
    bool is_dir, dead;
    bool chain_ok;            /* file chain checked against the size */
    uint8_t ent[FAT_DIRENT_SIZE];   /* the short entry as on disk */
    struct fat_dir *dir;      /* directories: the cached entries */
    uint32_t nclusters, last_cluster;         /* valid with chain_ok */
    uint32_t cur_index, cur_cluster;          /* position cache (cur_cluster 0: none) */
};

struct fat_fs {
    struct qimg_fs base;
    struct fat_bpb bpb;
    unsigned active_fat;      /* the FAT read (FAT32 with mirroring off) */
    bool mirror;              /* write every FAT copy */
    uint8_t *fat;             /* the FAT, fat_bytes long */
    size_t fat_bytes;
    uint8_t *fat_dirty;       /* one flag per FAT sector */
    uint32_t free_clusters, next_free;
    bool marked_dirty;        /* the volume is marked "not cleanly unmounted" on disk */
    uint8_t boot[512];        /* the boot sector as read */
    bool changed;
    struct fat_node *nodes;
    uint32_t nnodes, node_cap;
    uint64_t *hkeys;          /* hash: (parent, slot) and dir cluster -> node */
    uint32_t *hvals;
    uint32_t hcap, hcount;
    uint64_t dir_cache_bytes, dir_cache_budget;
    unsigned walking;         /* directory walks in progress */
};

static inline struct fat_fs *FATFS(struct qimg_fs *fs) { return (struct fat_fs *)fs; }
static inline uint32_t fat_max_cluster(const struct fat_fs *f) { return f->bpb.clusters + 1; }
static inline uint64_t fat_cluster_offset(const struct fat_fs *f, uint32_t c)
{
    return ((uint64_t)f->bpb.first_data_sector + (uint64_t)(c - 2) * f->bpb.sectors_per_cluster) *
           f->bpb.bytes_per_sector;
}
static inline uint32_t fat_ent_cluster(const uint8_t *ent)
{
    return (uint32_t)(ent[20] | ent[21] << 8) << 16 | (uint32_t)(ent[26] | ent[27] << 8);
}
static inline uint32_t fat_ent_size(const uint8_t *ent)
{
    return (uint32_t)ent[28] | (uint32_t)ent[29] << 8 | (uint32_t)ent[30] << 16 |
           (uint32_t)ent[31] << 24;
}
void fat_ent_set_cluster(uint8_t *ent, uint32_t c);
void fat_ent_set_size(uint8_t *ent, uint32_t size);

/* fat.c: the FAT */
/* Next cluster after c: *next is a cluster or FAT_EOC; a free, bad or
 * out-of-range entry is an error naming what. */
int fat_next(struct fat_fs *f, uint32_t c, uint32_t *next, const char *what);
void fat_set(struct fat_fs *f, uint32_t c, uint32_t value);
/* Allocates n clusters as one chain (contiguous where possible, starting
 * at prefer when it is free), linked after `after` (0: a new chain).
 * *first gets the first cluster of the new part. */
int fat_alloc_chain(struct fat_fs *f, uint32_t after, uint32_t prefer, uint32_t n,
                    uint32_t *first, uint32_t *last);
/* Frees the chain from c (bounded; stops at an invalid link). */
void fat_free_chain(struct fat_fs *f, uint32_t c);
/* Marks the volume not cleanly unmounted before the first change. */
int fat_begin_change(struct fat_fs *f);

/* fat.c: nodes */
int fat_node_by_ino(struct fat_fs *f, qimg_fs_ino ino, uint32_t *idx);
/* The node of the entry at slot of dir (raw = its short entry), made when new. */
int fat_node_get(struct fat_fs *f, uint32_t dir, uint32_t slot, uint8_t nlfn,
                 const uint8_t *raw, uint32_t *idx);
/* Writes a node's short entry back to its parent directory. */
int fat_node_store(struct fat_fs *f, uint32_t idx);

/* fat-dir.c */
int fat_dir_load(struct fat_fs *f, uint32_t idx, struct fat_dir **out);
void fat_dir_free(struct fat_dir *d);
void fat_dir_cache_trim(struct fat_fs *f);
uint64_t fat_dir_cache_budget(void);
int fat_dir_write_slots(struct fat_fs *f, struct fat_dir *d, uint32_t first, uint32_t n);
int fat_lookup(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino *out);
int fat_readdir(struct qimg_fs *fs, qimg_fs_ino dir, qimg_fs_dir_cb cb, void *opaque);
int fat_create(struct qimg_fs *fs, qimg_fs_ino dir, const char *name,
               const struct qimg_fs_attr *attr, const char *symlink_target, qimg_fs_ino *out);
int fat_unlink(struct qimg_fs *fs, qimg_fs_ino dir, const char *name);

/* fat-file.c */
int fat_read(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, void *buf, size_t len,
             size_t *got);
int fat_write(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, const void *buf, size_t len);
int fat_truncate(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size);

/* fat-mkfs.c */
int fat_mkfs(struct qimg_fs_dev *dev, const struct qimg_mkfs_params *p);
int fat_min_size(const struct qimg_fs_usage *u, const struct qimg_mkfs_params *p,
                 uint64_t *size);

#endif
