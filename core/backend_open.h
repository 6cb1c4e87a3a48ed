/* core/backend_open.h - choosing a compute backend by device name.
 *
 * The one place that knows which backends this build has: "cpu" is the CPU
 * backend (core/cpu_backend.h); "cuda" and "cuda:N" are the CUDA backend on
 * device 0 or N (core/cuda/cuda_backend.h), present when anymal was built
 * with AM_CUDA (then AM_HAVE_CUDA is defined for code linking am_cuda).
 */
#ifndef AM_BACKEND_OPEN_H
#define AM_BACKEND_OPEN_H

#include "core/backend.h"

/* Creates the backend named by device ("cpu", "cuda", "cuda:N"; NULL means
 * "cpu"); n_threads is the CPU backend's thread count (ignored by CUDA). The
 * caller owns *out (am_backend_destroy). Returns 0, AM_EINVAL (unknown name,
 * bad N; the message names the string), AM_EUNSUPPORTED ("anymal was built
 * without CUDA", "no CUDA device"), or what the backend's constructor returns. */
int am_backend_open(const char *device, int n_threads, am_backend **out);

/* The memory the backend's buffers come from: the device's free and total
 * bytes for CUDA (cudaMemGetInfo), the machine's MemAvailable and MemTotal
 * (/proc/meminfo) for the CPU. 0, or AM_EIO naming what could not be read. */
int am_backend_memory(am_backend *be, size_t *free_bytes, size_t *total_bytes);

/* 1 if this build includes the CUDA backend. */
int am_backend_have_cuda(void);

#endif
