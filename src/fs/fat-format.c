/* FAT on-disk structures (see fat-format.h), from Microsoft's fatgen103. */
#include <errno.h>
#include <stdio.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "fat-format.h"
#include "internal.h"
#include "util.h"

/* ------------------------------------------------------------ boot sector */

/* Field offsets of the boot sector and BPB. */
enum {
    BS_JMP = 0, BS_OEM = 3, BPB_BYTSPERSEC = 11, BPB_SECPERCLUS = 13, BPB_RSVDSECCNT = 14,
    BPB_NUMFATS = 16, BPB_ROOTENTCNT = 17, BPB_TOTSEC16 = 19, BPB_MEDIA = 21,
    BPB_FATSZ16 = 22, BPB_SECPERTRK = 24, BPB_NUMHEADS = 26, BPB_HIDDSEC = 28,
    BPB_TOTSEC32 = 32,
    /* FAT32 */
    BPB_FATSZ32 = 36, BPB_EXTFLAGS = 40, BPB_FSVER = 42, BPB_ROOTCLUS = 44, BPB_FSINFO = 48,
    BPB_BKBOOTSEC = 50,
    /* extended boot record: FAT12/16 at 36, FAT32 at 64 */
    EBR16 = 36, EBR32 = 64,
    EBR_DRVNUM = 0, EBR_RESERVED1 = 1, EBR_BOOTSIG = 2, EBR_VOLID = 3, EBR_VOLLAB = 7,
    EBR_FILSYSTYPE = 18,
    BS_SIGNATURE = 510,
};

static bool is_pow2_in(unsigned v, unsigned lo, unsigned hi)
{
    return v >= lo && v <= hi && qimg_is_pow2(v);
}

bool fat_boot_sector_plausible(const uint8_t *s)
{
    if (s[BS_SIGNATURE] != 0x55 || s[BS_SIGNATURE + 1] != 0xAA)
        return false;
    if (s[BS_JMP] != 0xEB && s[BS_JMP] != 0xE9)
        return false;
    unsigned bps = qimg_le16(s + BPB_BYTSPERSEC);
    if (!is_pow2_in(bps, 512, 4096) || !is_pow2_in(s[BPB_SECPERCLUS], 1, 128))
        return false;
    if (qimg_le16(s + BPB_RSVDSECCNT) == 0 || s[BPB_NUMFATS] == 0)
        return false;
    if (s[BPB_MEDIA] != 0xF0 && s[BPB_MEDIA] < 0xF8)
        return false;
    uint32_t fatsz = qimg_le16(s + BPB_FATSZ16) ? qimg_le16(s + BPB_FATSZ16)
                                                  : qimg_le32(s + BPB_FATSZ32);
    uint32_t total = qimg_le16(s + BPB_TOTSEC16) ? qimg_le16(s + BPB_TOTSEC16)
                                                   : qimg_le32(s + BPB_TOTSEC32);
    return fatsz != 0 && total != 0;
}

