/* Unit tests of the generic commit and rebase over a tiny in-memory
 * format with backing files (the real ones come with qcow2). */
#include <errno.h>

#include "internal.h"
#include "unit.h"

#define CL 4096u   /* allocation unit of the fake format */

struct mem { uint8_t *data; bool *alloc; uint64_t cap; int emptied; char *new_backing, *new_fmt; };

static struct mem *M(struct qimg_image *img) { return img->opaque; }

static int mem_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    uint8_t *out = buf;
    while (len > 0) {
        uint64_t c = off / CL;
        size_t n = (size_t)QIMG_MIN((uint64_t)len, (c + 1) * CL - off);
        int r = 0;
        if (M(img)->alloc[c])
            memcpy(out, M(img)->data + off, n);
        else
            r = qimg_read_backing(img, off, out, n);
        if (r < 0)
            return r;
        out += n, off += n, len -= n;
    }
    return 0;
}

/* whole-unit writes only in these tests (rebase and commit write units) */
static int mem_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    const uint8_t *in = buf;
    while (len > 0) {
        uint64_t c = off / CL;
        size_t n = (size_t)QIMG_MIN((uint64_t)len, (c + 1) * CL - off);
        if (!M(img)->alloc[c] && (off % CL || n != CL)) {
            /* partial write of an unallocated unit: copy-on-write */
            int r = qimg_read_backing(img, c * CL, M(img)->data + c * CL, CL);
            if (r < 0)
                return r;
        }
        memcpy(M(img)->data + off, in, n);
        M(img)->alloc[c] = true;
        in += n, off += n, len -= n;
    }
    return 0;
}

static int mem_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    uint64_t c = off / CL;
    bool a = M(img)->alloc[c];
    uint64_t end = (c + 1) * CL;
    while (end < off + len && M(img)->alloc[end / CL] == a)
        end += CL;
    ext->length = QIMG_MIN(end, off + len) - off;
    ext->flags = a ? QIMG_STATUS_ALLOCATED | QIMG_STATUS_DATA : 0;
    return 0;
}

static int mem_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    if (size > M(img)->cap)
        return -ENOSPC;
    img->size = size;
    return 0;
}

static int mem_change_backing(struct qimg_image *img, const char *backing, const char *fmt)
{
    free(M(img)->new_backing);
    free(M(img)->new_fmt);
    M(img)->new_backing = backing ? qimg_strdup(backing) : qimg_strdup("<none>");
    M(img)->new_fmt = fmt ? qimg_strdup(fmt) : NULL;
    return 0;
}

static int mem_make_empty(struct qimg_image *img)
{
    memset(M(img)->alloc, 0, M(img)->cap / CL * sizeof(bool));
    M(img)->emptied++;
    return 0;
}

static int mem_open(struct qimg_image *img, qimg_opts *opts, unsigned flags) { return 0; }
static void mem_close(struct qimg_image *img) {}

static const struct qimg_driver mem_driver = {
    .name = "mem", .flags = QIMG_DRV_SUPPORTS_BACKING,
    .open = mem_open, .close = mem_close, .read = mem_read, .write = mem_write,
    .block_status = mem_block_status, .resize = mem_resize,
    .change_backing = mem_change_backing, .make_empty = mem_make_empty,
};

#define CAP (64u * 1024)

static qimg_image *new_image(const char *name, uint64_t size, qimg_image *backing)
{
    qimg_image *img = qimg_xcalloc(1, sizeof *img);
    struct mem *m = qimg_xcalloc(1, sizeof *m);
    m->cap = CAP;
    m->data = qimg_xcalloc(1, CAP);
    m->alloc = qimg_xcalloc(CAP / CL, sizeof(bool));
    img->drv = &mem_driver;
    img->opaque = m;
    img->filename = qimg_strdup(name);
    img->size = size;
    img->flags = QIMG_OPEN_RDWR;
    img->backing = backing;
    if (backing) {
        img->backing_file = qimg_strdup(backing->filename);
        img->full_backing_filename = qimg_strdup(backing->filename);
    }
    pthread_mutex_init(&img->lock, NULL);
    return img;
}

