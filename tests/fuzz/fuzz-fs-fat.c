/* qimg - libFuzzer target: any bytes as a FAT filesystem.
 *
 * The input goes into a memfd opened as a raw image; the FAT driver probes
 * it, opens it read-only and walks the whole tree (readdir, lookup of every
 * name, getattr, reading every file to its end), then opens it writable and
 * creates, writes, grows, truncates and removes files in the root and in
 * the first subdirectory before closing (the memfd is rewritten for each
 * input).  It aborts on a broken library contract (a failure without a
 * message, a short read before the end of a file) so that libFuzzer reports
 * it like a crash.  Every walk is bounded here too, but the driver must end
 * on its own: a hang is reported as a timeout. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "internal.h"
#include "fuzz-input.h"

#define MAX_NODES 4096
#define MAX_DEPTH 64

static const struct qimg_fs_driver *drv = &qimg_fs_vfat;
static uint8_t buf[65536];

static void expect_message(int r, const char *what)
{
    if (r < 0 && qimg_last_error()[0] == '\0' && r != -ENOENT) {
        fprintf(stderr, "fuzz-fs-fat: %s failed (%d) without a message\n", what, r);
        abort();
    }
}

struct walk {
    struct qimg_fs *fs;
    int nodes, depth;
    qimg_fs_ino dir;
};

static void read_file(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size)
{
    uint64_t off = 0;
    while (off < size) {
        size_t got = 0;
        int r = drv->read(fs, ino, off, buf, sizeof buf, &got);
        expect_message(r, "read");
        if (r < 0)
            return;
        if (got == 0 || (got < sizeof buf && off + got < size)) {
            fprintf(stderr, "fuzz-fs-fat: short read at %llu of %llu\n",
                    (unsigned long long)off, (unsigned long long)size);
            abort();
        }
        off += got;
    }
}

static int walk_cb(void *opaque, const char *name, qimg_fs_ino ino)
{
    struct walk *w = opaque;
    if (++w->nodes > MAX_NODES)
        return 1;
    qimg_fs_ino again;
    int r = drv->lookup(w->fs, w->dir, name, &again);
    expect_message(r, "lookup");
    struct qimg_fs_attr a;
    r = drv->getattr(w->fs, ino, &a);
    expect_message(r, "getattr");
    if (r < 0)
        return 0;
    if (S_ISDIR(a.mode)) {
        if (w->depth >= MAX_DEPTH)
            return 0;
        qimg_fs_ino parent = w->dir;
        w->depth++;
        w->dir = ino;
        r = drv->readdir(w->fs, ino, walk_cb, w);
        expect_message(r, "readdir");
        w->dir = parent;
        w->depth--;
        return r > 0 ? r : 0;
    }
    read_file(w->fs, ino, a.size);
    return 0;
}

static int first_dir_cb(void *opaque, const char *name, qimg_fs_ino ino)
{
    struct walk *w = opaque;
    struct qimg_fs_attr a;
    if (drv->getattr(w->fs, ino, &a) == 0 && S_ISDIR(a.mode)) {
        w->dir = ino;
        return 1;
    }
    return 0;
}

static void write_some(struct qimg_fs *fs, qimg_fs_ino dir)
{
    struct qimg_fs_attr a = { .mode = S_IFREG | 0644, .mtime = 1600000000 };
    qimg_fs_ino f;
    int r = drv->create(fs, dir, "A fuzzed long file name.txt", &a, NULL, &f);
    expect_message(r, "create");
    if (r == 0) {
        memset(buf, 0x5a, sizeof buf);
        expect_message(drv->write(fs, f, 0, buf, 3000), "write");
        expect_message(drv->write(fs, f, 10000, buf, 5000), "write past the end");
        r = drv->truncate(fs, f, 1234);
        expect_message(r, "truncate");
        expect_message(drv->setattr(fs, f, &a), "setattr");
        struct qimg_fs_attr got;
        if (r == 0 && drv->getattr(fs, f, &got) == 0) {
            if (got.size != 1234) {
                fprintf(stderr, "fuzz-fs-fat: size %llu after truncate to 1234\n",
                        (unsigned long long)got.size);
                abort();
            }
            read_file(fs, f, 1234);
        }
        expect_message(drv->unlink(fs, dir, "A fuzzed long file name.txt"), "unlink");
    }
    struct qimg_fs_attr d = { .mode = S_IFDIR | 0755, .mtime = 1600000000 };
    r = drv->create(fs, dir, "new dir", &d, NULL, &f);
    expect_message(r, "mkdir");
    if (r == 0) {
        qimg_fs_ino g;
        r = drv->create(fs, f, "inner", &a, NULL, &g);
        expect_message(r, "create in a new directory");
        if (r == 0)
            expect_message(drv->write(fs, g, 0, buf, 100), "write");
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_input_init("fuzz-fs-fat");
    return 0;
}

static void run(bool writable)
{
    qimg_image *img = NULL;
    int r = qimg_open(&img, fuzz_input_path, "raw", writable ? QIMG_OPEN_RDWR : QIMG_OPEN_FORCE_SHARE);
    if (r < 0)
        return;
    struct qimg_fs_dev dev = { .img = img, .size = qimg_size(img), .writable = writable };
    r = drv->probe(&dev);
    expect_message(r, "probe");
    struct qimg_fs *fs = NULL;
    r = drv->open(&dev, &fs);
    expect_message(r, "open");
    if (r == 0) {
        struct walk w = { .fs = fs, .dir = fs->root };
        if (!writable) {
            expect_message(drv->readdir(fs, fs->root, walk_cb, &w), "readdir");
        } else {
            write_some(fs, fs->root);
            w.dir = 0;
            if (drv->readdir(fs, fs->root, first_dir_cb, &w) > 0 && w.dir)
                write_some(fs, w.dir);
        }
        expect_message(drv->close(fs), "close");
    }
    qimg_close(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_load(data, size);
    run(false);
    run(true);
    qimg_error_clear();
    return 0;
}
