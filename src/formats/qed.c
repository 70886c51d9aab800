/* qimg - QED, the QEMU Enhanced Disk format.
 *
 * Layout (all little-endian), written from qemu's docs/interop/qed_spec.txt:
 *   0  magic            "QED\0"
 *   4  cluster_size     bytes: a power of two from 4 KiB to 64 MiB
 *   8  table_size       clusters per L1 or L2 table: a power of two, 1 to 16
 *  12  header_size      clusters before the first regular cluster
 *  16  features         1 backing file, 2 needs a check, 4 backing file is raw
 *  24  compat_features, 32 autoclear_features (none defined)
 *  40  l1_table_offset  bytes, cluster-aligned
 *  48  image_size       guest bytes, a multiple of 512
 *  56  backing_filename_offset, 60 backing_filename_size: the name (not
 *                       NUL-terminated) inside the header clusters
 * A table holds table_size * cluster_size / 8 entries; a guest offset is
 * L1 index | L2 index | byte in the cluster.  An L1 entry of 0 is an L2
 * table not allocated; an L2 entry of 0 a cluster not allocated (read from
 * the backing file), 1 a cluster that reads as zeros.  New clusters and
 * tables go at the end of the file, whose length (rounded down to a
 * cluster) is where the next one starts.  "Needs a check" is set while
 * allocating writes run without a backing file and cleared at close.
 */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"

#define QED_MAGIC            0x00444551u        /* "QED\0" read little-endian */
#define QED_HEADER_SIZE      64
#define QED_F_BACKING_FILE   0x1ull
#define QED_F_NEED_CHECK     0x2ull
#define QED_F_BACKING_RAW    0x4ull
#define QED_FEATURES_KNOWN   (QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_RAW)
#define QED_MIN_CLUSTER      4096u
#define QED_MAX_CLUSTER      (64u << 20)
#define QED_DEFAULT_CLUSTER  65536u
#define QED_MIN_TABLE        1u
#define QED_MAX_TABLE        16u
#define QED_DEFAULT_TABLE    4u
#define QED_ZERO_CLUSTER     1ull
#define QED_BACKING_NAME_MAX 4096       /* qemu's limit for a backing name */
#define QED_L2_CACHE_BYTES   (32ull << 20)
#define QED_L2_CACHE_MAX     64
#define SECTOR               512u

enum {
    OFF_CLUSTER_SIZE = 4, OFF_TABLE_SIZE = 8, OFF_HEADER_SIZE = 12, OFF_FEATURES = 16,
    OFF_COMPAT = 24, OFF_AUTOCLEAR = 32, OFF_L1 = 40, OFF_IMAGE_SIZE = 48,
    OFF_BACKING_OFF = 56, OFF_BACKING_LEN = 60,
};

static const struct qimg_opt_desc qed_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "backing_file", QIMG_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Image format of the base image", NULL },
    { "cluster_size", QIMG_OPT_SIZE, "Cluster size (in bytes)", "65536" },
    { "table_size", QIMG_OPT_SIZE, "L1/L2 table size (in clusters)", NULL },
    { NULL, 0, NULL, NULL },
};

struct qed_l2 {
    uint64_t off;             /* 0: a free slot */
    uint8_t *table;           /* as on disk */
    uint64_t used;            /* LRU stamp */
};

struct qed_state {
    uint8_t header[QED_HEADER_SIZE];   /* as on disk, kept up to date */
    uint32_t cluster_size, table_size, header_clusters;
    unsigned cluster_bits, l1_shift;   /* guest offset >> l1_shift = L1 index */
    uint64_t nelems;                   /* entries per table */
    uint64_t table_bytes;
    uint64_t image_size;
    uint8_t *l1;                       /* as on disk */
    uint64_t file_end;                 /* the next cluster allocated */
    struct qed_l2 *cache;
    size_t cache_slots;
    uint64_t clock;
    bool writable;
};

static struct qed_state *state(struct qimg_image *img) { return img->opaque; }

static uint64_t features(const struct qed_state *s) { return qimg_le64(s->header + OFF_FEATURES); }

static uint64_t entry(const uint8_t *table, uint64_t i) { return qimg_le64(table + 8 * i); }

static int qed_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    return len >= QED_HEADER_SIZE && qimg_le32(buf) == QED_MAGIC ? 100 : 0;
}

/* ------------------------------------------------------------ the header */

static bool cluster_size_ok(uint64_t cs)
{
    return cs >= QED_MIN_CLUSTER && cs <= QED_MAX_CLUSTER && qimg_is_pow2(cs);
}

static bool table_size_ok(uint64_t ts)
{
    return ts >= QED_MIN_TABLE && ts <= QED_MAX_TABLE && qimg_is_pow2(ts);
}

/* The largest image the tables can map, computed as qemu computes it: in
 * 64-bit arithmetic that wraps (to 0 for the largest clusters and tables,
 * which then take no image at all). */
static uint64_t max_image_size(uint32_t cs, uint32_t ts)
{
    uint64_t entries = (uint64_t)(uint32_t)(cs * ts) / 8;
    return entries * cs * entries;
}

