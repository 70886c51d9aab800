/* qimg - qcow2 persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps").
 *
 * On disk: the bitmaps header extension points to a directory of entries
 * (table offset and size, flags, granularity, name); each bitmap's table
 * lists one host cluster per cluster of bitmap data (0 with bit 0 clear:
 * all zeros, with bit 0 set: all ones).  Bit i of the data (LSB first in
 * each byte) covers guest bytes [i*granularity, (i+1)*granularity).
 *
 * In memory: a model of the directory (struct bm_ent) built on first use
 * from what open parsed, with the data of a bitmap loaded when needed.
 * Every change is stored the way the spec wants it crash-safe: new data
 * clusters and tables, a new directory in new clusters, then the header
 * switched to it, and only then the old clusters freed.  Bitmaps are
 * written sparsely: clusters of zeros get a 0 entry and no cluster.
 *
 * Dirty tracking: at the first guest write of a read-write open, the
 * enabled ("auto") bitmaps are loaded and flagged in use on disk (the
 * directory rewritten in place), as qemu does while it has an image open;
 * writes set their bits; close stores them and clears the flag.  A bitmap
 * that was already in use when we found it is inconsistent: it is kept as
 * it is, it can only be removed.
 *
 * Everything that touches the model runs with img->lock held. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"
#include "qcow2-bitmap.h"

/* qemu's limits: 512 MiB of bitmap data, a granularity of 2^9..2^31. */
#define BM_MAX_DATA_BYTES   (1ull << 29)
#define BM_MIN_GRAN_BITS    9u
#define BM_MAX_GRAN_BITS    31u
#define BM_TYPE_DIRTY       1u
/* Bitmap table entry: bits 1-8 and 56-63 reserved; bit 0 "all ones"
 * (only with a 0 offset). */
#define BM_TE_RESERVED      0xff000000000001feull
#define BM_TE_ALL_ONES      1ull

struct bm_ent {
    char *name;
    uint32_t flags;            /* as found, without the in-use flag we set */
    uint8_t type, gran_bits;
    uint8_t *extra;            /* extra data, kept as it is */
    uint32_t extra_size;
    uint64_t table_offset;     /* the stored table */
    uint32_t table_size;
    uint8_t *bits;             /* loaded data (nbytes), or NULL */
    uint64_t nbytes;
    bool changed;              /* bits differ from the stored table */
    bool tracking;             /* flagged in use by us; records writes */
};

/* A run of host bytes to free once the header no longer refers to it. */
struct bm_free { uint64_t off, bytes; bool is_table; };

struct qcow2_bm_state {
    struct bm_ent *e;
    uint32_t n;
    bool tracking_started;
    struct bm_free *pending;   /* old tables of removed bitmaps */
    size_t npending;
};

/* ------------------------------------------------------------ helpers */

static uint64_t bits_for(uint64_t size, uint8_t gran_bits)
{
    return (size >> gran_bits) + ((size & ((1ull << gran_bits) - 1)) != 0);
}

static uint64_t data_bytes_for(uint64_t size, uint8_t gran_bits)
{
    return qimg_div_round_up(bits_for(size, gran_bits), 8);
}

static uint64_t entry_len(uint32_t extra_size, size_t name_len)
{
    return (QCOW2_BME_HEADER_LEN + (uint64_t)extra_size + name_len + 7) & ~7ull;
}

static bool inconsistent(const struct bm_ent *e)
{
    return e->flags & QCOW2_BME_IN_USE;
}

static int inconsistent_error(const struct bm_ent *e)
{
    return qimg_error(-EBUSY, "Bitmap '%s' is inconsistent and cannot be used\n"
                      "Try block-dirty-bitmap-remove to delete this bitmap from disk", e->name);
}

/* qemu names the node in some messages ("#block123"); the number changes
 * from run to run.  The same stand-in as src/lib/bitmap.c uses. */
static unsigned node_number(struct qimg_image *img)
{
    return 100u + (unsigned)(strlen(img->filename) % 900);
}

static void ent_free(struct bm_ent *e)
{
    free(e->name);
    free(e->extra);
    free(e->bits);
}

static void add_pending(struct qcow2_bm_state *bs, uint64_t off, uint64_t bytes, bool is_table)
{
    bs->pending = qimg_xrealloc(bs->pending, (bs->npending + 1) * sizeof *bs->pending);
    bs->pending[bs->npending++] = (struct bm_free){ off, bytes, is_table };
}

