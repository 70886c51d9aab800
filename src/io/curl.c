/* qimg - the http, https, ftp and ftps storage backends (qemu's "curl"
 * driver) through libcurl.  Read-only.
 *
 * Open sends a HEAD (ftp: SIZE) for the size and, over http(s), requires
 * "Accept-Ranges: bytes"; every read is then a Range GET.  qemu's options,
 * with its messages: url, readahead (default 256 KiB, a multiple of 512),
 * timeout (seconds, default 5, at most 10000, 0: none), sslverify, cookie
 * or cookie-secret, username and password-secret, proxy-username and
 * proxy-password-secret (secrets from --object secret).
 *
 * Parallel reads: a pool of up to MAX_CONNS easy handles, one transfer
 * each, so convert's workers fetch ranges at once over as many
 * connections.  Reads shorter than readahead go through a small cache of
 * readahead-sized windows (metadata of a format over http); a window being
 * fetched is waited for, never fetched twice.
 *
 * Never hangs: every transfer has a connect timeout and a low-speed limit
 * (less than LOW_SPEED_BYTES a second for `timeout` seconds is a stall).
 * A cut or refused transfer, or a 5xx answer, is retried up to ATTEMPTS
 * times, a stalled one STALL_ATTEMPTS times (so a read of a server that
 * stopped sending fails after about 2 x timeout), then the read fails with -EIO and a "curl: ..." line as
 * qemu prints.  An answer for another range than asked, or longer than
 * asked, is refused (qemu would use it).
 *
 * Proxies: libcurl takes the proxy from its environment (http_proxy,
 * https_proxy, all_proxy, no_proxy), as in qemu; proxy-username and
 * proxy-password-secret are its credentials (https goes through a CONNECT
 * tunnel).  A refused tunnel is named, where libcurl and qemu say nothing. */
#include <errno.h>
#include <inttypes.h>
#include <time.h>

#include "internal.h"

#ifdef HAVE_LIBCURL
#include "curl-dl.h"

#define READAHEAD_DEFAULT (256u * 1024)
#define TIMEOUT_DEFAULT 5
#define TIMEOUT_MAX 10000
#define MAX_CONNS 16
#define CACHE_ENTRIES 16
#define CACHE_MEMORY ((uint64_t)64 << 20)   /* at most this much in windows */
#define ATTEMPTS 3
#define STALL_ATTEMPTS 2           /* a stall already cost `timeout` seconds */
#define LOW_SPEED_BYTES 1024

enum { ENTRY_EMPTY, ENTRY_LOADING, ENTRY_READY, ENTRY_FAILED };

/* A readahead window: [start, start+len) of the object. */
struct window {
    uint64_t start;
    size_t len;
    int state;
    uint64_t gen;          /* bumped at each reuse: waiters know it is theirs */
    uint64_t used;         /* LRU clock */
    uint8_t *buf;          /* readahead bytes, allocated on first use */
};

struct conn {
    CURL *h;
    bool busy;
};

struct http_state {
    const char *proto;
    char *url;
    uint64_t size;
    size_t readahead;
    long timeout;
    bool sslverify;
    bool strong;           /* options that change what is read: no plain name */
    char *cookie, *username, *password, *proxy_username, *proxy_password;

    pthread_mutex_t lock;  /* conns, windows */
    pthread_cond_t changed;
    struct conn conns[MAX_CONNS];
    unsigned nconns;
    struct window win[CACHE_ENTRIES];
    unsigned nwin;
    uint64_t clock;
};

