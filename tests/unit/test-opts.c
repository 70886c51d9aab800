/* Option lists, json: filenames and --object, with qemu-img 7.2's
 * observed behaviour and messages (qemu-img create -o ..., qemu-img info
 * 'json:...', qemu-img info --object ...). */
#include <errno.h>

#include "internal.h"
#include "unit.h"

static qimg_opts *parsed(const char *text)
{
    qimg_opts *o = NULL;
    CHECK_EQ_INT(qimg_opts_parse(&o, text), 0);
    return o;
}

TEST(o_text_parsing)
{
    qimg_opts *o = parsed("cluster_size=4k,lazy_refcounts,compat=1.1,,x,nofoo,a=b=c,=x");
    CHECK_EQ_STR(qimg_opts_get(o, "cluster_size"), "4k");
    CHECK_EQ_STR(qimg_opts_get(o, "lazy_refcounts"), "on");   /* bare name: on */
    CHECK_EQ_STR(qimg_opts_get(o, "compat"), "1.1,x");        /* ",," is a comma */
    CHECK_EQ_STR(qimg_opts_get(o, "foo"), "off");             /* "nolazy_refcounts" -> off */
    CHECK_EQ_STR(qimg_opts_get(o, "a"), "b=c");
    CHECK_EQ_STR(qimg_opts_get(o, ""), "x");                  /* "Invalid parameter ''" */
    qimg_opts_free(o);

    o = parsed("cluster_size=64k,cluster_size=4k");            /* later wins: 4096 */
    uint64_t v = 0;
    CHECK_EQ_INT(qimg_opts_get_size(o, "cluster_size", &v), 1);
    CHECK_EQ_INT(v, 4096);
    CHECK(qimg_opts_first_unused(o) == NULL);
    qimg_opts_free(o);

    o = parsed("a,,b=c");                                       /* "Invalid parameter 'a'" */
    CHECK_EQ_STR(qimg_opts_first_unused(o), "a");
    qimg_opts_free(o);

    o = parsed("size=1M,,,,");
    CHECK_EQ_STR(qimg_opts_get(o, "size"), "1M,,");
    qimg_opts_free(o);
}

