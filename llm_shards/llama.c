/* llm_shards/llama.c - the LLaMA-2 forward pass over a paged KV cache.
 *
 * Reads like docs/model-spec.md section 1: for each layer
 *   h   = x + Wo . Attn(RoPE(Wq . RMSNorm(x)), RoPE(Wk . RMSNorm(x)), Wv . RMSNorm(x))
 *   out = h + W2 . (silu(W1 . RMSNorm(h)) * (W3 . RMSNorm(h)))
 * then a final RMSNorm and the lm_head. All rows of a step (prefill chunks and
 * decode tokens of any number of sequences) go through each weight matrix at
 * once, so a step is one GEMM per matrix; new K/V rows are stored in each
 * sequence's blocks and attention runs per sequence over them. A contiguous
 * single-sequence context is the case of one block as long as the context.
 * Every op is a backend call on backend memory.
 *
 * The same loop runs one slice of a tensor-parallel group (tp.h): the
 * matrices are then this rank's slices (H_l heads, Hkv_l kv heads, F_l
 * features, V_l vocab rows), and Wo . att and W2 . h are partial sums that
 * one all-reduce each completes; the residual stream x stays replicated.
 */
#include "llm_shards/llama.h"

#include "llm_shards/llama_internal.h"

#include "core/alloc.h"
#include "core/backend_open.h"
#include "core/error.h"
#include "core/log.h"

#include <string.h>

struct am_llama_ctx {
    const am_llama_model *m;
    am_backend *be;
    am_tp_comm *comm;                /* NULL: single process */
    am__llama_step_sender send_step; /* group leader: broadcasts each step (tp.c) */
    int32_t max_batch;               /* B: rows per step */
    int32_t n_blocks;                /* blocks in the KV pool */
    int32_t block_size;              /* positions per block */
    int32_t n_past;                  /* contiguous (one block): positions filled */
    int32_t table0[1];               /* contiguous: the block table {0} */
    /* The weights as the backend sees them (the host views on the CPU). */
    am_llama_layer *layers; /* (L) matrices via upload_matrix; norms in backend memory */
    am_matrix tok_embeddings, output;
    float *norm;  /* (C) */
    int uploaded; /* norms were copied to backend memory (free them) */
    /* Backend memory: the KV pools, and the step's activations carved from one
     * allocation (act, laid out by act_carve). */
    float *k_pool;     /* (L, n_blocks, block_size, Hkv_l*D) */
    float *v_pool;     /* (L, n_blocks, block_size, Hkv_l*D) */
    float *x;          /* (B, C) residual stream */
    float *xb;         /* (B, C) normalised input of a sub-block */
    float *q;          /* (B, H_l*D) */
    float *k_new;      /* (B, Hkv_l*D) this step's keys */
    float *v_new;      /* (B, Hkv_l*D) this step's values */
    float *att;        /* (B, H_l*D) attention output */
    float *proj;       /* (B, C) output projection before the residual add */
    float *hb;         /* (B, F_l) gate, then silu(gate) * up */
    float *hb2;        /* (B, F_l) up */
    int32_t *pos_dev;  /* (B) positions of the step's rows */
    int32_t *ids_dev;  /* (B) token ids of the step's rows */
    float *logits_dev; /* (AM_LLAMA_LOGITS_ROWS, V_l) this rank's logits of a block of rows */
    char *act;         /* the allocation x ... logits_dev live in */
    /* Host memory. */
    int32_t *pos;    /* (B) */
    int32_t *ids;    /* (B) contiguous eval: the chunk's ids */
    int32_t *rows;   /* (B) contiguous eval: the chunk's logit rows */
    float *stage;    /* (B, C) host staging of all-reduces when backend memory is not host memory */
    float *logits_h; /* (AM_LLAMA_LOGITS_ROWS, V_l) staging of logits_dev, likewise */
    /* Groups only (P > 1): the vocab-split lm_head. */
    float *gathered;  /* (AM_LLAMA_LOGITS_ROWS, V) leader: rank-major gathered rows */
    int64_t *vocab_n; /* (P) V_l of every rank */
    int64_t *vocab0;  /* (P) first vocab row of every rank */
    int64_t *counts;  /* (P) scratch for gatherv counts */
};

