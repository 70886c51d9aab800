/* FAT directories: loading a directory's entries, long names (assembled
 * and checked against the short entry's checksum), lookup, readdir, and
 * creating and removing entries (long-name entries, a unique 8.3 alias,
 * directories grown by clusters). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>

#include "fat-int.h"
#include "internal.h"
#include "util.h"

/* Directories cached beyond this are dropped between operations
 * (QIMG_FAT_DIR_CACHE overrides it, for tests). */
#define DIR_CACHE_BUDGET (64ull << 20)

uint64_t fat_dir_cache_budget(void)
{
    const char *e = getenv("QIMG_FAT_DIR_CACHE");
    return e ? strtoull(e, NULL, 0) : DIR_CACHE_BUDGET;
}

void fat_dir_free(struct fat_dir *d)
{
    if (!d)
        return;
    free(d->data);
    free(d->clusters);
    fat_ix_free(&d->names);
    fat_ix_free(&d->shorts);
    free(d);
}

void fat_dir_cache_trim(struct fat_fs *f)
{
    if (f->dir_cache_bytes <= f->dir_cache_budget || f->walking)
        return;
    for (uint32_t i = 0; i < f->nnodes; i++) {
        fat_dir_free(f->nodes[i].dir);
        f->nodes[i].dir = NULL;
    }
    f->dir_cache_bytes = 0;
}

static int load_fixed_root(struct fat_fs *f, struct fat_dir *d)
{
    const struct fat_bpb *b = &f->bpb;
    d->nent = b->root_entries;
    d->data = qimg_alloc_from_image((uint64_t)d->nent * FAT_DIRENT_SIZE, "FAT root directory");
    if (!d->data)
        return -ENOMEM;
    return qimg_fs_dev_read(&f->base.dev, (uint64_t)b->first_root_sector * b->bytes_per_sector,
                            d->data, (size_t)d->nent * FAT_DIRENT_SIZE);
}

/* Reads a directory's chain, at most FAT_MAX_DIR_ENTRIES entries long (a
 * longer chain is a loop or garbage). */
static int load_chain(struct fat_fs *f, uint32_t first, struct fat_dir *d)
{
    uint32_t cs = f->bpb.cluster_bytes;
    uint32_t max_cl = (uint32_t)((uint64_t)FAT_MAX_DIR_ENTRIES * FAT_DIRENT_SIZE / cs);
    if (max_cl == 0)
        max_cl = 1;
    d->clusters = qimg_xmalloc(sizeof *d->clusters * 16);
    uint32_t cap = 16;
    for (uint32_t c = first; c != FAT_EOC;) {
        if (d->ncl == max_cl)
            return qimg_error(-EIO, "FAT: directory at cluster %" PRIu32 " is longer than %d "
                              "entries (a loop in its cluster chain?)", first, FAT_MAX_DIR_ENTRIES);
        if (d->ncl == cap) {
            cap *= 2;
            d->clusters = qimg_xrealloc(d->clusters, sizeof *d->clusters * cap);
        }
        d->clusters[d->ncl++] = c;
        int r = fat_next(f, c, &c, "directory");
        if (r < 0)
            return r;
    }
    d->nent = (uint32_t)((uint64_t)d->ncl * cs / FAT_DIRENT_SIZE);
    d->data = qimg_xmalloc((size_t)d->ncl * cs);
    /* read runs of consecutive clusters at once */
    for (uint32_t i = 0; i < d->ncl;) {
        uint32_t j = i + 1;
        while (j < d->ncl && d->clusters[j] == d->clusters[j - 1] + 1)
            j++;
        int r = qimg_fs_dev_read(&f->base.dev, fat_cluster_offset(f, d->clusters[i]),
                                 d->data + (size_t)i * cs, (size_t)(j - i) * cs);
        if (r < 0)
            return r;
        i = j;
    }
    return 0;
}

int fat_dir_load(struct fat_fs *f, uint32_t idx, struct fat_dir **out)
{
    struct fat_node *n = &f->nodes[idx];
    if (!n->is_dir)
        return qimg_error(-ENOTDIR, "FAT: not a directory");
    if (n->dir) {
        *out = n->dir;
        return 0;
    }
    struct fat_dir *d = qimg_xcalloc(1, sizeof *d);
    int r = (idx == 0 && f->bpb.type != FAT32) ? load_fixed_root(f, d)
                                                : load_chain(f, fat_ent_cluster(n->ent), d);
    if (r < 0) {
        fat_dir_free(d);
        return r;
    }
    n->dir = d;
    f->dir_cache_bytes += (uint64_t)d->nent * FAT_DIRENT_SIZE;
    *out = d;
    return 0;
}

