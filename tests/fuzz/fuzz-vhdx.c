/* qimg - libFuzzer target: the VHDX parsers, log replay and writes.
 *
 * A VHDX keeps its structures at 1 MiB boundaries (the log at 1 MiB, the
 * BAT and the metadata region after it in qemu's layout), beyond the
 * fuzzer's 1 MiB inputs, so the input is spread over a sparse file:
 *     input [0, 4K)        -> file 0           the file identifier
 *     input [4K, 8K)       -> file 64K         header 1
 *     input [8K, 12K)      -> file 128K        header 2
 *     input [12K, 76K)     -> file 192K        region table 1
 *     input [76K, 140K)    -> file 256K        region table 2
 *     input [140K, 204K)   -> file 1 MiB       the start of the log
 *     input [204K, 236K)   -> file 2 MiB       the start of the BAT
 *     input [236K, ...)    -> file 3 MiB       the metadata region
 * (tests/fuzz/corpus/vhdx-* are images cut the same way).  Each input is
 * opened read-only (the log laid over reads), walked, checked, then opened
 * read-write (the log replayed) and written to. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "fuzz-input.h"

#define K 1024u
static const struct { size_t in, len; uint64_t file; } pieces[] = {
    { 0, 4 * K, 0 },
    { 4 * K, 4 * K, 64 * K },
    { 8 * K, 4 * K, 128 * K },
    { 12 * K, 64 * K, 192 * K },
    { 76 * K, 64 * K, 256 * K },
    { 140 * K, 64 * K, 1u << 20 },
    { 204 * K, 32 * K, 2u << 20 },
    { 236 * K, SIZE_MAX, 3u << 20 },
};
static uint8_t buf[64 * K];

static void die(const char *what)
{
    fprintf(stderr, "fuzz-vhdx: broken contract: %s\n", what);
    abort();
}

static void expect_message(int r, const char *what)
{
    if (r < 0 && qimg_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz-vhdx: %s failed (%d) without a message\n", what, r);
        abort();
    }
}

static void load(const uint8_t *data, size_t size)
{
    fuzz_input_load(data, 0);   /* empty */
    for (size_t i = 0; i < QIMG_ARRAY_SIZE(pieces) && size > pieces[i].in; i++) {
        size_t n = QIMG_MIN(size - pieces[i].in, pieces[i].len);
        if (pwrite(fuzz_input_fd, data + pieces[i].in, n, (off_t)pieces[i].file) != (ssize_t)n)
            abort();
    }
}

static void walk(qimg_image *img)
{
    uint64_t size = qimg_size(img), off = 0;
    for (int i = 0; i < 64 && off < size; i++) {
        struct qimg_extent e;
        memset(&e, 0, sizeof e);
        int r = qimg_block_status(img, off, size - off, &e);
        expect_message(r, "block status");
        if (r < 0)
            return;
        if (e.length == 0 || e.length > size - off)
            die("bad extent length");
        if (e.flags & QIMG_STATUS_DATA)
            expect_message(qimg_read(img, off, buf, (size_t)QIMG_MIN(e.length, sizeof buf)), "read");
        off += e.length;
    }
}

static void session(const char *path, bool rw)
{
    qimg_image *img = NULL;
    unsigned flags = QIMG_OPEN_NO_BACKING | (rw ? QIMG_OPEN_RDWR : QIMG_OPEN_FORCE_SHARE);
    int r = qimg_open(&img, path, "vhdx", flags);
    expect_message(r, "open");
    if (r < 0)
        return;
    walk(img);
    struct qimg_check_result res;
    expect_message(qimg_check(img, &res, 0), "check");
    if (rw) {
        uint64_t size = qimg_size(img);
        memset(buf, 0x5a, sizeof buf);
        if (size > 0)
            expect_message(qimg_write(img, size / 3 - size / 3 % 512, buf,
                                      (size_t)QIMG_MIN(size - size / 3 + size / 3 % 512,
                                                       sizeof buf)), "write");
        expect_message(qimg_flush(img), "flush");
    }
    qimg_close(img);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_input_init("fuzz-vhdx");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load(data, size);
    session(fuzz_input_path, false);
    session(fuzz_input_path, true);
    qimg_error_clear();
    return 0;
}
