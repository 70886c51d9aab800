/* qimg - qcow2 internal snapshots: create, apply (revert to) and delete.
 *
 * A snapshot is a copy of the active L1 table plus an entry in the
 * snapshot table.  An L2 table or data cluster holds one reference for
 * every L1 table that reaches it, so taking a snapshot adds a reference
 * to everything the active L1 reaches, and the COPIED flag (refcount
 * exactly 1) leaves the active tables: the write path then copies shared
 * clusters before writing into them.  After apply and delete the COPIED
 * flags of the active tables are set again wherever the refcount fell
 * back to 1.
 *
 * Crash ordering, so that a crash leaves at worst leaked clusters: the L1
 * copy and the raised refcounts reach the disk before the snapshot table
 * that names the copy; a new table is written before the header points
 * to it, and the old one is freed after.  Apply raises the snapshot's
 * references before the active L1 is overwritten, and drops the old ones
 * after.  Delete takes the entry out of the table before dropping what it
 * referenced.  Clusters that become free are discarded on the host.
 *
 * All of it runs with img->lock held; concurrent guest writes through
 * the same handle are not expected while a snapshot operation runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>

#include "qcow2-snapshot.h"
#include "qcow2-snaptable.h"
#include "qcow2-repair.h"

/* ============================================================ references */

/* A walk over everything an L1 table reaches, changing each refcount by
 * addend (+1 or -1); it stops after limit changes, to undo a walk that
 * failed half-way. */
struct ref_walk {
    int addend;
    bool discard;               /* punch clusters that become free */
    uint64_t limit;
    uint64_t done;
    uint64_t punch_start, punch_count;   /* freed clusters not punched yet */
};

/* Give the host space of the pending run of freed clusters back, in one
 * request (one per cluster is slow on large images). */
static void punch_pending(struct qimg_image *img, struct ref_walk *w)
{
    struct qcow2_state *s = qcow2_state(img);
    if (w->punch_count && img->file->ops->discard)
        img->file->ops->discard(img->file, w->punch_start << s->cluster_bits,
                                w->punch_count << s->cluster_bits);
    w->punch_count = 0;
}

static int note_freed(struct qimg_image *img, struct ref_walk *w, uint64_t cluster)
{
    uint64_t rc;
    int r = qcow2_get_refcount(img, cluster, &rc);
    if (r < 0 || rc != 0)
        return r;
    if (w->punch_count && cluster == w->punch_start + w->punch_count) {
        w->punch_count++;
        return 0;
    }
    punch_pending(img, w);
    w->punch_start = cluster;
    w->punch_count = 1;
    return 0;
}

/* A reference more to a cluster no refcount block covers (an L2 entry
 * pointing far beyond the file): qemu's refcount update makes the block
 * and asks its caller to start again (-EAGAIN), which a snapshot's walk
 * does not do; past what the largest refcount table covers it answers
 * -EFBIG.  Here nothing is made: the walk fails with qemu's code. */
static int check_refblock_exists(struct qimg_image *img, uint64_t cluster)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t ti = cluster / s->refcount_block_entries;
    /* the table alone tells (the block is loaded by the update itself) */
    if (ti < s->refcount_table_size && (s->refcount_table[ti] & ~QCOW2_REFT_RESERVED))
        return 0;
    bool too_far = ti >= s->refcount_table_size &&
                   qimg_div_round_up(cluster, s->refcount_block_entries) >
                   QCOW2_MAX_REFTABLE_BYTES / 8;
    return qimg_error(too_far ? -EFBIG : -EAGAIN, "qcow2: no refcount block for cluster %#"
                      PRIx64, cluster);
}

/* 0 done, 1 the limit was reached, <0 error. */
static int change_ref(struct qimg_image *img, struct ref_walk *w, uint64_t cluster)
{
    if (w->done == w->limit)
        return 1;
    int r = w->addend > 0 ? check_refblock_exists(img, cluster) : 0;
    if (r == 0)
        r = qcow2_update_refcounts(img, cluster, 1, w->addend);
    if (r == -ERANGE)
        r = -EINVAL;            /* a refcount overflow: qemu says EINVAL */
    if (r == 0 && w->addend < 0 && w->discard)
        r = note_freed(img, w, cluster);
    if (r < 0)
        return r;
    w->done++;
    return 0;
}

