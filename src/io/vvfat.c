/* qimg - the "vvfat" storage backend (qemu's "fat:" protocol): a FAT disk
 * made from a host directory, read-only.
 *
 * Names: fat:[12:|16:|32:][floppy:][rw:]DIR as qemu reads them (the type,
 * "floppy:" and "rw:" found anywhere in the name, the directory after the
 * last colon), or the options dir, fat-type, floppy, label, rw.
 *
 * Geometry as qemu's: a hard disk of 1024 (FAT12: 64) cylinders, 16 heads
 * and 63 sectors with an MBR whose one partition starts at sector 63, or a
 * floppy of 80 cylinders, 2 heads and 36 (FAT12 by type: 18) sectors with
 * no partition table; 8 KiB clusters, qemu's FAT size, two FATs, 512 root
 * entries, the label "QEMU VVFAT" and qemu's volume id.  Where qemu's
 * layout is not a valid FAT of the type asked for we differ: FAT32 is a
 * real FAT32 (its BPB, FSInfo, backup boot sector, the root in a cluster,
 * 4 KiB clusters so that the cluster count makes it FAT32), a FAT16 floppy
 * has 512-byte clusters, and a FAT32 floppy (which cannot have FAT32's
 * 65525 clusters) is refused.
 *
 * The tree is walked once at open, breadth first as qemu lays it out (each
 * entry gets its clusters when its turn comes, a directory's entries are
 * queued behind everything before it), entries sorted by name so the disk
 * does not depend on the host's directory order.  Only the layout is kept
 * in memory (one node per entry, the directories' entries and the FAT):
 * file data is read from the host file when its clusters are read, and the
 * slack after a file's end reads as zeros.  Times come from mtime only
 * (in local time, as qemu), so reading the tree (atime) changes nothing.
 *
 * Host files are opened only below DIR: openat2 with RESOLVE_BENEATH, so a
 * symbolic link that leaves the tree is an error, as are links to
 * directories, dangling links, devices, FIFOs and sockets; every open is
 * checked against the device and inode seen by the walk, with O_NOATIME
 * where the owner allows it.  Nothing is ever written to the host tree:
 * with rw: (and a read-write open) writes go to a temporary overlay file
 * that is deleted at close. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fat-format.h"
#include "fs.h"
#include "internal.h"
#include "util.h"

#define VV_SECTOR 512u
#define VV_MAX_NODES 1000000u           /* entries of a tree (bounds the memory) */
#define VV_VOLUME_ID 0xFABE1AFDu        /* qemu's fixed volume id... */
#define VV_DISK_ID 0xBE1AFDFAu          /* ...and MBR disk signature */

struct vv_node {
    char *name;                 /* host name; NULL for the root */
    uint32_t parent;            /* node index of the parent directory */
    uint32_t first_child, nchildren;   /* directories: children are contiguous */
    uint32_t first_cluster, nclusters;
    uint64_t size;              /* files: bytes; directories: entry bytes */
    int64_t mtime;
    uint64_t dev, ino;
    bool is_dir, via_link;      /* via_link: a symbolic link inside the tree */
    uint16_t *name16;           /* the name in UTF-16 (the long name) */
    uint8_t len16;              /* its units (<= 255) */
    uint8_t short_name[11];
    uint8_t *entries;           /* directories: their entry bytes */
};

struct vvfat {
    int rootfd;
    char *dir;
    enum fat_type type;
    bool floppy, rw;
    uint64_t size;              /* bytes of the disk */
    uint64_t part_off;          /* the boot sector (bytes) */
    struct fat_bpb bpb;
    uint8_t mbr[VV_SECTOR], boot[VV_SECTOR], fsinfo[VV_SECTOR];
    uint8_t *fat;               /* one FAT (fat_sectors * 512 bytes) */
    uint8_t *root;              /* FAT12/16: the fixed root region */
    struct vv_node *nodes;
    uint32_t nnodes, cap;
    uint32_t *by_cluster;       /* nodes holding clusters, by first cluster */
    uint32_t nby;
    uint32_t next_cluster;      /* first free cluster after the layout */
    /* rw: the overlay */
    int ovfd;
    _Atomic uint64_t *written;  /* one bit per sector */
    pthread_mutex_t ovlock;
};

/* ------------------------------------------------------------ names */

/* qemu's reading of a "fat:" name: the type, floppy: and rw: anywhere in it,
 * the directory after the last colon (with a DOS drive letter kept). */
static int vv_parse_filename(const char *filename, qimg_opts *opts)
{
    if (strncmp(filename, "fat:", 4) != 0)
        return qimg_error(-EINVAL, "File name string must start with 'fat:'");
    const char *type = strstr(filename, ":32:") ? "32" : strstr(filename, ":16:") ? "16"
                     : strstr(filename, ":12:") ? "12" : "0";
    int r = qimg_opts_set_typed(&opts, "fat-type", type, QIMG_OPT_KIND_NUMBER);
    if (r == 0)
        r = qimg_opts_set_typed(&opts, "floppy", strstr(filename, ":floppy:") ? "on" : "off",
                                QIMG_OPT_KIND_BOOL);
    if (r == 0)
        r = qimg_opts_set_typed(&opts, "rw", strstr(filename, ":rw:") ? "on" : "off",
                                QIMG_OPT_KIND_BOOL);
    const char *last = strrchr(filename, ':');
    size_t i = (size_t)(last - filename);
    const char *dir = last + 1;
    if (i >= 5 && filename[i - 2] == ':' &&
        ((filename[i - 1] >= 'a' && filename[i - 1] <= 'z') ||
         (filename[i - 1] >= 'A' && filename[i - 1] <= 'Z')))
        dir = filename + i - 1;
    if (r == 0)
        r = qimg_opts_set(&opts, "dir", dir);
    return r;
}

