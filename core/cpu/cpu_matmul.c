/* core/cpu/cpu_matmul.c - y (M, N) = x (M, K) . W^T on the CPU.
 *
 * The arithmetic follows W's dtype and the precision mode alone
 * (am_matmul_x_precision, dtype.h): Q8_0/Q4_0 W sees x quantized per block to
 * int8, BF16 W in precision mode bf16 sees x rounded to bf16, on every path
 * below, so that a row's result never depends on M, the tensor-parallel slice
 * or the batch (docs/numerics.md). The paths differ only in the order of
 * their f32 sums:
 *
 * M <= AM__MATVEC_MAX_M: a matrix-vector product, memory bound: the ISA's
 * matvec kernel streams each weight row once for all M activation rows, with
 * the rows split over the pool.
 *
 * Larger M with Q8_0/Q4_0 W, and AM__MATVEC_MAX_M < M <= small_gemm_max_m
 * for dense W (a batched decode step, one row per sequence; F16/BF16 every
 * M): no panel is packed or converted (a library GEMM's packing costs as much
 * as the arithmetic at this M) and W is read from memory once. Dense W runs
 * the ISA's cache-blocked small_gemm kernel (see kernels_simd.inc). Quantized
 * W runs the int8 matvec kernels tiled: each thread takes its rows of W in
 * blocks small enough to stay in L2 and runs every group of 4 activation rows
 * past a block before moving on.
 *
 * Larger M with dense W: a GEMM, compute bound. The pool splits the output
 * columns (rows of W) and each thread runs a single-threaded library GEMM on
 * its slice, so exactly one set of threads is busy (see cpu_blas.c,
 * cpu_dnnl.c):
 *   F32   sgemm on W directly;
 *   F16   panels of W rows converted to f32 (exact), then sgemm;
 *   BF16  precision f32: f32 panels + sgemm, like F16. Precision bf16:
 *         oneDNN bf16 matmul (AMX / AVX512-BF16) on W in place, where the
 *         ISA level allows it (am__cpu_ctx.use_bf16_gemm); otherwise f32
 *         panels + sgemm on the bf16-rounded x (the same products).
 * Without OpenBLAS the GEMM runs as repeated matrix-vector products.
 */
#include "core/cpu/cpu_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#include <limits.h>
#include <stdatomic.h>

/* A matvec over fewer weight bytes runs on the calling thread: waking the
 * workers would cost more than it saves. */
#define AM_CPU_MATVEC_PAR_MIN_BYTES (64 * 1024)
/* Rows of W per converted panel: about this many bytes of f32, so a panel
 * stays in L2 while sgemm reads it M / (register block) times. */
#define AM_CPU_GEMM_PANEL_BYTES (512 * 1024)
/* The tiled-matvec small-M GEMM (quantized W): bytes of W per block. And the
 * most rows of x the small-M path takes per dtype: where it stops beating the
 * library GEMM on f32 panels. Measured (K 2048, N 5632, 2 threads, AVX2
 * Zen 3; GFLOP/s small vs library, with the limit moved; f32 with weights
 * cycling through 8 copies at M = 96, which bench_kernels does not run,
 * the rest with `bench_kernels 2 1024 gemm`): f32 M=64 151 vs 140, M=96 153
 * vs 153; f16 M=512 179 vs 161 (f16 W is half the bytes of the f32 panels
 * sgemm reads); bf16 M=128 153-158 vs 147, M=512 151-157 vs 157-159 (even);
 * q8_0 M=128 146 vs 147 before its paired dots (now 162, and the library 162
 * at M=512); q4_0 M=512 ~215 vs 160 (its int8 kernel outruns f32 FMAs).
 * Quantized W takes this path at every M: its int8 activations are part of
 * the dtype's arithmetic (dtype.h). */
#define AM_CPU_SMALL_GEMM_BLOCK_BYTES (96 * 1024)
#define AM_CPU_TILED_DENSE_MAX_M      32
static const int64_t small_gemm_max_m[AM__N_WDTYPES] = {[AM_DTYPE_F32] = 64,
                                                        [AM_DTYPE_F16] = INT64_MAX,
                                                        [AM_DTYPE_BF16] = INT64_MAX,
                                                        [AM_DTYPE_Q8_0] = INT64_MAX,
                                                        [AM_DTYPE_Q4_0] = INT64_MAX};
/* Output rows are split between threads in multiples of this (one cache
 * line of y per row of x at the boundary, and a whole sgemm register block). */
