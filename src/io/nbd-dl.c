/* qimg - libnbd's table (see nbd-dl.h and src/lib/dl.h). */
#ifdef HAVE_LIBNBD
#define QIMG_NBD_DL_IMPL
#include "internal.h"
#include "nbd-dl.h"

struct qimg_nbd_api qimg_nbd_api;

#define QIMG_NBD_SYMBOL(name) { #name, (void **)&qimg_nbd_api.name },
static const struct qimg_dl_symbol symbols[] = {
    QIMG_NBD_FUNCS(QIMG_NBD_SYMBOL)
    { NULL, NULL }
};

static const char *const sonames[] = { "libnbd.so.0", NULL };

static struct qimg_dl libnbd = {
    .library = "libnbd", .needed_for = "The nbd driver",
    .sonames = sonames, .symbols = symbols,
};

int qimg_nbd_load(void)
{
    return qimg_dl_load(&libnbd);
}

#endif