/* ------------------------------------------------------------ host files */

/* Opens rel below the root, never leaving it; symlinks (inside the tree)
 * only when allowed.  -errno. */
static int open_beneath(struct vvfat *s, const char *rel, int flags, bool symlinks)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC | O_NONBLOCK | O_NOATIME),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | (symlinks ? 0 : RESOLVE_NO_SYMLINKS),
    };
    long fd = syscall(SYS_openat2, s->rootfd, rel, &how, sizeof how);
    if (fd < 0 && errno == EPERM) {
        how.flags &= ~(uint64_t)O_NOATIME;     /* not the owner: atime may change */
        fd = syscall(SYS_openat2, s->rootfd, rel, &how, sizeof how);
    }
    if (fd < 0 && errno == ENOSYS && !symlinks) {
        /* no openat2 (Linux < 5.6): the last component must not be a link;
         * what is opened is checked against the walk's inode by the caller */
        int base = flags | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW;
        fd = openat(s->rootfd, rel, base | O_NOATIME);
        if (fd < 0 && errno == EPERM)
            fd = openat(s->rootfd, rel, base);
    }
    return fd < 0 ? -errno : (int)fd;
}

/* The path of node i relative to the root ("." for the root). */
static char *node_path(const struct vvfat *s, uint32_t i)
{
    size_t len = 0;
    for (uint32_t k = i; k != 0; k = s->nodes[k].parent)
        len += strlen(s->nodes[k].name) + 1;
    if (i == 0)
        return qimg_strdup(".");
    char *p = qimg_xmalloc(len);
    size_t at = len - 1;
    p[at] = 0;
    for (uint32_t k = i; k != 0; k = s->nodes[k].parent) {
        size_t n = strlen(s->nodes[k].name);
        at -= n;
        memcpy(p + at, s->nodes[k].name, n);
        if (at)
            p[--at] = '/';
    }
    return p;
}

/* Opens node i's host object and checks it is the one the walk saw. */
static int open_node(struct vvfat *s, uint32_t i, int *fd_out)
{
    struct vv_node *n = &s->nodes[i];
    CLEANUP_FREE char *rel = node_path(s, i);
    if (strlen(rel) >= PATH_MAX)
        return qimg_error(-ENAMETOOLONG, "vvfat: the path '%s/%.40s...' is too long", s->dir, rel);
    int fd = open_beneath(s, rel, O_RDONLY | (n->is_dir ? O_DIRECTORY : 0), n->via_link);
    if (fd < 0)
        return qimg_error(fd, "vvfat: could not open '%s/%s': %s", s->dir, rel, strerror(-fd));
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_dev != n->dev || (uint64_t)st.st_ino != n->ino) {
        close(fd);
        return qimg_error(-EIO, "vvfat: '%s/%s' was replaced while in use", s->dir, rel);
    }
    *fd_out = fd;
    return 0;
}

/* ------------------------------------------------------------ the walk */

static uint32_t add_node(struct vvfat *s)
{
    if (s->nnodes == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->nodes = qimg_xrealloc(s->nodes, (size_t)s->cap * sizeof *s->nodes);
    }
    memset(&s->nodes[s->nnodes], 0, sizeof s->nodes[0]);
    return s->nnodes++;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct vv_node *)a)->name, ((const struct vv_node *)b)->name);
}

