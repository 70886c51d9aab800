/* qimg - creating VMDK images as qemu-img 7.2 lays them out.
 *
 * monolithicSparse: one hosted sparse file, its descriptor in sectors
 * 1-20.  monolithicFlat: a descriptor file and NAME-flat.EXT.
 * twoGbMaxExtentSparse / twoGbMaxExtentFlat: a descriptor file and extents
 * NAME-s001.EXT / NAME-f001.EXT ... of 2 GiB each (the last holds the
 * rest).  streamOptimized is stream.c's.
 *
 * A new sparse extent (qemu's layout, in sectors):
 *     0        header
 *     1-20     descriptor (monolithic) or nothing
 *     21       redundant grain directory, then its grain tables (4 sectors
 *              each, 512 entries of 64 KiB grains)
 *     then     grain directory, then its grain tables
 *     rounded up to the grain: the first grain
 * The file is extended to the first grain; only the header, descriptor and
 * the two directories are written (the tables are holes: zeros).
 */
#include <errno.h>
#include <inttypes.h>
#include <sys/random.h>

#include "vmdk.h"

#define GRAIN_SECTORS 128u
#define GTES 512u
#define SPLIT_SIZE (2ull << 30)

uint32_t vmdk_random_cid(void)
{
    uint32_t v;
    if (getrandom(&v, sizeof v, 0) != sizeof v)
        v = (uint32_t)time(NULL) * 2654435761u;
    return v;
}

int vmdk_write_sparse_header(struct qimg_io *io, uint64_t capacity, bool zeroed_grain,
                             bool compress)
{
    uint64_t grains = qimg_div_round_up(capacity, GRAIN_SECTORS);
    uint64_t gt_sectors = GTES * 4 / VMDK_SECTOR;
    uint64_t gt_count = qimg_div_round_up(grains, GTES);
    uint64_t gd_sectors = qimg_div_round_up(gt_count * 4, VMDK_SECTOR);
    uint64_t desc_sector = 1, desc_sectors = 20;
    uint64_t rgd = desc_sector + desc_sectors;
    uint64_t gd = rgd + gd_sectors + gt_sectors * gt_count;
    uint64_t first_grain = qimg_div_round_up(gd + gd_sectors + gt_sectors * gt_count,
                                             GRAIN_SECTORS) * GRAIN_SECTORS;
    if (gd + gd_sectors + gt_sectors * gt_count > UINT32_MAX)
        return qimg_error(-EFBIG, "Image size too large for VMDK");
    uint8_t h[VMDK_SECTOR] = { 0 };
    memcpy(h, "KDMV", 4);
    qimg_put_le32(h + 4, compress ? 3 : zeroed_grain ? 2 : 1);
    qimg_put_le32(h + 8, 0x3u | (compress ? 0x30000u : 0) | (zeroed_grain ? 0x4u : 0));
    qimg_put_le64(h + 12, capacity);
    qimg_put_le64(h + 20, GRAIN_SECTORS);
    qimg_put_le64(h + 28, desc_sector);
    qimg_put_le64(h + 36, desc_sectors);
    qimg_put_le32(h + 44, GTES);
    qimg_put_le64(h + 48, rgd);
    qimg_put_le64(h + 56, gd);
    qimg_put_le64(h + 64, first_grain);
    memcpy(h + 73, "\n \r\n", 4);
    qimg_put_le16(h + 77, compress ? 1 : 0);
    int r = qimg_io_pwrite(io, h, 4 + 75, 0);
    if (r == 0)
        r = qimg_io_truncate(io, first_grain * VMDK_SECTOR);
    if (r < 0)
        return r;
    size_t bytes = (size_t)(gd_sectors * VMDK_SECTOR);
    CLEANUP_FREE uint8_t *dir = qimg_xcalloc(1, bytes ? bytes : 1);
    for (uint64_t i = 0; i < gt_count; i++)
        qimg_put_le32(dir + 4 * i, (uint32_t)(rgd + gd_sectors + i * gt_sectors));
    r = qimg_io_pwrite(io, dir, bytes, rgd * VMDK_SECTOR);
    if (r < 0)
        return r;
    for (uint64_t i = 0; i < gt_count; i++)
        qimg_put_le32(dir + 4 * i, (uint32_t)(gd + gd_sectors + i * gt_sectors));
    return qimg_io_pwrite(io, dir, bytes, gd * VMDK_SECTOR);
}

