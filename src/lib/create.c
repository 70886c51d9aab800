/* qimg - image creation: option lists, the "Formatting ..." line, backing
 * file checks, and atomic creation (temporary name, rename when done).
 *
 * Behaviour observed with qemu-img 7.2:
 *  - the options a format accepts are its own create options followed by
 *    those of the file protocol that it does not define itself (size,
 *    nocow, preallocation, extent_size_hint), in that order;
 *  - "-o help" lists them sorted by name; without a filename only the
 *    format's own options are listed, with a note about the protocol;
 *  - the "Formatting" line prints every option that has a value, or a
 *    default, in list order; sizes and numbers as signed 64-bit values;
 *  - errors before the "Formatting" line: unknown/badly typed options,
 *    size given twice, backing file problems, missing size; after it:
 *    what the driver and the protocol refuse.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "internal.h"

#define MAX_OPTS 64
#define SECTOR 512

/* Options of the "file" protocol that qemu merges into every format's. */
static const struct qimg_opt_desc file_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "nocow", QIMG_OPT_BOOL, "Turn off copy-on-write (valid only on btrfs)", NULL },
    { "preallocation", QIMG_OPT_STRING, "Preallocation mode (allowed values: off, falloc, full)", NULL },
    { "extent_size_hint", QIMG_OPT_SIZE, "Extent size hint for the image file, 0 to disable", NULL },
    { NULL, 0, NULL, NULL },
};

struct opt_list {
    const struct qimg_opt_desc *v[MAX_OPTS];
    size_t n;
};

static const struct qimg_opt_desc *list_find(const struct opt_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i]->name, name) == 0)
            return l->v[i];
    return NULL;
}

/* Append descs not already in the list (the first definition wins). */
static void list_append(struct opt_list *l, const struct qimg_opt_desc *descs)
{
    for (; descs && descs->name; descs++)
        if (!list_find(l, descs->name) && l->n < MAX_OPTS)
            l->v[l->n++] = descs;
}

static void merged_opts(const struct qimg_driver *drv, bool with_protocol, struct opt_list *l)
{
    l->n = 0;
    list_append(l, drv->create_opts);
    if (with_protocol)
        list_append(l, file_create_opts);
}

/* The same with the options of the protocol the new image's name selects
 * (rbd's cluster_size ...; the file protocol's by default). */
static void merged_opts_for(const struct qimg_driver *drv, const char *filename, struct opt_list *l)
{
    const struct qimg_io_ops *protocol = filename ? qimg_io_protocol(filename) : NULL;
    if (!protocol || !protocol->create_opts) {
        merged_opts(drv, true, l);
        return;
    }
    l->n = 0;
    list_append(l, drv->create_opts);
    list_append(l, protocol->create_opts);
}

static const struct qimg_driver *find_format(const char *fmt)
{
    const struct qimg_driver *drv = qimg_driver_find(fmt);
    if (!drv && qimg_storage_cannot_create(fmt))
        qimg_error(-ENOTSUP, "Format driver '%s' does not support image creation", fmt);
    else if (!drv)
        qimg_error(-EINVAL, "Unknown file format '%s'", fmt);
    return drv;
}

/* ---------------------------------------------------------------- help */

static const char *type_name(enum qimg_opt_type t)
{
    switch (t) {
    case QIMG_OPT_SIZE: return "size";
    case QIMG_OPT_BOOL: return "bool (on/off)";
    case QIMG_OPT_NUMBER: return "num";
    default: return "str";
    }
}

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qemu's option help: "  name=<type>" padded to 24, " - help", the lines
 * sorted. */
static void add_opts_help(struct qimg_strbuf *b, const struct opt_list *l)
{
    char *lines[MAX_OPTS];
    for (size_t i = 0; i < l->n; i++) {
        const struct qimg_opt_desc *d = l->v[i];
        CLEANUP_FREE char *item = qimg_asprintf("  %s=<%s>", d->name, type_name(d->type));
        lines[i] = d->help ? qimg_asprintf("%-24s - %s", item, d->help) : qimg_strdup(item);
    }
    qsort(lines, l->n, sizeof lines[0], by_text);
    for (size_t i = 0; i < l->n; i++) {
        qimg_strbuf_addf(b, "%s\n", lines[i]);
        free(lines[i]);
    }
}

