/* qimg - libarchive's table (see archive-dl.h and src/lib/dl.h). */
#ifdef HAVE_LIBARCHIVE
#define QIMG_ARCHIVE_DL_IMPL
#include "internal.h"
#include "archive-dl.h"

struct qimg_archive_api qimg_archive_api;

#define QIMG_ARCHIVE_SYMBOL(name) { #name, (void **)&qimg_archive_api.name },
static const struct qimg_dl_symbol symbols[] = {
    QIMG_ARCHIVE_FUNCS(QIMG_ARCHIVE_SYMBOL)
    { NULL, NULL }
};

/* the soname of the libarchive we were built against first */
static const char *const sonames[] = { "libarchive.so.13", "libarchive.so", NULL };

static struct qimg_dl libarchive = {
    .library = "libarchive", .needed_for = "Reading archives",
    .sonames = sonames, .symbols = symbols,
};

int qimg_archive_load(void)
{
    return qimg_dl_load(&libarchive);
}

#endif
