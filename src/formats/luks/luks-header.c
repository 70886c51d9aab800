/* qimg - LUKS1 headers: read and check, unlock a keyslot, format, info
 * (see luks.h for the layout).  Every cipher, hash and PBKDF2 goes through
 * src/lib/crypto.h (OpenSSL, nettle); the anti-forensic splitter is the only
 * algorithm here, built from those hashes as the specification says. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "luks.h"

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

/* The most PBKDF2 iterations qimg spends on one derivation from an
 * untrusted header.  qemu and cryptsetup calibrate a keyslot to about 2 s
 * of CPU (iter-time): a few million iterations today, some tens of
 * millions on the fastest hardware.  2^26 leaves room for those while a
 * header that asks for 4 billion (which would take hours) fails at once.
 * One open tries at most 8 keyslots and the digest, so the worst case is
 * bounded too.  QIMG_LUKS_MAX_ITERS overrides it (the fuzz target sets it
 * low). */
#define LUKS_DEFAULT_MAX_ITERS (1u << 26)

static uint64_t max_iters(void)
{
    const char *env = getenv("QIMG_LUKS_MAX_ITERS");
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (*end == '\0' && v > 0)
            return v;
    }
    return LUKS_DEFAULT_MAX_ITERS;
}

/* ------------------------------------------------------------------ names */

/* The names in qemu's order of checks: the mode, the IV generator's
 * hash, the algorithm (its key length halved for XTS), the IV generator
 * and ESSIV's cipher, then the hash.  Whether this build can run the
 * cipher is asked only when the volume is unlocked (info shows any). */
int luks_header_parse_names(struct luks_header *h)
{
    char mode_text[33], *ivgen_name, *ivhash_name;
    memcpy(mode_text, h->cipher_mode, sizeof mode_text);
    ivgen_name = strchr(mode_text, '-');
    if (!ivgen_name)
        return qimg_error(-EINVAL, "Unexpected cipher mode string format '%s'", h->cipher_mode);
    *ivgen_name++ = '\0';
    ivhash_name = strchr(ivgen_name, ':');
    if (ivhash_name)
        *ivhash_name++ = '\0';
    int mode = qimg_cipher_mode_lookup(mode_text);
    if (mode < 0)
        return qimg_error(-ENOTSUP, "Cipher mode '%s' not supported", mode_text);
    h->mode = (enum qimg_cipher_mode)mode;
    h->has_ivhash = ivhash_name != NULL;
    if (ivhash_name) {
        int ivh = qimg_hash_lookup(ivhash_name);
        if (ivh < 0)
            return qimg_error(-ENOTSUP, "Hash algorithm '%s' not supported", ivhash_name);
        h->ivhash = (enum qimg_hash_alg)ivh;
    }
    uint32_t key_len = h->mode == QIMG_MODE_XTS ? h->key_bytes / 2 : h->key_bytes;
    int alg = qimg_cipher_for_name(h->cipher_name, key_len);
    if (alg < 0)
        return qimg_error(-ENOTSUP, "Algorithm '%s' with key size %" PRIu32 " bytes not supported",
                          h->cipher_name, key_len);
    h->alg = (enum qimg_cipher_alg)alg;
    int ivgen = qimg_ivgen_lookup(ivgen_name);
    if (ivgen < 0)
        return qimg_error(-ENOTSUP, "IV generator '%s' not supported", ivgen_name);
    h->ivgen = (enum qimg_ivgen_alg)ivgen;
    if (h->ivgen == QIMG_IVGEN_ESSIV) {
        if (!h->has_ivhash)
            return qimg_error(-EINVAL, "Missing IV generator hash specification");
        int essiv = qimg_cipher_essiv_alg(h->alg, h->ivhash);
        if (essiv < 0)
            return essiv;
    }
    int hash = qimg_hash_lookup(h->hash_spec);
    if (hash < 0)
        return qimg_error(-ENOTSUP, "Hash algorithm '%s' not supported", h->hash_spec);
    h->hash = (enum qimg_hash_alg)hash;
    return 0;
}

/* What only I/O needs: a cipher this build has, a key that fits it. */
int luks_check_usable(const struct luks_header *h)
{
    if (h->mode == QIMG_MODE_XTS && h->key_bytes % 2)
        return qimg_error(-EINVAL, "XTS cipher key length should be a multiple of 2");
    if (!qimg_cipher_usable(h->alg, h->mode))
        return -ENOTSUP;
    return 0;
}

/* ----------------------------------------------------------------- header */

static uint64_t split_key_sectors(uint32_t key_bytes, uint32_t stripes)
{
    return qimg_div_round_up((uint64_t)key_bytes * stripes, LUKS_SECTOR);
}

static int copy_name(char *dst, const uint8_t *src, const char *what)
{
    if (!memchr(src, '\0', 32))
        return qimg_error(-EINVAL, "LUKS header %s is not NUL terminated", what);
    memcpy(dst, src, 32);
    dst[32] = '\0';
    return 0;
}

