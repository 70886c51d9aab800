/* qimg - MD5 (RFC 1321), for formats that checksum metadata with it
 * (Parallels' format extension).  Not for anything security related. */
#ifndef QIMG_MD5_H
#define QIMG_MD5_H

#include <stddef.h>
#include <stdint.h>

void qimg_md5(const void *data, size_t len, uint8_t digest[16]);

#endif
