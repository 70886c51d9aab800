/* ext2/3/4 through libext2fs: probe, open, close and the read callbacks,
 * inodes and block mapping.  The I/O manager is in ext-io.c, creating and
 * writing in ext-write.c (names added to directories in ext-dir.c), mkfs in
 * ext-mkfs.c. */
#ifdef HAVE_EXT2FS

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "ext.h"
#include "internal.h"
#include "util.h"

/* ---------------------------------------------------------------- inodes */

int ext_check_ino(struct ext_fs *x, qimg_fs_ino ino)
{
    if (ino < 1 || ino > x->e2->super->s_inodes_count)
        return qimg_error(-EIO, "%s: inode number %" PRIu64 " is out of range (1-%u)",
                          x->base.type, ino, x->e2->super->s_inodes_count);
    return 0;
}

int ext_read_inode(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode)
{
    int r = ext_check_ino(x, ino);
    if (r < 0)
        return r;
    memset(inode, 0, sizeof *inode);
    errcode_t e = ext2fs_read_inode_full(x->e2, ino, EXT_SMALL(inode), sizeof *inode);
    if (e)
        return ext_err(&x->io, e, "%s: reading inode %u", x->base.type, ino);
    if (EXT2_INODE_SIZE(x->e2->super) <= EXT2_GOOD_OLD_INODE_SIZE)
        inode->i_extra_isize = 0;
    else if (inode->i_extra_isize > EXT2_INODE_SIZE(x->e2->super) - EXT2_GOOD_OLD_INODE_SIZE)
        return qimg_error(-EIO, "%s: inode %u: bad extra size %u", x->base.type, ino,
                          inode->i_extra_isize);
    return 0;
}

int ext_write_inode(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode)
{
    size_t size = QIMG_MIN(sizeof *inode, (size_t)EXT2_INODE_SIZE(x->e2->super));
    errcode_t e = ext2fs_write_inode_full(x->e2, ino, EXT_SMALL(inode), (int)size);
    if (e)
        return ext_err(&x->io, e, "%s: writing inode %u", x->base.type, ino);
    return 0;
}

int ext_write_new_inode(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode)
{
    size_t isize = (size_t)EXT2_INODE_SIZE(x->e2->super);
    CLEANUP_FREE unsigned char *buf = qimg_xcalloc(1, isize);
    memcpy(buf, inode, QIMG_MIN(sizeof *inode, isize));
    errcode_t e = ext2fs_write_inode_full(x->e2, ino, (struct ext2_inode *)buf, (int)isize);
    if (e)
        return ext_err(&x->io, e, "%s: writing inode %u", x->base.type, ino);
    return 0;
}

uint64_t ext_max_file_size(ext2_filsys fs)
{
    uint64_t bs = fs->blocksize;
    if (ext2fs_has_feature_extents(fs->super))
        return (1ull << 32) * bs;
    uint64_t a = bs / 4;
    return (12 + a + a * a + a * a * a) * bs;
}

static int check_size(struct ext_fs *x, ext2_ino_t ino, const ext_inode *inode, uint64_t *size)
{
    *size = EXT2_I_SIZE(inode);
    if (*size > ext_max_file_size(x->e2))
        return qimg_error(-EIO, "%s: inode %u claims a size of %" PRIu64
                          " bytes, more than the filesystem can hold", x->base.type, ino, *size);
    return 0;
}

/* Whether an extra field (offset, size) is present in this inode. */
static bool has_extra(const ext_inode *inode, size_t field_end)
{
    return inode->i_extra_isize &&
           EXT2_GOOD_OLD_INODE_SIZE + (size_t)inode->i_extra_isize >= field_end;
}
#define HAS_EXTRA(inode, field) \
    has_extra(inode, offsetof(struct ext2_inode_large, field) + sizeof((inode)->field))

static void get_time(uint32_t lo, const uint32_t *extra, int64_t *sec, uint32_t *ns)
{
    *sec = (int32_t)lo;
    *ns = 0;
    if (extra) {
        *sec += (int64_t)(*extra & EXT4_EPOCH_MASK) << 32;
        *ns = *extra >> EXT4_EPOCH_BITS;
        if (*ns > 999999999u)
            *ns = 0;
    }
}

