/* qimg - internal: the cryptography qimg needs (LUKS, qcow/qcow2 AES,
 * encrypted secrets), through OpenSSL's libcrypto (crypto.c) and, for the
 * disk ciphers OpenSSL's default provider lacks (serpent, twofish, cast5,
 * aes-192 in XTS mode), nettle (crypto-nettle.c): no cipher, hash or key
 * derivation is written here.  A build without OpenSSL (no HAVE_OPENSSL)
 * keeps these calls; they fail with "encryption is not available in this
 * build".  A build without nettle (no HAVE_NETTLE) refuses those ciphers.
 *
 * Thread contract: a struct qimg_sector_cipher is immutable once made;
 * every call that uses it makes its own OpenSSL context (nettle's key
 * schedules are only read), so any number of threads may encrypt and
 * decrypt through one at once. */
#ifndef QIMG_LIB_CRYPTO_H
#define QIMG_LIB_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* qemu's LUKS ciphers.  Only AES is in OpenSSL's default provider: the
 * others (and aes-192 in XTS mode) run through nettle; a build without it
 * knows them by name (info shows them) and refuses them for I/O. */
enum qimg_cipher_alg {
    QIMG_CIPHER_AES_128, QIMG_CIPHER_AES_192, QIMG_CIPHER_AES_256,
    QIMG_CIPHER_CAST5_128,
    QIMG_CIPHER_SERPENT_128, QIMG_CIPHER_SERPENT_192, QIMG_CIPHER_SERPENT_256,
    QIMG_CIPHER_TWOFISH_128, QIMG_CIPHER_TWOFISH_192, QIMG_CIPHER_TWOFISH_256,
    QIMG_CIPHER__MAX
};
enum qimg_cipher_mode {
    QIMG_MODE_ECB, QIMG_MODE_CBC, QIMG_MODE_XTS, QIMG_MODE_CTR,
    QIMG_MODE__MAX
};
enum qimg_ivgen_alg {
    QIMG_IVGEN_PLAIN, QIMG_IVGEN_PLAIN64, QIMG_IVGEN_ESSIV,
    QIMG_IVGEN__MAX
};
enum qimg_hash_alg {
    QIMG_HASH_MD5, QIMG_HASH_SHA1, QIMG_HASH_SHA224, QIMG_HASH_SHA256,
    QIMG_HASH_SHA384, QIMG_HASH_SHA512, QIMG_HASH_RIPEMD160,
    QIMG_HASH__MAX
};

/* qemu's names ("aes-256", "xts", "plain64", "sha256"); lookups return the
 * value or -1. */
const char *qimg_cipher_alg_name(enum qimg_cipher_alg a);
const char *qimg_cipher_mode_name(enum qimg_cipher_mode m);
const char *qimg_ivgen_name(enum qimg_ivgen_alg g);
const char *qimg_hash_name(enum qimg_hash_alg h);
int qimg_cipher_alg_lookup(const char *name);
int qimg_cipher_mode_lookup(const char *name);
int qimg_ivgen_lookup(const char *name);
int qimg_hash_lookup(const char *name);

/* Key length of an algorithm in bytes (16, 24, 32); an XTS key is twice it. */
size_t qimg_cipher_key_len(enum qimg_cipher_alg a);
size_t qimg_hash_len(enum qimg_hash_alg h);
/* The AES algorithm with that key length, or -1. */
int qimg_cipher_aes_for_key_len(size_t len);
/* The algorithm of a LUKS cipher name ("aes", "serpent", "twofish",
 * "cast5") with that key length, or -1. */
int qimg_cipher_for_name(const char *family, size_t len);
/* "aes", "serpent"... */
const char *qimg_cipher_family(enum qimg_cipher_alg a);
/* Does qemu allow the algorithm in this mode at all?  -ENOTSUP with its
 * message for cast5 in XTS mode (a 64-bit block), else 0. */
int qimg_cipher_mode_check(enum qimg_cipher_alg a, enum qimg_cipher_mode m);
/* Can this build run it in this mode (OpenSSL, else nettle)?  false with
 * the error set (qemu's for cast5 in XTS mode: its block is 64 bits). */
bool qimg_cipher_usable(enum qimg_cipher_alg a, enum qimg_cipher_mode m);
/* The cipher ESSIV encrypts the IVs of a with: a's family with the hash's
 * length as its key (AES, serpent, twofish); cast5 only with a 16-byte
 * hash.  Returns it, or a negative errno with qemu's message. */
int qimg_cipher_essiv_alg(enum qimg_cipher_alg a, enum qimg_hash_alg ivhash);

/* Is this build able to encrypt at all?  false with the error set. */
bool qimg_crypto_available(void);

/* Wipe key material (never optimised away). */
void qimg_wipe(void *p, size_t len);
/* Wipe len bytes and free. */
void qimg_wipe_free(void *p, size_t len);

int qimg_random_bytes(void *buf, size_t len);
/* Standard base64 (padding required) into out (at most max bytes). */
int qimg_base64_decode(const char *in, uint8_t *out, size_t max, size_t *out_len);
int qimg_hash(enum qimg_hash_alg h, const void *in, size_t len, uint8_t *out);
/* PBKDF2-HMAC (PKCS #5) with the hash h. */
int qimg_pbkdf2(enum qimg_hash_alg h, const void *pass, size_t pass_len, const uint8_t *salt,
                size_t salt_len, uint64_t iterations, uint8_t *out, size_t out_len);
/* How many PBKDF2 iterations with hash h take about ms milliseconds of
 * CPU time on this machine (for new LUKS keyslots, as qemu and cryptsetup
 * calibrate). */
int qimg_pbkdf2_count_iters(enum qimg_hash_alg h, size_t key_len, uint64_t ms, uint64_t *iters);

/* AES-256-CBC of a whole number of blocks, no padding (encrypted secrets). */
int qimg_aes256_cbc_decrypt(const uint8_t key[32], const uint8_t iv[16], const uint8_t *in,
                            uint8_t *out, size_t len);

/* A disk cipher: algorithm, mode, IV generator and key; sectors are
 * encrypted one by one with the IV made from the sector number. */
struct qimg_sector_cipher;
/* ivhash is used with ESSIV only.  key_len must be the mode's (twice the
 * algorithm's for XTS). */
int qimg_sector_cipher_new(struct qimg_sector_cipher **out, enum qimg_cipher_alg alg,
                           enum qimg_cipher_mode mode, enum qimg_ivgen_alg ivgen,
                           enum qimg_hash_alg ivhash, const uint8_t *key, size_t key_len);
void qimg_sector_cipher_free(struct qimg_sector_cipher *c);
/* En- or decrypt len bytes in place (a multiple of sector_size), the first
 * sector numbered first_sector. */
int qimg_sector_cipher_run(const struct qimg_sector_cipher *c, bool encrypt, uint64_t first_sector,
                           unsigned sector_size, uint8_t *buf, size_t len);
/* The same with the IV advancing by iv_step per sector (dm-crypt's
 * larger sectors keep counting IVs in 512-byte units). */
int qimg_sector_cipher_run_step(const struct qimg_sector_cipher *c, bool encrypt, uint64_t first_sector,
                                uint64_t iv_step, unsigned sector_size, uint8_t *buf, size_t len);

#endif
