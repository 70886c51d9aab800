/* JSON printing checked against qemu-img 7.2 output (pasted from real
 * runs of qemu-img info/check --output=json and qemu-img info). */
#include <errno.h>

#include "internal.h"
#include "unit.h"

/* keys in the order qemu-img printed them, inserted in reverse so the
 * printer must reorder them */
static struct qimg_json *object_reversed(const char *const *keys, size_t n)
{
    struct qimg_json *o = qimg_json_object();
    for (size_t i = n; i-- > 0;)
        qimg_json_set(o, keys[i], qimg_json_int((int64_t)i));
    return o;
}

static void check_key_order(const char *const *keys, size_t n)
{
    for (size_t i = 1; i < n; i++)
        CHECK(qimg_json_key_bucket(keys[i - 1]) < qimg_json_key_bucket(keys[i]));
    struct qimg_json *o = object_reversed(keys, n);
    char *s = qimg_json_to_string(o);
    const char *at = s;
    for (size_t i = 0; i < n; i++) {
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\":", keys[i]);
        const char *hit = strstr(at, quoted);
        CHECK(hit != NULL);
        if (hit)
            at = hit;
    }
    free(s);
    qimg_json_free(o);
}

#define KEYS(...) do { static const char *const k[] = { __VA_ARGS__ }; \
    check_key_order(k, sizeof k / sizeof k[0]); } while (0)

TEST(key_orders_seen_in_qemu)
{
    KEYS("backing-image", "compressed", "backing-filename-format", "snapshots", "virtual-size",
         "filename", "cluster-size", "format", "actual-size", "format-specific",
         "full-backing-filename", "encrypted", "backing-filename", "dirty-flag");
    KEYS("image-end-offset", "compressed-clusters", "total-clusters", "corruptions",
         "corruptions-fixed", "check-errors", "leaks", "leaks-fixed", "allocated-clusters",
         "filename", "format", "fragmented-clusters");
    KEYS("compat", "compression-type", "lazy-refcounts", "bitmaps", "refcount-bits",
         "data-file", "encrypt", "data-file-raw", "corrupt", "extended-l2");
    KEYS("bitmaps", "required", "fully-allocated");
    KEYS("flags", "name", "granularity");
    KEYS("ivgen-alg", "hash-alg", "cipher-alg", "uuid", "format", "cipher-mode", "slots",
         "payload-offset", "master-key-iters");
    KEYS("active", "iters", "key-offset", "stripes");
    KEYS("offset", "driver", "size", "file");
}

/* Two keys in one bucket: qemu inserts at the bucket head, so the later
 * one prints first.  (No colliding pair could be made visible through
 * qemu-img; this follows QDict's documented list insertion.) */
TEST(same_bucket_later_first)
{
    /* find two short keys sharing a bucket */
    char a[8] = "", b[8] = "";
    for (int i = 0; i < 26 * 26 && !b[0]; i++) {
        for (int j = i + 1; j < 26 * 26; j++) {
            char x[3] = { (char)('a' + i / 26), (char)('a' + i % 26), 0 };
            char y[3] = { (char)('a' + j / 26), (char)('a' + j % 26), 0 };
            if (qimg_json_key_bucket(x) == qimg_json_key_bucket(y)) {
                strcpy(a, x);
                strcpy(b, y);
                break;
            }
        }
    }
    CHECK(b[0] != 0);
    struct qimg_json *o = qimg_json_object();
    qimg_json_set(o, a, qimg_json_int(1));
    qimg_json_set(o, b, qimg_json_int(2));
    char *s = qimg_json_to_string(o);
    char expect[64];
    snprintf(expect, sizeof expect, "{\n    \"%s\": 2,\n    \"%s\": 1\n}", b, a);
    CHECK_EQ_STR(s, expect);
    free(s);
    /* replacing a value keeps the member's place */
    qimg_json_set(o, a, qimg_json_int(3));
    s = qimg_json_to_string(o);
    snprintf(expect, sizeof expect, "{\n    \"%s\": 2,\n    \"%s\": 3\n}", b, a);
    CHECK_EQ_STR(s, expect);
    free(s);
    qimg_json_free(o);
}

