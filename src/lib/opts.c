/* qimg - option lists: -o text, key=value strings and json:{...} names.
 *
 * Behaviour observed with qemu-img 7.2 (qemu-img create -o ...):
 *  - options are separated by ','; in a value ",," is a literal comma;
 *    a name runs to the first '=' or ',' (no escaping in names);
 *  - a bare "name" means name=on, a bare "noname" means name=off;
 *  - a repeated option: the later value wins;
 *  - an -o text that is empty, starts with ',' or ends in an odd run of
 *    commas is refused up front: "Invalid option list: TEXT".
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "json-priv.h"

/* ---------------------------------------------------------------- storage */

static qimg_opts *opts_get_or_new(qimg_opts **opts)
{
    if (!*opts)
        *opts = qimg_xcalloc(1, sizeof **opts);
    return *opts;
}

static struct qimg_opt_pair *opts_find(const qimg_opts *o, const char *name)
{
    if (!o)
        return NULL;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->v[i].name, name) == 0)
            return &o->v[i];
    return NULL;
}

/* Later values replace earlier ones in place, keeping the first position
 * (so "Invalid parameter" still names options in the order given). */
int qimg_opts_set(qimg_opts **opts, const char *name, const char *value)
{
    qimg_opts *o = opts_get_or_new(opts);
    struct qimg_opt_pair *pair = opts_find(o, name);
    if (pair) {
        free(pair->value);
        pair->value = qimg_strdup(value);
        pair->kind = 0;
        return 0;
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 8;
        o->v = qimg_xrealloc(o->v, o->cap * sizeof *o->v);
    }
    o->v[o->n++] = (struct qimg_opt_pair){ qimg_strdup(name), qimg_strdup(value), false, 0 };
    return 0;
}

const char *qimg_opts_get(const qimg_opts *opts, const char *name)
{
    struct qimg_opt_pair *pair = opts_find(opts, name);
    return pair ? pair->value : NULL;
}

size_t qimg_opts_count(const qimg_opts *opts)
{
    return opts ? opts->n : 0;
}

const char *qimg_opts_name(const qimg_opts *opts, size_t i)
{
    return opts && i < opts->n ? opts->v[i].name : NULL;
}

char qimg_opts_kind(const qimg_opts *opts, size_t i)
{
    return opts && i < opts->n ? opts->v[i].kind : 0;
}

/* Set name=value keeping the kind the value had. */
static void set_with_kind(qimg_opts **o, const char *name, const char *value, char kind)
{
    qimg_opts_set(o, name, value);
    opts_find(*o, name)->kind = kind;
}

int qimg_opts_set_typed(qimg_opts **o, const char *name, const char *value, char kind)
{
    int r = qimg_opts_set(o, name, value);
    if (r == 0)
        opts_find(*o, name)->kind = kind;
    return r;
}

const char *qimg_opts_value(const qimg_opts *opts, size_t i)
{
    return opts && i < opts->n ? opts->v[i].value : NULL;
}

void qimg_opts_free(qimg_opts *opts)
{
    if (!opts)
        return;
    for (size_t i = 0; i < opts->n; i++) {
        free(opts->v[i].name);
        free(opts->v[i].value);
    }
    free(opts->v);
    free(opts);
}

/* The options under "prefix." with the prefix taken off, in their order
 * ("file.driver=x" under "file" is "driver=x").  A bare key equal to the
 * prefix (json's "file": "name" flattened to file=name) becomes
 * "filename".  NULL when there are none.  The pairs taken are marked
 * used in the parent. */
qimg_opts *qimg_opts_subtree(qimg_opts *o, const char *prefix)
{
    qimg_opts *sub = NULL;
    size_t plen = strlen(prefix);
    for (size_t i = 0; o && i < o->n; i++) {
        const char *name = o->v[i].name;
        if (strncmp(name, prefix, plen) != 0)
            continue;
        if (name[plen] == '\0')
            set_with_kind(&sub, "filename", o->v[i].value, o->v[i].kind);
        else if (name[plen] == '.' && name[plen + 1])
            set_with_kind(&sub, name + plen + 1, o->v[i].value, o->v[i].kind);
        else
            continue;
        o->v[i].used = true;
    }
    return sub;
}

/* A copy with the same pairs and used marks (NULL stays NULL). */
qimg_opts *qimg_opts_copy(const qimg_opts *o)
{
    qimg_opts *c = NULL;
    for (size_t i = 0; o && i < o->n; i++) {
        set_with_kind(&c, o->v[i].name, o->v[i].value, o->v[i].kind);
        c->v[c->n - 1].used = o->v[i].used;
    }
    return c;
}

const char *qimg_opts_first_unused(const qimg_opts *o)
{
    for (size_t i = 0; o && i < o->n; i++)
        if (!o->v[i].used)
            return o->v[i].name;
    return NULL;
}

