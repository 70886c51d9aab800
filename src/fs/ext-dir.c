/* ext2/3/4: adding names to directories quickly.
 *
 * libext2fs's ext2fs_link and ext2fs_lookup read (and checksum) every block
 * of a directory for each name, so filling a directory of n entries costs
 * n^2 block reads.  A directory we add to is "adopted" once: its names go
 * into an in-memory index and we remember where its last entry is; later
 * names are appended to its last block (a new block when it is full)
 * without reading the rest.  Indexed (htree) and inline directories get
 * the name index too, but their entries are added by ext2fs_link. */
#ifdef HAVE_EXT2FS

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "ext.h"
#include "internal.h"
#include "util.h"

struct dir_state {
    ext2_ino_t dir;               /* 0 = free slot */
    bool tracked;                 /* its names are in the index */
    bool appendable;              /* we append to its last block (else ext2fs_link) */
    blk64_t pblk;                 /* the last block */
    unsigned last_off;            /* offset of the last entry in it */
};

struct name_entry {
    uint64_t hash;
    ext2_ino_t dir;               /* 0 = free, ~0 = removed */
    ext2_ino_t ino;
    size_t name_off;
    uint16_t len;
};

struct ext_dirs {
    struct dir_state *dirs;
    size_t dirs_cap, dirs_n;
    struct name_entry *names;
    size_t names_cap, names_used;  /* used counts removed slots too */
    char *arena;
    size_t arena_len, arena_cap;
    unsigned char *block;
};

#define REMOVED ((ext2_ino_t)~0u)

static uint64_t name_hash(ext2_ino_t dir, const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ dir;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)name[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static struct ext_dirs *dirs_of(struct ext_fs *x)
{
    if (!x->dirs)
        x->dirs = qimg_xcalloc(1, sizeof *x->dirs);
    return x->dirs;
}

void ext_dirs_free(struct ext_fs *x)
{
    struct ext_dirs *d = x->dirs;
    if (!d)
        return;
    free(d->dirs);
    free(d->names);
    free(d->arena);
    free(d->block);
    free(d);
    x->dirs = NULL;
}

/* ------------------------------------------------------------ dir states */

static struct dir_state *find_dir(struct ext_dirs *d, ext2_ino_t dir, bool insert)
{
    if (insert && (d->dirs_n + 1) * 2 > d->dirs_cap) {
        size_t cap = d->dirs_cap ? d->dirs_cap * 2 : 64;
        struct dir_state *old = d->dirs;
        size_t old_cap = d->dirs_cap;
        d->dirs = qimg_xcalloc(cap, sizeof *d->dirs);
        d->dirs_cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (!old[i].dir)
                continue;
            size_t j = old[i].dir & (cap - 1);
            while (d->dirs[j].dir)
                j = (j + 1) & (cap - 1);
            d->dirs[j] = old[i];
        }
        free(old);
    }
    if (!d->dirs_cap)
        return NULL;
    size_t j = dir & (d->dirs_cap - 1);
    while (d->dirs[j].dir) {
        if (d->dirs[j].dir == dir)
            return &d->dirs[j];
        j = (j + 1) & (d->dirs_cap - 1);
    }
    if (!insert)
        return NULL;
    d->dirs[j].dir = dir;
    d->dirs_n++;
    return &d->dirs[j];
}

/* ----------------------------------------------------------------- names */

static void names_grow(struct ext_dirs *d)
{
    size_t cap = d->names_cap ? d->names_cap * 2 : 1024;
    struct name_entry *old = d->names;
    size_t old_cap = d->names_cap, used = 0;
    d->names = qimg_xcalloc(cap, sizeof *d->names);
    d->names_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].dir || old[i].dir == REMOVED)
            continue;
        size_t j = old[i].hash & (cap - 1);
        while (d->names[j].dir)
            j = (j + 1) & (cap - 1);
        d->names[j] = old[i];
        used++;
    }
    d->names_used = used;
    free(old);
}

static struct name_entry *find_name(struct ext_dirs *d, ext2_ino_t dir, const char *name,
                                    size_t len, uint64_t h)
{
    if (!d->names_cap)
        return NULL;
    size_t j = h & (d->names_cap - 1);
    while (d->names[j].dir) {
        struct name_entry *n = &d->names[j];
        if (n->dir == dir && n->hash == h && n->len == len &&
            memcmp(d->arena + n->name_off, name, len) == 0)
            return n;
        j = (j + 1) & (d->names_cap - 1);
    }
    return NULL;
}