/* qemu-img info --output=json on a raw file */
TEST(raw_info)
{
    struct qimg_json *o = qimg_json_object();
    qimg_json_set(o, "dirty-flag", qimg_json_bool(false));
    qimg_json_set(o, "actual-size", qimg_json_int(0));
    qimg_json_set(o, "format", qimg_json_string("raw"));
    qimg_json_set(o, "filename", qimg_json_string("\xc3\xa9\x7f\t\"\\x\x01.img"));
    qimg_json_set(o, "virtual-size", qimg_json_uint(1048576));
    char *s = qimg_json_to_string(o);
    CHECK_EQ_STR(s,
"{\n"
"    \"virtual-size\": 1048576,\n"
"    \"filename\": \"\\u00E9\\u007F\\t\\\"\\\\x\\u0001.img\",\n"
"    \"format\": \"raw\",\n"
"    \"actual-size\": 0,\n"
"    \"dirty-flag\": false\n"
"}");
    free(s);
    qimg_json_free(o);
}

static struct qimg_json *bitmap(const char *name, const char *flag)
{
    struct qimg_json *b = qimg_json_object(), *flags = qimg_json_array();
    if (flag)
        qimg_json_append(flags, qimg_json_string(flag));
    qimg_json_set(b, "name", qimg_json_string(name));
    qimg_json_set(b, "granularity", qimg_json_int(65536));
    qimg_json_set(b, "flags", flags);
    return b;
}

static struct qimg_json *qcow2_data(void)
{
    struct qimg_json *d = qimg_json_object(), *bitmaps = qimg_json_array();
    qimg_json_append(bitmaps, bitmap("b0", "auto"));
    qimg_json_append(bitmaps, bitmap("b1", NULL));
    qimg_json_set(d, "compat", qimg_json_string("1.1"));
    qimg_json_set(d, "compression-type", qimg_json_string("zlib"));
    qimg_json_set(d, "lazy-refcounts", qimg_json_bool(false));
    qimg_json_set(d, "bitmaps", bitmaps);
    qimg_json_set(d, "refcount-bits", qimg_json_int(16));
    qimg_json_set(d, "corrupt", qimg_json_bool(false));
    qimg_json_set(d, "extended-l2", qimg_json_bool(false));
    return d;
}

/* qemu-img info --output=json of a qcow2 after "qemu-img bitmap --add a.qcow2 b0"
 * and "--add b1 --disable": shows the empty-array form "[\n<indent>]" */
TEST(qcow2_info_with_bitmaps)
{
    struct qimg_json *o = qimg_json_object(), *fs = qimg_json_object();
    qimg_json_set(fs, "type", qimg_json_string("qcow2"));
    qimg_json_set(fs, "data", qcow2_data());
    qimg_json_set(o, "virtual-size", qimg_json_int(1048576));
    qimg_json_set(o, "filename", qimg_json_string("a.qcow2"));
    qimg_json_set(o, "cluster-size", qimg_json_int(65536));
    qimg_json_set(o, "format", qimg_json_string("qcow2"));
    qimg_json_set(o, "actual-size", qimg_json_int(225280));
    qimg_json_set(o, "format-specific", fs);
    qimg_json_set(o, "dirty-flag", qimg_json_bool(false));
    char *s = qimg_json_to_string(o);
    CHECK_EQ_STR(s,
"{\n"
"    \"virtual-size\": 1048576,\n"
"    \"filename\": \"a.qcow2\",\n"
"    \"cluster-size\": 65536,\n"
"    \"format\": \"qcow2\",\n"
"    \"actual-size\": 225280,\n"
"    \"format-specific\": {\n"
"        \"type\": \"qcow2\",\n"
"        \"data\": {\n"
"            \"compat\": \"1.1\",\n"
"            \"compression-type\": \"zlib\",\n"
"            \"lazy-refcounts\": false,\n"
"            \"bitmaps\": [\n"
"                {\n"
"                    \"flags\": [\n"
"                        \"auto\"\n"
"                    ],\n"
"                    \"name\": \"b0\",\n"
"                    \"granularity\": 65536\n"
"                },\n"
"                {\n"
"                    \"flags\": [\n"
"                    ],\n"
"                    \"name\": \"b1\",\n"
"                    \"granularity\": 65536\n"
"                }\n"
"            ],\n"
"            \"refcount-bits\": 16,\n"
"            \"corrupt\": false,\n"
"            \"extended-l2\": false\n"
"        }\n"
"    },\n"
"    \"dirty-flag\": false\n"
"}");
    free(s);
    qimg_json_free(o);
}

