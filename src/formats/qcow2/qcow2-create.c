/* qimg - qcow2 image creation.
 *
 * A fresh image is laid out exactly as qemu-img 7.2 lays it out, so that
 * `cmp` against qemu's image succeeds.  qemu builds a new image by writing
 * a minimal header, a one-cluster refcount table (cluster 1) and one
 * refcount block (cluster 2), then opening it and growing it with its
 * normal allocator: the L1 table, preallocated L2 tables and data clusters
 * and every extra refcount block or enlarged refcount table land where
 * that allocator puts them.  We replay the same allocation decisions on an
 * in-memory model (a bitmap of used clusters: every refcount of a fresh
 * image is 0 or 1) and then write the resulting metadata once.
 *
 * Behaviour reproduced (observed with qemu-img 7.2 and from the qcow2
 * specification, docs/interop/qcow2.txt):
 *  - clusters are handed out first-fit from a moving "free index"; a new
 *    refcount block goes to the first free cluster, and every time one is
 *    created the allocation that needed it restarts from its start;
 *  - when the refcount table is full, new refcount blocks for the whole
 *    image plus a table 1.5 times as large are placed after the last
 *    refcount block's range and the old table is freed (its bytes stay);
 *  - falloc/full preallocation first places a new, exactly sized refcount
 *    table after the metadata, then the data clusters, then the L2 tables
 *    (first in the freed old table's cluster);
 *  - the feature name table extension is written for v3 images whose
 *    clusters are larger than 4 KiB only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "qcow2.h"
#include "qcow2-create.h"
#include "../luks/luks.h"

#define QCOW2_MAGIC 0x514649fbu
#define MIN_CLUSTER_BITS 9
#define MAX_CLUSTER_BITS 21
#define V3_HEADER_LENGTH 112
#define V2_HEADER_LENGTH 72
#define MAX_BACKING_NAME 1023
#define MAX_L1_BYTES (32ull << 20)
#define MAX_REFTABLE_SIZE (8ull << 20)
/* largest request qemu's block layer issues, in bytes */
#define MAX_REQUEST_BYTES 0x7ffffe00ull
#define OFLAG_COPIED (1ull << 63)

#define EXT_BACKING_FORMAT 0xe2792acau
#define EXT_FEATURE_TABLE 0x6803f857u
#define EXT_DATA_FILE 0x44415441u
#define EXT_CRYPTO 0x0537be77u

#define INCOMPAT_DATA_FILE (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTL2 (1ull << 4)
#define COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

const struct qimg_opt_desc qcow2_create_opts[] = {
    { "encryption", QIMG_OPT_BOOL, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", NULL },
    { "encrypt.format", QIMG_OPT_STRING, "Encrypt the image, format choices: 'aes', 'luks'", NULL },
    { "encrypt.key-secret", QIMG_OPT_STRING, "ID of secret providing qcow AES key or LUKS passphrase", NULL },
    { "encrypt.cipher-alg", QIMG_OPT_STRING, "Name of encryption cipher algorithm", NULL },
    { "encrypt.cipher-mode", QIMG_OPT_STRING, "Name of encryption cipher mode", NULL },
    { "encrypt.ivgen-alg", QIMG_OPT_STRING, "Name of IV generator algorithm", NULL },
    { "encrypt.ivgen-hash-alg", QIMG_OPT_STRING, "Name of IV generator hash algorithm", NULL },
    { "encrypt.hash-alg", QIMG_OPT_STRING, "Name of encryption hash algorithm", NULL },
    { "encrypt.iter-time", QIMG_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL },
    { "cluster_size", QIMG_OPT_SIZE, "qcow2 cluster size", "65536" },
    { "extended_l2", QIMG_OPT_BOOL, "Extended L2 tables", "off" },
    { "preallocation", QIMG_OPT_STRING, "Preallocation mode (allowed values: off, metadata, falloc, full)", NULL },
    { "compression_type", QIMG_OPT_STRING, "Compression method used for image cluster compression", "zlib" },
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "compat", QIMG_OPT_STRING, "Compatibility level (v2 [0.10] or v3 [1.1])", NULL },
    { "backing_file", QIMG_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Image format of the base image", NULL },
    { "data_file", QIMG_OPT_STRING, "File name of an external data file", NULL },
    { "data_file_raw", QIMG_OPT_BOOL, "The external data file must stay valid as a raw image", NULL },
    { "lazy_refcounts", QIMG_OPT_BOOL, "Postpone refcount updates", "off" },
    { "refcount_bits", QIMG_OPT_NUMBER, "Width of a reference count entry in bits", "16" },
    { NULL, 0, NULL, NULL },
};

/* ====================================================== options */

enum prealloc { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL };

struct create_opts {
    uint64_t size;
    int version;                     /* 2 or 3 */
    uint64_t cluster_size;
    unsigned cluster_bits;
    bool extended_l2;
    enum prealloc prealloc;
    bool lazy_refcounts;
    uint64_t refcount_bits;
    unsigned refcount_order;
    bool zstd;
    const char *data_file;
    bool data_file_raw;
    const char *backing_file;
    const char *backing_fmt;
    bool encrypt;
    const char *key_secret;
    bool luks;                       /* encrypt.format=luks (else aes) */
    struct luks_create_params luks_params;
};

/* The block drivers qemu-img 7.2 (Debian build) accepts as backing_fmt:
 * the values of its BlockdevDriver enumeration. */
static const char *const blockdev_drivers[] = {
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop",
    "compress", "copy-before-write", "copy-on-read", "dmg", "file",
    "snapshot-access", "ftp", "ftps", "gluster", "host_cdrom", "host_device",
    "http", "https", "iscsi", "luks", "nbd", "nfs", "null-aio", "null-co",
    "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed", "quorum", "raw",
    "rbd", "replication", "ssh", "throttle", "vdi", "vhdx", "vmdk", "vpc",
    "vvfat", NULL,
};

static bool in_list(const char *const *list, const char *v)
{
    for (; *list; list++)
        if (strcmp(*list, v) == 0)
            return true;
    return false;
}

static int not_accepted(const char *param, const char *value)
{
    return qimg_error(-EINVAL, "Parameter '%s' does not accept value '%s'", param, value);
}

static int parse_prealloc(const char *s, enum prealloc *out)
{
    static const char *const names[] = { "off", "metadata", "falloc", "full" };
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum prealloc)i;
            return 0;
        }
    return -EINVAL;
}

