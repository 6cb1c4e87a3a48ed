/* llm_shards/llama.c - the LLaMA-2 forward pass over a contiguous KV cache.
 *
 * Reads like MODEL_SPEC.md section 1: for each layer
 *   h   = x + Wo . Attn(RoPE(Wq . RMSNorm(x)), RoPE(Wk . RMSNorm(x)), Wv . RMSNorm(x))
 *   out = h + W2 . (silu(W1 . RMSNorm(h)) * (W3 . RMSNorm(h)))
 * then a final RMSNorm and the lm_head. All of a chunk's tokens go through each
 * weight matrix at once, so prefill runs as GEMMs and decode as matrix-vector
 * products; every op is a backend call.
 */
#include "llm_shards/llama.h"

#include "core/alloc.h"
#include "core/error.h"

#include <string.h>

struct am_llama_ctx {
    const am_llama_model *m;
    am_backend *be;
    int32_t n_ctx;     /* T: positions the cache holds */
    int32_t max_batch; /* B: rows per forward chunk */
    int32_t n_past;    /* positions filled */
    float *k_cache;    /* (L, T, Hkv*D) */
    float *v_cache;    /* (L, T, Hkv*D) */
    float *x;          /* (B, C) residual stream */
    float *xb;         /* (B, C) normalised input of a sub-block */
    float *q;          /* (B, H*D) */
    float *att;        /* (B, H*D) attention output */
    float *proj;       /* (B, C) output projection before the residual add */
    float *hb;         /* (B, F) gate, then silu(gate) * up */
    float *hb2;        /* (B, F) up */
    int32_t *pos;      /* (B) positions of the chunk's rows */
};

int am_llama_ctx_new(const am_llama_model *m, am_backend *be, int32_t n_ctx, int32_t max_batch,
                     am_llama_ctx **out) {
    const am_llama_config *cfg = &m->cfg;
    if (n_ctx <= 0 || n_ctx > cfg->max_seq_len)
        return am_err_set(AM_ERANGE, "context length %d is outside [1, %d] (the model's max_seq_len)",
                          n_ctx, cfg->max_seq_len);
    if (max_batch <= 0 || max_batch > 65536)
        return am_err_set(AM_ERANGE, "max_batch %d is outside [1, 65536]", max_batch);
    am_llama_ctx *c = am_calloc(1, sizeof *c);
    if (!c) return AM_ENOMEM;
    c->m = m;
    c->be = be;
    c->n_ctx = n_ctx;
    c->max_batch = max_batch;
    size_t B = (size_t)max_batch, C = (size_t)cfg->dim, F = (size_t)cfg->ffn_dim;
    size_t QD = (size_t)cfg->n_heads * cfg->head_dim, KD = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t cache_floats = (size_t)cfg->n_layers * (size_t)n_ctx * KD;
    c->k_cache = am_aligned_alloc(cache_floats * sizeof(float));
    c->v_cache = am_aligned_alloc(cache_floats * sizeof(float));
    c->x = am_aligned_alloc(B * C * sizeof(float));
    c->xb = am_aligned_alloc(B * C * sizeof(float));
    c->q = am_aligned_alloc(B * QD * sizeof(float));
    c->att = am_aligned_alloc(B * QD * sizeof(float));
    c->proj = am_aligned_alloc(B * C * sizeof(float));
    c->hb = am_aligned_alloc(B * F * sizeof(float));
    c->hb2 = am_aligned_alloc(B * F * sizeof(float));
    c->pos = am_aligned_alloc(B * sizeof(int32_t));
    if (!c->k_cache || !c->v_cache || !c->x || !c->xb || !c->q || !c->att || !c->proj || !c->hb ||
        !c->hb2 || !c->pos) {
        am_llama_ctx_destroy(&c);
        return am_err_set(AM_ENOMEM, "cannot allocate a context of %d positions (KV cache %zu MiB)",
                          n_ctx, 2 * cache_floats * sizeof(float) >> 20);
    }
    *out = c;
    return 0;
}

void am_llama_ctx_destroy(am_llama_ctx **p) {
    if (!p || !*p) return;
    am_llama_ctx *c = *p;
    float *bufs[] = {c->k_cache, c->v_cache, c->x, c->xb, c->q, c->att, c->proj, c->hb, c->hb2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) am_aligned_free(bufs[i]);
    am_aligned_free(c->pos);
    am_free(c);
    *p = NULL;
}

void am_llama_ctx_reset(am_llama_ctx *c) { c->n_past = 0; }

int32_t am_llama_ctx_n_past(const am_llama_ctx *c) { return c->n_past; }

int32_t am_llama_ctx_size(const am_llama_ctx *c) { return c->n_ctx; }

const am_llama_model *am_llama_ctx_model(const am_llama_ctx *c) { return c->m; }

