/* qimg - VHDX: the block allocation table, guest reads and writes, block
 * status.
 *
 * The BAT is read once at open and kept in memory.  A write to a block
 * without a place in the file gives it one at the end of the file (1 MiB
 * aligned), writes the data there and changes the entry in memory; the
 * changed 4 KiB sectors of the BAT are written through the log at the next
 * flush (or when many have piled up), so a crash leaves either the old
 * table or, replayed from the log, the new one, never half of one. */
#include <errno.h>
#include <inttypes.h>

#include "vhdx.h"

/* dirty BAT sectors that make a commit before the next flush */
#define DIRTY_COMMIT_THRESHOLD 64

void vhdx_geometry(uint64_t disk_size, uint32_t block_size, uint32_t lss, bool has_parent,
                   uint32_t *chunk_ratio, uint64_t *payload_blocks, uint64_t *entries)
{
    uint32_t cr = (uint32_t)((VHDX_SECTORS_PER_SB * lss) / block_size);
    uint64_t pb = qimg_div_round_up(disk_size, block_size);
    uint64_t sb = qimg_div_round_up(pb, cr);
    *chunk_ratio = cr;
    *payload_blocks = pb;
    if (has_parent)
        *entries = sb * (cr + 1);
    else
        *entries = pb ? pb + (pb - 1) / cr : 0;
}

uint64_t vhdx_bat_index(const struct vhdx_state *s, uint64_t block)
{
    return block + block / s->chunk_ratio;
}

static uint64_t sb_index(const struct vhdx_state *s, uint64_t chunk)
{
    return chunk * (s->chunk_ratio + 1) + s->chunk_ratio;
}

static bool is_sb_index(const struct vhdx_state *s, uint64_t i)
{
    return i % (s->chunk_ratio + 1) == s->chunk_ratio;
}

/* The bytes of the file payload entry i covers: a block, or what is left
 * of the disk for the last one. */
static uint64_t payload_length(const struct vhdx_state *s, uint64_t i)
{
    uint64_t start = (i - i / (s->chunk_ratio + 1)) * s->block_size;
    return start < s->disk_size ? QIMG_MIN(s->block_size, s->disk_size - start) : s->block_size;
}

/* qemu's checks of the fully present payload entries: inside the file
 * (whose length counts in whole sectors) and clear of the log, the BAT and
 * the metadata region.  Each finding is printed; at open the first one
 * ends the search.  Returns the count. */
static int64_t check_entries(struct vhdx_state *s, uint64_t file_size, bool all)
{
    int64_t errors = 0;
    uint64_t size = qimg_div_round_up(file_size, 512) * 512;
    for (uint64_t i = 0; i < s->bat_entries && (all || !errors); i++) {
        unsigned st = VHDX_BAT_STATE(s->bat[i]);
        if (is_sb_index(s, i) || !(st == VHDX_PAYLOAD_FULLY_PRESENT ||
                                   (s->has_parent && st == VHDX_PAYLOAD_PARTIALLY_PRESENT)))
            continue;
        uint64_t off = VHDX_BAT_OFFSET(s->bat[i]), end;
        bool overflow = !qimg_add_ok(off, payload_length(s, i), &end) || end > INT64_MAX;
        if (overflow) {
            qimg_warn("ERROR: VHDX BAT entry %" PRIu64 " offset overflow.", i);
            errors++;
            if (!all)
                break;
        }
        if (off >= size) {
            qimg_warn("ERROR: VHDX BAT entry %" PRIu64 " start offset %" PRIu64 " points after "
                      "end of file (%" PRId64 "). Image has probably been truncated.",
                      i, off, (int64_t)size);
            errors++;
        } else if (end > size) {
            qimg_warn("ERROR: VHDX BAT entry %" PRIu64 " end offset %" PRIu64 " points after "
                      "end of file (%" PRId64 "). Image has probably been truncated.",
                      i, end - 1, (int64_t)size);
            errors++;
        }
        if ((all || !errors) && !overflow && vhdx_range_overlaps(s, off, end, true))
            errors++;
    }
    return errors;
}

