/* NBD names as qemu reads them (src/io/nbd-name.c): URIs, the legacy
 * "nbd:" strings and the option keys, against the options qemu 7.2 makes
 * of them; and hostile names (long, binary, broken escapes, huge ports,
 * random mixes of the characters that matter): an error or a consistent
 * result, never a crash (the san-tests build runs this under ASan). */
#include <errno.h>

#include "../../src/io/nbd.h"
#include "unit.h"

static qimg_opts *parsed(const char *name, int *r)
{
    qimg_opts *o = NULL;
    qimg_error_clear();
    *r = qimg_nbd_parse_name(name, &o);
    return o;
}

/* name must parse into exactly these keys ("key=value" ..., NULL) */
static void expect_opts(const char *name, const char *const *kv)
{
    int r;
    qimg_opts *o = parsed(name, &r);
    CHECK_EQ_INT(r, 0);
    size_t n = 0;
    for (; kv[n]; n++) {
        const char *eq = strchr(kv[n], '=');
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[n]), kv[n]);
        CHECK_EQ_STR(qimg_opts_get(o, key), eq + 1);
    }
    CHECK_EQ_INT(qimg_opts_count(o), n);
    qimg_opts_free(o);
}

static void expect_error(const char *name, const char *msg)
{
    int r;
    qimg_opts *o = parsed(name, &r);
    CHECK_EQ_INT(r, -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), msg);
    qimg_opts_free(o);
}

#define KV(...) ((const char *const[]){ __VA_ARGS__, NULL })

TEST(uris_give_qemus_options)
{
    expect_opts("nbd://h", KV("server.type=inet", "server.host=h", "server.port=10809"));
    expect_opts("nbd://h:1/", KV("server.type=inet", "server.host=h", "server.port=1"));
    expect_opts("nbd+tcp://h:0/e", KV("server.type=inet", "server.host=h", "server.port=10809", "export=e"));
    expect_opts("nbd://u:p@h:00010/a%2Fb#frag",
                KV("server.type=inet", "server.host=h", "server.port=10", "export=a/b"));
    expect_opts("nbd://h//x", KV("server.type=inet", "server.host=h", "server.port=10809", "export=/x"));
    expect_opts("nbd://[::1]:5/e", KV("server.type=inet", "server.host=::1", "server.port=5", "export=e"));
    expect_opts("nbd://a%20b/x", KV("server.type=inet", "server.host=a b", "server.port=10809", "export=x"));
    expect_opts("nbd://h/a%00b", KV("server.type=inet", "server.host=h", "server.port=10809", "export=a"));
    expect_opts("nbd://h/x?", KV("server.type=inet", "server.host=h", "server.port=10809", "export=x"));
    expect_opts("nbd+unix:///e?socket=/s", KV("server.type=unix", "server.path=/s", "export=e"));
    expect_opts("nbd+unix://?socket=%2Fa%2Fs", KV("server.type=unix", "server.path=/a/s"));
    expect_opts("nbd+unix:///e?socket=", KV("server.type=unix", "server.path=", "export=e"));
    expect_opts("nbds://h:7/e", KV("server.type=inet", "server.host=h", "server.port=7", "export=e", "x-tls=on"));
    expect_opts("nbds://h/?tls-creds=t0",
                KV("server.type=inet", "server.host=h", "server.port=10809", "tls-creds=t0", "x-tls=on"));
    expect_opts("nbds+unix:///e?socket=/s&tls-creds=t",
                KV("server.type=unix", "server.path=/s", "export=e", "tls-creds=t", "x-tls=on"));
}

