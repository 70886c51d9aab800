/* rbd: name strings as qemu reads them (the parser needs no cluster and no
 * librbd), and hostile ones: clear errors, bounded time. */
#include <errno.h>
#include <time.h>

#include "internal.h"
#include "unit.h"

static qimg_opts *parse(const char *name, int *r)
{
    qimg_opts *o = NULL;
    *r = qimg_io_name_opts(&o, name);
    return o;
}

TEST(plain_name)
{
    int r;
    qimg_opts *o = parse("rbd:pool/img", &r);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_STR(qimg_opts_get(o, "driver"), "rbd");
    CHECK_EQ_STR(qimg_opts_get(o, "pool"), "pool");
    CHECK_EQ_STR(qimg_opts_get(o, "namespace"), "");
    CHECK_EQ_STR(qimg_opts_get(o, "image"), "img");
    CHECK(qimg_opts_get(o, "snapshot") == NULL);
    CHECK(qimg_opts_get(o, "=keyvalue-pairs") == NULL);
    qimg_opts_free(o);
}

TEST(every_part)
{
    int r;
    qimg_opts *o = parse("rbd:p/ns/img@s1:conf=/etc/c.conf:id=admin:mon_host=1.2.3.4\\:6789"
                         ":keyring=/k", &r);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_STR(qimg_opts_get(o, "pool"), "p");
    CHECK_EQ_STR(qimg_opts_get(o, "namespace"), "ns");
    CHECK_EQ_STR(qimg_opts_get(o, "image"), "img");
    CHECK_EQ_STR(qimg_opts_get(o, "snapshot"), "s1");
    CHECK_EQ_STR(qimg_opts_get(o, "conf"), "/etc/c.conf");
    CHECK_EQ_STR(qimg_opts_get(o, "user"), "admin");
    CHECK_EQ_STR(qimg_opts_get(o, "=keyvalue-pairs"),
                 "[\"mon_host\", \"1.2.3.4:6789\", \"keyring\", \"/k\"]");
    qimg_opts_free(o);
}

TEST(escapes)
{
    int r;
    qimg_opts *o = parse("rbd:p\\/q/im\\@g\\:x@sn\\:ap", &r);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_STR(qimg_opts_get(o, "pool"), "p/q");
    CHECK_EQ_STR(qimg_opts_get(o, "image"), "im@g:x");
    CHECK_EQ_STR(qimg_opts_get(o, "snapshot"), "sn:ap");
    qimg_opts_free(o);
    /* a backslash at the very end stays */
    o = parse("rbd:p/img\\", &r);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_STR(qimg_opts_get(o, "image"), "img\\");
    qimg_opts_free(o);
    /* an empty snapshot name and an empty image are names like others */
    o = parse("rbd:p/img@", &r);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_STR(qimg_opts_get(o, "snapshot"), "");
    qimg_opts_free(o);
    o = parse("rbd:p/", &r);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_STR(qimg_opts_get(o, "image"), "");
    qimg_opts_free(o);
}

TEST(errors)
{
    static const struct { const char *name, *msg; } cases[] = {
        { "rbd:", "Pool name is required" },
        { "rbd:pool", "Pool name is required" },
        { "rbd:p/img:conf", "conf option conf has no value" },
        { "rbd:p/img:", "conf option  has no value" },
        { "rbd:p/img:a=b:c", "conf option c has no value" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r;
        qimg_opts *o = parse(cases[i].name, &r);
        CHECK_EQ_INT(r, -EINVAL);
        CHECK_EQ_STR(qimg_last_error(), cases[i].msg);
        qimg_opts_free(o);
    }
}

/* A name with an '@' in an option's value: qimg reads the option (qemu
 * 7.2 takes everything up to that '@' as the image name). */
TEST(at_in_option)
{
    int r;
    qimg_opts *o = parse("rbd:p/img:conf=/a@b", &r);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_STR(qimg_opts_get(o, "image"), "img");
    CHECK(qimg_opts_get(o, "snapshot") == NULL);
    CHECK_EQ_STR(qimg_opts_get(o, "conf"), "/a@b");
    qimg_opts_free(o);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Large hostile names: 1 MiB of backslashes, 100000 pairs, 1 MiB of '@'
 * and '/': parsed (or refused) in linear time. */
TEST(hostile_sizes)
{
    const size_t n = 1 << 20;
    char *name = malloc(n + 64);
    static const char fills[] = { '\\', '@', '/', ':', '=' };
    double t0 = now();
    for (size_t f = 0; f < sizeof fills; f++) {
        strcpy(name, "rbd:p/");
        memset(name + 6, fills[f], n);
        name[6 + n] = '\0';
        int r;
        qimg_opts *o = parse(name, &r);
        CHECK(r == 0 || r == -EINVAL);
        qimg_opts_free(o);
    }
    /* many key=value pairs */
    size_t len = strlen(strcpy(name, "rbd:p/img"));
    while (len + 8 < n) {
        memcpy(name + len, ":k=v", 4);
        len += 4;
    }
    name[len] = '\0';
    int r;
    qimg_opts *o = parse(name, &r);
    CHECK_EQ_INT(r, 0);
    const char *pairs = qimg_opts_get(o, "=keyvalue-pairs");
    CHECK(pairs && strncmp(pairs, "[\"k\", \"v\", \"k\"", 14) == 0);
    qimg_opts_free(o);
    CHECK(now() - t0 < 5.0);
    free(name);
}

/* A name that is not "rbd:..." given to the backend by -f rbd. */
TEST(not_rbd_prefix)
{
    qimg_opts *o = NULL;
    int r = qimg_io_name_opts_for(&o, qimg_io_backend_find("rbd"), "pool/img");
    CHECK_EQ_INT(r, -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "File name must start with 'rbd:'");
    qimg_opts_free(o);
}

int main(void)
{
    RUN(plain_name);
    RUN(every_part);
    RUN(escapes);
    RUN(errors);
    RUN(at_in_option);
    RUN(hostile_sizes);
    RUN(not_rbd_prefix);
    return UNIT_DONE();
}
