/* qimg - the files an image names (backing image, external data file,
 * later VMDK extents and VHD parents), opened under one policy, and safe
 * mode.  See "child files" in internal.h. */
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>

#include "internal.h"

/* ---- safe mode ---- */

static bool safe_mode_on;

void qimg_set_safe_mode(bool on)
{
    __atomic_store_n(&safe_mode_on, on, __ATOMIC_RELAXED);
}

bool qimg_safe_mode(void)
{
    return __atomic_load_n(&safe_mode_on, __ATOMIC_RELAXED);
}

bool qimg_image_safe(const struct qimg_image *img)
{
    return (img->flags & QIMG_OPEN_SAFE) || qimg_safe_mode();
}

/* Files the user named on the command line (-b, -B, -o data_file=):
 * an image may name them in safe mode.  Kept by identity, so another
 * spelling of the same file matches and a later file under the name
 * does not. */
struct allowed_file { dev_t dev; ino_t ino; };
static struct allowed_file *allowed;
static size_t nb_allowed;
static pthread_mutex_t allowed_lock = PTHREAD_MUTEX_INITIALIZER;

void qimg_safe_allow_file(const char *path)
{
    struct stat st;
    if (!path || qimg_path_has_protocol(path) || stat(path, &st) < 0)
        return;
    pthread_mutex_lock(&allowed_lock);
    allowed = qimg_xrealloc(allowed, (nb_allowed + 1) * sizeof *allowed);
    allowed[nb_allowed++] = (struct allowed_file){ st.st_dev, st.st_ino };
    pthread_mutex_unlock(&allowed_lock);
}

static bool file_allowed(const char *path)
{
    struct stat st;
    bool found = false;
    if (stat(path, &st) < 0)
        return false;
    pthread_mutex_lock(&allowed_lock);
    for (size_t i = 0; i < nb_allowed && !found; i++)
        found = allowed[i].dev == st.st_dev && allowed[i].ino == st.st_ino;
    pthread_mutex_unlock(&allowed_lock);
    return found;
}

/* ---- extents stay next to their image ---- */

static bool external_extents_allowed;

void qimg_set_allow_external_extents(bool on)
{
    __atomic_store_n(&external_extents_allowed, on, __ATOMIC_RELAXED);
}

/* Does the relative name climb above its starting directory? */
static bool climbs_out(const char *name)
{
    long depth = 0;
    for (const char *p = name; *p;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            depth--;
        else if (n > 0 && !(n == 1 && p[0] == '.'))
            depth++;
        if (depth < 0)
            return true;
        p += n + (end != NULL);
    }
    return false;
}

/* Is the existing file path, links resolved, inside directory dir? */
static bool resolves_inside(const char *path, const char *dir)
{
    CLEANUP_FREE char *real = realpath(path, NULL);
    CLEANUP_FREE char *real_dir = realpath(dir[0] ? dir : ".", NULL);
    if (!real || !real_dir)
        return false;
    size_t n = strlen(real_dir);
    if (n == 1)
        return true;               /* the root holds everything */
    return strncmp(real, real_dir, n) == 0 && real[n] == '/';
}

static int extent_permitted(struct qimg_image *parent, const char *name, const char *path)
{
    if (__atomic_load_n(&external_extents_allowed, __ATOMIC_RELAXED))
        return 0;
    const char *why = NULL;
    struct stat st;
    if (name[0] == '/')
        why = "is an absolute path";
    else if (climbs_out(name))
        why = "leaves the image's directory";
    else if (stat(path, &st) == 0) {
        CLEANUP_FREE char *dir = qimg_io_dirname(parent->file);
        if (!S_ISREG(st.st_mode))
            why = "is not a regular file";
        else if (!dir || !resolves_inside(path, dir))
            why = "leads outside the image's directory";
    }
    if (!why)
        return 0;
    return qimg_error(-EPERM, "extent file '%s' %s (refused: set QIMG_ALLOW_EXTERNAL_EXTENTS=1 "
                      "or name the file with extents.N.filename to allow it)", name, why);
}

/* ---- the policy ---- */

static const char *kind_text(enum qimg_child_kind kind)
{
    switch (kind) {
    case QIMG_CHILD_BACKING:        return "a backing file";
    case QIMG_CHILD_DATA_FILE:      return "a data file";
    case QIMG_CHILD_EXTENT:         return "an extent file";
    case QIMG_CHILD_PARENT_LOCATOR: return "a parent image";
    }
    return "a file";
}

static bool is_json_name(const char *name)
{
    return strncmp(name, "json:", 5) == 0;
}

int qimg_backing_permitted(qimg_image *img)
{
    if (!img->backing_file || !img->backing_file[0])
        return 0;
    return qimg_child_permitted(img, QIMG_CHILD_BACKING, img->backing_file);
}

