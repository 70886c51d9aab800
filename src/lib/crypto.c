/* qimg - ciphers, hashes and key derivation through OpenSSL's libcrypto
 * (see crypto.h).  Nothing cryptographic is computed here: this file picks
 * OpenSSL's algorithms by qemu's names and makes the per-sector IVs; the
 * disk ciphers OpenSSL lacks go to nettle (crypto-nettle.c). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "crypto.h"
#include "crypto-nettle.h"

#ifdef HAVE_OPENSSL
#include "openssl-dl.h"
#endif

static const char *const cipher_alg_names[QIMG_CIPHER__MAX] = {
    "aes-128", "aes-192", "aes-256", "cast5-128", "serpent-128", "serpent-192", "serpent-256",
    "twofish-128", "twofish-192", "twofish-256",
};
static const unsigned char cipher_key_lens[QIMG_CIPHER__MAX] = { 16, 24, 32, 16, 16, 24, 32, 16, 24, 32 };
static const char *const cipher_mode_names[QIMG_MODE__MAX] = { "ecb", "cbc", "xts", "ctr" };
static const char *const ivgen_names[QIMG_IVGEN__MAX] = { "plain", "plain64", "essiv" };
static const char *const hash_names[QIMG_HASH__MAX] = {
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160",
};
static const size_t hash_lens[QIMG_HASH__MAX] = { 16, 20, 28, 32, 48, 64, 20 };

static int lookup(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    return -1;
}

const char *qimg_cipher_alg_name(enum qimg_cipher_alg a) { return cipher_alg_names[a]; }
const char *qimg_cipher_mode_name(enum qimg_cipher_mode m) { return cipher_mode_names[m]; }
const char *qimg_ivgen_name(enum qimg_ivgen_alg g) { return ivgen_names[g]; }
const char *qimg_hash_name(enum qimg_hash_alg h) { return hash_names[h]; }
int qimg_cipher_alg_lookup(const char *name) { return lookup(cipher_alg_names, QIMG_CIPHER__MAX, name); }
int qimg_cipher_mode_lookup(const char *name) { return lookup(cipher_mode_names, QIMG_MODE__MAX, name); }
int qimg_ivgen_lookup(const char *name) { return lookup(ivgen_names, QIMG_IVGEN__MAX, name); }
int qimg_hash_lookup(const char *name) { return lookup(hash_names, QIMG_HASH__MAX, name); }
size_t qimg_hash_len(enum qimg_hash_alg h) { return hash_lens[h]; }

size_t qimg_cipher_key_len(enum qimg_cipher_alg a)
{
    return cipher_key_lens[a];
}

const char *qimg_cipher_family(enum qimg_cipher_alg a)
{
    static const char *const families[QIMG_CIPHER__MAX] = {
        "aes", "aes", "aes", "cast5", "serpent", "serpent", "serpent", "twofish", "twofish", "twofish",
    };
    return families[a];
}

int qimg_cipher_for_name(const char *family, size_t len)
{
    for (int a = 0; a < QIMG_CIPHER__MAX; a++)
        if (cipher_key_lens[a] == len && strncmp(cipher_alg_names[a], family, strlen(family)) == 0 &&
            cipher_alg_names[a][strlen(family)] == '-')
            return a;
    return -1;
}

int qimg_cipher_aes_for_key_len(size_t len)
{
    return len == 16 ? QIMG_CIPHER_AES_128 : len == 24 ? QIMG_CIPHER_AES_192 :
           len == 32 ? QIMG_CIPHER_AES_256 : -1;
}

int qimg_cipher_essiv_alg(enum qimg_cipher_alg a, enum qimg_hash_alg ivhash)
{
    size_t hlen = qimg_hash_len(ivhash);
    const char *family = qimg_cipher_family(a);
    int essiv = qimg_cipher_for_name(family, hlen);
    if (a == QIMG_CIPHER_CAST5_128) {
        if (essiv < 0)
            return qimg_error(-EINVAL, "Cipher %s not supported with essiv", qimg_cipher_alg_name(a));
    } else if (essiv < 0) {
        const char *label = a <= QIMG_CIPHER_AES_256 ? "AES" : a <= QIMG_CIPHER_SERPENT_256 ? "Serpent" : "Twofish";
        return qimg_error(-EINVAL, "No %s cipher with key size %zu available", label, hlen);
    }
    return essiv;
}

int qimg_cipher_mode_check(enum qimg_cipher_alg a, enum qimg_cipher_mode m)
{
    if (a == QIMG_CIPHER_CAST5_128 && m == QIMG_MODE_XTS)   /* a 64-bit block */
        return qimg_error(-ENOTSUP, "Unsupported cipher mode %s", qimg_cipher_mode_name(m));
    return 0;
}

