/* Unit tests: the storage registry, wrapper defaults, null-co, blkdebug
 * (rules files, inject-error once/always, sectors, set-state) and the file
 * backend's basics through the generic entry points. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "unit.h"

static char dir[] = "/tmp/qimg-unit-io.XXXXXX";

static char *path(const char *name) { return qimg_asprintf("%s/%s", dir, name); }

static void write_text(const char *p, const char *text)
{
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* A 1 MiB file of 0x5a bytes. */
static char *make_image(const char *name)
{
    char *p = path(name);
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0);
    uint8_t buf[65536];
    memset(buf, 0x5a, sizeof buf);
    for (int i = 0; i < 16; i++)
        CHECK(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf);
    close(fd);
    return p;
}

/* blkdebug over NAME with these rules. */
static int open_blkdebug(struct qimg_io **io, const char *rules, const char *image, unsigned flags)
{
    CLEANUP_FREE char *cfg = path("rules.cfg");
    write_text(cfg, rules);
    CLEANUP_FREE char *name = qimg_asprintf("blkdebug:%s:%s", cfg, image);
    return qimg_io_open(io, name, flags);
}

TEST(registry_has_required_ops)
{
    size_t n = 0;
    for (; qimg_io_backends[n]; n++) {
        const struct qimg_io_ops *ops = qimg_io_backends[n];
        CHECK(ops->name && ops->open && ops->pread && ops->get_size && ops->close);
        CHECK(ops->pwrite != NULL || ops->read_only);
        CHECK(qimg_io_backend_find(ops->name) == ops);
    }
    CHECK(n >= 4);
    CHECK(qimg_io_backend_find("null-aio") == &qimg_io_null_aio_ops);
    CHECK(qimg_io_backend_find("nosuch") == NULL);
}

TEST(event_names_round_trip)
{
    for (int ev = 0; ev < QIMG_EV__MAX; ev++) {
        const char *name = qimg_io_event_name(ev);
        CHECK(name != NULL);
        CHECK_EQ_INT(qimg_io_event_lookup(name), ev);
    }
    CHECK_EQ_INT(qimg_io_event_lookup("l2_load"), QIMG_EV_L2_LOAD);
    CHECK_EQ_INT(qimg_io_event_lookup("l1_grow.alloc_table"), -1);   /* the old spelling */
}

TEST(null_co_reads_zeros_and_drops_writes)
{
    struct qimg_io *io;
    CHECK_EQ_INT(qimg_io_open(&io, "null-co://", QIMG_IO_RDWR), 0);
    uint64_t size = 0;
    CHECK_EQ_INT(qimg_io_get_size(io, &size), 0);
    CHECK_EQ_INT(size, 1ull << 30);
    uint8_t buf[4096];
    memset(buf, 0xee, sizeof buf);
    CHECK_EQ_INT(qimg_io_pwrite(io, buf, sizeof buf, 0), 0);
    CHECK_EQ_INT(qimg_io_pread(io, buf, sizeof buf, 0), 0);
    CHECK(qimg_is_zero(buf, sizeof buf));
    CHECK_EQ_INT(qimg_io_allocated_size(io), 0);
    uint64_t pnum;
    int kind;
    CHECK_EQ_INT(qimg_io_extent(io, 0, 1 << 20, &pnum, &kind), 0);
    CHECK_EQ_INT(kind, QIMG_IO_EXT_UNKNOWN);
    /* defaults of missing ops */
    CHECK_EQ_INT(qimg_io_flush(io), 0);
    CHECK_EQ_INT(qimg_io_discard(io, 0, 4096), 0);
    CHECK_EQ_INT(qimg_io_truncate(io, 4096), -ENOTSUP);
    CHECK_EQ_INT(qimg_io_lock(io, QIMG_PERM_WRITE, 0), 0);
    qimg_io_hint(io, QIMG_IO_HINT_WILLNEED, 0, 4096);
    qimg_io_event(io, QIMG_EV_L2_LOAD);
    qimg_io_close(io);
    CHECK(qimg_io_open(&io, "null-co://x", 0) < 0);
}

