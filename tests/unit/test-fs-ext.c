/* Unit tests: the ext2/3/4 driver (src/fs/ext*.c) through fs.h, checked by
 * e2fsprogs' own tools (e2fsck -fn, debugfs) on the raw images. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs.h"
#include "internal.h"
#include "unit.h"

#ifdef HAVE_EXT2FS

static char dir[] = "/tmp/qimg-unit-fs-ext.XXXXXX";
static bool have_tools;

static char *path(const char *name) { return qimg_asprintf("%s/%s", dir, name); }

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Output of a command (at most 64 KiB), malloc'ed. */
static char *capture(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *capture(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    char *buf = qimg_xcalloc(1, 65537);
    if (!f)
        return buf;
    size_t n = fread(buf, 1, 65536, f);
    buf[n] = '\0';
    pclose(f);
    return buf;
}

static qimg_image *make_raw(const char *p, uint64_t size)
{
    struct qimg_create_params cp = { .filename = p, .fmt = "raw", .size = size,
                                     .has_size = true, .quiet = true };
    unlink(p);
    CHECK_EQ_INT(qimg_create(&cp), 0);
    qimg_image *img = NULL;
    CHECK_EQ_INT(qimg_open(&img, p, "raw", QIMG_OPEN_RDWR), 0);
    return img;
}

static qimg_image *open_raw(const char *p, bool rw)
{
    qimg_image *img = NULL;
    int r = qimg_open(&img, p, "raw", rw ? QIMG_OPEN_RDWR : 0);
    CHECK_EQ_INT(r, 0);
    return img;
}

static struct qimg_fs_dev dev_of(qimg_image *img, bool rw)
{
    struct qimg_fs_dev d = { .img = img, .offset = 0, .size = qimg_size(img), .writable = rw };
    return d;
}

static struct qimg_fs *mkfs_open(qimg_image *img, const char *type, bool repro)
{
    struct qimg_fs_dev d = dev_of(img, true);
    struct qimg_mkfs_params p = { .type = type, .label = "qimgtest", .reproducible = repro,
                                  .seed = 42, .now = 1700000000 };
    int r = qimg_fs_ext.mkfs(&d, &p);
    if (r < 0)
        fprintf(stderr, "  mkfs: %s\n", qimg_last_error());
    CHECK_EQ_INT(r, 0);
    struct qimg_fs *fs = NULL;
    r = qimg_fs_ext.open(&d, &fs);
    if (r < 0)
        fprintf(stderr, "  open: %s\n", qimg_last_error());
    CHECK_EQ_INT(r, 0);
    return fs;
}

static bool fsck_clean(const char *p)
{
    if (!have_tools)
        return true;
    int rc = run("e2fsck -fn '%s' >'%s.fsck' 2>&1", p, p);
    if (rc != 0) {
        CLEANUP_FREE char *out = capture("cat '%s.fsck'", p);
        fprintf(stderr, "  e2fsck -fn %s: exit %d\n%s", p, rc, out);
    }
    return rc == 0;
}

static struct qimg_fs_attr attr_of(uint32_t mode, int64_t t)
{
    struct qimg_fs_attr a;
    memset(&a, 0, sizeof a);
    a.mode = mode;
    a.uid = 1000;
    a.gid = 100;
    a.atime = a.mtime = a.ctime = a.crtime = t;
    a.atime_ns = 1;
    a.mtime_ns = 123456789;
    a.ctime_ns = 999999999;
    return a;
}

static qimg_fs_ino mk(struct qimg_fs *fs, qimg_fs_ino parent, const char *name, uint32_t mode,
                      const char *target)
{
    struct qimg_fs_attr a = attr_of(mode, 1600000000);
    if (S_ISCHR(mode))
        a.rdev = makedev(4, 64);
    if (S_ISBLK(mode))
        a.rdev = makedev(259, 300000);
    qimg_fs_ino ino = 0;
    int r = fs->drv->create(fs, parent, name, &a, target, &ino);
    if (r < 0)
        fprintf(stderr, "  create %s: %s\n", name, qimg_last_error());
    CHECK_EQ_INT(r, 0);
    return ino;
}

static void put(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t off, const void *buf, size_t len)
{
    int r = fs->drv->write(fs, ino, off, buf, len);
    if (r < 0)
        fprintf(stderr, "  write: %s\n", qimg_last_error());
    CHECK_EQ_INT(r, 0);
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(i * 31 + seed + (i >> 12));
}

/* The tree every type gets; returns nothing, checked by debugfs later. */
static void populate(struct qimg_fs *fs)
{
    const struct qimg_fs_driver *d = fs->drv;
    qimg_fs_ino root = fs->root;
    qimg_fs_ino sub = mk(fs, root, "sub", S_IFDIR | 0750, NULL);
    qimg_fs_ino deep = mk(fs, sub, "deep", S_IFDIR | 0700, NULL);
    qimg_fs_ino small = mk(fs, deep, "small.txt", S_IFREG | 0644, NULL);
    put(fs, small, 0, "hello\n", 6);

    /* 10 MB of data in odd-sized chunks */
    qimg_fs_ino big = mk(fs, root, "big", S_IFREG | 0600, NULL);
    size_t bigsz = 10 * 1000 * 1000;
    unsigned char *b = qimg_xmalloc(bigsz);
    fill(b, bigsz, 7);
    for (size_t off = 0; off < bigsz; off += 1234567)
        put(fs, big, off, b + off, QIMG_MIN((size_t)1234567, bigsz - off));
    free(b);

    /* sparse: data at 1 MiB and at 64 MiB + 100, zeros in between */
    qimg_fs_ino sparse = mk(fs, root, "sparse", S_IFREG | 0644, NULL);
    unsigned char blk[8192];
    fill(blk, sizeof blk, 3);
    put(fs, sparse, 1 << 20, blk, sizeof blk);
    memset(blk, 0, sizeof blk);
    put(fs, sparse, 2 << 20, blk, sizeof blk);        /* zeros: stay a hole */
    fill(blk, sizeof blk, 5);
    put(fs, sparse, (64u << 20) + 100, blk, 1000);

    mk(fs, root, "short-link", S_IFLNK | 0777, "sub/deep/small.txt");
    char longt[300];
    memset(longt, 'x', sizeof longt - 1);
    longt[sizeof longt - 1] = '\0';
    memcpy(longt, "/very/long/", 11);
    mk(fs, root, "long-link", S_IFLNK | 0777, longt);

    CHECK_EQ_INT(d->link(fs, root, "hardlink", small), 0);
    mk(fs, root, "tty", S_IFCHR | 0620, NULL);
    mk(fs, root, "nvme", S_IFBLK | 0660, NULL);
    mk(fs, root, "fifo", S_IFIFO | 0644, NULL);
    mk(fs, root, "sock", S_IFSOCK | 0755, NULL);

    char name255[256];
    memset(name255, 'n', 255);
    name255[255] = '\0';
    mk(fs, root, name255, S_IFREG | 0644, NULL);
    mk(fs, root, "h\xc3\xa9llo w\xc3\xb6rld \xe2\x98\x83", S_IFREG | 0644, NULL);

    qimg_fs_ino many = mk(fs, root, "many", S_IFDIR | 0755, NULL);
    for (int i = 0; i < 2000; i++) {
        char n[64];
        snprintf(n, sizeof n, "entry-with-a-longish-name-%05d", i);
        qimg_fs_ino f = mk(fs, many, n, (i % 10 == 0 ? S_IFDIR : S_IFREG) | 0644, NULL);
        if (i % 7 == 0 && i % 10 != 0)
            put(fs, f, 0, n, strlen(n));
    }

    CHECK_EQ_INT(d->setxattr(fs, small, "user.comment", "a comment", 9), 0);
    char bigval[800];
    memset(bigval, 'v', sizeof bigval);
    CHECK_EQ_INT(d->setxattr(fs, big, "user.big", bigval, sizeof bigval), 0);
    CHECK_EQ_INT(d->setxattr(fs, sub, "trusted.t", "1", 1), 0);

    /* duplicate names are refused */
    struct qimg_fs_attr a = attr_of(S_IFREG | 0644, 0);
    qimg_fs_ino dummy;
    CHECK_EQ_INT(d->create(fs, root, "big", &a, NULL, &dummy), -EEXIST);
    CHECK_EQ_INT(d->link(fs, root, "sparse", small), -EEXIST);

    /* unlink frees: a file made and removed leaves nothing behind */
    qimg_fs_ino gone = mk(fs, root, "gone", S_IFREG | 0644, NULL);
    fill(blk, sizeof blk, 9);
    put(fs, gone, 0, blk, sizeof blk);
    CHECK_EQ_INT(d->setxattr(fs, gone, "user.big", bigval, sizeof bigval), 0);
    CHECK_EQ_INT(d->unlink(fs, root, "gone"), 0);
    qimg_fs_ino x;
    CHECK_EQ_INT(d->lookup(fs, root, "gone", &x), -ENOENT);

    /* truncate: shrink into a block, extend with a hole */
    qimg_fs_ino t = mk(fs, root, "truncated", S_IFREG | 0644, NULL);
    fill(blk, sizeof blk, 11);
    put(fs, t, 0, blk, sizeof blk);
    CHECK_EQ_INT(d->truncate(fs, t, 5000), 0);
    CHECK_EQ_INT(d->truncate(fs, t, 20000), 0);

    /* setattr after the data: times stick */
    struct qimg_fs_attr sa = attr_of(S_IFREG | 0640, 1234567890);
    sa.uid = 70000;
    sa.gid = 80000;
    sa.mtime = 4102444800ll;  /* 2100-01-01: needs the epoch bits */
    CHECK_EQ_INT(d->setattr(fs, big, &sa), 0);
    struct qimg_fs_attr ra;
    CHECK_EQ_INT(d->getattr(fs, big, &ra), 0);
    CHECK_EQ_INT(ra.mode, S_IFREG | 0640);
    CHECK_EQ_INT(ra.uid, 70000);
    CHECK_EQ_INT(ra.gid, 80000);
    CHECK_EQ_INT(ra.size, bigsz);
    CHECK_EQ_INT(ra.mtime, 4102444800ll);
    CHECK_EQ_INT(ra.mtime_ns, 123456789);
}

/* Reads back what populate wrote, through the driver. */
static void verify_tree(struct qimg_fs *fs)
{
    const struct qimg_fs_driver *d = fs->drv;
    qimg_fs_ino big, sparse, sub, deep, small, link, many;
    CHECK_EQ_INT(d->lookup(fs, fs->root, "big", &big), 0);
    size_t bigsz = 10 * 1000 * 1000, got = 0;
    unsigned char *b = qimg_xmalloc(bigsz), *want = qimg_xmalloc(bigsz);
    fill(want, bigsz, 7);
    CHECK_EQ_INT(d->read(fs, big, 0, b, bigsz, &got), 0);
    CHECK_EQ_INT(got, bigsz);
    CHECK(memcmp(b, want, bigsz) == 0);
    CHECK_EQ_INT(d->read(fs, big, bigsz - 10, b, 100, &got), 0);
    CHECK_EQ_INT(got, 10);
    free(b);
    free(want);

    CHECK_EQ_INT(d->lookup(fs, fs->root, "sparse", &sparse), 0);
    uint64_t s, e;
    CHECK_EQ_INT(d->next_data(fs, sparse, 0, &s, &e), 0);
    CHECK_EQ_INT(s, 1 << 20);
    CHECK_EQ_INT(e, (1 << 20) + 8192);
    CHECK_EQ_INT(d->next_data(fs, sparse, e, &s, &e), 0);
    CHECK_EQ_INT(s, 64u << 20);
    CHECK_EQ_INT(e, (64u << 20) + 1100);
    CHECK_EQ_INT(d->next_data(fs, sparse, e, &s, &e), 0);
    CHECK_EQ_INT(s, (64u << 20) + 1100);
    CHECK_EQ_INT(e, s);

    CHECK_EQ_INT(d->lookup(fs, fs->root, "sub", &sub), 0);
    CHECK_EQ_INT(d->lookup(fs, sub, "deep", &deep), 0);
    CHECK_EQ_INT(d->lookup(fs, deep, "small.txt", &small), 0);
    char buf[512];
    CHECK_EQ_INT(d->read(fs, small, 0, buf, sizeof buf, &got), 0);
    CHECK_EQ_INT(got, 6);
    CHECK(memcmp(buf, "hello\n", 6) == 0);
    struct qimg_fs_attr a;
    CHECK_EQ_INT(d->getattr(fs, small, &a), 0);
    CHECK_EQ_INT(a.nlink, 2);
    CHECK_EQ_INT(a.mtime, 1600000000);
    CHECK_EQ_INT(d->getattr(fs, sub, &a), 0);
    CHECK_EQ_INT(a.nlink, 3);
    CHECK_EQ_INT(a.mode, S_IFDIR | 0750);

    CHECK_EQ_INT(d->lookup(fs, fs->root, "short-link", &link), 0);
    CHECK_EQ_INT(d->readlink(fs, link, buf, sizeof buf), 0);
    CHECK_EQ_STR(buf, "sub/deep/small.txt");
    CHECK_EQ_INT(d->readlink(fs, link, buf, 5), -ENAMETOOLONG);
    CHECK_EQ_INT(d->lookup(fs, fs->root, "long-link", &link), 0);
    CHECK_EQ_INT(d->readlink(fs, link, buf, sizeof buf), 0);
    CHECK_EQ_INT(strlen(buf), 299);
    CHECK(strncmp(buf, "/very/long/xxx", 14) == 0);

    qimg_fs_ino dev;
    CHECK_EQ_INT(d->lookup(fs, fs->root, "nvme", &dev), 0);
    CHECK_EQ_INT(d->getattr(fs, dev, &a), 0);
    CHECK_EQ_INT(a.rdev, makedev(259, 300000));
    CHECK_EQ_INT(d->lookup(fs, fs->root, "tty", &dev), 0);
    CHECK_EQ_INT(d->getattr(fs, dev, &a), 0);
    CHECK_EQ_INT(a.rdev, makedev(4, 64));

    CHECK_EQ_INT(d->lookup(fs, fs->root, "many", &many), 0);
    CHECK_EQ_INT(d->getattr(fs, many, &a), 0);
    CHECK_EQ_INT(a.nlink, 202);
}

struct count_ctx { int n; };
static int count_entry(void *opaque, const char *name, qimg_fs_ino ino)
{
    ((struct count_ctx *)opaque)->n++;
    return 0;
}

static void test_type(const char *type)
{
    CLEANUP_FREE char *p = path(type);
    qimg_image *img = make_raw(p, 256ull << 20);
    struct qimg_fs *fs = mkfs_open(img, type, false);
    if (!fs) {
        qimg_close(img);
        return;
    }
    CHECK_EQ_STR(fs->type, type);
    populate(fs);
    verify_tree(fs);
    CHECK_EQ_INT(fs->drv->close(fs), 0);
    CHECK_EQ_INT(qimg_close(img), 0);
    CHECK(fsck_clean(p));

    /* read back through a read-only open */
    img = open_raw(p, false);
    struct qimg_fs_dev d = dev_of(img, false);
    fs = NULL;
    CHECK_EQ_INT(qimg_fs_ext.probe(&d), 1);
    CHECK_EQ_INT(qimg_fs_ext.open(&d, &fs), 0);
    if (fs) {
        CHECK_EQ_STR(fs->type, type);
        verify_tree(fs);
        qimg_fs_ino many;
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "many", &many), 0);
        struct count_ctx c = { 0 };
        CHECK_EQ_INT(fs->drv->readdir(fs, many, count_entry, &c), 0);
        CHECK_EQ_INT(c.n, 2000);
        CHECK_EQ_INT(fs->drv->close(fs), 0);
    }
    qimg_close(img);

    if (!have_tools)
        return;
    /* debugfs sees the same things */
    CLEANUP_FREE char *st = capture("debugfs -R 'stat /big' '%s' 2>/dev/null", p);
    CHECK(strstr(st, "User: 70000") != NULL);
    CHECK(strstr(st, "Size: 10000000") != NULL);
    if (strcmp(type, "ext4") == 0)
        CHECK(strstr(st, "mtime: 0xf4865700:1d6f3455") != NULL);
    CLEANUP_FREE char *out = path("rdump");
    run("rm -rf '%s' && mkdir -p '%s'", out, out);
    CHECK_EQ_INT(run("debugfs -R 'rdump / %s' '%s' >/dev/null 2>&1", out, p), 0);
    CHECK_EQ_INT(run("printf 'hello\\n' | cmp - '%s/sub/deep/small.txt'", out), 0);
    CHECK_EQ_INT(run("test \"$(readlink '%s/short-link')\" = sub/deep/small.txt", out), 0);
    CHECK_EQ_INT(run("test $(ls '%s/many' | wc -l) = 2000", out), 0);
    CHECK_EQ_INT(run("test $(stat -c %%s '%s/sparse') = %u", out, (64u << 20) + 1100), 0);
    CLEANUP_FREE char *x = capture("debugfs -R 'ea_get /sub/deep/small.txt user.comment' "
                                   "'%s' 2>/dev/null", p);
    CHECK(strstr(x, "a comment") != NULL);
    /* the unlinked file's blocks and inode are free again: e2fsck agreed */
    run("rm -rf '%s'", out);
}


