/* Filling a new filesystem from a directory or a tar archive.
 *
 * Two passes over the source: usage (what the tree holds, for the size of
 * the filesystem) and populate (create every node through the driver).
 *
 * What is copied, and how:
 *  - a directory is walked with lstat: symbolic links below it are copied
 *    as links, never followed; entries are taken in strcmp order of their
 *    names, so two builds of one tree create the same nodes in the same
 *    order;
 *  - a tar archive (or any format libarchive reads, compressed or not) is
 *    taken in archive order; parents missing from it are created (mode
 *    0755, owner 0:0, time opts->now); a later entry of the same name
 *    replaces an earlier non-directory, as tar does when extracting;
 *    members whose names hold ".." are skipped with a warning;
 *  - regular files: only data is written: holes of the source (SEEK_DATA /
 *    SEEK_HOLE, sparse tar members) and 4 KiB blocks of zeros are skipped,
 *    so sparse files stay sparse; data is read in 1 MiB chunks;
 *  - hard links: a directory's files with several links are recognised by
 *    (st_dev, st_ino), a tar's by its hard link members; where the
 *    filesystem has no hard links (FAT) each further name gets its own copy
 *    of the data;
 *  - symbolic links, devices, FIFOs and sockets: created where the
 *    filesystem can hold them, otherwise skipped with a warning (the first
 *    MAX_WARNINGS one by one, then a count);
 *  - mode, owner (numeric, as the directory or the archive gives it),
 *    atime, mtime, ctime and creation time; extended attributes of the
 *    user., trusted., security. and system.posix_acl_ namespaces (others
 *    belong to the source's filesystem and are dropped, as are all of them
 *    on FAT; a count is given);
 *  - attributes are set after the data so the mtime sticks; directories get
 *    theirs after their whole content, deepest first.
 * Reproducible builds clamp every time to the epoch and take atime from
 * mtime, since reading the source moves its atimes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#ifdef HAVE_LIBARCHIVE
#include "archive-dl.h"
#endif

#include "internal.h"
#include "populate.h"

#define CHUNK (1u << 20)          /* data is read and written in pieces of this */
#define ZBLOCK 4096u              /* all-zero blocks of this size are not written */
#define MAX_WARNINGS 20           /* skipped entries named one by one */
#define MAX_DEPTH 4096            /* directory nesting of a source directory */

/* ------------------------------------------------------------ a hash map */

/* Byte-string keys; each entry carries a number and an owned pointer. */
struct hent {
    void *key;
    size_t klen;
    uint64_t hash;
    uint64_t u;
    void *ptr;
};
struct hmap {
    struct hent *v;
    size_t cap, n;
};

static uint64_t hash_bytes(const void *key, size_t len)
{
    const unsigned char *b = key;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static void hmap_grow(struct hmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    struct hent *v = qimg_xcalloc(cap, sizeof *v);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->v[i].key)
            continue;
        size_t j = m->v[i].hash & (cap - 1);
        while (v[j].key)
            j = (j + 1) & (cap - 1);
        v[j] = m->v[i];
    }
    free(m->v);
    m->v = v;
    m->cap = cap;
}

/* The entry of key; with insert, a new zeroed one when absent (*added). */
static struct hent *hmap_find(struct hmap *m, const void *key, size_t klen, bool insert,
                              bool *added)
{
    if (added)
        *added = false;
    if (insert && (m->n + 1) * 4 > m->cap * 3)
        hmap_grow(m);
    if (!m->cap)
        return NULL;
    uint64_t h = hash_bytes(key, klen);
    size_t i = h & (m->cap - 1);
    while (m->v[i].key) {
        struct hent *e = &m->v[i];
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
        i = (i + 1) & (m->cap - 1);
    }
    if (!insert)
        return NULL;
    struct hent *e = &m->v[i];
    e->key = qimg_xmalloc(klen + 1);
    memcpy(e->key, key, klen);
    ((char *)e->key)[klen] = '\0';
    e->klen = klen;
    e->hash = h;
    m->n++;
    if (added)
        *added = true;
    return e;
}

/* (unused in a build without libarchive: only the tar reader needs it) */
__attribute__((unused))
static struct hent *hmap_str(struct hmap *m, const char *s, bool insert, bool *added)
{
    return hmap_find(m, s, strlen(s), insert, added);
}

static void hmap_free(struct hmap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->v[i].key);
        free(m->v[i].ptr);
    }
    free(m->v);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------ the source */

struct qimg_fs_source {
    char *path;               /* as given, for messages */
    bool is_tar;
    int fd;                   /* tar: the archive, seekable; -1 for a directory */
    off_t start;              /* tar: where the archive starts in fd */
};

bool qimg_fs_source_is_tar(const struct qimg_fs_source *src)
{
    return src->is_tar;
}

void qimg_fs_source_close(struct qimg_fs_source *src)
{
    if (!src)
        return;
    if (src->fd >= 0)
        close(src->fd);
    free(src->path);
    free(src);
}

/* An unlinked temporary file in $TMPDIR (default /var/tmp). */
static int temp_file(void)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/var/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    CLEANUP_FREE char *name = qimg_asprintf("%s/qimg-source-XXXXXX", dir);
    fd = mkstemp(name);
    if (fd < 0)
        return qimg_error_errno(-errno, "Could not create a temporary file in '%s'", dir);
    unlink(name);
    return fd;
}

/* Copy a stream that cannot be read twice (a pipe) into a temporary file. */
static int spool(struct qimg_fs_source *src, int in)
{
    int fd = temp_file();
    if (fd < 0)
        return fd;
    CLEANUP_FREE char *buf = qimg_xmalloc(CHUNK);
    for (;;) {
        ssize_t n = read(in, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return qimg_error_errno(-e, "Could not read '%s'", src->path);
        }
        if (n == 0)
            break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(fd, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                int e = errno;
                close(fd);
                return qimg_error_errno(-e, "Could not spool '%s' to a temporary file",
                                        src->path);
            }
            done += w;
        }
    }
    src->fd = fd;
    src->start = 0;
    return 0;
}

/* A tar on fd: used in place when seekable, spooled otherwise. */
static int open_archive_fd(struct qimg_fs_source *src, int fd)
{
    struct stat st;
    src->is_tar = true;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        off_t pos = lseek(fd, 0, SEEK_CUR);
        if (pos >= 0) {
            src->fd = fd;
            src->start = pos;
            return 0;
        }
    }
    int r = spool(src, fd);
    close(fd);
    return r;
}

int qimg_fs_source_open(struct qimg_fs_source **out, const char *path)
{
    struct qimg_fs_source *src = qimg_xcalloc(1, sizeof *src);
    struct stat st;
    int r = 0;
    src->path = qimg_strdup(path);
    src->fd = -1;
    *out = NULL;
    if (strcmp(path, "-") == 0) {
        int fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
        r = fd < 0 ? qimg_error_errno(-errno, "Could not read the source from stdin")
                   : open_archive_fd(src, fd);
    } else if (stat(path, &st) < 0) {
        r = qimg_error_errno(-errno, "Could not open '%s'", path);
    } else if (!S_ISDIR(st.st_mode)) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        r = fd < 0 ? qimg_error_errno(-errno, "Could not open '%s'", path)
                   : open_archive_fd(src, fd);
    }
