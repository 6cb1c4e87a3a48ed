/* tests/test_cpu_backend.c - the CPU backend against the reference ops.
 *
 * Every op and every weight dtype runs at each instruction-set level this CPU
 * supports (generic always; avx2, avx512 and amx when CPUID says so; capped
 * with AM_CPU_ISA before creating the backend), at avx512 and amx also with
 * the oneDNN bf16 GEMM switched off, with random inputs, odd shapes and
 * unaligned weight pointers, and is compared with core/ref_ops.h (which sums
 * in double).
 *
 * Matmuls have one tolerance on every path: the reference rounds x exactly as
 * W's dtype prescribes (dtype.h: bf16 for BF16 W, int8 blocks for Q8_0/Q4_0),
 * so every product is exact in both and the only error left is the kernel's
 * f32 summation: 1e-5 S, with S = sum_k |W[n,k] x'[i,k]| over the rounded x'
 * (the scale that rounding errors of a dot product are proportional to; |y|
 * itself can be tiny through cancellation). That is at most about
 * (K / lanes + log2 lanes) * 2^-24 * S for the blocked sums, ~8e-6 S at
 * K = 4096 in the worst case and ~1e-7 S typically. A path that rounded x
 * otherwise (f32 where bf16 is due, bf16 where int8 is due) is off by ~1e-3 S
 * and fails.
 *   - elementwise ops: a few f32 ulps relative to the reference (stated per test).
 * test_checker_detects_errors makes sure these comparisons do flag wrong results.
 */
#include "test_util.h"

#include "core/alloc.h"
#include "core/cpu/cpu_internal.h" /* am__cpu_matmul_path */
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/ref_ops.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32_ACC 1e-5

/* ---- random numbers (xorshift64*) ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double rnd(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / (double)(1ull << 52) - 1.0;
}
static void fill(float *p, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(rnd() * scale);
}
static float *fmalloc(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) abort();
    return p;
}

/* ---- backends under test ---- */

typedef struct {
    const char *isa;   /* AM_CPU_ISA value */
    const char *bf16;  /* AM_CPU_BF16_GEMM value */
    am_precision prec; /* AM_CPU_PRECISION */
    am_backend *b;
} test_backend;

static test_backend backends[16];

static int bf16_gemm_available(void) {
    const am_cpu_features *f = am_cpu_get_features();
    return f->avx512bf16 || f->amx_bf16;
}
static int n_backends;

static int isa_supported(const char *isa) {
    am_cpu_isa level;
    return am_cpu_isa_parse(isa, &level) == 0 && level <= am_cpu_isa_best();
}

/* Puts back the AM_CPU_ISA this process was started with (a cap from
 * tests/at_isa.sh, or none) after a test set its own. */
static void restore_isa_env(void) {
    static char outer[32];
    static int saved;
    if (!saved) {
        const char *v = getenv("AM_CPU_ISA");
        snprintf(outer, sizeof outer, "%s", v ? v : "");
        saved = 1;
    }
    if (outer[0])
        setenv("AM_CPU_ISA", outer, 1);
    else
        unsetenv("AM_CPU_ISA");
}

static am_backend *make_backend(const char *isa, const char *bf16, am_precision prec,
                                int n_threads) {
    restore_isa_env(); /* records the outer value on the first call */
    setenv("AM_CPU_ISA", isa, 1);
    setenv("AM_CPU_BF16_GEMM", bf16, 1);
    setenv("AM_CPU_PRECISION", am_precision_name(prec), 1);
    am_backend *b = NULL;
    int rc = am_cpu_backend_new(n_threads, &b);
    restore_isa_env();
    unsetenv("AM_CPU_BF16_GEMM");
    unsetenv("AM_CPU_PRECISION");
    CHECK_OK(rc);
    return b;
}

/* Highest level first: oneDNN's ISA cap is process-wide and set by the first
 * backend that probes it, so amx must come before avx512 to be tested at all
 * (the per-level ctest runs test avx512's own cap). */
static void setup_backends(void) {
    if (n_backends) return;
    const char *isas[] = {"amx", "avx512", "avx2", "generic"};
    const char *want[] = {"cpu-avx512", "cpu-avx512", "cpu-avx2", "cpu-generic"};
    am_cpu_isa cap; /* AM_CPU_ISA in the environment (tests/at_isa.sh) caps the levels tested */
    CHECK_OK(am_cpu_isa_active(&cap));
    for (int i = 0; i < 4; i++) {
        if (3 - i > (int)cap && isa_supported(isas[i])) {
            printf("     (skipping the %s level: above the cap AM_CPU_ISA=%s)\n", isas[i],
                   am_cpu_isa_name(cap));
            continue;
        }
        if (!isa_supported(isas[i])) {
            printf("     (skipping the %s level: not supported by this CPU/OS)\n", isas[i]);
            continue;
        }
        /* Precision f32 (the default), and bf16: oneDNN's bf16 GEMM where the level
         * has it, and the f32-panel BF16 GEMM beside it for the same kernels. */
        test_backend t = {isas[i], "1", AM_PRECISION_F32,
                          make_backend(isas[i], "1", AM_PRECISION_F32, 2)};
        if (!t.b) continue;
        /* avx512 and amx run the VNNI Q8_0 kernels where the CPU has AVX512-VNNI. */
        CHECK(strcmp(t.b->name, want[i]) == 0 || (i < 2 && am_cpu_get_features()->avx512vnni &&
                                                  strcmp(t.b->name, "cpu-avx512-vnni") == 0));
        backends[n_backends++] = t;
        test_backend t2 = {isas[i], "1", AM_PRECISION_BF16,
                           make_backend(isas[i], "1", AM_PRECISION_BF16, 2)};
        if (t2.b) backends[n_backends++] = t2;
        if (i < 2 && bf16_gemm_available()) {
            test_backend t3 = {isas[i], "0", AM_PRECISION_BF16,
                               make_backend(isas[i], "0", AM_PRECISION_BF16, 2)};
            if (t3.b) backends[n_backends++] = t3;
        }
    }
    if (!bf16_gemm_available())
        printf("     (no AVX512-BF16/AMX: BF16 GEMMs are tested on the f32-panel path)\n");
}

/* This backend sends BF16 GEMMs to oneDNN. */
static int bf16_gemm_active(const test_backend *t) {
    return t->prec == AM_PRECISION_BF16 && strcmp(t->bf16, "1") == 0 && bf16_gemm_available() &&
           (strcmp(t->isa, "amx") == 0 || strcmp(t->isa, "avx512") == 0);
}

/* ---- weight matrices ---- */

typedef struct {
    am_matrix w;
    void *buf;
    float *deq; /* (N, K) the exact f32 values of w */
} test_mat;

/* W (N, K) of dtype dt from random values; `misalign` bytes shift the data
 * pointer off 64-byte alignment (as in a mapped file), `pad` bytes pad rows. */
