/* qimg - qcow (version 1), QEMU's first copy-on-write format.
 *
 * Layout (all big-endian), written from the format as qemu reads it:
 *   0  magic "QFI\xfb"     4  version 1
 *   8  backing_file_offset (0: none)   16  backing_file_size
 *  20  mtime (unused)     24  size (guest bytes)
 *  32  cluster_bits (9..16)  33  l2_bits (6..13: entries per L2 table)
 *  34  padding            36  crypt_method (0 none, 1 AES)
 *  40  l1_table_offset
 * The backing file name follows the 48-byte header, the L1 table after it
 * (8-aligned): one entry per 2^(cluster_bits + l2_bits) guest bytes, the
 * L2 table's offset or 0.  An L2 entry is a cluster's offset, or 0 (read
 * from the backing file), or with bit 63 set a compressed cluster: raw
 * deflate of the whole cluster, its size in the bits above the offset
 * (offset in bits 0 .. 62 - cluster_bits, size in 63 - cluster_bits .. 62).
 * New L2 tables and clusters go at the end of the file rounded up to a
 * cluster, compressed data at the end rounded up to a sector.  There are no zero
 * clusters, no refcounts and no check.
 * Encryption (crypt_method 1, qemu's legacy "aes"): AES-128-CBC of each
 * 512-byte sector of a data cluster, the key the passphrase's first 16
 * bytes zero-padded, the IV the guest sector number (plain64); compressed
 * clusters are not encrypted.  The cipher is src/lib/crypto.h's (OpenSSL).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>

#include "codec.h"
#include "crypto.h"
#include "internal.h"

#define QCOW_MAGIC          0x514649fbu
#define QCOW_VERSION        1
#define QCOW_HEADER_SIZE    48
#define QCOW_CRYPT_NONE     0
#define QCOW_CRYPT_AES      1
#define QCOW_COMPRESSED     (1ull << 63)
#define QCOW_BACKING_MAX    1023
#define QCOW_L2_CACHE       16
#define SECTOR              512u

enum {
    OFF_VERSION = 4, OFF_BACKING_OFF = 8, OFF_BACKING_LEN = 16, OFF_MTIME = 20, OFF_SIZE = 24,
    OFF_CLUSTER_BITS = 32, OFF_L2_BITS = 33, OFF_CRYPT = 36, OFF_L1 = 40,
};

static const struct qimg_opt_desc qcow_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "backing_file", QIMG_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Format of the backing image", NULL },
    { "encryption", QIMG_OPT_BOOL, "Encrypt the image with format 'aes'. (Deprecated in favor of "
      "encrypt.format=aes)", NULL },
    { "encrypt.format", QIMG_OPT_STRING, "Encrypt the image, format choices: 'aes'", NULL },
    { "encrypt.key-secret", QIMG_OPT_STRING, "ID of the secret that provides the AES encryption key",
      NULL },
    { NULL, 0, NULL, NULL },
};

struct qcow_l2 {
    uint64_t off;             /* 0: a free slot */
    uint8_t *table;           /* as on disk */
    uint64_t used;
};

struct qcow_state {
    uint8_t header[QCOW_HEADER_SIZE];
    unsigned cluster_bits, l2_bits;
    uint64_t cluster_size, l2_bytes;
    uint64_t offset_mask;     /* a compressed entry's offset bits */
    uint64_t l1_offset, l1_size;
    uint8_t *l1;              /* the first l1_loaded entries, as on disk */
    uint64_t l1_loaded;       /* those in the file; the others read as 0 */
    struct qcow_l2 cache[QCOW_L2_CACHE];
    uint64_t clock;
    uint64_t file_size;       /* kept up to date while writing */
    uint32_t crypt;
    struct qimg_sector_cipher *aes;   /* crypt_method 1 with its key */
    pthread_mutex_t rmw_lock;         /* encrypted writes of part of a sector */
    bool writable;
};

static struct qcow_state *state(struct qimg_image *img) { return img->opaque; }

static int qcow_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    return len >= QCOW_HEADER_SIZE && qimg_be32(buf) == QCOW_MAGIC &&
           qimg_be32(buf + OFF_VERSION) == QCOW_VERSION ? 100 : 0;
}

/* ------------------------------------------------------------ open */