/* ------------------------------------------------------------- model */

/* The extra data of every entry, from the directory on disk (open checked
 * its bounds; checked again here). */
static int read_extras(struct qimg_image *img, struct qcow2_state *s, struct qcow2_bm_state *bs)
{
    bool any = false;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++)
        any |= s->bitmaps[i].extra_data_size != 0;
    if (!any)
        return 0;
    uint64_t size = s->bitmap_directory_size;
    CLEANUP_FREE uint8_t *dir = qimg_alloc_from_image(size ? size : 1, "bitmap directory");
    if (!dir)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, dir, size, s->bitmap_directory_offset);
    if (r < 0)
        return qimg_error(r, "Failed to read bitmap directory: %s", strerror(-r));
    uint64_t pos = 0;
    for (uint32_t i = 0; i < bs->n; i++) {
        if (size - pos < QCOW2_BME_HEADER_LEN)
            return qimg_error(-EINVAL, "Bitmap directory is incomplete");
        uint32_t extra = qimg_be32(dir + pos + 20);
        uint16_t name_size = qimg_be16(dir + pos + 18);
        uint64_t len = entry_len(extra, name_size);
        if (extra > size || len > size - pos + 7)
            return qimg_error(-EINVAL, "Bitmap directory is incomplete");
        bs->e[i].extra_size = extra;
        bs->e[i].extra = qimg_xmalloc(extra ? extra : 1);
        memcpy(bs->e[i].extra, dir + pos + QCOW2_BME_HEADER_LEN, extra);
        pos += len;
    }
    return 0;
}

static int ensure_model(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (s->bm)
        return 0;
    struct qcow2_bm_state *bs = qimg_xcalloc(1, sizeof *bs);
    if (s->has_bitmaps_ext && s->bitmaps) {
        bs->n = s->nb_bitmaps;
        bs->e = qimg_xcalloc(bs->n ? bs->n : 1, sizeof *bs->e);
        for (uint32_t i = 0; i < bs->n; i++) {
            const struct qcow2_bitmap *b = &s->bitmaps[i];
            struct bm_ent *e = &bs->e[i];
            e->name = qimg_strdup(b->name);
            e->flags = b->flags;
            e->type = b->type;
            e->gran_bits = b->granularity_bits;
            e->table_offset = b->table_offset;
            e->table_size = b->table_size;
            e->nbytes = data_bytes_for(s->size, e->gran_bits);
        }
        int r = read_extras(img, s, bs);
        if (r < 0) {
            for (uint32_t i = 0; i < bs->n; i++)
                ent_free(&bs->e[i]);
            free(bs->e);
            free(bs);
            return r;
        }
    }
    s->bm = bs;
    return 0;
}

static struct bm_ent *find(struct qcow2_state *s, const char *name)
{
    for (uint32_t i = 0; s->bm && i < s->bm->n; i++)
        if (strcmp(s->bm->e[i].name, name) == 0)
            return &s->bm->e[i];
    return NULL;
}

/* The model's entry of that name; the core checked that it exists. */
static int lookup(struct qimg_image *img, const char *name, struct bm_ent **out)
{
    int r = ensure_model(img);
    if (r < 0)
        return r;
    *out = find(qcow2_state(img), name);
    return *out ? 0 : qimg_error(-ENOENT, "Dirty bitmap '%s' not found", name);
}

/* Keep open's view (info, the list) in step with the model. */
static void update_mirror(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++)
        free(s->bitmaps[i].name);
    free(s->bitmaps);
    struct qcow2_bm_state *bs = s->bm;
    s->bitmaps = bs->n ? qimg_xcalloc(bs->n, sizeof *s->bitmaps) : NULL;
    s->nb_bitmaps = bs->n;
    for (uint32_t i = 0; i < bs->n; i++) {
        const struct bm_ent *e = &bs->e[i];
        struct qcow2_bitmap *b = &s->bitmaps[i];
        b->name = qimg_strdup(e->name);
        b->table_offset = e->table_offset;
        b->table_size = e->table_size;
        b->flags = e->flags | (e->tracking ? QCOW2_BME_IN_USE : 0);
        b->type = e->type;
        b->granularity_bits = e->gran_bits;
        b->extra_data_size = e->extra_size;
    }
}

/* ---------------------------------------------------------- loading */