/* Copies the weights the forward pass reads into backend memory (a no-op view
 * on the CPU backend). */
static int upload_weights(am_llama_ctx *c) {
    const am_llama_model *m = c->m;
    am_backend *be = c->be;
    const int L = m->cfg.n_layers;
    const size_t C = (size_t)m->cfg.dim;
    c->layers = am_calloc((size_t)L, sizeof *c->layers);
    if (!c->layers) return AM_ENOMEM;
    int rc = be->ops->upload_matrix(be, &m->tok_embeddings, &c->tok_embeddings);
    if (!rc) rc = be->ops->upload_matrix(be, &m->output, &c->output);
    for (int l = 0; !rc && l < L; l++) {
        const am_llama_layer *src = &m->layers[l];
        am_llama_layer *dst = &c->layers[l];
        const am_matrix *from[] = {&src->wq, &src->wk, &src->wv, &src->wo,
                                   &src->w1, &src->w2, &src->w3};
        am_matrix *to[] = {&dst->wq, &dst->wk, &dst->wv, &dst->wo, &dst->w1, &dst->w2, &dst->w3};
        for (int i = 0; !rc && i < 7; i++)
            rc = be->ops->upload_matrix(be, from[i], to[i]);
        dst->attn_norm = src->attn_norm;
        dst->ffn_norm = src->ffn_norm;
    }
    if (rc) return rc;
    c->norm = m->norm;
    if (be->host_memory) return 0;
    /* Norm weights: one backend buffer of (2L + 1, C). */
    float *norms = be->ops->alloc(be, (2 * (size_t)L + 1) * C * sizeof(float));
    if (!norms) return AM_ENOMEM;
    c->uploaded = 1;
    for (int l = 0; !rc && l < L; l++) {
        float *a = norms + 2 * (size_t)l * C, *f = a + C;
        rc = be->ops->upload(be, a, m->layers[l].attn_norm, C * sizeof(float));
        if (!rc) rc = be->ops->upload(be, f, m->layers[l].ffn_norm, C * sizeof(float));
        c->layers[l].attn_norm = a;
        c->layers[l].ffn_norm = f;
    }
    c->norm = norms + 2 * (size_t)L * C;
    if (!rc) rc = be->ops->upload(be, c->norm, m->norm, C * sizeof(float));
    return rc;
}

/* The step's activations, as pieces of one backend allocation: the one list of them.
 * With c NULL it only counts the bytes (am_llama_kv_blocks_fit); otherwise it points
 * c's buffers into base (am__llama_ctx_create). Pieces start 256-byte aligned, as
 * every vector load and cuBLAS operand wants. Returns the allocation's size. */
static size_t act_carve(const am_llama_model *m, size_t B, am_llama_ctx *c, char *base) {
    const am_llama_shard *sh = &m->shard;
    const size_t C = (size_t)m->cfg.dim, F = (size_t)sh->ffn_dim,
                 QD = (size_t)sh->n_heads * m->cfg.head_dim,
                 KD = (size_t)sh->n_kv_heads * m->cfg.head_dim;
    size_t off = 0;
#define PIECE(field, type, n)                                                                      \
    do {                                                                                           \
        if (c) c->field = (type *)(void *)(base + off);                                            \
        off += ((n) * sizeof(type) + 255) & ~(size_t)255;                                          \
    } while (0)
    PIECE(x, float, B *C);
    PIECE(xb, float, B *C);
    PIECE(q, float, B *QD);
    PIECE(k_new, float, B *KD);
    PIECE(v_new, float, B *KD);
    PIECE(att, float, B *QD);
    PIECE(proj, float, B *C);
    PIECE(hb, float, B *F);
    PIECE(hb2, float, B *F);
    PIECE(pos_dev, int32_t, B);
    PIECE(ids_dev, int32_t, B);
    PIECE(logits_dev, float, (size_t)AM_LLAMA_LOGITS_ROWS *(size_t)sh->n_vocab);
#undef PIECE
    return off;
}

