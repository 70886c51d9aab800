/* qimg - libarchive's table (see archive-dl.h and src/lib/dl.h). */
#ifdef HAVE_LIBARCHIVE
#define QIMG_ARCHIVE_DL_IMPL
#include "internal.h"
#include "archive-dl.h"

#define QIMG_DL_API qimg_archive_api
/* the soname of the libarchive we were built against first */
QIMG_DL_DEFINE(qimg_archive_api, QIMG_ARCHIVE_FUNCS, qimg_archive_load,
               "libarchive", "Reading archives",
               "libarchive.so.13", "libarchive.so")
#undef QIMG_DL_API

#endif
