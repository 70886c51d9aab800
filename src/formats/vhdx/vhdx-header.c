/* qimg - VHDX: CRC-32C, GUIDs, the two headers and the region table. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include "vhdx.h"

/* ---------------------------------------------------------------- CRC-32C
 * The Castagnoli CRC (polynomial 0x1EDC6F41, bit-reversed 0x82F63B78),
 * initial value and final xor all ones.  Eight tables let the loop take
 * eight bytes a step ("slicing by 8"): the log and region tables are
 * checksummed whole. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* Continue a CRC over buf: start with 0, pass the result on. */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = qimg_le32(p) ^ crc, hi = qimg_le32(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t crc_off)
{
    static const uint8_t zero[4];
    uint32_t c = vhdx_crc32c(0, buf, crc_off);
    c = vhdx_crc32c(c, zero, 4);
    return vhdx_crc32c(c, buf + crc_off + 4, len - crc_off - 4);
}

/* ------------------------------------------------------------------ GUIDs */

/* A random (version 4) GUID in Microsoft's byte order. */
void vhdx_guid_generate(uint8_t *g)
{
    if (getrandom(g, 16, 0) != 16) {
        uint64_t seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)g ^ (uint64_t)clock();
        for (int i = 0; i < 16; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            g[i] = (uint8_t)(seed >> 56);
        }
    }
    g[7] = (uint8_t)((g[7] & 0x0f) | 0x40);   /* version: high nibble of data3 */
    g[8] = (uint8_t)((g[8] & 0x3f) | 0x80);
}

bool vhdx_guid_is_zero(const uint8_t *g)
{
    for (int i = 0; i < 16; i++)
        if (g[i])
            return false;
    return true;
}

/* data1 (u32), data2 and data3 (u16) are little-endian, data4 as stored */
void vhdx_guid_format(const uint8_t *g, char out[39])
{
    snprintf(out, 39, "{%08" PRIx32 "-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x}",
             qimg_le32(g), qimg_le16(g + 4), qimg_le16(g + 6), g[8], g[9], g[10], g[11],
             g[12], g[13], g[14], g[15]);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}", braces optional */
