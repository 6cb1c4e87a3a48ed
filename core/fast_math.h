/* core/fast_math.h - exp, erf and the GELUs for f32 without libm calls.
 *
 * Loops over these vectorize (libm's expf/erff are scalar calls): a ViT-L
 * image needs ~180M exponentials in softmax and quick_gelu, HTSAT's MLPs ~7.5M
 * erfs per clip. Shared by the CPU backend's encoder ops (core/cpu/cpu_nn.c)
 * and the host-side encoder kernels (encoders/nn_ops.c), so both round alike.
 * am_gru_gates_row is the one exception: the GRU step as PyTorch writes it,
 * with libm's expf and tanhf (a small share of IMU2CLIP's work), shared by the
 * CPU backend's gru_gates and am_nn_gru_gates.
 */
#ifndef AM_FAST_MATH_H
#define AM_FAST_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x): Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, a degree-6
 * polynomial for e^r and 2^n by exponent bits: relative error < 2e-7 over the
 * clamped range [-87.3, 88] (below it the result is ~0, as expf underflows;
 * above it exp is capped at e^88, which only quick_gelu's 1/(1+e^-1.7x) can
 * reach, where it makes no difference). */
static inline float am_exp_fast(float x) {
    x = x < -87.3f ? -87.3f : x > 88.0f ? 88.0f : x;
    /* Round to nearest with the 1.5 * 2^23 trick: plain SSE2/AVX arithmetic that vectorizes. */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t e = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &e, 4);
    return p * two_n;
}

/* erf(x) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7 in exact
 * arithmetic, ~2e-7 in f32) on am_exp_fast. */
static inline float am_erf_fast(float x) {
    const float ax = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * ax);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const float y = 1.0f - p * t * am_exp_fast(-ax * ax);
    return x < 0 ? -y : y;
}

static inline float am_gelu_fast(float x) {
    return 0.5f * x * (1.0f + am_erf_fast(x * 0.70710678118654752f));
}
static inline float am_quick_gelu_fast(float x) { return x / (1.0f + am_exp_fast(-1.702f * x)); }

/* One GRU step on one row (gate order r, z, n), in place on h (H): gi, gh (3H). */
static inline void am_gru_gates_row(float *h, const float *gi, const float *gh, int64_t hidden) {
    const int64_t H = hidden;
    for (int64_t i = 0; i < H; i++) {
        const float r = 1.0f / (1.0f + expf(-(gi[i] + gh[i])));
        const float z = 1.0f / (1.0f + expf(-(gi[H + i] + gh[H + i])));
        const float n = tanhf(gi[2 * H + i] + r * gh[2 * H + i]);
        h[i] = (1.0f - z) * n + z * h[i];
    }
}

#endif
