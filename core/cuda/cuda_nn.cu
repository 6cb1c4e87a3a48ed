/* core/cuda/cuda_nn.cu - the encoder ops: copy, layernorm, bias_act, add_bias, attention_dense
 * and (HTSAT, IMU2CLIP) attention_short, gather_rows, scatter_add, groupnorm, im2col_1d,
 * maxpool_time, mean_rows, transpose, gru_gates.
 *
 * Same formulas as core/cpu/cpu_nn.c: LayerNorm's mean and variance are two
 * passes summed in double (one block per row), the activations are the exact
 * erf GELU and quick_gelu (here with erff/expf: within ~2e-7 of the CPU's
 * polynomials), and attention_dense is one block per (sequence, head, query
 * row) with its scores in shared memory: scale * q.k + bias + mask, the
 * softmax in f32, then the weighted sum of V rows. That kernel is written for
 * correctness first (every K row is read once per query row, not tiled);
 * the encoders' attention is a small share of their FLOPs next to the
 * cuBLAS GEMMs of the linear layers.
 */
#include "core/cuda/cuda_internal.cuh"

/* Scores of one query row in shared memory: Tk floats at most this many bytes. */
#define AM_CUDA_DENSE_ATTN_MAX_SMEM (48 << 10)
/* Threads per attention_dense block. */
#define AM_CUDA_DENSE_ATTN_THREADS 128

/* Sum over a block in double (a multiple of 32 threads); red: 32 doubles of shared memory. */
__device__ __forceinline__ double block_sum_d(double v, double *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < n_warps ? red[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- copy: device to device, queued on the stream ---- */

void am__cuda_copy(am_backend *b, void *dst, const void *src, size_t bytes) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (!bytes || c->error) return;
    am__cuda_check(c, "copy",
                   cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

/* ---- layernorm: out (M, C) = (x - mean) / sqrt(var + eps) * w + b ---- */

__global__ void layernorm_kernel(float *out, const float *x, const float *__restrict__ w,
                                 const float *__restrict__ bias, int64_t C, float eps) {
    __shared__ double red[32];
    const float *xi = x + (int64_t)blockIdx.x * C; /* (C) */
    float *oi = out + (int64_t)blockIdx.x * C;     /* (C), may equal xi */
    double s = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
        s += xi[i];
    const double mean = block_sum_d(s, red) / (double)C;
    double v = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        const double d = xi[i] - mean;
        v += d * d;
    }
    v = block_sum_d(v, red);
    const float rstd = (float)(1.0 / sqrt(v / (double)C + eps)), fm = (float)mean;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
        oi[i] = (xi[i] - fm) * rstd * w[i] + (bias ? bias[i] : 0.0f);
}

void am__cuda_layernorm(am_backend *b, float *out, const float *x, const float *w,
                        const float *bias, int64_t m, int64_t c, float eps) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    if (m <= 0 || cx->error) return;
    layernorm_kernel<<<(unsigned)m, AM_CUDA_THREADS, 0, cx->stream>>>(out, x, w, bias, c, eps);
    AM_CUDA_LAUNCHED(cx, "layernorm");
}

/* ---- bias_act: y (M, N) = act(y + bias); add_bias: x (M, N) += y + bias ---- */

__device__ __forceinline__ float act_f(float v, int act) {
    switch (act) {
    case AM_ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case AM_ACT_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    case AM_ACT_RELU: return v > 0.0f ? v : 0.0f;
    default: return v;
    }
}

__global__ void bias_act_kernel(float *y, const float *__restrict__ bias, int64_t total, int64_t n,
                                int act) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = act_f(bias ? y[i] + bias[i % n] : y[i], act);
}

__global__ void add_bias_kernel(float *x, const float *__restrict__ y,
                                const float *__restrict__ bias, int64_t total, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] += bias ? y[i] + bias[i % n] : y[i];
}

static unsigned grid_for(const am__cuda_ctx *c, int64_t n) {
    const unsigned want = am__cuda_blocks(n, AM_CUDA_THREADS), cap = (unsigned)c->n_sm * 8;
    return want < cap ? want : cap;
}

void am__cuda_bias_act(am_backend *b, float *y, const float *bias, int64_t m, int64_t n,
                       am_act act) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (m <= 0 || n <= 0 || c->error || (!bias && act == AM_ACT_NONE)) return;
    bias_act_kernel<<<grid_for(c, m * n), AM_CUDA_THREADS, 0, c->stream>>>(y, bias, m * n, n,
                                                                           (int)act);
    AM_CUDA_LAUNCHED(c, "bias_act");
}

