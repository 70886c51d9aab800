/* qimg - reading units of compressed formats in parallel (unit-reader.h). */
#include <errno.h>

#include "unit-reader.h"

/* A few units: enough for two neighbours per worker of a default convert */
#define CACHE_SLOTS 16

struct unit_slot {
    bool used;
    uint64_t id, stamp;
    uint8_t *data;
    size_t len;
};

struct unit_cache {
    pthread_mutex_t lock;
    uint64_t clock;
    struct unit_slot slot[CACHE_SLOTS];
};

struct unit_cache *unit_cache_new(void)
{
    struct unit_cache *c = qimg_xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void unit_cache_free(struct unit_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < CACHE_SLOTS; i++)
        free(c->slot[i].data);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Copy [skip, skip+len) of unit id when cached. */
static bool cache_get(struct unit_cache *c, uint64_t id, size_t skip, void *buf, size_t len)
{
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct unit_slot *s = &c->slot[i];
        if (s->used && s->id == id && skip + len <= s->len) {
            memcpy(buf, s->data + skip, len);
            s->stamp = ++c->clock;
            hit = true;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

/* Keep data (ownership taken) in the least recently used slot. */
static void cache_put(struct unit_cache *c, uint64_t id, uint8_t *data, size_t len)
{
    pthread_mutex_lock(&c->lock);
    struct unit_slot *victim = &c->slot[0];
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct unit_slot *s = &c->slot[i];
        if (s->used && s->id == id) {     /* another reader got here first */
            victim = NULL;
            break;
        }
        if (!s->used || s->stamp < victim->stamp)
            victim = s;
        if (!s->used)
            break;
    }
    uint8_t *old = NULL;
    if (victim) {
        old = victim->data;
        *victim = (struct unit_slot){ true, id, ++c->clock, data, len };
    } else {
        old = data;
    }
    pthread_mutex_unlock(&c->lock);
    free(old);
}

static int read_part(struct qimg_image *img, struct unit_cache *cache,
                     const struct unit_reader_ops *ops, const struct unit_loc *loc,
                     size_t skip, uint8_t *buf, size_t n)
{
    if (cache_get(cache, loc->id, skip, buf, n))
        return 0;
    uint8_t *unit = qimg_alloc_from_image(loc->len, "decoded unit");
    if (!unit)
        return -ENOMEM;
    int r = ops->decode(img, loc, unit);
    if (r < 0) {
        free(unit);
        return r;
    }
    memcpy(buf, unit + skip, n);
    cache_put(cache, loc->id, unit, (size_t)loc->len);
    return 0;
}

/* Whole coded units read together: at most this many stored bytes, units */
#define RUN_BYTES (8u << 20)
#define RUN_UNITS 64

/* Units after first (a whole coded unit at the start of buf[0..len)) that
 * are whole in the request too and stored right after it: how many in all
 * (1 or more) in run[], and their stored bytes in *stored. */
static int gather_run(struct qimg_image *img, const struct unit_reader_ops *ops,
                      const struct unit_loc *first, size_t len, struct unit_loc *run,
                      uint64_t *stored)
{
    int n = 1;
    run[0] = *first;
    *stored = first->stored_len;
    uint64_t covered = first->len;
    while (n < RUN_UNITS && covered < len) {
        struct unit_loc next;
        if (ops->locate(img, first->start + covered, &next) < 0) {
            qimg_error_clear();      /* the loop meets it again, alone */
            break;
        }
        if (next.kind != UNIT_CODED || next.len > len - covered ||
            next.stored_offset != run[n - 1].stored_offset + run[n - 1].stored_len ||
            *stored + next.stored_len > RUN_BYTES)
            break;
        run[n++] = next;
        *stored += next.stored_len;
        covered += next.len;
    }
    return n;
}

/* Whole coded units from first on: as many as gather_run finds, with one
 * pread; how many bytes of buf they filled in *done. */
static int read_run(struct qimg_image *img, const struct unit_reader_ops *ops,
                    const struct unit_loc *first, uint8_t *buf, size_t len, size_t *done)
{
    struct unit_loc run[RUN_UNITS];
    uint64_t stored = 0;
    int n = gather_run(img, ops, first, len, run, &stored);
    if (n == 1) {
        *done = (size_t)first->len;
        return ops->decode(img, first, buf);
    }
    CLEANUP_FREE uint8_t *in = qimg_alloc_from_image(stored, "stored units");
    if (!in)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, in, stored, first->stored_offset);
    for (int i = 0; i < n && r == 0; i++) {
        r = ops->decode_from(img, &run[i], in + (run[i].stored_offset - first->stored_offset), buf);
        buf += run[i].len;
        *done += run[i].len;
    }
    return r;
}

int unit_read(struct qimg_image *img, struct unit_cache *cache, const struct unit_reader_ops *ops,
              uint64_t off, void *buf_, size_t len)
{
    uint8_t *buf = buf_;
    while (len) {
        struct unit_loc loc;
        int r = ops->locate(img, off, &loc);
        if (r < 0)
            return r;
        size_t skip = (size_t)(off - loc.start);
        size_t n = (size_t)QIMG_MIN((uint64_t)len, loc.len - skip);
        if (loc.kind == UNIT_CODED && skip == 0 && n == loc.len && ops->decode_from) {
            n = 0;
            if ((r = read_run(img, ops, &loc, buf, len, &n)) < 0)
                return r;
            off += n;
            buf += n;
            len -= n;
            continue;
        }
        switch (loc.kind) {
        case UNIT_ZERO:
            memset(buf, 0, n);
            break;
        case UNIT_RAW:
            r = qimg_io_pread(img->file, buf, n, loc.host_offset + skip);
            break;
        case UNIT_CODED:
            r = skip == 0 && n == loc.len ? ops->decode(img, &loc, buf)
                                          : read_part(img, cache, ops, &loc, skip, buf, n);
            break;
        }
        if (r < 0)
            return r;
        off += n;
        buf += n;
        len -= n;
    }
    return 0;
}
