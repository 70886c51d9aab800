/* Making a FAT filesystem (the layout mkfs.fat picks by default) and the
 * smallest size that holds a tree. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "fat-int.h"
#include "internal.h"
#include "util.h"

/* The label as 11 upper-case bytes; "NO NAME" when none. */
static int encode_label(const char *label, char out[11], bool *given)
{
    memset(out, ' ', 11);
    *given = label && *label;
    if (!*given) {
        memcpy(out, "NO NAME", 7);
        return 0;
    }
    size_t n = strlen(label);
    if (n > 11)
        return qimg_error(-EINVAL, "FAT labels are at most 11 characters: '%s'", label);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)label[i];
        if (c < 0x20 || c >= 0x7F || strchr("\"*+,./:;<=>?[\\]|", c))
            return qimg_error(-EINVAL, "invalid character '%c' in FAT label '%s'",
                              c < 0x20 || c >= 0x7f ? '?' : c, label);
        out[i] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
    }
    return 0;
}

static uint32_t volume_id(const struct qimg_mkfs_params *p)
{
    uint32_t id = 0;
    if (p->reproducible)
        qimg_fs_derive_bytes(p->seed, "fat volume id", &id, sizeof id);
    else if (getrandom(&id, sizeof id, 0) != sizeof id)
        id = (uint32_t)time(NULL) ^ (uint32_t)clock();
    return id;
}

int fat_mkfs(struct qimg_fs_dev *dev, const struct qimg_mkfs_params *p)
{
    struct fat_bpb b;
    int r = fat_choose_geometry(dev->size, &b);
    if (r < 0)
        return r;
    bool labelled;
    r = encode_label(p->label, b.label, &labelled);
    if (r < 0)
        return r;
    b.volume_id = volume_id(p);
    b.hidden_sectors = dev->offset / 512 > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)(dev->offset / 512);
    int64_t now = p->reproducible ? p->now : (int64_t)time(NULL);
    unsigned bps = b.bytes_per_sector;

    /* Everything before the data area, and the FAT32 root cluster, zeroed. */
    r = qimg_fs_dev_zero(dev, 0, (uint64_t)b.first_data_sector * bps);
    uint32_t root_cl = b.type == FAT32 ? b.root_cluster : 0;
    uint64_t root_off = root_cl ? ((uint64_t)b.first_data_sector +
                                   (uint64_t)(root_cl - 2) * b.sectors_per_cluster) * bps
                                : (uint64_t)b.first_root_sector * bps;
    if (r == 0 && root_cl)
        r = qimg_fs_dev_zero(dev, root_off, b.cluster_bytes);
    if (r < 0)
        return r;

    CLEANUP_FREE uint8_t *sec = qimg_xcalloc(1, bps);
    fat_bpb_encode(&b, sec);
    r = qimg_fs_dev_write(dev, 0, sec, bps);
    if (r == 0 && b.type == FAT32)
        r = qimg_fs_dev_write(dev, (uint64_t)b.backup_boot_sector * bps, sec, bps);
    if (r < 0)
        return r;
    if (b.type == FAT32) {
        fat_fsinfo_encode(sec, bps, b.clusters - 1, root_cl + 1);
        r = qimg_fs_dev_write(dev, (uint64_t)b.fsinfo_sector * bps, sec, bps);
        if (r == 0)
            r = qimg_fs_dev_write(dev, (uint64_t)(b.backup_boot_sector + 1) * bps, sec, bps);
        if (r < 0)
            return r;
    }

    /* FAT entries 0 (media), 1 (end of chain, clean) and the FAT32 root. */
    memset(sec, 0, bps);
    size_t lo, hi;
    fat_entry_set(sec, b.type, 0, (b.type == FAT32 ? 0x0FFFFF00u : 0xFFFFFF00u) | b.media, &lo, &hi);
    fat_entry_set(sec, b.type, 1, FAT_EOC, &lo, &hi);
    if (b.type == FAT32)
        qimg_put_le32(sec + 4, 0x0FFFFFFF);
    if (root_cl)
        fat_entry_set(sec, b.type, root_cl, FAT_EOC, &lo, &hi);
    for (unsigned k = 0; k < b.num_fats; k++) {
        r = qimg_fs_dev_write(dev, ((uint64_t)b.first_fat_sector + (uint64_t)k * b.fat_sectors) * bps,
                              sec, bps);
        if (r < 0)
            return r;
    }

    if (labelled) {
        struct fat_dirent d;
        memset(&d, 0, sizeof d);
        memcpy(d.name, b.label, 11);
        d.attr = FAT_ATTR_VOLUME_ID;
        fat_time_encode(now, 0, &d.wrt_date, &d.wrt_time, NULL);
        d.crt_date = d.wrt_date;
        d.crt_time = d.wrt_time;
        d.acc_date = d.wrt_date;
        uint8_t raw[FAT_DIRENT_SIZE];
        fat_dirent_encode(&d, raw);
        r = qimg_fs_dev_write(dev, root_off, raw, sizeof raw);
        if (r < 0)
            return r;
    }
    return qimg_fs_dev_flush(dev);
}

