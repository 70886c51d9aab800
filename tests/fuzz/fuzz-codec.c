/* qimg - libFuzzer target: any bytes as compressed data for every codec.
 *
 * The first byte picks the output size (up to 1 MiB) and the input's
 * split points for the streaming decoder; the rest is decoded by every
 * codec built in, one-shot in both modes and as a stream in pieces.  A
 * failure must carry a message and be -EIO (or -ENOMEM); a success must
 * stay inside the buffer (ASan watches the buffer's end). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "codec.h"
#include "internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static void check_failure(const char *what, enum qimg_codec c, int r)
{
    if (r >= 0)
        return;
    if ((r != -EIO && r != -ENOMEM) || qimg_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz-codec: %s %s: %d without a proper message (%s)\n", what,
                qimg_codec_name(c), r, qimg_last_error());
        abort();
    }
    qimg_error_clear();
}

static void stream(enum qimg_codec c, const uint8_t *in, size_t len, size_t step,
                   uint8_t *out, size_t cap)
{
    struct qimg_codec_stream *s = NULL;
    if (qimg_codec_stream_new(&s, c, cap) < 0) {
        qimg_error_clear();
        return;        /* no streaming for this codec in this build */
    }
    size_t out_pos = 0;
    int r = 0;
    /* each round either consumes, produces or stops: bounded */
    for (int rounds = 0; r == 0 && rounds < 100000; rounds++) {
        const void *ip = in;
        size_t ia = QIMG_MIN(step, len);
        void *op = out + out_pos;
        size_t oa = QIMG_MIN(step * 3, cap - out_pos);
        size_t ia0 = ia, oa0 = oa;
        r = qimg_codec_stream_feed(s, &ip, &ia, &op, &oa);
        in += ia0 - ia;
        len -= ia0 - ia;
        out_pos += oa0 - oa;
        if (r == 0 && ia == ia0 && oa == oa0)
            break;
    }
    check_failure("stream", c, r);
    if (qimg_codec_stream_total_out(s) > cap) {
        fprintf(stderr, "fuzz-codec: stream %s made more than %zu bytes\n", qimg_codec_name(c), cap);
        abort();
    }
    if (r == 0)
        check_failure("stream finish", c, qimg_codec_stream_finish(s));
    qimg_codec_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cap = (size_t)1 << (data[0] & 0x0f) << 5;     /* 32 bytes .. 1 MiB */
    size_t step = 1 + (data[0] >> 4) * 97;
    if (step < size / 256)
        step = size / 256;     /* keep big inputs to a few hundred rounds */
    data++;
    size--;
    uint8_t *out = malloc(cap);
    if (!out)
        return 0;
    for (enum qimg_codec c = 0; c < QIMG_CODEC_COUNT; c++) {
        if (!qimg_codec_available(c))
            continue;
        size_t got = 0;
        int r = qimg_codec_decompress(c, data, size, out, cap, &got);
        check_failure("whole", c, r);
        if (r == 0 && got > cap) {
            fprintf(stderr, "fuzz-codec: %s produced %zu bytes into %zu\n", qimg_codec_name(c),
                    got, cap);
            abort();
        }
        check_failure("fill", c, qimg_codec_decompress(c, data, size, out, cap, NULL));
        stream(c, data, size, step, out, cap);
    }
    free(out);
    return 0;
}
