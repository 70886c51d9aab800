/* qimg - the VMDK text descriptor: the fields qemu reads from it and its
 * extent lines.
 *
 * A descriptor is lines of text (LF or CRLF):
 *     # Disk DescriptorFile
 *     version=1
 *     CID=7e1d2b3a                      content id, hex
 *     parentCID=ffffffff                the parent's CID when this disk was
 *                                       made (ffffffff: no parent)
 *     createType="monolithicSparse"
 *     parentFileNameHint="base.vmdk"    delta disks only
 *     RW 204800 SPARSE "disk.vmdk"      extent lines, see vmdk.h
 *     ddb.adapterType = "ide"           the disk database
 * qemu looks fields up by the first occurrence of their name anywhere in
 * the text, and so does qimg, so both read the same values from odd files.
 */
#include <errno.h>
#include <inttypes.h>
#include <ctype.h>

#include "vmdk.h"

char *vmdk_desc_value(const char *text, const char *key, size_t max)
{
    const char *p = strstr(text, key);
    if (!p)
        return NULL;
    /* the name is followed by '=' and '"', which are skipped unseen */
    size_t skip = strlen(key) + 2;
    if (strnlen(p, skip) < skip)
        return NULL;
    p += skip;
    const char *end = strchr(p, '"');
    if (!end || (size_t)(end - p) > max)
        return NULL;
    char *v = qimg_xmalloc((size_t)(end - p) + 1);
    memcpy(v, p, (size_t)(end - p));
    v[end - p] = 0;
    return v;
}

int vmdk_desc_cid(const char *text, bool parent, uint32_t *cid)
{
    const char *key = parent ? "parentCID" : "CID";
    const char *p = strstr(text, key);
    if (!p)
        return -EINVAL;
    size_t skip = strlen(key) + 1;
    if (strnlen(p, skip) < skip)
        return -EINVAL;
    p += skip;
    /* sscanf("%x") semantics: blanks, a sign, an optional 0x */
    char *end;
    unsigned long long v = strtoull(p, &end, 16);
    if (end == p)
        return -EINVAL;
    *cid = (uint32_t)v;
    return 0;
}

/* ---- extent lines ---- */

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\v' || *p == '\f')
        p++;
    return p;
}

/* A word of at most max characters (longer words are not extent lines). */
static const char *take_word(const char *p, char *out, size_t max)
{
    p = skip_blanks(p);
    size_t n = 0;
    while (p[n] && !isspace((unsigned char)p[n]))
        n++;
    if (n == 0 || n > max)
        return NULL;
    memcpy(out, p, n);
    out[n] = 0;
    return p + n;
}

/* A decimal integer with an optional sign, as %SCNd64 reads it. */
static const char *take_int(const char *p, int64_t *out)
{
    p = skip_blanks(p);
    bool neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return NULL;
    uint64_t v = 0;
    while (isdigit((unsigned char)*p)) {
        if (v > (uint64_t)INT64_MAX / 10)
            v = (uint64_t)INT64_MAX;   /* saturate, as strtoll would */
        else
            v = v * 10 + (uint64_t)(*p - '0');
        if (v > (uint64_t)INT64_MAX)
            v = (uint64_t)INT64_MAX;
        p++;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return p;
}

/* "FILE": 1 to 511 characters, no quote or line break */
static const char *take_quoted(const char *p, char *out, size_t max)
{
    p = skip_blanks(p);
    if (*p != '"')
        return NULL;
    p++;
    size_t n = 0;
    while (p[n] && p[n] != '"' && p[n] != '\n' && p[n] != '\r' && n < max)
        n++;
    if (n == 0 || p[n] != '"')
        return NULL;
    memcpy(out, p, n);
    out[n] = 0;
    return p + n + 1;
}

/* The fields of one line, counted as sscanf counts matches. */
struct line_fields {
    char access[11], type[11], file[512];
    int64_t sectors, offset;
    int matches;
};

static void scan_line(const char *p, struct line_fields *f)
{
    f->matches = 0;
    if (!(p = take_word(p, f->access, 10)))
        return;
    f->matches++;
    if (!(p = take_int(p, &f->sectors)))
        return;
    f->matches++;
    if (!(p = take_word(p, f->type, 10)))
        return;
    f->matches++;
    if (!(p = take_quoted(p, f->file, 511)))
        return;
    f->matches++;
    if (take_int(p, &f->offset))
        f->matches++;
}

static bool known_type(const char *t)
{
    static const char *const types[] = { "FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE",
                                         "ZERO" };
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(types); i++)
        if (strcmp(t, types[i]) == 0)
            return true;
    return false;
}

static int access_of(const char *word, enum vmdk_access *a)
{
    if (strcmp(word, "RW") == 0)
        *a = VMDK_ACCESS_RW;
    else if (strcmp(word, "RDONLY") == 0)
        *a = VMDK_ACCESS_RDONLY;
    else if (strcmp(word, "NOACCESS") == 0)
        *a = VMDK_ACCESS_NOACCESS;
    else
        return -1;
    return 0;
}

