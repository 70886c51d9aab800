/* qimg - the deflate family (raw deflate, zlib and gzip wrappers) with
 * libdeflate and/or zlib.
 *
 * Compression: libdeflate when built in (its output differs from zlib's
 * but is as valid; qimg has always written it), else zlib with the
 * parameters qemu uses (raw deflate: 4 KiB window, memLevel 9, as qcow
 * and qcow2 write it; zlib and gzip wrappers: zlib's defaults).
 * Decompression: libdeflate first; in "fill" mode a stream longer than the
 * output makes libdeflate give up, so zlib decides then.  The window size
 * given to zlib's inflate does not matter for one-shot buffers (matches
 * reach back into the output itself), so 32 KiB is used throughout. */
#include "codec-priv.h"

#include "codec-dl.h"

#define DEFAULT_LEVEL 6

const char *codec_deflate_library(void)
{
#if defined(HAVE_LIBDEFLATE) && defined(HAVE_ZLIB)
    return "libdeflate+zlib";
#elif defined(HAVE_LIBDEFLATE)
    return "libdeflate";
#elif defined(HAVE_ZLIB)
    return "zlib";
#else
    return NULL;
#endif
}

/* ------------------------------------------------- per-thread contexts */

#ifdef HAVE_LIBDEFLATE
static __thread struct libdeflate_compressor *ld_comp;
static __thread int ld_comp_level;
static __thread struct libdeflate_decompressor *ld_decomp;
#endif
#if defined(HAVE_ZLIB) && !defined(HAVE_LIBDEFLATE)
#define USE_ZLIB_DEFLATE 1
/* one deflate stream, remade when the parameters change */
static __thread z_stream z_def;
static __thread bool z_def_live;
static __thread int z_def_wbits, z_def_level;
#endif
#ifdef HAVE_ZLIB
/* one inflate stream, reset between uses */
static __thread z_stream z_inf;
static __thread bool z_inf_live;
#endif

void codec_deflate_release(void)
{
#ifdef HAVE_LIBDEFLATE
    /* (libdeflate may never have been opened) */
    if (ld_comp)
        libdeflate_free_compressor(ld_comp);
    ld_comp = NULL;
    if (ld_decomp)
        libdeflate_free_decompressor(ld_decomp);
    ld_decomp = NULL;
#endif
#ifdef USE_ZLIB_DEFLATE
    if (z_def_live)
        deflateEnd(&z_def);
    z_def_live = false;
#endif
#ifdef HAVE_ZLIB
    if (z_inf_live)
        inflateEnd(&z_inf);
    z_inf_live = false;
#endif
}

#ifdef HAVE_ZLIB
/* zlib's windowBits: negative for raw deflate, +16 for gzip */
static int zlib_wbits(enum qimg_codec c, bool compress)
{
    switch (c) {
    case QIMG_CODEC_DEFLATE:
        return compress ? -12 : -15;
    case QIMG_CODEC_GZIP:
        return 15 + 16;
    default:
        return 15;
    }
}

