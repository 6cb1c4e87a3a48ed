/* core/cpu/cpu_internal.h - what the files of the CPU backend share.
 *
 * The backend is split by concern: cpu_backend.c (vtable, threading of the
 * light ops), cpu_matmul.c (the one kernel dispatcher for matmuls: which
 * kernel runs for a CPU class, weight dtype and M), cpu_blas.c (OpenBLAS
 * loaded with dlopen), cpu_dnnl.c (oneDNN bf16 matmul), cpu_amx.c (Q8_0 on
 * AMX-INT8 tiles), cpu_features.c (CPUID), and one kernel table per
 * instruction set: kernels_generic.c, kernels_avx2.c and kernels_avx512.c
 * (the last two instantiate kernels_simd.inc with different vector macros;
 * kernels_avx512.c also makes the avx512-vnni table with kernels_vnni.inc).
 */
#ifndef AM_CPU_INTERNAL_H
#define AM_CPU_INTERNAL_H

#include "core/backend.h"
#include "core/cpu_backend.h"
#include "core/threadpool.h"

#include <stddef.h>
#include <stdint.h>

/* Up to this many activation rows, matmul streams W once through the
 * matrix-vector kernels (memory bound); above it, it runs as a GEMM. */
#define AM__MATVEC_MAX_M 4

/* Weight dtypes the kernels handle: F32, F16, BF16, Q8_0, Q4_0 (enum order). */
#define AM__N_WDTYPES (AM_DTYPE_Q4_0 + 1)

/* Activations quantized for the Q8_0/Q4_0 matrix-vector kernels, like
 * llama.cpp's q8_1: per block b of 32 values of a row, d = amax/127 (kept in
 * f32), q = round-to-nearest-even(x / d) in int8, s = d * sum(q). Each value
 * is then off by at most d/2, so a dot product with a weight row w is off by
 * at most sum_b (d_b / 2) * sum_{k in b} |w_k| (plus f32 rounding); in
 * exchange the inner products are exact int8 x int8 -> int32 sums. */
typedef struct am__xq {
    int8_t *q; /* (M, K) */
    float *d;  /* (M, K/32) */
    float *s;  /* (M, K/32) */
    /* The same values rearranged for the SIMD Q4_0 kernel, which takes blocks
     * in pairs (2p, 2p+1), p < P = K/64, with one 256-bit register holding
     * both blocks' low nibbles and another both high nibbles:
     *   q4 (M, P, 64): q[2p][0..16), q[2p+1][0..16), q[2p][16..32), q[2p+1][16..32)
     *   d4 (M, P, 8):  d[2p] x4, d[2p+1] x4
     *   c4 (M, P, 8):  lane r < 4: 8 * (sum of q[2p][4r..4r+4) and q[2p][16+4r..16+4r+4)),
     *                  lanes 4..7 the same for block 2p+1 (the nibble offset -8, in int32).
     * Only the SIMD tables fill these. */
    int8_t *q4;
    float *d4;
    int32_t *c4;
    /* For the AVX512-VNNI Q8_0 kernel (kernels_vnni.inc), which takes blocks
     * in pairs (2p, 2p+1) as one 512-bit register:
     *   qu (M, K):      q + 128 as unsigned bytes (vpdpbusd's unsigned operand);
     *   d16 (M, P, 16): lanes 0..7 d[2p], lanes 8..15 d[2p+1].
     * Only the VNNI table fills these. */
    uint8_t *qu;
    float *d16;
} am__xq;

/* Bytes of scratch for M rows of K quantized activations (all fields). */
static inline size_t am__xq_bytes(int64_t m, int64_t k) {
    const size_t nb = (size_t)(k / 32), np = nb / 2;
    return (size_t)m * (3 * (size_t)k + 2 * nb * sizeof(float) + 32 * np * sizeof(float));
}

/* Lays the fields of an am__xq for M rows of K over buf (am__xq_bytes long, 64-byte aligned). */
static inline am__xq am__xq_layout(void *buf, int64_t m, int64_t k) {
    const size_t nb = (size_t)(k / 32), np = nb / 2, mm = (size_t)m;
    am__xq xq;
    xq.d = buf; /* floats first: they stay aligned */
    xq.s = xq.d + mm * nb;
    xq.d4 = xq.s + mm * nb;
    xq.c4 = (int32_t *)(xq.d4 + mm * np * 8);
    xq.d16 = (float *)(xq.c4 + mm * np * 8);
    xq.q = (int8_t *)(xq.d16 + mm * np * 16);
    xq.q4 = xq.q + mm * (size_t)k;
    xq.qu = (uint8_t *)(xq.q4 + mm * (size_t)k);
    return xq;
}