int am_llama_kv_blocks_fit(const am_llama_model *m, am_backend *be, double fraction,
                           int32_t block_size, int32_t max_batch, int32_t *n_blocks) {
    *n_blocks = 0;
    if (!(fraction > 0.0 && fraction <= 1.0))
        return am_err_set(AM_EINVAL, "memory fraction %g is outside (0, 1]", fraction);
    if (block_size <= 0 || max_batch <= 0)
        return am_err_set(AM_EINVAL, "block size %d, max_batch %d: both must be positive",
                          block_size, max_batch);
    size_t free_b = 0, total_b = 0;
    int rc = am_backend_memory(be, &free_b, &total_b);
    if (rc) return rc;
    const am_llama_config *cfg = &m->cfg;
    const double KD = (double)m->shard.n_kv_heads * cfg->head_dim;
    const double act = (double)act_carve(m, (size_t)max_batch, NULL, NULL);
    const double weights =
        be->host_memory ? 0.0
                        : (double)am_llama_weight_bytes(m) +
                              (double)m->tok_embeddings.rows * (double)m->tok_embeddings.row_bytes;
    const double used = (double)(total_b - free_b);
    const double budget =
        fraction * (double)total_b - used - weights - act - (double)AM_LLAMA_KV_RESERVE_BYTES;
    const double per_block =
        2.0 * cfg->n_layers * (double)block_size * KD * sizeof(float); /* K and V */
    const double fit = budget / per_block;
    if (fit < 1.0)
        return am_err_set(
            AM_ENOMEM,
            "KV cache: %g of %.1f GiB is %.1f GiB, but %.1f GiB is in use, the weights take "
            "%.1f GiB and the activations of %d rows %.2f GiB: no room for one block of %d "
            "positions "
            "(%.1f MiB)",
            fraction, total_b / 1073741824.0, fraction * total_b / 1073741824.0,
            used / 1073741824.0, weights / 1073741824.0, max_batch, act / 1073741824.0, block_size,
            per_block / 1048576.0);
    *n_blocks = fit > AM_LLAMA_MAX_KV_BLOCKS ? AM_LLAMA_MAX_KV_BLOCKS : (int32_t)fit;
    AM_LOGI("KV cache: %d blocks of %d positions (%.1f GiB) in %.2f of %s's %.1f GiB", *n_blocks,
            block_size, *n_blocks * per_block / 1073741824.0, fraction, be->name,
            total_b / 1073741824.0);
    return 0;
}

