/* qimg - dmg (Apple's UDIF disk images, read-only), written from the
 * format's description.
 *
 * The file ends with a 512-byte "koly" trailer (big-endian): at 40/48 the
 * offset and length of a resource fork, at 216/224 those of an XML
 * property list, at 492 the disk's size in sectors.  Either holds the
 * block tables: "blkx" resources (in the property list: resource-fork /
 * blkx / each entry's Data), each one "mish" block:
 *   0 "mish", 8 first sector, 24 data offset, 200 entry count, then from
 *   204 entries of 40 bytes: type (4), comment (4), first sector (8, from
 *   the block's), sector count (8), stored offset (8, from the block's
 *   data offset), stored length (8).
 * Chunk types: 0 zeros, 1 raw, 2 ignored (zeros), 0x80000004 ADC,
 * 0x80000005 zlib, 0x80000006 bzip2, 0x80000007 LZFSE; 0x7ffffffe
 * (comment) and 0xffffffff (end of table) hold no sectors.
 *
 * As qemu: the trailer is searched in the file's last 1023 bytes (odd
 * sizes), the resource fork wins over the property list, a table's entry
 * count follows from its length, the disk size from the trailer, and
 * qemu's limits apply (64 MiB stored, 131072 sectors per chunk).  Beyond
 * qemu: bzip2 and ADC chunks are read; the property list is parsed with
 * libplist (qemu looks for <data> tags); chunks need not be sorted;
 * stored bytes past the end of the file and chunks that overlap are
 * refused when the image is opened; a file whose last 512 bytes are a
 * koly trailer probes as dmg whatever its name.  LZFSE chunks are refused
 * with an error naming them (no Debian package decodes LZFSE). */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"
#include "codec.h"
#include "unit-reader.h"

#ifdef HAVE_PLIST
#include "plist-dl.h"
#endif

#define KOLY_SIZE        512
#define KOLY_SEARCH      515                 /* as qemu: 511 + 4 bytes */
#define MISH_HEADER      204
#define MISH_ENTRY       40
#define MAX_STORED       (64u << 20)         /* qemu's DMG_LENGTHS_MAX */
#define MAX_SECTORS      (MAX_STORED / 512)  /* qemu's DMG_SECTORCOUNTS_MAX */
#define MAX_TABLES       (64u << 20)         /* property list or fork: 1.6M chunks */
#define MAX_XML_DEPTH    64

enum {
    CHUNK_ZERO = 0x00000000, CHUNK_RAW = 0x00000001, CHUNK_IGNORE = 0x00000002,
    CHUNK_ADC = 0x80000004, CHUNK_ZLIB = 0x80000005, CHUNK_BZIP2 = 0x80000006,
    CHUNK_LZFSE = 0x80000007, CHUNK_COMMENT = 0x7ffffffe, CHUNK_LAST = 0xffffffff,
};

struct dmg_chunk {
    uint64_t sector, count;       /* guest sectors */
    uint64_t offset, length;      /* stored bytes in the file */
    uint32_t type;
};

struct dmg_state {
    struct dmg_chunk *chunk;
    size_t n, cap;
    uint64_t file_size;
    uint32_t unknown_type;        /* first unknown chunk type seen, for the warning */
    bool has_unknown, has_lzfse;
    struct unit_cache *cache;
};

static struct dmg_state *state(struct qimg_image *img) { return img->opaque; }

/* ------------------------------------------------------------- probing */

static int dmg_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    size_t n = filename ? strlen(filename) : 0;
    return n > 4 && strcmp(filename + n - 4, ".dmg") == 0 ? 2 : 0;
}

/* Beyond qemu: a trailer at the very end says dmg whatever the name. */
static bool dmg_probe_tail(const uint8_t *tail, size_t len, uint64_t file_size)
{
    if (len < KOLY_SIZE)
        return false;
    const uint8_t *k = tail + len - KOLY_SIZE;
    return memcmp(k, "koly", 4) == 0 && qimg_be32(k + 4) == 4 && qimg_be32(k + 8) == KOLY_SIZE;
}

/* ------------------------------------------------------------- tables */

