/* encoders/nn_ops.c - LayerNorm, GELU/ReLU, bias, im2col, attention, GroupNorm, Conv1d/MaxPool1d
 * helpers and GRU gates for the encoders.
 *
 * Element-wise kernels split rows over the op context's thread pool; the loops
 * are written so that the compiler vectorizes them (-O2 with restrict-free but
 * simple bodies). GEMMs go to the backend's matmul.
 */
#include "encoders/nn_ops.h"

#include "core/alloc.h"
#include "core/error.h"

#include <math.h>
#include <string.h>

/* The row kernels are compiled twice, for x86-64-v3 (AVX2 + FMA) and the
 * baseline, and picked at load time (GCC target_clones / ifunc): the project
 * builds for the baseline ISA, and these loops are where vector width pays. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define AM_NN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AM_NN_CLONES
#endif

/* Below this many elements an element-wise op runs on the calling thread:
 * waking the pool costs more than the work. */
#define AM_NN_PAR_MIN_ELEMS 16384

int am_act_parse(const char *name, am_act *out) {
    if (!strcmp(name, "quick_gelu"))
        *out = AM_ACT_QUICK_GELU;
    else if (!strcmp(name, "gelu"))
        *out = AM_ACT_GELU;
    else if (!strcmp(name, "relu"))
        *out = AM_ACT_RELU;
    else
        return am_err_set(AM_EUNSUPPORTED,
                          "activation '%s' is not supported (want gelu, quick_gelu or relu)", name);
    return 0;
}

const char *am_act_name(am_act a) {
    return a == AM_ACT_GELU         ? "gelu"
           : a == AM_ACT_QUICK_GELU ? "quick_gelu"
           : a == AM_ACT_RELU       ? "relu"
                                    : "none";
}

int am_nn_init(am_nn *nn, am_backend *be, int n_threads) {
    memset(nn, 0, sizeof *nn);
    if (!be || n_threads < 1)
        return am_err_set(AM_EINVAL, "nn ops: need a backend and n_threads >= 1");
    nn->be = be;
    return am_threadpool_new(n_threads, &nn->tp);
}

void am_nn_fini(am_nn *nn) {
    if (!nn) return;
    am_threadpool_destroy(&nn->tp);
    am_aligned_free(nn->scratch);
    memset(nn, 0, sizeof *nn);
}

static int scratch_reserve(am_nn *nn, size_t floats) {
    if (nn->scratch_floats >= floats) return 0;
    float *p = am_aligned_alloc(floats * sizeof(float));
    if (!p)
        return am_err_set(AM_ENOMEM, "nn ops: cannot allocate %zu bytes of scratch",
                          floats * sizeof(float));
    am_aligned_free(nn->scratch);
    nn->scratch = p;
    nn->scratch_floats = floats;
    return 0;
}

/* ---- row-parallel driver ---- */

typedef void (*rows_fn)(void *ctx, int64_t r0, int64_t r1);
typedef struct {
    rows_fn fn;
    void *ctx;
    int64_t m;
} rows_job;

static void rows_task(void *arg, int ith, int nth) {
    rows_job *j = arg;
    int64_t r0, r1;
    am_split_range(j->m, 1, ith, nth, &r0, &r1);
    if (r0 < r1) j->fn(j->ctx, r0, r1);
}

static void parallel_rows(am_nn *nn, int64_t m, int64_t elems_per_row, rows_fn fn, void *ctx) {
    if (m <= 0) return;
    if (m == 1 || m * elems_per_row < AM_NN_PAR_MIN_ELEMS || am_threadpool_size(nn->tp) == 1) {
        fn(ctx, 0, m);
        return;
    }
    rows_job j = {fn, ctx, m};
    am_threadpool_run(nn->tp, rows_task, &j);
}

/* ---- LayerNorm ---- */

typedef struct {
    float *out;
    const float *x, *w, *b;
    int64_t c;
    float eps;
} ln_ctx;

AM_NN_CLONES static void ln_rows(void *p, int64_t r0, int64_t r1) {
    const ln_ctx *a = p;
    const int64_t C = a->c;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = a->x + r * C; /* (C) */
        float *o = a->out + r * C;     /* (C) */
        /* Two passes in double: as exact as the reference, and cheap next to the GEMMs. */
        double s = 0;
        for (int64_t i = 0; i < C; i++)
            s += x[i];
        const double mean = s / (double)C;
        double v = 0;
        for (int64_t i = 0; i < C; i++) {
            double d = x[i] - mean;
            v += d * d;
        }
        const float rstd = (float)(1.0 / sqrt(v / (double)C + a->eps));
        const float fm = (float)mean;
        if (a->b) {
            for (int64_t i = 0; i < C; i++)
                o[i] = (x[i] - fm) * rstd * a->w[i] + a->b[i];
        } else {
            for (int64_t i = 0; i < C; i++)
                o[i] = (x[i] - fm) * rstd * a->w[i];
        }
    }
}

