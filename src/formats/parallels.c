/* qimg - the Parallels expandable disk format.
 *
 * Layout (all little-endian), written from the format's description:
 *   0  magic[16]     "WithoutFreeSpace" (BAT in sectors) or
 *                    "WithouFreSpacExt" (BAT in clusters)
 *  16  version       2
 *  20  heads, 24 cylinders (geometry, unused here)
 *  28  tracks        sectors per cluster
 *  32  bat_entries   clusters in the BAT
 *  36  nb_sectors    virtual size in sectors (old magic: low 32 bits only)
 *  44  inuse         0x746F6E59 while open read-write
 *  48  data_off      first data sector
 *  52  flags, 56 ext_off (format extension cluster, in sectors)
 * The BAT follows the 64-byte header: one 32-bit entry per cluster, 0 for
 * a cluster that reads as zeros (or from the backing image).
 */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"
#include "md5.h"

#define PRL_HEADER_SIZE   64
#define PRL_MAGIC_V1      "WithoutFreeSpace"
#define PRL_MAGIC_EXT     "WithouFreSpacExt"
#define PRL_VERSION       2
#define PRL_INUSE_MAGIC   0x746F6E59u
#define PRL_DEFAULT_CLUSTER (1u << 20)
#define PRL_MAX_IMAGE_FACTOR (1ull << 32)
#define PRL_HEADS         16
#define PRL_SECTORS_PER_CYL 32
#define SECTOR            512u

enum {
    OFF_VERSION = 16, OFF_HEADS = 20, OFF_CYLINDERS = 24, OFF_TRACKS = 28,
    OFF_BAT_ENTRIES = 32, OFF_NB_SECTORS = 36, OFF_INUSE = 44, OFF_DATA_OFF = 48,
    OFF_FLAGS = 52, OFF_EXT_OFF = 56,
};

static const struct qimg_opt_desc prl_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "cluster_size", QIMG_OPT_SIZE, "Parallels image cluster size", "1048576" },
    { NULL, 0, NULL, NULL },
};

struct prl_state {
    uint8_t *header;          /* the header and the BAT, as on disk */
    uint64_t header_bytes;    /* 64 + 4 * bat_size */
    uint32_t bat_size;
    uint32_t tracks;          /* sectors per cluster */
    uint32_t off_multiplier;  /* BAT unit in sectors: 1 or tracks */
    uint64_t cluster_size;
    uint64_t data_end;        /* first free sector for a new cluster */
    uint64_t bat_end;         /* the same from the header and BAT alone */
    uint64_t file_size;       /* bytes, kept up to date while writing */
    bool header_unclean;      /* inuse was set when we opened it */
    bool writable;
};

static struct prl_state *state(struct qimg_image *img) { return img->opaque; }

static uint32_t bat_entry(const struct prl_state *s, uint32_t idx)
{
    return qimg_le32(s->header + PRL_HEADER_SIZE + 4 * (uint64_t)idx);
}

/* Host sector of cluster idx, 0 when unallocated. */
static uint64_t bat_sector(const struct prl_state *s, uint32_t idx)
{
    return (uint64_t)bat_entry(s, idx) * s->off_multiplier;
}

static int prl_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    if (len < PRL_HEADER_SIZE)
        return 0;
    if ((memcmp(buf, PRL_MAGIC_V1, 16) == 0 || memcmp(buf, PRL_MAGIC_EXT, 16) == 0) &&
        qimg_le32(buf + OFF_VERSION) == PRL_VERSION)
        return 100;
    return 0;
}

/* The header's fields, checked as qemu checks them (same messages). */
static int parse_header(struct prl_state *s, const uint8_t *h, uint64_t *nb_sectors)
{
    *nb_sectors = qimg_le64(h + OFF_NB_SECTORS);
    if (qimg_le32(h + OFF_VERSION) != PRL_VERSION)
        return qimg_error(-EINVAL, "Image not in Parallels format");
    if (memcmp(h, PRL_MAGIC_V1, 16) == 0) {
        s->off_multiplier = 1;
        *nb_sectors &= 0xffffffffu;
    } else if (memcmp(h, PRL_MAGIC_EXT, 16) == 0) {
        s->off_multiplier = qimg_le32(h + OFF_TRACKS);
    } else {
        return qimg_error(-EINVAL, "Image not in Parallels format");
    }
    s->tracks = qimg_le32(h + OFF_TRACKS);
    if (s->tracks == 0)
        return qimg_error(-EINVAL, "Invalid image: Zero sectors per track");
    if (s->tracks > INT32_MAX / 513)
        return qimg_error(-EFBIG, "Invalid image: Too big cluster");
    s->cluster_size = (uint64_t)s->tracks * SECTOR;
    s->bat_size = qimg_le32(h + OFF_BAT_ENTRIES);
    if (s->bat_size > INT32_MAX / 4)
        return qimg_error(-EFBIG, "Catalog too large");
    if (*nb_sectors > (uint64_t)INT64_MAX / SECTOR)
        return qimg_error(-EFBIG, "Invalid image: virtual size too large");
    s->header_bytes = PRL_HEADER_SIZE + 4 * (uint64_t)s->bat_size;
    return 0;
}

