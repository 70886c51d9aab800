/* qimg - qcow2 internal snapshots: create, apply (revert to), delete and
 * load for reading
 * (qcow2-snapshot.c).  The table itself is parsed at open (qcow2.c). */
#ifndef QIMG_QCOW2_SNAPSHOT_H
#define QIMG_QCOW2_SNAPSHOT_H

#include "qcow2.h"

int qcow2_snapshot_create(struct qimg_image *img, const char *name);
int qcow2_snapshot_apply(struct qimg_image *img, const char *id_or_name);
int qcow2_snapshot_delete(struct qimg_image *img, const char *id, const char *name);
int qcow2_snapshot_load_tmp(struct qimg_image *img, const char *id, const char *name);

/* qemu's check of a snapshot's L1 table before any use of it: at most
 * 32 MiB ("Snapshot L1 table too large", -EFBIG), cluster-aligned and
 * ending below 2^63 ("Snapshot L1 table offset invalid", -EINVAL).  A
 * table past the end of the file passes: it reads as zeros. */
int qcow2_snapshot_l1_check(const struct qcow2_state *s, const struct qcow2_snapshot *sn);
/* The snapshot's L1 table, checked, in host order, in an array of at
 * least min_entries entries (zeros after the table's own). */
int qcow2_snapshot_read_l1(struct qimg_image *img, const struct qcow2_snapshot *sn,
                           uint32_t min_entries, uint64_t **out);

#endif