static int invalid_line(const char *line, const char *eol)
{
    return qimg_error(-EINVAL, "Invalid extent line: %.*s", (int)(eol - line), line);
}

/* The most extents one descriptor may list: each takes a line, and the
 * descriptor read is under 1 MiB. */
#define VMDK_MAX_EXTENTS 65536

int vmdk_desc_extents(const char *text, struct vmdk_desc_extent **out, size_t *n)
{
    struct vmdk_desc_extent *x = NULL;
    size_t count = 0;
    *out = NULL;
    *n = 0;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        const char *next = eol ? eol + 1 : line + strlen(line);
        if (!eol)
            eol = next;
        struct line_fields f;
        scan_line(line, &f);
        enum vmdk_access access;
        bool zero = f.matches >= 3 && strcmp(f.type, "ZERO") == 0;
        if ((f.matches < 4 && !zero) || access_of(f.access, &access) < 0)
            goto next;
        if (strcmp(f.type, "FLAT") == 0) {
            if (f.matches != 5 || f.offset < 0)
                goto invalid;
        } else if (strcmp(f.type, "VMFS") == 0) {
            if (f.matches != 4)
                goto invalid;
            f.offset = 0;
        } else if (!zero && f.matches != 4) {
            goto invalid;
        } else {
            f.offset = 0;
        }
        if (f.sectors <= 0 || !known_type(f.type))
            goto next;
        if ((uint64_t)f.offset > UINT64_MAX / VMDK_SECTOR) {
            goto invalid;
        }
        if (count == VMDK_MAX_EXTENTS) {
            vmdk_desc_extents_free(x, count);
            return qimg_error(-EINVAL, "Too many extents in the VMDK descriptor");
        }
        x = qimg_xrealloc(x, (count + 1) * sizeof *x);
        x[count] = (struct vmdk_desc_extent){
            .access = access,
            .sectors = (uint64_t)f.sectors,
            .filename = zero ? NULL : qimg_strdup(f.file),
            .flat_offset = (uint64_t)f.offset * VMDK_SECTOR,
        };
        snprintf(x[count].type, sizeof x[count].type, "%s", f.type);
        count++;
    next:
        line = next;
        continue;
    invalid:
        vmdk_desc_extents_free(x, count);
        return invalid_line(line, eol);
    }
    *out = x;
    *n = count;
    return 0;
}

/* Replace text[start, end) by repl. */
static char *splice(const char *text, size_t start, size_t end, const char *repl)
{
    return qimg_asprintf("%.*s%s%s", (int)start, text, repl, text + end);
}

/* The sector count of the index-th extent line: where its digits are. */
static bool find_extent_count(const char *text, size_t index, size_t *start, size_t *end)
{
    size_t count = 0;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        const char *next = eol ? eol + 1 : line + strlen(line);
        struct vmdk_desc_extent *x;
        size_t n;
        /* a line is an extent line when it parses alone as one */
        CLEANUP_FREE char *one = strndup(line, (size_t)(next - line));
        if (vmdk_desc_extents(one, &x, &n) == 0 && n == 1) {
            vmdk_desc_extents_free(x, n);
            if (count++ == index) {
                const char *p = skip_blanks(line);
                while (*p && !isspace((unsigned char)*p))
                    p++;
                p = skip_blanks(p);
                *start = (size_t)(p - text);
                while (isdigit((unsigned char)*p) || *p == '+')
                    p++;
                *end = (size_t)(p - text);
                return true;
            }
        }
        line = next;
    }
    return false;
}

char *vmdk_desc_resized(const char *text, size_t index, uint64_t sectors, uint64_t bytes)
{
    size_t start, end;
    if (!find_extent_count(text, index, &start, &end))
        return NULL;
    char digits[32];
    snprintf(digits, sizeof digits, "%" PRIu64, sectors);
    char *out = splice(text, start, end, digits);
    const char *key = "ddb.geometry.cylinders = \"";
    char *cyl = strstr(out, key);
    CLEANUP_FREE char *heads_text = vmdk_desc_value(out, "ddb.geometry.heads =", 16);
    unsigned long heads = heads_text ? strtoul(heads_text, NULL, 10) : 0;
    if (cyl && heads) {
        size_t s = (size_t)(cyl - out) + strlen(key);
        const char *q = strchr(out + s, '"');
        if (q) {
            snprintf(digits, sizeof digits, "%" PRIu64, (uint64_t)(bytes / (63ull * heads * VMDK_SECTOR)));
            char *o2 = splice(out, s, (size_t)(q - out), digits);
            free(out);
            out = o2;
        }
    }
    return out;
}

char *vmdk_desc_add_extents(const char *text, size_t index, const char *lines)
{
    size_t start, end;
    if (!find_extent_count(text, index, &start, &end))
        return NULL;
    const char *eol = strchr(text + end, '\n');
    if (!eol)
        return qimg_asprintf("%s\n%s", text, lines);
    return splice(text, (size_t)(eol + 1 - text), (size_t)(eol + 1 - text), lines);
}

void vmdk_desc_extents_free(struct vmdk_desc_extent *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(x[i].filename);
    free(x);
}