/* Where the next cluster goes: past the data area start, past every
 * allocated cluster and (read-write) past everything in the file, so the
 * format extension and its bitmap clusters stay intact (qemu 7.2 cuts the
 * file back to its last BAT cluster on close). */
static void compute_data_end(struct prl_state *s, uint32_t data_off, bool writable)
{
    uint64_t end = data_off ? data_off : qimg_div_round_up(s->header_bytes, SECTOR);
    for (uint32_t i = 0; i < s->bat_size; i++) {
        uint64_t sect = bat_sector(s, i);
        if (sect && sect + s->tracks > end)
            end = sect + s->tracks;
    }
    s->bat_end = end;
    if (writable && qimg_div_round_up(s->file_size, SECTOR) > end)
        end = qimg_div_round_up(s->file_size, SECTOR);
    /* the new magic addresses clusters: keep new ones on a cluster boundary */
    if (s->off_multiplier > 1 && end % s->off_multiplier)
        end += s->off_multiplier - end % s->off_multiplier;
    s->data_end = end;
}

/* ------------------------------------------------- the format extension
 * One cluster at ext_off: magic (8), MD5 of the rest of the cluster (16),
 * then features, each a 24-byte header (magic, flags, data size, unused)
 * and its data padded to 8 bytes, ended by a feature with magic 0.
 * qemu reads it on a read-only open (its dirty bitmaps) and fails the open
 * when it is damaged; read-write it only warns.  We check it as qemu does
 * and keep it as it is. */
#define PRL_EXT_MAGIC        0xAB234CEF23DCEA87ull
#define PRL_FEAT_END         0ull
#define PRL_FEAT_BITMAP      0x20385FAE252CB34Aull
#define PRL_EXT_HDR          24
#define PRL_FEAT_HDR         24
#define PRL_BITMAP_HDR       32
#define PRL_MAX_BITMAPS      64

struct bitmap_ids {
    uint8_t id[PRL_MAX_BITMAPS][16];
    size_t n;
};

/* qemu names a loaded bitmap by its id as a UUID string; a second bitmap
 * of the same name fails the open. */
static int remember_bitmap_id(struct bitmap_ids *ids, const uint8_t *id)
{
    for (size_t i = 0; i < ids->n; i++) {
        if (memcmp(ids->id[i], id, 16) == 0)
            return qimg_error(-EINVAL, "Bitmap already exists: %02x%02x%02x%02x-%02x%02x-%02x%02x-"
                              "%02x%02x-%02x%02x%02x%02x%02x%02x", id[0], id[1], id[2], id[3], id[4],
                              id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13],
                              id[14], id[15]);
    }
    if (ids->n == PRL_MAX_BITMAPS)
        return qimg_error(-EINVAL, "Too many bitmaps in the Parallels Format Extension");
    memcpy(ids->id[ids->n++], id, 16);
    return 0;
}

static int check_bitmap_feature(const struct prl_state *s, uint64_t nb_sectors, const uint8_t *data,
                                uint64_t size, struct bitmap_ids *ids)
{
    if (size < PRL_BITMAP_HDR)
        return qimg_error(-EINVAL, "Too small Bitmap Feature area in Parallels Format Extension: "
                          "%" PRIu64 " bytes, expected at least %d bytes", size, PRL_BITMAP_HDR);
    uint64_t bits = qimg_le64(data);
    uint32_t granularity = qimg_le32(data + 24) << 9;   /* 32 bits, as qemu computes it */
    uint32_t l1_size = qimg_le32(data + 28);
    if (bits != nb_sectors)
        return qimg_error(-EINVAL, "Bitmap size (in sectors) %" PRId64 " differs from disk size "
                          "in sectors %" PRId64, (int64_t)bits, (int64_t)nb_sectors);
    if ((uint64_t)l1_size * 8 > size - PRL_BITMAP_HDR)
        return qimg_error(-EINVAL, "Bitmaps feature corrupted: l1 table exceeds extension data_size");
    /* (qemu asserts on this one) */
    if (!qimg_is_pow2(granularity) || granularity < SECTOR)
        return qimg_error(-EINVAL, "Bitmap granularity %" PRIu32 " is not a power of two of at "
                          "least 512 bytes", granularity);
    int r = remember_bitmap_id(ids, data + 8);
    if (r < 0)
        return r;
    /* serialized as whole 64-bit words, wrapping as qemu's arithmetic does */
    uint64_t words = ((nb_sectors * SECTOR - 1) >> __builtin_ctz(granularity)) / 64 + 1;
    uint64_t expected = qimg_div_round_up(words * 8, s->cluster_size);
    if (expected != l1_size)
        return qimg_error(-EINVAL, "Bitmap table size %" PRIu32 " does not correspond to bitmap "
                          "size and cluster size. Expected %" PRIu64, l1_size, expected);
    return 0;
}

