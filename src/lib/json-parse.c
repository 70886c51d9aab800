/* qimg - a small JSON reader for json:{...} filenames and --object {...}.
 *
 * It accepts qemu's dialect (strings in '...' as well as "...") and gives
 * the error texts qemu-img 7.2 prints after "Could not parse the JSON
 * options: " (observed with qemu-img info 'json:...').  Nesting is limited
 * to 1024 levels, as in qemu.  \u0000 becomes the bytes C0 80, as qemu
 * does, so strings stay NUL-terminated.
 */
#include <errno.h>
#include <stdio.h>

#include "json-priv.h"

#define JSON_MAX_DEPTH 1024

struct reader {
    const char *p;
};

static int parse_value(struct reader *r, struct qimg_json **out, int depth);

static void skip_blanks(struct reader *r)
{
    while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
        r->p++;
}

static int premature_end(void)
{
    return qimg_error(-EINVAL, "JSON parse error, premature EOI");
}

/* A token the lexer could not read: from start through the bad character. */
static int stray(const char *start, const char *bad)
{
    int len = (int)(bad - start) + (*bad ? 1 : 0);
    return qimg_error(-EINVAL, "JSON parse error, stray '%.*s'", len, start);
}

/* ---------------------------------------------------------------- strings */

/* Four hex digits; returns 4, or the index of the first bad character. */
static int hex4(const char *p, uint32_t *v)
{
    int i;
    *v = 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' :
                c >= 'a' && c <= 'f' ? c - 'a' + 10 :
                c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return i;
        *v = *v << 4 | (uint32_t)d;
    }
    return i;
}

static void put_utf8(struct qimg_strbuf *b, uint32_t cp)
{
    char s[5] = { 0 };
    if (cp == 0) {                       /* modified UTF-8 keeps NUL out */
        s[0] = (char)0xC0; s[1] = (char)0x80;
    } else if (cp < 0x80) {
        s[0] = (char)cp;
    } else if (cp < 0x800) {
        s[0] = (char)(0xC0 | cp >> 6); s[1] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | cp >> 12); s[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F));
    } else {
        s[0] = (char)(0xF0 | cp >> 18); s[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        s[2] = (char)(0x80 | (cp >> 6 & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F));
    }
    qimg_strbuf_add(b, s);
}

/* \uXXXX at p (p points to the backslash), surrogate pairs joined.  The
 * error quotes the escape through its first bad character, as qemu. */
static int read_unicode_escape(const char **pp, struct qimg_strbuf *b)
{
    const char *p = *pp;
    uint32_t cp, low;
    int good = hex4(p + 2, &cp), shown = 6;
    if (good < 4) {
        shown = 2 + good + (p[2 + good] ? 1 : 0);
        goto bad;
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        goto bad;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &low) < 4 ||
            low < 0xDC00 || low > 0xDFFF)
            goto bad;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        *pp = p + 12;
    } else {
        *pp = p + 6;
    }
    put_utf8(b, cp);
    return 0;
bad:
    return qimg_error(-EINVAL, "JSON parse error, %.*s is not a valid Unicode character", shown, p);
}

static int read_escape(const char **pp, char quote, struct qimg_strbuf *b)
{
    static const char from[] = "\"\\/bfnrt'";
    static const char to[] = "\"\\/\b\f\n\r\t'";
    const char *p = *pp;
    if (p[1] == 'u')
        return read_unicode_escape(pp, b);
    const char *hit = p[1] ? strchr(from, p[1]) : NULL;
    /* \' only means something inside '...' */
    if (!hit || (p[1] == '\'' && quote != '\''))
        return qimg_error(-EINVAL, "JSON parse error, invalid escape sequence in string");
    char c = to[hit - from];
    qimg_strbuf_add(b, (char[2]){ c, 0 });
    *pp = p + 2;
    return 0;
}

static int read_string(struct reader *r, char **out)
{
    const char *start = r->p, *p = r->p + 1;
    char quote = *start;
    struct qimg_strbuf b = { 0 };
    qimg_strbuf_add(&b, "");
    while (*p != quote) {
        int ret = 0;
        if (*p == '\0' || (unsigned char)*p < 0x20)
            ret = stray(start, p);
        else if (*p == '\\')
            ret = read_escape(&p, quote, &b);
        else
            qimg_strbuf_add(&b, (char[2]){ *p++, 0 });
        if (ret < 0) {
            free(b.s);
            return ret;
        }
    }
    r->p = p + 1;
    *out = b.s;
    return 0;
}

/* ---------------------------------------------------------------- scalars */

static const char *skip_digits(const char *p)
{
    while (*p >= '0' && *p <= '9')
        p++;
    return p;
}

/* JSON number grammar; integers that fit stay integers, others are doubles. */
static int read_number(struct reader *r, struct qimg_json **out)
{
    const char *start = r->p, *p = start;
    bool is_float = false;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        p = skip_digits(p);
    else
        return stray(start, p);
    if (*p >= '0' && *p <= '9')
        return stray(start, p);          /* "01" */
    if (*p == '.') {
        is_float = true;
        if (!(p[1] >= '0' && p[1] <= '9'))
            return stray(start, p + 1);
        p = skip_digits(p + 1);
    }
    if (*p == 'e' || *p == 'E') {
        is_float = true;
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return stray(start, p);
        p = skip_digits(p);
    }
    r->p = p;
    errno = 0;
    if (!is_float && *start != '-') {
        uint64_t u = strtoull(start, NULL, 10);
        if (errno == 0) {
            *out = u <= INT64_MAX ? qimg_json_int((int64_t)u) : qimg_json_uint(u);
            return 0;
        }
    } else if (!is_float) {
        int64_t i = strtoll(start, NULL, 10);
        if (errno == 0) {
            *out = qimg_json_int(i);
            return 0;
        }
    }
    *out = qimg_json_double(strtod(start, NULL));
    return 0;
}

