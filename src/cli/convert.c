/* qimg - the convert command: copy one or more (concatenated) images into
 * a new or existing target, as qemu-img 7.2 convert does.
 *
 * Checks and messages follow qemu-img's order (observed): option values
 * while parsing, then option combinations, then the sources are opened,
 * then the target format and options are checked, the target is created
 * (under a temporary name, see create_target), opened and filled.
 *
 * Differences from qemu-img (deliberate):
 *  - a new target is written under a temporary name in the same directory
 *    and renamed into place only when the copy succeeded: a failed or
 *    killed convert never leaves a target that looks complete, and a
 *    failure after the creation (e.g. a bad -t value) leaves nothing;
 *  - the copy uses -m threads and skips ranges the target already reads as
 *    zeros, so the output is at least as sparse as qemu-img's.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* ---- options ---- */

struct convert_opts {
    const char *fmt, *out_fmt, *backing, *backing_fmt, *snapshot;
    const char *diff_base;         /* -D (qimg): write only what differs from it */
    const char *from_snapshot;     /* --from-snapshot (qimg): -D reads only what changed since */
    const char *cache, *src_cache;
    char *options;                 /* the -o texts joined with ',' */
    bool compress, copy_range, progress, quiet, skip_create, out_of_order;
    bool force_share, image_opts, target_image_opts, salvage, target_is_zero;
    bool bitmaps, skip_broken_bitmaps, explicit_sparse;
    int64_t sparse_size, rate_limit, coroutines;
};

enum { OPT_TARGET_IMAGE_OPTS = CLI_OPT_COMMAND, OPT_SALVAGE, OPT_TARGET_IS_ZERO, OPT_BITMAPS, OPT_SKIP_BROKEN,
       OPT_FROM_SNAPSHOT };

static void parse_sparse(struct convert_opts *o, const char *arg)
{
    int64_t v;
    if (cli_cvtnum("buffer size for sparse output", arg, 0, INT64_MAX, &v) < 0)
        exit(1);
    if (v % 512 || v > 16 * 1024 * 1024) {
        error_report("Invalid buffer size for sparse output specified. Valid sizes are "
                     "multiples of 512 up to 16777216. Select 0 to disable sparse detection "
                     "(fully allocates output).");
        exit(1);
    }
    o->sparse_size = v;
    o->explicit_sparse = true;
}

static void parse_coroutines(struct convert_opts *o, const char *arg)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 0);
    if (errno || end == arg || *end || v < 1 || v > 16) {
        error_report("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
        exit(1);
    }
    o->coroutines = v;
}

