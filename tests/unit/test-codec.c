/* The shared codecs (src/lib/codec.h): round trips of every codec built
 * in at several sizes, both decompression modes, incompressible input,
 * truncated and corrupt input, buffers too small, the streaming decoder,
 * and many threads at once.  A codec that is not built in must say so
 * with -ENOTSUP and a message. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "codec.h"
#include "internal.h"
#include "unit.h"

static const size_t sizes[] = { 0, 1, 512, 64 << 10, 2 << 20 };

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Compressible but not trivially: words from a small alphabet, runs,
 * and a sprinkle of random bytes. */
static void fill_semi(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed | 1;
    static const char *const words[] = { "cluster ", "sector ", "qcow2 ", "\0\0\0\0", "image " };
    size_t i = 0;
    while (i < n) {
        uint64_t r = rng_next(&s);
        if (r % 7 == 0) {
            p[i++] = (uint8_t)(r >> 8);
            continue;
        }
        const char *w = words[r % 5];
        size_t len = r % 5 == 3 ? 4 : strlen(w);
        for (size_t k = 0; k < len && i < n; k++)
            p[i++] = (uint8_t)w[k];
    }
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed | 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng_next(&s) >> 24);
}

static size_t bound(size_t n)
{
    return n + n / 8 + 1024;     /* more than any codec's worst case */
}

/* Every codec, built in or not: the unavailable ones must refuse. */
#define FOR_EACH_CODEC(c) for (enum qimg_codec c = 0; c < QIMG_CODEC_COUNT; c++)

static bool has_zlib(enum qimg_codec c)
{
    const char *lib = qimg_codec_library(c);
    return lib && strstr(lib, "zlib");
}