/* The header's fields, checked in qemu's order with its messages. */
static int parse_header(struct qimg_image *img, struct qcow_state *s)
{
    const uint8_t *h = s->header;
    if (qimg_be32(h) != QCOW_MAGIC)
        return qimg_error(-EINVAL, "Image not in qcow format");
    uint32_t version = qimg_be32(h + OFF_VERSION);
    if (version != QCOW_VERSION)
        return qimg_error(-ENOTSUP, "qcow (v%d) does not support qcow version %" PRIu32 "%s",
                          QCOW_VERSION, version,
                          version == 2 || version == 3 ? "\nTry the 'qcow2' driver instead." : "");
    uint64_t size = qimg_be64(h + OFF_SIZE);
    if (size <= 1)
        return qimg_error(-EINVAL, "Image size is too small (must be at least 2 bytes)");
    s->cluster_bits = h[OFF_CLUSTER_BITS];
    if (s->cluster_bits < 9 || s->cluster_bits > 16)
        return qimg_error(-EINVAL, "Cluster size must be between 512 and 64k");
    s->l2_bits = h[OFF_L2_BITS];
    if (s->l2_bits < 9 - 3 || s->l2_bits > 16 - 3)
        return qimg_error(-EINVAL, "L2 table size must be between 512 and 64k");
    s->crypt = qimg_be32(h + OFF_CRYPT);
    s->cluster_size = 1ull << s->cluster_bits;
    s->l2_bytes = 8ull << s->l2_bits;
    s->offset_mask = (1ull << (63 - s->cluster_bits)) - 1;
    unsigned shift = s->cluster_bits + s->l2_bits;
    if (size > UINT64_MAX - (1ull << shift))
        return qimg_error(-EINVAL, "Image too large");
    s->l1_size = (size + (1ull << shift) - 1) >> shift;
    if (s->l1_size > INT_MAX / 8)
        return qimg_error(-EINVAL, "Image too large");
    s->l1_offset = qimg_be64(h + OFF_L1);
    /* qemu counts the disk in whole sectors */
    img->size = size / SECTOR * SECTOR;
    return 0;
}

/* The L1 table as far as the file holds it: entries past the end of the
 * file read as 0, as in qemu, and take no memory (a header may claim a
 * table of 2 GiB). */
static int read_l1(struct qimg_image *img, struct qcow_state *s)
{
    if (s->l1_offset < s->file_size)
        s->l1_loaded = QIMG_MIN(s->l1_size, (s->file_size - s->l1_offset) / 8);
    s->l1 = qimg_calloc_from_image(s->l1_loaded ? s->l1_loaded : 1, 8, "qcow L1 table");
    if (!s->l1)
        return -ENOMEM;
    return qimg_io_pread(img->file, s->l1, s->l1_loaded * 8, s->l1_offset);
}

/* Room in memory for L1 entry idx (a write past what the file held). */
static int l1_reserve(struct qcow_state *s, uint64_t idx)
{
    if (idx < s->l1_loaded)
        return 0;
    uint8_t *l1 = realloc(s->l1, (idx + 1) * 8);
    if (!l1)
        return qimg_error(-ENOMEM, "qcow: out of memory for the L1 table");
    memset(l1 + s->l1_loaded * 8, 0, (idx + 1 - s->l1_loaded) * 8);
    s->l1 = l1;
    s->l1_loaded = idx + 1;
    return 0;
}

static int read_backing_name(struct qimg_image *img, struct qcow_state *s)
{
    uint64_t off = qimg_be64(s->header + OFF_BACKING_OFF);
    uint32_t len = qimg_be32(s->header + OFF_BACKING_LEN);
    if (off == 0)
        return 0;
    if (len > QCOW_BACKING_MAX)
        return qimg_error(-EINVAL, "Backing file name too long");
    char name[QCOW_BACKING_MAX + 1];
    int r = qimg_io_pread(img->file, name, len, off);
    if (r < 0)
        return r;
    name[len] = '\0';
    if (name[0])
        img->backing_file = qimg_strdup(name);
    return 0;
}

/* The encryption options (encrypt.format, encrypt.key-secret) against
 * the header, in qemu's order and words; the key made for AES (not for an
 * open that reads no data). */
