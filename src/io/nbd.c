/* qimg - the "nbd" storage backend: an NBD export through libnbd, named
 * as qemu names it (nbd-name.c) and answering as qemu's nbd driver does:
 * block status from "base:allocation" (or the context x-dirty-bitmap
 * names: a qemu dirty bitmap, qemu:allocation-depth), write, zero
 * (NBD_CMD_WRITE_ZEROES with NO_HOLE unless unmapping is allowed, FAST_ZERO
 * for NO_FALLBACK), trim, flush; the size is fixed ("Cannot resize NBD
 * nodes"); "disk size" is unavailable.
 *
 * Threads: a libnbd handle is thread-safe but runs one call at a time.
 * Reads and writes are therefore aio commands: the threads sharing a
 * connection keep their requests in flight together (struct nbd_conn).
 * When the server advertises multi-conn (every connection sees the others'
 * writes, a flush on one covers all), a thread that finds every connection
 * in use opens another, up to QIMG_NBD_MAX_CONNS: the pool grows to the
 * number of threads that really run requests at once (convert's workers).
 * Otherwise there is one connection, shared. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "nbd.h"

#ifdef HAVE_LIBNBD
#include "nbd-dl.h"
#endif

#define QIMG_NBD_MAX_CONNS 16
/* qemu's largest request (NBD_MAX_BUFFER_SIZE) */
#define NBD_MAX_REQUEST (32u << 20)
/* A trim or block status request carries a 32-bit length. */
#define NBD_MAX_LEN32 ((uint64_t)1 << 30)

enum { NBD_STATE_HOLE = 1, NBD_STATE_ZERO = 2 };

#ifdef HAVE_LIBNBD
/* One connection.  Reads and writes are libnbd aio commands, so the
 * threads that share a connection keep several requests in flight; one of
 * them at a time ("polling") drives the socket for all, the others wait
 * for it on cv.  A completion wakes the poller through the eventfd. */
struct nbd_conn {
    struct nbd_handle *h;
    unsigned users;             /* threads using it now (the pool's lock) */
    pthread_mutex_t m;
    pthread_cond_t cv;
    bool polling;
    int wake;                   /* eventfd */
};
#endif

struct nbd_state {
    struct qimg_nbd_addr addr;
    bool tls_scheme;            /* named nbds://: TLS required */
    char *tls_dir;              /* x509 certificates (tls-creds-x509 dir) */
    char *tls_psk_file;         /* tls-creds-psk: DIR/keys.psk */
    char *tls_username;
    bool tls_verify;
    bool tls;
    char *context;              /* meta context asked for */
    bool alloc_depth;           /* context is qemu:allocation-depth */
    bool created;               /* opened to create an image on it */
    uint64_t open_timeout;      /* seconds to keep trying the first connection */
    char *name;                 /* qemu's name for the node, or NULL */

    uint64_t size;
    uint32_t max_request;
    uint32_t min_block;         /* the server's minimum block size (1: none) */
    bool read_only, can_flush, can_trim, can_zero, can_fast_zero, multi_conn, has_context;
    bool can_cache;
    bool can_fua;               /* NBD_CMD_FLAG_FUA on writes */
    _Atomic uint64_t prefetched;    /* end of what NBD_CMD_CACHE asked for */

#ifdef HAVE_LIBNBD
    pthread_mutex_t lock;
    pthread_mutex_t rmw;        /* unaligned writes: read-modify-write one at a time */
    int fd;                     /* server.type=fd until libnbd takes it, else -1 */
    uint32_t vsock_cid, vsock_port;
    struct nbd_conn conn[QIMG_NBD_MAX_CONNS];
    int nconn, max_conn;
    bool connecting;
#endif
};

/* The options' part of the state, which both builds fill (nb_options). */
static void free_state(struct nbd_state *s)
{
    qimg_nbd_addr_free(&s->addr);
    free(s->tls_dir);
    free(s->tls_psk_file);
    free(s->tls_username);
    free(s->context);
    free(s->name);
    free(s);
}

static void nb_close(struct qimg_io *io);

static int nb_parse_filename(const char *filename, qimg_opts *opts)
{
    return qimg_nbd_parse_name(filename, &opts);
}

static char *nb_exact_filename(struct qimg_io *io)
{
    struct nbd_state *s = io->priv;
    return s && s->name ? qimg_strdup(s->name) : NULL;
}

static char *nb_dirname(struct qimg_io *io)
{
    qimg_error(-EINVAL, "Cannot generate a base directory for NBD nodes");
    return NULL;
}

static int nb_get_size(struct qimg_io *io, uint64_t *size)
{
    *size = ((struct nbd_state *)io->priv)->size;
    return 0;
}

/* qemu's truncate: the size is what the server gives.  Creating an image
 * on an export (not exact) may ask for less, never more; a resize must
 * keep the size. */
static int nb_truncate(struct qimg_io *io, uint64_t size)
{
    struct nbd_state *s = io->priv;
    if (size != s->size && !s->created)
        return qimg_error(-ENOTSUP, "Cannot resize NBD nodes");
    if (size > s->size)
        return qimg_error(-EINVAL, "Cannot grow NBD nodes");
    return 0;
}

