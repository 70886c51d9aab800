/* qimg - the codec libraries' tables (see codec-dl.h and dl.h). */
#define QIMG_CODEC_DL_IMPL
#include "internal.h"
#include "codec-dl.h"

#ifdef HAVE_BZIP2
struct qimg_bz2_api qimg_bz2_api;

#define QIMG_BZ2_SYMBOL(name) { #name, (void **)&qimg_bz2_api.name },
static const struct qimg_dl_symbol bz2_symbols[] = {
    QIMG_BZ2_FUNCS(QIMG_BZ2_SYMBOL)
    { NULL, NULL }
};

static const char *const bz2_sonames[] = { "libbz2.so.1.0", "libbz2.so.1", NULL };

static struct qimg_dl libbz2 = {
    .library = "libbz2", .needed_for = "The bzip2 codec",
    .sonames = bz2_sonames, .symbols = bz2_symbols,
};

int qimg_bz2_load(void)
{
    return qimg_dl_load(&libbz2);
}
#endif

#ifdef HAVE_LZMA
struct qimg_lzma_api qimg_lzma_api;

#define QIMG_LZMA_SYMBOL(name) { #name, (void **)&qimg_lzma_api.name },
static const struct qimg_dl_symbol lzma_symbols[] = {
    QIMG_LZMA_FUNCS(QIMG_LZMA_SYMBOL)
    { NULL, NULL }
};

static const char *const lzma_sonames[] = { "liblzma.so.5", NULL };

static struct qimg_dl liblzma = {
    .library = "liblzma", .needed_for = "The xz codec",
    .sonames = lzma_sonames, .symbols = lzma_symbols,
};

int qimg_lzma_load(void)
{
    return qimg_dl_load(&liblzma);
}
#endif

#ifdef HAVE_LZ4
struct qimg_lz4_api qimg_lz4_api;

#define QIMG_LZ4_SYMBOL(name) { #name, (void **)&qimg_lz4_api.name },
static const struct qimg_dl_symbol lz4_symbols[] = {
    QIMG_LZ4_FUNCS(QIMG_LZ4_SYMBOL)
    { NULL, NULL }
};

static const char *const lz4_sonames[] = { "liblz4.so.1", NULL };

static struct qimg_dl liblz4 = {
    .library = "liblz4", .needed_for = "The lz4 codec",
    .sonames = lz4_sonames, .symbols = lz4_symbols,
};

int qimg_lz4_load(void)
{
    return qimg_dl_load(&liblz4);
}
#endif

#ifdef HAVE_LZO
struct qimg_lzo_api qimg_lzo_api;

#define QIMG_LZO_SYMBOL(name) { #name, (void **)&qimg_lzo_api.name },
static const struct qimg_dl_symbol lzo_symbols[] = {
    QIMG_LZO_FUNCS(QIMG_LZO_SYMBOL)
    { NULL, NULL }
};

static const char *const lzo_sonames[] = { "liblzo2.so.2", NULL };

static struct qimg_dl liblzo = {
    .library = "liblzo2", .needed_for = "The lzo1x codec",
    .sonames = lzo_sonames, .symbols = lzo_symbols,
};

int qimg_lzo_load(void)
{
    return qimg_dl_load(&liblzo);
}
#endif
