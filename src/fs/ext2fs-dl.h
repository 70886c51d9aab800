/* qimg - libext2fs (and libcom_err, which it brings), opened the first
 * time an ext filesystem is opened or made (ext2fs-dl.c; how and why:
 * src/lib/dl.h): only ls, cat, copy-in/out and create --from --fs ext*
 * need them.  The macros below let the ext files keep the libraries' names.
 *
 * ext2fs.h defines some helpers as inline functions whose bodies call
 * other libext2fs functions by their real names (ext2fs_get_mem,
 * ext2fs_free_mem, ext2fs_mark_super_dirty...); compiled into our objects
 * those calls would bypass the table and need the library at link time.
 * NO_INLINE_FUNCS makes ext2fs.h declare them only, so every call goes
 * through the table (libext2fs exports them all).  The list is every
 * libext2fs or libcom_err symbol the ext files' objects reference; the
 * static inline ext2fs_has_feature_* and the like stay inline: they only
 * test bits.  To regenerate it after using a new function: build, then
 * `nm -u build/obj/src/fs/ext*.o` (t-build-config checks none is left). */
#ifndef QIMG_EXT2FS_DL_H
#define QIMG_EXT2FS_DL_H

#ifndef NO_INLINE_FUNCS
#define NO_INLINE_FUNCS
#endif
#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "dl.h"

#define QIMG_EXT2FS_FUNCS(X) \
    X(error_message) \
    X(ext2fs_add_journal_inode3) \
    X(ext2fs_adjust_ea_refcount3) \
    X(ext2fs_allocate_tables) \
    X(ext2fs_bg_flags_set) \
    X(ext2fs_block_alloc_stats2) \
    X(ext2fs_blocks_count) \
    X(ext2fs_blocks_count_set) \
    X(ext2fs_bmap2) \
    X(ext2fs_close2) \
    X(ext2fs_create_resize_inode) \
    X(ext2fs_default_journal_size) \
    X(ext2fs_dir_iterate2) \
    X(ext2fs_dirent_name_len) \
    X(ext2fs_dirent_set_file_type) \
    X(ext2fs_dirent_set_name_len) \
    X(ext2fs_expand_dir) \
    X(ext2fs_extent_free) \
    X(ext2fs_extent_get) \
    X(ext2fs_extent_goto) \
    X(ext2fs_extent_open2) \
    X(ext2fs_extent_set_bmap) \
    X(ext2fs_fallocate) \
    X(ext2fs_file_acl_block) \
    X(ext2fs_file_acl_block_set) \
    X(ext2fs_find_inode_goal) \
    X(ext2fs_free) \
    X(ext2fs_free_blocks_count) \
    X(ext2fs_free_mem) \
    X(ext2fs_get_journal_params) \
    X(ext2fs_get_rec_len) \
    X(ext2fs_get_stat_i_blocks) \
    X(ext2fs_group_desc_csum_set) \
    X(ext2fs_iblk_set) \
    X(ext2fs_init_csum_seed) \
    X(ext2fs_initialize) \
    X(ext2fs_inline_data_get) \
    X(ext2fs_inline_data_size) \
    X(ext2fs_inode_alloc_stats2) \
    X(ext2fs_inode_has_valid_blocks2) \
    X(ext2fs_inode_size_set) \
    X(ext2fs_inode_table_loc) \
    X(ext2fs_is_fast_symlink) \
    X(ext2fs_link) \
    X(ext2fs_lookup) \
    X(ext2fs_mark_ib_dirty) \
    X(ext2fs_mark_super_dirty) \
    X(ext2fs_mkdir) \
    X(ext2fs_new_block2) \
    X(ext2fs_new_dir_block) \
    X(ext2fs_new_inode) \
    X(ext2fs_open2) \
    X(ext2fs_punch) \
    X(ext2fs_r_blocks_count_set) \
    X(ext2fs_read_bitmaps) \
    X(ext2fs_read_inode) \
    X(ext2fs_read_inode_full) \
    X(ext2fs_set_rec_len) \
    X(ext2fs_unlink) \
    X(ext2fs_update_bb_inode) \
    X(ext2fs_write_dir_block4) \
    X(ext2fs_write_inode_full) \
    X(ext2fs_xattr_set) \
    X(ext2fs_xattrs_close) \
    X(ext2fs_xattrs_iterate) \
    X(ext2fs_xattrs_open) \
    X(ext2fs_xattrs_read) \
    X(ext2fs_zero_blocks2) \
    X(initialize_ext2_error_table) \
    X(io_channel_read_blk64) \
    X(io_channel_write_blk64)