/* The unused option qemu names first: it walks its option dictionary in
 * hash-bucket order, the latest insertion first within a bucket. */
const char *qimg_opts_first_unused_qemu(const qimg_opts *o)
{
    const char *best = NULL;
    unsigned best_bucket = 0;
    for (size_t i = 0; o && i < o->n; i++) {
        if (o->v[i].used)
            continue;
        unsigned b = qimg_json_key_bucket(o->v[i].name);
        if (!best || b <= best_bucket) {
            best = o->v[i].name;
            best_bucket = b;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- text */

/* A value up to the next single ',', with ",," read as ','.  *pp ends on
 * the separating ',' or the NUL. */
static char *read_value(const char **pp)
{
    const char *p = *pp;
    struct qimg_strbuf b = { 0 };
    qimg_strbuf_add(&b, "");
    for (; *p; p++) {
        if (*p == ',') {
            if (p[1] != ',')
                break;
            p++;
        }
        qimg_strbuf_add(&b, (char[2]){ *p, 0 });
    }
    *pp = p;
    return b.s;
}

static char *read_name(const char **pp)
{
    size_t len = strcspn(*pp, "=,");
    char *name = strndup(*pp, len);
    if (!name)
        abort();
    *pp += len;
    return name;
}

int qimg_opts_parse(qimg_opts **opts, const char *text)
{
    const char *p = text;
    opts_get_or_new(opts);
    while (*p) {
        CLEANUP_FREE char *name = read_name(&p);
        CLEANUP_FREE char *value = NULL;
        if (*p == '=') {
            p++;
            value = read_value(&p);
        } else if (strncmp(name, "no", 2) == 0) {
            memmove(name, name + 2, strlen(name + 2) + 1);
            value = qimg_strdup("off");
        } else {
            value = qimg_strdup("on");
        }
        qimg_opts_set(opts, name, value);
        if (*p == ',')
            p++;
    }
    return 0;
}

bool qimg_opts_is_help(const char *text)
{
    return text && (strcmp(text, "help") == 0 || strcmp(text, "?") == 0);
}

int qimg_opts_check_text(const char *text)
{
    size_t len = strlen(text), commas = 0;
    while (commas < len && text[len - 1 - commas] == ',')
        commas++;
    if (len == 0 || text[0] == ',' || commas % 2)
        return qimg_error(-EINVAL, "Invalid option list: %s", text);
    return 0;
}

/* ---------------------------------------------------------------- getters */

static struct qimg_opt_pair *opts_take(qimg_opts *o, const char *name)
{
    struct qimg_opt_pair *pair = opts_find(o, name);
    if (pair)
        pair->used = true;
    return pair;
}

int qimg_opts_get_string(qimg_opts *o, const char *name, const char **out)
{
    struct qimg_opt_pair *pair = opts_take(o, name);
    if (!pair)
        return 0;
    *out = pair->value;
    return 1;
}

int qimg_opts_get_size(qimg_opts *o, const char *name, uint64_t *out)
{
    struct qimg_opt_pair *pair = opts_take(o, name);
    if (!pair)
        return 0;
    int ret = qimg_parse_size(pair->value, out);
    if (ret == -ERANGE)
        return qimg_error(ret, "Value '%s' is out of range for parameter '%s'", pair->value, name);
    if (ret < 0)
        return qimg_error(ret, "Parameter '%s' expects a non-negative number below 2^64\n"
                          "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                          "and exabytes, respectively.", name);
    return 1;
}

/* qemu's boolean spellings (case-sensitive). */
static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "y" };
    static const char *const no[] = { "off", "no", "false", "n" };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(yes); i++) {
        if (strcmp(s, yes[i]) == 0) { *out = true; return 0; }
        if (strcmp(s, no[i]) == 0) { *out = false; return 0; }
    }
    return -EINVAL;
}

int qimg_opts_get_bool(qimg_opts *o, const char *name, bool *out)
{
    struct qimg_opt_pair *pair = opts_take(o, name);
    if (!pair)
        return 0;
    if (parse_bool(pair->value, out) < 0)
        return qimg_error(-EINVAL, "Parameter '%s' expects 'on' or 'off'", name);
    return 1;
}

/* strtoull with base 0 (so "0x10" and "010" octal); like qemu, a leading
 * '-' wraps around ("-1" is 2^64-1) rather than failing. */
int qimg_opts_get_number(qimg_opts *o, const char *name, uint64_t *out)
{
    struct qimg_opt_pair *pair = opts_take(o, name);
    char *end;
    if (!pair)
        return 0;
    errno = 0;
    uint64_t v = strtoull(pair->value, &end, 0);
    if (errno == ERANGE)
        return qimg_error(-ERANGE, "Value '%s' is too large for parameter '%s'", pair->value, name);
    if (end == pair->value || *end)
        return qimg_error(-EINVAL, "Parameter '%s' expects a number", name);
    *out = v;
    return 1;
}

/* ---------------------------------------------------------------- keyval */

/*
 * key=value,... as for --image-opts and --object.  A first element without
 * '=' is the value of implied_key (when given).  Other bare keys mean "on",
 * unless bare_is_error, where qemu says "Expected '=' after parameter".
 */
int qimg_keyval_parse_strict(qimg_opts **opts, const char *text, const char *implied_key,
                             bool bare_is_error)
{
    const char *p = text;
    bool first = true;
    opts_get_or_new(opts);
    while (*p) {
        if (first && implied_key && p[strcspn(p, "=,")] != '=') {
            CLEANUP_FREE char *value = read_value(&p);
            qimg_opts_set(opts, implied_key, value);
        } else {
            CLEANUP_FREE char *name = read_name(&p);
            CLEANUP_FREE char *value = NULL;
            if (*p == '=') {
                p++;
                value = read_value(&p);
            } else if (bare_is_error) {
                return qimg_error(-EINVAL, "Expected '=' after parameter '%s'", name);
            } else {
                value = qimg_strdup("on");
            }
            qimg_opts_set(opts, name, value);
        }
        first = false;
        if (*p == ',')
            p++;
    }
    return 0;
}

int qimg_keyval_parse(qimg_opts **opts, const char *text, const char *implied_key)
{
    return qimg_keyval_parse_strict(opts, text, implied_key, false);
}

/* ---------------------------------------------------------------- json: */

static char *scalar_text(const struct qimg_json *v)
{
    switch (v->type) {
    case QIMG_JSON_STRING: return qimg_strdup(v->v.s);
    case QIMG_JSON_INT:    return qimg_asprintf("%" PRId64, v->v.i);
    case QIMG_JSON_UINT:   return qimg_asprintf("%" PRIu64, v->v.u);
    case QIMG_JSON_DOUBLE: return qimg_asprintf("%.17g", v->v.d);
    case QIMG_JSON_BOOL:   return qimg_strdup(v->v.b ? "on" : "off");
    default:               return qimg_strdup("");
    }
}

static void flatten(qimg_opts **opts, const struct qimg_json *v, const char *prefix);

static void flatten_member(qimg_opts **opts, const char *prefix, const char *key,
                           const struct qimg_json *v)
{
    CLEANUP_FREE char *name = prefix ? qimg_asprintf("%s.%s", prefix, key) : qimg_strdup(key);
    bool container = v->type == QIMG_JSON_OBJECT || v->type == QIMG_JSON_ARRAY;
    if (v->is_null) {
        /* null: as if not given, but for "backing": no backing image */
        if (strcmp(key, "backing") == 0)
            qimg_opts_set(opts, name, QIMG_OPTS_NULL);
        return;
    }
    if (container && v->n == 0) {
        qimg_opts_set(opts, name, v->type == QIMG_JSON_OBJECT ? "{}" : "[]");
    } else if (container) {
        flatten(opts, v, name);
    } else {
        CLEANUP_FREE char *text = scalar_text(v);
        char kind = v->type == QIMG_JSON_BOOL ? QIMG_OPT_KIND_BOOL
                  : v->type == QIMG_JSON_STRING ? 0 : QIMG_OPT_KIND_NUMBER;
        set_with_kind(opts, name, text, kind);
    }
}

/* Scalars first, then nested members: a nested {"file":{"filename":..}}
 * overrides a literal "file.filename" key, as qemu's flattening does. */
static void flatten(qimg_opts **opts, const struct qimg_json *v, const char *prefix)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < v->n; i++) {
            const struct qimg_json *item = v->items[i];
            bool container = item->type == QIMG_JSON_OBJECT || item->type == QIMG_JSON_ARRAY;
            if (container != (pass == 1))
                continue;
            char index[24];
            snprintf(index, sizeof index, "%zu", i);
            flatten_member(opts, prefix, v->type == QIMG_JSON_OBJECT ? v->keys[i] : index, item);
        }
    }
}

int qimg_json_filename_parse(qimg_opts **opts, const char *json_text)
{
    struct qimg_json *tree = NULL;
    if (strncmp(json_text, "json:", 5) == 0)
        json_text += 5;
    int ret = qimg_json_parse(json_text, &tree);
    if (ret < 0) {
        qimg_error_prefix("Could not parse the JSON options");
        return ret;
    }
    if (tree->type != QIMG_JSON_OBJECT) {
        qimg_json_free(tree);
        return qimg_error(-EINVAL, "Invalid JSON object given");
    }
    opts_get_or_new(opts);
    flatten(opts, tree, NULL);
    qimg_json_free(tree);
    return 0;
}