static bool nb_same(struct qimg_io *a, struct qimg_io *b)
{
    struct nbd_state *x = a->priv, *y = b->priv;
    return x->name && y->name && strcmp(x->name, y->name) == 0;
}

/* ---- options ---- */

/* tls-creds=ID: an --object tls-creds-x509 / tls-creds-psk of the command
 * line, client side. */
static int tls_options(struct nbd_state *s, qimg_opts *opts)
{
    const char *id = NULL, *host = NULL;
    int r = qimg_opts_get_string(opts, "tls-creds", &id);
    if (r >= 0)
        r = qimg_opts_get_string(opts, "tls-hostname", &host);   /* see below */
    if (r < 0)
        return r;
    if (!id && s->tls_scheme)
        id = qimg_tls_creds_default();
    if (!id) {
        s->tls = s->tls_scheme;     /* nbds:// with no object: libnbd's default certificates */
        s->tls_verify = true;
        return 0;
    }
    struct qimg_tls_creds c;
    r = qimg_tls_creds_lookup(id, &c);
    if (r < 0)
        return r;
    if (c.endpoint_server)
        return qimg_error(-EINVAL, "Expected TLS credentials for a client endpoint");
    s->tls = true;
    s->tls_verify = c.verify_peer;
    if (c.psk) {
        s->tls_psk_file = qimg_asprintf("%s/keys.psk", c.dir ? c.dir : "");
        s->tls_username = qimg_strdup(c.username ? c.username : "qemu");
    } else if (c.dir) {
        s->tls_dir = qimg_strdup(c.dir);
    }
    return 0;
}

static int nb_options(struct qimg_io *io, struct nbd_state *s, qimg_opts *opts)
{
    const char *unused;
    /* a name given as a string was parsed into the other keys */
    qimg_opts_get_string(opts, "filename", &unused);
    int r = qimg_opts_get_bool(opts, "x-tls", &s->tls_scheme);
    if (r >= 0)
        r = qimg_nbd_addr_from_opts(opts, &s->addr);
    if (r >= 0)
        r = tls_options(s, opts);
    const char *bitmap = NULL;
    if (r >= 0)
        r = qimg_opts_get_string(opts, "x-dirty-bitmap", &bitmap);
    if (r >= 0 && bitmap && strlen(bitmap) > QIMG_NBD_MAX_STRING)
        r = qimg_error(-EINVAL, "x-dirty-bitmap query too long to send to server");
    uint64_t number;
    if (r >= 0)
        r = qimg_opts_get_number(opts, "reconnect-delay", &number);   /* nothing to reconnect */
    if (r >= 0)
        r = qimg_opts_get_number(opts, "open-timeout", &s->open_timeout);
    if (r < 0)
        return r;
    s->context = qimg_strdup(bitmap ? bitmap : "base:allocation");
    s->alloc_depth = bitmap && strcmp(bitmap, "qemu:allocation-depth") == 0;
    s->created = (io->flags & QIMG_IO_CREATE) != 0;
    s->name = qimg_nbd_addr_name(&s->addr, s->tls_scheme);
    return 0;
}

#ifdef HAVE_LIBNBD

static void conn_init(struct nbd_conn *cn);
static void conn_fini(struct nbd_conn *cn);

/* ---- connecting ---- */

/* libnbd reports what the server said about a refused option only in its
 * debug output: keep it for qemu's "server reported: ..." line. */
struct handshake_log { char msg[512]; char state[64]; };

static int debug_cb(void *opaque, const char *context, const char *text)
{
    struct handshake_log *log = opaque;
    const char *m = strstr(text, "server error message: ");
    if (m)
        snprintf(log->msg, sizeof log->msg, "%s", m + strlen("server error message: "));
    /* the handshake's state machine: where it was when it failed */
    const char *t = strstr(text, "transition: ");
    const char *to = t ? strstr(t, " -> ") : NULL;
    if (to && strcmp(to + 4, "DEAD") != 0)
        snprintf(log->state, sizeof log->state, "%s", to + 4);
    return 0;
}

/* qemu's message for a failed connection or handshake. */
static int connect_error(struct nbd_state *s, const struct handshake_log *log)
{
    int err = nbd_get_errno() ? nbd_get_errno() : EIO;
    const char *msg = nbd_get_error() ? nbd_get_error() : "";
    const char *hint = log->msg[0] ? qimg_asprintf("\nserver reported: %s", log->msg) : qimg_strdup("");
    int r;
    if (strstr(msg, ": connect: ") || strstr(msg, ": connect:")) {
        if (s->addr.transport == QIMG_NBD_UNIX)
            r = qimg_error(-err, "Failed to connect to '%s': %s", s->addr.path, strerror(err));
        else if (s->addr.transport == QIMG_NBD_VSOCK)
            r = qimg_error(-err, "Failed to connect to '%s:%s': %s", s->addr.cid, s->addr.port, strerror(err));
        else
            r = qimg_error(-err, "Failed to connect to '%s:%s': %s", s->addr.host, s->addr.port, strerror(err));
    } else if (s->addr.transport == QIMG_NBD_VSOCK && strstr(msg, ": socket: ")) {
        /* a kernel without vsock */
        r = qimg_error(-err, "Failed to create socket family %d: %s", AF_VSOCK, strerror(err));
    } else if (strcmp(log->state, "MAGIC.RECV_MAGIC") == 0 && strstr(msg, "recv: ")) {
        /* nothing (or less than the magic) came from the server */
        r = strstr(msg, "server disconnected unexpectedly")
            ? qimg_error(-err, "Failed to read initial magic: Unexpected end-of-file before all data were read")
            : qimg_error(-err, "Failed to read initial magic: Unable to read from socket: %s", strerror(err));
    } else if (strstr(msg, "server has no export named")) {
        r = qimg_error(-err, "Requested export not available%s", hint);
    } else if (strstr(msg, "server requires TLS encryption first")) {
        r = qimg_error(-err, "TLS negotiation required before option 7 (go)\n"
                       "Did you forget a valid tls-creds?%s", hint);
    } else {
        /* libnbd's text without the name of the call */
        const char *colon = strstr(msg, ": ");
        r = qimg_error(-err, "%s%s", colon && strncmp(msg, "nbd_", 4) == 0 ? colon + 2 : msg, hint);
    }
    free((char *)hint);
    return r;
}