int am__llama_ctx_create(const am_llama_model *m, am_backend *be, am_tp_comm *comm,
                         int32_t n_blocks, int32_t block_size, int32_t max_batch,
                         am_llama_ctx **out) {
    *out = NULL;
    const am_llama_config *cfg = &m->cfg;
    const am_llama_shard *sh = &m->shard;
    if (block_size <= 0 || block_size > cfg->max_seq_len)
        return am_err_set(AM_ERANGE,
                          "KV block size %d is outside [1, %d] (the model's max_seq_len)",
                          block_size, cfg->max_seq_len);
    if (n_blocks <= 0 || n_blocks > AM_LLAMA_MAX_KV_BLOCKS)
        return am_err_set(AM_ERANGE, "KV blocks %d is outside [1, %d]", n_blocks,
                          AM_LLAMA_MAX_KV_BLOCKS);
    if (max_batch <= 0 || max_batch > AM_LLAMA_MAX_BATCH)
        return am_err_set(AM_ERANGE, "max_batch %d is outside [1, %d]", max_batch,
                          AM_LLAMA_MAX_BATCH);
    int32_t P = comm ? comm->size : 1;
    if (sh->size != P || (comm && sh->rank != comm->rank))
        return am_err_set(AM_EINVAL,
                          "the model is slice %d of %d but the context is for rank %d of %d%s",
                          sh->rank, sh->size, comm ? comm->rank : 0, P,
                          comm ? "" : " (a sharded model needs a group context, see tp.h)");
    am_llama_ctx *c = am_calloc(1, sizeof *c);
    if (!c) return AM_ENOMEM;
    c->m = m;
    c->be = be;
    c->comm = comm;
    c->n_blocks = n_blocks;
    c->block_size = block_size;
    c->max_batch = max_batch;
    size_t B = (size_t)max_batch, C = (size_t)cfg->dim;
    size_t KD = (size_t)sh->n_kv_heads * cfg->head_dim;
    size_t VL = (size_t)sh->n_vocab, R = AM_LLAMA_LOGITS_ROWS;
    size_t pool_floats = (size_t)cfg->n_layers * (size_t)n_blocks * (size_t)block_size * KD;
    int rc = upload_weights(c);
    if (rc) {
        am_llama_ctx_destroy(&c);
        return am_err_set(rc, "cannot make the weights usable by the %s backend", be->name);
    }
#define BE_ALLOC(n) be->ops->alloc(be, (n))
    c->k_pool = BE_ALLOC(pool_floats * sizeof(float));
    c->v_pool = BE_ALLOC(pool_floats * sizeof(float));
    c->act = BE_ALLOC(act_carve(m, B, NULL, NULL));
    if (c->act) act_carve(m, B, c, c->act);
#undef BE_ALLOC
    c->pos = am_malloc(B * sizeof(int32_t));
    c->ids = am_malloc(B * sizeof(int32_t));
    c->rows = am_malloc(B * sizeof(int32_t));
    int ok = c->k_pool && c->v_pool && c->act && c->pos && c->ids && c->rows;
    if (ok && !be->host_memory) {
        c->stage = am_aligned_alloc(B * C * sizeof(float));
        c->logits_h = am_aligned_alloc(R * VL * sizeof(float));
        ok = c->stage && c->logits_h;
    }
    if (ok && P > 1) {
        c->vocab_n = am_calloc((size_t)P, sizeof(int64_t));
        c->vocab0 = am_calloc((size_t)P, sizeof(int64_t));
        c->counts = am_calloc((size_t)P, sizeof(int64_t));
        if (sh->rank == 0)
            c->gathered = am_aligned_alloc(R * (size_t)cfg->vocab_size * sizeof(float));
        ok = c->vocab_n && c->vocab0 && c->counts && (sh->rank != 0 || c->gathered);
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
        return am_err_set(AM_ENOMEM,
                          "cannot allocate a context of %d x %d positions (KV cache %zu MiB)",
                          n_blocks, block_size, 2 * pool_floats * sizeof(float) >> 20);
    }
    *out = c;
    return 0;
}

int am_llama_ctx_new(const am_llama_model *m, am_backend *be, int32_t n_ctx, int32_t max_batch,
                     am_llama_ctx **out) {
    if (n_ctx <= 0 || n_ctx > m->cfg.max_seq_len)
        return am_err_set(AM_ERANGE,
                          "context length %d is outside [1, %d] (the model's max_seq_len)", n_ctx,
                          m->cfg.max_seq_len);
    return am__llama_ctx_create(m, be, NULL, 1, n_ctx, max_batch, out);
}

int am_llama_ctx_new_paged(const am_llama_model *m, am_backend *be, int32_t n_blocks,
                           int32_t block_size, int32_t max_batch, am_llama_ctx **out) {
    return am__llama_ctx_create(m, be, NULL, n_blocks, block_size, max_batch, out);
}

void am_llama_ctx_destroy(am_llama_ctx **p) {
    if (!p || !*p) return;
    am_llama_ctx *c = *p;
    am_backend *be = c->be;
    void *dev[] = {c->k_pool, c->v_pool, c->act};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        be->ops->free(be, dev[i]);
    if (c->uploaded && c->layers) be->ops->free(be, c->layers[0].attn_norm);
    am_free(c->layers);
    am_aligned_free(c->stage);
    am_aligned_free(c->logits_h);
    am_aligned_free(c->gathered);
    am_free(c->pos);
    am_free(c->ids);
    am_free(c->rows);
    am_free(c->vocab_n);
    am_free(c->vocab0);
    am_free(c->counts);
    am_free(c);
    *p = NULL;
}

void am_llama_ctx_reset(am_llama_ctx *c) { c->n_past = 0; }

int32_t am_llama_ctx_n_past(const am_llama_ctx *c) { return c->n_past; }

int32_t am_llama_ctx_size(const am_llama_ctx *c) { return c->n_blocks * c->block_size; }

int32_t am_llama_ctx_n_blocks(const am_llama_ctx *c) { return c->n_blocks; }