/* The keyslots: states, counts and places (qemu's checks, in its order). */
static int check_slots(const struct luks_header *h)
{
    uint64_t header_sectors = qimg_div_round_up(LUKS_HEADER_LEN, LUKS_SECTOR);
    for (size_t i = 0; i < LUKS_SLOTS; i++) {
        const struct luks_slot *s = &h->slots[i];
        if (s->stripes != LUKS_STRIPES)
            return qimg_error(-EINVAL, "Keyslot %zu is corrupted (stripes %" PRIu32 " != %u)",
                              i, s->stripes, LUKS_STRIPES);
        if (s->active != LUKS_SLOT_ACTIVE && s->active != LUKS_SLOT_DISABLED)
            return qimg_error(-EINVAL, "Keyslot %zu state (active/disable) is corrupted", i);
        if (s->active == LUKS_SLOT_ACTIVE && s->iterations == 0)
            return qimg_error(-EINVAL, "Keyslot %zu iteration count is zero", i);
        if (s->key_offset < header_sectors)
            return qimg_error(-EINVAL, "Keyslot %zu is overlapping with the LUKS header", i);
        uint64_t end1 = s->key_offset + split_key_sectors(h->key_bytes, s->stripes);
        if (end1 > h->payload_offset)
            return qimg_error(-EINVAL, "Keyslot %zu is overlapping with the encrypted payload", i);
        for (size_t j = i + 1; j < LUKS_SLOTS; j++) {
            const struct luks_slot *t = &h->slots[j];
            uint64_t end2 = t->key_offset + split_key_sectors(h->key_bytes, t->stripes);
            if (s->key_offset < end2 && t->key_offset < end1)
                return qimg_error(-EINVAL, "Keyslots %zu and %zu are overlapping in the header", i, j);
        }
    }
    return 0;
}

int luks_header_parse(const uint8_t *b, struct luks_header *h)
{
    memset(h, 0, sizeof *h);
    if (memcmp(b, luks_magic, sizeof luks_magic) != 0)
        return qimg_error(-EINVAL, "Volume is not in LUKS format");
    uint16_t version = qimg_be16(b + 6);
    if (version != 1)
        return qimg_error(-ENOTSUP, "LUKS version %u is not supported", version);
    int r = copy_name(h->cipher_name, b + 8, "cipher name");
    if (r == 0)
        r = copy_name(h->cipher_mode, b + 40, "cipher mode");
    if (r == 0)
        r = copy_name(h->hash_spec, b + 72, "hash spec");
    if (r < 0)
        return r;
    h->payload_offset = qimg_be32(b + 104);
    h->key_bytes = qimg_be32(b + 108);
    memcpy(h->mk_digest, b + 112, LUKS_DIGEST_LEN);
    memcpy(h->mk_salt, b + 132, LUKS_SALT_LEN);
    h->mk_iterations = qimg_be32(b + 164);
    memcpy(h->uuid, b + 168, LUKS_UUID_LEN);
    h->uuid[LUKS_UUID_LEN] = '\0';
    for (size_t i = 0; i < LUKS_SLOTS; i++) {
        const uint8_t *s = b + 208 + 48 * i;
        h->slots[i].active = qimg_be32(s);
        h->slots[i].iterations = qimg_be32(s + 4);
        memcpy(h->slots[i].salt, s + 8, LUKS_SALT_LEN);
        h->slots[i].key_offset = qimg_be32(s + 40);
        h->slots[i].stripes = qimg_be32(s + 44);
    }
    if (h->payload_offset < qimg_div_round_up(LUKS_HEADER_LEN, LUKS_SECTOR))
        return qimg_error(-EINVAL, "LUKS payload is overlapping with the header");
    if (h->mk_iterations == 0)
        return qimg_error(-EINVAL, "LUKS key iteration count is zero");
    r = check_slots(h);
    if (r < 0)
        return r;
    return luks_header_parse_names(h);
}

static void header_serialize(const struct luks_header *h, uint8_t *b)
{
    memset(b, 0, LUKS_HEADER_LEN);
    memcpy(b, luks_magic, sizeof luks_magic);
    qimg_put_be16(b + 6, 1);
    memcpy(b + 8, h->cipher_name, 32);
    memcpy(b + 40, h->cipher_mode, 32);
    memcpy(b + 72, h->hash_spec, 32);
    qimg_put_be32(b + 104, h->payload_offset);
    qimg_put_be32(b + 108, h->key_bytes);
    memcpy(b + 112, h->mk_digest, LUKS_DIGEST_LEN);
    memcpy(b + 132, h->mk_salt, LUKS_SALT_LEN);
    qimg_put_be32(b + 164, h->mk_iterations);
    memcpy(b + 168, h->uuid, LUKS_UUID_LEN);
    for (size_t i = 0; i < LUKS_SLOTS; i++) {
        uint8_t *s = b + 208 + 48 * i;
        qimg_put_be32(s, h->slots[i].active);
        qimg_put_be32(s + 4, h->slots[i].iterations);
        memcpy(s + 8, h->slots[i].salt, LUKS_SALT_LEN);
        qimg_put_be32(s + 40, h->slots[i].key_offset);
        qimg_put_be32(s + 44, h->slots[i].stripes);
    }
}

