/* qimg - qcow2 consistency check (qemu-img check).
 *
 * The check runs in separate steps so that repair can be added between
 * them without touching the others:
 *   0. the snapshot table, read again as qemu's check reads it
 *      (qcow2-snaptable.c: tolerant, with -r all repaired; an image
 *      opened for a check has not read it);
 *   1. count references (count_*): walk every structure that points at a
 *      host cluster - the header, the L1 and L2 tables of the image and of
 *      every snapshot, data and compressed clusters, the snapshot table,
 *      the refcount table and blocks, the bitmap directory and tables, the
 *      encryption header - and count the references of each cluster in an
 *      in-memory map (struct refmap);
 *   2. compare (compare_refcounts): stored refcount against counted
 *      references, cluster by cluster up to the end of the file: more
 *      stored is a leak, fewer a corruption;
 *   3. COPIED flags (check_copied): an active L1 or L2 entry carries the
 *      flag exactly when the stored refcount of its cluster is 1.
 * Every problem is reported through qimg_check_log in qemu-img's words
 * and in qemu-img's order; counts, statistics and the image end offset go
 * into struct qimg_check_result.
 *
 * Memory: the reference map is a byte per cluster (larger counts in a
 * hash table), allocated in chunks on first use, so a huge sparse file
 * costs memory only where something points; all of it stays within the
 * allocation budget (QIMG_MEM_BUDGET).  Stored refcounts are read through
 * a 1 MiB cache of refcount blocks.  L2 tables are read in batches of
 * 1 MiB, host-contiguous tables in one pread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "qcow2.h"
#include "qcow2-repair.h"
#include "qcow2-snaptable.h"

/* Entry masks as the check interprets them. */
#define L1E_OFFSET_MASK     0x00fffffffffffe00ull
#define L2E_OFFSET_MASK     0x00fffffffffffe00ull
#define REFT_OFFSET_MASK    0xfffffffffffffe00ull
#define BME_TABLE_OFFSET_MASK   0x00fffffffffffe00ull
#define BME_TABLE_RESERVED      0xff000000000001feull
#define BME_TABLE_ALL_ONES      1ull
/* Largest L1 table a snapshot may have (as the active one). */
#define MAX_L1_ENTRIES      (QCOW2_MAX_L1_BYTES / sizeof(uint64_t))
/* qemu refuses to count more clusters than this. */
#define MAX_CHECK_CLUSTERS  ((uint64_t)INT32_MAX)

/* ============================================================ refmap */

/* Counted references per host cluster: a byte each, in chunks allocated
 * on first use; a count from BIG up (a cluster shared by many snapshots,
 * or a wide refcount overflowing) lives in a hash table instead, its byte
 * set to BIG.  One byte a cluster keeps a 1 TiB file of 64 KiB clusters
 * at 16 MiB, whatever the refcount width. */
#define REFMAP_CHUNK_BITS   16
#define REFMAP_CHUNK        (1ull << REFMAP_CHUNK_BITS)
#define REFMAP_BIG          255u

struct big_count { uint64_t key; uint64_t count; };   /* key: cluster + 1, 0 = empty */

struct refmap {
    uint64_t nb_clusters;      /* clusters compared: the file's, grown by references past it */
    uint64_t max;              /* largest refcount the image can store */
    uint8_t **chunks;
    uint64_t nb_chunks;
    struct big_count *big;     /* open addressing, linear probing */
    uint64_t big_slots, big_used;   /* slots: a power of two (or 0) */
    uint64_t bytes, budget;    /* chunk and hash memory in use and allowed */
};

static uint64_t memory_budget(void)
{
    const char *env = getenv("QIMG_MEM_BUDGET");
    uint64_t v;
    if (env && qimg_parse_size(env, &v) == 0 && v > 0)
        return v;
    return QIMG_MEM_BUDGET_DEFAULT;
}

static int refmap_init(struct refmap *m, uint64_t nb_clusters, uint32_t refcount_order)
{
    memset(m, 0, sizeof *m);
    m->nb_clusters = nb_clusters;
    m->max = refcount_order == 6 ? UINT64_MAX : (1ull << (1u << refcount_order)) - 1;
    m->budget = memory_budget();
    /* one spare cluster: a reference may reach into the cluster after the end */
    m->nb_chunks = ((nb_clusters + 1) >> REFMAP_CHUNK_BITS) + 1;
    m->chunks = qimg_calloc_from_image(m->nb_chunks, sizeof *m->chunks, "refcount check table");
    return m->chunks ? 0 : -ENOMEM;
}

static void refmap_free(struct refmap *m)
{
    for (uint64_t i = 0; m->chunks && i < m->nb_chunks; i++)
        free(m->chunks[i]);
    free(m->chunks);
    free(m->big);
    m->chunks = NULL;
    m->big = NULL;
}

static uint64_t big_slot(const struct refmap *m, uint64_t key)
{
    uint64_t i = (key * 0x9e3779b97f4a7c15ull) >> 20;
    for (;; i++) {
        i &= m->big_slots - 1;
        if (m->big[i].key == key || m->big[i].key == 0)
            return i;
    }
}

static uint64_t big_get(const struct refmap *m, uint64_t k)
{
    if (!m->big)
        return 0;
    uint64_t i = big_slot(m, k + 1);
    return m->big[i].key ? m->big[i].count : 0;
}

static int charge(struct refmap *m, uint64_t bytes)
{
    if (m->bytes + bytes > m->budget)
        return qimg_error(-ENOMEM, "refcount check table exceeds the memory budget "
                          "(%" PRIu64 " bytes)", m->budget);
    m->bytes += bytes;
    return 0;
}

/* Twice the slots (at least 64), the entries moved over. */
static int big_grow(struct refmap *m)
{
    uint64_t slots = m->big_slots ? m->big_slots * 2 : 64;
    int r = charge(m, slots * sizeof *m->big);
    if (r < 0)
        return r;
    struct big_count *old = m->big;
    uint64_t old_slots = m->big_slots;
    m->big = qimg_calloc_from_image(slots, sizeof *m->big, "refcount check table");
    if (!m->big) {
        m->big = old;
        m->bytes -= slots * sizeof *m->big;
        return -ENOMEM;
    }
    m->big_slots = slots;
    for (uint64_t i = 0; i < old_slots; i++)
        if (old[i].key)
            m->big[big_slot(m, old[i].key)] = old[i];
    m->bytes -= old_slots * sizeof *m->big;
    free(old);
    return 0;
}

