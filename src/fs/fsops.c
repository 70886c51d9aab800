/* The library calls for files inside images: open a filesystem on a disk or
 * a partition, resolve paths, list, cat, copy out to the host and copy in
 * from it.
 *
 * Paths inside the filesystem are always taken from its root ("etc/x" and
 * "/etc/x" are the same); "." and ".." are resolved here (drivers never see
 * them), symlinks are followed inside the filesystem (never on the host),
 * at most 40 of them per lookup.  Directory walks are bounded in depth and
 * visit each directory once, so a hostile image with a directory loop or
 * directories linked twice ends with an error instead of running forever.
 *
 * On the host side, copy-out writes only below the local directory it was
 * given: everything is created relative to directory descriptors, with
 * O_NOFOLLOW and AT_SYMLINK_NOFOLLOW, and names from the image are refused
 * when they hold '/' or are "." or "..". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs.h"
#include "internal.h"
#include "util.h"

#define FS_NAME_MAX 255
#define FS_MAX_SYMLINKS 40
#define FS_MAX_DEPTH 4096
#define FS_TARGET_MAX 4096           /* longest symlink target we read */
#define FS_PATH_WORK_MAX (64 * 1024) /* a path with its symlinks expanded */
#define FS_MAX_DIR_ENTRIES (1u << 22)
#define FS_COPY_CHUNK (4u << 20)

/* ============================================================ open/close */

int qimg_fs_open(qimg_fs **out, qimg_image *img, unsigned partition, bool writable)
{
    struct qimg_fs_dev dev = { .img = img, .offset = 0, .size = qimg_size(img),
                               .writable = writable };
    *out = NULL;
    if (writable && img->read_only)
        return qimg_error(-EROFS, "the image is open read-only");
    if (partition) {
        int r = qimg_part_find(img, partition, &dev.offset, &dev.size);
        if (r < 0)
            return r;
    }
    int r = qimg_fs_probe_open(&dev, out);
    if (r == -EINVAL && !partition && !*out) {
        /* nothing on the whole disk: say so when it is partitioned */
        char msg[512];
        uint64_t off, size;
        snprintf(msg, sizeof msg, "%s", qimg_last_error());
        if (qimg_part_find(img, 1, &off, &size) == 0 || qimg_part_find(img, 2, &off, &size) == 0)
            return qimg_error(r, "%s (the disk has a partition table: choose a partition, "
                              "--partition N)", msg);
        return qimg_error(r, "%s", msg);
    }
    return r;
}

int qimg_fs_close(qimg_fs *fs)
{
    if (!fs)
        return 0;
    return fs->drv->close(fs);
}

const char *qimg_fs_type(const qimg_fs *fs)
{
    return fs->type;
}

/* ======================================================= small containers */

/* A hash map from a pair of 64-bit keys to a node id and an optional path;
 * used as the set of visited directories and the map of hard links. */
struct idmap_slot {
    uint64_t k1, k2;
    uint64_t ino;
    char *path;
    bool used;
};

struct idmap {
    struct idmap_slot *slots;
    size_t cap, n;
};

static size_t idmap_hash(uint64_t k1, uint64_t k2)
{
    uint64_t h = k1 * 0x9e3779b97f4a7c15ull ^ (k2 + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;
    return (size_t)(h ^ (h >> 29));
}

static struct idmap_slot *idmap_find(struct idmap *m, uint64_t k1, uint64_t k2)
{
    if (!m->cap)
        return NULL;
    for (size_t i = idmap_hash(k1, k2) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct idmap_slot *s = &m->slots[i];
        if (!s->used)
            return NULL;
        if (s->k1 == k1 && s->k2 == k2)
            return s;
    }
}

static struct idmap_slot *idmap_insert(struct idmap *m, uint64_t k1, uint64_t k2)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        struct idmap_slot *old = m->slots;
        size_t ocap = m->cap;
        m->slots = qimg_xcalloc(ncap, sizeof *m->slots);
        m->cap = ncap;
        m->n = 0;
        for (size_t i = 0; i < ocap; i++) {
            if (old[i].used) {
                struct idmap_slot *s = idmap_insert(m, old[i].k1, old[i].k2);
                s->ino = old[i].ino;
                s->path = old[i].path;
            }
        }
        free(old);
    }
    size_t i = idmap_hash(k1, k2) & (m->cap - 1);
    while (m->slots[i].used)
        i = (i + 1) & (m->cap - 1);
    struct idmap_slot *s = &m->slots[i];
    s->used = true;
    s->k1 = k1;
    s->k2 = k2;
    s->ino = 0;
    s->path = NULL;
    m->n++;
    return s;
}

static void idmap_free(struct idmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].path);
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static bool name_is_safe(const char *name)
{
    return name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/') &&
           strlen(name) <= FS_NAME_MAX;
}

/* ======================================================== path resolution */

struct resolved {
    qimg_fs_ino ino;
    qimg_fs_ino parent;             /* the directory holding it (root for root) */
    char name[FS_NAME_MAX + 1];     /* its name there ("" for the root) */
    struct qimg_fs_attr attr;
};

