/* qimg - VHDX: the metadata region (its table and the system items). */
#include <errno.h>
#include <inttypes.h>

#include "vhdx.h"

/* Item GUIDs as stored (Microsoft byte order). */
static const uint8_t guid_file_params[16] = {
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
    0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
};
const uint8_t vhdx_guid_disk_size[16] = {
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
    0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8,
};
static const uint8_t guid_disk_id[16] = {
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
    0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
};
static const uint8_t guid_logical_sector[16] = {
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
    0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f,
};
static const uint8_t guid_physical_sector[16] = {
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
    0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56,
};
static const uint8_t guid_parent_locator[16] = {
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
    0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c,
};

/* table entry flags */
enum { META_IS_USER = 1, META_IS_VIRTUAL_DISK = 2, META_IS_REQUIRED = 4 };
/* the items a new disk gets, in qemu's order: GUID, length, flags */
enum { ITEM_PARAMS, ITEM_SIZE, ITEM_ID, ITEM_LSS, ITEM_PSS, ITEM_PARENT, ITEM_COUNT };
static const struct { const uint8_t *guid; uint32_t flags; } items[ITEM_COUNT] = {
    [ITEM_PARAMS] = { guid_file_params, META_IS_REQUIRED },
    [ITEM_SIZE] = { vhdx_guid_disk_size, META_IS_VIRTUAL_DISK | META_IS_REQUIRED },
    [ITEM_ID] = { guid_disk_id, META_IS_VIRTUAL_DISK | META_IS_REQUIRED },
    [ITEM_LSS] = { guid_logical_sector, META_IS_VIRTUAL_DISK | META_IS_REQUIRED },
    [ITEM_PSS] = { guid_physical_sector, META_IS_VIRTUAL_DISK | META_IS_REQUIRED },
    [ITEM_PARENT] = { guid_parent_locator, META_IS_REQUIRED },
};

struct item_ref { uint32_t off, len; bool found; };

static int invalid(struct qimg_image *img, int err)
{
    return qimg_error_errno(err, "Could not open '%s'", img->filename);
}

/* Where each system item is; every one inside the region. */
static int read_table(struct qimg_image *img, struct vhdx_state *s, struct item_ref *ref)
{
    CLEANUP_FREE uint8_t *t = qimg_xmalloc(VHDX_META_TABLE_SIZE);
    int r = vhdx_pread(img, s, t, VHDX_META_TABLE_SIZE, s->meta_offset);
    if (r < 0)
        return r;
    uint32_t n = qimg_le16(t + 10);
    if (memcmp(t, "metadata", 8) != 0 || n > VHDX_MAX_ENTRIES)
        return invalid(img, -EINVAL);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = t + 32 + 32 * (size_t)i;
        uint32_t off = qimg_le32(e + 16), len = qimg_le32(e + 20), flags = qimg_le32(e + 24);
        if (len && (off < VHDX_META_TABLE_SIZE || len > VHDX_MiB ||
                    !qimg_range_ok(off, len, s->meta_length)))
            return invalid(img, -EINVAL);
        if (flags & META_IS_USER)
            continue;
        int k;
        for (k = 0; k < ITEM_COUNT; k++)
            if (memcmp(e, items[k].guid, 16) == 0)
                break;
        if (k == ITEM_COUNT) {
            if (flags & META_IS_REQUIRED)
                return invalid(img, -ENOTSUP);
            continue;
        }
        if (ref[k].found)
            return invalid(img, -EINVAL);
        ref[k] = (struct item_ref){ off, len, true };
    }
    return 0;
}

/* Read an item of at least need bytes. */
static int read_item(struct qimg_image *img, struct vhdx_state *s, const struct item_ref *ref,
                     void *buf, uint32_t need)
{
    if (ref->len < need)
        return invalid(img, -EINVAL);
    return vhdx_pread(img, s, buf, need, s->meta_offset + ref->off);
}

