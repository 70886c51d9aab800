/* qimg - qcow2: emptying an image by rebuilding it (qcow2-empty.c). */
#ifndef QIMG_QCOW2_EMPTY_H
#define QIMG_QCOW2_EMPTY_H

#include <stdbool.h>

struct qimg_image;

/* Can the image be rebuilt as a fresh one (nothing but the active L1
 * table owns clusters)? */
bool qcow2_can_empty_completely(struct qimg_image *img);
/* Rebuild it: header cluster, refcount table, refcount block, zeroed L1;
 * the file cut after them. */
int qcow2_make_completely_empty(struct qimg_image *img);

#endif