/* One transfer into dst: want bytes starting at first. */
struct xfer {
    uint8_t *dst;
    size_t want, got;
    uint64_t first;
    bool ranged;           /* a Range GET (not the HEAD) */
    bool overflow, bad_range, accept_ranges;
    uint64_t got_first, got_last;
    long stall_limit;      /* seconds without a byte that end it (0: none) */
    struct timespec last_byte;
    bool stalled;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool is_http(const struct http_state *s)
{
    return strncmp(s->proto, "http", 4) == 0;
}

/* ---- callbacks (run inside curl_easy_perform) ---- */

static void mark_progress(struct xfer *x)
{
    clock_gettime(CLOCK_MONOTONIC, &x->last_byte);
}

/* Called by curl at least once a second, also while nothing arrives: a
 * transfer that received nothing for stall_limit seconds is ended (curl's
 * low-speed limit alone averages over a few seconds of history). */
static int on_progress(void *opaque, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = opaque;
    struct timespec now;
    if (x->stall_limit <= 0)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double idle = (double)(now.tv_sec - x->last_byte.tv_sec) +
                  (double)(now.tv_nsec - x->last_byte.tv_nsec) / 1e9;
    if (idle < (double)x->stall_limit)
        return 0;
    x->stalled = true;
    return 1;                         /* CURLE_ABORTED_BY_CALLBACK */
}

static size_t on_data(char *p, size_t size, size_t n, void *opaque)
{
    struct xfer *x = opaque;
    size_t len = size * n;
    mark_progress(x);
    if (!x->ranged)
        return len;                   /* a HEAD has no body; ignore any */
    if (len > x->want - x->got) {
        x->overflow = true;
        return 0;                     /* aborts: CURLE_WRITE_ERROR */
    }
    memcpy(x->dst + x->got, p, len);
    x->got += len;
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *opaque)
{
    struct xfer *x = opaque;
    size_t len = size * n;
    mark_progress(x);
    if (!x->ranged) {
        if (qimg_http_accepts_ranges(p, len))
            x->accept_ranges = true;
        return len;
    }
    uint64_t first, last;
    int r = qimg_http_content_range(p, len, &first, &last);
    if (r < 0 || (r == 1 && (first != x->first || last - first + 1 != x->want))) {
        x->bad_range = true;
        x->got_first = r < 0 ? 0 : first;
        x->got_last = r < 0 ? 0 : last;
        return 0;                     /* aborts before the body */
    }
    return len;
}

/* ---- connections ---- */

static CURL *new_handle(struct http_state *s)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, s->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_AUTOREFERER, 1L);
    /* no redirect limit of our own, as qemu: curl's bound on the headers
     * of one transfer (redirects included) ends a loop with its message */
    /* a redirect never leaves these protocols (no file://, no gopher) */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https,ftp,ftps");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https,ftp,ftps");
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, s->sslverify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, s->sslverify ? 2L : 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    if (s->timeout > 0) {
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, s->timeout);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, (long)LOW_SPEED_BYTES);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s->timeout);
    }
    if (s->cookie)
        curl_easy_setopt(h, CURLOPT_COOKIE, s->cookie);
    if (s->username)
        curl_easy_setopt(h, CURLOPT_USERNAME, s->username);
    if (s->password)
        curl_easy_setopt(h, CURLOPT_PASSWORD, s->password);
    if (s->proxy_username)
        curl_easy_setopt(h, CURLOPT_PROXYUSERNAME, s->proxy_username);
    if (s->proxy_password)
        curl_easy_setopt(h, CURLOPT_PROXYPASSWORD, s->proxy_password);
    return h;
}

/* A free connection of the pool (a new one while under MAX_CONNS), or
 * NULL with an error. */
