/* qimg - a fixed pool of worker threads fed from a bounded job queue.
 * submit blocks while the queue is full, which keeps the memory of queued
 * work (buffers held by job arguments) bounded. */
#include <errno.h>
#include <pthread.h>

#include "internal.h"

struct job {
    void (*fn)(void *);
    void *arg;
};

struct qimg_pool {
    pthread_mutex_t lock;
    pthread_cond_t job_ready;   /* queue gained a job, or stopping */
    pthread_cond_t space_free;  /* queue lost a job */
    pthread_cond_t all_done;    /* pending reached 0 */
    struct job *queue;          /* ring buffer */
    size_t cap, head, count;
    size_t pending;             /* queued + running */
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
};

/* Take the next job, or return false when the pool stops. */
static bool next_job(struct qimg_pool *p, struct job *job)
{
    pthread_mutex_lock(&p->lock);
    while (p->count == 0 && !p->stopping)
        pthread_cond_wait(&p->job_ready, &p->lock);
    if (p->count == 0) {
        pthread_mutex_unlock(&p->lock);
        return false;
    }
    *job = p->queue[p->head];
    p->head = (p->head + 1) % p->cap;
    p->count--;
    pthread_cond_signal(&p->space_free);
    pthread_mutex_unlock(&p->lock);
    return true;
}

static void job_finished(struct qimg_pool *p)
{
    pthread_mutex_lock(&p->lock);
    if (--p->pending == 0)
        pthread_cond_broadcast(&p->all_done);
    pthread_mutex_unlock(&p->lock);
}

static void *worker(void *opaque)
{
    struct qimg_pool *p = opaque;
    struct job job;
    while (next_job(p, &job)) {
        job.fn(job.arg);
        job_finished(p);
    }
    return NULL;
}

static void stop_workers(struct qimg_pool *p, unsigned started)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->job_ready);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(p->threads[i], NULL);
}

static void destroy(struct qimg_pool *p)
{
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->job_ready);
    pthread_cond_destroy(&p->space_free);
    pthread_cond_destroy(&p->all_done);
    free(p->queue);
    free(p->threads);
    free(p);
}

int qimg_pool_new(struct qimg_pool **out, unsigned nthreads)
{
    if (nthreads == 0)
        nthreads = 1;
    struct qimg_pool *p = qimg_xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->job_ready, NULL);
    pthread_cond_init(&p->space_free, NULL);
    pthread_cond_init(&p->all_done, NULL);
    p->cap = 4 * (size_t)nthreads;
    p->queue = qimg_xcalloc(p->cap, sizeof *p->queue);
    p->threads = qimg_xcalloc(nthreads, sizeof *p->threads);
    for (unsigned i = 0; i < nthreads; i++) {
        int err = pthread_create(&p->threads[i], NULL, worker, p);
        if (err) {
            stop_workers(p, i);
            destroy(p);
            return qimg_error(-err, "Could not create worker thread: %s", strerror(err));
        }
    }
    p->nthreads = nthreads;
    *out = p;
    return 0;
}

int qimg_pool_submit(struct qimg_pool *p, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&p->lock);
    while (p->count == p->cap && !p->stopping)
        pthread_cond_wait(&p->space_free, &p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        return qimg_error(-ESHUTDOWN, "Thread pool is shutting down");
    }
    p->queue[(p->head + p->count) % p->cap] = (struct job){ fn, arg };
    p->count++;
    p->pending++;
    pthread_cond_signal(&p->job_ready);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void qimg_pool_wait(struct qimg_pool *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0)
        pthread_cond_wait(&p->all_done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

void qimg_pool_free(struct qimg_pool *p)
{
    if (!p)
        return;
    qimg_pool_wait(p);
    stop_workers(p, p->nthreads);
    destroy(p);
}
