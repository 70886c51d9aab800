/* Unit tests: the FAT12/16/32 driver (src/fs/fat*.c) through fs.h, on raw
 * images made with qimg_create, checked by the independent tools
 * (fsck.fat -n, mtools with MTOOLS_SKIP_CHECK=1, TZ=UTC) and the other
 * way round: images made by mkfs.fat + mcopy read through the driver.
 * Hostile images must give errors, never crashes or hangs. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fat-format.h"
#include "fs.h"
#include "internal.h"
#include "unit.h"

static char dir[] = "/tmp/qimg-unit-fat.XXXXXX";
static bool have_tools;

static char *path(const char *name) { return qimg_asprintf("%s/%s", dir, name); }

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd;
    if (vasprintf(&cmd, fmt, ap) < 0)
        abort();
    va_end(ap);
    int st = system(cmd);
    free(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ------------------------------------------------------------ helpers */

struct img {
    qimg_image *img;
    struct qimg_fs_dev dev;
};

static int img_open(struct img *m, const char *p, bool rw)
{
    memset(m, 0, sizeof *m);
    int r = qimg_open(&m->img, p, "raw", rw ? QIMG_OPEN_RDWR : 0);
    if (r < 0)
        return r;
    m->dev.img = m->img;
    m->dev.size = qimg_size(m->img);
    m->dev.writable = rw;
    return 0;
}

static void make_raw(const char *p, uint64_t size)
{
    unlink(p);
    struct qimg_create_params cp = { .filename = p, .fmt = "raw", .size = size,
                                     .has_size = true, .quiet = true };
    CHECK_EQ_INT(qimg_create(&cp), 0);
}

static void mkfs_at(const char *p, uint64_t size, const char *label, bool repro)
{
    make_raw(p, size);
    struct img m;
    CHECK_EQ_INT(img_open(&m, p, true), 0);
    struct qimg_mkfs_params mp = { .type = "vfat", .label = label, .reproducible = repro,
                                   .seed = 42, .now = 1700000000 };
    CHECK_EQ_INT(qimg_fs_vfat.mkfs(&m.dev, &mp), 0);
    qimg_close(m.img);
}

static struct qimg_fs *fs_open(struct img *m, const char *p, bool rw)
{
    if (img_open(m, p, rw) < 0)
        return NULL;
    struct qimg_fs *fs = NULL;
    int r = qimg_fs_vfat.open(&m->dev, &fs);
    if (r < 0) {
        qimg_close(m->img);
        return NULL;
    }
    return fs;
}

static void fs_close(struct img *m, struct qimg_fs *fs)
{
    CHECK_EQ_INT(qimg_fs_vfat.close(fs), 0);
    CHECK_EQ_INT(qimg_close(m->img), 0);
}

static uint8_t pattern(uint64_t i, unsigned k) { return (uint8_t)(i * 31 + k * 7 + (i >> 12)); }

static void fill(uint8_t *buf, uint64_t off, size_t n, unsigned k)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern(off + i, k);
}

static const int64_t T0 = 1600000000;   /* 2020-09-13 12:26:40 UTC */

static qimg_fs_ino mk(struct qimg_fs *fs, qimg_fs_ino d, const char *name, bool is_dir)
{
    struct qimg_fs_attr a = { .mode = (is_dir ? S_IFDIR | 0755 : S_IFREG | 0644),
                              .mtime = T0, .atime = T0, .crtime = T0 };
    qimg_fs_ino ino = 0;
    int r = qimg_fs_vfat.create(fs, d, name, &a, NULL, &ino);
    if (r < 0)
        fprintf(stderr, "  create %s: %s\n", name, qimg_last_error());
    CHECK_EQ_INT(r, 0);
    return ino;
}

/* A file of size bytes of pattern k, written in chunks of chunk bytes. */
static qimg_fs_ino mkfile(struct qimg_fs *fs, qimg_fs_ino d, const char *name, uint64_t size,
                          unsigned k, int64_t mtime)
{
    qimg_fs_ino ino = mk(fs, d, name, false);
    size_t chunk = 1 << 20;
    uint8_t *buf = qimg_xmalloc(chunk);
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = (size_t)QIMG_MIN((uint64_t)chunk, size - off);
        fill(buf, off, n, k);
        int r = qimg_fs_vfat.write(fs, ino, off, buf, n);
        if (r < 0)
            fprintf(stderr, "  write %s: %s\n", name, qimg_last_error());
        CHECK_EQ_INT(r, 0);
    }
    free(buf);
    struct qimg_fs_attr a = { .mode = S_IFREG | 0644, .mtime = mtime, .atime = mtime,
                              .crtime = T0 };
    CHECK_EQ_INT(qimg_fs_vfat.setattr(fs, ino, &a), 0);
    return ino;
}

static bool file_has_pattern(const char *p, uint64_t size, unsigned k)
{
    FILE *fp = fopen(p, "rb");
    if (!fp)
        return false;
    struct stat st;
    bool ok = fstat(fileno(fp), &st) == 0 && (uint64_t)st.st_size == size;
    uint8_t buf[65536];
    uint64_t off = 0;
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, fp)) > 0) {
        for (size_t i = 0; i < n && ok; i++)
            ok = buf[i] == pattern(off + i, k);
        off += n;
    }
    fclose(fp);
    return ok && off == size;
}

static bool ino_has_pattern(struct qimg_fs *fs, qimg_fs_ino ino, uint64_t size, unsigned k)
{
    struct qimg_fs_attr a;
    if (qimg_fs_vfat.getattr(fs, ino, &a) < 0 || a.size != size)
        return false;
    uint8_t *buf = qimg_xmalloc(300000);
    bool ok = true;
    for (uint64_t off = 0; off < size && ok; off += 300000) {
        size_t got = 0;
        ok = qimg_fs_vfat.read(fs, ino, off, buf, 300000, &got) == 0 &&
             got == QIMG_MIN((uint64_t)300000, size - off);
        for (size_t i = 0; i < got && ok; i++)
            ok = buf[i] == pattern(off + i, k);
    }
    free(buf);
    return ok;
}