int fat_bpb_derive(struct fat_bpb *b, uint64_t dev_size)
{
    if (!is_pow2_in(b->bytes_per_sector, 512, 4096))
        return qimg_error(-EINVAL, "FAT: bytes per sector %u is not a power of two "
                          "between 512 and 4096", b->bytes_per_sector);
    if (!is_pow2_in(b->sectors_per_cluster, 1, 128))
        return qimg_error(-EINVAL, "FAT: sectors per cluster %u is not a power of two "
                          "up to 128", b->sectors_per_cluster);
    if (b->reserved_sectors == 0)
        return qimg_error(-EINVAL, "FAT: no reserved sectors");
    if (b->num_fats == 0 || b->num_fats > 4)
        return qimg_error(-EINVAL, "FAT: unsupported number of FATs %u", b->num_fats);
    if (b->fat_sectors == 0)
        return qimg_error(-EINVAL, "FAT: FAT size is zero");
    if (b->total_sectors == 0)
        return qimg_error(-EINVAL, "FAT: total sector count is zero");
    uint64_t bps = b->bytes_per_sector;
    uint64_t devsec = dev_size / bps;
    if (b->total_sectors > devsec)
        return qimg_error(-EINVAL, "FAT: the volume (%" PRIu32 " sectors of %" PRIu64
                          " bytes) is larger than its device (%" PRIu64 " bytes)",
                          b->total_sectors, bps, dev_size);
    b->root_dir_sectors = (uint32_t)qimg_div_round_up((uint64_t)b->root_entries * 32, bps);
    uint64_t meta = (uint64_t)b->reserved_sectors + (uint64_t)b->num_fats * b->fat_sectors +
                    b->root_dir_sectors;
    if (meta >= b->total_sectors)
        return qimg_error(-EINVAL, "FAT: reserved sectors, FATs and root directory (%" PRIu64
                          " sectors) leave no room for data in %" PRIu32 " sectors",
                          meta, b->total_sectors);
    b->first_fat_sector = b->reserved_sectors;
    b->first_root_sector = (uint32_t)(b->reserved_sectors +
                                      (uint64_t)b->num_fats * b->fat_sectors);
    b->first_data_sector = (uint32_t)meta;
    b->clusters = (uint32_t)((b->total_sectors - meta) / b->sectors_per_cluster);
    b->cluster_bytes = (uint32_t)(bps * b->sectors_per_cluster);
    if (b->cluster_bytes > 65536)
        return qimg_error(-EINVAL, "FAT: clusters of %" PRIu32 " bytes are larger than 64 KiB",
                          b->cluster_bytes);
    /* The type is decided by the cluster count alone (fatgen103). */
    if (b->clusters <= FAT12_MAX_CLUSTERS)
        b->type = FAT12;
    else if (b->clusters <= FAT16_MAX_CLUSTERS)
        b->type = FAT16;
    else
        b->type = FAT32;
    if (b->clusters == 0)
        return qimg_error(-EINVAL, "FAT: no data clusters");
    if (b->type == FAT32) {
        if (b->clusters > FAT32_MAX_CLUSTERS)
            return qimg_error(-EINVAL, "FAT: too many clusters (%" PRIu32 ")", b->clusters);
        if (b->root_entries != 0)
            return qimg_error(-EINVAL, "FAT32 volume with a fixed root directory");
        if (b->root_cluster < 2 || b->root_cluster > b->clusters + 1)
            return qimg_error(-EINVAL, "FAT32: root directory cluster %" PRIu32
                              " is out of range", b->root_cluster);
    } else if (b->root_entries == 0) {
        return qimg_error(-EINVAL, "FAT%d: the root directory has no entries", (int)b->type);
    }
    /* Each FAT must hold an entry for every cluster. */
    if (fat_bytes_for_entries(b->type, (uint64_t)b->clusters + 2) > (uint64_t)b->fat_sectors * bps)
        return qimg_error(-EINVAL, "FAT: the FAT (%" PRIu32 " sectors) is too small for %"
                          PRIu32 " clusters", b->fat_sectors, b->clusters);
    return 0;
}

