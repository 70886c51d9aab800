/* Unit tests: partition tables (src/fs/part.c).  Tables written by qimg are
 * read back by sfdisk --dump and sgdisk; tables written by sfdisk are found
 * by qimg; hostile tables (bad CRCs, huge entry counts, loops in the chain
 * of logical partitions) give errors. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fs.h"
#include "internal.h"
#include "unit.h"

static char dir[] = "/tmp/qimg-unit-part.XXXXXX";

static char *path(const char *name) { return qimg_asprintf("%s/%s", dir, name); }

static void make_file(const char *p, uint64_t size)
{
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)size) == 0);
    close(fd);
}

/* Output of a shell command (at most 64 KiB), NUL-terminated. */
static char *run(const char *cmd)
{
    static char out[65536];
    FILE *f = popen(cmd, "r");
    size_t n = 0;
    out[0] = '\0';
    if (!f)
        return out;
    n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    pclose(f);
    return out;
}

static bool have(const char *tool)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1 || test -x /usr/sbin/%s "
             "|| test -x /sbin/%s", tool, tool, tool);
    return system(cmd) == 0;
}

static qimg_image *open_rw(const char *p)
{
    qimg_image *img = NULL;
    CHECK_EQ_INT(qimg_open(&img, p, "raw", QIMG_OPEN_RDWR), 0);
    return img;
}

static void write_table(const char *p, enum qimg_part_scheme s, const char *kind, bool repro,
                        uint64_t *off, uint64_t *size)
{
    qimg_image *img = open_rw(p);
    if (!img)
        return;
    CHECK_EQ_INT(qimg_part_write(img, s, kind, repro, 42, off, size), 0);
    CHECK_EQ_INT(qimg_close(img), 0);
}

static int find(const char *p, unsigned n, uint64_t *off, uint64_t *size)
{
    qimg_image *img = NULL;
    int r = qimg_open(&img, p, "raw", 0);
    CHECK_EQ_INT(r, 0);
    if (r < 0)
        return r;
    r = qimg_part_find(img, n, off, size);
    qimg_close(img);
    return r;
}

TEST(mbr_write_then_find)
{
    CLEANUP_FREE char *p = path("mbr.img");
    make_file(p, 64 << 20);
    uint64_t off = 0, size = 0;
    write_table(p, QIMG_PART_MBR, "linux", false, &off, &size);
    CHECK_EQ_INT(off, 1 << 20);
    CHECK_EQ_INT(size, (64 << 20) - (1 << 20));
    CHECK_EQ_INT(qimg_part_overhead(QIMG_PART_MBR), 1 << 20);
    uint64_t o2 = 0, s2 = 0;
    CHECK_EQ_INT(find(p, 1, &o2, &s2), 0);
    CHECK_EQ_INT(o2, off);
    CHECK_EQ_INT(s2, size);
    CHECK_EQ_INT(find(p, 2, &o2, &s2), -ENOENT);
    CHECK_EQ_STR(qimg_last_error(), "partition 2 not found");
    CHECK_EQ_INT(find(p, 5, &o2, &s2), -ENOENT);
    if (have("sfdisk")) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "sfdisk --dump '%s' 2>&1 | grep '^/' | sed 's/.*: //'", p);
        CHECK_EQ_STR(run(cmd), "start=        2048, size=      129024, type=83\n");
    }
    write_table(p, QIMG_PART_MBR, "fat", false, &off, &size);
    if (have("sfdisk")) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "sfdisk --dump '%s' 2>&1 | grep '^/' | sed 's/.*type=//'", p);
        CHECK_EQ_STR(run(cmd), "c\n");
    }
}

