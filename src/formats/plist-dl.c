/* qimg - libplist's table (see plist-dl.h and src/lib/dl.h). */
#ifdef HAVE_PLIST
#define QIMG_PLIST_DL_IMPL
#include "internal.h"
#include "plist-dl.h"

struct qimg_plist_api qimg_plist_api;

#define QIMG_PLIST_SYMBOL(name) { #name, (void **)&qimg_plist_api.name },
static const struct qimg_dl_symbol symbols[] = {
    QIMG_PLIST_FUNCS(QIMG_PLIST_SYMBOL)
    { NULL, NULL }
};

/* libplist 2.0 to 2.2 is .so.3, 2.3 on .so.4: the functions used here are
 * the same in both */
static const char *const sonames[] = { "libplist-2.0.so.3", "libplist-2.0.so.4", NULL };

static struct qimg_dl libplist = {
    .library = "libplist", .needed_for = "A dmg whose block tables are in an XML property list",
    .sonames = sonames, .symbols = symbols,
};

int qimg_plist_load(void)
{
    return qimg_dl_load(&libplist);
}

#endif
