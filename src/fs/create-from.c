/* qimg_create_from: an image holding a new filesystem filled from a
 * directory or a tar archive.
 *
 * Steps: measure the source (populate.c) -> choose the disk size -> create
 * the image with the library's create -> optional partition table -> mkfs
 * on the partition or the whole disk -> open the filesystem -> copy the
 * tree -> close.  Everything is written once, through qimg_write, straight
 * into the target format; there is no raw scratch copy of the disk.
 *
 * The size, without one given: the driver's minimum for the tree (which
 * includes its own headroom) + extra + what the partition table needs,
 * rounded up to 1 MiB.  A given size smaller than that is refused before
 * anything is written.
 *
 * A plain local target is written under a temporary name next to it and
 * renamed into place once complete, so a failed run leaves nothing behind
 * and never destroys an existing image of that name.  Other targets (a
 * protocol, a device) are written in place; a file we created is removed
 * on failure.
 *
 * Reproducible builds: the filesystem's UUIDs and hash seeds come from a
 * seed derived from the epoch (mixed with the filesystem type, the label
 * and the shape of the tree, so that different images made with one epoch
 * get different UUIDs), every time it records is the epoch or
 * earlier (source times clamped, mkfs and superblock times set to it), and
 * a directory source is walked in sorted order.  The epoch is
 * SOURCE_DATE_EPOCH, or with epoch_from_source the newest mtime of the
 * source.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "fat-format.h"
#include "populate.h"

#define MIB (1ull << 20)

/* --------------------------------------------------------------- target */

/* Messages name the temporary file: show the user's name instead. */
static void rename_in_error(const struct qimg_target *t)
{
    if (!t->tmp)
        return;
    CLEANUP_FREE char *msg = qimg_target_message(t, qimg_last_error());
    qimg_error(-qimg_last_errno(), "%s", msg);
}

/* A failed run leaves nothing: the temporary file, or a file it created in
 * place, goes. */
static void discard_target(const struct qimg_target *t)
{
    qimg_target_discard(t);
    if (!t->tmp && !t->existed && t->local)
        unlink(t->name);
}

/* ---------------------------------------------------------------- plan */

struct plan {
    const struct qimg_fs_driver *drv;
    enum qimg_part_scheme scheme;
    const char *part_kind;
    struct qimg_mkfs_params mkfs;
    struct qimg_fs_usage usage;
    int64_t epoch;
    uint64_t fs_min;          /* the driver's minimum filesystem size */
    uint64_t size;            /* the disk */
};

static int parse_scheme(const char *name, enum qimg_part_scheme *out)
{
    if (!name || !strcmp(name, "none"))
        *out = QIMG_PART_NONE;
    else if (!strcmp(name, "mbr") || !strcmp(name, "dos") || !strcmp(name, "msdos"))
        *out = QIMG_PART_MBR;
    else if (!strcmp(name, "gpt"))
        *out = QIMG_PART_GPT;
    else
        return qimg_error(-EINVAL, "Unknown partition table '%s' (none, mbr or gpt)", name);
    return 0;
}

static int find_driver(const char *type, const struct qimg_fs_driver **drv)
{
    if (strcmp(type, "ext4") && strcmp(type, "ext3") && strcmp(type, "ext2") &&
        strcmp(type, "vfat"))
        return qimg_error(-EINVAL, "Unknown filesystem type '%s' (ext4, ext3, ext2 or vfat)",
                          type);
    *drv = qimg_fs_driver_by_type(type);
    if (!*drv)
        return qimg_error(-ENOTSUP, "filesystem type '%s' is not available in this build", type);
    return 0;
}

/* Inodes for the tree, with room for a few more files later. */
static uint64_t inodes_for(const struct qimg_fs_usage *u)
{
    uint64_t nodes = u->files + u->dirs + u->symlinks + u->others + 1;
    return nodes + nodes / 4 + 64;
}

