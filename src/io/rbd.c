/* qimg - the "rbd" storage backend: a Ceph RBD image through librbd and
 * librados, as qemu's block-rbd opens one.
 *
 * Names: "rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:key=value...]", where a
 * backslash escapes the next character, "conf" and "id" (the user) are
 * options of ours and every other key is a Ceph setting (mon_host,
 * keyring, auth_supported ...) given to librados as it is.  Option trees
 * (json:, --image-opts) take qemu's keys: pool, namespace, image,
 * snapshot, conf, user, server.N.host/port, key-secret,
 * auth-client-required.N, and qemu's own "=keyvalue-pairs" (a JSON list
 * of alternating Ceph keys and values, which a name's extra pairs become).
 *
 * librbd and librados are opened with dlopen on the first rbd open (see
 * src/lib/dl.h): linked, they and the 30 libraries they pull in (libstdc++,
 * boost, ceph-common, the crypto and compression libraries) would be
 * loaded, relocated and initialised by every qimg run, rbd or not.
 *
 * Threads: librbd's aio calls are thread-safe; every request is split into
 * object-sized pieces that are all in flight at once, and convert's
 * workers add their own requests beside them.  Growing the image (a write
 * past the end: a qcow2 inside RBD grows its "file") is serialised by a
 * mutex; the size is cached in an atomic.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "internal.h"
#include "json-priv.h"

/* ---- names: always built (the name parser needs no library) ---- */

/* End of the token at s that ends at an unescaped delim (or the string's
 * end); a backslash skips the character after it. */
static char *qrbd_token_end(char *s, char delim)
{
    for (; *s && *s != delim; s++)
        if (s[0] == '\\' && s[1])
            s++;
    return s;
}

/* Cut the token at *p at delim: returns it, *p moves past the delimiter,
 * or to NULL when there was none. */
static char *qrbd_next_token(char **p, char delim)
{
    char *tok = *p, *end = qrbd_token_end(tok, delim);
    if (*end == delim) {
        *end = '\0';
        *p = end + 1;
    } else {
        *p = NULL;
    }
    return tok;
}

/* Drop the escaping backslashes in place. */
static void qrbd_unescape(char *s)
{
    char *out = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1])
            s++;
        *out++ = *s;
    }
    *out = '\0';
}

static int qrbd_set(qimg_opts *opts, const char *key, char *value)
{
    qrbd_unescape(value);
    return qimg_opts_set(&opts, key, value);
}

/* Ceph settings of the name (key, value, key, value ...) as the JSON list
 * string qemu keeps under "=keyvalue-pairs". */
static int qrbd_set_pairs(qimg_opts *opts, struct qimg_json *pairs)
{
    CLEANUP_FREE char *text = qimg_json_to_string_compact(pairs);
    return qimg_opts_set(&opts, "=keyvalue-pairs", text);
}

static int qrbd_parse_pairs(qimg_opts *opts, char *p)
{
    struct qimg_json *pairs = NULL;
    int r = 0;
    while (p && r == 0) {
        char *key = qrbd_next_token(&p, '=');
        if (!p) {
            r = qimg_error(-EINVAL, "conf option %s has no value", key);
            break;
        }
        char *value = qrbd_next_token(&p, ':');
        if (strcmp(key, "conf") == 0) {
            r = qrbd_set(opts, "conf", value);
        } else if (strcmp(key, "id") == 0) {
            r = qrbd_set(opts, "user", value);
        } else {
            qrbd_unescape(value);
            if (!pairs)
                pairs = qimg_json_array();
            qimg_json_append(pairs, qimg_json_string(key));
            qimg_json_append(pairs, qimg_json_string(value));
        }
    }
    if (r == 0 && pairs)
        r = qrbd_set_pairs(opts, pairs);
    qimg_json_free(pairs);
    return r;
}

static int qrbd_parse_filename(const char *filename, qimg_opts *opts)
{
    if (strncmp(filename, "rbd:", 4) != 0)
        return qimg_error(-EINVAL, "File name must start with 'rbd:'");
    CLEANUP_FREE char *buf = qimg_strdup(filename + 4);
    char *p = buf;
    char *pool = qrbd_next_token(&p, '/');
    if (!p)
        return qimg_error(-EINVAL, "Pool name is required");
    int r = qrbd_set(opts, "pool", pool);
    char *image;
    /* an unescaped '@' before the options starts the snapshot name */
    char *at = qrbd_token_end(p, '@');
    if (r == 0 && *at == '@' && at < qrbd_token_end(p, ':')) {
        image = qrbd_next_token(&p, '@');
        r = qrbd_set(opts, "snapshot", qrbd_next_token(&p, ':'));
    } else {
        image = qrbd_next_token(&p, ':');
    }
    if (r < 0)
        return r;
    if (*qrbd_token_end(image, '/') == '/')
        r = qrbd_set(opts, "namespace", qrbd_next_token(&image, '/'));
    else
        r = qimg_opts_set(&opts, "namespace", "");
    if (r == 0)
        r = qrbd_set(opts, "image", image);
    if (r == 0)
        r = qrbd_parse_pairs(opts, p);
    return r;
}