int vhdx_guid_parse(const char *s, uint8_t *g)
{
    uint8_t b[16];
    size_t n = 0;
    bool brace = *s == '{';
    if (brace)
        s++;
    for (int i = 0; i < 36; i++, s++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (*s != '-')
                return -EINVAL;
            continue;
        }
        int hi = hex_digit(*s), lo = hex_digit(s[1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        b[n++] = (uint8_t)(hi << 4 | lo);
        s++;
        i++;
    }
    if ((brace && *s++ != '}') || *s)
        return -EINVAL;
    /* text order is big-endian for the first three fields */
    g[0] = b[3]; g[1] = b[2]; g[2] = b[1]; g[3] = b[0];
    g[4] = b[5]; g[5] = b[4]; g[6] = b[7]; g[7] = b[6];
    memcpy(g + 8, b + 8, 8);
    return 0;
}

/* ---------------------------------------------------------------- headers */

static bool header_valid(const uint8_t *h)
{
    return memcmp(h + VH_SIG, "head", 4) == 0 &&
           qimg_le32(h + VH_CRC) == vhdx_checksum(h, VHDX_HEADER_SIZE, VH_CRC) &&
           qimg_le16(h + VH_VERSION) == 1;
}

static int invalid(struct qimg_image *img)
{
    return qimg_error_errno(-EINVAL, "Could not open '%s'", img->filename);
}

/* The log's place: 1 MiB aligned, after the header section, no overflow.
 * An image without a pending log may name a useless one (qemu reads such
 * files): it is refused only when we would write to it. */
static void check_log_region(struct vhdx_state *s)
{
    uint64_t end;
    s->log_region_ok = s->log_length >= VHDX_MiB && s->log_length % VHDX_MiB == 0 &&
                       s->log_offset >= VHDX_MiB && s->log_offset % VHDX_MiB == 0 &&
                       qimg_add_ok(s->log_offset, s->log_length, &end) && end <= (1ull << 62);
}

int vhdx_read_headers(struct qimg_image *img, struct vhdx_state *s)
{
    uint8_t h[2][VHDX_HEADER_SIZE];
    int r = qimg_io_pread(img->file, h[0], VHDX_HEADER_SIZE, VHDX_HEADER1_OFF);
    if (r == 0)
        r = qimg_io_pread(img->file, h[1], VHDX_HEADER_SIZE, VHDX_HEADER2_OFF);
    if (r < 0)
        return r;
    bool v0 = header_valid(h[0]), v1 = header_valid(h[1]);
    if (!v0 && !v1)
        return qimg_error(-EINVAL, "No valid VHDX header found");
    s->cur_header = !v0 || (v1 && qimg_le64(h[1] + VH_SEQ) > qimg_le64(h[0] + VH_SEQ));
    memcpy(s->header, h[s->cur_header], VHDX_HEADER_SIZE);
    if (qimg_le16(s->header + VH_LOG_VERSION) != 0)
        return invalid(img);
    s->log_offset = qimg_le64(s->header + VH_LOG_OFFSET);
    s->log_length = qimg_le32(s->header + VH_LOG_LENGTH);
    check_log_region(s);
    if (!s->log_region_ok && !vhdx_guid_is_zero(s->header + VH_LOG_GUID))
        return invalid(img);
    if (s->log_region_ok)
        vhdx_range_add(s, s->log_offset, s->log_offset + s->log_length);
    return 0;
}

/* One update: the current header with the next sequence number goes to
 * the other slot, which then becomes current. */
int vhdx_write_header(struct qimg_image *img, struct vhdx_state *s)
{
    uint8_t h[VHDX_HEADER_SIZE];
    memcpy(h, s->header, sizeof h);
    qimg_put_le64(h + VH_SEQ, qimg_le64(h + VH_SEQ) + 1);
    qimg_put_le32(h + VH_CRC, vhdx_checksum(h, sizeof h, VH_CRC));
    int other = !s->cur_header;
    int r = qimg_io_pwrite(img->file, h, sizeof h, other ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        return r;
    memcpy(s->header, h, sizeof h);
    s->cur_header = other;
    return 0;
}

/* Both slots, as the specification recommends. */
static int write_headers(struct qimg_image *img, struct vhdx_state *s)
{
    int r = vhdx_write_header(img, s);
    return r < 0 ? r : vhdx_write_header(img, s);
}

int vhdx_begin_write(struct qimg_image *img, struct vhdx_state *s, bool user_visible)
{
    bool new_data = user_visible && !s->data_guid_changed;
    if (s->session_started && !new_data)
        return 0;
    if (!s->session_started)
        vhdx_guid_generate(s->header + VH_FILE_GUID);
    if (new_data)
        vhdx_guid_generate(s->header + VH_DATA_GUID);
    int r = write_headers(img, s);
    if (r < 0)
        return r;
    s->session_started = true;
    s->data_guid_changed |= new_data;
    return 0;
}

int vhdx_set_log_guid(struct qimg_image *img, struct vhdx_state *s, bool set)
{
    if (set)
        vhdx_guid_generate(s->header + VH_LOG_GUID);
    else
        memset(s->header + VH_LOG_GUID, 0, 16);
    int r = write_headers(img, s);
    if (r == 0)
        s->log_guid_set = set;
    return r;
}

/* ----------------------------------------------------------- region table */

static const uint8_t guid_bat[16] = {
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
};
static const uint8_t guid_metadata[16] = {
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
    0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
};

void vhdx_range_add(struct vhdx_state *s, uint64_t start, uint64_t end)
{
    if (s->nregions < (int)QIMG_ARRAY_SIZE(s->regions))
        s->regions[s->nregions++] = (struct vhdx_range){ start, end };
}

/* The structures registered last are compared first, and only the first
 * overlap is reported, as qemu reports them. */
bool vhdx_range_overlaps(const struct vhdx_state *s, uint64_t start, uint64_t end, bool report)
{
    for (int i = s->nregions - 1; i >= 0; i--) {
        const struct vhdx_range *g = &s->regions[i];
        if (start < g->end && end > g->start) {
            if (report)
                qimg_warn("ERROR: VHDX region %" PRIu64 "-%" PRIu64 " overlaps with region %"
                          PRIu64 "-%" PRIu64, start, end, g->start, g->end);
            return true;
        }
    }
    return false;
}

int vhdx_pread(struct qimg_image *img, struct vhdx_state *s, void *buf, size_t len, uint64_t off)
{
    int r = qimg_io_pread(img->file, buf, len, off);
    if (r == 0 && s->pending.nops)
        vhdx_log_overlay(s, buf, len, off);
    return r;
}

static bool region_table_valid(const uint8_t *t)
{
    return memcmp(t, "regi", 4) == 0 &&
           qimg_le32(t + 4) == vhdx_checksum(t, VHDX_REGION_SIZE, 4) &&
           qimg_le32(t + 8) <= VHDX_MAX_ENTRIES;
}

/* A region: 1 MiB aligned, not in the header section, no overlap. */
static int take_region(struct qimg_image *img, struct vhdx_state *s, const uint8_t *e,
                       uint64_t *off, uint32_t *len)
{
    uint64_t o = qimg_le64(e + 16), end;
    uint32_t l = qimg_le32(e + 24);
    if (*len || o < VHDX_MiB || o % VHDX_MiB || l == 0 || l % VHDX_MiB ||
        !qimg_add_ok(o, l, &end) || end > (1ull << 62))
        return invalid(img);
    if (vhdx_range_overlaps(s, o, end, true))
        return invalid(img);
    vhdx_range_add(s, o, end);
    *off = o;
    *len = l;
    return 0;
}

/* The first copy, or the second when the first is damaged (qemu reads
 * only the first). */
int vhdx_read_regions(struct qimg_image *img, struct vhdx_state *s)
{
    CLEANUP_FREE uint8_t *t = qimg_xmalloc(VHDX_REGION_SIZE);
    int r = vhdx_pread(img, s, t, VHDX_REGION_SIZE, VHDX_REGION1_OFF);
    if (r == 0 && !region_table_valid(t))
        r = vhdx_pread(img, s, t, VHDX_REGION_SIZE, VHDX_REGION2_OFF);
    if (r < 0)
        return r;
    if (!region_table_valid(t))
        return invalid(img);
    uint32_t n = qimg_le32(t + 8);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = t + 16 + 32 * (size_t)i;
        if (memcmp(e, guid_bat, 16) == 0)
            r = take_region(img, s, e, &s->bat_offset, &s->bat_length);
        else if (memcmp(e, guid_metadata, 16) == 0)
            r = take_region(img, s, e, &s->meta_offset, &s->meta_length);
        else if (qimg_le32(e + 28) & 1)
            return qimg_error_errno(-ENOTSUP, "Could not open '%s'", img->filename);
        if (r < 0)
            return r;
    }
    if (!s->bat_length || !s->meta_length)
        return invalid(img);
    return 0;
}
