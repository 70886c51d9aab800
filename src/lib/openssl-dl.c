/* qimg - libcrypto's table (see openssl-dl.h and dl.h). */
#ifdef HAVE_OPENSSL
#define QIMG_OPENSSL_DL_IMPL
#include "internal.h"
#include "openssl-dl.h"

#define QIMG_DL_API qimg_openssl_api
QIMG_DL_DEFINE(qimg_openssl_api, QIMG_OPENSSL_FUNCS, qimg_openssl_load,
               "OpenSSL's libcrypto", "Encryption",
               "libcrypto.so.3")
#undef QIMG_DL_API

#endif