int32_t am_llama_ctx_block_size(const am_llama_ctx *c) { return c->block_size; }

int32_t am_llama_ctx_max_batch(const am_llama_ctx *c) { return c->max_batch; }

const am_llama_model *am_llama_ctx_model(const am_llama_ctx *c) { return c->m; }

/* x (n) summed over the group, through host memory when the backend's is not. */
static int group_sum(am_llama_ctx *c, float *x, int64_t n) {
    if (!c->comm || c->comm->size == 1) return 0;
    am_backend *be = c->be;
    if (be->host_memory) return am_tp_allreduce(c->comm, x, n);
    size_t bytes = (size_t)n * sizeof(float);
    int rc = be->ops->download(be, c->stage, x, bytes);
    if (!rc) rc = am_tp_allreduce(c->comm, c->stage, n);
    if (!rc) rc = be->ops->upload(be, x, c->stage, bytes);
    return rc;
}

/* The input rows of a step into c->x: token rows through the embedding
 * lookup, runs of AM_LLAMA_EMBD_ROW rows copied from embd. */
static int embed_rows(am_llama_ctx *c, const am_llama_batch *b) {
    am_backend *be = c->be;
    const int64_t C = c->m->cfg.dim;
    int rc = be->ops->upload(be, c->ids_dev, b->ids, (size_t)b->n_rows * sizeof(int32_t));
    const float *e = b->embd;
    for (int32_t r = 0; !rc && r < b->n_rows;) {
        const int is_embd = b->ids[r] == AM_LLAMA_EMBD_ROW;
        int32_t end = r + 1;
        while (end < b->n_rows && (b->ids[end] == AM_LLAMA_EMBD_ROW) == is_embd)
            end++;
        if (is_embd) {
            rc =
                be->ops->upload(be, c->x + (size_t)r * C, e, (size_t)(end - r) * C * sizeof(float));
            e += (size_t)(end - r) * C;
        } else {
            be->ops->get_rows(be, &c->tok_embeddings, c->ids_dev + r, end - r,
                              c->x + (size_t)r * C);
        }
        r = end;
    }
    return rc;
}

/* All layers over the step's M rows in c->x; leaves the final hidden states in c->x. */
static int forward_layers(am_llama_ctx *c, const am_llama_batch *b) {
    const am_llama_model *m = c->m;
    const am_llama_config *cfg = &m->cfg;
    am_backend *be = c->be;
    const am_backend_ops *op = be->ops;
    const am_llama_shard *sh = &m->shard;
    const int32_t n = b->n_rows;
    int64_t C = cfg->dim, F = sh->ffn_dim;
    int64_t KD = (int64_t)sh->n_kv_heads * cfg->head_dim;
    size_t layer_floats = (size_t)c->n_blocks * (size_t)c->block_size * (size_t)KD;
    int rc;
    for (int32_t s = 0; s < b->n_seqs; s++)
        for (int64_t i = 0; i < b->seqs[s].m; i++)
            c->pos[b->seqs[s].row0 + i] = (int32_t)(b->seqs[s].pos0 + i);
    if ((rc = op->upload(be, c->pos_dev, c->pos, (size_t)n * sizeof(int32_t)))) return rc;

    for (int l = 0; l < cfg->n_layers; l++) {
        const am_llama_layer *ly = &c->layers[l];
        am_kv_pages pages = {.k = c->k_pool + l * layer_floats,
                             .v = c->v_pool + l * layer_floats,
                             .block_size = c->block_size,
                             .kv_stride = KD};

        /* Attention sub-block. */
        op->rmsnorm(be, c->xb, c->x, ly->attn_norm, n, C, cfg->norm_eps);
        if ((rc = op->matmul(be, &ly->wq, c->xb, c->q, n)) ||
            (rc = op->matmul(be, &ly->wk, c->xb, c->k_new, n)) ||
            (rc = op->matmul(be, &ly->wv, c->xb, c->v_new, n)))
            return rc;
        op->rope(be, c->q, c->pos_dev, n, sh->n_heads, cfg->head_dim, cfg->rope_theta,
                 m->rope_layout);
        op->rope(be, c->k_new, c->pos_dev, n, sh->n_kv_heads, cfg->head_dim, cfg->rope_theta,
                 m->rope_layout);
        op->kv_store(be, &pages, c->k_new, c->v_new, b->seqs, b->n_seqs);
        op->attention(be, c->att, c->q, &pages, b->seqs, b->n_seqs, sh->n_heads, sh->n_kv_heads,
                      cfg->head_dim);
        if ((rc = op->matmul(be, &ly->wo, c->att, c->proj, n))) return rc;
        if ((rc = group_sum(c, c->proj, n * C))) return rc; /* sum of the heads' parts */
        op->add(be, c->x, c->proj, n * C);

        /* SwiGLU feed-forward sub-block. */
        op->rmsnorm(be, c->xb, c->x, ly->ffn_norm, n, C, cfg->norm_eps);
        if ((rc = op->matmul(be, &ly->w1, c->xb, c->hb, n)) ||
            (rc = op->matmul(be, &ly->w3, c->xb, c->hb2, n)))
            return rc;
        op->silu_mul(be, c->hb, c->hb2, n * F);
        if ((rc = op->matmul(be, &ly->w2, c->hb, c->proj, n))) return rc;
        if ((rc = group_sum(c, c->proj, n * C))) return rc; /* sum over F slices */
        op->add(be, c->x, c->proj, n * C);
    }
    return 0;
}

