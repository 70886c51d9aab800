/* Partition tables: finding a partition in an MBR (primaries, the chain of
 * logical partitions) or a GPT, and writing a table with one partition.
 *
 * Everything read from the image is untrusted: each sector number is
 * checked against the image size, the chain of extended boot records is
 * bounded and loop-checked, the GPT header and entry array are checked by
 * their CRC32 and their sizes are bounded before anything is allocated.
 * Sectors are 512 bytes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>


#include "fs.h"
#include "internal.h"
#include "util.h"

#define SECTOR 512u
#define MIB_SECTORS 2048u                 /* 1 MiB: where the partition starts */
#define MBR_PART_OFF 446
#define MBR_TYPE_EMPTY 0x00
#define MBR_TYPE_GPT 0xee
/* At most this many extended boot records are followed (Linux stops far
 * earlier in practice; a longer chain is hostile). */
#define MAX_EBRS 256

#define GPT_HEADER_SIZE 92
#define GPT_ENTRY_SIZE 128
#define GPT_ENTRIES 128
#define GPT_ARRAY_SECTORS (GPT_ENTRIES * GPT_ENTRY_SIZE / SECTOR)   /* 32 */
/* Bounds for tables read from images: the array must fit in 4 MiB. */
#define GPT_MAX_ARRAY_BYTES (4u << 20)
#define GPT_MAX_ENTRY_SIZE 4096u

static const char GPT_SIGNATURE[8] = { 'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T' };

/* GPT's CRC-32, bit by bit: its tables are a few KiB (zlib, which is
 * opened only when a codec needs it, is not worth opening for them). */
static uint32_t crc32_of(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & -(c & 1));
    }
    return ~c;
}

static uint64_t image_sectors(qimg_image *img)
{
    return qimg_size(img) / SECTOR;
}

static int read_sector(qimg_image *img, uint64_t lba, uint8_t *buf)
{
    if (lba >= image_sectors(img))
        return qimg_error(-EINVAL, "partition table: sector %" PRIu64
                          " is past the end of the image", lba);
    return qimg_read(img, lba * SECTOR, buf, SECTOR);
}

/* ================================================================= MBR */

struct mbr_entry {
    uint8_t status, type;
    uint32_t start, count;
};

static void mbr_entry_at(const uint8_t *sector, int i, struct mbr_entry *e)
{
    const uint8_t *p = sector + MBR_PART_OFF + 16 * i;
    e->status = p[0];
    e->type = p[4];
    e->start = qimg_le32(p + 8);
    e->count = qimg_le32(p + 12);
}

static bool mbr_is_extended(uint8_t type)
{
    return type == 0x05 || type == 0x0f || type == 0x85;
}

/* A sector is taken for an MBR when it carries the 55 AA signature and every
 * status byte is 0 or 0x80 (a FAT boot sector on a whole disk usually fails
 * the second test: its code sits where the entries would be). */
static bool mbr_looks_valid(const uint8_t *sector)
{
    if (sector[510] != 0x55 || sector[511] != 0xaa)
        return false;
    for (int i = 0; i < 4; i++) {
        uint8_t status = sector[MBR_PART_OFF + 16 * i];
        if (status != 0 && status != 0x80)
            return false;
    }
    return true;
}

static int range_in_image(qimg_image *img, unsigned n, uint64_t start, uint64_t count,
                          uint64_t *offset, uint64_t *size)
{
    uint64_t total = image_sectors(img);
    if (count == 0)
        return qimg_error(-ENOENT, "partition %u not found", n);
    if (!qimg_range_ok(start, count, total))
        return qimg_error(-EINVAL, "partition %u (sectors %" PRIu64 "+%" PRIu64
                          ") extends past the end of the image (%" PRIu64 " sectors)",
                          n, start, count, total);
    *offset = start * SECTOR;
    *size = count * SECTOR;
    return 0;
}

/* Walks the logical partitions of the extended partition at slot e (sectors
 * ext_start..+ext_count), numbering them from *next; stops at number want. */