/* qemu's create options of the rbd protocol, merged after a format's */
static const struct qimg_opt_desc qrbd_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "cluster_size", QIMG_OPT_SIZE, "RBD object size", NULL },
    { "password-secret", QIMG_OPT_STRING, "ID of secret providing the password", NULL },
    { "encrypt.format", QIMG_OPT_STRING, "Encrypt the image, format choices: 'luks', 'luks2'", NULL },
    { "encrypt.cipher-alg", QIMG_OPT_STRING,
      "Name of encryption cipher algorithm (allowed values: aes-128, aes-256)", NULL },
    { "encrypt.key-secret", QIMG_OPT_STRING, "ID of secret providing LUKS passphrase", NULL },
    { NULL, 0, NULL, NULL },
};

#ifdef HAVE_LIBRBD
#include <rados/librados.h>
#include <rbd/librbd.h>

#include "dl.h"

/* ---- the libraries, loaded on first use ---- */

#define RBD_RADOS_FUNCS(X)                                                        \
    X(rados_create) X(rados_conf_read_file) X(rados_conf_set) X(rados_connect)   \
    X(rados_shutdown) X(rados_ioctx_create) X(rados_ioctx_destroy)               \
    X(rados_ioctx_set_namespace)
#define RBD_RBD_FUNCS(X)                                                          \
    X(rbd_open) X(rbd_open_read_only) X(rbd_close) X(rbd_get_size) X(rbd_stat)   \
    X(rbd_resize) X(rbd_create) X(rbd_create4) X(rbd_image_options_create)       \
    X(rbd_image_options_destroy) X(rbd_image_options_set_uint64)                 \
    X(rbd_aio_create_completion) X(rbd_aio_wait_for_complete)                    \
    X(rbd_aio_get_return_value) X(rbd_aio_release) X(rbd_aio_read)              \
    X(rbd_aio_write) X(rbd_aio_discard) X(rbd_aio_write_zeroes) X(rbd_aio_flush) \
    X(rbd_diff_iterate2) X(rbd_get_features) X(rbd_get_flags) X(rbd_snap_list)   \
    X(rbd_snap_list_end) X(rbd_snap_create) X(rbd_snap_remove)                   \
    X(rbd_snap_rollback) X(rbd_namespace_exists)

static struct {
    RBD_RADOS_FUNCS(QIMG_DL_MEMBER)
    RBD_RBD_FUNCS(QIMG_DL_MEMBER)
} lib;

#define QIMG_DL_API lib
QIMG_DL_DESCRIBE(rados, RBD_RADOS_FUNCS, "librados", "The rbd driver", "librados.so.2", "librados.so")
QIMG_DL_DESCRIBE(rbd, RBD_RBD_FUNCS, "librbd", "The rbd driver", "librbd.so.1", "librbd.so")
#undef QIMG_DL_API

static int qrbd_lib(void)
{
    int r = qimg_dl_load(&rados_lib);
    return r < 0 ? r : qimg_dl_load(&rbd_lib);
}

/* ---- state ---- */

/* Byte ranges, sorted (the changes since a snapshot). */
struct qrbd_extents {
    uint64_t *off, *len;
    size_t n, cap;
};

struct qrbd_state {
    rados_t cluster;
    rados_ioctx_t ioctx;
    rbd_image_t image;
    char *pool, *namespace, *image_name, *snapshot;
    uint64_t object_size;
    bool fast_diff;                /* block status from the object map */
    _Atomic uint64_t size;
    _Atomic uint64_t bytes_read;   /* for QIMG_RBD_STATS */
    bool named_by_filename;        /* an option tree's "filename": qemu's name */
    pthread_mutex_t changes_lock;  /* the changes since a snapshot, loaded once: */
    char *changes_since;
    struct qrbd_extents changes;
    pthread_mutex_t grow_lock;     /* writes past the end resize */
};

/* ---- connecting: qemu's order of settings and its messages ---- */

/* Ceph's mon_host from server.N.host/port: "host:port,host2" (IPv6
 * addresses in brackets). */
