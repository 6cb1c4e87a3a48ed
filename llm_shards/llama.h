/* llm_shards/llama.h - the LLaMA-2 decoder: model loading and the forward pass.
 *
 * am_llama_load() maps a checkpoint (core/ckpt.h) and resolves the decoder's
 * weights by the naming convention of its format, zero-copy:
 *   - HF safetensors (model.layers.N.self_attn.q_proj.weight, ...; config from
 *     config.json beside the weights). q/k are stored permuted for rotate_half,
 *     so the model runs RoPE in the AM_ROPE_HALVES layout. HF LLaVA-1.5
 *     checkpoints as published (language_model.model.*, language_model.lm_head.*,
 *     the config in "text_config" over LlamaConfig's defaults) load the same way.
 *   - Meta names (tok_embeddings.weight, layers.N.attention.wq.weight, ...), as
 *     exposed for llama2.c checkpoints, and GGUF (token_embd.weight,
 *     blk.N.attn_q.weight, ...; config from llama.* metadata): adjacent pairs.
 * Only the RMSNorm weights are copied (converted to f32). Every tensor's shape
 * is checked against the config; a missing or mis-shaped tensor is an error
 * naming the file and the tensor.
 *
 * A context (am_llama_ctx) owns a KV cache and the scratch buffers of the
 * forward pass, all in backend memory (the weights are made usable by the
 * backend once per context, am_backend_ops.upload_matrix). Its cache is
 * either one contiguous sequence (am_llama_ctx_new: am_llama_eval appends to
 * it) or a paged pool of fixed-size blocks shared by many sequences
 * (am_llama_ctx_new_paged: am_llama_decode runs one step of a batch whose
 * sequences bring their own block tables; llm_shards/sched.h decides them).
 * Both run the same layer loop: one GEMM per weight matrix over all rows of a
 * step, attention per sequence over its blocks.
 *
 * Tensor parallelism (docs/model-spec.md section 2, llm_shards/tp.h): a model may
 * be loaded as one slice of a group of P ranks (am_llama_load_shard). Its
 * matrices then hold only that rank's part: column-parallel q/k/v/gate/up and
 * the vocab-split lm_head are zero-copy row ranges of the mapped tensors;
 * row-parallel o/down column ranges are copied once into one owned buffer
 * (only those byte ranges of the file are read, and the source pages are
 * released afterwards), so a rank keeps about 1/P of the weights resident.
 * The embedding and the norms are replicated. The same layer loop runs in
 * both cases; a context created through tp.h sums the partial outputs of o
 * and down across the group.
 */
#ifndef AM_LLAMA_H
#define AM_LLAMA_H

#include "core/backend.h"
#include "core/ckpt.h"

#include <stdint.h>

#define AM_LLAMA_BOS        1
#define AM_LLAMA_EOS        2
#define AM_LLAMA_MAX_LAYERS 1024
/* Bounds on a context's rows per step and KV blocks. */
#define AM_LLAMA_MAX_BATCH     65536
#define AM_LLAMA_MAX_KV_BLOCKS (1 << 24)

typedef struct am_llama_config {
    int32_t dim;         /* C: model width */
    int32_t n_layers;    /* L */
    int32_t n_heads;     /* H */
    int32_t n_kv_heads;  /* Hkv; H % Hkv == 0 */
    int32_t head_dim;    /* D = C / H */
    int32_t ffn_dim;     /* F: SwiGLU hidden width */
    int32_t vocab_size;  /* V */
    int32_t max_seq_len; /* context length */
    float norm_eps;      /* RMSNorm epsilon, 1e-5 for LLaMA-2 */
    float rope_theta;    /* 10000 for LLaMA-2 */
} am_llama_config;

/* The weight tensors of a decoder, and their names in each naming scheme. */
typedef enum { AM_NAMES_HF, AM_NAMES_META, AM_NAMES_GGUF } am_llama_naming;
typedef enum {
    AM_W_TOK,
    AM_W_NORM,
    AM_W_OUTPUT,
    AM_W_ATTN_NORM,
    AM_W_Q,
    AM_W_K,
    AM_W_V,
    AM_W_O,
    AM_W_FFN_NORM,
    AM_W_GATE,
    AM_W_DOWN,
    AM_W_UP,
    AM_W_COUNT
} am_llama_weight;
/* printf format of a weight's name; per-layer names hold one %d for the layer. */
const char *am_llama_weight_name(am_llama_naming naming, am_llama_weight w);

/* Which slice of the model a rank of a tensor-parallel group of P holds.
 * A single process is rank 0 of 1 and holds everything. Local sizes carry the
 * suffix _l in shape comments (H_l, Hkv_l, F_l, V_l). */
