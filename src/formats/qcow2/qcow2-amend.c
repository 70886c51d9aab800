/* qimg - qemu-img amend for qcow2: compat 0.10 <-> 1.1, refcount width,
 * lazy refcounts, size, external data file name.
 *
 * What qemu-img 7.2 does, as observed:
 *  - options are checked first (encryption options, compat value, data
 *    file, data_file_raw, refcount width, backing file), then the version
 *    dependent rules (refcount width, lazy refcounts);
 *  - then, in this order: upgrade to v3, refcount width change, data file
 *    name and data_file_raw=off, lazy refcounts, size, downgrade to v2.
 *    A failing step leaves the earlier ones done.
 *  - progress (-p) comes from the three long operations (upgrade, refcount
 *    width, downgrade); each one's share of the bar is projected from the
 *    work of those done so far (see struct amend_progress).
 *
 * Every header change rewrites the whole first cluster the way qemu writes
 * it: a v3 header is 112 bytes followed by the backing format, data file,
 * crypto, feature table, bitmaps and unknown extensions; a v2 header is 72
 * bytes and has no feature table.
 *
 * Crash ordering: new refcount structures and zeroed clusters are written
 * and flushed before the header or the L2 entries point to them; a crash
 * leaves at worst leaked clusters. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"
#include "qcow2-amend.h"
#include "qcow2-snapshot.h"
#include "qcow2-snaptable.h"

const struct qimg_opt_desc qcow2_amend_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "compat", QIMG_OPT_STRING, "Compatibility level (v2 [0.10] or v3 [1.1])", NULL },
    { "backing_file", QIMG_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Image format of the base image", NULL },
    { "data_file", QIMG_OPT_STRING, "File name of an external data file", NULL },
    { "data_file_raw", QIMG_OPT_BOOL, "The external data file must stay valid as a raw image", NULL },
    { "encrypt.keyslot", QIMG_OPT_NUMBER, "Select a single keyslot to modify explicitly", NULL },
    { "encrypt.state", QIMG_OPT_STRING, "Select new state of affected keyslots (active/inactive)", NULL },
    { "encrypt.old-secret", QIMG_OPT_STRING, "Select all keyslots that match this password", NULL },
    { "encrypt.new-secret", QIMG_OPT_STRING, "New secret to set in the matching keyslots. Empty string to erase", NULL },
    { "encrypt.iter-time", QIMG_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL },
    { "lazy_refcounts", QIMG_OPT_BOOL, "Postpone refcount updates", NULL },
    { "refcount_bits", QIMG_OPT_NUMBER, "Width of a reference count entry in bits", NULL },
    { NULL, 0, NULL, NULL },
};

/* ============================================================ progress */

enum amend_op { OP_NONE, OP_UPGRADE, OP_REFCOUNT, OP_DOWNGRADE };

/* qemu-img shows one bar for several operations: the work done by the
 * finished ones plus the current one's position, over the work known so
 * far scaled up for the operations still to come. */
struct amend_progress {
    qimg_progress_fn fn;
    void *opaque;
    int total_ops, ops_done;
    enum amend_op last_op;
    int64_t offset_done, last_work;
};

static void report(struct amend_progress *p, enum amend_op op, int64_t offset, int64_t work)
{
    if (op != p->last_op) {
        if (p->last_op != OP_NONE) {
            p->offset_done += p->last_work;
            p->ops_done++;
        }
        p->last_op = op;
    }
    p->last_work = work;
    if (!p->fn || p->total_ops <= 0 || p->ops_done >= p->total_ops)
        return;
    int64_t known = p->offset_done + work;
    int64_t projected = known * (p->total_ops - p->ops_done - 1) / (p->ops_done + 1);
    int64_t total = known + projected;
    if (total <= 0)
        return;
    /* single precision, as qemu-img computes the percentage */
    float pct = 100.f * (float)(p->offset_done + offset) / (float)total;
    p->fn((double)pct, p->opaque);
}

/* ============================================================== header */

/* The feature name table qemu writes into every v3 header. */
static const struct { uint8_t type, bit; const char *name; } std_features[] = {
    { QCOW2_FEAT_INCOMPAT, 0, "dirty bit" },
    { QCOW2_FEAT_INCOMPAT, 1, "corrupt bit" },
    { QCOW2_FEAT_INCOMPAT, 2, "external data file" },
    { QCOW2_FEAT_INCOMPAT, 3, "compression type" },
    { QCOW2_FEAT_INCOMPAT, 4, "extended L2 entries" },
    { QCOW2_FEAT_COMPAT, 0, "lazy refcounts" },
    { QCOW2_FEAT_AUTOCLEAR, 0, "bitmaps" },
    { QCOW2_FEAT_AUTOCLEAR, 1, "raw external data" },
};
#define NB_STD_FEATURES QIMG_ARRAY_SIZE(std_features)

static size_t ext_bytes(size_t len)
{
    return 8 + ((len + 7) & ~(size_t)7);
}

static void put_ext(uint8_t *buf, size_t *pos, uint32_t type, const void *data, size_t len)
{
    qimg_put_be32(buf + *pos, type);
    qimg_put_be32(buf + *pos + 4, (uint32_t)len);
    if (len)
        memcpy(buf + *pos + 8, data, len);
    *pos += ext_bytes(len);
}

