/* The on-disk structures of FAT12/16/32 with VFAT long names, written from
 * Microsoft's FAT specification (fatgen103): the boot sector and its BPB,
 * the FSInfo sector, FAT entries, directory entries, long-name entries,
 * short-name (8.3) generation and date/time fields.
 *
 * Pure functions over byte buffers, no I/O (fat-format.c: boot sector,
 * FAT entries, directory entries, times; fat-names.c: names), shared by the
 * FAT filesystem driver (fat*.c) and the synthesized-FAT (vvfat) driver.
 *
 * Times: FAT stores local time with no zone.  We read and write it as UTC. */
#ifndef QIMG_FAT_FORMAT_H
#define QIMG_FAT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ boot sector */

enum fat_type { FAT12 = 12, FAT16 = 16, FAT32 = 32 };

/* Cluster counts that separate the types (fatgen103: "< 4085" is FAT12,
 * "< 65525" is FAT16, anything larger FAT32). */
#define FAT12_MAX_CLUSTERS 4084u
#define FAT16_MAX_CLUSTERS 65524u
#define FAT32_MAX_CLUSTERS 0x0FFFFFF5u   /* cluster numbers stay below 0x0FFFFFF7 */

struct fat_bpb {
    uint16_t bytes_per_sector;
    uint8_t sectors_per_cluster;
    uint16_t reserved_sectors;
    uint8_t num_fats;
    uint16_t root_entries;       /* FAT12/16 fixed root; 0 on FAT32 */
    uint32_t total_sectors;
    uint8_t media;
    uint32_t fat_sectors;        /* sectors of one FAT */
    uint16_t sectors_per_track, heads;
    uint32_t hidden_sectors;
    /* FAT32 only */
    uint16_t ext_flags;          /* bit 7: only one FAT active, bits 0-3: which */
    uint32_t root_cluster;
    uint16_t fsinfo_sector, backup_boot_sector;
    /* extended boot record */
    uint8_t drive_number;
    uint8_t dirty;               /* "reserved1" byte: bit 0 = not cleanly unmounted */
    bool has_volume_id;          /* boot signature 0x29 */
    uint32_t volume_id;
    char label[11];
    char oem[8];

    /* derived by fat_bpb_parse / fat_bpb_derive */
    enum fat_type type;
    uint32_t root_dir_sectors;   /* fixed root region (FAT12/16) */
    uint32_t first_fat_sector;
    uint32_t first_root_sector;  /* FAT12/16 */
    uint32_t first_data_sector;
    uint32_t clusters;           /* data clusters: numbered 2 .. clusters + 1 */
    uint32_t cluster_bytes;

    /* encoding choices (0/false: fat_bpb_encode's defaults) */
    uint8_t jump_offset;         /* the jump's second byte (qemu's vvfat: 0x3E) */
    bool no_boot_code;           /* leave the code area zero (as qemu's vvfat) */
};

/* Parses and checks a boot sector (at least 512 bytes).  dev_size is the
 * size of the device: every region must lie inside it.  Returns 0, or
 * -EINVAL with a clear message (qimg_error) when it is not a sane FAT. */
int fat_bpb_parse(const uint8_t *sector, uint64_t dev_size, struct fat_bpb *bpb);
/* Fills the derived fields from the stored ones and checks them. */
int fat_bpb_derive(struct fat_bpb *bpb, uint64_t dev_size);
/* True when sector looks like a FAT boot sector (the quick test of probe). */
bool fat_boot_sector_plausible(const uint8_t *sector);
/* Encodes a boot sector (bytes_per_sector bytes, zero-filled first). */
void fat_bpb_encode(const struct fat_bpb *bpb, uint8_t *sector);
/* Encodes the FAT32 FSInfo sector (bytes_per_sector bytes). */
void fat_fsinfo_encode(uint8_t *sector, size_t len, uint32_t free_count, uint32_t next_free);
/* Reads the FSInfo free count and next free hint; false when the sector
 * does not carry the signatures. */
