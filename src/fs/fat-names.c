/* FAT names (see fat-format.h): short names read through the OEM code
 * page, long-name entries and their checksum, UTF-8 <-> UTF-16, the
 * case-insensitive comparison, and short-name (8.3) generation with "~N"
 * tails, from Microsoft's fatgen103. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fat-format.h"
#include "internal.h"
#include "util.h"

/* Code page 850 (mtools' default OEM code page, Western Europe), 0x80..0xFF. */
static const uint16_t oem_high[128] = {
    0x00C7, 0x00FC, 0x00E9, 0x00E2, 0x00E4, 0x00E0, 0x00E5, 0x00E7,
    0x00EA, 0x00EB, 0x00E8, 0x00EF, 0x00EE, 0x00EC, 0x00C4, 0x00C5,
    0x00C9, 0x00E6, 0x00C6, 0x00F4, 0x00F6, 0x00F2, 0x00FB, 0x00F9,
    0x00FF, 0x00D6, 0x00DC, 0x00F8, 0x00A3, 0x00D8, 0x00D7, 0x0192,
    0x00E1, 0x00ED, 0x00F3, 0x00FA, 0x00F1, 0x00D1, 0x00AA, 0x00BA,
    0x00BF, 0x00AE, 0x00AC, 0x00BD, 0x00BC, 0x00A1, 0x00AB, 0x00BB,
    0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x00C1, 0x00C2, 0x00C0,
    0x00A9, 0x2563, 0x2551, 0x2557, 0x255D, 0x00A2, 0x00A5, 0x2510,
    0x2514, 0x2534, 0x252C, 0x251C, 0x2500, 0x253C, 0x00E3, 0x00C3,
    0x255A, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256C, 0x00A4,
    0x00F0, 0x00D0, 0x00CA, 0x00CB, 0x00C8, 0x0131, 0x00CD, 0x00CE,
    0x00CF, 0x2518, 0x250C, 0x2588, 0x2584, 0x00A6, 0x00CC, 0x2580,
    0x00D3, 0x00DF, 0x00D4, 0x00D2, 0x00F5, 0x00D5, 0x00B5, 0x00FE,
    0x00DE, 0x00DA, 0x00DB, 0x00D9, 0x00FD, 0x00DD, 0x00AF, 0x00B4,
    0x00AD, 0x00B1, 0x2017, 0x00BE, 0x00B6, 0x00A7, 0x00F7, 0x00B8,
    0x00B0, 0x00A8, 0x00B7, 0x00B9, 0x00B3, 0x00B2, 0x25A0, 0x00A0,
};

/* Lower case of ASCII and Latin-1 letters (for the NT case bits). */
static uint16_t downcase(uint16_t c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7))
        return (uint16_t)(c + 32);
    return c;
}

size_t fat_short_name_utf16(const uint8_t name[11], uint8_t ntres, uint16_t *out)
{
    size_t n = 0;
    int base_end = 8, ext_end = 11;
    while (base_end > 0 && name[base_end - 1] == ' ')
        base_end--;
    while (ext_end > 8 && name[ext_end - 1] == ' ')
        ext_end--;
    for (int i = 0; i < ext_end; i++) {
        if (i >= base_end && i < 8)
            continue;
        if (i == 8)
            out[n++] = '.';
        uint8_t c = (i == 0 && name[0] == 0x05) ? 0xE5 : name[i];
        uint8_t lower = i < 8 ? FAT_NTRES_LOWER_BASE : FAT_NTRES_LOWER_EXT;
        uint16_t u = c >= 0x80 ? oem_high[c - 0x80] : (c < 0x20 || c == '/') ? '_' : c;
        out[n++] = (ntres & lower) ? downcase(u) : u;
    }
    return n;
}

void fat_short_name_text(const uint8_t name[11], uint8_t ntres, char *out)
{
    uint16_t u[12];
    size_t n = fat_short_name_utf16(name, ntres, u);
    fat_utf16_to_utf8(u, n, out);
}