/* qemu resolves the name first and says so when it cannot. */
static int resolve(struct nbd_state *s)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_ADDRCONFIG | AI_V4MAPPED };
    struct addrinfo *res = NULL;
    int g = getaddrinfo(s->addr.host, s->addr.port, &hints, &res);
    if (res)
        freeaddrinfo(res);
    if (g != 0)
        return qimg_error(-EINVAL, "address resolution failed for %s:%s: %s", s->addr.host,
                          s->addr.port, gai_strerror(g));
    return 0;
}

/* qemu_strtoi: an int in decimal, leading blanks and a sign allowed,
 * nothing after it. */
static bool parse_int(const char *text, int *out, int *err)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    *err = errno;
    if (errno == 0 && (v > INT_MAX || v < INT_MIN))
        *err = ERANGE;
    if (*err || end == text || *end)
        return false;
    *out = (int)v;
    return true;
}

/* qemu_strtoui as qemu 7.2 reads a vsock cid or port: no sign, at most
 * UINT32_MAX. */
static bool parse_u32(const char *text, uint32_t *out)
{
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '-')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || end == p || *end || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* server.type=fd: str is the number of a socket this process inherited
 * (qemu-img has no monitor to pass one).  Like qemu, a descriptor that is
 * not a socket is closed. */
static int take_fd(struct nbd_state *s)
{
    int fd, err;
    if (!parse_int(s->addr.fd_str, &fd, &err)) {
        if (err)
            return qimg_error(-err, "Unable to parse FD number %s: %s", s->addr.fd_str, strerror(err));
        return qimg_error(-EINVAL, "Unable to parse FD number %s", s->addr.fd_str);
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return qimg_error(-EINVAL, "File descriptor '%s' is not a socket", s->addr.fd_str);
    }
    s->fd = fd;
    return 0;
}

/* What the address needs before connecting: a host name resolved, a
 * descriptor or vsock numbers parsed. */
static int prepare_address(struct nbd_state *s)
{
    switch (s->addr.transport) {
    case QIMG_NBD_INET:
        return resolve(s);
    case QIMG_NBD_UNIX:
        return 0;
    case QIMG_NBD_FD:
        return take_fd(s);
    case QIMG_NBD_VSOCK:
        if (!parse_u32(s->addr.cid, &s->vsock_cid))
            return qimg_error(-EINVAL, "Failed to parse cid '%s'", s->addr.cid);
        if (!parse_u32(s->addr.port, &s->vsock_port))
            return qimg_error(-EINVAL, "Failed to parse port '%s'", s->addr.port);
        return 0;
    }
    return 0;
}

static int setup_tls(struct nbd_state *s, struct nbd_handle *h)
{
    if (!s->tls)
        return 0;
    if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) < 0 ||
        (s->tls_dir && nbd_set_tls_certificates(h, s->tls_dir) < 0) ||
        (s->tls_psk_file && nbd_set_tls_psk_file(h, s->tls_psk_file) < 0) ||
        (s->tls_username && nbd_set_tls_username(h, s->tls_username) < 0) ||
        nbd_set_tls_verify_peer(h, s->tls_verify) < 0)
        return qimg_error(-ENOTSUP, "TLS is not available: %s", nbd_get_error());
    return 0;
}

/* A further connection of the pool: a server that advertised multi-conn
 * but takes fewer clients than we ask for may leave it waiting for its
 * greeting; give up after a few seconds (the pool stops growing). */
#define EXTRA_CONNECT_MS 5000

/* The descriptor of server.type=fd goes to libnbd, which owns it from
 * then on (nbd_close closes it): there is one connection. */
static int start_connect(struct nbd_state *s, struct nbd_handle *h, bool wait)
{
    int fd = s->fd;
    switch (s->addr.transport) {
    case QIMG_NBD_UNIX:
        return wait ? nbd_connect_unix(h, s->addr.path) : nbd_aio_connect_unix(h, s->addr.path);
    case QIMG_NBD_INET:
        return wait ? nbd_connect_tcp(h, s->addr.host, s->addr.port)
                    : nbd_aio_connect_tcp(h, s->addr.host, s->addr.port);
    case QIMG_NBD_VSOCK:
        return wait ? nbd_connect_vsock(h, s->vsock_cid, s->vsock_port)
                    : nbd_aio_connect_vsock(h, s->vsock_cid, s->vsock_port);
    case QIMG_NBD_FD:
        s->fd = -1;
        return wait ? nbd_connect_socket(h, fd) : nbd_aio_connect_socket(h, fd);
    }
    return -1;
}