/* One table entry's data into dst (len bytes of one cluster's worth). */
static int load_chunk(struct qimg_image *img, const struct bm_ent *e, uint64_t te,
                      uint8_t *dst, uint64_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    if (te & BM_TE_RESERVED)
        return qimg_error(-EINVAL, "Bitmap '%s' has an invalid table entry", e->name);
    uint64_t off = te & QCOW2_OFFSET_MASK;
    if (off == 0) {
        memset(dst, (te & BM_TE_ALL_ONES) ? 0xff : 0, len);
        return 0;
    }
    if (te & BM_TE_ALL_ONES)
        return qimg_error(-EINVAL, "Bitmap '%s' has an invalid table entry", e->name);
    if (!qimg_range_ok(off, s->cluster_size, s->file_size))
        return qimg_error(-EINVAL, "Bitmap '%s' has data past the end of the file", e->name);
    int r = qimg_io_pread(img->file, dst, len, off);
    return r < 0 ? qimg_error(r, "Could not read bitmap '%s': %s", e->name, strerror(-r)) : 0;
}

static int read_table(struct qimg_image *img, const struct bm_ent *e, uint64_t **out)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t bytes = (uint64_t)e->table_size * 8;
    if (!qimg_range_ok(e->table_offset, bytes, s->file_size))
        return qimg_error(-EINVAL, "Bitmap '%s' has a table past the end of the file", e->name);
    uint64_t *t = qimg_calloc_from_image(e->table_size ? e->table_size : 1, 8, "bitmap table");
    if (!t)
        return -ENOMEM;
    int r = bytes ? qimg_io_pread(img->file, t, bytes, e->table_offset) : 0;
    if (r < 0) {
        free(t);
        return qimg_error(r, "Could not read bitmap table: %s", strerror(-r));
    }
    for (uint32_t i = 0; i < e->table_size; i++)
        t[i] = qimg_be64(&t[i]);
    *out = t;
    return 0;
}

/* Can e's stored table be read as its data? */
static int table_usable(struct qimg_image *img, const struct bm_ent *e)
{
    if (inconsistent(e))
        return inconsistent_error(e);
    if (e->nbytes > BM_MAX_DATA_BYTES)
        return qimg_error(-EFBIG, "Bitmap '%s' is too large", e->name);
    uint64_t want = qimg_div_round_up(e->nbytes, qcow2_state(img)->cluster_size);
    if (e->table_size != want)
        return qimg_error(-EINVAL, "Bitmap '%s' has a table of %" PRIu32 " entries for %"
                          PRIu64 " clusters of data", e->name, e->table_size, want);
    return 0;
}

/* Bits past the end of the disk stay clear (an all-ones entry sets
 * them): last is e's last data byte. */
static void clear_tail(const struct qcow2_state *s, const struct bm_ent *e, uint8_t *last)
{
    uint64_t nbits = bits_for(s->size, e->gran_bits);
    if (nbits % 8)
        *last &= (uint8_t)((1u << (nbits % 8)) - 1);
}

static int load_bits(struct qimg_image *img, struct bm_ent *e)
{
    struct qcow2_state *s = qcow2_state(img);
    if (e->bits)
        return 0;
    int r = table_usable(img, e);
    if (r < 0)
        return r;
    CLEANUP_FREE uint64_t *t = NULL;
    r = read_table(img, e, &t);
    if (r < 0)
        return r;
    uint8_t *bits = qimg_calloc_from_image(e->nbytes ? e->nbytes : 1, 1, "bitmap");
    if (!bits)
        return -ENOMEM;
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t at = (uint64_t)i * s->cluster_size;
        r = load_chunk(img, e, t[i], bits + at, QIMG_MIN(s->cluster_size, e->nbytes - at));
        if (r < 0) {
            free(bits);
            return r;
        }
    }
    if (e->nbytes)
        clear_tail(s, e, &bits[e->nbytes - 1]);
    e->bits = bits;
    return 0;
}

/* ------------------------------------------------------------ storing */

/* n contiguous clusters (a bitmap table or the directory must be
 * contiguous): runs too short are taken aside and given back after. */
static int alloc_contiguous(struct qimg_image *img, uint64_t n, uint64_t *host)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t *aside = NULL, naside = 0, off = 0, got = 0;
    int r;
    for (;;) {
        r = qcow2_alloc_clusters(img, n, &off, &got);
        if (r < 0 || got == n)
            break;
        aside = qimg_xrealloc(aside, (naside + 1) * 2 * sizeof *aside);
        aside[2 * naside] = off;
        aside[2 * naside++ + 1] = got;
    }
    for (uint64_t i = 0; i < naside; i++)
        if (qcow2_free_clusters(img, aside[2 * i], aside[2 * i + 1] << s->cluster_bits, false) < 0 && r == 0)
            r = -EIO;
    free(aside);
    if (r == 0)
        *host = off;
    return r;
}