static int store_read(const struct luks_store *st, void *buf, size_t len, uint64_t off)
{
    if (st->limit && !qimg_range_ok(off, len, st->limit))
        return qimg_error(-EINVAL, "Request for data outside of extension header");
    return qimg_io_pread(st->io, buf, len, st->base + off);
}

static int store_write(const struct luks_store *st, const void *buf, size_t len, uint64_t off)
{
    if (st->limit && !qimg_range_ok(off, len, st->limit))
        return qimg_error(-EINVAL, "Request for data outside of extension header");
    return qimg_io_pwrite(st->io, buf, len, st->base + off);
}

static int header_write(const struct luks_store *st, const struct luks_header *h)
{
    uint8_t b[LUKS_HEADER_LEN];
    header_serialize(h, b);
    return store_write(st, b, sizeof b, 0);
}

int luks_header_read(const struct luks_store *st, struct luks_header *h)
{
    uint8_t b[LUKS_HEADER_LEN];
    int r = qimg_io_pread(st->io, b, sizeof b, st->base);
    if (r < 0)
        return r;
    return luks_header_parse(b, h);
}

/* ------------------------------------------------------- anti-forensics */

/* Each hash-sized piece i of the block becomes H(be32(i) || piece), cut
 * to the piece's length. */
static int af_diffuse(enum qimg_hash_alg hash, uint8_t *block, size_t len)
{
    size_t hlen = qimg_hash_len(hash);
    uint8_t in[4 + 64], out[64];
    for (size_t i = 0, off = 0; off < len; i++, off += hlen) {
        size_t n = QIMG_MIN(hlen, len - off);
        qimg_put_be32(in, (uint32_t)i);
        memcpy(in + 4, block + off, n);
        int r = qimg_hash(hash, in, 4 + n, out);
        if (r < 0)
            return r;
        memcpy(block + off, out, n);
    }
    qimg_wipe(in, sizeof in);
    qimg_wipe(out, sizeof out);
    return 0;
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] ^= src[i];
}

/* stripes blocks of len bytes -> the key */
int luks_af_merge(enum qimg_hash_alg hash, const uint8_t *split, size_t len, uint32_t stripes,
                  uint8_t *key)
{
    memset(key, 0, len);
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(key, split + (size_t)i * len, len);
        int r = af_diffuse(hash, key, len);
        if (r < 0)
            return r;
    }
    xor_into(key, split + (size_t)(stripes - 1) * len, len);
    return 0;
}

/* the key -> stripes blocks, all but the last random */
static int af_split(enum qimg_hash_alg hash, const uint8_t *key, size_t len, uint32_t stripes,
                    uint8_t *split)
{
    uint8_t d[64] = { 0 };
    int r = qimg_random_bytes(split, (size_t)(stripes - 1) * len);
    for (uint32_t i = 0; r == 0 && i + 1 < stripes; i++) {
        xor_into(d, split + (size_t)i * len, len);
        r = af_diffuse(hash, d, len);
    }
    if (r == 0) {
        memcpy(split + (size_t)(stripes - 1) * len, d, len);
        xor_into(split + (size_t)(stripes - 1) * len, key, len);
    }
    qimg_wipe(d, sizeof d);
    return r;
}

/* --------------------------------------------------------------- keyslots */

static int slot_cipher(const struct luks_header *h, const uint8_t *key,
                       struct qimg_sector_cipher **out)
{
    return qimg_sector_cipher_new(out, h->alg, h->mode, h->ivgen, h->ivhash, key, h->key_bytes);
}

int luks_check_iterations(uint64_t iterations, const char *what, int slot)
{
    uint64_t cap = max_iters();
    if (iterations <= cap)
        return 0;
    if (slot >= 0)
        return qimg_error(-E2BIG, "LUKS keyslot %d asks for %" PRIu64 " PBKDF2 iterations, more than qimg "
                          "spends on an untrusted header (%" PRIu64 ", QIMG_LUKS_MAX_ITERS)",
                          slot, iterations, cap);
    return qimg_error(-E2BIG, "LUKS %s asks for %" PRIu64 " PBKDF2 iterations, more than qimg "
                      "spends on an untrusted header (%" PRIu64 ", QIMG_LUKS_MAX_ITERS)",
                      what, iterations, cap);
}

/* Is key the master key?  1 yes, 0 no. */
static int verify_master_key(const struct luks_header *h, const uint8_t *key)
{
    uint8_t digest[LUKS_DIGEST_LEN];
    int r = luks_check_iterations(h->mk_iterations, "master key digest", -1);
    if (r == 0)
        r = qimg_pbkdf2(h->hash, key, h->key_bytes, h->mk_salt, LUKS_SALT_LEN, h->mk_iterations,
                        digest, sizeof digest);
    if (r < 0)
        return r;
    return memcmp(digest, h->mk_digest, sizeof digest) == 0;
}

