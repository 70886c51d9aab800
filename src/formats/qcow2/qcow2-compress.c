/* qimg - qcow2 compressed clusters: descriptors and decompression.
 *
 * zlib type: a raw deflate stream (no zlib header, 4 KiB window); zstd
 * type: one zstd frame.  A cluster's compressed bytes are followed by
 * padding up to the sector or by the next cluster's data, so decoding
 * stops once a whole cluster came out; bytes after that are ignored. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"

#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif
#ifdef HAVE_ZLIB
#include <zlib.h>
#endif
#ifdef HAVE_LIBZSTD
#include <zstd.h>
#endif

void qcow2_compressed_range(const struct qcow2_state *s, uint64_t l2_entry,
                            uint64_t *host_off, uint64_t *nbytes)
{
    uint64_t off = l2_entry & s->cluster_offset_mask;
    uint64_t sectors = ((l2_entry >> s->csize_shift) & s->csize_mask) + 1;
    *host_off = off;
    /* the first sector counts from the offset, not from its start */
    *nbytes = sectors * QCOW2_COMPRESSED_SECTOR - (off & (QCOW2_COMPRESSED_SECTOR - 1));
}

#ifdef HAVE_ZLIB
static int inflate_zlib(void *dst, size_t dst_len, const void *src, size_t src_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -12) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_len;
    z.next_out = dst;
    z.avail_out = (uInt)dst_len;
    int ret = inflate(&z, Z_FINISH);
    bool full = z.avail_out == 0;
    inflateEnd(&z);
    /* the output filled up: success even when the stream goes on */
    return (ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && full ? 0 : -EIO;
}
#endif

static int decompress_deflate(void *dst, size_t dst_len, const void *src, size_t src_len)
{
#ifdef HAVE_LIBDEFLATE
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (d) {
        size_t out = 0;
        enum libdeflate_result res = libdeflate_deflate_decompress(d, src, src_len, dst, dst_len, &out);
        libdeflate_free_decompressor(d);
        if (res == LIBDEFLATE_SUCCESS && out == dst_len)
            return 0;
        /* a stream longer than a cluster is still fine when its first
         * cluster of output is whole: let zlib decide */
#ifndef HAVE_ZLIB
        return -EIO;
#endif
    }
#endif
#ifdef HAVE_ZLIB
    return inflate_zlib(dst, dst_len, src, src_len);
#else
    return qimg_error(-ENOTSUP, "qcow2: zlib decompression is not available");
#endif
}

static int decompress_zstd(void *dst, size_t dst_len, const void *src, size_t src_len)
{
#ifdef HAVE_LIBZSTD
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx)
        return -ENOMEM;
    ZSTD_inBuffer in = { src, src_len, 0 };
    ZSTD_outBuffer out = { dst, dst_len, 0 };
    int r = 0;
    /* stream until the cluster is complete: the frame's end may not have
     * been reached when the output is full, and input may trail it */
    while (out.pos < out.size) {
        size_t before_in = in.pos, before_out = out.pos;
        size_t ret = ZSTD_decompressStream(dctx, &out, &in);
        if (ZSTD_isError(ret)) {
            r = -EIO;
            break;
        }
        if (ret == 0 && out.pos < out.size) {   /* frame ended early */
            r = -EIO;
            break;
        }
        if (in.pos == before_in && out.pos == before_out) {   /* no progress */
            r = -EIO;
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return r;
#else
    return qimg_error(-ENOTSUP, "qcow2: zstd decompression is not available");
#endif
}

int qcow2_decompress(const struct qcow2_state *s, void *dst, size_t dst_len,
                     const void *src, size_t src_len)
{
    int r;
    if (s->compression_type == QCOW2_COMPRESSION_ZSTD)
        r = decompress_zstd(dst, dst_len, src, src_len);
    else
        r = decompress_deflate(dst, dst_len, src, src_len);
    if (r == -EIO)
        return qimg_error(-EIO, "qcow2: compressed cluster data is corrupt");
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