static char *qrbd_mon_host(qimg_opts *opts)
{
    struct qimg_strbuf b = { 0 };
    for (unsigned i = 0;; i++) {
        char key[48];
        const char *host = NULL, *port = NULL;
        snprintf(key, sizeof key, "server.%u.host", i);
        if (qimg_opts_get_string(opts, key, &host) != 1)
            break;
        snprintf(key, sizeof key, "server.%u.port", i);
        qimg_opts_get_string(opts, key, &port);
        bool v6 = strchr(host, ':') != NULL;
        qimg_strbuf_addf(&b, "%s%s%s%s%s%s", i ? "," : "", v6 ? "[" : "", host, v6 ? "]" : "",
                         port ? ":" : "", port ? port : "");
    }
    return b.s;
}

static int qrbd_set_keypairs(struct qrbd_state *s, qimg_opts *opts)
{
    const char *text = NULL;
    if (qimg_opts_get_string(opts, "=keyvalue-pairs", &text) != 1)
        return 0;
    struct qimg_json *list = NULL;
    if (qimg_json_parse(text, &list) < 0 || list->type != QIMG_JSON_ARRAY || list->n % 2) {
        qimg_json_free(list);
        return qimg_error(-EINVAL, "Invalid keyvalue-pairs");
    }
    int r = 0;
    for (size_t i = 0; i + 1 < list->n && r == 0; i += 2) {
        const struct qimg_json *k = list->items[i], *v = list->items[i + 1];
        if (k->type != QIMG_JSON_STRING || v->type != QIMG_JSON_STRING) {
            r = qimg_error(-EINVAL, "Invalid keyvalue-pairs");
            break;
        }
        r = lib.rados_conf_set(s->cluster, k->v.s, v->v.s);
        if (r < 0)
            r = qimg_error_errno(r, "invalid conf option %s", k->v.s);
    }
    qimg_json_free(list);
    return r;
}

/* key-secret and auth-client-required (a list: "cephx", "none"). */
static int qrbd_set_auth(struct qrbd_state *s, qimg_opts *opts)
{
    const char *secret_id = NULL;
    if (qimg_opts_get_string(opts, "key-secret", &secret_id) == 1) {
        CLEANUP_FREE char *key = NULL;
        size_t len;
        int r = qimg_secret_lookup(secret_id, &key, &len);
        if (r < 0)
            return r;
        r = lib.rados_conf_set(s->cluster, "key", key);
        if (r < 0)
            return qimg_error_errno(r, "Could not set 'key'");
    }
    struct qimg_strbuf b = { 0 };
    for (unsigned i = 0;; i++) {
        char key[48];
        const char *mode = NULL;
        snprintf(key, sizeof key, "auth-client-required.%u", i);
        if (qimg_opts_get_string(opts, key, &mode) != 1)
            break;
        if (strcmp(mode, "cephx") && strcmp(mode, "none")) {
            free(b.s);
            /* qemu's list visitor names no element */
            return qimg_error(-EINVAL, "Parameter 'null' does not accept value '%s'", mode);
        }
        qimg_strbuf_addf(&b, "%s%s", i ? ";" : "", mode);
    }
    int r = 0;
    if (b.s) {
        r = lib.rados_conf_set(s->cluster, "auth_client_required", b.s);
        if (r < 0)
            r = qimg_error_errno(r, "Could not set 'auth_client_required'");
        free(b.s);
    }
    return r;
}

static int qrbd_connect(struct qrbd_state *s, qimg_opts *opts, unsigned ioflags)
{
    const char *user = NULL, *conf = NULL;
    qimg_opts_get_string(opts, "user", &user);
    qimg_opts_get_string(opts, "conf", &conf);
    int r = lib.rados_create(&s->cluster, user);
    if (r < 0) {
        s->cluster = NULL;
        return qimg_error_errno(r, "error initializing");
    }
    /* librbd copies every write's buffer unless told that the caller
     * leaves it alone until the write completes, which we do (each
     * request waits for all its pieces).  Set before the configuration
     * is read, so a conf file or keyvalue pair still decides; librbd
     * copies anyway while its write-around cache is on. */
    lib.rados_conf_set(s->cluster, "rbd_disable_zero_copy_writes", "false");
    /* the default configuration (CEPH_CONF, /etc/ceph) may be missing */
    r = lib.rados_conf_read_file(s->cluster, conf);
    if (conf && r < 0)
        return qimg_error_errno(r, "error reading conf file %s", conf);
    r = qrbd_set_keypairs(s, opts);
    if (r == 0)
        r = qrbd_set_auth(s, opts);
    if (r < 0)
        return r;
    CLEANUP_FREE char *mon_host = qrbd_mon_host(opts);
    if (mon_host && (r = lib.rados_conf_set(s->cluster, "mon_host", mon_host)) < 0)
        return qimg_error_errno(r, "Could not set 'mon_host'");
    /* librbd's cache: on unless the cache mode bypasses the host's, or the
     * image is written once front to back (convert's target): there the
     * write-around cache only copies each buffer (measured: 7% slower) */
    bool stream_write = (ioflags & (QIMG_IO_STREAM | QIMG_IO_RDWR)) == (QIMG_IO_STREAM | QIMG_IO_RDWR);
    lib.rados_conf_set(s->cluster, "rbd_cache",
                       (ioflags & QIMG_IO_DIRECT) || stream_write ? "false" : "true");
    r = lib.rados_connect(s->cluster);
    if (r < 0)
        return qimg_error_errno(r, "error connecting");
    r = lib.rados_ioctx_create(s->cluster, s->pool, &s->ioctx);
    if (r < 0) {
        s->ioctx = NULL;
        return qimg_error_errno(r, "error opening pool %s", s->pool);
    }
    lib.rados_ioctx_set_namespace(s->ioctx, s->namespace);
    if (s->namespace[0]) {
        bool exists = false;
        r = lib.rbd_namespace_exists(s->ioctx, s->namespace, &exists);
        if (r < 0)
            return qimg_error_errno(r, "error checking namespace");
        if (!exists)
            return qimg_error(-ENOENT, "namespace '%s' does not exist", s->namespace);
    }
    return 0;
}

