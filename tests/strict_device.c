/* tests/strict_device.c - a CPU backend that checks every pointer like a device would (see
 * strict_device.h). */
#include "strict_device.h"

#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *base;
    size_t bytes;
    int owned; /* an upload_matrix copy, freed at destroy */
} sd_block;

typedef struct {
    am_backend base;
    am_backend *cpu;
    pthread_mutex_t mu;
    sd_block *blocks;
    size_t n_blocks, cap_blocks;
    int64_t n_ops, uploaded, downloaded;
} strict_dev;

static strict_dev *sd_of(am_backend *b) { return (strict_dev *)b; }

static _Noreturn void sd_die(const char *op, const char *arg, const void *p, size_t bytes,
                             const char *why) {
    fprintf(stderr, "strict device: %s: argument %s (%p, %zu bytes) %s\n", op, arg, p, bytes, why);
    abort();
}

/* The block holding p, or NULL. Caller holds mu. */
static const sd_block *sd_find(strict_dev *d, const void *p) {
    const char *c = p;
    for (size_t i = 0; i < d->n_blocks; i++)
        if (c >= d->blocks[i].base && c < d->blocks[i].base + d->blocks[i].bytes)
            return &d->blocks[i];
    return NULL;
}

/* p .. p + bytes must lie inside one live allocation. */
static void sd_need(am_backend *b, const char *op, const char *arg, const void *p, size_t bytes) {
    if (bytes == 0) return;
    strict_dev *d = sd_of(b);
    if (!p) sd_die(op, arg, p, bytes, "is NULL");
    pthread_mutex_lock(&d->mu);
    const sd_block *bl = sd_find(d, p);
    const int inside = bl && (const char *)p + bytes <= bl->base + bl->bytes;
    pthread_mutex_unlock(&d->mu);
    if (!bl) sd_die(op, arg, p, bytes, "is not device memory (a host pointer?)");
    if (!inside) sd_die(op, arg, p, bytes, "runs past the end of its device allocation");
}

/* A host pointer must not point into device memory. */
static void sd_host(am_backend *b, const char *op, const char *arg, const void *p, size_t bytes) {
    if (bytes == 0) return;
    strict_dev *d = sd_of(b);
    if (!p) sd_die(op, arg, p, bytes, "is NULL");
    pthread_mutex_lock(&d->mu);
    const sd_block *bl = sd_find(d, p);
    pthread_mutex_unlock(&d->mu);
    if (bl) sd_die(op, arg, p, bytes, "is device memory where host memory is expected");
}

static void *sd_track(strict_dev *d, size_t bytes, int owned) {
    char *p = am_aligned_alloc(bytes ? bytes : 1);
    if (!p) return NULL;
    /* Device memory starts as garbage: NaN makes a read of unwritten memory show. */
    const float nan = NAN;
    for (size_t i = 0; i + sizeof nan <= bytes; i += sizeof nan)
        memcpy(p + i, &nan, sizeof nan);
    pthread_mutex_lock(&d->mu);
    if (d->n_blocks == d->cap_blocks) {
        size_t cap = d->cap_blocks ? 2 * d->cap_blocks : 64;
        sd_block *nb = realloc(d->blocks, cap * sizeof *nb);
        if (!nb) {
            pthread_mutex_unlock(&d->mu);
            am_aligned_free(p);
            return NULL;
        }
        d->blocks = nb;
        d->cap_blocks = cap;
    }
    d->blocks[d->n_blocks++] = (sd_block){p, bytes ? bytes : 1, owned};
    pthread_mutex_unlock(&d->mu);
    return p;
}

/* ---- memory ---- */

static void *sd_alloc(am_backend *b, size_t bytes) { return sd_track(sd_of(b), bytes, 0); }

static void sd_free(am_backend *b, void *p) {
    if (!p) return;
    strict_dev *d = sd_of(b);
    pthread_mutex_lock(&d->mu);
    size_t i = 0;
    while (i < d->n_blocks && d->blocks[i].base != p)
        i++;
    if (i == d->n_blocks || d->blocks[i].owned) {
        pthread_mutex_unlock(&d->mu);
        sd_die("free", "p", p, 0,
               i == d->n_blocks ? "is not the start of a live allocation"
                                : "is an upload_matrix copy (the backend owns it)");
    }
    d->blocks[i] = d->blocks[--d->n_blocks];
    pthread_mutex_unlock(&d->mu);
    am_aligned_free(p);
}