static int fs_getattr(struct qimg_fs *fs, qimg_fs_ino ino, struct qimg_fs_attr *attr)
{
    memset(attr, 0, sizeof *attr);
    return fs->drv->getattr(fs, ino, attr);
}

/* The target of a symlink (malloc'ed). */
static int fs_readlink(struct qimg_fs *fs, qimg_fs_ino ino, char **out)
{
    char *buf = qimg_xmalloc(FS_TARGET_MAX + 1);
    int r = fs->drv->readlink(fs, ino, buf, FS_TARGET_MAX + 1);
    if (r < 0) {
        free(buf);
        if (r == -ENAMETOOLONG)
            return qimg_error(r, "a symlink target is longer than %d bytes", FS_TARGET_MAX);
        return r;
    }
    buf[FS_TARGET_MAX] = '\0';
    *out = buf;
    return 0;
}

/* Resolves path from the root of fs.  follow_last: a symlink as the last
 * component is followed too (intermediate ones always are). */
static int resolve(struct qimg_fs *fs, const char *path, bool follow_last, struct resolved *res)
{
    qimg_fs_ino stack[FS_MAX_DEPTH];   /* directories from the root to the current one */
    size_t depth = 1;
    unsigned links = 0;
    int r = 0;
    size_t len = strlen(path);
    if (len >= FS_PATH_WORK_MAX)
        return qimg_error(-ENAMETOOLONG, "'%s': path too long", path);
    char *work = qimg_xmalloc(FS_PATH_WORK_MAX);
    memcpy(work, path, len + 1);
    char *p = work;
    char *names = qimg_xmalloc((size_t)FS_MAX_DEPTH * (FS_NAME_MAX + 1));
    stack[0] = fs->root;
    names[0] = '\0';
    res->ino = fs->root;
    res->parent = fs->root;
    res->name[0] = '\0';

    for (;;) {
        while (*p == '/')
            p++;
        if (!*p) {
            /* ends at a directory: the top of the stack */
            res->ino = stack[depth - 1];
            res->parent = depth > 1 ? stack[depth - 2] : fs->root;
            snprintf(res->name, sizeof res->name, "%s", names + (depth - 1) * (FS_NAME_MAX + 1));
            break;
        }
        char *end = strchr(p, '/');
        size_t clen = end ? (size_t)(end - p) : strlen(p);
        if (clen > FS_NAME_MAX) {
            r = qimg_error(-ENAMETOOLONG, "'%s': a name in the path is too long", path);
            goto out;
        }
        char comp[FS_NAME_MAX + 1];
        memcpy(comp, p, clen);
        comp[clen] = '\0';
        p += clen;
        bool more = *p != '\0';      /* a '/' follows (maybe only a trailing one) */
        if (!strcmp(comp, "."))
            continue;
        if (!strcmp(comp, "..")) {
            if (depth > 1)
                depth--;
            continue;
        }
        qimg_fs_ino dir = stack[depth - 1], ino;
        r = fs->drv->lookup(fs, dir, comp, &ino);
        if (r == -ENOENT) {
            r = qimg_error(-ENOENT, "'%s': No such file or directory", path);
            goto out;
        }
        if (r < 0)
            goto out;
        struct qimg_fs_attr attr;
        r = fs_getattr(fs, ino, &attr);
        if (r < 0)
            goto out;
        if (S_ISLNK(attr.mode) && (more || follow_last)) {
            if (++links > FS_MAX_SYMLINKS) {
                r = qimg_error(-ELOOP, "'%s': Too many levels of symbolic links", path);
                goto out;
            }
            char *target = NULL;
            r = fs_readlink(fs, ino, &target);
            if (r < 0)
                goto out;
            size_t tlen = strlen(target), rlen = strlen(p);
            if (tlen + 1 + rlen >= FS_PATH_WORK_MAX) {
                free(target);
                r = qimg_error(-ENAMETOOLONG, "'%s': path too long with its symlinks", path);
                goto out;
            }
            /* work = target + rest (rest starts with '/' or is empty) */
            memmove(work + tlen, p, rlen + 1);
            memcpy(work, target, tlen);
            p = work;
            if (target[0] == '/')
                depth = 1;
            free(target);
            continue;
        }
        if (more) {
            if (!S_ISDIR(attr.mode)) {
                r = qimg_error(-ENOTDIR, "'%s': Not a directory", path);
                goto out;
            }
            if (depth == FS_MAX_DEPTH) {
                r = qimg_error(-ENAMETOOLONG, "'%s': path too deep", path);
                goto out;
            }
            snprintf(names + depth * (FS_NAME_MAX + 1), FS_NAME_MAX + 1, "%s", comp);
            stack[depth++] = ino;
            continue;
        }
        res->ino = ino;
        res->parent = dir;
        snprintf(res->name, sizeof res->name, "%s", comp);
        break;
    }
    r = fs_getattr(fs, res->ino, &res->attr);
out:
    free(work);
    free(names);
    return r;
}

