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

/* Which pairs RoPE rotates (docs/model-spec.md 1): Meta/GGUF/llama2.c checkpoints
 * rotate adjacent pairs (x[2i], x[2i+1]); HF checkpoints (q/k permuted) rotate
 * halves (x[i], x[i + D/2]). Both use freq_i = theta^(-2i/D). */
typedef enum { AM_ROPE_ADJACENT = 0, AM_ROPE_HALVES = 1 } am_rope_layout;

/* One layer's paged KV cache: k and v are pools of n_blocks blocks of
 * block_size positions, (n_blocks, block_size, Hkv, D) with kv_stride floats
 * between positions (Hkv * D, or more). Position t of a sequence lives in row
 * t % block_size of block blocks[t / block_size] of its block table. A
 * contiguous cache of T positions is one block of block_size T. */
typedef struct am_kv_pages {
    float *k, *v;       /* (n_blocks, block_size, kv_stride) */
    int64_t block_size; /* positions per block */
    int64_t kv_stride;  /* floats between consecutive positions */
} am_kv_pages;

/* The pool row of position t of a sequence with this block table. */
static inline int64_t am_kv_row(const int32_t *blocks, int64_t block_size, int64_t t) {
    return (int64_t)blocks[t / block_size] * block_size + t % block_size;
}

/* One sequence's share of a batched kv_store / attention call. */
typedef struct am_attn_seq {
    int64_t row0;          /* its first row in the step's (M, ...) arrays */
    int64_t m;             /* its rows, at positions pos0 .. pos0 + m - 1 */
    int64_t pos0;          /* positions already in the cache before these rows */
    const int32_t *blocks; /* block table: at least ceil((pos0 + m) / block_size) ids */
} am_attn_seq;

/* Activations of the encoders' dense layers (bias_act). GELU is the erf form
 * (PyTorch's default), quick_gelu x * sigmoid(1.702 x) (OpenAI CLIP). */
typedef enum { AM_ACT_NONE = 0, AM_ACT_GELU, AM_ACT_QUICK_GELU, AM_ACT_RELU } am_act;

/* The shape of one attention_dense call: B sequences of Tq query rows and Tk
 * key rows, H heads of D, every row a strided slice of a larger array. */
typedef struct am_dense_attn {
    int64_t n_seqs, tq, tk; /* B, Tq, Tk */
    int n_heads, head_dim;  /* H, D */
    int64_t q_stride;       /* floats between query rows; head h at column h * D */
    int64_t kv_stride;      /* floats between key (and value) rows */
    int64_t o_stride;       /* floats between output rows */
    float scale;            /* on q . k, before bias and mask */
    const float *bias;      /* (H, Tq, Tk) added for every sequence, or NULL */
    const float *mask;      /* (n_mask, Tq, Tk): sequence b adds mask[b % n_mask], or NULL */
    int64_t n_mask;
} am_dense_attn;

typedef struct am_backend am_backend;