/* Try one active keyslot: 1 and the master key in key when the password
 * opens it, 0 when not. */
static int try_slot(const struct luks_store *st, const struct luks_header *h, int i,
                    const char *pass, size_t pass_len, uint8_t *key)
{
    const struct luks_slot *s = &h->slots[i];
    size_t split_len = (size_t)split_key_sectors(h->key_bytes, s->stripes) * LUKS_SECTOR;
    uint8_t slot_key[64];
    struct qimg_sector_cipher *c = NULL;
    uint8_t *split = qimg_alloc_from_image(split_len, "LUKS key material");
    if (!split)
        return -ENOMEM;
    int r = luks_check_iterations(s->iterations, NULL, i);
    if (r == 0)
        r = qimg_pbkdf2(h->hash, pass, pass_len, s->salt, LUKS_SALT_LEN, s->iterations,
                        slot_key, h->key_bytes);
    if (r == 0)
        r = store_read(st, split, split_len, (uint64_t)s->key_offset * LUKS_SECTOR);
    if (r == 0)
        r = slot_cipher(h, slot_key, &c);
    if (r == 0)
        r = qimg_sector_cipher_run(c, false, 0, LUKS_SECTOR, split, split_len);
    if (r == 0)
        r = luks_af_merge(h->hash, split, h->key_bytes, s->stripes, key);
    if (r == 0)
        r = verify_master_key(h, key);
    qimg_sector_cipher_free(c);
    qimg_wipe(slot_key, sizeof slot_key);
    qimg_wipe_free(split, split_len);
    return r;
}

/* Which active keyslot the password opens: its index, or -ENOENT.  A slot
 * over the iteration cap is skipped; when no other opens, that is the
 * error. */
static int find_key(const struct luks_store *st, const struct luks_header *h, const char *pass,
                    size_t pass_len, uint8_t *key, int only_slot)
{
    int skipped = 0;
    char skip_msg[256] = "";
    for (int i = 0; i < LUKS_SLOTS; i++) {
        if (h->slots[i].active != LUKS_SLOT_ACTIVE || (only_slot >= 0 && i != only_slot))
            continue;
        int r = try_slot(st, h, i, pass, pass_len, key);
        if (r == 1)
            return i;
        if (r == -E2BIG && !skipped) {
            skipped = r;
            snprintf(skip_msg, sizeof skip_msg, "%s", qimg_last_error());
            continue;
        }
        if (r < 0 && r != -E2BIG)
            return r;
    }
    if (skipped)
        return qimg_error(-E2BIG, "%s", skip_msg);
    return -ENOENT;
}

static int get_secret(const char *id, const char *prefix, char **pass, size_t *len)
{
    if (!id)
        return qimg_error(-EINVAL, "Parameter '%skey-secret' is required for cipher", prefix);
    return qimg_secret_lookup(id, pass, len);
}

int luks_open_volume(const struct luks_store *st, const char *secret_id, const char *prefix,
                     bool no_io, struct luks_volume **out)
{
    struct luks_volume *v = qimg_xcalloc(1, sizeof *v);
    int r = luks_header_read(st, &v->h);
    if (r == 0 && no_io) {
        *out = v;
        return 0;
    }
    if (r == 0 && !qimg_crypto_available())
        r = -ENOTSUP;
    char *pass = NULL;
    size_t pass_len = 0;
    if (r == 0)
        r = get_secret(secret_id, prefix, &pass, &pass_len);
    if (r == 0)
        r = luks_check_usable(&v->h);
    if (r == 0) {
        v->master_key = qimg_xmalloc(v->h.key_bytes);
        r = find_key(st, &v->h, pass, pass_len, v->master_key, -1);
        if (r == -ENOENT)
            r = qimg_error(-EPERM, "Invalid password, cannot unlock any keyslot");
    }
    qimg_wipe_free(pass, pass_len);
    if (r >= 0)
        r = slot_cipher(&v->h, v->master_key, &v->cipher);
    if (r < 0) {
        luks_volume_free(v);
        return r;
    }
    *out = v;
    return 0;
}

void luks_volume_free(struct luks_volume *v)
{
    if (!v)
        return;
    qimg_sector_cipher_free(v->cipher);
    qimg_wipe_free(v->master_key, v->h.key_bytes);
    free(v);
}

int luks_crypt(const struct luks_volume *v, bool encrypt, uint64_t first_sector, uint8_t *buf, size_t len)
{
    return qimg_sector_cipher_run(v->cipher, encrypt, first_sector, LUKS_SECTOR, buf, len);
}