/* The end of everything the file holds: the regions and the log, the
 * blocks and bitmaps the table points at. */
uint64_t vhdx_used_end(const struct vhdx_state *s)
{
    uint64_t top = 0;
    for (int i = 0; i < s->nregions; i++)
        top = QIMG_MAX(top, s->regions[i].end);
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        unsigned st = VHDX_BAT_STATE(s->bat[i]);
        uint64_t off = VHDX_BAT_OFFSET(s->bat[i]);
        uint64_t len = is_sb_index(s, i) ? VHDX_SB_BLOCK : payload_length(s, i);
        if (off && (st == VHDX_PAYLOAD_FULLY_PRESENT || st == VHDX_PAYLOAD_PARTIALLY_PRESENT) &&
            off < (1ull << 62))
            top = QIMG_MAX(top, off + len);
    }
    return top;
}

/* The first free MiB after everything the file holds. */
static void find_alloc_offset(struct vhdx_state *s)
{
    uint64_t top = QIMG_MAX(s->file_size, vhdx_used_end(s));
    s->alloc_offset = qimg_div_round_up(top, VHDX_MiB) * VHDX_MiB;
}

int vhdx_read_bat(struct qimg_image *img, struct vhdx_state *s, bool for_check, int64_t *errors)
{
    vhdx_geometry(s->disk_size, s->block_size, s->logical_sector, s->has_parent,
                  &s->chunk_ratio, &s->payload_blocks, &s->bat_entries);
    uint64_t bytes = s->bat_entries * 8;
    if (bytes > s->bat_length)
        return qimg_error_errno(-EINVAL, "Could not open '%s'", img->filename);
    s->bat = qimg_alloc_from_image(bytes ? bytes : 8, "VHDX block allocation table");
    if (!s->bat)
        return -ENOMEM;
    uint8_t *raw = (uint8_t *)s->bat;
    int r = vhdx_pread(img, s, raw, (size_t)bytes, s->bat_offset);
    if (r < 0)
        return r;
    for (uint64_t i = 0; i < s->bat_entries; i++)
        s->bat[i] = qimg_le64(raw + 8 * i);
    *errors = for_check ? 0 : check_entries(s, s->file_size, false);
    find_alloc_offset(s);
    s->dirty_bat = qimg_xcalloc(1, qimg_div_round_up(bytes ? bytes : 1, VHDX_LOG_SECTOR));
    return 0;
}

int64_t vhdx_check_entries(struct vhdx_state *s, uint64_t file_size)
{
    return check_entries(s, file_size, true);
}

void vhdx_bat_set(struct vhdx_state *s, uint64_t index, uint64_t entry)
{
    s->bat[index] = entry;
    uint64_t sec = index * 8 / VHDX_LOG_SECTOR;
    if (!s->dirty_bat[sec]) {
        s->dirty_bat[sec] = 1;
        s->ndirty++;
    }
}

/* Give every chunk of a differencing disk its sector bitmap block, all
 * zeros (no sector present) at the end of the file.  Blocks not present
 * read from the parent whatever the bitmap says, but readers such as
 * libvhdi consult the bitmap of a chunk that has none, so qimg's
 * differencing disks always have them (the specification allows both). */
int vhdx_alloc_bitmaps(struct qimg_image *img, struct vhdx_state *s)
{
    uint64_t chunks = qimg_div_round_up(s->payload_blocks, s->chunk_ratio);
    for (uint64_t c = 0; c < chunks; c++) {
        uint64_t i = sb_index(s, c);
        if (i >= s->bat_entries || VHDX_BAT_STATE(s->bat[i]) == VHDX_SB_PRESENT)
            continue;
        vhdx_bat_set(s, i, s->alloc_offset | VHDX_SB_PRESENT);
        s->alloc_offset += VHDX_SB_BLOCK;
    }
    if (s->alloc_offset > s->file_size) {
        int r = qimg_io_truncate(img->file, s->alloc_offset);
        if (r < 0)
            return r;
        s->file_size = s->alloc_offset;
    }
    return 0;
}