/* One host entry of directory node dir (name in dirfd) as a new node. */
static int add_entry(struct vvfat *s, uint32_t dir, int dirfd, const char *name)
{
    CLEANUP_FREE char *parent = node_path(s, dir);
    /* its path below the root: what is opened, and named in errors */
    CLEANUP_FREE char *rel = dir ? qimg_asprintf("%s/%s", parent, name) : qimg_strdup(name);
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return qimg_error(-errno, "vvfat: could not stat '%s/%s': %s", s->dir, rel,
                          strerror(errno));
    bool link = S_ISLNK(st.st_mode);
    if (link) {
        /* followed only inside the tree, and only to a file */
        int fd = open_beneath(s, rel, O_RDONLY, true);
        if (fd == -EXDEV || fd == -ELOOP)
            return qimg_error(-EPERM, "vvfat: the symbolic link '%s/%s' points out of the "
                              "directory", s->dir, rel);
        if (fd < 0)
            return qimg_error(fd, "vvfat: could not follow the symbolic link '%s/%s': %s",
                              s->dir, rel, strerror(-fd));
        int r = fstat(fd, &st);
        close(fd);
        if (r < 0)
            return qimg_error(-errno, "vvfat: could not stat '%s/%s'", s->dir, rel);
        if (S_ISDIR(st.st_mode))
            return qimg_error(-ENOTSUP, "vvfat: the symbolic link '%s/%s' points to a "
                              "directory, which qimg does not follow yet", s->dir, rel);
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return qimg_error(-ENOTSUP, "vvfat: '%s/%s' is not a regular file or a directory",
                          s->dir, rel);
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > 0xFFFFFFFFu)
        return qimg_error(-EFBIG, "vvfat: '%s/%s' is too large for FAT (%" PRIu64
                          " bytes, at most 4 GiB - 1)", s->dir, rel, (uint64_t)st.st_size);
    if (s->nnodes >= VV_MAX_NODES)
        return qimg_error(-EFBIG, "vvfat: the directory has more than %u entries", VV_MAX_NODES);
    uint16_t u16[FAT_MAX_LFN];
    size_t len;
    int r = fat_check_long_name(name, u16, &len);
    if (r < 0)
        return qimg_error(r, "vvfat: '%s/%s': %s", s->dir, rel, qimg_last_error());
    uint32_t i = add_node(s);
    struct vv_node *n = &s->nodes[i];
    n->name = qimg_strdup(name);
    n->parent = dir;
    n->is_dir = S_ISDIR(st.st_mode);
    n->via_link = link;
    n->size = n->is_dir ? 0 : (uint64_t)st.st_size;
    n->mtime = (int64_t)st.st_mtime;
    n->dev = (uint64_t)st.st_dev;
    n->ino = (uint64_t)st.st_ino;
    n->name16 = qimg_xmalloc(len * sizeof *u16);
    memcpy(n->name16, u16, len * sizeof *u16);
    n->len16 = (uint8_t)len;
    return 0;
}

/* Reads directory node d's entries into new nodes, sorted by name. */
static int read_dir(struct vvfat *s, uint32_t d)
{
    int fd;
    int r = open_node(s, d, &fd);
    if (r < 0)
        return r;
    DIR *dp = fdopendir(fd);
    if (!dp) {
        close(fd);
        return qimg_error(-errno, "vvfat: could not read a directory of '%s'", s->dir);
    }
    uint32_t first = s->nnodes;
    struct dirent *de;
    errno = 0;
    while (r == 0 && (de = readdir(dp))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        r = add_entry(s, d, dirfd(dp), de->d_name);
        errno = 0;
    }
    if (r == 0 && errno)
        r = qimg_error(-errno, "vvfat: could not read a directory of '%s'", s->dir);
    closedir(dp);
    if (r < 0)
        return r;
    s->nodes[d].first_child = first;
    s->nodes[d].nchildren = s->nnodes - first;
    qsort(s->nodes + first, s->nnodes - first, sizeof *s->nodes, by_name);
    return 0;
}

/* ------------------------------------------------------------ short names */

/* Gives every child of directory d a short name unique in d: plain 8.3
 * names keep theirs (upper-cased), the others get a basis with a "~N"
 * tail.  A hash table keeps it linear for large directories. */
static int short_names(struct vvfat *s, uint32_t d)
{
    struct vv_node *dir = &s->nodes[d];
    uint32_t n = dir->nchildren;
    if (!n)
        return 0;
    uint32_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    CLEANUP_FREE uint32_t *tab = qimg_xcalloc(cap, sizeof *tab);   /* child index + 1 */
    CLEANUP_FREE bool *plain = qimg_xcalloc(n, sizeof *plain);
    /* the next "~N" to try per basis, so that many names of one basis
     * (file1.txt ... file1000.txt) do not each probe from ~1 */
    CLEANUP_FREE uint8_t (*tb)[11] = qimg_xcalloc(cap, sizeof *tb);
    CLEANUP_FREE uint32_t *tnext = qimg_xcalloc(cap, sizeof *tnext);
#define SN_HASH(nm) (fat_lfn_checksum(nm) * 2654435761u ^ (uint32_t)((nm)[0] | (nm)[1] << 8 | (nm)[7] << 16 | (nm)[10] << 24))
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t k = 0; k < n; k++) {
            struct vv_node *c = &s->nodes[dir->first_child + k];
            uint8_t basis[11], nt;
            bool needs_lfn, needs_tail;
            fat_short_name_basis(c->name16, c->len16, basis, &nt, &needs_lfn, &needs_tail);
            if (pass == 0 && needs_tail)
                continue;
            if (pass == 1 && plain[k])
                continue;
            if (pass == 1)
                needs_tail = true;      /* lossy, or a plain name another one took */
            uint32_t th = 0;
            if (needs_tail) {
                th = SN_HASH(basis) & (cap - 1);
                while (tnext[th] && memcmp(tb[th], basis, 11))
                    th = (th + 1) & (cap - 1);
                if (!tnext[th]) {
                    memcpy(tb[th], basis, 11);
                    tnext[th] = 1;
                }
            }
            for (unsigned tail = needs_tail ? tnext[th] : 0; tail < 1000000; tail++) {
                uint8_t cand[11];
                if (tail)
                    fat_short_name_with_tail(basis, tail, cand);
                else
                    memcpy(cand, basis, 11);
                uint32_t h = SN_HASH(cand) & (cap - 1);
                bool taken = false;
                while (tab[h]) {
                    if (!memcmp(s->nodes[dir->first_child + tab[h] - 1].short_name, cand, 11)) {
                        taken = true;
                        break;
                    }
                    h = (h + 1) & (cap - 1);
                }
                if (taken) {
                    if (pass == 0 && tail == 0) {
                        needs_tail = true;      /* a plain name taken already: tail it later */
                        break;
                    }
                    continue;
                }
                memcpy(c->short_name, cand, 11);
                tab[h] = k + 1;
                plain[k] = true;
                if (tail)
                    tnext[th] = tail + 1;
                break;
            }
            if (pass == 1 && !plain[k])
                return qimg_error(-EINVAL, "vvfat: no short name left for '%s'", c->name);
        }
    }
