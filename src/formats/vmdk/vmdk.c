/* qimg - the VMDK driver: probe, open, guest I/O over the extents, info.
 * The layout is described in vmdk.h (descriptor and extents),
 * descriptor.c (the text), flat.c and sparse.c (the extent kinds). */
#include <errno.h>
#include <inttypes.h>
#include <sys/random.h>
#include <unistd.h>

#include "vmdk.h"

#define VMDK_MAGIC_KDMV "KDMV"
/* the descriptor is read from at most this much of a file (qemu's bound) */
#define VMDK_DESC_READ_MAX ((1u << 20) - 1)
/* CID, parentCID and parentFileNameHint are looked up in this much of the
 * descriptor, and a new CID rewrites this much (qemu's DESC_SIZE) */
#define VMDK_DESC_SIZE (20 * VMDK_SECTOR)
/* the longest parent name qemu keeps */
#define VMDK_MAX_PARENT_NAME 4095
/* the guest disk may not pass this many sectors (qemu's bound: INT64_MAX bytes) */
#define VMDK_MAX_SECTORS ((uint64_t)INT64_MAX / VMDK_SECTOR)

/* Descriptor TYPE words and their kinds.  A new kind adds a line. */
static const struct {
    const char *type;
    const struct vmdk_extent_ops *ops;
} vmdk_kinds[] = {
    { "FLAT", &vmdk_flat_ops },
    { "VMFS", &vmdk_flat_ops },
    { "ZERO", &vmdk_zero_ops },
    { "SPARSE", NULL },        /* by the file's magic: vmdk_magics[] */
    { "VMFSSPARSE", NULL },    /* COWD or KDMV, by the magic, as qemu */
    { "SESPARSE", &vmdk_sesparse_ops },
};

/* Sparse files by their first four bytes.  A new kind adds a line. */
static const struct {
    const char magic[5];
    const struct vmdk_extent_ops *ops;
} vmdk_magics[] = {
    { VMDK_MAGIC_KDMV, &vmdk_sparse_ops },
    { "COWD", &vmdk_cowd_ops },
};

static const struct vmdk_extent_ops *ops_for_magic(const uint8_t *hdr)
{
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(vmdk_magics); i++)
        if (memcmp(hdr, vmdk_magics[i].magic, 4) == 0)
            return vmdk_magics[i].ops;
    return NULL;
}

/* -------------------------------------------------------------- probe */

/* A descriptor: comment lines and blank lines, then "version=1|2|3". */
static int probe_descriptor(const uint8_t *buf, size_t len)
{
    const char *p = (const char *)buf, *end = p + len;
    while (p < end) {
        if (*p == '#') {
            while (p < end && *p != '\n')
                p++;
            p++;
            continue;
        }
        if (*p == ' ') {
            while (p < end && *p == ' ')
                p++;
            if (p < end && *p == '\r')
                p++;
            if (p == end || *p != '\n')
                return 0;
            p++;
            continue;
        }
        static const char *const versions[] = { "version=1", "version=2", "version=3" };
        for (size_t i = 0; i < QIMG_ARRAY_SIZE(versions); i++) {
            if (end - p >= 10 && memcmp(p, versions[i], 9) == 0 && p[9] == '\n')
                return 100;
            if (end - p >= 11 && memcmp(p, versions[i], 9) == 0 && p[9] == '\r' &&
                p[10] == '\n')
                return 100;
        }
        return 0;
    }
    return 0;
}

static int vmdk_probe(const uint8_t *buf, size_t len, uint64_t file_size, const char *filename)
{
    if (len < 4)
        return 0;
    if (memcmp(buf, "KDMV", 4) == 0 || memcmp(buf, "COWD", 4) == 0)
        return 100;
    return probe_descriptor(buf, len);
}

/* ---------------------------------------------------------- open/close */

static void extent_free(struct vmdk_extent *e)
{
    if (e->ops && e->ops->close)
        e->ops->close(e);
    if (e->owns_file && e->file)
        qimg_io_close(e->file);
    free(e->type);
    memset(e, 0, sizeof *e);
}

static void vmdk_close(struct qimg_image *img)
{
    struct vmdk_state *s = img->opaque;
    if (!s)
        return;
    for (size_t i = 0; i < s->nb_extents; i++)
        extent_free(&s->extents[i]);
    free(s->extents);
    free(s->create_type);
    free(s);
    img->opaque = NULL;
}

