/* qimg - qcow2 reading: the L2 table cache, guest-to-host mapping, read
 * and block status.
 *
 * Metadata (L1, cached L2 tables) is read under img->lock; data preads run
 * outside it, so several threads read at once.  A read is split into runs
 * of host-contiguous clusters, each one pread. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"

/* ============================================================ L2 cache */

int qcow2_l2_cache_init(struct qcow2_state *s)
{
    struct qcow2_l2_cache *c = &s->l2_cache;
    uint64_t max_tables = QCOW2_L2_CACHE_MAX_BYTES / s->l2_table_bytes;
    /* enough tables for the whole disk, within the memory bound */
    uint64_t want = QIMG_MAX((uint64_t)s->l1_vm_state_index, (uint64_t)QCOW2_L2_CACHE_MIN_TABLES);
    c->capacity = (uint32_t)QIMG_MIN(want, max_tables);
    c->nbuckets = 1;
    while (c->nbuckets < c->capacity)
        c->nbuckets <<= 1;
    c->entries = qimg_xcalloc(c->capacity, sizeof *c->entries);
    c->buckets = qimg_xcalloc(c->nbuckets, sizeof *c->buckets);
    c->slab_tables = (uint32_t)QIMG_MAX(QCOW2_L2_SLAB_BYTES / s->l2_table_bytes, 1);
    c->slabs = qimg_xcalloc(qimg_div_round_up(c->capacity, c->slab_tables), sizeof *c->slabs);
    return 0;
}

void qcow2_l2_cache_free(struct qcow2_state *s)
{
    struct qcow2_l2_cache *c = &s->l2_cache;
    for (uint32_t i = 0; c->slabs && i < c->nslabs; i++)
        free(c->slabs[i]);
    free(c->slabs);
    free(c->entries);
    free(c->buckets);
    memset(c, 0, sizeof *c);
}

/* Memory for the table of slot i.  Tables come in slabs of up to
 * QCOW2_L2_SLAB_BYTES: one page-aligned allocation per small table (4 KiB
 * for 4 KiB clusters) costs the allocator about as much again in
 * alignment, which doubled the cache's memory. */
static uint8_t *slot_table(struct qcow2_state *s, uint32_t i)
{
    struct qcow2_l2_cache *c = &s->l2_cache;
    uint32_t slab = i / c->slab_tables;
    if (slab >= c->nslabs) {
        uint32_t tables = QIMG_MIN(c->slab_tables, c->capacity - slab * c->slab_tables);
        uint8_t *p = qimg_alloc_from_image((uint64_t)tables * s->l2_table_bytes, "L2 table");
        if (!p)
            return NULL;
        c->slabs[c->nslabs++] = p;
    }
    return c->slabs[slab] + (uint64_t)(i % c->slab_tables) * s->l2_table_bytes;
}

static uint32_t l2_hash(const struct qcow2_l2_cache *c, uint64_t offset)
{
    uint64_t h = offset * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> 32) & (c->nbuckets - 1);
}

static void lru_unlink(struct qcow2_l2_cache *c, struct qcow2_l2_entry *e)
{
    if (e->lru_prev) e->lru_prev->lru_next = e->lru_next; else c->lru_head = e->lru_next;
    if (e->lru_next) e->lru_next->lru_prev = e->lru_prev; else c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_head(struct qcow2_l2_cache *c, struct qcow2_l2_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head) c->lru_head->lru_prev = e; else c->lru_tail = e;
    c->lru_head = e;
}

static void hash_remove(struct qcow2_l2_cache *c, struct qcow2_l2_entry *e)
{
    struct qcow2_l2_entry **p = &c->buckets[l2_hash(c, e->offset)];
    while (*p && *p != e)
        p = &(*p)->hash_next;
    if (*p)
        *p = e->hash_next;
    e->hash_next = NULL;
}

static int write_back(struct qimg_image *img, struct qcow2_l2_entry *e)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!e->dirty)
        return 0;
    /* the refcounts of what the table points to reach the disk first */
    int r = s->ws ? qcow2_refcount_flush(img) : 0;
    if (r < 0)
        return r;
    qimg_io_event(img->file, QIMG_EV_L2_UPDATE);
    r = qimg_io_pwrite(img->file, e->table, s->l2_table_bytes, e->offset);
    if (r < 0)
        return r;
    e->dirty = false;
    return 0;
}

