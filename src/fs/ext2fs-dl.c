/* qimg - libext2fs's table (see ext2fs-dl.h and src/lib/dl.h). */
#ifdef HAVE_EXT2FS
#define QIMG_EXT2FS_DL_IMPL
#include "internal.h"
#include "ext2fs-dl.h"

struct qimg_ext2fs_api qimg_ext2fs_api;

#define QIMG_EXT2FS_SYMBOL(name) { #name, (void **)&qimg_ext2fs_api.name },
static const struct qimg_dl_symbol symbols[] = {
    QIMG_EXT2FS_FUNCS(QIMG_EXT2FS_SYMBOL)
    { NULL, NULL }
};

/* error_message is libcom_err's: dlsym finds it through libext2fs, which
 * depends on libcom_err */
static const char *const sonames[] = { "libext2fs.so.2", NULL };

static struct qimg_dl libext2fs = {
    .library = "libext2fs", .needed_for = "The ext filesystems",
    .sonames = sonames, .symbols = symbols,
};

int qimg_ext2fs_load(void)
{
    return qimg_dl_load(&libext2fs);
}

#endif