static int walk_features(const struct prl_state *s, uint64_t nb_sectors, const uint8_t *ext)
{
    struct bitmap_ids ids = { .n = 0 };
    uint64_t pos = PRL_EXT_HDR;
    /* qemu counts down only the headers, not the data it skips */
    int64_t remaining = (int64_t)s->cluster_size - PRL_EXT_HDR;
    for (;;) {
        if (remaining < PRL_FEAT_HDR || pos + PRL_FEAT_HDR > s->cluster_size)
            return qimg_error(-EINVAL, "Can not read feature header, as remaining bytes (%" PRId64
                              ") in Format Extension is less than Feature header size (%d)",
                              QIMG_MIN(remaining, (int64_t)(s->cluster_size - QIMG_MIN(pos, s->cluster_size))),
                              PRL_FEAT_HDR);
        uint64_t magic = qimg_le64(ext + pos), flags = qimg_le64(ext + pos + 8);
        uint64_t size = qimg_le32(ext + pos + 16);
        pos += PRL_FEAT_HDR;
        remaining -= PRL_FEAT_HDR;
        if (flags)
            return qimg_error(-EINVAL, "Flags for extension feature are unsupported");
        if ((int64_t)size > remaining || pos + size > s->cluster_size)
            return qimg_error(-EINVAL, "Feature data_size exceedes Format Extension cluster");
        if (magic == PRL_FEAT_END)
            return 0;
        if (magic != PRL_FEAT_BITMAP)
            return qimg_error(-EINVAL, "Unknown feature: 0x%" PRIx64, magic);
        int r = check_bitmap_feature(s, nb_sectors, ext + pos, size, &ids);
        if (r < 0)
            return r;
        pos = (pos + size + 7) & ~(uint64_t)7;
    }
}

static int check_format_extension(struct qimg_image *img, uint64_t ext_off, uint64_t nb_sectors)
{
    const struct prl_state *s = state(img);
    uint64_t off;
    if (!qimg_mul_ok(ext_off, SECTOR, &off) || off > INT64_MAX)
        return qimg_error(-EINVAL, "Format Extension offset %" PRIu64 " is out of range", ext_off);
    CLEANUP_FREE uint8_t *ext = qimg_alloc_from_image(s->cluster_size, "Parallels Format Extension");
    if (!ext)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, ext, s->cluster_size, off);
    if (r < 0)
        return qimg_error(r, "Failed to read Format Extension cluster: %s", strerror(-r));
    uint64_t magic = qimg_le64(ext);
    if (magic != PRL_EXT_MAGIC)
        return qimg_error(-EINVAL, "Wrong parallels Format Extension magic: 0x%" PRIx64
                          ", expected: 0x%llx", magic, PRL_EXT_MAGIC);
    uint8_t digest[16];
    qimg_md5(ext + PRL_EXT_HDR, s->cluster_size - PRL_EXT_HDR, digest);
    if (memcmp(digest, ext + 8, 16) != 0)
        return qimg_error(-EINVAL, "Wrong checksum in Format Extension header. Format extension "
                          "is corrupted.");
    return walk_features(s, nb_sectors, ext);
}

static int write_inuse(struct prl_state *s, struct qimg_io *io, uint32_t value)
{
    qimg_put_le32(s->header + OFF_INUSE, value);
    int r = qimg_io_pwrite(io, s->header, PRL_HEADER_SIZE, 0);
    if (r == 0)
        r = qimg_io_flush(io);
    return r;
}

static int open_options(qimg_opts *opts)
{
    uint64_t size;
    const char *mode;
    int r = qimg_opts_get_size(opts, "prealloc-size", &size);
    if (r < 0)
        return r;
    r = qimg_opts_get_string(opts, "prealloc-mode", &mode);
    if (r < 0)
        return r;
    if (r == 1 && strcmp(mode, "falloc") && strcmp(mode, "truncate"))
        return qimg_error(-EINVAL, "Parameter 'prealloc-mode' does not accept value '%s'", mode);
    return 0;
}

