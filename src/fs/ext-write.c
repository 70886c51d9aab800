/* ext2/3/4: creating nodes and writing them.  File data goes in large
 * runs: the blocks a write needs are allocated as contiguous extents with
 * ext2fs_fallocate, then the data is written straight to the device, many
 * blocks per request.  Blocks whose data is all zeros are not allocated
 * (they stay holes), so sparse files stay sparse. */
#ifdef HAVE_EXT2FS

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include <et/com_err.h>

#include "ext.h"
#include "internal.h"
#include "util.h"

static struct ext_fs *EXT(struct qimg_fs *fs) { return (struct ext_fs *)fs; }

static int need_writable(struct ext_fs *x)
{
    if (!x->base.dev.writable)
        return qimg_error(-EROFS, "%s: the filesystem is open read-only", x->base.type);
    return 0;
}

static int check_new_name(struct ext_fs *x, const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return qimg_error(-EINVAL, "%s: invalid file name '%s'", x->base.type, name);
    if (n > EXT2_NAME_LEN)
        return qimg_error(-ENAMETOOLONG, "%s: the name '%s' is longer than %d bytes",
                          x->base.type, name, EXT2_NAME_LEN);
    return 0;
}

static int file_type(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return EXT2_FT_REG_FILE;
    case S_IFDIR: return EXT2_FT_DIR;
    case S_IFLNK: return EXT2_FT_SYMLINK;
    case S_IFCHR: return EXT2_FT_CHRDEV;
    case S_IFBLK: return EXT2_FT_BLKDEV;
    case S_IFIFO: return EXT2_FT_FIFO;
    case S_IFSOCK: return EXT2_FT_SOCK;
    default: return -1;
    }
}

static int64_t now_of(struct ext_fs *x)
{
    return x->e2->now ? (int64_t)x->e2->now : (int64_t)time(NULL);
}

/* The directory dir, read and checked. */
static int read_dir(struct ext_fs *x, qimg_fs_ino dir, ext_inode *in)
{
    int r = ext_check_ino(x, dir);
    if (r < 0 || (r = ext_read_inode(x, (ext2_ino_t)dir, in)) < 0)
        return r;
    if (!LINUX_S_ISDIR(in->i_mode))
        return qimg_error(-ENOTDIR, "%s: inode %" PRIu64 " is not a directory", x->base.type,
                          dir);
    return 0;
}

static int name_exists(struct ext_fs *x, qimg_fs_ino dir, const char *name, ext2_ino_t *ino)
{
    ext2_ino_t found = 0;
    int known = ext_dirs_lookup(x, (ext2_ino_t)dir, name, &found);
    if (known < 0 && (known = ext_dir_lookup(x, (ext2_ino_t)dir, name, &found)) < 0)
        return known;
    if (known && ino)
        *ino = found;
    return known;
}

/* Adds the entry, growing the directory by a block when it is full. */
static int add_entry(struct ext_fs *x, qimg_fs_ino dir, const char *name, ext2_ino_t ino,
                     int ftype)
{
    int r = ext_dirs_add(x, (ext2_ino_t)dir, name, ino, ftype);
    if (r != 0)
        return r < 0 ? r : 0;
    errcode_t e = 0;
    for (int tries = 0; tries < 3; tries++) {
        e = ext2fs_link(x->e2, (ext2_ino_t)dir, name, ino, ftype);
        if (e != EXT2_ET_DIR_NO_SPACE)
            break;
        e = ext2fs_expand_dir(x->e2, (ext2_ino_t)dir);
        if (e)
            break;
    }
    if (e)
        return ext_err(&x->io, e, "%s: adding '%s' to directory %" PRIu64, x->base.type, name,
                       dir);
    ext_dirs_added(x, (ext2_ino_t)dir, name, ino);
    return 0;
}

