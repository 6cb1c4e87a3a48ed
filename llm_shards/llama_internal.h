/* llm_shards/llama_internal.h - what llama.c and tp.c share inside am_llm.
 *
 * The follower side of the step protocol (tp.c) runs the same forward pass
 * as the leader (llama.c), without the leader's broadcast.
 */
#ifndef AM_LLAMA_INTERNAL_H
#define AM_LLAMA_INTERNAL_H

#include "llm_shards/llama.h"
#include "llm_shards/tp.h"

/* Logits rows gathered per collective when several rows are wanted. */
#define AM_TP_LOGITS_ROWS 16

/* am_llama_ctx_new with an optional group (comm NULL = single process). Not collective. */
int am__llama_ctx_create(const am_llama_model *m, am_backend *be, am_tp_comm *comm, int32_t n_ctx,
                         int32_t max_batch, am_llama_ctx **out);
/* The checks am_llama_eval makes before any compute (or broadcast). */
int am__llama_check_input(const am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n);
/* The forward pass of a checked step on this rank. logits (leader only, may be
 * NULL elsewhere) is filled when want_logits. */
int am__llama_run(am_llama_ctx *c, const int32_t *ids, const float *embd, int32_t n, float *logits,
                  int want_logits, int all_logits);
void am__llama_ctx_set_n_past(am_llama_ctx *c, int32_t n_past);

/* Leader: broadcasts an eval step (tp.c). */
int am__tp_send_eval(am_tp_comm *comm, int32_t pos0, const int32_t *ids, const float *embd,
                     int32_t n, int64_t dim, int want_logits, int all_logits);

#endif