void am_nn_layernorm(am_nn *nn, float *out, const float *x, const float *w, const float *b,
                     int64_t m, int64_t c, float eps) {
    ln_ctx a = {out, x, w, b, c, eps};
    parallel_rows(nn, m, c, ln_rows, &a);
}

/* ---- activations, bias, residual ---- */

/* exp(x) for f32 without a libm call, so that loops over it vectorize (a
 * ViT-L image needs ~180M exponentials in softmax and quick_gelu: with scalar
 * expf they would cost as much as a quarter of the GEMMs). Cody-Waite range
 * reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r and
 * 2^n by exponent bits: relative error < 2e-7 over the clamped range
 * [-87.3, 88] (below it the result is ~0, as expf underflows; above it exp
 * is capped at e^88, which only quick_gelu's 1/(1+e^-1.7x) can reach, where
 * it makes no difference). */
static inline float exp_fast(float x) {
    x = x < -87.3f ? -87.3f : x > 88.0f ? 88.0f : x;
    /* Round to nearest with the 1.5 * 2^23 trick: plain SSE2/AVX arithmetic that vectorizes. */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t e = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &e, 4);
    return p * two_n;
}

/* erf(x) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7 in exact
 * arithmetic, ~2e-7 in f32) on exp_fast, so that GELU loops vectorize: libm's
 * erff is a scalar call, and HTSAT's MLPs need ~7.5M of them per clip. */
static inline float erf_fast(float x) {
    const float ax = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * ax);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const float y = 1.0f - p * t * exp_fast(-ax * ax);
    return x < 0 ? -y : y;
}

static inline float gelu_f(float x) {
    return 0.5f * x * (1.0f + erf_fast(x * 0.70710678118654752f));
}
static inline float quick_gelu_f(float x) { return x / (1.0f + exp_fast(-1.702f * x)); }

typedef struct {
    float *y;
    const float *x, *bias;
    int64_t n;
    am_act act;
} ew_ctx;

AM_NN_CLONES static void bias_act_rows(void *p, int64_t r0, int64_t r1) {
    const ew_ctx *a = p;
    const int64_t N = a->n;
    for (int64_t r = r0; r < r1; r++) {
        float *y = a->y + r * N; /* (N) */
        if (a->bias)
            for (int64_t i = 0; i < N; i++)
                y[i] += a->bias[i];
        if (a->act == AM_ACT_GELU)
            for (int64_t i = 0; i < N; i++)
                y[i] = gelu_f(y[i]);
        else if (a->act == AM_ACT_QUICK_GELU)
            for (int64_t i = 0; i < N; i++)
                y[i] = quick_gelu_f(y[i]);
        else if (a->act == AM_ACT_RELU)
            for (int64_t i = 0; i < N; i++)
                y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    }
}

void am_nn_bias_act(am_nn *nn, float *y, const float *bias, int64_t m, int64_t n, am_act act) {
    if (!bias && act == AM_ACT_NONE) return;
    ew_ctx a = {.y = y, .bias = bias, .n = n, .act = act};
    parallel_rows(nn, m, n, bias_act_rows, &a);
}

AM_NN_CLONES static void residual_rows(void *p, int64_t r0, int64_t r1) {
    const ew_ctx *a = p;
    const int64_t N = a->n;
    for (int64_t r = r0; r < r1; r++) {
        float *x = a->y + r * N;       /* (N) residual stream */
        const float *y = a->x + r * N; /* (N) branch output */
        if (a->bias)
            for (int64_t i = 0; i < N; i++)
                x[i] += y[i] + a->bias[i];
        else
            for (int64_t i = 0; i < N; i++)
                x[i] += y[i];
    }
}

void am_nn_residual(am_nn *nn, float *x, const float *y, const float *bias, int64_t m, int64_t n) {
    ew_ctx a = {.y = x, .x = y, .bias = bias, .n = n};
    parallel_rows(nn, m, n, residual_rows, &a);
}

int am_nn_linear(am_nn *nn, const am_linear *l, const float *x, float *y, int64_t m) {
    int rc = nn->be->ops->matmul(nn->be, &l->w, x, y, m);
    if (rc) return rc;
    if (l->b) am_nn_bias_act(nn, y, l->b, m, l->w.rows, AM_ACT_NONE);
    return 0;
}

