/* qimg - the qcow2 format: probe, open (header, extensions, tables), close,
 * info and the snapshot and bitmap lists.  Reading is in qcow2-read.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "codec.h"
#include "qcow2.h"
#include "qcow2-repair.h"
#include "qcow2-create.h"
#include "qcow2-bitmap.h"
#include "qcow2-amend.h"
#include "qcow2-snapshot.h"
#include "qcow2-snaptable.h"

/* ------------------------------------------------------------------ probe */

static int qcow2_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    /* Version 1 is the qcow format; any later version is ours, so that an
     * unknown one gets "Unsupported qcow2 version" rather than raw. */
    if (len >= 8 && qimg_be32(buf) == QCOW2_MAGIC && qimg_be32(buf + 4) >= 2)
        return 100;
    return 0;
}

/* ------------------------------------------------------------ geometry */

bool qcow2_l1_entries_for_size(uint64_t size, uint32_t cluster_bits, bool extended_l2,
                               uint64_t *entries)
{
    uint32_t l2_bits = cluster_bits - (extended_l2 ? 4 : 3);
    uint32_t shift = cluster_bits + l2_bits;
    /* qemu rounds up with wrapping arithmetic: a size within a table span
     * of 2^64 needs no entry; the size check comes later and refuses it */
    *entries = (size + ((1ull << shift) - 1)) >> shift;
    return *entries <= INT32_MAX;
}

static void set_geometry(struct qcow2_state *s)
{
    s->cluster_size = 1ull << s->cluster_bits;
    s->extended_l2 = s->incompatible_features & QCOW2_INCOMPAT_EXTL2;
    s->l2_entry_bytes = s->extended_l2 ? 16 : 8;
    s->l2_bits = s->cluster_bits - (s->extended_l2 ? 4 : 3);
    s->l2_entries = 1ull << s->l2_bits;
    s->l2_table_bytes = s->cluster_size;
    s->subclusters_per_cluster = s->extended_l2 ? QCOW2_SUBCLUSTERS : 1;
    s->subcluster_size = s->cluster_size / s->subclusters_per_cluster;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
    s->cluster_offset_mask = (1ull << s->csize_shift) - 1;
    s->refcount_bits = 1u << s->refcount_order;
    s->refcount_block_entries = (s->cluster_size * 8) >> s->refcount_order;
}

/* -------------------------------------------------------------- header */

static int parse_header(struct qcow2_state *s, const uint8_t *h)
{
    s->version = qimg_be32(h + QCOW2_HDR_VERSION);
    s->backing_file_offset = qimg_be64(h + QCOW2_HDR_BACKING_FILE_OFFSET);
    s->backing_file_size = qimg_be32(h + QCOW2_HDR_BACKING_FILE_SIZE);
    s->cluster_bits = qimg_be32(h + QCOW2_HDR_CLUSTER_BITS);
    s->size = qimg_be64(h + QCOW2_HDR_SIZE);
    s->crypt_method = qimg_be32(h + QCOW2_HDR_CRYPT_METHOD);
    s->l1_size = qimg_be32(h + QCOW2_HDR_L1_SIZE);
    s->l1_table_offset = qimg_be64(h + QCOW2_HDR_L1_TABLE_OFFSET);
    s->refcount_table_offset = qimg_be64(h + QCOW2_HDR_REFCOUNT_TABLE_OFFSET);
    s->refcount_table_clusters = qimg_be32(h + QCOW2_HDR_REFCOUNT_TABLE_CLUSTERS);
    s->nb_snapshots = qimg_be32(h + QCOW2_HDR_NB_SNAPSHOTS);
    s->snapshots_offset = qimg_be64(h + QCOW2_HDR_SNAPSHOTS_OFFSET);

    if (qimg_be32(h) != QCOW2_MAGIC)
        return qimg_error(-EINVAL, "Image is not in qcow2 format");
    if (s->version < 2 || s->version > 3)
        return qimg_error(-ENOTSUP, "Unsupported qcow2 version %" PRIu32, s->version);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS || s->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return qimg_error(-EINVAL, "Unsupported cluster size: 2^%" PRIu32, s->cluster_bits);

    if (s->version == 2) {
        s->header_length = QCOW2_HDR_V2_LENGTH;
        s->refcount_order = 4;
        return 0;
    }
    s->incompatible_features = qimg_be64(h + QCOW2_HDR_INCOMPATIBLE_FEATURES);
    s->compatible_features = qimg_be64(h + QCOW2_HDR_COMPATIBLE_FEATURES);
    s->autoclear_features = qimg_be64(h + QCOW2_HDR_AUTOCLEAR_FEATURES);
    s->refcount_order = qimg_be32(h + QCOW2_HDR_REFCOUNT_ORDER);
    s->header_length = qimg_be32(h + QCOW2_HDR_HEADER_LENGTH);
    if (s->header_length < QCOW2_HDR_V3_MIN_LENGTH)
        return qimg_error(-EINVAL, "qcow2 header too short");
    if (s->header_length > (1ull << s->cluster_bits))
        return qimg_error(-EINVAL, "qcow2 header exceeds cluster size");
    if (s->header_length > QCOW2_HDR_COMPRESSION_TYPE)
        s->compression_type = h[QCOW2_HDR_COMPRESSION_TYPE];
    return 0;
}