/* The last real name of a path as given ("a/b/" -> "b"), or NULL when it
 * ends in "." or ".." or names the root. */
static char *path_last_name(const char *path)
{
    size_t len = strlen(path);
    while (len > 0 && path[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/')
        start--;
    char *name = strndup(path + start, len - start);
    if (!name || !name_is_safe(name)) {
        free(name);
        return NULL;
    }
    return name;
}

/* ================================================================== list */

struct dir_names {
    char **names;
    qimg_fs_ino *inos;
    size_t n, cap;
    int err;
};

static int collect_entry(void *opaque, const char *name, qimg_fs_ino ino)
{
    struct dir_names *d = opaque;
    if (!name_is_safe(name)) {
        d->err = qimg_error(-EINVAL, "a directory holds an invalid name '%s'", name);
        return d->err;
    }
    if (d->n == FS_MAX_DIR_ENTRIES) {
        d->err = qimg_error(-EFBIG, "a directory holds more than %u entries",
                            FS_MAX_DIR_ENTRIES);
        return d->err;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->names = qimg_xrealloc(d->names, d->cap * sizeof *d->names);
        d->inos = qimg_xrealloc(d->inos, d->cap * sizeof *d->inos);
    }
    d->names[d->n] = qimg_strdup(name);
    d->inos[d->n] = ino;
    d->n++;
    return 0;
}

static void dir_names_free(struct dir_names *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->names[i]);
    free(d->names);
    free(d->inos);
}

struct name_ino { const char *name; qimg_fs_ino ino; };

static int cmp_name_ino(const void *a, const void *b)
{
    return strcmp(((const struct name_ino *)a)->name, ((const struct name_ino *)b)->name);
}

/* The entries of directory dir, sorted by name (strings owned by d). */
static int read_dir_sorted(struct qimg_fs *fs, qimg_fs_ino dir, struct dir_names *d,
                           struct name_ino **sorted)
{
    memset(d, 0, sizeof *d);
    int r = fs->drv->readdir(fs, dir, collect_entry, d);
    if (r < 0 || d->err < 0) {
        r = d->err < 0 ? d->err : r;
        dir_names_free(d);
        memset(d, 0, sizeof *d);
        return r;
    }
    if (r > 0) {
        dir_names_free(d);
        return qimg_error(-EIO, "directory walk stopped early");
    }
    struct name_ino *v = qimg_xcalloc(d->n ? d->n : 1, sizeof *v);
    for (size_t i = 0; i < d->n; i++) {
        v[i].name = d->names[i];
        v[i].ino = d->inos[i];
    }
    qsort(v, d->n, sizeof *v, cmp_name_ino);
    *sorted = v;
    return 0;
}

static int fill_entry(struct qimg_fs *fs, const char *name, qimg_fs_ino ino,
                      const struct qimg_fs_attr *attr, struct qimg_fs_entry *e)
{
    memset(e, 0, sizeof *e);
    e->name = qimg_strdup(name);
    e->mode = attr->mode;
    e->uid = attr->uid;
    e->gid = attr->gid;
    e->size = attr->size;
    e->nlink = attr->nlink;
    e->ino = ino;
    e->mtime = attr->mtime;
    e->mtime_ns = attr->mtime_ns;
    if (S_ISLNK(attr->mode))
        return fs_readlink(fs, ino, &e->link_target);
    return 0;
}

void qimg_fs_list_free(struct qimg_fs_entry *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].link_target);
    }
    free(list);
}

static int list_dir(struct qimg_fs *fs, qimg_fs_ino dir, struct qimg_fs_entry **list, size_t *n)
{
    struct dir_names d;
    struct name_ino *sorted = NULL;
    int r = read_dir_sorted(fs, dir, &d, &sorted);
    if (r < 0)
        return r;
    struct qimg_fs_entry *v = qimg_xcalloc(d.n ? d.n : 1, sizeof *v);
    size_t done = 0;
    for (; done < d.n; done++) {
        struct qimg_fs_attr attr;
        r = fs_getattr(fs, sorted[done].ino, &attr);
        if (r == 0)
            r = fill_entry(fs, sorted[done].name, sorted[done].ino, &attr, &v[done]);
        if (r < 0) {
            qimg_fs_list_free(v, done + 1);
            goto out;
        }
    }
    *list = v;
    *n = d.n;
out:
    free(sorted);
    dir_names_free(&d);
    return r;
}

int qimg_fs_list(qimg_fs *fs, const char *path, struct qimg_fs_entry **list, size_t *n)
{
    struct resolved res;
    *list = NULL;
    *n = 0;
    int r = resolve(fs, path, false, &res);
    if (r < 0)
        return r;
    if (S_ISLNK(res.attr.mode)) {
        /* a symlink to a directory lists the directory, as ls does */
        struct resolved target;
        if (resolve(fs, path, true, &target) == 0 && S_ISDIR(target.attr.mode))
            return list_dir(fs, target.ino, list, n);
        qimg_error_clear();
    }
    if (S_ISDIR(res.attr.mode))
        return list_dir(fs, res.ino, list, n);
    struct qimg_fs_entry *e = qimg_xcalloc(1, sizeof *e);
    r = fill_entry(fs, res.name, res.ino, &res.attr, e);
    if (r < 0) {
        qimg_fs_list_free(e, 1);
        return r;
    }
    *list = e;
    *n = 1;
    return 0;
}