#undef SN_HASH
    return 0;
}

/* Directory slots node d's entries take (long names always, as qemu). */
static uint64_t dir_slots(const struct vvfat *s, uint32_t d)
{
    const struct vv_node *dir = &s->nodes[d];
    uint64_t slots = d == 0 ? 1 : 2;          /* the label; "." and ".." */
    for (uint32_t k = 0; k < dir->nchildren; k++)
        slots += 1 + fat_lfn_entries(s->nodes[dir->first_child + k].len16);
    return slots;
}

/* ------------------------------------------------------------ layout */

static int no_room(const struct vvfat *s)
{
    return qimg_error(-ENOSPC, "Directory does not fit in FAT%d (capacity %.2f MB)",
                      (int)s->type, (double)(s->bpb.total_sectors) / 2000.0);
}

/* Walks the tree breadth first, giving each node its clusters in turn. */
static int walk(struct vvfat *s, struct stat *rootst)
{
    uint32_t root = add_node(s);
    s->nodes[root].is_dir = true;
    s->nodes[root].mtime = (int64_t)rootst->st_mtime;
    s->nodes[root].dev = (uint64_t)rootst->st_dev;
    s->nodes[root].ino = (uint64_t)rootst->st_ino;
    uint64_t cs = s->bpb.cluster_bytes;
    uint64_t next = 2, end = (uint64_t)s->bpb.clusters + 2;
    for (uint32_t i = 0; i < s->nnodes; i++) {
        uint64_t bytes;
        if (s->nodes[i].is_dir) {
            int r = read_dir(s, i);
            if (r == 0)
                r = short_names(s, i);
            if (r < 0)
                return r;
            uint64_t slots = dir_slots(s, i);
            if (slots > FAT_MAX_DIR_ENTRIES) {
                CLEANUP_FREE char *rel = node_path(s, i);
                return qimg_error(-EFBIG, "vvfat: the directory '%s/%s' has too many entries "
                                  "for FAT (%" PRIu64 " slots, at most %u)", s->dir, rel,
                                  slots, FAT_MAX_DIR_ENTRIES);
            }
            bytes = slots * FAT_DIRENT_SIZE;
            s->nodes[i].size = bytes;
            if (i == 0 && s->type != FAT32) {
                if (slots > s->bpb.root_entries)
                    return qimg_error(-EFBIG, "vvfat: the root directory has too many entries "
                                      "for FAT%d (%" PRIu64 " slots, at most %u)", (int)s->type,
                                      slots, s->bpb.root_entries);
                continue;                   /* the fixed root region */
            }
        } else {
            bytes = s->nodes[i].size;
        }
        uint64_t ncl = qimg_div_round_up(bytes, cs);
        if (ncl > end - next)
            return no_room(s);
        s->nodes[i].first_cluster = ncl ? (uint32_t)next : 0;
        s->nodes[i].nclusters = (uint32_t)ncl;
        next += ncl;
    }
    s->next_cluster = (uint32_t)next;
    return 0;
}

/* mtime as FAT's local date and time (qemu writes local time). */
static void fat_local_time(int64_t t, uint16_t *date, uint16_t *tm)
{
    time_t tt = (time_t)t;
    struct tm lt;
    if (localtime_r(&tt, &lt))
        t += lt.tm_gmtoff;
    fat_time_encode(t, 0, date, tm, NULL);
}

static void encode_short(const struct vv_node *n, const uint8_t name[11], uint32_t cluster,
                         uint8_t *raw)
{
    struct fat_dirent e;
    memset(&e, 0, sizeof e);
    memcpy(e.name, name, 11);
    e.attr = n->is_dir ? FAT_ATTR_DIRECTORY : FAT_ATTR_ARCHIVE;
    fat_local_time(n->mtime, &e.wrt_date, &e.wrt_time);
    e.crt_date = e.acc_date = e.wrt_date;
    e.crt_time = e.wrt_time;
    e.first_cluster = cluster;
    e.size = n->is_dir ? 0 : (uint32_t)n->size;
    fat_dirent_encode(&e, raw);
}

