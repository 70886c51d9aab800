/* qimg - NBD names as qemu 7.2 reads them: URIs (RFC 3986, with qemu's
 * rules on top), the legacy "nbd:HOST:PORT[:exportname=X]" strings and the
 * option keys (server.*, or the older host/port/path).  No network here:
 * this file builds without libnbd and is unit-tested with hostile names
 * (tests/unit/test-nbd-name.c). */
#include <errno.h>
#include <stdio.h>

#include "nbd.h"

#define NO_URL "No valid URL specified"
#define EN_OPT ":exportname="

/* ---- RFC 3986 character classes ---- */

static bool is_unreserved(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static bool is_sub_delim(char c)
{
    return c && strchr("!$&'()*+,;=", c) != NULL;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Length of the run at s made of unreserved, sub-delims, %XX and the
 * characters in extra; -1 on a bad %-escape. */
static ssize_t span_chars(const char *s, const char *extra)
{
    size_t i = 0;
    while (s[i]) {
        if (s[i] == '%') {
            if (hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0)
                return -1;
            i += 3;
        } else if (is_unreserved(s[i]) || is_sub_delim(s[i]) || strchr(extra, s[i])) {
            i++;
        } else {
            break;
        }
    }
    return (ssize_t)i;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = qimg_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* %-decoded copy of s[0..len); a decoded NUL ends the string (as qemu's
 * C strings do). */
static char *unescape(const char *s, size_t len)
{
    char *out = qimg_xmalloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
            out[o++] = (char)(hex_value(s[i + 1]) << 4 | hex_value(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- URIs ---- */

struct uri {
    char *scheme, *host, *path, *query;   /* host/path decoded, query raw */
    bool has_host;
    unsigned port;                         /* 0: none */
};

static void uri_free(struct uri *u)
{
    free(u->scheme);
    free(u->host);
    free(u->path);
    free(u->query);
}

/* authority = [userinfo "@"] host [":" port]; host may be "[v6]". */
static int parse_authority(const char **pp, struct uri *u)
{
    const char *p = *pp;
    ssize_t n = span_chars(p, ":");
    if (n < 0)
        return -1;
    if (p[n] == '@')           /* userinfo: accepted and ignored, as qemu */
        p += n + 1;
    if (*p == '[') {
        size_t v6 = strspn(p + 1, "0123456789abcdefABCDEF:.");
        if (p[1 + v6] != ']')
            return -1;
        u->host = xstrndup(p, v6 + 2);
        p += v6 + 2;
    } else {
        n = span_chars(p, "");
        if (n < 0)
            return -1;
        u->host = unescape(p, (size_t)n);
        p += n;
    }
    u->has_host = u->host[0] != '\0';
    if (*p == ':') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return -1;
        unsigned port = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            port = port * 10 + (unsigned)(*p - '0');
            if (port > 65535)
                return -1;
        }
        u->port = port;
    }
    *pp = p;
    return 0;
}

/* scheme "://" authority path ["?" query] ["#" fragment] */
static int parse_uri(const char *s, struct uri *u)
{
    memset(u, 0, sizeof *u);
    const char *sep = strstr(s, "://");
    size_t slen = (size_t)(sep - s);
    if (slen == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')) ||
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.") < slen)
        return -1;
    u->scheme = xstrndup(s, slen);
    const char *p = sep + 3;
    if (parse_authority(&p, u) < 0)
        return -1;
    ssize_t n = span_chars(p, ":@/");
    if (n < 0 || (n > 0 && p[0] != '/'))
        return -1;
    u->path = unescape(p, (size_t)n);
    p += n;
    if (*p == '?') {
        p++;
        n = span_chars(p, ":@/?");
        if (n < 0)
            return -1;
        u->query = xstrndup(p, (size_t)n);
        p += n;
    }
    if (*p == '#') {
        p++;
        n = span_chars(p, ":@/?");
        if (n < 0)
            return -1;
        p += n;
    }
    return *p ? -1 : 0;
}

/* The query of an nbd+unix URI: exactly "socket=PATH" (qemu splits
 * parameters at '&' and ';').  nbds adds "tls-creds=ID". */
static int parse_query(const char *query, bool tls, qimg_opts **opts, bool *has_socket)
{
    size_t count = 0;
    const char *p = query;
    while (p && *p) {
        size_t len = strcspn(p, "&;");
        const char *eq = memchr(p, '=', len);
        if (len == 0 || !eq)
            return -1;
        CLEANUP_FREE char *name = unescape(p, (size_t)(eq - p));
        CLEANUP_FREE char *value = unescape(eq + 1, len - (size_t)(eq - p) - 1);
        if (strcmp(name, "socket") == 0 && !*has_socket) {
            *has_socket = true;
            qimg_opts_set(opts, "server.path", value);
        } else if (tls && strcmp(name, "tls-creds") == 0 && !qimg_opts_get(*opts, "tls-creds")) {
            qimg_opts_set(opts, "tls-creds", value);
        } else {
            return -1;
        }
        count++;
        p += len;
        if (*p)
            p++;
    }
    return (int)count;
}

static int uri_to_opts(const struct uri *u, qimg_opts **opts)
{
    bool is_unix, tls;
    if (strcmp(u->scheme, "nbd") == 0 || strcmp(u->scheme, "nbd+tcp") == 0)
        is_unix = false, tls = false;
    else if (strcmp(u->scheme, "nbd+unix") == 0)
        is_unix = true, tls = false;
    else if (strcmp(u->scheme, "nbds") == 0 || strcmp(u->scheme, "nbds+tcp") == 0)
        is_unix = false, tls = true;
    else if (strcmp(u->scheme, "nbds+unix") == 0)
        is_unix = true, tls = true;
    else
        return -1;

    const char *exp = u->path[0] == '/' ? u->path + 1 : u->path;
    if (exp[0])
        qimg_opts_set(opts, "export", exp);
    if (tls)
        qimg_opts_set(opts, "x-tls", "on");

    bool has_socket = false;
    int params = parse_query(u->query, tls, opts, &has_socket);
    if (params < 0)
        return -1;
    if (is_unix) {
        if (u->has_host || u->port || !has_socket)
            return -1;
        return qimg_opts_set(opts, "server.type", "unix");
    }
    if (!u->has_host || has_socket)
        return -1;
    qimg_opts_set(opts, "server.type", "inet");
    /* a literal IPv6 address loses its brackets */
    size_t hlen = strlen(u->host);
    CLEANUP_FREE char *host = u->host[0] == '[' ? xstrndup(u->host + 1, hlen - 2)
                                                 : qimg_strdup(u->host);
    qimg_opts_set(opts, "server.host", host);
    char port[16];
    snprintf(port, sizeof port, "%u", u->port ? u->port : 10809u);
    return qimg_opts_set(opts, "server.port", port);
}

/* ---- legacy strings ---- */

/* qemu's inet_parse: "HOST:PORT", "[V6]:PORT" or ":PORT", then ",opts"
 * that nbd ignores.  HOST is at most 64 bytes and PORT 32, as qemu's
 * buffers. */
static int parse_inet(const char *spec, qimg_opts **opts)
{
    const char *host, *port;
    size_t hlen;
    if (spec[0] == ':') {
        host = spec, hlen = 0;
        port = spec + 1;
        if (!*port || *port == ',')
            return qimg_error(-EINVAL, "error parsing port in address '%s'", spec);
    } else if (spec[0] == '[') {
        host = spec + 1;
        hlen = strcspn(host, "]");
        port = host + hlen + 2;
        if (hlen == 0 || hlen > 64 || host[hlen] != ']' || host[hlen + 1] != ':' || !*port ||
            *port == ',')
            return qimg_error(-EINVAL, "error parsing IPv6 address '%s'", spec);
    } else {
        host = spec;
        hlen = strcspn(host, ":");
        port = host + hlen + 1;
        if (hlen == 0 || hlen > 64 || host[hlen] != ':' || !*port || *port == ',')
            return qimg_error(-EINVAL, "error parsing address '%s'", spec);
    }
    size_t plen = QIMG_MIN(strcspn(port, ","), (size_t)32);
    CLEANUP_FREE char *h = xstrndup(host, hlen);
    CLEANUP_FREE char *pt = xstrndup(port, plen);
    qimg_opts_set(opts, "server.type", "inet");
    qimg_opts_set(opts, "server.host", h);
    return qimg_opts_set(opts, "server.port", pt);
}

static int parse_legacy(const char *name, qimg_opts **opts)
{
    CLEANUP_FREE char *file = qimg_strdup(name);
    char *en = strstr(file, EN_OPT);
    if (en) {
        if (!en[strlen(EN_OPT)])
            return 0;       /* qemu takes nothing from such a name */
        *en = '\0';
        qimg_opts_set(opts, "export", en + strlen(EN_OPT));
    }
    if (strncmp(file, "nbd:", 4) != 0)
        return qimg_error(-EINVAL, "File name string for NBD must start with 'nbd:'");
    const char *spec = file + 4;
    if (!*spec)
        return 0;
    if (strncmp(spec, "unix:", 5) == 0) {
        qimg_opts_set(opts, "server.type", "unix");
        return qimg_opts_set(opts, "server.path", spec + 5);
    }
    return parse_inet(spec, opts);
}

int qimg_nbd_parse_name(const char *name, qimg_opts **opts)
{
    if (!strstr(name, "://"))
        return parse_legacy(name, opts);
    struct uri u;
    int r = parse_uri(name, &u);
    if (r == 0)
        r = uri_to_opts(&u, opts);
    uri_free(&u);
    return r < 0 ? qimg_error(-EINVAL, NO_URL) : 0;
}

/* ---- options ---- */

static int take(qimg_opts *opts, const char *key, char **out)
{
    const char *v = NULL;
    int r = qimg_opts_get_string(opts, key, &v);
    if (r < 0)
        return r;
    *out = v ? qimg_strdup(v) : NULL;
    return 0;
}

static bool has_server_keys(const qimg_opts *opts)
{
    for (size_t i = 0; i < qimg_opts_count(opts); i++)
        if (strncmp(qimg_opts_name(opts, i), "server.", 7) == 0)
            return true;
    return false;
}

/* qemu's older keys host/port/path become server.* */
static int legacy_keys(qimg_opts *opts, struct qimg_nbd_addr *a, bool *done)
{
    CLEANUP_FREE char *path = NULL, *host = NULL, *port = NULL;
    int r = take(opts, "host", &host);
    if (r == 0)
        r = take(opts, "port", &port);
    if (r == 0)
        r = take(opts, "path", &path);
    if (r < 0)
        return r;
    *done = false;
    if (!path && !host && !port)
        return 0;
    if (has_server_keys(opts))
        return qimg_error(-EINVAL, "Cannot use 'server' and path/host/port at the same time");
    if (path && host)
        return qimg_error(-EINVAL, "path and host may not be used at the same time");
    if (path && port)
        return qimg_error(-EINVAL, "port may not be used without host");
    *done = true;
    if (path) {
        a->transport = QIMG_NBD_UNIX;
        a->path = qimg_strdup(path);
    } else if (host) {
        a->host = qimg_strdup(host);
        a->port = qimg_strdup(port ? port : QIMG_NBD_DEFAULT_PORT);
    } else {
        *done = false;      /* a port alone: the server address is still missing */
    }
    return 0;
}

/* The members of each server.type, in qemu's schema order; '*' marks a
 * required one. */
struct addr_type {
    const char *name;
    enum qimg_nbd_transport transport;
    const char *const members[9];
};
static const struct addr_type addr_types[] = {
    { "inet", QIMG_NBD_INET,
      { "*host", "*port", "numeric", "to", "ipv4", "ipv6", "keep-alive", "mptcp", NULL } },
    { "unix", QIMG_NBD_UNIX, { "*path", "abstract", "tight", NULL } },
    { "vsock", QIMG_NBD_VSOCK, { "*cid", "*port", NULL } },
    { "fd", QIMG_NBD_FD, { "*str", NULL } },
};

/* "server.KEY." keys: an object where qemu wants a scalar. */
static bool has_children(const qimg_opts *opts, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < qimg_opts_count(opts); i++) {
        const char *name = qimg_opts_name(opts, i);
        if (strncmp(name, "server.", 7) == 0 && strncmp(name + 7, key, n) == 0 && name[7 + n] == '.')
            return true;
    }
    return false;
}

/* qemu visits the members in order (a missing one or an object in place
 * of a value is the error), then finds what is left unexpected. */
static int check_members(qimg_opts *opts, const struct addr_type *t)
{
    for (size_t m = 0; t->members[m]; m++) {
        bool required = t->members[m][0] == '*';
        const char *key = t->members[m] + required;
        char full[32];
        snprintf(full, sizeof full, "server.%s", key);
        const char *v;
        qimg_opts_get_string(opts, full, &v);       /* marks it used */
        if (qimg_opts_get(opts, full))
            continue;
        if (has_children(opts, key))
            return qimg_error(-EINVAL, "Parameters '%s.*' are unexpected", key);
        if (required)
            return qimg_error(-EINVAL, "Parameter '%s' is missing", key);
    }
    for (size_t i = 0; i < qimg_opts_count(opts); i++) {
        const char *name = qimg_opts_name(opts, i);
        if (strncmp(name, "server.", 7) != 0 || strcmp(name, "server.type") == 0)
            continue;
        bool known = false;
        for (size_t m = 0; t->members[m] && !known; m++)
            known = strcmp(name + 7, t->members[m] + (t->members[m][0] == '*')) == 0;
        if (!known)
            return qimg_error(-EINVAL, "Parameter '%.*s' is unexpected",
                              (int)strcspn(name + 7, "."), name + 7);
    }
    return 0;
}

static int server_keys(qimg_opts *opts, struct qimg_nbd_addr *a)
{
    if (!has_server_keys(opts))
        return qimg_error(-EINVAL, "NBD server address missing");
    const char *type = NULL;
    qimg_opts_get_string(opts, "server.type", &type);
    if (!type && has_children(opts, "type"))
        return qimg_error(-EINVAL, "Parameters 'type.*' are unexpected");
    if (!type)
        return qimg_error(-EINVAL, "Parameter 'type' is missing");
    const struct addr_type *t = NULL;
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(addr_types); i++)
        if (strcmp(type, addr_types[i].name) == 0)
            t = &addr_types[i];
    if (!t)
        return qimg_error(-EINVAL, "Parameter 'type' does not accept value '%s'", type);
    int r = check_members(opts, t);
    if (r < 0)
        return r;
    a->transport = t->transport;
    switch (t->transport) {
    case QIMG_NBD_INET:
        a->host = qimg_strdup(qimg_opts_get(opts, "server.host"));
        a->port = qimg_strdup(qimg_opts_get(opts, "server.port"));
        break;
    case QIMG_NBD_UNIX:
        a->path = qimg_strdup(qimg_opts_get(opts, "server.path"));
        break;
    case QIMG_NBD_VSOCK:
        a->cid = qimg_strdup(qimg_opts_get(opts, "server.cid"));
        a->port = qimg_strdup(qimg_opts_get(opts, "server.port"));
        break;
    case QIMG_NBD_FD:
        a->fd_str = qimg_strdup(qimg_opts_get(opts, "server.str"));
        break;
    }
    return 0;
}

int qimg_nbd_addr_from_opts(qimg_opts *opts, struct qimg_nbd_addr *a)
{
    memset(a, 0, sizeof *a);
    bool done;
    int r = legacy_keys(opts, a, &done);
    if (r == 0 && !done)
        r = server_keys(opts, a);
    if (r == 0)
        r = take(opts, "export", &a->export);
    if (r == 0 && a->export && strlen(a->export) > QIMG_NBD_MAX_STRING)
        r = qimg_error(-EINVAL, "export name too long to send to server");
    if (r < 0)
        qimg_nbd_addr_free(a);
    return r;
}

void qimg_nbd_addr_free(struct qimg_nbd_addr *a)
{
    free(a->host);
    free(a->port);
    free(a->path);
    free(a->export);
    free(a->cid);
    free(a->fd_str);
    memset(a, 0, sizeof *a);
}

/* qemu keeps such a name in 4096 bytes; a longer one is no name.  An fd
 * or a vsock address has none (qemu shows the options). */
char *qimg_nbd_addr_name(const struct qimg_nbd_addr *a, bool tls)
{
    const char *s = tls ? "s" : "";
    char *name;
    if (a->transport == QIMG_NBD_FD || a->transport == QIMG_NBD_VSOCK)
        return NULL;
    if (a->transport == QIMG_NBD_UNIX)
        name = a->export ? qimg_asprintf("nbd%s+unix:///%s?socket=%s", s, a->export, a->path)
                         : qimg_asprintf("nbd%s+unix://?socket=%s", s, a->path);
    else
        name = a->export ? qimg_asprintf("nbd%s://%s:%s/%s", s, a->host, a->port, a->export)
                         : qimg_asprintf("nbd%s://%s:%s", s, a->host, a->port);
    if (strlen(name) >= 4096) {
        free(name);
        return NULL;
    }
    return name;
}
