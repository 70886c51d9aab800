/* qimg - VHDX: the metadata log.
 *
 * Reading: the newest valid and complete log sequence (the "active"
 * sequence) is found as the specification describes: from each candidate
 * tail, entries are chained while each is valid and its sequence number is
 * one more than the one before; a chain whose last entry's tail lies
 * inside it is a sequence.  Its updates are written in place on a
 * read-write open, or laid over every read of a read-only open (qemu
 * refuses those).  Entries with the log GUID none of which makes a valid
 * sequence are a corrupt log (qemu ignores the log and reads stale
 * metadata); a log GUID that no entry carries is the trace of an update
 * stopped before its entry and reads as an empty log.
 *
 * Writing: each update is one entry holding whole 4 KiB sectors.  Entries
 * follow each other in the ring and start again at its beginning when the
 * next one does not fit; an entry is at most a third of the log, so a new
 * entry never overwrites the one before it, which stays the newest valid
 * sequence until the new one is complete.  Every entry is its own
 * sequence (its tail is itself): log, flush, write in place, flush. */
#include <errno.h>
#include <inttypes.h>

#include "vhdx.h"

/* entry header fields */
enum {
    LE_SIG = 0, LE_CRC = 4, LE_LENGTH = 8, LE_TAIL = 12, LE_SEQ = 16, LE_COUNT = 24,
    LE_GUID = 32, LE_FLUSHED = 48, LE_LAST = 56, LE_HEADER_SIZE = 64,
};
#define DESC_SIZE 32u
/* the checksums one open may compute while searching a hostile log */
#define LOG_SCAN_BUDGET (1ull << 30)

struct scan {
    const uint8_t *log;     /* the whole log */
    uint32_t len;
    const uint8_t *guid;
    uint64_t low_limit;     /* descriptors may not write below this */
    uint64_t log_start, log_end;
    uint64_t budget;
    uint8_t *tmp;           /* a wrapped entry made contiguous */
};

struct entry {
    uint32_t pos, length, tail;
    uint64_t seq;
};

static uint32_t desc_sectors(uint64_t count)
{
    return (uint32_t)qimg_div_round_up(LE_HEADER_SIZE + DESC_SIZE * count, VHDX_LOG_SECTOR);
}

/* The entry at pos as one contiguous buffer. */
static const uint8_t *entry_bytes(struct scan *sc, uint32_t pos, uint32_t length)
{
    if ((uint64_t)pos + length <= sc->len)
        return sc->log + pos;
    uint32_t first = sc->len - pos;
    memcpy(sc->tmp, sc->log + pos, first);
    memcpy(sc->tmp + first, sc->log, length - first);
    return sc->tmp;
}

/* Does a descriptor write where the log may write?  Not over the file
 * identifier and the headers, not into the log itself, not absurdly far. */
static bool target_ok(const struct scan *sc, uint64_t off, uint64_t len)
{
    uint64_t end;
    return off % VHDX_LOG_SECTOR == 0 && len % VHDX_LOG_SECTOR == 0 &&
           qimg_add_ok(off, len, &end) && end <= (1ull << 47) && off >= sc->low_limit &&
           (end <= sc->log_start || off >= sc->log_end);
}

static bool descriptors_ok(const uint8_t *e, const struct entry *en, uint64_t count,
                           uint32_t nsec, const struct scan *sc)
{
    uint32_t ds = desc_sectors(count), data = 0;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *d = e + LE_HEADER_SIZE + DESC_SIZE * i;
        if (qimg_le64(d + 24) != en->seq)
            return false;
        if (memcmp(d, "zero", 4) == 0) {
            if (!target_ok(sc, qimg_le64(d + 16), qimg_le64(d + 8)))
                return false;
        } else if (memcmp(d, "desc", 4) == 0) {
            if (!target_ok(sc, qimg_le64(d + 16), VHDX_LOG_SECTOR) || ds + data >= nsec)
                return false;
            const uint8_t *sec = e + (uint64_t)(ds + data) * VHDX_LOG_SECTOR;
            if (memcmp(sec, "data", 4) != 0 || qimg_le32(sec + 4) != (uint32_t)(en->seq >> 32) ||
                qimg_le32(sec + 4092) != (uint32_t)en->seq)
                return false;
            data++;
        } else {
            return false;
        }
    }
    return ds + data == nsec;
}

