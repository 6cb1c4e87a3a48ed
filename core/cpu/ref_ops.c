/* core/cpu/ref_ops.c - plain reference versions of every backend op.
 *
 * Ground truth for the backend tests: straight loops, no threads, no
 * intrinsics. Sums (dot products, mean squares, softmax denominators) are
 * accumulated in double so the reference is closer to the exact result than
 * any f32 kernel; the tests' tolerances then bound the kernels' own error.
 */
#include "core/ref_ops.h"

#include "core/alloc.h"
#include "core/error.h"

#include <math.h>
#include <string.h>

void am_ref_matmul_x(am_dtype w, am_precision mode, const float *x, double *out, int64_t k) {
    switch (am_matmul_x_precision(w, mode)) {
    case AM_XPREC_BF16:
        for (int64_t j = 0; j < k; j++)
            out[j] = am_bf16_to_f32(am_f32_to_bf16(x[j]));
        break;
    case AM_XPREC_Q8:
        for (int64_t b = 0; b < k / AM_QK; b++) {
            int8_t q[AM_QK];
            const double d = am_quantize_x_block(x + b * AM_QK, q);
            for (int j = 0; j < AM_QK; j++)
                out[b * AM_QK + j] = q[j] * d;
        }
        break;
    default:
        for (int64_t j = 0; j < k; j++)
            out[j] = x[j];
    }
}

void am_ref_matmul(const am_matrix *w, am_precision mode, const float *x, float *y, int64_t m) {
    const int64_t K = w->cols, N = w->rows;
    float *row = am_malloc((size_t)K * sizeof(float));        /* (K) one dequantized weight row */
    double *xr = am_malloc((size_t)(m * K) * sizeof(double)); /* (M, K) x as the matmul sees it */
    AM_ASSERT(row && xr);
    for (int64_t i = 0; i < m; i++)
        am_ref_matmul_x(w->dtype, mode, x + i * K, xr + i * K, K);
    for (int64_t n = 0; n < N; n++) {
        am_dequantize_row(w->dtype, (const char *)w->data + (size_t)n * w->row_bytes, row, K);
        for (int64_t i = 0; i < m; i++) {
            const double *xi = xr + i * K; /* (K) */
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)row[k] * xi[k];
            y[i * N + n] = (float)s;
        }
    }
    am_free(row);
    am_free(xr);
}

void am_ref_get_rows(const am_matrix *w, const int32_t *ids, int64_t m, float *out) {
    for (int64_t i = 0; i < m; i++)
        am_dequantize_row(w->dtype, (const char *)w->data + (size_t)ids[i] * w->row_bytes,
                          out + i * w->cols, w->cols);
}

void am_ref_rmsnorm(float *out, const float *x, const float *weight, int64_t m, int64_t k,
                    float eps) {
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * k; /* (K) */
        float *oi = out + i * k;     /* (K) */
        double ss = 0.0;
        for (int64_t j = 0; j < k; j++)
            ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / (double)k + (double)eps));
        for (int64_t j = 0; j < k; j++)
            oi[j] = xi[j] * r * weight[j];
    }
}

void am_ref_rope(float *x, const int32_t *pos, int64_t m, int n_heads, int head_dim, float theta,
                 am_rope_layout layout) {
    const int D = head_dim, half = head_dim / 2;
    for (int64_t i = 0; i < m; i++) {
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (i * n_heads + h) * D; /* (D) */
            for (int j = 0; j < half; j++) {
                /* freq_j = theta^(-2j/D); the angle in double keeps large positions exact. */
                double angle = (double)pos[i] * pow((double)theta, -2.0 * j / D);
                float c = (float)cos(angle), s = (float)sin(angle);
                int a = layout == AM_ROPE_ADJACENT ? 2 * j : j;
                int b = layout == AM_ROPE_ADJACENT ? 2 * j + 1 : j + half;
                float x0 = xh[a], x1 = xh[b];
                xh[a] = x0 * c - x1 * s;
                xh[b] = x0 * s + x1 * c;
            }
        }
    }
}

