/* llm_shards/model_files.h - a decoder and its tokenizer, found from one path.
 *
 * Tokenizer lookup when none is given: a GGUF's own metadata; else
 * tokenizer.model, then tokenizer.bin, in the model's directory (or inside
 * the model directory for safetensors directories).
 */
#ifndef AM_MODEL_FILES_H
#define AM_MODEL_FILES_H

#include "llm_shards/llama.h"
#include "llm_shards/tokenizer.h"

typedef struct am_model_files {
    am_llama_model *model;
    am_tokenizer *tok; /* NULL when not needed and not found */
} am_model_files;

/* Loads the model and its tokenizer (tok_path may be NULL). When need_tok is
 * 0 a missing tokenizer is not an error. A tokenizer with more pieces than
 * the model's vocabulary is an error naming both; fewer is fine (checkpoints
 * pad their embedding tables, LLaVA-1.5 to 32064 rows for 32000 pieces). */
int am_model_files_open(am_model_files *mf, const char *model_path, const char *tok_path,
                        int need_tok);
/* The same for rank's slice of a tensor-parallel group of size ranks
 * (am_llama_load_shard). Only rank 0 (the leader, which samples and
 * detokenizes) loads a tokenizer; the others get tok == NULL. */
int am_model_files_open_shard(am_model_files *mf, const char *model_path, const char *tok_path,
                              int need_tok, int32_t rank, int32_t size);
void am_model_files_close(am_model_files *mf);

#endif