static int sd_upload(am_backend *b, void *dst, const void *src, size_t bytes) {
    sd_need(b, "upload", "dst", dst, bytes);
    sd_host(b, "upload", "src", src, bytes);
    if (bytes) memcpy(dst, src, bytes);
    sd_of(b)->uploaded += (int64_t)bytes;
    return 0;
}

static int sd_download(am_backend *b, void *dst, const void *src, size_t bytes) {
    sd_need(b, "download", "src", src, bytes);
    sd_host(b, "download", "dst", dst, bytes);
    if (bytes) memcpy(dst, src, bytes);
    sd_of(b)->downloaded += (int64_t)bytes;
    return 0;
}

static size_t matrix_bytes(const am_matrix *w) {
    if (w->rows <= 0) return 0;
    return (size_t)(w->rows - 1) * w->row_bytes + am_dtype_row_bytes(w->dtype, w->cols);
}

static int sd_upload_matrix(am_backend *b, const am_matrix *w, am_matrix *out) {
    sd_host(b, "upload_matrix", "w->data", w->data, matrix_bytes(w));
    const size_t bytes = (size_t)w->rows * w->row_bytes;
    void *p = sd_track(sd_of(b), bytes, 1);
    if (!p) return AM_ENOMEM;
    memcpy(p, w->data, bytes);
    *out = *w;
    out->data = p;
    return 0;
}

/* ---- ops: check, then forward to the CPU backend ---- */

#define F32(n)   ((size_t)(n) * sizeof(float))
#define CPU(b)   (sd_of(b)->cpu)
#define COUNT(b) (sd_of(b)->n_ops++)

static void need_matrix(am_backend *b, const char *op, const am_matrix *w) {
    sd_need(b, op, "w->data", w->data, matrix_bytes(w));
}

static int sd_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m) {
    need_matrix(b, "matmul", w);
    sd_need(b, "matmul", "x", x, F32(m * w->cols));
    sd_need(b, "matmul", "y", y, F32(m * w->rows));
    COUNT(b);
    return CPU(b)->ops->matmul(CPU(b), w, x, y, m);
}

static void sd_get_rows(am_backend *b, const am_matrix *w, const int32_t *ids, int64_t m,
                        float *out) {
    need_matrix(b, "get_rows", w);
    sd_need(b, "get_rows", "ids", ids, (size_t)m * sizeof(int32_t));
    sd_need(b, "get_rows", "out", out, F32(m * w->cols));
    COUNT(b);
    CPU(b)->ops->get_rows(CPU(b), w, ids, m, out);
}

static void sd_rmsnorm(am_backend *b, float *out, const float *x, const float *weight, int64_t m,
                       int64_t k, float eps) {
    sd_need(b, "rmsnorm", "out", out, F32(m * k));
    sd_need(b, "rmsnorm", "x", x, F32(m * k));
    sd_need(b, "rmsnorm", "weight", weight, F32(k));
    COUNT(b);
    CPU(b)->ops->rmsnorm(CPU(b), out, x, weight, m, k, eps);
}

static void sd_rope(am_backend *b, float *x, const int32_t *pos, int64_t m, int n_heads,
                    int head_dim, float theta, am_rope_layout layout) {
    sd_need(b, "rope", "x", x, F32(m * n_heads * head_dim));
    sd_need(b, "rope", "pos", pos, (size_t)m * sizeof(int32_t));
    COUNT(b);
    CPU(b)->ops->rope(CPU(b), x, pos, m, n_heads, head_dim, theta, layout);
}

/* Every cache row the sequences touch (positions 0 .. pos0 + m - 1) in both pools;
 * the seqs and block tables themselves are host memory. */
static void need_pages(am_backend *b, const char *op, const am_kv_pages *pg,
                       const am_attn_seq *seqs, int n_seqs, int64_t row_floats) {
    sd_host(b, op, "seqs", seqs, (size_t)n_seqs * sizeof *seqs);
    for (int s = 0; s < n_seqs; s++) {
        const am_attn_seq *sq = &seqs[s];
        const int64_t n_pos = sq->pos0 + sq->m,
                      n_tab = (n_pos + pg->block_size - 1) / pg->block_size;
        sd_host(b, op, "seqs[].blocks", sq->blocks, (size_t)n_tab * sizeof(int32_t));
        for (int64_t t = 0; t < n_tab; t++) {
            const int64_t row0 = (int64_t)sq->blocks[t] * pg->block_size;
            const int64_t rows = t == n_tab - 1 ? n_pos - t * pg->block_size : pg->block_size;
            const size_t bytes = F32((rows - 1) * pg->kv_stride + row_floats);
            sd_need(b, op, "pages->k", pg->k + row0 * pg->kv_stride, bytes);
            sd_need(b, op, "pages->v", pg->v + row0 * pg->kv_stride, bytes);
        }
    }
}

