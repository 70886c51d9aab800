/* qcow2 read side: an image built by hand (512-byte clusters, so many L2
 * tables), read through qimg_open: data, zero, unallocated and compressed
 * clusters, the L2 cache under eviction, reads from several threads, block
 * status, refcount entry widths, and refusals of bad headers. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#ifdef HAVE_ZLIB
#include <zlib.h>
#endif

#include "unit.h"
#include "internal.h"
#include "../../src/formats/qcow2/qcow2.h"

#define CB 9
#define CS (1u << CB)
#define DISK (1u << 20)                 /* 1 MiB: 2048 clusters */
#define NCL (DISK / CS)
#define L2E (CS / 8)                    /* entries per L2 table */
#define NL1 (NCL / L2E)                 /* 32 L2 tables */
#define L1_OFF (2u * CS)
#define L2_OFF (3u * CS)
#define DATA_OFF (L2_OFF + NL1 * CS)

static char path[] = "/tmp/qimg-unit-qcow2-XXXXXX";
static uint8_t expect[DISK];

static uint8_t pattern(uint32_t cl, uint32_t i) { return (uint8_t)(cl * 7 + i + 1); }

enum { K_DATA, K_ZERO, K_UNALLOC, K_COMPRESSED };
static int kind_of(uint32_t cl)
{
    if (cl >= 600 && cl < 700) return K_UNALLOC;
    if (cl % 97 == 5) return K_COMPRESSED;
    if (cl % 13 == 3) return K_ZERO;
    if (cl % 11 == 4) return K_UNALLOC;
    return K_DATA;
}

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    CHECK(pwrite(fd, buf, len, off) == (ssize_t)len);
}

/* One image; hdr_patch may change header bytes before writing. */
static void build(void (*hdr_patch)(uint8_t *hdr))
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    uint8_t hdr[CS] = { 0 };
    qimg_put_be32(hdr, QCOW2_MAGIC);
    qimg_put_be32(hdr + 4, 3);
    qimg_put_be32(hdr + 20, CB);
    qimg_put_be64(hdr + 24, DISK);
    qimg_put_be32(hdr + 36, NL1);
    qimg_put_be64(hdr + 40, L1_OFF);
    qimg_put_be64(hdr + 48, CS);
    qimg_put_be32(hdr + 56, 1);
    qimg_put_be32(hdr + 96, 4);
    qimg_put_be32(hdr + 100, 112);
    if (hdr_patch)
        hdr_patch(hdr);
    pwrite_all(fd, hdr, CS, 0);
    uint8_t l1[CS] = { 0 };
    for (uint32_t i = 0; i < NL1; i++)
        qimg_put_be64(l1 + 8 * i, QCOW2_OFLAG_COPIED | (L2_OFF + (uint64_t)i * CS));
    pwrite_all(fd, l1, CS, L1_OFF);

    uint64_t next = DATA_OFF;      /* data clusters, then compressed bytes */
    uint8_t l2[NL1][CS];
    memset(l2, 0, sizeof l2);
    memset(expect, 0, sizeof expect);
    for (uint32_t cl = 0; cl < NCL; cl++) {
        uint8_t buf[CS];
        for (uint32_t i = 0; i < CS; i++)
            buf[i] = pattern(cl, i);
        uint8_t *e = l2[cl / L2E] + 8 * (cl % L2E);
        int k = kind_of(cl);
#ifndef HAVE_ZLIB
        if (k == K_COMPRESSED) k = K_DATA;
#endif
        switch (k) {
        case K_DATA:
            memcpy(expect + (size_t)cl * CS, buf, CS);
            pwrite_all(fd, buf, CS, (off_t)next);
            qimg_put_be64(e, QCOW2_OFLAG_COPIED | next);
            next += CS;
            break;
        case K_ZERO:
            qimg_put_be64(e, QCOW2_OFLAG_ZERO);
            break;
        case K_UNALLOC:
            break;
#ifdef HAVE_ZLIB
        case K_COMPRESSED: {
            memcpy(expect + (size_t)cl * CS, buf, CS);
            /* raw deflate, unaligned inside the host cluster */
            uint8_t z[2 * CS];
            z_stream zs = { 0 };
            CHECK(deflateInit2(&zs, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) == Z_OK);
            zs.next_in = buf; zs.avail_in = CS; zs.next_out = z; zs.avail_out = sizeof z;
            CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
            size_t zlen = sizeof z - zs.avail_out;
            deflateEnd(&zs);
            uint64_t off = next + 100;
            pwrite_all(fd, z, zlen, (off_t)off);
            uint64_t end_sector = (off + zlen - 1) / 512, first = off / 512;
            uint32_t shift = 62 - (CB - 8);
            qimg_put_be64(e, QCOW2_OFLAG_COMPRESSED | ((end_sector - first) << shift) | off);
            next += 2 * CS;
            break;
        }
#endif
        }
    }
    for (uint32_t i = 0; i < NL1; i++)
        pwrite_all(fd, l2[i], CS, L2_OFF + (off_t)i * CS);
    close(fd);
}