/* The aes format takes only a secret: another encrypt.* option is
 * unexpected, as in qemu. */
static int check_aes_opts(qimg_opts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (strncmp(o->v[i].name, "encrypt.", 8) == 0 && strcmp(o->v[i].name, "encrypt.format") &&
            strcmp(o->v[i].name, "encrypt.key-secret"))
            return qimg_error(-EINVAL, "Parameter '%s' is unexpected", o->v[i].name);
    return 0;
}

/* "encryption" and "encrypt.*": checked as qemu checks them. */
static int parse_encryption(qimg_opts *o, struct create_opts *c)
{
    const char *fmt = NULL;
    bool enc = false;
    int has_enc = qimg_opts_get_bool(o, "encryption", &enc);
    if (has_enc < 0)
        return has_enc;
    qimg_opts_get_string(o, "encrypt.format", &fmt);
    if (has_enc && enc && fmt)
        return qimg_error(-EINVAL, "'encrypt.format' and its alias 'encryption' can't be used at the same time");
    if (has_enc && enc)
        fmt = "aes";
    qimg_opts_get_string(o, "encrypt.key-secret", &c->key_secret);
    bool any = has_enc && enc;
    for (size_t i = 0; i < o->n; i++)
        if (strncmp(o->v[i].name, "encrypt.", 8) == 0) {
            any = true;
            o->v[i].used = true;
        }
    if (!any)
        return 0;
    if (!fmt)
        return qimg_error(-EINVAL, "Parameter 'encrypt.format' is missing");
    if (strcmp(fmt, "aes") && strcmp(fmt, "luks"))
        return not_accepted("format", fmt);
    c->encrypt = true;
    c->luks = strcmp(fmt, "luks") == 0;
    if (!c->luks)
        return check_aes_opts(o);
    return luks_create_params_get(o, "encrypt.", &c->luks_params);
}

/* Everything qemu refuses before it touches the disk, in its order:
 * first the values that do not parse, then the combinations. */