TEST(o_text_check)
{
    CHECK_EQ_INT(qimg_opts_check_text(",a=b"), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Invalid option list: ,a=b");
    CHECK_EQ_INT(qimg_opts_check_text("size=1M,"), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Invalid option list: size=1M,");
    CHECK_EQ_INT(qimg_opts_check_text("size=1M,,,"), -EINVAL);
    CHECK_EQ_INT(qimg_opts_check_text(","), -EINVAL);
    CHECK_EQ_INT(qimg_opts_check_text(",,"), -EINVAL);
    CHECK_EQ_INT(qimg_opts_check_text(""), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Invalid option list: ");
    CHECK_EQ_INT(qimg_opts_check_text("size=1M,,"), 0);
    CHECK_EQ_INT(qimg_opts_check_text("cluster_size=64k,,,,"), 0);
    CHECK(qimg_opts_is_help("help"));
    CHECK(qimg_opts_is_help("?"));
    CHECK(!qimg_opts_is_help("help,x"));
}

TEST(typed_getters)
{
    qimg_opts *o = parsed("size=1x,big=16E,ok=0x10k,b1=yes,b2=n,b3=ON,b4=,n1=0x10,n2=010,"
                          "n3=-1,n4=x,n5=99999999999999999999,s=str");
    uint64_t v = 0;
    bool b = false;
    const char *s = NULL;
    CHECK_EQ_INT(qimg_opts_get_size(o, "size", &v), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Parameter 'size' expects a non-negative number below 2^64\n"
                 "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                 "and exabytes, respectively.");
    CHECK_EQ_INT(qimg_opts_get_size(o, "big", &v), -ERANGE);
    CHECK_EQ_STR(qimg_last_error(), "Value '16E' is out of range for parameter 'big'");
    CHECK_EQ_INT(qimg_opts_get_size(o, "ok", &v), 1);
    CHECK_EQ_INT(v, 16384);
    CHECK_EQ_INT(qimg_opts_get_size(o, "absent", &v), 0);
    CHECK_EQ_INT(qimg_opts_get_bool(o, "b1", &b), 1);
    CHECK(b);
    CHECK_EQ_INT(qimg_opts_get_bool(o, "b2", &b), 1);
    CHECK(!b);
    CHECK_EQ_INT(qimg_opts_get_bool(o, "b3", &b), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Parameter 'b3' expects 'on' or 'off'");
    CHECK_EQ_INT(qimg_opts_get_bool(o, "b4", &b), -EINVAL);
    CHECK_EQ_INT(qimg_opts_get_number(o, "n1", &v), 1);
    CHECK_EQ_INT(v, 16);            /* refcount_bits=0x10 gave refcount_bits=16 */
    CHECK_EQ_INT(qimg_opts_get_number(o, "n2", &v), 1);
    CHECK_EQ_INT(v, 8);
    CHECK_EQ_INT(qimg_opts_get_number(o, "n3", &v), 1);
    CHECK(v == UINT64_MAX);         /* refcount_bits=-1 passes parsing in qemu */
    CHECK_EQ_INT(qimg_opts_get_number(o, "n4", &v), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Parameter 'n4' expects a number");
    CHECK_EQ_INT(qimg_opts_get_number(o, "n5", &v), -ERANGE);
    CHECK_EQ_STR(qimg_last_error(), "Value '99999999999999999999' is too large for parameter 'n5'");
    CHECK(qimg_opts_first_unused(o) != NULL);
    CHECK_EQ_STR(qimg_opts_first_unused(o), "s");
    CHECK_EQ_INT(qimg_opts_get_string(o, "s", &s), 1);
    CHECK_EQ_STR(s, "str");
    CHECK(qimg_opts_first_unused(o) == NULL);
    qimg_opts_free(o);
}

TEST(keyval)
{
    qimg_opts *o = NULL;
    CHECK_EQ_INT(qimg_keyval_parse(&o, "secret,id=s0,data=a,,b,id=s1,flag", "qom-type"), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "qom-type"), "secret");
    CHECK_EQ_STR(qimg_opts_get(o, "data"), "a,b");
    CHECK_EQ_STR(qimg_opts_get(o, "id"), "s1");
    CHECK_EQ_STR(qimg_opts_get(o, "flag"), "on");
    qimg_opts_free(o);
    o = NULL;
    CHECK_EQ_INT(qimg_keyval_parse_strict(&o, "secret,id=s0,data", "qom-type", true), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Expected '=' after parameter 'data'");
    qimg_opts_free(o);
}

static void json_fails(const char *text, const char *msg)
{
    qimg_opts *o = NULL;
    CHECK(qimg_json_filename_parse(&o, text) < 0);
    CHECK_EQ_STR(qimg_last_error(), msg);
    qimg_opts_free(o);
}

TEST(json_filenames)
{
    qimg_opts *o = NULL;
    CHECK_EQ_INT(qimg_json_filename_parse(&o,
        "json: {'driver':\"raw\",\"file.filename\":\"y\",\"file\":{\"filename\":\"x\\u002eraw\"},"
        "\"size\":1.5e2,\"offset\":null,\"ro\":true,\"n\":[1,{\"a\":-1}],\"e\":[]}"), 0);
    CHECK_EQ_STR(qimg_opts_get(o, "driver"), "raw");
    CHECK_EQ_STR(qimg_opts_get(o, "file.filename"), "x.raw");  /* nested wins: opened x.raw */
    CHECK_EQ_STR(qimg_opts_get(o, "size"), "150");
    CHECK(qimg_opts_get(o, "offset") == NULL);
    CHECK_EQ_STR(qimg_opts_get(o, "ro"), "on");
    CHECK_EQ_STR(qimg_opts_get(o, "n.0"), "1");
    CHECK_EQ_STR(qimg_opts_get(o, "n.1.a"), "-1");
    CHECK_EQ_STR(qimg_opts_get(o, "e"), "[]");
    qimg_opts_free(o);

    const char *pre = "Could not parse the JSON options: ";
    char msg[256];
#define FAILS(text, m) (snprintf(msg, sizeof msg, "%s%s", pre, m), json_fails(text, msg))
    FAILS("json:{", "JSON parse error, premature EOI");
    FAILS("json:{\"a\":[1,2", "JSON parse error, premature EOI");
    FAILS("json:{\"a\":1,", "JSON parse error, premature EOI");
    FAILS("json:{\"a\":1} x", "Expecting at most one JSON value");
    FAILS("json:{\"a\":1}}", "Expecting at most one JSON value");
    FAILS("json:", "Expecting a JSON value");
    FAILS("json: ", "Expecting a JSON value");
    FAILS("json:{\"a\":x}", "JSON parse error, invalid keyword 'x'");
    FAILS("json:{\"a\":truex}", "JSON parse error, invalid keyword 'truex'");
    FAILS("json:{\"a\" 1}", "JSON parse error, missing : in object pair");
    FAILS("json:{\"a\":1,}", "JSON parse error, expecting value");
    FAILS("json:{\"a\":}", "JSON parse error, expecting value");
    FAILS("json:{,}", "JSON parse error, expecting value");
    FAILS("json:}", "JSON parse error, expecting value");
    FAILS("json:{1:2}", "JSON parse error, key is not a string in object");
    FAILS("json:{\"a\":\"\\q\"}", "JSON parse error, invalid escape sequence in string");
    FAILS("json:{\"a\":\"b", "JSON parse error, stray '\"b'");
    FAILS("json:{\"a\":01}", "JSON parse error, stray '01'");
    FAILS("json:{\"a\":1.}", "JSON parse error, stray '1.}'");
    FAILS("json:{\"a\":-}", "JSON parse error, stray '-}'");
    FAILS("json:{\"a\":1e}", "JSON parse error, stray '1e}'");
    FAILS("json:@", "JSON parse error, stray '@'");
    FAILS("json:{\"a\":\"x\ty\"}", "JSON parse error, stray '\"x\t'");
    FAILS("json:{\"a\":\"\\u00\"}", "JSON parse error, \\u00\" is not a valid Unicode character");
    FAILS("json:{\"a\":\"\\ud800\"}", "JSON parse error, \\ud800 is not a valid Unicode character");
    FAILS("json:{\"a\":\"\\udc00\"}", "JSON parse error, \\udc00 is not a valid Unicode character");
    FAILS("json:{\"a\":\"\\ud83dx\"}", "JSON parse error, \\ud83d is not a valid Unicode character");
    FAILS("json:{\"a\":1 \"b\":2}", "JSON parse error, expected separator in dict");
    FAILS("json:{\"a\":[1 2]}", "JSON parse error, expected separator in list");
    FAILS("json:{\"a\":{\"b\":1,\"b\":2}}", "JSON parse error, duplicate key");
    json_fails("json:[1]", "Invalid JSON object given");
    json_fails("json:\"x\"", "Invalid JSON object given");

    /* qemu accepts 1024 levels of nesting and refuses 1025 */
    char deep[2100 + 16];
    for (int levels = 1024; levels <= 1025; levels++) {
        char *p = deep + sprintf(deep, "json:");
        for (int i = 0; i < levels; i++)
            *p++ = i ? '[' : '{', i ? 0 : (void)(p += sprintf(p, "\"a\":"));
        for (int i = levels - 1; i >= 0; i--)
            *p++ = i ? ']' : '}';
        *p = 0;
        o = NULL;
        int ret = qimg_json_filename_parse(&o, deep);
        if (levels == 1024)
            CHECK_EQ_INT(ret, 0);
        else
            CHECK_EQ_STR(qimg_last_error(), "Could not parse the JSON options: JSON nesting depth limit exceeded");
        qimg_opts_free(o);
    }
}

static void object_fails(const char *text, const char *msg)
{
    CHECK(qimg_object_add(text) < 0);
    CHECK_EQ_STR(qimg_last_error(), msg);
}

TEST(objects_and_secrets)
{
    char *data = NULL;
    size_t len = 0;
    object_fails("foo,id=x", "Parameter 'qom-type' does not accept value 'foo'");
    object_fails("secret", "Parameter 'id' is missing");
    object_fails("secret,id=s0", "Either 'file' or 'data' must be provided");
    object_fails("secret,id=s0,data=abc,format=hex", "Parameter 'format' does not accept value 'hex'");
    object_fails("secret,id=s0,file=/nonexist",
                 "Unable to read /nonexist: Failed to open file \xe2\x80\x9c/nonexist\xe2\x80\x9d: "
                 "No such file or directory");
    object_fails("secret,id=s0,data=a,file=/etc/hostname", "'file' and 'data' are mutually exclusive");
    object_fails("secret,id=s0,data=a,bogus=1", "Parameter 'bogus' is unexpected");
    object_fails("id=s0,data=a", "Parameter 'qom-type' is missing");
    const char *ident = "Parameter 'id' expects an identifier\n"
                        "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.";
    object_fails("secret,id=,data=a", ident);
    object_fails("secret,id=s 0,data=a", ident);
    object_fails("secret,id=0s,data=a", ident);
    object_fails("secret,id=s0,data", "Expected '=' after parameter 'data'");
    object_fails("secret,id=b0,data=Y@Jj,format=base64", "Base64 data contains invalid characters");

    CHECK_EQ_INT(qimg_object_add("secret,id=s0,data=a,,b"), 0);
    object_fails("secret,id=s0,data=b", "attempt to add duplicate property 's0' to object (type 'container')");
    CHECK_EQ_INT(qimg_secret_lookup("s0", &data, &len), 0);
    CHECK_EQ_STR(data, "a,b");
    CHECK_EQ_INT(len, 3);
    free(data);

    /* "YWI=" and "YWI===" both unlocked an image whose password is "ab" */
    CHECK_EQ_INT(qimg_object_add("secret,id=b1,data=YWI=,format=base64"), 0);
    CHECK_EQ_INT(qimg_object_add("qom-type=secret,id=b2,data=YWI===,format=base64"), 0);
    CHECK_EQ_INT(qimg_object_add("{\"qom-type\":\"secret\",\"id\":\"j1\",\"data\":\"abc\"}"), 0);
    CHECK_EQ_INT(qimg_secret_lookup("b1", &data, &len), 0);
    CHECK_EQ_STR(data, "ab");
    free(data);
    CHECK_EQ_INT(qimg_secret_lookup("b2", &data, &len), 0);
    CHECK_EQ_STR(data, "ab");
    free(data);
    CHECK_EQ_INT(qimg_secret_lookup("j1", &data, &len), 0);
    CHECK_EQ_STR(data, "abc");
    free(data);
    /* later id wins: "secret,id=s0,data=abc,id=s1" defines s1 only */
    CHECK_EQ_INT(qimg_object_add("secret,id=t0,data=abc,id=t1"), 0);
    CHECK_EQ_INT(qimg_secret_lookup("t0", &data, &len), -ENOENT);
    CHECK_EQ_STR(qimg_last_error(), "No secret with id 't0'");
    CHECK_EQ_INT(qimg_secret_lookup("t1", &data, &len), 0);
    free(data);
    CHECK_EQ_INT(qimg_object_add("throttle-group,id=tg0"), 0);
    CHECK_EQ_INT(qimg_secret_lookup("tg0", &data, &len), -EINVAL);
    CHECK_EQ_STR(qimg_last_error(), "Object with id 'tg0' is not a secret");
}

#ifdef HAVE_OPENSSL
/* keyid/iv: the secret's text is AES-256-CBC under another secret (the
 * ciphertext below is "abc" under 32 'k's and IV 00112233..eeff, made
 * with `openssl enc -aes-256-cbc`). */
TEST(encrypted_secrets)
{
    char *data = NULL;
    size_t len = 0;
    const char *iv = "ABEiM0RVZneImaq7zN3u/w==";
    CHECK_EQ_INT(qimg_object_add("secret,id=ek,data=kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"), 0);
    CHECK_EQ_INT(qimg_object_add("secret,id=short,data=abc"), 0);
    char text[256];
    snprintf(text, sizeof text, "secret,id=e1,data=FMLAO0W/LOg6cPYZC9y1qg==,format=base64,keyid=ek,iv=%s", iv);
    CHECK_EQ_INT(qimg_object_add(text), 0);
    CHECK_EQ_INT(qimg_secret_lookup("e1", &data, &len), 0);
    CHECK_EQ_INT(len, 3);
    CHECK_EQ_STR(data, "abc");
    free(data);
    snprintf(text, sizeof text, "secret,id=e2,data=FMLAO0W/LOg6cPYZC9y1qg==,keyid=ek,iv=%s", iv);
    object_fails(text, "Length 24 must be a multiple of block size 16");
    object_fails("secret,id=e3,data=abc,keyid=ek", "IV is required to decrypt secret");
    object_fails("secret,id=e4,data=abc,keyid=ek,iv=YWJj", "IV should be 16 bytes in length not 3");
    object_fails("secret,id=e5,data=abc,keyid=short,iv=YWJj", "Key should be 32 bytes in length");
    object_fails("secret,id=e6,data=abc,keyid=nokey,iv=YWJj", "No secret with id 'nokey'");
    object_fails("secret,id=e7,data=abc,keyid=e7,iv=YWJj", "Secret with id 'e7' has no data");
    snprintf(text, sizeof text, "secret,id=e8,data=YWJjZGVmZ2hpamtsbW5vcA==,format=base64,keyid=ek,iv=%s", iv);
    object_fails(text, "Incorrect number of padding bytes (189) found on decrypted data");
    /* iv without keyid is ignored, as in qemu */
    CHECK_EQ_INT(qimg_object_add("secret,id=e9,data=abc,iv=k"), 0);
}
#endif

TEST(secret_from_file)
{
    char path[] = "/tmp/qimg-secret-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK_EQ_INT(write(fd, "abc\n", 4), 4);     /* the newline is part of it */
    close(fd);
    char text[128], *data = NULL;
    size_t len = 0;
    snprintf(text, sizeof text, "secret,id=f0,file=%s", path);
    CHECK_EQ_INT(qimg_object_add(text), 0);
    CHECK_EQ_INT(qimg_secret_lookup("f0", &data, &len), 0);
    CHECK_EQ_INT(len, 4);
    CHECK(data && memcmp(data, "abc\n", 4) == 0);
    free(data);
    unlink(path);
}

int main(void)
{
    RUN(o_text_parsing);
    RUN(o_text_check);
    RUN(typed_getters);
    RUN(keyval);
    RUN(json_filenames);
    RUN(objects_and_secrets);
#ifdef HAVE_OPENSSL
    RUN(encrypted_secrets);
#endif
    RUN(secret_from_file);
    return UNIT_DONE();
}
