/* core/cuda/cuda_internal.cuh - what the CUDA backend's .cu files share.
 *
 * The backend context (stream, cuBLAS handle, scratch arena, staging of host
 * metadata, first error), the helpers that manage it (cuda_backend.cu), and
 * the ops each .cu file implements, in am_backend_ops order. Only .cu files
 * include this header.
 */
#ifndef AM_CUDA_INTERNAL_CUH
#define AM_CUDA_INTERNAL_CUH

/* anymal's C headers carry no extern "C" of their own. */
extern "C" {
#include "core/alloc.h"
#include "core/backend.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
}
#include "core/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

/* Pinned host buffers that host metadata passes through on its way to the
 * device; a buffer is refilled only after the copy that last used it is done. */
#define AM_CUDA_STAGE_SLOTS 8
/* Threads per block of the element-wise kernels. */
#define AM_CUDA_THREADS 256
/* Smallest growth of the scratch arena and staging buffers, in bytes. */
#define AM_CUDA_MIN_GROW_BYTES (1u << 20)

/* A device buffer fed from host memory, remembering what it holds so that a
 * repeated upload of the same bytes is skipped. */
typedef struct {
    void *dev; /* device buffer, cap bytes */
    size_t cap;
    void *last; /* host copy of the bytes dev holds (last_bytes), malloc'd */
    size_t last_cap, last_bytes;
    int valid;
} am__cuda_chan;

typedef struct am__cuda_prof am__cuda_prof; /* cuda_profile.cu */

typedef struct am__cuda_ctx {
    int device;
    int n_sm; /* streaming multiprocessors */
    cudaStream_t stream;
    cublasHandle_t cublas;
    int error; /* first failure of an op (AM_EIO), 0 if none */
    char error_msg[256];

    void *scratch; /* device arena for one op at a time, scratch_cap bytes */
    size_t scratch_cap;

    void **owned; /* device copies made by upload_matrix */
    size_t n_owned, cap_owned;

    void *pinned[AM_CUDA_STAGE_SLOTS]; /* pinned host staging, pinned_cap[i] bytes */
    size_t pinned_cap[AM_CUDA_STAGE_SLOTS];
    cudaEvent_t pinned_done[AM_CUDA_STAGE_SLOTS]; /* recorded after each slot's copy */
    int next_slot;
    am__cuda_chan seqs_chan; /* attention/kv_store sequence metadata */
    am__cuda_chan ints_chan; /* host ids/pos arrays */
    int32_t *pack;           /* host buffer where seqs are packed (cuda_attention.cu) */
    size_t pack_cap;         /* its capacity in int32s */
    am__cuda_prof *prof;     /* per-op timing when AM_CUDA_PROFILE=1, else NULL */
} am__cuda_ctx;

static inline am__cuda_ctx *am__cuda_ctx_of(am_backend *b) { return (am__cuda_ctx *)b->ctx; }

/* cuBLAS, loaded with dlopen when the first CUDA backend is created (not
 * linked): libcublasLt alone makes ~200 MiB resident as it loads, which every
 * CPU-only process of a CUDA build (shard ranks, encoders) would otherwise
 * pay. The entry points the backend calls, resolved once; AM_CUBLAS_LIB in
 * the environment names another library file. */
typedef struct {
    decltype(&::cublasCreate_v2) create;
    decltype(&::cublasDestroy_v2) destroy;
    decltype(&::cublasGetStatusString) status_string;
    decltype(&::cublasSetMathMode) set_math_mode;
    decltype(&::cublasSetStream_v2) set_stream;
    decltype(&::cublasSgemm_v2) sgemm;
    /* cublasGemmEx is overloaded in C++ (a legacy cudaDataType compute type): the C one. */
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                              const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);
} am__cublas_api;
extern am__cublas_api am__cublas;
/* Loads cuBLAS (once, thread-safe). 0, or AM_EUNSUPPORTED naming the library and dlerror(). */
int am__cublas_load(void);