static int count_cb(void *opaque, const char *name, qimg_fs_ino ino)
{
    (*(int *)opaque)++;
    return 0;
}

static int fsck_clean(const char *p)
{
    return sh("fsck.fat -n '%s' >'%s.fsck' 2>&1", p, p);
}

/* --------------------------------------------------------------- tests */

/* mkfs picks FAT12/16/32 and the cluster size as mkfs.fat does. */
TEST(mkfs_matches_mkfs_fat)
{
    static const struct { uint64_t size; const char *type; } cases[] = {
        { 1 << 20, "fat12" }, { 8ull << 20, "fat12" }, { 32ull << 20, "fat16" },
        { 300ull << 20, "fat16" }, { 600ull << 20, "fat32" }, { 2ull << 30, "fat32" },
        { 9ull << 30, "fat32" }, { 40ull << 30, "fat32" },
    };
    CLEANUP_FREE char *p = path("mkfs.img");
    CLEANUP_FREE char *ref = path("mkfs-ref.img");
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(cases); i++) {
        mkfs_at(p, cases[i].size, NULL, true);
        struct img m;
        struct qimg_fs *fs = fs_open(&m, p, false);
        CHECK(fs != NULL);
        if (!fs)
            continue;
        CHECK_EQ_STR(fs->type, cases[i].type);
        fs_close(&m, fs);
        if (!have_tools)
            continue;
        CHECK_EQ_INT(fsck_clean(p), 0);
        unlink(ref);
        CHECK_EQ_INT(sh("truncate -s %" PRIu64 " '%s' && mkfs.fat '%s' >/dev/null", cases[i].size,
                        ref, ref), 0);
        uint8_t a[512], b[512];
        int fa = open(p, O_RDONLY), fb = open(ref, O_RDONLY);
        CHECK(pread(fa, a, 512, 0) == 512 && pread(fb, b, 512, 0) == 512);
        close(fa);
        close(fb);
        /* the same layout: sector size, cluster size, reserved sectors,
         * FATs, root entries, total sectors, media, FAT size, geometry,
         * and the FAT32 fields up to the backup boot sector */
        CHECK(!memcmp(a + 11, b + 11, 17));
        CHECK(!memcmp(a + 32, b + 32, 4));
        if (!qimg_le16(a + 22))
            CHECK(!memcmp(a + 36, b + 36, 16));
        if (memcmp(a + 11, b + 11, 17) || memcmp(a + 32, b + 32, 4))
            fprintf(stderr, "  %" PRIu64 " bytes: the BPB differs from mkfs.fat's\n",
                    cases[i].size);
        CHECK(!memcmp(a + (a[22] || a[23] ? 54 : 82), b + (b[22] || b[23] ? 54 : 82), 8));
    }
    unlink(ref);
    unlink(p);
}

/* The shared encodings of fat-format.h (also used by vvfat). */
static void check_basis(const char *name, const char *sn, bool lfn, bool tail, uint8_t ntres)
{
    uint16_t u[FAT_MAX_LFN];
    size_t len;
    uint8_t out[11], nt;
    bool need_lfn, need_tail;
    CHECK_EQ_INT(fat_utf8_to_utf16(name, u, FAT_MAX_LFN, &len), 0);
    fat_short_name_basis(u, len, out, &nt, &need_lfn, &need_tail);
    if (memcmp(out, sn, 11) || need_lfn != lfn || need_tail != tail || nt != ntres)
        fprintf(stderr, "  basis of '%s': '%.11s' lfn %d tail %d nt %#x\n", name, (char *)out,
                need_lfn, need_tail, nt);
    CHECK(!memcmp(out, sn, 11) && need_lfn == lfn && need_tail == tail && nt == ntres);
}

