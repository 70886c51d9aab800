/* qimg - the text the http/https/ftp/ftps backends (curl.c) read: the URL
 * a user gives and the response headers a server sends.  Kept apart from
 * libcurl so unit tests can feed them hostile strings in any build.  Header
 * lines come from the network: never NUL-terminated, any bytes, any length;
 * numbers are checked for overflow. */
#include <errno.h>
#include <strings.h>

#include "internal.h"

int qimg_http_url_check(const char *proto, const char *url)
{
    size_t n = strlen(proto);
    if (strncmp(url, proto, n) != 0 || strncmp(url + n, "://", 3) != 0)
        return qimg_error(-EINVAL, "%s curl driver cannot handle the URL '%s' "
                          "(does not start with '%s://')", proto, url, proto);
    return 0;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The value of header `name` in line[0..len) (without leading and
 * trailing blanks), or NULL when the line is another header. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    const char *v = line + n + 1, *end = line + len;
    while (v < end && blank(*v))
        v++;
    while (end > v && blank(end[-1]))
        end--;
    *vlen = (size_t)(end - v);
    return v;
}

bool qimg_http_accepts_ranges(const char *line, size_t len)
{
    size_t vlen;
    const char *v = header_value(line, len, "accept-ranges", &vlen);
    return v && vlen == 5 && strncasecmp(v, "bytes", 5) == 0;
}

/* Decimal digits at *p (before end) into *out; false on none or overflow. */
static bool read_u64(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    if (s >= end || *s < '0' || *s > '9')
        return false;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *out = v;
    return true;
}

int qimg_http_content_range(const char *line, size_t len, uint64_t *first, uint64_t *last)
{
    size_t vlen;
    const char *v = header_value(line, len, "content-range", &vlen);
    if (!v)
        return 0;
    const char *p = v, *end = v + vlen;
    uint64_t total;
    if (vlen < 6 || strncasecmp(p, "bytes", 5) != 0 || !blank(p[5]))
        return -EINVAL;
    p += 6;
    while (p < end && blank(*p))
        p++;
    if (!read_u64(&p, end, first) || p >= end || *p++ != '-' || !read_u64(&p, end, last) ||
        p >= end || *p++ != '/' || *first > *last)
        return -EINVAL;
    if (p < end && *p == '*' && p + 1 == end)
        return 1;
    if (!read_u64(&p, end, &total) || p != end || *last >= total)
        return -EINVAL;
    return 1;
}