static void set_owner(ext_inode *in, uint32_t uid, uint32_t gid)
{
    in->i_uid = (uint16_t)uid;
    in->osd2.linux2.l_i_uid_high = (uint16_t)(uid >> 16);
    in->i_gid = (uint16_t)gid;
    in->osd2.linux2.l_i_gid_high = (uint16_t)(gid >> 16);
}

/* An empty extent tree root in i_block. */
static void init_extent_root(ext_inode *in)
{
    unsigned char *b = (unsigned char *)in->i_block;
    memset(b, 0, sizeof in->i_block);
    qimg_put_le16(b + 0, EXT3_EXT_MAGIC);
    qimg_put_le16(b + 2, 0);                                     /* entries */
    qimg_put_le16(b + 4, (sizeof in->i_block - 12) / 12);        /* max: 4 */
    qimg_put_le16(b + 6, 0);                                     /* depth */
    in->i_flags |= EXT4_EXTENTS_FL;
}

/* A directory gained a subdirectory: one more link, or 1 ("many") past
 * EXT2_LINK_MAX with dir_nlink, as the kernel counts and e2fsck expects. */
static int inc_dir_links(struct ext_fs *x, ext2_ino_t dir)
{
    ext_inode in;
    int r = ext_read_inode(x, dir, &in);
    if (r < 0)
        return r;
    if (in.i_links_count != 1) {
        if (in.i_links_count + 1u > EXT2_LINK_MAX) {
            if (!ext2fs_has_feature_dir_nlink(x->e2->super)) {
                if (!ext2fs_has_feature_extents(x->e2->super))
                    return qimg_error(-EMLINK, "%s: directory %u has too many subdirectories",
                                      x->base.type, dir);
                ext2fs_set_feature_dir_nlink(x->e2->super);
                ext2fs_mark_super_dirty(x->e2);
            }
            in.i_links_count = 1;
        } else {
            in.i_links_count++;
        }
    }
    return ext_write_inode(x, dir, &in);
}

/* ------------------------------------------------------------ file data */

/* Whether the bytes of buf (the file range [off, off+len)) that fall in
 * logical block b are all zeros. */
static bool slice_is_zero(uint64_t bs, uint64_t off, const void *buf, size_t len, blk64_t b)
{
    uint64_t s = QIMG_MAX(off, b * bs), e = QIMG_MIN(off + len, (b + 1) * bs);
    return qimg_is_zero((const char *)buf + (s - off), (size_t)(e - s));
}

static int allocate(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, blk64_t start, blk64_t n)
{
    if (!(in->i_flags & EXT4_EXTENTS_FL)) {
        /* block-mapped files: ext2fs_fallocate would zero every block
         * before we write it; bmap allocates without zeroing */
        for (blk64_t b = start; b < start + n; b++) {
            blk64_t p = 0;
            errcode_t e = ext2fs_bmap2(x->e2, ino, EXT_SMALL(in), NULL, BMAP_ALLOC, b, NULL, &p);
            if (e)
                return ext_err(&x->io, e, "%s: inode %u: allocating block %llu", x->base.type,
                               ino, (unsigned long long)b);
        }
        return 0;
    }
    errcode_t e = ext2fs_fallocate(x->e2, EXT2_FALLOCATE_FORCE_INIT |
                                   EXT2_FALLOCATE_INIT_BEYOND_EOF, ino, EXT_SMALL(in), ~0ull,
                                   start, n);
    if (e)
        return ext_err(&x->io, e, "%s: inode %u: allocating %llu blocks", x->base.type, ino,
                       (unsigned long long)n);
    return 0;
}

struct runs {
    blk64_t (*r)[2];              /* start, length */
    size_t n, cap;
    blk64_t blocks;
};

static void add_run(struct runs *rs, blk64_t start, blk64_t n)
{
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 16;
        rs->r = qimg_xrealloc(rs->r, rs->cap * sizeof *rs->r);
    }
    rs->r[rs->n][0] = start;
    rs->r[rs->n][1] = n;
    rs->n++;
    rs->blocks += n;
}