int am_nn_matmul_rows(am_nn *nn, const am_matrix *w, const float *x, float *y, int64_t m,
                      int64_t chunk) {
    if (chunk <= 0) chunk = m;
    for (int64_t r = 0; r < m; r += chunk) {
        const int64_t n = m - r < chunk ? m - r : chunk;
        int rc = nn->be->ops->matmul(nn->be, w, x + r * w->cols, y + r * w->rows, n);
        if (rc) return rc;
    }
    return 0;
}

int am_nn_linear_rows(am_nn *nn, const am_linear *l, const float *x, float *y, int64_t m,
                      int64_t chunk) {
    int rc = am_nn_matmul_rows(nn, &l->w, x, y, m, chunk);
    if (rc) return rc;
    if (l->b) am_nn_bias_act(nn, y, l->b, m, l->w.rows, AM_ACT_NONE);
    return 0;
}

/* ---- im2col ---- */

typedef struct {
    const float *pix;
    float *cols;
    int ch, s, p;
} patch_ctx;

static void patch_rows(void *arg, int64_t r0, int64_t r1) {
    const patch_ctx *a = arg;
    const int g = a->s / a->p, p = a->p, s = a->s;
    const int64_t P = (int64_t)g * g, K = (int64_t)a->ch * p * p;
    for (int64_t r = r0; r < r1; r++) { /* r = b * P + patch */
        const int64_t bi = r / P, pi = r % P;
        const int py = (int)(pi / g), px = (int)(pi % g);
        float *dst = a->cols + r * K; /* (ch, p, p) */
        for (int c = 0; c < a->ch; c++) {
            const float *plane = a->pix + (bi * a->ch + c) * (int64_t)s * s; /* (S, S) */
            for (int ky = 0; ky < p; ky++)
                memcpy(dst + ((int64_t)c * p + ky) * p,
                       plane + (int64_t)(py * p + ky) * s + (int64_t)px * p,
                       (size_t)p * sizeof(float));
        }
    }
}

void am_nn_patchify(am_nn *nn, const float *pix, float *cols, int64_t b, int ch, int s, int p) {
    patch_ctx a = {pix, cols, ch, s, p};
    const int64_t g = s / p;
    parallel_rows(nn, b * g * g, (int64_t)ch * p * p, patch_rows, &a);
}

/* ---- attention ---- */

typedef struct {
    float *s;          /* (H, Tq, Tk) scores, softmaxed in place */
    const float *bias; /* (H, Tq, Tk) or NULL */
    const float *mask; /* (Tq, Tk) or NULL */
    int64_t tq, tk;
} sm_ctx;

AM_NN_CLONES static void softmax_rows(void *p, int64_t r0, int64_t r1) {
    const sm_ctx *a = p;
    const int64_t N = a->tk;
    for (int64_t r = r0; r < r1; r++) { /* r = h * Tq + i */
        float *x = a->s + r * N;
        if (a->bias) {
            const float *bb = a->bias + r * N;
            for (int64_t i = 0; i < N; i++)
                x[i] += bb[i];
        }
        if (a->mask) {
            const float *mm = a->mask + (r % a->tq) * N;
            for (int64_t i = 0; i < N; i++)
                x[i] += mm[i];
        }
        float mx = x[0];
        for (int64_t i = 1; i < N; i++)
            mx = x[i] > mx ? x[i] : mx;
        float sum = 0;
        for (int64_t i = 0; i < N; i++)
            x[i] = exp_fast(x[i] - mx);
        for (int64_t i = 0; i < N; i++)
            sum += x[i];
        const float inv = 1.0f / sum;
        for (int64_t i = 0; i < N; i++)
            x[i] *= inv;
    }
}

typedef struct {
    float *vt;      /* (H*D, Tk) */
    const float *v; /* row j at v + j * stride */
    int64_t stride, tk;
} tr_ctx;

/* Row r of vt (H*D, Tk) is column r of v: head r / D, element r % D, i.e. column r. */
static void transpose_rows(void *p, int64_t r0, int64_t r1) {
    const tr_ctx *a = p;
    for (int64_t r = r0; r < r1; r++) {
        float *dst = a->vt + r * a->tk;
        for (int64_t j = 0; j < a->tk; j++)
            dst[j] = a->v[j * a->stride + r];
    }
}

int am_nn_attention(am_nn *nn, float *out, int64_t o_stride, const float *q, int64_t q_stride,
                    const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                    int64_t tk, int n_heads, int head_dim, float scale) {
    return am_nn_attention_ex(nn, out, o_stride, q, q_stride, k, v, kv_stride, b, tq, tk, n_heads,
                              head_dim, scale, NULL, NULL, 0);
}

