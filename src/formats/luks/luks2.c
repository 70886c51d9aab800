/* qimg - LUKS2 volumes, read and written in place (no keyslot changes),
 * beyond qemu-img 7.2 (which knows LUKS1 only).  From the LUKS2 On-Disk
 * Format Specification:
 *
 *   0     binary header, 4096 bytes (big-endian): magic "LUKS\xba\xbe",
 *         version 2 at 6, hdr_size at 8 (binary header plus JSON area:
 *         16 KiB .. 4 MiB, a power of two), checksum algorithm at 72
 *         ("sha256"), uuid at 168, checksum at 448 (over the whole header
 *         area with the checksum field zeroed)
 *   4096  JSON metadata, NUL-terminated, to hdr_size: "keyslots" (each:
 *         key_size, "area" {offset, size, encryption, key_size}, "af"
 *         {luks1, stripes, hash}, "kdf" {pbkdf2: hash, iterations, salt;
 *         or argon2i/argon2id}), "segments" ("crypt": offset, size or
 *         "dynamic", iv_tweak, encryption, sector_size), "digests"
 *         (pbkdf2 of the volume key: hash, iterations, salt, digest)
 *   hdr_size  the secondary copy of both
 * Integers above 2^53 are strings in the JSON.
 *
 * A keyslot is opened like a LUKS1 one (PBKDF2, the area decrypted in
 * 512-byte sectors, the anti-forensic merge), the volume key checked
 * against the digest.  Argon2 keyslots (cryptsetup's default) cannot be
 * opened: OpenSSL 3.0 has no Argon2 (3.2 has), and qimg writes no
 * cryptography of its own; the error names it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "luks2.h"
#include "json-priv.h"

#define LUKS2_BIN_LEN 4096u
#define LUKS2_MAX_HDR (4u << 20)

struct luks2_slot {
    int id;
    uint32_t key_size;
    uint64_t area_offset, area_size;
    char area_cipher[64];
    uint32_t area_key_size;
    uint32_t stripes;
    enum qimg_hash_alg af_hash;
    bool pbkdf2;
    char kdf_type[32];
    enum qimg_hash_alg kdf_hash;
    uint64_t iterations;
    uint8_t salt[64];
    size_t salt_len;
};

struct luks2_meta {
    struct luks2_slot slots[32];
    int nslots;
    enum qimg_hash_alg digest_hash;
    uint64_t digest_iterations;
    uint8_t digest_salt[64], digest[64];
    size_t digest_salt_len, digest_len;
};

static int bad(const char *what)
{
    return qimg_error(-EINVAL, "LUKS2 metadata: %s", what);
}

static const struct qimg_json *member(const struct qimg_json *o, const char *key, enum qimg_json_type t)
{
    const struct qimg_json *v = o && o->type == QIMG_JSON_OBJECT ? qimg_json_get(o, key) : NULL;
    return v && v->type == t && !v->is_null ? v : NULL;
}

static const char *str_of(const struct qimg_json *o, const char *key)
{
    const struct qimg_json *v = member(o, key, QIMG_JSON_STRING);
    return v ? v->v.s : NULL;
}

/* A number given as a JSON number or as a decimal string. */
static bool num_of(const struct qimg_json *o, const char *key, uint64_t *out)
{
    const struct qimg_json *v = o && o->type == QIMG_JSON_OBJECT ? qimg_json_get(o, key) : NULL;
    if (!v)
        return false;
    if (v->type == QIMG_JSON_INT && v->v.i >= 0) {
        *out = (uint64_t)v->v.i;
        return true;
    }
    if (v->type == QIMG_JSON_UINT) {
        *out = v->v.u;
        return true;
    }
    if (v->type == QIMG_JSON_STRING && v->v.s[0] >= '0' && v->v.s[0] <= '9') {
        char *end;
        unsigned long long x = strtoull(v->v.s, &end, 10);
        if (*end == '\0') {
            *out = x;
            return true;
        }
    }
    return false;
}

static int hash_of(const struct qimg_json *o, const char *key, enum qimg_hash_alg *out)
{
    const char *name = str_of(o, key);
    int h = name ? qimg_hash_lookup(name) : -1;
    if (h < 0)
        return qimg_error(-ENOTSUP, "LUKS2 metadata: hash '%s' not supported", name ? name : "");
    *out = (enum qimg_hash_alg)h;
    return 0;
}