#ifdef USE_ZLIB_DEFLATE
static z_stream *thread_deflater(enum qimg_codec c, int level)
{
    int wbits = zlib_wbits(c, true);
    if (z_def_live && z_def_wbits == wbits && z_def_level == level) {
        if (deflateReset(&z_def) == Z_OK)
            return &z_def;
    }
    if (z_def_live)
        deflateEnd(&z_def);
    z_def_live = false;
    memset(&z_def, 0, sizeof z_def);
    int mem_level = c == QIMG_CODEC_DEFLATE ? 9 : 8;
    if (deflateInit2(&z_def, level, Z_DEFLATED, wbits, mem_level, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    codec_note_thread_cache();
    z_def_live = true;
    z_def_wbits = wbits;
    z_def_level = level;
    return &z_def;
}
#endif

static z_stream *thread_inflater(enum qimg_codec c)
{
    int wbits = zlib_wbits(c, false);
    if (z_inf_live && inflateReset2(&z_inf, wbits) == Z_OK)
        return &z_inf;
    if (z_inf_live)
        inflateEnd(&z_inf);
    z_inf_live = false;
    memset(&z_inf, 0, sizeof z_inf);
    if (inflateInit2(&z_inf, wbits) != Z_OK)
        return NULL;
    codec_note_thread_cache();
    z_inf_live = true;
    return &z_inf;
}
#endif

/* ----------------------------------------------------------- compress */

#ifdef HAVE_LIBDEFLATE
static struct libdeflate_compressor *thread_compressor(int level)
{
    if (ld_comp && ld_comp_level == level)
        return ld_comp;
    if (ld_comp)
        libdeflate_free_compressor(ld_comp);
    ld_comp = libdeflate_alloc_compressor(level);
    ld_comp_level = level;
    if (ld_comp)
        codec_note_thread_cache();
    return ld_comp;
}

static int libdeflate_compress(enum qimg_codec c, int level, const void *in, size_t in_len,
                               void *out, size_t out_cap, size_t *out_len)
{
    int r = qimg_libdeflate_load();
    if (r < 0)
        return r;
    struct libdeflate_compressor *comp = thread_compressor(level);
    if (!comp)
        return qimg_error(-ENOMEM, "%s: out of memory", qimg_codec_name(c));
    size_t n;
    if (c == QIMG_CODEC_DEFLATE)
        n = libdeflate_deflate_compress(comp, in, in_len, out, out_cap);
    else if (c == QIMG_CODEC_ZLIB)
        n = libdeflate_zlib_compress(comp, in, in_len, out, out_cap);
    else
        n = libdeflate_gzip_compress(comp, in, in_len, out, out_cap);
    if (n == 0)
        return codec_no_room(c, out_cap);
    *out_len = n;
    return 0;
}
#endif

#ifdef USE_ZLIB_DEFLATE
static int zlib_compress(enum qimg_codec c, int level, const void *in, size_t in_len,
                         void *out, size_t out_cap, size_t *out_len)
{
    if (in_len > UINT_MAX)
        return codec_too_big(c, in_len);
    int r = qimg_zlib_load();
    if (r < 0)
        return r;
    z_stream *z = thread_deflater(c, level);
    if (!z)
        return qimg_error(-ENOMEM, "%s: out of memory", qimg_codec_name(c));
    unsigned cap = codec_clamp_uint(out_cap);
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)in_len;
    z->next_out = out;
    z->avail_out = cap;
    if (deflate(z, Z_FINISH) != Z_STREAM_END)
        return codec_no_room(c, out_cap);
    *out_len = cap - z->avail_out;
    return 0;
}
#endif

int codec_deflate_compress(enum qimg_codec c, int level, const void *in, size_t in_len,
                           void *out, size_t out_cap, size_t *out_len)
{
    if (level == QIMG_CODEC_LEVEL_DEFAULT)
        level = DEFAULT_LEVEL;
    if (level < 0 || level > 9)
        return codec_bad_level(c, level);
#if defined(HAVE_LIBDEFLATE)
    return libdeflate_compress(c, level, in, in_len, out, out_cap, out_len);
#elif defined(HAVE_ZLIB)
    return zlib_compress(c, level, in, in_len, out, out_cap, out_len);
#else
    return codec_missing(c);
#endif
}

/* --------------------------------------------------------- decompress */

#ifdef HAVE_ZLIB
static int zlib_decompress(enum qimg_codec c, const void *in, size_t in_len,
                           void *out, size_t out_len, size_t *produced)
{
    if (in_len > UINT_MAX || out_len > UINT_MAX)
        return codec_too_big(c, QIMG_MAX(in_len, out_len));
    int r = qimg_zlib_load();
    if (r < 0)
        return r;
    z_stream *z = thread_inflater(c);
    if (!z)
        return qimg_error(-ENOMEM, "%s: out of memory", qimg_codec_name(c));
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)in_len;
    z->next_out = out;
    z->avail_out = (uInt)out_len;
    int ret = inflate(z, Z_FINISH);
    size_t got = out_len - z->avail_out;
    if (!produced) {
        /* the output filled up: success even when the stream goes on */
        if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && got == out_len)
            return 0;
        return ret == Z_DATA_ERROR || ret == Z_NEED_DICT ? codec_corrupt(c)
                                                         : codec_short(c, got, out_len);
    }
    if (ret == Z_STREAM_END) {
        *produced = got;
        return 0;
    }
    if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT)
        return codec_corrupt(c);
    return got == out_len ? codec_too_long(c, out_len) : codec_short(c, got, out_len);
}
#endif

#ifdef HAVE_LIBDEFLATE
static struct libdeflate_decompressor *thread_decompressor(void)
{
    if (!ld_decomp) {
        ld_decomp = libdeflate_alloc_decompressor();
        if (ld_decomp)
            codec_note_thread_cache();
    }
    return ld_decomp;
}