/* Device offset of a directory slot. */
static uint64_t slot_offset(struct fat_fs *f, struct fat_dir *d, uint32_t slot)
{
    uint64_t byte = (uint64_t)slot * FAT_DIRENT_SIZE;
    if (!d->clusters)
        return (uint64_t)f->bpb.first_root_sector * f->bpb.bytes_per_sector + byte;
    uint32_t cs = f->bpb.cluster_bytes;
    return fat_cluster_offset(f, d->clusters[byte / cs]) + byte % cs;
}

int fat_dir_write_slots(struct fat_fs *f, struct fat_dir *d, uint32_t first, uint32_t n)
{
    uint32_t per_cl = f->bpb.cluster_bytes / FAT_DIRENT_SIZE;
    while (n > 0) {
        uint32_t k = d->clusters ? QIMG_MIN(n, per_cl - first % per_cl) : n;
        int r = qimg_fs_dev_write(&f->base.dev, slot_offset(f, d, first),
                                  d->data + (size_t)first * FAT_DIRENT_SIZE,
                                  (size_t)k * FAT_DIRENT_SIZE);
        if (r < 0)
            return r;
        first += k;
        n -= k;
    }
    return 0;
}

/* ------------------------------------------------------------ iteration */

struct dir_item {
    uint32_t slot;                    /* the short entry */
    uint8_t nlfn;                     /* valid long-name entries before it */
    const uint8_t *raw;
    uint16_t lname[FAT_LFN_CHARS * 20];
    size_t llen;                      /* 0: no valid long name */
    uint16_t sname[12];
    size_t slen;
};

/* The names of the entry at slot when it is a live file or directory: its
 * short name, and the long name of the entries just before it when they
 * are complete (ordinals 1, 2, ... up to the one marked last) and carry
 * the short name's checksum.  False for free, long-name, label and dot
 * entries. */
static bool entry_names(const struct fat_dir *d, uint32_t slot, struct dir_item *it)
{
    const uint8_t *raw = d->data + (size_t)slot * FAT_DIRENT_SIZE;
    if (raw[0] == 0 || raw[0] == FAT_DELETED || fat_raw_is_lfn(raw) ||
        (raw[11] & FAT_ATTR_VOLUME_ID) || fat_raw_is_dot(raw))
        return false;
    it->slot = slot;
    it->raw = raw;
    it->llen = 0;
    it->nlfn = 0;
    it->slen = fat_short_name_utf16(raw, raw[12], it->sname);
    uint8_t sum = fat_lfn_checksum(raw);
    for (unsigned k = 1; k <= 20 && k <= slot; k++) {
        const uint8_t *l = raw - (size_t)k * FAT_DIRENT_SIZE;
        if (!fat_raw_is_lfn(l) || l[0] == FAT_DELETED || (l[0] & 0x3F) != k || l[13] != sum)
            break;
        fat_lfn_units(l, it->lname + (size_t)(k - 1) * FAT_LFN_CHARS);
        if (l[0] & FAT_LFN_LAST) {
            size_t max = (size_t)k * FAT_LFN_CHARS, len = 0;
            while (len < max && it->lname[len] != 0)
                len++;
            if (len > 0 && len <= FAT_MAX_LFN) {
                it->llen = len;
                it->nlfn = (uint8_t)k;
            }
            break;
        }
    }
    return true;
}

typedef int (*dir_item_fn)(struct fat_fs *f, uint32_t dir, struct dir_item *it, void *opaque);

/* Calls fn for every live file or directory entry, in order, up to the end
 * marker. */
static int dir_walk(struct fat_fs *f, uint32_t dir, dir_item_fn fn, void *opaque)
{
    struct fat_dir *d;
    int r = fat_dir_load(f, dir, &d);
    if (r < 0)
        return r;
    struct dir_item *it = qimg_xmalloc(sizeof *it);
    f->walking++;   /* no cache trim while d is in use (callbacks may call us) */
    r = 0;
    /* d stays valid; fn may grow it (d->data and d->nent are re-read) */
    for (uint32_t i = 0; i < d->nent && r == 0; i++) {
        if (d->data[(size_t)i * FAT_DIRENT_SIZE] == 0)
            break;
        if (entry_names(d, i, it))
            r = fn(f, dir, it, opaque);
    }
    f->walking--;
    free(it);
    return r;
}

