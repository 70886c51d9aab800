/* qimg - the "blkdebug" storage backend: a filter over another storage
 * object that fails chosen requests, to test error paths, with qemu's
 * rules and names so that one rules file drives both tools.
 *
 * Names: "blkdebug:RULES:IMAGE" (RULES may be empty), or options: config
 * (the rules file), image (a name, or image.* options), align, and rules
 * as inject-error.N.* / set-state.N.* keys.
 *
 * Rules (documented by qemu in docs/devel/testing/blkdebug):
 * - inject-error: event, errno (default EIO), sector (default any),
 *   once (off), immediately (no meaning without asynchronous I/O here),
 *   state (0: any), iotype (default: read, write, write-zeroes, discard,
 *   flush).  A rule does nothing until its event happens while the state
 *   matches; it is then armed, and from then on fails every matching
 *   request on this storage with -errno; once=on disarms and drops it
 *   after its first failure.  An event that arms rules first disarms
 *   every other armed rule.
 * - set-state: event, state (0: any), new_state.  The state starts at 1;
 *   all rules of one event see the state from before it.
 * Events come from the format driver above (qimg_io_event: "l2_load",
 * "read_aio" ...) and from this filter itself for write requests
 * ("pwritev", "pwritev_zero", "pwritev_done", read-modify-write steps).
 * The event "none" happens once, at open: its rules are armed from the
 * start.
 *
 * The rules file is qemu's -readconfig format: "[inject-error]" or
 * "[set-state]" sections of lines  key = "value",  '#' comments.
 *
 * align=N makes N the request alignment: unaligned reads are widened to
 * whole blocks and unaligned writes become read-modify-write, as qemu's
 * block layer does for the filter, so rules see the aligned requests.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>

#include "internal.h"

enum bd_iotype { IOT_READ, IOT_WRITE, IOT_WRITE_ZEROES, IOT_DISCARD, IOT_FLUSH, IOT_BLOCK_STATUS };
static const char *const iotype_names[] = { "read", "write", "write-zeroes", "discard", "flush",
                                            "block-status" };
#define IOT_DEFAULT_MASK ((1u << IOT_READ) | (1u << IOT_WRITE) | (1u << IOT_WRITE_ZEROES) | \
                          (1u << IOT_DISCARD) | (1u << IOT_FLUSH))

struct bd_rule {
    int event;
    bool inject;             /* inject-error, else set-state */
    int64_t state;           /* 0: any */
    int error;               /* inject: positive errno */
    bool once;
    int64_t offset;          /* inject: byte offset that must be in the request, -1 any */
    unsigned iotypes;        /* inject: mask of enum bd_iotype */
    int64_t new_state;       /* set-state */
    bool armed, dropped;
};

struct blkdebug {
    struct qimg_io *child;
    pthread_mutex_t lock;    /* rules and state: requests come from many threads */
    int64_t state;
    struct bd_rule *rules;   /* in the order given: file first, then options */
    size_t nrules;
    uint64_t align;
    char *config;            /* the rules file, or NULL */
    bool named_only;         /* no rule or limit from options: a name opens it again */
    bool unflushed;          /* a write was tried since the last good flush */
};

/* ---- rules ---- */

static const char *const inject_keys[] = { "event", "state", "iotype", "errno", "sector", "once",
                                           "immediately", NULL };
static const char *const set_state_keys[] = { "event", "state", "new_state", NULL };

static bool key_known(const char *const *keys, const char *key)
{
    for (; *keys; keys++)
        if (strcmp(*keys, key) == 0)
            return true;
    return false;
}

static int parse_iotype(const char *name, unsigned *mask)
{
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(iotype_names); i++)
        if (strcmp(iotype_names[i], name) == 0) {
            *mask = 1u << i;
            return 0;
        }
    return qimg_error(-EINVAL, "invalid parameter value: %s", name);
}