/* The host clusters an L2 entry holds a reference to: [*first, +*count). */
static void entry_clusters(const struct qcow2_state *s, uint64_t entry, uint64_t *first,
                           uint64_t *count)
{
    *first = *count = 0;
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off, len;
        qcow2_compressed_range(s, entry, &off, &len);
        *first = off >> s->cluster_bits;
        *count = ((off + len - 1) >> s->cluster_bits) - *first + 1;
        return;
    }
    uint64_t off = entry & QCOW2_OFFSET_MASK;
    if (off == 0 || qcow2_has_data_file(s))
        return;                 /* unallocated, plain zeros, or not refcounted */
    *first = off >> s->cluster_bits;
    *count = 1;
}

/* qemu's answer to corrupt metadata met on the way: the image is marked
 * corrupt and broken (qemu ejects its driver: what it changed in memory
 * and had not written yet is never written), and the operation fails
 * with EIO. */
static int __attribute__((format(printf, 2, 3))) corruption(struct qimg_image *img,
                                                            const char *fmt, ...)
{
    struct qcow2_state *s = qcow2_state(img);
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    qimg_check_log("qcow2: Marking image as corrupt: %s; further corruption events will be "
                   "suppressed", msg);
    for (int i = 0; i < QCOW2_REFBLOCK_CACHE; i++) {
        if (s->ws->refblocks[i].dirty)
            s->ws->refblocks[i].offset = 0;
        s->ws->refblocks[i].dirty = false;
    }
    qcow2_l2_cache_drop_dirty(img);
    if (qcow2_repair_mark_corrupt(img) < 0)
        qimg_error_clear();
    s->ws->broken = true;
    return qimg_error(-EIO, "%s", msg);
}

static int check_l2_offset(struct qimg_image *img, uint64_t l2, uint64_t l1i)
{
    if (!qimg_is_aligned(l2, qcow2_state(img)->cluster_size))
        return corruption(img, "L2 table offset %#" PRIx64 " unaligned (L1 index: %#" PRIx64 ")",
                          l2, l1i);
    return 0;
}

/* A standard entry (allocated or zero) must name a whole cluster. */
static int check_data_offset(struct qimg_image *img, uint64_t entry, uint64_t l2, uint64_t i)
{
    uint64_t off = entry & QCOW2_OFFSET_MASK;
    if (entry & QCOW2_OFLAG_COMPRESSED || qimg_is_aligned(off, qcow2_state(img)->cluster_size))
        return 0;
    return corruption(img, "Cluster allocation offset %#" PRIx64 " unaligned (L2 offset: %#"
                      PRIx64 ", L2 index: %#" PRIx64 ")", off, l2, i);
}

static uint64_t with_copied(uint64_t entry, bool copied)
{
    return copied ? entry | QCOW2_OFLAG_COPIED : entry & ~QCOW2_OFLAG_COPIED;
}

/* As qemu's walk does in every table it passes: COPIED on a (standard)
 * entry exactly when its cluster's refcount is now 1. */
static int set_entry_copied(struct qimg_image *img, uint8_t *table, uint64_t l2_offset,
                            uint64_t i)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t *p = table + i * s->l2_entry_bytes;
    uint64_t entry = qimg_be64(p);
    uint64_t off = entry & QCOW2_OFFSET_MASK;
    uint64_t rc = 0;
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return 0;               /* never COPIED */
    if (off && !qcow2_has_data_file(s)) {
        int r = qcow2_get_refcount(img, off >> s->cluster_bits, &rc);
        if (r < 0)
            return r;
    }
    uint64_t ne = with_copied(entry, rc == 1);
    if (ne != entry) {
        qimg_put_be64(p, ne);
        qcow2_l2_cache_mark_dirty(img, l2_offset);
    }
    return 0;
}

static int walk_l2(struct qimg_image *img, struct ref_walk *w, uint64_t l2_offset)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t *table;
    int r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r < 0)
        return r;
    /* the table pointer stays valid: refcount changes do not touch the L2 cache */
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t first, count;
        uint64_t entry = qimg_be64(table + i * s->l2_entry_bytes);
        r = check_data_offset(img, entry, l2_offset, i);
        if (r < 0)
            return r;
        entry_clusters(s, entry, &first, &count);
        for (uint64_t k = 0; k < count; k++) {
            r = change_ref(img, w, first + k);
            if (r != 0)
                return r;
        }
        r = set_entry_copied(img, table, l2_offset, i);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The data clusters of each L2 table, then the table itself. */
