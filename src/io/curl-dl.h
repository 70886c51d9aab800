/* qimg - libcurl, opened the first time an http(s) or ftp(s) image is
 * (curl-dl.c; how and why: src/lib/dl.h).  The macros below let curl.c
 * keep libcurl's own names.
 *
 * Calls through the table lose libcurl's compile-time check of the types
 * given to curl_easy_setopt and curl_easy_getinfo (typecheck-gcc.h), so
 * the Makefile compiles curl.c a second time with QIMG_CURL_TYPECHECK:
 * libcurl's declarations and checks as they are, the object thrown away. */
#ifndef QIMG_CURL_DL_H
#define QIMG_CURL_DL_H

#ifndef QIMG_CURL_TYPECHECK
#define CURL_DISABLE_TYPECHECK
#endif
#include <curl/curl.h>

#include "dl.h"

#define QIMG_CURL_FUNCS(X) \
    X(curl_global_init) \
    X(curl_easy_init) \
    X(curl_easy_cleanup) \
    X(curl_easy_setopt) \
    X(curl_easy_getinfo) \
    X(curl_easy_perform) \
    X(curl_easy_strerror)

#ifndef QIMG_CURL_TYPECHECK
#undef curl_easy_setopt
#undef curl_easy_getinfo

struct qimg_curl_api {
    QIMG_CURL_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_curl_api qimg_curl_api;

/* Open libcurl once (thread-safe); 0, or -ENOTSUP with the error set.
 * Call before any of the functions below. */
int qimg_curl_load(void);

#ifndef QIMG_CURL_DL_IMPL
#define curl_global_init (qimg_curl_api.curl_global_init)
#define curl_easy_init (qimg_curl_api.curl_easy_init)
#define curl_easy_cleanup (qimg_curl_api.curl_easy_cleanup)
#define curl_easy_setopt (qimg_curl_api.curl_easy_setopt)
#define curl_easy_getinfo (qimg_curl_api.curl_easy_getinfo)
#define curl_easy_perform (qimg_curl_api.curl_easy_perform)
#define curl_easy_strerror (qimg_curl_api.curl_easy_strerror)
#endif

#else  /* the type-checking compile: direct calls, never linked */
static inline int qimg_curl_load(void) { return 0; }
#endif

#endif
