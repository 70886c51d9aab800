/* The FAT12/16/32 filesystem driver with VFAT long names, written from
 * Microsoft's FAT specification.  This file: probe, open, close, the FAT in
 * memory (allocation, chains, write-back of changed sectors), the node
 * table, attributes and the driver table.  Directories are in fat-dir.c,
 * file data in fat-file.c, mkfs in fat-mkfs.c, on-disk encodings in
 * fat-format.c.
 *
 * Times are stored as UTC (FAT has no time zone).
 *
 * Hostile volumes: every BPB field is checked against the device, every
 * cluster number against the cluster count, every chain walk is bounded by
 * the size it must cover (files) or by the largest legal directory, and a
 * directory whose cluster is already another directory's is refused, so a
 * walk over the tree ends. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>

#include "fat-int.h"
#include "internal.h"
#include "util.h"

void fat_ent_set_cluster(uint8_t *ent, uint32_t c)
{
    qimg_put_le16(ent + 20, (uint16_t)(c >> 16));
    qimg_put_le16(ent + 26, (uint16_t)c);
}

void fat_ent_set_size(uint8_t *ent, uint32_t size) { qimg_put_le32(ent + 28, size); }

/* ---------------------------------------------------------------- the FAT */

int fat_next(struct fat_fs *f, uint32_t c, uint32_t *next, const char *what)
{
    if (c < 2 || c > fat_max_cluster(f))
        return qimg_error(-EIO, "FAT: %s: cluster %" PRIu32 " is out of range (2..%" PRIu32 ")",
                          what, c, fat_max_cluster(f));
    uint32_t v = fat_entry_get(f->fat, f->bpb.type, c);
    if (v == FAT_EOC) {
        *next = FAT_EOC;
        return 0;
    }
    if (v == FAT_FREE)
        return qimg_error(-EIO, "FAT: %s: cluster %" PRIu32 " of its chain is marked free",
                          what, c);
    if (v == FAT_BAD)
        return qimg_error(-EIO, "FAT: %s: cluster %" PRIu32 " of its chain is marked bad",
                          what, c);
    if (v < 2 || v > fat_max_cluster(f))
        return qimg_error(-EIO, "FAT: %s: cluster chain goes to cluster %" PRIu32
                          ", out of range (2..%" PRIu32 ")", what, v, fat_max_cluster(f));
    *next = v;
    return 0;
}

void fat_set(struct fat_fs *f, uint32_t c, uint32_t value)
{
    size_t lo, hi;
    uint32_t old = fat_entry_get(f->fat, f->bpb.type, c);
    fat_entry_set(f->fat, f->bpb.type, c, value, &lo, &hi);
    if (old == FAT_FREE && value != FAT_FREE)
        f->free_clusters--;
    else if (old != FAT_FREE && value == FAT_FREE)
        f->free_clusters++;
    unsigned bps = f->bpb.bytes_per_sector;
    f->fat_dirty[lo / bps] = 1;
    f->fat_dirty[(hi - 1) / bps] = 1;
    f->changed = true;
}

static bool cluster_free(struct fat_fs *f, uint32_t c)
{
    return c >= 2 && c <= fat_max_cluster(f) && fat_entry_get(f->fat, f->bpb.type, c) == FAT_FREE;
}

/* The first free cluster at or after from, wrapping around. */
static uint32_t find_free(struct fat_fs *f, uint32_t from)
{
    uint32_t max = fat_max_cluster(f);
    if (from < 2 || from > max)
        from = 2;
    for (uint32_t c = from; c <= max; c++)
        if (fat_entry_get(f->fat, f->bpb.type, c) == FAT_FREE)
            return c;
    for (uint32_t c = 2; c < from; c++)
        if (fat_entry_get(f->fat, f->bpb.type, c) == FAT_FREE)
            return c;
    return 0;
}

