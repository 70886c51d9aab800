/* qimg - the VHD format (qemu calls it "vpc"): fixed and dynamic disks.
 *
 * On-disk layout (Microsoft's Virtual Hard Disk Image Format Specification),
 * every integer big-endian:
 *
 * The footer, 512 bytes, is the last sector of every VHD; a dynamic disk
 * also keeps a copy of it in its first sector:
 *     0  cookie "conectix"          40  original size (u64)
 *     8  features (u32)             48  current size (u64)
 *    12  format version (u32)       56  cylinders (u16), heads (u8), sectors (u8)
 *    16  offset of the dynamic      60  disk type (u32): 2 fixed, 3 dynamic,
 *        header (u64), all ones         4 differencing
 *        for a fixed disk           64  checksum (u32): the one's complement of
 *    24  timestamp (u32, seconds        the byte sum of the footer with this
 *        since 2000-01-01 UTC)          field taken as zero
 *    28  creator application (4)    68  unique id (16)
 *    32  creator version (u32)      84  saved state (u8), then reserved zeros
 *    36  creator host OS (4)
 *
 * A fixed disk is the guest disk followed by the footer.
 *
 * A dynamic disk's header (1024 bytes, at the footer's offset field):
 *     0  cookie "cxsparse"          28  max table entries (u32)
 *     8  data offset (u64, unused)  32  block size (u32)
 *    16  table offset (u64): the    36  checksum (u32)
 *        block allocation table     40  parent fields (differencing disks)
 *    24  header version (u32)
 * The block allocation table (BAT) holds one u32 per block: the sector where
 * the block starts, or all ones when it is not allocated.  A block is a
 * sector bitmap (one bit a sector, padded to whole sectors) then the block's
 * data.  The footer copy follows the last block.
 */
#include <errno.h>
#include <inttypes.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

#define VPC_SECTOR 512u
#define VPC_FOOTER_SIZE 512u
#define VPC_DYN_HEADER_SIZE 1024u
#define VPC_TYPE_FIXED 2u
#define VPC_TYPE_DYNAMIC 3u
#define VPC_TYPE_DIFF 4u
#define VPC_BAT_UNUSED 0xffffffffu
/* qemu's limits: a VHD is at most 2040 GiB; the BAT at most INT_MAX/4 entries */
#define VPC_MAX_SECTORS 0xff000000ull
#define VPC_MAX_BAT_ENTRIES (0x7fffffffu / 4)
/* the largest CHS geometry: images this big take their size from current_size */
#define VPC_CHS_MAX_SECTORS (65535ull * 16 * 255)
#define VPC_DEFAULT_BLOCK (2u << 20)
/* seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC */
#define VPC_EPOCH 946684800

/* footer fields */
enum {
    F_COOKIE = 0, F_FEATURES = 8, F_VERSION = 12, F_DATA_OFFSET = 16, F_TIMESTAMP = 24,
    F_CREATOR_APP = 28, F_CREATOR_VER = 32, F_CREATOR_OS = 36, F_ORIG_SIZE = 40,
    F_CUR_SIZE = 48, F_CYLS = 56, F_HEADS = 58, F_SECS = 59, F_TYPE = 60, F_CHECKSUM = 64,
    F_UUID = 68,
};
/* dynamic header fields */
enum {
    D_COOKIE = 0, D_DATA_OFFSET = 8, D_TABLE_OFFSET = 16, D_VERSION = 24, D_MAX_ENTRIES = 28,
    D_BLOCK_SIZE = 32, D_CHECKSUM = 36,
};

struct vpc_state {
    uint8_t footer[VPC_FOOTER_SIZE];
    bool fixed;
    uint32_t block_size;       /* dynamic: bytes of guest data a block */
    uint32_t bitmap_size;      /* dynamic: bytes of sector bitmap before each block */
    uint32_t entries;
    uint64_t bat_offset;
    uint32_t *bat;             /* host order */
    uint64_t free_offset;      /* where the next block (and the footer copy) goes */
};

