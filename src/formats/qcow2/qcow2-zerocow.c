/* qimg - qcow2: copy-on-write from zeros.  When a write allocates a new
 * cluster and the parts of it the write does not cover read as zeros
 * according to the metadata of the chain (unallocated everywhere, zero
 * clusters, past the end of a backing file) - not by looking at the data -
 * qemu does not copy them: it zeroes them on the host with one efficient
 * request (fallocate), which leaves them as holes in the file.  Doing the
 * same gives the same file layout and the same `map` (a hole in a data
 * cluster maps as zero).  As in qemu, it is all or nothing for the
 * clusters one write allocates together. */
#include <stdint.h>

#include "qcow2.h"
#include "qcow2-zerocow.h"

/* Does [off, off+len) read as zeros by the metadata alone? */
static int reads_zero(struct qimg_image *img, uint64_t off, uint64_t len)
{
    uint64_t end = QIMG_MIN(off + len, img->size);
    while (off < end) {
        struct qimg_extent e;
        int r = qimg_block_status_chain(img, off, end - off, &e);
        if (r < 0)
            return r;
        if (!(e.flags & QIMG_STATUS_ZERO) || (e.flags & QIMG_STATUS_DATA))
            return 0;
        off += e.length;
    }
    return 1;
}

bool qcow2_fill_reads_zero(struct qimg_image *img, uint64_t guest, const uint64_t (*fill)[2],
                           int nfill)
{
    if (qcow2_state(img)->crypt_method != QCOW2_CRYPT_NONE)
        return false;
    for (int k = 0; k < nfill; k++)
        if (reads_zero(img, guest + fill[k][0], fill[k][1] - fill[k][0]) != 1)
            return false;
    return true;
}

/* An efficient zeroing of the file (fallocate ZERO_RANGE), as qemu
 * zeroes: all or nothing, so on failure the caller copies the zeros itself
 * (a plain zero op would fall back to writing zero buffers on its own). */
int qcow2_fill_zero(struct qimg_image *img, uint64_t host, const uint64_t (*fill)[2], int nfill)
{
    struct qimg_io *io = qcow2_state(img)->data_io;
    if (nfill == 0)
        return 0;
    uint64_t start = host + fill[0][0], len = fill[nfill - 1][1] - fill[0][0];
    return qimg_io_zero_fast(io, start, len) == 0 ? 1 : 0;
}