TEST(names_and_list)
{
    CHECK_EQ_STR(qimg_codec_name(QIMG_CODEC_DEFLATE), "deflate");
    CHECK_EQ_STR(qimg_codec_name(QIMG_CODEC_ZSTD), "zstd");
    CHECK_EQ_STR(qimg_codec_name(QIMG_CODEC_BZIP2), "bzip2");
    CHECK(qimg_codec_name(QIMG_CODEC_COUNT) == NULL);
    CHECK(!qimg_codec_available(QIMG_CODEC_COUNT));
    const char *list = qimg_codec_list();
    printf("  codecs: %s\n", list);
    FOR_EACH_CODEC(c) {
        bool listed = false;
        char copy[128];
        snprintf(copy, sizeof copy, "%s", list);
        for (char *save = NULL, *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
            listed |= strcmp(w, qimg_codec_name(c)) == 0;
        CHECK_EQ_INT(listed, qimg_codec_available(c));
        CHECK_EQ_INT(qimg_codec_library(c) != NULL, qimg_codec_available(c));
    }
}

TEST(unavailable_codecs_refuse)
{
    uint8_t in[64] = { 1 }, out[256];
    size_t n = 0;
    FOR_EACH_CODEC(c) {
        if (qimg_codec_available(c))
            continue;
        printf("  %s is not built in\n", qimg_codec_name(c));
        qimg_error_clear();
        CHECK_EQ_INT(qimg_codec_compress(c, QIMG_CODEC_LEVEL_DEFAULT, in, sizeof in, out,
                                         sizeof out, &n), -ENOTSUP);
        CHECK(strstr(qimg_last_error(), "not available") != NULL);
        CHECK_EQ_INT(qimg_codec_decompress(c, in, sizeof in, out, sizeof out, &n), -ENOTSUP);
        CHECK_EQ_INT(qimg_codec_decompress(c, in, sizeof in, out, sizeof out, NULL), -ENOTSUP);
        struct qimg_codec_stream *s = (void *)1;
        int r = qimg_codec_stream_new(&s, c, 1000);
        /* libdeflate alone decodes the deflate family, but not streams */
        CHECK_EQ_INT(r, -ENOTSUP);
        CHECK(s == NULL);
    }
    /* unknown codec values */
    CHECK_EQ_INT(qimg_codec_compress(QIMG_CODEC_COUNT, 0, in, 1, out, sizeof out, &n), -EINVAL);
    CHECK_EQ_INT(qimg_codec_decompress(QIMG_CODEC_COUNT, in, 1, out, 1, NULL), -EINVAL);
}

static void round_trip(enum qimg_codec c, size_t len, bool random)
{
    uint8_t *in = qimg_xmalloc(len + 1), *comp = qimg_xmalloc(bound(len) + 64);
    uint8_t *out = qimg_xmalloc(len + 1);
    random ? fill_random(in, len, len + 7) : fill_semi(in, len, len + 3);
    size_t clen = 0, got = 12345;
    int r = qimg_codec_compress(c, QIMG_CODEC_LEVEL_DEFAULT, in, len, comp, bound(len), &clen);
    CHECK_EQ_INT(r, 0);
    if (r < 0) {
        fprintf(stderr, "  %s %zu: %s\n", qimg_codec_name(c), len, qimg_last_error());
        goto out;
    }
    if (!random && len >= 512)
        CHECK(clen < len / 2);
    /* whole stream */
    memset(out, 0xa5, len + 1);
    CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, len, &got), 0);
    CHECK_EQ_INT(got, len);
    CHECK(memcmp(in, out, len) == 0);
    /* a bigger buffer than needed: still the stream's own length */
    CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, len + 1, &got), 0);
    CHECK_EQ_INT(got, len);
    /* fill mode, with trailing bytes after the stream (as in qcow2) */
    memset(comp + clen, 0x5a, 64);
    memset(out, 0xa5, len + 1);
    CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen + 64, out, len, NULL), 0);
    CHECK(memcmp(in, out, len) == 0);
    /* whole mode ignores what follows a stream that marks its end */
    if (qimg_codec_framed(c)) {
        CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen + 64, out, len, &got), 0);
        CHECK_EQ_INT(got, len);
    }
    /* same input, same bytes */
    uint8_t *again = qimg_xmalloc(bound(len));
    size_t alen = 0;
    CHECK_EQ_INT(qimg_codec_compress(c, QIMG_CODEC_LEVEL_DEFAULT, in, len, again, bound(len),
                                     &alen), 0);
    CHECK(alen == clen && memcmp(again, comp, clen) == 0);
    free(again);
out:
    free(in);
    free(comp);
    free(out);
}

TEST(round_trips)
{
    FOR_EACH_CODEC(c) {
        if (!qimg_codec_available(c))
            continue;
        for (size_t i = 0; i < QIMG_ARRAY_SIZE(sizes); i++) {
            round_trip(c, sizes[i], false);
            round_trip(c, sizes[i], true);
        }
    }
}

TEST(levels)
{
    enum { N = 64 << 10 };
    static uint8_t in[N], comp[N * 2], out[N];
    fill_semi(in, N, 99);
    static const int good[QIMG_CODEC_COUNT][2] = {
        [QIMG_CODEC_DEFLATE] = { 0, 9 }, [QIMG_CODEC_ZLIB] = { 0, 9 },
        [QIMG_CODEC_GZIP] = { 0, 9 }, [QIMG_CODEC_ZSTD] = { 1, 19 }, [QIMG_CODEC_BZIP2] = { 1, 9 },
        [QIMG_CODEC_XZ] = { 0, 9 }, [QIMG_CODEC_LZ4] = { 1, 1 }, [QIMG_CODEC_LZO1X] = { 1, 1 },
        [QIMG_CODEC_ADC] = { 1, 1 },
    };
    FOR_EACH_CODEC(c) {
        if (!qimg_codec_available(c))
            continue;
        for (int k = 0; k < 2; k++) {
            size_t clen = 0, got = 0;
            CHECK_EQ_INT(qimg_codec_compress(c, good[c][k], in, N, comp, sizeof comp, &clen), 0);
            CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, N, &got), 0);
            CHECK(got == N && memcmp(in, out, N) == 0);
        }
        size_t n;
        CHECK_EQ_INT(qimg_codec_compress(c, good[c][1] + 10, in, N, comp, sizeof comp, &n), -EINVAL);
        CHECK_EQ_INT(qimg_codec_compress(c, -5, in, N, comp, sizeof comp, &n), -EINVAL);
        CHECK(strstr(qimg_last_error(), "level") != NULL);
    }
}

