/* llm_shards/mkmodel.h - deterministic random-init LLaMA checkpoints at named shapes.
 *
 * Throughput experiments and correctness tests need real-format checkpoints
 * of real shapes without trained weights. Every tensor is drawn from its own
 * counter-based stream (seed, tensor role, layer, element index), so the same
 * (shape, seed) gives the same model in every format and dtype: the HF
 * safetensors copy stores q/k permuted for rotate_half exactly as HF's
 * conversion script does, GGUF and llama2.c store Meta's adjacent-pair layout,
 * and all of them compute the same function.
 *
 * Initialisation: linear weights uniform with variance 1/fan_in (activations
 * keep unit scale through the layers, so logits are well separated and greedy
 * ids are robust to rounding), embeddings uniform with unit variance, norm
 * weights 1 + uniform(-0.1, 0.1).
 */
#ifndef AM_MKMODEL_H
#define AM_MKMODEL_H

#include "core/dtype.h"
#include "llm_shards/llama.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { AM_FORMAT_SAFETENSORS, AM_FORMAT_GGUF, AM_FORMAT_LLAMA2C } am_model_format;

typedef struct am_mkmodel_opts {
    const char *shape; /* tiny, 15m, 110m, 1b, 7b, 13b, 70b */
    int32_t n_layers;  /* 0 = the shape's own */
    am_model_format format;
    am_dtype dtype; /* f32 f16 bf16 (all formats but llama2c: f32 only); q8_0 q4_0 (gguf) */
    uint64_t seed;
    const char *out;       /* safetensors: a directory (created); gguf, llama2c: a file */
    const char *tokenizer; /* a tokenizer.model/.bin to embed; NULL = synthetic vocabulary */
    size_t shard_bytes;    /* safetensors: max bytes per shard (0 = 4 GiB) */
} am_mkmodel_opts;

/* The config of a named shape (n_layers applied when > 0). AM_EINVAL names
 * the unknown shape and lists the known ones. */
int am_mkmodel_shape(const char *name, int32_t n_layers, am_llama_config *out);
/* Comma-separated list of the shape names. */
const char *am_mkmodel_shape_names(void);
int am_mkmodel_parse_format(const char *name, am_model_format *out);

/* Writes the checkpoint (and its tokenizer) described by o. */
int am_mkmodel_write(const am_mkmodel_opts *o);

#endif