static bool image_size_ok(uint64_t size, uint32_t cs, uint32_t ts)
{
    return size % SECTOR == 0 && size <= max_image_size(cs, ts);
}

/* A data cluster or table cluster: aligned, past the header, inside the file. */
static bool cluster_offset_ok(const struct qed_state *s, uint64_t off)
{
    return (off & (s->cluster_size - 1)) == 0 &&
           off >= (uint64_t)s->header_clusters * s->cluster_size && off < s->file_end;
}

/* A whole table inside the file.  qemu's test of its last cluster refuses
 * a one-cluster table (its last cluster is its first), so no qemu opens an
 * image made with table_size=1; we refuse it with qemu's message too. */
static bool table_offset_ok(const struct qed_state *s, uint64_t off)
{
    uint64_t last = off + (uint64_t)(s->table_size - 1) * s->cluster_size;
    if (last <= off)
        return false;
    return cluster_offset_ok(s, off) && cluster_offset_ok(s, last);
}

/* The header's fields, checked in qemu's order with its messages. */
static int parse_header(struct qed_state *s, uint64_t file_size)
{
    const uint8_t *h = s->header;
    if (qimg_le32(h) != QED_MAGIC)
        return qimg_error(-EINVAL, "Image not in QED format");
    uint64_t unknown = qimg_le64(h + OFF_FEATURES) & ~QED_FEATURES_KNOWN;
    if (unknown)
        return qimg_error(-ENOTSUP, "Unsupported QED features: %" PRIx64, unknown);
    s->cluster_size = qimg_le32(h + OFF_CLUSTER_SIZE);
    if (!cluster_size_ok(s->cluster_size))
        return qimg_error(-EINVAL, "QED cluster size is invalid");
    s->file_end = qimg_round_down(file_size, s->cluster_size);
    s->table_size = qimg_le32(h + OFF_TABLE_SIZE);
    if (!table_size_ok(s->table_size))
        return qimg_error(-EINVAL, "QED table size is invalid");
    s->image_size = qimg_le64(h + OFF_IMAGE_SIZE);
    if (!image_size_ok(s->image_size, s->cluster_size, s->table_size))
        return qimg_error(-EINVAL, "QED image size is invalid");
    s->header_clusters = qimg_le32(h + OFF_HEADER_SIZE);
    if (!table_offset_ok(s, qimg_le64(h + OFF_L1)))
        return qimg_error(-EINVAL, "QED table offset is invalid");
    s->table_bytes = (uint64_t)s->cluster_size * s->table_size;
    s->nelems = s->table_bytes / 8;
    s->cluster_bits = (unsigned)__builtin_ctzll(s->cluster_size);
    s->l1_shift = s->cluster_bits + (unsigned)__builtin_ctzll(s->nelems);
    if (s->header_clusters > UINT32_MAX / s->cluster_size)
        return qimg_error(-EINVAL, "QED header size is too large");
    return 0;
}

static int read_backing_name(struct qimg_image *img, struct qed_state *s)
{
    if (!(features(s) & QED_F_BACKING_FILE))
        return 0;
    uint64_t off = qimg_le32(s->header + OFF_BACKING_OFF);
    uint64_t len = qimg_le32(s->header + OFF_BACKING_LEN);
    if (off + len > (uint64_t)s->cluster_size * s->header_clusters)
        return qimg_error(-EINVAL, "QED backing filename offset is invalid");
    if (len >= QED_BACKING_NAME_MAX)
        return qimg_error(-EINVAL, "Failed to read backing filename");
    char name[QED_BACKING_NAME_MAX];
    int r = qimg_io_pread(img->file, name, len, off);
    if (r < 0)
        return qimg_error(r, "Failed to read backing filename");
    name[len] = '\0';
    if (name[0])
        img->backing_file = qimg_strdup(name);
    if (name[0] && (features(s) & QED_F_BACKING_RAW))
        img->backing_fmt = qimg_strdup("raw");
    return 0;
}

/* qemu writes the 64-byte header in place and leaves what follows it. */
static int write_header(struct qimg_image *img)
{
    return qimg_io_pwrite(img->file, state(img)->header, QED_HEADER_SIZE, 0);
}

static int set_features(struct qimg_image *img, uint64_t f)
{
    struct qed_state *s = state(img);
    uint64_t old = features(s);
    qimg_put_le64(s->header + OFF_FEATURES, f);
    int r = write_header(img);
    if (r < 0)
        qimg_put_le64(s->header + OFF_FEATURES, old);
    return r;
}

/* ------------------------------------------------------------ L2 tables */

/* The L2 table at off, read through a small LRU cache (under img->lock).
 * The pointer stays valid until the next call. */
