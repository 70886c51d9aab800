/* qimg - LZ4 blocks (liblz4) and LZO1X (liblzo2), the fast codecs of
 * cloop 4 images.  One-shot buffers only.
 *
 * An LZ4 block has no end marker: the whole input is one block.  An
 * LZO1X stream ends with its own marker; liblzo2 cannot stop part way
 * through one, so "fill" decoding of a stream longer than the output goes
 * through a larger scratch buffer (at most 4x the output plus 1 MiB). */
#include <pthread.h>

#include "codec-priv.h"

#include "codec-dl.h"

/* ---------------------------------------------------------------- lz4 */

const char *codec_lz4_library(void)
{
#ifdef HAVE_LZ4
    return "liblz4";
#else
    return NULL;
#endif
}

#ifdef HAVE_LZ4
int codec_lz4_compress(int level, const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    if (level != QIMG_CODEC_LEVEL_DEFAULT && level != 1)
        return codec_bad_level(QIMG_CODEC_LZ4, level);
    if (in_len > LZ4_MAX_INPUT_SIZE)
        return codec_too_big(QIMG_CODEC_LZ4, in_len);
    int r = qimg_lz4_load();
    if (r < 0)
        return r;
    int n = LZ4_compress_default(in, out, (int)in_len, (int)QIMG_MIN(out_cap, (size_t)INT_MAX));
    if (n <= 0)
        return codec_no_room(QIMG_CODEC_LZ4, out_cap);
    *out_len = (size_t)n;
    return 0;
}

int codec_lz4_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                         size_t *produced)
{
    if (in_len > INT_MAX || out_len > INT_MAX)
        return codec_too_big(QIMG_CODEC_LZ4, QIMG_MAX(in_len, out_len));
    int r = qimg_lz4_load();
    if (r < 0)
        return r;
    if (!produced) {
        if (out_len == 0)
            return 0;
        int n = LZ4_decompress_safe_partial(in, out, (int)in_len, (int)out_len, (int)out_len);
        if (n < 0)
            return codec_corrupt(QIMG_CODEC_LZ4);
        return (size_t)n == out_len ? 0 : codec_short(QIMG_CODEC_LZ4, (size_t)n, out_len);
    }
    int n = LZ4_decompress_safe(in, out, (int)in_len, (int)out_len);
    if (n >= 0) {
        *produced = (size_t)n;
        return 0;
    }
    /* corrupt, or valid data that goes on past the room: a partial
     * decode that fills the room tells */
    if (out_len && LZ4_decompress_safe_partial(in, out, (int)in_len, (int)out_len,
                                               (int)out_len) == (int)out_len)
        return codec_too_long(QIMG_CODEC_LZ4, out_len);
    if (!out_len && in_len)
        return codec_too_long(QIMG_CODEC_LZ4, out_len);
    return codec_corrupt(QIMG_CODEC_LZ4);
}
#else
int codec_lz4_compress(int level, const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    return codec_missing(QIMG_CODEC_LZ4);
}

int codec_lz4_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                         size_t *produced)
{
    return codec_missing(QIMG_CODEC_LZ4);
}
#endif

/* ---------------------------------------------------------------- lzo */

const char *codec_lzo_library(void)
{
#ifdef HAVE_LZO
    return "liblzo2";
#else
    return NULL;
#endif
}

#ifdef HAVE_LZO
static pthread_once_t lzo_once = PTHREAD_ONCE_INIT;
static int lzo_init_result;

static void init_lzo(void)
{
    lzo_init_result = lzo_init();
}

/* liblzo2 opened, and started once */
static int lzo_ready(void)
{
    int r = qimg_lzo_load();
    if (r < 0)
        return r;
    pthread_once(&lzo_once, init_lzo);
    return lzo_init_result == LZO_E_OK ? 0 : qimg_error(-EIO, "lzo1x: library failed to start");
}

/* liblzo2 has no output bound: compress into a buffer of its worst case */
static size_t lzo_worst(size_t n)
{
    return n + n / 16 + 64 + 3;
}

int codec_lzo_compress(int level, const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    if (level != QIMG_CODEC_LEVEL_DEFAULT && level != 1)
        return codec_bad_level(QIMG_CODEC_LZO1X, level);
    if (in_len > UINT_MAX / 2)
        return codec_too_big(QIMG_CODEC_LZO1X, in_len);
    int r = lzo_ready();
    if (r < 0)
        return r;
    CLEANUP_FREE uint8_t *work = qimg_xmalloc(LZO1X_1_MEM_COMPRESS);
    CLEANUP_FREE uint8_t *tmp = qimg_xmalloc(lzo_worst(in_len));
    lzo_uint n = 0;
    if (lzo1x_1_compress(in, in_len, tmp, &n, work) != LZO_E_OK)
        return qimg_error(-EINVAL, "lzo1x: compression failed");
    if (n > out_cap)
        return codec_no_room(QIMG_CODEC_LZO1X, out_cap);
    memcpy(out, tmp, n);
    *out_len = n;
    return 0;
}

/* One decode into out[0..cap): 0 with *got, or the library's error. */
static int lzo_run(const void *in, size_t in_len, void *out, size_t cap, size_t *got)
{
    lzo_uint n = cap;
    int ret = lzo1x_decompress_safe(in, in_len, out, &n, NULL);
    *got = n;
    return ret == LZO_E_INPUT_NOT_CONSUMED ? LZO_E_OK : ret;
}

static int lzo_error(int ret, size_t cap)
{
    if (ret == LZO_E_OUTPUT_OVERRUN)
        return codec_too_long(QIMG_CODEC_LZO1X, cap);
    if (ret == LZO_E_INPUT_OVERRUN)
        return codec_truncated(QIMG_CODEC_LZO1X);
    return codec_corrupt(QIMG_CODEC_LZO1X);
}

int codec_lzo_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                         size_t *produced)
{
    if (in_len > UINT_MAX || out_len > UINT_MAX / 8)
        return codec_too_big(QIMG_CODEC_LZO1X, QIMG_MAX(in_len, out_len));
    int r = lzo_ready();
    if (r < 0)
        return r;
    size_t got = 0;
    int ret = lzo_run(in, in_len, out, out_len, &got);
    if (produced) {
        if (ret != LZO_E_OK)
            return lzo_error(ret, out_len);
        *produced = got;
        return 0;
    }
    if (ret == LZO_E_OK)
        return got == out_len ? 0 : codec_short(QIMG_CODEC_LZO1X, got, out_len);
    if (ret != LZO_E_OUTPUT_OVERRUN || out_len == 0)
        return out_len == 0 ? 0 : lzo_error(ret, out_len);
    /* the stream goes on past out_len: decode it whole, keep the start */
    size_t cap = out_len * 4 + (1u << 20);
    CLEANUP_FREE uint8_t *tmp = qimg_xmalloc(cap);
    ret = lzo_run(in, in_len, tmp, cap, &got);
    if (ret != LZO_E_OK)
        return lzo_error(ret, cap);
    memcpy(out, tmp, out_len);
    return 0;
}
#else
int codec_lzo_compress(int level, const void *in, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    return codec_missing(QIMG_CODEC_LZO1X);
}

int codec_lzo_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                         size_t *produced)
{
    return codec_missing(QIMG_CODEC_LZO1X);
}
#endif