uint64_t vmdk_sparse_first_grain(uint64_t capacity)
{
    uint64_t grains = qimg_div_round_up(capacity, GRAIN_SECTORS);
    uint64_t gt_count = qimg_div_round_up(grains, GTES);
    uint64_t gd_sectors = qimg_div_round_up(gt_count * 4, VMDK_SECTOR);
    uint64_t tables = 2 * (gd_sectors + gt_count * (GTES * 4 / VMDK_SECTOR));
    return qimg_div_round_up(21 + tables, GRAIN_SECTORS) * GRAIN_SECTORS;
}

/* ---- measure (beyond qemu-img, which measures no vmdk) ---- */

/* The files of a new image of this size (or holding src): a sparse
 * extent is its header, descriptor and tables, then whole grains (every
 * grain when fully allocated, the grains holding data otherwise: an upper
 * bound); a flat extent is its size; a descriptor file one sector. */
int vmdk_measure(qimg_opts *opts, qimg_image *src, uint64_t size, struct qimg_measure *out)
{
    const char *sub = "monolithicSparse";
    int r = opts ? qimg_opts_get_string(opts, "subformat", &sub) : 0;
    if (r < 0)
        return r;
    bool flat = strcmp(sub, "monolithicFlat") == 0 || strcmp(sub, "twoGbMaxExtentFlat") == 0;
    bool split = strncmp(sub, "twoGbMaxExtent", 14) == 0;
    uint64_t bytes;
    if (!qimg_round_up_ok(src ? qimg_size(src) : size, VMDK_SECTOR, &bytes))
        return qimg_error(-EFBIG, "Image size too large");
    uint64_t extent_size = split ? SPLIT_SIZE : (bytes ? bytes : 1);
    out->required = out->fully_allocated = (flat || split) ? VMDK_SECTOR : 0;
    for (uint64_t done = 0; done < bytes; done += extent_size) {
        uint64_t cur = QIMG_MIN(bytes - done, extent_size);
        if (flat) {
            out->required += cur;
            out->fully_allocated += cur;
            continue;
        }
        uint64_t meta = vmdk_sparse_first_grain(cur / VMDK_SECTOR) * VMDK_SECTOR;
        uint64_t grain = GRAIN_SECTORS * VMDK_SECTOR, used = qimg_div_round_up(cur, grain);
        out->fully_allocated += meta + used * grain;
        if (src && (r = qimg_count_data_blocks(src, done, cur, GRAIN_SECTORS * VMDK_SECTOR, &used)) < 0)
            return r;
        out->required += meta + (src ? used : 0) * grain;
    }
    return 0;
}

/* A new extent file: flat (its size, a hole) or sparse. */
static int create_extent_with(const char *path, unsigned ioflags, uint64_t bytes, bool flat,
                              bool zeroed_grain, bool compress, struct qimg_io **out)
{
    struct qimg_io *io;
    int r = qimg_io_open(&io, path, QIMG_IO_RDWR | QIMG_IO_CREATE | QIMG_IO_NOLOCK | ioflags);
    if (r < 0)
        return r;
    if (flat) {
        /* a hole, but its first 4 KiB allocated as qemu's file creation
         * leaves it */
        r = qimg_io_truncate(io, bytes);
        if (r == 0 && bytes > 0) {
            static const uint8_t zeros[4096];
            r = qimg_io_pwrite(io, zeros, (size_t)QIMG_MIN(bytes, sizeof zeros), 0);
        }
    } else
        r = vmdk_write_sparse_header(io, bytes / VMDK_SECTOR, zeroed_grain, compress);
    if (r < 0 || !out)
        qimg_io_close(io);
    else
        *out = io;
    return r;
}

static int create_extent(const char *path, uint64_t bytes, bool flat, bool zeroed_grain,
                         bool compress, struct qimg_io **out)
{
    return create_extent_with(path, QIMG_IO_TRUNC, bytes, flat, zeroed_grain, compress, out);
}

int vmdk_new_extent_file(const char *path, uint64_t bytes, bool flat, bool zeroed_grain)
{
    return create_extent_with(path, QIMG_IO_EXCL, bytes, flat, zeroed_grain, false, NULL);
}

static bool one_of(const char *v, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v, list[i]) == 0)
            return true;
    return false;
}

