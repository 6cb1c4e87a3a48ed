/* core/cpu/kernels_avx512.c - the "avx512" kernel table (AVX-512F/BW/VL + F16C),
 * and "avx512-vnni", the same with the Q8_0 kernels of kernels_vnni.inc.
 *
 * Same kernels as kernels_avx2.c (kernels_simd.inc) with 16 f32 lanes, built
 * with a target pragma so the library needs no -march flags; used only after
 * CPUID/XGETBV confirmed AVX-512 and its register state.
 */
#include "core/cpu/cpu_internal.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#include <immintrin.h>

typedef __m512 VF;  /* 16 f32 lanes */
typedef __m512i VI; /* 16 i32 lanes */
#define AM_W         16
#define AM_SIMD_NAME "avx512"

static inline VF vloadu(const float *p) { return _mm512_loadu_ps(p); }
static inline void vstoreu(float *p, VF v) { _mm512_storeu_ps(p, v); }
static inline VF vset1(float s) { return _mm512_set1_ps(s); }
static inline VF vzero(void) { return _mm512_setzero_ps(); }
static inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
static inline VF vsub(VF a, VF b) { return _mm512_sub_ps(a, b); }
static inline VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
static inline VF vdiv(VF a, VF b) { return _mm512_div_ps(a, b); }
static inline VF vmax(VF a, VF b) { return _mm512_max_ps(a, b); }
static inline VF vmin(VF a, VF b) { return _mm512_min_ps(a, b); }
static inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
static inline VF vround(VF v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline float vhsum(VF v) { return _mm512_reduce_add_ps(v); }
static inline float vhmax(VF v) { return _mm512_reduce_max_ps(v); }
static inline VF vload_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline VF vload_bf16(const uint16_t *p) {
    /* bf16 is the top half of an f32: widening and shifting is exact. */
    __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
static inline VF vload_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static inline VI vload_u8i(const uint8_t *p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
static inline VI vi_set1(int c) { return _mm512_set1_epi32(c); }
static inline VI vi_and(VI a, VI b) { return _mm512_and_si512(a, b); }
static inline VI vi_or(VI a, VI b) { return _mm512_or_si512(a, b); }
static inline VI vi_add(VI a, VI b) { return _mm512_add_epi32(a, b); }
static inline VI vi_sub(VI a, VI b) { return _mm512_sub_epi32(a, b); }
#define vi_srli(v, n) _mm512_srli_epi32(v, n)
#define vi_slli(v, n) _mm512_slli_epi32(v, n)
static inline VF vi_to_f(VI v) { return _mm512_cvtepi32_ps(v); }
static inline VI vf_to_i(VF v) { return _mm512_cvtps_epi32(v); }
static inline VF vi_as_f(VI v) { return _mm512_castsi512_ps(v); }
static inline VI vf_as_i(VF v) { return _mm512_castps_si512(v); }
static inline VI vi_select(VI mask, VI a, VI b) {
    return _mm512_mask_blend_epi32(_mm512_test_epi32_mask(mask, mask), b, a);
}
static inline VI vf_isnan(VF v) {
    return _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(-1));
}
static inline void vstore_bf16_bits(uint16_t *p, VI v) {
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(v));
}
static inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }
static inline VF vloadu_part(const float *p, int n) {
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
static inline void vstoreu_part(float *p, VF v, int n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v);
}
static inline __m256 vfold8(VF v) {
    /* the high 256 bits through the f64 view: _mm512_extractf32x8_ps would need AVX512DQ */
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

#define AM_SG_MR 8 /* the small-M GEMM's tiles: 8 x 3 of the 32 registers */
#include "core/cpu/kernels_simd.inc"

#pragma GCC push_options
#pragma GCC target("avx512vnni")
#include "core/cpu/kernels_vnni.inc"
#pragma GCC pop_options

#pragma GCC pop_options

/* Outside the target regions: safe to call on any CPU. */
const am__cpu_kernels *am__cpu_kernels_avx512(void) { return &simd_kernels; }

static am__cpu_kernels g_vnni;
static pthread_once_t g_vnni_once = PTHREAD_ONCE_INIT;

static void vnni_fill(void) {
    g_vnni = simd_kernels;
    g_vnni.name = "avx512-vnni";
    g_vnni.matvec[AM_DTYPE_Q8_0] = matvec_q8_0_vnni;
    g_vnni.quantize_x = quantize_x_vnni;
}

const am__cpu_kernels *am__cpu_kernels_avx512_vnni(void) {
    pthread_once(&g_vnni_once, vnni_fill);
    return &g_vnni;
}
#else
const am__cpu_kernels *am__cpu_kernels_avx512(void) { return NULL; }
const am__cpu_kernels *am__cpu_kernels_avx512_vnni(void) { return NULL; }
#endif