static int64_t seq_rows(const am_attn_seq *seqs, int n_seqs) {
    int64_t end = 0;
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].row0 + seqs[s].m > end) end = seqs[s].row0 + seqs[s].m;
    return end;
}

static void sd_kv_store(am_backend *b, const am_kv_pages *pages, const float *k_new,
                        const float *v_new, const am_attn_seq *seqs, int n_seqs) {
    const int64_t M = seq_rows(seqs, n_seqs);
    need_pages(b, "kv_store", pages, seqs, n_seqs, pages->kv_stride);
    sd_need(b, "kv_store", "k_new", k_new, F32(M * pages->kv_stride));
    sd_need(b, "kv_store", "v_new", v_new, F32(M * pages->kv_stride));
    COUNT(b);
    CPU(b)->ops->kv_store(CPU(b), pages, k_new, v_new, seqs, n_seqs);
}

static void sd_attention(am_backend *b, float *out, const float *q, const am_kv_pages *pages,
                         const am_attn_seq *seqs, int n_seqs, int n_heads, int n_kv_heads,
                         int head_dim) {
    const int64_t M = seq_rows(seqs, n_seqs);
    need_pages(b, "attention", pages, seqs, n_seqs, (int64_t)n_kv_heads * head_dim);
    sd_need(b, "attention", "q", q, F32(M * n_heads * head_dim));
    sd_need(b, "attention", "out", out, F32(M * n_heads * head_dim));
    COUNT(b);
    CPU(b)->ops->attention(CPU(b), out, q, pages, seqs, n_seqs, n_heads, n_kv_heads, head_dim);
}

static void sd_softmax(am_backend *b, float *x, int64_t m, int64_t n) {
    sd_need(b, "softmax", "x", x, F32(m * n));
    COUNT(b);
    CPU(b)->ops->softmax(CPU(b), x, m, n);
}

static void sd_silu_mul(am_backend *b, float *gate, const float *up, int64_t n) {
    sd_need(b, "silu_mul", "gate", gate, F32(n));
    sd_need(b, "silu_mul", "up", up, F32(n));
    COUNT(b);
    CPU(b)->ops->silu_mul(CPU(b), gate, up, n);
}

static void sd_add(am_backend *b, float *y, const float *x, int64_t n) {
    sd_need(b, "add", "y", y, F32(n));
    sd_need(b, "add", "x", x, F32(n));
    COUNT(b);
    CPU(b)->ops->add(CPU(b), y, x, n);
}

static void sd_copy(am_backend *b, void *dst, const void *src, size_t bytes) {
    sd_need(b, "copy", "dst", dst, bytes);
    sd_need(b, "copy", "src", src, bytes);
    COUNT(b);
    CPU(b)->ops->copy(CPU(b), dst, src, bytes);
}

static void sd_layernorm(am_backend *b, float *out, const float *x, const float *w,
                         const float *bias, int64_t m, int64_t c, float eps) {
    sd_need(b, "layernorm", "out", out, F32(m * c));
    sd_need(b, "layernorm", "x", x, F32(m * c));
    sd_need(b, "layernorm", "w", w, F32(c));
    if (bias) sd_need(b, "layernorm", "bias", bias, F32(c));
    COUNT(b);
    CPU(b)->ops->layernorm(CPU(b), out, x, w, bias, m, c, eps);
}

static void sd_bias_act(am_backend *b, float *y, const float *bias, int64_t m, int64_t n,
                        am_act act) {
    sd_need(b, "bias_act", "y", y, F32(m * n));
    if (bias) sd_need(b, "bias_act", "bias", bias, F32(n));
    COUNT(b);
    CPU(b)->ops->bias_act(CPU(b), y, bias, m, n, act);
}

static void sd_add_bias(am_backend *b, float *x, const float *y, const float *bias, int64_t m,
                        int64_t n) {
    sd_need(b, "add_bias", "x", x, F32(m * n));
    sd_need(b, "add_bias", "y", y, F32(m * n));
    if (bias) sd_need(b, "add_bias", "bias", bias, F32(n));
    COUNT(b);
    CPU(b)->ops->add_bias(CPU(b), x, y, bias, m, n);
}

