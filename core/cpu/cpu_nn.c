/* core/cpu/cpu_nn.c - the CPU backend's encoder ops: LayerNorm, bias +
 * activation, residual add with bias, attention without a causal mask (dense
 * and, for Swin's windows, short), and the audio/IMU encoders' row
 * permutations, GroupNorm, Conv1d im2col, MaxPool1d, mean, transpose and GRU
 * gates.
 *
 * These came from encoders/nn_ops.c when the encoders moved onto the backend
 * vtable, unchanged in arithmetic (so the encoders' results did not move by a
 * bit): LayerNorm sums in double, the GELUs and the softmax use
 * core/fast_math.h. The row kernels are compiled twice, for x86-64-v3 (AVX2 +
 * FMA) and the baseline, and picked at load time (GCC target_clones / ifunc):
 * the project builds for the baseline ISA, and these loops are where vector
 * width pays. Rows are split over the backend's pool once an op has enough
 * elements; attention_dense runs its GEMMs through the backend's matmul.
 */
#include "core/alloc.h"
#include "core/cpu/cpu_internal.h"
#include "core/error.h"
#include "core/fast_math.h"
#include "core/ref_ops.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define AM_NN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AM_NN_CLONES
#endif

/* Below this many elements an op runs on the calling thread: waking the pool
 * costs more than the work. */
#define AM_CPU_NN_PAR_MIN_ELEMS 16384

static void parallel_rows(am_backend *b, int64_t m, int64_t elems_per_row, am_rows_fn fn,
                          void *ctx) {
    am_threadpool_rows(((am__cpu_ctx *)b->ctx)->pool, m, elems_per_row, AM_CPU_NN_PAR_MIN_ELEMS, fn,
                       ctx);
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

void am__cpu_layernorm(am_backend *b, float *out, const float *x, const float *w, const float *bias,
                       int64_t m, int64_t c, float eps) {
    ln_ctx a = {out, x, w, bias, c, eps};
    parallel_rows(b, m, c, ln_rows, &a);
}

/* ---- activations, bias, residual ---- */

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
                y[i] = am_gelu_fast(y[i]);
        else if (a->act == AM_ACT_QUICK_GELU)
            for (int64_t i = 0; i < N; i++)
                y[i] = am_quick_gelu_fast(y[i]);
        else if (a->act == AM_ACT_RELU)
            for (int64_t i = 0; i < N; i++)
                y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    }
}

void am__cpu_bias_act(am_backend *b, float *y, const float *bias, int64_t m, int64_t n,
                      am_act act) {
    if (!bias && act == AM_ACT_NONE) return;
    ew_ctx a = {.y = y, .bias = bias, .n = n, .act = act};
    parallel_rows(b, m, n, bias_act_rows, &a);
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

void am__cpu_add_bias(am_backend *b, float *x, const float *y, const float *bias, int64_t m,
                      int64_t n) {
    ew_ctx a = {.y = x, .x = y, .bias = bias, .n = n};
    parallel_rows(b, m, n, residual_rows, &a);
}

/* ---- attention without a causal mask ---- */

/* x (N) = softmax(x) in f32 with am_exp_fast: attention_dense's and attention_short's. */
static inline void softmax_row(float *x, int64_t N) {
    float mx = x[0];
    for (int64_t i = 1; i < N; i++)
        mx = x[i] > mx ? x[i] : mx;
    float sum = 0;
    for (int64_t i = 0; i < N; i++)
        x[i] = am_exp_fast(x[i] - mx);
    for (int64_t i = 0; i < N; i++)
        sum += x[i];
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < N; i++)
        x[i] *= inv;
}

/* c->attn_scratch of at least `need` floats. */
static int attn_scratch_reserve(am__cpu_ctx *c, size_t need) {
    if (c->attn_scratch_floats >= need) return 0;
    float *p = am_aligned_alloc(need * sizeof(float));
    if (!p)
        return am_err_set(AM_ENOMEM, "cpu backend: cannot allocate %zu bytes of attention scratch",
                          need * sizeof(float));
    am_aligned_free(c->attn_scratch);
    c->attn_scratch = p;
    c->attn_scratch_floats = need;
    return 0;
}

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
        softmax_row(x, N);
    }
}

typedef struct {
    float *vt;      /* (H*D, Tk) */
    const float *v; /* row j at v + j * stride */
    int64_t stride, tk;
} tr_ctx;

