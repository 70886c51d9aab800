/* qimg - the image layer: open by name with probing, backing chains,
 * guest I/O and block status through the chain. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>

#include "internal.h"

#define PROBE_BYTES 512

/* ---- accessors ---- */

uint64_t qimg_size(const qimg_image *img) { return img->size; }
const char *qimg_filename(const qimg_image *img) { return img->filename; }
const char *qimg_format(const qimg_image *img)
{
    return img->protocol_format ? img->protocol_format : img->drv->name;
}
qimg_image *qimg_backing(const qimg_image *img) { return img->backing; }
const char *qimg_backing_filename(const qimg_image *img) { return img->backing_file; }
const char *qimg_full_backing_filename(const qimg_image *img) { return img->full_backing_filename; }
const char *qimg_backing_format(const qimg_image *img) { return img->backing_fmt; }

char *qimg_backing_path(const qimg_image *img, const char *name)
{
    char *path = qimg_image_resolve_name(img, name);
    return path ? path : qimg_strdup(name);
}

char *qimg_image_resolve_name(const qimg_image *img, const char *name)
{
    if (name[0] == '/' || qimg_path_has_protocol(name))
        return qimg_strdup(name);
    CLEANUP_FREE char *dir = img->file ? qimg_io_dirname(img->file)
                                       : qimg_path_combine(img->filename, "");
    return dir ? qimg_asprintf("%s%s", dir, name) : NULL;
}

/* ---- open ---- */

int qimg_storage_name_tree(qimg_opts **o, const char *child, const char *name)
{
    CLEANUP_OPTS qimg_opts *storage = NULL;
    int r = qimg_io_name_opts(&storage, name);
    for (size_t i = 0; r == 0 && i < qimg_opts_count(storage); i++) {
        CLEANUP_FREE char *key = qimg_asprintf("%s.%s", child, qimg_opts_name(storage, i));
        r = qimg_opts_set_typed(o, key, qimg_opts_value(storage, i), qimg_opts_kind(storage, i));
    }
    return r;
}

/* Open flags and the storage flags they stand for. */
static const struct { unsigned open, io; } open_io_flags[] = {
    { QIMG_OPEN_RDWR, QIMG_IO_RDWR },
    { QIMG_OPEN_FORCE_SHARE, QIMG_IO_NOLOCK },
    { QIMG_OPEN_CACHE_DIRECT, QIMG_IO_DIRECT },
    { QIMG_OPEN_CACHE_SYNC, QIMG_IO_DSYNC },
    { QIMG_OPEN_CACHE_UNSAFE, QIMG_IO_UNSAFE },
    { QIMG_OPEN_STREAM, QIMG_IO_STREAM },
};

static unsigned io_flags_for(unsigned flags)
{
    unsigned io = 0;
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(open_io_flags); i++)
        if (flags & open_io_flags[i].open)
            io |= open_io_flags[i].io;
    return io;
}

unsigned qimg_open_flags_for_io(unsigned ioflags)
{
    unsigned flags = 0;
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(open_io_flags); i++)
        if (ioflags & open_io_flags[i].io)
            flags |= open_io_flags[i].open;
    return flags;
}

static int probe_format(struct qimg_io *io, const char *filename, const struct qimg_driver **drv)
{
    uint8_t buf[PROBE_BYTES];
    uint64_t size;
    int r = qimg_io_get_size(io, &size);
    if (r < 0)
        return r;
    size_t len = (size_t)QIMG_MIN(size, (uint64_t)PROBE_BYTES);
    memset(buf, 0, sizeof buf);
    if (len > 0) {
        r = qimg_io_pread(io, buf, len, 0);
        if (r < 0)
            return qimg_error(r, "Could not read image for determining its format: %s", strerror(-r));
    }
    *drv = qimg_driver_probe(buf, len, size, filename);
    if (*drv == &qimg_driver_raw && size >= PROBE_BYTES) {
        /* a format known by its last sector (a fixed VHD): beyond qemu,
         * which reads no more than the first sector; when that read
         * fails the image stays raw, as qemu has it */
        if (qimg_io_pread(io, buf, PROBE_BYTES, size - PROBE_BYTES) == 0)
            *drv = qimg_driver_probe_tail(buf, PROBE_BYTES, size);
    }
    return 0;
}