#define AM_CPU_SPLIT_ALIGN 16

typedef struct {
    am__cpu_ctx *c;
    const am_matrix *w;
    const float *x;     /* (M, K), already rounded for BF16 W */
    am__xq xq;          /* x quantized, for Q8_0/Q4_0 matvec kernels */
    const uint16_t *xb; /* (M, K) bf16 copy of x, for oneDNN; NULL otherwise */
    float *y;           /* (M, N) */
    int64_t m;
    int64_t panel_rows;     /* rows of W per converted panel */
    size_t panel_stride;    /* bytes of scratch per thread */
    char *panels;           /* (n_threads, panel_stride) */
    atomic_int bf16_failed; /* some thread's oneDNN call failed: the product is redone */
} mm_job;

static inline const char *w_row(const am_matrix *w, int64_t n) {
    return (const char *)w->data + (size_t)n * w->row_bytes;
}

static void matvec_task(void *arg, int ith, int nth) {
    mm_job *j = arg;
    int64_t n0, n1;
    am_split_range(j->w->rows, AM_CPU_SPLIT_ALIGN, ith, nth, &n0, &n1);
    if (n0 < n1) j->c->k->matvec[j->w->dtype](j->w, j->x, &j->xq, j->y, j->m, n0, n1);
}

/* Rows [n0, n1) of y for all M, without BLAS: matvec kernels over chunks of x rows. */
static void gemm_by_matvec(mm_job *j, int64_t n0, int64_t n1) {
    const int64_t K = j->w->cols, N = j->w->rows;
    for (int64_t i = 0; i < j->m; i += AM__MATVEC_MAX_M) {
        int64_t mm = j->m - i < AM__MATVEC_MAX_M ? j->m - i : AM__MATVEC_MAX_M;
        am__xq xq = {0};
        if (j->xq.q) xq = am__xq_row(&j->xq, i, K);
        j->c->k->matvec[j->w->dtype](j->w, j->x + i * K, &xq, j->y + i * N, mm, n0, n1);
    }
}

/* Rows [n0, n1) of y for all M: blocks of W rows, each visited by every
 * group of AM__MATVEC_MAX_M rows of x while it is in L2. */
static void gemm_small(mm_job *j, int64_t n0, int64_t n1) {
    const int64_t K = j->w->cols, N = j->w->rows;
    if (j->c->k->small_gemm[j->w->dtype]) { /* the ISA's cache-blocked kernel */
        j->c->k->small_gemm[j->w->dtype](j->w, j->x, NULL, j->y, j->m, n0, n1);
        return;
    }
    int64_t block = AM_CPU_SMALL_GEMM_BLOCK_BYTES / (int64_t)j->w->row_bytes;
    block = block < 2 ? 2 : block & ~(int64_t)1; /* the dense kernels take rows in pairs */
    for (int64_t b0 = n0; b0 < n1; b0 += block) {
        const int64_t b1 = b0 + block < n1 ? b0 + block : n1;
        for (int64_t i = 0; i < j->m; i += AM__MATVEC_MAX_M) {
            const int64_t mm = j->m - i < AM__MATVEC_MAX_M ? j->m - i : AM__MATVEC_MAX_M;
            am__xq xq = {0};
            if (j->xq.q) xq = am__xq_row(&j->xq, i, K);
            j->c->k->matvec[j->w->dtype](j->w, j->x + i * K, &xq, j->y + i * N, mm, b0, b1);
        }
    }
}

static void gemm_small_task(void *arg, int ith, int nth) {
    mm_job *j = arg;
    int64_t n0, n1;
    am_split_range(j->w->rows, AM_CPU_SPLIT_ALIGN, ith, nth, &n0, &n1);
    if (n0 < n1) gemm_small(j, n0, n1);
}

/* Rows [n0, n1) of y for all M through sgemm, converting W to f32 panels unless it is F32. */
static void gemm_f32(mm_job *j, int ith, int64_t n0, int64_t n1) {
    const am_matrix *w = j->w;
    const int64_t K = w->cols, N = w->rows;
    if (w->dtype == AM_DTYPE_F32 && w->row_bytes % sizeof(float) == 0) {
        am__sgemm_xwt(j->m, n1 - n0, K, j->x, K, (const float *)w_row(w, n0),
                      (int64_t)(w->row_bytes / sizeof(float)), j->y + n0, N);
        return;
    }
    float *panel = (float *)(j->panels + (size_t)ith * j->panel_stride); /* (panel_rows, K) */
    for (int64_t p = n0; p < n1; p += j->panel_rows) {
        int64_t rows = n1 - p < j->panel_rows ? n1 - p : j->panel_rows;
        for (int64_t r = 0; r < rows; r++)
            j->c->k->to_f32(w->dtype, w_row(w, p + r), panel + r * K, K);
        am__sgemm_xwt(j->m, rows, K, j->x, K, panel, K, j->y + p, N);
    }
}