TEST(null_co_options)
{
    qimg_opts *o = NULL;
    qimg_opts_set(&o, "driver", "null-aio");
    qimg_opts_set(&o, "size", "1M");
    qimg_opts_set(&o, "read-zeroes", "on");
    qimg_opts_set(&o, "other", "x");
    struct qimg_io *io;
    CHECK_EQ_INT(qimg_io_open_opts(&io, o, 0), 0);
    CHECK_EQ_STR(qimg_opts_first_unused(o), "other");
    uint64_t size = 0, pnum;
    int kind;
    CHECK_EQ_INT(qimg_io_get_size(io, &size), 0);
    CHECK_EQ_INT(size, 1 << 20);
    CHECK_EQ_INT(qimg_io_extent(io, 0, 4096, &pnum, &kind), 0);
    CHECK_EQ_INT(kind, QIMG_IO_EXT_HOLE);
    CHECK_EQ_STR(io->filename, "null-aio://");
    qimg_io_close(io);
    qimg_opts_free(o);
    o = NULL;
    qimg_opts_set(&o, "driver", "nosuch");
    CHECK_EQ_INT(qimg_io_open_opts(&io, o, 0), -EINVAL);
    qimg_opts_free(o);
}

TEST(file_backend_basics)
{
    CLEANUP_FREE char *p = make_image("f.img");
    CLEANUP_FREE char *fp = qimg_asprintf("file:%s", p);
    struct qimg_io *a, *b, *c;
    CHECK_EQ_INT(qimg_io_open(&a, p, QIMG_IO_RDWR), 0);
    CHECK_EQ_INT(qimg_io_open(&b, fp, 0), 0);   /* file: prefix, same file */
    CHECK_EQ_STR(b->filename, p);
    CHECK(qimg_io_same(a, b));
    CHECK_EQ_INT(qimg_io_open(&c, "null-co://", 0), 0);
    CHECK(!qimg_io_same(a, c));
    uint8_t buf[512];
    CHECK_EQ_INT(qimg_io_zero(a, 0, 512, false), 0);
    CHECK_EQ_INT(qimg_io_pread(b, buf, 512, 0), 0);
    CHECK(qimg_is_zero(buf, 512));
    CHECK_EQ_INT(qimg_io_pread(b, buf, 512, 512), 0);
    CHECK_EQ_INT(buf[0], 0x5a);
    qimg_io_hint(a, QIMG_IO_HINT_WRITEBACK, 0, 0);
    qimg_io_hint(a, QIMG_IO_HINT_WILLNEED, 0, 4096);
    CHECK_EQ_INT(qimg_io_flush(a), 0);
    CHECK(qimg_io_allocated_size(a) > 0);
    qimg_io_close(a);
    qimg_io_close(b);
    qimg_io_close(c);
}

TEST(blkdebug_rules_file_errors)
{
    CLEANUP_FREE char *p = make_image("b.img");
    struct qimg_io *io;
    static const struct { const char *text, *msg; } bad[] = {
        { "garbage\n", "no group defined" },
        { "[inject-error]\n  \n", "parse error" },
        { "[nosuch]\n", "There is no option group 'nosuch'" },
        { "[inject-error]\nerrno = \"5\"\n", "Missing event name for rule" },
        { "[inject-error]\nevent = \"nosuch\"\n", "invalid parameter value: nosuch" },
        { "[inject-error]\nevent = \"read_aio\"\nbogus = \"1\"\n", "Invalid parameter 'bogus'" },
        { "[set-state]\nevent = \"read_aio\"\nerrno = \"1\"\n", "Invalid parameter 'errno'" },
        { "[inject-error]\nevent = \"read_aio\"\niotype = \"x\"\n", "invalid parameter value: x" },
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(bad); i++) {
        CHECK_EQ_INT(open_blkdebug(&io, bad[i].text, p, 0), -EINVAL);
        CHECK_EQ_STR(qimg_last_error(), bad[i].msg);
    }
    CHECK(qimg_io_open(&io, "blkdebug:nocolon", 0) < 0);
    CHECK_EQ_STR(qimg_last_error(), "blkdebug requires both config file and image path");
    CLEANUP_FREE char *name = qimg_asprintf("blkdebug::%s", p);   /* no rules */
    CHECK_EQ_INT(qimg_io_open(&io, name, 0), 0);
    CHECK_EQ_STR(io->filename, name);
    qimg_io_close(io);
}