static const struct qimg_opt_desc vpc_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "subformat", QIMG_OPT_STRING, "Type of virtual hard disk format. Supported formats are "
      "{dynamic (default) | fixed} ", NULL },
    { "force_size", QIMG_OPT_BOOL, "Force disk size calculation to use the actual size "
      "specified, rather than using the nearest CHS-based calculation", NULL },
    { NULL, 0, NULL, NULL },
};

static int vpc_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    /* as qemu: only the footer copy at offset 0 (a dynamic disk) counts */
    return len >= 8 && memcmp(buf, "conectix", 8) == 0 ? 100 : 0;
}

static uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t skip)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < len; i++)
        if (i < skip || i >= skip + 4)
            sum += buf[i];
    return ~sum;
}

/* Read what there is of [off, off+len); zeros past the end of the file. */
static int read_zero_padded(struct qimg_io *io, void *buf, size_t len, uint64_t off,
                            uint64_t file_size)
{
    memset(buf, 0, len);
    if (off >= file_size)
        return 0;
    return qimg_io_pread(io, buf, (size_t)QIMG_MIN(len, file_size - off), off);
}

/* The footer at offset 0 (dynamic), else in the last sector (fixed). */
static int read_footer(struct qimg_image *img, struct vpc_state *s, uint64_t file_size)
{
    int r = read_zero_padded(img->file, s->footer, VPC_FOOTER_SIZE, 0, file_size);
    if (r < 0)
        return r;
    if (memcmp(s->footer, "conectix", 8) != 0 && file_size >= VPC_FOOTER_SIZE) {
        r = qimg_io_pread(img->file, s->footer, VPC_FOOTER_SIZE, file_size - VPC_FOOTER_SIZE);
        if (r < 0)
            return r;
    }
    if (memcmp(s->footer, "conectix", 8) != 0)
        return qimg_error(-EINVAL, "invalid VPC image");
    if (qimg_be32(s->footer + F_CHECKSUM) != vpc_checksum(s->footer, VPC_FOOTER_SIZE, F_CHECKSUM))
        return qimg_error(-EINVAL, "Incorrect header checksum");
    return 0;
}

enum size_calc { SIZE_BY_CREATOR, SIZE_BY_CHS, SIZE_BY_CURRENT };

/* The open option force_size_calc=chs|current_size overrides the creator. */
static int size_calc_option(qimg_opts *opts, enum size_calc *mode)
{
    const char *v = NULL;
    int r = qimg_opts_get_string(opts, "force_size_calc", &v);
    *mode = SIZE_BY_CREATOR;
    if (r <= 0)
        return r;
    if (strcmp(v, "chs") == 0)
        *mode = SIZE_BY_CHS;
    else if (strcmp(v, "current_size") == 0)
        *mode = SIZE_BY_CURRENT;
    else
        return qimg_error(-EINVAL, "Invalid size calculation mode: '%s'", v);
    return 0;
}

/* Microsoft Virtual PC sizes a disk by its CHS geometry, Hyper-V, disk2vhd
 * and qemu's force_size by current_size: qemu decides by creator, and
 * takes current_size whenever the geometry is the largest there is. */
static uint64_t guest_sectors(const uint8_t *footer, enum size_calc mode)
{
    uint64_t chs = (uint64_t)qimg_be16(footer + F_CYLS) * footer[F_HEADS] * footer[F_SECS];
    const uint8_t *app = footer + F_CREATOR_APP;
    bool current = mode == SIZE_BY_CURRENT ||
                   (mode == SIZE_BY_CREATOR &&
                    (memcmp(app, "win ", 4) == 0 || memcmp(app, "qem2", 4) == 0 ||
                     memcmp(app, "d2v ", 4) == 0));
    if (current || chs == VPC_CHS_MAX_SECTORS)
        return qimg_be64(footer + F_CUR_SIZE) / VPC_SECTOR;
    return chs;
}

static bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

/* Each allocated block must end inside the file (rounded up to whole
 * sectors, as qemu sees it); the first free byte follows the last one. */
static int scan_bat(struct vpc_state *s, uint64_t file_size)
{
    uint64_t limit, free_off;
    if (!qimg_round_up_ok(file_size, VPC_SECTOR, &limit) ||
        !qimg_round_up_ok(s->bat_offset + (uint64_t)s->entries * 4, VPC_SECTOR, &free_off))
        return qimg_error(-EINVAL, "Invalid BAT offset");
    for (uint32_t i = 0; i < s->entries; i++) {
        if (s->bat[i] == VPC_BAT_UNUSED)
            continue;
        uint64_t end = (uint64_t)s->bat[i] * VPC_SECTOR + s->bitmap_size + s->block_size;
        if (end > free_off)
            free_off = end;
    }
    if (free_off > limit)
        return qimg_error(-EINVAL, "block-vpc: free_data_block_offset points after the end "
                          "of file. The image has been truncated.");
    s->free_offset = free_off;
    return 0;
}

static int open_dynamic(struct qimg_image *img, struct vpc_state *s, uint64_t file_size)
{
    uint8_t hdr[VPC_DYN_HEADER_SIZE];
    uint64_t off = qimg_be64(s->footer + F_DATA_OFFSET);
    int r = read_zero_padded(img->file, hdr, sizeof hdr, off, file_size);
    if (r < 0)
        return r;
    if (memcmp(hdr, "cxsparse", 8) != 0)
        return qimg_error(-EINVAL, "Invalid header magic");
    s->block_size = qimg_be32(hdr + D_BLOCK_SIZE);
    if (!is_pow2(s->block_size) || s->block_size < VPC_SECTOR)
        return qimg_error(-EINVAL, "Invalid block size %" PRIu32, s->block_size);
    s->entries = qimg_be32(hdr + D_MAX_ENTRIES);
    if (s->entries > VPC_MAX_BAT_ENTRIES)
        return qimg_error(-EINVAL, "Max Table Entries too large (%" PRId32 ")",
                          (int32_t)s->entries);
    if ((uint64_t)s->entries * s->block_size < img->size)
        return qimg_error(-EINVAL, "Page table too small");
    s->bitmap_size = (uint32_t)(((s->block_size / VPC_SECTOR / 8) + VPC_SECTOR - 1) &
                                ~(uint64_t)(VPC_SECTOR - 1));
    s->bat_offset = qimg_be64(hdr + D_TABLE_OFFSET);
    uint64_t bat_bytes = (uint64_t)s->entries * 4, bat_end, limit;
    /* The first free byte is at least the table's end (rounded to a
     * sector), so a table past the end of the file fails scan_bat's check
     * whatever it holds: refuse it before allocating. */
    /* reads qemu cannot issue: longer than its largest request, or ending
     * past its largest offset */
    if (bat_bytes > 0x7ffffe00u || !qimg_add_ok(s->bat_offset, bat_bytes, &bat_end) ||
        bat_end > INT64_MAX - 0x7fffffffu)
        return qimg_error(-EINVAL, "Error reading pagetable");
    if (!qimg_round_up_ok(bat_end, VPC_SECTOR, &bat_end) ||
        !qimg_round_up_ok(file_size, VPC_SECTOR, &limit) || bat_end > limit)
        return qimg_error(-EINVAL, "block-vpc: free_data_block_offset points after the end "
                          "of file. The image has been truncated.");
    s->bat = qimg_alloc_from_image(bat_bytes ? bat_bytes : 1, "VPC block allocation table");
    if (!s->bat)
        return -ENOMEM;
    uint8_t *raw = (uint8_t *)s->bat;
    r = read_zero_padded(img->file, raw, (size_t)bat_bytes, s->bat_offset, file_size);
    if (r < 0)
        return r;
    for (uint32_t i = 0; i < s->entries; i++)
        s->bat[i] = qimg_be32(raw + 4 * (size_t)i);
    return scan_bat(s, file_size);
}

