/* The device under a filesystem (a byte range of an image), the table of
 * filesystem drivers, and derived bytes for reproducible builds. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "fs.h"
#include "internal.h"
#include "util.h"

static int check_range(struct qimg_fs_dev *dev, uint64_t off, uint64_t len)
{
    uint64_t end;
    if (__builtin_add_overflow(off, len, &end) || end > dev->size)
        return qimg_error(-EIO, "filesystem access at offset %" PRIu64 " (+%" PRIu64
                          ") is past the end of its device (%" PRIu64 " bytes)",
                          off, len, dev->size);
    return 0;
}

int qimg_fs_dev_read(struct qimg_fs_dev *dev, uint64_t off, void *buf, size_t len)
{
    int r = check_range(dev, off, len);
    if (r < 0)
        return r;
    return qimg_read(dev->img, dev->offset + off, buf, len);
}

int qimg_fs_dev_write(struct qimg_fs_dev *dev, uint64_t off, const void *buf, size_t len)
{
    if (!dev->writable)
        return qimg_error(-EROFS, "the filesystem is open read-only");
    int r = check_range(dev, off, len);
    if (r < 0)
        return r;
    return qimg_write(dev->img, dev->offset + off, buf, len);
}

int qimg_fs_dev_zero(struct qimg_fs_dev *dev, uint64_t off, uint64_t len)
{
    if (!dev->writable)
        return qimg_error(-EROFS, "the filesystem is open read-only");
    int r = check_range(dev, off, len);
    if (r < 0)
        return r;
    return qimg_write_zeroes(dev->img, dev->offset + off, len, QIMG_ZERO_MAY_UNMAP);
}

int qimg_fs_dev_flush(struct qimg_fs_dev *dev)
{
    return dev->writable ? qimg_flush(dev->img) : 0;
}

/* ------------------------------------------------------------ the drivers */

/* The ext driver needs libext2fs: without it the slot is empty. */
static const struct qimg_fs_driver *fs_driver_at(size_t i)
{
    switch (i) {
#ifdef HAVE_EXT2FS
    case 0: return &qimg_fs_ext;
#endif
    case 1: return &qimg_fs_vfat;
    default: return NULL;
    }
}
#define FS_DRIVER_SLOTS 2

const struct qimg_fs_driver *qimg_fs_driver_by_type(const char *type)
{
    if (!strcmp(type, "ext2") || !strcmp(type, "ext3") || !strcmp(type, "ext4"))
        return fs_driver_at(0);
    if (!strcmp(type, "vfat") || !strcmp(type, "fat"))
        return fs_driver_at(1);
    return NULL;
}

int qimg_fs_probe_open(struct qimg_fs_dev *dev, struct qimg_fs **out)
{
    for (size_t i = 0; i < FS_DRIVER_SLOTS; i++) {
        const struct qimg_fs_driver *drv = fs_driver_at(i);
        if (!drv)
            continue;
        int r = drv->probe(dev);
        if (r < 0)
            return r;
        if (r > 0)
            return drv->open(dev, out);
    }
    return qimg_error(-EINVAL, "no ext2/3/4 or FAT filesystem found");
}

/* ----------------------------------------------------------- derived bytes */

/* splitmix64: a small, well-mixed generator; enough for ids that must only
 * be stable and distinct, not secret. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void qimg_fs_derive_bytes(uint64_t seed, const char *purpose, void *buf, size_t len)
{
    /* FNV-1a of the purpose, mixed into the seed. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)purpose; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    uint64_t state = seed ^ h;
    unsigned char *out = buf;
    while (len > 0) {
        uint64_t v = splitmix64(&state);
        size_t n = len < 8 ? len : 8;
        memcpy(out, &v, n);
        out += n;
        len -= n;
    }
}