/* Row r of vt (H*D, Tk) is column r of v: head r / D, element r % D. */
static void transpose_rows(void *p, int64_t r0, int64_t r1) {
    const tr_ctx *a = p;
    for (int64_t r = r0; r < r1; r++) {
        float *dst = a->vt + r * a->tk;
        for (int64_t j = 0; j < a->tk; j++)
            dst[j] = a->v[j * a->stride + r];
    }
}

int am__cpu_attention_dense(am_backend *b, float *out, const float *q, const float *k,
                            const float *v, const am_dense_attn *a) {
    /* All heads of a sequence go phase by phase (H score GEMMs, one softmax
     * over H*Tq rows, one transpose of all V heads, H weighted-sum GEMMs), so
     * the pool hands over 4 times per sequence instead of 4 times per head. */
    am__cpu_ctx *c = b->ctx;
    const int64_t D = a->head_dim, H = a->n_heads, tq = a->tq, tk = a->tk;
    const size_t need =
        (size_t)H * ((size_t)(tq * D) * 2 + (size_t)(tq * tk) + (size_t)(D * tk)) + 64;
    int rc = attn_scratch_reserve(c, need);
    if (rc) return rc;
    float *qh = c->attn_scratch;  /* (H, Tq, D) scaled queries */
    float *oh = qh + H * tq * D;  /* (H, Tq, D) */
    float *sc = oh + H * tq * D;  /* (H, Tq, Tk) scores, then probabilities */
    float *vt = sc + H * tq * tk; /* (H, D, Tk) */
    for (int64_t bi = 0; bi < a->n_seqs; bi++) {
        const float *qb = q + bi * tq * a->q_stride;
        const float *kb = k + bi * tk * a->kv_stride;
        const float *vb = v + bi * tk * a->kv_stride;
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                for (int64_t d = 0; d < D; d++)
                    qh[(h * tq + i) * D + d] = qb[i * a->q_stride + h * D + d] * a->scale;
        for (int64_t h = 0; h < H; h++) {
            /* K_h viewed in place as a weight matrix (Tk, D) with the row stride of k. */
            am_matrix km = {AM_DTYPE_F32, tk, D, kb + h * D, (size_t)a->kv_stride * sizeof(float)};
            if ((rc = am__cpu_matmul(b, &km, qh + h * tq * D, sc + h * tq * tk, tq))) return rc;
        }
        const float *mask = a->mask && a->n_mask > 0 ? a->mask + (bi % a->n_mask) * tq * tk : NULL;
        sm_ctx sa = {sc, a->bias, mask, tq, tk};
        parallel_rows(b, H * tq, tk, softmax_rows, &sa);
        tr_ctx ta = {vt, vb, a->kv_stride, tk};
        parallel_rows(b, H * D, tk, transpose_rows, &ta);
        for (int64_t h = 0; h < H; h++) {
            am_matrix vm = {AM_DTYPE_F32, D, tk, vt + h * D * tk, (size_t)tk * sizeof(float)};
            if ((rc = am__cpu_matmul(b, &vm, sc + h * tq * tk, oh + h * tq * D, tq))) return rc;
        }
        float *ob = out + bi * tq * a->o_stride;
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                memcpy(ob + i * a->o_stride + h * D, oh + (h * tq + i) * D,
                       (size_t)D * sizeof(float));
    }
    return 0;
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

/* c (SR, SATTN_V) = a (SR, L) . b (L, SATTN_V) over columns [c0, c0 + SATTN_V) of b and
 * c, rows strided by as, bs and cs: the scores q k^T (L = D, b = K transposed) and the
 * output p v (L = Tk, b = V). The four accumulators are named variables so that
 * they stay in registers. */
static inline void sattn_tile(float *c, int64_t cs, const float *a, int64_t as, const float *b,
                              int64_t bs, int64_t L, int64_t c0) {
    sattn_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int64_t l = 0; l < L; l++) {
        sattn_v8 bl;
        memcpy(&bl, b + l * bs + c0, sizeof bl);
        a0 += a[l] * bl;
        a1 += a[as + l] * bl;
        a2 += a[2 * as + l] * bl;
        a3 += a[3 * as + l] * bl;
    }
    memcpy(c + c0, &a0, sizeof a0);
    memcpy(c + cs + c0, &a1, sizeof a1);
    memcpy(c + 2 * cs + c0, &a2, sizeof a2);
    memcpy(c + 3 * cs + c0, &a3, sizeof a3);
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
            sattn_tile(s, TK, qs, D, kt, TK, D, j0); /* s = qs . kt */
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
            softmax_row(sr, TK);
        }
        /* The output tile goes to qs (now free), then to the real rows. */
        for (int64_t e0 = 0; e0 < d_v; e0 += SATTN_V)
            sattn_tile(qs, D, s, TK, vb, a->kv_stride, TK, e0); /* o = p . v */
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