static int connect_bounded(struct nbd_state *s, struct nbd_handle *h, int timeout_ms)
{
    if (timeout_ms < 0)
        return start_connect(s, h, true);
    int c = start_connect(s, h, false);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (c == 0 && nbd_aio_is_connecting(h) == 1) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long spent = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (spent >= timeout_ms)
            return -1;
        if (nbd_poll(h, (int)(timeout_ms - spent)) < 0)
            c = -1;
    }
    return c == 0 && nbd_aio_is_ready(h) == 1 ? 0 : -1;
}

static int new_handle(struct nbd_state *s, struct nbd_handle **out, int timeout_ms)
{
    struct nbd_handle *h = nbd_create();
    if (!h)
        return qimg_error(-ENOMEM, "%s", nbd_get_error());
    struct handshake_log log = { { 0 }, { 0 } };
    int r = 0;
    if (nbd_set_export_name(h, s->addr.export ? s->addr.export : "") < 0 ||
        nbd_add_meta_context(h, s->context) < 0)
        r = qimg_error(-EINVAL, "%s", nbd_get_error());
    if (r == 0)
        r = setup_tls(s, h);
    if (r == 0) {
        nbd_set_debug_callback(h, (nbd_debug_callback){ .callback = debug_cb, .user_data = &log });
        nbd_set_debug(h, true);
        if (connect_bounded(s, h, timeout_ms) < 0)
            r = connect_error(s, &log);
        nbd_set_debug(h, false);
        nbd_clear_debug_callback(h);
    }
    if (r < 0) {
        nbd_close(h);
        return r;
    }
    *out = h;
    return 0;
}

/* open-timeout=N: a server that is not there yet (refused, no socket)
 * is tried again every 100 ms for N seconds, as qemu does. */
static int first_connection(struct nbd_state *s)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int r = new_handle(s, &s->conn[0].h, -1);
        if ((r != -ECONNREFUSED && r != -ENOENT) || s->addr.transport == QIMG_NBD_FD)
            return r;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((uint64_t)(t.tv_sec - t0.tv_sec) >= QIMG_MIN(s->open_timeout, (uint64_t)86400))
            return r;
        nanosleep(&(struct timespec){ .tv_nsec = 100000000 }, NULL);
    }
}

/* What the first connection learns about the export. */
static int learn_export(struct qimg_io *io, struct nbd_state *s, struct nbd_handle *h)
{
    int64_t size = nbd_get_size(h);
    if (size < 0)
        return qimg_error(-EIO, "%s", nbd_get_error());
    s->size = (uint64_t)size;
    s->read_only = nbd_is_read_only(h) == 1;
    s->can_flush = nbd_can_flush(h) == 1;
    s->can_trim = nbd_can_trim(h) == 1;
    s->can_zero = nbd_can_zero(h) == 1;
    s->can_fast_zero = nbd_can_fast_zero(h) == 1;
    s->multi_conn = nbd_can_multi_conn(h) == 1;
    s->can_cache = nbd_can_cache(h) == 1;
    s->can_fua = nbd_can_fua(h) == 1;
    s->has_context = nbd_can_meta_context(h, s->context) == 1;
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    s->max_request = max > 0 && max < NBD_MAX_REQUEST ? (uint32_t)max : NBD_MAX_REQUEST;
    int64_t min = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    s->min_block = min > 1 && min <= 65536 && qimg_is_pow2((uint64_t)min) ? (uint32_t)min : 1;
    s->max_request = (uint32_t)qimg_round_down(s->max_request, s->min_block);
    if ((io->flags & QIMG_IO_RDWR) && s->read_only)
        return qimg_error(-EACCES, "Could not open image: Permission denied");
    if (strcmp(s->context, "base:allocation") != 0 && !s->has_context)
        return qimg_error(-EINVAL, "Could not open image: Invalid argument");
    s->max_conn = s->multi_conn && s->addr.transport != QIMG_NBD_FD ? QIMG_NBD_MAX_CONNS : 1;
    return 0;
}

static int nb_open(struct qimg_io *io, qimg_opts *opts)
{
    int r = qimg_nbd_load();
    if (r < 0)
        return r;
    struct nbd_state *s = qimg_xcalloc(1, sizeof *s);
    io->priv = s;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->rmw, NULL);
    s->fd = -1;
    r = nb_options(io, s, opts);
    if (r == 0)
        r = prepare_address(s);
    if (r == 0)
        r = first_connection(s);
    if (r < 0)
        return r;
    conn_init(&s->conn[0]);
    s->nconn = 1;
    /* the node is named as qemu names it (map's file column): an fd or
     * vsock address by its options */
    char *name = s->name ? qimg_strdup(s->name) : qimg_node_json_name(opts, NULL);
    if (name) {
        free(io->filename);
        io->filename = name;
    }
    return learn_export(io, s, s->conn[0].h);
}

