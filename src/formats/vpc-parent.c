/* qimg - the parent of a differencing VHD (disk type 4).
 *
 * The dynamic header names the parent four ways (Microsoft's Virtual Hard
 * Disk Image Format Specification, "Dynamic Disk Header"):
 *     40  parent unique id (16): the parent footer's unique id
 *     56  parent time stamp (u32): the parent's modification time, seconds
 *         since 2000-01-01 UTC
 *     64  parent unicode name (512): UTF-16 big-endian, NUL padded
 *    576  eight parent locator entries of 24 bytes:
 *           0 platform code (4)      8 data length, bytes (u32)
 *           4 data space (u32)      12 reserved (u32)
 *                                   16 data offset in the file (u64)
 *         The codes qimg reads: "W2ru" (a path relative to the child,
 *         UTF-16 little-endian, Windows separators), "W2ku" (an absolute
 *         path, the same encoding) and "MacX" (a file:// URL, UTF-8).
 *         "Mac " (an alias record) and the deprecated "Wi2r"/"Wi2k" are
 *         kept but not read.  The data space is the room reserved for the
 *         data: the specification says sectors, Windows writes bytes; a
 *         value under 512 is taken as sectors, a multiple of 512 as bytes.
 *
 * The parent is chosen from the candidates in the order W2ru, W2ku, MacX,
 * the unicode name, then the bare file names of the last two (a disk
 * copied from Windows with its parent beside it): the first that names an
 * existing file, else the first there is.  It is recorded as the image's
 * backing file (format vpc) and opened by the image layer, so the
 * child-opening policy and safe mode apply.  A name that would read as a
 * protocol or json: is made a plain path ("./"), as a VHD can only name a
 * file.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>

#include "vpc.h"

#define CODE_W2RU 0x57327275u   /* "W2ru" */
#define CODE_W2KU 0x57326b75u   /* "W2ku" */
#define CODE_MACX 0x4d616358u   /* "MacX" */
/* a locator longer than any path Windows can have */
#define LOCATOR_MAX (64u << 10)

/* ------------------------------------------------------------ text */

static size_t put_utf8(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xc0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xe0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3f));
        o[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3f));
    o[2] = (char)(0x80 | (c >> 6 & 0x3f));
    o[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

/* UTF-16 (units, up to the first NUL) as UTF-8; a lone surrogate becomes
 * U+FFFD. */
static char *utf16_to_utf8(const uint8_t *p, size_t units, bool big_endian)
{
    char *out = qimg_xmalloc(units * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < units; i++) {
        uint32_t c = big_endian ? qimg_be16(p + 2 * i) : qimg_le16(p + 2 * i);
        if (c == 0)
            break;
        if (c >= 0xd800 && c < 0xdc00 && i + 1 < units) {
            uint32_t d = big_endian ? qimg_be16(p + 2 * i + 2) : qimg_le16(p + 2 * i + 2);
            if (d >= 0xdc00 && d < 0xe000) {
                c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
                i++;
            } else {
                c = 0xfffd;
            }
        } else if (c >= 0xd800 && c < 0xe000) {
            c = 0xfffd;
        }
        o += put_utf8(out + o, c);
    }
    out[o] = 0;
    return out;
}

/* The next code point of UTF-8 text, or -1 when the text is not UTF-8. */
static int32_t next_utf8(const unsigned char **s)
{
    const unsigned char *p = *s;
    uint32_t c = p[0];
    int n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 :
            (c & 0xf8) == 0xf0 ? 3 : -1;
    if (n < 0)
        return -1;
    if (n)
        c &= 0x3fu >> n;
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return -1;
        c = c << 6 | (p[i] & 0x3f);
    }
    static const uint32_t least[] = { 0, 0x80, 0x800, 0x10000 };
    if (c < least[n] || c > 0x10ffff || (c >= 0xd800 && c < 0xe000))
        return -1;
    *s = p + n + 1;
    return (int32_t)c;
}

/* UTF-8 as UTF-16 into out (room for max units); the units written, or
 * -EINVAL when the text is not UTF-8.  Stops (truncates) at max. */