/* =================================================================== cat */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return qimg_error_errno(-errno, "write error");
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        off += (uint64_t)w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads the data of a file range by range (holes, as next_data gives them,
 * are skipped) and hands each chunk to emit.  Every byte read counts
 * against *budget: a sound filesystem cannot hold more data than its
 * device, so a file whose blocks or clusters are mapped many times over (a
 * hostile image) ends with an error instead of reading for hours. */
typedef int (*data_emit_fn)(void *opaque, uint64_t pos, const char *buf, size_t len);

static int read_ranges(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size, const char *name,
                       char *buf, uint64_t *budget, data_emit_fn emit, void *opaque)
{
    uint64_t off = 0;
    while (off < size) {
        uint64_t start = off, end = size;
        if (fs->drv->next_data) {
            int r = fs->drv->next_data(fs, ino, off, &start, &end);
            if (r < 0)
                return r;
            if (start >= size)
                break;
            if (start < off || end <= start)
                return qimg_error(-EIO, "'%s': the filesystem gave a bad data range", name);
            end = QIMG_MIN(end, size);
        }
        for (uint64_t pos = start; pos < end;) {
            size_t want = (size_t)QIMG_MIN((uint64_t)FS_COPY_CHUNK, end - pos), got = 0;
            if (*budget < want)
                return qimg_error(-EFBIG, "'%s': the files map more data than the filesystem "
                                  "holds (damaged filesystem)", name);
            int r = fs->drv->read(fs, ino, pos, buf, want, &got);
            if (r < 0)
                return r;
            if (got == 0 || got > want)
                return qimg_error(-EIO, "'%s': the file ends before its size", name);
            *budget -= got;
            r = emit(opaque, pos, buf, got);
            if (r < 0)
                return r;
            pos += got;
        }
        off = end;
    }
    return 0;
}

static int need_regular(const char *path, const struct qimg_fs_attr *attr)
{
    if (S_ISDIR(attr->mode))
        return qimg_error(-EISDIR, "'%s': Is a directory", path);
    if (!S_ISREG(attr->mode))
        return qimg_error(-EINVAL, "'%s': not a regular file", path);
    return 0;
}

struct cat_out {
    int fd;
    uint64_t done;            /* bytes written so far */
    const char *zeros;        /* FS_COPY_CHUNK zero bytes */
};

/* Writes zeros up to pos (the holes before a data range). */
static int cat_zeros_to(struct cat_out *o, uint64_t pos)
{
    while (o->done < pos) {
        size_t n = (size_t)QIMG_MIN((uint64_t)FS_COPY_CHUNK, pos - o->done);
        int r = write_all(o->fd, o->zeros, n);
        if (r < 0)
            return r;
        o->done += n;
    }
    return 0;
}

static int cat_emit(void *opaque, uint64_t pos, const char *buf, size_t len)
{
    struct cat_out *o = opaque;
    int r = cat_zeros_to(o, pos);
    if (r == 0)
        r = write_all(o->fd, buf, len);
    if (r == 0)
        o->done += len;
    return r;
}

int qimg_fs_cat(qimg_fs *fs, const char *path, int fd)
{
    struct resolved res;
    int r = resolve(fs, path, true, &res);
    if (r == 0)
        r = need_regular(path, &res.attr);
    if (r < 0)
        return r;
    char *buf = qimg_xmalloc(FS_COPY_CHUNK);
    char *zeros = qimg_xcalloc(1, FS_COPY_CHUNK);
    struct cat_out o = { .fd = fd, .zeros = zeros };
    uint64_t budget = fs->dev.size;
    r = read_ranges(fs, res.ino, res.attr.size, path, buf, &budget, cat_emit, &o);
    if (r == 0)
        r = cat_zeros_to(&o, res.attr.size);
    free(buf);
    free(zeros);
    return r;
}

/* ============================================================== copy-out */

struct copy_out {
    struct qimg_fs *fs;
    int rootfd;                 /* the local directory given */
    struct idmap dirs;          /* directories visited (by node id) */
    struct idmap links;         /* files with several names: node id -> local path */
    char *buf;
    uint64_t budget;            /* data bytes the copy may still read */
    bool as_root;
};

static int local_error(int err, const char *what, const char *name)
{
    return qimg_error(-err, "%s '%s': %s", what, name, strerror(err));
}

/* Removes a non-directory already at name (copy-out replaces files). */
static int clear_local_name(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : local_error(errno, "cannot stat", name);
    if (S_ISDIR(st.st_mode))
        return qimg_error(-EISDIR, "cannot replace the local directory '%s' with a file", name);
    if (unlinkat(dirfd, name, 0) < 0)
        return local_error(errno, "cannot remove", name);
    return 0;
}