/* Rows [n0, n1) through oneDNN bf16 (BF16 W in place); returns 0 or an error
 * (nothing reliable written). */
static int gemm_bf16(mm_job *j, int ith, int64_t n0, int64_t n1) {
    const am_matrix *w = j->w;
    return am__dnnl_matmul_bf16(j->c->dnnl[ith], j->m, n1 - n0, w->cols, j->xb,
                                (const uint16_t *)w_row(w, n0), (int64_t)(w->row_bytes / 2),
                                j->y + n0, w->rows);
}

static void gemm_task(void *arg, int ith, int nth) {
    mm_job *j = arg;
    int64_t n0, n1;
    am_split_range(j->w->rows, AM_CPU_SPLIT_ALIGN, ith, nth, &n0, &n1);
    if (n0 >= n1) return;
    if (j->xb) {
        if (gemm_bf16(j, ith, n0, n1) != 0) atomic_store(&j->bf16_failed, 1); /* redone below */
        return;
    }
    gemm_f32(j, ith, n0, n1);
}

static void gemm_fallback_task(void *arg, int ith, int nth) {
    mm_job *j = arg;
    int64_t n0, n1;
    am_split_range(j->w->rows, AM_CPU_SPLIT_ALIGN, ith, nth, &n0, &n1);
    if (n0 < n1) gemm_by_matvec(j, n0, n1);
}

int am__cpu_scratch_reserve(am__cpu_ctx *c, size_t bytes) {
    if (c->scratch_bytes >= bytes) return 0;
    void *p = am_aligned_alloc(bytes);
    if (!p)
        return am_err_set(AM_ENOMEM, "cpu backend: cannot allocate %zu bytes of scratch", bytes);
    am_aligned_free(c->scratch);
    c->scratch = p;
    c->scratch_bytes = bytes;
    return 0;
}

static int check_matrix(const am_matrix *w, int64_t m) {
    if ((unsigned)w->dtype >= AM__N_WDTYPES)
        return am_err_set(AM_EUNSUPPORTED, "cpu matmul: weight dtype %s", am_dtype_name(w->dtype));
    size_t need = am_dtype_row_bytes(w->dtype, w->cols);
    if (m < 0 || w->rows < 0 || w->cols <= 0 || need == 0 || w->row_bytes < need)
        return am_err_set(AM_EINVAL,
                          "cpu matmul: bad shape: m = %lld, W (%lld, %lld) %s, row_bytes %zu",
                          (long long)m, (long long)w->rows, (long long)w->cols,
                          am_dtype_name(w->dtype), w->row_bytes);
    return 0;
}

/* The small-M kernels serve this matmul. */
static int use_small_gemm(const am__cpu_ctx *c, am_dtype dt, int64_t m) {
    int quantized = am_matmul_x_precision(dt, c->precision) == AM_XPREC_Q8;
    int64_t max_m = small_gemm_max_m[dt];
    /* Without the ISA's blocked kernel dense W falls back to tiled matvec, which
     * keeps up with the library only while M is a decode batch. */
    if (!quantized && !c->k->small_gemm[dt] && max_m > AM_CPU_TILED_DENSE_MAX_M)
        max_m = AM_CPU_TILED_DENSE_MAX_M;
    /* oneDNN's bf16 GEMM (AMX) beats the tiled kernels at every M > 4. */
    int bf16_gemm = c->use_bf16_gemm && dt == AM_DTYPE_BF16;
    return m > AM__MATVEC_MAX_M && m <= max_m && !bf16_gemm;
}

/* x rounded to bf16 (RNE), kept as f32: what every BF16 matmul path multiplies. */
static void round_x_bf16(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        out[i] = am_bf16_to_f32(am_f32_to_bf16(x[i]));
}

