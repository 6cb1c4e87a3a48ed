/* core/cpu/cpu_matmul.c - y (M, N) = x (M, K) . W^T on the CPU.
 *
 * The arithmetic follows W's dtype and the precision mode alone
 * (am_matmul_x_precision, dtype.h): Q8_0/Q4_0 W sees x quantized per block to
 * int8, BF16 W in precision mode bf16 sees x rounded to bf16, on every path
 * below, so that a row's result never depends on M, the tensor-parallel slice
 * or the batch (docs/numerics.md). The paths differ only in the order of
 * their f32 sums, and which one runs is decided in one place: mm_rules (the
 * table, with the measurements behind each crossover) and mm_choose (what the
 * process can actually run). The paths:
 *
 * MM_MATVEC (M <= 4): the ISA's matrix-vector kernel streams each weight row
 * once for all M activation rows (memory bound), rows split over the pool.
 *
 * MM_SMALL (dense W, a batched decode step and up): the ISA's cache-blocked
 * small_gemm kernel (kernels_simd.inc): no panel is packed or converted (a
 * library GEMM's packing costs as much as the arithmetic at this M) and W is
 * read from memory once.
 *
 * MM_TILED (quantized W; dense W without a small_gemm kernel): the matvec
 * kernels tiled: each thread takes its rows of W in blocks small enough to
 * stay in L2 and runs every group of 4 activation rows past a block.
 *
 * MM_AMX_Q8 (Q8_0 W on AMX-INT8 CPUs): int8 tiles (cpu_amx.c) on the same
 * int8 activations; W rows past the last multiple of 16 run MM_TILED.
 *
 * MM_DNNL_BF16 (BF16 W in precision bf16): oneDNN's bf16 matmul (AMX /
 * AVX512-BF16) on W in place, on the bf16-rounded x.
 *
 * MM_SGEMM: the pool splits the output columns (rows of W) and each thread
 * runs a single-threaded OpenBLAS sgemm on its slice (see cpu_blas.c): F32 W
 * in place, other dense W as panels converted to f32 (exact), BF16 W in
 * precision bf16 against the bf16-rounded x (the same products).
 *
 * MM_BY_MATVEC: MM_SGEMM's stand-in without OpenBLAS: repeated matvecs.
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
/* MM_TILED: bytes of W per block. */
#define AM_CPU_SMALL_GEMM_BLOCK_BYTES (96 * 1024)
/* Output rows are split between threads in multiples of this (one cache
 * line of y per row of x at the boundary, a whole sgemm register block, and
 * a whole AMX tile of W rows). */
#define AM_CPU_SPLIT_ALIGN 16

typedef enum {
    MM_MATVEC,
    MM_SMALL,
    MM_TILED,
    MM_AMX_Q8,
    MM_DNNL_BF16,
    MM_DNNL_BF16X3,
    MM_SGEMM,
    MM_BY_MATVEC,
} mm_path;

static const char *const mm_path_names[] = {"matvec", "small_gemm", "tiled_matvec",
                                            "amx_q8", "dnnl_bf16",  "dnnl_bf16x3",
                                            "sgemm",  "by_matvec"};

/* The arithmetic a rule applies to: W's dtype, and BF16 W in precision bf16
 * (x rounded to bf16) as a kind of its own. */
#define MM_BF16X         AM__N_WDTYPES
#define MM_N_ARITH       (AM__N_WDTYPES + 1)
#define MM_RULES_PER_ROW 4

/* Up to max_m rows, `path` (rules in increasing max_m; the last one INT64_MAX). */
typedef struct {
    int64_t max_m;
    mm_path path;
} mm_rule;