static void parse_args(int argc, char **argv, struct convert_opts *o)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        CLI_LONGOPT_OBJECT,
        CLI_LONGOPT_IMAGE_OPTS,
        CLI_LONGOPT_FORCE_SHARE,
        { "target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS },
        { "salvage", no_argument, NULL, OPT_SALVAGE },
        { "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
        { "bitmaps", no_argument, NULL, OPT_BITMAPS },
        { "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
        { "from-snapshot", required_argument, NULL, OPT_FROM_SNAPSHOT },
        CLI_LONGOPT_END,
    };
    int c;
    while ((c = cli_getopt(argc, argv, ":hf:O:B:CcD:F:o:l:S:pt:T:qnm:WUr:", longopts)) != -1) {
        switch (c) {
        case 'f': o->fmt = optarg; break;
        case 'O': o->out_fmt = optarg; break;
        case 'B': o->backing = optarg; break;
        case 'D': o->diff_base = optarg; break;
        case 'F': o->backing_fmt = optarg; break;
        case 'C': o->copy_range = true; break;
        case 'c': o->compress = true; break;
        case 'o': cli_accumulate_options(&o->options, optarg); break;
        case 'l':
            if (cli_check_snapshot_param(optarg) < 0)
                exit(1);
            o->snapshot = optarg;
            break;
        case 'S': parse_sparse(o, optarg); break;
        case 'p': o->progress = true; break;
        case 't': o->cache = optarg; break;
        case 'T': o->src_cache = optarg; break;
        case 'q': o->quiet = true; break;
        case 'n': o->skip_create = true; break;
        case 'm': parse_coroutines(o, optarg); break;
        case 'W': o->out_of_order = true; break;
        case 'U': o->force_share = true; break;
        case 'r':
            if (cli_cvtnum("rate limit", optarg, 0, INT64_MAX, &o->rate_limit) < 0)
                exit(1);
            break;
        case OPT_TARGET_IMAGE_OPTS: o->target_image_opts = true; break;
        case OPT_SALVAGE: o->salvage = true; break;
        case OPT_TARGET_IS_ZERO: o->target_is_zero = true; break;
        case OPT_BITMAPS: o->bitmaps = true; break;
        case OPT_SKIP_BROKEN: o->skip_broken_bitmaps = true; break;
        case OPT_FROM_SNAPSHOT: o->from_snapshot = optarg; break;
        default: cli_common_option(c, &o->image_opts); break;
        }
    }
}

/* Option combinations qemu-img refuses before opening anything. */
static void check_combinations(const struct convert_opts *o)
{
    const char *msg = NULL;
    if (o->skip_broken_bitmaps && !o->bitmaps)
        msg = "Use of --skip-broken-bitmaps requires --bitmaps";
    else if (o->compress && o->copy_range)
        msg = "Cannot enable copy offloading when -c is used";
    else if (o->explicit_sparse && o->copy_range)
        msg = "Cannot enable copy offloading when -S is used";
    else if (o->copy_range && o->salvage)
        msg = "Cannot use copy offloading in salvaging mode";
    else if (o->target_image_opts && !o->skip_create)
        msg = "--target-image-opts requires use of -n flag";
    else if (o->skip_create && o->options)
        msg = "-o has no effect when skipping image creation";
    else if (o->target_is_zero && !o->skip_create)
        msg = "--target-is-zero requires use of -n flag";
    else if (o->diff_base && o->backing)
        msg = "-B and -D cannot be used together";
    else if (o->diff_base && o->skip_create)
        msg = "-D creates the target: it cannot be used with -n";
    else if (o->diff_base && o->bitmaps)
        msg = "-D cannot be used with --bitmaps";
    else if (o->from_snapshot && !o->diff_base)
        msg = "--from-snapshot needs -D (the backup made from that snapshot)";
    if (msg) {
        error_report("%s", msg);
        exit(1);
    }
}

/* ---- the target ---- */

static int commit_target(qimg_target *t)
{
    if (qimg_target_commit(t) < 0) {
        error_report("%s", qimg_last_error());
        qimg_target_discard(t);
        return -1;
    }
    return 0;
}

/* ---- the command ---- */

struct sources {
    qimg_image **img;
    size_t n;
    uint64_t total;
};

static void close_sources(struct sources *s)
{
    for (size_t i = 0; i < s->n; i++)
        qimg_close(s->img[i]);
    free(s->img);
}

static int open_sources(struct sources *s, char **names, size_t n, const struct convert_opts *o,
                        unsigned flags)
{
    s->img = xcalloc(n, sizeof *s->img);
    for (size_t i = 0; i < n; i++) {
        s->img[i] = cli_open(names[i], o->fmt, flags, o->image_opts);
        if (!s->img[i])
            return -1;
        s->n++;
        uint64_t size = qimg_size(s->img[i]);
        size = (size + 511) & ~(uint64_t)511;
        if (__builtin_add_overflow(s->total, size, &s->total)) {
            error_report("Image size is too large");
            return -1;
        }
    }
    return 0;
}

static int check_target_format(const struct convert_opts *o, const char *out_name)
{
    bool protocol = qimg_protocol_creatable(o->out_fmt);
    if (!qimg_format_known(o->out_fmt) && !protocol && !qimg_storage_cannot_create(o->out_fmt)) {
        error_report("Unknown file format '%s'", o->out_fmt);
        return -1;
    }
    if (!protocol && !qimg_format_supports(o->out_fmt, QIMG_CAP_CREATE)) {
        error_report("Format driver '%s' does not support image creation", o->out_fmt);
        return -1;
    }
    if (qimg_create_name_check(out_name) < 0) {
        error_report("%s", qimg_last_error());
        return -1;
    }
    return 0;
}

/* A backing file for the target (-B or -o backing_file; with -n only -B
 * counts, as in qemu-img): one source only, and a new target must be told
 * the backing file's format (-F or -o backing_format): qemu-img 7.2 does
 * not probe it. */
static int check_target_backing(const struct convert_opts *o, const qimg_opts *opts, int nsrc)
{
    const char *option = opts ? qimg_opts_get(opts, "backing_file") : NULL;
    if (nsrc > 1 && (o->backing || option)) {
        error_report("Having a backing file for the target makes no sense when concatenating "
                     "multiple input images");
        return -1;
    }
    bool has_fmt = o->backing_fmt || (opts && qimg_opts_get(opts, "backing_fmt"));
    if (!o->skip_create && (o->backing || option) && !has_fmt) {
        error_report("Use of backing file requires explicit backing format");
        return -1;
    }
    return 0;
}

/* -o values and the format's abilities, checked before creating. */
static int check_create_options(const struct convert_opts *o, qimg_opts **opts, int nsrc)
{
    if (o->options && (qimg_opts_parse(opts, o->options) < 0 ||
                       qimg_create_opts_validate(o->out_fmt, *opts) < 0)) {
        error_report("%s", qimg_last_error());
        return -1;
    }
    bool has_backing = o->backing || (*opts && qimg_opts_get(*opts, "backing_file"));
    if (has_backing && !qimg_format_supports(o->out_fmt, QIMG_CAP_BACKING)) {
        error_report("Backing file not supported for file format '%s'", o->out_fmt);
        return -1;
    }
    if (check_target_backing(o, *opts, nsrc) < 0)
        return -1;
    if (o->compress && !qimg_format_supports(o->out_fmt, QIMG_CAP_COMPRESS)) {
        error_report("Compression not supported for this file format");
        return -1;
    }
    if (o->compress && *opts) {
        const char *enc = qimg_opts_get(*opts, "encryption");
        const char *prealloc = qimg_opts_get(*opts, "preallocation");
        bool encryption = enc && (!strcmp(enc, "on") || !strcmp(enc, "yes") || !strcmp(enc, "true"));
        if (encryption || qimg_opts_get(*opts, "encrypt.format")) {
            error_report("Compression and encryption not supported at the same time");
            return -1;
        }
        if (prealloc && strcmp(prealloc, "off")) {
            error_report("Compression and preallocation not supported at the same time");
            return -1;
        }
    }
    return 0;
}

static int create_target(qimg_target *t, const char *name, const struct convert_opts *o,
                         uint64_t size, const qimg_opts *opts)
{
    struct qimg_create_params cp = {
        .filename = qimg_target_path(t), .fmt = o->out_fmt,
        .size = size, .has_size = !(opts && qimg_opts_get(opts, "size")),
        .backing_file = o->backing, .backing_fmt = o->backing_fmt,
        .opts = opts, .quiet = true,
    };
    int r = qimg_target_lock(t);
    if (r == 0)
        r = qimg_create(&cp);
    if (r < 0) {
        CLEANUP_FREE char *msg = qimg_target_message(t, qimg_last_error());
        error_report("%s: error while converting %s: %s", name, o->out_fmt, msg);
        qimg_target_discard(t);
        return -1;
    }
    return 0;
}

/* key=value text with qemu's ",," escape for commas */
static char *escape_commas(const char *v)
{
    size_t n = strlen(v), extra = 0;
    for (size_t i = 0; i < n; i++)
        extra += v[i] == ',';
    char *out = xcalloc(1, n + extra + 1), *p = out;
    for (size_t i = 0; i < n; i++) {
        *p++ = v[i];
        if (v[i] == ',')
            *p++ = ',';
    }
    *p = '\0';
    return out;
}

/* As qemu-img: the -o options naming secrets (key-secret,
 * encrypt.key-secret) are also the new target's open options, so an
 * encrypted target can be opened to be written.  NULL when there are none. */
static char *target_secret_opts(const char *path, const char *fmt, const qimg_opts *opts)
{
    char *text = NULL;
    size_t n = opts ? qimg_opts_count(opts) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *key = qimg_opts_name(opts, i);
        size_t len = strlen(key);
        if (len < 10 || strcmp(key + len - 10, "key-secret") != 0)
            continue;
        CLEANUP_FREE char *value = escape_commas(qimg_opts_value(opts, i));
        char *more;
        if (!text) {
            CLEANUP_FREE char *file = escape_commas(path);
            more = xasprintf("driver=%s,file.filename=%s,%s=%s", fmt, file, key, value);
        } else {
            more = xasprintf("%s,%s=%s", text, key, value);
        }
        free(text);
        text = more;
    }
    return text;
}