TEST(format_helpers)
{
    check_basis("README.TXT", "README  TXT", false, false, 0);
    check_basis("lower.txt", "LOWER   TXT", false, false, 0x18);
    check_basis("UPPER.txt", "UPPER   TXT", false, false, 0x10);
    check_basis("Foo.txt", "FOO     TXT", true, false, 0);
    check_basis("Long File Name 1.txt", "LONGFILETXT", true, true, 0);
    check_basis(".bashrc", "BASHRC     ", true, true, 0);
    check_basis("a.b.c", "AB      C  ", true, true, 0);
    check_basis("ünï.txt", "_N_     TXT", true, true, 0);
    check_basis("x.jpeg", "X       JPE", true, true, 0);
    uint8_t t[11];
    fat_short_name_with_tail((const uint8_t *)"LONGFILETXT", 1, t);
    CHECK(!memcmp(t, "LONGFI~1TXT", 11));
    fat_short_name_with_tail((const uint8_t *)"LONGFILETXT", 12345, t);
    CHECK(!memcmp(t, "LO~12345TXT", 11));
    fat_short_name_with_tail((const uint8_t *)"AB      C  ", 3, t);
    CHECK(!memcmp(t, "AB~3    C  ", 11));
    unsigned n = 0;
    CHECK(fat_short_name_tail_of((const uint8_t *)"LONGFILETXT", (const uint8_t *)"LONGF~10TXT", &n));
    CHECK_EQ_INT(n, 10);
    CHECK(!fat_short_name_tail_of((const uint8_t *)"LONGFILETXT", (const uint8_t *)"LONGFILETXT", &n));
    /* the checksum of fatgen103's rotate-and-add over the 11 bytes */
    uint8_t sum = 0;
    for (int i = 0; i < 11; i++)
        sum = (uint8_t)(((sum & 1) ? 0x80 : 0) + (sum >> 1) + (uint8_t)"LONGFI~1TXT"[i]);
    CHECK_EQ_INT(fat_lfn_checksum((const uint8_t *)"LONGFI~1TXT"), sum);
    /* times: 2-second resolution, the tenth field carries the odd second */
    uint16_t date, tm;
    uint8_t tenth;
    uint32_t ns;
    fat_time_encode(T0 + 1, 250000000, &date, &tm, &tenth);
    CHECK_EQ_INT(date, (2020 - 1980) << 9 | 9 << 5 | 13);
    CHECK_EQ_INT(tm, 12 << 11 | 26 << 5 | 20);
    CHECK_EQ_INT(tenth, 125);
    CHECK_EQ_INT(fat_time_decode(date, tm, tenth, &ns), T0 + 1);
    CHECK_EQ_INT(ns, 250000000);
    CHECK_EQ_INT(fat_time_decode(date, tm, 0, NULL), T0);
    fat_time_encode(0, 0, &date, &tm, NULL);            /* clamped to 1980-01-01 */
    CHECK_EQ_INT(date, 1 << 5 | 1);
    CHECK_EQ_INT(fat_time_decode(date, tm, 0, NULL), 315532800);
    /* UTF-8 <-> UTF-16 with a surrogate pair; bad UTF-8 refused */
    uint16_t u[8];
    size_t len;
    char back[32];
    CHECK_EQ_INT(fat_utf8_to_utf16("a\xc3\xa9\xf0\x9f\x98\x80", u, 8, &len), 0);
    CHECK_EQ_INT(len, 4);
    CHECK_EQ_INT(u[2], 0xD83D);
    fat_utf16_to_utf8(u, len, back);
    CHECK_EQ_STR(back, "a\xc3\xa9\xf0\x9f\x98\x80");
    CHECK_EQ_INT(fat_utf8_to_utf16("\xc3", u, 8, &len), -EINVAL);
    CHECK_EQ_INT(fat_utf8_to_utf16("\xc0\xaf", u, 8, &len), -EINVAL);   /* overlong */
    /* FAT12 entries share bytes */
    uint8_t fat[12] = { 0 };
    size_t lo, hi;
    fat_entry_set(fat, FAT12, 2, 0x123, &lo, &hi);
    fat_entry_set(fat, FAT12, 3, 0x456, &lo, &hi);
    CHECK_EQ_INT(fat[3], 0x23);
    CHECK_EQ_INT(fat[4], 0x61);
    CHECK_EQ_INT(fat[5], 0x45);
    CHECK_EQ_INT(fat_entry_get(fat, FAT12, 2), 0x123);
    CHECK_EQ_INT(fat_entry_get(fat, FAT12, 3), 0x456);
    fat_entry_set(fat, FAT12, 3, FAT_EOC, &lo, &hi);
    CHECK_EQ_INT(fat_entry_get(fat, FAT12, 3), FAT_EOC);
    CHECK_EQ_INT(fat_entry_get(fat, FAT12, 2), 0x123);
}

/* The checks by independent tools are the point: their absence fails. */
TEST(tools_present)
{
    if (!have_tools)
        fprintf(stderr, "  fsck.fat, mkfs.fat or mtools missing (scripts/install-deps)\n");
    CHECK(have_tools);
}

TEST(mkfs_reproducible)
{
    CLEANUP_FREE char *a = path("repro-a.img");
    CLEANUP_FREE char *b = path("repro-b.img");
    for (int k = 0; k < 2; k++) {
        uint64_t size = k ? (600ull << 20) : (16ull << 20);
        mkfs_at(a, size, "Repro", true);
        mkfs_at(b, size, "Repro", true);
        CHECK_EQ_INT(sh("cmp -s '%s' '%s'", a, b), 0);
        struct img m;
        struct qimg_fs *fs = fs_open(&m, a, false);
        CHECK(fs != NULL);
        if (fs) {
            struct qimg_fs_attr at;
            CHECK_EQ_INT(qimg_fs_vfat.getattr(fs, fs->root, &at), 0);
            CHECK_EQ_INT(at.mtime, 1700000000);   /* mkfs time, on the label entry */
            CHECK_EQ_INT(at.mode, S_IFDIR | 0755);
            fs_close(&m, fs);
        }
        if (have_tools) {
            CHECK_EQ_INT(fsck_clean(a), 0);
            CHECK_EQ_INT(sh("MTOOLS_SKIP_CHECK=1 mlabel -s -i '%s' :: | grep -q 'REPRO'", a), 0);
        }
    }
    unlink(a);
    unlink(b);
}

