/* qimg - what codec.c shares with the per-library files (codec-zlib.c,
 * codec-zstd.c, codec-bzip2.c).  Each library file implements the calls
 * below for its codecs whatever the build: without its library they
 * return -ENOTSUP through codec_missing(). */
#ifndef QIMG_CODEC_PRIV_H
#define QIMG_CODEC_PRIV_H

#include <errno.h>
#include <limits.h>

#include "codec.h"
#include "internal.h"

/* One step of a streaming decoder: consume from in, produce into out,
 * report how much of each was used and whether the stream ended. */
struct codec_stream_step {
    const uint8_t *in;
    size_t in_len, in_used;
    uint8_t *out;
    size_t out_cap, out_made;
    bool ended;
};

struct codec_stream_ops {
    int (*init)(void **impl, enum qimg_codec c);
    int (*step)(void *impl, struct codec_stream_step *st);
    void (*free)(void *impl);
};

/* deflate, zlib, gzip: libdeflate and/or zlib (codec-zlib.c) */
int codec_deflate_compress(enum qimg_codec c, int level, const void *in, size_t in_len,
                           void *out, size_t out_cap, size_t *out_len);
int codec_deflate_decompress(enum qimg_codec c, const void *in, size_t in_len,
                             void *out, size_t out_len, size_t *produced);
const char *codec_deflate_library(void);
extern const struct codec_stream_ops codec_deflate_stream;
void codec_deflate_release(void);

/* zstd (codec-zstd.c) */
int codec_zstd_compress(int level, const void *in, size_t in_len,
                        void *out, size_t out_cap, size_t *out_len);
int codec_zstd_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                          size_t *produced);
const char *codec_zstd_library(void);
extern const struct codec_stream_ops codec_zstd_stream;
void codec_zstd_release(void);

/* bzip2 (codec-bzip2.c): nothing to cache, libbz2 has no reset */
int codec_bzip2_compress(int level, const void *in, size_t in_len,
                         void *out, size_t out_cap, size_t *out_len);
int codec_bzip2_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                           size_t *produced);
const char *codec_bzip2_library(void);
extern const struct codec_stream_ops codec_bzip2_stream;

/* xz (codec-xz.c) */
int codec_xz_compress(int level, const void *in, size_t in_len,
                      void *out, size_t out_cap, size_t *out_len);
int codec_xz_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                        size_t *produced);
const char *codec_xz_library(void);
extern const struct codec_stream_ops codec_xz_stream;

/* lz4 blocks and lzo1x (codec-lz4-lzo.c): one-shot only */
int codec_lz4_compress(int level, const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len);
int codec_lz4_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                         size_t *produced);
const char *codec_lz4_library(void);
int codec_lzo_compress(int level, const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len);
int codec_lzo_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                         size_t *produced);
const char *codec_lzo_library(void);

/* Apple Data Compression (codec-adc.c): no library, always built */
int codec_adc_compress(int level, const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len);
int codec_adc_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                         size_t *produced);

/* Register the calling thread for qimg_codec_release_thread() at its
 * exit: called by a library file before it caches a context. */
void codec_note_thread_cache(void);

/* Shared messages (they return the error). */
int codec_missing(enum qimg_codec c);                   /* -ENOTSUP */
int codec_corrupt(enum qimg_codec c);                   /* -EIO */
int codec_short(enum qimg_codec c, size_t got, size_t want);   /* -EIO: stopped early */
int codec_too_long(enum qimg_codec c, size_t cap);      /* -EIO: more than cap bytes */
int codec_no_room(enum qimg_codec c, size_t cap);       /* -ENOSPC (compression) */
int codec_bad_level(enum qimg_codec c, int level);      /* -EINVAL */
int codec_too_big(enum qimg_codec c, size_t len);       /* -EINVAL: over 4 GiB */
int codec_truncated(enum qimg_codec c);                 /* -EIO: input ends early */
int codec_no_stream(enum qimg_codec c);                 /* -ENOTSUP: one-shot only */

/* zlib and libbz2 count in unsigned int: a larger output room is clamped
 * (harmless: a unit that large does not exist), a larger input refused. */
static inline unsigned codec_clamp_uint(size_t n) { return n > UINT_MAX ? UINT_MAX : (unsigned)n; }

#endif