/* The view of xq starting at activation row i. */
static inline am__xq am__xq_row(const am__xq *xq, int64_t i, int64_t k) {
    const int64_t nb = k / 32, np = nb / 2;
    am__xq r = {xq->q + i * k,       xq->d + i * nb,      xq->s + i * nb, xq->q4 + i * k,
                xq->d4 + i * np * 8, xq->c4 + i * np * 8, xq->qu + i * k, xq->d16 + i * np * 16};
    return r;
}

/* y (M, N) = x (M, K) . W^T for output rows n in [n0, n1) only; m <= AM__MATVEC_MAX_M.
 * Reads each weight row once for all m activation rows. Dense dtypes read x;
 * Q8_0/Q4_0 read xq (x quantized by the table's quantize_x) instead. */
typedef void (*am__matvec_fn)(const am_matrix *w, const float *x, const am__xq *xq, float *y,
                              int64_t m, int64_t n0, int64_t n1);

/* One instruction set's kernels. Every function is safe to call from several
 * threads at once on disjoint outputs. */
typedef struct am__cpu_kernels {
    const char *name; /* "generic", "avx2", "avx512" */
    am__matvec_fn matvec[AM__N_WDTYPES];
    /* The small-M GEMM (a batched decode step): y (M, N) = x (M, K) . W^T for
     * rows [n0, n1) and any m, blocked for the caches; a row's result does not
     * depend on m. NULL for a dtype without one (the caller tiles matvec). */
    am__matvec_fn small_gemm[AM__N_WDTYPES];
    /* Quantizes row `row` of x (M, K) into xq (see am__xq); K a multiple of 32. */
    void (*quantize_x)(const float *x, const am__xq *xq, int64_t row, int64_t k);
    /* dst (n) = row src (n) of dtype t (F32/F16/BF16/Q8_0/Q4_0) in f32, like am_dequantize_row. */
    void (*to_f32)(am_dtype t, const void *src, float *dst, int64_t n);
    /* dst (n) = bf16 of row src of dtype t (F32 rounded RNE; BF16 copied; others via f32). */
    void (*to_bf16)(am_dtype t, const void *src, uint16_t *dst, int64_t n);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n); /* y += a * x */
    void (*scale)(float *y, float a, int64_t n);                /* y *= a */
    float (*max)(const float *x, int64_t n);                    /* n >= 1 */
    float (*exp_sum)(float *x, float sub, int64_t n); /* x = exp(x - sub); returns sum(x) */
    /* Attention on a tile of nq (1, 2, 4 or 8) queries q[j] (D) that read the
     * same kv head, over a chunk of n keys: K and V rows k + t * kv_stride and
     * v + t * kv_stride (D floats each), t < n. Each chunk goes through
     *   attn_scores:  s (n, nq) = scale * q[j] . k_t;
     *   (the caller then masks scores past each query's causal limit with -inf)
     *   attn_softmax: per query j, with its running maximum m[j] and sum l[j]
     *                 (m = -inf, l = 0 before the first chunk, which must give
     *                 each query at least one finite score): m' = max(m, s[:, j]),
     *                 corr[j] = exp(m - m'), s[:, j] = exp(s[:, j] - m'),
     *                 l[j] = l[j] * corr[j] + sum(s[:, j]), m[j] = m';
     *   attn_accum:   o[j] (D) = corr[j] * o[j] + sum_t p[t, j] * v_t with p = s,
     * so that after the last chunk o[j] / l[j] is the softmax-weighted sum of V.
     * They may prefetch rows past n but never read them. */
    void (*attn_scores)(const float *const *q, int nq, const float *k, int64_t kv_stride, int64_t n,
                        int d, float scale, float *s);
    void (*attn_softmax)(float *s, int64_t n, int nq, float *m, float *l, float *corr);
    void (*attn_accum)(float *const *o, int nq, const float *corr, const float *p, const float *v,
                       int64_t kv_stride, int64_t n, int d);
    /* out (k) = x * rsqrt(mean(x^2) + eps) * w; out may equal x. */
    void (*rmsnorm)(float *out, const float *x, const float *w, int64_t k, float eps);
    void (*silu_mul)(float *gate, const float *up, int64_t n);
    void (*add)(float *y, const float *x, int64_t n);
} am__cpu_kernels;