/* Builds a tree, checks it with fsck.fat and mtools, reads it back. */
static void populate_and_check(uint64_t size, const char *type, uint64_t big)
{
    CLEANUP_FREE char *p = path("tree.img");
    CLEANUP_FREE char *out = path("tree-out");
    mkfs_at(p, size, "TREE", true);
    struct img m;
    struct qimg_fs *fs = fs_open(&m, p, true);
    CHECK(fs != NULL);
    if (!fs)
        return;
    CHECK_EQ_STR(fs->type, type);
    qimg_fs_ino root = fs->root;
    qimg_fs_ino a = mk(fs, root, "a", true);
    qimg_fs_ino b = mk(fs, a, "Sub Directory", true);
    qimg_fs_ino c = mk(fs, b, "c", true);
    uint32_t cs = 0;
    {
        uint8_t s[512];
        CHECK_EQ_INT(qimg_fs_dev_read(&m.dev, 0, s, 512), 0);
        cs = (uint32_t)qimg_le16(s + 11) * s[13];
    }
    mkfile(fs, root, "empty", 0, 0, T0 + 100);
    mkfile(fs, root, "one.txt", 1, 1, T0 + 200);
    mkfile(fs, a, "cluster.bin", cs, 2, T0 + 300);
    mkfile(fs, c, "big.bin", big, 3, T0 + 400);
    mkfile(fs, root, "Ünïcödé fïlé ✓.txt", 5000, 4, T0 + 500);
    char longname[256];
    memset(longname, 'x', 255);
    memcpy(longname, "long-", 5);
    longname[255] = 0;
    mkfile(fs, a, longname, 100, 5, T0 + 600);
    mkfile(fs, root, "MixedCase.Txt", 10, 6, T0 + 700);
    mkfile(fs, root, "lower.txt", 11, 7, T0 + 800);
    for (int i = 0; i < 30; i++) {
        char name[64];
        snprintf(name, sizeof name, "Long File Name %d.txt", i);
        mkfile(fs, b, name, (uint64_t)i * 100, 8 + (unsigned)i, T0 + 1000 + 2 * i);
    }
    qimg_fs_ino many = mk(fs, root, "many", true);
    for (int i = 0; i < 1000; i++) {
        char name[64];
        snprintf(name, sizeof name, "entry number %04d with a long name", i);
        mk(fs, many, name, false);
    }
    /* refusals */
    struct qimg_fs_attr la = { .mode = S_IFLNK | 0777 };
    qimg_fs_ino dummy;
    CHECK_EQ_INT(qimg_fs_vfat.create(fs, root, "link", &la, "target", &dummy), -ENOTSUP);
    struct qimg_fs_attr fa = { .mode = S_IFREG | 0644 };
    CHECK_EQ_INT(qimg_fs_vfat.create(fs, root, "ONE.TXT", &fa, NULL, &dummy), -EEXIST);
    CHECK_EQ_INT(qimg_fs_vfat.create(fs, root, "bad?name", &fa, NULL, &dummy), -EINVAL);
    CHECK_EQ_INT(qimg_fs_vfat.link(fs, root, "x", a), -ENOTSUP);
    /* unlink and truncate, then a file reusing the freed space */
    mkfile(fs, root, "gone.bin", 3 * cs + 1, 9, T0);
    CHECK_EQ_INT(qimg_fs_vfat.unlink(fs, root, "gone.bin"), 0);
    qimg_fs_ino t = mkfile(fs, root, "trunc.bin", 5 * cs + 7, 10, T0);
    CHECK_EQ_INT(qimg_fs_vfat.truncate(fs, t, 2 * cs + 3), 0);
    /* read back through the driver (case-insensitive lookups) */
    qimg_fs_ino ino;
    CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, root, "ONE.txt", &ino), 0);
    CHECK(ino_has_pattern(fs, ino, 1, 1));
    CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, b, "long file name 7.TXT", &ino), 0);
    CHECK(ino_has_pattern(fs, ino, 700, 15));
    CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, root, "nothere", &ino), -ENOENT);
    int n = 0;
    CHECK_EQ_INT(qimg_fs_vfat.readdir(fs, many, count_cb, &n), 0);
    CHECK_EQ_INT(n, 1000);
    fs_close(&m, fs);

    /* reopen read-only: the tree is still there */
    fs = fs_open(&m, p, false);
    CHECK(fs != NULL);
    if (fs) {
        CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, fs->root, "a", &ino), 0);
        CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, ino, "sub directory", &ino), 0);
        CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, ino, "C", &ino), 0);
        CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, ino, "big.bin", &ino), 0);
        CHECK(ino_has_pattern(fs, ino, big, 3));
        struct qimg_fs_attr at;
        CHECK_EQ_INT(qimg_fs_vfat.getattr(fs, ino, &at), 0);
        CHECK_EQ_INT(at.mtime, T0 + 400);
        CHECK_EQ_INT(at.mode, S_IFREG | 0644);
        CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, fs->root, "trunc.bin", &ino), 0);
        CHECK(ino_has_pattern(fs, ino, 2 * cs + 3, 10));
        fs_close(&m, fs);
    }
    if (!have_tools)
        return;
    CHECK_EQ_INT(fsck_clean(p), 0);
    if (fsck_clean(p) != 0)
        sh("cat '%s.fsck' >&2", p);
    sh("rm -rf '%s'", out);
    CHECK_EQ_INT(sh("mkdir '%s' && cd '%s' && TZ=UTC MTOOLS_SKIP_CHECK=1 mcopy -s -m -i '%s' "
                    "'::/*' . 2>&1", out, out, p), 0);
    CHECK_EQ_INT(sh("TZ=UTC MTOOLS_SKIP_CHECK=1 mdir -i '%s' ::/ >/dev/null", p), 0);
    char *f;
#define OUTFILE(rel) (f = qimg_asprintf("%s/%s", out, rel))
    CHECK(file_has_pattern(OUTFILE("empty"), 0, 0));
    free(f);
    CHECK(file_has_pattern(OUTFILE("one.txt"), 1, 1));
    free(f);
    CHECK(file_has_pattern(OUTFILE("a/cluster.bin"), cs, 2));
    free(f);
    CHECK(file_has_pattern(OUTFILE("a/Sub Directory/c/big.bin"), big, 3));
    struct stat st;
    CHECK(stat(f, &st) == 0 && st.st_mtime == T0 + 400);
    free(f);
    CHECK(file_has_pattern(OUTFILE("Ünïcödé fïlé ✓.txt"), 5000, 4));
    free(f);
    char rel[300];
    snprintf(rel, sizeof rel, "a/%s", longname);
    CHECK(file_has_pattern(OUTFILE(rel), 100, 5));
    free(f);
    CHECK(file_has_pattern(OUTFILE("MixedCase.Txt"), 10, 6));
    free(f);
    CHECK(file_has_pattern(OUTFILE("lower.txt"), 11, 7));
    free(f);
    CHECK(file_has_pattern(OUTFILE("trunc.bin"), 2 * cs + 3, 10));
    free(f);
    for (int i = 0; i < 30; i++) {
        snprintf(rel, sizeof rel, "a/Sub Directory/Long File Name %d.txt", i);
        CHECK(file_has_pattern(OUTFILE(rel), (uint64_t)i * 100, 8 + (unsigned)i));
        CHECK(stat(f, &st) == 0 && st.st_mtime == T0 + 1000 + 2 * i);
        free(f);
    }
    CHECK(access(OUTFILE("gone.bin"), F_OK) != 0);
    free(f);
    CHECK_EQ_INT(sh("test $(ls '%s/many' | wc -l) = 1000", out), 0);
    /* mtools sees the 8.3 aliases with ~N tails */
    CHECK_EQ_INT(sh("MTOOLS_SKIP_CHECK=1 mdir -i '%s' '::/a/Sub Directory' | grep -q '^LONGFI~1 TXT'", p), 0);
    CHECK_EQ_INT(sh("MTOOLS_SKIP_CHECK=1 mdir -i '%s' '::/a/Sub Directory' | grep -q '^LONGF~10 TXT'", p), 0);
    sh("rm -rf '%s'", out);
    unlink(p);
