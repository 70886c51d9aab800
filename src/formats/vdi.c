/* qimg - the VirtualBox VDI format (version 1.1), as qemu reads and writes it.
 *
 * On-disk layout (all integers little-endian):
 *   0x000  64-byte text banner ("<<< ... >>>\n", zero padded)
 *   0x040  u32 signature 0xbeda107f
 *   0x044  u32 version, major in the high half (1.1 = 0x00010001)
 *   0x048  u32 header size (counted from 0x48), u32 image type (1 dynamic,
 *          2 static), u32 image flags, 256 bytes of description
 *   0x154  u32 offset of the block map, u32 offset of the data
 *   0x15c  u32 cylinders, heads, sectors (legacy geometry), u32 sector size
 *   0x170  u64 disk size, u32 block size, u32 extra bytes per block,
 *          u32 blocks in the image, u32 blocks allocated
 *   0x188  four UUIDs: the image's, the last snapshot's, link and parent
 *   0x200  (usually) the block map: one u32 per guest block, the index of
 *          its host block counted from the data offset; 0xffffffff means
 *          never written, 0xfffffffe discarded: both read as zeros.
 * qemu takes only 1 MiB blocks of 512-byte sectors without a parent.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/random.h>

#include "internal.h"

#define VDI_SIGNATURE      0xbeda107fu
#define VDI_VERSION_1_1    0x00010001u
#define VDI_HEADER_LEN     512
#define VDI_SECTOR         512u
#define VDI_BLOCK_SIZE     (1u << 20)
#define VDI_TYPE_DYNAMIC   1u
#define VDI_TYPE_STATIC    2u
#define VDI_UNALLOCATED    0xffffffffu
#define VDI_DISCARDED      0xfffffffeu
/* in memory only: a block being written for the first time (its host
 * block reserved, its map entry not yet written) */
#define VDI_PENDING        0xfffffffdu
/* qemu's limit: the block map must stay below 2 GiB minus a bit */
#define VDI_BLOCKS_MAX     0x1fffff80u
#define VDI_DISK_SIZE_MAX  ((uint64_t)VDI_BLOCKS_MAX * VDI_BLOCK_SIZE)

#define VDI_BANNER         "<<< QEMU VM Virtual Disk Image >>>\n"

/* header field offsets */
enum {
    H_SIGNATURE = 0x40, H_VERSION = 0x44, H_HEADER_SIZE = 0x48, H_TYPE = 0x4c,
    H_OFFSET_BMAP = 0x154, H_OFFSET_DATA = 0x158, H_SECTOR_SIZE = 0x168,
    H_DISK_SIZE = 0x170, H_BLOCK_SIZE = 0x178, H_BLOCKS = 0x180, H_ALLOCATED = 0x184,
    H_UUID_IMAGE = 0x188, H_UUID_SNAP = 0x198, H_UUID_LINK = 0x1a8, H_UUID_PARENT = 0x1b8,
};

struct vdi_state {
    uint8_t header[VDI_HEADER_LEN];  /* as read, rewritten when blocks are added */
    uint32_t *bmap;                  /* host order, the entries inside the file */
    uint32_t loaded;                 /* how many: those past the end of the
                                        file read as 0, as qemu reads them */
    uint32_t blocks;
    uint32_t allocated;
    uint64_t offset_bmap;
    uint64_t offset_data;
    pthread_cond_t published;        /* a pending block got its entry */
    /* new blocks whose entries and count are not written yet: the map's
     * sectors [dirty_lo, dirty_hi) hold them */
    uint32_t unstored, dirty_lo, dirty_hi;
};

static const struct qimg_opt_desc vdi_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "static", QIMG_OPT_BOOL, "VDI static (pre-allocated) image", "off" },
    { NULL, 0, NULL, NULL },
};

static inline struct vdi_state *vdi_state(struct qimg_image *img) { return img->opaque; }
static inline bool vdi_allocated(uint32_t entry) { return entry < VDI_PENDING; }
static inline uint32_t bmap_get(const struct vdi_state *s, uint32_t i)
{
    return i < s->loaded ? s->bmap[i] : 0;
}
/* what the file holds for entry i (a pending block is not there yet) */
static inline uint32_t bmap_on_disk(const struct vdi_state *s, uint32_t i)
{
    uint32_t e = bmap_get(s, i);
    return e == VDI_PENDING ? VDI_UNALLOCATED : e;
}

static int vdi_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    if (len < VDI_HEADER_LEN)
        return 0;
    return qimg_le32(buf + H_SIGNATURE) == VDI_SIGNATURE ? 100 : 0;
}