#define MM_ALL INT64_MAX
/* The kernel for each CPU class, weight arithmetic and M. Measurements (K 2048,
 * N 5632, 2 threads unless said; GFLOP/s or GOP/s with `bench_kernels 2 1024
 * gemm`, BENCH_DTYPE=dtype for one):
 *
 * simd, measured at avx2 (AMD EPYC Zen 3, 2 cores): small_gemm vs library (sgemm on f32
 * panels), with the limit moved: f32 M=64 151 vs 140, M=96 153 vs 153 (the
 * crossover; weights cycling through 8 copies at M = 96); f16 M=512 179 vs
 * 161 (f16 W is half the bytes of the f32 panels sgemm reads); bf16 M=128
 * 153-158 vs 147, M=512 151-157 vs 157-159 (even); q8_0 tiled 162 at M=128
 * against 162 for the library at M=512; q4_0 M=512 ~215 vs 160 (its int8
 * kernel outruns f32 FMAs). Quantized W never goes to the library: its int8
 * activations are the dtype's arithmetic (dtype.h).
 *
 * generic: no small_gemm kernel; the tiled matvec keeps up with the library
 * only while M is a decode batch (32).
 *
 * simd at avx512 (avx512-vnni kernels) and amx (Intel Xeon Sapphire Rapids KVM guest, 2 cores
 * shared with other jobs: 1 thread, timed by its CPU time, `BENCH_CPUTIME=1 BENCH_DTYPE=...
 * bench_kernels 1 64 gemm`, two runs each): q8_0: the vpmaddubsw kernels (level avx2) 85-93 at
 * every M; VNNI tiled 109-117 at M=4, 107-122 at M=8, 115-132 from M=16; AMX-INT8 154-161 at M=8,
 * 300-305 at M=16, 360-376 at M=32, 360-416 from M=64. AMX from 8. bf16, precision f32: small_gemm
 * (8 x 3 tiles) 103-110 at M=8, 117-127 at M=16, 126 at M=32; oneDNN on three exact bf16 terms of x
 * (bf16x3) 90-101 at M=8, 152-163 at M=16, 198-219 at M=32, 229-247 at M=64. bf16x3 from 16. bf16,
 * precision bf16: oneDNN 115-128 at M=8, 214-219 at M=16, 350 at M=32, 560 at M=64, 670-735 from
 * M=128. f16: small_gemm 4 x 3 tiles 106-108 at M=16..128, 8 x 3 tiles 114-126. f16 stays on f32
 * FMAs: AVX512-FP16 would round x to f16, which precision f32 rules out, and Sapphire Rapids has no
 * AMX-FP16. f32 (one run with 4 x 3 tiles, one 8 x 3): small_gemm 61-81 at M=16, 85-90 at M=32,
 * 98-107 at M=64; sgemm 114-117 at M=128, 147-155 at M=512. */