struct qimg_ext2fs_api {
    QIMG_EXT2FS_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_ext2fs_api qimg_ext2fs_api;

/* Open libext2fs once (thread-safe); 0, or -ENOTSUP with the error set.
 * Call before any of the functions below. */
int qimg_ext2fs_load(void);

#ifndef QIMG_EXT2FS_DL_IMPL
#define error_message (qimg_ext2fs_api.error_message)
#define ext2fs_add_journal_inode3 (qimg_ext2fs_api.ext2fs_add_journal_inode3)
#define ext2fs_adjust_ea_refcount3 (qimg_ext2fs_api.ext2fs_adjust_ea_refcount3)
#define ext2fs_allocate_tables (qimg_ext2fs_api.ext2fs_allocate_tables)
#define ext2fs_bg_flags_set (qimg_ext2fs_api.ext2fs_bg_flags_set)
#define ext2fs_block_alloc_stats2 (qimg_ext2fs_api.ext2fs_block_alloc_stats2)
#define ext2fs_blocks_count (qimg_ext2fs_api.ext2fs_blocks_count)
#define ext2fs_blocks_count_set (qimg_ext2fs_api.ext2fs_blocks_count_set)
#define ext2fs_bmap2 (qimg_ext2fs_api.ext2fs_bmap2)
#define ext2fs_close2 (qimg_ext2fs_api.ext2fs_close2)
#define ext2fs_create_resize_inode (qimg_ext2fs_api.ext2fs_create_resize_inode)
#define ext2fs_default_journal_size (qimg_ext2fs_api.ext2fs_default_journal_size)
#define ext2fs_dir_iterate2 (qimg_ext2fs_api.ext2fs_dir_iterate2)
#define ext2fs_dirent_name_len (qimg_ext2fs_api.ext2fs_dirent_name_len)
#define ext2fs_dirent_set_file_type (qimg_ext2fs_api.ext2fs_dirent_set_file_type)
#define ext2fs_dirent_set_name_len (qimg_ext2fs_api.ext2fs_dirent_set_name_len)
#define ext2fs_expand_dir (qimg_ext2fs_api.ext2fs_expand_dir)
#define ext2fs_extent_free (qimg_ext2fs_api.ext2fs_extent_free)
#define ext2fs_extent_get (qimg_ext2fs_api.ext2fs_extent_get)
#define ext2fs_extent_goto (qimg_ext2fs_api.ext2fs_extent_goto)
#define ext2fs_extent_open2 (qimg_ext2fs_api.ext2fs_extent_open2)
#define ext2fs_extent_set_bmap (qimg_ext2fs_api.ext2fs_extent_set_bmap)
#define ext2fs_fallocate (qimg_ext2fs_api.ext2fs_fallocate)
#define ext2fs_file_acl_block (qimg_ext2fs_api.ext2fs_file_acl_block)
#define ext2fs_file_acl_block_set (qimg_ext2fs_api.ext2fs_file_acl_block_set)
#define ext2fs_find_inode_goal (qimg_ext2fs_api.ext2fs_find_inode_goal)
#define ext2fs_free (qimg_ext2fs_api.ext2fs_free)
#define ext2fs_free_blocks_count (qimg_ext2fs_api.ext2fs_free_blocks_count)
#define ext2fs_free_mem (qimg_ext2fs_api.ext2fs_free_mem)
#define ext2fs_get_journal_params (qimg_ext2fs_api.ext2fs_get_journal_params)
#define ext2fs_get_rec_len (qimg_ext2fs_api.ext2fs_get_rec_len)
#define ext2fs_get_stat_i_blocks (qimg_ext2fs_api.ext2fs_get_stat_i_blocks)
#define ext2fs_group_desc_csum_set (qimg_ext2fs_api.ext2fs_group_desc_csum_set)
#define ext2fs_iblk_set (qimg_ext2fs_api.ext2fs_iblk_set)
#define ext2fs_init_csum_seed (qimg_ext2fs_api.ext2fs_init_csum_seed)
#define ext2fs_initialize (qimg_ext2fs_api.ext2fs_initialize)
#define ext2fs_inline_data_get (qimg_ext2fs_api.ext2fs_inline_data_get)
#define ext2fs_inline_data_size (qimg_ext2fs_api.ext2fs_inline_data_size)
#define ext2fs_inode_alloc_stats2 (qimg_ext2fs_api.ext2fs_inode_alloc_stats2)
#define ext2fs_inode_has_valid_blocks2 (qimg_ext2fs_api.ext2fs_inode_has_valid_blocks2)
#define ext2fs_inode_size_set (qimg_ext2fs_api.ext2fs_inode_size_set)
#define ext2fs_inode_table_loc (qimg_ext2fs_api.ext2fs_inode_table_loc)
#define ext2fs_is_fast_symlink (qimg_ext2fs_api.ext2fs_is_fast_symlink)
#define ext2fs_link (qimg_ext2fs_api.ext2fs_link)
#define ext2fs_lookup (qimg_ext2fs_api.ext2fs_lookup)
#define ext2fs_mark_ib_dirty (qimg_ext2fs_api.ext2fs_mark_ib_dirty)
#define ext2fs_mark_super_dirty (qimg_ext2fs_api.ext2fs_mark_super_dirty)
#define ext2fs_mkdir (qimg_ext2fs_api.ext2fs_mkdir)
#define ext2fs_new_block2 (qimg_ext2fs_api.ext2fs_new_block2)
#define ext2fs_new_dir_block (qimg_ext2fs_api.ext2fs_new_dir_block)
#define ext2fs_new_inode (qimg_ext2fs_api.ext2fs_new_inode)
#define ext2fs_open2 (qimg_ext2fs_api.ext2fs_open2)
#define ext2fs_punch (qimg_ext2fs_api.ext2fs_punch)
#define ext2fs_r_blocks_count_set (qimg_ext2fs_api.ext2fs_r_blocks_count_set)
#define ext2fs_read_bitmaps (qimg_ext2fs_api.ext2fs_read_bitmaps)
#define ext2fs_read_inode (qimg_ext2fs_api.ext2fs_read_inode)
#define ext2fs_read_inode_full (qimg_ext2fs_api.ext2fs_read_inode_full)
#define ext2fs_set_rec_len (qimg_ext2fs_api.ext2fs_set_rec_len)
#define ext2fs_unlink (qimg_ext2fs_api.ext2fs_unlink)
#define ext2fs_update_bb_inode (qimg_ext2fs_api.ext2fs_update_bb_inode)
#define ext2fs_write_dir_block4 (qimg_ext2fs_api.ext2fs_write_dir_block4)
#define ext2fs_write_inode_full (qimg_ext2fs_api.ext2fs_write_inode_full)
#define ext2fs_xattr_set (qimg_ext2fs_api.ext2fs_xattr_set)
#define ext2fs_xattrs_close (qimg_ext2fs_api.ext2fs_xattrs_close)
#define ext2fs_xattrs_iterate (qimg_ext2fs_api.ext2fs_xattrs_iterate)
#define ext2fs_xattrs_open (qimg_ext2fs_api.ext2fs_xattrs_open)
#define ext2fs_xattrs_read (qimg_ext2fs_api.ext2fs_xattrs_read)
#define ext2fs_zero_blocks2 (qimg_ext2fs_api.ext2fs_zero_blocks2)
#define initialize_ext2_error_table (qimg_ext2fs_api.initialize_ext2_error_table)
#define io_channel_read_blk64 (qimg_ext2fs_api.io_channel_read_blk64)
#define io_channel_write_blk64 (qimg_ext2fs_api.io_channel_write_blk64)
#endif

#endif