static int mbr_walk_extended(qimg_image *img, uint64_t ext_start, uint64_t ext_count,
                             unsigned want, unsigned *next, uint64_t *offset, uint64_t *size,
                             bool *found)
{
    uint64_t visited[MAX_EBRS];
    size_t nvisited = 0;
    uint64_t ebr = ext_start;
    uint8_t sec[SECTOR];

    for (;;) {
        for (size_t i = 0; i < nvisited; i++) {
            if (visited[i] == ebr)
                return qimg_error(-ELOOP, "the chain of logical partitions loops "
                                  "(sector %" PRIu64 " seen twice)", ebr);
        }
        if (nvisited == MAX_EBRS)
            return qimg_error(-EINVAL, "more than %d logical partitions", MAX_EBRS);
        visited[nvisited++] = ebr;
        if (ebr < ext_start || ebr >= ext_start + ext_count)
            return qimg_error(-EINVAL, "an extended boot record (sector %" PRIu64
                              ") lies outside its extended partition", ebr);
        int r = read_sector(img, ebr, sec);
        if (r < 0)
            return r;
        if (sec[510] != 0x55 || sec[511] != 0xaa)
            return 0;       /* end of a damaged chain: what is found so far stands */

        struct mbr_entry e;
        uint64_t link = 0;
        /* Data partitions first (numbered in slot order), then the first link. */
        for (int i = 0; i < 4; i++) {
            mbr_entry_at(sec, i, &e);
            if (e.type == MBR_TYPE_EMPTY || e.count == 0 || mbr_is_extended(e.type))
                continue;
            if (*next == want) {
                *found = true;
                return range_in_image(img, want, ebr + e.start, e.count, offset, size);
            }
            (*next)++;
        }
        for (int i = 0; i < 4; i++) {
            mbr_entry_at(sec, i, &e);
            if (mbr_is_extended(e.type) && e.count != 0) {
                link = ext_start + e.start;
                break;
            }
        }
        if (!link)
            return 0;
        ebr = link;
    }
}

static int mbr_find(qimg_image *img, const uint8_t *mbr, unsigned n, uint64_t *offset,
                    uint64_t *size)
{
    struct mbr_entry e;
    if (n >= 1 && n <= 4) {
        mbr_entry_at(mbr, (int)n - 1, &e);
        if (e.type == MBR_TYPE_EMPTY)
            return qimg_error(-ENOENT, "partition %u not found", n);
        if (mbr_is_extended(e.type))
            return qimg_error(-EINVAL, "partition %u is an extended partition "
                              "(it holds logical partitions, not a filesystem)", n);
        return range_in_image(img, n, e.start, e.count, offset, size);
    }
    unsigned next = 5;
    bool found = false;
    for (int i = 0; i < 4; i++) {
        mbr_entry_at(mbr, i, &e);
        if (!mbr_is_extended(e.type) || e.count == 0)
            continue;
        if (!qimg_range_ok(e.start, e.count, image_sectors(img)))
            return qimg_error(-EINVAL, "extended partition %d extends past the end "
                              "of the image", i + 1);
        int r = mbr_walk_extended(img, e.start, e.count, n, &next, offset, size, &found);
        if (r < 0 || found)
            return r;
    }
    return qimg_error(-ENOENT, "partition %u not found", n);
}

/* ================================================================= GPT */

struct gpt_header {
    uint64_t my_lba, alt_lba, first_usable, last_usable, array_lba;
    uint32_t entries, entry_size, array_crc;
};