static int walk_l1(struct qimg_image *img, struct ref_walk *w, const uint64_t *l1, uint32_t n)
{
    struct qcow2_state *s = qcow2_state(img);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2)
            continue;
        int r = check_l2_offset(img, l2, i);
        if (r == 0)
            r = walk_l2(img, w, l2);
        if (r != 0)
            return r;
        if (w->addend < 0 && w->done < w->limit) {
            uint64_t rc;
            r = qcow2_get_refcount(img, l2 >> s->cluster_bits, &rc);
            if (r < 0)
                return r;
            if (rc == 1)
                qcow2_l2_cache_drop(img, l2);   /* freed now: never write it back */
        }
        r = change_ref(img, w, l2 >> s->cluster_bits);
        if (r != 0)
            return r;
    }
    return 0;
}

/* One more reference to everything l1 reaches, all or nothing. */
static int ref_l1(struct qimg_image *img, const uint64_t *l1, uint32_t n)
{
    struct ref_walk up = { .addend = 1, .limit = UINT64_MAX };
    int r = walk_l1(img, &up, l1, n);
    if (r >= 0 || qcow2_state(img)->ws->broken)
        return r < 0 ? r : 0;
    struct ref_walk undo = { .addend = -1, .limit = up.done };
    char *msg = qimg_strdup(qimg_last_error());
    walk_l1(img, &undo, l1, n);
    qimg_error(r, "%s", msg);
    free(msg);
    return r;
}

/* One reference less to everything l1 reaches; what becomes free is
 * discarded. */
static int unref_l1(struct qimg_image *img, const uint64_t *l1, uint32_t n)
{
    struct ref_walk down = { .addend = -1, .discard = true, .limit = UINT64_MAX };
    int r = walk_l1(img, &down, l1, n);
    punch_pending(img, &down);
    return r < 0 ? r : 0;
}

/* ============================================================ COPIED flags */

static int write_l1(struct qimg_image *img, uint64_t offset, const uint64_t *l1, uint32_t n)
{
    if (n == 0)
        return 0;
    CLEANUP_FREE uint8_t *be = qimg_xmalloc((size_t)n * 8);
    for (uint32_t i = 0; i < n; i++)
        qimg_put_be64(be + 8 * (size_t)i, l1[i]);
    int r = qimg_io_pwrite(img->file, be, (size_t)n * 8, offset);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r < 0 ? qimg_error(r, "Could not write L1 table: %s", strerror(-r)) : 0;
}

/* COPIED exactly where the refcount is 1 in one L2 table (marked dirty). */
static int fix_l2_copied(struct qimg_image *img, uint64_t l2_offset)
{
    struct qcow2_state *s = qcow2_state(img);
    uint8_t *table;
    int r = qcow2_l2_cache_get(img, l2_offset, &table);
    if (r < 0)
        return r;
    bool changed = false;
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint8_t *p = table + i * s->l2_entry_bytes;
        uint64_t entry = qimg_be64(p);
        uint64_t off = entry & QCOW2_OFFSET_MASK;
        r = check_data_offset(img, entry, l2_offset, i);
        if (r < 0)
            return r;
        if ((entry & QCOW2_OFLAG_COMPRESSED) || off == 0 || qcow2_has_data_file(s))
            continue;
        uint64_t rc;
        r = qcow2_get_refcount(img, off >> s->cluster_bits, &rc);
        if (r < 0)
            return r;
        uint64_t ne = with_copied(entry, rc == 1);
        if (ne != entry) {
            qimg_put_be64(p, ne);
            changed = true;
        }
    }
    if (changed)
        qcow2_l2_cache_mark_dirty(img, l2_offset);
    return 0;
}

/* COPIED exactly where the refcount is 1, in an L1 table (in memory) and
 * its L2 tables (written back); *l1_changed when an L1 entry moved. */
static int fix_copied_tables(struct qimg_image *img, uint64_t *l1, uint32_t n, bool *l1_changed)
{
    struct qcow2_state *s = qcow2_state(img);
    *l1_changed = false;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2)
            continue;
        uint64_t rc = 0;
        int r = check_l2_offset(img, l2, i);
        if (r == 0)
            r = qcow2_get_refcount(img, l2 >> s->cluster_bits, &rc);
        if (r == 0)
            r = fix_l2_copied(img, l2);
        if (r < 0)
            return r;
        uint64_t ne = with_copied(l1[i], rc == 1);
        if (ne != l1[i]) {
            l1[i] = ne;
            *l1_changed = true;
        }
    }
    return qcow2_l2_cache_flush(img);
}

