/* qimg - weak placeholders so the tool links while commands are being
 * written; a command's own file overrides its placeholder.  This file goes
 * away when every command has landed. */
#include "cli.h"

#define PENDING(name) \
    __attribute__((weak)) int cmd_##name(int argc, char **argv) \
    { error_report("'%s' is not available yet", #name); return 1; }

PENDING(amend) PENDING(bench) PENDING(bitmap) PENDING(check) PENDING(commit)
PENDING(compare) PENDING(convert) PENDING(create) PENDING(dd) PENDING(info)
PENDING(map) PENDING(measure) PENDING(snapshot) PENDING(rebase) PENDING(resize)