static int load_l2(struct qimg_image *img, uint64_t off, uint8_t **table)
{
    struct qed_state *s = state(img);
    struct qed_l2 *victim = &s->cache[0];
    for (size_t i = 0; i < s->cache_slots; i++) {
        struct qed_l2 *e = &s->cache[i];
        if (e->off == off) {
            e->used = ++s->clock;
            *table = e->table;
            return 0;
        }
        if (e->used < victim->used)
            victim = e;
    }
    if (!victim->table) {
        victim->table = qimg_alloc_from_image(s->table_bytes, "QED L2 table");
        if (!victim->table)
            return -ENOMEM;
    }
    victim->off = 0;
    qimg_io_event(img->file, QIMG_EV_L2_LOAD);
    int r = qimg_io_pread(img->file, victim->table, s->table_bytes, off);
    if (r < 0)
        return r;
    victim->off = off;
    victim->used = ++s->clock;
    *table = victim->table;
    return 0;
}

/* A cache slot for a new table at off (zeroed), written by the caller. */
static int new_l2(struct qimg_image *img, uint64_t off, uint8_t **table)
{
    struct qed_state *s = state(img);
    struct qed_l2 *victim = &s->cache[0];
    for (size_t i = 1; i < s->cache_slots; i++)
        if (s->cache[i].used < victim->used)
            victim = &s->cache[i];
    if (!victim->table) {
        victim->table = qimg_alloc_from_image(s->table_bytes, "QED L2 table");
        if (!victim->table)
            return -ENOMEM;
    }
    memset(victim->table, 0, s->table_bytes);
    victim->off = off;
    victim->used = ++s->clock;
    *table = victim->table;
    return 0;
}

static void drop_l2_cache(struct qed_state *s)
{
    for (size_t i = 0; i < s->cache_slots; i++)
        s->cache[i].off = 0;
}

/* Write entries [first, first + n) of a table at table_off, as whole
 * sectors of it. */
static int write_entries(struct qimg_image *img, uint64_t table_off, const uint8_t *table,
                         uint64_t first, uint64_t n)
{
    struct qed_state *s = state(img);
    uint64_t start = qimg_round_down(first * 8, SECTOR);
    uint64_t end = QIMG_MIN(qimg_div_round_up((first + n) * 8, SECTOR) * SECTOR, s->table_bytes);
    return qimg_io_pwrite(img->file, table + start, end - start, table_off + start);
}

/* ------------------------------------------------------------ mapping */

enum run_kind { RUN_UNALLOC, RUN_ZERO, RUN_DATA };

/* One run of guest clusters that read alike, inside one L2 table. */
struct qed_run {
    enum run_kind kind;
    bool no_l2;               /* the whole L2 table is missing */
    uint64_t len;             /* bytes from the guest offset asked */
    uint64_t host;            /* RUN_DATA: host offset of that guest offset */
    uint64_t l2_off;          /* the L2 table (0 with no_l2) */
    uint64_t index;           /* entry of the first cluster in it */
};

/* From guest offset off (at most len bytes): the run it starts (under
 * img->lock).  A table or data offset outside the file is -EINVAL, as in
 * qemu. */
static int find_run(struct qimg_image *img, uint64_t off, uint64_t len, struct qed_run *run)
{
    struct qed_state *s = state(img);
    uint64_t span = 1ull << s->l1_shift;
    len = QIMG_MIN(len, span - (off & (span - 1)));
    uint64_t l1_index = off >> s->l1_shift;
    memset(run, 0, sizeof *run);
    run->len = len;
    if (l1_index >= s->nelems)
        return qimg_error(-EINVAL, "QED offset %" PRIu64 " is past the L1 table", off);
    uint64_t l2_off = entry(s->l1, l1_index);
    if (l2_off == 0) {
        run->kind = RUN_UNALLOC;
        run->no_l2 = true;
        return 0;
    }
    if (!table_offset_ok(s, l2_off))
        return qimg_error(-EINVAL, "QED L2 table offset 0x%" PRIx64 " is invalid", l2_off);
    uint8_t *t;
    int r = load_l2(img, l2_off, &t);
    if (r < 0)
        return r;
    uint64_t in = off & (s->cluster_size - 1);
    uint64_t index = (off >> s->cluster_bits) & (s->nelems - 1);
    uint64_t end = QIMG_MIN(index + qimg_div_round_up(in + len, s->cluster_size), s->nelems);
    uint64_t first = entry(t, index), i = index + 1;
    for (uint64_t last = first; i < end; i++) {
        uint64_t e = entry(t, i);
        if (first == 0 || first == QED_ZERO_CLUSTER) {
            if (e != first)
                break;
        } else {
            if (e != last + s->cluster_size)
                break;
            last = e;
        }
    }
    run->l2_off = l2_off;
    run->index = index;
    run->len = QIMG_MIN(len, (i - index) * s->cluster_size - in);
    if (first == 0) {
        run->kind = RUN_UNALLOC;
    } else if (first == QED_ZERO_CLUSTER) {
        run->kind = RUN_ZERO;
    } else if (cluster_offset_ok(s, first)) {
        run->kind = RUN_DATA;
        run->host = first + in;
    } else {
        return qimg_error(-EINVAL, "QED cluster offset 0x%" PRIx64 " is invalid", first);
    }
    return 0;
}

