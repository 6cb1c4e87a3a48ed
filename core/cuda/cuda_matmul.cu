/* core/cuda/cuda_matmul.cu - y = x W^T and embedding rows on the device.
 *
 * Mirrors core/cpu/cpu_matmul.c: small M (decode) runs a matrix-vector
 * kernel that reads each weight row once for all M rows of x; larger M
 * (prefill, batched decode) runs a cuBLAS GEMM, with x rounded to the
 * weight's 16-bit type (F16/BF16) or, for Q8_0/Q4_0, weight tiles
 * dequantized to f16 first. For Q8_0/Q4_0 x is first quantized per block of
 * 32 to int8 on every path, exactly as core/dtype.h prescribes for every
 * backend (am_quantize_x_block): the matrix-vector kernels then match the CPU
 * to f32 summation. The GEMMs' 16-bit operands are this backend's own
 * rounding (docs/numerics.md). Row-major y (M, N) = x (M, K) . W (N, K)^T is, in
 * cuBLAS's column-major terms, y^T (N, M) = W^T (N, K) . x^T (K, M): op(A) = T
 * on W with lda = K, B = x with ldb = K, C = y with ldc = N.
 */
#include "core/cuda/cuda_internal.cuh"

#include <limits.h>

/* Weight rows per block of the matrix-vector kernels (one warp per row). */
#define AM_CUDA_MATVEC_ROWS_PER_BLOCK 8
/* Bytes of f16 weights one dequantized Q8_0/Q4_0 tile may take in scratch. */
#define AM_CUDA_DEQUANT_TILE_BYTES ((size_t)64 << 20)

