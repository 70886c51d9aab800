/* qimg - libFuzzer target: any bytes as an image file.
 *
 * The input goes into a memfd; the target opens it as the tool would
 * (probed, then once with each driver named explicitly, so every parser
 * sees every input), reads a few ranges, walks the block status of the
 * image and of its chain, builds the info text and runs the driver's
 * read-only check.  It aborts on a broken library contract (a failure
 * without a message, an extent of length 0 or past the request) so that
 * libFuzzer reports it like a crash.
 *
 * Backing names come from the hostile image: the images are always opened
 * with QIMG_OPEN_NO_BACKING, so a name such as "/etc/shadow" or
 * "json:{...}" never makes the fuzzer open a host file.  The chain code
 * still runs: reads of unallocated ranges and qimg_block_status_chain()
 * go through it with no backing node below. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "fuzz-input.h"

#define READ_CHUNK (64u * 1024)
#define MAX_EXTENTS 256
#define MAX_EXTENT_READS 16

static uint8_t read_buf[READ_CHUNK];

static void die(const char *what)
{
    fprintf(stderr, "fuzz-open: broken contract: %s\n", what);
    abort();
}

/* Every failure must leave a message for the CLI to print. */
static void expect_message(int r, const char *what)
{
    if (r < 0 && qimg_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz-open: %s failed (%d) without a message\n", what, r);
        abort();
    }
}

static void read_range(qimg_image *img, uint64_t off, uint64_t len)
{
    uint64_t size = qimg_size(img);
    if (off >= size)
        return;
    len = QIMG_MIN(len, QIMG_MIN((uint64_t)READ_CHUNK, size - off));
    expect_message(qimg_read(img, off, read_buf, (size_t)len), "read");
}

static void check_extent(const struct qimg_extent *e, uint64_t off, uint64_t len)
{
    if (e->length == 0)
        die("block status returned an empty extent");
    if (e->length > len)
        die("block status returned an extent longer than asked");
    if (e->offset != off)
        die("block status extent does not start at the offset asked");
}

/* Walk at most MAX_EXTENTS extents from 0 and read the start of a few data
 * extents (where a driver maps guest offsets to host offsets). */
static void walk_status(qimg_image *img, bool chain)
{
    uint64_t size = qimg_size(img), off = 0;
    int reads = 0;
    for (int i = 0; i < MAX_EXTENTS && off < size; i++) {
        struct qimg_extent e;
        memset(&e, 0, sizeof e);
        uint64_t len = size - off;
        int r = chain ? qimg_block_status_chain(img, off, len, &e)
                      : qimg_block_status(img, off, len, &e);
        expect_message(r, "block status");
        if (r < 0)
            return;
        check_extent(&e, off, len);
        if ((e.flags & QIMG_STATUS_DATA) && reads++ < MAX_EXTENT_READS)
            read_range(img, off, 4096);
        off += e.length;
    }
}

static void exercise(qimg_image *img)
{
    uint64_t size = qimg_size(img);
    read_range(img, 0, READ_CHUNK);
    if (size > 1) {
        read_range(img, size / 2 - (size / 2) % 512, READ_CHUNK);
        read_range(img, size > READ_CHUNK ? size - READ_CHUNK : 0, READ_CHUNK);
        read_range(img, size - 1, 1);          /* an unaligned tail byte */
    }
    walk_status(img, false);
    walk_status(img, true);

    char *text = NULL;
    int r = qimg_info_json(img, &text);
    expect_message(r, "info json");
    free(text);
    text = NULL;
    r = qimg_info_human(img, &text);
    expect_message(r, "info human");
    free(text);

    if (img->drv->check) {
        struct qimg_check_result res;
        r = qimg_check(img, &res, 0);
        expect_message(r, "check");
    }
}

static void open_and_exercise(const char *path, const char *fmt, unsigned extra)
{
    qimg_image *img = NULL;
    unsigned flags = QIMG_OPEN_NO_BACKING | QIMG_OPEN_FORCE_SHARE | extra;
    int r = qimg_open(&img, path, fmt, flags);
    expect_message(r, "open");
    if (r < 0) {
        if (img)
            die("failed open returned an image");
        return;
    }
    if (img->backing)
        die("QIMG_OPEN_NO_BACKING opened a backing image");
    if (extra & QIMG_OPEN_NO_IO) {
        char *text = NULL;
        expect_message(qimg_info_json(img, &text), "info json (no I/O)");
        free(text);
    } else {
        exercise(img);
    }
    qimg_close(img);
}

/* LUKS volumes are also opened with a passphrase ("fuzz", the seed's),
 * so keyslot parsing, PBKDF2 and the anti-forensic merge run; the
 * PBKDF2 count a header may ask for is capped low so that no input
 * spends more than a few milliseconds there. */
static void open_luks_unlocked(const char *path)
{
    char text[512];
    qimg_image *img = NULL;
    snprintf(text, sizeof text, "driver=luks,file.filename=%s,key-secret=fuzz-secret", path);
    int r = qimg_open_opts(&img, text, QIMG_OPEN_NO_BACKING | QIMG_OPEN_FORCE_SHARE);
    expect_message(r, "open luks with a secret");
    if (r < 0)
        return;
    exercise(img);
    qimg_close(img);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_input_init("fuzz-image");
    setenv("QIMG_LUKS_MAX_ITERS", "4096", 1);
    if (qimg_object_add("secret,id=fuzz-secret,data=fuzz") < 0)
        die("cannot add the fuzzer's secret");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_input_load(data, size);

    open_and_exercise(path, NULL, 0);                 /* probed, as the CLI */
    open_and_exercise(path, NULL, QIMG_OPEN_NO_IO);   /* as info opens */
    for (size_t i = 0; qimg_drivers[i]; i++) {
        if (qimg_drivers[i] != &qimg_driver_raw)
            open_and_exercise(path, qimg_drivers[i]->name, 0);
    }
    open_luks_unlocked(path);
    qimg_error_clear();
    return 0;
}