static int invalid(struct qimg_image *img)
{
    return qimg_error(-EINVAL, "Could not open '%s': Invalid argument", img->filename);
}

static bool known_type(uint32_t t)
{
    switch (t) {
    case CHUNK_ZERO: case CHUNK_RAW: case CHUNK_IGNORE: case CHUNK_ADC:
    case CHUNK_ZLIB: case CHUNK_BZIP2: case CHUNK_LZFSE:
        return true;
    default:
        return false;
    }
}

static bool stored_type(uint32_t t)
{
    return t != CHUNK_ZERO && t != CHUNK_IGNORE;
}

static void add_chunk(struct dmg_state *s, const struct dmg_chunk *c)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->chunk = qimg_xrealloc(s->chunk, s->cap * sizeof *s->chunk);
    }
    s->chunk[s->n++] = *c;
}

/* One entry of a mish block: checked, then kept when it holds sectors. */
static int take_entry(struct qimg_image *img, struct dmg_state *s, const uint8_t *e,
                      uint64_t first_sector, uint64_t data_offset)
{
    uint32_t type = qimg_be32(e);
    if (type == CHUNK_COMMENT || type == CHUNK_LAST)
        return 0;
    if (!known_type(type) && !s->has_unknown) {
        s->has_unknown = true;
        s->unknown_type = type;
    }
    struct dmg_chunk c = { .type = type, .count = qimg_be64(e + 16), .length = qimg_be64(e + 32) };
    if (c.count > MAX_SECTORS) {
        qimg_warn("ERROR: sector count %" PRIu64 " for chunk %zu is larger than max (%u)",
                  c.count, s->n, MAX_SECTORS);
        return invalid(img);
    }
    if (c.length > MAX_STORED) {
        qimg_warn("ERROR: length %" PRIu64 " for chunk %zu is larger than max (%u)",
                  c.length, s->n, MAX_STORED);
        return invalid(img);
    }
    if (!qimg_add_ok(first_sector, qimg_be64(e + 8), &c.sector) ||
        !qimg_add_ok(data_offset, qimg_be64(e + 24), &c.offset) ||
        c.sector > UINT64_MAX / 512 - MAX_SECTORS)
        return qimg_error(-EINVAL, "dmg: chunk %zu lies beyond any disk", s->n);
    if (stored_type(c.type) && !qimg_range_ok(c.offset, c.length, s->file_size))
        return qimg_error(-EINVAL, "dmg: chunk %zu (sector %" PRIu64 ") is stored past the end "
                          "of the file (%" PRIu64 " bytes at %" PRIu64 ")", s->n, c.sector,
                          c.length, c.offset);
    if (c.type == CHUNK_RAW && c.length < c.count * 512)
        return qimg_error(-EINVAL, "dmg: raw chunk %zu stores %" PRIu64 " bytes for %" PRIu64
                          " sectors", s->n, c.length, c.count);
    if (c.type == CHUNK_LZFSE)
        s->has_lzfse = true;
    if (c.count)
        add_chunk(s, &c);
    return 0;
}

/* A block table: a "mish" block (anything else is skipped, as qemu does);
 * its entry count follows from its length, as qemu reads it. */