int am_nn_attention_ex(am_nn *nn, float *out, int64_t o_stride, const float *q, int64_t q_stride,
                       const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                       int64_t tk, int n_heads, int head_dim, float scale, const float *bias,
                       const float *mask, int64_t n_mask) {
    /* All heads of a sequence go phase by phase (H score GEMMs, one softmax
     * over H*Tq rows, one transpose of all V heads, H weighted-sum GEMMs), so
     * the backend's pool and ours hand over 4 times per sequence instead of 4
     * times per head: on a loaded machine each hand-over can cost a spin. */
    const int64_t D = head_dim, H = n_heads;
    const size_t need =
        (size_t)H * ((size_t)(tq * D) * 2 + (size_t)(tq * tk) + (size_t)(D * tk)) + 64;
    int rc = scratch_reserve(nn, need);
    if (rc) return rc;
    float *qh = nn->scratch;      /* (H, Tq, D) scaled queries */
    float *oh = qh + H * tq * D;  /* (H, Tq, D) */
    float *sc = oh + H * tq * D;  /* (H, Tq, Tk) scores, then probabilities */
    float *vt = sc + H * tq * tk; /* (H, D, Tk) */
    for (int64_t bi = 0; bi < b; bi++) {
        const float *qb = q + bi * tq * q_stride;
        const float *kb = k + bi * tk * kv_stride;
        const float *vb = v + bi * tk * kv_stride;
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                for (int64_t d = 0; d < D; d++)
                    qh[(h * tq + i) * D + d] = qb[i * q_stride + h * D + d] * scale;
        for (int64_t h = 0; h < H; h++) {
            /* K_h viewed in place as a weight matrix (Tk, D) with the row stride of k. */
            am_matrix km = {AM_DTYPE_F32, tk, D, kb + h * D, (size_t)kv_stride * sizeof(float)};
            if ((rc = nn->be->ops->matmul(nn->be, &km, qh + h * tq * D, sc + h * tq * tk, tq)))
                return rc;
        }
        sm_ctx sa = {sc, bias, mask && n_mask > 0 ? mask + (bi % n_mask) * tq * tk : NULL, tq, tk};
        parallel_rows(nn, H * tq, tk, softmax_rows, &sa);
        tr_ctx ta = {vt, vb, kv_stride, tk};
        parallel_rows(nn, H * D, tk, transpose_rows, &ta);
        for (int64_t h = 0; h < H; h++) {
            am_matrix vm = {AM_DTYPE_F32, D, tk, vt + h * D * tk, (size_t)tk * sizeof(float)};
            if ((rc = nn->be->ops->matmul(nn->be, &vm, sc + h * tq * tk, oh + h * tq * D, tq)))
                return rc;
        }
        float *ob = out + bi * tq * o_stride;
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                memcpy(ob + i * o_stride + h * D, oh + (h * tq + i) * D, (size_t)D * sizeof(float));
    }
    return 0;
}

/* ---- row permutations (Swin windows) ---- */

typedef struct {
    float *dst;
    const float *src, *bias;
    const int32_t *idx;
    int64_t period, c;
} perm_ctx;

static inline int64_t perm_row(const perm_ctx *a, int64_t r) {
    return r / a->period * a->period + a->idx[r % a->period];
}

static void gather_task(void *p, int64_t r0, int64_t r1) {
    const perm_ctx *a = p;
    for (int64_t r = r0; r < r1; r++)
        memcpy(a->dst + r * a->c, a->src + perm_row(a, r) * a->c, (size_t)a->c * sizeof(float));
}

void am_nn_gather_rows(am_nn *nn, float *dst, const float *src, const int32_t *idx, int64_t period,
                       int64_t m, int64_t c) {
    perm_ctx a = {dst, src, NULL, idx, period, c};
    parallel_rows(nn, m, c, gather_task, &a);
}

AM_NN_CLONES static void scatter_task(void *p, int64_t r0, int64_t r1) {
    const perm_ctx *a = p;
    const int64_t C = a->c;
    for (int64_t r = r0; r < r1; r++) {
        float *x = a->dst + perm_row(a, r) * C; /* (C) residual row in grid order */
        const float *y = a->src + r * C;        /* (C) branch row in window order */
        if (a->bias)
            for (int64_t i = 0; i < C; i++)
                x[i] += y[i] + a->bias[i];
        else
            for (int64_t i = 0; i < C; i++)
                x[i] += y[i];
    }
}

