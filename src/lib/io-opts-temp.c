/* qimg - TEMP(opts): a stand-in for the storage branch's qimg_io_open_opts
 * and qimg_io_same, so that the option tree can be handed down and tested
 * on this branch.  Knows only the file backend ("driver" absent or "file",
 * "filename", "locking").  Delete this file when src/io/ provides both. */
#include <errno.h>
#include <sys/stat.h>

#include "internal.h"

int qimg_io_open_opts(struct qimg_io **out, qimg_opts *opts, unsigned flags)
{
    const char *driver = NULL, *filename = NULL, *locking = NULL;
    qimg_opts_get_string(opts, "driver", &driver);
    if (driver && strcmp(driver, "file") != 0)
        return qimg_error(-EINVAL, "Unknown driver '%s'", driver);
    qimg_opts_get_string(opts, "filename", &filename);
    if (!filename)
        return qimg_error(-EINVAL, "The 'file' block driver requires a file name");
    if (qimg_opts_get_string(opts, "locking", &locking) == 1 && strcmp(locking, "off") == 0)
        flags |= QIMG_IO_NOLOCK;
    return qimg_io_open(out, filename, flags);
}

/* TEMP(opts): no descriptor is public later; compare what the names reach. */
bool qimg_io_same(struct qimg_io *a, struct qimg_io *b)
{
    struct stat sa, sb;
    if (stat(a->filename, &sa) < 0 || stat(b->filename, &sb) < 0)
        return strcmp(a->filename, b->filename) == 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