static void add_name(struct ext_dirs *d, ext2_ino_t dir, const char *name, size_t len,
                     ext2_ino_t ino)
{
    if ((d->names_used + 1) * 2 > d->names_cap)
        names_grow(d);
    if (d->arena_len + len > d->arena_cap) {
        d->arena_cap = QIMG_MAX(d->arena_cap * 2, d->arena_len + len + 65536);
        d->arena = qimg_xrealloc(d->arena, d->arena_cap);
    }
    memcpy(d->arena + d->arena_len, name, len);
    uint64_t h = name_hash(dir, name, len);
    size_t j = h & (d->names_cap - 1);
    while (d->names[j].dir)
        j = (j + 1) & (d->names_cap - 1);
    d->names[j] = (struct name_entry){ h, dir, ino, d->arena_len, (uint16_t)len };
    d->arena_len += len;
    d->names_used++;
}

/* ------------------------------------------------------------- adoption */

static unsigned rec_len_for(size_t name_len)
{
    return (unsigned)((8 + name_len + 3) & ~(size_t)3);
}

static unsigned usable_bytes(ext2_filsys fs)
{
    return fs->blocksize - (ext2fs_has_feature_metadata_csum(fs->super)
                                ? (unsigned)sizeof(struct ext2_dir_entry_tail) : 0);
}

/* Finds the last entry of a directory block; false when the block does not
 * parse cleanly (then the directory stays with libext2fs). */
static bool find_last_entry(ext2_filsys fs, const unsigned char *buf, unsigned *last)
{
    unsigned usable = usable_bytes(fs), off = 0;
    while (off < usable) {
        unsigned rec_len;
        const struct ext2_dir_entry *de = (const void *)(buf + off);
        if (off + 8 > usable || ext2fs_get_rec_len(fs, (struct ext2_dir_entry *)de, &rec_len) ||
            rec_len < 8 || rec_len % 4 || off + rec_len > usable ||
            (de->inode && rec_len_for(ext2fs_dirent_name_len(de)) > rec_len))
            return false;
        if (off + rec_len == usable) {
            *last = off;
            return true;
        }
        off += rec_len;
    }
    return false;
}

struct adopt_ctx {
    struct ext_dirs *d;
    ext2_ino_t dir;
};

static int adopt_entry(void *opaque, const char *name, size_t len, ext2_ino_t ino)
{
    struct adopt_ctx *c = opaque;
    add_name(c->d, c->dir, name, len, ino);
    return 0;
}

/* Where a directory's last block is. */
static int locate_last_block(struct ext_fs *x, ext2_ino_t dir, struct dir_state *st)
{
    ext_inode in;
    int r = ext_read_inode(x, dir, &in);
    if (r < 0)
        return r;
    uint64_t bs = x->e2->blocksize, size = EXT2_I_SIZE(&in);
    if (!LINUX_S_ISDIR(in.i_mode) || size == 0 || size % bs || size / bs > (1u << 24) ||
        (in.i_flags & (EXT2_INDEX_FL | EXT4_INLINE_DATA_FL)))
        return 0;
    blk64_t pblk, n;
    if ((r = ext_map_run(x, dir, &in, size / bs - 1, 1, &pblk, &n)) < 0 || !pblk)
        return r;
    struct ext_dirs *d = x->dirs;
    if (!d->block)
        d->block = qimg_xmalloc(bs);
    errcode_t e = io_channel_read_blk64(x->e2->io, pblk, 1, d->block);
    if (e)
        return ext_err(&x->io, e, "%s: reading directory %u", x->base.type, dir);
    if (!find_last_entry(x->e2, d->block, &st->last_off))
        return 0;
    st->pblk = pblk;
    return 1;
}

static int adopt(struct ext_fs *x, ext2_ino_t dir, struct dir_state **out)
{
    struct ext_dirs *d = dirs_of(x);
    struct dir_state *st = find_dir(d, dir, true);
    *out = st->tracked ? st : NULL;
    if (st->tracked || st->pblk == ~0ull)
        return 0;
    st->pblk = ~0ull;             /* not adoptable unless shown otherwise */
    int r = locate_last_block(x, dir, st);
    if (r < 0)
        return r;
    st->appendable = r > 0;
    struct adopt_ctx c = { d, dir };
    if ((r = ext_dir_walk(x, dir, adopt_entry, &c)) < 0)
        return r;
    st->tracked = true;
    *out = st;
    return 0;
}

