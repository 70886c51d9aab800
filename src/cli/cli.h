/* qimg - the qemu-img command line: shared helpers for the commands. */
#ifndef QIMG_CLI_H
#define QIMG_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "internal.h"

/* Program name for messages: basename of argv[0] ("qemu-img" through a
 * symlink named so, else "qimg"). */
extern const char *prog_name;
/* check.c: prints the check log lines of the library (qimg_check_log). */
void cli_check_log(const char *line, void *opaque);

/* "prog: message\n" on stderr. */
void error_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* error_report + "Try 'prog --help' for more information"; exit(1). */
__attribute__((noreturn, format(printf, 1, 2))) void error_exit(const char *fmt, ...);
/* Print qimg_last_error() after a prefix: "prog: <prefix>: <error>". */
void report_lib_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* getopt_long wrapper with qemu-img's behaviour: GNU permutation, ':'
 * leading optstring; '?' and ':' become qemu-img's messages + exit 1.
 * Returns the option character, or -1 at the end. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

/* --output: 0 human, 1 json; exits on bad values as qemu-img does. */
enum output_format { OUTPUT_HUMAN, OUTPUT_JSON };
enum output_format parse_output_format(const char *arg);

/* Cache mode names -> QIMG_OPEN_CACHE_* flags; -1 on a bad name. */
int parse_cache_mode(const char *mode, unsigned *flags);

/* Open an image as qemu-img's img_open does: prints
 * "Could not open 'F': <error>" on failure and returns NULL. */
qimg_image *cli_open(const char *filename, const char *fmt, unsigned flags, bool image_opts);

/* Progress records "    (NN.NN/100%)\r" on stdout, as qemu-img prints them.
 * progress_print(p, delta, max): max == 0 sets the value to delta percent,
 * otherwise adds delta percent of max (qemu's meter semantics). */
struct progress { bool enabled; float current, last_print, min_skip; };
void progress_init(struct progress *p, bool enabled, float min_skip);
void progress_print(struct progress *p, float delta, int max);
void progress_end(struct progress *p);                  /* the final newline */
void progress_callback(double percent, void *opaque);   /* opaque = struct progress * */

/* A number option as qemu-img's cvtnum reads it, in [min, max]; prints
 * qemu's message and returns -1 when invalid. */
int cli_cvtnum(const char *name, const char *arg, int64_t min, int64_t max, int64_t *out);
/* Does an -o text hold a "help" or "?" item? */
bool cli_has_help_option(const char *text);

/* --object handling shared by every command. */
void cli_object_add(const char *text);

/* Print qemu-img's global help (rc 0). */
__attribute__((noreturn)) void help(void);

/* One function per command, one file each (src/cli/<command>.c). */
int cmd_amend(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_dd(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_resize(int argc, char **argv);

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *synopsis;    /* the line after the name in --help */
    const char *summary;     /* one sentence for the man page */
};
extern const struct command commands[];

#endif
