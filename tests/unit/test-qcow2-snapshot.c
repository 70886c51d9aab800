/* qcow2 internal snapshots through one open handle: guest writes between
 * snapshot operations (copy on write of shared L2 tables, data and
 * compressed clusters), apply and delete in the same process, then
 * qemu-img check and qemu-img's reading of every snapshot. */
#include <errno.h>
#include <unistd.h>

#include "unit.h"
#include "internal.h"

#define DISK (1u << 20)
static char dir[] = "/tmp/qimg-unit-snap-XXXXXX";
static char path[64];
static uint8_t buf[DISK];

static bool have_qemu_img(void) { return access("/usr/bin/qemu-img", X_OK) == 0; }

static int sh(const char *fmt, const char *arg)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, fmt, arg, arg);
    return system(cmd);
}

static void fill(uint64_t off, uint64_t len, uint8_t v, uint8_t *image)
{
    memset(image + off, v, len);
}

static void write_pattern(qimg_image *img, uint64_t off, uint64_t len, uint8_t v)
{
    memset(buf, v, len);
    CHECK_EQ_INT(qimg_write(img, off, buf, len), 0);
}

static void expect_disk(qimg_image *img, const uint8_t *image)
{
    CHECK_EQ_INT(qimg_read(img, 0, buf, DISK), 0);
    CHECK(memcmp(buf, image, DISK) == 0);
}

static int nb_snapshots(qimg_image *img)
{
    struct qimg_snapshot_info *l;
    size_t n;
    if (qimg_snapshot_list(img, &l, &n) < 0)
        return -1;
    qimg_snapshot_list_free(l, n);
    return (int)n;
}

TEST(sequence_in_one_handle)
{
    static uint8_t a[DISK], b[DISK], c[DISK];
    CHECK_EQ_INT(sh("qemu-img create -q -f qcow2 -o cluster_size=4k %s 1M", path), 0);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, path, "qcow2", QIMG_OPEN_RDWR), 0);
    if (!img)
        return;
    memset(a, 0, DISK);
    write_pattern(img, 0, 512 * 1024, 1);
    fill(0, 512 * 1024, 1, a);
    CHECK_EQ_INT(qimg_snapshot_create(img, "s1"), 0);
    memcpy(b, a, DISK);
    write_pattern(img, 4096, 8192, 2);          /* COW of the L2 table and two clusters */
    fill(4096, 8192, 2, b);
    write_pattern(img, 600 * 1024, 4096, 2);    /* a new cluster */
    fill(600 * 1024, 4096, 2, b);
    CHECK_EQ_INT(qimg_snapshot_create(img, "s2"), 0);
    memcpy(c, b, DISK);
    write_pattern(img, 0, 256 * 1024, 3);
    fill(0, 256 * 1024, 3, c);
    CHECK_EQ_INT(qimg_write_zeroes(img, 300 * 1024, 64 * 1024, QIMG_ZERO_MAY_UNMAP), 0);
    fill(300 * 1024, 64 * 1024, 0, c);
    expect_disk(img, c);
    CHECK_EQ_INT(qimg_snapshot_apply(img, "s1"), 0);
    expect_disk(img, a);
    write_pattern(img, 8192, 4096, 4);          /* into the applied state */
    CHECK_EQ_INT(qimg_snapshot_apply(img, "2"), 0);
    expect_disk(img, b);
    CHECK_EQ_INT(qimg_snapshot_delete(img, "s1"), 0);
    CHECK_EQ_INT(nb_snapshots(img), 1);
    expect_disk(img, b);
    write_pattern(img, 0, 4096, 5);             /* in place: refcount back to 1 or COW */
    fill(0, 4096, 5, b);
    expect_disk(img, b);
    CHECK_EQ_INT(qimg_snapshot_apply(img, "nosuch"), -ENOENT);
    CHECK_EQ_INT(qimg_close(img), 0);
    CHECK_EQ_INT(sh("qemu-img check -q %s", path), 0);
    /* s2 as qemu-img reads it: b before the last write */
    CHECK_EQ_INT(sh("qemu-img convert -l s2 -O raw %s %s.raw", path), 0);
    char raw[80];
    snprintf(raw, sizeof raw, "%s.raw", path);
    FILE *f = fopen(raw, "rb");
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(fread(buf, 1, DISK, f), DISK);
        fill(0, 4096, 1, b);
        CHECK(memcmp(buf, b, DISK) == 0);
        fclose(f);
    }
    unlink(raw);
}

TEST(compressed_clusters_shared)
{
    CHECK_EQ_INT(sh("qemu-img create -q -f qcow2 -o cluster_size=4k %s 1M", path), 0);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, path, "qcow2", QIMG_OPEN_RDWR), 0);
    if (!img)
        return;
    static uint8_t a[DISK], comp[4096];
    memset(a, 0, DISK);
    for (int i = 0; i < 8; i++) {
        size_t n = 0;
        memset(buf, 0x30 + i, 4096);
        CHECK_EQ_INT(img->drv->compress(img, buf, 4096, comp, &n), 0);
        CHECK_EQ_INT(img->drv->write_compressed(img, (uint64_t)i * 4096, comp, n), 0);
        fill((uint64_t)i * 4096, 4096, 0x30 + i, a);
    }
    CHECK_EQ_INT(qimg_snapshot_create(img, "c"), 0);
    write_pattern(img, 4096, 4096, 9);
    CHECK_EQ_INT(qimg_snapshot_apply(img, "c"), 0);
    expect_disk(img, a);
    CHECK_EQ_INT(qimg_snapshot_delete(img, "c"), 0);
    CHECK_EQ_INT(nb_snapshots(img), 0);
    expect_disk(img, a);
    CHECK_EQ_INT(qimg_close(img), 0);
    CHECK_EQ_INT(sh("qemu-img check -q %s", path), 0);
}

int main(void)
{
    if (!have_qemu_img()) {
        printf("qemu-img not found: nothing to compare with\n");
        return UNIT_DONE();
    }
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/s.qcow2", dir);
    RUN(sequence_in_one_handle);
    RUN(compressed_clusters_shared);
    unlink(path);
    rmdir(dir);
    return UNIT_DONE();
}