int fat_bpb_parse(const uint8_t *s, uint64_t dev_size, struct fat_bpb *b)
{
    memset(b, 0, sizeof *b);
    if (s[BS_SIGNATURE] != 0x55 || s[BS_SIGNATURE + 1] != 0xAA)
        return qimg_error(-EINVAL, "FAT: no boot sector signature");
    memcpy(b->oem, s + BS_OEM, 8);
    b->bytes_per_sector = qimg_le16(s + BPB_BYTSPERSEC);
    b->sectors_per_cluster = s[BPB_SECPERCLUS];
    b->reserved_sectors = qimg_le16(s + BPB_RSVDSECCNT);
    b->num_fats = s[BPB_NUMFATS];
    b->root_entries = qimg_le16(s + BPB_ROOTENTCNT);
    b->total_sectors = qimg_le16(s + BPB_TOTSEC16);
    if (!b->total_sectors)
        b->total_sectors = qimg_le32(s + BPB_TOTSEC32);
    b->media = s[BPB_MEDIA];
    b->fat_sectors = qimg_le16(s + BPB_FATSZ16);
    b->sectors_per_track = qimg_le16(s + BPB_SECPERTRK);
    b->heads = qimg_le16(s + BPB_NUMHEADS);
    b->hidden_sectors = qimg_le32(s + BPB_HIDDSEC);
    const uint8_t *ebr = s + EBR16;
    if (b->fat_sectors == 0) {
        /* FAT32 layout of the BPB (a zero 16-bit FAT size says so) */
        b->fat_sectors = qimg_le32(s + BPB_FATSZ32);
        b->ext_flags = qimg_le16(s + BPB_EXTFLAGS);
        if (qimg_le16(s + BPB_FSVER) != 0)
            return qimg_error(-EINVAL, "FAT32: unsupported version %u",
                              qimg_le16(s + BPB_FSVER));
        b->root_cluster = qimg_le32(s + BPB_ROOTCLUS);
        b->fsinfo_sector = qimg_le16(s + BPB_FSINFO);
        b->backup_boot_sector = qimg_le16(s + BPB_BKBOOTSEC);
        ebr = s + EBR32;
    }
    b->drive_number = ebr[EBR_DRVNUM];
    b->dirty = ebr[EBR_RESERVED1];
    if (ebr[EBR_BOOTSIG] == 0x29) {
        b->has_volume_id = true;
        b->volume_id = qimg_le32(ebr + EBR_VOLID);
        memcpy(b->label, ebr + EBR_VOLLAB, 11);
    }
    int r = fat_bpb_derive(b, dev_size);
    if (r < 0)
        return r;
    /* A FAT32 BPB layout must describe a FAT32 cluster count and back. */
    bool bpb32 = qimg_le16(s + BPB_FATSZ16) == 0;
    if (bpb32 != (b->type == FAT32))
        return qimg_error(-EINVAL, "FAT: the BPB layout (%s) does not match the cluster count "
                          "(%" PRIu32 " clusters)", bpb32 ? "FAT32" : "FAT12/16", b->clusters);
    if (b->type == FAT32 && (b->ext_flags & 0x80) && (b->ext_flags & 0x0F) >= b->num_fats)
        return qimg_error(-EINVAL, "FAT32: active FAT %u does not exist", b->ext_flags & 0x0F);
    return 0;
}

void fat_bpb_encode(const struct fat_bpb *b, uint8_t *s)
{
    memset(s, 0, b->bytes_per_sector);
    bool f32 = b->type == FAT32;
    s[0] = 0xEB;
    s[1] = b->jump_offset ? b->jump_offset : f32 ? 0x58 : 0x3C;
    s[2] = 0x90;
    memcpy(s + BS_OEM, "MSWIN4.1", 8);
    qimg_put_le16(s + BPB_BYTSPERSEC, b->bytes_per_sector);
    s[BPB_SECPERCLUS] = b->sectors_per_cluster;
    qimg_put_le16(s + BPB_RSVDSECCNT, b->reserved_sectors);
    s[BPB_NUMFATS] = b->num_fats;
    qimg_put_le16(s + BPB_ROOTENTCNT, b->root_entries);
    if (b->total_sectors < 0x10000 && !f32)
        qimg_put_le16(s + BPB_TOTSEC16, (uint16_t)b->total_sectors);
    else
        qimg_put_le32(s + BPB_TOTSEC32, b->total_sectors);
    s[BPB_MEDIA] = b->media;
    if (!f32)
        qimg_put_le16(s + BPB_FATSZ16, (uint16_t)b->fat_sectors);
    qimg_put_le16(s + BPB_SECPERTRK, b->sectors_per_track);
    qimg_put_le16(s + BPB_NUMHEADS, b->heads);
    qimg_put_le32(s + BPB_HIDDSEC, b->hidden_sectors);
    uint8_t *ebr = s + EBR16;
    if (f32) {
        qimg_put_le32(s + BPB_FATSZ32, b->fat_sectors);
        qimg_put_le16(s + BPB_EXTFLAGS, b->ext_flags);
        qimg_put_le32(s + BPB_ROOTCLUS, b->root_cluster);
        qimg_put_le16(s + BPB_FSINFO, b->fsinfo_sector);
        qimg_put_le16(s + BPB_BKBOOTSEC, b->backup_boot_sector);
        ebr = s + EBR32;
    }
    ebr[EBR_DRVNUM] = b->drive_number;
    ebr[EBR_RESERVED1] = b->dirty;
    ebr[EBR_BOOTSIG] = 0x29;
    qimg_put_le32(ebr + EBR_VOLID, b->volume_id);
    memcpy(ebr + EBR_VOLLAB, b->label, 11);
    memcpy(ebr + EBR_FILSYSTYPE, f32 ? "FAT32   " : b->type == FAT16 ? "FAT16   " : "FAT12   ", 8);
    /* Not bootable: the jump lands on "int 18h" (no bootable disk), then halts. */
    uint8_t *code = ebr + EBR_FILSYSTYPE + 8;
    if (!b->no_boot_code) {
        code[0] = 0xCD;
        code[1] = 0x18;
        code[2] = 0xEB;
        code[3] = 0xFE;
    }
    s[BS_SIGNATURE] = 0x55;
    s[BS_SIGNATURE + 1] = 0xAA;
}