static void vpc_close(struct qimg_image *img)
{
    struct vpc_state *s = img->opaque;
    if (s)
        free(s->bat);
    free(s);
    img->opaque = NULL;
}

static int vpc_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    uint64_t file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return r;
    enum size_calc mode;
    r = size_calc_option(opts, &mode);
    if (r < 0)
        return r;
    struct vpc_state *s = qimg_xcalloc(1, sizeof *s);
    img->opaque = s;
    r = read_footer(img, s, file_size);
    if (r < 0)
        goto fail;
    uint32_t type = qimg_be32(s->footer + F_TYPE);
    if (type == VPC_TYPE_DIFF) {
        /* qemu reads one as if it had no parent: wrong data.  Refused
         * until differencing disks are supported. */
        r = qimg_error(-ENOTSUP, "Differencing VHD images are not supported yet");
        goto fail;
    }
    s->fixed = type == VPC_TYPE_FIXED;
    uint64_t sectors = guest_sectors(s->footer, mode);
    if (sectors > VPC_MAX_SECTORS) {
        r = qimg_error(-EFBIG, "Could not open '%s': File too large", img->filename);
        goto fail;
    }
    img->size = sectors * VPC_SECTOR;
    if (!s->fixed) {
        r = open_dynamic(img, s, file_size);
        if (r < 0)
            goto fail;
    }
    return 0;
fail:
    vpc_close(img);
    return r;
}

/* The file offset of guest byte off, or 0 when its block is unallocated;
 * *avail: bytes from off to the end of its block (at most len). */
static uint64_t host_offset(const struct vpc_state *s, uint64_t off, uint64_t len, uint64_t *avail)
{
    uint64_t block = off / s->block_size, in_block = off % s->block_size;
    *avail = QIMG_MIN(len, s->block_size - in_block);
    if (block >= s->entries || s->bat[block] == VPC_BAT_UNUSED)
        return 0;
    return (uint64_t)s->bat[block] * VPC_SECTOR + s->bitmap_size + in_block;
}

/* [off, off+n) inside one block. */
static int read_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    uint64_t avail, host = host_offset(img->opaque, off, n, &avail);
    if (host)
        return qimg_io_pread(img->file, p, n, host);
    memset(p, 0, n);
    return 0;
}

static int vpc_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    struct vpc_state *s = img->opaque;
    if (s->fixed)
        return qimg_io_pread(img->file, buf, len, off);
    return qimg_for_each_piece(img, off, buf, len, s->block_size, read_piece);
}

/* A fixed disk is its file: data, with zeros where the file has holes. */
static int fixed_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                              struct qimg_extent *ext)
{
    int kind;
    uint64_t pnum;
    int r = qimg_io_extent(img->file, off, len, &pnum, &kind);
    if (r < 0)
        return r;
    ext->length = pnum;
    ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
    if (kind == QIMG_IO_EXT_HOLE)
        ext->flags |= QIMG_STATUS_ZERO;
    ext->host_offset = off;
    ext->host_file = img->file->filename;
    return 0;
}

/* An allocated block is data (qemu does not consult its sector bitmap);
 * a run of unallocated blocks reads as zeros. */
static int vpc_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                            struct qimg_extent *ext)
{
    struct vpc_state *s = img->opaque;
    if (s->fixed)
        return fixed_block_status(img, off, len, ext);
    uint64_t n, host = host_offset(s, off, len, &n);
    ext->host_file = img->file->filename;
    if (host) {
        ext->length = n;
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
        ext->host_offset = host;
        return 0;
    }
    uint64_t total = n;
    while (total < len) {
        uint64_t m;
        if (host_offset(s, off + total, len - total, &m))
            break;
        total += m;
    }
    ext->length = total;
    ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_ZERO;
    return 0;
}

/* ------------------------------------------------------------ write */