/* The changed 4 KiB sectors of the in-memory bitmaps, as log sectors. */
static size_t bitmap_sectors(struct vhdx_state *s, uint64_t *offs, uint8_t **data)
{
    size_t n = 0;
    for (uint64_t c = 0; c < s->nsb; c++) {
        struct vhdx_bitmap *b = s->sb[c];
        if (!b)
            continue;
        uint64_t at = VHDX_BAT_OFFSET(s->bat[sb_index(s, c)]);
        for (size_t k = 0; k < sizeof b->dirty; k++) {
            if (!b->dirty[k])
                continue;
            offs[n] = at + k * VHDX_LOG_SECTOR;
            data[n++] = b->bits + k * VHDX_LOG_SECTOR;
        }
    }
    return n;
}

static void bitmaps_clean(struct vhdx_state *s)
{
    for (uint64_t c = 0; c < s->nsb; c++)
        if (s->sb[c])
            memset(s->sb[c]->dirty, 0, sizeof s->sb[c]->dirty);
    s->sb_ndirty = 0;
}

/* The BAT sectors and the bitmap sectors changed since the last commit,
 * through the log (one entry when they fit: a sector's bits and the entry
 * that makes its block partially present land together). */
int vhdx_bat_commit(struct qimg_image *img, struct vhdx_state *s)
{
    uint64_t total = s->ndirty + s->sb_ndirty;
    if (!total)
        return 0;
    size_t n = 0, nsec = (size_t)qimg_div_round_up(s->bat_entries * 8, VHDX_LOG_SECTOR);
    CLEANUP_FREE uint64_t *offs = qimg_xcalloc(total, sizeof *offs);
    CLEANUP_FREE uint8_t **data = qimg_xcalloc(total, sizeof *data);
    CLEANUP_FREE uint8_t *bufs = qimg_xmalloc((s->ndirty ? s->ndirty : 1) * VHDX_LOG_SECTOR);
    int r = 0;
    for (size_t k = 0; k < nsec && n < s->ndirty; k++) {
        if (!s->dirty_bat[k])
            continue;
        uint8_t *b = bufs + n * VHDX_LOG_SECTOR;
        uint64_t first = k * (VHDX_LOG_SECTOR / 8);
        uint64_t count = QIMG_MIN(VHDX_LOG_SECTOR / 8, s->bat_entries - first);
        if (count < VHDX_LOG_SECTOR / 8) {
            /* keep what the region holds past the last entry */
            r = vhdx_pread(img, s, b, VHDX_LOG_SECTOR, s->bat_offset + k * VHDX_LOG_SECTOR);
            if (r < 0)
                return r;
        }
        for (uint64_t i = 0; i < count; i++)
            qimg_put_le64(b + 8 * i, s->bat[first + i]);
        offs[n] = s->bat_offset + k * VHDX_LOG_SECTOR;
        data[n++] = b;
    }
    n += bitmap_sectors(s, offs + n, data + n);
    r = vhdx_log_write_sectors(img, s, offs, data, n);
    if (r < 0)
        return r;
    memset(s->dirty_bat, 0, nsec);
    s->ndirty = 0;
    bitmaps_clean(s);
    return 0;
}

/* ------------------------------------------------------- sector bitmaps */

void vhdx_bitmaps_drop(struct vhdx_state *s)
{
    for (uint64_t c = 0; c < s->nsb; c++) {
        if (s->sb[c])
            free(s->sb[c]->bits);
        free(s->sb[c]);
    }
    free(s->sb);
    s->sb = NULL;
    s->nsb = 0;
    s->sb_ndirty = 0;
    s->sb_loaded = 0;
}

/* bitmaps kept in memory at most (1 MiB each; a 64 TiB disk has 16384) */
#define SB_CACHE_MAX 16

static bool bitmap_dirty(const struct vhdx_bitmap *b)
{
    for (size_t k = 0; k < sizeof b->dirty; k++)
        if (b->dirty[k])
            return true;
    return false;
}

/* Room for one more bitmap in memory: a clean one other than chunk keep
 * goes (all are made clean by a commit first when none is). */