static void local_times(const struct qimg_fs_attr *a, struct timespec ts[2])
{
    ts[0].tv_sec = a->atime;
    ts[0].tv_nsec = a->atime_ns < 1000000000u ? a->atime_ns : 0;
    ts[1].tv_sec = a->mtime;
    ts[1].tv_nsec = a->mtime_ns < 1000000000u ? a->mtime_ns : 0;
}

struct out_file {
    int fd;
    const char *name;
};

static int out_emit(void *opaque, uint64_t pos, const char *buf, size_t len)
{
    struct out_file *o = opaque;
    if (qimg_is_zero(buf, len))
        return 0;             /* stays a hole */
    int r = pwrite_all(o->fd, buf, len, pos);
    return r < 0 ? local_error(-r, "cannot write", o->name) : 0;
}

static int out_file_data(struct copy_out *c, qimg_fs_ino ino, const struct qimg_fs_attr *a,
                         int fd, const char *name)
{
    struct out_file o = { .fd = fd, .name = name };
    int r = read_ranges(c->fs, ino, a->size, name, c->buf, &c->budget, out_emit, &o);
    if (r < 0)
        return r;
    if (ftruncate(fd, (off_t)a->size) < 0)
        return local_error(errno, "cannot write", name);
    return 0;
}

static int out_owner_mode_times(struct copy_out *c, int dirfd, const char *name,
                                const struct qimg_fs_attr *a, bool is_link)
{
    struct timespec ts[2];
    if (c->as_root && fchownat(dirfd, name, a->uid, a->gid, AT_SYMLINK_NOFOLLOW) < 0)
        return local_error(errno, "cannot set the owner of", name);
    if (!is_link && fchmodat(dirfd, name, a->mode & 07777, 0) < 0)
        return local_error(errno, "cannot set the mode of", name);
    local_times(a, ts);
    if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return local_error(errno, "cannot set the times of", name);
    return 0;
}

/* The same through a descriptor of the file or directory we created, so
 * nothing can redirect it (owner first: chown clears set-id bits). */
static int out_owner_mode_times_fd(struct copy_out *c, int fd, const char *name,
                                   const struct qimg_fs_attr *a)
{
    struct timespec ts[2];
    if (c->as_root && fchown(fd, a->uid, a->gid) < 0)
        return local_error(errno, "cannot set the owner of", name);
    if (fchmod(fd, a->mode & 07777) < 0)
        return local_error(errno, "cannot set the mode of", name);
    local_times(a, ts);
    if (futimens(fd, ts) < 0)
        return local_error(errno, "cannot set the times of", name);
    return 0;
}

static int out_node(struct copy_out *c, int dirfd, const char *relpath, const char *name,
                    qimg_fs_ino ino, unsigned depth);

static int out_dir_entries(struct copy_out *c, int fd, const char *relpath, qimg_fs_ino dir,
                           unsigned depth)
{
    struct dir_names d;
    struct name_ino *sorted = NULL;
    int r = read_dir_sorted(c->fs, dir, &d, &sorted);
    if (r < 0)
        return r;
    for (size_t i = 0; i < d.n && r == 0; i++) {
        char *child = relpath[0] ? qimg_asprintf("%s/%s", relpath, sorted[i].name)
                                 : qimg_strdup(sorted[i].name);
        r = out_node(c, fd, child, sorted[i].name, sorted[i].ino, depth + 1);
        free(child);
    }
    free(sorted);
    dir_names_free(&d);
    return r;
}

/* Marks a directory visited; an error when it was already (a loop, or a
 * directory with two names: both mean a damaged filesystem). */
static int visit_dir(struct idmap *dirs, qimg_fs_ino ino, const char *path, unsigned depth)
{
    if (depth > FS_MAX_DEPTH)
        return qimg_error(-ELOOP, "'%s': directories nested too deep", path);
    if (idmap_find(dirs, 0, ino))
        return qimg_error(-ELOOP, "'%s': directory loop (a directory appears twice)", path);
    idmap_insert(dirs, 0, ino);
    return 0;
}

static int out_dir(struct copy_out *c, int dirfd, const char *relpath, const char *name,
                   qimg_fs_ino ino, const struct qimg_fs_attr *a, unsigned depth)
{
    int r = visit_dir(&c->dirs, ino, relpath, depth);
    if (r < 0)
        return r;
    if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
        return local_error(errno, "cannot create directory", name);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return local_error(errno, "cannot open directory", name);
    r = out_dir_entries(c, fd, relpath, ino, depth);
    if (r == 0)
        r = out_owner_mode_times_fd(c, fd, relpath, a);
    close(fd);
    return r;
}

