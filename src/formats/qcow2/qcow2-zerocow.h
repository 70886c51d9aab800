/* qimg - qcow2: copy-on-write from zeros without writing zeros
 * (qcow2-zerocow.c). */
#ifndef QIMG_QCOW2_ZEROCOW_H
#define QIMG_QCOW2_ZEROCOW_H

#include <stdbool.h>
#include <stdint.h>

struct qimg_image;

/* Do the copy-on-write ranges fill[0..nfill) (bytes relative to the
 * cluster at guest offset `guest`) all read as zeros according to the
 * metadata of the chain?  (false on errors: the caller copies.) */
bool qcow2_fill_reads_zero(struct qimg_image *img, uint64_t guest, const uint64_t (*fill)[2],
                           int nfill);
/* Make those ranges of the new cluster at host offset `host` zeros on the
 * host with one zero request: 1 done, 0 when the caller must copy them
 * (no such request), <0 on error. */
int qcow2_fill_zero(struct qimg_image *img, uint64_t host, const uint64_t (*fill)[2], int nfill);

#endif