/* The blocks of [first, last] that are holes now and get non-zero data. */
static int runs_to_allocate(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, uint64_t off,
                            const void *buf, size_t len, struct runs *rs)
{
    uint64_t bs = x->e2->blocksize;
    blk64_t first = off / bs, last = (off + len - 1) / bs, lblk = first;
    while (lblk <= last) {
        blk64_t pblk, n;
        int r = ext_map_run(x, ino, in, lblk, last - lblk + 1, &pblk, &n);
        if (r < 0)
            return r;
        if (pblk == 0) {
            blk64_t run = 0;
            for (blk64_t b = lblk; b < lblk + n; b++) {
                if (!slice_is_zero(bs, off, buf, len, b)) {
                    run++;
                    continue;
                }
                if (run)
                    add_run(rs, b - run, run);
                run = 0;
            }
            if (run)
                add_run(rs, lblk + n - run, run);
        }
        lblk += n;
    }
    return 0;
}

/* Allocates what the write needs, after checking that it fits: a failed
 * allocation half way would leave counted blocks outside the file. */
static int allocate_for_write(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, uint64_t off,
                              const void *buf, size_t len)
{
    struct runs rs = { NULL, 0, 0, 0 };
    int r = runs_to_allocate(x, ino, in, off, buf, len, &rs);
    /* room for the mapping blocks too (extent tree or indirect blocks) */
    blk64_t need = rs.blocks + rs.blocks / 256 + 2 * rs.n + 4;
    if (r == 0 && rs.blocks && need > ext2fs_free_blocks_count(x->e2->super))
        r = qimg_error(-ENOSPC, "%s: no space left for %llu more blocks (%llu free)",
                       x->base.type, (unsigned long long)rs.blocks,
                       (unsigned long long)ext2fs_free_blocks_count(x->e2->super));
    for (size_t i = 0; r == 0 && i < rs.n; i++)
        r = allocate(x, ino, in, rs.r[i][0], rs.r[i][1]);
    free(rs.r);
    return r;
}

#define SMALL_RUN_BLOCKS 32

/* Writes the data of one mapped run [pos, end) at device block pblk (the
 * block of pos).  Whole blocks go straight from buf; a partial block is
 * merged with its old content (zeros when it was a hole before). */
static int write_run(struct ext_fs *x, blk64_t pblk, uint64_t pos, uint64_t end,
                     const unsigned char *src, const unsigned char *head_old,
                     const unsigned char *tail_old, uint64_t head_blk, uint64_t tail_blk)
{
    uint64_t bs = x->e2->blocksize;
    CLEANUP_FREE unsigned char *bounce = NULL;
    while (pos < end) {
        uint64_t lblk = pos / bs, in_blk = pos % bs;
        errcode_t e;
        size_t n;
        if (in_blk == 0 && end - pos >= bs) {
            n = (size_t)QIMG_MIN((end - pos) / bs, (uint64_t)(16u << 20) / bs) * bs;
            if (n / bs < SMALL_RUN_BLOCKS) {
                /* small files go through the block cache, which writes
                 * neighbouring blocks back together */
                e = 0;
                for (size_t i = 0; !e && i < n / bs; i++)
                    e = io_channel_write_blk64(x->e2->io, pblk + i, 1, src + i * bs);
            } else {
                e = io_channel_write_blk64(x->e2->io, pblk, (int)(n / bs), src);
            }
        } else {
            if (!bounce)
                bounce = qimg_xmalloc(bs);
            const unsigned char *old = lblk == head_blk ? head_old
                                       : lblk == tail_blk ? tail_old : NULL;
            if (old)
                memcpy(bounce, old, bs);
            else
                memset(bounce, 0, bs);
            n = (size_t)QIMG_MIN(end - pos, bs - in_blk);
            memcpy(bounce + in_blk, src, n);
            e = io_channel_write_blk64(x->e2->io, pblk, 1, bounce);
        }
        if (e)
            return ext_err(&x->io, e, "%s: writing block %llu", x->base.type,
                           (unsigned long long)pblk);
        pblk += (in_blk + n) / bs;
        src += n;
        pos += n;
    }
    return 0;
}