static int out_regular(struct copy_out *c, int dirfd, const char *relpath, const char *name,
                       qimg_fs_ino ino, const struct qimg_fs_attr *a)
{
    int r = clear_local_name(dirfd, name);
    if (r < 0)
        return r;
    if (a->nlink > 1) {
        struct idmap_slot *s = idmap_find(&c->links, 0, ino);
        if (s) {
            if (linkat(c->rootfd, s->path, dirfd, name, 0) < 0)
                return local_error(errno, "cannot link", relpath);
            return 0;
        }
    }
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return local_error(errno, "cannot create", relpath);
    r = out_file_data(c, ino, a, fd, relpath);
    if (r == 0)
        r = out_owner_mode_times_fd(c, fd, relpath, a);
    close(fd);
    if (r == 0 && a->nlink > 1)
        idmap_insert(&c->links, 0, ino)->path = qimg_strdup(relpath);
    return r;
}

static int out_special(struct copy_out *c, int dirfd, const char *relpath, const char *name,
                       qimg_fs_ino ino, const struct qimg_fs_attr *a)
{
    int r = clear_local_name(dirfd, name);
    if (r < 0)
        return r;
    if (S_ISLNK(a->mode)) {
        char *target = NULL;
        r = fs_readlink(c->fs, ino, &target);
        if (r < 0)
            return r;
        r = symlinkat(target, dirfd, name) < 0 ? local_error(errno, "cannot create symlink",
                                                             relpath) : 0;
        free(target);
        if (r == 0)
            r = out_owner_mode_times(c, dirfd, name, a, true);
        return r;
    }
    if (mknodat(dirfd, name, a->mode & (S_IFMT | 07777), (dev_t)a->rdev) < 0) {
        if (errno == EPERM) {
            qimg_warn("'%s': cannot create a device node without privileges: skipped", relpath);
            return 0;
        }
        return local_error(errno, "cannot create", relpath);
    }
    return out_owner_mode_times(c, dirfd, name, a, false);
}

static int out_node(struct copy_out *c, int dirfd, const char *relpath, const char *name,
                    qimg_fs_ino ino, unsigned depth)
{
    struct qimg_fs_attr a;
    if (!name_is_safe(name))
        return qimg_error(-EINVAL, "refusing to copy out the name '%s'", name);
    int r = fs_getattr(c->fs, ino, &a);
    if (r < 0)
        return r;
    if (S_ISDIR(a.mode))
        return out_dir(c, dirfd, relpath, name, ino, &a, depth);
    if (S_ISREG(a.mode))
        return out_regular(c, dirfd, relpath, name, ino, &a);
    return out_special(c, dirfd, relpath, name, ino, &a);
}

int qimg_fs_copy_out(qimg_fs *fs, const char *path, const char *localdir)
{
    struct resolved res;
    int r = resolve(fs, path, true, &res);
    if (r < 0)
        return r;
    struct copy_out c = { .fs = fs, .as_root = geteuid() == 0, .budget = fs->dev.size };
    c.rootfd = open(localdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c.rootfd < 0)
        return local_error(errno, "cannot open directory", localdir);
    c.buf = qimg_xmalloc(FS_COPY_CHUNK);

    CLEANUP_FREE char *given = path_last_name(path);
    const char *name = given ? given : res.name;
    if (S_ISDIR(res.attr.mode) && !name[0]) {
        /* the root: its content goes straight into localdir */
        r = visit_dir(&c.dirs, res.ino, "/", 0);
        if (r == 0)
            r = out_dir_entries(&c, c.rootfd, "", res.ino, 0);
    } else {
        r = out_node(&c, c.rootfd, name, name, res.ino, 0);
    }
    close(c.rootfd);
    free(c.buf);
    idmap_free(&c.dirs);
    idmap_free(&c.links);
    return r;
}

/* =============================================================== copy-in */

struct copy_in {
    struct qimg_fs *fs;
    struct idmap dirs;          /* local directories visited (dev, ino) */
    struct idmap links;         /* local (dev, ino) -> node id in fs */
    char *buf;
};

static void attr_from_stat(const struct stat *st, struct qimg_fs_attr *a)
{
    memset(a, 0, sizeof *a);
    a->mode = st->st_mode;
    a->uid = st->st_uid;
    a->gid = st->st_gid;
    a->size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
    a->nlink = 1;
    a->rdev = st->st_rdev;
    a->atime = st->st_atim.tv_sec;
    a->atime_ns = (uint32_t)st->st_atim.tv_nsec;
    a->mtime = st->st_mtim.tv_sec;
    a->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
    a->ctime = st->st_ctim.tv_sec;
    a->ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
    a->crtime = a->ctime;
    a->crtime_ns = a->ctime_ns;
}

/* Copies the data of the local file fd into node ino, range by range
 * (SEEK_DATA/SEEK_HOLE), so holes stay holes. */