/* An entry once made stays (a count set back below BIG leaves it stale,
 * unseen: the byte says where to look). */
static int big_set(struct refmap *m, uint64_t k, uint64_t v)
{
    uint64_t i = m->big ? big_slot(m, k + 1) : 0;
    if (!m->big || !m->big[i].key) {
        /* a new entry: the table at most half full */
        if (m->big_used + 1 > m->big_slots / 2) {
            int r = big_grow(m);
            if (r < 0)
                return r;
            i = big_slot(m, k + 1);
        }
        m->big[i].key = k + 1;
        m->big_used++;
    }
    m->big[i].count = v;
    return 0;
}

static inline uint64_t refmap_get(const struct refmap *m, uint64_t k)
{
    uint64_t ci = k >> REFMAP_CHUNK_BITS;
    if (ci >= m->nb_chunks || !m->chunks[ci])
        return 0;
    uint8_t v = m->chunks[ci][k & (REFMAP_CHUNK - 1)];
    return v == REFMAP_BIG ? big_get(m, k) : v;
}

/* Grow the chunk table so that cluster k has a place. */
static int refmap_reserve(struct refmap *m, uint64_t k)
{
    uint64_t ci = k >> REFMAP_CHUNK_BITS;
    if (ci >= m->nb_chunks) {
        uint64_t n = ci + 1;
        uint8_t **t = qimg_calloc_from_image(n, sizeof *t, "refcount check table");
        if (!t)
            return -ENOMEM;
        memcpy(t, m->chunks, m->nb_chunks * sizeof *t);
        free(m->chunks);
        m->chunks = t;
        m->nb_chunks = n;
    }
    if (!m->chunks[ci]) {
        int r = charge(m, REFMAP_CHUNK);
        if (r < 0)
            return r;
        m->chunks[ci] = qimg_calloc_from_image(REFMAP_CHUNK, 1, "refcount check table");
        if (!m->chunks[ci]) {
            m->bytes -= REFMAP_CHUNK;
            return -ENOMEM;
        }
    }
    return 0;
}

/* Cluster k (reserved) counts v. */
static inline int refmap_set(struct refmap *m, uint64_t k, uint64_t v)
{
    uint8_t *c = &m->chunks[k >> REFMAP_CHUNK_BITS][k & (REFMAP_CHUNK - 1)];
    if (v < REFMAP_BIG) {
        *c = (uint8_t)v;
        return 0;
    }
    int r = big_set(m, k, v);
    if (r == 0)
        *c = REFMAP_BIG;
    return r;
}

/* True when no counter in [k, k + n) can be non-zero (chunk not allocated). */
static bool refmap_chunk_empty(const struct refmap *m, uint64_t k)
{
    uint64_t ci = k >> REFMAP_CHUNK_BITS;
    return ci >= m->nb_chunks || !m->chunks[ci];
}

/* ====================================================== stored refcounts */

/* A direct-mapped cache of refcount blocks, keyed by refcount table index;
 * the blocks as on disk (zeros past the end of the file).  1 MiB: the
 * comparison reads the blocks in order, and the COPIED checks while
 * counting follow the data clusters, mostly in file order too. */
#define REFBLOCK_CACHE_BYTES (1ull << 20)

struct refblock_cache {
    uint64_t *tags;            /* refcount table index + 1 held by a slot, 0 = empty */
    uint8_t *blocks;           /* nslots blocks, allocated on first use */
    uint32_t nslots;           /* power of two */
};

static int refblock_cache_init(struct refblock_cache *c, const struct qcow2_state *s)
{
    uint64_t want = QIMG_MAX(s->refcount_table_size, 1);
    uint64_t cap = QIMG_MAX(REFBLOCK_CACHE_BYTES / s->cluster_size, 1);
    c->nslots = 1;
    while (c->nslots < want && c->nslots < cap)
        c->nslots <<= 1;
    c->tags = qimg_xcalloc(c->nslots, sizeof *c->tags);
    c->blocks = NULL;
    return 0;
}

static void refblock_cache_free(struct refblock_cache *c)
{
    free(c->blocks);
    free(c->tags);
    memset(c, 0, sizeof *c);
}

/* Repair changed stored refcounts (or the whole table): read again. */
static void refblock_cache_reset(struct refblock_cache *c, const struct qcow2_state *s)
{
    refblock_cache_free(c);
    refblock_cache_init(c, s);
}

struct check_ctx {
    struct qimg_image *img;
    struct qcow2_state *s;
    struct qimg_check_result *res;
    unsigned fix;
    uint64_t file_len;
    struct refmap refs;
    struct refblock_cache refblocks;
    uint32_t refblock_bits;        /* log2(refcount entries per block) */
    bool rebuild;                  /* refcount structures need rebuilding (repair) */
    bool signaled_corruption;      /* qemu reports a broken refblock offset once */
    uint64_t copied_mismatches;    /* found while counting; reported by check_copied */
    bool refcounts_repaired;       /* stored refcounts changed: COPIED flags to look at */
    bool marked_corrupt;           /* read-write: a fatal problem set the corrupt bit */
    uint8_t *l2_buf;               /* a batch of L2 tables */
    uint64_t l2_batch;             /* tables per batch */
    struct qcow2_snaptable_check snaptable;   /* the table as this check read it */
};

/* The refcount block for refcount table index ti: NULL when there is
 * none (all refcounts 0), -EIO in *err when its offset is unaligned. */
