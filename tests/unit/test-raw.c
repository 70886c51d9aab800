/* Unit tests: the file backend, the raw driver and the image layer. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "unit.h"

static char dir[] = "/tmp/qimg-unit-raw.XXXXXX";

static char *path(const char *name) { return qimg_asprintf("%s/%s", dir, name); }

static void make_file(const char *p, uint64_t size)
{
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)size) == 0);
    close(fd);
}

TEST(pread_past_eof_reads_zeros)
{
    CLEANUP_FREE char *p = path("eof");
    make_file(p, 100);
    struct qimg_io *io;
    CHECK_EQ_INT(qimg_io_open(&io, p, 0), 0);
    uint8_t buf[300];
    memset(buf, 0xaa, sizeof buf);
    CHECK_EQ_INT(qimg_io_pread(io, buf, sizeof buf, 50), 0);
    CHECK(qimg_is_zero(buf, sizeof buf));
    qimg_io_close(io);
}

/* O_DIRECT: unaligned requests (probe sector, odd tails) still work */
TEST(direct_io_unaligned_requests)
{
    CLEANUP_FREE char *p = path("direct");
    make_file(p, 10000);
    struct qimg_io *io;
    CHECK_EQ_INT(qimg_io_open(&io, p, QIMG_IO_RDWR | QIMG_IO_DIRECT), 0);
    uint8_t small[100];
    memset(small, 0x42, sizeof small);
    CHECK_EQ_INT(qimg_io_pwrite(io, small, sizeof small, 4097), 0);
    uint8_t *big = qimg_io_buffer(12288);
    CHECK_EQ_INT(qimg_io_pread(io, big, 12288, 0), 0);   /* aligned, crosses EOF */
    CHECK(big[4097] == 0x42 && big[4196] == 0x42 && big[4197] == 0 && big[11000] == 0);
    memset(small, 0, sizeof small);
    CHECK_EQ_INT(qimg_io_pread(io, small, 7, 4100), 0);
    CHECK(small[0] == 0x42 && small[6] == 0x42);
    free(big);
    qimg_io_close(io);
}

TEST(extents_follow_holes)
{
    CLEANUP_FREE char *p = path("holes");
    make_file(p, 4 << 20);
    struct qimg_io *io;
    CHECK_EQ_INT(qimg_io_open(&io, p, QIMG_IO_RDWR), 0);
    uint8_t data[4096];
    memset(data, 7, sizeof data);
    CHECK_EQ_INT(qimg_io_pwrite(io, data, sizeof data, 1 << 20), 0);
    uint64_t pnum;
    int kind;
    CHECK_EQ_INT(qimg_io_extent(io, 0, 4 << 20, &pnum, &kind), 0);
    CHECK_EQ_INT(kind, QIMG_IO_EXT_HOLE);
    CHECK_EQ_INT(pnum, 1 << 20);
    CHECK_EQ_INT(qimg_io_extent(io, 1 << 20, 4 << 20, &pnum, &kind), 0);
    CHECK_EQ_INT(kind, QIMG_IO_EXT_DATA);
    CHECK(pnum >= 4096);
    /* zeroing with unmap makes it a hole again */
    CHECK_EQ_INT(qimg_io_zero(io, 1 << 20, 4096, true), 0);
    CHECK_EQ_INT(qimg_io_extent(io, 1 << 20, 4096, &pnum, &kind), 0);
    CHECK_EQ_INT(kind, QIMG_IO_EXT_HOLE);
    qimg_io_close(io);
}

TEST(fifo_and_directory_refused_without_blocking)
{
    CLEANUP_FREE char *fifo = path("fifo");
    CHECK(mkfifo(fifo, 0644) == 0);
    struct qimg_io *io;
    CHECK(qimg_io_open(&io, fifo, 0) < 0);
    CHECK(qimg_io_open(&io, fifo, QIMG_IO_RDWR) < 0);
    CHECK(strstr(qimg_last_error(), "regular file") != NULL);
    CHECK(qimg_io_open(&io, dir, 0) < 0);
    CHECK_EQ_INT(qimg_last_errno(), EISDIR);
}

/* qemu's protocol: a writer that refuses to share write (a VM, or qcow2
 * opened read-write) keeps other writers and metadata readers out. */