static qimg_image *open_target(qimg_target *t, const char *name, const struct convert_opts *o,
                               const qimg_opts *opts, unsigned flags)
{
    qimg_image *img;
    int r;
    CLEANUP_FREE char *secrets = o->target_image_opts ? NULL :
                                 target_secret_opts(qimg_target_path(t), o->out_fmt, opts);
    if (o->target_image_opts)
        r = qimg_open_opts(&img, name, flags);
    else if (secrets)
        r = qimg_open_opts(&img, secrets, flags);
    else
        r = qimg_open(&img, qimg_target_path(t), o->out_fmt, flags);
    if (r < 0) {
        CLEANUP_FREE char *msg = qimg_target_message(t, qimg_last_error());
        error_report("Could not open '%s': %s", name, msg);
        return NULL;
    }
    return img;
}

static int do_convert(struct sources *s, qimg_image *target, const struct convert_opts *o,
                      bool fresh, bool temporary)
{
    struct progress prog;
    /* as qemu-img: only a backing file this command gives the target (-B,
     * or -o backing_file for a new one) lets it leave ranges to it; an
     * existing target's own backing file (-n) is written over, zeros too,
     * so the target reads as the source */
    bool target_backing = o->backing ||
                          (fresh && (qimg_backing(target) || qimg_backing_filename(target) != NULL));
    bool zero_init = o->target_is_zero ||
                     (fresh && !target_backing && qimg_image_has_zero_init(target));
    struct qimg_convert_params p = {
        .sources = s->img, .nsources = s->n, .target = target,
        .sparse_size = (uint64_t)o->sparse_size, .has_sparse_size = o->explicit_sparse,
        .coroutines = (unsigned)o->coroutines, .out_of_order = o->out_of_order,
        .target_is_zero = zero_init, .target_has_backing = target_backing,
        .copy_range = o->copy_range, .rate_limit = (uint64_t)o->rate_limit,
        .compress = o->compress, .diff = o->diff_base != NULL,
        .salvage = o->salvage, .quiet = o->quiet, .diff_since = o->from_snapshot,
        .target_discarded_on_failure = temporary,
        .progress = o->progress ? progress_callback : NULL, .progress_opaque = &prog,
    };
    progress_init(&prog, o->progress, 1.0f);
    progress_print(&prog, 0, 100);
    int r = qimg_convert(&p);
    if (r < 0) {
        error_report("%s", qimg_last_error());
        return -1;
    }
    /* qemu-img ends with one more 100% record and a newline */
    progress_print(&prog, 100, 0);
    progress_end(&prog);
    return 0;
}