void qimg_warn_probed_raw(const char *filename)
{
    qimg_warn("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
              "         Automatically detecting the format is dangerous for raw images, "
              "write operations on block 0 will be restricted.\n"
              "         Specify the 'raw' format explicitly to remove the restrictions.",
              filename);
}

/* Take qemu's locks: a reader holds "consistent read" (not for info,
 * which does no I/O), a writer also "write" and "resize"; a format with
 * metadata of its own refuses to share write and resize, since another
 * writer would change its metadata under it.  raw shares everything,
 * unless the command refuses it (QIMG_OPEN_NO_SHARE: convert's sources). */
static int lock_image(qimg_image *img)
{
    unsigned take = 0, unshare = 0;
    if (!(img->flags & QIMG_OPEN_NO_IO))
        take |= QIMG_PERM_READ;
    if (img->flags & QIMG_OPEN_RDWR)
        take |= QIMG_PERM_READ | QIMG_PERM_WRITE | QIMG_PERM_RESIZE;
    if (qimg_drv_has_metadata(img->drv) || (img->flags & QIMG_OPEN_NO_SHARE))
        unshare = QIMG_PERM_WRITE | QIMG_PERM_RESIZE;
    return qimg_io_lock(img->file, take, unshare);
}

/*
 * Opening by option tree.  A name is parsed once into one flat tree of
 * dotted keys (a plain path or protocol name is {file.filename=NAME},
 * json:{...} and --image-opts are flattened) and the tree flows down:
 * "driver" picks the format, the "file" subtree goes to the storage node
 * (qimg_open_storage), the "backing" subtree to the backing image
 * (qimg_open_backing_chain through qimg_child_opts), the rest to the
 * driver's open.  Whatever nobody marked used is reported as qemu does.
 */

/* What a node is opened as. */
struct node_req {
    const char *display;      /* the image's name in messages and info */
    bool top;                 /* the image named by the user: renamed once open */
    bool from_tree;           /* ... given as json:{...} or --image-opts */
    const char *fmt;          /* -f: wins over "driver" */
    unsigned flags;
    qimg_image *chain_top;    /* for a backing node: the chain above it */
};

static void name_top_node(qimg_image *img, const struct node_req *req, const qimg_opts *o);

/* "driver" (or -f): a format driver, or NULL with *name set for a
 * protocol named at the top (json:{"driver":"file",...}), or nothing. */
static int pick_driver(qimg_opts *o, const struct node_req *req, const char **name,
                       const struct qimg_driver **drv)
{
    const char *driver = NULL;
    qimg_opts_get_string(o, "driver", &driver);
    /* -f wins over a json: "driver", as qemu's explicit options win over
     * those of the filename */
    *name = req->fmt ? req->fmt : driver;
    *drv = *name ? qimg_driver_find(*name) : NULL;
    if (!*drv && req->fmt && !qimg_io_backend_find(req->fmt))
        return qimg_error(-EINVAL, "Unknown driver '%s'", req->fmt);
    if ((req->flags & QIMG_OPEN_RDWR) && *drv && ((*drv)->flags & QIMG_DRV_READ_ONLY))
        return qimg_error(-EACCES, "Image is read-only");   /* qemu's words for cloop, dmg */
    return 0;
}

/* The storage node's tree: the "file" subtree of a format node, or the
 * whole node when the top names a protocol (qimg then probes the format). */
static int storage_tree(qimg_opts *o, const struct qimg_driver *drv, const char *driver,
                        qimg_opts **out)
{
    *out = NULL;
    if (driver && !drv) {
        *out = qimg_opts_copy(o);
        for (size_t i = 0; i < o->n; i++)
            o->v[i].used = true;
        return qimg_opts_set(out, "driver", driver);   /* -f may have named it */
    }
    const char *ref = qimg_opts_get(o, "file");
    if (ref)
        return qimg_error(-EINVAL, "Cannot find device='%s' nor node-name='%s'", ref, ref);
    *out = qimg_opts_subtree(o, "file");
    if (!*out)
        return qimg_error(-EINVAL, drv ? "A block device must be specified for \"file\""
                                       : "Must specify either driver or file");
    return 0;
}

