/* core/cpu_backend.h - the CPU implementation of the backend vtable.
 *
 * Kernels are chosen once at creation from the instruction-set level (see
 * am_cpu_isa below): the best the CPU supports (CPUID, with XGETBV for the
 * OS-enabled register state), or a lower one set as a cap with AM_CPU_ISA.
 * The SIMD paths are compiled with target attributes, so the library needs no
 * -march flag.
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
 *    f32 in L2-sized panels, then sgemm (exact). BF16: like F16, or in
 *    precision mode bf16 oneDNN's bf16 matmul on AMX/AVX512-BF16 where the
 *    level allows it. Q8_0/Q4_0: the int8 kernels, tiled for the caches.
 *    AM_CPU_BF16_GEMM=0 disables oneDNN.
 *  - Whatever the path, the arithmetic is the one W's dtype and the precision
 *    mode fix (am_matmul_x_precision in dtype.h): AM_CPU_PRECISION=f32 (the
 *    default) keeps x in f32 for F32/F16/BF16 W; AM_CPU_PRECISION=bf16 rounds
 *    x to bf16 for BF16 W at every M (the AMX speed); Q8_0/Q4_0 W always
 *    multiplies x quantized per block to int8. Paths differ only in the order
 *    of f32 sums (docs/numerics.md).
 *
 * OpenBLAS is loaded with dlopen("libopenblas.so.0") on the first GEMM (or by
 * am_cpu_blas_setup), not linked: Debian's 0.3.21 misdetects Sapphire Rapids
 * and silently uses Prescott kernels unless OPENBLAS_CORETYPE is set before its
 * load-time constructor runs. Before loading, the backend sets
 * OPENBLAS_CORETYPE to the core of the ISA level (SkylakeX for avx512/amx,
 * Haswell for avx2, Nehalem for generic; only if unset) and
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
 * AM_EINVAL (n_threads outside 1..1024, AM_CPU_ISA not a level name, or
 * AM_CPU_PRECISION not f32 or bf16),
 * AM_ENOMEM, or a negative errno from pthread_create. */
int am_cpu_backend_new(int n_threads, am_backend **out);

/* Instruction-set levels, each including the ones before it:
 *   generic  portable C kernels; BF16 GEMMs on f32 panels; OpenBLAS core Nehalem;
 *   avx2     AVX2/FMA/F16C kernels; OpenBLAS core Haswell;
 *   avx512   AVX-512 F/BW/VL kernels; OpenBLAS core SkylakeX; oneDNN bf16
 *            matmul on AVX512-BF16 where the CPU has it (oneDNN capped below AMX);
 *   amx      the avx512 kernels, with oneDNN free to use AMX tiles.
 * AM_CPU_ISA=generic|avx2|avx512|amx|auto caps the level: a cap above what the
 * CPU has is clamped to it (the test command runs the suite at every level
 * the machine has: `anymal cpu --levels`). oneDNN's own cap and OpenBLAS's
 * core type are process-wide: they follow the level in force when each
 * library is first used. */
typedef enum {
    AM_CPU_ISA_GENERIC = 0,
    AM_CPU_ISA_AVX2,
    AM_CPU_ISA_AVX512,
    AM_CPU_ISA_AMX,
    AM_CPU_ISA_COUNT
} am_cpu_isa;

/* "generic", "avx2", "avx512", "amx". */
const char *am_cpu_isa_name(am_cpu_isa level);
/* A level's name (case-insensitive) -> *out; AM_EINVAL (no message) otherwise. */
int am_cpu_isa_parse(const char *name, am_cpu_isa *out);
/* The highest level this CPU and OS support. */
am_cpu_isa am_cpu_isa_best(void);
/* The level in force: AM_CPU_ISA (unset, empty or "auto": the best) clamped to
 * am_cpu_isa_best(). Returns 0, or AM_EINVAL naming an unknown AM_CPU_ISA. */
int am_cpu_isa_active(am_cpu_isa *out);

/* Loads OpenBLAS now (setting OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS first,
 * see above) instead of on the first GEMM. Optional; idempotent and
 * thread-safe, but it calls setenv, so call it early in main() before other
 * threads read the environment. n_threads is accepted for compatibility:
 * OpenBLAS always runs single-threaded under the backend's pool. Code in
 * core/cpu/cpu_blas.c. */
void am_cpu_blas_setup(int n_threads);

#endif
