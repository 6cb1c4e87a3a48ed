/* tools/cli_compute.c - process setup for the programs that compute (cli_compute.h). */
#include "tools/cli_compute.h"

#include "core/cpu_backend.h"

void am_cli_process_setup(int n_threads) { am_cpu_blas_setup(n_threads); }