/* Up to max bytes of io from off on, NUL-terminated (zeros past its end). */
static char *read_text(struct qimg_io *io, uint64_t off, size_t max)
{
    char *buf = qimg_xmalloc(max + 1);
    if (qimg_io_pread(io, buf, max, off) < 0) {
        free(buf);
        return NULL;
    }
    buf[max] = 0;
    return buf;
}

/* The first bytes of a file, as qemu reads a descriptor: at most 1 MiB - 1
 * from off (zeros past the file's end; qemu sees a file's size in whole
 * sectors). */
static char *read_desc(struct qimg_io *io, uint64_t off, uint64_t file_size)
{
    file_size = qimg_div_round_up(file_size, VMDK_SECTOR) * VMDK_SECTOR;
    if (file_size < 4) {
        qimg_error(-EINVAL, "File is too small, not a valid image");
        return NULL;
    }
    char *buf = read_text(io, off, (size_t)QIMG_MIN(file_size, VMDK_DESC_READ_MAX));
    if (!buf)
        qimg_error(-EIO, "Could not read from file");
    return buf;
}

/* Append an extent to s; the caller fills it. */
static struct vmdk_extent *add_extent(struct vmdk_state *s)
{
    s->extents = qimg_xrealloc(s->extents, (s->nb_extents + 1) * sizeof *s->extents);
    struct vmdk_extent *e = &s->extents[s->nb_extents++];
    memset(e, 0, sizeof *e);
    return e;
}

/* Open the kind of e on its file: a sparse kind by its magic. */
static int open_extent(struct qimg_image *img, struct vmdk_extent *e,
                       const struct vmdk_extent_ops *ops)
{
    uint8_t hdr[VMDK_SECTOR] = { 0 };
    uint64_t file_size = 0;
    if (e->file) {
        int r = qimg_io_get_size(e->file, &file_size);
        if (r == 0)
            r = qimg_io_pread(e->file, hdr, sizeof hdr, 0);
        if (r < 0)
            return r;
    }
    if (!ops) {
        ops = ops_for_magic(hdr);
        if (!ops)
            return qimg_error(-EINVAL, "Image not in VMDK format");
    }
    e->ops = ops;
    return ops->open(img, e, hdr, file_size);
}

static const struct vmdk_extent_ops *kind_for_type(const char *type, bool *found)
{
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(vmdk_kinds); i++) {
        if (strcmp(vmdk_kinds[i].type, type) == 0) {
            *found = true;
            return vmdk_kinds[i].ops;
        }
    }
    *found = false;
    return NULL;
}

/* The storage flags of the image's file, for the extents' files. */
static unsigned extent_ioflags(struct qimg_image *img)
{
    return img->file->flags & ~(QIMG_IO_CREATE | QIMG_IO_TRUNC | QIMG_IO_EXCL);
}

static int open_desc_extent(struct qimg_image *img, struct vmdk_state *s, qimg_opts *opts,
                            const struct vmdk_desc_extent *d)
{
    bool found;
    const struct vmdk_extent_ops *ops = kind_for_type(d->type, &found);
    if (!found)
        return qimg_error(-ENOTSUP, "Unsupported extent type '%s'", d->type);
    size_t index = s->nb_extents;
    struct vmdk_extent *e = add_extent(s);
    e->access = d->access;
    e->type = qimg_strdup(d->type);
    e->sectors = d->sectors;
    e->flat_offset = d->flat_offset;
    if (d->filename) {
        char key[32];
        snprintf(key, sizeof key, "extents.%zu", index);
        CLEANUP_OPTS qimg_opts *user = qimg_opts_subtree(opts, key);
        unsigned ioflags = extent_ioflags(img);
        if (d->access != VMDK_ACCESS_RW)
            ioflags &= ~QIMG_IO_RDWR;
        int r = qimg_open_child(img, QIMG_CHILD_EXTENT, d->filename, user, ioflags, &e->file);
        if (r < 0)
            return r;
        if (!e->file)
            return qimg_error(-EINVAL, "Invalid extent file name '%s'", d->filename);
        e->owns_file = true;
    }
    return open_extent(img, e, ops);
}

static const char *const vmdk_desc_types[] = {
    "monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
};

/* A descriptor (a file of its own, or embedded in a sparse file whose
 * header has no capacity): its createType and extents. */
