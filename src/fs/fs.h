/* Filesystems inside images: the interface between the filesystem drivers
 * (ext.c for ext2/3/4 through libext2fs, fat.c for FAT12/16/32), the
 * partition tables (part.c), the tree walker that fills a new filesystem
 * (populate.c) and the operations of the library (fsops.c: ls, cat,
 * copy-out, copy-in, create --from).
 *
 * A filesystem lives in a byte range of an image (a whole disk or one
 * partition), read and written through qimg_read/qimg_write, so it works on
 * every format and through backing chains; writes land in the top image only.
 *
 * Nodes are named by a driver-defined 64-bit id (the inode number for ext,
 * an id of the driver's choosing for FAT); fs->root is the root directory.
 * Every function returns 0 or a negative errno with qimg_error() set.
 */
#ifndef QIMG_FS_H
#define QIMG_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "qimg.h"

/* ------------------------------------------------------------- the device */

/* The byte range of an image that holds one filesystem. */
struct qimg_fs_dev {
    qimg_image *img;
    uint64_t offset;          /* start of the filesystem in the image */
    uint64_t size;            /* its length in bytes */
    bool writable;
    /* Reproducible builds: when non-zero, the time (seconds since the
     * epoch) a driver records for its own bookkeeping, such as the ext
     * superblock's last write time; 0 = the current time.  mkfs with
     * params->reproducible sets it to params->now. */
    int64_t now;
};

int qimg_fs_dev_read(struct qimg_fs_dev *dev, uint64_t off, void *buf, size_t len);
int qimg_fs_dev_write(struct qimg_fs_dev *dev, uint64_t off, const void *buf, size_t len);
int qimg_fs_dev_zero(struct qimg_fs_dev *dev, uint64_t off, uint64_t len);
int qimg_fs_dev_flush(struct qimg_fs_dev *dev);

/* ------------------------------------------------------------- attributes */

typedef uint64_t qimg_fs_ino;

struct qimg_fs_attr {
    uint32_t mode;            /* S_IFMT type bits | permission bits (07777) */
    uint32_t uid, gid;
    uint64_t size;            /* bytes (regular files, symlink target length) */
    uint32_t nlink;
    uint64_t rdev;            /* device numbers of block/char nodes (makedev) */
    int64_t atime, mtime, ctime, crtime;          /* seconds since the epoch */
    uint32_t atime_ns, mtime_ns, ctime_ns, crtime_ns;
};

/* What a tree to copy into a new filesystem holds; the walker fills it in a
 * first pass, the driver turns it into a minimum filesystem size. */
struct qimg_fs_usage {
    uint64_t files, dirs, symlinks, others;  /* others: devices, fifos, sockets */
    uint64_t hardlinks;                      /* extra names of already counted files */
    uint64_t data_bytes;      /* sum of regular file sizes (apparent) */
    uint64_t data_blocks_4k;  /* sum over files of allocated 4 KiB blocks (sparse-aware) */
    uint64_t name_bytes;      /* sum of name lengths */
    uint64_t xattr_bytes;     /* sum of xattr names + values */
    uint64_t symlink_bytes;   /* sum of symlink target lengths */
    uint64_t max_dir_entries; /* entries of the largest directory */
    /* The top directory alone (FAT12/16 have a fixed-size root): its
     * entries and the sum of their name lengths; both 0 when not counted
     * (then drivers assume the largest directory may be the top one). */
    uint64_t root_entries, root_name_bytes;
};

/* How to make a new filesystem. */
struct qimg_mkfs_params {
    const char *type;         /* "ext2", "ext3", "ext4", "vfat" */
    const char *label;        /* NULL = none */
    uint64_t inodes;          /* ext: minimum number of inodes, 0 = driver's default */
    /* Reproducible builds: when set, every UUID, volume id and hash seed is
     * derived from seed, and every time the filesystem records is now. */
    bool reproducible;
    uint64_t seed;
    int64_t now;              /* seconds since the epoch: mkfs time */
};

/* --------------------------------------------------------------- a driver */

struct qimg_fs;

typedef int (*qimg_fs_dir_cb)(void *opaque, const char *name, qimg_fs_ino ino);

struct qimg_fs_driver {
    const char *name;         /* "ext", "vfat" */

    /* 1 when dev holds this filesystem, 0 when not, <0 on I/O error.
     * Reads only the superblock / boot sector. */
    int (*probe)(struct qimg_fs_dev *dev);
    /* Open for reading, or for writing when dev->writable.  A writable open
     * refuses (clear error, nothing written) a filesystem that is dirty or
     * needs recovery, or whose features the driver cannot write safely. */
    int (*open)(struct qimg_fs_dev *dev, struct qimg_fs **out);
    /* Write back everything (bitmaps, counters, FAT copies) and free.
     * Returns the first error; the handle is freed either way. */
    int (*close)(struct qimg_fs *fs);