static int open_crypto(struct qcow_state *s, qimg_opts *opts, unsigned flags)
{
    const char *fmt = NULL, *secret = NULL;
    int r = qimg_opts_get_string(opts, "encrypt.format", &fmt);
    if (r >= 0)
        r = qimg_opts_get_string(opts, "encrypt.key-secret", &secret);
    if (r < 0)
        return r;
    if (s->crypt == QCOW_CRYPT_NONE)
        return fmt ? qimg_error(-EINVAL, "No encryption in image header, but options specified "
                                "format '%s'", fmt) : 0;
    if (s->crypt != QCOW_CRYPT_AES)
        return qimg_error(-EINVAL, "invalid encryption method in qcow header");
    if (fmt && strcmp(fmt, "aes") != 0)
        return qimg_error(-EINVAL, "Header reported 'aes' encryption format but options specify "
                          "'%s'", fmt);
    if (flags & QIMG_OPEN_NO_IO)
        return 0;
    if (!secret)
        return qimg_error(-EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    if (!qimg_crypto_available())
        return -ENOTSUP;
    char *pass = NULL;
    size_t len = 0;
    uint8_t key[16] = { 0 };
    r = qimg_secret_lookup(secret, &pass, &len);
    if (r < 0)
        return r;
    memcpy(key, pass, QIMG_MIN(len, sizeof key));
    qimg_wipe_free(pass, len);
    r = qimg_sector_cipher_new(&s->aes, QIMG_CIPHER_AES_128, QIMG_MODE_CBC, QIMG_IVGEN_PLAIN64,
                               QIMG_HASH_SHA256, key, sizeof key);
    qimg_wipe(key, sizeof key);
    return r;
}

/* Encrypt or decrypt whole sectors of guest offset guest in place. */
static int crypt_run(const struct qcow_state *s, bool encrypt, uint64_t guest, uint8_t *buf,
                     size_t len)
{
    return qimg_sector_cipher_run(s->aes, encrypt, guest / SECTOR, SECTOR, buf, len);
}

static void free_state(struct qimg_image *img)
{
    struct qcow_state *s = state(img);
    if (s) {
        for (size_t i = 0; i < QCOW_L2_CACHE; i++)
            free(s->cache[i].table);
        free(s->l1);
        qimg_sector_cipher_free(s->aes);
        pthread_mutex_destroy(&s->rmw_lock);
    }
    free(s);
    img->opaque = NULL;
}

static int qcow_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    struct qcow_state *s = qimg_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->rmw_lock, NULL);
    img->opaque = s;
    int r = qimg_io_pread(img->file, s->header, QCOW_HEADER_SIZE, 0);
    if (r == 0)
        r = qimg_io_get_size(img->file, &s->file_size);
    if (r == 0)
        r = parse_header(img, s);
    if (r == 0)
        r = open_crypto(s, opts, flags);
    if (r == 0)
        r = read_l1(img, s);
    if (r == 0)
        r = read_backing_name(img, s);
    if (r < 0) {
        free_state(img);
        free(img->backing_file);
        img->backing_file = NULL;
        return r;
    }
    s->writable = !img->read_only && (flags & QIMG_OPEN_RDWR);
    return 0;
}

static void qcow_close(struct qimg_image *img)
{
    free_state(img);
}

static int qcow_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    struct qcow_state *s = state(img);
    info->cluster_size = (int64_t)s->cluster_size;
    info->has_dirty = true;
    info->dirty = false;
    info->encrypted = s->crypt != QCOW_CRYPT_NONE;
    return 0;
}

/* ------------------------------------------------------------ mapping */

static uint64_t l1_entry(const struct qcow_state *s, uint64_t i)
{
    return i < s->l1_loaded ? qimg_be64(s->l1 + 8 * i) : 0;
}

/* The L2 table at off through a small LRU cache (under img->lock); the
 * pointer stays valid until the next call.  fresh: a new, zeroed table. */
static int get_l2(struct qimg_image *img, uint64_t off, bool fresh, uint8_t **table)
{
    struct qcow_state *s = state(img);
    struct qcow_l2 *victim = &s->cache[0];
    for (size_t i = 0; i < QCOW_L2_CACHE; i++) {
        struct qcow_l2 *e = &s->cache[i];
        if (e->table && e->off == off) {
            victim = e;
            goto found;
        }
        if (e->used < victim->used)
            victim = e;
    }
    if (!victim->table) {
        victim->table = qimg_alloc_from_image(s->l2_bytes, "qcow L2 table");
        if (!victim->table)
            return -ENOMEM;
    }
    victim->off = 0;
    if (fresh) {
        memset(victim->table, 0, s->l2_bytes);
    } else {
        qimg_io_event(img->file, QIMG_EV_L2_LOAD);
        int r = qimg_io_pread(img->file, victim->table, s->l2_bytes, off);
        if (r < 0)
            return r;
    }
    victim->off = off;
found:
    if (fresh)
        memset(victim->table, 0, s->l2_bytes);
    victim->used = ++s->clock;
    *table = victim->table;
    return 0;
}

static void drop_l2_cache(struct qcow_state *s)
{
    for (size_t i = 0; i < QCOW_L2_CACHE; i++)
        s->cache[i].off = 0;
}

/* The L2 entry of guest offset off (0 when its table is missing). */
static int lookup(struct qimg_image *img, uint64_t off, uint64_t *entry)
{
    struct qcow_state *s = state(img);
    uint64_t l2_off = l1_entry(s, off >> (s->l2_bits + s->cluster_bits));
    *entry = 0;
    if (l2_off == 0)
        return 0;
    uint8_t *t;
    int r = get_l2(img, l2_off, false, &t);
    if (r == 0)
        *entry = qimg_be64(t + 8 * ((off >> s->cluster_bits) & ((1ull << s->l2_bits) - 1)));
    return r;
}

/* The run from off (at most len bytes) of clusters alike: all unallocated,
 * all compressed, or allocated at consecutive offsets (entry of the first).
 * Missing L2 tables are skipped whole. */
