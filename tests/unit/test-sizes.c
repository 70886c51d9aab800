/* qimg_parse_size / qimg_format_size against values observed with
 * qemu-img 7.2 ("qemu-img create -f raw F SIZE" and "qemu-img info"). */
#include <errno.h>

#include "internal.h"
#include "unit.h"

static int parse(const char *s, uint64_t *v)
{
    *v = 0xdeadbeef;
    return qimg_parse_size(s, v);
}

#define OK(str, expect) do { uint64_t _v; int _r = parse(str, &_v); \
    CHECK_EQ_INT(_r, 0); if (_r == 0) CHECK(_v == (uint64_t)(expect)); } while (0)
#define BAD(str, err) CHECK_EQ_INT(parse(str, &(uint64_t){0}), err)

/* "Formatting 'F', fmt=raw size=N" lines */
TEST(accepted_sizes)
{
    OK("1.5k", 1536);
    OK("0x10", 16);
    OK("0X10", 16);
    OK("  5", 5);
    OK(" 0x10", 16);
    OK(" +0x10", 16);
    OK("+5", 5);
    OK("010", 10);
    OK("1b", 1);
    OK("1B", 1);
    OK("1k", 1024);
    OK("1K", 1024);
    OK("1m", 1048576);
    OK("1M", 1048576);
    OK("1g", 1073741824);
    OK("1G", 1073741824);
    OK("1t", 1099511627776ull);
    OK("1T", 1099511627776ull);
    OK("1p", 1125899906842624ull);
    OK("1P", 1125899906842624ull);
    OK("1e", 1152921504606846976ull);
    OK("1E", 1152921504606846976ull);
    OK("7E", 8070450532247928832ull);
    OK("1.5M", 1572864);
    OK("0.5k", 512);
    OK("5.k", 5120);
    OK("5.", 5);
    OK("1.0", 1);
    OK("1.0b", 1);
    OK("1.000000000000000001k", 1024);
    OK("0.00000000001k", 0);
    OK("1.25k", 1280);
    OK("1023.9999999999999k", 1048576);
    OK("8191P", 9222246136947933184ull);
    OK("1.5E", 1729382256910270464ull);
    OK("1.5e", 1729382256910270464ull);
    OK("1.0E", 1152921504606846976ull);
    OK("1.99999999999999999999k", 1024);
    OK("1.99999999999999999999", 1);
    OK("0.9999999999999999999e", 0);
    OK("9223372036854775807", 9223372036854775807ull);
    /* qemu_strtosz takes these; create then says "Must be between 0 and ..." */
    OK("18446744073709551615", UINT64_MAX);
    OK("9223372036854775808", 9223372036854775808ull);
    OK("8E", 9223372036854775808ull);
    OK("8192P", 9223372036854775808ull);
    OK("0x8000000000000000", 9223372036854775808ull);
}

/* qemu quirk: when strtod underflows on the fraction, the character after
 * it is skipped ("1.<400 zeros>1k" is 1, "...1kb" too) */
TEST(fraction_underflow_skips_a_char)
{
    char buf[512];
    memset(buf, '0', sizeof buf);
    buf[0] = '1';
    buf[1] = '.';
    strcpy(buf + 402, "1k");
    OK(buf, 1);
    strcpy(buf + 402, "1kb");
    OK(buf, 1);
}

TEST(hex_suffix_is_accepted)
{
    OK("0x10k", 16384);     /* with "Using a multiplier suffix on hex numbers is deprecated" */
}

/* "Invalid image size specified. You may use k, M, G, T, P or E suffixes for" */
TEST(rejected_syntax)
{
    BAD("1Gi", -EINVAL);
    BAD("1GB", -EINVAL);
    BAD("1.5", -EINVAL);
    BAD("-5", -EINVAL);
    BAD(" -0", -EINVAL);
    BAD("1e3", -EINVAL);
    BAD("5 ", -EINVAL);
    BAD("1.5 ", -EINVAL);
    BAD("1.0000001b", -EINVAL);
    BAD("1.5b", -EINVAL);
    BAD("1.5B", -EINVAL);
    BAD("0.1b", -EINVAL);
    BAD("1.9999b", -EINVAL);
    BAD("0x1.8k", -EINVAL);
    BAD(".5k", -EINVAL);
    BAD("", -EINVAL);
    BAD("k", -EINVAL);
    BAD("1kk", -EINVAL);
    BAD("1 k", -EINVAL);
    BAD("1.5e3", -EINVAL);
    BAD("1.5e-3", -EINVAL);
    BAD("1.5e+3k", -EINVAL);
    BAD("inf", -EINVAL);
    BAD("nan", -EINVAL);
    BAD("0x", -EINVAL);
    BAD("0xg", -EINVAL);
    BAD("0x-10", -EINVAL);
    BAD("00x10", -EINVAL);
    BAD("1.5x", -EINVAL);
    BAD("0x1p4", -EINVAL);
    BAD("1..5k", -EINVAL);
    BAD("1.-5k", -EINVAL);
    BAD("1.0x", -EINVAL);
    BAD("99999999999999999999x", -EINVAL);
    BAD("16Ex", -EINVAL);
    BAD("99999999999999999999k", -EINVAL);
    BAD("1E400", -EINVAL);
}

/* "Invalid image size specified. Must be between 0 and 9223372036854775807."
 * for these, and "Value '16E' is out of range for parameter 'size'" in -o */
TEST(rejected_range)
{
    BAD("16E", -ERANGE);
    BAD("17E", -ERANGE);
    BAD("99999999999999999999", -ERANGE);
    BAD("0xffffffffffffffffff", -ERANGE);
}

static void fmt_is(uint64_t size, const char *expect)
{
    char buf[32];
    qimg_format_size(size, buf, sizeof buf);
    CHECK_EQ_STR(buf, expect);
}

/* "virtual size: X (N bytes)" of qemu-img info on raw files */
TEST(format_sizes)
{
    fmt_is(0, "0 B");
    fmt_is(512, "512 B");
    fmt_is(1024, "1 KiB");
    fmt_is(1536, "1.5 KiB");
    fmt_is(4096, "4 KiB");
    fmt_is(1022976, "999 KiB");
    fmt_is(1023488, "1e+03 KiB");
    fmt_is(1024000, "0.977 MiB");
    fmt_is(1047040, "0.999 MiB");
    fmt_is(1047552, "0.999 MiB");
    fmt_is(1048064, "1 MiB");
    fmt_is(1048576, "1 MiB");
    fmt_is(1049088, "1 MiB");
    fmt_is(1234944, "1.18 MiB");
    fmt_is(1048576000, "0.977 GiB");
    fmt_is(1073217536, "1 GiB");
    fmt_is(10737418240ull, "10 GiB");
    fmt_is(1099511627776ull, "1 TiB");
    /* "disk size:" lines seen: 196 KiB (200704), 2.19 MiB (2297856) */
    fmt_is(200704, "196 KiB");
    fmt_is(2297856, "2.19 MiB");
}

int main(void)
{
    RUN(accepted_sizes);
    RUN(fraction_underflow_skips_a_char);
    RUN(hex_suffix_is_accepted);
    RUN(rejected_syntax);
    RUN(rejected_range);
    RUN(format_sizes);
    return UNIT_DONE();
}