/* Records the first failure (logged; later download/synchronize return it). */
void am__cuda_fail(am__cuda_ctx *c, const char *op, const char *what);
/* Checks the last launch; on error records it for op. Returns 0 or AM_EIO. */
int am__cuda_check(am__cuda_ctx *c, const char *op, cudaError_t e);
#define AM_CUDA_LAUNCHED(c, op) am__cuda_check((c), (op), cudaGetLastError())

/* The scratch arena, at least `bytes` long (grown after waiting for queued
 * work); NULL after recording a failure. Valid until the next call. */
void *am__cuda_scratch(am__cuda_ctx *c, size_t bytes, const char *op);

/* Device copy of host bytes through channel ch (skipped if ch already holds
 * the same bytes); NULL after recording a failure. */
const void *am__cuda_stage(am__cuda_ctx *c, am__cuda_chan *ch, const void *host, size_t bytes,
                           const char *op);

/* p itself when it is device (or managed) memory, else a device copy of its n ints. */
const int32_t *am__cuda_ints(am__cuda_ctx *c, const int32_t *p, int64_t n, const char *op);

/* Blocks of `threads` covering n items, at least 1. */
static inline unsigned am__cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 0 ? b : 1);
}

/* ---- per-op timing (cuda_profile.cu; AM_CUDA_PROFILE=1) ---- */

/* Sets c->prof when AM_CUDA_PROFILE=1 (0, or AM_ENOMEM / AM_EIO). */
int am__cuda_prof_new(am__cuda_ctx *c);
/* Prints the table (stderr) and frees c->prof; accepts c->prof == NULL. */
void am__cuda_prof_free(am__cuda_ctx *c);
/* Adds up the finished ops' times; call where the host waits for the device anyway. */
void am__cuda_prof_harvest(am__cuda_ctx *c);
typedef struct {
    int pair;      /* its event pair, -1 inside another op's scope */
    int64_t t0_us; /* host clock at entry */
} am__cuda_prof_scope;
void am__cuda_prof_enter(am__cuda_ctx *c, am__cuda_prof_scope *s, const char *op);
void am__cuda_prof_exit(am__cuda_ctx *c, am__cuda_prof_scope *s, const char *op);

/* Times the rest of the enclosing block as op `op` when profiling is on. */
struct am__cuda_prof_guard {
    am__cuda_ctx *c;
    const char *op;
    am__cuda_prof_scope s;
    am__cuda_prof_guard(am__cuda_ctx *ctx, const char *name)
        : c(ctx->prof ? ctx : nullptr), op(name), s() {
        if (c) am__cuda_prof_enter(c, &s, op);
    }
    ~am__cuda_prof_guard() {
        if (c) am__cuda_prof_exit(c, &s, op);
    }
    am__cuda_prof_guard(const am__cuda_prof_guard &) = delete;
    am__cuda_prof_guard &operator=(const am__cuda_prof_guard &) = delete;
};
#define AM_CUDA_PROFILE_OP(c, op) am__cuda_prof_guard am__prof_guard_((c), (op))

/* ---- ops (am_backend_ops order) ---- */

/* cuda_matmul.cu */
int am__cuda_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m);
void am__cuda_get_rows(am_backend *b, const am_matrix *w, const int32_t *ids, int64_t m,
                       float *out);

/* cuda_ops.cu */
void am__cuda_rmsnorm(am_backend *b, float *out, const float *x, const float *weight, int64_t m,
                      int64_t k, float eps);
void am__cuda_rope(am_backend *b, float *x, const int32_t *pos, int64_t m, int n_heads,
                   int head_dim, float theta, am_rope_layout layout);
void am__cuda_softmax(am_backend *b, float *x, int64_t m, int64_t n);
void am__cuda_silu_mul(am_backend *b, float *gate, const float *up, int64_t n);
void am__cuda_add(am_backend *b, float *y, const float *x, int64_t n);

/* cuda_attention.cu */
void am__cuda_kv_store(am_backend *b, const am_kv_pages *pages, const float *k_new,
                       const float *v_new, const am_attn_seq *seqs, int n_seqs);
