/* qimg - qemu-img info: ImageInfo as JSON and as qemu's human text.
 *
 * The fields come from the image node (name, format, sizes, backing names)
 * and from the driver (struct qimg_driver_info, snapshots).  The JSON key
 * order is the JSON writer's business; the human layout is qemu's:
 *   image / file format / virtual size / disk size / encrypted /
 *   cluster_size / cleanly shut down / backing file (+ actual path) /
 *   backing file format / Snapshot list / Format specific information
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "internal.h"
#include "json-priv.h"

static void free_snapshots(struct qimg_snapshot_info *sn, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(sn[i].id);
        free(sn[i].name);
    }
    free(sn);
}

static struct qimg_json *snapshot_json(const struct qimg_snapshot_info *s)
{
    struct qimg_json *o = qimg_json_object();
    qimg_json_set(o, "id", qimg_json_string(s->id ? s->id : ""));
    qimg_json_set(o, "name", qimg_json_string(s->name ? s->name : ""));
    qimg_json_set(o, "vm-state-size", qimg_json_int((int64_t)s->vm_state_size));
    qimg_json_set(o, "date-sec", qimg_json_int(s->date_sec));
    qimg_json_set(o, "date-nsec", qimg_json_int(s->date_nsec));
    qimg_json_set(o, "vm-clock-sec", qimg_json_int((int64_t)(s->vm_clock_nsec / 1000000000)));
    qimg_json_set(o, "vm-clock-nsec", qimg_json_int((int64_t)(s->vm_clock_nsec % 1000000000)));
    if (s->icount != -1)
        qimg_json_set(o, "icount", qimg_json_int(s->icount));
    return o;
}

static int add_snapshots(qimg_image *img, struct qimg_json *o)
{
    struct qimg_snapshot_info *sn = NULL;
    size_t n = 0;
    if (!qimg_drv_has_snapshot_list(img))
        return 0;   /* no "snapshots" key */
    int r = qimg_drv_snapshot_list(img, &sn, &n);
    if (r < 0)
        return r;
    if (n > 0) {
        struct qimg_json *arr = qimg_json_array();
        for (size_t i = 0; i < n; i++)
            qimg_json_append(arr, snapshot_json(&sn[i]));
        qimg_json_set(o, "snapshots", arr);
    }
    free_snapshots(sn, n);
    return 0;
}

int qimg_info_build(qimg_image *img, struct qimg_json **out)
{
    struct qimg_driver_info di;
    struct qimg_json *o;
    int r;
    *out = NULL;
    r = qimg_drv_info(img, &di);
    if (r < 0) {
        qimg_json_free(di.format_specific);
        return r;
    }
    o = qimg_json_object();
    qimg_json_set(o, "filename", qimg_json_string(img->filename));
    qimg_json_set(o, "format", qimg_json_string(qimg_format(img)));
    qimg_json_set(o, "virtual-size", qimg_json_int((int64_t)img->size));
    int64_t actual = di.has_actual_size ? di.actual_size : qimg_io_allocated_size(img->file);
    if (actual >= 0)
        qimg_json_set(o, "actual-size", qimg_json_int(actual));
    if (di.encrypted)
        qimg_json_set(o, "encrypted", qimg_json_bool(true));
    if (di.cluster_size > 0)
        qimg_json_set(o, "cluster-size", qimg_json_int(di.cluster_size));
    if (di.has_dirty)
        qimg_json_set(o, "dirty-flag", qimg_json_bool(di.dirty));
    if (img->backing_file && img->backing_file[0]) {
        qimg_json_set(o, "backing-filename", qimg_json_string(img->backing_file));
        if (img->full_backing_filename)
            qimg_json_set(o, "full-backing-filename", qimg_json_string(img->full_backing_filename));
        if (img->backing_fmt)
            qimg_json_set(o, "backing-filename-format", qimg_json_string(img->backing_fmt));
    }
    r = add_snapshots(img, o);
    if (r < 0) {
        qimg_json_free(o);
        qimg_json_free(di.format_specific);
        return r;
    }
    if (di.format_specific)
        qimg_json_set(o, "format-specific", di.format_specific);
    *out = o;
    return 0;
}

int qimg_info_json(qimg_image *img, char **out)
{
    struct qimg_json *o;
    int r = qimg_info_build(img, &o);
    *out = NULL;
    if (r < 0)
        return r;
    *out = qimg_json_to_string(o);
    qimg_json_free(o);
    return 0;
}

/* ---------------------------------------------------------------- human */

static const char *get_str(const struct qimg_json *o, const char *key)
{
    struct qimg_json *v = qimg_json_get(o, key);
    return v && v->type == QIMG_JSON_STRING ? v->v.s : NULL;
}