static bool is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int read_keyword(struct reader *r, struct qimg_json **out)
{
    const char *start = r->p, *p = start;
    while (is_word_char(*p))
        p++;
    size_t len = (size_t)(p - start);
    r->p = p;
    if (len == 4 && !memcmp(start, "true", 4))
        *out = qimg_json_bool(true);
    else if (len == 5 && !memcmp(start, "false", 5))
        *out = qimg_json_bool(false);
    else if (len == 4 && !memcmp(start, "null", 4))
        *out = qimg_json_null();
    else
        return qimg_error(-EINVAL, "JSON parse error, invalid keyword '%.*s'", (int)len, start);
    return 0;
}

/* ---------------------------------------------------------------- containers */

/* After a member: ',' continues, close ends; anything else is an error. */
static int read_separator(struct reader *r, char close, bool *more, const char *what)
{
    skip_blanks(r);
    if (*r->p == '\0')
        return premature_end();
    if (*r->p == close) {
        r->p++;
        *more = false;
        return 0;
    }
    if (*r->p != ',')
        return qimg_error(-EINVAL, "JSON parse error, expected separator in %s", what);
    r->p++;
    *more = true;
    return 0;
}

static int read_member(struct reader *r, struct qimg_json *obj, int depth)
{
    char *key = NULL;
    struct qimg_json *val = NULL;
    int ret;
    skip_blanks(r);
    if (*r->p == '\0')
        return premature_end();
    if (*r->p != '"' && *r->p != '\'') {
        /* a value that is not a string: a key of the wrong type */
        ret = parse_value(r, &val, depth);
        qimg_json_free(val);
        return ret < 0 ? ret : qimg_error(-EINVAL, "JSON parse error, key is not a string in object");
    }
    ret = read_string(r, &key);
    if (ret < 0)
        return ret;
    skip_blanks(r);
    if (*r->p != ':') {
        free(key);
        return *r->p ? qimg_error(-EINVAL, "JSON parse error, missing : in object pair")
                     : premature_end();
    }
    r->p++;
    ret = parse_value(r, &val, depth);
    if (ret == 0 && qimg_json_get(obj, key)) {
        qimg_json_free(val);
        ret = qimg_error(-EINVAL, "JSON parse error, duplicate key");
    } else if (ret == 0) {
        qimg_json_set(obj, key, val);
    }
    free(key);
    return ret;
}

static int read_container(struct reader *r, struct qimg_json **out, int depth)
{
    bool obj = *r->p == '{';
    char close = obj ? '}' : ']';
    struct qimg_json *c = obj ? qimg_json_object() : qimg_json_array();
    bool more = true;
    int ret = 0;
    if (depth > JSON_MAX_DEPTH) {
        qimg_json_free(c);
        return qimg_error(-EINVAL, "JSON nesting depth limit exceeded");
    }
    r->p++;
    skip_blanks(r);
    if (*r->p == close) {
        r->p++;
        more = false;
    }
    while (more && ret == 0) {
        if (obj) {
            ret = read_member(r, c, depth);
        } else {
            struct qimg_json *item = NULL;
            ret = parse_value(r, &item, depth);
            if (ret == 0)
                qimg_json_append(c, item);
        }
        if (ret == 0)
            ret = read_separator(r, close, &more, obj ? "dict" : "list");
    }
    if (ret < 0) {
        qimg_json_free(c);
        return ret;
    }
    *out = c;
    return 0;
}

static int parse_value(struct reader *r, struct qimg_json **out, int depth)
{
    char c;
    skip_blanks(r);
    c = *r->p;
    if (c == '\0')
        return premature_end();
    if (c == '{' || c == '[')
        return read_container(r, out, depth + 1);
    if (c == '"' || c == '\'') {
        char *s;
        int ret = read_string(r, &s);
        if (ret < 0)
            return ret;
        *out = qimg_json_string(s);
        free(s);
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return read_number(r, out);
    if (is_word_char(c))
        return read_keyword(r, out);
    if (c == '}' || c == ']' || c == ',' || c == ':')
        return qimg_error(-EINVAL, "JSON parse error, expecting value");
    return stray(r->p, r->p);
}

int qimg_json_parse(const char *text, struct qimg_json **out)
{
    struct reader r = { text };
    struct qimg_json *v = NULL;
    skip_blanks(&r);
    if (*r.p == '\0')
        return qimg_error(-EINVAL, "Expecting a JSON value");
    int ret = parse_value(&r, &v, 0);
    if (ret < 0)
        return ret;
    skip_blanks(&r);
    if (*r.p != '\0') {
        qimg_json_free(v);
        return qimg_error(-EINVAL, "Expecting at most one JSON value");
    }
    *out = v;
    return 0;
}