/* ------------------------------------------------------- header extensions */

static void free_extensions(struct qcow2_state *s)
{
    free(s->unknown_header_fields);
    s->unknown_header_fields = NULL;
    s->unknown_header_fields_len = 0;
    free(s->backing_fmt);
    free(s->data_file_name);
    free(s->features);
    for (size_t i = 0; i < s->nb_unknown_exts; i++)
        free(s->unknown_exts[i].data);
    free(s->unknown_exts);
    s->backing_fmt = s->data_file_name = NULL;
    s->features = NULL;
    s->unknown_exts = NULL;
    s->nb_features = s->nb_unknown_exts = 0;
}

static char *string_ext(const uint8_t *data, uint32_t len)
{
    char *str = qimg_xmalloc(len + 1);
    memcpy(str, data, len);
    str[len] = '\0';
    return str;
}

/* The feature name table as qemu reads it: entries of 48 bytes, the last
 * one possibly cut short (its missing bytes read as zeros), up to the first
 * entry whose name is empty.  A later table replaces an earlier one. */
static int parse_feature_table(struct qcow2_state *s, const uint8_t *data, uint32_t len)
{
    size_t n = 0;
    while (n * QCOW2_FEATURE_ENTRY_LEN + 2 < len && data[n * QCOW2_FEATURE_ENTRY_LEN + 2] != '\0')
        n++;
    free(s->features);
    s->features = qimg_xcalloc(n ? n : 1, sizeof *s->features);
    s->nb_features = n;
    for (size_t i = 0; i < n; i++) {
        size_t at = i * QCOW2_FEATURE_ENTRY_LEN;
        size_t name_len = QIMG_MIN((size_t)QCOW2_FEATURE_NAME_LEN, len - at - 2);
        s->features[i].type = data[at];
        s->features[i].bit = data[at + 1];
        memcpy(s->features[i].name, data + at + 2, name_len);
        s->features[i].name[name_len] = '\0';
    }
    return 0;
}

static int parse_bitmaps_ext(struct qcow2_state *s, const uint8_t *data, uint32_t len)
{
    if (len != QCOW2_EXT_BITMAPS_LEN)
        return qimg_error(-EINVAL, "bitmaps_ext: Invalid extension length");
    if (!(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        /* Written by a program that did not know bitmaps: inconsistent. */
        qimg_warn("a program lacking bitmap support modified this file, so all bitmaps "
                  "are now considered inconsistent\nSome clusters may be leaked, run "
                  "'qemu-img check -r' on the image file to fix.");
        s->bitmaps_ext_ignored = true;
        return 0;
    }
    uint32_t reserved = qimg_be32(data + 4);
    s->nb_bitmaps = qimg_be32(data);
    s->bitmap_directory_size = qimg_be64(data + 8);
    s->bitmap_directory_offset = qimg_be64(data + 16);
    if (reserved != 0)
        return qimg_error(-EINVAL, "bitmaps_ext: Reserved field is not zero");
    if (s->nb_bitmaps > QCOW2_MAX_BITMAPS)
        return qimg_error(-EINVAL, "bitmaps_ext: Image has %" PRIu32 " bitmaps, exceeding the "
                          "QEMU supported maximum of %u", s->nb_bitmaps, QCOW2_MAX_BITMAPS);
    if (s->nb_bitmaps == 0)
        return qimg_error(-EINVAL, "found bitmaps extension with zero bitmaps");
    if (!qimg_is_aligned(s->bitmap_directory_offset, s->cluster_size))
        return qimg_error(-EINVAL, "bitmaps_ext: invalid bitmap directory offset");
    if (s->bitmap_directory_size > QCOW2_MAX_BITMAP_DIR)
        return qimg_error(-EINVAL, "bitmaps_ext: bitmap directory size (%" PRIu64 ") exceeds "
                          "the maximum supported size (%llu)", s->bitmap_directory_size,
                          QCOW2_MAX_BITMAP_DIR);
    s->has_bitmaps_ext = true;
    return 0;
}

static void keep_unknown_ext(struct qcow2_state *s, uint32_t type, const uint8_t *data, uint32_t len)
{
    s->unknown_exts = qimg_xrealloc(s->unknown_exts, (s->nb_unknown_exts + 1) * sizeof *s->unknown_exts);
    struct qcow2_unknown_ext *e = &s->unknown_exts[s->nb_unknown_exts++];
    e->type = type;
    e->len = len;
    e->data = qimg_xmalloc(len ? len : 1);
    memcpy(e->data, data, len);
}

static int parse_one_ext(struct qcow2_state *s, uint32_t type, const uint8_t *data, uint32_t len)
{
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT:
        if (len > QCOW2_BACKING_FMT_MAX)
            return qimg_error(-EINVAL, "ERROR: ext_backing_format: len=%" PRIu32 " too large (>=16)", len);
        free(s->backing_fmt);
        s->backing_fmt = string_ext(data, len);
        return 0;
    case QCOW2_EXT_FEATURE_TABLE:
        return parse_feature_table(s, data, len);
    case QCOW2_EXT_CRYPTO:
        if (s->crypt_method != QCOW2_CRYPT_LUKS)
            return qimg_error(-EINVAL, "CRYPTO header extension only expected with LUKS encryption method");
        if (len != QCOW2_EXT_CRYPTO_LEN)
            return qimg_error(-EINVAL, "CRYPTO header extension size %" PRIu32 ", but expected size %u",
                              len, QCOW2_EXT_CRYPTO_LEN);
        s->has_crypto_ext = true;
        s->crypto_header_offset = qimg_be64(data);
        s->crypto_header_length = qimg_be64(data + 8);
        return 0;
    case QCOW2_EXT_BITMAPS:
        return parse_bitmaps_ext(s, data, len);
    case QCOW2_EXT_DATA_FILE:
        free(s->data_file_name);
        s->data_file_name = string_ext(data, len);
        return 0;
    default:
        keep_unknown_ext(s, type, data, len);
        return 0;
    }
}

