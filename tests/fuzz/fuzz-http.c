/* qimg - libFuzzer target: any bytes as a response header line or a URL
 * for the curl backends' parsers (src/io/http-parse.c).  A Content-Range
 * that parses must be an ordered range; nothing may read past the line. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: ASan catches a read past the line's end */
    char *line = malloc(size ? size : 1);
    if (!line)
        return 0;
    memcpy(line, data, size);
    uint64_t first = 0, last = 0;
    int r = qimg_http_content_range(line, size, &first, &last);
    if (r != 0 && r != 1 && r != -EINVAL)
        abort();
    if (r == 1 && first > last)
        abort();
    (void)qimg_http_accepts_ranges(line, size);
    free(line);
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = 0;
    if (qimg_http_url_check("https", url) == 0 && strncmp(url, "https://", 8) != 0)
        abort();
    free(url);
    return 0;
}