static int64_t get_int(const struct qimg_json *o, const char *key, int64_t def)
{
    struct qimg_json *v = qimg_json_get(o, key);
    if (!v)
        return def;
    if (v->type == QIMG_JSON_INT)
        return v->v.i;
    if (v->type == QIMG_JSON_UINT)
        return (int64_t)v->v.u;
    return def;
}

static bool get_bool(const struct qimg_json *o, const char *key)
{
    struct qimg_json *v = qimg_json_get(o, key);
    return v && v->type == QIMG_JSON_BOOL && v->v.b;
}

static void add_snapshot_table(struct qimg_strbuf *b, const struct qimg_json *list)
{
    qimg_strbuf_add(b, "Snapshot list:\n");
    qimg_strbuf_addf(b, "%-10s%-17s%8s%20s%13s%11s\n",
                     "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (size_t i = 0; i < list->n; i++) {
        const struct qimg_json *s = list->items[i];
        char size[32], date[64] = "", clock[64], icount[32] = "";
        qimg_format_size((uint64_t)get_int(s, "vm-state-size", 0), size, sizeof size);
        time_t t = (time_t)get_int(s, "date-sec", 0);
        struct tm tm;
        if (localtime_r(&t, &tm))
            strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
        uint64_t secs = (uint64_t)get_int(s, "vm-clock-sec", 0);
        uint64_t ns = (uint64_t)get_int(s, "vm-clock-nsec", 0);
        snprintf(clock, sizeof clock, "%02d:%02d:%02d.%03d", (int)(secs / 3600),
                 (int)((secs / 60) % 60), (int)(secs % 60), (int)(ns / 1000000));
        if (qimg_json_get(s, "icount"))
            snprintf(icount, sizeof icount, "%" PRId64, get_int(s, "icount", 0));
        qimg_strbuf_addf(b, "%-9s %-16s %8s%20s%13s%11s\n", get_str(s, "id"),
                         get_str(s, "name"), size, date, clock, icount);
    }
}

/* qemu's human layout, from the JSON tree so both outputs agree. */
static char *human_from_json(const struct qimg_json *o)
{
    struct qimg_strbuf b = { 0 };
    char buf[32];
    int64_t vsize = get_int(o, "virtual-size", 0);
    qimg_strbuf_addf(&b, "image: %s\n", get_str(o, "filename"));
    qimg_strbuf_addf(&b, "file format: %s\n", get_str(o, "format"));
    qimg_format_size((uint64_t)vsize, buf, sizeof buf);
    qimg_strbuf_addf(&b, "virtual size: %s (%" PRId64 " bytes)\n", buf, vsize);
    if (qimg_json_get(o, "actual-size")) {
        qimg_format_size((uint64_t)get_int(o, "actual-size", 0), buf, sizeof buf);
        qimg_strbuf_addf(&b, "disk size: %s\n", buf);
    } else {
        qimg_strbuf_add(&b, "disk size: unavailable\n");
    }
    if (qimg_json_get(o, "encrypted"))
        qimg_strbuf_add(&b, "encrypted: yes\n");
    if (qimg_json_get(o, "cluster-size"))
        qimg_strbuf_addf(&b, "cluster_size: %" PRId64 "\n", get_int(o, "cluster-size", 0));
    if (get_bool(o, "dirty-flag"))
        qimg_strbuf_add(&b, "cleanly shut down: no\n");
    const char *backing = get_str(o, "backing-filename");
    if (backing) {
        const char *full = get_str(o, "full-backing-filename");
        qimg_strbuf_addf(&b, "backing file: %s", backing);
        if (!full)
            qimg_strbuf_add(&b, " (cannot determine actual path)");
        else if (strcmp(full, backing) != 0)
            qimg_strbuf_addf(&b, " (actual path: %s)", full);
        qimg_strbuf_add(&b, "\n");
        if (get_str(o, "backing-filename-format"))
            qimg_strbuf_addf(&b, "backing file format: %s\n", get_str(o, "backing-filename-format"));
    }
    struct qimg_json *snaps = qimg_json_get(o, "snapshots");
    if (snaps)
        add_snapshot_table(&b, snaps);
    struct qimg_json *spec = qimg_json_get(o, "format-specific");
    if (spec) {
        qimg_strbuf_add(&b, "Format specific information:\n");
        char *text = b.s;
        qimg_json_dump_human(qimg_json_get(spec, "data"), 4, &text);
        b.s = text;
        b.len = b.cap = text ? strlen(text) : 0;
    }
    if (!b.s)
        return qimg_strdup("");
    return b.s;
}

int qimg_info_human(qimg_image *img, char **out)
{
    struct qimg_json *o;
    int r = qimg_info_build(img, &o);
    *out = NULL;
    if (r < 0)
        return r;
    *out = human_from_json(o);
    qimg_json_free(o);
    return 0;
}