/* The entry bytes of directory node d (buf: at least its size). */
static void build_dir(struct vvfat *s, uint32_t d, uint8_t *buf, const char *label)
{
    const struct vv_node *dir = &s->nodes[d];
    uint8_t *p = buf;
    if (d == 0) {
        memset(p, ' ', 11);
        memcpy(p, label, strlen(label));
        p[11] = FAT_ATTR_VOLUME_ID | FAT_ATTR_ARCHIVE;
        p += FAT_DIRENT_SIZE;
    } else {
        const struct vv_node *up = &s->nodes[dir->parent];
        encode_short(dir, (const uint8_t *)".          ", dir->first_cluster, p);
        p += FAT_DIRENT_SIZE;
        /* ".." of a directory in the root points at cluster 0 (FAT32 too) */
        encode_short(up, (const uint8_t *)"..         ", dir->parent ? up->first_cluster : 0, p);
        p[11] = FAT_ATTR_DIRECTORY;
        p += FAT_DIRENT_SIZE;
    }
    for (uint32_t k = 0; k < dir->nchildren; k++) {
        const struct vv_node *c = &s->nodes[dir->first_child + k];
        uint8_t ent[FAT_DIRENT_SIZE];
        encode_short(c, c->short_name, c->first_cluster, ent);
        p += (size_t)fat_name_entries(c->name16, c->len16, fat_lfn_entries(c->len16), ent, p) *
             FAT_DIRENT_SIZE;
    }
}

static int build(struct vvfat *s, const char *label)
{
    size_t lo, hi;
    uint64_t fat_bytes = (uint64_t)s->bpb.fat_sectors * VV_SECTOR;
    s->fat = qimg_alloc_from_image(fat_bytes, "vvfat FAT");
    if (!s->fat)
        return -ENOMEM;
    memset(s->fat, 0, fat_bytes);
    fat_entry_set(s->fat, s->type, 0, (s->type == FAT32 ? 0x0FFFFF00u : 0xFFFFFF00u) | s->bpb.media,
                  &lo, &hi);
    fat_entry_set(s->fat, s->type, 1, FAT_EOC, &lo, &hi);
    s->by_cluster = qimg_xcalloc(s->nnodes, sizeof *s->by_cluster);
    for (uint32_t i = 0; i < s->nnodes; i++) {
        struct vv_node *n = &s->nodes[i];
        if (n->is_dir) {
            uint64_t bytes = (i == 0 && s->type != FAT32) ? (uint64_t)s->bpb.root_entries * 32
                                                           : (uint64_t)n->nclusters * s->bpb.cluster_bytes;
            uint8_t *buf = qimg_alloc_from_image(bytes, "vvfat directory");
            if (!buf)
                return -ENOMEM;
            memset(buf, 0, bytes);
            build_dir(s, i, buf, label);
            if (i == 0 && s->type != FAT32)
                s->root = buf;
            else
                n->entries = buf;
        }
        if (!n->nclusters)
            continue;
        s->by_cluster[s->nby++] = i;
        for (uint32_t c = 0; c < n->nclusters; c++)
            fat_entry_set(s->fat, s->type, n->first_cluster + c,
                          c + 1 < n->nclusters ? n->first_cluster + c + 1 : FAT_EOC, &lo, &hi);
    }
    return 0;
}

/* ------------------------------------------------------------ geometry */

static int geometry(struct vvfat *s, const char *label)
{
    unsigned cyls, heads, secs, spc = 16;
    bool type_given = s->type != 0;
    if (s->floppy) {
        if (s->type == FAT32)
            return qimg_error(-EINVAL, "vvfat: a floppy cannot hold FAT32 (it needs at least "
                              "65525 clusters); use fat:12: or fat:16:");
        if (!s->type)
            s->type = FAT12;
        secs = s->type == FAT12 && type_given ? 18 : 36;
        cyls = 80;
        heads = 2;
        if (s->type == FAT16)
            spc = 1;            /* FAT16 needs 4085 clusters at least */
    } else {
        if (!s->type)
            s->type = FAT16;
        cyls = s->type == FAT12 ? 64 : 1024;
        heads = 16;
        secs = 63;
        if (s->type == FAT32)
            spc = 8;            /* FAT32 needs 65525 clusters at least */
    }
    uint32_t total = cyls * heads * secs;
    s->size = (uint64_t)total * VV_SECTOR;
    uint32_t off = s->floppy ? 0 : secs;
    s->part_off = (uint64_t)off * VV_SECTOR;
    struct fat_bpb *b = &s->bpb;
    memset(b, 0, sizeof *b);
    b->bytes_per_sector = VV_SECTOR;
    b->sectors_per_cluster = (uint8_t)spc;
    b->reserved_sectors = s->type == FAT32 ? 32 : 1;
    b->num_fats = 2;
    b->root_entries = s->type == FAT32 ? 0 : 512;
    b->total_sectors = total - off;
    b->media = s->floppy ? 0xF0 : 0xF8;
    /* qemu's FAT size: sectors = spf + spf * spc * (4096 / bits) */
    uint32_t per = 1 + spc * VV_SECTOR * 8 / (unsigned)s->type;
    b->fat_sectors = (b->total_sectors + per) / per;
    b->sectors_per_track = (uint16_t)secs;
    b->heads = (uint16_t)heads;
    b->hidden_sectors = off;
    b->drive_number = s->floppy ? 0 : 0x80;
    b->volume_id = VV_VOLUME_ID;
    memset(b->label, ' ', 11);
    memcpy(b->label, label, strlen(label));
    if (s->type == FAT32) {
        b->root_cluster = 2;
        b->fsinfo_sector = 1;
        b->backup_boot_sector = 6;
    } else {
        b->jump_offset = 0x3E;
        b->no_boot_code = true;
    }
    int r = fat_bpb_derive(b, (uint64_t)b->total_sectors * VV_SECTOR);
    if (r < 0)
        return r;
    if (b->type != s->type)
        return qimg_error(-EINVAL, "vvfat: internal error: FAT%d layout has %" PRIu32
                          " clusters", (int)s->type, b->clusters);
    fat_bpb_encode(b, s->boot);
    if (!s->floppy) {
        qimg_put_le32(s->mbr + 440, VV_DISK_ID);
        qimg_mbr_put_entry(s->mbr, 0, 0x80, s->type == FAT12 ? 0x01 : s->type == FAT16 ? 0x06 : 0x0B,
                           off, total - off, heads, secs);
        s->mbr[510] = 0x55;
        s->mbr[511] = 0xAA;
    }
    return 0;
}