void am_nn_scatter_residual(am_nn *nn, float *x, const float *y, const float *bias,
                            const int32_t *idx, int64_t period, int64_t m, int64_t c) {
    perm_ctx a = {x, y, bias, idx, period, c};
    parallel_rows(nn, m, c, scatter_task, &a);
}

/* ---- fused attention over short sequences ---- */

typedef struct {
    float *out;
    const float *q, *k, *v, *bias, *mask;
    int64_t o_stride, q_stride, kv_stride, tq, tk, n_mask, pairs;
    int heads, d;
    float scale;
    float *scr; /* per thread: kt (D, Tk) + s (SR, Tk) + qs (SR, D) */
    size_t scr_stride;
} sattn_ctx;

/* Rows of queries per tile and floats per vector step: a 4 x 8 tile of
 * accumulators stays in four AVX registers, so each step loads one vector of
 * K (or V) and broadcasts four scalars. The tile functions are written for
 * SATTN_R = 4. */
#define SATTN_R 4
#define SATTN_V 8

/* GCC/Clang vector extensions: one AVX register in the x86-64-v3 clone, two
 * SSE registers in the baseline one. */
typedef float sattn_v8 __attribute__((vector_size(SATTN_V * sizeof(float))));

/* s (SR, Tk) = qs (SR, D) . kt (D, Tk) over columns [j0, j0 + SATTN_V). The four
 * accumulators are named variables so that they stay in registers. */
static inline void sattn_scores_tile(float *s, const float *qs, const float *kt, int64_t D,
                                     int64_t TK, int64_t j0) {
    sattn_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int64_t e = 0; e < D; e++) {
        sattn_v8 ke;
        memcpy(&ke, kt + e * TK + j0, sizeof ke);
        a0 += qs[e] * ke;
        a1 += qs[D + e] * ke;
        a2 += qs[2 * D + e] * ke;
        a3 += qs[3 * D + e] * ke;
    }
    memcpy(s + j0, &a0, sizeof a0);
    memcpy(s + TK + j0, &a1, sizeof a1);
    memcpy(s + 2 * TK + j0, &a2, sizeof a2);
    memcpy(s + 3 * TK + j0, &a3, sizeof a3);
}

/* o (SR, D) = p (SR, Tk) . v over columns [e0, e0 + SATTN_V). */
static inline void sattn_pv_tile(float *o, int64_t os, const float *p, const float *v, int64_t vs,
                                 int64_t TK, int64_t e0) {
    sattn_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int64_t j = 0; j < TK; j++) {
        sattn_v8 vj;
        memcpy(&vj, v + j * vs + e0, sizeof vj);
        a0 += p[j] * vj;
        a1 += p[TK + j] * vj;
        a2 += p[2 * TK + j] * vj;
        a3 += p[3 * TK + j] * vj;
    }
    memcpy(o + e0, &a0, sizeof a0);
    memcpy(o + os + e0, &a1, sizeof a1);
    memcpy(o + 2 * os + e0, &a2, sizeof a2);
    memcpy(o + 3 * os + e0, &a3, sizeof a3);
}

/* One (sequence, head) pair, SATTN_R query rows at a time (the last tile
 * repeats rows to stay full; only real rows are stored). */