/* One rule from its section's keys (all marked used or refused). */
static int add_rule(struct blkdebug *bd, bool inject, qimg_opts *o)
{
    const char *bad = NULL;
    for (size_t i = 0; o && i < o->n && !bad; i++)
        if (!key_known(inject ? inject_keys : set_state_keys, o->v[i].name))
            bad = o->v[i].name;
    if (bad)
        return qimg_error(-EINVAL, "Invalid parameter '%s'", bad);
    const char *event = NULL, *iotype = NULL;
    struct bd_rule rule = { .inject = inject, .error = EIO, .offset = -1,
                            .iotypes = IOT_DEFAULT_MASK };
    uint64_t state = 0, err = EIO, sector = UINT64_MAX, new_state = 0;
    bool immediately;
    int r = 0;
    if (r >= 0) r = qimg_opts_get_number(o, "state", &state);
    if (r >= 0 && inject) r = qimg_opts_get_number(o, "errno", &err);
    if (r >= 0 && inject) r = qimg_opts_get_number(o, "sector", &sector);
    if (r >= 0 && inject) r = qimg_opts_get_bool(o, "once", &rule.once);
    if (r >= 0 && inject) r = qimg_opts_get_bool(o, "immediately", &immediately);
    if (r >= 0 && !inject) r = qimg_opts_get_number(o, "new_state", &new_state);
    if (r < 0)
        return r;
    if (qimg_opts_get_string(o, "event", &event) != 1)
        return qimg_error(-EINVAL, "Missing event name for rule");
    rule.event = qimg_io_event_lookup(event);
    if (rule.event < 0)
        return qimg_error(-EINVAL, "invalid parameter value: %s", event);
    if (inject && qimg_opts_get_string(o, "iotype", &iotype) == 1 &&
        (r = parse_iotype(iotype, &rule.iotypes)) < 0)
        return r;
    /* numbers wrap as qemu's int fields do */
    rule.state = (int64_t)(int32_t)state;
    rule.new_state = (int64_t)(int32_t)new_state;
    rule.error = (int)(int32_t)err;
    if (sector != UINT64_MAX && sector <= INT64_MAX / 512)
        rule.offset = (int64_t)sector * 512;
    bd->rules = qimg_xrealloc(bd->rules, (bd->nrules + 1) * sizeof *bd->rules);
    bd->rules[bd->nrules++] = rule;
    return 0;
}

/* ---- the rules file ---- */

struct section { bool inject; qimg_opts *keys; };
struct sections { struct section *v; size_t n; };

/* "[name]" or "[name "id"]": a new section of that kind. */
static int section_start(struct sections *secs, const char *line)
{
    char name[64], id[64];
    if (sscanf(line, "[%63s \"%63[^\"]\"]", name, id) != 2 && sscanf(line, "[%63[^]]]", name) != 1)
        return qimg_error(-EINVAL, "parse error");
    bool inject = strcmp(name, "inject-error") == 0;
    if (!inject && strcmp(name, "set-state") != 0)
        return qimg_error(-EINVAL, "There is no option group '%s'", name);
    secs->v = qimg_xrealloc(secs->v, (secs->n + 1) * sizeof *secs->v);
    secs->v[secs->n++] = (struct section){ inject, NULL };
    return 0;
}

/* key = "value"; as in qemu, a line that starts with a word but is not
 * in that form is that key with an empty value (then refused by name). */
static bool key_value(const char *line, char key[64], char value[1024])
{
    if (sscanf(line, " %63s = \"%1023[^\"]\"", key, value) == 2)
        return true;
    value[0] = '\0';
    return sscanf(line, " %63s", key) == 1;
}

static int parse_rules_text(struct sections *secs, FILE *f)
{
    char line[1100], key[64], value[1024];
    while (fgets(line, sizeof line, f)) {
        int r = 0;
        if (line[0] == '\n' || line[0] == '#')
            continue;
        if (line[0] == '[')
            r = section_start(secs, line);
        else if (!key_value(line, key, value))
            r = qimg_error(-EINVAL, "parse error");
        else if (secs->n == 0)
            r = qimg_error(-EINVAL, "no group defined");
        else
            qimg_opts_set(&secs->v[secs->n - 1].keys, key, value);
        if (r < 0)
            return r;
    }
    return 0;
}

/* inject-error rules first, then set-state, each in file order (as qemu
 * registers them). */
