/* Unit tests: the contract every registered driver signs.  A new format
 * is checked here the moment it is listed in src/formats/registry.c:
 * required callbacks, terminated option tables, unique names, read-only
 * drivers without write paths, and capability answers that agree with
 * the callbacks the driver has. */
#include <errno.h>

#include "internal.h"
#include "unit.h"

/* More entries than any option table will have: a table without its
 * NULL-name terminator runs into this bound instead of off the end. */
#define MAX_TABLE 256

static size_t ndrivers(void)
{
    size_t n = 0;
    while (qimg_drivers[n])
        n++;
    return n;
}

static void check_opt_table(const char *drv, const char *which, const struct qimg_opt_desc *d)
{
    size_t n = 0;
    if (!d)
        return;
    while (n < MAX_TABLE && d[n].name)
        n++;
    if (n == MAX_TABLE) {
        fprintf(stderr, "  %s: %s options not terminated\n", drv, which);
        CHECK(n < MAX_TABLE);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        CHECK(d[i].name[0] != '\0');
        CHECK(d[i].type == QIMG_OPT_STRING || d[i].type == QIMG_OPT_SIZE ||
              d[i].type == QIMG_OPT_BOOL || d[i].type == QIMG_OPT_NUMBER);
        for (size_t k = i + 1; k < n; k++) {
            if (strcmp(d[i].name, d[k].name) == 0) {
                fprintf(stderr, "  %s: %s option '%s' twice\n", drv, which, d[i].name);
                CHECK(strcmp(d[i].name, d[k].name) != 0);
            }
        }
    }
}

TEST(registry_is_not_empty_and_has_raw)
{
    CHECK(ndrivers() >= 2);
    CHECK(qimg_driver_find("raw") == &qimg_driver_raw);
    CHECK(qimg_driver_find("no-such-format") == NULL);
}

TEST(required_callbacks)
{
    for (size_t i = 0; qimg_drivers[i]; i++) {
        const struct qimg_driver *d = qimg_drivers[i];
        CHECK(d->name && d->name[0]);
        CHECK(d->probe != NULL);
        CHECK(d->open != NULL);
        CHECK(d->close != NULL);
        CHECK(d->read != NULL);
        CHECK(d->block_status != NULL);
    }
}

TEST(names_unique)
{
    for (size_t i = 0; qimg_drivers[i]; i++)
        for (size_t k = i + 1; qimg_drivers[k]; k++)
            CHECK(strcmp(qimg_drivers[i]->name, qimg_drivers[k]->name) != 0);
}

TEST(option_tables_terminated_and_unique)
{
    for (size_t i = 0; qimg_drivers[i]; i++) {
        const struct qimg_driver *d = qimg_drivers[i];
        check_opt_table(d->name, "create", d->create_opts);
        check_opt_table(d->name, "amend", d->amend_opts);
        /* -o help and the "Formatting" line come from the table */
        if (d->create)
            CHECK(d->create_opts != NULL);
        if (d->amend)
            CHECK(d->amend_opts != NULL);
    }
}

TEST(read_only_drivers_have_no_write_paths)
{
    for (size_t i = 0; qimg_drivers[i]; i++) {
        const struct qimg_driver *d = qimg_drivers[i];
        if (!(d->flags & QIMG_DRV_READ_ONLY))
            continue;
        CHECK(d->write == NULL);
        CHECK(d->write_zeroes == NULL);
        CHECK(d->discard == NULL);
        CHECK(d->create == NULL);
        CHECK(d->write_compressed == NULL);
    }
}

TEST(callbacks_come_in_sets)
{
    for (size_t i = 0; qimg_drivers[i]; i++) {
        const struct qimg_driver *d = qimg_drivers[i];
        /* convert -c needs both halves */
        CHECK(!d->compress == !d->write_compressed);
        /* a format that stores bitmaps can do every bitmap action */
        if (d->bitmap_add) {
            CHECK(d->bitmap_list && d->bitmap_remove && d->bitmap_clear &&
                  d->bitmap_set_enabled && d->bitmap_next_dirty && d->bitmap_set_dirty);
        }
        if (d->snapshot_create)
            CHECK(d->snapshot_list != NULL);
    }
}