TEST(bad_uris_are_no_valid_url)
{
    static const char *const bad[] = {
        "nbd://h?x=y", "nbd+unix:///e", "nbd+unix://h/e?socket=/s", "nbd+unix:///e?socket=/s&a=b",
        "nbd+unix:///x?socket=/a;b=1", "nbd+unix:///x?socket", "nbd+unix:///x?sock=1",
        "nbd+unix://:1/x?socket=/s", "nbd://:1", "nbd://", "nbd:///x", "nbd://h:99999",
        "nbd://h:65536", "nbd://h:abc", "nbd://h:/x", "nbd://[::1/x", "nbd://h/a b",
        "nbd://h/%zz", "nbd://h/%4", "nbd://h/\xc3\xa9", "nbd://h/x#a b", "foo://h/x",
        "nbd://h/x?tls-creds=t", "nbd+unix:///x?socket=/s&socket=/t", "://h", "1nbd://h",
        "nbd://h\x01/x", "nbd://h:1:2/x",
    };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(bad); i++)
        expect_error(bad[i], "No valid URL specified");
}

TEST(legacy_strings)
{
    expect_opts("nbd:h:1", KV("server.type=inet", "server.host=h", "server.port=1"));
    expect_opts("nbd:h:1:exportname=e:x", KV("server.type=inet", "server.host=h", "server.port=1", "export=e:x"));
    expect_opts("nbd:[::1]:2", KV("server.type=inet", "server.host=::1", "server.port=2"));
    expect_opts("nbd::3", KV("server.type=inet", "server.host=", "server.port=3"));
    expect_opts("nbd:h:4,ipv4=on,to=9", KV("server.type=inet", "server.host=h", "server.port=4"));
    expect_opts("nbd:h:1:2", KV("server.type=inet", "server.host=h", "server.port=1:2"));
    expect_opts("nbd:unix:/s:exportname=e", KV("server.type=unix", "server.path=/s", "export=e"));
    expect_opts("nbd:unix:", KV("server.type=unix", "server.path="));
    /* qemu takes nothing from these; the address is then missing */
    expect_opts("nbd:", KV(NULL));
    expect_opts("nbd:h:1:exportname=", KV(NULL));
    expect_error("nbd:h", "error parsing address 'h'");
    expect_error("nbd:h:", "error parsing address 'h:'");
    expect_error("nbd::", "error parsing port in address ':'");
    expect_error("nbd:[::1", "error parsing IPv6 address '[::1'");
    expect_error("nbd:[::1]", "error parsing IPv6 address '[::1]'");
    expect_error("foo:h:1", "File name string for NBD must start with 'nbd:'");
    /* qemu's 64-byte host buffer */
    char longhost[200];
    snprintf(longhost, sizeof longhost, "nbd:%065d:1", 0);
    char msg[256];
    snprintf(msg, sizeof msg, "error parsing address '%s'", longhost + 4);
    expect_error(longhost, msg);
}

static qimg_opts *opts_of(const char *const *kv)
{
    qimg_opts *o = NULL;
    for (size_t i = 0; kv[i]; i++) {
        const char *eq = strchr(kv[i], '=');
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[i]), kv[i]);
        qimg_opts_set(&o, key, eq + 1);
    }
    return o;
}

static void expect_addr_error(const char *const *kv, const char *msg)
{
    qimg_opts *o = opts_of(kv);
    struct qimg_nbd_addr a;
    qimg_error_clear();
    CHECK(qimg_nbd_addr_from_opts(o, &a) < 0);
    CHECK_EQ_STR(qimg_last_error(), msg);
    qimg_opts_free(o);
}