/* qemu's list of unknown extensions takes each one at its head: a header
 * update writes them back last first. */
static void reverse_unknown_exts(struct qcow2_state *s)
{
    for (size_t i = 0, j = s->nb_unknown_exts; i + 1 < j; i++, j--) {
        struct qcow2_unknown_ext t = s->unknown_exts[i];
        s->unknown_exts[i] = s->unknown_exts[j - 1];
        s->unknown_exts[j - 1] = t;
    }
}

/* Walk the extensions in [header_length, end) of the first cluster. */
static int parse_extensions(struct qcow2_state *s, const uint8_t *cluster, uint64_t end)
{
    uint64_t off = s->header_length;
    while (off < end) {
        if (end - off < 8)
            return qimg_error(-EINVAL, "qcow2_read_extension: ERROR: pread fail from offset %" PRIu64, off);
        uint32_t type = qimg_be32(cluster + off);
        uint32_t len = qimg_be32(cluster + off + 4);
        off += 8;
        /* the length is checked first, even for the end marker */
        if (len > end - off)
            return qimg_error(-EINVAL, "Header extension too large");
        if (type == QCOW2_EXT_END)
            break;
        int r = parse_one_ext(s, type, cluster + off, len);
        if (r < 0)
            return r;
        uint64_t padded;
        if (!qimg_round_up_ok(len, 8, &padded))
            return qimg_error(-EINVAL, "Header extension too large");
        off += padded;
    }
    return 0;
}

static void keep_unknown_header_fields(struct qcow2_state *s, const uint8_t *cluster)
{
    if (s->version < 3 || s->header_length <= QCOW2_HDR_V3_LENGTH)
        return;
    /* header_length is at most the cluster size (checked) */
    s->unknown_header_fields_len = s->header_length - QCOW2_HDR_V3_LENGTH;
    s->unknown_header_fields = qimg_xmalloc(s->unknown_header_fields_len);
    memcpy(s->unknown_header_fields, cluster + QCOW2_HDR_V3_LENGTH, s->unknown_header_fields_len);
}

/* "Unsupported qcow2 feature(s): <names from the table>, Unknown
 * incompatible feature: <hex of the rest>" */
static int report_unsupported(struct qcow2_state *s, uint64_t mask)
{
    struct qimg_strbuf b = { 0 };
    for (size_t i = 0; i < s->nb_features; i++) {
        const struct qcow2_feature_name *f = &s->features[i];
        /* qemu shifts by the bit number as the CPU does (x86: modulo 64):
         * bit 127 names bit 63 */
        uint64_t bit = 1ull << (f->bit & 63);
        if (f->type != QCOW2_FEAT_INCOMPAT || !(mask & bit))
            continue;
        qimg_strbuf_addf(&b, "%s%s", b.len ? ", " : "", f->name);
        mask &= ~bit;
    }
    if (mask)
        qimg_strbuf_addf(&b, "%sUnknown incompatible feature: %" PRIx64, b.len ? ", " : "", mask);
    int r = qimg_error(-ENOTSUP, "Unsupported qcow2 feature(s): %s", b.s ? b.s : "");
    free(b.s);
    return r;
}

