/* core/cpu_backend.h - the CPU implementation of the backend vtable.
 *
 * Kernels are chosen once at creation from what the CPU supports (CPUID):
 * "avx512" (AVX-512F/BW/VL + F16C, with AVX512-BF16 and AMX where present) or
 * "generic" (portable C the compiler vectorizes). AM_CPU_ISA=generic|avx512 in
 * the environment forces a path (an unsupported forced path is an error).
 *
 * GEMMs (matmul with M > 1) go to a real BLAS / oneDNN. Debian's OpenBLAS
 * misdetects Sapphire Rapids and falls back to slow Prescott kernels unless
 * OPENBLAS_CORETYPE is set before the library initialises; see
 * am_cpu_blas_setup().
 */
#ifndef AM_CPU_BACKEND_H
#define AM_CPU_BACKEND_H

#include "core/backend.h"

typedef struct am_cpu_features {
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512vnni, avx512bf16, avx512fp16;
    int amx_bf16, amx_int8, amx_tile; /* includes the OS permission (arch_prctl) for AMX */
} am_cpu_features;

/* CPUID (+ XGETBV/arch_prctl for AVX-512 and AMX state), cached. */
const am_cpu_features *am_cpu_get_features(void);

/* n_threads >= 1. Returns 0, AM_EINVAL (bad thread count or AM_CPU_ISA), AM_ENOMEM. */
int am_cpu_backend_new(int n_threads, am_backend **out);

/* Must run before the BLAS library initialises for its settings to take
 * effect: called by the `anymal` main() and tests; see core/cpu_blas.c. */
void am_cpu_blas_setup(int n_threads);

#endif
