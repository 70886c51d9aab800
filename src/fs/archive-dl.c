/* qimg - loading libarchive at run time (see archive-dl.h). */
#ifdef HAVE_LIBARCHIVE
#define QIMG_ARCHIVE_DL_IMPL
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

#include "internal.h"
#include "archive-dl.h"

struct qimg_archive_api qimg_archive_api;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_result;
static char load_error[256];

static void load(void)
{
    /* the soname of the libarchive we were built against first */
    static const char *const names[] = { "libarchive.so.13", "libarchive.so" };
    void *h = NULL;
    for (size_t i = 0; !h && i < sizeof names / sizeof names[0]; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error, "%s", e ? e : "not found");
        load_result = -ENOTSUP;
        return;
    }
#define QIMG_ARCHIVE_LOOKUP(name)                                               \
    if (load_result == 0 && !(*(void **)&qimg_archive_api.name = dlsym(h, #name))) { \
        snprintf(load_error, sizeof load_error, "libarchive has no %s", #name);  \
        load_result = -ENOTSUP;                                                 \
    }
    QIMG_ARCHIVE_FUNCS(QIMG_ARCHIVE_LOOKUP)
#undef QIMG_ARCHIVE_LOOKUP
    /* h stays open: the table points into it */
}

int qimg_archive_load(void)
{
    pthread_once(&load_once, load);
    if (load_result < 0)
        return qimg_error(load_result, "Reading archives needs libarchive: %s", load_error);
    return 0;
}

#endif