static int find_run(struct qimg_image *img, uint64_t off, uint64_t len, uint64_t *first,
                    uint64_t *run)
{
    struct qcow_state *s = state(img);
    unsigned span_bits = s->l2_bits + s->cluster_bits;
    uint64_t in = off & (s->cluster_size - 1), next = off - in + s->cluster_size, e;
    int r = lookup(img, off, first);
    *run = QIMG_MIN(len, s->cluster_size - in);
    while (r == 0 && *run < len) {
        uint64_t step = s->cluster_size;
        if (*first == 0 && l1_entry(s, next >> span_bits) == 0) {
            e = 0;
            step = (1ull << span_bits) - (next & ((1ull << span_bits) - 1));
        } else {
            r = lookup(img, next, &e);
        }
        bool alike = (*first == 0 && e == 0) ||
                     ((*first & QCOW_COMPRESSED) && (e & QCOW_COMPRESSED)) ||
                     (*first && !(*first & QCOW_COMPRESSED) && e == *first + (next - (off - in)));
        if (r < 0 || !alike)
            break;
        *run = QIMG_MIN(len, next + step - off);
        next += step;
    }
    return r;
}

static int read_compressed(struct qimg_image *img, uint64_t entry, uint8_t *cluster)
{
    struct qcow_state *s = state(img);
    uint64_t host = entry & s->offset_mask;
    uint64_t csize = (entry >> (63 - s->cluster_bits)) & (s->cluster_size - 1);
    CLEANUP_FREE uint8_t *src = qimg_alloc_from_image(csize ? csize : 1, "compressed cluster");
    if (!src)
        return -ENOMEM;
    qimg_io_event(img->file, QIMG_EV_READ_COMPRESSED);
    int r = qimg_io_pread(img->file, src, csize, host);
    if (r < 0)
        return r;
    r = qimg_codec_decompress(QIMG_CODEC_DEFLATE, src, csize, cluster, s->cluster_size, NULL);
    if (r == -ENOTSUP)
        return qimg_error(r, "qcow: zlib decompression is not available");
    if (r < 0)
        return qimg_error(-EIO, "qcow: compressed cluster data is corrupt");
    return 0;
}

static int read_run(struct qimg_image *img, uint64_t off, uint8_t *p, uint64_t n, uint64_t entry)
{
    struct qcow_state *s = state(img);
    uint64_t in = off & (s->cluster_size - 1);
    if (entry == 0) {
        qimg_io_event(img->file, QIMG_EV_READ_BACKING_AIO);
        return qimg_read_backing(img, off, p, n);
    }
    if (!(entry & QCOW_COMPRESSED)) {
        if (entry & (SECTOR - 1))
            return qimg_error(-EIO, "qcow: cluster offset 0x%" PRIx64 " is not sector-aligned", entry);
        qimg_io_event(img->file, QIMG_EV_READ_AIO);
        int r = qimg_io_pread(img->file, p, n, entry + in);
        return r == 0 && s->aes ? crypt_run(s, false, off, p, n) : r;
    }
    CLEANUP_FREE uint8_t *cluster = qimg_alloc_from_image(s->cluster_size, "qcow cluster");
    if (!cluster)
        return -ENOMEM;
    /* a run of compressed clusters: each its own stream */
    while (n > 0) {
        uint64_t e;
        pthread_mutex_lock(&img->lock);
        int r = lookup(img, off, &e);
        pthread_mutex_unlock(&img->lock);
        if (r == 0)
            r = read_compressed(img, e, cluster);
        if (r < 0)
            return r;
        uint64_t k = QIMG_MIN(n, s->cluster_size - in);
        memcpy(p, cluster + in, k);
        p += k;
        off += k;
        n -= k;
        in = 0;
    }
    return 0;
}

static int qcow_read(struct qimg_image *img, uint64_t off, void *buf, size_t len);

/* An encrypted image is read and written in whole sectors (qemu's request
 * alignment): a request that is not is widened to them. */
static bool sector_aligned(uint64_t off, size_t len) { return off % SECTOR == 0 && len % SECTOR == 0; }

static int read_widened(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    uint64_t start = qimg_round_down(off, SECTOR);
    uint64_t end = QIMG_MIN(qimg_div_round_up(off + len, SECTOR) * SECTOR, img->size);
    CLEANUP_FREE uint8_t *tmp = qimg_xmalloc((size_t)(end - start));
    int r = qcow_read(img, start, tmp, (size_t)(end - start));
    if (r == 0)
        memcpy(buf, tmp + (off - start), len);
    return r;
}

static int qcow_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    if (state(img)->aes && !sector_aligned(off, len))
        return read_widened(img, off, buf, len);
    uint8_t *p = buf;
    while (len > 0) {
        uint64_t entry, run;
        pthread_mutex_lock(&img->lock);
        int r = find_run(img, off, len, &entry, &run);
        pthread_mutex_unlock(&img->lock);
        if (r == 0)
            r = read_run(img, off, p, run, entry);
        if (r < 0)
            return r;
        p += run;
        off += run;
        len -= run;
    }
    return 0;
}

/* Allocated clusters are data at a host offset; compressed ones data
 * without one, as qemu reports them. */
