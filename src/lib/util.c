/* qimg - helpers: allocation with a budget, zero detection, paths. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static void out_of_memory(void)
{
    fputs("qimg: out of memory\n", stderr);
    abort();
}

void *qimg_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        out_of_memory();
    return p;
}

void *qimg_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        out_of_memory();
    return p;
}

void *qimg_xrealloc(void *old, size_t size)
{
    void *p = realloc(old, size ? size : 1);
    if (!p)
        out_of_memory();
    return p;
}

char *qimg_strdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        out_of_memory();
    return p;
}

char *qimg_asprintf(const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        out_of_memory();
    va_end(ap);
    return s;
}

static uint64_t mem_budget(void)
{
    const char *env = getenv("QIMG_MEM_BUDGET");
    uint64_t v;
    if (env && qimg_parse_size(env, &v) == 0 && v > 0)
        return v;
    return QIMG_MEM_BUDGET_DEFAULT;
}

/* ---- the per-open budget of safe mode ---- */

#define SAFE_MEM_DEFAULT (512ull << 20)
#define SAFE_SECONDS_DEFAULT 30

static __thread struct {
    unsigned depth;          /* nested begin/end */
    uint64_t used, limit;    /* bytes charged by qimg_alloc_from_image */
    struct timespec deadline;
    unsigned seconds;
} budget;

/* A number from the environment; def when unset or bad (or 0 where 0
 * makes no sense: a memory limit). */
static uint64_t env_number(const char *name, uint64_t def, bool zero_ok)
{
    const char *env = getenv(name);
    uint64_t v;
    if (env && qimg_parse_size(env, &v) == 0 && (v > 0 || zero_ok))
        return v;
    return def;
}

void qimg_budget_begin(bool safe)
{
    if (budget.depth++ > 0)
        return;
    budget.limit = 0;            /* inactive */
    if (!safe)
        return;
    budget.used = 0;
    budget.limit = env_number("QIMG_SAFE_MEM", SAFE_MEM_DEFAULT, false);
    budget.seconds = (unsigned)QIMG_MIN(env_number("QIMG_SAFE_SECONDS", SAFE_SECONDS_DEFAULT, true),
                                        (uint64_t)UINT32_MAX);
    clock_gettime(CLOCK_MONOTONIC, &budget.deadline);
    budget.deadline.tv_sec += budget.seconds;
}

void qimg_budget_end(void)
{
    if (budget.depth > 0)
        budget.depth--;
}

static bool budget_active(void)
{
    return budget.depth > 0 && budget.limit > 0;
}

int qimg_budget_check(void)
{
    struct timespec now;
    if (!budget_active())
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > budget.deadline.tv_sec ||
        (now.tv_sec == budget.deadline.tv_sec && now.tv_nsec >= budget.deadline.tv_nsec))
        return qimg_error(-ETIMEDOUT, "safe mode: opening the image took more than %u seconds "
                          "(QIMG_SAFE_SECONDS)", budget.seconds);
    return 0;
}

static int budget_charge(uint64_t size, const char *what)
{
    if (!budget_active())
        return 0;
    if (size > budget.limit - QIMG_MIN(budget.used, budget.limit))
        return qimg_error(-EFBIG, "safe mode: opening the image needs more than %" PRIu64
                          " bytes of memory (%s; QIMG_SAFE_MEM)", budget.limit, what);
    budget.used += size;
    return qimg_budget_check();
}

void *qimg_alloc_from_image(uint64_t size, const char *what)
{
    void *p;
    if (size > mem_budget() || size > SIZE_MAX) {
        qimg_error(-EFBIG, "%s is too large (%" PRIu64 " bytes)", what, size);
        return NULL;
    }
    if (budget_charge(size, what) < 0)
        return NULL;
    /* page-aligned from a page up: tables and clusters read into these can
     * go around the page cache (O_DIRECT) */
    if (size < 4096)
        p = malloc(size ? size : 1);
    else if (posix_memalign(&p, 4096, (size_t)size) != 0)
        p = NULL;
    if (!p)
        qimg_error(-ENOMEM, "Could not allocate %s", what);
    return p;
}

void *qimg_calloc_from_image(uint64_t nmemb, uint64_t size, const char *what)
{
    uint64_t total;
    void *p;
    if (!qimg_mul_ok(nmemb, size, &total)) {
        qimg_error(-EFBIG, "%s is too large", what);
        return NULL;
    }
    p = qimg_alloc_from_image(total, what);
    if (p)
        memset(p, 0, total);
    return p;
}

void *qimg_io_buffer(size_t size)
{
    void *p;
    if (posix_memalign(&p, 4096, size ? size : 1) != 0)
        out_of_memory();
    return p;
}

/* Word-at-a-time scan after checking the first bytes: most non-zero
 * buffers fail in the first 16 bytes, most zero buffers are long. */
bool qimg_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (len < 16) {
        for (size_t i = 0; i < len; i++)
            if (p[i])
                return false;
        return true;
    }
    /* data mostly shows in its first bytes: two words decide at once */
    uint64_t w[2];
    memcpy(w, p, sizeof w);
    if (w[0] | w[1])
        return false;
    if (len == 16)
        return true;
    /* buffer[0..16) are zero: compare the rest with itself shifted */
    return memcmp(p, p + 16, len - 16) == 0;
}

bool qimg_path_has_protocol(const char *path)
{
    /* qemu's rule: a colon before any slash ("proto:x", "json:{...}", and
     * ":x" with the empty protocol) */
    return path[strcspn(path, ":/")] == ':';
}

char *qimg_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return qimg_strdup(".");
    if (slash == path)
        return qimg_strdup("/");
    return strndup(path, (size_t)(slash - path));
}

char *qimg_path_combine(const char *image, const char *backing)
{
    if (backing[0] == '/' || qimg_path_has_protocol(backing) || strncmp(image, "json:", 5) == 0)
        return qimg_strdup(backing);
    /* keep the image's directory: up to its last slash, and at least its
     * protocol prefix ("image:top" gives "image:base", as in qemu) */
    size_t keep = 0;
    if (qimg_path_has_protocol(image))
        keep = strcspn(image, ":") + 1;
    const char *slash = strrchr(image, '/');
    if (slash && (size_t)(slash - image) + 1 > keep)
        keep = (size_t)(slash - image) + 1;
    return qimg_asprintf("%.*s%s", (int)keep, image, backing);
}
