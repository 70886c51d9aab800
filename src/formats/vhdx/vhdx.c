/* qimg - VHDX: the driver (probe, open, close, info, check, create, resize,
 * measure).  The on-disk layout is described in vhdx.h. */
#include <errno.h>
#include <inttypes.h>

#include "vhdx.h"

static const struct qimg_opt_desc vhdx_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size; max of 64TB.", NULL },
    { "log_size", QIMG_OPT_SIZE, "Log size; min 1MB.", "1048576" },
    { "block_size", QIMG_OPT_SIZE, "Block Size; min 1MB, max 256MB. 0 means auto-calculate "
      "based on image size.", "0" },
    { "subformat", QIMG_OPT_STRING, "VHDX format type, can be either 'dynamic' or 'fixed'. "
      "Default is 'dynamic'.", NULL },
    { "block_state_zero", QIMG_OPT_BOOL, "Force use of payload blocks of type 'ZERO'. "
      "Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with "
      "subformat=dynamic.", NULL },
    /* beyond qemu-img: a differencing disk (create -b) */
    { "backing_file", QIMG_OPT_STRING, "File name of the parent image (a VHDX: the new "
      "image is a differencing disk)", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Image format of the parent image (vhdx)", NULL },
    { NULL, 0, NULL, NULL },
};

static int vhdx_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    return len >= 8 && memcmp(buf, "vhdxfile", 8) == 0 ? 100 : 0;
}

static void vhdx_close(struct qimg_image *img);

/* Commit what is pending and leave the log empty. */
static int finish_writes(struct qimg_image *img, struct vhdx_state *s)
{
    pthread_mutex_lock(&img->lock);
    int r = vhdx_bat_commit(img, s);
    if (r == 0 && s->log_guid_set)
        r = vhdx_set_log_guid(img, s, false);
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* The parent as the image layer's backing file: the relative path (with
 * '/' for '\'), else the absolute one without its "\\?\" prefix. */
static void set_backing(struct qimg_image *img, struct vhdx_state *s)
{
    const char *name = s->parent_relative ? s->parent_relative : s->parent_absolute;
    if (!name)
        return;
    if (!s->parent_relative && strncmp(name, "\\\\?\\", 4) == 0)
        name += 4;
    char *b = qimg_strdup(name);
    for (char *p = b; *p; p++)
        if (*p == '\\')
            *p = '/';
    img->backing_file = b;
    img->backing_fmt = qimg_strdup("vhdx");
}

static int open_image(struct qimg_image *img, struct vhdx_state *s, unsigned flags)
{
    uint8_t sig[8];
    int r = qimg_io_get_size(img->file, &s->file_size);
    if (r == 0)
        r = qimg_io_pread(img->file, sig, sizeof sig, 0);
    if (r < 0)
        return r;
    if (memcmp(sig, "vhdxfile", 8) != 0)
        return qimg_error_errno(-EINVAL, "Could not open '%s'", img->filename);
    if ((r = vhdx_read_headers(img, s)) < 0 || (r = vhdx_log_open(img, s, flags)) < 0)
        return r;
    if (s->log_guid_stale && s->writable) {
        r = vhdx_begin_write(img, s, false);
        if (r == 0)
            r = vhdx_set_log_guid(img, s, false);
        if (r < 0)
            return r;
    }
    if (s->pending.nops) {
        if (s->writable) {
            r = vhdx_log_replay(img, s);
            if (r < 0)
                return r;
        } else {
            s->file_size = QIMG_MAX(s->file_size, s->pending.last_offset);
        }
    }
    if ((r = vhdx_read_regions(img, s)) < 0 || (r = vhdx_read_metadata(img, s)) < 0)
        return r;
    img->size = qimg_round_down(s->disk_size, 512);
    int64_t errors = 0;
    r = vhdx_read_bat(img, s, flags & QIMG_OPEN_CHECK, &errors);
    if (r < 0)
        return r;
    if (errors)
        return qimg_error_errno(-EINVAL, "Could not open '%s'", img->filename);
    if (s->has_parent)
        set_backing(img, s);
    return 0;
}

static int vhdx_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    struct vhdx_state *s = qimg_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->alloc_lock, NULL);
    img->opaque = s;
    s->writable = !img->read_only && (flags & QIMG_OPEN_RDWR);
    int r = open_image(img, s, flags);
    if (r < 0) {
        s->writable = false;   /* nothing to finish */
        vhdx_close(img);
    }
    return r;
}

