/* qimg - qcow2 compressed clusters: descriptors and decompression.
 *
 * zlib type: a raw deflate stream (no zlib header, 4 KiB window); zstd
 * type: one zstd frame.  A cluster's compressed bytes are followed by
 * padding up to the sector or by the next cluster's data, so decoding
 * stops once a whole cluster came out; bytes after that are ignored. */
#include <errno.h>
#include <inttypes.h>

#include "codec.h"
#include "qcow2.h"

void qcow2_compressed_range(const struct qcow2_state *s, uint64_t l2_entry,
                            uint64_t *host_off, uint64_t *nbytes)
{
    uint64_t off = l2_entry & s->cluster_offset_mask;
    uint64_t sectors = ((l2_entry >> s->csize_shift) & s->csize_mask) + 1;
    *host_off = off;
    /* the first sector counts from the offset, not from its start */
    *nbytes = sectors * QCOW2_COMPRESSED_SECTOR - (off & (QCOW2_COMPRESSED_SECTOR - 1));
}

int qcow2_decompress(const struct qcow2_state *s, void *dst, size_t dst_len,
                     const void *src, size_t src_len)
{
    bool zstd = s->compression_type == QCOW2_COMPRESSION_ZSTD;
    /* "fill" mode (no produced count): exactly one cluster must come out */
    int r = qimg_codec_decompress(zstd ? QIMG_CODEC_ZSTD : QIMG_CODEC_DEFLATE,
                                  src, src_len, dst, dst_len, NULL);
    if (r == -EIO)
        return qimg_error(-EIO, "qcow2: compressed cluster data is corrupt");
    if (r == -ENOTSUP)
        return qimg_error(-ENOTSUP, "qcow2: %s decompression is not available",
                          zstd ? "zstd" : "zlib");
    return r;
}

int qcow2_read_compressed_cluster(struct qimg_image *img, uint64_t l2_entry, uint8_t *cluster)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t host, nbytes;
    qcow2_compressed_range(s, l2_entry, &host, &nbytes);
    if (host >= s->file_size)
        return qimg_error(-EIO, "qcow2: compressed cluster at %#" PRIx64 " is past the end of "
                          "the file", host);
    /* the descriptor's last sectors may lie beyond the end of the file
     * (qemu does not pad the last one): those bytes read as zeros */
    CLEANUP_FREE uint8_t *src = qimg_alloc_from_image(nbytes, "compressed cluster");
    if (!src)
        return -ENOMEM;
    qimg_io_event(img->file, QIMG_EV_READ_COMPRESSED);
    int r = qimg_io_pread(img->file, src, nbytes, host);
    if (r < 0)
        return qimg_error(r, "qcow2: could not read compressed cluster: %s", strerror(-r));
    return qcow2_decompress(s, cluster, s->cluster_size, src, nbytes);
}
