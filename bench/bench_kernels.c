/* bench/bench_kernels.c - decode and prefill kernel speed of the CPU backend.
 *
 *   bench_kernels [n_threads=2] [working_set_MiB=1024] [all|matvec|gemm|attn]
 *
 * 1. Memory bandwidth with the same thread count, through our thread pool:
 *    a STREAM triad a = b + s*c (counted as STREAM does: 3 arrays, no
 *    write-allocate traffic) and a read-only sum, the ceiling a matvec could
 *    reach since it only reads. Re-measured next to every matvec line.
 * 2. Matrix-vector products (matmul with M = 1, and M = 4) for every weight
 *    dtype on 5632x2048 and 32000x2048 matrices, cycling through distinct
 *    copies that add up to the working set (>> L3) so weights come from DRAM:
 *    GB/s of weight bytes and the fraction of the triad and read bandwidths.
 * 3. GEMMs (M = 1, 4, 8, 16, 32, 64, 128, 512; K = 2048; N = 5632; one
 *    dtype with BENCH_DTYPE=q8_0 etc.; the matrix stays in the caches) per dtype in
 *    GFLOP/s (the path cpu_matmul.c's dispatcher picks, in precision f32;
 *    BF16 again in precision bf16). Small M is a batched decode step.
 * 4. Attention: decode (M = 1) over T keys for the 1b shape (H = 32, Hkv = 4,
 *    D = 64) at T = 512 and 2048 and the 7b shape (H = Hkv = 32, D = 128) at
 *    T = 2048, in us per call and GB/s of K+V read (T * Hkv * D * 2 floats).
 *    "hot" repeats one layer's cache (it stays in L2/L3: the kernel's own
 *    speed); "cold" cycles through distinct caches, like the layers of a
 *    model, adding up to >= 256 MiB so K and V come from DRAM. Then prefill
 *    (M = 512 from position 0) in GFLOP/s of the causal q.k and p.v products.
 */
#include "core/alloc.h"
#include "core/clock.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/threadpool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_STREAM_FLOATS (48ll << 20) /* 192 MiB per array */
#define BENCH_REPEATS       5

