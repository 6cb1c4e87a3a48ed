/* core/backend_open.c - choosing a compute backend by device name (see backend_open.h). */
#include "core/backend_open.h"

#include "core/cpu_backend.h"
#include "core/error.h"

#ifdef AM_HAVE_CUDA
#include "core/cuda/cuda_backend.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int am_backend_have_cuda(void) {
#ifdef AM_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

/* "cuda" -> 0, "cuda:N" -> N; -1 if the string is neither. */
static int cuda_index(const char *device) {
    if (strcmp(device, "cuda") == 0) return 0;
    if (strncmp(device, "cuda:", 5) != 0 || device[5] < '0' || device[5] > '9') return -1;
    char *end;
    errno = 0;
    long n = strtol(device + 5, &end, 10);
    if (errno || *end || n > 1023) return -1;
    return (int)n;
}

int am_backend_open(const char *device, int n_threads, am_backend **out) {
    *out = NULL;
    if (!device || strcmp(device, "cpu") == 0) return am_cpu_backend_new(n_threads, out);
    const int index = cuda_index(device);
    if (index < 0)
        return am_err_set(AM_EINVAL, "device '%s': expected cpu, cuda or cuda:N", device);
#ifdef AM_HAVE_CUDA
    return am_cuda_backend_new(index, out);
#else
    return am_err_set(AM_EUNSUPPORTED, "device '%s': anymal was built without CUDA", device);
#endif
}

/* MemAvailable and MemTotal of /proc/meminfo, in bytes. */
static int host_memory(size_t *free_bytes, size_t *total_bytes) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return am_err_set(AM_EIO, "cannot read /proc/meminfo: %s", strerror(errno));
    char line[256];
    unsigned long long avail = 0, total = 0, kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            avail = kb;
        else if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            total = kb;
    }
    fclose(f);
    if (!avail || !total) return am_err_set(AM_EIO, "/proc/meminfo has no MemAvailable/MemTotal");
    *free_bytes = (size_t)avail * 1024;
    *total_bytes = (size_t)total * 1024;
    return 0;
}

int am_backend_memory(am_backend *be, size_t *free_bytes, size_t *total_bytes) {
#ifdef AM_HAVE_CUDA
    if (am_cuda_is_backend(be)) return am_cuda_memory(be, free_bytes, total_bytes);
#endif
    (void)be;
    return host_memory(free_bytes, total_bytes);
}
