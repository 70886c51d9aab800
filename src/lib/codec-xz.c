/* qimg - xz (the .xz container, LZMA2 inside) with liblzma.  Each call
 * makes its own decoder: cloop 4 images are the only users, and a
 * decoder's dictionary is sized by the stream's own header (bounded by
 * XZ_MEMLIMIT, so a hostile header cannot make us allocate without end). */
#include "codec-priv.h"

#include "codec-dl.h"

#define DEFAULT_LEVEL 6
/* xz -9 needs 65 MiB to decode; a stream that asks for more is refused */
#define XZ_MEMLIMIT (128ull << 20)

const char *codec_xz_library(void)
{
#ifdef HAVE_LZMA
    return "liblzma";
#else
    return NULL;
#endif
}

#ifdef HAVE_LZMA
static int xz_error(lzma_ret ret)
{
    switch (ret) {
    case LZMA_MEM_ERROR:
        return qimg_error(-ENOMEM, "xz: out of memory");
    case LZMA_MEMLIMIT_ERROR:
        return qimg_error(-EIO, "xz: compressed data needs more than %llu MiB to decode",
                          XZ_MEMLIMIT >> 20);
    default:
        return codec_corrupt(QIMG_CODEC_XZ);
    }
}

int codec_xz_compress(int level, const void *in, size_t in_len,
                      void *out, size_t out_cap, size_t *out_len)
{
    if (level == QIMG_CODEC_LEVEL_DEFAULT)
        level = DEFAULT_LEVEL;
    if (level < 0 || level > 9)
        return codec_bad_level(QIMG_CODEC_XZ, level);
    int r = qimg_lzma_load();
    if (r < 0)
        return r;
    size_t pos = 0;
    lzma_ret ret = lzma_easy_buffer_encode((uint32_t)level, LZMA_CHECK_CRC32, NULL, in, in_len,
                                           out, &pos, out_cap);
    if (ret == LZMA_BUF_ERROR)
        return codec_no_room(QIMG_CODEC_XZ, out_cap);
    if (ret != LZMA_OK)
        return xz_error(ret);
    *out_len = pos;
    return 0;
}

int codec_xz_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                        size_t *produced)
{
    int r = qimg_lzma_load();
    if (r < 0)
        return r;
    lzma_stream z = LZMA_STREAM_INIT;
    lzma_ret ret = lzma_stream_decoder(&z, XZ_MEMLIMIT, 0);
    if (ret != LZMA_OK)
        return xz_error(ret);
    z.next_in = in;
    z.avail_in = in_len;
    z.next_out = out;
    z.avail_out = out_len;
    ret = lzma_code(&z, LZMA_FINISH);
    size_t got = out_len - z.avail_out;
    lzma_end(&z);
    bool bad = ret != LZMA_OK && ret != LZMA_STREAM_END && ret != LZMA_BUF_ERROR;
    if (!produced) {
        if (got == out_len && !bad)
            return 0;
        return bad ? xz_error(ret) : codec_short(QIMG_CODEC_XZ, got, out_len);
    }
    if (ret == LZMA_STREAM_END) {
        *produced = got;
        return 0;
    }
    if (bad)
        return xz_error(ret);
    return got == out_len ? codec_too_long(QIMG_CODEC_XZ, out_len) : codec_truncated(QIMG_CODEC_XZ);
}

static int stream_init(void **impl, enum qimg_codec c)
{
    int r = qimg_lzma_load();
    if (r < 0)
        return r;
    lzma_stream *z = qimg_xcalloc(1, sizeof *z);
    *z = (lzma_stream)LZMA_STREAM_INIT;
    lzma_ret ret = lzma_stream_decoder(z, XZ_MEMLIMIT, 0);
    if (ret != LZMA_OK) {
        free(z);
        return xz_error(ret);
    }
    *impl = z;
    return 0;
}

static int stream_step(void *impl, struct codec_stream_step *st)
{
    lzma_stream *z = impl;
    z->next_in = st->in;
    z->avail_in = st->in_len;
    z->next_out = st->out;
    z->avail_out = st->out_cap;
    lzma_ret ret = lzma_code(z, LZMA_RUN);
    st->in_used = st->in_len - z->avail_in;
    st->out_made = st->out_cap - z->avail_out;
    if (ret == LZMA_STREAM_END) {
        st->ended = true;
        return 0;
    }
    if (ret == LZMA_OK || ret == LZMA_BUF_ERROR)
        return 0;
    return xz_error(ret);
}

static void stream_free(void *impl)
{
    lzma_end(impl);
    free(impl);
}
#else
int codec_xz_compress(int level, const void *in, size_t in_len,
                      void *out, size_t out_cap, size_t *out_len)
{
    return codec_missing(QIMG_CODEC_XZ);
}

int codec_xz_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                        size_t *produced)
{
    return codec_missing(QIMG_CODEC_XZ);
}

static int stream_init(void **impl, enum qimg_codec c) { return codec_missing(c); }
static int stream_step(void *impl, struct codec_stream_step *st) { return -ENOTSUP; }
static void stream_free(void *impl) {}
#endif

const struct codec_stream_ops codec_xz_stream = {
    .init = stream_init, .step = stream_step, .free = stream_free,
};
