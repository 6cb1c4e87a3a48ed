/* core/cuda/cuda_backend.h - the CUDA implementation of the backend vtable.
 *
 * One backend drives one device through one CUDA stream and one cuBLAS handle.
 * Every op of core/backend.h is implemented on the device, op for op as the
 * CPU backend (core/cpu_backend.h) does it; pointers passed to ops are device
 * memory from b->ops->alloc (or, for ids of get_rows and pos of rope, host
 * memory too: those small int arrays are copied to the device when they are
 * not device pointers). seqs and block tables of kv_store/attention are host
 * memory, as backend.h says; they are packed and copied through pinned
 * staging buffers into device buffers that grow and are reused, and the copy
 * is skipped when a call repeats the previous call's seqs (kv_store followed
 * by attention of every layer of a step).
 *
 * Ordering and errors: ops are queued on the backend's stream and return at
 * once; upload copies host memory before returning (the source may be reused
 * at once); download waits for everything queued before it. The void ops
 * cannot return errors: a failure inside one (a CUDA error, scratch that
 * could not grow) is logged, kept as the backend's first error, and returned
 * as AM_EIO (message naming the op and the CUDA error) by the next download,
 * am_cuda_synchronize or sampling call.
 *
 * Matmul (y = x W^T, x and y f32):
 *  - M <= AM_CUDA_MATVEC_MAX_ROWS: a matrix-vector kernel per dtype, each
 *    weight row read once for all M rows; F16/BF16/Q8_0/Q4_0 weights are
 *    dequantized to f32 in registers and every product is summed in f32
 *    (no rounding of x).
 *  - larger M: cuBLAS. F32 weights: cublasSgemm with TF32 off (AM_CUDA_TF32=1
 *    in the environment allows it). F16/BF16: x is rounded to the weight's
 *    type in a scratch buffer and cublasGemmEx multiplies with f32
 *    accumulation (relative error ~2^-9 for bf16, ~2^-12 for f16, per
 *    product). Q8_0/Q4_0: tiles of weight rows are dequantized to f16 in
 *    scratch, then the f16 GEMM.
 *
 * cuBLAS is loaded with dlopen("libcublas.so.<major>") when the first backend
 * is created, not linked (AM_CUBLAS_LIB names another file): loading
 * libcublasLt makes ~200 MiB resident, which CPU-only processes of a CUDA
 * build (shard ranks, encoders) should not pay. libcublas is thus a run-time
 * dependency of the CUDA backend only.
 *
 * Memory: upload_matrix copies a weight matrix to the device once and the
 * backend owns the copy until destroy. Per-step work uses one scratch arena on
 * the device (grown when an op needs more, never shrunk), so a steady decode
 * loop allocates nothing.
 *
 * Profiling: with AM_CUDA_PROFILE=1 in the environment every op is timed with
 * CUDA events and a per-op table goes to stderr when the backend is destroyed
 * (core/cuda/cuda_profile.cu).
 *
 * A backend must be used by one thread at a time.
 */
#ifndef AM_CUDA_BACKEND_H
#define AM_CUDA_BACKEND_H

#include "core/backend.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of x up to which matmul runs the matrix-vector kernels. */
#define AM_CUDA_MATVEC_MAX_ROWS 8
/* Largest top_k that am_cuda_sample_topk_topp handles on the device. */
#define AM_CUDA_SAMPLE_MAX_K 1024

/* Number of CUDA devices; 0 (never an error) when there is no driver or no
 * device. Does not touch am_err_msg. */
int am_cuda_device_count(void);

/* Creates a backend on device `device` (0-based). Destroy with
 * am_backend_destroy, which frees every matrix upload_matrix made. Returns 0,
 * AM_EUNSUPPORTED ("no CUDA device" / "CUDA driver ...": no driver, no
 * device; "cannot load cuBLAS ..."), AM_EINVAL (device out of range), AM_ENOMEM, or AM_EIO (CUDA or
 * cuBLAS initialisation failed; the message names the call). */
int am_cuda_backend_new(int device, am_backend **out);

/* 1 if b was made by am_cuda_backend_new. */
int am_cuda_is_backend(const am_backend *b);

/* Waits for all work queued on b. Returns 0, or AM_EIO with the first error
 * any earlier op hit (then the backend is unusable: CUDA errors are sticky). */
int am_cuda_synchronize(am_backend *b);

/* The device's free and total memory in bytes (cudaMemGetInfo). 0 or AM_EIO. */
int am_cuda_memory(am_backend *b, size_t *free_bytes, size_t *total_bytes);

/* Device sampling over logits (M, N) in device memory, one token per row,
 * written to ids (M) in host memory; waits for the result. Same rules as
 * llm_shards/sampler.c without the repetition penalty (apply it before):
 *  - am_cuda_argmax: index of the largest logit, the lowest index on ties.
 *  - am_cuda_sample_topk_topp: temperature 0 is argmax; otherwise the top_k
 *    largest logits (ties: lower index first), p_i = expf((l_i - max) / T)
 *    normalised, the smallest prefix whose cumulative probability reaches
 *    top_p (1 = off) renormalised, and the first candidate whose cumulative
 *    probability exceeds uniform[i] (in [0, 1), e.g. from the sampler's
 *    generator). The sums run in f32 in the CPU sampler's order, so equal
 *    inputs give the CPU sampler's token. top_k must be 1..AM_CUDA_SAMPLE_MAX_K
 *    (top_k 0 = the whole vocabulary is not supported on the device: download
 *    the row and use am_sampler).
 * Return 0, AM_EINVAL (bad sizes or parameters), AM_EUNSUPPORTED (top_k),
 * AM_ENOMEM or AM_EIO. */
int am_cuda_argmax(am_backend *b, const float *logits, int64_t m, int64_t n, int32_t *ids);
int am_cuda_sample_topk_topp(am_backend *b, const float *logits, int64_t m, int64_t n,
                             float temperature, int32_t top_k, float top_p, const float *uniform,
                             int32_t *ids);

#ifdef __cplusplus
}
#endif

#endif
