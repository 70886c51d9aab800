/* qimg - bzip2 with libbz2.  libbz2 cannot reset a context, so each call
 * makes its own (decompression allocates the block buffers only when a
 * block header asks for them, bounded by the 900k block maximum). */
#include "codec-priv.h"

#include "codec-dl.h"

#define DEFAULT_LEVEL 9

const char *codec_bzip2_library(void)
{
#ifdef HAVE_BZIP2
    return "libbz2";
#else
    return NULL;
#endif
}

#ifdef HAVE_BZIP2
static int bz_error(int ret)
{
    if (ret == BZ_MEM_ERROR)
        return qimg_error(-ENOMEM, "bzip2: out of memory");
    return codec_corrupt(QIMG_CODEC_BZIP2);
}

int codec_bzip2_compress(int level, const void *in, size_t in_len,
                         void *out, size_t out_cap, size_t *out_len)
{
    static char empty;     /* libbz2 refuses NULL even for no bytes */
    if (level == QIMG_CODEC_LEVEL_DEFAULT)
        level = DEFAULT_LEVEL;
    if (level < 1 || level > 9)
        return codec_bad_level(QIMG_CODEC_BZIP2, level);
    if (in_len > UINT_MAX)
        return codec_too_big(QIMG_CODEC_BZIP2, in_len);
    int r = qimg_bz2_load();
    if (r < 0)
        return r;
    unsigned n = codec_clamp_uint(out_cap);
    int ret = BZ2_bzBuffToBuffCompress(out ? out : &empty, &n, in ? (char *)in : &empty,
                                       (unsigned)in_len, level, 0, 0);
    if (ret == BZ_OUTBUFF_FULL)
        return codec_no_room(QIMG_CODEC_BZIP2, out_cap);
    if (ret == BZ_MEM_ERROR)
        return qimg_error(-ENOMEM, "bzip2: out of memory");
    if (ret != BZ_OK)
        return qimg_error(-EINVAL, "bzip2: compression failed (%d)", ret);
    *out_len = n;
    return 0;
}

int codec_bzip2_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                           size_t *produced)
{
    if (in_len > UINT_MAX || out_len > UINT_MAX)
        return codec_too_big(QIMG_CODEC_BZIP2, QIMG_MAX(in_len, out_len));
    int r = qimg_bz2_load();
    if (r < 0)
        return r;
    bz_stream bz;
    memset(&bz, 0, sizeof bz);
    if (BZ2_bzDecompressInit(&bz, 0, 0) != BZ_OK)
        return qimg_error(-ENOMEM, "bzip2: out of memory");
    bz.next_in = (char *)in;
    bz.avail_in = (unsigned)in_len;
    bz.next_out = out;
    bz.avail_out = (unsigned)out_len;
    /* one call decodes until the stream ends, the input runs out or the
     * output is full */
    int ret = BZ2_bzDecompress(&bz);
    size_t got = out_len - bz.avail_out;
    BZ2_bzDecompressEnd(&bz);
    if (ret != BZ_OK && ret != BZ_STREAM_END)
        return bz_error(ret);
    if (!produced)
        return got == out_len ? 0 : codec_short(QIMG_CODEC_BZIP2, got, out_len);
    if (ret == BZ_STREAM_END) {
        *produced = got;
        return 0;
    }
    return got == out_len ? codec_too_long(QIMG_CODEC_BZIP2, out_len)
                          : codec_short(QIMG_CODEC_BZIP2, got, out_len);
}

static int stream_init(void **impl, enum qimg_codec c)
{
    int r = qimg_bz2_load();
    if (r < 0)
        return r;
    bz_stream *bz = qimg_xcalloc(1, sizeof *bz);
    if (BZ2_bzDecompressInit(bz, 0, 0) != BZ_OK) {
        free(bz);
        return qimg_error(-ENOMEM, "bzip2: out of memory");
    }
    *impl = bz;
    return 0;
}

static int stream_step(void *impl, struct codec_stream_step *st)
{
    bz_stream *bz = impl;
    unsigned in_len = codec_clamp_uint(st->in_len), out_cap = codec_clamp_uint(st->out_cap);
    bz->next_in = (char *)st->in;
    bz->avail_in = in_len;
    bz->next_out = (char *)st->out;
    bz->avail_out = out_cap;
    int ret = BZ2_bzDecompress(bz);
    st->in_used = in_len - bz->avail_in;
    st->out_made = out_cap - bz->avail_out;
    if (ret != BZ_OK && ret != BZ_STREAM_END)
        return bz_error(ret);
    st->ended = ret == BZ_STREAM_END;
    return 0;
}

static void stream_free(void *impl)
{
    BZ2_bzDecompressEnd(impl);
    free(impl);
}
#else
int codec_bzip2_compress(int level, const void *in, size_t in_len,
                         void *out, size_t out_cap, size_t *out_len)
{
    return codec_missing(QIMG_CODEC_BZIP2);
}

int codec_bzip2_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                           size_t *produced)
{
    return codec_missing(QIMG_CODEC_BZIP2);
}

static int stream_init(void **impl, enum qimg_codec c) { return codec_missing(c); }
static int stream_step(void *impl, struct codec_stream_step *st) { return -ENOTSUP; }
static void stream_free(void *impl) {}
#endif

const struct codec_stream_ops codec_bzip2_stream = {
    .init = stream_init, .step = stream_step, .free = stream_free,
};
