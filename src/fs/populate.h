/* Filling a new filesystem from a local tree: a directory or a tar archive
 * (populate.c), used by qimg_create_from (create-from.c).
 *
 * The tree is read twice: once to measure it (struct qimg_fs_usage, from
 * which the driver derives the filesystem size), once to copy it.  A tar
 * archive that cannot be read twice (stdin, a pipe) is first spooled to an
 * unlinked temporary file in $TMPDIR (default /var/tmp): it costs the
 * archive's (compressed) size on disk, and it keeps the image from ever
 * being written before its size is known.
 */
#ifndef QIMG_FS_POPULATE_H
#define QIMG_FS_POPULATE_H

#include "fs.h"

struct qimg_fs_source;

struct qimg_populate_opts {
    /* Reproducible builds: every time later than epoch becomes epoch, and
     * atime is the (clamped) mtime, since reading the source moves atime. */
    bool reproducible;
    int64_t epoch;
    /* Times of directories a tar archive implies without an entry of their
     * own (and of the root when the archive has no "./"). */
    int64_t now;
    /* Called as data is copied, with the bytes of source data read so far
     * (about data_blocks_4k * 4096 of the usage pass in the end). */
    void (*progress)(uint64_t done, void *opaque);
    void *opaque;
    /* A directory source may hold the image being written: never copied. */
    bool has_exclude;
    uint64_t exclude_dev, exclude_ino;
};

struct qimg_populate_stats {
    uint64_t bytes;           /* data bytes read from the source */
    uint64_t skipped;         /* entries the filesystem cannot hold (warned) */
    uint64_t link_copies;     /* hard links stored as separate copies */
    uint64_t xattrs_dropped;  /* extended attributes the filesystem refused */
};

/* "-" is a tar archive on stdin.  A directory is walked with lstat (links
 * are never followed below it; SOURCE itself may be a link to one). */
int qimg_fs_source_open(struct qimg_fs_source **out, const char *path);
void qimg_fs_source_close(struct qimg_fs_source *src);
bool qimg_fs_source_is_tar(const struct qimg_fs_source *src);

/* First pass: what the tree holds.  *newest: the latest mtime found (the
 * epoch of a --reproducible build without SOURCE_DATE_EPOCH).  With
 * links_as_copies (a filesystem without hard links), every further name of
 * a regular file also counts as a file with its data. */
int qimg_fs_source_usage(struct qimg_fs_source *src, struct qimg_fs_usage *u,
                         int64_t *newest, bool links_as_copies);

/* Second pass: copy the tree into fs (opened writable, empty). */
int qimg_fs_source_populate(struct qimg_fs_source *src, struct qimg_fs *fs,
                            const struct qimg_populate_opts *o,
                            struct qimg_populate_stats *st);

#endif