static void put_fixed_fields(const struct qcow2_state *s, uint8_t *b)
{
    qimg_put_be32(b + QCOW2_HDR_MAGIC, QCOW2_MAGIC);
    qimg_put_be32(b + QCOW2_HDR_VERSION, s->version);
    qimg_put_be32(b + QCOW2_HDR_CLUSTER_BITS, s->cluster_bits);
    qimg_put_be64(b + QCOW2_HDR_SIZE, s->size);
    qimg_put_be32(b + QCOW2_HDR_CRYPT_METHOD, s->crypt_method);
    qimg_put_be32(b + QCOW2_HDR_L1_SIZE, s->l1_size);
    qimg_put_be64(b + QCOW2_HDR_L1_TABLE_OFFSET, s->l1_table_offset);
    qimg_put_be64(b + QCOW2_HDR_REFCOUNT_TABLE_OFFSET, s->refcount_table_offset);
    qimg_put_be32(b + QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS, s->refcount_table_clusters);
    qimg_put_be32(b + QCOW2_HDR_NB_SNAPSHOTS, s->nb_snapshots);
    qimg_put_be64(b + QCOW2_HDR_SNAPSHOTS_OFFSET, s->snapshots_offset);
    if (s->version < 3)
        return;
    qimg_put_be64(b + QCOW2_HDR_INCOMPATIBLE_FEATURES, s->incompatible_features);
    qimg_put_be64(b + QCOW2_HDR_COMPATIBLE_FEATURES, s->compatible_features);
    qimg_put_be64(b + QCOW2_HDR_AUTOCLEAR_FEATURES, s->autoclear_features);
    qimg_put_be32(b + QCOW2_HDR_REFCOUNT_ORDER, s->refcount_order);
    qimg_put_be32(b + QCOW2_HDR_HEADER_LENGTH, s->header_length);
    b[QCOW2_HDR_COMPRESSION_TYPE] = s->compression_type;
}

_Static_assert(NB_STD_FEATURES * QCOW2_FEATURE_ENTRY_LEN == QCOW2_STD_FEATURE_TABLE_LEN,
               "the standard feature table's length");

void qcow2_std_feature_table(uint8_t *t)
{
    memset(t, 0, QCOW2_STD_FEATURE_TABLE_LEN);
    for (size_t i = 0; i < NB_STD_FEATURES; i++) {
        uint8_t *e = t + i * QCOW2_FEATURE_ENTRY_LEN;
        e[0] = std_features[i].type;
        e[1] = std_features[i].bit;
        memcpy(e + 2, std_features[i].name, strlen(std_features[i].name));
    }
}

static void put_feature_table(uint8_t *buf, size_t *pos)
{
    uint8_t t[QCOW2_STD_FEATURE_TABLE_LEN];
    qcow2_std_feature_table(t);
    put_ext(buf, pos, QCOW2_EXT_FEATURE_TABLE, t, sizeof t);
}

/* The feature table in memory, as the header now holds it. */
static void set_std_features(struct qcow2_state *s)
{
    free(s->features);
    s->features = NULL;
    s->nb_features = 0;
    if (!qcow2_header_has_feature_table(s))
        return;
    s->features = qimg_xcalloc(NB_STD_FEATURES, sizeof *s->features);
    for (size_t i = 0; i < NB_STD_FEATURES; i++) {
        s->features[i].type = std_features[i].type;
        s->features[i].bit = std_features[i].bit;
        snprintf(s->features[i].name, sizeof s->features[i].name, "%s", std_features[i].name);
    }
    s->nb_features = NB_STD_FEATURES;
}

/* Rewrite the first cluster from the state (version, features, tables,
 * extensions, backing file name) and flush. */
static int write_header(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    const char *backing = img->backing_file;
    size_t blen = backing ? strlen(backing) : 0;
    s->header_length = qcow2_written_header_length(s);

    size_t need = s->header_length + 8 + blen;
    if (s->backing_fmt)
        need += ext_bytes(strlen(s->backing_fmt));
    if (s->data_file_name)
        need += ext_bytes(strlen(s->data_file_name));
    if (s->has_crypto_ext)
        need += ext_bytes(QCOW2_EXT_CRYPTO_LEN);
    if (qcow2_header_has_feature_table(s))
        need += ext_bytes(NB_STD_FEATURES * QCOW2_FEATURE_ENTRY_LEN);
    if (s->has_bitmaps_ext)
        need += ext_bytes(QCOW2_EXT_BITMAPS_LEN);
    for (size_t i = 0; i < s->nb_unknown_exts; i++)
        need += ext_bytes(s->unknown_exts[i].len);
    if (need > cs)
        return qimg_error(-ENOSPC, "Could not update qcow2 header: %s", strerror(ENOSPC));

    CLEANUP_FREE uint8_t *buf = qimg_xcalloc(1, cs);
    put_fixed_fields(s, buf);
    if (s->version >= 3 && s->unknown_header_fields_len)
        memcpy(buf + QCOW2_HDR_V3_LENGTH, s->unknown_header_fields, s->unknown_header_fields_len);
    size_t pos = s->header_length;
    if (s->backing_fmt)
        put_ext(buf, &pos, QCOW2_EXT_BACKING_FORMAT, s->backing_fmt, strlen(s->backing_fmt));
    if (s->data_file_name)
        put_ext(buf, &pos, QCOW2_EXT_DATA_FILE, s->data_file_name, strlen(s->data_file_name));
    if (s->has_crypto_ext) {
        uint8_t c[QCOW2_EXT_CRYPTO_LEN];
        qimg_put_be64(c, s->crypto_header_offset);
        qimg_put_be64(c + 8, s->crypto_header_length);
        put_ext(buf, &pos, QCOW2_EXT_CRYPTO, c, sizeof c);
    }
    if (qcow2_header_has_feature_table(s))
        put_feature_table(buf, &pos);
    if (s->has_bitmaps_ext) {
        uint8_t b[QCOW2_EXT_BITMAPS_LEN] = { 0 };
        qimg_put_be32(b, s->nb_bitmaps);
        qimg_put_be64(b + 8, s->bitmap_directory_size);
        qimg_put_be64(b + 16, s->bitmap_directory_offset);
        put_ext(buf, &pos, QCOW2_EXT_BITMAPS, b, sizeof b);
    }
    for (size_t i = 0; i < s->nb_unknown_exts; i++)
        put_ext(buf, &pos, s->unknown_exts[i].type, s->unknown_exts[i].data, s->unknown_exts[i].len);
    pos += 8;                                   /* end of extensions: zeros */
    if (backing) {
        memcpy(buf + pos, backing, blen);
        qimg_put_be64(buf + QCOW2_HDR_BACKING_FILE_OFFSET, pos);
        qimg_put_be32(buf + QCOW2_HDR_BACKING_FILE_SIZE, (uint32_t)blen);
    }
    int r = qimg_io_pwrite(img->file, buf, cs, 0);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        return qimg_error(r, "Could not update qcow2 header: %s", strerror(-r));
    s->backing_file_offset = backing ? pos : 0;
    s->backing_file_size = (uint32_t)blen;
    set_std_features(s);
    return 0;
}