#undef OUTFILE
}

TEST(populate_fat12) { populate_and_check(4ull << 20, "fat12", 1500000); }
TEST(populate_fat16) { populate_and_check(64ull << 20, "fat16", 10ull << 20); }
TEST(populate_fat32) { populate_and_check(600ull << 20, "fat32", 10ull << 20); }
/* With no directory cache: every operation reloads what it needs. */
TEST(populate_no_dir_cache)
{
    setenv("QIMG_FAT_DIR_CACHE", "0", 1);
    populate_and_check(64ull << 20, "fat16", 100000);
    unsetenv("QIMG_FAT_DIR_CACHE");
}

/* Images made by mkfs.fat and mcopy read back through the driver. */
struct walk {
    struct qimg_fs *fs;
    int files, dirs, bad;
    char names[4096];
};

static int walk_cb(void *opaque, const char *name, qimg_fs_ino ino)
{
    struct walk *w = opaque;
    struct qimg_fs_attr a;
    if (qimg_fs_vfat.getattr(w->fs, ino, &a) < 0) {
        w->bad++;
        return 0;
    }
    size_t l = strlen(w->names);
    snprintf(w->names + l, sizeof w->names - l, "%s|", name);
    if (S_ISDIR(a.mode)) {
        w->dirs++;
        return qimg_fs_vfat.readdir(w->fs, ino, walk_cb, w);
    }
    w->files++;
    unsigned k = 0;
    if (sscanf(name, "f%u", &k) == 1 && !ino_has_pattern(w->fs, ino, a.size, k))
        w->bad++;
    return 0;
}

TEST(read_mkfs_fat_images)
{
    if (!have_tools)
        return;
    CLEANUP_FREE char *src = path("src");
    CLEANUP_FREE char *p = path("theirs.img");
    sh("rm -rf '%s' && mkdir -p '%s/d1/Deeper Dir' '%s/d2'", src, src, src);
    static const struct { const char *rel; uint64_t size; } files[] = {
        { "f1", 0 }, { "f2.txt", 1 }, { "d1/f3 with spaces.dat", 70000 },
        { "d1/Deeper Dir/f4_ünï.bin", 300000 }, { "d2/f5", 4096 }, { "F6UPPER.TXT", 10 },
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(files); i++) {
        char *fp = qimg_asprintf("%s/%s", src, files[i].rel);
        FILE *o = fopen(fp, "wb");
        CHECK(o != NULL);
        unsigned k = 0;
        const char *base = strrchr(files[i].rel, '/');
        base = base ? base + 1 : files[i].rel;
        if (sscanf(base, "f%u", &k) != 1)
            sscanf(base, "F%u", &k);
        for (uint64_t j = 0; o && j < files[i].size; j++)
            fputc(pattern(j, k), o);
        if (o)
            fclose(o);
        free(fp);
    }
    static const struct { const char *opt; const char *size; const char *type; } kinds[] = {
        { "-F 12", "2M", "fat12" }, { "-F 16", "20M", "fat16" }, { "-F 32", "40M", "fat32" },
        { "-F 16 -S 4096 -s 1", "24M", "fat16" }, { "-F 32 -f 1", "40M", "fat32" },
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(kinds); i++) {
        unlink(p);
        CHECK_EQ_INT(sh("truncate -s %s '%s' && mkfs.fat %s '%s' >/dev/null && cd '%s' && "
                        "MTOOLS_SKIP_CHECK=1 mcopy -s -m -i '%s' * ::/", kinds[i].size, p,
                        kinds[i].opt, p, src, p), 0);
        struct img m;
        struct qimg_fs *fs = fs_open(&m, p, false);
        CHECK(fs != NULL);
        if (!fs)
            continue;
        CHECK_EQ_STR(fs->type, kinds[i].type);
        struct walk w = { .fs = fs };
        CHECK_EQ_INT(qimg_fs_vfat.readdir(fs, fs->root, walk_cb, &w), 0);
        CHECK_EQ_INT(w.files, 6);
        CHECK_EQ_INT(w.dirs, 3);
        CHECK_EQ_INT(w.bad, 0);
        CHECK(strstr(w.names, "|f4_ünï.bin|") != NULL);
        if (!strstr(w.names, "|f4_ünï.bin|"))
            fprintf(stderr, "  names: %s\n", w.names);
        CHECK(strstr(w.names, "|f3 with spaces.dat|") != NULL);
        CHECK(strstr(w.names, "F6UPPER.TXT|") != NULL);
        fs_close(&m, fs);
        /* and writable: add a file next to theirs, fsck stays clean */
        fs = fs_open(&m, p, true);
        CHECK(fs != NULL);
        if (!fs)
            continue;
        qimg_fs_ino d1;
        CHECK_EQ_INT(qimg_fs_vfat.lookup(fs, fs->root, "D1", &d1), 0);
        mkfile(fs, d1, "added by qimg.txt", 12345, 77, T0);
        fs_close(&m, fs);
        CHECK_EQ_INT(fsck_clean(p), 0);
        CHECK_EQ_INT(sh("test $(MTOOLS_SKIP_CHECK=1 mtype -i '%s' '::/d1/added by qimg.txt' "
                        "| wc -c) = 12345", p), 0);
    }
    sh("rm -rf '%s'", src);
    unlink(p);
}