static void mat_make(test_mat *t, am_dtype dt, int64_t N, int64_t K, size_t misalign, size_t pad) {
    size_t rb = am_dtype_row_bytes(dt, K) + pad;
    t->buf = malloc((size_t)N * rb + misalign + 64);
    t->deq = fmalloc(N * K);
    if (!t->buf) abort();
    memset(t->buf, 0x7f, (size_t)N * rb + misalign + 64); /* padding holds garbage */
    char *data = (char *)t->buf + misalign;
    float *src = fmalloc(K);
    for (int64_t n = 0; n < N; n++) {
        fill(src, K, 1.0);
        am_quantize_row(dt, src, data + (size_t)n * rb, K);
        am_dequantize_row(dt, data + (size_t)n * rb, t->deq + n * K, K);
    }
    free(src);
    t->w = (am_matrix){.dtype = dt, .rows = N, .cols = K, .data = data, .row_bytes = rb};
}

static void mat_free(test_mat *t) {
    free(t->buf);
    free(t->deq);
}

/* Largest err / S seen by compare_matmul (reported at the end). */
static double worst_ratio;

/* Number of y elements off from ref by more than TOL_F32_ACC * S; prints the first. */
static int compare_matmul(const test_mat *t, am_precision mode, const float *x, const float *y,
                          const float *ref, int64_t m, const char *what) {
    const int64_t N = t->w.rows, K = t->w.cols;
    double *xr = malloc((size_t)K * sizeof(double)); /* (K) row i of x as the matmul sees it */
    if (!xr) abort();
    int bad = 0;
    for (int64_t i = 0; i < m; i++) {
        am_ref_matmul_x(t->w.dtype, mode, x + i * K, xr, K);
        for (int64_t n = 0; n < N; n++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += fabs((double)t->deq[n * K + k] * xr[k]);
            double tol = TOL_F32_ACC * s;
            double err = fabs((double)y[i * N + n] - ref[i * N + n]);
            if (s > 0 && err / s > worst_ratio && err <= tol) worst_ratio = err / s;
            if (!(err <= tol + 1e-30)) {
                if (!bad)
                    fprintf(stderr, "  %s: y[%lld,%lld] = %.9g, ref %.9g, err/S = %.3g > %.3g\n",
                            what, (long long)i, (long long)n, y[i * N + n], ref[i * N + n], err / s,
                            TOL_F32_ACC);
                bad++;
            }
        }
    }
    free(xr);
    return bad;
}

static void run_matmul_case(const test_backend *tb, am_dtype dt, int64_t m, int64_t N, int64_t K,
                            size_t misalign, size_t pad) {
    test_mat t;
    mat_make(&t, dt, N, K, misalign, pad);
    float *x = fmalloc(m * K), *y = fmalloc(m * N), *ref = fmalloc(m * N);
    fill(x, m * K, 2.0);
    for (int64_t i = 0; i < m * N; i++)
        y[i] = NAN; /* every output must be written */
    am_ref_matmul(&t.w, tb->prec, x, ref, m);
    CHECK_OK(tb->b->ops->matmul(tb->b, &t.w, x, y, m));
    char what[200];
    snprintf(what, sizeof what,
             "%s level=%s precision=%s bf16gemm=%s %s M=%lld N=%lld K=%lld misalign=%zu pad=%zu",
             tb->b->name, tb->isa, am_precision_name(tb->prec), tb->bf16, am_dtype_name(dt),
             (long long)m, (long long)N, (long long)K, misalign, pad);
    int bad = compare_matmul(&t, tb->prec, x, y, ref, m, what);
    CHECK_EQ_INT(bad, 0);
    free(x), free(y), free(ref);
    mat_free(&t);
}

/* ---- tests ---- */

static void test_backend_new_errors(void) {
    restore_isa_env(); /* records the outer value before this test changes it */
    am_backend *b = (am_backend *)1;
    CHECK_EQ_INT(am_cpu_backend_new(0, &b), AM_EINVAL);
    CHECK(b == NULL);
    setenv("AM_CPU_ISA", "sse9", 1);
    CHECK_EQ_INT(am_cpu_backend_new(1, &b), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "sse9") != NULL);
    /* A cap above the CPU is clamped to what it has; a cap below it holds. */
    am_cpu_isa level;
    setenv("AM_CPU_ISA", "amx", 1);
    CHECK_OK(am_cpu_isa_active(&level));
    CHECK(level == am_cpu_isa_best());
    setenv("AM_CPU_ISA", "generic", 1);
    CHECK_OK(am_cpu_isa_active(&level));
    CHECK(level == AM_CPU_ISA_GENERIC);
    CHECK_OK(am_cpu_backend_new(1, &b));
    CHECK(b && strcmp(b->name, "cpu-generic") == 0);
    am_backend_destroy(&b);
    restore_isa_env();
    CHECK_OK(am_cpu_backend_new(3, &b));
    CHECK(b && b->n_threads == 3);
    am_backend_destroy(&b);
    CHECK(b == NULL);
    am_backend_destroy(&b); /* accepts NULL */
}

static void test_features(void) {
    const am_cpu_features *f = am_cpu_get_features();
    CHECK(f == am_cpu_get_features());
    /* Implications the dispatch relies on. */
    if (f->avx512bw || f->avx512vl || f->avx512vnni || f->avx512bf16) CHECK(f->avx512f);
    if (f->amx_bf16 || f->amx_int8) CHECK(f->amx_tile);
    printf("     features: avx2=%d fma=%d f16c=%d avx512f=%d bw=%d vl=%d vnni=%d bf16=%d fp16=%d "
           "amx_tile=%d amx_bf16=%d amx_int8=%d\n",
           f->avx2, f->fma, f->f16c, f->avx512f, f->avx512bw, f->avx512vl, f->avx512vnni,
           f->avx512bf16, f->avx512fp16, f->amx_tile, f->amx_bf16, f->amx_int8);
}

static const am_dtype wdtypes[] = {AM_DTYPE_F32, AM_DTYPE_F16, AM_DTYPE_BF16, AM_DTYPE_Q8_0,
                                   AM_DTYPE_Q4_0};

/* Byte offsets that break alignment but keep element alignment (what a
 * safetensors/GGUF mapping can produce). */
static size_t misalign_for(am_dtype dt, int variant) {
    if (!variant) return 0;
    return dt == AM_DTYPE_F32 ? 4 : 2;
}

static void test_matmul_small_m(void) {
    setup_backends();
    const int64_t ms[] = {1, 2, 3, 4};
    const int64_t shapes[][2] = {{1, 32}, {17, 32}, {33, 64}, {45, 96}, {129, 256}, {300, 512}};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t d = 0; d < 5; d++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (size_t mi = 0; mi < 4; mi++)
                    run_matmul_case(&backends[bi], wdtypes[d], ms[mi], shapes[s][0], shapes[s][1],
                                    misalign_for(wdtypes[d], (int)(s + mi) & 1), 0);
}

