/* qimg - internal: the image node, child files, safe mode and the open budget.
 * Part of internal.h (which includes every part); see docs/architecture.md. */
#ifndef QIMG_LIB_IMAGE_H
#define QIMG_LIB_IMAGE_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/types.h>

#include "qimg.h"
#include "util.h"
#include "io.h"
#include "driver.h"

/* ============================================================ image node */

struct qimg_image {
    const struct qimg_driver *drv;
    void *opaque;                   /* driver state */
    struct qimg_io *file;           /* the storage holding the image */
    char *filename;                 /* as opened (or json:{...}) */
    uint64_t size;                  /* virtual size, set by open */
    unsigned flags;                 /* enum qimg_open_flags */
    bool read_only;
    bool probed_raw;                /* guard block 0 against format headers */

    /* backing: names as recorded in the image (set by driver open) */
    char *backing_file;             /* NULL when none */
    char *backing_fmt;              /* NULL when not recorded */
    char *full_backing_filename;    /* resolved against the image's dir */
    struct qimg_image *backing;     /* opened chain (NULL with NO_BACKING) */

    qimg_opts *node_opts;           /* the option tree this node was opened
                                       with, unmarked (qimg_reopen_rw) */
    qimg_opts *backing_opts;        /* the user's "backing" subtree, or NULL */
    char *backing_ref;              /* a bare "backing=NAME" (a node reference) */
    bool no_backing;                /* "backing": null */

    pthread_mutex_t lock;           /* drivers serialize metadata with it */
    /* A storage node opened as the image (json:{"driver":"file",...}, -f
     * file): read as raw, shown by the backend's name as qemu shows it. */
    char *protocol_format;
    /* The name the user gave when the image is shown by another one
     * (json:{...}): messages that quote the command line use it. */
    char *given_name;
};

/* qemu's three-line warning when probing guessed raw for an image
 * opened for writing. */
void qimg_warn_probed_raw(const char *filename);

/* Read [off, off+len) of img's backing image into buf: zeros where there
 * is no backing image or past its end.  Drivers call it for unallocated
 * ranges. */
int qimg_read_backing(struct qimg_image *img, uint64_t off, void *buf, size_t len);

/* Call piece(img, off, buf, len) on [off, off+len) cut where a multiple
 * of unit begins (a driver's block or cluster), buf advancing with off;
 * stops at the first error.  For writes buf is cast from const. */
typedef int (*qimg_piece_fn)(struct qimg_image *img, uint64_t off, uint8_t *buf, size_t len);
int qimg_for_each_piece(struct qimg_image *img, uint64_t off, uint8_t *buf, size_t len,
                        uint64_t unit, qimg_piece_fn piece);

/* Block status inside an allocated host range, as qemu asks the file:
 * ext->length shortened to the file's first run at ext->host_offset, a
 * hole marked zero; the range past the end of the file left as it is, or
 * (past_eof_zero) marked zero. */
void qimg_extent_look_into_file(struct qimg_io *io, struct qimg_extent *ext, bool past_eof_zero);

/* After a driver's change_backing has written the new names: what the
 * image records (backing NULL: no backing file, and no format). */
void qimg_image_set_backing_names(struct qimg_image *img, const char *backing, const char *fmt);

/* Measuring a new image (drivers' measure): how many blocks of `block`
 * bytes of [off, off+len) of src hold data a copy stores — zeros, holes
 * and unallocated ranges are skipped, as convert skips them; a block is
 * counted once however many extents touch it. */
int qimg_count_data_blocks(struct qimg_image *src, uint64_t off, uint64_t len, uint64_t block,
                           uint64_t *count);

/* qimg_open_backing_chain (qimg.h) is depth-limited and loop-detected. */

/* Close img's driver and storage and open both again read-write in place
 * from the same option tree, keeping the layers below (commit writes into
 * a backing layer).  cache_flags: QIMG_OPEN_CACHE_* to use. */
int qimg_reopen_rw(struct qimg_image *img, unsigned cache_flags);

