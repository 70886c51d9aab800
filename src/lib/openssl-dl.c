/* qimg - libcrypto's table (see openssl-dl.h and dl.h). */
#ifdef HAVE_OPENSSL
#define QIMG_OPENSSL_DL_IMPL
#include "internal.h"
#include "openssl-dl.h"

struct qimg_openssl_api qimg_openssl_api;

#define QIMG_OPENSSL_SYMBOL(name) { #name, (void **)&qimg_openssl_api.name },
static const struct qimg_dl_symbol symbols[] = {
    QIMG_OPENSSL_FUNCS(QIMG_OPENSSL_SYMBOL)
    { NULL, NULL }
};

static const char *const sonames[] = { "libcrypto.so.3", NULL };

static struct qimg_dl libcrypto = {
    .library = "OpenSSL's libcrypto", .needed_for = "Encryption",
    .sonames = sonames, .symbols = symbols,
};

int qimg_openssl_load(void)
{
    return qimg_dl_load(&libcrypto);
}

#endif
