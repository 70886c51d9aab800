/* qimg - the disk ciphers OpenSSL lacks, through nettle (see
 * crypto-nettle.h).  Nothing cryptographic is computed here: nettle's
 * block ciphers (its nettle_cipher descriptors) run in nettle's ECB, CBC,
 * CTR and XTS helpers; this file keeps the key schedules and makes the
 * per-sector IVs as crypto.c does for OpenSSL. */
#include <errno.h>
#include <string.h>

#include "internal.h"
#include "crypto-nettle.h"

#if defined(HAVE_NETTLE) && defined(HAVE_OPENSSL)

#include "nettle-dl.h"

/* nettle's descriptor of each algorithm (its key size is qemu's). */
static const struct nettle_cipher *descriptor(enum qimg_cipher_alg a)
{
    switch (a) {
    case QIMG_CIPHER_AES_128: return &nettle_aes128;
    case QIMG_CIPHER_AES_192: return &nettle_aes192;
    case QIMG_CIPHER_AES_256: return &nettle_aes256;
    case QIMG_CIPHER_CAST5_128: return &nettle_cast128;
    case QIMG_CIPHER_SERPENT_128: return &nettle_serpent128;
    case QIMG_CIPHER_SERPENT_192: return &nettle_serpent192;
    case QIMG_CIPHER_SERPENT_256: return &nettle_serpent256;
    case QIMG_CIPHER_TWOFISH_128: return &nettle_twofish128;
    case QIMG_CIPHER_TWOFISH_192: return &nettle_twofish192;
    case QIMG_CIPHER_TWOFISH_256: return &nettle_twofish256;
    default: return NULL;
    }
}

bool qimg_nettle_has(enum qimg_cipher_alg a, enum qimg_cipher_mode m)
{
    if (qimg_nettle_load() < 0)
        return false;
    const struct nettle_cipher *d = descriptor(a);
    return d && (m != QIMG_MODE_XTS || d->block_size == XTS_BLOCK_SIZE);
}

/* A key schedule: nettle's context, sized by the descriptor. */
struct schedule {
    void *ctx;
    size_t size;
};

struct qimg_nettle_cipher {
    const struct nettle_cipher *d;
    const struct nettle_cipher *essiv_d;
    enum qimg_cipher_mode mode;
    enum qimg_ivgen_alg ivgen;
    struct schedule enc, dec;     /* the data key (dec: CBC, ECB and XTS) */
    struct schedule tweak;        /* XTS's second key */
    struct schedule essiv;        /* ESSIV's hashed key */
};

static void schedule_set(struct schedule *s, const struct nettle_cipher *d, nettle_set_key_func *set,
                         const uint8_t *key)
{
    s->size = d->context_size;
    s->ctx = qimg_xcalloc(1, s->size);
    set(s->ctx, key);
}

static void schedule_free(struct schedule *s)
{
    qimg_wipe_free(s->ctx, s->size);
}

int qimg_nettle_cipher_new(struct qimg_nettle_cipher **out, enum qimg_cipher_alg alg,
                           enum qimg_cipher_mode mode, enum qimg_ivgen_alg ivgen, int essiv_alg,
                           const uint8_t *essiv_key, const uint8_t *key)
{
    if (!qimg_nettle_has(alg, mode))
        return qimg_error(-ENOTSUP, "Unsupported cipher mode %s", qimg_cipher_mode_name(mode));
    struct qimg_nettle_cipher *c = qimg_xcalloc(1, sizeof *c);
    c->d = descriptor(alg);
    c->mode = mode;
    c->ivgen = ivgen;
    schedule_set(&c->enc, c->d, c->d->set_encrypt_key, key);
    if (mode != QIMG_MODE_CTR)   /* CTR decrypts by encrypting */
        schedule_set(&c->dec, c->d, c->d->set_decrypt_key, key);
    if (mode == QIMG_MODE_XTS)
        schedule_set(&c->tweak, c->d, c->d->set_encrypt_key, key + c->d->key_size);
    if (mode != QIMG_MODE_ECB && essiv_alg >= 0) {
        c->essiv_d = descriptor((enum qimg_cipher_alg)essiv_alg);
        schedule_set(&c->essiv, c->essiv_d, c->essiv_d->set_encrypt_key, essiv_key);
    }
    *out = c;
    return 0;
}

void qimg_nettle_cipher_free(struct qimg_nettle_cipher *c)
{
    if (!c)
        return;
    schedule_free(&c->enc);
    schedule_free(&c->dec);
    schedule_free(&c->tweak);
    schedule_free(&c->essiv);
    free(c);
}

/* One sector in place; iv is the sector's IV (a block), used up. */
static void run_sector(const struct qimg_nettle_cipher *c, bool encrypt, uint8_t *iv, uint8_t *p,
                       size_t n)
{
    const struct nettle_cipher *d = c->d;
    switch (c->mode) {
    case QIMG_MODE_ECB:
        (encrypt ? d->encrypt : d->decrypt)(encrypt ? c->enc.ctx : c->dec.ctx, n, p, p);
        break;
    case QIMG_MODE_CBC:
        if (encrypt)
            cbc_encrypt(c->enc.ctx, d->encrypt, d->block_size, iv, n, p, p);
        else
            cbc_decrypt(c->dec.ctx, d->decrypt, d->block_size, iv, n, p, p);
        break;
    case QIMG_MODE_CTR:
        ctr_crypt(c->enc.ctx, d->encrypt, d->block_size, iv, n, p, p);
        break;
    case QIMG_MODE_XTS:
        if (encrypt)
            xts_encrypt_message(c->enc.ctx, c->tweak.ctx, d->encrypt, iv, n, p, p);
        else
            xts_decrypt_message(c->dec.ctx, c->tweak.ctx, d->decrypt, d->encrypt, iv, n, p, p);
        break;
    default:
        break;
    }
}

void qimg_nettle_cipher_run(const struct qimg_nettle_cipher *c, bool encrypt, uint64_t first_sector,
                            uint64_t iv_step, unsigned sector_size, uint8_t *buf, size_t len)
{
    uint8_t iv[16];
    size_t iv_len = c->d->block_size;
    for (size_t done = 0; done < len; done += sector_size) {
        qimg_crypto_plain_iv(c->ivgen, first_sector + done / sector_size * iv_step, iv, iv_len);
        if (c->essiv_d)
            c->essiv_d->encrypt(c->essiv.ctx, iv_len, iv, iv);
        run_sector(c, encrypt, iv, buf + done, sector_size);
    }
}

#endif /* HAVE_NETTLE && HAVE_OPENSSL */