static int evict_bitmap(struct qimg_image *img, struct vhdx_state *s, uint64_t keep)
{
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t c = 0; c < s->nsb; c++) {
            if (c == keep || !s->sb[c] || bitmap_dirty(s->sb[c]))
                continue;
            free(s->sb[c]->bits);
            free(s->sb[c]);
            s->sb[c] = NULL;
            s->sb_loaded--;
            return 0;
        }
        int r = vhdx_bat_commit(img, s);
        if (r < 0)
            return r;
    }
    return 0;
}

/* A bitmap block for BAT entry i, all zeros, at the end of the file. */
static int new_bitmap_block(struct qimg_image *img, struct vhdx_state *s, uint64_t i)
{
    uint64_t at = s->alloc_offset, end = at + VHDX_SB_BLOCK;
    if (end > (1ull << 62))
        return qimg_error(-EFBIG, "VHDX file too large for another block");
    int r = at < s->file_size ? qimg_io_zero(img->file, at, QIMG_MIN(VHDX_SB_BLOCK,
                                                                      s->file_size - at), false)
                              : 0;
    if (r == 0 && end > s->file_size) {
        r = qimg_io_truncate(img->file, end);
        if (r == 0)
            s->file_size = end;
    }
    if (r < 0)
        return r;
    s->alloc_offset = end;
    vhdx_bat_set(s, i, at | VHDX_SB_PRESENT);
    return 0;
}

/* Chunk c's bitmap in memory (under img->lock), read at first use.  A
 * chunk without its bitmap block gets one when it is to be written. */
static int get_bitmap(struct qimg_image *img, struct vhdx_state *s, uint64_t chunk,
                      bool for_write, struct vhdx_bitmap **out)
{
    if (chunk < s->nsb && s->sb[chunk]) {
        *out = s->sb[chunk];
        return 0;
    }
    uint64_t i = sb_index(s, chunk);
    if (i >= s->bat_entries)
        return qimg_error(-EIO, "VHDX sector bitmap entry %" PRIu64 " out of range", i);
    bool present = VHDX_BAT_STATE(s->bat[i]) == VHDX_SB_PRESENT;
    if (!present && !for_write)
        return qimg_error(-EIO, "VHDX block partially present without its sector bitmap");
    if (s->sb_loaded >= SB_CACHE_MAX) {
        int r = evict_bitmap(img, s, chunk);
        if (r < 0)
            return r;
    }
    struct vhdx_bitmap *b = qimg_xcalloc(1, sizeof *b);
    b->bits = qimg_xcalloc(1, VHDX_SB_BLOCK);
    int r = present ? vhdx_pread(img, s, b->bits, VHDX_SB_BLOCK, VHDX_BAT_OFFSET(s->bat[i]))
                    : new_bitmap_block(img, s, i);
    if (r < 0) {
        free(b->bits);
        free(b);
        return r;
    }
    if (chunk >= s->nsb) {
        s->sb = qimg_xrealloc(s->sb, (size_t)(chunk + 1) * sizeof *s->sb);
        memset(s->sb + s->nsb, 0, (size_t)(chunk + 1 - s->nsb) * sizeof *s->sb);
        s->nsb = chunk + 1;
    }
    s->sb[chunk] = b;
    s->sb_loaded++;
    *out = b;
    return 0;
}

static bool bit_is_set(const uint8_t *bits, uint64_t b) { return bits[b / 8] >> (b % 8) & 1; }

/* Bits [first, first + count) set, their sectors marked for the commit. */
static void set_bits(struct vhdx_state *s, struct vhdx_bitmap *bm, uint64_t first,
                     uint64_t count)
{
    uint64_t b = first, end = first + count;
    for (; b < end && b % 8; b++)
        bm->bits[b / 8] |= (uint8_t)(1u << (b % 8));
    if (end - b >= 8) {
        memset(bm->bits + b / 8, 0xff, (end - b) / 8);
        b += (end - b) / 8 * 8;
    }
    for (; b < end; b++)
        bm->bits[b / 8] |= (uint8_t)(1u << (b % 8));
    for (uint64_t k = first / 8 / VHDX_LOG_SECTOR; k <= (end - 1) / 8 / VHDX_LOG_SECTOR; k++)
        if (!bm->dirty[k]) {
            bm->dirty[k] = 1;
            s->sb_ndirty++;
        }
}