static enum libdeflate_result libdeflate_run(struct libdeflate_decompressor *d, enum qimg_codec c,
                                             const void *in, size_t in_len,
                                             void *out, size_t out_len, size_t *got)
{
    if (c == QIMG_CODEC_DEFLATE)
        return libdeflate_deflate_decompress(d, in, in_len, out, out_len, got);
    if (c == QIMG_CODEC_ZLIB)
        return libdeflate_zlib_decompress(d, in, in_len, out, out_len, got);
    return libdeflate_gzip_decompress(d, in, in_len, out, out_len, got);
}

static int libdeflate_decompress(enum qimg_codec c, const void *in, size_t in_len,
                                 void *out, size_t out_len, size_t *produced)
{
    int r = qimg_libdeflate_load();
    if (r < 0)
        return r;
    struct libdeflate_decompressor *d = thread_decompressor();
    size_t got = 0;
    enum libdeflate_result res = d ? libdeflate_run(d, c, in, in_len, out, out_len, &got)
                                   : LIBDEFLATE_BAD_DATA;
    if (res == LIBDEFLATE_SUCCESS && (produced || got == out_len)) {
        if (produced)
            *produced = got;
        return 0;
    }
#ifdef HAVE_ZLIB
    /* a stream longer than the output is still fine when its first
     * out_len bytes are whole: zlib decides (and words the error) */
    if (!produced)
        return zlib_decompress(c, in, in_len, out, out_len, NULL);
#endif
    if (!d)
        return qimg_error(-ENOMEM, "%s: out of memory", qimg_codec_name(c));
    switch (res) {
    case LIBDEFLATE_SUCCESS:
    case LIBDEFLATE_SHORT_OUTPUT:
        return codec_short(c, got, out_len);
    case LIBDEFLATE_INSUFFICIENT_SPACE:
        return codec_too_long(c, out_len);
    default:
        return codec_corrupt(c);
    }
}
#endif

int codec_deflate_decompress(enum qimg_codec c, const void *in, size_t in_len,
                             void *out, size_t out_len, size_t *produced)
{
#if defined(HAVE_LIBDEFLATE)
    return libdeflate_decompress(c, in, in_len, out, out_len, produced);
#elif defined(HAVE_ZLIB)
    return zlib_decompress(c, in, in_len, out, out_len, produced);
#else
    return codec_missing(c);
#endif
}

/* ---------------------------------------------------------- streaming */

#ifdef HAVE_ZLIB
struct zlib_stream {
    z_stream z;
    enum qimg_codec codec;
};

static int stream_init(void **impl, enum qimg_codec c)
{
    int r = qimg_zlib_load();
    if (r < 0)
        return r;
    struct zlib_stream *s = qimg_xcalloc(1, sizeof *s);
    s->codec = c;
    if (inflateInit2(&s->z, zlib_wbits(c, false)) != Z_OK) {
        free(s);
        return qimg_error(-ENOMEM, "%s: out of memory", qimg_codec_name(c));
    }
    *impl = s;
    return 0;
}

static int stream_step(void *impl, struct codec_stream_step *st)
{
    struct zlib_stream *s = impl;
    unsigned in_len = codec_clamp_uint(st->in_len), out_cap = codec_clamp_uint(st->out_cap);
    s->z.next_in = (Bytef *)st->in;
    s->z.avail_in = in_len;
    s->z.next_out = st->out;
    s->z.avail_out = out_cap;
    int ret = inflate(&s->z, Z_NO_FLUSH);
    st->in_used = in_len - s->z.avail_in;
    st->out_made = out_cap - s->z.avail_out;
    switch (ret) {
    case Z_STREAM_END:
        st->ended = true;
        return 0;
    case Z_OK:
    case Z_BUF_ERROR:          /* no progress: more input or room needed */
        return 0;
    case Z_MEM_ERROR:
        return qimg_error(-ENOMEM, "%s: out of memory", qimg_codec_name(s->codec));
    default:
        return codec_corrupt(s->codec);
    }
}

static void stream_free(void *impl)
{
    struct zlib_stream *s = impl;
    inflateEnd(&s->z);
    free(s);
}
#else
static int stream_init(void **impl, enum qimg_codec c)
{
    return codec_missing(c);   /* libdeflate works on whole buffers only */
}

static int stream_step(void *impl, struct codec_stream_step *st) { return -ENOTSUP; }
static void stream_free(void *impl) {}
#endif

const struct codec_stream_ops codec_deflate_stream = {
    .init = stream_init, .step = stream_step, .free = stream_free,
};