/* Is there a valid entry at pos?  -ENOSPC when the scan budget is spent. */
static int entry_at(struct scan *sc, uint32_t pos, struct entry *en)
{
    const uint8_t *h = sc->log + pos;
    if (memcmp(h + LE_SIG, "loge", 4) != 0 || memcmp(h + LE_GUID, sc->guid, 16) != 0)
        return 0;
    en->pos = pos;
    en->length = qimg_le32(h + LE_LENGTH);
    en->tail = qimg_le32(h + LE_TAIL);
    en->seq = qimg_le64(h + LE_SEQ);
    uint64_t count = qimg_le32(h + LE_COUNT);
    if (en->length < VHDX_LOG_SECTOR || en->length % VHDX_LOG_SECTOR || en->length > sc->len ||
        en->tail % VHDX_LOG_SECTOR || en->tail >= sc->len || en->seq == 0)
        return 0;
    uint32_t nsec = en->length / VHDX_LOG_SECTOR;
    if (desc_sectors(count) > nsec)
        return 0;
    if (sc->budget < en->length)
        return qimg_error(-ENOSPC, "VHDX log: too many entries to validate");
    sc->budget -= en->length;
    const uint8_t *e = entry_bytes(sc, pos, en->length);
    if (qimg_le32(e + LE_CRC) != vhdx_checksum(e, en->length, LE_CRC))
        return 0;
    return descriptors_ok(e, en, count, nsec, sc) ? 1 : 0;
}

/* The chain of entries from tail: how many and where (positions in
 * chain[], at most max). */
static int chain_from(struct scan *sc, uint32_t tail, struct entry *chain, uint32_t max,
                      uint32_t *count)
{
    uint32_t pos = tail, n = 0;
    while (n < max) {
        struct entry en;
        int r = entry_at(sc, pos, &en);
        if (r < 0)
            return r;
        if (r == 0 || (n && en.seq != chain[n - 1].seq + 1))
            break;
        chain[n++] = en;
        pos = (uint32_t)(((uint64_t)pos + en.length) % sc->len);
    }
    *count = n;
    return 0;
}

/* Where the head entry's tail sits in the chain, or -1. */
static int tail_index(const struct entry *chain, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (chain[i].pos == chain[n - 1].tail)
            return (int)i;
    return -1;
}

/* The updates of entries chain[from..n) in order. */
static int collect_ops(struct scan *sc, const struct entry *chain, uint32_t from, uint32_t n,
                       struct vhdx_log_replay *out)
{
    size_t cap = 0;
    for (uint32_t i = from; i < n; i++) {
        const uint8_t *e = entry_bytes(sc, chain[i].pos, chain[i].length);
        uint64_t count = qimg_le32(e + LE_COUNT);
        uint32_t ds = desc_sectors(count), data = 0;
        for (uint64_t k = 0; k < count; k++) {
            const uint8_t *d = e + LE_HEADER_SIZE + DESC_SIZE * k;
            if (out->nops == cap) {
                cap = cap ? cap * 2 : 16;
                out->ops = qimg_xrealloc(out->ops, cap * sizeof *out->ops);
            }
            struct vhdx_log_op *op = &out->ops[out->nops++];
            op->off = qimg_le64(d + 16);
            if (memcmp(d, "zero", 4) == 0) {
                op->len = qimg_le64(d + 8);
                op->data = NULL;
                continue;
            }
            op->len = VHDX_LOG_SECTOR;
            op->data = qimg_xmalloc(VHDX_LOG_SECTOR);
            const uint8_t *sec = e + (uint64_t)(ds + data++) * VHDX_LOG_SECTOR;
            memcpy(op->data + 8, sec + 8, VHDX_LOG_SECTOR - 12);
            qimg_put_le64(op->data, qimg_le64(d + 8));
            qimg_put_le32(op->data + 4092, qimg_le32(d + 4));
        }
        out->flushed_offset = qimg_le64(e + LE_FLUSHED);
        out->last_offset = qimg_le64(e + LE_LAST);
    }
    return 0;
}

/* The specification's search for the active sequence. */
static int find_active(struct scan *sc, struct vhdx_log_replay *out, bool *found)
{
    uint32_t max = sc->len / VHDX_LOG_SECTOR;
    CLEANUP_FREE struct entry *chain = qimg_xcalloc(max, sizeof *chain);
    CLEANUP_FREE struct entry *best = qimg_xcalloc(max, sizeof *best);
    uint32_t best_n = 0, best_from = 0;
    uint64_t cur = 0, old = 0;
    *found = false;
    for (;;) {
        uint32_t n;
        int r = chain_from(sc, (uint32_t)cur, chain, max, &n);
        if (r < 0)
            return r;
        int t = n ? tail_index(chain, n) : -1;
        if (t >= 0 && (!*found || chain[n - 1].seq > best[best_n - 1].seq)) {
            memcpy(best, chain, n * sizeof *chain);
            best_n = n;
            best_from = (uint32_t)t;
            *found = true;
        }
        if (t < 0)
            cur += VHDX_LOG_SECTOR;
        else
            cur = (uint64_t)chain[n - 1].pos + chain[n - 1].length;
        if (cur >= sc->len)
            cur -= sc->len;
        if (cur < old || (cur == old && t >= 0))
            break;
        old = cur;
    }
    return *found ? collect_ops(sc, best, best_from, best_n, out) : 0;
}

