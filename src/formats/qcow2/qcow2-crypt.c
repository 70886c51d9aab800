/* qimg - qcow2 encryption: LUKS (crypt method 2: a LUKS1 header in
 * clusters named by the full disk encryption header extension, each data
 * sector encrypted with the IV of its host sector) and the legacy AES
 * (method 1: AES-128-CBC, the key the passphrase's first 16 bytes
 * zero-padded, the IV the guest sector number, plain64).  Cipher work is
 * src/formats/luks and src/lib/crypto.h (OpenSSL, nettle).
 *
 * Data is en/decrypted in whole 512-byte sectors on its way to and from
 * the file (qcow2-read.c's runs, qcow2-write.c's writes and copies on
 * write); a guest request that does not cover whole sectors is widened
 * here first, as qemu's 512-byte request alignment for encrypted images
 * does. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2.h"
#include "../luks/luks.h"

struct qcow2_crypt {
    struct luks_volume *luks;            /* method 2 */
    struct qimg_sector_cipher *aes;      /* method 1 */
    pthread_mutex_t rmw_lock;            /* unaligned writes read-modify-write */
};

static const char *method_name(uint32_t m)
{
    return m == QCOW2_CRYPT_AES ? "aes" : "luks";
}

/* encrypt.format given at open must match the header's. */
static int check_format_opt(const struct qcow2_state *s, qimg_opts *opts)
{
    const char *fmt = NULL;
    if (qimg_opts_get_string(opts, "encrypt.format", &fmt) != 1)
        return 0;
    if (s->crypt_method == QCOW2_CRYPT_NONE)
        return qimg_error(-EINVAL, "No encryption in image header, but options specified format '%s'", fmt);
    if (strcmp(fmt, method_name(s->crypt_method)) != 0)
        return qimg_error(-EINVAL, "Header reported '%s' encryption format but options specify '%s'",
                          method_name(s->crypt_method), fmt);
    return 0;
}

static struct luks_store luks_store_of(struct qimg_image *img, const struct qcow2_state *s)
{
    return (struct luks_store){ .io = img->file, .base = s->crypto_header_offset,
                                .limit = s->crypto_header_length };
}

static int open_luks(struct qimg_image *img, struct qcow2_state *s, const char *secret, bool no_io,
                     struct qcow2_crypt *c)
{
    if (!s->has_crypto_ext)
        return qimg_error(-EINVAL, "Missing CRYPTO header for crypt method %" PRIu32, s->crypt_method);
    struct luks_store st = luks_store_of(img, s);
    return luks_open_volume(&st, secret, "encrypt.", no_io, &c->luks);
}

/* The legacy key: the passphrase's first 16 bytes, zero-padded. */
static int open_aes(const char *secret, struct qcow2_crypt *c)
{
    if (!secret)
        return qimg_error(-EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    char *pass = NULL;
    size_t len = 0;
    uint8_t key[16] = { 0 };
    int r = qimg_secret_lookup(secret, &pass, &len);
    if (r < 0)
        return r;
    memcpy(key, pass, QIMG_MIN(len, sizeof key));
    qimg_wipe_free(pass, len);
    r = qimg_sector_cipher_new(&c->aes, QIMG_CIPHER_AES_128, QIMG_MODE_CBC, QIMG_IVGEN_PLAIN64,
                               QIMG_HASH_SHA256, key, sizeof key);
    qimg_wipe(key, sizeof key);
    return r;
}

int qcow2_crypt_open(struct qimg_image *img, struct qcow2_state *s, qimg_opts *opts, unsigned flags)
{
    const char *secret = NULL;
    int r = check_format_opt(s, opts);
    qimg_opts_get_string(opts, "encrypt.key-secret", &secret);
    if (r < 0 || s->crypt_method == QCOW2_CRYPT_NONE)
        return r;
    bool no_io = flags & QIMG_OPEN_NO_IO;
    struct qcow2_crypt *c = qimg_xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->rmw_lock, NULL);
    if (s->crypt_method == QCOW2_CRYPT_LUKS)
        r = open_luks(img, s, secret, no_io, c);
    else if (!no_io)
        r = qimg_crypto_available() ? open_aes(secret, c) : -ENOTSUP;
    s->crypt = c;
    return r;
}

void qcow2_crypt_close(struct qcow2_state *s)
{
    struct qcow2_crypt *c = s->crypt;
    if (!c)
        return;
    luks_volume_free(c->luks);
    qimg_sector_cipher_free(c->aes);
    pthread_mutex_destroy(&c->rmw_lock);
    free(c);
    s->crypt = NULL;
}

bool qcow2_crypt_active(const struct qcow2_state *s)
{
    return s->crypt && (s->crypt->aes || (s->crypt->luks && s->crypt->luks->cipher));
}

