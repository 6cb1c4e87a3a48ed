/* tools/tp_launch.h - `--tp P`: the anymal command running P anymal-shard ranks under mpirun.
 *
 * The launcher is Open MPI's mpirun (AM_MPIRUN overrides its path):
 *   mpirun -np P PLACEMENT DIR/anymal-shard ARGS...
 * where DIR is the directory of the running anymal binary. With T threads per
 * rank (given, or the online CPUs / P that anymal-shard defaults to), when the
 * P x T threads fit the online CPUs each rank gets T CPUs of its own
 * (--use-hwthread-cpus --map-by slot:PE=T --bind-to hwthread): two ranks that
 * share a core make every all-reduce wait for a time slice. Otherwise the
 * ranks float (--bind-to none, and --oversubscribe when P exceeds the CPUs;
 * Open MPI's default would pin a rank, threads and all, to one core).
 *
 * Root: Open MPI refuses to run as root, and docs/reliability.md says mpirun must
 * not run as root outside tests. As root the launcher therefore refuses
 * unless the caller opted in with Open MPI's own test variables
 * OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (which mpirun
 * honours itself); it never adds --allow-run-as-root on its own.
 *
 * The launcher forwards SIGINT, SIGTERM and SIGHUP to mpirun (which ends the
 * ranks) and waits for it. A rank that dies makes mpirun end the job and name
 * the rank; the launcher then prints its own one-line error too.
 */
#ifndef AM_TP_LAUNCH_H
#define AM_TP_LAUNCH_H

/* Runs the group (threads_per_rank 0 = anymal-shard's default) and returns
 * the exit status for the anymal command: 0, 1 (the group failed; message
 * printed), 2 (a rank reported a usage error). */
int am_tp_launch(const char *cmd, int tp, int threads_per_rank, char *const *shard_args,
                 int n_shard_args);

/* Copies argv[1..argc) without the --tp option (and its value) into out
 * (capacity argc); returns the count. */
int am_tp_strip_args(int argc, char **argv, char **out);

#endif
