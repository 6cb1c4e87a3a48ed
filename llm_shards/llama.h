/* llm_shards/llama.h - the LLaMA-2 decoder: model loading and the forward pass.
 *
 * am_llama_load() maps a checkpoint (core/ckpt.h) and resolves the decoder's
 * weights by the naming convention of its format, zero-copy:
 *   - HF safetensors (model.layers.N.self_attn.q_proj.weight, ...; config from
 *     config.json beside the weights). q/k are stored permuted for rotate_half,
 *     so the model runs RoPE in the AM_ROPE_HALVES layout.
 *   - Meta names (tok_embeddings.weight, layers.N.attention.wq.weight, ...), as
 *     exposed for llama2.c checkpoints, and GGUF (token_embd.weight,
 *     blk.N.attn_q.weight, ...; config from llama.* metadata): adjacent pairs.
 * Only the RMSNorm weights are copied (converted to f32). Every tensor's shape
 * is checked against the config; a missing or mis-shaped tensor is an error
 * naming the file and the tensor.
 *
 * A context (am_llama_ctx) owns a KV cache for one sequence and the scratch
 * buffers of the forward pass; the continuous-batching scheduler (paged KV)
 * builds on the same layer code later.
 */
#ifndef AM_LLAMA_H
#define AM_LLAMA_H

#include "core/backend.h"
#include "core/ckpt.h"

#include <stdint.h>

#define AM_LLAMA_BOS 1
#define AM_LLAMA_EOS 2
#define AM_LLAMA_MAX_LAYERS 1024

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
    AM_W_TOK, AM_W_NORM, AM_W_OUTPUT, AM_W_ATTN_NORM, AM_W_Q, AM_W_K, AM_W_V, AM_W_O,
    AM_W_FFN_NORM, AM_W_GATE, AM_W_DOWN, AM_W_UP, AM_W_COUNT
} am_llama_weight;
/* printf format of a weight's name; per-layer names hold one %d for the layer. */
const char *am_llama_weight_name(am_llama_naming naming, am_llama_weight w);

typedef struct am_llama_layer {
    float *attn_norm; /* (C) f32 copy */
    am_matrix wq;     /* (H*D, C) */
    am_matrix wk;     /* (Hkv*D, C) */
    am_matrix wv;     /* (Hkv*D, C) */
    am_matrix wo;     /* (C, H*D) */
    float *ffn_norm;  /* (C) f32 copy */
    am_matrix w1;     /* gate (F, C) */
    am_matrix w2;     /* down (C, F) */
    am_matrix w3;     /* up (F, C) */
} am_llama_layer;

typedef struct am_llama_model {
    am_llama_config cfg;
    am_rope_layout rope_layout;
    am_matrix tok_embeddings; /* (V, C) */
    float *norm;              /* (C) final RMSNorm, f32 copy */
    am_matrix output;         /* (V, C) lm_head (may alias tok_embeddings when tied) */
    am_llama_layer *layers;   /* (L) */
    am_ckpt *ckpt;            /* owns the mappings the matrices point into */
    char *path;
} am_llama_model;

/* Loads a decoder from path (see above). Errors name the file and tensor. */
int am_llama_load(const char *path, am_llama_model **out);
void am_llama_destroy(am_llama_model **p);
/* Validates a config (positive sizes, divisibility, limits); message names the field. */
int am_llama_config_check(const am_llama_config *cfg);
/* Bytes of all weight matrices read per generated token (layers + lm_head). */
size_t am_llama_weight_bytes(const am_llama_model *m);
/* Elements of those matrices: a token costs 2 * params FLOPs in matmuls. */
int64_t am_llama_weight_params(const am_llama_model *m);
/* The dtype of most layer weights (the one a user would call "the model's dtype"). */
am_dtype am_llama_weight_dtype(const am_llama_model *m);

typedef struct am_llama_ctx am_llama_ctx;

/* A context for one sequence of up to n_ctx positions (<= max_seq_len),
 * evaluating up to max_batch tokens per forward call (longer inputs are
 * chunked). The backend is borrowed and must outlive the context. */
int am_llama_ctx_new(const am_llama_model *m, am_backend *be, int32_t n_ctx, int32_t max_batch,
                     am_llama_ctx **out);
void am_llama_ctx_destroy(am_llama_ctx **p);
/* Forgets the sequence (positions restart at 0). */
void am_llama_ctx_reset(am_llama_ctx *c);
/* Positions already in the KV cache. */
int32_t am_llama_ctx_n_past(const am_llama_ctx *c);
/* Positions the cache can hold (n_ctx given at creation). */
int32_t am_llama_ctx_size(const am_llama_ctx *c);
const am_llama_model *am_llama_ctx_model(const am_llama_ctx *c);

/* Appends n tokens at positions n_past.. and runs the decoder over them.
 * Input rows are token ids (ids != NULL) or embedding rows (embd (n, C), the
 * modality-token path; ids == NULL). logits receives (n, V) rows when all_logits,
 * else (1, V) for the last position; may be NULL. Errors: AM_EINVAL for a
 * token id outside [0, V), AM_ERANGE when the context would overflow (the
 * cache is left unchanged). */
int am_llama_eval(am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n,
                  float *logits, int all_logits);

#endif