int qcow2_crypt_run(const struct qcow2_state *s, bool encrypt, uint64_t host, uint64_t guest,
                    uint8_t *buf, size_t len)
{
    const struct qcow2_crypt *c = s->crypt;
    if (c->luks)
        return luks_crypt(c->luks, encrypt, host / LUKS_SECTOR, buf, len);
    return qimg_sector_cipher_run(c->aes, encrypt, guest / LUKS_SECTOR, LUKS_SECTOR, buf, len);
}

/* Guest data to the file, encrypted (a copy: buf stays as it was). */
int qcow2_data_pwrite(struct qimg_image *img, const void *buf, size_t len, uint64_t host, uint64_t guest)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!qcow2_crypt_active(s))
        return qimg_io_pwrite(s->data_io, buf, len, host);
    const size_t chunk = 1u << 20;
    uint8_t *bounce = qimg_xmalloc(QIMG_MIN(len, chunk));
    int r = 0;
    for (size_t done = 0; r == 0 && done < len; done += chunk) {
        size_t n = QIMG_MIN(len - done, chunk);
        memcpy(bounce, (const uint8_t *)buf + done, n);
        r = qcow2_crypt_run(s, true, host + done, guest + done, bounce, n);
        if (r == 0)
            r = qimg_io_pwrite(s->data_io, bounce, n, host + done);
    }
    free(bounce);
    return r;
}

static bool aligned(uint64_t off, size_t len)
{
    return off % LUKS_SECTOR == 0 && len % LUKS_SECTOR == 0;
}

/* An unaligned request on an encrypted image: the whole sectors around
 * it.  0 when the request is aligned (the caller goes on), 1 when done. */
int qcow2_crypt_read_unaligned(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!qcow2_crypt_active(s) || aligned(off, len))
        return 0;
    uint64_t start = qimg_round_down(off, LUKS_SECTOR);
    uint64_t end = QIMG_MIN(qimg_div_round_up(off + len, LUKS_SECTOR) * LUKS_SECTOR, img->size);
    if (!aligned(start, (size_t)(end - start)))   /* a disk size qemu never makes */
        return qimg_error(-EIO, "The size of an encrypted image must be a multiple of 512 bytes");
    uint8_t *tmp = qimg_xmalloc((size_t)(end - start));
    int r = qcow2_read(img, start, tmp, (size_t)(end - start));
    if (r == 0)
        memcpy(buf, tmp + (off - start), len);
    free(tmp);
    return r < 0 ? r : 1;
}

int qcow2_crypt_write_unaligned(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    struct qcow2_state *s = qcow2_state(img);
    if (!qcow2_crypt_active(s) || aligned(off, len))
        return 0;
    uint64_t start = qimg_round_down(off, LUKS_SECTOR);
    uint64_t end = qimg_div_round_up(off + len, LUKS_SECTOR) * LUKS_SECTOR;
    size_t span = (size_t)(end - start);
    uint8_t *tmp = qimg_xcalloc(1, span);
    if (end > img->size) {
        free(tmp);
        return qimg_error(-EIO, "The size of an encrypted image must be a multiple of 512 bytes");
    }
    pthread_mutex_lock(&s->crypt->rmw_lock);
    uint64_t readable = end - start;
    int r = qcow2_read(img, start, tmp, (size_t)readable);
    if (r == 0) {
        memcpy(tmp + (off - start), buf, len);
        r = qcow2_write(img, start, tmp, span);
    }
    pthread_mutex_unlock(&s->crypt->rmw_lock);
    free(tmp);
    return r < 0 ? r : 1;
}

/* info's "encrypt" object: the format and, for LUKS, its header. */
struct qimg_json *qcow2_crypt_info(const struct qcow2_state *s)
{
    struct qimg_json *e = qimg_json_object();
    qimg_json_set(e, "format", qimg_json_string(method_name(s->crypt_method)));
    if (s->crypt && s->crypt->luks)
        luks_info_fill(&s->crypt->luks->h, e);
    return e;
}

int qcow2_crypt_amend(struct qimg_image *img, qimg_opts *opts, bool force)
{
    struct qcow2_state *s = qcow2_state(img);
    if (s->crypt_method != QCOW2_CRYPT_LUKS)
        return qimg_error(-EINVAL, "Only LUKS encryption options can be amended");
    const char *fmt = NULL;
    if (qimg_opts_get_string(opts, "encrypt.format", &fmt) == 1)
        return qimg_error(-EINVAL, "Amend can't be used to change the qcow2 encryption format");
    struct luks_store st = luks_store_of(img, s);
    return luks_amend(&st, s->crypt->luks, opts, "encrypt.", force);
}