static int open_desc_file(struct qimg_image *img, struct vmdk_state *s, qimg_opts *opts,
                          const char *text)
{
    char *ct = vmdk_desc_value(text, "createType", 127);
    if (!ct)
        return qimg_error(-EINVAL, "invalid VMDK image descriptor");
    bool known = false;
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(vmdk_desc_types); i++)
        known |= strcmp(ct, vmdk_desc_types[i]) == 0;
    if (!known) {
        int r = qimg_error(-ENOTSUP, "Unsupported image type '%s'", ct);
        free(ct);
        return r;
    }
    free(s->create_type);
    s->create_type = ct;
    struct vmdk_desc_extent *x;
    size_t n;
    int r = vmdk_desc_extents(text, &x, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n && r == 0; i++)
        r = open_desc_extent(img, s, opts, &x[i]);
    vmdk_desc_extents_free(x, n);
    return r;
}

/* The image's own file is a sparse extent: a monolithic disk, or (no
 * capacity, a descriptor offset) a descriptor in a sparse file's
 * clothing. */
static int open_sparse_image(struct qimg_image *img, struct vmdk_state *s, qimg_opts *opts,
                             const uint8_t *hdr, uint64_t file_size)
{
    if (memcmp(hdr, VMDK_MAGIC_KDMV, 4) == 0 && qimg_le64(hdr + 12) == 0) {
        uint64_t desc_sector = qimg_le64(hdr + 28);
        if (desc_sector) {
            if (desc_sector > UINT64_MAX / VMDK_SECTOR)
                return qimg_error(-EINVAL, "Invalid descriptor offset");
            CLEANUP_FREE char *text = read_desc(img->file, desc_sector * VMDK_SECTOR, file_size);
            if (!text)
                return -EINVAL;
            s->desc_offset = 0;
            return open_desc_file(img, s, opts, text);
        }
    }
    struct vmdk_extent *e = add_extent(s);
    e->access = VMDK_ACCESS_RW;
    e->file = img->file;
    int r = open_extent(img, e, NULL);
    if (r < 0)
        return r;
    /* qemu names no type for a COWD file opened as the image */
    s->create_type = qimg_strdup(e->ops == &vmdk_cowd_ops ? "" :
                                 e->compressed ? "streamOptimized" : "monolithicSparse");
    s->desc_offset = VMDK_SECTOR;
    return 0;
}

/* The guest offsets of the extents; the disk's size. */
static int place_extents(struct qimg_image *img, struct vmdk_state *s)
{
    uint64_t start = 0;
    for (size_t i = 0; i < s->nb_extents; i++) {
        s->extents[i].start = start;
        if (!qimg_add_ok(start, s->extents[i].sectors, &start) || start > VMDK_MAX_SECTORS)
            return qimg_error(-EFBIG, "VMDK disk too large");
    }
    img->size = start * VMDK_SECTOR;
    return 0;
}

/* qemu's message for an open that fails without one of its own */
static int open_failed(struct qimg_image *img)
{
    return qimg_error(-EINVAL, "Could not open '%s': Invalid argument", img->filename);
}

/* parentFileNameHint names the parent (always a vmdk, as in qemu). */
static int open_parent_name(struct qimg_image *img, const char *desc)
{
    const char *p = strstr(desc, "parentFileNameHint");
    if (!p)
        return 0;
    size_t skip = strlen("parentFileNameHint") + 2;
    if (strnlen(p, skip) < skip)
        return open_failed(img);
    p += skip;
    const char *end = strchr(p, '"');
    if (!end || end - p > VMDK_MAX_PARENT_NAME)
        return open_failed(img);
    img->backing_file = qimg_xmalloc((size_t)(end - p) + 1);
    memcpy(img->backing_file, p, (size_t)(end - p));
    img->backing_file[end - p] = 0;
    img->backing_fmt = qimg_strdup("vmdk");
    return 0;
}

/* What qemu reads from the start of the descriptor: the parent's name and
 * the two content ids. */
static int read_desc_fields(struct qimg_image *img, struct vmdk_state *s)
{
    CLEANUP_FREE char *desc = read_text(img->file, s->desc_offset, VMDK_DESC_SIZE - 1);
    if (!desc)
        return qimg_error(-EIO, "Could not read the VMDK descriptor");
    int r = open_parent_name(img, desc);
    if (r < 0)
        return r;
    if (vmdk_desc_cid(desc, false, &s->cid) < 0 || vmdk_desc_cid(desc, true, &s->parent_cid) < 0)
        /* qemu's words, the file's name twice */
        return qimg_error(-EINVAL, "Could not open '%s': %s", img->file->filename,
                          strerror(EINVAL));
    return 0;
}