static int qcow_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    struct qcow_state *s = state(img);
    uint64_t entry;
    pthread_mutex_lock(&img->lock);
    int r = find_run(img, off, len, &entry, &ext->length);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    ext->flags = 0;
    if (entry & QCOW_COMPRESSED) {
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_COMPRESSED;
    } else if (entry && s->crypt != QCOW_CRYPT_NONE) {
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED;     /* no host offset, as qemu */
    } else if (entry) {
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET;
        ext->host_offset = entry + (off & (s->cluster_size - 1));
        ext->host_file = img->file->filename;
    }
    return 0;
}

/* ------------------------------------------------------------ writing */

static int grow_file(struct qimg_image *img, uint64_t end)
{
    struct qcow_state *s = state(img);
    if (end <= s->file_size)
        return 0;
    int r = qimg_io_truncate(img->file, end);
    if (r == 0)
        s->file_size = end;
    return r;
}

static int new_cluster_offset(struct qcow_state *s, uint64_t *off)
{
    if (!qimg_round_up_ok(s->file_size, s->cluster_size, off) ||
        *off + s->cluster_size > INT64_MAX)
        return qimg_error(-E2BIG, "qcow image file too large");
    return 0;
}

/* The L2 table for guest offset off, made at the end of the file (written,
 * then linked into L1) when missing. */
static int l2_for_write(struct qimg_image *img, uint64_t off, uint64_t *l2_off, uint8_t **table)
{
    struct qcow_state *s = state(img);
    uint64_t idx = off >> (s->l2_bits + s->cluster_bits);
    *l2_off = l1_entry(s, idx);
    if (*l2_off)
        return get_l2(img, *l2_off, false, table);
    int r = new_cluster_offset(s, l2_off);
    if (r == 0)
        r = get_l2(img, *l2_off, true, table);
    if (r == 0)
        r = qimg_io_pwrite(img->file, *table, s->l2_bytes, *l2_off);
    if (r == 0)
        s->file_size = QIMG_MAX(s->file_size, *l2_off + s->l2_bytes);
    uint8_t be[8];
    qimg_put_be64(be, *l2_off);
    qimg_io_event(img->file, QIMG_EV_L1_UPDATE);
    if (r == 0)
        r = qimg_io_pwrite(img->file, be, 8, s->l1_offset + 8 * idx);
    if (r == 0)
        r = l1_reserve(s, idx);
    if (r < 0) {
        drop_l2_cache(s);
        return r;
    }
    memcpy(s->l1 + 8 * idx, be, 8);
    return 0;
}

static int set_l2_entry(struct qimg_image *img, uint64_t l2_off, uint8_t *table, uint64_t off,
                        uint64_t value)
{
    struct qcow_state *s = state(img);
    uint64_t idx = (off >> s->cluster_bits) & ((1ull << s->l2_bits) - 1);
    qimg_put_be64(table + 8 * idx, value);
    qimg_io_event(img->file, value & QCOW_COMPRESSED ? QIMG_EV_L2_UPDATE_COMPRESSED : QIMG_EV_L2_UPDATE);
    int r = qimg_io_pwrite(img->file, table + 8 * idx, 8, l2_off + 8 * idx);
    if (r < 0)
        drop_l2_cache(s);
    return r;
}

/* A new cluster for the one at guest cluster_start: what the write of
 * [in, in+n) does not cover holds the cluster's old content (a compressed
 * cluster, decompressed), else the backing file's (qemu 7.2 leaves zeros
 * there, which a cluster larger than a sector over a backing file did not
 * read as), else zeros. */
static int allocate_cluster(struct qimg_image *img, uint64_t cluster_start, uint64_t entry,
                            uint64_t in, uint64_t n, uint64_t *host)
{
    struct qcow_state *s = state(img);
    int r = new_cluster_offset(s, host);
    if (r < 0)
        return r;
    qimg_io_event(img->file, QIMG_EV_CLUSTER_ALLOC);
    bool partial = n < s->cluster_size;
    if (partial && ((entry & QCOW_COMPRESSED) || img->backing || s->aes)) {
        CLEANUP_FREE uint8_t *old = qimg_alloc_from_image(s->cluster_size, "qcow cluster");
        if (!old)
            return -ENOMEM;
        memset(old, 0, s->cluster_size);
        uint64_t inside = QIMG_MIN(s->cluster_size, img->size - cluster_start);
        if (entry & QCOW_COMPRESSED)
            r = read_compressed(img, entry, old);
        else
            r = qimg_read_backing(img, cluster_start, old, inside);
        if (r == 0 && s->aes)
            r = crypt_run(s, true, cluster_start, old, s->cluster_size);
        if (r == 0)
            r = qimg_io_pwrite(img->file, old, s->cluster_size, *host);
        if (r == 0)
            s->file_size = QIMG_MAX(s->file_size, *host + s->cluster_size);
        return r;
    }
    return grow_file(img, *host + s->cluster_size);
}

/* Guest data [guest, guest+n) to host, encrypted on an encrypted image
 * (a copy: p stays as it was). */