static CURL *conn_get(struct http_state *s)
{
    CURL *h = NULL;
    pthread_mutex_lock(&s->lock);
    while (!h) {
        for (unsigned i = 0; i < s->nconns && !h; i++)
            if (!s->conns[i].busy) {
                s->conns[i].busy = true;
                h = s->conns[i].h;
            }
        if (h)
            break;
        if (s->nconns < MAX_CONNS) {
            h = new_handle(s);
            if (h)
                s->conns[s->nconns++] = (struct conn){ h, true };
            break;
        }
        pthread_cond_wait(&s->changed, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    if (!h)
        qimg_error(-ENOMEM, "curl: cannot create a connection");
    return h;
}

static void conn_put(struct http_state *s, CURL *h)
{
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->nconns; i++)
        if (s->conns[i].h == h)
            s->conns[i].busy = false;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* ---- transfers ---- */

/* What went wrong in words: curl's own; where libcurl leaves them empty,
 * a proxy's refusal of a CONNECT tunnel (7.88 with FAILONERROR says
 * nothing when the proxy refuses the credentials), else `fallback`. */
static void describe_failure(CURL *h, const char *errbuf, const char *fallback, char *msg,
                             size_t size)
{
    long connect_code = 0;
    if (errbuf[0]) {
        snprintf(msg, size, "%s", errbuf);
        return;
    }
    curl_easy_getinfo(h, CURLINFO_HTTP_CONNECTCODE, &connect_code);
    if (connect_code == 407)
        snprintf(msg, size, "CONNECT tunnel failed, response 407: the proxy refused the "
                 "credentials (proxy-username, proxy-password-secret)");
    else if (connect_code >= 300)
        snprintf(msg, size, "CONNECT tunnel failed, response %ld", connect_code);
    else
        snprintf(msg, size, "%s", fallback);
}

/* Worth another attempt: the connection stalled, broke or was refused,
 * or the server said it is busy. */
static bool transient(CURLcode rc, long code)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: case CURLE_PARTIAL_FILE: case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR: case CURLE_GOT_NOTHING: case CURLE_COULDNT_CONNECT:
    case CURLE_HTTP2: case CURLE_HTTP2_STREAM: case CURLE_SSL_CONNECT_ERROR:
        return true;
    case CURLE_HTTP_RETURNED_ERROR:
        return code >= 500 || code == 408 || code == 429;
    default:
        return false;
    }
}

enum retry { RETRY_NO, RETRY_YES, RETRY_STALL };

/* One Range GET of [off, off+len) into dst.  0, or -EIO with *retry
 * saying whether another attempt may help and msg what went wrong. */
static int get_once(struct http_state *s, CURL *h, uint8_t *dst, size_t len, uint64_t off,
                    enum retry *retry, char *msg, size_t msgsize)
{
    struct xfer x = { .dst = dst, .want = len, .first = off, .ranged = true,
                      .stall_limit = s->timeout };
    mark_progress(&x);
    char range[48];
    snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, off, off + len - 1);
    curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_RANGE, range);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x.errbuf);
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    *retry = RETRY_NO;
    if (x.bad_range) {
        snprintf(msg, msgsize, "server answered a request for bytes %s with bytes %" PRIu64
                 "-%" PRIu64, range, x.got_first, x.got_last);
    } else if (x.overflow) {
        snprintf(msg, msgsize, "server sent more than the %zu bytes asked for (bytes %s)",
                 len, range);
    } else if (x.stalled) {
        *retry = RETRY_STALL;
        snprintf(msg, msgsize, "transfer stalled: no data for %ld s (bytes %s, "
                 "%zu of %zu received)", s->timeout, range, x.got, len);
    } else if (rc != CURLE_OK) {
        *retry = transient(rc, code) ? RETRY_YES : RETRY_NO;
        describe_failure(h, x.errbuf, curl_easy_strerror(rc), msg, msgsize);
    } else if (is_http(s) && code != 206 && !(code == 200 && off == 0)) {
        snprintf(msg, msgsize, "server ignored the byte range %s (HTTP status %ld)", range, code);
    } else if (x.got != len) {
        *retry = RETRY_YES;
        snprintf(msg, msgsize, "server sent %zu bytes for the %zu bytes of range %s", x.got,
                 len, range);
    } else {
        return 0;
    }
    return -EIO;
}

