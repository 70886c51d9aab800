/* qimg - the qcow2 snapshot table as qemu 7.2 reads it.
 *
 * An open reads it strictly; qemu-img check (the image opened with
 * QIMG_OPEN_CHECK, which skips it at open) reads it here again with
 * qemu's tolerance, and with -r all repairs what qemu repairs:
 *   - more than 65536 entries: the ones beyond are dropped (the header
 *     count is rewritten);
 *   - an entry with more than 1024 bytes of extra data: the data is cut
 *     to 1024 bytes (the table is rewritten at the end of the check);
 *   - a table beyond 64 MiB: the entries from the first one that ends
 *     beyond are dropped (header count rewritten);
 *   - version 3 entries without the disk size in their extra data
 *     ("incomplete"): the table is rewritten with full extra data.
 * An offset that is unaligned or overflows stops the check.  Entries past
 * the end of the file read as zeros, as qemu's block layer returns them;
 * the references they make are judged by the refcount check. */
#include <errno.h>
#include <inttypes.h>

#include "qcow2-snaptable.h"

/* qemu's block layer refuses requests that end beyond this. */
#define MAX_REQUEST_END 0x7fffffffc0000000ull

#define HINT_EXTRA "You can force-remove this extra metadata with qemu-img check -r all"

int qcow2_pread_zero_filled(struct qimg_image *img, uint64_t file_size, void *buf,
                            uint64_t len, uint64_t off)
{
    if (len == 0)
        return 0;
    if (!qimg_range_ok(off, len, MAX_REQUEST_END))
        return -EIO;
    uint64_t in_file = off < file_size ? QIMG_MIN(len, file_size - off) : 0;
    memset((uint8_t *)buf + in_file, 0, len - in_file);
    return in_file ? qimg_io_pread(img->file, buf, in_file, off) : 0;
}

static char *string_of(const uint8_t *p, uint64_t len)
{
    char *str = qimg_xmalloc(len + 1);
    memcpy(str, p, len);
    str[len] = '\0';
    return str;
}

void qcow2_snaptable_free(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        free(s->snapshots[i].id);
        free(s->snapshots[i].name);
        free(s->snapshots[i].extra_data);
    }
    free(s->snapshots);
    s->snapshots = NULL;
}

int qcow2_snaptable_validate(const struct qcow2_state *s)
{
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
        return qimg_error(-EFBIG, "Snapshot table too large");
    uint64_t bytes = (uint64_t)s->nb_snapshots * QCOW2_SNAPSHOT_HEADER_LEN;
    if (INT64_MAX - bytes < s->snapshots_offset ||
        !qimg_is_aligned(s->snapshots_offset, s->cluster_size))
        return qimg_error(-EINVAL, "Snapshot table offset invalid");
    return 0;
}

struct reader {
    struct qimg_image *img;
    struct qcow2_state *s;
    uint64_t file_size;
    bool repair;
    uint32_t extra_dropped;
};

static int read_failed(int r)
{
    return qimg_error(r, "Failed to read snapshot table: %s", strerror(-r));
}

/* Entry i at table offset *pos (8-aligned); *pos moves to its end.
 * *kept_len: its length with the extra data as kept. */
