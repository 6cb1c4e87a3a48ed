/* core/cpu/cpu_dnnl.c - bf16 GEMMs through oneDNN (AMX / AVX512-BF16).
 *
 * Used for BF16 weights when M > AM__MATVEC_MAX_M in precision mode bf16 on
 * CPUs with AVX512-BF16 or AMX-BF16 (ISA level avx512 or amx): activations
 * are rounded to bf16 (as on every BF16 path of that mode, dtype.h), products
 * are accumulated in f32 and written as f32. In precision f32 on AMX, x goes in
 * as three bf16 terms whose sum is x exactly (cpu_matmul.c, "terms"). On other CPUs oneDNN 2.6 has
 * no bf16 matmul (primitive creation reports "unimplemented"), and the backend uses the exact f32
 * path instead.
 *
 * Threading: like OpenBLAS, oneDNN is called from every worker of our pool on
 * that worker's column slice, with the OpenMP thread count of the calling
 * thread set to 1 around creation and execution (oneDNN's parallel() then runs
 * inline and no OpenMP team is ever started). So no OpenMP threads spin
 * against our pool. omp_set_num_threads is found with dlsym because libgomp
 * is only an indirect dependency (through libdnnl).
 *
 * Each pool thread owns an am__dnnl_thread: a stream (streams are not
 * thread-safe), a small cache of primitives keyed by shape (creating one costs
 * tens of microseconds), and its own scratchpad and output buffers (user
 * scratchpad mode, so concurrent threads never share oneDNN's).
 */
#include "core/cpu/cpu_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Primitives kept per thread: one per distinct weight shape of a layer. */
#define AM_DNNL_CACHE_ENTRIES 16

typedef struct {
    int64_t m, n, k, ldw; /* key; m == 0 marks a free entry */
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst, scratch;
    size_t scratch_bytes;
    uint64_t last_use;
} dnnl_entry;

struct am__dnnl_thread {
    dnnl_stream_t stream;
    dnnl_entry cache[AM_DNNL_CACHE_ENTRIES];
    uint64_t tick;
    void *scratch; /* oneDNN scratchpad, grown as needed */
    size_t scratch_cap;
    float *out; /* (m, n) dense output, copied into the strided y */
    size_t out_cap;
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t g_engine;
static int g_probe_ok;
static void (*g_omp_set_num_threads)(int);
static int (*g_omp_get_max_threads)(void);

/* Runs oneDNN in the calling thread only; returns the previous OpenMP setting. */
static int omp_single_begin(void) {
    int prev = g_omp_get_max_threads();
    g_omp_set_num_threads(1);
    return prev;
}
static void omp_single_end(int prev) { g_omp_set_num_threads(prev); }

static void entry_free(dnnl_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->src) dnnl_memory_destroy(e->src);
    if (e->wei) dnnl_memory_destroy(e->wei);
    if (e->dst) dnnl_memory_destroy(e->dst);
    if (e->scratch) dnnl_memory_destroy(e->scratch);
    memset(e, 0, sizeof *e);
}

/* Builds the primitive for y (m, n) = x (m, k) . w^T, w rows ldw apart. The
 * caller has set OpenMP to one thread. Returns 0 or AM_EUNSUPPORTED. */
static int entry_init(dnnl_entry *e, int64_t m, int64_t n, int64_t k, int64_t ldw) {
    dnnl_memory_desc_t src_md, wei_md, dst_md;
    dnnl_dims_t src_dims = {m, k}, src_strides = {k, 1};
    dnnl_dims_t wei_dims = {k, n}, wei_strides = {1, ldw}; /* W (n, k) row-major is W^T (k, n) */
    dnnl_dims_t dst_dims = {m, n}, dst_strides = {n, 1};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok =
        dnnl_memory_desc_init_by_strides(&src_md, 2, src_dims, dnnl_bf16, src_strides) ==
            dnnl_success &&
        dnnl_memory_desc_init_by_strides(&wei_md, 2, wei_dims, dnnl_bf16, wei_strides) ==
            dnnl_success &&
        dnnl_memory_desc_init_by_strides(&dst_md, 2, dst_dims, dnnl_f32, dst_strides) ==
            dnnl_success &&
        dnnl_matmul_desc_init(&desc, &src_md, &wei_md, NULL, &dst_md) == dnnl_success &&
        dnnl_primitive_attr_create(&attr) == dnnl_success &&
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &desc, attr, g_engine, NULL) == dnnl_success;
    if (ok) {
        /* The reference implementation is hundreds of times slower than f32 BLAS. */
        const char *impl = NULL;
        ok = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
             impl && !strstr(impl, "ref");
    }
    const dnnl_memory_desc_t *scratch_md = NULL;
    if (ok) {
        scratch_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        ok =
            scratch_md != NULL && dnnl_primitive_create(&e->prim, pd) == dnnl_success &&
            dnnl_memory_create(&e->src, &src_md, g_engine, DNNL_MEMORY_NONE) == dnnl_success &&
            dnnl_memory_create(&e->wei, &wei_md, g_engine, DNNL_MEMORY_NONE) == dnnl_success &&
            dnnl_memory_create(&e->dst, &dst_md, g_engine, DNNL_MEMORY_NONE) == dnnl_success &&
            dnnl_memory_create(&e->scratch, scratch_md, g_engine, DNNL_MEMORY_NONE) == dnnl_success;
    }
    if (ok) e->scratch_bytes = dnnl_memory_desc_get_size(scratch_md);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        entry_free(e);
        return AM_EUNSUPPORTED;
    }
    e->m = m, e->n = n, e->k = k, e->ldw = ldw;
    return 0;
}