/* Are bits [from, to) all set? */
static bool all_set(const uint8_t *bits, uint64_t from, uint64_t to)
{
    for (; from < to && from % 8; from++)
        if (!bit_is_set(bits, from))
            return false;
    for (; from + 8 <= to; from += 8)
        if (bits[from / 8] != 0xff)
            return false;
    for (; from < to; from++)
        if (!bit_is_set(bits, from))
            return false;
    return true;
}

/* Sectors [off, off + len) of a partially present block are now held
 * here (under img->lock); a block whose every sector is becomes fully
 * present. */
static int mark_present(struct qimg_image *img, struct vhdx_state *s, uint64_t off,
                        uint64_t len)
{
    uint64_t lss = s->logical_sector, sector = off / lss;
    uint64_t block = off / s->block_size, idx = vhdx_bat_index(s, block);
    struct vhdx_bitmap *bm;
    int r = get_bitmap(img, s, sector / VHDX_SECTORS_PER_SB, true, &bm);
    if (r < 0)
        return r;
    uint64_t bit = sector % VHDX_SECTORS_PER_SB, count = len / lss;
    set_bits(s, bm, bit, count);
    uint64_t per_block = s->block_size / lss;
    uint64_t bfirst = (block % s->chunk_ratio) * per_block;
    uint64_t bend = bfirst + qimg_div_round_up(payload_length(s, idx), lss);
    /* after the written range first: sequential writes stop there at once */
    if (all_set(bm->bits, bit + count, bend) && all_set(bm->bits, bfirst, bit))
        vhdx_bat_set(s, idx, VHDX_BAT_OFFSET(s->bat[idx]) | VHDX_PAYLOAD_FULLY_PRESENT);
    if (s->ndirty + s->sb_ndirty >= DIRTY_COMMIT_THRESHOLD)
        return vhdx_bat_commit(img, s);
    return 0;
}

/* ------------------------------------------------------------ reading */

static uint64_t entry_of(struct qimg_image *img, struct vhdx_state *s, uint64_t block)
{
    pthread_mutex_lock(&img->lock);
    uint64_t e = s->bat[vhdx_bat_index(s, block)];
    pthread_mutex_unlock(&img->lock);
    return e;
}

/* Sectors from off: present in this file or not, and how many alike
 * (at most len bytes, inside one block). */
static int partial_run(struct qimg_image *img, struct vhdx_state *s, uint64_t off, uint64_t len,
                       bool *present, uint64_t *run)
{
    uint64_t lss = s->logical_sector, sector = off / lss;
    uint64_t chunk_sectors = VHDX_SECTORS_PER_SB;
    pthread_mutex_lock(&img->lock);
    struct vhdx_bitmap *sbm = NULL;
    int r = get_bitmap(img, s, sector / chunk_sectors, false, &sbm);
    if (r == 0) {
        const uint8_t *bm = sbm->bits;
        uint64_t bit = sector % chunk_sectors, end = (off + len - 1) / lss - sector + bit + 1;
        *present = bit_is_set(bm, bit);
        uint8_t same = *present ? 0xff : 0;
        uint64_t b = bit + 1;
        while (b < end && bit_is_set(bm, b) == *present) {
            if (b % 8 == 0)     /* whole bytes alike at a time */
                while (b + 8 <= end && bm[b / 8] == same)
                    b += 8;
            if (b < end && bit_is_set(bm, b) == *present)
                b++;
        }
        *run = QIMG_MIN(len, (b - bit) * lss - off % lss);
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int read_partial(struct qimg_image *img, struct vhdx_state *s, uint64_t off, uint8_t *p,
                        size_t n, uint64_t host)
{
    while (n > 0) {
        bool present;
        uint64_t run;
        int r = partial_run(img, s, off, n, &present, &run);
        if (r < 0)
            return r;
        r = present ? vhdx_pread(img, s, p, run, host) : qimg_read_backing(img, off, p, run);
        if (r < 0)
            return r;
        off += run;
        host += run;
        p += run;
        n -= run;
    }
    return 0;
}

static int bad_state(uint64_t block)
{
    return qimg_error(-EIO, "VHDX block %" PRIu64 " has an invalid state", block);
}

static int read_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct vhdx_state *s = vhdx_state(img);
    uint64_t block = off / s->block_size, e = entry_of(img, s, block);
    uint64_t host = VHDX_BAT_OFFSET(e) + off % s->block_size;
    switch (VHDX_BAT_STATE(e)) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        return vhdx_pread(img, s, p, n, host);
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        if (!s->has_parent)
            return bad_state(block);
        return read_partial(img, s, off, p, n, host);
    case VHDX_PAYLOAD_NOT_PRESENT:
        if (s->has_parent)
            return qimg_read_backing(img, off, p, n);
        /* fall through */
    case VHDX_PAYLOAD_UNDEFINED:
    case VHDX_PAYLOAD_ZERO:
    case VHDX_PAYLOAD_UNMAPPED:
        memset(p, 0, n);
        return 0;
    default:
        return bad_state(block);
    }
}