/* ---- requests ---- */

static int qrbd_wait(rbd_completion_t c)
{
    lib.rbd_aio_wait_for_complete(c);
    ssize_t r = lib.rbd_aio_get_return_value(c);
    lib.rbd_aio_release(c);
    return r < 0 ? (int)r : 0;
}

enum qrbd_op { RBD_READ, RBD_WRITE, RBD_DISCARD, RBD_ZERO };

static int qrbd_submit(struct qrbd_state *s, enum qrbd_op op, char *buf, uint64_t off, uint64_t len,
                      rbd_completion_t *c)
{
    int r = lib.rbd_aio_create_completion(NULL, NULL, c);
    if (r < 0)
        return r;
    switch (op) {
    case RBD_READ: r = lib.rbd_aio_read(s->image, off, len, buf, *c); break;
    case RBD_WRITE: r = lib.rbd_aio_write(s->image, off, len, buf, *c); break;
    case RBD_DISCARD: r = lib.rbd_aio_discard(s->image, off, len, *c); break;
    case RBD_ZERO: r = lib.rbd_aio_write_zeroes(s->image, off, len, *c, 0, 0); break;
    }
    if (r < 0)
        lib.rbd_aio_release(*c);
    return r;
}

/* At most this many pieces of one request in flight at once. */
#define RBD_MAX_INFLIGHT 16

/* One request cut at object boundaries, the pieces in flight together. */
static int qrbd_request(struct qrbd_state *s, enum qrbd_op op, char *buf, uint64_t off, uint64_t len)
{
    rbd_completion_t c[RBD_MAX_INFLIGHT];
    int first_error = 0;
    while (len > 0) {
        size_t n = 0;
        while (len > 0 && n < RBD_MAX_INFLIGHT) {
            uint64_t piece = QIMG_MIN(len, s->object_size - off % s->object_size);
            if (op == RBD_DISCARD || op == RBD_ZERO)
                piece = len;           /* librbd splits these itself */
            int r = qrbd_submit(s, op, buf, off, piece, &c[n]);
            if (r < 0) {
                first_error = r;
                len = 0;
                break;
            }
            n++;
            off += piece, len -= piece;
            if (buf)
                buf += piece;
        }
        for (size_t i = 0; i < n; i++) {
            int r = qrbd_wait(c[i]);
            if (r < 0 && !first_error)
                first_error = r;
        }
        if (first_error)
            break;
    }
    return first_error;
}

static int qrbd_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct qrbd_state *s = io->priv;
    uint64_t size = atomic_load(&s->size);
    size_t inside = off >= size ? 0 : (size_t)QIMG_MIN((uint64_t)len, size - off);
    memset((char *)buf + inside, 0, len - inside);
    atomic_fetch_add(&s->bytes_read, inside);
    int r = inside ? qrbd_request(s, RBD_READ, buf, off, inside) : 0;
    if (r < 0)
        return qimg_error_errno(r, "Could not read from '%s'", io->filename);
    return 0;
}

/* A write or zeroing that ends past the image grows it first, as qemu's
 * rbd driver does: the format above (qcow2) grows its file by writing. */
static int qrbd_grow_to(struct qimg_io *io, uint64_t end)
{
    struct qrbd_state *s = io->priv;
    if (end <= atomic_load(&s->size))
        return 0;
    pthread_mutex_lock(&s->grow_lock);
    int r = 0;
    if (end > atomic_load(&s->size)) {
        r = lib.rbd_resize(s->image, end);
        if (r == 0)
            atomic_store(&s->size, end);
    }
    pthread_mutex_unlock(&s->grow_lock);
    return r < 0 ? qimg_error_errno(r, "error resizing") : 0;
}

