/* core/dtype.c - dtype names, sizes and reference row conversions. */
#include "core/dtype.h"

#include "core/error.h"

#include <math.h>
#include <strings.h>

static const struct {
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
} dtype_info[AM_DTYPE_COUNT] = {
    [AM_DTYPE_F32] = {"f32", 1, 4},
    [AM_DTYPE_F16] = {"f16", 1, 2},
    [AM_DTYPE_BF16] = {"bf16", 1, 2},
    [AM_DTYPE_Q8_0] = {"q8_0", AM_QK, sizeof(am_block_q8_0)},
    [AM_DTYPE_Q4_0] = {"q4_0", AM_QK, sizeof(am_block_q4_0)},
    [AM_DTYPE_F64] = {"f64", 1, 8},
    [AM_DTYPE_I64] = {"i64", 1, 8},
    [AM_DTYPE_I32] = {"i32", 1, 4},
    [AM_DTYPE_I16] = {"i16", 1, 2},
    [AM_DTYPE_I8] = {"i8", 1, 1},
    [AM_DTYPE_U8] = {"u8", 1, 1},
    [AM_DTYPE_BOOL] = {"bool", 1, 1},
};

_Static_assert(sizeof(am_block_q8_0) == 34, "q8_0 block must be packed");
_Static_assert(sizeof(am_block_q4_0) == 18, "q4_0 block must be packed");

const char *am_dtype_name(am_dtype t) {
    return (unsigned)t < AM_DTYPE_COUNT ? dtype_info[t].name : "invalid";
}

int am_dtype_parse(const char *name, am_dtype *out) {
    for (int i = 0; i < AM_DTYPE_COUNT; i++) {
        if (strcasecmp(name, dtype_info[i].name) == 0) {
            *out = (am_dtype)i;
            return 0;
        }
    }
    return am_err_set(AM_EINVAL, "unknown dtype '%s'", name);
}

int64_t am_dtype_block_elems(am_dtype t) {
    return (unsigned)t < AM_DTYPE_COUNT ? dtype_info[t].block_elems : 1;
}

size_t am_dtype_block_bytes(am_dtype t) {
    return (unsigned)t < AM_DTYPE_COUNT ? dtype_info[t].block_bytes : 0;
}

size_t am_dtype_row_bytes(am_dtype t, int64_t n) {
    int64_t be = am_dtype_block_elems(t);
    if (n < 0 || n % be) return 0;
    uint64_t blocks = (uint64_t)(n / be);
    size_t bb = am_dtype_block_bytes(t);
    if (bb && blocks > SIZE_MAX / bb) return 0;
    return (size_t)blocks * bb;
}

void am_dequantize_row(am_dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case AM_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case AM_DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = am_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case AM_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = am_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case AM_DTYPE_Q8_0: {
        const am_block_q8_0 *b = src;
        for (int64_t i = 0; i < n / AM_QK; i++) {
            float d = am_f16_to_f32(b[i].d);
            for (int j = 0; j < AM_QK; j++)
                dst[i * AM_QK + j] = d * (float)b[i].qs[j];
        }
        break;
    }
    case AM_DTYPE_Q4_0: {
        const am_block_q4_0 *b = src;
        for (int64_t i = 0; i < n / AM_QK; i++) {
            float d = am_f16_to_f32(b[i].d);
            for (int j = 0; j < AM_QK / 2; j++) {
                dst[i * AM_QK + j] = (float)((b[i].qs[j] & 15) - 8) * d;
                dst[i * AM_QK + j + AM_QK / 2] = (float)((b[i].qs[j] >> 4) - 8) * d;
            }
        }
        break;
    }
    default: AM_ASSERT(!"am_dequantize_row: unsupported dtype");
    }
}

void am_quantize_row(am_dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case AM_DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case AM_DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = am_f32_to_f16(src[i]);
        break;
    case AM_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = am_f32_to_bf16(src[i]);
        break;
    case AM_DTYPE_Q8_0: {
        am_block_q8_0 *b = dst;
        for (int64_t i = 0; i < n / AM_QK; i++) {
            const float *x = src + i * AM_QK;
            float amax = 0.0f;
            for (int j = 0; j < AM_QK; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f;
            float id = d ? 1.0f / d : 0.0f;
            b[i].d = am_f32_to_f16(d);
            for (int j = 0; j < AM_QK; j++)
                b[i].qs[j] = (int8_t)roundf(x[j] * id);
        }
        break;
    }
    case AM_DTYPE_Q4_0: {
        am_block_q4_0 *b = dst;
        for (int64_t i = 0; i < n / AM_QK; i++) {
            const float *x = src + i * AM_QK;
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < AM_QK; j++) {
                if (fabsf(x[j]) > amax) {
                    amax = fabsf(x[j]);
                    max = x[j];
                }
            }
            float d = max / -8.0f;
            float id = d ? 1.0f / d : 0.0f;
            b[i].d = am_f32_to_f16(d);
            for (int j = 0; j < AM_QK / 2; j++) {
                int q0 = (int)(int8_t)(x[j] * id + 8.5f);
                int q1 = (int)(int8_t)(x[j + AM_QK / 2] * id + 8.5f);
                q0 = q0 > 15 ? 15 : q0;
                q1 = q1 > 15 ? 15 : q1;
                b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
        break;
    }
    default: AM_ASSERT(!"am_quantize_row: unsupported dtype");
    }
}

int am_precision_parse(const char *name, am_precision *out) {
    if (name && strcasecmp(name, "f32") == 0)
        *out = AM_PRECISION_F32;
    else if (name && strcasecmp(name, "bf16") == 0)
        *out = AM_PRECISION_BF16;
    else
        return am_err_set(AM_EINVAL, "precision mode '%s': expected f32 or bf16", name ? name : "");
    return 0;
}

const char *am_precision_name(am_precision mode) {
    return mode == AM_PRECISION_BF16 ? "bf16" : "f32";
}
