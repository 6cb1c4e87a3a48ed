/* workers/shard_leader.h - the shard leader: GENERATE/EMBED/CANCEL in, TOKEN out, over the
 * scheduler.
 *
 * Runs on rank 0 of a shard group (or in a single process) around the
 * continuous-batching scheduler (llm_shards/sched.h) over a paged context.
 * It registers the group with the coordinator (workers/worker_link.h: READY
 * role=shard, capacity = requests in flight, out_dim = model width) and turns
 *  - GENERATE into am_sched_submit: text segments are tokenized (BOS first
 *    unless the request says bos=false; each text segment is encoded on its
 *    own), adjacent text/id segments merged, media slots become pending
 *    embedding slots, so the text before the first slot is prefilled at once
 *    while the encoders work (pipelining). A slot's size is known up front for
 *    image, video and audio (from the model directory's encoder configs alone,
 *    encoders/modality.h's am_mod_config: no weights read, no media library); a
 *    slot of unknown size (IMU: it depends on the signal's length) is a
 *    pending slot of size 0 that its rows size when they come (a prompt that
 *    no longer fits then ends with ERROR 413). Only a request whose every row
 *    is in slots of unknown size (no BOS, no text) waits in the leader until
 *    rows arrive;
 *  - EMBED into am_sched_supply (or kept until its request is submitted);
 *  - CANCEL into am_sched_cancel;
 * and streams TOKEN messages (a request's tokens at most every stream_ms
 * together: per-token messages would cost more than a small model's decode
 * step), then a final TOKEN (the last tokens, finish reason, usage) or an ERROR. A session reset
 * (the link's DISCONNECT) cancels every request silently: the coordinator has already ended them.
 */
#ifndef AM_SHARD_LEADER_H
#define AM_SHARD_LEADER_H

#include "llm_shards/llama.h"
#include "llm_shards/tokenizer.h"
#include "workers/worker_link.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#define AM_SHARD_LEADER_CAPACITY_DEFAULT 64
#define AM_SHARD_LEADER_IDLE_POLL_MS     50 /* longest wait for a message when no step can run */
#define AM_SHARD_LEADER_STREAM_MS        10 /* default stream interval: see am_shard_leader_opts */
#define AM_SHARD_LEADER_REPORT_MS                                                                  \
    100 /* KV/preemption reports to the coordinator: at most this often */

typedef struct am_shard_leader_opts {
    /* The link to the coordinator: its endpoint, heartbeats, reconnects, keys and stall
     * limit (no step or turn of the loop for stall_ms: the group is stuck, e.g. a rank
     * stopped; the leader ends and mpirun ends the rest). worker_link.h; 0/NULL =
     * defaults, a plain link. The leader fills its READY. */
    am_link_opts link;
    const char *model_path; /* for the model's identity and the encoders' slot sizes */
    const char *name;       /* NULL: "shard-<pid>" */
    const char *model_name; /* NULL: base name of model_path */
    int capacity;           /* 0 = AM_SHARD_LEADER_CAPACITY_DEFAULT */
    int32_t tp_size;        /* reported in READY */
    int32_t max_batch;      /* scheduler token budget per step; 0 = the context's */
    int stream_ms;          /* a request's tokens go out in one TOKEN when its last TOKEN
                             * is this old (the first token at once; a model slower than
                             * this per token streams every token); 0 = AM_SHARD_LEADER_STREAM_MS,
                             * < 0 = a TOKEN per token */
    int drain_ms; /* *stop == 1: finish what is in flight for at most this (0 = default) */
} am_shard_leader_opts;

/* The decoder's timeline: where the leader's time went. */
typedef struct am_shard_leader_stats {
    int64_t requests, tokens, steps;
    double busy_s;      /* inside am_sched_step with work done */
    double idle_s;      /* nothing live */
    double wait_rows_s; /* requests live, but every one waits for modality rows */
    double held_s;      /* (sum over requests) time held before submission (only
                         * prompts made of slots of unknown size are held) */
} am_shard_leader_stats;

/* Serves: ctx is a paged context (group leader or single process, borrowed),
 * tok the tokenizer. *stop == 1 drains (worker_link.h am_drain_poll: nothing
 * new, the requests in flight finish), *stop >= 2 stops at once. Returns 0
 * after saying DISCONNECT, or a setup error. st (may be NULL) receives the
 * timeline. */
int am_shard_leader_run(am_llama_ctx *ctx, const am_tokenizer *tok, const am_shard_leader_opts *o,
                        volatile sig_atomic_t *stop, am_shard_leader_stats *st);

#endif