static int write_meta(struct qimg_image *img, const void *buf, size_t len, uint64_t off)
{
    int r = qimg_io_pwrite(img->file, buf, len, off);
    return r < 0 ? qimg_error(r, "Could not write bitmap: %s", strerror(-r)) : 0;
}

/* Chunk i of e's data into buf (a cluster, zero-padded): from the loaded
 * bits, or else from the stored table. */
static int data_chunk(struct qimg_image *img, const struct bm_ent *e, const uint64_t *stored,
                      uint64_t i, uint8_t *buf)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    uint64_t len = QIMG_MIN(cs, e->nbytes - i * cs);
    memset(buf, 0, cs);
    if (e->bits) {
        memcpy(buf, e->bits + i * cs, len);
        return 0;
    }
    int r = load_chunk(img, e, stored[i], buf, len);
    if (r == 0 && i * cs + len == e->nbytes)
        clear_tail(s, e, &buf[len - 1]);
    return r;
}

/* Write e's data and a new table; the old table goes to the free list.
 * Data not loaded is copied from the stored table cluster by cluster (a
 * bitmap is stored again whenever another one changes). */
static int store_data(struct qimg_image *img, struct bm_ent *e)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t cs = s->cluster_size;
    uint64_t nt = qimg_div_round_up(e->nbytes, cs);
    CLEANUP_FREE uint64_t *stored = NULL;
    int r = e->bits ? 0 : read_table(img, e, &stored);
    if (r < 0)
        return r;
    CLEANUP_FREE uint8_t *table = qimg_calloc_from_image(nt ? nt : 1, 8, "bitmap table");
    CLEANUP_FREE uint8_t *buf = qimg_alloc_from_image(cs, "bitmap cluster");
    if (!table || !buf)
        return -ENOMEM;
    for (uint64_t i = 0; i < nt; i++) {
        if ((r = data_chunk(img, e, stored, i, buf)) < 0)
            return r;
        if (qimg_is_zero(buf, cs))
            continue;
        uint64_t host, got;
        r = qcow2_alloc_clusters(img, 1, &host, &got);
        if (r == 0)
            r = write_meta(img, buf, cs, host);
        if (r < 0)
            return r;
        qimg_put_be64(table + 8 * i, host);
    }
    uint64_t toff = 0;
    if (nt) {
        r = alloc_contiguous(img, qimg_div_round_up(nt * 8, cs), &toff);
        if (r == 0)
            r = write_meta(img, table, nt * 8, toff);
        if (r < 0)
            return r;
    }
    if (e->table_offset)
        add_pending(s->bm, e->table_offset, (uint64_t)e->table_size * 8, true);
    e->table_offset = toff;
    e->table_size = (uint32_t)nt;
    e->changed = false;
    return 0;
}

static uint64_t dir_size(const struct qcow2_bm_state *bs)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < bs->n; i++)
        size += entry_len(bs->e[i].extra_size, strlen(bs->e[i].name));
    return size;
}

static uint8_t *build_dir(const struct qcow2_bm_state *bs, uint64_t size)
{
    uint8_t *dir = qimg_xcalloc(1, size ? size : 1);
    uint64_t pos = 0;
    for (uint32_t i = 0; i < bs->n; i++) {
        const struct bm_ent *e = &bs->e[i];
        uint8_t *p = dir + pos;
        size_t nlen = strlen(e->name);
        qimg_put_be64(p, e->table_offset);
        qimg_put_be32(p + 8, e->table_size);
        qimg_put_be32(p + 12, e->flags | (e->tracking ? QCOW2_BME_IN_USE : 0));
        p[16] = e->type;
        p[17] = e->gran_bits;
        qimg_put_be16(p + 18, (uint16_t)nlen);
        qimg_put_be32(p + 20, e->extra_size);
        memcpy(p + QCOW2_BME_HEADER_LEN, e->extra, e->extra_size);
        memcpy(p + QCOW2_BME_HEADER_LEN + e->extra_size, e->name, nlen);
        pos += entry_len(e->extra_size, nlen);
    }
    return dir;
}

