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
/* 16-byte weight loads each lane has in flight in the dense matrix-vector kernel. */
#define AM_CUDA_MATVEC_UNROLL 4
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
template <int M>
__device__ __forceinline__ void mv_acc8(float *acc, const float *w, const float *x, int64_t K,
                                        int64_t k) {
#pragma unroll
    for (int i = 0; i < M; i++) {
        {
            const float4 a = *(const float4 *)(x + i * K + k);     /* x[i, k .. k+4) */
            const float4 b = *(const float4 *)(x + i * K + k + 4); /* x[i, k+4 .. k+8) */
            acc[i] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y +
                      w[6] * b.z + w[7] * b.w;
        }
    }
}

/* Eight consecutive weights of a dense row as loaded: one 16-byte load for
 * F16/BF16, two for F32 (b unused otherwise). Weights are read once per step:
 * the loads bypass L1 (__ldcs: evict-first), x stays cached. */
typedef struct {
    uint4 a, b;
} w8;

template <int DT> __device__ __forceinline__ w8 load_w8(const uint8_t *row, int64_t k) {
    w8 r;
    if (DT == AM_DTYPE_F32) {
        r.a = __ldcs((const uint4 *)(row + k * 4));
        r.b = __ldcs((const uint4 *)(row + k * 4 + 16));
    } else {
        r.a = __ldcs((const uint4 *)(row + k * 2));
        r.b = make_uint4(0, 0, 0, 0);
    }
    return r;
}

template <int DT> __device__ __forceinline__ void decode_w8(const w8 &r, float *wf) {
    if (DT == AM_DTYPE_F32) {
        const uint32_t p[8] = {r.a.x, r.a.y, r.a.z, r.a.w, r.b.x, r.b.y, r.b.z, r.b.w};
#pragma unroll
        for (int j = 0; j < 8; j++)
            wf[j] = __uint_as_float(p[j]);
    } else {
        const uint32_t p[4] = {r.a.x, r.a.y, r.a.z, r.a.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const uint16_t lo = (uint16_t)(p[j] & 0xffff), hi = (uint16_t)(p[j] >> 16);
            wf[2 * j] = DT == AM_DTYPE_F16 ? am__f16(lo) : am__bf16(lo);
            wf[2 * j + 1] = DT == AM_DTYPE_F16 ? am__f16(hi) : am__bf16(hi);
        }
    }
}

/* One warp per weight row n. vec: rows and x are 16-byte aligned and K % 8 == 0
 * (F16/BF16: one 16-byte load = 8 weights per lane; F32: two). Otherwise lanes
 * take columns one at a time. Q8_0/Q4_0: a lane takes whole 32-blocks. */