int qcow2_l2_cache_flush(struct qimg_image *img)
{
    struct qcow2_l2_cache *c = &qcow2_state(img)->l2_cache;
    for (struct qcow2_l2_entry *e = c->lru_tail; e; e = e->lru_prev) {
        int r = write_back(img, e);
        if (r < 0)
            return r;
    }
    return 0;
}

bool qcow2_l2_cache_dirty(struct qimg_image *img)
{
    for (struct qcow2_l2_entry *e = qcow2_state(img)->l2_cache.lru_tail; e; e = e->lru_prev)
        if (e->dirty)
            return true;
    return false;
}

static struct qcow2_l2_entry *l2_lookup(struct qcow2_l2_cache *c, uint64_t l2_offset)
{
    for (struct qcow2_l2_entry *e = c->buckets[l2_hash(c, l2_offset)]; e; e = e->hash_next)
        if (e->offset == l2_offset)
            return e;
    return NULL;
}

void qcow2_l2_cache_mark_dirty(struct qimg_image *img, uint64_t l2_offset)
{
    struct qcow2_l2_entry *e = l2_lookup(&qcow2_state(img)->l2_cache, l2_offset);
    if (e)
        e->dirty = true;
}

int qcow2_l2_cache_write_now(struct qimg_image *img, uint64_t l2_offset)
{
    struct qcow2_l2_entry *e = l2_lookup(&qcow2_state(img)->l2_cache, l2_offset);
    return e ? write_back(img, e) : 0;
}

void qcow2_l2_cache_drop(struct qimg_image *img, uint64_t l2_offset)
{
    struct qcow2_l2_cache *c = &qcow2_state(img)->l2_cache;
    struct qcow2_l2_entry *e = l2_lookup(c, l2_offset);
    if (!e)
        return;
    /* an empty slot, least recently used (offset 0 never matches a table) */
    hash_remove(c, e);
    lru_unlink(c, e);
    e->offset = 0;
    e->dirty = false;
    e->hash_next = c->buckets[l2_hash(c, 0)];
    c->buckets[l2_hash(c, 0)] = e;
    e->lru_prev = c->lru_tail;
    if (c->lru_tail) c->lru_tail->lru_next = e; else c->lru_head = e;
    c->lru_tail = e;
}

void qcow2_l2_cache_drop_dirty(struct qimg_image *img)
{
    struct qcow2_l2_cache *c = &qcow2_state(img)->l2_cache;
    for (uint32_t i = 0; i < c->used; i++)
        if (c->entries[i].offset && c->entries[i].dirty)
            qcow2_l2_cache_drop(img, c->entries[i].offset);
}

/* A slot for a new table: a never-used one, else the least recently used. */
static int take_slot(struct qimg_image *img, struct qcow2_l2_entry **out)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_cache *c = &s->l2_cache;
    struct qcow2_l2_entry *e;
    if (c->used < c->capacity) {
        e = &c->entries[c->used];
        e->table = slot_table(s, c->used);
        if (!e->table)
            return -ENOMEM;
        c->used++;
    } else {
        e = c->lru_tail;
        int r = write_back(img, e);
        if (r < 0)
            return r;
        lru_unlink(c, e);
        hash_remove(c, e);
        e->offset = 0;
    }
    *out = e;
    return 0;
}