TEST(option_keys)
{
    qimg_opts *o = opts_of(KV("host=h", "export=e"));
    struct qimg_nbd_addr a;
    CHECK_EQ_INT(qimg_nbd_addr_from_opts(o, &a), 0);
    CHECK_EQ_STR(a.host, "h");
    CHECK_EQ_STR(a.port, "10809");
    CHECK_EQ_STR(a.export, "e");
    CHECK(qimg_opts_first_unused(o) == NULL);
    char *name = qimg_nbd_addr_name(&a, false);
    CHECK_EQ_STR(name, "nbd://h:10809/e");
    free(name);
    name = qimg_nbd_addr_name(&a, true);
    CHECK_EQ_STR(name, "nbds://h:10809/e");
    free(name);
    qimg_nbd_addr_free(&a);
    qimg_opts_free(o);

    o = opts_of(KV("server.type=unix", "server.path=/s"));
    CHECK_EQ_INT(qimg_nbd_addr_from_opts(o, &a), 0);
    name = qimg_nbd_addr_name(&a, false);
    CHECK_EQ_STR(name, "nbd+unix://?socket=/s");
    free(name);
    qimg_nbd_addr_free(&a);
    qimg_opts_free(o);

    expect_addr_error(KV("export=e"), "NBD server address missing");
    expect_addr_error(KV("port=1"), "NBD server address missing");
    expect_addr_error(KV("server.host=h"), "Parameter 'type' is missing");
    expect_addr_error(KV("server.type=x"), "Parameter 'type' does not accept value 'x'");
    expect_addr_error(KV("server.type=inet", "server.host=h"), "Parameter 'port' is missing");
    expect_addr_error(KV("server.type=inet", "server.port=1"), "Parameter 'host' is missing");
    expect_addr_error(KV("server.type=unix"), "Parameter 'path' is missing");
    expect_addr_error(KV("server.type=unix", "server.path=/s", "server.host=h"), "Parameter 'host' is unexpected");
    /* qemu visits the members in order: a missing one is reported before
     * an unexpected one, an object where a value goes as "'x.*'" */
    expect_addr_error(KV("server.type=inet", "server.x=1"), "Parameter 'host' is missing");
    expect_addr_error(KV("server.type=unix", "server.x=1"), "Parameter 'path' is missing");
    expect_addr_error(KV("server.type=inet", "server.host.a=1", "server.port=1"),
                      "Parameters 'host.*' are unexpected");
    expect_addr_error(KV("server.type=inet", "server.host=h", "server.port=1", "server.x.y=1"),
                      "Parameter 'x' is unexpected");
    expect_addr_error(KV("server.type.a=1"), "Parameters 'type.*' are unexpected");
    expect_addr_error(KV("server.type=fd"), "Parameter 'str' is missing");
    expect_addr_error(KV("server.type=fd", "server.str=5", "server.cid=1"), "Parameter 'cid' is unexpected");
    expect_addr_error(KV("server.type=vsock", "server.port=1"), "Parameter 'cid' is missing");
    expect_addr_error(KV("server.type=vsock", "server.cid=1"), "Parameter 'port' is missing");
    expect_addr_error(KV("server.type=vsock", "server.cid=1", "server.port=1", "server.str=1"),
                      "Parameter 'str' is unexpected");
    expect_addr_error(KV("server.type=fd", "server.str=5", "path=/s"),
                      "Cannot use 'server' and path/host/port at the same time");

    /* fd and vsock: taken as given (parsed when connecting), no name */
    o = opts_of(KV("server.type=fd", "server.str=x", "export=e"));
    CHECK_EQ_INT(qimg_nbd_addr_from_opts(o, &a), 0);
    CHECK_EQ_INT(a.transport, QIMG_NBD_FD);
    CHECK_EQ_STR(a.fd_str, "x");
    CHECK(qimg_nbd_addr_name(&a, false) == NULL);
    CHECK(qimg_opts_first_unused(o) == NULL);
    qimg_nbd_addr_free(&a);
    qimg_opts_free(o);
    o = opts_of(KV("server.type=vsock", "server.cid=2", "server.port=10809"));
    CHECK_EQ_INT(qimg_nbd_addr_from_opts(o, &a), 0);
    CHECK_EQ_INT(a.transport, QIMG_NBD_VSOCK);
    CHECK_EQ_STR(a.cid, "2");
    CHECK_EQ_STR(a.port, "10809");
    CHECK(qimg_nbd_addr_name(&a, true) == NULL);
    CHECK(qimg_opts_first_unused(o) == NULL);
    qimg_nbd_addr_free(&a);
    qimg_opts_free(o);

    expect_addr_error(KV("server.type=unix", "server.path=/s", "host=h"),
                      "Cannot use 'server' and path/host/port at the same time");
    expect_addr_error(KV("path=/s", "host=h"), "path and host may not be used at the same time");
    expect_addr_error(KV("path=/s", "port=1"), "port may not be used without host");

    /* an export name longer than the protocol carries, and a name too
     * long for qemu's 4096 bytes */
    char *big = qimg_xmalloc(5000);
    memset(big, 'e', 4999);
    big[4999] = '\0';
    o = opts_of(KV("host=h"));
    qimg_opts_set(&o, "export", big);
    CHECK(qimg_nbd_addr_from_opts(o, &a) < 0);
    CHECK_EQ_STR(qimg_last_error(), "export name too long to send to server");
    qimg_opts_free(o);
    big[4090] = '\0';
    o = opts_of(KV("host=h"));
    qimg_opts_set(&o, "export", big);
    CHECK_EQ_INT(qimg_nbd_addr_from_opts(o, &a), 0);
    CHECK(qimg_nbd_addr_name(&a, false) == NULL);
    qimg_nbd_addr_free(&a);
    qimg_opts_free(o);
    free(big);
}

