/* core/dtype.h - element types of tensors and weights, and scalar conversions.
 *
 * Block-quantized types (Q8_0, Q4_0) store AM_QK = 32 elements per block; a
 * row of such a tensor must have a multiple of 32 elements. Layouts are those
 * of GGUF/ggml (docs/model-spec.md section 8):
 *   Q8_0: { f16 d; int8 qs[32]; }           x[i] = d * qs[i]
 *   Q4_0: { f16 d; uint8 qs[16]; }          x[i] = ((qs[i] & 15) - 8) * d for i < 16,
 *                                           x[i+16] = ((qs[i] >> 4) - 8) * d
 */
#ifndef AM_DTYPE_H
#define AM_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    AM_DTYPE_F32 = 0,
    AM_DTYPE_F16,
    AM_DTYPE_BF16,
    AM_DTYPE_Q8_0,
    AM_DTYPE_Q4_0,
    AM_DTYPE_F64,
    AM_DTYPE_I64,
    AM_DTYPE_I32,
    AM_DTYPE_I16,
    AM_DTYPE_I8,
    AM_DTYPE_U8,
    AM_DTYPE_BOOL,
    AM_DTYPE_COUNT
} am_dtype;

#define AM_QK 32

typedef struct {
    uint16_t d;
    int8_t qs[AM_QK];
} am_block_q8_0; /* 34 bytes */
typedef struct {
    uint16_t d;
    uint8_t qs[AM_QK / 2];
} am_block_q4_0; /* 18 bytes */

/* "f32", "f16", "bf16", "q8_0", "q4_0", "f64", "i64", ... */
const char *am_dtype_name(am_dtype t);
/* Parses a name as printed by am_dtype_name (case-insensitive); AM_EINVAL if unknown. */
int am_dtype_parse(const char *name, am_dtype *out);
/* Elements per block: 32 for Q8_0/Q4_0, 1 otherwise. */
int64_t am_dtype_block_elems(am_dtype t);
/* Bytes per block (per element for non-block types). */
size_t am_dtype_block_bytes(am_dtype t);
/* Bytes of a row of n elements; returns 0 if n is not a multiple of the block size
 * or on overflow. */
size_t am_dtype_row_bytes(am_dtype t, int64_t n);

static inline float am_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even, NaN kept a (quiet) NaN, as torch does. */
static inline uint16_t am_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float am_f16_to_f32(uint16_t h) {
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}

static inline uint16_t am_f32_to_f16(float f) {
    _Float16 x = (_Float16)f; /* IEEE round to nearest even */
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}

/* Converts n elements of a row in dtype t (F32, F16, BF16, Q8_0, Q4_0) to f32.
 * n must be a multiple of the block size for block types. */
void am_dequantize_row(am_dtype t, const void *src, float *dst, int64_t n);

/* Quantizes n f32 values into dtype t (F32, F16, BF16, Q8_0, Q4_0) using the
 * same rounding as ggml's reference quantizers (Q8_0: d = amax/127,
 * q = round(x/d); Q4_0: d = max/-8 with max the signed value of largest
 * magnitude, q = min(15, (int8)(x/d + 8.5))). */
void am_quantize_row(am_dtype t, const float *src, void *dst, int64_t n);

/* ---- The precision of a matmul y = x . W^T (docs/numerics.md) ----
 *
 * What a matmul does to its activations x is fixed by W's dtype and the
 * precision mode alone: never by M, the tensor-parallel slice, the batch, the
 * thread count or the kernel path a CPU takes. Every product is then exact in
 * f32 and only the order of the f32 (or wider) accumulation differs between
 * paths:
 *   F32, F16    x stays f32 (W widened exactly);
 *   BF16        x stays f32 in mode f32 (the default); in mode bf16 x is
 *               rounded to bf16, to nearest even (am_f32_to_bf16): the operand
 *               precision of AMX / AVX512-BF16 tiles, used then for every M;
 *   Q8_0, Q4_0  x quantized per block of 32 to int8 (am_quantize_x_block, as
 *               llama.cpp's q8 activations), with exact int32 block sums.
 * Rounding x has a cost beyond its own error: two runs whose upstream f32 sums
 * differ in order (P = 1 against P = 2, say) can round an element near a
 * rounding boundary to neighbouring values, and the model then differs by
 * that rounding step instead of by f32 re-association. Mode f32 keeps every
 * dense dtype free of that, so logits agree across P and batch sizes within
 * f32 re-association; mode bf16 trades it for the bf16 tiles' speed. */
typedef enum { AM_PRECISION_F32 = 0, AM_PRECISION_BF16 } am_precision;

typedef enum { AM_XPREC_F32, AM_XPREC_BF16, AM_XPREC_Q8 } am_xprec;

static inline am_xprec am_matmul_x_precision(am_dtype w, am_precision mode) {
    if (w == AM_DTYPE_BF16 && mode == AM_PRECISION_BF16) return AM_XPREC_BF16;
    if (w == AM_DTYPE_Q8_0 || w == AM_DTYPE_Q4_0) return AM_XPREC_Q8;
    return AM_XPREC_F32;
}

/* "f32" or "bf16" -> mode (case-insensitive); AM_EINVAL for anything else. */
int am_precision_parse(const char *name, am_precision *out);
const char *am_precision_name(am_precision mode);

/* The activation quantization of Q8_0/Q4_0 matmuls, one block of 32:
 * d = amax / 127 (f32), q[j] = x[j] * (1 / d) rounded to nearest even (0 when
 * d == 0); returns d. Each x[j] is then represented by q[j] * d, at most d/2
 * away. Every kernel path must produce these exact q and d (the SIMD ones do
 * the same f32 operations). */
static inline float am_quantize_x_block(const float *x, int8_t *q) {
    float amax = 0.0f;
    for (int j = 0; j < AM_QK; j++) {
        const float a = x[j] < 0 ? -x[j] : x[j];
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < AM_QK; j++)
        q[j] = (int8_t)__builtin_nearbyintf(x[j] * id);
    return d;
}

#endif