static int qrbd_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    struct qrbd_state *s = io->priv;
    int r = qrbd_grow_to(io, off + len);
    if (r == 0 && len)
        r = qrbd_request(s, RBD_WRITE, (char *)buf, off, len);
    if (r < 0)
        return qimg_error_errno(r, "Could not write to '%s'", io->filename);
    return 0;
}

static int qrbd_zero(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags)
{
    struct qrbd_state *s = io->priv;
    /* write_zeroes may deallocate: it cannot promise allocated zeros */
    if (flags & QIMG_IO_ZERO_NO_FALLBACK)
        return -ENOTSUP;
    int r = qrbd_grow_to(io, off + len);
    if (r == 0)
        r = qrbd_request(s, RBD_ZERO, NULL, off, len);
    if (r < 0)
        return qimg_error_errno(r, "Could not zero '%s'", io->filename);
    return 0;
}

static int qrbd_discard(struct qimg_io *io, uint64_t off, uint64_t len)
{
    struct qrbd_state *s = io->priv;
    uint64_t size = atomic_load(&s->size);
    if (off >= size)
        return 0;
    int r = qrbd_request(s, RBD_DISCARD, NULL, off, QIMG_MIN(len, size - off));
    if (r < 0)
        return qimg_error_errno(r, "Could not discard in '%s'", io->filename);
    return 0;
}

static int qrbd_flush(struct qimg_io *io)
{
    struct qrbd_state *s = io->priv;
    if (io->flags & QIMG_IO_UNSAFE)
        return 0;
    rbd_completion_t c;
    int r = lib.rbd_aio_create_completion(NULL, NULL, &c);
    if (r == 0) {
        r = lib.rbd_aio_flush(s->image, c);
        r = r < 0 ? (lib.rbd_aio_release(c), r) : qrbd_wait(c);
    }
    if (r < 0)
        return qimg_error_errno(r, "Could not flush '%s'", io->filename);
    return 0;
}

static int qrbd_get_size(struct qimg_io *io, uint64_t *size)
{
    *size = atomic_load(&((struct qrbd_state *)io->priv)->size);
    return 0;
}

static int qrbd_truncate(struct qimg_io *io, uint64_t size)
{
    struct qrbd_state *s = io->priv;
    int r = lib.rbd_resize(s->image, size);
    if (r < 0)
        return qimg_error_errno(r, "error resizing");
    atomic_store(&s->size, size);
    return 0;
}

/* ---- block status: the object map through diff-iterate ---- */

/* The first extent at or after the asked offset; iteration stops there. */
struct qrbd_first_extent {
    uint64_t off, len;
    bool found;
};

#define RBD_STOP_ITERATION (-9000)

static int qrbd_first_cb(uint64_t off, size_t len, int exists, void *opaque)
{
    struct qrbd_first_extent *e = opaque;
    if (!exists)
        return 0;          /* a hole inside the range asked about */
    e->off = off, e->len = len, e->found = true;
    return RBD_STOP_ITERATION;
}

static int qrbd_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    struct qrbd_state *s = io->priv;
    uint64_t size = atomic_load(&s->size);
    if (!s->fast_diff || off >= size) {
        /* without an object map diff-iterate lists every object: qemu
         * then says "data", and so do we */
        *kind = off >= size ? QIMG_IO_EXT_HOLE : QIMG_IO_EXT_DATA;
        *pnum = len;
        return 0;
    }
    len = QIMG_MIN(len, size - off);
    struct qrbd_first_extent e = { 0 };
    int r = lib.rbd_diff_iterate2(s->image, NULL, off, len, 1, 1, qrbd_first_cb, &e);
    if (r < 0 && r != RBD_STOP_ITERATION)
        return qimg_error_errno(r, "error iterating over the image's objects");
    if (!e.found || e.off > off) {
        *kind = QIMG_IO_EXT_HOLE;
        *pnum = e.found ? e.off - off : len;
    } else {
        *kind = QIMG_IO_EXT_DATA;
        *pnum = QIMG_MIN(len, e.off + e.len - off);
    }
    return 0;
}

/* What changed since snapshot `since`: diff-iterate from it, once, at the
 * byte level (metadata only: the object map and each changed object's
 * snapshot list; no data is read).  librbd calls back for objects in no
 * particular order, so the extents are collected, sorted and merged, and
 * looked up from then on. */
static int qrbd_collect_cb(uint64_t off, size_t len, int exists, void *opaque)
{
    struct qrbd_extents *e = opaque;
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 64;
        e->off = qimg_xrealloc(e->off, e->cap * sizeof *e->off);
        e->len = qimg_xrealloc(e->len, e->cap * sizeof *e->len);
    }
    e->off[e->n] = off, e->len[e->n] = len;    /* written or discarded: changed either way */
    e->n++;
    return 0;
}

