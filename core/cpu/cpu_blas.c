/* core/cpu/cpu_blas.c - OpenBLAS, loaded at run time with dlopen.
 *
 * Why dlopen: OpenBLAS picks its kernels in a load-time constructor, and
 * Debian's 0.3.21 misdetects Sapphire Rapids and falls back to Prescott
 * kernels (~4x slower) unless OPENBLAS_CORETYPE is in the environment by then.
 * A build-time link runs that constructor before main(), so the variable would
 * have to be set outside every program. Loading the library on the first GEMM
 * lets us set it first, for every user of am_cpu. libopenblas0 (from
 * libopenblas-dev) is therefore a run-time dependency, not a link one.
 *
 * Threads: the backend's pool splits each GEMM over output columns and every
 * worker calls sgemm on its slice, so OpenBLAS runs single-threaded
 * (OPENBLAS_NUM_THREADS=1 before loading, openblas_set_num_threads(1) after).
 * That keeps exactly one set of threads on the cores: OpenBLAS's own workers
 * would otherwise spin after each call against our pool's.
 */
#include "core/cpu/cpu_internal.h"

#include "core/error.h"
#include "core/log.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

/* cblas enum values (cblas.h), passed as int: same ABI. */
#define AM_CBLAS_ROW_MAJOR 101
#define AM_CBLAS_NO_TRANS  111
#define AM_CBLAS_TRANS     112

typedef void (*cblas_sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k,
                               float alpha, const float *a, int lda, const float *b, int ldb,
                               float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int n);

static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
static cblas_sgemm_fn g_sgemm;

static void blas_load_once(void) {
    /* The core of the ISA level (cpu_backend.h): below the CPU's best (a cap),
     * and at AVX-512, which Debian's build misdetects; otherwise OpenBLAS's own
     * choice. setenv(.., 0) keeps a value the user chose. */
    static const char *const cores[AM_CPU_ISA_COUNT] = {"Nehalem", "Haswell", "SkylakeX",
                                                        "SkylakeX"};
    am_cpu_isa level;
    if (am_cpu_isa_active(&level) != 0) level = am_cpu_isa_best();
    if (level < am_cpu_isa_best() || level >= AM_CPU_ISA_AVX512)
        setenv("OPENBLAS_CORETYPE", cores[level], 0);
    setenv("OPENBLAS_NUM_THREADS", "1", 0);

    const char *names[] = {getenv("AM_CPU_BLAS_LIB"), "libopenblas.so.0", "libopenblas.so"};
    void *h = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
        if (names[i] && names[i][0]) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        AM_LOGW("cpu backend: cannot load OpenBLAS (%s); GEMMs fall back to the built-in "
                "kernels (install libopenblas0 or set AM_CPU_BLAS_LIB)",
                dlerror());
        return;
    }
    cblas_sgemm_fn sgemm = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    set_threads_fn set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
    if (!sgemm) {
        AM_LOGW("cpu backend: the BLAS library has no cblas_sgemm; GEMMs use built-in kernels");
        dlclose(h);
        return;
    }
    if (set_threads) set_threads(1);
    g_sgemm = sgemm; /* the handle stays open for the life of the process */
}

int am__blas_load(void) {
    pthread_once(&g_blas_once, blas_load_once);
    return g_sgemm ? 0 : AM_EUNSUPPORTED;
}

void am_cpu_blas_setup(int n_threads) {
    (void)n_threads; /* OpenBLAS runs single-threaded under our pool (see above) */
    am__blas_load();
}

void am__sgemm_xwt(int64_t m, int64_t n, int64_t k, const float *x, int64_t ldx, const float *w,
                   int64_t ldw, float *y, int64_t ldy) {
    AM_ASSERT(g_sgemm && m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && ldx <= INT_MAX &&
              ldw <= INT_MAX && ldy <= INT_MAX);
    g_sgemm(AM_CBLAS_ROW_MAJOR, AM_CBLAS_NO_TRANS, AM_CBLAS_TRANS, (int)m, (int)n, (int)k, 1.0f, x,
            (int)ldx, w, (int)ldw, 0.0f, y, (int)ldy);
}