int vmdk_read_create_opts(struct qimg_create_ctx *ctx, struct vmdk_create_opts *o)
{
    static const char *const adapters[] = { "ide", "buslogic", "lsilogic", "legacyESX" };
    static const char *const subformats[] = { "monolithicSparse", "monolithicFlat",
        "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized" };
    *o = (struct vmdk_create_opts){ "monolithicSparse", "ide", NULL, "2147483647", false, false };
    const char *adapter = NULL, *sub = NULL;
    int r = qimg_opts_get_string(ctx->opts, "adapter_type", &adapter);
    if (r >= 0)
        r = qimg_opts_get_string(ctx->opts, "hwversion", &o->hw_version);
    if (r >= 0)
        r = qimg_opts_get_string(ctx->opts, "toolsversion", &o->toolsversion);
    if (r >= 0)
        r = qimg_opts_get_bool(ctx->opts, "compat6", &o->compat6);
    if (r >= 0)
        r = qimg_opts_get_string(ctx->opts, "subformat", &sub);
    if (r >= 0)
        r = qimg_opts_get_bool(ctx->opts, "zeroed_grain", &o->zeroed_grain);
    if (r < 0)
        return r;
    if (o->hw_version && strcmp(o->hw_version, "undefined") == 0)
        o->hw_version = NULL;
    if (adapter && !one_of(adapter, adapters, QIMG_ARRAY_SIZE(adapters)))
        return qimg_error(-EINVAL, "invalid parameter value: %s", adapter);
    if (adapter)
        o->adapter_type = adapter;
    if (sub && !one_of(sub, subformats, QIMG_ARRAY_SIZE(subformats)))
        return qimg_error(-EINVAL, "invalid parameter value: %s", sub);
    if (sub)
        o->subformat = sub;
    if (o->compat6 && o->hw_version)
        return qimg_error(-EINVAL, "compat6 cannot be enabled with hwversion set");
    if (o->compat6)
        o->hw_version = "6";
    if (!o->hw_version)
        o->hw_version = "4";
    return 0;
}

/* The parent's CID, as qemu reads it from a vmdk parent. */
int vmdk_parent_cid(struct qimg_create_ctx *ctx, uint32_t *cid)
{
    CLEANUP_FREE char *path = qimg_path_combine(ctx->filename, ctx->backing_file);
    qimg_image *b;
    int r = qimg_open(&b, path, NULL, QIMG_OPEN_NO_BACKING | QIMG_OPEN_FORCE_SHARE);
    if (r < 0)
        return r;
    if (b->drv != &qimg_driver_vmdk)
        r = qimg_error(-EINVAL, "backing_file must be a vmdk image");
    else
        *cid = ((struct vmdk_state *)b->opaque)->cid;
    qimg_close(b);
    return r;
}

/* path = dir + prefix + ext, as qemu splits a name: dir up to the last '/'
 * (or '\\' or ':'), ext from the last '.' of the rest. */
struct name_parts { char *dir, *prefix, *ext; };

static void split_name(const char *filename, struct name_parts *n)
{
    const char *base = strrchr(filename, '/');
    if (!base)
        base = strrchr(filename, '\\');
    if (!base)
        base = strrchr(filename, ':');
    base = base ? base + 1 : filename;
    n->dir = strndup(filename, (size_t)(base - filename));
    const char *dot = strrchr(base, '.');
    n->prefix = dot ? strndup(base, (size_t)(dot - base)) : qimg_strdup(base);
    n->ext = qimg_strdup(dot ? dot : "");
}

static void free_name(struct name_parts *n)
{
    free(n->dir);
    free(n->prefix);
    free(n->ext);
}

char *vmdk_descriptor_text(const struct vmdk_create_opts *o, uint32_t pcid,
                             const char *backing, const char *extent_lines, uint64_t size)
{
    unsigned heads = strcmp(o->adapter_type, "ide") == 0 ? 16 : 255;
    CLEANUP_FREE char *parent_line = backing ? qimg_asprintf("parentFileNameHint=\"%s\"", backing)
                                             : qimg_strdup("");
    return qimg_asprintf(
        "# Disk DescriptorFile\n"
        "version=1\n"
        "CID=%" PRIx32 "\n"
        "parentCID=%" PRIx32 "\n"
        "createType=\"%s\"\n"
        "%s\n"
        "# Extent description\n"
        "%s\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        "ddb.virtualHWVersion = \"%s\"\n"
        "ddb.geometry.cylinders = \"%" PRId64 "\"\n"
        "ddb.geometry.heads = \"%u\"\n"
        "ddb.geometry.sectors = \"63\"\n"
        "ddb.adapterType = \"%s\"\n"
        "ddb.toolsVersion = \"%s\"\n",
        vmdk_random_cid(), pcid, o->subformat, parent_line, extent_lines, o->hw_version,
        (int64_t)(size / (63ull * heads * VMDK_SECTOR)), heads, o->adapter_type,
        o->toolsversion);
}