int vhdx_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    return qimg_for_each_piece(img, off, buf, len, vhdx_state(img)->block_size, read_piece);
}

/* ----------------------------------------------------------- block status */

enum kind { K_DATA, K_ZERO, K_UNALLOCATED, K_PARTIAL, K_BAD };

static enum kind kind_of(const struct vhdx_state *s, uint64_t e)
{
    switch (VHDX_BAT_STATE(e)) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        return K_DATA;
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        return s->has_parent ? K_PARTIAL : K_BAD;
    case VHDX_PAYLOAD_NOT_PRESENT:
        return K_UNALLOCATED;
    case VHDX_PAYLOAD_UNDEFINED:
    case VHDX_PAYLOAD_ZERO:
    case VHDX_PAYLOAD_UNMAPPED:
        return K_ZERO;
    default:
        return K_BAD;
    }
}

int vhdx_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    struct vhdx_state *s = vhdx_state(img);
    uint64_t bs = s->block_size, block = off / bs, e = entry_of(img, s, block);
    uint64_t n = QIMG_MIN(len, bs - off % bs);
    enum kind k = kind_of(s, e);
    ext->host_file = img->file->filename;
    if (k == K_BAD)
        return bad_state(block);
    if (k == K_PARTIAL) {
        bool present;
        uint64_t run;
        int r = partial_run(img, s, off, n, &present, &run);
        if (r < 0)
            return r;
        ext->length = run;
        ext->flags = 0;
        if (present) {
            ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
            ext->host_offset = VHDX_BAT_OFFSET(e) + off % bs;
            qimg_extent_look_into_file(img->file, ext, false);
        }
        return 0;
    }
    if (k == K_DATA) {
        ext->length = n;
        ext->flags = QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA | QIMG_STATUS_OFFSET;
        ext->host_offset = VHDX_BAT_OFFSET(e) + off % bs;
        qimg_extent_look_into_file(img->file, ext, false);
        return 0;
    }
    /* a run of blocks that read alike */
    while (n < len && kind_of(s, entry_of(img, s, block + 1)) == k) {
        block++;
        n = QIMG_MIN(len, n + bs);
    }
    ext->length = n;
    ext->flags = k == K_ZERO ? QIMG_STATUS_ALLOCATED | QIMG_STATUS_ZERO : 0;
    return 0;
}

/* ------------------------------------------------------------- writing */

/* A block of the file for block (under img->lock), for a write of the
 * whole block (or a block that reads as zeros): at the end of the file;
 * a differencing disk's partially present block keeps its place. */