static void free_state(struct qimg_image *img)
{
    struct prl_state *s = state(img);
    if (s)
        free(s->header);
    free(s);
    img->opaque = NULL;
}

static int open_image(struct qimg_image *img, qimg_opts *opts, unsigned flags);

/* The image layer does not close an image whose open failed. */
static int prl_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    int r = open_image(img, opts, flags);
    if (r < 0)
        free_state(img);
    return r;
}

static int open_image(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    uint8_t h[PRL_HEADER_SIZE];
    uint64_t nb_sectors = 0;
    struct prl_state *s = qimg_xcalloc(1, sizeof *s);
    img->opaque = s;
    int r = qimg_io_pread(img->file, h, sizeof h, 0);
    if (r == 0)
        r = qimg_io_get_size(img->file, &s->file_size);
    if (r == 0)
        r = parse_header(s, h, &nb_sectors);
    if (r < 0)
        return r;
    /* qemu would read a BAT past the end of the file as zeros; a table
     * that is not there is a damaged or hostile file: refuse it. */
    if (s->header_bytes > s->file_size)
        return qimg_error(-EINVAL, "Invalid image: BAT (%" PRIu64 " bytes) goes past the end of "
                          "the file (%" PRIu64 " bytes)", s->header_bytes, s->file_size);
    s->header = qimg_alloc_from_image(s->header_bytes, "Parallels BAT");
    if (!s->header)
        return -ENOMEM;
    r = qimg_io_pread(img->file, s->header, s->header_bytes, 0);
    if (r < 0)
        return r;
    img->size = nb_sectors * SECTOR;
    s->writable = !img->read_only && (flags & QIMG_OPEN_RDWR);
    compute_data_end(s, qimg_le32(h + OFF_DATA_OFF), s->writable);
    if (qimg_le32(h + OFF_INUSE) == PRL_INUSE_MAGIC) {
        s->header_unclean = true;
        if (s->writable && !(flags & QIMG_OPEN_CHECK))
            return qimg_error(-EACCES, "parallels: Image was not closed correctly; "
                              "cannot be opened read/write");
    }
    r = open_options(opts);
    if (r < 0)
        return r;
    if (s->writable && qimg_le64(h + OFF_EXT_OFF))
        qimg_warn("Format Extension ignored in RW mode");
    else if (qimg_le64(h + OFF_EXT_OFF))
        r = check_format_extension(img, qimg_le64(h + OFF_EXT_OFF), nb_sectors);
    if (s->writable && !(flags & QIMG_OPEN_REOPEN))
        r = write_inuse(s, img->file, PRL_INUSE_MAGIC);
    return r;
}

static void prl_close(struct qimg_image *img)
{
    struct prl_state *s = state(img);
    if (!s)
        return;
    if (s->writable && s->header) {
        /* errors are ignored here, as qemu does; an unclean image that
         * was opened for a check is marked closed whatever it found */
        write_inuse(s, img->file, 0);
        uint64_t end;
        if (qimg_mul_ok(s->data_end, SECTOR, &end))
            qimg_io_truncate(img->file, end);
    }
    free_state(img);
}

/* From guest offset off: the host offset (0 when unallocated) and how many
 * bytes from there share that state contiguously (at most len). */
static uint64_t map_run(const struct prl_state *s, uint64_t off, uint64_t len, uint64_t *run)
{
    uint64_t first = 0, expect = 0;
    *run = 0;
    while (len > 0) {
        uint64_t idx = off / s->cluster_size, in = off % s->cluster_size;
        if (idx >= s->bat_size) {
            /* past the BAT (a header whose size exceeds it): one hole */
            if (*run == 0 || expect == 0)
                *run += len;
            break;
        }
        uint64_t host = idx < s->bat_size && bat_entry(s, (uint32_t)idx)
                        ? bat_sector(s, (uint32_t)idx) * SECTOR + in : 0;
        if (*run == 0)
            first = expect = host;
        else if (host != expect)
            break;
        uint64_t n = QIMG_MIN(len, s->cluster_size - in);
        *run += n;
        off += n;
        len -= n;
        if (host)
            expect += n;
    }
    return first;
}

static int prl_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    struct prl_state *s = state(img);
    uint8_t *p = buf;
    while (len > 0) {
        uint64_t run;
        pthread_mutex_lock(&img->lock);
        uint64_t host = map_run(s, off, len, &run);
        pthread_mutex_unlock(&img->lock);
        int r = host ? qimg_io_pread(img->file, p, run, host)
                     : qimg_read_backing(img, off, p, run);
        if (r < 0)
            return r;
        p += run;
        off += run;
        len -= run;
    }
    return 0;
}

