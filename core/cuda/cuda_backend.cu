/* core/cuda/cuda_backend.cu - the CUDA backend: creation, memory, staging, the vtable.
 *
 * The ops live in cuda_matmul.cu (matmul, get_rows), cuda_ops.cu (rmsnorm,
 * rope, softmax, silu_mul, add), cuda_attention.cu (kv_store, paged
 * attention) and cuda_sample.cu (device sampling). This file owns the
 * context they share: the stream and cuBLAS handle, the scratch arena, the
 * pinned staging of host metadata and the sticky first error.
 */
#include "core/cuda/cuda_internal.cuh"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    am_backend base;
    am__cuda_ctx ctx;
    char name[320]; /* "cuda:N (device name, sm_XY)" */
} cuda_backend;

/* ---- errors ---- */

void am__cuda_fail(am__cuda_ctx *c, const char *op, const char *what) {
    if (c->error) return; /* keep the first: later ones are usually its echoes */
    c->error = AM_EIO;
    snprintf(c->error_msg, sizeof c->error_msg, "cuda backend (device %d): %s: %s", c->device, op,
             what);
    AM_LOGE("%s", c->error_msg);
}

int am__cuda_check(am__cuda_ctx *c, const char *op, cudaError_t e) {
    if (e == cudaSuccess) return 0;
    am__cuda_fail(c, op, cudaGetErrorString(e));
    return AM_EIO;
}

static int cuda_report(am__cuda_ctx *c) {
    return c->error ? am_err_set(c->error, "%s", c->error_msg) : 0;
}

/* ---- scratch and staging ---- */

static size_t grow_to(size_t cap, size_t need) {
    size_t n = cap ? cap : AM_CUDA_MIN_GROW_BYTES;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    return n;
}

void *am__cuda_scratch(am__cuda_ctx *c, size_t bytes, const char *op) {
    if (c->error) return NULL;
    if (bytes <= c->scratch_cap) return c->scratch;
    /* Queued kernels may still use the old arena: wait before freeing it. */
    if (am__cuda_check(c, op, cudaStreamSynchronize(c->stream))) return NULL;
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_cap = 0;
    const size_t cap = grow_to(bytes, bytes); /* at least 1 MiB, no extra doubling */
    if (cudaMalloc(&c->scratch, cap) != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        char what[96];
        snprintf(what, sizeof what, "scratch of %zu bytes: out of device memory", cap);
        am__cuda_fail(c, op, what);
        return NULL;
    }
    c->scratch_cap = cap;
    return c->scratch;
}

/* A pinned slot of at least `bytes`, free for the host to write. */
static void *stage_slot(am__cuda_ctx *c, size_t bytes, int *slot, const char *op) {
    const int s = c->next_slot;
    c->next_slot = (s + 1) % AM_CUDA_STAGE_SLOTS;
    if (am__cuda_check(c, op, cudaEventSynchronize(c->pinned_done[s]))) return NULL;
    if (bytes > c->pinned_cap[s]) {
        cudaFreeHost(c->pinned[s]);
        c->pinned[s] = NULL;
        c->pinned_cap[s] = 0;
        const size_t cap = grow_to(bytes, bytes);
        if (am__cuda_check(c, op, cudaMallocHost(&c->pinned[s], cap))) return NULL;
        c->pinned_cap[s] = cap;
    }
    *slot = s;
    return c->pinned[s];
}