static int parse_create_opts(struct qimg_create_ctx *ctx, struct create_opts *c)
{
    qimg_opts *o = ctx->opts;
    const char *compat = NULL, *prealloc = ctx->prealloc ? ctx->prealloc : "off", *ctype = NULL;
    int r;

    memset(c, 0, sizeof *c);
    c->cluster_size = 65536;
    c->refcount_bits = 16;
    c->backing_file = ctx->backing_file;
    c->backing_fmt = ctx->backing_fmt;
    if (!qimg_round_up_ok(ctx->size, 512, &c->size) || c->size > INT64_MAX)
        return -EFBIG;

    /* the typed values (the core validated their syntax) */
    if ((r = qimg_opts_get_size(o, "cluster_size", &c->cluster_size)) < 0 ||
        (r = qimg_opts_get_bool(o, "extended_l2", &c->extended_l2)) < 0 ||
        (r = qimg_opts_get_bool(o, "lazy_refcounts", &c->lazy_refcounts)) < 0 ||
        (r = qimg_opts_get_number(o, "refcount_bits", &c->refcount_bits)) < 0 ||
        (r = qimg_opts_get_bool(o, "data_file_raw", &c->data_file_raw)) < 0)
        return r;
    qimg_opts_get_string(o, "compat", &compat);
    qimg_opts_get_string(o, "compression_type", &ctype);
    qimg_opts_get_string(o, "data_file", &c->data_file);
    qimg_opts_get_string(o, "preallocation", &prealloc);
    qimg_opts_get_string(o, "backing_file", &c->backing_file);
    qimg_opts_get_string(o, "backing_fmt", &c->backing_fmt);

    bool enc = false;
    const char *efmt = NULL;
    if (qimg_opts_get_bool(o, "encryption", &enc) == 1 && enc &&
        qimg_opts_get_string(o, "encrypt.format", &efmt) == 1)
        return qimg_error(-EINVAL, "'encrypt.format' and its alias 'encryption' can't be used at the same time");
    if (c->backing_fmt && !c->backing_file)
        return qimg_error(-EINVAL, "Backing format cannot be used without backing file");

    c->version = 3;
    if (compat) {
        if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
            c->version = 2;
        else if (strcmp(compat, "1.1") && strcmp(compat, "v3"))
            return not_accepted("version", compat);
    }
    if (c->backing_fmt && !in_list(blockdev_drivers, c->backing_fmt))
        return not_accepted("backing-fmt", c->backing_fmt);
    r = parse_encryption(o, c);
    if (r < 0)
        return r;
    if (parse_prealloc(prealloc, &c->prealloc) < 0)
        return not_accepted("preallocation", prealloc);
    if (ctype && strcmp(ctype, "zlib") && strcmp(ctype, "zstd"))
        return not_accepted("compression-type", ctype);
    c->zstd = ctype && !strcmp(ctype, "zstd");

    /* combinations, in qemu's order */
    if (c->extended_l2 && c->version < 3)
        return qimg_error(-EINVAL, "Extended L2 entries are only supported with compatibility "
                          "level 1.1 and above (use version=v3 or greater)");
    if (!qimg_is_pow2(c->cluster_size) || c->cluster_size < (1u << MIN_CLUSTER_BITS) ||
        c->cluster_size > (1u << MAX_CLUSTER_BITS))
        return qimg_error(-EINVAL, "Cluster size must be a power of two between %d and %dk",
                          1 << MIN_CLUSTER_BITS, 1 << (MAX_CLUSTER_BITS - 10));
    c->cluster_bits = (unsigned)__builtin_ctzll(c->cluster_size);
    if (c->extended_l2 && c->cluster_size < 16384)
        return qimg_error(-EINVAL, "Extended L2 entries are only supported with cluster sizes "
                          "of at least %d bytes", 16384);
    if (c->backing_file && c->prealloc != PREALLOC_OFF && !c->extended_l2)
        return qimg_error(-EINVAL, "Backing file and preallocation can only be used at the "
                          "same time if extended_l2 is on");
    if (c->lazy_refcounts && c->version < 3)
        return qimg_error(-EINVAL, "Lazy refcounts only supported with compatibility level 1.1 "
                          "and above (use version=v3 or greater)");
    if (c->refcount_bits > 64 || !qimg_is_pow2(c->refcount_bits))
        return qimg_error(-EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
    if (c->version < 3 && c->refcount_bits != 16)
        return qimg_error(-EINVAL, "Different refcount widths than 16 bits require compatibility "
                          "level 1.1 or above (use version=v3 or greater)");
    c->refcount_order = (unsigned)__builtin_ctzll(c->refcount_bits);
    if (c->data_file_raw && !c->data_file)
        return qimg_error(-EINVAL, "data-file-raw requires data-file");
    if (c->data_file_raw && c->backing_file)
        return qimg_error(-EINVAL, "Backing file and data-file-raw cannot be used at the same time");
    /* a raw data file needs a 1:1 mapping in the L2 tables */
    if (c->data_file_raw && c->prealloc == PREALLOC_OFF)
        c->prealloc = PREALLOC_METADATA;
    if (c->data_file && c->version < 3)
        return qimg_error(-EINVAL, "External data files are only supported with compatibility "
                          "level 1.1 and above (use version=v3 or greater)");
    if (c->zstd && c->version < 3)
        return qimg_error(-EINVAL, "Non-zlib compression type is only supported with "
                          "compatibility level 1.1 and above (use version=v3 or greater)");
    return 0;
}

/* ====================================================== allocation model */

struct dead_region { uint64_t off; void *buf; size_t len; };

struct layout {
    unsigned cluster_bits;
    uint64_t cs;
    unsigned refcount_order;
    unsigned rb_bits;                /* log2 of refcounts per refcount block */
    uint64_t l2_entries;             /* entries per L2 table */
    unsigned l2_entry_size;          /* 8, or 16 with extended L2 */
    bool data_file;

    uint8_t *used;                   /* refcount != 0, one bit per cluster */
    uint64_t used_bytes;
    uint64_t free_index;

    uint64_t *reftable;              /* offsets of refcount blocks */
    uint64_t reftable_size;          /* entries (whole clusters' worth) */
    uint64_t reftable_offset;

    uint64_t l1_size, l1_offset;
    uint64_t *l1;                    /* L2 offsets (without flags) */
    uint64_t **l2;                   /* per L1 index: first u64 of each entry */

    struct dead_region *dead;        /* freed tables whose bytes stay in the file */
    size_t ndead;

    uint64_t file_len;               /* as written so far */
    uint64_t prealloc_start, prealloc_end;   /* falloc/full range */
    uint64_t cow_off, cow_len;       /* zeros after the end of a partial last cluster */
    uint64_t crypt_off, crypt_len;   /* the LUKS header's clusters, its length */
};

static bool is_used(const struct layout *L, uint64_t i)
{
    return i / 8 < L->used_bytes && (L->used[i / 8] >> (i % 8)) & 1;
}

static void set_used(struct layout *L, uint64_t i, bool v)
{
    if (i / 8 >= L->used_bytes) {
        if (!v)
            return;
        uint64_t n = QIMG_MAX(L->used_bytes * 2, i / 8 + 1024);
        L->used = qimg_xrealloc(L->used, n);
        memset(L->used + L->used_bytes, 0, n - L->used_bytes);
        L->used_bytes = n;
    }
    if (v)
        L->used[i / 8] |= (uint8_t)(1u << (i % 8));
    else
        L->used[i / 8] &= (uint8_t)~(1u << (i % 8));
}

static void file_written(struct layout *L, uint64_t off, uint64_t len)
{
    if (off + len > L->file_len)
        L->file_len = off + len;
}

/* First-fit run of n free clusters from the free index (refcounts untouched). */
static uint64_t alloc_noref(struct layout *L, uint64_t n)
{
    uint64_t found = 0;
    while (found < n) {
        uint64_t i = L->free_index++;
        found = is_used(L, i) ? 0 : found + 1;
    }
    return L->free_index - n;
}

static int update_refcount(struct layout *L, uint64_t first, uint64_t n, bool decrease);

static uint64_t refblock_of(const struct layout *L, uint64_t cluster)
{
    return cluster >> L->rb_bits;
}

uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size,
                                      unsigned refcount_order, bool generous,
                                      uint64_t *blocks_out)
{
    uint64_t per_table_cluster = cluster_size / 8;
    uint64_t per_block = cluster_size * 8 >> refcount_order;
    uint64_t table = 0, blocks = 0, n = 0, last;
    /* the smallest structure that also counts its own clusters */
    do {
        last = n;
        blocks = qimg_div_round_up(clusters + table + blocks, per_block);
        table = qimg_div_round_up(blocks, per_table_cluster);
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += qimg_div_round_up(table, 2);
            n = 0;
            generous = false;
        }
    } while (n != last);
    if (blocks_out)
        *blocks_out = blocks;
    return (blocks + table) * cluster_size;
}