/* While a writable session changes the volume, it is marked dirty on disk
 * (so a crash leaves it for fsck); close clears the marks. */
TEST(dirty_marks_during_a_session)
{
    CLEANUP_FREE char *p = path("session.img");
    for (int k = 0; k < 2; k++) {
        mkfs_at(p, k ? (2ull << 20) : (32ull << 20), NULL, true);   /* FAT16, FAT12 */
        struct img m;
        struct qimg_fs *fs = fs_open(&m, p, true);
        CHECK(fs != NULL);
        if (!fs)
            continue;
        int fd = open(p, O_RDONLY);
        uint8_t s[512];
        CHECK(pread(fd, s, 512, 0) == 512);
        CHECK_EQ_INT(s[37], 0);                 /* nothing written by the open */
        mk(fs, fs->root, "x", false);
        CHECK(pread(fd, s, 512, 0) == 512);
        CHECK_EQ_INT(s[37] & 1, 1);
        if (!k) {
            uint8_t e[4];
            CHECK(pread(fd, e, 4, (off_t)qimg_le16(s + 14) * 512) == 4);
            CHECK_EQ_INT(e[3] & 0x80, 0);       /* FAT16 clean bit cleared */
        }
        /* a second writable open meanwhile is refused (image lock, dirty marks) */
        struct img m2;
        CHECK(fs_open(&m2, p, true) == NULL);
        fs_close(&m, fs);
        CHECK(pread(fd, s, 512, 0) == 512);
        CHECK_EQ_INT(s[37], 0);
        close(fd);
        if (have_tools)
            CHECK_EQ_INT(fsck_clean(p), 0);
    }
    unlink(p);
}

TEST(dirty_volume_refused_for_writing)
{
    CLEANUP_FREE char *p = path("dirty.img");
    mkfs_at(p, 32ull << 20, NULL, true);
    /* FAT16 entry 1: clear the clean-shutdown bit in the first FAT */
    int fd = open(p, O_RDWR);
    uint8_t s[512];
    CHECK(pread(fd, s, 512, 0) == 512);
    uint64_t fat0 = (uint64_t)qimg_le16(s + 14) * 512;
    uint8_t e[4];
    CHECK(pread(fd, e, 4, (off_t)fat0) == 4);
    e[3] &= 0x7F;
    CHECK(pwrite(fd, e, 4, (off_t)fat0) == 4);
    close(fd);
    struct img m;
    struct qimg_fs *fs = fs_open(&m, p, true);
    CHECK(fs == NULL);
    CHECK(strstr(qimg_last_error(), "not cleanly unmounted") != NULL);
    fs = fs_open(&m, p, false);
    CHECK(fs != NULL);
    if (fs)
        fs_close(&m, fs);
    /* FAT32: the BPB's dirty flag (byte 65) */
    mkfs_at(p, 600ull << 20, NULL, true);
    fs = fs_open(&m, p, true);
    CHECK(fs != NULL);
    if (fs)
        fs_close(&m, fs);
    fd = open(p, O_RDWR);
    uint8_t one = 1;
    CHECK(pwrite(fd, &one, 1, 65) == 1);
    close(fd);
    fs = fs_open(&m, p, true);
    CHECK(fs == NULL);
    CHECK(strstr(qimg_last_error(), "marked dirty") != NULL);
    fs = fs_open(&m, p, false);
    CHECK(fs != NULL);
    if (fs)
        fs_close(&m, fs);
    unlink(p);
}

/* ------------------------------------------------------ hostile images */

/* A small FAT16 volume with /d/file (3 clusters) for the corruptions. */
struct layout {
    uint64_t fat0, data;      /* byte offsets */
    uint32_t cs, file_cl, dir_cl;
};

static void make_victim(const char *p, struct layout *l)
{
    mkfs_at(p, 16ull << 20, NULL, true);
    struct img m;
    struct qimg_fs *fs = fs_open(&m, p, true);
    CHECK(fs != NULL);
    if (!fs)
        return;
    qimg_fs_ino d = mk(fs, fs->root, "d", true);
    uint8_t s[512];
    CHECK_EQ_INT(qimg_fs_dev_read(&m.dev, 0, s, 512), 0);
    struct fat_bpb b;
    CHECK_EQ_INT(fat_bpb_parse(s, m.dev.size, &b), 0);
    l->cs = b.cluster_bytes;
    mkfile(fs, d, "file", 3 * l->cs, 1, T0);
    fs_close(&m, fs);
    l->fat0 = (uint64_t)b.first_fat_sector * 512;
    l->data = (uint64_t)b.first_data_sector * 512;
    l->dir_cl = 2;    /* the first clusters allocated */
    l->file_cl = 3;
}

static void put16(const char *p, uint64_t off, uint16_t v)
{
    int fd = open(p, O_RDWR);
    uint8_t b[2];
    qimg_put_le16(b, v);
    CHECK(pwrite(fd, b, 2, (off_t)off) == 2);
    close(fd);
}