static int make_plan(struct qimg_create_from_params *p, struct qimg_fs_source *src,
                     struct plan *pl)
{
    int64_t newest = 0;
    const char *type = p->fs_type ? p->fs_type : "ext4";
    int r;
    memset(pl, 0, sizeof *pl);
    if ((r = find_driver(type, &pl->drv)) < 0 || (r = parse_scheme(p->partition, &pl->scheme)) < 0)
        return r;
    pl->part_kind = strcmp(type, "vfat") ? "linux" : "fat";
    if ((r = qimg_fs_source_usage(src, &pl->usage, &newest, !strcmp(type, "vfat"))) < 0)
        return r;
    pl->epoch = p->epoch_from_source ? newest : p->source_date_epoch;
    pl->mkfs = (struct qimg_mkfs_params) {
        .type = type,
        .label = p->label && *p->label ? p->label : NULL,
        .inodes = inodes_for(&pl->usage),
        .reproducible = p->reproducible,
        .now = p->reproducible ? pl->epoch : (int64_t)time(NULL),
    };
    /* The seed: the epoch, mixed with what tells builds apart (type, label,
     * shape of the tree), so that two different reproducible images made
     * with one SOURCE_DATE_EPOCH do not share their UUIDs. */
    const struct qimg_fs_usage *u = &pl->usage;
    CLEANUP_FREE char *what = qimg_asprintf(
        "create-from %s %s %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
        " %" PRIu64 " %" PRIu64 " %" PRIu64, type, p->partition ? p->partition : "none",
        pl->mkfs.label ? pl->mkfs.label : "", u->files, u->dirs, u->symlinks, u->others,
        u->hardlinks, u->data_bytes, u->name_bytes, u->xattr_bytes);
    qimg_fs_derive_bytes((uint64_t)pl->epoch, what, &pl->mkfs.seed, sizeof pl->mkfs.seed);
    if ((r = pl->drv->min_size(&pl->usage, &pl->mkfs, &pl->fs_min)) < 0)
        return r;

    uint64_t overhead = pl->scheme == QIMG_PART_NONE ? 0 : qimg_part_overhead(pl->scheme);
    uint64_t need;
    if (!qimg_add_ok(pl->fs_min, overhead, &need))
        return qimg_error(-EFBIG, "the source is too large");
    if (p->has_size) {
        if (p->size < need) {
            char have[32], want[32];
            qimg_format_size(p->size, have, sizeof have);
            qimg_format_size(need, want, sizeof want);
            return qimg_error(-ENOSPC, "Image size %" PRIu64 " (%s) is too small for '%s': "
                              "%s needs at least %" PRIu64 " bytes (%s)", p->size, have,
                              p->source, type, need, want);
        }
        pl->size = p->size;
    } else if (!qimg_add_ok(need, p->extra, &need) || !qimg_round_up_ok(need, MIB, &pl->size)) {
        return qimg_error(-EFBIG, "the image size is too large");
    }
    return 0;
}

/* ------------------------------------------------------------ building */

struct progress_ctx {
    struct qimg_create_from_params *p;
    uint64_t total;
    double last;
};

static void on_progress(uint64_t done, void *opaque)
{
    struct progress_ctx *c = opaque;
    double pct = c->total ? 100.0 * (double)QIMG_MIN(done, c->total) / (double)c->total : 0;
    if (pct > 99.0)
        pct = 99.0;               /* 100 once the filesystem is closed */
    if (pct - c->last >= 0.01 || pct < c->last) {
        c->last = pct;
        c->p->progress(pct, c->p->progress_opaque);
    }
}

/* An MBR names the FAT type of its partition: once the partition's size is
 * known, the table is written again (same layout) with FAT12's or FAT16's
 * type when mkfs will pick one of those. */
static int mark_fat_partition(qimg_image *img, struct plan *pl, struct qimg_fs_dev *dev)
{
    struct fat_bpb bpb;
    if (fat_choose_geometry(dev->size, &bpb) < 0 || bpb.type == FAT32) {
        qimg_error_clear();
        return 0;
    }
    return qimg_part_write(img, QIMG_PART_MBR, bpb.type == FAT16 ? "fat16" : "fat12",
                           pl->mkfs.reproducible, pl->mkfs.seed, &dev->offset, &dev->size);
}