static void put_time(int64_t sec, uint32_t ns, uint32_t *lo, uint32_t *extra)
{
    int64_t min = INT32_MIN, max = INT32_MIN + (4ll << 32) - 1;
    if (!extra)
        max = INT32_MAX;
    sec = QIMG_MAX(min, QIMG_MIN(max, sec));
    *lo = (uint32_t)sec;
    if (extra) {
        uint32_t epoch = (uint32_t)(((sec - (int64_t)(int32_t)*lo) >> 32) & EXT4_EPOCH_MASK);
        *extra = (QIMG_MIN(ns, 999999999u) << EXT4_EPOCH_BITS) | epoch;
    }
}

void ext_set_times(ext2_filsys fs, ext_inode *in, const struct qimg_fs_attr *a)
{
    put_time(a->atime, a->atime_ns, &in->i_atime,
             HAS_EXTRA(in, i_atime_extra) ? &in->i_atime_extra : NULL);
    put_time(a->mtime, a->mtime_ns, &in->i_mtime,
             HAS_EXTRA(in, i_mtime_extra) ? &in->i_mtime_extra : NULL);
    put_time(a->ctime, a->ctime_ns, &in->i_ctime,
             HAS_EXTRA(in, i_ctime_extra) ? &in->i_ctime_extra : NULL);
    if (HAS_EXTRA(in, i_crtime_extra))
        put_time(a->crtime, a->crtime_ns, &in->i_crtime, &in->i_crtime_extra);
}

/* --------------------------------------------------------------- mapping */

static int check_run(struct ext_fs *x, ext2_ino_t ino, blk64_t pblk, blk64_t len)
{
    blk64_t end;
    if (pblk < x->e2->super->s_first_data_block ||
        __builtin_add_overflow(pblk, len, &end) || end > ext2fs_blocks_count(x->e2->super))
        return qimg_error(-EIO, "%s: inode %u maps blocks %llu+%llu outside the filesystem",
                          x->base.type, ino, (unsigned long long)pblk, (unsigned long long)len);
    return 0;
}

/* The leaf extent after a failed goto that starts past lblk: bounds the hole. */
static int next_extent_start(struct ext_fs *x, ext2_extent_handle_t h, blk64_t lblk,
                             blk64_t *next)
{
    struct ext2fs_extent ex;
    *next = ~0ull;
    errcode_t e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
    /* a file has at most one leaf extent per block of the device; a tree
     * whose index blocks are shared could list far more */
    uint64_t limit = QIMG_MIN((uint64_t)ext2fs_blocks_count(x->e2->super),
                              x->base.dev.size / x->e2->blocksize) + 16;
    for (uint64_t i = 0; !e && i < limit; i++) {
        if ((ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) && ex.e_lblk > lblk) {
            *next = ex.e_lblk;
            return 0;
        }
        e = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &ex);
    }
    if (e && e != EXT2_ET_EXTENT_NO_NEXT && e != EXT2_ET_NO_CURRENT_NODE &&
        e != EXT2_ET_EXTENT_NOT_FOUND)
        return ext_err(&x->io, e, "%s: reading the extents of an inode", x->base.type);
    return 0;
}

static int map_extents(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode, blk64_t lblk,
                       blk64_t max, blk64_t *pblk, blk64_t *len)
{
    ext2_extent_handle_t h;
    errcode_t e = ext2fs_extent_open2(x->e2, ino, EXT_SMALL(inode), &h);
    if (e)
        return ext_err(&x->io, e, "%s: inode %u: reading its extent tree", x->base.type, ino);
    int r = 0;
    struct ext2fs_extent ex;
    e = ext2fs_extent_goto(h, lblk);
    if (!e)
        e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
    if (!e && ex.e_lblk <= lblk && lblk - ex.e_lblk < ex.e_len) {
        *len = QIMG_MIN(max, (blk64_t)ex.e_lblk + ex.e_len - lblk);
        if (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT) {
            *pblk = 0;
        } else {
            *pblk = ex.e_pblk + (lblk - ex.e_lblk);
            r = check_run(x, ino, *pblk, *len);
        }
    } else if (!e || e == EXT2_ET_EXTENT_NOT_FOUND) {
        blk64_t next;
        r = next_extent_start(x, h, lblk, &next);
        *pblk = 0;
        *len = next == ~0ull ? max : QIMG_MIN(max, next - lblk);
    } else {
        r = ext_err(&x->io, e, "%s: inode %u: looking up block %llu", x->base.type, ino,
                    (unsigned long long)lblk);
    }
    ext2fs_extent_free(h);
    return r;
}