/* The old content of a block partly covered by the write (NULL when it is
 * a hole: the rest of the block must then read as zeros). */
static int old_block(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, blk64_t lblk,
                     unsigned char **out)
{
    blk64_t pblk, n;
    *out = NULL;
    int r = ext_map_run(x, ino, in, lblk, 1, &pblk, &n);
    if (r < 0 || pblk == 0)
        return r;
    *out = qimg_xmalloc(x->e2->blocksize);
    errcode_t e = io_channel_read_blk64(x->e2->io, pblk, 1, *out);
    if (e)
        return ext_err(&x->io, e, "%s: reading block %llu", x->base.type,
                       (unsigned long long)pblk);
    return 0;
}

static int write_data(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, uint64_t off,
                      const void *buf, size_t len)
{
    uint64_t bs = x->e2->blocksize, end = off + len;
    blk64_t first = off / bs, last = (end - 1) / bs;
    CLEANUP_FREE unsigned char *head_old = NULL;
    CLEANUP_FREE unsigned char *tail_old = NULL;
    int r = 0;
    if (off % bs || end < (first + 1) * bs)
        r = old_block(x, ino, in, first, &head_old);
    if (r == 0 && last != first && end % bs)
        r = old_block(x, ino, in, last, &tail_old);
    if (r < 0 || (r = allocate_for_write(x, ino, in, off, buf, len)) < 0)
        return r;
    uint64_t pos = off;
    while (pos < end) {
        blk64_t lblk = pos / bs, pblk, n;
        if ((r = ext_map_run(x, ino, in, lblk, last - lblk + 1, &pblk, &n)) < 0)
            return r;
        uint64_t run_end = QIMG_MIN(end, (lblk + n) * bs);
        if (pblk && (r = write_run(x, pblk, pos, run_end, (const unsigned char *)buf + (pos - off),
                                   head_old, tail_old, first, last)) < 0)
            return r;
        pos = run_end;
    }
    return 0;
}

static int set_size(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, uint64_t size)
{
    errcode_t e = ext2fs_inode_size_set(x->e2, EXT_SMALL(in), size);
    if (e)
        return ext_err(&x->io, e, "%s: inode %u: setting the size", x->base.type, ino);
    return 0;
}

/* The inode of a regular file about to be written or truncated. */
static int regular_file_to_write(struct ext_fs *x, qimg_fs_ino ino, ext_inode *in)
{
    int r = need_writable(x);
    if (r < 0 || (r = ext_read_inode(x, (ext2_ino_t)ino, in)) < 0)
        return r;
    if (!LINUX_S_ISREG(in->i_mode))
        return qimg_error(-EINVAL, "%s: inode %" PRIu64 " is not a regular file", x->base.type,
                          ino);
    if (in->i_flags & EXT4_INLINE_DATA_FL)
        return qimg_error(-ENOTSUP, "%s: inode %" PRIu64 " has inline data", x->base.type, ino);
    return 0;
}

int ext_write(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, const void *buf, size_t len)
{
    struct ext_fs *x = EXT(fs);
    ext_inode in;
    int r = regular_file_to_write(x, ino, &in);
    if (r < 0)
        return r;
    uint64_t end;
    if (!qimg_add_ok(off, len, &end) || end > ext_max_file_size(x->e2))
        return qimg_error(-EFBIG, "%s: a write at %" PRIu64 " would pass the largest file size",
                          x->base.type, off);
    if (len == 0)
        return 0;
    if ((r = write_data(x, (ext2_ino_t)ino, &in, off, buf, len)) < 0)
        return r;
    if (end > EXT2_I_SIZE(&in) && (r = set_size(x, (ext2_ino_t)ino, &in, end)) < 0)
        return r;
    return ext_write_inode(x, (ext2_ino_t)ino, &in);
}