/* Reads and checks the GPT header at lba; 0 when valid, <0 with a message. */
static int gpt_read_header(qimg_image *img, uint64_t lba, struct gpt_header *h)
{
    uint8_t sec[SECTOR];
    uint64_t total = image_sectors(img);
    int r = read_sector(img, lba, sec);
    if (r < 0)
        return r;
    if (memcmp(sec, GPT_SIGNATURE, sizeof GPT_SIGNATURE) != 0)
        return qimg_error(-EINVAL, "no GPT header at sector %" PRIu64, lba);
    uint32_t hsize = qimg_le32(sec + 12);
    if (hsize < GPT_HEADER_SIZE || hsize > SECTOR)
        return qimg_error(-EINVAL, "GPT header at sector %" PRIu64 ": bad header size %" PRIu32,
                          lba, hsize);
    uint32_t crc = qimg_le32(sec + 16);
    qimg_put_le32(sec + 16, 0);
    if (crc32_of(sec, hsize) != crc)
        return qimg_error(-EINVAL, "GPT header at sector %" PRIu64 ": bad CRC", lba);
    h->my_lba = qimg_le64(sec + 24);
    h->alt_lba = qimg_le64(sec + 32);
    h->first_usable = qimg_le64(sec + 40);
    h->last_usable = qimg_le64(sec + 48);
    h->array_lba = qimg_le64(sec + 72);
    h->entries = qimg_le32(sec + 80);
    h->entry_size = qimg_le32(sec + 84);
    h->array_crc = qimg_le32(sec + 88);
    if (h->my_lba != lba)
        return qimg_error(-EINVAL, "GPT header at sector %" PRIu64 " says it is at sector %"
                          PRIu64, lba, h->my_lba);
    if (h->first_usable > h->last_usable || h->last_usable >= total)
        return qimg_error(-EINVAL, "GPT header at sector %" PRIu64 ": usable sectors %" PRIu64
                          "..%" PRIu64 " do not fit in the image (%" PRIu64 " sectors)",
                          lba, h->first_usable, h->last_usable, total);
    if (h->entry_size < GPT_ENTRY_SIZE || h->entry_size > GPT_MAX_ENTRY_SIZE ||
        h->entry_size % GPT_ENTRY_SIZE != 0)
        return qimg_error(-EINVAL, "GPT header at sector %" PRIu64
                          ": bad partition entry size %" PRIu32, lba, h->entry_size);
    if ((uint64_t)h->entries * h->entry_size > GPT_MAX_ARRAY_BYTES)
        return qimg_error(-EINVAL, "GPT header at sector %" PRIu64 ": %" PRIu32
                          " partition entries of %" PRIu32 " bytes are too many",
                          lba, h->entries, h->entry_size);
    uint64_t array_sectors = qimg_div_round_up((uint64_t)h->entries * h->entry_size, SECTOR);
    if (!qimg_range_ok(h->array_lba, array_sectors, total))
        return qimg_error(-EINVAL, "GPT header at sector %" PRIu64
                          ": the partition entry array is past the end of the image", lba);
    return 0;
}

/* Reads the entry array of h and checks its CRC; *out is malloc'ed. */
static int gpt_read_array(qimg_image *img, const struct gpt_header *h, uint8_t **out)
{
    size_t bytes = (size_t)h->entries * h->entry_size;
    uint8_t *array = qimg_alloc_from_image(bytes ? bytes : 1, "GPT partition entries");
    if (!array)
        return -ENOMEM;
    int r = qimg_read(img, h->array_lba * SECTOR, array, bytes);
    if (r < 0) {
        free(array);
        return r;
    }
    if (crc32_of(array, bytes) != h->array_crc) {
        free(array);
        return qimg_error(-EINVAL, "GPT partition entry array at sector %" PRIu64
                          ": bad CRC", h->array_lba);
    }
    *out = array;
    return 0;
}

/* The primary table, or the backup (last sector) when the primary is
 * damaged, as Linux and the partitioning tools do. */
static int gpt_load(qimg_image *img, struct gpt_header *h, uint8_t **array)
{
    int r = gpt_read_header(img, 1, h);
    if (r == 0)
        r = gpt_read_array(img, h, array);
    if (r == 0)
        return 0;

    char first[512];
    snprintf(first, sizeof first, "%s", qimg_last_error());
    uint64_t total = image_sectors(img);
    int r2 = total > 2 ? gpt_read_header(img, total - 1, h) : -EINVAL;
    if (r2 == 0)
        r2 = gpt_read_array(img, h, array);
    if (r2 == 0)
        return 0;
    return qimg_error(r, "%s (and no valid backup GPT)", first);
}

static bool guid_is_zero(const uint8_t *g)
{
    return qimg_is_zero(g, 16);
}

