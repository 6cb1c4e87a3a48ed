/* core/formats/llama2c.c - llama2.c (karpathy) legacy checkpoints: reader and
 * writer (core/ckpt.h, docs/model-spec.md section 8).
 *
 * Layout (run.c memory_map_weights): 7 int32 (dim, hidden_dim, n_layers,
 * n_heads, n_kv_heads, vocab_size, seq_len; vocab_size < 0 means the classifier
 * is not shared), then fp32 arrays, each stacked over layers:
 *   token_embedding_table (vocab, dim)
 *   rms_att_weight (L, dim)
 *   wq (L, n_heads*hs, dim)  wk (L, n_kv_heads*hs, dim)  wv (L, n_kv_heads*hs, dim)
 *   wo (L, dim, n_heads*hs)
 *   rms_ffn_weight (L, dim)
 *   w1 (L, hidden, dim)  w2 (L, dim, hidden)  w3 (L, hidden, dim)
 *   rms_final_weight (dim)
 *   freq_cis_real (seq_len, hs/2)  freq_cis_imag (seq_len, hs/2)
 *   wcls (vocab, dim) only when unshared
 * with hs = dim / n_heads. There is no magic, so the header is validated
 * strictly and the file size must match it exactly.
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_BYTES 28

/* The stacked arrays in file order; per-layer ones are exposed as one tensor
 * per layer under Meta's names. */
typedef enum { ROWS_VOCAB, ROWS_DIM, ROWS_Q, ROWS_KV, ROWS_HIDDEN, ROWS_ONE } rows_kind;

typedef struct array_desc {
    const char *name; /* printf format with the layer number, or a plain name */
    int per_layer;
    int is_vector;  /* 1-D (dim,) */
    rows_kind rows; /* for matrices: rows (out features) */
    rows_kind cols; /* for matrices: cols (in features) */
} array_desc;

static const array_desc arrays[] = {
    {"tok_embeddings.weight", 0, 0, ROWS_VOCAB, ROWS_DIM},
    {"layers.%d.attention_norm.weight", 1, 1, ROWS_DIM, ROWS_ONE},
    {"layers.%d.attention.wq.weight", 1, 0, ROWS_Q, ROWS_DIM},
    {"layers.%d.attention.wk.weight", 1, 0, ROWS_KV, ROWS_DIM},
    {"layers.%d.attention.wv.weight", 1, 0, ROWS_KV, ROWS_DIM},
    {"layers.%d.attention.wo.weight", 1, 0, ROWS_DIM, ROWS_Q},
    {"layers.%d.ffn_norm.weight", 1, 1, ROWS_DIM, ROWS_ONE},
    {"layers.%d.feed_forward.w1.weight", 1, 0, ROWS_HIDDEN, ROWS_DIM},
    {"layers.%d.feed_forward.w2.weight", 1, 0, ROWS_DIM, ROWS_HIDDEN},
    {"layers.%d.feed_forward.w3.weight", 1, 0, ROWS_HIDDEN, ROWS_DIM},
    {"norm.weight", 0, 1, ROWS_DIM, ROWS_ONE},
};
#define N_ARRAYS ((int)(sizeof arrays / sizeof arrays[0]))

typedef struct dims {
    int64_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len, head_size;
    int shared;
} dims;

static int64_t rows_of(const dims *d, rows_kind k) {
    switch (k) {
    case ROWS_VOCAB: return d->vocab;
    case ROWS_DIM: return d->dim;
    case ROWS_Q: return d->n_heads * d->head_size;
    case ROWS_KV: return d->n_kv_heads * d->head_size;
    case ROWS_HIDDEN: return d->hidden;
    case ROWS_ONE: return 1;
    }
    return 0;
}

/* Header checks shared by reader and writer; msg gets the reason. */
static int check_dims(const int32_t h[7], dims *d, char *msg, size_t cap) {
    static const char *names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        int64_t v = i == 5 ? llabs((long long)h[i]) : h[i];
        if (v <= 0) {
            snprintf(msg, cap, "%s = %d must be positive", names[i], h[i]);
            return AM_EFORMAT;
        }
    }
    d->dim = h[0], d->hidden = h[1], d->n_layers = h[2], d->n_heads = h[3];
    d->n_kv_heads = h[4], d->vocab = llabs((long long)h[5]), d->seq_len = h[6];
    d->shared = h[5] > 0;
    if (d->dim % d->n_heads) {
        snprintf(msg, cap, "n_heads = %d does not divide dim = %d", h[3], h[0]);
        return AM_EFORMAT;
    }
    if (d->n_kv_heads > d->n_heads || d->n_heads % d->n_kv_heads) {
        snprintf(msg, cap, "n_kv_heads = %d does not divide n_heads = %d", h[4], h[3]);
        return AM_EFORMAT;
    }
    d->head_size = d->dim / d->n_heads;
    if (d->head_size % 2) {
        snprintf(msg, cap, "head_size = dim / n_heads = %lld is odd (RoPE needs pairs)",
                 (long long)d->head_size);
        return AM_EFORMAT;
    }
    return 0;
}

