/* llm_shards/comm.h - a shard group's collectives over MPI: every MPI call of anymal lives here.
 *
 * am_comm_new initialises MPI (MPI_THREAD_FUNNELED: only the thread that
 * created the group talks MPI; compute threads never do) and returns the
 * am_tp_comm of tp.h for MPI_COMM_WORLD: rank 0 is the leader. Errors come
 * back as return codes (MPI_ERRORS_RETURN on a private duplicate of the
 * world communicator), with the MPI error text in am_err_msg().
 *
 * Idle waiting: Open MPI's blocking collectives busy-poll, so a follower
 * waiting for the leader's next step would keep a core at 100%. The step
 * header is broadcast with MPI_Ibcast instead, and a waiting rank polls
 * MPI_Test: for AM_COMM_IDLE_SPIN_US it spins (yielding the core; steps of a
 * running generation come back-to-back), then it sleeps between polls, the
 * sleep doubling from AM_COMM_IDLE_SLEEP_MIN_US to AM_COMM_IDLE_SLEEP_MAX_US.
 * An idle group thus costs a few hundred polls per second (~0% CPU), and a
 * step sent after a long idle period is picked up within
 * AM_COMM_IDLE_SLEEP_MAX_US. The all-reduces inside a step stay blocking:
 * there every rank is busy and the latency matters.
 *
 * bf16 all-reduce: values are rounded to bf16 for the wire and summed by a
 * commutative user op that adds in f32 and rounds back to bf16.
 *
 * If a rank dies, Open MPI's mpirun ends the whole job (no recovery before
 * ULFM); ops->abort is MPI_Abort on the world communicator.
 */
#ifndef AM_COMM_H
#define AM_COMM_H

#include "llm_shards/tp.h"

#define AM_COMM_IDLE_SPIN_US      2000
#define AM_COMM_IDLE_SLEEP_MIN_US 50
#define AM_COMM_IDLE_SLEEP_MAX_US 10000

/* Initialises MPI (argc/argv may be NULL) and creates the group of all
 * ranks. Call once per process. Returns 0, AM_EIO (MPI failed; message
 * names the call), AM_ENOMEM. */
int am_comm_new(int *argc, char ***argv, am_tp_comm **out);
/* Frees the group and finalises MPI; accepts NULL and *p == NULL; sets *p = NULL. */
void am_comm_destroy(am_tp_comm **p);
/* Ranks of the group on this host (for the default number of threads). */
int am_comm_local_size(const am_tp_comm *c);
/* Blocks until every rank calls it. */
int am_comm_barrier(am_tp_comm *c);
/* The largest of every rank's x, on every rank (benchmarks: slowest rank's time). */
int am_comm_allreduce_max(am_tp_comm *c, double *x);
/* Name of this host (MPI_Get_processor_name) into buf. */
void am_comm_host(const am_tp_comm *c, char *buf, size_t cap);

#endif