bool fat_fsinfo_parse(const uint8_t *sector, uint32_t *free_count, uint32_t *next_free);

/* The layout mkfs.fat picks by default for a device of size bytes (FAT type,
 * cluster size, reserved sectors aligned to clusters, 512 root entries,
 * 2 FATs, media 0xF8); label and volume id are left to the caller. */
int fat_choose_geometry(uint64_t size, struct fat_bpb *bpb);

/* ------------------------------------------------------------ FAT entries */

#define FAT_FREE 0u
/* Normalized values returned by fat_entry_get for every type. */
#define FAT_BAD 0x0FFFFFF7u
#define FAT_EOC 0x0FFFFFFFu

/* Entry n of a FAT held in fat (fat_bytes long); FAT32 entries lose their
 * top four bits, bad and end-of-chain markers come back as FAT_BAD/FAT_EOC. */
uint32_t fat_entry_get(const uint8_t *fat, enum fat_type type, uint32_t n);
/* Sets entry n (FAT_EOC / FAT_BAD are turned into the type's marker; FAT32
 * keeps the top four bits).  Gives the byte range touched in *lo, *hi. */
void fat_entry_set(uint8_t *fat, enum fat_type type, uint32_t n, uint32_t value,
                   size_t *lo, size_t *hi);
/* Bytes of FAT for n entries. */
uint64_t fat_bytes_for_entries(enum fat_type type, uint64_t n);
/* The clean-shutdown bit of entry 1 (FAT16/32; FAT12 has none: true). */
bool fat_entry1_clean(const uint8_t *fat, enum fat_type type);

/* ------------------------------------------------------ directory entries */

#define FAT_DIRENT_SIZE 32
#define FAT_ATTR_READ_ONLY 0x01
#define FAT_ATTR_HIDDEN 0x02
#define FAT_ATTR_SYSTEM 0x04
#define FAT_ATTR_VOLUME_ID 0x08
#define FAT_ATTR_DIRECTORY 0x10
#define FAT_ATTR_ARCHIVE 0x20
#define FAT_ATTR_LONG_NAME 0x0F
#define FAT_ATTR_LONG_MASK 0x3F
/* NT reserved byte: the short name's base / extension is lower case. */
#define FAT_NTRES_LOWER_BASE 0x08
#define FAT_NTRES_LOWER_EXT 0x10
#define FAT_DELETED 0xE5
#define FAT_LFN_LAST 0x40
#define FAT_LFN_CHARS 13
#define FAT_MAX_LFN 255           /* UTF-16 units */
#define FAT_MAX_DIR_ENTRIES 65536 /* the spec's limit on one directory */

struct fat_dirent {
    uint8_t name[11];
    uint8_t attr, ntres, crt_tenth;
    uint16_t crt_time, crt_date, acc_date, wrt_time, wrt_date;
    uint32_t first_cluster;       /* hi and lo halves joined */
    uint32_t size;
};

void fat_dirent_decode(const uint8_t *raw, struct fat_dirent *d);
void fat_dirent_encode(const struct fat_dirent *d, uint8_t *raw);
static inline bool fat_raw_is_lfn(const uint8_t *raw)
{
    return (raw[11] & FAT_ATTR_LONG_MASK) == FAT_ATTR_LONG_NAME;
}
/* "." and ".." entries */
bool fat_raw_is_dot(const uint8_t *raw);
/* The short name as text: base and extension trimmed, lower-cased by the
 * NT bits, 0x05 in the first byte read as 0xE5, bytes >= 0x80 read in code
 * page 850 (mtools' default).  UTF-16: out holds 12 units, returns the
 * length; UTF-8: out holds FAT_SHORT_TEXT_MAX bytes. */