/* The user's "backing" subtree, taken when this node opens backing files:
 * otherwise (info, a format without backing files) it stays unused and is
 * reported, as qemu does. */
static void take_backing_tree(qimg_image *img, qimg_opts *o)
{
    const char *ref = qimg_opts_get(o, "backing");
    if (ref && strcmp(ref, QIMG_OPTS_NULL) == 0) {
        img->no_backing = true;      /* "backing": null, taken in any case */
        qimg_opts_free(qimg_opts_subtree(o, "backing"));
        return;
    }
    if (img->flags & QIMG_OPEN_NO_BACKING)
        return;
    qimg_opts *sub = qimg_opts_subtree(o, "backing");
    if (ref) {
        img->backing_ref = qimg_strdup(ref);
        qimg_opts_free(sub);
    } else {
        img->backing_opts = sub;
    }
}

static int check_loop(const qimg_image *img, const struct node_req *req)
{
    for (const qimg_image *seen = req->chain_top; seen; seen = seen->backing)
        if (qimg_io_same(seen->file, img->file))
            return qimg_error(-ELOOP, "Backing file '%s' creates an infinite loop.", req->display);
    return 0;
}

/* Storage, loop check, format, locks. */
static int open_storage_of(qimg_image *img, qimg_opts *file_opts, const struct node_req *req,
                           const struct qimg_driver **drv)
{
    int r = qimg_open_storage(&img->file, file_opts, io_flags_for(req->flags));
    if (r == 0)
        r = check_loop(img, req);
    /* a filter over a format node (named as a protocol at the top or not):
     * not probed, and shows what qemu shows of the image below */
    if (r == 0 && (!*drv || img->protocol_format) && qimg_io_holds_image(img->file))
        *drv = &qimg_driver_filter;
    if (r == 0 && !*drv) {
        r = probe_format(img->file, img->file->filename, drv);
        if (r == 0 && (req->flags & QIMG_OPEN_RDWR) && ((*drv)->flags & QIMG_DRV_READ_ONLY))
            r = qimg_error(-EACCES, "Image is read-only");
        if (r == 0 && *drv == &qimg_driver_raw && (req->flags & QIMG_OPEN_RDWR)) {
            img->probed_raw = true;
            if (!(req->flags & QIMG_OPEN_NO_PROBE_WARNING))
                qimg_warn_probed_raw(img->file->ops->json_name ? img->file->filename : req->display);
        }
    }
    if (r < 0)
        return r;
    img->drv = *drv;
    r = lock_image(img);
    if (r < 0)
        img->drv = NULL;
    return r;
}

/* Open one node (not its backing chain) from its option tree o; the
 * caller reports what o leaves unused (check_unused). */
static int open_node(qimg_image **out, qimg_opts *o, const struct node_req *req)
{
    const struct qimg_driver *drv = NULL;
    const char *driver = NULL;
    qimg_opts *file_opts = NULL;
    *out = NULL;
    qimg_image *img = qimg_xcalloc(1, sizeof *img);
    pthread_mutex_init(&img->lock, NULL);
    img->filename = qimg_strdup(req->display);
    img->flags = req->flags;
    img->read_only = !(req->flags & QIMG_OPEN_RDWR);
    img->node_opts = qimg_opts_copy(o);
    int r = pick_driver(o, req, &driver, &drv);
    if (r == 0)
        r = storage_tree(o, drv, driver, &file_opts);
    if (r == 0 && driver && !drv && qimg_io_backend_find(driver)) {
        /* a protocol at the top: its storage is the image, no probing */
        img->protocol_format = qimg_strdup(driver);
        qimg_opts_set(&img->node_opts, "driver", driver);   /* -f may have named it */
        drv = &qimg_driver_raw;
    }
    if (r == 0)
        r = open_storage_of(img, file_opts, req, &drv);
    qimg_opts_free(file_opts);
    if (r < 0)
        goto fail;
    if (req->top)
        name_top_node(img, req, o);
    qimg_opts_take_common(o);
    take_backing_tree(img, o);
    r = drv->open(img, o, req->flags);
    if (r < 0) {
        img->drv = NULL;
        goto fail;
    }
    if (img->backing_file && img->backing_file[0])
        img->full_backing_filename = qimg_image_resolve_name(img, img->backing_file);
    *out = img;
    return 0;
fail:
    qimg_close(img);
    return r;
}