#ifndef HAVE_LIBARCHIVE
    if (r == 0 && src->is_tar)
        r = qimg_error(-ENOTSUP, "'%s' is not a directory, and this qimg was built without "
                       "libarchive to read archives", path);
#endif
    if (r < 0) {
        qimg_fs_source_close(src);
        return r;
    }
    *out = src;
    return 0;
}

/* ------------------------------------------------------------ attributes */

static void clamp_time(int64_t epoch, int64_t *sec, uint32_t *ns)
{
    if (*sec > epoch || (*sec == epoch && *ns)) {
        *sec = epoch;
        *ns = 0;
    }
}

static void clamp_attr(const struct qimg_populate_opts *o, struct qimg_fs_attr *a)
{
    if (!o->reproducible)
        return;
    clamp_time(o->epoch, &a->mtime, &a->mtime_ns);
    clamp_time(o->epoch, &a->ctime, &a->ctime_ns);
    clamp_time(o->epoch, &a->crtime, &a->crtime_ns);
    a->atime = a->mtime;
    a->atime_ns = a->mtime_ns;
}

static void attr_from_statx(const struct statx *sx, struct qimg_fs_attr *a)
{
    memset(a, 0, sizeof *a);
    a->mode = sx->stx_mode;
    a->uid = sx->stx_uid;
    a->gid = sx->stx_gid;
    a->size = sx->stx_size;
    a->nlink = sx->stx_nlink;
    a->rdev = makedev(sx->stx_rdev_major, sx->stx_rdev_minor);
    a->atime = sx->stx_atime.tv_sec;
    a->atime_ns = sx->stx_atime.tv_nsec;
    a->mtime = sx->stx_mtime.tv_sec;
    a->mtime_ns = sx->stx_mtime.tv_nsec;
    a->ctime = sx->stx_ctime.tv_sec;
    a->ctime_ns = sx->stx_ctime.tv_nsec;
    if (sx->stx_mask & STATX_BTIME) {
        a->crtime = sx->stx_btime.tv_sec;
        a->crtime_ns = sx->stx_btime.tv_nsec;
    } else {
        a->crtime = a->ctime;
        a->crtime_ns = a->ctime_ns;
    }
}

static int lstatx(const char *path, struct statx *sx)
{
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, sx) < 0)
        return qimg_error_errno(-errno, "Could not stat '%s'", path);
    return 0;
}

/* Allocated 4 KiB blocks of a file: its data without holes, taken from
 * st_blocks (a file stored inline in its inode has none but needs one). */
static uint64_t data_blocks(uint64_t size, uint64_t blocks512)
{
    uint64_t by_size = qimg_div_round_up(size, 4096);
    uint64_t by_alloc = qimg_div_round_up(blocks512, 8);
    if (by_alloc == 0 && size > 0 && size <= 4096)
        by_alloc = 1;
    return QIMG_MIN(by_size, by_alloc);
}

/* xattr namespaces that mean something on another filesystem. */
static bool xattr_portable(const char *name)
{
    return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0 ||
           strncmp(name, "security.", 9) == 0 ||
           strcmp(name, "system.posix_acl_access") == 0 ||
           strcmp(name, "system.posix_acl_default") == 0;
}

static const char *kind_name(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFLNK: return "symbolic links";
    case S_IFCHR: return "character devices";
    case S_IFBLK: return "block devices";
    case S_IFIFO: return "FIFOs";
    case S_IFSOCK: return "sockets";
    case S_IFDIR: return "directories";
    case S_IFREG: return "regular files";
    default: return "nodes of this type";
    }
}

/* ------------------------------------------------------- the populate run */

struct populate {
    const struct qimg_populate_opts *o;
    struct qimg_populate_stats *st;
    struct qimg_fs *fs;
    const struct qimg_fs_driver *drv;
    uint8_t *buf;             /* reading, CHUNK bytes */
    uint8_t *stage;           /* tar: small pieces gathered, CHUNK bytes */
    struct hmap links;        /* hard links: source key -> fs ino (u) */
    struct hmap dirs;         /* tar: directory path -> struct dir_rec (ptr) */
    uint64_t warned;
    uint64_t foreign_xattrs;  /* of namespaces that mean nothing elsewhere */
};

static void skipped(struct populate *p, const char *path, const char *why)
{
    p->st->skipped++;
    if (++p->warned <= MAX_WARNINGS)
        qimg_warn("'%s' skipped: %s", path, why);
}

static void skip_unsupported(struct populate *p, const char *path, uint32_t mode)
{
    char why[128];
    snprintf(why, sizeof why, "%s cannot hold %s", p->fs->type, kind_name(mode));
    skipped(p, path, why);
}

static int set_xattr(struct populate *p, const char *path, qimg_fs_ino ino, const char *name,
                     const void *value, size_t len)
{
    if (!xattr_portable(name)) {
        p->foreign_xattrs++;
        return 0;
    }
    if (!p->drv->setxattr) {
        p->st->xattrs_dropped++;
        return 0;
    }
    int r = p->drv->setxattr(p->fs, ino, name, value, len);
    if (r == -ENOTSUP) {
        qimg_error_clear();
        p->st->xattrs_dropped++;
        return 0;
    }
    if (r < 0)
        qimg_error_prefix("'%s': extended attribute %s", path, name);
    return r;
}

/* --- data --- */

struct wstate {
    qimg_fs_ino ino;
    uint64_t written_end;     /* end of the last range written */
    uint64_t logical_end;     /* end of the data seen (zeros included) */
    uint64_t stage_off;       /* tar: file offset of the staged bytes */
    size_t stage_len;
};

static int put(struct populate *p, struct wstate *w, uint64_t off, const uint8_t *buf,
               size_t len)
{
    int r = p->drv->write(p->fs, w->ino, off, buf, len);
    if (r < 0)
        return r;
    w->written_end = QIMG_MAX(w->written_end, off + len);
    return 0;
}

/* Write buf at file offset off, leaving out the 4 KiB blocks (aligned in
 * the file) that hold only zeros. */
static int write_data(struct populate *p, struct wstate *w, uint64_t off, const uint8_t *buf,
                      size_t len)
{
    size_t i = 0, run = SIZE_MAX;
    int r = 0;
    while (i < len && r == 0) {
        size_t end = QIMG_MIN(len, i + (ZBLOCK - (size_t)((off + i) % ZBLOCK)));
        bool zero = qimg_is_zero(buf + i, end - i);
        if (!zero && run == SIZE_MAX)
            run = i;
        if (zero && run != SIZE_MAX) {
            r = put(p, w, off + run, buf + run, i - run);
            run = SIZE_MAX;
        }
        i = end;
    }
    if (r == 0 && run != SIZE_MAX)
        r = put(p, w, off + run, buf + run, len - run);
    if (r < 0)
        return r;
    w->logical_end = QIMG_MAX(w->logical_end, off + len);
    p->st->bytes += len;
    if (p->o->progress)
        p->o->progress(p->st->bytes, p->o->opaque);
    return 0;
}

