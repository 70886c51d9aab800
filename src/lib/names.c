/* qimg - qemu's json:{...} names: how qemu names an image it cannot name
 * by a file (a raw window, blkdebug with rules given as options...).
 *
 * The name is "json:" and an object of the options that decide what the
 * node reads (qemu's "strong" options: "driver", "filename" and those of
 * the driver), with the storage node's object under "file" and a filter's
 * child under its name ("image"), printed in qemu's key order.  Values keep
 * the type they had in the json: text; --image-opts values are strings. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* The strong options of each driver; a key ending in '.' stands for every
 * key under it. */
struct strong_opts { const char *driver; const char *const *keys; };

static const char *const raw_keys[] = { "offset", "size", NULL };
static const char *const qcow2_keys[] = { "encrypt.key-secret", NULL };
static const char *const null_keys[] = { "size", "read-zeroes", NULL };
static const char *const vpc_keys[] = { "force_size_calc", NULL };
static const char *const luks_keys[] = { "key-secret", NULL };
static const char *const blkdebug_keys[] = {
    "config", "inject-error.", "set-state.", "align", "max-transfer", "opt-write-zero",
    "max-write-zero", "opt-discard", "max-discard", NULL,
};
static const char *const quorum_keys[] = {
    "vote-threshold", "read-pattern", "blkverify", "rewrite-corrupted", NULL,
};
static const char *const nbd_keys[] = {
    "path", "host", "port", "export", "tls-creds", "tls-hostname", "server.", NULL,
};
/* vvfat: every option decides what it reads (qemu's order of them does not
 * matter: the printer sorts keys as qemu's dictionary does) */
static const char *const vvfat_keys[] = { "dir", "fat-type", "floppy", "label", "rw", NULL };
static const char *const curl_keys[] = {
    "url", "sslverify", "cookie", "cookie-secret", "username", "password-secret",
    "proxy-username", "proxy-password-secret", NULL,
};
/* rbd keeps no "filename": a name string is turned into these keys */
static const char *const rbd_keys[] = {
    "pool", "namespace", "image", "conf", "snapshot", "user", "server.", NULL,
};
static const struct strong_opts strong_table[] = {
    { "nbd", nbd_keys },
    { "raw", raw_keys }, { "qcow2", qcow2_keys }, { "null-co", null_keys },
    { "null-aio", null_keys }, { "blkdebug", blkdebug_keys }, { "quorum", quorum_keys },
    { "vpc", vpc_keys }, { "luks", luks_keys }, { "qcow", qcow2_keys },
    { "vvfat", vvfat_keys },
    { "http", curl_keys }, { "https", curl_keys }, { "ftp", curl_keys }, { "ftps", curl_keys },
    { "rbd", rbd_keys },
};

static const char *const *strong_keys_of(const char *driver)
{
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(strong_table); i++)
        if (strcmp(strong_table[i].driver, driver) == 0)
            return strong_table[i].keys;
    return NULL;
}

/* Option i as a json value of the type it was given with. */
static struct qimg_json *opt_value(const qimg_opts *o, size_t i)
{
    const char *text = qimg_opts_value(o, i);
    char *end;
    switch (qimg_opts_kind(o, i)) {
    case QIMG_OPT_KIND_BOOL:
        return qimg_json_bool(strcmp(text, "on") == 0);
    case QIMG_OPT_KIND_NUMBER:
        errno = 0;
        if (text[0] == '-') {
            long long v = strtoll(text, &end, 10);
            if (!*end && !errno)
                return qimg_json_int(v);
        } else {
            unsigned long long v = strtoull(text, &end, 10);
            if (!*end && !errno)
                return v <= INT64_MAX ? qimg_json_int((int64_t)v) : qimg_json_uint(v);
        }
        return qimg_json_double(strtod(text, NULL));
    default:
        return qimg_json_string(text);
    }
}

static void add_key(struct qimg_json *obj, const qimg_opts *o, const char *key);

/* nbd's server.* keys: qemu's copy of them does not keep the order they
 * were given in; "server.host" and "server.port" share a bucket of its
 * dictionary and come out host first whatever the input order. */
static void add_server_keys(struct qimg_json *obj, const qimg_opts *o)
{
    static const char *const fixed[] = { "server.type", "server.port", "server.host", "server.path" };
    for (size_t k = 0; k < QIMG_ARRAY_SIZE(fixed); k++)
        add_key(obj, o, fixed[k]);
    for (size_t i = 0; i < qimg_opts_count(o); i++) {
        const char *name = qimg_opts_name(o, i);
        bool seen = strncmp(name, "server.", 7) != 0;
        for (size_t k = 0; k < QIMG_ARRAY_SIZE(fixed); k++)
            seen |= strcmp(name, fixed[k]) == 0;
        if (!seen)
            qimg_json_set(obj, name, opt_value(o, i));
    }
}

