/* encoders/nn_ops.c - the encoders' ops: LayerNorm, bias + activation, residual and
 * attention as backend ops; im2col, Swin's short-window attention and row permutations,
 * GroupNorm, Conv1d/MaxPool1d helpers and GRU gates as host kernels.
 *
 * The host kernels split rows over the op context's thread pool; the loops
 * are written so that the compiler vectorizes them (-O2 with restrict-free but
 * simple bodies). GEMMs go to the backend's matmul.
 */
#include "encoders/nn_ops.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/fast_math.h"
#include "core/ref_ops.h"

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

static void parallel_rows(am_nn *nn, int64_t m, int64_t elems_per_row, am_rows_fn fn, void *ctx) {
    am_threadpool_rows(nn->tp, m, elems_per_row, AM_NN_PAR_MIN_ELEMS, fn, ctx);
}

/* ---- LayerNorm, activations, bias, residual: backend ops (core/backend.h) ---- */

void am_nn_layernorm(am_nn *nn, float *out, const float *x, const float *w, const float *b,
                     int64_t m, int64_t c, float eps) {
    nn->be->ops->layernorm(nn->be, out, x, w, b, m, c, eps);
}

void am_nn_bias_act(am_nn *nn, float *y, const float *bias, int64_t m, int64_t n, am_act act) {
    if (!bias && act == AM_ACT_NONE) return;
    nn->be->ops->bias_act(nn->be, y, bias, m, n, act);
}

void am_nn_residual(am_nn *nn, float *x, const float *y, const float *bias, int64_t m, int64_t n) {
    nn->be->ops->add_bias(nn->be, x, y, bias, m, n);
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

/* ---- attention: the backend's attention_dense ---- */

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
    const am_dense_attn a = {.n_seqs = b,
                             .tq = tq,
                             .tk = tk,
                             .n_heads = n_heads,
                             .head_dim = head_dim,
                             .q_stride = q_stride,
                             .kv_stride = kv_stride,
                             .o_stride = o_stride,
                             .scale = scale,
                             .bias = bias,
                             .mask = mask,
                             .n_mask = n_mask};
    return nn->be->ops->attention_dense(nn->be, out, q, k, v, &a);
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
                sr[j] = am_exp_fast(sr[j] - mx);
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
    am_ref_layernorm(out, x, w, b, m, c, eps);
}

float am_nn_ref_act(float x, am_act act) { return am_ref_act(x, act); }

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
    const am_dense_attn a = {.n_seqs = b,
                             .tq = tq,
                             .tk = tk,
                             .n_heads = n_heads,
                             .head_dim = head_dim,
                             .q_stride = q_stride,
                             .kv_stride = kv_stride,
                             .o_stride = o_stride,
                             .scale = scale,
                             .bias = bias,
                             .mask = mask,
                             .n_mask = n_mask};
    am_ref_attention_dense(out, q, k, v, &a);
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