/* Everything cached goes to disk (refcount blocks first). */
static int flush_all(struct qimg_image *img)
{
    int r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = qcow2_l2_cache_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

/* With lazy refcounts our writes set the dirty bit: with everything
 * flushed the refcounts are exact again and it can go. */
static int mark_clean(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = flush_all(img);
    if (r < 0 || !(s->incompatible_features & QCOW2_INCOMPAT_DIRTY))
        return r;
    uint8_t be[8];
    qimg_put_be64(be, s->incompatible_features & ~QCOW2_INCOMPAT_DIRTY);
    r = qimg_io_pwrite(img->file, be, 8, QCOW2_HDR_INCOMPATIBLE_FEATURES);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        return qimg_error(r, "Could not update qcow2 header: %s", strerror(-r));
    s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
    return 0;
}

/* ============================================================= options */

struct amend_opts {
    int version;                   /* 2 or 3 */
    bool has_refcount;
    unsigned refcount_order;
    bool has_lazy, lazy;
    const char *data_file;         /* NULL: unchanged */
    bool data_file_raw_off;
    uint64_t size;                 /* 0: unchanged */
    bool has_backing;              /* backing_file or backing_fmt given */
    const char *backing_file, *backing_fmt;   /* NULL: not given */
    bool encrypt;                  /* encrypt.* keyslot changes (LUKS) */
};

static int parse_compat(const char *v, int *version)
{
    if (strcmp(v, "0.10") == 0 || strcmp(v, "v2") == 0)
        *version = 2;
    else if (strcmp(v, "1.1") == 0 || strcmp(v, "v3") == 0)
        *version = 3;
    else
        return qimg_error(-EINVAL, "Unknown compatibility level %s", v);
    return 0;
}

static bool has_encrypt_opts(const qimg_opts *opts)
{
    for (size_t i = 0; i < opts->n; i++)
        if (strncmp(opts->v[i].name, "encrypt.", 8) == 0)
            return true;
    return false;
}

static bool same_or_both_absent(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

/* backing_file and backing_fmt may be given when they repeat what the
 * header records (qemu compares them with the stored strings: a value given
 * for a field the image lacks, or one left out while the image has it, is
 * a change); any change is rebase's job. */
static int check_backing_unchanged(struct qimg_image *img, const struct amend_opts *a)
{
    if (!a->has_backing ||
        (same_or_both_absent(a->backing_file, img->backing_file) &&
         same_or_both_absent(a->backing_fmt, qcow2_state(img)->backing_fmt)))
        return 0;
    return qimg_error(-EINVAL, "Cannot amend the backing file\n"
                      "You can use 'qemu-img rebase' instead.");
}

/* The checks qemu makes before changing anything, in its order (those
 * of the backing file and of lazy refcounts come later, see
 * amend_locked). */
static int parse_amend_opts(struct qimg_image *img, qimg_opts *opts, struct amend_opts *a)
{
    struct qcow2_state *s = qcow2_state(img);
    memset(a, 0, sizeof *a);
    a->version = (int)s->version;
    a->refcount_order = s->refcount_order;

    if (has_encrypt_opts(opts)) {
        if (s->crypt_method == QCOW2_CRYPT_NONE)
            return qimg_error(-EINVAL, "Can't amend encryption options - encryption not present");
        if (s->crypt_method != QCOW2_CRYPT_LUKS)
            return qimg_error(-EINVAL, "Only LUKS encryption options can be amended");
        a->encrypt = true;
    }
    const char *str;
    int r = qimg_opts_get_string(opts, "compat", &str);
    if (r > 0)
        r = parse_compat(str, &a->version);
    if (r < 0)
        return r;
    r = qimg_opts_get_string(opts, "data_file", &a->data_file);
    if (r < 0)
        return r;
    if (r > 0 && !qcow2_has_data_file(s))
        return qimg_error(-EINVAL, "data-file can only be set for images that use an external data file");
    bool raw;
    r = qimg_opts_get_bool(opts, "data_file_raw", &raw);
    if (r < 0)
        return r;
    if (r > 0 && raw && !qcow2_data_file_is_raw(s))
        return qimg_error(-EINVAL, "data-file-raw cannot be set on existing images");
    a->data_file_raw_off = r > 0 && !raw;
    uint64_t bits;
    r = qimg_opts_get_number(opts, "refcount_bits", &bits);
    if (r < 0)
        return r;
    if (r > 0) {
        if (!qimg_is_pow2(bits) || bits > 64)
            return qimg_error(-EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
        a->has_refcount = true;
        a->refcount_order = (unsigned)__builtin_ctzll(bits);
    }
    int has_file = qimg_opts_get_string(opts, "backing_file", &a->backing_file);
    int has_fmt = qimg_opts_get_string(opts, "backing_fmt", &a->backing_fmt);
    a->has_backing = has_file > 0 || has_fmt > 0;
    r = qimg_opts_get_bool(opts, "lazy_refcounts", &a->lazy);
    if (r < 0)
        return r;
    a->has_lazy = r > 0;
    r = qimg_opts_get_size(opts, "size", &a->size);
    if (r < 0)
        return r;

    if (a->has_refcount && a->refcount_order != 4 && a->version < 3)
        return qimg_error(-EINVAL, "Refcount widths other than 16 bits require compatibility "
                          "level 1.1 or above (use compat=1.1 or greater)");
    return 0;
}

/* ============================================================= upgrade */

static int upgrade(struct qimg_image *img, struct amend_progress *p)
{
    struct qcow2_state *s = qcow2_state(img);
    report(p, OP_UPGRADE, 0, 2);
    int r = flush_all(img);
    if (r < 0)
        return r;
    /* v3 entries hold the 64-bit VM state size and the disk size in their
     * extra data, which v2 ones may lack: the table is written anew then */
    bool incomplete = false;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        incomplete |= s->snapshots[i].extra_data_size < QCOW2_SNAPSHOT_EXTRA_DISKSIZE;
    if (incomplete) {
        r = qcow2_snapshot_write_table(img);
        if (r == 0)
            r = flush_all(img);
        if (r < 0)
            return qimg_error(r, "Failed to update the snapshot table: %s", strerror(-r));
    }
    s->version = 3;
    s->incompatible_features = 0;
    s->compatible_features = 0;
    s->autoclear_features = 0;
    s->refcount_order = 4;
    s->compression_type = QCOW2_COMPRESSION_ZLIB;
    report(p, OP_UPGRADE, 1, 2);
    r = write_header(img);
    if (r < 0)
        return r;
    report(p, OP_UPGRADE, 2, 2);
    return 0;
}

/* ================================================= refcount width change */

static void rc_set(unsigned order, uint8_t *b, uint64_t i, uint64_t v)
{
    switch (order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << order, per_byte = 8 / bits;
        unsigned shift = (unsigned)(i % per_byte) * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        b[i / per_byte] = (uint8_t)((b[i / per_byte] & ~mask) | ((v << shift) & mask));
        break;
    }
    case 3: b[i] = (uint8_t)v; break;
    case 4: qimg_put_be16(b + 2 * i, (uint16_t)v); break;
    case 5: qimg_put_be32(b + 4 * i, (uint32_t)v); break;
    default: qimg_put_be64(b + 8 * i, v); break;
    }
}

/* Refcounts of every host cluster, in memory while the structures are
 * rebuilt. */
struct rc_map {
    uint64_t *rc;
    uint64_t n;                    /* clusters held; beyond: refcount 0 */
    uint64_t cap;
    uint64_t hint;                 /* no free cluster below it */
};

static uint64_t map_get(const struct rc_map *m, uint64_t c)
{
    return c < m->n ? m->rc[c] : 0;
}

static int map_set(struct rc_map *m, uint64_t c, uint64_t v)
{
    if (c >= m->cap) {
        uint64_t cap = QIMG_MAX(c + 1, m->cap * 2);
        uint64_t *nrc = qimg_calloc_from_image(cap, sizeof *nrc, "refcount map");
        if (!nrc)
            return -ENOMEM;
        if (m->n)
            memcpy(nrc, m->rc, m->n * sizeof *nrc);
        free(m->rc);
        m->rc = nrc;
        m->cap = cap;
    }
    if (c >= m->n) {
        memset(m->rc + m->n, 0, (c + 1 - m->n) * sizeof *m->rc);
        m->n = c + 1;
    }
    m->rc[c] = v;
    return 0;
}

/* The reftable walks qemu's progress counts: walk w of `walks`, at
 * reftable index i. */
static void report_walk(struct amend_progress *p, uint64_t n, uint64_t w, uint64_t walks,
                        uint64_t i)
{
    report(p, OP_REFCOUNT, (int64_t)(w * n + i), (int64_t)(walks * n));
}

/* Read every stored refcount; each must fit the new width. */
static int load_refcounts(struct qimg_image *img, struct rc_map *m, unsigned new_order,
                          struct amend_progress *p)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries;
    uint64_t max = new_order == 6 ? UINT64_MAX : (1ull << (1u << new_order)) - 1;
    CLEANUP_FREE uint8_t *blk = qimg_alloc_from_image(s->cluster_size, "refcount block");
    if (!blk)
        return -ENOMEM;
    for (uint64_t ti = 0; ti < s->refcount_table_size; ti++) {
        report_walk(p, s->refcount_table_size, 0, 3, ti);
        uint64_t off = s->refcount_table[ti] & ~QCOW2_REFT_RESERVED;
        if (off == 0)
            continue;
        if (!qimg_is_aligned(off, s->cluster_size) || !qimg_range_ok(off, s->cluster_size, s->file_size))
            return qimg_error(-EIO, "qcow2: Refblock offset %#" PRIx64 " is invalid (reftable "
                              "index %#" PRIx64 ")", off, ti);
        int r = qimg_io_pread(img->file, blk, s->cluster_size, off);
        if (r < 0)
            return qimg_error(r, "Could not read refcount block: %s", strerror(-r));
        for (uint64_t i = 0; i < E; i++) {
            uint64_t v = qcow2_refblock_get(s, blk, i);
            if (v == 0)
                continue;
            uint64_t c = ti * E + i;
            if (v > max)
                return qimg_error(-EINVAL, "Cannot decrease refcount entry width to %u bits: "
                                  "Cluster at offset %#" PRIx64 " has a refcount of %" PRIu64,
                                  1u << new_order, c << s->cluster_bits, v);
            r = map_set(m, c, v);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* First run of `count` free clusters from the hint; they get refcount 1. */
static int map_alloc(struct rc_map *m, uint64_t count, uint64_t *start)
{
    uint64_t c = m->hint;
    for (;;) {
        uint64_t run = 0;
        while (run < count && map_get(m, c + run) == 0)
            run++;
        if (run == count)
            break;
        c += run + 1;
    }
    for (uint64_t k = 0; k < count; k++) {
        int r = map_set(m, c + k, 1);
        if (r < 0)
            return r;
    }
    if (c == m->hint)
        m->hint = c + count;
    *start = c;
    return 0;
}

static bool range_in_use(const struct rc_map *m, uint64_t from, uint64_t to)
{
    for (uint64_t c = from; c < to && c < m->n; c++)
        if (m->rc[c])
            return true;
    return false;
}

/* The new structures are placed as qemu places them, in walks: each walk
 * goes up the block ranges once and gives a new block to every range with
 * a cluster in use that has none, then gives the new refcount table
 * (contiguous) room for every block.  The new clusters are counted too, so
 * a walk that placed anything calls for one more; the walks end with one
 * that places nothing. */
struct new_refs {
    uint64_t table_start, table_clusters;
    uint64_t *blocks;              /* cluster of block ti, 0 = none */
    uint64_t nblocks;              /* entries of blocks[] */
    unsigned walks;                /* placing walks, the last one placing nothing */
};

static int place_blocks(struct rc_map *m, uint64_t E, struct new_refs *nr, bool *placed)
{
    /* a block placed beyond the ranges known at the start is in this walk's
     * reach: the walk goes on up to the end of what is in use */
    for (uint64_t ti = 0; ti < qimg_div_round_up(m->n, E); ti++) {
        if (ti >= nr->nblocks) {
            uint64_t nranges = qimg_div_round_up(m->n, E);
            nr->blocks = qimg_xrealloc(nr->blocks, nranges * sizeof *nr->blocks);
            memset(nr->blocks + nr->nblocks, 0, (nranges - nr->nblocks) * sizeof *nr->blocks);
            nr->nblocks = nranges;
        }
        if (nr->blocks[ti] || !range_in_use(m, ti * E, (ti + 1) * E))
            continue;
        int r = map_alloc(m, 1, &nr->blocks[ti]);
        if (r < 0)
            return r;
        *placed = true;
    }
    return 0;
}

static int place_new_structures(struct qcow2_state *s, struct rc_map *m, unsigned order,
                                struct new_refs *nr)
{
    uint64_t cs = s->cluster_size;
    uint64_t E = (cs * 8) >> order;
    uint64_t per_cluster = cs / 8;
    for (;;) {
        bool placed = false;
        nr->walks++;
        int r = place_blocks(m, E, nr, &placed);
        if (r < 0)
            return r;
        uint64_t need = QIMG_MAX(qimg_div_round_up(nr->nblocks, per_cluster), 1);
        if (nr->table_clusters >= need) {
            if (!placed)
                return 0;
            continue;
        }
        if (need * cs > QCOW2_MAX_REFTABLE_BYTES)
            return qimg_error(-EFBIG, "qcow2: the refcount table would exceed %llu bytes",
                              QCOW2_MAX_REFTABLE_BYTES);
        /* a larger table: the smaller one goes back */
        for (uint64_t k = 0; k < nr->table_clusters; k++)
            map_set(m, nr->table_start + k, 0);
        if (nr->table_clusters && nr->table_start < m->hint)
            m->hint = nr->table_start;
        nr->table_clusters = need;
        r = map_alloc(m, need, &nr->table_start);
        if (r < 0)
            return r;
    }
}

static int write_new_structures(struct qimg_image *img, const struct rc_map *m, unsigned order,
                                const struct new_refs *nr, unsigned walks,
                                struct amend_progress *p)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    uint64_t E = (cs * 8) >> order;
    CLEANUP_FREE uint8_t *blk = qimg_xmalloc(cs);
    CLEANUP_FREE uint8_t *table = qimg_xcalloc(nr->table_clusters, cs);
    uint64_t step = 0, old_n = s->refcount_table_size;
    for (uint64_t ti = 0; ti < nr->nblocks; ti++) {
        /* qemu's last walk runs over the old table */
        while (step < old_n && step * nr->nblocks <= ti * old_n)
            report_walk(p, old_n, walks - 1, walks, step++);
        if (!nr->blocks[ti])
            continue;
        memset(blk, 0, cs);
        for (uint64_t i = 0; i < E; i++)
            rc_set(order, blk, i, map_get(m, ti * E + i));
        int r = qimg_io_pwrite(img->file, blk, cs, nr->blocks[ti] * cs);
        if (r < 0)
            return qimg_error(r, "Failed to write refblock: %s", strerror(-r));
        qimg_put_be64(table + 8 * ti, nr->blocks[ti] * cs);
    }
    while (step < old_n)
        report_walk(p, old_n, walks - 1, walks, step++);
    int r = qimg_io_pwrite(img->file, table, nr->table_clusters * cs, nr->table_start * cs);
    if (r < 0)
        return qimg_error(r, "Failed to write the new reftable: %s", strerror(-r));
    /* the old structures' counts of the new clusters */
    r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        return qimg_error(r, "Failed to flush the refblock cache: %s", strerror(-r));
    return 0;
}

/* qemu allocates the new blocks and table through the old structures
 * (their counts change in the cached old blocks, written before the
 * switch); they are freed there again when the change fails. */
static int count_new_clusters(struct qimg_image *img, const struct new_refs *nr, int delta)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = 0;
    for (uint64_t ti = 0; ti <= nr->nblocks && r == 0; ti++) {
        bool table = ti == nr->nblocks;
        uint64_t first = table ? nr->table_start : nr->blocks[ti];
        uint64_t n = table ? nr->table_clusters : 1;
        if (!first || !n)
            continue;
        if (delta < 0) {
            r = qcow2_free_clusters(img, first << s->cluster_bits, n << s->cluster_bits, false);
            continue;
        }
        /* qemu's walk had the old blocks cached: the look-up reads nothing */
        uint64_t rc;
        r = qcow2_get_refcount(img, first, &rc);
        if (r == 0)
            r = qcow2_get_refcount(img, first + n - 1, &rc);
        qimg_io_event(img->file, QIMG_EV_CLUSTER_ALLOC);
        if (r == 0)
            r = qcow2_update_refcounts(img, first, n, 1);
    }
    return r;
}

/* Do the old structures have blocks for every new cluster?  (Else the
 * counting is skipped: a block added to them could land on a cluster the
 * new structures were given.) */
static bool old_blocks_cover(struct qimg_image *img, const struct new_refs *nr)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t E = s->refcount_block_entries;
    for (uint64_t ti = 0; ti <= nr->nblocks; ti++) {
        bool table = ti == nr->nblocks;
        uint64_t first = table ? nr->table_start : nr->blocks[ti];
        uint64_t n = table ? nr->table_clusters : 1;
        if (!first || !n)
            continue;
        for (uint64_t b = first / E; b <= (first + n - 1) / E; b++)
            if (b >= s->refcount_table_size || !(s->refcount_table[b] & ~QCOW2_REFT_RESERVED))
                return false;
    }
    return true;
}

/* The new structures become the image's: header, then the state. */
static int switch_structures(struct qimg_image *img, unsigned order, const struct new_refs *nr)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    struct qcow2_state saved = *s;
    s->refcount_order = order;
    s->refcount_table_offset = nr->table_start * cs;
    s->refcount_table_clusters = (uint32_t)nr->table_clusters;
    int r = write_header(img);
    if (r < 0) {
        qimg_error(r, "Failed to update the qcow2 header: %s", strerror(-r));
        s->refcount_order = saved.refcount_order;
        s->refcount_table_offset = saved.refcount_table_offset;
        s->refcount_table_clusters = saved.refcount_table_clusters;
        return r;
    }
    uint64_t entries = nr->table_clusters * cs / 8;
    uint64_t *t = qimg_xcalloc(entries, sizeof *t);
    for (uint64_t ti = 0; ti < nr->nblocks; ti++)
        t[ti] = nr->blocks[ti] * cs;
    free(s->refcount_table);
    s->refcount_table = t;
    s->refcount_table_size = entries;
    s->refcount_bits = 1u << order;
    s->refcount_block_entries = (cs * 8) >> order;
    struct qcow2_wstate *w = s->ws;
    w->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++) {
        w->refblocks[i].offset = 0;
        w->refblocks[i].dirty = false;
    }
    w->free_cluster_index = 0;
    w->free_byte_offset = 0;
    uint64_t end = nr->table_start + nr->table_clusters;
    for (uint64_t ti = 0; ti < nr->nblocks; ti++)
        end = QIMG_MAX(end, nr->blocks[ti] + 1);
    qcow2_note_used(s, 0, end);
    return 0;
}

