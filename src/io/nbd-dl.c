/* qimg - libnbd's table (see nbd-dl.h and src/lib/dl.h). */
#ifdef HAVE_LIBNBD
#define QIMG_NBD_DL_IMPL
#include "internal.h"
#include "nbd-dl.h"

#define QIMG_DL_API qimg_nbd_api
QIMG_DL_DEFINE(qimg_nbd_api, QIMG_NBD_FUNCS, qimg_nbd_load,
               "libnbd", "The nbd driver",
               "libnbd.so.0")
#undef QIMG_DL_API

#endif
