/* tools/cli_compute.h - process setup for the `anymal` subcommands that compute
 * (the actor programs call am_cpu_blas_setup directly, as anymal-shard does).
 */
#ifndef AM_CLI_COMPUTE_H
#define AM_CLI_COMPUTE_H

/* Sets up the process before any backend exists: loads OpenBLAS with the
 * core type of the instruction-set level (core/cpu_backend.h). Call it early
 * in main(), before other threads read the environment. */
void am_cli_process_setup(int n_threads);

#endif
