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

#endif