/* ------------------------------------------------------------ reads */

/* Reads len bytes of node i's clusters from byte pos of its first cluster. */
static int read_node(struct vvfat *s, uint32_t i, uint8_t *buf, size_t len, uint64_t pos)
{
    struct vv_node *n = &s->nodes[i];
    if (n->is_dir) {
        memcpy(buf, n->entries + pos, len);
        return 0;
    }
    size_t have = pos >= n->size ? 0 : (size_t)QIMG_MIN((uint64_t)len, n->size - pos);
    memset(buf + have, 0, len - have);       /* slack and past a shrunk file: zeros */
    if (!have)
        return 0;
    int fd;
    int r = open_node(s, i, &fd);
    if (r < 0)
        return r;
    size_t done = 0;
    while (done < have) {
        ssize_t got = pread(fd, buf + done, have - done, (off_t)(pos + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = qimg_error(-errno, "vvfat: could not read '%s': %s", n->name, strerror(errno));
            break;
        }
        if (got == 0) {
            memset(buf + done, 0, have - done);   /* the file shrank */
            break;
        }
        done += (size_t)got;
    }
    close(fd);
    return r;
}

/* The node holding cluster c, or the index in by_cluster of the first
 * node after it (*found false). */
static uint32_t find_cluster(const struct vvfat *s, uint32_t c, bool *found)
{
    uint32_t lo = 0, hi = s->nby;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const struct vv_node *n = &s->nodes[s->by_cluster[mid]];
        if (c < n->first_cluster)
            hi = mid;
        else if (c >= n->first_cluster + n->nclusters)
            lo = mid + 1;
        else {
            *found = true;
            return mid;
        }
    }
    *found = false;
    return lo;
}

static int read_data(struct vvfat *s, uint8_t *buf, size_t len, uint64_t rel)
{
    uint64_t cs = s->bpb.cluster_bytes;
    while (len) {
        uint64_t c = rel / cs + 2;
        size_t n;
        bool found;
        uint32_t k = c <= UINT32_MAX ? find_cluster(s, (uint32_t)c, &found) : (found = false, s->nby);
        if (found) {
            const struct vv_node *node = &s->nodes[s->by_cluster[k]];
            uint64_t pos = rel - (uint64_t)(node->first_cluster - 2) * cs;
            n = (size_t)QIMG_MIN((uint64_t)len, (uint64_t)node->nclusters * cs - pos);
            int r = read_node(s, s->by_cluster[k], buf, n, pos);
            if (r < 0)
                return r;
        } else {
            uint64_t next = k < s->nby ? (uint64_t)(s->nodes[s->by_cluster[k]].first_cluster - 2) * cs
                                       : UINT64_MAX;
            n = (size_t)QIMG_MIN((uint64_t)len, next - rel);
            memset(buf, 0, n);
        }
        buf += n;
        len -= n;
        rel += n;
    }
    return 0;
}

/* Reads from the volume (rel: bytes from its boot sector). */
static int read_volume(struct vvfat *s, uint8_t *buf, size_t len, uint64_t rel)
{
    const struct fat_bpb *b = &s->bpb;
    uint64_t fat_off = (uint64_t)b->first_fat_sector * VV_SECTOR;
    uint64_t fat_len = (uint64_t)b->fat_sectors * VV_SECTOR;
    uint64_t root_off = (uint64_t)b->first_root_sector * VV_SECTOR;
    uint64_t data_off = (uint64_t)b->first_data_sector * VV_SECTOR;
    while (len) {
        size_t n;
        if (rel < fat_off) {
            uint64_t sec = rel / VV_SECTOR, in = rel % VV_SECTOR;
            n = (size_t)QIMG_MIN((uint64_t)len, VV_SECTOR - in);
            const uint8_t *src = sec == 0 ? s->boot : NULL;
            if (s->type == FAT32 && sec == b->backup_boot_sector)
                src = s->boot;
            if (s->type == FAT32 && (sec == b->fsinfo_sector || sec == b->backup_boot_sector + 1u))
                src = s->fsinfo;
            if (src)
                memcpy(buf, src + in, n);
            else
                memset(buf, 0, n);
        } else if (rel < root_off) {
            uint64_t in = (rel - fat_off) % fat_len;
            n = (size_t)QIMG_MIN((uint64_t)len, fat_len - in);
            memcpy(buf, s->fat + in, n);
        } else if (rel < data_off) {
            n = (size_t)QIMG_MIN((uint64_t)len, data_off - rel);
            memcpy(buf, s->root + (rel - root_off), n);
        } else {
            return read_data(s, buf, len, rel - data_off);
        }
        buf += n;
        len -= n;
        rel += n;
    }
    return 0;
}