/* Rebuild the refcount structures at a new width: every refcount read,
 * new blocks and table written in clusters free until now, the header
 * switched, the old structures free from then on. */
static int change_refcount_order(struct qimg_image *img, unsigned order, struct amend_progress *p)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = flush_all(img);
    if (r < 0)
        return r;
    struct rc_map m = { 0 };
    struct new_refs nr = { 0 };
    r = load_refcounts(img, &m, order, p);
    uint64_t old_n = s->refcount_table_size;
    if (r == 0)
        r = place_new_structures(s, &m, order, &nr);
    /* qemu's progress counts its walks over the old table: the placing
     * walks (the first read the refcounts above), then one that writes.
     * It expects three; each walk that places something adds one. */
    unsigned walks = QIMG_MAX(nr.walks + 1, 3u);
    for (unsigned w = 1; r == 0 && w < nr.walks; w++) {
        for (uint64_t i = 0; i < old_n; i++)
            report_walk(p, old_n, w, QIMG_MAX(w + 2, 3u), i);
        /* the walk's end is reported before the count grows (66.67% of
         * three walks, then 50% of four) */
        report_walk(p, old_n, w + 1, QIMG_MAX(w + 2, 3u), 0);
    }
    if (r == 0) {
        /* the old table and blocks are not counted by the new ones */
        uint64_t old_t = s->refcount_table_offset >> s->cluster_bits;
        for (uint64_t k = 0; k < s->refcount_table_clusters && r == 0; k++)
            r = map_set(&m, old_t + k, 0);
        for (uint64_t ti = 0; ti < s->refcount_table_size && r == 0; ti++) {
            uint64_t off = s->refcount_table[ti] & ~QCOW2_REFT_RESERVED;
            if (off)
                r = map_set(&m, off >> s->cluster_bits, 0);
        }
    }
    bool counted = false;
    if (r == 0 && old_blocks_cover(img, &nr)) {
        r = count_new_clusters(img, &nr, 1);
        counted = r == 0;
        if (r < 0)
            qimg_error(r, "Failed to allocate refblock: %s", strerror(-r));
    }
    if (r == 0)
        r = write_new_structures(img, &m, order, &nr, walks, p);
    if (r == 0)
        r = switch_structures(img, order, &nr);
    if (r < 0 && counted) {
        /* keep the message of the failure */
        CLEANUP_FREE char *why = qimg_strdup(qimg_last_error());
        count_new_clusters(img, &nr, -1);
        qimg_error(r, "%s", why);
    }
    if (r == 0)
        report_walk(p, old_n, walks, walks, 0);
    free(nr.blocks);
    free(m.rc);
    return r;
}