/* The same for the active tables, the L1 table written when it changed. */
static int fix_copied(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    bool l1_changed;
    int r = fix_copied_tables(img, s->l1_table, s->l1_size, &l1_changed);
    if (r == 0 && l1_changed)
        r = write_l1(img, s->l1_table_offset, s->l1_table, s->l1_size);
    return r;
}

/* ============================================================ allocation */

/* bytes in one run of contiguous clusters (refcount 1). */
static int alloc_run(struct qimg_image *img, uint64_t bytes, uint64_t *host)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t n = qimg_div_round_up(bytes, s->cluster_size);
    for (;;) {
        uint64_t got;
        int r = qcow2_alloc_clusters(img, n, host, &got);
        if (r < 0)
            return r;
        if (got == n)
            return 0;
        /* a hole too small: give it back and look beyond it */
        r = qcow2_free_clusters(img, *host, got * s->cluster_size, false);
        if (r < 0)
            return r;
        s->ws->free_cluster_index = (*host >> s->cluster_bits) + got;
    }
}

int qcow2_snapshot_l1_check(const struct qcow2_state *s, const struct qcow2_snapshot *sn)
{
    uint64_t bytes = (uint64_t)sn->l1_size * 8;
    if (bytes > QCOW2_MAX_L1_BYTES)
        return qimg_error(-EFBIG, "Snapshot L1 table too large");
    if (!qimg_is_aligned(sn->l1_table_offset, s->cluster_size) ||
        sn->l1_table_offset > (uint64_t)INT64_MAX - bytes)
        return qimg_error(-EINVAL, "Snapshot L1 table offset invalid");
    return 0;
}

int qcow2_snapshot_read_l1(struct qimg_image *img, const struct qcow2_snapshot *sn,
                           uint32_t min_entries, uint64_t **out)
{
    struct qcow2_state *s = qcow2_state(img);
    *out = NULL;
    int r = qcow2_snapshot_l1_check(s, sn);
    if (r < 0)
        return r;
    uint64_t bytes = (uint64_t)sn->l1_size * 8;
    uint64_t *l1 = qimg_calloc_from_image(QIMG_MAX(QIMG_MAX(sn->l1_size, min_entries), 1u), 8,
                                          "L1 table");
    if (!l1)
        return -ENOMEM;
    r = bytes ? qcow2_pread_zero_filled(img, s->file_size, l1, bytes, sn->l1_table_offset) : 0;
    if (r < 0) {
        free(l1);
        return qimg_error(r, "Could not read snapshot L1 table: %s", strerror(-r));
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = qimg_be64(&l1[i]);
    *out = l1;
    return 0;
}

/* The active L1 table grown to entries, in new clusters (the snapshot to
 * apply has a larger one: it holds VM state beyond the disk). */
static int grow_active_l1(struct qimg_image *img, uint32_t entries)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t host;
    int r = alloc_run(img, (uint64_t)entries * 8, &host);
    if (r == 0)
        r = qcow2_refcount_flush(img);
    if (r < 0)
        return r;
    uint64_t *t = qimg_xcalloc(entries, 8);
    memcpy(t, s->l1_table, (size_t)s->l1_size * 8);
    r = write_l1(img, host, t, entries);
    uint8_t hdr[12];
    qimg_put_be32(hdr, entries);
    qimg_put_be64(hdr + 4, host);
    if (r == 0)
        r = qimg_io_pwrite(img->file, hdr, sizeof hdr, QCOW2_HDR_L1_SIZE);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0) {
        free(t);
        return qimg_error(r, "Could not grow the L1 table: %s", strerror(-r));
    }
    uint64_t old_off = s->l1_table_offset, old_bytes = (uint64_t)s->l1_size * 8;
    free(s->l1_table);
    s->l1_table = t;
    s->l1_table_offset = host;
    s->l1_size = entries;
    return old_bytes ? qcow2_free_clusters(img, old_off, old_bytes, false) : 0;
}

/* ========================================================= snapshot table */

static uint32_t written_extra_len(const struct qcow2_snapshot *sn)
{
    return QIMG_MAX(sn->extra_data_size, QCOW2_SNAPSHOT_EXTRA_ICOUNT);
}

static uint64_t entry_len(const struct qcow2_snapshot *sn, uint32_t extra)
{
    return QCOW2_SNAPSHOT_HEADER_LEN + (uint64_t)extra + strlen(sn->id) + strlen(sn->name);
}

/* Bytes of a table: each entry starts 8-aligned, the last one ends
 * unpadded (qemu writes and frees it so).  as_written: with the extra
 * data every entry gets when written, else as stored. */