#define FAT_SHORT_TEXT_MAX 40
size_t fat_short_name_utf16(const uint8_t name[11], uint8_t ntres, uint16_t *out);
void fat_short_name_text(const uint8_t name[11], uint8_t ntres, char *out);

/* ------------------------------------------------------------- long names */

uint8_t fat_lfn_checksum(const uint8_t name[11]);
/* Fills one long-name entry: ord is 1-based (FAT_LFN_LAST added for the
 * last), holding units [13 * (ord-1), 13 * ord) of the name of len units. */
void fat_lfn_encode(uint8_t *raw, unsigned ord, bool last, const uint16_t *name, size_t len,
                    uint8_t checksum);
/* Lays out the directory entries of one name at out: nlfn long-name
 * entries (0 when the name needs none; the last ordinal first, as on disk)
 * then the short entry ent, whose name gives the checksum.  Returns
 * nlfn + 1, the entries written. */
unsigned fat_name_entries(const uint16_t *name, size_t len, unsigned nlfn, const uint8_t *ent,
                          uint8_t *out);
/* Copies the 13 units of a long-name entry into out (13 units). */
void fat_lfn_units(const uint8_t *raw, uint16_t *out);
/* Number of long-name entries for a name of len units. */
static inline unsigned fat_lfn_entries(size_t len) { return (unsigned)((len + 12) / 13); }

/* UTF-8 -> UTF-16 (surrogate pairs for the astral planes).  -EINVAL on bad
 * UTF-8, -ENAMETOOLONG past max units.  No error message set. */
int fat_utf8_to_utf16(const char *s, uint16_t *out, size_t max, size_t *len);
/* UTF-16 -> UTF-8 (NUL-terminated; unpaired surrogates become U+FFFD); out
 * must hold 3 * len + 1 bytes. */
void fat_utf16_to_utf8(const uint16_t *in, size_t len, char *out);
/* Simple upper-case mapping used to compare names the way Windows does. */
uint16_t fat_upcase(uint16_t c);
bool fat_name_equal_nocase(const uint16_t *a, size_t alen, const uint16_t *b, size_t blen);

/* Checks a name can be stored: not empty, no '/', '\\', ':', '*', '?', '"',
 * '<', '>', '|' or control characters, no trailing dot or space, at most 255
 * UTF-16 units.  -EINVAL / -ENAMETOOLONG with a message. */
int fat_check_long_name(const char *name, uint16_t *u16, size_t *len);

/* How to store a name: when the name is a valid 8.3 name (upper case, or a
 * lower-case base and/or extension) it needs no long-name entries:
 * *needs_lfn = false, short_name and *ntres are final.  Otherwise
 * short_name holds the basis name (fatgen103's basis-name generation) and
 * *needs_tail says whether a "~N" tail is required (name truncated or
 * lossy); the caller adds the tail with fat_short_name_with_tail. */
void fat_short_name_basis(const uint16_t *name, size_t len, uint8_t short_name[11],
                          uint8_t *ntres, bool *needs_lfn, bool *needs_tail);
/* basis with "~n" put into the base part (n >= 1, <= 999999). */
void fat_short_name_with_tail(const uint8_t basis[11], unsigned n, uint8_t out[11]);
/* When short_name has the form of basis with a "~n" tail, gives n. */
bool fat_short_name_tail_of(const uint8_t basis[11], const uint8_t short_name[11],
                            unsigned *n);

/* --------------------------------------------------------------- times */

/* seconds since the epoch (UTC) -> FAT date/time (2-second resolution) and
 * the creation tenth (units of 10 ms, 0..199).  Clamped to 1980..2107. */
void fat_time_encode(int64_t t, uint32_t ns, uint16_t *date, uint16_t *time, uint8_t *tenth);
/* FAT date/time (+ tenth, 0 when absent) -> seconds since the epoch (UTC);
 * a zero date gives 0. */
int64_t fat_time_decode(uint16_t date, uint16_t time, uint8_t tenth, uint32_t *ns);

#endif
