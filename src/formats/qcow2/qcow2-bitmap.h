/* qimg - qcow2 persistent dirty bitmaps (qcow2-bitmap.c): the driver's
 * bitmap callbacks and the hooks the write path and close call. */
#ifndef QIMG_QCOW2_BITMAP_H
#define QIMG_QCOW2_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

struct qimg_image;
struct qimg_bitmap_info;

/* Driver callbacks (see struct qimg_driver). */
int qcow2_bitmap_add(struct qimg_image *img, const char *name, uint32_t granularity);
int qcow2_bitmap_remove(struct qimg_image *img, const char *name);
int qcow2_bitmap_clear(struct qimg_image *img, const char *name);
int qcow2_bitmap_set_enabled(struct qimg_image *img, const char *name, bool enabled);
int qcow2_bitmap_next_dirty(struct qimg_image *img, const char *name, uint64_t off,
                            uint64_t *start, uint64_t *len);
int qcow2_bitmap_set_dirty(struct qimg_image *img, const char *name, uint64_t off, uint64_t len);
int qcow2_bitmap_store(struct qimg_image *img);
bool qcow2_bitmap_supported(struct qimg_image *img);

/* Write path: the guest range [off, off+len) is about to change.  The
 * first call of an open loads the enabled bitmaps and marks them in use
 * on disk; every call marks the range dirty in them.  Takes img->lock:
 * call it without the lock held. */
int qcow2_bitmap_note_write(struct qimg_image *img, uint64_t off, uint64_t len);

/* Resize: load every bitmap before the size changes (an inconsistent
 * one refuses); after it, resize and store them. */
int qcow2_bitmap_resize_prepare(struct qimg_image *img);
int qcow2_bitmap_resized(struct qimg_image *img);

/* Close: store what changed (in-use flags cleared) and free the state.
 * Runs before the write state goes. */
void qcow2_bitmap_close(struct qimg_image *img);

#endif