static int fill(struct qimg_create_from_params *p, struct plan *pl, struct qimg_fs_source *src,
                qimg_image *img, const char *path)
{
    struct stat self;
    struct qimg_fs_dev dev = { .img = img, .offset = 0, .size = pl->size, .writable = true };
    struct qimg_fs *fs = NULL;
    int r;
    if (pl->scheme != QIMG_PART_NONE) {
        r = qimg_part_write(img, pl->scheme, pl->part_kind, p->reproducible, pl->mkfs.seed,
                            &dev.offset, &dev.size);
        if (r == 0 && pl->scheme == QIMG_PART_MBR && !strcmp(pl->part_kind, "fat"))
            r = mark_fat_partition(img, pl, &dev);
        if (r < 0)
            return r;
    }
    if (p->reproducible)
        dev.now = pl->epoch;
    if ((r = pl->drv->mkfs(&dev, &pl->mkfs)) < 0 || (r = pl->drv->open(&dev, &fs)) < 0)
        return r;
    struct progress_ctx pc = { .p = p, .total = pl->usage.data_blocks_4k * 4096 };
    struct qimg_populate_opts o = {
        .reproducible = p->reproducible,
        .epoch = pl->epoch,
        .now = pl->mkfs.now,
        .progress = p->progress ? on_progress : NULL,
        .opaque = &pc,
        .has_exclude = stat(path, &self) == 0,
        .exclude_dev = self.st_dev,
        .exclude_ino = self.st_ino,
    };
    struct qimg_populate_stats st;
    r = qimg_fs_source_populate(src, fs, &o, &st);
    p->skipped = st.skipped;
    if (r < 0) {
        /* keep the first error: closing may fail too */
        CLEANUP_FREE char *msg = qimg_strdup(qimg_last_error());
        int err = qimg_last_errno();
        fs->drv->close(fs);
        return qimg_error(err ? -err : r, "%s", msg);
    }
    return fs->drv->close(fs);
}

int qimg_create_from(struct qimg_create_from_params *p)
{
    struct qimg_fs_source *src = NULL;
    struct qimg_target t = { 0 };
    struct plan pl;
    qimg_image *img = NULL;
    int r;

    qimg_error_clear();
    p->chosen_size = 0;
    p->skipped = 0;
    if (!p->filename || !p->source)
        return qimg_error(-EINVAL, "create --from needs a source and an image name");
    /* the format and its -o options, checked before the source is read */
    struct qimg_create_params check = {
        .filename = p->filename, .fmt = p->fmt, .size = MIB, .has_size = true, .opts = p->opts,
    };
    char *text = qimg_create_describe(&check);
    if (!text)
        return -qimg_last_errno() ? -qimg_last_errno() : -EINVAL;
    free(text);
    if ((r = qimg_fs_source_open(&src, p->source)) < 0)
        return r;
    if ((r = make_plan(p, src, &pl)) < 0)
        goto out;
    p->chosen_size = pl.size;
    if (p->planned)
        p->planned(p, p->planned_opaque);

    qimg_target_plan(&t, p->filename);
    struct qimg_create_params cp = {
        .filename = qimg_target_path(&t), .fmt = p->fmt, .size = pl.size, .has_size = true,
        .opts = p->opts, .quiet = true,
    };
    if ((r = qimg_target_lock(&t)) < 0 || (r = qimg_create(&cp)) < 0)
        goto fail;
    if ((r = qimg_open(&img, qimg_target_path(&t), p->fmt ? p->fmt : "raw",
                       QIMG_OPEN_RDWR | QIMG_OPEN_CACHE_UNSAFE)) < 0)
        goto fail;
    if (p->progress)
        p->progress(0, p->progress_opaque);
    r = fill(p, &pl, src, img, qimg_target_path(&t));
    int rc = qimg_close(img);
    img = NULL;
    if (r == 0)
        r = rc;
    if (r == 0)
        r = qimg_target_commit(&t);
    if (r < 0)
        goto fail;
    if (p->progress)
        p->progress(100, p->progress_opaque);
    goto out;
fail:
    rename_in_error(&t);
    discard_target(&t);
out:
    qimg_fs_source_close(src);
    qimg_target_release(&t);
    return r;
}