/* ---- --bitmaps ---- */

/* Before anything is created: the source must hold bitmaps, and an
 * inconsistent one stops the copy unless it is to be skipped.  qemu goes
 * through the bitmaps from the last in the image's directory to the
 * first (qemu-iotests qemu-img-bitmaps). */
static int check_source_bitmaps(qimg_image *src, bool skip_broken)
{
    if (!qimg_bitmap_supported(src)) {
        error_report("Source lacks bitmap support");
        return -1;
    }
    struct qimg_bitmap_info *list;
    size_t n;
    if (qimg_bitmap_list(src, &list, &n) < 0) {
        error_report("%s", qimg_last_error());
        return -1;
    }
    int r = 0;
    for (size_t i = n; i-- > 0 && r == 0;) {
        if (!list[i].in_use)
            continue;
        if (skip_broken) {
            error_report("warning: Skipping inconsistent bitmap '%s'", list[i].name);
        } else {
            error_report("Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, or "
                         "use 'qemu-img bitmap --remove' to delete it", list[i].name);
            r = -1;
        }
    }
    qimg_bitmap_list_free(list, n);
    return r;
}

static bool has_bitmap(const struct qimg_bitmap_info *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            return true;
    return false;
}

/* One bitmap: same name, granularity, contents and enabled state. */
static int copy_bitmap(qimg_image *src, qimg_image *dst, const struct qimg_bitmap_info *b)
{
    if (qimg_bitmap_add(dst, b->name, b->granularity) < 0) {
        error_report("Failed to create bitmap %s: %s", b->name, qimg_last_error());
        return -1;
    }
    if (qimg_bitmap_merge(dst, b->name, src, b->name) < 0 ||
        (!b->enabled && qimg_bitmap_set_enabled(dst, b->name, false) < 0)) {
        error_report("Failed to populate bitmap %s: %s", b->name, qimg_last_error());
        return -1;
    }
    return 0;
}

/* After the data: the consistent bitmaps of the source, in its order.
 * qemu takes the source's bitmaps from the last one and stops at the
 * first name the target has already: those after it are copied, then
 * the error. */