static int check_unused(const qimg_image *img, const qimg_opts *o)
{
    const char *unused = qimg_opts_first_unused_qemu(o);
    if (unused)
        return qimg_error(-EINVAL, "Block format '%s' does not support the option '%s'",
                          img->drv->name, unused);
    return 0;
}

/* The tree of img's backing image: the user's "backing" subtree or the
 * name the image records, by the child policy; NULL when none. */
static int backing_tree(qimg_image *img, qimg_opts **o, char **display)
{
    *o = NULL;
    *display = NULL;
    if (img->no_backing)
        return 0;
    if (img->backing_ref)
        return qimg_error(-EINVAL, "Cannot find device='%s' nor node-name='%s'",
                          img->backing_ref, img->backing_ref);
    int r = qimg_child_opts(img, QIMG_CHILD_BACKING, img->backing_file, img->backing_opts,
                            o, display);
    /* the recorded format applies unless the tree names one */
    if (r == 0 && *o && img->backing_fmt && !qimg_opts_get(*o, "driver"))
        qimg_opts_set(o, "driver", img->backing_fmt);
    return r;
}

/* Backing options given to a format without backing files. */
static int check_backing_supported(const qimg_image *top)
{
    for (const qimg_image *img = top; img; img = img->backing)
        if ((img->backing_opts || img->backing_ref) &&
            !(img->drv->flags & QIMG_DRV_SUPPORTS_BACKING))
            return qimg_error(-EINVAL, "Driver doesn't support backing files");
    return 0;
}

/* A backing name recorded relative to storage that has no directory
 * (quorum): qemu fails with the storage's reason, not as a backing file
 * that could not be opened. */
static int check_backing_resolvable(const qimg_image *img)
{
    if (img->no_backing || img->backing_ref || img->backing_opts || !img->backing_file ||
        !img->backing_file[0])
        return 0;
    CLEANUP_FREE char *path = qimg_image_resolve_name(img, img->backing_file);
    return path ? 0 : -EINVAL;
}

int qimg_open_backing_chain(qimg_image *top)
{
    unsigned flags = (top->flags & ~(unsigned)(QIMG_OPEN_RDWR | QIMG_OPEN_NO_BACKING |
                                               QIMG_OPEN_NO_SHARE)) |
                     QIMG_OPEN_NO_PROBE_WARNING;
    unsigned depth = 0;
    int r = 0;
    for (qimg_image *img = top; r == 0; img = img->backing) {
        qimg_opts *o;
        CLEANUP_FREE char *display = NULL;
        if (check_backing_resolvable(img) < 0)
            return -EINVAL;
        r = backing_tree(img, &o, &display);
        if (r < 0 || !o)
            break;
        if (++depth > QIMG_MAX_CHAIN_DEPTH) {
            qimg_opts_free(o);
            return qimg_error(-ELOOP, "Backing chain of '%s' is too long", top->filename);
        }
        struct node_req req = { .display = display, .flags = flags, .chain_top = top };
        r = qimg_budget_check();
        if (r == 0)
            r = open_node(&img->backing, o, &req);
        if (r == 0)
            r = check_unused(img->backing, o);
        if (r == 0 && img->drv->backing_opened)
            r = img->drv->backing_opened(img);
        qimg_opts_free(o);
        if (r == -ELOOP)
            return r;
    }
    if (r < 0)
        qimg_error_prefix("Could not open backing file");
    return r < 0 ? r : check_backing_supported(top);
}

/* Does a key change what the image reads (qemu's "strong" options), so
 * that qemu names the image by its options rather than its file? */
