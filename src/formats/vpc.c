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

#include "vpc.h"

/* qemu's limits: a VHD is at most 2040 GiB; the BAT at most INT_MAX/4 entries */
#define VPC_MAX_SECTORS 0xff000000ull
#define VPC_MAX_BAT_ENTRIES (0x7fffffffu / 4)
/* the largest CHS geometry: images this big take their size from current_size */
#define VPC_CHS_MAX_SECTORS (65535ull * 16 * 255)
#define VPC_DEFAULT_BLOCK (2u << 20)

static const struct qimg_opt_desc vpc_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "subformat", QIMG_OPT_STRING, "Type of virtual hard disk format. Supported formats are "
      "{dynamic (default) | fixed} ", NULL },
    { "force_size", QIMG_OPT_BOOL, "Force disk size calculation to use the actual size "
      "specified, rather than using the nearest CHS-based calculation", NULL },
    /* beyond qemu-img: an Azure-ready disk in one step (vpc_create) */
    { "azure", QIMG_OPT_BOOL, "Make a VHD that Azure accepts: fixed, its size rounded up to a "
      "whole MiB and stored as current_size (implies subformat=fixed,force_size=on)", NULL },
    /* beyond qemu-img: a differencing disk (create -b) */
    { "backing_file", QIMG_OPT_STRING, "File name of the parent image (a VHD: the new "
      "image is a differencing disk)", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Image format of the parent image (vpc)", NULL },
    { NULL, 0, NULL, NULL },
};

static int vpc_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    /* as qemu: only the footer copy at offset 0 (a dynamic disk) counts */
    return len >= 8 && memcmp(buf, "conectix", 8) == 0 ? 100 : 0;
}

/* Beyond qemu, which probes a fixed VHD as raw (and so copies its footer
 * into the guest disk): a last sector that is a valid fixed disk footer
 * (cookie, checksum, disk type) for a disk of the file's size less the
 * footer makes it a VHD. */
static bool vpc_probe_tail(const uint8_t *t, size_t len, uint64_t file_size)
{
    uint64_t end;
    return len >= VPC_FOOTER_SIZE && memcmp(t, "conectix", 8) == 0 &&
           qimg_be32(t + F_CHECKSUM) == vpc_checksum(t, VPC_FOOTER_SIZE, F_CHECKSUM) &&
           qimg_be32(t + F_TYPE) == VPC_TYPE_FIXED &&
           qimg_add_ok(qimg_be64(t + F_CUR_SIZE), VPC_FOOTER_SIZE, &end) && end == file_size;
}

uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t skip)
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
int vpc_read_footer_io(struct qimg_io *io, uint8_t *footer, uint64_t file_size)
{
    int r = read_zero_padded(io, footer, VPC_FOOTER_SIZE, 0, file_size);
    if (r < 0)
        return r;
    if (memcmp(footer, "conectix", 8) != 0 && file_size >= VPC_FOOTER_SIZE) {
        r = qimg_io_pread(io, footer, VPC_FOOTER_SIZE, file_size - VPC_FOOTER_SIZE);
        if (r < 0)
            return r;
    }
    if (memcmp(footer, "conectix", 8) != 0)
        return qimg_error(-EINVAL, "invalid VPC image");
    if (qimg_be32(footer + F_CHECKSUM) != vpc_checksum(footer, VPC_FOOTER_SIZE, F_CHECKSUM))
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
static int scan_bat(struct vpc_state *s, uint64_t file_size, uint64_t meta_end)
{
    uint64_t limit, free_off;
    if (!qimg_round_up_ok(file_size, VPC_SECTOR, &limit) ||
        !qimg_round_up_ok(s->bat_offset + (uint64_t)s->entries * 4, VPC_SECTOR, &free_off))
        return qimg_error(-EINVAL, "Invalid BAT offset");
    if (!qimg_round_up_ok(meta_end, VPC_SECTOR, &meta_end))
        meta_end = limit;
    free_off = QIMG_MAX(free_off, meta_end);
    s->meta_end = free_off;
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
    uint8_t *hdr = s->header;
    uint64_t off = qimg_be64(s->footer + F_DATA_OFFSET);
    s->header_offset = off;
    int r = read_zero_padded(img->file, hdr, VPC_DYN_HEADER_SIZE, off, file_size);
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
    /* a differencing disk's parent locators: new blocks go after them */
    uint64_t meta_end = 0;
    if (s->diff && (r = vpc_parent_parse(img, s, file_size, &meta_end)) < 0)
        return r;
    return scan_bat(s, file_size, meta_end);
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
    r = vpc_read_footer_io(img->file, s->footer, file_size);
    if (r < 0)
        goto fail;
    uint32_t type = qimg_be32(s->footer + F_TYPE);
    /* qemu reads a differencing disk as if it had no parent (wrong data);
     * qimg reads through its parent */
    s->diff = type == VPC_TYPE_DIFF;
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

/* ------------------------------------------- sector bitmaps (differencing) */

/* In a differencing disk each allocated block's sector bitmap says, one
 * bit a sector (the first sector in the most significant bit of the first
 * byte), whether the sector is in this file (1) or read from the parent (0).
 * A buffer of bitmap bytes covers the sectors from first & ~7. */
struct bitmap_run {
    uint8_t *bytes;
    uint64_t first;       /* first sector (in the block) asked for */
};

static bool sector_bit(const struct bitmap_run *b, uint64_t sector)
{
    uint64_t k = sector - (b->first & ~7ull);
    return b->bytes[k / 8] & (0x80u >> (k % 8));
}

/* The bitmap bytes of sectors [first, last] of the block at block_off. */
static int read_bitmap(struct qimg_image *img, uint64_t block_off, uint64_t first, uint64_t last,
                       struct bitmap_run *b)
{
    size_t n = (size_t)(last / 8 - first / 8 + 1);
    b->first = first;
    b->bytes = qimg_xmalloc(n);
    int r = qimg_io_pread(img->file, b->bytes, n, block_off + first / 8);
    if (r < 0) {
        free(b->bytes);
        b->bytes = NULL;
    }
    return r;
}

/* The sectors after sector (up to last) whose bit is the same as its. */
static uint64_t same_bits_end(const struct bitmap_run *b, uint64_t sector, uint64_t last)
{
    bool set = sector_bit(b, sector);
    uint64_t end = sector + 1;
    while (end <= last && sector_bit(b, end) == set)
        end++;
    return end;
}

/* Mark sectors [first, last] of the block at block_off present (with the
 * image lock held: bitmaps change only under it). */
static int set_bits_locked(struct qimg_image *img, uint64_t block_off, uint64_t first,
                           uint64_t last)
{
    struct bitmap_run b;
    int r = read_bitmap(img, block_off, first, last, &b);
    if (r < 0)
        return r;
    bool changed = false;
    for (uint64_t k = first; k <= last; k++) {
        uint64_t i = (k - (first & ~7ull)) / 8;
        uint8_t bit = (uint8_t)(0x80u >> (k % 8));
        changed |= !(b.bytes[i] & bit);
        b.bytes[i] |= bit;
    }
    if (changed)
        r = qimg_io_pwrite(img->file, b.bytes, (size_t)(last / 8 - first / 8 + 1),
                           block_off + first / 8);
    free(b.bytes);
    return r;
}

static uint64_t block_start(const struct vpc_state *s, uint64_t off)
{
    return (uint64_t)s->bat[off / s->block_size] * VPC_SECTOR;
}

/* [off, off+n) of an allocated block of a differencing disk: each run of
 * sectors from this file or from the parent. */
static int read_diff_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n,
                           uint64_t host)
{
    struct vpc_state *s = img->opaque;
    uint64_t in_block = off % s->block_size;
    uint64_t last = (in_block + n - 1) / VPC_SECTOR;
    struct bitmap_run b;
    int r = read_bitmap(img, block_start(s, off), in_block / VPC_SECTOR, last, &b);
    for (uint64_t done = 0; r == 0 && done < n;) {
        uint64_t sector = (in_block + done) / VPC_SECTOR;
        uint64_t end = same_bits_end(&b, sector, last);
        uint64_t m = QIMG_MIN(end * VPC_SECTOR - in_block, n) - done;
        if (sector_bit(&b, sector))
            r = qimg_io_pread(img->file, p + done, m, host + done);
        else
            r = qimg_read_backing(img, off + done, p + done, m);
        done += m;
    }
    free(b.bytes);
    return r;
}

/* [off, off+n) inside one block. */
static int read_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct vpc_state *s = img->opaque;
    uint64_t avail, host = host_offset(s, off, n, &avail);
    if (host && s->diff)
        return read_diff_piece(img, off, p, n, host);
    if (host)
        return qimg_io_pread(img->file, p, n, host);
    if (s->diff)
        return qimg_read_backing(img, off, p, n);
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
    ext->length = len;
    ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
    ext->host_offset = off;
    ext->host_file = img->file->filename;
    qimg_extent_look_into_file(img->file, ext, false);   /* the footer follows: never at EOF */
    return 0;
}

/* A differencing disk: an allocated block's runs of sectors present here
 * (data) or in the parent (unallocated), unallocated blocks from the parent. */
