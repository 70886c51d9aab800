/* qimg - opening optional libraries on first use (see dl.h). */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "internal.h"
#include "dl.h"

static pthread_mutex_t dl_lock = PTHREAD_MUTEX_INITIALIZER;

static int open_library(struct qimg_dl *lib)
{
    void *h = NULL;
    for (const char *const *n = lib->sonames; !h && *n; n++)
        h = dlopen(*n, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(lib->error, sizeof lib->error, "%s", e ? e : "not found");
        return -ENOTSUP;
    }
    for (const struct qimg_dl_symbol *s = lib->symbols; s->name; s++) {
        *s->slot = dlsym(h, s->name);
        if (!*s->slot) {
            snprintf(lib->error, sizeof lib->error, "%s has no %s", lib->library, s->name);
            return -ENOTSUP;     /* h stays open: harmless, and the state is final */
        }
    }
    /* h stays open for good: the table points into it */
    return 1;
}

int qimg_dl_load(struct qimg_dl *lib)
{
    /* Codecs call this for every unit they decode: once loaded, one atomic
     * load (acquire: the table was filled before state became 1). */
    if (__atomic_load_n(&lib->state, __ATOMIC_ACQUIRE) == 1)
        return 0;
    pthread_mutex_lock(&dl_lock);
    if (lib->state == 0)
        __atomic_store_n(&lib->state, open_library(lib), __ATOMIC_RELEASE);
    int state = lib->state;
    pthread_mutex_unlock(&dl_lock);
    if (state < 0)
        return qimg_error(state, "%s needs %s: %s", lib->needed_for, lib->library, lib->error);
    return 0;
}