void vhdx_log_free(struct vhdx_log_replay *r)
{
    for (size_t i = 0; i < r->nops; i++)
        free(r->ops[i].data);
    free(r->ops);
    memset(r, 0, sizeof *r);
}

static int corrupt(struct qimg_image *img, struct vhdx_state *s, unsigned flags, const char *why)
{
    /* check -r may discard it; anyone else stops here */
    if ((flags & QIMG_OPEN_CHECK) && (flags & QIMG_OPEN_RDWR)) {
        s->log_corrupt = true;
        free(s->log_error);
        s->log_error = qimg_strdup(why);
        return 0;
    }
    return qimg_error(-EINVAL, "VHDX log of '%s' is corrupt: %s; 'qemu-img check -r all' "
                      "discards it", img->filename, why);
}

int vhdx_log_open(struct qimg_image *img, struct vhdx_state *s, unsigned flags)
{
    const uint8_t *guid = s->header + VH_LOG_GUID;
    if (vhdx_guid_is_zero(guid))
        return 0;
    uint8_t *log = qimg_alloc_from_image(s->log_length, "VHDX log");
    if (!log)
        return -ENOMEM;
    int r = qimg_io_pread(img->file, log, s->log_length, s->log_offset);
    struct scan sc = {
        .log = log, .len = s->log_length, .guid = guid, .low_limit = VHDX_REGION1_OFF,
        .log_start = s->log_offset, .log_end = s->log_offset + s->log_length,
        .budget = LOG_SCAN_BUDGET,
    };
    bool found = false, any_entry = false;
    if (r == 0) {
        sc.tmp = qimg_alloc_from_image(s->log_length, "VHDX log entry");
        r = sc.tmp ? find_active(&sc, &s->pending, &found) : -ENOMEM;
    }
    /* Any entry header carrying the header's log GUID?  None: the log GUID
     * was set and the process stopped before the first entry was written
     * (a state every writer passes through): an empty log, as qemu reads
     * it.  One that fails its checks is a damaged or hostile log. */
    for (uint32_t pos = 0; r == 0 && !found && pos < s->log_length; pos += VHDX_LOG_SECTOR)
        any_entry |= memcmp(log + pos, "loge", 4) == 0 && memcmp(log + pos + LE_GUID, guid, 16) == 0;
    free(sc.tmp);
    free(log);
    if (r == -ENOSPC)
        return corrupt(img, s, flags, qimg_last_error());
    if (r < 0)
        return r;
    if (!found && !any_entry)
        s->log_guid_stale = true;      /* an update stopped before its entry */
    else if (!found)
        return corrupt(img, s, flags, "no valid log sequence");
    if (s->file_size < s->pending.flushed_offset) {
        vhdx_log_free(&s->pending);
        return corrupt(img, s, flags, "the file is shorter than the log says (truncated)");
    }
    return 0;
}

/* Lay the pending updates over bytes read at off. */
void vhdx_log_overlay(const struct vhdx_state *s, uint8_t *buf, size_t len, uint64_t off)
{
    for (size_t i = 0; i < s->pending.nops; i++) {
        const struct vhdx_log_op *op = &s->pending.ops[i];
        uint64_t a = QIMG_MAX(op->off, off), b = QIMG_MIN(op->off + op->len, off + len);
        if (a >= b)
            continue;
        if (op->data)
            memcpy(buf + (a - off), op->data + (a - op->off), b - a);
        else
            memset(buf + (a - off), 0, b - a);
    }
}

/* Write the pending updates in place, grow the file to the log's last
 * offset, then mark the log empty. */
int vhdx_log_replay(struct qimg_image *img, struct vhdx_state *s)
{
    int r = vhdx_begin_write(img, s, false);
    for (size_t i = 0; r == 0 && i < s->pending.nops; i++) {
        const struct vhdx_log_op *op = &s->pending.ops[i];
        r = op->data ? qimg_io_pwrite(img->file, op->data, op->len, op->off)
                     : qimg_io_zero(img->file, op->off, op->len, false);
        if (r == 0 && op->off + op->len > s->file_size)
            s->file_size = op->off + op->len;
    }
    if (r == 0 && s->file_size < s->pending.last_offset) {
        r = qimg_io_truncate(img->file, s->pending.last_offset);
        if (r == 0)
            s->file_size = s->pending.last_offset;
    }
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r == 0)
        r = vhdx_set_log_guid(img, s, false);
    if (r < 0)
        return r;
    vhdx_log_free(&s->pending);
    s->log_replayed_on_open = true;
    return 0;
}