static int diff_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                             struct qimg_extent *ext)
{
    struct vpc_state *s = img->opaque;
    uint64_t n, host = host_offset(s, off, len, &n);
    ext->host_file = img->file->filename;
    if (!host) {
        uint64_t total = n, m;
        while (total < len && !host_offset(s, off + total, len - total, &m))
            total += m;
        ext->length = total;
        ext->flags = 0;
        return 0;
    }
    uint64_t in_block = off % s->block_size, last = (in_block + n - 1) / VPC_SECTOR;
    struct bitmap_run b;
    int r = read_bitmap(img, block_start(s, off), in_block / VPC_SECTOR, last, &b);
    if (r < 0)
        return r;
    uint64_t end = same_bits_end(&b, in_block / VPC_SECTOR, last);
    ext->length = QIMG_MIN(end * VPC_SECTOR - in_block, n);
    ext->flags = 0;
    if (sector_bit(&b, in_block / VPC_SECTOR)) {
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
        ext->host_offset = host;
    }
    free(b.bytes);
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
    if (s->diff)
        return diff_block_status(img, off, len, ext);
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
 * sector marked present, as qemu does; none in a differencing disk, whose
 * sectors come from the parent until written), then the footer copy moved
 * past the block, then the BAT entry, so a crash leaves at worst an unused
 * block behind. */
static int allocate_block(struct qimg_image *img, struct vpc_state *s, uint64_t i)
{
    uint64_t start = s->free_offset, end = start + s->bitmap_size + s->block_size;
    if (start / VPC_SECTOR >= VPC_BAT_UNUSED)
        return qimg_error(-EFBIG, "VHD file too large for another block");
    uint8_t *bitmap = qimg_xmalloc(s->bitmap_size);
    memset(bitmap, s->diff ? 0 : 0xff, s->bitmap_size);
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

/* Whole sectors [off, off+n) of one block of a differencing disk: the
 * data (zeros when data is NULL), then their bits. */
static int write_diff_sectors(struct qimg_image *img, uint64_t off, const uint8_t *data,
                              size_t n)
{
    struct vpc_state *s = img->opaque;
    uint64_t host, avail;
    int r = host_offset_for_write(img, off, n, &host, &avail);
    if (r == 0)
        r = data ? qimg_io_pwrite(img->file, data, n, host) : qimg_io_zero(img->file, host, n, false);
    if (r < 0)
        return r;
    uint64_t in_block = off % s->block_size;
    pthread_mutex_lock(&img->lock);
    r = set_bits_locked(img, block_start(s, off), in_block / VPC_SECTOR,
                        (in_block + n - 1) / VPC_SECTOR);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* Part of one sector of a differencing disk: the sector as it reads now
 * (perhaps from the parent) with the new bytes in, under the lock. */
static int write_diff_partial(struct qimg_image *img, uint64_t off, const uint8_t *data,
                              size_t n)
{
    struct vpc_state *s = img->opaque;
    uint64_t soff = off - off % VPC_SECTOR, host, avail;
    uint8_t sector[VPC_SECTOR];
    int r = host_offset_for_write(img, soff, VPC_SECTOR, &host, &avail);
    if (r < 0)
        return r;
    pthread_mutex_lock(&img->lock);
    r = read_diff_piece(img, soff, sector, VPC_SECTOR, host);
    if (r == 0) {
        if (data)
            memcpy(sector + off % VPC_SECTOR, data, n);
        else
            memset(sector + off % VPC_SECTOR, 0, n);
        r = qimg_io_pwrite(img->file, sector, VPC_SECTOR, host);
    }
    uint64_t k = (soff % s->block_size) / VPC_SECTOR;
    if (r == 0)
        r = set_bits_locked(img, block_start(s, soff), k, k);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* [off, off+n) inside one block of a differencing disk (data NULL: zeros):
 * a partial first and last sector, whole sectors between. */
static int write_diff_piece(struct qimg_image *img, uint64_t off, const uint8_t *data, size_t n)
{
    size_t head = off % VPC_SECTOR ? QIMG_MIN(n, VPC_SECTOR - off % VPC_SECTOR) : 0;
    int r = head ? write_diff_partial(img, off, data, head) : 0;
    off += head;
    n -= head;
    if (data)
        data += head;
    size_t tail = n % VPC_SECTOR, whole = n - tail;
    if (r == 0 && whole)
        r = write_diff_sectors(img, off, data, whole);
    if (r == 0 && tail)
        r = write_diff_partial(img, off + whole, data ? data + whole : NULL, tail);
    return r;
}

static int write_diff_buf(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    return write_diff_piece(img, off, p, n);
}

static int vpc_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct vpc_state *s = img->opaque;
    if (s->fixed)
        return qimg_io_pwrite(img->file, buf, len, off);
    return qimg_for_each_piece(img, off, (uint8_t *)buf, len, s->block_size,
                               s->diff ? write_diff_buf : write_piece);
}

/* Unallocated blocks already read as zeros; allocated ones get zeros
 * written (a VHD cannot give a block back).  A differencing disk writes
 * zeros everywhere: the parent may hold data there. */
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
        int r = 0;
        if (s->diff)
            r = write_diff_piece(img, off, NULL, (size_t)n);
        else if (host)
            r = qimg_io_zero(img->file, host, n, false);
        if (r < 0)
            return r;
        off += n;
        len -= n;
    }
    return 0;
}