static int punch(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, blk64_t start)
{
    if (!ext2fs_inode_has_valid_blocks2(x->e2, EXT_SMALL(in)))
        return 0;
    errcode_t e = ext2fs_punch(x->e2, ino, EXT_SMALL(in), NULL, start, ~0ull);
    if (e)
        return ext_err(&x->io, e, "%s: inode %u: freeing blocks", x->base.type, ino);
    return 0;
}

int ext_truncate(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size)
{
    struct ext_fs *x = EXT(fs);
    ext_inode in;
    int r = regular_file_to_write(x, ino, &in);
    if (r < 0)
        return r;
    if (size > ext_max_file_size(x->e2))
        return qimg_error(-EFBIG, "%s: %" PRIu64 " bytes is more than the largest file size",
                          x->base.type, size);
    uint64_t bs = x->e2->blocksize;
    if (size < EXT2_I_SIZE(&in)) {
        if (size % bs) {
            /* the tail of the last block must read as zeros if the file grows again */
            blk64_t pblk, n;
            if ((r = ext_map_run(x, (ext2_ino_t)ino, &in, size / bs, 1, &pblk, &n)) < 0)
                return r;
            if (pblk) {
                CLEANUP_FREE unsigned char *b = qimg_xmalloc(bs);
                errcode_t e = io_channel_read_blk64(x->e2->io, pblk, 1, b);
                if (!e) {
                    memset(b + size % bs, 0, bs - size % bs);
                    e = io_channel_write_blk64(x->e2->io, pblk, 1, b);
                }
                if (e)
                    return ext_err(&x->io, e, "%s: inode %" PRIu64 ": truncating",
                                   x->base.type, ino);
            }
        }
        if ((r = punch(x, (ext2_ino_t)ino, &in, qimg_div_round_up(size, bs))) < 0)
            return r;
    }
    if ((r = set_size(x, (ext2_ino_t)ino, &in, size)) < 0)
        return r;
    return ext_write_inode(x, (ext2_ino_t)ino, &in);
}

/* ---------------------------------------------------------------- create */

