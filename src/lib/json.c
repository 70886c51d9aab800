/* qimg - JSON values printed the way qemu-img prints its QObjects.
 *
 * Key order.  qemu keeps an object's members in a 512-bucket hash table and
 * prints bucket 0 first; inside one bucket the member added last comes
 * first (new entries go to the head of the bucket's list).  We keep members
 * in insertion order and sort them at print time by (bucket ascending,
 * insertion index descending), which gives the same sequence.  Replacing
 * the value of an existing key keeps its place, as qemu does.
 *
 * String escaping follows what qemu-img 7.2 prints: \" \\ \b \f \n \r \t,
 * other control characters, DEL and every non-ASCII character as \uXXXX
 * (upper-case hex, UTF-16 surrogate pairs above U+FFFF).  Bytes that do not
 * form a valid character (bad UTF-8, overlong forms, surrogates,
 * noncharacters, code points above U+10FFFF) print as \uFFFD, one per
 * broken sequence; the two-byte form C0 80 is accepted as U+0000.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "json-priv.h"

/* ------------------------------------------------------------ strbuf */

static void strbuf_reserve(struct qimg_strbuf *b, size_t more)
{
    size_t need = b->len + more + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->s = qimg_xrealloc(b->s, cap);
    b->cap = cap;
}

static void strbuf_add_len(struct qimg_strbuf *b, const char *s, size_t len)
{
    strbuf_reserve(b, len);
    memcpy(b->s + b->len, s, len);
    b->len += len;
    b->s[b->len] = '\0';
}

void qimg_strbuf_add(struct qimg_strbuf *b, const char *s)
{
    strbuf_add_len(b, s, strlen(s));
}

void qimg_strbuf_addf(struct qimg_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    strbuf_reserve(b, (size_t)len);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)len + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)len;
}

static void strbuf_add_spaces(struct qimg_strbuf *b, int n)
{
    strbuf_reserve(b, n > 0 ? (size_t)n : 0);
    for (int i = 0; i < n; i++)
        b->s[b->len++] = ' ';
    b->s[b->len] = '\0';
}