static void add_key(struct qimg_json *obj, const qimg_opts *o, const char *key)
{
    if (strcmp(key, "server.") == 0) {
        add_server_keys(obj, o);
        return;
    }
    for (size_t i = 0; i < qimg_opts_count(o); i++) {
        const char *name = qimg_opts_name(o, i);
        size_t len = strlen(key);
        bool match = key[len - 1] == '.' ? strncmp(name, key, len) == 0 : strcmp(name, key) == 0;
        if (match)
            qimg_json_set(obj, name, opt_value(o, i));
    }
}

static struct qimg_json *storage_json(qimg_opts *s);

/* A filter's child: its options, or the node a string name stands for. */
static void add_filter_child(struct qimg_json *obj, qimg_opts *s, const char *child,
                             const char *string_key)
{
    CLEANUP_OPTS qimg_opts *sub = qimg_opts_subtree(s, child);
    const char *name = qimg_opts_get(s, string_key);
    if (!sub && name && qimg_io_name_opts(&sub, name) < 0)
        return;
    if (sub)
        qimg_json_set(obj, child, storage_json(sub));
}

static struct qimg_json *node_json(qimg_opts *s);

/* quorum's children.N, N = 0, 1, ... as a list of their nodes. */
static void add_children(struct qimg_json *obj, qimg_opts *s)
{
    struct qimg_json *list = qimg_json_array();
    for (unsigned n = 0;; n++) {
        char key[32];
        snprintf(key, sizeof key, "children.%u", n);
        CLEANUP_OPTS qimg_opts *sub = qimg_opts_subtree(s, key);
        if (!sub)
            break;
        qimg_json_append(list, node_json(sub));
    }
    qimg_json_set(obj, "children", list);
}

/* A storage node: driver (a plain name is a file), its filename unless it
 * stood for options (blkdebug:...), its strong options and child. */
static struct qimg_json *storage_json(qimg_opts *s)
{
    const char *driver = qimg_opts_get(s, "driver");
    if (!driver)
        driver = "file";
    struct qimg_json *obj = qimg_json_object();
    qimg_json_set(obj, "driver", qimg_json_string(driver));
    /* blkdebug's string name, vvfat's "fat:..." and rbd's "rbd:..." are no option of theirs */
    bool from_string = qimg_opts_get(s, "x-image") != NULL || strcmp(driver, "vvfat") == 0 ||
                       strcmp(driver, "rbd") == 0;
    if (!from_string)
        add_key(obj, s, "filename");
    const char *const *keys = strong_keys_of(driver);
    for (size_t k = 0; keys && keys[k]; k++)
        add_key(obj, s, keys[k]);
    if (strcmp(driver, "blkdebug") == 0)
        add_filter_child(obj, s, "image", "x-image");
    if (strcmp(driver, "quorum") == 0)
        add_children(obj, s);
    return obj;
}

static char *json_name(struct qimg_json *obj)
{
    CLEANUP_FREE char *text = qimg_json_to_string_compact(obj);
    qimg_json_free(obj);
    return qimg_asprintf("json:%s", text);
}

/* A format node: driver, filename, its strong options and its file. */
static struct qimg_json *format_json(qimg_opts *tree, const char *format)
{
    struct qimg_json *obj = qimg_json_object();
    qimg_json_set(obj, "driver", qimg_json_string(format));
    add_key(obj, tree, "filename");
    const char *const *keys = strong_keys_of(format);
    for (size_t k = 0; keys && keys[k]; k++)
        add_key(obj, tree, keys[k]);
    CLEANUP_OPTS qimg_opts *file = qimg_opts_subtree(tree, "file");
    if (file)
        qimg_json_set(obj, "file", storage_json(file));
    return obj;
}

/* A node below a storage node (quorum's child): a format or storage. */
static struct qimg_json *node_json(qimg_opts *s)
{
    const char *driver = qimg_opts_get(s, "driver");
    if (driver && qimg_driver_find(driver))
        return format_json(s, driver);
    return storage_json(s);
}

char *qimg_node_json_name(const qimg_opts *o, const char *format)
{
    CLEANUP_OPTS qimg_opts *tree = qimg_opts_copy(o);
    return json_name(format ? format_json(tree, format) : storage_json(tree));
}
