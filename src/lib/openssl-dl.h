/* qimg - OpenSSL's libcrypto, opened the first time a cipher, hash or
 * random number is needed (openssl-dl.c; how and why: dl.h): most runs
 * touch no encrypted image, and mapping and initialising libcrypto cost
 * every run about 2 ms.  The macros below let crypto.c keep OpenSSL's own
 * names. */
#ifndef QIMG_OPENSSL_DL_H
#define QIMG_OPENSSL_DL_H

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "dl.h"

#define QIMG_OPENSSL_FUNCS(X) \
    X(EVP_CIPHER_CTX_free) \
    X(EVP_CIPHER_CTX_new) \
    X(EVP_CIPHER_CTX_set_padding) \
    X(EVP_CIPHER_get_iv_length) \
    X(EVP_CipherInit_ex) \
    X(EVP_CipherUpdate) \
    X(EVP_DecodeBlock) \
    X(EVP_Digest) \
    X(EVP_aes_128_cbc) \
    X(EVP_aes_128_ctr) \
    X(EVP_aes_128_ecb) \
    X(EVP_aes_128_xts) \
    X(EVP_aes_192_cbc) \
    X(EVP_aes_192_ctr) \
    X(EVP_aes_192_ecb) \
    X(EVP_aes_256_cbc) \
    X(EVP_aes_256_ctr) \
    X(EVP_aes_256_ecb) \
    X(EVP_aes_256_xts) \
    X(EVP_md5) \
    X(EVP_ripemd160) \
    X(EVP_sha1) \
    X(EVP_sha224) \
    X(EVP_sha256) \
    X(EVP_sha384) \
    X(EVP_sha512) \
    X(PKCS5_PBKDF2_HMAC) \
    X(RAND_bytes)

struct qimg_openssl_api {
    QIMG_OPENSSL_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_openssl_api qimg_openssl_api;

/* Open libcrypto once (thread-safe); 0, or -ENOTSUP with the error set.
 * Call before any of the functions below. */
int qimg_openssl_load(void);

#ifndef QIMG_OPENSSL_DL_IMPL
#define EVP_CIPHER_CTX_free (qimg_openssl_api.EVP_CIPHER_CTX_free)
#define EVP_CIPHER_CTX_new (qimg_openssl_api.EVP_CIPHER_CTX_new)
#define EVP_CIPHER_CTX_set_padding (qimg_openssl_api.EVP_CIPHER_CTX_set_padding)
#define EVP_CIPHER_get_iv_length (qimg_openssl_api.EVP_CIPHER_get_iv_length)
#define EVP_CipherInit_ex (qimg_openssl_api.EVP_CipherInit_ex)
#define EVP_CipherUpdate (qimg_openssl_api.EVP_CipherUpdate)
#define EVP_DecodeBlock (qimg_openssl_api.EVP_DecodeBlock)
#define EVP_Digest (qimg_openssl_api.EVP_Digest)
#define EVP_aes_128_cbc (qimg_openssl_api.EVP_aes_128_cbc)
#define EVP_aes_128_ctr (qimg_openssl_api.EVP_aes_128_ctr)
#define EVP_aes_128_ecb (qimg_openssl_api.EVP_aes_128_ecb)
#define EVP_aes_128_xts (qimg_openssl_api.EVP_aes_128_xts)
#define EVP_aes_192_cbc (qimg_openssl_api.EVP_aes_192_cbc)
#define EVP_aes_192_ctr (qimg_openssl_api.EVP_aes_192_ctr)
#define EVP_aes_192_ecb (qimg_openssl_api.EVP_aes_192_ecb)
#define EVP_aes_256_cbc (qimg_openssl_api.EVP_aes_256_cbc)
#define EVP_aes_256_ctr (qimg_openssl_api.EVP_aes_256_ctr)
#define EVP_aes_256_ecb (qimg_openssl_api.EVP_aes_256_ecb)
#define EVP_aes_256_xts (qimg_openssl_api.EVP_aes_256_xts)
#define EVP_md5 (qimg_openssl_api.EVP_md5)
#define EVP_ripemd160 (qimg_openssl_api.EVP_ripemd160)
#define EVP_sha1 (qimg_openssl_api.EVP_sha1)
#define EVP_sha224 (qimg_openssl_api.EVP_sha224)
#define EVP_sha256 (qimg_openssl_api.EVP_sha256)
#define EVP_sha384 (qimg_openssl_api.EVP_sha384)
#define EVP_sha512 (qimg_openssl_api.EVP_sha512)
#define PKCS5_PBKDF2_HMAC (qimg_openssl_api.PKCS5_PBKDF2_HMAC)
#define RAND_bytes (qimg_openssl_api.RAND_bytes)
#endif

#endif