/* ------------------------------------------------------------- long names */

uint8_t fat_lfn_checksum(const uint8_t name[11])
{
    uint8_t sum = 0;
    for (int i = 0; i < 11; i++)
        sum = (uint8_t)(((sum & 1) << 7) + (sum >> 1) + name[i]);
    return sum;
}

/* Byte offsets of the 13 UTF-16 units in a long-name entry. */
static const uint8_t lfn_unit_offsets[FAT_LFN_CHARS] = {
    1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30,
};

void fat_lfn_encode(uint8_t *raw, unsigned ord, bool last, const uint16_t *name, size_t len,
                    uint8_t checksum)
{
    memset(raw, 0, FAT_DIRENT_SIZE);
    raw[0] = (uint8_t)(ord | (last ? FAT_LFN_LAST : 0));
    raw[11] = FAT_ATTR_LONG_NAME;
    raw[13] = checksum;
    size_t base = (size_t)(ord - 1) * FAT_LFN_CHARS;
    for (size_t i = 0; i < FAT_LFN_CHARS; i++) {
        size_t k = base + i;
        /* the name ends with a NUL unit, then 0xFFFF padding */
        uint16_t u = k < len ? name[k] : k == len ? 0 : 0xFFFF;
        qimg_put_le16(raw + lfn_unit_offsets[i], u);
    }
}

unsigned fat_name_entries(const uint16_t *name, size_t len, unsigned nlfn, const uint8_t *ent,
                          uint8_t *out)
{
    uint8_t sum = fat_lfn_checksum(ent);
    for (unsigned i = 0; i < nlfn; i++)
        fat_lfn_encode(out + (size_t)i * FAT_DIRENT_SIZE, nlfn - i, i == 0, name, len, sum);
    memcpy(out + (size_t)nlfn * FAT_DIRENT_SIZE, ent, FAT_DIRENT_SIZE);
    return nlfn + 1;
}

void fat_lfn_units(const uint8_t *raw, uint16_t *out)
{
    for (size_t i = 0; i < FAT_LFN_CHARS; i++)
        out[i] = qimg_le16(raw + lfn_unit_offsets[i]);
}

int fat_utf8_to_utf16(const char *str, uint16_t *out, size_t max, size_t *len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t n = 0;
    while (*s) {
        uint32_t cp;
        int extra;
        if (*s < 0x80) {
            cp = *s;
            extra = 0;
        } else if ((*s & 0xE0) == 0xC0) {
            cp = *s & 0x1F;
            extra = 1;
        } else if ((*s & 0xF0) == 0xE0) {
            cp = *s & 0x0F;
            extra = 2;
        } else if ((*s & 0xF8) == 0xF0) {
            cp = *s & 0x07;
            extra = 3;
        } else {
            return -EINVAL;
        }
        s++;
        for (int i = 0; i < extra; i++, s++) {
            if ((*s & 0xC0) != 0x80)
                return -EINVAL;
            cp = cp << 6 | (*s & 0x3F);
        }
        static const uint32_t min_cp[4] = { 0, 0x80, 0x800, 0x10000 };
        if (cp < min_cp[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -EINVAL;
        if (cp >= 0x10000) {
            if (n + 2 > max)
                return -ENAMETOOLONG;
            cp -= 0x10000;
            out[n++] = (uint16_t)(0xD800 | (cp >> 10));
            out[n++] = (uint16_t)(0xDC00 | (cp & 0x3FF));
        } else {
            if (n + 1 > max)
                return -ENAMETOOLONG;
            out[n++] = (uint16_t)cp;
        }
    }
    *len = n;
    return 0;
}

void fat_utf16_to_utf8(const uint16_t *in, size_t len, char *out)
{
    uint8_t *o = (uint8_t *)out;
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = in[i];
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < len && in[i + 1] >= 0xDC00 &&
            in[i + 1] <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (in[i + 1] - 0xDC00);
            i++;
        } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            cp = 0xFFFD;
        }
        if (cp < 0x80) {
            *o++ = (uint8_t)cp;
        } else if (cp < 0x800) {
            *o++ = (uint8_t)(0xC0 | cp >> 6);
            *o++ = (uint8_t)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *o++ = (uint8_t)(0xE0 | cp >> 12);
            *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (uint8_t)(0x80 | (cp & 0x3F));
        } else {
            *o++ = (uint8_t)(0xF0 | cp >> 18);
            *o++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            *o++ = (uint8_t)(0x80 | (cp & 0x3F));
        }
    }
    *o = 0;
}

