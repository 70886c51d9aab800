/* The worker pool: every submitted job runs once, wait() really waits,
 * and a small queue does not lose jobs when submitters block. */
#include <stdatomic.h>

#include "internal.h"
#include "unit.h"

static atomic_int counter;

static void bump(void *arg)
{
    atomic_fetch_add(&counter, *(int *)arg);
}

static void slow_bump(void *arg)
{
    usleep(1000);
    bump(arg);
}

TEST(runs_every_job)
{
    struct qimg_pool *p = NULL;
    int one = 1;
    CHECK_EQ_INT(qimg_pool_new(&p, 4), 0);
    atomic_store(&counter, 0);
    for (int i = 0; i < 10000; i++)
        CHECK_EQ_INT(qimg_pool_submit(p, bump, &one), 0);
    qimg_pool_wait(p);
    CHECK_EQ_INT(atomic_load(&counter), 10000);
    qimg_pool_free(p);
}

TEST(wait_waits_for_running_jobs)
{
    struct qimg_pool *p = NULL;
    int one = 1;
    CHECK_EQ_INT(qimg_pool_new(&p, 3), 0);
    for (int round = 1; round <= 3; round++) {
        atomic_store(&counter, 0);
        for (int i = 0; i < 50; i++)
            qimg_pool_submit(p, slow_bump, &one);
        qimg_pool_wait(p);
        CHECK_EQ_INT(atomic_load(&counter), 50);
    }
    qimg_pool_free(p);
}

TEST(free_finishes_queue_and_zero_threads_means_one)
{
    struct qimg_pool *p = NULL;
    int two = 2;
    CHECK_EQ_INT(qimg_pool_new(&p, 0), 0);
    atomic_store(&counter, 0);
    for (int i = 0; i < 20; i++)
        qimg_pool_submit(p, slow_bump, &two);
    qimg_pool_free(p);
    CHECK_EQ_INT(atomic_load(&counter), 40);
}

TEST(idle_wait_returns)
{
    struct qimg_pool *p = NULL;
    CHECK_EQ_INT(qimg_pool_new(&p, 2), 0);
    qimg_pool_wait(p);
    qimg_pool_free(p);
    qimg_pool_free(NULL);
}

int main(void)
{
    RUN(runs_every_job);
    RUN(wait_waits_for_running_jobs);
    RUN(free_finishes_queue_and_zero_threads_means_one);
    RUN(idle_wait_returns);
    return UNIT_DONE();
}