/* Give block i room at the end of the file: its sector bitmap (every
 * sector marked present, as qemu does), then the footer copy moved past
 * the block, then the BAT entry, so a crash leaves at worst an unused
 * block behind. */
static int allocate_block(struct qimg_image *img, struct vpc_state *s, uint64_t i)
{
    uint64_t start = s->free_offset, end = start + s->bitmap_size + s->block_size;
    if (start / VPC_SECTOR >= VPC_BAT_UNUSED)
        return qimg_error(-EFBIG, "VHD file too large for another block");
    uint8_t *bitmap = qimg_xmalloc(s->bitmap_size);
    memset(bitmap, 0xff, s->bitmap_size);
    int r = qimg_io_pwrite(img->file, bitmap, s->bitmap_size, start);
    free(bitmap);
    if (r == 0)
        r = qimg_io_pwrite(img->file, s->footer, VPC_FOOTER_SIZE, end);
    uint8_t entry[4];
    qimg_put_be32(entry, (uint32_t)(start / VPC_SECTOR));
    if (r == 0)
        r = qimg_io_pwrite(img->file, entry, sizeof entry, s->bat_offset + 4 * i);
    if (r < 0)
        return r;
    s->bat[i] = (uint32_t)(start / VPC_SECTOR);
    s->free_offset = end;
    return 0;
}

/* The host offset for a write at off, allocating its block if needed. */
static int host_offset_for_write(struct qimg_image *img, uint64_t off, uint64_t len,
                                 uint64_t *host, uint64_t *avail)
{
    struct vpc_state *s = img->opaque;
    pthread_mutex_lock(&img->lock);
    int r = 0;
    *host = host_offset(s, off, len, avail);
    if (!*host) {
        r = allocate_block(img, s, off / s->block_size);
        if (r == 0)
            *host = host_offset(s, off, len, avail);
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* [off, off+n) inside one block, allocated first if it is not (a
 * qimg_piece_fn: p is only read). */
static int write_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    uint64_t host, avail;
    int r = host_offset_for_write(img, off, n, &host, &avail);
    return r < 0 ? r : qimg_io_pwrite(img->file, p, n, host);
}

static int vpc_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct vpc_state *s = img->opaque;
    if (s->fixed)
        return qimg_io_pwrite(img->file, buf, len, off);
    return qimg_for_each_piece(img, off, (uint8_t *)buf, len, s->block_size, write_piece);
}

/* Unallocated blocks already read as zeros; allocated ones get zeros
 * written (a VHD cannot give a block back). */
static int vpc_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    struct vpc_state *s = img->opaque;
    if (s->fixed)
        return qimg_io_zero(img->file, off, len, false);
    while (len > 0) {
        uint64_t n;
        pthread_mutex_lock(&img->lock);
        uint64_t host = host_offset(s, off, len, &n);
        pthread_mutex_unlock(&img->lock);
        if (host) {
            int r = qimg_io_zero(img->file, host, n, false);
            if (r < 0)
                return r;
        }
        off += n;
        len -= n;
    }
    return 0;
}

static int vpc_flush(struct qimg_image *img)
{
    return qimg_io_flush(img->file);
}

/* ----------------------------------------------------------- create */

struct chs { uint32_t cyls, heads, secs; };

static uint64_t chs_sectors(struct chs g) { return (uint64_t)g.cyls * g.heads * g.secs; }

/* The geometry algorithm of the VHD specification's appendix. */
static struct chs geometry_for(uint64_t sectors)
{
    struct chs g;
    uint64_t cth;
    if (sectors > VPC_CHS_MAX_SECTORS)
        sectors = VPC_CHS_MAX_SECTORS;
    if (sectors >= 65535ull * 16 * 63) {
        g.secs = 255;
        g.heads = 16;
        cth = sectors / g.secs;
    } else {
        g.secs = 17;
        cth = sectors / g.secs;
        g.heads = (uint32_t)((cth + 1023) / 1024);
        if (g.heads < 4)
            g.heads = 4;
        if (cth >= (uint64_t)g.heads * 1024 || g.heads > 16) {
            g.secs = 31;
            g.heads = 16;
            cth = sectors / g.secs;
        }
        if (cth >= (uint64_t)g.heads * 1024) {
            g.secs = 63;
            g.heads = 16;
            cth = sectors / g.secs;
        }
    }
    g.cyls = (uint32_t)(cth / g.heads);
    return g;
}

