/* llm_shards/llama.c - the LLaMA-2 forward pass over a contiguous KV cache.
 *
 * Reads like MODEL_SPEC.md section 1: for each layer
 *   h   = x + Wo . Attn(RoPE(Wq . RMSNorm(x)), RoPE(Wk . RMSNorm(x)), Wv . RMSNorm(x))
 *   out = h + W2 . (silu(W1 . RMSNorm(h)) * (W3 . RMSNorm(h)))
 * then a final RMSNorm and the lm_head. All of a chunk's tokens go through each
 * weight matrix at once, so prefill runs as GEMMs and decode as matrix-vector
 * products; every op is a backend call.
 *
 * The same loop runs one slice of a tensor-parallel group (tp.h): the
 * matrices are then this rank's slices (H_l heads, Hkv_l kv heads, F_l
 * features, V_l vocab rows), and Wo . att and W2 . h are partial sums that
 * one all-reduce each completes; the residual stream x stays replicated.
 */
#include "llm_shards/llama.h"

#include "llm_shards/llama_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <string.h>

struct am_llama_ctx {
    const am_llama_model *m;
    am_backend *be;
    am_tp_comm *comm;  /* NULL: single process */
    int32_t n_ctx;     /* T: positions the cache holds */
    int32_t max_batch; /* B: rows per forward chunk */
    int32_t n_past;    /* positions filled */
    float *k_cache;    /* (L, T, Hkv_l*D) */
    float *v_cache;    /* (L, T, Hkv_l*D) */
    float *x;          /* (B, C) residual stream */
    float *xb;         /* (B, C) normalised input of a sub-block */
    float *q;          /* (B, H_l*D) */
    float *att;        /* (B, H_l*D) attention output */
    float *proj;       /* (B, C) output projection before the residual add */
    float *hb;         /* (B, F_l) gate, then silu(gate) * up */
    float *hb2;        /* (B, F_l) up */
    int32_t *pos;      /* (B) positions of the chunk's rows */
    /* Groups only (P > 1): the vocab-split lm_head. */
    float *logits_l;   /* (AM_TP_LOGITS_ROWS, V_l) this rank's logits */
    float *gathered;   /* (AM_TP_LOGITS_ROWS, V) leader: rank-major gathered rows */
    int64_t *vocab_n;  /* (P) V_l of every rank */
    int64_t *vocab0;   /* (P) first vocab row of every rank */
    int64_t *counts;   /* (P) scratch for gatherv counts */
};

int am__llama_ctx_create(const am_llama_model *m, am_backend *be, am_tp_comm *comm, int32_t n_ctx,
                         int32_t max_batch, am_llama_ctx **out) {
    const am_llama_config *cfg = &m->cfg;
    const am_llama_shard *sh = &m->shard;
    if (n_ctx <= 0 || n_ctx > cfg->max_seq_len)
        return am_err_set(AM_ERANGE, "context length %d is outside [1, %d] (the model's max_seq_len)",
                          n_ctx, cfg->max_seq_len);
    if (max_batch <= 0 || max_batch > 65536)
        return am_err_set(AM_ERANGE, "max_batch %d is outside [1, 65536]", max_batch);
    int32_t P = comm ? comm->size : 1;
    if (sh->size != P || (comm && sh->rank != comm->rank))
        return am_err_set(AM_EINVAL, "the model is slice %d of %d but the context is for rank %d of %d%s",
                          sh->rank, sh->size, comm ? comm->rank : 0, P,
                          comm ? "" : " (a sharded model needs a group context, see tp.h)");
    am_llama_ctx *c = am_calloc(1, sizeof *c);
    if (!c) return AM_ENOMEM;
    c->m = m;
    c->be = be;
    c->comm = comm;
    c->n_ctx = n_ctx;
    c->max_batch = max_batch;
    size_t B = (size_t)max_batch, C = (size_t)cfg->dim, F = (size_t)sh->ffn_dim;
    size_t QD = (size_t)sh->n_heads * cfg->head_dim, KD = (size_t)sh->n_kv_heads * cfg->head_dim;
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
    int ok = c->k_cache && c->v_cache && c->x && c->xb && c->q && c->att && c->proj && c->hb && c->hb2 && c->pos;
    if (ok && P > 1) {
        c->logits_l = am_aligned_alloc((size_t)AM_TP_LOGITS_ROWS * (size_t)sh->n_vocab * sizeof(float));
        c->vocab_n = am_calloc((size_t)P, sizeof(int64_t));
        c->vocab0 = am_calloc((size_t)P, sizeof(int64_t));
        c->counts = am_calloc((size_t)P, sizeof(int64_t));
        if (sh->rank == 0)
            c->gathered = am_aligned_alloc((size_t)AM_TP_LOGITS_ROWS * (size_t)cfg->vocab_size * sizeof(float));
        ok = c->logits_l && c->vocab_n && c->vocab0 && c->counts && (sh->rank != 0 || c->gathered);
        for (int32_t r = 0; ok && r < P; r++) {
            am_llama_shard other;
            if (am_llama_shard_plan(cfg, r, P, &other)) {
                am_llama_ctx_destroy(&c); /* the model's own plan succeeded with this P */
                return am_err_set(AM_EINTERNAL, "the shard plan of rank %d of %d failed", r, P);
            }
            c->vocab_n[r] = other.n_vocab;
            c->vocab0[r] = other.vocab0;
        }
    }
    if (!ok) {
        am_llama_ctx_destroy(&c);
        return am_err_set(AM_ENOMEM, "cannot allocate a context of %d positions (KV cache %zu MiB)",
                          n_ctx, 2 * cache_floats * sizeof(float) >> 20);
    }
    *out = c;
    return 0;
}

