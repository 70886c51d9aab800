/* qimg - internal: option lists and option trees (flat dotted keys).
 * Part of internal.h (which includes every part); see docs/architecture.md. */
#ifndef QIMG_LIB_OPTIONS_H
#define QIMG_LIB_OPTIONS_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"
#include "errors.h"

/* ========================================================= option lists */

enum qimg_opt_type { QIMG_OPT_STRING, QIMG_OPT_SIZE, QIMG_OPT_BOOL, QIMG_OPT_NUMBER };

/* One create/amend option of a driver, in the order qemu lists it. */
struct qimg_opt_desc {
    const char *name;
    enum qimg_opt_type type;
    const char *help;            /* text after "- " in -o help */
    const char *def_value;       /* printed in "Formatting" when not given; NULL = omit */
};

/* A parsed option list: ordered name=value pairs (later values win). */
struct qimg_opt_pair { char *name; char *value; bool used; char kind; };
/* What a value was in the json: text it came from (qemu keeps the type and
 * shows it in the json:{...} names it makes); 0: a string. */
enum { QIMG_OPT_KIND_NUMBER = 'n', QIMG_OPT_KIND_BOOL = 'b' };
char qimg_opts_kind(const qimg_opts *o, size_t i);
/* Set name=value as a value of that kind (a backend's parse_filename making
 * typed options, as qemu's QDict of a parsed name holds them). */
int qimg_opts_set_typed(qimg_opts **o, const char *name, const char *value, char kind);
struct qimg_opts {
    struct qimg_opt_pair *v;
    size_t n, cap;
};

/* Typed getters; they mark the option used.  Return 0 when absent (out
 * untouched), 1 when found, <0 with an error set on a bad value. */
int qimg_opts_get_bool(qimg_opts *o, const char *name, bool *out);
int qimg_opts_get_number(qimg_opts *o, const char *name, uint64_t *out);
int qimg_opts_get_string(qimg_opts *o, const char *name, const char **out);
/* Options under "prefix." with the prefix removed (a bare "prefix" key
 * becomes "filename"), marked used in o; NULL when none.  This is how an
 * option tree (flattened dotted keys, as json:{...} and --image-opts give
 * them) is handed down one layer: image -> driver -> child -> storage. */
qimg_opts *qimg_opts_subtree(qimg_opts *o, const char *prefix);
qimg_opts *qimg_opts_copy(const qimg_opts *o);
/* First option not used by anyone, or NULL (for "Invalid parameter 'x'"). */
const char *qimg_opts_first_unused(const qimg_opts *o);
/* The same in the order qemu reports it (its dictionary's hash order). */
const char *qimg_opts_first_unused_qemu(const qimg_opts *o);
/* True when text is "help" or "?" (qemu's -o help). */
bool qimg_opts_is_help(const char *text);

static inline void qimg_cleanup_opts(qimg_opts **o) { qimg_opts_free(*o); }
#define CLEANUP_OPTS __attribute__((cleanup(qimg_cleanup_opts)))

/* qimg_keyval_parse (qimg.h); with bare_is_error a non-first key without "=" fails with
 * qemu's "Expected '=' after parameter 'x'" (as --object does). */
int qimg_keyval_parse_strict(qimg_opts **opts, const char *text, const char *implied_key,
                             bool bare_is_error);
/* The value json's null leaves for a "backing" key ("backing": null:
 * no backing image); no text option can spell it. */
#define QIMG_OPTS_NULL "\001null"
/* Parse a "json:{...}" filename into flattened dotted keys
 * ({"file":{"filename":"x"}} -> file.filename=x). */
int qimg_json_filename_parse(qimg_opts **opts, const char *json_text);

/* The store of --object secrets (qimg_object_add). */
/* Secret bytes by id (malloc'ed, NUL-terminated, *len set). */
int qimg_secret_lookup(const char *id, char **data, size_t *len);
/* A tls-creds-x509/-psk/-anon object (its strings live as long as the
 * process); qemu's errors for an unknown id or another type. */
struct qimg_tls_creds {
    bool psk, anon, endpoint_server, verify_peer;
    const char *dir, *username;
};
int qimg_tls_creds_lookup(const char *id, struct qimg_tls_creds *out);
/* The id of the only client tls-creds object given, else NULL. */
const char *qimg_tls_creds_default(void);

#endif