TEST(blkdebug_inject_always_and_once)
{
    CLEANUP_FREE char *p = make_image("c.img");
    struct qimg_io *io;
    uint8_t buf[512];
    /* armed by its event, then every read fails until another event re-arms */
    CHECK_EQ_INT(open_blkdebug(&io, "[inject-error]\nevent = \"l2_load\"\nerrno = \"28\"\n", p, 0), 0);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), 0);       /* not armed yet */
    qimg_io_event(io, QIMG_EV_L2_LOAD);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), -28);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 4096), -28);
    uint64_t pnum;
    int kind;
    CHECK_EQ_INT(qimg_io_extent(io, 0, 512, &pnum, &kind), 0);   /* block-status not by default */
    qimg_io_close(io);
    /* once: only the first matching request */
    CHECK_EQ_INT(open_blkdebug(&io, "[inject-error]\nevent = \"read_aio\"\nonce = \"on\"\n", p, 0), 0);
    qimg_io_event(io, QIMG_EV_READ_AIO);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), -EIO);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), 0);
    qimg_io_event(io, QIMG_EV_READ_AIO);                     /* dropped for good */
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), 0);
    qimg_io_close(io);
    /* a sector: only requests covering it; an iotype: only those */
    CHECK_EQ_INT(open_blkdebug(&io, "[inject-error]\nevent = \"none\"\nsector = \"8\"\n"
                               "[inject-error]\nevent = \"none\"\niotype = \"flush\"\n", p, QIMG_IO_RDWR), 0);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), 0);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 4096), -EIO);
    CHECK_EQ_INT(qimg_io_pwrite(io, buf, 512, 4096), -EIO);
    CHECK_EQ_INT(qimg_io_flush(io), -EIO);
    qimg_io_close(io);
}

TEST(blkdebug_set_state)
{
    CLEANUP_FREE char *p = make_image("d.img");
    struct qimg_io *io;
    uint8_t buf[512];
    const char *rules = "[set-state]\nevent = \"l2_load\"\nstate = \"1\"\nnew_state = \"2\"\n"
                        "[set-state]\nevent = \"l2_load\"\nstate = \"2\"\nnew_state = \"3\"\n"
                        "[inject-error]\nevent = \"read_aio\"\nstate = \"3\"\n";
    CHECK_EQ_INT(open_blkdebug(&io, rules, p, 0), 0);
    qimg_io_event(io, QIMG_EV_READ_AIO);          /* state 1: nothing */
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), 0);
    qimg_io_event(io, QIMG_EV_L2_LOAD);           /* 1 -> 2 only: rules see the old state */
    qimg_io_event(io, QIMG_EV_READ_AIO);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), 0);
    qimg_io_event(io, QIMG_EV_L2_LOAD);           /* 2 -> 3 */
    qimg_io_event(io, QIMG_EV_READ_AIO);
    CHECK_EQ_INT(qimg_io_pread(io, buf, 512, 0), -EIO);
    qimg_io_close(io);
}