static bool strong_key(const qimg_opts *o, const char *key)
{
    if (strcmp(key, "backing") == 0 && strcmp(qimg_opts_get(o, key), QIMG_OPTS_NULL) == 0)
        return false;
    return strcmp(key, "offset") == 0 || strcmp(key, "size") == 0 ||
           strcmp(key, "force_size_calc") == 0 ||   /* vpc */
           strcmp(key, "key-secret") == 0 ||        /* luks */
           strncmp(key, "encrypt.", 8) == 0 || strcmp(key, "backing") == 0 ||
           strncmp(key, "backing.", 8) == 0;
}

/* offset, size, encrypt.*: what qemu names by options, unlike backing */
static bool has_content_key(const qimg_opts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (strong_key(o, o->v[i].name) && strcmp(o->v[i].name, "backing") != 0 &&
            strncmp(o->v[i].name, "backing.", 8) != 0)
            return true;
    return false;
}

static bool has_strong_key(const qimg_opts *o);

/* The name qemu gives the image the user named: that of its storage when
 * no option changes what the image reads and the storage can name itself
 * ("file:a:b" is "./a:b", blkdebug given by options "blkdebug::IMAGE");
 * for a json:/--image-opts tree otherwise its own json:{...} (backing
 * options alone leave the name given). */
static void name_top_node(qimg_image *img, const struct node_req *req, const qimg_opts *o)
{
    bool strong = has_strong_key(o);
    char *name = strong ? NULL : qimg_io_exact_filename(img->file);
    /* a vvfat name ("fat:DIR") cannot name its node either: qemu shows its options */
    bool unnamed = req->from_tree || img->file->ops->synthesized;
    if (!name && (img->file->ops->json_name || (unnamed && (!strong || has_content_key(o)))))
        name = qimg_node_json_name(img->node_opts, img->protocol_format ? NULL : img->drv->name);
    if (!name)
        return;
    free(img->given_name);
    img->given_name = img->filename;
    img->filename = name;
}

/* The name an image opened from a tree is shown by: its file's name unless
 * the tree holds an option that changes the content (then the name given;
 * qemu prints a json:{...} of its own there). */
static bool has_strong_key(const qimg_opts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (strong_key(o, o->v[i].name))
            return true;
    return false;
}

static char *tree_display(const qimg_opts *o, const char *given)
{
    if (has_strong_key(o))
        return qimg_strdup(given);
    const char *file = qimg_opts_get(o, "file.filename");
    if (!file)
        file = qimg_opts_get(o, "file");
    if (!file)
        file = qimg_opts_get(o, "filename");
    return qimg_strdup(file ? file : given);
}

/* Open a top image and its chain from its tree, within safe mode's budget. */
static int open_tree(qimg_image **out, qimg_opts *o, const char *display, bool from_tree,
                     const char *fmt, unsigned flags)
{
    struct node_req req = { .display = display, .fmt = fmt, .flags = flags, .top = true,
                            .from_tree = from_tree };
    qimg_budget_begin((flags & QIMG_OPEN_SAFE) || qimg_safe_mode());
    int r = open_node(out, o, &req);
    if (r == 0 && !(flags & QIMG_OPEN_NO_BACKING))
        r = qimg_open_backing_chain(*out);
    if (r == 0)
        r = check_unused(*out, o);
    qimg_budget_end();
    if (r < 0 && *out) {
        qimg_close(*out);
        *out = NULL;
    }
    return r;
}

int qimg_open_tree(qimg_image **out, qimg_opts *o, const char *display, unsigned flags)
{
    *out = NULL;
    return open_tree(out, o, display, true, NULL, flags);
}

int qimg_open(qimg_image **out, const char *filename, const char *fmt, unsigned flags)
{
    qimg_opts *o = NULL;
    CLEANUP_FREE char *shown = NULL;
    const char *display = filename;
    int r = 0;
    *out = NULL;
    qimg_error_clear();
    if (strncmp(filename, "json:", 5) == 0) {
        r = qimg_json_filename_parse(&o, filename + 5);
        if (r == 0)
            display = shown = tree_display(o, filename);
    } else if (fmt && !qimg_driver_find(fmt) && qimg_io_backend_find(fmt)) {
        /* -f names a protocol: the name is that storage's, the image */
        r = qimg_io_name_opts_for(&o, qimg_io_backend_find(fmt), filename);
    } else {
        r = qimg_storage_name_tree(&o, "file", filename);
    }
    if (r == 0)
        r = open_tree(out, o, display, shown != NULL, fmt, flags);
    qimg_opts_free(o);
    return r;
}

