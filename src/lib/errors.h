/* qimg - internal: errors and warnings: the one error channel of the library.
 * Part of internal.h (which includes every part); see docs/architecture.md. */
#ifndef QIMG_LIB_ERRORS_H
#define QIMG_LIB_ERRORS_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"

/* ================================================================ errors */

/* Set this thread's error message and return err (a negative errno), so
 * callers write:  return qimg_error(-EINVAL, "bad %s", x);  */
int qimg_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Put "prefix: " in front of the current message (keeps errno). */
void qimg_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Set an error from errno text: "<msg>: <strerror>". */
int qimg_error_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A warning through the handler of qimg_set_warn_handler (qimg.h). */
void qimg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