/* qemu's sizing: the smallest geometry that holds the size, and the disk
 * is exactly that big; past the largest geometry, or with force_size, the
 * size as given (in whole sectors) with the largest geometry, which tells
 * readers to take current_size. */
static int vpc_size(uint64_t size, bool force, struct chs *g, uint64_t *sectors)
{
    uint64_t want = size / VPC_SECTOR + (size % VPC_SECTOR != 0);
    struct chs max = { 65535, 16, 255 };
    if (force) {
        *g = max;
        *sectors = want;
    } else {
        *g = (struct chs){ 0, 0, 0 };
        for (uint64_t i = 0; want > chs_sectors(*g) && chs_sectors(*g) != VPC_CHS_MAX_SECTORS; i++)
            *g = geometry_for(want + i);
        *sectors = chs_sectors(*g) == VPC_CHS_MAX_SECTORS ? want : chs_sectors(*g);
    }
    if (*sectors > VPC_MAX_SECTORS)
        return -EFBIG;   /* the core says "too large for file format" */
    return 0;
}

/* a version 4 (random) UUID, as qemu gives each new disk */
static void random_uuid(uint8_t *u)
{
    if (getrandom(u, 16, 0) != 16) {
        /* no entropy source: still unique enough for an identifier */
        uint64_t seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)u;
        for (int i = 0; i < 16; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            u[i] = (uint8_t)(seed >> 56);
        }
    }
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
}

static void make_footer(uint8_t *f, uint64_t bytes, struct chs g, bool fixed, bool force)
{
    memset(f, 0, VPC_FOOTER_SIZE);
    memcpy(f + F_COOKIE, "conectix", 8);
    qimg_put_be32(f + F_FEATURES, 2);
    qimg_put_be32(f + F_VERSION, 0x10000);
    qimg_put_be64(f + F_DATA_OFFSET, fixed ? UINT64_MAX : VPC_FOOTER_SIZE);
    qimg_put_be32(f + F_TIMESTAMP, (uint32_t)(time(NULL) - VPC_EPOCH));
    memcpy(f + F_CREATOR_APP, force ? "qem2" : "qemu", 4);
    qimg_put_be32(f + F_CREATOR_VER, 0x00050003);
    memcpy(f + F_CREATOR_OS, "Wi2k", 4);
    qimg_put_be64(f + F_ORIG_SIZE, bytes);
    qimg_put_be64(f + F_CUR_SIZE, bytes);
    qimg_put_be16(f + F_CYLS, (uint16_t)g.cyls);
    f[F_HEADS] = (uint8_t)g.heads;
    f[F_SECS] = (uint8_t)g.secs;
    qimg_put_be32(f + F_TYPE, fixed ? VPC_TYPE_FIXED : VPC_TYPE_DYNAMIC);
    random_uuid(f + F_UUID);
    qimg_put_be32(f + F_CHECKSUM, vpc_checksum(f, VPC_FOOTER_SIZE, F_CHECKSUM));
}