/* Builds the name indexes of a loaded directory. */
static void index_add(struct fat_dir *d, const struct dir_item *it)
{
    if (it->llen)
        fat_ix_insert(&d->names, fat_name_hash(it->lname, it->llen), it->slot);
    fat_ix_insert(&d->names, fat_name_hash(it->sname, it->slen), it->slot);
    fat_ix_insert(&d->shorts, fat_short_hash(it->raw), it->slot);
}

static void index_build(struct fat_fs *f, struct fat_dir *d)
{
    if (d->indexed)
        return;
    struct dir_item *it = qimg_xmalloc(sizeof *it);
    for (uint32_t i = 0; i < d->nent; i++) {
        if (d->data[(size_t)i * FAT_DIRENT_SIZE] == 0)
            break;
        if (entry_names(d, i, it))
            index_add(d, it);
    }
    free(it);
    d->indexed = true;
    /* counted with the cached entries (roughly: the tables double later) */
    f->dir_cache_bytes += 2 * (uint64_t)(d->names.cap + d->shorts.cap) * 2 * sizeof(uint32_t);
}

/* True when a live entry of d has the 8.3 name sn. */
static bool short_exists(const struct fat_dir *d, const uint8_t sn[11])
{
    uint32_t h = fat_short_hash(sn);
    for (uint32_t j = fat_ix_first(&d->shorts, h); j != UINT32_MAX; j = fat_ix_next(&d->shorts, h, j)) {
        uint32_t slot = d->shorts.slot1[j] - 1;
        const uint8_t *raw = d->data + (size_t)slot * FAT_DIRENT_SIZE;
        if (slot < d->nent && raw[0] != 0 && raw[0] != FAT_DELETED && !fat_raw_is_lfn(raw) &&
            !memcmp(raw, sn, 11))
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------- lookup */

/* Finds name in dir: 0 with *idx, -ENOENT (no message) when absent. */
static int lookup_idx(struct fat_fs *f, uint32_t dir, const char *name, uint32_t *idx)
{
    uint16_t u16[FAT_MAX_LFN];
    size_t len;
    if (fat_utf8_to_utf16(name, u16, FAT_MAX_LFN, &len) < 0 || len == 0)
        return -ENOENT;
    struct fat_dir *d;
    int r = fat_dir_load(f, dir, &d);
    if (r < 0)
        return r;
    index_build(f, d);
    struct dir_item *it = qimg_xmalloc(sizeof *it);
    uint32_t h = fat_name_hash(u16, len);
    r = -ENOENT;
    for (uint32_t j = fat_ix_first(&d->names, h); j != UINT32_MAX; j = fat_ix_next(&d->names, h, j)) {
        uint32_t slot = d->names.slot1[j] - 1;
        if (slot >= d->nent || !entry_names(d, slot, it))
            continue;
        if ((it->llen && fat_name_equal_nocase(it->lname, it->llen, u16, len)) ||
            fat_name_equal_nocase(it->sname, it->slen, u16, len)) {
            r = fat_node_get(f, dir, slot, it->nlfn, it->raw, idx);
            break;
        }
    }
    free(it);
    return r;
}

int fat_lookup(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino *out)
{
    struct fat_fs *f = FATFS(fs);
    fat_dir_cache_trim(f);
    uint32_t d, idx;
    int r = fat_node_by_ino(f, dir, &d);
    if (r < 0)
        return r;
    r = lookup_idx(f, d, name, &idx);
    if (r < 0)
        return r;
    *out = (qimg_fs_ino)idx + 1;
    return 0;
}

/* --------------------------------------------------------------- readdir */

struct readdir_ctx {
    qimg_fs_dir_cb cb;
    void *opaque;
    char name[FAT_MAX_LFN * 3 + 1];
};

static int readdir_item(struct fat_fs *f, uint32_t dir, struct dir_item *it, void *opaque)
{
    struct readdir_ctx *c = opaque;
    uint32_t idx;
    int r = fat_node_get(f, dir, it->slot, it->nlfn, it->raw, &idx);
    if (r < 0)
        return r;
    if (it->llen)
        fat_utf16_to_utf8(it->lname, it->llen, c->name);
    else
        fat_utf16_to_utf8(it->sname, it->slen, c->name);
    if (strchr(c->name, '/') || !strcmp(c->name, ".") || !strcmp(c->name, ".."))
        return 0;   /* not a name we can give (hostile long name) */
    return c->cb(c->opaque, c->name, (qimg_fs_ino)idx + 1);
}

int fat_readdir(struct qimg_fs *fs, qimg_fs_ino dir, qimg_fs_dir_cb cb, void *opaque)
{
    struct fat_fs *f = FATFS(fs);
    fat_dir_cache_trim(f);
    uint32_t d;
    int r = fat_node_by_ino(f, dir, &d);
    if (r < 0)
        return r;
    struct readdir_ctx *c = qimg_xmalloc(sizeof *c);
    c->cb = cb;
    c->opaque = opaque;
    r = dir_walk(f, d, readdir_item, c);
    free(c);
    return r;
}

/* ---------------------------------------------------------------- create */

/* A free run of n slots in d (deleted or past the end marker): its start,
 * or d->nent when none. */
static uint32_t find_free_slots(struct fat_dir *d, uint32_t n)
{
    uint32_t run = 0;
    bool first_seen = false;
    for (uint32_t i = QIMG_MIN(d->free_hint, d->nent); i < d->nent; i++) {
        uint8_t c = d->data[(size_t)i * FAT_DIRENT_SIZE];
        if ((c == 0 || c == FAT_DELETED) && !first_seen) {
            d->free_hint = i;   /* everything before is in use */
            first_seen = true;
        }
        if (c == 0) {
            /* everything after the end marker is free */
            return d->nent - i >= n - run ? i - run : d->nent;
        }
        if (c == FAT_DELETED) {
            if (++run == n)
                return i + 1 - n;
        } else {
            run = 0;
        }
    }
    return d->nent;
}

/* Free slots at the end of d (after its last used entry). */
static uint32_t trailing_free(struct fat_dir *d)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < d->nent; i++) {
        uint8_t c = d->data[(size_t)i * FAT_DIRENT_SIZE];
        if (c == 0)
            return d->nent - i + n;
        n = c == FAT_DELETED ? n + 1 : 0;
    }
    return n;
}