static int stage_flush(struct populate *p, struct wstate *w)
{
    int r = 0;
    if (w->stage_len)
        r = write_data(p, w, w->stage_off, p->stage, w->stage_len);
    w->stage_len = 0;
    return r;
}

/* Tar pieces can be small: gather contiguous ones into CHUNK-sized writes.
 * (unused in a build without libarchive) */
__attribute__((unused))
static int stage_add(struct populate *p, struct wstate *w, uint64_t off, const uint8_t *buf,
                     size_t len)
{
    int r;
    while (len > 0) {
        if (w->stage_len && (off != w->stage_off + w->stage_len || w->stage_len == CHUNK)) {
            if ((r = stage_flush(p, w)) < 0)
                return r;
        }
        if (!w->stage_len && len >= CHUNK)
            return write_data(p, w, off, buf, len);
        if (!w->stage_len)
            w->stage_off = off;
        size_t n = QIMG_MIN(len, CHUNK - w->stage_len);
        memcpy(p->stage + w->stage_len, buf, n);
        w->stage_len += n;
        off += n;
        buf += n;
        len -= n;
    }
    return 0;
}

/* The file's size when its last bytes were holes or zeros. */
static int finish_file(struct populate *p, struct wstate *w, uint64_t size)
{
    if (w->written_end == size)
        return 0;
    return p->drv->truncate(p->fs, w->ino, size);
}

/* Copy a file of the new filesystem into another (hard links on FAT). */
static int copy_from_fs(struct populate *p, qimg_fs_ino from, qimg_fs_ino to, uint64_t size)
{
    struct wstate w = { .ino = to };
    uint64_t off = 0;
    int r;
    while (off < size) {
        uint64_t start = off, end = size;
        if (p->drv->next_data && (r = p->drv->next_data(p->fs, from, off, &start, &end)) < 0)
            return r;
        if (start >= size || end <= start)
            break;
        end = QIMG_MIN(end, size);
        for (uint64_t pos = start; pos < end;) {
            size_t got = 0;
            size_t n = (size_t)QIMG_MIN(end - pos, CHUNK);
            if ((r = p->drv->read(p->fs, from, pos, p->buf, n, &got)) < 0)
                return r;
            if (got == 0)
                return finish_file(p, &w, size);
            if ((r = write_data(p, &w, pos, p->buf, got)) < 0)
                return r;
            pos += got;
        }
        off = end;
    }
    return finish_file(p, &w, size);
}

/* --- nodes --- */

static bool fs_is_fat(const struct populate *p)
{
    return strncmp(p->fs->type, "fat", 3) == 0 || strcmp(p->fs->type, "vfat") == 0;
}

static int exists_error(struct populate *p, const char *path)
{
    if (fs_is_fat(p))
        return qimg_error(-EEXIST, "'%s': the name is taken by another entry of the same "
                          "directory (FAT names ignore case)", path);
    return qimg_error(-EEXIST, "'%s': the name is already taken in the new filesystem", path);
}

/* Create a node; 1 when the filesystem cannot hold its type (skipped with
 * a warning).  -EEXIST is returned without a message for the caller. */
static int make_node(struct populate *p, const char *path, qimg_fs_ino dir, const char *name,
                     const struct qimg_fs_attr *a, const char *target, qimg_fs_ino *ino)
{
    int r = p->drv->create(p->fs, dir, name, a, target, ino);
    if (r == -ENOTSUP && !S_ISREG(a->mode) && !S_ISDIR(a->mode)) {
        qimg_error_clear();
        skip_unsupported(p, path, a->mode);
        return 1;
    }
    if (r == -EEXIST) {
        qimg_error_clear();
        return r;
    }
    if (r < 0)
        qimg_error_prefix("'%s'", path);
    return r;
}

/* A directory, or the one already there (ext's lost+found). */
static int make_dir(struct populate *p, const char *path, qimg_fs_ino dir, const char *name,
                    const struct qimg_fs_attr *a, qimg_fs_ino *ino)
{
    int r = make_node(p, path, dir, name, a, NULL, ino);
    if (r != -EEXIST)
        return r;
    struct qimg_fs_attr old;
    if ((r = p->drv->lookup(p->fs, dir, name, ino)) < 0 ||
        (r = p->drv->getattr(p->fs, *ino, &old)) < 0) {
        qimg_error_prefix("'%s'", path);
        return r;
    }
    if (!S_ISDIR(old.mode))
        return qimg_error(-ENOTDIR, "'%s' is both a directory and a file in the source", path);
    return 0;
}

/* Another name for the node target: a hard link, or a copy of its data
 * where the filesystem has no hard links.  a: the attributes to set. */
static int link_or_copy(struct populate *p, const char *path, qimg_fs_ino dir, const char *name,
                        qimg_fs_ino target, const struct qimg_fs_attr *a)
{
    int r = p->drv->link ? p->drv->link(p->fs, dir, name, target) : -ENOTSUP;
    if (r == 0) {
        /* the link may have moved the node's ctime: stamp it again */
        r = p->drv->setattr(p->fs, target, a);
    } else if (r == -ENOTSUP) {
        struct qimg_fs_attr ta;
        qimg_fs_ino ino;
        qimg_error_clear();
        if ((r = p->drv->getattr(p->fs, target, &ta)) < 0)
            goto out;
        if (!S_ISREG(ta.mode)) {
            skip_unsupported(p, path, ta.mode);
            return 0;
        }
        struct qimg_fs_attr na = *a;
        na.mode = S_IFREG | (a->mode & 07777);
        na.size = ta.size;
        r = make_node(p, path, dir, name, &na, NULL, &ino);
        if (r == -EEXIST)
            return exists_error(p, path);
        if (r != 0)
            return r < 0 ? r : 0;
        if ((r = copy_from_fs(p, target, ino, ta.size)) < 0 ||
            (r = p->drv->setattr(p->fs, ino, &na)) < 0)
            goto out;
        p->st->link_copies++;
        return 0;
    } else if (r == -EEXIST) {
        qimg_error_clear();
        return exists_error(p, path);
    }
out:
    if (r < 0)
        qimg_error_prefix("'%s'", path);
    return r;
}

/* ---------------------------------------------------- directory: walking */

static int by_strcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Open without moving atimes where we may (our own files). */
static int open_noatime(const char *path, int flags)
{
    int fd = open(path, flags | O_NOATIME | O_CLOEXEC);
    if (fd < 0 && errno == EPERM)
        fd = open(path, flags | O_CLOEXEC);
    return fd;
}

/* The names in a directory, sorted with strcmp. */
static int read_names(const char *path, char ***names, size_t *n)
{
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    int fd = open_noatime(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return qimg_error_errno(-e, "Could not open directory '%s'", path);
    }
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) {
                int e = errno;
                closedir(d);
                for (size_t i = 0; i < *n; i++)
                    free((*names)[i]);
                free(*names);
                *names = NULL;
                *n = 0;
                return qimg_error_errno(-e, "Could not read directory '%s'", path);
            }
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            *names = qimg_xrealloc(*names, cap * sizeof **names);
        }
        (*names)[(*n)++] = qimg_strdup(de->d_name);
    }
    closedir(d);
    if (*n)
        qsort(*names, *n, sizeof **names, by_strcmp);
    return 0;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static char *join(const char *dir, const char *name)
{
    size_t l = strlen(dir);
    return qimg_asprintf("%s%s%s", dir, l && dir[l - 1] == '/' ? "" : "/", name);
}

