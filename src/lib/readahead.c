/* qimg - read-ahead hints for chain walks (rebase, commit).  They read a
 * guest range through block status and then in order; with a cold cache
 * every read waits for the disk.  Telling the kernel early which host
 * ranges come next lets the disk work while we compare and write, without
 * threads (so it keeps working when the CPUs are busy). */
#include <fcntl.h>

#include "readahead.h"

/* The layer at depth, or NULL when it is stop or below it. */
static qimg_image *layer_at(qimg_image *img, qimg_image *stop, unsigned depth)
{
    for (; img && img != stop; img = img->backing)
        if (depth-- == 0)
            return img;
    return NULL;
}

/* A layer over a debug filter (blkdebug): its metadata reads are events
 * and may fail on purpose; a hint must not make them (qemu reads ahead
 * nothing, so a rule would fire on a read qemu never makes). */
static bool over_debug_filter(qimg_image *img, qimg_image *stop)
{
    for (; img && img != stop; img = img->backing)
        if (img->file && img->file->ops->event)
            return true;
    return false;
}

void qimg_chain_readahead(qimg_image *img, qimg_image *stop, uint64_t off, uint64_t len)
{
    if (over_debug_filter(img, stop))
        return;
    uint64_t end = off < img->size ? QIMG_MIN(off + len, img->size) : off;
    while (off < end) {
        struct qimg_extent ext;
        if (qimg_block_status_chain(img, off, end - off, &ext) < 0)
            break;
        qimg_image *l = layer_at(img, stop, ext.depth);
        bool local = l && l->file && ext.host_file &&
                     strcmp(ext.host_file, l->file->filename) == 0;
        if ((ext.flags & QIMG_STATUS_DATA) && (ext.flags & QIMG_STATUS_OFFSET) && local)
            qimg_io_hint(l->file, QIMG_IO_HINT_WILLNEED, ext.host_offset, ext.length);
        off += ext.length;
    }
}