static int qrbd_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort by offset (pairs moved together) and merge touching extents. */
static void qrbd_extents_normalise(struct qrbd_extents *e)
{
    uint64_t *pairs = qimg_xcalloc(e->n ? 2 * e->n : 1, sizeof *pairs);
    for (size_t i = 0; i < e->n; i++)
        pairs[2 * i] = e->off[i], pairs[2 * i + 1] = e->len[i];
    qsort(pairs, e->n, 2 * sizeof *pairs, qrbd_cmp_u64);
    size_t m = 0;
    for (size_t i = 0; i < e->n; i++) {
        uint64_t off = pairs[2 * i], end = off + pairs[2 * i + 1];
        if (m && off <= e->off[m - 1] + e->len[m - 1]) {
            uint64_t prev_end = e->off[m - 1] + e->len[m - 1];
            e->len[m - 1] = QIMG_MAX(prev_end, end) - e->off[m - 1];
        } else {
            e->off[m] = off, e->len[m] = end - off;
            m++;
        }
    }
    e->n = m;
    free(pairs);
}

static int qrbd_load_changes(struct qrbd_state *s, const char *since)
{
    struct qrbd_extents e = { 0 };
    int r = lib.rbd_diff_iterate2(s->image, since, 0, atomic_load(&s->size), 1, 0, qrbd_collect_cb, &e);
    if (r < 0) {
        free(e.off), free(e.len);
        return qimg_error_errno(r, "Could not list the changes of '%s' since snapshot '%s'",
                                s->image_name, since);
    }
    qrbd_extents_normalise(&e);
    free(s->changes.off), free(s->changes.len), free(s->changes_since);
    s->changes = e;
    s->changes_since = qimg_strdup(since);
    return 0;
}

static int qrbd_changed_extent(struct qimg_io *io, const char *since, uint64_t off, uint64_t len,
                               uint64_t *pnum, bool *changed)
{
    struct qrbd_state *s = io->priv;
    pthread_mutex_lock(&s->changes_lock);
    int r = 0;
    if (!s->changes_since || strcmp(s->changes_since, since) != 0)
        r = qrbd_load_changes(s, since);
    if (r == 0) {
        /* the first extent ending after off */
        const struct qrbd_extents *e = &s->changes;
        size_t lo = 0, hi = e->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (e->off[mid] + e->len[mid] <= off)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == e->n || e->off[lo] >= off + len) {
            *changed = false, *pnum = len;
        } else if (e->off[lo] > off) {
            *changed = false, *pnum = e->off[lo] - off;
        } else {
            *changed = true, *pnum = QIMG_MIN(len, e->off[lo] + e->len[lo] - off);
        }
    }
    pthread_mutex_unlock(&s->changes_lock);
    return r;
}

/* ---- snapshots (qemu's: named, the name is also the id) ---- */

static int qrbd_snapshot_list(struct qimg_io *io, struct qimg_snapshot_info **list, size_t *n)
{
    struct qrbd_state *s = io->priv;
    int max = 16, count;
    rbd_snap_info_t *snaps = NULL;
    *list = NULL, *n = 0;
    do {
        free(snaps);
        snaps = qimg_xcalloc((size_t)max, sizeof *snaps);
        count = lib.rbd_snap_list(s->image, snaps, &max);
    } while (count == -ERANGE && max < (1 << 20));
    if (count < 0) {
        free(snaps);
        return qimg_error_errno(count, "error listing snapshots");
    }
    struct qimg_snapshot_info *out = count ? qimg_xcalloc((size_t)count, sizeof *out) : NULL;
    for (int i = 0; i < count; i++) {
        out[i].id = qimg_strdup(snaps[i].name);
        out[i].name = qimg_strdup(snaps[i].name);
        out[i].vm_state_size = snaps[i].size;
        out[i].icount = 0;
    }
    if (count > 0)
        lib.rbd_snap_list_end(snaps);
    free(snaps);
    *list = out, *n = (size_t)count;
    return 0;
}

/* qemu keeps snapshot names in 128 bytes */
#define QRBD_SNAP_NAME_MAX 127

static int qrbd_snapshot_create(struct qimg_io *io, const char *name)
{
    struct qrbd_state *s = io->priv;
    if (!name[0])
        return -EINVAL;
    if (strlen(name) > QRBD_SNAP_NAME_MAX)
        return -ERANGE;
    int r = lib.rbd_snap_create(s->image, name);
    if (r < 0) {
        qimg_warn("ERROR: failed to create snap: %s", strerror(-r));
        return r;
    }
    return 0;
}