const void *am__cuda_stage(am__cuda_ctx *c, am__cuda_chan *ch, const void *host, size_t bytes,
                           const char *op) {
    if (c->error) return NULL;
    if (bytes == 0) bytes = 1; /* a valid pointer even for nothing */
    /* The device buffer holds the last bytes sent (stream order): the same
     * bytes again need no copy. */
    if (ch->valid && ch->last_bytes == bytes && memcmp(ch->last, host, bytes) == 0) return ch->dev;
    ch->valid = 0;
    if (bytes > ch->cap) {
        if (am__cuda_check(c, op, cudaStreamSynchronize(c->stream))) return NULL;
        cudaFree(ch->dev);
        ch->dev = NULL;
        ch->cap = 0;
        const size_t cap = grow_to(ch->cap, bytes);
        if (am__cuda_check(c, op, cudaMalloc(&ch->dev, cap))) return NULL;
        ch->cap = cap;
    }
    if (bytes > ch->last_cap) {
        void *p = am_realloc(ch->last, bytes);
        if (!p) {
            am__cuda_fail(c, op, "out of host memory for staging");
            return NULL;
        }
        ch->last = p;
        ch->last_cap = bytes;
    }
    int slot;
    void *pin = stage_slot(c, bytes, &slot, op);
    if (!pin) return NULL;
    memcpy(pin, host, bytes);
    if (am__cuda_check(c, op,
                       cudaMemcpyAsync(ch->dev, pin, bytes, cudaMemcpyHostToDevice, c->stream)) ||
        am__cuda_check(c, op, cudaEventRecord(c->pinned_done[slot], c->stream)))
        return NULL;
    memcpy(ch->last, host, bytes);
    ch->last_bytes = bytes;
    ch->valid = 1;
    return ch->dev;
}

const int32_t *am__cuda_ints(am__cuda_ctx *c, const int32_t *p, int64_t n, const char *op) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) == cudaSuccess &&
        (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged))
        return p;
    cudaGetLastError(); /* older drivers report host pointers as an error */
    return (const int32_t *)am__cuda_stage(c, &c->ints_chan, p, (size_t)n * sizeof(int32_t), op);
}

static void chan_fini(am__cuda_chan *ch) {
    cudaFree(ch->dev);
    am_free(ch->last);
    memset(ch, 0, sizeof *ch);
}

/* ---- memory ops ---- */

static void *cuda_alloc(am_backend *b, size_t bytes) {
    (void)b;
    void *p = NULL;
    /* cudaMalloc returns 256-byte aligned memory, more than the 64 asked. */
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is not sticky: clear it */
        return NULL;
    }
    return p;
}

static void cuda_free(am_backend *b, void *p) {
    (void)b;
    if (p) cudaFree(p); /* waits for the device, as cudaFree does */
}

static int cuda_upload(am_backend *b, void *dst, const void *src, size_t bytes) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (c->error) return cuda_report(c);
    if (!bytes) return 0;
    /* A synchronous copy on our stream: src may be reused when we return. */
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        am__cuda_check(c, "upload", e);
        return cuda_report(c);
    }
    return 0;
}

static int cuda_download(am_backend *b, void *dst, const void *src, size_t bytes) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (c->error) return cuda_report(c);
    cudaError_t e = cudaSuccess;
    if (bytes) e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) am__cuda_check(c, "download", e);
    am__cuda_prof_harvest(c); /* the device is idle: read the op timings for free */
    return cuda_report(c);
}

static int cuda_upload_matrix(am_backend *b, const am_matrix *w, am_matrix *out) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    switch (w->dtype) {
    case AM_DTYPE_F32:
    case AM_DTYPE_F16:
    case AM_DTYPE_BF16:
    case AM_DTYPE_Q8_0:
    case AM_DTYPE_Q4_0: break;
    default:
        return am_err_set(AM_EUNSUPPORTED, "cuda backend: weight dtype %s",
                          am_dtype_name(w->dtype));
    }
    if (w->row_bytes != am_dtype_row_bytes(w->dtype, w->cols) || w->rows < 0)
        return am_err_set(AM_EINVAL, "cuda backend: matrix %lld x %lld %s has row_bytes %zu",
                          (long long)w->rows, (long long)w->cols, am_dtype_name(w->dtype),
                          w->row_bytes);
    if (c->n_owned == c->cap_owned) {
        const size_t cap = c->cap_owned ? 2 * c->cap_owned : 64;
        void **p = (void **)am_realloc(c->owned, cap * sizeof *p);
        if (!p) return AM_ENOMEM;
        c->owned = p;
        c->cap_owned = cap;
    }
    const size_t bytes = (size_t)w->rows * w->row_bytes;
    void *d = cuda_alloc(b, bytes);
    if (!d)
        return am_err_set(
            AM_ENOMEM, "cuda backend: %zu bytes for a %lld x %lld %s matrix: out of device memory",
            bytes, (long long)w->rows, (long long)w->cols, am_dtype_name(w->dtype));
    int rc = cuda_upload(b, d, w->data, bytes);
    if (rc) {
        cudaFree(d);
        return rc;
    }
    c->owned[c->n_owned++] = d;
    *out = *w;
    out->data = d;
    return 0;
}