/* Dense dtypes allow any K: exercise the vector tails. */
static void test_matmul_odd_k(void) {
    setup_backends();
    const int64_t ks[] = {1, 5, 15, 17, 33, 100, 257};
    const am_dtype dense[] = {AM_DTYPE_F32, AM_DTYPE_F16, AM_DTYPE_BF16};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t d = 0; d < 3; d++)
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                run_matmul_case(&backends[bi], dense[d], 1, 19, ks[ki], misalign_for(dense[d], 1),
                                0);
                run_matmul_case(&backends[bi], dense[d], 3, 7, ks[ki], 0, 0);
                run_matmul_case(&backends[bi], dense[d], 5, 21, ks[ki], misalign_for(dense[d], 1),
                                0);
            }
}

static void test_matmul_gemm(void) {
    setup_backends();
    /* M = 5, 6, 7 leave 1, 2 and 3 rows after the small-M kernel's groups of 4. */
    const int64_t ms[] = {5, 6, 7, 17, 64};
    /* N = 300 at K = 2048 spans several conversion panels and a partial one;
     * K = 1031 (dense only) is two of the small-M kernel's K chunks and a tail. */
    const int64_t shapes[][2] = {{7, 32}, {40, 96}, {300, 2048}, {50, 1031}};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t d = 0; d < 5; d++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                    if (shapes[s][1] % 32 && d >= 3) continue; /* quantized rows need K % 32 == 0 */
                    if (shapes[s][1] >= 2048 && ms[mi] == 64 && wdtypes[d] != AM_DTYPE_Q4_0)
                        continue;
                    run_matmul_case(&backends[bi], wdtypes[d], ms[mi], shapes[s][0], shapes[s][1],
                                    misalign_for(wdtypes[d], (int)(s + mi) & 1), 0);
                }
}

/* In the small-M GEMM (a batched decode step) a row's result does not depend
 * on the other rows: the first 7 rows of a 29-row product equal a 7-row
 * product bit for bit, so a sequence's output does not change with the
 * batch it was scheduled in. */
static void test_matmul_small_gemm_rows_independent(void) {
    setup_backends();
    const am_dtype dense[] = {AM_DTYPE_F32, AM_DTYPE_F16, AM_DTYPE_BF16};
    const int64_t N = 203, K = 1100;
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t d = 0; d < 3; d++) {
            test_mat t;
            mat_make(&t, dense[d], N, K, 0, 0);
            const char *p29 = am__cpu_matmul_path(backends[bi].b, &t.w, 29);
            if (strcmp(p29, am__cpu_matmul_path(backends[bi].b, &t.w, 7)) != 0 ||
                strcmp(p29, "small_gemm") != 0) { /* oneDNN's (bf16 tiles) from some M on */
                mat_free(&t);
                continue;
            }
            float *x = fmalloc(29 * K), *y29 = fmalloc(29 * N), *y7 = fmalloc(7 * N);
            fill(x, 29 * K, 3.0);
            CHECK_OK(backends[bi].b->ops->matmul(backends[bi].b, &t.w, x, y29, 29));
            CHECK_OK(backends[bi].b->ops->matmul(backends[bi].b, &t.w, x, y7, 7));
            CHECK(memcmp(y29, y7, 7 * N * sizeof(float)) == 0);
            free(x), free(y29), free(y7);
            mat_free(&t);
        }
}

/* The kernel dispatcher (cpu_matmul.c) picks the kernels this file checks:
 * print its choices per level, and make sure the fast paths the CPU has
 * are the ones that ran above (a rule that stopped choosing them would
 * leave them untested). */
static void test_matmul_paths(void) {
    setup_backends();
    const am_cpu_features *f = am_cpu_get_features();
    const int64_t ms[] = {1, 4, 8, 32, 512};
    for (int bi = 0; bi < n_backends; bi++) {
        const test_backend *tb = &backends[bi];
        printf("     %s level=%s precision=%s bf16gemm=%s:", tb->b->name, tb->isa,
               am_precision_name(tb->prec), tb->bf16);
        for (size_t d = 0; d < 5; d++) {
            am_matrix w = {wdtypes[d], 300, 2048, NULL, am_dtype_row_bytes(wdtypes[d], 2048)};
            printf(" %s", am_dtype_name(wdtypes[d]));
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
                printf("%s%s", mi ? "," : "=", am__cpu_matmul_path(tb->b, &w, ms[mi]));
            const char *p1 = am__cpu_matmul_path(tb->b, &w, 1);
            CHECK(strcmp(p1, "matvec") == 0);
        }
        printf("\n");
        am_matrix q8 = {AM_DTYPE_Q8_0, 300, 2048, NULL, am_dtype_row_bytes(AM_DTYPE_Q8_0, 2048)};
        am_matrix bf = {AM_DTYPE_BF16, 300, 2048, NULL, am_dtype_row_bytes(AM_DTYPE_BF16, 2048)};
        if (strcmp(tb->isa, "amx") == 0 && f->amx_int8)
            CHECK(strcmp(am__cpu_matmul_path(tb->b, &q8, 32), "amx_q8") == 0);
        else
            CHECK(strcmp(am__cpu_matmul_path(tb->b, &q8, 32), "tiled_matvec") == 0);
        if (bf16_gemm_active(tb))
            CHECK(strcmp(am__cpu_matmul_path(tb->b, &bf, 32), "dnnl_bf16") == 0);
    }
    if (!f->amx_int8)
        printf("     (no AMX-INT8 on this CPU: the amx_q8 path is not tested here)\n");
    if (!f->avx512vnni)
        printf("     (no AVX512-VNNI on this CPU: the avx512-vnni Q8_0 kernels are not tested "
               "here)\n");
    if (!f->amx_bf16)
        printf("     (no AMX-BF16 on this CPU: the dnnl_bf16x3 path is not tested here)\n");
}

/* Rows farther apart than their size (a view into a larger tensor). */
static void test_matmul_row_stride(void) {
    setup_backends();
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t d = 0; d < 5; d++) {
            size_t pad = wdtypes[d] == AM_DTYPE_F32 ? 12 : 6;
            run_matmul_case(&backends[bi], wdtypes[d], 1, 50, 64, 0, pad);
            run_matmul_case(&backends[bi], wdtypes[d], 9, 50, 64, misalign_for(wdtypes[d], 1), pad);
        }
}

/* Thread counts other than 2, on a matrix big enough to be split. */
static void test_matmul_threads(void) {
    const int counts[] = {1, 3};
    for (int c = 0; c < 2; c++) {
        am_backend *b = NULL;
        CHECK_OK(am_cpu_backend_new(counts[c], &b));
        if (!b) continue;
        test_backend tb = {am_cpu_isa_name(am_cpu_isa_best()), "1", AM_PRECISION_F32, b};
        for (size_t d = 0; d < 5; d++) {
            run_matmul_case(&tb, wdtypes[d], 1, 333, 512, 0, 0);
            run_matmul_case(&tb, wdtypes[d], 2, 333, 512, 0, 0);
            run_matmul_case(&tb, wdtypes[d], 6, 333, 512, 0, 0);
        }
        am_backend_destroy(&b);
    }
}