int am_llama_ctx_new(const am_llama_model *m, am_backend *be, int32_t n_ctx, int32_t max_batch,
                     am_llama_ctx **out) {
    return am__llama_ctx_create(m, be, NULL, n_ctx, max_batch, out);
}

void am_llama_ctx_destroy(am_llama_ctx **p) {
    if (!p || !*p) return;
    am_llama_ctx *c = *p;
    float *bufs[] = {c->k_cache, c->v_cache, c->x, c->xb, c->q, c->att, c->proj, c->hb, c->hb2,
                     c->logits_l, c->gathered};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) am_aligned_free(bufs[i]);
    am_aligned_free(c->pos);
    am_free(c->vocab_n);
    am_free(c->vocab0);
    am_free(c->counts);
    am_free(c);
    *p = NULL;
}

void am_llama_ctx_reset(am_llama_ctx *c) { c->n_past = 0; }

int32_t am_llama_ctx_n_past(const am_llama_ctx *c) { return c->n_past; }

int32_t am_llama_ctx_size(const am_llama_ctx *c) { return c->n_ctx; }

const am_llama_model *am_llama_ctx_model(const am_llama_ctx *c) { return c->m; }

void am__llama_ctx_set_n_past(am_llama_ctx *c, int32_t n_past) { c->n_past = n_past; }

/* One chunk of n <= B rows already embedded in c->x; leaves the final hidden
 * states in c->x. */
static int forward_layers(am_llama_ctx *c, int32_t n) {
    const am_llama_model *m = c->m;
    const am_llama_config *cfg = &m->cfg;
    am_backend *be = c->be;
    const am_backend_ops *op = be->ops;
    const am_llama_shard *sh = &m->shard;
    int64_t C = cfg->dim, F = sh->ffn_dim;
    int64_t KD = (int64_t)sh->n_kv_heads * cfg->head_dim;
    int rc;
    for (int32_t i = 0; i < n; i++) c->pos[i] = c->n_past + i;

    for (int l = 0; l < cfg->n_layers; l++) {
        const am_llama_layer *ly = &m->layers[l];
        float *k_layer = c->k_cache + (size_t)l * c->n_ctx * KD; /* (T, Hkv_l*D) */
        float *v_layer = c->v_cache + (size_t)l * c->n_ctx * KD; /* (T, Hkv_l*D) */
        float *k_new = k_layer + (size_t)c->n_past * KD;         /* (n, Hkv_l*D) */
        float *v_new = v_layer + (size_t)c->n_past * KD;         /* (n, Hkv_l*D) */

        /* Attention sub-block. */
        op->rmsnorm(be, c->xb, c->x, ly->attn_norm, n, C, cfg->norm_eps);
        if ((rc = op->matmul(be, &ly->wq, c->xb, c->q, n)) || (rc = op->matmul(be, &ly->wk, c->xb, k_new, n)) ||
            (rc = op->matmul(be, &ly->wv, c->xb, v_new, n)))
            return rc;
        op->rope(be, c->q, c->pos, n, sh->n_heads, cfg->head_dim, cfg->rope_theta, m->rope_layout);
        op->rope(be, k_new, c->pos, n, sh->n_kv_heads, cfg->head_dim, cfg->rope_theta, m->rope_layout);
        op->attention(be, c->att, c->q, k_layer, v_layer, n, c->n_past, sh->n_heads, sh->n_kv_heads,
                      cfg->head_dim, KD);
        if ((rc = op->matmul(be, &ly->wo, c->att, c->proj, n))) return rc;
        if (c->comm && (rc = am_tp_allreduce(c->comm, c->proj, n * C))) return rc; /* sum of the heads' parts */
        op->add(be, c->x, c->proj, n * C);

        /* SwiGLU feed-forward sub-block. */
        op->rmsnorm(be, c->xb, c->x, ly->ffn_norm, n, C, cfg->norm_eps);
        if ((rc = op->matmul(be, &ly->w1, c->xb, c->hb, n)) || (rc = op->matmul(be, &ly->w3, c->xb, c->hb2, n)))
            return rc;
        op->silu_mul(be, c->hb, c->hb2, n * F);
        if ((rc = op->matmul(be, &ly->w2, c->hb, c->proj, n))) return rc;
        if (c->comm && (rc = am_tp_allreduce(c->comm, c->proj, n * C))) return rc; /* sum over F slices */
        op->add(be, c->x, c->proj, n * C);
    }
    return 0;
}

