/* llm_shards/llama_internal.h - what llama.c and tp.c share inside am_llm.
 *
 * The follower side of the step protocol (tp.c) runs the same forward pass
 * as the leader (llama.c), without the leader's broadcast.
 */
#ifndef AM_LLAMA_INTERNAL_H
#define AM_LLAMA_INTERNAL_H

#include "llm_shards/llama.h"
#include "llm_shards/tp_comm.h"

/* Logit rows per lm_head call (and per gather in a group). */
#define AM_LLAMA_LOGITS_ROWS 64

/* A context of n_blocks x block_size KV positions with an optional group
 * (comm NULL = single process). Not collective. */
int am__llama_ctx_create(const am_llama_model *m, am_backend *be, am_tp_comm *comm,
                         int32_t n_blocks, int32_t block_size, int32_t max_batch,
                         am_llama_ctx **out);
/* The checks am_llama_decode makes before any compute (or broadcast);
 * n_embd_rows >= 0 also checks the count of embedding rows sent. */
int am__llama_check_batch(const am_llama_ctx *c, const am_llama_batch *b, int64_t n_embd_rows);
/* The forward pass of a checked step on this rank; logits (leader only, NULL elsewhere). */
int am__llama_forward(am_llama_ctx *c, const am_llama_batch *b, float *logits);

/* How a group leader's context broadcasts a step before computing it (tp.c
 * sets it on the contexts it makes: the decoder calls it without knowing the
 * step protocol, so llama.c does not depend on tp.c). */
typedef int (*am__llama_step_sender)(am_tp_comm *comm, const am_llama_batch *b, int64_t dim);
void am__llama_ctx_set_step_sender(am_llama_ctx *c, am__llama_step_sender send);

#endif