/* ---- creation ---- */

/* ---- cuBLAS, loaded on first use (see cuda_internal.cuh) ---- */

am__cublas_api am__cublas;
static pthread_once_t g_cublas_once = PTHREAD_ONCE_INIT;
static char g_cublas_error[512]; /* empty when loaded */

static void cublas_load_once(void) {
    char name[64];
    const char *env = getenv("AM_CUBLAS_LIB");
    snprintf(name, sizeof name, "libcublas.so.%d", CUBLAS_VER_MAJOR);
    const char *lib = env && env[0] ? env : name;
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(g_cublas_error, sizeof g_cublas_error, "cannot load cuBLAS (%s): %s", lib,
                 dlerror());
        return;
    }
    am__cublas_api a;
    const char *missing = NULL;
#define SYM(field, sym)                                                                            \
    if (!missing && !(*(void **)&a.field = dlsym(h, sym))) missing = sym;
    SYM(create, "cublasCreate_v2")
    SYM(destroy, "cublasDestroy_v2")
    SYM(status_string, "cublasGetStatusString")
    SYM(set_math_mode, "cublasSetMathMode")
    SYM(set_stream, "cublasSetStream_v2")
    SYM(sgemm, "cublasSgemm_v2")
    SYM(gemm_ex, "cublasGemmEx")
#undef SYM
    if (missing) {
        snprintf(g_cublas_error, sizeof g_cublas_error, "cuBLAS (%s) has no %s", lib, missing);
        dlclose(h);
        return;
    }
    am__cublas = a; /* the handle stays open for the life of the process */
}

int am__cublas_load(void) {
    pthread_once(&g_cublas_once, cublas_load_once);
    return g_cublas_error[0] ? am_err_set(AM_EUNSUPPORTED, "%s", g_cublas_error) : 0;
}

static void cuda_destroy(am_backend *b) {
    cuda_backend *cb = (cuda_backend *)b;
    am__cuda_ctx *c = &cb->ctx;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    am__cuda_prof_free(c);
    for (size_t i = 0; i < c->n_owned; i++)
        cudaFree(c->owned[i]);
    am_free(c->owned);
    cudaFree(c->scratch);
    for (int s = 0; s < AM_CUDA_STAGE_SLOTS; s++) {
        cudaFreeHost(c->pinned[s]);
        if (c->pinned_done[s]) cudaEventDestroy(c->pinned_done[s]);
    }
    chan_fini(&c->seqs_chan);
    chan_fini(&c->ints_chan);
    am_free(c->pack);
    if (c->cublas) am__cublas.destroy(c->cublas);
    if (c->stream) cudaStreamDestroy(c->stream);
    am_free(cb);
}

/* Designated initializers (C++20, accepted by nvcc in C++17 mode): a renamed
 * or reordered field of am_backend_ops is a compile error here, not a
 * silently shifted table. */
static const am_backend_ops cuda_ops = {
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .upload_matrix = cuda_upload_matrix,
    .matmul = am__cuda_matmul,
    .get_rows = am__cuda_get_rows,
    .rmsnorm = am__cuda_rmsnorm,
    .rope = am__cuda_rope,
    .kv_store = am__cuda_kv_store,
    .attention = am__cuda_attention,
    .softmax = am__cuda_softmax,
    .silu_mul = am__cuda_silu_mul,
    .add = am__cuda_add,
    .copy = am__cuda_copy,
    .layernorm = am__cuda_layernorm,
    .bias_act = am__cuda_bias_act,
    .add_bias = am__cuda_add_bias,
    .attention_dense = am__cuda_attention_dense,
    .attention_short = am__cuda_attention_short,
    .gather_rows = am__cuda_gather_rows,
    .scatter_add = am__cuda_scatter_add,
    .groupnorm = am__cuda_groupnorm,
    .im2col_1d = am__cuda_im2col_1d,
    .maxpool_time = am__cuda_maxpool_time,
    .mean_rows = am__cuda_mean_rows,
    .transpose = am__cuda_transpose,
    .gru_gates = am__cuda_gru_gates,
};

