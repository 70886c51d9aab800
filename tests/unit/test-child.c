/* The child-file policy (src/lib/child.c): which option tree a child an
 * image names gets, what safe mode refuses, and qimg_open_child on real
 * files (a FIFO refused without blocking). */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "unit.h"

static char dir[] = "/tmp/qimg-child-XXXXXX";

static char *path_in(const char *name) { return qimg_asprintf("%s/%s", dir, name); }

static void make_file(const char *name, size_t size)
{
    CLEANUP_FREE char *p = path_in(name);
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0);
    CHECK_EQ_INT(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

/* A parent image whose storage is dir/sub/top.img (only the fields the
 * policy reads). */
static qimg_image *parent(unsigned flags)
{
    qimg_image *img = qimg_xcalloc(1, sizeof *img);
    img->filename = path_in("sub/top.img");
    img->flags = flags;
    return img;
}

static void free_parent(qimg_image *img)
{
    free(img->filename);
    free(img);
}

TEST(plain_names_resolve_against_the_image)
{
    qimg_image *p = parent(0);
    qimg_opts *o = NULL;
    char *display = NULL;
    CLEANUP_FREE char *want = path_in("sub/base.img");
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "base.img", NULL, &o, &display), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "file.filename"), want);
    CHECK(qimg_opts_get(o, "driver") == NULL);
    CHECK_EQ_STR(display, want);
    qimg_opts_free(o);
    free(display);
    o = NULL;
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_DATA_FILE, "data.raw", NULL, &o, NULL), 0);
    CLEANUP_FREE char *want_data = path_in("sub/data.raw");
    CHECK_EQ_STR(qimg_opts_get(o, "driver"), "file");
    CHECK_EQ_STR(qimg_opts_get(o, "filename"), want_data);
    qimg_opts_free(o);
    o = NULL;
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "/abs/base", NULL, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "file.filename"), "/abs/base");
    qimg_opts_free(o);
    o = NULL;
    /* no name: no child */
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "", NULL, &o, NULL), 0);
    CHECK(o == NULL);
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, NULL, NULL, &o, NULL), 0);
    CHECK(o == NULL);
    free_parent(p);
}

TEST(backing_names_keep_json_and_protocols)
{
    qimg_image *p = parent(0);
    qimg_opts *o = NULL;
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING,
                                 "json:{\"driver\":\"qcow2\",\"file\":{\"filename\":\"b.q\"}}",
                                 NULL, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "driver"), "qcow2");
    CHECK_EQ_STR(qimg_opts_get(o, "file.filename"), "b.q");    /* as given: qemu's rule */
    qimg_opts_free(o);
    o = NULL;
    /* the prefix picks the backend, and its parser reads the rest */
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "null-co://", NULL, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "file.filename"), "null-co://");
    CHECK_EQ_STR(qimg_opts_get(o, "file.driver"), "null-co");
    qimg_opts_free(o);
    o = NULL;
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "file:b:c", NULL, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "file.filename"), "./b:c");
    CHECK_EQ_STR(qimg_opts_get(o, "file.driver"), "file");
    qimg_opts_free(o);
    o = NULL;
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "nbd://127.0.0.1:1/x", NULL, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "file.driver"), "nbd");
    CHECK_EQ_STR(qimg_opts_get(o, "file.server.host"), "127.0.0.1");
    CHECK_EQ_STR(qimg_opts_get(o, "file.export"), "x");
    qimg_opts_free(o);
    o = NULL;
    /* a protocol qimg lacks, or none at all: qemu's error */
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "gluster://127.0.0.1:1/x", NULL, &o, NULL), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Unknown protocol 'gluster'");
    CHECK(o == NULL);
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "image:b", NULL, &o, NULL), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Unknown protocol 'image'");
    CHECK(o == NULL);
    free_parent(p);
}

/* CVE-2024-4467: a data file name is a local file name, whatever it looks like */
TEST(data_file_names_are_never_parsed)
{
    qimg_image *p = parent(0);
    qimg_opts *o = NULL;
    const char *json = "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"vvfat\",\"dir\":\"/\"}}";
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_DATA_FILE, json, NULL, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "driver"), "file");
    CHECK_EQ_STR(qimg_opts_get(o, "filename"), json);
    CHECK(qimg_opts_get(o, "file.driver") == NULL);
    qimg_opts_free(o);
    o = NULL;
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_EXTENT, "nbd://h/x", NULL, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "driver"), "file");
    CHECK_EQ_STR(qimg_opts_get(o, "filename"), "nbd://h/x");
    qimg_opts_free(o);
    free_parent(p);
}

TEST(user_options_win)
{
    qimg_image *p = parent(QIMG_OPEN_SAFE);
    qimg_opts *user = NULL, *o = NULL;
    qimg_opts_set(&user, "driver", "file");
    qimg_opts_set(&user, "filename", "/elsewhere/d.raw");
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_DATA_FILE, "/etc/passwd", user, &o, NULL), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "filename"), "/elsewhere/d.raw");
    qimg_opts_free(o);
    qimg_opts_free(user);
    free_parent(p);
}

