/* llm_shards/tp.h - tensor-parallel shard groups: collectives, steps, leader and followers.
 *
 * A group of P ranks runs one decoder (docs/model-spec.md section 2, Megatron-LM):
 * each rank holds a slice (am_llama_load_shard), every rank runs the same
 * layer loop on the same activations, and the partial outputs of the
 * row-parallel o and down projections are summed across the group by an
 * all-reduce (two per layer). Rank 0 is the leader: it decides every step and
 * broadcasts it (op, token ids or embedding rows, positions); the followers
 * loop on those steps. The leader gathers the vocab-split logits and samples.
 *
 * This header is MPI-free: the group talks through am_tp_comm (tp_comm.h), a
 * table of collectives (the ggml-backend pattern). llm_shards/comm.h implements
 * it with MPI; tests implement it with threads. Every rank must call the same
 * collectives in the same order.
 *
 * Leader API (rank 0): create a group context with am_llama_ctx_new_tp, then
 * use it like any context: am_llama_eval and am_generate (generate.h) drive
 * the whole group; am_tp_stop ends the followers. Followers call
 * am_tp_follow, which returns when the leader stops the group.
 *
 * Failures: errors found before a step is broadcast (bad ids, context
 * overflow) are returned as usual. An error after the broadcast (allocation
 * failure in a kernel, a communication error, a step a follower cannot run)
 * would leave the other ranks waiting in a collective, so it ends the whole
 * group through ops->abort (with Open MPI, MPI_Abort: every rank exits,
 * mpirun returns non-zero) after printing a message that names the rank.
 */
#ifndef AM_TP_H
#define AM_TP_H

#include "llm_shards/llama.h"
#include "llm_shards/tp_comm.h"

#include <stddef.h>
#include <stdint.h>

/* Leader (rank 0) only: a context whose steps run on the whole group. The
 * followers, in am_tp_follow, create their matching contexts (n_ctx, max_batch
 * and wire dtype are the leader's; wire is AM_DTYPE_F32 or AM_DTYPE_BF16).
 * Collective: if any rank fails to create its context, every rank's is
 * dropped and this returns the error (AM_ENOMEM or the leader's own). */
int am_llama_ctx_new_tp(const am_llama_model *m, am_backend *be, am_tp_comm *comm, int32_t n_ctx,
                        int32_t max_batch, am_dtype wire, am_llama_ctx **out);
/* The same for a paged context (am_llama_ctx_new_paged): every rank holds
 * its slice of the same n_blocks x block_size pool, and each step carries
 * the block tables, so the followers mirror the leader's cache. */
int am_llama_ctx_new_paged_tp(const am_llama_model *m, am_backend *be, am_tp_comm *comm,
                              int32_t n_blocks, int32_t block_size, int32_t max_batch,
                              am_dtype wire, am_llama_ctx **out);
/* Leader only: tells the followers to return from am_tp_follow. */
int am_tp_stop(am_tp_comm *comm);
/* Followers (rank > 0): run the leader's steps on model m until it stops
 * the group (returns 0). Errors inside a step end the group (am_tp_fatal). */
int am_tp_follow(const am_llama_model *m, am_backend *be, am_tp_comm *comm);

/* Resident memory of this process, from /proc/self/status, in bytes. */
typedef struct am_proc_mem {
    int64_t vm_rss, vm_hwm, rss_anon, rss_file;
} am_proc_mem;
/* 0, or AM_EIO when /proc/self/status cannot be read. */
int am_proc_mem_read(am_proc_mem *out);

/* One rank's memory report. */
typedef struct am_tp_mem {
    am_proc_mem mem;
    int64_t weight_bytes; /* am_llama_weight_bytes of its slice */
    int64_t slices_bytes; /* copied o/down slices (owned) */
    int32_t rank, pad;
} am_tp_mem;
/* Collective: rank 0 receives every rank's report (all: P entries); all may be
 * NULL on other ranks. */
int am_tp_mem_gather(am_tp_comm *c, const am_llama_model *m, am_tp_mem *all);

#endif
