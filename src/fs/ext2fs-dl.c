/* qimg - libext2fs's table (see ext2fs-dl.h and src/lib/dl.h). */
#ifdef HAVE_EXT2FS
#define QIMG_EXT2FS_DL_IMPL
#include "internal.h"
#include "ext2fs-dl.h"

#define QIMG_DL_API qimg_ext2fs_api
/* error_message is libcom_err's: dlsym finds it through libext2fs, which
 * depends on libcom_err */
QIMG_DL_DEFINE(qimg_ext2fs_api, QIMG_EXT2FS_FUNCS, qimg_ext2fs_load,
               "libext2fs", "The ext filesystems",
               "libext2fs.so.2")
#undef QIMG_DL_API

#endif
