/* qimg - asking the kernel to read ahead the host ranges holding a guest
 * range of a chain (readahead.c). */
#ifndef QIMG_READAHEAD_H
#define QIMG_READAHEAD_H

#include "internal.h"

/* Start reading into the page cache, without waiting, the host bytes that
 * hold [off, off+len) of img's chain (data in local files only), leaving
 * out what comes from `stop` and below (NULL: the whole chain).  A hint:
 * nothing changes if it does nothing. */
void qimg_chain_readahead(qimg_image *img, qimg_image *stop, uint64_t off, uint64_t len);

#endif
