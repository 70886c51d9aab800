/* qimg - the libraries of the codecs that only some formats use: libbz2
 * (dmg), liblzma, liblz4 and liblzo2 (cloop 4), opened the first time
 * their codec compresses or decompresses (codec-dl.c; how and why: dl.h).
 * A plain run touches none of them.  The macros below let the codec files
 * keep each library's own names; lzo_init() is a macro of lzoconf.h that
 * calls __lzo_init_v2, so that is the name in the table. */
#ifndef QIMG_CODEC_DL_H
#define QIMG_CODEC_DL_H

#include "dl.h"

#ifdef HAVE_BZIP2
#include <bzlib.h>

#define QIMG_BZ2_FUNCS(X) \
    X(BZ2_bzBuffToBuffCompress) \
    X(BZ2_bzDecompress) \
    X(BZ2_bzDecompressEnd) \
    X(BZ2_bzDecompressInit)

struct qimg_bz2_api {
    QIMG_BZ2_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_bz2_api qimg_bz2_api;

/* Open libbz2 once (thread-safe); 0, or -ENOTSUP with the error set. */
int qimg_bz2_load(void);

#ifndef QIMG_CODEC_DL_IMPL
#define BZ2_bzBuffToBuffCompress (qimg_bz2_api.BZ2_bzBuffToBuffCompress)
#define BZ2_bzDecompress (qimg_bz2_api.BZ2_bzDecompress)
#define BZ2_bzDecompressEnd (qimg_bz2_api.BZ2_bzDecompressEnd)
#define BZ2_bzDecompressInit (qimg_bz2_api.BZ2_bzDecompressInit)
#endif
#endif

#ifdef HAVE_LZMA
#include <lzma.h>

#define QIMG_LZMA_FUNCS(X) \
    X(lzma_code) \
    X(lzma_easy_buffer_encode) \
    X(lzma_end) \
    X(lzma_stream_decoder)

struct qimg_lzma_api {
    QIMG_LZMA_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_lzma_api qimg_lzma_api;

/* Open liblzma once (thread-safe); 0, or -ENOTSUP with the error set. */
int qimg_lzma_load(void);

#ifndef QIMG_CODEC_DL_IMPL
#define lzma_code (qimg_lzma_api.lzma_code)
#define lzma_easy_buffer_encode (qimg_lzma_api.lzma_easy_buffer_encode)
#define lzma_end (qimg_lzma_api.lzma_end)
#define lzma_stream_decoder (qimg_lzma_api.lzma_stream_decoder)
#endif
#endif

#ifdef HAVE_LZ4
#include <lz4.h>

#define QIMG_LZ4_FUNCS(X) \
    X(LZ4_compress_default) \
    X(LZ4_decompress_safe) \
    X(LZ4_decompress_safe_partial)

struct qimg_lz4_api {
    QIMG_LZ4_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_lz4_api qimg_lz4_api;

/* Open liblz4 once (thread-safe); 0, or -ENOTSUP with the error set. */
int qimg_lz4_load(void);

#ifndef QIMG_CODEC_DL_IMPL
#define LZ4_compress_default (qimg_lz4_api.LZ4_compress_default)
#define LZ4_decompress_safe (qimg_lz4_api.LZ4_decompress_safe)
#define LZ4_decompress_safe_partial (qimg_lz4_api.LZ4_decompress_safe_partial)
#endif
#endif

#ifdef HAVE_LZO
#include <lzo/lzo1x.h>

#define QIMG_LZO_FUNCS(X) \
    X(__lzo_init_v2) \
    X(lzo1x_1_compress) \
    X(lzo1x_decompress_safe)

struct qimg_lzo_api {
    QIMG_LZO_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_lzo_api qimg_lzo_api;

/* Open liblzo2 once (thread-safe); 0, or -ENOTSUP with the error set. */
int qimg_lzo_load(void);

#ifndef QIMG_CODEC_DL_IMPL
#define __lzo_init_v2 (qimg_lzo_api.__lzo_init_v2)
#define lzo1x_1_compress (qimg_lzo_api.lzo1x_1_compress)
#define lzo1x_decompress_safe (qimg_lzo_api.lzo1x_decompress_safe)
#endif
#endif

#endif