/* Two reproducible mkfs + populate runs give byte-identical images. */
TEST(reproducible)
{
    for (int i = 0; i < 2; i++) {
        CLEANUP_FREE char *p = path(i ? "repro-b" : "repro-a");
        qimg_image *img = make_raw(p, 64ull << 20);
        struct qimg_fs_dev d = dev_of(img, true);
        struct qimg_mkfs_params mp = { .type = "ext4", .label = "r", .reproducible = true,
                                       .seed = 7, .now = 1600000000 };
        CHECK_EQ_INT(qimg_fs_ext.mkfs(&d, &mp), 0);
        CHECK_EQ_INT(d.now, 1600000000);
        struct qimg_fs *fs = NULL;
        CHECK_EQ_INT(qimg_fs_ext.open(&d, &fs), 0);
        if (fs) {
            qimg_fs_ino f = mk(fs, fs->root, "f", S_IFREG | 0644, NULL);
            unsigned char b[20000];
            fill(b, sizeof b, 1);
            put(fs, f, 0, b, sizeof b);
            mk(fs, fs->root, "d", S_IFDIR | 0755, NULL);
            CHECK_EQ_INT(fs->drv->close(fs), 0);
        }
        CHECK_EQ_INT(qimg_close(img), 0);
        CHECK(fsck_clean(p));
        sleep(i == 0 ? 1 : 0);   /* a clock second passes between the runs */
    }
    CLEANUP_FREE char *a = path("repro-a");
    CLEANUP_FREE char *b = path("repro-b");
    CHECK_EQ_INT(run("cmp -s '%s' '%s'", a, b), 0);
    if (have_tools) {
        CLEANUP_FREE char *uuid = capture("dumpe2fs -h '%s' 2>/dev/null | grep -E "
                                          "'^(Filesystem UUID|Filesystem created|Last write)'", a);
        CHECK(strstr(uuid, "2020") != NULL);
    }
}