static int vmdk_open(struct qimg_image *img, qimg_opts *opts, unsigned flags)
{
    uint64_t file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return r;
    CLEANUP_FREE char *buf = read_desc(img->file, 0, file_size);
    if (!buf)
        return -EINVAL;
    struct vmdk_state *s = qimg_xcalloc(1, sizeof *s);
    img->opaque = s;
    const uint8_t *hdr = (const uint8_t *)buf;
    if (ops_for_magic(hdr) || memcmp(hdr, "COWD", 4) == 0) {
        r = open_sparse_image(img, s, opts, hdr, file_size);
    } else {
        s->desc_offset = 0;
        r = open_desc_file(img, s, opts, buf);
    }
    if (r == 0)
        r = place_extents(img, s);
    if (r == 0)
        r = read_desc_fields(img, s);
    if (r < 0)
        vmdk_close(img);
    return r;
}

/* ------------------------------------------------------------- guest I/O */

/* The extent holding guest sector `sector` (extents are in guest order). */
static struct vmdk_extent *find_extent(struct vmdk_state *s, uint64_t sector)
{
    size_t lo = 0, hi = s->nb_extents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct vmdk_extent *e = &s->extents[mid];
        if (sector < e->start)
            hi = mid;
        else if (sector - e->start >= e->sectors)
            lo = mid + 1;
        else
            return e;
    }
    return NULL;
}

/* Cut [off, off+len) at extent boundaries: *e and the bytes of it from off. */
static int extent_at(struct qimg_image *img, uint64_t off, uint64_t len,
                     struct vmdk_extent **e, uint64_t *in_extent, uint64_t *n)
{
    *e = find_extent(img->opaque, off / VMDK_SECTOR);
    if (!*e)
        return qimg_error(-EIO, "Input/output error");
    *in_extent = off - (*e)->start * VMDK_SECTOR;
    *n = QIMG_MIN(len, (*e)->sectors * VMDK_SECTOR - *in_extent);
    return 0;
}

static int no_access(void)
{
    return qimg_error(-EACCES, "Permission denied");
}

int vmdk_read_unallocated(struct qimg_image *img, struct vmdk_extent *e, uint64_t off,
                          uint8_t *buf, size_t len)
{
    struct vmdk_state *s = img->opaque;
    if (!img->backing) {
        memset(buf, 0, len);
        return 0;
    }
    /* a parent changed after this disk was made invalidates it (qemu) */
    if (!__atomic_load_n(&s->cid_checked, __ATOMIC_ACQUIRE)) {
        struct qimg_image *p = img->backing;
        if (p->drv == img->drv) {
            struct vmdk_state *ps = p->opaque;
            if (ps->cid != s->parent_cid)
                return qimg_error(-EINVAL, "Invalid argument");
        }
        __atomic_store_n(&s->cid_checked, true, __ATOMIC_RELEASE);
    }
    return qimg_read_backing(img, e->start * VMDK_SECTOR + off, buf, len);
}

static int vmdk_read(struct qimg_image *img, uint64_t off, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        struct vmdk_extent *e;
        uint64_t in = 0, n = 0;
        int r = extent_at(img, off, len, &e, &in, &n);
        if (r < 0)
            return r;
        if (e->access == VMDK_ACCESS_NOACCESS)
            return no_access();
        r = e->ops->read(img, e, in, p, (size_t)n);
        if (r < 0)
            return r;
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return 0;
}

static int vmdk_block_status(struct qimg_image *img, uint64_t off, uint64_t len,
                             struct qimg_extent *ext)
{
    struct vmdk_extent *e;
    uint64_t in = 0, n = 0;
    int r = extent_at(img, off, len, &e, &in, &n);
    if (r < 0)
        return r;
    if (e->access == VMDK_ACCESS_NOACCESS)
        return no_access();
    ext->host_file = NULL;
    ext->host_offset = 0;
    return e->ops->block_status(img, e, in, n, ext);
}

/* A new CID after the first write since open, as qemu marks a changed
 * disk: the text from "CID=" up to "parentCID" is replaced, and the
 * descriptor written back: an embedded one's 10 KiB, a descriptor file
 * whole, padded to a sector. */