static void nb_close(struct qimg_io *io)
{
    struct nbd_state *s = io->priv;
    if (!s)
        return;
    for (int i = 0; i < s->nconn; i++) {
        nbd_shutdown(s->conn[i].h, 0);
        nbd_close(s->conn[i].h);
        conn_fini(&s->conn[i]);
    }
    if (s->fd >= 0)
        close(s->fd);       /* taken but never handed to libnbd */
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->rmw);
    free_state(s);
}

static int request_error(void);

/* ---- the pool ---- */

static void conn_init(struct nbd_conn *cn)
{
    pthread_mutex_init(&cn->m, NULL);
    pthread_cond_init(&cn->cv, NULL);
    cn->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

static void conn_fini(struct nbd_conn *cn)
{
    pthread_mutex_destroy(&cn->m);
    pthread_cond_destroy(&cn->cv);
    if (cn->wake >= 0)
        close(cn->wake);
}

/* The connection for this thread's next request: an unused one; else a
 * new one while the server allows more; else the least used. */
static int borrow(struct nbd_state *s)
{
    pthread_mutex_lock(&s->lock);
    int best = 0;
    for (int i = 1; i < s->nconn; i++)
        if (s->conn[i].users < s->conn[best].users)
            best = i;
    if (s->conn[best].users > 0 && s->nconn < s->max_conn && !s->connecting) {
        s->connecting = true;
        pthread_mutex_unlock(&s->lock);
        struct nbd_handle *h = NULL;
        int r = new_handle(s, &h, EXTRA_CONNECT_MS);
        pthread_mutex_lock(&s->lock);
        s->connecting = false;
        if (r == 0) {
            best = s->nconn;
            s->conn[best].h = h;
            conn_init(&s->conn[best]);
            s->nconn++;
        } else {
            s->max_conn = s->nconn;     /* no more: share what there is */
            qimg_error_clear();
        }
    }
    s->conn[best].users++;
    pthread_mutex_unlock(&s->lock);
    return best;
}

static void give_back(struct nbd_state *s, int i)
{
    pthread_mutex_lock(&s->lock);
    s->conn[i].users--;
    pthread_mutex_unlock(&s->lock);
}

static void wake_poller(struct nbd_conn *cn)
{
    uint64_t one = 1;
    if (write(cn->wake, &one, sizeof one) < 0) { /* already signalled */ }
}

struct aio_wait {
    struct nbd_conn *cn;
    int err;
    atomic_int done;
};

static int aio_done(void *opaque, int *error)
{
    struct aio_wait *w = opaque;
    struct nbd_conn *cn = w->cn;
    w->err = *error;
    atomic_store(&w->done, 1);      /* w may be gone from here on */
    wake_poller(cn);
    return 1;
}

/* Drive the socket once: wait for it (or a wake-up) and let libnbd read
 * or write what it can.  Completions run from here. */
static void poll_once(struct nbd_conn *cn)
{
    int dir = nbd_aio_get_direction(cn->h);
    struct pollfd p[2] = {
        { .fd = nbd_aio_get_fd(cn->h),
          .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                            ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)) },
        { .fd = cn->wake, .events = POLLIN },
    };
    if (p[0].fd < 0 || poll(p, 2, -1) <= 0)
        return;
    if (p[1].revents & POLLIN) {
        uint64_t v;
        if (read(cn->wake, &v, sizeof v) < 0) { /* nothing to drain */ }
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
        nbd_aio_notify_read(cn->h);
    else if (p[0].revents & POLLOUT)
        nbd_aio_notify_write(cn->h);
}

/* One command on a connection.  Every command goes through libnbd's aio
 * calls: a synchronous call would run its own poll on the socket and race
 * with the thread that polls for the others. */
enum req_op { REQ_READ, REQ_WRITE, REQ_ZERO, REQ_TRIM, REQ_FLUSH, REQ_STATUS };
struct nbd_req {
    enum req_op op;
    void *buf;
    uint64_t len, off;
    uint32_t flags;
    nbd_extent_callback extents;
};

static int64_t submit(struct nbd_conn *cn, const struct nbd_req *q, nbd_completion_callback cb)
{
    switch (q->op) {
    case REQ_READ:   return nbd_aio_pread(cn->h, q->buf, q->len, q->off, cb, q->flags);
    case REQ_WRITE:  return nbd_aio_pwrite(cn->h, q->buf, q->len, q->off, cb, q->flags);
    case REQ_ZERO:   return nbd_aio_zero(cn->h, q->len, q->off, cb, q->flags);
    case REQ_TRIM:   return nbd_aio_trim(cn->h, q->len, q->off, cb, q->flags);
    case REQ_FLUSH:  return nbd_aio_flush(cn->h, cb, q->flags);
    case REQ_STATUS: return nbd_aio_block_status(cn->h, q->len, q->off, q->extents, cb, q->flags);
    }
    return -1;
}

