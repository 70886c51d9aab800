/* qimg - --object definitions; "secret" objects (passwords for encrypted
 * images) and "tls-creds-*" objects (certificates or keys the nbd backend
 * hands to libnbd) carry what qimg uses.  Other user-creatable types qemu
 * knows are accepted and ignored, so command lines written for qemu-img
 * keep working.  Error texts are those qemu-img 7.2 prints. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>

#include "json-priv.h"
#include "crypto.h"

struct object {
    char *id;
    bool is_secret;
    char *data;             /* secrets only; NULL for other types */
    size_t len;
    struct object *next;
    /* tls-creds-x509/-psk/-anon */
    const char *tls_kind;   /* "x509", "psk", "anon"; NULL for other types */
    char *tls_dir, *tls_username;
    bool tls_server, tls_verify_peer;
};

static struct object *objects;
static pthread_mutex_t objects_lock = PTHREAD_MUTEX_INITIALIZER;

/* What "qemu-img --object help" lists. */
static const char *const known_types[] = {
    "authz-list", "authz-list-file", "authz-simple", "main-loop", "pr-manager-helper",
    "secret", "secret_keyring", "thread-context", "throttle-group", "tls-cipher-suites",
    "tls-creds-anon", "tls-creds-psk", "tls-creds-x509",
};

static bool is_known_type(const char *type)
{
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(known_types); i++)
        if (strcmp(type, known_types[i]) == 0)
            return true;
    return false;
}

/* Letters, digits, '-', '.', '_', starting with a letter. */
static bool is_identifier(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '_'))
            return false;
    return true;
}

/* ---------------------------------------------------------------- base64 */

static int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Lenient like qemu (glib): '=' counts as zero bits and shortens its group,
 * an incomplete last group is dropped. */