static int check_compression_type(const struct qcow2_state *s)
{
    switch (s->compression_type) {
    case QCOW2_COMPRESSION_ZLIB:
    case QCOW2_COMPRESSION_ZSTD:
        break;
    default:
        return qimg_error(-EINVAL, "qcow2: unknown compression type: %u", s->compression_type);
    }
    bool has_bit = s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION;
    if (s->compression_type == QCOW2_COMPRESSION_ZLIB && has_bit)
        return qimg_error(-EINVAL, "qcow2: Compression type incompatible feature bit must not be set");
    if (s->compression_type != QCOW2_COMPRESSION_ZLIB && !has_bit)
        return qimg_error(-EINVAL, "qcow2: Compression type incompatible feature bit must be set");
    /* as a qemu built without zstd, refuse the image at open: a read error
     * on the first compressed cluster would not say why */
    if (s->compression_type == QCOW2_COMPRESSION_ZSTD && !qimg_codec_available(QIMG_CODEC_ZSTD))
        return qimg_error(-ENOTSUP, "qcow2: compression type zstd is not supported: "
                          "this qimg was built without libzstd");
    return 0;
}

/* A table of entries*entry_len bytes at offset: aligned, no overflow, and
 * (our own rule, but for a check: qemu reads zeros there) inside the file. */
static int check_table(const struct qcow2_state *s, uint64_t offset, uint64_t entries,
                       uint64_t entry_len, const char *invalid_msg, bool for_check)
{
    uint64_t bytes;
    if (!qimg_mul_ok(entries, entry_len, &bytes) || bytes > INT64_MAX ||
        !qimg_range_ok(offset, bytes, INT64_MAX) || !qimg_is_aligned(offset, s->cluster_size))
        return qimg_error(-EINVAL, "%s", invalid_msg);
    if (!for_check && !qimg_range_ok(offset, bytes, s->file_size))
        return qimg_error(-EINVAL, "%s: it extends past the end of the file", invalid_msg);
    return 0;
}

/* ---------------------------------------------------------------- tables */

static int read_be64_table(struct qimg_image *img, const struct qcow2_state *s, uint64_t offset,
                           uint64_t n, uint64_t **out, const char *what)
{
    uint64_t *t = qimg_calloc_from_image(n ? n : 1, sizeof(uint64_t), what);
    if (!t)
        return -ENOMEM;
    if (n > 0) {
        int r = qcow2_pread_zero_filled(img, s->file_size, t, n * sizeof(uint64_t), offset);
        if (r < 0) {
            free(t);
            return qimg_error(r, "Could not read %s: %s", what, strerror(-r));
        }
        for (uint64_t i = 0; i < n; i++)
            t[i] = qimg_be64(&t[i]);
    }
    *out = t;
    return 0;
}

static int load_l1(struct qimg_image *img, struct qcow2_state *s, bool for_check)
{
    uint64_t needed;
    if ((uint64_t)s->l1_size * sizeof(uint64_t) > QCOW2_MAX_L1_BYTES)
        return qimg_error(-EFBIG, "Active L1 table too large");
    if (!qcow2_l1_entries_for_size(s->size, s->cluster_bits, s->extended_l2, &needed))
        return qimg_error(-EFBIG, "Image is too big");
    if (s->l1_size < needed)
        return qimg_error(-EINVAL, "L1 table is too small");
    s->l1_vm_state_index = (uint32_t)needed;
    int r = check_table(s, s->l1_table_offset, s->l1_size, sizeof(uint64_t),
                        "Active L1 table offset invalid", for_check);
    if (r < 0)
        return r;
    return read_be64_table(img, s, s->l1_table_offset, s->l1_size, &s->l1_table, "L1 table");
}

static int load_refcount_table(struct qimg_image *img, struct qcow2_state *s, bool for_check)
{
    uint64_t bytes = (uint64_t)s->refcount_table_clusters << s->cluster_bits;
    if (bytes > QCOW2_MAX_REFTABLE_BYTES)
        return qimg_error(-EINVAL, "Reference count table too large");
    /* a check finds every refcount 0 and may rebuild them */
    if (s->refcount_table_clusters == 0 && !for_check)
        return qimg_error(-EINVAL, "Image does not contain a reference count table");
    s->refcount_table_size = bytes / sizeof(uint64_t);
    int r = check_table(s, s->refcount_table_offset, s->refcount_table_size, sizeof(uint64_t),
                        "Reference count table offset invalid", for_check);
    if (r < 0)
        return r;
    return read_be64_table(img, s, s->refcount_table_offset, s->refcount_table_size,
                           &s->refcount_table, "refcount table");
}

/* ------------------------------------------------------------- snapshots */

/* Read by qcow2-snaptable.c (tolerantly again by the check). */

/* --------------------------------------------------------------- bitmaps */

static void free_bitmaps(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++)
        free(s->bitmaps[i].name);
    free(s->bitmaps);
    s->bitmaps = NULL;
}

/* qemu's rules for an entry, with its messages: the extra data and the
 * name first ("Broken bitmap directory" when they do not fit), then the
 * values ("doesn't satisfy the constraints"). */