void qimg_wipe_free(void *p, size_t len)
{
    if (p) {
        qimg_wipe(p, len);
        free(p);
    }
}

#ifndef HAVE_OPENSSL

static int unavailable(void)
{
    return qimg_error(-ENOTSUP, "encryption is not available in this build (qimg was built without OpenSSL)");
}

bool qimg_crypto_available(void) { unavailable(); return false; }
bool qimg_cipher_usable(enum qimg_cipher_alg a, enum qimg_cipher_mode m) { (void)a; (void)m; unavailable(); return false; }
void qimg_wipe(void *p, size_t len) { explicit_bzero(p, len); }
int qimg_random_bytes(void *buf, size_t len) { (void)buf; (void)len; return unavailable(); }
int qimg_base64_decode(const char *in, uint8_t *out, size_t max, size_t *out_len)
{ (void)in; (void)out; (void)max; (void)out_len; return unavailable(); }
int qimg_hash(enum qimg_hash_alg h, const void *in, size_t len, uint8_t *out)
{ (void)h; (void)in; (void)len; (void)out; return unavailable(); }
int qimg_pbkdf2(enum qimg_hash_alg h, const void *pass, size_t pass_len, const uint8_t *salt,
                size_t salt_len, uint64_t iterations, uint8_t *out, size_t out_len)
{ (void)h; (void)pass; (void)pass_len; (void)salt; (void)salt_len; (void)iterations; (void)out;
  (void)out_len; return unavailable(); }
int qimg_pbkdf2_count_iters(enum qimg_hash_alg h, size_t key_len, uint64_t ms, uint64_t *iters)
{ (void)h; (void)key_len; (void)ms; (void)iters; return unavailable(); }
int qimg_aes256_cbc_decrypt(const uint8_t key[32], const uint8_t iv[16], const uint8_t *in,
                            uint8_t *out, size_t len)
{ (void)key; (void)iv; (void)in; (void)out; (void)len; return unavailable(); }
int qimg_sector_cipher_new(struct qimg_sector_cipher **out, enum qimg_cipher_alg alg,
                           enum qimg_cipher_mode mode, enum qimg_ivgen_alg ivgen,
                           enum qimg_hash_alg ivhash, const uint8_t *key, size_t key_len)
{ (void)out; (void)alg; (void)mode; (void)ivgen; (void)ivhash; (void)key; (void)key_len;
  return unavailable(); }
void qimg_sector_cipher_free(struct qimg_sector_cipher *c) { (void)c; }
int qimg_sector_cipher_run(const struct qimg_sector_cipher *c, bool encrypt, uint64_t first_sector,
                           unsigned sector_size, uint8_t *buf, size_t len)
{ (void)c; (void)encrypt; (void)first_sector; (void)sector_size; (void)buf; (void)len;
  return unavailable(); }
int qimg_sector_cipher_run_step(const struct qimg_sector_cipher *c, bool encrypt, uint64_t first_sector,
                                uint64_t iv_step, unsigned sector_size, uint8_t *buf, size_t len)
{ (void)iv_step; return qimg_sector_cipher_run(c, encrypt, first_sector, sector_size, buf, len); }

#else /* HAVE_OPENSSL */

/* Every entry point that reaches OpenSSL first makes sure libcrypto is
 * open (openssl-dl.h); a cipher context exists only once it is. */
bool qimg_crypto_available(void) { return qimg_openssl_load() == 0; }

/* explicit_bzero, not OPENSSL_cleanse: wiping needs no libcrypto */
void qimg_wipe(void *p, size_t len) { explicit_bzero(p, len); }

static int openssl_failed(const char *what)
{
    return qimg_error(-EIO, "%s failed (OpenSSL)", what);
}

int qimg_random_bytes(void *buf, size_t len)
{
    int ret = qimg_openssl_load();
    if (ret < 0)
        return ret;
    if (len > INT32_MAX || RAND_bytes(buf, (int)len) != 1)
        return openssl_failed("Random number generation");
    return 0;
}

int qimg_base64_decode(const char *in, uint8_t *out, size_t max, size_t *out_len)
{
    int ret = qimg_openssl_load();
    if (ret < 0)
        return ret;
    size_t n = strlen(in);
    if (n % 4 || n / 4 * 3 > max || n > INT32_MAX)
        return qimg_error(-EINVAL, "Invalid base64 value");
    int got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (got < 0)
        return qimg_error(-EINVAL, "Invalid base64 value");
    size_t pad = (n >= 1 && in[n - 1] == '=') + (n >= 2 && in[n - 2] == '=');
    *out_len = (size_t)got - pad;
    return 0;
}