/* UTF-16LE to UTF-8; NULL when not well formed (or holding a NUL). */
static char *utf16_to_utf8(const uint8_t *p, size_t bytes)
{
    if (bytes % 2)
        return NULL;
    char *out = qimg_xmalloc(bytes / 2 * 3 + 1), *o = out;
    for (size_t i = 0; i < bytes; i += 2) {
        uint32_t c = qimg_le16(p + i);
        if (c >= 0xd800 && c < 0xdc00 && i + 2 < bytes) {
            uint32_t lo = qimg_le16(p + i + 2);
            if (lo < 0xdc00 || lo >= 0xe000)
                goto bad;
            c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        } else if (c >= 0xd800 && c < 0xe000) {
            goto bad;
        }
        if (c == 0)
            goto bad;
        if (c < 0x80) {
            *o++ = (char)c;
        } else if (c < 0x800) {
            *o++ = (char)(0xc0 | c >> 6);
            *o++ = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            *o++ = (char)(0xe0 | c >> 12);
            *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *o++ = (char)(0x80 | (c & 0x3f));
        } else {
            *o++ = (char)(0xf0 | c >> 18);
            *o++ = (char)(0x80 | ((c >> 12) & 0x3f));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *o++ = (char)(0x80 | (c & 0x3f));
        }
    }
    *o = 0;
    return out;
bad:
    free(out);
    return NULL;
}

/* The VHDX parent locator: its type, then key/value pairs of UTF-16 text. */
static int read_parent_locator(struct qimg_image *img, struct vhdx_state *s,
                               const struct item_ref *ref)
{
    static const char *const type = "{b04aefb7-d19e-4a81-b789-25b8e9445913}";
    if (ref->len < 20)
        return invalid(img, -EINVAL);
    CLEANUP_FREE uint8_t *p = qimg_xmalloc(ref->len);
    int r = read_item(img, s, ref, p, ref->len);
    if (r < 0)
        return r;
    uint8_t want[16];
    vhdx_guid_parse(type, want);
    if (memcmp(p, want, 16) != 0)
        return invalid(img, -ENOTSUP);
    uint32_t n = qimg_le16(p + 18);
    if (!qimg_range_ok(20, 12 * (uint64_t)n, ref->len))
        return invalid(img, -EINVAL);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = p + 20 + 12 * (size_t)i;
        uint32_t ko = qimg_le32(e), vo = qimg_le32(e + 4);
        uint32_t kl = qimg_le16(e + 8), vl = qimg_le16(e + 10);
        if (!kl || !vl || !qimg_range_ok(ko, kl, ref->len) || !qimg_range_ok(vo, vl, ref->len))
            return invalid(img, -EINVAL);
        CLEANUP_FREE char *key = utf16_to_utf8(p + ko, kl);
        char *value = utf16_to_utf8(p + vo, vl);
        if (!key || !value) {
            free(value);
            return invalid(img, -EINVAL);
        }
        char **slot = strcmp(key, "parent_linkage") == 0 ? &s->parent_linkage :
                      strcmp(key, "parent_linkage2") == 0 ? &s->parent_linkage2 :
                      strcmp(key, "relative_path") == 0 ? &s->parent_relative :
                      strcmp(key, "absolute_win32_path") == 0 ? &s->parent_absolute :
                      strcmp(key, "volume_path") == 0 ? &s->parent_volume : NULL;
        if (slot && !*slot)
            *slot = value;
        else
            free(value);
    }
    if (!s->parent_linkage || (!s->parent_relative && !s->parent_absolute && !s->parent_volume))
        return invalid(img, -EINVAL);
    return 0;
}

