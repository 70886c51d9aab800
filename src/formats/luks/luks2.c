/* qimg - LUKS2 volumes: not yet. */
#include <errno.h>

#include "luks2.h"

int luks2_open_volume(struct qimg_io *io, const char *secret_id, bool no_io, struct luks_volume **out)
{
    (void)io; (void)secret_id; (void)no_io; (void)out;
    return qimg_error(-ENOTSUP, "LUKS version 2 is not supported");
}