int qcow2_l2_cache_get(struct qimg_image *img, uint64_t l2_offset, uint8_t **table)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_cache *c = &s->l2_cache;
    uint32_t b = l2_hash(c, l2_offset);
    for (struct qcow2_l2_entry *e = c->buckets[b]; e; e = e->hash_next) {
        if (e->offset == l2_offset) {
            lru_unlink(c, e);
            lru_push_head(c, e);
            c->hits++;
            *table = e->table;
            return 0;
        }
    }
    c->misses++;
    if (!qimg_range_ok(l2_offset, s->l2_table_bytes, s->file_size))
        return qimg_error(-EIO, "qcow2: L2 table offset %#" PRIx64 " is past the end of the file",
                          l2_offset);
    struct qcow2_l2_entry *e;
    int r = take_slot(img, &e);
    if (r < 0)
        return r;
    qimg_io_event(img->file, QIMG_EV_L2_LOAD);
    r = qimg_io_pread(img->file, e->table, s->l2_table_bytes, l2_offset);
    if (r < 0) {
        /* give the slot back as the least recently used, empty */
        e->offset = 0;
        e->hash_next = c->buckets[l2_hash(c, 0)];
        c->buckets[l2_hash(c, 0)] = e;
        e->lru_next = NULL;
        e->lru_prev = c->lru_tail;
        if (c->lru_tail) c->lru_tail->lru_next = e; else c->lru_head = e;
        c->lru_tail = e;
        return qimg_error(r, "Could not read L2 table: %s", strerror(-r));
    }
    e->offset = l2_offset;
    e->dirty = false;
    e->hash_next = c->buckets[b];
    c->buckets[b] = e;
    lru_push_head(c, e);
    *table = e->table;
    return 0;
}

int qcow2_l2_cache_install(struct qimg_image *img, uint64_t l2_offset, const uint8_t *data,
                           uint8_t **table)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_l2_cache *c = &s->l2_cache;
    qcow2_l2_cache_drop(img, l2_offset);
    struct qcow2_l2_entry *e;
    int r = take_slot(img, &e);
    if (r < 0)
        return r;
    memcpy(e->table, data, s->l2_table_bytes);
    e->offset = l2_offset;
    e->dirty = false;
    uint32_t b = l2_hash(c, l2_offset);
    e->hash_next = c->buckets[b];
    c->buckets[b] = e;
    lru_push_head(c, e);
    *table = e->table;
    return 0;
}

/* ============================================================= mapping */

/* Kind of subcluster sc of an L2 entry (bitmap: second word with extended
 * L2, else 0), and the host offset of the subcluster when it has one. */
static int classify(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap, uint32_t sc,
                    uint64_t l2_offset, uint64_t l2_index,
                    enum qcow2_cluster_kind *kind, uint64_t *host)
{
    uint64_t off = entry & QCOW2_OFFSET_MASK;
    *host = 0;
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        if (qcow2_has_data_file(s))
            return qimg_error(-EIO, "qcow2: Compressed cluster entry found in image with "
                              "external data file (L2 offset: %#" PRIx64 ", L2 index: %#" PRIx64 ")",
                              l2_offset, l2_index);
        *kind = QCOW2_KIND_COMPRESSED;
        return 0;
    }
    bool allocated = off != 0 || (qcow2_has_data_file(s) && (entry & QCOW2_OFLAG_COPIED));
    if (allocated && !qimg_is_aligned(off, s->cluster_size))
        return qimg_error(-EIO, "qcow2: Cluster allocation offset %#" PRIx64 " unaligned "
                          "(L2 offset: %#" PRIx64 ", L2 index: %#" PRIx64 ")",
                          off, l2_offset, l2_index);
    if (!s->extended_l2) {
        if (entry & QCOW2_OFLAG_ZERO)
            *kind = allocated ? QCOW2_KIND_ZERO_ALLOC : QCOW2_KIND_ZERO_PLAIN;
        else
            *kind = allocated ? QCOW2_KIND_NORMAL : QCOW2_KIND_UNALLOCATED;
    } else {
        bool a = QCOW2_L2_BITMAP_ALLOC(bitmap) & (1u << sc);
        bool z = QCOW2_L2_BITMAP_ZERO(bitmap) & (1u << sc);
        if ((a && z) || (a && !allocated))
            return qimg_error(-EIO, "qcow2: Invalid cluster entry found (L2 offset: %#" PRIx64
                              ", L2 index: %#" PRIx64 ")", l2_offset, l2_index);
        if (z)
            *kind = allocated ? QCOW2_KIND_ZERO_ALLOC : QCOW2_KIND_ZERO_PLAIN;
        else
            *kind = a ? QCOW2_KIND_NORMAL :
                    allocated ? QCOW2_KIND_UNALLOCATED_ALLOC : QCOW2_KIND_UNALLOCATED;
    }
    if (allocated)
        *host = off + (uint64_t)sc * s->subcluster_size;
    return 0;
}