/* The xattrs of a local file: cb(name, value, len) for each. */
static int local_xattrs(const char *path,
                        int (*cb)(void *opaque, const char *name, const void *v, size_t len),
                        void *opaque)
{
    ssize_t n = llistxattr(path, NULL, 0);
    if (n < 0 && (errno == ENOTSUP || errno == ENODATA))
        return 0;
    if (n < 0)
        return qimg_error_errno(-errno, "Could not list the extended attributes of '%s'", path);
    if (n == 0)
        return 0;
    CLEANUP_FREE char *list = qimg_xmalloc((size_t)n);
    n = llistxattr(path, list, (size_t)n);
    if (n < 0)   /* changed meanwhile: ERANGE; give up on this file's xattrs */
        return errno == ERANGE ? 0
                               : qimg_error_errno(-errno, "Could not list the extended "
                                                  "attributes of '%s'", path);
    for (char *name = list; name < list + n; name += strlen(name) + 1) {
        ssize_t len = lgetxattr(path, name, NULL, 0);
        if (len < 0 && (errno == ENODATA || errno == ENOTSUP || errno == EACCES || errno == EPERM))
            continue;
        if (len < 0)
            return qimg_error_errno(-errno, "Could not read the extended attribute %s of '%s'",
                                    name, path);
        CLEANUP_FREE char *value = qimg_xmalloc((size_t)len + 1);
        len = lgetxattr(path, name, value, (size_t)len);
        if (len < 0)
            continue;
        int r = cb(opaque, name, value, (size_t)len);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ------------------------------------------------------ directory: usage */

struct usage_ctx {
    struct qimg_fs_usage *u;
    bool links_as_copies;     /* each name of a file holds its own data */
    int64_t newest;
    struct hmap seen;         /* (dev, ino) of files with several links */
};

static int count_xattr(void *opaque, const char *name, const void *v, size_t len)
{
    struct usage_ctx *c = opaque;
    c->u->xattr_bytes += strlen(name) + len;
    return 0;
}

static bool first_link(struct hmap *m, const struct statx *sx)
{
    uint64_t key[2] = { (uint64_t)makedev(sx->stx_dev_major, sx->stx_dev_minor), sx->stx_ino };
    bool added;
    hmap_find(m, key, sizeof key, true, &added);
    return added;
}

static int usage_dir(struct usage_ctx *c, const char *path, unsigned depth)
{
    char **names;
    size_t n;
    int r;
    if (depth > MAX_DEPTH)
        return qimg_error(-ELOOP, "'%s': directories nested too deep", path);
    if ((r = read_names(path, &names, &n)) < 0)
        return r;
    c->u->max_dir_entries = QIMG_MAX(c->u->max_dir_entries, n);
    if (depth == 0) {
        /* FAT12/16 hold the top directory in a fixed area: counted apart */
        c->u->root_entries = n;
        for (size_t i = 0; i < n; i++)
            c->u->root_name_bytes += strlen(names[i]);
    }
    for (size_t i = 0; i < n && r == 0; i++) {
        CLEANUP_FREE char *child = join(path, names[i]);
        struct statx sx;
        if ((r = lstatx(child, &sx)) < 0)
            break;
        c->u->name_bytes += strlen(names[i]);
        c->newest = QIMG_MAX(c->newest, (int64_t)sx.stx_mtime.tv_sec);
        if (!S_ISDIR(sx.stx_mode) && sx.stx_nlink > 1 && !first_link(&c->seen, &sx)) {
            c->u->hardlinks++;
            if (c->links_as_copies && S_ISREG(sx.stx_mode)) {
                c->u->files++;
                c->u->data_bytes += sx.stx_size;
                c->u->data_blocks_4k += data_blocks(sx.stx_size, sx.stx_blocks);
            }
            continue;
        }
        if ((r = local_xattrs(child, count_xattr, c)) < 0)
            break;
        switch (sx.stx_mode & S_IFMT) {
        case S_IFDIR:
            c->u->dirs++;
            r = usage_dir(c, child, depth + 1);
            break;
        case S_IFREG:
            c->u->files++;
            c->u->data_bytes += sx.stx_size;
            c->u->data_blocks_4k += data_blocks(sx.stx_size, sx.stx_blocks);
            break;
        case S_IFLNK:
            c->u->symlinks++;
            c->u->symlink_bytes += sx.stx_size;
            break;
        default:
            c->u->others++;
            break;
        }
    }
    free_names(names, n);
    return r;
}

/* --------------------------------------------------- directory: populate */

struct xattr_copy {
    struct populate *p;
    const char *path;
    qimg_fs_ino ino;
};

static int put_xattr(void *opaque, const char *name, const void *v, size_t len)
{
    struct xattr_copy *x = opaque;
    return set_xattr(x->p, x->path, x->ino, name, v, len);
}

static int copy_local_xattrs(struct populate *p, const char *path, qimg_fs_ino ino)
{
    struct xattr_copy x = { p, path, ino };
    return local_xattrs(path, put_xattr, &x);
}

static int copy_local_data(struct populate *p, const char *path, qimg_fs_ino ino, uint64_t size)
{
    struct wstate w = { .ino = ino };
    int fd = open_noatime(path, O_RDONLY | O_NOFOLLOW);
    int r = 0;
    if (fd < 0)
        return qimg_error_errno(-errno, "Could not open '%s'", path);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint64_t off = 0;
    while (off < size && r == 0) {
        off_t d = lseek(fd, (off_t)off, SEEK_DATA);
        if (d < 0 && errno == ENXIO)
            break;                          /* only a hole is left */
        if (d < 0)
            d = (off_t)off;                 /* no SEEK_DATA here: all data */
        off_t h = lseek(fd, d, SEEK_HOLE);
        uint64_t end = h < 0 ? size : QIMG_MIN((uint64_t)h, size);
        if ((uint64_t)d >= end)
            break;
        for (uint64_t pos = (uint64_t)d; pos < end && r == 0;) {
            ssize_t got = pread(fd, p->buf, (size_t)QIMG_MIN(end - pos, CHUNK), (off_t)pos);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                r = qimg_error_errno(-errno, "Could not read '%s'", path);
                break;
            }
            if (got == 0) {                 /* the file shrank meanwhile */
                end = pos;
                break;
            }
            r = write_data(p, &w, pos, p->buf, (size_t)got);
            pos += (uint64_t)got;
        }
        off = end;
    }
    close(fd);
    if (r == 0)
        r = finish_file(p, &w, size);
    if (r < 0 && !strstr(qimg_last_error(), path))
        qimg_error_prefix("'%s'", path);
    return r;
}

static int populate_dir(struct populate *p, const char *path, qimg_fs_ino dir, unsigned depth);

/* Reading many files one after the other waits for the disk at each one:
 * ask the kernel to start reading the next files of the directory (up to
 * READ_AHEAD bytes ahead), so that their I/O overlaps our work. */
#define READ_AHEAD (32u << 20)
struct lookahead {
    uint64_t *sizes;          /* bytes asked for, per entry */
    size_t next;              /* first entry not looked at */
    uint64_t pending;         /* bytes asked for entries not copied yet */
};

static void read_ahead(struct lookahead *la, const char *dir, char **names, size_t n, size_t i)
{
    if (i < la->next)
        la->pending -= QIMG_MIN(la->pending, la->sizes[i]);
    else
        la->next = i + 1;     /* entry i is read now anyway */
    while (la->next < n && la->pending < READ_AHEAD) {
        size_t j = la->next++;
        CLEANUP_FREE char *child = join(dir, names[j]);
        struct stat st;
        if (lstat(child, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
            continue;
        int fd = open_noatime(child, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            continue;
        uint64_t len = QIMG_MIN((uint64_t)st.st_size, READ_AHEAD);
        posix_fadvise(fd, 0, (off_t)len, POSIX_FADV_WILLNEED);
        close(fd);
        la->sizes[j] = len;
        la->pending += len;
    }
}

static int populate_entry(struct populate *p, const char *path, qimg_fs_ino dir,
                          const char *name, unsigned depth)
{
    struct statx sx;
    struct qimg_fs_attr a;
    qimg_fs_ino ino = 0;
    int r;
    if ((r = lstatx(path, &sx)) < 0)
        return r;
    if (p->o->has_exclude && S_ISREG(sx.stx_mode) && sx.stx_ino == p->o->exclude_ino &&
        makedev(sx.stx_dev_major, sx.stx_dev_minor) == p->o->exclude_dev)
        return 0;                           /* our own temporary image */
    attr_from_statx(&sx, &a);
    clamp_attr(p->o, &a);

    bool multi = !S_ISDIR(a.mode) && a.nlink > 1;
    uint64_t key[2] = { (uint64_t)makedev(sx.stx_dev_major, sx.stx_dev_minor), sx.stx_ino };
    if (multi) {
        struct hent *e = hmap_find(&p->links, key, sizeof key, false, NULL);
        if (e && e->u)
            return link_or_copy(p, path, dir, name, e->u, &a);
        if (e) {                            /* its first name was skipped */
            skip_unsupported(p, path, a.mode);
            return 0;
        }
    }

    char target[PATH_MAX];
    const char *link_target = NULL;
    if (S_ISLNK(a.mode)) {
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n < 0)
            return qimg_error_errno(-errno, "Could not read the link '%s'", path);
        target[n] = '\0';
        link_target = target;
        a.size = (uint64_t)n;
    }
    if (S_ISDIR(a.mode))
        r = make_dir(p, path, dir, name, &a, &ino);
    else
        r = make_node(p, path, dir, name, &a, link_target, &ino);
    if (r == -EEXIST)
        return exists_error(p, path);
    if (multi) {
        /* remember the node, or that it was skipped (0) */
        struct hent *e = hmap_find(&p->links, key, sizeof key, true, NULL);
        e->u = r == 0 ? ino : 0;
    }
    if (r != 0)
        return r < 0 ? r : 0;

    if (S_ISREG(a.mode) && (r = copy_local_data(p, path, ino, a.size)) < 0)
        return r;
    if ((r = copy_local_xattrs(p, path, ino)) < 0)
        return r;
    if (S_ISDIR(a.mode) && (r = populate_dir(p, path, ino, depth + 1)) < 0)
        return r;
    if ((r = p->drv->setattr(p->fs, ino, &a)) < 0)
        qimg_error_prefix("'%s'", path);
    return r;
}

static int populate_dir(struct populate *p, const char *path, qimg_fs_ino dir, unsigned depth)
{
    char **names;
    size_t n;
    int r;
    if (depth > MAX_DEPTH)
        return qimg_error(-ELOOP, "'%s': directories nested too deep", path);
    if ((r = read_names(path, &names, &n)) < 0)
        return r;
    struct lookahead la = { .sizes = qimg_xcalloc(n ? n : 1, sizeof *la.sizes) };
    for (size_t i = 0; i < n && r == 0; i++) {
        read_ahead(&la, path, names, n, i);
        CLEANUP_FREE char *child = join(path, names[i]);
        r = populate_entry(p, child, dir, names[i], depth);
    }
    free(la.sizes);
    free_names(names, n);
    return r;
}

static int populate_from_dir(struct populate *p, const char *root)
{
    struct statx sx;
    struct qimg_fs_attr a;
    int r;
    /* the source itself may be a link to a directory */
    if (statx(AT_FDCWD, root, 0, STATX_BASIC_STATS | STATX_BTIME, &sx) < 0)
        return qimg_error_errno(-errno, "Could not stat '%s'", root);
    attr_from_statx(&sx, &a);
    clamp_attr(p->o, &a);
    if ((r = populate_dir(p, root, p->fs->root, 0)) < 0)
        return r;
    if ((r = copy_local_xattrs(p, root, p->fs->root)) < 0)
        return r;
    if ((r = p->drv->setattr(p->fs, p->fs->root, &a)) < 0)
        qimg_error_prefix("'%s'", root);
    return r;
}

/* ------------------------------------------------------------------ tar */

#ifdef HAVE_LIBARCHIVE

static int archive_fail(struct archive *a, const char *what, const char *path)
{
    int e = archive_errno(a);
    const char *msg = archive_error_string(a);
    return qimg_error(e > 0 ? -e : -EIO, "%s '%s': %s", what, path,
                      msg ? msg : "unknown libarchive error");
}

static int tar_open(struct qimg_fs_source *src, struct archive **out)
{
    if (lseek(src->fd, src->start, SEEK_SET) < 0)
        return qimg_error_errno(-errno, "Could not read '%s'", src->path);
    int r = qimg_archive_load();
    if (r < 0)
        return r;
    struct archive *a = archive_read_new();
    if (!a)
        return qimg_error(-ENOMEM, "Could not read '%s': out of memory", src->path);
    archive_read_support_filter_all(a);
    archive_read_support_format_all(a);
    if (archive_read_open_fd(a, src->fd, CHUNK) != ARCHIVE_OK) {
        r = archive_fail(a, "Could not read the archive", src->path);
        archive_read_free(a);
        return r;
    }
    *out = a;
    return 0;
}

/* 1 with the next entry, 0 at the end, <0 on error. */
static int tar_next(struct archive *a, struct archive_entry **e, const char *path)
{
    int r = archive_read_next_header(a, e);
    if (r == ARCHIVE_EOF)
        return 0;
    if (r == ARCHIVE_OK)
        return 1;
    if (r == ARCHIVE_WARN) {
        const char *msg = archive_error_string(a);
        if (msg)
            qimg_warn("'%s': %s", path, msg);
        return 1;
    }
    return archive_fail(a, "Could not read the archive", path);
}

static const char *entry_path(struct archive_entry *e)
{
    const char *s = archive_entry_pathname(e);
    return s ? s : archive_entry_pathname_utf8(e);
}

static const char *entry_hardlink(struct archive_entry *e)
{
    const char *s = archive_entry_hardlink(e);
    return s ? s : archive_entry_hardlink_utf8(e);
}

static const char *entry_symlink(struct archive_entry *e)
{
    const char *s = archive_entry_symlink(e);
    return s ? s : archive_entry_symlink_utf8(e);
}

/* A member name as a path below the root: "a/b/c", "" for the root, NULL
 * when a component is ".." (never written outside the tree). */
static char *normalize(const char *in)
{
    size_t len = strlen(in);
    char *out = qimg_xmalloc(len + 1);
    size_t o = 0;
    const char *p = in;
    while (*p) {
        while (*p == '/')
            p++;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - s);
        if (n == 0 || (n == 1 && s[0] == '.'))
            continue;
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            free(out);
            return NULL;
        }
        if (o)
            out[o++] = '/';
        memcpy(out + o, s, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

static unsigned path_depth(const char *path)
{
    unsigned d = *path ? 1 : 0;
    for (; *path; path++)
        d += *path == '/';
    return d;
}

/* The name after the last '/', and the parent's length. */
static const char *split_path(const char *path, size_t *parent_len)
{
    const char *slash = strrchr(path, '/');
    *parent_len = slash ? (size_t)(slash - path) : 0;
    return slash ? slash + 1 : path;
}

static int entry_attr(struct archive_entry *e, const char *path, struct qimg_fs_attr *a)
{
    memset(a, 0, sizeof *a);
    int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
    if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
        return qimg_error(-ERANGE, "'%s': owner %" PRId64 ":%" PRId64 " out of range",
                          path, uid, gid);
    a->mode = archive_entry_mode(e);
    a->uid = (uint32_t)uid;
    a->gid = (uint32_t)gid;
    a->size = archive_entry_size_is_set(e) && archive_entry_size(e) > 0
                  ? (uint64_t)archive_entry_size(e) : 0;
    a->nlink = 1;
    a->rdev = archive_entry_rdev(e);
    a->mtime = archive_entry_mtime(e);
    a->mtime_ns = (uint32_t)archive_entry_mtime_nsec(e);
    a->atime = a->mtime, a->atime_ns = a->mtime_ns;
    a->ctime = a->mtime, a->ctime_ns = a->mtime_ns;
    if (archive_entry_atime_is_set(e))
        a->atime = archive_entry_atime(e), a->atime_ns = (uint32_t)archive_entry_atime_nsec(e);
    if (archive_entry_ctime_is_set(e))
        a->ctime = archive_entry_ctime(e), a->ctime_ns = (uint32_t)archive_entry_ctime_nsec(e);
    a->crtime = a->ctime, a->crtime_ns = a->ctime_ns;
    if (archive_entry_birthtime_is_set(e))
        a->crtime = archive_entry_birthtime(e),
        a->crtime_ns = (uint32_t)archive_entry_birthtime_nsec(e);
    return 0;
}

/* --- usage --- */

static char *xstrndup(const char *s, size_t n)
{
    char *d = qimg_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Register the directory path and its ancestors not seen yet; in dirs,
 * u counts each directory's entries.  The walk goes up from path to the
 * deepest known ancestor, then down: one lookup for a known directory. */
static void usage_tar_dir(struct qimg_fs_usage *u, struct hmap *dirs, const char *path)
{
    CLEANUP_FREE char *buf = qimg_strdup(path);
    size_t len = strlen(path), known = len;
    while (!hmap_str(dirs, buf, false, NULL)) {
        char *slash = strrchr(buf, '/');
        known = slash ? (size_t)(slash - buf) : 0;
        buf[known] = '\0';
    }
    while (known < len) {
        size_t start = known ? known + 1 : 0, end = start;
        while (end < len && path[end] != '/')
            end++;
        hmap_str(dirs, buf, false, NULL)->u++;      /* one more entry in the parent */
        memcpy(buf, path, end);
        buf[end] = '\0';
        hmap_str(dirs, buf, true, NULL);
        u->dirs++;
        u->name_bytes += end - start;
        known = end;
    }
}

static void count_in_parent(struct qimg_fs_usage *u, struct hmap *dirs, const char *path)
{
    size_t plen;
    const char *name = split_path(path, &plen);
    char *parent = xstrndup(path, plen);
    usage_tar_dir(u, dirs, parent);
    hmap_str(dirs, parent, true, NULL)->u++;
    u->name_bytes += strlen(name);
    free(parent);
}

static uint64_t entry_blocks(struct archive_entry *e, uint64_t size)
{
    int n = archive_entry_sparse_reset(e);
    if (n <= 0)
        return qimg_div_round_up(size, 4096);
    uint64_t blocks = 0;
    la_int64_t off, len;
    while (archive_entry_sparse_next(e, &off, &len) == ARCHIVE_OK)
        if (off >= 0 && len > 0)
            blocks += qimg_div_round_up((uint64_t)len + (uint64_t)off % 4096, 4096);
    return QIMG_MIN(blocks, qimg_div_round_up(size, 4096));
}

static int usage_tar(struct qimg_fs_source *src, struct qimg_fs_usage *u, int64_t *newest,
                     bool links_as_copies)
{
    struct archive *a;
    struct archive_entry *e;
    struct hmap dirs = { 0 };
    struct hmap files = { 0 };    /* with links_as_copies: regular files' sizes */
    int r = tar_open(src, &a);
    if (r < 0)
        return r;
    hmap_str(&dirs, "", true, NULL);
    while ((r = tar_next(a, &e, src->path)) > 0) {
        const char *raw = entry_path(e);
        CLEANUP_FREE char *path = raw ? normalize(raw) : NULL;
        if (!path || strlen(path) >= PATH_MAX)
            continue;
        *newest = QIMG_MAX(*newest, (int64_t)archive_entry_mtime(e));
        const char *name;
        const void *v;
        size_t vlen;
        if (archive_entry_xattr_reset(e) > 0)
            while (archive_entry_xattr_next(e, &name, &v, &vlen) == ARCHIVE_OK)
                u->xattr_bytes += strlen(name) + vlen;
        if (!*path)
            continue;
        uint64_t size = archive_entry_size_is_set(e) && archive_entry_size(e) > 0
                            ? (uint64_t)archive_entry_size(e) : 0;
        if (entry_hardlink(e)) {
            u->hardlinks++;
            count_in_parent(u, &dirs, path);
            CLEANUP_FREE char *target = normalize(entry_hardlink(e));
            struct hent *f = links_as_copies && target ? hmap_str(&files, target, false, NULL)
                                                       : NULL;
            if (f) {                    /* u: its size, ptr: its 4 KiB blocks */
                u->files++;
                u->data_bytes += f->u;
                u->data_blocks_4k += (uint64_t)(uintptr_t)f->ptr;
            }
        } else if (archive_entry_filetype(e) == AE_IFDIR) {
            usage_tar_dir(u, &dirs, path);
        } else {
            count_in_parent(u, &dirs, path);
            switch (archive_entry_filetype(e)) {
            case AE_IFREG: {
                uint64_t blocks = entry_blocks(e, size);
                u->files++;
                u->data_bytes += size;
                u->data_blocks_4k += blocks;
                if (links_as_copies) {
                    struct hent *f = hmap_str(&files, path, true, NULL);
                    f->u = size;
                    f->ptr = (void *)(uintptr_t)blocks;
                }
                break;
            }
            case AE_IFLNK:
                u->symlinks++;
                u->symlink_bytes += entry_symlink(e) ? strlen(entry_symlink(e)) : 0;
                break;
            default:
                u->others++;
                break;
            }
        }
        if (archive_read_data_skip(a) != ARCHIVE_OK) {
            r = archive_fail(a, "Could not read the archive", src->path);
            break;
        }
    }
    for (size_t i = 0; i < dirs.cap; i++)
        if (dirs.v[i].key)
            u->max_dir_entries = QIMG_MAX(u->max_dir_entries, dirs.v[i].u);
    /* the top directory: its entry count (names are not kept per directory,
     * so the longest case is assumed: 255 bytes each) */
    u->root_entries = hmap_str(&dirs, "", false, NULL)->u;
    u->root_name_bytes = u->root_entries * 255;
    hmap_free(&dirs);
    for (size_t i = 0; i < files.cap; i++)
        files.v[i].ptr = NULL;    /* a count, not memory */
    hmap_free(&files);
    archive_read_free(a);
    return r;
}

/* --- populate --- */

struct dir_rec {
    const char *path;             /* the map's key */
    qimg_fs_ino ino;
    unsigned depth;
    struct qimg_fs_attr attr;     /* the archive's, or the default one */
};

static void default_dir_attr(const struct populate *p, struct qimg_fs_attr *a)
{
    memset(a, 0, sizeof *a);
    a->mode = S_IFDIR | 0755;
    a->nlink = 2;
    a->atime = a->mtime = a->ctime = a->crtime = p->o->now;
    clamp_attr(p->o, a);
}

static struct dir_rec *add_dir(struct populate *p, const char *path, qimg_fs_ino ino,
                               const struct qimg_fs_attr *a)
{
    struct hent *e = hmap_str(&p->dirs, path, true, NULL);
    struct dir_rec *d = e->ptr;
    if (!d)
        e->ptr = d = qimg_xcalloc(1, sizeof *d);
    d->path = e->key;
    d->ino = ino;
    d->depth = path_depth(path);
    d->attr = *a;
    return d;
}

/* The directory at path (creating missing ones), as its record: up from
 * path to the deepest directory known, then down creating the rest. */
static int ensure_dir(struct populate *p, const char *path, struct dir_rec **out)
{
    CLEANUP_FREE char *buf = qimg_strdup(path);
    size_t len = strlen(path), known = len;
    struct hent *h;
    while (!(h = hmap_str(&p->dirs, buf, false, NULL))) {
        char *slash = strrchr(buf, '/');
        known = slash ? (size_t)(slash - buf) : 0;
        buf[known] = '\0';
    }
    struct dir_rec *cur = h->ptr;
    while (known < len) {
        size_t start = known ? known + 1 : 0, end = start;
        while (end < len && path[end] != '/')
            end++;
        memcpy(buf, path, end);
        buf[end] = '\0';
        struct qimg_fs_attr a;
        qimg_fs_ino ino;
        default_dir_attr(p, &a);
        int r = make_dir(p, buf, cur->ino, buf + start, &a, &ino);
        if (r == -EEXIST)
            return exists_error(p, buf);
        if (r < 0)
            return r;
        cur = add_dir(p, buf, ino, &a);
        known = end;
    }
    *out = cur;
    return 0;
}

static int tar_xattrs(struct populate *p, struct archive_entry *e, const char *path,
                      qimg_fs_ino ino)
{
    const char *name;
    const void *v;
    size_t len;
    int r = 0;
    if (archive_entry_xattr_reset(e) > 0)
        while (r == 0 && archive_entry_xattr_next(e, &name, &v, &len) == ARCHIVE_OK)
            r = set_xattr(p, path, ino, name, v, len);
    return r;
}

static int tar_data(struct populate *p, struct archive *a, const char *path, qimg_fs_ino ino,
                    const struct qimg_fs_attr *attr, bool size_known)
{
    struct wstate w = { .ino = ino };
    const void *buf;
    size_t len;
    la_int64_t off;
    int r;
    for (;;) {
        int ar = archive_read_data_block(a, &buf, &len, &off);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
            return archive_fail(a, "Could not read", path);
        if (off < 0)
            return qimg_error(-EINVAL, "'%s': bad data offset in the archive", path);
        if (len && (r = stage_add(p, &w, (uint64_t)off, buf, len)) < 0)
            goto fail;
    }
    if ((r = stage_flush(p, &w)) < 0 ||
        (r = finish_file(p, &w, size_known ? attr->size : w.logical_end)) < 0)
        goto fail;
    return 0;
fail:
    qimg_error_prefix("'%s'", path);
    return r;
}

/* Remove a non-directory a later member replaces. */
static int replace_old(struct populate *p, const char *path, qimg_fs_ino dir, const char *name)
{
    qimg_fs_ino old;
    struct qimg_fs_attr oa;
    int r;
    if ((r = p->drv->lookup(p->fs, dir, name, &old)) < 0 ||
        (r = p->drv->getattr(p->fs, old, &oa)) < 0) {
        qimg_error_prefix("'%s'", path);
        return r;
    }
    if (S_ISDIR(oa.mode))
        return qimg_error(-EEXIST, "'%s': a directory of that name is already there", path);
    if ((r = p->drv->unlink(p->fs, dir, name)) < 0)
        qimg_error_prefix("'%s'", path);
    return r;
}

/* Resolve a member name already created (a hard link's target). */
static int tar_lookup(struct populate *p, const char *path, qimg_fs_ino *ino)
{
    size_t plen;
    const char *name = split_path(path, &plen);
    CLEANUP_FREE char *parent = xstrndup(path, plen);
    struct hent *e = hmap_str(&p->dirs, parent, false, NULL);
    if (!e)
        return -ENOENT;
    return p->drv->lookup(p->fs, ((struct dir_rec *)e->ptr)->ino, name, ino);
}

static int tar_entry(struct populate *p, struct archive *a, struct archive_entry *e,
                     const char *path)
{
    struct qimg_fs_attr attr;
    struct dir_rec *parent = NULL;
    qimg_fs_ino ino;
    int r;
    if ((r = entry_attr(e, path, &attr)) < 0)
        return r;
    clamp_attr(p->o, &attr);
    if (!*path) {                               /* "./": the root's attributes */
        struct dir_rec *root = hmap_str(&p->dirs, "", false, NULL)->ptr;
        attr.mode = S_IFDIR | (attr.mode & 07777);
        root->attr = attr;
        return tar_xattrs(p, e, "/", root->ino);
    }
    size_t plen;
    const char *name = split_path(path, &plen);
    CLEANUP_FREE char *ppath = xstrndup(path, plen);
    if ((r = ensure_dir(p, ppath, &parent)) < 0)
        return r;

    const char *hl = entry_hardlink(e);
    if (hl) {
        CLEANUP_FREE char *target = normalize(hl);
        if (!target || !*target || (r = tar_lookup(p, target, &ino)) == -ENOENT) {
            qimg_error_clear();
            skipped(p, path, "its hard link target is not in the archive before it");
            return 0;
        }
        if (r < 0)
            return r;
        if (strcmp(target, path) == 0)
            return 0;
        attr.mode = S_IFREG | (attr.mode & 07777);
        r = link_or_copy(p, path, parent->ino, name, ino, &attr);
        if (r == -EEXIST) {
            qimg_error_clear();
            if ((r = replace_old(p, path, parent->ino, name)) < 0)
                return r;
            r = link_or_copy(p, path, parent->ino, name, ino, &attr);
        }
        return r;
    }

    unsigned type = archive_entry_filetype(e);
    if (type == AE_IFDIR) {
        struct hent *h = hmap_str(&p->dirs, path, false, NULL);
        if (h) {
            ino = ((struct dir_rec *)h->ptr)->ino;
        } else {
            r = make_dir(p, path, parent->ino, name, &attr, &ino);
            if (r == -EEXIST)
                return exists_error(p, path);
            if (r < 0)
                return r;
        }
        add_dir(p, path, ino, &attr);
        return tar_xattrs(p, e, path, ino);
    }
    if (type != AE_IFREG && type != AE_IFLNK && type != AE_IFCHR && type != AE_IFBLK &&
        type != AE_IFIFO && type != AE_IFSOCK) {
        skipped(p, path, "unknown file type");
        return 0;
    }
    const char *target = type == AE_IFLNK ? entry_symlink(e) : NULL;
    if (type == AE_IFLNK) {
        if (!target)
            target = "";
        attr.size = strlen(target);
    }
    r = make_node(p, path, parent->ino, name, &attr, target, &ino);
    if (r == -EEXIST) {
        if ((r = replace_old(p, path, parent->ino, name)) < 0)
            return r;
        r = make_node(p, path, parent->ino, name, &attr, target, &ino);
        if (r == -EEXIST)
            return exists_error(p, path);
    }
    if (r != 0)
        return r < 0 ? r : 0;
    if (type == AE_IFREG &&
        (r = tar_data(p, a, path, ino, &attr, archive_entry_size_is_set(e))) < 0)
        return r;
    if ((r = tar_xattrs(p, e, path, ino)) < 0)
        return r;
    if (type == AE_IFREG && (r = p->drv->setattr(p->fs, ino, &attr)) < 0)
        qimg_error_prefix("'%s'", path);
    return r;
}

static int by_depth(const void *a, const void *b)
{
    const struct dir_rec *x = *(struct dir_rec *const *)a, *y = *(struct dir_rec *const *)b;
    if (x->depth != y->depth)
        return x->depth > y->depth ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Directory attributes last, deepest first, so that creating their
 * content does not move their times. */
static int tar_dir_attrs(struct populate *p)
{
    size_t n = 0;
    struct dir_rec **v = qimg_xcalloc(p->dirs.n ? p->dirs.n : 1, sizeof *v);
    for (size_t i = 0; i < p->dirs.cap; i++)
        if (p->dirs.v[i].key)
            v[n++] = p->dirs.v[i].ptr;
    qsort(v, n, sizeof *v, by_depth);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++)
        if ((r = p->drv->setattr(p->fs, v[i]->ino, &v[i]->attr)) < 0)
            qimg_error_prefix("'/%s'", v[i]->path);
    free(v);
    return r;
}

static int populate_from_tar(struct populate *p, struct qimg_fs_source *src)
{
    struct archive *a;
    struct archive_entry *e;
    struct qimg_fs_attr root;
    int r = tar_open(src, &a);
    if (r < 0)
        return r;
    default_dir_attr(p, &root);
    add_dir(p, "", p->fs->root, &root);
    while ((r = tar_next(a, &e, src->path)) > 0) {
        const char *raw = entry_path(e);
        CLEANUP_FREE char *path = raw ? normalize(raw) : NULL;
        if (!path) {
            skipped(p, raw ? raw : "(unnamed member)",
                    raw ? "names with '..' are not extracted" : "no name");
            continue;
        }
        if (strlen(path) >= PATH_MAX) {
            skipped(p, raw, "name longer than PATH_MAX");
            continue;
        }
        if ((r = tar_entry(p, a, e, path)) < 0)
            break;
    }
    archive_read_free(a);
    if (r == 0)
        r = tar_dir_attrs(p);
    return r;
}

#else
static int usage_tar(struct qimg_fs_source *src, struct qimg_fs_usage *u, int64_t *newest,
                     bool links_as_copies)
{
    return qimg_error(-ENOTSUP, "this qimg was built without libarchive");
}
static int populate_from_tar(struct populate *p, struct qimg_fs_source *src)
{
    return qimg_error(-ENOTSUP, "this qimg was built without libarchive");
}
#endif

/* ------------------------------------------------------------- the API */

int qimg_fs_source_usage(struct qimg_fs_source *src, struct qimg_fs_usage *u, int64_t *newest,
                         bool links_as_copies)
{
    memset(u, 0, sizeof *u);
    *newest = 0;
    if (src->is_tar)
        return usage_tar(src, u, newest, links_as_copies);
    struct usage_ctx c = { .u = u, .links_as_copies = links_as_copies };
    struct statx sx;
    int r = 0;
    if (statx(AT_FDCWD, src->path, 0, STATX_BASIC_STATS, &sx) < 0)
        return qimg_error_errno(-errno, "Could not stat '%s'", src->path);
    c.newest = sx.stx_mtime.tv_sec;
    r = local_xattrs(src->path, count_xattr, &c);
    if (r == 0)
        r = usage_dir(&c, src->path, 0);
    hmap_free(&c.seen);
    *newest = c.newest;
    return r;
}

int qimg_fs_source_populate(struct qimg_fs_source *src, struct qimg_fs *fs,
                            const struct qimg_populate_opts *o,
                            struct qimg_populate_stats *st)
{
    struct populate p = {
        .o = o, .st = st, .fs = fs, .drv = fs->drv,
        .buf = qimg_xmalloc(CHUNK), .stage = qimg_xmalloc(CHUNK),
    };
    memset(st, 0, sizeof *st);
    int r = src->is_tar ? populate_from_tar(&p, src) : populate_from_dir(&p, src->path);
    if (p.warned > MAX_WARNINGS)
        qimg_warn("%" PRIu64 " more entries skipped", p.warned - MAX_WARNINGS);
    if (r == 0 && st->xattrs_dropped)
        qimg_warn("%" PRIu64 " extended attributes not copied: %s cannot hold them",
                  st->xattrs_dropped, fs->type);
    if (r == 0 && p.foreign_xattrs)
        qimg_warn("%" PRIu64 " extended attributes not copied: only the user., trusted., "
                  "security. and system.posix_acl_ namespaces are", p.foreign_xattrs);
    st->xattrs_dropped += p.foreign_xattrs;
    if (r == 0 && st->link_copies)
        qimg_warn("%" PRIu64 " hard links stored as separate copies: %s has no hard links",
                  st->link_copies, fs->type);
    hmap_free(&p.links);
    hmap_free(&p.dirs);
    free(p.buf);
    free(p.stage);
    return r;
}