/* ------------------------------------------------------------- writing */

/* The most data sectors one entry may hold: a third of the log. */
static uint32_t max_sectors_per_entry(uint32_t log_length)
{
    uint32_t total = log_length / 3 / VHDX_LOG_SECTOR, k = total;
    while (k > 0 && desc_sectors(k) + k > total)
        k--;
    return k;
}

static uint8_t *build_entry(struct vhdx_state *s, const uint64_t *offs, uint8_t *const *data,
                            uint32_t n, uint32_t pos, uint32_t *length)
{
    uint32_t ds = desc_sectors(n);
    *length = (ds + n) * VHDX_LOG_SECTOR;
    uint8_t *e = qimg_xcalloc(1, *length);
    uint64_t seq = s->log_seq + 1;
    memcpy(e + LE_SIG, "loge", 4);
    qimg_put_le32(e + LE_LENGTH, *length);
    qimg_put_le32(e + LE_TAIL, pos);
    qimg_put_le64(e + LE_SEQ, seq);
    qimg_put_le32(e + LE_COUNT, n);
    memcpy(e + LE_GUID, s->header + VH_LOG_GUID, 16);
    qimg_put_le64(e + LE_FLUSHED, qimg_round_down(s->file_size, VHDX_MiB));
    uint64_t last = QIMG_MAX(s->file_size, s->alloc_offset);
    qimg_put_le64(e + LE_LAST, qimg_div_round_up(last, VHDX_MiB) * VHDX_MiB);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = e + LE_HEADER_SIZE + DESC_SIZE * i;
        uint8_t *sec = e + (uint64_t)(ds + i) * VHDX_LOG_SECTOR;
        memcpy(d, "desc", 4);
        qimg_put_le32(d + 4, qimg_le32(data[i] + 4092));
        qimg_put_le64(d + 8, qimg_le64(data[i]));
        qimg_put_le64(d + 16, offs[i]);
        qimg_put_le64(d + 24, seq);
        memcpy(sec, "data", 4);
        qimg_put_le32(sec + 4, (uint32_t)(seq >> 32));
        memcpy(sec + 8, data[i] + 8, VHDX_LOG_SECTOR - 12);
        qimg_put_le32(sec + 4092, (uint32_t)seq);
    }
    qimg_put_le32(e + LE_CRC, vhdx_checksum(e, *length, LE_CRC));
    return e;
}

static int write_entry(struct qimg_image *img, struct vhdx_state *s, const uint64_t *offs,
                       uint8_t *const *data, uint32_t n)
{
    uint32_t pos = s->log_head, length = (desc_sectors(n) + n) * VHDX_LOG_SECTOR;
    if ((uint64_t)pos + length > s->log_length)
        pos = 0;
    /* what the entry names must be stable before the entry */
    int r = qimg_io_flush(img->file);
    if (r < 0)
        return r;
    CLEANUP_FREE uint8_t *e = build_entry(s, offs, data, n, pos, &length);
    r = qimg_io_pwrite(img->file, e, length, s->log_offset + pos);
    if (r == 0)
        r = qimg_io_flush(img->file);
    for (uint32_t i = 0; r == 0 && i < n; i++)
        r = qimg_io_pwrite(img->file, data[i], VHDX_LOG_SECTOR, offs[i]);
    if (r == 0)
        r = qimg_io_flush(img->file);
    if (r < 0)
        return r;
    for (uint32_t i = 0; i < n; i++)
        if (offs[i] + VHDX_LOG_SECTOR > s->file_size)
            s->file_size = offs[i] + VHDX_LOG_SECTOR;
    s->log_seq++;
    s->log_head = pos + length;
    return 0;
}

int vhdx_log_write_sectors(struct qimg_image *img, struct vhdx_state *s,
                           const uint64_t *offs, uint8_t *const *data, size_t n)
{
    if (!s->log_region_ok)
        return qimg_error(-EINVAL, "VHDX log region is invalid: the image cannot be written");
    int r = vhdx_begin_write(img, s, false);
    if (r == 0 && !s->log_guid_set) {
        r = vhdx_set_log_guid(img, s, true);
        s->log_head = 0;
        s->log_seq = 0;
    }
    uint32_t per = max_sectors_per_entry(s->log_length);
    if (per == 0)
        return qimg_error(-EINVAL, "VHDX log too small");
    for (size_t i = 0; r == 0 && i < n; i += per)
        r = write_entry(img, s, offs + i, data + i, (uint32_t)QIMG_MIN(per, n - i));
    return r;
}
