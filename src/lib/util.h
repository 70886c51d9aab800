/* qimg - small helpers shared by every layer: cleanup attributes,
 * overflow-checked arithmetic, endianness, rounding, zero detection. */
#ifndef QIMG_UTIL_H
#define QIMG_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qimg.h"

/* ---- cleanup attributes (nbdkit-style) ---- */
static inline void qimg_cleanup_free(void *ptr) { free(*(void **)ptr); }
static inline void qimg_cleanup_close(int *fd) { if (*fd >= 0) close(*fd); }
#define CLEANUP_FREE __attribute__((cleanup(qimg_cleanup_free)))
#define CLEANUP_CLOSE __attribute__((cleanup(qimg_cleanup_close)))

/* ---- min/max/rounding ---- */
#define QIMG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QIMG_MAX(a, b) ((a) > (b) ? (a) : (b))
#define QIMG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline bool qimg_is_pow2(uint64_t v) { return v && !(v & (v - 1)); }
/* align must be a power of two */
static inline uint64_t qimg_round_down(uint64_t v, uint64_t align) { return v & ~(align - 1); }
static inline bool qimg_is_aligned(uint64_t v, uint64_t align) { return (v & (align - 1)) == 0; }
static inline uint64_t qimg_div_round_up(uint64_t v, uint64_t d) { return v / d + (v % d != 0); }

/* ---- overflow-checked arithmetic: return false on overflow ---- */
static inline bool qimg_add_ok(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }
static inline bool qimg_mul_ok(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }
/* Round up to a power-of-two alignment, false on overflow. */
static inline bool qimg_round_up_ok(uint64_t v, uint64_t align, uint64_t *r)
{
    uint64_t t;
    if (!qimg_add_ok(v, align - 1, &t))
        return false;
    *r = t & ~(align - 1);
    return true;
}
/* True when [off, off+len) lies inside [0, limit). */
static inline bool qimg_range_ok(uint64_t off, uint64_t len, uint64_t limit)
{
    uint64_t end;
    return qimg_add_ok(off, len, &end) && end <= limit;
}

/* ---- endianness: never cast packed structs, use these ---- */
static inline uint16_t qimg_be16(const void *p) { const uint8_t *b = p; return (uint16_t)(b[0] << 8 | b[1]); }
static inline uint32_t qimg_be32(const void *p) { const uint8_t *b = p; return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }
static inline uint64_t qimg_be64(const void *p) { const uint8_t *b = p; return (uint64_t)qimg_be32(b) << 32 | qimg_be32(b + 4); }
static inline uint16_t qimg_le16(const void *p) { const uint8_t *b = p; return (uint16_t)(b[1] << 8 | b[0]); }
static inline uint32_t qimg_le32(const void *p) { const uint8_t *b = p; return (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0]; }
static inline uint64_t qimg_le64(const void *p) { const uint8_t *b = p; return (uint64_t)qimg_le32(b + 4) << 32 | qimg_le32(b); }
static inline void qimg_put_be16(void *p, uint16_t v) { uint8_t *b = p; b[0] = v >> 8; b[1] = (uint8_t)v; }
static inline void qimg_put_be32(void *p, uint32_t v) { uint8_t *b = p; b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = (uint8_t)v; }
static inline void qimg_put_be64(void *p, uint64_t v) { qimg_put_be32(p, v >> 32); qimg_put_be32((uint8_t *)p + 4, (uint32_t)v); }
static inline void qimg_put_le16(void *p, uint16_t v) { uint8_t *b = p; b[1] = v >> 8; b[0] = (uint8_t)v; }
static inline void qimg_put_le32(void *p, uint32_t v) { uint8_t *b = p; b[3] = v >> 24; b[2] = v >> 16; b[1] = v >> 8; b[0] = (uint8_t)v; }
static inline void qimg_put_le64(void *p, uint64_t v) { qimg_put_le32((uint8_t *)p + 4, v >> 32); qimg_put_le32(p, (uint32_t)v); }

/* qimg_is_zero and qimg_io_buffer: qimg.h */

/* ---- allocation sized from image data ----
 * Every buffer whose size comes from an image goes through this: it is
 * checked against one budget (QIMG_MEM_BUDGET, default 512 MiB) so a hostile
 * header cannot make us allocate without bound.  Sets the error on failure. */
#define QIMG_MEM_BUDGET_DEFAULT (512ull << 20)
void *qimg_alloc_from_image(uint64_t size, const char *what);
void *qimg_calloc_from_image(uint64_t nmemb, uint64_t size, const char *what);


/* path helpers; results are malloc'ed */
char *qimg_path_dirname(const char *path);
/* qimg_path_combine: qimg.h */
bool qimg_path_has_protocol(const char *path);

char *qimg_strdup(const char *s);           /* aborts on ENOMEM */
char *qimg_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *qimg_xmalloc(size_t size);            /* aborts on ENOMEM */
void *qimg_xcalloc(size_t n, size_t size);
void *qimg_xrealloc(void *p, size_t size);

#endif