int luks_crypt_bytes(const struct luks_volume *v, bool encrypt, uint64_t off, uint8_t *buf, size_t len)
{
    /* LUKS2 sectors above 512 bytes: the IV still counts 512-byte units,
     * as cryptsetup encrypts them */
    unsigned ss = v->sector_size ? v->sector_size : LUKS_SECTOR;
    return qimg_sector_cipher_run_step(v->cipher, encrypt, off / LUKS_SECTOR + v->iv_offset,
                                       ss / LUKS_SECTOR, ss, buf, len);
}

/* ------------------------------------------------------------------- info */

void luks_info_fill(const struct luks_header *h, struct qimg_json *o)
{
    qimg_json_set(o, "cipher-alg", qimg_json_string(qimg_cipher_alg_name(h->alg)));
    qimg_json_set(o, "cipher-mode", qimg_json_string(qimg_cipher_mode_name(h->mode)));
    qimg_json_set(o, "ivgen-alg", qimg_json_string(qimg_ivgen_name(h->ivgen)));
    if (h->has_ivhash)
        qimg_json_set(o, "ivgen-hash-alg", qimg_json_string(qimg_hash_name(h->ivhash)));
    qimg_json_set(o, "hash-alg", qimg_json_string(qimg_hash_name(h->hash)));
    qimg_json_set(o, "payload-offset", qimg_json_int((int64_t)h->payload_offset * LUKS_SECTOR));
    qimg_json_set(o, "master-key-iters", qimg_json_int(h->mk_iterations));
    qimg_json_set(o, "uuid", qimg_json_string(h->uuid));
    struct qimg_json *slots = qimg_json_array();
    for (size_t i = 0; i < LUKS_SLOTS; i++) {
        const struct luks_slot *s = &h->slots[i];
        struct qimg_json *j = qimg_json_object();
        bool active = s->active == LUKS_SLOT_ACTIVE;
        qimg_json_set(j, "active", qimg_json_bool(active));
        if (active)
            qimg_json_set(j, "iters", qimg_json_int(s->iterations));
        if (active)
            qimg_json_set(j, "stripes", qimg_json_int(s->stripes));
        qimg_json_set(j, "key-offset", qimg_json_int((int64_t)s->key_offset * LUKS_SECTOR));
        qimg_json_append(slots, j);
    }
    qimg_json_set(o, "slots", slots);
}

/* ----------------------------------------------------------------- create */

static int lookup_opt(qimg_opts *opts, const char *prefix, const char *name,
                      int (*lookup)(const char *), int def, int *out)
{
    char key[64];
    const char *v = NULL;
    snprintf(key, sizeof key, "%s%s", prefix, name);
    *out = def;
    if (qimg_opts_get_string(opts, key, &v) != 1)
        return 0;
    int x = lookup(v);
    if (x < 0)   /* qemu names it without the prefix */
        return qimg_error(-EINVAL, "Parameter '%s' does not accept value '%s'", name, v);
    *out = x;
    return 1;
}


int luks_create_params_get(qimg_opts *opts, const char *prefix, struct luks_create_params *p)
{
    char key[64];
    int v, r;
    memset(p, 0, sizeof *p);
    snprintf(key, sizeof key, "%skey-secret", prefix);
    qimg_opts_get_string(opts, key, &p->secret_id);
    r = lookup_opt(opts, prefix, "cipher-alg", qimg_cipher_alg_lookup, QIMG_CIPHER_AES_256, &v);
    p->alg = (enum qimg_cipher_alg)v;
    if (r >= 0)
        r = lookup_opt(opts, prefix, "cipher-mode", qimg_cipher_mode_lookup, QIMG_MODE_XTS, &v);
    p->mode = (enum qimg_cipher_mode)v;
    if (r >= 0)
        r = lookup_opt(opts, prefix, "ivgen-alg", qimg_ivgen_lookup, QIMG_IVGEN_PLAIN64, &v);
    p->ivgen = (enum qimg_ivgen_alg)v;
    if (r >= 0)
        r = lookup_opt(opts, prefix, "ivgen-hash-alg", qimg_hash_lookup, QIMG_HASH_SHA256, &v);
    p->ivhash = (enum qimg_hash_alg)v;
    p->has_ivhash = r == 1;
    if (r >= 0)
        r = lookup_opt(opts, prefix, "hash-alg", qimg_hash_lookup, QIMG_HASH_SHA256, &v);
    p->hash = (enum qimg_hash_alg)v;
    if (r < 0)
        return r;
    p->iter_time = 2000;
    snprintf(key, sizeof key, "%siter-time", prefix);
    r = qimg_opts_get_number(opts, key, &p->iter_time);
    return r < 0 ? r : 0;
}

int luks_create_params_check(const struct luks_create_params *p)
{
    if (p->ivgen == QIMG_IVGEN_ESSIV) {
        int essiv = qimg_cipher_essiv_alg(p->alg, p->ivhash);
        if (essiv < 0)
            return essiv;
    }
    return qimg_cipher_mode_check(p->alg, p->mode);
}