static int prl_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    struct prl_state *s = state(img);
    pthread_mutex_lock(&img->lock);
    uint64_t host = map_run(s, off, len, &ext->length);
    pthread_mutex_unlock(&img->lock);
    ext->flags = 0;
    if (host) {
        ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET;
        ext->host_offset = host;
        ext->host_file = img->file->filename;
    }
    return 0;
}

/* ---------------------------------------------------------------- writing */

/* Fill [host, host+len) of a new cluster from the backing image (guest
 * offset guest); without one the new space reads as zeros already. */
static int copy_from_backing(struct qimg_image *img, uint64_t guest, uint64_t host, uint64_t len)
{
    if (!img->backing || len == 0)
        return 0;
    size_t chunk = (size_t)QIMG_MIN(len, 1u << 20);
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(chunk);
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN(len, chunk);
        int r = qimg_read_backing(img, guest, buf, n);
        if (r == 0)
            r = qimg_io_pwrite(img->file, buf, n, host);
        if (r < 0)
            return r;
        guest += n;
        host += n;
        len -= n;
    }
    return 0;
}

/* Give cluster idx the next free cluster of the file; the caller writes
 * [in, in+n) of it, the rest comes from the backing image or reads as
 * zeros.  Returns the new cluster's host offset in *host. */
static int allocate_cluster(struct qimg_image *img, uint32_t idx, uint64_t in, uint64_t n,
                            uint64_t *host)
{
    struct prl_state *s = state(img);
    uint64_t entry = s->data_end / s->off_multiplier, start, end;
    if (entry > UINT32_MAX || !qimg_mul_ok(s->data_end, SECTOR, &start) ||
        !qimg_add_ok(start, s->cluster_size, &end))
        return qimg_error(-ENOSPC, "Parallels image is full: no BAT entry can address "
                          "offset %" PRIu64, s->data_end * (uint64_t)SECTOR);
    uint64_t guest = (uint64_t)idx * s->cluster_size;
    qimg_io_event(img->file, QIMG_EV_CLUSTER_ALLOC);
    int r = copy_from_backing(img, guest, start, in);
    if (r == 0)
        r = copy_from_backing(img, guest + in + n, start + in + n, s->cluster_size - in - n);
    if (r == 0 && end > s->file_size) {
        r = qimg_io_truncate(img->file, end);
        if (r == 0)
            s->file_size = end;
    }
    if (r < 0)
        return r;
    uint8_t le[4];
    qimg_put_le32(le, (uint32_t)entry);
    memcpy(s->header + PRL_HEADER_SIZE + 4 * (uint64_t)idx, le, 4);
    s->data_end += s->tracks;
    *host = start;
    return 0;
}

static int write_bat_entry(struct qimg_image *img, uint32_t idx)
{
    struct prl_state *s = state(img);
    uint64_t off = PRL_HEADER_SIZE + 4 * (uint64_t)idx;
    return qimg_io_pwrite(img->file, s->header + off, 4, off);
}

/* [off, off+n) inside one cluster (a qimg_piece_fn: p is only read). */
static int write_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct prl_state *s = state(img);
    uint64_t idx = off / s->cluster_size, in = off % s->cluster_size;
    if (idx >= s->bat_size)
        return qimg_error(-EIO, "Parallels write past the BAT (cluster %" PRIu64 ")", idx);
    pthread_mutex_lock(&img->lock);
    uint64_t host = bat_sector(s, (uint32_t)idx) * SECTOR;
    bool fresh = host == 0;
    int r = 0;
    if (fresh)
        r = allocate_cluster(img, (uint32_t)idx, in, n, &host);
    else if (host < s->header_bytes)
        /* qemu would write the guest's data over its own header and BAT */
        r = qimg_error(-EIO, "Parallels cluster %" PRIu64 " overlaps the image header and BAT; "
                       "refusing to write it (run 'check -r all')", idx);
    if (r == 0)
        r = qimg_io_pwrite(img->file, p, n, host + in);
    /* the data first, then the BAT entry that points at it */
    if (r == 0 && fresh)
        r = write_bat_entry(img, (uint32_t)idx);
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int prl_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    return qimg_for_each_piece(img, off, (uint8_t *)buf, len, state(img)->cluster_size,
                               write_piece);
}

static int prl_flush(struct qimg_image *img)
{
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_OS);
    qimg_io_event(img->file, QIMG_EV_FLUSH_TO_DISK);
    return qimg_io_flush(img->file);
}

static bool prl_has_zero_init(struct qimg_image *img) { return true; }

/* --------------------------------------------------------------- checking */