static void free_image(qimg_image *img)
{
    struct mem *m = M(img);
    free(m->data); free(m->alloc); free(m->new_backing); free(m->new_fmt); free(m);
    free(img->filename); free(img->backing_file); free(img->full_backing_filename);
    pthread_mutex_destroy(&img->lock);
    free(img);
}

static void fill(qimg_image *img, uint64_t off, uint64_t len, uint8_t byte)
{
    uint8_t buf[CL];
    memset(buf, byte, sizeof buf);
    for (uint64_t o = off; o < off + len; o += CL)
        CHECK_EQ_INT(qimg_write(img, o, buf, CL), 0);
}

/* The guest view of img, malloc'ed. */
static uint8_t *view(qimg_image *img)
{
    uint8_t *buf = qimg_xmalloc((size_t)img->size);
    CHECK_EQ_INT(qimg_read(img, 0, buf, (size_t)img->size), 0);
    return buf;
}

TEST(commit_into_smaller_backing)
{
    qimg_image *base = new_image("base", 16 * 1024, NULL);
    qimg_image *top = new_image("top", 32 * 1024, base);
    fill(base, 0, 16 * 1024, 0xaa);
    fill(top, 4096, 4096, 0xbb);
    fill(top, 20480, 4096, 0xcc);
    fill(top, 8192, 4096, 0x00);        /* explicit zeros hide base data */
    uint8_t *before = view(top);
    struct qimg_commit_params p = { .top = top };
    CHECK_EQ_INT(qimg_commit(&p), 0);
    CHECK_EQ_INT(base->size, 32 * 1024);
    uint8_t *after = view(base);
    CHECK(memcmp(before, after, 32 * 1024) == 0);
    CHECK_EQ_INT(M(top)->emptied, 1);
    uint8_t *top_after = view(top);   /* empty top reads the base */
    CHECK(memcmp(top_after, before, 32 * 1024) == 0);
    free(before); free(after); free(top_after);
    free_image(top); free_image(base);
}

TEST(commit_keep_top_and_deeper_base)
{
    qimg_image *base = new_image("base", 32 * 1024, NULL);
    qimg_image *mid = new_image("mid", 32 * 1024, base);
    qimg_image *top = new_image("top", 32 * 1024, mid);
    fill(base, 0, 32 * 1024, 0x11);
    fill(mid, 0, 8192, 0x22);
    fill(top, 4096, 4096, 0x33);
    uint8_t *before = view(top);
    CHECK(qimg_find_backing_image(top, "base") == base);
    CHECK(qimg_find_backing_image(top, "mid") == mid);
    CHECK(qimg_find_backing_image(top, "top") == NULL);
    CHECK(qimg_find_backing_image(top, "nosuch") == NULL);
    struct qimg_commit_params p = { .top = top, .base = base, .keep_top = true };
    CHECK_EQ_INT(qimg_commit(&p), 0);
    CHECK_EQ_INT(M(top)->emptied, 0);
    uint8_t *after = view(base);
    CHECK(memcmp(before, after, 32 * 1024) == 0);
    CHECK(!M(mid)->alloc[4]);          /* nothing written to the middle */
    free(before); free(after);
    free_image(top); free_image(mid); free_image(base);
}