/* The lm_head over normalised rows h (rows <= AM_LLAMA_LOGITS_ROWS, C) in
 * backend memory: dst (rows, V) in host memory. In a group every rank
 * computes its V_l columns and the leader gathers them (dst is NULL on the
 * followers). */
static int lm_head(am_llama_ctx *c, const float *h, int32_t rows, float *dst) {
    const am_llama_model *m = c->m;
    am_backend *be = c->be;
    const int64_t V = m->cfg.vocab_size, VL = m->shard.n_vocab;
    const size_t bytes = (size_t)rows * (size_t)VL * sizeof(float);
    const int single = !c->comm || c->comm->size == 1;
    /* Where this rank's (rows, V_l) logits end up in host memory. */
    float *mine = be->host_memory ? c->logits_dev : c->logits_h;
    if (single && be->host_memory) return be->ops->matmul(be, &c->output, h, dst, rows);
    int rc = be->ops->matmul(be, &c->output, h, c->logits_dev, rows);
    if (!rc && !be->host_memory)
        rc = be->ops->download(be, single ? dst : c->logits_h, c->logits_dev, bytes);
    if (rc || single) return rc;
    int32_t P = c->comm->size, leader = c->comm->rank == 0;
    for (int32_t k = 0; k < P; k++)
        c->counts[k] = c->vocab_n[k] * rows;
    /* One row: rank order is vocab order, so gather straight into dst. */
    float *recv = rows == 1 && leader ? dst : c->gathered;
    if ((rc = am_tp_gatherv(c->comm, mine, VL * rows, recv, c->counts))) return rc;
    if (rows > 1 && leader) {
        const float *src = c->gathered; /* (P blocks of (rows, V_l of that rank)) */
        for (int32_t k = 0; k < P; k++) {
            for (int32_t i = 0; i < rows; i++)
                memcpy(dst + (size_t)i * V + c->vocab0[k], src + (size_t)i * c->vocab_n[k],
                       (size_t)c->vocab_n[k] * sizeof(float));
            src += (size_t)rows * c->vocab_n[k];
        }
    }
    return 0;
}

/* Logits of the wanted rows, in blocks of AM_LLAMA_LOGITS_ROWS: each row
 * through the final norm into xb, then the lm_head. */
static int step_logits(am_llama_ctx *c, const am_llama_batch *b, float *logits) {
    const am_llama_model *m = c->m;
    am_backend *be = c->be;
    const int64_t C = m->cfg.dim, V = m->cfg.vocab_size;
    for (int32_t done = 0; done < b->n_logits; done += AM_LLAMA_LOGITS_ROWS) {
        int32_t rows =
            b->n_logits - done < AM_LLAMA_LOGITS_ROWS ? b->n_logits - done : AM_LLAMA_LOGITS_ROWS;
        /* Runs of consecutive rows are normalised by one call. */
        for (int32_t i = 0; i < rows;) {
            int32_t r0 = b->logit_rows[done + i], run = 1;
            while (i + run < rows && b->logit_rows[done + i + run] == r0 + run)
                run++;
            be->ops->rmsnorm(be, c->xb + (size_t)i * C, c->x + (size_t)r0 * C, c->norm, run, C,
                             m->cfg.norm_eps);
            i += run;
        }
        int rc = lm_head(c, c->xb, rows, logits ? logits + (size_t)done * V : NULL);
        if (rc) return rc;
    }
    return 0;
}