TEST(read_whole_disk)
{
    build(NULL);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, path, "qcow2", 0), 0);
    if (!img) return;
    CHECK_EQ_STR(qimg_format(img), "qcow2");
    CHECK_EQ_INT(qimg_size(img), DISK);
    uint8_t *buf = malloc(DISK);
    CHECK_EQ_INT(qimg_read(img, 0, buf, DISK), 0);
    CHECK(memcmp(buf, expect, DISK) == 0);
    /* unaligned pieces */
    CHECK_EQ_INT(qimg_read(img, 1000, buf, 70001), 0);
    CHECK(memcmp(buf, expect + 1000, 70001) == 0);
    free(buf);
    qimg_close(img);
}

TEST(probe_scores)
{
    uint8_t b[512] = { 0 };
    qimg_put_be32(b, QCOW2_MAGIC);
    qimg_put_be32(b + 4, 3);
    CHECK_EQ_INT(qimg_driver_qcow2.probe(b, sizeof b, 1 << 20, "x"), 100);
    qimg_put_be32(b + 4, 1);     /* qcow v1 is another format */
    CHECK_EQ_INT(qimg_driver_qcow2.probe(b, sizeof b, 1 << 20, "x"), 0);
    b[0] = 0;
    CHECK_EQ_INT(qimg_driver_qcow2.probe(b, sizeof b, 1 << 20, "x"), 0);
}

/* With a 4-table cache, reading all 32 tables in a scattered order evicts. */
TEST(l2_cache_eviction)
{
    build(NULL);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, path, "qcow2", 0), 0);
    if (!img) return;
    struct qcow2_state *s = img->opaque;
    qcow2_l2_cache_free(s);
    s->l1_vm_state_index = 1;
    qcow2_l2_cache_init(s);
    CHECK_EQ_INT(s->l2_cache.capacity, 4);
    uint8_t buf[CS];
    for (int round = 0; round < 3; round++)
        for (uint32_t t = 0; t < NL1; t++) {
            uint32_t cl = ((t * 13) % NL1) * L2E + (t % L2E);
            CHECK_EQ_INT(qimg_read(img, (uint64_t)cl * CS, buf, CS), 0);
            CHECK(memcmp(buf, expect + (size_t)cl * CS, CS) == 0);
        }
    CHECK(s->l2_cache.used <= 4);
    CHECK(s->l2_cache.misses > NL1);
    qimg_close(img);
}

struct reader { qimg_image *img; unsigned seed; int bad; };

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    uint8_t *buf = malloc(64 * 1024);
    for (int i = 0; i < 300; i++) {
        r->seed = r->seed * 1103515245 + 12345;
        uint64_t off = (r->seed >> 4) % DISK;
        size_t len = 1 + (r->seed >> 8) % (64 * 1024);
        if (off + len > DISK)
            len = DISK - off;
        if (qimg_read(r->img, off, buf, len) < 0 || memcmp(buf, expect + off, len) != 0)
            r->bad++;
    }
    free(buf);
    return NULL;
}

TEST(concurrent_reads)
{
    build(NULL);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, path, "qcow2", 0), 0);
    if (!img) return;
    struct qcow2_state *s = img->opaque;
    qcow2_l2_cache_free(s);          /* a small cache: threads evict each other */
    s->l1_vm_state_index = 1;
    qcow2_l2_cache_init(s);
    pthread_t t[4];
    struct reader r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct reader){ img, (unsigned)i * 7919 + 1, 0 };
        pthread_create(&t[i], NULL, reader_main, &r[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(r[i].bad, 0);
    }
    qimg_close(img);
}

