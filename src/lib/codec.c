/* qimg - the codec interface (codec.h): dispatch to the library files,
 * names, messages, per-thread cache release and the streaming decoder. */
#include <pthread.h>

#include "codec-priv.h"

static const char *const names[QIMG_CODEC_COUNT] = {
    [QIMG_CODEC_DEFLATE] = "deflate",
    [QIMG_CODEC_ZLIB] = "zlib",
    [QIMG_CODEC_GZIP] = "gzip",
    [QIMG_CODEC_ZSTD] = "zstd",
    [QIMG_CODEC_BZIP2] = "bzip2",
    [QIMG_CODEC_XZ] = "xz",
    [QIMG_CODEC_LZ4] = "lz4",
    [QIMG_CODEC_LZO1X] = "lzo1x",
    [QIMG_CODEC_ADC] = "adc",
};

static bool known(enum qimg_codec c)
{
    return (unsigned)c < QIMG_CODEC_COUNT;
}

const char *qimg_codec_name(enum qimg_codec c)
{
    return known(c) ? names[c] : NULL;
}

const char *qimg_codec_library(enum qimg_codec c)
{
    switch (c) {
    case QIMG_CODEC_DEFLATE:
    case QIMG_CODEC_ZLIB:
    case QIMG_CODEC_GZIP:
        return codec_deflate_library();
    case QIMG_CODEC_ZSTD:
        return codec_zstd_library();
    case QIMG_CODEC_BZIP2:
        return codec_bzip2_library();
    case QIMG_CODEC_XZ:
        return codec_xz_library();
    case QIMG_CODEC_LZ4:
        return codec_lz4_library();
    case QIMG_CODEC_LZO1X:
        return codec_lzo_library();
    case QIMG_CODEC_ADC:
        return "qimg";
    default:
        return NULL;
    }
}

bool qimg_codec_framed(enum qimg_codec c)
{
    return known(c) && c != QIMG_CODEC_LZ4 && c != QIMG_CODEC_ADC;
}

bool qimg_codec_available(enum qimg_codec c)
{
    return qimg_codec_library(c) != NULL;
}

static char list_text[128];
static pthread_once_t list_once = PTHREAD_ONCE_INIT;

static void make_list(void)
{
    size_t n = 0;
    for (int c = 0; c < QIMG_CODEC_COUNT; c++)
        if (qimg_codec_available(c))
            n += (size_t)snprintf(list_text + n, sizeof list_text - n, "%s%s",
                                  n ? " " : "", names[c]);
}

const char *qimg_codec_list(void)
{
    pthread_once(&list_once, make_list);
    return list_text;
}

/* ---------------------------------------------------------- messages */

static const char *name_or_unknown(enum qimg_codec c)
{
    return known(c) ? names[c] : "unknown codec";
}

int codec_missing(enum qimg_codec c)
{
    return qimg_error(-ENOTSUP, "%s compression is not available in this build",
                      name_or_unknown(c));
}

int codec_corrupt(enum qimg_codec c)
{
    return qimg_error(-EIO, "%s: compressed data is corrupt", name_or_unknown(c));
}

int codec_short(enum qimg_codec c, size_t got, size_t want)
{
    return qimg_error(-EIO, "%s: compressed data ends after %zu of %zu bytes",
                      name_or_unknown(c), got, want);
}

int codec_too_long(enum qimg_codec c, size_t cap)
{
    return qimg_error(-EIO, "%s: compressed data decodes to more than %zu bytes",
                      name_or_unknown(c), cap);
}

int codec_no_room(enum qimg_codec c, size_t cap)
{
    return qimg_error(-ENOSPC, "%s: compressed data does not fit in %zu bytes",
                      name_or_unknown(c), cap);
}

int codec_bad_level(enum qimg_codec c, int level)
{
    return qimg_error(-EINVAL, "%s: invalid compression level %d", name_or_unknown(c), level);
}

int codec_truncated(enum qimg_codec c)
{
    return qimg_error(-EIO, "%s: compressed data is truncated", name_or_unknown(c));
}

int codec_no_stream(enum qimg_codec c)
{
    return qimg_error(-ENOTSUP, "%s: no streaming decoder (whole blocks only)",
                      name_or_unknown(c));
}

int codec_too_big(enum qimg_codec c, size_t len)
{
    return qimg_error(-EINVAL, "%s: %zu bytes is too large for one buffer",
                      name_or_unknown(c), len);
}

/* ---------------------------------------------------------- one-shot */

int qimg_codec_compress(enum qimg_codec c, int level, const void *in, size_t in_len,
                        void *out, size_t out_cap, size_t *out_len)
{
    switch (c) {
    case QIMG_CODEC_DEFLATE:
    case QIMG_CODEC_ZLIB:
    case QIMG_CODEC_GZIP:
        return codec_deflate_compress(c, level, in, in_len, out, out_cap, out_len);
    case QIMG_CODEC_ZSTD:
        return codec_zstd_compress(level, in, in_len, out, out_cap, out_len);
    case QIMG_CODEC_BZIP2:
        return codec_bzip2_compress(level, in, in_len, out, out_cap, out_len);
    case QIMG_CODEC_XZ:
        return codec_xz_compress(level, in, in_len, out, out_cap, out_len);
    case QIMG_CODEC_LZ4:
        return codec_lz4_compress(level, in, in_len, out, out_cap, out_len);
    case QIMG_CODEC_LZO1X:
        return codec_lzo_compress(level, in, in_len, out, out_cap, out_len);
    case QIMG_CODEC_ADC:
        return codec_adc_compress(level, in, in_len, out, out_cap, out_len);
    default:
        return qimg_error(-EINVAL, "unknown codec %d", (int)c);
    }
}