static int allocate_block(struct qimg_image *img, struct vhdx_state *s, uint64_t block,
                          uint64_t *host)
{
    uint64_t idx = vhdx_bat_index(s, block), e = s->bat[idx];
    int r = vhdx_begin_write(img, s, true);
    if (r < 0)
        return r;
    if (VHDX_BAT_STATE(e) == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
        *host = VHDX_BAT_OFFSET(e) | VHDX_PAYLOAD_FULLY_PRESENT;
        vhdx_bat_set(s, idx, *host);
        return s->ndirty >= DIRTY_COMMIT_THRESHOLD ? vhdx_bat_commit(img, s) : 0;
    }
    uint64_t start = s->alloc_offset, end = start + s->block_size;
    if (end > (1ull << 62) - s->block_size)
        return qimg_error(-EFBIG, "VHDX file too large for another block");
    if (end > s->file_size) {
        r = qimg_io_truncate(img->file, end);
        if (r < 0)
            return r;
        s->file_size = end;
    }
    s->alloc_offset = end;
    *host = start | VHDX_PAYLOAD_FULLY_PRESENT;
    vhdx_bat_set(s, idx, *host);
    if (s->ndirty >= DIRTY_COMMIT_THRESHOLD)
        return vhdx_bat_commit(img, s);
    return 0;
}

/* The place of a block a differencing disk holds in part or not at all,
 * for a write of some of its sectors: a block not present gets one at the
 * end of the file and becomes partially present (its sectors still read
 * from the parent until their bits are set).  *state: the block's state
 * now; anything else than partially present is left to host_for_write. */
static int partial_host(struct qimg_image *img, struct vhdx_state *s, uint64_t block,
                        uint64_t *host, unsigned *state)
{
    uint64_t idx = vhdx_bat_index(s, block);
    pthread_mutex_lock(&s->alloc_lock);
    pthread_mutex_lock(&img->lock);
    uint64_t e = s->bat[idx];
    int r = vhdx_begin_write(img, s, true);
    *state = VHDX_BAT_STATE(e);
    if (r == 0 && *state == VHDX_PAYLOAD_NOT_PRESENT) {
        uint64_t start = s->alloc_offset, end = start + s->block_size;
        if (end > (1ull << 62) - s->block_size)
            r = qimg_error(-EFBIG, "VHDX file too large for another block");
        if (r == 0 && end > s->file_size) {
            r = qimg_io_truncate(img->file, end);
            if (r == 0)
                s->file_size = end;
        }
        if (r == 0) {
            s->alloc_offset = end;
            e = start | VHDX_PAYLOAD_PARTIALLY_PRESENT;
            vhdx_bat_set(s, idx, e);
            *state = VHDX_PAYLOAD_PARTIALLY_PRESENT;
        }
    }
    pthread_mutex_unlock(&img->lock);
    pthread_mutex_unlock(&s->alloc_lock);
    *host = VHDX_BAT_OFFSET(e);
    return r;
}

static int read_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n);
static int write_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n);

/* A write of part of a block a differencing disk does not hold whole:
 * only the sectors written go into the file (a sector written in part is
 * completed with what it reads now), then their bits are set. */