static void test_matmul_errors(void) {
    setup_backends();
    am_backend *b = backends[0].b;
    float x[64] = {0}, y[64];
    double data[64] = {0};
    am_matrix w = {AM_DTYPE_F64, 2, 32, data, 256};
    CHECK_EQ_INT(b->ops->matmul(b, &w, x, y, 1), AM_EUNSUPPORTED);
    am_block_q8_0 blk[2] = {{0}};
    am_matrix q = {AM_DTYPE_Q8_0, 1, 48, blk, sizeof blk}; /* cols not a multiple of 32 */
    CHECK_EQ_INT(b->ops->matmul(b, &q, x, y, 1), AM_EINVAL);
    am_matrix short_rows = {AM_DTYPE_F32, 2, 16, x, 32}; /* row_bytes < 16 * 4 */
    CHECK_EQ_INT(b->ops->matmul(b, &short_rows, x, y, 1), AM_EINVAL);
    am_matrix ok = {AM_DTYPE_F32, 2, 16, x, 64};
    CHECK_OK(b->ops->matmul(b, &ok, x, y, 0)); /* M = 0: nothing to do */
}

/* The comparisons above must be able to fail: perturb a correct result by a
 * little more than the tolerance and check that it is flagged. */
static void test_checker_detects_errors(void) {
    const double worst_before = worst_ratio; /* the wrong results below are not the kernels' */
    test_mat t;
    const int64_t m = 2, N = 8, K = 64;
    mat_make(&t, AM_DTYPE_F32, N, K, 0, 0);
    float *x = fmalloc(m * K), *ref = fmalloc(m * N), *y = fmalloc(m * N);
    fill(x, m * K, 1.0);
    am_ref_matmul(&t.w, AM_PRECISION_F32, x, ref, m);
    memcpy(y, ref, (size_t)(m * N) * sizeof(float));
    CHECK_EQ_INT(compare_matmul(&t, AM_PRECISION_F32, x, y, ref, m, "exact"), 0);
    double s = 0.0;
    for (int64_t k = 0; k < K; k++)
        s += fabs((double)t.deq[3 * K + k] * x[K + k]);
    y[N + 3] = (float)(ref[N + 3] + 3.0 * TOL_F32_ACC * s);
    fprintf(stderr, "  (expected below: deliberately wrong elements)\n");
    CHECK_EQ_INT(compare_matmul(&t, AM_PRECISION_F32, x, y, ref, m, "deliberately wrong"), 1);
    free(x), free(ref), free(y);
    mat_free(&t);
    /* A matmul that kept x in f32 where W's dtype rounds it (BF16 in mode bf16:
     * bf16, Q8_0: int8 blocks) is flagged: the one tolerance leaves no room for it. */
    const am_dtype rounded[] = {AM_DTYPE_BF16, AM_DTYPE_Q8_0};
    for (int d = 0; d < 2; d++) {
        mat_make(&t, rounded[d], 64, 256, 0, 0);
        x = fmalloc(4 * 256), ref = fmalloc(4 * 64), y = fmalloc(4 * 64);
        fill(x, 4 * 256, 1.0);
        am_ref_matmul(&t.w, AM_PRECISION_BF16, x, ref, 4);
        for (int64_t i = 0; i < 4; i++) /* the unrounded product, from the exact weights */
            for (int64_t n = 0; n < 64; n++) {
                double acc = 0.0;
                for (int64_t k = 0; k < 256; k++)
                    acc += (double)t.deq[n * 256 + k] * x[i * 256 + k];
                y[i * 64 + n] = (float)acc;
            }
        CHECK(compare_matmul(&t, AM_PRECISION_BF16, x, y, ref, 4, "x left in f32") > 64);
        free(x), free(ref), free(y);
        mat_free(&t);
    }
    worst_ratio = worst_before;
}

/* A row's result does not depend on how many rows share the matmul: M = 1
 * (matrix-vector), 4, 37 (small-M GEMM) and 300 (library GEMM where the dtype
 * has one) agree with each other within the f32 bound, on every path. The
 * shape-dependent rounding this replaced (bf16 x above M = 4 on AMX, f32 x
 * above M = 128 for Q8_0) fails here. */
static void test_matmul_rows_independent_of_m(void) {
    setup_backends();
    const int64_t N = 96, K = 512, ms[] = {1, 4, 37, 300};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t d = 0; d < 5; d++) {
            test_mat t;
            mat_make(&t, wdtypes[d], N, K, 0, 0);
            float *x = fmalloc(300 * K), *y = fmalloc(300 * N), *y1 = fmalloc(N);
            fill(x, 300 * K, 2.0);
            for (size_t mi = 1; mi < 4; mi++) {
                CHECK_OK(backends[bi].b->ops->matmul(backends[bi].b, &t.w, x, y, ms[mi]));
                /* The last row of the M-row product against that row alone (M = 1). */
                const float *xi = x + (ms[mi] - 1) * K;
                CHECK_OK(backends[bi].b->ops->matmul(backends[bi].b, &t.w, xi, y1, 1));
                char what[128];
                snprintf(what, sizeof what,
                         "%s level=%s precision=%s bf16gemm=%s %s: row %lld of M=%lld vs M=1",
                         backends[bi].b->name, backends[bi].isa,
                         am_precision_name(backends[bi].prec), backends[bi].bf16,
                         am_dtype_name(wdtypes[d]), (long long)ms[mi] - 1, (long long)ms[mi]);
                CHECK_EQ_INT(
                    compare_matmul(&t, backends[bi].prec, xi, y + (ms[mi] - 1) * N, y1, 1, what),
                    0);
            }
            free(x), free(y), free(y1);
            mat_free(&t);
        }
}

/* Dequantization is exact on every path: results must equal the reference bit for bit. */
static void test_get_rows(void) {
    setup_backends();
    const int32_t ids[] = {0, 6, 2, 6, 9};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t d = 0; d < 5; d++)
            for (int64_t K = 32; K <= 96; K += 64) {
                test_mat t;
                mat_make(&t, wdtypes[d], 10, K, misalign_for(wdtypes[d], 1), 0);
                float *out = fmalloc(5 * K), *ref = fmalloc(5 * K);
                am_ref_get_rows(&t.w, ids, 5, ref);
                backends[bi].b->ops->get_rows(backends[bi].b, &t.w, ids, 5, out);
                CHECK(memcmp(out, ref, (size_t)(5 * K) * sizeof(float)) == 0);
                free(out), free(ref);
                mat_free(&t);
            }
}

/* Elementwise comparison: |a - b| <= rel * |b| + abs. Returns the number of violations. */
static int compare_elems(const float *a, const float *b, int64_t n, double rel, double abs_tol,
                         const char *what) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)a[i] - b[i]);
        if (!(err <= rel * fabs((double)b[i]) + abs_tol)) {
            if (!bad)
                fprintf(stderr, "  %s: [%lld] = %.9g, ref %.9g\n", what, (long long)i, a[i], b[i]);
            bad++;
        }
    }
    return bad;
}