/* "aes-xts-plain64" with a key length into a header's names. */
static int cipher_spec(const char *spec, uint32_t key_size, struct luks_header *h)
{
    const char *dash = strchr(spec, '-');
    if (!dash || (size_t)(dash - spec) >= sizeof h->cipher_name || strlen(dash + 1) >= sizeof h->cipher_mode)
        return qimg_error(-EINVAL, "LUKS2 metadata: cipher '%s' not understood", spec);
    memset(h->cipher_name, 0, sizeof h->cipher_name);
    memcpy(h->cipher_name, spec, (size_t)(dash - spec));
    snprintf(h->cipher_mode, sizeof h->cipher_mode, "%s", dash + 1);
    h->key_bytes = key_size;
    if (!h->hash_spec[0])
        snprintf(h->hash_spec, sizeof h->hash_spec, "sha256");
    return luks_header_parse_names(h);
}

static int b64(const struct qimg_json *o, const char *key, uint8_t *out, size_t max, size_t *len)
{
    const char *text = str_of(o, key);
    if (!text)
        return bad(key);
    return qimg_base64_decode(text, out, max, len);
}

static int parse_slot(const char *id, const struct qimg_json *k, struct luks2_slot *s)
{
    const struct qimg_json *area = member(k, "area", QIMG_JSON_OBJECT);
    const struct qimg_json *af = member(k, "af", QIMG_JSON_OBJECT);
    const struct qimg_json *kdf = member(k, "kdf", QIMG_JSON_OBJECT);
    uint64_t v;
    memset(s, 0, sizeof *s);
    s->id = atoi(id);
    if (!area || !af || !kdf || !num_of(k, "key_size", &v) || v == 0 || v > 64)
        return bad("keyslot without key size, area, af or kdf");
    s->key_size = (uint32_t)v;
    const char *enc = str_of(area, "encryption"), *type = str_of(kdf, "type");
    if (!enc || !num_of(area, "offset", &s->area_offset) || !num_of(area, "size", &s->area_size) ||
        !num_of(area, "key_size", &v) || v == 0 || v > 64 || !type)
        return bad("keyslot area");
    s->area_key_size = (uint32_t)v;
    snprintf(s->area_cipher, sizeof s->area_cipher, "%s", enc);
    if (!num_of(af, "stripes", &v) || v == 0 || v > 4000)
        return bad("anti-forensic stripes");
    s->stripes = (uint32_t)v;
    int r = hash_of(af, "hash", &s->af_hash);
    snprintf(s->kdf_type, sizeof s->kdf_type, "%s", type);
    s->pbkdf2 = strcmp(type, "pbkdf2") == 0;
    if (r < 0 || !s->pbkdf2)
        return r;
    r = hash_of(kdf, "hash", &s->kdf_hash);
    if (r == 0 && (!num_of(kdf, "iterations", &s->iterations) || s->iterations == 0))
        r = bad("kdf iterations");
    if (r == 0)
        r = b64(kdf, "salt", s->salt, sizeof s->salt, &s->salt_len);
    return r;
}

static int parse_digest(const struct qimg_json *digests, struct luks2_meta *m)
{
    for (size_t i = 0; digests && i < digests->n; i++) {
        const struct qimg_json *d = digests->items[i];
        const char *type = str_of(d, "type");
        if (!type || strcmp(type, "pbkdf2"))
            continue;
        int r = hash_of(d, "hash", &m->digest_hash);
        if (r == 0 && (!num_of(d, "iterations", &m->digest_iterations) || !m->digest_iterations))
            r = bad("digest iterations");
        if (r == 0)
            r = b64(d, "salt", m->digest_salt, sizeof m->digest_salt, &m->digest_salt_len);
        if (r == 0)
            r = b64(d, "digest", m->digest, sizeof m->digest, &m->digest_len);
        if (r == 0 && m->digest_len < 16)
            r = bad("digest too short");
        return r;
    }
    return bad("no pbkdf2 digest");
}

/* The first crypt segment: where the payload is and how it is encrypted. */
static int parse_segment(const struct qimg_json *segs, struct luks_volume *v)
{
    for (size_t i = 0; segs && i < segs->n; i++) {
        const struct qimg_json *g = segs->items[i];
        const char *type = str_of(g, "type"), *enc = str_of(g, "encryption"), *size = str_of(g, "size");
        uint64_t off, ss = 512, tweak = 0;
        if (!type || strcmp(type, "crypt"))
            continue;
        if (!enc || !num_of(g, "offset", &off) || off % 512 || off / 512 > UINT32_MAX)
            return bad("segment offset");
        num_of(g, "sector_size", &ss);
        num_of(g, "iv_tweak", &tweak);
        if (ss != 512 && ss != 1024 && ss != 2048 && ss != 4096)
            return bad("segment sector size");
        if (size && strcmp(size, "dynamic") && (!num_of(g, "size", &v->payload_size) || !v->payload_size))
            return bad("segment size");
        v->h.payload_offset = (uint32_t)(off / 512);
        v->sector_size = (unsigned)ss;
        v->iv_offset = tweak;
        snprintf(v->h.cipher_mode, sizeof v->h.cipher_mode, "%s", enc);   /* completed below */
        return 0;
    }
    return bad("no crypt segment");
}

