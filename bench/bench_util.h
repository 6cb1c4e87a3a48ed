/* bench/bench_util.h - measuring helpers shared by the encoder benchmarks (bench_audio.c,
 * bench_vision.c): a monotonic clock, a fatal-error exit, a seeded xorshift urand() and the
 * backend GEMM peak (gemm_gflops).
 *
 * Define AM_BENCH_NAME (the program name die() prints) before including. Everything here
 * is static inline, so a benchmark that does not use a helper gets no warning.
 */
#ifndef AM_BENCH_BENCH_UTIL_H
#define AM_BENCH_BENCH_UTIL_H

#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef AM_BENCH_NAME
#error "define AM_BENCH_NAME (the benchmark's name) before including bench_util.h"
#endif

/* Seconds on the monotonic clock. */
static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Prints "AM_BENCH_NAME: what: <error message>" and exits with status 1. */
static inline void die(const char *what, int rc) {
    fprintf(stderr, AM_BENCH_NAME ": %s: %s\n", what,
            am_err_msg()[0] ? am_err_msg() : am_strerror(rc));
    exit(1);
}

/* xorshift64 step of *s: uniform [-1, 1). */
static inline float urand(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (float)((*s >> 40) / 8388608.0 - 1.0);
}

/* Best GFLOP/s of `repeats` GEMMs y (M, N) = x (M, K) W^T with W of dtype dt. */
static inline double gemm_gflops(am_backend *be, am_dtype dt, int64_t M, int64_t N, int64_t K,
                                 int repeats) {
    size_t rb = am_dtype_row_bytes(dt, K);
    void *w = am_aligned_alloc(rb * (size_t)N);
    float *x = am_aligned_alloc((size_t)(M * K) * 4), *y = am_aligned_alloc((size_t)(M * N) * 4);
    float *row = am_aligned_alloc((size_t)K * 4);
    if (!w || !x || !y || !row) die("gemm buffers", AM_ENOMEM);
    uint64_t s = 42;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++)
            row[k] = 0.03f * urand(&s);
        am_quantize_row(dt, row, (char *)w + rb * (size_t)n, K);
    }
    for (int64_t i = 0; i < M * K; i++)
        x[i] = urand(&s);
    am_matrix m = {dt, N, K, w, rb};
    double best = 1e30;
    for (int r = 0; r < repeats + 1; r++) { /* the first run warms up (oneDNN primitive creation) */
        double t0 = now_s();
        int rc = be->ops->matmul(be, &m, x, y, M);
        if (rc) die("matmul", rc);
        double t = now_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    am_aligned_free(w), am_aligned_free(x), am_aligned_free(y), am_aligned_free(row);
    return 2.0 * (double)M * N * K / best / 1e9;
}

#endif