int fat_alloc_chain(struct fat_fs *f, uint32_t after, uint32_t prefer, uint32_t n,
                    uint32_t *first, uint32_t *last)
{
    if (n > f->free_clusters)
        return qimg_error(-ENOSPC, "no space left on the FAT filesystem (%" PRIu32
                          " clusters needed, %" PRIu32 " free)", n, f->free_clusters);
    int r = fat_begin_change(f);
    if (r < 0)
        return r;
    uint32_t prev = after, c = cluster_free(f, prefer) ? prefer : 0;
    *first = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!c)
            c = find_free(f, f->next_free);
        if (!c)   /* cannot happen: free_clusters was counted */
            return qimg_error(-ENOSPC, "no space left on the FAT filesystem");
        fat_set(f, c, FAT_EOC);
        if (prev)
            fat_set(f, prev, c);
        if (!*first)
            *first = c;
        prev = c;
        f->next_free = c + 1 > fat_max_cluster(f) ? 2 : c + 1;
        c = cluster_free(f, c + 1) ? c + 1 : 0;   /* stay contiguous */
    }
    *last = prev;
    return 0;
}

void fat_free_chain(struct fat_fs *f, uint32_t c)
{
    for (uint32_t steps = 0; steps <= f->bpb.clusters && c >= 2 && c <= fat_max_cluster(f);
         steps++) {
        uint32_t next = fat_entry_get(f->fat, f->bpb.type, c);
        if (next == FAT_FREE || next == FAT_BAD)
            break;
        fat_set(f, c, FAT_FREE);
        if (c < f->next_free)
            f->next_free = c;
        c = next;
    }
}