static int gpt_find(qimg_image *img, unsigned n, uint64_t *offset, uint64_t *size)
{
    struct gpt_header h;
    uint8_t *array = NULL;
    int r = gpt_load(img, &h, &array);
    if (r < 0)
        return r;
    if (n > h.entries) {
        free(array);
        return qimg_error(-ENOENT, "partition %u not found", n);
    }
    const uint8_t *e = array + (size_t)(n - 1) * h.entry_size;
    uint64_t first = qimg_le64(e + 32), last = qimg_le64(e + 40);
    bool used = !guid_is_zero(e);
    free(array);
    if (!used)
        return qimg_error(-ENOENT, "partition %u not found", n);
    if (first > last || last > h.last_usable || first < h.first_usable)
        return qimg_error(-EINVAL, "partition %u (sectors %" PRIu64 "..%" PRIu64
                          ") lies outside the usable sectors of the GPT (%" PRIu64 "..%"
                          PRIu64 ")", n, first, last, h.first_usable, h.last_usable);
    return range_in_image(img, n, first, last - first + 1, offset, size);
}

/* ================================================================ find */

int qimg_part_find(qimg_image *img, unsigned n, uint64_t *offset, uint64_t *size)
{
    uint8_t mbr[SECTOR];
    if (n == 0)
        return qimg_error(-EINVAL, "partition 0 is the whole disk, not a partition");
    if (image_sectors(img) < 2)
        return qimg_error(-EINVAL, "no partition table (the image is too small)");
    int r = qimg_read(img, 0, mbr, SECTOR);
    if (r < 0)
        return r;
    if (!mbr_looks_valid(mbr))
        return qimg_error(-EINVAL, "no partition table (no MBR or GPT found)");
    for (int i = 0; i < 4; i++) {
        struct mbr_entry e;
        mbr_entry_at(mbr, i, &e);
        if (e.type == MBR_TYPE_GPT)
            return gpt_find(img, n, offset, size);
    }
    bool any = false;
    for (int i = 0; i < 4; i++) {
        struct mbr_entry e;
        mbr_entry_at(mbr, i, &e);
        any |= e.type != MBR_TYPE_EMPTY;
    }
    if (!any)
        return qimg_error(-EINVAL, "no partition table (the MBR has no partitions)");
    return mbr_find(img, mbr, n, offset, size);
}

/* =============================================================== write */

/* Cylinder/head/sector of an LBA in a geometry of heads and secs per
 * track; past what CHS can address, the 1023/heads-1/secs cap. */
static void put_chs(uint8_t *p, uint64_t lba, unsigned heads, unsigned secs)
{
    uint64_t cyl = lba / ((uint64_t)heads * secs);
    unsigned head = (unsigned)(lba / secs % heads), sect = (unsigned)(lba % secs + 1);
    if (cyl > 1023) {
        cyl = 1023;
        head = heads - 1;
        sect = secs;
    }
    p[0] = (uint8_t)head;
    p[1] = (uint8_t)(sect | ((cyl >> 2) & 0xc0));
    p[2] = (uint8_t)cyl;
}

void qimg_mbr_put_entry(uint8_t *sector, int i, uint8_t status, uint8_t type, uint64_t start,
                        uint64_t count, unsigned heads, unsigned secs)
{
    uint8_t *p = sector + MBR_PART_OFF + 16 * i;
    p[0] = status;
    put_chs(p + 1, start, heads, secs);
    p[4] = type;
    put_chs(p + 5, start + count - 1, heads, secs);
    qimg_put_le32(p + 8, (uint32_t)start);
    qimg_put_le32(p + 12, (uint32_t)count);
}

/* The 255-head, 63-sector geometry the partitioning tools use. */
static void put_mbr_entry(uint8_t *sector, int i, uint8_t type, uint64_t start, uint64_t count)
{
    qimg_mbr_put_entry(sector, i, 0, type, start, count, 255, 63);
}

static int random_bytes(bool reproducible, uint64_t seed, const char *purpose, void *buf,
                        size_t len)
{
    if (reproducible) {
        qimg_fs_derive_bytes(seed, purpose, buf, len);
        return 0;
    }
    if (getrandom(buf, len, 0) != (ssize_t)len)
        return qimg_error_errno(-EIO, "getrandom");
    return 0;
}