/* footer copy, dynamic header, an empty BAT (padded to a sector), footer */
static int create_dynamic(struct qimg_io *io, const uint8_t *footer, uint64_t bytes)
{
    uint64_t entries = (bytes + VPC_DEFAULT_BLOCK - 1) / VPC_DEFAULT_BLOCK;
    uint64_t bat_off = VPC_FOOTER_SIZE + VPC_DYN_HEADER_SIZE;
    uint64_t bat_size = (entries * 4 + VPC_SECTOR - 1) / VPC_SECTOR * VPC_SECTOR;
    uint8_t hdr[VPC_DYN_HEADER_SIZE] = { 0 };
    memcpy(hdr + D_COOKIE, "cxsparse", 8);
    qimg_put_be64(hdr + D_DATA_OFFSET, UINT64_MAX);
    qimg_put_be64(hdr + D_TABLE_OFFSET, bat_off);
    qimg_put_be32(hdr + D_VERSION, 0x10000);
    qimg_put_be32(hdr + D_MAX_ENTRIES, (uint32_t)entries);
    qimg_put_be32(hdr + D_BLOCK_SIZE, VPC_DEFAULT_BLOCK);
    qimg_put_be32(hdr + D_CHECKSUM, vpc_checksum(hdr, sizeof hdr, D_CHECKSUM));
    int r = qimg_io_pwrite(io, footer, VPC_FOOTER_SIZE, 0);
    if (r == 0)
        r = qimg_io_pwrite(io, hdr, sizeof hdr, VPC_FOOTER_SIZE);
    uint8_t *bat = qimg_xmalloc(bat_size ? bat_size : 1);
    memset(bat, 0xff, bat_size);
    if (r == 0 && bat_size)
        r = qimg_io_pwrite(io, bat, bat_size, bat_off);
    free(bat);
    if (r == 0)
        r = qimg_io_pwrite(io, footer, VPC_FOOTER_SIZE, bat_off + bat_size);
    return r;
}

/* the guest disk (its first 4 KiB allocated, as qemu's file creation
 * leaves it) and the footer */
static int create_fixed(struct qimg_io *io, const uint8_t *footer, uint64_t bytes)
{
    int r = qimg_io_truncate(io, bytes);
    if (r == 0 && bytes > 0) {
        uint8_t zeros[4096] = { 0 };
        r = qimg_io_pwrite(io, zeros, (size_t)QIMG_MIN(bytes, sizeof zeros), 0);
    }
    if (r == 0)
        r = qimg_io_pwrite(io, footer, VPC_FOOTER_SIZE, bytes);
    return r;
}

static int vpc_create(struct qimg_create_ctx *ctx)
{
    const char *sub = "dynamic";
    bool force = false;
    int r = qimg_opts_get_string(ctx->opts, "subformat", &sub);
    if (r >= 0)
        r = qimg_opts_get_bool(ctx->opts, "force_size", &force);
    if (r < 0)
        return r;
    bool fixed = strcmp(sub, "fixed") == 0;
    if (!fixed && strcmp(sub, "dynamic") != 0)
        return qimg_error(-EINVAL, "Parameter 'subformat' does not accept value '%s'", sub);
    struct chs g;
    uint64_t sectors;
    r = vpc_size(ctx->size, force, &g, &sectors);
    if (r < 0)
        return r;
    uint8_t footer[VPC_FOOTER_SIZE];
    make_footer(footer, sectors * VPC_SECTOR, g, fixed, force);
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = fixed ? create_fixed(io, footer, sectors * VPC_SECTOR)
              : create_dynamic(io, footer, sectors * VPC_SECTOR);
    qimg_io_close(io);
    return r;
}

static int vpc_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    const struct vpc_state *s = img->opaque;
    if (!s->fixed)
        info->cluster_size = s->block_size;
    info->has_dirty = true;
    return 0;
}

static bool vpc_has_zero_init(struct qimg_image *img) { return true; }

const struct qimg_driver qimg_driver_vpc = {
    .name           = "vpc",
    .create_opts    = vpc_create_opts,
    .probe          = vpc_probe,
    .open           = vpc_open,
    .close          = vpc_close,
    .create         = vpc_create,
    .read           = vpc_read,
    .write          = vpc_write,
    .write_zeroes   = vpc_write_zeroes,
    .flush          = vpc_flush,
    .block_status   = vpc_block_status,
    .info           = vpc_info,
    .has_zero_init  = vpc_has_zero_init,
};