static void kill_reftable(struct layout *L)
{
    size_t len = (size_t)(L->reftable_size * 8);
    uint8_t *buf = qimg_xmalloc(len);
    for (uint64_t i = 0; i < L->reftable_size; i++)
        qimg_put_be64(buf + i * 8, L->reftable[i]);
    L->dead = qimg_xrealloc(L->dead, (L->ndead + 1) * sizeof *L->dead);
    L->dead[L->ndead++] = (struct dead_region){ L->reftable_offset, buf, len };
}

/* A new refcount table with refcount blocks for the whole image from
 * start (a refcount block boundary or the file end) on: the missing blocks
 * first, then the table; every cluster of them counted.  Returns the end
 * offset of the area. */
static int64_t refcount_area(struct layout *L, uint64_t start, uint64_t additional, bool exact,
                             uint64_t new_index, uint64_t new_block)
{
    uint64_t total_blocks, table_size, cs = L->cs;
    qcow2_refcount_metadata_size(start / cs + additional, cs, L->refcount_order, !exact, &total_blocks);
    if (total_blocks > MAX_REFTABLE_SIZE)
        return -EFBIG;
    uint64_t area_index = (start / cs) >> L->rb_bits;
    table_size = exact ? total_blocks : total_blocks + qimg_div_round_up(total_blocks, 2);
    table_size = qimg_div_round_up(table_size, cs / 8) * (cs / 8);
    if (table_size > MAX_REFTABLE_SIZE)
        return -EFBIG;
    uint64_t table_clusters = table_size * 8 / cs;

    uint64_t *table = qimg_xcalloc(table_size, 8);
    memcpy(table, L->reftable, QIMG_MIN(table_size, L->reftable_size) * 8);
    if (new_block)
        table[new_index] = new_block;

    uint64_t missing = 0;
    for (uint64_t i = area_index; i < total_blocks; i++)
        missing += !table[i];
    uint64_t table_offset = start + missing * cs;
    uint64_t end = table_offset + table_clusters * cs;
    uint64_t next = start;
    for (uint64_t i = area_index; i < total_blocks; i++)
        if (!table[i]) {
            table[i] = next;
            next += cs;
        }
    for (uint64_t c = start / cs; c < end / cs; c++)
        set_used(L, c, true);
    file_written(L, start, end - start);

    uint64_t old_offset = L->reftable_offset, old_clusters = L->reftable_size * 8 / cs;
    kill_reftable(L);
    free(L->reftable);
    L->reftable = table;
    L->reftable_size = table_size;
    L->reftable_offset = table_offset;
    int r = update_refcount(L, old_offset / cs, old_clusters, true);
    return r < 0 ? r : (int64_t)end;
}

/* Make sure the refcount block for cluster exists.  Creating one changes
 * the allocation picture, so the caller must start over (-EAGAIN). */
static int alloc_refcount_block(struct layout *L, uint64_t cluster)
{
    uint64_t index = refblock_of(L, cluster);
    if (index < L->reftable_size && L->reftable[index])
        return 0;

    uint64_t new_block = alloc_noref(L, 1);
    if (refblock_of(L, new_block) == index) {
        set_used(L, new_block, true);       /* it counts itself */
    } else {
        int r = update_refcount(L, new_block, 1, false);
        if (r < 0)
            return r;
    }
    file_written(L, new_block * L->cs, L->cs);
    if (index < L->reftable_size) {
        L->reftable[index] = new_block * L->cs;
        return -EAGAIN;
    }

    /* the table is full: rebuild it after everything counted so far */
    uint64_t blocks_used = qimg_div_round_up(QIMG_MAX(cluster + 1, new_block + 1), 1ull << L->rb_bits);
    uint64_t meta_offset = (blocks_used << L->rb_bits) * L->cs;
    int64_t r = refcount_area(L, meta_offset, 0, false, index, new_block * L->cs);
    return r < 0 ? (int)r : -EAGAIN;
}

