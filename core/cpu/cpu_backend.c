/* core/cpu/cpu_backend.c - the CPU backend: kernel selection and the ops.
 *
 * At creation the backend picks one kernel table (avx512 > avx2 > generic,
 * or what AM_CPU_ISA forces) and starts a pool of n_threads - 1 workers.
 * Matmul lives in cpu_matmul.c. The other ops are light: they run on the
 * calling thread unless their work is large enough (AM_CPU_PAR_MIN_WORK) that
 * splitting it beats the cost of waking the workers. Attention splits over
 * (query row, head) pairs and uses an online softmax over chunks of keys, so
 * it needs no scratch proportional to the context length.
 */
#include "core/cpu_backend.h"

#include "core/alloc.h"
#include "core/cpu/cpu_internal.h"
#include "core/error.h"
#include "core/log.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Elements (or multiply-adds, for attention) below which an op stays on one thread. */
#define AM_CPU_PAR_MIN_WORK (1 << 16)
/* Keys scored at once by attention's online softmax (floats on the stack). */
#define AM_CPU_ATTN_CHUNK 256
/* A sanity bound on n_threads. */
#define AM_CPU_MAX_THREADS 1024

typedef struct {
    am_backend base;
    am__cpu_ctx ctx;
    char name[32];
} cpu_backend;

/* ---- parallel-for over a range ---- */

typedef void (*range_fn)(void *arg, int64_t begin, int64_t end);

typedef struct {
    range_fn fn;
    void *arg;
    int64_t n, align;
} range_job;

static void range_task(void *p, int ith, int nth) {
    range_job *r = p;
    int64_t b, e;
    am_split_range(r->n, r->align, ith, nth, &b, &e);
    if (b < e) r->fn(r->arg, b, e);
}

/* Runs fn over [0, n) split into aligned chunks, threaded only if work is large. */
static void par_for(am_backend *b, int64_t n, int64_t align, int64_t work, range_fn fn, void *arg) {
    am__cpu_ctx *c = b->ctx;
    if (b->n_threads == 1 || work < AM_CPU_PAR_MIN_WORK || n <= align) {
        if (n > 0) fn(arg, 0, n);
        return;
    }
    range_job r = {fn, arg, n, align};
    am_threadpool_run(c->pool, range_task, &r);
}

/* ---- ops ---- */

static int cpu_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m) {
    return am__cpu_matmul(b, w, x, y, m);
}

static void cpu_get_rows(am_backend *b, const am_matrix *w, const int32_t *ids, int64_t m,
                         float *out) {
    am__cpu_ctx *c = b->ctx;
    for (int64_t i = 0; i < m; i++)
        c->k->to_f32(w->dtype, (const char *)w->data + (size_t)ids[i] * w->row_bytes,
                     out + i * w->cols, w->cols);
}

typedef struct {
    const am__cpu_kernels *k;
    float *out;
    const float *x, *weight;
    int64_t k_dim;
    float eps;
} rmsnorm_job;

static void rmsnorm_rows(void *p, int64_t i0, int64_t i1) {
    rmsnorm_job *j = p;
    for (int64_t i = i0; i < i1; i++)
        j->k->rmsnorm(j->out + i * j->k_dim, j->x + i * j->k_dim, j->weight, j->k_dim, j->eps);
}

static void cpu_rmsnorm(am_backend *b, float *out, const float *x, const float *weight, int64_t m,
                        int64_t k, float eps) {
    am__cpu_ctx *c = b->ctx;
    rmsnorm_job j = {c->k, out, x, weight, k, eps};
    par_for(b, m, 1, m * k, rmsnorm_rows, &j);
}

typedef struct {
    float *x; /* (M, H, D) */
    const int32_t *pos;
    int n_heads, head_dim;
    float theta;
    am_rope_layout layout;
} rope_job;

static void rope_rows(void *p, int64_t i0, int64_t i1) {
    rope_job *j = p;
    const int H = j->n_heads, D = j->head_dim, half = D / 2;
    for (int64_t i = i0; i < i1; i++) {
        float *xi = j->x + i * H * D; /* (H, D) */
        for (int f = 0; f < half; f++) {
            /* Same formula as am_ref_rope: the angle in double, then the
             * rotation in f32; cos/sin once per (row, frequency) for all heads. */
            double angle = (double)j->pos[i] * pow((double)j->theta, -2.0 * f / D);
            const float cs = (float)cos(angle), sn = (float)sin(angle);
            const int a = j->layout == AM_ROPE_ADJACENT ? 2 * f : f;
            const int bb = j->layout == AM_ROPE_ADJACENT ? 2 * f + 1 : f + half;
            for (int h = 0; h < H; h++) {
                float *xh = xi + h * D; /* (D) */
                float x0 = xh[a], x1 = xh[bb];
                xh[a] = x0 * cs - x1 * sn;
                xh[bb] = x0 * sn + x1 * cs;
            }
        }
    }
}