static int read_entry(struct reader *rd, uint32_t i, uint64_t *pos, struct qcow2_snapshot *sn,
                      uint64_t *kept_len)
{
    struct qcow2_state *s = rd->s;
    uint8_t h[QCOW2_SNAPSHOT_HEADER_LEN];
    int r = qcow2_pread_zero_filled(rd->img, rd->file_size, h, sizeof h, s->snapshots_offset + *pos);
    if (r < 0)
        return read_failed(r);
    *pos += sizeof h;
    sn->l1_table_offset = qimg_be64(h);
    sn->l1_size = qimg_be32(h + 8);
    uint16_t id_len = qimg_be16(h + 12), name_len = qimg_be16(h + 14);
    sn->date_sec = qimg_be32(h + 16);
    sn->date_nsec = qimg_be32(h + 20);
    sn->vm_clock_nsec = qimg_be64(h + 24);
    sn->vm_state_size = qimg_be32(h + 32);
    uint32_t extra_on_disk = qimg_be32(h + 36);
    sn->icount = -1;
    sn->extra_data_size = extra_on_disk;
    if (extra_on_disk > QCOW2_MAX_SNAPSHOT_EXTRA) {
        if (!rd->repair)
            return qimg_error(-EFBIG, "Too much extra metadata in snapshot table entry %"
                              PRIu32 "\n" HINT_EXTRA, i);
        qimg_check_log("Discarding too much extra metadata in snapshot table entry %" PRIu32
                       " (%" PRIu32 " > %u)", i, extra_on_disk, QCOW2_MAX_SNAPSHOT_EXTRA);
        rd->extra_dropped++;
        sn->extra_data_size = QCOW2_MAX_SNAPSHOT_EXTRA;
    }
    /* extra data as kept, then id and name after all of it */
    uint64_t rest = (uint64_t)extra_on_disk + id_len + name_len;
    CLEANUP_FREE uint8_t *buf = qimg_xmalloc(rest ? rest : 1);
    r = qcow2_pread_zero_filled(rd->img, rd->file_size, buf, rest, s->snapshots_offset + *pos);
    if (r < 0)
        return read_failed(r);
    *pos += rest;
    sn->extra_data = qimg_xmalloc(sn->extra_data_size ? sn->extra_data_size : 1);
    memcpy(sn->extra_data, buf, sn->extra_data_size);
    sn->disk_size = s->size;
    if (sn->extra_data_size >= QCOW2_SNAPSHOT_EXTRA_VMSTATE)
        sn->vm_state_size = qimg_be64(buf);
    if (sn->extra_data_size >= QCOW2_SNAPSHOT_EXTRA_DISKSIZE)
        sn->disk_size = qimg_be64(buf + 8);
    if (sn->extra_data_size >= QCOW2_SNAPSHOT_EXTRA_ICOUNT)
        sn->icount = (int64_t)qimg_be64(buf + 16);
    *kept_len = QCOW2_SNAPSHOT_HEADER_LEN + (uint64_t)sn->extra_data_size + id_len + name_len;
    sn->id = string_of(buf + extra_on_disk, id_len);
    sn->name = string_of(buf + extra_on_disk + id_len, name_len);
    return 0;
}

int qcow2_snaptable_read(struct qimg_image *img, struct qcow2_state *s, bool repair,
                         uint32_t *extra_dropped, uint32_t *overhanging, uint64_t *table_size)
{
    struct reader rd = { .img = img, .s = s, .repair = repair };
    uint32_t nb = s->nb_snapshots, dropped = 0;
    uint64_t pos = 0, size = 0;
    qcow2_snaptable_free(s);
    int r = qimg_io_get_size(img->file, &rd.file_size);
    if (r < 0)
        return qimg_error(r, "Failed to read snapshot table: %s", strerror(-r));
    /* qemu's 64 MiB limit counts entries as kept (extra data cut to 1024
     * bytes), while the table occupies what is on disk (pos) */
    uint64_t kept = 0;
    struct qcow2_snapshot *t = NULL;
    if (nb) {
        t = qimg_calloc_from_image(nb, sizeof *t, "snapshot table");
        if (!t)
            return -ENOMEM;
    }
    s->snapshots = t;
    s->nb_snapshots = 0;          /* entries read so far, for freeing */
    for (uint32_t i = 0; i < nb; i++) {
        pos = (pos + 7) & ~7ull;
        s->nb_snapshots = i + 1;
        uint64_t kept_len = 0;
        r = read_entry(&rd, i, &pos, &t[i], &kept_len);
        if (r < 0)
            return r;
        kept = ((kept + 7) & ~7ull) + kept_len;
        /* on disk, qemu's table size must also fit an int (only extra
         * data cut to 1024 bytes can make it that large) */
        if (kept > QCOW2_MAX_SNAPSHOT_TABLE || pos > INT32_MAX) {
            dropped = nb - i;
            if (!repair)
                return qimg_error(-EFBIG, "Snapshot table is too big\nYou can force-remove "
                                  "all %" PRIu32 " overhanging snapshots with qemu-img check "
                                  "-r all", dropped);
            qimg_check_log("Discarding %" PRIu32 " overhanging snapshots (snapshot table is "
                           "too big)", dropped);
            free(t[i].id);
            free(t[i].name);
            free(t[i].extra_data);
            memset(&t[i], 0, sizeof t[i]);
            s->nb_snapshots = i;
            break;
        }
        size = pos;
    }
    if (extra_dropped)
        *extra_dropped = rd.extra_dropped;
    if (overhanging)
        *overhanging = dropped;
    if (table_size)
        *table_size = size;
    return 0;
}

/* ================================================================ check */