TEST(incompressible_is_enospc)
{
    enum { N = 64 << 10 };
    static uint8_t in[N], comp[N];
    fill_random(in, N, 5);
    FOR_EACH_CODEC(c) {
        if (!qimg_codec_available(c))
            continue;
        size_t n = 0;
        qimg_error_clear();
        CHECK_EQ_INT(qimg_codec_compress(c, QIMG_CODEC_LEVEL_DEFAULT, in, N, comp, N - 1, &n),
                     -ENOSPC);
        CHECK(qimg_last_error()[0] != '\0');
        /* compressible data into too small a buffer as well */
        fill_semi(in, N, 6);
        CHECK_EQ_INT(qimg_codec_compress(c, QIMG_CODEC_LEVEL_DEFAULT, in, N, comp, 8, &n),
                     -ENOSPC);
        CHECK_EQ_INT(qimg_codec_compress(c, QIMG_CODEC_LEVEL_DEFAULT, in, N, comp, 0, &n),
                     -ENOSPC);
        fill_random(in, N, 5);
    }
}

/* Compressed semi-random data of len bytes; returns its length. */
static size_t make_stream(enum qimg_codec c, uint8_t *in, size_t len, uint8_t *comp)
{
    size_t clen = 0;
    fill_semi(in, len, len);
    if (qimg_codec_compress(c, QIMG_CODEC_LEVEL_DEFAULT, in, len, comp, bound(len), &clen) < 0)
        abort();
    return clen;
}

TEST(output_too_small_or_too_large)
{
    enum { N = 256 << 10 };
    static uint8_t in[N], comp[N * 2], out[N + 1];
    FOR_EACH_CODEC(c) {
        if (!qimg_codec_available(c))
            continue;
        size_t clen = make_stream(c, in, N, comp), got = 0;
        /* whole mode: a stream longer than the room is an error */
        CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, N - 1, &got), -EIO);
        CHECK(strstr(qimg_last_error(), "more than") != NULL);
        CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, 0, &got), -EIO);
        /* fill mode: the stream may go on past the output (zlib needed
         * for the deflate family, libdeflate cannot stop early) */
        if (c > QIMG_CODEC_GZIP || has_zlib(c)) {
            memset(out, 0, N);
            CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, N / 2, NULL), 0);
            CHECK(memcmp(in, out, N / 2) == 0);
            CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, 0, NULL), 0);
        }
        /* fill mode: output that stops short is an error */
        CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, N + 1, NULL), -EIO);
    }
}