int am__cpu_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m) {
    am__cpu_ctx *c = b->ctx;
    int rc = check_matrix(w, m);
    if (rc != 0) return rc;
    if (m == 0 || w->rows == 0) return 0;
    const int64_t K = w->cols, N = w->rows;
    mm_job j = {.c = c, .w = w, .x = x, .y = y, .m = m};
    const am_xprec prec = am_matmul_x_precision(w->dtype, c->precision);

    int bf16_gemm = c->use_bf16_gemm && w->dtype == AM_DTYPE_BF16 && w->row_bytes % 2 == 0;
    int small = use_small_gemm(c, w->dtype, m);
    /* The cblas interface takes int dimensions. */
    int blas = m > AM__MATVEC_MAX_M && !small && prec != AM_XPREC_Q8 && am__blas_load() == 0 &&
               N <= INT_MAX && K <= INT_MAX && m <= INT_MAX &&
               w->row_bytes / sizeof(float) <= INT_MAX;
    int need_f32_panels = w->dtype != AM_DTYPE_F32 || w->row_bytes % sizeof(float) != 0;
    /* Scratch: [bf16 x (oneDNN) | per-thread f32 panels], [rounded x (other BF16 paths) | panels]
     * or [xq]. oneDNN takes the bf16 bits straight from x: the same rounding, one pass. */
    size_t xb_bytes =
        blas && bf16_gemm ? ((size_t)m * (size_t)K * sizeof(uint16_t) + 63) / 64 * 64 : 0;
    size_t xr_bytes = prec == AM_XPREC_BF16 && !xb_bytes
                          ? ((size_t)m * (size_t)K * sizeof(float) + 63) / 64 * 64
                          : 0;
    int64_t rows = 0;
    if (blas) {
        /* Panel rows: a multiple of the split alignment, ~AM_CPU_GEMM_PANEL_BYTES of f32. */
        rows = AM_CPU_GEMM_PANEL_BYTES / (K * (int64_t)sizeof(float));
        rows = rows < AM_CPU_SPLIT_ALIGN ? AM_CPU_SPLIT_ALIGN
                                         : rows / AM_CPU_SPLIT_ALIGN * AM_CPU_SPLIT_ALIGN;
        j.panel_stride = need_f32_panels && !bf16_gemm
                             ? ((size_t)rows * (size_t)K * sizeof(float) + 63) / 64 * 64
                             : 0;
    }
    j.panel_rows = rows;
    size_t xq_bytes = prec == AM_XPREC_Q8 ? am__xq_bytes(m, K) : 0;
    rc = am__cpu_scratch_reserve(c, xr_bytes + xb_bytes + j.panel_stride * (size_t)b->n_threads +
                                        xq_bytes + 64);
    if (rc != 0) return rc;
    char *scratch = c->scratch;
    if (xb_bytes) {
        uint16_t *xb = (uint16_t *)scratch;
        c->k->to_bf16(AM_DTYPE_F32, x, xb, m * K); /* RNE, as am_f32_to_bf16 */
        j.xb = xb;
        scratch += xb_bytes;
    } else if (xr_bytes) {
        float *xr = (float *)scratch;
        round_x_bf16(x, xr, m * K);
        j.x = xr;
        scratch += xr_bytes;
    }
    if (prec == AM_XPREC_Q8) {
        j.xq = am__xq_layout(scratch, m, K);
        for (int64_t i = 0; i < m; i++)
            c->k->quantize_x(x, &j.xq, i, K);
    }
    if (!blas) {
        /* Matrix-vector kernels (also the GEMM fallback without OpenBLAS). */
        if (m <= AM__MATVEC_MAX_M &&
            ((uint64_t)N * w->row_bytes < AM_CPU_MATVEC_PAR_MIN_BYTES || b->n_threads == 1))
            c->k->matvec[w->dtype](w, j.x, &j.xq, y, m, 0, N);
        else
            am_threadpool_run(c->pool,
                              m <= AM__MATVEC_MAX_M ? matvec_task
                              : small               ? gemm_small_task
                                                    : gemm_fallback_task,
                              &j);
        return 0;
    }
    j.panels = scratch;
    am_threadpool_run(c->pool, gemm_task, &j);
    if (atomic_load(&j.bf16_failed)) {
        /* The whole product again on the f32 panels, with x rounded the same way. */
        AM_LOGW("cpu backend: oneDNN bf16 matmul failed (M %lld, N %lld, K %lld); using f32 GEMMs",
                (long long)m, (long long)N, (long long)K);
        c->use_bf16_gemm = 0;
        return am__cpu_matmul(b, w, x, y, m);
    }
    return 0;
}
