/* encoders/nn_ops.h - the encoders' op context and their neural-network ops over the backend
 * vtable.
 *
 * The ViT and the projectors need LayerNorm with bias, exact GELU and
 * quick_gelu, bias adds, a conv patch embedding (im2col, then a GEMM) and
 * attention without a causal mask over many short sequences; the audio
 * encoder (HTSAT, a Swin transformer) adds ReLU and windowed attention with a
 * relative-position bias and a shift mask; the IMU encoder (IMU2CLIP) needs
 * GroupNorm, dilated Conv1d (im2col, then a GEMM), MaxPool1d and a GRU.
 *
 * Which memory: every op but am_nn_patchify is a backend op (core/backend.h:
 * layernorm, bias_act, add_bias, matmul, attention_dense, attention_short,
 * gather_rows, scatter_add, groupnorm, im2col_1d, maxpool_time, gru_gates;
 * HTSAT and IMU2CLIP also call mean_rows, transpose and copy directly):
 * its pointers are backend memory, so the ViT, HTSAT, IMU2CLIP and the
 * projectors run on any backend. am_nn_patchify (the 2-D im2col) is a plain C
 * kernel on host memory split over the op context's pool (the pixels are
 * patchified on the host before they go up), and so is am_nn_gru_gates (one
 * row, tests). Every GEMM goes through the backend's matmul, so the
 * BLAS/oneDNN path does the heavy work.
 *
 * Each op has a plain reference version (am_nn_ref_* here, am_ref_* in
 * core/ref_ops.h) that tests use as ground truth: straight loops, sums in double.
 *
 * Activations are f32, row-major. Dimension letters: M rows (tokens of all
 * images in a batch), C or N features, B sequences, T positions, H heads,
 * D head_dim.
 */
#ifndef AM_NN_OPS_H
#define AM_NN_OPS_H

#include "core/backend.h"
#include "core/threadpool.h"

#include <stddef.h>
#include <stdint.h>

/* am_act (the activations) is in core/backend.h. */

/* Parses "gelu", "quick_gelu", "relu" (others, e.g. "gelu_pytorch_tanh": AM_EUNSUPPORTED). */
int am_act_parse(const char *name, am_act *out);
const char *am_act_name(am_act a);

/* A linear layer y = x W^T + b. w views weights (usually mapped); b is an
 * f32 copy (N) or NULL when the layer has no bias. */
typedef struct am_linear {
    am_matrix w;    /* (N, K) */
    const float *b; /* (N) or NULL */
} am_linear;

/* The op context: a borrowed backend, an owned thread pool and a growable
 * scratch buffer for host kernels (the backend ops use the backend's own).
 * One thread uses it at a time. */
typedef struct am_nn {
    am_backend *be;
    am_threadpool *tp;
    float *scratch; /* owned, aligned */
    size_t scratch_floats;
} am_nn;

/* n_threads >= 1. AM_EINVAL, AM_ENOMEM. */
int am_nn_init(am_nn *nn, am_backend *be, int n_threads);
void am_nn_fini(am_nn *nn);

/* out (M, C) = (x - mean) / sqrt(var + eps) * w + b per row, var biased (PyTorch
 * LayerNorm). b may be NULL. out may equal x. */
void am_nn_layernorm(am_nn *nn, float *out, const float *x, const float *w, const float *b,
                     int64_t m, int64_t c, float eps);
/* y (M, N) = act(y + bias) per row; bias may be NULL. GELU is the erf form
 * (PyTorch's default), its erf a vectorizable approximation within 3e-7. */
void am_nn_bias_act(am_nn *nn, float *y, const float *bias, int64_t m, int64_t n, am_act act);
/* x (M, N) += y + bias per row (residual add); bias may be NULL. */
void am_nn_residual(am_nn *nn, float *x, const float *y, const float *bias, int64_t m, int64_t n);
/* y (M, N) = x (M, K) W^T + b via the backend matmul. Returns the matmul's error. */
int am_nn_linear(am_nn *nn, const am_linear *l, const float *x, float *y, int64_t m);
/* y (M, N) = x W^T as one backend matmul per `chunk` rows (the last may be
 * shorter). BLAS and oneDNN results for a row depend on the M of the call
 * (blocking, edge kernels), so the encoders run one call per image / media
 * item: a batch then gives bit-identical results to one item at a time. */