void am__cuda_add_bias(am_backend *b, float *x, const float *y, const float *bias, int64_t m,
                       int64_t n) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (m <= 0 || n <= 0 || c->error) return;
    add_bias_kernel<<<grid_for(c, m * n), AM_CUDA_THREADS, 0, c->stream>>>(x, y, bias, m * n, n);
    AM_CUDA_LAUNCHED(c, "add_bias");
}

/* ---- attention_dense ---- */

/* Block (i, h, s): query row i of head h of sequence s. */
__global__ void dense_attn_kernel(float *out, const float *q, const float *k, const float *v,
                                  am_dense_attn a) {
    extern __shared__ float sc[]; /* (Tk) scores, then weights */
    __shared__ float red[32];
    const int64_t i = blockIdx.x, h = blockIdx.y, s = blockIdx.z, D = a.head_dim, tk = a.tk;
    const float *qi = q + (s * a.tq + i) * a.q_stride + h * D;        /* (D) */
    const float *ks = k + s * tk * a.kv_stride + h * D;               /* (Tk, stride) */
    const float *vs = v + s * tk * a.kv_stride + h * D;               /* (Tk, stride) */
    const float *bias = a.bias ? a.bias + (h * a.tq + i) * tk : NULL; /* (Tk) */
    const float *mask = a.mask && a.n_mask > 0 ? a.mask + ((s % a.n_mask) * a.tq + i) * tk : NULL;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < tk; j += blockDim.x) {
        const float *kj = ks + j * a.kv_stride;
        float d = 0.0f;
        for (int64_t e = 0; e < D; e++)
            d += qi[e] * kj[e];
        d *= a.scale;
        if (bias) d += bias[j];
        if (mask) d += mask[j];
        sc[j] = d;
        mx = fmaxf(mx, d);
    }
    mx = am__block_max(mx, red);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < tk; j += blockDim.x) {
        const float p = expf(sc[j] - mx);
        sc[j] = p;
        sum += p;
    }
    sum = am__block_sum(sum, red); /* its barrier also publishes sc */
    const float inv = 1.0f / sum;
    float *oi = out + (s * a.tq + i) * a.o_stride + h * D; /* (D) */
    for (int64_t e = threadIdx.x; e < D; e += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = 0; j < tk; j++)
            acc += sc[j] * vs[j * a.kv_stride + e];
        oi[e] = acc * inv;
    }
}

int am__cuda_attention_dense(am_backend *b, float *out, const float *q, const float *k,
                             const float *v, const am_dense_attn *a) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (c->error) return c->error;
    if (a->n_seqs <= 0 || a->tq <= 0 || a->tk <= 0) return 0;
    const size_t smem = (size_t)a->tk * sizeof(float);
    if (smem > AM_CUDA_DENSE_ATTN_MAX_SMEM)
        return am_err_set(AM_EUNSUPPORTED,
                          "cuda attention_dense: %lld keys per sequence (at most %d)",
                          (long long)a->tk, (int)(AM_CUDA_DENSE_ATTN_MAX_SMEM / sizeof(float)));
    if (a->tq > 0x7fffffff || a->n_heads > 65535 || a->n_seqs > 65535)
        return am_err_set(AM_EUNSUPPORTED, "cuda attention_dense: grid of %lld x %d x %lld blocks",
                          (long long)a->tq, a->n_heads, (long long)a->n_seqs);
    const dim3 grid((unsigned)a->tq, (unsigned)a->n_heads, (unsigned)a->n_seqs);
    dense_attn_kernel<<<grid, AM_CUDA_DENSE_ATTN_THREADS, smem, c->stream>>>(out, q, k, v, *a);
    return AM_CUDA_LAUNCHED(c, "attention_dense");
}

/* ---- the audio and IMU encoders' ops (HTSAT, IMU2CLIP) ----
 *
 * Same formulas as core/cpu/cpu_nn.c; GroupNorm and the token mean sum in
 * double like the CPU. Copies (gather, transpose, im2col) and max are exact,
 * so those equal the CPU bit for bit; the GRU's gates use CUDA's expf/tanhf
 * (within a few ulp of libm's). Element-wise kernels run a grid-stride loop. */

