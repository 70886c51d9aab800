/* qimg - the luks format: a LUKS1 volume as cryptsetup and qemu write it
 * (luks.h), its payload the guest disk, sector n encrypted with IV n.
 * LUKS2 volumes (cryptsetup's default) are read too: luks2.c.
 *
 * Reads decrypt in the caller's buffer; writes encrypt a copy.  The
 * volume's cipher is immutable after open and each request makes its own
 * OpenSSL context (nettle's key schedules are only read), so requests run
 * in parallel.  A request that does not
 * cover whole 512-byte sectors is widened to them (writes then
 * read-modify-write under the image lock). */
#include <errno.h>
#include <inttypes.h>

#include "luks.h"
#include "luks2.h"

#define CHUNK (1u << 20)

static const struct qimg_opt_desc luks_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "key-secret", QIMG_OPT_STRING, "ID of the secret that provides the keyslot passphrase", NULL },
    { "cipher-alg", QIMG_OPT_STRING, "Name of encryption cipher algorithm", NULL },
    { "cipher-mode", QIMG_OPT_STRING, "Name of encryption cipher mode", NULL },
    { "ivgen-alg", QIMG_OPT_STRING, "Name of IV generator algorithm", NULL },
    { "ivgen-hash-alg", QIMG_OPT_STRING, "Name of IV generator hash algorithm", NULL },
    { "hash-alg", QIMG_OPT_STRING, "Name of encryption hash algorithm", NULL },
    { "iter-time", QIMG_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL },
    { NULL, 0, NULL, NULL },
};

static const struct qimg_opt_desc luks_amend_opts[] = {
    { "state", QIMG_OPT_STRING, "Select new state of affected keyslots (active/inactive)", NULL },
    { "keyslot", QIMG_OPT_NUMBER, "Select a single keyslot to modify explicitly", NULL },
    { "old-secret", QIMG_OPT_STRING, "Select all keyslots that match this password", NULL },
    { "new-secret", QIMG_OPT_STRING, "New secret to set in the matching keyslots. Empty string to erase", NULL },
    { "iter-time", QIMG_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL },
    { NULL, 0, NULL, NULL },
};

struct luks_state {
    struct luks_volume *v;
    uint64_t payload;           /* bytes */
    bool luks2;
};

static struct luks_state *state(struct qimg_image *img) { return img->opaque; }

/* qemu recognises LUKS version 1 only; a LUKS2 volume probes as raw there
 * and here (open it with -f luks). */
static int luks_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    static const uint8_t magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };
    if (len >= 8 && memcmp(buf, magic, 6) == 0 && qimg_be16(buf + 6) == 1)
        return 100;
    return 0;
}

static int luks_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    const char *secret = NULL;
    qimg_opts_get_string(opts, "key-secret", &secret);
    struct luks_store st = { .io = img->file, .base = 0 };
    struct luks_state *s = qimg_xcalloc(1, sizeof *s);
    uint8_t magic[8];
    int r = qimg_io_pread(img->file, magic, sizeof magic, 0);
    if (r == 0 && memcmp(magic, "LUKS\xba\xbe", 6) == 0 && qimg_be16(magic + 6) == 2) {
        s->luks2 = true;
        r = luks2_open_volume(img->file, secret, flags & QIMG_OPEN_NO_IO, &s->v);
    } else if (r == 0) {
        r = luks_open_volume(&st, secret, "", flags & QIMG_OPEN_NO_IO, &s->v);
    }
    uint64_t file_size = 0;
    if (r == 0)
        r = qimg_io_get_size(img->file, &file_size);
    if (r < 0) {
        free(s);
        return r;
    }
    s->payload = (uint64_t)s->v->h.payload_offset * LUKS_SECTOR;
    img->size = file_size > s->payload ? file_size - s->payload : 0;
    if (s->v->payload_size)
        img->size = s->v->payload_size;
    img->opaque = s;
    return 0;
}

static void luks_close(struct qimg_image *img)
{
    struct luks_state *s = state(img);
    if (s)
        luks_volume_free(s->v);
    free(s);
    img->opaque = NULL;
}