int am_nn_matmul_rows(am_nn *nn, const am_matrix *w, const float *x, float *y, int64_t m,
                      int64_t chunk);
/* am_nn_matmul_rows plus the bias. */
int am_nn_linear_rows(am_nn *nn, const am_linear *l, const float *x, float *y, int64_t m,
                      int64_t chunk);

/* im2col for a Conv2d(ch, C, kernel=p, stride=p, bias=False) patch embedding:
 * pix (B, ch, S, S) -> cols (B, P, ch*p*p) with P = (S/p)^2 patches in raster
 * order and each row ordered (channel, ky, kx) like the flattened conv weight
 * (C, ch, p, p). */
void am_nn_patchify(am_nn *nn, const float *pix, float *cols, int64_t b, int ch, int s, int p);

/* Attention without a mask, for each of B sequences and H heads:
 *   out[b, i, h] = softmax_j(scale * q[b, i, h] . k[b, j, h]) v[b, j, h]
 * q: row (b, i) at q + (b * tq + i) * q_stride, head h at column h * D;
 * k, v: row (b, j) at k/v + (b * tk + j) * kv_stride; out: (B, Tq, H*D) rows
 * with stride o_stride. The backend's attention_dense (on the CPU: per
 * sequence and head two GEMMs, scores and the weighted sum, with a threaded
 * softmax in f32 between them). AM_ENOMEM or the matmul's error. */
int am_nn_attention(am_nn *nn, float *out, int64_t o_stride, const float *q, int64_t q_stride,
                    const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                    int64_t tk, int n_heads, int head_dim, float scale);
/* am_nn_attention with additive terms on the scaled scores before the softmax
 * (Swin's windowed attention):
 *   bias (H, Tq, Tk): added for every sequence, per head (NULL: none);
 *   mask (n_mask, Tq, Tk): sequence b adds mask[b % n_mask] to every head (NULL: none).
 * Sequences are ordered (item, window) so that b % n_mask is the window index. */
int am_nn_attention_ex(am_nn *nn, float *out, int64_t o_stride, const float *q, int64_t q_stride,
                       const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                       int64_t tk, int n_heads, int head_dim, float scale, const float *bias,
                       const float *mask, int64_t n_mask);

/* Longest query/key sequence am_nn_attention_short takes (a Swin window is 64). */
#define AM_NN_SHORT_ATTN_MAX_T AM_SHORT_ATTN_MAX_T
/* am_nn_attention_ex for many short sequences (Swin's 64-token windows): the
 * backend's attention_short (on the CPU fused: the (sequence, head) pairs are
 * split over the pool and each is computed on one thread in plain C, since a
 * backend GEMM call costs more than a 64 x 64 x 32 product, and these products
 * are ~4% of HTSAT's FLOPs; every pair is computed the same way whatever the
 * batch). tq, tk <= AM_NN_SHORT_ATTN_MAX_T (else AM_EINVAL); AM_ENOMEM. */
int am_nn_attention_short(am_nn *nn, float *out, int64_t o_stride, const float *q, int64_t q_stride,
                          const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                          int64_t tk, int n_heads, int head_dim, float scale, const float *bias,
                          const float *mask, int64_t n_mask);

/* Row permutations (Swin's window partition with its cyclic shift), per block
 * of `period` rows (one clip): row r maps to (r / period) * period + idx[r % period].
 * gather: dst (M, C) row r = src row map(r); scatter_residual: x row map(r) +=
 * y row r + bias (bias (C) may be NULL), the residual add back in grid order. */
void am_nn_gather_rows(am_nn *nn, float *dst, const float *src, const int32_t *idx, int64_t period,
                       int64_t m, int64_t c);
