/* qimg - LUKS1 headers and keyslots, shared by the luks format and qcow2's
 * encrypt.format=luks (which keeps the same header in its own clusters).
 *
 * LUKS1 on disk (all integers big-endian), from the LUKS1 On-Disk Format
 * Specification as cryptsetup writes it:
 *   0    magic "LUKS\xba\xbe"           6    version (1)
 *   8    cipher name [32] ("aes")       40   cipher mode [32] ("xts-plain64",
 *                                            "cbc-essiv:sha256")
 *   72   hash spec [32] ("sha256")      104  payload offset (512-byte sectors)
 *   108  key bytes (master key length)  112  master key digest [20]
 *   132  digest salt [32]               164  digest iterations
 *   168  UUID [40]                      208  8 keyslots of 48 bytes:
 *        active (0x00AC71F3, or 0x0000DEAD when disabled), iterations,
 *        salt [32], key material offset (sectors), anti-forensic stripes
 *   592  end of the header
 * A keyslot's key material is the master key split into `stripes` copies
 * (anti-forensic splitter, hash = the header's hash), encrypted with the
 * payload's cipher under a key PBKDF2 derives from the passphrase and the
 * slot's salt, its sectors numbered from 0.  The master key is right when
 * PBKDF2(master key, digest salt, digest iterations) gives the digest.
 * The payload's sector n (512 bytes) is encrypted with IV n.
 *
 * Untrusted headers: a keyslot's PBKDF2 count is what the header says
 * (qemu spends any of it); qimg refuses to spend more than
 * QIMG_LUKS_MAX_ITERS (see luks-header.c) on one derivation. */
#ifndef QIMG_FORMATS_LUKS_H
#define QIMG_FORMATS_LUKS_H

#include "internal.h"
#include "crypto.h"

#define LUKS_SECTOR 512u
#define LUKS_HEADER_LEN 592u
#define LUKS_SLOTS 8
#define LUKS_STRIPES 4000u
#define LUKS_SALT_LEN 32u
#define LUKS_DIGEST_LEN 20u
#define LUKS_UUID_LEN 40u
#define LUKS_SLOT_ACTIVE 0x00AC71F3u
#define LUKS_SLOT_DISABLED 0x0000DEADu
/* qemu places keyslot material and the payload on 4 KiB boundaries */
#define LUKS_ALIGN 4096u

struct luks_slot {
    uint32_t active;
    uint32_t iterations;
    uint8_t salt[LUKS_SALT_LEN];
    uint32_t key_offset;        /* sectors */
    uint32_t stripes;
};

struct luks_header {
    char cipher_name[33], cipher_mode[33], hash_spec[33];
    uint32_t payload_offset;    /* sectors */
    uint32_t key_bytes;
    uint8_t mk_digest[LUKS_DIGEST_LEN];
    uint8_t mk_salt[LUKS_SALT_LEN];
    uint32_t mk_iterations;
    char uuid[LUKS_UUID_LEN + 1];
    struct luks_slot slots[LUKS_SLOTS];
    /* what the names say */
    enum qimg_cipher_alg alg;
    enum qimg_cipher_mode mode;
    enum qimg_ivgen_alg ivgen;
    enum qimg_hash_alg ivhash;      /* essiv only */
    bool has_ivhash;
    enum qimg_hash_alg hash;
};

/* Where the header lives: io at byte base (0 for a luks file; a qcow2
 * file's crypt header clusters). */
struct luks_store {
    struct qimg_io *io;
    uint64_t base;
    uint64_t limit;             /* bytes the header may use (qcow2), 0: any */
};

/* An unlocked LUKS volume. */
struct luks_volume {
    struct luks_header h;
    struct qimg_sector_cipher *cipher;
    uint8_t *master_key;            /* h.key_bytes, wiped on free */
    unsigned sector_size;           /* 0: 512 (LUKS2 may say 4096) */
    uint64_t iv_offset;             /* LUKS2's iv_tweak */
    uint64_t payload_size;          /* LUKS2 segment size; 0: to the end */
};

/* Read and check a header (qemu's checks and messages). */
int luks_header_read(const struct luks_store *st, struct luks_header *h);
/* Parse 592 bytes already read. */
int luks_header_parse(const uint8_t *buf, struct luks_header *h);
/* Unlock with the secret named secret_id (qemu's messages); no_io: only
 * the header (info).  missing_msg: the error when secret_id is NULL
 * ("Parameter 'key-secret' is required for cipher"). */
int luks_open_volume(const struct luks_store *st, const char *secret_id, const char *param_prefix,
                     bool no_io, struct luks_volume **out);
void luks_volume_free(struct luks_volume *v);
/* Payload en/decryption: sector numbers from first_sector. */
int luks_crypt(const struct luks_volume *v, bool encrypt, uint64_t first_sector, uint8_t *buf, size_t len);
/* The same from a byte offset into the payload, in the volume's sectors. */
int luks_crypt_bytes(const struct luks_volume *v, bool encrypt, uint64_t off, uint8_t *buf, size_t len);

/* For luks2.c: the names (cipher_name, cipher_mode, hash_spec, key_bytes
 * set) to algorithms; can this build run them; the splitter; the cap. */
int luks_header_parse_names(struct luks_header *h);
int luks_check_usable(const struct luks_header *h);
int luks_af_merge(enum qimg_hash_alg hash, const uint8_t *split, size_t len, uint32_t stripes,
                  uint8_t *key);
int luks_check_iterations(uint64_t iterations, const char *what, int slot);

/* info's LUKS block (qemu's QCryptoBlockInfoLUKS) into obj. */
void luks_info_fill(const struct luks_header *h, struct qimg_json *obj);

/* Create options as qemu-img takes them (luks: "key-secret", ...; qcow2:
 * "encrypt.key-secret", ...: prefix). */
struct luks_create_params {
    const char *secret_id;
    enum qimg_cipher_alg alg;
    enum qimg_cipher_mode mode;
    enum qimg_ivgen_alg ivgen;
    enum qimg_hash_alg ivhash;
    bool has_ivhash;
    enum qimg_hash_alg hash;
    uint64_t iter_time;
};
/* Take the options under prefix from opts (marking them used). */
int luks_create_params_get(qimg_opts *opts, const char *prefix, struct luks_create_params *p);
/* What qemu checks of the values together before it makes a header:
 * ESSIV's cipher, then whether the algorithm has the mode (cast5 has no
 * XTS).  Whether this build can run the cipher is not asked (measure
 * answers without it). */
int luks_create_params_check(const struct luks_create_params *p);
/* Bytes of header and keyslots (the payload offset) for these params. */
uint64_t luks_header_size(const struct luks_create_params *p);
/* Write a new header and keyslot 0 at st; the volume is returned unlocked
 * when out is not NULL. */
int luks_format(const struct luks_store *st, const struct luks_create_params *p,
                struct luks_volume **out);

/* amend: keyslot changes (state, keyslot, old-secret, new-secret,
 * iter-time under prefix) on an unlocked volume. */
int luks_amend(const struct luks_store *st, struct luks_volume *v, qimg_opts *opts,
               const char *prefix, bool force);

#endif
