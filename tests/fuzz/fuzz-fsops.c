/* qimg - libFuzzer target: any bytes as a disk holding a filesystem, through
 * the library calls of src/fs/fsops.c.
 *
 * The input goes into a memfd opened as a raw image; the filesystem on the
 * whole disk and on partition 1 is opened read-only, listed from the root
 * (recursively, a bounded number of entries), each small regular file is
 * read with qimg_fs_cat, and the whole tree is copied out into a scratch
 * directory, which must then hold nothing outside it.  Every failure must
 * carry a message. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#define MAX_LISTED 256
#define MAX_DEPTH 6
#define MAX_CAT_SIZE (1u << 20)

static int nullfd = -1;
static char scratch[] = "/tmp/qimg-fuzz-fsops.XXXXXX";

static void expect_message(int r, const char *what)
{
    if (r < 0 && qimg_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz-fsops: %s failed (%d) without a message\n", what, r);
        abort();
    }
    qimg_error_clear();
}

/* Empties a directory we own (modes set by the copy may forbid access). */
static void remove_below(int dirfd)
{
    DIR *d = fdopendir(dirfd);
    if (!d) {
        close(dirfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            fchmodat(dirfd, de->d_name, 0700, 0);
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            if (sub >= 0)
                remove_below(sub);
            unlinkat(dirfd, de->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd, de->d_name, 0);
        }
    }
    closedir(d);
}

static void walk(qimg_fs *fs, const char *path, int depth, int *listed)
{
    struct qimg_fs_entry *list = NULL;
    size_t n = 0;
    int r = qimg_fs_list(fs, path, &list, &n);
    expect_message(r, "list");
    if (r < 0)
        return;
    for (size_t i = 0; i < n && *listed < MAX_LISTED; i++, (*listed)++) {
        char *child = qimg_asprintf("%s/%s", path, list[i].name);
        if (S_ISREG(list[i].mode) && list[i].size <= MAX_CAT_SIZE)
            expect_message(qimg_fs_cat(fs, child, nullfd), "cat");
        if (S_ISDIR(list[i].mode) && depth < MAX_DEPTH)
            walk(fs, child, depth + 1, listed);
        free(child);
    }
    qimg_fs_list_free(list, n);
}

static void exercise(qimg_image *img, unsigned partition)
{
    qimg_fs *fs = NULL;
    int r = qimg_fs_open(&fs, img, partition, false);
    expect_message(r, "open");
    if (r < 0)
        return;
    int listed = 0;
    walk(fs, "", 0, &listed);
    expect_message(qimg_fs_copy_out(fs, "/", scratch), "copy-out");
    int dirfd = open(scratch, O_RDONLY | O_DIRECTORY);
    if (dirfd >= 0)
        remove_below(dirfd);
    expect_message(qimg_fs_close(fs), "close");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_input_init("fuzz-fsops");
    nullfd = open("/dev/null", O_WRONLY);
    if (nullfd < 0 || !mkdtemp(scratch)) {
        perror("fuzz-fsops setup");
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qimg_image *img = NULL;
    if (qimg_open(&img, fuzz_input_load(data, size), "raw", QIMG_OPEN_FORCE_SHARE) < 0)
        abort();
    exercise(img, 0);
    exercise(img, 1);
    qimg_close(img);
    qimg_error_clear();
    return 0;
}
