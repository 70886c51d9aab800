/* qimg - internal snapshots and option amendment: thin checks in front of
 * the driver callbacks, with qemu's answers for formats without them. */
#include <errno.h>

#include "internal.h"

void qimg_snapshot_list_free(struct qimg_snapshot_info *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        free(list[i].id);
        free(list[i].name);
    }
    free(list);
}

int qimg_snapshot_list(qimg_image *img, struct qimg_snapshot_info **list, size_t *n)
{
    return qimg_drv_snapshot_list(img, list, n);
}

int qimg_snapshot_create(qimg_image *img, const char *name)
{
    return qimg_drv_snapshot_create(img, name);
}

int qimg_snapshot_apply(qimg_image *img, const char *id_or_name)
{
    if (!img->drv->snapshot_apply) {
        /* qemu falls back to the file under a format without snapshots:
         * it reopens it, and a probed raw image warns again */
        if (img->probed_raw)
            qimg_warn_probed_raw(img->file->ops->json_name ? img->file->filename : qimg_filename(img));
        return qimg_drv_snapshot_apply(img, id_or_name);
    }
    int r = qimg_drv_snapshot_apply(img, id_or_name);
    if (r < 0)
        return qimg_error(r, "Failed to load snapshot: %s", strerror(-r));
    return 0;
}

int qimg_snapshot_load_tmp(qimg_image *img, const char *id, const char *name)
{
    if (!id && !name)
        return qimg_error(-EINVAL, "snapshot_id and name are both NULL");
    if (!img->drv->snapshot_load_tmp)
        return qimg_drv_snapshot_load_tmp(img, id, name);
    if (!img->read_only)
        return qimg_error(-EINVAL, "Device is not readonly");
    return qimg_drv_snapshot_load_tmp(img, id, name);
}

int qimg_snapshot_load_tmp_by_id_or_name(qimg_image *img, const char *id_or_name)
{
    int r = qimg_snapshot_load_tmp(img, id_or_name, NULL);
    if (r == -ENOENT || r == -EINVAL)
        r = qimg_snapshot_load_tmp(img, NULL, id_or_name);
    return r;
}

/* Name first (qemu-img's rule), then id (qemu-img has no way to delete
 * one of several snapshots with the same name). */
int qimg_snapshot_delete(qimg_image *img, const char *name_or_id)
{
    struct qimg_snapshot_info *list;
    size_t n;
    if (qimg_snapshot_list(img, &list, &n) < 0)
        return qimg_error(-ENOENT, "snapshot not found");
    const struct qimg_snapshot_info *found = NULL;
    for (size_t i = 0; i < n && !found; i++)
        if (list[i].name && strcmp(list[i].name, name_or_id) == 0)
            found = &list[i];
    for (size_t i = 0; i < n && !found; i++)
        if (list[i].id && strcmp(list[i].id, name_or_id) == 0)
            found = &list[i];
    int r;
    if (!found)
        r = qimg_error(-ENOENT, "snapshot not found");
    else
        r = qimg_drv_snapshot_delete(img, found->id, found->name);
    qimg_snapshot_list_free(list, n);
    return r;
}

/* ---- amend ---- */

static const struct qimg_opt_desc *find_desc(const struct qimg_opt_desc *d, const char *name)
{
    for (; d && d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

/* Type check of one value, with the getters' messages. */
static int check_value(qimg_opts *opts, const struct qimg_opt_desc *d)
{
    uint64_t u;
    bool b;
    const char *s;
    switch (d->type) {
    case QIMG_OPT_SIZE: return qimg_opts_get_size(opts, d->name, &u);
    case QIMG_OPT_BOOL: return qimg_opts_get_bool(opts, d->name, &b);
    case QIMG_OPT_NUMBER: return qimg_opts_get_number(opts, d->name, &u);
    default: return qimg_opts_get_string(opts, d->name, &s);
    }
}

/* qemu parses the list against the amend options; when that fails but it
 * would parse against amend + create options, it adds a hint. */
static int check_amend_opts(const struct qimg_driver *drv, qimg_opts *opts)
{
    for (size_t i = 0; i < opts->n; i++) {
        const char *name = opts->v[i].name;
        const struct qimg_opt_desc *d = find_desc(drv->amend_opts, name);
        if (d) {
            int r = check_value(opts, d);
            if (r < 0)
                return r;
            continue;
        }
        if (find_desc(drv->create_opts, name))
            return qimg_error(-EINVAL, "Invalid parameter '%s'\n"
                              "This option is only supported for image creation", name);
        return qimg_error(-EINVAL, "Invalid parameter '%s'", name);
    }
    for (size_t i = 0; i < opts->n; i++)
        opts->v[i].used = false;
    return 0;
}

int qimg_amend_check(qimg_image *img, qimg_opts *opts)
{
    if (!qimg_drv_can(img->drv, QIMG_CAP_AMEND))
        return qimg_drv_amend(img, opts, false, NULL, NULL);   /* the error */
    return check_amend_opts(img->drv, opts);
}

int qimg_amend(qimg_image *img, qimg_opts *opts, bool force, qimg_progress_fn progress, void *opaque)
{
    int r = qimg_amend_check(img, opts);
    if (r < 0)
        return r;
    return qimg_drv_amend(img, opts, force, progress, opaque);
}