int qimg_open_opts(qimg_image **out, const char *optstr, unsigned flags)
{
    qimg_opts *o = NULL;
    *out = NULL;
    qimg_error_clear();
    int r = qimg_keyval_parse(&o, optstr, NULL);
    if (r == 0) {
        CLEANUP_FREE char *shown = tree_display(o, optstr);
        r = open_tree(out, o, shown, true, NULL, flags);
    }
    qimg_opts_free(o);
    return r;
}

/* ---- reopening read-write (commit) ---- */

int qimg_reopen_rw(qimg_image *l, unsigned cache_flags)
{
    const unsigned cache = QIMG_OPEN_CACHE_DIRECT | QIMG_OPEN_CACHE_SYNC | QIMG_OPEN_CACHE_UNSAFE;
    unsigned flags = (l->flags | QIMG_OPEN_RDWR) &
                     ~(unsigned)(QIMG_OPEN_FORCE_SHARE | QIMG_OPEN_STREAM | cache);
    flags |= cache_flags & cache;
    qimg_opts *o = qimg_opts_copy(l->node_opts);
    qimg_opts *file_opts = NULL;
    const char *driver = NULL;
    struct qimg_io *io = NULL;
    if (l->drv->flags & QIMG_DRV_NO_REOPEN) {
        qimg_opts_free(o);
        /* qemu names the node by a number that changes from run to run */
        return qimg_error(-ENOTSUP, "Block format '%s' used by node '#block%03u' does not support "
                          "reopening files", l->drv->name, 100u + (unsigned)(strlen(l->filename) % 900));
    }
    qimg_opts_get_string(o, "driver", &driver);
    bool protocol_top = driver && !qimg_driver_find(driver);
    int r = storage_tree(o, protocol_top ? NULL : l->drv, protocol_top ? driver : NULL, &file_opts);
    if (r == 0)
        r = qimg_open_storage(&io, file_opts, io_flags_for(flags));
    qimg_opts_free(file_opts);
    if (r < 0) {
        qimg_opts_free(o);
        return r;
    }
    l->drv->close(l);
    l->opaque = NULL;
    qimg_io_close(l->file);
    l->file = io;
    free(l->backing_file);
    free(l->backing_fmt);
    free(l->full_backing_filename);
    l->backing_file = l->backing_fmt = l->full_backing_filename = NULL;
    l->flags = flags;
    l->read_only = false;
    qimg_opts_take_common(o);
    qimg_opts_free(qimg_opts_subtree(o, "backing"));
    r = lock_image(l);
    if (r == 0)
        r = l->drv->open(l, o, flags | QIMG_OPEN_REOPEN);
    qimg_opts_free(o);
    if (r < 0) {
        l->drv = NULL;   /* qimg_close must not call close on a failed open */
        return r;
    }
    if (l->backing_file && l->backing_file[0])
        l->full_backing_filename = qimg_image_resolve_name(l, l->backing_file);
    return 0;
}

int qimg_close(qimg_image *img)
{
    int r = 0;
    while (img) {
        qimg_image *next = img->backing;
        if (img->drv) {
            if (!img->read_only && img->drv->flush)
                r = r ? r : img->drv->flush(img);
            img->drv->close(img);
        }
        qimg_io_close(img->file);
        free(img->filename);
        free(img->backing_file);
        free(img->backing_fmt);
        free(img->full_backing_filename);
        free(img->protocol_format);
        free(img->given_name);
        qimg_opts_free(img->node_opts);
        qimg_opts_free(img->backing_opts);
        free(img->backing_ref);
        pthread_mutex_destroy(&img->lock);
        free(img);
        img = next;
    }
    return r;
}

/* ---- guest I/O ---- */

