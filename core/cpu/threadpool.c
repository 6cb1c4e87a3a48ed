/* core/cpu/threadpool.c - the fixed worker pool behind the CPU backend.
 *
 * A job is published by bumping an atomic generation counter; workers spin on
 * it for AM_THREADPOOL_SPIN_US after their last job (a decode step issues a
 * new matrix-vector product every few tens of microseconds, and a futex wake
 * costs about as much as a small product), then sleep on it with FUTEX_WAIT so
 * an idle pool uses no CPU. Completion works the same way in the other
 * direction: workers count down `pending`, the caller spins briefly on it and
 * then sleeps on it.
 *
 * The sleep/wake handshake relies on the futex compare: a waker bumps the word
 * before FUTEX_WAKE, and FUTEX_WAIT refuses to sleep if the word changed, so a
 * wake-up is never lost. The sleeper counters only let the fast path skip the
 * wake syscall; they are seq_cst so that "publish then check sleepers" and
 * "announce sleeping then re-check the word" cannot both miss each other.
 */
#include "core/threadpool.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* How long an idle worker (or the waiting caller) spins before sleeping. */
#define AM_THREADPOOL_SPIN_US 200
/* Spin iterations between clock reads. */
#define AM_THREADPOOL_SPIN_CHECK 64

struct am_threadpool {
    int n_threads;
    pthread_t *threads; /* (n_threads - 1) workers; the caller is thread 0 */
    am_task_fn fn;
    void *arg;
    _Atomic uint32_t generation; /* bumped once per job (and on shutdown); futex word */
    _Atomic uint32_t pending;    /* workers still running the current job; futex word */
    _Atomic int n_sleeping;      /* workers inside FUTEX_WAIT on generation */
    _Atomic int caller_sleeping; /* the caller is inside FUTEX_WAIT on pending */
    _Atomic int stop;
};

typedef struct {
    am_threadpool *tp;
    int ith;
} worker_arg;

static void futex_wait(_Atomic uint32_t *word, uint32_t expected) {
    /* EAGAIN (the word already changed) and EINTR both just mean: re-check. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spins until *word != value or AM_THREADPOOL_SPIN_US pass; returns the last value read. */
static uint32_t spin_while_equal(_Atomic uint32_t *word, uint32_t value) {
    int64_t deadline = am_now_us() + AM_THREADPOOL_SPIN_US;
    for (;;) {
        for (int i = 0; i < AM_THREADPOOL_SPIN_CHECK; i++) {
            uint32_t v = atomic_load_explicit(word, memory_order_acquire);
            if (v != value) return v;
            cpu_relax();
        }
        if (am_now_us() >= deadline) return value;
    }
}

static void *worker_main(void *p) {
    worker_arg *wa = p;
    am_threadpool *tp = wa->tp;
    int ith = wa->ith;
    am_free(wa);
    uint32_t seen = 0; /* generation of the last job this worker ran */
    for (;;) {
        uint32_t g = spin_while_equal(&tp->generation, seen);
        if (g == seen) {
            atomic_fetch_add(&tp->n_sleeping, 1);
            while ((g = atomic_load(&tp->generation)) == seen)
                futex_wait(&tp->generation, seen);
            atomic_fetch_sub(&tp->n_sleeping, 1);
        }
        seen = g;
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) break;
        tp->fn(tp->arg, ith, tp->n_threads);
        /* The last worker to finish wakes the caller if it went to sleep. */
        if (atomic_fetch_sub(&tp->pending, 1) == 1 && atomic_load(&tp->caller_sleeping))
            futex_wake_all(&tp->pending);
    }
    return NULL;
}

int am_threadpool_new(int n_threads, am_threadpool **out) {
    *out = NULL;
    if (n_threads < 1)
        return am_err_set(AM_EINVAL, "threadpool: n_threads = %d, need >= 1", n_threads);
    am_threadpool *tp = am_calloc(1, sizeof *tp);
    if (!tp) return AM_ENOMEM;
    tp->n_threads = n_threads;
    if (n_threads > 1) {
        tp->threads = am_calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!tp->threads) {
            am_free(tp);
            return AM_ENOMEM;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = am_malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){tp, i};
        int rc = wa ? pthread_create(&tp->threads[i - 1], NULL, worker_main, wa) : ENOMEM;
        if (rc != 0) {
            am_free(wa);
            tp->n_threads = i; /* destroy joins the i - 1 workers that did start */
            am_threadpool_destroy(&tp);
            return rc == ENOMEM ? AM_ENOMEM : am_err_set(-rc, "threadpool: pthread_create failed");
        }
    }
    *out = tp;
    return 0;
}

void am_threadpool_destroy(am_threadpool **p) {
    if (!p || !*p) return;
    am_threadpool *tp = *p;
    atomic_store_explicit(&tp->stop, 1, memory_order_release);
    atomic_fetch_add(&tp->generation, 1);
    futex_wake_all(&tp->generation);
    for (int i = 1; i < tp->n_threads; i++)
        pthread_join(tp->threads[i - 1], NULL);
    am_free(tp->threads);
    am_free(tp);
    *p = NULL;
}

int am_threadpool_size(const am_threadpool *tp) { return tp->n_threads; }

void am_threadpool_run(am_threadpool *tp, am_task_fn fn, void *arg) {
    int nth = tp->n_threads;
    if (nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->pending, (uint32_t)(nth - 1), memory_order_relaxed);
    atomic_fetch_add(&tp->generation, 1); /* seq_cst: publishes fn/arg/pending */
    if (atomic_load(&tp->n_sleeping) > 0) futex_wake_all(&tp->generation);

    fn(arg, 0, nth);

    /* Spin (the other threads usually finish within microseconds of us), then sleep. */
    uint32_t left = atomic_load_explicit(&tp->pending, memory_order_acquire);
    int64_t deadline = left ? am_now_us() + AM_THREADPOOL_SPIN_US : 0;
    while (left != 0 && am_now_us() < deadline) {
        for (int i = 0; i < AM_THREADPOOL_SPIN_CHECK && left != 0; i++) {
            cpu_relax();
            left = atomic_load_explicit(&tp->pending, memory_order_acquire);
        }
    }
    while (left != 0) {
        atomic_store(&tp->caller_sleeping, 1);
        left = atomic_load(&tp->pending);
        if (left != 0) futex_wait(&tp->pending, left);
        atomic_store(&tp->caller_sleeping, 0);
        left = atomic_load_explicit(&tp->pending, memory_order_acquire);
    }
}

typedef struct {
    am_rows_fn fn;
    void *ctx;
    int64_t m;
} rows_job;

static void rows_task(void *arg, int ith, int nth) {
    rows_job *j = arg;
    int64_t r0, r1;
    am_split_range(j->m, 1, ith, nth, &r0, &r1);
    if (r0 < r1) j->fn(j->ctx, r0, r1);
}

void am_threadpool_rows(am_threadpool *tp, int64_t m, int64_t elems_per_row, int64_t min_elems,
                        am_rows_fn fn, void *ctx) {
    if (m <= 0) return;
    if (m == 1 || m * elems_per_row < min_elems || am_threadpool_size(tp) == 1) {
        fn(ctx, 0, m);
        return;
    }
    rows_job j = {fn, ctx, m};
    am_threadpool_run(tp, rows_task, &j);
}
