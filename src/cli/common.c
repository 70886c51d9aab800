/* qimg - helpers every command uses: messages, option parsing, opening
 * images, progress, help. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *prog_name = "qimg";

static void vreport(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", prog_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void error_report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
}

void warn_report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: warning: ", prog_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Warnings of the library: "WARNING: ..." texts come as qemu prints them;
 * in others, what follows the first line is a note qemu prints after the
 * warning as it is (no newline of its own). */
void cli_warn(const char *msg)
{
    const char *note = strchr(msg, '\n');
    if (strncmp(msg, "WARNING:", 8) == 0)
        fprintf(stderr, "%s\n", msg);
    else if (strncmp(msg, "ERROR: ", 7) == 0)
        error_report("%s", msg + 7);
    else if (note)
        fprintf(stderr, "%s: warning: %.*s\n%s", prog_name, (int)(note - msg), msg, note + 1);
    else
        warn_report("%s", msg);
}

void error_exit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help' for more information\n", prog_name);
    exit(1);
}

void report_lib_error(const char *fmt, ...)
{
    char prefix[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (prefix[0])
        error_report("%s: %s", prefix, qimg_last_error());
    else
        error_report("%s", qimg_last_error());
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    int c = getopt_long(argc, argv, shortopts, longopts, NULL);
    if (c == '?')
        error_exit("unrecognized option '%s'", argv[optind - 1]);
    if (c == ':')
        error_exit("missing argument for option '%s'", argv[optind - 1]);
    return c;
}

enum output_format parse_output_format(const char *arg)
{
    if (strcmp(arg, "json") == 0)
        return OUTPUT_JSON;
    if (strcmp(arg, "human") == 0)
        return OUTPUT_HUMAN;
    error_report("--output must be used with human or json as argument.");
    exit(1);
}

int parse_cache_mode(const char *mode, unsigned *flags)
{
    *flags &= ~(unsigned)(QIMG_OPEN_CACHE_DIRECT | QIMG_OPEN_CACHE_SYNC | QIMG_OPEN_CACHE_UNSAFE);
    if (strcmp(mode, "none") == 0 || strcmp(mode, "off") == 0)
        *flags |= QIMG_OPEN_CACHE_DIRECT;
    else if (strcmp(mode, "directsync") == 0)
        *flags |= QIMG_OPEN_CACHE_DIRECT | QIMG_OPEN_CACHE_SYNC;
    else if (strcmp(mode, "writethrough") == 0)
        *flags |= QIMG_OPEN_CACHE_SYNC;
    else if (strcmp(mode, "unsafe") == 0)
        *flags |= QIMG_OPEN_CACHE_UNSAFE;
    else if (strcmp(mode, "writeback") != 0)
        return -1;
    return 0;
}

qimg_image *cli_open(const char *filename, const char *fmt, unsigned flags, bool image_opts)
{
    qimg_image *img;
    int r;
    if (image_opts) {
        if (fmt) {
            error_report("--image-opts and --format are mutually exclusive");
            return NULL;
        }
        r = qimg_open_opts(&img, filename, flags);
    } else {
        r = qimg_open(&img, filename, fmt, flags);
    }
    if (r < 0) {
        report_lib_error("Could not open '%s'", filename);
        return NULL;
    }
    return img;
}

void cli_object_add(const char *text)
{
    if (qimg_object_add(text) < 0) {
        error_report("%s", qimg_last_error());
        exit(1);
    }
}

bool cli_common_option(int c, bool *image_opts)
{
    switch (c) {
    case 'h':
        help();
    case CLI_OPT_OBJECT:
        cli_object_add(optarg);
        return true;
    case CLI_OPT_IMAGE_OPTS:
        if (image_opts)
            *image_opts = true;
        return true;
    default:
        return false;
    }
}

/* ---- numbers ---- */

int cli_cvtnum(const char *name, const char *arg, int64_t min, int64_t max, int64_t *out)
{
    uint64_t v;
    int r = qimg_parse_size(arg, &v);
    if (r == -ERANGE || (r == 0 && (v > (uint64_t)max || (int64_t)v < min))) {
        error_report("Invalid %s specified. Must be between %" PRId64 " and %" PRId64 ".",
                     name, min, max);
        return -1;
    }
    if (r < 0) {
        error_report("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        error_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* Does an -o text hold a "help" or "?" item?  Items are split at single
 * commas (",," is a literal comma). */
bool cli_has_help_option(const char *text)
{
    const char *p = text;
    while (*p) {
        const char *start = p;
        while (*p && !(*p == ',' && p[1] != ',')) {
            if (*p == ',')
                p++;   /* escaped comma */
            p++;
        }
        size_t len = (size_t)(p - start);
        if ((len == 4 && strncmp(start, "help", 4) == 0) || (len == 1 && *start == '?'))
            return true;
        if (*p)
            p++;
    }
    return false;
}

void cli_accumulate_options(char **options, const char *text)
{
    if (qimg_opts_check_text(text) < 0) {
        error_report("%s", qimg_last_error());
        exit(1);
    }
    char *joined = *options ? xasprintf("%s,%s", *options, text) : xstrdup(text);
    free(*options);
    *options = joined;
}

int cli_print_create_help(const char *fmt, const char *filename)
{
    CLEANUP_FREE char *text = NULL;
    if (qimg_create_help(fmt, filename != NULL, &text) < 0) {
        error_report("%s", qimg_last_error());
        return 1;
    }
    fputs(text, stdout);
    return 0;
}

int cli_check_snapshot_param(const char *text)
{
    if (strncmp(text, "snapshot.", 9) != 0)
        return 0;
    qimg_opts *kv = NULL;
    bool ok = qimg_keyval_parse(&kv, text, NULL) == 0;
    if (!ok)
        error_report("%s", qimg_last_error());
    for (size_t i = 0; ok && i < qimg_opts_count(kv); i++) {
        const char *name = qimg_opts_name(kv, i);
        if (strcmp(name, "snapshot.id") && strcmp(name, "snapshot.name")) {
            error_report("Invalid parameter '%s'", name);
            ok = false;
        }
    }
    qimg_opts_free(kv);
    if (!ok)
        error_report("Failed in parsing snapshot param '%s'", text);
    return ok ? 0 : -1;
}

int cli_load_snapshot(qimg_image *img, const char *param)
{
    int r;
    if (strncmp(param, "snapshot.", 9) == 0) {
        qimg_opts *kv = NULL;
        r = qimg_keyval_parse(&kv, param, NULL);
        if (r == 0)
            r = qimg_snapshot_load_tmp(img, qimg_opts_get(kv, "snapshot.id"),
                                       qimg_opts_get(kv, "snapshot.name"));
        qimg_opts_free(kv);
    } else {
        r = qimg_snapshot_load_tmp_by_id_or_name(img, param);
    }
    if (r < 0)
        error_report("Failed to load snapshot: %s", qimg_last_error());
    return r;
}

/* ---- memory ---- */

static void *check_alloc(void *p)
{
    if (!p) {
        fprintf(stderr, "%s: out of memory\n", prog_name);
        abort();
    }
    return p;
}

char *xstrdup(const char *s) { return check_alloc(strdup(s)); }
void *xcalloc(size_t n, size_t size) { return check_alloc(calloc(n ? n : 1, size ? size : 1)); }
void *xrealloc(void *p, size_t size) { return check_alloc(realloc(p, size ? size : 1)); }

char *xasprintf(const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return check_alloc(n < 0 ? NULL : s);
}

/* ---- progress ---- */

void progress_init(struct progress *p, bool enabled, float min_skip)
{
    p->enabled = enabled;
    p->current = p->last_print = 0;
    p->min_skip = min_skip;
}

/* qemu-img prints a record when the value moved by more than min_skip
 * since the last one, and every time it is 0 or 100. */
void progress_print(struct progress *p, float delta, int max)
{
    float current = max == 0 ? delta : p->current + delta / 100 * (float)max;
    if (current > 100)
        current = 100;
    p->current = current;
    if (current > p->last_print + p->min_skip || current < p->last_print - p->min_skip ||
        current == 0 || current == 100) {
        p->last_print = current;
        if (p->enabled) {
            printf("    (%3.2f/100%%)\r", current);
            fflush(stdout);
        }
    }
}

void progress_end(struct progress *p)
{
    if (p->enabled) {
        printf("\n");
        fflush(stdout);
    }
}

void progress_callback(double percent, void *opaque)
{
    progress_print(opaque, (float)percent, 0);
}

/* ---- help ---- */

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Formats and storage backends in one sorted list, as qemu-img lists its
 * block drivers; as qimg, also the codecs and what this build left out. */
static void print_formats(void)
{
    const char *names[256];
    size_t n = 0;
    for (size_t i = 0; qimg_format_name(i) && n < ARRAY_SIZE(names); i++)
        names[n++] = qimg_format_name(i);
    for (size_t i = 0; qimg_protocol_name(i) && n < ARRAY_SIZE(names); i++)
        names[n++] = qimg_protocol_name(i);
    qsort(names, n, sizeof names[0], compare_names);
    printf("Supported formats:");
    for (size_t i = 0; i < n; i++)
        printf(" %s", names[i]);
    printf("\n");
    if (strcmp(prog_name, "qemu-img") == 0)
        return;
    const char *codecs = qimg_codecs();
    printf("Compression codecs: %s\n", *codecs ? codecs : "none");
    const char *lacking = qimg_features_lacking();
    if (*lacking)
        printf("Built without: %s\n", lacking);
}

void help(void)
{
    printf("%s version %s (compatible with qemu-img 7.2.0)\n"
           "usage: %s [standard options] command [command options]\n"
           "Disk image utility (qimg)\n"
           "\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n"
           "    '-T', '--trace'      [[enable=]<pattern>][,events=<file>][,file=<file>]\n"
           "                         specify tracing options (accepted, ignored)\n",
           prog_name, QIMG_VERSION_STRING, prog_name);
    /* qimg's own options are left out as qemu-img (its --help is compared) */
    if (strcmp(prog_name, "qemu-img") != 0)
        printf("    '--safe'             (any command, or QIMG_SAFE=1) the images are untrusted:\n"
               "                         they may not name files to open (backing files...)\n"
               "                         that the command line did not, and opening one is\n"
               "                         bounded in memory and time\n");
    printf("\n"
           "Command syntax:\n");
    for (const struct command *c = commands; c->name; c++) {
        /* as qemu-img, only qemu-img's commands (its --help is compared) */
        if (cli_command_is_qimg_only(c->name) && strcmp(prog_name, "qemu-img") == 0)
            continue;
        printf("  %s %s\n", c->name, c->synopsis);
    }
    printf("\n"
           "Command parameters:\n"
           "  'filename' names a disk image file\n"
           "  'objectdef' defines an object, usually a secret: secret,id=ID,data=TEXT\n"
           "    or secret,id=ID,file=PATH, used for encryption keys\n"
           "  'fmt' is the image format; it is probed from the file when omitted\n"
           "  'cache' is the host cache mode for writing: 'none', 'writeback' (the\n"
           "    default, except for convert), 'writethrough', 'directsync' or 'unsafe'\n"
           "    (the default for convert)\n"
           "  'src_cache' is the cache mode for reading, with the same values\n"
           "  'size' is a size in bytes; suffixes 'k' or 'K' (1024), 'M' (1024k),\n"
           "    'G' (1024M), 'T' (1024G), 'P' (1024T) and 'E' (1024P) are accepted,\n"
           "    'b' means bytes\n"
           "  'output_filename' is the image to write\n"
           "  'output_fmt' is the format of the image to write\n"
           "  'options' is a comma-separated list of name=value format options;\n"
           "    '-o help' lists those of a format\n"
           "  'snapshot_param' selects an internal snapshot: 'snapshot.id=[ID],\n"
           "    snapshot.name=[NAME]' or '[ID_OR_NAME]'\n"
           "  '-c' compresses the target image (formats that support it)\n"
           "  '-u' skips opening the backing file: for rebase, the old and new backing\n"
           "       files are taken to be identical; for create, the backing file need\n"
           "       not exist\n"
           "  '-h' with or without a command shows this help and the formats\n"
           "  '-p' shows progress\n"
           "  '-q' quiet mode: print nothing but errors\n"
           "  '-S' is the number of consecutive zero bytes (default 4k) that convert\n"
           "       turns into a hole; 0 writes every byte and allocates the whole target\n"
           "  '--output' selects 'human' or 'json' output\n"
           "  '-n' uses an existing target instead of creating it\n"
           "\n"
           "Parameters to check subcommand:\n"
           "  '-r' repairs what the check finds: '-r leaks' only leaked clusters,\n"
           "       '-r all' every kind of error\n"
           "\n"
           "Parameters to convert subcommand:\n"
           "  '--bitmaps' copies the persistent bitmaps of the source\n"
           "  '-m' is the number of parallel workers (default 8)\n"
           "  '-W' lets writes reach the target out of order\n"
           "\n"
           "Parameters to dd subcommand:\n"
           "  'bs=BYTES' block size (default: 512)\n"
           "  'count=N' copy N blocks (counted after skip, as dd(1) does)\n"
           "  'if=FILE' input\n"
           "  'of=FILE' output\n"
           "  'skip=N' skip N blocks of input\n"
           "\n");
    print_formats();
    exit(0);
}
