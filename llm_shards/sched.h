/* llm_shards/sched.h - continuous batching on the leader of a shard group.
 *
 * The scheduler keeps many requests in flight over one paged context
 * (am_llama_ctx_new_paged, or am_llama_ctx_new_paged_tp on a group leader)
 * and turns each step into one am_llama_decode: the decode tokens of running
 * sequences first, then prefill chunks of the others, within a token budget
 * (max_batch rows) and the free KV blocks.
 *
 * A prompt is a list of segments: token ids, or an embedding slot of n rows
 * (modality tokens) that bypass the token-embedding lookup. A slot may be
 * pending: its rows arrive later through am_sched_supply. The sequence
 * prefills everything before the slot, then waits without holding up the
 * others, and continues when the rows come: this is how modality tokens
 * pipeline into the decoder.
 *
 * Policy. Requests are admitted first come, first served: the oldest waiting
 * request is admitted before any later one, when the blocks for its known
 * inputs are free. When a running sequence needs a block and none is free,
 * the most recently admitted running sequence is preempted: its blocks are
 * freed and it is put back at the head of the queue, to be recomputed (prompt
 * and the tokens generated so far) when blocks free up again. Its sampler
 * state is kept, so preemption never changes the output. The oldest sequence
 * is never preempted for a later one, so every request finishes.
 *
 * Every request ends exactly once through its on_done callback: finished
 * (eos, length, stop string), cancelled (am_sched_cancel, or its token
 * callback returned non-zero), or failed (a step error). Its blocks are free
 * before on_done runs. Callbacks run inside am_sched_step / am_sched_cancel
 * and must not call back into the scheduler except am_sched_cancel for
 * another request, am_sched_submit and am_sched_supply.
 *
 * Not thread-safe: one thread drives a scheduler.
 */
#ifndef AM_SCHED_H
#define AM_SCHED_H

#include "llm_shards/generate.h"
#include "llm_shards/llama.h"
#include "llm_shards/tokenizer.h"

#include <stdint.h>

/* Defaults and bounds. */
#define AM_SCHED_DEFAULT_BLOCK_SIZE 32
#define AM_SCHED_DEFAULT_MAX_BATCH  512
#define AM_SCHED_MAX_SEGMENTS       256

typedef enum { AM_SEG_TOKENS = 0, AM_SEG_EMBD = 1 } am_seg_kind;

/* One segment of a prompt. The scheduler copies ids and rows. */
typedef struct am_prompt_seg {
    am_seg_kind kind;
    int32_t n;          /* token ids, or embedding rows (>= 1); a pending slot may
                         * say 0: its size is known only when its rows come
                         * (an IMU signal's windows) */
    const int32_t *ids; /* TOKENS: (n) */
    const float *rows;  /* EMBD: (n, C) host rows, or NULL for a pending slot */
} am_prompt_seg;

/* Called once per request at its end. r (generated ids and text, finish
 * reason, prompt length, timings) is valid during the call only; err is 0, or
 * the error that failed the request (r then holds what was generated). */
typedef void (*am_sched_done_cb)(void *user, uint64_t id, const am_gen_result *r, int err);

typedef struct am_sched_request {
    uint64_t id;               /* the caller's id, unique among live requests */
    const am_prompt_seg *segs; /* (n_segs) */
    int32_t n_segs;
    am_gen_params params;     /* sampling, max_tokens, stop strings (copied) */
    am_token_cb on_token;     /* may be NULL; non-zero return cancels the request */
    am_sched_done_cb on_done; /* may be NULL */
    void *user;               /* passed to both */
} am_sched_request;

typedef struct am_sched_stats {
    int64_t steps;          /* am_llama_decode calls */
    int64_t rows;           /* rows over all steps */
    int64_t prefill_rows;   /* rows of prompts (and recomputation) */
    int64_t decode_rows;    /* one per generated token fed back */
    int64_t recompute_rows; /* rows computed again after a preemption */
    int64_t preemptions;
    int64_t finished, cancelled, failed;
    int32_t max_running; /* most sequences in one step */
} am_sched_stats;

typedef struct am_sched am_sched;

/* A scheduler over a paged context (borrowed; it must outlive the scheduler).
 * tok may be NULL (ids only: no text, no stop strings). max_batch is the
 * token budget per step (0: the context's max_batch; at most that). */
int am_sched_new(am_llama_ctx *ctx, const am_tokenizer *tok, int32_t max_batch, am_sched **out);
/* Ends every live request as cancelled (on_done runs), then frees. */
void am_sched_destroy(am_sched **p);

/* Queues a request. Checked at once, with a message naming what is wrong:
 * the parameters (am_gen_params), segments (kinds, sizes, token ids, at most
 * AM_SCHED_MAX_SEGMENTS, at least one row), prompt + max_tokens within the
 * model's max_seq_len and within the whole KV pool (a request that could never
 * run), a duplicate live id. AM_EINVAL (also for a duplicate id) / AM_ERANGE / AM_ENOMEM. */
int am_sched_submit(am_sched *s, const am_sched_request *r);
/* Supplies the rows (n, C) of pending slot `seg` (its index in the request's
 * segments) of request id. AM_ENOTFOUND for an unknown id; AM_EINVAL when seg is
 * not a pending slot of that request or n differs from the slot's size. For a
 * slot of unknown size, n sets it; when the prompt then no longer fits (the
 * model's context, or the whole KV pool) the request ends at once with that
 * error through on_done, and the error (AM_ERANGE) is returned too. */
int am_sched_supply(am_sched *s, uint64_t id, int32_t seg, const float *rows, int32_t n);
/* Ends request id as cancelled: its blocks return at once, on_done runs.
 * AM_ENOTFOUND when it is not live. */
int am_sched_cancel(am_sched *s, uint64_t id);

/* Runs one step when any sequence can make progress: returns 1 after a step,
 * 0 when there is nothing to run now (no requests, or all wait for slot
 * rows), or a negative error (every request in the step is failed). */
int am_sched_step(am_sched *s);

/* Live requests (queued, running or waiting for rows). */
int32_t am_sched_n_live(const am_sched *s);
/* KV blocks free now, and in all. */
int32_t am_sched_free_blocks(const am_sched *s);
int32_t am_sched_total_blocks(const am_sched *s);
const am_sched_stats *am_sched_get_stats(const am_sched *s);

#endif