static void vhdx_close(struct qimg_image *img)
{
    struct vhdx_state *s = img->opaque;
    if (!s)
        return;
    if (s->writable && s->session_started && finish_writes(img, s) < 0)
        qimg_warn("ERROR: Failed to write the VHDX metadata: %s", qimg_last_error());
    vhdx_log_free(&s->pending);
    free(s->bat);
    free(s->dirty_bat);
    vhdx_bitmaps_drop(s);
    free(s->log_error);
    free(s->parent_linkage);
    free(s->parent_linkage2);
    free(s->parent_relative);
    free(s->parent_absolute);
    free(s->parent_volume);
    pthread_mutex_destroy(&s->alloc_lock);
    free(s);
    img->opaque = NULL;
}

static int vhdx_flush(struct qimg_image *img)
{
    struct vhdx_state *s = vhdx_state(img);
    pthread_mutex_lock(&img->lock);
    int r = vhdx_bat_commit(img, s);
    pthread_mutex_unlock(&img->lock);
    return r < 0 ? r : qimg_io_flush(img->file);
}

static int vhdx_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    struct vhdx_state *s = vhdx_state(img);
    info->cluster_size = s->block_size;
    info->has_dirty = true;
    info->dirty = s->pending.nops > 0;
    return 0;
}

static bool vhdx_has_zero_init(struct qimg_image *img) { return !vhdx_state(img)->has_parent; }

/* The parent must be the disk the child was made from: its data write
 * GUID is the locator's parent_linkage (or parent_linkage2). */
static int vhdx_parent_check(struct qimg_image *img)
{
    struct vhdx_state *s = vhdx_state(img);
    if (!s->has_parent || !img->backing)
        return 0;
    if (img->backing->drv != img->drv)
        return qimg_error(-EINVAL, "The parent of VHDX '%s' is not a VHDX image", img->filename);
    const struct vhdx_state *p = img->backing->opaque;
    uint8_t want[16], want2[16];
    bool ok = (vhdx_guid_parse(s->parent_linkage, want) == 0 &&
               memcmp(want, p->header + VH_DATA_GUID, 16) == 0) ||
              (s->parent_linkage2 && vhdx_guid_parse(s->parent_linkage2, want2) == 0 &&
               memcmp(want2, p->header + VH_DATA_GUID, 16) == 0);
    if (ok)
        return 0;
    char have[39];
    vhdx_guid_format(p->header + VH_DATA_GUID, have);
    return qimg_error(-EINVAL, "VHDX parent '%s' has data write GUID %s, not %s: it is not the "
                      "disk this differencing disk was made from, or it changed since",
                      img->backing_file, have, s->parent_linkage);
}

/* ------------------------------------------------------------------ check */

static int vhdx_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    struct vhdx_state *s = vhdx_state(img);
    if (s->log_replayed_on_open)
        res->corruptions_fixed++;
    if (s->pending.nops) {
        qimg_check_log("ERROR the log holds updates that were not replayed (they are read "
                       "as replayed; 'check -r all' writes them)");
        res->corruptions++;
    }
    if (s->log_corrupt) {
        qimg_check_log("%s the log is corrupt (%s)", fix ? "Repairing" : "ERROR", s->log_error);
        if (fix) {
            int r = vhdx_set_log_guid(img, s, false);
            if (r < 0) {
                res->check_errors++;
                return r;
            }
            s->log_corrupt = false;
            res->corruptions_fixed++;
        } else {
            res->corruptions++;
        }
    }
    uint64_t size;
    int r = qimg_io_get_size(img->file, &size);
    if (r < 0) {
        res->check_errors++;
        return r;
    }
    res->corruptions += vhdx_check_entries(s, QIMG_MAX(size, s->file_size));
    return 0;
}

/* ----------------------------------------------------------------- create */

/* qemu's automatic block size */
static uint32_t auto_block_size(uint64_t size)
{
    if (size > (32ull << 40))
        return 64u << 20;
    if (size > (100ull << 30))
        return 32u << 20;
    if (size > (1ull << 30))
        return 16u << 20;
    return 8u << 20;
}

struct vhdx_params {
    uint64_t size, log_size, block_size;
    bool fixed, zero_blocks;
    const char *parent_linkage, *relative, *absolute;
};

