/* ext2/3/4: making a filesystem with libext2fs (no mke2fs), with
 * mke2fs's default features for each type (/etc/mke2fs.conf of e2fsprogs
 * 1.47), and the smallest size that holds a tree.
 *
 * Inode tables and the journal are zeroed through the I/O manager's zeroout
 * (qimg_write_zeroes: no data written on a fresh image), so the result is
 * right even on a device that held something before. */
#ifdef HAVE_EXT2FS

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/random.h>

#include <et/com_err.h>

#include "ext.h"
#include "internal.h"
#include "util.h"

/* mke2fs's size classes (floppy < 3 MiB, small < 512 MiB, default, big,
 * huge) with two changes: 4 KiB blocks from 32 MiB on (mke2fs takes 1 KiB
 * below 512 MiB), so that the size min_size derives from the tree (counted
 * in 4 KiB blocks) is what the files take, extended attributes up to 4 KiB
 * fit, and there are fewer blocks to map; and 1 KiB blocks when the inodes
 * asked for need more than one inode per 4 KiB block (a group's inode
 * bitmap is one block, so a group cannot have more inodes than blocks). */
static void size_class(uint64_t size, uint64_t inodes, unsigned *bs, unsigned *ratio)
{
    if (size < (3ull << 20)) {
        *bs = 1024;
        *ratio = 8192;
        return;
    }
    if (size < (512ull << 20)) {
        *bs = size < (32ull << 20) ? 1024 : 4096;
        *ratio = 4096;
    } else {
        *bs = 4096;
        *ratio = size >= (16ull << 40) ? 65536 : size >= (4ull << 40) ? 32768 : 16384;
    }
    if (*bs == 4096 && inodes > size / 4096 / 10 * 9)
        *bs = 1024;
}

static int type_level(const char *type)
{
    if (!strcmp(type, "ext2"))
        return 2;
    if (!strcmp(type, "ext3"))
        return 3;
    if (!strcmp(type, "ext4"))
        return 4;
    return 0;
}

static void random_or_derived(const struct qimg_mkfs_params *p, const char *purpose, void *buf,
                              size_t len)
{
    if (p->reproducible) {
        qimg_fs_derive_bytes(p->seed, purpose, buf, len);
        return;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = getrandom((char *)buf + done, len - done, 0);
        if (n <= 0) {
            /* no entropy source: still unique enough with the time mixed in */
            qimg_fs_derive_bytes((uint64_t)time(NULL) ^ (uint64_t)getpid(), purpose, buf, len);
            return;
        }
        done += (size_t)n;
    }
}

static void make_uuid(const struct qimg_mkfs_params *p, const char *purpose, uint8_t *u)
{
    random_or_derived(p, purpose, u, 16);
    u[6] = (u[6] & 0x0f) | 0x40;   /* version 4 */
    u[8] = (u[8] & 0x3f) | 0x80;   /* RFC 4122 variant */
}

static void set_features(struct ext2_super_block *s, int level)
{
    ext2fs_set_feature_sparse_super(s);
    ext2fs_set_feature_large_file(s);
    ext2fs_set_feature_filetype(s);
    ext2fs_set_feature_resize_inode(s);
    ext2fs_set_feature_dir_index(s);
    ext2fs_set_feature_xattr(s);
    if (level >= 3)
        ext2fs_set_feature_journal(s);
    if (level >= 4) {
        ext2fs_set_feature_extents(s);
        ext2fs_set_feature_huge_file(s);
        ext2fs_set_feature_flex_bg(s);
        ext2fs_set_feature_metadata_csum(s);
        ext2fs_set_feature_64bit(s);
        ext2fs_set_feature_dir_nlink(s);
        ext2fs_set_feature_extra_isize(s);
        s->s_log_groups_per_flex = 4;
        s->s_desc_size = EXT2_MIN_DESC_SIZE_64BIT;
        s->s_min_extra_isize = s->s_want_extra_isize =
            sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
    }
}

static int fail(struct ext_io *io, errcode_t e, const char *what)
{
    return ext_err(io, e, "mkfs: %s", what);
}

/* Zeroes every inode table (without writing data on a fresh image) and
 * flags them zeroed. */
static errcode_t zero_inode_tables(ext2_filsys fs)
{
    for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
        errcode_t e = ext2fs_zero_blocks2(fs, ext2fs_inode_table_loc(fs, g),
                                          (int)fs->inode_blocks_per_group, NULL, NULL);
        if (e)
            return e;
        ext2fs_bg_flags_set(fs, g, EXT2_BG_INODE_ZEROED);
        ext2fs_group_desc_csum_set(fs, g);
    }
    return 0;
}