AM_NN_CLONES static void sattn_pair(const sattn_ctx *a, int64_t pair, float *kt, float *s,
                                    float *qs) {
    const int64_t bi = pair / a->heads, h = pair % a->heads, D = a->d, TK = a->tk, TQ = a->tq;
    const float *qb = a->q + bi * TQ * a->q_stride + h * D;
    const float *kb = a->k + bi * TK * a->kv_stride + h * D;
    const float *vb = a->v + bi * TK * a->kv_stride + h * D;
    const float *bias = a->bias ? a->bias + h * TQ * TK : NULL;
    const float *mask = a->mask && a->n_mask > 0 ? a->mask + (bi % a->n_mask) * TQ * TK : NULL;
    const int64_t tk_v = TK / SATTN_V * SATTN_V, d_v = D / SATTN_V * SATTN_V;
    for (int64_t j = 0; j < TK; j++)
        for (int64_t e = 0; e < D; e++)
            kt[e * TK + j] = kb[j * a->kv_stride + e];
    for (int64_t i0 = 0; i0 < TQ; i0 += SATTN_R) {
        int64_t rows[SATTN_R];
        for (int r = 0; r < SATTN_R; r++) {
            rows[r] = i0 + r < TQ ? i0 + r : TQ - 1;
            for (int64_t e = 0; e < D; e++)
                qs[r * D + e] = qb[rows[r] * a->q_stride + e] * a->scale;
        }
        for (int64_t j0 = 0; j0 < tk_v; j0 += SATTN_V)
            sattn_scores_tile(s, qs, kt, D, TK, j0);
        for (int r = 0; r < SATTN_R; r++) {
            float *sr = s + r * TK;
            for (int64_t j = tk_v; j < TK; j++) {
                float acc = 0.0f;
                for (int64_t e = 0; e < D; e++)
                    acc += qs[r * D + e] * kt[e * TK + j];
                sr[j] = acc;
            }
            if (bias)
                for (int64_t j = 0; j < TK; j++)
                    sr[j] += bias[rows[r] * TK + j];
            if (mask)
                for (int64_t j = 0; j < TK; j++)
                    sr[j] += mask[rows[r] * TK + j];
            float mx = sr[0];
            for (int64_t j = 1; j < TK; j++)
                mx = sr[j] > mx ? sr[j] : mx;
            float sum = 0.0f;
            for (int64_t j = 0; j < TK; j++)
                sr[j] = exp_fast(sr[j] - mx);
            for (int64_t j = 0; j < TK; j++)
                sum += sr[j];
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j < TK; j++)
                sr[j] *= inv;
        }
        /* The output tile goes to qs (now free), then to the real rows. */
        for (int64_t e0 = 0; e0 < d_v; e0 += SATTN_V)
            sattn_pv_tile(qs, D, s, vb, a->kv_stride, TK, e0);
        for (int r = 0; r < SATTN_R; r++)
            for (int64_t e = d_v; e < D; e++) {
                float acc = 0.0f;
                for (int64_t j = 0; j < TK; j++)
                    acc += s[r * TK + j] * vb[j * a->kv_stride + e];
                qs[r * D + e] = acc;
            }
        for (int r = 0; r < SATTN_R && i0 + r < TQ; r++)
            memcpy(a->out + (bi * TQ + i0 + r) * a->o_stride + h * D, qs + r * D,
                   (size_t)D * sizeof(float));
    }
}

static void sattn_task(void *arg, int ith, int nth) {
    const sattn_ctx *a = arg;
    int64_t p0, p1;
    am_split_range(a->pairs, 1, ith, nth, &p0, &p1);
    float *kt = a->scr + (size_t)ith * a->scr_stride, *s = kt + a->d * a->tk;
    float *qs = s + SATTN_R * a->tk;
    for (int64_t p = p0; p < p1; p++)
        sattn_pair(a, p, kt, s, qs);
}

int am_nn_attention_short(am_nn *nn, float *out, int64_t o_stride, const float *q, int64_t q_stride,
                          const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                          int64_t tk, int n_heads, int head_dim, float scale, const float *bias,
                          const float *mask, int64_t n_mask) {
    if (tq < 1 || tk < 1 || tq > AM_NN_SHORT_ATTN_MAX_T || tk > AM_NN_SHORT_ATTN_MAX_T)
        return am_err_set(AM_EINVAL, "attention_short: sequences of %lld x %lld (at most %d)",
                          (long long)tq, (long long)tk, AM_NN_SHORT_ATTN_MAX_T);
    const int nth = am_threadpool_size(nn->tp);
    const size_t stride =
        ((size_t)(head_dim + SATTN_R) * (size_t)tk + (size_t)SATTN_R * (size_t)head_dim + 15) / 16 *
        16;
    int rc = scratch_reserve(nn, stride * (size_t)nth);
    if (rc) return rc;
    sattn_ctx a = {out,         q,        k,         v,     bias,        mask,
                   o_stride,    q_stride, kv_stride, tq,    tk,          n_mask,
                   b * n_heads, n_heads,  head_dim,  scale, nn->scratch, stride};
    if (nth == 1 || a.pairs < 2)
        sattn_task(&a, 0, 1);
    else
        am_threadpool_run(nn->tp, sattn_task, &a);
    return 0;
}

/* ---- GroupNorm, Conv1d im2col, MaxPool1d, GRU gates (IMU2CLIP) ---- */

typedef struct {
    float *out;
    const float *x, *w, *b;
    int64_t t, c, cg; /* cg: channels per group */
    int groups;
    float eps;
} gn_ctx;

/* Row r = sample * groups + group. */
static void gn_rows(void *p, int64_t r0, int64_t r1) {
    const gn_ctx *a = p;
    const int64_t T = a->t, C = a->c, G = a->cg;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t bi = r / a->groups, c0 = (r % a->groups) * G;
        const float *x = a->x + bi * T * C; /* (T, C) */
        float *o = a->out + bi * T * C;     /* (T, C) */
        double s = 0, v = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = c0; c < c0 + G; c++)
                s += x[t * C + c];
        const double mean = s / (double)(T * G);
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = c0; c < c0 + G; c++) {
                const double d = x[t * C + c] - mean;
                v += d * d;
            }
        const float rstd = (float)(1.0 / sqrt(v / (double)(T * G) + a->eps)), fm = (float)mean;
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = c0; c < c0 + G; c++)
                o[t * C + c] = (x[t * C + c] - fm) * rstd * a->w[c] + a->b[c];
    }
}

