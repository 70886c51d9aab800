/* qimg - qcow2 amend (qcow2-amend.c), hooked into the qcow2 driver table. */
#ifndef QIMG_QCOW2_AMEND_H
#define QIMG_QCOW2_AMEND_H

#include "internal.h"

/* The options qemu-img 7.2 accepts for amending a qcow2 image. */
extern const struct qimg_opt_desc qcow2_amend_opts[];

int qcow2_amend(struct qimg_image *img, qimg_opts *opts, bool force, qimg_progress_fn progress,
                void *opaque);

#endif