/* =========================================================== downgrade */

static int downgrade_checks(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (s->refcount_order != 4)
        return qimg_error(-ENOTSUP, "compat=0.10 requires refcount_bits=16");
    if (qcow2_has_data_file(s))
        return qimg_error(-ENOTSUP, "Cannot downgrade an image with a data file");
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        if (sn->vm_state_size > UINT32_MAX || sn->disk_size != s->size)
            return qimg_error(-ENOTSUP, "Internal snapshots prevent downgrade of image");
    }
    int r = mark_clean(img);
    if (r < 0)
        return r;
    uint64_t incompat = s->incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION;
    if (incompat)
        return qimg_error(-ENOTSUP, "Cannot downgrade an image with incompatible features %#"
                          PRIx64 " set", incompat);
    return 0;
}

/* zstd cannot be described by a v2 header: refused while the active L1
 * reaches a compressed cluster (qemu looks at the active table only). */
static int check_no_compressed(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (s->compression_type == QCOW2_COMPRESSION_ZLIB)
        return 0;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2 = s->l1_table[i] & QCOW2_OFFSET_MASK;
        if (!l2)
            continue;
        uint8_t *t;
        int r = qcow2_l2_cache_get(img, l2, &t);
        if (r < 0)
            return r;
        for (uint64_t j = 0; j < s->l2_entries; j++)
            if (qimg_be64(t + j * s->l2_entry_bytes) & QCOW2_OFLAG_COMPRESSED)
                return qimg_error(-ENOTSUP, "Cannot downgrade an image with zstd compression "
                                  "type and existing compressed clusters");
    }
    return 0;
}

