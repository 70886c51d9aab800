/* qimg - internal interfaces: storage backends (struct qimg_io),
 * format drivers (struct qimg_driver) and the image node (struct qimg_image).
 * See docs/architecture.md for how they fit together. */
#ifndef QIMG_INTERNAL_H
#define QIMG_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"

/* The parts, by concern: */
#include "errors.h"      /* errors and warnings */
#include "io.h"         /* storage backends */
#include "options.h"    /* option lists and trees */
#include "json.h"       /* JSON values and printers */
#include "driver.h"     /* format drivers and the capability layer */
#include "image.h"      /* image node, children, safe mode */

/* ============================================================ targets */

/* A new image written under a temporary name, renamed into place when
 * complete (target.c; the public calls are in qimg.h).  Paths that are not
 * plain local files (json:, protocols, devices, dangling symlinks) are
 * written in place (tmp NULL). */
struct qimg_target {
    const char *name;             /* as the user gave it */
    char *final;                  /* where it ends up (symlinks resolved) */
    char *tmp;                    /* written under this name, or NULL: in place */
    bool existed;                 /* name was there before */
    bool local;                   /* a local path (not json: nor a protocol) */
    bool replaces;                /* final exists: its mode is kept */
    mode_t mode;
    struct qimg_io *held;         /* final, locked as a writer would (qimg_target_lock) */
};
/* A target on the stack: plan fills it, release frees what it holds. */
void qimg_target_plan(struct qimg_target *t, const char *name);
void qimg_target_release(struct qimg_target *t);
/* Open an existing regular file target and take the locks a writer takes
 * (qemu's creation does): -EAGAIN with qemu's message while another user,
 * or one of our own sources, refuses to share it.  io NULL when there is
 * nothing to lock. */
int qimg_lock_existing(const char *target, struct qimg_io **io);

/* ============================================================ threads */

/* convert -D (convert-diff.c), called by qimg_convert */
int qimg_convert_diff(const struct qimg_convert_params *p, unsigned nthreads);

struct qimg_pool;
/* A fixed pool of n worker threads running jobs from a queue. */
int qimg_pool_new(struct qimg_pool **out, unsigned nthreads);
int qimg_pool_submit(struct qimg_pool *p, void (*fn)(void *), void *arg);
void qimg_pool_wait(struct qimg_pool *p);      /* until the queue is empty and idle */
void qimg_pool_free(struct qimg_pool *p);      /* waits, joins */

/* ============================================================ chains */

/* Is [off, off+len) allocated in a layer from top down to (not including)
 * base (NULL = the whole chain)?  1 yes, 0 no, <0 error; *pnum is the
 * length of the prefix with that answer.  A layer shorter than the range
 * reads as zeros there, which counts as allocated in it (as in qemu). */
int qimg_chain_is_allocated_above(qimg_image *top, qimg_image *base, uint64_t off,
                                  uint64_t len, uint64_t *pnum);

/* ============================================================ commands */

/* check.c: drivers report each problem a check finds with qimg_check_log;
 * the handler of qimg_check_set_log (qimg.h) prints it. */
void qimg_check_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