/* Point the header at the directory (none: the extension goes and with it
 * the "bitmaps consistent" autoclear bit). */
static int switch_header(struct qimg_image *img, uint64_t dir_off, uint64_t dir_bytes)
{
    struct qcow2_state *s = qcow2_state(img);
    uint32_t n = s->bm->n;
    uint64_t autoclear = n ? s->autoclear_features | QCOW2_AUTOCLEAR_BITMAPS
                           : s->autoclear_features & ~QCOW2_AUTOCLEAR_BITMAPS;
    if (s->version >= 3 && autoclear != s->autoclear_features) {
        uint8_t be[8];
        qimg_put_be64(be, autoclear);
        int r = qimg_io_pwrite(img->file, be, 8, QCOW2_HDR_AUTOCLEAR_FEATURES);
        if (r < 0)
            return qimg_error(r, "Could not update qcow2 header: %s", strerror(-r));
        s->autoclear_features = autoclear;
    }
    s->has_bitmaps_ext = n > 0;
    s->bitmap_directory_offset = dir_off;
    s->bitmap_directory_size = dir_bytes;
    return qcow2_rewrite_header_locked(img);
}

/* Free a stored table and the data clusters it lists.  Entries that do
 * not look like ours (reserved bits, outside the file, free clusters) are
 * left alone: freeing them could hurt other data. */
static int free_table(struct qimg_image *img, uint64_t off, uint64_t bytes)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t n = bytes / 8;
    if (!qimg_range_ok(off, bytes, s->file_size) || n > UINT32_MAX)
        return 0;
    struct bm_ent tmp = { .name = (char *)"", .table_offset = off, .table_size = (uint32_t)n };
    CLEANUP_FREE uint64_t *t = NULL;
    int r = read_table(img, &tmp, &t);
    if (r < 0)
        return r;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t host = t[i] & QCOW2_OFFSET_MASK, rc;
        if ((t[i] & (BM_TE_RESERVED | BM_TE_ALL_ONES)) || host == 0 ||
            !qimg_range_ok(host, s->cluster_size, s->file_size))
            continue;
        r = qcow2_get_refcount(img, host >> s->cluster_bits, &rc);
        if (r == 0 && rc > 0)
            r = qcow2_free_clusters(img, host, s->cluster_size, false);
        if (r < 0)
            return r;
    }
    return bytes ? qcow2_free_clusters(img, off, bytes, false) : 0;
}

static int free_pending(struct qimg_image *img)
{
    struct qcow2_bm_state *bs = qcow2_state(img)->bm;
    int r = 0;
    for (size_t i = 0; i < bs->npending && r == 0; i++) {
        struct bm_free *f = &bs->pending[i];
        r = f->is_table ? free_table(img, f->off, f->bytes)
                        : qcow2_free_clusters(img, f->off, f->bytes, false);
    }
    free(bs->pending);
    bs->pending = NULL;
    bs->npending = 0;
    return r;
}

/* qemu stores every bitmap it could load (all but the inconsistent
 * ones) whenever it stores any: each gets new data clusters and a new
 * table, in directory order, which decides where everything lands. */
static int rewrite_all(struct qimg_image *img)
{
    struct qcow2_bm_state *bs = qcow2_state(img)->bm;
    for (uint32_t i = 0; i < bs->n; i++) {
        struct bm_ent *e = &bs->e[i];
        if (e->changed || inconsistent(e))
            continue;
        int r = table_usable(img, e);
        if (r < 0)
            return r;
        e->changed = true;
    }
    return 0;
}

/* Store every changed bitmap (with `all`, every bitmap) and a new
 * directory; free what they replace. */
static int store_locked(struct qimg_image *img, bool all)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_bm_state *bs = s->bm;
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    int r = all ? rewrite_all(img) : 0;
    if (r == 0)
        r = qcow2_begin_metadata_change(img);
    for (uint32_t i = 0; r == 0 && i < bs->n; i++)
        if (bs->e[i].changed)
            r = store_data(img, &bs->e[i]);
    if (r < 0)
        return r;
    if (s->has_bitmaps_ext && s->bitmap_directory_size)
        add_pending(bs, s->bitmap_directory_offset, s->bitmap_directory_size, false);
    uint64_t size = dir_size(bs), off = 0;
    if (size > QCOW2_MAX_BITMAP_DIR)
        return qimg_error(-EFBIG, "Bitmap directory too large");
    if (bs->n) {
        CLEANUP_FREE uint8_t *dir = build_dir(bs, size);
        r = alloc_contiguous(img, qimg_div_round_up(size, s->cluster_size), &off);
        if (r == 0)
            r = write_meta(img, dir, size, off);
    }
    /* data, tables, directory and their refcounts on disk first */
    if (r == 0)
        r = qcow2_flush_locked(img);
    if (r < 0)
        return r;
    update_mirror(s);       /* also the count the header extension takes */
    r = switch_header(img, off, bs->n ? size : 0);
    if (r == 0)
        r = free_pending(img);
    if (r == 0)
        r = qcow2_flush_locked(img);
    return r;
}