static int vpc_flush(struct qimg_image *img)
{
    return qimg_io_flush(img->file);
}

/* ------------------------------------------------ chains: rebase, commit */

static int write_header(struct qimg_image *img, struct vpc_state *s)
{
    qimg_put_be32(s->header + D_CHECKSUM, vpc_checksum(s->header, VPC_DYN_HEADER_SIZE, D_CHECKSUM));
    return qimg_io_pwrite(img->file, s->header, VPC_DYN_HEADER_SIZE, s->header_offset);
}

/* both copies: at 0 and after the last block */
static int write_footers(struct qimg_image *img, struct vpc_state *s)
{
    qimg_put_be32(s->footer + F_CHECKSUM, vpc_checksum(s->footer, VPC_FOOTER_SIZE, F_CHECKSUM));
    int r = qimg_io_pwrite(img->file, s->footer, VPC_FOOTER_SIZE, 0);
    if (r == 0)
        r = qimg_io_pwrite(img->file, s->footer, VPC_FOOTER_SIZE, s->free_offset);
    return r;
}

/* Every allocated block's sectors marked present, as qemu writes them, so
 * the disk reads the same as a dynamic or a differencing one.  Leaving a
 * differencing disk (to_dynamic), the sectors that came from the parent
 * are zeroed first: without a parent they read as zeros. */
