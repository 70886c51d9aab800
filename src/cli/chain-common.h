/* qimg - helpers of the amend, snapshot, bitmap, rebase and commit
 * commands: qemu-img's cvtnum and its progress meter. */
#ifndef QIMG_CHAIN_COMMON_H
#define QIMG_CHAIN_COMMON_H

#include "cli.h"

/* A size option as qemu-img's cvtnum reads it: the value in [0, INT64_MAX],
 * or -1 after printing "Invalid <name> specified..." */
int64_t chain_cvtnum(const char *name, const char *value);

/* qemu's progress meter: prints "    (P/100%)\r" when the value moved by
 * more than min_skip, or is 0 or 100 (every time); end prints "\n". */
struct qprogress { bool enabled; float current, last_print, min_skip; };
void qprogress_init(struct qprogress *p, bool enabled, float min_skip);
/* max == 0: set the value to delta; else add delta percent of max. */
void qprogress_print(struct qprogress *p, float delta, int max);
void qprogress_end(struct qprogress *p);
/* qimg_progress_fn adaptor (absolute percent). */
void qprogress_callback(double percent, void *opaque);

/* Has "-o" text a "help" or "?" item? */
bool chain_has_help_option(const char *text);

#endif