static int read_synth(struct vvfat *s, uint8_t *buf, size_t len, uint64_t off)
{
    if (off < s->part_off) {
        size_t n = (size_t)QIMG_MIN((uint64_t)len, s->part_off - off);
        for (size_t i = 0; i < n; i++)
            buf[i] = off + i < VV_SECTOR ? s->mbr[off + i] : 0;
        buf += n;
        len -= n;
        off += n;
    }
    return len ? read_volume(s, buf, len, off - s->part_off) : 0;
}

/* ------------------------------------------------------------ the overlay */

static bool sector_written(struct vvfat *s, uint64_t sec)
{
    return atomic_load(&s->written[sec / 64]) & (1ull << (sec % 64));
}

static int ov_pread(struct vvfat *s, void *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t got = pread(s->ovfd, buf, len, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return qimg_error(got < 0 ? -errno : -EIO, "vvfat: could not read the overlay");
        buf = (uint8_t *)buf + got;
        len -= (size_t)got;
        off += (uint64_t)got;
    }
    return 0;
}

static int vv_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct vvfat *s = io->priv;
    uint8_t *p = buf;
    if (off >= s->size) {
        memset(p, 0, len);
        return 0;
    }
    if (len > s->size - off) {
        memset(p + (s->size - off), 0, len - (size_t)(s->size - off));
        len = (size_t)(s->size - off);
    }
    if (!s->written)
        return read_synth(s, p, len, off);
    while (len) {
        /* a run of sectors all from the overlay or all made */
        uint64_t sec = off / VV_SECTOR;
        bool ov = sector_written(s, sec);
        uint64_t end = (sec + 1) * VV_SECTOR;
        while (end < off + len && sector_written(s, end / VV_SECTOR) == ov)
            end += VV_SECTOR;
        size_t n = (size_t)(QIMG_MIN(end, off + len) - off);
        int r = ov ? ov_pread(s, p, n, off) : read_synth(s, p, n, off);
        if (r < 0)
            return r;
        p += n;
        len -= n;
        off += n;
    }
    return 0;
}

/* Writes whole sectors [sec, sec + n) of buf to the overlay and marks them. */
static int ov_write_sectors(struct vvfat *s, const uint8_t *buf, uint64_t sec, uint64_t n)
{
    uint64_t off = sec * VV_SECTOR, len = n * VV_SECTOR;
    while (len) {
        ssize_t w = pwrite(s->ovfd, buf, (size_t)len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return qimg_error(w < 0 ? -errno : -EIO, "vvfat: could not write the overlay: %s",
                              strerror(w < 0 ? errno : EIO));
        buf += w;
        len -= (uint64_t)w;
        off += (uint64_t)w;
    }
    for (uint64_t k = sec; k < sec + n; k++)
        atomic_fetch_or(&s->written[k / 64], 1ull << (k % 64));
    return 0;
}

/* A partial sector: merged with what it holds (made or written before). */
static int ov_write_partial(struct qimg_io *io, const uint8_t *buf, size_t len, uint64_t off)
{
    struct vvfat *s = io->priv;
    uint8_t tmp[VV_SECTOR];
    uint64_t sec = off / VV_SECTOR;
    int r = vv_pread(io, tmp, VV_SECTOR, sec * VV_SECTOR);
    if (r < 0)
        return r;
    memcpy(tmp + off % VV_SECTOR, buf, len);
    return ov_write_sectors(s, tmp, sec, 1);
}

static int vv_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    struct vvfat *s = io->priv;
    if (!s->written)
        return qimg_error(-EACCES, "Image is read-only");
    if (off > s->size || len > s->size - off)
        return qimg_error(-EINVAL, "vvfat: write past the end of the disk");
    const uint8_t *p = buf;
    int r = 0;
    /* one writer at a time: partial sectors read, merge and write back */
    pthread_mutex_lock(&s->ovlock);
    if (off % VV_SECTOR && len) {
        size_t n = (size_t)QIMG_MIN((uint64_t)len, VV_SECTOR - off % VV_SECTOR);
        r = ov_write_partial(io, p, n, off);
        p += n;
        len -= n;
        off += n;
    }
    if (r == 0 && len >= VV_SECTOR) {
        size_t n = len / VV_SECTOR * VV_SECTOR;
        r = ov_write_sectors(s, p, off / VV_SECTOR, n / VV_SECTOR);
        p += n;
        len -= n;
        off += n;
    }
    if (r == 0 && len)
        r = ov_write_partial(io, p, len, off);
    pthread_mutex_unlock(&s->ovlock);
    return r;
}

