/* core/threadpool.h - a fixed pool of worker threads for data-parallel kernels.
 *
 * am_threadpool_run() runs fn(arg, ith, nth) once for every ith in [0, nth),
 * nth = the pool size, with the calling thread acting as ith = 0, and returns
 * when all have finished. It is meant for many short jobs per second (one per
 * matrix-vector product), so workers spin briefly on an atomic generation
 * counter before sleeping on a futex/condvar: an idle pool uses no CPU.
 * Only one thread may call am_threadpool_run on a pool at a time.
 */
#ifndef AM_THREADPOOL_H
#define AM_THREADPOOL_H

#include <stdint.h>

typedef struct am_threadpool am_threadpool;
typedef void (*am_task_fn)(void *arg, int ith, int nth);

/* n_threads >= 1 (1 means: run on the caller only). AM_EINVAL, AM_ENOMEM, or a
 * negative errno from pthread_create. */
int am_threadpool_new(int n_threads, am_threadpool **out);
/* Joins the workers; accepts NULL; sets *p = NULL. */
void am_threadpool_destroy(am_threadpool **p);
int am_threadpool_size(const am_threadpool *tp);
void am_threadpool_run(am_threadpool *tp, am_task_fn fn, void *arg);

/* Runs fn(ctx, r0, r1) over the rows [0, m), split evenly between the pool's
 * threads, or all on the calling thread when there is one row, one thread, or
 * fewer than min_elems elements in all (m * elems_per_row): waking the pool
 * would cost more than the work. */
typedef void (*am_rows_fn)(void *ctx, int64_t r0, int64_t r1);
void am_threadpool_rows(am_threadpool *tp, int64_t m, int64_t elems_per_row, int64_t min_elems,
                        am_rows_fn fn, void *ctx);

/* Splits [0, n) into nth near-equal chunks aligned to `align` elements; the
 * chunk of thread ith is [*begin, *end). */
static inline void am_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *begin,
                                  int64_t *end) {
    int64_t blocks = (n + align - 1) / align;
    int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
    *begin = b0 * align < n ? b0 * align : n;
    *end = b1 * align < n ? b1 * align : n;
}

#endif