static int create_params(qimg_opts *opts, uint64_t size, struct vhdx_params *p)
{
    const char *sub = "dynamic";
    uint64_t log_size = VHDX_MiB, block_size = 0;
    bool zero = true;
    int r = 0;
    if (opts) {
        r = qimg_opts_get_size(opts, "log_size", &log_size);
        if (r >= 0)
            r = qimg_opts_get_size(opts, "block_size", &block_size);
        if (r >= 0)
            r = qimg_opts_get_string(opts, "subformat", &sub);
        if (r >= 0)
            r = qimg_opts_get_bool(opts, "block_state_zero", &zero);
    }
    if (r < 0)
        return r;
    if (strcmp(sub, "fixed") != 0 && strcmp(sub, "dynamic") != 0)
        return qimg_error(-EINVAL, "Parameter 'subformat' does not accept value '%s'", sub);
    p->fixed = strcmp(sub, "fixed") == 0;
    p->zero_blocks = zero;
    /* whole logical sectors (qemu rounds up) */
    p->size = qimg_div_round_up(size, 512) * 512;
    if (p->size > VHDX_MAX_DISK_SIZE)
        return qimg_error(-EINVAL, "Image size too large; max of 64TB");
    /* qemu rounds both up to whole MiB and clamps the block size first */
    if (!qimg_round_up_ok(log_size, VHDX_MiB, &log_size) ||
        !qimg_round_up_ok(block_size, VHDX_MiB, &block_size))
        return qimg_error(-EINVAL, "Log size must be smaller than 4 GB");
    if (log_size >= (4ull << 30))
        return qimg_error(-EINVAL, "Log size must be smaller than 4 GB");
    if (log_size < VHDX_MiB)
        return qimg_error(-EINVAL, "Log size must be a multiple of 1 MB");
    if (block_size == 0)
        block_size = auto_block_size(p->size);
    if (block_size > VHDX_MAX_BLOCK)
        block_size = VHDX_MAX_BLOCK;
    if (!qimg_is_pow2(block_size))
        return qimg_error(-EINVAL, "Block size must be a power of two");
    p->log_size = log_size;
    p->block_size = block_size;
    return 0;
}

/* The file identifier: signature, then the creator in UTF-16. */
static int write_file_id(struct qimg_io *io)
{
    static const char creator[] = "QEMU v7.2.22";
    uint8_t id[8 + 512] = { 0 };
    memcpy(id, "vhdxfile", 8);
    for (size_t i = 0; i < sizeof creator - 1; i++)
        qimg_put_le16(id + 8 + 2 * i, (uint8_t)creator[i]);
    return qimg_io_pwrite(io, id, sizeof id, 0);
}

