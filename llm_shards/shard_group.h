/* llm_shards/shard_group.h - one tensor-parallel shard group per MPI job: the leader's in-process
 * API.
 *
 * Every rank of `mpirun -np P prog` calls am_shard_group_new: MPI starts
 * (comm.h), each rank loads its slice of the model (am_llama_load_shard; the
 * leader also its tokenizer) and opens its backend (o->device: the CPU, or a
 * CUDA device that several ranks may share), and the ranks agree that all
 * of them succeeded. Then the leader (rank 0) submits prompts with
 * am_shard_group_generate (tokens stream through the callback, as with
 * am_generate) while the followers sit in am_shard_group_serve, idle without
 * spinning between steps. am_shard_group_destroy on the leader stops the
 * followers; on every rank it finalises MPI.
 *
 * Failure model (Open MPI 4.1, docs/reliability.md): the group is one failure
 * unit. A rank that fails to load prints its error naming itself
 * ("anymal rank R/P: error: ..."; when every rank fails the same way, as with
 * a missing file or a group size the model cannot be split into, only rank 0
 * prints) and every rank's am_shard_group_new returns an error, so all exit
 * cleanly. A rank that fails during a step, or dies, ends the whole job
 * (MPI_Abort / mpirun); no rank waits forever in a collective.
 */
#ifndef AM_SHARD_GROUP_H
#define AM_SHARD_GROUP_H

#include "llm_shards/generate.h"
#include "llm_shards/tp.h"
#include "llm_shards/tokenizer.h"

#include <stdio.h>

/* Test-only fault injection: the rank named by this variable reports a load failure. */
#define AM_SHARD_FAIL_LOAD_ENV "AM_TEST_FAIL_LOAD_RANK"

typedef struct am_shard_group_opts {
    const char *model_path;
    const char *tok_path;     /* NULL: the GGUF's own tokenizer or the one beside the model */
    int need_tok;             /* the leader fails without a tokenizer */
    int n_threads;            /* per rank; 0 = online CPUs / ranks on this host (at least 1) */
    am_dtype allreduce_dtype; /* AM_DTYPE_F32 or AM_DTYPE_BF16 */
    const char *device;       /* every rank's backend: "cpu" (NULL), "cuda", "cuda:N"
                               * (core/backend_open.h); ranks may share one GPU, and
                               * their all-reduces are staged through host memory */
} am_shard_group_opts;

typedef struct am_shard_group am_shard_group;

/* Collective. argc/argv go to MPI_Init (may be NULL). Errors: the load error
 * of this rank, or AM_EIO when another rank failed. The errors have already
 * been printed to stderr as described above (callers should not repeat
 * them); MPI is finalised again on failure, so the process may simply exit. */
int am_shard_group_new(int *argc, char ***argv, const am_shard_group_opts *o, am_shard_group **out);
/* Leader: stops the followers. Every rank: frees everything and finalises MPI. */
void am_shard_group_destroy(am_shard_group **p);

int32_t am_shard_group_rank(const am_shard_group *g);
int32_t am_shard_group_size(const am_shard_group *g);
int am_shard_group_threads(const am_shard_group *g);
const am_llama_model *am_shard_group_model(const am_shard_group *g);
const am_tokenizer *am_shard_group_tokenizer(const am_shard_group *g); /* leader; may be NULL */
am_tp_comm *am_shard_group_comm(am_shard_group *g);

/* Leader: a group context (tp.h) of n_ctx positions; see am_llama_ctx_new_tp. */
int am_shard_group_ctx_new(am_shard_group *g, int32_t n_ctx, int32_t max_batch, am_llama_ctx **out);
/* Leader: a paged group context (see am_llama_ctx_new_paged_tp) for the
 * continuous-batching scheduler (sched.h). */
int am_shard_group_paged_ctx_new(am_shard_group *g, int32_t n_blocks, int32_t block_size,
                                 int32_t max_batch, am_llama_ctx **out);
am_backend *am_shard_group_backend(am_shard_group *g);
/* Leader: runs am_generate over a fresh group context sized for the prompt
 * and p->max_tokens. Same parameters, callback and errors as am_generate. */
int am_shard_group_generate(am_shard_group *g, const int32_t *prompt, int64_t n_prompt,
                            const am_gen_params *p, am_token_cb cb, void *user, am_gen_result *out);
/* Followers: serve the leader's steps until it stops the group. */
int am_shard_group_serve(am_shard_group *g);
/* Leader: tells the followers to leave am_shard_group_serve (destroy does it too). */
int am_shard_group_stop(am_shard_group *g);

/* Collective: the leader prints one line per rank to f: resident memory
 * (VmRSS, VmHWM, RssAnon, RssFile) against the rank's weight bytes, as
 * "anymal shard-mem <label> rank=R/P vm_rss=... vm_hwm=... rss_anon=...
 * rss_file=... weight_bytes=... slices_bytes=..." (bytes). */
int am_shard_group_mem_report(am_shard_group *g, FILE *f, const char *label);

#endif