static int copy_bitmaps(qimg_image *src, qimg_image *dst, bool skip_broken)
{
    struct qimg_bitmap_info *list, *have;
    size_t n, nhave;
    if (qimg_bitmap_list(src, &list, &n) < 0) {
        error_report("%s", qimg_last_error());
        return -1;
    }
    if (qimg_bitmap_list(dst, &have, &nhave) < 0) {
        qimg_bitmap_list_free(list, n);
        error_report("%s", qimg_last_error());
        return -1;
    }
    size_t first = 0;
    bool clash = false;
    for (size_t i = n; i-- > 0 && !clash;) {
        if (list[i].in_use && skip_broken)
            continue;
        if (has_bitmap(have, nhave, list[i].name)) {
            clash = true;
            first = i + 1;
        }
    }
    int r = 0;
    for (size_t i = first; i < n && r == 0; i++)
        if (!list[i].in_use || !skip_broken)
            r = copy_bitmap(src, dst, &list[i]);
    if (r == 0 && clash) {
        error_report("Failed to create bitmap %s: Bitmap already exists: %s", list[first - 1].name,
                     list[first - 1].name);
        r = -1;
    }
    qimg_bitmap_list_free(list, n);
    qimg_bitmap_list_free(have, nhave);
    return r;
}

/* -D BASE: the target is created with BASE as its backing file.  Without
 * -F the base's format is probed (opened as the target will open it:
 * a relative name from the target's directory) and recorded. */
static int diff_base_format(struct convert_opts *o, const char *out_name)
{
    o->backing = o->diff_base;
    if (o->backing_fmt)
        return 0;
    CLEANUP_FREE char *path = qimg_path_combine(out_name, o->diff_base);
    qimg_image *base;
    if (qimg_open(&base, path, NULL, QIMG_OPEN_NO_BACKING | QIMG_OPEN_NO_IO |
                  QIMG_OPEN_FORCE_SHARE | QIMG_OPEN_NO_PROBE_WARNING) < 0) {
        error_report("Could not open backing file '%s': %s", o->diff_base, qimg_last_error());
        return -1;
    }
    static char fmt[32];
    snprintf(fmt, sizeof fmt, "%s", qimg_format(base));
    qimg_close(base);
    o->backing_fmt = fmt;
    return 0;
}