int qimg_create_help(const char *fmt, bool with_protocol, char **out)
{
    struct qimg_strbuf b = { 0 };
    struct opt_list l;
    const struct qimg_driver *drv = find_format(fmt ? fmt : "raw");
    *out = NULL;
    if (!drv)
        return -EINVAL;
    if (!qimg_drv_can(drv, QIMG_CAP_CREATE))
        return qimg_drv_create(drv, NULL);   /* the error */
    merged_opts(drv, with_protocol, &l);
    if (with_protocol)
        qimg_strbuf_add(&b, "Supported options:\n");
    else
        qimg_strbuf_addf(&b, "Supported %s options:\n", drv->name);
    add_opts_help(&b, &l);
    if (!with_protocol)
        qimg_strbuf_add(&b, "\nThe protocol level may support further options.\n"
                            "Specify the target filename to include those options.\n");
    *out = b.s;
    return 0;
}

int qimg_amend_help(const char *fmt, char **out)
{
    struct qimg_strbuf b = { 0 };
    struct opt_list l = { .n = 0 };
    const struct qimg_driver *drv = find_format(fmt);
    *out = NULL;
    if (!drv)
        return -EINVAL;
    if (!qimg_drv_can(drv, QIMG_CAP_AMEND) || !drv->amend_opts)
        return qimg_error(-ENOTSUP, "Format driver '%s' does not support option amendment", fmt);
    list_append(&l, drv->amend_opts);
    qimg_strbuf_addf(&b, "Amend options for '%s':\n", fmt);
    add_opts_help(&b, &l);
    *out = b.s;
    return 0;
}

/* ---------------------------------------------------------- validation */