static uint64_t table_len(const struct qcow2_snapshot *sn, uint32_t n, bool as_written)
{
    uint64_t len = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t extra = as_written ? written_extra_len(&sn[i]) : sn[i].extra_data_size;
        len = ((len + 7) & ~7ull) + entry_len(&sn[i], extra);
    }
    return len;
}

/* Every entry with the version 3 extra data (vm_state_size_large,
 * disk_size, icount); extra bytes beyond those are kept as they were. */
static void encode_table(const struct qcow2_snapshot *sn, uint32_t n, uint8_t *buf)
{
    uint64_t pos = 0;
    for (uint32_t i = 0; i < n; i++, sn++) {
        pos = (pos + 7) & ~7ull;
        uint8_t *h = buf + pos;
        uint32_t extra = written_extra_len(sn);
        size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
        qimg_put_be64(h, sn->l1_table_offset);
        qimg_put_be32(h + 8, sn->l1_size);
        qimg_put_be16(h + 12, (uint16_t)id_len);
        qimg_put_be16(h + 14, (uint16_t)name_len);
        qimg_put_be32(h + 16, sn->date_sec);
        qimg_put_be32(h + 20, sn->date_nsec);
        qimg_put_be64(h + 24, sn->vm_clock_nsec);
        /* the old 32-bit field: 0 when the size does not fit (as qemu) */
        qimg_put_be32(h + 32, sn->vm_state_size > UINT32_MAX ? 0 : (uint32_t)sn->vm_state_size);
        qimg_put_be32(h + 36, extra);
        uint8_t *e = h + QCOW2_SNAPSHOT_HEADER_LEN;
        memcpy(e, sn->extra_data, sn->extra_data_size);
        qimg_put_be64(e, sn->vm_state_size);
        qimg_put_be64(e + 8, sn->disk_size);
        qimg_put_be64(e + 16, (uint64_t)sn->icount);
        memcpy(e + extra, sn->id, id_len);
        memcpy(e + extra + id_len, sn->name, name_len);
        pos += entry_len(sn, extra);
    }
}

/* In memory as on disk after encode_table. */
static void upgrade_extra(struct qcow2_snapshot *sn)
{
    uint32_t extra = written_extra_len(sn);
    if (extra != sn->extra_data_size) {
        sn->extra_data = qimg_xrealloc(sn->extra_data, extra);
        memset(sn->extra_data + sn->extra_data_size, 0, extra - sn->extra_data_size);
        sn->extra_data_size = extra;
    }
    qimg_put_be64(sn->extra_data, sn->vm_state_size);
    qimg_put_be64(sn->extra_data + 8, sn->disk_size);
    qimg_put_be64(sn->extra_data + 16, (uint64_t)sn->icount);
}

/* qemu's qcow2_free_clusters: a failure is printed, not returned (the
 * clusters leak).  eio_as_einval: what qimg answers with EIO for a
 * missing refcount block, qemu's check repair answers with EINVAL. */
static void free_or_log(struct qimg_image *img, uint64_t offset, uint64_t bytes, bool eio_as_einval)
{
    int r = qcow2_free_clusters(img, offset, bytes, true);
    if (r < 0) {
        qimg_check_log("qcow2_free_clusters failed: %s",
                       strerror(r == -EIO && eio_as_einval ? EINVAL : -r));
        qimg_error_clear();
    }
}

/* Write snaps[0..n) as the new table in new clusters, point the header
 * to it, free the old one (old_len bytes: a failure is only logged, as
 * qemu does).  s->snapshots is not touched.  for_check: qemu's check
 * repair (see free_or_log and the overlap check below). */