static int add_sections(struct blkdebug *bd, const struct sections *secs)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < secs->n; i++) {
            if (secs->v[i].inject != (pass == 0))
                continue;
            int r = add_rule(bd, secs->v[i].inject, secs->v[i].keys);
            if (r < 0)
                return r;
        }
    return 0;
}

static int read_rules_file(struct blkdebug *bd, const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return qimg_error_errno(-errno, "Could not read blkdebug config file");
    struct sections secs = { 0 };
    int r = parse_rules_text(&secs, f);
    fclose(f);
    if (r == 0)
        r = add_sections(bd, &secs);
    for (size_t i = 0; i < secs.n; i++)
        qimg_opts_free(secs.v[i].keys);
    free(secs.v);
    return r;
}
/* inject-error.0.event=... set-state.1.new_state=...: rules N = 0, 1, ...
 * in order, until the first missing N. */
static int rules_from_options(struct blkdebug *bd, qimg_opts *opts, const char *kind, bool inject)
{
    for (unsigned n = 0;; n++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s.%u", kind, n);
        qimg_opts *o = qimg_opts_subtree(opts, prefix);
        if (!o)
            return 0;
        int r = add_rule(bd, inject, o);
        qimg_opts_free(o);
        if (r < 0)
            return r;
    }
}

/* ---- events and checks ---- */

static void process_event(struct blkdebug *bd, enum qimg_io_event ev)
{
    bool armed_any = false;
    int64_t new_state = bd->state;
    for (size_t i = 0; i < bd->nrules; i++) {
        struct bd_rule *rule = &bd->rules[i];
        if (rule->dropped || rule->event != (int)ev || (rule->state && rule->state != bd->state))
            continue;
        if (!rule->inject) {
            new_state = rule->new_state;
            continue;
        }
        if (!armed_any) {
            for (size_t k = 0; k < bd->nrules; k++)
                bd->rules[k].armed = false;
            armed_any = true;
        }
        rule->armed = true;
    }
    bd->state = new_state;
}

static void bd_event(struct qimg_io *io, enum qimg_io_event ev)
{
    struct blkdebug *bd = io->priv;
    pthread_mutex_lock(&bd->lock);
    process_event(bd, ev);
    pthread_mutex_unlock(&bd->lock);
}

/* The first armed rule for this request: 0 or -errno. */
static int rule_check(struct qimg_io *io, enum bd_iotype type, uint64_t off, uint64_t len)
{
    struct blkdebug *bd = io->priv;
    int err = 0;
    pthread_mutex_lock(&bd->lock);
    for (size_t i = 0; i < bd->nrules; i++) {
        struct bd_rule *rule = &bd->rules[i];
        if (!rule->armed || !(rule->iotypes & (1u << type)))
            continue;
        if (rule->offset >= 0 && !(len && (uint64_t)rule->offset >= off &&
                                   (uint64_t)rule->offset - off < len))
            continue;
        err = rule->error;
        if (err && rule->once)
            rule->armed = false, rule->dropped = true;
        break;
    }
    pthread_mutex_unlock(&bd->lock);
    if (err)
        return qimg_error(-err, "%s", strerror(err));
    return 0;
}

/* ---- I/O ---- */

static bool aligned(const struct blkdebug *bd, uint64_t off, uint64_t len)
{
    return bd->align <= 1 || ((off | len) & (bd->align - 1)) == 0;
}

static int read_aligned(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct blkdebug *bd = io->priv;
    int r = rule_check(io, IOT_READ, off, len);
    return r < 0 ? r : qimg_io_pread(bd->child, buf, len, off);
}

/* [off, off+len) widened to whole align blocks, and a buffer for them. */
static int widen(const struct blkdebug *bd, uint64_t off, size_t len, uint64_t *start, size_t *n,
                 uint8_t **bounce)
{
    uint64_t end;
    *start = off & ~(bd->align - 1);
    if (!qimg_add_ok(off, len, &end) || !qimg_round_up_ok(end, bd->align, &end) ||
        end - *start > SIZE_MAX / 2)
        return qimg_error(-EINVAL, "Request too large");
    *n = (size_t)(end - *start);
    *bounce = qimg_io_buffer(*n);
    return 0;
}