void am_nn_groupnorm(am_nn *nn, float *out, const float *x, const float *w, const float *b,
                     int64_t nb, int64_t t, int64_t c, int groups, float eps) {
    gn_ctx a = {out, x, w, b, t, c, c / groups, groups, eps};
    parallel_rows(nn, nb * groups, t * (c / groups), gn_rows, &a);
}

typedef struct {
    const float *x;
    float *cols;
    int64_t t, c, to;
    int k, dil;
} i2c_ctx;

/* Row r = sample * To + t. */
static void im2col_rows(void *p, int64_t r0, int64_t r1) {
    const i2c_ctx *a = p;
    const int64_t C = a->c, K = a->k;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t bi = r / a->to, t = r % a->to;
        const float *x = a->x + (bi * a->t + t) * C; /* row t of sample bi, (C) */
        float *dst = a->cols + r * C * K;            /* (C, k) */
        for (int64_t j = 0; j < K; j++) {
            const float *xj = x + j * a->dil * C;
            for (int64_t c = 0; c < C; c++)
                dst[c * K + j] = xj[c];
        }
    }
}

void am_nn_im2col_1d(am_nn *nn, const float *x, float *cols, int64_t b, int64_t t, int64_t c, int k,
                     int dil) {
    const int64_t to = t - (int64_t)dil * (k - 1);
    if (to <= 0) return;
    i2c_ctx a = {x, cols, t, c, to, k, dil};
    parallel_rows(nn, b * to, c * k, im2col_rows, &a);
}

typedef struct {
    float *out;
    const float *x;
    int64_t t, c, to;
    int p;
} mp_ctx;

static void maxpool_rows(void *arg, int64_t r0, int64_t r1) {
    const mp_ctx *a = arg;
    const int64_t C = a->c;
    for (int64_t r = r0; r < r1; r++) { /* r = sample * To + i */
        const int64_t bi = r / a->to, i = r % a->to;
        const float *x = a->x + (bi * a->t + i * a->p) * C; /* (p, C) */
        float *o = a->out + r * C;
        memcpy(o, x, (size_t)C * sizeof(float));
        for (int j = 1; j < a->p; j++)
            for (int64_t c = 0; c < C; c++)
                o[c] = x[j * C + c] > o[c] || x[j * C + c] != x[j * C + c] ? x[j * C + c] : o[c];
    }
}