/* Whole sectors [off, off+len) read and decrypted into buf. */
static int read_sectors(struct qimg_image *img, uint64_t off, uint8_t *buf, size_t len)
{
    struct luks_state *s = state(img);
    int r = qimg_io_pread(img->file, buf, len, s->payload + off);
    if (r == 0)
        r = luks_crypt_bytes(s->v, false, off, buf, len);
    return r;
}

/* Whole sectors encrypted from buf (left as it was) and written. */
static int write_sectors(struct qimg_image *img, uint64_t off, const uint8_t *buf, size_t len)
{
    struct luks_state *s = state(img);
    uint8_t *bounce = qimg_xmalloc(QIMG_MIN(len, CHUNK));
    int r = 0;
    for (size_t done = 0; r == 0 && done < len;) {
        size_t n = QIMG_MIN(len - done, CHUNK);
        memcpy(bounce, buf + done, n);
        r = luks_crypt_bytes(s->v, true, off + done, bounce, n);
        if (r == 0)
            r = qimg_io_pwrite(img->file, bounce, n, s->payload + off + done);
        done += n;
    }
    free(bounce);
    return r;
}

static unsigned sector_of(struct qimg_image *img)
{
    unsigned ss = state(img)->v->sector_size;
    return ss ? ss : LUKS_SECTOR;
}

static bool sector_aligned(struct qimg_image *img, uint64_t off, size_t len)
{
    return off % sector_of(img) == 0 && len % sector_of(img) == 0;
}

static int luks_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    if (!state(img)->v->cipher)
        return qimg_error(-EINVAL, "Parameter 'key-secret' is required for cipher");
    if (sector_aligned(img, off, len))
        return read_sectors(img, off, buf, len);
    unsigned ss = sector_of(img);
    uint64_t start = qimg_round_down(off, ss);
    size_t span = (size_t)(qimg_div_round_up(off + len, ss) * ss - start);
    uint8_t *tmp = qimg_xmalloc(span);
    int r = read_sectors(img, start, tmp, span);
    if (r == 0)
        memcpy(buf, tmp + (off - start), len);
    free(tmp);
    return r;
}

static int luks_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    if (sector_aligned(img, off, len))
        return write_sectors(img, off, buf, len);
    unsigned ss = sector_of(img);
    uint64_t start = qimg_round_down(off, ss);
    size_t span = (size_t)(qimg_div_round_up(off + len, ss) * ss - start);
    uint8_t *tmp = qimg_xmalloc(span);
    pthread_mutex_lock(&img->lock);
    int r = read_sectors(img, start, tmp, span);
    if (r == 0) {
        memcpy(tmp + (off - start), buf, len);
        r = write_sectors(img, start, tmp, span);
    }
    pthread_mutex_unlock(&img->lock);
    free(tmp);
    return r;
}

static int luks_flush(struct qimg_image *img)
{
    return qimg_io_flush(img->file);
}

/* Everything is data and none of it can be mapped to the file: qemu's
 * map shows "data": true without an offset. */
static int luks_block_status(struct qimg_image *img, uint64_t off, uint64_t len, struct qimg_extent *ext)
{
    ext->length = len;
    ext->flags = QIMG_STATUS_DATA | QIMG_STATUS_ALLOCATED;
    return 0;
}

static int luks_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    struct luks_state *s = state(img);
    info->encrypted = true;
    info->has_dirty = true;
    struct qimg_json *d = qimg_json_object();
    luks_info_fill(&s->v->h, d);
    struct qimg_json *spec = qimg_json_object();
    qimg_json_set(spec, "type", qimg_json_string("luks"));
    qimg_json_set(spec, "data", d);
    info->format_specific = spec;
    return 0;
}