static int bd_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    struct blkdebug *bd = io->priv;
    if (aligned(bd, off, len))
        return read_aligned(io, buf, len, off);
    uint64_t start = 0;
    size_t n = 0;
    CLEANUP_FREE uint8_t *bounce = NULL;
    int r = widen(bd, off, len, &start, &n, &bounce);
    if (r < 0)
        return r;
    r = read_aligned(io, bounce, n, start);
    if (r == 0)
        memcpy(buf, bounce + (off - start), len);
    return r;
}

/* A write request was made: the next flush has something to do. */
static void note_write(struct blkdebug *bd)
{
    pthread_mutex_lock(&bd->lock);
    bd->unflushed = true;
    pthread_mutex_unlock(&bd->lock);
}

static int write_aligned(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    struct blkdebug *bd = io->priv;
    note_write(bd);
    bd_event(io, QIMG_EV_PWRITEV);
    int r = rule_check(io, IOT_WRITE, off, len);
    if (r == 0)
        r = qimg_io_pwrite(bd->child, buf, len, off);
    bd_event(io, QIMG_EV_PWRITEV_DONE);
    return r;
}

/* Read-modify-write of the partial first and last blocks, with the
 * events qemu's block layer gives (head, then tail). */
static int bd_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    struct blkdebug *bd = io->priv;
    if (aligned(bd, off, len))
        return write_aligned(io, buf, len, off);
    uint64_t start = 0;
    size_t n = 0;
    CLEANUP_FREE uint8_t *bounce = NULL;
    int r = widen(bd, off, len, &start, &n, &bounce);
    if (r < 0)
        return r;
    uint64_t last = start + n - bd->align;
    bool head = off > start, tail = off + len < start + n;
    if (head) {
        bd_event(io, QIMG_EV_PWRITEV_RMW_HEAD);
        r = read_aligned(io, bounce, bd->align, start);
        bd_event(io, QIMG_EV_PWRITEV_RMW_AFTER_HEAD);
    }
    if (r == 0 && tail && !(head && last == start)) {
        bd_event(io, QIMG_EV_PWRITEV_RMW_TAIL);
        r = read_aligned(io, bounce + (last - start), bd->align, last);
        bd_event(io, QIMG_EV_PWRITEV_RMW_AFTER_TAIL);
    }
    if (r < 0)
        return r;
    memcpy(bounce + (off - start), buf, len);
    return write_aligned(io, bounce, n, start);
}

static int bd_zero(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags)
{
    struct blkdebug *bd = io->priv;
    if (flags & QIMG_IO_ZERO_NO_FALLBACK)
        return qimg_io_zero_fast(bd->child, off, len);   /* an optimisation attempt, not a request */
    note_write(bd);
    bd_event(io, QIMG_EV_PWRITEV_ZERO);
    int r = rule_check(io, IOT_WRITE_ZEROES, off, len);
    if (r == 0)
        r = qimg_io_zero(bd->child, off, len, flags & QIMG_IO_ZERO_MAY_UNMAP);
    bd_event(io, QIMG_EV_PWRITEV_DONE);
    return r;
}

static int bd_discard(struct qimg_io *io, uint64_t off, uint64_t len)
{
    note_write(io->priv);
    int r = rule_check(io, IOT_DISCARD, off, len);
    return r < 0 ? r : qimg_io_discard(((struct blkdebug *)io->priv)->child, off, len);
}

/* As qemu's block layer, a flush with no write since the last good one
 * is not passed on: no rule sees it. */
static int bd_flush(struct qimg_io *io)
{
    struct blkdebug *bd = io->priv;
    if (io->flags & QIMG_IO_UNSAFE)
        return 0;
    pthread_mutex_lock(&bd->lock);
    bool unflushed = bd->unflushed;
    bd->unflushed = false;
    pthread_mutex_unlock(&bd->lock);
    if (!unflushed)
        return 0;
    int r = rule_check(io, IOT_FLUSH, 0, 0);
    if (r == 0)
        r = qimg_io_flush(bd->child);
    if (r < 0)
        note_write(bd);
    return r;
}

static int bd_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    int r = rule_check(io, IOT_BLOCK_STATUS, off, len);
    return r < 0 ? r : qimg_io_extent(((struct blkdebug *)io->priv)->child, off, len, pnum, kind);
}