/* Writes FAT sector i (of the FAT in memory) to every copy written. */
static int write_fat_sector(struct fat_fs *f, size_t i)
{
    unsigned bps = f->bpb.bytes_per_sector;
    for (unsigned k = 0; k < f->bpb.num_fats; k++) {
        if (!f->mirror && k != f->active_fat)
            continue;
        uint64_t off = ((uint64_t)f->bpb.first_fat_sector + (uint64_t)k * f->bpb.fat_sectors + i) * bps;
        int r = qimg_fs_dev_write(&f->base.dev, off, f->fat + i * bps, bps);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Sets or clears the clean-shutdown bit of FAT entry 1 (FAT16/32). */
static void set_clean_bit(struct fat_fs *f, bool clean)
{
    if (f->bpb.type == FAT16) {
        uint16_t v = qimg_le16(f->fat + 2);
        qimg_put_le16(f->fat + 2, clean ? (uint16_t)(v | 0x8000) : (uint16_t)(v & ~0x8000));
    } else if (f->bpb.type == FAT32) {
        uint32_t v = qimg_le32(f->fat + 4);
        qimg_put_le32(f->fat + 4, clean ? v | 0x08000000 : v & ~0x08000000u);
    }
}

/* Sets or clears bit 0 of the boot sector's dirty byte (the "reserved1"
 * byte of the extended boot record, which Linux and fsck.fat use). */
static int set_boot_dirty(struct fat_fs *f, bool dirty)
{
    uint8_t *b = f->boot + (f->bpb.type == FAT32 ? 65 : 37);
    *b = dirty ? (uint8_t)(*b | 1) : (uint8_t)(*b & ~1);
    return qimg_fs_dev_write(&f->base.dev, 0, f->boot, sizeof f->boot);
}

int fat_begin_change(struct fat_fs *f)
{
    if (!f->base.dev.writable)
        return qimg_error(-EROFS, "the filesystem is open read-only");
    f->changed = true;
    if (f->marked_dirty)
        return 0;
    /* An interrupted session leaves the volume marked for fsck: the boot
     * sector's dirty flag, and on FAT16/32 the clean bit of FAT entry 1. */
    f->marked_dirty = true;
    int r = set_boot_dirty(f, true);
    if (r < 0)
        return r;
    if (f->bpb.type != FAT12) {
        set_clean_bit(f, false);
        r = write_fat_sector(f, 0);
        if (r < 0)
            return r;
    }
    return qimg_fs_dev_flush(&f->base.dev);
}

/* --------------------------------------------------------------- nodes */

static uint64_t hash64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

#define HKEY_EMPTY UINT64_MAX
static uint64_t slot_key(uint32_t dir, uint32_t slot) { return (uint64_t)dir << 32 | slot; }
static uint64_t dircl_key(uint32_t cluster) { return 1ull << 62 | cluster; }

static int hash_grow(struct fat_fs *f)
{
    uint32_t cap = f->hcap ? f->hcap * 2 : 1024;
    uint64_t *keys = qimg_alloc_from_image((uint64_t)cap * sizeof *keys, "FAT node table");
    uint32_t *vals = qimg_alloc_from_image((uint64_t)cap * sizeof *vals, "FAT node table");
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -ENOMEM;
    }
    memset(keys, 0xff, (size_t)cap * sizeof *keys);
    for (uint32_t i = 0; i < f->hcap; i++) {
        if (f->hkeys[i] == HKEY_EMPTY)
            continue;
        uint32_t j = (uint32_t)hash64(f->hkeys[i]) & (cap - 1);
        while (keys[j] != HKEY_EMPTY)
            j = (j + 1) & (cap - 1);
        keys[j] = f->hkeys[i];
        vals[j] = f->hvals[i];
    }
    free(f->hkeys);
    free(f->hvals);
    f->hkeys = keys;
    f->hvals = vals;
    f->hcap = cap;
    return 0;
}

static bool hash_find(struct fat_fs *f, uint64_t key, uint32_t *val)
{
    if (!f->hcap)
        return false;
    for (uint32_t j = (uint32_t)hash64(key) & (f->hcap - 1);; j = (j + 1) & (f->hcap - 1)) {
        if (f->hkeys[j] == HKEY_EMPTY)
            return false;
        if (f->hkeys[j] == key) {
            *val = f->hvals[j];
            return true;
        }
    }
}

/* Inserts or replaces key. */
static int hash_put(struct fat_fs *f, uint64_t key, uint32_t val)
{
    if ((uint64_t)(f->hcount + 1) * 2 > f->hcap) {
        int r = hash_grow(f);
        if (r < 0)
            return r;
    }
    uint32_t j = (uint32_t)hash64(key) & (f->hcap - 1);
    while (f->hkeys[j] != HKEY_EMPTY && f->hkeys[j] != key)
        j = (j + 1) & (f->hcap - 1);
    if (f->hkeys[j] == HKEY_EMPTY)
        f->hcount++;
    f->hkeys[j] = key;
    f->hvals[j] = val;
    return 0;
}

static int node_append(struct fat_fs *f, uint32_t *idx)
{
    if (f->nnodes == f->node_cap) {
        uint32_t cap = f->node_cap ? f->node_cap * 2 : 256;
        if (cap < f->node_cap)
            return qimg_error(-ENOMEM, "FAT: too many nodes");
        struct fat_node *n = qimg_alloc_from_image((uint64_t)cap * sizeof *n, "FAT nodes");
        if (!n)
            return -ENOMEM;
        if (f->nnodes)
            memcpy(n, f->nodes, (size_t)f->nnodes * sizeof *n);
        free(f->nodes);
        f->nodes = n;
        f->node_cap = cap;
    }
    *idx = f->nnodes++;
    memset(&f->nodes[*idx], 0, sizeof f->nodes[*idx]);
    return 0;
}

int fat_node_by_ino(struct fat_fs *f, qimg_fs_ino ino, uint32_t *idx)
{
    if (ino < 1 || ino > f->nnodes || f->nodes[ino - 1].dead)
        return qimg_error(-ENOENT, "FAT: no node %" PRIu64, ino);
    *idx = (uint32_t)(ino - 1);
    return 0;
}

int fat_node_get(struct fat_fs *f, uint32_t dir, uint32_t slot, uint8_t nlfn,
                 const uint8_t *raw, uint32_t *idx)
{
    uint32_t found;
    if (hash_find(f, slot_key(dir, slot), &found) && !f->nodes[found].dead) {
        *idx = found;
        return 0;
    }
    bool is_dir = raw[11] & FAT_ATTR_DIRECTORY;
    uint32_t first = fat_ent_cluster(raw);
    if (f->bpb.type != FAT32)
        first &= 0xFFFF;   /* the high half is reserved before FAT32 */
    if (is_dir) {
        /* A subdirectory needs its own cluster, not one of another
         * directory (that would make the tree a graph, possibly a loop). */
        if (first < 2 || first > fat_max_cluster(f))
            return qimg_error(-EIO, "FAT: a subdirectory starts at cluster %" PRIu32
                              ", out of range (2..%" PRIu32 ")", first, fat_max_cluster(f));
        uint32_t other;
        if (hash_find(f, dircl_key(first), &other) ||
            (f->bpb.type == FAT32 && first == f->bpb.root_cluster))
            return qimg_error(-ELOOP, "FAT: directory loop: a subdirectory starts at cluster %"
                              PRIu32 ", already used by another directory", first);
    }
    uint32_t n;
    int r = node_append(f, &n);
    if (r < 0)
        return r;
    struct fat_node *node = &f->nodes[n];
    node->parent = dir;
    node->slot = slot;
    node->nlfn = nlfn;
    node->is_dir = is_dir;
    memcpy(node->ent, raw, FAT_DIRENT_SIZE);
    if (f->bpb.type != FAT32)
        fat_ent_set_cluster(node->ent, first);
    r = hash_put(f, slot_key(dir, slot), n);
    if (r == 0 && is_dir)
        r = hash_put(f, dircl_key(first), n);
    if (r < 0) {
        node->dead = true;
        return r;
    }
    *idx = n;
    return 0;
}

int fat_node_store(struct fat_fs *f, uint32_t idx)
{
    if (idx == 0)
        return 0;   /* the root has no entry */
    struct fat_node *node = &f->nodes[idx];
    struct fat_dir *d;
    int r = fat_dir_load(f, node->parent, &d);
    if (r < 0)
        return r;
    node = &f->nodes[idx];
    if (node->slot >= d->nent)
        return qimg_error(-EIO, "FAT: directory entry %" PRIu32 " vanished", node->slot);
    memcpy(d->data + (size_t)node->slot * FAT_DIRENT_SIZE, node->ent, FAT_DIRENT_SIZE);
    return fat_dir_write_slots(f, d, node->slot, 1);
}

/* ------------------------------------------------------------ open/close */

static int fat_probe(struct qimg_fs_dev *dev)
{
    uint8_t s[512];
    if (dev->size < 512)
        return 0;
    int r = qimg_fs_dev_read(dev, 0, s, sizeof s);
    if (r < 0)
        return r;
    if (!fat_boot_sector_plausible(s))
        return 0;
    struct fat_bpb b;
    r = fat_bpb_parse(s, dev->size, &b);
    if (r < 0) {
        qimg_error_clear();
        return 0;
    }
    return 1;
}

static void free_fs(struct fat_fs *f)
{
    for (uint32_t i = 0; i < f->nnodes; i++)
        fat_dir_free(f->nodes[i].dir);
    free(f->nodes);
    free(f->hkeys);
    free(f->hvals);
    free(f->fat);
    free(f->fat_dirty);
    free(f);
}

static int load_fat(struct fat_fs *f)
{
    const struct fat_bpb *b = &f->bpb;
    unsigned bps = b->bytes_per_sector;
    /* Only the sectors that hold entries of existing clusters. */
    uint64_t need = qimg_div_round_up(fat_bytes_for_entries(b->type, (uint64_t)b->clusters + 2),
                                      bps) * bps;
    /* FAT12 reads two bytes per entry: keep one spare byte. */
    f->fat = qimg_alloc_from_image(need + 2, "FAT");
    f->fat_dirty = qimg_calloc_from_image(need / bps, 1, "FAT");
    if (!f->fat || !f->fat_dirty)
        return -ENOMEM;
    f->fat_bytes = need;
    f->fat[need] = f->fat[need + 1] = 0;
    uint64_t off = ((uint64_t)b->first_fat_sector + (uint64_t)f->active_fat * b->fat_sectors) * bps;
    int r = qimg_fs_dev_read(&f->base.dev, off, f->fat, need);
    if (r < 0)
        return r;
    f->free_clusters = 0;
    for (uint32_t c = 2; c <= fat_max_cluster(f); c++)
        if (fat_entry_get(f->fat, b->type, c) == FAT_FREE)
            f->free_clusters++;
    f->next_free = 2;
    return 0;
}

/* Before writing: every link in the FAT points inside the volume and no
 * cluster follows two others (chains that merge are cross-linked files, and
 * freeing one would free part of the other). */
static int check_fat_links(struct fat_fs *f)
{
    uint32_t max = fat_max_cluster(f);
    CLEANUP_FREE uint8_t *seen = qimg_calloc_from_image((uint64_t)max / 8 + 1, 1, "FAT check");
    if (!seen)
        return -ENOMEM;
    for (uint32_t c = 2; c <= max; c++) {
        uint32_t v = fat_entry_get(f->fat, f->bpb.type, c);
        if (v == FAT_FREE || v == FAT_BAD || v == FAT_EOC)
            continue;
        if (v < 2 || v > max)
            return qimg_error(-EUCLEAN, "the FAT of this filesystem is damaged (cluster %" PRIu32
                              " links to %" PRIu32 ", outside the volume): check it with "
                              "fsck.fat before writing to it", c, v);
        if (seen[v / 8] & (1u << (v % 8)))
            return qimg_error(-EUCLEAN, "the FAT of this filesystem has cross-linked clusters "
                              "(cluster %" PRIu32 " follows two others): check it with fsck.fat "
                              "before writing to it", v);
        seen[v / 8] |= (uint8_t)(1u << (v % 8));
    }
    return 0;
}

/* Before writing with mirrored FATs: the copies agree (we write only the
 * sectors we change, to every copy, so copies that differ would stay so);
 * entries 0 and 1 are left out (some systems mark only the first copy). */
static int check_fat_copies(struct fat_fs *f)
{
    const size_t chunk = 1 << 20;
    unsigned bps = f->bpb.bytes_per_sector;
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(chunk);
    for (unsigned k = 1; k < f->bpb.num_fats; k++) {
        uint64_t base = ((uint64_t)f->bpb.first_fat_sector + (uint64_t)k * f->bpb.fat_sectors) * bps;
        for (size_t off = 0; off < f->fat_bytes; off += chunk) {
            size_t n = QIMG_MIN(chunk, f->fat_bytes - off);
            int r = qimg_fs_dev_read(&f->base.dev, base + off, buf, n);
            if (r < 0)
                return r;
            /* entries 0 and 1 (media, clean bits) may differ between copies */
            size_t skip = off ? 0 : (size_t)fat_bytes_for_entries(f->bpb.type, 2);
            if (memcmp(buf + skip, f->fat + off + skip, n - skip))
                return qimg_error(-EUCLEAN, "the copies of the FAT of this filesystem differ: "
                                  "check it with fsck.fat before writing to it");
        }
    }
    return 0;
}

static int make_root(struct fat_fs *f)
{
    uint32_t idx;
    int r = node_append(f, &idx);
    if (r < 0)
        return r;
    struct fat_node *root = &f->nodes[idx];
    root->is_dir = true;
    memcpy(root->ent, "           ", 11);
    root->ent[11] = FAT_ATTR_DIRECTORY;
    if (f->bpb.type == FAT32) {
        fat_ent_set_cluster(root->ent, f->bpb.root_cluster);
        r = hash_put(f, dircl_key(f->bpb.root_cluster), idx);
        if (r < 0)
            return r;
    }
    f->base.root = idx + 1;
    return 0;
}

static int fat_open(struct qimg_fs_dev *dev, struct qimg_fs **out)
{
    uint8_t s[512];
    int r = dev->size < 512 ? qimg_error(-EINVAL, "FAT: the device is too small")
                            : qimg_fs_dev_read(dev, 0, s, sizeof s);
    if (r < 0)
        return r;
    struct fat_fs *f = qimg_xcalloc(1, sizeof *f);
    f->base.drv = &qimg_fs_vfat;
    f->base.dev = *dev;
    r = fat_bpb_parse(s, dev->size, &f->bpb);
    if (r < 0)
        goto fail;
    memcpy(f->boot, s, sizeof f->boot);
    f->dir_cache_budget = fat_dir_cache_budget();
    f->base.type = f->bpb.type == FAT12 ? "fat12" : f->bpb.type == FAT16 ? "fat16" : "fat32";
    f->mirror = true;
    if (f->bpb.type == FAT32 && (f->bpb.ext_flags & 0x80)) {
        f->mirror = false;
        f->active_fat = f->bpb.ext_flags & 0x0F;
    }
    if (dev->writable && (f->bpb.dirty & 1)) {
        r = qimg_error(-EUCLEAN, "the FAT filesystem is marked dirty (not cleanly unmounted): "
                       "check it with fsck.fat before writing to it");
        goto fail;
    }
    r = load_fat(f);
    if (r < 0)
        goto fail;
    if (dev->writable && !fat_entry1_clean(f->fat, f->bpb.type)) {
        r = qimg_error(-EUCLEAN, "the FAT filesystem was not cleanly unmounted (FAT entry 1): "
                       "check it with fsck.fat before writing to it");
        goto fail;
    }
    if (dev->writable) {
        r = check_fat_links(f);
        if (r == 0 && f->mirror)
            r = check_fat_copies(f);
        if (r < 0)
            goto fail;
    }
    if (f->bpb.type == FAT32 && f->bpb.fsinfo_sector &&
        f->bpb.fsinfo_sector < f->bpb.reserved_sectors) {
        CLEANUP_FREE uint8_t *fsi = qimg_xmalloc(f->bpb.bytes_per_sector);
        uint32_t fc, nf;
        r = qimg_fs_dev_read(dev, (uint64_t)f->bpb.fsinfo_sector * f->bpb.bytes_per_sector, fsi,
                             f->bpb.bytes_per_sector);
        if (r < 0)
            goto fail;
        if (fat_fsinfo_parse(fsi, &fc, &nf) && nf >= 2 && nf <= fat_max_cluster(f))
            f->next_free = nf;
    }
    r = make_root(f);
    if (r < 0)
        goto fail;
    *out = &f->base;
    return 0;
fail:
    free_fs(f);
    return r;
}

static int write_back(struct fat_fs *f)
{
    unsigned bps = f->bpb.bytes_per_sector;
    if (f->marked_dirty) {
        set_clean_bit(f, true);
        f->fat_dirty[0] = 1;
    }
    /* Changed sectors only, in runs. */
    size_t nsec = f->fat_bytes / bps;
    for (size_t i = 0; i < nsec;) {
        if (!f->fat_dirty[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < nsec && f->fat_dirty[j])
            j++;
        for (unsigned k = 0; k < f->bpb.num_fats; k++) {
            if (!f->mirror && k != f->active_fat)
                continue;
            uint64_t off = ((uint64_t)f->bpb.first_fat_sector + (uint64_t)k * f->bpb.fat_sectors + i) * bps;
            int r = qimg_fs_dev_write(&f->base.dev, off, f->fat + i * bps, (j - i) * bps);
            if (r < 0)
                return r;
        }
        memset(f->fat_dirty + i, 0, j - i);
        i = j;
    }
    if (f->bpb.type == FAT32 && f->bpb.fsinfo_sector && f->bpb.fsinfo_sector < f->bpb.reserved_sectors) {
        CLEANUP_FREE uint8_t *fsi = qimg_xmalloc(bps);
        fat_fsinfo_encode(fsi, bps, f->free_clusters, f->next_free);
        int r = qimg_fs_dev_write(&f->base.dev, (uint64_t)f->bpb.fsinfo_sector * bps, fsi, bps);
        if (r < 0)
            return r;
    }
    int r = qimg_fs_dev_flush(&f->base.dev);
    if (r < 0 || !f->marked_dirty)
        return r;
    /* Clean only once everything else is on disk. */
    r = set_boot_dirty(f, false);
    if (r < 0)
        return r;
    f->marked_dirty = false;
    return qimg_fs_dev_flush(&f->base.dev);
}

static int fat_close(struct qimg_fs *fs)
{
    struct fat_fs *f = FATFS(fs);
    int r = 0;
    if (fs->dev.writable && f->changed)
        r = write_back(f);
    free_fs(f);
    return r;
}

/* ------------------------------------------------------------ attributes */

static int fat_getattr(struct qimg_fs *fs, qimg_fs_ino ino, struct qimg_fs_attr *a)
{
    struct fat_fs *f = FATFS(fs);
    uint32_t idx;
    int r = fat_node_by_ino(f, ino, &idx);
    if (r < 0)
        return r;
    const struct fat_node *n = &f->nodes[idx];
    struct fat_dirent d;
    fat_dirent_decode(n->ent, &d);
    memset(a, 0, sizeof *a);
    if (n->is_dir) {
        a->mode = S_IFDIR | 0755;
        a->nlink = 2;
    } else {
        a->mode = S_IFREG | 0644;
        a->nlink = 1;
        a->size = d.size;
    }
    if (d.attr & FAT_ATTR_READ_ONLY)
        a->mode &= ~0222u;
    if (idx == 0) {
        /* The root has no entry: the volume label's times stand in. */
        struct fat_dir *root;
        if (fat_dir_load(f, 0, &root) < 0) {
            qimg_error_clear();
            return 0;
        }
        for (uint32_t i = 0; i < root->nent && root->data[(size_t)i * FAT_DIRENT_SIZE]; i++) {
            const uint8_t *raw = root->data + (size_t)i * FAT_DIRENT_SIZE;
            if (raw[0] != FAT_DELETED && !fat_raw_is_lfn(raw) && (raw[11] & FAT_ATTR_VOLUME_ID)) {
                fat_dirent_decode(raw, &d);
                break;
            }
        }
    }
    if (idx != 0 || (d.attr & FAT_ATTR_VOLUME_ID)) {
        a->mtime = fat_time_decode(d.wrt_date, d.wrt_time, 0, NULL);
        a->crtime = fat_time_decode(d.crt_date, d.crt_time, d.crt_tenth, &a->crtime_ns);
        a->atime = fat_time_decode(d.acc_date, 0, 0, NULL);
        a->ctime = a->mtime;
    }
    return 0;
}

static int fat_setattr(struct qimg_fs *fs, qimg_fs_ino ino, const struct qimg_fs_attr *a)
{
    struct fat_fs *f = FATFS(fs);
    uint32_t idx;
    int r = fat_node_by_ino(f, ino, &idx);
    if (r < 0)
        return r;
    if (idx == 0)
        return 0;   /* the root directory has no entry to hold attributes */
    r = fat_begin_change(f);
    if (r < 0)
        return r;
    uint8_t *e = f->nodes[idx].ent;
    if (a->mode & 0200)
        e[11] &= (uint8_t)~FAT_ATTR_READ_ONLY;
    else
        e[11] |= FAT_ATTR_READ_ONLY;
    uint16_t date, time;
    uint8_t tenth;
    fat_time_encode(a->mtime, a->mtime_ns, &date, &time, NULL);
    qimg_put_le16(e + 22, time);
    qimg_put_le16(e + 24, date);
    fat_time_encode(a->atime, 0, &date, &time, NULL);
    qimg_put_le16(e + 18, date);
    if (a->crtime)
        fat_time_encode(a->crtime, a->crtime_ns, &date, &time, &tenth);
    else
        fat_time_encode(a->mtime, a->mtime_ns, &date, &time, &tenth);
    e[13] = tenth;
    qimg_put_le16(e + 14, time);
    qimg_put_le16(e + 16, date);
    return fat_node_store(f, idx);
}

static int fat_readlink(struct qimg_fs *fs, qimg_fs_ino ino, char *buf, size_t len)
{
    return qimg_error(-ENOTSUP, "FAT filesystems have no symbolic links");
}

static int fat_link(struct qimg_fs *fs, qimg_fs_ino dir, const char *name, qimg_fs_ino ino)
{
    return qimg_error(-ENOTSUP, "FAT filesystems have no hard links (cannot add '%s')", name);
}

static int fat_setxattr(struct qimg_fs *fs, qimg_fs_ino ino, const char *name,
                        const void *value, size_t len)
{
    return qimg_error(-ENOTSUP, "FAT filesystems have no extended attributes (cannot set '%s')",
                      name);
}

const struct qimg_fs_driver qimg_fs_vfat = {
    .name = "vfat",
    .probe = fat_probe,
    .open = fat_open,
    .close = fat_close,
    .lookup = fat_lookup,
    .getattr = fat_getattr,
    .readdir = fat_readdir,
    .read = fat_read,
    .next_data = NULL,
    .readlink = fat_readlink,
    .listxattr = NULL,
    .create = fat_create,
    .write = fat_write,
    .truncate = fat_truncate,
    .setattr = fat_setattr,
    .link = fat_link,
    .unlink = fat_unlink,
    .setxattr = fat_setxattr,
    .min_size = fat_min_size,
    .mkfs = fat_mkfs,
};