/* Whatever the bytes: 0 with a coherent tree, or -EINVAL with a message. */
static void survives(const char *name)
{
    int r;
    qimg_opts *o = parsed(name, &r);
    if (r == 0) {
        const char *type = qimg_opts_get(o, "server.type");
        CHECK(!type || strcmp(type, "inet") == 0 || strcmp(type, "unix") == 0);
        if (type && strcmp(type, "inet") == 0)
            CHECK(qimg_opts_get(o, "server.host") && qimg_opts_get(o, "server.port"));
        if (type && strcmp(type, "unix") == 0)
            CHECK(qimg_opts_get(o, "server.path") != NULL);
    } else {
        CHECK_EQ_INT(r, -EINVAL);
        CHECK(qimg_last_error()[0] != '\0');
    }
    qimg_opts_free(o);
}

TEST(hostile_names)
{
    size_t big = 1 << 20;
    char *s = qimg_xmalloc(big + 64);
    /* long runs of each character that steers the parsers */
    const char *const heads[] = { "nbd://", "nbd+unix:///", "nbd:", "nbd:unix:", "nbd://[", "nbd://h:",
                                  "nbd://h/?", "nbd:[" };
    const char fill[] = "a%:/[]@?&;=#,x\xff";
    for (size_t h = 0; h < QIMG_ARRAY_SIZE(heads); h++)
        for (size_t f = 0; f < sizeof fill - 1; f++) {
            size_t n = strlen(heads[h]);
            memcpy(s, heads[h], n);
            memset(s + n, fill[f], big - n);
            s[big] = '\0';
            survives(s);
        }
    /* a port of many digits, escapes cut short at the end */
    memcpy(s, "nbd://h:", 8);
    memset(s + 8, '9', big - 8);
    s[big] = '\0';
    survives(s);
    survives("nbd://h/%");
    survives("nbd://h/%4");
    survives("nbd+unix:///?socket=%");
    survives("nbd:h:1:exportname=:exportname=");
    /* random mixes (a fixed seed: the same names every run) */
    const char alphabet[] = "nbd+unixs:/[]@?&;=#%0123456789aAfF.,-_~ \x01\x7f\x80\xff";
    unsigned seed = 12345;
    for (int i = 0; i < 200000; i++) {
        const char *prefix = heads[i % QIMG_ARRAY_SIZE(heads)];
        size_t n = strlen(prefix);
        memcpy(s, prefix, n);
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % 40;
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            s[n + k] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        s[n + len] = '\0';
        survives(s);
    }
    free(s);
}

int main(void)
{
    RUN(uris_give_qemus_options);
    RUN(bad_uris_are_no_valid_url);
    RUN(legacy_strings);
    RUN(option_keys);
    RUN(hostile_names);
    return UNIT_DONE();
}