/* Floats spanned by `rows` rows of `row_floats` at `stride`. */
static size_t span(int64_t rows, int64_t stride, int64_t row_floats) {
    return rows <= 0 ? 0 : F32((rows - 1) * stride + row_floats);
}

/* The pointers of an attention_dense / attention_short call. */
static void sd_need_attn(am_backend *b, const char *op, float *out, const float *q, const float *k,
                         const float *v, const am_dense_attn *a) {
    const int64_t HD = (int64_t)a->n_heads * a->head_dim;
    sd_host(b, op, "a", a, sizeof *a);
    sd_need(b, op, "q", q, span(a->n_seqs * a->tq, a->q_stride, HD));
    sd_need(b, op, "k", k, span(a->n_seqs * a->tk, a->kv_stride, HD));
    sd_need(b, op, "v", v, span(a->n_seqs * a->tk, a->kv_stride, HD));
    sd_need(b, op, "out", out, span(a->n_seqs * a->tq, a->o_stride, HD));
    if (a->bias) sd_need(b, op, "bias", a->bias, F32(a->n_heads * a->tq * a->tk));
    if (a->mask && a->n_mask > 0) sd_need(b, op, "mask", a->mask, F32(a->n_mask * a->tq * a->tk));
    COUNT(b);
}

static int sd_attention_dense(am_backend *b, float *out, const float *q, const float *k,
                              const float *v, const am_dense_attn *a) {
    sd_need_attn(b, "attention_dense", out, q, k, v, a);
    return CPU(b)->ops->attention_dense(CPU(b), out, q, k, v, a);
}

static int sd_attention_short(am_backend *b, float *out, const float *q, const float *k,
                              const float *v, const am_dense_attn *a) {
    sd_need_attn(b, "attention_short", out, q, k, v, a);
    return CPU(b)->ops->attention_short(CPU(b), out, q, k, v, a);
}

static void sd_gather_rows(am_backend *b, float *dst, const float *src, const int32_t *idx,
                           int64_t period, int64_t m, int64_t c) {
    sd_need(b, "gather_rows", "dst", dst, F32(m * c));
    sd_need(b, "gather_rows", "src", src, F32(m * c));
    sd_need(b, "gather_rows", "idx", idx, (size_t)period * sizeof(int32_t));
    COUNT(b);
    CPU(b)->ops->gather_rows(CPU(b), dst, src, idx, period, m, c);
}

static void sd_scatter_add(am_backend *b, float *x, const float *y, const float *bias,
                           const int32_t *idx, int64_t period, int64_t m, int64_t c) {
    sd_need(b, "scatter_add", "x", x, F32(m * c));
    sd_need(b, "scatter_add", "y", y, F32(m * c));
    if (bias) sd_need(b, "scatter_add", "bias", bias, F32(c));
    sd_need(b, "scatter_add", "idx", idx, (size_t)period * sizeof(int32_t));
    COUNT(b);
    CPU(b)->ops->scatter_add(CPU(b), x, y, bias, idx, period, m, c);
}

static void sd_groupnorm(am_backend *b, float *out, const float *x, const float *w,
                         const float *bias, int64_t nb, int64_t t, int64_t c, int groups,
                         float eps) {
    sd_need(b, "groupnorm", "out", out, F32(nb * t * c));
    sd_need(b, "groupnorm", "x", x, F32(nb * t * c));
    sd_need(b, "groupnorm", "w", w, F32(c));
    sd_need(b, "groupnorm", "bias", bias, F32(c));
    COUNT(b);
    CPU(b)->ops->groupnorm(CPU(b), out, x, w, bias, nb, t, c, groups, eps);
}

static void sd_im2col_1d(am_backend *b, float *cols, const float *x, int64_t nb, int64_t t,
                         int64_t c, int k, int dil) {
    const int64_t to = t - (int64_t)dil * (k - 1);
    sd_need(b, "im2col_1d", "x", x, F32(nb * t * c));
    if (to > 0) sd_need(b, "im2col_1d", "cols", cols, F32(nb * to * c * k));
    COUNT(b);
    CPU(b)->ops->im2col_1d(CPU(b), cols, x, nb, t, c, k, dil);
}

static void sd_maxpool_time(am_backend *b, float *out, const float *x, int64_t nb, int64_t t,
                            int64_t c, int p) {
    sd_need(b, "maxpool_time", "x", x, F32(nb * t * c));
    sd_need(b, "maxpool_time", "out", out, F32(nb * (t / p) * c));
    COUNT(b);
    CPU(b)->ops->maxpool_time(CPU(b), out, x, nb, t, c, p);
}

