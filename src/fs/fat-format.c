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
    s[1] = f32 ? 0x58 : 0x3C;
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
    code[0] = 0xCD;
    code[1] = 0x18;
    code[2] = 0xEB;
    code[3] = 0xFE;
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

/* Sizes the FAT for total sectors: the smallest FAT (rounded to align
 * sectors) that covers the clusters left after it.  Returns the clusters. */
static uint32_t size_fat(struct fat_bpb *b, enum fat_type type, uint32_t align)
{
    uint64_t fixed = (uint64_t)b->reserved_sectors +
                     qimg_div_round_up((uint64_t)b->root_entries * 32, b->bytes_per_sector);
    uint64_t fatsz = 1, clusters = 0;
    for (int i = 0; i < 64; i++) {
        uint64_t used = fixed + (uint64_t)b->num_fats * fatsz;
        clusters = used < b->total_sectors ? (b->total_sectors - used) / b->sectors_per_cluster : 0;
        uint64_t need = qimg_div_round_up(fat_bytes_for_entries(type, clusters + 2),
                                          b->bytes_per_sector);
        need = qimg_div_round_up(need, align) * align;
        if (need <= fatsz)
            break;
        fatsz = need;
    }
    b->fat_sectors = (uint32_t)fatsz;
    return (uint32_t)clusters;
}

int fat_choose_geometry(uint64_t size, struct fat_bpb *b)
{
    memset(b, 0, sizeof *b);
    b->bytes_per_sector = 512;
    b->num_fats = 2;
    b->media = 0xF8;
    b->drive_number = 0x80;
    b->sectors_per_track = 63;
    b->heads = 255;
    uint64_t total = size / 512;
    if (total > 0xFFFFFFFFu)
        total = 0xFFFFFFFFu;
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

/* Code page 850 (mtools' default OEM code page, Western Europe), 0x80..0xFF. */
static const uint16_t oem_high[128] = {
    0x00C7, 0x00FC, 0x00E9, 0x00E2, 0x00E4, 0x00E0, 0x00E5, 0x00E7,
    0x00EA, 0x00EB, 0x00E8, 0x00EF, 0x00EE, 0x00EC, 0x00C4, 0x00C5,
    0x00C9, 0x00E6, 0x00C6, 0x00F4, 0x00F6, 0x00F2, 0x00FB, 0x00F9,
    0x00FF, 0x00D6, 0x00DC, 0x00F8, 0x00A3, 0x00D8, 0x00D7, 0x0192,
    0x00E1, 0x00ED, 0x00F3, 0x00FA, 0x00F1, 0x00D1, 0x00AA, 0x00BA,
    0x00BF, 0x00AE, 0x00AC, 0x00BD, 0x00BC, 0x00A1, 0x00AB, 0x00BB,
    0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x00C1, 0x00C2, 0x00C0,
    0x00A9, 0x2563, 0x2551, 0x2557, 0x255D, 0x00A2, 0x00A5, 0x2510,
    0x2514, 0x2534, 0x252C, 0x251C, 0x2500, 0x253C, 0x00E3, 0x00C3,
    0x255A, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256C, 0x00A4,
    0x00F0, 0x00D0, 0x00CA, 0x00CB, 0x00C8, 0x0131, 0x00CD, 0x00CE,
    0x00CF, 0x2518, 0x250C, 0x2588, 0x2584, 0x00A6, 0x00CC, 0x2580,
    0x00D3, 0x00DF, 0x00D4, 0x00D2, 0x00F5, 0x00D5, 0x00B5, 0x00FE,
    0x00DE, 0x00DA, 0x00DB, 0x00D9, 0x00FD, 0x00DD, 0x00AF, 0x00B4,
    0x00AD, 0x00B1, 0x2017, 0x00BE, 0x00B6, 0x00A7, 0x00F7, 0x00B8,
    0x00B0, 0x00A8, 0x00B7, 0x00B9, 0x00B3, 0x00B2, 0x25A0, 0x00A0,
};

/* Lower case of ASCII and Latin-1 letters (for the NT case bits). */
static uint16_t downcase(uint16_t c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7))
        return (uint16_t)(c + 32);
    return c;
}

