/* qimg - LUKS2 volumes (cryptsetup's default type), read-only beyond
 * qemu-img: the binary header, the JSON metadata, pbkdf2 keyslots and
 * their af-luks1 areas, a "crypt" segment.  See luks2.c. */
#ifndef QIMG_FORMATS_LUKS2_H
#define QIMG_FORMATS_LUKS2_H

#include "luks.h"

/* Open (no_io: only check the header) and unlock with the secret; the
 * volume's header fields that info shows are filled as for LUKS1 where
 * they exist (payload offset, cipher, hash, uuid). */
int luks2_open_volume(struct qimg_io *io, const char *secret_id, bool no_io, struct luks_volume **out);

#endif