static int read_metadata(struct qimg_io *io, struct qimg_json **out, uint8_t *bin)
{
    int r = qimg_io_pread(io, bin, LUKS2_BIN_LEN, 0);
    if (r < 0)
        return r;
    uint64_t hdr_size = qimg_be64(bin + 8);
    if (!qimg_is_pow2(hdr_size) || hdr_size < 16384 || hdr_size > LUKS2_MAX_HDR)
        return qimg_error(-EINVAL, "LUKS2 header size %" PRIu64 " is not valid", hdr_size);
    if (strncmp((const char *)bin + 72, "sha256", 32) != 0)
        return qimg_error(-ENOTSUP, "LUKS2 header checksum algorithm not supported");
    size_t json_len = (size_t)(hdr_size - LUKS2_BIN_LEN);
    uint8_t *area = qimg_alloc_from_image(hdr_size, "LUKS2 header");
    if (!area)
        return -ENOMEM;
    memcpy(area, bin, LUKS2_BIN_LEN);
    memset(area + 448, 0, 64);
    r = qimg_io_pread(io, area + LUKS2_BIN_LEN, json_len, LUKS2_BIN_LEN);
    uint8_t sum[32];
    if (r == 0 && qimg_crypto_available() && (r = qimg_hash(QIMG_HASH_SHA256, area, hdr_size, sum)) == 0 &&
        memcmp(sum, bin + 448, sizeof sum) != 0)
        r = qimg_error(-EINVAL, "LUKS2 header checksum mismatch");
    if (r == 0 && !memchr(area + LUKS2_BIN_LEN, '\0', json_len))
        r = bad("not NUL terminated");
    if (r == 0 && qimg_json_parse((const char *)area + LUKS2_BIN_LEN, out) < 0)
        r = bad("not valid JSON");
    free(area);
    return r;
}

static int parse_meta(const struct qimg_json *root, struct luks_volume *v, struct luks2_meta *m)
{
    const struct qimg_json *slots = member(root, "keyslots", QIMG_JSON_OBJECT);
    int r = parse_segment(member(root, "segments", QIMG_JSON_OBJECT), v);
    if (r == 0)
        r = parse_digest(member(root, "digests", QIMG_JSON_OBJECT), m);
    for (size_t i = 0; r == 0 && slots && i < slots->n && m->nslots < 32; i++) {
        const struct qimg_json *k = slots->items[i];
        const char *type = str_of(k, "type");
        if (type && strcmp(type, "luks2") == 0)
            r = parse_slot(slots->keys[i], k, &m->slots[m->nslots++]);
    }
    if (r < 0)
        return r;
    if (m->nslots == 0)
        return bad("no keyslot");
    /* the header fields info shows, as for LUKS1 */
    char enc[33];
    snprintf(enc, sizeof enc, "%s", v->h.cipher_mode);
    snprintf(v->h.hash_spec, sizeof v->h.hash_spec, "%s", qimg_hash_name(m->digest_hash));
    r = cipher_spec(enc, m->slots[0].key_size, &v->h);
    v->h.mk_iterations = (uint32_t)QIMG_MIN(m->digest_iterations, UINT32_MAX);
    for (int i = 0; i < m->nslots; i++) {
        const struct luks2_slot *s = &m->slots[i];
        if (s->id < 0 || s->id >= LUKS_SLOTS)
            continue;
        v->h.slots[s->id].active = LUKS_SLOT_ACTIVE;
        v->h.slots[s->id].iterations = (uint32_t)QIMG_MIN(s->iterations, UINT32_MAX);
        v->h.slots[s->id].stripes = s->stripes;
        v->h.slots[s->id].key_offset = (uint32_t)(s->area_offset / 512);
    }
    return r;
}