static bool joins(enum qcow2_cluster_kind kind, uint64_t expect_host,
                  enum qcow2_cluster_kind k, uint64_t host)
{
    if (k != kind || kind == QCOW2_KIND_COMPRESSED)
        return false;
    if (kind == QCOW2_KIND_NORMAL || kind == QCOW2_KIND_ZERO_ALLOC ||
        kind == QCOW2_KIND_UNALLOCATED_ALLOC)
        return host == expect_host;
    return true;
}

/* Within one L2 table, under the lock. */
static int map_in_table(struct qimg_image *img, uint64_t l2_offset, uint64_t off, uint64_t len,
                        struct qcow2_mapping *m)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t *table;
    int r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r < 0)
        return r;
    uint64_t idx = qcow2_l2_index(s, off);
    uint64_t in_cluster = qcow2_offset_into_cluster(s, off);
    uint32_t sc = (uint32_t)(in_cluster / s->subcluster_size);
    uint64_t pos = off;                /* guest offset of the unit being looked at */
    uint64_t end = off + len;
    bool first = true;
    uint64_t expect_host = 0;
    m->length = 0;
    for (; idx < s->l2_entries && pos < end; idx++, sc = 0) {
        const uint8_t *e = table + idx * s->l2_entry_bytes;
        uint64_t entry = qimg_be64(e);
        uint64_t bitmap = s->extended_l2 ? qimg_be64(e + 8) : 0;
        for (; sc < s->subclusters_per_cluster && pos < end; sc++) {
            enum qcow2_cluster_kind k = QCOW2_KIND_UNALLOCATED;
            uint64_t host;
            r = classify(s, entry, bitmap, sc, l2_offset, idx, &k, &host);
            if (r < 0)
                return r;
            uint64_t unit_end = (pos | (s->subcluster_size - 1)) + 1;
            if (k == QCOW2_KIND_COMPRESSED)
                unit_end = (pos | (s->cluster_size - 1)) + 1;
            uint64_t within = pos - qimg_round_down(pos, k == QCOW2_KIND_COMPRESSED ?
                                                    s->cluster_size : s->subcluster_size);
            if (first) {
                m->kind = k;
                m->host_offset = host + within;
                m->l2_entry = entry;
                first = false;
            } else if (!joins(m->kind, expect_host, k, host)) {
                return 0;
            }
            uint64_t n = QIMG_MIN(unit_end, end) - pos;
            m->length += n;
            expect_host = host + within + n;
            pos += n;
            if (k == QCOW2_KIND_COMPRESSED)
                return 0;
        }
    }
    return 0;
}

