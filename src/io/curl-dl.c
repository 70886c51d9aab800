/* qimg - libcurl's table (see curl-dl.h and src/lib/dl.h). */
#ifdef HAVE_LIBCURL
#define QIMG_CURL_DL_IMPL
#include "internal.h"
#include "curl-dl.h"

struct qimg_curl_api qimg_curl_api;

#define QIMG_CURL_SYMBOL(name) { #name, (void **)&qimg_curl_api.name },
static const struct qimg_dl_symbol symbols[] = {
    QIMG_CURL_FUNCS(QIMG_CURL_SYMBOL)
    { NULL, NULL }
};

static const char *const sonames[] = { "libcurl.so.4", "libcurl-gnutls.so.4", NULL };

static struct qimg_dl libcurl = {
    .library = "libcurl", .needed_for = "The curl driver",
    .sonames = sonames, .symbols = symbols,
};

int qimg_curl_load(void)
{
    return qimg_dl_load(&libcurl);
}

#endif