TEST(blkdebug_options_and_align)
{
    CLEANUP_FREE char *p = make_image("e.img");
    qimg_opts *o = NULL;
    qimg_opts_set(&o, "driver", "blkdebug");
    qimg_opts_set(&o, "image.driver", "file");
    qimg_opts_set(&o, "image.filename", p);
    qimg_opts_set(&o, "align", "4096");
    qimg_opts_set(&o, "inject-error.0.event", "pwritev_rmw_head");
    qimg_opts_set(&o, "inject-error.0.once", "on");
    struct qimg_io *io;
    CHECK_EQ_INT(qimg_io_open_opts(&io, o, QIMG_IO_RDWR), 0);
    CHECK(qimg_opts_first_unused(o) == NULL);
    CHECK_EQ_INT(io->align, 4096);
    uint8_t buf[100], back[100];
    memset(buf, 0x77, sizeof buf);
    /* unaligned: read-modify-write; the head read fails once */
    CHECK_EQ_INT(qimg_io_pwrite(io, buf, sizeof buf, 5000), -EIO);
    CHECK_EQ_INT(qimg_io_pwrite(io, buf, sizeof buf, 5000), 0);
    CHECK_EQ_INT(qimg_io_pread(io, back, sizeof back, 5000), 0);
    CHECK(memcmp(buf, back, sizeof buf) == 0);
    CHECK_EQ_INT(qimg_io_pread(io, back, 1, 4999), 0);
    CHECK_EQ_INT(back[0], 0x5a);
    qimg_io_close(io);
    qimg_opts_free(o);
    o = NULL;
    qimg_opts_set(&o, "driver", "blkdebug");
    qimg_opts_set(&o, "image.filename", p);
    qimg_opts_set(&o, "align", "3000");
    CHECK_EQ_INT(qimg_io_open_opts(&io, o, 0), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Cannot meet constraints with align 3000");
    qimg_opts_free(o);
    o = NULL;   /* as in qemu: a filename option is not the image ... */
    qimg_opts_set(&o, "driver", "blkdebug");
    qimg_opts_set(&o, "filename", p);
    CHECK_EQ_INT(qimg_io_open_opts(&io, o, 0), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "A block device must be specified for \"image\"");
    qimg_opts_free(o);
    o = NULL;   /* ... and a bare "image" names another node */
    qimg_opts_set(&o, "driver", "blkdebug");
    qimg_opts_set(&o, "image", "x");
    CHECK_EQ_INT(qimg_io_open_opts(&io, o, 0), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Cannot find device='x' nor node-name='x'");
    qimg_opts_free(o);
    o = NULL;   /* the image a blkdebug:RULES:IMAGE string names */
    CLEANUP_FREE char *name = qimg_asprintf("blkdebug::file:%s", p);
    CHECK_EQ_INT(qimg_io_open(&io, name, 0), 0);
    uint64_t size = 0;
    CHECK_EQ_INT(qimg_io_get_size(io, &size), 0);
    CHECK_EQ_INT(size, 1 << 20);
    CLEANUP_FREE char *exact = qimg_io_exact_filename(io);
    CLEANUP_FREE char *expect = qimg_asprintf("blkdebug::%s", p);
    CHECK_EQ_STR(exact, expect);
    qimg_io_close(io);
}

/* vvfat with rw: writes land in the overlay (read back, unaligned pieces
 * merged with the made bytes around them), never in the directory; a
 * read-only open refuses rw:, a read-write open without it is refused. */
TEST(vvfat_rw_overlay)
{
    CLEANUP_FREE char *tree = path("vvtree");
    CHECK_EQ_INT(mkdir(tree, 0755), 0);
    CLEANUP_FREE char *file = path("vvtree/keep.txt");
    write_text(file, "keep me\n");
    CLEANUP_FREE char *name = qimg_asprintf("fat:rw:%s", tree);
    struct qimg_io *io;
    CHECK(qimg_io_open(&io, name, 0) < 0);
    CHECK(strstr(qimg_last_error(), "Unable to set VVFAT to 'rw'") != NULL);
    CLEANUP_FREE char *ro = qimg_asprintf("fat:%s", tree);
    CHECK(qimg_io_open(&io, ro, QIMG_IO_RDWR) < 0);
    CHECK_EQ_INT(qimg_io_open(&io, name, QIMG_IO_RDWR), 0);
    static uint8_t before[3 * 512], after[3 * 512];
    CHECK_EQ_INT(qimg_io_pread(io, before, sizeof before, 1 << 20), 0);
    uint8_t data[700];
    memset(data, 0xab, sizeof data);
    CHECK_EQ_INT(qimg_io_pwrite(io, data, sizeof data, (1 << 20) + 100), 0);
    CHECK_EQ_INT(qimg_io_pread(io, after, sizeof after, 1 << 20), 0);
    CHECK(memcmp(after, before, 100) == 0);
    CHECK(memcmp(after + 100, data, sizeof data) == 0);
    CHECK(memcmp(after + 800, before + 800, sizeof after - 800) == 0);
    /* the MBR stays what was made where nothing was written */
    uint8_t mbr[512];
    CHECK_EQ_INT(qimg_io_pread(io, mbr, sizeof mbr, 0), 0);
    CHECK(mbr[510] == 0x55 && mbr[511] == 0xAA);
    qimg_io_close(io);
    struct stat st;
    CHECK_EQ_INT(stat(file, &st), 0);
    CHECK_EQ_INT(st.st_size, 8);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(registry_has_required_ops);
    RUN(event_names_round_trip);
    RUN(null_co_reads_zeros_and_drops_writes);
    RUN(null_co_options);
    RUN(file_backend_basics);
    RUN(blkdebug_rules_file_errors);
    RUN(blkdebug_inject_always_and_once);
    RUN(blkdebug_set_state);
    RUN(blkdebug_options_and_align);
    RUN(vvfat_rw_overlay);
    CLEANUP_FREE char *cmd = qimg_asprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return UNIT_DONE();
}