static int take_mish(struct qimg_image *img, struct dmg_state *s, const uint8_t *b, uint64_t len)
{
    if (len < 4 || memcmp(b, "mish", 4) != 0)
        return 0;
    if (len < MISH_HEADER)
        return qimg_error(-EINVAL, "dmg: block table of %" PRIu64 " bytes is too short", len);
    uint64_t first_sector = qimg_be64(b + 8), data_offset = qimg_be64(b + 24);
    uint64_t entries = (len - MISH_HEADER) / MISH_ENTRY;
    for (uint64_t i = 0; i < entries; i++) {
        int r = take_entry(img, s, b + MISH_HEADER + i * MISH_ENTRY, first_sector, data_offset);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Read [off, off+len) of the file, which must hold it. */
static uint8_t *read_table(struct qimg_image *img, struct dmg_state *s, uint64_t off,
                           uint64_t len, const char *what)
{
    if (!qimg_range_ok(off, len, s->file_size)) {
        qimg_error(-EINVAL, "dmg: the %s (%" PRIu64 " bytes at %" PRIu64 ") lies past the end "
                   "of the file", what, len, off);
        return NULL;
    }
    if (len > MAX_TABLES) {
        qimg_error(-EFBIG, "dmg: the %s is too large (%" PRIu64 " bytes)", what, len);
        return NULL;
    }
    uint8_t *buf = qimg_alloc_from_image(len + 1, what);
    if (!buf)
        return NULL;
    if (qimg_io_pread(img->file, buf, len, off) < 0) {
        free(buf);
        return NULL;
    }
    buf[len] = 0;
    return buf;
}

/* The resource fork, as qemu walks it: its header gives the data
 * section, a run of resources, each a 32-bit length and its bytes. */
static int read_resource_fork(struct qimg_image *img, struct dmg_state *s, uint64_t off,
                              uint64_t len)
{
    CLEANUP_FREE uint8_t *fork = read_table(img, s, off, len, "resource fork");
    if (!fork)
        return -EINVAL;
    if (len < 16)
        return qimg_error(-EINVAL, "dmg: resource fork of %" PRIu64 " bytes is too short", len);
    uint64_t data = qimg_be32(fork), data_len = qimg_be32(fork + 8);
    if (!qimg_range_ok(data, data_len, len))
        return qimg_error(-EINVAL, "dmg: the resource fork's data lies outside it");
    for (uint64_t pos = data; pos < data + data_len;) {
        if (data + data_len - pos < 4)
            return qimg_error(-EINVAL, "dmg: resource at %" PRIu64 " is cut off", pos);
        uint64_t n = qimg_be32(fork + pos);
        pos += 4;
        if (n > data + data_len - pos)
            return qimg_error(-EINVAL, "dmg: resource of %" PRIu64 " bytes at %" PRIu64
                              " runs past the fork's data", n, pos);
        int r = take_mish(img, s, fork + pos, n);
        if (r < 0)
            return r;
        pos += n;
    }
    return 0;
}

#ifdef HAVE_PLIST
/* libplist parses nested arrays and dictionaries recursively: refuse a
 * document nested deeper than any dmg needs before handing it over. */
static bool nesting_ok(const char *xml)
{
    int depth = 0;
    for (const char *p = strchr(xml, '<'); p; p = strchr(p + 1, '<')) {
        if (!strncmp(p, "<dict>", 6) || !strncmp(p, "<array>", 7))
            depth++;
        else if (!strncmp(p, "</dict>", 7) || !strncmp(p, "</array>", 8))
            depth--;
        if (depth > MAX_XML_DEPTH)
            return false;
    }
    return true;
}

static int read_plist(struct qimg_image *img, struct dmg_state *s, uint64_t off, uint64_t len)
{
    CLEANUP_FREE uint8_t *xml = read_table(img, s, off, len, "property list");
    if (!xml)
        return -EINVAL;
    if (len > UINT32_MAX || !nesting_ok((const char *)xml))
        return qimg_error(-EINVAL, "dmg: the property list is not one qimg reads");
    int ret = qimg_plist_load();
    if (ret < 0)
        return ret;
    plist_t root = NULL;
    plist_from_xml((const char *)xml, (uint32_t)len, &root);
    if (!root)
        return qimg_error(-EINVAL, "dmg: the property list is not valid XML");
    int r = 0;
    plist_t fork = plist_get_node_type(root) == PLIST_DICT
                   ? plist_dict_get_item(root, "resource-fork") : NULL;
    plist_t blkx = fork && plist_get_node_type(fork) == PLIST_DICT
                   ? plist_dict_get_item(fork, "blkx") : NULL;
    if (!blkx || plist_get_node_type(blkx) != PLIST_ARRAY) {
        r = qimg_error(-EINVAL, "dmg: the property list has no block tables (resource-fork/blkx)");
        goto out;
    }
    for (uint32_t i = 0, n = plist_array_get_size(blkx); i < n && r == 0; i++) {
        plist_t entry = plist_array_get_item(blkx, i);
        plist_t data = entry && plist_get_node_type(entry) == PLIST_DICT
                       ? plist_dict_get_item(entry, "Data") : NULL;
        if (!data || plist_get_node_type(data) != PLIST_DATA)
            continue;
        uint64_t dlen = 0;
        const char *bytes = plist_get_data_ptr(data, &dlen);
        if (bytes)
            r = take_mish(img, s, (const uint8_t *)bytes, dlen);
    }
out:
    plist_free(root);
    return r;
}
#else
static int read_plist(struct qimg_image *img, struct dmg_state *s, uint64_t off, uint64_t len)
{
    return qimg_error(-ENOTSUP, "dmg: images whose block tables are in an XML property list "
                      "need libplist, which this build lacks");
}
#endif

/* ------------------------------------------------------------- opening */

/* As qemu: the first "koly" in the 515 bytes from 1023 before the end. */
static int find_koly(struct qimg_image *img, struct dmg_state *s, uint64_t *at)
{
    uint64_t start = s->file_size > 1023 ? s->file_size - 1023 : 0;
    size_t n = (size_t)QIMG_MIN(s->file_size, (uint64_t)KOLY_SEARCH);
    uint8_t buf[KOLY_SEARCH];
    int r = qimg_io_pread(img->file, buf, n, start);
    if (r < 0)
        return r;
    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(buf + i, "koly", 4) == 0) {
            *at = start + i;
            return 0;
        }
    return qimg_error(-EINVAL, "Could not locate UDIF trailer in dmg file");
}

static int compare_chunks(const void *a, const void *b)
{
    const struct dmg_chunk *x = a, *y = b;
    return x->sector < y->sector ? -1 : x->sector > y->sector;
}

/* Sorted by sector, no two sharing one. */
static int order_chunks(struct dmg_state *s)
{
    if (s->n)
        qsort(s->chunk, s->n, sizeof *s->chunk, compare_chunks);
    for (size_t i = 1; i < s->n; i++)
        if (s->chunk[i - 1].sector + s->chunk[i - 1].count > s->chunk[i].sector)
            return qimg_error(-EINVAL, "dmg: chunks overlap at sector %" PRIu64
                              ", image file is corrupt", s->chunk[i].sector);
    return 0;
}

static void warn_types(struct dmg_state *s)
{
    if (s->has_unknown)
        qimg_warn("Image contains chunks of unknown type %" PRIx32 ", accessing them will "
                  "result in I/O errors", s->unknown_type);
    if (s->has_lzfse)
        qimg_warn("Image contains LZFSE-compressed chunks (type 0x80000007), which qimg "
                  "cannot decode: reading them fails");
}

static int open_image(struct qimg_image *img, struct dmg_state *s)
{
    int r = qimg_io_get_size(img->file, &s->file_size);
    uint64_t at = 0;
    if (r < 0 || (r = find_koly(img, s, &at)) < 0)
        return r;
    uint8_t k[KOLY_SIZE];
    if ((r = qimg_io_pread(img->file, k, sizeof k, at)) < 0)
        return r;
    uint64_t rsrc_off = qimg_be64(k + 40), rsrc_len = qimg_be64(k + 48);
    uint64_t xml_off = qimg_be64(k + 216), xml_len = qimg_be64(k + 224);
    uint64_t sectors = qimg_be64(k + 492);
    if (rsrc_len)
        r = read_resource_fork(img, s, rsrc_off, rsrc_len);
    else if (xml_len)
        r = read_plist(img, s, xml_off, xml_len);
    else
        r = invalid(img);
    if (r < 0 || (r = order_chunks(s)) < 0)
        return r;
    if (sectors > INT64_MAX / 512)
        return qimg_error(-EINVAL, "dmg: disk of %" PRIu64 " sectors is too large", sectors);
    if (sectors && !s->n)
        return qimg_error(-EINVAL, "dmg: the image has no chunks for its %" PRIu64 " sectors",
                          sectors);
    img->size = sectors * 512;
    warn_types(s);
    s->cache = unit_cache_new();
    return 0;
}

static void free_state(struct qimg_image *img)
{
    struct dmg_state *s = state(img);
    if (!s)
        return;
    free(s->chunk);
    unit_cache_free(s->cache);
    free(s);
    img->opaque = NULL;
}

static int dmg_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    img->opaque = qimg_xcalloc(1, sizeof(struct dmg_state));
    int r = open_image(img, state(img));
    if (r < 0)
        free_state(img);
    return r;
}