static int write_data(struct qimg_image *img, const uint8_t *p, size_t n, uint64_t host, uint64_t guest)
{
    struct qcow_state *s = state(img);
    qimg_io_event(img->file, QIMG_EV_WRITE_AIO);
    if (!s->aes)
        return qimg_io_pwrite(img->file, p, n, host);
    CLEANUP_FREE uint8_t *bounce = qimg_xmalloc(n);
    memcpy(bounce, p, n);
    int r = crypt_run(s, true, guest, bounce, n);
    return r < 0 ? r : qimg_io_pwrite(img->file, bounce, n, host);
}

/* [off, off+n) inside one cluster (a qimg_piece_fn: p is only read). */
static int write_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct qcow_state *s = state(img);
    uint64_t in = off & (s->cluster_size - 1), l2_off, entry, host = 0;
    uint8_t *table;
    pthread_mutex_lock(&img->lock);
    int r = l2_for_write(img, off, &l2_off, &table);
    if (r == 0)
        r = lookup(img, off, &entry);
    if (r == 0 && (entry == 0 || (entry & QCOW_COMPRESSED))) {
        r = allocate_cluster(img, off - in, entry, in, n, &host);
        /* the data first, then the entry that points at it */
        if (r == 0)
            r = write_data(img, p, n, host + in, off);
        if (r == 0)
            r = get_l2(img, l2_off, false, &table);
        if (r == 0)
            r = set_l2_entry(img, l2_off, table, off, host);
    } else if (r == 0 && (entry & (SECTOR - 1))) {
        r = qimg_error(-EIO, "qcow: cluster offset 0x%" PRIx64 " is not sector-aligned", entry);
    } else if (r == 0 && entry < s->l1_offset + s->l1_size * 8) {
        /* qemu would write the guest's data over the header or L1 table */
        r = qimg_error(-EIO, "qcow: cluster offset 0x%" PRIx64 " overlaps the header and L1 "
                       "table; refusing to write it", entry);
    } else if (r == 0) {
        r = write_data(img, p, n, entry + in, off);
        if (r == 0)
            s->file_size = QIMG_MAX(s->file_size, entry + in + n);
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int qcow_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len);

/* Part of a sector of an encrypted image: read, modify, write the whole
 * sectors around it. */
static int write_widened(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct qcow_state *s = state(img);
    uint64_t start = qimg_round_down(off, SECTOR);
    uint64_t end = qimg_div_round_up(off + len, SECTOR) * SECTOR;
    CLEANUP_FREE uint8_t *tmp = qimg_xcalloc(1, (size_t)(end - start));
    pthread_mutex_lock(&s->rmw_lock);
    int r = qcow_read(img, start, tmp, (size_t)(QIMG_MIN(end, img->size) - start));
    if (r == 0) {
        memcpy(tmp + (off - start), buf, len);
        r = qcow_write(img, start, tmp, (size_t)(end - start));
    }
    pthread_mutex_unlock(&s->rmw_lock);
    return r;
}

static int qcow_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct qcow_state *s = state(img);
    if (!s->writable)
        return qimg_error(-EACCES, "qcow: image is read-only");
    if (s->aes && !sector_aligned(off, len))
        return write_widened(img, off, buf, len);
    return qimg_for_each_piece(img, off, (uint8_t *)buf, len, s->cluster_size, write_piece);
}

static int qcow_flush(struct qimg_image *img)
{
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_OS);
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_DISK);
    return qimg_io_flush(img->file);
}

static bool qcow_has_zero_init(struct qimg_image *img) { return true; }

/* One whole cluster (the disk's last one padded with zeros) in raw
 * deflate; -ENOSPC when it does not get smaller (stored as it is then). */
static int qcow_compress(struct qimg_image *img, const void *buf, size_t len, void *out, size_t *out_len)
{
    uint64_t cs = state(img)->cluster_size;
    if (len > cs)
        return qimg_error(-EINVAL, "qcow: compressed writes must be whole clusters");
    if (state(img)->crypt != QCOW_CRYPT_NONE)
        return -ENOSPC;    /* an encrypted image keeps its clusters encrypted, uncompressed */
    CLEANUP_FREE uint8_t *whole = NULL;
    if (len < cs) {
        whole = qimg_xcalloc(1, cs);
        memcpy(whole, buf, len);
        buf = whole;
    }
    int r = qimg_codec_compress(QIMG_CODEC_DEFLATE, QIMG_CODEC_LEVEL_DEFAULT, buf, cs, out,
                                cs - 1, out_len);
    if (r == -ENOTSUP)
        return qimg_error(r, "qcow: zlib compression is not available");
    return r;
}

/* The compressed bytes go at the end of the file (rounded up to a sector).  (qemu 7.2
 * writes them into the cluster when it is already allocated, without
 * marking the entry compressed; qimg stores such a cluster uncompressed.) */