/* "Format specific information:" part of qemu-img info for that image */
TEST(qcow2_human_dump)
{
    struct qimg_json *d = qcow2_data();
    char *out = qimg_strdup("Format specific information:\n");
    qimg_json_dump_human(d, 4, &out);
    CHECK_EQ_STR(out,
"Format specific information:\n"
"    compat: 1.1\n"
"    compression type: zlib\n"
"    lazy refcounts: false\n"
"    bitmaps:\n"
"        [0]:\n"
"            flags:\n"
"                [0]: auto\n"
"            name: b0\n"
"            granularity: 65536\n"
"        [1]:\n"
"            flags:\n"
"            name: b1\n"
"            granularity: 65536\n"
"    refcount bits: 16\n"
"    corrupt: false\n"
"    extended l2: false\n");
    free(out);
    qimg_json_free(d);
}

/* luks-encrypted qcow2: nested object with a list of objects */
TEST(encrypt_human_dump)
{
    struct qimg_json *e = qimg_json_object(), *slots = qimg_json_array();
    struct qimg_json *s0 = qimg_json_object(), *s1 = qimg_json_object();
    qimg_json_set(s0, "active", qimg_json_bool(true));
    qimg_json_set(s0, "iters", qimg_json_int(40756));
    qimg_json_set(s0, "key-offset", qimg_json_int(4096));
    qimg_json_set(s0, "stripes", qimg_json_int(4000));
    qimg_json_set(s1, "key-offset", qimg_json_int(262144));
    qimg_json_set(s1, "active", qimg_json_bool(false));
    qimg_json_append(slots, s0);
    qimg_json_append(slots, s1);
    qimg_json_set(e, "format", qimg_json_string("luks"));
    qimg_json_set(e, "slots", slots);
    qimg_json_set(e, "payload-offset", qimg_json_int(2068480));
    qimg_json_set(e, "cipher-alg", qimg_json_string("aes-256"));
    struct qimg_json *d = qimg_json_object();
    qimg_json_set(d, "encrypt", e);
    char *out = NULL;
    qimg_json_dump_human(d, 4, &out);
    CHECK_EQ_STR(out,
"    encrypt:\n"
"        cipher alg: aes-256\n"
"        format: luks\n"
"        slots:\n"
"            [0]:\n"
"                active: true\n"
"                iters: 40756\n"
"                key offset: 4096\n"
"                stripes: 4000\n"
"            [1]:\n"
"                active: false\n"
"                key offset: 262144\n"
"        payload offset: 2068480\n");
    free(out);
    qimg_json_free(d);
}

static void escapes_to(const char *in, const char *expect)
{
    struct qimg_json *v = qimg_json_string(in);
    char *s = qimg_json_to_string(v);
    CHECK_EQ_STR(s, expect);
    free(s);
    qimg_json_free(v);
}