int am__cuda_attention_short(am_backend *b, float *out, const float *q, const float *k,
                             const float *v, const am_dense_attn *a) {
    /* The same limits as the CPU (the caller sees one contract); the dense
     * kernel then does the work: a block per query row is a fine fit for
     * 64-token windows. */
    if (a->tq < 1 || a->tk < 1 || a->tq > AM_SHORT_ATTN_MAX_T || a->tk > AM_SHORT_ATTN_MAX_T)
        return am_err_set(AM_EINVAL, "attention_short: sequences of %lld x %lld (at most %d)",
                          (long long)a->tq, (long long)a->tk, AM_SHORT_ATTN_MAX_T);
    return am__cuda_attention_dense(b, out, q, k, v, a);
}

__device__ __forceinline__ int64_t perm_row(const int32_t *idx, int64_t period, int64_t r) {
    return r / period * period + idx[r % period];
}

__global__ void gather_rows_kernel(float *dst, const float *src, const int32_t *__restrict__ idx,
                                   int64_t period, int64_t total, int64_t c) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = src[perm_row(idx, period, i / c) * c + i % c];
}

__global__ void scatter_add_kernel(float *x, const float *y, const float *__restrict__ bias,
                                   const int32_t *__restrict__ idx, int64_t period, int64_t total,
                                   int64_t c) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        x[perm_row(idx, period, i / c) * c + i % c] += bias ? y[i] + bias[i % c] : y[i];
}

void am__cuda_gather_rows(am_backend *b, float *dst, const float *src, const int32_t *idx,
                          int64_t period, int64_t m, int64_t c) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    if (m <= 0 || c <= 0 || cx->error) return;
    gather_rows_kernel<<<grid_for(cx, m * c), AM_CUDA_THREADS, 0, cx->stream>>>(dst, src, idx,
                                                                                period, m * c, c);
    AM_CUDA_LAUNCHED(cx, "gather_rows");
}

void am__cuda_scatter_add(am_backend *b, float *x, const float *y, const float *bias,
                          const int32_t *idx, int64_t period, int64_t m, int64_t c) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    if (m <= 0 || c <= 0 || cx->error) return;
    /* A permutation within each block: no two threads add to one element. */
    scatter_add_kernel<<<grid_for(cx, m * c), AM_CUDA_THREADS, 0, cx->stream>>>(x, y, bias, idx,
                                                                                period, m * c, c);
    AM_CUDA_LAUNCHED(cx, "scatter_add");
}

/* Block (group g, sample s): the group's T x cg values, two passes in double. */
__global__ void groupnorm_kernel(float *out, const float *x, const float *__restrict__ w,
                                 const float *__restrict__ bias, int64_t T, int64_t C, int64_t cg,
                                 float eps) {
    __shared__ double red[32];
    const int64_t s = blockIdx.y, c0 = (int64_t)blockIdx.x * cg, n = T * cg;
    const float *xs = x + s * T * C; /* (T, C) */
    float *os = out + s * T * C;     /* (T, C), may equal xs */
    double sum = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        sum += xs[(i / cg) * C + c0 + i % cg];
    const double mean = block_sum_d(sum, red) / (double)n;
    double var = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const double d = xs[(i / cg) * C + c0 + i % cg] - mean;
        var += d * d;
    }
    var = block_sum_d(var, red);
    const float rstd = (float)(1.0 / sqrt(var / (double)n + eps)), fm = (float)mean;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const int64_t at = (i / cg) * C + c0 + i % cg, ch = c0 + i % cg;
        os[at] = (xs[at] - fm) * rstd * w[ch] + bias[ch];
    }
}

void am__cuda_groupnorm(am_backend *b, float *out, const float *x, const float *w,
                        const float *bias, int64_t nb, int64_t t, int64_t c, int groups,
                        float eps) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    if (nb <= 0 || t <= 0 || groups <= 0 || cx->error) return;
    if (nb > 65535) {
        am__cuda_fail(cx, "groupnorm", "more than 65535 samples in one call");
        return;
    }
    const dim3 grid((unsigned)groups, (unsigned)nb);
    groupnorm_kernel<<<grid, AM_CUDA_THREADS, 0, cx->stream>>>(out, x, w, bias, t, c, c / groups,
                                                               eps);
    AM_CUDA_LAUNCHED(cx, "groupnorm");
}

__global__ void im2col_1d_kernel(float *cols, const float *x, int64_t T, int64_t C, int64_t to,
                                 int k, int dil, int64_t total) {
    const int64_t row = C * k;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / row, col = i % row, ch = col / k, j = col % k;
        const int64_t s = r / to, t = r % to;
        cols[i] = x[(s * T + t + j * dil) * C + ch];
    }
}

