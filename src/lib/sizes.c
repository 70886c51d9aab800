/* qimg - sizes as qemu-img reads and prints them.
 *
 * Parsing (behaviour observed with qemu-img 7.2):
 *  - decimal integer (leading blanks and '+' allowed, any '-' rejected,
 *    "010" is ten), or hex "0x..." (no fraction allowed with hex);
 *  - an optional fraction ".ddd" (an exponent inside it rejects the whole
 *    input), only allowed when a suffix other than b/B scales the value;
 *  - an optional suffix b/B k/K m/M g/G t/T p/P e/E (powers of 1024);
 *    hex with a suffix is accepted with a deprecation warning;
 *  - the result is rounded to the nearest byte (half up); a result that
 *    does not fit in 64 bits is -ERANGE, but trailing junk is always
 *    -EINVAL, even after an overflow.
 * Callers that need an int64 (image sizes) check the 2^63 bound themselves:
 * qemu_strtosz accepts up to 2^64-1.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "internal.h"

static uint64_t suffix_multiplier(char c)
{
    switch (c) {
    case 'b': case 'B': return 1;
    case 'k': case 'K': return 1ull << 10;
    case 'm': case 'M': return 1ull << 20;
    case 'g': case 'G': return 1ull << 30;
    case 't': case 'T': return 1ull << 40;
    case 'p': case 'P': return 1ull << 50;
    case 'e': case 'E': return 1ull << 60;
    default: return 0;
    }
}

/* strtoull with qemu's extra rules: a '-' anywhere in the number fails. */
static int parse_unsigned(const char *s, int base, const char **end, uint64_t *val)
{
    char *e;
    errno = 0;
    *val = strtoull(s, &e, base);
    *end = e;
    if (e == s)
        return -EINVAL;
    if (memchr(s, '-', (size_t)(e - s))) {
        *end = s;
        return -EINVAL;
    }
    return errno == ERANGE ? -ERANGE : 0;
}

/*
 * The fraction starting at the '.' p points to, as a 64-bit binary fixed
 * point value in *frac.  Mirrors qemu: when strtod fails (nothing after
 * '.', or underflow) only the '.' is skipped plus, on underflow, the text
 * strtod consumed and one more character.
 */
static int parse_fraction(const char *p, const char **end, uint64_t *frac)
{
    char *e;
    errno = 0;
    double f = strtod(p, &e);
    *frac = 0;
    if (e == p) {
        *end = p + 1;
        return 0;
    }
    if (errno == ERANGE) {
        /* qemu steps one byte past what strtod read: never past the NUL */
        *end = *e ? e + 1 : e;
        return *e ? 0 : -EINVAL;
    }
    if (memchr(p, 'e', (size_t)(e - p)) || memchr(p, 'E', (size_t)(e - p)))
        return -EINVAL;
    *end = e;
    /* a fraction that rounds to 1.0 ends up as 0 in qemu (observed:
     * "1.99999999999999999999k" is 1024) */
    if (f < 1.0)
        *frac = (uint64_t)ldexp(f, 64);
    return 0;
}

/* val.frac * mul, rounded half up; -ERANGE when it exceeds 64 bits. */
static int scale(uint64_t val, uint64_t frac, uint64_t mul, uint64_t *out)
{
    unsigned __int128 whole = (unsigned __int128)val * mul;
    unsigned __int128 part = (unsigned __int128)frac * mul;  /* 64.64 fixed point */
    whole += part >> 64;
    whole += ((uint64_t)part >> 63) & 1;
    if (whole > UINT64_MAX)
        return -ERANGE;
    *out = (uint64_t)whole;
    return 0;
}

int qimg_parse_size(const char *str, uint64_t *out)
{
    const char *p;
    uint64_t val, frac = 0, mul;
    bool hex = false;
    int ret = parse_unsigned(str, 10, &p, &val);

    if (ret == 0 && val == 0 && (*p == 'x' || *p == 'X')) {
        ret = parse_unsigned(str, 16, &p, &val);
        if (ret == 0 && *p == '.')
            return -EINVAL;
        hex = true;
    } else if (ret == 0 && *p == '.') {
        ret = parse_fraction(p, &p, &frac);
    }
    if (ret == 0) {
        mul = suffix_multiplier(*p);
        if (mul) {
            if (hex)
                qimg_warn("Using a multiplier suffix on hex numbers is deprecated: %s", str);
            p++;
        } else {
            mul = 1;
        }
        if (mul == 1 && frac != 0)
            return -EINVAL;     /* a fraction needs a scaling suffix */
        ret = scale(val, frac, mul, &val);
    }
    if (*p != '\0')
        return -EINVAL;         /* junk wins over overflow, as in qemu */
    if (ret == 0)
        *out = val;
    return ret;
}

/*
 * qemu picks the unit with frexp() on size * 1024 / 1000, so a unit is
 * used from 1000 of the one below ("0.977 MiB" for 1000 KiB), and prints
 * "%0.3g" of the value in that unit.
 */
void qimg_format_size(uint64_t size, char *buf, size_t buflen)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    int exp;
    frexp((double)size / (1000.0 / 1024.0), &exp);
    int i = (exp - 1) / 10;
    if (i < 0)
        i = 0;
    if (i >= (int)QIMG_ARRAY_SIZE(units))
        i = (int)QIMG_ARRAY_SIZE(units) - 1;
    snprintf(buf, buflen, "%0.3g %s", (double)size / (double)(1ull << (10 * i)), units[i]);
}
