/* qimg - the "null-co" storage backend (alias "null-aio"), as qemu has it
 * for tests and benchmarks: a device of a given size (1 GiB unless the
 * "size" option says otherwise) that stores nothing.  Writes and zeroes
 * succeed and are dropped; reads return zeros.  With read-zeroes=on it
 * also says so in its extents; without, it cannot tell what it holds and
 * the extents say "unknown", as qemu's block status does. */
#include <errno.h>

#include "internal.h"

#define NULL_DEFAULT_SIZE ((uint64_t)1 << 30)

struct null_state {
    uint64_t size;
    bool read_zeroes;
    bool named_only;     /* neither size nor read-zeroes given */
};

static int null_open(struct qimg_io *io, qimg_opts *opts)
{
    struct null_state *s = qimg_xcalloc(1, sizeof *s);
    io->priv = s;
    s->size = NULL_DEFAULT_SIZE;
    const char *name;
    if (qimg_opts_get_string(opts, "filename", &name) == 1 && strcmp(name, io->ops->prefix) != 0)
        return qimg_error(-EINVAL, "The only allowed filename for this driver is '%s'", io->ops->prefix);
    s->named_only = !qimg_opts_get(opts, "size") && !qimg_opts_get(opts, "read-zeroes");
    int r = qimg_opts_get_size(opts, "size", &s->size);
    if (r >= 0)
        r = qimg_opts_get_bool(opts, "read-zeroes", &s->read_zeroes);
    uint64_t latency;
    if (r >= 0)
        r = qimg_opts_get_number(opts, "latency-ns", &latency);   /* accepted, not simulated */
    return r < 0 ? r : 0;
}

static int null_pread(struct qimg_io *io, void *buf, size_t len, uint64_t off)
{
    memset(buf, 0, len);
    return 0;
}

static int null_pwrite(struct qimg_io *io, const void *buf, size_t len, uint64_t off)
{
    return 0;
}

static int null_zero(struct qimg_io *io, uint64_t off, uint64_t len, unsigned flags)
{
    return 0;
}

static int null_get_size(struct qimg_io *io, uint64_t *size)
{
    *size = ((struct null_state *)io->priv)->size;
    return 0;
}

static int null_extent(struct qimg_io *io, uint64_t off, uint64_t len, uint64_t *pnum, int *kind)
{
    struct null_state *s = io->priv;
    *kind = s->read_zeroes ? QIMG_IO_EXT_HOLE : QIMG_IO_EXT_UNKNOWN;
    *pnum = len;
    return 0;
}

static int64_t null_allocated_size(struct qimg_io *io)
{
    return 0;
}

/* "null-co://" unless an option that changes what it reads was given
 * (qemu's name for such a node). */
static char *null_exact_filename(struct qimg_io *io)
{
    return ((struct null_state *)io->priv)->named_only ? qimg_strdup(io->ops->prefix) : NULL;
}

static void null_close(struct qimg_io *io)
{
    free(io->priv);
}

#define NULL_OPS(NAME)                          \
    .name           = NAME,                     \
    .prefix         = NAME "://",               \
    .open           = null_open,                \
    .pread          = null_pread,               \
    .pwrite         = null_pwrite,              \
    .zero           = null_zero,                \
    .get_size       = null_get_size,            \
    .extent         = null_extent,              \
    .allocated_size = null_allocated_size,      \
    .close          = null_close,               \
    .exact_filename = null_exact_filename

const struct qimg_io_ops qimg_io_null_co_ops = { NULL_OPS("null-co") };
const struct qimg_io_ops qimg_io_null_aio_ops = { NULL_OPS("null-aio") };