int am__cpu_attention_short(am_backend *b, float *out, const float *q, const float *k,
                            const float *v, const am_dense_attn *at) {
    am__cpu_ctx *c = b->ctx;
    const int64_t tq = at->tq, tk = at->tk;
    if (tq < 1 || tk < 1 || tq > AM_SHORT_ATTN_MAX_T || tk > AM_SHORT_ATTN_MAX_T)
        return am_err_set(AM_EINVAL, "attention_short: sequences of %lld x %lld (at most %d)",
                          (long long)tq, (long long)tk, AM_SHORT_ATTN_MAX_T);
    const int nth = am_threadpool_size(c->pool);
    const size_t stride = ((size_t)(at->head_dim + SATTN_R) * (size_t)tk +
                           (size_t)SATTN_R * (size_t)at->head_dim + 15) /
                          16 * 16;
    int rc = attn_scratch_reserve(c, stride * (size_t)nth);
    if (rc) return rc;
    sattn_ctx a = {out,
                   q,
                   k,
                   v,
                   at->bias,
                   at->mask,
                   at->o_stride,
                   at->q_stride,
                   at->kv_stride,
                   tq,
                   tk,
                   at->n_mask,
                   at->n_seqs * at->n_heads,
                   at->n_heads,
                   at->head_dim,
                   at->scale,
                   c->attn_scratch,
                   stride};
    if (nth == 1 || a.pairs < 2)
        sattn_task(&a, 0, 1);
    else
        am_threadpool_run(c->pool, sattn_task, &a);
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

void am__cpu_gather_rows(am_backend *b, float *dst, const float *src, const int32_t *idx,
                         int64_t period, int64_t m, int64_t c) {
    perm_ctx a = {dst, src, NULL, idx, period, c};
    parallel_rows(b, m, c, gather_task, &a);
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

void am__cpu_scatter_add(am_backend *b, float *x, const float *y, const float *bias,
                         const int32_t *idx, int64_t period, int64_t m, int64_t c) {
    perm_ctx a = {x, y, bias, idx, period, c};
    parallel_rows(b, m, c, scatter_task, &a);
}

/* ---- GroupNorm, Conv1d im2col, MaxPool1d, mean, transpose, GRU gates (IMU2CLIP, HTSAT) ---- */

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

void am__cpu_groupnorm(am_backend *be, float *out, const float *x, const float *w, const float *b,
                       int64_t nb, int64_t t, int64_t c, int groups, float eps) {
    gn_ctx a = {out, x, w, b, t, c, c / groups, groups, eps};
    parallel_rows(be, nb * groups, t * (c / groups), gn_rows, &a);
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

void am__cpu_im2col_1d(am_backend *be, float *cols, const float *x, int64_t b, int64_t t, int64_t c,
                       int k, int dil) {
    const int64_t to = t - (int64_t)dil * (k - 1);
    if (to <= 0) return;
    i2c_ctx a = {x, cols, t, c, to, k, dil};
    parallel_rows(be, b * to, c * k, im2col_rows, &a);
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

void am__cpu_maxpool_time(am_backend *be, float *out, const float *x, int64_t b, int64_t t,
                          int64_t c, int p) {
    mp_ctx a = {out, x, t, c, t / p, p};
    parallel_rows(be, b * (t / p), c * p, maxpool_rows, &a);
}

/* The token mean (HTSAT) and the channel-major copy (IMU2CLIP's GRU input) are
 * the reference's loops exactly (double sums; copies): one thread, small next
 * to the GEMMs around them, and the same bits as when the encoders ran them
 * in place. */
void am__cpu_mean_rows(am_backend *be, float *out, const float *x, int64_t nb, int64_t t,
                       int64_t c) {
    (void)be;
    am_ref_mean_rows(out, x, nb, t, c);
}

void am__cpu_transpose(am_backend *be, float *dst, const float *src, int64_t nb, int64_t t,
                       int64_t c) {
    (void)be;
    am_ref_transpose(dst, src, nb, t, c);
}

void am__cpu_gru_gates(am_backend *be, float *h, const float *gi, int64_t gi_stride,
                       const float *gh, int64_t rows, int64_t hidden) {
    (void)be;
    for (int64_t r = 0; r < rows; r++)
        am_gru_gates_row(h + r * hidden, gi + r * gi_stride, gh + r * 3 * hidden, hidden);
}