/* Grows a directory by enough zeroed clusters for n more slots at its end. */
static int dir_grow(struct fat_fs *f, struct fat_dir *d, uint32_t n)
{
    if (!d->clusters)
        return qimg_error(-ENOSPC, "the FAT root directory is full (%" PRIu32 " entries)",
                          d->nent);
    uint32_t cs = f->bpb.cluster_bytes;
    uint32_t add = (uint32_t)qimg_div_round_up((uint64_t)n * FAT_DIRENT_SIZE, cs);
    if ((uint64_t)d->nent + (uint64_t)add * cs / FAT_DIRENT_SIZE > FAT_MAX_DIR_ENTRIES)
        return qimg_error(-ENOSPC, "the FAT directory is full (%d entries at most)",
                          FAT_MAX_DIR_ENTRIES);
    uint32_t last = d->clusters[d->ncl - 1], first, end;
    int r = fat_alloc_chain(f, last, last + 1, add, &first, &end);
    if (r < 0)
        return r;
    d->clusters = qimg_xrealloc(d->clusters, sizeof *d->clusters * (d->ncl + add));
    d->data = qimg_xrealloc(d->data, (size_t)(d->ncl + add) * cs);
    memset(d->data + (size_t)d->ncl * cs, 0, (size_t)add * cs);
    for (uint32_t i = 0, c = first; i < add; i++) {
        d->clusters[d->ncl + i] = c;
        r = qimg_fs_dev_zero(&f->base.dev, fat_cluster_offset(f, c), cs);
        if (r < 0)
            return r;
        if (i + 1 < add)
            c = fat_entry_get(f->fat, f->bpb.type, c);
    }
    d->ncl += add;
    d->nent += (uint32_t)((uint64_t)add * cs / FAT_DIRENT_SIZE);
    f->dir_cache_bytes += (uint64_t)add * cs;
    return 0;
}

/* Picks the short name: the basis when it is free and needs no tail, else
 * the basis with a free "~N": the smallest, except that a run of names with
 * the same basis continues from the last N given (so that thousands of
 * similar names do not each try every N).  Each live entry takes at most
 * one N, so one is free by nent + 1. */