size_t fat_short_name_utf16(const uint8_t name[11], uint8_t ntres, uint16_t *out)
{
    size_t n = 0;
    int base_end = 8, ext_end = 11;
    while (base_end > 0 && name[base_end - 1] == ' ')
        base_end--;
    while (ext_end > 8 && name[ext_end - 1] == ' ')
        ext_end--;
    for (int i = 0; i < ext_end; i++) {
        if (i >= base_end && i < 8)
            continue;
        if (i == 8)
            out[n++] = '.';
        uint8_t c = (i == 0 && name[0] == 0x05) ? 0xE5 : name[i];
        uint8_t lower = i < 8 ? FAT_NTRES_LOWER_BASE : FAT_NTRES_LOWER_EXT;
        uint16_t u = c >= 0x80 ? oem_high[c - 0x80] : (c < 0x20 || c == '/') ? '_' : c;
        out[n++] = (ntres & lower) ? downcase(u) : u;
    }
    return n;
}

void fat_short_name_text(const uint8_t name[11], uint8_t ntres, char *out)
{
    uint16_t u[12];
    size_t n = fat_short_name_utf16(name, ntres, u);
    fat_utf16_to_utf8(u, n, out);
}

/* ------------------------------------------------------------- long names */

uint8_t fat_lfn_checksum(const uint8_t name[11])
{
    uint8_t sum = 0;
    for (int i = 0; i < 11; i++)
        sum = (uint8_t)(((sum & 1) << 7) + (sum >> 1) + name[i]);
    return sum;
}

/* Byte offsets of the 13 UTF-16 units in a long-name entry. */
static const uint8_t lfn_unit_offsets[FAT_LFN_CHARS] = {
    1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30,
};

void fat_lfn_encode(uint8_t *raw, unsigned ord, bool last, const uint16_t *name, size_t len,
                    uint8_t checksum)
{
    memset(raw, 0, FAT_DIRENT_SIZE);
    raw[0] = (uint8_t)(ord | (last ? FAT_LFN_LAST : 0));
    raw[11] = FAT_ATTR_LONG_NAME;
    raw[13] = checksum;
    size_t base = (size_t)(ord - 1) * FAT_LFN_CHARS;
    for (size_t i = 0; i < FAT_LFN_CHARS; i++) {
        size_t k = base + i;
        /* the name ends with a NUL unit, then 0xFFFF padding */
        uint16_t u = k < len ? name[k] : k == len ? 0 : 0xFFFF;
        qimg_put_le16(raw + lfn_unit_offsets[i], u);
    }
}

void fat_lfn_units(const uint8_t *raw, uint16_t *out)
{
    for (size_t i = 0; i < FAT_LFN_CHARS; i++)
        out[i] = qimg_le16(raw + lfn_unit_offsets[i]);
}

int fat_utf8_to_utf16(const char *str, uint16_t *out, size_t max, size_t *len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t n = 0;
    while (*s) {
        uint32_t cp;
        int extra;
        if (*s < 0x80) {
            cp = *s;
            extra = 0;
        } else if ((*s & 0xE0) == 0xC0) {
            cp = *s & 0x1F;
            extra = 1;
        } else if ((*s & 0xF0) == 0xE0) {
            cp = *s & 0x0F;
            extra = 2;
        } else if ((*s & 0xF8) == 0xF0) {
            cp = *s & 0x07;
            extra = 3;
        } else {
            return -EINVAL;
        }
        s++;
        for (int i = 0; i < extra; i++, s++) {
            if ((*s & 0xC0) != 0x80)
                return -EINVAL;
            cp = cp << 6 | (*s & 0x3F);
        }
        static const uint32_t min_cp[4] = { 0, 0x80, 0x800, 0x10000 };
        if (cp < min_cp[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -EINVAL;
        if (cp >= 0x10000) {
            if (n + 2 > max)
                return -ENAMETOOLONG;
            cp -= 0x10000;
            out[n++] = (uint16_t)(0xD800 | (cp >> 10));
            out[n++] = (uint16_t)(0xDC00 | (cp & 0x3FF));
        } else {
            if (n + 1 > max)
                return -ENAMETOOLONG;
            out[n++] = (uint16_t)cp;
        }
    }
    *len = n;
    return 0;
}

void fat_utf16_to_utf8(const uint16_t *in, size_t len, char *out)
{
    uint8_t *o = (uint8_t *)out;
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = in[i];
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < len && in[i + 1] >= 0xDC00 &&
            in[i + 1] <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (in[i + 1] - 0xDC00);
            i++;
        } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            cp = 0xFFFD;
        }
        if (cp < 0x80) {
            *o++ = (uint8_t)cp;
        } else if (cp < 0x800) {
            *o++ = (uint8_t)(0xC0 | cp >> 6);
            *o++ = (uint8_t)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *o++ = (uint8_t)(0xE0 | cp >> 12);
            *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (uint8_t)(0x80 | (cp & 0x3F));
        } else {
            *o++ = (uint8_t)(0xF0 | cp >> 18);
            *o++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (uint8_t)(0x80 | (cp & 0x3F));
        }
    }
    *o = 0;
}

