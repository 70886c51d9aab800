/* qimg - VMDK streamOptimized: creating and writing (sparse.c reads).
 *
 * On-disk layout (VMware "Virtual Disk Format 1.1" / "5.0" technical notes,
 * "Stream-Optimized Compressed Sparse Extents"; all integers little endian):
 *
 *   A hosted sparse extent (KDMV header, see sparse.c) whose flags have
 *   bit 16 (compressed grains, compressAlgorithm 1 = deflate) and usually
 *   bit 17 (markers).  A grain table entry points at the sector where the
 *   grain starts.  With markers, a grain is
 *       u64 lba     guest sector of the grain (no reader checks it)
 *       u32 size    bytes of compressed data that follow
 *       u8  data[size]   one zlib stream (RFC 1950) of at most one grain
 *   padded with zeros to the next sector.
 *
 *   Metadata markers take one sector each: u64 numSectors, u32 size (0),
 *   u32 type (0 end of stream, 1 grain table, 2 grain directory, 3 footer),
 *   then 496 zero bytes; numSectors of metadata follow.  A writer that
 *   streams (VMware's) puts the grain directory at the end: the header
 *   says gdOffset = all ones and the file ends with a footer marker, the
 *   footer (the header with the real gdOffset) and an end-of-stream marker.
 *
 * What qemu 7.2 writes (subformat=streamOptimized, with or without
 * convert -c) is not a stream: it is the monolithicSparse layout (header,
 * descriptor, redundant and main grain directories with preallocated grain
 * tables) with version 3, flags 0x30003 and compressAlgorithm 1; grains are
 * appended with markers, each where the previous one's data ends (qemu
 * also zeroes a whole grain there first, so its files end in zeros).  No
 * grain table marker, no footer.  Only whole grains can be written (the
 * disk's last grain up to the disk's end), each only once:
 *     a grain already written   "Could not write to allocated cluster for
 *                               streamOptimized", EIO
 *     part of a grain           EINVAL
 * qimg writes the same layout and header; the compressed bytes differ
 * (libdeflate's level 6 instead of zlib's: the same guest data), and the
 * file always ends with an end-of-stream marker (a zero sector) after the
 * last grain.
 *
 * ESXi and VMware's tools: ESXi refuses a sparse extent header older than
 * version 3 for streamOptimized ("Not a supported disk format (sparse VMDK
 * version too old)": qemu before 2.5.1 wrote version 1; see the COT
 * project, github.com/glennmatthews/cot issue 65 and its
 * COT.disks.vmdk documentation) and OVF deployment fails when the file does
 * not end with an end-of-stream marker (qemu's gitlab issue 1357: an empty
 * disk from qemu-img, accepted once a zero sector was appended).  VMware's
 * own writer (github.com/vmware/open-vmdk, vmdk/sparse.c) writes version
 * 3, compressed grains with markers, the directory and tables after the
 * descriptor, an end-of-stream marker, ddb.virtualHWVersion = "4" ("used
 * by ESX 3.x and older only") and ddb.toolsVersion = "2147483647" -- the
 * values qemu writes too (-o hwversion= and toolsversion= change them).
 * So the default is ESXi's: version 3, markers, an end-of-stream marker.
 *
 * Speed: convert compresses a streamOptimized target's grains on its
 * worker threads (the driver's compress / write_compressed callbacks, also
 * without -c as qemu-img's needs_compressed_writes), and the writer only
 * appends them in order.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>

#include "codec.h"
#include "vmdk.h"

#define STREAM_MARKER 12u        /* u64 lba + u32 size before a grain's data */

size_t vmdk_stream_bound(uint64_t grain_bytes)
{
    /* deflate's worst case (stored blocks: 5 bytes per block of at most
     * 64 KiB; the encoders' bounds assume blocks of 10000 bytes and some
     * bits more) with room to spare, zlib's wrapper, the marker, the
     * padding to the sector */
    return (size_t)(grain_bytes + grain_bytes / 1024 * 5 + 1024 + STREAM_MARKER + VMDK_SECTOR);
}

/* Bytes that look random (data compressed or encrypted already) do not
 * shrink, and deflate's search for matches costs as much on them as on
 * text: such grains are stored (deflate's stored blocks, a valid zlib
 * stream like any other).  The test: the order-0 entropy of the grain's
 * bytes is at least 7.95 bits per byte, where Huffman coding alone could
 * save less than 1%.  It takes a histogram of the grain, a few percent of
 * the cost of compressing it. */
#define STORE_ENTROPY 7.95