static int base64_decode(const char *in, char **out, size_t *outlen)
{
    size_t n = strlen(in), len = 0;
    for (size_t i = 0; i < n; i++)
        if (in[i] != '=' && in[i] != '\n' && base64_value(in[i]) < 0)
            return qimg_error(-EINVAL, "Base64 data contains invalid characters");
    /* newlines are allowed and skipped */
    CLEANUP_FREE char *packed = qimg_xmalloc(n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (in[i] != '\n')
            packed[m++] = in[i];
    packed[m] = '\0';
    in = packed;
    n = m;
    char *buf = qimg_xmalloc(n / 4 * 3 + 1);
    for (size_t i = 0; i + 4 <= n; i += 4) {
        uint32_t bits = 0;
        int pads = 0;
        for (int k = 0; k < 4; k++) {
            int v = base64_value(in[i + k]);
            pads += v < 0;
            bits = bits << 6 | (uint32_t)(v < 0 ? 0 : v);
        }
        int bytes = 3 - (pads > 2 ? 2 : pads);
        for (int k = 0; k < bytes; k++)
            buf[len++] = (char)(bits >> (16 - 8 * k));
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

/* ---------------------------------------------------------------- secrets */

/* The whole file, binary-safe (a NUL is added after *outlen bytes). */
static int read_secret_file(const char *path, char **out, size_t *outlen)
{
    char chunk[4096], *buf = qimg_xmalloc(1);
    size_t len = 0;
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        free(buf);
        /* glib's wording, with its curly quotes */
        return qimg_error(-err, "Unable to read %s: Failed to open file \xe2\x80\x9c%s\xe2\x80\x9d: %s",
                          path, path, strerror(err));
    }
    while ((got = read(fd, chunk, sizeof chunk)) > 0) {
        buf = qimg_xrealloc(buf, len + (size_t)got + 1);
        memcpy(buf + len, chunk, (size_t)got);
        len += (size_t)got;
    }
    int err = got < 0 ? errno : 0;
    qimg_wipe(chunk, sizeof chunk);
    close(fd);
    if (err) {
        free(buf);
        return qimg_error(-err, "Unable to read %s: %s", path, strerror(err));
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

/* Only these properties exist on a secret. */
static int check_secret_props(qimg_opts *o)
{
    static const char *const allowed[] = { "qom-type", "id", "data", "file", "format", "keyid", "iv" };
    for (size_t i = 0; i < o->n; i++) {
        bool ok = false;
        for (size_t k = 0; k < QIMG_ARRAY_SIZE(allowed); k++)
            ok |= strcmp(o->v[i].name, allowed[k]) == 0;
        if (!ok)
            return qimg_error(-EINVAL, "Parameter '%s' is unexpected", o->v[i].name);
    }
    const char *format = qimg_opts_get(o, "format");
    if (format && strcmp(format, "raw") != 0 && strcmp(format, "base64") != 0)
        return qimg_error(-EINVAL, "Parameter 'format' does not accept value '%s'", format);
    return 0;
}

static struct object *find_object(const char *id);
static int lookup_locked(const char *id, char **data, size_t *len);

/* A secret given encrypted (keyid=, iv=): AES-256-CBC under the 32-byte
 * secret keyid, its IV in base64, the text base64 when format=base64 and
 * raw otherwise; the plaintext is the secret (not decoded again).  The
 * padding is trusted as qemu trusts it: only its count is checked. */
static int decrypt_secret(qimg_opts *o, const char *raw, size_t raw_len, char **data, size_t *len)
{
    const char *keyid = qimg_opts_get(o, "keyid");
    const char *iv_text = qimg_opts_get(o, "iv");
    const char *format = qimg_opts_get(o, "format");
    char *key = NULL, *iv = NULL, *ct = NULL;
    size_t key_len = 0, iv_len = 0, ct_len = 0;
    /* qemu has the secret in its tree, without data yet, while it loads */
    const char *own_id = qimg_opts_get(o, "id");
    int ret = own_id && strcmp(own_id, keyid) == 0 && !find_object(keyid) ?
              qimg_error(-EINVAL, "Secret with id '%s' has no data", keyid) :
              lookup_locked(keyid, &key, &key_len);
    if (ret == 0 && key_len != 32)
        ret = qimg_error(-EINVAL, "Key should be 32 bytes in length");
    if (ret == 0 && !iv_text)
        ret = qimg_error(-EINVAL, "IV is required to decrypt secret");
    if (ret == 0)
        ret = base64_decode(iv_text, &iv, &iv_len);
    if (ret == 0 && iv_len != 16)
        ret = qimg_error(-EINVAL, "IV should be 16 bytes in length not %zu", iv_len);
    if (ret == 0 && format && strcmp(format, "base64") == 0) {
        ret = base64_decode(raw, &ct, &ct_len);
    } else if (ret == 0) {
        ct = qimg_xmalloc(raw_len + 1);
        memcpy(ct, raw, raw_len);
        ct_len = raw_len;
    }
    char *plain = NULL;
    if (ret == 0) {
        plain = qimg_xmalloc(ct_len + 1);
        ret = qimg_aes256_cbc_decrypt((uint8_t *)key, (uint8_t *)iv, (uint8_t *)ct, (uint8_t *)plain, ct_len);
    }
    if (ret == 0 && ct_len > 0) {
        uint8_t pad = (uint8_t)plain[ct_len - 1];
        if (pad > ct_len)
            ret = qimg_error(-EINVAL, "Incorrect number of padding bytes (%d) found on decrypted data", pad);
        else
            ct_len -= pad;
    }
    if (ret == 0) {
        plain[ct_len] = '\0';
        *data = plain;
        *len = ct_len;
    } else if (plain) {
        qimg_wipe_free(plain, ct_len + 1);
    }
    qimg_wipe_free(key, key_len);
    qimg_wipe_free(ct, ct_len);
    free(iv);
    return ret;
}

static int load_secret(qimg_opts *o, char **data, size_t *len)
{
    const char *inline_data = qimg_opts_get(o, "data");
    const char *file = qimg_opts_get(o, "file");
    const char *format = qimg_opts_get(o, "format");
    CLEANUP_FREE char *raw = NULL;
    size_t raw_len;
    int ret;

    if (inline_data && file)
        return qimg_error(-EINVAL, "'file' and 'data' are mutually exclusive");
    if (!inline_data && !file)
        return qimg_error(-EINVAL, "Either 'file' or 'data' must be provided");
    if (file) {
        ret = read_secret_file(file, &raw, &raw_len);
        if (ret < 0)
            return ret;
    } else {
        raw = qimg_strdup(inline_data);
        raw_len = strlen(raw);
    }
    if (qimg_opts_get(o, "keyid")) {
        pthread_mutex_lock(&objects_lock);
        ret = decrypt_secret(o, raw, raw_len, data, len);
        pthread_mutex_unlock(&objects_lock);
        qimg_wipe(raw, raw_len);
        return ret;
    }
    if (format && strcmp(format, "base64") == 0) {
        ret = base64_decode(raw, data, len);
        qimg_wipe(raw, raw_len);
        return ret;
    }
    *data = raw;
    *len = raw_len;
    raw = NULL;
    return 0;
}

/* ---------------------------------------------------------------- registry */

static struct object *find_object(const char *id)
{
    for (struct object *ob = objects; ob; ob = ob->next)
        if (strcmp(ob->id, id) == 0)
            return ob;
    return NULL;
}

static struct object *register_object_ob(const char *id, bool is_secret, char *data, size_t len);

static int register_object(const char *id, bool is_secret, char *data, size_t len)
{
    return register_object_ob(id, is_secret, data, len) ? 0 : -EEXIST;
}

static struct object *register_object_ob(const char *id, bool is_secret, char *data, size_t len)
{
    pthread_mutex_lock(&objects_lock);
    if (find_object(id)) {
        pthread_mutex_unlock(&objects_lock);
        qimg_wipe_free(data, len);
        qimg_error(-EEXIST, "attempt to add duplicate property '%s' to object (type 'container')", id);
        return NULL;
    }
    struct object *ob = qimg_xcalloc(1, sizeof *ob);
    ob->id = qimg_strdup(id);
    ob->is_secret = is_secret;
    ob->data = data;
    ob->len = len;
    ob->next = objects;
    objects = ob;
    pthread_mutex_unlock(&objects_lock);
    return ob;
}

static int parse_object_text(qimg_opts **o, const char *text)
{
    if (text[0] == '{')
        return qimg_json_filename_parse(o, text);
    return qimg_keyval_parse_strict(o, text, "qom-type", true);
}

/* A tls-creds object: where its files are and how it is used.  qemu
 * checks the files when the object is made; libnbd does when it connects. */
static int add_tls_creds(qimg_opts *o, const char *id, const char *kind)
{
    const char *endpoint = qimg_opts_get(o, "endpoint");
    bool verify = true;
    if (endpoint && strcmp(endpoint, "client") != 0 && strcmp(endpoint, "server") != 0)
        return qimg_error(-EINVAL, "Parameter 'endpoint' does not accept value '%s'", endpoint);
    if (qimg_opts_get_bool(o, "verify-peer", &verify) < 0)
        return -EINVAL;
    struct object *ob = register_object_ob(id, false, NULL, 0);
    if (!ob)
        return -EEXIST;
    const char *dir = qimg_opts_get(o, "dir");
    const char *user = qimg_opts_get(o, "username");
    pthread_mutex_lock(&objects_lock);
    ob->tls_kind = strcmp(kind, "x509") == 0 ? "x509" : strcmp(kind, "psk") == 0 ? "psk" : "anon";
    ob->tls_dir = dir ? qimg_strdup(dir) : NULL;
    ob->tls_username = user ? qimg_strdup(user) : NULL;
    ob->tls_server = endpoint && strcmp(endpoint, "server") == 0;
    ob->tls_verify_peer = verify;
    pthread_mutex_unlock(&objects_lock);
    return 0;
}

int qimg_tls_creds_lookup(const char *id, struct qimg_tls_creds *out)
{
    pthread_mutex_lock(&objects_lock);
    struct object *ob = find_object(id);
    int r = 0;
    if (!ob)
        r = qimg_error(-ENOENT, "No TLS credentials with id '%s'", id);
    else if (!ob->tls_kind)
        r = qimg_error(-EINVAL, "Object with id '%s' is not TLS credentials", id);
    else
        *out = (struct qimg_tls_creds){
            .psk = strcmp(ob->tls_kind, "psk") == 0, .anon = strcmp(ob->tls_kind, "anon") == 0,
            .endpoint_server = ob->tls_server, .verify_peer = ob->tls_verify_peer,
            .dir = ob->tls_dir, .username = ob->tls_username,
        };
    pthread_mutex_unlock(&objects_lock);
    return r;
}

const char *qimg_tls_creds_default(void)
{
    const char *id = NULL;
    int count = 0;
    pthread_mutex_lock(&objects_lock);
    for (struct object *ob = objects; ob; ob = ob->next)
        if (ob->tls_kind && !ob->tls_server)
            id = ob->id, count++;
    pthread_mutex_unlock(&objects_lock);
    return count == 1 ? id : NULL;
}

static int add_object(qimg_opts *o)
{
    const char *type = qimg_opts_get(o, "qom-type");
    const char *id = qimg_opts_get(o, "id");
    char *data = NULL;
    size_t len = 0;
    int ret;

    if (!type)
        return qimg_error(-EINVAL, "Parameter 'qom-type' is missing");
    if (!is_known_type(type))
        return qimg_error(-EINVAL, "Parameter 'qom-type' does not accept value '%s'", type);
    if (!id)
        return qimg_error(-EINVAL, "Parameter 'id' is missing");
    if (!is_identifier(id))
        return qimg_error(-EINVAL, "Parameter 'id' expects an identifier\n"
                          "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
    if (strcmp(type, "secret") == 0) {
        ret = check_secret_props(o);
        if (ret == 0)
            ret = load_secret(o, &data, &len);
        if (ret < 0)
            return ret;
    }
    if (strncmp(type, "tls-creds-", 10) == 0)
        return add_tls_creds(o, id, type + 10);
    return register_object(id, strcmp(type, "secret") == 0, data, len);
}

int qimg_object_add(const char *text)
{
    qimg_opts *o = NULL;
    int ret = parse_object_text(&o, text);
    if (ret == 0)
        ret = add_object(o);
    /* the secret's text given inline is not left in freed memory */
    for (size_t i = 0; o && i < o->n; i++)
        if (strcmp(o->v[i].name, "data") == 0 && o->v[i].value)
            qimg_wipe(o->v[i].value, strlen(o->v[i].value));
    qimg_opts_free(o);
    return ret;
}

/* With objects_lock held.  A secret that refers to itself (keyid=its own
 * id) is not registered yet while it loads: "has no data", as in qemu. */
static int lookup_locked(const char *id, char **data, size_t *len)
{
    struct object *ob = find_object(id);
    if (!ob)
        return qimg_error(-ENOENT, "No secret with id '%s'", id);
    if (!ob->is_secret)
        return qimg_error(-EINVAL, "Object with id '%s' is not a secret", id);
    if (!ob->data)
        return qimg_error(-EINVAL, "Secret with id '%s' has no data", id);
    *data = qimg_xmalloc(ob->len + 1);
    memcpy(*data, ob->data, ob->len);
    (*data)[ob->len] = '\0';
    *len = ob->len;
    return 0;
}

int qimg_secret_lookup(const char *id, char **data, size_t *len)
{
    pthread_mutex_lock(&objects_lock);
    int ret = lookup_locked(id, data, len);
    pthread_mutex_unlock(&objects_lock);
    return ret;
}