/* monolithicSparse, and streamOptimized (the same layout with compressed
 * grains: header version 3, flags 0x30003, as qemu-img 7.2; stream.c) */
static int create_monolithic_sparse(struct qimg_create_ctx *ctx, const struct vmdk_create_opts *o,
                                    uint32_t pcid, uint64_t size)
{
    struct qimg_io *io;
    struct name_parts n;
    bool stream = strcmp(o->subformat, "streamOptimized") == 0;
    int r = create_extent(ctx->filename, size, false, o->zeroed_grain, stream, &io);
    if (r < 0)
        return r;
    split_name(ctx->filename, &n);
    CLEANUP_FREE char *line = qimg_asprintf("RW %" PRIu64 " SPARSE \"%s%s\"\n",
                                            size / VMDK_SECTOR, n.prefix, n.ext);
    free_name(&n);
    CLEANUP_FREE char *desc = vmdk_descriptor_text(o, pcid, ctx->backing_file, line, size);
    r = qimg_io_pwrite(io, desc, strlen(desc), VMDK_SECTOR);
    if (r < 0)
        qimg_error(r, "Could not write description");
    qimg_io_close(io);
    return r;
}

/* A descriptor file and its extents. */
static int create_with_extents(struct qimg_create_ctx *ctx, const struct vmdk_create_opts *o,
                               uint32_t pcid, uint64_t size, bool flat, bool split)
{
    struct qimg_io *desc_io;
    int r = create_extent(ctx->filename, 0, true, false, false, &desc_io);
    if (r < 0)
        return r;
    struct name_parts n;
    split_name(ctx->filename, &n);
    struct qimg_strbuf lines = { 0 };
    uint64_t done = 0, extent_size = split ? SPLIT_SIZE : size;
    for (unsigned idx = 1; done < size && r == 0; idx++) {
        uint64_t cur = QIMG_MIN(size - done, extent_size);
        CLEANUP_FREE char *rel = split
            ? qimg_asprintf("%s-%c%03u%s", n.prefix, flat ? 'f' : 's', idx, n.ext)
            : qimg_asprintf("%s-flat%s", n.prefix, n.ext);
        CLEANUP_FREE char *path = qimg_asprintf("%s%s", n.dir, rel);
        r = create_extent(path, cur, flat, o->zeroed_grain, false, NULL);
        if (r < 0)
            break;
        if (flat)
            qimg_strbuf_addf(&lines, "RW %" PRIu64 " FLAT \"%s\" 0\n", cur / VMDK_SECTOR, rel);
        else
            qimg_strbuf_addf(&lines, "RW %" PRIu64 " SPARSE \"%s\"\n", cur / VMDK_SECTOR, rel);
        done += cur;
    }
    free_name(&n);
    if (r == 0) {
        CLEANUP_FREE char *desc = vmdk_descriptor_text(o, pcid, ctx->backing_file,
                                                  lines.s ? lines.s : "", size);
        r = qimg_io_pwrite(desc_io, desc, strlen(desc), 0);
        if (r < 0)
            qimg_error(r, "Could not write description");
        else
            r = qimg_io_truncate(desc_io, strlen(desc));
    }
    free(lines.s);
    qimg_io_close(desc_io);
    return r;
}

int vmdk_create(struct qimg_create_ctx *ctx)
{
    struct vmdk_create_opts o;
    int r = vmdk_read_create_opts(ctx, &o);
    if (r < 0)
        return r;
    bool flat = strcmp(o.subformat, "monolithicFlat") == 0 ||
                strcmp(o.subformat, "twoGbMaxExtentFlat") == 0;
    bool split = strncmp(o.subformat, "twoGbMaxExtent", 14) == 0;
    if (flat && ctx->backing_file)
        return qimg_error(-ENOTSUP, "Flat image can't have backing file");
    if (flat && o.zeroed_grain)
        return qimg_error(-ENOTSUP, "Flat image can't enable zeroed grain");
    uint32_t pcid = 0xffffffffu;
    if (ctx->backing_file) {
        r = vmdk_parent_cid(ctx, &pcid);
        if (r < 0)
            return r;
    }
    uint64_t size;
    if (!qimg_round_up_ok(ctx->size, VMDK_SECTOR, &size))
        return qimg_error(-EFBIG, "Image size too large");
    if (!flat && !split)
        return create_monolithic_sparse(ctx, &o, pcid, size);
    return create_with_extents(ctx, &o, pcid, size, flat, split);
}