void fat_fsinfo_encode(uint8_t *s, size_t len, uint32_t free_count, uint32_t next_free)
{
    memset(s, 0, len);
    qimg_put_le32(s, 0x41615252);
    qimg_put_le32(s + 484, 0x61417272);
    qimg_put_le32(s + 488, free_count);
    qimg_put_le32(s + 492, next_free);
    qimg_put_le32(s + 508, 0xAA550000);
}

bool fat_fsinfo_parse(const uint8_t *s, uint32_t *free_count, uint32_t *next_free)
{
    if (qimg_le32(s) != 0x41615252 || qimg_le32(s + 484) != 0x61417272 ||
        qimg_le32(s + 508) != 0xAA550000)
        return false;
    *free_count = qimg_le32(s + 488);
    *next_free = qimg_le32(s + 492);
    return true;
}

/* Data clusters left when each FAT has fatsz sectors. */
static uint64_t fat_clusters_with(const struct fat_bpb *b, uint64_t fixed, uint64_t fatsz)
{
    uint64_t used = fixed + (uint64_t)b->num_fats * fatsz;
    return used < b->total_sectors ? (b->total_sectors - used) / b->sectors_per_cluster : 0;
}

static uint64_t fat_sectors_for(const struct fat_bpb *b, enum fat_type type, uint64_t clusters,
                                uint32_t align)
{
    uint64_t need = qimg_div_round_up(fat_bytes_for_entries(type, clusters + 2),
                                      b->bytes_per_sector);
    return qimg_div_round_up(need, align) * align;
}

/* Sizes the FAT: the smallest FAT (a multiple of align sectors) that covers
 * the clusters left after it.  Returns the clusters. */
static uint32_t size_fat(struct fat_bpb *b, enum fat_type type, uint32_t align)
{
    uint64_t fixed = (uint64_t)b->reserved_sectors +
                     qimg_div_round_up((uint64_t)b->root_entries * 32, b->bytes_per_sector);
    uint64_t fatsz = align;
    /* grow until the FAT covers the clusters left after it... */
    for (int i = 0; i < 64; i++) {
        uint64_t need = fat_sectors_for(b, type, fat_clusters_with(b, fixed, fatsz), align);
        if (need <= fatsz)
            break;
        fatsz = need;
    }
    /* ...then take the smallest size that still does */
    while (fatsz > align) {
        uint64_t smaller = fatsz - align;
        if (fat_sectors_for(b, type, fat_clusters_with(b, fixed, smaller), align) > smaller)
            break;
        fatsz = smaller;
    }
    b->fat_sectors = (uint32_t)fatsz;
    return (uint32_t)fat_clusters_with(b, fixed, fatsz);
}