/* Run q and wait for it: 0, or a negative errno with the error set. */
static int conn_run(struct nbd_conn *cn, const struct nbd_req *q)
{
    struct aio_wait *w = qimg_xcalloc(1, sizeof *w);
    w->cn = cn;
    nbd_completion_callback cb = { .callback = aio_done, .user_data = w };
    pthread_mutex_lock(&cn->m);
    int64_t cookie = submit(cn, q, cb);
    if (cookie < 0) {
        pthread_mutex_unlock(&cn->m);
        free(w);
        return request_error();
    }
    if (cn->polling)
        wake_poller(cn);        /* it may have to write our request */
    bool dead = false;
    while (!atomic_load(&w->done) && !dead) {
        if (cn->polling) {
            pthread_cond_wait(&cn->cv, &cn->m);
            continue;
        }
        cn->polling = true;
        pthread_mutex_unlock(&cn->m);
        poll_once(cn);
        dead = nbd_aio_is_dead(cn->h) == 1 || nbd_aio_is_closed(cn->h) == 1;
        pthread_mutex_lock(&cn->m);
        cn->polling = false;
        pthread_cond_broadcast(&cn->cv);
    }
    pthread_mutex_unlock(&cn->m);
    if (!atomic_load(&w->done))     /* libnbd retires commands of a dead connection */
        return qimg_error(-EIO, "NBD connection lost");   /* w left: a late callback may use it */
    int err = w->err;
    free(w);
    if (err)
        return qimg_error(-err, "NBD request failed: %s", strerror(err));
    return 0;
}

static int retire(void *opaque, int *error)
{
    return 1;
}

/* Reads that move forward: ask the server to read ahead of the furthest
 * one (NBD_CMD_CACHE, where the server has it: nbdkit's and qemu-nbd's
 * file exports turn it into a kernel read-ahead).  Parallel readers over
 * several connections read in a stride no server-side read-ahead
 * recognises; this gives a cold source its sequential read-ahead back.
 * Fire and forget: the reply is taken by whoever polls next. */
#define PREFETCH_WINDOW (16u << 20)

static void prefetch(struct nbd_state *s, struct nbd_conn *cn, uint64_t end)
{
    uint64_t have = atomic_load(&s->prefetched);
    if (end + PREFETCH_WINDOW / 2 <= have || have >= s->size)
        return;
    uint64_t from = QIMG_MAX(have, end);
    uint64_t to = QIMG_MIN(end + PREFETCH_WINDOW, s->size);
    from = qimg_round_down(from, s->min_block);
    to = qimg_round_down(to + s->min_block - 1, s->min_block);
    if (to > s->size || to <= from || !atomic_compare_exchange_strong(&s->prefetched, &have, to))
        return;
    pthread_mutex_lock(&cn->m);
    if (nbd_aio_cache(cn->h, to - from, from, (nbd_completion_callback){ .callback = retire }, 0) >= 0 &&
        cn->polling)
        wake_poller(cn);
    pthread_mutex_unlock(&cn->m);
}

static int conn_io(struct nbd_conn *cn, bool is_write, void *buf, size_t len, uint64_t off,
                   uint32_t flags)
{
    struct nbd_req q = { .op = is_write ? REQ_WRITE : REQ_READ, .buf = buf, .len = len, .off = off,
                         .flags = flags };
    return conn_run(cn, &q);
}

static int request_error(void)
{
    int err = nbd_get_errno() ? nbd_get_errno() : EIO;
    const char *msg = nbd_get_error();
    return qimg_error(-err, "%s", msg ? msg : strerror(err));
}

/* ---- I/O ---- */

/* [off, off+len) inside the export, in requests of at most max_request;
 * aligned to min_block when the server asks for it. */