#define AMX_Q8_MIN_M     8
#define AMX_BF16X3_MIN_M 16
static const mm_rule mm_rules[AM__N_CPU_CLASSES][MM_N_ARITH][MM_RULES_PER_ROW] =
    {
        [AM__CLS_GENERIC] =
            {
                [AM_DTYPE_F32] = {{4, MM_MATVEC}, {32, MM_TILED}, {MM_ALL, MM_SGEMM}},
                [AM_DTYPE_F16] = {{4, MM_MATVEC}, {32, MM_TILED}, {MM_ALL, MM_SGEMM}},
                [AM_DTYPE_BF16] = {{4, MM_MATVEC}, {32, MM_TILED}, {MM_ALL, MM_SGEMM}},
                [AM_DTYPE_Q8_0] = {{4, MM_MATVEC}, {MM_ALL, MM_TILED}},
                [AM_DTYPE_Q4_0] = {{4, MM_MATVEC}, {MM_ALL, MM_TILED}},
                [MM_BF16X] = {{4, MM_MATVEC}, {32, MM_TILED}, {MM_ALL, MM_SGEMM}},
            },
        /* AVX2 and AVX-512 (with or without VNNI: that is in the kernel table,
         * not the path). MM_DNNL_BF16 falls back to small_gemm where oneDNN has
         * no bf16 GEMM (AVX2, AVX-512 without AVX512-BF16); where it has one it
         * beats the f32 FMAs at every M > 4. */
        [AM__CLS_SIMD] =
            {
                [AM_DTYPE_F32] = {{4, MM_MATVEC}, {64, MM_SMALL}, {MM_ALL, MM_SGEMM}},
                [AM_DTYPE_F16] = {{4, MM_MATVEC}, {MM_ALL, MM_SMALL}},
                [AM_DTYPE_BF16] = {{4, MM_MATVEC}, {MM_ALL, MM_SMALL}},
                [AM_DTYPE_Q8_0] = {{4, MM_MATVEC}, {MM_ALL, MM_TILED}},
                [AM_DTYPE_Q4_0] = {{4, MM_MATVEC}, {MM_ALL, MM_TILED}},
                [MM_BF16X] = {{4, MM_MATVEC}, {MM_ALL, MM_DNNL_BF16}},
            },
        /* AMX (Sapphire Rapids and later): int8 and bf16 tiles. */
        [AM__CLS_AMX] =
            {
                [AM_DTYPE_F32] = {{4, MM_MATVEC}, {64, MM_SMALL}, {MM_ALL, MM_SGEMM}},
                [AM_DTYPE_F16] = {{4, MM_MATVEC}, {MM_ALL, MM_SMALL}},
                [AM_DTYPE_BF16] = {{4, MM_MATVEC},
                                   {AMX_BF16X3_MIN_M - 1, MM_SMALL},
                                   {MM_ALL, MM_DNNL_BF16X3}},
                [AM_DTYPE_Q8_0] = {{4, MM_MATVEC},
                                   {AMX_Q8_MIN_M - 1, MM_TILED},
                                   {MM_ALL, MM_AMX_Q8}},
                [AM_DTYPE_Q4_0] = {{4, MM_MATVEC}, {MM_ALL, MM_TILED}},
                [MM_BF16X] = {{4, MM_MATVEC}, {MM_ALL, MM_DNNL_BF16}},
            },
};

typedef struct {
    am__cpu_ctx *c;
    const am_matrix *w;
    const float *x;     /* (M, K), already rounded for BF16 W */
    am__xq xq;          /* x quantized, for Q8_0/Q4_0 matvec kernels */
    const uint16_t *xb; /* (terms * M, K) bf16 x for oneDNN; NULL otherwise */
    int terms;          /* 1: x rounded to bf16; 3: x split exactly into 3 bf16 terms */
    float *y;           /* (M, N) */
    int64_t m;
    int64_t panel_rows;     /* rows of W per converted panel */
    size_t panel_stride;    /* bytes of scratch per thread */
    char *panels;           /* (n_threads, panel_stride) */
    atomic_int bf16_failed; /* some thread's oneDNN call failed: the product is redone */
    am__amx_xa xa;          /* MM_AMX_Q8: x in tile layout */
    float *amx_dw;          /* MM_AMX_Q8: (n_threads, K/32 * 16) scale scratch */
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
                                j->y + n0, w->rows, j->terms);
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

/* The path for this matmul: the rule for the CPU class, then what this
 * process has (OpenBLAS, oneDNN, the ISA's kernels) and the shape allows. */
static mm_path mm_choose(const am__cpu_ctx *c, const am_matrix *w, int64_t m) {
    const am_xprec prec = am_matmul_x_precision(w->dtype, c->precision);
    const int arith = prec == AM_XPREC_BF16 ? MM_BF16X : (int)w->dtype;
    const mm_rule *r = mm_rules[c->cls][arith];
    while (m > r->max_m)
        r++;
    mm_path p = r->path;
    if (p == MM_AMX_Q8 && !(c->amx_int8 && w->dtype == AM_DTYPE_Q8_0 && w->rows >= 16))
        p = MM_TILED;
    if ((p == MM_DNNL_BF16 || p == MM_DNNL_BF16X3) && !(c->use_bf16_gemm && w->row_bytes % 2 == 0))
        p = c->k->small_gemm[w->dtype] ? MM_SMALL : MM_SGEMM;
    if (p == MM_SMALL && !c->k->small_gemm[w->dtype]) p = m <= 32 ? MM_TILED : MM_SGEMM;
    if (p == MM_TILED && prec != AM_XPREC_Q8 && m > 32) p = MM_SGEMM;
    /* The cblas interface takes int dimensions. */
    if (p == MM_SGEMM && !(am__blas_load() == 0 && w->rows <= INT_MAX && w->cols <= INT_MAX &&
                           m <= INT_MAX && w->row_bytes / sizeof(float) <= INT_MAX))
        p = MM_BY_MATVEC;
    return p;
}