static int check_range(const qimg_image *img, uint64_t off, uint64_t len)
{
    if (!qimg_range_ok(off, len, img->size))
        return qimg_error(-EIO, "Request out of range (offset %" PRIu64 ", length %" PRIu64
                          ", image size %" PRIu64 ")", off, len, img->size);
    return 0;
}

static int check_writable(const qimg_image *img)
{
    if (img->read_only)
        return qimg_error(-EACCES, "Image '%s' is read-only", img->filename);
    return 0;
}

int qimg_read(qimg_image *img, uint64_t off, void *buf, size_t len)
{
    int r = check_range(img, off, len);
    if (r < 0 || len == 0)
        return r;
    return img->drv->read(img, off, buf, len);
}

int qimg_read_backing(qimg_image *img, uint64_t off, void *buf, size_t len)
{
    qimg_image *b = img->backing;
    uint64_t avail = 0;
    if (b && off < b->size)
        avail = QIMG_MIN((uint64_t)len, b->size - off);
    if (avail > 0) {
        int r = b->drv->read(b, off, buf, (size_t)avail);
        if (r < 0)
            return r;
    }
    memset((uint8_t *)buf + avail, 0, len - (size_t)avail);
    return 0;
}

int qimg_for_each_piece(qimg_image *img, uint64_t off, uint8_t *buf, size_t len, uint64_t unit,
                        qimg_piece_fn piece)
{
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN((uint64_t)len, unit - off % unit);
        int r = piece(img, off, buf, n);
        if (r < 0)
            return r;
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

void qimg_extent_look_into_file(struct qimg_io *io, struct qimg_extent *ext, bool past_eof_zero)
{
    uint64_t size, pnum;
    int kind;
    if (qimg_io_get_size(io, &size) < 0)
        return;
    if (ext->host_offset >= size) {
        if (past_eof_zero)
            ext->flags |= QIMG_STATUS_ZERO;
        return;
    }
    if (qimg_io_extent(io, ext->host_offset, ext->length, &pnum, &kind) < 0 || pnum == 0)
        return;
    if (kind == QIMG_IO_EXT_HOLE && ext->host_offset + pnum >= size) {
        ext->flags |= QIMG_STATUS_ZERO;
        return;
    }
    ext->length = pnum;
    if (kind == QIMG_IO_EXT_HOLE || kind == QIMG_IO_EXT_DATA_ZERO)
        ext->flags |= QIMG_STATUS_ZERO;
}

int qimg_write(qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    int r = check_writable(img);
    if (r == 0)
        r = check_range(img, off, len);
    if (r < 0 || len == 0)
        return r;
    if (!img->drv->write)
        return qimg_error(-ENOTSUP, "Driver '%s' does not support writing", img->drv->name);
    return img->drv->write(img, off, buf, len);
}

/* Fallback for drivers without write_zeroes: write a zero buffer. */
static int write_zero_buffer(qimg_image *img, uint64_t off, uint64_t len)
{
    size_t chunk = (size_t)QIMG_MIN(len, (uint64_t)1 << 20);
    CLEANUP_FREE uint8_t *zeros = qimg_xcalloc(1, chunk);
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN(len, (uint64_t)chunk);
        int r = img->drv->write(img, off, zeros, n);
        if (r < 0)
            return r;
        off += n, len -= n;
    }
    return 0;
}

int qimg_write_zeroes(qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    int r = check_writable(img);
    if (r == 0)
        r = check_range(img, off, len);
    if (r < 0 || len == 0)
        return r;
    if (img->drv->write_zeroes) {
        r = img->drv->write_zeroes(img, off, len, flags);
        if (r != -ENOTSUP || (flags & QIMG_ZERO_FAST))
            return r;
    } else if (flags & QIMG_ZERO_FAST) {
        return -ENOTSUP;
    }
    if (!img->drv->write)
        return qimg_error(-ENOTSUP, "Driver '%s' does not support writing", img->drv->name);
    return write_zero_buffer(img, off, len);
}

int qimg_discard(qimg_image *img, uint64_t off, uint64_t len)
{
    int r = check_writable(img);
    if (r == 0)
        r = check_range(img, off, len);
    if (r < 0 || len == 0 || !img->drv->discard)
        return r;
    return img->drv->discard(img, off, len);
}