static bool uuid_is_null(const uint8_t *uuid)
{
    for (int i = 0; i < 16; i++)
        if (uuid[i])
            return false;
    return true;
}

/* Every header field qemu refuses, in qemu's order and words. */
static int check_header(const uint8_t *h)
{
    uint32_t sig = qimg_le32(h + H_SIGNATURE), version = qimg_le32(h + H_VERSION);
    uint32_t bmap = qimg_le32(h + H_OFFSET_BMAP), data = qimg_le32(h + H_OFFSET_DATA);
    uint32_t sector = qimg_le32(h + H_SECTOR_SIZE), block = qimg_le32(h + H_BLOCK_SIZE);
    uint32_t blocks = qimg_le32(h + H_BLOCKS);
    uint64_t disk = qimg_le64(h + H_DISK_SIZE);

    if (disk > VDI_DISK_SIZE_MAX)   /* qemu looks at this first */
        return qimg_error(-ENOTSUP, "Unsupported VDI image size (size is 0x%" PRIx64
                          ", max supported is 0x%" PRIx64 ")", disk, VDI_DISK_SIZE_MAX);
    if (sig != VDI_SIGNATURE)
        return qimg_error(-EINVAL, "Image not in VDI format (bad signature %08" PRIx32 ")", sig);
    if (version != VDI_VERSION_1_1)
        return qimg_error(-ENOTSUP, "unsupported VDI image (version %" PRIu32 ".%" PRIu32 ")",
                          version >> 16, version & 0xffff);
    if (bmap % VDI_SECTOR)
        return qimg_error(-ENOTSUP, "unsupported VDI image (unaligned block map offset 0x%"
                          PRIx32 ")", bmap);
    if (data % VDI_SECTOR)
        return qimg_error(-ENOTSUP, "unsupported VDI image (unaligned data offset 0x%" PRIx32 ")",
                          data);
    if (sector != VDI_SECTOR)
        return qimg_error(-ENOTSUP, "unsupported VDI image (sector size %" PRIu32 " is not %u)",
                          sector, VDI_SECTOR);
    if (block != VDI_BLOCK_SIZE)
        return qimg_error(-ENOTSUP, "unsupported VDI image (block size %" PRIu32 " is not %u)",
                          block, VDI_BLOCK_SIZE);
    /* odd sizes (VBoxManage convertfromraw) count as whole sectors */
    uint64_t room = (uint64_t)blocks * VDI_BLOCK_SIZE, rounded = UINT64_MAX;
    if (!qimg_round_up_ok(disk, VDI_SECTOR, &rounded) || rounded > room)
        return qimg_error(-ENOTSUP, "unsupported VDI image (disk size %" PRIu64 ", image bitmap "
                          "has room for %" PRIu64 ")", rounded, room);
    if (!uuid_is_null(h + H_UUID_LINK))
        return qimg_error(-ENOTSUP, "unsupported VDI image (non-NULL link UUID)");
    if (!uuid_is_null(h + H_UUID_PARENT))
        return qimg_error(-ENOTSUP, "unsupported VDI image (non-NULL parent UUID)");
    if (blocks > VDI_BLOCKS_MAX)
        return qimg_error(-ENOTSUP, "unsupported VDI image (too many blocks %" PRIu32
                          ", max is %u)", blocks, VDI_BLOCKS_MAX);
    return 0;
}

/* The block map's size on disk: whole sectors. */
static uint64_t bmap_bytes(uint32_t blocks)
{
    return qimg_div_round_up((uint64_t)blocks * 4, VDI_SECTOR) * VDI_SECTOR;
}

/* Read the part of the map inside the file and turn its entries to host
 * order in place.  Memory follows the file's size, not the header's count:
 * the rest reads as zeros (entry 0), as qemu reads the file past its end. */
static int load_bmap(struct qimg_image *img, struct vdi_state *s)
{
    uint64_t file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return r;
    uint64_t in_file = file_size > s->offset_bmap ?
                       qimg_div_round_up(file_size - s->offset_bmap, 4) : 0;
    s->loaded = (uint32_t)QIMG_MIN(in_file, (uint64_t)s->blocks);
    if (s->loaded == 0)
        return 0;
    uint64_t len = (uint64_t)s->loaded * 4;
    s->bmap = qimg_alloc_from_image(len, "VDI block map");
    if (!s->bmap)
        return -ENOMEM;
    r = qimg_io_pread(img->file, s->bmap, len, s->offset_bmap);
    if (r < 0)
        return r;
    for (uint32_t i = 0; i < s->loaded; i++)
        s->bmap[i] = qimg_le32(&s->bmap[i]);
    return 0;
}