int qcow2_map(struct qimg_image *img, uint64_t off, uint64_t len, struct qcow2_mapping *m)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t table_span = 1ull << (s->cluster_bits + s->l2_bits);
    memset(m, 0, sizeof *m);
    pthread_mutex_lock(&img->lock);
    uint64_t l1i = qcow2_l1_index(s, off);
    uint64_t l1e = l1i < s->l1_size ? s->l1_table[l1i] : 0;
    uint64_t l2_offset = l1e & QCOW2_OFFSET_MASK;
    int r = 0;
    if (l2_offset == 0) {
        /* no L2 table: unallocated up to the next L1 entry that has one */
        m->kind = QCOW2_KIND_UNALLOCATED;
        uint64_t pos = off;
        while (pos - off < len) {
            uint64_t i = qcow2_l1_index(s, pos);
            if (i < s->l1_size && (s->l1_table[i] & QCOW2_OFFSET_MASK))
                break;
            pos = qimg_round_down(pos, table_span) + table_span;
            if (pos == 0)   /* wrapped: the end of the 64-bit space */
                break;
        }
        m->length = pos == 0 || pos - off > len ? len : pos - off;
    } else if (!qimg_is_aligned(l2_offset, s->cluster_size)) {
        r = qimg_error(-EIO, "qcow2: L2 table offset %#" PRIx64 " unaligned (L1 index: %#" PRIx64 ")",
                       l2_offset, l1i);
    } else {
        uint64_t table_end = qimg_round_down(off, table_span) + table_span;
        uint64_t n = table_end == 0 ? len : QIMG_MIN(len, table_end - off);
        r = map_in_table(img, l2_offset, off, n, m);
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ================================================================ read */

/* Data of a NORMAL run.  Past the end of the file it reads as zeros, as
 * in qemu (and block status calls such a range zero). */
static int read_data(struct qimg_image *img, uint64_t host, uint64_t guest, void *buf, size_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    qimg_io_event(s->data_io, QIMG_EV_READ_AIO);
    int r = qimg_io_pread(s->data_io, buf, len, host);
    if (r == 0 && qcow2_crypt_active(s))
        r = qcow2_crypt_run(s, false, host, guest, buf, len);
    return r;
}

struct pending_run { uint64_t host, guest; uint8_t *buf; size_t len; };

static int flush_run(struct qimg_image *img, struct pending_run *p)
{
    int r = 0;
    if (p->len > 0)
        r = read_data(img, p->host, p->guest, p->buf, p->len);
    p->len = 0;
    return r;
}

/* Largest single pread: beyond it a run is split. */
#define QCOW2_MAX_RUN (64u << 20)

int qcow2_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t *out = buf;
    struct pending_run run = { 0 };
    CLEANUP_FREE uint8_t *cbuf = NULL;
    int r = qcow2_crypt_read_unaligned(img, off, buf, len);
    if (r != 0)
        return r < 0 ? r : 0;
    while (len > 0 && r == 0) {
        struct qcow2_mapping m;
        r = qcow2_map(img, off, len, &m);
        if (r < 0)
            break;
        size_t n = (size_t)m.length;
        switch (m.kind) {
        case QCOW2_KIND_NORMAL:
            if (run.len > 0 && run.host + run.len == m.host_offset && run.buf + run.len == out &&
                run.len + n <= QCOW2_MAX_RUN) {
                run.len += n;
            } else {
                r = flush_run(img, &run);
                run = (struct pending_run){ m.host_offset, off, out, n };
            }
            break;
        case QCOW2_KIND_UNALLOCATED:
        case QCOW2_KIND_UNALLOCATED_ALLOC:
            r = flush_run(img, &run);
            if (r == 0)
                r = qimg_read_backing(img, off, out, n);
            break;
        case QCOW2_KIND_ZERO_PLAIN:
        case QCOW2_KIND_ZERO_ALLOC:
            memset(out, 0, n);
            break;
        case QCOW2_KIND_COMPRESSED:
            r = flush_run(img, &run);
            if (r == 0 && !cbuf) {
                cbuf = qimg_alloc_from_image(s->cluster_size, "compressed cluster");
                if (!cbuf)
                    r = -ENOMEM;
            }
            if (r == 0)
                r = qcow2_read_compressed_cluster(img, m.l2_entry, cbuf);
            if (r == 0)
                memcpy(out, cbuf + qcow2_offset_into_cluster(s, off), n);
            break;
        }
        out += n, off += n, len -= n;
    }
    if (r == 0)
        r = flush_run(img, &run);
    return r;
}

/* ============================================================ refcounts */

uint64_t qcow2_refblock_get(const struct qcow2_state *s, const uint8_t *refblock, uint64_t i)
{
    switch (s->refcount_order) {
    case 0: return (refblock[i / 8] >> (i % 8)) & 1;
    case 1: return (refblock[i / 4] >> (2 * (i % 4))) & 3;
    case 2: return (refblock[i / 2] >> (4 * (i % 2))) & 15;
    case 3: return refblock[i];
    case 4: return qimg_be16(refblock + 2 * i);
    case 5: return qimg_be32(refblock + 4 * i);
    default: return qimg_be64(refblock + 8 * i);
    }
}