/* One chunk of n <= B rows already embedded in c->x; leaves the final hidden
 * states in c->x. */
static int forward_layers(am_llama_ctx *c, int32_t n) {
    const am_llama_model *m = c->m;
    const am_llama_config *cfg = &m->cfg;
    am_backend *be = c->be;
    const am_backend_ops *op = be->ops;
    int64_t C = cfg->dim, F = cfg->ffn_dim;
    int64_t KD = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    int rc;
    for (int32_t i = 0; i < n; i++) c->pos[i] = c->n_past + i;

    for (int l = 0; l < cfg->n_layers; l++) {
        const am_llama_layer *ly = &m->layers[l];
        float *k_layer = c->k_cache + (size_t)l * c->n_ctx * KD; /* (T, Hkv*D) */
        float *v_layer = c->v_cache + (size_t)l * c->n_ctx * KD; /* (T, Hkv*D) */
        float *k_new = k_layer + (size_t)c->n_past * KD;         /* (n, Hkv*D) */
        float *v_new = v_layer + (size_t)c->n_past * KD;         /* (n, Hkv*D) */

        /* Attention sub-block. */
        op->rmsnorm(be, c->xb, c->x, ly->attn_norm, n, C, cfg->norm_eps);
        if ((rc = op->matmul(be, &ly->wq, c->xb, c->q, n)) || (rc = op->matmul(be, &ly->wk, c->xb, k_new, n)) ||
            (rc = op->matmul(be, &ly->wv, c->xb, v_new, n)))
            return rc;
        op->rope(be, c->q, c->pos, n, cfg->n_heads, cfg->head_dim, cfg->rope_theta, m->rope_layout);
        op->rope(be, k_new, c->pos, n, cfg->n_kv_heads, cfg->head_dim, cfg->rope_theta, m->rope_layout);
        op->attention(be, c->att, c->q, k_layer, v_layer, n, c->n_past, cfg->n_heads, cfg->n_kv_heads,
                      cfg->head_dim, KD);
        if ((rc = op->matmul(be, &ly->wo, c->att, c->proj, n))) return rc;
        op->add(be, c->x, c->proj, n * C);

        /* SwiGLU feed-forward sub-block. */
        op->rmsnorm(be, c->xb, c->x, ly->ffn_norm, n, C, cfg->norm_eps);
        if ((rc = op->matmul(be, &ly->w1, c->xb, c->hb, n)) || (rc = op->matmul(be, &ly->w3, c->xb, c->hb2, n)))
            return rc;
        op->silu_mul(be, c->hb, c->hb2, n * F);
        if ((rc = op->matmul(be, &ly->w2, c->hb, c->proj, n))) return rc;
        op->add(be, c->x, c->proj, n * C);
    }
    return 0;
}

int am_llama_eval(am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n, float *logits,
                  int all_logits) {
    const am_llama_model *m = c->m;
    const am_llama_config *cfg = &m->cfg;
    am_backend *be = c->be;
    int64_t C = cfg->dim, V = cfg->vocab_size;
    if (n <= 0) return am_err_set(AM_EINVAL, "eval: no input rows");
    if ((ids == NULL) == (embd == NULL)) return am_err_set(AM_EINVAL, "eval: give token ids or embedding rows");
    if ((int64_t)c->n_past + n > c->n_ctx)
        return am_err_set(AM_ERANGE, "eval: %d positions in the cache + %d new exceed the context of %d",
                          c->n_past, n, c->n_ctx);
    if (ids) {
        for (int32_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V)
                return am_err_set(AM_EINVAL, "eval: token id %d at input position %d is outside [0, %lld)",
                                  ids[i], i, (long long)V);
    }
    for (int32_t done = 0; done < n;) {
        int32_t chunk = n - done < c->max_batch ? n - done : c->max_batch;
        if (ids)
            be->ops->get_rows(be, &m->tok_embeddings, ids + done, chunk, c->x);
        else
            memcpy(c->x, embd + (size_t)done * C, (size_t)chunk * C * sizeof(float));
        int rc = forward_layers(c, chunk);
        if (rc) return rc;
        c->n_past += chunk;
        int last_chunk = done + chunk == n;
        if (logits && (all_logits || last_chunk)) {
            /* Only the rows whose logits are wanted go through the final norm and lm_head. */
            int32_t first = all_logits ? 0 : chunk - 1;
            int32_t rows = chunk - first;
            float *dst = logits + (all_logits ? (size_t)done * V : 0);
            be->ops->rmsnorm(be, c->xb, c->x + (size_t)first * C, m->norm, rows, C, cfg->norm_eps);
            if ((rc = be->ops->matmul(be, &m->output, c->xb, dst, rows))) return rc;
        }
        done += chunk;
    }
    return 0;
}