static errcode_t make_lost_found(ext2_filsys fs)
{
    fs->umask = 077;
    errcode_t e = ext2fs_mkdir(fs, EXT2_ROOT_INO, 0, "lost+found");
    fs->umask = 022;
    if (e)
        return e;
    ext2_ino_t ino;
    e = ext2fs_lookup(fs, EXT2_ROOT_INO, "lost+found", 10, NULL, &ino);
    /* e2fsck wants room for orphans without growing it: 16 KiB, as mke2fs */
    for (int i = 0; !e && i < EXT2_NDIR_BLOCKS; i++) {
        struct ext2_inode in;
        e = ext2fs_read_inode(fs, ino, &in);
        if (e || EXT2_I_SIZE(&in) >= 16384)
            break;
        e = ext2fs_expand_dir(fs, ino);
    }
    return e;
}

static errcode_t reserve_inodes(ext2_filsys fs)
{
    ext2fs_inode_alloc_stats2(fs, EXT2_BAD_INO, +1, 0);
    for (ext2_ino_t i = EXT2_ROOT_INO + 1; i < EXT2_FIRST_INODE(fs->super); i++)
        ext2fs_inode_alloc_stats2(fs, i, +1, 0);
    ext2fs_mark_ib_dirty(fs);
    return ext2fs_update_bb_inode(fs, NULL);
}

static errcode_t add_journal(ext2_filsys fs)
{
    struct ext2fs_journal_params jp;
    errcode_t e = ext2fs_get_journal_params(&jp, fs);
    if (e)
        return e;
    return ext2fs_add_journal_inode3(fs, &jp, ~0ull, EXT2_MKJOURNAL_NO_MNT_CHECK);
}

static errcode_t lay_out(ext2_filsys fs, int level)
{
    errcode_t e = ext2fs_allocate_tables(fs);
    if (!e)
        e = zero_inode_tables(fs);
    if (!e)
        e = ext2fs_mkdir(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, 0);
    if (!e)
        e = make_lost_found(fs);
    if (!e)
        e = reserve_inodes(fs);
    if (!e && ext2fs_has_feature_resize_inode(fs->super))
        e = ext2fs_create_resize_inode(fs);
    if (!e && level >= 3)
        e = add_journal(fs);
    return e;
}

int ext_mkfs(struct qimg_fs_dev *dev, const struct qimg_mkfs_params *p)
{
    int level = type_level(p->type);
    if (!level)
        return qimg_error(-EINVAL, "mkfs: unknown ext filesystem type '%s'", p->type);
    int loaded = qimg_ext2fs_load();
    if (loaded < 0)
        return loaded;
    if (p->label && strlen(p->label) > EXT2_LABEL_LEN)
        return qimg_error(-EINVAL, "mkfs: the label '%s' is longer than %d bytes", p->label,
                          EXT2_LABEL_LEN);
    unsigned bs, ratio;
    size_class(dev->size, p->inodes + EXT2_GOOD_OLD_FIRST_INO, &bs, &ratio);
    uint64_t blocks = dev->size / bs;
    if (blocks < 64)
        return qimg_error(-ENOSPC, "mkfs: %" PRIu64 " bytes is too small for an %s filesystem",
                          dev->size, p->type);
    if (blocks > (level >= 4 ? (1ull << 48) - 1 : 0xffffffffull))
        return qimg_error(-EFBIG, "mkfs: %" PRIu64 " bytes is too large for an %s filesystem",
                          dev->size, p->type);

    struct ext2_super_block param;
    memset(&param, 0, sizeof param);
    ext2fs_blocks_count_set(&param, blocks);
    ext2fs_r_blocks_count_set(&param, blocks * 5 / 100);
    param.s_log_block_size = bs == 1024 ? 0 : 2;
    param.s_rev_level = EXT2_DYNAMIC_REV;
    param.s_inode_size = 256;
    uint64_t inodes = QIMG_MAX(dev->size / ratio, p->inodes + EXT2_GOOD_OLD_FIRST_INO);
    param.s_inodes_count = (uint32_t)QIMG_MIN(inodes, 0xffffffffull);
    set_features(&param, level);

    struct ext_io io = { .dev = dev };
    CLEANUP_FREE char *name = ext_io_name(&io);
    ext2_filsys fs = NULL;
    errcode_t e = ext2fs_initialize(name, EXT2_FLAG_64BITS, &param, qimg_ext_io_manager, &fs);
    if (e)
        return fail(&io, e, "laying out the filesystem");
    struct ext2_super_block *s = fs->super;
    if (s->s_inodes_count < p->inodes + EXT2_GOOD_OLD_FIRST_INO) {
        ext2fs_free(fs);
        return qimg_error(-ENOSPC, "mkfs: %" PRIu64 " bytes cannot hold %" PRIu64 " inodes",
                          dev->size, p->inodes);
    }
    int64_t now = p->reproducible ? p->now : (int64_t)time(NULL);
    fs->now = (time_t)now;
    s->s_mkfs_time = s->s_lastcheck = s->s_wtime = (uint32_t)now;
    s->s_max_mnt_count = (uint16_t)-1;
    s->s_checkinterval = 0;
    s->s_default_mount_opts = EXT2_DEFM_XATTR_USER | EXT2_DEFM_ACL;
    s->s_def_hash_version = EXT2_HASH_HALF_MD4;
    s->s_flags |= ((char)-1 < 0) ? EXT2_FLAGS_SIGNED_HASH : EXT2_FLAGS_UNSIGNED_HASH;
    make_uuid(p, "ext-uuid", s->s_uuid);
    random_or_derived(p, "ext-hash-seed", s->s_hash_seed, sizeof s->s_hash_seed);
    if (p->label)
        memcpy(s->s_volume_name, p->label, strlen(p->label));
    if (ext2fs_has_feature_metadata_csum(s))
        s->s_checksum_type = EXT2_CRC32C_CHKSUM;
    ext2fs_init_csum_seed(fs);

    e = lay_out(fs, level);
    if (e) {
        int r = fail(&io, e, "laying out the filesystem");
        ext2fs_free(fs);
        return r;
    }
    ext2fs_mark_super_dirty(fs);
    e = ext2fs_close2(fs, 0);
    if (e) {
        int r = fail(&io, e, "writing the new filesystem");
        ext2fs_free(fs);
        return r;
    }
    if (p->reproducible)
        dev->now = p->now;
    return 0;
}