static int read_aligned(struct nbd_state *s, int c, uint8_t *p, size_t len, uint64_t off)
{
    for (size_t done = 0; done < len;) {
        size_t n = QIMG_MIN(len - done, (size_t)s->max_request);
        int r = conn_io(&s->conn[c], false, p + done, n, off + done, 0);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

static int write_aligned(struct nbd_state *s, int c, const uint8_t *p, size_t len, uint64_t off,
                         uint32_t flags)
{
    for (size_t done = 0; done < len;) {
        size_t n = QIMG_MIN(len - done, (size_t)s->max_request);
        int r = conn_io(&s->conn[c], true, (void *)(p + done), n, off + done, flags);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

/* Write-through (-t writethrough, directsync): as qemu, a write or a zero
 * is on stable storage when it completes: NBD_CMD_FLAG_FUA where the server
 * takes it, else a flush after it.  A trim is advice and gets neither. */
static bool write_through(const struct qimg_io *io)
{
    return (io->flags & QIMG_IO_DSYNC) != 0;
}

static uint32_t fua_flag(const struct qimg_io *io)
{
    const struct nbd_state *s = io->priv;
    return write_through(io) && s->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
}

/* After a write that carried no FUA: the flush that stands for it. */
static int flush_if_write_through(struct qimg_io *io, int c)
{
    struct nbd_state *s = io->priv;
    if (!write_through(io) || s->can_fua || !s->can_flush)
        return 0;
    struct nbd_req q = { .op = REQ_FLUSH };
    return conn_run(&s->conn[c], &q);
}

static bool unaligned(const struct nbd_state *s, uint64_t off, uint64_t len)
{
    return !qimg_is_aligned(off, s->min_block) || !qimg_is_aligned(len, s->min_block);
}

/* The whole blocks around [off, off+len) (the export's size is a multiple
 * of the block size, as the protocol says). */
static void widen(const struct nbd_state *s, uint64_t off, uint64_t len, uint64_t *aoff, size_t *alen)
{
    *aoff = qimg_round_down(off, s->min_block);
    uint64_t end = QIMG_MIN(qimg_round_down(off + len + s->min_block - 1, s->min_block), s->size);
    *alen = (size_t)(end - *aoff);
}

static int nb_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct nbd_state *s = io->priv;
    uint8_t *p = buf;
    /* past the end reads as zeros */
    size_t inside = off >= s->size ? 0 : (size_t)QIMG_MIN((uint64_t)len, s->size - off);
    memset(p + inside, 0, len - inside);
    if (inside == 0)
        return 0;
    int c = borrow(s);
    if (s->can_cache)
        prefetch(s, &s->conn[c], off + inside);
    int r;
    if (unaligned(s, off, inside)) {
        uint64_t aoff;
        size_t alen;
        widen(s, off, inside, &aoff, &alen);
        uint8_t *bounce = qimg_xmalloc(alen);
        r = read_aligned(s, c, bounce, alen, aoff);
        if (r == 0)
            memcpy(p, bounce + (off - aoff), inside);
        free(bounce);
    } else {
        r = read_aligned(s, c, p, inside, off);
    }
    give_back(s, c);
    return r;
}

static int nb_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    struct nbd_state *s = io->priv;
    if (!qimg_range_ok(off, len, s->size))
        return qimg_error(-EINVAL, "Write beyond the end of the NBD export");
    if (len == 0)
        return 0;
    int c = borrow(s);
    int r;
    if (unaligned(s, off, len)) {
        uint64_t aoff;
        size_t alen;
        widen(s, off, len, &aoff, &alen);
        uint8_t *bounce = qimg_xmalloc(alen);
        pthread_mutex_lock(&s->rmw);
        r = read_aligned(s, c, bounce, alen, aoff);
        if (r == 0) {
            memcpy(bounce + (off - aoff), buf, len);
            r = write_aligned(s, c, bounce, alen, aoff, fua_flag(io));
        }
        pthread_mutex_unlock(&s->rmw);
        free(bounce);
    } else {
        r = write_aligned(s, c, buf, len, off, fua_flag(io));
    }
    if (r == 0)
        r = flush_if_write_through(io, c);
    give_back(s, c);
    return r;
}

static int nb_zero(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags)
{
    struct nbd_state *s = io->priv;
    if (!qimg_range_ok(off, len, s->size))
        return qimg_error(-EINVAL, "Write beyond the end of the NBD export");
    bool fast = flags & QIMG_IO_ZERO_NO_FALLBACK;
    if (!s->can_zero || (fast && !s->can_fast_zero) || unaligned(s, off, len))
        return fast ? -ENOTSUP : qimg_io_write_zero_buffers(io, off, len);
    uint32_t cmd = (flags & QIMG_IO_ZERO_MAY_UNMAP) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;
    if (fast)
        cmd |= LIBNBD_CMD_FLAG_FAST_ZERO;
    cmd |= fua_flag(io);
    int c = borrow(s);
    int r = 0;
    while (r == 0 && len > 0) {
        uint64_t n = QIMG_MIN(len, (uint64_t)s->max_request);
        struct nbd_req q = { .op = REQ_ZERO, .len = n, .off = off, .flags = cmd };
        r = conn_run(&s->conn[c], &q);
        if (fast && (r == -ENOTSUP || r == -EOPNOTSUPP)) {
            qimg_error_clear();
            r = -ENOTSUP;
        }
        off += n, len -= n;
    }
    if (r == 0)
        r = flush_if_write_through(io, c);
    give_back(s, c);
    return r;
}

static int nb_discard(struct qimg_io *io, uint64_t off, uint64_t len)
{
    struct nbd_state *s = io->priv;
    if (!s->can_trim || off >= s->size)
        return 0;
    len = QIMG_MIN(len, s->size - off);
    /* only the whole blocks inside the range: a discard is advice */
    uint64_t end = qimg_round_down(off + len, s->min_block);
    off = qimg_round_down(off + s->min_block - 1, s->min_block);
    if (end <= off)
        return 0;
    len = end - off;
    int c = borrow(s);
    int r = 0;
    while (r == 0 && len > 0) {
        uint64_t n = QIMG_MIN(len, NBD_MAX_LEN32);
        struct nbd_req q = { .op = REQ_TRIM, .len = n, .off = off };
        r = conn_run(&s->conn[c], &q);
        off += n, len -= n;
    }
    give_back(s, c);
    return r;
}

static int nb_flush(struct qimg_io *io)
{
    struct nbd_state *s = io->priv;
    /* NBD_CMD_FLUSH even with cache=unsafe: qemu counts it a flush to the
     * server's OS (its "flush_to_os"), which unsafe does not skip */
    if (!s->can_flush)
        return 0;
    /* Without multi-conn there is one connection; with it, a flush on one
     * covers the writes completed on all. */
    int c = borrow(s);
    struct nbd_req q = { .op = REQ_FLUSH };
    int r = conn_run(&s->conn[c], &q);
    give_back(s, c);
    return r;
}

/* Read-ahead advice (rebase, commit, convert -D): NBD_CMD_CACHE where the
 * server has it, not waited for. */
static void nb_hint(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len)
{
    struct nbd_state *s = io->priv;
    if (kind != QIMG_IO_HINT_WILLNEED || !s->can_cache || off >= s->size)
        return;
    uint64_t aoff;
    size_t alen;
    widen(s, off, QIMG_MIN(QIMG_MIN(len, s->size - off), NBD_MAX_LEN32), &aoff, &alen);
    int c = borrow(s);
    struct nbd_conn *cn = &s->conn[c];
    pthread_mutex_lock(&cn->m);
    if (nbd_aio_cache(cn->h, alen, aoff, (nbd_completion_callback){ .callback = retire }, 0) >= 0 &&
        cn->polling)
        wake_poller(cn);
    pthread_mutex_unlock(&cn->m);
    give_back(s, c);
}

struct extent_answer { const char *context; uint32_t length, flags; bool got; };

static int extent_cb(void *opaque, const char *metacontext, uint64_t offset,
                     uint32_t *entries, size_t nr_entries, int *error)
{
    struct extent_answer *a = opaque;
    if (strcmp(metacontext, a->context) == 0 && nr_entries >= 2 && !a->got) {
        a->length = entries[0];
        a->flags = entries[1];
        a->got = true;
    }
    return 0;
}

static int nb_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    struct nbd_state *s = io->priv;
    if (!s->has_context || off >= s->size) {
        *pnum = len;
        *kind = off >= s->size ? QIMG_IO_EXT_HOLE : QIMG_IO_EXT_DATA;
        return 0;
    }
    /* asked for whole blocks around the range when the server wants them */
    uint64_t aoff;
    size_t alen;
    widen(s, off, QIMG_MIN(QIMG_MIN(len, s->size - off), NBD_MAX_LEN32), &aoff, &alen);
    uint64_t ask = alen;
    struct extent_answer a = { .context = s->context };
    int c = borrow(s);
    struct nbd_req q = { .op = REQ_STATUS, .len = ask, .off = aoff, .flags = LIBNBD_CMD_FLAG_REQ_ONE,
                         .extents = { .callback = extent_cb, .user_data = &a } };
    int r = conn_run(&s->conn[c], &q);
    give_back(s, c);
    if (r < 0)
        return r;
    if (!a.got || a.length == 0)
        return qimg_error(-EIO, "Server did not reply with any status extents");
    uint32_t flags = a.flags;
    if (s->alloc_depth && flags > 2)
        flags = 2;      /* as qemu: every depth past the first backing file alike */
    uint64_t length = QIMG_MIN((uint64_t)a.length, ask);
    /* a server that answers in pieces smaller than its own block size
     * (qemu-nbd on a file whose size is not a multiple of 512): as qemu,
     * whole blocks, and a lone piece counts as data */
    if (!qimg_is_aligned(length, s->min_block)) {
        if (length > s->min_block) {
            length = qimg_round_down(length, s->min_block);
        } else {
            length = s->min_block;
            flags = 0;
        }
    }
    *pnum = QIMG_MIN(aoff + length - off, len);
    bool hole = flags & NBD_STATE_HOLE, zero = flags & NBD_STATE_ZERO;
    *kind = hole ? (zero ? QIMG_IO_EXT_HOLE : QIMG_IO_EXT_UNKNOWN)
                 : (zero ? QIMG_IO_EXT_DATA_ZERO : QIMG_IO_EXT_DATA);
    return 0;
}

#else  /* !HAVE_LIBNBD */

static int nb_open(struct qimg_io *io, qimg_opts *opts)
{
    struct nbd_state *s = qimg_xcalloc(1, sizeof *s);
    io->priv = s;
    int r = nb_options(io, s, opts);
    if (r < 0)
        return r;
    return qimg_error(-ENOTSUP, "NBD is not available in this build (it needs libnbd)");
}

static void nb_close(struct qimg_io *io)
{
    struct nbd_state *s = io->priv;
    if (!s)
        return;
    free_state(s);
}

static int nb_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    return -ENOTSUP;
}

static int nb_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    return -ENOTSUP;
}

#define nb_zero NULL
#define nb_discard NULL
#define nb_flush NULL
#define nb_extent NULL
#define nb_hint NULL

#endif

static const char *const nbd_protocols[] = { "nbd+tcp", "nbd+unix", "nbds", "nbds+tcp", "nbds+unix", NULL };

const struct qimg_io_ops qimg_io_nbd_ops = {
    .name           = "nbd",
    .prefix         = "nbd:",
    .no_info        = true,
    .parse_filename = nb_parse_filename,
    .open           = nb_open,
    .pread          = nb_pread,
    .pwrite         = nb_pwrite,
    .zero           = nb_zero,
    .discard        = nb_discard,
    .flush          = nb_flush,
    .get_size       = nb_get_size,
    .truncate       = nb_truncate,
    .extent         = nb_extent,
    .hint           = nb_hint,
    .same           = nb_same,
    .close          = nb_close,
    .exact_filename = nb_exact_filename,
    .dirname        = nb_dirname,
    .protocols      = nbd_protocols,
    .create_by_opening = true,
    .remote         = true,
};
