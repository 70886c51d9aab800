/* FAT file data: the cluster chain of a file (checked once against its
 * size), reads and writes in runs of consecutive clusters, growing and
 * truncating. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "fat-int.h"
#include "internal.h"
#include "util.h"

#define FAT_MAX_FILE_SIZE 0xFFFFFFFFull

/* Checks a file's chain once: exactly as many clusters as its size needs,
 * each in range, the last one marked end of chain (so there is no loop). */
static int check_chain(struct fat_fs *f, uint32_t idx)
{
    struct fat_node *n = &f->nodes[idx];
    if (n->chain_ok)
        return 0;
    if (n->is_dir)
        return qimg_error(-EISDIR, "FAT: is a directory");
    uint32_t size = fat_ent_size(n->ent), first = fat_ent_cluster(n->ent);
    uint64_t need = qimg_div_round_up(size, f->bpb.cluster_bytes);
    if (need == 0) {
        if (first != 0)
            return qimg_error(-EIO, "FAT: an empty file has clusters (from cluster %" PRIu32 ")",
                              first);
    } else {
        if (first == 0)
            return qimg_error(-EIO, "FAT: a file of %" PRIu32 " bytes has no clusters", size);
        if (need > f->bpb.clusters)
            return qimg_error(-EIO, "FAT: a file of %" PRIu32 " bytes is larger than the volume",
                              size);
        uint32_t c = first, next;
        for (uint64_t i = 1; i < need; i++) {
            int r = fat_next(f, c, &next, "file");
            if (r < 0)
                return r;
            if (next == FAT_EOC)
                return qimg_error(-EIO, "FAT: the cluster chain of a file of %" PRIu32 " bytes "
                                  "ends after %" PRIu64 " clusters (%" PRIu64 " needed)",
                                  size, i, need);
            c = next;
        }
        int r = fat_next(f, c, &next, "file");
        if (r < 0)
            return r;
        if (next != FAT_EOC)
            return qimg_error(-EIO, "FAT: the cluster chain of a file of %" PRIu32 " bytes is "
                              "longer than its size (or loops)", size);
        n->last_cluster = c;
    }
    n->nclusters = (uint32_t)need;
    n->chain_ok = true;
    n->cur_cluster = 0;
    return 0;
}

/* The cluster at chain index ci (< nclusters) of a checked chain. */
static uint32_t seek_cluster(struct fat_fs *f, struct fat_node *n, uint32_t ci)
{
    uint32_t c = fat_ent_cluster(n->ent), i = 0;
    if (n->cur_cluster && n->cur_index <= ci) {
        c = n->cur_cluster;
        i = n->cur_index;
    }
    if (ci == n->nclusters - 1)
        return n->last_cluster;
    for (; i < ci; i++)
        c = fat_entry_get(f->fat, f->bpb.type, c);
    n->cur_index = ci;
    n->cur_cluster = c;
    return c;
}

enum io_mode { IO_READ, IO_WRITE, IO_ZERO };

/* Reads, writes or zeroes [off, off+len) of a file whose chain covers it,
 * one device request per run of consecutive clusters. */
static int io_range(struct fat_fs *f, uint32_t idx, uint64_t off, uint8_t *buf, uint64_t len,
                    enum io_mode mode)
{
    struct fat_node *n = &f->nodes[idx];
    uint32_t cs = f->bpb.cluster_bytes;
    while (len > 0) {
        uint32_t ci = (uint32_t)(off / cs), within = (uint32_t)(off % cs);
        uint32_t c = seek_cluster(f, n, ci), last = c, lasti = ci;
        uint64_t avail = cs - within;
        while (avail < len && lasti + 1 < n->nclusters &&
               fat_entry_get(f->fat, f->bpb.type, last) == last + 1) {
            last++;
            lasti++;
            avail += cs;
        }
        if (lasti != ci && lasti + 1 < n->nclusters) {
            n->cur_index = lasti;
            n->cur_cluster = last;
        }
        uint64_t chunk = QIMG_MIN(avail, len);
        uint64_t dev_off = fat_cluster_offset(f, c) + within;
        int r;
        if (mode == IO_READ)
            r = qimg_fs_dev_read(&f->base.dev, dev_off, buf, (size_t)chunk);
        else if (mode == IO_WRITE)
            r = qimg_fs_dev_write(&f->base.dev, dev_off, buf, (size_t)chunk);
        else
            r = qimg_fs_dev_zero(&f->base.dev, dev_off, chunk);
        if (r < 0)
            return r;
        if (buf)
            buf += chunk;
        off += chunk;
        len -= chunk;
    }
    return 0;
}

static int file_node(struct fat_fs *f, qimg_fs_ino ino, uint32_t *idx)
{
    int r = fat_node_by_ino(f, ino, idx);
    if (r < 0)
        return r;
    return check_chain(f, *idx);
}