static const char *fixing(unsigned fix, unsigned what)
{
    return fix & what ? "Repairing" : "ERROR";
}

/* BAT entries pointing past the end of the file; with QIMG_FIX_ERRORS
 * they are cleared.  Fills the cluster statistics and the highest
 * cluster offset in use. */
static void check_bat(struct prl_state *s, struct qimg_check_result *res, unsigned fix,
                      uint64_t *high_off, bool *bat_changed)
{
    uint64_t prev = 0;
    for (uint32_t i = 0; i < s->bat_size; i++) {
        uint64_t off = bat_sector(s, i) * SECTOR;
        if (off == 0) {
            prev = 0;
            continue;
        }
        if (off > s->file_size) {
            qimg_check_log("%s cluster %" PRIu32 " is outside image", fixing(fix, QIMG_FIX_ERRORS), i);
            res->corruptions++;
            if (fix & QIMG_FIX_ERRORS) {
                memset(s->header + PRL_HEADER_SIZE + 4 * (uint64_t)i, 0, 4);
                res->corruptions_fixed++;
                *bat_changed = true;
                prev = 0;
                continue;
            }
        }
        res->allocated_clusters++;
        if (off > *high_off)
            *high_off = off;
        if (prev != 0 && prev + s->cluster_size != off)
            res->fragmented_clusters++;
        prev = off;
    }
}

/* Space after the last cluster is leaked; QIMG_FIX_LEAKS cuts it off. */
static int check_leaks(struct qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    struct prl_state *s = state(img);
    uint64_t end = (uint64_t)res->image_end_offset;
    if (s->file_size <= end)
        return 0;
    uint64_t leaked = s->file_size - end, count = qimg_div_round_up(leaked, s->cluster_size);
    qimg_check_log("%s space leaked at the end of the image %" PRIu64, fixing(fix, QIMG_FIX_LEAKS),
                   leaked);
    res->leaks += (int64_t)count;
    if (!(fix & QIMG_FIX_LEAKS))
        return 0;
    int r = qimg_io_truncate(img->file, end);
    if (r < 0) {
        qimg_check_log(QIMG_CHECK_LOG_REPORT "%s", qimg_last_error());
        res->check_errors++;
        return r;
    }
    s->file_size = end;
    s->data_end = s->bat_end;   /* close truncates to it, as qemu's does */
    res->leaks_fixed += (int64_t)count;
    return 0;
}

static int prl_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    struct prl_state *s = state(img);
    int r = qimg_io_get_size(img->file, &s->file_size);
    if (r < 0) {
        res->check_errors++;
        return r;
    }
    /* qemu sees the file's length in whole sectors */
    if (!qimg_round_up_ok(s->file_size, SECTOR, &s->file_size))
        return qimg_error(-EFBIG, "File too large");
    if (s->header_unclean) {
        qimg_check_log("%s image was not closed correctly", fixing(fix, QIMG_FIX_ERRORS));
        res->corruptions++;
        if (fix & QIMG_FIX_ERRORS) {
            res->corruptions_fixed++;
            s->header_unclean = false;      /* close clears the flag */
        }
    }
    res->total_clusters = s->bat_size;
    res->has_stats = true;
    uint64_t high_off = 0;
    bool bat_changed = false;
    check_bat(s, res, fix, &high_off, &bat_changed);
    if (bat_changed) {
        r = qimg_io_pwrite(img->file, s->header, s->header_bytes, 0);
        if (r == 0)
            r = qimg_io_flush(img->file);
        if (r < 0) {
            res->check_errors++;
            return r;
        }
    }
    res->image_end_offset = (int64_t)(high_off + s->cluster_size);
    return check_leaks(img, res, fix);
}

/* ----------------------------------------------- resizing (beyond qemu) */

/* Move host cluster idx to the end of the data (growing the BAT over it). */
static int move_cluster(struct qimg_image *img, struct prl_state *s, uint32_t idx, uint8_t *buf)
{
    uint64_t from = bat_sector(s, idx) * SECTOR, entry = s->data_end / s->off_multiplier;
    uint64_t to = s->data_end * SECTOR;
    if (entry > UINT32_MAX)
        return qimg_error(-ENOSPC, "Parallels image is full: no BAT entry can address "
                          "offset %" PRIu64, to);
    int r = qimg_io_pread(img->file, buf, s->cluster_size, from);
    if (r == 0)
        r = qimg_io_pwrite(img->file, buf, s->cluster_size, to);
    if (r < 0)
        return r;
    qimg_put_le32(s->header + PRL_HEADER_SIZE + 4 * (uint64_t)idx, (uint32_t)entry);
    s->data_end += s->tracks;
    s->file_size = QIMG_MAX(s->file_size, to + s->cluster_size);
    return 0;
}