TEST(safe_mode_refuses_image_named_children)
{
    qimg_image *p = parent(QIMG_OPEN_SAFE);
    qimg_opts *o = NULL;
    static const enum qimg_child_kind kinds[] = {
        QIMG_CHILD_BACKING, QIMG_CHILD_DATA_FILE, QIMG_CHILD_EXTENT, QIMG_CHILD_PARENT_LOCATOR,
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(kinds); i++) {
        CHECK_EQ_INT(qimg_child_opts(p, kinds[i], "/etc/passwd", NULL, &o, NULL), -EPERM);
        CHECK(o == NULL);
    }
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_BACKING, "base.img", NULL, &o, NULL), -EPERM);
    CHECK_EQ_STR(qimg_last_error(),
                 "safe mode: image names a backing file 'base.img' that was not given");
    CHECK_EQ_INT(qimg_child_opts(p, QIMG_CHILD_DATA_FILE, "d.raw", NULL, &o, NULL), -EPERM);
    CHECK_EQ_STR(qimg_last_error(), "safe mode: image names a data file 'd.raw' that was not given");
    CHECK_EQ_INT(qimg_child_permitted(p, QIMG_CHILD_BACKING, "nbd://127.0.0.1:1/x"), -EPERM);
    /* not in safe mode: permitted */
    p->flags = 0;
    CHECK_EQ_INT(qimg_child_permitted(p, QIMG_CHILD_BACKING, "/etc/passwd"), 0);
    free_parent(p);
}

TEST(safe_mode_allows_files_the_user_named)
{
    qimg_image *p = parent(QIMG_OPEN_SAFE);
    make_file("sub/named.img", 4096);
    make_file("sub/other.img", 4096);
    CLEANUP_FREE char *named = path_in("sub/named.img");
    CHECK_EQ_INT(qimg_child_permitted(p, QIMG_CHILD_BACKING, "named.img"), -EPERM);
    qimg_safe_allow_file(named);
    CHECK_EQ_INT(qimg_child_permitted(p, QIMG_CHILD_BACKING, "named.img"), 0);
    CHECK_EQ_INT(qimg_child_permitted(p, QIMG_CHILD_BACKING, "../sub/named.img"), 0); /* same file */
    CHECK_EQ_INT(qimg_child_permitted(p, QIMG_CHILD_BACKING, "other.img"), -EPERM);
    /* a json: name is never the file the user named */
    CHECK_EQ_INT(qimg_child_permitted(p, QIMG_CHILD_BACKING,
                 "json:{\"file\":{\"filename\":\"named.img\"}}"), -EPERM);
    free_parent(p);
}

TEST(open_child_refuses_fifos_without_blocking)
{
    qimg_image *p = parent(0);
    struct qimg_io *io = NULL;
    CLEANUP_FREE char *fifo = path_in("sub/fifo");
    CHECK_EQ_INT(mkfifo(fifo, 0644), 0);
    CHECK(qimg_open_child(p, QIMG_CHILD_DATA_FILE, "fifo", NULL, 0, &io) < 0);
    CHECK(io == NULL);
    CHECK(qimg_open_child(p, QIMG_CHILD_DATA_FILE, ".", NULL, 0, &io) < 0);   /* a directory */
    make_file("sub/data.raw", 8192);
    CHECK_EQ_INT(qimg_open_child(p, QIMG_CHILD_DATA_FILE, "data.raw", NULL, 0, &io), 0);
    uint64_t size = 0;
    CHECK(io != NULL);
    if (io) {
        CHECK_EQ_INT(qimg_io_get_size(io, &size), 0);
        CHECK_EQ_INT(size, 8192);
        qimg_io_close(io);
    }
    /* no name, no child */
    CHECK_EQ_INT(qimg_open_child(p, QIMG_CHILD_DATA_FILE, NULL, NULL, 0, &io), 0);
    CHECK(io == NULL);
    /* unknown storage options are reported as qemu does */
    qimg_opts *user = NULL;
    CLEANUP_FREE char *data = path_in("sub/data.raw");
    qimg_opts_set(&user, "filename", data);
    qimg_opts_set(&user, "foo", "1");
    CHECK_EQ_INT(qimg_open_child(p, QIMG_CHILD_DATA_FILE, NULL, user, 0, &io), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Block protocol 'file' doesn't support the option 'foo'");
    qimg_opts_free(user);
    free_parent(p);
}

TEST(first_unused_in_qemu_order)
{
    qimg_opts *o = NULL;
    CHECK_EQ_INT(qimg_keyval_parse(&o, "foo=1,bar=2,zzz=3,aaa=4", NULL), 0);
    CHECK_EQ_STR(qimg_opts_first_unused_qemu(o), "aaa");   /* as qemu-img 7.2 reports it */
    qimg_opts_free(o);
    o = NULL;
    CHECK_EQ_INT(qimg_keyval_parse(&o, "x.y=1,foo=2", NULL), 0);
    CHECK_EQ_STR(qimg_opts_first_unused_qemu(o), "x.y");
    qimg_opts_free(o);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    CLEANUP_FREE char *sub = path_in("sub");
    mkdir(sub, 0755);
    unsetenv("QIMG_SAFE");
    RUN(plain_names_resolve_against_the_image);
    RUN(backing_names_keep_json_and_protocols);
    RUN(data_file_names_are_never_parsed);
    RUN(user_options_win);
    RUN(safe_mode_refuses_image_named_children);
    RUN(safe_mode_allows_files_the_user_named);
    RUN(open_child_refuses_fifos_without_blocking);
    RUN(first_unused_in_qemu_order);
    CLEANUP_FREE char *cmd = qimg_asprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return UNIT_DONE();
}