/* file names given to qemu-img info --output=json, "filename" value shown */
TEST(string_escapes)
{
    escapes_to("a\b\f\n\r\tz", "\"a\\b\\f\\n\\r\\tz\"");
    escapes_to("x\x1f\x7e", "\"x\\u001F~\"");
    escapes_to("\xe2\x82\xac\xf0\x9f\x98\x80\xff\xc3.img", "\"\\u20AC\\uD83D\\uDE00\\uFFFD\\uFFFD.img\"");
    escapes_to("\xc0\x80", "\"\\u0000\"");
    escapes_to("\xc1\xbf", "\"\\uFFFD\"");
    escapes_to("\xe0\x80\x80", "\"\\uFFFD\"");
    escapes_to("\xed\xa0\x80", "\"\\uFFFD\"");
    escapes_to("\xef\xbf\xbe", "\"\\uFFFD\"");
    escapes_to("\xef\xbf\xbf", "\"\\uFFFD\"");
    escapes_to("\xf4\x8f\xbf\xbf", "\"\\uFFFD\"");
    escapes_to("\xf4\x90\x80\x80", "\"\\uFFFD\"");
    escapes_to("\xf8\x88\x80\x80\x80", "\"\\uFFFD\"");
    escapes_to("\xc3x", "\"\\uFFFDx\"");
    escapes_to("\xe2\x82x", "\"\\uFFFDx\"");
    escapes_to("\x80", "\"\\uFFFD\"");
    escapes_to("\xbf\xbf", "\"\\uFFFD\\uFFFD\"");
    escapes_to("\xe2\x82", "\"\\uFFFD\"");
    escapes_to("\xf0\x9f\x98", "\"\\uFFFD\"");
    escapes_to("\xfe", "\"\\uFFFD\"");
    escapes_to("\xef\xb7\x90", "\"\\uFFFD\"");
    escapes_to("\xc2\x80", "\"\\u0080\"");
}

/* the json:{...} filename qemu-img info printed for
 * json:{"driver":"raw","offset":512,"size":1024,"file":{...}} */
TEST(compact_form)
{
    struct qimg_json *o = qimg_json_object(), *f = qimg_json_object();
    qimg_json_set(f, "filename", qimg_json_string("x.raw"));
    qimg_json_set(f, "driver", qimg_json_string("file"));
    qimg_json_set(o, "driver", qimg_json_string("raw"));
    qimg_json_set(o, "file", f);
    qimg_json_set(o, "size", qimg_json_int(1024));
    qimg_json_set(o, "offset", qimg_json_int(512));
    char *s = qimg_json_to_string_compact(o);
    CHECK_EQ_STR(s, "{\"offset\": 512, \"driver\": \"raw\", \"size\": 1024, "
                    "\"file\": {\"driver\": \"file\", \"filename\": \"x.raw\"}}");
    free(s);
    qimg_json_free(o);
}

TEST(empty_containers)
{
    struct qimg_json *o = qimg_json_object();
    char *s = qimg_json_to_string(o);
    CHECK_EQ_STR(s, "{\n}");
    free(s);
    qimg_json_free(o);
    o = qimg_json_array();
    s = qimg_json_to_string(o);
    CHECK_EQ_STR(s, "[\n]");
    free(s);
    qimg_json_free(o);
}

TEST(strbuf)
{
    struct qimg_strbuf b = { 0 };
    qimg_strbuf_add(&b, "ab");
    for (int i = 0; i < 1000; i++)
        qimg_strbuf_addf(&b, "%d,", i % 10);
    CHECK_EQ_INT(b.len, 2002);
    CHECK(strncmp(b.s, "ab0,1,2,", 8) == 0);
    free(b.s);
}

int main(void)
{
    RUN(key_orders_seen_in_qemu);
    RUN(same_bucket_later_first);
    RUN(raw_info);
    RUN(qcow2_info_with_bitmaps);
    RUN(qcow2_human_dump);
    RUN(encrypt_human_dump);
    RUN(string_escapes);
    RUN(compact_form);
    RUN(empty_containers);
    RUN(strbuf);
    return UNIT_DONE();
}