static int store_now(struct qimg_image *img)
{
    pthread_mutex_lock(&img->lock);
    int r = ensure_model(img);
    if (r == 0)
        r = store_locked(img, true);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ------------------------------------------------------------ bits */

static void set_bits(uint8_t *bits, uint64_t first, uint64_t last)
{
    while (first <= last && first % 8) {
        bits[first / 8] |= (uint8_t)(1u << (first % 8));
        first++;
    }
    if (first > last)
        return;
    uint64_t whole = (last + 1 - first) / 8;
    memset(bits + first / 8, 0xff, whole);
    for (first += whole * 8; first <= last; first++)
        bits[first / 8] |= (uint8_t)(1u << (first % 8));
}

static void mark_range(struct qimg_image *img, struct bm_ent *e, uint64_t off, uint64_t len)
{
    uint64_t nbits = bits_for(img->size, e->gran_bits);
    if (len == 0 || off >= img->size || nbits == 0)
        return;
    uint64_t end = QIMG_MIN(off + QIMG_MIN(len, img->size - off), img->size);
    set_bits(e->bits, off >> e->gran_bits, QIMG_MIN((end - 1) >> e->gran_bits, nbits - 1));
    e->changed = true;
}

static bool bit_at(const uint8_t *bits, uint64_t i)
{
    return bits[i / 8] & (1u << (i % 8));
}

/* First bit with value `set` in [i, nbits), or nbits. */
static uint64_t scan(const uint8_t *bits, uint64_t i, uint64_t nbits, bool set)
{
    uint8_t skip = set ? 0x00 : 0xff;
    while (i < nbits) {
        if (i % 8 == 0 && bits[i / 8] == skip) {
            i += 8;
            continue;
        }
        if (bit_at(bits, i) == set)
            return i;
        i++;
    }
    return nbits;
}

/* ------------------------------------------------------- dirty tracking */

static int start_tracking(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_bm_state *bs = s->bm;
    bool any = false;
    bs->tracking_started = true;
    for (uint32_t i = 0; i < bs->n; i++) {
        struct bm_ent *e = &bs->e[i];
        if (inconsistent(e) || !(e->flags & QCOW2_BME_AUTO))
            continue;
        int r = load_bits(img, e);
        if (r < 0)
            return r;
        e->tracking = true;
        any = true;
    }
    if (!any || !s->has_bitmaps_ext)
        return 0;
    /* flag them in use: the directory rewritten in place, same layout */
    uint64_t size = dir_size(bs);
    if (size != s->bitmap_directory_size)
        return qimg_error(-EINVAL, "Bitmap directory size does not match its entries");
    CLEANUP_FREE uint8_t *dir = build_dir(bs, size);
    int r = write_meta(img, dir, size, s->bitmap_directory_offset);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        update_mirror(s);
    return r;
}

int qcow2_bitmap_note_write(struct qimg_image *img, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    /* no bitmaps: no lock (bitmap edits never run beside writes) */
    if (!s->has_bitmaps_ext || len == 0)
        return 0;
    pthread_mutex_lock(&img->lock);
    int r = ensure_model(img);
    if (r == 0 && !s->bm->tracking_started)
        r = start_tracking(img);
    for (uint32_t i = 0; r == 0 && i < s->bm->n; i++)
        if (s->bm->e[i].tracking)
            mark_range(img, &s->bm->e[i], off, len);
    pthread_mutex_unlock(&img->lock);
    return r;
}

void qcow2_bitmap_close(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_bm_state *bs = s ? s->bm : NULL;
    if (!bs)
        return;
    bool store = false;
    for (uint32_t i = 0; i < bs->n; i++) {
        store |= bs->e[i].changed || bs->e[i].tracking;
        bs->e[i].tracking = false;
    }
    if ((store || bs->npending) && s->ws && !s->ws->broken) {
        pthread_mutex_lock(&img->lock);
        int r = store_locked(img, true);
        pthread_mutex_unlock(&img->lock);
        if (r < 0)
            qimg_warn("Could not store the dirty bitmaps: %s", qimg_last_error());
    }
    for (uint32_t i = 0; i < bs->n; i++)
        ent_free(&bs->e[i]);
    free(bs->e);
    free(bs->pending);
    free(bs);
    s->bm = NULL;
}

/* ---------------------------------------------------- driver callbacks */

/* The checks qemu makes before it takes a new persistent bitmap. */
static int can_store_new(struct qimg_image *img, const char *name, uint32_t granularity)
{
    struct qcow2_state *s = qcow2_state(img);
    unsigned gbits = (unsigned)__builtin_ctz(granularity);
    const char *why = NULL;
    char buf[64];
    if (s->version < 3)
        why = "Cannot store dirty bitmaps in qcow2 v2 files";
    else if (gbits < BM_MIN_GRAN_BITS || gbits > BM_MAX_GRAN_BITS)
        why = gbits < BM_MIN_GRAN_BITS ? "Granularity exceeds minimum (512 bytes)"
                                       : "Granularity exceeds maximum (2147483648 bytes)";
    else if (data_bytes_for(img->size, (uint8_t)gbits) > BM_MAX_DATA_BYTES)
        why = "Too much space will be occupied by the bitmap. Use larger granularity";
    else if (strlen(name) > QCOW2_MAX_BITMAP_NAME) {
        snprintf(buf, sizeof buf, "Name length exceeds maximum (%u characters)", QCOW2_MAX_BITMAP_NAME);
        why = buf;
    } else if (s->bm->n >= QCOW2_MAX_BITMAPS)
        why = "Maximum number of persistent bitmaps is already reached";
    else if (dir_size(s->bm) + entry_len(0, strlen(name)) > QCOW2_MAX_BITMAP_DIR)
        why = "Not enough space in the bitmap directory";
    if (!why)
        return 0;
    return qimg_error(-EINVAL, "Can't make bitmap '%s' persistent in '#block%03u': %s", name,
                      node_number(img), why);
}

int qcow2_bitmap_add(struct qimg_image *img, const char *name, uint32_t granularity)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = ensure_model(img);
    if (r == 0)
        r = can_store_new(img, name, granularity);
    if (r < 0)
        return r;
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    uint8_t gbits = (uint8_t)__builtin_ctz(granularity);
    uint64_t nbytes = data_bytes_for(img->size, gbits);
    uint8_t *bits = qimg_calloc_from_image(nbytes ? nbytes : 1, 1, "bitmap");
    if (!bits)
        return -ENOMEM;
    struct qcow2_bm_state *bs = s->bm;
    bs->e = qimg_xrealloc(bs->e, (bs->n + 1) * sizeof *bs->e);
    bs->e[bs->n++] = (struct bm_ent){
        .name = qimg_strdup(name), .flags = QCOW2_BME_AUTO, .type = BM_TYPE_DIRTY,
        .gran_bits = gbits, .extra = qimg_xmalloc(1), .bits = bits, .nbytes = nbytes,
        .changed = true, .tracking = bs->tracking_started,
    };
    return store_now(img);
}