int fat_read(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, void *buf, size_t len,
             size_t *got)
{
    struct fat_fs *f = FATFS(fs);
    uint32_t idx;
    *got = 0;
    int r = file_node(f, ino, &idx);
    if (r < 0)
        return r;
    uint64_t size = fat_ent_size(f->nodes[idx].ent);
    if (off >= size)
        return 0;
    uint64_t n = QIMG_MIN((uint64_t)len, size - off);
    r = io_range(f, idx, off, buf, n, IO_READ);
    if (r < 0)
        return r;
    *got = (size_t)n;
    return 0;
}

/* Grows a checked chain to `need` clusters. */
static int grow_chain(struct fat_fs *f, uint32_t idx, uint32_t need)
{
    struct fat_node *n = &f->nodes[idx];
    if (need <= n->nclusters)
        return 0;
    uint32_t first, last;
    uint32_t prefer = n->nclusters ? n->last_cluster + 1 : f->next_free;
    int r = fat_alloc_chain(f, n->nclusters ? n->last_cluster : 0, prefer, need - n->nclusters,
                            &first, &last);
    if (r < 0)
        return r;
    if (!n->nclusters)
        fat_ent_set_cluster(n->ent, first);
    n->nclusters = need;
    n->last_cluster = last;
    return 0;
}

/* Shrinks a checked chain to `need` clusters, freeing the rest. */
static void shrink_chain(struct fat_fs *f, uint32_t idx, uint32_t need)
{
    struct fat_node *n = &f->nodes[idx];
    if (need >= n->nclusters)
        return;
    if (need == 0) {
        fat_free_chain(f, fat_ent_cluster(n->ent));
        fat_ent_set_cluster(n->ent, 0);
        n->last_cluster = 0;
    } else {
        uint32_t c = seek_cluster(f, n, need - 1);
        uint32_t next = fat_entry_get(f->fat, f->bpb.type, c);
        fat_set(f, c, FAT_EOC);
        fat_free_chain(f, next);
        n->last_cluster = c;
    }
    n->nclusters = need;
    n->cur_cluster = 0;
}

int fat_write(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, const void *buf, size_t len)
{
    struct fat_fs *f = FATFS(fs);
    uint32_t idx;
    int r = file_node(f, ino, &idx);
    if (r < 0)
        return r;
    uint64_t end;
    if (!qimg_add_ok(off, len, &end) || end > FAT_MAX_FILE_SIZE)
        return qimg_error(-EFBIG, "FAT files are limited to 4 GiB - 1 bytes");
    if (len == 0)
        return 0;
    r = fat_begin_change(f);
    if (r < 0)
        return r;
    uint64_t old = fat_ent_size(f->nodes[idx].ent);
    uint32_t old_first = fat_ent_cluster(f->nodes[idx].ent);
    uint32_t old_ncl = f->nodes[idx].nclusters;
    r = grow_chain(f, idx, (uint32_t)qimg_div_round_up(end, f->bpb.cluster_bytes));
    if (r < 0)
        return r;
    if (off > old)
        r = io_range(f, idx, old, NULL, off - old, IO_ZERO);   /* FAT has no holes */
    if (r == 0)
        r = io_range(f, idx, off, (uint8_t *)buf, len, IO_WRITE);
    if (r < 0) {
        shrink_chain(f, idx, old_ncl);   /* the chain matches the size again */
        return r;
    }
    if (end <= old && fat_ent_cluster(f->nodes[idx].ent) == old_first)
        return 0;
    if (end > old)
        fat_ent_set_size(f->nodes[idx].ent, (uint32_t)end);
    return fat_node_store(f, idx);
}

int fat_truncate(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size)
{
    struct fat_fs *f = FATFS(fs);
    uint32_t idx;
    int r = file_node(f, ino, &idx);
    if (r < 0)
        return r;
    if (size > FAT_MAX_FILE_SIZE)
        return qimg_error(-EFBIG, "FAT files are limited to 4 GiB - 1 bytes");
    r = fat_begin_change(f);
    if (r < 0)
        return r;
    struct fat_node *n = &f->nodes[idx];
    uint64_t old = fat_ent_size(n->ent);
    uint32_t need = (uint32_t)qimg_div_round_up(size, f->bpb.cluster_bytes);
    uint32_t old_ncl = n->nclusters;
    if (need < n->nclusters) {
        shrink_chain(f, idx, need);
    } else {
        r = grow_chain(f, idx, need);
        if (r < 0)
            return r;
        if (size > old) {
            r = io_range(f, idx, old, NULL, size - old, IO_ZERO);
            if (r < 0) {
                shrink_chain(f, idx, old_ncl);
                return r;
            }
        }
    }
    n = &f->nodes[idx];
    fat_ent_set_size(n->ent, (uint32_t)size);
    return fat_node_store(f, idx);
}