static int qrbd_snapshot_apply(struct qimg_io *io, const char *name)
{
    struct qrbd_state *s = io->priv;
    int r = lib.rbd_snap_rollback(s->image, name);
    if (r == 0) {
        uint64_t size;
        if (lib.rbd_get_size(s->image, &size) == 0)
            atomic_store(&s->size, size);
    }
    return r;
}

static int qrbd_snapshot_delete(struct qimg_io *io, const char *name)
{
    struct qrbd_state *s = io->priv;
    int r = lib.rbd_snap_remove(s->image, name);
    if (r < 0)
        return qimg_error_errno(r, "Failed to remove the snapshot");
    return 0;
}

static char *qrbd_exact_filename(struct qimg_io *io)
{
    struct qrbd_state *s = io->priv;
    return s && s->named_by_filename ? qimg_strdup(io->filename) : NULL;
}

static int64_t qrbd_cluster_size(struct qimg_io *io)
{
    return (int64_t)((struct qrbd_state *)io->priv)->object_size;
}

static int64_t qrbd_allocated_size(struct qimg_io *io)
{
    return -ENOTSUP;     /* "disk size: unavailable", as qemu */
}

/* ---- open and close ---- */

static void qrbd_state_free(struct qrbd_state *s)
{
    if (s->image)
        lib.rbd_close(s->image);
    if (s->ioctx)
        lib.rados_ioctx_destroy(s->ioctx);
    if (s->cluster)
        lib.rados_shutdown(s->cluster);
    pthread_mutex_destroy(&s->grow_lock);
    pthread_mutex_destroy(&s->changes_lock);
    free(s->changes.off);
    free(s->changes.len);
    free(s->changes_since);
    free(s->pool);
    free(s->namespace);
    free(s->image_name);
    free(s->snapshot);
    free(s);
}

/* QIMG_RBD_STATS=FILE (for tests and benchmarks): at close, a line
 * "IMAGE[@SNAP] read BYTES" is appended to FILE. */
static void qrbd_write_stats(struct qrbd_state *s)
{
    const char *path = getenv("QIMG_RBD_STATS");
    if (!path || !*path || !s->image)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, "%s%s%s read %" PRIu64 "\n", s->image_name, s->snapshot ? "@" : "",
            s->snapshot ? s->snapshot : "", (uint64_t)atomic_load(&s->bytes_read));
    fclose(f);
}

static void qrbd_close(struct qimg_io *io)
{
    if (io->priv)
        qrbd_write_stats(io->priv);
    if (io->priv)
        qrbd_state_free(io->priv);
    io->priv = NULL;
}

static int qrbd_take_names(struct qrbd_state *s, qimg_opts *opts)
{
    const char *pool = NULL, *ns = NULL, *image = NULL, *snap = NULL;
    /* a "filename" in an option tree is an rbd: name, read as qemu does */
    const char *filename = NULL;
    if (qimg_opts_get_string(opts, "filename", &filename) == 1 && !qimg_opts_get(opts, "pool")) {
        qimg_warn("RBD options encoded in the filename as keyvalue pairs is deprecated");
        int r = qrbd_parse_filename(filename, opts);
        if (r < 0)
            return r;
        s->named_by_filename = true;
    }
    qimg_opts_get_string(opts, "pool", &pool);
    qimg_opts_get_string(opts, "namespace", &ns);
    qimg_opts_get_string(opts, "image", &image);
    qimg_opts_get_string(opts, "snapshot", &snap);
    if (!pool)
        return qimg_error(-EINVAL, "Parameter 'pool' is missing");
    if (!image)
        return qimg_error(-EINVAL, "Parameter 'image' is missing");
    s->pool = qimg_strdup(pool);
    s->namespace = qimg_strdup(ns ? ns : "");
    s->image_name = qimg_strdup(image);
    s->snapshot = snap ? qimg_strdup(snap) : NULL;
    return 0;
}

static int qrbd_create_image(struct qrbd_state *s, qimg_opts *opts)
{
    if (s->snapshot)
        return qimg_error(-EINVAL, "Can't use snapshot name for image creation");
    uint64_t order_size = 0;
    int r = qimg_opts_get_size(opts, "cluster_size", &order_size);
    if (r < 0)
        return r;
    int order = 0;
    if (order_size) {
        if (order_size & (order_size - 1))
            return qimg_error(-EINVAL, "obj size needs to be power of 2");
        if (order_size < 4096)
            return qimg_error(-EINVAL, "obj size too small");
        order = __builtin_ctzll(order_size);
    }
    r = lib.rbd_create(s->ioctx, s->image_name, 0, &order);
    if (r < 0)
        return qimg_error_errno(r, "error rbd create");
    return 0;
}

/* The first option no one took (create's cluster_size aside, taken
 * later), in qemu's order. */