static int qed_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        struct qed_run run;
        pthread_mutex_lock(&img->lock);
        int r = find_run(img, off, len, &run);
        pthread_mutex_unlock(&img->lock);
        if (r < 0)
            return r;
        size_t n = (size_t)run.len;
        if (run.kind == RUN_DATA) {
            qimg_io_event(img->file, QIMG_EV_READ_AIO);
            r = qimg_io_pread(img->file, p, n, run.host);
        } else if (run.kind == RUN_ZERO) {
            memset(p, 0, n);
        } else {
            qimg_io_event(img->file, QIMG_EV_READ_BACKING_AIO);
            r = qimg_read_backing(img, off, p, n);
        }
        if (r < 0)
            return r;
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int qed_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    struct qed_run run;
    pthread_mutex_lock(&img->lock);
    int r = find_run(img, off, len, &run);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    ext->length = run.len;
    ext->flags = 0;
    if (run.kind == RUN_DATA) {
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET;
        ext->host_offset = run.host;
        ext->host_file = img->file->filename;
    } else if (run.kind == RUN_ZERO) {
        ext->flags = QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED;
    }
    return 0;
}

/* ------------------------------------------------------------ writing */

/* Before the first allocating write without a backing file the image is
 * marked "needs a check" (with one, qemu flushes the data before the
 * table instead); close clears the mark. */
static int mark_need_check(struct qimg_image *img)
{
    struct qed_state *s = state(img);
    if (img->backing || (features(s) & QED_F_NEED_CHECK))
        return 0;
    return set_features(img, features(s) | QED_F_NEED_CHECK);
}

/* Fill host [host, host+len) of a new cluster with guest [guest,
 * guest+len) of the backing image (from_backing), or with zeros: without a
 * backing image, past the guest disk's end, and where the cluster was a
 * zero cluster (qemu 7.2 copies the backing file's data there, which the
 * cluster did not read as). */
static int fill_cow(struct qimg_image *img, bool from_backing, uint64_t guest, uint64_t host,
                    uint64_t len)
{
    if (len == 0)
        return 0;
    CLEANUP_FREE uint8_t *buf = qimg_alloc_from_image(len, "QED copy-on-write buffer");
    if (!buf)
        return -ENOMEM;
    memset(buf, 0, len);
    uint64_t inside = from_backing && guest < img->size ? QIMG_MIN(len, img->size - guest) : 0;
    int r = inside ? qimg_read_backing(img, guest, buf, inside) : 0;
    if (r == 0) {
        qimg_io_event(img->file, QIMG_EV_COW_WRITE);
        r = qimg_io_pwrite(img->file, buf, len, host);
    }
    return r;
}

/* Point entries [run->index, +n) at first (a host cluster, each next one a
 * cluster further, or QED_ZERO_CLUSTER for all), allocating the L2 table
 * after the data when it is missing; the table is written before the L1
 * entry that points at it. */
static int link_clusters(struct qimg_image *img, uint64_t guest, const struct qed_run *run,
                         uint64_t n, uint64_t first)
{
    struct qed_state *s = state(img);
    uint8_t *t;
    uint64_t l2_off = run->l2_off, index = (guest >> s->cluster_bits) & (s->nelems - 1);
    int r;
    if (run->no_l2) {
        l2_off = s->file_end;
        r = new_l2(img, l2_off, &t);
        if (r < 0)
            return r;
        s->file_end += s->table_bytes;
    } else {
        r = load_l2(img, l2_off, &t);
        if (r < 0)
            return r;
    }
    for (uint64_t i = 0; i < n; i++)
        qimg_put_le64(t + 8 * (index + i), first == QED_ZERO_CLUSTER ? first
                                                   : first + i * s->cluster_size);
    qimg_io_event(img->file, QIMG_EV_L2_UPDATE);
    if (!run->no_l2)
        return write_entries(img, l2_off, t, index, n);
    r = qimg_io_pwrite(img->file, t, s->table_bytes, l2_off);
    if (r < 0) {
        drop_l2_cache(s);
        return r;
    }
    uint64_t l1_index = guest >> s->l1_shift;
    qimg_put_le64(s->l1 + 8 * l1_index, l2_off);
    qimg_io_event(img->file, QIMG_EV_L1_UPDATE);
    r = write_entries(img, qimg_le64(s->header + OFF_L1), s->l1, l1_index, 1);
    if (r < 0)
        qimg_put_le64(s->l1 + 8 * l1_index, 0);
    return r;
}

/* Write [off, off+run->len) into new clusters at the end of the file; what
 * the write leaves of its first and last cluster is filled by fill_cow. */
static int write_new_clusters(struct qimg_image *img, uint64_t off, const uint8_t *p,
                              const struct qed_run *run)
{
    struct qed_state *s = state(img);
    uint64_t in = off & (s->cluster_size - 1);
    uint64_t n = qimg_div_round_up(in + run->len, s->cluster_size);
    uint64_t host = s->file_end, bytes = n * s->cluster_size, end;
    if (!qimg_add_ok(host, bytes + s->table_bytes, &end) || end > INT64_MAX)
        return qimg_error(-EFBIG, "QED image file would grow too large");
    int r = mark_need_check(img);
    if (r < 0)
        return r;
    s->file_end += bytes;
    bool from_backing = run->kind != RUN_ZERO;
    uint64_t after = bytes - in - run->len;
    r = fill_cow(img, from_backing, off - in, host, in);
    if (r == 0)
        r = fill_cow(img, from_backing, off + run->len, host + in + run->len, after);
    if (r == 0) {
        qimg_io_event(img->file, QIMG_EV_WRITE_AIO);
        r = qimg_io_pwrite(img->file, p, run->len, host + in);
    }
    /* with a backing file the data is on disk before the table points at
     * it, so a crash cannot lose what the cluster's untouched part held */
    if (r == 0 && img->backing)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = link_clusters(img, off, run, n, host);
    return r;
}