static void sd_mean_rows(am_backend *b, float *out, const float *x, int64_t nb, int64_t t,
                         int64_t c) {
    sd_need(b, "mean_rows", "x", x, F32(nb * t * c));
    sd_need(b, "mean_rows", "out", out, F32(nb * c));
    COUNT(b);
    CPU(b)->ops->mean_rows(CPU(b), out, x, nb, t, c);
}

static void sd_transpose(am_backend *b, float *dst, const float *src, int64_t nb, int64_t t,
                         int64_t c) {
    sd_need(b, "transpose", "src", src, F32(nb * t * c));
    sd_need(b, "transpose", "dst", dst, F32(nb * t * c));
    COUNT(b);
    CPU(b)->ops->transpose(CPU(b), dst, src, nb, t, c);
}

static void sd_gru_gates(am_backend *b, float *h, const float *gi, int64_t gi_stride,
                         const float *gh, int64_t rows, int64_t hidden) {
    sd_need(b, "gru_gates", "h", h, F32(rows * hidden));
    sd_need(b, "gru_gates", "gi", gi, span(rows, gi_stride, 3 * hidden));
    sd_need(b, "gru_gates", "gh", gh, F32(rows * 3 * hidden));
    COUNT(b);
    CPU(b)->ops->gru_gates(CPU(b), h, gi, gi_stride, gh, rows, hidden);
}

static void sd_destroy(am_backend *b) {
    strict_dev *d = sd_of(b);
    for (size_t i = 0; i < d->n_blocks; i++) {
        if (!d->blocks[i].owned)
            fprintf(stderr, "strict device: destroyed with a live allocation of %zu bytes (leak)\n",
                    d->blocks[i].bytes);
        am_aligned_free(d->blocks[i].base);
    }
    free(d->blocks);
    pthread_mutex_destroy(&d->mu);
    am_backend_destroy(&d->cpu);
    free(d);
}

static const am_backend_ops sd_ops = {
    .destroy = sd_destroy,
    .alloc = sd_alloc,
    .free = sd_free,
    .upload = sd_upload,
    .download = sd_download,
    .upload_matrix = sd_upload_matrix,
    .matmul = sd_matmul,
    .get_rows = sd_get_rows,
    .rmsnorm = sd_rmsnorm,
    .rope = sd_rope,
    .kv_store = sd_kv_store,
    .attention = sd_attention,
    .softmax = sd_softmax,
    .silu_mul = sd_silu_mul,
    .add = sd_add,
    .copy = sd_copy,
    .layernorm = sd_layernorm,
    .bias_act = sd_bias_act,
    .add_bias = sd_add_bias,
    .attention_dense = sd_attention_dense,
    .attention_short = sd_attention_short,
    .gather_rows = sd_gather_rows,
    .scatter_add = sd_scatter_add,
    .groupnorm = sd_groupnorm,
    .im2col_1d = sd_im2col_1d,
    .maxpool_time = sd_maxpool_time,
    .mean_rows = sd_mean_rows,
    .transpose = sd_transpose,
    .gru_gates = sd_gru_gates,
};

int am_strict_device_new(int n_threads, am_backend **out) {
    *out = NULL;
    strict_dev *d = calloc(1, sizeof *d);
    if (!d) return AM_ENOMEM;
    int rc = am_cpu_backend_new(n_threads, &d->cpu);
    if (rc) {
        free(d);
        return rc;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->base = (am_backend){.ops = &sd_ops,
                           .name = "strict-device",
                           .n_threads = n_threads,
                           .host_memory = 0,
                           .ctx = d};
    *out = &d->base;
    return 0;
}

int64_t am_strict_device_live(const am_backend *b) {
    strict_dev *d = (strict_dev *)b;
    pthread_mutex_lock(&d->mu);
    int64_t n = 0;
    for (size_t i = 0; i < d->n_blocks; i++)
        n += !d->blocks[i].owned;
    pthread_mutex_unlock(&d->mu);
    return n;
}

int64_t am_strict_device_n_ops(const am_backend *b) { return ((const strict_dev *)b)->n_ops; }
int64_t am_strict_device_uploaded(const am_backend *b) { return ((const strict_dev *)b)->uploaded; }
int64_t am_strict_device_downloaded(const am_backend *b) {
    return ((const strict_dev *)b)->downloaded;
}
