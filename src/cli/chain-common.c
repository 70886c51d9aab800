/* qimg - helpers of the amend, snapshot, bitmap, rebase and commit commands. */
#include <errno.h>
#include <inttypes.h>

#include "chain-common.h"

int64_t chain_cvtnum(const char *name, const char *value)
{
    uint64_t v;
    int r = qimg_parse_size(value, &v);
    if (r < 0 && r != -ERANGE) {
        error_report("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        error_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    if (r == -ERANGE || v > (uint64_t)INT64_MAX) {
        error_report("Invalid %s specified. Must be between %" PRId64 " and %" PRId64 ".",
                     name, (int64_t)0, INT64_MAX);
        return -1;
    }
    return (int64_t)v;
}

void qprogress_init(struct qprogress *p, bool enabled, float min_skip)
{
    p->enabled = enabled;
    p->current = p->last_print = 0;
    p->min_skip = min_skip;
}

void qprogress_print(struct qprogress *p, float delta, int max)
{
    float current = max == 0 ? delta : p->current + delta / 100 * (float)max;
    if (current > 100)
        current = 100;
    p->current = current;
    if (current > p->last_print + p->min_skip || current < p->last_print - p->min_skip ||
        current == 0 || current == 100) {
        p->last_print = current;
        if (p->enabled) {
            printf("    (%3.2f/100%%)\r", current);
            fflush(stdout);
        }
    }
}

void qprogress_end(struct qprogress *p)
{
    if (p->enabled) {
        printf("\n");
        fflush(stdout);
    }
}

void qprogress_callback(double percent, void *opaque)
{
    qprogress_print(opaque, (float)percent, 0);
}

/* The items of an option list, split at single commas (",," is a comma). */
bool chain_has_help_option(const char *text)
{
    const char *p = text;
    while (*p) {
        const char *start = p;
        while (*p && !(*p == ',' && p[1] != ',')) {
            if (*p == ',')
                p++;   /* escaped comma */
            p++;
        }
        size_t len = (size_t)(p - start);
        if ((len == 4 && strncmp(start, "help", 4) == 0) || (len == 1 && *start == '?'))
            return true;
        if (*p)
            p++;
    }
    return false;
}