static uint32_t key_bytes_of(const struct luks_create_params *p)
{
    return (uint32_t)qimg_cipher_key_len(p->alg) * (p->mode == QIMG_MODE_XTS ? 2 : 1);
}

static uint64_t slot_bytes(uint32_t key_bytes)
{
    uint64_t n = (uint64_t)key_bytes * LUKS_STRIPES;
    return (n + LUKS_ALIGN - 1) / LUKS_ALIGN * LUKS_ALIGN;
}

uint64_t luks_header_size(const struct luks_create_params *p)
{
    return LUKS_ALIGN + LUKS_SLOTS * slot_bytes(key_bytes_of(p));
}

static int fill_names(struct luks_header *h, const struct luks_create_params *p)
{
    h->alg = p->alg;
    h->mode = p->mode;
    h->ivgen = p->ivgen;
    h->hash = p->hash;
    h->ivhash = p->ivhash;
    h->has_ivhash = p->ivgen == QIMG_IVGEN_ESSIV;
    int r = luks_create_params_check(p);
    if (r < 0)
        return r;
    if (!qimg_cipher_usable(p->alg, p->mode))
        return -ENOTSUP;
    snprintf(h->cipher_name, sizeof h->cipher_name, "%s", qimg_cipher_family(p->alg));
    if (h->has_ivhash)
        snprintf(h->cipher_mode, sizeof h->cipher_mode, "%s-%s:%s", qimg_cipher_mode_name(p->mode),
                 qimg_ivgen_name(p->ivgen), qimg_hash_name(p->ivhash));
    else
        snprintf(h->cipher_mode, sizeof h->cipher_mode, "%s-%s", qimg_cipher_mode_name(p->mode),
                 qimg_ivgen_name(p->ivgen));
    snprintf(h->hash_spec, sizeof h->hash_spec, "%s", qimg_hash_name(p->hash));
    return 0;
}

static int make_uuid(char *out)
{
    uint8_t u[16];
    int r = qimg_random_bytes(u, sizeof u);
    if (r < 0)
        return r;
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    snprintf(out, LUKS_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
             u[13], u[14], u[15]);
    return 0;
}

/* Iterations for ms of CPU time, qemu's floor, divided as asked. */
static int iterations_for(enum qimg_hash_alg hash, size_t out_len, uint64_t ms, unsigned divide,
                          uint32_t *out)
{
    uint64_t n;
    int r = qimg_pbkdf2_count_iters(hash, out_len, 1000, &n);
    if (r < 0)
        return r;
    if (ms && n > UINT64_MAX / ms)
        return qimg_error(-ERANGE, "PBKDF iterations %llu too large to scale", (unsigned long long)n);
    n = n * ms / 1000 / divide;
    if (n > UINT32_MAX)
        return qimg_error(-ERANGE, "PBKDF iterations %llu larger than %u", (unsigned long long)n, UINT32_MAX);
    *out = (uint32_t)QIMG_MAX(n, 1000u);
    return 0;
}

/* Write keyslot i protecting master key mk with pass. */
static int write_slot(const struct luks_store *st, struct luks_header *h, int i, const uint8_t *mk,
                      const char *pass, size_t pass_len, uint64_t iter_time)
{
    struct luks_slot *s = &h->slots[i];
    size_t split_len = (size_t)split_key_sectors(h->key_bytes, LUKS_STRIPES) * LUKS_SECTOR;
    uint8_t slot_key[64];
    struct qimg_sector_cipher *c = NULL;
    uint8_t *split = qimg_xcalloc(1, split_len);
    uint32_t iters = 0;
    int r = iterations_for(h->hash, h->key_bytes, iter_time, 1, &iters);
    if (r == 0)
        r = qimg_random_bytes(s->salt, LUKS_SALT_LEN);
    if (r == 0)
        r = qimg_pbkdf2(h->hash, pass, pass_len, s->salt, LUKS_SALT_LEN, iters, slot_key, h->key_bytes);
    if (r == 0)
        r = af_split(h->hash, mk, h->key_bytes, LUKS_STRIPES, split);
    if (r == 0)
        r = slot_cipher(h, slot_key, &c);
    if (r == 0)
        r = qimg_sector_cipher_run(c, true, 0, LUKS_SECTOR, split, split_len);
    if (r == 0)
        r = store_write(st, split, split_len, (uint64_t)s->key_offset * LUKS_SECTOR);
    if (r < 0)
        qimg_error_prefix("Failed to write to keyslot %i", i);
    if (r == 0) {
        s->iterations = iters;
        s->stripes = LUKS_STRIPES;
        s->active = LUKS_SLOT_ACTIVE;
    }
    qimg_sector_cipher_free(c);
    qimg_wipe(slot_key, sizeof slot_key);
    qimg_wipe_free(split, split_len);
    return r;
}