int cmd_convert(int argc, char **argv)
{
    struct convert_opts o = { .sparse_size = 4096, .coroutines = 8 };
    parse_args(argc, argv, &o);
    if (!o.out_fmt && !o.target_image_opts)
        o.out_fmt = "raw";
    if (o.quiet)
        o.progress = false;
    check_combinations(&o);
    int nsrc = argc - optind - 1;
    /* qemu lists the protocol's options too when a target name is given */
    if (o.options && cli_has_help_option(o.options))
        return cli_print_create_help(o.out_fmt ? o.out_fmt : "raw",
                                     nsrc >= 1 ? argv[argc - 1] : NULL);
    if (nsrc < 1) {
        error_report("Must specify image file name");
        return 1;
    }
    if (nsrc > 1 && o.diff_base) {
        error_report("Only one source file supported with -D");
        return 1;
    }
    if (o.diff_base && diff_base_format(&o, argv[argc - 1]) < 0)
        return 1;
    if (nsrc > 1 && o.bitmaps) {
        error_report("Only one source file supported with --bitmaps");
        return 1;
    }

    unsigned src_flags = QIMG_OPEN_NO_PROBE_WARNING;
    /* each source byte is read once: keep it out of the page cache, unless
     * -T names a cache mode (then exactly that, as qemu-img) or convert -D
     * reads both images with its own read-ahead */
    if (!o.diff_base && !o.src_cache)
        src_flags |= QIMG_OPEN_STREAM;
    if (o.force_share)
        src_flags |= QIMG_OPEN_FORCE_SHARE;
    else
        src_flags |= QIMG_OPEN_NO_SHARE;     /* qemu-img's sources refuse writers */
    if (parse_cache_mode(o.src_cache ? o.src_cache : "writeback", &src_flags) < 0) {
        error_report("Invalid source cache option: %s", o.src_cache);
        return 1;
    }

    struct sources s = { 0 };
    qimg_target *t = NULL;
    qimg_opts *opts = NULL;
    qimg_image *target = NULL;
    int ret = 1;
    if (open_sources(&s, argv + optind, (size_t)nsrc, &o, src_flags) < 0)
        goto out;
    if (o.bitmaps && check_source_bitmaps(s.img[0], o.skip_broken_bitmaps) < 0)
        goto out;
    if (o.snapshot && nsrc > 1 && strncmp(o.snapshot, "snapshot.", 9) != 0) {
        error_report("No support for concatenating multiple snapshot");
        goto out;
    }
    if (o.snapshot && cli_load_snapshot(s.img[0], o.snapshot) < 0)
        goto out;

    const char *out_name = argv[argc - 1];
    if (o.out_fmt && !o.backing_fmt && qimg_format_supports(o.out_fmt, QIMG_CAP_RAW_BACKING))
        o.backing_fmt = "raw";   /* the only backing such a target has (UML cow) */
    /* -n writes the existing target in place, and so does a format whose
     * files are named after the image (vmdk's extents) */
    t = qimg_target_new(out_name, o.skip_create ||
                        (o.out_fmt && qimg_format_supports(o.out_fmt, QIMG_CAP_MANY_FILES)));
    if (!o.skip_create) {
        if (check_target_format(&o, out_name) < 0 || check_create_options(&o, &opts, nsrc) < 0)
            goto out;
        if (opts && qimg_opts_get(opts, "size")) {
            /* as qemu-img: the sources' size replaces a -o size= */
            char size[32];
            snprintf(size, sizeof size, "%" PRIu64, s.total);
            qimg_opts_set(&opts, "size", size);
        }
        if (create_target(t, out_name, &o, s.total, opts) < 0)
            goto out;
    } else if (o.target_is_zero && o.backing) {
        /* before the other checks of -B, and with status 0, as qemu-img 7.2 */
        error_report("Cannot use --target-is-zero when the destination image has a backing file");
        ret = 0;
        goto out;
    } else if (check_target_backing(&o, NULL, nsrc) < 0) {
        goto out;
    }

    unsigned tgt_flags = QIMG_OPEN_RDWR | QIMG_OPEN_NO_PROBE_WARNING | QIMG_OPEN_NO_BACKING |
                         QIMG_OPEN_UNMAP;
    if (parse_cache_mode(o.cache ? o.cache : "unsafe", &tgt_flags) < 0) {
        error_report("Invalid cache option: %s", o.cache);
        qimg_target_discard(t);
        goto out;
    }
    /* written once, front to back: storage with a write cache of its own
     * (librbd's) goes around it, unless -t names a cache mode */
    if (!o.cache)
        tgt_flags |= QIMG_OPEN_STREAM;
    target = open_target(t, out_name, &o, o.skip_create ? NULL : opts, tgt_flags);
    if (!target) {
        qimg_target_discard(t);
        goto out;
    }
    if (o.bitmaps && !qimg_bitmap_supported(target)) {
        /* qemu-img leaves the new target behind */
        error_report("Format driver '%s' does not support bitmaps", qimg_format(target));
        qimg_close(target);
        target = NULL;
        commit_target(t);
        goto out;
    }
    bool target_backing = o.backing || qimg_backing_filename(target);
    /* partial clusters written into the target copy the rest from its
     * backing file, as qemu-img does: open the chain when it is there.
     * qemu-img opens the target with its backing file and fails when that
     * cannot be opened (missing, or encrypted: no secret can be given for
     * it), leaving a new target behind */
    if (qimg_backing_filename(target) && !qimg_backing(target) &&
        qimg_open_backing_chain(target) < 0) {
        error_report("Could not open '%s': %s", out_name,
                     qimg_last_error());
        qimg_close(target);
        target = NULL;
        commit_target(t);
        goto out;
    }
    if (o.target_is_zero && target_backing) {
        /* qemu-img 7.2 reports this and exits with status 0 */
        error_report("Cannot use --target-is-zero when the destination image has a backing file");
        ret = 0;
        goto out;
    }
    if (o.skip_create && qimg_size(target) < s.total) {
        error_report("output file is smaller than input file");
        goto out;
    }
    if (do_convert(&s, target, &o, !o.skip_create, strcmp(qimg_target_path(t), out_name) != 0) < 0) {
        qimg_target_discard(t);
        goto out;
    }
    bool bitmaps_failed = o.bitmaps && copy_bitmaps(s.img[0], target, o.skip_broken_bitmaps) < 0;
    int r = qimg_close(target);
    target = NULL;
    if (r < 0) {
        error_report("%s", qimg_last_error());
        qimg_target_discard(t);
        goto out;
    }
    ret = commit_target(t) < 0 || bitmaps_failed ? 1 : 0;
out:
    if (target && qimg_close(target) < 0 && ret == 0)
        ret = 1;
    if (ret && target)
        qimg_target_discard(t);
    close_sources(&s);
    qimg_opts_free(opts);
    free(o.options);
    qimg_target_free(t);
    return ret;
}
