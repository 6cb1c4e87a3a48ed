/* core/cpu/kernels_generic.c - the portable kernel table ("generic").
 *
 * Plain C for any CPU (and the fallback when AM_CPU_ISA=generic). Dot products
 * keep AM_GEN_LANES independent partial sums so the compiler can keep them in
 * SIMD registers without reassociating floating-point math itself, and so the
 * summation order (and therefore the rounding) resembles the SIMD paths.
 */
#include "core/cpu/cpu_internal.h"

#include <math.h>
#include <string.h>

#define AM_GEN_LANES 8

static inline const void *row_ptr(const am_matrix *w, int64_t n) {
    return (const char *)w->data + (size_t)n * w->row_bytes;
}

static inline float ldf16(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return am_f16_to_f32(h);
}

/* Weight element k of a dense row as f32 (constant-folded per dtype). */
static inline float dense_elem(const void *row, int64_t k, am_dtype t) {
    uint16_t h;
    switch (t) {
    case AM_DTYPE_F16: memcpy(&h, (const uint16_t *)row + k, 2); return am_f16_to_f32(h);
    case AM_DTYPE_BF16: memcpy(&h, (const uint16_t *)row + k, 2); return am_bf16_to_f32(h);
    default: {
        float f;
        memcpy(&f, (const float *)row + k, 4);
        return f;
    }
    }
}

/* y[i, n] = sum_k W[n, k] * x[i, k] for dense W (F32/F16/BF16). */
static inline void matvec_dense(const am_matrix *w, const float *x, float *y, int64_t m, int64_t n0,
                                int64_t n1, am_dtype t) {
    const int64_t K = w->cols, N = w->rows;
    for (int64_t n = n0; n < n1; n++) {
        const void *wr = row_ptr(w, n); /* (K) */
        float acc[AM__MATVEC_MAX_M][AM_GEN_LANES] = {{0}};
        int64_t k = 0;
        for (; k + AM_GEN_LANES <= K; k += AM_GEN_LANES) {
            float wv[AM_GEN_LANES];
            for (int l = 0; l < AM_GEN_LANES; l++)
                wv[l] = dense_elem(wr, k + l, t);
            for (int64_t i = 0; i < m; i++)
                for (int l = 0; l < AM_GEN_LANES; l++)
                    acc[i][l] += wv[l] * x[i * K + k + l];
        }
        for (int64_t i = 0; i < m; i++) {
            float s = 0.0f;
            for (int l = 0; l < AM_GEN_LANES; l++)
                s += acc[i][l];
            for (int64_t kk = k; kk < K; kk++)
                s += dense_elem(wr, kk, t) * x[i * K + kk];
            y[i * N + n] = s;
        }
    }
}

static void matvec_f32(const am_matrix *w, const float *x, const am__xq *xq, float *y, int64_t m,
                       int64_t n0, int64_t n1) {
    (void)xq;
    matvec_dense(w, x, y, m, n0, n1, AM_DTYPE_F32);
}
static void matvec_f16(const am_matrix *w, const float *x, const am__xq *xq, float *y, int64_t m,
                       int64_t n0, int64_t n1) {
    (void)xq;
    matvec_dense(w, x, y, m, n0, n1, AM_DTYPE_F16);
}
static void matvec_bf16(const am_matrix *w, const float *x, const am__xq *xq, float *y, int64_t m,
                        int64_t n0, int64_t n1) {
    (void)xq;
    matvec_dense(w, x, y, m, n0, n1, AM_DTYPE_BF16);
}

/* Block-quantized rows against quantized activations (am__xq):
 * y = sum_b d_w * d_x * (sum_j qw_bj * qx_bj), the inner sum exact in int32. */
static void matvec_q8_0(const am_matrix *w, const float *x, const am__xq *xq, float *y, int64_t m,
                        int64_t n0, int64_t n1) {
    (void)x;
    const int64_t K = w->cols, N = w->rows, nb = K / AM_QK;
    for (int64_t n = n0; n < n1; n++) {
        const am_block_q8_0 *blk = row_ptr(w, n); /* (K/32) */
        float acc[AM__MATVEC_MAX_M] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const float d = ldf16(&blk[b].d);
            for (int64_t i = 0; i < m; i++) {
                const int8_t *qx = xq->q + i * K + b * AM_QK; /* (32) */
                int32_t dot = 0;
                for (int j = 0; j < AM_QK; j++)
                    dot += (int32_t)blk[b].qs[j] * qx[j];
                acc[i] += d * xq->d[i * nb + b] * (float)dot;
            }
        }
        for (int64_t i = 0; i < m; i++)
            y[i * N + n] = acc[i];
    }
}

static void matvec_q4_0(const am_matrix *w, const float *x, const am__xq *xq, float *y, int64_t m,
                        int64_t n0, int64_t n1) {
    (void)x;
    const int64_t K = w->cols, N = w->rows, nb = K / AM_QK;
    for (int64_t n = n0; n < n1; n++) {
        const am_block_q4_0 *blk = row_ptr(w, n); /* (K/32) */
        float acc[AM__MATVEC_MAX_M] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const float d = ldf16(&blk[b].d);
            for (int64_t i = 0; i < m; i++) {
                const int8_t *qx = xq->q + i * K + b * AM_QK; /* (32) */
                int32_t dot = 0;
                for (int j = 0; j < AM_QK / 2; j++)
                    dot += ((blk[b].qs[j] & 15) - 8) * qx[j] +
                           ((blk[b].qs[j] >> 4) - 8) * qx[j + AM_QK / 2];
                acc[i] += d * xq->d[i * nb + b] * (float)dot;
            }
        }
        for (int64_t i = 0; i < m; i++)
            y[i * N + n] = acc[i];
    }
}