/* Does host [host, host+len) fall on the L1 table?  (qemu would write
 * the guest's data over it; check counts the cluster twice.) */
static bool over_l1(const struct qed_state *s, uint64_t host, uint64_t len)
{
    uint64_t l1 = qimg_le64(s->header + OFF_L1);
    return host < l1 + s->table_bytes && l1 < host + len;
}

static int write_locked(struct qimg_image *img, uint64_t off, const uint8_t *p, size_t len)
{
    while (len > 0) {
        struct qed_run run;
        int r = find_run(img, off, len, &run);
        if (r == 0 && run.kind == RUN_DATA && over_l1(state(img), run.host, run.len))
            r = qimg_error(-EIO, "QED cluster at 0x%" PRIx64 " overlaps the L1 table; refusing to "
                           "write it (run 'check -r all')", run.host);
        else if (r == 0 && run.kind == RUN_DATA) {
            qimg_io_event(img->file, QIMG_EV_WRITE_AIO);
            r = qimg_io_pwrite(img->file, p, run.len, run.host);
        } else if (r == 0) {
            r = write_new_clusters(img, off, p, &run);
        }
        if (r < 0)
            return r;
        p += run.len;
        off += run.len;
        len -= run.len;
    }
    return 0;
}

static int qed_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    pthread_mutex_lock(&img->lock);
    int r = write_locked(img, off, buf, len);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* Whole clusters [off, off+len) read as zeros: allocated ones are written
 * with zeros in place, the others become zero clusters (as qemu). */
static int zero_clusters_locked(struct qimg_image *img, uint64_t off, uint64_t len)
{
    struct qed_state *s = state(img);
    CLEANUP_FREE uint8_t *zeros = NULL;
    while (len > 0) {
        struct qed_run run;
        int r = find_run(img, off, len, &run);
        if (r == 0 && run.kind == RUN_DATA && over_l1(s, run.host, run.len)) {
            r = qimg_error(-EIO, "QED cluster at 0x%" PRIx64 " overlaps the L1 table; refusing to "
                           "write it (run 'check -r all')", run.host);
        } else if (r == 0 && run.kind == RUN_DATA) {
            if (!zeros)
                zeros = qimg_xcalloc(1, s->cluster_size);
            for (uint64_t done = 0; r == 0 && done < run.len; done += s->cluster_size)
                r = qimg_io_pwrite(img->file, zeros, s->cluster_size, run.host + done);
        } else if (r == 0 && run.kind == RUN_UNALLOC) {
            r = mark_need_check(img);
            if (r == 0)
                r = link_clusters(img, off, &run, run.len / s->cluster_size, QED_ZERO_CLUSTER);
        }
        if (r < 0)
            return r;
        off += run.len;
        len -= run.len;
    }
    return 0;
}

static int qed_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    struct qed_state *s = state(img);
    if (flags & QIMG_ZERO_FAST)
        return -ENOTSUP;     /* qemu's qed has no zero write that cannot fall back */
    uint64_t start, end = qimg_round_down(off + len, s->cluster_size);
    if (!qimg_round_up_ok(off, s->cluster_size, &start) || start >= end) {
        start = end = off + len;       /* no whole cluster: written as data */
    }
    CLEANUP_FREE uint8_t *zeros = qimg_xcalloc(1, s->cluster_size);
    int r = 0;
    pthread_mutex_lock(&img->lock);
    if (start > off)
        r = write_locked(img, off, zeros, (size_t)QIMG_MIN(start - off, len));
    if (r == 0 && end > start)
        r = zero_clusters_locked(img, start, end - start);
    if (r == 0 && off + len > end && end > off)
        r = write_locked(img, end, zeros, (size_t)(off + len - end));
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int qed_flush(struct qimg_image *img)
{
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_OS);
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_DISK);
    return qimg_io_flush(img->file);
}

static bool qed_has_zero_init(struct qimg_image *img) { return true; }

/* ------------------------------------------------------------ checking */

struct qed_check {
    struct qimg_image *img;
    struct qimg_check_result *res;
    bool fix;
    uint64_t nclusters;       /* clusters in the file */
    uint8_t *used;            /* a bit per cluster: referenced */
};

/* Mark n clusters from off referenced: false when one already was.  The
 * cluster number is off / cluster_size (qemu 7.2 divides by cluster_size
 * - 1, which shifts clusters past the (cluster_size - 1)th by one and
 * reports phantom leaks in files of more than that many clusters). */