static void *xalloc(size_t n) {
    void *p = am_aligned_alloc(n);
    if (!p) {
        fprintf(stderr, "bench_kernels: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* ---- bandwidth ---- */

typedef struct {
    float *a, *b, *c;
    int64_t n;
    double partial[64];
} stream_job;

static void triad_task(void *p, int ith, int nth) {
    stream_job *j = p;
    int64_t b, e;
    am_split_range(j->n, 1024, ith, nth, &b, &e);
    for (int64_t i = b; i < e; i++)
        j->a[i] = j->b[i] + 3.0f * j->c[i];
}

static void init_task(void *p, int ith, int nth) {
    stream_job *j = p;
    int64_t b, e;
    am_split_range(j->n, 1024, ith, nth, &b, &e);
    for (int64_t i = b; i < e; i++)
        j->a[i] = 1.0f, j->b[i] = 2.0f, j->c[i] = (float)(i & 7);
}

static void read_task(void *p, int ith, int nth) {
    stream_job *j = p;
    int64_t b, e;
    am_split_range(j->n, 1024, ith, nth, &b, &e);
    float s[16] = {0};
    for (int64_t i = b; i + 16 <= e; i += 16)
        for (int l = 0; l < 16; l++)
            s[l] += j->c[i + l];
    double t = 0;
    for (int l = 0; l < 16; l++)
        t += s[l];
    j->partial[ith] = t;
}

/* ---- matvec ---- */

static const am_dtype dtypes[] = {AM_DTYPE_F32, AM_DTYPE_F16, AM_DTYPE_BF16, AM_DTYPE_Q8_0,
                                  AM_DTYPE_Q4_0};

/* One random matrix of dtype dt, (N, K). */
static void *make_weights(am_dtype dt, int64_t N, int64_t K, size_t *bytes) {
    size_t rb = am_dtype_row_bytes(dt, K);
    char *w = xalloc((size_t)N * rb);
    float *row = xalloc((size_t)K * 4);
    unsigned s = 12345;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++) {
            s = s * 1103515245u + 12345u;
            row[k] = (float)((s >> 9) & 0xffff) / 32768.0f - 1.0f;
        }
        am_quantize_row(dt, row, w + (size_t)n * rb, K);
    }
    am_aligned_free(row);
    *bytes = (size_t)N * rb;
    return w;
}

/* The memory bandwidth on this machine (a VM, shared) drifts by 2x over
 * seconds, so each matvec measurement is interleaved with triad and read
 * measurements, and the fractions compare the best of each taken in the same
 * few seconds. */
typedef struct {
    am_threadpool *tp;
    stream_job *sj;
} bw_ctx;

static void bw_sample(bw_ctx *bw, double *triad, double *read) {
    for (int r = 0; r < 2; r++) {
        double t = am_now_s();
        am_threadpool_run(bw->tp, triad_task, bw->sj);
        t = am_now_s() - t;
        double g = 3.0 * bw->sj->n * 4 / t / 1e9;
        *triad = g > *triad ? g : *triad;
        t = am_now_s();
        am_threadpool_run(bw->tp, read_task, bw->sj);
        t = am_now_s() - t;
        g = 1.0 * bw->sj->n * 4 / t / 1e9;
        *read = g > *read ? g : *read;
    }
}

static void bench_matvec(am_backend *b, bw_ctx *bw, int64_t N, int64_t K, size_t working_set) {
    float *x = xalloc(4 * (size_t)K * 4), *y = xalloc(4 * (size_t)N * 4);
    for (int64_t i = 0; i < 4 * K; i++)
        x[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    const char *only_dt = getenv("BENCH_DTYPE"); /* one weight dtype, or all */
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        if (only_dt && only_dt[0] && strcmp(only_dt, am_dtype_name(dtypes[d])) != 0) continue;
        size_t bytes;
        void *proto = make_weights(dtypes[d], N, K, &bytes);
        int copies = (int)((working_set + bytes - 1) / bytes);
        copies = copies < 2 ? 2 : copies;
        char *all = xalloc(bytes * (size_t)copies); /* distinct copies: nothing stays cached */
        for (int c = 0; c < copies; c++)
            memcpy(all + (size_t)c * bytes, proto, bytes);
        am_aligned_free(proto);
        for (int64_t m = 1; m <= 4; m += 3) {
            double best = 1e9, triad = 0, read = 0;
            for (int round = 0; round < 3; round++) {
                bw_sample(bw, &triad, &read);
                for (int r = 0; r < BENCH_REPEATS; r++) {
                    double t = am_now_s();
                    for (int c = 0; c < copies; c++) {
                        am_matrix w = {dtypes[d], N, K, all + (size_t)c * bytes,
                                       am_dtype_row_bytes(dtypes[d], K)};
                        if (b->ops->matmul(b, &w, x, y, m) != 0) {
                            fprintf(stderr, "matmul failed: %s\n", am_err_msg());
                            exit(1);
                        }
                    }
                    t = (am_now_s() - t) / copies;
                    best = t < best ? t : best;
                }
            }
            double gbs = bytes / best / 1e9;
            printf(
                "matvec %-5s M=%lld %5lldx%-5lld %6.1f MiB x%-3d %8.1f us %6.1f GB/s | triad %5.1f "
                "read %5.1f GB/s | %5.1f%% of triad %5.1f%% of read\n",
                am_dtype_name(dtypes[d]), (long long)m, (long long)N, (long long)K,
                bytes / 1048576.0, copies, best * 1e6, gbs, triad, read, 100 * gbs / triad,
                100 * gbs / read);
            fflush(stdout);
        }
        am_aligned_free(all);
    }
    am_aligned_free(x), am_aligned_free(y);
}

/* ---- GEMM ---- */

/* The GEMM section's clock: wall time, or with BENCH_CPUTIME=1 (meant for 1
 * thread, where the calling thread does all the work) this thread's CPU time,
 * which a machine shared with other jobs does not inflate by descheduling us
 * (their cache and memory traffic still counts). */
static double gemm_clock(void) {
    static int cputime = -1;
    if (cputime < 0) cputime = getenv("BENCH_CPUTIME") && atoi(getenv("BENCH_CPUTIME")) == 1;
    if (!cputime) return am_now_s();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench_gemm(am_backend *b, const char *path, const char *only_dt) {
    const int64_t K = 2048, N = 5632, ms[] = {1, 4, 8, 16, 32, 64, 128, 512};
    const char *env_dt = getenv("BENCH_DTYPE"); /* one weight dtype (e.g. q8_0), or all */
    if (!only_dt)
        only_dt = env_dt;
    else if (env_dt && env_dt[0] && strcmp(env_dt, only_dt) != 0)
        return;
    const int n_ms = (int)(sizeof ms / sizeof ms[0]);
    float *x = xalloc(512 * (size_t)K * 4), *y = xalloc(512 * (size_t)N * 4);
    for (int64_t i = 0; i < 512 * K; i++)
        x[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        if (only_dt && only_dt[0] && strcmp(only_dt, am_dtype_name(dtypes[d])) != 0) continue;
        size_t bytes;
        void *wd = make_weights(dtypes[d], N, K, &bytes);
        am_matrix w = {dtypes[d], N, K, wd, am_dtype_row_bytes(dtypes[d], K)};
        printf("gemm   %-5s %-9s", am_dtype_name(dtypes[d]), path);
        for (int mi = 0; mi < n_ms; mi++) {
            double best = 1e9;
            b->ops->matmul(b, &w, x, y, ms[mi]); /* warm-up: primitive creation, scratch */
            for (int r = 0; r < 3; r++) {
                double t = gemm_clock();
                b->ops->matmul(b, &w, x, y, ms[mi]);
                t = gemm_clock() - t;
                best = t < best ? t : best;
            }
            printf("  M=%-3lld %6.1f GFLOP/s", (long long)ms[mi],
                   2.0 * ms[mi] * N * K / best / 1e9);
        }
        printf("\n");
        am_aligned_free(wd);
    }
    am_aligned_free(x), am_aligned_free(y);
}

/* ---- attention ---- */

#define BENCH_ATTN_COLD_BYTES (256ll << 20)

static void bench_attention_case(am_backend *b, int64_t m, int64_t T, int H, int Hkv, int D) {
    const int64_t stride = (int64_t)Hkv * D, pos0 = T - m;
    const size_t cache_bytes = (size_t)T * stride * 4; /* one of K or V */
    int copies = (int)(BENCH_ATTN_COLD_BYTES / (2 * (long long)cache_bytes));
    copies = copies < 2 ? 2 : copies;
    float *q = xalloc((size_t)m * H * D * 4), *out = xalloc((size_t)m * H * D * 4);
    /* copies x (K (T, Hkv, D), V (T, Hkv, D)) */
    float *kv = xalloc(2 * cache_bytes * (size_t)copies);
    for (int64_t i = 0; i < m * H * D; i++)
        q[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    const int64_t nkv = 2 * T * stride * copies;
    for (int64_t i = 0; i < nkv; i++)
        kv[i] = (float)((i * 5) % 17) / 17.0f - 0.5f;
    double best[2] = {1e9, 1e9}; /* hot, cold: seconds per call */
    for (int round = 0; round < 3; round++) {
        for (int cold = 0; cold < (m == 1 ? 2 : 1); cold++) { /* prefill: compute bound, hot only */
            const int n_calls = cold ? copies : 8;
            for (int r = 0; r < BENCH_REPEATS; r++) {
                double t = am_now_s();
                for (int c = 0; c < n_calls; c++) {
                    float *kc = kv + (size_t)(cold ? c : 0) * 2 * T * stride; /* K */
                    /* The cache as one block of T positions. */
                    const int32_t block0 = 0;
                    am_kv_pages pages = {kc, kc + T * stride, T, stride};
                    am_attn_seq seq = {.row0 = 0, .m = m, .pos0 = pos0, .blocks = &block0};
                    b->ops->attention(b, out, q, &pages, &seq, 1, H, Hkv, D);
                }
                t = (am_now_s() - t) / n_calls;
                best[cold] = t < best[cold] ? t : best[cold];
            }
        }
    }
    if (m == 1) {
        printf("attn decode H=%-2d Hkv=%-2d D=%-3d T=%-5lld K+V %5.1f MiB | hot %8.1f us %6.1f "
               "GB/s | cold x%-3d %8.1f us %6.1f GB/s\n",
               H, Hkv, D, (long long)T, 2.0 * cache_bytes / 1048576.0, best[0] * 1e6,
               2.0 * cache_bytes / best[0] / 1e9, copies, best[1] * 1e6,
               2.0 * cache_bytes / best[1] / 1e9);
    } else {
        /* 2 products of 2 flops per (query, head, key, d); query i sees pos0 + i + 1 keys. */
        const double flops = 4.0 * H * D * (double)m * (pos0 + (m + 1) / 2.0);
        printf("attn prefill H=%-2d Hkv=%-2d D=%-3d M=%-4lld T=%-5lld | hot %8.1f us %6.1f "
               "GFLOP/s\n",
               H, Hkv, D, (long long)m, (long long)T, best[0] * 1e6, flops / best[0] / 1e9);
    }
    fflush(stdout);
    am_aligned_free(q), am_aligned_free(out), am_aligned_free(kv);
}

static void bench_attention(am_backend *b) {
    bench_attention_case(b, 1, 512, 32, 4, 64);
    bench_attention_case(b, 1, 2048, 32, 4, 64);
    bench_attention_case(b, 1, 2048, 32, 32, 128);
    bench_attention_case(b, 512, 512, 32, 4, 64);
}

static am_backend *new_backend(int n_threads, const char *bf16) {
    setenv("AM_CPU_BF16_GEMM", bf16, 1);
    am_backend *b = NULL;
    if (am_cpu_backend_new(n_threads, &b) != 0) {
        fprintf(stderr, "bench_kernels: cannot create the backend: %s\n", am_err_msg());
        exit(1);
    }
    unsetenv("AM_CPU_BF16_GEMM");
    return b;
}

/* Sections 1 and 2: bandwidth, then matrix-vector products next to it. */
static void bench_matvec_all(am_backend *b, int n_threads, size_t working_set) {
    am_threadpool *tp = NULL;
    if (am_threadpool_new(n_threads, &tp) != 0) exit(1);
    stream_job sj = {xalloc(BENCH_STREAM_FLOATS * 4),
                     xalloc(BENCH_STREAM_FLOATS * 4),
                     xalloc(BENCH_STREAM_FLOATS * 4),
                     BENCH_STREAM_FLOATS,
                     {0}};
    am_threadpool_run(tp, init_task, &sj); /* first touch from the threads that use it */
    bw_ctx bw = {tp, &sj};
    double triad = 0, read = 0;
    for (int r = 0; r < BENCH_REPEATS; r++)
        bw_sample(&bw, &triad, &read);
    printf("bandwidth at start: triad %.1f GB/s, read-only %.1f GB/s (best of %d)\n", triad, read,
           2 * BENCH_REPEATS);

    bench_matvec(b, &bw, 5632, 2048, working_set);
    bench_matvec(b, &bw, 32000, 2048, working_set);
    am_threadpool_destroy(&tp);
    am_aligned_free(sj.a), am_aligned_free(sj.b), am_aligned_free(sj.c);
}

/* Section 3 in precision f32 (the default: every dtype's own path), then BF16
 * weights again in precision bf16 (x rounded to bf16: oneDNN's bf16 GEMM where
 * the CPU has one). */
static void bench_gemm_all(am_backend *b, int n_threads) {
    bench_gemm(b, "prec-f32", NULL);
    setenv("AM_CPU_PRECISION", "bf16", 1);
    am_backend *bf = new_backend(n_threads, "1");
    unsetenv("AM_CPU_PRECISION");
    bench_gemm(bf, "prec-bf16", "bf16");
    am_backend_destroy(&bf);
}

int main(int argc, char **argv) {
    int n_threads = argc > 1 ? atoi(argv[1]) : 2;
    size_t working_set = (size_t)(argc > 2 ? atol(argv[2]) : 1024) << 20;
    const char *only = argc > 3 ? argv[3] : "all"; /* one section, or all of them */
    if (n_threads < 1) n_threads = 1;
    if (strcmp(only, "all") && strcmp(only, "matvec") && strcmp(only, "gemm") &&
        strcmp(only, "attn")) {
        fprintf(stderr, "bench_kernels: section '%s': expected all, matvec, gemm or attn\n", only);
        return 2;
    }
    const int all = strcmp(only, "all") == 0;
    am_cpu_blas_setup(n_threads);
    const am_cpu_features *f = am_cpu_get_features();
    am_backend *b = new_backend(n_threads, "1");
    printf("backend %s, %d threads; avx512f=%d avx512bf16=%d amx_bf16=%d; working set %zu MiB\n",
           b->name, n_threads, f->avx512f, f->avx512bf16, f->amx_bf16, working_set >> 20);
    if (all || strcmp(only, "matvec") == 0) bench_matvec_all(b, n_threads, working_set);
    if (all || strcmp(only, "gemm") == 0) bench_gemm_all(b, n_threads);
    if (all || strcmp(only, "attn") == 0) bench_attention(b);
    am_backend_destroy(&b);
    return 0;
}