/* Where the hole at lblk of a block-mapped file ends: the coverage of the
 * first zero pointer on the way down the indirect tree, so that a hole of
 * any size is skipped in at most four block reads. */
static int indirect_hole_end(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, blk64_t lblk,
                             blk64_t *end)
{
    uint64_t a = x->e2->blocksize / 4, base = EXT2_NDIR_BLOCKS, span = a;
    if (lblk < EXT2_NDIR_BLOCKS) {
        *end = lblk + 1;
        return 0;
    }
    for (int level = 1; level <= 3; level++, base += span, span *= a) {
        if (lblk >= base + span)
            continue;
        uint32_t ptr = in->i_block[EXT2_NDIR_BLOCKS - 1 + level];
        uint64_t start = base, cover = span;
        CLEANUP_FREE unsigned char *blk = NULL;
        while (ptr != 0 && cover > 1) {
            if (ptr < x->e2->super->s_first_data_block ||
                ptr >= ext2fs_blocks_count(x->e2->super))
                return qimg_error(-EIO, "%s: inode %u: indirect block %u is outside the "
                                  "filesystem", x->base.type, ino, ptr);
            if (!blk)
                blk = qimg_xmalloc(x->e2->blocksize);
            errcode_t e = io_channel_read_blk64(x->e2->io, ptr, 1, blk);
            if (e)
                return ext_err(&x->io, e, "%s: inode %u: reading an indirect block",
                               x->base.type, ino);
            cover /= a;
            uint64_t idx = (lblk - start) / cover;
            ptr = qimg_le32(blk + idx * 4);
            start += idx * cover;
        }
        *end = ptr ? lblk + 1 : start + cover;
        return 0;
    }
    *end = ~0ull;
    return 0;
}

/* Block-mapped (ext2/ext3) files: one bmap per mapped block, at most 1024
 * a call; holes are skipped whole. */
static int map_indirect(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode, blk64_t lblk,
                        blk64_t max, blk64_t *pblk, blk64_t *len)
{
    blk64_t first = 0, n = 0;
    for (; n < QIMG_MIN(max, (blk64_t)1024); n++) {
        blk64_t p = 0;
        errcode_t e = ext2fs_bmap2(x->e2, ino, EXT_SMALL(inode), NULL, 0, lblk + n, NULL, &p);
        if (e)
            return ext_err(&x->io, e, "%s: inode %u: mapping block %llu", x->base.type, ino,
                           (unsigned long long)(lblk + n));
        if (n == 0)
            first = p;
        else if (!p || p != first + n)
            break;
        if (!first) {
            blk64_t end;
            int r = indirect_hole_end(x, ino, inode, lblk, &end);
            if (r < 0)
                return r;
            *pblk = 0;
            *len = QIMG_MIN(max, end > lblk ? end - lblk : 1);
            return 0;
        }
    }
    *pblk = first;
    *len = n;
    return check_run(x, ino, first, n);
}

int ext_map_run(struct ext_fs *x, ext2_ino_t ino, ext_inode *inode, blk64_t lblk,
                blk64_t max, blk64_t *pblk, blk64_t *len)
{
    if (max == 0)
        return qimg_error(-EINVAL, "ext: empty mapping request");
    int r = (inode->i_flags & EXT4_EXTENTS_FL)
                ? map_extents(x, ino, inode, lblk, max, pblk, len)
                : map_indirect(x, ino, inode, lblk, max, pblk, len);
    if (r == 0 && *len == 0)
        return qimg_error(-EIO, "%s: inode %u: empty mapping at block %llu", x->base.type, ino,
                          (unsigned long long)lblk);
    return r;
}

/* ----------------------------------------------------------------- probe */

static int ext_probe(struct qimg_fs_dev *dev)
{
    uint8_t sb[1024];
    if (dev->size < 2048)
        return 0;
    int r = qimg_fs_dev_read(dev, 1024, sb, sizeof sb);
    if (r < 0)
        return r;
    uint32_t log_bs = qimg_le32(sb + 24);
    return qimg_le16(sb + 56) == EXT2_SUPER_MAGIC && log_bs <= 6 && qimg_le32(sb + 4) != 0 &&
           qimg_le32(sb + 0) != 0;
}

/* ------------------------------------------------------------ open/close */

