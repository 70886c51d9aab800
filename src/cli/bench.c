/* qimg - qemu-img bench: a run of fixed-size reads or writes at a
 * sequence of offsets, `depth` of them in flight at once.
 *
 * qemu keeps `depth` asynchronous requests queued; here `depth` worker
 * threads (capped, see MAX_WORKERS) each take the next offset from a shared
 * cursor and issue a blocking qimg_read/qimg_write.  The offsets follow
 * qemu's rule: the first is -o, each next one is (previous + step) modulo
 * the image size.  With --flush-interval=N a flush follows every N
 * completed requests; by default the queue drains first (--no-drain
 * flushes while requests are still in flight). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

enum { OPT_FLUSH_INTERVAL = CLI_OPT_COMMAND, OPT_PATTERN, OPT_NO_DRAIN };

/* More threads than this only add contention: the kernel queue is what
 * keeps requests in flight. */
#define MAX_WORKERS 64

struct bench_opts {
    int count, depth, flush_interval;
    unsigned pattern;
    int64_t offset, bufsize, step;
    bool write, drain, native_aio, force_share, image_opts;
    const char *fmt;
    unsigned cache_flags;
};

struct bench_run {
    qimg_image *img;
    const struct bench_opts *o;
    uint64_t image_size;
    uint64_t next_offset;        /* offset of the next request to issue */
    int issued, completed, in_flight;
    bool draining;               /* a drained flush is pending or running */
    int error;                   /* first failure (negative errno), 0 if none */
    bool flush_error;            /* the failure came from an undrained flush */
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

/* qemu_strtoi / qemu_strtoui: the whole text is one integer in base 0
 * (leading blanks allowed, nothing after it). */
static bool parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (end == s || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* A non-negative int, as count, depth and --flush-interval take it. */
static int parse_count(const char *arg, const char *what)
{
    long long v;
    if (!parse_int(arg, 0, INT_MAX, &v)) {
        error_report("Invalid %s specified", what);
        exit(1);
    }
    return (int)v;
}

/* qemu_strtoui accepts a negative number and wraps it: any value but -0
 * then exceeds a byte. */
static unsigned parse_pattern(const char *arg)
{
    long long v;
    if (!parse_int(arg, LLONG_MIN + 1, 0xff, &v) || v < 0) {
        error_report("Invalid pattern byte specified");
        exit(1);
    }
    return (unsigned)v;
}

static void parse_args(int argc, char **argv, struct bench_opts *o, const char **filename)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        CLI_LONGOPT_IMAGE_OPTS,
        { "pattern", required_argument, NULL, OPT_PATTERN },
        { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
        CLI_LONGOPT_FORCE_SHARE,
        CLI_LONGOPT_END,
    };
    int c;
    while ((c = cli_getopt(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", longopts)) != -1) {
        switch (c) {
        case 'c': o->count = parse_count(optarg, "request count"); break;
        case 'd': o->depth = parse_count(optarg, "queue depth"); break;
        case 'f': o->fmt = optarg; break;
        case 'n': o->native_aio = true; break;
        case 'i':
            /* "threads" does not undo an earlier -n: qemu keeps the flag */
            if (strcmp(optarg, "native") == 0) {
                o->native_aio = true;
            } else if (strcmp(optarg, "threads") != 0 && strcmp(optarg, "io_uring") != 0) {
                error_report("Invalid aio option: %s", optarg);
                exit(1);
            }
            break;
        case 'o':
            if (cli_cvtnum("offset", optarg, 0, INT64_MAX, &o->offset) < 0)
                exit(1);
            break;
        case 'q': break;   /* qemu-img bench accepts -q and prints all the same */
        case 's':
            if (cli_cvtnum("buffer size", optarg, 0, INT_MAX, &o->bufsize) < 0)
                exit(1);
            break;
        case 'S':
            if (cli_cvtnum("step_size", optarg, 0, INT_MAX, &o->step) < 0)
                exit(1);
            break;
        case 't':
            if (parse_cache_mode(optarg, &o->cache_flags) < 0) {
                error_report("Invalid cache mode");
                exit(1);
            }
            break;
        case 'w': o->write = true; break;
        case 'U': o->force_share = true; break;
        case OPT_FLUSH_INTERVAL:
            o->flush_interval = parse_count(optarg, "flush interval");
            break;
        case OPT_PATTERN: o->pattern = parse_pattern(optarg); break;
        case OPT_NO_DRAIN: o->drain = false; break;
        default: cli_common_option(c, &o->image_opts); break;
        }
    }
    if (optind != argc - 1)
        error_exit("Expecting one image file name");
    *filename = argv[argc - 1];
    if (o->step == 0)
        o->step = o->bufsize;
}

/* Checks qemu makes when it opens the image, with its messages. */
static qimg_image *open_image(const struct bench_opts *o, const char *filename)
{
    unsigned flags = o->cache_flags;
    if (o->write)
        flags |= QIMG_OPEN_RDWR;
    if (o->force_share) {
        if (o->write) {
            error_report("Could not open '%s': force-share=on can only be used with "
                         "read-only images", filename);
            return NULL;
        }
        flags |= QIMG_OPEN_FORCE_SHARE;
    }
    /* Native AIO needs O_DIRECT; qemu finds out after opening the file and
     * before probing, so a missing file is reported first and no probe
     * warning is printed. */
    bool bad_aio = o->native_aio && !(flags & QIMG_OPEN_CACHE_DIRECT);
    if (bad_aio)
        flags |= QIMG_OPEN_NO_PROBE_WARNING;
    qimg_image *img = cli_open(filename, o->fmt, flags, o->image_opts);
    if (img && bad_aio) {
        qimg_close(img);
        error_report("Could not open '%s': aio=native was specified, but it requires "
                     "cache.direct=on, which was not specified.", filename);
        return NULL;
    }
    return img;
}

static void fail_locked(struct bench_run *b, int err, bool from_flush)
{
    if (!b->error) {
        b->error = err;
        b->flush_error = from_flush;
    }
    pthread_cond_broadcast(&b->cond);
}

/* Called with the lock held after a completion that reached a flush
 * point.  Returns with the lock held. */
static void flush_point(struct bench_run *b)
{
    if (!b->o->drain) {
        pthread_mutex_unlock(&b->lock);
        int r = qimg_flush(b->img);
        pthread_mutex_lock(&b->lock);
        if (r < 0)
            fail_locked(b, r, true);
        return;
    }
    b->draining = true;
    while (b->in_flight > 0 && !b->error)
        pthread_cond_wait(&b->cond, &b->lock);
    if (!b->error) {
        /* nothing is in flight and nobody issues while draining */
        pthread_mutex_unlock(&b->lock);
        int r = qimg_flush(b->img);
        pthread_mutex_lock(&b->lock);
        if (r < 0)
            fail_locked(b, r, false);
    }
    b->draining = false;
    pthread_cond_broadcast(&b->cond);
}

static void *worker(void *opaque)
{
    struct bench_run *b = opaque;
    const struct bench_opts *o = b->o;
    size_t len = (size_t)o->bufsize;
    uint8_t *buf = qimg_io_buffer(len);
    memset(buf, (int)o->pattern, len);

    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->draining && !b->error)
            pthread_cond_wait(&b->cond, &b->lock);
        if (b->error || b->issued >= o->count)
            break;
        uint64_t off = b->next_offset;
        /* the image size is never 0 here (see bench_run) */
        b->next_offset = (off + (uint64_t)o->step) % b->image_size;
        b->issued++;
        b->in_flight++;
        pthread_mutex_unlock(&b->lock);

        int r = o->write ? qimg_write(b->img, off, buf, len) : qimg_read(b->img, off, buf, len);

        pthread_mutex_lock(&b->lock);
        b->in_flight--;
        b->completed++;
        if (b->in_flight == 0)
            pthread_cond_broadcast(&b->cond);
        if (r < 0) {
            fail_locked(b, r, false);
            break;
        }
        if (o->flush_interval && b->completed % o->flush_interval == 0)
            flush_point(b);
    }
    pthread_mutex_unlock(&b->lock);
    free(buf);
    return NULL;
}

/* An image of size 0 only accepts empty requests at offset 0 (qemu divides
 * by zero there and dies); the cursor then stays at the start offset. */
static int run_empty_image(struct bench_run *b)
{
    uint8_t byte = 0;
    for (int i = 0; i < b->o->count; i++) {
        int r = b->o->write ? qimg_write(b->img, (uint64_t)b->o->offset, &byte, (size_t)b->o->bufsize)
                            : qimg_read(b->img, (uint64_t)b->o->offset, &byte, (size_t)b->o->bufsize);
        if (r < 0)
            return b->error = r;
    }
    return 0;
}

static int bench_run(struct bench_run *b)
{
    const struct bench_opts *o = b->o;
    if (b->image_size == 0)
        return run_empty_image(b);
    int nworkers = MIN(MIN(o->depth, o->count), MAX_WORKERS);
    pthread_t threads[MAX_WORKERS];
    int started = 0;
    for (; started < nworkers; started++)
        if (pthread_create(&threads[started], NULL, worker, b) != 0)
            break;
    if (started == 0 && nworkers > 0)
        worker(b);   /* no thread could start: run the requests here */
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    return b->error;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cmd_bench(int argc, char **argv)
{
    struct bench_opts o = { .count = 75000, .depth = 64, .bufsize = 4096, .drain = true };
    const char *filename;
    parse_args(argc, argv, &o, &filename);

    if (!o.write && o.flush_interval) {
        error_report("--flush-interval is only available in write tests");
        return 1;
    }
    if (o.flush_interval && o.flush_interval < o.depth) {
        error_report("Flush interval can't be smaller than depth");
        return 1;
    }
    /* qemu never issues a request with a queue depth of 0 and waits
     * forever; refuse instead. */
    if (o.depth == 0 && o.count > 0) {
        error_report("Invalid queue depth specified");
        return 1;
    }

    qimg_image *img = open_image(&o, filename);
    if (!img)
        return 1;

    struct bench_run b = {
        .img = img, .o = &o, .image_size = qimg_size(img), .next_offset = (uint64_t)o.offset,
    };
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);

    printf("Sending %d %s requests, %" PRId64 " bytes each, %d in parallel "
           "(starting at offset %" PRId64 ", step size %" PRId64 ")\n",
           o.count, o.write ? "write" : "read", o.bufsize, o.depth, o.offset, o.step);
    if (o.flush_interval)
        printf("Sending flush every %d requests\n", o.flush_interval);

    double t0 = now_seconds();
    int r = bench_run(&b);
    double t1 = now_seconds();

    if (r < 0) {
        error_report("%s: %s", b.flush_error ? "Failed flush request" : "Failed request",
                     strerror(-r));
    } else {
        printf("Run completed in %3.3f seconds.\n", t1 - t0);
    }
    qimg_close(img);
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
    return r < 0 ? 1 : 0;
}