const am__cpu_kernels *am__cpu_kernels_generic(void);
const am__cpu_kernels *am__cpu_kernels_avx2(void);
const am__cpu_kernels *am__cpu_kernels_avx512(void);
/* The avx512 table with AVX512-VNNI Q8_0 kernels; only where the CPU has AVX512-VNNI. */
const am__cpu_kernels *am__cpu_kernels_avx512_vnni(void);

/* The Q8_0 GEMM on AMX-INT8 tiles (cpu_amx.c). The activations in tile
 * layout, per group g of 16 rows (the last padded with zero rows) and block b:
 *   q (G, K/32, 8, 64): B[r][4i + j] = xq.q[16g + i][32b + 4r + j];
 *   d (G, K/32, 16):    xq.d[16g + i][b] (0 for padding rows). */
typedef struct am__amx_xa {
    int8_t *q;
    float *d;
} am__amx_xa;
/* 1 if this build has the AMX kernel (the CPU's AMX-INT8 is checked by the caller). */
int am__amx_q8_0_compiled(void);
/* Bytes of am__amx_xa for M rows of K (64-byte aligned buffer), and its layout over buf. */
size_t am__amx_xa_bytes(int64_t m, int64_t k);
am__amx_xa am__amx_xa_layout(void *buf, int64_t m, int64_t k);
/* Fills group g of xa from xq (rows of x quantized already). */
void am__amx_pack_x(const am__xq *xq, const am__amx_xa *xa, int64_t m, int64_t k, int64_t g);
/* y (M, N) = x . W^T for W rows [n0, n1) rounded down to a multiple of 16 from n0 (the
 * caller runs the rest elsewhere); dw: scratch of K/32 * 16 floats for this thread.
 * Configures the tiles of the calling thread and releases them. */
void am__amx_q8_0_gemm(const am_matrix *w, const am__amx_xa *xa, float *y, int64_t m, int64_t n0,
                       int64_t n1, float *dw);

/* OpenBLAS (cpu_blas.c). am__blas_load returns 0 once libopenblas is loaded
 * (AM_EUNSUPPORTED if it cannot be found). am__sgemm_xwt computes
 * y (m, n) = x (m, k) . w^T with w (n, k); leading dimensions in elements. It
 * runs single-threaded: callers split n over the pool. */
int am__blas_load(void);
void am__sgemm_xwt(int64_t m, int64_t n, int64_t k, const float *x, int64_t ldx, const float *w,
                   int64_t ldw, float *y, int64_t ldy);

/* oneDNN bf16 matmul (cpu_dnnl.c): one state per pool thread, since a
 * oneDNN stream is single-threaded and each primitive is created for one
 * thread (OpenMP threads = 1 while it runs: the pool does the splitting). */
typedef struct am__dnnl_thread am__dnnl_thread;
/* 1 if this process can run bf16 matmuls fast (AVX512-BF16 or AMX, oneDNN
 * has a non-reference implementation, AM_CPU_BF16_GEMM != 0, the ISA level
 * at the first call is avx512 or amx). Cached: the first call also caps
 * oneDNN's ISA for the process (below AMX at level avx512). */
int am__dnnl_bf16_available(void);
int am__dnnl_thread_new(am__dnnl_thread **out);
void am__dnnl_thread_destroy(am__dnnl_thread **p);
/* y (m, n) = x (m, k) . w^T in f32, x and w bf16, w (n, k) with row stride
 * ldw, y row stride ldy. With terms > 1, x is (terms * m, k): terms blocks of
 * m rows, and y row i is the sum of the products of rows i, m + i, ... in that
 * order. Returns 0 or AM_EUNSUPPORTED/AM_ENOMEM (the caller then falls back to
 * the f32 path). */
int am__dnnl_matmul_bf16(am__dnnl_thread *t, int64_t m, int64_t n, int64_t k, const uint16_t *x,
                         const uint16_t *w, int64_t ldw, float *y, int64_t ldy, int terms);