TEST(commit_without_backing)
{
    qimg_image *top = new_image("top", 8192, NULL);
    struct qimg_commit_params p = { .top = top };
    CHECK_EQ_INT(qimg_commit(&p), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Image does not have a backing file");
    free_image(top);
}

TEST(rebase_safe_keeps_content)
{
    qimg_image *old = new_image("old", 32 * 1024, NULL);
    qimg_image *nb = new_image("new", 16 * 1024, NULL);   /* shorter: zeros past it */
    qimg_image *top = new_image("top", 32 * 1024, old);
    fill(old, 0, 32 * 1024, 0x44);
    fill(nb, 0, 8192, 0x44);            /* same as old: nothing to copy there */
    fill(nb, 8192, 8192, 0x55);
    fill(top, 12288, 4096, 0x66);       /* allocated: never touched */
    uint8_t *before = view(top);
    struct qimg_rebase_params p = { .img = top, .backing_file = "new", .backing_fmt = "mem",
                                    .new_backing = nb };
    CHECK_EQ_INT(qimg_rebase(&p), 0);
    CHECK_EQ_STR(M(top)->new_backing, "new");
    CHECK_EQ_STR(M(top)->new_fmt, "mem");
    CHECK(!M(top)->alloc[0] && !M(top)->alloc[1]);   /* equal in both */
    CHECK(M(top)->alloc[2] && M(top)->alloc[7]);
    top->backing = nb;                  /* what the driver's header now says */
    uint8_t *after = view(top);
    CHECK(memcmp(before, after, 32 * 1024) == 0);
    free(before); free(after);
    free_image(top); free_image(nb); free_image(old);
}

TEST(rebase_to_nothing)
{
    qimg_image *old = new_image("old", 16 * 1024, NULL);
    qimg_image *top = new_image("top", 32 * 1024, old);
    fill(old, 4096, 4096, 0x77);
    uint8_t *before = view(top);
    struct qimg_rebase_params p = { .img = top, .backing_file = "" };
    CHECK_EQ_INT(qimg_rebase(&p), 0);
    CHECK_EQ_STR(M(top)->new_backing, "<none>");
    CHECK(M(top)->alloc[1] && !M(top)->alloc[0] && !M(top)->alloc[5]);
    top->backing = NULL;
    uint8_t *after = view(top);
    CHECK(memcmp(before, after, 32 * 1024) == 0);
    free(before); free(after);
    free_image(top); free_image(old);
}

TEST(rebase_unsafe_and_errors)
{
    qimg_image *old = new_image("old", 16 * 1024, NULL);
    qimg_image *top = new_image("top", 16 * 1024, old);
    fill(old, 0, 16 * 1024, 0x12);
    struct qimg_rebase_params p = { .img = top, .backing_file = "x", .backing_fmt = "raw",
                                    .unsafe = true };
    CHECK_EQ_INT(qimg_rebase(&p), 0);
    CHECK(!M(top)->alloc[0]);
    CHECK_EQ_STR(M(top)->new_backing, "x");
    p.backing_fmt = NULL;
    CHECK_EQ_INT(qimg_rebase(&p), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Could not change the backing file to 'x': backing format must be specified");
    free_image(top); free_image(old);
}

TEST(rebase_onto_own_chain)
{
    /* top -> mid -> base, rebased onto base: only what mid holds moves up */
    qimg_image *base = new_image("base", 16 * 1024, NULL);
    qimg_image *mid = new_image("mid", 16 * 1024, base);
    qimg_image *top = new_image("top", 16 * 1024, mid);
    fill(base, 0, 16 * 1024, 0x01);
    fill(mid, 4096, 4096, 0x02);
    uint8_t *before = view(top);
    struct qimg_rebase_params p = { .img = top, .backing_file = "base", .backing_fmt = "mem",
                                    .new_backing = base };
    CHECK_EQ_INT(qimg_rebase(&p), 0);
    CHECK(M(top)->alloc[1] && !M(top)->alloc[0] && !M(top)->alloc[2]);
    top->backing = base;
    uint8_t *after = view(top);
    CHECK(memcmp(before, after, 16 * 1024) == 0);
    free(before); free(after);
    free_image(top); free_image(mid); free_image(base);
}

TEST(allocated_above_short_layer)
{
    qimg_image *base = new_image("base", 32 * 1024, NULL);
    qimg_image *mid = new_image("mid", 8192, base);
    qimg_image *top = new_image("top", 32 * 1024, mid);
    uint64_t pnum;
    CHECK_EQ_INT(qimg_chain_is_allocated_above(top, base, 0, 8192, &pnum), 0);
    CHECK_EQ_INT(pnum, 8192);
    /* past mid's end: zeros that count as mid's */
    CHECK_EQ_INT(qimg_chain_is_allocated_above(top, base, 16384, 4096, &pnum), 1);
    CHECK_EQ_INT(pnum, 4096);
    free_image(top); free_image(mid); free_image(base);
}

int main(void)
{
    RUN(commit_into_smaller_backing);
    RUN(commit_keep_top_and_deeper_base);
    RUN(commit_without_backing);
    RUN(rebase_safe_keeps_content);
    RUN(rebase_to_nothing);
    RUN(rebase_unsafe_and_errors);
    RUN(rebase_onto_own_chain);
    RUN(allocated_above_short_layer);
    return UNIT_DONE();
}