template <int DT, int M>
__global__ void matvec_kernel(const uint8_t *__restrict__ w, /* (N, row_bytes) */
                              const float *__restrict__ x,   /* (M, K) */
                              float *__restrict__ y,         /* (M, N) */
                              int64_t N, int64_t K, size_t row_bytes, int vec) {
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * AM_CUDA_MATVEC_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (n >= N) return;
    const uint8_t *row = w + (size_t)n * row_bytes; /* (row_bytes) weight row n */
    float acc[M];
#pragma unroll
    for (int i = 0; i < M; i++)
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
            for (int i = 0; i < M; i++) {
                {
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
        /* AM_CUDA_MATVEC_UNROLL loads of 8 weights per lane are issued before any is
         * used: one load at a time kept too few bytes in flight to saturate HBM
         * (0.50 of peak on an H200 for an 8192 -> 28672 f16 matrix). */
        constexpr int U = AM_CUDA_MATVEC_UNROLL, STEP = 32 * 8;
        int64_t k = (int64_t)lane * 8;
        for (; k + (U - 1) * STEP < K; k += U * STEP) {
            w8 raw[U];
#pragma unroll
            for (int u = 0; u < U; u++)
                raw[u] = load_w8<DT>(row, k + u * STEP);
#pragma unroll
            for (int u = 0; u < U; u++) {
                float wf[8];
                decode_w8<DT>(raw[u], wf);
                mv_acc8<M>(acc, wf, x, K, k + u * STEP);
            }
        }
        for (; k < K; k += STEP) {
            float wf[8];
            decode_w8<DT>(load_w8<DT>(row, k), wf);
            mv_acc8<M>(acc, wf, x, K, k);
        }
    } else {
        for (int64_t k = lane; k < K; k += 32) {
            const float wk = am__weight_at(DT, row, k);
#pragma unroll
            for (int i = 0; i < M; i++)
                acc[i] += wk * x[i * K + k];
        }
    }
#pragma unroll
    for (int i = 0; i < M; i++) {
        {
            const float s = am__warp_sum(acc[i]);
            if (lane == 0) y[i * N + n] = s;
        }
    }
}

/* out (n_blocks * 32) = x quantized per block as am_quantize_x_block does
 * (d = amax / 127, q = rint(x * (1 / d)), IEEE-rounded f32 operations), as
 * the values q * d in T (float, or __half for the GEMM). One thread per block. */
template <typename T>
__global__ void quantize_x_kernel(T *__restrict__ out, const float *__restrict__ x,
                                  int64_t n_blocks) {
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < n_blocks;
         b += (int64_t)gridDim.x * blockDim.x) {
        const float *xb = x + b * AM_QK; /* (32) */
        float amax = 0.0f;
        for (int j = 0; j < AM_QK; j++)
            amax = fmaxf(amax, fabsf(xb[j]));
        const float d = __fdiv_rn(amax, 127.0f), id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
        for (int j = 0; j < AM_QK; j++)
            store_value(out + b * AM_QK + j, __fmul_rn(rintf(__fmul_rn(xb[j], id)), d));
    }
}

static_assert(AM_CUDA_MATVEC_MAX_ROWS == 8, "launch_matvec has one case per row count");

/* The kernel for exactly m rows of x (1..AM_CUDA_MATVEC_MAX_ROWS): a compile-time row
 * count, because a loop over "up to 8 rows, if i < m" issued the instructions of all
 * eight rows, predicated off, for every weight (a decode step has m = 1). */
template <int DT>
static void launch_matvec(am__cuda_ctx *c, const uint8_t *wd, const float *x, float *y, int64_t N,
                          int64_t K, size_t row_bytes, int m, int vec) {
    const dim3 grid(am__cuda_blocks(N, AM_CUDA_MATVEC_ROWS_PER_BLOCK));
    const int threads = 32 * AM_CUDA_MATVEC_ROWS_PER_BLOCK;
    cudaStream_t st = c->stream;
    switch (m) {
    case 1: matvec_kernel<DT, 1><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    case 2: matvec_kernel<DT, 2><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    case 3: matvec_kernel<DT, 3><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    case 4: matvec_kernel<DT, 4><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    case 5: matvec_kernel<DT, 5><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    case 6: matvec_kernel<DT, 6><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    case 7: matvec_kernel<DT, 7><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    default: matvec_kernel<DT, 8><<<grid, threads, 0, st>>>(wd, x, y, N, K, row_bytes, vec); break;
    }
}

