/* qimg - the codecs' libraries, opened the first time their codec
 * compresses or decompresses (codec-dl.c; how and why: dl.h): zlib and
 * libdeflate (the deflate family: qcow2, qcow, vmdk, cloop, dmg), libzstd
 * (qcow2), libbz2 (dmg), liblzma, liblz4 and liblzo2 (cloop 4).  A run
 * that reads no compressed data touches none of them.  The codec files
 * call the load function in every entry point: once loaded it is one
 * atomic load, cheap beside any unit's decoding.
 *
 * The macros below let the codec files keep each library's own names.
 * Some names are the libraries' macros for exported functions, so the
 * table holds those: lzo_init() calls __lzo_init_v2, zlib's inflateInit2
 * and deflateInit2 call inflateInit2_ and deflateInit2_. */
#ifndef QIMG_CODEC_DL_H
#define QIMG_CODEC_DL_H

#include "dl.h"

#ifdef HAVE_ZLIB
#include <zlib.h>

#define QIMG_ZLIB_FUNCS(X) \
    X(deflate) \
    X(deflateEnd) \
    X(deflateInit2_) \
    X(deflateReset) \
    X(inflate) \
    X(inflateEnd) \
    X(inflateInit2_) \
    X(inflateReset2)

struct qimg_zlib_api {
    QIMG_ZLIB_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_zlib_api qimg_zlib_api;

/* Open zlib once (thread-safe); 0, or -ENOTSUP with the error set. */
int qimg_zlib_load(void);

#ifndef QIMG_CODEC_DL_IMPL
#define deflate (qimg_zlib_api.deflate)
#define deflateEnd (qimg_zlib_api.deflateEnd)
#define deflateInit2_ (qimg_zlib_api.deflateInit2_)
#define deflateReset (qimg_zlib_api.deflateReset)
#define inflate (qimg_zlib_api.inflate)
#define inflateEnd (qimg_zlib_api.inflateEnd)
#define inflateInit2_ (qimg_zlib_api.inflateInit2_)
#define inflateReset2 (qimg_zlib_api.inflateReset2)
#endif
#endif

#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>

#define QIMG_LIBDEFLATE_FUNCS(X) \
    X(libdeflate_alloc_compressor) \
    X(libdeflate_alloc_decompressor) \
    X(libdeflate_deflate_compress) \
    X(libdeflate_deflate_decompress) \
    X(libdeflate_free_compressor) \
    X(libdeflate_free_decompressor) \
    X(libdeflate_gzip_compress) \
    X(libdeflate_gzip_decompress) \
    X(libdeflate_zlib_compress) \
    X(libdeflate_zlib_decompress)

struct qimg_libdeflate_api {
    QIMG_LIBDEFLATE_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_libdeflate_api qimg_libdeflate_api;

/* Open libdeflate once (thread-safe); 0, or -ENOTSUP with the error set. */
int qimg_libdeflate_load(void);

#ifndef QIMG_CODEC_DL_IMPL
#define libdeflate_alloc_compressor (qimg_libdeflate_api.libdeflate_alloc_compressor)
#define libdeflate_alloc_decompressor (qimg_libdeflate_api.libdeflate_alloc_decompressor)
#define libdeflate_deflate_compress (qimg_libdeflate_api.libdeflate_deflate_compress)
#define libdeflate_deflate_decompress (qimg_libdeflate_api.libdeflate_deflate_decompress)
#define libdeflate_free_compressor (qimg_libdeflate_api.libdeflate_free_compressor)
#define libdeflate_free_decompressor (qimg_libdeflate_api.libdeflate_free_decompressor)
#define libdeflate_gzip_compress (qimg_libdeflate_api.libdeflate_gzip_compress)
#define libdeflate_gzip_decompress (qimg_libdeflate_api.libdeflate_gzip_decompress)
#define libdeflate_zlib_compress (qimg_libdeflate_api.libdeflate_zlib_compress)
#define libdeflate_zlib_decompress (qimg_libdeflate_api.libdeflate_zlib_decompress)
#endif
#endif

#ifdef HAVE_LIBZSTD
#include <zstd.h>
#include <zstd_errors.h>

#define QIMG_ZSTD_FUNCS(X) \
    X(ZSTD_DCtx_reset) \
    X(ZSTD_compressCCtx) \
    X(ZSTD_createCCtx) \
    X(ZSTD_createDCtx) \
    X(ZSTD_createDStream) \
    X(ZSTD_decompressDCtx) \
    X(ZSTD_decompressStream) \
    X(ZSTD_findFrameCompressedSize) \
    X(ZSTD_freeCCtx) \
    X(ZSTD_freeDCtx) \
    X(ZSTD_freeDStream) \
    X(ZSTD_getErrorCode) \
    X(ZSTD_isError) \
    X(ZSTD_maxCLevel) \
    X(ZSTD_sizeof_DCtx)

struct qimg_zstd_api {
    QIMG_ZSTD_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_zstd_api qimg_zstd_api;

/* Open libzstd once (thread-safe); 0, or -ENOTSUP with the error set. */
int qimg_zstd_load(void);

#ifndef QIMG_CODEC_DL_IMPL
#define ZSTD_DCtx_reset (qimg_zstd_api.ZSTD_DCtx_reset)
#define ZSTD_compressCCtx (qimg_zstd_api.ZSTD_compressCCtx)
#define ZSTD_createCCtx (qimg_zstd_api.ZSTD_createCCtx)
#define ZSTD_createDCtx (qimg_zstd_api.ZSTD_createDCtx)
#define ZSTD_createDStream (qimg_zstd_api.ZSTD_createDStream)
#define ZSTD_decompressDCtx (qimg_zstd_api.ZSTD_decompressDCtx)
#define ZSTD_decompressStream (qimg_zstd_api.ZSTD_decompressStream)
#define ZSTD_findFrameCompressedSize (qimg_zstd_api.ZSTD_findFrameCompressedSize)
#define ZSTD_freeCCtx (qimg_zstd_api.ZSTD_freeCCtx)
#define ZSTD_freeDCtx (qimg_zstd_api.ZSTD_freeDCtx)
#define ZSTD_freeDStream (qimg_zstd_api.ZSTD_freeDStream)
#define ZSTD_getErrorCode (qimg_zstd_api.ZSTD_getErrorCode)
#define ZSTD_isError (qimg_zstd_api.ZSTD_isError)
#define ZSTD_maxCLevel (qimg_zstd_api.ZSTD_maxCLevel)
#define ZSTD_sizeof_DCtx (qimg_zstd_api.ZSTD_sizeof_DCtx)
#endif
#endif

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
