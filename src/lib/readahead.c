/* qimg - read-ahead hints for chain walks (rebase, commit).  They read a
 * guest range through block status and then in order; with a cold cache
 * every read waits for the disk.  Telling the kernel early which host
 * ranges come next lets the disk work while we compare and write, without
 * threads (so it keeps working when the CPUs are busy). */
#include <fcntl.h>

#include "readahead.h"

/* Block status of [off, off+len) in the layers from img down to stop
 * (stop and what lies below it are never asked: a commit into stop reads
 * nothing there, and asking would load their metadata).  The layer that
 * holds the range, or NULL when none above stop does (ext->length then
 * says for how long). */
static qimg_image *status_above(qimg_image *img, qimg_image *stop, uint64_t off, uint64_t len,
                                struct qimg_extent *ext)
{
    for (qimg_image *l = img; l && l != stop && off < l->size; l = l->backing) {
        if (qimg_block_status(l, off, len, ext) < 0)
            return NULL;
        if (ext->flags & QIMG_STATUS_ALLOCATED)
            return l;
        len = ext->length;
    }
    ext->flags = 0;
    ext->length = len;
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
        struct qimg_extent ext = { 0 };
        qimg_image *l = status_above(img, stop, off, end - off, &ext);
        if (ext.length == 0)
            break;                          /* an error: it is only a hint */
        bool local = l && l->file && ext.host_file &&
                     strcmp(ext.host_file, l->file->filename) == 0;
        if ((ext.flags & QIMG_STATUS_DATA) && (ext.flags & QIMG_STATUS_OFFSET) && local)
            qimg_io_hint(l->file, QIMG_IO_HINT_WILLNEED, ext.host_offset, ext.length);
        off += ext.length;
    }
}