/* A tree made by mke2fs -d reads back through the driver; then a writable
 * open adds, replaces and removes files and e2fsck stays happy. */
struct tree_ctx { struct qimg_fs *fs; const char *local; int files; int bad; };

static int compare_entry(void *opaque, const char *name, qimg_fs_ino ino)
{
    struct tree_ctx *c = opaque;
    struct qimg_fs *fs = c->fs;
    CLEANUP_FREE char *lp = qimg_asprintf("%s/%s", c->local, name);
    struct stat st;
    if (!strcmp(name, "lost+found"))
        return 0;
    if (lstat(lp, &st) < 0) {
        fprintf(stderr, "  %s: not in the source\n", lp);
        c->bad++;
        return 0;
    }
    struct qimg_fs_attr a;
    CHECK_EQ_INT(fs->drv->getattr(fs, ino, &a), 0);
    if (a.mode != st.st_mode || (S_ISREG(st.st_mode) && a.size != (uint64_t)st.st_size) ||
        a.mtime != st.st_mtim.tv_sec) {
        fprintf(stderr, "  %s: mode/size/mtime differ\n", lp);
        c->bad++;
    }
    if (S_ISDIR(st.st_mode)) {
        struct tree_ctx sub = { fs, lp, 0, 0 };
        CHECK_EQ_INT(fs->drv->readdir(fs, ino, compare_entry, &sub), 0);
        c->files += sub.files;
        c->bad += sub.bad;
    } else if (S_ISLNK(st.st_mode)) {
        char t1[4096], t2[4096];
        ssize_t n = readlink(lp, t2, sizeof t2 - 1);
        t2[n < 0 ? 0 : n] = '\0';
        CHECK_EQ_INT(fs->drv->readlink(fs, ino, t1, sizeof t1), 0);
        CHECK_EQ_STR(t1, t2);
    } else if (S_ISREG(st.st_mode)) {
        unsigned char *want = qimg_xmalloc((size_t)st.st_size + 1);
        unsigned char *got = qimg_xmalloc((size_t)st.st_size + 1);
        int fd = open(lp, O_RDONLY);
        CHECK(fd >= 0 && read(fd, want, (size_t)st.st_size) == st.st_size);
        close(fd);
        size_t n = 0;
        CHECK_EQ_INT(fs->drv->read(fs, ino, 0, got, (size_t)st.st_size + 1, &n), 0);
        if (n != (size_t)st.st_size || memcmp(want, got, n) != 0) {
            fprintf(stderr, "  %s: content differs\n", lp);
            c->bad++;
        }
        free(want);
        free(got);
    }
    c->files++;
    return 0;
}

