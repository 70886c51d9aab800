/* qimg - reading formats whose guest bytes come in independently
 * compressed units (cloop blocks, dmg chunks).
 *
 * Many threads read one image at once (convert's workers): every decode
 * runs into a buffer of its own call, never under a lock.  A read that
 * covers a whole unit decodes straight into the caller's buffer; a read
 * of part of a unit decodes it into a buffer that then goes to a small
 * cache shared by the image's readers (under a lock held only to copy),
 * so the neighbouring reads of the same unit do not decode it again.
 * Whole units whose stored bytes follow each other are read together (one
 * pread of up to RUN_BYTES), then decoded one by one. */
#ifndef QIMG_FORMATS_UNIT_READER_H
#define QIMG_FORMATS_UNIT_READER_H

#include "internal.h"

enum unit_kind {
    UNIT_ZERO,        /* reads as zeros */
    UNIT_RAW,         /* stored as it is at host_offset */
    UNIT_CODED,       /* decoded by ops->decode */
};

struct unit_loc {
    enum unit_kind kind;
    uint64_t id;          /* the unit's number, for the cache */
    uint64_t start, len;  /* guest range of the unit (len > 0) */
    uint64_t host_offset; /* UNIT_RAW */
    /* UNIT_CODED: where its stored bytes are (neighbours whose stored
     * bytes follow each other are read with one pread) */
    uint64_t stored_offset, stored_len;
};

struct unit_reader_ops {
    /* The unit holding guest offset off (< img->size). */
    int (*locate)(struct qimg_image *img, uint64_t off, struct unit_loc *loc);
    /* Decode unit loc into out[0..loc->len): all of it, or an error. */
    int (*decode)(struct qimg_image *img, const struct unit_loc *loc, void *out);
    /* The same from its stored bytes, already read (in[0..stored_len)). */
    int (*decode_from)(struct qimg_image *img, const struct unit_loc *loc, const uint8_t *in,
                       void *out);
};

struct unit_cache;
struct unit_cache *unit_cache_new(void);
void unit_cache_free(struct unit_cache *c);

/* Guest read of [off, off+len) through ops and the cache. */
int unit_read(struct qimg_image *img, struct unit_cache *cache, const struct unit_reader_ops *ops,
              uint64_t off, void *buf, size_t len);

#endif