/* A version 4 (random) GUID in its on-disk (mixed-endian) form. */
static int make_guid(bool reproducible, uint64_t seed, const char *purpose, uint8_t g[16])
{
    int r = random_bytes(reproducible, seed, purpose, g, 16);
    if (r < 0)
        return r;
    g[7] = (uint8_t)((g[7] & 0x0f) | 0x40);   /* time_hi_and_version, stored LE */
    g[8] = (uint8_t)((g[8] & 0x3f) | 0x80);
    return 0;
}

/* "0FC63DAF-8483-4772-8E79-3D69D8477DE4" to its on-disk bytes: the first
 * three groups little-endian, the last two as written. */
static void guid_parse(const char *s, uint8_t g[16])
{
    static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
    uint8_t raw[16];
    int k = 0;
    for (const char *p = s; *p && k < 16; p++) {
        if (*p == '-')
            continue;
        unsigned v;
        sscanf(p, "%2x", &v);
        raw[k++] = (uint8_t)v;
        p++;
    }
    for (int i = 0; i < 16; i++)
        g[i] = raw[order[i]];
}

#define GPT_LINUX "0FC63DAF-8483-4772-8E79-3D69D8477DE4"   /* Linux filesystem */
#define GPT_BASIC "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"   /* Microsoft basic data */

static const struct { const char *kind; uint8_t mbr_type; const char *gpt_type; } kinds[] = {
    { "linux", 0x83, GPT_LINUX },
    { "fat",   0x0c, GPT_BASIC },         /* FAT32 LBA */
    { "fat16", 0x0e, GPT_BASIC },         /* FAT16 LBA */
    { "fat12", 0x01, GPT_BASIC },
};

static int kind_types(const char *kind, uint8_t *mbr_type, const char **gpt_type)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (!strcmp(kind ? kind : "linux", kinds[i].kind)) {
            *mbr_type = kinds[i].mbr_type;
            *gpt_type = kinds[i].gpt_type;
            return 0;
        }
    }
    return qimg_error(-EINVAL, "unknown partition kind '%s'", kind);
}

static int write_mbr(qimg_image *img, uint8_t type, bool reproducible, uint64_t seed,
                     uint64_t *offset, uint64_t *size)
{
    uint64_t total = image_sectors(img);
    if (total <= MIB_SECTORS)
        return qimg_error(-EINVAL, "the disk is too small for a partition table");
    if (total > 0xffffffffull)
        return qimg_error(-EFBIG, "an MBR cannot describe a disk over 2 TiB (use gpt)");
    uint8_t mbr[SECTOR] = { 0 };
    int r = random_bytes(reproducible, seed, "mbr disk signature", mbr + 440, 4);
    if (r < 0)
        return r;
    uint64_t count = total - MIB_SECTORS;
    put_mbr_entry(mbr, 0, type, MIB_SECTORS, count);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    r = qimg_write(img, 0, mbr, SECTOR);
    if (r == 0)
        r = qimg_write_zeroes(img, SECTOR, (MIB_SECTORS - 1) * SECTOR, QIMG_ZERO_MAY_UNMAP);
    if (r < 0)
        return r;
    *offset = (uint64_t)MIB_SECTORS * SECTOR;
    *size = count * SECTOR;
    return 0;
}

static void gpt_fill_header(uint8_t *sec, uint64_t my_lba, uint64_t alt_lba, uint64_t first,
                            uint64_t last, const uint8_t disk_guid[16], uint64_t array_lba,
                            uint32_t array_crc)
{
    memset(sec, 0, SECTOR);
    memcpy(sec, GPT_SIGNATURE, sizeof GPT_SIGNATURE);
    qimg_put_le32(sec + 8, 0x00010000);        /* revision 1.0 */
    qimg_put_le32(sec + 12, GPT_HEADER_SIZE);
    qimg_put_le64(sec + 24, my_lba);
    qimg_put_le64(sec + 32, alt_lba);
    qimg_put_le64(sec + 40, first);
    qimg_put_le64(sec + 48, last);
    memcpy(sec + 56, disk_guid, 16);
    qimg_put_le64(sec + 72, array_lba);
    qimg_put_le32(sec + 80, GPT_ENTRIES);
    qimg_put_le32(sec + 84, GPT_ENTRY_SIZE);
    qimg_put_le32(sec + 88, array_crc);
    qimg_put_le32(sec + 16, crc32_of(sec, GPT_HEADER_SIZE));
}