/* Room for a BAT of n entries before the data: the clusters in the way
 * move to the end (copied, flushed, before the BAT that points at their
 * new place is written over the old). */
static int make_bat_room(struct qimg_image *img, struct prl_state *s, uint64_t n,
                         uint32_t *data_off)
{
    uint64_t need = PRL_HEADER_SIZE + 4 * n;
    if (need <= (uint64_t)*data_off * SECTOR)
        return 0;
    uint64_t new_off = qimg_div_round_up(need, s->cluster_size) * s->tracks;
    uint64_t ext = qimg_le64(s->header + OFF_EXT_OFF);
    if (new_off > UINT32_MAX)
        return qimg_error(-E2BIG, "Catalog too large");
    if (ext && ext < new_off)
        return qimg_error(-ENOTSUP, "Cannot grow the Parallels BAT over its format extension");
    if (s->data_end < new_off)
        s->data_end = new_off;
    uint8_t *buf CLEANUP_FREE = qimg_xmalloc(s->cluster_size);
    for (uint32_t i = 0; i < s->bat_size; i++) {
        uint64_t sect = bat_sector(s, i);
        if (sect && sect < new_off) {
            int r = move_cluster(img, s, i, buf);
            if (r < 0)
                return r;
        }
    }
    int r = qimg_io_flush(img->file);
    if (r < 0)
        return r;
    *data_off = (uint32_t)new_off;
    return 0;
}

static int set_bat_size(struct qimg_image *img, struct prl_state *s, uint64_t n)
{
    uint32_t data_off = qimg_le32(s->header + OFF_DATA_OFF);
    if (!data_off)
        data_off = (uint32_t)qimg_div_round_up(s->header_bytes, SECTOR);
    int r = n > s->bat_size ? make_bat_room(img, s, n, &data_off) : 0;
    if (r < 0)
        return r;
    uint64_t bytes = PRL_HEADER_SIZE + 4 * n;
    uint8_t *h = qimg_alloc_from_image(bytes, "Parallels BAT");
    if (!h)
        return -ENOMEM;
    memset(h, 0, bytes);
    memcpy(h, s->header, QIMG_MIN(bytes, s->header_bytes));   /* entries past n go */
    free(s->header);
    s->header = h;
    s->header_bytes = bytes;
    s->bat_size = (uint32_t)n;
    qimg_put_le32(h + OFF_BAT_ENTRIES, (uint32_t)n);
    qimg_put_le32(h + OFF_DATA_OFF, data_off);
    /* the file ends at the data start or after the last cluster (or, with
     * a format extension, where it ended) */
    uint64_t had = s->file_size;
    compute_data_end(s, data_off, qimg_le64(h + OFF_EXT_OFF) != 0);
    uint64_t end = s->data_end * SECTOR;
    if (end != had) {
        r = qimg_io_truncate(img->file, end);
        if (r == 0)
            s->file_size = end;
    }
    return r;
}

/* qemu-img cannot resize a Parallels image: grown (the BAT grows, moving
 * the clusters in its way) or shrunk (clusters past the end dropped). */
