/* qimg - libplist's table (see plist-dl.h and src/lib/dl.h). */
#ifdef HAVE_PLIST
#define QIMG_PLIST_DL_IMPL
#include "internal.h"
#include "plist-dl.h"

#define QIMG_DL_API qimg_plist_api
/* libplist 2.0 to 2.2 is .so.3, 2.3 on .so.4: the functions used here are
 * the same in both */
QIMG_DL_DEFINE(qimg_plist_api, QIMG_PLIST_FUNCS, qimg_plist_load,
               "libplist", "A dmg whose block tables are in an XML property list",
               "libplist-2.0.so.3", "libplist-2.0.so.4")
#undef QIMG_DL_API

#endif
