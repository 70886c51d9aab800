/* qimg - compression codecs shared by every format driver.
 *
 * One-shot buffers (qimg_codec_compress / qimg_codec_decompress) for
 * formats that compress fixed units (qcow2 and qcow clusters, vmdk grains,
 * cloop and dmg blocks), and a streaming decoder for data that arrives in
 * pieces.  Every function is thread-safe: the contexts a library needs are
 * cached per thread (at most one of each kind) and freed when the thread
 * exits, or earlier by qimg_codec_release_thread().
 *
 * Which library does the work: the deflate family uses libdeflate when it
 * is built in (faster) and zlib otherwise, or where libdeflate cannot do
 * the job (streams, and output that ends inside a longer stream).  A codec
 * whose libraries are missing returns -ENOTSUP with a message. */
#ifndef QIMG_CODEC_H
#define QIMG_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum qimg_codec {
    QIMG_CODEC_DEFLATE,     /* raw deflate, RFC 1951 (qcow/qcow2 "zlib") */
    QIMG_CODEC_ZLIB,        /* deflate in a zlib wrapper, RFC 1950 */
    QIMG_CODEC_GZIP,        /* deflate in a gzip wrapper, RFC 1952 */
    QIMG_CODEC_ZSTD,        /* one zstd frame */
    QIMG_CODEC_BZIP2,       /* one bzip2 stream */
    QIMG_CODEC_XZ,          /* one .xz stream (liblzma; cloop 4 blocks) */
    QIMG_CODEC_LZ4,         /* one LZ4 block, no frame (liblz4; cloop 4) */
    QIMG_CODEC_LZO1X,       /* one LZO1X stream (liblzo2; cloop 4) */
    QIMG_CODEC_ADC,         /* Apple Data Compression (dmg), our own code */
    QIMG_CODEC_COUNT
};

/* The library's default level: 6 for the deflate family, 3 for zstd, 9
 * (900k blocks) for bzip2, 6 for xz, 1 for the others.  Accepted levels:
 * deflate family 0-9, zstd 1-22, bzip2 1-9, xz 0-9, lz4, lzo1x and adc 1.
 *
 * Framing: LZ4 blocks and ADC data carry no end marker, so "the whole
 * stream" is all of in_len (bytes after it are not ignored but decoded);
 * qimg_codec_framed() tells them apart. */
#define QIMG_CODEC_LEVEL_DEFAULT (-1)

bool qimg_codec_available(enum qimg_codec c);
/* Does the codec's data mark its own end (false: lz4, adc)? */
bool qimg_codec_framed(enum qimg_codec c);
/* "deflate", "zlib", "gzip", "zstd", "bzip2", "xz", "lz4", "lzo1x", "adc";
 * NULL for an unknown value. */
const char *qimg_codec_name(enum qimg_codec c);
/* The library behind a codec in this build ("libdeflate+zlib", "zlib",
 * "libdeflate", "libzstd", "libbz2", "liblzma", "liblz4", "liblzo2",
 * "qimg"), or NULL when it is not built in. */
const char *qimg_codec_library(enum qimg_codec c);
/* The codecs built in, by name, separated by single spaces ("" if none). */
const char *qimg_codec_list(void);

/* Compress in[0..in_len) into out[0..out_cap) as one complete stream.
 * 0 and *out_len on success; -ENOSPC when the result does not fit in
 * out_cap bytes (callers that keep data only when it shrinks pass
 * in_len - 1); -ENOTSUP when the codec is not built in; -EINVAL for a bad
 * level or a buffer over 4 GiB.  Always sets a message on failure.
 * Same input, codec, level and build give the same bytes. */
int qimg_codec_compress(enum qimg_codec c, int level, const void *in, size_t in_len,
                        void *out, size_t out_cap, size_t *out_len);

/* Decompress one stream from in[0..in_len); bytes after the stream's end
 * are ignored (padding, the next unit's data).
 *   produced == NULL: "fill" out[0..out_len) completely; the stream may go
 *     on past that point (its remainder is not looked at).  Output that
 *     stops short is an error.  This is what qcow2 clusters need.
 *   produced != NULL: decode the whole stream, which must end within
 *     out_len bytes; *produced is its length.
 * 0 on success; -EIO for corrupt, truncated or oversized data; -ENOTSUP
 * when the codec is not built in; -ENOMEM.  Always sets a message on
 * failure. */
int qimg_codec_decompress(enum qimg_codec c, const void *in, size_t in_len,
                          void *out, size_t out_len, size_t *produced);

/* Streaming decoder (deflate family, zstd, bzip2, xz; -ENOTSUP for the
 * others): feed input as it comes, take output in any pieces.
 *   struct qimg_codec_stream *s;
 *   qimg_codec_stream_new(&s, QIMG_CODEC_ZLIB, max_total_output);
 *   loop: r = qimg_codec_stream_feed(s, &in, &in_len, &out, &out_cap);
 *         (in/out advance past what was used; r == 1: the stream ended,
 *          r == 0: give more input or more output room, r < 0: error)
 *   qimg_codec_stream_finish(s)  (-EIO unless the stream ended)
 *   qimg_codec_stream_free(s)
 * More than max_out bytes of output in total is -EIO (a hostile stream
 * cannot make a caller loop or allocate without bound). */
struct qimg_codec_stream;
int qimg_codec_stream_new(struct qimg_codec_stream **out, enum qimg_codec c, uint64_t max_out);
int qimg_codec_stream_feed(struct qimg_codec_stream *s, const void **in, size_t *in_len,
                           void **out, size_t *out_cap);
int qimg_codec_stream_finish(struct qimg_codec_stream *s);
uint64_t qimg_codec_stream_total_out(const struct qimg_codec_stream *s);
void qimg_codec_stream_free(struct qimg_codec_stream *s);

/* Free this thread's cached contexts now (they are rebuilt on demand).
 * Threads that end free theirs by themselves. */
void qimg_codec_release_thread(void);

#endif