static bool mark_used(struct qed_check *c, uint64_t off, uint64_t n)
{
    uint64_t cl = off >> state(c->img)->cluster_bits;
    int64_t twice = 0;
    for (; n > 0; n--, cl++) {
        if (cl >= c->nclusters)
            continue;
        if (c->used[cl / 8] & (1u << (cl % 8)))
            twice++;
        c->used[cl / 8] |= (uint8_t)(1u << (cl % 8));
    }
    c->res->corruptions += twice;
    return twice == 0;
}

static void invalid_entry(struct qed_check *c, uint8_t *table, uint64_t i)
{
    if (c->fix) {
        qimg_put_le64(table + 8 * i, 0);
        c->res->corruptions_fixed++;
    } else {
        c->res->corruptions++;
    }
}

/* An L2 table: data clusters counted and marked; the number of invalid
 * offsets (cleared in the table when fixing). */
static uint64_t check_l2(struct qed_check *c, uint8_t *t)
{
    struct qed_state *s = state(c->img);
    uint64_t last = 0, invalid = 0;
    for (uint64_t i = 0; i < s->nelems; i++) {
        uint64_t off = entry(t, i);
        if (off == 0 || off == QED_ZERO_CLUSTER)
            continue;
        c->res->allocated_clusters++;
        if (last && last + s->cluster_size != off)
            c->res->fragmented_clusters++;
        last = off;
        if (!cluster_offset_ok(s, off)) {
            invalid_entry(c, t, i);
            invalid++;
            continue;
        }
        mark_used(c, off, 1);
    }
    return invalid;
}

static int check_tables(struct qed_check *c)
{
    struct qimg_image *img = c->img;
    struct qed_state *s = state(img);
    uint64_t l1_off = qimg_le64(s->header + OFF_L1), invalid_l1 = 0;
    int last_error = 0;
    mark_used(c, l1_off, s->table_size);
    CLEANUP_FREE uint8_t *t = qimg_alloc_from_image(s->table_bytes, "QED L2 table");
    if (!t)
        return -ENOMEM;
    for (uint64_t i = 0; i < s->nelems; i++) {
        uint64_t off = entry(s->l1, i);
        if (off == 0)
            continue;
        if (!table_offset_ok(s, off)) {
            invalid_entry(c, s->l1, i);
            invalid_l1++;
            continue;
        }
        if (!mark_used(c, off, s->table_size))
            continue;
        int r = qimg_io_pread(img->file, t, s->table_bytes, off);
        if (r == 0 && check_l2(c, t) > 0 && c->fix) {
            drop_l2_cache(s);
            r = qimg_io_pwrite(img->file, t, s->table_bytes, off);
        }
        if (r < 0) {
            c->res->check_errors++;
            last_error = r;
        }
    }
    if (invalid_l1 && c->fix) {
        int r = qimg_io_pwrite(img->file, s->l1, s->table_bytes, l1_off);
        if (r < 0) {
            c->res->check_errors++;
            last_error = r;
        }
    }
    return last_error;
}

/* qemu's check: every table and data cluster inside the file and
 * referenced once, leaks counted (never repaired: QED cannot free a
 * cluster); any repair clears invalid offsets, and a clean result clears
 * the need-check mark. */
static int check_image(struct qimg_image *img, struct qimg_check_result *res, bool fix)
{
    struct qed_state *s = state(img);
    struct qed_check c = { .img = img, .res = res, .fix = fix };
    c.nclusters = s->file_end >> s->cluster_bits;
    c.used = qimg_calloc_from_image(c.nclusters / 8 + 1, 1, "QED check bitmap");
    if (!c.used)
        return -ENOMEM;
    res->total_clusters = (int64_t)qimg_div_round_up(s->image_size, s->cluster_size);
    res->has_stats = true;
    int r = check_tables(&c);
    if (r == 0) {
        for (uint64_t cl = s->header_clusters; cl < c.nclusters; cl++)
            if (!(c.used[cl / 8] & (1u << (cl % 8))))
                res->leaks++;
        if (fix && res->corruptions == 0 && res->check_errors == 0 &&
            (features(s) & QED_F_NEED_CHECK)) {
            r = qimg_io_flush(img->file);
            if (r == 0)
                r = set_features(img, features(s) & ~QED_F_NEED_CHECK);
        }
    }
    free(c.used);
    return r;
}

static int qed_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    pthread_mutex_lock(&img->lock);
    int r = check_image(img, res, fix != 0 && state(img)->writable);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ------------------------------------------------------------ open, close */

static void free_state(struct qimg_image *img)
{
    struct qed_state *s = state(img);
    if (s) {
        for (size_t i = 0; i < s->cache_slots; i++)
            free(s->cache[i].table);
        free(s->cache);
        free(s->l1);
    }
    free(s);
    img->opaque = NULL;
}