/* The whole map in memory (resize changes entries past the file's end). */
static int load_whole_bmap(struct vdi_state *s, uint32_t blocks)
{
    uint32_t *bmap = qimg_alloc_from_image((uint64_t)QIMG_MAX(blocks, 1u) * 4, "VDI block map");
    if (!bmap)
        return -ENOMEM;
    for (uint32_t i = 0; i < blocks; i++)
        bmap[i] = bmap_get(s, i);
    free(s->bmap);
    s->bmap = bmap;
    s->loaded = blocks;
    return 0;
}

static void vdi_close(struct qimg_image *img)
{
    struct vdi_state *s = vdi_state(img);
    if (!s)
        return;
    free(s->bmap);
    pthread_cond_destroy(&s->published);
    free(s);
    img->opaque = NULL;
}

static int read_header(struct qimg_image *img, struct vdi_state *s)
{
    int r = qimg_io_pread(img->file, s->header, sizeof s->header, 0);
    if (r < 0)
        return r;
    r = check_header(s->header);
    if (r < 0)
        return r;
    s->blocks = qimg_le32(s->header + H_BLOCKS);
    s->allocated = qimg_le32(s->header + H_ALLOCATED);
    s->offset_bmap = qimg_le32(s->header + H_OFFSET_BMAP);
    s->offset_data = qimg_le32(s->header + H_OFFSET_DATA);
    /* checked against the map's room: no overflow */
    qimg_round_up_ok(qimg_le64(s->header + H_DISK_SIZE), VDI_SECTOR, &img->size);
    return 0;
}

/* A failed open is not closed by the core: free what was set up. */
static int vdi_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    struct vdi_state *s = qimg_xcalloc(1, sizeof *s);
    pthread_cond_init(&s->published, NULL);
    img->opaque = s;
    int r = read_header(img, s);
    if (r == 0)
        r = load_bmap(img, s);
    if (r < 0)
        vdi_close(img);
    return r;
}

/* Where guest offset off lives: its block's host offset, or none. */
static bool host_offset(struct vdi_state *s, uint64_t off, uint64_t *host)
{
    uint32_t entry = bmap_get(s, (uint32_t)(off / VDI_BLOCK_SIZE));
    if (!vdi_allocated(entry))
        return false;
    *host = s->offset_data + (uint64_t)entry * VDI_BLOCK_SIZE + off % VDI_BLOCK_SIZE;
    return true;
}

static size_t chunk_in_block(uint64_t off, size_t len)
{
    return (size_t)QIMG_MIN((uint64_t)len, VDI_BLOCK_SIZE - off % VDI_BLOCK_SIZE);
}

/* [off, off+n) inside one block. */
static int read_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    uint64_t host;
    pthread_mutex_lock(&img->lock);
    bool mapped = host_offset(vdi_state(img), off, &host);
    pthread_mutex_unlock(&img->lock);
    if (mapped)
        return qimg_io_pread(img->file, p, n, host);
    memset(p, 0, n);
    return 0;
}

static int vdi_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    return qimg_for_each_piece(img, off, buf, len, VDI_BLOCK_SIZE, read_piece);
}

static int vdi_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    struct vdi_state *s = vdi_state(img);
    uint64_t host;
    pthread_mutex_lock(&img->lock);
    bool mapped = host_offset(s, off, &host);
    ext->length = chunk_in_block(off, (size_t)QIMG_MIN(len, (uint64_t)VDI_BLOCK_SIZE));
    if (!mapped) {
        /* unallocated blocks are this layer's zeros (no backing files);
         * one extent for a run of them keeps big sparse disks quick */
        uint64_t next = off + ext->length;
        while (ext->length < len && !vdi_allocated(bmap_get(s, (uint32_t)(next / VDI_BLOCK_SIZE)))) {
            uint64_t n = QIMG_MIN(len - ext->length, (uint64_t)VDI_BLOCK_SIZE);
            ext->length += n;
            next += n;
        }
        pthread_mutex_unlock(&img->lock);
        ext->flags = QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED;
        return 0;
    }
    /* following blocks stored right after this one go with it: one look
     * into the file (SEEK_DATA/SEEK_HOLE) for the run, not one a block */
    uint64_t next = off + ext->length, next_host = host + ext->length;
    while (ext->length < len) {
        uint64_t h;
        if (!host_offset(s, next, &h) || h != next_host)
            break;
        uint64_t n = QIMG_MIN(len - ext->length, (uint64_t)VDI_BLOCK_SIZE);
        ext->length += n;
        next += n;
        next_host += n;
    }
    pthread_mutex_unlock(&img->lock);
    ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET;
    ext->host_offset = host;
    ext->host_file = img->file->filename;
    qimg_extent_look_into_file(img->file, ext, false);   /* past EOF: data, as qemu */
    return 0;
}

