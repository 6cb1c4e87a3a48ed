/* core/cpu/kernels_avx2.c - the "avx2" kernel table (AVX2 + FMA + F16C).
 *
 * Compiled for those extensions with a target pragma rather than -mavx2, so
 * the library still runs on any x86-64; cpu_backend.c calls into this table
 * only after CPUID/XGETBV confirmed the CPU and OS support it. The kernels
 * themselves are kernels_simd.inc with 8 f32 lanes.
 */
#include "core/cpu/cpu_internal.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

typedef __m256 VF;  /* 8 f32 lanes */
typedef __m256i VI; /* 8 i32 lanes */
#define AM_W         8
#define AM_SIMD_NAME "avx2"

static inline VF vloadu(const float *p) { return _mm256_loadu_ps(p); }
static inline void vstoreu(float *p, VF v) { _mm256_storeu_ps(p, v); }
static inline VF vset1(float s) { return _mm256_set1_ps(s); }
static inline VF vzero(void) { return _mm256_setzero_ps(); }
static inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
static inline VF vsub(VF a, VF b) { return _mm256_sub_ps(a, b); }
static inline VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
static inline VF vdiv(VF a, VF b) { return _mm256_div_ps(a, b); }
static inline VF vmax(VF a, VF b) { return _mm256_max_ps(a, b); }
static inline VF vmin(VF a, VF b) { return _mm256_min_ps(a, b); }
static inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
static inline VF vround(VF v) {
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline float vhsum(VF v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float vhmax(VF v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline VF vload_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline VF vload_bf16(const uint16_t *p) {
    /* bf16 is the top half of an f32: widening and shifting is exact. */
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
static inline VF vload_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline VI vload_u8i(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}
static inline VI vi_set1(int c) { return _mm256_set1_epi32(c); }
static inline VI vi_and(VI a, VI b) { return _mm256_and_si256(a, b); }
static inline VI vi_or(VI a, VI b) { return _mm256_or_si256(a, b); }
static inline VI vi_add(VI a, VI b) { return _mm256_add_epi32(a, b); }
static inline VI vi_sub(VI a, VI b) { return _mm256_sub_epi32(a, b); }
#define vi_srli(v, n) _mm256_srli_epi32(v, n)
#define vi_slli(v, n) _mm256_slli_epi32(v, n)
static inline VF vi_to_f(VI v) { return _mm256_cvtepi32_ps(v); }
static inline VI vf_to_i(VF v) { return _mm256_cvtps_epi32(v); }
static inline VF vi_as_f(VI v) { return _mm256_castsi256_ps(v); }
static inline VI vf_as_i(VF v) { return _mm256_castps_si256(v); }
static inline VI vi_select(VI mask, VI a, VI b) { return _mm256_blendv_epi8(b, a, mask); }
static inline VI vf_isnan(VF v) { return _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)); }
static inline void vstore_bf16_bits(uint16_t *p, VI v) {
    /* packus works per 128-bit half; gather the two useful quadwords. */
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08);
    _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(packed));
}
static inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }
/* Lanes [0, n) all-ones: 8 - n entries into this table. */
static const int32_t part_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline VF vloadu_part(const float *p, int n) {
    return _mm256_maskload_ps(p, _mm256_loadu_si256((const __m256i *)(part_mask + 8 - n)));
}
static inline void vstoreu_part(float *p, VF v, int n) {
    _mm256_maskstore_ps(p, _mm256_loadu_si256((const __m256i *)(part_mask + 8 - n)), v);
}
static inline __m256 vfold8(VF v) { return v; }

#include "core/cpu/kernels_simd.inc"

#pragma GCC pop_options

/* Outside the target region: safe to call on any CPU. */
const am__cpu_kernels *am__cpu_kernels_avx2(void) { return &simd_kernels; }
#else
const am__cpu_kernels *am__cpu_kernels_avx2(void) { return NULL; }
#endif