TEST(gpt_write_then_find)
{
    CLEANUP_FREE char *p = path("gpt.img");
    make_file(p, 64 << 20);
    uint64_t off = 0, size = 0;
    write_table(p, QIMG_PART_GPT, "linux", false, &off, &size);
    CHECK_EQ_INT(off, 1 << 20);
    /* sgdisk -n 1:0:0 on 64 MiB: sectors 2048..131038 */
    CHECK_EQ_INT(size, (uint64_t)(131038 - 2048 + 1) * 512);
    CHECK_EQ_INT(qimg_part_overhead(QIMG_PART_GPT), (2048 + 33) * 512);
    uint64_t o2 = 0, s2 = 0;
    CHECK_EQ_INT(find(p, 1, &o2, &s2), 0);
    CHECK_EQ_INT(o2, off);
    CHECK_EQ_INT(s2, size);
    CHECK_EQ_INT(find(p, 2, &o2, &s2), -ENOENT);
    CHECK_EQ_INT(find(p, 129, &o2, &s2), -ENOENT);
    if (have("sgdisk")) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "sgdisk -v '%s' 2>&1 | grep -c 'No problems found'", p);
        CHECK_EQ_STR(run(cmd), "1\n");
        snprintf(cmd, sizeof cmd, "sgdisk -p '%s' 2>&1 | tail -1 | tr -s ' '", p);
        CHECK_EQ_STR(run(cmd), " 1 2048 131038 63.0 MiB 8300 \n");
    }
    if (have("sfdisk")) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "sfdisk --dump '%s' 2>&1 | grep '^/' | sed 's/.*: //; s/, uuid=.*//'", p);
        CHECK_EQ_STR(run(cmd), "start=        2048, size=      128991, "
                     "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n");
    }
    write_table(p, QIMG_PART_GPT, "fat", false, &off, &size);
    if (have("sgdisk")) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "sgdisk -p '%s' 2>&1 | tail -1 | tr -s ' '", p);
        CHECK_EQ_STR(run(cmd), " 1 2048 131038 63.0 MiB 0700 \n");
    }
}

TEST(gpt_reproducible)
{
    CLEANUP_FREE char *a = path("ra.img");
    CLEANUP_FREE char *b = path("rb.img");
    make_file(a, 8 << 20);
    make_file(b, 8 << 20);
    uint64_t off, size;
    write_table(a, QIMG_PART_GPT, "linux", true, &off, &size);
    write_table(b, QIMG_PART_GPT, "linux", true, &off, &size);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s' && echo same", a, b);
    CHECK_EQ_STR(run(cmd), "same\n");
    write_table(b, QIMG_PART_GPT, "linux", false, &off, &size);
    CHECK_EQ_STR(run(cmd), "");
}

/* Logical partitions as sfdisk lays them out, numbered from 5. */
TEST(mbr_logical_partitions_from_sfdisk)
{
    if (!have("sfdisk"))
        return;
    CLEANUP_FREE char *p = path("ext.img");
    make_file(p, 64 << 20);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "printf '%s' | sfdisk -q '%s' >/dev/null 2>&1",
             "2048,10240,83\\n12288,,5\\n14336,4096,83\\n20480,8192,c\\n", p);
    CHECK(system(cmd) == 0);
    uint64_t off = 0, size = 0;
    CHECK_EQ_INT(find(p, 1, &off, &size), 0);
    CHECK_EQ_INT(off, 2048 * 512);
    CHECK_EQ_INT(size, 10240 * 512);
    CHECK_EQ_INT(find(p, 2, &off, &size), -EINVAL);      /* the extended partition */
    CHECK_EQ_INT(find(p, 3, &off, &size), -ENOENT);
    CHECK_EQ_INT(find(p, 5, &off, &size), 0);
    CHECK_EQ_INT(off, 14336 * 512);
    CHECK_EQ_INT(size, 4096 * 512);
    CHECK_EQ_INT(find(p, 6, &off, &size), 0);
    CHECK_EQ_INT(off, 20480 * 512);
    CHECK_EQ_INT(size, 8192 * 512);
    CHECK_EQ_INT(find(p, 7, &off, &size), -ENOENT);

    /* Point the second EBR's link back at the first: a loop. */
    uint8_t sec[512];
    int fd = open(p, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pread(fd, sec, 512, 0) == 512);
    uint32_t ext_start = qimg_le32(sec + 446 + 16 + 8);
    CHECK(pread(fd, sec, 512, (off_t)ext_start * 512) == 512);
    uint32_t second = ext_start + qimg_le32(sec + 446 + 16 + 8);
    CHECK(pread(fd, sec, 512, (off_t)second * 512) == 512);
    sec[446 + 16 + 4] = 0x05;
    qimg_put_le32(sec + 446 + 16 + 8, 0);
    qimg_put_le32(sec + 446 + 16 + 12, 100);
    CHECK(pwrite(fd, sec, 512, (off_t)second * 512) == 512);
    close(fd);
    CHECK_EQ_INT(find(p, 6, &off, &size), 0);
    CHECK_EQ_INT(find(p, 7, &off, &size), -ELOOP);
    CHECK(strstr(qimg_last_error(), "loops") != NULL);
}