static int vdi_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    info->cluster_size = VDI_BLOCK_SIZE;
    info->has_dirty = true;
    info->dirty = false;
    return 0;
}

static bool vdi_has_zero_init(struct qimg_image *img) { return true; }

/* ================================================================ write */

static int store_header(struct qimg_image *img, struct vdi_state *s)
{
    qimg_put_le32(s->header + H_ALLOCATED, s->allocated);
    return qimg_io_pwrite(img->file, s->header, VDI_HEADER_LEN, 0);
}

/* new blocks whose metadata is written together at the latest then */
#define VDI_UNSTORED_MAX 128u

/* The entries and the count of the blocks added since the last time, in
 * two writes instead of two a block: the header first (its count), then
 * the map's changed sectors, so that a crash between them leaves blocks
 * counted but unused, never one block used twice. */
static int store_new_blocks(struct qimg_image *img, struct vdi_state *s)
{
    if (!s->unstored)
        return 0;
    int r = store_header(img, s);
    if (r < 0)
        return r;
    size_t per = VDI_SECTOR / 4, len = (size_t)(s->dirty_hi - s->dirty_lo) * VDI_SECTOR;
    uint8_t *buf __attribute__((cleanup(qimg_cleanup_free))) = qimg_xcalloc(1, len);
    uint32_t first = s->dirty_lo * (uint32_t)per;
    for (uint32_t k = 0; k < len / 4 && first + k < s->blocks; k++)
        qimg_put_le32(buf + k * 4, bmap_on_disk(s, first + k));
    r = qimg_io_pwrite(img->file, buf, len, s->offset_bmap + (uint64_t)first * 4);
    if (r == 0)
        s->unstored = 0;
    return r;
}

/* Block i got its entry in memory: written with the next ones. */
static int new_block_stored_later(struct qimg_image *img, struct vdi_state *s, uint32_t i)
{
    uint32_t sector = i / (VDI_SECTOR / 4);
    if (!s->unstored) {
        s->dirty_lo = sector;
        s->dirty_hi = sector + 1;
    }
    s->dirty_lo = QIMG_MIN(s->dirty_lo, sector);
    s->dirty_hi = QIMG_MAX(s->dirty_hi, sector + 1);
    s->unstored++;
    /* a span too long to write at once: what is there goes now */
    if (s->unstored >= VDI_UNSTORED_MAX || s->dirty_hi - s->dirty_lo > 64)
        return store_new_blocks(img, s);
    return 0;
}

/* A new host block after the last one for block i, holding buf at off
 * and zeros elsewhere (what qemu writes).  The block is reserved under
 * img->lock (its entry pending), written without it, so that workers
 * writing new blocks do not wait for each other's data; then its entry
 * and the header are written.  A block past the end of the file is a hole
 * there first (it reads as zeros; only the data is written); one inside
 * the file (left over by an earlier size) gets its zeros written. */
static int allocate_block(struct qimg_image *img, struct vdi_state *s, uint32_t i, uint64_t off,
                          const uint8_t *buf, size_t len)
{
    if (s->allocated >= s->blocks)
        return qimg_error(-EIO, "VDI image has no room for a new block");
    uint32_t block = s->allocated;
    uint64_t host = s->offset_data + (uint64_t)block * VDI_BLOCK_SIZE, file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r == 0 && file_size < host + VDI_BLOCK_SIZE && file_size <= host)
        r = qimg_io_truncate(img->file, host + VDI_BLOCK_SIZE);
    if (r < 0)
        return r;
    bool fresh = file_size <= host;
    s->allocated++;
    s->bmap[i] = VDI_PENDING;   /* unallocated, so inside the loaded part */
    pthread_mutex_unlock(&img->lock);

    size_t at = (size_t)(off % VDI_BLOCK_SIZE);
    if (len == VDI_BLOCK_SIZE || fresh) {
        r = qimg_io_pwrite(img->file, buf, len, host + at);
    } else {
        uint8_t *whole __attribute__((cleanup(qimg_cleanup_free))) = qimg_xcalloc(1, VDI_BLOCK_SIZE);
        memcpy(whole + at, buf, len);
        r = qimg_io_pwrite(img->file, whole, VDI_BLOCK_SIZE, host);
    }

    pthread_mutex_lock(&img->lock);
    s->bmap[i] = r < 0 ? VDI_UNALLOCATED : block;
    if (r == 0)
        r = new_block_stored_later(img, s, i);
    pthread_cond_broadcast(&s->published);
    return r;
}