TEST(locks_follow_qemu_protocol)
{
    CLEANUP_FREE char *p = path("locked");
    make_file(p, 1 << 20);
    struct qimg_io *vm, *b;
    unsigned rw = QIMG_PERM_READ | QIMG_PERM_WRITE | QIMG_PERM_RESIZE;
    CHECK_EQ_INT(qimg_io_open(&vm, p, QIMG_IO_RDWR), 0);
    CHECK_EQ_INT(qimg_io_lock(vm, rw, QIMG_PERM_WRITE), 0);
    CHECK_EQ_INT(qimg_io_open(&b, p, QIMG_IO_RDWR), 0);
    CHECK_EQ_INT(qimg_io_lock(b, rw, 0), -EAGAIN);
    CHECK(strstr(qimg_last_error(), "Failed to get \"write\" lock") != NULL);
    qimg_io_close(b);
    CHECK_EQ_INT(qimg_io_open(&b, p, 0), 0);
    CHECK_EQ_INT(qimg_io_lock(b, QIMG_PERM_READ, 0), 0);    /* raw reader shares write */
    qimg_io_close(b);
    CHECK_EQ_INT(qimg_io_open(&b, p, 0), 0);
    CHECK_EQ_INT(qimg_io_lock(b, QIMG_PERM_READ, QIMG_PERM_WRITE), -EAGAIN);
    CHECK(strstr(qimg_last_error(), "Failed to get shared \"write\" lock") != NULL);
    qimg_io_close(b);
    CHECK_EQ_INT(qimg_io_open(&b, p, QIMG_IO_NOLOCK), 0);   /* -U */
    CHECK_EQ_INT(qimg_io_lock(b, QIMG_PERM_READ, QIMG_PERM_WRITE), 0);
    qimg_io_close(b);
    qimg_io_close(vm);
    CHECK_EQ_INT(qimg_io_open(&b, p, 0), 0);
    CHECK_EQ_INT(qimg_io_lock(b, QIMG_PERM_READ, QIMG_PERM_WRITE), 0);
    qimg_io_close(b);
}

TEST(raw_image_read_write_status)
{
    CLEANUP_FREE char *p = path("img.raw");
    make_file(p, 2 << 20);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, p, "raw", QIMG_OPEN_RDWR), 0);
    CHECK_EQ_INT(qimg_size(img), 2 << 20);
    CHECK_EQ_STR(qimg_format(img), "raw");
    uint8_t buf[8192];
    memset(buf, 0x5a, sizeof buf);
    CHECK_EQ_INT(qimg_write(img, 65536, buf, sizeof buf), 0);
    memset(buf, 0, sizeof buf);
    CHECK_EQ_INT(qimg_read(img, 65536, buf, sizeof buf), 0);
    CHECK(buf[0] == 0x5a && buf[sizeof buf - 1] == 0x5a);
    struct qimg_extent e;
    CHECK_EQ_INT(qimg_block_status(img, 0, 2 << 20, &e), 0);
    CHECK(e.flags & QIMG_STATUS_ZERO);
    CHECK_EQ_INT(e.length, 65536);
    CHECK_EQ_INT(qimg_block_status(img, 65536, 2 << 20, &e), 0);
    CHECK(e.flags & QIMG_STATUS_DATA);
    CHECK(e.flags & QIMG_STATUS_OFFSET);
    CHECK_EQ_INT(e.host_offset, 65536);
    /* out of range */
    CHECK(qimg_read(img, (2 << 20) - 10, buf, 20) < 0);
    CHECK(qimg_write(img, UINT64_MAX - 5, buf, 20) < 0);
    CHECK_EQ_INT(qimg_close(img), 0);
}

TEST(read_only_image_refuses_writes)
{
    CLEANUP_FREE char *p = path("ro.raw");
    make_file(p, 1 << 20);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, p, "raw", 0), 0);
    uint8_t b[512] = { 0 };
    CHECK_EQ_INT(qimg_write(img, 0, b, sizeof b), -EACCES);
    qimg_close(img);
}

static void ignore_warning(const char *msg) { (void)msg; }

TEST(probed_raw_guards_block0)
{
    CLEANUP_FREE char *p = path("probed.raw");
    make_file(p, 1 << 20);
    qimg_set_warn_handler(ignore_warning);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, p, NULL, QIMG_OPEN_RDWR), 0);
    CHECK_EQ_STR(qimg_format(img), "raw");
    uint8_t b[512] = { 0 };
    memcpy(b, "hello", 5);
    CHECK_EQ_INT(qimg_write(img, 0, b, sizeof b), 0);   /* still raw: fine */
    /* a header that some driver probes higher than raw must be refused;
     * with only raw registered, every write stays allowed */
    if (qimg_driver_find("qcow2")) {
        memcpy(b, "QFI\xfb\0\0\0\3", 8);
        CHECK_EQ_INT(qimg_write(img, 0, b, sizeof b), -EPERM);
    }
    qimg_close(img);
    qimg_set_warn_handler(NULL);
}