static int open_image(struct qimg_image *img, unsigned flags)
{
    struct qed_state *s = qimg_xcalloc(1, sizeof *s);
    img->opaque = s;
    uint64_t file_size;
    int r = qimg_io_pread(img->file, s->header, QED_HEADER_SIZE, 0);
    if (r < 0)
        return qimg_error(r, "Failed to read QED header");
    r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return qimg_error(r, "Failed to get file length");
    r = parse_header(s, file_size);
    if (r == 0)
        r = read_backing_name(img, s);
    if (r < 0)
        return r;
    s->writable = !img->read_only && (flags & QIMG_OPEN_RDWR);
    bool reopen = flags & QIMG_OPEN_REOPEN;
    /* unknown autoclear bits are dropped by a program that opens the
     * image for writing (none are known) */
    if (s->writable && !reopen && qimg_le64(s->header + OFF_AUTOCLEAR)) {
        qimg_put_le64(s->header + OFF_AUTOCLEAR, 0);
        r = write_header(img);
        if (r < 0)
            return qimg_error(r, "Failed to update header");
        qimg_io_flush(img->file);
    }
    s->l1 = qimg_alloc_from_image(s->table_bytes, "QED L1 table");
    if (!s->l1)
        return -ENOMEM;
    r = qimg_io_pread(img->file, s->l1, s->table_bytes, qimg_le64(s->header + OFF_L1));
    if (r < 0)
        return qimg_error(r, "Failed to read L1 table");
    s->cache_slots = (size_t)QIMG_MAX(1, QIMG_MIN(QED_L2_CACHE_MAX, QED_L2_CACHE_BYTES / s->table_bytes));
    s->cache = qimg_xcalloc(s->cache_slots, sizeof *s->cache);
    img->size = s->image_size;
    /* an image left needing a check is repaired by a read-write open (its
     * invalid offsets cleared); read-only it opens as it is */
    if (s->writable && !reopen && !(flags & QIMG_OPEN_CHECK) && (features(s) & QED_F_NEED_CHECK)) {
        struct qimg_check_result res = { 0 };
        r = check_image(img, &res, true);
        if (r < 0)
            return qimg_error(r, "Image corrupted");
    }
    return 0;
}

/* The image layer does not close an image whose open failed. */
static int qed_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    int r = open_image(img, flags);
    if (r < 0) {
        free_state(img);
        free(img->backing_file);
        free(img->backing_fmt);
        img->backing_file = img->backing_fmt = NULL;
    }
    return r;
}

static void qed_close(struct qimg_image *img)
{
    struct qed_state *s = state(img);
    if (!s)
        return;
    /* errors are ignored here, as qemu does */
    if (s->writable) {
        qimg_io_flush(img->file);
        if (features(s) & QED_F_NEED_CHECK)
            set_features(img, features(s) & ~QED_F_NEED_CHECK);
    }
    free_state(img);
}

/* qemu's drain fires the need-check timer before info asks, so info
 * always says the image is clean. */
static int qed_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    info->cluster_size = state(img)->cluster_size;
    info->has_dirty = true;
    info->dirty = false;
    return 0;
}

/* ------------------------------------------------------------ resize, backing */

