/* qimg - consistency checks: the core side of qemu-img check.
 *
 * A driver's check fills struct qimg_check_result and reports each problem
 * it finds, one line each, through qimg_check_log(); the caller decides
 * where the lines go (qemu-img prints them on stderr, before the summary).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static qimg_check_log_fn log_fn;
static void *log_opaque;

void qimg_check_set_log(qimg_check_log_fn fn, void *opaque)
{
    log_fn = fn;
    log_opaque = opaque;
}

void qimg_check_log(const char *fmt, ...)
{
    char *line;
    va_list ap;
    if (!log_fn)
        return;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    log_fn(line, log_opaque);
    free(line);
}

int qimg_check(qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    memset(res, 0, sizeof *res);
    if (fix && img->read_only && qimg_drv_can(img->drv, QIMG_CAP_CHECK))
        return qimg_error(-EACCES, "Image '%s' is read-only", img->filename);
    return qimg_drv_check(img, res, fix);
}