/* ---------------------------------------------------------------- sizing */

/* The journal mke2fs (ext2fs_default_journal_size) gives a filesystem of
 * that many blocks, in blocks. */
static uint64_t journal_blocks(uint64_t blocks)
{
    int j = ext2fs_default_journal_size(blocks);
    return j > 0 ? (uint64_t)j : 0;
}

/* Blocks spent on metadata in a filesystem of size bytes: inode tables,
 * bitmaps, descriptors with their reserve, journal. */
static uint64_t overhead_bytes(uint64_t size, uint64_t inodes_needed, int level)
{
    unsigned bs, ratio;
    size_class(size, inodes_needed, &bs, &ratio);
    uint64_t blocks = size / bs;
    uint64_t inodes = QIMG_MAX(size / ratio, inodes_needed);
    uint64_t groups = qimg_div_round_up(blocks, 8ull * bs);
    uint64_t b = qimg_div_round_up(inodes * 256, bs)     /* inode tables */
                 + groups * 2                            /* bitmaps */
                 + groups * 2                            /* descriptors (backups) */
                 + QIMG_MIN(1024ull, qimg_div_round_up(groups * 64, bs) * 1024) /* reserved GDT */
                 + (level >= 3 ? journal_blocks(blocks) : 0) + 64;
    return b * bs;
}

int ext_min_size(const struct qimg_fs_usage *u, const struct qimg_mkfs_params *p,
                 uint64_t *size)
{
    int level = type_level(p->type);
    if (!level)
        return qimg_error(-EINVAL, "mkfs: unknown ext filesystem type '%s'", p->type);
    int loaded = qimg_ext2fs_load();     /* for the journal's size */
    if (loaded < 0)
        return loaded;
    uint64_t nodes = u->files + u->dirs + u->symlinks + u->others + 16;
    uint64_t entries = nodes + u->hardlinks;
    uint64_t inodes = QIMG_MAX(nodes, p->inodes);
    /* what the tree needs, counted in 4 KiB blocks (at least as much as
     * 1 KiB blocks need, but for block-mapping overhead) */
    uint64_t need = u->data_blocks_4k * 4096;
    need += u->data_blocks_4k * 4096 / 256 + u->files * 64;  /* extent/indirect blocks */
    need += (u->dirs + 2) * 4096 + (u->name_bytes + entries * 16) * 3 / 2;
    need += QIMG_MIN(u->symlinks, u->symlink_bytes / 60) * 4096;
    need += u->xattr_bytes * 4;
    need += 16384;                                            /* lost+found */
    uint64_t want = need + need / 10 + (4ull << 20);
    /* extended attribute values of up to a block: 4 KiB blocks (32 MiB on) */
    if (u->xattr_bytes)
        want = QIMG_MAX(want, 32ull << 20);
    uint64_t s = want;
    for (int i = 0; i < 64; i++) {
        uint64_t total = want + overhead_bytes(s, inodes, level);
        /* at most one inode per 1 KiB block (size_class then takes 1 KiB) */
        total = QIMG_MAX(total, inodes * 1024 + inodes * 1024 / 8);
        if (total <= s)
            break;
        s = total;
    }
    /* a 1 KiB block filesystem needs room for its extra metadata too */
    s += s / 32;
    if (!qimg_round_up_ok(s, 1 << 20, size))
        return qimg_error(-EFBIG, "mkfs: the tree is too large");
    *size = QIMG_MAX(*size, (uint64_t)(8ull << 20));
    return 0;
}

#endif /* HAVE_EXT2FS */