static const char *type_of(ext2_filsys fs)
{
    struct ext2_super_block *s = fs->super;
    if (s->s_feature_incompat & ~(EXT2_FEATURE_INCOMPAT_FILETYPE | EXT2_FEATURE_INCOMPAT_META_BG |
                                  EXT3_FEATURE_INCOMPAT_RECOVER |
                                  EXT3_FEATURE_INCOMPAT_JOURNAL_DEV))
        return "ext4";
    if (s->s_feature_ro_compat & ~(EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER |
                                   EXT2_FEATURE_RO_COMPAT_LARGE_FILE))
        return "ext4";
    return ext2fs_has_feature_journal(s) ? "ext3" : "ext2";
}

/* A writable open refuses, before anything is written, what it cannot
 * change safely. */
static int check_writable(struct ext_fs *x)
{
    struct ext2_super_block *s = x->e2->super;
    const char *t = x->base.type;
    if (!(s->s_state & EXT2_VALID_FS) || (s->s_state & EXT2_ERROR_FS))
        return qimg_error(-EUCLEAN, "%s: the filesystem is not clean (it was not unmounted "
                          "cleanly or has errors): run e2fsck on it first", t);
    if (ext2fs_has_feature_journal_needs_recovery(s))
        return qimg_error(-EUCLEAN, "%s: the filesystem's journal needs recovery: mount it "
                          "once or run e2fsck on it first", t);
    if (s->s_last_orphan || ext2fs_has_feature_orphan_present(s))
        return qimg_error(-EUCLEAN, "%s: the filesystem has orphan inodes: run e2fsck on it "
                          "first", t);
    static const struct { int (*has)(struct ext2_super_block *); const char *name; } bad[] = {
        { ext2fs_has_feature_encrypt, "encrypt" },
        { ext2fs_has_feature_casefold, "casefold" },
        { ext2fs_has_feature_verity, "verity" },
        { ext2fs_has_feature_inline_data, "inline_data" },
        { ext2fs_has_feature_mmp, "mmp" },
        { ext2fs_has_feature_quota, "quota" },
        { ext2fs_has_feature_project, "project" },
        { ext2fs_has_feature_journal_dev, "journal_dev" },
        { ext2fs_has_feature_bigalloc, "bigalloc" },
        { ext2fs_has_feature_ea_inode, "ea_inode" },
        { ext2fs_has_feature_compression, "compression" },
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(bad); i++)
        if (bad[i].has(s))
            return qimg_error(-ENOTSUP, "%s: the filesystem uses the feature %s, which qimg "
                              "does not write: open it read-only", t, bad[i].name);
    uint64_t bytes;
    if (!qimg_mul_ok(ext2fs_blocks_count(s), x->e2->blocksize, &bytes) || bytes > x->base.dev.size)
        return qimg_error(-EIO, "%s: the filesystem (%" PRIu64 " blocks) is larger than its "
                          "device (%" PRIu64 " bytes)", t, (uint64_t)ext2fs_blocks_count(s),
                          x->base.dev.size);
    return 0;
}

static int ext_open(struct qimg_fs_dev *dev, struct qimg_fs **out)
{
    int loaded = qimg_ext2fs_load();
    if (loaded < 0)
        return loaded;
    struct ext_fs *x = qimg_xcalloc(1, sizeof *x);
    x->base.drv = &qimg_fs_ext;
    x->base.dev = *dev;
    x->base.root = EXT2_ROOT_INO;
    x->base.type = "ext";
    x->io.dev = &x->base.dev;
    CLEANUP_FREE char *name = ext_io_name(&x->io);
    int flags = EXT2_FLAG_64BITS | (dev->writable ? EXT2_FLAG_RW : 0);
    errcode_t e = ext2fs_open2(name, NULL, flags, 0, 0, qimg_ext_io_manager, &x->e2);
    if (e) {
        int r;
        if (e == EXT2_ET_RO_UNSUPP_FEATURE)
            r = qimg_error(-ENOTSUP, "ext: the filesystem has features libext2fs cannot write: "
                           "open it read-only");
        else if (e == EXT2_ET_UNSUPP_FEATURE)
            r = qimg_error(-ENOTSUP, "ext: the filesystem has features libext2fs does not "
                           "support");
        else
            r = ext_err(&x->io, e, "ext: cannot open the filesystem");
        free(x);
        return r;
    }
    x->base.type = type_of(x->e2);
    if (dev->writable) {
        int r = check_writable(x);
        if (r == 0) {
            e = ext2fs_read_bitmaps(x->e2);
            if (e)
                r = ext_err(&x->io, e, "%s: reading the allocation bitmaps", x->base.type);
        }
        if (r < 0) {
            /* nothing was written: free without flushing */
            x->e2->flags &= ~EXT2_FLAG_DIRTY;
            ext2fs_free(x->e2);
            free(x);
            return r;
        }
        if (dev->now)
            x->e2->now = (time_t)dev->now;
    }
    *out = &x->base;
    return 0;
}

