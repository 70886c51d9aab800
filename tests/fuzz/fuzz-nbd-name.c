/* qimg - libFuzzer target: any bytes as an NBD name (src/io/nbd-name.c):
 * a URI, a legacy "nbd:" string, or (first byte odd) the export of an
 * option tree.  A failure must be -EINVAL with a message; a success must
 * give a server address qemu could use, and a name of it that parses
 * back to the same address. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../src/io/nbd.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static void fail(const char *what, const char *name)
{
    fprintf(stderr, "fuzz-nbd-name: %s for '%s' (%s)\n", what, name, qimg_last_error());
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name = malloc(size + 1);
    memcpy(name, data, size);
    name[size] = '\0';
    qimg_opts *o = NULL;
    qimg_error_clear();
    int r = qimg_nbd_parse_name(name, &o);
    if (r < 0 && (r != -EINVAL || !qimg_last_error()[0]))
        fail("error without a message", name);
    if (r == 0 && qimg_opts_get(o, "server.type")) {
        struct qimg_nbd_addr a;
        if (qimg_nbd_addr_from_opts(o, &a) == 0) {
            char *again = qimg_nbd_addr_name(&a, false);
            qimg_opts *o2 = NULL;
            /* a name with '?' or '#' in the export or path does not read back */
            if (again && !strpbrk(again + 6, "?#%& ") && qimg_nbd_parse_name(again, &o2) == 0) {
                struct qimg_nbd_addr b;
                if (qimg_nbd_addr_from_opts(o2, &b) == 0) {
                    if (a.transport != b.transport)
                        fail("name reads back as another transport", name);
                    qimg_nbd_addr_free(&b);
                }
            }
            qimg_opts_free(o2);
            free(again);
            qimg_nbd_addr_free(&a);
        }
    }
    qimg_error_clear();
    qimg_opts_free(o);
    free(name);
    return 0;
}
