/* qimg - per-thread error state and the warning hook. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define QIMG_ERRMSG_MAX 4096

static __thread char errmsg[QIMG_ERRMSG_MAX];
static __thread int errnum;

const char *qimg_last_error(void) { return errmsg; }
int qimg_last_errno(void) { return errnum; }

void qimg_error_clear(void)
{
    errmsg[0] = '\0';
    errnum = 0;
}

static void set_message(const char *fmt, va_list ap)
{
    char tmp[QIMG_ERRMSG_MAX];
    /* format into a temporary: the arguments may point into errmsg itself */
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    memcpy(errmsg, tmp, sizeof tmp);
}

int qimg_error(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    errnum = err < 0 ? -err : err;
    return err;
}

int qimg_error_errno(int err, const char *fmt, ...)
{
    char tmp[QIMG_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    snprintf(errmsg, sizeof errmsg, "%s: %s", tmp, strerror(err < 0 ? -err : err));
    errnum = err < 0 ? -err : err;
    return err;
}

void qimg_error_prefix(const char *fmt, ...)
{
    char prefix[QIMG_ERRMSG_MAX], tmp[QIMG_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(tmp, sizeof tmp, "%s: %s", prefix, errmsg);
    memcpy(errmsg, tmp, sizeof tmp);
}

static qimg_warn_fn warn_handler;

void qimg_set_warn_handler(qimg_warn_fn fn) { warn_handler = fn; }

void qimg_warn(const char *fmt, ...)
{
    char msg[QIMG_ERRMSG_MAX];
    va_list ap;
    if (!warn_handler)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    warn_handler(msg);
}