/* Both headers: the same GUIDs, sequence numbers n and n + 1. */
static int write_new_headers(struct qimg_io *io, uint64_t log_size)
{
    uint8_t h[VHDX_HEADER_SIZE] = { 0 };
    uint32_t seq;
    vhdx_guid_generate(h + VH_FILE_GUID);
    memcpy(&seq, h + VH_FILE_GUID, 4);   /* random enough */
    vhdx_guid_generate(h + VH_DATA_GUID);
    memcpy(h, "head", 4);
    qimg_put_le16(h + VH_VERSION, 1);
    qimg_put_le32(h + VH_LOG_LENGTH, (uint32_t)log_size);
    qimg_put_le64(h + VH_LOG_OFFSET, VHDX_MiB);
    int r = 0;
    for (int i = 0; r == 0 && i < 2; i++) {
        qimg_put_le64(h + VH_SEQ, (uint64_t)seq + (uint64_t)i);
        qimg_put_le32(h + VH_CRC, 0);
        qimg_put_le32(h + VH_CRC, vhdx_checksum(h, sizeof h, VH_CRC));
        r = qimg_io_pwrite(io, h, sizeof h, i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
    }
    return r;
}

static int write_region_tables(struct qimg_io *io, uint64_t bat_off, uint64_t bat_len,
                               uint64_t meta_off)
{
    CLEANUP_FREE uint8_t *t = qimg_xcalloc(1, VHDX_REGION_SIZE);
    memcpy(t, "regi", 4);
    qimg_put_le32(t + 8, 2);
    static const char *const guids[2] = {
        "{2dc27766-f623-4200-9d64-115e9bfd4a08}", "{8b7ca206-4790-4b9a-b8fe-575f050f886e}",
    };
    uint64_t offs[2] = { bat_off, meta_off }, lens[2] = { bat_len, VHDX_MiB };
    for (int i = 0; i < 2; i++) {
        uint8_t *e = t + 16 + 32 * i;
        vhdx_guid_parse(guids[i], e);
        qimg_put_le64(e + 16, offs[i]);
        qimg_put_le32(e + 24, (uint32_t)lens[i]);
    }
    qimg_put_le32(t + 4, vhdx_checksum(t, VHDX_REGION_SIZE, 4));
    int r = qimg_io_pwrite(io, t, VHDX_REGION_SIZE, VHDX_REGION1_OFF);
    return r < 0 ? r : qimg_io_pwrite(io, t, VHDX_REGION_SIZE, VHDX_REGION2_OFF);
}

/* The whole BAT region, written in 1 MiB pieces. */
static int write_bat(struct qimg_io *io, const struct vhdx_params *p, uint64_t bat_off,
                     uint64_t bat_len, uint64_t data_off)
{
    uint32_t cr;
    uint64_t pb, entries;
    vhdx_geometry(p->size, (uint32_t)p->block_size, 512, p->parent_linkage != NULL, &cr, &pb,
                  &entries);
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(VHDX_MiB);
    const uint64_t per = VHDX_MiB / 8;
    for (uint64_t piece = 0; piece * VHDX_MiB < bat_len; piece++) {
        memset(buf, 0, VHDX_MiB);
        for (uint64_t k = 0; k < per; k++) {
            uint64_t i = piece * per + k;
            if (i >= entries)
                break;
            if (i % (cr + 1) == cr) {
                /* a differencing disk: each chunk's bitmap, all zeros, after
                 * the header area (see vhdx_alloc_bitmaps) */
                if (p->parent_linkage)
                    qimg_put_le64(buf + 8 * k, (data_off + (i / (cr + 1)) * VHDX_MiB) |
                                                   VHDX_SB_PRESENT);
                continue;
            }
            if (p->parent_linkage)
                continue;
            uint64_t block = i - i / (cr + 1), e = 0;
            if (p->zero_blocks)
                e = VHDX_PAYLOAD_ZERO;
            else if (p->fixed)
                e = (data_off + block * p->block_size) | VHDX_PAYLOAD_FULLY_PRESENT;
            qimg_put_le64(buf + 8 * k, e);
        }
        int r = qimg_io_pwrite(io, buf, VHDX_MiB, bat_off + piece * VHDX_MiB);
        if (r < 0)
            return r;
    }
    return 0;
}

/* qemu's layout: header section, the log at 1 MiB, the BAT after it, the
 * metadata region after that, then 4 MiB free before the first block. */
static void layout(const struct vhdx_params *p, uint64_t *bat_off, uint64_t *bat_len,
                   uint64_t *meta_off, uint64_t *data_off)
{
    uint32_t cr;
    uint64_t pb, entries;
    vhdx_geometry(p->size, (uint32_t)p->block_size, 512, p->parent_linkage != NULL, &cr, &pb,
                  &entries);
    *bat_off = VHDX_MiB + p->log_size;
    *bat_len = qimg_div_round_up(entries * 8, VHDX_MiB) * VHDX_MiB;
    if (*bat_len == 0)
        *bat_len = VHDX_MiB;
    *meta_off = *bat_off + *bat_len;
    *data_off = *meta_off + 5 * VHDX_MiB;
}

static int create_file(struct qimg_io *io, const struct vhdx_params *p)
{
    uint64_t bat_off, bat_len, meta_off, data_off;
    layout(p, &bat_off, &bat_len, &meta_off, &data_off);
    size_t mlen;
    CLEANUP_FREE uint8_t *meta = vhdx_build_metadata((uint32_t)p->block_size, p->size, p->fixed,
                                                     p->parent_linkage, p->relative,
                                                     p->absolute, &mlen);
    int r = write_file_id(io);
    if (r == 0)
        r = write_new_headers(io, p->log_size);
    if (r == 0)
        r = write_region_tables(io, bat_off, bat_len, meta_off);
    /* an all-zero table is left to the file's holes, as qemu leaves it */
    if (r == 0 && (p->zero_blocks || p->fixed || p->parent_linkage))
        r = write_bat(io, p, bat_off, bat_len, data_off);
    if (r == 0)
        r = qimg_io_pwrite(io, meta, mlen, meta_off);
    uint32_t cr;
    uint64_t pb, entries, end = data_off;
    vhdx_geometry(p->size, (uint32_t)p->block_size, 512, p->parent_linkage != NULL, &cr, &pb,
                  &entries);
    if (p->parent_linkage)
        end += qimg_div_round_up(pb, cr) * VHDX_MiB;
    else if (p->fixed)
        end += p->size;
    if (r == 0)
        r = qimg_io_truncate(io, end);
    return r;
}

/* The name the locator records, with Windows separators. */
static char *windows_path(const char *name)
{
    char *w = qimg_strdup(name);
    for (char *p = w; *p; p++)
        if (*p == '/')
            *p = '\\';
    return w;
}

static int vhdx_create(struct qimg_create_ctx *ctx)
{
    struct vhdx_params p = { 0 };
    int r = create_params(ctx->opts, ctx->size, &p);
    if (r < 0)
        return r;
    char linkage[39];
    CLEANUP_FREE char *relative = NULL;
    if (ctx->backing_file) {
        if (ctx->backing_fmt && strcmp(ctx->backing_fmt, "vhdx") != 0)
            return qimg_error(-EINVAL, "The parent of a differencing VHDX must be a VHDX "
                              "(backing format vhdx, not '%s')", ctx->backing_fmt);
        if (p.fixed)
            return qimg_error(-EINVAL, "A differencing VHDX cannot be fixed");
        CLEANUP_FREE char *path = qimg_path_combine(ctx->filename, ctx->backing_file);
        r = vhdx_parent_linkage(path, linkage);
        if (r < 0)
            return r;
        relative = windows_path(ctx->backing_file);
        p.parent_linkage = linkage;
        p.relative = relative;
        p.zero_blocks = false;
    }
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename,
                     QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    r = create_file(io, &p);
    if (r == 0)
        r = qimg_io_flush(io);
    qimg_io_close(io);
    return r;
}

/* qemu-img cannot measure vhdx.  qemu's layout up to the first block,
 * then whole blocks: every one for a fully allocated disk, those block
 * status calls data for the required size (convert may still find zeros
 * in them: an upper bound); a fixed disk without ZERO blocks is its
 * layout and the disk's bytes. */
static int vhdx_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    struct vhdx_params p = { 0 };
    int r = create_params(opts, src ? qimg_size(src) : size, &p);
    if (r < 0)
        return r;
    uint64_t bat_off, bat_len, meta_off, data_off, used = 0;
    layout(&p, &bat_off, &bat_len, &meta_off, &data_off);
    uint64_t blocks = qimg_div_round_up(p.size, p.block_size);
    if (p.fixed && !p.zero_blocks) {
        out->fully_allocated = out->required = data_off + p.size;
        return 0;
    }
    if (src && (r = qimg_count_data_blocks(src, 0, qimg_size(src), p.block_size, &used)) < 0)
        return r;
    /* qemu's fixed layout with ZERO blocks: the disk's bytes are there
     * from the start, yet every block written goes to the end */
    uint64_t base = p.fixed ? data_off + p.size : data_off;
    out->fully_allocated = base + blocks * p.block_size;
    out->required = base + used * p.block_size;
    return 0;
}

const struct qimg_driver qimg_driver_vhdx = {
    .name           = "vhdx",
    .flags          = QIMG_DRV_SUPPORTS_BACKING,
    .create_opts    = vhdx_create_opts,
    .probe          = vhdx_probe,
    .open           = vhdx_open,
    .close          = vhdx_close,
    .create         = vhdx_create,
    .read           = vhdx_read,
    .write          = vhdx_write,
    .write_zeroes   = vhdx_write_zeroes,
    .flush          = vhdx_flush,
    .block_status   = vhdx_block_status,
    .info           = vhdx_info,
    .check          = vhdx_check,
    .resize         = vhdx_resize,
    .measure        = vhdx_measure,
    .has_zero_init  = vhdx_has_zero_init,
    .backing_opened = vhdx_parent_check,
    .change_backing = vhdx_change_backing,
    .make_empty     = vhdx_make_empty,
};