static int matvec(am__cuda_ctx *c, const am_matrix *w, const float *x, float *y, int m) {
    const int64_t N = w->rows, K = w->cols;
    if (w->dtype == AM_DTYPE_Q8_0 || w->dtype == AM_DTYPE_Q4_0) { /* x as int8 blocks (dtype.h) */
        float *xq = (float *)am__cuda_scratch(c, (size_t)(m * K) * sizeof(float), "matmul");
        if (!xq) return AM_ENOMEM;
        quantize_x_kernel<float>
            <<<stride_blocks(c, m * K / AM_QK), AM_CUDA_THREADS, 0, c->stream>>>(xq, x,
                                                                                 m * K / AM_QK);
        if (AM_CUDA_LAUNCHED(c, "matmul (quantize x)")) return AM_EIO;
        x = xq;
    }
    const uintptr_t a = (uintptr_t)w->data | (uintptr_t)x | (uintptr_t)w->row_bytes;
    const int vec = (a % 16 == 0) && K % 8 == 0;
    const uint8_t *wd = (const uint8_t *)w->data;
    const int xvec = (uintptr_t)x % 16 == 0; /* Q8_0/Q4_0 load x by 16 bytes when aligned */
    switch (w->dtype) {
    case AM_DTYPE_F32: launch_matvec<AM_DTYPE_F32>(c, wd, x, y, N, K, w->row_bytes, m, vec); break;
    case AM_DTYPE_F16: launch_matvec<AM_DTYPE_F16>(c, wd, x, y, N, K, w->row_bytes, m, vec); break;
    case AM_DTYPE_BF16:
        launch_matvec<AM_DTYPE_BF16>(c, wd, x, y, N, K, w->row_bytes, m, vec);
        break;
    case AM_DTYPE_Q8_0:
        launch_matvec<AM_DTYPE_Q8_0>(c, wd, x, y, N, K, w->row_bytes, m, xvec);
        break;
    case AM_DTYPE_Q4_0:
        launch_matvec<AM_DTYPE_Q4_0>(c, wd, x, y, N, K, w->row_bytes, m, xvec);
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
        return cublas_failed(c, am__cublas.sgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N,
                                                 (int)m, (int)K, &one, (const float *)w->data,
                                                 (int)K, x, (int)K, &zero, y, (int)N));

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
    if (quant)                                   /* x as int8 blocks (dtype.h), then in f16 */
        quantize_x_kernel<__half>
            <<<stride_blocks(c, m * K / AM_QK), AM_CUDA_THREADS, 0, c->stream>>>((__half *)x16, x,
                                                                                 m * K / AM_QK);
    else if (t == CUDA_R_16BF)
        to_half_kernel<__nv_bfloat16><<<stride_blocks(c, m * K), AM_CUDA_THREADS, 0, c->stream>>>(
            (__nv_bfloat16 *)x16, x, m * K);
    else
        to_half_kernel<__half>
            <<<stride_blocks(c, m * K), AM_CUDA_THREADS, 0, c->stream>>>((__half *)x16, x, m * K);
    if (AM_CUDA_LAUNCHED(c, "matmul (convert x)")) return am_err_set(AM_EIO, "%s", c->error_msg);

    if (!quant)
        return cublas_failed(c, am__cublas.gemm_ex(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N,
                                                   (int)m, (int)K, &one, w->data, t, (int)K, x16, t,
                                                   (int)K, &zero, y, CUDA_R_32F, (int)N,
                                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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
        int rc =
            cublas_failed(c, am__cublas.gemm_ex(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows,
                                                (int)m, (int)K, &one, w16, CUDA_R_16F, (int)K, x16,
                                                CUDA_R_16F, (int)K, &zero, y + n0, CUDA_R_32F,
                                                (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        if (rc) return rc;
    }
    return 0;
}

int am__cuda_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, m <= AM_CUDA_MATVEC_MAX_ROWS ? "matmul (matvec)"
                          : m <= 128                   ? "matmul (gemm M<=128)"
                                                       : "matmul (gemm M>128)");
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

/* Block (i, j): chunk j of AM_CUDA_THREADS columns of output row i (a decode step
 * looks up one row per sequence: one block per row was one multiprocessor's work). */
template <int DT>
__global__ void get_rows_kernel(float *__restrict__ out, const uint8_t *__restrict__ w,
                                size_t row_bytes, const int32_t *__restrict__ ids, int64_t K) {
    const int64_t i = blockIdx.x, k = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (k >= K) return;
    const uint8_t *row = w + (size_t)ids[i] * row_bytes; /* (row_bytes) */
    out[i * K + k] = am__weight_at(DT, row, k);
}

void am__cuda_get_rows(am_backend *b, const am_matrix *w, const int32_t *ids, int64_t m,
                       float *out) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "get_rows");
    if (m <= 0 || c->error) return;
    const int32_t *dids = am__cuda_ints(c, ids, m, "get_rows");
    if (!dids) return;
    const uint8_t *wd = (const uint8_t *)w->data;
    const int64_t K = w->cols;
    const dim3 grid((unsigned)m, am__cuda_blocks(K, AM_CUDA_THREADS));
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