TEST(truncated_and_corrupt)
{
    enum { N = 128 << 10 };
    static uint8_t in[N], comp[N * 2], bad[N * 2], out[N];
    FOR_EACH_CODEC(c) {
        if (!qimg_codec_available(c))
            continue;
        size_t clen = make_stream(c, in, N, comp), got = 0;
        /* every truncation point of the first bytes, then coarser */
        for (size_t cut = 0; cut < clen; cut += cut < 64 ? 1 : clen / 97 + 1) {
            qimg_error_clear();
            int r = qimg_codec_decompress(c, comp, cut, out, N, &got);
            /* without an end marker a cut between commands is shorter data */
            if (!qimg_codec_framed(c) && r == 0 && got < N)
                continue;
            CHECK(r == -EIO);
            if (r != -EIO)
                fprintf(stderr, "  %s cut at %zu of %zu: %d\n", qimg_codec_name(c), cut, clen, r);
            CHECK(qimg_last_error()[0] != '\0');
            /* fill mode may be done before the cut near the end */
            if (cut < clen / 2)
                CHECK_EQ_INT(qimg_codec_decompress(c, comp, cut, out, N, NULL), -EIO);
        }
        /* corrupt bytes: an error or some output, never beyond the buffer
         * (ASan watches) and never a crash */
        uint64_t s = 77;
        for (int round = 0; round < 60; round++) {
            memcpy(bad, comp, clen);
            for (int k = 0; k < 1 + round % 4; k++)
                bad[rng_next(&s) % clen] ^= (uint8_t)(1u << (rng_next(&s) % 8));
            int r = qimg_codec_decompress(c, bad, clen, out, N, &got);
            CHECK(r == 0 || r == -EIO);
            CHECK(r < 0 || got <= N);
            r = qimg_codec_decompress(c, bad, clen, out, N, NULL);
            CHECK(r == 0 || r == -EIO);
        }
        /* garbage: only raw deflate has no header to reject it */
        fill_random(bad, 4096, 3);
        int r = qimg_codec_decompress(c, bad, 4096, out, N, &got);
        CHECK(r == -EIO || ((c == QIMG_CODEC_DEFLATE || !qimg_codec_framed(c)) && r == 0));
    }
}

/* Streaming decoder: input and output in odd-sized pieces. */
static int stream_decode(enum qimg_codec c, const uint8_t *comp, size_t clen, size_t in_step,
                         uint8_t *out, size_t out_len, size_t out_step, uint64_t max_out,
                         size_t *total)
{
    struct qimg_codec_stream *s = NULL;
    int r = qimg_codec_stream_new(&s, c, max_out);
    if (r < 0)
        return r;
    size_t in_pos = 0, out_pos = 0;
    r = 0;
    while (r == 0) {
        size_t in_avail = QIMG_MIN(in_step, clen - in_pos);
        size_t out_avail = QIMG_MIN(out_step, out_len - out_pos);
        const void *ip = comp + in_pos;
        void *op = out + out_pos;
        size_t ia = in_avail, oa = out_avail;
        r = qimg_codec_stream_feed(s, &ip, &ia, &op, &oa);
        in_pos += in_avail - ia;
        out_pos += out_avail - oa;
        if (r == 0 && in_pos == clen && ia == in_avail && oa == out_avail)
            break;            /* no progress with all the input given */
        if (r == 0 && out_pos == out_len && oa == out_avail)
            break;            /* output full */
    }
    *total = out_pos;
    if (r >= 0)
        r = qimg_codec_stream_finish(s);
    CHECK_EQ_INT(qimg_codec_stream_total_out(s), out_pos);
    qimg_codec_stream_free(s);
    return r;
}

TEST(streaming)
{
    enum { N = 300 << 10 };
    static uint8_t in[N], comp[N * 2], out[N + 100];
    FOR_EACH_CODEC(c) {
        if (!qimg_codec_available(c))
            continue;
        struct qimg_codec_stream *probe = NULL;
        if (qimg_codec_stream_new(&probe, c, 1) == -ENOTSUP) {
            printf("  %s: no streaming in this build\n", qimg_codec_name(c));
            continue;
        }
        qimg_codec_stream_free(probe);
        size_t clen, total = 0;
        static const size_t steps[][2] = { { 1, 4096 }, { 7, 3 }, { 4096, 1 }, { 1 << 20, 1 << 20 } };
        for (size_t k = 0; k < QIMG_ARRAY_SIZE(steps); k++) {
            /* byte-at-a-time output of a 300k stream is slow: smaller one */
            size_t len = steps[k][1] < 8 ? N / 16 : N;
            size_t cl = make_stream(c, in, len, comp);
            memset(out, 0, sizeof out);
            CHECK_EQ_INT(stream_decode(c, comp, cl, steps[k][0], out, sizeof out, steps[k][1],
                                       len, &total), 0);
            CHECK_EQ_INT(total, len);
            CHECK(memcmp(in, out, len) == 0);
        }
        clen = make_stream(c, in, N, comp);
        /* over the limit */
        CHECK_EQ_INT(stream_decode(c, comp, clen, 4096, out, sizeof out, 4096, N - 1, &total),
                     -EIO);
        /* truncated: finish says so */
        CHECK_EQ_INT(stream_decode(c, comp, clen / 2, 4096, out, sizeof out, 4096, N, &total),
                     -EIO);
        CHECK(strstr(qimg_last_error(), "truncated") != NULL);
        /* corrupt */
        memset(comp + clen / 3, 0xff, 64);
        int r = stream_decode(c, comp, clen, 4096, in, N, 4096, N, &total);
        CHECK(r == -EIO || c == QIMG_CODEC_DEFLATE);
    }
}