static int write_partial(struct qimg_image *img, struct vhdx_state *s, uint64_t off,
                         uint8_t *p, size_t n)
{
    uint64_t lss = s->logical_sector;
    uint64_t start = qimg_round_down(off, lss), end = qimg_div_round_up(off + n, lss) * lss;
    uint8_t *data = p;
    CLEANUP_FREE uint8_t *buf = NULL;
    int r = 0;
    if (start != off || end != off + n) {
        buf = qimg_xmalloc(end - start);
        r = read_piece(img, start, buf, lss);
        if (r == 0 && end - lss > start)
            r = read_piece(img, end - lss, buf + (end - lss - start), lss);
        if (r < 0)
            return r;
        memcpy(buf + (off - start), p, n);
        data = buf;
    }
    uint64_t host;
    unsigned state;
    r = partial_host(img, s, off / s->block_size, &host, &state);
    if (r < 0)
        return r;
    if (state != VHDX_PAYLOAD_PARTIALLY_PRESENT)   /* changed meanwhile */
        return write_piece(img, off, p, n);
    r = qimg_io_pwrite(img->file, data, end - start, host + start % s->block_size);
    if (r < 0)
        return r;
    pthread_mutex_lock(&img->lock);
    r = mark_present(img, s, start, end - start);
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int host_for_write(struct qimg_image *img, struct vhdx_state *s, uint64_t off,
                          uint64_t *host)
{
    uint64_t block = off / s->block_size, idx = vhdx_bat_index(s, block);
    pthread_mutex_lock(&img->lock);
    uint64_t e = s->bat[idx];
    int r = s->data_guid_changed ? 0 : vhdx_begin_write(img, s, true);
    pthread_mutex_unlock(&img->lock);
    if (r < 0)
        return r;
    if (VHDX_BAT_STATE(e) != VHDX_PAYLOAD_FULLY_PRESENT) {
        /* one allocation at a time; the table lock may be let go while a
         * differencing disk's block is filled from its parent */
        pthread_mutex_lock(&s->alloc_lock);
        pthread_mutex_lock(&img->lock);
        e = s->bat[idx];
        if (VHDX_BAT_STATE(e) == VHDX_PAYLOAD_FULLY_PRESENT)
            r = 0;
        else if (kind_of(s, e) == K_BAD)
            r = bad_state(block);
        else
            r = allocate_block(img, s, block, &e);
        pthread_mutex_unlock(&img->lock);
        pthread_mutex_unlock(&s->alloc_lock);
        if (r < 0)
            return r;
    }
    *host = VHDX_BAT_OFFSET(e) + off % s->block_size;
    return 0;
}

static int write_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct vhdx_state *s = vhdx_state(img);
    if (s->has_parent) {
        unsigned st = VHDX_BAT_STATE(entry_of(img, s, off / s->block_size));
        bool whole = off % s->block_size == 0 && (n == s->block_size || off + n == img->size);
        if (st == VHDX_PAYLOAD_PARTIALLY_PRESENT ||
            (st == VHDX_PAYLOAD_NOT_PRESENT && !whole))
            return write_partial(img, s, off, p, n);
    }
    uint64_t host = 0;
    int r = host_for_write(img, s, off, &host);
    return r < 0 ? r : qimg_io_pwrite(img->file, p, n, host);
}

int vhdx_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    return qimg_for_each_piece(img, off, (uint8_t *)buf, len, vhdx_state(img)->block_size,
                               write_piece);
}

/* A block that reads as zeros stays as it is; a present one gets zeros
 * written; a differencing disk's whole block becomes ZERO. */
static int zero_piece(struct qimg_image *img, uint64_t off, uint8_t *unused, size_t n)
{
    struct vhdx_state *s = vhdx_state(img);
    uint64_t block = off / s->block_size, idx = vhdx_bat_index(s, block);
    pthread_mutex_lock(&img->lock);
    uint64_t e = s->bat[idx];
    enum kind k = kind_of(s, e);
    int r = 0;
    bool whole = off % s->block_size == 0 &&
                 (n == s->block_size || off + n == img->size);
    if (k == K_DATA) {
        pthread_mutex_unlock(&img->lock);
        if (!s->data_guid_changed) {
            pthread_mutex_lock(&img->lock);
            r = vhdx_begin_write(img, s, true);
            pthread_mutex_unlock(&img->lock);
        }
        return r < 0 ? r : qimg_io_zero(img->file, VHDX_BAT_OFFSET(e) + off % s->block_size, n,
                                        true);
    }
    if (k == K_ZERO || (k == K_UNALLOCATED && !s->has_parent)) {
        pthread_mutex_unlock(&img->lock);
        return 0;
    }
    if (whole && k != K_BAD) {
        r = vhdx_begin_write(img, s, true);
        if (r == 0)
            vhdx_bat_set(s, idx, VHDX_PAYLOAD_ZERO);
        pthread_mutex_unlock(&img->lock);
        return r;
    }
    pthread_mutex_unlock(&img->lock);
    CLEANUP_FREE uint8_t *zeros = qimg_xcalloc(1, n);
    return write_piece(img, off, zeros, n);
}

int vhdx_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    struct vhdx_state *s = vhdx_state(img);
    while (len > 0) {
        size_t n = (size_t)QIMG_MIN(len, s->block_size - off % s->block_size);
        int r = zero_piece(img, off, NULL, n);
        if (r < 0)
            return r;
        off += n;
        len -= n;
    }
    return 0;
}
