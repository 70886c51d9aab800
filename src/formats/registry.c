/* qimg - the table of format drivers.  A new format adds one line here. */
#include "internal.h"

const struct qimg_driver *const qimg_drivers[] = {
    &qimg_driver_qcow2,
    &qimg_driver_raw,
    &qimg_driver_vdi,
    &qimg_driver_parallels,
    &qimg_driver_vpc,
    &qimg_driver_vmdk,
    &qimg_driver_luks,
    &qimg_driver_qed,
    &qimg_driver_qcow,
    &qimg_driver_vhdx,
    &qimg_driver_bochs,
    &qimg_driver_cow,
    &qimg_driver_cloop,
    &qimg_driver_dmg,
    NULL,
};

const struct qimg_driver *qimg_driver_find(const char *name)
{
    for (size_t i = 0; qimg_drivers[i]; i++)
        if (strcmp(qimg_drivers[i]->name, name) == 0)
            return qimg_drivers[i];
    return NULL;
}

/* Highest score wins; on a tie the driver listed first keeps it. */
const struct qimg_driver *qimg_driver_probe(const uint8_t *buf, size_t len,
                                            uint64_t file_size, const char *filename)
{
    const struct qimg_driver *best = &qimg_driver_raw;
    int best_score = 0;
    for (size_t i = 0; qimg_drivers[i]; i++) {
        int score = qimg_drivers[i]->probe(buf, len, file_size, filename);
        if (score > best_score) {
            best_score = score;
            best = qimg_drivers[i];
        }
    }
    return best;
}

/* A format recognised by the end of its file (a fixed VHD's footer), asked
 * only when the first bytes said raw; raw when none claims it. */
const struct qimg_driver *qimg_driver_probe_tail(const uint8_t *tail, size_t len,
                                                 uint64_t file_size)
{
    for (size_t i = 0; qimg_drivers[i]; i++)
        if (qimg_drivers[i]->probe_tail && qimg_drivers[i]->probe_tail(tail, len, file_size))
            return qimg_drivers[i];
    return &qimg_driver_raw;
}
