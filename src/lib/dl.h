/* qimg - optional libraries opened on first use (dl.c).
 *
 * Some libraries serve one backend or one command and pull a crowd of
 * others in with them: libcurl (gnutls, krb5, ldap, ssh2, nghttp2, ...),
 * libnbd (gnutls, libxml2 and ICU), libarchive, the Ceph libraries.  Linked
 * at build time, the dynamic loader maps and relocates all of them at every
 * start, which tripled the time of a plain `qimg info` (the call libvirt
 * and OpenStack make for every image).  Such a library is instead opened
 * with dlopen the first time it is needed, and its functions are reached
 * through a table of pointers filled by dlsym.  Its headers still give the
 * types: a table member is declared as __typeof__(function) *.
 *
 * Each library has a small header with its function list and macros that
 * give the calling code the library's own names (curl-dl.h, nbd-dl.h,
 * archive-dl.h...), and a .c file that defines its table with
 * QIMG_DL_DEFINE. */
#ifndef QIMG_DL_H
#define QIMG_DL_H

#include <stddef.h>

/* One function: its name and the table slot that receives it. */
struct qimg_dl_symbol {
    const char *name;
    void **slot;
};

/* A library to open on demand.  The first four fields describe it; the
 * rest is qimg_dl_load's state (zero-initialised). */
struct qimg_dl {
    const char *library;                 /* "libcurl", for messages */
    const char *needed_for;              /* "The curl driver", for messages */
    const char *const *sonames;          /* tried in order, NULL-terminated */
    const struct qimg_dl_symbol *symbols;/* terminated by a NULL name */
    int state;                           /* 0 not tried, 1 loaded, <0 failed */
    char error[256];
};

/* For a table member: a pointer to the named function's type. */
#define QIMG_DL_MEMBER(name) __typeof__(name) *name;

/* A library's description, `static struct qimg_dl NAME##_lib`, from its
 * X-macro list FUNCS (each function's slot is QIMG_DL_API.name, so
 * QIMG_DL_API must name the table where this is used) and its sonames,
 * tried in order (the one built against first). */
#define QIMG_DL_SYMBOL(name) { #name, (void **)&QIMG_DL_API.name },
#define QIMG_DL_DESCRIBE(NAME, FUNCS, LIBRARY, NEEDED_FOR, ...)                   \
    static const struct qimg_dl_symbol NAME##_symbols[] = {                     \
        FUNCS(QIMG_DL_SYMBOL) { NULL, NULL } };                                 \
    static const char *const NAME##_sonames[] = { __VA_ARGS__, NULL };          \
    static struct qimg_dl NAME##_lib = {                                        \
        .library = LIBRARY, .needed_for = NEEDED_FOR,                           \
        .sonames = NAME##_sonames, .symbols = NAME##_symbols };

/* In a library's .c file (which defines the header's _DL_IMPL, so that
 * the names are not redirected there): its table `struct API API`, its
 * description and `int LOAD(void)`, which opens it. */
#define QIMG_DL_DEFINE(API, FUNCS, LOAD, LIBRARY, NEEDED_FOR, ...)               \
    struct API API;                                                             \
    QIMG_DL_DESCRIBE(API, FUNCS, LIBRARY, NEEDED_FOR, __VA_ARGS__)              \
    int LOAD(void) { return qimg_dl_load(&API##_lib); }

/* Open the library and fill its table, once (thread-safe; a failure is
 * remembered).  0, or -ENOTSUP with the error set: what needs it, and why
 * it could not be opened. */
int qimg_dl_load(struct qimg_dl *lib);

#endif