int qcow2_bitmap_remove(struct qimg_image *img, const char *name)
{
    struct qcow2_state *s = qcow2_state(img);
    struct bm_ent *e;
    int r = lookup(img, name, &e);
    if (r < 0)
        return r;
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    struct qcow2_bm_state *bs = s->bm;
    if (e->table_offset)
        add_pending(bs, e->table_offset, (uint64_t)e->table_size * 8, true);
    ent_free(e);
    size_t i = (size_t)(e - bs->e);
    memmove(e, e + 1, (bs->n - i - 1) * sizeof *e);
    bs->n--;
    /* as qemu: the directory without it first (its clusters freed), then
     * the others stored again as at any close */
    pthread_mutex_lock(&img->lock);
    r = store_locked(img, false);
    pthread_mutex_unlock(&img->lock);
    return r < 0 || bs->n == 0 ? r : store_now(img);
}

static int usable(struct qimg_image *img, const char *name, struct bm_ent **out)
{
    int r = lookup(img, name, out);
    if (r == 0 && inconsistent(*out))
        r = inconsistent_error(*out);
    return r;
}

int qcow2_bitmap_clear(struct qimg_image *img, const char *name)
{
    struct qcow2_state *s = qcow2_state(img);
    struct bm_ent *e;
    int r = usable(img, name, &e);
    if (r < 0)
        return r;
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    uint8_t *bits = qimg_calloc_from_image(e->nbytes ? e->nbytes : 1, 1, "bitmap");
    if (!bits)
        return -ENOMEM;
    free(e->bits);
    e->bits = bits;
    e->changed = true;
    return store_now(img);
}