static int in_file_data(struct copy_in *c, int fd, const char *lpath, qimg_fs_ino ino,
                        uint64_t size)
{
    struct qimg_fs *fs = c->fs;
    uint64_t off = 0;
    while (off < size) {
        off_t data = lseek(fd, (off_t)off, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break;
        if (data < 0 && errno != EINVAL)
            return local_error(errno, "cannot read", lpath);
        off_t hole = data < 0 ? (off_t)size : lseek(fd, data, SEEK_HOLE);
        if (data < 0)
            data = (off_t)off;
        if (hole < 0)
            hole = (off_t)size;
        uint64_t end = QIMG_MIN((uint64_t)hole, size);
        for (uint64_t pos = (uint64_t)data; pos < end;) {
            size_t want = (size_t)QIMG_MIN((uint64_t)FS_COPY_CHUNK, end - pos);
            ssize_t got = pread(fd, c->buf, want, (off_t)pos);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                return local_error(errno, "cannot read", lpath);
            if (got == 0) {          /* the file shrank under us */
                end = pos;
                size = pos;
                break;
            }
            if (!qimg_is_zero(c->buf, (size_t)got)) {
                int r = fs->drv->write(fs, ino, pos, c->buf, (size_t)got);
                if (r < 0)
                    return r;
            }
            pos += (uint64_t)got;
        }
        if (end <= off)
            break;
        off = end;
    }
    return fs->drv->truncate(fs, ino, size);
}

static int in_xattrs(struct copy_in *c, const char *lpath, qimg_fs_ino ino)
{
    struct qimg_fs *fs = c->fs;
    ssize_t len = llistxattr(lpath, NULL, 0);
    if (len < 0 && (errno == ENOTSUP || errno == ENOSYS))
        return 0;
    if (len < 0)
        return local_error(errno, "cannot list the extended attributes of", lpath);
    if (len == 0)
        return 0;
    char *names = qimg_xmalloc((size_t)len);
    len = llistxattr(lpath, names, (size_t)len);
    if (len < 0) {
        free(names);
        return local_error(errno, "cannot list the extended attributes of", lpath);
    }
    int r = 0;
    for (char *n = names; n < names + len && r == 0; n += strlen(n) + 1) {
        ssize_t vlen = lgetxattr(lpath, n, NULL, 0);
        if (vlen < 0 && (errno == ENODATA || errno == ENOTSUP))
            continue;
        if (vlen < 0 || vlen > 65536) {
            r = local_error(vlen < 0 ? errno : E2BIG, "cannot read the extended attributes of",
                            lpath);
            break;
        }
        char *val = qimg_xmalloc((size_t)vlen + 1);
        vlen = lgetxattr(lpath, n, val, (size_t)vlen);
        if (vlen >= 0) {
            if (!fs->drv->setxattr)
                r = 0;
            else
                r = fs->drv->setxattr(fs, ino, n, val, (size_t)vlen);
            if (r == -ENOTSUP) {
                qimg_error_clear();
                r = 0;
            }
        }
        free(val);
    }
    free(names);
    return r;
}

/* What is at name in dir: 0 with *ino and *attr, 1 when absent. */
static int fs_exists(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino *ino,
                     struct qimg_fs_attr *attr)
{
    int r = fs->drv->lookup(fs, dir, name, ino);
    if (r == -ENOENT) {
        qimg_error_clear();
        return 1;
    }
    if (r < 0)
        return r;
    return fs_getattr(fs, *ino, attr);
}

static int in_node(struct copy_in *c, qimg_fs_ino dir, const char *lpath, const char *name,
                   unsigned depth);

static int strcmp_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int in_dir(struct copy_in *c, qimg_fs_ino dir, const char *lpath, const char *name,
                  const struct stat *st, unsigned depth)
{
    struct qimg_fs *fs = c->fs;
    if (depth > FS_MAX_DEPTH)
        return qimg_error(-ELOOP, "'%s': directories nested too deep", lpath);
    if (idmap_find(&c->dirs, st->st_dev, st->st_ino))
        return qimg_error(-ELOOP, "'%s': directory loop", lpath);
    idmap_insert(&c->dirs, st->st_dev, st->st_ino);

    struct qimg_fs_attr a, old;
    attr_from_stat(st, &a);
    qimg_fs_ino ino;
    int r = fs_exists(fs, dir, name, &ino, &old);
    if (r < 0)
        return r;
    if (r == 0 && !S_ISDIR(old.mode))
        return qimg_error(-ENOTDIR, "cannot replace the non-directory '%s' with a directory",
                          name);
    if (r == 1) {
        struct qimg_fs_attr tmp = a;
        tmp.mode = S_IFDIR | 0700;
        r = fs->drv->create(fs, dir, name, &tmp, NULL, &ino);
        if (r < 0)
            return r;
    }

    DIR *d = opendir(lpath);
    if (!d)
        return local_error(errno, "cannot open directory", lpath);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = qimg_xrealloc(names, cap * sizeof *names);
        }
        names[n++] = qimg_strdup(de->d_name);
    }
    r = errno ? local_error(errno, "cannot read directory", lpath) : 0;
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, strcmp_ptr);
    for (size_t i = 0; i < n && r == 0; i++) {
        char *child = qimg_asprintf("%s/%s", lpath, names[i]);
        r = in_node(c, ino, child, names[i], depth + 1);
        free(child);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (r == 0)
        r = in_xattrs(c, lpath, ino);
    if (r == 0)
        r = fs->drv->setattr(fs, ino, &a);
    return r;
}