static int parse_bitmap_entry(struct qcow2_state *s, const uint8_t *dir, uint64_t size,
                              uint64_t *pos, struct qcow2_bitmap *bm)
{
    if (size - *pos < QCOW2_BME_HEADER_LEN)
        return qimg_error(-EINVAL, "Broken bitmap directory");
    const uint8_t *e = dir + *pos;
    bm->table_offset = qimg_be64(e);
    bm->table_size = qimg_be32(e + 8);
    bm->flags = qimg_be32(e + 12);
    bm->type = e[16];
    bm->granularity_bits = e[17];
    uint16_t name_size = qimg_be16(e + 18);
    bm->extra_data_size = qimg_be32(e + 20);
    if (name_size == 0 || name_size > QCOW2_MAX_BITMAP_NAME)
        return qimg_error(-EINVAL, "Broken bitmap directory");
    if (bm->extra_data_size != 0)
        return qimg_error(-ENOTSUP, "Bitmap extra data is not supported");
    uint64_t len = QCOW2_BME_HEADER_LEN + (uint64_t)name_size;
    if (size - *pos < len)
        return qimg_error(-EINVAL, "Broken bitmap directory");
    bm->name = string_ext(e + QCOW2_BME_HEADER_LEN, name_size);
    *pos += QIMG_MIN((len + 7) & ~7ull, size - *pos);
    uint64_t bits = qimg_div_round_up(s->size, 1ull << QIMG_MIN(bm->granularity_bits, 63));
    uint64_t data_bytes = qimg_div_round_up(bits, 8);
    if (bm->type != 1 || bm->granularity_bits < 9 || bm->granularity_bits > 31 ||
        (bm->flags & QCOW2_BME_RESERVED) || (bm->flags & QCOW2_BME_EXTRA_COMPAT) ||
        bm->table_offset == 0 || !qimg_is_aligned(bm->table_offset, s->cluster_size) ||
        bm->table_size == 0 || bm->table_size > QCOW2_MAX_BITMAP_TABLE ||
        data_bytes > QCOW2_MAX_BITMAP_BYTES)
        return qimg_error(-EINVAL, "Bitmap '%s' doesn't satisfy the constraints", bm->name);
    /* qemu reads the data of every consistent bitmap at open: a table of
     * the wrong size fails then */
    if (!(bm->flags & QCOW2_BME_IN_USE) &&
        bm->table_size != qimg_div_round_up(data_bytes, s->cluster_size))
        return qimg_error(-EINVAL, "Could not read bitmap '%s' from image: %s", bm->name,
                          strerror(EINVAL));
    return 0;
}

static int load_bitmaps(struct qimg_image *img, struct qcow2_state *s)
{
    if (!s->has_bitmaps_ext)
        return 0;
    uint64_t size = s->bitmap_directory_size;
    if (size == 0)
        return qimg_error(-EINVAL, "Requested bitmap directory size is zero");
    if (!qimg_range_ok(s->bitmap_directory_offset, size, s->file_size))
        return qimg_error(-EINVAL, "Bitmap directory extends past the end of the file");
    CLEANUP_FREE uint8_t *dir = qimg_alloc_from_image(size, "bitmap directory");
    if (!dir)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, dir, size, s->bitmap_directory_offset);
    if (r < 0)
        return qimg_error(r, "Failed to read bitmap directory: %s", strerror(-r));
    s->bitmaps = qimg_xcalloc(s->nb_bitmaps, sizeof *s->bitmaps);
    uint64_t pos = 0;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        if (pos >= size)
            return qimg_error(-EINVAL, "Less bitmaps found than specified in header extension");
        r = parse_bitmap_entry(s, dir, size, &pos, &s->bitmaps[i]);
        if (r < 0)
            return r;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(s->bitmaps[j].name, s->bitmaps[i].name) == 0)
                return qimg_error(-EINVAL, "Broken bitmap directory");
    }
    if (pos < size)
        return qimg_error(-EINVAL, "More bitmaps found than specified in header extension");
    return 0;
}

/* ------------------------------------------------------------ open/close */

static void qcow2_free_state(struct qcow2_state *s)
{
    if (!s)
        return;
    qcow2_l2_cache_free(s);
    qcow2_crypt_close(s);
    if (s->own_data_io)
        qimg_io_close(s->data_io);
    qcow2_snaptable_free(s);
    free_bitmaps(s);
    free_extensions(s);
    free(s->l1_table);
    free(s->refcount_table);
    free(s);
}

static void qcow2_close(struct qimg_image *img)
{
    qcow2_bitmap_close(img);     /* stores bitmaps: needs the write state */
    qcow2_write_close(img);
    qcow2_free_state(img->opaque);
    img->opaque = NULL;
}

static int read_backing_name(struct qimg_image *img, struct qcow2_state *s, const uint8_t *cluster)
{
    if (s->backing_file_offset == 0)
        return 0;
    uint32_t len = s->backing_file_size;
    if (len > QCOW2_MAX_BACKING_NAME)
        return qimg_error(-EINVAL, "Backing file name too long");
    if (!qimg_range_ok(s->backing_file_offset, len, s->cluster_size))
        return qimg_error(-EINVAL, "Backing file name extends past the first cluster");
    img->backing_file = string_ext(cluster + s->backing_file_offset, len);
    if (s->backing_fmt)
        img->backing_fmt = qimg_strdup(s->backing_fmt);
    return 0;
}

