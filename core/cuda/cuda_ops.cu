/* core/cuda/cuda_ops.cu - the light ops: rmsnorm, rope, softmax, silu_mul, add.
 *
 * Same formulas as core/cpu/cpu_backend.c: per-row reductions (RMSNorm's mean
 * square, softmax's max and sum) run one block per row in f32; RoPE computes
 * each (row, frequency) angle and its cos/sin in double, as the CPU does, so
 * large positions stay exact, and rotates every head with them.
 */
#include "core/cuda/cuda_internal.cuh"

/* ---- rmsnorm: out (M, K) = x * rsqrt(mean(x^2) + eps) * weight ---- */

/* Block i = row i. VEC: rows and weight are 16-byte aligned and K % 4 == 0, so
 * each thread moves four floats per load. The block is as wide as a row needs
 * (up to 1024 threads): a decode step normalises one row, and a 256-thread
 * block looping over an 8192-wide row took 27 us on an H200. */
template <int VEC>
__global__ void rmsnorm_kernel(float *out, const float *x, const float *__restrict__ weight,
                               int64_t K, float eps) {
    __shared__ float red[32];
    const float *xi = x + (int64_t)blockIdx.x * K; /* (K) */
    float *oi = out + (int64_t)blockIdx.x * K;     /* (K), may equal xi */
    float ss = 0.0f;
    if (VEC) {
        for (int64_t k = threadIdx.x; k < K / 4; k += blockDim.x) {
            const float4 v = ((const float4 *)xi)[k];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
            ss += xi[k] * xi[k];
    }
    ss = am__block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / (float)K + eps);
    if (VEC) {
        for (int64_t k = threadIdx.x; k < K / 4; k += blockDim.x) {
            const float4 v = ((const float4 *)xi)[k], w = ((const float4 *)weight)[k];
            ((float4 *)oi)[k] =
                make_float4(v.x * r * w.x, v.y * r * w.y, v.z * r * w.z, v.w * r * w.w);
        }
    } else {
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
            oi[k] = xi[k] * r * weight[k];
    }
}

void am__cuda_rmsnorm(am_backend *b, float *out, const float *x, const float *weight, int64_t m,
                      int64_t k, float eps) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "rmsnorm");
    if (m <= 0 || c->error) return;
    const int vec = k % 4 == 0 && ((uintptr_t)out | (uintptr_t)x | (uintptr_t)weight) % 16 == 0;
    const int64_t per_thread = vec ? 4 : 1;
    int threads = (int)((k / per_thread + 31) / 32 * 32);
    threads = threads < 32 ? 32 : threads > 1024 ? 1024 : threads;
    if (vec)
        rmsnorm_kernel<1><<<(unsigned)m, threads, 0, c->stream>>>(out, x, weight, k, eps);
    else
        rmsnorm_kernel<0><<<(unsigned)m, threads, 0, c->stream>>>(out, x, weight, k, eps);
    AM_CUDA_LAUNCHED(c, "rmsnorm");
}

/* ---- rope: in place on x (M, H, D), row i rotated by position pos[i] ---- */

/* Block (i, h) = head h of row i; thread f = frequency f < D/2. Every block
 * computes its own angles (in double, as am_ref_rope: exact for large
 * positions): recomputing them per head costs FP64 work the device has to
 * spare, while one block per row (as before) left a decode step's rotation on
 * one multiprocessor for 6-30 us. */
__global__ void rope_kernel(float *x, const int32_t *__restrict__ pos, int n_heads, int head_dim,
                            float theta, int halves) {
    const int D = head_dim, half = head_dim / 2;
    float *xh = x + ((int64_t)blockIdx.x * n_heads + blockIdx.y) * D; /* (D) */
    for (int f = threadIdx.x; f < half; f += blockDim.x) {
        /* freq_f = theta^(-2f/D); the angle in double, as am_ref_rope. */
        const double angle = (double)pos[blockIdx.x] * pow((double)theta, -2.0 * f / D);
        double sd, cd;
        sincos(angle, &sd, &cd);
        const float cs = (float)cd, sn = (float)sd;
        const int a = halves ? f : 2 * f, bb = halves ? f + half : 2 * f + 1;
        const float x0 = xh[a], x1 = xh[bb];
        xh[a] = x0 * cs - x1 * sn;
        xh[bb] = x0 * sn + x1 * cs;
    }
}

void am__cuda_rope(am_backend *b, float *x, const int32_t *pos, int64_t m, int n_heads,
                   int head_dim, float theta, am_rope_layout layout) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "rope");
    if (m <= 0 || n_heads <= 0 || c->error) return;
    const int32_t *dpos = am__cuda_ints(c, pos, m, "rope");
    if (!dpos) return;
    /* A thread per frequency (rounded up to whole warps, at most 1024; more loop). */
    int threads = head_dim / 2 < 32 ? 32 : (head_dim / 2 + 31) / 32 * 32;
    if (threads > 1024) threads = 1024;
    const int halves = layout == AM_ROPE_HALVES;
    const dim3 grid((unsigned)m, (unsigned)n_heads);
    rope_kernel<<<grid, threads, 0, c->stream>>>(x, dpos, n_heads, head_dim, theta, halves);
    AM_CUDA_LAUNCHED(c, "rope");
}

/* ---- softmax: in place per row of x (M, N) ---- */

__global__ void softmax_kernel(float *x, int64_t N) {
    __shared__ float red[32];
    float *xi = x + (int64_t)blockIdx.x * N; /* (N) */
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x)
        mx = fmaxf(mx, xi[j]);
    mx = am__block_max(mx, red);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x)
        sum += expf(xi[j] - mx);
    sum = am__block_sum(sum, red);
    const float inv = 1.0f / sum;
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x)
        xi[j] = expf(xi[j] - mx) * inv;
}

void am__cuda_softmax(am_backend *b, float *x, int64_t m, int64_t n) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "softmax");
    if (m <= 0 || n <= 0 || c->error) return;
    softmax_kernel<<<(unsigned)m, AM_CUDA_THREADS, 0, c->stream>>>(x, n);
    AM_CUDA_LAUNCHED(c, "softmax");
}

/* ---- silu_mul: gate (n) = silu(gate) * up;  add: y (n) += x (n) ---- */

__global__ void silu_mul_kernel(float *gate, const float *__restrict__ up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void add_kernel(float *y, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

/* Enough blocks to fill the device for a grid-stride loop over n. */
static unsigned elementwise_blocks(const am__cuda_ctx *c, int64_t n) {
    const unsigned want = am__cuda_blocks(n, AM_CUDA_THREADS), cap = (unsigned)c->n_sm * 8;
    return want < cap ? want : cap;
}

void am__cuda_silu_mul(am_backend *b, float *gate, const float *up, int64_t n) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "silu_mul");
    if (n <= 0 || c->error) return;
    silu_mul_kernel<<<elementwise_blocks(c, n), AM_CUDA_THREADS, 0, c->stream>>>(gate, up, n);
    AM_CUDA_LAUNCHED(c, "silu_mul");
}

void am__cuda_add(am_backend *b, float *y, const float *x, int64_t n) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "add");
    if (n <= 0 || c->error) return;
    add_kernel<<<elementwise_blocks(c, n), AM_CUDA_THREADS, 0, c->stream>>>(y, x, n);
    AM_CUDA_LAUNCHED(c, "add");
}