static const EVP_MD *md_of(enum qimg_hash_alg h)
{
    switch (h) {
    case QIMG_HASH_MD5: return EVP_md5();
    case QIMG_HASH_SHA1: return EVP_sha1();
    case QIMG_HASH_SHA224: return EVP_sha224();
    case QIMG_HASH_SHA256: return EVP_sha256();
    case QIMG_HASH_SHA384: return EVP_sha384();
    case QIMG_HASH_SHA512: return EVP_sha512();
    case QIMG_HASH_RIPEMD160: return EVP_ripemd160();
    default: return NULL;
    }
}

/* OpenSSL 3 puts RIPEMD-160 in the legacy provider on some builds: a hash
 * OpenSSL cannot give is refused as qemu refuses an unknown one. */
static int get_md(enum qimg_hash_alg h, const EVP_MD **md)
{
    int ret = qimg_openssl_load();
    if (ret < 0)
        return ret;
    *md = md_of(h);
    if (!*md)
        return qimg_error(-ENOTSUP, "Unsupported hash algorithm %s", qimg_hash_name(h));
    return 0;
}

int qimg_hash(enum qimg_hash_alg h, const void *in, size_t len, uint8_t *out)
{
    const EVP_MD *md;
    int ret = get_md(h, &md);
    if (ret < 0)
        return ret;
    if (EVP_Digest(in, len, out, NULL, md, NULL) != 1)
        return openssl_failed("Hashing");
    return 0;
}

int qimg_pbkdf2(enum qimg_hash_alg h, const void *pass, size_t pass_len, const uint8_t *salt,
                size_t salt_len, uint64_t iterations, uint8_t *out, size_t out_len)
{
    const EVP_MD *md;
    int ret = get_md(h, &md);
    if (ret < 0)
        return ret;
    if (iterations == 0 || iterations > INT32_MAX || pass_len > INT32_MAX ||
        salt_len > INT32_MAX || out_len > INT32_MAX)
        return qimg_error(-EINVAL, "PBKDF iterations %llu must be less than %u",
                          (unsigned long long)iterations, (unsigned)INT32_MAX);
    /* OpenSSL wants a non-NULL password even when it is empty */
    if (PKCS5_PBKDF2_HMAC(pass_len ? pass : "", (int)pass_len, salt, (int)salt_len,
                          (int)iterations, md, (int)out_len, out) != 1)
        return openssl_failed("PBKDF2");
    return 0;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Time PBKDF2 on a dummy password, doubling the count until a run takes
 * at least 100 ms of this thread's CPU, then scale to ms. */
int qimg_pbkdf2_count_iters(enum qimg_hash_alg h, size_t key_len, uint64_t ms, uint64_t *iters)
{
    uint8_t salt[32] = { 0 }, out[64];
    uint64_t n = 1u << 12;
    if (key_len > sizeof out)
        key_len = sizeof out;
    for (;;) {
        uint64_t t0 = thread_cpu_ns();
        int ret = qimg_pbkdf2(h, "qimg", 4, salt, sizeof salt, n, out, key_len);
        if (ret < 0)
            return ret;
        uint64_t spent = thread_cpu_ns() - t0;
        if (spent >= 100000000u || n >= (1u << 30)) {
            if (spent == 0)
                spent = 1;
            long double per_ms = (long double)n * 1000000.0L / (long double)spent;
            long double want = per_ms * (long double)ms;
            *iters = want > (long double)UINT32_MAX ? UINT32_MAX + 1ull : (uint64_t)want;
            return 0;
        }
        n *= 2;
    }
}

static const EVP_CIPHER *evp_cipher(enum qimg_cipher_alg alg, enum qimg_cipher_mode mode)
{
    /* not static: the functions come from libcrypto's table */
    const EVP_CIPHER *(*const table[3][QIMG_MODE__MAX])(void) = {
        { EVP_aes_128_ecb, EVP_aes_128_cbc, EVP_aes_128_xts, EVP_aes_128_ctr },
        { EVP_aes_192_ecb, EVP_aes_192_cbc, NULL, EVP_aes_192_ctr },
        { EVP_aes_256_ecb, EVP_aes_256_cbc, EVP_aes_256_xts, EVP_aes_256_ctr },
    };
    if (alg > QIMG_CIPHER_AES_256)
        return NULL;
    return table[alg][mode] ? table[alg][mode]() : NULL;
}

static bool nettle_has(enum qimg_cipher_alg a, enum qimg_cipher_mode m)
{
#ifdef HAVE_NETTLE
    return qimg_nettle_has(a, m);
#else
    (void)a; (void)m;
    return false;
#endif
}

/* Built with nettle, but it cannot be opened: the loader's error (set
 * again here) says why, rather than "built without nettle". */
static bool nettle_unopenable(void)
{
#ifdef HAVE_NETTLE
    return qimg_nettle_load() < 0;
#else
    return false;
#endif
}

bool qimg_cipher_usable(enum qimg_cipher_alg a, enum qimg_cipher_mode m)
{
    if (qimg_openssl_load() < 0)
        return false;
    if (evp_cipher(a, m) || nettle_has(a, m))
        return true;
    if (qimg_cipher_mode_check(a, m) == 0 && !nettle_unopenable())
        qimg_error(-ENOTSUP, "Cipher %s in %s mode is not available in qimg (built without nettle)",
                   qimg_cipher_alg_name(a), qimg_cipher_mode_name(m));
    return false;
}

/* One pass of a cipher over len bytes in place with an IV (or none). */
static int cipher_once(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, const uint8_t *key,
                       const uint8_t *iv, bool encrypt, const uint8_t *in, uint8_t *out, size_t len)
{
    int outl = 0;
    if (EVP_CipherInit_ex(ctx, cipher, NULL, key, iv, encrypt) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx, 0) != 1 ||
        EVP_CipherUpdate(ctx, out, &outl, in, (int)len) != 1)
        return openssl_failed(encrypt ? "Encryption" : "Decryption");
    return 0;
}