int qimg_flush(qimg_image *img)
{
    if (img->read_only || !img->drv->flush)
        return 0;
    return img->drv->flush(img);
}

/* ---- block status ---- */

int qimg_block_status(qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    memset(ext, 0, sizeof *ext);
    ext->offset = off;
    if (off >= img->size || len == 0)
        return qimg_error(-EINVAL, "Block status request out of range");
    len = QIMG_MIN(len, img->size - off);
    int r = img->drv->block_status(img, off, len, ext);
    if (r < 0)
        return r;
    if (ext->length == 0 || ext->length > len)
        return qimg_error(-EIO, "Driver '%s' returned a bad block status", img->drv->name);
    ext->offset = off;
    if (off + ext->length == img->size)
        ext->flags |= QIMG_STATUS_EOF;
    return 0;
}

/* Walk down while the range is unallocated; depth counts layers visited.
 * A range past the end of a backing image reads as zeros from the layer
 * above it, so the walk stops there. */
int qimg_block_status_chain(qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    qimg_image *top = img;
    unsigned depth = 0;
    int r = qimg_block_status(img, off, len, ext);
    if (r < 0)
        return r;
    len = ext->length;
    /* A filter over a format node (blkdebug over qcow2): its rules saw the
     * query, the answer is the node's, with its layers and host offsets,
     * as qemu's map shows through filters. */
    qimg_image *below = qimg_filtered_image(img);
    if (below)
        return qimg_block_status_chain(below, off, len, ext);
    while (!(ext->flags & QIMG_STATUS_ALLOCATED) && img->backing && off < img->backing->size) {
        img = img->backing;
        depth++;
        r = qimg_block_status(img, off, len, ext);
        if (r < 0)
            return r;
        len = ext->length;
    }
    if (!(ext->flags & QIMG_STATUS_ALLOCATED)) {
        /* Zeros from the last layer visited; a host offset it reported
         * (a qcow2 subcluster unallocated in an allocated cluster) is
         * kept, as qemu-img map shows it. */
        ext->flags = (ext->flags & (QIMG_STATUS_EOF | QIMG_STATUS_OFFSET)) | QIMG_STATUS_ZERO;
        /* raw over storage that cannot say what it holds (null-co, an
         * NBD hole without the zero bit) reads as neither, as in qemu */
        if ((img->drv->flags & QIMG_DRV_NO_METADATA) && !(img->drv->flags & QIMG_DRV_SUPPORTS_BACKING))
            ext->flags &= ~(unsigned)QIMG_STATUS_ZERO;
        if (!(ext->flags & QIMG_STATUS_OFFSET))
            ext->host_file = NULL;
    }
    ext->depth = depth;
    /* EOF is about the top image */
    ext->flags &= ~QIMG_STATUS_EOF;
    if (off + ext->length == top->size)
        ext->flags |= QIMG_STATUS_EOF;
    return 0;
}

int qimg_count_data_blocks(qimg_image *src, uint64_t off, uint64_t len, uint64_t block,
                           uint64_t *count)
{
    uint64_t end = off + len, next = off / block;
    *count = 0;
    while (off < end) {
        struct qimg_extent e;
        int r = qimg_block_status_chain(src, off, end - off, &e);
        if (r < 0) {
            CLEANUP_FREE char *msg = qimg_strdup(qimg_last_error());
            return qimg_error(r, "Unable to get block status: %s", msg);
        }
        if (!(e.flags & QIMG_STATUS_ZERO) && (e.flags & QIMG_STATUS_DATA)) {
            uint64_t first = QIMG_MAX(off / block, next), last = (off + e.length - 1) / block;
            if (last >= first)
                *count += last - first + 1;
            next = last + 1;
        }
        off += e.length;
    }
    return 0;
}

void qimg_image_set_backing_names(qimg_image *img, const char *backing, const char *fmt)
{
    free(img->backing_file);
    free(img->backing_fmt);
    img->backing_file = backing ? qimg_strdup(backing) : NULL;
    img->backing_fmt = backing && fmt ? qimg_strdup(fmt) : NULL;
}