static int write_table_from(struct qimg_image *img, struct qcow2_snapshot *snaps, uint32_t n,
                            uint64_t old_len, bool for_check)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t old_off = s->snapshots_offset;
    uint64_t len = table_len(snaps, n, true);
    uint64_t off = 0;
    int r = 0;
    if (len > QCOW2_MAX_SNAPSHOT_TABLE)
        return qimg_error(-EFBIG, "Snapshot table too large");
    if (n == 0)   /* qemu allocates the empty table too: its event shows */
        qimg_io_event(img->file, QIMG_EV_CLUSTER_ALLOC);
    if (n > 0) {
        CLEANUP_FREE uint8_t *buf = qimg_xcalloc(1, len);
        r = alloc_run(img, len, &off);
        if (r == 0)
            r = qcow2_refcount_flush(img);
        /* qemu writes the entries one by one: the padding between them
         * keeps what the clusters held */
        if (r == 0)
            r = qcow2_pread_zero_filled(img, s->file_size, buf, len, off);
        if (r == 0)
            encode_table(snaps, n, buf);
        /* a repair may have freed clusters of the old table as leaks:
         * qemu refuses to write over them */
        if (r == 0 && for_check)
            r = qcow2_repair_overlap_check_snaptable(img, off, len, old_off, old_len);
        if (r == 0)
            r = qimg_io_pwrite(img->file, buf, len, off);
        if (r == 0)
            r = qimg_io_flush(img->file);
        if (r < 0)
            return qimg_error(r, "Could not write the snapshot table: %s", strerror(-r));
    }
    uint8_t hdr[12];
    qimg_put_be32(hdr, n);
    qimg_put_be64(hdr + 4, off);
    r = qimg_io_pwrite(img->file, hdr, sizeof hdr, QCOW2_HDR_NB_SNAPSHOTS);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        return qimg_error(r, "Could not update qcow2 header: %s", strerror(-r));
    for (uint32_t i = 0; i < n; i++)
        upgrade_extra(&snaps[i]);
    s->snapshots_offset = off;
    if (!old_off || !old_len)
        return 0;
    free_or_log(img, old_off, old_len, for_check);
    return 0;
}

static int write_table(struct qimg_image *img, struct qcow2_snapshot *snaps, uint32_t n)
{
    struct qcow2_state *s = qcow2_state(img);
    return write_table_from(img, snaps, n, table_len(s->snapshots, s->nb_snapshots, false), false);
}

int qcow2_snapshot_write_table(struct qimg_image *img)
{
    struct qcow2_state *s = qcow2_state(img);
    return write_table(img, s->snapshots, s->nb_snapshots);
}

int qcow2_snapshot_rewrite_table(struct qimg_image *img, uint64_t old_size)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = write_table_from(img, s->snapshots, s->nb_snapshots, old_size, true);
    if (r == 0)
        r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

static void free_snapshot(struct qcow2_snapshot *sn)
{
    free(sn->id);
    free(sn->name);
    free(sn->extra_data);
}

/* ================================================================ common */

static int check_writable(const struct qcow2_state *s)
{
    if (!s->ws)
        return qimg_error(-EACCES, "qcow2: image is read-only");
    if ((s->incompatible_features & QCOW2_INCOMPAT_DIRTY) && !s->ws->marked_dirty)
        return qimg_error(-EACCES, "qcow2: the image was not closed cleanly and its refcounts "
                          "must be rebuilt first (run 'qemu-img check -r all')");
    return 0;
}

/* The next id: one more than the largest numeric id in use (as qemu). */
static char *new_id(const struct qcow2_state *s)
{
    unsigned long max = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        unsigned long v = strtoul(s->snapshots[i].id, NULL, 10);
        if (v > max)
            max = v;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%lu", max + 1);
    return qimg_strdup(buf);
}

/* ================================================================ create */

static int create_locked(struct qimg_image *img, struct qcow2_snapshot *sn)
{
    struct qcow2_state *s = qcow2_state(img);
    uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
    int r = 0;
    if (l1_bytes) {
        /* (its refcount reaches the disk with the walk's, as in qemu) */
        r = alloc_run(img, l1_bytes, &sn->l1_table_offset);
        if (r == 0)
            r = write_l1(img, sn->l1_table_offset, s->l1_table, s->l1_size);
        if (r < 0)
            return r;
    }
    r = ref_l1(img, s->l1_table, s->l1_size);
    if (r < 0 && s->ws->broken)
        return r;
    if (r < 0) {
        /* nothing else changed: the copy goes too */
        if (l1_bytes)
            qcow2_free_clusters(img, sn->l1_table_offset, l1_bytes, true);
        qcow2_refcount_flush(img);
        return r;
    }
    r = qcow2_flush_locked(img);     /* each walk ends so in qemu */
    if (r == 0)
        r = fix_copied(img);          /* every refcount is 2 or more: COPIED goes */
    if (r < 0)
        return r;
    struct qcow2_snapshot *arr = qimg_xcalloc((size_t)s->nb_snapshots + 1, sizeof *arr);
    if (s->nb_snapshots)
        memcpy(arr, s->snapshots, s->nb_snapshots * sizeof *arr);
    arr[s->nb_snapshots] = *sn;
    r = write_table(img, arr, s->nb_snapshots + 1);
    if (r < 0) {
        free(arr);
        return r;
    }
    *sn = arr[s->nb_snapshots];       /* upgraded extra data */
    free(s->snapshots);
    s->snapshots = arr;
    s->nb_snapshots++;
    return 0;
}