int fat_choose_geometry(uint64_t size, struct fat_bpb *b)
{
    memset(b, 0, sizeof *b);
    b->bytes_per_sector = 512;
    b->num_fats = 2;
    b->media = 0xF8;
    b->drive_number = 0x80;
    /* The disk geometry mkfs.fat gives by size (sectors per track, heads);
     * like it, the volume ends on a whole track. */
    static const struct { uint64_t max_mib; uint16_t spt, heads; } geometry[] = {
        { 2, 16, 2 }, { 16, 32, 2 }, { 32, 32, 4 }, { 128, 32, 8 }, { 256, 32, 16 },
        { 504, 63, 16 }, { 1008, 63, 32 }, { 2016, 63, 64 }, { 4032, 63, 128 },
        { UINT64_MAX, 63, 255 },
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(geometry); i++) {
        if ((size >> 20) < geometry[i].max_mib ||
            ((size >> 20) == geometry[i].max_mib && !(size & ((1u << 20) - 1)))) {
            b->sectors_per_track = geometry[i].spt;
            b->heads = geometry[i].heads;
            break;
        }
    }
    uint64_t total = size / 512;
    if (total > 0xFFFFFFFFu)
        total = 0xFFFFFFFFu;
    total -= total % b->sectors_per_track;
    if (total < 128)
        return qimg_error(-ENOSPC, "a FAT filesystem needs at least 64 KiB (the device has %"
                          PRIu64 " bytes)", size);
    b->total_sectors = (uint32_t)total;
    uint64_t mib = size >> 20;
    /* Like mkfs.fat: FAT32 from 512 MiB, with Microsoft's cluster sizes. */
    if (size >= (512ull << 20)) {
        b->type = FAT32;
        b->sectors_per_cluster = mib > 32768 ? 64 : mib > 16384 ? 32 : mib > 8192 ? 16 : 8;
        b->reserved_sectors = (uint16_t)QIMG_MAX(32, b->sectors_per_cluster);
        b->root_cluster = 2;
        b->fsinfo_sector = 1;
        b->backup_boot_sector = 6;
        uint32_t clusters = size_fat(b, FAT32, b->sectors_per_cluster);
        if (clusters <= FAT16_MAX_CLUSTERS || clusters > FAT32_MAX_CLUSTERS)
            return qimg_error(-EINVAL, "no FAT32 layout for %" PRIu64 " bytes", size);
        return fat_bpb_derive(b, size);
    }
    /* FAT12 or FAT16, 2 KiB clusters doubled until the count fits; structures
     * aligned to clusters above 4 MiB, as mkfs.fat does. */
    b->root_entries = 512;
    for (unsigned spc = 4; spc <= 128; spc *= 2) {
        b->sectors_per_cluster = (uint8_t)spc;
        bool align = total > 8192;
        b->reserved_sectors = (uint16_t)(align ? spc : 1);
        if (size_fat(b, FAT12, align ? spc : 1) <= FAT12_MAX_CLUSTERS)
            return fat_bpb_derive(b, size);
        if (size_fat(b, FAT16, align ? spc : 1) <= FAT16_MAX_CLUSTERS)
            return fat_bpb_derive(b, size);
    }
    return qimg_error(-EINVAL, "no FAT layout for %" PRIu64 " bytes", size);
}

/* ------------------------------------------------------------ FAT entries */

uint64_t fat_bytes_for_entries(enum fat_type type, uint64_t n)
{
    switch (type) {
    case FAT12: return n + (n + 1) / 2;
    case FAT16: return n * 2;
    default: return n * 4;
    }
}

uint32_t fat_entry_get(const uint8_t *fat, enum fat_type type, uint32_t n)
{
    uint32_t v;
    switch (type) {
    case FAT12: {
        size_t off = n + n / 2;
        uint16_t w = qimg_le16(fat + off);
        v = (n & 1) ? w >> 4 : w & 0xFFF;
        if (v >= 0xFF8)
            return FAT_EOC;
        return v == 0xFF7 ? FAT_BAD : v;
    }
    case FAT16:
        v = qimg_le16(fat + (size_t)n * 2);
        if (v >= 0xFFF8)
            return FAT_EOC;
        return v == 0xFFF7 ? FAT_BAD : v;
    default:
        v = qimg_le32(fat + (size_t)n * 4) & 0x0FFFFFFF;
        if (v >= 0x0FFFFFF8)
            return FAT_EOC;
        return v;   /* 0x0FFFFFF7 is FAT_BAD already */
    }
}

void fat_entry_set(uint8_t *fat, enum fat_type type, uint32_t n, uint32_t value,
                   size_t *lo, size_t *hi)
{
    switch (type) {
    case FAT12: {
        uint16_t v = value == FAT_EOC ? 0xFFF : value == FAT_BAD ? 0xFF7 : (uint16_t)(value & 0xFFF);
        size_t off = n + n / 2;
        uint16_t w = qimg_le16(fat + off);
        w = (n & 1) ? (uint16_t)((w & 0x000F) | (v << 4)) : (uint16_t)((w & 0xF000) | v);
        qimg_put_le16(fat + off, w);
        *lo = off;
        *hi = off + 2;
        return;
    }
    case FAT16: {
        uint16_t v = value == FAT_EOC ? 0xFFFF : value == FAT_BAD ? 0xFFF7 : (uint16_t)value;
        qimg_put_le16(fat + (size_t)n * 2, v);
        *lo = (size_t)n * 2;
        *hi = *lo + 2;
        return;
    }
    default: {
        uint32_t old = qimg_le32(fat + (size_t)n * 4);
        qimg_put_le32(fat + (size_t)n * 4, (old & 0xF0000000) | (value & 0x0FFFFFFF));
        *lo = (size_t)n * 4;
        *hi = *lo + 4;
        return;
    }
    }
}