static bool expected(const struct qimg_driver *d, enum qimg_capability cap)
{
    switch (cap) {
    case QIMG_CAP_CREATE: return d->create;
    case QIMG_CAP_WRITE: return d->write && !(d->flags & QIMG_DRV_READ_ONLY);
    case QIMG_CAP_COMPRESS: return d->compress && d->write_compressed;
    case QIMG_CAP_BACKING: return d->flags & QIMG_DRV_SUPPORTS_BACKING;
    case QIMG_CAP_SNAPSHOTS: return d->snapshot_create;
    case QIMG_CAP_BITMAPS: return d->bitmap_add;
    case QIMG_CAP_AMEND: return d->amend;
    case QIMG_CAP_CHECK: return d->check;
    case QIMG_CAP_RESIZE: return d->resize;
    case QIMG_CAP_MEASURE: return d->measure;
    case QIMG_CAP_MAKE_EMPTY: return d->make_empty;
    case QIMG_CAP_METADATA: return !(d->flags & QIMG_DRV_NO_METADATA);
    case QIMG_CAP_MANY_FILES: return d->flags & QIMG_DRV_MANY_FILES;
    case QIMG_CAP_RAW_BACKING: return d->flags & QIMG_DRV_RAW_BACKING;
    }
    return false;
}

static const enum qimg_capability all_caps[] = {
    QIMG_CAP_CREATE, QIMG_CAP_WRITE, QIMG_CAP_COMPRESS, QIMG_CAP_BACKING, QIMG_CAP_SNAPSHOTS,
    QIMG_CAP_BITMAPS, QIMG_CAP_AMEND, QIMG_CAP_CHECK, QIMG_CAP_RESIZE, QIMG_CAP_MEASURE,
    QIMG_CAP_MAKE_EMPTY, QIMG_CAP_METADATA, QIMG_CAP_MANY_FILES, QIMG_CAP_RAW_BACKING,
};

TEST(capabilities_agree_with_callbacks)
{
    for (size_t i = 0; qimg_drivers[i]; i++) {
        const struct qimg_driver *d = qimg_drivers[i];
        for (size_t k = 0; k < QIMG_ARRAY_SIZE(all_caps); k++) {
            bool want = expected(d, all_caps[k]);
            if (qimg_drv_can(d, all_caps[k]) != want ||
                qimg_format_supports(d->name, all_caps[k]) != want) {
                fprintf(stderr, "  %s: capability %d answers %d, callbacks say %d\n", d->name,
                        (int)all_caps[k], (int)qimg_drv_can(d, all_caps[k]), (int)want);
                CHECK(false);
            }
        }
    }
    CHECK(!qimg_format_supports("no-such-format", QIMG_CAP_CREATE));
}

static int dummy_write(struct qimg_image *img, uint64_t off, const void *buf, size_t len)
{
    return -EIO;
}

/* A driver that has write but says it is read-only cannot be written. */
TEST(read_only_flag_wins)
{
    static const struct qimg_driver ro = {
        .name = "ro", .flags = QIMG_DRV_READ_ONLY, .write = dummy_write,
    };
    CHECK(!qimg_drv_can(&ro, QIMG_CAP_WRITE));
    CHECK(qimg_drv_can(&ro, QIMG_CAP_METADATA));
}

TEST(public_format_list_is_the_registry)
{
    size_t n = ndrivers();
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_STR(qimg_format_name(i), qimg_drivers[i]->name);
        CHECK(qimg_format_known(qimg_drivers[i]->name));
    }
    CHECK(qimg_format_name(n) == NULL);
}