static int bd_get_size(struct qimg_io *io, uint64_t *size)
{
    return qimg_io_get_size(((struct blkdebug *)io->priv)->child, size);
}

static int bd_truncate(struct qimg_io *io, uint64_t size)
{
    note_write(io->priv);
    return qimg_io_truncate(((struct blkdebug *)io->priv)->child, size);
}

static int bd_preallocate(struct qimg_io *io, uint64_t off, uint64_t len, bool full)
{
    return qimg_io_preallocate(((struct blkdebug *)io->priv)->child, off, len, full);
}

static int bd_lock(struct qimg_io *io, unsigned take, unsigned unshare)
{
    return qimg_io_lock(((struct blkdebug *)io->priv)->child, take, unshare);
}

static void bd_hint(struct qimg_io *io, enum qimg_io_hint kind, uint64_t off, uint64_t len)
{
    qimg_io_hint(((struct blkdebug *)io->priv)->child, kind, off, len);
}

static bool bd_same(struct qimg_io *a, struct qimg_io *b)
{
    return qimg_io_same(((struct blkdebug *)a->priv)->child, ((struct blkdebug *)b->priv)->child);
}

struct qimg_io *qimg_io_blkdebug_child(struct qimg_io *io)
{
    return io->ops == &qimg_io_blkdebug_ops && io->priv ? ((struct blkdebug *)io->priv)->child : NULL;
}

/* ---- open ---- */

/* "blkdebug:RULES:IMAGE": the rules file ends at the first colon. */
static int bd_parse_filename(const char *filename, qimg_opts *opts)
{
    /* without the prefix (-f blkdebug NAME), the name is the image */
    if (strncmp(filename, "blkdebug:", 9) != 0)
        return qimg_opts_set(&opts, "x-image", filename);
    const char *rest = filename + strlen("blkdebug:");
    const char *colon = strchr(rest, ':');
    if (!colon)
        return qimg_error(-EINVAL, "blkdebug requires both config file and image path");
    if (colon > rest) {
        CLEANUP_FREE char *config = qimg_strdup(rest);
        config[colon - rest] = '\0';
        qimg_opts_set(&opts, "config", config);
    }
    /* a name to read as a string (qemu's x-image), unlike "image" */
    qimg_opts_set(&opts, "x-image", colon + 1);
    return 0;
}

/* The image under the filter: options ("image.*"), or the name the
 * "blkdebug:RULES:IMAGE" string gave (x-image, read as a string name; the
 * options win).  A bare "image" would name another node, which qimg
 * cannot have. */
static int child_tree(qimg_opts *opts, qimg_opts **sub)
{
    const char *ref = qimg_opts_get(opts, "image");
    if (ref)
        return qimg_error(-EINVAL, "Cannot find device='%s' nor node-name='%s'", ref, ref);
    *sub = qimg_opts_subtree(opts, "image");
    const char *name = NULL;
    if (qimg_opts_get_string(opts, "x-image", &name) != 1)
        return *sub ? 0 : qimg_error(-EINVAL, "A block device must be specified for \"image\"");
    CLEANUP_OPTS qimg_opts *named = NULL;
    int r = qimg_io_name_opts(&named, name);
    for (size_t i = 0; r == 0 && i < qimg_opts_count(named); i++) {
        const char *key = qimg_opts_name(named, i);
        if (!qimg_opts_get(*sub, key))
            r = qimg_opts_set(sub, key, qimg_opts_get(named, key));
    }
    return r;
}

static int open_child(struct qimg_io *io, qimg_opts *opts)
{
    struct blkdebug *bd = io->priv;
    qimg_opts *sub = NULL;
    int r = child_tree(opts, &sub);
    if (r == 0)
        r = qimg_io_open_opts(&bd->child, sub, io->flags);
    const char *unused = r == 0 ? qimg_opts_first_unused(sub) : NULL;
    if (unused)
        r = qimg_error(-EINVAL, "Invalid parameter '%s'", unused);
    qimg_opts_free(sub);
    return r;
}

