/* Unit tests: qimg_create_from (src/fs/create-from.c, populate.c) through
 * the public API: images built from a directory and from tar archives,
 * read back with qimg_fs_open / qimg_fs_list / qimg_fs_cat; reproducible
 * builds; failures leave no file.  (tests/cli/t-fs-create.sh checks the
 * results with e2fsprogs, dosfstools, mtools, sfdisk and sgdisk.) */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#ifdef HAVE_LIBARCHIVE
#include <archive.h>
#include <archive_entry.h>
#endif

#include "fs.h"
#include "internal.h"
#include "unit.h"

#if defined(HAVE_EXT2FS) && defined(HAVE_LIBARCHIVE)

static char dir[] = "/tmp/qimg-unit-fs-create.XXXXXX";

static char *path(const char *name) { return qimg_asprintf("%s/%s", dir, name); }

static void put_file(const char *name, const char *text, int64_t mtime)
{
    CLEANUP_FREE char *p = path(name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK_EQ_INT(write(fd, text, strlen(text)), (long long)strlen(text));
    close(fd);
    struct timeval tv[2] = { { mtime, 0 }, { mtime, 0 } };
    CHECK_EQ_INT(utimes(p, tv), 0);
}

/* src/: sub/deep.txt, hello, hard (link of hello), link -> hello, sparse */
static void make_tree(void)
{
    CLEANUP_FREE char *src = path("src");
    CLEANUP_FREE char *sub = path("src/sub");
    CHECK_EQ_INT(mkdir(src, 0755), 0);
    CHECK_EQ_INT(mkdir(sub, 0750), 0);
    put_file("src/sub/deep.txt", "deep\n", 1500000000);
    put_file("src/hello", "hello world\n", 1600000000);
    CLEANUP_FREE char *hello = path("src/hello");
    CLEANUP_FREE char *hard = path("src/hard");
    CLEANUP_FREE char *lnk = path("src/link");
    CHECK_EQ_INT(link(hello, hard), 0);
    CHECK_EQ_INT(symlink("hello", lnk), 0);
    CLEANUP_FREE char *sparse = path("src/sparse");
    int fd = open(sparse, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK_EQ_INT(pwrite(fd, "end", 3, (64 << 20) - 3), 3);
    close(fd);
}

/* A tar whose members come in an odd order: a file before its parents. */
static void make_tar(const char *name)
{
    CLEANUP_FREE char *p = path(name);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    CHECK_EQ_INT(archive_write_open_filename(a, p), ARCHIVE_OK);
    struct { const char *name; unsigned type, mode; const char *data; int64_t mtime; } m[] = {
        { "x/y/file", AE_IFREG, 0640, "tar data\n", 1400000000 },
        { "x/y", AE_IFDIR, 0700, NULL, 1300000000 },
        { "./", AE_IFDIR, 0755, NULL, 1200000000 },
        { "top", AE_IFREG, 0644, "top\n", 1400000000 },
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(m); i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_filetype(e, m[i].type);
        archive_entry_set_perm(e, m[i].mode);
        archive_entry_set_mtime(e, m[i].mtime, 0);
        archive_entry_set_size(e, m[i].data ? (la_int64_t)strlen(m[i].data) : 0);
        CHECK_EQ_INT(archive_write_header(a, e), ARCHIVE_OK);
        if (m[i].data)
            CHECK_EQ_INT(archive_write_data(a, m[i].data, strlen(m[i].data)),
                         (long long)strlen(m[i].data));
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

static int build(const char *out, const char *fmt, const char *source, const char *fs,
                 const char *part, struct qimg_create_from_params *res)
{
    CLEANUP_FREE char *o = path(out);
    CLEANUP_FREE char *s = source[0] == '/' ? qimg_strdup(source) : path(source);
    struct qimg_create_from_params p = {
        .filename = o, .fmt = fmt, .source = s, .fs_type = fs, .partition = part,
    };
    if (res) {
        p.reproducible = res->reproducible;
        p.source_date_epoch = res->source_date_epoch;
        p.has_size = res->has_size;
        p.size = res->size;
    }
    int r = qimg_create_from(&p);
    if (res)
        *res = p;
    return r;
}

/* Open an image's filesystem, list a directory into "name mode nlink;..." */
static char *listing(qimg_fs *fs, const char *dirpath)
{
    struct qimg_fs_entry *list = NULL;
    size_t n = 0;
    struct qimg_strbuf b = { 0 };
    CHECK_EQ_INT(qimg_fs_list(fs, dirpath, &list, &n), 0);
    for (size_t i = 0; i < n; i++)
        qimg_strbuf_addf(&b, "%s %o %u%s%s;", list[i].name, list[i].mode, list[i].nlink,
                         list[i].link_target ? " -> " : "",
                         list[i].link_target ? list[i].link_target : "");
    qimg_fs_list_free(list, n);
    return b.s ? b.s : qimg_strdup("");
}

static char *cat(qimg_fs *fs, const char *p)
{
    char *buf = qimg_xcalloc(1, 4096);
    FILE *f = tmpfile();
    CHECK(f != NULL);
    CHECK_EQ_INT(qimg_fs_cat(fs, p, fileno(f)), 0);
    rewind(f);
    size_t n = fread(buf, 1, 4095, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static qimg_fs *open_fs(const char *name, const char *fmt, unsigned part, qimg_image **img)
{
    CLEANUP_FREE char *p = path(name);
    qimg_fs *fs = NULL;
    CHECK_EQ_INT(qimg_open(img, p, fmt, 0), 0);
    if (*img)
        CHECK_EQ_INT(qimg_fs_open(&fs, *img, part, false), 0);
    return fs;
}

/* mtime of the entry at p (listed from its parent: a directory lists its content) */
static int64_t mtime_of(qimg_fs *fs, const char *p)
{
    struct qimg_fs_entry *list = NULL;
    size_t n = 0;
    int64_t t = -1;
    const char *slash = strrchr(p, '/');
    CLEANUP_FREE char *parent = slash == p ? qimg_strdup("/") : strndup(p, (size_t)(slash - p));
    if (qimg_fs_list(fs, parent, &list, &n) == 0)
        for (size_t i = 0; i < n; i++)
            if (strcmp(list[i].name, slash + 1) == 0)
                t = list[i].mtime;
    qimg_fs_list_free(list, n);
    return t;
}

TEST(dir_to_ext4_raw)
{
    struct qimg_create_from_params res = { 0 };
    CHECK_EQ_INT(build("a.raw", "raw", "src", NULL, NULL, &res), 0);
    CHECK(res.chosen_size > 0 && res.chosen_size % (1 << 20) == 0);
    CHECK(res.chosen_size < (48u << 20));          /* the sparse file takes no room */
    qimg_image *img = NULL;
    qimg_fs *fs = open_fs("a.raw", "raw", 0, &img);
    if (!fs)
        return;
    CHECK_EQ_STR(qimg_fs_type(fs), "ext4");
    CLEANUP_FREE char *l = listing(fs, "/");
    CHECK_EQ_STR(l, "hard 100644 2;hello 100644 2;link 120777 1 -> hello;lost+found 40700 2;"
                    "sparse 100600 1;sub 40750 2;");
    CLEANUP_FREE char *c = cat(fs, "/hard");
    CHECK_EQ_STR(c, "hello world\n");
    CLEANUP_FREE char *d = cat(fs, "/sub/deep.txt");
    CHECK_EQ_STR(d, "deep\n");
    CHECK_EQ_INT(mtime_of(fs, "/sub/deep.txt"), 1500000000);
    CHECK_EQ_INT(mtime_of(fs, "/hello"), 1600000000);
    qimg_fs_close(fs);
    qimg_close(img);
}

TEST(dir_to_vfat_qcow2_gpt)
{
    struct qimg_create_from_params res = { 0 };
    CHECK_EQ_INT(build("b.qcow2", "qcow2", "src", "vfat", "gpt", &res), 0);
    CHECK_EQ_INT(res.skipped, 1);                  /* the symlink */
    qimg_image *img = NULL;
    qimg_fs *fs = open_fs("b.qcow2", "qcow2", 1, &img);
    if (!fs)
        return;
    CHECK(strncmp(qimg_fs_type(fs), "fat", 3) == 0);
    CLEANUP_FREE char *c = cat(fs, "/hard");       /* a copy */
    CHECK_EQ_STR(c, "hello world\n");
    CLEANUP_FREE char *d = cat(fs, "/sub/deep.txt");
    CHECK_EQ_STR(d, "deep\n");
    CHECK_EQ_INT(mtime_of(fs, "/hello"), 1600000000);
    qimg_fs_close(fs);
    qimg_close(img);
}

TEST(tar_out_of_order)
{
    make_tar("t.tar");
    CHECK_EQ_INT(build("t.qcow2", "qcow2", "t.tar", "ext2", "mbr", NULL), 0);
    qimg_image *img = NULL;
    qimg_fs *fs = open_fs("t.qcow2", "qcow2", 1, &img);
    if (!fs)
        return;
    CHECK_EQ_STR(qimg_fs_type(fs), "ext2");
    CLEANUP_FREE char *l = listing(fs, "/x");
    CHECK_EQ_STR(l, "y 40700 2;");
    CLEANUP_FREE char *c = cat(fs, "/x/y/file");
    CHECK_EQ_STR(c, "tar data\n");
    CHECK_EQ_INT(mtime_of(fs, "/x/y"), 1300000000);  /* set after its content */
    qimg_fs_close(fs);
    qimg_close(img);
}

static char *slurp(const char *name, size_t *len)
{
    CLEANUP_FREE char *p = path(name);
    struct stat st;
    *len = 0;
    if (stat(p, &st) < 0)
        return NULL;
    char *buf = qimg_xmalloc((size_t)st.st_size + 1);
    int fd = open(p, O_RDONLY);
    ssize_t n = fd >= 0 ? pread(fd, buf, (size_t)st.st_size, 0) : -1;
    if (fd >= 0)
        close(fd);
    *len = n > 0 ? (size_t)n : 0;
    return buf;
}

TEST(reproducible)
{
    struct qimg_create_from_params res = { .reproducible = true, .source_date_epoch = 1550000000 };
    CHECK_EQ_INT(build("r1.qcow2", "qcow2", "src", NULL, "gpt", &res), 0);
    sleep(1);
    res = (struct qimg_create_from_params) { .reproducible = true, .source_date_epoch = 1550000000 };
    CHECK_EQ_INT(build("r2.qcow2", "qcow2", "src", NULL, "gpt", &res), 0);
    size_t l1, l2;
    CLEANUP_FREE char *a = slurp("r1.qcow2", &l1);
    CLEANUP_FREE char *b = slurp("r2.qcow2", &l2);
    CHECK(a && b && l1 == l2 && l1 > 0 && memcmp(a, b, l1) == 0);
    qimg_image *img = NULL;
    qimg_fs *fs = open_fs("r1.qcow2", "qcow2", 1, &img);
    if (!fs)
        return;
    CHECK_EQ_INT(mtime_of(fs, "/hello"), 1550000000);   /* clamped */
    CHECK_EQ_INT(mtime_of(fs, "/sub/deep.txt"), 1500000000);
    qimg_fs_close(fs);
    qimg_close(img);
}

TEST(failures_leave_nothing)
{
    CLEANUP_FREE char *out = path("fail.raw");
    CHECK(build("fail.raw", "raw", "nonexistent", NULL, NULL, NULL) == -ENOENT);
    CHECK(access(out, F_OK) < 0);
    struct qimg_create_from_params res = { .has_size = true, .size = 1 << 20 };
    CHECK(build("fail.raw", "raw", "src", NULL, NULL, &res) < 0);
    CHECK(strstr(qimg_last_error(), "too small") != NULL);
    CHECK(access(out, F_OK) < 0);
    CHECK(build("fail.raw", "raw", "src", "btrfs", NULL, NULL) == -EINVAL);
    CHECK(build("fail.raw", "raw", "src", NULL, "apm", NULL) == -EINVAL);
    CHECK(access(out, F_OK) < 0);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    make_tree();
    RUN(dir_to_ext4_raw);
    RUN(dir_to_vfat_qcow2_gpt);
    RUN(tar_out_of_order);
    RUN(reproducible);
    RUN(failures_leave_nothing);
    CLEANUP_FREE char *cmd = qimg_asprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0) { /* left behind */ }
    return UNIT_DONE();
}

#else
int main(void)
{
    printf("PASS fs-create (skipped: no libext2fs or libarchive)\n");
    printf("1 passed, 0 failed\n");
    return 0;
}
#endif