__device__ __forceinline__ void store_value(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_value(__half *p, float v) { *p = __float2half_rn(v); }

/* Grid size of the grid-stride kernels below: enough blocks to fill the device. */
static unsigned stride_blocks(const am__cuda_ctx *c, int64_t n) {
    const unsigned want = am__cuda_blocks(n, AM_CUDA_THREADS), cap = (unsigned)c->n_sm * 8;
    return want < cap ? want : cap;
}

/* ---- matrix-vector products: y (M, N) = x (M, K) . W^T, M <= AM_CUDA_MATVEC_MAX_ROWS ---- */

/* acc[i] += sum over 8 weights w[0..8) at column k of x row i. */
__device__ __forceinline__ void mv_acc8(float *acc, const float *w, const float *x, int64_t K,
                                        int64_t k, int m) {
#pragma unroll
    for (int i = 0; i < AM_CUDA_MATVEC_MAX_ROWS; i++) {
        if (i < m) {
            const float4 a = *(const float4 *)(x + i * K + k);     /* x[i, k .. k+4) */
            const float4 b = *(const float4 *)(x + i * K + k + 4); /* x[i, k+4 .. k+8) */
            acc[i] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y +
                      w[6] * b.z + w[7] * b.w;
        }
    }
}

/* One warp per weight row n. vec: rows and x are 16-byte aligned and K % 8 == 0
 * (F16/BF16: one 16-byte load = 8 weights per lane; F32: two). Otherwise lanes
 * take columns one at a time. Q8_0/Q4_0: a lane takes whole 32-blocks. */
template <int DT>
__global__ void matvec_kernel(const uint8_t *__restrict__ w, /* (N, row_bytes) */
                              const float *__restrict__ x,   /* (M, K) */
                              float *__restrict__ y,         /* (M, N) */
                              int64_t N, int64_t K, size_t row_bytes, int m, int vec) {
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * AM_CUDA_MATVEC_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (n >= N) return;
    const uint8_t *row = w + (size_t)n * row_bytes; /* (row_bytes) weight row n */
    float acc[AM_CUDA_MATVEC_MAX_ROWS];
#pragma unroll
    for (int i = 0; i < AM_CUDA_MATVEC_MAX_ROWS; i++)
        acc[i] = 0.0f;

    if (DT == AM_DTYPE_Q8_0 || DT == AM_DTYPE_Q4_0) {
        const int64_t n_blocks = K / AM_QK;
        for (int64_t bi = lane; bi < n_blocks; bi += 32) {
            float wf[AM_QK]; /* the block dequantized, without its scale */
            float d;
            if (DT == AM_DTYPE_Q8_0) {
                const am_block_q8_0 *bl = (const am_block_q8_0 *)row + bi;
                d = am__f16(bl->d);
                const uint16_t *qs = (const uint16_t *)bl->qs; /* 2-byte aligned: pairs */
#pragma unroll
                for (int j = 0; j < AM_QK / 2; j++) {
                    const uint16_t pr = qs[j];
                    wf[2 * j] = (float)(int8_t)(pr & 0xff);
                    wf[2 * j + 1] = (float)(int8_t)(pr >> 8);
                }
            } else {
                const am_block_q4_0 *bl = (const am_block_q4_0 *)row + bi;
                d = am__f16(bl->d);
                const uint16_t *qs = (const uint16_t *)bl->qs;
#pragma unroll
                for (int j = 0; j < AM_QK / 4; j++) {
                    const uint16_t pr = qs[j]; /* bytes 2j, 2j+1 */
                    wf[2 * j] = (float)((pr & 15) - 8);
                    wf[2 * j + 1] = (float)(((pr >> 8) & 15) - 8);
                    wf[2 * j + 16] = (float)(((pr >> 4) & 15) - 8);
                    wf[2 * j + 17] = (float)((pr >> 12) - 8);
                }
            }
            const int64_t k0 = bi * AM_QK;
#pragma unroll
            for (int i = 0; i < AM_CUDA_MATVEC_MAX_ROWS; i++) {
                if (i < m) {
                    const float *xi = x + i * K + k0; /* (32) */
                    float s = 0.0f;
                    if (vec) {
#pragma unroll
                        for (int j = 0; j < AM_QK; j += 4) {
                            const float4 a = *(const float4 *)(xi + j);
                            s += wf[j] * a.x + wf[j + 1] * a.y + wf[j + 2] * a.z + wf[j + 3] * a.w;
                        }
                    } else {
#pragma unroll
                        for (int j = 0; j < AM_QK; j++)
                            s += wf[j] * xi[j];
                    }
                    acc[i] += d * s;
                }
            }
        }
    } else if (vec) {
        for (int64_t k = (int64_t)lane * 8; k < K; k += 32 * 8) {
            float wf[8];
            if (DT == AM_DTYPE_F32) {
                const float4 a = *(const float4 *)(row + k * 4),
                             b = *(const float4 *)(row + k * 4 + 16);
                wf[0] = a.x, wf[1] = a.y, wf[2] = a.z, wf[3] = a.w;
                wf[4] = b.x, wf[5] = b.y, wf[6] = b.z, wf[7] = b.w;
            } else {
                const uint4 u = *(const uint4 *)(row + k * 2); /* 8 x 16-bit weights */
                const uint32_t p[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const uint16_t lo = (uint16_t)(p[j] & 0xffff), hi = (uint16_t)(p[j] >> 16);
                    wf[2 * j] = DT == AM_DTYPE_F16 ? am__f16(lo) : am__bf16(lo);
                    wf[2 * j + 1] = DT == AM_DTYPE_F16 ? am__f16(hi) : am__bf16(hi);
                }
            }
            mv_acc8(acc, wf, x, K, k, m);
        }
    } else {
        for (int64_t k = lane; k < K; k += 32) {
            const float wk = am__weight_at(DT, row, k);
#pragma unroll
            for (int i = 0; i < AM_CUDA_MATVEC_MAX_ROWS; i++)
                if (i < m) acc[i] += wk * x[i * K + k];
        }
    }
#pragma unroll
    for (int i = 0; i < AM_CUDA_MATVEC_MAX_ROWS; i++) {
        if (i < m) {
            const float s = am__warp_sum(acc[i]);
            if (lane == 0) y[i * N + n] = s;
        }
    }
}

/* out (n_blocks * 32) = x quantized per block as am_quantize_x_block does
 * (d = amax / 127, q = rint(x * (1 / d)), IEEE-rounded f32 operations), as
 * the values q * d in T (float, or __half for the GEMM). One thread per block. */
template <typename T>
__global__ void quantize_x_kernel(T *__restrict__ out, const float *__restrict__ x, int64_t n_blocks) {
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < n_blocks;
         b += (int64_t)gridDim.x * blockDim.x) {
        const float *xb = x + b * AM_QK; /* (32) */
        float amax = 0.0f;
        for (int j = 0; j < AM_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = __fdiv_rn(amax, 127.0f), id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
        for (int j = 0; j < AM_QK; j++) store_value(out + b * AM_QK + j, __fmul_rn(rintf(__fmul_rn(xb[j], id)), d));
    }
}

static int matvec(am__cuda_ctx *c, const am_matrix *w, const float *x, float *y, int m) {
    const int64_t N = w->rows, K = w->cols;
    if (w->dtype == AM_DTYPE_Q8_0 || w->dtype == AM_DTYPE_Q4_0) { /* x as int8 blocks (dtype.h) */
        float *xq = (float *)am__cuda_scratch(c, (size_t)(m * K) * sizeof(float), "matmul");
        if (!xq) return AM_ENOMEM;
        quantize_x_kernel<float><<<stride_blocks(c, m * K / AM_QK), AM_CUDA_THREADS, 0, c->stream>>>(
            xq, x, m * K / AM_QK);
        if (AM_CUDA_LAUNCHED(c, "matmul (quantize x)")) return AM_EIO;
        x = xq;
    }
    const uintptr_t a = (uintptr_t)w->data | (uintptr_t)x | (uintptr_t)w->row_bytes;
    const int vec = (a % 16 == 0) && K % 8 == 0;
    const dim3 grid(am__cuda_blocks(N, AM_CUDA_MATVEC_ROWS_PER_BLOCK));
    const int threads = 32 * AM_CUDA_MATVEC_ROWS_PER_BLOCK;
    const uint8_t *wd = (const uint8_t *)w->data;
    switch (w->dtype) {
    case AM_DTYPE_F32:
        matvec_kernel<AM_DTYPE_F32>
            <<<grid, threads, 0, c->stream>>>(wd, x, y, N, K, w->row_bytes, m, vec);
        break;
    case AM_DTYPE_F16:
        matvec_kernel<AM_DTYPE_F16>
            <<<grid, threads, 0, c->stream>>>(wd, x, y, N, K, w->row_bytes, m, vec);
        break;
    case AM_DTYPE_BF16:
        matvec_kernel<AM_DTYPE_BF16>
            <<<grid, threads, 0, c->stream>>>(wd, x, y, N, K, w->row_bytes, m, vec);
        break;
    case AM_DTYPE_Q8_0:
        matvec_kernel<AM_DTYPE_Q8_0><<<grid, threads, 0, c->stream>>>(wd, x, y, N, K, w->row_bytes,
                                                                      m, (uintptr_t)x % 16 == 0);
        break;
    case AM_DTYPE_Q4_0:
        matvec_kernel<AM_DTYPE_Q4_0><<<grid, threads, 0, c->stream>>>(wd, x, y, N, K, w->row_bytes,
                                                                      m, (uintptr_t)x % 16 == 0);
        break;
    default: return AM_EUNSUPPORTED;
    }
    return AM_CUDA_LAUNCHED(c, "matmul (matrix-vector)");
}

/* ---- GEMM: conversions into scratch, then cuBLAS ---- */

__device__ __forceinline__ void store_half(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_half(__nv_bfloat16 *p, float v) {
    *p = __float2bfloat16_rn(v);
}

/* out (n) = x (n) rounded to f16 (T = __half) or bf16 (T = __nv_bfloat16). */
template <typename T>
__global__ void to_half_kernel(T *__restrict__ out, const float *__restrict__ x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        store_half(out + i, x[i]);
    }
}

/* out (rows, K) f16 = weight rows [n0, n0 + rows) of a Q8_0/Q4_0 matrix, dequantized
 * (d * q is exact in f32; rounding it to f16 is the only error). */
template <int DT>
__global__ void dequant_f16_kernel(__half *__restrict__ out, const uint8_t *__restrict__ w,
                                   size_t row_bytes, int64_t n0, int64_t rows, int64_t K) {
    const int64_t total = rows * K;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / K, k = e % K;
        out[e] = __float2half_rn(am__weight_at(DT, w + (size_t)(n0 + r) * row_bytes, k));
    }
}