static int qed_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    struct qed_state *s = state(img);
    if (prealloc && strcmp(prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    if (!image_size_ok(size, s->cluster_size, s->table_size))
        return qimg_error(-EINVAL, "Invalid image size specified");
    if (size < s->image_size)
        return qimg_error(-ENOTSUP, "Shrinking images is currently not supported");
    uint64_t old = s->image_size;
    qimg_put_le64(s->header + OFF_IMAGE_SIZE, size);
    int r = write_header(img);
    if (r < 0) {
        qimg_put_le64(s->header + OFF_IMAGE_SIZE, old);
        return qimg_error(r, "Failed to update the image size: %s", strerror(-r));
    }
    s->image_size = size;
    img->size = size;
    return 0;
}

/* The header rewritten with the new name right after it (what followed
 * the old name is left as it was). */
static int qed_change_backing(struct qimg_image *img, const char *backing, const char *fmt)
{
    struct qed_state *s = state(img);
    if (backing && qimg_le64(s->header + OFF_COMPAT))
        return -ENOTSUP;     /* an unknown compat feature may own what follows */
    size_t len = backing ? strlen(backing) : 0;
    if (QED_HEADER_SIZE + (uint64_t)len > (uint64_t)s->header_clusters * s->cluster_size)
        return -ENOSPC;
    uint8_t h[QED_HEADER_SIZE];
    memcpy(h, s->header, sizeof h);
    uint64_t f = features(s) & ~(QED_F_BACKING_FILE | QED_F_BACKING_RAW);
    if (backing)
        f |= QED_F_BACKING_FILE | (fmt && strcmp(fmt, "raw") == 0 ? QED_F_BACKING_RAW : 0);
    qimg_put_le64(h + OFF_FEATURES, f);
    qimg_put_le32(h + OFF_BACKING_OFF, QED_HEADER_SIZE);
    qimg_put_le32(h + OFF_BACKING_LEN, (uint32_t)len);
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(QED_HEADER_SIZE + len);
    memcpy(buf, h, sizeof h);
    if (len)
        memcpy(buf + QED_HEADER_SIZE, backing, len);
    pthread_mutex_lock(&img->lock);
    int r = qimg_io_pwrite(img->file, buf, QED_HEADER_SIZE + len, 0);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        memcpy(s->header, h, sizeof h);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    qimg_image_set_backing_names(img, backing, (f & QED_F_BACKING_RAW) ? "raw" : NULL);
    return 0;
}

/* ------------------------------------------------------------ create */

static int create_checks(uint64_t cs, uint64_t ts, uint64_t size)
{
    if (!cluster_size_ok(cs))
        return qimg_error(-EINVAL, "QED cluster size must be within range [%u, %u] and power of 2",
                          QED_MIN_CLUSTER, QED_MAX_CLUSTER);
    if (!table_size_ok(ts))
        return qimg_error(-EINVAL, "QED table size must be within range [%u, %u] and power of 2",
                          QED_MIN_TABLE, QED_MAX_TABLE);
    if (!image_size_ok(size, (uint32_t)cs, (uint32_t)ts))
        return qimg_error(-EINVAL, "QED image size must be a non-zero multiple of cluster size "
                          "and less than %" PRIu64 " bytes", max_image_size((uint32_t)cs, (uint32_t)ts));
    return 0;
}

/* The header (and backing name) in cluster 0, an empty L1 table after it:
 * qemu's file byte for byte. */
static int write_new_image(struct qimg_io *io, uint64_t cs, uint64_t ts, uint64_t size,
                           const char *backing, const char *backing_fmt)
{
    size_t blen = backing ? strlen(backing) : 0;
    if (QED_HEADER_SIZE + (uint64_t)blen > cs)
        return qimg_error(-EINVAL, "Backing file name too long");
    uint8_t h[QED_HEADER_SIZE] = { 0 };
    uint64_t f = 0;
    qimg_put_le32(h, QED_MAGIC);
    qimg_put_le32(h + OFF_CLUSTER_SIZE, (uint32_t)cs);
    qimg_put_le32(h + OFF_TABLE_SIZE, (uint32_t)ts);
    qimg_put_le32(h + OFF_HEADER_SIZE, 1);
    qimg_put_le64(h + OFF_L1, cs);
    qimg_put_le64(h + OFF_IMAGE_SIZE, size);
    if (backing) {
        f = QED_F_BACKING_FILE | (backing_fmt && strcmp(backing_fmt, "raw") == 0 ? QED_F_BACKING_RAW : 0);
        qimg_put_le32(h + OFF_BACKING_OFF, QED_HEADER_SIZE);
        qimg_put_le32(h + OFF_BACKING_LEN, (uint32_t)blen);
    }
    qimg_put_le64(h + OFF_FEATURES, f);
    int r = qimg_io_pwrite(io, h, sizeof h, 0);
    if (r == 0 && blen)
        r = qimg_io_pwrite(io, backing, blen, QED_HEADER_SIZE);
    if (r == 0)
        r = qimg_io_truncate(io, cs + cs * ts);
    return r;
}

static int qed_create(struct qimg_create_ctx *ctx)
{
    uint64_t cs = QED_DEFAULT_CLUSTER, ts = QED_DEFAULT_TABLE, size = 0;
    int r = qimg_opts_get_size(ctx->opts, "cluster_size", &cs);
    if (r >= 0)
        r = qimg_opts_get_size(ctx->opts, "table_size", &ts);
    if (r < 0)
        return r;
    bool prealloc_ok = !strcmp(ctx->prealloc, "off") || !strcmp(ctx->prealloc, "falloc") ||
                       !strcmp(ctx->prealloc, "full");
    if (!prealloc_ok && strcmp(ctx->prealloc, "metadata") != 0)
        return qimg_error(-EINVAL, "invalid parameter value: %s", ctx->prealloc);
    /* qemu creates the (empty) file first, then checks the options */
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    if (!prealloc_ok)
        r = qimg_error(-ENOTSUP, "Unsupported preallocation mode: %s", ctx->prealloc);
    /* qemu rounds the size up to whole sectors silently */
    if (r == 0 && !qimg_round_up_ok(ctx->size, SECTOR, &size))
        r = qimg_error(-EINVAL, "Image size too large");
    if (r == 0 && cs > UINT32_MAX)
        cs = 0;
    if (r == 0 && ts > UINT32_MAX)
        ts = 0;
    if (r == 0)
        r = create_checks(cs, ts, size);
    if (r == 0) {
        r = write_new_image(io, cs, ts, size, ctx->backing_file, ctx->backing_fmt);
        if (r < 0)
            r = qimg_error(r, "Could not write the QED image: %s", qimg_last_error());
    }
    qimg_io_close(io);
    return r;
}

const struct qimg_driver qimg_driver_qed = {
    .name           = "qed",
    .flags          = QIMG_DRV_SUPPORTS_BACKING,
    .create_opts    = qed_create_opts,
    .probe          = qed_probe,
    .open           = qed_open,
    .close          = qed_close,
    .create         = qed_create,
    .read           = qed_read,
    .write          = qed_write,
    .write_zeroes   = qed_write_zeroes,
    .flush          = qed_flush,
    .block_status   = qed_block_status,
    .info           = qed_info,
    .check          = qed_check,
    .resize         = qed_resize,
    .change_backing = qed_change_backing,
    .has_zero_init  = qed_has_zero_init,
};