static int qcow_write_compressed(struct qimg_image *img, uint64_t off, const void *data, size_t len)
{
    struct qcow_state *s = state(img);
    if (!qimg_is_aligned(off, s->cluster_size) || len == 0 || len >= s->cluster_size || off >= img->size)
        return qimg_error(-EINVAL, "qcow: bad compressed cluster write");
    uint64_t l2_off, entry, host;
    uint8_t *table;
    pthread_mutex_lock(&img->lock);
    int r = l2_for_write(img, off, &l2_off, &table);
    if (r == 0)
        r = lookup(img, off, &entry);
    if (r == 0 && entry && !(entry & QCOW_COMPRESSED)) {
        pthread_mutex_unlock(&img->lock);
        CLEANUP_FREE uint8_t *plain = qimg_xmalloc(s->cluster_size);
        r = qimg_codec_decompress(QIMG_CODEC_DEFLATE, data, len, plain, s->cluster_size, NULL);
        uint64_t n = QIMG_MIN(s->cluster_size, img->size - off);
        return r < 0 ? r : qimg_write(img, off, plain, n);
    }
    /* qemu places it at the file's length in whole sectors */
    host = qimg_div_round_up(s->file_size, SECTOR) * SECTOR;
    if (r == 0 && (host & ~s->offset_mask))
        r = qimg_error(-E2BIG, "qcow image file too large");
    qimg_io_event(img->file, QIMG_EV_WRITE_COMPRESSED);
    if (r == 0)
        r = qimg_io_pwrite(img->file, data, len, host);
    if (r == 0) {
        s->file_size = host + len;
        r = get_l2(img, l2_off, false, &table);
    }
    if (r == 0)
        r = set_l2_entry(img, l2_off, table, off,
                         host | QCOW_COMPRESSED | (uint64_t)len << (63 - s->cluster_bits));
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ------------------------------------------------------------ commit, rebase */

/* After commit: an empty L1 table, the file cut right after it (qemu's). */
static int qcow_make_empty(struct qimg_image *img)
{
    struct qcow_state *s = state(img);
    if (!s->writable)
        return -EACCES;
    pthread_mutex_lock(&img->lock);
    memset(s->l1, 0, s->l1_loaded * 8);
    int r = qimg_io_pwrite(img->file, s->l1, s->l1_loaded * 8, s->l1_offset);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = qimg_io_truncate(img->file, s->l1_offset + s->l1_size * 8);
    if (r == 0)
        s->file_size = s->l1_offset + s->l1_size * 8;
    drop_l2_cache(s);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* The new name where the old one was, between the header and the L1
 * table, what is left of a longer old name zeroed (qemu 7.2 cannot change
 * a qcow image's backing file at all). */
static int qcow_change_backing(struct qimg_image *img, const char *backing, const char *fmt)
{
    struct qcow_state *s = state(img);
    if (!s->writable)
        return -EACCES;
    size_t len = backing ? strlen(backing) : 0;
    if (len > QCOW_BACKING_MAX || QCOW_HEADER_SIZE + (uint64_t)len > s->l1_offset)
        return -ENOSPC;
    uint64_t old_off = qimg_be64(s->header + OFF_BACKING_OFF);
    uint64_t old_len = old_off == QCOW_HEADER_SIZE ? qimg_be32(s->header + OFF_BACKING_LEN) : 0;
    uint64_t span = QIMG_MIN(QIMG_MAX(len, old_len), s->l1_offset - QCOW_HEADER_SIZE);
    CLEANUP_FREE uint8_t *buf = qimg_xcalloc(1, QCOW_HEADER_SIZE + span);
    memcpy(buf, s->header, QCOW_HEADER_SIZE);
    qimg_put_be64(buf + OFF_BACKING_OFF, backing ? QCOW_HEADER_SIZE : 0);
    qimg_put_be32(buf + OFF_BACKING_LEN, (uint32_t)len);
    if (len)
        memcpy(buf + QCOW_HEADER_SIZE, backing, len);
    pthread_mutex_lock(&img->lock);
    int r = qimg_io_pwrite(img->file, buf, QCOW_HEADER_SIZE + span, 0);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        memcpy(s->header, buf, QCOW_HEADER_SIZE);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    qimg_image_set_backing_names(img, backing, NULL);   /* qcow cannot record a format */
    return 0;
}

/* ------------------------------------------------------------ create */

/* The encryption options as qemu's option visitor takes them: *on when
 * AES is asked for; *secret the secret's id. */
static int encryption_requested(qimg_opts *opts, bool *on, const char **secret)
{
    const char *fmt = NULL, *enc = qimg_opts_get(opts, "encryption");
    bool enc_on = false;
    *secret = NULL;
    int r = qimg_opts_get_bool(opts, "encryption", &enc_on);
    if (r >= 0)
        r = qimg_opts_get_string(opts, "encrypt.format", &fmt);
    if (r >= 0)
        r = qimg_opts_get_string(opts, "encrypt.key-secret", secret);
    if (r < 0)
        return r;
    if (enc && enc_on && fmt)
        return qimg_error(-EINVAL, "'encrypt.format' and its alias 'encryption' can't be used at "
                          "the same time");
    if (enc_on)
        fmt = "qcow";
    if (fmt && strcmp(fmt, "aes") && strcmp(fmt, "qcow") && strcmp(fmt, "luks"))
        return qimg_error(-EINVAL, "Parameter 'format' does not accept value '%s'", fmt);
    if (!fmt && *secret)
        return qimg_error(-EINVAL, "Parameter 'encrypt.format' is missing");
    *on = fmt != NULL;
    if (fmt && strcmp(fmt, "luks") == 0)
        *on = false, *secret = "";       /* refused after the size check */
    return 0;
}

/* The header, the backing name and an empty L1 table in whole sectors:
 * qemu's file byte for byte.  With a backing file qemu picks 512-byte
 * clusters (no copy of unmodified sectors) and 4096-entry L2 tables;
 * without, 4 KiB clusters and 512-entry tables. */
static int qcow_create(struct qimg_create_ctx *ctx)
{
    bool encrypt = false;
    const char *secret = NULL;
    int r = encryption_requested(ctx->opts, &encrypt, &secret);
    if (r < 0)
        return r;
    bool prealloc_ok = !strcmp(ctx->prealloc, "off") || !strcmp(ctx->prealloc, "falloc") ||
                       !strcmp(ctx->prealloc, "full");
    if (!prealloc_ok && strcmp(ctx->prealloc, "metadata") != 0)
        return qimg_error(-EINVAL, "invalid parameter value: %s", ctx->prealloc);
    if (!prealloc_ok)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode: %s", ctx->prealloc);
    uint64_t size;
    if (!qimg_round_up_ok(ctx->size, SECTOR, &size) || size > INT64_MAX)
        return qimg_error(-EINVAL, "Image size too large");
    if (size == 0)
        return qimg_error(-EINVAL, "Image size is too small, cannot be zero length");
    if (secret && !secret[0] && !encrypt)
        return qimg_error(-EINVAL, "Unsupported encryption format");
    if (encrypt && !secret)
        return qimg_error(-EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    if (encrypt) {
        /* qemu only checks that the secret is there: the key is the
         * passphrase itself, nothing of it is stored */
        char *pass = NULL;
        size_t plen = 0;
        r = qimg_secret_lookup(secret, &pass, &plen);
        if (r < 0)
            return r;
        qimg_wipe_free(pass, plen);
    }
    const char *backing = ctx->backing_file;
    if (backing && strcmp(backing, "fat:") == 0)
        backing = NULL;                   /* qemu's special name for vvfat */
    size_t blen = backing ? strlen(backing) : 0;
    uint8_t cluster_bits = backing ? 9 : 12, l2_bits = backing ? 12 : 9;
    uint64_t l1_off = (QCOW_HEADER_SIZE + blen + 7) & ~(uint64_t)7;
    uint64_t shift = cluster_bits + l2_bits;
    uint64_t l1_size = (size + (1ull << shift) - 1) >> shift;
    uint64_t l1_bytes = qimg_div_round_up(l1_size * 8, SECTOR) * SECTOR;
    uint8_t h[QCOW_HEADER_SIZE] = { 0 };
    qimg_put_be32(h, QCOW_MAGIC);
    qimg_put_be32(h + OFF_VERSION, QCOW_VERSION);
    if (backing) {
        qimg_put_be64(h + OFF_BACKING_OFF, QCOW_HEADER_SIZE);
        qimg_put_be32(h + OFF_BACKING_LEN, (uint32_t)blen);
    }
    qimg_put_be64(h + OFF_SIZE, size);
    h[OFF_CLUSTER_BITS] = cluster_bits;
    h[OFF_L2_BITS] = l2_bits;
    qimg_put_be64(h + OFF_L1, l1_off);
    qimg_put_be32(h + OFF_CRYPT, encrypt ? QCOW_CRYPT_AES : QCOW_CRYPT_NONE);
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = qimg_io_pwrite(io, h, sizeof h, 0);
    if (r == 0 && blen)
        r = qimg_io_pwrite(io, backing, blen, QCOW_HEADER_SIZE);
    if (r == 0)
        r = qimg_io_truncate(io, l1_off + l1_bytes);
    qimg_io_close(io);
    if (r < 0)
        return qimg_error(r, "Could not write the qcow image: %s", qimg_last_error());
    return 0;
}

const struct qimg_driver qimg_driver_qcow = {
    .name           = "qcow",
    .flags          = QIMG_DRV_SUPPORTS_BACKING,
    .create_opts    = qcow_create_opts,
    .probe          = qcow_probe,
    .open           = qcow_open,
    .close          = qcow_close,
    .create         = qcow_create,
    .read           = qcow_read,
    .write          = qcow_write,
    .flush          = qcow_flush,
    .block_status   = qcow_block_status,
    .info           = qcow_info,
    .make_empty     = qcow_make_empty,
    .change_backing = qcow_change_backing,
    .has_zero_init  = qcow_has_zero_init,
    .compress       = qcow_compress,
    .write_compressed = qcow_write_compressed,
};