uint16_t fat_upcase(uint16_t c)
{
    if (c >= 'a' && c <= 'z')
        return (uint16_t)(c - 32);
    if (c < 0xE0)
        return c;
    if (c <= 0xFE)
        return c == 0xF7 ? c : (uint16_t)(c - 32);        /* Latin-1 */
    if (c == 0xFF)
        return 0x178;
    if (c >= 0x100 && c <= 0x17F) {                         /* Latin Extended-A pairs */
        bool odd_lower = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
        if (c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17F)
            return c;
        if (odd_lower)
            return (c & 1) ? c : (uint16_t)(c - 1);
        return (c & 1) ? (uint16_t)(c - 1) : c;
    }
    if (c >= 0x3B1 && c <= 0x3CB && c != 0x3C2)           /* Greek */
        return (uint16_t)(c - 32);
    if (c >= 0x430 && c <= 0x44F)                           /* Cyrillic */
        return (uint16_t)(c - 32);
    if (c >= 0x450 && c <= 0x45F)
        return (uint16_t)(c - 80);
    if (c >= 0xFF41 && c <= 0xFF5A)                         /* full-width Latin */
        return (uint16_t)(c - 32);
    return c;
}

bool fat_name_equal_nocase(const uint16_t *a, size_t alen, const uint16_t *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (a[i] != b[i] && fat_upcase(a[i]) != fat_upcase(b[i]))
            return false;
    return true;
}

int fat_check_long_name(const char *name, uint16_t *u16, size_t *len)
{
    size_t n = strlen(name);
    if (n == 0 || !strcmp(name, ".") || !strcmp(name, ".."))
        return qimg_error(-EINVAL, "invalid file name '%s'", name);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || strchr("/\\:*?\"<>|", *p))
            return qimg_error(-EINVAL, "the name '%s' cannot be stored on FAT (character "
                              "'%c' is not allowed)", name, *p < 0x20 ? '?' : *p);
    }
    if (name[n - 1] == '.' || name[n - 1] == ' ')
        return qimg_error(-EINVAL, "the name '%s' cannot be stored on FAT (it ends with a "
                          "dot or a space)", name);
    int r = fat_utf8_to_utf16(name, u16, FAT_MAX_LFN, len);
    if (r == -ENAMETOOLONG)
        return qimg_error(r, "the name '%s' is longer than FAT's 255 characters", name);
    if (r < 0)
        return qimg_error(r, "the name '%s' is not valid UTF-8", name);
    return 0;
}

/* Characters allowed in a short name besides A-Z and 0-9. */
static bool short_char_ok(uint16_t c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c < 0x80 && strchr("$%'-_@~`!(){}^#&", (int)c) && c != 0;
}

/* The name as a plain 8.3 name: ASCII short-name characters (either case),
 * base 1-8, extension 0-3, at most one dot.  Fills the upper-case form and
 * the NT lower-case bits; false when the case is mixed within a part. */