/* The external data file: the one the user named (data-file.* options)
 * or the name the image records, through the child policy (a plain local
 * path, refused in safe mode). */
static int open_data_file(struct qimg_image *img, struct qcow2_state *s, qimg_opts *opts,
                          unsigned flags)
{
    s->data_io = img->file;
    const char *ref = qimg_opts_get(opts, "data-file");
    CLEANUP_OPTS qimg_opts *user = qimg_opts_subtree(opts, "data-file");
    /* a node name (qimg has no named nodes); info opens no data file */
    if (ref && !(flags & QIMG_OPEN_NO_IO))
        return qimg_error(-EINVAL, "Cannot find device='%s' nor node-name='%s'", ref, ref);
    if (!qcow2_has_data_file(s)) {
        if (s->data_file_name)
            return qimg_error(-EINVAL, "data-file can only be set for images that use an external data file");
        if (user && !(flags & QIMG_OPEN_NO_IO))
            return qimg_error(-EINVAL, "'data-file' can only be set for images with an external data file");
        if (qcow2_data_file_is_raw(s) && !(flags & QIMG_OPEN_NO_IO))
            return qimg_error(-EINVAL, "data-file-raw requires a data file");
        return 0;
    }
    /* info never opens the data file: its name may point anywhere */
    if (flags & QIMG_OPEN_NO_IO)
        return 0;
    if (!s->data_file_name && !user)
        return qimg_error(-EINVAL, "'data-file' is required for this image");
    if (qcow2_data_file_is_raw(s) && s->backing_file_offset)
        return qimg_error(-EINVAL, "data-file-raw cannot be set on images with backing files");
    unsigned ioflags = (img->file->flags & ~(QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_EXCL)) |
                       QIMG_IO_NOLOCK;
    struct qimg_io *io;
    int r = qimg_open_child(img, QIMG_CHILD_DATA_FILE, s->data_file_name, user, ioflags, &io);
    if (r < 0)
        return r;
    s->data_io = io;
    s->own_data_io = true;
    return 0;
}

/* qemu's qcow2 runtime options: accepted (and their values checked) but
 * without effect here, the caches being sized by qimg itself. */
static int take_runtime_opts(qimg_opts *opts)
{
    static const char *const sizes[] = {
        "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
    };
    static const char *const bools[] = {
        "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
    };
    static const char *const strings[] = {
        "overlap-check", "overlap-check.template", "overlap-check.main-header",
        "overlap-check.active-l1", "overlap-check.active-l2", "overlap-check.refcount-table",
        "overlap-check.refcount-block", "overlap-check.snapshot-table",
        "overlap-check.inactive-l1", "overlap-check.inactive-l2",
        "overlap-check.bitmap-directory",
    };
    uint64_t n;
    bool b;
    const char *str;
    int r = 0;
    for (size_t i = 0; r >= 0 && i < QIMG_ARRAY_SIZE(sizes); i++)
        r = qimg_opts_get_size(opts, sizes[i], &n);
    for (size_t i = 0; r >= 0 && i < QIMG_ARRAY_SIZE(bools); i++)
        r = qimg_opts_get_bool(opts, bools[i], &b);
    for (size_t i = 0; r >= 0 && i < QIMG_ARRAY_SIZE(strings); i++)
        r = qimg_opts_get_string(opts, strings[i], &str);
    if (r >= 0)
        r = qimg_opts_get_number(opts, "cache-clean-interval", &n);
    return r < 0 ? r : 0;
}

/* Everything the first cluster tells: header fields, feature checks,
 * extensions and the backing file name. */