    /* Reading.  Names are bytes without '/'; "." and ".." are never given to
     * readdir's callback nor accepted by lookup (the caller resolves them).
     * lookup returns -ENOENT (with no error message set) when absent. */
    int (*lookup)(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino *out);
    int (*getattr)(struct qimg_fs *fs, qimg_fs_ino ino, struct qimg_fs_attr *attr);
    /* Calls cb for each entry in on-disk order; cb returning non-zero stops
     * the walk and is returned. */
    int (*readdir)(struct qimg_fs *fs, qimg_fs_ino dir, qimg_fs_dir_cb cb, void *opaque);
    /* Reads up to len bytes at off; *got = bytes read (short only at EOF). */
    int (*read)(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, void *buf, size_t len,
                size_t *got);
    /* Next data range at or after off (holes are skipped by copy-out to keep
     * files sparse).  *start = *end = size when there is none.  May be NULL:
     * then the whole file is data. */
    int (*next_data)(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, uint64_t *start,
                     uint64_t *end);
    /* Symlink target, NUL-terminated; -ENAMETOOLONG when it does not fit. */
    int (*readlink)(struct qimg_fs *fs, qimg_fs_ino ino, char *buf, size_t len);
    /* Extended attributes: list calls cb(name, value, len) for each. May be NULL. */
    int (*listxattr)(struct qimg_fs *fs, qimg_fs_ino ino,
                     int (*cb)(void *opaque, const char *name, const void *value,
                               size_t len),
                     void *opaque);

    /* Writing (only on a writable open).  create makes a node of the type in
     * attr->mode (regular file, directory, symlink with target, device, fifo,
     * socket; -ENOTSUP where the filesystem cannot hold it), named name in
     * dir, with attr's owner, mode and times; -EEXIST when the name exists. */
    int (*create)(struct qimg_fs *fs, qimg_fs_ino dir, const char *name,
                  const struct qimg_fs_attr *attr, const char *symlink_target,
                  qimg_fs_ino *out);
    /* Writes into a regular file, growing it; ranges never written stay holes
     * where the filesystem has them (zeros otherwise). */
    int (*write)(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, const void *buf,
                 size_t len);
    /* Sets the size (truncate or extend with a hole). */
    int (*truncate)(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size);
    /* Sets mode permission bits, owner and times from attr (type bits ignored).
     * Called after the data is written, so mtime sticks. */
    int (*setattr)(struct qimg_fs *fs, qimg_fs_ino ino, const struct qimg_fs_attr *attr);
    /* Adds a name for an existing non-directory node (-ENOTSUP on FAT). */
    int (*link)(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino ino);
    /* Removes a name (non-directory), freeing the node with its last link. */
    int (*unlink)(struct qimg_fs *fs, qimg_fs_ino dir, const char *name);
    int (*setxattr)(struct qimg_fs *fs, qimg_fs_ino ino, const char *name,
                    const void *value, size_t len);

    /* Making a filesystem.  min_size: the smallest device size (bytes) that
     * holds the tree described by u, with the driver's own headroom. */
    int (*min_size)(const struct qimg_fs_usage *u, const struct qimg_mkfs_params *p,
                    uint64_t *size);
    /* Lays out an empty filesystem on the whole of dev (writable). */
    int (*mkfs)(struct qimg_fs_dev *dev, const struct qimg_mkfs_params *p);
};

/* Every filesystem handle starts with this. */
struct qimg_fs {
    const struct qimg_fs_driver *drv;
    struct qimg_fs_dev dev;
    qimg_fs_ino root;
    const char *type;         /* "ext2", "ext3", "ext4", "fat12", "fat16", "fat32" */
};

extern const struct qimg_fs_driver qimg_fs_ext;
extern const struct qimg_fs_driver qimg_fs_vfat;

/* The driver for a --fs name ("ext2", "ext3", "ext4", "vfat"), or NULL. */
const struct qimg_fs_driver *qimg_fs_driver_by_type(const char *type);
/* Probes dev with every driver; -EINVAL with a clear error when none fits. */
int qimg_fs_probe_open(struct qimg_fs_dev *dev, struct qimg_fs **out);

/* ------------------------------------------------------------- partitions */

enum qimg_part_scheme { QIMG_PART_NONE, QIMG_PART_MBR, QIMG_PART_GPT };

/* Finds partition number n (1-based, as Linux numbers them: MBR primaries
 * 1-4, logical partitions from 5; GPT entries in table order) in img and
 * gives its byte range.  Errors clearly when there is no partition table or
 * no such partition; every field read is checked against the image size. */
int qimg_part_find(qimg_image *img, unsigned n, uint64_t *offset, uint64_t *size);
/* Writes a partition table with one partition from 1 MiB to the end (GPT:
 * to the start of the backup table) of the given type ("linux" or "fat");
 * reproducible when seed is set (GPT GUIDs, MBR disk signature derived from
 * it).  Gives the partition's byte range. */
int qimg_part_write(qimg_image *img, enum qimg_part_scheme scheme, const char *kind,
                    bool reproducible, uint64_t seed, uint64_t *offset, uint64_t *size);
/* Bytes a partition table of that scheme adds around the filesystem. */
uint64_t qimg_part_overhead(enum qimg_part_scheme scheme);
/* Fills MBR partition entry i (0..3) of sector: status (0x80: active),
 * type, start and count in sectors, CHS fields in a geometry of heads and
 * secs per track (shared with vvfat's MBR). */
void qimg_mbr_put_entry(uint8_t *sector, int i, uint8_t status, uint8_t type, uint64_t start,
                        uint64_t count, unsigned heads, unsigned secs);

/* ------------------------------------------------------------- populating */

/* Deterministic pseudo-random bytes for reproducible builds (UUIDs, seeds):
 * fills buf from seed and a purpose string, so each use gets its own bytes. */
void qimg_fs_derive_bytes(uint64_t seed, const char *purpose, void *buf, size_t len);

#endif