static void quantize_x(const float *x, const am__xq *xq, int64_t row, int64_t k) {
    const int64_t nb = k / AM_QK;
    for (int64_t b = 0; b < nb; b++) {
        int8_t *q = xq->q + row * k + b * AM_QK; /* (32) */
        const float d = am_quantize_x_block(x + row * k + b * AM_QK, q);
        int32_t sum = 0;
        for (int j = 0; j < AM_QK; j++)
            sum += q[j];
        xq->d[row * nb + b] = d;
        xq->s[row * nb + b] = d * (float)sum;
    }
}

static void to_f32(am_dtype t, const void *src, float *dst, int64_t n) {
    am_dequantize_row(t, src, dst, n);
}

static void to_bf16(am_dtype t, const void *src, uint16_t *dst, int64_t n) {
    if (t == AM_DTYPE_BF16) {
        memcpy(dst, src, (size_t)n * 2);
        return;
    }
    float buf[AM_QK]; /* convert in block-sized pieces: no scratch allocation */
    for (int64_t k = 0; k < n; k += AM_QK) {
        int64_t len = n - k < AM_QK ? n - k : AM_QK;
        /* k is a multiple of 32, so whole blocks precede it for block types too. */
        am_dequantize_row(t, (const char *)src + am_dtype_row_bytes(t, k), buf, len);
        for (int64_t j = 0; j < len; j++)
            dst[k + j] = am_f32_to_bf16(buf[j]);
    }
}

static float dot(const float *a, const float *b, int64_t n) {
    float acc[AM_GEN_LANES] = {0};
    int64_t k = 0;
    for (; k + AM_GEN_LANES <= n; k += AM_GEN_LANES)
        for (int l = 0; l < AM_GEN_LANES; l++)
            acc[l] += a[k + l] * b[k + l];
    float s = 0.0f;
    for (int l = 0; l < AM_GEN_LANES; l++)
        s += acc[l];
    for (; k < n; k++)
        s += a[k] * b[k];
    return s;
}

static void axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scale(float *y, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] *= a;
}

static float vmax(const float *x, int64_t n) {
    float m = x[0];
    for (int64_t i = 1; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static float exp_sum(float *x, float sub, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += x[i] = expf(x[i] - sub);
    return s;
}

/* Attention tiles (see am__cpu_kernels): the same math as the SIMD tables,
 * query by query; each key row is still read once for the nq queries. */
static void attn_scores(const float *const *q, int nq, const float *k, int64_t kv_stride, int64_t n,
                        int d, float scale, float *s) {
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < nq; j++)
            s[t * nq + j] = scale * dot(q[j], k + t * kv_stride, d);
}

static void attn_softmax(float *s, int64_t n, int nq, float *m, float *l, float *corr) {
    for (int j = 0; j < nq; j++) {
        float mx = m[j], sum = 0.0f;
        for (int64_t t = 0; t < n; t++)
            mx = s[t * nq + j] > mx ? s[t * nq + j] : mx;
        corr[j] = m[j] == -INFINITY ? 0.0f : expf(m[j] - mx);
        for (int64_t t = 0; t < n; t++)
            sum += s[t * nq + j] = expf(s[t * nq + j] - mx);
        m[j] = mx;
        l[j] = l[j] * corr[j] + sum;
    }
}

static void attn_accum(float *const *o, int nq, const float *corr, const float *p, const float *v,
                       int64_t kv_stride, int64_t n, int d) {
    for (int j = 0; j < nq; j++)
        scale(o[j], corr[j], d);
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < nq; j++)
            axpy(o[j], p[t * nq + j], v + t * kv_stride, d);
}

static void rmsnorm(float *out, const float *x, const float *w, int64_t k, float eps) {
    float r = 1.0f / sqrtf(dot(x, x, k) / (float)k + eps);
    for (int64_t j = 0; j < k; j++)
        out[j] = x[j] * r * w[j];
}

static void silu_mul(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

static const am__cpu_kernels generic_kernels = {
    .name = "generic",
    .matvec = {matvec_f32, matvec_f16, matvec_bf16, matvec_q8_0, matvec_q4_0},
    .quantize_x = quantize_x,
    .to_f32 = to_f32,
    .to_bf16 = to_bf16,
    .dot = dot,
    .axpy = axpy,
    .scale = scale,
    .max = vmax,
    .exp_sum = exp_sum,
    .attn_scores = attn_scores,
    .attn_softmax = attn_softmax,
    .attn_accum = attn_accum,
    .rmsnorm = rmsnorm,
    .silu_mul = silu_mul,
    .add = add,
};

const am__cpu_kernels *am__cpu_kernels_generic(void) { return &generic_kernels; }