int qcow2_snapshot_create(struct qimg_image *img, const char *name)
{
    struct qcow2_state *s = qcow2_state(img);
    if (qcow2_has_data_file(s))
        return qimg_error(-ENOTSUP, "qcow2: internal snapshots are not supported with an "
                          "external data file");
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS)
        return qimg_error(-EFBIG, "qcow2: too many snapshots");
    if (strlen(name) > UINT16_MAX)
        return qimg_error(-EINVAL, "qcow2: snapshot name too long");
    int r = check_writable(s);
    if (r == 0)
        r = qcow2_write_flush(img);
    if (r < 0)
        return r;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct qcow2_snapshot sn = {
        .l1_size = s->l1_size,
        .date_sec = (uint32_t)tv.tv_sec,
        .date_nsec = (uint32_t)tv.tv_usec * 1000,
        .disk_size = s->size,
        .icount = 0,                  /* what qemu-img records */
        .extra_data_size = QCOW2_SNAPSHOT_EXTRA_ICOUNT,
    };
    sn.extra_data = qimg_xcalloc(1, QCOW2_SNAPSHOT_EXTRA_ICOUNT);
    sn.name = qimg_strdup(name);
    pthread_mutex_lock(&img->lock);
    sn.id = new_id(s);
    r = create_locked(img, &sn);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        free_snapshot(&sn);
    return r;
}

/* ================================================================= apply */

/* By id first, then by name (qemu's order for apply). */
static int find_by_id_or_name(const struct qcow2_state *s, const char *key)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (strcmp(s->snapshots[i].id, key) == 0)
            return (int)i;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (strcmp(s->snapshots[i].name, key) == 0)
            return (int)i;
    return -1;
}

static int apply_locked(struct qimg_image *img, const struct qcow2_snapshot *sn)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = 0;
    if (sn->l1_size > s->l1_size)
        r = grow_active_l1(img, sn->l1_size);
    uint64_t *l1 = NULL;
    if (r == 0)
        r = qcow2_snapshot_read_l1(img, sn, s->l1_size, &l1);
    if (r < 0)
        return r;
    r = ref_l1(img, l1, s->l1_size);
    if (r == 0)
        r = qcow2_flush_locked(img);
    /* the snapshot's tables are shared from now on: no COPIED flag may
     * reach the active L1 (or stay in its L2 tables) before the switch */
    bool changed;
    if (r == 0)
        r = fix_copied_tables(img, l1, s->l1_size, &changed);
    /* qemu's walk writes the snapshot's own table back with those flags */
    if (r == 0 && changed)
        r = write_l1(img, sn->l1_table_offset, l1, sn->l1_size);
    if (r == 0)
        r = write_l1(img, s->l1_table_offset, l1, s->l1_size);
    if (r < 0) {
        free(l1);
        return r;
    }
    uint64_t *old = s->l1_table;
    s->l1_table = l1;
    s->ws->free_byte_offset = 0;      /* its cluster may be freed now */
    r = unref_l1(img, old, s->l1_size);
    free(old);
    if (r == 0)
        r = qcow2_flush_locked(img);
    if (r == 0)
        r = fix_copied(img);
    return r;
}

int qcow2_snapshot_apply(struct qimg_image *img, const char *id_or_name)
{
    struct qcow2_state *s = qcow2_state(img);
    if (qcow2_has_data_file(s))
        return qimg_error(-ENOTSUP, "qcow2: internal snapshots are not supported with an "
                          "external data file");
    int r = check_writable(s);
    if (r < 0)
        return r;
    int i = find_by_id_or_name(s, id_or_name);
    if (i < 0)
        return qimg_error(-ENOENT, "snapshot not found");
    /* before anything changes; qemu reports it on a line of its own and
     * fails with the code alone */
    r = qcow2_snapshot_l1_check(s, &s->snapshots[i]);
    if (r < 0) {
        qimg_check_log(QIMG_CHECK_LOG_REPORT "%s", qimg_last_error());
        return r;
    }
    /* the disk takes the size it had when the snapshot was taken */
    uint64_t disk_size = s->snapshots[i].disk_size;
    if (disk_size != s->size && (r = qcow2_resize(img, disk_size, NULL, true)) < 0)
        return r;
    r = qcow2_write_flush(img);
    if (r < 0)
        return r;
    pthread_mutex_lock(&img->lock);
    r = apply_locked(img, &s->snapshots[i]);
    if (r == 0)
        r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ============================================================ load_tmp */

/* id and name both given: both must match; one given: that one. */
static int find_by_id_and_name(const struct qcow2_state *s, const char *id, const char *name)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snapshots[i];
        if ((!id || strcmp(sn->id, id) == 0) && (!name || strcmp(sn->name, name) == 0))
            return (int)i;
    }
    return -1;
}