uint16_t fat_upcase(uint16_t c)
{
    if (c >= 'a' && c <= 'z')
        return (uint16_t)(c - 32);
    if (c < 0xE0)
        return c;
    if (c <= 0xFE)
        return c == 0xF7 ? c : (uint16_t)(c - 32);        /* Latin-1 */
    if (c == 0xFF)
        return 0x178;
    if (c >= 0x100 && c <= 0x17F) {                         /* Latin Extended-A pairs */
        bool odd_lower = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
        if (c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17F)
            return c;
        if (odd_lower)
            return (c & 1) ? c : (uint16_t)(c - 1);
        return (c & 1) ? (uint16_t)(c - 1) : c;
    }
    if (c >= 0x3B1 && c <= 0x3CB && c != 0x3C2)           /* Greek */
        return (uint16_t)(c - 32);
    if (c >= 0x430 && c <= 0x44F)                           /* Cyrillic */
        return (uint16_t)(c - 32);
    if (c >= 0x450 && c <= 0x45F)
        return (uint16_t)(c - 80);
    if (c >= 0xFF41 && c <= 0xFF5A)                         /* full-width Latin */
        return (uint16_t)(c - 32);
    return c;
}

bool fat_name_equal_nocase(const uint16_t *a, size_t alen, const uint16_t *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (a[i] != b[i] && fat_upcase(a[i]) != fat_upcase(b[i]))
            return false;
    return true;
}

int fat_check_long_name(const char *name, uint16_t *u16, size_t *len)
{
    size_t n = strlen(name);
    if (n == 0 || !strcmp(name, ".") || !strcmp(name, ".."))
        return qimg_error(-EINVAL, "invalid file name '%s'", name);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || strchr("/\\:*?\"<>|", *p))
            return qimg_error(-EINVAL, "the name '%s' cannot be stored on FAT (character "
                              "'%c' is not allowed)", name, *p < 0x20 ? '?' : *p);
    }
    if (name[n - 1] == '.' || name[n - 1] == ' ')
        return qimg_error(-EINVAL, "the name '%s' cannot be stored on FAT (it ends with a "
                          "dot or a space)", name);
    int r = fat_utf8_to_utf16(name, u16, FAT_MAX_LFN, len);
    if (r == -ENAMETOOLONG)
        return qimg_error(r, "the name '%s' is longer than FAT's 255 characters", name);
    if (r < 0)
        return qimg_error(r, "the name '%s' is not valid UTF-8", name);
    return 0;
}

/* Characters allowed in a short name besides A-Z and 0-9. */
static bool short_char_ok(uint16_t c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c < 0x80 && strchr("$%'-_@~`!(){}^#&", (int)c) && c != 0;
}

/* The name as a plain 8.3 name: ASCII short-name characters (either case),
 * base 1-8, extension 0-3, at most one dot.  Fills the upper-case form and
 * the NT lower-case bits; false when the case is mixed within a part. */
