/* core/backend.h - the compute-backend vtable.
 *
 * A backend is a table of operations plus a private context (the ggml-backend
 * pattern): the decoder calls b->ops->op(b, ...) and never knows whether the
 * CPU or, later, CUDA runs it. All activations are f32, row-major. Weights are
 * am_matrix views (any of F32, F16, BF16, Q8_0, Q4_0), usually into a mapped
 * checkpoint. Pointers passed to ops are memory of that backend (host memory
 * for the CPU backend).
 *
 * Dimension letters: M = rows of activations (tokens in a step), K = input
 * features, N = output features, H = heads, D = head_dim, T = positions in the
 * KV cache.
 *
 * The reference versions of every op are in core/ref_ops.h: plain loops that
 * tests use as ground truth.
 */
#ifndef AM_BACKEND_H
#define AM_BACKEND_H

#include "core/dtype.h"

#include <stddef.h>
#include <stdint.h>

/* A weight matrix W (N, K) = (rows, cols): row n holds output feature n. */
typedef struct am_matrix {
    am_dtype dtype;
    int64_t rows;     /* N */
    int64_t cols;     /* K; a multiple of 32 for Q8_0/Q4_0 */
    const void *data; /* rows * row_bytes bytes */
    size_t row_bytes; /* am_dtype_row_bytes(dtype, cols) */
} am_matrix;

/* Which pairs RoPE rotates (MODEL_SPEC.md 1): Meta/GGUF/llama2.c checkpoints
 * rotate adjacent pairs (x[2i], x[2i+1]); HF checkpoints (q/k permuted) rotate
 * halves (x[i], x[i + D/2]). Both use freq_i = theta^(-2i/D). */
typedef enum { AM_ROPE_ADJACENT = 0, AM_ROPE_HALVES = 1 } am_rope_layout;

typedef struct am_backend am_backend;

typedef struct am_backend_ops {
    void (*destroy)(am_backend *b);

    /* y (M, N) = x (M, K) . W^T. M == 1 is a matrix-vector product (memory
     * bound); larger M runs as a GEMM. Returns 0 or AM_ENOMEM/AM_EUNSUPPORTED. */
    int (*matmul)(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m);

    /* out (M, K) = rows ids[0..M) of W, dequantized (embedding lookup). The
     * caller has checked 0 <= ids[i] < W.rows. */
    void (*get_rows)(am_backend *b, const am_matrix *w, const int32_t *ids, int64_t m, float *out);

    /* out (M, K) = x * rsqrt(mean(x^2) + eps) * weight, per row. out may equal x. */
    void (*rmsnorm)(am_backend *b, float *out, const float *x, const float *weight, int64_t m,
                    int64_t k, float eps);

    /* In place on x (M, H, D): rotates each head of row i by position pos[i]. */
    void (*rope)(am_backend *b, float *x, const int32_t *pos, int64_t m, int n_heads, int head_dim,
                 float theta, am_rope_layout layout);

    /* Causal attention of M queries at positions pos0 .. pos0+M-1 over a KV
     * cache holding positions 0 .. pos0+M-1:
     *   q, out: (M, H, D) rows;  k_cache, v_cache: (T, Hkv, D) rows with a row
     *   stride of kv_stride floats; query head h reads kv head h / (H / Hkv).
     *   out = softmax(q k^T / sqrt(D)) v, softmax in f32. */
    void (*attention)(am_backend *b, float *out, const float *q, const float *k_cache,
                      const float *v_cache, int64_t m, int64_t pos0, int n_heads, int n_kv_heads,
                      int head_dim, int64_t kv_stride);

    /* In place, per row of x (M, N): x = softmax(x). */
    void (*softmax)(am_backend *b, float *x, int64_t m, int64_t n);

    /* gate (n) = silu(gate) * up, silu(x) = x / (1 + exp(-x)). */
    void (*silu_mul)(am_backend *b, float *gate, const float *up, int64_t n);

    /* y (n) += x (n). */
    void (*add)(am_backend *b, float *y, const float *x, int64_t n);
} am_backend_ops;

struct am_backend {
    const am_backend_ops *ops;
    const char *name; /* "cpu-avx512", "cpu-generic", ... */
    int n_threads;
    void *ctx;
};

/* Accepts NULL and *p == NULL; sets *p = NULL. */
static inline void am_backend_destroy(am_backend **p) {
    if (p && *p) {
        (*p)->ops->destroy(*p);
        *p = 0;
    }
}

#endif