/* f16 bits -> f32, all 65536 values: the quantized kernels read a block's
 * scale with one load instead of a convert-and-broadcast (fewer vector
 * uops per block; the few entries a matrix uses stay in L1/L2). Filled by
 * am__cpu_tables_init(), which am_cpu_backend_new calls. */
extern float am__f16_table[1 << 16];
void am__cpu_tables_init(void);

/* The CPU classes of the kernel rules (cpu_matmul.c): the ISA level and the
 * features within it that change which kernel wins. */
typedef enum {
    AM__CLS_GENERIC,
    AM__CLS_SIMD, /* levels avx2 and avx512 (AVX512-VNNI or not), and amx without AMX-INT8 */
    AM__CLS_AMX,  /* level amx with AMX-INT8 (Sapphire Rapids and later) */
    AM__N_CPU_CLASSES
} am__cpu_class;

/* The backend's private state. */
typedef struct am__cpu_ctx {
    am_threadpool *pool;
    const am__cpu_kernels *k;
    am_precision precision; /* AM_CPU_PRECISION: what BF16 matmuls do to x (dtype.h) */
    am__cpu_class cls;      /* what cpu_matmul.c's kernel rules follow */
    int amx_int8;           /* the CPU has AMX-INT8 tiles and this build their kernel */
    int use_bf16_gemm;      /* oneDNN's bf16 GEMM can run (dnnl below is set up) */
    am__dnnl_thread **dnnl; /* [n_threads], when use_bf16_gemm */
    void *scratch;          /* GEMM panels and converted activations */
    size_t scratch_bytes;
    float *attn_scratch;        /* attention_dense: per-head queries, scores, V^T (cpu_nn.c) */
    size_t attn_scratch_floats; /* (apart from scratch, which the matmuls inside it use) */
} am__cpu_ctx;

int am__cpu_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m);
/* The name of the path am__cpu_matmul takes for this W and M ("matvec", "small_gemm",
 * "tiled_matvec", "amx_q8", "dnnl_bf16", "sgemm", "by_matvec"): for tests and benchmarks. */
const char *am__cpu_matmul_path(am_backend *b, const am_matrix *w, int64_t m);

/* The encoder ops of am_backend_ops (cpu_nn.c). */
void am__cpu_layernorm(am_backend *b, float *out, const float *x, const float *w, const float *bias,
                       int64_t m, int64_t c, float eps);
void am__cpu_bias_act(am_backend *b, float *y, const float *bias, int64_t m, int64_t n, am_act act);
void am__cpu_add_bias(am_backend *b, float *x, const float *y, const float *bias, int64_t m,
                      int64_t n);
int am__cpu_attention_dense(am_backend *b, float *out, const float *q, const float *k,
                            const float *v, const am_dense_attn *a);
int am__cpu_attention_short(am_backend *b, float *out, const float *q, const float *k,
                            const float *v, const am_dense_attn *a);
void am__cpu_gather_rows(am_backend *b, float *dst, const float *src, const int32_t *idx,
                         int64_t period, int64_t m, int64_t c);
void am__cpu_scatter_add(am_backend *b, float *x, const float *y, const float *bias,
                         const int32_t *idx, int64_t period, int64_t m, int64_t c);
void am__cpu_groupnorm(am_backend *be, float *out, const float *x, const float *w, const float *b,
                       int64_t nb, int64_t t, int64_t c, int groups, float eps);
void am__cpu_im2col_1d(am_backend *be, float *cols, const float *x, int64_t b, int64_t t, int64_t c,
                       int k, int dil);
void am__cpu_maxpool_time(am_backend *be, float *out, const float *x, int64_t b, int64_t t,
                          int64_t c, int p);
void am__cpu_mean_rows(am_backend *b, float *out, const float *x, int64_t nb, int64_t t, int64_t c);
void am__cpu_transpose(am_backend *b, float *dst, const float *src, int64_t nb, int64_t t,
                       int64_t c);
void am__cpu_gru_gates(am_backend *b, float *h, const float *gi, int64_t gi_stride, const float *gh,
                       int64_t rows, int64_t hidden);

/* Makes c->scratch at least `bytes` long (contents not kept); 0 or AM_ENOMEM. */
int am__cpu_scratch_reserve(am__cpu_ctx *c, size_t bytes);

#endif
