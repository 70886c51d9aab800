/* qimg - the qemu-img command line: shared helpers for the commands. */
#ifndef QIMG_CLI_H
#define QIMG_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The command line is a client of the library like any other: it uses
 * include/qimg.h and nothing else of it. */
#include "qimg.h"

/* ---- small helpers of the CLI's own (common.c) ---- */
static inline void cli_cleanup_free(void *ptr) { free(*(void **)ptr); }
#define CLEANUP_FREE __attribute__((cleanup(cli_cleanup_free)))
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* These abort when out of memory. */
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);

/* Program name for messages: basename of argv[0] ("qemu-img" through a
 * symlink named so, else "qimg"). */
extern const char *prog_name;
/* check.c: prints the check log lines of the library (qimg_check_log). */
void cli_check_log(const char *line, void *opaque);

/* "prog: message\n" on stderr. */
void error_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "prog: warning: message\n" on stderr. */
void warn_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The library's warning handler (qimg_set_warn_handler). */
void cli_warn(const char *msg);
/* error_report + "Try 'prog --help' for more information"; exit(1). */
__attribute__((noreturn, format(printf, 1, 2))) void error_exit(const char *fmt, ...);
/* Print qimg_last_error() after a prefix: "prog: <prefix>: <error>". */
void report_lib_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* getopt_long wrapper with qemu-img's behaviour: GNU permutation, ':'
 * leading optstring; '?' and ':' become qemu-img's messages + exit 1.
 * Returns the option character, or -1 at the end. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

/* Long options shared by most commands; ids past every short option.
 * A command numbers its own long options from CLI_OPT_COMMAND. */
enum { CLI_OPT_OBJECT = 0x100, CLI_OPT_IMAGE_OPTS, CLI_OPT_COMMAND };
#define CLI_LONGOPT_HELP        { "help", no_argument, NULL, 'h' }
#define CLI_LONGOPT_OBJECT      { "object", required_argument, NULL, CLI_OPT_OBJECT }
#define CLI_LONGOPT_IMAGE_OPTS  { "image-opts", no_argument, NULL, CLI_OPT_IMAGE_OPTS }
#define CLI_LONGOPT_FORCE_SHARE { "force-share", no_argument, NULL, 'U' }
#define CLI_LONGOPT_END         { NULL, 0, NULL, 0 }
/* -h, --object and --image-opts mean the same in every command: handles
 * option c when it is one of them (image_opts may be NULL for a command
 * without --image-opts). */
bool cli_common_option(int c, bool *image_opts);

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
/* -o given several times: the texts joined with ',', each checked first
 * (qemu's "Invalid option list"); exits on a bad one. */
void cli_accumulate_options(char **options, const char *text);
/* "-o help" of a format's create options (with the protocol's when a
 * target filename was given); 0, or 1 after printing the error. */
int cli_print_create_help(const char *fmt, const char *filename);
/* -l: "snapshot.id=X,snapshot.name=Y" or a plain id-or-name; -1 after
 * printing qemu's messages. */
int cli_check_snapshot_param(const char *text);
/* Show the snapshot -l names (a name or id, or snapshot.id=/snapshot.name=)
 * instead of the active state; reports qemu-img's error. */
int cli_load_snapshot(qimg_image *img, const char *param);

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
/* files inside images (qimg only) */
int cmd_ls(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_copy_out(int argc, char **argv);
int cmd_copy_in(int argc, char **argv);

/* fs-common.c: options shared by ls, cat, copy-out and copy-in
 * (-f, -U, --image-opts, --object, --partition N). */
enum { CLI_FS_OPT_IMAGE_OPTS = 0x1000, CLI_FS_OPT_OBJECT, CLI_FS_OPT_PARTITION };
#define CLI_FS_LONGOPTS \
    { "help", no_argument, NULL, 'h' }, \
    { "format", required_argument, NULL, 'f' }, \
    { "force-share", no_argument, NULL, 'U' }, \
    { "image-opts", no_argument, NULL, CLI_FS_OPT_IMAGE_OPTS }, \
    { "object", required_argument, NULL, CLI_FS_OPT_OBJECT }, \
    { "partition", required_argument, NULL, CLI_FS_OPT_PARTITION }
struct cli_fs_opts { const char *fmt; bool image_opts, force_share; unsigned partition; };
/* Handles option c when it is one of those; exits on a bad value. */
bool cli_fs_option(int c, const char *arg, struct cli_fs_opts *o);
/* Parses a command line of only those options (cat, copy-out, copy-in). */
void cli_fs_parse(int argc, char **argv, struct cli_fs_opts *o);
/* Opens the image and the filesystem on it (messages printed on failure). */
struct qimg_fs *cli_fs_open(const char *filename, const struct cli_fs_opts *o, bool writable,
                            qimg_image **img);
/* Closes both, printing errors; -1 when one failed. */
int cli_fs_close(struct qimg_fs *fs, qimg_image *img);

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *synopsis;    /* the line after the name in --help */
    const char *summary;     /* one sentence for the man page */
};
extern const struct command commands[];
/* Commands qemu-img does not have (main.c): --help leaves them out when
 * run as qemu-img, whose --help output is compared with qemu-img's. */
bool cli_command_is_qimg_only(const char *name);

#endif