int qimg_aes256_cbc_decrypt(const uint8_t key[32], const uint8_t iv[16], const uint8_t *in,
                            uint8_t *out, size_t len)
{
    if (len % 16)
        return qimg_error(-EINVAL, "Length %zu must be a multiple of block size %d", len, 16);
    if (len == 0)
        return 0;
    int ret = qimg_openssl_load();
    if (ret < 0)
        return ret;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return openssl_failed("Decryption");
    ret = cipher_once(ctx, EVP_aes_256_cbc(), key, iv, false, in, out, len);
    EVP_CIPHER_CTX_free(ctx);
    return ret;
}

struct qimg_sector_cipher {
    const EVP_CIPHER *cipher;           /* OpenSSL's, or NULL: nettle */
    enum qimg_cipher_mode mode;
    enum qimg_ivgen_alg ivgen;
    const EVP_CIPHER *essiv_cipher;     /* ECB over the hashed key */
    uint8_t key[64];
    uint8_t essiv_key[64];
    size_t iv_len;
    struct qimg_nettle_cipher *nettle;  /* when OpenSSL lacks the cipher */
};

/* ESSIV's cipher and key (the hashed volume key); -1 without ESSIV. */
static int essiv_setup(enum qimg_cipher_alg alg, enum qimg_cipher_mode mode, enum qimg_ivgen_alg ivgen,
                       enum qimg_hash_alg ivhash, const uint8_t *key, size_t key_len,
                       uint8_t *essiv_key)
{
    if (mode == QIMG_MODE_ECB || ivgen != QIMG_IVGEN_ESSIV)
        return -1;
    int essiv_alg = qimg_cipher_essiv_alg(alg, ivhash);
    if (essiv_alg < 0)
        return essiv_alg;
    int ret = qimg_hash(ivhash, key, key_len, essiv_key);
    return ret < 0 ? ret : essiv_alg;
}

int qimg_sector_cipher_new(struct qimg_sector_cipher **out, enum qimg_cipher_alg alg,
                           enum qimg_cipher_mode mode, enum qimg_ivgen_alg ivgen,
                           enum qimg_hash_alg ivhash, const uint8_t *key, size_t key_len)
{
    size_t want = qimg_cipher_key_len(alg) * (mode == QIMG_MODE_XTS ? 2 : 1);
    if (!qimg_cipher_usable(alg, mode))
        return -ENOTSUP;
    if (key_len != want)
        return qimg_error(-EINVAL, "Cipher key length %zu should be %zu", key_len, want);
    struct qimg_sector_cipher *c = qimg_xcalloc(1, sizeof *c);
    c->cipher = evp_cipher(alg, mode);
    c->mode = mode;
    c->ivgen = ivgen;
    memcpy(c->key, key, key_len);
    int ret = 0, essiv_alg = essiv_setup(alg, mode, ivgen, ivhash, key, key_len, c->essiv_key);
    if (essiv_alg < -1)
        ret = essiv_alg;
    else if (c->cipher) {
        c->iv_len = (size_t)EVP_CIPHER_get_iv_length(c->cipher);
        if (essiv_alg >= 0)   /* AES's family: AES too */
            c->essiv_cipher = evp_cipher((enum qimg_cipher_alg)essiv_alg, QIMG_MODE_ECB);
    } else {
#ifdef HAVE_NETTLE
        ret = qimg_nettle_cipher_new(&c->nettle, alg, mode, ivgen, essiv_alg, c->essiv_key, key);
#endif
    }
    if (ret < 0) {
        qimg_sector_cipher_free(c);
        return ret;
    }
    *out = c;
    return 0;
}