/* Every driver answers the help texts the CLI prints from the table. */
TEST(help_texts)
{
    for (size_t i = 0; qimg_drivers[i]; i++) {
        const struct qimg_driver *d = qimg_drivers[i];
        char *text = NULL;
        int r = qimg_create_help(d->name, true, &text);
        CHECK(d->create ? r == 0 && text : r == -ENOTSUP);
        free(text);
        text = NULL;
        r = qimg_amend_help(d->name, &text);
        CHECK(d->amend ? r == 0 && text : r == -ENOTSUP);
        free(text);
    }
}

/* ---- storage backends ---- */

/* Every backend opens, reads, sizes and closes itself; the wrappers give
 * defaults for the rest (io.c).  Each also writes unless it says it is
 * read-only, and then it has no write path at all. */
TEST(backends_required_callbacks)
{
    size_t n = 0;
    for (size_t i = 0; qimg_io_backends[i]; i++, n++) {
        const struct qimg_io_ops *o = qimg_io_backends[i];
        CHECK(o->name && o->name[0]);
        CHECK(o->open != NULL);
        CHECK(o->pread != NULL);
        CHECK(o->pwrite != NULL || o->read_only);
        CHECK(!o->read_only || (!o->pwrite && !o->zero && !o->discard && !o->truncate &&
                                !o->preallocate && !o->can_create));
        CHECK(o->get_size != NULL);
        CHECK(o->close != NULL);
    }
    CHECK(n >= 2);
    CHECK(qimg_io_backends[0] == &qimg_io_file_ops);
}

/* Names and filename prefixes pick a backend: each may belong to one. */
TEST(backends_names_and_prefixes_unique)
{
    for (size_t i = 0; qimg_io_backends[i]; i++) {
        const struct qimg_io_ops *a = qimg_io_backends[i];
        CHECK(qimg_io_backend_find(a->name) == a);
        if (a->prefix)
            CHECK(a->prefix[0] && strchr(a->prefix, ':'));
        for (size_t k = i + 1; qimg_io_backends[k]; k++) {
            const struct qimg_io_ops *b = qimg_io_backends[k];
            CHECK(strcmp(a->name, b->name) != 0);
            if (a->prefix && b->prefix)
                CHECK(strcmp(a->prefix, b->prefix) != 0);
        }
    }
}

/* A backend that is no protocol in qemu (quorum) is never picked by a
 * "NAME:" prefix: qemu's "Unknown protocol" instead. */
TEST(backends_not_protocol_not_named_by_prefix)
{
    size_t found = 0;
    for (size_t i = 0; qimg_io_backends[i]; i++) {
        const struct qimg_io_ops *o = qimg_io_backends[i];
        if (!o->not_protocol)
            continue;
        found++;
        CHECK(o->prefix == NULL);
        char name[64];
        snprintf(name, sizeof name, "%s:x", o->name);
        CHECK(qimg_io_protocol(name) == NULL);
    }
    CHECK(found >= 1);
    CHECK(qimg_io_backend_find("quorum") == &qimg_io_quorum_ops);
}

/* qimg --help lists the registry (qimg_protocol_name), no format shares a
 * backend's name. */
TEST(backends_public_list_is_the_registry)
{
    size_t i = 0;
    for (; qimg_io_backends[i]; i++) {
        CHECK_EQ_STR(qimg_protocol_name(i), qimg_io_backends[i]->name);
        CHECK(qimg_driver_find(qimg_io_backends[i]->name) == NULL);
    }
    CHECK(qimg_protocol_name(i) == NULL);
}

int main(void)
{
    RUN(registry_is_not_empty_and_has_raw);
    RUN(required_callbacks);
    RUN(names_unique);
    RUN(option_tables_terminated_and_unique);
    RUN(read_only_drivers_have_no_write_paths);
    RUN(callbacks_come_in_sets);
    RUN(capabilities_agree_with_callbacks);
    RUN(read_only_flag_wins);
    RUN(public_format_list_is_the_registry);
    RUN(help_texts);
    RUN(backends_required_callbacks);
    RUN(backends_names_and_prefixes_unique);
    RUN(backends_public_list_is_the_registry);
    RUN(backends_not_protocol_not_named_by_prefix);
    return UNIT_DONE();
}
