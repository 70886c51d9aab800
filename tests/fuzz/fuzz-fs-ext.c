/* qimg - libFuzzer target: any bytes as an ext2/3/4 filesystem.
 *
 * The input goes into a memfd opened as a raw image; when the ext driver
 * recognises it, it is opened read-only and walked from the root: every
 * entry's attributes, a bounded read of each file, its data ranges, link
 * targets and extended attributes.  The walk itself is bounded (entries,
 * depth, reads), so a directory loop only costs the bound; the driver must
 * answer every call in bounded time with an error carrying a message. */
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

#define MAX_ENTRIES 512
#define MAX_DEPTH 8
#define READ_LEN 65536
#define MAX_RANGES 32

static unsigned char read_buf[READ_LEN];

static void expect_message(int r, const char *what)
{
    if (r < 0 && r != -ENOENT && qimg_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz-fs-ext: %s failed (%d) without a message\n", what, r);
        abort();
    }
    qimg_error_clear();
}

struct walk {
    struct qimg_fs *fs;
    int entries;
    int depth;
};

static int xattr_cb(void *opaque, const char *name, const void *value, size_t len)
{
    return 0;
}

static void visit(struct walk *w, qimg_fs_ino ino);

static int dir_cb(void *opaque, const char *name, qimg_fs_ino ino)
{
    struct walk *w = opaque;
    if (++w->entries > MAX_ENTRIES)
        return 1;
    qimg_fs_ino again;
    expect_message(w->fs->drv->lookup(w->fs, ino == 0 ? 2 : ino, name, &again), "lookup");
    visit(w, ino);
    return 0;
}

static void visit(struct walk *w, qimg_fs_ino ino)
{
    struct qimg_fs *fs = w->fs;
    struct qimg_fs_attr a;
    int r = fs->drv->getattr(fs, ino, &a);
    expect_message(r, "getattr");
    if (r < 0)
        return;
    expect_message(fs->drv->listxattr(fs, ino, xattr_cb, NULL), "listxattr");
    if (S_ISDIR(a.mode)) {
        if (w->depth >= MAX_DEPTH)
            return;
        w->depth++;
        r = fs->drv->readdir(fs, ino, dir_cb, w);
        if (r != 1)
            expect_message(r, "readdir");
        w->depth--;
    } else if (S_ISLNK(a.mode)) {
        char target[4096];
        expect_message(fs->drv->readlink(fs, ino, target, sizeof target), "readlink");
    } else if (S_ISREG(a.mode)) {
        size_t got = 0;
        expect_message(fs->drv->read(fs, ino, 0, read_buf, sizeof read_buf, &got), "read");
        if (got > sizeof read_buf)
            abort();
        uint64_t off = 0;
        for (int i = 0; i < MAX_RANGES; i++) {
            uint64_t s = 0, e = 0;
            r = fs->drv->next_data(fs, ino, off, &s, &e);
            expect_message(r, "next_data");
            if (r < 0 || s >= e)
                break;
            if (s < off || e > a.size) {
                fprintf(stderr, "fuzz-fs-ext: data range %llu-%llu outside [%llu, %llu]\n",
                        (unsigned long long)s, (unsigned long long)e,
                        (unsigned long long)off, (unsigned long long)a.size);
                abort();
            }
            expect_message(fs->drv->read(fs, ino, s, read_buf, 4096, &got), "read");
            off = e;
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_input_init("fuzz-fs-ext");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qimg_image *img = NULL;
    if (qimg_open(&img, fuzz_input_load(data, size), "raw", QIMG_OPEN_FORCE_SHARE) < 0)
        abort();
    struct qimg_fs_dev dev = { .img = img, .offset = 0, .size = qimg_size(img) };
    int r = qimg_fs_ext.probe(&dev);
    expect_message(r, "probe");
    struct qimg_fs *fs = NULL;
    if (r > 0) {
        r = qimg_fs_ext.open(&dev, &fs);
        expect_message(r, "open");
    }
    if (fs) {
        struct walk w = { fs, 0, 0 };
        visit(&w, fs->root);
        expect_message(fs->drv->close(fs), "close");
    }
    qimg_close(img);
    qimg_error_clear();
    return 0;
}
