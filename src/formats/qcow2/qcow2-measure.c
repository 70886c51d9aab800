/* qimg - qcow2 size measurement (qemu-img measure -O qcow2).
 *
 * "fully allocated" is the size of an image with every guest cluster and
 * all metadata for them: one header cluster, whole L2 tables for every
 * cluster, an L1 table rounded up to whole clusters, and the refcount
 * structures that count all of it (themselves included).  "required"
 * takes the same metadata and only the data clusters the source really
 * uses (all of them with falloc/full preallocation or a backing file).
 * Numbers and messages as qemu-img 7.2 prints them.
 */
#include <errno.h>
#include <inttypes.h>

#include "qcow2-create.h"
#include "../luks/luks.h"

#define MAX_L1_BYTES (32ull << 20)

struct measure_opts {
    bool extended_l2;
    uint64_t cluster_size;
    int version;
    uint64_t refcount_bits;
    bool full_prealloc;          /* falloc or full */
    bool has_backing;
    uint64_t size;
    uint64_t crypt_bytes;        /* the LUKS header, whole clusters */
};

static int parse_measure_opts(qimg_opts *o, struct measure_opts *m)
{
    const char *s = NULL;
    int r;
    memset(m, 0, sizeof *m);
    m->cluster_size = 65536;
    m->refcount_bits = 16;
    m->version = 3;
    if ((r = qimg_opts_get_bool(o, "extended_l2", &m->extended_l2)) < 0 ||
        (r = qimg_opts_get_size(o, "cluster_size", &m->cluster_size)) < 0)
        return r;
    if (!qimg_is_pow2(m->cluster_size) || m->cluster_size < 512 || m->cluster_size > (2u << 20))
        return qimg_error(-EINVAL, "Cluster size must be a power of two between 512 and 2048k");
    if (m->extended_l2 && m->cluster_size < 16384)
        return qimg_error(-EINVAL, "Extended L2 entries are only supported with cluster sizes "
                          "of at least 16384 bytes");
    if (qimg_opts_get_string(o, "compat", &s) == 1) {
        if (!strcmp(s, "0.10"))
            m->version = 2;
        else if (strcmp(s, "1.1"))
            return qimg_error(-EINVAL, "Invalid compatibility level: '%s'", s);
    }
    if ((r = qimg_opts_get_number(o, "refcount_bits", &m->refcount_bits)) < 0)
        return r;
    if (m->refcount_bits > 64 || !qimg_is_pow2(m->refcount_bits))
        return qimg_error(-EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
    if (m->version < 3 && m->refcount_bits != 16)
        return qimg_error(-EINVAL, "Different refcount widths than 16 bits require compatibility "
                          "level 1.1 or above (use compat=1.1 or greater)");
    s = NULL;
    if (qimg_opts_get_string(o, "preallocation", &s) == 1) {
        if (strcmp(s, "off") && strcmp(s, "metadata") && strcmp(s, "falloc") && strcmp(s, "full"))
            return qimg_error(-EINVAL, "invalid parameter value: %s", s);
        m->full_prealloc = !strcmp(s, "falloc") || !strcmp(s, "full");
    }
    s = NULL;
    m->has_backing = qimg_opts_get_string(o, "backing_file", &s) == 1;
    s = NULL;
    if (qimg_opts_get_string(o, "encrypt.format", &s) == 1 && !strcmp(s, "luks")) {
        /* the LUKS header's size follows from the cipher's key length */
        struct luks_create_params p;
        char *pass = NULL;
        size_t len = 0;
        r = luks_create_params_get(o, "encrypt.", &p);
        if (r < 0)
            return r;
        if (!p.secret_id)
            return qimg_error(-EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
        if ((r = qimg_secret_lookup(p.secret_id, &pass, &len)) < 0)
            return r;
        qimg_wipe_free(pass, len);
        if ((r = luks_create_params_check(&p)) < 0)
            return r;
        m->crypt_bytes = luks_header_size(&p);
    }
    r = qimg_opts_get_size(o, "size", &m->size);
    return r < 0 ? r : 0;
}

/* Size of a preallocated image of total_size bytes (qemu's formula). */
static uint64_t prealloc_size(uint64_t total_size, uint64_t cs, unsigned refcount_order, bool extl2)
{
    uint64_t l2e = extl2 ? 16 : 8;
    uint64_t aligned = qimg_div_round_up(total_size, cs) * cs;
    uint64_t meta = cs;                                   /* header */
    uint64_t nl2e = qimg_div_round_up(aligned / cs, cs / l2e) * (cs / l2e);
    meta += nl2e * l2e;                                   /* L2 tables */
    uint64_t nl1e = qimg_div_round_up(nl2e * l2e / cs, cs / 8) * (cs / 8);
    meta += nl1e * 8;                                     /* L1 table */
    meta += qcow2_refcount_metadata_size((meta + aligned) / cs, cs, refcount_order, false, NULL);
    return meta + aligned;
}

/* Data clusters of src that a copy must store (zeros and holes skipped). */
static int source_required(qimg_image *src, uint64_t cs, uint64_t *required)
{
    uint64_t ssize = qimg_size(src), off = 0, pnum;
    *required = 0;
    for (; off < ssize; off += pnum) {
        struct qimg_extent e;
        int r = qimg_block_status_chain(src, off, ssize - off, &e);
        if (r < 0) {
            CLEANUP_FREE char *msg = qimg_strdup(qimg_last_error());
            return qimg_error(r, "Unable to get block status: %s", msg);
        }
        pnum = e.length;
        if (e.flags & QIMG_STATUS_ZERO)
            continue;
        if ((e.flags & (QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED)) ==
            (QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED)) {
            pnum = qimg_div_round_up(off + pnum, cs) * cs - off;
            *required += off % cs + pnum;
        }
    }
    return 0;
}

/* Only a v3 qcow2 source can carry persistent bitmaps over. */
static bool source_has_bitmap_support(qimg_image *src)
{
    uint8_t h[8];
    if (strcmp(qimg_format(src), "qcow2") || !src->file)
        return false;
    if (qimg_io_pread(src->file, h, sizeof h, 0) < 0)
        return false;
    return qimg_be32(h + 4) >= 3;
}

static int bitmaps_size(qimg_image *src, uint64_t cs, uint64_t *out)
{
    struct qimg_bitmap_info *list = NULL;
    size_t n = 0;
    uint64_t total = 0, dir = 0;
    *out = 0;
    if (qimg_bitmap_list(src, &list, &n) < 0)
        return 0;   /* no bitmaps readable: nothing to copy */
    for (size_t i = 0; i < n; i++) {
        uint64_t gran = list[i].granularity ? list[i].granularity : 65536;
        uint64_t bytes = qimg_div_round_up(qimg_div_round_up(qimg_size(src), gran), 8);
        uint64_t clusters = qimg_div_round_up(bytes, cs);
        total += clusters * cs;                                   /* the bitmap data */
        total += qimg_div_round_up(clusters * 8, cs) * cs;        /* its table */
        dir += (24 + strlen(list[i].name) + 7) & ~7ull;           /* directory entry */
    }
    qimg_bitmap_list_free(list, n);
    *out = total + qimg_div_round_up(dir, cs) * cs;
    return 0;
}

int qcow2_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    struct measure_opts m;
    int r = parse_measure_opts(opts, &m);
    if (r < 0)
        return r;
    uint64_t cs = m.cluster_size, required = 0;
    uint64_t vsize = qimg_div_round_up(m.size, cs) * cs;
    uint64_t l2_tables = qimg_div_round_up(vsize / cs, cs / (m.extended_l2 ? 16 : 8));
    if (l2_tables * 8 > MAX_L1_BYTES)
        return qimg_error(-EFBIG, "The image size is too large (try using a larger cluster size)");

    if (src) {
        vsize = qimg_div_round_up(qimg_size(src), cs) * cs;
        if (m.has_backing)
            required = vsize;   /* the new backing file may share nothing */
        else if ((r = source_required(src, cs, &required)) < 0)
            return r;
    }
    if (m.full_prealloc)
        required = vsize;
    out->fully_allocated = prealloc_size(vsize, cs, (unsigned)__builtin_ctzll(m.refcount_bits),
                                         m.extended_l2);
    out->required = out->fully_allocated - vsize + required;
    uint64_t crypt = qimg_div_round_up(m.crypt_bytes, cs) * cs;
    out->fully_allocated += crypt;
    out->required += crypt;
    out->has_bitmaps = m.version >= 3 && src && source_has_bitmap_support(src);
    if (out->has_bitmaps)
        bitmaps_size(src, cs, &out->bitmaps);
    return 0;
}