typedef struct am_llama_shard {
    int32_t rank, size;           /* this rank, P */
    int32_t n_heads, head0;       /* H_l = H / P query heads: [head0, head0 + H_l) */
    int32_t n_kv_heads, kv_head0; /* Hkv_l kv heads: Hkv / P, or 1 (replicated) when P > Hkv */
    int32_t ffn_dim, ffn0;        /* F_l = F / P SwiGLU features: [ffn0, ffn0 + F_l) */
    int32_t n_vocab,
        vocab0; /* V_l lm_head rows [vocab0, vocab0 + V_l): V split as evenly as possible */
} am_llama_shard;

#define AM_TP_MAX_RANKS 256

/* The slice of rank `rank` in a group of `size`. Checks, with a message
 * naming the field and P: 1 <= size <= AM_TP_MAX_RANKS, 0 <= rank < size,
 * P divides n_heads and ffn_dim, and either P divides n_kv_heads or
 * n_kv_heads divides P (kv heads replicated). Returns 0 or AM_EINVAL/AM_ERANGE.
 * Block-quantized weights also need the o/down column splits (H_l*D, F_l) to
 * be multiples of 32; am_llama_load_shard checks that once it sees the dtype. */
int am_llama_shard_plan(const am_llama_config *cfg, int32_t rank, int32_t size,
                        am_llama_shard *out);

typedef struct am_llama_layer {
    float *attn_norm; /* (C) f32 copy */
    am_matrix wq;     /* (H_l*D, C) */
    am_matrix wk;     /* (Hkv_l*D, C) */
    am_matrix wv;     /* (Hkv_l*D, C) */
    am_matrix wo;     /* (C, H_l*D); a copy in the model's slices when P > 1 */
    float *ffn_norm;  /* (C) f32 copy */
    am_matrix w1;     /* gate (F_l, C) */
    am_matrix w2;     /* down (C, F_l); a copy in the model's slices when P > 1 */
    am_matrix w3;     /* up (F_l, C) */
} am_llama_layer;

typedef struct am_llama_model {
    am_llama_config cfg;  /* the whole model's config (global sizes) */
    am_llama_shard shard; /* the part this process holds */
    am_rope_layout rope_layout;
    am_matrix tok_embeddings; /* (V, C) replicated */
    float *norm;              /* (C) final RMSNorm, f32 copy */
    am_matrix output;         /* (V_l, C) lm_head rows (may alias tok_embeddings when tied) */
    am_llama_layer *layers;   /* (L) */
    am_ckpt *ckpt;            /* owns the mappings the matrices point into */
    void *slices; /* owned copies of the row-parallel wo/w2 slices (P > 1), one allocation */
    size_t slices_bytes;
    char *path;
} am_llama_model;

/* Loads a decoder from path (see above). Errors name the file and tensor. */
int am_llama_load(const char *path, am_llama_model **out);
/* Loads rank's slice of a group of size ranks (am_llama_load(path) is rank 0
 * of 1). The config is read and the plan checked (am_llama_shard_plan) before
 * any weight is touched; errors name the file, the tensor or the field and P. */
int am_llama_load_shard(const char *path, int32_t rank, int32_t size, am_llama_model **out);
void am_llama_destroy(am_llama_model **p);
/* Validates a config (positive sizes, divisibility, limits); message names the field. */
int am_llama_config_check(const am_llama_config *cfg);
/* Bytes of the weight matrices this process reads per generated token
 * (layers + lm_head; its slice when sharded). */
size_t am_llama_weight_bytes(const am_llama_model *m);
/* Elements of those matrices: a token costs 2 * params FLOPs in matmuls. */
int64_t am_llama_weight_params(const am_llama_model *m);
/* The dtype of most layer weights (the one a user would call "the model's dtype"). */
am_dtype am_llama_weight_dtype(const am_llama_model *m);

typedef struct am_llama_ctx am_llama_ctx;

/* A context for one sequence of up to n_ctx positions (<= max_seq_len),
 * evaluating up to max_batch tokens per forward call (longer inputs are
 * chunked). The backend is borrowed and must outlive the context. A sharded
 * model (size > 1) needs a group context instead (am_llama_ctx_new_tp in
 * llm_shards/tp.h): AM_EINVAL. */
int am_llama_ctx_new(const am_llama_model *m, am_backend *be, int32_t n_ctx, int32_t max_batch,
                     am_llama_ctx **out);