static bool as_plain_83(const uint16_t *name, size_t len, uint8_t out[11], uint8_t *ntres)
{
    memset(out, ' ', 11);
    *ntres = 0;
    size_t dot = len;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (dot != len)
                return false;
            dot = i;
        }
    }
    size_t base = dot, ext = dot == len ? 0 : len - dot - 1;
    if (base == 0 || base > 8 || ext > 3 || (dot != len && ext == 0))
        return false;
    for (int part = 0; part < 2; part++) {
        size_t from = part ? dot + 1 : 0, n = part ? ext : base;
        bool lower = false, upper = false;
        for (size_t i = 0; i < n; i++) {
            uint16_t c = name[from + i];
            if (c >= 'a' && c <= 'z') {
                lower = true;
                c = (uint16_t)(c - 32);
            } else if (c >= 'A' && c <= 'Z') {
                upper = true;
            }
            if (!short_char_ok(c))
                return false;
            out[(part ? 8 : 0) + i] = (uint8_t)c;
        }
        if (lower && upper)
            return false;
        if (lower)
            *ntres |= part ? FAT_NTRES_LOWER_EXT : FAT_NTRES_LOWER_BASE;
    }
    if (out[0] == 0xE5)
        out[0] = 0x05;
    return true;
}

void fat_short_name_basis(const uint16_t *name, size_t len, uint8_t sn[11], uint8_t *ntres,
                          bool *needs_lfn, bool *needs_tail)
{
    if (as_plain_83(name, len, sn, ntres)) {
        *needs_lfn = false;
        *needs_tail = false;
        return;
    }
    *needs_lfn = true;
    *ntres = 0;
    memset(sn, ' ', 11);
    bool lossy = false;
    /* the extension: after the last dot (a leading dot does not count) */
    size_t last_dot = len;
    for (size_t i = len; i-- > 0;) {
        if (name[i] == '.') {
            last_dot = i;
            break;
        }
    }
    size_t start = 0;
    while (start < len && (name[start] == '.' || name[start] == ' ')) {
        start++;
        lossy = true;
    }
    if (last_dot < start)
        last_dot = len;
    size_t nb = 0;
    for (size_t i = start; i < last_dot; i++) {
        uint16_t c = fat_upcase(name[i]);
        if (c == ' ' || c == '.') {
            lossy = true;   /* embedded spaces and dots are dropped */
            continue;
        }
        if (!short_char_ok(c)) {
            c = '_';
            lossy = true;
        }
        if (nb == 8) {
            lossy = true;   /* truncated */
            break;
        }
        sn[nb++] = (uint8_t)c;
    }
    size_t ne = 0;
    for (size_t i = last_dot + 1; i < len; i++) {
        uint16_t c = fat_upcase(name[i]);
        if (c == ' ') {
            lossy = true;
            continue;
        }
        if (!short_char_ok(c)) {
            c = '_';
            lossy = true;
        }
        if (ne == 3) {
            lossy = true;
            break;
        }
        sn[8 + ne++] = (uint8_t)c;
    }
    if (nb == 0) {
        sn[0] = '_';
        lossy = true;
    }
    *needs_tail = lossy;
}

void fat_short_name_with_tail(const uint8_t basis[11], unsigned n, uint8_t out[11])
{
    char tail[9];
    int tl = snprintf(tail, sizeof tail, "~%u", n);
    memcpy(out, basis, 11);
    int base_len = 8;
    while (base_len > 0 && basis[base_len - 1] == ' ')
        base_len--;
    int keep = QIMG_MIN(base_len, 8 - tl);
    memcpy(out + keep, tail, (size_t)tl);
    for (int i = keep + tl; i < 8; i++)
        out[i] = ' ';
}

bool fat_short_name_tail_of(const uint8_t basis[11], const uint8_t sn[11], unsigned *n)
{
    if (memcmp(basis + 8, sn + 8, 3))
        return false;
    int tilde = -1;
    for (int i = 7; i >= 0; i--) {
        if (sn[i] == '~') {
            tilde = i;
            break;
        }
    }
    if (tilde < 0 || memcmp(sn, basis, (size_t)tilde))
        return false;
    unsigned v = 0;
    int i = tilde + 1, digits = 0;
    for (; i < 8 && sn[i] >= '0' && sn[i] <= '9'; i++, digits++)
        v = v * 10 + (unsigned)(sn[i] - '0');
    for (int j = i; j < 8; j++)
        if (sn[j] != ' ')
            return false;
    if (!digits || !v)
        return false;
    *n = v;
    return true;
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
