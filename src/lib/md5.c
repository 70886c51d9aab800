/* qimg - MD5 as RFC 1321 describes it: 64-byte blocks, four rounds of
 * sixteen steps, the message padded with 0x80, zeros and its bit length. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "md5.h"
#include "util.h"

static uint32_t sine_table[64];
static pthread_once_t sine_once = PTHREAD_ONCE_INIT;

/* The RFC's T[i]: the integer part of 2^32 * |sin(i + 1)| (radians). */
static void fill_sine_table(void)
{
    for (int i = 0; i < 64; i++)
        sine_table[i] = (uint32_t)floor(fabs(sin((double)(i + 1))) * 4294967296.0);
}

static const uint8_t rotations[4][4] = {
    { 7, 12, 17, 22 }, { 5, 9, 14, 20 }, { 4, 11, 16, 23 }, { 6, 10, 15, 21 },
};

static uint32_t rotl(uint32_t v, unsigned n) { return v << n | v >> (32 - n); }

static void md5_block(uint32_t st[4], const uint8_t *block)
{
    uint32_t w[16], a = st[0], b = st[1], c = st[2], d = st[3];
    for (int i = 0; i < 16; i++)
        w[i] = qimg_le32(block + 4 * i);
    for (unsigned i = 0; i < 64; i++) {
        uint32_t f;
        unsigned word, round = i / 16;
        switch (round) {
        case 0:  f = (b & c) | (~b & d); word = i; break;
        case 1:  f = (d & b) | (~d & c); word = (5 * i + 1) % 16; break;
        case 2:  f = b ^ c ^ d;          word = (3 * i + 5) % 16; break;
        default: f = c ^ (b | ~d);       word = (7 * i) % 16; break;
        }
        f += a + sine_table[i] + w[word];
        a = d;
        d = c;
        c = b;
        b += rotl(f, rotations[round][i % 4]);
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

void qimg_md5(const void *data, size_t len, uint8_t digest[16])
{
    pthread_once(&sine_once, fill_sine_table);
    uint32_t st[4] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };
    const uint8_t *p = data;
    size_t left = len;
    for (; left >= 64; left -= 64, p += 64)
        md5_block(st, p);
    uint8_t tail[128] = { 0 };
    memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t tail_len = left < 56 ? 64 : 128;
    qimg_put_le64(tail + tail_len - 8, (uint64_t)len * 8);
    md5_block(st, tail);
    if (tail_len == 128)
        md5_block(st, tail + 64);
    for (int i = 0; i < 4; i++)
        qimg_put_le32(digest + 4 * i, st[i]);
}