static int mark_blocks_present(struct qimg_image *img, struct vpc_state *s, bool to_dynamic)
{
    uint64_t sectors = s->block_size / VPC_SECTOR;
    uint8_t *all CLEANUP_FREE = qimg_xmalloc(s->bitmap_size);
    memset(all, 0xff, s->bitmap_size);
    for (uint32_t i = 0; i < s->entries; i++) {
        if (s->bat[i] == VPC_BAT_UNUSED)
            continue;
        uint64_t start = (uint64_t)s->bat[i] * VPC_SECTOR;
        struct bitmap_run b;
        int r = read_bitmap(img, start, 0, sectors - 1, &b);
        for (uint64_t k = 0; r == 0 && to_dynamic && k < sectors;) {
            uint64_t end = same_bits_end(&b, k, sectors - 1);
            if (!sector_bit(&b, k))
                r = qimg_io_zero(img->file, start + s->bitmap_size + k * VPC_SECTOR,
                                 (end - k) * VPC_SECTOR, false);
            k = end;
        }
        free(b.bytes);
        if (r == 0)
            r = qimg_io_pwrite(img->file, all, s->bitmap_size, start);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Where len bytes of locator data go: over the old locators when they fit
 * before the next block (and past the BAT), else at the end of the file. */
static uint64_t locators_room(const struct vpc_state *s, uint64_t len)
{
    uint64_t bat_end = s->bat_offset + (uint64_t)s->entries * 4, start = UINT64_MAX;
    for (unsigned i = 0; i < VPC_LOCATORS; i++) {
        const uint8_t *e = s->header + D_LOCATORS + VPC_LOCATOR_SIZE * i;
        if (qimg_be32(e) && qimg_be64(e + 16) >= bat_end)
            start = QIMG_MIN(start, qimg_be64(e + 16));
    }
    uint64_t stop = s->meta_end;
    for (uint32_t i = 0; i < s->entries; i++) {
        uint64_t b = (uint64_t)s->bat[i] * VPC_SECTOR;
        if (s->bat[i] != VPC_BAT_UNUSED && b >= start)
            stop = QIMG_MIN(stop, b);
    }
    if (start % VPC_SECTOR == 0 && start < stop && stop - start >= len)
        return start;
    return s->free_offset;
}

/* The new parent's fields and locators (to_dynamic: none). */
static int set_parent(struct qimg_image *img, struct vpc_state *s, const char *name)
{
    char *path CLEANUP_FREE = qimg_image_resolve_name(img, name);
    if (!path)
        return -EINVAL;
    uint8_t *data CLEANUP_FREE = NULL;
    size_t len;
    /* once to learn the locators' size, once where they go */
    int r = vpc_parent_fill(s->header, path, name, 0, &data, &len);
    if (r < 0)
        return r;
    free(data);
    data = NULL;
    uint64_t off = locators_room(s, len);
    r = vpc_parent_fill(s->header, path, name, off, &data, &len);
    if (r == 0 && len)
        r = qimg_io_pwrite(img->file, data, len, off);
    if (r == 0 && off + len > s->free_offset) {
        s->free_offset = s->meta_end = off + len;
    }
    return r;
}

/* rebase: a differencing disk gets another parent or, with none, becomes
 * a dynamic disk; a dynamic disk given a parent becomes a differencing
 * one (its unallocated blocks then read from the parent). */
static int vpc_change_backing(struct qimg_image *img, const char *backing, const char *fmt)
{
    struct vpc_state *s = img->opaque;
    if (s->fixed)
        return qimg_error(-ENOTSUP, "A fixed VHD cannot have a parent");
    if (backing && (!fmt || strcmp(fmt, "vpc") != 0))
        return qimg_error(-ENOTSUP, "The parent of a differencing VHD must be a VHD");
    pthread_mutex_lock(&img->lock);
    int r = 0;
    if (s->diff != !!backing)
        r = mark_blocks_present(img, s, !backing);
    if (r == 0 && backing) {
        r = set_parent(img, s, backing);
    } else if (r == 0) {
        memset(s->header + D_PARENT_UUID, 0, D_LOCATORS + VPC_LOCATORS * VPC_LOCATOR_SIZE -
                                             D_PARENT_UUID);
    }
    if (r == 0)
        r = write_header(img, s);
    if (r == 0) {
        qimg_put_be32(s->footer + F_TYPE, backing ? VPC_TYPE_DIFF : VPC_TYPE_DYNAMIC);
        r = write_footers(img, s);
    }
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0) {
        s->diff = !!backing;
        s->parent_by_locator = !!backing;
        qimg_image_set_backing_names(img, backing, "vpc");
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* After commit: every block goes; the file ends after the BAT and the
 * locators, with the footer. */
static int vpc_make_empty(struct qimg_image *img)
{
    struct vpc_state *s = img->opaque;
    if (!s->diff)
        return qimg_error(-ENOTSUP, "Only a differencing VHD can be emptied");
    uint64_t bytes = (uint64_t)s->entries * 4;
    uint8_t *bat CLEANUP_FREE = qimg_alloc_from_image(bytes ? bytes : 1, "VPC block allocation table");
    if (!bat)
        return -ENOMEM;
    memset(bat, 0xff, bytes);
    pthread_mutex_lock(&img->lock);
    int r = qimg_io_pwrite(img->file, bat, bytes, s->bat_offset);
    if (r == 0) {
        for (uint32_t i = 0; i < s->entries; i++)
            s->bat[i] = VPC_BAT_UNUSED;
        s->free_offset = s->meta_end;
        r = qimg_io_pwrite(img->file, s->footer, VPC_FOOTER_SIZE, s->free_offset);
    }
    if (r == 0)
        r = qimg_io_truncate(img->file, s->free_offset + VPC_FOOTER_SIZE);
    if (r == 0)
        r = qimg_io_flush(img->file);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* --------------------------------------------------- resize (beyond qemu) */

/* The footer's size fields for bytes: current_size (and original size,
 * which libvhdi takes as the disk's size), the specification's geometry, and a creator whose size rule gives exactly bytes ("qem2",
 * qemu's current_size marker, when the creator's rule would not). */
static void set_footer_size(uint8_t *f, uint64_t bytes);

/* Where the BAT's room ends: the first block, locator or the end of the
 * data after the table. */
static uint64_t bat_room_end(const struct vpc_state *s)
{
    uint64_t end = s->free_offset;
    for (uint32_t i = 0; i < s->entries; i++) {
        uint64_t b = (uint64_t)s->bat[i] * VPC_SECTOR;
        if (s->bat[i] != VPC_BAT_UNUSED && b >= s->bat_offset)
            end = QIMG_MIN(end, b);
    }
    for (unsigned i = 0; s->diff && i < VPC_LOCATORS; i++) {
        const uint8_t *e = s->header + D_LOCATORS + VPC_LOCATOR_SIZE * i;
        if (qimg_be32(e) && qimg_be64(e + 16) >= s->bat_offset)
            end = QIMG_MIN(end, qimg_be64(e + 16));
    }
    return end;
}

static int write_bat(struct qimg_image *img, const struct vpc_state *s, uint32_t from,
                     uint32_t to)
{
    uint64_t bytes = ((uint64_t)to - from) * 4;
    if (!bytes)
        return 0;
    uint8_t *raw CLEANUP_FREE = qimg_alloc_from_image(bytes, "VPC block allocation table");
    if (!raw)
        return -ENOMEM;
    for (uint32_t i = from; i < to; i++)
        qimg_put_be32(raw + 4 * (uint64_t)(i - from), s->bat[i]);
    return qimg_io_pwrite(img->file, raw, bytes, s->bat_offset + 4 * (uint64_t)from);
}

/* A table of n entries: grown in place when it fits before the first
 * block, else moved to the end of the file (the header says where). */
static int resize_bat(struct qimg_image *img, struct vpc_state *s, uint32_t n)
{
    uint32_t *bat = qimg_alloc_from_image((uint64_t)QIMG_MAX(n, 1) * 4, "VPC block allocation table");
    if (!bat)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        bat[i] = i < s->entries ? s->bat[i] : VPC_BAT_UNUSED;
    uint64_t end = 0;
    qimg_round_up_ok(s->bat_offset + (uint64_t)n * 4, VPC_SECTOR, &end);
    bool moves = n > s->entries && end > bat_room_end(s);
    uint32_t old = s->entries;
    free(s->bat);
    s->bat = bat;
    s->entries = n;
    if (moves) {
        s->bat_offset = s->free_offset;
        qimg_round_up_ok(s->bat_offset + (uint64_t)n * 4, VPC_SECTOR, &end);
        s->free_offset = s->meta_end = end;
        qimg_put_be64(s->header + D_TABLE_OFFSET, s->bat_offset);
        return write_bat(img, s, 0, n);
    }
    return n > old ? write_bat(img, s, old, n) : 0;
}

/* After a shrink: the file ends after the last block still in use. */
static void trim_free_offset(struct vpc_state *s)
{
    uint64_t end = s->meta_end;
    for (uint32_t i = 0; i < s->entries; i++)
        if (s->bat[i] != VPC_BAT_UNUSED)
            end = QIMG_MAX(end, (uint64_t)s->bat[i] * VPC_SECTOR + s->bitmap_size + s->block_size);
    s->free_offset = QIMG_MIN(s->free_offset, end);
}

static int resize_dynamic(struct qimg_image *img, struct vpc_state *s, uint64_t bytes)
{
    uint64_t n = qimg_div_round_up(bytes, s->block_size);
    if (n > VPC_MAX_BAT_ENTRIES)
        return qimg_error(-EFBIG, "Image size too large for the VHD's block size");
    uint64_t old_end = s->free_offset;
    for (uint64_t i = n; i < s->entries; i++)   /* blocks past the end go */
        s->bat[i] = VPC_BAT_UNUSED;
    int r = n < s->entries ? write_bat(img, s, (uint32_t)n, s->entries) : 0;
    if (r == 0)
        r = resize_bat(img, s, (uint32_t)n);
    if (r < 0)
        return r;
    trim_free_offset(s);
    qimg_put_be32(s->header + D_MAX_ENTRIES, s->entries);
    set_footer_size(s->footer, bytes);
    r = write_header(img, s);
    if (r == 0)
        r = write_footers(img, s);
    if (r == 0 && s->free_offset < old_end)
        r = qimg_io_truncate(img->file, s->free_offset + VPC_FOOTER_SIZE);
    return r;
}

/* The guest disk then the footer: the new footer first, then zeros where
 * the old one was (now guest data) or the file cut after it. */
static int resize_fixed(struct qimg_image *img, struct vpc_state *s, uint64_t bytes)
{
    set_footer_size(s->footer, bytes);
    qimg_put_be32(s->footer + F_CHECKSUM, vpc_checksum(s->footer, VPC_FOOTER_SIZE, F_CHECKSUM));
    int r = qimg_io_pwrite(img->file, s->footer, VPC_FOOTER_SIZE, bytes);
    if (r == 0 && bytes > img->size)
        r = qimg_io_zero(img->file, img->size, QIMG_MIN(bytes - img->size, VPC_FOOTER_SIZE), false);
    if (r == 0 && bytes < img->size)
        r = qimg_io_truncate(img->file, bytes + VPC_FOOTER_SIZE);
    return r;
}

/* qemu-img cannot resize a VHD.  The new size is exact (in whole sectors):
 * the footer takes it as current_size. */
static int vpc_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    struct vpc_state *s = img->opaque;
    if (prealloc && strcmp(prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    uint64_t bytes;
    if (!qimg_round_up_ok(size, VPC_SECTOR, &bytes) || bytes / VPC_SECTOR > VPC_MAX_SECTORS)
        return qimg_error(-EFBIG, "Image size too large for a VHD (at most 2040 GiB)");
    pthread_mutex_lock(&img->lock);
    int r = s->fixed ? resize_fixed(img, s, bytes) : resize_dynamic(img, s, bytes);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        img->size = bytes;
    pthread_mutex_unlock(&img->lock);
    return r;
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

static void set_footer_size(uint8_t *f, uint64_t bytes)
{
    struct chs g = geometry_for(bytes / VPC_SECTOR);
    qimg_put_be64(f + F_ORIG_SIZE, bytes);
    qimg_put_be64(f + F_CUR_SIZE, bytes);
    qimg_put_be16(f + F_CYLS, (uint16_t)g.cyls);
    f[F_HEADS] = (uint8_t)g.heads;
    f[F_SECS] = (uint8_t)g.secs;
    if (guest_sectors(f, SIZE_BY_CREATOR) != bytes / VPC_SECTOR)
        memcpy(f + F_CREATOR_APP, "qem2", 4);
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
    qimg_put_be64(f + F_ORIG_SIZE, bytes);
    qimg_put_be64(f + F_CUR_SIZE, bytes);
    qimg_put_be16(f + F_CYLS, (uint16_t)g.cyls);
    f[F_HEADS] = (uint8_t)g.heads;
    f[F_SECS] = (uint8_t)g.secs;
    qimg_put_be32(f + F_TYPE, fixed ? VPC_TYPE_FIXED : VPC_TYPE_DYNAMIC);
    random_uuid(f + F_UUID);
    qimg_put_be32(f + F_CHECKSUM, vpc_checksum(f, VPC_FOOTER_SIZE, F_CHECKSUM));
}

/* footer copy, dynamic header, an empty BAT (padded to a sector), for a
 * differencing disk (parent_path given) the parent locators' data, footer */
static int create_dynamic(struct qimg_io *io, const uint8_t *footer, uint64_t bytes,
                          const char *parent_path, const char *parent_name)
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
    uint8_t *locators CLEANUP_FREE = NULL;
    size_t locators_len = 0;
    int r = parent_path ? vpc_parent_fill(hdr, parent_path, parent_name, bat_off + bat_size,
                                          &locators, &locators_len) : 0;
    if (r < 0)
        return r;
    qimg_put_be32(hdr + D_CHECKSUM, vpc_checksum(hdr, sizeof hdr, D_CHECKSUM));
    r = qimg_io_pwrite(io, footer, VPC_FOOTER_SIZE, 0);
    if (r == 0)
        r = qimg_io_pwrite(io, hdr, sizeof hdr, VPC_FOOTER_SIZE);
    uint8_t *bat = qimg_xmalloc(bat_size ? bat_size : 1);
    memset(bat, 0xff, bat_size);
    if (r == 0 && bat_size)
        r = qimg_io_pwrite(io, bat, bat_size, bat_off);
    free(bat);
    if (r == 0 && locators_len)
        r = qimg_io_pwrite(io, locators, locators_len, bat_off + bat_size);
    if (r == 0)
        r = qimg_io_pwrite(io, footer, VPC_FOOTER_SIZE, bat_off + bat_size + locators_len);
    return r;
}

/* A differencing disk's footer: the parent's size and geometry, and a
 * creator that makes every reader size it as the parent (qemu's rule:
 * "qem2" takes current_size, "qemu" the geometry). */
static int make_diff_footer(uint8_t *f, const uint8_t *parent, uint64_t size, const char *name)
{
    uint64_t sectors = guest_sectors(parent, SIZE_BY_CREATOR);
    if (sectors * VPC_SECTOR != size)
        return qimg_error(-EINVAL, "A differencing VHD has the size of its parent '%s' "
                          "(%" PRIu64 " bytes), not %" PRIu64, name, sectors * VPC_SECTOR, size);
    bool by_current = guest_sectors(parent, SIZE_BY_CHS) != sectors;
    struct chs g = { qimg_be16(parent + F_CYLS), parent[F_HEADS], parent[F_SECS] };
    make_footer(f, size, g, false, by_current);
    memcpy(f + F_ORIG_SIZE, parent + F_ORIG_SIZE, 16);   /* original and current size */
    qimg_put_be32(f + F_TYPE, VPC_TYPE_DIFF);
    qimg_put_be32(f + F_CHECKSUM, vpc_checksum(f, VPC_FOOTER_SIZE, F_CHECKSUM));
    return 0;
}

/* create -b: a differencing disk over a VHD parent (beyond qemu-img) */
static int create_diff(struct qimg_create_ctx *ctx, bool fixed)
{
    if (fixed)
        return qimg_error(-EINVAL, "A differencing VHD cannot be fixed (subformat=fixed "
                          "with a backing file)");
    if (!ctx->backing_fmt || strcmp(ctx->backing_fmt, "vpc") != 0)
        return qimg_error(-EINVAL, "The parent of a differencing VHD must be a VHD "
                          "(backing format vpc, not '%s')",
                          ctx->backing_fmt ? ctx->backing_fmt : "");
    char *path CLEANUP_FREE = qimg_path_combine(ctx->filename, ctx->backing_file);
    uint8_t parent[VPC_FOOTER_SIZE], footer[VPC_FOOTER_SIZE];
    int r = vpc_parent_footer(path, ctx->backing_file, parent);
    if (r == 0)
        r = make_diff_footer(footer, parent, ctx->size, ctx->backing_file);
    if (r < 0)
        return r;
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = create_dynamic(io, footer, ctx->size, path, ctx->backing_file);
    qimg_io_close(io);
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

/*
 * azure=on: what Azure takes (beyond qemu-img, where users round the size
 * by hand first).  Microsoft's requirements ("Prepare a ... VHD for Azure",
 * learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic,
 * "Resizing VHDs"; the support article "VHD is not supported when you
 * create a virtual machine in Azure"): the VHD format, a fixed disk (no
 * dynamic nor differencing disk, no VHDX), a virtual size that is a whole
 * number of MiB, a footer with the cookie "conectix" and a valid checksum.
 * Microsoft's own recipe for it is qemu-img's subformat=fixed,force_size
 * on a raw image resized to whole MiB: current_size is the size (creator
 * "qem2", the largest geometry), features 2, format version 1.0, creator
 * host OS "Wi2k" (FreeBSD's mkimg found Azure refusing another host OS);
 * this is that disk, with the rounding done here.
 */
static int azure_options(struct qimg_create_ctx *ctx, bool *fixed, bool *force, uint64_t *size)
{
    bool azure = false, force_given = true;
    const char *sub = NULL;
    int r = qimg_opts_get_bool(ctx->opts, "azure", &azure);
    if (r <= 0 || !azure)
        return r;
    if (qimg_opts_get_string(ctx->opts, "subformat", &sub) > 0 && strcmp(sub, "fixed") != 0)
        return qimg_error(-EINVAL, "azure=on makes a fixed VHD, not subformat=%s", sub);
    if (qimg_opts_get_bool(ctx->opts, "force_size", &force_given) > 0 && !force_given)
        return qimg_error(-EINVAL, "azure=on stores the size as current_size: it cannot "
                          "be used with force_size=off");
    if (ctx->backing_file)
        return qimg_error(-EINVAL, "Azure takes no differencing VHD (azure=on with a "
                          "backing file)");
    if (!qimg_round_up_ok(ctx->size, 1u << 20, size))
        return -EFBIG;
    *fixed = *force = true;
    return 0;
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
    uint64_t size = ctx->size;
    r = azure_options(ctx, &fixed, &force, &size);
    if (r < 0)
        return r;
    if (ctx->backing_file)
        return create_diff(ctx, fixed);
    struct chs g;
    uint64_t sectors;
    r = vpc_size(size, force, &g, &sectors);
    if (r < 0)
        return r;
    uint8_t footer[VPC_FOOTER_SIZE];
    make_footer(footer, sectors * VPC_SECTOR, g, fixed, force);
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = fixed ? create_fixed(io, footer, sectors * VPC_SECTOR)
              : create_dynamic(io, footer, sectors * VPC_SECTOR, NULL, NULL);
    qimg_io_close(io);
    return r;
}

/* ------------------------------------------------ measure (beyond qemu) */

/* qemu-img cannot measure a VHD.  A fixed disk is its size and the footer;
 * a dynamic one the footer copy, header, BAT and footer, then a bitmap and
 * a block for each block that block status calls data (every block when
 * fully allocated): an upper bound, convert may find zeros in them. */
static int vpc_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    const char *sub = "dynamic";
    bool force = false;
    int r = opts ? qimg_opts_get_string(opts, "subformat", &sub) : 0;
    if (r >= 0 && opts)
        r = qimg_opts_get_bool(opts, "force_size", &force);
    if (r < 0)
        return r;
    bool fixed = strcmp(sub, "fixed") == 0;
    if (!fixed && strcmp(sub, "dynamic") != 0)
        return qimg_error(-EINVAL, "Parameter 'subformat' does not accept value '%s'", sub);
    struct qimg_create_ctx ctx = { .size = src ? qimg_size(src) : size, .opts = opts };
    uint64_t vsize = ctx.size, sectors;
    if (opts && (r = azure_options(&ctx, &fixed, &force, &vsize)) < 0)
        return r;
    struct chs g;
    if (vpc_size(vsize, force, &g, &sectors) < 0)
        return qimg_error(-EFBIG, "The image size is too large for file format 'vpc'");
    uint64_t bytes = sectors * VPC_SECTOR;
    if (fixed) {
        out->required = out->fully_allocated = bytes + VPC_FOOTER_SIZE;
        return 0;
    }
    uint64_t entries = qimg_div_round_up(bytes, VPC_DEFAULT_BLOCK), used = 0;
    uint64_t meta = 2 * VPC_FOOTER_SIZE + VPC_DYN_HEADER_SIZE +
                    qimg_div_round_up(entries * 4, VPC_SECTOR) * VPC_SECTOR;
    uint64_t per_block = VPC_SECTOR + VPC_DEFAULT_BLOCK;
    if (src && (r = qimg_count_data_blocks(src, 0, qimg_size(src), VPC_DEFAULT_BLOCK, &used)) < 0)
        return r;
    out->fully_allocated = meta + entries * per_block;
    out->required = meta + used * per_block;
    return 0;
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
    .flags          = QIMG_DRV_SUPPORTS_BACKING,
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
    .change_backing = vpc_change_backing,
    .make_empty     = vpc_make_empty,
    .backing_opened = vpc_parent_check,
    .probe_tail     = vpc_probe_tail,
    .resize         = vpc_resize,
    .measure        = vpc_measure,
};