/* Floats in the file after the header, or 0 on overflow (not a real size). */
static uint64_t expected_floats(const dims *d) {
    /* Each product below is of int32 values: two fit in 62 bits, a third can
     * overflow, so everything goes through checked arithmetic. */
    uint64_t total = 0, x;
    int ok = 1;
#define ADD(a, b, c)                                                                               \
    ok = ok && !__builtin_mul_overflow((uint64_t)(a), (uint64_t)(b), &x) &&                        \
         !__builtin_mul_overflow(x, (uint64_t)(c), &x) &&                                          \
         !__builtin_add_overflow(total, x, &total)
    ADD(d->vocab, d->dim, 1);
    for (int i = 1; i < N_ARRAYS; i++) {
        const array_desc *a = &arrays[i];
        ADD(a->per_layer ? d->n_layers : 1, rows_of(d, a->rows), rows_of(d, a->cols));
    }
    ADD(2, d->seq_len, d->head_size / 2);
    if (!d->shared) ADD(d->vocab, d->dim, 1);
#undef ADD
    return ok ? total : 0;
}

int am__llama2c_open(am_ckpt *c, const char *path) {
    c->format = AM_CKPT_LLAMA2C;
    int64_t fi;
    int rc = am__ckpt_add_file(c, path, &fi);
    if (rc) return rc;
    const am__mfile *f = &c->files[fi];
    /* llama2.c is the fallback when no magic matched, so say so: the file may
     * just be something else. */
    if (f->size < HEADER_BYTES)
        return am_err_set(AM_EFORMAT,
                          "%s: not GGUF or safetensors, and too short (%zu bytes) for a llama2.c "
                          "header",
                          path, f->size);
    int32_t h[7];
    memcpy(h, f->data, sizeof h);
    dims d;
    char why[128];
    if ((rc = check_dims(h, &d, why, sizeof why)))
        return am_err_set(rc, "%s: not GGUF or safetensors; as a llama2.c checkpoint: header %s",
                          path, why);
    uint64_t nf = expected_floats(&d);
    if (nf == 0 || nf > (SIZE_MAX - HEADER_BYTES) / 4 || HEADER_BYTES + nf * 4 != f->size)
        return am_err_set(
            AM_EFORMAT,
            "%s: not GGUF or safetensors; as a llama2.c checkpoint: file size %zu "
            "does not match the header (dim %lld, hidden_dim %lld, n_layers %lld, "
            "vocab %lld, seq_len %lld, %s classifier: %llu bytes)",
            path, f->size, (long long)d.dim, (long long)d.hidden, (long long)d.n_layers,
            (long long)d.vocab, (long long)d.seq_len, d.shared ? "shared" : "unshared",
            nf && nf <= (SIZE_MAX - HEADER_BYTES) / 4 ? (unsigned long long)(HEADER_BYTES + nf * 4)
                                                      : 0ull);
    /* 2 + 9 per layer + 1 tensors; the size check bounds n_layers by the file. */
    if (2 + 9 * d.n_layers > AM_CKPT_MAX_TENSORS)
        return am_err_set(AM_ERANGE, "%s: n_layers = %lld gives more than %d tensors", path,
                          (long long)d.n_layers, AM_CKPT_MAX_TENSORS);
    const uint8_t *p = f->data + HEADER_BYTES; /* 28 keeps the floats 4-byte aligned */
    for (int i = 0; i < N_ARRAYS; i++) {
        const array_desc *a = &arrays[i];
        int64_t rows = rows_of(&d, a->rows), cols = rows_of(&d, a->cols);
        int64_t per = rows * cols; /* floats per layer; fits (checked above via file size) */
        int64_t layers = a->per_layer ? d.n_layers : 1;
        for (int64_t l = 0; l < layers; l++) {
            am_ckpt_tensor *t = am__ckpt_new_tensor(c);
            if (!t) return am_err_prefix(AM_ENOMEM, "%s", path);
            char name[96];
            if (a->per_layer)
                snprintf(name, sizeof name, a->name, (int)l);
            else
                snprintf(name, sizeof name, "%s", a->name);
            t->name = am__arena_strndup(&c->arena, name, strlen(name));
            if (!t->name) return am_err_set(AM_ENOMEM, "%s: out of memory", path);
            t->dtype = AM_DTYPE_F32;
            for (int k = 0; k < AM_MAX_DIMS; k++)
                t->shape[k] = 1;
            if (a->is_vector) {
                t->n_dims = 1;
                t->shape[0] = rows;
            } else {
                t->n_dims = 2;
                t->shape[0] = rows;
                t->shape[1] = cols;
            }
            t->data = p;
            t->nbytes = (size_t)per * 4;
            t->file = f->path;
            p += t->nbytes;
        }
    }
    p += 2 * d.seq_len * (d.head_size / 2) * 4; /* freq_cis_real, freq_cis_imag: unused */
    am_ckpt_tensor *out = am__ckpt_new_tensor(c);
    if (!out) return am_err_prefix(AM_ENOMEM, "%s", path);
    *out = c->tensors[0]; /* tok_embeddings: same shape */
    out->name = "output.weight";
    if (!d.shared) out->data = p;

    static const char *keys[8] = {"llama2c.dim",        "llama2c.hidden_dim",
                                  "llama2c.n_layers",   "llama2c.n_heads",
                                  "llama2c.n_kv_heads", "llama2c.vocab_size",
                                  "llama2c.seq_len",    "llama2c.shared_classifier"};
    const int64_t vals[8] = {d.dim,        d.hidden, d.n_layers, d.n_heads,
                             d.n_kv_heads, d.vocab,  d.seq_len,  d.shared};
    for (int i = 0; i < 8; i++) {
        am__meta *m = am__ckpt_new_meta(c);
        if (!m) return AM_ENOMEM;
        m->key = keys[i];
        m->type = AM_GGUF_I64;
        m->inl = vals[i];
        m->val = &m->inl;
    }
    return 0;
}