void am__cuda_im2col_1d(am_backend *b, float *cols, const float *x, int64_t nb, int64_t t,
                        int64_t c, int k, int dil) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    const int64_t to = t - (int64_t)dil * (k - 1), total = nb * to * c * k;
    if (to <= 0 || total <= 0 || cx->error) return;
    im2col_1d_kernel<<<grid_for(cx, total), AM_CUDA_THREADS, 0, cx->stream>>>(cols, x, t, c, to, k,
                                                                              dil, total);
    AM_CUDA_LAUNCHED(cx, "im2col_1d");
}

__global__ void maxpool_time_kernel(float *out, const float *x, int64_t T, int64_t C, int64_t to,
                                    int p, int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / C, ch = i % C, s = r / to, j0 = r % to;
        const float *xs = x + (s * T + j0 * p) * C + ch; /* (p) with stride C */
        float o = xs[0];
        for (int j = 1; j < p; j++) {
            const float v = xs[j * C];
            o = v > o || v != v ? v : o; /* NaN wins, as the CPU and PyTorch */
        }
        out[i] = o;
    }
}

void am__cuda_maxpool_time(am_backend *b, float *out, const float *x, int64_t nb, int64_t t,
                           int64_t c, int p) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    const int64_t to = p > 0 ? t / p : 0, total = nb * to * c;
    if (total <= 0 || cx->error) return;
    maxpool_time_kernel<<<grid_for(cx, total), AM_CUDA_THREADS, 0, cx->stream>>>(out, x, t, c, to,
                                                                                 p, total);
    AM_CUDA_LAUNCHED(cx, "maxpool_time");
}

/* Thread (s, e): the mean of column e of sample s, in double as the CPU. */
__global__ void mean_rows_kernel(float *out, const float *x, int64_t T, int64_t C, int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t s = i / C, e = i % C;
        double acc = 0;
        for (int64_t t = 0; t < T; t++)
            acc += x[(s * T + t) * C + e];
        out[i] = (float)(acc / (double)T);
    }
}

void am__cuda_mean_rows(am_backend *b, float *out, const float *x, int64_t nb, int64_t t,
                        int64_t c) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    if (nb <= 0 || t <= 0 || c <= 0 || cx->error) return;
    mean_rows_kernel<<<grid_for(cx, nb * c), AM_CUDA_THREADS, 0, cx->stream>>>(out, x, t, c,
                                                                               nb * c);
    AM_CUDA_LAUNCHED(cx, "mean_rows");
}

__global__ void transpose_kernel(float *dst, const float *src, int64_t T, int64_t C,
                                 int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t s = i / (T * C), rem = i % (T * C), t = rem / C, ch = rem % C;
        dst[(s * C + ch) * T + t] = src[i];
    }
}

void am__cuda_transpose(am_backend *b, float *dst, const float *src, int64_t nb, int64_t t,
                        int64_t c) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    if (nb <= 0 || t <= 0 || c <= 0 || cx->error) return;
    transpose_kernel<<<grid_for(cx, nb * t * c), AM_CUDA_THREADS, 0, cx->stream>>>(dst, src, t, c,
                                                                                   nb * t * c);
    AM_CUDA_LAUNCHED(cx, "transpose");
}

__global__ void gru_gates_kernel(float *h, const float *gi, int64_t gi_stride, const float *gh,
                                 int64_t H, int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / H, e = i % H;
        const float *gir = gi + r * gi_stride, *ghr = gh + r * 3 * H;
        const float rg = 1.0f / (1.0f + expf(-(gir[e] + ghr[e])));
        const float z = 1.0f / (1.0f + expf(-(gir[H + e] + ghr[H + e])));
        const float n = tanhf(gir[2 * H + e] + rg * ghr[2 * H + e]);
        h[i] = (1.0f - z) * n + z * h[i];
    }
}

void am__cuda_gru_gates(am_backend *b, float *h, const float *gi, int64_t gi_stride,
                        const float *gh, int64_t rows, int64_t hidden) {
    am__cuda_ctx *cx = am__cuda_ctx_of(b);
    if (rows <= 0 || hidden <= 0 || cx->error) return;
    gru_gates_kernel<<<grid_for(cx, rows * hidden), AM_CUDA_THREADS, 0, cx->stream>>>(
        h, gi, gi_stride, gh, hidden, rows * hidden);
    AM_CUDA_LAUNCHED(cx, "gru_gates");
}
