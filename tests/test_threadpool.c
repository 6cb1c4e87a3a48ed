/* tests/test_threadpool.c - the worker pool: every thread index runs exactly
 * once per job, jobs see each other's results in order, workers that went to
 * sleep wake up, and an idle pool burns no CPU. */
#include "test_util.h"

#include "core/error.h"
#include "core/threadpool.h"

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define MAX_THREADS 8

typedef struct {
    atomic_int calls[MAX_THREADS];
    atomic_int bad_nth;
    int64_t data[4096];
    int64_t round;
} job;

static void count_task(void *arg, int ith, int nth) {
    job *j = arg;
    if (nth < 1 || nth > MAX_THREADS || ith < 0 || ith >= nth) {
        atomic_fetch_add(&j->bad_nth, 1);
        return;
    }
    atomic_fetch_add(&j->calls[ith], 1);
    /* Each thread updates its own slice; the next round reads all of it. */
    int64_t b, e;
    am_split_range(4096, 16, ith, nth, &b, &e);
    for (int64_t i = b; i < e; i++)
        j->data[i] += j->round;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run_rounds(int n_threads, int rounds, int pause_every, int pause_ms) {
    am_threadpool *tp = NULL;
    CHECK_OK(am_threadpool_new(n_threads, &tp));
    if (!tp) return;
    CHECK_EQ_INT(am_threadpool_size(tp), n_threads);
    static job j;
    memset(&j, 0, sizeof j);
    int64_t expect = 0;
    for (int r = 1; r <= rounds; r++) {
        j.round = r;
        expect += r;
        am_threadpool_run(tp, count_task, &j);
        if (pause_every && r % pause_every == 0) sleep_ms(pause_ms); /* let workers fall asleep */
    }
    for (int t = 0; t < n_threads; t++)
        CHECK_EQ_INT(atomic_load(&j.calls[t]), rounds);
    CHECK_EQ_INT(atomic_load(&j.bad_nth), 0);
    int wrong = 0;
    for (int i = 0; i < 4096; i++)
        wrong += j.data[i] != expect;
    CHECK_EQ_INT(wrong, 0);
    am_threadpool_destroy(&tp);
    CHECK(tp == NULL);
}

static void test_many_short_jobs(void) {
    run_rounds(1, 1000, 0, 0);
    run_rounds(2, 20000, 0, 0);
    run_rounds(4, 5000, 0, 0); /* more threads than cores */
}

static void test_wake_from_sleep(void) {
    run_rounds(2, 40, 1, 3); /* every job finds the workers asleep */
    run_rounds(3, 200, 7, 1);
}

static void test_idle_uses_no_cpu(void) {
    am_threadpool *tp = NULL;
    CHECK_OK(am_threadpool_new(2, &tp));
    static job j;
    memset(&j, 0, sizeof j);
    am_threadpool_run(tp, count_task, &j);
    sleep_ms(20); /* past the spin period */
    double c0 = cpu_seconds();
    sleep_ms(200);
    double used = cpu_seconds() - c0;
    printf("     idle pool: %.1f ms CPU in 200 ms\n", used * 1e3);
    CHECK(used < 0.010);
    am_threadpool_destroy(&tp);
}

static void test_errors(void) {
    am_threadpool *tp = (am_threadpool *)1;
    CHECK_EQ_INT(am_threadpool_new(0, &tp), AM_EINVAL);
    CHECK(tp == NULL);
    am_threadpool_destroy(&tp); /* accepts NULL */
    am_threadpool_destroy(NULL);
}

static void test_split_range(void) {
    int64_t b, e, covered = 0, prev_end = 0;
    for (int t = 0; t < 3; t++) {
        am_split_range(100, 16, t, 3, &b, &e);
        CHECK_EQ_INT(b, prev_end);
        CHECK(b % 16 == 0 || b == 100);
        covered += e - b;
        prev_end = e;
    }
    CHECK_EQ_INT(covered, 100);
    CHECK_EQ_INT(prev_end, 100);
}

AM_TEST_MAIN(AM_TEST(test_errors), AM_TEST(test_split_range), AM_TEST(test_many_short_jobs),
             AM_TEST(test_wake_from_sleep), AM_TEST(test_idle_uses_no_cpu))
