/* The ext2/3/4 driver over libext2fs: what its files (ext.c: I/O manager,
 * open, reading; ext-write.c: creating and writing; ext-mkfs.c: mkfs and
 * min_size) share. */
#ifndef QIMG_FS_EXT_H
#define QIMG_FS_EXT_H
#ifdef HAVE_EXT2FS

#include "ext2fs-dl.h"

#include "fs.h"

/* One cached block of the I/O manager's write-back cache. */
struct ext_cache_slot {
    blk64_t blk;
    bool valid, dirty;
    unsigned char *data;
};

/* What our io_manager reads and writes: one filesystem device.  libext2fs
 * gets it through the channel name "qimg:<address>". */
struct ext_io {
    struct qimg_fs_dev *dev;
    int block_size;
    int err;                      /* the last device error (negative errno) */
    struct ext_cache_slot *cache; /* direct-mapped by block number */
    unsigned nslots;
    unsigned char *run_buf;       /* gathers runs of dirty blocks */
};

struct ext_dirs;

struct ext_fs {
    struct qimg_fs base;
    ext2_filsys e2;
    struct ext_io io;
    struct ext_dirs *dirs;        /* ext-dir.c: directories we add names to */
};

extern io_manager qimg_ext_io_manager;

/* "qimg:<address of io>", malloc'ed. */
char *ext_io_name(struct ext_io *io);

/* Turns a libext2fs error into a negative errno with a message "what:
 * reason" (keeping the device's own message when the device failed). */
int ext_err(struct ext_io *io, errcode_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* com_err's message for a libext2fs error code. */
const char *ext_error_message(errcode_t code);

/* Inodes are read and written as the large structure; fields a small
 * (128-byte) inode lacks read as zero.  The in-inode extended attributes
 * past it are kept on disk by libext2fs. */
typedef struct ext2_inode_large ext_inode;
#define EXT_SMALL(i) ((struct ext2_inode *)(i))

int ext_read_inode(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode);
int ext_write_inode(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode);
/* A new inode: the rest of the on-disk inode (xattr space) is zeroed. */
int ext_write_new_inode(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode);
/* Checks an inode number from a caller or a directory entry. */
int ext_check_ino(struct ext_fs *x, qimg_fs_ino ino);

/* The run of blocks starting at logical block lblk (at most max long):
 * *pblk = 0 for a hole (or an uninitialized extent, which reads as zeros).
 * Every mapped block is checked to lie inside the filesystem. */
int ext_map_run(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode, blk64_t lblk,
                blk64_t max, blk64_t *pblk, blk64_t *len);

/* Calls fn for each entry of a directory ("." and ".." left out, entries
 * checked), bounded even when its blocks are shared; fn returning non-zero
 * stops the walk and is returned. */
typedef int (*ext_dir_fn)(void *opaque, const char *name, size_t len, ext2_ino_t ino);
int ext_dir_walk(struct ext_fs *x, ext2_ino_t dir, ext_dir_fn fn, void *opaque);
/* 1 found (*ino set), 0 absent, <0 error. */
int ext_dir_lookup(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t *ino);

/* Reads file data at off (the caller clips it to the file size). */
int ext_read_data(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, uint64_t off, void *buf,
                  size_t len, size_t *got);

/* Largest file size the filesystem can hold (hostile sizes are refused). */
uint64_t ext_max_file_size(ext2_filsys fs);

/* Timestamps: seconds (with the two epoch bits of the extra field) and
 * nanoseconds; fields missing from small inodes read as 0. */
void ext_set_times(ext2_filsys fs, ext_inode *inode, const struct qimg_fs_attr *a);

/* ext-write.c */
int ext_create(struct qimg_fs *fs, qimg_fs_ino dir, const char *name,
               const struct qimg_fs_attr *attr, const char *symlink_target, qimg_fs_ino *out);
int ext_write(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, const void *buf, size_t len);
int ext_truncate(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size);
int ext_setattr(struct qimg_fs *fs, qimg_fs_ino ino, const struct qimg_fs_attr *attr);
int ext_link(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino ino);
int ext_unlink(struct qimg_fs *fs, qimg_fs_ino dir, const char *name);
int ext_setxattr(struct qimg_fs *fs, qimg_fs_ino ino, const char *name, const void *value,
                 size_t len);

/* ext-dir.c: names added without rescanning directories.
 * lookup: 1 found, 0 absent, -1 not known here (ask libext2fs).
 * add: 1 added, 0 not handled here (use ext2fs_link, then ext_dirs_added),
 * <0 error. */
int ext_dirs_lookup(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t *ino);
int ext_dirs_add(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype);
void ext_dirs_track_new(struct ext_fs *x, ext2_ino_t dir, blk64_t pblk);
int ext_dirs_removed(struct ext_fs *x, ext2_ino_t dir, const char *name);
/* An entry ext2fs_link added (to an indexed directory). */
void ext_dirs_added(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t ino);
void ext_dirs_free(struct ext_fs *x);

/* ext-mkfs.c */
int ext_min_size(const struct qimg_fs_usage *u, const struct qimg_mkfs_params *p,
                 uint64_t *size);
int ext_mkfs(struct qimg_fs_dev *dev, const struct qimg_mkfs_params *p);

#endif
#endif