int luks_format(const struct luks_store *st, const struct luks_create_params *p,
                struct luks_volume **out)
{
    if (!qimg_crypto_available())
        return -ENOTSUP;
    struct luks_volume *v = qimg_xcalloc(1, sizeof *v);
    struct luks_header *h = &v->h;
    char *pass = NULL;
    size_t pass_len = 0;
    int r = get_secret(p->secret_id, "", &pass, &pass_len);
    if (r == 0)
        r = fill_names(h, p);
    h->key_bytes = key_bytes_of(p);
    uint64_t each = slot_bytes(h->key_bytes);
    for (size_t i = 0; i < LUKS_SLOTS; i++) {
        h->slots[i].active = LUKS_SLOT_DISABLED;
        h->slots[i].stripes = LUKS_STRIPES;
        h->slots[i].key_offset = (uint32_t)((LUKS_ALIGN + i * each) / LUKS_SECTOR);
    }
    h->payload_offset = (uint32_t)(luks_header_size(p) / LUKS_SECTOR);
    v->master_key = qimg_xmalloc(h->key_bytes);
    if (r == 0)
        r = qimg_random_bytes(v->master_key, h->key_bytes);
    if (r == 0)
        r = make_uuid(h->uuid);
    if (r == 0)
        r = qimg_random_bytes(h->mk_salt, LUKS_SALT_LEN);
    if (r == 0)
        r = iterations_for(h->hash, LUKS_DIGEST_LEN, p->iter_time, 8, &h->mk_iterations);
    if (r == 0)
        r = qimg_pbkdf2(h->hash, v->master_key, h->key_bytes, h->mk_salt, LUKS_SALT_LEN,
                        h->mk_iterations, h->mk_digest, LUKS_DIGEST_LEN);
    if (r == 0)
        r = slot_cipher(h, v->master_key, &v->cipher);
    if (r == 0)
        r = write_slot(st, h, 0, v->master_key, pass, pass_len, p->iter_time);
    if (r == 0)
        r = header_write(st, h);
    qimg_wipe_free(pass, pass_len);
    if (r < 0 || !out)
        luks_volume_free(v);
    else
        *out = v;
    return r;
}

/* ------------------------------------------------------------------ amend */

struct amend_req {
    bool has_state, active;
    bool has_slot;
    uint64_t slot;
    const char *old_secret, *new_secret;
    bool has_iter_time;
    uint64_t iter_time;
};

static int amend_parse(qimg_opts *opts, const char *prefix, struct amend_req *a)
{
    char key[64];
    const char *state = NULL;
    memset(a, 0, sizeof *a);
    a->iter_time = 2000;
    snprintf(key, sizeof key, "%sstate", prefix);
    if (qimg_opts_get_string(opts, key, &state) == 1) {
        a->has_state = true;
        if (strcmp(state, "active") == 0)
            a->active = true;
        else if (strcmp(state, "inactive") != 0)
            return qimg_error(-EINVAL, "Parameter '%s' does not accept value '%s'", key, state);
    }
    snprintf(key, sizeof key, "%skeyslot", prefix);
    int r = qimg_opts_get_number(opts, key, &a->slot);
    if (r < 0)
        return r;
    a->has_slot = r == 1;
    snprintf(key, sizeof key, "%sold-secret", prefix);
    qimg_opts_get_string(opts, key, &a->old_secret);
    snprintf(key, sizeof key, "%snew-secret", prefix);
    qimg_opts_get_string(opts, key, &a->new_secret);
    snprintf(key, sizeof key, "%siter-time", prefix);
    r = qimg_opts_get_number(opts, key, &a->iter_time);
    if (r < 0)
        return r;
    a->has_iter_time = r == 1;
    if (!a->has_state)
        return qimg_error(-EINVAL, "Parameter 'state' is missing");
    return 0;
}

static int check_slot_index(const struct amend_req *a)
{
    if (a->has_slot && a->slot >= LUKS_SLOTS)
        return qimg_error(-EINVAL, "Invalid keyslot %u specified, must be between 0 and %u",
                          (unsigned)a->slot, LUKS_SLOTS - 1);
    return 0;
}

/* --force lets a new secret overwrite an active keyslot, as in qemu. */
static int amend_activate(const struct luks_store *st, struct luks_volume *v, const struct amend_req *a,
                          bool force)
{
    struct luks_header *h = &v->h;
    if (!a->new_secret)
        return qimg_error(-EINVAL, "'new-secret' is required to activate a keyslot");
    if (a->old_secret)
        return qimg_error(-EINVAL, "'old-secret' must not be given when activating keyslots");
    int slot = -1, r = check_slot_index(a);
    if (r < 0)
        return r;
    if (a->has_slot) {
        slot = (int)a->slot;
        if (h->slots[slot].active == LUKS_SLOT_ACTIVE && !force)
            return qimg_error(-EINVAL, "Refusing to overwrite active keyslot %i - please erase it first", slot);
    } else {
        for (int i = 0; i < LUKS_SLOTS && slot < 0; i++)
            if (h->slots[i].active != LUKS_SLOT_ACTIVE)
                slot = i;
        if (slot < 0)
            return qimg_error(-EINVAL, "Can't add a keyslot - all keyslots are in use");
    }
    char *pass = NULL;
    size_t pass_len = 0;
    r = qimg_secret_lookup(a->new_secret, &pass, &pass_len);
    if (r == 0)
        r = write_slot(st, h, slot, v->master_key, pass, pass_len, a->iter_time);
    qimg_wipe_free(pass, pass_len);
    if (r == 0)
        r = header_write(st, h);
    return r;
}