static void make_source_tree(const char *src)
{
    CHECK_EQ_INT(run("mkdir -p '%s/d/e' '%s/wide' && printf 'hello\\n' > '%s/a.txt' && "
                     "ln -s a.txt '%s/link' && ln -s /%0200d '%s/longlink' && "
                     "head -c 3000000 /dev/urandom > '%s/d/rand' && "
                     "truncate -s 50M '%s/d/sparse' && printf x | dd of='%s/d/sparse' bs=1 "
                     "seek=20000000 conv=notrunc 2>/dev/null && ln '%s/a.txt' '%s/d/e/hard' && "
                     "for i in $(seq 1 400); do echo $i > '%s/wide/file-number-'$i; done",
                     src, src, src, src, 0, src, src, src, src, src, src, src), 0);
}

TEST(read_mke2fs_image)
{
    if (!have_tools)
        return;
    CLEANUP_FREE char *src = path("src");
    CLEANUP_FREE char *p = path("mke2fs.img");
    make_source_tree(src);
    CHECK_EQ_INT(run("truncate -s 64M '%s' && mke2fs -q -F -t ext4 -d '%s' '%s'", p, src, p), 0);
    qimg_image *img = open_raw(p, false);
    struct qimg_fs_dev d = dev_of(img, false);
    struct qimg_fs *fs = NULL;
    CHECK_EQ_INT(qimg_fs_ext.open(&d, &fs), 0);
    if (fs) {
        CHECK_EQ_STR(fs->type, "ext4");
        struct tree_ctx c = { fs, src, 0, 0 };
        CHECK_EQ_INT(fs->drv->readdir(fs, fs->root, compare_entry, &c), 0);
        CHECK_EQ_INT(c.bad, 0);
        CHECK(c.files >= 408);
        qimg_fs_ino sp, dd;
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "d", &dd), 0);
        CHECK_EQ_INT(fs->drv->lookup(fs, dd, "sparse", &sp), 0);
        uint64_t s, e;
        CHECK_EQ_INT(fs->drv->next_data(fs, sp, 0, &s, &e), 0);
        CHECK(s >= 19 * 1000 * 1000 && s <= 20000000 && e > 20000000 && e <= 20004096 + 4096);
        /* writing is refused on a read-only open */
        struct qimg_fs_attr a = attr_of(S_IFREG | 0644, 0);
        qimg_fs_ino x;
        CHECK_EQ_INT(fs->drv->create(fs, fs->root, "new", &a, NULL, &x), -EROFS);
        CHECK_EQ_INT(fs->drv->close(fs), 0);
    }
    qimg_close(img);

    /* copy-in style changes on the mke2fs image (htree directory included) */
    img = open_raw(p, true);
    d = dev_of(img, true);
    fs = NULL;
    CHECK_EQ_INT(qimg_fs_ext.open(&d, &fs), 0);
    if (fs) {
        qimg_fs_ino wide, f;
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "wide", &wide), 0);
        for (int i = 0; i < 300; i++) {
            char n[64];
            snprintf(n, sizeof n, "added-%d", i);
            f = mk(fs, wide, n, S_IFREG | 0644, NULL);
            put(fs, f, 0, n, strlen(n));
        }
        CHECK_EQ_INT(fs->drv->unlink(fs, wide, "file-number-7"), 0);
        CHECK_EQ_INT(fs->drv->unlink(fs, fs->root, "a.txt"), 0);   /* one of two links */
        CHECK_EQ_INT(fs->drv->unlink(fs, fs->root, "a.txt"), -ENOENT);
        CHECK_EQ_INT(fs->drv->close(fs), 0);
    }
    CHECK_EQ_INT(qimg_close(img), 0);
    CHECK(fsck_clean(p));
    CLEANUP_FREE char *cat = capture("debugfs -R 'cat /wide/added-299' '%s' 2>/dev/null", p);
    CHECK_EQ_STR(cat, "added-299");
    CLEANUP_FREE char *cat2 = capture("debugfs -R 'cat /d/e/hard' '%s' 2>/dev/null", p);
    CHECK_EQ_STR(cat2, "hello\n");
}