/* [off, off+len) into dst over a connection of the pool, retried. */
static int fetch(struct http_state *s, uint8_t *dst, size_t len, uint64_t off)
{
    CURL *h = conn_get(s);
    if (!h)
        return -ENOMEM;
    char msg[CURL_ERROR_SIZE + 160];
    enum retry why;
    int r, made = 0, stalls = 0;
    for (;;) {
        r = get_once(s, h, dst, len, off, &why, msg, sizeof msg);
        made++;
        if (r == 0 || why == RETRY_NO)
            break;
        stalls += why == RETRY_STALL;
        if (made >= ATTEMPTS || stalls >= STALL_ATTEMPTS)
            break;
        nanosleep(&(struct timespec){ 0, 100000000L * made }, NULL);
    }
    conn_put(s, h);
    if (r == 0)
        return 0;
    if (made > 1)
        qimg_warn("ERROR: curl: %s (%d attempts)", msg, made);
    else
        qimg_warn("ERROR: curl: %s", msg);
    return qimg_error(-EIO, "curl: %s", msg);
}

/* ---- readahead windows ---- */

/* The window holding or fetching all of [off, off+len), or NULL. */
static struct window *window_find(struct http_state *s, uint64_t off, size_t len)
{
    for (unsigned i = 0; i < s->nwin; i++) {
        struct window *w = &s->win[i];
        if ((w->state == ENTRY_READY || w->state == ENTRY_LOADING) && w->start <= off &&
            off + len <= w->start + w->len)
            return w;
    }
    return NULL;
}

/* The least recently used window not being fetched, its buffer ready. */
static struct window *window_victim(struct http_state *s)
{
    struct window *best = NULL;
    for (unsigned i = 0; i < s->nwin; i++) {
        struct window *w = &s->win[i];
        if (w->state != ENTRY_LOADING && (!best || w->used < best->used))
            best = w;
    }
    if (best && !best->buf) {
        best->buf = malloc(s->readahead);
        if (!best->buf)
            return NULL;
    }
    return best;
}

static int cached_read(struct http_state *s, uint8_t *buf, size_t len, uint64_t off)
{
    pthread_mutex_lock(&s->lock);
    struct window *w;
    while ((w = window_find(s, off, len))) {
        if (w->state == ENTRY_READY) {
            memcpy(buf, w->buf + (off - w->start), len);
            w->used = ++s->clock;
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
        /* being fetched: wait for that very fetch to end */
        uint64_t gen = w->gen;
        while (w->gen == gen && w->state == ENTRY_LOADING)
            pthread_cond_wait(&s->changed, &s->lock);
        if (w->gen == gen && w->state == ENTRY_FAILED) {
            pthread_mutex_unlock(&s->lock);
            return qimg_error(-EIO, "curl: reading bytes %" PRIu64 "-%" PRIu64 " failed", off,
                              off + len - 1);
        }
    }
    w = window_victim(s);
    if (!w) {
        pthread_mutex_unlock(&s->lock);
        return fetch(s, buf, len, off);
    }
    w->state = ENTRY_LOADING;
    w->gen++;
    w->start = off;
    w->len = (size_t)QIMG_MIN((uint64_t)s->readahead, s->size - off);
    pthread_mutex_unlock(&s->lock);

    int r = fetch(s, w->buf, w->len, off);

    pthread_mutex_lock(&s->lock);
    w->state = r < 0 ? ENTRY_FAILED : ENTRY_READY;
    w->used = ++s->clock;
    if (r == 0)
        memcpy(buf, w->buf, len);
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* ---- the backend ---- */

static int http_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct http_state *s = io->priv;
    if (off >= s->size) {
        memset(buf, 0, len);
        return 0;
    }
    if (len > s->size - off) {
        size_t in = (size_t)(s->size - off);
        memset((uint8_t *)buf + in, 0, len - in);
        len = in;
    }
    if (len == 0)
        return 0;
    if (len < s->readahead && s->nwin > 0)
        return cached_read(s, buf, len, off);
    return fetch(s, buf, len, off);
}

static int http_get_size(struct qimg_io *io, uint64_t *size)
{
    *size = ((struct http_state *)io->priv)->size;
    return 0;
}

/* The HEAD (ftp: SIZE) that gives the size, with qemu's messages. */
static int probe_size(struct http_state *s)
{
    CURL *h = conn_get(s);
    if (!h)
        return -ENOMEM;
    struct xfer x = { 0 };
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x.errbuf);
    if (s->timeout > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT, s->timeout);
    CURLcode rc = curl_easy_perform(h);
    curl_off_t length = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    char failure[CURL_ERROR_SIZE + 160];
    if (rc != CURLE_OK)
        describe_failure(h, x.errbuf, "", failure, sizeof failure);   /* qemu: nothing */
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    conn_put(s, h);
    const char *why = NULL;
    if (rc != CURLE_OK)
        why = failure;
    else if (length < 0)
        why = "Server didn't report file size.";
    else if (is_http(s) && !x.accept_ranges)
        why = "Server does not support 'range' (byte ranges).";
    if (why)
        return qimg_error(-EIO, "CURL: Error opening file: %s", why);
    s->size = (uint64_t)length;
    return 0;
}