TEST(block_status_kinds)
{
    build(NULL);
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, path, "qcow2", 0), 0);
    if (!img) return;
    struct qimg_extent e;
    /* cluster 0..2 data, contiguous on the host */
    CHECK_EQ_INT(qimg_block_status(img, 0, DISK, &e), 0);
    CHECK_EQ_INT(e.flags & ~QIMG_STATUS_EOF, QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_OFFSET);
    CHECK_EQ_INT(e.length, 3 * CS);
    CHECK_EQ_INT(e.host_offset, DATA_OFF);
    CHECK_EQ_INT(qimg_block_status(img, 3 * CS, DISK - 3 * CS, &e), 0);
    CHECK_EQ_INT(e.flags, QIMG_STATUS_ZERO | QIMG_STATUS_ALLOCATED);
    CHECK_EQ_INT(e.length, CS);
    CHECK_EQ_INT(qimg_block_status(img, 4 * CS, DISK - 4 * CS, &e), 0);
    CHECK_EQ_INT(e.flags, 0);
#ifdef HAVE_ZLIB
    CHECK_EQ_INT(qimg_block_status(img, 5 * CS + 10, 100, &e), 0);
    CHECK_EQ_INT(e.flags, QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED | QIMG_STATUS_COMPRESSED);
    CHECK_EQ_INT(e.length, 100);
#endif
    /* an unallocated stretch: answered up to the end of its L2 table */
    CHECK_EQ_INT(qimg_block_status(img, 600 * CS, 100 * CS, &e), 0);
    CHECK_EQ_INT(e.flags, 0);
    CHECK_EQ_INT(e.length, 40 * CS);
    qimg_close(img);
}

TEST(refcount_widths)
{
    struct qcow2_state s = { 0 };
    uint8_t b[16];
    for (int i = 0; i < 16; i++)
        b[i] = (uint8_t)(0xa5 + i * 0x11);
    s.refcount_order = 0;
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 0), 1);    /* 0xa5 = 1010 0101, LSB first */
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 1), 0);
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 7), 1);
    s.refcount_order = 1;
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 0), 1);
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 3), 2);
    s.refcount_order = 2;
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 0), 5);
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 1), 0xa);
    s.refcount_order = 4;
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 1), 0xc7d8);
    s.refcount_order = 6;
    CHECK_EQ_INT(qcow2_refblock_get(&s, b, 1), (int64_t)qimg_be64(b + 8));
}

static void patch_l1_huge(uint8_t *h) { qimg_put_be32(h + 36, 0x7fffffff); }
static void patch_unknown_bit(uint8_t *h) { qimg_put_be64(h + 72, 1ull << 40); }
static void patch_reftable_zero(uint8_t *h) { qimg_put_be32(h + 56, 0); }
static void patch_backing_long(uint8_t *h) { qimg_put_be64(h + 8, 200); qimg_put_be32(h + 16, 1024); }
static void patch_corrupt(uint8_t *h) { qimg_put_be64(h + 72, QCOW2_INCOMPAT_CORRUPT); }

static void expect_refusal(void (*patch)(uint8_t *), unsigned flags, const char *msg)
{
    build(patch);
    qimg_image *img = NULL;
    CHECK(qimg_open(&img, path, "qcow2", flags) < 0);
    CHECK(img == NULL);
    CHECK(strstr(qimg_last_error(), msg) != NULL);
    if (!strstr(qimg_last_error(), msg))
        fprintf(stderr, "  got: %s\n", qimg_last_error());
}

TEST(refusals)
{
    expect_refusal(patch_l1_huge, 0, "Active L1 table too large");
    expect_refusal(patch_unknown_bit, 0, "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000");
    expect_refusal(patch_reftable_zero, 0, "Image does not contain a reference count table");
    expect_refusal(patch_backing_long, 0, "Backing file name too long");
    expect_refusal(patch_corrupt, QIMG_OPEN_RDWR, "qcow2: Image is corrupt; cannot be opened read/write");
    /* the corrupt image still opens read-only */
    qimg_image *img;
    CHECK_EQ_INT(qimg_open(&img, path, "qcow2", 0), 0);
    qimg_close(img);
}

int main(void)
{
    int fd = mkstemp(path);
    if (fd < 0)
        return 1;
    close(fd);
    RUN(probe_scores);
    RUN(read_whole_disk);
    RUN(l2_cache_eviction);
    RUN(concurrent_reads);
    RUN(block_status_kinds);
    RUN(refcount_widths);
    RUN(refusals);
    unlink(path);
    return UNIT_DONE();
}
