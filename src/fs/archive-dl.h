/* qimg - libarchive, opened the first time an archive is read
 * (archive-dl.c; how and why: src/lib/dl.h).
 *
 * libarchive brings libxml2, ICU and libstdc++ with it: linked at build
 * time, loading them cost every qimg run about 25 ms with a cold page
 * cache (1.3 ms warm), for a feature only create --from uses.  The macros
 * below let the calling code keep libarchive's own names. */
#ifndef QIMG_ARCHIVE_DL_H
#define QIMG_ARCHIVE_DL_H

#include <archive.h>
#include <archive_entry.h>

#include "dl.h"

#define QIMG_ARCHIVE_FUNCS(X) \
    X(archive_entry_atime) \
    X(archive_entry_atime_is_set) \
    X(archive_entry_atime_nsec) \
    X(archive_entry_birthtime) \
    X(archive_entry_birthtime_is_set) \
    X(archive_entry_birthtime_nsec) \
    X(archive_entry_ctime) \
    X(archive_entry_ctime_is_set) \
    X(archive_entry_ctime_nsec) \
    X(archive_entry_filetype) \
    X(archive_entry_gid) \
    X(archive_entry_hardlink) \
    X(archive_entry_hardlink_utf8) \
    X(archive_entry_mode) \
    X(archive_entry_mtime) \
    X(archive_entry_mtime_nsec) \
    X(archive_entry_pathname) \
    X(archive_entry_pathname_utf8) \
    X(archive_entry_rdev) \
    X(archive_entry_size) \
    X(archive_entry_size_is_set) \
    X(archive_entry_sparse_next) \
    X(archive_entry_sparse_reset) \
    X(archive_entry_symlink) \
    X(archive_entry_symlink_utf8) \
    X(archive_entry_uid) \
    X(archive_entry_xattr_next) \
    X(archive_entry_xattr_reset) \
    X(archive_errno) \
    X(archive_error_string) \
    X(archive_read_data_block) \
    X(archive_read_data_skip) \
    X(archive_read_free) \
    X(archive_read_new) \
    X(archive_read_next_header) \
    X(archive_read_open_fd) \
    X(archive_read_support_filter_all) \
    X(archive_read_support_format_all)

struct qimg_archive_api {
    QIMG_ARCHIVE_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_archive_api qimg_archive_api;

/* Open libarchive once (thread-safe); 0, or -ENOTSUP with the error
 * set.  Call before any of the functions below. */
int qimg_archive_load(void);

#ifndef QIMG_ARCHIVE_DL_IMPL
#define archive_entry_atime (qimg_archive_api.archive_entry_atime)
#define archive_entry_atime_is_set (qimg_archive_api.archive_entry_atime_is_set)
#define archive_entry_atime_nsec (qimg_archive_api.archive_entry_atime_nsec)
#define archive_entry_birthtime (qimg_archive_api.archive_entry_birthtime)
#define archive_entry_birthtime_is_set (qimg_archive_api.archive_entry_birthtime_is_set)
#define archive_entry_birthtime_nsec (qimg_archive_api.archive_entry_birthtime_nsec)
#define archive_entry_ctime (qimg_archive_api.archive_entry_ctime)
#define archive_entry_ctime_is_set (qimg_archive_api.archive_entry_ctime_is_set)
#define archive_entry_ctime_nsec (qimg_archive_api.archive_entry_ctime_nsec)
#define archive_entry_filetype (qimg_archive_api.archive_entry_filetype)
#define archive_entry_gid (qimg_archive_api.archive_entry_gid)
#define archive_entry_hardlink (qimg_archive_api.archive_entry_hardlink)
#define archive_entry_hardlink_utf8 (qimg_archive_api.archive_entry_hardlink_utf8)
#define archive_entry_mode (qimg_archive_api.archive_entry_mode)
#define archive_entry_mtime (qimg_archive_api.archive_entry_mtime)
#define archive_entry_mtime_nsec (qimg_archive_api.archive_entry_mtime_nsec)
#define archive_entry_pathname (qimg_archive_api.archive_entry_pathname)
#define archive_entry_pathname_utf8 (qimg_archive_api.archive_entry_pathname_utf8)
#define archive_entry_rdev (qimg_archive_api.archive_entry_rdev)
#define archive_entry_size (qimg_archive_api.archive_entry_size)
#define archive_entry_size_is_set (qimg_archive_api.archive_entry_size_is_set)
#define archive_entry_sparse_next (qimg_archive_api.archive_entry_sparse_next)
#define archive_entry_sparse_reset (qimg_archive_api.archive_entry_sparse_reset)
#define archive_entry_symlink (qimg_archive_api.archive_entry_symlink)
#define archive_entry_symlink_utf8 (qimg_archive_api.archive_entry_symlink_utf8)
#define archive_entry_uid (qimg_archive_api.archive_entry_uid)
#define archive_entry_xattr_next (qimg_archive_api.archive_entry_xattr_next)
#define archive_entry_xattr_reset (qimg_archive_api.archive_entry_xattr_reset)
#define archive_errno (qimg_archive_api.archive_errno)
#define archive_error_string (qimg_archive_api.archive_error_string)
#define archive_read_data_block (qimg_archive_api.archive_read_data_block)
#define archive_read_data_skip (qimg_archive_api.archive_read_data_skip)
#define archive_read_free (qimg_archive_api.archive_read_free)
#define archive_read_new (qimg_archive_api.archive_read_new)
#define archive_read_next_header (qimg_archive_api.archive_read_next_header)
#define archive_read_open_fd (qimg_archive_api.archive_read_open_fd)
#define archive_read_support_filter_all (qimg_archive_api.archive_read_support_filter_all)
#define archive_read_support_format_all (qimg_archive_api.archive_read_support_format_all)
#endif

#endif