int am__llama_forward(am_llama_ctx *c, const am_llama_batch *b, float *logits) {
    if (c->comm) c->comm->stats.n_steps++;
    int rc = embed_rows(c, b);
    if (!rc) rc = forward_layers(c, b);
    if (!rc && b->n_logits > 0) rc = step_logits(c, b, logits);
    return rc;
}

int am__llama_check_batch(const am_llama_ctx *c, const am_llama_batch *b, int64_t n_embd_rows) {
    const am_llama_config *cfg = &c->m->cfg;
    const int64_t V = cfg->vocab_size, bs = c->block_size;
    if (b->n_rows < 1 || b->n_rows > c->max_batch)
        return am_err_set(AM_ERANGE, "step: %d rows is outside [1, %d] (the context's max_batch)",
                          b->n_rows, c->max_batch);
    if (b->n_seqs < 1 || b->n_seqs > b->n_rows)
        return am_err_set(AM_EINVAL, "step: %d sequences for %d rows", b->n_seqs, b->n_rows);
    if (b->n_logits < 0 || b->n_logits > b->n_rows)
        return am_err_set(AM_EINVAL, "step: %d logit rows for %d rows", b->n_logits, b->n_rows);
    int64_t next = 0, n_embd = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const am_attn_seq *sq = &b->seqs[s];
        if (sq->row0 != next || sq->m < 1 || sq->row0 + sq->m > b->n_rows)
            return am_err_set(AM_EINVAL,
                              "step: sequence %d has rows [%lld, %lld) but the sequences "
                              "must tile [0, %d) in order",
                              s, (long long)sq->row0, (long long)(sq->row0 + sq->m), b->n_rows);
        next = sq->row0 + sq->m;
        if (sq->pos0 < 0 || sq->pos0 + sq->m > cfg->max_seq_len)
            return am_err_set(AM_ERANGE,
                              "step: sequence %d positions [%lld, %lld) exceed the model's "
                              "max_seq_len %d",
                              s, (long long)sq->pos0, (long long)(sq->pos0 + sq->m),
                              cfg->max_seq_len);
        const int64_t need = (sq->pos0 + sq->m + bs - 1) / bs;
        if (b->n_blocks[s] < need)
            return am_err_set(AM_EINVAL,
                              "step: sequence %d needs %lld blocks for %lld positions but "
                              "its table has %d",
                              s, (long long)need, (long long)(sq->pos0 + sq->m), b->n_blocks[s]);
        for (int64_t k = 0; k < need; k++)
            if (sq->blocks[k] < 0 || sq->blocks[k] >= c->n_blocks)
                return am_err_set(AM_EINVAL, "step: sequence %d block %lld is %d, outside [0, %d)",
                                  s, (long long)k, sq->blocks[k], c->n_blocks);
    }
    if (next != b->n_rows)
        return am_err_set(AM_EINVAL, "step: the sequences cover %lld of %d rows", (long long)next,
                          b->n_rows);
    for (int32_t r = 0; r < b->n_rows; r++) {
        if (b->ids[r] == AM_LLAMA_EMBD_ROW) {
            n_embd++;
        } else if (b->ids[r] < 0 || b->ids[r] >= V) {
            return am_err_set(AM_EINVAL, "step: token id %d at row %d is outside [0, %lld)",
                              b->ids[r], r, (long long)V);
        }
    }
    if (n_embd > 0 && !b->embd)
        return am_err_set(AM_EINVAL, "step: %lld embedding rows but no embd", (long long)n_embd);
    if (n_embd_rows >= 0 && n_embd != n_embd_rows)
        return am_err_set(AM_EINVAL, "step: %lld embedding rows marked, %lld sent",
                          (long long)n_embd, (long long)n_embd_rows);
    for (int32_t i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->n_rows ||
            (i > 0 && b->logit_rows[i] <= b->logit_rows[i - 1]))
            return am_err_set(AM_EINVAL,
                              "step: logit row %d (entry %d) is out of range or not ascending",
                              b->logit_rows[i], i);
    return 0;
}

