/* qimg - zstd with libzstd.  One compression and one decompression
 * context per thread; a decompression context that grew a big window
 * buffer (streaming a frame that declares a large window) is dropped
 * after use rather than kept. */
#include "codec-priv.h"

#include "codec-dl.h"

/* a context bigger than this after use is freed, not cached */
#define KEEP_DCTX_MAX (8u << 20)

const char *codec_zstd_library(void)
{
#ifdef HAVE_LIBZSTD
    return "libzstd";
#else
    return NULL;
#endif
}

#ifdef HAVE_LIBZSTD
static __thread ZSTD_CCtx *cctx;
static __thread ZSTD_DCtx *dctx;

void codec_zstd_release(void)
{
    if (cctx)          /* (libzstd may never have been opened) */
        ZSTD_freeCCtx(cctx);
    cctx = NULL;
    if (dctx)
        ZSTD_freeDCtx(dctx);
    dctx = NULL;
}

static int out_of_memory(void)
{
    return qimg_error(-ENOMEM, "zstd: out of memory");
}

int codec_zstd_compress(int level, const void *in, size_t in_len,
                        void *out, size_t out_cap, size_t *out_len)
{
    int r = qimg_zstd_load();
    if (r < 0)
        return r;
    if (level == QIMG_CODEC_LEVEL_DEFAULT)
        level = ZSTD_CLEVEL_DEFAULT;
    if (level < 1 || level > ZSTD_maxCLevel())
        return codec_bad_level(QIMG_CODEC_ZSTD, level);
    if (!cctx) {
        cctx = ZSTD_createCCtx();
        if (!cctx)
            return out_of_memory();
        codec_note_thread_cache();
    }
    size_t n = ZSTD_compressCCtx(cctx, out, out_cap, in, in_len, level);
    if (!ZSTD_isError(n)) {
        *out_len = n;
        return 0;
    }
    if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
        return out_of_memory();
    /* too large (the only other way it fails): the caller stores it as is */
    return codec_no_room(QIMG_CODEC_ZSTD, out_cap);
}

static ZSTD_DCtx *thread_dctx(void)
{
    if (dctx) {
        ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
        return dctx;
    }
    dctx = ZSTD_createDCtx();
    if (dctx)
        codec_note_thread_cache();
    return dctx;
}

static void done_with_dctx(void)
{
    if (ZSTD_sizeof_DCtx(dctx) > KEEP_DCTX_MAX) {
        ZSTD_freeDCtx(dctx);
        dctx = NULL;
    }
}

/* Stream until out is full: the frame's end may not have been reached
 * then, and input may trail it. */
static int fill(ZSTD_DCtx *d, const void *in, size_t in_len, void *out, size_t out_len)
{
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_len, 0 };
    while (ob.pos < ob.size) {
        size_t before_in = ib.pos, before_out = ob.pos;
        size_t ret = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(ret))
            return ZSTD_getErrorCode(ret) == ZSTD_error_memory_allocation
                   ? out_of_memory() : codec_corrupt(QIMG_CODEC_ZSTD);
        if (ret == 0 && ob.pos < ob.size)   /* frame ended early */
            return codec_short(QIMG_CODEC_ZSTD, ob.pos, out_len);
        if (ib.pos == before_in && ob.pos == before_out)   /* no progress */
            return codec_short(QIMG_CODEC_ZSTD, ob.pos, out_len);
    }
    return 0;
}

/* The first frame, whole; what follows it is ignored. */
static int whole(ZSTD_DCtx *d, const void *in, size_t in_len, void *out, size_t out_len,
                 size_t *produced)
{
    size_t frame = ZSTD_findFrameCompressedSize(in, in_len);
    if (ZSTD_isError(frame))
        return ZSTD_getErrorCode(frame) == ZSTD_error_srcSize_wrong
               ? qimg_error(-EIO, "zstd: compressed data is truncated")
               : codec_corrupt(QIMG_CODEC_ZSTD);
    size_t n = ZSTD_decompressDCtx(d, out, out_len, in, frame);
    if (!ZSTD_isError(n)) {
        *produced = n;
        return 0;
    }
    switch (ZSTD_getErrorCode(n)) {
    case ZSTD_error_dstSize_tooSmall:
        return codec_too_long(QIMG_CODEC_ZSTD, out_len);
    case ZSTD_error_memory_allocation:
        return out_of_memory();
    default:
        return codec_corrupt(QIMG_CODEC_ZSTD);
    }
}

int codec_zstd_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                          size_t *produced)
{
    int r = qimg_zstd_load();
    if (r < 0)
        return r;
    ZSTD_DCtx *d = thread_dctx();
    if (!d)
        return out_of_memory();
    r = produced ? whole(d, in, in_len, out, out_len, produced)
                 : fill(d, in, in_len, out, out_len);
    done_with_dctx();
    return r;
}

/* Streams get a context of their own: they live across calls. */
static int stream_init(void **impl, enum qimg_codec c)
{
    int r = qimg_zstd_load();
    if (r < 0)
        return r;
    ZSTD_DStream *s = ZSTD_createDStream();
    if (!s)
        return out_of_memory();
    *impl = s;
    return 0;
}

static int stream_step(void *impl, struct codec_stream_step *st)
{
    ZSTD_inBuffer ib = { st->in, st->in_len, 0 };
    ZSTD_outBuffer ob = { st->out, st->out_cap, 0 };
    size_t ret = ZSTD_decompressStream(impl, &ob, &ib);
    st->in_used = ib.pos;
    st->out_made = ob.pos;
    if (ZSTD_isError(ret))
        return ZSTD_getErrorCode(ret) == ZSTD_error_memory_allocation
               ? out_of_memory() : codec_corrupt(QIMG_CODEC_ZSTD);
    st->ended = ret == 0;
    return 0;
}

static void stream_free(void *impl)
{
    ZSTD_freeDStream(impl);
}
#else
void codec_zstd_release(void) {}

int codec_zstd_compress(int level, const void *in, size_t in_len,
                        void *out, size_t out_cap, size_t *out_len)
{
    return codec_missing(QIMG_CODEC_ZSTD);
}

int codec_zstd_decompress(const void *in, size_t in_len, void *out, size_t out_len,
                          size_t *produced)
{
    return codec_missing(QIMG_CODEC_ZSTD);
}

static int stream_init(void **impl, enum qimg_codec c) { return codec_missing(c); }
static int stream_step(void *impl, struct codec_stream_step *st) { return -ENOTSUP; }
static void stream_free(void *impl) {}
#endif

const struct codec_stream_ops codec_zstd_stream = {
    .init = stream_init, .step = stream_step, .free = stream_free,
};