TEST(missing_file_and_unknown_driver)
{
    qimg_image *img;
    CLEANUP_FREE char *p = path("nope");
    CHECK_EQ_INT(qimg_open(&img, p, NULL, 0), -ENOENT);
    CHECK(strstr(qimg_last_error(), "No such file or directory") != NULL);
    CHECK_EQ_INT(qimg_open(&img, p, "nosuchfmt", 0), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Unknown driver 'nosuchfmt'");
}

TEST(path_combine_rules)
{
    char *s;
    s = qimg_path_combine("dir/top.qcow2", "base.raw");
    CHECK_EQ_STR(s, "dir/base.raw"); free(s);
    s = qimg_path_combine("top.qcow2", "base.raw");
    CHECK_EQ_STR(s, "base.raw"); free(s);
    s = qimg_path_combine("/a/b/top", "/abs/base");
    CHECK_EQ_STR(s, "/abs/base"); free(s);
    s = qimg_path_combine("/a/b/top", "nbd://host/x");
    CHECK_EQ_STR(s, "nbd://host/x"); free(s);
    s = qimg_path_combine("/a/b/top", "../c");
    CHECK_EQ_STR(s, "/a/b/../c"); free(s);
    /* the image's protocol prefix stays, as in qemu */
    s = qimg_path_combine("image:top.qcow2", "base");
    CHECK_EQ_STR(s, "image:base"); free(s);
    s = qimg_path_combine("file:dir/top", "base");
    CHECK_EQ_STR(s, "file:dir/base"); free(s);
    s = qimg_path_combine("file:top", "base");
    CHECK_EQ_STR(s, "file:base"); free(s);
    s = qimg_path_combine("./a:b", "base");
    CHECK_EQ_STR(s, "./base"); free(s);
    s = qimg_path_combine("json:{\"file\":\"/x/y\"}", "base");
    CHECK_EQ_STR(s, "base"); free(s);
    s = qimg_path_combine("/a/b/top", "");
    CHECK_EQ_STR(s, "/a/b/"); free(s);
}

TEST(protocol_names)
{
    CHECK(qimg_path_has_protocol("a:b"));
    CHECK(qimg_path_has_protocol(":b"));            /* the empty protocol */
    CHECK(qimg_path_has_protocol("json:{}"));
    CHECK(!qimg_path_has_protocol("./a:b"));
    CHECK(!qimg_path_has_protocol("/x:y"));
    CHECK(!qimg_path_has_protocol("dir/a:b"));
    CHECK(!qimg_path_has_protocol("plain"));
    CHECK(!qimg_path_has_protocol(""));
}

TEST(is_zero_edges)
{
    uint8_t b[4097] = { 0 };
    CHECK(qimg_is_zero(b, 0));
    CHECK(qimg_is_zero(b, 1));
    CHECK(qimg_is_zero(b, sizeof b));
    b[4096] = 1;
    CHECK(!qimg_is_zero(b, sizeof b));
    CHECK(qimg_is_zero(b, 4096));
    b[4096] = 0; b[17] = 1;
    CHECK(!qimg_is_zero(b, sizeof b));
}

TEST(alloc_budget_refuses_huge_sizes)
{
    void *p = qimg_alloc_from_image(UINT64_MAX, "test table");
    CHECK(p == NULL);
    CHECK_EQ_INT(qimg_last_errno(), EFBIG);
    p = qimg_calloc_from_image(UINT64_MAX / 2, 4, "test table");
    CHECK(p == NULL);
    p = qimg_calloc_from_image(16, 4, "small");
    CHECK(p != NULL);
    free(p);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 2;
    RUN(pread_past_eof_reads_zeros);
    RUN(direct_io_unaligned_requests);
    RUN(extents_follow_holes);
    RUN(fifo_and_directory_refused_without_blocking);
    RUN(locks_follow_qemu_protocol);
    RUN(raw_image_read_write_status);
    RUN(read_only_image_refuses_writes);
    RUN(probed_raw_guards_block0);
    RUN(missing_file_and_unknown_driver);
    RUN(path_combine_rules);
    RUN(protocol_names);
    RUN(is_zero_edges);
    RUN(alloc_budget_refuses_huge_sizes);
    char *cmd = qimg_asprintf("rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    free(cmd);
    return UNIT_DONE();
}
