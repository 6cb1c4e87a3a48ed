/* core/cpu/cpu_nn.c - the CPU backend's encoder ops: LayerNorm, bias +
 * activation, residual add with bias, and attention without a causal mask.
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

static void parallel_rows(am_backend *b, int64_t m, int64_t elems_per_row, am_rows_fn fn, void *ctx) {
    am_threadpool_rows(((am__cpu_ctx *)b->ctx)->pool, m, elems_per_row, AM_CPU_NN_PAR_MIN_ELEMS, fn, ctx);
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
            x[i] = am_exp_fast(x[i] - mx);
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
    if (c->attn_scratch_floats < need) {
        float *p = am_aligned_alloc(need * sizeof(float));
        if (!p)
            return am_err_set(AM_ENOMEM,
                              "cpu backend: cannot allocate %zu bytes of attention scratch",
                              need * sizeof(float));
        am_aligned_free(c->attn_scratch);
        c->attn_scratch = p;
        c->attn_scratch_floats = need;
    }
    float *qh = c->attn_scratch;  /* (H, Tq, D) scaled queries */
    float *oh = qh + H * tq * D;  /* (H, Tq, D) */
    float *sc = oh + H * tq * D;  /* (H, Tq, Tk) scores, then probabilities */
    float *vt = sc + H * tq * tk; /* (H, D, Tk) */
    int rc;
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