void am__cuda_attention(am_backend *b, float *out, const float *q, const am_kv_pages *pages,
                        const am_attn_seq *seqs, int n_seqs, int n_heads, int n_kv_heads,
                        int head_dim);

/* cuda_nn.cu */
void am__cuda_copy(am_backend *b, void *dst, const void *src, size_t bytes);
void am__cuda_layernorm(am_backend *b, float *out, const float *x, const float *w,
                        const float *bias, int64_t m, int64_t c, float eps);
void am__cuda_bias_act(am_backend *b, float *y, const float *bias, int64_t m, int64_t n,
                       am_act act);
void am__cuda_add_bias(am_backend *b, float *x, const float *y, const float *bias, int64_t m,
                       int64_t n);
int am__cuda_attention_dense(am_backend *b, float *out, const float *q, const float *k,
                             const float *v, const am_dense_attn *a);
int am__cuda_attention_short(am_backend *b, float *out, const float *q, const float *k,
                             const float *v, const am_dense_attn *a);
void am__cuda_gather_rows(am_backend *b, float *dst, const float *src, const int32_t *idx,
                          int64_t period, int64_t m, int64_t c);
void am__cuda_scatter_add(am_backend *b, float *x, const float *y, const float *bias,
                          const int32_t *idx, int64_t period, int64_t m, int64_t c);
void am__cuda_groupnorm(am_backend *b, float *out, const float *x, const float *w,
                        const float *bias, int64_t nb, int64_t t, int64_t c, int groups, float eps);
void am__cuda_im2col_1d(am_backend *b, float *cols, const float *x, int64_t nb, int64_t t,
                        int64_t c, int k, int dil);
void am__cuda_maxpool_time(am_backend *b, float *out, const float *x, int64_t nb, int64_t t,
                           int64_t c, int p);
void am__cuda_mean_rows(am_backend *b, float *out, const float *x, int64_t nb, int64_t t,
                        int64_t c);
void am__cuda_transpose(am_backend *b, float *dst, const float *src, int64_t nb, int64_t t,
                        int64_t c);
void am__cuda_gru_gates(am_backend *b, float *h, const float *gi, int64_t gi_stride,
                        const float *gh, int64_t rows, int64_t hidden);

/* ---- device helpers ---- */

/* Sum over the 32 lanes of a warp; every lane gets the result. */
__device__ __forceinline__ float am__warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float am__warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of blockDim.x threads (a multiple of 32, at most 1024);
 * every thread gets the result. red: 32 floats of shared memory. */
__device__ __forceinline__ float am__block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = am__warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < n_warps ? red[lane] : 0.0f;
    return am__warp_sum(v);
}
__device__ __forceinline__ float am__block_max(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = am__warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < n_warps ? red[lane] : -INFINITY;
    return am__warp_max(v);
}

/* Weight element decoding (core/dtype.h layouts). */
__device__ __forceinline__ float am__f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float am__bf16(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* Element k of row `row` of a weight matrix (any supported dtype), as f32. */
__device__ __forceinline__ float am__weight_at(int dtype, const uint8_t *row, int64_t k) {
    switch (dtype) {
    case AM_DTYPE_F32: return ((const float *)row)[k];
    case AM_DTYPE_F16: return am__f16(((const uint16_t *)row)[k]);
    case AM_DTYPE_BF16: return am__bf16(((const uint16_t *)row)[k]);
    case AM_DTYPE_Q8_0: {
        const am_block_q8_0 *bl = (const am_block_q8_0 *)row + k / AM_QK;
        return am__f16(bl->d) * (float)bl->qs[k % AM_QK];
    }
    case AM_DTYPE_Q4_0: {
        const am_block_q4_0 *bl = (const am_block_q4_0 *)row + k / AM_QK;
        const int j = (int)(k % AM_QK);
        const int q = j < AM_QK / 2 ? (bl->qs[j] & 15) : (bl->qs[j - AM_QK / 2] >> 4);
        return am__f16(bl->d) * (float)(q - 8);
    }
    default: return 0.0f;
    }
}

#endif
