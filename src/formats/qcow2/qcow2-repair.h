/* qimg - qcow2 repair (qemu-img check -r leaks / -r all, and the repair
 * of a dirty image when it is opened read-write).  The check
 * (qcow2-check.c) finds what is wrong and calls these to change the
 * image; everything here runs with img->lock held and needs the write
 * state (an image opened read-write). */
#ifndef QIMG_QCOW2_REPAIR_H
#define QIMG_QCOW2_REPAIR_H

#include "qcow2.h"

/* The references the check counted, one counter per host cluster: the
 * rebuild reads them and counts the clusters it allocates for the new
 * refcount structures in them (set grows the map). */
struct qcow2_refcount_map {
    void *opaque;
    uint64_t (*get)(void *opaque, uint64_t cluster);
    int (*set)(void *opaque, uint64_t cluster, uint64_t value);
    uint64_t (*nb_clusters)(void *opaque);   /* clusters the map covers */
    /* the snapshot table as the check read it: metadata the new
     * structures must not overwrite (qemu's overlap check) */
    uint64_t snaptable_offset, snaptable_size;
};

/* Set the stored refcount of a cluster (its refcount block exists) from
 * `stored` to `counted`. */
int qcow2_repair_refcount(struct qimg_image *img, uint64_t cluster, uint64_t stored,
                          uint64_t counted);
/* Write the refcount changes made above to the disk. */
int qcow2_repair_refcounts_flush(struct qimg_image *img);

/* Build new refcount blocks and a new refcount table from the counted
 * references, in clusters that nothing uses (first fit: refcount blocks
 * in the order of their ranges, then the table), and point the header to
 * them.  The old structures are left as they are: the caller counts
 * again and frees them as leaks.  writes_refused: the image was marked
 * corrupt during this check, so no write may happen (qemu fails the
 * first one). */
int qcow2_repair_rebuild_refcounts(struct qimg_image *img, struct qcow2_refcount_map *map,
                                   bool writes_refused);

/* Extend the image file to `end` bytes (a refcount block past the end). */
int qcow2_repair_extend_file(struct qimg_image *img, uint64_t end);

/* Set the COPIED flag of an active L1 entry as given (entry in host order). */
int qcow2_repair_l1_entry(struct qimg_image *img, uint32_t l1_index, uint64_t entry);
/* Write one L2 entry (the first word of an extended one), host order. */
int qcow2_repair_l2_entry(struct qimg_image *img, uint64_t l2_offset, uint64_t index,
                          uint64_t entry);
/* qemu's check before a metadata write: <0 (the image marked corrupt,
 * the reason logged) when [offset, offset + len) holds other metadata. */
int qcow2_repair_overlap_check(struct qimg_image *img, uint64_t offset, uint64_t len);
/* The same with the snapshot table at [old_table, old_table + old_len)
 * (as the check read it) counting as metadata too, as in qemu: for the
 * check's writes (COPIED fixes, a rebuild, a new snapshot table). */
int qcow2_repair_overlap_check_snaptable(struct qimg_image *img, uint64_t offset, uint64_t len,
                                         uint64_t old_table, uint64_t old_len);
/* Write back an L2 table whose COPIED flags were fixed in place (after
 * qcow2_repair_overlap_check). */
int qcow2_repair_write_l2(struct qimg_image *img, uint64_t l2_offset, const uint8_t *table);

/* Incompatible feature bits on disk: set the corrupt bit (a fatal
 * inconsistency seen while the image is open read-write), or clear the
 * dirty and corrupt bits after a successful repair. */
int qcow2_repair_mark_corrupt(struct qimg_image *img);
int qcow2_repair_mark_clean(struct qimg_image *img);

/* qcow2_open: a dirty image opened read-write (not for check) is
 * repaired as by check -r all before anything else touches it. */
int qcow2_repair_dirty_on_open(struct qimg_image *img, unsigned flags);

/* Prefix of a check log line that the CLI prints after the program name
 * (qemu reports these with error_report). */
#define QCOW2_LOG_ERROR_REPORT QIMG_CHECK_LOG_REPORT

#endif