int qimg_codec_decompress(enum qimg_codec c, const void *in, size_t in_len,
                          void *out, size_t out_len, size_t *produced)
{
    switch (c) {
    case QIMG_CODEC_DEFLATE:
    case QIMG_CODEC_ZLIB:
    case QIMG_CODEC_GZIP:
        return codec_deflate_decompress(c, in, in_len, out, out_len, produced);
    case QIMG_CODEC_ZSTD:
        return codec_zstd_decompress(in, in_len, out, out_len, produced);
    case QIMG_CODEC_BZIP2:
        return codec_bzip2_decompress(in, in_len, out, out_len, produced);
    case QIMG_CODEC_XZ:
        return codec_xz_decompress(in, in_len, out, out_len, produced);
    case QIMG_CODEC_LZ4:
        return codec_lz4_decompress(in, in_len, out, out_len, produced);
    case QIMG_CODEC_LZO1X:
        return codec_lzo_decompress(in, in_len, out, out_len, produced);
    case QIMG_CODEC_ADC:
        return codec_adc_decompress(in, in_len, out, out_len, produced);
    default:
        return qimg_error(-EINVAL, "unknown codec %d", (int)c);
    }
}

/* ------------------------------------------------ per-thread caches */

/* The key's value only marks a thread that cached something, so that its
 * destructor frees the contexts (kept in __thread variables, which are
 * still there while destructors run). */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void release_at_exit(void *unused)
{
    qimg_codec_release_thread();
}

static void make_cache_key(void)
{
    if (pthread_key_create(&cache_key, release_at_exit) != 0)
        abort();
}

void codec_note_thread_cache(void)
{
    static __thread bool noted;
    if (noted)
        return;
    pthread_once(&cache_once, make_cache_key);
    pthread_setspecific(cache_key, &noted);
    noted = true;
}

void qimg_codec_release_thread(void)
{
    codec_deflate_release();
    codec_zstd_release();
}

/* --------------------------------------------------------- streaming */

struct qimg_codec_stream {
    enum qimg_codec codec;
    const struct codec_stream_ops *ops;
    void *impl;
    uint64_t max_out, total_out;
    bool ended;
};

static const struct codec_stream_ops *stream_ops(enum qimg_codec c)
{
    switch (c) {
    case QIMG_CODEC_DEFLATE:
    case QIMG_CODEC_ZLIB:
    case QIMG_CODEC_GZIP:
        return &codec_deflate_stream;
    case QIMG_CODEC_ZSTD:
        return &codec_zstd_stream;
    case QIMG_CODEC_BZIP2:
        return &codec_bzip2_stream;
    case QIMG_CODEC_XZ:
        return &codec_xz_stream;
    default:
        return NULL;
    }
}

int qimg_codec_stream_new(struct qimg_codec_stream **out, enum qimg_codec c, uint64_t max_out)
{
    *out = NULL;
    const struct codec_stream_ops *ops = stream_ops(c);
    if (!ops && known(c))
        return qimg_codec_available(c) ? codec_no_stream(c) : codec_missing(c);
    if (!ops)
        return qimg_error(-EINVAL, "unknown codec %d", (int)c);
    void *impl = NULL;
    int r = ops->init(&impl, c);
    if (r < 0)
        return r;
    struct qimg_codec_stream *s = qimg_xcalloc(1, sizeof *s);
    s->codec = c;
    s->ops = ops;
    s->impl = impl;
    s->max_out = max_out;
    *out = s;
    return 0;
}

int qimg_codec_stream_feed(struct qimg_codec_stream *s, const void **in, size_t *in_len,
                           void **out, size_t *out_cap)
{
    if (s->ended)
        return 1;
    /* room for one byte past the limit, to tell a stream that reaches it
     * from one that goes over */
    uint64_t left = s->max_out - s->total_out;
    struct codec_stream_step st = {
        .in = *in, .in_len = *in_len,
        .out = *out, .out_cap = left < *out_cap ? (size_t)left + 1 : *out_cap,
    };
    int r = s->ops->step(s->impl, &st);
    if (r < 0)
        return r;
    *in = st.in + st.in_used;
    *in_len -= st.in_used;
    *out = st.out + st.out_made;
    *out_cap -= st.out_made;
    s->total_out += st.out_made;
    if (s->total_out > s->max_out)
        return codec_too_long(s->codec, (size_t)s->max_out);
    s->ended = st.ended;
    return st.ended ? 1 : 0;
}

int qimg_codec_stream_finish(struct qimg_codec_stream *s)
{
    if (!s->ended)
        return qimg_error(-EIO, "%s: compressed stream is truncated", names[s->codec]);
    return 0;
}

uint64_t qimg_codec_stream_total_out(const struct qimg_codec_stream *s)
{
    return s->total_out;
}

void qimg_codec_stream_free(struct qimg_codec_stream *s)
{
    if (!s)
        return;
    s->ops->free(s->impl);
    free(s);
}