static const char *qrbd_unknown_key(qimg_opts *opts, unsigned ioflags)
{
    if (ioflags & QIMG_IO_CREATE) {
        uint64_t unused;
        qimg_opts_get_size(opts, "cluster_size", &unused);
    }
    return qimg_opts_first_unused_qemu(opts);
}

static int qrbd_open(struct qimg_io *io, qimg_opts *opts)
{
    int r = qrbd_lib();
    if (r < 0)
        return r;
    struct qrbd_state *s = qimg_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->grow_lock, NULL);
    pthread_mutex_init(&s->changes_lock, NULL);
    io->priv = s;
    r = qrbd_take_names(s, opts);
    if (r == 0)
        r = qrbd_connect(s, opts, io->flags);
    /* qemu reads rbd's options strictly: one it does not know fails here */
    const char *unknown = r == 0 ? qrbd_unknown_key(opts, io->flags) : NULL;
    if (unknown)
        r = qimg_error(-EINVAL, "Parameter '%s' is unexpected", unknown);
    if (r == 0 && (io->flags & QIMG_IO_CREATE))
        r = qrbd_create_image(s, opts);
    if (r < 0)
        return r;
    if (io->flags & QIMG_IO_RDWR) {
        if (s->snapshot)
            return qimg_error(-EACCES, "rbd snapshots are read-only");
        r = lib.rbd_open(s->ioctx, s->image_name, &s->image, NULL);
    } else {
        r = lib.rbd_open_read_only(s->ioctx, s->image_name, &s->image, s->snapshot);
    }
    if (r < 0) {
        s->image = NULL;
        return qimg_error_errno(r, "error reading header from %s", s->image_name);
    }
    rbd_image_info_t st;
    uint64_t size, features = 0, flags = 0;
    r = lib.rbd_stat(s->image, &st, sizeof st);
    if (r == 0)
        r = lib.rbd_get_size(s->image, &size);
    if (r < 0)
        return qimg_error_errno(r, "error getting image size from %s", s->image_name);
    atomic_store(&s->size, size);
    s->object_size = st.obj_size ? st.obj_size : 4 << 20;
    /* named by its options, as qemu names it (json:{"pool": ...}), unless
     * a "filename" named it */
    char *json = s->named_by_filename ? NULL : qimg_node_json_name(opts, NULL);
    if (json) {
        free(io->filename);
        io->filename = json;
    }
    if (lib.rbd_get_features(s->image, &features) == 0 && lib.rbd_get_flags(s->image, &flags) == 0)
        s->fast_diff = (features & RBD_FEATURE_FAST_DIFF) && (features & RBD_FEATURE_OBJECT_MAP) &&
                       !(flags & RBD_FLAG_FAST_DIFF_INVALID);
    return 0;
}

#else  /* !HAVE_LIBRBD */

static int qrbd_open(struct qimg_io *io, qimg_opts *opts)
{
    return qimg_error(-ENOTSUP, "This qimg was built without librbd: rbd images cannot be opened");
}

static int qrbd_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off) { return -ENOTSUP; }
static int qrbd_get_size(struct qimg_io *io, uint64_t *size) { return -ENOTSUP; }
static void qrbd_close(struct qimg_io *io) { }
#define qrbd_pwrite NULL
#define qrbd_zero NULL
#define qrbd_discard NULL
#define qrbd_flush NULL
#define qrbd_truncate NULL
#define qrbd_extent NULL
#define qrbd_allocated_size NULL
#define qrbd_cluster_size NULL
#define qrbd_exact_filename NULL
#define qrbd_snapshot_list NULL
#define qrbd_snapshot_create NULL
#define qrbd_snapshot_apply NULL
#define qrbd_snapshot_delete NULL
#define qrbd_changed_extent NULL

#endif

const struct qimg_io_ops qimg_io_rbd_ops = {
    .name           = "rbd",
    .prefix         = "rbd:",
    .parse_filename = qrbd_parse_filename,
    .can_create     = true,
    .open           = qrbd_open,
    .pread          = qrbd_pread,
    .pwrite         = qrbd_pwrite,
    .zero           = qrbd_zero,
    .discard        = qrbd_discard,
    .flush          = qrbd_flush,
    .get_size       = qrbd_get_size,
    .truncate       = qrbd_truncate,
    .extent         = qrbd_extent,
    .allocated_size = qrbd_allocated_size,
    .close          = qrbd_close,
    .exact_filename = qrbd_exact_filename,
    .json_name      = true,
    .create_opts    = qrbd_create_opts,
    .cluster_size   = qrbd_cluster_size,
    .snapshot_list  = qrbd_snapshot_list,
    .snapshot_create = qrbd_snapshot_create,
    .snapshot_apply = qrbd_snapshot_apply,
    .snapshot_delete = qrbd_snapshot_delete,
    .changed_extent = qrbd_changed_extent,
    .unordered_writes = true,
    .remote         = true,
};