static int open_header(struct qimg_image *img, struct qcow2_state *s, unsigned flags)
{
    uint8_t h[QCOW2_HDR_V3_MIN_LENGTH + 8];
    memset(h, 0, sizeof h);
    int r = qimg_io_pread(img->file, h, (size_t)QIMG_MIN(sizeof h, s->file_size), 0);
    if (r < 0)
        return qimg_error(r, "Could not read qcow2 header: %s", strerror(-r));
    r = parse_header(s, h);
    if (r < 0)
        return r;
    uint64_t csize = 1ull << s->cluster_bits;
    CLEANUP_FREE uint8_t *cluster = qimg_alloc_from_image(csize, "qcow2 header cluster");
    if (!cluster)
        return -ENOMEM;
    memset(cluster, 0, csize);
    r = qimg_io_pread(img->file, cluster, (size_t)QIMG_MIN(csize, s->file_size), 0);
    if (r < 0)
        return qimg_error(r, "Could not read qcow2 header: %s", strerror(-r));
    if (s->backing_file_offset > csize)
        return qimg_error(-EINVAL, "Invalid backing file offset");
    uint64_t ext_end = s->backing_file_offset ? s->backing_file_offset : csize;

    uint64_t unsupported = s->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
    if (unsupported) {
        /* the names come from the feature table; as in qemu, the whole
         * walk runs (its warnings show) and an invalid extension ends it */
        s->cluster_size = csize;
        parse_extensions(s, cluster, ext_end);
        return report_unsupported(s, unsupported);
    }
    if ((s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && (flags & QIMG_OPEN_RDWR) &&
        !(flags & QIMG_OPEN_CHECK))
        return qimg_error(-EACCES, "qcow2: Image is corrupt; cannot be opened read/write");
    r = check_compression_type(s);
    if (r < 0)
        return r;
    if (s->refcount_order > QCOW2_MAX_REFCOUNT_ORDER)
        return qimg_error(-EINVAL, "Reference count entry width too large; may not exceed 64 bits");
    set_geometry(s);
    if (s->extended_l2 && s->cluster_bits < QCOW2_MIN_CLUSTER_BITS_EXTL2)
        return qimg_error(-EINVAL, "The cluster size must be at least %u bytes for images "
                          "with extended L2 entries", 1u << QCOW2_MIN_CLUSTER_BITS_EXTL2);
    if (s->crypt_method > QCOW2_CRYPT_LUKS)
        return qimg_error(-EINVAL, "Unsupported encryption method %" PRIu32, s->crypt_method);

    r = parse_extensions(s, cluster, ext_end);
    if (r < 0)
        return r;
    reverse_unknown_exts(s);
    keep_unknown_header_fields(s, cluster);
    return read_backing_name(img, s, cluster);
}

/* For a check (QIMG_OPEN_CHECK) the snapshot table is read by the check
 * itself, which tolerates what qemu's check tolerates: until then
 * s->snapshots is NULL. */
static int open_tables(struct qimg_image *img, struct qcow2_state *s, unsigned flags)
{
    bool for_check = flags & QIMG_OPEN_CHECK;
    int r = load_refcount_table(img, s, for_check);
    if (r == 0 && !for_check)
        r = qcow2_snaptable_validate(s);
    if (r == 0)
        r = load_l1(img, s, for_check);
    if (r == 0 && !for_check)
        r = qcow2_snaptable_read(img, s, false, NULL, NULL, NULL);
    if (r == 0)
        r = load_bitmaps(img, s);
    return r;
}

static int qcow2_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    struct qcow2_state *s = qimg_xcalloc(1, sizeof *s);
    int r = take_runtime_opts(opts);
    if (r == 0)
        r = qimg_io_get_size(img->file, &s->file_size);
    if (r == 0)
        r = open_header(img, s, flags);
    if (r == 0)
        r = open_tables(img, s, flags);
    if (r == 0)
        r = qcow2_crypt_open(img, s, opts, flags);
    if (r == 0)
        r = open_data_file(img, s, opts, flags);
    if (r == 0 && s->size > (uint64_t)INT64_MAX - 511)
        r = qimg_error(-EFBIG, "Could not refresh total sector count: File too large");
    if (r == 0)
        r = qcow2_l2_cache_init(s);
    img->opaque = s;
    if (r == 0)
        r = qcow2_write_open(img, flags);
    if (r == 0)
        r = qcow2_repair_dirty_on_open(img, flags);
    if (r == 0)
        r = qcow2_update_header_on_open(img, flags);
    if (r < 0) {
        qcow2_write_close(img);
        img->opaque = NULL;
        free(img->backing_file);
        free(img->backing_fmt);
        img->backing_file = img->backing_fmt = NULL;
        qcow2_free_state(s);
        return r;
    }
    img->opaque = s;
    img->size = s->size;
    return 0;
}

/* ------------------------------------------------------------------ info */

static struct qimg_json *bitmaps_json(const struct qcow2_state *s)
{
    struct qimg_json *arr = qimg_json_array();
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const struct qcow2_bitmap *bm = &s->bitmaps[i];
        struct qimg_json *o = qimg_json_object();
        struct qimg_json *fl = qimg_json_array();
        if (bm->flags & QCOW2_BME_IN_USE)
            qimg_json_append(fl, qimg_json_string("in-use"));
        if (bm->flags & QCOW2_BME_AUTO)
            qimg_json_append(fl, qimg_json_string("auto"));
        qimg_json_set(o, "flags", fl);
        qimg_json_set(o, "name", qimg_json_string(bm->name));
        qimg_json_set(o, "granularity", qimg_json_int((int64_t)1 << bm->granularity_bits));
        qimg_json_append(arr, o);
    }
    return arr;
}