int qcow2_bitmap_set_enabled(struct qimg_image *img, const char *name, bool enabled)
{
    struct qcow2_state *s = qcow2_state(img);
    struct bm_ent *e;
    int r = usable(img, name, &e);
    if (r < 0)
        return r;
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    e->flags = enabled ? e->flags | QCOW2_BME_AUTO : e->flags & ~QCOW2_BME_AUTO;
    if (s->bm->tracking_started) {
        /* from now on it records writes, or stops */
        if (enabled && (r = load_bits(img, e)) < 0)
            return r;
        e->tracking = enabled;
    }
    return store_now(img);
}

int qcow2_bitmap_next_dirty(struct qimg_image *img, const char *name, uint64_t off,
                            uint64_t *start, uint64_t *len)
{
    struct bm_ent *e;
    pthread_mutex_lock(&img->lock);
    int r = usable(img, name, &e);
    if (r == 0)
        r = load_bits(img, e);
    if (r == 0) {
        uint64_t nbits = bits_for(img->size, e->gran_bits);
        uint64_t first = scan(e->bits, off >> e->gran_bits, nbits, true);
        if (first >= nbits) {
            r = 1;
        } else {
            uint64_t after = scan(e->bits, first, nbits, false);
            *start = QIMG_MAX(first << e->gran_bits, off);
            *len = QIMG_MIN(after << e->gran_bits, img->size) - *start;
        }
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

int qcow2_bitmap_set_dirty(struct qimg_image *img, const char *name, uint64_t off, uint64_t len)
{
    struct bm_ent *e;
    pthread_mutex_lock(&img->lock);
    int r = usable(img, name, &e);
    if (r == 0 && !qcow2_state(img)->ws)
        r = qimg_error(-EACCES, "qcow2: image is read-only");
    /* len 0 only asks whether the bitmap can take changes */
    if (r == 0 && len > 0 && (r = load_bits(img, e)) == 0)
        mark_range(img, e, off, len);
    pthread_mutex_unlock(&img->lock);
    return r;
}

int qcow2_bitmap_store(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    bool changed = false;
    for (uint32_t i = 0; s->bm && i < s->bm->n; i++)
        changed |= s->bm->e[i].changed;
    return changed ? store_now(img) : 0;
}

bool qcow2_bitmap_supported(struct qimg_image *img)
{
    /* version 2 has no autoclear bits to say the bitmaps are consistent */
    return qcow2_state(img)->version >= 3;
}

/* Resize: every bitmap follows the disk (qemu resizes them and stores
 * them with the new size); an inconsistent one stops it. */
int qcow2_bitmap_resize_prepare(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->has_bitmaps_ext)
        return 0;
    pthread_mutex_lock(&img->lock);
    int r = ensure_model(img);
    for (uint32_t i = 0; r == 0 && i < s->bm->n; i++)
        r = load_bits(img, &s->bm->e[i]);
    pthread_mutex_unlock(&img->lock);
    return r;
}

int qcow2_bitmap_resized(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!s->has_bitmaps_ext || !s->bm)
        return 0;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        struct bm_ent *e = &s->bm->e[i];
        uint64_t nbytes = data_bytes_for(s->size, e->gran_bits);
        if (nbytes > BM_MAX_DATA_BYTES)
            return qimg_error(-EFBIG, "Bitmap '%s' is too large", e->name);
        uint8_t *bits = qimg_calloc_from_image(nbytes ? nbytes : 1, 1, "bitmap");
        if (!bits)
            return -ENOMEM;
        memcpy(bits, e->bits, QIMG_MIN(nbytes, e->nbytes));
        uint64_t nbits = bits_for(s->size, e->gran_bits);
        if (nbits % 8)
            bits[nbytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1);
        free(e->bits);
        e->bits = bits;
        e->nbytes = nbytes;
        e->changed = true;
    }
    return store_now(img);
}