static void dmg_close(struct qimg_image *img)
{
    free_state(img);
}

/* ------------------------------------------------------------- reading */

/* The chunk holding sector, or none (a gap: qemu's I/O error). */
static const struct dmg_chunk *find_chunk(const struct dmg_state *s, uint64_t sector, size_t *index)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->chunk[mid].sector <= sector)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    const struct dmg_chunk *c = &s->chunk[lo - 1];
    *index = lo - 1;
    return sector < c->sector + c->count ? c : NULL;
}

static int locate(struct qimg_image *img, uint64_t off, struct unit_loc *loc)
{
    struct dmg_state *s = state(img);
    size_t i = 0;
    const struct dmg_chunk *c = find_chunk(s, off / 512, &i);
    if (!c)
        return qimg_error(-EIO, "dmg: sector %" PRIu64 " lies in no chunk", off / 512);
    *loc = (struct unit_loc){ .id = i, .start = c->sector * 512, .len = c->count * 512,
                              .host_offset = c->offset, .stored_offset = c->offset,
                              .stored_len = c->length };
    loc->kind = c->type == CHUNK_RAW ? UNIT_RAW
              : stored_type(c->type) ? UNIT_CODED : UNIT_ZERO;
    return 0;
}

/* Chunk loc->id from its stored bytes in[0..stored_len). */
static int decode_from(struct qimg_image *img, const struct unit_loc *loc, const uint8_t *in,
                       void *out)
{
    const struct dmg_chunk *c = &state(img)->chunk[loc->id];
    enum qimg_codec codec;
    switch (c->type) {
    case CHUNK_ZLIB: codec = QIMG_CODEC_ZLIB; break;
    case CHUNK_BZIP2: codec = QIMG_CODEC_BZIP2; break;
    case CHUNK_ADC: codec = QIMG_CODEC_ADC; break;
    case CHUNK_LZFSE:
        return qimg_error(-ENOTSUP, "dmg: the chunk at sector %" PRIu64 " is LZFSE-compressed "
                          "(type 0x80000007), which qimg cannot decode", c->sector);
    default:
        return qimg_error(-EIO, "dmg: the chunk at sector %" PRIu64 " is of unknown type 0x%08"
                          PRIx32, c->sector, c->type);
    }
    size_t got = 0;
    int r = qimg_codec_decompress(codec, in, c->length, out, loc->len, &got);
    if (r < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", qimg_last_error());
        return qimg_error(r == -ENOTSUP ? r : -EIO, "dmg: chunk at sector %" PRIu64 ": %s",
                          c->sector, why);
    }
    if (got != loc->len)
        return qimg_error(-EIO, "dmg: chunk at sector %" PRIu64 " decodes to %zu bytes instead "
                          "of %" PRIu64, c->sector, got, loc->len);
    return 0;
}

static int decode(struct qimg_image *img, const struct unit_loc *loc, void *out)
{
    CLEANUP_FREE uint8_t *in = qimg_alloc_from_image(loc->stored_len, "dmg chunk");
    if (!in)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, in, loc->stored_len, loc->stored_offset);
    return r < 0 ? r : decode_from(img, loc, in, out);
}

static const struct unit_reader_ops dmg_units = {
    .locate = locate, .decode = decode, .decode_from = decode_from,
};

static int dmg_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    return unit_read(img, state(img)->cache, &dmg_units, off, buf, len);
}

/* As qemu (no block status of its own): all data, nowhere in the file. */
static int dmg_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                            struct qimg_extent *ext)
{
    ext->length = len;
    ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED;
    return 0;
}

const struct qimg_driver qimg_driver_dmg = {
    .name           = "dmg",
    .flags          = QIMG_DRV_READ_ONLY,
    .probe          = dmg_probe,
    .open           = dmg_open,
    .close          = dmg_close,
    .read           = dmg_read,
    .block_status   = dmg_block_status,
    .probe_tail     = dmg_probe_tail,
};