bool fat_entry1_clean(const uint8_t *fat, enum fat_type type)
{
    if (type == FAT16)
        return qimg_le16(fat + 2) & 0x8000;
    if (type == FAT32)
        return qimg_le32(fat + 4) & 0x08000000;
    return true;
}

/* ------------------------------------------------------ directory entries */

void fat_dirent_decode(const uint8_t *raw, struct fat_dirent *d)
{
    memcpy(d->name, raw, 11);
    d->attr = raw[11];
    d->ntres = raw[12];
    d->crt_tenth = raw[13];
    d->crt_time = qimg_le16(raw + 14);
    d->crt_date = qimg_le16(raw + 16);
    d->acc_date = qimg_le16(raw + 18);
    d->first_cluster = (uint32_t)qimg_le16(raw + 20) << 16 | qimg_le16(raw + 26);
    d->wrt_time = qimg_le16(raw + 22);
    d->wrt_date = qimg_le16(raw + 24);
    d->size = qimg_le32(raw + 28);
}

void fat_dirent_encode(const struct fat_dirent *d, uint8_t *raw)
{
    memcpy(raw, d->name, 11);
    raw[11] = d->attr;
    raw[12] = d->ntres;
    raw[13] = d->crt_tenth;
    qimg_put_le16(raw + 14, d->crt_time);
    qimg_put_le16(raw + 16, d->crt_date);
    qimg_put_le16(raw + 18, d->acc_date);
    qimg_put_le16(raw + 20, (uint16_t)(d->first_cluster >> 16));
    qimg_put_le16(raw + 22, d->wrt_time);
    qimg_put_le16(raw + 24, d->wrt_date);
    qimg_put_le16(raw + 26, (uint16_t)d->first_cluster);
    qimg_put_le32(raw + 28, d->size);
}

bool fat_raw_is_dot(const uint8_t *raw)
{
    return !memcmp(raw, ".          ", 11) || !memcmp(raw, "..         ", 11);
}

/* --------------------------------------------------------------- times */

/* days from 1970-01-01 to y-m-d (proleptic Gregorian) */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void fat_time_encode(int64_t t, uint32_t ns, uint16_t *date, uint16_t *tm, uint8_t *tenth)
{
    int64_t lo = days_from_civil(1980, 1, 1) * 86400;
    int64_t hi = days_from_civil(2107, 12, 31) * 86400 + 86399;
    if (t < lo) {
        t = lo;
        ns = 0;
    }
    if (t > hi) {
        t = hi;
        ns = 0;
    }
    time_t tt = (time_t)t;
    struct tm g;
    gmtime_r(&tt, &g);
    *date = (uint16_t)((g.tm_year + 1900 - 1980) << 9 | (g.tm_mon + 1) << 5 | g.tm_mday);
    *tm = (uint16_t)(g.tm_hour << 11 | g.tm_min << 5 | g.tm_sec / 2);
    if (tenth)
        *tenth = (uint8_t)((g.tm_sec & 1) * 100 + ns / 10000000);
}

int64_t fat_time_decode(uint16_t date, uint16_t tm, uint8_t tenth, uint32_t *ns)
{
    if (ns)
        *ns = 0;
    if (date == 0)
        return 0;
    unsigned y = 1980 + (date >> 9), m = (date >> 5) & 15, d = date & 31;
    if (m < 1 || m > 12)
        m = 1;
    if (d < 1)
        d = 1;
    unsigned h = tm >> 11, mi = (tm >> 5) & 63, s = (tm & 31) * 2;
    int64_t t = days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + s;
    if (tenth <= 199) {
        t += tenth / 100;
        if (ns)
            *ns = (uint32_t)(tenth % 100) * 10000000u;
    }
    return t;
}