static bool as_plain_83(const uint16_t *name, size_t len, uint8_t out[11], uint8_t *ntres)
{
    memset(out, ' ', 11);
    *ntres = 0;
    size_t dot = len;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (dot != len)
                return false;
            dot = i;
        }
    }
    size_t base = dot, ext = dot == len ? 0 : len - dot - 1;
    if (base == 0 || base > 8 || ext > 3 || (dot != len && ext == 0))
        return false;
    for (int part = 0; part < 2; part++) {
        size_t from = part ? dot + 1 : 0, n = part ? ext : base;
        bool lower = false, upper = false;
        for (size_t i = 0; i < n; i++) {
            uint16_t c = name[from + i];
            if (c >= 'a' && c <= 'z') {
                lower = true;
                c = (uint16_t)(c - 32);
            } else if (c >= 'A' && c <= 'Z') {
                upper = true;
            }
            if (!short_char_ok(c))
                return false;
            out[(part ? 8 : 0) + i] = (uint8_t)c;
        }
        if (lower && upper)
            return false;
        if (lower)
            *ntres |= part ? FAT_NTRES_LOWER_EXT : FAT_NTRES_LOWER_BASE;
    }
    if (out[0] == 0xE5)
        out[0] = 0x05;
    return true;
}

void fat_short_name_basis(const uint16_t *name, size_t len, uint8_t sn[11], uint8_t *ntres,
                          bool *needs_lfn, bool *needs_tail)
{
    if (as_plain_83(name, len, sn, ntres)) {
        *needs_lfn = false;
        *needs_tail = false;
        return;
    }
    *needs_lfn = true;
    *ntres = 0;
    memset(sn, ' ', 11);
    bool lossy = false;
    /* the extension: after the last dot (a leading dot does not count) */
    size_t last_dot = len;
    for (size_t i = len; i-- > 0;) {
        if (name[i] == '.') {
            last_dot = i;
            break;
        }
    }
    size_t start = 0;
    while (start < len && (name[start] == '.' || name[start] == ' ')) {
        start++;
        lossy = true;
    }
    if (last_dot < start)
        last_dot = len;
    size_t nb = 0;
    for (size_t i = start; i < last_dot; i++) {
        uint16_t c = fat_upcase(name[i]);
        if (c == ' ' || c == '.') {
            lossy = true;   /* embedded spaces and dots are dropped */
            continue;
        }
        if (!short_char_ok(c)) {
            c = '_';
            lossy = true;
        }
        if (nb == 8) {
            lossy = true;   /* truncated */
            break;
        }
        sn[nb++] = (uint8_t)c;
    }
    size_t ne = 0;
    for (size_t i = last_dot + 1; i < len; i++) {
        uint16_t c = fat_upcase(name[i]);
        if (c == ' ') {
            lossy = true;
            continue;
        }
        if (!short_char_ok(c)) {
            c = '_';
            lossy = true;
        }
        if (ne == 3) {
            lossy = true;
            break;
        }
        sn[8 + ne++] = (uint8_t)c;
    }
    if (nb == 0) {
        sn[0] = '_';
        lossy = true;
    }
    *needs_tail = lossy;
}

void fat_short_name_with_tail(const uint8_t basis[11], unsigned n, uint8_t out[11])
{
    char tail[9];
    int tl = snprintf(tail, sizeof tail, "~%u", n);
    memcpy(out, basis, 11);
    int base_len = 8;
    while (base_len > 0 && basis[base_len - 1] == ' ')
        base_len--;
    int keep = QIMG_MIN(base_len, 8 - tl);
    memcpy(out + keep, tail, (size_t)tl);
    for (int i = keep + tl; i < 8; i++)
        out[i] = ' ';
}

bool fat_short_name_tail_of(const uint8_t basis[11], const uint8_t sn[11], unsigned *n)
{
    if (memcmp(basis + 8, sn + 8, 3))
        return false;
    int tilde = -1;
    for (int i = 7; i >= 0; i--) {
        if (sn[i] == '~') {
            tilde = i;
            break;
        }
    }
    if (tilde < 0 || memcmp(sn, basis, (size_t)tilde))
        return false;
    unsigned v = 0;
    int i = tilde + 1, digits = 0;
    for (; i < 8 && sn[i] >= '0' && sn[i] <= '9'; i++, digits++)
        v = v * 10 + (unsigned)(sn[i] - '0');
    for (int j = i; j < 8; j++)
        if (sn[j] != ' ')
            return false;
    if (!digits || !v)
        return false;
    *n = v;
    return true;
}