static int write_zero_cluster(struct qimg_image *img, uint64_t host)
{
    struct qcow2_state *s = qcow2_state(img);
    CLEANUP_FREE uint8_t *z = qimg_xcalloc(1, s->cluster_size);
    int r = qimg_io_pwrite(img->file, z, s->cluster_size, host);
    return r < 0 ? qimg_error(r, "Could not write zeros: %s", strerror(-r)) : 0;
}

/* A zero entry of an L2 table referenced l2_rc times becomes a plain one:
 * unallocated where nothing lies beneath, else a zeroed cluster. */
static int expand_entry(struct qimg_image *img, uint64_t entry, uint64_t l2_rc, uint64_t *out)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t host = entry & QCOW2_OFFSET_MASK;
    int r;
    if (host) {
        uint64_t rc;
        r = qcow2_get_refcount(img, host >> s->cluster_bits, &rc);
        if (r < 0)
            return r;
        if (rc == l2_rc) {
            /* only this table points to it: zero it in place */
            r = write_zero_cluster(img, host);
            *out = host | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
            return r;
        }
        /* shared beyond this table: a cluster of its own */
        r = qcow2_update_refcounts(img, host >> s->cluster_bits, 1, -(int64_t)l2_rc);
        if (r < 0)
            return r;
    } else if (!img->backing_file) {
        *out = 0;
        return 0;
    }
    uint64_t got;
    r = qcow2_alloc_clusters(img, 1, &host, &got);
    if (r == 0 && l2_rc > 1)
        r = qcow2_update_refcounts(img, host >> s->cluster_bits, 1, (int64_t)l2_rc - 1);
    if (r == 0)
        r = write_zero_cluster(img, host);
    *out = host | (l2_rc == 1 ? QCOW2_OFLAG_COPIED : 0);
    return r;
}