/* Opens p and walks and reads everything: returns the first error. */
static int walk_all(const char *p)
{
    struct img m;
    struct qimg_fs *fs = fs_open(&m, p, false);
    if (!fs) {
        CHECK(qimg_last_error()[0] != 0);
        return -1;
    }
    struct walk w = { .fs = fs };
    int r = qimg_fs_vfat.readdir(fs, fs->root, walk_cb, &w);
    qimg_fs_ino d, f;
    if (r == 0 && qimg_fs_vfat.lookup(fs, fs->root, "d", &d) == 0 &&
        qimg_fs_vfat.lookup(fs, d, "file", &f) == 0) {
        uint8_t buf[8192];
        size_t got;
        for (uint64_t off = 0; r == 0 && off < (1 << 20); off += sizeof buf) {
            r = qimg_fs_vfat.read(fs, f, off, buf, sizeof buf, &got);
            if (got < sizeof buf)
                break;
        }
    }
    if (r < 0)
        CHECK(qimg_last_error()[0] != 0);
    qimg_fs_vfat.close(fs);
    qimg_close(m.img);
    return r < 0 ? r : 0;
}

TEST(hostile_cluster_chains)
{
    CLEANUP_FREE char *p = path("hostile.img");
    struct layout l;
    make_victim(p, &l);
    CHECK_EQ_INT(walk_all(p), 0);
    /* a loop: the file's second cluster points back to its first */
    put16(p, l.fat0 + 2 * (l.file_cl + 1), (uint16_t)l.file_cl);
    CHECK(walk_all(p) < 0);
    /* a cluster number past the end */
    make_victim(p, &l);
    put16(p, l.fat0 + 2 * (l.file_cl + 1), 0xFFF0);
    CHECK(walk_all(p) < 0);
    /* a chain shorter than the size */
    make_victim(p, &l);
    put16(p, l.fat0 + 2 * (l.file_cl + 1), 0xFFFF);
    CHECK(walk_all(p) < 0);
    /* the directory's chain loops onto itself */
    make_victim(p, &l);
    put16(p, l.fat0 + 2 * l.dir_cl, (uint16_t)l.dir_cl);
    CHECK(walk_all(p) < 0);
    /* the directory contains itself: its entry for "file" points to the
     * directory's own cluster with the directory attribute */
    make_victim(p, &l);
    {
        int fd = open(p, O_RDWR);
        uint8_t ent[32 * 8];
        uint64_t off = l.data + (uint64_t)(l.dir_cl - 2) * l.cs;
        CHECK(pread(fd, ent, sizeof ent, (off_t)off) == (ssize_t)sizeof ent);
        for (int i = 2; i < 8; i++) {
            uint8_t *e = ent + 32 * i;
            if (e[0] && e[0] != 0xE5 && e[11] != 0x0F) {
                e[11] = 0x10;
                qimg_put_le16(e + 26, (uint16_t)l.dir_cl);
            }
        }
        CHECK(pwrite(fd, ent, sizeof ent, (off_t)off) == (ssize_t)sizeof ent);
        close(fd);
    }
    CHECK(walk_all(p) < 0);
    /* a huge size (4 GiB - 1) on a small volume, then one cluster too many */
    for (int k = 0; k < 2; k++) {
        make_victim(p, &l);
        int fd = open(p, O_RDWR);
        uint8_t ent[32 * 8];
        uint64_t off = l.data + (uint64_t)(l.dir_cl - 2) * l.cs;
        CHECK(pread(fd, ent, sizeof ent, (off_t)off) == (ssize_t)sizeof ent);
        for (int i = 2; i < 8; i++)
            if (!memcmp(ent + 32 * i, "FILE       ", 11))
                qimg_put_le32(ent + 32 * i + 28, k ? 3 * l.cs + 1 : 0xFFFFFFFFu);
        CHECK(pwrite(fd, ent, sizeof ent, (off_t)off) == (ssize_t)sizeof ent);
        close(fd);
        CHECK(walk_all(p) < 0);
    }
    /* FAT copies that differ: writable opens are refused */
    make_victim(p, &l);
    {
        uint8_t s[512];
        int fd = open(p, O_RDONLY);
        CHECK(pread(fd, s, 512, 0) == 512);
        close(fd);
        put16(p, l.fat0 + (uint64_t)qimg_le16(s + 22) * 512 + 2 * 100, 0xFFFF);
        struct img m;
        CHECK(fs_open(&m, p, true) == NULL);
        CHECK(strstr(qimg_last_error(), "copies of the FAT") != NULL);
        CHECK_EQ_INT(walk_all(p), 0);   /* reading is fine */
    }
    /* cross-linked chains: the directory's chain joins the file's; and a
     * link past the end: writable opens are refused */
    for (int k = 0; k < 2; k++) {
        make_victim(p, &l);
        put16(p, l.fat0 + 2 * l.dir_cl, k ? 0xFFF0 : (uint16_t)(l.file_cl + 1));
        struct img m;
        struct qimg_fs *fs = fs_open(&m, p, true);
        CHECK(fs == NULL);
        CHECK(strstr(qimg_last_error(), k ? "outside the volume" : "cross-linked") != NULL);
        walk_all(p);   /* read-only: whatever it finds, it ends */
    }
    unlink(p);
}

TEST(hostile_bpb)
{
    CLEANUP_FREE char *p = path("bpb.img");
    static const struct { unsigned off, size; uint32_t value; } bad[] = {
        { 11, 2, 3 },          /* bytes per sector */
        { 11, 2, 8192 },
        { 13, 1, 0 },          /* sectors per cluster */
        { 13, 1, 3 },
        { 14, 2, 0 },          /* reserved */
        { 16, 1, 0 },          /* FATs */
        { 19, 2, 0 },          /* total sectors 16 and 32 zero */
        { 32, 4, 0xFFFFFFFF }, /* total sectors past the device */
        { 22, 2, 0 },          /* FAT size 0: a FAT32 layout with a FAT16 count */
        { 22, 2, 1 },          /* FAT too small for the clusters */
        { 17, 2, 0 },          /* no root entries */
        { 16, 1, 9 },          /* 9 FATs */
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(bad); i++) {
        mkfs_at(p, 32ull << 20, NULL, true);
        int fd = open(p, O_RDWR);
        uint8_t v[4];
        qimg_put_le32(v, bad[i].value);
        if (bad[i].off == 19) {   /* both totals */
            uint8_t z[4] = { 0 };
            CHECK(pwrite(fd, z, 4, 32) == 4);
        }
        CHECK(pwrite(fd, v, bad[i].size, bad[i].off) == (ssize_t)bad[i].size);
        close(fd);
        struct img m;
        CHECK_EQ_INT(img_open(&m, p, false), 0);
        CHECK_EQ_INT(qimg_fs_vfat.probe(&m.dev), 0);
        struct qimg_fs *fs = NULL;
        int r = qimg_fs_vfat.open(&m.dev, &fs);
        if (r == 0) {
            fprintf(stderr, "  BPB case %zu opened\n", i);
            qimg_fs_vfat.close(fs);
        }
        CHECK(r < 0);
        CHECK(qimg_last_error()[0] != 0);
        qimg_close(m.img);
    }
    unlink(p);
}

