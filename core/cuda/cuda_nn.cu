/* core/cuda/cuda_nn.cu - the encoder ops: copy, layernorm, bias_act, add_bias, attention_dense.
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
    am__cuda_check(c, "copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
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

void am__cuda_bias_act(am_backend *b, float *y, const float *bias, int64_t m, int64_t n, am_act act) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (m <= 0 || n <= 0 || c->error || (!bias && act == AM_ACT_NONE)) return;
    bias_act_kernel<<<grid_for(c, m * n), AM_CUDA_THREADS, 0, c->stream>>>(y, bias, m * n, n, (int)act);
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
    const float *qi = q + (s * a.tq + i) * a.q_stride + h * D;          /* (D) */
    const float *ks = k + s * tk * a.kv_stride + h * D;                 /* (Tk, stride) */
    const float *vs = v + s * tk * a.kv_stride + h * D;                 /* (Tk, stride) */
    const float *bias = a.bias ? a.bias + (h * a.tq + i) * tk : NULL;    /* (Tk) */
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
        return am_err_set(AM_EUNSUPPORTED, "cuda attention_dense: %lld keys per sequence (at most %d)",
                          (long long)a->tk, (int)(AM_CUDA_DENSE_ATTN_MAX_SMEM / sizeof(float)));
    if (a->tq > 0x7fffffff || a->n_heads > 65535 || a->n_seqs > 65535)
        return am_err_set(AM_EUNSUPPORTED, "cuda attention_dense: grid of %lld x %d x %lld blocks",
                          (long long)a->tq, a->n_heads, (long long)a->n_seqs);
    const dim3 grid((unsigned)a->tq, (unsigned)a->n_heads, (unsigned)a->n_seqs);
    dense_attn_kernel<<<grid, AM_CUDA_DENSE_ATTN_THREADS, smem, c->stream>>>(out, q, k, v, *a);
    return AM_CUDA_LAUNCHED(c, "attention_dense");
}