/* [off, off+n) inside one block, allocated first if it is not. */
static int write_piece(struct qimg_image *img, uint64_t off, uint8_t *p, size_t n)
{
    struct vdi_state *s = vdi_state(img);
    uint32_t i = (uint32_t)(off / VDI_BLOCK_SIZE);
    uint64_t host;
    int r;
    pthread_mutex_lock(&img->lock);
    while (bmap_get(s, i) == VDI_PENDING)     /* another worker's first write */
        pthread_cond_wait(&s->published, &img->lock);
    if (host_offset(s, off, &host)) {
        pthread_mutex_unlock(&img->lock);
        r = qimg_io_pwrite(img->file, p, n, host);
    } else {
        r = allocate_block(img, s, i, off, p, n);
        pthread_mutex_unlock(&img->lock);
    }
    return r;
}

static int vdi_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    return qimg_for_each_piece(img, off, (uint8_t *)buf, len, VDI_BLOCK_SIZE, write_piece);
}

static int vdi_flush(struct qimg_image *img)
{
    struct vdi_state *s = vdi_state(img);
    pthread_mutex_lock(&img->lock);
    int r = store_new_blocks(img, s);
    pthread_mutex_unlock(&img->lock);
    return r < 0 ? r : qimg_io_flush(img->file);
}

/* =============================================================== resize */

/* Copy host block from -> to (whole blocks; the file may end inside). */
static int copy_block(struct qimg_image *img, struct vdi_state *s, uint32_t from, uint64_t to_off,
                      uint8_t *buf)
{
    int r = qimg_io_pread(img->file, buf, VDI_BLOCK_SIZE,
                          s->offset_data + (uint64_t)from * VDI_BLOCK_SIZE);
    if (r == 0)
        r = qimg_io_pwrite(img->file, buf, VDI_BLOCK_SIZE, to_off);
    return r;
}

/* Make room for a block map of len bytes: the data area starts whole
 * blocks later, and the host blocks the map now covers move to the end
 * (copied first, so that until the map is written the old one holds). */
static int grow_map_room(struct qimg_image *img, struct vdi_state *s, uint64_t len)
{
    uint64_t need = s->offset_bmap + len;
    if (need <= s->offset_data)
        return 0;
    uint64_t shift = qimg_div_round_up(need - s->offset_data, VDI_BLOCK_SIZE);
    uint64_t new_data = s->offset_data + shift * VDI_BLOCK_SIZE;
    if (new_data > UINT32_MAX)
        return qimg_error(-EFBIG, "VDI block map would end past 4 GiB");
    /* host block j moves to the slot after the last block (or after the
     * shifted start when fewer blocks are allocated than the shift) */
    uint64_t dest0 = QIMG_MAX((uint64_t)s->allocated, shift);
    uint8_t *buf __attribute__((cleanup(qimg_cleanup_free))) = qimg_xmalloc(VDI_BLOCK_SIZE);
    for (uint64_t j = 0; j < shift && j < s->allocated; j++) {
        int r = copy_block(img, s, (uint32_t)j, s->offset_data + (dest0 + j) * VDI_BLOCK_SIZE, buf);
        if (r < 0)
            return r;
    }
    int r = qimg_io_flush(img->file);
    if (r < 0)
        return r;
    for (uint32_t i = 0; i < s->blocks; i++) {   /* the whole map is loaded */
        if (!vdi_allocated(s->bmap[i]))
            continue;
        uint64_t j = s->bmap[i];
        s->bmap[i] = (uint32_t)(j < shift ? dest0 - shift + j : j - shift);
    }
    s->offset_data = new_data;
    qimg_put_le32(s->header + H_OFFSET_DATA, (uint32_t)new_data);
    return 0;
}

static int store_whole_bmap(struct qimg_image *img, struct vdi_state *s)
{
    uint64_t len = bmap_bytes(s->blocks);
    uint8_t *raw __attribute__((cleanup(qimg_cleanup_free))) = qimg_alloc_from_image(len, "VDI block map");
    if (!raw)
        return -ENOMEM;
    memset(raw, 0, len);
    for (uint32_t i = 0; i < s->blocks; i++)
        qimg_put_le32(raw + (uint64_t)i * 4, bmap_on_disk(s, i));
    return qimg_io_pwrite(img->file, raw, len, s->offset_bmap);
}

/* --shrink: the blocks past the new end go, and the highest host blocks
 * still in use move into the holes they leave (copied and flushed before
 * the map points at them), so the file ends after its last block and
 * check finds every count right.  A map whose entries are out of range or
 * shared is left alone: check it first. */
