/* qimg - libnbd, opened the first time an NBD image is (nbd-dl.c; how
 * and why: src/lib/dl.h).  libnbd brings gnutls, libxml2 and ICU with it.
 * The macros below let nbd.c keep libnbd's own names. */
#ifndef QIMG_NBD_DL_H
#define QIMG_NBD_DL_H

#include <libnbd.h>

#include "dl.h"

#define QIMG_NBD_FUNCS(X) \
    X(nbd_add_meta_context) \
    X(nbd_aio_block_status) \
    X(nbd_aio_cache) \
    X(nbd_aio_connect_socket) \
    X(nbd_aio_connect_tcp) \
    X(nbd_aio_connect_unix) \
    X(nbd_aio_connect_vsock) \
    X(nbd_aio_flush) \
    X(nbd_aio_get_direction) \
    X(nbd_aio_get_fd) \
    X(nbd_aio_is_closed) \
    X(nbd_aio_is_connecting) \
    X(nbd_aio_is_dead) \
    X(nbd_aio_is_ready) \
    X(nbd_aio_notify_read) \
    X(nbd_aio_notify_write) \
    X(nbd_aio_pread) \
    X(nbd_aio_pwrite) \
    X(nbd_aio_trim) \
    X(nbd_aio_zero) \
    X(nbd_can_cache) \
    X(nbd_can_fast_zero) \
    X(nbd_can_flush) \
    X(nbd_can_fua) \
    X(nbd_can_meta_context) \
    X(nbd_can_multi_conn) \
    X(nbd_can_trim) \
    X(nbd_can_zero) \
    X(nbd_clear_debug_callback) \
    X(nbd_close) \
    X(nbd_connect_socket) \
    X(nbd_connect_tcp) \
    X(nbd_connect_unix) \
    X(nbd_connect_vsock) \
    X(nbd_create) \
    X(nbd_get_block_size) \
    X(nbd_get_errno) \
    X(nbd_get_error) \
    X(nbd_get_size) \
    X(nbd_is_read_only) \
    X(nbd_poll) \
    X(nbd_set_debug) \
    X(nbd_set_debug_callback) \
    X(nbd_set_export_name) \
    X(nbd_set_tls) \
    X(nbd_set_tls_certificates) \
    X(nbd_set_tls_psk_file) \
    X(nbd_set_tls_username) \
    X(nbd_set_tls_verify_peer) \
    X(nbd_shutdown)

struct qimg_nbd_api {
    QIMG_NBD_FUNCS(QIMG_DL_MEMBER)
};

extern struct qimg_nbd_api qimg_nbd_api;

/* Open libnbd once (thread-safe); 0, or -ENOTSUP with the error set.
 * Call before any of the functions below. */
int qimg_nbd_load(void);

#ifndef QIMG_NBD_DL_IMPL
#define nbd_add_meta_context (qimg_nbd_api.nbd_add_meta_context)
#define nbd_aio_block_status (qimg_nbd_api.nbd_aio_block_status)
#define nbd_aio_cache (qimg_nbd_api.nbd_aio_cache)
#define nbd_aio_connect_socket (qimg_nbd_api.nbd_aio_connect_socket)
#define nbd_aio_connect_tcp (qimg_nbd_api.nbd_aio_connect_tcp)
#define nbd_aio_connect_unix (qimg_nbd_api.nbd_aio_connect_unix)
#define nbd_aio_connect_vsock (qimg_nbd_api.nbd_aio_connect_vsock)
#define nbd_aio_flush (qimg_nbd_api.nbd_aio_flush)
#define nbd_aio_get_direction (qimg_nbd_api.nbd_aio_get_direction)
#define nbd_aio_get_fd (qimg_nbd_api.nbd_aio_get_fd)
#define nbd_aio_is_closed (qimg_nbd_api.nbd_aio_is_closed)
#define nbd_aio_is_connecting (qimg_nbd_api.nbd_aio_is_connecting)
#define nbd_aio_is_dead (qimg_nbd_api.nbd_aio_is_dead)
#define nbd_aio_is_ready (qimg_nbd_api.nbd_aio_is_ready)
#define nbd_aio_notify_read (qimg_nbd_api.nbd_aio_notify_read)
#define nbd_aio_notify_write (qimg_nbd_api.nbd_aio_notify_write)
#define nbd_aio_pread (qimg_nbd_api.nbd_aio_pread)
#define nbd_aio_pwrite (qimg_nbd_api.nbd_aio_pwrite)
#define nbd_aio_trim (qimg_nbd_api.nbd_aio_trim)
#define nbd_aio_zero (qimg_nbd_api.nbd_aio_zero)
#define nbd_can_cache (qimg_nbd_api.nbd_can_cache)
#define nbd_can_fast_zero (qimg_nbd_api.nbd_can_fast_zero)
#define nbd_can_flush (qimg_nbd_api.nbd_can_flush)
#define nbd_can_fua (qimg_nbd_api.nbd_can_fua)
#define nbd_can_meta_context (qimg_nbd_api.nbd_can_meta_context)
#define nbd_can_multi_conn (qimg_nbd_api.nbd_can_multi_conn)
#define nbd_can_trim (qimg_nbd_api.nbd_can_trim)
#define nbd_can_zero (qimg_nbd_api.nbd_can_zero)
#define nbd_clear_debug_callback (qimg_nbd_api.nbd_clear_debug_callback)
#define nbd_close (qimg_nbd_api.nbd_close)
#define nbd_connect_socket (qimg_nbd_api.nbd_connect_socket)
#define nbd_connect_tcp (qimg_nbd_api.nbd_connect_tcp)
#define nbd_connect_unix (qimg_nbd_api.nbd_connect_unix)
#define nbd_connect_vsock (qimg_nbd_api.nbd_connect_vsock)
#define nbd_create (qimg_nbd_api.nbd_create)
#define nbd_get_block_size (qimg_nbd_api.nbd_get_block_size)
#define nbd_get_errno (qimg_nbd_api.nbd_get_errno)
#define nbd_get_error (qimg_nbd_api.nbd_get_error)
#define nbd_get_size (qimg_nbd_api.nbd_get_size)
#define nbd_is_read_only (qimg_nbd_api.nbd_is_read_only)
#define nbd_poll (qimg_nbd_api.nbd_poll)
#define nbd_set_debug (qimg_nbd_api.nbd_set_debug)
#define nbd_set_debug_callback (qimg_nbd_api.nbd_set_debug_callback)
#define nbd_set_export_name (qimg_nbd_api.nbd_set_export_name)
#define nbd_set_tls (qimg_nbd_api.nbd_set_tls)
#define nbd_set_tls_certificates (qimg_nbd_api.nbd_set_tls_certificates)
#define nbd_set_tls_psk_file (qimg_nbd_api.nbd_set_tls_psk_file)
#define nbd_set_tls_username (qimg_nbd_api.nbd_set_tls_username)
#define nbd_set_tls_verify_peer (qimg_nbd_api.nbd_set_tls_verify_peer)
#define nbd_shutdown (qimg_nbd_api.nbd_shutdown)
#endif

#endif