static int luks_create(struct qimg_create_ctx *ctx)
{
    struct luks_create_params p;
    int r = luks_create_params_get(ctx->opts, "", &p);
    if (r < 0)
        return r;
    if (!p.secret_id)
        return qimg_error(-EINVAL, "Parameter 'key-secret' is required for cipher");
    if (!qimg_crypto_available())
        return -ENOTSUP;
    if (strcmp(ctx->prealloc, "off") && strcmp(ctx->prealloc, "falloc") && strcmp(ctx->prealloc, "full") &&
        strcmp(ctx->prealloc, "metadata"))
        return qimg_error(-EINVAL, "Invalid parameter '%s'", ctx->prealloc);
    struct qimg_io *io;
    r = qimg_io_open(&io, ctx->filename, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_NOLOCK);
    if (r < 0)
        return r;
    struct luks_store st = { .io = io };
    uint64_t payload = luks_header_size(&p), end;
    if (!qimg_add_ok(payload, ctx->size, &end))
        r = qimg_error(-EFBIG, "Image size is too large");
    if (r == 0)
        r = qimg_io_truncate(io, end);
    if (r == 0)
        r = luks_format(&st, &p, NULL);
    if (r == 0 && (strcmp(ctx->prealloc, "falloc") == 0 || strcmp(ctx->prealloc, "full") == 0))
        r = qimg_io_preallocate(io, payload, ctx->size, strcmp(ctx->prealloc, "full") == 0);
    qimg_io_close(io);
    return r;
}

static int luks_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    struct luks_state *s = state(img);
    uint64_t end, old;
    if (!qimg_add_ok(size, s->payload, &end))
        return qimg_error(-EFBIG, "Image size is too large");
    int r = qimg_io_get_size(img->file, &old);
    if (r == 0)
        r = qimg_io_truncate(img->file, end);
    if (r == 0 && end > old && (strcmp(prealloc, "falloc") == 0 || strcmp(prealloc, "full") == 0))
        r = qimg_io_preallocate(img->file, old, end - old, strcmp(prealloc, "full") == 0);
    if (r == 0)
        img->size = size;
    return r;
}

/* The header and keyslots plus the whole disk (every byte is written
 * encrypted, there are no holes). */
static int luks_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    struct luks_create_params p;
    int r = luks_create_params_get(opts, "", &p);
    if (r < 0)
        return r;
    if (!p.secret_id)
        return qimg_error(-EINVAL, "Parameter 'key-secret' is required for cipher");
    /* qemu makes the header in memory: the secret and the cipher are checked */
    char *pass = NULL;
    size_t len = 0;
    if ((r = qimg_secret_lookup(p.secret_id, &pass, &len)) < 0)
        return r;
    qimg_wipe_free(pass, len);
    if ((r = luks_create_params_check(&p)) < 0)
        return r;
    uint64_t v = src ? qimg_size(src) : size, total;
    if (!qimg_round_up_ok(v, 512, &v) || !qimg_add_ok(v, luks_header_size(&p), &total))
        return qimg_error(-EFBIG, "Image size is too large");
    out->required = out->fully_allocated = total;
    return 0;
}

static int luks_drv_amend(struct qimg_image *img, qimg_opts *opts, bool force, qimg_progress_fn progress,
                      void *opaque)
{
    struct luks_state *s = state(img);
    if (s->luks2)
        return qimg_error(-ENOTSUP, "qimg cannot amend LUKS2 volumes (use cryptsetup)");
    struct luks_store st = { .io = img->file };
    return luks_amend(&st, s->v, opts, "", force);
}

const struct qimg_driver qimg_driver_luks = {
    .name           = "luks",
    .flags          = QIMG_DRV_FIXED_PLACEMENT,   /* encrypted in parallel by convert */
    .create_opts    = luks_create_opts,
    .amend_opts     = luks_amend_opts,
    .probe          = luks_probe,
    .open           = luks_open,
    .close          = luks_close,
    .create         = luks_create,
    .read           = luks_read,
    .write          = luks_write,
    .flush          = luks_flush,
    .block_status   = luks_block_status,
    .info           = luks_info,
    .resize         = luks_resize,
    .measure        = luks_measure,
    .amend          = luks_drv_amend,
};