static int utf8_to_utf16(const char *text, uint8_t *out, size_t max, bool big_endian,
                         size_t *units)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = 0;
    while (*s) {
        int32_t c = next_utf8(&s);
        if (c < 0)
            return qimg_error(-EINVAL, "VHD parent name '%s' is not UTF-8", text);
        uint16_t u[2] = { (uint16_t)c, 0 };
        size_t k = 1;
        if (c >= 0x10000) {
            u[0] = (uint16_t)(0xd800 + ((c - 0x10000) >> 10));
            u[1] = (uint16_t)(0xdc00 + ((c - 0x10000) & 0x3ff));
            k = 2;
        }
        if (n + k > max)
            break;
        for (size_t j = 0; j < k; j++, n++) {
            if (big_endian)
                qimg_put_be16(out + 2 * n, u[j]);
            else
                qimg_put_le16(out + 2 * n, u[j]);
        }
    }
    *units = n;
    return 0;
}

static void replace_char(char *s, char from, char to)
{
    for (; *s; s++)
        if (*s == from)
            *s = to;
}

/* A Windows path as a local one: '/' separators, a leading ".\" dropped;
 * a name that would read as a protocol or json: made a plain path. */
static char *local_name(char *win)
{
    replace_char(win, '\\', '/');
    char *p = win;
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    char *out = (qimg_path_has_protocol(p) || strncmp(p, "json:", 5) == 0)
                    ? qimg_asprintf("./%s", p) : qimg_strdup(p);
    free(win);
    return out;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
           c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* "file://host/path" with %XX escapes as the path, or NULL. */
static char *file_url_path(const char *url)
{
    if (strncmp(url, "file://", 7) != 0)
        return NULL;
    const char *p = strchr(url + 7, '/');
    if (!p)
        return NULL;
    char *out = qimg_xmalloc(strlen(p) + 1), *o = out;
    for (; *p; p++) {
        int hi, lo;
        if (*p == '%' && (hi = hex_digit(p[1])) >= 0 && (lo = hex_digit(p[2])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    if (strlen(out) != (size_t)(o - out)) {   /* a %00 */
        free(out);
        return NULL;
    }
    return out;
}

static char *base_name(const char *path)
{
    if (!path)
        return NULL;
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    return b[0] && strcmp(b, path) != 0 ? qimg_strdup(b) : NULL;
}

/* -------------------------------------------------------- locators */

struct locator {
    uint32_t code, space, len;
    uint64_t off;
};

static struct locator locator_at(const uint8_t *header, unsigned i)
{
    const uint8_t *e = header + D_LOCATORS + VPC_LOCATOR_SIZE * i;
    return (struct locator){ qimg_be32(e), qimg_be32(e + 4), qimg_be32(e + 8), qimg_be64(e + 16) };
}

/* The room a locator reserves in the file (see the top of the file). */
static uint64_t locator_room(const struct locator *l)
{
    uint64_t room = l->space < VPC_SECTOR ? (uint64_t)l->space * VPC_SECTOR :
                    l->space % VPC_SECTOR == 0 ? l->space : 0;
    return QIMG_MAX(room, (uint64_t)l->len);
}

/* The locator's name, or NULL for a code qimg does not read. */
static int read_locator(struct qimg_image *img, const struct locator *l, unsigned i,
                        uint64_t file_size, char **name)
{
    *name = NULL;
    if (l->code != CODE_W2RU && l->code != CODE_W2KU && l->code != CODE_MACX)
        return 0;
    if (l->len > LOCATOR_MAX)
        return qimg_error(-EINVAL, "VHD parent locator %u is too long (%" PRIu32 " bytes)",
                          i, l->len);
    if (!qimg_range_ok(l->off, l->len, file_size))
        return qimg_error(-EINVAL, "VHD parent locator %u points past the end of the file", i);
    if (l->len == 0)
        return 0;
    uint8_t *data CLEANUP_FREE = qimg_xmalloc(l->len + 1);
    int r = qimg_io_pread(img->file, data, l->len, l->off);
    if (r < 0)
        return r;
    if (l->code == CODE_MACX) {
        data[l->len] = 0;
        *name = file_url_path((const char *)data);
    } else {
        *name = local_name(utf16_to_utf8(data, l->len / 2, false));
    }
    if (*name && !(*name)[0]) {
        free(*name);
        *name = NULL;
    }
    return 0;
}

static bool names_existing_file(const struct qimg_image *img, const char *name)
{
    char *path CLEANUP_FREE = qimg_image_resolve_name(img, name);
    struct stat st;
    return path && stat(path, &st) == 0;
}

enum { C_W2RU, C_W2KU, C_MACX, C_NAME, C_W2KU_BASE, C_NAME_BASE, C_COUNT };

int vpc_parent_parse(struct qimg_image *img, struct vpc_state *s, uint64_t file_size,
                     uint64_t *end)
{
    char *cand[C_COUNT] = { 0 };
    uint64_t limit;
    int r = 0;
    *end = 0;
    if (!qimg_round_up_ok(file_size, VPC_SECTOR, &limit))
        limit = file_size;
    for (unsigned i = 0; i < VPC_LOCATORS && r == 0; i++) {
        struct locator l = locator_at(s->header, i);
        if (l.code == 0)
            continue;
        char *name = NULL;
        r = read_locator(img, &l, i, file_size, &name);
        uint64_t stop;
        if (r == 0 && qimg_add_ok(l.off, locator_room(&l), &stop) && l.off < limit)
            *end = QIMG_MAX(*end, QIMG_MIN(stop, limit));
        int slot = l.code == CODE_W2RU ? C_W2RU : l.code == CODE_W2KU ? C_W2KU : C_MACX;
        if (name && !cand[slot])
            cand[slot] = name;
        else
            free(name);
    }
    if (r == 0) {
        cand[C_NAME] = local_name(utf16_to_utf8(s->header + D_PARENT_NAME,
                                                VPC_PARENT_NAME_UNITS, true));
        if (!cand[C_NAME][0]) {
            free(cand[C_NAME]);
            cand[C_NAME] = NULL;
        }
        cand[C_W2KU_BASE] = base_name(cand[C_W2KU]);
        cand[C_NAME_BASE] = base_name(cand[C_NAME]);
    }
    int chosen = -1;
    for (int c = 0; r == 0 && c < C_COUNT && chosen < 0; c++)
        if (cand[c] && names_existing_file(img, cand[c]))
            chosen = c;
    for (int c = 0; r == 0 && c < C_COUNT && chosen < 0; c++)
        if (cand[c])
            chosen = c;
    if (r == 0 && chosen < 0)
        r = qimg_error(-EINVAL, "Differencing VHD image names no parent");
    if (r == 0) {
        img->backing_file = cand[chosen];
        cand[chosen] = NULL;
        img->backing_fmt = qimg_strdup("vpc");
        s->parent_by_locator = true;
    }
    for (int c = 0; c < C_COUNT; c++)
        free(cand[c]);
    return r;
}

/* ----------------------------------------------------- a new parent */

int vpc_parent_footer(const char *path, const char *name, uint8_t *footer)
{
    struct qimg_io *io;
    uint64_t size;
    int r = qimg_io_open(&io, path, QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = qimg_io_get_size(io, &size);
    if (r == 0)
        r = vpc_read_footer_io(io, footer, size);
    qimg_io_close(io);
    if (r == -EINVAL)
        return qimg_error(r, "'%s' is not a VHD image: the parent of a differencing VHD "
                          "must be one", name);
    return r;
}

/* one locator: UTF-16LE of text, reserved in whole sectors at *off */
static int add_locator(uint8_t *header, unsigned slot, uint32_t code, const char *text,
                       uint64_t *off, uint8_t **data, size_t *data_len)
{
    size_t max = strlen(text) * 2 + 2, units;   /* UTF-16 never needs more */
    uint8_t *buf CLEANUP_FREE = qimg_xmalloc(2 * max);
    int r = utf8_to_utf16(text, buf, max, false, &units);
    if (r < 0)
        return r;
    size_t len = 2 * units, room = QIMG_MAX(qimg_div_round_up(len, VPC_SECTOR), 1) * VPC_SECTOR;
    if (len > LOCATOR_MAX)
        return qimg_error(-ENAMETOOLONG, "VHD parent name '%s' is too long", text);
    *data = qimg_xrealloc(*data, *data_len + room);
    memset(*data + *data_len, 0, room);
    memcpy(*data + *data_len, buf, len);
    uint8_t *e = header + D_LOCATORS + VPC_LOCATOR_SIZE * slot;
    qimg_put_be32(e, code);
    qimg_put_be32(e + 4, (uint32_t)room);   /* bytes, as Windows writes it */
    qimg_put_be32(e + 8, (uint32_t)len);
    qimg_put_be32(e + 12, 0);
    qimg_put_be64(e + 16, *off);
    *off += room;
    *data_len += room;
    return 0;
}

int vpc_parent_fill(uint8_t *header, const char *path, const char *name, uint64_t data_off,
                    uint8_t **data, size_t *data_len)
{
    uint8_t pf[VPC_FOOTER_SIZE];
    *data = NULL;
    *data_len = 0;
    int r = vpc_parent_footer(path, name, pf);
    if (r < 0)
        return r;
    struct stat st;
    if (stat(path, &st) < 0)
        return qimg_error_errno(-errno, "Could not stat '%s'", path);
    memcpy(header + D_PARENT_UUID, pf + F_UUID, 16);
    int64_t t = (int64_t)st.st_mtime - VPC_EPOCH;
    qimg_put_be32(header + D_PARENT_TIME, t < 0 ? 0 : t > UINT32_MAX ? UINT32_MAX : (uint32_t)t);
    memset(header + D_PARENT_NAME, 0, 2 * VPC_PARENT_NAME_UNITS + VPC_LOCATORS * VPC_LOCATOR_SIZE);

    char *win CLEANUP_FREE = qimg_strdup(name);
    replace_char(win, '/', '\\');
    size_t units;
    r = utf8_to_utf16(win, header + D_PARENT_NAME, VPC_PARENT_NAME_UNITS, true, &units);
    unsigned slot = 0;
    if (r == 0 && name[0] != '/') {
        bool dotted = strncmp(name, "./", 2) == 0 || strncmp(name, "../", 3) == 0;
        char *rel CLEANUP_FREE = qimg_asprintf("%s%s", dotted ? "" : ".\\", win);
        r = add_locator(header, slot++, CODE_W2RU, rel, &data_off, data, data_len);
    }
    char *abs CLEANUP_FREE = name[0] == '/' ? qimg_strdup(name) : realpath(path, NULL);
    if (r == 0 && abs) {
        replace_char(abs, '/', '\\');
        r = add_locator(header, slot++, CODE_W2KU, abs, &data_off, data, data_len);
    }
    if (r < 0) {
        free(*data);
        *data = NULL;
        *data_len = 0;
    }
    return r;
}

/* ------------------------------------------------- the open parent */

static void uuid_text(const uint8_t *u, char *out)
{
    sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
            u[13], u[14], u[15]);
}

int vpc_parent_check(struct qimg_image *img)
{
    const struct vpc_state *s = img->opaque;
    static const uint8_t null_uuid[16];
    /* a parent the user named by options is taken as given */
    if (!s->diff || !s->parent_by_locator || !img->backing || img->backing_opts ||
        img->backing->drv != img->drv || memcmp(s->header + D_PARENT_UUID, null_uuid, 16) == 0)
        return 0;
    const struct vpc_state *p = img->backing->opaque;
    if (memcmp(p->footer + F_UUID, s->header + D_PARENT_UUID, 16) == 0)
        return 0;
    char want[40], have[40];
    uuid_text(s->header + D_PARENT_UUID, want);
    uuid_text(p->footer + F_UUID, have);
    return qimg_error(-EINVAL, "VHD parent '%s' has unique id %s, not %s: it is not the disk "
                      "this differencing disk was made from ('rebase -u' accepts it)",
                      img->backing_file, have, want);
}