static int ext_close(struct qimg_fs *fs)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    int r = 0;
    ext_dirs_free(x);
    errcode_t e = ext2fs_close2(x->e2, 0);
    if (e) {
        r = ext_err(&x->io, e, "%s: writing the filesystem back", x->base.type);
        ext2fs_free(x->e2);
    }
    free(x);
    return r;
}

/* --------------------------------------------------------------- reading */

static int check_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > EXT2_NAME_LEN || strchr(name, '/') || !strcmp(name, ".") ||
        !strcmp(name, ".."))
        return qimg_error(-EINVAL, "ext: invalid file name '%s'", name);
    return 0;
}

static int ext_lookup(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino *out)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    int r = check_name(name);
    if (r < 0)
        return r;
    if ((r = ext_check_ino(x, dir)) < 0)
        return r;
    ext2_ino_t ino = 0;
    int found = ext_dirs_lookup(x, (ext2_ino_t)dir, name, &ino);
    if (found < 0 && (found = ext_dir_lookup(x, (ext2_ino_t)dir, name, &ino)) < 0)
        return found;
    if (found == 0)
        return -ENOENT;
    if ((r = ext_check_ino(x, ino)) < 0)
        return r;
    *out = ino;
    return 0;
}

static int ext_getattr(struct qimg_fs *fs, qimg_fs_ino ino, struct qimg_fs_attr *a)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    ext_inode in;
    int r = ext_read_inode(x, (ext2_ino_t)ino, &in);
    if (r < 0)
        return r;
    memset(a, 0, sizeof *a);
    a->mode = in.i_mode;
    a->uid = inode_uid(in);
    a->gid = inode_gid(in);
    if ((r = check_size(x, (ext2_ino_t)ino, &in, &a->size)) < 0)
        return r;
    a->nlink = in.i_links_count;
    if (LINUX_S_ISCHR(in.i_mode) || LINUX_S_ISBLK(in.i_mode)) {
        uint32_t old = in.i_block[0], dev = in.i_block[1];
        if (old)
            a->rdev = makedev((old >> 8) & 0xff, old & 0xff);
        else
            a->rdev = makedev((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    }
    get_time(in.i_atime, HAS_EXTRA(&in, i_atime_extra) ? &in.i_atime_extra : NULL, &a->atime,
             &a->atime_ns);
    get_time(in.i_mtime, HAS_EXTRA(&in, i_mtime_extra) ? &in.i_mtime_extra : NULL, &a->mtime,
             &a->mtime_ns);
    get_time(in.i_ctime, HAS_EXTRA(&in, i_ctime_extra) ? &in.i_ctime_extra : NULL, &a->ctime,
             &a->ctime_ns);
    if (HAS_EXTRA(&in, i_crtime_extra))
        get_time(in.i_crtime, &in.i_crtime_extra, &a->crtime, &a->crtime_ns);
    return 0;
}

struct walk_ctx {
    struct ext_fs *x;
    ext2_ino_t dir;
    ext_dir_fn fn;
    void *opaque;
    uint64_t calls, limit;
    int ret;
};

static int walk_entry(ext2_ino_t dir, int entry, struct ext2_dir_entry *de, int offset,
                      int blocksize, char *buf, void *priv)
{
    struct walk_ctx *c = priv;
    /* Every block gives at least one call (empty entries included): a
     * directory whose blocks are shared many times over ends here. */
    if (++c->calls > c->limit) {
        c->ret = qimg_error(-ELOOP, "%s: directory %u has more entries than its size "
                            "allows (its blocks are shared)", c->x->base.type, c->dir);
        return DIRENT_ABORT;
    }
    int len = ext2fs_dirent_name_len(de);
    if (de->inode == 0 || (len == 1 && de->name[0] == '.') ||
        (len == 2 && de->name[0] == '.' && de->name[1] == '.'))
        return 0;
    char name[EXT2_NAME_LEN + 1];
    memcpy(name, de->name, (size_t)len);
    name[len] = '\0';
    if (len == 0 || memchr(name, '/', (size_t)len) || memchr(name, '\0', (size_t)len)) {
        c->ret = qimg_error(-EIO, "%s: directory %u has an entry with an invalid name",
                            c->x->base.type, c->dir);
        return DIRENT_ABORT;
    }
    if ((c->ret = ext_check_ino(c->x, de->inode)) < 0)
        return DIRENT_ABORT;
    if (de->inode == c->dir) {
        c->ret = qimg_error(-ELOOP, "%s: directory %u contains itself (as '%s')",
                            c->x->base.type, c->dir, name);
        return DIRENT_ABORT;
    }
    c->ret = c->fn(c->opaque, name, (size_t)len, de->inode);
    return c->ret ? DIRENT_ABORT : 0;
}

int ext_dir_walk(struct ext_fs *x, ext2_ino_t dir, ext_dir_fn fn, void *opaque)
{
    ext_inode in;
    uint64_t size;
    int r = ext_read_inode(x, dir, &in);
    if (r < 0 || (r = check_size(x, dir, &in, &size)) < 0)
        return r;
    if (!LINUX_S_ISDIR(in.i_mode))
        return qimg_error(-ENOTDIR, "%s: inode %u is not a directory", x->base.type, dir);
    struct walk_ctx c = { x, dir, fn, opaque, 0, 0, 0 };
    c.limit = QIMG_MIN(size, x->base.dev.size) / 8 + 64;
    errcode_t e = ext2fs_dir_iterate2(x->e2, dir, DIRENT_FLAG_INCLUDE_EMPTY, NULL, walk_entry,
                                      &c);
    if (c.ret)
        return c.ret;
    if (e)
        return ext_err(&x->io, e, "%s: reading directory %u", x->base.type, dir);
    return 0;
}

struct lookup_ctx {
    const char *name;
    size_t len;
    ext2_ino_t ino;
};

static int lookup_entry(void *opaque, const char *name, size_t len, ext2_ino_t ino)
{
    struct lookup_ctx *c = opaque;
    if (len != c->len || memcmp(name, c->name, len) != 0)
        return 0;
    c->ino = ino;
    return 1;
}

int ext_dir_lookup(struct ext_fs *x, ext2_ino_t dir, const char *name, ext2_ino_t *ino)
{
    struct lookup_ctx c = { name, strlen(name), 0 };
    int r = ext_dir_walk(x, dir, lookup_entry, &c);
    if (r < 0)
        return r;
    if (r > 0)
        *ino = c.ino;
    return r > 0;
}

struct readdir_ctx {
    qimg_fs_dir_cb cb;
    void *opaque;
};

static int readdir_entry(void *opaque, const char *name, size_t len, ext2_ino_t ino)
{
    struct readdir_ctx *c = opaque;
    return c->cb(c->opaque, name, ino);
}

static int ext_readdir(struct qimg_fs *fs, qimg_fs_ino dir, qimg_fs_dir_cb cb, void *opaque)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    int r = ext_check_ino(x, dir);
    if (r < 0)
        return r;
    struct readdir_ctx c = { cb, opaque };
    return ext_dir_walk(x, (ext2_ino_t)dir, readdir_entry, &c);
}