static const uint8_t *stored_refblock(struct check_ctx *c, uint64_t ti, int *err)
{
    struct qcow2_state *s = c->s;
    *err = 0;
    if (ti >= s->refcount_table_size)
        return NULL;
    uint64_t off = s->refcount_table[ti] & REFT_OFFSET_MASK;
    if (off == 0)
        return NULL;
    if (!qimg_is_aligned(off, s->cluster_size)) {
        *err = -EIO;
        return NULL;
    }
    struct refblock_cache *rc = &c->refblocks;
    uint32_t slot = (uint32_t)(ti & (rc->nslots - 1));
    if (!rc->blocks) {
        rc->blocks = qimg_alloc_from_image((uint64_t)rc->nslots * s->cluster_size, "refcount block");
        if (!rc->blocks) {
            *err = -ENOMEM;
            return NULL;
        }
    }
    uint8_t *block = rc->blocks + (uint64_t)slot * s->cluster_size;
    if (rc->tags[slot] == ti + 1)
        return block;
    rc->tags[slot] = 0;
    /* an offset beyond what qemu can address fails with EIO, as in qemu */
    int r = qcow2_pread_zero_filled(c->img, UINT64_MAX, block, s->cluster_size, off);
    if (r < 0) {
        *err = r;
        return NULL;
    }
    rc->tags[slot] = ti + 1;
    return block;
}

/* Stored refcount of host cluster k; <0 when it cannot be read. */
static int stored_refcount(struct check_ctx *c, uint64_t k, uint64_t *refcount)
{
    int err;
    const uint8_t *b = stored_refblock(c, k >> c->refblock_bits, &err);
    *refcount = b ? qcow2_refblock_get(c->s, b, k & (c->s->refcount_block_entries - 1)) : 0;
    return err;
}

/* ================================================== step 1: count */

/* One more reference to every cluster of [offset, offset + size).  A range
 * may end less than a cluster past the end of the file (a last cluster
 * written partly); anything further is a corruption. */
