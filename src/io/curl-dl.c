/* qimg - libcurl's table (see curl-dl.h and src/lib/dl.h). */
#ifdef HAVE_LIBCURL
#define QIMG_CURL_DL_IMPL
#include "internal.h"
#include "curl-dl.h"

#define QIMG_DL_API qimg_curl_api
QIMG_DL_DEFINE(qimg_curl_api, QIMG_CURL_FUNCS, qimg_curl_load,
               "libcurl", "The curl driver",
               "libcurl.so.4", "libcurl-gnutls.so.4")
#undef QIMG_DL_API

#endif