void am__llama_ctx_set_step_sender(am_llama_ctx *c, am__llama_step_sender send) {
    c->send_step = send;
}

int am_llama_decode(am_llama_ctx *c, const am_llama_batch *b, float *logits) {
    int rc = am__llama_check_batch(c, b, -1);
    if (rc) return rc;
    if (b->n_logits > 0 && !logits)
        return am_err_set(AM_EINVAL, "step: logits wanted but no buffer");
    am_tp_comm *comm = c->comm;
    if (!comm || comm->size == 1) return am__llama_forward(c, b, logits);
    if (comm->rank != 0)
        return am_err_set(AM_EINVAL,
                          "step: rank %d of a group follows the leader's steps (am_tp_follow)",
                          comm->rank);
    if (!c->send_step)
        return am_err_set(AM_EINVAL,
                          "step: a group context is made by am_llama_ctx_new_paged_tp (tp.h)");
    if ((rc = c->send_step(comm, b, c->m->cfg.dim))) am_tp_fatal(comm, rc, "broadcasting a step");
    /* From here on the followers are computing this step with us. */
    if ((rc = am__llama_forward(c, b, logits))) am_tp_fatal(comm, rc, "forward step");
    return 0;
}

/* ---- the contiguous single-sequence API ---- */

int am_llama_eval(am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n, float *logits,
                  int all_logits) {
    const int64_t C = c->m->cfg.dim, V = c->m->cfg.vocab_size;
    /* A contiguous context is one block holding the one sequence. */
    if (c->n_blocks != 1)
        return am_err_set(AM_EINVAL, "eval: a paged context runs steps (am_llama_decode)");
    if (n <= 0) return am_err_set(AM_EINVAL, "eval: no input rows");
    if ((ids == NULL) == (embd == NULL))
        return am_err_set(AM_EINVAL, "eval: give token ids or embedding rows");
    if ((int64_t)c->n_past + n > am_llama_ctx_size(c))
        return am_err_set(AM_ERANGE,
                          "eval: %d positions in the cache + %d new exceed the context of %d",
                          c->n_past, n, am_llama_ctx_size(c));
    /* Checked over the whole input before the first chunk runs (each step checks its own
     * rows again), so a bad id late in a long prompt leaves the cache unchanged. */
    if (ids) {
        for (int32_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V)
                return am_err_set(AM_EINVAL,
                                  "eval: token id %d at input position %d is outside [0, %lld)",
                                  ids[i], i, (long long)V);
    }
    /* Chunks of max_batch rows, each one step of the one sequence. */
    for (int32_t done = 0; done < n;) {
        int32_t chunk = n - done < c->max_batch ? n - done : c->max_batch;
        int last_chunk = done + chunk == n;
        am_attn_seq seq = {.row0 = 0, .m = chunk, .pos0 = c->n_past, .blocks = c->table0};
        int32_t n_blocks = 1;
        int32_t wanted = !logits ? 0 : all_logits ? chunk : last_chunk ? 1 : 0;
        for (int32_t i = 0; i < chunk; i++)
            c->ids[i] = ids ? ids[done + i] : AM_LLAMA_EMBD_ROW;
        for (int32_t i = 0; i < wanted; i++)
            c->rows[i] = all_logits ? i : chunk - 1;
        am_llama_batch b = {.n_rows = chunk,
                            .ids = c->ids,
                            .embd = embd ? embd + (size_t)done * C : NULL,
                            .n_seqs = 1,
                            .seqs = &seq,
                            .n_blocks = &n_blocks,
                            .n_logits = wanted,
                            .logit_rows = c->rows};
        float *dst = wanted ? logits + (all_logits ? (size_t)done * V : 0) : NULL;
        int rc = am_llama_decode(c, &b, dst);
        if (rc) return rc;
        c->n_past += chunk;
        done += chunk;
    }
    return 0;
}