static int update_cid(struct qimg_image *img, struct vmdk_state *s)
{
    if (__atomic_load_n(&s->cid_updated, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&img->lock);
    int r = 0;
    uint64_t size = VMDK_DESC_SIZE;
    if (s->desc_offset == 0) {
        r = qimg_io_get_size(img->file, &size);
        size = qimg_div_round_up(size, VMDK_SECTOR) * VMDK_SECTOR;
        if (r == 0 && size > (16u << 20))
            r = qimg_error(-EFBIG, "VMDK description file too big");
        if (r == 0 && size == 0)
            r = qimg_error(-EINVAL, "Invalid argument");
    }
    if (!s->cid_updated && r == 0) {
        CLEANUP_FREE char *desc = read_text(img->file, s->desc_offset, (size_t)size - 1);
        const char *parent = desc ? strstr(desc, "parentCID") : NULL;
        char *cid = desc ? strstr(desc, "CID") : NULL;
        if (!desc)
            r = qimg_error(-EIO, "Could not read the VMDK descriptor");
        else if (!parent)
            r = qimg_error(-EINVAL, "Invalid argument");
        if (r == 0 && cid && cid + 4 < desc + size) {
            CLEANUP_FREE char *tail = qimg_strdup(parent);
            uint32_t v = vmdk_random_cid();
            size_t room = (size_t)(desc + size - (cid + 4));
            snprintf(cid + 4, room, "%" PRIx32 "\n", v);
            size_t used = strlen(desc);
            snprintf(desc + used, (size_t)size - used, "%s", tail);
            s->cid = v;
        }
        if (r == 0)
            r = qimg_io_pwrite(img->file, desc, (size_t)size, s->desc_offset);
        if (r == 0)
            r = qimg_io_flush(img->file);
        if (r == 0)
            __atomic_store_n(&s->cid_updated, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

static int read_only_extent(void)
{
    return qimg_error(-EACCES, "Permission denied");
}

static int vmdk_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        struct vmdk_extent *e;
        uint64_t in = 0, n = 0;
        int r = extent_at(img, off, len, &e, &in, &n);
        if (r < 0)
            return r;
        if (e->access != VMDK_ACCESS_RW || !e->ops->write)
            return read_only_extent();
        r = e->ops->write(img, e, in, p, (size_t)n);
        if (r < 0)
            return r;
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return update_cid(img, img->opaque);
}

/* Zeroed grains where every piece can take them (asked first, as qemu's
 * dry run), else -ENOTSUP: the zeros are written as data. */
static int vmdk_write_zeroes(struct qimg_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    for (int dry = 1; dry >= 0; dry--) {
        uint64_t o = off, left = len;
        while (left > 0) {
            struct vmdk_extent *e;
            uint64_t in = 0, n = 0;
            int r = extent_at(img, o, left, &e, &in, &n);
            if (r < 0)
                return r;
            if (e->access != VMDK_ACCESS_RW)
                return read_only_extent();
            r = e->ops->write_zeroes ? e->ops->write_zeroes(img, e, in, n, dry) : -ENOTSUP;
            if (r < 0)
                return r;
            o += n;
            left -= n;
        }
    }
    return update_cid(img, img->opaque);
}

static int vmdk_flush(struct qimg_image *img)
{
    struct vmdk_state *s = img->opaque;
    int r = qimg_io_flush(img->file);
    for (size_t i = 0; i < s->nb_extents && r == 0; i++) {
        struct vmdk_extent *e = &s->extents[i];
        if (e->ops->flush)
            r = e->ops->flush(img, e);
        if (r == 0 && e->file && e->file != img->file)
            r = qimg_io_flush(e->file);
    }
    return r;
}

/* convert -c, and every convert to a streamOptimized disk: grains are
 * compressed on convert's workers (stream.c); other sparse disks store
 * them as they are (-ENOSPC), as qemu-img writes them. */
static int vmdk_compress(struct qimg_image *img, const void *buf, size_t len, void *out,
                         size_t *out_len)
{
    struct vmdk_state *s = img->opaque;
    if (!s->nb_extents || !s->extents[0].compressed)
        return -ENOSPC;
    uint64_t cluster = s->extents[0].cluster_size;
    return vmdk_stream_compress(buf, len, out, (size_t)QIMG_MIN(2 * cluster,
                                vmdk_stream_bound(cluster)), out_len);
}

static int vmdk_write_compressed(struct qimg_image *img, uint64_t off, const void *data,
                                 size_t len)
{
    struct vmdk_extent *e;
    uint64_t in = 0, n = 0;
    int r = extent_at(img, off, 1, &e, &in, &n);
    if (r < 0)
        return r;
    if (e->access != VMDK_ACCESS_RW || !e->ops->write)
        return read_only_extent();
    if (!e->compressed)
        return qimg_error(-EINVAL, "%s", strerror(EINVAL));
    r = vmdk_stream_write_compressed(img, e, in, data, len);
    return r < 0 ? r : update_cid(img, img->opaque);
}

/* The descriptor with extent `index`'s new size (and the geometry), new
 * extent lines after it (add_lines, or NULL). */
static int rewrite_descriptor(struct qimg_image *img, struct vmdk_state *s, size_t index,
                              uint64_t sectors, const char *add_lines)
{
    uint64_t file_size;
    int r = qimg_io_get_size(img->file, &file_size);
    if (r < 0)
        return r;
    size_t room = s->desc_offset ? VMDK_DESC_SIZE : (size_t)QIMG_MIN(file_size, VMDK_DESC_READ_MAX);
    CLEANUP_FREE char *text = read_text(img->file, s->desc_offset, room);
    if (!text)
        return qimg_error(-EIO, "Could not read the VMDK descriptor");
    CLEANUP_FREE char *resized = vmdk_desc_resized(text, index, sectors, img->size);
    if (!resized && !add_lines)
        return 0;      /* no line to update: the extents say it all */
    if (!resized)
        return qimg_error(-EINVAL, "The VMDK descriptor has no line for extent %zu", index);
    CLEANUP_FREE char *out = add_lines ? vmdk_desc_add_extents(resized, index, add_lines)
                                       : qimg_strdup(resized);
    if (!out)
        return qimg_error(-EINVAL, "The VMDK descriptor has no line for extent %zu", index);
    size_t len = strlen(out);
    if (s->desc_offset && len >= room)
        return qimg_error(-ENOSPC, "The VMDK descriptor does not fit in its sectors");
    r = qimg_io_pwrite(img->file, out, len, s->desc_offset);
    if (r == 0 && !s->desc_offset)
        r = qimg_io_truncate(img->file, len);
    return r;
}

#define SPLIT_SECTORS ((2ull << 30) / VMDK_SECTOR)   /* a twoGbMaxExtent extent */

/* The image's name without its directory and extension, and the
 * extension, as the extents of a split disk are named after it. */
static void name_parts(const char *filename, char **prefix, char **ext)
{
    const char *base = strrchr(filename, '/');
    base = base ? base + 1 : filename;
    const char *dot = strrchr(base, '.');
    *prefix = dot ? strndup(base, (size_t)(dot - base)) : qimg_strdup(base);
    *ext = qimg_strdup(dot ? dot : "");
}

/* A twoGbMaxExtent disk grown past its last extent's 2 GiB: new extent
 * files of 2 GiB (the last one less) after it, named as VMware and
 * qemu-img name a split disk's extents ("NAME-s004.vmdk", "NAME-f004.vmdk":
 * the descriptor's name, the extent's number from 1), each created anew
 * (an existing file of that name is an error, never overwritten); their
 * lines into *lines. */
static int add_split_files(struct qimg_image *img, struct vmdk_state *s, uint64_t sectors,
                           bool flat, bool zeroed_grain, struct qimg_strbuf *lines,
                           struct vmdk_desc_extent **made, size_t *nmade)
{
    CLEANUP_FREE char *prefix = NULL, *ext = NULL;
    name_parts(img->filename, &prefix, &ext);
    *made = NULL;
    *nmade = 0;
    for (size_t idx = s->nb_extents + 1; sectors > 0; idx++) {
        if (idx > 999)
            return qimg_error(-EFBIG, "A %s disk has at most 999 extents", s->create_type);
        uint64_t cur = QIMG_MIN(sectors, SPLIT_SECTORS);
        char *rel = qimg_asprintf("%s-%c%03zu%s", prefix, flat ? 'f' : 's', idx, ext);
        CLEANUP_FREE char *path = qimg_image_resolve_name(img, rel);
        int r = path ? vmdk_new_extent_file(path, cur * VMDK_SECTOR, flat, zeroed_grain)
                     : -EINVAL;
        if (r < 0) {
            r = qimg_error(r, "Could not create the VMDK extent '%s': %s", rel, strerror(-r));
            free(rel);
            return r;
        }
        *made = qimg_xrealloc(*made, (*nmade + 1) * sizeof **made);
        struct vmdk_desc_extent *d = &(*made)[(*nmade)++];
        memset(d, 0, sizeof *d);
        d->access = VMDK_ACCESS_RW;
        d->sectors = cur;
        snprintf(d->type, sizeof d->type, "%s", flat ? "FLAT" : "SPARSE");
        d->filename = rel;
        if (flat)
            qimg_strbuf_addf(lines, "RW %" PRIu64 " FLAT \"%s\" 0\n", cur, rel);
        else
            qimg_strbuf_addf(lines, "RW %" PRIu64 " SPARSE \"%s\"\n", cur, rel);
        sectors -= cur;
    }
    return 0;
}

/* Grow a twoGbMaxExtent disk past its last extent: that one to 2 GiB,
 * then new extents (add_split_files), the descriptor, and the new extents
 * opened.  A crash before the descriptor is written leaves the disk as it
 * was (with unused files beside it). */
static int grow_split(struct qimg_image *img, struct vmdk_state *s, uint64_t total)
{
    size_t last = s->nb_extents - 1;
    struct vmdk_extent *e = &s->extents[last];
    bool flat = e->ops == &vmdk_flat_ops;
    if (!flat && e->ops != &vmdk_sparse_ops)
        return qimg_error(-ENOTSUP, "Growing a VMDK whose last extent is %s is not supported",
                          e->type ? e->type : "this one");
    if (e->sectors > SPLIT_SECTORS)
        return qimg_error(-ENOTSUP, "The last extent of this %s disk is larger than 2 GiB",
                          s->create_type);
    uint64_t first_new = e->start + SPLIT_SECTORS;
    struct qimg_strbuf lines = { 0 };
    struct vmdk_desc_extent *made = NULL;
    size_t nmade = 0;
    int r = add_split_files(img, s, total - first_new, flat,
                            !flat && vmdk_sparse_zeroed_grain(e), &lines, &made, &nmade);
    if (r == 0 && e->sectors < SPLIT_SECTORS)
        r = e->ops->grow(img, e, SPLIT_SECTORS);
    if (r < 0) {
        /* the disk stays as it was: the new files go */
        for (size_t i = 0; i < nmade; i++) {
            CLEANUP_FREE char *path = qimg_image_resolve_name(img, made[i].filename);
            if (path)
                unlink(path);
        }
    }
    if (r == 0) {
        e->sectors = SPLIT_SECTORS;
        img->size = total * VMDK_SECTOR;
        r = rewrite_descriptor(img, s, last, SPLIT_SECTORS, lines.s);
    }
    for (size_t i = 0; r == 0 && i < nmade; i++)
        r = open_desc_extent(img, s, NULL, &made[i]);
    if (r == 0)
        r = place_extents(img, s);
    vmdk_desc_extents_free(made, nmade);
    free(lines.s);
    return r;
}

/* Growing, beyond qemu-img (which resizes no vmdk): the last extent takes
 * the new sectors (a twoGbMaxExtent disk's up to its 2 GiB, then new
 * extents), then the descriptor says so.  Shrinking is refused with
 * qemu-img's words. */
static int vmdk_resize(struct qimg_image *img, uint64_t size, const char *prealloc, bool shrink)
{
    struct vmdk_state *s = img->opaque;
    if (size < img->size || !s->nb_extents)
        return qimg_error(-ENOTSUP, "Image format driver does not support resize");
    if (prealloc && strcmp(prealloc, "off") != 0)
        return qimg_error(-ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
    struct vmdk_extent *e = &s->extents[s->nb_extents - 1];
    uint64_t bytes;
    if (!qimg_round_up_ok(size, VMDK_SECTOR, &bytes) || bytes / VMDK_SECTOR > VMDK_MAX_SECTORS)
        return qimg_error(-EFBIG, "Image size too large");
    uint64_t sectors = bytes / VMDK_SECTOR - e->start;
    if (sectors == e->sectors)
        return 0;
    if (!e->ops->grow || e->access != VMDK_ACCESS_RW)
        return qimg_error(-ENOTSUP, "Growing a VMDK whose last extent is %s is not supported",
                          e->type ? e->type : "this one");
    pthread_mutex_lock(&img->lock);
    int r;
    if (strncmp(s->create_type, "twoGbMaxExtent", 14) == 0 && sectors > SPLIT_SECTORS) {
        r = grow_split(img, s, bytes / VMDK_SECTOR);
    } else {
        r = e->ops->grow(img, e, sectors);
        if (r == 0) {
            img->size = bytes;
            r = rewrite_descriptor(img, s, s->nb_extents - 1, sectors, NULL);
        }
    }
    pthread_mutex_unlock(&img->lock);
    return r;
}

/* qemu's check: each extent's grains (no repairs).  The first problem
 * fails the check with one corruption counted. */
static int vmdk_check(struct qimg_image *img, struct qimg_check_result *res, unsigned fix)
{
    struct vmdk_state *s = img->opaque;
    if (fix)
        return -ENOTSUP;
    for (size_t i = 0; i < s->nb_extents; i++) {
        struct vmdk_extent *e = &s->extents[i];
        if (e->access == VMDK_ACCESS_NOACCESS || !e->ops->check)
            continue;
        int r = e->ops->check(img, e, res);
        if (r < 0) {
            res->corruptions++;
            return r;
        }
    }
    return 0;
}

/* Flat extents on files that read as zeros, sparse ones always. */
static bool vmdk_has_zero_init(struct qimg_image *img)
{
    return true;
}

static void vmdk_info_extents(struct vmdk_state *s, struct qimg_json *d)
{
    struct qimg_json *list = qimg_json_array();
    for (size_t i = 0; i < s->nb_extents; i++) {
        struct vmdk_extent *e = &s->extents[i];
        struct qimg_json *x = qimg_json_object();
        if (e->compressed)
            qimg_json_set(x, "compressed", qimg_json_bool(true));
        qimg_json_set(x, "virtual-size", qimg_json_int((int64_t)(e->sectors * VMDK_SECTOR)));
        qimg_json_set(x, "filename", qimg_json_string(e->file ? e->file->filename : ""));
        if (e->cluster_size)
            qimg_json_set(x, "cluster-size", qimg_json_int((int64_t)e->cluster_size));
        qimg_json_set(x, "format", qimg_json_string(e->type ? e->type : ""));
        qimg_json_append(list, x);
    }
    qimg_json_set(d, "extents", list);
}

/* The descriptor's file and every extent's file, each once. */
static int64_t allocated_size(struct qimg_image *img, struct vmdk_state *s)
{
    int64_t total = qimg_io_allocated_size(img->file);
    if (total < 0)
        return total;
    for (size_t i = 0; i < s->nb_extents; i++) {
        if (!s->extents[i].file || s->extents[i].file == img->file)
            continue;
        int64_t n = qimg_io_allocated_size(s->extents[i].file);
        if (n < 0)
            return n;
        total += n;
    }
    return total;
}

static int vmdk_info(struct qimg_image *img, struct qimg_driver_info *info)
{
    struct vmdk_state *s = img->opaque;
    info->has_actual_size = true;
    info->actual_size = allocated_size(img, s);
    if (s->nb_extents && s->extents[0].cluster_size)
        info->cluster_size = (int64_t)s->extents[0].cluster_size;
    /* qemu: every write to a streamOptimized disk is a compressed one */
    info->needs_compressed_writes = s->nb_extents && s->extents[0].compressed;
    info->has_dirty = true;
    struct qimg_json *d = qimg_json_object();
    qimg_json_set(d, "cid", qimg_json_int(s->cid));
    qimg_json_set(d, "parent-cid", qimg_json_int(s->parent_cid));
    qimg_json_set(d, "create-type", qimg_json_string(s->create_type));
    vmdk_info_extents(s, d);
    struct qimg_json *spec = qimg_json_object();
    qimg_json_set(spec, "type", qimg_json_string("vmdk"));
    qimg_json_set(spec, "data", d);
    info->format_specific = spec;
    return 0;
}

static const struct qimg_opt_desc vmdk_create_opts[] = {
    { "size", QIMG_OPT_SIZE, "Virtual disk size", NULL },
    { "adapter_type", QIMG_OPT_STRING, "Virtual adapter type, can be one of ide (default), "
      "lsilogic, buslogic or legacyESX", NULL },
    { "backing_file", QIMG_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", QIMG_OPT_STRING, "Must be 'vmdk' if present", NULL },
    { "compat6", QIMG_OPT_BOOL, "VMDK version 6 image", "off" },
    { "hwversion", QIMG_OPT_STRING, "VMDK hardware version", "undefined" },
    { "toolsversion", QIMG_OPT_STRING, "VMware guest tools version", NULL },
    { "subformat", QIMG_OPT_STRING, "VMDK flat extent format, can be one of "
      "{monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | "
      "twoGbMaxExtentFlat | streamOptimized} ", NULL },
    { "zeroed_grain", QIMG_OPT_BOOL, "Enable efficient zero writes using the zeroed-grain GTE "
      "feature", NULL },
    { NULL, 0, NULL, NULL },
};

const struct qimg_driver qimg_driver_vmdk = {
    .name           = "vmdk",
    .flags          = QIMG_DRV_SUPPORTS_BACKING | QIMG_DRV_MANY_FILES,
    .create_opts    = vmdk_create_opts,
    .create         = vmdk_create,
    .probe          = vmdk_probe,
    .open           = vmdk_open,
    .close          = vmdk_close,
    .read           = vmdk_read,
    .write          = vmdk_write,
    .write_zeroes   = vmdk_write_zeroes,
    .flush          = vmdk_flush,
    .compress       = vmdk_compress,
    .write_compressed = vmdk_write_compressed,
    .has_zero_init  = vmdk_has_zero_init,
    .block_status   = vmdk_block_status,
    .info           = vmdk_info,
    .check          = vmdk_check,
    .resize         = vmdk_resize,
    .measure        = vmdk_measure,
};
