/* core/ref_ops.h - plain reference versions of every backend op.
 *
 * Straight loops (dequantizing weights with am_dequantize_row), no threads, no
 * intrinsics: the ground truth that backend tests compare against. Inputs and
 * outputs are f32; sums (dot products, mean squares, softmax denominators) are
 * accumulated in double and RoPE angles are computed in double, so the
 * reference is closer to the exact result than any f32 kernel. Signatures
 * mirror am_backend_ops without the backend argument; they allocate scratch
 * with am_malloc and assert that it succeeds (tests only).
 */
#ifndef AM_REF_OPS_H
#define AM_REF_OPS_H

#include "core/backend.h"

/* x rounded as W's dtype and the precision mode prescribe (dtype.h: int8
 * blocks for Q8_0/Q4_0, bf16 for BF16 in mode bf16), then exact products
 * summed in double: a kernel differs from it only by its own f32 sums. */
void am_ref_matmul(const am_matrix *w, am_precision mode, const float *x, float *y, int64_t m);
/* out (K) = one row x (K) as a matmul by a W of dtype w sees it in this mode, in double (exact). */
void am_ref_matmul_x(am_dtype w, am_precision mode, const float *x, double *out, int64_t k);
void am_ref_get_rows(const am_matrix *w, const int32_t *ids, int64_t m, float *out);
void am_ref_rmsnorm(float *out, const float *x, const float *weight, int64_t m, int64_t k,
                    float eps);
void am_ref_rope(float *x, const int32_t *pos, int64_t m, int n_heads, int head_dim, float theta,
                 am_rope_layout layout);
void am_ref_attention(float *out, const float *q, const float *k_cache, const float *v_cache,
                      int64_t m, int64_t pos0, int n_heads, int n_kv_heads, int head_dim,
                      int64_t kv_stride);
/* The paged, batched versions (backend.h): each sequence's keys are gathered
 * into a contiguous cache and go through am_ref_attention. */
void am_ref_kv_store(const am_kv_pages *pages, const float *k_new, const float *v_new,
                     const am_attn_seq *seqs, int n_seqs);
void am_ref_attention_paged(float *out, const float *q, const am_kv_pages *pages,
                            const am_attn_seq *seqs, int n_seqs, int n_heads, int n_kv_heads,
                            int head_dim);
void am_ref_softmax(float *x, int64_t m, int64_t n);
void am_ref_silu_mul(float *gate, const float *up, int64_t n);
void am_ref_add(float *y, const float *x, int64_t n);
/* The encoder ops (copy is memcpy): layernorm, bias_act (am_ref_act is one activation, in
 * double), add_bias and attention_dense. */
void am_ref_layernorm(float *out, const float *x, const float *w, const float *b, int64_t m,
                      int64_t c, float eps);
float am_ref_act(float x, am_act act);
void am_ref_bias_act(float *y, const float *bias, int64_t m, int64_t n, am_act act);
void am_ref_add_bias(float *x, const float *y, const float *bias, int64_t m, int64_t n);
void am_ref_attention_dense(float *out, const float *q, const float *k, const float *v,
                            const am_dense_attn *a);
/* The audio and IMU encoders' ops (attention_short's reference is am_ref_attention_dense). */
void am_ref_gather_rows(float *dst, const float *src, const int32_t *idx, int64_t period, int64_t m,
                        int64_t c);
void am_ref_scatter_add(float *x, const float *y, const float *bias, const int32_t *idx,
                        int64_t period, int64_t m, int64_t c);
void am_ref_groupnorm(float *out, const float *x, const float *w, const float *b, int64_t nb,
                      int64_t t, int64_t c, int groups, float eps);
void am_ref_im2col_1d(float *cols, const float *x, int64_t nb, int64_t t, int64_t c, int k,
                      int dil);
void am_ref_maxpool_time(float *out, const float *x, int64_t nb, int64_t t, int64_t c, int p);
void am_ref_mean_rows(float *out, const float *x, int64_t nb, int64_t t, int64_t c);
void am_ref_transpose(float *dst, const float *src, int64_t nb, int64_t t, int64_t c);
void am_ref_gru_gates(float *h, const float *gi, int64_t gi_stride, const float *gh, int64_t rows,
                      int64_t hidden);

#endif