static int open_overlay(struct vvfat *s)
{
    const char *tmp = getenv("TMPDIR");
    CLEANUP_FREE char *name = qimg_asprintf("%s/vl.XXXXXX", tmp && *tmp ? tmp : "/var/tmp");
    s->ovfd = mkostemp(name, O_CLOEXEC);
    if (s->ovfd < 0)
        return qimg_error(-errno, "Could not create temporary overlay '%s': %s", name,
                          strerror(errno));
    unlink(name);       /* gone at close, whatever happens */
    s->written = qimg_xcalloc(qimg_div_round_up(s->size / VV_SECTOR, 64), sizeof *s->written);
    pthread_mutex_init(&s->ovlock, NULL);
    return 0;
}

/* ------------------------------------------------------------ open, close */

static int vv_open(struct qimg_io *io, qimg_opts *opts)
{
    struct vvfat *s = qimg_xcalloc(1, sizeof *s);
    io->priv = s;
    s->rootfd = -1;
    s->ovfd = -1;
    const char *dir = NULL, *label = NULL;
    uint64_t type = 0;
    int r = qimg_opts_get_string(opts, "dir", &dir);
    if (r >= 0)
        r = qimg_opts_get_number(opts, "fat-type", &type);
    if (r >= 0)
        r = qimg_opts_get_bool(opts, "floppy", &s->floppy);
    if (r >= 0)
        r = qimg_opts_get_string(opts, "label", &label);
    if (r >= 0)
        r = qimg_opts_get_bool(opts, "rw", &s->rw);
    const char *filename;
    if (r >= 0 && qimg_opts_get_string(opts, "filename", &filename) == 1 && !dir)
        r = vv_parse_filename(filename, opts);   /* a "fat:" name given as filename */
    if (r >= 0 && !dir && qimg_opts_get(opts, "dir")) {
        qimg_opts_get_string(opts, "dir", &dir);
        qimg_opts_get_number(opts, "fat-type", &type);
        qimg_opts_get_bool(opts, "floppy", &s->floppy);
        qimg_opts_get_bool(opts, "rw", &s->rw);
    }
    if (r < 0)
        return r;
    if (!dir)
        return qimg_error(-EINVAL, "vvfat block driver requires a 'dir' option");
    if (label && strlen(label) > 11)
        return qimg_error(-EINVAL, "vvfat label cannot be longer than 11 bytes");
    if (type != 0 && type != 12 && type != 16 && type != 32)
        return qimg_error(-EINVAL, "Valid FAT types are only 12, 16 and 32");
    s->type = (enum fat_type)type;
    s->dir = qimg_strdup(dir);
    if (s->rw && !(io->flags & QIMG_IO_RDWR))
        return qimg_error(-EINVAL, "Unable to set VVFAT to 'rw' when drive is read-only");
    if (!s->rw && (io->flags & QIMG_IO_RDWR))
        return qimg_error(-EACCES, "Image is read-only");
    s->rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOATIME);
    if (s->rootfd < 0 && errno == EPERM)
        s->rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (s->rootfd < 0 || fstat(s->rootfd, &st) < 0)
        return qimg_error(-ENOENT, "Could not read directory %s", dir);
    const char *lab = label ? label : "QEMU VVFAT";
    r = geometry(s, lab);
    if (r == 0)
        r = walk(s, &st);
    if (r == 0)
        r = build(s, lab);
    if (r == 0 && s->type == FAT32)
        fat_fsinfo_encode(s->fsinfo, VV_SECTOR, s->bpb.clusters - (s->next_cluster - 2),
                          s->next_cluster <= s->bpb.clusters + 1 ? s->next_cluster : 0xFFFFFFFFu);
    if (r == 0 && s->rw)
        r = open_overlay(s);
    return r;
}

static int vv_get_size(struct qimg_io *io, uint64_t *size)
{
    *size = ((struct vvfat *)io->priv)->size;
    return 0;
}

static void vv_close(struct qimg_io *io)
{
    struct vvfat *s = io->priv;
    if (!s)
        return;
    for (uint32_t i = 0; i < s->nnodes; i++) {
        free(s->nodes[i].name);
        free(s->nodes[i].name16);
        free(s->nodes[i].entries);
    }
    free(s->nodes);
    free(s->by_cluster);
    free(s->fat);
    free(s->root);
    free(s->dir);
    if (s->rootfd >= 0)
        close(s->rootfd);
    if (s->written) {
        pthread_mutex_destroy(&s->ovlock);
        free(s->written);
    }
    if (s->ovfd >= 0)
        close(s->ovfd);
    free(s);
}

static bool vv_same(struct qimg_io *a, struct qimg_io *b)
{
    struct vvfat *x = a->priv, *y = b->priv;
    return x->nodes && y->nodes && x->nodes[0].dev == y->nodes[0].dev &&
           x->nodes[0].ino == y->nodes[0].ino;
}

/* qemu names a vvfat node by its options only (json:{...}). */
static char *vv_exact_filename(struct qimg_io *io)
{
    return NULL;
}

const struct qimg_io_ops qimg_io_vvfat_ops = {
    .name           = "vvfat",
    .prefix         = "fat:",
    .parse_filename = vv_parse_filename,
    .open           = vv_open,
    .pread          = vv_pread,
    .pwrite         = vv_pwrite,
    .get_size       = vv_get_size,
    .same           = vv_same,
    .close          = vv_close,
    .exact_filename = vv_exact_filename,
    .synthesized    = true,
};