TEST(release_thread)
{
    enum { N = 8192 };
    static uint8_t in[N], comp[N * 2], out[N];
    FOR_EACH_CODEC(c) {
        if (!qimg_codec_available(c))
            continue;
        for (int k = 0; k < 3; k++) {
            size_t clen = make_stream(c, in, N, comp);
            CHECK_EQ_INT(qimg_codec_decompress(c, comp, clen, out, N, NULL), 0);
            CHECK(memcmp(in, out, N) == 0);
            qimg_codec_release_thread();
        }
    }
}

/* Many threads, every codec, mixed sizes and levels, at once. */
static atomic_int thread_errors;

static void *worker(void *arg)
{
    uint64_t s = (uintptr_t)arg * 1000003 + 1;
    size_t cap = 160 << 10;
    uint8_t *in = qimg_xmalloc(cap), *comp = qimg_xmalloc(bound(cap)), *out = qimg_xmalloc(cap);
    for (int i = 0; i < 30; i++) {
        enum qimg_codec c = (enum qimg_codec)(rng_next(&s) % QIMG_CODEC_COUNT);
        if (!qimg_codec_available(c))
            continue;
        size_t len = rng_next(&s) % cap;
        int level = rng_next(&s) % 2 ? QIMG_CODEC_LEVEL_DEFAULT : 1 + (int)(rng_next(&s) % 9);
        if (c >= QIMG_CODEC_LZ4)       /* one level only */
            level = QIMG_CODEC_LEVEL_DEFAULT;
        rng_next(&s) % 4 ? fill_semi(in, len, s) : fill_random(in, len, s);
        size_t clen = 0, got = 0;
        int r = qimg_codec_compress(c, level, in, len, comp, bound(len), &clen);
        if (r == 0)
            r = qimg_codec_decompress(c, comp, clen, out, len, i % 2 ? &got : NULL);
        if (r == 0 && i % 2 && got != len)
            r = -1;
        if (r != 0 || memcmp(in, out, len) != 0) {
            fprintf(stderr, "  thread: %s len %zu level %d: %d %s\n", qimg_codec_name(c), len,
                    level, r, qimg_last_error());
            atomic_fetch_add(&thread_errors, 1);
        }
    }
    free(in);
    free(comp);
    free(out);
    return NULL;
}

TEST(many_threads)
{
    enum { T = 8 };
    pthread_t th[T];
    atomic_store(&thread_errors, 0);
    for (int round = 0; round < 2; round++) {
        for (uintptr_t i = 0; i < T; i++)
            CHECK_EQ_INT(pthread_create(&th[i], NULL, worker, (void *)(i + round * T)), 0);
        for (int i = 0; i < T; i++)
            pthread_join(th[i], NULL);
    }
    CHECK_EQ_INT(atomic_load(&thread_errors), 0);
}

int main(void)
{
    RUN(names_and_list);
    RUN(unavailable_codecs_refuse);
    RUN(round_trips);
    RUN(levels);
    RUN(incompressible_is_enospc);
    RUN(output_too_small_or_too_large);
    RUN(truncated_and_corrupt);
    RUN(streaming);
    RUN(release_thread);
    RUN(many_threads);
    return UNIT_DONE();
}