static struct qimg_json *format_specific(const struct qcow2_state *s)
{
    struct qimg_json *d = qimg_json_object();
    bool v3 = s->version >= 3;
    qimg_json_set(d, "compat", qimg_json_string(v3 ? "1.1" : "0.10"));
    qimg_json_set(d, "compression-type",
                  qimg_json_string(s->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib"));
    if (v3) {
        qimg_json_set(d, "lazy-refcounts",
                      qimg_json_bool(s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS));
        if (s->bitmaps && s->nb_bitmaps > 0)
            qimg_json_set(d, "bitmaps", bitmaps_json(s));
    }
    qimg_json_set(d, "refcount-bits", qimg_json_int(s->refcount_bits));
    if (v3) {
        if (s->data_file_name)
            qimg_json_set(d, "data-file", qimg_json_string(s->data_file_name));
        if (qcow2_has_data_file(s))
            qimg_json_set(d, "data-file-raw", qimg_json_bool(qcow2_data_file_is_raw(s)));
    }
    if (s->crypt_method != QCOW2_CRYPT_NONE)
        qimg_json_set(d, "encrypt", qcow2_crypt_info(s));
    if (v3) {
        qimg_json_set(d, "corrupt", qimg_json_bool(s->incompatible_features & QCOW2_INCOMPAT_CORRUPT));
        qimg_json_set(d, "extended-l2", qimg_json_bool(s->extended_l2));
    }
    struct qimg_json *spec = qimg_json_object();
    qimg_json_set(spec, "type", qimg_json_string("qcow2"));
    qimg_json_set(spec, "data", d);
    return spec;
}

static int qcow2_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    struct qcow2_state *s = qcow2_state(img);
    info->cluster_size = (int64_t)s->cluster_size;
    info->has_dirty = true;
    info->dirty = s->incompatible_features & QCOW2_INCOMPAT_DIRTY;
    info->encrypted = s->crypt_method != QCOW2_CRYPT_NONE;
    info->format_specific = format_specific(s);
    return 0;
}

static int qcow2_snapshot_list(struct qimg_image *img, struct qimg_snapshot_info **list, size_t *n)
{
    struct qcow2_state *s = qcow2_state(img);
    *list = NULL;
    *n = 0;
    if (s->nb_snapshots == 0)
        return 0;
    struct qimg_snapshot_info *l = qimg_xcalloc(s->nb_snapshots, sizeof *l);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        l[i].id = qimg_strdup(sn->id);
        l[i].name = qimg_strdup(sn->name);
        l[i].vm_state_size = sn->vm_state_size;
        l[i].date_sec = sn->date_sec;
        l[i].date_nsec = sn->date_nsec;
        l[i].vm_clock_nsec = sn->vm_clock_nsec;
        l[i].icount = sn->icount;
    }
    *list = l;
    *n = s->nb_snapshots;
    return 0;
}

static int qcow2_bitmap_list(struct qimg_image *img, struct qimg_bitmap_info **list, size_t *n)
{
    struct qcow2_state *s = qcow2_state(img);
    *list = NULL;
    *n = 0;
    if (!s->bitmaps || s->nb_bitmaps == 0)
        return 0;
    struct qimg_bitmap_info *l = qimg_xcalloc(s->nb_bitmaps, sizeof *l);
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        l[i].name = qimg_strdup(s->bitmaps[i].name);
        l[i].granularity = 1u << s->bitmaps[i].granularity_bits;
        l[i].enabled = s->bitmaps[i].flags & QCOW2_BME_AUTO;
        l[i].in_use = s->bitmaps[i].flags & QCOW2_BME_IN_USE;
    }
    *list = l;
    *n = s->nb_bitmaps;
    return 0;
}

const struct qimg_driver qimg_driver_qcow2 = {
    .name           = "qcow2",
    .flags          = QIMG_DRV_SUPPORTS_BACKING,
    .create_opts    = qcow2_create_opts,
    .create         = qcow2_create,
    .measure        = qcow2_measure,
    .probe          = qcow2_probe,
    .open           = qcow2_open,
    .close          = qcow2_close,
    .read           = qcow2_read,
    .write          = qcow2_write,
    .write_zeroes   = qcow2_write_zeroes,
    .discard        = qcow2_discard,
    .flush          = qcow2_flush,
    .block_status   = qcow2_block_status,
    .info           = qcow2_info,
    .check          = qcow2_check,
    .snapshot_list  = qcow2_snapshot_list,
    .snapshot_create = qcow2_snapshot_create,
    .snapshot_apply = qcow2_snapshot_apply,
    .snapshot_load_tmp = qcow2_snapshot_load_tmp,
    .snapshot_delete = qcow2_snapshot_delete,
    .bitmap_list    = qcow2_bitmap_list,
    .bitmap_add     = qcow2_bitmap_add,
    .bitmap_remove  = qcow2_bitmap_remove,
    .bitmap_clear   = qcow2_bitmap_clear,
    .bitmap_set_enabled = qcow2_bitmap_set_enabled,
    .bitmap_next_dirty = qcow2_bitmap_next_dirty,
    .bitmap_set_dirty = qcow2_bitmap_set_dirty,
    .bitmap_store   = qcow2_bitmap_store,
    .bitmap_supported = qcow2_bitmap_supported,
    .has_zero_init  = qcow2_has_zero_init_w,
    .resize         = qcow2_resize,
    .change_backing = qcow2_change_backing,
    .make_empty     = qcow2_make_empty,
    .compress       = qcow2_compress,
    .write_compressed = qcow2_write_compressed,
    .amend_opts     = qcow2_amend_opts,
    .amend          = qcow2_amend,
};