static void probe_once(void) {
    const am_cpu_features *f = am_cpu_get_features();
    am_cpu_isa level;
    if (am_cpu_isa_active(&level) != 0 || level < AM_CPU_ISA_AVX512) return;
    if (!f->avx512bf16 && !f->amx_bf16) return;
    /* The avx512 level keeps oneDNN off the AMX tiles (its AVX512-BF16 kernels). */
    if (level == AM_CPU_ISA_AVX512 &&
        dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx512_core_bf16) != dnnl_success)
        return;
    g_omp_set_num_threads = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    g_omp_get_max_threads = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    if (!g_omp_set_num_threads || !g_omp_get_max_threads) {
        AM_LOGW("cpu backend: OpenMP entry points not found; bf16 GEMMs use the f32 path");
        return;
    }
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) return;
    dnnl_entry e;
    memset(&e, 0, sizeof e);
    int prev = omp_single_begin();
    int rc = entry_init(&e, 32, 64, 256, 256);
    omp_single_end(prev);
    entry_free(&e);
    g_probe_ok = rc == 0;
    if (!g_probe_ok) AM_LOGI("cpu backend: oneDNN has no fast bf16 matmul here; using f32 GEMMs");
}

int am__dnnl_bf16_available(void) {
    const char *env = getenv("AM_CPU_BF16_GEMM");
    if (env && strcmp(env, "0") == 0) return 0;
    pthread_once(&g_once, probe_once);
    return g_probe_ok;
}

int am__dnnl_thread_new(am__dnnl_thread **out) {
    *out = NULL;
    if (!am__dnnl_bf16_available()) return AM_EUNSUPPORTED;
    am__dnnl_thread *t = am_calloc(1, sizeof *t);
    if (!t) return AM_ENOMEM;
    if (dnnl_stream_create(&t->stream, g_engine, dnnl_stream_default_flags) != dnnl_success) {
        am_free(t);
        return AM_EUNSUPPORTED;
    }
    *out = t;
    return 0;
}

void am__dnnl_thread_destroy(am__dnnl_thread **p) {
    if (!p || !*p) return;
    am__dnnl_thread *t = *p;
    for (int i = 0; i < AM_DNNL_CACHE_ENTRIES; i++)
        entry_free(&t->cache[i]);
    if (t->stream) dnnl_stream_destroy(t->stream);
    am_aligned_free(t->scratch);
    am_aligned_free(t->out);
    am_free(t);
    *p = NULL;
}

/* The cached primitive for this shape, creating it (evicting the least recently used). */
static dnnl_entry *lookup(am__dnnl_thread *t, int64_t m, int64_t n, int64_t k, int64_t ldw) {
    dnnl_entry *victim = &t->cache[0];
    for (int i = 0; i < AM_DNNL_CACHE_ENTRIES; i++) {
        dnnl_entry *e = &t->cache[i];
        if (e->m == m && e->n == n && e->k == k && e->ldw == ldw) {
            e->last_use = ++t->tick;
            return e;
        }
        if (e->last_use < victim->last_use) victim = e;
    }
    entry_free(victim);
    if (entry_init(victim, m, n, k, ldw) != 0) return NULL;
    victim->last_use = ++t->tick;
    return victim;
}

int am__dnnl_matmul_bf16(am__dnnl_thread *t, int64_t m, int64_t n, int64_t k, const uint16_t *x,
                         const uint16_t *w, int64_t ldw, float *y, int64_t ldy, int terms) {
    int prev = omp_single_begin();
    int rc = AM_EUNSUPPORTED;
    const int64_t mt = m * terms; /* rows of x as oneDNN sees it */
    dnnl_entry *e = lookup(t, mt, n, k, ldw);
    if (!e) goto out;
    rc = am_aligned_reserve(&t->scratch, &t->scratch_cap, e->scratch_bytes ? e->scratch_bytes : 1);
    if (rc == 0)
        rc = am_aligned_reserve((void **)&t->out, &t->out_cap,
                                (size_t)mt * (size_t)n * sizeof(float));
    if (rc != 0) goto out;
    rc = AM_EUNSUPPORTED;
    /* oneDNN never writes src or weights; its API just has no const handles. */
    if (dnnl_memory_set_data_handle(e->src, (void *)x) != dnnl_success ||
        dnnl_memory_set_data_handle(e->wei, (void *)w) != dnnl_success ||
        dnnl_memory_set_data_handle(e->dst, t->out) != dnnl_success ||
        dnnl_memory_set_data_handle(e->scratch, t->scratch) != dnnl_success)
        goto out;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e->src},
                              {DNNL_ARG_WEIGHTS, e->wei},
                              {DNNL_ARG_DST, e->dst},
                              {DNNL_ARG_SCRATCHPAD, e->scratch}};
    if (dnnl_primitive_execute(e->prim, t->stream, 4, args) != dnnl_success ||
        dnnl_stream_wait(t->stream) != dnnl_success)
        goto out;
    if (terms == 1)
        for (int64_t i = 0; i < m; i++)
            memcpy(y + i * ldy, t->out + i * n, (size_t)n * sizeof(float));
    else /* row i = the sum of its terms, in order: ((t0 + t1) + t2) */
        for (int64_t i = 0; i < m; i++)
            for (int64_t c = 0; c < n; c++) {
                float acc = t->out[i * n + c];
                for (int tt = 1; tt < terms; tt++)
                    acc += t->out[(tt * m + i) * n + c];
                y[i * ldy + c] = acc;
            }
    rc = 0;
out:
    omp_single_end(prev);
    return rc;
}
