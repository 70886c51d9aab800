/* qimg - the codec libraries' tables (see codec-dl.h and dl.h). */
#define QIMG_CODEC_DL_IMPL
#include "internal.h"
#include "codec-dl.h"

#ifdef HAVE_ZLIB
struct qimg_zlib_api qimg_zlib_api;

#define QIMG_ZLIB_SYMBOL(name) { #name, (void **)&qimg_zlib_api.name },
static const struct qimg_dl_symbol zlib_symbols[] = {
    QIMG_ZLIB_FUNCS(QIMG_ZLIB_SYMBOL)
    { NULL, NULL }
};

static const char *const zlib_sonames[] = { "libz.so.1", NULL };

static struct qimg_dl zlib_lib = {
    .library = "zlib", .needed_for = "Deflate compression",
    .sonames = zlib_sonames, .symbols = zlib_symbols,
};

int qimg_zlib_load(void)
{
    return qimg_dl_load(&zlib_lib);
}
#endif

#ifdef HAVE_LIBDEFLATE
struct qimg_libdeflate_api qimg_libdeflate_api;

#define QIMG_LIBDEFLATE_SYMBOL(name) { #name, (void **)&qimg_libdeflate_api.name },
static const struct qimg_dl_symbol libdeflate_symbols[] = {
    QIMG_LIBDEFLATE_FUNCS(QIMG_LIBDEFLATE_SYMBOL)
    { NULL, NULL }
};

static const char *const libdeflate_sonames[] = { "libdeflate.so.0", NULL };

static struct qimg_dl libdeflate_lib = {
    .library = "libdeflate", .needed_for = "Deflate compression",
    .sonames = libdeflate_sonames, .symbols = libdeflate_symbols,
};

int qimg_libdeflate_load(void)
{
    return qimg_dl_load(&libdeflate_lib);
}
#endif

#ifdef HAVE_LIBZSTD
struct qimg_zstd_api qimg_zstd_api;

#define QIMG_ZSTD_SYMBOL(name) { #name, (void **)&qimg_zstd_api.name },
static const struct qimg_dl_symbol zstd_symbols[] = {
    QIMG_ZSTD_FUNCS(QIMG_ZSTD_SYMBOL)
    { NULL, NULL }
};

static const char *const zstd_sonames[] = { "libzstd.so.1", NULL };

static struct qimg_dl zstd_lib = {
    .library = "libzstd", .needed_for = "The zstd codec",
    .sonames = zstd_sonames, .symbols = zstd_symbols,
};

int qimg_zstd_load(void)
{
    return qimg_dl_load(&zstd_lib);
}
#endif

#ifdef HAVE_BZIP2
struct qimg_bz2_api qimg_bz2_api;

#define QIMG_BZ2_SYMBOL(name) { #name, (void **)&qimg_bz2_api.name },
static const struct qimg_dl_symbol bz2_symbols[] = {
    QIMG_BZ2_FUNCS(QIMG_BZ2_SYMBOL)
    { NULL, NULL }
};

static const char *const bz2_sonames[] = { "libbz2.so.1.0", "libbz2.so.1", NULL };

static struct qimg_dl bz2_lib = {
    .library = "libbz2", .needed_for = "The bzip2 codec",
    .sonames = bz2_sonames, .symbols = bz2_symbols,
};

int qimg_bz2_load(void)
{
    return qimg_dl_load(&bz2_lib);
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

static struct qimg_dl lzma_lib = {
    .library = "liblzma", .needed_for = "The xz codec",
    .sonames = lzma_sonames, .symbols = lzma_symbols,
};

int qimg_lzma_load(void)
{
    return qimg_dl_load(&lzma_lib);
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

static struct qimg_dl lz4_lib = {
    .library = "liblz4", .needed_for = "The lz4 codec",
    .sonames = lz4_sonames, .symbols = lz4_symbols,
};

int qimg_lz4_load(void)
{
    return qimg_dl_load(&lz4_lib);
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

static struct qimg_dl lzo_lib = {
    .library = "liblzo2", .needed_for = "The lzo1x codec",
    .sonames = lzo_sonames, .symbols = lzo_symbols,
};

int qimg_lzo_load(void)
{
    return qimg_dl_load(&lzo_lib);
}
#endif