/* Overwrite a keyslot's key material with random bytes and mark it off. */
static int erase_slot(const struct luks_store *st, struct luks_header *h, int i)
{
    struct luks_slot *s = &h->slots[i];
    size_t len = (size_t)split_key_sectors(h->key_bytes, s->stripes) * LUKS_SECTOR;
    uint8_t *junk = qimg_xmalloc(len);
    int r = qimg_random_bytes(junk, len);
    if (r == 0)
        r = store_write(st, junk, len, (uint64_t)s->key_offset * LUKS_SECTOR);
    free(junk);
    if (r == 0) {
        s->active = LUKS_SLOT_DISABLED;
        s->iterations = 0;
        memset(s->salt, 0, sizeof s->salt);
        r = header_write(st, h);
    }
    if (r < 0)
        qimg_error_prefix("Failed to erase keyslot %i", i);
    return r;
}

static int count_active(const struct luks_header *h)
{
    int n = 0;
    for (int i = 0; i < LUKS_SLOTS; i++)
        n += h->slots[i].active == LUKS_SLOT_ACTIVE;
    return n;
}

/* Does the secret open slot i?  1 yes, 0 no. */
static int slot_matches(const struct luks_store *st, const struct luks_header *h, int i,
                        const char *pass, size_t pass_len)
{
    uint8_t key[64];
    int r = find_key(st, h, pass, pass_len, key, i);
    qimg_wipe(key, sizeof key);
    return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

static int amend_erase(const struct luks_store *st, struct luks_volume *v, const struct amend_req *a,
                       bool force)
{
    struct luks_header *h = &v->h;
    if (a->new_secret)
        return qimg_error(-EINVAL, "'new-secret' must not be given when erasing keyslots");
    if (a->has_iter_time)
        return qimg_error(-EINVAL, "'iter-time' must not be given when erasing keyslots");
    if (!a->has_slot && !a->old_secret)
        return qimg_error(-EINVAL, "To erase keyslot(s), either explicit keyslot index or the "
                          "password currently contained in them must be given");
    int r = check_slot_index(a);
    if (r < 0)
        return r;
    char *pass = NULL;
    size_t pass_len = 0;
    if (a->old_secret && (r = qimg_secret_lookup(a->old_secret, &pass, &pass_len)) < 0)
        return r;
    bool erase[LUKS_SLOTS] = { false };
    int n = 0;
    if (a->has_slot) {
        int i = (int)a->slot;
        if (h->slots[i].active != LUKS_SLOT_ACTIVE && !force)   /* forced: erased again */
            r = qimg_error(-EINVAL, "Given keyslot %i is already erased (inactive) ", i);
        else if (pass && (r = slot_matches(st, h, i, pass, pass_len)) == 0)
            r = qimg_error(-EINVAL, "Given keyslot %i doesn't contain the given old password for erase operation", i);
        else if (r >= 0 && count_active(h) == 1 && !force)
            r = qimg_error(-EINVAL, "Attempt to erase the only active keyslot %i which will erase all "
                           "the data in the image irreversibly - refusing operation", i);
        if (r >= 0) {
            erase[i] = true;
            n = 1;
        }
    } else {
        for (int i = 0; i < LUKS_SLOTS && r >= 0; i++) {
            if (h->slots[i].active != LUKS_SLOT_ACTIVE)
                continue;
            r = slot_matches(st, h, i, pass, pass_len);
            if (r == 1) {
                erase[i] = true;
                n++;
            }
        }
        if (r >= 0 && n == 0)
            r = qimg_error(-EINVAL, "No keyslots match given (old) password for erase operation");
        else if (r >= 0 && n == count_active(h) && !force)
            r = qimg_error(-EINVAL, "All the active keyslots match the (old) password that was given "
                           "and erasing them will erase all the data in the image irreversibly - "
                           "refusing operation");
    }
    qimg_wipe_free(pass, pass_len);
    for (int i = 0; i < LUKS_SLOTS && r >= 0; i++)
        if (erase[i])
            r = erase_slot(st, h, i);
    return r < 0 ? r : 0;
}

int luks_amend(const struct luks_store *st, struct luks_volume *v, qimg_opts *opts,
               const char *prefix, bool force)
{
    struct amend_req a;
    int r = amend_parse(opts, prefix, &a);
    if (r < 0)
        return r;
    return a.active ? amend_activate(st, v, &a, force) : amend_erase(st, v, &a, force);
}