static void set_rdev(ext_inode *in, uint64_t rdev)
{
    uint32_t ma = major(rdev), mi = minor(rdev);
    if (ma < 256 && mi < 256) {
        in->i_block[0] = ma << 8 | mi;
        in->i_block[1] = 0;
    } else {
        in->i_block[0] = 0;
        in->i_block[1] = (mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
    }
}

/* A directory's first block, with "." and "..". */
static int make_dir_block(struct ext_fs *x, ext2_ino_t ino, ext2_ino_t parent, ext_inode *in,
                          blk64_t *blk)
{
    ext2_filsys fs = x->e2;
    char *block = NULL;
    blk64_t goal = ext2fs_find_inode_goal(fs, ino, EXT_SMALL(in), 0);
    errcode_t e = ext2fs_new_block2(fs, goal, NULL, blk);
    if (!e) {
        ext2fs_block_alloc_stats2(fs, *blk, +1);
        e = ext2fs_new_dir_block(fs, ino, parent, &block);
        if (!e)
            e = ext2fs_write_dir_block4(fs, *blk, block, 0, ino);
        ext2fs_free_mem(&block);
        if (e) {
            ext2fs_block_alloc_stats2(fs, *blk, -1);
            *blk = 0;
        }
    }
    if (e)
        return ext_err(&x->io, e, "%s: making a directory block", x->base.type);
    return 0;
}

static int map_dir_block(struct ext_fs *x, ext2_ino_t ino, ext_inode *in, blk64_t blk)
{
    if (!(in->i_flags & EXT4_EXTENTS_FL)) {
        in->i_block[0] = (uint32_t)blk;
        return ext_write_inode(x, ino, in);
    }
    ext2_extent_handle_t h;
    errcode_t e = ext2fs_extent_open2(x->e2, ino, EXT_SMALL(in), &h);
    if (!e) {
        e = ext2fs_extent_set_bmap(h, 0, blk, 0);
        ext2fs_extent_free(h);
    }
    if (e)
        return ext_err(&x->io, e, "%s: mapping the block of directory %u", x->base.type, ino);
    return ext_write_inode(x, ino, in);
}

static void undo_create(struct ext_fs *x, ext2_ino_t ino, bool is_dir, blk64_t blk)
{
    if (blk)
        ext2fs_block_alloc_stats2(x->e2, blk, -1);
    ext_inode in;
    if (ext_read_inode(x, ino, &in) == 0) {
        in.i_links_count = 0;
        in.i_dtime = (uint32_t)now_of(x);
        ext_write_inode(x, ino, &in);
    }
    ext2fs_inode_alloc_stats2(x->e2, ino, -1, is_dir);
}

int ext_create(struct qimg_fs *fs, qimg_fs_ino dir, const char *name,
               const struct qimg_fs_attr *attr, const char *symlink_target, qimg_fs_ino *out)
{
    struct ext_fs *x = EXT(fs);
    ext2_filsys e2 = x->e2;
    ext_inode din;
    int r = need_writable(x);
    if (r < 0 || (r = check_new_name(x, name)) < 0 || (r = read_dir(x, dir, &din)) < 0)
        return r;
    int ftype = file_type(attr->mode);
    if (ftype < 0)
        return qimg_error(-ENOTSUP, "%s: cannot create '%s': unknown file type 0%o",
                          x->base.type, name, attr->mode & S_IFMT);
    size_t tlen = 0;
    if (ftype == EXT2_FT_SYMLINK) {
        if (!symlink_target || !*symlink_target)
            return qimg_error(-EINVAL, "%s: symbolic link '%s' without a target", x->base.type,
                              name);
        tlen = strlen(symlink_target);
        if (tlen >= e2->blocksize)
            return qimg_error(-ENAMETOOLONG, "%s: the target of symbolic link '%s' is longer "
                              "than %u bytes", x->base.type, name, e2->blocksize - 1);
    }
    if ((r = name_exists(x, dir, name, NULL)) != 0)
        return r < 0 ? r : qimg_error(-EEXIST, "%s: '%s' already exists", x->base.type, name);

    bool is_dir = ftype == EXT2_FT_DIR;
    ext2_ino_t ino;
    errcode_t e = ext2fs_new_inode(e2, (ext2_ino_t)dir, (int)attr->mode, NULL, &ino);
    if (e)
        return ext_err(&x->io, e, "%s: allocating an inode for '%s'", x->base.type, name);
    ext2fs_inode_alloc_stats2(e2, ino, +1, is_dir);

    ext_inode in;
    memset(&in, 0, sizeof in);
    in.i_mode = (uint16_t)((attr->mode & S_IFMT) | (attr->mode & 07777));
    set_owner(&in, attr->uid, attr->gid);
    in.i_links_count = is_dir ? 2 : 1;
    if (EXT2_INODE_SIZE(e2->super) > EXT2_GOOD_OLD_INODE_SIZE)
        in.i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
    ext_set_times(e2, &in, attr);
    bool fast_link = ftype == EXT2_FT_SYMLINK && tlen < sizeof in.i_block;
    if (ext2fs_has_feature_extents(e2->super) &&
        (ftype == EXT2_FT_REG_FILE || is_dir || (ftype == EXT2_FT_SYMLINK && !fast_link)))
        init_extent_root(&in);
    if (ftype == EXT2_FT_CHRDEV || ftype == EXT2_FT_BLKDEV)
        set_rdev(&in, attr->rdev);
    if (fast_link) {
        memcpy(in.i_block, symlink_target, tlen);
        in.i_size = (uint32_t)tlen;
    }
    if ((r = ext_write_new_inode(x, ino, &in)) < 0) {
        ext2fs_inode_alloc_stats2(e2, ino, -1, is_dir);
        return r;
    }

    blk64_t blk = 0;
    if (is_dir) {
        r = make_dir_block(x, ino, (ext2_ino_t)dir, &in, &blk);
        if (r == 0) {
            in.i_size = e2->blocksize;
            ext2fs_iblk_set(e2, EXT_SMALL(&in), 1);
            r = map_dir_block(x, ino, &in, blk);
            if (r == 0)
                ext_dirs_track_new(x, ino, blk);
        }
    }
    if (r == 0)
        r = add_entry(x, dir, name, ino, ftype);
    if (r < 0) {
        undo_create(x, ino, is_dir, blk);
        return r;
    }
    if (is_dir && (r = inc_dir_links(x, (ext2_ino_t)dir)) < 0)
        return r;
    if (ftype == EXT2_FT_SYMLINK && !fast_link) {
        if ((r = ext_read_inode(x, ino, &in)) < 0 ||
            (r = write_data(x, ino, &in, 0, symlink_target, tlen)) < 0 ||
            (r = set_size(x, ino, &in, tlen)) < 0 || (r = ext_write_inode(x, ino, &in)) < 0)
            return r;
    }
    *out = ino;
    return 0;
}

/* ---------------------------------------------------------------- others */

int ext_setattr(struct qimg_fs *fs, qimg_fs_ino ino, const struct qimg_fs_attr *attr)
{
    struct ext_fs *x = EXT(fs);
    ext_inode in;
    int r = need_writable(x);
    if (r < 0 || (r = ext_read_inode(x, (ext2_ino_t)ino, &in)) < 0)
        return r;
    in.i_mode = (uint16_t)((in.i_mode & S_IFMT) | (attr->mode & 07777));
    set_owner(&in, attr->uid, attr->gid);
    ext_set_times(x->e2, &in, attr);
    return ext_write_inode(x, (ext2_ino_t)ino, &in);
}

int ext_link(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino ino)
{
    struct ext_fs *x = EXT(fs);
    ext_inode din, in;
    int r = need_writable(x);
    if (r < 0 || (r = check_new_name(x, name)) < 0 || (r = read_dir(x, dir, &din)) < 0 ||
        (r = ext_read_inode(x, (ext2_ino_t)ino, &in)) < 0)
        return r;
    if (LINUX_S_ISDIR(in.i_mode))
        return qimg_error(-EPERM, "%s: cannot make a hard link to directory %" PRIu64,
                          x->base.type, ino);
    if (in.i_links_count == 0 || in.i_links_count >= EXT2_LINK_MAX)
        return qimg_error(-EMLINK, "%s: inode %" PRIu64 " cannot take another link",
                          x->base.type, ino);
    if ((r = name_exists(x, dir, name, NULL)) != 0)
        return r < 0 ? r : qimg_error(-EEXIST, "%s: '%s' already exists", x->base.type, name);
    int ftype = file_type(in.i_mode);
    if ((r = add_entry(x, dir, name, (ext2_ino_t)ino, ftype < 0 ? EXT2_FT_UNKNOWN : ftype)) < 0)
        return r;
    in.i_links_count++;
    return ext_write_inode(x, (ext2_ino_t)ino, &in);
}

static int free_xattr_block(struct ext_fs *x, ext2_ino_t ino, ext_inode *in)
{
    blk64_t blk = ext2fs_file_acl_block(x->e2, EXT_SMALL(in));
    if (!blk)
        return 0;
    if (blk < x->e2->super->s_first_data_block || blk >= ext2fs_blocks_count(x->e2->super))
        return qimg_error(-EIO, "%s: inode %u: bad extended attribute block", x->base.type, ino);
    __u32 count = 0;
    errcode_t e = ext2fs_adjust_ea_refcount3(x->e2, blk, NULL, -1, &count, ino);
    if (e)
        return ext_err(&x->io, e, "%s: inode %u: releasing its extended attributes",
                       x->base.type, ino);
    if (count == 0)
        ext2fs_block_alloc_stats2(x->e2, blk, -1);
    ext2fs_file_acl_block_set(x->e2, EXT_SMALL(in), 0);
    return 0;
}

int ext_unlink(struct qimg_fs *fs, qimg_fs_ino dir, const char *name)
{
    struct ext_fs *x = EXT(fs);
    ext_inode din, in;
    ext2_ino_t ino = 0;
    int r = need_writable(x);
    if (r < 0 || (r = check_new_name(x, name)) < 0 || (r = read_dir(x, dir, &din)) < 0)
        return r;
    if ((r = name_exists(x, dir, name, &ino)) <= 0)
        return r < 0 ? r : qimg_error(-ENOENT, "%s: '%s' does not exist", x->base.type, name);
    if ((r = ext_read_inode(x, ino, &in)) < 0)
        return r;
    if (LINUX_S_ISDIR(in.i_mode))
        return qimg_error(-EISDIR, "%s: '%s' is a directory", x->base.type, name);
    errcode_t e = ext2fs_unlink(x->e2, (ext2_ino_t)dir, name, ino, 0);
    if (e)
        return ext_err(&x->io, e, "%s: removing '%s'", x->base.type, name);
    if ((r = ext_dirs_removed(x, (ext2_ino_t)dir, name)) < 0)
        return r;
    if (in.i_links_count > 1) {
        in.i_links_count--;
        return ext_write_inode(x, ino, &in);
    }
    if ((r = punch(x, ino, &in, 0)) < 0 || (r = free_xattr_block(x, ino, &in)) < 0)
        return r;
    in.i_links_count = 0;
    in.i_dtime = (uint32_t)now_of(x);
    if ((r = ext_write_inode(x, ino, &in)) < 0)
        return r;
    ext2fs_inode_alloc_stats2(x->e2, ino, -1, 0);
    return 0;
}

int ext_setxattr(struct qimg_fs *fs, qimg_fs_ino ino, const char *name, const void *value,
                 size_t len)
{
    struct ext_fs *x = EXT(fs);
    int r = need_writable(x);
    if (r < 0 || (r = ext_check_ino(x, ino)) < 0)
        return r;
    if (!ext2fs_has_feature_xattr(x->e2->super))
        return qimg_error(-ENOTSUP, "%s: the filesystem has no extended attributes",
                          x->base.type);
    struct ext2_xattr_handle *h = NULL;
    errcode_t e = ext2fs_xattrs_open(x->e2, (ext2_ino_t)ino, &h);
    if (!e)
        e = ext2fs_xattrs_read(h);
    if (!e)
        e = ext2fs_xattr_set(h, name, value, len);
    if (h) {
        errcode_t e2 = ext2fs_xattrs_close(&h);
        if (!e)
            e = e2;
    }
    if (e == EXT2_ET_EA_BAD_NAME_LEN || e == EXT2_ET_EA_BAD_VALUE_SIZE ||
        e == EXT2_ET_EA_NO_SPACE || e == EXT2_ET_EA_INODE_CORRUPTED)
        return qimg_error(e == EXT2_ET_EA_NO_SPACE ? -ENOSPC : -ENOTSUP,
                          "%s: cannot set extended attribute '%s' (%zu bytes): %s",
                          x->base.type, name, len, ext_error_message(e));
    if (e)
        return ext_err(&x->io, e, "%s: setting extended attribute '%s'", x->base.type, name);
    return 0;
}

#endif /* HAVE_EXT2FS */
