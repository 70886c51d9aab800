/* qimg - Apple Data Compression (ADC), the oldest chunk type of dmg
 * images, written from the format's description.
 *
 * The data is a run of commands, each starting with one byte b:
 *   b & 0x80     a literal run: the next (b & 0x7f) + 1 bytes as they are
 *   b & 0x40     a long copy: (b & 0x3f) + 4 bytes from d + 1 bytes back,
 *                d being the next two bytes, big-endian
 *   otherwise    a short copy: ((b >> 2) & 0x0f) + 3 bytes from d + 1
 *                bytes back, d = (b & 3) << 8 | the next byte
 * A copy may overlap what it produces (a run).  There is no end marker:
 * the data ends with its input. */
#include "codec-priv.h"

enum {
    LIT_MAX = 128,
    NEAR_MIN = 3, NEAR_MAX = 18, NEAR_DIST = 1024,
    FAR_MIN = 4, FAR_MAX = 67, FAR_DIST = 65536,
};

struct adc_op {
    size_t header;        /* bytes of the command itself */
    size_t literal;       /* literal bytes that follow (0 for a copy) */
    size_t copy, dist;    /* a copy's length and distance */
};

/* Parse the command at in[0..avail): false when it is cut off. */
static bool adc_parse(const uint8_t *in, size_t avail, struct adc_op *op)
{
    uint8_t b = in[0];
    *op = (struct adc_op){ 0 };
    if (b & 0x80) {
        op->header = 1;
        op->literal = (size_t)(b & 0x7f) + 1;
        return avail >= 1 + op->literal;
    }
    if (b & 0x40) {
        op->header = 3;
        if (avail < 3)
            return false;
        op->copy = (size_t)(b & 0x3f) + FAR_MIN;
        op->dist = (size_t)qimg_be16(in + 1) + 1;
        return true;
    }
    op->header = 2;
    if (avail < 2)
        return false;
    op->copy = (size_t)((b >> 2) & 0x0f) + NEAR_MIN;
    op->dist = ((size_t)(b & 3) << 8 | in[1]) + 1;
    return true;
}

int codec_adc_decompress(const void *in_, size_t in_len, void *out_, size_t out_len,
                         size_t *produced)
{
    const uint8_t *in = in_;
    uint8_t *out = out_;
    size_t ip = 0, op = 0;
    while (ip < in_len) {
        if (!produced && op == out_len)
            return 0;             /* filled; the rest is not looked at */
        struct adc_op c;
        if (!adc_parse(in + ip, in_len - ip, &c))
            return codec_truncated(QIMG_CODEC_ADC);
        size_t n = c.literal ? c.literal : c.copy;
        if (c.dist > op)
            return codec_corrupt(QIMG_CODEC_ADC);
        if (n > out_len - op) {
            if (produced)
                return codec_too_long(QIMG_CODEC_ADC, out_len);
            n = out_len - op;     /* fill mode: take what fits */
        }
        if (c.literal)
            memcpy(out + op, in + ip + 1, n);
        else
            for (size_t k = 0; k < n; k++)       /* may overlap: byte by byte */
                out[op + k] = out[op + k - c.dist];
        op += n;
        ip += c.header + c.literal;
    }
    if (produced) {
        *produced = op;
        return 0;
    }
    return op == out_len ? 0 : codec_short(QIMG_CODEC_ADC, op, out_len);
}

/* ------------------------------------------------------------ compress */

/* Greedy: the longest match among the last position seen for each 3-byte
 * hash; literals gathered into runs of up to 128. */
struct adc_writer {
    uint8_t *out;
    size_t cap, len;
    bool full;
};

static void put(struct adc_writer *w, const uint8_t *p, size_t n)
{
    if (w->full || n > w->cap - w->len) {
        w->full = true;
        return;
    }
    memcpy(w->out + w->len, p, n);
    w->len += n;
}

static void flush_literals(struct adc_writer *w, const uint8_t *lit, size_t n)
{
    while (n) {
        size_t k = QIMG_MIN(n, (size_t)LIT_MAX);
        uint8_t b = (uint8_t)(0x80 | (k - 1));
        put(w, &b, 1);
        put(w, lit, k);
        lit += k;
        n -= k;
    }
}

static void put_copy(struct adc_writer *w, size_t len, size_t dist)
{
    uint8_t b[3];
    if (len <= NEAR_MAX && dist <= NEAR_DIST) {
        b[0] = (uint8_t)(((len - NEAR_MIN) << 2) | ((dist - 1) >> 8));
        b[1] = (uint8_t)(dist - 1);
        put(w, b, 2);
    } else {
        b[0] = (uint8_t)(0x40 | (len - FAR_MIN));
        qimg_put_be16(b + 1, (uint16_t)(dist - 1));
        put(w, b, 3);
    }
}

static unsigned hash3(const uint8_t *p)
{
    return ((unsigned)p[0] << 16 | (unsigned)p[1] << 8 | p[2]) * 2654435761u >> 18;
}

int codec_adc_compress(int level, const void *in_, size_t in_len,
                       void *out, size_t out_cap, size_t *out_len)
{
    if (level != QIMG_CODEC_LEVEL_DEFAULT && level != 1)
        return codec_bad_level(QIMG_CODEC_ADC, level);
    const uint8_t *in = in_;
    CLEANUP_FREE size_t *last = qimg_xcalloc(1u << 14, sizeof *last);  /* pos + 1 */
    struct adc_writer w = { out, out_cap, 0, false };
    size_t lit_start = 0, i = 0;
    while (i + FAR_MIN <= in_len && !w.full) {
        unsigned h = hash3(in + i);
        size_t cand = last[h];
        last[h] = i + 1;
        size_t len = 0, dist = 0;
        if (cand && i - (cand - 1) <= FAR_DIST) {
            dist = i - (cand - 1);
            size_t max = QIMG_MIN((size_t)FAR_MAX, in_len - i);
            while (len < max && in[i + len] == in[i + len - dist])
                len++;
        }
        bool usable = len >= FAR_MIN || (len >= NEAR_MIN && dist <= NEAR_DIST);
        if (!usable) {
            i++;
            continue;
        }
        flush_literals(&w, in + lit_start, i - lit_start);
        put_copy(&w, len, dist);
        i += len;
        lit_start = i;
    }
    flush_literals(&w, in + lit_start, in_len - lit_start);
    if (w.full)
        return codec_no_room(QIMG_CODEC_ADC, out_cap);
    *out_len = w.len;
    return 0;
}