static int expand_l2(struct qimg_image *img, uint64_t l2)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t l2_rc;
    int r = qcow2_get_refcount(img, l2 >> s->cluster_bits, &l2_rc);
    if (r < 0)
        return r;
    if (l2_rc == 0)
        return qimg_error(-EIO, "qcow2: L2 table at %#" PRIx64 " has refcount 0", l2);
    bool changed = false;
    for (uint64_t j = 0; j < s->l2_entries; j++) {
        uint8_t *t;
        r = qcow2_l2_cache_get(img, l2, &t);
        if (r < 0)
            return r;
        uint64_t e = qimg_be64(t + j * s->l2_entry_bytes);
        if ((e & QCOW2_OFLAG_COMPRESSED) || !(e & QCOW2_OFLAG_ZERO))
            continue;
        uint64_t ne;
        r = expand_entry(img, e, l2_rc, &ne);
        if (r < 0)
            return r;
        /* the table again: allocation may have used the cache */
        r = qcow2_l2_cache_get(img, l2, &t);
        if (r < 0)
            return r;
        qimg_put_be64(t + j * s->l2_entry_bytes, ne);
        qcow2_l2_cache_mark_dirty(img, l2);
        changed = true;
    }
    if (!changed)
        return 0;
    /* refcounts and zeros on disk before the table that uses them */
    r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = qcow2_l2_cache_write_now(img, l2);
    return r;
}

/* As qemu: a snapshot's L1 table that fails the check is reported on a
 * line of its own. */