/* rsqrt of an f32 mean square vs double: a few ulps. */
static void test_rmsnorm(void) {
    setup_backends();
    const int64_t ks[] = {1, 7, 64, 100, 2048};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t ki = 0; ki < 5; ki++) {
            const int64_t m = 3, k = ks[ki];
            float *x = fmalloc(m * k), *w = fmalloc(k), *out = fmalloc(m * k),
                  *ref = fmalloc(m * k);
            fill(x, m * k, 3.0);
            fill(w, k, 1.0);
            am_ref_rmsnorm(ref, x, w, m, k, 1e-5f);
            backends[bi].b->ops->rmsnorm(backends[bi].b, out, x, w, m, k, 1e-5f);
            CHECK_EQ_INT(compare_elems(out, ref, m * k, 1e-5, 1e-7, backends[bi].b->name), 0);
            backends[bi].b->ops->rmsnorm(backends[bi].b, x, x, w, m, k, 1e-5f); /* in place */
            CHECK_EQ_INT(compare_elems(x, ref, m * k, 1e-5, 1e-7, backends[bi].b->name), 0);
            free(x), free(w), free(out), free(ref);
        }
}

/* Same angle formula as the reference (double), so only the f32 rotation can
 * round differently (e.g. FMA contraction): within 1e-6 of the inputs' scale. */
static void test_rope(void) {
    setup_backends();
    const int32_t pos[] = {0, 1, 17, 4095, 100000, 3};
    const struct {
        int H, D;
        float theta;
    } cfg[] = {{3, 64, 10000.0f}, {4, 128, 500000.0f}, {1, 6, 10000.0f}};
    for (int bi = 0; bi < n_backends; bi++)
        for (int c = 0; c < 3; c++)
            for (int layout = 0; layout < 2; layout++) {
                const int64_t m = 6, n = m * cfg[c].H * cfg[c].D;
                float *x = fmalloc(n), *ref = fmalloc(n);
                fill(x, n, 1.0);
                memcpy(ref, x, (size_t)n * sizeof(float));
                am_ref_rope(ref, pos, m, cfg[c].H, cfg[c].D, cfg[c].theta, (am_rope_layout)layout);
                backends[bi].b->ops->rope(backends[bi].b, x, pos, m, cfg[c].H, cfg[c].D,
                                          cfg[c].theta, (am_rope_layout)layout);
                CHECK_EQ_INT(compare_elems(x, ref, n, 0.0, 1e-6, backends[bi].b->name), 0);
                free(x), free(ref);
            }
}

/* One attention call on b against the reference: random q, K, V in [-1, 1),
 * rows of the cache kv_stride = Hkv * D + stride_pad floats apart, the output
 * pre-filled with NaN so that every element must be written. The cache is
 * one contiguous block (block_size 0) or paged: blocks of block_size
 * positions in a shuffled order with spare blocks between them. f32 online
 * softmax and f32 dot products vs double: within 2e-5 of max |v| (scores are
 * O(1): f32 rounding of q.k and of the weights is ~1e-7 each). */
static int attention_paged_case(am_backend *b, int n_seqs, const int64_t *ms, const int64_t *pos0s,
                                int H, int Hkv, int D, int64_t stride_pad, int64_t block_size) {
    const int64_t stride = (int64_t)Hkv * D + stride_pad;
    int64_t M = 0, n_blocks = 0, bs = block_size;
    if (bs == 0) /* contiguous: one block holding the longest sequence */
        for (int s = 0; s < n_seqs; s++)
            bs = pos0s[s] + ms[s] > bs ? pos0s[s] + ms[s] : bs;
    am_attn_seq seqs[8];
    int32_t *tables[8];
    for (int s = 0; s < n_seqs; s++) {
        seqs[s] = (am_attn_seq){.row0 = M, .m = ms[s], .pos0 = pos0s[s]};
        M += ms[s];
        n_blocks += (pos0s[s] + ms[s] + bs - 1) / bs;
    }
    n_blocks = 2 * n_blocks + 1; /* spare blocks that no sequence owns */
    /* Every sequence gets distinct blocks, in a shuffled order. */
    int32_t *perm = malloc((size_t)n_blocks * sizeof *perm);
    for (int64_t i = 0; i < n_blocks; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = n_blocks - 1; i > 0; i--) {
        int64_t k = (int64_t)((rnd() + 1.0) * 0.5 * (double)(i + 1));
        if (k > i) k = i;
        int32_t t = perm[i];
        perm[i] = perm[k], perm[k] = t;
    }
    int64_t used = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int64_t nb = (pos0s[s] + ms[s] + bs - 1) / bs;
        tables[s] = malloc((size_t)nb * sizeof(int32_t));
        for (int64_t i = 0; i < nb; i++)
            tables[s][i] = perm[used++];
        seqs[s].blocks = tables[s];
    }
    float *q = fmalloc(M * H * D), *kp = fmalloc(n_blocks * bs * stride),
          *vp = fmalloc(n_blocks * bs * stride);
    float *out = fmalloc(M * H * D), *ref = fmalloc(M * H * D);
    fill(q, M * H * D, 1.0);
    fill(kp, n_blocks * bs * stride, 1.0);
    fill(vp, n_blocks * bs * stride, 1.0);
    for (int64_t i = 0; i < M * H * D; i++)
        out[i] = NAN;
    am_kv_pages pages = {.k = kp, .v = vp, .block_size = bs, .kv_stride = stride};
    am_ref_attention_paged(ref, q, &pages, seqs, n_seqs, H, Hkv, D);
    b->ops->attention(b, out, q, &pages, seqs, n_seqs, H, Hkv, D);
    char what[200];
    snprintf(what, sizeof what,
             "%s threads=%d seqs=%d M0=%lld pos0=%lld H=%d Hkv=%d D=%d pad=%lld bs=%lld", b->name,
             b->n_threads, n_seqs, (long long)ms[0], (long long)pos0s[0], H, Hkv, D,
             (long long)stride_pad, (long long)block_size);
    int bad = compare_elems(out, ref, M * H * D, 0.0, 2e-5, what);
    free(q), free(kp), free(vp), free(out), free(ref), free(perm);
    for (int s = 0; s < n_seqs; s++)
        free(tables[s]);
    return bad;
}

/* One sequence, contiguous and paged in blocks of 16 and 64. */
static int attention_case(am_backend *b, int64_t m, int64_t pos0, int H, int Hkv, int D,
                          int64_t stride_pad) {
    int bad = 0;
    const int64_t sizes[] = {0, 16, 64};
    for (int i = 0; i < 3; i++)
        bad += attention_paged_case(b, 1, &m, &pos0, H, Hkv, D, stride_pad, sizes[i]);
    return bad;
}