static int prl_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    struct prl_state *s = state(img);
    if (prealloc && strcmp(prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    uint64_t total;
    if (!qimg_round_up_ok(size, SECTOR, &total) || total >= PRL_MAX_IMAGE_FACTOR * s->cluster_size)
        return qimg_error(-E2BIG, "Image size is too large for this cluster size");
    if (memcmp(s->header, PRL_MAGIC_V1, 16) == 0 && total / SECTOR > UINT32_MAX)
        return qimg_error(-E2BIG, "Image size is too large for the old Parallels header");
    uint64_t n = qimg_div_round_up(total, s->cluster_size);
    if (n > INT32_MAX / 4)
        return qimg_error(-EFBIG, "Catalog too large");
    pthread_mutex_lock(&img->lock);
    int r = set_bat_size(img, s, n);
    if (r == 0) {
        qimg_put_le64(s->header + OFF_NB_SECTORS, total / SECTOR);
        qimg_put_le32(s->header + OFF_CYLINDERS,
                      (uint32_t)(total / SECTOR / PRL_HEADS / PRL_SECTORS_PER_CYL));
        r = qimg_io_pwrite(img->file, s->header, s->header_bytes, 0);
    }
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        img->size = total;
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* ----------------------------------------------- measuring (beyond qemu) */

/* qemu-img cannot measure Parallels images: the header and BAT (whole
 * clusters, as created), then a cluster for each one block status calls
 * data (an upper bound: convert may find zeros in them). */
static int prl_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    uint64_t cl_size = PRL_DEFAULT_CLUSTER, total = src ? qimg_size(src) : size, used;
    int r = opts ? qimg_opts_get_size(opts, "cluster_size", &cl_size) : 0;
    if (r < 0)
        return r;
    if (!qimg_round_up_ok(total, SECTOR, &total) || !qimg_round_up_ok(cl_size, SECTOR, &cl_size) ||
        cl_size >= (uint64_t)INT64_MAX / PRL_MAX_IMAGE_FACTOR)
        return qimg_error(-EINVAL, "Cluster size is too large");
    if (total >= PRL_MAX_IMAGE_FACTOR * cl_size)
        return qimg_error(-E2BIG, "Image size is too large for this cluster size");
    uint64_t entries = qimg_div_round_up(total, cl_size);
    uint64_t meta = qimg_div_round_up(PRL_HEADER_SIZE + 4 * entries, cl_size) * cl_size;
    used = entries;
    if (src && (r = qimg_count_data_blocks(src, 0, qimg_size(src), cl_size, &used)) < 0)
        return r;
    if (!src)
        used = 0;
    out->fully_allocated = meta + entries * cl_size;
    out->required = meta + used * cl_size;
    return 0;
}

/* --------------------------------------------------------------- creating */

static int prl_create(struct qimg_create_ctx *ctx)
{
    uint64_t cl_size = PRL_DEFAULT_CLUSTER;
    int r = qimg_opts_get_size(ctx->opts, "cluster_size", &cl_size);
    if (r < 0)
        return r;
    uint64_t total = ctx->size;
    /* qemu rounds both up to whole sectors silently */
    if (!qimg_round_up_ok(total, SECTOR, &total) || !qimg_round_up_ok(cl_size, SECTOR, &cl_size) ||
        cl_size >= (uint64_t)INT64_MAX / PRL_MAX_IMAGE_FACTOR)
        return qimg_error(-EINVAL, "Cluster size is too large");
    if (total >= PRL_MAX_IMAGE_FACTOR * cl_size)
        return qimg_error(-E2BIG, "Image size is too large for this cluster size");
    /* qemu hands preallocation to the file it creates empty (the size
     * option is its own): every mode the file takes does nothing */
    if (strcmp(ctx->prealloc, "metadata") == 0)
        return qimg_error(-EINVAL, "Unsupported preallocation mode: metadata");
    if (strcmp(ctx->prealloc, "off") && strcmp(ctx->prealloc, "falloc") && strcmp(ctx->prealloc, "full"))
        return qimg_error(-EINVAL, "invalid parameter value: %s", ctx->prealloc);

    uint64_t bat_entries = qimg_div_round_up(total, cl_size);
    uint64_t bat_clusters = qimg_div_round_up(PRL_HEADER_SIZE + 4 * bat_entries, cl_size);
    uint64_t data_sectors = bat_clusters * cl_size / SECTOR;
    uint8_t sector[SECTOR] = { 0 };
    memcpy(sector, PRL_MAGIC_EXT, 16);
    qimg_put_le32(sector + OFF_VERSION, PRL_VERSION);
    qimg_put_le32(sector + OFF_HEADS, PRL_HEADS);
    qimg_put_le32(sector + OFF_CYLINDERS, (uint32_t)(total / SECTOR / PRL_HEADS / PRL_SECTORS_PER_CYL));
    qimg_put_le32(sector + OFF_TRACKS, (uint32_t)(cl_size / SECTOR));
    qimg_put_le32(sector + OFF_BAT_ENTRIES, (uint32_t)bat_entries);
    qimg_put_le64(sector + OFF_NB_SECTORS, total / SECTOR);
    qimg_put_le32(sector + OFF_DATA_OFF, (uint32_t)data_sectors);

    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = qimg_io_pwrite(io, sector, sizeof sector, 0);
    if (r == 0 && data_sectors > 1)
        r = qimg_io_truncate(io, data_sectors * SECTOR);
    qimg_io_close(io);
    if (r < 0)
        return qimg_error(r, "Failed to create Parallels image: %s", qimg_last_error());
    return 0;
}

const struct qimg_driver qimg_driver_parallels = {
    .name           = "parallels",
    .flags          = QIMG_DRV_NO_REOPEN,
    .create_opts    = prl_create_opts,
    .probe          = prl_probe,
    .open           = prl_open,
    .close          = prl_close,
    .create         = prl_create,
    .read           = prl_read,
    .write          = prl_write,
    .flush          = prl_flush,
    .block_status   = prl_block_status,
    .check          = prl_check,
    .has_zero_init  = prl_has_zero_init,
    .resize         = prl_resize,
    .measure        = prl_measure,
};