/* Writable opens refuse a dirty filesystem, one whose journal needs
 * recovery and unsupported features, and write nothing. */
static void expect_refused(const char *p, const char *debugfs_cmd, int err)
{
    CHECK_EQ_INT(run("truncate -s 16M '%s' && mke2fs -q -F -t ext4 '%s' && "
                     "debugfs -w -R '%s' '%s' >/dev/null 2>&1", p, p, debugfs_cmd, p), 0);
    CLEANUP_FREE char *before = capture("md5sum < '%s'", p);
    qimg_image *img = open_raw(p, true);
    struct qimg_fs_dev d = dev_of(img, true);
    struct qimg_fs *fs = NULL;
    CHECK_EQ_INT(qimg_fs_ext.open(&d, &fs), err);
    CHECK(strlen(qimg_last_error()) > 10);
    if (fs)
        fs->drv->close(fs);
    qimg_close(img);
    CLEANUP_FREE char *after = capture("md5sum < '%s'", p);
    CHECK_EQ_STR(after, before);
    /* read-only opens still work */
    img = open_raw(p, false);
    d = dev_of(img, false);
    fs = NULL;
    CHECK_EQ_INT(qimg_fs_ext.open(&d, &fs), 0);
    if (fs)
        fs->drv->close(fs);
    qimg_close(img);
}