/* kv_store writes each row where the block table says, and nothing else. */
static void test_kv_store(void) {
    setup_backends();
    const int64_t stride = 24, bs = 4, n_blocks = 9;
    int32_t t0[] = {7, 2, 5}, t1[] = {0, 8};
    am_attn_seq seqs[] = {{.row0 = 0, .m = 3, .pos0 = 6, .blocks = t0},
                          {.row0 = 3, .m = 5, .pos0 = 0, .blocks = t1}};
    float *kn = fmalloc(8 * stride), *vn = fmalloc(8 * stride);
    fill(kn, 8 * stride, 1.0);
    fill(vn, 8 * stride, 1.0);
    for (int bi = 0; bi < n_backends; bi++) {
        float *k = fmalloc(n_blocks * bs * stride), *v = fmalloc(n_blocks * bs * stride);
        float *kr = fmalloc(n_blocks * bs * stride), *vr = fmalloc(n_blocks * bs * stride);
        for (int64_t i = 0; i < n_blocks * bs * stride; i++)
            k[i] = v[i] = kr[i] = vr[i] = -7.0f;
        am_kv_pages pg = {k, v, bs, stride}, pr = {kr, vr, bs, stride};
        backends[bi].b->ops->kv_store(backends[bi].b, &pg, kn, vn, seqs, 2);
        am_ref_kv_store(&pr, kn, vn, seqs, 2);
        CHECK_EQ_INT(memcmp(k, kr, (size_t)(n_blocks * bs * stride) * sizeof(float)), 0);
        CHECK_EQ_INT(memcmp(v, vr, (size_t)(n_blocks * bs * stride) * sizeof(float)), 0);
        /* position 6 of sequence 0 is row 2 of block 2; position 4 of sequence 1 is row 0 of block
         * 8 */
        CHECK_EQ_INT(memcmp(k + (2 * bs + 2) * stride, kn, (size_t)stride * sizeof(float)), 0);
        CHECK_EQ_INT(
            memcmp(v + (8 * bs + 0) * stride, vn + 7 * stride, (size_t)stride * sizeof(float)), 0);
        free(k), free(v), free(kr), free(vr);
    }
    free(kn), free(vn);
}

/* Several sequences in one call: decode rows and prefill chunks mixed, with
 * different lengths, paged in blocks of 16 and 32, on 1 and 2 threads. */
static void test_attention_batched(void) {
    setup_backends();
    const struct {
        int n;
        int64_t m[6], pos0[6];
        int H, Hkv, D;
    } cfg[] = {
        {3, {1, 1, 1}, {0, 40, 300}, 8, 2, 64},
        {4, {1, 17, 1, 64}, {100, 0, 5, 31}, 32, 4, 64},
        {6, {1, 1, 1, 1, 1, 1}, {7, 8, 9, 200, 511, 33}, 12, 3, 40},
        {2, {5, 3}, {0, 99}, 4, 4, 16},
    };
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
            for (int64_t bs = 16; bs <= 32; bs *= 2)
                CHECK_EQ_INT(attention_paged_case(backends[bi].b, cfg[c].n, cfg[c].m, cfg[c].pos0,
                                                  cfg[c].H, cfg[c].Hkv, cfg[c].D, 0, bs),
                             0);
}

static void test_attention(void) {
    setup_backends();
    const struct {
        int64_t m, pos0;
        int H, Hkv, D;
        int64_t stride_pad;
    } cfg[] = {
        {1, 0, 4, 4, 64, 0},
        {1, 300, 8, 2, 64, 0},
        {5, 3, 8, 2, 64, 16},
        {17, 250, 4, 1, 40, 0},
        {3, 600, 6, 3, 128, 8},
        {64, 0, 2, 1, 16, 0},
        {1, 1000, 32, 8, 64, 0},
        /* head dims with a partial last vector (8 and 16 lanes), groups that
         * are not powers of two (tiles of 4 + 2, 2 + 1, 8 + 4), more heads
         * per group than one item takes (80 > 64), and MQA decode long enough
         * that the keys are split between the threads (merged partial softmax). */
        {1, 77, 6, 2, 13, 3},
        {7, 45, 12, 2, 20, 0},
        {1, 500, 12, 1, 24, 0},
        {2, 130, 80, 1, 8, 0},
        {1, 999, 8, 1, 64, 0},
        {3, 700, 16, 1, 128, 4},
        {33, 0, 4, 4, 5, 0},
        {1, 260, 1, 1, 1, 0},
        /* the 1b and 7b shapes in decode and a prefill chunk */
        {1, 575, 32, 4, 64, 0},
        {1, 300, 32, 32, 128, 0},
        {128, 200, 32, 4, 64, 0},
    };
    for (int bi = 0; bi < n_backends; bi++) {
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
            CHECK_EQ_INT(attention_case(backends[bi].b, cfg[c].m, cfg[c].pos0, cfg[c].H, cfg[c].Hkv,
                                        cfg[c].D, cfg[c].stride_pad),
                         0);
        /* GQA groups 1, 2, 4, 8 x head dims 64, 128 and 40 x decode at a short
         * and a long context, and 7 rows after a prefix. */
        const int groups[] = {1, 2, 4, 8}, dims[] = {64, 128, 40};
        const int64_t mp[][2] = {{1, 37}, {1, 999}, {7, 300}};
        for (int g = 0; g < 4; g++)
            for (int d = 0; d < 3; d++)
                for (int r = 0; r < 3; r++)
                    CHECK_EQ_INT(attention_case(backends[bi].b, mp[r][0], mp[r][1], 2 * groups[g],
                                                2, dims[d], r == 2 ? 8 : 0),
                                 0);
    }
}

/* Other thread counts: 1 (no split), 3 (with 4 or 1 kv heads the keys are
 * split in 3 parts; with 2 in 3 as well), on each kernel path. */
static void test_attention_threads(void) {
    const int counts[] = {1, 3};
    const char *isas[] = {"generic", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        if (!isa_supported(isas[i])) continue;
        for (int c = 0; c < 2; c++) {
            am_backend *b = make_backend(isas[i], "1", AM_PRECISION_F32, counts[c]);
            if (!b) continue;
            CHECK_EQ_INT(attention_case(b, 1, 999, 32, 4, 64, 0), 0);
            CHECK_EQ_INT(attention_case(b, 1, 1000, 8, 1, 128, 0), 0);
            CHECK_EQ_INT(attention_case(b, 1, 640, 4, 2, 40, 8), 0);
            CHECK_EQ_INT(attention_case(b, 4, 800, 8, 2, 64, 0), 0);
            CHECK_EQ_INT(attention_case(b, 2, 200, 8, 1, 64, 0), 0); /* too few keys to split */
            CHECK_EQ_INT(attention_case(b, 100, 50, 6, 3, 32, 0), 0);
            am_backend_destroy(&b);
        }
    }
}

/* Vector exp (~1 ulp) and an f32 sum: 1e-5 relative per element. */
static void test_softmax(void) {
    setup_backends();
    const int64_t ns[] = {1, 7, 16, 100, 1001};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t i = 0; i < 5; i++) {
            const int64_t m = 4, n = ns[i];
            float *x = fmalloc(m * n), *ref = fmalloc(m * n);
            fill(x, m * n, 20.0);
            memcpy(ref, x, (size_t)(m * n) * sizeof(float));
            am_ref_softmax(ref, m, n);
            backends[bi].b->ops->softmax(backends[bi].b, x, m, n);
            CHECK_EQ_INT(compare_elems(x, ref, m * n, 1e-5, 1e-12, backends[bi].b->name), 0);
            free(x), free(ref);
        }
}