const char *am__cpu_matmul_path(am_backend *b, const am_matrix *w, int64_t m) {
    return mm_path_names[mm_choose(b->ctx, w, m)];
}

/* AMX-INT8 for Q8_0: each thread its 16-aligned rows of W in tiles, the rest tiled matvec. */
static void amx_task(void *arg, int ith, int nth) {
    mm_job *j = arg;
    int64_t n0, n1;
    am_split_range(j->w->rows, AM_CPU_SPLIT_ALIGN, ith, nth, &n0, &n1);
    if (n0 >= n1) return;
    const int64_t full = n0 + (n1 - n0) / 16 * 16;
    am__amx_q8_0_gemm(j->w, &j->xa, j->y, j->m, n0, full,
                      j->amx_dw + (size_t)ith * (size_t)(j->w->cols / AM_QK) * 16);
    if (full < n1) gemm_small(j, full, n1);
}

typedef struct {
    const am__cpu_ctx *c;
    const float *x;
    am__xq xq;
    am__amx_xa xa;
    int64_t m, k;
    int pack; /* also the tile layout, by groups of 16 rows */
} quant_job;

static void quant_task(void *arg, int ith, int nth) {
    quant_job *q = arg;
    int64_t g0, g1; /* groups of 16 rows */
    am_split_range((q->m + 15) / 16, 1, ith, nth, &g0, &g1);
    for (int64_t g = g0; g < g1; g++) {
        const int64_t r1 = (g + 1) * 16 < q->m ? (g + 1) * 16 : q->m;
        for (int64_t i = g * 16; i < r1; i++)
            q->c->k->quantize_x(q->x, &q->xq, i, q->k);
        if (q->pack) am__amx_pack_x(&q->xq, &q->xa, q->m, q->k, g);
    }
}

/* x (n) as three bf16 terms h, m, l (each n long, in that order in out) with
 * h + m + l == x exactly: h = bf16(x), m = bf16(x - h), l = bf16(x - h - m),
 * each difference exact in f32. x has 24 significant bits, h takes the top 8
 * (rounded), so x - h has at most 16, x - h - m at most 8: l holds it exactly
 * (unless it is below bf16's normal range, about 2^-126, which the bf16 tiles
 * flush: an error of at most 2^-126 |w| per product). The products with a
 * bf16 W are exact in f32, so W . x is the sum of three bf16 GEMMs with f32
 * accumulation: precision f32 on the bf16 tiles at three times the work. */
static void split_x_bf16x3(const float *x, uint16_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = am_f32_to_bf16(x[i]);
        const float r1 = x[i] - am_bf16_to_f32(h);
        const uint16_t mid = am_f32_to_bf16(r1);
        out[i] = h;
        out[n + i] = mid;
        out[2 * n + i] = am_f32_to_bf16(r1 - am_bf16_to_f32(mid));
    }
}

/* x rounded to bf16 (RNE), kept as f32: what every BF16 matmul path multiplies. */
static void round_x_bf16(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        out[i] = am_bf16_to_f32(am_f32_to_bf16(x[i]));
}

static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