int qcow2_read_refcount(struct qimg_image *img, uint64_t cluster_index, uint8_t *refblock,
                        uint64_t *refblock_offset, uint64_t *refcount)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t table_index = cluster_index / s->refcount_block_entries;
    *refcount = 0;
    if (table_index >= s->refcount_table_size)
        return 0;
    uint64_t off = s->refcount_table[table_index] & ~QCOW2_REFT_RESERVED;
    if (off == 0)
        return 0;
    if (!qimg_is_aligned(off, s->cluster_size) || !qimg_range_ok(off, s->cluster_size, s->file_size))
        return qimg_error(-EIO, "qcow2: Refblock offset %#" PRIx64 " is invalid (reftable index %#"
                          PRIx64 ")", off, table_index);
    if (*refblock_offset != off) {
        qimg_io_event(img->file, QIMG_EV_REFBLOCK_LOAD);
        int r = qimg_io_pread(img->file, refblock, s->cluster_size, off);
        if (r < 0)
            return r;
        *refblock_offset = off;
    }
    *refcount = qcow2_refblock_get(s, refblock, cluster_index % s->refcount_block_entries);
    return 0;
}

/* Does the image look preallocated with metadata: clearly more clusters
 * in use by the refcounts than the file has allocated on the host? */
static int detect_metadata_prealloc(struct qimg_image *img, bool *result)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t file_len;
    *result = false;
    int r = qimg_io_get_size(img->file, &file_len);
    if (r < 0)
        return r;
    int64_t real = qimg_io_allocated_size(img->file);
    if (real < 0)
        return 0;
    uint64_t real_clusters = (uint64_t)real / s->cluster_size;
    uint64_t threshold = QIMG_MAX(real_clusters * 10 / 9, real_clusters + 2);
    uint64_t end = qimg_div_round_up(file_len, s->cluster_size), used = 0;
    CLEANUP_FREE uint8_t *refblock = qimg_alloc_from_image(s->cluster_size, "refcount block");
    if (!refblock)
        return -ENOMEM;
    uint64_t held = 0;
    for (uint64_t i = 0; i < end && used < threshold; i++) {
        uint64_t rc;
        r = qcow2_read_refcount(img, i, refblock, &held, &rc);
        if (r < 0)
            return r;
        used += rc != 0;
    }
    *result = used >= threshold;
    return 0;
}

static bool metadata_prealloc(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    pthread_mutex_lock(&img->lock);
    if (!s->metadata_prealloc_checked) {
        bool yes;
        if (detect_metadata_prealloc(img, &yes) == 0)
            s->metadata_prealloc = yes;
        qimg_error_clear();
        s->metadata_prealloc_checked = true;
    }
    bool v = s->metadata_prealloc;
    pthread_mutex_unlock(&img->lock);
    return v;
}

/* ======================================================== block status */

int qcow2_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_mapping m;
    int r = qcow2_map(img, off, len, &m);
    if (r < 0)
        return r;
    ext->length = m.length;
    ext->flags = 0;
    switch (m.kind) {
    case QCOW2_KIND_UNALLOCATED:
        break;
    case QCOW2_KIND_UNALLOCATED_ALLOC:
        ext->flags = QIMG_STATUS_OFFSET;   /* not allocated, yet with a host offset */
        break;
    case QCOW2_KIND_ZERO_PLAIN:
        ext->flags = QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED;
        break;
    case QCOW2_KIND_ZERO_ALLOC:
        ext->flags = QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET;
        break;
    case QCOW2_KIND_NORMAL:
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET;
        break;
    case QCOW2_KIND_COMPRESSED:
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_COMPRESSED;
        break;
    }
    /* as qemu: encrypted data has no place in the file to show */
    if (s->crypt_method != QCOW2_CRYPT_NONE)
        ext->flags &= ~(unsigned)QIMG_STATUS_OFFSET;
    if (ext->flags & QIMG_STATUS_OFFSET) {
        ext->host_offset = m.host_offset;
        ext->host_file = s->data_io ? s->data_io->filename : img->file->filename;
    }
    if (m.kind == QCOW2_KIND_NORMAL && s->data_io && metadata_prealloc(img))
        /* data clusters of a metadata-preallocated image may be holes in
         * the data file: zeros, as qemu reports them (past its end too) */
        qimg_extent_look_into_file(s->data_io, ext, true);
    return 0;
}