static int write_nb_snapshots(struct qimg_image *img, uint32_t nb)
{
    uint8_t be[4];
    qimg_put_be32(be, nb);
    int r = qimg_io_pwrite(img->file, be, sizeof be, QCOW2_HDR_NB_SNAPSHOTS);
    if (r == 0)
        r = qimg_io_flush(img->file);
    return r;
}

/* The table as read failed: nothing is loaded, the header values stay. */
static int check_failed(struct qcow2_state *s, uint32_t header_nb, int r)
{
    qcow2_snaptable_free(s);
    s->nb_snapshots = header_nb;
    return r;
}

int qcow2_snaptable_check(struct qimg_image *img, unsigned fix, struct qcow2_snaptable_check *st)
{
    struct qcow2_state *s = qcow2_state(img);
    struct qimg_check_result *res = &st->res;
    bool repair = fix & QIMG_FIX_ERRORS;
    memset(st, 0, sizeof *st);
    qcow2_snaptable_free(s);
    /* the header is the truth: an earlier pass may have changed it */
    uint8_t h[12];
    int r = qimg_io_pread(img->file, h, sizeof h, QCOW2_HDR_NB_SNAPSHOTS);
    if (r < 0)
        return r;
    uint32_t header_nb = qimg_be32(h);
    s->snapshots_offset = qimg_be64(h + 4);
    s->nb_snapshots = header_nb;
    if (header_nb > QCOW2_MAX_SNAPSHOTS) {
        uint32_t over = header_nb - QCOW2_MAX_SNAPSHOTS;
        if (!repair) {
            qimg_check_log(QIMG_CHECK_LOG_REPORT "ERROR snapshot table too large");
            qimg_check_log("You can force-remove all %" PRIu32 " overhanging snapshots with "
                           "qemu-img check -r all", over);
            return check_failed(s, header_nb, qimg_error(-EFBIG, "Snapshot table too large"));
        }
        qimg_check_log("Discarding %" PRIu32 " overhanging snapshots", over);
        s->nb_snapshots = QCOW2_MAX_SNAPSHOTS;
        res->corruptions_fixed += over;
    }
    r = qcow2_snaptable_validate(s);
    if (r < 0) {
        qimg_check_log(QIMG_CHECK_LOG_REPORT "ERROR snapshot table offset invalid");
        return check_failed(s, header_nb, r);
    }
    uint32_t extra_dropped, overhanging;
    r = qcow2_snaptable_read(img, s, repair, &extra_dropped, &overhanging, &st->table_size);
    if (r < 0) {
        qimg_check_log(QIMG_CHECK_LOG_REPORT "ERROR failed to read the snapshot table: %s",
                       qimg_last_error());
        return check_failed(s, header_nb, r);
    }
    st->old_size = st->table_size;
    res->corruptions_fixed += overhanging;
    if (s->nb_snapshots != header_nb) {
        r = write_nb_snapshots(img, s->nb_snapshots);
        if (r < 0) {
            qimg_check_log("ERROR failed to update the snapshot count: %s",
                           strerror(-r));
            return check_failed(s, header_nb, r);
        }
    }
    res->corruptions += extra_dropped;
    st->to_fix = extra_dropped;
    /* version 3 entries carry at least the 64-bit VM state size and the
     * disk size in their extra data */
    for (uint32_t i = 0; s->version >= 3 && i < s->nb_snapshots; i++) {
        if (s->snapshots[i].extra_data_size >= QCOW2_SNAPSHOT_EXTRA_DISKSIZE)
            continue;
        qimg_check_log("%s snapshot table entry %" PRIu32 " is incomplete",
                       repair ? "Repairing" : "ERROR", i);
        res->corruptions++;
        if (repair)
            st->to_fix++;
    }
    return 0;
}

int qcow2_snaptable_check_fix(struct qimg_image *img, unsigned fix,
                              struct qcow2_snaptable_check *st)
{
    struct qimg_check_result *res = &st->res;
    if (!(fix & QIMG_FIX_ERRORS) || st->to_fix == 0)
        return 0;
    int r = qcow2_snapshot_rewrite_table(img, st->old_size);
    if (r < 0) {
        qimg_check_log("ERROR failed to update snapshot table: %s",
                       strerror(-r));
        qimg_error_clear();
        res->check_errors++;
        return r;
    }
    res->corruptions -= st->to_fix;
    res->corruptions_fixed += st->to_fix;
    return 0;
}