/* A secret's text by id, for the option `key`; 0 when the option is absent. */
static int take_secret(qimg_opts *opts, const char *key, char **out)
{
    const char *id;
    if (qimg_opts_get_string(opts, key, &id) != 1)
        return 0;
    size_t len;
    return qimg_secret_lookup(id, out, &len);
}

static char *take_text(qimg_opts *opts, const char *key)
{
    const char *v;
    return qimg_opts_get_string(opts, key, &v) == 1 ? qimg_strdup(v) : NULL;
}

/* qemu's options in qemu's order of checks. */
static int parse_options(struct http_state *s, qimg_opts *opts)
{
    uint64_t readahead = READAHEAD_DEFAULT, timeout = TIMEOUT_DEFAULT;
    s->sslverify = true;
    int r = qimg_opts_get_size(opts, "readahead", &readahead);
    if (r >= 0)
        r = qimg_opts_get_number(opts, "timeout", &timeout);
    if (r >= 0)
        r = qimg_opts_get_bool(opts, "sslverify", &s->sslverify);
    if (r < 0)
        return r;
    if (readahead & 511)
        return qimg_error(-EINVAL, "HTTP_READAHEAD_SIZE %" PRId64 " is not a multiple of 512",
                          (int64_t)readahead);
    if (timeout > TIMEOUT_MAX)
        return qimg_error(-EINVAL, "timeout parameter is too large or negative");
    /* a window is never larger than all windows may be (readahead=1T is
     * accepted, as qemu accepts it, and means "as much as we keep") */
    s->readahead = (size_t)QIMG_MIN(readahead, CACHE_MEMORY);
    s->timeout = (long)timeout;
    s->cookie = take_text(opts, "cookie");
    if (s->cookie && qimg_opts_get(opts, "cookie-secret"))
        return qimg_error(-EINVAL, "curl driver cannot handle both cookie and cookie secret");
    r = take_secret(opts, "cookie-secret", &s->cookie);
    if (r < 0)
        return r;
    const char *url, *unused;
    if (qimg_opts_get_string(opts, "url", &url) != 1)
        return qimg_error(-EINVAL, "curl block driver requires an 'url' option");
    r = qimg_http_url_check(s->proto, url);
    if (r < 0)
        return r;
    s->url = qimg_strdup(url);
    if (qimg_opts_get_string(opts, "x-url-from-name", &unused) == 1)
        qimg_opts_get_string(opts, "filename", &unused);
    s->username = take_text(opts, "username");
    r = take_secret(opts, "password-secret", &s->password);
    if (r >= 0) {
        s->proxy_username = take_text(opts, "proxy-username");
        r = take_secret(opts, "proxy-password-secret", &s->proxy_password);
    }
    /* as qemu: only these change what is read (readahead and timeout
     * do not), so they need a json: name */
    s->strong = !s->sslverify || s->cookie || s->username || s->password ||
                s->proxy_username || s->proxy_password;
    return r < 0 ? r : 0;
}