static int shrink_blocks(struct qimg_image *img, struct vdi_state *s, uint32_t blocks)
{
    int r = load_whole_bmap(s, s->blocks);
    if (r < 0)
        return r;
    uint32_t *owner __attribute__((cleanup(qimg_cleanup_free))) =
        qimg_alloc_from_image((uint64_t)QIMG_MAX(s->allocated, 1u) * 4, "VDI block owners");
    if (!owner)
        return -ENOMEM;
    memset(owner, 0xff, (size_t)s->allocated * 4);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < s->blocks; i++) {
        uint32_t h = s->bmap[i];
        if (!vdi_allocated(h))
            continue;
        if (h >= s->allocated || owner[h] != VDI_UNALLOCATED)
            return qimg_error(-EINVAL, "Cannot shrink a VDI image whose block map is damaged "
                              "(see qemu-img check)");
        owner[h] = i < blocks ? i : VDI_UNALLOCATED - 1;   /* dropped: a marker */
        if (i < blocks)
            kept++;
        else
            s->bmap[i] = VDI_UNALLOCATED;
    }
    uint8_t *buf __attribute__((cleanup(qimg_cleanup_free))) = qimg_xmalloc(VDI_BLOCK_SIZE);
    uint32_t top = s->allocated;
    for (uint32_t h = 0; h < kept; h++) {
        if (owner[h] < blocks)
            continue;
        while (owner[top - 1] >= blocks)   /* the highest block still in use */
            top--;
        uint32_t from = --top;
        r = copy_block(img, s, from, s->offset_data + (uint64_t)h * VDI_BLOCK_SIZE, buf);
        if (r < 0)
            return r;
        s->bmap[owner[from]] = h;
        owner[h] = owner[from];
    }
    r = qimg_io_flush(img->file);
    if (r < 0)
        return r;
    s->allocated = kept;
    s->blocks = blocks;
    qimg_put_le32(s->header + H_ALLOCATED, kept);
    return 0;
}

/* qemu-img cannot resize vdi at all.  Growing: new blocks are unallocated,
 * or allocated at the end in a static image; shrinking (--shrink): see
 * shrink_blocks. */
