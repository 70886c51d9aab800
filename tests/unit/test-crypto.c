/* The crypto layer (src/lib/crypto.c, OpenSSL; crypto-nettle.c) against
 * published test vectors: PBKDF2-HMAC-SHA256 (RFC 7914 section 11),
 * AES-XTS (IEEE P1619 vector 2, its data unit number as a plain64
 * sector), serpent (NESSIE set 1 vector 0), twofish (the paper's zero key
 * and block), CAST5 (RFC 2144 B.1), and the sector cipher's round trips in
 * every algorithm, mode and IV generator; ESSIV's cipher per algorithm
 * with qemu's messages; the LUKS anti-forensic merge of a known split. */
#include <errno.h>

#include "internal.h"
#include "crypto.h"
#include "unit.h"
#include "../../src/formats/luks/luks.h"

/* ESSIV encrypts IVs with the data cipher's family keyed by the hash;
 * cast5 takes only a 16-byte hash.  qemu's messages. */
TEST(essiv_algs)
{
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_AES_128, QIMG_HASH_SHA256), QIMG_CIPHER_AES_256);
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_SERPENT_256, QIMG_HASH_MD5), QIMG_CIPHER_SERPENT_128);
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_TWOFISH_192, QIMG_HASH_SHA256), QIMG_CIPHER_TWOFISH_256);
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_CAST5_128, QIMG_HASH_MD5), QIMG_CIPHER_CAST5_128);
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_SERPENT_128, QIMG_HASH_SHA1), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "No Serpent cipher with key size 20 available");
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_TWOFISH_128, QIMG_HASH_SHA512), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "No Twofish cipher with key size 64 available");
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_AES_256, QIMG_HASH_SHA384), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "No AES cipher with key size 48 available");
    CHECK_EQ_INT(qimg_cipher_essiv_alg(QIMG_CIPHER_CAST5_128, QIMG_HASH_SHA256), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Cipher cast5-128 not supported with essiv");
}

