/* llm_shards/tp_comm.h - a shard group's collectives: the table a transport fills in.
 *
 * What the decoder's forward pass (llama.c) needs of a group, apart from the
 * step protocol and group contexts of tp.h: the collectives behind one
 * pointer (llm_shards/comm.h fills it with MPI, tests with threads), counting
 * wrappers that keep per-rank statistics, and the way a rank ends the group
 * when it cannot go on. Nothing here knows the model, so the decoder can use
 * it while tp.c builds on the decoder.
 */
#ifndef AM_TP_COMM_H
#define AM_TP_COMM_H

#include "core/dtype.h"

#include <stddef.h>
#include <stdint.h>

typedef struct am_tp_comm am_tp_comm;

/* The collectives. Each returns 0 or a negative AM_E* code with a message. */
typedef struct am_tp_comm_ops {
    /* x (n) = sum over ranks of x, in place, identical on every rank. wire is
     * AM_DTYPE_F32 or AM_DTYPE_BF16 (values rounded to bf16 for the transfer,
     * summed in f32). */
    int (*allreduce_sum)(am_tp_comm *c, float *x, int64_t n, am_dtype wire);
    /* bytes of buf from rank 0 to every rank. */
    int (*bcast)(am_tp_comm *c, void *buf, size_t bytes);
    /* Like bcast, for the step header: a rank that waits for the leader must
     * not spin a core (it may sleep for short intervals while idle). */
    int (*bcast_step)(am_tp_comm *c, void *buf, size_t bytes);
    /* Rank 0 receives counts[r] floats from every rank r, concatenated in rank
     * order into recv; n == counts[rank]. recv and counts matter at rank 0 only. */
    int (*gatherv)(am_tp_comm *c, const float *send, int64_t n, float *recv, const int64_t *counts);
    /* Rank 0 receives bytes bytes from every rank into recv (P * bytes). */
    int (*gather)(am_tp_comm *c, const void *send, size_t bytes, void *recv);
    /* Ends every rank of the group with a failure; does not return. */
    void (*abort)(am_tp_comm *c, int code);
} am_tp_comm_ops;

/* What a rank's collectives cost so far (am_tp_* wrappers below count). */
typedef struct am_tp_stats {
    int64_t n_allreduce, allreduce_bytes; /* bytes on the wire per rank per call (n * wire size) */
    double allreduce_s;                   /* wall time inside all-reduces */
    int64_t n_bcast, bcast_bytes;
    int64_t n_gather, gather_bytes; /* at this rank: bytes it sent */
    double gather_s;
    int64_t n_steps; /* forward steps run */
} am_tp_stats;

struct am_tp_comm {
    const am_tp_comm_ops *ops;
    int32_t rank, size;
    am_dtype
        allreduce_dtype; /* AM_DTYPE_F32 (default) or AM_DTYPE_BF16; set by the leader's context */
    am_tp_stats stats;
    int32_t step_seq; /* steps sent (leader) or received (followers) */
    void *impl;
};

/* Counting wrappers: the forward pass calls these. */
int am_tp_allreduce(am_tp_comm *c, float *x, int64_t n);
int am_tp_bcast(am_tp_comm *c, void *buf, size_t bytes);
int am_tp_gatherv(am_tp_comm *c, const float *send, int64_t n, float *recv, const int64_t *counts);

/* Prints "anymal rank R/P: error: WHAT: <am_err_msg or am_strerror(code)>"
 * to stderr and ends the group (ops->abort). Does not return. */
_Noreturn void am_tp_fatal(am_tp_comm *c, int code, const char *what);

#endif
