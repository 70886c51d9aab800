/* TEMP(cli): safe mode's switch, so the CLI's --safe links on this branch.
 * The opts helper's branch defines these for real; the lead drops this
 * file when merging. */
#include "internal.h"

static bool safe_mode;

void qimg_set_safe_mode(bool on) { safe_mode = on; }
bool qimg_safe_mode(void) { return safe_mode; }