#ifdef HAVE_OPENSSL
static void hex(const char *text, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        sscanf(text + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

TEST(pbkdf2_vectors)
{
    uint8_t out[32], want[32];
    CHECK_EQ_INT(qimg_pbkdf2(QIMG_HASH_SHA256, "passwd", 6, (const uint8_t *)"salt", 4, 1, out, 32), 0);
    hex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc", want, 32);
    CHECK(memcmp(out, want, 32) == 0);
    CHECK_EQ_INT(qimg_pbkdf2(QIMG_HASH_SHA256, "password", 8, (const uint8_t *)"salt", 4, 2, out, 32), 0);
    hex("ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43", want, 32);
    CHECK(memcmp(out, want, 32) == 0);
    CHECK_EQ_INT(qimg_pbkdf2(QIMG_HASH_SHA256, "p", 1, (const uint8_t *)"s", 1, 0, out, 32), -EINVAL);
}

TEST(xts_vector)
{
    uint8_t key[32], buf[32], want[32];
    struct qimg_sector_cipher *c = NULL;
    memset(key, 0x11, 16);
    memset(key + 16, 0x22, 16);
    memset(buf, 0x44, sizeof buf);
    CHECK_EQ_INT(qimg_sector_cipher_new(&c, QIMG_CIPHER_AES_128, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64,
                                        QIMG_HASH_SHA256, key, sizeof key), 0);
    CHECK_EQ_INT(qimg_sector_cipher_run(c, true, 0x3333333333ull, 32, buf, sizeof buf), 0);
    hex("c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0", want, 32);
    CHECK(memcmp(buf, want, 32) == 0);
    CHECK_EQ_INT(qimg_sector_cipher_run(c, false, 0x3333333333ull, 32, buf, sizeof buf), 0);
    memset(want, 0x44, sizeof want);
    CHECK(memcmp(buf, want, 32) == 0);
    qimg_sector_cipher_free(c);
}

#ifdef HAVE_NETTLE
/* One block in ECB mode (a "sector" of one block) against its vector. */
static void check_block(enum qimg_cipher_alg a, const char *key_hex, const char *plain_hex,
                        const char *cipher_hex)
{
    uint8_t key[32], buf[16], want[16];
    size_t klen = qimg_cipher_key_len(a), blen = strlen(plain_hex) / 2;
    struct qimg_sector_cipher *c = NULL;
    hex(key_hex, key, klen);
    hex(plain_hex, buf, blen);
    hex(cipher_hex, want, blen);
    CHECK_EQ_INT(qimg_sector_cipher_new(&c, a, QIMG_MODE_ECB, QIMG_IVGEN_PLAIN64, QIMG_HASH_SHA256,
                                        key, klen), 0);
    if (!c)
        return;
    CHECK_EQ_INT(qimg_sector_cipher_run(c, true, 0, (unsigned)blen, buf, blen), 0);
    CHECK(memcmp(buf, want, blen) == 0);
    CHECK_EQ_INT(qimg_sector_cipher_run(c, false, 0, (unsigned)blen, buf, blen), 0);
    hex(plain_hex, want, blen);
    CHECK(memcmp(buf, want, blen) == 0);
    qimg_sector_cipher_free(c);
}

TEST(nettle_block_vectors)
{
    check_block(QIMG_CIPHER_SERPENT_128, "80000000000000000000000000000000",
                "00000000000000000000000000000000", "264E5481EFF42A4606ABDA06C0BFDA3D");
    check_block(QIMG_CIPHER_TWOFISH_128, "00000000000000000000000000000000",
                "00000000000000000000000000000000", "9F589F5CF6122C32B6BFEC2F2AE8C35A");
    check_block(QIMG_CIPHER_CAST5_128, "0123456712345678234567893456789A", "0123456789ABCDEF",
                "238B4FE5847E44B2");
}
#endif

/* Every mode and IV generator decrypts what it encrypted, a sector's
 * ciphertext depends on its number (not ECB), and the wrong key length
 * is refused with qemu's message. */
TEST(sector_round_trips)
{
    static const struct { enum qimg_cipher_alg a; enum qimg_cipher_mode m; enum qimg_ivgen_alg g; } cases[] = {
        { QIMG_CIPHER_AES_256, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64 },
        { QIMG_CIPHER_AES_128, QIMG_MODE_CBC, QIMG_IVGEN_ESSIV },
        { QIMG_CIPHER_AES_192, QIMG_MODE_CBC, QIMG_IVGEN_PLAIN },
        { QIMG_CIPHER_AES_256, QIMG_MODE_ECB, QIMG_IVGEN_PLAIN64 },
        { QIMG_CIPHER_AES_128, QIMG_MODE_CTR, QIMG_IVGEN_PLAIN64 },
#ifdef HAVE_NETTLE
        { QIMG_CIPHER_AES_192, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64 },
        { QIMG_CIPHER_SERPENT_256, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64 },
        { QIMG_CIPHER_SERPENT_128, QIMG_MODE_CBC, QIMG_IVGEN_ESSIV },
        { QIMG_CIPHER_SERPENT_192, QIMG_MODE_ECB, QIMG_IVGEN_PLAIN },
        { QIMG_CIPHER_TWOFISH_128, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN },
        { QIMG_CIPHER_TWOFISH_256, QIMG_MODE_CTR, QIMG_IVGEN_ESSIV },
        { QIMG_CIPHER_CAST5_128, QIMG_MODE_CBC, QIMG_IVGEN_PLAIN64 },
        { QIMG_CIPHER_CAST5_128, QIMG_MODE_CTR, QIMG_IVGEN_PLAIN },
#endif
    };
    uint8_t key[64], buf[2048], orig[2048];
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < sizeof orig; i++)
        orig[i] = (uint8_t)(i / 512);   /* sectors 0 and 1 differ, 2 and ... */
    memset(orig + 1024, 0, 1024);       /* sectors 2 and 3 equal */
    for (size_t k = 0; k < QIMG_ARRAY_SIZE(cases); k++) {
        struct qimg_sector_cipher *c = NULL;
        size_t klen = qimg_cipher_key_len(cases[k].a) * (cases[k].m == QIMG_MODE_XTS ? 2 : 1);
        /* cast5 takes ESSIV with a 16-byte hash only */
        enum qimg_hash_alg ivhash = cases[k].a == QIMG_CIPHER_CAST5_128 ? QIMG_HASH_MD5 : QIMG_HASH_SHA256;
        CHECK_EQ_INT(qimg_sector_cipher_new(&c, cases[k].a, cases[k].m, cases[k].g, ivhash, key, klen), 0);
        if (!c)
            continue;
        memcpy(buf, orig, sizeof buf);
        CHECK_EQ_INT(qimg_sector_cipher_run(c, true, 7, 512, buf, sizeof buf), 0);
        CHECK(memcmp(buf, orig, sizeof buf) != 0);
        bool same_sectors = memcmp(buf + 1024, buf + 1536, 512) == 0;
        CHECK(same_sectors == (cases[k].m == QIMG_MODE_ECB));
        CHECK_EQ_INT(qimg_sector_cipher_run(c, false, 7, 512, buf, sizeof buf), 0);
        CHECK(memcmp(buf, orig, sizeof buf) == 0);
        CHECK_EQ_INT(qimg_sector_cipher_run(c, true, 7, 512, buf, 100), -EINVAL);
        qimg_sector_cipher_free(c);
    }
    struct qimg_sector_cipher *c = NULL;
    CHECK_EQ_INT(qimg_sector_cipher_new(&c, QIMG_CIPHER_AES_256, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64,
                                        QIMG_HASH_SHA256, key, 32), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Cipher key length 32 should be 64");
    CHECK_EQ_INT(qimg_sector_cipher_new(&c, QIMG_CIPHER_CAST5_128, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64,
                                        QIMG_HASH_SHA256, key, 32), -ENOTSUP);
    CHECK_EQ_STR(qimg_last_error(), "Unsupported cipher mode xts");
#ifdef HAVE_NETTLE
    CHECK(qimg_cipher_usable(QIMG_CIPHER_SERPENT_256, QIMG_MODE_XTS));
    CHECK(qimg_cipher_usable(QIMG_CIPHER_AES_192, QIMG_MODE_XTS));
#else
    CHECK_EQ_INT(qimg_sector_cipher_new(&c, QIMG_CIPHER_SERPENT_256, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64,
                                        QIMG_HASH_SHA256, key, 64), -ENOTSUP);
    CHECK_EQ_STR(qimg_last_error(), "Cipher serpent-256 in xts mode is not available in qimg "
                                    "(built without nettle)");
#endif
}

/* Two stripes: the key is diffuse(s0) XOR s1, diffuse hashing each
 * hash-sized piece with its big-endian index in front. */
TEST(af_merge)
{
    uint8_t split[2 * 40], key[40], want[40], in[4 + 32], h[32];
    for (size_t i = 0; i < sizeof split; i++)
        split[i] = (uint8_t)(i * 13 + 1);
    CHECK_EQ_INT(luks_af_merge(QIMG_HASH_SHA256, split, 40, 2, key), 0);
    for (size_t piece = 0; piece < 2; piece++) {
        size_t n = piece ? 8 : 32;
        qimg_put_be32(in, (uint32_t)piece);
        memcpy(in + 4, split + piece * 32, n);
        CHECK_EQ_INT(qimg_hash(QIMG_HASH_SHA256, in, 4 + n, h), 0);
        for (size_t i = 0; i < n; i++)
            want[piece * 32 + i] = h[i] ^ split[40 + piece * 32 + i];
    }
    CHECK(memcmp(key, want, sizeof want) == 0);
}

TEST(base64)
{
    uint8_t out[16];
    size_t n = 0;
    CHECK_EQ_INT(qimg_base64_decode("YWJj", out, sizeof out, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK(memcmp(out, "abc", 3) == 0);
    CHECK_EQ_INT(qimg_base64_decode("YQ==", out, sizeof out, &n), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(qimg_base64_decode("YQ=", out, sizeof out, &n), -EINVAL);
}

#endif /* HAVE_OPENSSL */

int main(void)
{
    RUN(essiv_algs);
#ifdef HAVE_OPENSSL
    RUN(pbkdf2_vectors);
    RUN(xts_vector);
    RUN(sector_round_trips);
#ifdef HAVE_NETTLE
    RUN(nettle_block_vectors);
#endif
    RUN(af_merge);
    RUN(base64);
#else
    struct qimg_sector_cipher *c = NULL;
    uint8_t key[32] = { 0 };
    CHECK_EQ_INT(qimg_sector_cipher_new(&c, QIMG_CIPHER_AES_128, QIMG_MODE_XTS, QIMG_IVGEN_PLAIN64,
                                        QIMG_HASH_SHA256, key, 32), -ENOTSUP);
#endif
    return UNIT_DONE();
}
