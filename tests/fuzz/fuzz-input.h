/* The input of a fuzz run as a file qimg can open: one memfd per process,
 * rewritten for every input, named by its /proc/self/fd path.  Every
 * target also caps image-sized allocations, so one hostile table cannot
 * take more than this at once. */
#ifndef QIMG_FUZZ_INPUT_H
#define QIMG_FUZZ_INPUT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int fuzz_input_fd = -1;
static char fuzz_input_path[64];

static void fuzz_input_init(const char *name)
{
    setenv("QIMG_MEM_BUDGET", "64M", 1);
    fuzz_input_fd = memfd_create(name, 0);
    if (fuzz_input_fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(fuzz_input_path, sizeof fuzz_input_path, "/proc/self/fd/%d", fuzz_input_fd);
}

/* Makes the file hold exactly data; returns its path. */
static const char *fuzz_input_load(const uint8_t *data, size_t size)
{
    if (ftruncate(fuzz_input_fd, 0) < 0 ||
        pwrite(fuzz_input_fd, data, size, 0) != (ssize_t)size)
        abort();
    return fuzz_input_path;
}

#endif