static void patch(const char *p, uint64_t off, const void *buf, size_t len)
{
    int fd = open(p, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len);
    close(fd);
}

TEST(gpt_hostile)
{
    CLEANUP_FREE char *p = path("bad.img");
    make_file(p, 8 << 20);
    uint64_t off, size;
    write_table(p, QIMG_PART_GPT, "linux", false, &off, &size);
    uint64_t last = (8 << 20) / 512 - 1;
    uint8_t junk = 0x5a;

    /* A damaged primary header: the backup still serves. */
    patch(p, 512 + 40, &junk, 1);
    CHECK_EQ_INT(find(p, 1, &off, &size), 0);
    CHECK_EQ_INT(off, 1 << 20);
    /* Both damaged: an error naming the CRC. */
    patch(p, last * 512 + 40, &junk, 1);
    CHECK_EQ_INT(find(p, 1, &off, &size), -EINVAL);
    CHECK(strstr(qimg_last_error(), "bad CRC") != NULL);

    /* A huge entry count with a matching header CRC. */
    write_table(p, QIMG_PART_GPT, "linux", false, &off, &size);
    for (int k = 0; k < 2; k++) {
        uint64_t lba = k ? last : 1;
        uint8_t hdr[92];
        int fd = open(p, O_RDWR);
        CHECK(pread(fd, hdr, sizeof hdr, (off_t)lba * 512) == (ssize_t)sizeof hdr);
        close(fd);
        qimg_put_le32(hdr + 80, 0x7fffffff);
        qimg_put_le32(hdr + 16, 0);
        qimg_put_le32(hdr + 16, (uint32_t)crc32(0, hdr, sizeof hdr));
        patch(p, lba * 512, hdr, sizeof hdr);
    }
    CHECK_EQ_INT(find(p, 1, &off, &size), -EINVAL);
    CHECK(strstr(qimg_last_error(), "too many") != NULL);

    /* An entry array whose CRC does not match. */
    write_table(p, QIMG_PART_GPT, "linux", false, &off, &size);
    patch(p, 2 * 512 + 100, &junk, 1);
    patch(p, (last - 32) * 512 + 100, &junk, 1);
    CHECK_EQ_INT(find(p, 1, &off, &size), -EINVAL);
    CHECK(strstr(qimg_last_error(), "entry array") != NULL);
}

TEST(no_table)
{
    CLEANUP_FREE char *p = path("none.img");
    make_file(p, 1 << 20);
    uint64_t off, size;
    CHECK_EQ_INT(find(p, 1, &off, &size), -EINVAL);
    CHECK(strstr(qimg_last_error(), "no partition table") != NULL);
    make_file(p, 100);
    CHECK_EQ_INT(find(p, 1, &off, &size), -EINVAL);
    /* An MBR entry past the end of the image. */
    make_file(p, 1 << 20);
    uint8_t sec[512] = { 0 };
    sec[446 + 4] = 0x83;
    qimg_put_le32(sec + 446 + 8, 2048);
    qimg_put_le32(sec + 446 + 12, 0xffffff00);
    sec[510] = 0x55;
    sec[511] = 0xaa;
    patch(p, 0, sec, sizeof sec);
    CHECK_EQ_INT(find(p, 1, &off, &size), -EINVAL);
    CHECK(strstr(qimg_last_error(), "past the end") != NULL);
    /* Too small a disk to hold a table. */
    make_file(p, 64 << 10);
    qimg_image *img = open_rw(p);
    if (img) {
        CHECK(qimg_part_write(img, QIMG_PART_GPT, "linux", false, 0, &off, &size) < 0);
        CHECK(qimg_part_write(img, QIMG_PART_MBR, "linux", false, 0, &off, &size) < 0);
        qimg_close(img);
    }
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(mbr_write_then_find);
    RUN(gpt_write_then_find);
    RUN(gpt_reproducible);
    RUN(mbr_logical_partitions_from_sfdisk);
    RUN(gpt_hostile);
    RUN(no_table);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return UNIT_DONE();
}