static int count_range(struct check_ctx *c, uint64_t offset, uint64_t size)
{
    struct qcow2_state *s = c->s;
    if (size == 0 || (int64_t)size < 0)
        return 0;
    /* qemu takes an offset from 2^63 up (a snapshot's L1 table offset is
     * not masked) as negative: no "exceeding" report, its counter array
     * cannot grow that far and the check fails */
    if ((int64_t)offset < 0) {
        c->res->check_errors++;
        return qimg_error(-ENOMEM, "qcow2 check: reference at offset %#" PRIx64, offset);
    }
    uint64_t end;
    if (!qimg_add_ok(offset, size, &end) || (end >= c->file_len && end - c->file_len >= s->cluster_size)) {
        qimg_check_log("ERROR: counting reference for region exceeding the end of the file by "
                       "one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64, offset, size);
        c->res->corruptions++;
        return 0;
    }
    uint64_t first = offset >> s->cluster_bits, last = (end - 1) >> s->cluster_bits;
    for (uint64_t k = first; k <= last; k++) {
        int r = refmap_reserve(&c->refs, k);
        if (r < 0) {
            /* the CLI prints only strerror: say why here */
            qimg_check_log("qcow2 check: %s", qimg_last_error());
            c->res->check_errors++;
            return r;
        }
        if (k >= c->refs.nb_clusters)
            c->refs.nb_clusters = k + 1;
        uint64_t v = refmap_get(&c->refs, k);
        if (v == c->refs.max) {
            qimg_check_log("ERROR: overflow cluster offset=%#" PRIx64, k << s->cluster_bits);
            qimg_check_log("Use qemu-img amend to increase the refcount entry width or qemu-img "
                           "convert to create a clean copy if the image cannot be opened for writing");
            c->res->corruptions++;
            continue;
        }
        r = refmap_set(&c->refs, k, v + 1);
        if (r < 0) {
            qimg_check_log("qcow2 check: %s", qimg_last_error());
            c->res->check_errors++;
            return r;
        }
    }
    return 0;
}

/* What an L2 entry describes, as the check sees it (extended L2 entries
 * use the bitmap instead of the zero flag). */
enum check_type { CT_UNALLOCATED, CT_ZERO_PLAIN, CT_ZERO_ALLOC, CT_NORMAL, CT_COMPRESSED };

static enum check_type entry_type(const struct qcow2_state *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return CT_COMPRESSED;
    if ((entry & QCOW2_OFLAG_ZERO) && !s->extended_l2)
        return entry & L2E_OFFSET_MASK ? CT_ZERO_ALLOC : CT_ZERO_PLAIN;
    if (!(entry & L2E_OFFSET_MASK)) {
        /* offset 0 is a real offset in an external data file: COPIED tells */
        if (qcow2_has_data_file(s) && (entry & QCOW2_OFLAG_COPIED))
            return CT_NORMAL;
        return CT_UNALLOCATED;
    }
    return CT_NORMAL;
}

/* Does the COPIED flag of an entry disagree with the stored refcount of
 * its cluster?  1 yes, 0 no, -1 when the refcount cannot be read (qemu
 * then skips the entry, for an L1 entry its whole L2 table, silently). */
static int copied_wrong(struct check_ctx *c, uint64_t entry, uint64_t cluster_offset,
                        bool data, uint64_t *refcount)
{
    if (data && qcow2_has_data_file(c->s)) {
        *refcount = 1;
    } else if (stored_refcount(c, cluster_offset >> c->s->cluster_bits, refcount) < 0) {
        qimg_error_clear();
        return -1;
    }
    return (*refcount == 1) != ((entry & QCOW2_OFLAG_COPIED) != 0);
}

struct frag_state { uint64_t next_contiguous; };

static int count_compressed(struct check_ctx *c, uint64_t entry, uint64_t bitmap, uint64_t i,
                            bool active)
{
    struct qcow2_state *s = c->s;
    if (entry & QCOW2_OFLAG_COPIED) {
        qimg_check_log("ERROR: coffset=%#" PRIx64 ": copied flag must never be set for "
                       "compressed clusters", entry & s->cluster_offset_mask);
        entry &= ~QCOW2_OFLAG_COPIED;
        c->res->corruptions++;
    }
    if (qcow2_has_data_file(s)) {
        qimg_check_log("ERROR compressed cluster %" PRIu64 " with data file, entry=%#" PRIx64,
                       i, entry);
        c->res->corruptions++;
        return 0;
    }
    if (bitmap) {
        qimg_check_log("ERROR compressed cluster %" PRIu64 " with non-zero subcluster "
                       "allocation bitmap, entry=%#" PRIx64, i, entry);
        c->res->corruptions++;
        return 0;
    }
    uint64_t coffset, csize;
    qcow2_compressed_range(s, entry, &coffset, &csize);
    int r = count_range(c, coffset, csize);
    if (r < 0)
        return r;
    if (active) {
        /* compressed clusters count as fragmented: neighbours share sectors */
        c->res->allocated_clusters++;
        c->res->compressed_clusters++;
        c->res->fragmented_clusters++;
    }
    return 0;
}

/* -r all: an unaligned preallocated zero cluster becomes a plain zero
 * cluster (its reads give zeros either way); 1 when repaired. */
static int repair_unaligned_zero(struct check_ctx *c, uint64_t l2_offset, uint64_t index)
{
    uint64_t entry = c->s->extended_l2 ? 0 : QCOW2_OFLAG_ZERO;
    int r = qcow2_repair_l2_entry(c->img, l2_offset, index, entry);
    if (r < 0) {
        qimg_check_log("ERROR: Overlap check failed");
        c->res->check_errors++;
        return r;
    }
    c->res->corruptions--;
    c->res->corruptions_fixed++;
    return 1;
}

static int count_allocated(struct check_ctx *c, uint64_t entry, uint64_t bitmap, bool active,
                           struct frag_state *frag, uint64_t l2_offset, uint64_t index)
{
    struct qcow2_state *s = c->s;
    uint64_t offset = entry & L2E_OFFSET_MASK;
    if ((bitmap >> 32) & bitmap) {
        c->res->corruptions++;
        qimg_check_log("ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster "
                       "allocation bitmap", offset);
    }
    if (!qimg_is_aligned(offset, s->cluster_size)) {
        bool contains_data = s->extended_l2 ? (uint32_t)bitmap != 0 : !(entry & QCOW2_OFLAG_ZERO);
        c->res->corruptions++;
        bool fix = !contains_data && (c->fix & QIMG_FIX_ERRORS);
        if (contains_data)
            qimg_check_log("ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; "
                           "L2 entry corrupted.", offset);
        else
            qimg_check_log("%s offset=%" PRIx64 ": Preallocated cluster is not properly "
                           "aligned; L2 entry corrupted.", fix ? "Repairing" : "ERROR", offset);
        if (fix) {
            int r = repair_unaligned_zero(c, l2_offset, index);
            return r < 0 ? r : 0;
        }
    }
    if (active) {
        c->res->allocated_clusters++;
        if (frag->next_contiguous && offset != frag->next_contiguous)
            c->res->fragmented_clusters++;
        frag->next_contiguous = offset + s->cluster_size;
    }
    if (qcow2_has_data_file(s))
        return 0;   /* data clusters live in the other file */
    return count_range(c, offset, s->cluster_size);
}

/* The entries of one L2 table. */
static int count_l2_table(struct check_ctx *c, uint64_t l2_offset, const uint8_t *table,
                          bool active, bool check_copied_flags)
{
    struct qcow2_state *s = c->s;
    struct frag_state frag = { 0 };
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        const uint8_t *p = table + i * s->l2_entry_bytes;
        uint64_t entry = qimg_be64(p);
        uint64_t bitmap = s->extended_l2 ? qimg_be64(p + 8) : 0;
        if (entry == 0 && bitmap == 0)
            continue;
        enum check_type t = entry_type(s, entry);
        if (t != CT_COMPRESSED && (entry & QCOW2_L2E_STD_RESERVED)) {
            qimg_check_log("ERROR found l2 entry with reserved bits set: %" PRIx64, entry);
            c->res->corruptions++;
        }
        int r = 0;
        switch (t) {
        case CT_COMPRESSED:
            r = count_compressed(c, entry, bitmap, i, active);
            break;
        case CT_ZERO_ALLOC:
        case CT_NORMAL: {
            r = count_allocated(c, entry, bitmap, active, &frag, l2_offset, i);
            uint64_t rc;
            if (r == 0 && check_copied_flags &&
                copied_wrong(c, entry, entry & L2E_OFFSET_MASK, true, &rc) > 0)
                c->copied_mismatches++;
            break;
        }
        case CT_ZERO_PLAIN:
            break;
        case CT_UNALLOCATED:
            if ((uint32_t)bitmap) {
                c->res->corruptions++;
                qimg_check_log("ERROR: Unallocated cluster has non-zero subcluster allocation map");
            }
            break;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* One L1 entry and its L2 table (read beforehand into table). */
static int count_l1_entry(struct check_ctx *c, uint32_t l1_index, uint64_t l1_entry,
                          const uint8_t *table, bool active)
{
    struct qcow2_state *s = c->s;
    if (l1_entry & QCOW2_L1E_RESERVED) {
        qimg_check_log("ERROR found L1 entry with reserved bits set: %" PRIx64, l1_entry);
        c->res->corruptions++;
    }
    uint64_t l2_offset = l1_entry & L1E_OFFSET_MASK;
    int r = count_range(c, l2_offset, s->cluster_size);
    if (r < 0)
        return r;
    if (!qimg_is_aligned(l2_offset, s->cluster_size)) {
        qimg_check_log("ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry "
                       "corrupted", l2_offset);
        c->res->corruptions++;
    }
    uint64_t rc;
    int wrong = active && l2_offset ? copied_wrong(c, l1_entry, l2_offset, false, &rc) : -1;
    if (wrong > 0)
        c->copied_mismatches++;
    (void)l1_index;
    return count_l2_table(c, l2_offset, table, active, wrong >= 0);
}

struct l2_item { uint64_t offset; uint8_t *table; };

static int cmp_item_offset(const void *a, const void *b)
{
    const struct l2_item *x = *(const struct l2_item *const *)a;
    const struct l2_item *y = *(const struct l2_item *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Read the L2 tables of a batch: sorted by offset, tables that follow each
 * other on the host in one pread; the same table twice is read once. */
static int read_l2_batch(struct check_ctx *c, struct l2_item *items, size_t n)
{
    uint64_t cs = c->s->cluster_size;
    CLEANUP_FREE struct l2_item **order = qimg_xcalloc(n, sizeof *order);
    for (size_t i = 0; i < n; i++)
        order[i] = &items[i];
    qsort(order, n, sizeof *order, cmp_item_offset);
    size_t slot = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1, tables = 1;
        order[i]->table = c->l2_buf + slot * cs;
        while (j < n) {
            uint64_t prev = order[j - 1]->offset;
            if (order[j]->offset == prev) {
                order[j]->table = order[j - 1]->table;
            } else if (order[j]->offset == prev + cs) {
                order[j]->table = c->l2_buf + (slot + tables) * cs;
                tables++;
            } else {
                break;
            }
            j++;
        }
        int r = qimg_io_pread(c->img->file, order[i]->table, tables * cs, order[i]->offset);
        if (r < 0)
            return r;
        slot += tables;
        i = j;
    }
    return 0;
}

/* An L1 table (the active one or a snapshot's) and everything below it. */
static int count_l1(struct check_ctx *c, uint64_t l1_offset, uint32_t l1_size, bool active)
{
    if (l1_size == 0)
        return 0;
    uint64_t bytes = (uint64_t)l1_size * sizeof(uint64_t);
    int r = count_range(c, l1_offset, bytes);
    if (r < 0)
        return r;
    CLEANUP_FREE uint64_t *l1 = qimg_alloc_from_image(bytes, "L1 table");
    if (!l1) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    /* as qemu: zeros past the end of the file, an error past its largest offset */
    r = qcow2_pread_zero_filled(c->img, c->s->file_size, l1, bytes, l1_offset);
    if (r < 0) {
        qimg_check_log("ERROR: I/O error in check_refcounts_l1");
        c->res->check_errors++;
        return r;
    }
    CLEANUP_FREE struct l2_item *items = qimg_xcalloc(c->l2_batch, sizeof *items);
    CLEANUP_FREE uint32_t *index = qimg_xcalloc(c->l2_batch, sizeof *index);
    uint32_t i = 0;
    while (i < l1_size) {
        /* gather the next batch of non-zero entries, read, then check in order */
        size_t n = 0;
        uint32_t start = i;
        for (; i < l1_size && n < c->l2_batch; i++) {
            uint64_t e = qimg_be64(&l1[i]);
            if (e == 0)
                continue;
            items[n].offset = e & L1E_OFFSET_MASK;
            index[n++] = i;
        }
        r = read_l2_batch(c, items, n);
        if (r < 0) {
            qimg_check_log("ERROR: I/O error in check_refcounts_l2");
            c->res->check_errors++;
            return r;
        }
        (void)start;
        for (size_t k = 0; k < n; k++) {
            r = count_l1_entry(c, index[k], qimg_be64(&l1[index[k]]), items[k].table, active);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

static int count_snapshots(struct check_ctx *c)
{
    struct qcow2_state *s = c->s;
    if (qcow2_has_data_file(s) && s->nb_snapshots) {
        qimg_check_log("ERROR %" PRIu32 " snapshots in image with data file", s->nb_snapshots);
        c->res->corruptions++;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        if (!qimg_is_aligned(sn->l1_table_offset, s->cluster_size)) {
            qimg_check_log("ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not "
                           "cluster aligned; snapshot table entry corrupted",
                           sn->id, sn->name, sn->l1_table_offset);
            c->res->corruptions++;
            continue;
        }
        if (sn->l1_size > MAX_L1_ENTRIES) {
            qimg_check_log("ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 table is too large; "
                           "snapshot table entry corrupted", sn->id, sn->name, sn->l1_size);
            c->res->corruptions++;
            continue;
        }
        int r = count_l1(c, sn->l1_table_offset, sn->l1_size, false);
        if (r < 0)
            return r;
    }
    return count_range(c, s->snapshots_offset, c->snaptable.table_size);
}

static int check_bitmap_entry(uint64_t entry, uint64_t cluster_size)
{
    if (entry & BME_TABLE_RESERVED)
        return -EINVAL;
    uint64_t off = entry & BME_TABLE_OFFSET_MASK;
    if (off && ((entry & BME_TABLE_ALL_ONES) || !qimg_is_aligned(off, cluster_size)))
        return -EINVAL;
    return 0;
}

/* The bitmap directory, each bitmap's table and the clusters it names.
 * A table with a broken entry stops the check (qemu cannot load it). */
static int count_bitmaps(struct check_ctx *c)
{
    struct qcow2_state *s = c->s;
    if (!s->has_bitmaps_ext || s->nb_bitmaps == 0 || !s->bitmaps)
        return 0;
    int r = count_range(c, s->bitmap_directory_offset, s->bitmap_directory_size);
    if (r < 0)
        return r;
    for (uint32_t b = 0; b < s->nb_bitmaps; b++) {
        const struct qcow2_bitmap *bm = &s->bitmaps[b];
        uint64_t bytes = (uint64_t)bm->table_size * sizeof(uint64_t);
        r = count_range(c, bm->table_offset, bytes);
        if (r < 0)
            return r;
        CLEANUP_FREE uint64_t *t = qimg_alloc_from_image(bytes ? bytes : 1, "bitmap table");
        if (!t) {
            c->res->corruptions++;
            return -ENOMEM;
        }
        r = qimg_io_pread(c->img->file, t, bytes, bm->table_offset);
        for (uint32_t i = 0; r == 0 && i < bm->table_size; i++)
            if (check_bitmap_entry(qimg_be64(&t[i]), s->cluster_size) < 0)
                r = qimg_error(-EINVAL, "Could not read bitmap_table table from image for "
                               "bitmap '%s'", bm->name);
        if (r < 0) {
            c->res->corruptions++;
            return r;
        }
        for (uint32_t i = 0; i < bm->table_size; i++) {
            uint64_t off = qimg_be64(&t[i]) & BME_TABLE_OFFSET_MASK;
            if (off == 0)
                continue;
            r = count_range(c, off, s->cluster_size);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* -r all: the file grows to hold a refcount block that lies past its end
 * (the block reads as zeros; the rebuild that follows replaces it). */
static int repair_refblock_outside(struct check_ctx *c, uint64_t offset)
{
    uint64_t end = offset + c->s->cluster_size;
    /* a size from 2^63 up is negative to qemu: refused before the file
     * is asked; a file that cannot grow adds the file layer's report.
     * Either way the refcount structures are rebuilt instead. */
    int r = -EINVAL;
    if (end <= INT64_MAX) {
        r = qcow2_repair_extend_file(c->img, end);
        if (r < 0)
            qimg_check_log(QIMG_CHECK_LOG_REPORT "Could not resize file: %s", strerror(-r));
    }
    if (r < 0) {
        qimg_check_log("ERROR could not resize image: %s", strerror(-r));
        qimg_error_clear();
        c->rebuild = true;
        return r;
    }
    c->file_len = end;
    return 0;
}

/* The refcount blocks themselves: each must be referenced exactly once. */
static int count_refblocks(struct check_ctx *c)
{
    struct qcow2_state *s = c->s;
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t entry = s->refcount_table[i];
        uint64_t offset = entry & REFT_OFFSET_MASK;
        uint64_t cluster = offset >> s->cluster_bits;
        if (entry & QCOW2_REFT_RESERVED) {
            qimg_check_log("ERROR refcount table entry %" PRIu64 " has reserved bits set", i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (!qimg_is_aligned(offset, s->cluster_size)) {
            qimg_check_log("ERROR refcount block %" PRIu64 " is not cluster aligned; refcount "
                           "table entry corrupted", i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (cluster >= c->refs.nb_clusters) {
            c->res->corruptions++;
            bool fix = c->fix & QIMG_FIX_ERRORS;
            qimg_check_log("%s refcount block %" PRIu64 " is outside image",
                           fix ? "Repairing" : "ERROR", i);
            if (!fix || repair_refblock_outside(c, offset) < 0)
                continue;
        }
        if (offset == 0)
            continue;
        int r = count_range(c, offset, s->cluster_size);
        if (r < 0)
            return r;
        uint64_t v = refmap_get(&c->refs, cluster);
        if (v != 1) {
            qimg_check_log("ERROR refcount block %" PRIu64 " refcount=%" PRIu64, i, v);
            c->res->corruptions++;
            c->rebuild = true;
        }
    }
    return 0;
}

static int count_references(struct check_ctx *c)
{
    struct qcow2_state *s = c->s;
    int r = count_range(c, 0, s->cluster_size);             /* header */
    if (r == 0)
        r = count_l1(c, s->l1_table_offset, s->l1_size, true);
    if (r == 0)
        r = count_snapshots(c);
    if (r == 0)
        r = count_range(c, s->refcount_table_offset, s->refcount_table_size * sizeof(uint64_t));
    if (r == 0 && s->crypto_header_length)
        r = count_range(c, s->crypto_header_offset, s->crypto_header_length);
    if (r == 0)
        r = count_bitmaps(c);
    if (r == 0)
        r = count_refblocks(c);
    return r;
}

/* ================================================== step 2: compare */

/* -r: a refcount that is too high (leaks) or too low but not 0 (all) is
 * set to the number of references; qemu says "Repairing" instead. */
static bool repair_mismatch(struct check_ctx *c, unsigned fix, uint64_t k, uint64_t stored,
                            uint64_t counted)
{
    bool leak = stored > counted;
    if (!(fix & (leak ? QIMG_FIX_LEAKS : QIMG_FIX_ERRORS)) || stored == 0)
        return false;
    qimg_check_log("Repairing cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                   k, stored, counted);
    int r = qcow2_repair_refcount(c->img, k, stored, counted);
    if (r < 0) {
        qimg_check_log("ERROR could not repair cluster %" PRIu64 ": %s", k, strerror(-r));
        qimg_error_clear();
        if (leak)
            c->res->leaks++;
        else
            c->res->corruptions++;
        return true;
    }
    c->refcounts_repaired = true;
    if (leak)
        c->res->leaks_fixed++;
    else
        c->res->corruptions_fixed++;
    return true;
}

static void report_mismatch(struct check_ctx *c, uint64_t k, uint64_t stored, uint64_t counted)
{
    if (stored == 0)
        c->rebuild = true;
    qimg_check_log("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                   stored < counted ? "ERROR" : "Leaked", k, stored, counted);
    if (stored < counted)
        c->res->corruptions++;
    else
        c->res->leaks++;
}

/* Clusters whose refcount block cannot be read: each is a check error. */
static void report_unreadable(struct check_ctx *c, uint64_t ti, uint64_t from, uint64_t to, int err)
{
    uint64_t off = c->s->refcount_table[ti] & REFT_OFFSET_MASK;
    if (err == -EIO && !qimg_is_aligned(off, c->s->cluster_size) && !c->signaled_corruption) {
        if (c->img->read_only) {
            qimg_check_log("qcow2: Image is corrupt: Refblock offset %#" PRIx64 " unaligned "
                           "(reftable index: %#" PRIx64 "); further non-fatal corruption "
                           "events will be suppressed", off, ti);
        } else {
            /* read-write, qemu marks the image corrupt and writes no more */
            qimg_check_log("qcow2: Marking image as corrupt: Refblock offset %#" PRIx64
                           " unaligned (reftable index: %#" PRIx64 "); further corruption "
                           "events will be suppressed", off, ti);
            if (qcow2_repair_mark_corrupt(c->img) < 0)
                qimg_error_clear();
            c->marked_corrupt = true;
        }
        c->signaled_corruption = true;
    }
    for (uint64_t k = from; k < to; k++) {
        qimg_check_log("Can't get refcount for cluster %" PRIu64 ": %s", k, strerror(-err));
        c->res->check_errors++;
    }
}

/* Stored against counted for every cluster of the file; *highest gets the
 * last cluster in use by either. */
static void compare_refcounts(struct check_ctx *c, uint64_t *highest, unsigned fix)
{
    struct qcow2_state *s = c->s;
    uint64_t per_block = s->refcount_block_entries;
    uint64_t n = c->refs.nb_clusters;
    *highest = 0;
    for (uint64_t base = 0; base < n; base += per_block) {
        uint64_t end = QIMG_MIN(base + per_block, n);
        uint64_t ti = base >> c->refblock_bits;
        int err;
        const uint8_t *block = stored_refblock(c, ti, &err);
        if (err < 0) {
            qimg_error_clear();
            report_unreadable(c, ti, base, end, err);
            continue;
        }
        for (uint64_t k = base; k < end; k++) {
            if (!block && refmap_chunk_empty(&c->refs, k)) {
                /* nothing stored, nothing counted up to the chunk's end */
                uint64_t next = (k | (REFMAP_CHUNK - 1)) + 1;
                k = QIMG_MIN(next, end) - 1;
                continue;
            }
            uint64_t stored = block ? qcow2_refblock_get(s, block, k - base) : 0;
            uint64_t counted = refmap_get(&c->refs, k);
            if (stored || counted)
                *highest = k;
            if (stored != counted && !repair_mismatch(c, fix, k, stored, counted))
                report_mismatch(c, k, stored, counted);
        }
    }
}

/* ============================================ step 3: COPIED flags */

/* Report the COPIED flags of the active L1 and L2 tables that disagree
 * with the stored refcounts.  The counting pass already found how many
 * there are; this pass (reading the L2 tables again) runs only then, or
 * after a repair changed refcounts.  -r all repairs them; -r leaks only
 * when nothing else is wrong (the refcounts are then known to be right). */
static int check_copied(struct check_ctx *c)
{
    struct qcow2_state *s = c->s;
    struct qimg_check_result *res = c->res;
    if (c->copied_mismatches == 0 && !c->refcounts_repaired)
        return 0;
    bool repair = (c->fix & QIMG_FIX_ERRORS) ||
                  ((c->fix & QIMG_FIX_LEAKS) && !res->check_errors && !res->corruptions &&
                   !res->leaks);
    const char *what = repair ? "Repairing" : "ERROR";
    CLEANUP_FREE uint8_t *table = qimg_alloc_from_image(s->cluster_size, "L2 table");
    if (!table)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l1_entry = s->l1_table[i];
        uint64_t l2_offset = l1_entry & L1E_OFFSET_MASK;
        uint64_t rc;
        if (!l2_offset)
            continue;
        int wrong = copied_wrong(c, l1_entry, l2_offset, false, &rc);
        if (wrong < 0)
            continue;
        if (wrong) {
            qimg_check_log("%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32 " l1_entry=%"
                           PRIx64 " refcount=%" PRIu64, what, i, l1_entry, rc);
            if (repair) {
                /* a failed write stops the check, as in qemu */
                int r = qcow2_repair_l1_entry(c->img, i, rc == 1 ? l1_entry | QCOW2_OFLAG_COPIED
                                              : l1_entry & ~QCOW2_OFLAG_COPIED);
                if (r < 0) {
                    qimg_error_clear();
                    res->check_errors++;
                    return r;
                }
                res->corruptions_fixed++;
            } else {
                res->corruptions++;
            }
        }
        int r = qimg_io_pread(c->img->file, table, s->cluster_size, l2_offset);
        if (r < 0) {
            qimg_check_log("ERROR: Could not read L2 table: %s", strerror(-r));
            res->check_errors++;
            return r;
        }
        bool modified = false;
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint8_t *p = table + j * s->l2_entry_bytes;
            uint64_t entry = qimg_be64(p);
            enum check_type t = entry_type(s, entry);
            if (t != CT_NORMAL && t != CT_ZERO_ALLOC)
                continue;
            if (copied_wrong(c, entry, entry & L2E_OFFSET_MASK, true, &rc) <= 0)
                continue;
            qimg_check_log("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
                           " refcount=%" PRIu64, what, entry, rc);
            if (repair) {
                qimg_put_be64(p, rc == 1 ? entry | QCOW2_OFLAG_COPIED
                                         : entry & ~QCOW2_OFLAG_COPIED);
                modified = true;
                res->corruptions_fixed++;
            } else {
                res->corruptions++;
            }
        }
        if (modified) {
            r = qcow2_repair_overlap_check_snaptable(c->img, l2_offset, s->l2_table_bytes,
                                                     s->snapshots_offset,
                                                     c->snaptable.table_size);
            if (r < 0) {
                qimg_check_log("ERROR: Could not write L2 table; metadata overlap check "
                               "failed: %s", strerror(-r));
                res->check_errors++;
                return r;
            }
            r = qcow2_repair_write_l2(c->img, l2_offset, table);
            if (r < 0) {
                qimg_check_log("ERROR: Could not write L2 table: %s", strerror(-r));
                qimg_error_clear();
                res->check_errors++;
                return r;
            }
        }
    }
    return 0;
}

/* ============================================================ entry */

/* The reference map as the rebuild sees it. */
static uint64_t map_get(void *opaque, uint64_t k)
{
    return refmap_get(&((struct check_ctx *)opaque)->refs, k);
}

static int map_set(void *opaque, uint64_t k, uint64_t v)
{
    struct refmap *m = &((struct check_ctx *)opaque)->refs;
    int r = refmap_reserve(m, k);
    if (r < 0)
        return r;
    if (k >= m->nb_clusters)
        m->nb_clusters = k + 1;
    return refmap_set(m, k, v);
}

static uint64_t map_nb_clusters(void *opaque)
{
    return ((struct check_ctx *)opaque)->refs.nb_clusters;
}

/* The file's length as qemu sees it: in whole 512-byte sectors. */
static int get_file_len(struct check_ctx *c)
{
    int r = qimg_io_get_size(c->img->file, &c->file_len);
    if (r == 0)
        c->file_len = (c->file_len + 511) & ~511ull;
    return r;
}

/* Count every reference into a fresh map, for a file of c->file_len. */
static int count_fresh(struct check_ctx *c)
{
    struct qcow2_state *s = c->s;
    uint64_t nb_clusters = qimg_div_round_up(c->file_len, s->cluster_size);
    if (nb_clusters > MAX_CHECK_CLUSTERS) {
        c->res->check_errors++;
        return qimg_error(-EFBIG, "Image file has too many clusters to check");
    }
    refmap_free(&c->refs);
    int r = refmap_init(&c->refs, nb_clusters, s->refcount_order);
    if (r < 0) {
        c->res->check_errors++;
        return r;
    }
    c->rebuild = false;
    c->copied_mismatches = 0;
    return count_references(c);
}

/* -r all with broken refcount structures: new ones from the counted
 * references, then everything counted again against them; the old
 * structures are leaks now, freed without being reported as such. */
static int rebuild_refcounts(struct check_ctx *c, uint64_t *highest)
{
    struct qimg_check_result *res = c->res, again = { 0 }, counted = { 0 };
    qimg_check_log("Rebuilding refcount structure");
    struct qcow2_refcount_map map = {
        .opaque = c, .get = map_get, .set = map_set, .nb_clusters = map_nb_clusters,
        .snaptable_offset = c->s->snapshots_offset, .snaptable_size = c->snaptable.table_size,
    };
    int r = qcow2_repair_rebuild_refcounts(c->img, &map, c->marked_corrupt);
    if (r < 0) {
        res->check_errors++;
        return r;
    }
    refblock_cache_reset(&c->refblocks, c->s);
    c->refcounts_repaired = true;
    r = get_file_len(c);
    c->res = &again;
    if (r == 0)
        r = count_fresh(c);
    counted = again;
    if (r == 0) {
        compare_refcounts(c, highest, c->fix & QIMG_FIX_LEAKS);
        if (c->rebuild)
            qimg_check_log("ERROR rebuilt refcount structure is still broken");
        r = qcow2_repair_refcounts_flush(c->img);
    }
    c->res = res;
    refblock_cache_reset(&c->refblocks, c->s);
    if (r < 0) {
        res->check_errors++;
        return r;
    }
    /* what the first count found is fixed, but for what counting again
     * still finds (as qemu: what the comparison with the new structures
     * finds counts only as leaks left over) */
    if (res->corruptions > counted.corruptions)
        res->corruptions_fixed += res->corruptions - counted.corruptions;
    res->corruptions = counted.corruptions;
    res->leaks_fixed += res->leaks;
    res->leaks = again.leaks;
    res->check_errors += counted.check_errors;
    return 0;
}

/* -r leaks / -r all after the first comparison (which only reported). */
static int repair_refcounts(struct check_ctx *c, const struct qimg_check_result *before_compare,
                            uint64_t *highest)
{
    if (c->rebuild && (c->fix & QIMG_FIX_ERRORS))
        return rebuild_refcounts(c, highest);
    if (c->rebuild) {
        qimg_check_log("ERROR need to rebuild refcount structures");
        c->res->check_errors++;
        return -EIO;
    }
    if (!c->res->leaks && !c->res->corruptions)
        return 0;
    /* compare again, repairing this time */
    *c->res = *before_compare;
    compare_refcounts(c, highest, c->fix);
    refblock_cache_reset(&c->refblocks, c->s);
    int r = qcow2_repair_refcounts_flush(c->img);
    if (r < 0)
        c->res->check_errors++;
    return r;
}

static int run_check(struct check_ctx *c)
{
    struct qcow2_state *s = c->s;
    int r = get_file_len(c);
    if (r < 0) {
        c->res->check_errors++;
        return r;
    }
    uint64_t nb_clusters = qimg_div_round_up(c->file_len, s->cluster_size);
    if (nb_clusters > MAX_CHECK_CLUSTERS) {
        c->res->check_errors++;
        return qimg_error(-EFBIG, "Image file has too many clusters to check");
    }
    /* open refused sizes that do not round up to 512 */
    uint64_t virtual_bytes = (s->size + 511) & ~511ull;
    c->res->total_clusters = (int64_t)qimg_div_round_up(virtual_bytes, s->cluster_size);
    c->res->has_stats = true;

    r = refmap_init(&c->refs, nb_clusters, s->refcount_order);
    if (r < 0) {
        c->res->check_errors++;
        return r;
    }
    refblock_cache_init(&c->refblocks, s);
    c->refblock_bits = s->cluster_bits + 3 - s->refcount_order;
    c->l2_batch = QIMG_MAX((1ull << 20) / s->cluster_size, 1);
    /* a fixed 1 MiB (or one 2 MiB table), whatever the image says */
    c->l2_buf = qimg_xmalloc(c->l2_batch * s->cluster_size);

    r = qcow2_snaptable_check(c->img, c->fix, &c->snaptable);
    if (r < 0)
        return r;
    r = count_references(c);
    if (r < 0)
        return r;
    uint64_t highest;
    struct qimg_check_result before_compare = *c->res;
    compare_refcounts(c, &highest, 0);
    if (c->fix) {
        r = repair_refcounts(c, &before_compare, &highest);
        if (r < 0)
            return r;
    }
    r = check_copied(c);
    if (r < 0)
        return r;
    /* last, as qemu: the snapshot table written anew */
    r = qcow2_snaptable_check_fix(c->img, c->fix, &c->snaptable);
    if (r < 0)
        return r;
    const struct qimg_check_result *sr = &c->snaptable.res;
    c->res->corruptions += sr->corruptions;
    c->res->corruptions_fixed += sr->corruptions_fixed;
    c->res->check_errors += sr->check_errors;
    c->res->image_end_offset = (int64_t)((highest + 1) << s->cluster_bits);
    return 0;
}

int qcow2_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    struct check_ctx c = {
        .img = img, .s = qcow2_state(img), .res = res, .fix = fix,
    };
    memset(res, 0, sizeof *res);
    pthread_mutex_lock(&img->lock);
    int r = run_check(&c);
    /* a repair that left nothing wrong: the image is clean and consistent */
    if (r == 0 && fix && !res->check_errors && !res->corruptions) {
        r = qcow2_repair_mark_clean(img);
        if (r < 0)
            res->check_errors++;
    }
    pthread_mutex_unlock(&img->lock);
    refmap_free(&c.refs);
    refblock_cache_free(&c.refblocks);
    free(c.l2_buf);
    return r;
}