int am__cpu_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m) {
    am__cpu_ctx *c = b->ctx;
    int rc = check_matrix(w, m);
    if (rc != 0) return rc;
    if (m == 0 || w->rows == 0) return 0;
    const int64_t K = w->cols, N = w->rows;
    mm_job j = {.c = c, .w = w, .x = x, .y = y, .m = m};
    const am_xprec prec = am_matmul_x_precision(w->dtype, c->precision);
    const mm_path path = mm_choose(c, w, m);

    /* Scratch: [bf16 x (oneDNN)] or [rounded x (other BF16 paths in mode bf16)], then
     * [per-thread f32 panels (sgemm)] or [xq | xa | per-thread AMX scales] (quantized W).
     * oneDNN takes the bf16 bits straight from x: the same rounding, one pass. */
    j.terms = path == MM_DNNL_BF16X3 ? 3 : 1;
    const size_t xb_bytes =
        path == MM_DNNL_BF16 || path == MM_DNNL_BF16X3
            ? align64((size_t)j.terms * (size_t)m * (size_t)K * sizeof(uint16_t))
            : 0;
    const size_t xr_bytes =
        prec == AM_XPREC_BF16 && !xb_bytes ? align64((size_t)m * (size_t)K * sizeof(float)) : 0;
    if (path == MM_SGEMM) {
        /* Panel rows: a multiple of the split alignment, ~AM_CPU_GEMM_PANEL_BYTES of f32. */
        int64_t rows = AM_CPU_GEMM_PANEL_BYTES / (K * (int64_t)sizeof(float));
        rows = rows < AM_CPU_SPLIT_ALIGN ? AM_CPU_SPLIT_ALIGN
                                         : rows / AM_CPU_SPLIT_ALIGN * AM_CPU_SPLIT_ALIGN;
        j.panel_rows = rows;
        if (w->dtype != AM_DTYPE_F32 || w->row_bytes % sizeof(float) != 0)
            j.panel_stride = align64((size_t)rows * (size_t)K * sizeof(float));
    }
    const size_t xq_bytes = prec == AM_XPREC_Q8 ? align64(am__xq_bytes(m, K)) : 0;
    const size_t xa_bytes = path == MM_AMX_Q8 ? align64(am__amx_xa_bytes(m, K)) : 0;
    const size_t dw_bytes =
        path == MM_AMX_Q8 ? align64((size_t)(K / AM_QK) * 16 * sizeof(float)) : 0;
    rc = am__cpu_scratch_reserve(c, xr_bytes + xb_bytes +
                                        (j.panel_stride + dw_bytes) * (size_t)b->n_threads +
                                        xq_bytes + xa_bytes + 64);
    if (rc != 0) return rc;
    char *scratch = c->scratch;
    if (xb_bytes) {
        uint16_t *xb = (uint16_t *)scratch;
        if (j.terms == 1)
            c->k->to_bf16(AM_DTYPE_F32, x, xb, m * K); /* RNE, as am_f32_to_bf16 */
        else
            split_x_bf16x3(x, xb, m * K);
        j.xb = xb;
        scratch += xb_bytes;
    } else if (xr_bytes) {
        float *xr = (float *)scratch;
        round_x_bf16(x, xr, m * K);
        j.x = xr;
        scratch += xr_bytes;
    }
    if (prec == AM_XPREC_Q8) {
        quant_job q = {.c = c, .x = x, .m = m, .k = K, .pack = path == MM_AMX_Q8};
        j.xq = q.xq = am__xq_layout(scratch, m, K);
        scratch += xq_bytes;
        if (q.pack) {
            j.xa = q.xa = am__amx_xa_layout(scratch, m, K);
            scratch += xa_bytes;
            j.amx_dw = (float *)scratch;
            scratch += dw_bytes * (size_t)b->n_threads;
        }
        if (m > AM__MATVEC_MAX_M)
            am_threadpool_run(c->pool, quant_task, &q);
        else
            quant_task(&q, 0, 1);
    }
    switch (path) {
    case MM_MATVEC:
        if ((uint64_t)N * w->row_bytes < AM_CPU_MATVEC_PAR_MIN_BYTES || b->n_threads == 1)
            c->k->matvec[w->dtype](w, j.x, &j.xq, y, m, 0, N);
        else
            am_threadpool_run(c->pool, matvec_task, &j);
        return 0;
    case MM_SMALL:
    case MM_TILED: am_threadpool_run(c->pool, gemm_small_task, &j); return 0;
    case MM_AMX_Q8: am_threadpool_run(c->pool, amx_task, &j); return 0;
    case MM_BY_MATVEC: am_threadpool_run(c->pool, gemm_fallback_task, &j); return 0;
    case MM_DNNL_BF16:
    case MM_DNNL_BF16X3:
    case MM_SGEMM: break;
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