int qimg_child_permitted(struct qimg_image *parent, enum qimg_child_kind kind,
                         const char *name_in_image)
{
    if (!qimg_image_safe(parent))
        return 0;
    /* a json: or protocol name is never one the user gave as a file */
    if (!is_json_name(name_in_image) &&
        (kind != QIMG_CHILD_BACKING || !qimg_path_has_protocol(name_in_image))) {
        CLEANUP_FREE char *path = qimg_image_resolve_name(parent, name_in_image);
        if (path && file_allowed(path))
            return 0;
    }
    return qimg_error(-EPERM, "safe mode: image names %s '%s' that was not given",
                      kind_text(kind), name_in_image);
}

/* The file name a tree opens, for messages: "filename" or "file.filename". */
static const char *tree_file_name(const qimg_opts *o)
{
    const char *name = qimg_opts_get(o, "filename");
    if (!name)
        name = qimg_opts_get(o, "file.filename");
    if (!name)
        name = qimg_opts_get(o, "file");
    return name;
}

int qimg_child_opts(struct qimg_image *parent, enum qimg_child_kind kind,
                    const char *name_in_image, const qimg_opts *user_opts,
                    qimg_opts **out, char **display)
{
    *out = NULL;
    if (display)
        *display = NULL;
    if (user_opts) {
        *out = qimg_opts_copy(user_opts);
        const char *name = tree_file_name(user_opts);
        if (display)
            *display = qimg_strdup(name ? name : name_in_image ? name_in_image : "");
        return 0;
    }
    if (!name_in_image || !name_in_image[0])
        return 0;
    int r = qimg_child_permitted(parent, kind, name_in_image);
    if (r < 0)
        return r;
    if (kind == QIMG_CHILD_BACKING && is_json_name(name_in_image)) {
        r = qimg_json_filename_parse(out, name_in_image);
        if (r < 0) {
            qimg_opts_free(*out);
            *out = NULL;
        } else if (display) {
            *display = qimg_strdup(name_in_image);
        }
        return r;
    }
    /* a plain path (for a backing file a protocol prefix is kept and picks
     * the storage backend); data files and extents are local files by
     * name, whatever the name looks like */
    char *path = qimg_image_resolve_name(parent, name_in_image);
    if (!path)
        return -EINVAL;
    if (kind == QIMG_CHILD_BACKING) {
        r = qimg_storage_name_tree(out, "file", path);
        if (r < 0) {
            free(path);
            qimg_opts_free(*out);
            *out = NULL;
            return r;
        }
    } else {
        if (kind == QIMG_CHILD_EXTENT) {
            r = extent_permitted(parent, name_in_image, path);
            if (r < 0) {
                free(path);
                return r;
            }
        }
        qimg_opts_set(out, "driver", "file");
        qimg_opts_set(out, "filename", path);
    }
    if (display)
        *display = path;
    else
        free(path);
    return 0;
}

/* Options every node accepts (qemu's common block options); qimg takes
 * them and, but for force-share, leaves their effect to the command line. */
void qimg_opts_take_common(qimg_opts *o)
{
    static const char *const common[] = {
        "node-name", "read-only", "auto-read-only", "discard", "cache.direct",
        "cache.no-flush", "detect-zeroes", "force-share",
    };
    const char *unused;
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(common); i++)
        qimg_opts_get_string(o, common[i], &unused);
}

int qimg_open_storage(struct qimg_io **out, qimg_opts *opts, unsigned ioflags)
{
    *out = NULL;
    qimg_opts_take_common(opts);
    int r = qimg_io_open_opts(out, opts, ioflags);
    if (r < 0)
        return r;
    const char *unused = qimg_opts_first_unused_qemu(opts);
    if (unused) {
        const char *driver = qimg_opts_get(opts, "driver");
        if ((*out)->ops->not_protocol)
            r = qimg_error(-EINVAL, "Block format '%s' does not support the option '%s'",
                           (*out)->ops->name, unused);
        else
            r = qimg_error(-EINVAL, "Block protocol '%s' doesn't support the option '%s'",
                           driver ? driver : (*out)->ops->name, unused);
        qimg_io_close(*out);
        *out = NULL;
    }
    return r;
}

int qimg_open_child(struct qimg_image *parent, enum qimg_child_kind kind,
                    const char *name_in_image, qimg_opts *user_opts, unsigned ioflags,
                    struct qimg_io **out)
{
    qimg_opts *o = NULL;
    *out = NULL;
    int r = qimg_child_opts(parent, kind, name_in_image, user_opts, &o, NULL);
    if (r == 0 && o)
        r = qimg_budget_check();
    if (r == 0 && o)
        r = qimg_open_storage(out, o, ioflags);
    qimg_opts_free(o);
    return r;
}