static int update_refcount(struct layout *L, uint64_t first, uint64_t n, bool decrease)
{
    uint64_t i, last_block = UINT64_MAX;
    int r = 0;
    for (i = first; i < first + n; i++) {
        if (refblock_of(L, i) != last_block) {
            last_block = refblock_of(L, i);
            r = alloc_refcount_block(L, i);
            if (r == -EAGAIN && L->free_index > first)
                L->free_index = first;
            if (r < 0)
                break;
        }
        set_used(L, i, !decrease);
        if (decrease && i < L->free_index)
            L->free_index = i;
    }
    if (r < 0 && i > first)
        update_refcount(L, first, i - first, !decrease);
    return r;
}

/* qemu's qcow2_alloc_clusters: returns the first cluster index. */
static int alloc_clusters(struct layout *L, uint64_t n, uint64_t *first)
{
    int r;
    do {
        *first = alloc_noref(L, n);
        r = update_refcount(L, *first, n, false);
    } while (r == -EAGAIN);
    return r;
}

/* Allocate up to n clusters at exactly first: how many were free there. */
static int alloc_clusters_at(struct layout *L, uint64_t first, uint64_t n, uint64_t *got)
{
    int r;
    do {
        uint64_t i = 0;
        while (i < n && !is_used(L, first + i))
            i++;
        *got = i;
        r = i ? update_refcount(L, first, i, false) : 0;
    } while (r == -EAGAIN);
    return r;
}

static int grow_l1(struct layout *L, uint64_t new_size)
{
    if (new_size <= L->l1_size)
        return 0;
    if (new_size > INT32_MAX / 8 || new_size > MAX_L1_BYTES / 8)
        return -EFBIG;
    uint64_t first;
    int r = alloc_clusters(L, qimg_div_round_up(new_size * 8, L->cs), &first);
    if (r < 0)
        return r;
    L->l1 = qimg_xrealloc(L->l1, new_size * 8);
    L->l2 = qimg_xrealloc(L->l2, new_size * sizeof *L->l2);
    memset(L->l1 + L->l1_size, 0, (new_size - L->l1_size) * 8);
    memset(L->l2 + L->l1_size, 0, (new_size - L->l1_size) * sizeof *L->l2);
    L->l1_offset = first * L->cs;
    L->l1_size = new_size;
    file_written(L, L->l1_offset, new_size * 8);
    return 0;
}

/* The L2 table covering guest cluster gc, allocated when missing. */
static int get_l2(struct layout *L, uint64_t gc, uint64_t **table)
{
    uint64_t idx = gc / L->l2_entries, first;
    if (!L->l2[idx]) {
        int r = alloc_clusters(L, 1, &first);
        if (r < 0)
            return r;
        L->l1[idx] = first * L->cs;
        L->l2[idx] = qimg_xcalloc(L->l2_entries, 8);
        file_written(L, first * L->cs, L->cs);
    }
    *table = L->l2[idx];
    return 0;
}

static int link_l2(struct layout *L, uint64_t gc, uint64_t host, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t *t;
        int r = get_l2(L, gc + i, &t);
        if (r < 0)
            return r;
        t[(gc + i) % L->l2_entries] = (host + i * L->cs) | OFLAG_COPIED;
    }
    return 0;
}

/* One allocation request as qemu's qcow2_alloc_host_offset: contiguous
 * host clusters for guest [off, off+*bytes), one L2 table at a time; stops
 * early when the run cannot be extended.  *host = start of the run. */
static int alloc_host_run(struct layout *L, uint64_t off, uint64_t *bytes, uint64_t *host)
{
    uint64_t done = 0, next = UINT64_MAX;
    *host = UINT64_MAX;
    while (done < *bytes) {
        uint64_t gc = (off + done) >> L->cluster_bits, *t;
        uint64_t want = qimg_div_round_up((off + done) % L->cs + (*bytes - done), L->cs);
        want = QIMG_MIN(want, L->l2_entries - gc % L->l2_entries);
        want = QIMG_MIN(want, MAX_REQUEST_BYTES >> L->cluster_bits);
        int r = get_l2(L, gc, &t);
        if (r < 0)
            return r;
        uint64_t start, got = want;
        if (L->data_file) {
            start = gc;                       /* guest offset == host offset */
        } else if (next == UINT64_MAX) {
            r = alloc_clusters(L, want, &start);
        } else {
            start = next;
            r = alloc_clusters_at(L, start, want, &got);
        }
        if (r < 0)
            return r;
        if (got == 0)
            break;
        r = link_l2(L, gc, start * L->cs, got);
        if (r < 0)
            return r;
        if (*host == UINT64_MAX)
            *host = start * L->cs + (off + done) % L->cs;
        next = start + got;
        done += QIMG_MIN(got * L->cs - (off + done) % L->cs, *bytes - done);
    }
    *bytes = done;
    return 0;
}

static int prealloc_metadata(struct layout *L, uint64_t size)
{
    uint64_t off = 0, host = 0, cur = 0;
    while (off < size) {
        cur = QIMG_MIN(size - off, qimg_round_down(INT32_MAX, L->cs));
        int r = alloc_host_run(L, off, &cur, &host);
        if (r < 0)
            return r;
        off += cur;
    }
    /* qemu copies-on-write the rest of a partly covered last cluster (or
     * subcluster with extended L2): zeros are written there, in the data
     * file when there is one */
    uint64_t unit = L->l2_entry_size == 16 ? L->cs / 32 : L->cs;
    if (size % unit) {
        uint64_t gc = (size - 1) / L->cs;
        uint64_t host_last = L->l2[gc / L->l2_entries][gc % L->l2_entries] & ~OFLAG_COPIED;
        L->cow_off = host_last + size % L->cs;
        L->cow_len = unit - size % unit;
        if (!L->data_file)
            file_written(L, L->cow_off, L->cow_len);
    }
    /* the file must reach the last allocated byte (sparse) */
    if (size && !L->data_file && host + cur > L->file_len)
        L->file_len = host + cur;
    return 0;
}