TEST(writable_open_refusals)
{
    if (!have_tools)
        return;
    CLEANUP_FREE char *p = path("refuse.img");
    expect_refused(p, "ssv state 0", -EUCLEAN);
    expect_refused(p, "ssv state 3", -EUCLEAN);
    expect_refused(p, "feature needs_recovery", -EUCLEAN);
    expect_refused(p, "ssv last_orphan 12", -EUCLEAN);
    expect_refused(p, "feature casefold", -ENOTSUP);
}

/* Hostile images: errors with messages, never crashes or hangs. */
static struct qimg_fs *open_ro(const char *p, qimg_image **img)
{
    *img = open_raw(p, false);
    struct qimg_fs_dev d = dev_of(*img, false);
    struct qimg_fs *fs = NULL;
    CHECK_EQ_INT(qimg_fs_ext.open(&d, &fs), 0);
    return fs;
}

static int ignore_entry(void *opaque, const char *name, qimg_fs_ino ino) { return 0; }

TEST(hostile_images)
{
    if (!have_tools)
        return;
    CLEANUP_FREE char *src = path("hsrc");
    CLEANUP_FREE char *p = path("hostile.img");
    CHECK_EQ_INT(run("mkdir -p '%s/dir' && echo data > '%s/dir/f' && "
                     "head -c 100000 /dev/urandom > '%s/file'", src, src, src), 0);

    /* a directory entry with rec_len 0 (ext2: no checksum hides it) */
    CHECK_EQ_INT(run("truncate -s 8M '%s' && mke2fs -q -F -t ext2 -d '%s' '%s'", p, src, p), 0);
    CLEANUP_FREE char *blk = capture("debugfs -R 'blocks /dir' '%s' 2>/dev/null", p);
    long b = atol(blk);
    CHECK(b > 0);
    CHECK_EQ_INT(run("printf '\\000\\000' | dd of='%s' bs=1 seek=%ld conv=notrunc 2>/dev/null",
                     p, b * 1024 + 4), 0);
    qimg_image *img;
    struct qimg_fs *fs = open_ro(p, &img);
    if (fs) {
        qimg_fs_ino dd, x;
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "dir", &dd), 0);
        qimg_error_clear();
        int r = fs->drv->readdir(fs, dd, ignore_entry, NULL);
        CHECK(r < 0 && qimg_last_error()[0]);
        r = fs->drv->lookup(fs, dd, "f", &x);
        CHECK(r < 0);
        fs->drv->close(fs);
    }
    qimg_close(img);

    /* a directory whose triple-indirect tree points 16 million times at its
     * own block: ends with an error at once */
    CHECK_EQ_INT(run("truncate -s 8M '%s' && mke2fs -q -F -t ext2 -d '%s' '%s'", p, src, p), 0);
    CLEANUP_FREE char *blk2 = capture("debugfs -R 'blocks /dir' '%s' 2>/dev/null", p);
    CHECK_EQ_INT(run("python3 -c \"import struct\nf = open('%s', 'r+b')\n"
                     "for b, v in ((7000, 7001), (7001, 7002), (7002, %ld)):\n"
                     "    f.seek(b * 1024); f.write(struct.pack('<I', v) * 256)\" && "
                     "debugfs -w -R 'sif /dir block[TIND] 7000' '%s' 2>/dev/null",
                     p, atol(blk2), p), 0);
    /* and a 16 GiB file made of one block shared the same way */
    CHECK_EQ_INT(run("python3 -c \"import struct\nf = open('%s', 'r+b')\n"
                     "for b, v in ((7010, 7011), (7011, 7012), (7012, 7013)):\n"
                     "    f.seek(b * 1024); f.write(struct.pack('<I', v) * 256)\" && "
                     "debugfs -w -R 'sif /file block[TIND] 7010' '%s' 2>/dev/null && "
                     "debugfs -w -R 'sif /file size 0x400000000' '%s' 2>/dev/null", p, p, p), 0);
    fs = open_ro(p, &img);
    if (fs) {
        qimg_fs_ino dd, f;
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "dir", &dd), 0);
        qimg_error_clear();
        CHECK_EQ_INT(fs->drv->readdir(fs, dd, ignore_entry, NULL), -ELOOP);
        CHECK(strstr(qimg_last_error(), "shared") != NULL);
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "file", &f), 0);
        uint64_t s0 = 0, e0 = 0, off = 0;
        int r = 0;
        for (int i = 0; i < 1000 && r == 0 && off < (16ull << 30); i++) {
            r = fs->drv->next_data(fs, f, off, &s0, &e0);
            off = e0 > off ? e0 : off + 1;
        }
        CHECK_EQ_INT(r, -EIO);
        fs->drv->close(fs);
    }
    qimg_close(img);

    /* an exabyte-sized file, an extent past the device, a directory that
     * contains itself (ext4: debugfs keeps the checksums right) */
    CHECK_EQ_INT(run("truncate -s 8M '%s' && mke2fs -q -F -t ext4 -d '%s' '%s' && "
                     "debugfs -w -R 'sif /dir/f size 0x1000000000000000' '%s' 2>/dev/null && "
                     "debugfs -w -R 'sif /file block[5] 0xfffff000' '%s' 2>/dev/null && "
                     "debugfs -w -R 'ln /dir /dir/self' '%s' 2>/dev/null", p, src, p, p, p, p),
                 0);
    fs = open_ro(p, &img);
    if (fs) {
        qimg_fs_ino dd, f, big;
        struct qimg_fs_attr a;
        unsigned char buf[4096];
        size_t got;
        uint64_t s, e;
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "dir", &dd), 0);
        CHECK_EQ_INT(fs->drv->lookup(fs, dd, "f", &f), 0);
        qimg_error_clear();
        CHECK(fs->drv->getattr(fs, f, &a) < 0 && qimg_last_error()[0]);
        CHECK(fs->drv->read(fs, f, 0, buf, sizeof buf, &got) < 0);
        CHECK(fs->drv->next_data(fs, f, 0, &s, &e) < 0);
        CHECK_EQ_INT(fs->drv->lookup(fs, fs->root, "file", &big), 0);
        qimg_error_clear();
        CHECK(fs->drv->read(fs, big, 0, buf, sizeof buf, &got) < 0 && qimg_last_error()[0]);
        CHECK(fs->drv->next_data(fs, big, 0, &s, &e) < 0);
        qimg_error_clear();
        CHECK_EQ_INT(fs->drv->readdir(fs, dd, ignore_entry, NULL), -ELOOP);
        CHECK(strstr(qimg_last_error(), "contains itself") != NULL);
        fs->drv->close(fs);
    }
    qimg_close(img);
}