static int validate_list(const struct opt_list *l, qimg_opts *opts)
{
    for (size_t i = 0; opts && i < opts->n; i++) {
        const char *name = opts->v[i].name;
        const struct qimg_opt_desc *d = list_find(l, name);
        uint64_t u;
        bool b;
        int r = 1;
        if (!d)
            return qimg_error(-EINVAL, "Invalid parameter '%s'", name);
        switch (d->type) {
        case QIMG_OPT_SIZE: r = qimg_opts_get_size(opts, name, &u); break;
        case QIMG_OPT_BOOL: r = qimg_opts_get_bool(opts, name, &b); break;
        case QIMG_OPT_NUMBER: r = qimg_opts_get_number(opts, name, &u); break;
        default: opts->v[i].used = true; break;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int qimg_create_opts_validate(const char *fmt, qimg_opts *opts)
{
    struct opt_list l;
    const struct qimg_driver *drv = find_format(fmt);
    if (!drv)
        return -EINVAL;
    merged_opts(drv, true, &l);
    return validate_list(&l, opts);
}

/* ---------------------------------------------------------------- plan */

/* Everything qemu decides before printing "Formatting ...". */
struct plan {
    const struct qimg_driver *drv;
    const char *protocol_fmt;  /* -f rbd / -f file: raw on that protocol */
    struct opt_list list;
    qimg_opts *opts;          /* -o options plus size/backing, validated */
    uint64_t size;
};

static void plan_free(struct plan *pl)
{
    qimg_opts_free(pl->opts);
    pl->opts = NULL;
}

static void copy_opts(qimg_opts **dst, const qimg_opts *src)
{
    for (size_t i = 0; src && i < src->n; i++)
        qimg_opts_set(dst, src->v[i].name, src->v[i].value);
    if (!*dst)
        qimg_opts_parse(dst, "");   /* an empty list, never NULL */
}

static int set_number(qimg_opts **o, const char *name, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return qimg_opts_set(o, name, buf);
}

/* The size of a missing-size image is its backing file's; opening it also
 * tells the user early that the backing file is unusable. */
static int check_backing(const struct qimg_create_params *p, struct plan *pl,
                         const char *backing, const char *backing_fmt, bool need_size)
{
    CLEANUP_FREE char *path = qimg_path_combine(p->filename, backing);
    qimg_image *b;
    int r = qimg_open(&b, path, backing_fmt,
                      QIMG_OPEN_NO_BACKING | QIMG_OPEN_FORCE_SHARE | QIMG_OPEN_NO_IO);
    if (r < 0) {
        CLEANUP_FREE char *msg = qimg_strdup(qimg_last_error());
        return qimg_error(r, "%s\nCould not open backing image.", msg);
    }
    if (!backing_fmt) {
        r = qimg_error(-EINVAL, "Backing file specified without backing format\n"
                       "Detected format of %s.", qimg_format(b));
    } else if (need_size) {
        pl->size = qimg_size(b);
        set_number(&pl->opts, "size", pl->size);
    }
    qimg_close(b);
    return r;
}

int qimg_create_name_check(const char *filename)
{
    const struct qimg_io_ops *protocol = qimg_io_protocol(filename);
    if (!protocol)
        return -EINVAL;
    if (!protocol->can_create && !protocol->create_by_opening)
        return qimg_error(-ENOTSUP, "Protocol driver '%s' does not support image creation",
                          protocol->name);
    return 0;
}


/* -f PROTOCOL: the name must be the protocol's (its parser's error
 * otherwise, after the "Formatting" line, as qemu). */
static int protocol_name_check(const struct qimg_create_params *p, const struct plan *pl)
{
    const struct qimg_io_ops *protocol = pl->protocol_fmt ? qimg_io_backend_find(pl->protocol_fmt) : NULL;
    if (!protocol || qimg_io_protocol(p->filename) == protocol || !protocol->parse_filename)
        return 0;
    CLEANUP_OPTS qimg_opts *o = NULL;
    int r = protocol->parse_filename(p->filename, o);
    if (r < 0 && protocol->create_by_opening) {   /* qemu tried to open it (nbd) */
        CLEANUP_FREE char *msg = qimg_strdup(qimg_last_error());
        return qimg_error(r, "Protocol driver '%s' does not support image creation, and opening "
                          "the image failed: %s", protocol->name, msg);
    }
    return r < 0 ? r : 0;
}

/* -f PROTOCOL: a raw image that is the protocol's storage object, with
 * the protocol's own create options only. */
static int plan_protocol(const struct qimg_create_params *p, struct plan *pl,
                         const struct qimg_io_ops *protocol)
{
    pl->drv = &qimg_driver_raw;
    pl->protocol_fmt = protocol->name;
    if (!qimg_io_protocol(p->filename))
        return -EINVAL;
    pl->list.n = 0;
    list_append(&pl->list, protocol->create_opts ? protocol->create_opts : file_create_opts);
    copy_opts(&pl->opts, p->opts);
    int r = validate_list(&pl->list, pl->opts);
    if (r < 0)
        return r;
    bool has_size = qimg_opts_get(pl->opts, "size") != NULL;
    if (has_size && p->has_size)
        return qimg_error(-EINVAL, "The image size must be specified only once");
    if (!has_size && p->has_size)
        set_number(&pl->opts, "size", p->size);
    if (p->backing_file)
        return qimg_error(-ENOTSUP, "Backing file not supported for file format '%s'", protocol->name);
    if (p->backing_fmt)
        return qimg_error(-ENOTSUP, "Backing file format not supported for file format '%s'",
                          protocol->name);
    if (qimg_opts_get_size(pl->opts, "size", &pl->size) != 1)
        return qimg_error(-EINVAL, "Image creation needs a size parameter");
    return 0;
}

static int make_plan(const struct qimg_create_params *p, struct plan *pl)
{
    const char *fmt = p->fmt ? p->fmt : "raw";
    uint64_t size = 0;
    int r;
    memset(pl, 0, sizeof *pl);
    const struct qimg_io_ops *protocol = qimg_create_protocol(fmt);
    if (protocol)
        return plan_protocol(p, pl, protocol);
    pl->drv = find_format(fmt);
    if (!pl->drv)
        return -EINVAL;
    if (!qimg_io_protocol(p->filename))
        return -EINVAL;
    if (!qimg_drv_can(pl->drv, QIMG_CAP_CREATE))
        return qimg_drv_create(pl->drv, NULL);   /* the error */
    r = qimg_create_name_check(p->filename);
    if (r < 0)
        return r;
    merged_opts_for(pl->drv, p->filename, &pl->list);
    copy_opts(&pl->opts, p->opts);
    r = validate_list(&pl->list, pl->opts);
    if (r < 0)
        return r;

    bool has_size = qimg_opts_get(pl->opts, "size") != NULL;
    if (has_size && p->has_size)
        return qimg_error(-EINVAL, "The image size must be specified only once");
    if (!has_size && p->has_size)
        set_number(&pl->opts, "size", p->size);

    if (p->backing_file) {
        if (!list_find(&pl->list, "backing_file"))
            return qimg_error(-ENOTSUP, "Backing file not supported for file format '%s'", fmt);
        qimg_opts_set(&pl->opts, "backing_file", p->backing_file);
    }
    if (p->backing_fmt) {
        if (!list_find(&pl->list, "backing_fmt"))
            return qimg_error(-ENOTSUP, "Backing file format not supported for file format '%s'", fmt);
        qimg_opts_set(&pl->opts, "backing_fmt", p->backing_fmt);
    }
    const char *backing = qimg_opts_get(pl->opts, "backing_file");
    if (backing && (pl->drv->flags & QIMG_DRV_RAW_BACKING) && !qimg_opts_get(pl->opts, "backing_fmt"))
        qimg_opts_set(&pl->opts, "backing_fmt", "raw");
    const char *backing_fmt = qimg_opts_get(pl->opts, "backing_fmt");
    if (backing && strcmp(backing, p->filename) == 0)
        return qimg_error(-EINVAL, "Error: Trying to create an image with the same filename as the backing file");
    if (backing && !backing[0])
        return qimg_error(-EINVAL, "Expected backing file name, got empty string");

    has_size = qimg_opts_get_size(pl->opts, "size", &size) == 1;
    pl->size = size;
    if (backing && !p->no_open_backing) {
        r = check_backing(p, pl, backing, backing_fmt, !has_size);
        if (r < 0)
            return r;
        has_size = true;
    } else if (backing && !backing_fmt) {
        return qimg_error(-EINVAL, "Backing file specified without backing format");
    }
    if (!has_size)
        return qimg_error(-EINVAL, "Image creation needs a size parameter");
    return 0;
}

/* " name=value" with each comma of the value doubled, as qemu prints an
 * option list (so that the line reads back as one). */
static void add_escaped(struct qimg_strbuf *b, const char *name, const char *value)
{
    qimg_strbuf_addf(b, " %s=", name);
    for (const char *c = value; *c; c++)
        qimg_strbuf_add(b, *c == ',' ? ",," : (char[]){ *c, 0 });
}

static char *describe(const struct qimg_create_params *p, struct plan *pl)
{
    struct qimg_strbuf b = { 0 };
    qimg_strbuf_addf(&b, "Formatting '%s', fmt=%s", p->filename,
                     pl->protocol_fmt ? pl->protocol_fmt : pl->drv->name);
    for (size_t i = 0; i < pl->list.n; i++) {
        const struct qimg_opt_desc *d = pl->list.v[i];
        const char *v = qimg_opts_get(pl->opts, d->name);
        uint64_t u = 0;
        if (!v) {
            if (d->def_value)
                qimg_strbuf_addf(&b, " %s=%s", d->name, d->def_value);
            continue;
        }
        if (d->type == QIMG_OPT_SIZE && qimg_parse_size(v, &u) == 0)
            qimg_strbuf_addf(&b, " %s=%" PRId64, d->name, (int64_t)u);
        else if (d->type == QIMG_OPT_NUMBER && qimg_opts_get_number(pl->opts, d->name, &u) == 1)
            qimg_strbuf_addf(&b, " %s=%" PRId64, d->name, (int64_t)u);
        else
            add_escaped(&b, d->name, v);
    }
    return b.s;
}

char *qimg_create_describe(const struct qimg_create_params *p)
{
    struct plan pl;
    char *text = NULL;
    if (make_plan(p, &pl) == 0)
        text = describe(p, &pl);
    plan_free(&pl);
    return text;
}

/* ------------------------------------------------------------- creation */

/* What the file protocol checks when it creates the file. */
static int check_protocol_opts(struct plan *pl, const char *prealloc, uint64_t *file_size)
{
    uint64_t hint = 0;
    if (strcmp(prealloc, "off") && strcmp(prealloc, "falloc") && strcmp(prealloc, "full"))
        return qimg_error(-EINVAL, "invalid parameter value: %s", prealloc);
    if (qimg_opts_get_size(pl->opts, "extent_size_hint", &hint) == 1 && hint > UINT32_MAX)
        return qimg_error(-EINVAL, "Extent size hint is too large");
    /* the protocol works in whole sectors; past 2^63 ftruncate refuses */
    if (!qimg_round_up_ok(pl->size, SECTOR, file_size) || *file_size > INT64_MAX)
        return qimg_error(-EINVAL, "Could not resize file: Invalid argument");
    return 0;
}

/* qemu's create on a protocol that cannot make storage (nbd): open what is
 * there, which must hold the new image's size, and zero its first sector
 * so that no old header is left to probe. */
static int create_by_opening(const char *filename, uint64_t size, const char *prealloc)
{
    if (strcmp(prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    struct qimg_io *io;
    int r = qimg_io_open(&io, filename, QIMG_IO_RDWR | QIMG_IO_CREATE);
    if (r < 0) {
        CLEANUP_FREE char *msg = qimg_strdup(qimg_last_error());
        return qimg_error(r, "Protocol driver '%s' does not support image creation, and opening "
                          "the image failed: %s", qimg_io_protocol(filename)->name, msg);
    }
    uint64_t have;
    r = qimg_io_truncate(io, size);
    if (r == 0)
        r = qimg_io_get_size(io, &have);
    if (r == 0 && have > 0)
        r = qimg_io_zero(io, 0, QIMG_MIN(have, (uint64_t)SECTOR), true);
    if (r == 0)
        r = qimg_io_flush(io);      /* qemu's close flushes the node */
    qimg_io_close(io);
    return r;
}

/* Fail now, as qemu does, when another process uses the image we would
 * replace; the lock is held until the new file is in place. */
int qimg_lock_existing(const char *target, struct qimg_io **io)
{
    struct stat st;
    *io = NULL;
    if (stat(target, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    int r = qimg_io_open(io, target, QIMG_IO_RDWR);
    if (r < 0) {
        *io = NULL;
        return 0;   /* unreadable: creating the new file will report it */
    }
    r = qimg_io_lock(*io, QIMG_PERM_WRITE | QIMG_PERM_RESIZE, QIMG_PERM_RESIZE);
    if (r < 0) {
        qimg_io_close(*io);
        *io = NULL;
    }
    return r;
}

/* A temporary file next to target, with the mode a new file would get (or
 * the existing file's).  Returns NULL when creating in place is better
 * (target is a device or a dangling link, or the directory is not ours). */
static char *make_temp(const char *target, bool nocow)
{
    struct stat st;
    mode_t mode;
    if (lstat(target, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return NULL;
        mode = st.st_mode & 07777;
    } else {
        mode_t mask = umask(0);
        umask(mask);
        mode = 0644 & ~mask;
    }
    CLEANUP_FREE char *dir = qimg_path_dirname(target);
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    char *tmp = qimg_asprintf("%s/.%s.qimg-XXXXXX", dir, base);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(tmp);
        return NULL;
    }
    if (fchmod(fd, mode) < 0) { /* keep the 0600 of mkstemp */ }
    if (nocow) {
        /* as qemu: best effort, only btrfs knows the flag */
        int attr = 0;
        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
            attr |= FS_NOCOW_FL;
            if (ioctl(fd, FS_IOC_SETFLAGS, &attr) < 0) { /* ignored */ }
        }
    }
    close(fd);
    return tmp;
}

/* The path to replace: symlinks are followed so the link keeps working. */
static char *resolve_target(const char *filename)
{
    struct stat st;
    if (lstat(filename, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *real = realpath(filename, NULL);
        return real;   /* NULL for a dangling link: create in place */
    }
    return qimg_strdup(filename);
}

static int run_driver(const struct qimg_create_params *p, struct plan *pl, const char *path,
                      const char *prealloc, uint64_t size)
{
    struct qimg_create_ctx ctx = {
        .filename = path,
        .size = size,
        .backing_file = qimg_opts_get(pl->opts, "backing_file"),
        .backing_fmt = qimg_opts_get(pl->opts, "backing_fmt"),
        .opts = pl->opts,
        .prealloc = prealloc,
    };
    int r = protocol_name_check(p, pl);
    if (r == 0)
        r = qimg_drv_create(pl->drv, &ctx);
    if (r == -EFBIG) {
        uint64_t cs = 0;
        bool hint = qimg_opts_get_size(pl->opts, "cluster_size", &cs) == 1 && cs;
        /* qemu looks the option up with its default (qcow2: 65536) */
        const struct qimg_opt_desc *d = list_find(&pl->list, "cluster_size");
        if (!hint && d && d->def_value && qimg_parse_size(d->def_value, &cs) == 0 && cs)
            hint = true;
        r = qimg_error(-EFBIG, "The image size is too large for file format '%s'%s",
                       pl->drv->name, hint ? " (try using a larger cluster size)" : "");
    }
    return r;
}

/* The backing and data files the user named for a new image: in safe mode
 * the image may make qimg open them later (convert -B, create -b). */
static void allow_named_files(const char *filename, const struct plan *pl)
{
    static const char *const keys[] = { "backing_file", "data_file" };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(keys); i++) {
        const char *name = qimg_opts_get(pl->opts, keys[i]);
        if (!name || !name[0])
            continue;
        CLEANUP_FREE char *path = qimg_path_combine(filename, name);
        qimg_safe_allow_file(path);
    }
}

int qimg_create(const struct qimg_create_params *p)
{
    struct plan pl;
    struct qimg_io *held = NULL;
    CLEANUP_FREE char *target = NULL;
    CLEANUP_FREE char *tmp = NULL;
    const char *prealloc = "off";
    bool nocow = false;
    uint64_t size;
    int r;

    qimg_error_clear();
    r = make_plan(p, &pl);
    if (r < 0)
        goto out;
    qimg_opts_get_string(pl.opts, "preallocation", &prealloc);
    qimg_opts_get_bool(pl.opts, "nocow", &nocow);
    size = pl.size;
    if (!qimg_drv_has_metadata(pl.drv)) {
        r = check_protocol_opts(&pl, prealloc, &size);
        if (r < 0)
            goto out;
    }
    /* a format whose files are named after the image (vmdk's extents)
     * is created under its own name */
    if (p->atomic && !qimg_path_has_protocol(p->filename) &&
        !(pl.drv->flags & QIMG_DRV_MANY_FILES)) {
        target = resolve_target(p->filename);
        if (target)
            tmp = make_temp(target, nocow);
    }
    if (target) {
        r = qimg_lock_existing(target, &held);
        if (r < 0)
            goto out;
    }
    const struct qimg_io_ops *protocol = qimg_io_protocol(p->filename);
    if (protocol && protocol->create_by_opening) {
        /* a format with metadata asks its storage for no size (qemu) */
        bool meta = qimg_drv_has_metadata(pl.drv);
        r = create_by_opening(p->filename, meta ? 0 : size, meta ? "off" : prealloc);
        if (r < 0)
            goto out;
    }
    r = run_driver(p, &pl, tmp ? tmp : p->filename, prealloc, size);
    if (r == 0 && tmp && rename(tmp, target) < 0)
        r = qimg_error_errno(-errno, "Could not create '%s'", p->filename);
    if (r < 0 && tmp)
        unlink(tmp);
    if (r == 0)
        allow_named_files(p->filename, &pl);
out:
    if (held)
        qimg_io_close(held);
    plan_free(&pl);
    return r;
}