/* Limits qemu accepts and we only check (no request is split here). */
static int check_limits(struct qimg_io *io, qimg_opts *opts)
{
    static const char *const limits[] = { "max-transfer", "opt-write-zero", "max-write-zero",
                                          "opt-discard", "max-discard" };
    struct blkdebug *bd = io->priv;
    uint64_t v = 0;
    int r = qimg_opts_get_size(opts, "align", &bd->align);
    if (r < 0)
        return r;
    if (bd->align && (bd->align >= INT_MAX || (bd->align & (bd->align - 1))))
        return qimg_error(-EINVAL, "Cannot meet constraints with align %" PRIu64, bd->align);
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(limits); i++) {
        v = 0;
        if ((r = qimg_opts_get_size(opts, limits[i], &v)) < 0)
            return r;
        if (v && (v >= INT_MAX || (bd->align && v % bd->align)))
            return qimg_error(-EINVAL, "Cannot meet constraints with %s %" PRIu64, limits[i], v);
    }
    return 0;
}

static int bd_open(struct qimg_io *io, qimg_opts *opts)
{
    struct blkdebug *bd = qimg_xcalloc(1, sizeof *bd);
    pthread_mutex_init(&bd->lock, NULL);
    io->priv = bd;
    const char *config = NULL, *unused;
    qimg_opts_get_string(opts, "filename", &unused);   /* the name we show */
    qimg_opts_get_string(opts, "config", &config);
    bd->config = config ? qimg_strdup(config) : NULL;
    bd->named_only = true;
    for (size_t i = 0; i < qimg_opts_count(opts); i++) {
        const char *k = qimg_opts_name(opts, i);
        if (strcmp(k, "driver") != 0 && strcmp(k, "filename") != 0 && strcmp(k, "config") != 0 &&
            strcmp(k, "x-image") != 0 && strncmp(k, "image.", 6) != 0)
            bd->named_only = false;
    }
    int r = config ? read_rules_file(bd, config) : 0;
    if (r == 0)
        r = rules_from_options(bd, opts, "inject-error", true);
    if (r == 0)
        r = rules_from_options(bd, opts, "set-state", false);
    if (r < 0)
        return r;
    bd->state = 1;
    r = open_child(io, opts);
    if (r == 0)
        r = check_limits(io, opts);
    if (r < 0)
        return r;
    io->align = bd->align ? (uint32_t)bd->align : bd->child->align;
    if (bd->align < 1)
        bd->align = 1;
    process_event(bd, QIMG_EV_NONE);
    return 0;
}

static void bd_close(struct qimg_io *io)
{
    struct blkdebug *bd = io->priv;
    if (!bd)
        return;
    qimg_io_close(bd->child);
    free(bd->rules);
    free(bd->config);
    pthread_mutex_destroy(&bd->lock);
    free(bd);
}

/* "blkdebug:RULES:IMAGE" when no rule came from options and the image can
 * be named (qemu's name for such a node). */
static char *bd_exact_filename(struct qimg_io *io)
{
    struct blkdebug *bd = io->priv;
    if (!bd || !bd->named_only || !bd->child)
        return NULL;
    CLEANUP_FREE char *child = qimg_io_exact_filename(bd->child);
    if (!child)
        return NULL;
    return qimg_asprintf("blkdebug:%s:%s", bd->config ? bd->config : "", child);
}

/* Relative names next to the image under the filter resolve as next to
 * that image (qemu's dirname of a filter is its child's). */
static char *bd_dirname(struct qimg_io *io)
{
    return qimg_io_dirname(((struct blkdebug *)io->priv)->child);
}

const struct qimg_io_ops qimg_io_blkdebug_ops = {
    .name           = "blkdebug",
    .prefix         = "blkdebug:",
    .parse_filename = bd_parse_filename,
    .open           = bd_open,
    .exact_filename = bd_exact_filename,
    .pread          = bd_pread,
    .pwrite         = bd_pwrite,
    .zero           = bd_zero,
    .discard        = bd_discard,
    .flush          = bd_flush,
    .get_size       = bd_get_size,
    .truncate       = bd_truncate,
    .preallocate    = bd_preallocate,
    .extent         = bd_extent,
    .lock           = bd_lock,
    .hint           = bd_hint,
    .event          = bd_event,
    .same           = bd_same,
    .close          = bd_close,
    .dirname        = bd_dirname,
};
