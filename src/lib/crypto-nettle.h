/* qimg - internal to crypto.c: the disk ciphers OpenSSL's default provider
 * lacks (serpent, twofish, cast5, aes-192 in XTS mode), through nettle
 * (crypto-nettle.c).  crypto.c sends an algorithm and mode here only when
 * OpenSSL has no EVP cipher for them, so AES keeps OpenSSL's AES-NI code.
 *
 * Thread contract: as crypto.h's.  The key schedules are made once in
 * qimg_nettle_cipher_new and only read afterwards (nettle's cipher
 * functions take them const); IVs live on the caller's stack. */
#ifndef QIMG_LIB_CRYPTO_NETTLE_H
#define QIMG_LIB_CRYPTO_NETTLE_H

#include "crypto.h"

struct qimg_nettle_cipher;

/* Open nettle (nettle-dl.c; it is not linked): 0, or -ENOTSUP with the
 * error set.  qimg_nettle_has and qimg_nettle_cipher_new call it. */
int qimg_nettle_load(void);

/* Does nettle have this algorithm in this mode?  (cast5's 64-bit block
 * rules out XTS.)  False too when nettle cannot be opened. */
bool qimg_nettle_has(enum qimg_cipher_alg a, enum qimg_cipher_mode m);

/* key is qimg_cipher_key_len(alg) bytes, twice that for XTS (data key
 * then tweak key).  essiv_alg < 0: no ESSIV; otherwise essiv_key is its
 * key (the hashed volume key, qimg_cipher_key_len(essiv_alg) bytes). */
int qimg_nettle_cipher_new(struct qimg_nettle_cipher **out, enum qimg_cipher_alg alg,
                           enum qimg_cipher_mode mode, enum qimg_ivgen_alg ivgen, int essiv_alg,
                           const uint8_t *essiv_key, const uint8_t *key);
void qimg_nettle_cipher_free(struct qimg_nettle_cipher *c);

/* crypto.h's qimg_sector_cipher_run_step (len a multiple of sector_size,
 * checked by the caller). */
void qimg_nettle_cipher_run(const struct qimg_nettle_cipher *c, bool encrypt, uint64_t first_sector,
                            uint64_t iv_step, unsigned sector_size, uint8_t *buf, size_t len);

/* The IV of a sector before ESSIV (crypto.c, shared by both backends):
 * the number little-endian (32 bits for "plain"), zero-padded to iv_len. */
void qimg_crypto_plain_iv(enum qimg_ivgen_alg g, uint64_t sector, uint8_t *iv, size_t iv_len);

#endif