static int http_open(struct qimg_io *io, qimg_opts *opts)
{
    if (io->flags & QIMG_IO_RDWR)
        return qimg_error(-EACCES, "curl driver does not support writes");
    int r = qimg_curl_load();
    if (r < 0)
        return r;
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK)
        return qimg_error(-EIO, "curl: %s", curl_easy_strerror(curl_init_result));
    struct http_state *s = qimg_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    s->proto = io->ops->name;
    io->priv = s;
    r = parse_options(s, opts);
    if (r < 0)
        return r;
    /* an option that changes what is read: qemu names the node by its
     * options (map's file column, messages) */
    free(io->filename);
    io->filename = s->strong ? qimg_node_json_name(opts, NULL) : qimg_strdup(s->url);
    r = probe_size(s);
    if (r < 0)
        return r;
    if (s->readahead > 0)
        s->nwin = (unsigned)QIMG_MIN((uint64_t)CACHE_ENTRIES,
                                     QIMG_MAX((uint64_t)1, CACHE_MEMORY / s->readahead));
    return 0;
}

static void free_secret(char *p)
{
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

static void http_close(struct qimg_io *io)
{
    struct http_state *s = io->priv;
    if (!s)
        return;
    for (unsigned i = 0; i < s->nconns; i++)
        curl_easy_cleanup(s->conns[i].h);
    for (unsigned i = 0; i < s->nwin; i++)
        free(s->win[i].buf);
    free(s->url);
    free_secret(s->cookie);
    free(s->username);
    free_secret(s->password);
    free(s->proxy_username);
    free_secret(s->proxy_password);
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static char *http_exact_filename(struct qimg_io *io)
{
    struct http_state *s = io->priv;
    return s->strong ? NULL : qimg_strdup(s->url);
}

/* Relative names resolve next to the URL, except on a node named by its
 * options (qemu: no base directory then). */
static char *http_dirname(struct qimg_io *io)
{
    struct http_state *s = io->priv;
    if (s->strong) {
        qimg_error(-EINVAL, "Cannot generate a base directory for %s nodes", io->ops->name);
        return NULL;
    }
    return qimg_path_combine(s->url, "");
}

#else /* !HAVE_LIBCURL */

static int http_open(struct qimg_io *io, qimg_opts *opts)
{
    return qimg_error(-ENOTSUP, "qimg was built without libcurl: the '%s' protocol is not "
                      "available", io->ops->name);
}

static int http_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    return -ENOTSUP;
}

static int http_get_size(struct qimg_io *io, uint64_t *size)
{
    return -ENOTSUP;
}

static void http_close(struct qimg_io *io)
{
}

static char *http_exact_filename(struct qimg_io *io)
{
    return NULL;
}

static char *http_dirname(struct qimg_io *io)
{
    qimg_error(-ENOTSUP, "qimg was built without libcurl");
    return NULL;
}

#endif

/* A name given as a string is the URL (qemu's "url"); "filename" then
 * says nothing more. */
static int http_parse_filename(const char *filename, qimg_opts *opts)
{
    int r = qimg_opts_set(&opts, "url", filename);
    return r < 0 ? r : qimg_opts_set(&opts, "x-url-from-name", "on");
}

#define CURL_OPS(NAME)                              \
    .name           = NAME,                         \
    .prefix         = NAME "://",                   \
    .parse_filename = http_parse_filename,          \
    .open           = http_open,                    \
    .pread          = http_pread,                   \
    .get_size       = http_get_size,                \
    .close          = http_close,                   \
    .exact_filename = http_exact_filename,           \
    .dirname        = http_dirname,                 \
    .no_info        = true,                         \
    .read_only      = true,                         \
    .remote         = true

const struct qimg_io_ops qimg_io_http_ops = { CURL_OPS("http") };
const struct qimg_io_ops qimg_io_https_ops = { CURL_OPS("https") };
const struct qimg_io_ops qimg_io_ftp_ops = { CURL_OPS("ftp") };
const struct qimg_io_ops qimg_io_ftps_ops = { CURL_OPS("ftps") };
