/* qimg - the qcow2 snapshot table as qemu reads it: strictly when an image
 * is opened, tolerantly when it is checked (qcow2-snaptable.c). */
#ifndef QIMG_QCOW2_SNAPTABLE_H
#define QIMG_QCOW2_SNAPTABLE_H

#include "qcow2.h"

/* Read [off, off + len) of the image file (file_size bytes long); what
 * lies past its end reads as zeros, as qemu's block layer returns it.  A
 * request ending beyond qemu's largest offset fails with -EIO. */
int qcow2_pread_zero_filled(struct qimg_image *img, uint64_t file_size, void *buf,
                            uint64_t len, uint64_t off);

/* The header fields of the table (count, offset) with qemu's open rules
 * and messages. */
int qcow2_snaptable_validate(const struct qcow2_state *s);

/* Read s->nb_snapshots entries at s->snapshots_offset into s->snapshots
 * (freed first).  Bytes past the end of the file read as zeros, as in
 * qemu.  An entry with more than 1024 bytes of extra data or a table
 * beyond 64 MiB is an error, unless repair: then the extra data is cut to
 * 1024 bytes, the entries from the first one that ends beyond 64 MiB are
 * dropped (s->nb_snapshots lowered), each reported with qimg_check_log.
 * *extra_dropped / *overhanging count them; *table_size gets the bytes the
 * table occupies on disk (the last entry unpadded).  Any of the out
 * pointers may be NULL. */
int qcow2_snaptable_read(struct qimg_image *img, struct qcow2_state *s, bool repair,
                         uint32_t *extra_dropped, uint32_t *overhanging, uint64_t *table_size);
void qcow2_snaptable_free(struct qcow2_state *s);

/* The check's view of the table. */
struct qcow2_snaptable_check {
    uint64_t table_size;     /* bytes counted as referenced */
    uint64_t old_size;       /* what the table occupied when read */
    uint32_t to_fix;         /* corruptions that rewriting the table fixes */
    /* what the table adds to the check's result, kept apart (as qemu
     * does) so that a refcount rebuild does not count it as fixed: the
     * caller adds it at the end */
    struct qimg_check_result res;
};

/* First step of qemu-img check: read the table again, tolerating (and
 * with -r all repairing) what qemu tolerates: too many entries, too much
 * extra data, a table beyond 64 MiB; report entries of a version 3 image
 * without the disk size in their extra data.  <0 stops the check. */
int qcow2_snaptable_check(struct qimg_image *img, unsigned fix, struct qcow2_snaptable_check *st);
/* Last step with -r all: write the table anew when an entry needed it. */
int qcow2_snaptable_check_fix(struct qimg_image *img, unsigned fix,
                              struct qcow2_snaptable_check *st);

/* qcow2-snapshot.c: write s->snapshots as a new table, point the header to
 * it, then drop the old one (old_size bytes at its offset).  A failure to
 * free the old table is logged as qemu does and is not an error. */
int qcow2_snapshot_rewrite_table(struct qimg_image *img, uint64_t old_size);
/* The same outside a check: every entry written with the version 3 extra
 * data (VM state size, disk size, icount). */
int qcow2_snapshot_write_table(struct qimg_image *img);

#endif