void am_ref_attention(float *out, const float *q, const float *k_cache, const float *v_cache,
                      int64_t m, int64_t pos0, int n_heads, int n_kv_heads, int head_dim,
                      int64_t kv_stride) {
    const int D = head_dim, group = n_heads / n_kv_heads;
    const int64_t T = pos0 + m;
    double *p = am_malloc((size_t)T * sizeof(double)); /* (T) probabilities of one query */
    AM_ASSERT(p);
    const double scale = 1.0 / sqrt((double)D);
    for (int64_t i = 0; i < m; i++) {
        const int64_t last = pos0 + i; /* causal: attends to 0..last */
        for (int h = 0; h < n_heads; h++) {
            const float *qh = q + (i * n_heads + h) * D; /* (D) */
            float *oh = out + (i * n_heads + h) * D;     /* (D) */
            const int kvh = h / group;
            double mx = -INFINITY;
            for (int64_t t = 0; t <= last; t++) {
                const float *kt = k_cache + t * kv_stride + kvh * D; /* (D) */
                double s = 0.0;
                for (int d = 0; d < D; d++)
                    s += (double)qh[d] * kt[d];
                p[t] = s * scale;
                if (p[t] > mx) mx = p[t];
            }
            double sum = 0.0;
            for (int64_t t = 0; t <= last; t++)
                sum += p[t] = exp(p[t] - mx);
            for (int d = 0; d < D; d++) {
                double o = 0.0;
                for (int64_t t = 0; t <= last; t++)
                    o += p[t] * v_cache[t * kv_stride + kvh * D + d];
                oh[d] = (float)(o / sum);
            }
        }
    }
    am_free(p);
}

void am_ref_kv_store(const am_kv_pages *pages, const float *k_new, const float *v_new,
                     const am_attn_seq *seqs, int n_seqs) {
    const int64_t stride = pages->kv_stride;
    for (int s = 0; s < n_seqs; s++)
        for (int64_t i = 0; i < seqs[s].m; i++) {
            const int64_t row = am_kv_row(seqs[s].blocks, pages->block_size, seqs[s].pos0 + i);
            for (int64_t e = 0; e < stride; e++) {
                pages->k[row * stride + e] = k_new[(seqs[s].row0 + i) * stride + e];
                pages->v[row * stride + e] = v_new[(seqs[s].row0 + i) * stride + e];
            }
        }
}

void am_ref_attention_paged(float *out, const float *q, const am_kv_pages *pages,
                            const am_attn_seq *seqs, int n_seqs, int n_heads, int n_kv_heads,
                            int head_dim) {
    const int64_t stride = pages->kv_stride, HD = (int64_t)n_heads * head_dim;
    for (int s = 0; s < n_seqs; s++) {
        const am_attn_seq *sq = &seqs[s];
        const int64_t T = sq->pos0 + sq->m;
        float *k = am_malloc((size_t)(T * stride) * sizeof(float)); /* (T, stride) */
        float *v = am_malloc((size_t)(T * stride) * sizeof(float)); /* (T, stride) */
        AM_ASSERT(k && v);
        for (int64_t t = 0; t < T; t++) {
            const int64_t row = am_kv_row(sq->blocks, pages->block_size, t);
            memcpy(k + t * stride, pages->k + row * stride, (size_t)stride * sizeof(float));
            memcpy(v + t * stride, pages->v + row * stride, (size_t)stride * sizeof(float));
        }
        am_ref_attention(out + sq->row0 * HD, q + sq->row0 * HD, k, v, sq->m, sq->pos0, n_heads,
                         n_kv_heads, head_dim, stride);
        am_free(k);
        am_free(v);
    }
}

void am_ref_softmax(float *x, int64_t m, int64_t n) {
    for (int64_t i = 0; i < m; i++) {
        float *xi = x + i * n; /* (N) */
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; j++)
            mx = xi[j] > mx ? xi[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++)
            sum += exp((double)xi[j] - mx);
        for (int64_t j = 0; j < n; j++)
            xi[j] = (float)(exp((double)xi[j] - mx) / sum);
    }
}

void am_ref_silu_mul(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        gate[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

void am_ref_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

/* ---- the encoder ops ---- */

void am_ref_layernorm(float *out, const float *x, const float *w, const float *b, int64_t m,
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

float am_ref_act(float x, am_act act) {
    double d = x;
    if (act == AM_ACT_GELU) return (float)(0.5 * d * (1.0 + erf(d / sqrt(2.0))));
    if (act == AM_ACT_QUICK_GELU) return (float)(d / (1.0 + exp(-1.702 * d)));
    if (act == AM_ACT_RELU) return x > 0 ? x : 0.0f;
    return x;
}

void am_ref_bias_act(float *y, const float *bias, int64_t m, int64_t n, am_act act) {
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < n; i++)
            y[r * n + i] = am_ref_act((float)((double)y[r * n + i] + (bias ? bias[i] : 0.0)), act);
}

void am_ref_add_bias(float *x, const float *y, const float *bias, int64_t m, int64_t n) {
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < n; i++)
            x[r * n + i] = (float)((double)x[r * n + i] + y[r * n + i] + (bias ? bias[i] : 0.0));
}

void am_ref_attention_dense(float *out, const float *q, const float *k, const float *v,
                            const am_dense_attn *a) {
    const int64_t tq = a->tq, tk = a->tk;
    const int H = a->n_heads, D = a->head_dim;
    double *s = am_malloc((size_t)tk * sizeof(double));
    AM_ASSERT(s);
    for (int64_t bi = 0; bi < a->n_seqs; bi++)
        for (int h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++) {
                const float *qi = q + (bi * tq + i) * a->q_stride + (int64_t)h * D;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < tk; j++) {
                    const float *kj = k + (bi * tk + j) * a->kv_stride + (int64_t)h * D;
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += (double)qi[e] * kj[e];
                    s[j] = d * a->scale;
                    if (a->bias) s[j] += a->bias[((int64_t)h * tq + i) * tk + j];
                    if (a->mask && a->n_mask > 0)
                        s[j] += a->mask[((bi % a->n_mask) * tq + i) * tk + j];
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int64_t j = 0; j < tk; j++)
                    sum += (s[j] = exp(s[j] - mx));
                float *oi = out + (bi * tq + i) * a->o_stride + (int64_t)h * D;
                for (int e = 0; e < D; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < tk; j++)
                        acc += s[j] * v[(bi * tk + j) * a->kv_stride + (int64_t)h * D + e];
                    oi[e] = (float)(acc / sum);
                }
            }
    am_free(s);
}