static int cublas_failed(am__cuda_ctx *c, cublasStatus_t st) {
    if (st == CUBLAS_STATUS_SUCCESS) return 0;
    am__cuda_fail(c, "matmul (cuBLAS)", am__cublas.status_string(st));
    return am_err_set(AM_EIO, "%s", c->error_msg);
}

static int gemm(am__cuda_ctx *c, const am_matrix *w, const float *x, float *y, int64_t m) {
    const int64_t N = w->rows, K = w->cols;
    const float one = 1.0f, zero = 0.0f;
    if (w->dtype == AM_DTYPE_F32)
        return cublas_failed(c, am__cublas.sgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)m,
                                            (int)K, &one, (const float *)w->data, (int)K, x, (int)K,
                                            &zero, y, (int)N));

    const int quant = w->dtype == AM_DTYPE_Q8_0 || w->dtype == AM_DTYPE_Q4_0;
    const cudaDataType_t t = w->dtype == AM_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    /* Scratch: x in 16 bits (M, K), then for Q8_0/Q4_0 one weight tile (rows, K). */
    const size_t x_bytes = ((size_t)(m * K) * 2 + 255) / 256 * 256;
    int64_t tile = N;
    if (quant) {
        tile = (int64_t)(AM_CUDA_DEQUANT_TILE_BYTES / ((size_t)K * 2));
        tile = tile < 64 ? 64 : tile / 64 * 64;
        if (tile > N) tile = N;
    }
    uint8_t *scratch =
        (uint8_t *)am__cuda_scratch(c, x_bytes + (quant ? (size_t)(tile * K) * 2 : 0), "matmul");
    if (!scratch) return am_err_set(AM_ENOMEM, "%s", c->error_msg);
    void *x16 = scratch;                         /* (M, K) */
    __half *w16 = (__half *)(scratch + x_bytes); /* (tile, K), Q8_0/Q4_0 only */
    if (quant) /* x as int8 blocks (dtype.h), then in f16 */
        quantize_x_kernel<__half><<<stride_blocks(c, m * K / AM_QK), AM_CUDA_THREADS, 0, c->stream>>>(
            (__half *)x16, x, m * K / AM_QK);
    else if (t == CUDA_R_16BF)
        to_half_kernel<__nv_bfloat16><<<stride_blocks(c, m * K), AM_CUDA_THREADS, 0, c->stream>>>(
            (__nv_bfloat16 *)x16, x, m * K);
    else
        to_half_kernel<__half>
            <<<stride_blocks(c, m * K), AM_CUDA_THREADS, 0, c->stream>>>((__half *)x16, x, m * K);
    if (AM_CUDA_LAUNCHED(c, "matmul (convert x)")) return am_err_set(AM_EIO, "%s", c->error_msg);

    if (!quant)
        return cublas_failed(c, am__cublas.gemm_ex(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)m,
                                             (int)K, &one, w->data, t, (int)K, x16, t, (int)K,
                                             &zero, y, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                                             CUBLAS_GEMM_DEFAULT));
    for (int64_t n0 = 0; n0 < N; n0 += tile) {
        const int64_t rows = N - n0 < tile ? N - n0 : tile;
        const uint8_t *wd = (const uint8_t *)w->data;
        if (w->dtype == AM_DTYPE_Q8_0)
            dequant_f16_kernel<AM_DTYPE_Q8_0>
                <<<stride_blocks(c, rows * K), AM_CUDA_THREADS, 0, c->stream>>>(
                    w16, wd, w->row_bytes, n0, rows, K);
        else
            dequant_f16_kernel<AM_DTYPE_Q4_0>
                <<<stride_blocks(c, rows * K), AM_CUDA_THREADS, 0, c->stream>>>(
                    w16, wd, w->row_bytes, n0, rows, K);
        if (AM_CUDA_LAUNCHED(c, "matmul (dequantize)"))
            return am_err_set(AM_EIO, "%s", c->error_msg);
        int rc = cublas_failed(c, am__cublas.gemm_ex(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows,
                                               (int)m, (int)K, &one, w16, CUDA_R_16F, (int)K, x16,
                                               CUDA_R_16F, (int)K, &zero, y + n0, CUDA_R_32F,
                                               (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        if (rc) return rc;
    }
    return 0;
}

int am__cuda_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (c->error) return am_err_set(AM_EIO, "%s", c->error_msg);
    if (m <= 0 || w->rows == 0) return 0;
    switch (w->dtype) {
    case AM_DTYPE_F32:
    case AM_DTYPE_F16:
    case AM_DTYPE_BF16:
    case AM_DTYPE_Q8_0:
    case AM_DTYPE_Q4_0: break;
    default:
        return am_err_set(AM_EUNSUPPORTED, "cuda matmul: weight dtype %s", am_dtype_name(w->dtype));
    }
    if (w->rows > INT_MAX || w->cols > INT_MAX || m > INT_MAX)
        return am_err_set(AM_EUNSUPPORTED,
                          "cuda matmul: %lld x %lld x %lld exceeds cuBLAS's int dimensions",
                          (long long)m, (long long)w->rows, (long long)w->cols);
    if (m <= AM_CUDA_MATVEC_MAX_ROWS) {
        int rc = matvec(c, w, x, y, (int)m);
        return rc ? am_err_set(rc, "%s", c->error ? c->error_msg : "cuda matmul") : 0;
    }
    return gemm(c, w, x, y, m);
}

/* ---- get_rows: out (M, K) = W[ids[i]] dequantized ---- */

template <int DT>
__global__ void get_rows_kernel(float *__restrict__ out, const uint8_t *__restrict__ w,
                                size_t row_bytes, const int32_t *__restrict__ ids, int64_t K) {
    const int64_t i = blockIdx.x;
    const uint8_t *row = w + (size_t)ids[i] * row_bytes; /* (row_bytes) */
    float *o = out + i * K;                              /* (K) */
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
        o[k] = am__weight_at(DT, row, k);
}

void am__cuda_get_rows(am_backend *b, const am_matrix *w, const int32_t *ids, int64_t m,
                       float *out) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (m <= 0 || c->error) return;
    const int32_t *dids = am__cuda_ints(c, ids, m, "get_rows");
    if (!dids) return;
    const uint8_t *wd = (const uint8_t *)w->data;
    const int64_t K = w->cols;
    const dim3 grid((unsigned)m);
    switch (w->dtype) {
    case AM_DTYPE_F32:
        get_rows_kernel<AM_DTYPE_F32>
            <<<grid, AM_CUDA_THREADS, 0, c->stream>>>(out, wd, w->row_bytes, dids, K);
        break;
    case AM_DTYPE_F16:
        get_rows_kernel<AM_DTYPE_F16>
            <<<grid, AM_CUDA_THREADS, 0, c->stream>>>(out, wd, w->row_bytes, dids, K);
        break;
    case AM_DTYPE_BF16:
        get_rows_kernel<AM_DTYPE_BF16>
            <<<grid, AM_CUDA_THREADS, 0, c->stream>>>(out, wd, w->row_bytes, dids, K);
        break;
    case AM_DTYPE_Q8_0:
        get_rows_kernel<AM_DTYPE_Q8_0>
            <<<grid, AM_CUDA_THREADS, 0, c->stream>>>(out, wd, w->row_bytes, dids, K);
        break;
    case AM_DTYPE_Q4_0:
        get_rows_kernel<AM_DTYPE_Q4_0>
            <<<grid, AM_CUDA_THREADS, 0, c->stream>>>(out, wd, w->row_bytes, dids, K);
        break;
    default: am__cuda_fail(c, "get_rows", "unsupported weight dtype"); return;
    }
    AM_CUDA_LAUNCHED(c, "get_rows");
}