/* Always a valid (possibly empty) malloc'ed string. */
static char *strbuf_take(struct qimg_strbuf *b)
{
    strbuf_reserve(b, 0);
    char *s = b->s;
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

/* ------------------------------------------------------------ values */

static struct qimg_json *json_new(enum qimg_json_type type)
{
    struct qimg_json *v = qimg_xcalloc(1, sizeof *v);
    v->type = type;
    return v;
}

struct qimg_json *qimg_json_object(void) { return json_new(QIMG_JSON_OBJECT); }
struct qimg_json *qimg_json_array(void) { return json_new(QIMG_JSON_ARRAY); }

struct qimg_json *qimg_json_string(const char *s)
{
    struct qimg_json *v = json_new(QIMG_JSON_STRING);
    v->v.s = qimg_strdup(s ? s : "");
    return v;
}

struct qimg_json *qimg_json_int(int64_t i)
{
    struct qimg_json *v = json_new(QIMG_JSON_INT);
    v->v.i = i;
    return v;
}

struct qimg_json *qimg_json_uint(uint64_t u)
{
    struct qimg_json *v = json_new(QIMG_JSON_UINT);
    v->v.u = u;
    return v;
}

struct qimg_json *qimg_json_bool(bool b)
{
    struct qimg_json *v = json_new(QIMG_JSON_BOOL);
    v->v.b = b;
    return v;
}

struct qimg_json *qimg_json_double(double d)
{
    struct qimg_json *v = json_new(QIMG_JSON_DOUBLE);
    v->v.d = d;
    return v;
}

struct qimg_json *qimg_json_null(void)
{
    struct qimg_json *v = qimg_json_string("null");
    v->is_null = true;
    return v;
}

static void json_grow(struct qimg_json *c)
{
    if (c->n < c->cap)
        return;
    c->cap = c->cap ? c->cap * 2 : 8;
    c->items = qimg_xrealloc(c->items, c->cap * sizeof *c->items);
    if (c->type == QIMG_JSON_OBJECT)
        c->keys = qimg_xrealloc(c->keys, c->cap * sizeof *c->keys);
}

static ssize_t json_find(const struct qimg_json *obj, const char *key)
{
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return (ssize_t)i;
    return -1;
}

void qimg_json_set(struct qimg_json *obj, const char *key, struct qimg_json *val)
{
    if (!obj || obj->type != QIMG_JSON_OBJECT) {
        qimg_json_free(val);
        return;
    }
    ssize_t at = json_find(obj, key);
    if (at >= 0) {
        qimg_json_free(obj->items[at]);
        obj->items[at] = val;
        return;
    }
    json_grow(obj);
    obj->keys[obj->n] = qimg_strdup(key);
    obj->items[obj->n++] = val;
}

void qimg_json_append(struct qimg_json *arr, struct qimg_json *val)
{
    if (!arr || arr->type != QIMG_JSON_ARRAY) {
        qimg_json_free(val);
        return;
    }
    json_grow(arr);
    arr->items[arr->n++] = val;
}

struct qimg_json *qimg_json_get(const struct qimg_json *obj, const char *key)
{
    if (!obj || obj->type != QIMG_JSON_OBJECT)
        return NULL;
    ssize_t at = json_find(obj, key);
    return at >= 0 ? obj->items[at] : NULL;
}

void qimg_json_free(struct qimg_json *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        qimg_json_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    if (v->type == QIMG_JSON_STRING)
        free(v->v.s);
    free(v);
}

/* ------------------------------------------------------------ key order */

/* The tdb hash qemu's QDict uses, reduced to its 512 buckets. */
unsigned qimg_json_key_bucket(const char *key)
{
    size_t len = strlen(key);
    uint32_t v = 0x238F13AFu * (uint32_t)len;
    for (size_t i = 0; i < len; i++)
        v += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
    return (1103515243u * v + 12345u) % 512;
}

/* Member indices of obj in the order qemu prints them (malloc'ed). */
static size_t *object_print_order(const struct qimg_json *obj)
{
    size_t *order = qimg_xmalloc((obj->n ? obj->n : 1) * sizeof *order);
    unsigned *bucket = qimg_xmalloc((obj->n ? obj->n : 1) * sizeof *bucket);
    for (size_t i = 0; i < obj->n; i++) {
        order[i] = i;
        bucket[i] = qimg_json_key_bucket(obj->keys[i]);
    }
    /* insertion sort: objects are small; later insertions first in a bucket */
    for (size_t i = 1; i < obj->n; i++) {
        size_t cur = order[i], j = i;
        while (j > 0 && (bucket[order[j - 1]] > bucket[cur] ||
                         (bucket[order[j - 1]] == bucket[cur] && order[j - 1] < cur))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = cur;
    }
    free(bucket);
    return order;
}

/* ------------------------------------------------------------ strings */

/* Decode one character as qemu does; returns the code point or -1 for an
 * invalid sequence, and sets *len to the bytes it covers (>= 1). */
static int32_t utf8_decode(const unsigned char *p, size_t *len)
{
    static const uint32_t min_cp[] = { 0, 0, 0x80, 0x800, 0x10000, 0x200000, 0x4000000 };
    unsigned char lead = p[0];
    *len = 1;
    if (lead < 0x80)
        return lead;
    if (lead >= 0xFE || (lead & 0xC0) == 0x80)
        return -1;                      /* impossible byte or stray continuation */
    size_t n = 0;
    while (lead & (0x80 >> n))
        n++;                            /* 2..6 bytes */
    uint32_t cp = lead & (0x7Fu >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *len = i;                   /* truncated: the next byte starts anew */
            return -1;
        }
        cp = cp << 6 | (p[i] & 0x3F);
    }
    *len = n;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE)
        return -1;                      /* noncharacter */
    if (cp < min_cp[n] && !(cp == 0 && n == 2))
        return -1;                      /* overlong, except C0 80 */
    return (int32_t)cp;
}