/* Reads [off, off+len) of the device through the channel (so the cache
 * stays coherent): whole blocks straight into buf, partial ones bounced. */
static int read_bytes(struct ext_fs *x, uint64_t off, void *buf, size_t len)
{
    uint64_t bs = x->e2->blocksize;
    unsigned char *dst = buf;
    CLEANUP_FREE unsigned char *bounce = NULL;
    while (len > 0) {
        blk64_t blk = off / bs;
        size_t in_blk = (size_t)(off % bs);
        errcode_t e;
        size_t n;
        if (in_blk == 0 && len >= bs) {
            n = (size_t)QIMG_MIN((uint64_t)len / bs, (uint64_t)(16u << 20) / bs) * bs;
            e = io_channel_read_blk64(x->e2->io, blk, (int)(n / bs), dst);
        } else {
            if (!bounce)
                bounce = qimg_xmalloc(bs);
            n = QIMG_MIN(len, (size_t)bs - in_blk);
            e = io_channel_read_blk64(x->e2->io, blk, 1, bounce);
            if (!e)
                memcpy(dst, bounce + in_blk, n);
        }
        if (e)
            return ext_err(&x->io, e, "%s: reading block %llu", x->base.type,
                           (unsigned long long)blk);
        dst += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int read_inline(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, uint64_t off, void *buf,
                       size_t len, size_t *got)
{
    size_t size = 0;
    errcode_t e = ext2fs_inline_data_size(x->e2, ino, &size);
    if (e)
        return ext_err(&x->io, e, "%s: inode %u: reading its inline data", x->base.type, ino);
    if (size > x->e2->blocksize)
        return qimg_error(-EIO, "%s: inode %u: inline data too large", x->base.type, ino);
    CLEANUP_FREE unsigned char *tmp = qimg_xcalloc(1, x->e2->blocksize);
    e = ext2fs_inline_data_get(x->e2, ino, EXT_SMALL(in), tmp, &size);
    if (e)
        return ext_err(&x->io, e, "%s: inode %u: reading its inline data", x->base.type, ino);
    /* bytes between the inline data and i_size read as zeros */
    for (size_t i = 0; i < len; i++)
        ((unsigned char *)buf)[i] = off + i < size ? tmp[off + i] : 0;
    *got = len;
    return 0;
}

int ext_read_data(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, uint64_t off, void *buf,
                  size_t len, size_t *got)
{
    if (in->i_flags & EXT4_INLINE_DATA_FL)
        return read_inline(x, ino, in, off, buf, len, got);
    uint64_t bs = x->e2->blocksize, pos = off, end = off + len;
    unsigned char *dst = buf;
    while (pos < end) {
        blk64_t lblk = pos / bs, pblk, n;
        int r = ext_map_run(x, ino, in, lblk, (end - 1) / bs - lblk + 1, &pblk, &n);
        if (r < 0)
            return r;
        uint64_t run_end = QIMG_MIN(end, (lblk + n) * bs);
        size_t chunk = (size_t)(run_end - pos);
        if (pblk == 0)
            memset(dst, 0, chunk);
        else if ((r = read_bytes(x, pblk * bs + pos % bs, dst, chunk)) < 0)
            return r;
        dst += chunk;
        pos = run_end;
    }
    *got = len;
    return 0;
}

static int ext_read(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, void *buf, size_t len,
                    size_t *got)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    ext_inode in;
    uint64_t size;
    int r = ext_read_inode(x, (ext2_ino_t)ino, &in);
    if (r < 0 || (r = check_size(x, (ext2_ino_t)ino, &in, &size)) < 0)
        return r;
    if (LINUX_S_ISDIR(in.i_mode))
        return qimg_error(-EISDIR, "%s: inode %" PRIu64 " is a directory", x->base.type, ino);
    *got = 0;
    if (off >= size)
        return 0;
    len = (size_t)QIMG_MIN((uint64_t)len, size - off);
    return ext_read_data(x, (ext2_ino_t)ino, &in, off, buf, len, got);
}

static int ext_next_data(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, uint64_t *start,
                         uint64_t *end)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    ext_inode in;
    uint64_t size;
    int r = ext_read_inode(x, (ext2_ino_t)ino, &in);
    if (r < 0 || (r = check_size(x, (ext2_ino_t)ino, &in, &size)) < 0)
        return r;
    *start = *end = size;
    if (off >= size)
        return 0;
    if ((in.i_flags & EXT4_INLINE_DATA_FL) || ext2fs_is_fast_symlink(EXT_SMALL(&in))) {
        *start = off;
        return 0;
    }
    uint64_t bs = x->e2->blocksize;
    blk64_t last = (size - 1) / bs, lblk = off / bs;
    bool in_data = false;
    uint64_t owned = ext2fs_get_stat_i_blocks(x->e2, EXT_SMALL(&in)) * 512;
    /* every step moves at least one block forward and a hole of an extent
     * file is skipped in one step: bounded by the file's mapped runs */
    while (lblk <= last) {
        blk64_t pblk, n;
        if ((r = ext_map_run(x, (ext2_ino_t)ino, &in, lblk, last - lblk + 1, &pblk, &n)) < 0)
            return r;
        if (pblk && !in_data) {
            in_data = true;
            *start = QIMG_MAX(off, lblk * bs);
        } else if (!pblk && in_data) {
            break;
        }
        lblk += n;
        /* a run of data longer than the blocks the file owns: its mapping
         * shares blocks (a hostile tree); stop before walking all of it */
        if (in_data && lblk * bs - *start > owned + bs)
            return qimg_error(-EIO, "%s: inode %" PRIu64 " maps more data than the %" PRIu64
                              " bytes of blocks it owns", x->base.type, ino, owned);
    }
    if (in_data)
        *end = QIMG_MIN(size, lblk * bs);
    return 0;
}