static bool looks_incompressible(const uint8_t *p, size_t len)
{
    if (len < 4096)
        return false;
    uint32_t h[4][256] = { { 0 } };
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        h[0][p[i]]++;
        h[1][p[i + 1]]++;
        h[2][p[i + 2]]++;
        h[3][p[i + 3]]++;
    }
    for (; i < len; i++)
        h[0][p[i]]++;
    double bits = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t c = h[0][b] + h[1][b] + h[2][b] + h[3][b];
        if (c) {
            double q = (double)c / (double)len;
            bits -= q * log2(q);
        }
    }
    return bits >= STORE_ENTROPY;
}

int vmdk_stream_compress(const void *buf, size_t len, void *out, size_t out_cap, size_t *out_len)
{
    uint8_t *o = out;
    int level = looks_incompressible(buf, len) ? 0 : QIMG_CODEC_LEVEL_DEFAULT;
    if (out_cap < STREAM_MARKER + VMDK_SECTOR)
        return qimg_error(-ENOSPC, "vmdk: no room for a compressed grain");
    size_t clen;
    int r = qimg_codec_compress(QIMG_CODEC_ZLIB, level, buf, len,
                                o + STREAM_MARKER, out_cap - STREAM_MARKER - VMDK_SECTOR, &clen);
    if (r < 0)
        return r;
    qimg_put_le64(o, 0);                 /* the LBA: set when the grain is written */
    qimg_put_le32(o + 8, (uint32_t)clen);
    size_t total = STREAM_MARKER + clen;
    size_t padded = (total + VMDK_SECTOR - 1) / VMDK_SECTOR * VMDK_SECTOR;
    memset(o + total, 0, padded - total);
    *out_len = padded;
    return 0;
}

/* The bytes of extent e that grain g covers: a whole grain, or the rest of
 * the extent for its last one. */
static uint64_t grain_span(const struct vmdk_extent *e, uint64_t grain_bytes, uint64_t g)
{
    uint64_t start = g * grain_bytes, bytes = e->sectors * VMDK_SECTOR;
    return QIMG_MIN(grain_bytes, bytes - start);
}

static int allocated_error(void)
{
    qimg_warn("ERROR: Could not write to allocated cluster for streamOptimized");
    return qimg_error(-EIO, "%s", strerror(EIO));
}

/* Append a compressed grain (made by vmdk_stream_compress) for the grain
 * at extent offset off, its marker's LBA set and an end-of-stream marker
 * after it (the next grain overwrites it); -EIO when the grain holds data
 * already. */
int vmdk_stream_write_compressed(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                                 const void *blob, size_t len)
{
    uint64_t grain_bytes = e->cluster_size;
    if (len < VMDK_SECTOR || len % VMDK_SECTOR || len > vmdk_stream_bound(grain_bytes) ||
        off % grain_bytes)
        return qimg_error(-EINVAL, "%s", strerror(EINVAL));
    /* one write: the grain and the marker after it */
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(len + VMDK_SECTOR);
    memcpy(buf, blob, len);
    qimg_put_le64(buf, e->start + off / VMDK_SECTOR);
    memset(buf + len, 0, VMDK_SECTOR);
    int r = vmdk_sparse_append_grain(img, e, off / grain_bytes, buf, len + VMDK_SECTOR, len);
    return r == -EEXIST ? allocated_error() : r;
}

/* A plain write: whole grains, compressed here one by one. */
int vmdk_stream_write(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                      const uint8_t *buf, size_t len)
{
    uint64_t grain_bytes = e->cluster_size;
    size_t cap = vmdk_stream_bound(grain_bytes);
    CLEANUP_FREE uint8_t *blob = NULL;
    while (len > 0) {
        uint64_t g = off / grain_bytes;
        uint64_t span = grain_span(e, grain_bytes, g);
        bool allocated;
        int r = vmdk_sparse_grain_allocated(img, e, g, &allocated);
        if (r < 0)
            return r;
        if (allocated)
            return allocated_error();
        if (off % grain_bytes || len < span)
            return qimg_error(-EINVAL, "%s", strerror(EINVAL));
        if (!blob && !(blob = qimg_alloc_from_image(cap, "VMDK compressed grain")))
            return -ENOMEM;
        size_t blen;
        r = vmdk_stream_compress(buf, (size_t)span, blob, cap, &blen);
        if (r == 0)
            r = vmdk_stream_write_compressed(img, e, off, blob, blen);
        if (r < 0)
            return r;
        buf += span, off += span, len -= (size_t)span;
    }
    return 0;
}