/* A context with a paged KV cache of n_blocks blocks of block_size positions
 * (am_kv_pages) for am_llama_decode steps of up to max_batch rows. Errors:
 * AM_ERANGE for sizes out of range, AM_ENOMEM naming the cache size. */
int am_llama_ctx_new_paged(const am_llama_model *m, am_backend *be, int32_t n_blocks,
                           int32_t block_size, int32_t max_batch, am_llama_ctx **out);
void am_llama_ctx_destroy(am_llama_ctx **p);

/* KV blocks of block_size positions that fit when this process may use
 * `fraction` (0 < fraction <= 1) of the backend's memory (core/backend_open.h:
 * the GPU's, or the machine's RAM on the CPU) for everything: what is in use
 * already, this model's weights (when the backend copies them: not the CPU's
 * mapped ones), a context's activation buffers for max_batch rows, a
 * AM_LLAMA_KV_RESERVE_BYTES margin for the backend's scratch, and the cache
 * gets the rest (vLLM's --gpu-memory-utilization, measured before the weights
 * are loaded). Call before am_llama_ctx_new_paged on the same backend. 0, or
 * AM_EINVAL (fraction), AM_ENOMEM (not even one block fits: the message gives
 * the budget), AM_EIO (memory could not be read). */
#define AM_LLAMA_KV_RESERVE_BYTES ((size_t)512 << 20)
int am_llama_kv_blocks_fit(const am_llama_model *m, am_backend *be, double fraction,
                           int32_t block_size, int32_t max_batch, int32_t *n_blocks);
/* Forgets the sequence (positions restart at 0). */
void am_llama_ctx_reset(am_llama_ctx *c);
/* Positions already in the KV cache (contiguous contexts). */
int32_t am_llama_ctx_n_past(const am_llama_ctx *c);
/* Positions the cache can hold (n_ctx, or n_blocks * block_size). */
int32_t am_llama_ctx_size(const am_llama_ctx *c);
int32_t am_llama_ctx_n_blocks(const am_llama_ctx *c);
int32_t am_llama_ctx_block_size(const am_llama_ctx *c);
int32_t am_llama_ctx_max_batch(const am_llama_ctx *c);
const am_llama_model *am_llama_ctx_model(const am_llama_ctx *c);

/* A row of a step whose input is an embedding row rather than a token id. */
#define AM_LLAMA_EMBD_ROW (-1)

/* One forward step over several sequences of a paged context. Rows are
 * grouped by sequence: seqs[s] owns rows row0 .. row0 + m - 1, and the
 * sequences tile [0, n_rows) in order. */
typedef struct am_llama_batch {
    int32_t n_rows;            /* M: 1 .. max_batch */
    const int32_t *ids;        /* (M) token ids, or AM_LLAMA_EMBD_ROW */
    const float *embd;         /* (E, C) host rows for the AM_LLAMA_EMBD_ROW rows, in row order */
    int32_t n_seqs;            /* >= 1 */
    const am_attn_seq *seqs;   /* (n_seqs) rows, positions, block tables (host memory) */
    const int32_t *n_blocks;   /* (n_seqs) length of each block table */
    int32_t n_logits;          /* rows whose logits are wanted */
    const int32_t *logit_rows; /* (n_logits) those rows, ascending */
} am_llama_batch;

/* Runs one step: stores every row's K/V at its position in its sequence's
 * blocks and writes logits (n_logits, V) (host memory; may be NULL when
 * n_logits is 0). Positions before a sequence's pos0 must already be in its
 * blocks. Checked before any compute, with a message naming the sequence or
 * row: the tiling, token ids in [0, V), block ids in [0, n_blocks), block
 * tables long enough, positions within max_seq_len (AM_EINVAL / AM_ERANGE).
 * On the leader of a group context the whole group runs the step (tp.h). */
int am_llama_decode(am_llama_ctx *c, const am_llama_batch *b, float *logits);

/* Appends n tokens at positions n_past.. and runs the decoder over them.
 * Input rows are token ids (ids != NULL) or embedding rows (embd (n, C), the
 * modality-token path; ids == NULL). logits receives (n, V) rows when all_logits,
 * else (1, V) for the last position; may be NULL. Errors: AM_EINVAL for a
 * token id outside [0, V), AM_ERANGE when the context would overflow (the
 * cache is left unchanged).
 * On the leader (rank 0) of a tensor-parallel context this is the whole
 * group's step: it is broadcast to the followers (tp.h) after the checks
 * above, and the full logits are gathered here. A failure after the
 * broadcast cannot be undone on the other ranks, so it ends the group. */
int am_llama_eval(am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n, float *logits,
                  int all_logits);

#endif