/* The layout of `sgdisk -n 1:0:0`: 128 entries, the partition from 1 MiB to
 * the last usable sector (the one before the backup entry array). */
static int write_gpt(qimg_image *img, const char *type_guid, bool reproducible, uint64_t seed,
                     uint64_t *offset, uint64_t *size)
{
    uint64_t total = image_sectors(img);
    uint64_t first_usable = 2 + GPT_ARRAY_SECTORS;
    if (total < MIB_SECTORS + GPT_ARRAY_SECTORS + 2)
        return qimg_error(-EINVAL, "the disk is too small for a partition table");
    uint64_t last_usable = total - 2 - GPT_ARRAY_SECTORS;
    uint64_t backup_array = total - 1 - GPT_ARRAY_SECTORS;

    uint8_t disk_guid[16], part_guid[16];
    int r = make_guid(reproducible, seed, "gpt disk guid", disk_guid);
    if (r == 0)
        r = make_guid(reproducible, seed, "gpt partition 1 guid", part_guid);
    if (r < 0)
        return r;

    uint8_t array[GPT_ENTRIES * GPT_ENTRY_SIZE] = { 0 };
    guid_parse(type_guid, array);
    memcpy(array + 16, part_guid, 16);
    qimg_put_le64(array + 32, MIB_SECTORS);
    qimg_put_le64(array + 40, last_usable);
    uint32_t array_crc = crc32_of(array, sizeof array);

    uint8_t pmbr[SECTOR] = { 0 };
    uint64_t pcount = QIMG_MIN(total - 1, 0xffffffffull);
    put_mbr_entry(pmbr, 0, MBR_TYPE_GPT, 1, pcount);
    pmbr[510] = 0x55;
    pmbr[511] = 0xaa;

    uint8_t primary[SECTOR], backup[SECTOR];
    gpt_fill_header(primary, 1, total - 1, first_usable, last_usable, disk_guid, 2, array_crc);
    gpt_fill_header(backup, total - 1, 1, first_usable, last_usable, disk_guid, backup_array,
                    array_crc);

    r = qimg_write(img, 0, pmbr, SECTOR);
    if (r == 0)
        r = qimg_write(img, SECTOR, primary, SECTOR);
    if (r == 0)
        r = qimg_write(img, 2 * SECTOR, array, sizeof array);
    if (r == 0)
        r = qimg_write_zeroes(img, first_usable * SECTOR, (MIB_SECTORS - first_usable) * SECTOR,
                              QIMG_ZERO_MAY_UNMAP);
    if (r == 0)
        r = qimg_write(img, backup_array * SECTOR, array, sizeof array);
    if (r == 0)
        r = qimg_write(img, (total - 1) * SECTOR, backup, SECTOR);
    if (r < 0)
        return r;
    *offset = (uint64_t)MIB_SECTORS * SECTOR;
    *size = (last_usable - MIB_SECTORS + 1) * SECTOR;
    return 0;
}

int qimg_part_write(qimg_image *img, enum qimg_part_scheme scheme, const char *kind,
                    bool reproducible, uint64_t seed, uint64_t *offset, uint64_t *size)
{
    uint8_t mbr_type = 0;
    const char *gpt_type = NULL;
    int r = kind_types(kind, &mbr_type, &gpt_type);
    if (r < 0)
        return r;
    switch (scheme) {
    case QIMG_PART_MBR:
        return write_mbr(img, mbr_type, reproducible, seed, offset, size);
    case QIMG_PART_GPT:
        return write_gpt(img, gpt_type, reproducible, seed, offset, size);
    case QIMG_PART_NONE:
        *offset = 0;
        *size = qimg_size(img);
        return 0;
    }
    return qimg_error(-EINVAL, "unknown partition scheme");
}

uint64_t qimg_part_overhead(enum qimg_part_scheme scheme)
{
    switch (scheme) {
    case QIMG_PART_MBR:
        return (uint64_t)MIB_SECTORS * SECTOR;
    case QIMG_PART_GPT:
        return (uint64_t)(MIB_SECTORS + 1 + GPT_ARRAY_SECTORS) * SECTOR;
    default:
        return 0;
    }
}