/* Clusters a tree needs with clusters of cs bytes (upper bound). */
static uint64_t clusters_needed(const struct qimg_fs_usage *u, uint64_t cs)
{
    /* files: their data, each rounded up to whole clusters; hard links
     * become copies on FAT, counted at the average file size */
    uint64_t files = u->files + u->hardlinks;
    uint64_t avg = u->files ? u->data_bytes / u->files : 0;
    uint64_t data = u->data_bytes + u->hardlinks * avg;
    uint64_t n = data / cs + files;
    /* directory entries: one short entry and the long-name entries (13
     * UTF-16 units each; UTF-8 bytes are an upper bound) per name, and "."
     * and ".." per directory */
    uint64_t names = files + u->dirs + u->symlinks + u->others;
    uint64_t slots = names * 2 + u->name_bytes / FAT_LFN_CHARS + u->dirs * 2;
    n += qimg_div_round_up(slots * FAT_DIRENT_SIZE, cs) + u->dirs + 1;
    return n;
}

int fat_min_size(const struct qimg_fs_usage *u, const struct qimg_mkfs_params *p, uint64_t *size)
{
    /* The root directory of FAT12/16 has 512 entries: a tree whose top
     * directory needs more (with long names and the label) gets FAT32.
     * When the walker did not count the top directory alone, the largest
     * directory stands in for it. */
    uint64_t root_slots;
    if (u->root_entries) {
        root_slots = 1 + u->root_entries * 2 + u->root_name_bytes / FAT_LFN_CHARS;
    } else {
        uint64_t names = u->files + u->dirs + u->symlinks + u->others;
        uint64_t avg_name = names ? u->name_bytes / names : 0;
        root_slots = 1 + u->max_dir_entries * (1 + qimg_div_round_up(avg_name + 1, FAT_LFN_CHARS));
    }
    uint64_t s = root_slots > 512 ? (512ull << 20) : (1ull << 20);
    for (int i = 0; i < 200; i++) {
        struct fat_bpb b;
        int r = fat_choose_geometry(s, &b);
        if (r == 0) {
            uint64_t cs = b.cluster_bytes;
            uint64_t need = clusters_needed(u, cs) * cs;
            uint64_t want = need + need / 10 + (1ull << 20);
            uint64_t have = (uint64_t)b.clusters * cs;
            if (have >= want) {
                *size = qimg_div_round_up(s, 1 << 20) << 20;
                return 0;
            }
            s += QIMG_MAX(want - have, s / 32);
        } else {
            qimg_error_clear();
            s += 1 << 20;
        }
        s = qimg_div_round_up(s, 1 << 20) << 20;
        if (s > (2ull << 40))
            break;
    }
    return qimg_error(-EFBIG, "the tree is too large for a FAT filesystem");
}