/* The snapshot's L1 table replaces the active one in memory only: reads
 * go through it, the size stays the active one (qemu-img does the same),
 * and guest offsets beyond the snapshot's table read as unallocated.
 * Like qemu, a table past the end of the file reads as zeros. */
int qcow2_snapshot_load_tmp(struct qimg_image *img, const char *id, const char *name)
{
    struct qcow2_state *s = qcow2_state(img);
    int i = find_by_id_and_name(s, id, name);
    if (i < 0)
        return qimg_error(-ENOENT, "Can't find snapshot");
    const struct qcow2_snapshot *sn = &s->snapshots[i];
    int r = qcow2_snapshot_l1_check(s, sn);
    if (r < 0)
        return r;
    uint64_t *l1;
    r = qcow2_snapshot_read_l1(img, sn, 0, &l1);
    if (r < 0)
        return qimg_error(r, "Failed to read l1 table for snapshot");
    pthread_mutex_lock(&img->lock);
    free(s->l1_table);
    s->l1_table = l1;
    s->l1_size = sn->l1_size;
    s->l1_table_offset = sn->l1_table_offset;
    pthread_mutex_unlock(&img->lock);
    return 0;
}

/* ================================================================ delete */

/* In qemu's order and with its messages: the entry leaves the table, then
 * what the snapshot referenced goes (its L1 table read from disk then),
 * then the L1 table itself, then the COPIED flags are set again. */
static int delete_locked(struct qimg_image *img, uint32_t idx)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qcow2_snapshot sn = s->snapshots[idx];
    uint32_t n = s->nb_snapshots - 1;
    struct qcow2_snapshot *arr = qimg_xcalloc(QIMG_MAX(n, 1u), sizeof *arr);
    memcpy(arr, s->snapshots, idx * sizeof *arr);
    memcpy(arr + idx, s->snapshots + idx + 1, (n - idx) * sizeof *arr);
    int r = write_table(img, arr, n);
    if (r < 0) {
        free(arr);
        return qimg_error(r, "Failed to remove snapshot from snapshot list: %s", strerror(-r));
    }
    free(s->snapshots);
    s->snapshots = arr;
    s->nb_snapshots = n;
    /* out of the table: what only the snapshot held goes */
    s->ws->free_byte_offset = 0;      /* its cluster may be freed now */
    uint64_t *l1;
    r = qcow2_snapshot_read_l1(img, &sn, 0, &l1);
    if (r == 0) {
        r = unref_l1(img, l1, sn.l1_size);
        free(l1);
    }
    if (r == 0)
        r = qcow2_flush_locked(img);
    if (r < 0) {
        free_snapshot(&sn);
        return qimg_error(r, "Failed to free the cluster and L1 table: %s", strerror(-r));
    }
    if (sn.l1_size)
        free_or_log(img, sn.l1_table_offset, (uint64_t)sn.l1_size * 8, false);
    free_snapshot(&sn);
    r = fix_copied(img);
    if (r < 0)
        return qimg_error(r, "Failed to update snapshot status in disk: %s", strerror(-r));
    return 0;
}

int qcow2_snapshot_delete(struct qimg_image *img, const char *id, const char *name)
{
    struct qcow2_state *s = qcow2_state(img);
    int r = check_writable(s);
    if (r < 0)
        return r;
    uint32_t idx;
    for (idx = 0; idx < s->nb_snapshots; idx++) {
        const struct qcow2_snapshot *sn = &s->snapshots[idx];
        if ((!id || strcmp(sn->id, id) == 0) && (!name || strcmp(sn->name, name) == 0))
            break;
    }
    if (idx == s->nb_snapshots)
        return qimg_error(-ENOENT, "snapshot not found");
    r = qcow2_snapshot_l1_check(s, &s->snapshots[idx]);
    if (r == 0)
        r = qcow2_write_flush(img);
    if (r < 0)
        return r;
    pthread_mutex_lock(&img->lock);
    r = delete_locked(img, idx);
    if (r == 0)
        r = qcow2_refcount_flush(img);
    if (r == 0)
        r = qimg_io_flush(img->file);
    pthread_mutex_unlock(&img->lock);
    return r;
}
