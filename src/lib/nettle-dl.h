/* qimg - nettle, opened the first time a cipher OpenSSL lacks is asked
 * for (serpent, twofish, cast5, aes-192-xts; nettle-dl.c; how and why:
 * dl.h).  The macros below let crypto-nettle.c keep nettle's names.
 *
 * nettle's headers map the short names to exported ones (cbc_encrypt is
 * a macro for nettle_cbc_encrypt): the table holds the exported names,
 * and the short names reach it through both macros.  The cipher
 * descriptors (nettle_aes128...) are const data, not functions: their
 * members point to the objects, and their macros dereference. */
#ifndef QIMG_NETTLE_DL_H
#define QIMG_NETTLE_DL_H

#include <nettle/cbc.h>
#include <nettle/ctr.h>
#include <nettle/nettle-meta.h>
#include <nettle/xts.h>

#include "dl.h"

#define QIMG_NETTLE_FUNCS(X) \
    X(nettle_cbc_decrypt) \
    X(nettle_cbc_encrypt) \
    X(nettle_ctr_crypt) \
    X(nettle_xts_decrypt_message) \
    X(nettle_xts_encrypt_message)

#define QIMG_NETTLE_DATA(X) \
    X(nettle_aes128) \
    X(nettle_aes192) \
    X(nettle_aes256) \
    X(nettle_cast128) \
    X(nettle_serpent128) \
    X(nettle_serpent192) \
    X(nettle_serpent256) \
    X(nettle_twofish128) \
    X(nettle_twofish192) \
    X(nettle_twofish256)

struct qimg_nettle_api {
    QIMG_NETTLE_FUNCS(QIMG_DL_MEMBER)
    QIMG_NETTLE_DATA(QIMG_DL_MEMBER)
};

extern struct qimg_nettle_api qimg_nettle_api;

/* Open nettle once (thread-safe); 0, or -ENOTSUP with the error set.
 * Call before using any of the names below. */
int qimg_nettle_load(void);

#ifndef QIMG_NETTLE_DL_IMPL
#define nettle_cbc_decrypt (qimg_nettle_api.nettle_cbc_decrypt)
#define nettle_cbc_encrypt (qimg_nettle_api.nettle_cbc_encrypt)
#define nettle_ctr_crypt (qimg_nettle_api.nettle_ctr_crypt)
#define nettle_xts_decrypt_message (qimg_nettle_api.nettle_xts_decrypt_message)
#define nettle_xts_encrypt_message (qimg_nettle_api.nettle_xts_encrypt_message)
#define nettle_aes128 (*qimg_nettle_api.nettle_aes128)
#define nettle_aes192 (*qimg_nettle_api.nettle_aes192)
#define nettle_aes256 (*qimg_nettle_api.nettle_aes256)
#define nettle_cast128 (*qimg_nettle_api.nettle_cast128)
#define nettle_serpent128 (*qimg_nettle_api.nettle_serpent128)
#define nettle_serpent192 (*qimg_nettle_api.nettle_serpent192)
#define nettle_serpent256 (*qimg_nettle_api.nettle_serpent256)
#define nettle_twofish128 (*qimg_nettle_api.nettle_twofish128)
#define nettle_twofish192 (*qimg_nettle_api.nettle_twofish192)
#define nettle_twofish256 (*qimg_nettle_api.nettle_twofish256)
#endif

#endif
