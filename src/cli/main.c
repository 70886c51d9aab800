/* qimg - entry point and the table of commands (feeds --help too). */
#include <errno.h>
#include <locale.h>
#include <signal.h>
#include <string.h>

#include "cli.h"

const struct command commands[] = {
    { "amend", cmd_amend, "[--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename",
      "Change format options of an existing image in place (qcow2, luks)." },
    { "bench", cmd_bench, "[-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename",
      "Run a simple sequential read or write benchmark on an image." },
    { "bitmap", cmd_bitmap, "(--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap",
      "Add, remove, clear, enable, disable or merge persistent dirty bitmaps." },
    { "check", cmd_check, "[--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename",
      "Check an image for consistency and optionally repair it." },
    { "commit", cmd_commit, "[--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename",
      "Copy the data of an overlay into its backing image." },
    { "compare", cmd_compare, "[--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2",
      "Compare the guest-visible content of two images." },
    { "convert", cmd_convert, "[--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename [filename2 [...]] output_filename",
      "Copy and convert one or more images into a new or existing image." },
    { "create", cmd_create, "[--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]",
      "Create a new image." },
    { "dd", cmd_dd, "[--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output",
      "Copy part of an image, dd style (count counted after skip, as dd(1) does)." },
    { "info", cmd_info, "[--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename",
      "Show information about an image, or a whole backing chain." },
    { "map", cmd_map, "[--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename",
      "Show where the data of an image lives, through its backing chain." },
    { "measure", cmd_measure, "[--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]",
      "Compute the file size a new image needs." },
    { "snapshot", cmd_snapshot, "[--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename",
      "List, create, apply or delete internal snapshots." },
    { "rebase", cmd_rebase, "[--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename",
      "Change the backing file of an image, keeping its content (or not, with -u)." },
    { "resize", cmd_resize, "[--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size",
      "Grow or shrink an image." },
    { "ls", cmd_ls, "[-f fmt] [--image-opts] [-U] [--partition N] [-l] [-R] [--output=ofmt] filename [path]",
      "List a directory of the ext2/3/4 or FAT filesystem inside an image (qimg only)." },
    { "cat", cmd_cat, "[-f fmt] [--image-opts] [-U] [--partition N] filename path",
      "Write a file of the filesystem inside an image to standard output (qimg only)." },
    { "copy-out", cmd_copy_out, "[-f fmt] [--image-opts] [-U] [--partition N] filename path [path...] localdir",
      "Copy files or trees out of the filesystem inside an image into a local directory (qimg only)." },
    { "copy-in", cmd_copy_in, "[-f fmt] [--image-opts] [--partition N] filename localpath [localpath...] dir",
      "Copy local files or trees into a directory of the filesystem inside an image, writing to the top image only (qimg only)." },
    { NULL, NULL, NULL, NULL },
};

bool cli_command_is_qimg_only(const char *name)
{
    static const char *const names[] = { "ls", "cat", "copy-out", "copy-in" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

static void print_version(void)
{
    if (strcmp(prog_name, "qemu-img") == 0)
        printf("qemu-img version 7.2.0 (qimg %s)\n", QIMG_VERSION_STRING);
    else
        printf("%s version %s (compatible with qemu-img 7.2.0)\n", prog_name, QIMG_VERSION_STRING);
    printf("qimg: a standalone disk image tool and library\n");
}

static void set_prog_name(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');
    prog_name = slash ? slash + 1 : argv0;
    if (!*prog_name)
        prog_name = "qimg";
}

/* -T/--trace: qimg has no trace events.  Like qemu, warn about a pattern
 * without wildcards (it names an event that does not exist) and read an
 * events file the same way, one pattern per line. */
static void warn_trace_pattern(const char *where, const char *pattern)
{
    if (*pattern && !strpbrk(pattern, "*?["))
        fprintf(stderr, "%s%s: warning: trace event '%s' does not exist\n", prog_name, where, pattern);
}

static void trace_events_file(const char *file)
{
    FILE *f = fopen(file, "r");
    char line[1024];
    unsigned lineno = 0;
    if (!f) {
        fprintf(stderr, "%s:%s: %s\n", prog_name, file, strerror(errno));
        exit(1);
    }
    while (fgets(line, sizeof line, f)) {
        char where[1100];
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || !line[0])
            continue;
        snprintf(where, sizeof where, ":%s:%u", file, lineno);
        warn_trace_pattern(where, line[0] == '-' ? line + 1 : line);
    }
    fclose(f);
}

static void parse_trace(const char *arg)
{
    qimg_opts *o = NULL;
    if (qimg_keyval_parse(&o, arg, "enable") < 0) {
        error_report("%s", qimg_last_error());
        exit(1);
    }
    for (size_t i = 0; i < qimg_opts_count(o); i++) {
        const char *k = qimg_opts_name(o, i);
        if (strcmp(k, "enable") && strcmp(k, "events") && strcmp(k, "file")) {
            error_report("Invalid parameter '%s'", k);
            exit(1);
        }
    }
    for (size_t i = 0; i < qimg_opts_count(o); i++) {
        if (strcmp(qimg_opts_name(o, i), "enable") == 0)
            warn_trace_pattern("", qimg_opts_value(o, i));
        else if (strcmp(qimg_opts_name(o, i), "events") == 0)
            trace_events_file(qimg_opts_value(o, i));
    }
    qimg_opts_free(o);
}

/* --safe (qimg's own, for every command, before or after the command
 * name) and QIMG_SAFE=1 turn safe mode on.  The option is taken out of
 * argv before any getopt runs, so the commands parse exactly what
 * qemu-img would; a "--" ends the search with the options. */
static int take_safe_option(int argc, char **argv)
{
    bool safe = false, options_ended = false;
    int out = 1;
    for (int i = 1; i < argc; i++) {
        if (!options_ended && strcmp(argv[i], "--safe") == 0) {
            safe = true;
            continue;
        }
        if (strcmp(argv[i], "--") == 0)
            options_ended = true;
        argv[out++] = argv[i];
    }
    argv[out] = NULL;
    const char *env = getenv("QIMG_SAFE");
    if (safe || (env && strcmp(env, "1") == 0))
        qimg_set_safe_mode(true);
    env = getenv("QIMG_ALLOW_EXTERNAL_EXTENTS");
    if (env && strcmp(env, "1") == 0)
        qimg_set_allow_external_extents(true);
    return out;
}

int main(int argc, char **argv)
{
    /* Output never depends on the locale: numbers, dates, messages. */
    setlocale(LC_ALL, "C");
    signal(SIGPIPE, SIG_IGN);
    set_prog_name(argv[0]);
    qimg_set_warn_handler(cli_warn);
    qimg_check_set_log(cli_check_log, NULL);
    argc = take_safe_option(argc, argv);

    /* Global options come before the command. */
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "trace", required_argument, NULL, 'T' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "+:hVT:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': help();
        case 'V': print_version(); return 0;
        case 'T': parse_trace(optarg); break;
        case ':': error_exit("missing argument for option '%s'", argv[optind - 1]);
        default: error_exit("unrecognized option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        error_exit("Not enough arguments");
    const char *cmd = argv[optind];
    for (const struct command *c2 = commands; c2->name; c2++) {
        if (strcmp(c2->name, cmd) == 0) {
            /* the command parses argv[optind..]: argv[0] is its name */
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0;   /* full getopt reset for the command */
            return c2->fn(sub_argc, sub_argv);
        }
    }
    error_exit("Command not found: %s", cmd);
}