static int pick_short_name(struct fat_dir *d, const uint8_t basis[11], bool needs_tail,
                           uint8_t out[11])
{
    if (!needs_tail && !short_exists(d, basis)) {
        memcpy(out, basis, 11);
        return 0;
    }
    uint32_t limit = QIMG_MIN(d->nent + 1, 999999u);
    uint32_t start = !memcmp(basis, d->tail_basis, 11) && d->tail_next >= 1 &&
                     d->tail_next <= limit ? d->tail_next : 1;
    for (uint32_t i = 0; i < limit; i++) {
        uint32_t n = (start - 1 + i) % limit + 1;
        fat_short_name_with_tail(basis, n, out);
        if (!short_exists(d, out)) {
            memcpy(d->tail_basis, basis, 11);
            d->tail_next = n + 1;
            return 0;
        }
    }
    return qimg_error(-ENOSPC, "FAT: no free short name for this long name");
}

/* Writes "." and ".." into the new directory's zeroed first cluster. */
static int init_dir_cluster(struct fat_fs *f, uint32_t c, uint32_t parent_cluster,
                            const uint8_t *ent)
{
    uint32_t cs = f->bpb.cluster_bytes;
    int r = qimg_fs_dev_zero(&f->base.dev, fat_cluster_offset(f, c), cs);
    if (r < 0)
        return r;
    uint8_t dots[2 * FAT_DIRENT_SIZE];
    memcpy(dots, ent, FAT_DIRENT_SIZE);
    memcpy(dots, ".          ", 11);
    fat_ent_set_cluster(dots, c);
    memcpy(dots + FAT_DIRENT_SIZE, ent, FAT_DIRENT_SIZE);
    memcpy(dots + FAT_DIRENT_SIZE, "..         ", 11);
    fat_ent_set_cluster(dots + FAT_DIRENT_SIZE, parent_cluster);
    dots[12] = dots[FAT_DIRENT_SIZE + 12] = 0;
    return qimg_fs_dev_write(&f->base.dev, fat_cluster_offset(f, c), dots, sizeof dots);
}

static void fill_entry(uint8_t *e, const uint8_t sn[11], uint8_t ntres, bool dir,
                       const struct qimg_fs_attr *a)
{
    memset(e, 0, FAT_DIRENT_SIZE);
    memcpy(e, sn, 11);
    e[11] = dir ? FAT_ATTR_DIRECTORY : FAT_ATTR_ARCHIVE;
    if (!(a->mode & 0200))
        e[11] |= FAT_ATTR_READ_ONLY;
    e[12] = ntres;
    uint16_t date, time;
    uint8_t tenth;
    fat_time_encode(a->crtime ? a->crtime : a->mtime, a->crtime ? a->crtime_ns : a->mtime_ns,
                    &date, &time, &tenth);
    e[13] = tenth;
    qimg_put_le16(e + 14, time);
    qimg_put_le16(e + 16, date);
    fat_time_encode(a->atime, 0, &date, &time, NULL);
    qimg_put_le16(e + 18, date);
    fat_time_encode(a->mtime, a->mtime_ns, &date, &time, NULL);
    qimg_put_le16(e + 22, time);
    qimg_put_le16(e + 24, date);
}