static void add_escaped_char(struct qimg_strbuf *b, int32_t cp)
{
    switch (cp) {
    case '"':  qimg_strbuf_add(b, "\\\""); return;
    case '\\': qimg_strbuf_add(b, "\\\\"); return;
    case '\b': qimg_strbuf_add(b, "\\b"); return;
    case '\f': qimg_strbuf_add(b, "\\f"); return;
    case '\n': qimg_strbuf_add(b, "\\n"); return;
    case '\r': qimg_strbuf_add(b, "\\r"); return;
    case '\t': qimg_strbuf_add(b, "\\t"); return;
    }
    if (cp < 0)
        cp = 0xFFFD;
    if (cp > 0xFFFF) {
        cp -= 0x10000;
        qimg_strbuf_addf(b, "\\u%04X\\u%04X", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
    } else if (cp < 0x20 || cp >= 0x7F) {
        qimg_strbuf_addf(b, "\\u%04X", (unsigned)cp);
    } else {
        char c = (char)cp;
        strbuf_add_len(b, &c, 1);
    }
}

static void add_quoted(struct qimg_strbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    qimg_strbuf_add(b, "\"");
    while (*p) {
        size_t len;
        int32_t cp = utf8_decode(p, &len);
        add_escaped_char(b, cp);
        p += len;
    }
    qimg_strbuf_add(b, "\"");
}

/* ------------------------------------------------------------ printing */

static void add_scalar(struct qimg_strbuf *b, const struct qimg_json *v, bool quote)
{
    switch (v->type) {
    case QIMG_JSON_STRING:
        if (v->is_null || !quote)
            qimg_strbuf_add(b, v->v.s);
        else
            add_quoted(b, v->v.s);
        break;
    case QIMG_JSON_INT:    qimg_strbuf_addf(b, "%" PRId64, v->v.i); break;
    case QIMG_JSON_UINT:   qimg_strbuf_addf(b, "%" PRIu64, v->v.u); break;
    case QIMG_JSON_BOOL:   qimg_strbuf_add(b, v->v.b ? "true" : "false"); break;
    case QIMG_JSON_DOUBLE: qimg_strbuf_addf(b, "%.17g", v->v.d); break;
    default: break;
    }
}

static bool is_container(const struct qimg_json *v)
{
    return v->type == QIMG_JSON_OBJECT || v->type == QIMG_JSON_ARRAY;
}

/* pretty: newline + 4 spaces per level; compact: "a, b" on one line.
 * Empty containers keep the newline in pretty mode ("[\n    ]"), as qemu. */
static void add_value(struct qimg_strbuf *b, const struct qimg_json *v, int level, bool pretty)
{
    if (!is_container(v)) {
        add_scalar(b, v, true);
        return;
    }
    bool obj = v->type == QIMG_JSON_OBJECT;
    size_t *order = obj ? object_print_order(v) : NULL;
    qimg_strbuf_add(b, obj ? "{" : "[");
    for (size_t i = 0; i < v->n; i++) {
        size_t at = obj ? order[i] : i;
        if (i > 0)
            qimg_strbuf_add(b, pretty ? "," : ", ");
        if (pretty) {
            qimg_strbuf_add(b, "\n");
            strbuf_add_spaces(b, 4 * (level + 1));
        }
        if (obj) {
            add_quoted(b, v->keys[at]);
            qimg_strbuf_add(b, ": ");
        }
        add_value(b, v->items[at], level + 1, pretty);
    }
    if (pretty) {
        qimg_strbuf_add(b, "\n");
        strbuf_add_spaces(b, 4 * level);
    }
    qimg_strbuf_add(b, obj ? "}" : "]");
    free(order);
}

char *qimg_json_to_string(const struct qimg_json *v)
{
    struct qimg_strbuf b = { 0 };
    if (v)
        add_value(&b, v, 0, true);
    return strbuf_take(&b);
}

char *qimg_json_to_string_compact(const struct qimg_json *v)
{
    struct qimg_strbuf b = { 0 };
    if (v)
        add_value(&b, v, 0, false);
    return strbuf_take(&b);
}

/* ------------------------------------------------------------ human dump */

static void dump_human(struct qimg_strbuf *b, const struct qimg_json *v, int indent);

/* "key: value" or "key:" + children, with '-' shown as ' ' in keys. */
static void dump_member(struct qimg_strbuf *b, const char *key, const struct qimg_json *v,
                        int indent)
{
    strbuf_add_spaces(b, indent);
    for (const char *k = key; *k; k++)
        strbuf_add_len(b, *k == '-' ? " " : k, 1);
    if (is_container(v)) {
        qimg_strbuf_add(b, ":\n");
        dump_human(b, v, indent + 4);
        return;
    }
    qimg_strbuf_add(b, ": ");
    add_scalar(b, v, false);
    qimg_strbuf_add(b, "\n");
}

static void dump_item(struct qimg_strbuf *b, size_t index, const struct qimg_json *v, int indent)
{
    strbuf_add_spaces(b, indent);
    qimg_strbuf_addf(b, "[%zu]:", index);
    if (is_container(v)) {
        qimg_strbuf_add(b, "\n");
        dump_human(b, v, indent + 4);
        return;
    }
    qimg_strbuf_add(b, " ");
    add_scalar(b, v, false);
    qimg_strbuf_add(b, "\n");
}

static void dump_human(struct qimg_strbuf *b, const struct qimg_json *v, int indent)
{
    if (v->type == QIMG_JSON_OBJECT) {
        size_t *order = object_print_order(v);
        for (size_t i = 0; i < v->n; i++)
            dump_member(b, v->keys[order[i]], v->items[order[i]], indent);
        free(order);
    } else if (v->type == QIMG_JSON_ARRAY) {
        for (size_t i = 0; i < v->n; i++)
            dump_item(b, i, v->items[i], indent);
    } else {
        strbuf_add_spaces(b, indent);
        add_scalar(b, v, false);
        qimg_strbuf_add(b, "\n");
    }
}

void qimg_json_dump_human(const struct qimg_json *v, int indent, char **out)
{
    struct qimg_strbuf b = { 0 };
    if (*out)
        qimg_strbuf_add(&b, *out);
    if (v)
        dump_human(&b, v, indent);
    free(*out);
    *out = strbuf_take(&b);
}