/* exp and a division in f32: a few ulps. */
static void test_silu_mul(void) {
    setup_backends();
    const int64_t ns[] = {1, 9, 64, 1000, 300001};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t i = 0; i < 5; i++) {
            const int64_t n = ns[i];
            float *g = fmalloc(n), *u = fmalloc(n), *ref = fmalloc(n);
            fill(g, n, 30.0);
            fill(u, n, 2.0);
            memcpy(ref, g, (size_t)n * sizeof(float));
            am_ref_silu_mul(ref, u, n);
            backends[bi].b->ops->silu_mul(backends[bi].b, g, u, n);
            CHECK_EQ_INT(compare_elems(g, ref, n, 2e-6, 1e-30, backends[bi].b->name), 0);
            free(g), free(u), free(ref);
        }
}

static void test_add(void) {
    setup_backends();
    const int64_t ns[] = {1, 9, 64, 1000, 300001};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t i = 0; i < 5; i++) {
            const int64_t n = ns[i];
            float *y = fmalloc(n), *x = fmalloc(n), *ref = fmalloc(n);
            fill(y, n, 1.0);
            fill(x, n, 1.0);
            memcpy(ref, y, (size_t)n * sizeof(float));
            am_ref_add(ref, x, n);
            backends[bi].b->ops->add(backends[bi].b, y, x, n);
            CHECK(memcmp(y, ref, (size_t)n * sizeof(float)) == 0); /* one rounding: exact */
            free(y), free(x), free(ref);
        }
}

/* ---- the encoder ops ---- */

/* Two-pass statistics in double, output rounded once per step in f32. */
static void test_layernorm(void) {
    setup_backends();
    const int64_t cs[] = {1, 7, 64, 1000, 4097};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t i = 0; i < 5; i++) {
            const int64_t m = 5, c = cs[i];
            float *x = fmalloc(m * c), *w = fmalloc(c), *b = fmalloc(c), *out = fmalloc(m * c),
                  *ref = fmalloc(m * c);
            fill(x, m * c, 3.0);
            fill(w, c, 1.0);
            fill(b, c, 0.5);
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                am_ref_layernorm(ref, x, w, with_bias ? b : NULL, m, c, 1e-5f);
                backends[bi].b->ops->layernorm(backends[bi].b, out, x, w, with_bias ? b : NULL, m,
                                               c, 1e-5f);
                CHECK_EQ_INT(compare_elems(out, ref, m * c, 1e-5, 1e-5, backends[bi].b->name), 0);
            }
            backends[bi].b->ops->layernorm(backends[bi].b, x, x, w, b, m, c, 1e-5f); /* in place */
            CHECK_EQ_INT(compare_elems(x, ref, m * c, 1e-5, 1e-5, backends[bi].b->name), 0);
            free(x), free(w), free(b), free(out), free(ref);
        }
}

/* The GELUs' polynomial exp/erf: within ~3e-7 of the double reference, relative or absolute. */
static void test_bias_act(void) {
    setup_backends();
    const am_act acts[] = {AM_ACT_NONE, AM_ACT_GELU, AM_ACT_QUICK_GELU, AM_ACT_RELU};
    for (int bi = 0; bi < n_backends; bi++)
        for (int a = 0; a < 4; a++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                const int64_t m = 33, n = 1000;
                float *y = fmalloc(m * n), *b = fmalloc(n), *ref = fmalloc(m * n);
                fill(y, m * n, 8.0);
                fill(b, n, 1.0);
                memcpy(ref, y, (size_t)(m * n) * sizeof(float));
                am_ref_bias_act(ref, with_bias ? b : NULL, m, n, acts[a]);
                backends[bi].b->ops->bias_act(backends[bi].b, y, with_bias ? b : NULL, m, n,
                                              acts[a]);
                CHECK_EQ_INT(compare_elems(y, ref, m * n, 2e-6, 1e-6, backends[bi].b->name), 0);
                free(y), free(b), free(ref);
            }
}

/* x + (y + bias): two f32 roundings against the reference's one. */
static void test_add_bias(void) {
    setup_backends();
    for (int bi = 0; bi < n_backends; bi++)
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const int64_t m = 17, n = 3001;
            float *x = fmalloc(m * n), *y = fmalloc(m * n), *b = fmalloc(n), *ref = fmalloc(m * n);
            fill(x, m * n, 1.0);
            fill(y, m * n, 1.0);
            fill(b, n, 1.0);
            memcpy(ref, x, (size_t)(m * n) * sizeof(float));
            am_ref_add_bias(ref, y, with_bias ? b : NULL, m, n);
            backends[bi].b->ops->add_bias(backends[bi].b, x, y, with_bias ? b : NULL, m, n);
            CHECK_EQ_INT(compare_elems(x, ref, m * n, 2.5e-7, 1e-6, backends[bi].b->name), 0);
            free(x), free(y), free(b), free(ref);
        }
}

/* Strided q/k/v/out (a fused qkv layout, an output wider than H*D), with and
 * without a per-head bias and a per-window mask; f32 GEMMs and softmax. */
static void test_attention_dense(void) {
    setup_backends();
    const struct {
        int64_t b, tq, tk;
        int h, d;
    } shapes[] = {{1, 1, 1, 1, 8}, {2, 5, 9, 3, 16}, {3, 64, 64, 4, 32}, {1, 65, 130, 2, 64}};
    for (int bi = 0; bi < n_backends; bi++)
        for (size_t si = 0; si < 4; si++)
            for (int extra = 0; extra < 2; extra++) {
                const int64_t B = shapes[si].b, TQ = shapes[si].tq, TK = shapes[si].tk;
                const int H = shapes[si].h, D = shapes[si].d;
                const int64_t HD = (int64_t)H * D, qs = 3 * HD, os = HD + 5;
                float *qkv = fmalloc(B * (TQ > TK ? TQ : TK) * qs), *out = fmalloc(B * TQ * os);
                float *ref = fmalloc(B * TQ * os), *bias = fmalloc(H * TQ * TK),
                      *mask = fmalloc(2 * TQ * TK);
                fill(qkv, B * (TQ > TK ? TQ : TK) * qs, 1.0);
                fill(bias, H * TQ * TK, 2.0);
                for (int64_t i = 0; i < 2 * TQ * TK; i++)
                    mask[i] = rnd() < 0 ? -100.0f : 0.0f;
                for (int64_t i = 0; i < TQ * TK; i += TK)
                    mask[i] = mask[TQ * TK + i] = 0.0f; /* a key each */
                memset(out, 0, (size_t)(B * TQ * os) * sizeof(float));
                memset(ref, 0, (size_t)(B * TQ * os) * sizeof(float));
                const am_dense_attn a = {.n_seqs = B,
                                         .tq = TQ,
                                         .tk = TK,
                                         .n_heads = H,
                                         .head_dim = D,
                                         .q_stride = qs,
                                         .kv_stride = qs,
                                         .o_stride = os,
                                         .scale = 1.0f / sqrtf((float)D),
                                         .bias = extra ? bias : NULL,
                                         .mask = extra ? mask : NULL,
                                         .n_mask = extra ? 2 : 0};
                am_ref_attention_dense(ref, qkv, qkv + HD, qkv + 2 * HD, &a);
                CHECK_OK(backends[bi].b->ops->attention_dense(backends[bi].b, out, qkv, qkv + HD,
                                                              qkv + 2 * HD, &a));
                CHECK_EQ_INT(compare_elems(out, ref, B * TQ * os, 1e-4, 1e-5, backends[bi].b->name),
                             0);
                /* attention_short (Swin's fused per-pair kernel) computes the same thing. */
                memset(out, 0, (size_t)(B * TQ * os) * sizeof(float));
                CHECK_OK(backends[bi].b->ops->attention_short(backends[bi].b, out, qkv, qkv + HD,
                                                              qkv + 2 * HD, &a));
                CHECK_EQ_INT(compare_elems(out, ref, B * TQ * os, 1e-4, 1e-5, backends[bi].b->name),
                             0);
                free(qkv), free(out), free(ref), free(bias), free(mask);
            }
}

