/* encoders/nn_ops.c - the encoders' ops: LayerNorm, bias + activation, residual,
 * attention (dense and short), row permutations, GroupNorm, Conv1d im2col, MaxPool1d and
 * GRU gates as backend ops (core/backend.h); the 2-D patch im2col as a host kernel.
 *
 * The host kernel splits rows over the op context's thread pool. GEMMs go to
 * the backend's matmul.
 */
#include "encoders/nn_ops.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/fast_math.h"
#include "core/ref_ops.h"

#include <math.h>
#include <string.h>

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

/* ---- row permutations (Swin windows), short attention: backend ops ---- */

void am_nn_gather_rows(am_nn *nn, float *dst, const float *src, const int32_t *idx, int64_t period,
                       int64_t m, int64_t c) {
    nn->be->ops->gather_rows(nn->be, dst, src, idx, period, m, c);
}

void am_nn_scatter_residual(am_nn *nn, float *x, const float *y, const float *bias,
                            const int32_t *idx, int64_t period, int64_t m, int64_t c) {
    nn->be->ops->scatter_add(nn->be, x, y, bias, idx, period, m, c);
}

int am_nn_attention_short(am_nn *nn, float *out, int64_t o_stride, const float *q, int64_t q_stride,
                          const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                          int64_t tk, int n_heads, int head_dim, float scale, const float *bias,
                          const float *mask, int64_t n_mask) {
    const am_dense_attn a = {b,         tq,       tk,    n_heads, head_dim, q_stride,
                             kv_stride, o_stride, scale, bias,    mask,     n_mask};
    return nn->be->ops->attention_short(nn->be, out, q, k, v, &a);
}

/* ---- GroupNorm, Conv1d im2col, MaxPool1d, mean, transpose, GRU gates: backend ops ---- */

void am_nn_groupnorm(am_nn *nn, float *out, const float *x, const float *w, const float *b,
                     int64_t nb, int64_t t, int64_t c, int groups, float eps) {
    nn->be->ops->groupnorm(nn->be, out, x, w, b, nb, t, c, groups, eps);
}

void am_nn_im2col_1d(am_nn *nn, const float *x, float *cols, int64_t b, int64_t t, int64_t c, int k,
                     int dil) {
    nn->be->ops->im2col_1d(nn->be, cols, x, b, t, c, k, dil);
}

void am_nn_maxpool_time(am_nn *nn, float *out, const float *x, int64_t b, int64_t t, int64_t c,
                        int p) {
    nn->be->ops->maxpool_time(nn->be, out, x, b, t, c, p);
}

void am_nn_gru_gates(float *h, const float *gi, const float *gh, int64_t hidden) {
    am_gru_gates_row(h, gi, gh, hidden);
}

float *am_nn_host_scratch(am_nn *nn, size_t floats) {
    if (nn->scratch_floats < floats) {
        float *p = am_aligned_alloc(floats * sizeof(float));
        if (!p) return NULL;
        am_aligned_free(nn->scratch);
        nn->scratch = p;
        nn->scratch_floats = floats;
    }
    return nn->scratch;
}

int am_nn_zero(am_nn *nn, float *p, int64_t n) {
    am_backend *be = nn->be;
    if (be->host_memory) {
        memset(p, 0, (size_t)n * sizeof(float));
        return 0;
    }
    /* A device has no fill op: zeros go up from the host scratch. */
    float *z = am_nn_host_scratch(nn, (size_t)n);
    if (!z) return am_err_set(AM_ENOMEM, "nn ops: cannot allocate %lld floats", (long long)n);
    memset(z, 0, (size_t)n * sizeof(float));
    return be->ops->upload(be, p, z, (size_t)n * sizeof(float));
}

/* gru_gates on `rows` rows of backend memory (gi row r at gi + r * gi_stride). */
void am_nn_gru_rows(am_nn *nn, float *h, const float *gi, int64_t gi_stride, const float *gh,
                    int64_t rows, int64_t hidden) {
    nn->be->ops->gru_gates(nn->be, h, gi, gi_stride, gh, rows, hidden);
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
    am_ref_groupnorm(out, x, w, b, nb, t, c, groups, eps);
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