void am_nn_scatter_residual(am_nn *nn, float *x, const float *y, const float *bias,
                            const int32_t *idx, int64_t period, int64_t m, int64_t c);

/* GroupNorm (PyTorch nn.GroupNorm) on time-major activations: for each of B
 * samples x (T, C), the C channels form `groups` groups of C/groups channels;
 * the T*C/groups values of a group are normalized (biased variance, eps),
 * then channel c gets * w[c] + b[c]. out may equal x. groups divides C. */
void am_nn_groupnorm(am_nn *nn, float *out, const float *x, const float *w, const float *b,
                     int64_t nb, int64_t t, int64_t c, int groups, float eps);
/* im2col for a Conv1d(C, C_out, kernel k, dilation dil, stride 1, no padding)
 * on time-major x (B, T, C): cols (B, To, C*k) with To = T - dil*(k-1); row
 * (b, t) holds x[b, t + j*dil, c] at column c*k + j, the order of the
 * flattened Conv1d weight (C_out, C, k). The conv is then cols W^T. */
void am_nn_im2col_1d(am_nn *nn, const float *x, float *cols, int64_t b, int64_t t, int64_t c, int k,
                     int dil);
/* MaxPool1d(kernel p, stride p) over time on time-major x (B, T, C): out
 * (B, T/p, C) (floor, as PyTorch), row i = max of rows i*p .. i*p+p-1. */
void am_nn_maxpool_time(am_nn *nn, float *out, const float *x, int64_t b, int64_t t, int64_t c,
                        int p);
/* One GRU step (PyTorch nn.GRU, gate order r, z, n), in place on h (H):
 *   gi (3H) = W_ih x + b_ih, gh (3H) = W_hh h + b_hh (computed by the caller
 *   with backend matmuls); r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
 *   n = tanh(gi_n + r * gh_n), h = (1 - z) * n + z * h. */
void am_nn_gru_gates(float *h, const float *gi, const float *gh, int64_t hidden);
/* The context's host scratch, at least `floats` long (NULL when out of
 * memory); valid until the next call that uses it (am_nn_zero does). */
float *am_nn_host_scratch(am_nn *nn, size_t floats);
/* p (n floats of backend memory) = 0. AM_ENOMEM or the upload's error. */
int am_nn_zero(am_nn *nn, float *p, int64_t n);
/* The backend's gru_gates: am_nn_gru_gates on `rows` rows of h (rows, H) in
 * backend memory, gi row r at gi + r * gi_stride, gh (rows, 3H). */
void am_nn_gru_rows(am_nn *nn, float *h, const float *gi, int64_t gi_stride, const float *gh,
                    int64_t rows, int64_t hidden);

/* ---- reference versions (tests) ---- */
void am_nn_ref_layernorm(float *out, const float *x, const float *w, const float *b, int64_t m,
                         int64_t c, float eps);
float am_nn_ref_act(float x, am_act act); /* in double internally */
void am_nn_ref_attention(float *out, int64_t o_stride, const float *q, int64_t q_stride,
                         const float *k, const float *v, int64_t kv_stride, int64_t b, int64_t tq,
                         int64_t tk, int n_heads, int head_dim, float scale);
void am_nn_ref_attention_ex(float *out, int64_t o_stride, const float *q, int64_t q_stride,
                            const float *k, const float *v, int64_t kv_stride, int64_t b,
                            int64_t tq, int64_t tk, int n_heads, int head_dim, float scale,
                            const float *bias, const float *mask, int64_t n_mask);
void am_nn_ref_groupnorm(float *out, const float *x, const float *w, const float *b, int64_t nb,
                         int64_t t, int64_t c, int groups, float eps);
/* A whole GRU over x (T, I) from h = 0; h_out (H) = the last hidden state. */
void am_nn_ref_gru(float *h_out, const float *x, const float *w_ih, const float *w_hh,
                   const float *b_ih, const float *b_hh, int64_t t, int64_t in, int64_t hidden);

#endif
