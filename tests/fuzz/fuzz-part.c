/* qimg - libFuzzer target: any bytes as a disk with a partition table.
 *
 * The input goes into a memfd opened as a raw image; qimg_part_find looks
 * for the first partitions, a few logical ones and one far away.  Every
 * failure must carry a message, and every partition found must lie inside
 * the image. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fs.h"
#include "internal.h"
#include "fuzz-input.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_input_init("fuzz-part");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned numbers[] = { 1, 2, 3, 4, 5, 6, 7, 9, 128, 300 };
    qimg_image *img = NULL;
    if (qimg_open(&img, fuzz_input_load(data, size), "raw", QIMG_OPEN_FORCE_SHARE) < 0)
        abort();
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        uint64_t off = 0, len = 0;
        int r = qimg_part_find(img, numbers[i], &off, &len);
        if (r < 0 && qimg_last_error()[0] == '\0') {
            fprintf(stderr, "fuzz-part: failure without a message\n");
            abort();
        }
        if (r == 0 && (len == 0 || off + len < off || off + len > qimg_size(img))) {
            fprintf(stderr, "fuzz-part: partition %u outside the image\n", numbers[i]);
            abort();
        }
        qimg_error_clear();
    }
    qimg_close(img);
    return 0;
}
