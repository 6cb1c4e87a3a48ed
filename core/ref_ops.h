/* core/ref_ops.h - plain reference versions of every backend op.
 *
 * Straight loops in f32 (dequantizing weights with am_dequantize_row), no
 * threads, no intrinsics: the ground truth that backend tests compare against.
 * Signatures mirror am_backend_ops without the backend argument.
 */
#ifndef AM_REF_OPS_H
#define AM_REF_OPS_H

#include "core/backend.h"

void am_ref_matmul(const am_matrix *w, const float *x, float *y, int64_t m);
void am_ref_get_rows(const am_matrix *w, const int32_t *ids, int64_t m, float *out);
void am_ref_rmsnorm(float *out, const float *x, const float *weight, int64_t m, int64_t k, float eps);
void am_ref_rope(float *x, const int32_t *pos, int64_t m, int n_heads, int head_dim, float theta,
                 am_rope_layout layout);
void am_ref_attention(float *out, const float *q, const float *k_cache, const float *v_cache,
                      int64_t m, int64_t pos0, int n_heads, int n_kv_heads, int head_dim,
                      int64_t kv_stride);
void am_ref_softmax(float *x, int64_t m, int64_t n);
void am_ref_silu_mul(float *gate, const float *up, int64_t n);
void am_ref_add(float *y, const float *x, int64_t n);

#endif