int fat_create(struct qimg_fs *fs, qimg_fs_ino dir, const char *name,
               const struct qimg_fs_attr *attr, const char *symlink_target, qimg_fs_ino *out)
{
    struct fat_fs *f = FATFS(fs);
    fat_dir_cache_trim(f);
    uint32_t didx, existing;
    int r = fat_node_by_ino(f, dir, &didx);
    if (r < 0)
        return r;
    bool is_dir = S_ISDIR(attr->mode);
    if (!is_dir && !S_ISREG(attr->mode))
        return qimg_error(-ENOTSUP, "FAT cannot hold '%s': only regular files and directories "
                          "(no symbolic links, devices, fifos or sockets)", name);
    uint16_t u16[FAT_MAX_LFN];
    size_t len;
    r = fat_check_long_name(name, u16, &len);
    if (r < 0)
        return r;
    r = lookup_idx(f, didx, name, &existing);
    if (r == 0)
        return qimg_error(-EEXIST, "'%s' already exists", name);
    if (r != -ENOENT)
        return r;
    struct fat_dir *d;
    r = fat_dir_load(f, didx, &d);
    if (r < 0)
        return r;

    uint8_t basis[11], sn[11], ntres;
    bool needs_lfn, needs_tail;
    fat_short_name_basis(u16, len, basis, &ntres, &needs_lfn, &needs_tail);
    if (needs_lfn) {
        r = pick_short_name(d, basis, needs_tail, sn);
        if (r < 0)
            return r;
    } else {
        memcpy(sn, basis, 11);
    }
    uint32_t nlfn = needs_lfn ? fat_lfn_entries(len) : 0, need = nlfn + 1;

    r = fat_begin_change(f);
    if (r < 0)
        return r;
    uint32_t slot = find_free_slots(d, need);
    if (slot == d->nent) {
        uint32_t tail = trailing_free(d);
        r = dir_grow(f, d, need - tail);
        if (r < 0)
            return r;
        slot = find_free_slots(d, need);
        if (slot == d->nent)
            return qimg_error(-EIO, "FAT: no room in a grown directory");
    }

    uint8_t ent[FAT_DIRENT_SIZE];
    fill_entry(ent, sn, ntres, is_dir, attr);
    if (is_dir) {
        uint32_t c, last;
        r = fat_alloc_chain(f, 0, 0, 1, &c, &last);
        if (r < 0)
            return r;
        fat_ent_set_cluster(ent, c);
        uint32_t pc = didx == 0 ? 0 : fat_ent_cluster(f->nodes[didx].ent);
        r = init_dir_cluster(f, c, pc, ent);
        if (r < 0)
            return r;
    }
    fat_name_entries(u16, len, nlfn, ent, d->data + (size_t)slot * FAT_DIRENT_SIZE);
    r = fat_dir_write_slots(f, d, slot, need);
    if (r < 0)
        return r;
    if (d->indexed) {
        struct dir_item *it = qimg_xmalloc(sizeof *it);
        if (entry_names(d, slot + nlfn, it))
            index_add(d, it);
        free(it);
    }
    uint32_t idx;
    r = fat_node_get(f, didx, slot + nlfn, (uint8_t)nlfn, ent, &idx);
    if (r < 0)
        return r;
    if (is_dir) {
        /* an empty directory: cache it without reading */
        struct fat_dir *nd = qimg_xcalloc(1, sizeof *nd);
        uint32_t cs = f->bpb.cluster_bytes;
        nd->ncl = 1;
        nd->clusters = qimg_xmalloc(sizeof *nd->clusters);
        nd->clusters[0] = fat_ent_cluster(ent);
        nd->nent = cs / FAT_DIRENT_SIZE;
        nd->data = qimg_xcalloc(1, cs);
        memcpy(nd->data, ".          ", 11);
        nd->data[11] = FAT_ATTR_DIRECTORY;
        memcpy(nd->data + FAT_DIRENT_SIZE, "..         ", 11);
        nd->data[FAT_DIRENT_SIZE + 11] = FAT_ATTR_DIRECTORY;
        f->nodes[idx].dir = nd;
        f->dir_cache_bytes += cs;
    }
    *out = (qimg_fs_ino)idx + 1;
    return 0;
}

/* ---------------------------------------------------------------- unlink */

int fat_unlink(struct qimg_fs *fs, qimg_fs_ino dir, const char *name)
{
    struct fat_fs *f = FATFS(fs);
    fat_dir_cache_trim(f);
    uint32_t didx, idx;
    int r = fat_node_by_ino(f, dir, &didx);
    if (r < 0)
        return r;
    r = lookup_idx(f, didx, name, &idx);
    if (r == -ENOENT)
        return qimg_error(r, "'%s' does not exist", name);
    if (r < 0)
        return r;
    struct fat_node *n = &f->nodes[idx];
    if (n->is_dir)
        return qimg_error(-EISDIR, "'%s' is a directory", name);
    r = fat_begin_change(f);
    if (r < 0)
        return r;
    struct fat_dir *d;
    r = fat_dir_load(f, didx, &d);
    if (r < 0)
        return r;
    n = &f->nodes[idx];
    uint32_t first = n->slot - n->nlfn;
    for (uint32_t i = first; i <= n->slot; i++)
        d->data[(size_t)i * FAT_DIRENT_SIZE] = FAT_DELETED;
    d->free_hint = QIMG_MIN(d->free_hint, first);
    r = fat_dir_write_slots(f, d, first, n->slot - first + 1);
    if (r < 0)
        return r;
    uint32_t c = fat_ent_cluster(n->ent);
    n->dead = true;
    if (c)
        fat_free_chain(f, c);
    return 0;
}
