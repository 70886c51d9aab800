/* qimg - qcow2 image creation and size measurement (qcow2-create.c,
 * qcow2-measure.c), hooked into the qcow2 driver table. */
#ifndef QIMG_QCOW2_CREATE_H
#define QIMG_QCOW2_CREATE_H

#include "internal.h"

/* Create options in the order qemu-img 7.2 prints them in "Formatting ...". */
extern const struct qimg_opt_desc qcow2_create_opts[];

int qcow2_create(struct qimg_create_ctx *ctx);
int qcow2_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out);

/* Bytes of refcount table and blocks needed to count `clusters` clusters
 * (including themselves); *blocks gets the refcount block count.  With
 * generous, room is left for the table to grow by half (as qemu does when
 * it enlarges a refcount table). */
uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size,
                                      unsigned refcount_order, bool generous,
                                      uint64_t *blocks);

#endif
