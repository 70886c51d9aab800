/* qimg - nettle's table (see nettle-dl.h and dl.h). */
#if defined(HAVE_NETTLE) && defined(HAVE_OPENSSL)
#define QIMG_NETTLE_DL_IMPL
#include "internal.h"
#include "nettle-dl.h"

struct qimg_nettle_api qimg_nettle_api;

#define QIMG_NETTLE_SYMBOL(name) { #name, (void **)&qimg_nettle_api.name },
static const struct qimg_dl_symbol symbols[] = {
    QIMG_NETTLE_FUNCS(QIMG_NETTLE_SYMBOL)
    QIMG_NETTLE_DATA(QIMG_NETTLE_SYMBOL)
    { NULL, NULL }
};

static const char *const sonames[] = { "libnettle.so.8", NULL };

static struct qimg_dl libnettle = {
    .library = "nettle", .needed_for = "Serpent, twofish, cast5 and aes-192-xts",
    .sonames = sonames, .symbols = symbols,
};

int qimg_nettle_load(void)
{
    return qimg_dl_load(&libnettle);
}

#endif