int am_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

int am_cuda_is_backend(const am_backend *b) { return b && b->ops == &cuda_ops; }

int am_cuda_memory(am_backend *b, size_t *free_bytes, size_t *total_bytes) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    cudaSetDevice(c->device);
    const cudaError_t e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e == cudaSuccess) return 0;
    cudaGetLastError();
    return am_err_set(AM_EIO, "CUDA device %d: cudaMemGetInfo: %s", c->device,
                      cudaGetErrorString(e));
}

int am_cuda_synchronize(am_backend *b) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    if (!c->error) am__cuda_check(c, "synchronize", cudaStreamSynchronize(c->stream));
    am__cuda_prof_harvest(c);
    return cuda_report(c);
}

int am_cuda_backend_new(int device, am_backend **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (e == cudaErrorNoDevice) return am_err_set(AM_EUNSUPPORTED, "no CUDA device");
        if (e == cudaErrorInsufficientDriver)
            return am_err_set(AM_EUNSUPPORTED,
                              "no CUDA device: no CUDA driver, or one older than CUDA %d.%d",
                              CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
        return am_err_set(AM_EUNSUPPORTED, "no CUDA device: %s", cudaGetErrorString(e));
    }
    if (n == 0) return am_err_set(AM_EUNSUPPORTED, "no CUDA device");
    if (device < 0 || device >= n)
        return am_err_set(AM_EINVAL, "CUDA device %d does not exist (%d device%s)", device, n,
                          n == 1 ? "" : "s");
    int lrc = am__cublas_load();
    if (lrc) return lrc;
    cuda_backend *cb = (cuda_backend *)am_calloc(1, sizeof *cb);
    if (!cb) return AM_ENOMEM;
    am__cuda_ctx *c = &cb->ctx;
    c->device = device;
    cb->base.ops = &cuda_ops;
    cb->base.ctx = c;
    cb->base.n_threads = 1;
    int rc = 0;
    const char *what = "cudaSetDevice";
    cudaDeviceProp prop;
    e = cudaSetDevice(device);
    if (e == cudaSuccess)
        what = "cudaGetDeviceProperties", e = cudaGetDeviceProperties(&prop, device);
    if (e == cudaSuccess)
        what = "cudaStreamCreate", e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    for (int s = 0; e == cudaSuccess && s < AM_CUDA_STAGE_SLOTS; s++) {
        what = "cudaEventCreate";
        e = cudaEventCreateWithFlags(&c->pinned_done[s], cudaEventDisableTiming);
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        rc = am_err_set(AM_EIO, "CUDA device %d: %s: %s", device, what, cudaGetErrorString(e));
        cuda_destroy(&cb->base);
        return rc;
    }
    c->n_sm = prop.multiProcessorCount;
    if ((rc = am__cuda_prof_new(c))) {
        cuda_destroy(&cb->base);
        return rc;
    }
    cublasStatus_t st = am__cublas.create(&c->cublas);
    if (st == CUBLAS_STATUS_SUCCESS) st = am__cublas.set_stream(c->cublas, c->stream);
    /* TF32 off unless asked for: f32 weights then multiply as exactly as the CPU. */
    const char *tf32 = getenv("AM_CUDA_TF32");
    const int allow_tf32 = tf32 && strcmp(tf32, "1") == 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = am__cublas.set_math_mode(c->cublas, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                            : CUBLAS_DEFAULT_MATH);
    if (st != CUBLAS_STATUS_SUCCESS) {
        rc = am_err_set(AM_EIO, "CUDA device %d: cuBLAS initialisation: %s", device,
                        am__cublas.status_string(st));
        cuda_destroy(&cb->base);
        return rc;
    }
    snprintf(cb->name, sizeof cb->name, "cuda:%d (%s, sm_%d%d)", device, prop.name, prop.major,
             prop.minor);
    cb->base.name = cb->name;
    AM_LOGI("cuda backend: %s, %d SMs, %.1f GiB", cb->name, c->n_sm,
            (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    *out = &cb->base;
    return 0;
}