void qimg_sector_cipher_free(struct qimg_sector_cipher *c)
{
#ifdef HAVE_NETTLE
    if (c)
        qimg_nettle_cipher_free(c->nettle);
#endif
    qimg_wipe_free(c, c ? sizeof *c : 0);
}

void qimg_crypto_plain_iv(enum qimg_ivgen_alg g, uint64_t sector, uint8_t *iv, size_t iv_len)
{
    memset(iv, 0, iv_len);
    if (g == QIMG_IVGEN_PLAIN)
        qimg_put_le32(iv, (uint32_t)sector);
    else
        qimg_put_le64(iv, sector);
}

/* The IV of one sector: its number, little-endian (32 bits for "plain"),
 * zero-padded; ESSIV encrypts that with the hashed key. */
static int make_iv(const struct qimg_sector_cipher *c, EVP_CIPHER_CTX *essiv_ctx, uint64_t sector,
                   uint8_t *iv)
{
    qimg_crypto_plain_iv(c->ivgen, sector, iv, c->iv_len);
    if (c->ivgen != QIMG_IVGEN_ESSIV)
        return 0;
    int outl = 0;
    if (EVP_CipherUpdate(essiv_ctx, iv, &outl, iv, (int)c->iv_len) != 1)
        return openssl_failed("Encryption");
    return 0;
}

int qimg_sector_cipher_run(const struct qimg_sector_cipher *c, bool encrypt, uint64_t first_sector,
                           unsigned sector_size, uint8_t *buf, size_t len)
{
    return qimg_sector_cipher_run_step(c, encrypt, first_sector, 1, sector_size, buf, len);
}

int qimg_sector_cipher_run_step(const struct qimg_sector_cipher *c, bool encrypt, uint64_t first_sector,
                                uint64_t iv_step, unsigned sector_size, uint8_t *buf, size_t len)
{
    if (len % sector_size)
        return qimg_error(-EINVAL, "Length %zu must be a multiple of block size %u", len, sector_size);
#ifdef HAVE_NETTLE
    if (c->nettle) {
        qimg_nettle_cipher_run(c->nettle, encrypt, first_sector, iv_step, sector_size, buf, len);
        return 0;
    }
#endif
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    EVP_CIPHER_CTX *essiv = c->essiv_cipher ? EVP_CIPHER_CTX_new() : NULL;
    int ret = 0;
    if (!ctx || (c->essiv_cipher && !essiv))
        ret = openssl_failed(encrypt ? "Encryption" : "Decryption");
    /* the key schedules once per request; each sector only sets its IV */
    if (ret == 0 && (EVP_CipherInit_ex(ctx, c->cipher, NULL, c->key, NULL, encrypt) != 1 ||
                     EVP_CIPHER_CTX_set_padding(ctx, 0) != 1))
        ret = openssl_failed(encrypt ? "Encryption" : "Decryption");
    if (ret == 0 && essiv && (EVP_CipherInit_ex(essiv, c->essiv_cipher, NULL, c->essiv_key, NULL, 1) != 1 ||
                              EVP_CIPHER_CTX_set_padding(essiv, 0) != 1))
        ret = openssl_failed("Encryption");
    uint8_t iv[16];
    for (size_t done = 0; ret == 0 && done < len; done += sector_size) {
        int outl = 0;
        if (c->mode != QIMG_MODE_ECB) {
            ret = make_iv(c, essiv, first_sector + done / sector_size * iv_step, iv);
            if (ret == 0 && EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1) != 1)
                ret = openssl_failed(encrypt ? "Encryption" : "Decryption");
        }
        if (ret == 0 && EVP_CipherUpdate(ctx, buf + done, &outl, buf + done, (int)sector_size) != 1)
            ret = openssl_failed(encrypt ? "Encryption" : "Decryption");
    }
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_CTX_free(essiv);
    return ret;
}

#endif /* HAVE_OPENSSL */