static void cpu_rope(am_backend *b, float *x, const int32_t *pos, int64_t m, int n_heads,
                     int head_dim, float theta, am_rope_layout layout) {
    rope_job j = {x, pos, n_heads, head_dim, theta, layout};
    /* sincos in double dominates: weigh it as ~16 elementwise operations. */
    par_for(b, m, 1, m * (head_dim / 2) * (16 + n_heads), rope_rows, &j);
}

typedef struct {
    const am__cpu_kernels *k;
    float *out;                   /* (M, H, D) */
    const float *q;               /* (M, H, D) */
    const float *k_cache, *v_cache; /* (T, Hkv, D), rows kv_stride floats apart */
    int64_t pos0, kv_stride;
    int n_heads, n_kv_heads, head_dim;
} attn_job;

/* Items are (query row i, head h) pairs, i-major so that threads share K/V rows in cache. */
static void attn_items(void *p, int64_t it0, int64_t it1) {
    attn_job *j = p;
    const am__cpu_kernels *k = j->k;
    const int H = j->n_heads, D = j->head_dim, group = j->n_heads / j->n_kv_heads;
    const float scale = (float)(1.0 / sqrt((double)D));
    float s[AM_CPU_ATTN_CHUNK]; /* scores, then weights, of one chunk of keys */
    for (int64_t it = it0; it < it1; it++) {
        const int64_t i = it / H;
        const int h = (int)(it % H), kvh = h / group;
        const float *qh = j->q + (i * H + h) * D; /* (D) */
        float *oh = j->out + (i * H + h) * D;     /* (D), the running weighted sum of V */
        const int64_t n_keys = j->pos0 + i + 1;  /* causal: keys 0 .. pos0 + i */
        float mx = -INFINITY, sum = 0.0f;
        memset(oh, 0, (size_t)D * sizeof(float));
        for (int64_t t0 = 0; t0 < n_keys; t0 += AM_CPU_ATTN_CHUNK) {
            const int nt = (int)(n_keys - t0 < AM_CPU_ATTN_CHUNK ? n_keys - t0 : AM_CPU_ATTN_CHUNK);
            for (int t = 0; t < nt; t++)
                s[t] = scale * k->dot(qh, j->k_cache + (t0 + t) * j->kv_stride + kvh * D, D);
            /* Online softmax: rescale what was accumulated under the old maximum. */
            float cmx = k->max(s, nt);
            if (cmx > mx) {
                float corr = mx == -INFINITY ? 0.0f : expf(mx - cmx);
                k->scale(oh, corr, D);
                sum *= corr;
                mx = cmx;
            }
            sum += k->exp_sum(s, mx, nt);
            for (int t = 0; t < nt; t++)
                k->axpy(oh, s[t], j->v_cache + (t0 + t) * j->kv_stride + kvh * D, D);
        }
        k->scale(oh, 1.0f / sum, D);
    }
}

static void cpu_attention(am_backend *b, float *out, const float *q, const float *k_cache,
                          const float *v_cache, int64_t m, int64_t pos0, int n_heads,
                          int n_kv_heads, int head_dim, int64_t kv_stride) {
    am__cpu_ctx *c = b->ctx;
    AM_ASSERT(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
    attn_job j = {c->k, out, q, k_cache, v_cache, pos0, kv_stride, n_heads, n_kv_heads, head_dim};
    /* Work: 2 * D multiply-adds per (query, head, key); keys average pos0 + m/2. */
    int64_t work = m * n_heads * (pos0 + m / 2 + 1) * 2 * head_dim;
    par_for(b, m * n_heads, 1, work, attn_items, &j);
}

typedef struct {
    const am__cpu_kernels *k;
    float *x; /* (M, N) */
    int64_t n;
} softmax_job;

static void softmax_rows(void *p, int64_t i0, int64_t i1) {
    softmax_job *j = p;
    for (int64_t i = i0; i < i1; i++) {
        float *xi = j->x + i * j->n; /* (N) */
        float sum = j->k->exp_sum(xi, j->k->max(xi, j->n), j->n);
        j->k->scale(xi, 1.0f / sum, j->n);
    }
}

static void cpu_softmax(am_backend *b, float *x, int64_t m, int64_t n) {
    am__cpu_ctx *c = b->ctx;
    if (n <= 0) return;
    softmax_job j = {c->k, x, n};
    par_for(b, m, 1, m * n * 8, softmax_rows, &j);
}

typedef struct {
    const am__cpu_kernels *k;
    float *y;
    const float *x;
} binary_job;

static void silu_mul_range(void *p, int64_t i0, int64_t i1) {
    binary_job *j = p;
    j->k->silu_mul(j->y + i0, j->x + i0, i1 - i0);
}

static void add_range(void *p, int64_t i0, int64_t i1) {
    binary_job *j = p;
    j->k->add(j->y + i0, j->x + i0, i1 - i0);
}

static void cpu_silu_mul(am_backend *b, float *gate, const float *up, int64_t n) {
    am__cpu_ctx *c = b->ctx;
    binary_job j = {c->k, gate, up};
    par_for(b, n, 64, n * 4, silu_mul_range, &j);
}

static void cpu_add(am_backend *b, float *y, const float *x, int64_t n) {
    am__cpu_ctx *c = b->ctx;
    binary_job j = {c->k, y, x};
    /* Memory bound: threads help only once the arrays leave the caches. */
    par_for(b, n, 64, n / 4, add_range, &j);
}

static void cpu_destroy(am_backend *b) {
    cpu_backend *cb = (cpu_backend *)b;
    am__cpu_ctx *c = &cb->ctx;
    am_threadpool_destroy(&c->pool);
    if (c->dnnl)
        for (int i = 0; i < b->n_threads; i++) am__dnnl_thread_destroy(&c->dnnl[i]);
    am_free(c->dnnl);
    am_aligned_free(c->scratch);
    am_free(cb);
}

static const am_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .matmul = cpu_matmul,
    .get_rows = cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .softmax = cpu_softmax,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
};