/* The lm_head over rows normalised rows h (rows, C): dst (rows, V). In a group
 * every rank computes its V_l columns and the leader gathers them (dst is
 * NULL on the followers). */
static int lm_head(am_llama_ctx *c, const float *h, int32_t rows, float *dst) {
    const am_llama_model *m = c->m;
    am_backend *be = c->be;
    int64_t C = m->cfg.dim, V = m->cfg.vocab_size;
    if (!c->comm || c->comm->size == 1) return be->ops->matmul(be, &m->output, h, dst, rows);
    int32_t P = c->comm->size, leader = c->comm->rank == 0;
    for (int32_t r = 0; r < rows; r += AM_TP_LOGITS_ROWS) {
        int32_t blk = rows - r < AM_TP_LOGITS_ROWS ? rows - r : AM_TP_LOGITS_ROWS;
        int rc = be->ops->matmul(be, &m->output, h + (size_t)r * C, c->logits_l, blk);
        if (rc) return rc;
        for (int32_t k = 0; k < P; k++) c->counts[k] = c->vocab_n[k] * blk;
        /* One row: rank order is vocab order, so gather straight into dst. */
        float *recv = blk == 1 && leader ? dst + (size_t)r * V : c->gathered;
        if ((rc = am_tp_gatherv(c->comm, c->logits_l, m->shard.n_vocab * blk, recv, c->counts))) return rc;
        if (blk > 1 && leader) {
            const float *src = c->gathered; /* (P blocks of (blk, V_l of that rank)) */
            for (int32_t k = 0; k < P; k++) {
                for (int32_t i = 0; i < blk; i++)
                    memcpy(dst + (size_t)(r + i) * V + c->vocab0[k], src + (size_t)i * c->vocab_n[k],
                           (size_t)c->vocab_n[k] * sizeof(float));
                src += (size_t)blk * c->vocab_n[k];
            }
        }
    }
    return 0;
}

int am__llama_check_input(const am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n) {
    int64_t V = c->m->cfg.vocab_size;
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
    return 0;
}

int am__llama_run(am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n, float *logits,
                  int want_logits, int all_logits) {
    const am_llama_model *m = c->m;
    const am_llama_config *cfg = &m->cfg;
    am_backend *be = c->be;
    int64_t C = cfg->dim, V = cfg->vocab_size;
    if (c->comm) c->comm->stats.n_steps++;
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
        if (want_logits && (all_logits || last_chunk)) {
            /* Only the rows whose logits are wanted go through the final norm and lm_head. */
            int32_t first = all_logits ? 0 : chunk - 1;
            int32_t rows = chunk - first;
            float *dst = logits ? logits + (all_logits ? (size_t)done * V : 0) : NULL;
            be->ops->rmsnorm(be, c->xb, c->x + (size_t)first * C, m->norm, rows, C, cfg->norm_eps);
            if ((rc = lm_head(c, c->xb, rows, dst))) return rc;
        }
        done += chunk;
    }
    return 0;
}

int am_llama_eval(am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n, float *logits,
                  int all_logits) {
    int rc = am__llama_check_input(c, ids, embd, n);
    if (rc) return rc;
    am_tp_comm *comm = c->comm;
    if (!comm || comm->size == 1) return am__llama_run(c, ids, embd, n, logits, logits != NULL, all_logits);
    if (comm->rank != 0)
        return am_err_set(AM_EINVAL, "eval: rank %d of a group follows the leader's steps (am_tp_follow)", comm->rank);
    if ((rc = am__tp_send_eval(comm, c->n_past, ids, embd, n, c->m->cfg.dim, logits != NULL, all_logits)))
        am_tp_fatal(comm, rc, "broadcasting a step");
    /* From here on the followers are computing this step with us. */
    if ((rc = am__llama_run(c, ids, embd, n, logits, logits != NULL, all_logits)))
        am_tp_fatal(comm, rc, "forward step");
    return 0;
}
