/* qimg - qcow2 cluster allocation: first-fit search for free clusters
 * from a hint (the lowest cluster that may be free), contiguous runs for
 * large writes, a byte allocator for compressed data, and freeing.
 * All with img->lock held. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"

/* Host offsets must fit the L2 entry's offset bits. */
#define QCOW2_MAX_HOST_OFFSET (QCOW2_OFFSET_MASK + 512)

/* First run of free clusters at or after `from`: its start and length,
 * capped at n. */
static int find_free_run(struct qimg_image *img, uint64_t from, uint64_t n,
                         uint64_t *start, uint64_t *len)
{
    uint64_t c = from, run = 0;
    for (;;) {
        uint64_t rc;
        int r = qcow2_get_refcount(img, c, &rc);
        if (r < 0)
            return r;
        if (rc == 0) {
            if (run++ == 0)
                *start = c;
            if (run == n)
                break;
        } else if (run) {
            break;
        }
        c++;
    }
    *len = run;
    return 0;
}

int qcow2_alloc_clusters(struct qimg_image *img, uint64_t n, uint64_t *host, uint64_t *got)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    for (;;) {
        uint64_t start, len;
        int r = find_free_run(img, w->free_cluster_index, n, &start, &len);
        if (r < 0)
            return r;
        if (((start + len) << s->cluster_bits) > QCOW2_MAX_HOST_OFFSET ||
            start + len > (UINT64_MAX >> s->cluster_bits))
            return qimg_error(-EFBIG, "qcow2: the image file would become too large");
        r = qcow2_ensure_refblocks(img, start, len);
        if (r < 0)
            return r;
        if (r > 0)
            continue;       /* new metadata took clusters: look again */
        r = qcow2_update_refcounts(img, start, len, 1);
        if (r < 0)
            return r;
        if (start == w->free_cluster_index)
            w->free_cluster_index = start + len;
        qcow2_note_used(s, start, len);
        *host = start << s->cluster_bits;
        *got = len;
        return 0;
    }
}

/* Compressed clusters are packed: the next one starts where the last one
 * ended, in the same host cluster while it has room and its refcount can
 * grow, or spilling into the next cluster when that one is free. */
int qcow2_alloc_bytes(struct qimg_image *img, uint64_t size, uint64_t *host)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_wstate *w = s->ws;
    uint64_t cs = s->cluster_size;
    uint64_t off = w->free_byte_offset;
    int r;
    if (off && qimg_is_aligned(off, cs))
        off = 0;
    if (off) {
        uint64_t rc;
        r = qcow2_get_refcount(img, off >> s->cluster_bits, &rc);
        if (r < 0)
            return r;
        if (rc == w->refcount_max)
            off = 0;
    }
    uint64_t room = off ? cs - (off & (cs - 1)) : 0;
    if (off && size <= room) {
        r = qcow2_update_refcounts(img, off >> s->cluster_bits, 1, 1);
        if (r < 0)
            return r;
        *host = off;
    } else {
        /* a new cluster for (the rest of) the data: size < one cluster */
        uint64_t start, got;
        r = qcow2_alloc_clusters(img, 1, &start, &got);
        if (r < 0)
            return r;
        if (off && start == qimg_round_down(off, cs) + cs) {
            /* contiguous: the data spans from the old cluster */
            r = qcow2_update_refcounts(img, off >> s->cluster_bits, 1, 1);
            if (r < 0)
                return r;
            *host = off;
        } else {
            *host = start;
        }
    }
    w->free_byte_offset = *host + size;
    return 0;
}

int qcow2_free_clusters(struct qimg_image *img, uint64_t host, uint64_t bytes, bool discard)
{
    struct qcow2_state *s = qcow2_state(img);
    if (bytes == 0)
        return 0;
    uint64_t first = host >> s->cluster_bits;
    uint64_t last = (host + bytes - 1) >> s->cluster_bits;
    int r = qcow2_update_refcounts(img, first, last - first + 1, -1);
    if (r < 0 || !discard)
        return r;
    /* give the host space back where clusters became free */
    for (uint64_t c = first; c <= last; c++) {
        uint64_t rc;
        if (qcow2_get_refcount(img, c, &rc) == 0 && rc == 0 && img->file->ops->discard)
            img->file->ops->discard(img->file, c << s->cluster_bits, s->cluster_size);
    }
    return 0;
}

int qcow2_free_l2_entry(struct qimg_image *img, uint64_t entry, bool discard)
{
    struct qcow2_state *s = qcow2_state(img);
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off = entry & s->cluster_offset_mask;
        uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
        return qcow2_free_clusters(img, off & ~511ull, sectors * 512, discard);
    }
    uint64_t off = entry & QCOW2_OFFSET_MASK;
    if (off == 0 || qcow2_has_data_file(s))
        return 0;
    return qcow2_free_clusters(img, off, s->cluster_size, discard);
}