void am_ref_groupnorm(float *out, const float *x, const float *w, const float *b, int64_t nb,
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

static int64_t ref_perm_row(const int32_t *idx, int64_t period, int64_t r) {
    return r / period * period + idx[r % period];
}

void am_ref_gather_rows(float *dst, const float *src, const int32_t *idx, int64_t period, int64_t m,
                        int64_t c) {
    for (int64_t r = 0; r < m; r++)
        for (int64_t e = 0; e < c; e++)
            dst[r * c + e] = src[ref_perm_row(idx, period, r) * c + e];
}

void am_ref_scatter_add(float *x, const float *y, const float *bias, const int32_t *idx,
                        int64_t period, int64_t m, int64_t c) {
    for (int64_t r = 0; r < m; r++) {
        float *xr = x + ref_perm_row(idx, period, r) * c;
        for (int64_t e = 0; e < c; e++)
            xr[e] = (float)((double)xr[e] + y[r * c + e] + (bias ? bias[e] : 0.0));
    }
}

void am_ref_im2col_1d(float *cols, const float *x, int64_t nb, int64_t t, int64_t c, int k,
                      int dil) {
    const int64_t to = t - (int64_t)dil * (k - 1);
    for (int64_t s = 0; s < nb; s++)
        for (int64_t i = 0; i < to; i++)
            for (int64_t ch = 0; ch < c; ch++)
                for (int j = 0; j < k; j++)
                    cols[((s * to + i) * c + ch) * k + j] =
                        x[(s * t + i + (int64_t)j * dil) * c + ch];
}

void am_ref_maxpool_time(float *out, const float *x, int64_t nb, int64_t t, int64_t c, int p) {
    const int64_t to = t / p;
    for (int64_t s = 0; s < nb; s++)
        for (int64_t i = 0; i < to; i++)
            for (int64_t ch = 0; ch < c; ch++) {
                float m = x[(s * t + i * p) * c + ch];
                for (int j = 1; j < p; j++) {
                    const float v = x[(s * t + i * p + j) * c + ch];
                    if (v > m || isnan(v)) m = v;
                }
                out[(s * to + i) * c + ch] = m;
            }
}

void am_ref_mean_rows(float *out, const float *x, int64_t nb, int64_t t, int64_t c) {
    for (int64_t s = 0; s < nb; s++)
        for (int64_t e = 0; e < c; e++) {
            double acc = 0;
            for (int64_t i = 0; i < t; i++)
                acc += x[(s * t + i) * c + e];
            out[s * c + e] = (float)(acc / (double)t);
        }
}

void am_ref_transpose(float *dst, const float *src, int64_t nb, int64_t t, int64_t c) {
    for (int64_t s = 0; s < nb; s++)
        for (int64_t i = 0; i < t; i++)
            for (int64_t ch = 0; ch < c; ch++)
                dst[(s * c + ch) * t + i] = src[(s * t + i) * c + ch];
}

void am_ref_gru_gates(float *h, const float *gi, int64_t gi_stride, const float *gh, int64_t rows,
                      int64_t hidden) {
    const int64_t H = hidden;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < H; i++) {
            const float *g = gi + r * gi_stride, *u = gh + r * 3 * H;
            const double rg = 1.0 / (1.0 + exp(-((double)g[i] + u[i])));
            const double z = 1.0 / (1.0 + exp(-((double)g[H + i] + u[H + i])));
            const double n = tanh((double)g[2 * H + i] + rg * u[2 * H + i]);
            h[r * H + i] = (float)((1.0 - z) * n + z * h[r * H + i]);
        }
}