int vhdx_read_metadata(struct qimg_image *img, struct vhdx_state *s)
{
    struct item_ref ref[ITEM_COUNT] = { { 0, 0, false } };
    int r = read_table(img, s, ref);
    if (r < 0)
        return r;
    if (!ref[ITEM_PARAMS].found || !ref[ITEM_SIZE].found || !ref[ITEM_LSS].found ||
        !ref[ITEM_PSS].found)
        return invalid(img, -ENOTSUP);
    uint8_t b[16];
    if ((r = read_item(img, s, &ref[ITEM_PARAMS], b, 8)) < 0)
        return r;
    s->block_size = qimg_le32(b);
    s->leave_allocated = qimg_le32(b + 4) & 1;
    s->has_parent = qimg_le32(b + 4) & 2;
    if (!qimg_is_pow2(s->block_size) || s->block_size < VHDX_MIN_BLOCK ||
        s->block_size > VHDX_MAX_BLOCK)
        return invalid(img, -EINVAL);
    if ((r = read_item(img, s, &ref[ITEM_SIZE], b, 8)) < 0)
        return r;
    s->disk_size = qimg_le64(b);
    if (s->disk_size == 0 || s->disk_size > VHDX_MAX_DISK_SIZE)
        return invalid(img, -EINVAL);
    if ((r = read_item(img, s, &ref[ITEM_LSS], b, 4)) < 0)
        return r;
    s->logical_sector = qimg_le32(b);
    /* qemu takes 512 only; 4096 is the specification's other size */
    if (s->logical_sector != 512 && s->logical_sector != 4096)
        return invalid(img, -ENOTSUP);
    if ((r = read_item(img, s, &ref[ITEM_PSS], b, 4)) < 0)
        return r;
    s->physical_sector = qimg_le32(b);
    if (ref[ITEM_ID].found && (r = read_item(img, s, &ref[ITEM_ID], s->disk_id, 16)) < 0)
        return r;
    if (s->has_parent) {
        if (!ref[ITEM_PARENT].found)
            return invalid(img, -EINVAL);
        r = read_parent_locator(img, s, &ref[ITEM_PARENT]);
    }
    return r;
}

/* ------------------------------------------------------------- writing */

static size_t put_utf16(uint8_t *p, const char *s)
{
    size_t n = 0;
    for (; *s; s++, n += 2)
        qimg_put_le16(p + n, (uint8_t)*s);   /* paths we write are taken byte-wise */
    return n;
}

/* The locator: type, count, the entries, then the strings one after the
 * other.  No parent_linkage2: MS-VHDX 2.6.2.6.3 has parent_linkage hold
 * the parent's DataWriteGuid when a differencing disk is created and says
 * parent_linkage2 is not present then (it is a second identity a reader
 * accepts, which vhdx_parent_check does). */
static size_t build_locator(uint8_t *p, const char *linkage, const char *relative,
                            const char *absolute)
{
    const char *keys[3] = { "parent_linkage", "relative_path", "absolute_win32_path" };
    const char *vals[3] = { linkage, relative, absolute };
    int n = 0;
    vhdx_guid_parse("{b04aefb7-d19e-4a81-b789-25b8e9445913}", p);
    size_t pos = 20 + 12 * 3;
    for (int i = 0; i < 3; i++) {
        if (!vals[i])
            continue;
        uint8_t *e = p + 20 + 12 * n++;
        size_t kl = put_utf16(p + pos, keys[i]);
        qimg_put_le32(e, (uint32_t)pos);
        qimg_put_le16(e + 8, (uint16_t)kl);
        pos += kl;
        size_t vl = put_utf16(p + pos, vals[i]);
        qimg_put_le32(e + 4, (uint32_t)pos);
        qimg_put_le16(e + 10, (uint16_t)vl);
        pos += vl;
    }
    qimg_put_le16(p + 18, (uint16_t)n);
    return pos;
}

size_t vhdx_build_locator(uint8_t *p, const char *linkage, const char *relative)
{
    memset(p, 0, 20 + 36);
    return build_locator(p, linkage, relative, NULL);
}

static void put_entry(uint8_t *t, int i, int item, uint32_t off, uint32_t len)
{
    uint8_t *e = t + 32 + 32 * i;
    memcpy(e, items[item].guid, 16);
    qimg_put_le32(e + 16, off);
    qimg_put_le32(e + 20, len);
    qimg_put_le32(e + 24, items[item].flags);
}