typedef struct am_backend_ops {
    void (*destroy)(am_backend *b);

    /* Backend memory. alloc returns bytes aligned to 64 (NULL when out of
     * memory); free accepts NULL. upload/download copy between host memory
     * and backend memory; they return 0 or AM_EIO. The CPU backend's memory is
     * host memory: alloc is am_aligned_alloc and the copies are memcpy. */
    void *(*alloc)(am_backend *b, size_t bytes);
    void (*free)(am_backend *b, void *p);
    int (*upload)(am_backend *b, void *dst, const void *src, size_t bytes);
    int (*download)(am_backend *b, void *dst, const void *src, size_t bytes);
    /* Makes a host weight matrix usable by this backend, once, at load time:
     * *out views backend memory holding w's data (same dtype and shape). The
     * CPU backend returns *w itself (no copy); a device backend copies it and
     * owns the copy until destroy. Returns 0 or AM_ENOMEM/AM_EUNSUPPORTED. */
    int (*upload_matrix)(am_backend *b, const am_matrix *w, am_matrix *out);

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

    /* KV cache writes: for every sequence s, row i of k_new/v_new
     * (M, kv_stride) at s.row0 + i goes to position s.pos0 + i of its block
     * table in pages->k / pages->v (see am_kv_pages). */
    void (*kv_store)(am_backend *b, const am_kv_pages *pages, const float *k_new,
                     const float *v_new, const am_attn_seq *seqs, int n_seqs);

    /* Causal attention of a batch of sequences over a paged KV cache. For
     * every sequence s, its query rows s.row0 .. s.row0 + s.m - 1 of q are at
     * positions s.pos0 .. s.pos0 + s.m - 1 and attend to keys 0 .. their own
     * position, all already stored (kv_store):
     *   q, out: (M, H, D) rows; query head h reads kv head h / (H / Hkv);
     *   out = softmax(q k^T / sqrt(D)) v, softmax in f32.
     * seqs and their block tables are host memory (a device backend copies
     * them); out rows outside every sequence are left untouched. */
    void (*attention)(am_backend *b, float *out, const float *q, const am_kv_pages *pages,
                      const am_attn_seq *seqs, int n_seqs, int n_heads, int n_kv_heads,
                      int head_dim);

    /* In place, per row of x (M, N): x = softmax(x). */
    void (*softmax)(am_backend *b, float *x, int64_t m, int64_t n);

    /* gate (n) = silu(gate) * up, silu(x) = x / (1 + exp(-x)). */
    void (*silu_mul)(am_backend *b, float *gate, const float *up, int64_t n);

    /* y (n) += x (n). */
    void (*add)(am_backend *b, float *y, const float *x, int64_t n);

    /* ---- the dense layers of the encoders (ViT, projectors, HTSAT) ---- */

    /* dst = src, bytes of backend memory to backend memory (the ranges may not overlap). */
    void (*copy)(am_backend *b, void *dst, const void *src, size_t bytes);

    /* out (M, C) = (x - mean) / sqrt(var + eps) * w + bias per row, the
     * variance biased (PyTorch LayerNorm); mean and variance are summed in
     * double. bias (C) may be NULL; out may equal x. */
    void (*layernorm)(am_backend *b, float *out, const float *x, const float *w, const float *bias,
                      int64_t m, int64_t c, float eps);

    /* In place on y (M, N): y = act(y + bias) per row; bias (N) may be NULL. */
    void (*bias_act)(am_backend *b, float *y, const float *bias, int64_t m, int64_t n, am_act act);

    /* x (M, N) += y + bias per row (a residual add); bias (N) may be NULL. */
    void (*add_bias)(am_backend *b, float *x, const float *y, const float *bias, int64_t m,
                     int64_t n);

    /* Attention without a causal mask (encoders), for every sequence s < B and head h:
     *   out[s, i, h] = softmax_j(scale * q[s, i, h] . k[s, j, h] + bias[h, i, j]
     *                            + mask[s % n_mask, i, j]) v[s, j, h]
     * with row (s, i) of q at q + (s * Tq + i) * q_stride, rows (s, j) of k
     * and v at + (s * Tk + j) * kv_stride, of out at + (s * Tq + i) * o_stride;
     * softmax in f32. q, k, v, out, bias and mask are backend memory; a is host
     * memory. Returns 0, AM_ENOMEM (scratch) or a matmul error. */
    int (*attention_dense)(am_backend *b, float *out, const float *q, const float *k,
                           const float *v, const am_dense_attn *a);

    /* ---- the audio and IMU encoders' layers (HTSAT, IMU2CLIP) ---- */

    /* attention_dense for many short sequences (Swin's 64-token windows), the
     * same arguments and result; Tq, Tk <= AM_SHORT_ATTN_MAX_T (else
     * AM_EINVAL). The CPU computes each (sequence, head) pair on one thread
     * in plain C (a GEMM call costs more than a 64 x 64 x 32 product), every
     * pair the same way whatever the batch. 0, AM_EINVAL, AM_ENOMEM. */
    int (*attention_short)(am_backend *b, float *out, const float *q, const float *k,
                           const float *v, const am_dense_attn *a);

    /* Row permutations per block of `period` rows: row r maps to
     * map(r) = (r / period) * period + idx[r % period]; idx (period) is backend
     * memory. gather_rows: dst (M, C) row r = src row map(r). scatter_add:
     * x row map(r) += y row r + bias (bias (C) may be NULL); map must be a
     * permutation within each block. */
    void (*gather_rows)(am_backend *b, float *dst, const float *src, const int32_t *idx,
                        int64_t period, int64_t m, int64_t c);
    void (*scatter_add)(am_backend *b, float *x, const float *y, const float *bias,
                        const int32_t *idx, int64_t period, int64_t m, int64_t c);

    /* GroupNorm (PyTorch nn.GroupNorm) on x (B, T, C) time-major: per sample,
     * channels in `groups` groups of C/groups; a group's T*C/groups values are
     * normalized (biased variance, mean and variance summed in double), then
     * channel c gets * w[c] + bias[c]. out may equal x; groups divides C. */
    void (*groupnorm)(am_backend *b, float *out, const float *x, const float *w, const float *bias,
                      int64_t nb, int64_t t, int64_t c, int groups, float eps);
    /* Conv1d im2col (kernel k, dilation dil, stride 1, no padding) on x (B, T, C):
     * cols (B, To, C*k), To = T - dil*(k-1), row (b, t) holds x[b, t + j*dil, c]
     * at column c*k + j (the flattened Conv1d weight's order). Nothing when To <= 0. */
    void (*im2col_1d)(am_backend *b, float *cols, const float *x, int64_t nb, int64_t t, int64_t c,
                      int k, int dil);
    /* MaxPool1d(p, stride p) over time on x (B, T, C): out (B, T/p, C) (floor);
     * a NaN wins, as in PyTorch. */
    void (*maxpool_time)(am_backend *b, float *out, const float *x, int64_t nb, int64_t t,
                         int64_t c, int p);
    /* out (B, C) = the mean over T of x (B, T, C), summed in double. */
    void (*mean_rows)(am_backend *b, float *out, const float *x, int64_t nb, int64_t t, int64_t c);
    /* dst (B, C, T) = src (B, T, C) transposed per sample (the ranges may not overlap). */
    void (*transpose)(am_backend *b, float *dst, const float *src, int64_t nb, int64_t t,
                      int64_t c);
    /* One GRU step (PyTorch nn.GRU, gate order r, z, n) for `rows` rows, in place
     * on h (rows, H): gi row r (3H) at gi + r * gi_stride = W_ih x + b_ih,
     * gh (rows, 3H) = W_hh h + b_hh; r = sigmoid(gi_r + gh_r), z likewise,
     * n = tanh(gi_n + r * gh_n), h = (1 - z) * n + z * h. */
    void (*gru_gates)(am_backend *b, float *h, const float *gi, int64_t gi_stride, const float *gh,
                      int64_t rows, int64_t hidden);
} am_backend_ops;

/* Longest query/key sequence attention_short takes (a Swin window is 64). */
#define AM_SHORT_ATTN_MAX_T 256

struct am_backend {
    const am_backend_ops *ops;
    const char *name; /* "cpu-avx512", "cpu-generic", ... */
    int n_threads;
    int host_memory; /* 1: backend memory is host memory (the CPU backend), so
                      * callers may skip upload/download staging */
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