/* 1 and the volume key when the passphrase opens slot s, 0 when not. */
static int try_slot(struct qimg_io *io, const struct luks2_meta *m, const struct luks2_slot *s,
                    const char *pass, size_t pass_len, uint8_t *key)
{
    struct luks_header ah;
    memset(&ah, 0, sizeof ah);
    int r = cipher_spec(s->area_cipher, s->area_key_size, &ah);
    if (r == 0)
        r = luks_check_usable(&ah);
    uint64_t split_len = qimg_div_round_up((uint64_t)s->key_size * s->stripes, 512) * 512;
    if (r == 0 && (split_len > s->area_size || s->area_key_size > 64))
        r = bad("keyslot area too small");
    if (r == 0)
        r = luks_check_iterations(s->iterations, NULL, s->id);
    if (r < 0)
        return r;
    uint8_t slot_key[64], digest[64];
    struct qimg_sector_cipher *c = NULL;
    uint8_t *split = qimg_alloc_from_image(split_len, "LUKS2 key material");
    if (!split)
        return -ENOMEM;
    r = qimg_pbkdf2(s->kdf_hash, pass, pass_len, s->salt, s->salt_len, s->iterations, slot_key,
                    s->area_key_size);
    if (r == 0)
        r = qimg_io_pread(io, split, (size_t)split_len, s->area_offset);
    if (r == 0)
        r = qimg_sector_cipher_new(&c, ah.alg, ah.mode, ah.ivgen, ah.ivhash, slot_key, s->area_key_size);
    if (r == 0)
        r = qimg_sector_cipher_run(c, false, 0, 512, split, (size_t)split_len);
    if (r == 0)
        r = luks_af_merge(s->af_hash, split, s->key_size, s->stripes, key);
    if (r == 0)
        r = luks_check_iterations(m->digest_iterations, "volume key digest", -1);
    if (r == 0)
        r = qimg_pbkdf2(m->digest_hash, key, s->key_size, m->digest_salt, m->digest_salt_len,
                        m->digest_iterations, digest, m->digest_len);
    if (r == 0)
        r = memcmp(digest, m->digest, m->digest_len) == 0;
    qimg_sector_cipher_free(c);
    qimg_wipe(slot_key, sizeof slot_key);
    qimg_wipe_free(split, (size_t)split_len);
    return r;
}

static int unlock(struct qimg_io *io, const struct luks2_meta *m, const char *pass, size_t pass_len,
                  struct luks_volume *v)
{
    const char *argon = NULL;
    int first_err = 0;
    v->master_key = qimg_xcalloc(1, 64);
    for (int i = 0; i < m->nslots; i++) {
        const struct luks2_slot *s = &m->slots[i];
        if (!s->pbkdf2) {
            argon = s->kdf_type;
            continue;
        }
        if (s->key_size != v->h.key_bytes)
            continue;
        int r = try_slot(io, m, s, pass, pass_len, v->master_key);
        if (r == 1)
            return 0;
        if (r < 0 && !first_err)
            first_err = r;
        if (r < 0 && r != -E2BIG)
            return r;
    }
    if (first_err)
        return first_err;
    if (argon)
        return qimg_error(-ENOTSUP, "Invalid password, cannot unlock any keyslot (qimg cannot derive "
                          "keys of LUKS2 keyslots with %s: OpenSSL 3.0 has no Argon2; add a keyslot "
                          "with 'cryptsetup luksAddKey --pbkdf pbkdf2')", argon);
    return qimg_error(-EPERM, "Invalid password, cannot unlock any keyslot");
}

int luks2_open_volume(struct qimg_io *io, const char *secret_id, bool no_io, struct luks_volume **out)
{
    uint8_t bin[LUKS2_BIN_LEN];
    struct qimg_json *root = NULL;
    struct luks2_meta *m = qimg_xcalloc(1, sizeof *m);
    struct luks_volume *v = qimg_xcalloc(1, sizeof *v);
    int r = read_metadata(io, &root, bin);
    if (r == 0) {
        memcpy(v->h.uuid, bin + 168, LUKS_UUID_LEN);
        r = parse_meta(root, v, m);
    }
    qimg_json_free(root);
    char *pass = NULL;
    size_t pass_len = 0;
    if (r == 0 && !no_io) {
        if (!qimg_crypto_available())
            r = -ENOTSUP;
        else if (!secret_id)
            r = qimg_error(-EINVAL, "Parameter 'key-secret' is required for cipher");
        else
            r = qimg_secret_lookup(secret_id, &pass, &pass_len);
        if (r == 0)
            r = luks_check_usable(&v->h);
        if (r == 0)
            r = unlock(io, m, pass, pass_len, v);
        if (r == 0)
            r = qimg_sector_cipher_new(&v->cipher, v->h.alg, v->h.mode, v->h.ivgen, v->h.ivhash,
                                       v->master_key, v->h.key_bytes);
    }
    qimg_wipe_free(pass, pass_len);
    qimg_wipe(m, sizeof *m);
    free(m);
    if (r < 0) {
        if (v->master_key)
            qimg_wipe(v->master_key, 64);
        luks_volume_free(v);
        return r;
    }
    *out = v;
    return 0;
}