static int ext_readlink(struct qimg_fs *fs, qimg_fs_ino ino, char *buf, size_t len)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    ext_inode in;
    uint64_t size;
    int r = ext_read_inode(x, (ext2_ino_t)ino, &in);
    if (r < 0 || (r = check_size(x, (ext2_ino_t)ino, &in, &size)) < 0)
        return r;
    if (!LINUX_S_ISLNK(in.i_mode))
        return qimg_error(-EINVAL, "%s: inode %" PRIu64 " is not a symbolic link", x->base.type,
                          ino);
    if (size == 0 || size > x->e2->blocksize)
        return qimg_error(-EIO, "%s: symbolic link %" PRIu64 " has a bad size %" PRIu64,
                          x->base.type, ino, size);
    if (size >= len)
        return qimg_error(-ENAMETOOLONG, "%s: the target of symbolic link %" PRIu64
                          " is too long", x->base.type, ino);
    size_t got = 0;
    if (!(in.i_flags & EXT4_INLINE_DATA_FL) && ext2fs_is_fast_symlink(EXT_SMALL(&in))) {
        if (size > sizeof in.i_block)
            return qimg_error(-EIO, "%s: fast symbolic link %" PRIu64 " is too long",
                              x->base.type, ino);
        memcpy(buf, in.i_block, (size_t)size);
    } else if ((r = ext_read_data(x, (ext2_ino_t)ino, &in, 0, buf, (size_t)size, &got)) < 0) {
        return r;
    }
    buf[size] = '\0';
    if (strlen(buf) != size)
        return qimg_error(-EIO, "%s: symbolic link %" PRIu64 " holds a NUL byte", x->base.type,
                          ino);
    return 0;
}