static int prealloc_falloc(struct layout *L, uint64_t size)
{
    uint64_t cs = L->cs;
    uint64_t last = qimg_div_round_up(L->file_len, cs);
    while (last > 0 && !is_used(L, last - 1))
        last--;
    uint64_t data_clusters = qimg_div_round_up(size, cs);
    uint64_t l2_tables = qimg_div_round_up(data_clusters, L->l2_entries) + 1;
    int64_t start = refcount_area(L, last * cs, data_clusters + l2_tables, true, 0, 0);
    if (start < 0)
        return (int)start;
    uint64_t got;
    int r = alloc_clusters_at(L, (uint64_t)start / cs, data_clusters, &got);
    if (r < 0)
        return r;
    if (got != data_clusters)
        return qimg_error(-EIO, "qcow2: preallocated area is not free");
    uint64_t end = (uint64_t)start + data_clusters * cs;
    L->prealloc_start = QIMG_MAX(L->file_len, (uint64_t)start);
    L->prealloc_end = end;
    if (end > L->file_len)
        L->file_len = end;
    uint64_t gc = 0, host = (uint64_t)start;
    while (gc < data_clusters) {
        uint64_t n = QIMG_MIN(data_clusters - gc, L->l2_entries - gc % L->l2_entries);
        r = link_l2(L, gc, host, n);
        if (r < 0)
            return r;
        gc += n;
        host += n * cs;
    }
    return 0;
}

static void layout_free(struct layout *L)
{
    free(L->used);
    free(L->reftable);
    free(L->l1);
    for (uint64_t i = 0; L->l2 && i < L->l1_size; i++)
        free(L->l2[i]);
    free(L->l2);
    for (size_t i = 0; i < L->ndead; i++)
        free(L->dead[i].buf);
    free(L->dead);
}

/* qemu sets encryption up last: the LUKS header's clusters follow
 * everything the image has so far. */
static int plan_crypt(struct layout *L, const struct create_opts *c)
{
    if (!c->encrypt || !c->luks)
        return 0;
    uint64_t first;
    L->crypt_len = luks_header_size(&c->luks_params);
    int r = alloc_clusters(L, qimg_div_round_up(L->crypt_len, L->cs), &first);
    L->crypt_off = first << L->cluster_bits;
    return r;
}

static int plan_layout_data(struct layout *L, const struct create_opts *c);

static int plan_layout(struct layout *L, const struct create_opts *c)
{
    int r = plan_layout_data(L, c);
    return r < 0 ? r : plan_crypt(L, c);
}

static int plan_layout_data(struct layout *L, const struct create_opts *c)
{
    memset(L, 0, sizeof *L);
    L->cluster_bits = c->cluster_bits;
    L->cs = c->cluster_size;
    L->refcount_order = c->refcount_order;
    L->rb_bits = c->cluster_bits + 3 - c->refcount_order;
    L->l2_entry_size = c->extended_l2 ? 16 : 8;
    L->l2_entries = L->cs / L->l2_entry_size;
    L->data_file = c->data_file != NULL;

    /* what qemu writes before it opens the image: header, a table with
     * one entry and an empty refcount block */
    L->reftable_size = L->cs / 8;
    L->reftable = qimg_xcalloc(L->reftable_size, 8);
    L->reftable[0] = 2 * L->cs;
    L->reftable_offset = L->cs;
    L->file_len = 3 * L->cs;
    uint64_t first;
    int r = alloc_clusters(L, 3, &first);
    if (r < 0)
        return r;

    uint64_t l2_span = L->cs * L->l2_entries;
    r = grow_l1(L, c->size / l2_span + (c->size % l2_span != 0));
    if (r < 0)
        return r;
    switch (c->prealloc) {
    case PREALLOC_OFF:
        return 0;
    case PREALLOC_METADATA:
        return prealloc_metadata(L, c->size);
    default:
        if (L->data_file)
            return prealloc_metadata(L, c->size);
        return prealloc_falloc(L, c->size);
    }
}

/* ====================================================== writing */

struct ext_buf { uint8_t *buf; size_t len, cap; };

static int add_ext(struct ext_buf *b, uint32_t type, const void *data, size_t len)
{
    size_t need = 8 + ((len + 7) & ~(size_t)7);
    if (b->len + need > b->cap)
        return -ENOSPC;
    qimg_put_be32(b->buf + b->len, type);
    qimg_put_be32(b->buf + b->len + 4, (uint32_t)len);
    if (len)
        memcpy(b->buf + b->len + 8, data, len);
    b->len += need;
    return 0;
}