/* HTSAT's and IMU2CLIP's ops against the reference: copies and max exact, GroupNorm and the
 * mean (double sums) and the GRU gates (libm) within a few ulps. */
static void test_audio_imu_ops(void) {
    setup_backends();
    const int64_t B = 3, T = 101, C = 12, P = 8, n = B * T * C;
    int32_t idx[8] = {3, 0, 7, 1, 6, 2, 5, 4};
    float *x = fmalloc(n), *y = fmalloc(n), *w = fmalloc(C), *bias = fmalloc(C);
    float *out = fmalloc(n * 5), *ref = fmalloc(n * 5);
    fill(x, n, 2.0), fill(y, n, 1.0), fill(w, C, 1.0), fill(bias, C, 0.5);
    for (int bi = 0; bi < n_backends; bi++) {
        am_backend *be = backends[bi].b;
        const int64_t rows = B * T * C / C / P * P; /* whole blocks of P rows */
        be->ops->gather_rows(be, out, x, idx, P, rows, C);
        am_ref_gather_rows(ref, x, idx, P, rows, C);
        CHECK(memcmp(out, ref, (size_t)(rows * C) * sizeof(float)) == 0);
        memcpy(out, x, (size_t)n * sizeof(float));
        memcpy(ref, x, (size_t)n * sizeof(float));
        be->ops->scatter_add(be, out, y, bias, idx, P, rows, C);
        am_ref_scatter_add(ref, y, bias, idx, P, rows, C);
        CHECK_EQ_INT(compare_elems(out, ref, n, 1e-6, 1e-6, be->name), 0);
        be->ops->groupnorm(be, out, x, w, bias, B, T, C, 4, 1e-5f);
        am_ref_groupnorm(ref, x, w, bias, B, T, C, 4, 1e-5f);
        CHECK_EQ_INT(compare_elems(out, ref, n, 1e-5, 1e-5, be->name), 0);
        be->ops->im2col_1d(be, out, x, B, T, C, 5, 2);
        am_ref_im2col_1d(ref, x, B, T, C, 5, 2);
        CHECK(memcmp(out, ref, (size_t)(B * (T - 8) * C * 5) * sizeof(float)) == 0);
        be->ops->maxpool_time(be, out, x, B, T, C, 3);
        am_ref_maxpool_time(ref, x, B, T, C, 3);
        CHECK(memcmp(out, ref, (size_t)(B * (T / 3) * C) * sizeof(float)) == 0);
        be->ops->mean_rows(be, out, x, B, T, C);
        am_ref_mean_rows(ref, x, B, T, C);
        CHECK_EQ_INT(compare_elems(out, ref, B * C, 1e-6, 1e-6, be->name), 0);
        be->ops->transpose(be, out, x, B, T, C);
        am_ref_transpose(ref, x, B, T, C);
        CHECK(memcmp(out, ref, (size_t)n * sizeof(float)) == 0);
        /* GRU gates: 3 rows of H = 12 with gi rows 5 * 3H apart. */
        memcpy(out, w, (size_t)C * sizeof(float));
        memcpy(out + C, bias, (size_t)C * sizeof(float));
        memcpy(out + 2 * C, w, (size_t)C * sizeof(float));
        memcpy(ref, out, (size_t)(3 * C) * sizeof(float));
        be->ops->gru_gates(be, out, x, 5 * 3 * C, y, 3, C);
        am_ref_gru_gates(ref, x, 5 * 3 * C, y, 3, C);
        CHECK_EQ_INT(compare_elems(out, ref, 3 * C, 1e-5, 1e-6, be->name), 0);
    }
    free(x), free(y), free(w), free(bias), free(out), free(ref);
}

static void test_copy(void) {
    setup_backends();
    for (int bi = 0; bi < n_backends; bi++) {
        float *x = fmalloc(1001), *y = fmalloc(1001);
        fill(x, 1001, 1.0);
        backends[bi].b->ops->copy(backends[bi].b, y, x, 1001 * sizeof(float));
        CHECK(memcmp(x, y, 1001 * sizeof(float)) == 0);
        free(x), free(y);
    }
}

static void test_teardown(void) {
    printf("     largest matmul error / S seen: %.3g (every path, tol %g)\n", worst_ratio,
           TOL_F32_ACC);
    for (int i = 0; i < n_backends; i++)
        am_backend_destroy(&backends[i].b);
    n_backends = 0;
}

AM_TEST_MAIN(AM_TEST(test_features), AM_TEST(test_backend_new_errors),
             AM_TEST(test_checker_detects_errors), AM_TEST(test_matmul_small_m),
             AM_TEST(test_matmul_odd_k), AM_TEST(test_matmul_gemm), AM_TEST(test_matmul_paths),
             AM_TEST(test_matmul_small_gemm_rows_independent),
             AM_TEST(test_matmul_rows_independent_of_m), AM_TEST(test_matmul_row_stride),
             AM_TEST(test_matmul_threads), AM_TEST(test_matmul_errors), AM_TEST(test_get_rows),
             AM_TEST(test_rmsnorm), AM_TEST(test_rope), AM_TEST(test_attention),
             AM_TEST(test_attention_threads), AM_TEST(test_kv_store),
             AM_TEST(test_attention_batched), AM_TEST(test_softmax), AM_TEST(test_silu_mul),
             AM_TEST(test_add), AM_TEST(test_layernorm), AM_TEST(test_bias_act),
             AM_TEST(test_add_bias), AM_TEST(test_attention_dense), AM_TEST(test_audio_imu_ops),
             AM_TEST(test_copy), AM_TEST(test_teardown))