/* Running out of blocks or inodes gives -ENOSPC and leaves a filesystem
 * e2fsck finds clean once the partial file is removed. */
TEST(out_of_space)
{
    CLEANUP_FREE char *p = path("full");
    qimg_image *img = make_raw(p, 8ull << 20);
    struct qimg_fs *fs = mkfs_open(img, "ext4", false);
    if (fs) {
        const struct qimg_fs_driver *d = fs->drv;
        qimg_fs_ino f = mk(fs, fs->root, "big", S_IFREG | 0644, NULL);
        size_t chunk = 1 << 20;
        unsigned char *b = qimg_xmalloc(chunk);
        int r = 0;
        for (uint64_t off = 0; r == 0 && off < (64u << 20); off += chunk) {
            fill(b, chunk, (unsigned)off);
            r = d->write(fs, f, off, b, chunk);
        }
        free(b);
        CHECK_EQ_INT(r, -ENOSPC);
        CHECK_EQ_INT(d->unlink(fs, fs->root, "big"), 0);
        int made = 0;
        for (int i = 0; i < 100000; i++) {
            char n[32];
            struct qimg_fs_attr a = attr_of(S_IFREG | 0644, 0);
            qimg_fs_ino x;
            snprintf(n, sizeof n, "f%d", i);
            r = d->create(fs, fs->root, n, &a, NULL, &x);
            if (r < 0)
                break;
            made++;
        }
        CHECK_EQ_INT(r, -ENOSPC);
        CHECK(made > 100);
        CHECK_EQ_INT(d->close(fs), 0);
    }
    CHECK_EQ_INT(qimg_close(img), 0);
    CHECK(fsck_clean(p));
}

TEST(ext4_tree) { test_type("ext4"); }
TEST(ext3_tree) { test_type("ext3"); }
TEST(ext2_tree) { test_type("ext2"); }

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    have_tools = run("command -v e2fsck >/dev/null && command -v debugfs >/dev/null") == 0;
    RUN(ext4_tree);
    RUN(ext3_tree);
    RUN(ext2_tree);
    RUN(reproducible);
    RUN(read_mke2fs_image);
    RUN(writable_open_refusals);
    RUN(hostile_images);
    RUN(out_of_space);
    if (!getenv("KEEP")) run("rm -rf '%s'", dir);
    return UNIT_DONE();
}

#else
int main(void)
{
    printf("SKIP test-fs-ext (built without libext2fs)\n");
    return 0;
}
#endif