/* ------------------------------------------------------------- interface */

int ext_dirs_lookup(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t *ino)
{
    struct dir_state *st = x->dirs ? find_dir(x->dirs, dir, false) : NULL;
    if (!st || !st->tracked)
        return -1;
    size_t len = strlen(name);
    struct name_entry *n = find_name(x->dirs, dir, name, len, name_hash(dir, name, len));
    if (!n)
        return 0;
    *ino = n->ino;
    return 1;
}

void ext_dirs_track_new(struct ext_fs *x, ext2_ino_t dir, blk64_t pblk)
{
    struct dir_state *st = find_dir(dirs_of(x), dir, true);
    st->tracked = true;
    st->appendable = true;
    st->pblk = pblk;
    st->last_off = 12;            /* "." takes 12 bytes, ".." the rest */
}

int ext_dirs_removed(struct ext_fs *x, ext2_ino_t dir, const char *name)
{
    struct dir_state *st = x->dirs ? find_dir(x->dirs, dir, false) : NULL;
    if (!st || !st->tracked)
        return 0;
    size_t len = strlen(name);
    struct name_entry *n = find_name(x->dirs, dir, name, len, name_hash(dir, name, len));
    if (n)
        n->dir = REMOVED;
    if (!st->appendable)
        return 0;
    /* the removed entry may have been the last one */
    int r = locate_last_block(x, dir, st);
    if (r <= 0)
        st->appendable = false;
    return r < 0 ? r : 0;
}

void ext_dirs_added(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t ino)
{
    struct dir_state *st = x->dirs ? find_dir(x->dirs, dir, false) : NULL;
    if (st && st->tracked && !st->appendable)
        add_name(x->dirs, dir, name, strlen(name), ino);
}

static int grow(struct ext_fs *x, ext2_ino_t dir, struct dir_state *st)
{
    errcode_t e = ext2fs_expand_dir(x->e2, dir);
    if (e)
        return ext_err(&x->io, e, "%s: growing directory %u", x->base.type, dir);
    int r = locate_last_block(x, dir, st);
    if (r == 0)
        return qimg_error(-EIO, "%s: directory %u: cannot find its new block", x->base.type,
                          dir);
    return r < 0 ? r : 0;
}

int ext_dirs_add(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype)
{
    struct dir_state *st;
    int r = adopt(x, dir, &st);
    if (r < 0 || !st || !st->appendable)
        return r;
    ext2_filsys fs = x->e2;
    struct ext_dirs *d = x->dirs;
    size_t len = strlen(name);
    unsigned need = rec_len_for(len), usable = usable_bytes(fs);
    if (!d->block)
        d->block = qimg_xmalloc(fs->blocksize);
    for (int tries = 0; tries < 2; tries++) {
        errcode_t e = io_channel_read_blk64(fs->io, st->pblk, 1, d->block);
        if (e)
            return ext_err(&x->io, e, "%s: reading directory %u", x->base.type, dir);
        struct ext2_dir_entry *last = (void *)(d->block + st->last_off);
        unsigned last_len = last->inode ? rec_len_for(ext2fs_dirent_name_len(last)) : 0;
        unsigned start = st->last_off + last_len;
        if (start + need > usable) {
            if ((r = grow(x, dir, st)) < 0)
                return r;
            continue;
        }
        if (last_len)
            ext2fs_set_rec_len(fs, last_len, last);
        struct ext2_dir_entry *de = (void *)(d->block + start);
        memset(de, 0, need);
        de->inode = ino;
        ext2fs_set_rec_len(fs, usable - start, de);
        ext2fs_dirent_set_name_len(de, (int)len);
        ext2fs_dirent_set_file_type(de, ext2fs_has_feature_filetype(fs->super) ? ftype : 0);
        memcpy(de->name, name, len);
        e = ext2fs_write_dir_block4(fs, st->pblk, d->block, 0, dir);
        if (e)
            return ext_err(&x->io, e, "%s: writing directory %u", x->base.type, dir);
        st->last_off = start;
        add_name(d, dir, name, len, ino);
        return 1;
    }
    return qimg_error(-EIO, "%s: directory %u: no room after growing it", x->base.type, dir);
}

#endif /* HAVE_EXT2FS */