/* ---- Writer. ------------------------------------------------------------------ */

int am_llama2c_write(const char *path, const am_llama2c_config *cfg, const am_llama2c_weights *w) {
    if (cfg->vocab_size <= 0)
        return am_err_set(AM_EINVAL, "%s: vocab_size = %d must be positive", path, cfg->vocab_size);
    int32_t h[7] = {cfg->dim,        cfg->hidden_dim,
                    cfg->n_layers,   cfg->n_heads,
                    cfg->n_kv_heads, cfg->shared_classifier ? cfg->vocab_size : -cfg->vocab_size,
                    cfg->seq_len};
    dims d;
    char why[128];
    int rc = check_dims(h, &d, why, sizeof why);
    if (rc) return am_err_set(AM_EINVAL, "%s: %s", path, why);
    if (expected_floats(&d) == 0) return am_err_set(AM_ERANGE, "%s: model too large", path);
    const float *src[N_ARRAYS] = {w->token_embedding_table,
                                  w->rms_att_weight,
                                  w->wq,
                                  w->wk,
                                  w->wv,
                                  w->wo,
                                  w->rms_ffn_weight,
                                  w->w1,
                                  w->w2,
                                  w->w3,
                                  w->rms_final_weight};
    for (int i = 0; i < N_ARRAYS; i++)
        if (!src[i]) return am_err_set(AM_EINVAL, "%s: weight %d is NULL", path, i);
    if (!d.shared && !w->wcls) return am_err_set(AM_EINVAL, "%s: wcls is NULL", path);
    /* The RoPE tables, as llama2.c's export.py computes them (float32): run.c
     * no longer reads them but the layout keeps their space. */
    int64_t half = d.head_size / 2;
    float *fr = am_calloc((size_t)(d.seq_len * half) + 1, sizeof *fr);
    float *fi = am_calloc((size_t)(d.seq_len * half) + 1, sizeof *fi);
    if (!fr || !fi) {
        am_free(fr);
        am_free(fi);
        return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < half; i++) {
        float freq = 1.0f / powf(10000.0f, (float)(2 * i) / (float)d.head_size);
        for (int64_t t = 0; t < d.seq_len; t++) {
            float a = (float)t * freq;
            fr[t * half + i] = cosf(a);
            fi[t * half + i] = sinf(a);
        }
    }
    am__wfile f;
    rc = am__wfile_open(&f, path);
    if (!rc) {
        am__wfile_write(&f, h, sizeof h);
        for (int i = 0; i < N_ARRAYS; i++) {
            const array_desc *a = &arrays[i];
            uint64_t n = (uint64_t)(a->per_layer ? d.n_layers : 1) *
                         (uint64_t)rows_of(&d, a->rows) * (uint64_t)rows_of(&d, a->cols);
            am__wfile_write(&f, src[i], (size_t)n * 4);
        }
        am__wfile_write(&f, fr, (size_t)(d.seq_len * half) * 4);
        am__wfile_write(&f, fi, (size_t)(d.seq_len * half) * 4);
        if (!d.shared) am__wfile_write(&f, w->wcls, (size_t)(d.vocab * d.dim) * 4);
        rc = am__wfile_commit(&f);
    }
    am_free(fr);
    am_free(fi);
    return rc;
}