struct xattr_ctx {
    int (*cb)(void *opaque, const char *name, const void *value, size_t len);
    void *opaque;
    int ret;
};

static int xattr_entry(char *name, char *value, size_t value_len, void *data)
{
    struct xattr_ctx *c = data;
    c->ret = c->cb(c->opaque, name, value, value_len);
    return c->ret ? XATTR_ABORT : 0;
}

static int ext_listxattr(struct qimg_fs *fs, qimg_fs_ino ino,
                         int (*cb)(void *opaque, const char *name, const void *value, size_t len),
                         void *opaque)
{
    struct ext_fs *x = (struct ext_fs *)fs;
    int r = ext_check_ino(x, ino);
    if (r < 0)
        return r;
    if (!ext2fs_has_feature_xattr(x->e2->super))
        return 0;
    struct ext2_xattr_handle *h = NULL;
    errcode_t e = ext2fs_xattrs_open(x->e2, (ext2_ino_t)ino, &h);
    if (!e)
        e = ext2fs_xattrs_read(h);
    struct xattr_ctx c = { cb, opaque, 0 };
    if (!e)
        e = ext2fs_xattrs_iterate(h, xattr_entry, &c);
    if (h)
        ext2fs_xattrs_close(&h);
    if (c.ret)
        return c.ret;
    if (e)
        return ext_err(&x->io, e, "%s: reading the extended attributes of inode %" PRIu64,
                       x->base.type, ino);
    return 0;
}

const struct qimg_fs_driver qimg_fs_ext = {
    .name = "ext",
    .probe = ext_probe,
    .open = ext_open,
    .close = ext_close,
    .lookup = ext_lookup,
    .getattr = ext_getattr,
    .readdir = ext_readdir,
    .read = ext_read,
    .next_data = ext_next_data,
    .readlink = ext_readlink,
    .listxattr = ext_listxattr,
    .create = ext_create,
    .write = ext_write,
    .truncate = ext_truncate,
    .setattr = ext_setattr,
    .link = ext_link,
    .unlink = ext_unlink,
    .setxattr = ext_setxattr,
    .min_size = ext_min_size,
    .mkfs = ext_mkfs,
};

#endif /* HAVE_EXT2FS */