void am_nn_maxpool_time(am_nn *nn, float *out, const float *x, int64_t b, int64_t t, int64_t c,
                        int p) {
    mp_ctx a = {out, x, t, c, t / p, p};
    parallel_rows(nn, b * (t / p), c * p, maxpool_rows, &a);
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

void am_nn_gru_gates(float *h, const float *gi, const float *gh, int64_t hidden) {
    const int64_t H = hidden;
    for (int64_t i = 0; i < H; i++) {
        const float r = sigmoid_f(gi[i] + gh[i]);
        const float z = sigmoid_f(gi[H + i] + gh[H + i]);
        const float n = tanhf(gi[2 * H + i] + r * gh[2 * H + i]);
        h[i] = (1.0f - z) * n + z * h[i];
    }
}

/* ---- reference versions ---- */

void am_nn_ref_layernorm(float *out, const float *x, const float *w, const float *b, int64_t m,
                         int64_t c, float eps) {
    for (int64_t r = 0; r < m; r++) {
        double s = 0, v = 0;
        for (int64_t i = 0; i < c; i++)
            s += x[r * c + i];
        double mean = s / (double)c;
        for (int64_t i = 0; i < c; i++)
            v += (x[r * c + i] - mean) * (x[r * c + i] - mean);
        double rstd = 1.0 / sqrt(v / (double)c + eps);
        for (int64_t i = 0; i < c; i++)
            out[r * c + i] = (float)((x[r * c + i] - mean) * rstd * w[i] + (b ? b[i] : 0.0));
    }
}

float am_nn_ref_act(float x, am_act act) {
    double d = x;
    if (act == AM_ACT_GELU) return (float)(0.5 * d * (1.0 + erf(d / sqrt(2.0))));
    if (act == AM_ACT_QUICK_GELU) return (float)(d / (1.0 + exp(-1.702 * d)));
    if (act == AM_ACT_RELU) return x > 0 ? x : 0.0f;
    return x;
}

void am_nn_ref_attention(float *out, int64_t o_stride, const float *q, int64_t q_stride,
                         const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                         int64_t tk, int n_heads, int head_dim, float scale) {
    am_nn_ref_attention_ex(out, o_stride, q, q_stride, k, v, kv_stride, b, tq, tk, n_heads,
                           head_dim, scale, NULL, NULL, 0);
}

void am_nn_ref_attention_ex(float *out, int64_t o_stride, const float *q, int64_t q_stride,
                            const float *k, const float *v, int64_t kv_stride, int64_t b,
                            int64_t tq, int64_t tk, int n_heads, int head_dim, float scale,
                            const float *bias, const float *mask, int64_t n_mask) {
    double *s = am_malloc((size_t)tk * sizeof(double));
    AM_ASSERT(s);
    for (int64_t bi = 0; bi < b; bi++)
        for (int h = 0; h < n_heads; h++)
            for (int64_t i = 0; i < tq; i++) {
                const float *qi = q + (bi * tq + i) * q_stride + (int64_t)h * head_dim;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < tk; j++) {
                    const float *kj = k + (bi * tk + j) * kv_stride + (int64_t)h * head_dim;
                    double d = 0;
                    for (int e = 0; e < head_dim; e++)
                        d += (double)qi[e] * kj[e];
                    s[j] = d * scale;
                    if (bias) s[j] += bias[((int64_t)h * tq + i) * tk + j];
                    if (mask && n_mask > 0) s[j] += mask[((bi % n_mask) * tq + i) * tk + j];
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int64_t j = 0; j < tk; j++)
                    sum += (s[j] = exp(s[j] - mx));
                float *oi = out + (bi * tq + i) * o_stride + (int64_t)h * head_dim;
                for (int e = 0; e < head_dim; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < tk; j++)
                        acc += s[j] * v[(bi * tk + j) * kv_stride + (int64_t)h * head_dim + e];
                    oi[e] = (float)(acc / sum);
                }
            }
    am_free(s);
}

void am_nn_ref_groupnorm(float *out, const float *x, const float *w, const float *b, int64_t nb,
                         int64_t t, int64_t c, int groups, float eps) {
    const int64_t G = c / groups;
    for (int64_t bi = 0; bi < nb; bi++)
        for (int g = 0; g < groups; g++) {
            double s = 0, v = 0;
            for (int64_t i = 0; i < t; i++)
                for (int64_t j = g * G; j < (g + 1) * G; j++)
                    s += x[(bi * t + i) * c + j];
            const double mean = s / (double)(t * G);
            for (int64_t i = 0; i < t; i++)
                for (int64_t j = g * G; j < (g + 1) * G; j++)
                    v += (x[(bi * t + i) * c + j] - mean) * (x[(bi * t + i) * c + j] - mean);
            const double rstd = 1.0 / sqrt(v / (double)(t * G) + eps);
            for (int64_t i = 0; i < t; i++)
                for (int64_t j = g * G; j < (g + 1) * G; j++)
                    out[(bi * t + i) * c + j] =
                        (float)((x[(bi * t + i) * c + j] - mean) * rstd * w[j] + b[j]);
        }
}

void am_nn_ref_gru(float *h_out, const float *x, const float *w_ih, const float *w_hh,
                   const float *b_ih, const float *b_hh, int64_t t, int64_t in, int64_t hidden) {
    const int64_t H = hidden;
    double *h = am_calloc((size_t)H, sizeof(double)), *hn = am_calloc((size_t)H, sizeof(double));
    AM_ASSERT(h && hn);
    for (int64_t s = 0; s < t; s++) {
        for (int64_t i = 0; i < H; i++) {
            double g[3], u[3];
            for (int q = 0; q < 3; q++) {
                const int64_t row = q * H + i;
                g[q] = b_ih[row], u[q] = b_hh[row];
                for (int64_t k = 0; k < in; k++)
                    g[q] += (double)w_ih[row * in + k] * x[s * in + k];
                for (int64_t k = 0; k < H; k++)
                    u[q] += (double)w_hh[row * H + k] * h[k];
            }
            const double r = 1.0 / (1.0 + exp(-(g[0] + u[0])));
            const double z = 1.0 / (1.0 + exp(-(g[1] + u[1])));
            const double n = tanh(g[2] + r * u[2]);
            hn[i] = (1.0 - z) * n + z * h[i];
        }
        memcpy(h, hn, (size_t)H * sizeof(double));
    }
    for (int64_t i = 0; i < H; i++)
        h_out[i] = (float)h[i];
    am_free(h);
    am_free(hn);
}
