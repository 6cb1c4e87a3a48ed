/* encoders/nn_ops.c - LayerNorm, GELU, bias, im2col and unmasked attention for the encoders.
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
    else
        return am_err_set(AM_EUNSUPPORTED,
                          "activation '%s' is not supported (want gelu or quick_gelu)", name);
    return 0;
}

const char *am_act_name(am_act a) {
    return a == AM_ACT_GELU ? "gelu" : a == AM_ACT_QUICK_GELU ? "quick_gelu" : "none";
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

static inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
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
    float *s; /* (Tq, Tk) scores, softmaxed in place */
    int64_t tk;
} sm_ctx;

AM_NN_CLONES static void softmax_rows(void *p, int64_t r0, int64_t r1) {
    const sm_ctx *a = p;
    const int64_t N = a->tk;
    for (int64_t r = r0; r < r1; r++) {
        float *x = a->s + r * N;
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
        sm_ctx sa = {sc, tk};
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
    return x;
}

void am_nn_ref_attention(float *out, int64_t o_stride, const float *q, int64_t q_stride,
                         const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                         int64_t tk, int n_heads, int head_dim, float scale) {
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
