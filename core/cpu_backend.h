/* core/cpu_backend.h - the CPU implementation of the backend vtable.
 *
 * Kernels are chosen once at creation from what the CPU supports (CPUID, with
 * XGETBV for the OS-enabled register state): "avx512" (AVX-512F/BW/VL + F16C +
 * FMA), "avx2" (AVX2 + FMA + F16C) or "generic" (portable C). The SIMD paths
 * are compiled with target attributes, so the library needs no -march flag.
 * AM_CPU_ISA=generic|avx2|avx512|auto in the environment forces a path (an
 * unsupported forced path is an error).
 *
 * Matmul (y = x W^T):
 *  - M <= 4: matrix-vector kernels, each weight row read once for all M rows,
 *    rows split over the pool. F32/F16/BF16 weights are widened to f32 exactly;
 *    Q8_0/Q4_0 weights are multiplied with the activations quantized to int8
 *    per block of 32 (scale amax/127 in f32, as llama.cpp does), exact int32
 *    block sums: the error is at most sum_b (amax_b / 254) * sum_{k in b} |W_nk|
 *    (about 1e-3 relative in practice).
 *  - M > 4: GEMM. Each pool thread runs a single-threaded library GEMM on its
 *    slice of the output columns (one set of threads, never two pools
 *    spinning against each other). F32: OpenBLAS sgemm; F16: W converted to
 *    f32 in L2-sized panels, then sgemm (exact). BF16/Q8_0/Q4_0: oneDNN bf16
 *    matmul on AMX/AVX512-BF16 where the CPU has it (x rounded to bf16, Q8_0/Q4_0
 *    panels dequantized to bf16, f32 accumulation; relative error ~2^-8),
 *    otherwise f32 panels + sgemm (exact). AM_CPU_BF16_GEMM=0 disables oneDNN.
 *
 * OpenBLAS is loaded with dlopen("libopenblas.so.0") on the first GEMM (or by
 * am_cpu_blas_setup), not linked: Debian's 0.3.21 misdetects Sapphire Rapids
 * and silently uses Prescott kernels unless OPENBLAS_CORETYPE is set before its
 * load-time constructor runs. Before loading, the backend sets
 * OPENBLAS_CORETYPE=SkylakeX (only if unset and the CPU has AVX-512) and
 * OPENBLAS_NUM_THREADS=1 (if unset), and after loading calls
 * openblas_set_num_threads(1). libopenblas0 is thus a run-time dependency;
 * AM_CPU_BLAS_LIB names another library file. Without any, GEMMs run on the
 * matrix-vector kernels (slower, same results).
 *
 * A backend must be used by one thread at a time (its pool and scratch are
 * shared by its ops).
 */
#ifndef AM_CPU_BACKEND_H
#define AM_CPU_BACKEND_H

#include "core/backend.h"

typedef struct am_cpu_features {
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512vnni, avx512bf16, avx512fp16;
    int amx_bf16, amx_int8, amx_tile; /* includes the OS permission (arch_prctl) for AMX */
} am_cpu_features;

/* CPUID (+ XGETBV for AVX/AVX-512 state, and Linux arch_prctl(ARCH_REQ_XCOMP_PERM,
 * XTILEDATA) for AMX), detected once and cached; never NULL. */
const am_cpu_features *am_cpu_get_features(void);

/* Creates a CPU backend running ops on n_threads threads (the caller plus
 * n_threads - 1 pool workers). Destroy with am_backend_destroy. Returns 0,
 * AM_EINVAL (n_threads outside 1..1024, or AM_CPU_ISA unknown/unsupported),
 * AM_ENOMEM, or a negative errno from pthread_create. */
int am_cpu_backend_new(int n_threads, am_backend **out);

/* Which arithmetic a CPU backend's matmul of an M-row x by a W of this
 * dtype uses: 1 when x is quantized to 8 bits per block (the matrix-vector
 * and small-M kernels for Q8_0/Q4_0 W, like llama.cpp's), 0 when W is
 * dequantized exactly and x stays f32 (or bf16 on the oneDNN path). Tests
 * use it to pick the error bound. */
int am_cpu_matmul_quantizes_x(const am_backend *b, am_dtype w, int64_t m);

/* Loads OpenBLAS now (setting OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS first,
 * see above) instead of on the first GEMM. Optional; idempotent and
 * thread-safe, but it calls setenv, so call it early in main() before other
 * threads read the environment. n_threads is accepted for compatibility:
 * OpenBLAS always runs single-threaded under the backend's pool. Code in
 * core/cpu/cpu_blas.c. */
void am_cpu_blas_setup(int n_threads);

#endif