static void feature_table(uint8_t *t)
{
    static const struct { uint8_t type, bit; const char *name; } f[] = {
        { 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
        { 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
        { 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
    };
    memset(t, 0, 8 * 48);
    for (int i = 0; i < 8; i++) {
        t[i * 48] = f[i].type;
        t[i * 48 + 1] = f[i].bit;
        memcpy(t + i * 48 + 2, f[i].name, strlen(f[i].name));
    }
}

static int build_header(const struct create_opts *c, const struct layout *L, uint8_t *h)
{
    size_t hlen = c->version >= 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH;
    memset(h, 0, L->cs);
    qimg_put_be32(h + 0, QCOW2_MAGIC);
    qimg_put_be32(h + 4, (uint32_t)c->version);
    qimg_put_be32(h + 20, c->cluster_bits);
    qimg_put_be64(h + 24, c->size);
    qimg_put_be32(h + 36, (uint32_t)L->l1_size);
    qimg_put_be64(h + 40, L->l1_offset);
    qimg_put_be64(h + 48, L->reftable_offset);
    qimg_put_be32(h + 56, (uint32_t)(L->reftable_size * 8 / L->cs));
    if (c->encrypt)
        qimg_put_be32(h + 32, c->luks ? 2 : 1);
    if (c->version >= 3) {
        uint64_t incompat = 0;
        if (c->data_file)
            incompat |= INCOMPAT_DATA_FILE;
        if (c->zstd)
            incompat |= INCOMPAT_COMPRESSION;
        if (c->extended_l2)
            incompat |= INCOMPAT_EXTL2;
        qimg_put_be64(h + 72, incompat);
        qimg_put_be64(h + 80, c->lazy_refcounts ? COMPAT_LAZY_REFCOUNTS : 0);
        qimg_put_be64(h + 88, c->data_file_raw ? AUTOCLEAR_DATA_FILE_RAW : 0);
        qimg_put_be32(h + 96, c->refcount_order);
        qimg_put_be32(h + 100, V3_HEADER_LENGTH);
        h[104] = c->zstd ? 1 : 0;
    }

    struct ext_buf e = { h + hlen, 0, L->cs - hlen };
    int r = 0;
    if (c->backing_fmt && c->backing_file)
        r = add_ext(&e, EXT_BACKING_FORMAT, c->backing_fmt,
                    strnlen(c->backing_fmt, QCOW2_BACKING_FMT_MAX));
    if (r == 0 && c->data_file)
        r = add_ext(&e, EXT_DATA_FILE, c->data_file, strlen(c->data_file));
    if (r == 0 && L->crypt_len) {
        uint8_t ext[16];
        qimg_put_be64(ext, L->crypt_off);
        qimg_put_be64(ext + 8, L->crypt_len);
        r = add_ext(&e, EXT_CRYPTO, ext, sizeof ext);
    }
    if (r == 0 && c->version >= 3 && L->cs > 4096) {
        uint8_t t[8 * 48];
        feature_table(t);
        r = add_ext(&e, EXT_FEATURE_TABLE, t, sizeof t);
    }
    if (r == 0)
        r = add_ext(&e, 0, NULL, 0);
    if (r < 0)
        return r;
    if (c->backing_file) {
        size_t n = strlen(c->backing_file);
        if (n > MAX_BACKING_NAME)
            return -EINVAL;
        if (e.len + n > e.cap)
            return -ENOSPC;
        memcpy(e.buf + e.len, c->backing_file, n);
        qimg_put_be64(h + 8, hlen + e.len);
        qimg_put_be32(h + 16, (uint32_t)n);
    }
    return 0;
}

static void put_refcount(uint8_t *block, unsigned order, uint64_t i)
{
    unsigned bits = 1u << order;
    if (bits < 8)
        block[i * bits / 8] |= (uint8_t)(1u << (i * bits % 8));
    else
        block[i * (bits / 8) + bits / 8 - 1] = 1;   /* big-endian 1 */
}

static int write_refblocks(struct qimg_io *io, const struct layout *L, uint8_t *buf)
{
    uint64_t per = 1ull << L->rb_bits;
    for (uint64_t b = 0; b < L->reftable_size; b++) {
        if (!L->reftable[b])
            continue;
        memset(buf, 0, L->cs);
        for (uint64_t i = 0; i < per; i++)
            if (is_used(L, b * per + i))
                put_refcount(buf, L->refcount_order, i);
        int r = qimg_io_pwrite(io, buf, L->cs, L->reftable[b]);
        if (r < 0)
            return r;
    }
    return 0;
}

static int write_tables(struct qimg_io *io, const struct layout *L, uint8_t *buf)
{
    CLEANUP_FREE uint8_t *table = qimg_xmalloc(L->reftable_size * 8);
    for (uint64_t i = 0; i < L->reftable_size; i++)
        qimg_put_be64(table + i * 8, L->reftable[i]);
    int r = qimg_io_pwrite(io, table, L->reftable_size * 8, L->reftable_offset);
    if (r == 0 && L->l1_size) {
        CLEANUP_FREE uint8_t *l1 = qimg_xmalloc(L->l1_size * 8);
        for (uint64_t i = 0; i < L->l1_size; i++)
            qimg_put_be64(l1 + i * 8, L->l1[i] ? L->l1[i] | OFLAG_COPIED : 0);
        r = qimg_io_pwrite(io, l1, L->l1_size * 8, L->l1_offset);
    }
    for (uint64_t i = 0; r == 0 && i < L->l1_size; i++) {
        if (!L->l2[i])
            continue;
        memset(buf, 0, L->cs);
        for (uint64_t j = 0; j < L->l2_entries; j++)
            qimg_put_be64(buf + j * L->l2_entry_size, L->l2[i][j]);
        r = qimg_io_pwrite(io, buf, L->cs, L->l1[i]);
    }
    return r;
}

static int write_zeros(struct qimg_io *io, uint64_t off, uint64_t len)
{
    CLEANUP_FREE uint8_t *zeros = qimg_xcalloc(1, len);
    return qimg_io_pwrite(io, zeros, len, off);
}

static int write_image(const char *filename, const struct create_opts *c, const struct layout *L,
                       const uint8_t *header)
{
    struct qimg_io *io;
    int r = qimg_io_open(&io, filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(L->cs);
    r = qimg_io_truncate(io, L->file_len);
    if (r < 0 && io->ops->create_by_opening) {
        /* storage that cannot grow (nbd): qemu's resize of the new image */
        CLEANUP_FREE char *msg = qimg_strdup(qimg_last_error());
        r = qimg_error(r, "Could not resize image: %s", msg);
    }
    if (r == 0 && L->prealloc_end > L->prealloc_start)
        r = io->ops->preallocate ? io->ops->preallocate(io, L->prealloc_start,
                                                        L->prealloc_end - L->prealloc_start,
                                                        c->prealloc == PREALLOC_FULL)
                                 : -ENOTSUP;
    if (r == 0 && L->cow_len && !L->data_file)
        r = write_zeros(io, L->cow_off, L->cow_len);
    for (size_t i = 0; r == 0 && i < L->ndead; i++)
        r = qimg_io_pwrite(io, L->dead[i].buf, L->dead[i].len, L->dead[i].off);
    if (r == 0)
        r = qimg_io_pwrite(io, header, L->cs, 0);
    if (r == 0)
        r = write_refblocks(io, L, buf);
    if (r == 0)
        r = write_tables(io, L, buf);
    if (r == 0 && L->crypt_len) {
        /* the clusters zeroed, then the LUKS header and keyslot 0 */
        struct luks_store st = { .io = io, .base = L->crypt_off, .limit = L->crypt_len };
        r = write_zeros(io, L->crypt_off, qimg_div_round_up(L->crypt_len, L->cs) * L->cs);
        if (r == 0)
            r = luks_format(&st, &c->luks_params, NULL);
    }
    if (r == 0)
        r = qimg_io_flush(io);
    qimg_io_close(io);
    if (r < 0 && !qimg_last_error()[0])
        qimg_error(r, "Could not write image: %s", strerror(-r));
    return r;
}

/* The external data file: created like a raw file by the file protocol
 * (qemu passes the image's size and preallocation mode on). */
static int create_data_file(const struct create_opts *c, const struct layout *L)
{
    struct qimg_io *io;
    int r = qimg_io_open(&io, c->data_file, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return qimg_error(r, "Could not create '%s': %s", c->data_file, strerror(-r));
    r = qimg_io_truncate(io, c->size);
    if (r == 0 && c->size && (c->prealloc == PREALLOC_FALLOC || c->prealloc == PREALLOC_FULL))
        r = io->ops->preallocate ? io->ops->preallocate(io, 0, c->size, c->prealloc == PREALLOC_FULL)
                                 : -ENOTSUP;
    else if (r == 0 && c->size) {
        /* like qemu's file protocol: the first block is allocated */
        uint8_t zeros[4096] = { 0 };
        r = qimg_io_pwrite(io, zeros, (size_t)QIMG_MIN(c->size, sizeof zeros), 0);
    }
    if (r == 0 && L->cow_len)
        r = write_zeros(io, L->cow_off, L->cow_len);
    qimg_io_close(io);
    return r;
}

/* The secret (and, for LUKS, a cipher this build can run) before
 * anything is written. */
static int check_encryption_late(const struct create_opts *c)
{
    if (!c->encrypt)
        return 0;
    if (!c->key_secret)
        return qimg_error(-EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    char *data = NULL;
    size_t len = 0;
    if (qimg_secret_lookup(c->key_secret, &data, &len) < 0)
        return qimg_error(-EINVAL, "No secret with id '%s'", c->key_secret);
    qimg_wipe_free(data, len);
    if (!qimg_crypto_available())
        return -ENOTSUP;
    int r = c->luks ? luks_create_params_check(&c->luks_params) : 0;
    if (r < 0)
        return r;
    if (c->luks && !qimg_cipher_usable(c->luks_params.alg, c->luks_params.mode))
        return -ENOTSUP;
    return 0;
}

int qcow2_create(struct qimg_create_ctx *ctx)
{
    struct create_opts c;
    struct layout L;
    int r = parse_create_opts(ctx, &c);
    if (r < 0)
        return r;
    r = plan_layout(&L, &c);
    if (r == 0)
        r = check_encryption_late(&c);
    if (r < 0) {
        layout_free(&L);
        return r;    /* -EFBIG: the core says the image is too large */
    }
    CLEANUP_FREE uint8_t *header = qimg_xmalloc(L.cs);
    r = build_header(&c, &L, header);
    if (r < 0) {
        layout_free(&L);
        return qimg_error(r, "Could not assign backing file '%s' with format '%s': %s",
                          c.backing_file, c.backing_fmt ? c.backing_fmt : "", strerror(-r));
    }
    if (c.data_file) {
        r = create_data_file(&c, &L);
        if (r < 0) {
            layout_free(&L);
            return r;
        }
    }
    r = write_image(ctx->filename, &c, &L, header);
    if (r < 0 && c.data_file)
        unlink(c.data_file);
    layout_free(&L);
    return r;
}