uint8_t *vhdx_build_metadata(uint32_t block_size, uint64_t disk_size, bool fixed,
                             const char *parent_linkage, const char *relative,
                             const char *absolute, size_t *len)
{
    bool parent = parent_linkage != NULL;
    size_t max = VHDX_META_TABLE_SIZE + 40 + (parent ? 20 + 36 + 2 * (64 + 3 * 4096) : 0);
    uint8_t *m = qimg_xcalloc(1, max);
    uint8_t *it = m + VHDX_META_TABLE_SIZE;
    memcpy(m, "metadata", 8);
    qimg_put_le16(m + 10, parent ? 6 : 5);
    put_entry(m, 0, ITEM_PARAMS, VHDX_META_TABLE_SIZE, 8);
    put_entry(m, 1, ITEM_SIZE, VHDX_META_TABLE_SIZE + 8, 8);
    put_entry(m, 2, ITEM_ID, VHDX_META_TABLE_SIZE + 16, 16);
    put_entry(m, 3, ITEM_LSS, VHDX_META_TABLE_SIZE + 32, 4);
    put_entry(m, 4, ITEM_PSS, VHDX_META_TABLE_SIZE + 36, 4);
    qimg_put_le32(it, block_size);
    qimg_put_le32(it + 4, parent ? 2 : fixed ? 1 : 0);
    qimg_put_le64(it + 8, disk_size);
    vhdx_guid_generate(it + 16);
    qimg_put_le32(it + 32, 512);
    qimg_put_le32(it + 36, 512);
    *len = VHDX_META_TABLE_SIZE + 40;
    if (parent) {
        size_t l = build_locator(it + 40, parent_linkage, relative, absolute);
        put_entry(m, 5, ITEM_PARENT, VHDX_META_TABLE_SIZE + 40, (uint32_t)l);
        *len += l;
    }
    return m;
}

/* Change a system item in place (through the log); it must exist with
 * the same length. */
int vhdx_meta_item_update(struct qimg_image *img, struct vhdx_state *s, const uint8_t *guid,
                          const void *value, uint32_t len)
{
    CLEANUP_FREE uint8_t *t = qimg_xmalloc(VHDX_META_TABLE_SIZE);
    int r = vhdx_pread(img, s, t, VHDX_META_TABLE_SIZE, s->meta_offset);
    if (r < 0)
        return r;
    uint32_t n = qimg_le16(t + 10);
    for (uint32_t i = 0; i < n && i < VHDX_MAX_ENTRIES; i++) {
        const uint8_t *e = t + 32 + 32 * (size_t)i;
        if (memcmp(e, guid, 16) != 0 || (qimg_le32(e + 24) & META_IS_USER))
            continue;
        uint32_t off = qimg_le32(e + 16);
        if (qimg_le32(e + 20) != len)
            return qimg_error(-EINVAL, "VHDX metadata item of unexpected length");
        uint64_t abs = s->meta_offset + off, sec = qimg_round_down(abs, VHDX_LOG_SECTOR);
        uint64_t end = qimg_div_round_up(abs + len, VHDX_LOG_SECTOR) * VHDX_LOG_SECTOR;
        size_t nsec = (size_t)((end - sec) / VHDX_LOG_SECTOR);
        CLEANUP_FREE uint8_t *buf = qimg_xmalloc(end - sec);
        r = vhdx_pread(img, s, buf, end - sec, sec);
        if (r < 0)
            return r;
        memcpy(buf + (abs - sec), value, len);
        uint64_t offs[2];
        uint8_t *data[2];
        for (size_t k = 0; k < nsec && k < 2; k++) {
            offs[k] = sec + k * VHDX_LOG_SECTOR;
            data[k] = buf + k * VHDX_LOG_SECTOR;
        }
        return vhdx_log_write_sectors(img, s, offs, data, nsec);
    }
    return qimg_error(-EINVAL, "VHDX metadata item not found");
}