static int vdi_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    struct vdi_state *s = vdi_state(img);
    if (prealloc && strcmp(prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    uint64_t rounded;
    if (!qimg_round_up_ok(size, VDI_SECTOR, &rounded) || rounded > VDI_DISK_SIZE_MAX)
        return qimg_error(-EFBIG, "Unsupported VDI image size (size is 0x%" PRIx64
                          ", max supported is 0x%" PRIx64 ")", size, VDI_DISK_SIZE_MAX);
    uint32_t blocks = (uint32_t)qimg_div_round_up(rounded, VDI_BLOCK_SIZE);
    bool is_static = qimg_le32(s->header + H_TYPE) == VDI_TYPE_STATIC;
    int stored = store_new_blocks(img, s);
    if (stored < 0)
        return stored;
    if (blocks < s->blocks) {
        int r = shrink_blocks(img, s, blocks);
        if (r == 0)
            r = qimg_io_truncate(img->file, s->offset_data + (uint64_t)s->allocated * VDI_BLOCK_SIZE);
        if (r < 0)
            return r;
    } else if (blocks > s->blocks) {
        int r = load_whole_bmap(s, blocks);
        if (r < 0)
            return r;
        r = grow_map_room(img, s, bmap_bytes(blocks));
        if (r < 0)
            return r;
        for (uint32_t i = s->blocks; i < blocks; i++)
            s->bmap[i] = is_static ? s->allocated++ : VDI_UNALLOCATED;
        s->blocks = blocks;
        if (is_static) {
            r = qimg_io_truncate(img->file, s->offset_data + (uint64_t)s->allocated * VDI_BLOCK_SIZE);
            if (r < 0)
                return r;
        }
    }
    int r = store_whole_bmap(img, s);
    if (r < 0)
        return r;
    qimg_put_le32(s->header + H_BLOCKS, s->blocks);
    qimg_put_le32(s->header + H_ALLOCATED, s->allocated);
    qimg_put_le64(s->header + H_DISK_SIZE, rounded);
    r = store_header(img, s);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        img->size = rounded;
    return r;
}

/* =============================================================== create */

/* A random (version 4) UUID stored as VirtualBox does: the first three
 * fields little-endian. */
static void random_uuid(uint8_t *out)
{
    uint8_t u[16];
    if (getrandom(u, sizeof u, 0) != (ssize_t)sizeof u) {
        for (int i = 0; i < 16; i++)
            u[i] = (uint8_t)rand();
    }
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    const uint8_t order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
    for (int i = 0; i < 16; i++)
        out[i] = u[order[i]];
}

static void fill_header(uint8_t *h, uint64_t size, uint32_t blocks, bool is_static)
{
    memset(h, 0, VDI_HEADER_LEN);
    memcpy(h, VDI_BANNER, strlen(VDI_BANNER));
    qimg_put_le32(h + H_SIGNATURE, VDI_SIGNATURE);
    qimg_put_le32(h + H_VERSION, VDI_VERSION_1_1);
    qimg_put_le32(h + H_HEADER_SIZE, 0x180);
    qimg_put_le32(h + H_TYPE, is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
    qimg_put_le32(h + H_OFFSET_BMAP, VDI_SECTOR);
    qimg_put_le32(h + H_OFFSET_DATA, (uint32_t)(VDI_SECTOR + bmap_bytes(blocks)));
    qimg_put_le32(h + H_SECTOR_SIZE, VDI_SECTOR);
    qimg_put_le64(h + H_DISK_SIZE, size);
    qimg_put_le32(h + H_BLOCK_SIZE, VDI_BLOCK_SIZE);
    qimg_put_le32(h + H_BLOCKS, blocks);
    qimg_put_le32(h + H_ALLOCATED, is_static ? blocks : 0);
    random_uuid(h + H_UUID_IMAGE);
    random_uuid(h + H_UUID_SNAP);
}

static int write_new_image(struct qimg_io *io, uint64_t size, bool is_static)
{
    uint32_t blocks = (uint32_t)qimg_div_round_up(size, VDI_BLOCK_SIZE);
    uint64_t map_len = bmap_bytes(blocks);
    uint8_t *buf __attribute__((cleanup(qimg_cleanup_free))) =
        qimg_xcalloc(1, VDI_HEADER_LEN + map_len);
    fill_header(buf, size, blocks, is_static);
    for (uint32_t i = 0; i < blocks; i++)
        qimg_put_le32(buf + VDI_HEADER_LEN + (uint64_t)i * 4, is_static ? i : VDI_UNALLOCATED);
    int r = qimg_io_truncate(io, 0);
    if (r == 0)
        r = qimg_io_pwrite(io, buf, VDI_HEADER_LEN + map_len, 0);
    if (r == 0 && is_static)
        r = qimg_io_truncate(io, VDI_HEADER_LEN + map_len + (uint64_t)blocks * VDI_BLOCK_SIZE);
    return r;
}

static int vdi_create(struct qimg_create_ctx *ctx)
{
    bool is_static = false;
    int r = qimg_opts_get_bool(ctx->opts, "static", &is_static);
    if (r < 0)
        return r;
    uint64_t size;
    if (!qimg_round_up_ok(ctx->size, VDI_SECTOR, &size) || size > VDI_DISK_SIZE_MAX)
        return qimg_error(-ENOTSUP, "Unsupported VDI image size (size is 0x%" PRIx64
                          ", max supported is 0x%" PRIx64 ")", ctx->size, VDI_DISK_SIZE_MAX);
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = write_new_image(io, size, is_static);
    qimg_io_close(io);
    return r;
}

/* ============================================================== measure */

/* qemu-img cannot measure vdi.  Header and map, then whole blocks: every
 * block for a static image; for a dynamic one the blocks that block status
 * calls data (convert may still find zeros in them: an upper bound). */
static int vdi_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    bool is_static = false;
    int r = opts ? qimg_opts_get_bool(opts, "static", &is_static) : 0;
    if (r < 0)
        return r;
    uint64_t vsize = src ? qimg_size(src) : size, rounded;
    if (!qimg_round_up_ok(vsize, VDI_SECTOR, &rounded) || rounded > VDI_DISK_SIZE_MAX)
        return qimg_error(-ENOTSUP, "Unsupported VDI image size (size is 0x%" PRIx64
                          ", max supported is 0x%" PRIx64 ")", vsize, VDI_DISK_SIZE_MAX);
    uint64_t blocks = qimg_div_round_up(rounded, VDI_BLOCK_SIZE);
    uint64_t meta = VDI_HEADER_LEN + bmap_bytes((uint32_t)blocks);
    out->fully_allocated = meta + blocks * VDI_BLOCK_SIZE;
    uint64_t used = blocks;
    if (!is_static) {
        used = 0;
        if (src && (r = qimg_count_data_blocks(src, 0, qimg_size(src), VDI_BLOCK_SIZE, &used)) < 0)
            return r;
    }
    out->required = meta + used * VDI_BLOCK_SIZE;
    return 0;
}

/* ================================================================ check */

/* A hostile map of 2^29 entries pointing at one block would give as many
 * findings: qemu prints every one (20 GB, a quarter of an hour); qimg
 * prints the first VDI_CHECK_LINES alike and then how many it left out.
 * The counts (and so the summary and exit code) are qemu's. */
#define VDI_CHECK_LINES 100000u

struct findings { uint64_t shown, hidden; };

static void finding(struct findings *f, const char *what, uint32_t a, uint32_t b)
{
    if (f->shown++ < VDI_CHECK_LINES)
        qimg_check_log(what, a, b);
    else
        f->hidden++;
}

/* qemu's findings: a block map entry past the map, two blocks sharing a
 * host block, and the header's allocation count.  Beyond qemu (which
 * refuses -r for vdi), QIMG_FIX_ERRORS repairs what can be repaired
 * without guessing: an entry past the map and the second of two entries
 * sharing a host block become unallocated (their data was never theirs),
 * and a wrong allocation count is made right by moving the blocks in use
 * down into the holes (shrink_blocks) so that they are host blocks 0..n-1
 * and a new block cannot land on one in use. */
struct vdi_repair { bool map_changed, header_changed; uint32_t high; };

static void check_entries(struct vdi_state *s, uint8_t *used, struct qimg_check_result *res,
                          bool repair, struct vdi_repair *rep, uint32_t *counted)
{
    struct findings f = { 0, 0 };
    for (uint32_t i = 0; i < s->blocks; i++) {
        uint32_t entry = bmap_get(s, i);
        if (!vdi_allocated(entry))
            continue;
        if (entry >= s->blocks) {
            finding(&f, "ERROR: block index %" PRIu32 " too large, is %" PRIu32, i, entry);
            res->corruptions++;
            if (repair) {
                s->bmap[i] = VDI_UNALLOCATED;
                res->corruptions_fixed++;
                rep->map_changed = true;
            }
            continue;
        }
        bool shared = used[entry / 8] & (1u << entry % 8);
        if (shared) {
            finding(&f, "ERROR: block index %" PRIu32 " also used by %" PRIu32, entry, entry);
            res->corruptions++;
            if (repair) {
                s->bmap[i] = VDI_UNALLOCATED;
                res->corruptions_fixed++;
                rep->map_changed = true;
                continue;
            }
        }
        (*counted)++;
        used[entry / 8] |= (uint8_t)(1u << entry % 8);
        rep->high = QIMG_MAX(rep->high, entry + 1);
    }
    if (f.hidden)
        qimg_check_log("ERROR: %" PRIu64 " more block map errors not listed", f.hidden);
}

static int vdi_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    struct vdi_state *s = vdi_state(img);
    bool repair = fix & QIMG_FIX_ERRORS;
    int r;
    if (repair && (r = load_whole_bmap(s, s->blocks)) < 0)
        return r;
    /* one bit per host block */
    uint8_t *used __attribute__((cleanup(qimg_cleanup_free))) =
        qimg_calloc_from_image(s->blocks / 8 + 1, 1, "VDI check map");
    if (!used)
        return -ENOMEM;
    struct vdi_repair rep = { false, false, 0 };
    uint32_t counted = 0;
    check_entries(s, used, res, repair, &rep, &counted);
    if (counted != s->allocated) {
        qimg_check_log("ERROR: allocated blocks mismatch, is %" PRIu32 ", should be %" PRIu32,
                       counted, s->allocated);
        res->corruptions++;
        if (repair) {
            /* the blocks in use moved down into the holes, the count theirs */
            s->allocated = QIMG_MAX(s->allocated, rep.high);
            if ((r = shrink_blocks(img, s, s->blocks)) < 0)
                return r;
            res->corruptions_fixed++;
            rep.header_changed = rep.map_changed = true;
        }
    }
    if (rep.map_changed && (r = store_whole_bmap(img, s)) < 0)
        return r;
    if (rep.header_changed && (r = store_header(img, s)) < 0)
        return r;
    return rep.map_changed || rep.header_changed ? qimg_io_flush(img->file) : 0;
}

const struct qimg_driver qimg_driver_vdi = {
    .name           = "vdi",
    .create_opts    = vdi_create_opts,
    .probe          = vdi_probe,
    .open           = vdi_open,
    .close          = vdi_close,
    .create         = vdi_create,
    .read           = vdi_read,
    .write          = vdi_write,
    .flush          = vdi_flush,
    .block_status   = vdi_block_status,
    .info           = vdi_info,
    .check          = vdi_check,
    .resize         = vdi_resize,
    .measure        = vdi_measure,
    .has_zero_init  = vdi_has_zero_init,
};
