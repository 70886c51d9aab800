/* qimg - the codec libraries' tables (see codec-dl.h and dl.h). */
#define QIMG_CODEC_DL_IMPL
#include "internal.h"
#include "codec-dl.h"

#ifdef HAVE_ZLIB
#define QIMG_DL_API qimg_zlib_api
QIMG_DL_DEFINE(qimg_zlib_api, QIMG_ZLIB_FUNCS, qimg_zlib_load,
               "zlib", "Deflate compression",
               "libz.so.1")
#undef QIMG_DL_API
#endif

#ifdef HAVE_LIBDEFLATE
#define QIMG_DL_API qimg_libdeflate_api
QIMG_DL_DEFINE(qimg_libdeflate_api, QIMG_LIBDEFLATE_FUNCS, qimg_libdeflate_load,
               "libdeflate", "Deflate compression",
               "libdeflate.so.0")
#undef QIMG_DL_API
#endif

#ifdef HAVE_LIBZSTD
#define QIMG_DL_API qimg_zstd_api
QIMG_DL_DEFINE(qimg_zstd_api, QIMG_ZSTD_FUNCS, qimg_zstd_load,
               "libzstd", "The zstd codec",
               "libzstd.so.1")
#undef QIMG_DL_API
#endif

#ifdef HAVE_BZIP2
#define QIMG_DL_API qimg_bz2_api
QIMG_DL_DEFINE(qimg_bz2_api, QIMG_BZ2_FUNCS, qimg_bz2_load,
               "libbz2", "The bzip2 codec",
               "libbz2.so.1.0", "libbz2.so.1")
#undef QIMG_DL_API
#endif

#ifdef HAVE_LZMA
#define QIMG_DL_API qimg_lzma_api
QIMG_DL_DEFINE(qimg_lzma_api, QIMG_LZMA_FUNCS, qimg_lzma_load,
               "liblzma", "The xz codec",
               "liblzma.so.5")
#undef QIMG_DL_API
#endif

#ifdef HAVE_LZ4
#define QIMG_DL_API qimg_lz4_api
QIMG_DL_DEFINE(qimg_lz4_api, QIMG_LZ4_FUNCS, qimg_lz4_load,
               "liblz4", "The lz4 codec",
               "liblz4.so.1")
#undef QIMG_DL_API
#endif

#ifdef HAVE_LZO
#define QIMG_DL_API qimg_lzo_api
QIMG_DL_DEFINE(qimg_lzo_api, QIMG_LZO_FUNCS, qimg_lzo_load,
               "liblzo2", "The lzo1x codec",
               "liblzo2.so.2")
#undef QIMG_DL_API
#endif