static int in_nondir(struct copy_in *c, qimg_fs_ino dir, const char *lpath, const char *name,
                     const struct stat *st)
{
    struct qimg_fs *fs = c->fs;
    struct qimg_fs_attr a, old;
    attr_from_stat(st, &a);
    qimg_fs_ino ino;
    int r = fs_exists(fs, dir, name, &ino, &old);
    if (r < 0)
        return r;
    if (r == 0) {
        if (S_ISDIR(old.mode))
            return qimg_error(-EISDIR, "cannot replace the directory '%s' with a non-directory",
                              name);
        r = fs->drv->unlink(fs, dir, name);
        if (r < 0)
            return r;
    }

    /* A further name of a local file already copied: a hard link. */
    struct idmap_slot *seen = st->st_nlink > 1 ? idmap_find(&c->links, st->st_dev, st->st_ino)
                                               : NULL;
    if (seen && fs->drv->link) {
        r = fs->drv->link(fs, dir, name, seen->ino);
        if (r != -ENOTSUP)
            return r;
        qimg_error_clear();       /* FAT: a copy of its own */
    }

    char *target = NULL;
    if (S_ISLNK(st->st_mode)) {
        target = qimg_xmalloc(PATH_MAX + 1);
        ssize_t len = readlink(lpath, target, PATH_MAX);
        if (len < 0) {
            free(target);
            return local_error(errno, "cannot read symlink", lpath);
        }
        target[len] = '\0';
        a.size = (uint64_t)len;
    }
    int fd = -1;
    if (S_ISREG(st->st_mode)) {
        fd = open(lpath, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return local_error(errno, "cannot open", lpath);
    }
    struct qimg_fs_attr create_attr = a;
    create_attr.size = S_ISLNK(a.mode) ? a.size : 0;
    r = fs->drv->create(fs, dir, name, &create_attr, target, &ino);
    free(target);
    if (r == -ENOTSUP && !S_ISREG(st->st_mode)) {
        qimg_error_clear();
        qimg_warn("'%s': the %s filesystem cannot hold this kind of file: skipped", lpath,
                  fs->type);
        return 0;
    }
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        return r;
    }
    if (fd >= 0) {
        r = in_file_data(c, fd, lpath, ino, (uint64_t)st->st_size);
        close(fd);
        if (r < 0) {
            /* no half-copied file is left behind */
            char saved[1024];
            snprintf(saved, sizeof saved, "%s", qimg_last_error());
            fs->drv->unlink(fs, dir, name);
            return qimg_error(r, "%s", saved);
        }
    }
    r = in_xattrs(c, lpath, ino);
    if (r == 0)
        r = fs->drv->setattr(fs, ino, &a);
    if (r == 0 && st->st_nlink > 1 && !seen)
        idmap_insert(&c->links, st->st_dev, st->st_ino)->ino = ino;
    return r;
}

static int in_node(struct copy_in *c, qimg_fs_ino dir, const char *lpath, const char *name,
                   unsigned depth)
{
    struct stat st;
    if (!name_is_safe(name))
        return qimg_error(-EINVAL, "cannot copy in the name '%s'", name);
    if (lstat(lpath, &st) < 0)
        return local_error(errno, "cannot stat", lpath);
    if (S_ISDIR(st.st_mode))
        return in_dir(c, dir, lpath, name, &st, depth);
    return in_nondir(c, dir, lpath, name, &st);
}

/* The name a local path is copied in under: its last component, or the
 * real directory's name for "." and "..". */
static char *local_name(const char *localpath)
{
    char *name = path_last_name(localpath);
    if (name)
        return name;
    char *real = realpath(localpath, NULL);
    if (!real)
        return NULL;
    name = path_last_name(real);
    free(real);
    return name;
}

int qimg_fs_copy_in(qimg_fs *fs, const char *localpath, const char *dir)
{
    struct resolved res;
    if (!fs->dev.writable)
        return qimg_error(-EROFS, "the filesystem is open read-only");
    int r = resolve(fs, dir, true, &res);
    if (r < 0)
        return r;
    if (!S_ISDIR(res.attr.mode))
        return qimg_error(-ENOTDIR, "'%s': Not a directory", dir);
    CLEANUP_FREE char *name = local_name(localpath);
    if (!name) {
        struct stat st;
        if (lstat(localpath, &st) < 0)
            return local_error(errno, "cannot stat", localpath);
        return qimg_error(-EINVAL, "'%s': cannot copy in a path without a name", localpath);
    }
    struct copy_in c = { .fs = fs };
    c.buf = qimg_xmalloc(FS_COPY_CHUNK);
    r = in_node(&c, res.ino, localpath, name, 0);
    free(c.buf);
    idmap_free(&c.dirs);
    idmap_free(&c.links);
    return r;
}