static int read_snapshot_l1(struct qimg_image *img, const struct qcow2_snapshot *sn, uint64_t **l1)
{
    int r = qcow2_snapshot_l1_check(qcow2_state(img), sn);
    if (r < 0) {
        qimg_check_log(QIMG_CHECK_LOG_REPORT "%s", qimg_last_error());
        return r;
    }
    return qcow2_snapshot_read_l1(img, sn, 0, l1);
}

/* Zero clusters do not exist in v2: every L2 table of the active L1 and of
 * the snapshots loses them.  Progress counts L1 entries. */
static int expand_zero_clusters(struct qimg_image *img, struct amend_progress *p)
{
    struct qcow2_state *s = qcow2_state(img);
    int64_t total = s->l1_size, done = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        total += s->snapshots[i].l1_size;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2 = s->l1_table[i] & QCOW2_OFFSET_MASK;
        int r = l2 ? expand_l2(img, l2) : 0;
        if (r < 0)
            return r;
        report(p, OP_DOWNGRADE, ++done, total);
    }
    for (uint32_t k = 0; k < s->nb_snapshots; k++) {
        uint64_t *l1 = NULL;
        int r = read_snapshot_l1(img, &s->snapshots[k], &l1);
        if (r < 0)
            return r;
        for (uint32_t i = 0; i < s->snapshots[k].l1_size && r == 0; i++) {
            uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK;
            r = l2 ? expand_l2(img, l2) : 0;
            if (r == 0)
                report(p, OP_DOWNGRADE, ++done, total);
        }
        free(l1);
        if (r < 0)
            return r;
    }
    return flush_all(img);
}

static int downgrade(struct qimg_image *img, struct amend_progress *p)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = downgrade_checks(img);
    if (r == 0)
        r = check_no_compressed(img);
    if (r < 0)
        return r;
    s->compression_type = QCOW2_COMPRESSION_ZLIB;
    s->incompatible_features &= ~QCOW2_INCOMPAT_COMPRESSION;
    r = expand_zero_clusters(img, p);
    if (r < 0)
        return qimg_error(r, "Failed to turn zero into data clusters: %s", strerror(-r));
    s->version = 2;
    s->incompatible_features = 0;
    s->compatible_features = 0;
    s->autoclear_features = 0;
    return write_header(img);
}

/* ================================================================ main */

/* Data file name and data_file_raw=off; the header is written whether
 * they change or not, as qemu rewrites it at this point of every amend
 * (so the layout it writes, extensions in its order, is what remains even
 * when a later check fails). */
static int amend_data_file_options(struct qimg_image *img, const struct amend_opts *a)
{
    struct qcow2_state *s = qcow2_state(img);
    if (a->data_file) {
        free(s->data_file_name);
        s->data_file_name = *a->data_file ? qimg_strdup(a->data_file) : NULL;
    }
    if (a->data_file_raw_off && qcow2_data_file_is_raw(s))
        s->autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    return write_header(img);
}

static int amend_lazy_refcounts(struct qimg_image *img, const struct amend_opts *a)
{
    struct qcow2_state *s = qcow2_state(img);
    bool lazy_now = s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS;
    if (!a->has_lazy || a->lazy == lazy_now)
        return 0;
    if (a->lazy) {
        if (a->version < 3)
            return qimg_error(-EINVAL, "Lazy refcounts only supported with compatibility level 1.1 "
                              "and above (use compat=1.1 or greater)");
        s->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    } else {
        int r = mark_clean(img);
        if (r < 0)
            return r;
        s->compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
    }
    return write_header(img);
}

static int count_ops(const struct qcow2_state *s, const struct amend_opts *a)
{
    int n = 0;
    if (a->version > (int)s->version)
        n++;
    if (a->has_refcount && a->refcount_order != s->refcount_order)
        n++;
    if (a->version < (int)s->version)
        n++;
    return n;
}

static int amend_locked(struct qimg_image *img, const struct amend_opts *a, struct amend_progress *p)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = 0;
    if (a->version > (int)s->version)
        r = upgrade(img, p);
    if (r == 0 && a->has_refcount && a->refcount_order != s->refcount_order)
        r = change_refcount_order(img, a->refcount_order, p);
    if (r == 0)
        r = amend_data_file_options(img, a);
    if (r == 0)
        r = check_backing_unchanged(img, a);
    if (r == 0)
        r = amend_lazy_refcounts(img, a);
    return r;
}

int qcow2_amend(struct qimg_image *img, qimg_opts *opts, bool force, qimg_progress_fn progress,
                void *opaque)
{
    struct qcow2_state *s = qcow2_state(img);
    struct amend_opts a;
    int r = parse_amend_opts(img, opts, &a);
    if (r < 0)
        return r;
    /* the keyslots first, as qemu (force is theirs alone) */
    if (a.encrypt && (r = qcow2_crypt_amend(img, opts, force)) < 0)
        return r;
    if (!s->ws)
        return qimg_error(-EACCES, "Image is read-only");
    if ((s->incompatible_features & QCOW2_INCOMPAT_DIRTY) && !s->ws->marked_dirty)
        return qimg_error(-EACCES, "qcow2: the image was not closed cleanly and its refcounts "
                          "must be rebuilt first (run 'qemu-img check -r all')");
    struct amend_progress p = { .fn = progress, .opaque = opaque, .last_op = OP_NONE };
    p.total_ops = count_ops(s, &a);

    pthread_mutex_lock(&img->lock);
    r = amend_locked(img, &a, &p);
    pthread_mutex_unlock(&img->lock);
    if (r == 0 && a.size && a.size != s->size)
        r = qcow2_resize(img, a.size, NULL, true);
    if (r == 0 && a.version < (int)s->version) {
        pthread_mutex_lock(&img->lock);
        r = downgrade(img, &p);
        pthread_mutex_unlock(&img->lock);
    }
    return r;
}
