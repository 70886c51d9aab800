/* qimg - internal: the JSON value tree and qemu's printers.
 * Part of internal.h (which includes every part); see docs/architecture.md. */
#ifndef QIMG_LIB_JSON_H
#define QIMG_LIB_JSON_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"

/* ============================================================ JSON output */

/* A small value tree printed exactly as qemu prints a QObject:
 * objects print their keys in QDict hash order (see json.c). */
enum qimg_json_type { QIMG_JSON_OBJECT, QIMG_JSON_ARRAY, QIMG_JSON_STRING,
                      QIMG_JSON_INT, QIMG_JSON_UINT, QIMG_JSON_BOOL, QIMG_JSON_DOUBLE };
/* Building and printing: qimg.h. */
struct qimg_json *qimg_json_get(const struct qimg_json *obj, const char *key);
struct qimg_json *qimg_json_double(double v);   /* prints as %.17g */
/* One-line form as in qemu's json:{...} filenames: {"a": 1, "b": [1, 2]}. */
char *qimg_json_to_string_compact(const struct qimg_json *v);
/* qemu's human "QDict dump" used for "Format specific information:":
 * appended to *out at the given indent (spaces). */
void qimg_json_dump_human(const struct qimg_json *v, int indent, char **out);
/* The QDict bucket of a key: tdb hash % 512 (exposed for tests). */
unsigned qimg_json_key_bucket(const char *key);

/* A growable string buffer. */
struct qimg_strbuf { char *s; size_t len, cap; };
void qimg_strbuf_addf(struct qimg_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qimg_strbuf_add(struct qimg_strbuf *b, const char *s);

#endif