/* ---- child files: one policy for every file an image names ----
 *
 * kind says what the parent's metadata names: a backing image, an
 * external data file (qcow2), later VMDK extents and VHD parents.
 *
 *  - user_opts: the subtree the user gave for this child (--image-opts or
 *    json: keys such as backing.file.filename, data-file.filename); it is
 *    used as given, in any mode, and name_in_image is ignored.
 *  - otherwise name_in_image, the name stored in the image:
 *    * refused in safe mode (unless the user named that file with -b/-B,
 *      see qimg_safe_allow_file);
 *    * a data file or extent name is a plain local path, never json: or a
 *      protocol (CVE-2024-4467): {driver=file, filename=NAME};
 *    * a backing name keeps qemu's forms: json:{...} is parsed into the
 *      child's tree, a protocol prefix picks a storage backend, a plain name
 *      is resolved against the parent's directory (qimg_path_combine);
 *  - FIFOs, sockets and directories are refused by the file backend before
 *    anything blocks.
 *
 * qimg_child_opts gives the child's option tree (an image node for
 * QIMG_CHILD_BACKING, a storage node otherwise; *out NULL: no child) and
 * its display name; qimg_open_child opens a storage child with ioflags and
 * reports options nobody used ("Block protocol 'file' doesn't support the
 * option 'x'").  *out is NULL (and 0 returned) when there is no child. */
enum qimg_child_kind {
    QIMG_CHILD_BACKING,
    QIMG_CHILD_DATA_FILE,
    QIMG_CHILD_EXTENT,
    QIMG_CHILD_PARENT_LOCATOR,
};
int qimg_child_opts(struct qimg_image *parent, enum qimg_child_kind kind,
                    const char *name_in_image, const qimg_opts *user_opts,
                    qimg_opts **out, char **display);
int qimg_open_child(struct qimg_image *parent, enum qimg_child_kind kind,
                    const char *name_in_image, qimg_opts *user_opts, unsigned ioflags,
                    struct qimg_io **out);
/* May a child the image names be opened?  0, or the safe-mode error. */
int qimg_child_permitted(struct qimg_image *parent, enum qimg_child_kind kind,
                         const char *name_in_image);
/* Is safe mode on for this image (process-wide or QIMG_OPEN_SAFE)? */
bool qimg_image_safe(const struct qimg_image *img);
/* A file the user named (-b, -B): safe mode lets images name it. */
void qimg_safe_allow_file(const char *path);
/* Mark the options every node accepts (node-name, read-only, cache.*...). */
void qimg_opts_take_common(qimg_opts *o);
/* Open a storage node from its tree and report an option left unused. */
int qimg_open_storage(struct qimg_io **out, qimg_opts *opts, unsigned ioflags);

/* The per-open budget of safe mode (thread-local): begin/end nest (the
 * outermost decides whether it is active: safe); while active,
 * qimg_alloc_from_image charges it, and every charge or qimg_budget_check
 * checks the deadline. */
void qimg_budget_begin(bool safe);
void qimg_budget_end(void);
int qimg_budget_check(void);

/* Open an image and its backing chain from its option tree (image.c),
 * reporting options nobody used; display: its name in messages. */
int qimg_open_tree(struct qimg_image **out, qimg_opts *o, const char *display, unsigned flags);
/* The open flags (QIMG_OPEN_*) that storage flags (QIMG_IO_*) stand for. */
unsigned qimg_open_flags_for_io(unsigned ioflags);
/* A name the image records (backing file, data file) resolved as qemu
 * resolves it: absolute and protocol names as they are, others against
 * the directory of the image's file (qimg_io_dirname: under a filter, its
 * child's); NULL with an error when that directory cannot be known. */
char *qimg_image_resolve_name(const struct qimg_image *img, const char *name);
/* Add to *o the storage tree a name given as a string stands for
 * (qimg_io_name_opts), under child ("file" -> file.filename=...). */
int qimg_storage_name_tree(qimg_opts **o, const char *child, const char *name);

/* qemu's name for a node it cannot name by a file: "json:{...}" of the
 * options in tree o (flattened, as opened) that decide what it reads, for
 * a node of format, or (format NULL) for a storage node opened as the image
 * (names.c). */
char *qimg_node_json_name(const qimg_opts *o, const char *format);

/* Byte-size limit of one chain. */
#define QIMG_MAX_CHAIN_DEPTH 1000

#endif