/* ---- creation ---- */

float am__f16_table[1 << 16];
static pthread_once_t g_tables_once = PTHREAD_ONCE_INIT;

static void tables_fill(void) {
    for (uint32_t h = 0; h < (1u << 16); h++) am__f16_table[h] = am_f16_to_f32((uint16_t)h);
}

void am__cpu_tables_init(void) { pthread_once(&g_tables_once, tables_fill); }

static const am__cpu_kernels *isa_kernels(const char *isa, const am_cpu_features *f) {
    if (strcasecmp(isa, "avx512") == 0)
        return f->avx512f && f->avx512bw && f->avx512vl && f->fma && f->f16c ? am__cpu_kernels_avx512()
                                                                               : NULL;
    if (strcasecmp(isa, "avx2") == 0)
        return f->avx2 && f->fma && f->f16c ? am__cpu_kernels_avx2() : NULL;
    if (strcasecmp(isa, "generic") == 0) return am__cpu_kernels_generic();
    return NULL;
}

static int choose_kernels(const am__cpu_kernels **out) {
    const am_cpu_features *f = am_cpu_get_features();
    const char *forced = getenv("AM_CPU_ISA");
    if (forced && forced[0] && strcasecmp(forced, "auto") != 0) {
        if (strcasecmp(forced, "avx512") && strcasecmp(forced, "avx2") && strcasecmp(forced, "generic"))
            return am_err_set(AM_EINVAL, "AM_CPU_ISA='%s': expected generic, avx2, avx512 or auto",
                              forced);
        *out = isa_kernels(forced, f);
        if (!*out)
            return am_err_set(AM_EINVAL, "AM_CPU_ISA='%s': this CPU (or OS) does not support it",
                              forced);
        return 0;
    }
    const char *order[] = {"avx512", "avx2", "generic"};
    for (int i = 0; i < 3; i++)
        if ((*out = isa_kernels(order[i], f)) != NULL) return 0;
    return AM_EINTERNAL; /* unreachable: generic always exists */
}

int am_cpu_backend_new(int n_threads, am_backend **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > AM_CPU_MAX_THREADS)
        return am_err_set(AM_EINVAL, "cpu backend: n_threads = %d, need 1..%d", n_threads,
                          AM_CPU_MAX_THREADS);
    const am__cpu_kernels *k;
    int rc = choose_kernels(&k);
    if (rc != 0) return rc;
    am__cpu_tables_init();
    cpu_backend *cb = am_calloc(1, sizeof *cb);
    if (!cb) return AM_ENOMEM;
    am_backend *b = &cb->base;
    am__cpu_ctx *c = &cb->ctx;
    snprintf(cb->name, sizeof cb->name, "cpu-%s", k->name);
    b->ops = &cpu_ops;
    b->name = cb->name;
    b->n_threads = n_threads;
    b->ctx = c;
    c->k = k;
    rc = am_threadpool_new(n_threads, &c->pool);
    if (rc != 0) {
        am_free(cb);
        return rc;
    }
    if (am__dnnl_bf16_available()) {
        c->dnnl = am_calloc((size_t)n_threads, sizeof *c->dnnl);
        c->use_bf16_gemm = c->dnnl != NULL;
        for (int i = 0; i < n_threads && c->use_bf16_gemm; i++)
            if (am__dnnl_thread_new(&c->dnnl[i]) != 0) c->use_bf16_gemm = 0;
    }
    AM_LOGD("cpu backend: %s, %d threads, bf16 GEMM %s", b->name, n_threads,
            c->use_bf16_gemm ? "oneDNN" : "off");
    *out = b;
    return 0;
}