/* A full volume: -ENOSPC with a message, the file keeps what was written,
 * the volume stays consistent. */
TEST(volume_full)
{
    CLEANUP_FREE char *p = path("full.img");
    mkfs_at(p, 2ull << 20, NULL, true);
    struct img m;
    struct qimg_fs *fs = fs_open(&m, p, true);
    CHECK(fs != NULL);
    if (!fs)
        return;
    qimg_fs_ino ino = mk(fs, fs->root, "filler", false);
    uint8_t *buf = qimg_xmalloc(512 << 10);
    int r = 0;
    uint64_t off = 0;
    for (; off < (4 << 20); off += 512 << 10) {
        fill(buf, off, 512 << 10, 1);
        r = qimg_fs_vfat.write(fs, ino, off, buf, 512 << 10);
        if (r < 0)
            break;
    }
    free(buf);
    CHECK_EQ_INT(r, -ENOSPC);
    CHECK(strstr(qimg_last_error(), "no space left") != NULL);
    CHECK(off > 0);
    CHECK(ino_has_pattern(fs, ino, off, 1));
    /* the space is still usable by a smaller file */
    mkfile(fs, fs->root, "small", 1000, 2, T0);
    fs_close(&m, fs);
    if (have_tools)
        CHECK_EQ_INT(fsck_clean(p), 0);
    unlink(p);
}

/* min_size gives a size that holds the tree it describes. */
TEST(min_size_fits)
{
    struct qimg_fs_usage u = { .files = 200, .dirs = 10, .data_bytes = 30ull << 20,
                               .name_bytes = 200 * 30, .max_dir_entries = 50 };
    struct qimg_mkfs_params mp = { .type = "vfat" };
    uint64_t size = 0;
    CHECK_EQ_INT(qimg_fs_vfat.min_size(&u, &mp, &size), 0);
    CHECK(size >= (30ull << 20) && size < (40ull << 20));
    /* a directory of 2000 names: FAT32 unless we know it is not the top one */
    struct qimg_fs_usage big = { .files = 2000, .dirs = 1, .data_bytes = 1 << 20,
                                 .name_bytes = 2000 * 20, .max_dir_entries = 2000 };
    CHECK_EQ_INT(qimg_fs_vfat.min_size(&big, &mp, &size), 0);
    CHECK(size >= (512ull << 20));
    big.root_entries = 1;
    big.root_name_bytes = 3;
    CHECK_EQ_INT(qimg_fs_vfat.min_size(&big, &mp, &size), 0);
    CHECK(size < (16ull << 20));
    big.root_entries = 300;     /* 300 names of 20 bytes: 2-3 slots each */
    big.root_name_bytes = 300 * 20;
    CHECK_EQ_INT(qimg_fs_vfat.min_size(&big, &mp, &size), 0);
    CHECK(size >= (512ull << 20));
    /* fill a volume of that size with the tree: it fits */
    CLEANUP_FREE char *p = path("min.img");
    mkfs_at(p, size, NULL, true);
    struct img m;
    struct qimg_fs *fs = fs_open(&m, p, true);
    CHECK(fs != NULL);
    if (!fs)
        return;
    qimg_fs_ino d = fs->root;
    for (int i = 0; i < 200; i++) {
        char name[40];
        if (i % 20 == 0) {
            snprintf(name, sizeof name, "directory number %d", i / 20);
            d = mk(fs, fs->root, name, true);
        }
        snprintf(name, sizeof name, "file number %05d.dat", i);
        mkfile(fs, d, name, (30ull << 20) / 200, (unsigned)i, T0);
    }
    fs_close(&m, fs);
    if (have_tools)
        CHECK_EQ_INT(fsck_clean(p), 0);
    unlink(p);
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    setenv("LC_ALL", "C.UTF-8", 1);   /* mtools converts names through the locale */
    setenv("MTOOLS_SKIP_CHECK", "1", 1);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    const char *old_path = getenv("PATH");
    char *new_path = qimg_asprintf("%s:/usr/sbin:/sbin", old_path ? old_path : "/usr/bin:/bin");
    setenv("PATH", new_path, 1);
    free(new_path);
    have_tools = sh("command -v fsck.fat >/dev/null && command -v mkfs.fat >/dev/null && "
                    "command -v mcopy >/dev/null") == 0;
    RUN(tools_present);
    RUN(format_helpers);
    RUN(mkfs_matches_mkfs_fat);
    RUN(mkfs_reproducible);
    RUN(populate_fat12);
    RUN(populate_fat16);
    RUN(populate_fat32);
    RUN(populate_no_dir_cache);
    RUN(read_mkfs_fat_images);
    RUN(dirty_marks_during_a_session);
    RUN(dirty_volume_refused_for_writing);
    RUN(hostile_cluster_chains);
    RUN(hostile_bpb);
    RUN(volume_full);
    RUN(min_size_fits);
    sh("rm -rf '%s'", dir);
    return UNIT_DONE();
}
