/* qimg - nettle's table (see nettle-dl.h and dl.h). */
#if defined(HAVE_NETTLE) && defined(HAVE_OPENSSL)
#define QIMG_NETTLE_DL_IMPL
#include "internal.h"
#include "nettle-dl.h"

#define QIMG_NETTLE_ALL(X) QIMG_NETTLE_FUNCS(X) QIMG_NETTLE_DATA(X)
#define QIMG_DL_API qimg_nettle_api
QIMG_DL_DEFINE(qimg_nettle_api, QIMG_NETTLE_ALL, qimg_nettle_load,
               "nettle", "Serpent, twofish, cast5 and aes-192-xts",
               "libnettle.so.8")
#undef QIMG_DL_API

#endif
