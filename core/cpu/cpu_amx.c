/* core/cpu/cpu_amx.c - the Q8_0 GEMM on AMX-INT8 tiles.
 *
 * For Q8_0 weights at M >= 16 or so (batched decode, prefill) on CPUs with
 * AMX-INT8 (level amx). The arithmetic is that of every Q8_0 path
 * (docs/numerics.md): x quantized per block of 32 to int8 (am__xq, the same
 * q and d), exact int32 sums of int8 x int8 per block, each scaled by
 * d_w * d_x in f32 and added up block by block.
 *
 * One tdpbssd multiplies a tile A of 16 rows of W by 32 bytes (one block
 * of each row, read in place: rows row_bytes apart) with a tile B holding the
 * same block of 16 activation rows, rearranged as the instruction wants it
 * (8 rows of 64 bytes: B[r][4i + j] = q[i][4r + j]), giving the 16 x 16
 * int32 block sums C[n][i]. Each block's C is stored to a small buffer and
 * scaled into 16 f32 accumulators (one per W row, lanes over the 16
 * activation rows), so the tile unit does the multiply-adds (8192 per
 * instruction) and the vector unit 3 ops per 16 x 32 of them, where the VNNI
 * kernel spends about 4 per 64. Two sets of A/B/C tiles alternate between
 * even and odd blocks, so the next block's tile work overlaps this one's
 * scaling.
 *
 * The activations' tile layout (am__amx_pack_x) is made once per matmul,
 * after the quantization; rows past M in the last group of 16 are zero (and
 * their d too), and are not written to y.
 */
#include "core/cpu/cpu_internal.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#include <immintrin.h>

#define AMX_T 16 /* rows of W and of x per tile */

typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

int am__amx_q8_0_compiled(void) { return 1; }

size_t am__amx_xa_bytes(int64_t m, int64_t k) {
    const size_t groups = (size_t)((m + AMX_T - 1) / AMX_T), nb = (size_t)(k / AM_QK);
    return groups * nb * (512 + AMX_T * sizeof(float));
}

am__amx_xa am__amx_xa_layout(void *buf, int64_t m, int64_t k) {
    const size_t groups = (size_t)((m + AMX_T - 1) / AMX_T), nb = (size_t)(k / AM_QK);
    am__amx_xa a;
    a.d = buf;
    a.q = (int8_t *)(a.d + groups * nb * AMX_T);
    return a;
}

void am__amx_pack_x(const am__xq *xq, const am__amx_xa *xa, int64_t m, int64_t k, int64_t g) {
    const int64_t nb = k / AM_QK;
    for (int64_t b = 0; b < nb; b++) {
        int8_t *t = xa->q + (g * nb + b) * 512; /* (8, 64) */
        float *d = xa->d + (g * nb + b) * AMX_T;
        for (int i = 0; i < AMX_T; i++) {
            const int64_t row = g * AMX_T + i;
            if (row >= m) {
                d[i] = 0.0f;
                for (int r = 0; r < 8; r++)
                    memset(t + r * 64 + 4 * i, 0, 4);
                continue;
            }
            d[i] = xq->d[row * nb + b];
            const int8_t *q = xq->q + row * k + b * AM_QK;
            for (int r = 0; r < 8; r++)
                memcpy(t + r * 64 + 4 * i, q + 4 * r, 4);
        }
    }
}

static void tiles_config(void) {
    amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int c = 0; c < 2; c++) { /* tiles 0, 1: C (16 x 16 int32) */
        cfg.rows[c] = AMX_T;
        cfg.colsb[c] = 64;
    }
    for (int a = 2; a < 4; a++) { /* tiles 2, 3: A (16 rows of W x one block) */
        cfg.rows[a] = AMX_T;
        cfg.colsb[a] = AM_QK;
    }
    for (int b = 4; b < 6; b++) { /* tiles 4, 5: B (one block of 16 x rows, 8 x 64 bytes) */
        cfg.rows[b] = AM_QK / 4;
        cfg.colsb[b] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* The f32 scales d_w of blocks [0, nb) of W rows n .. n + 15: dw[b * 16 + r]. */
static void load_dw(const am_matrix *w, int64_t n, int64_t nb, float *dw) {
    for (int r = 0; r < AMX_T; r++) {
        const am_block_q8_0 *blk =
            (const am_block_q8_0 *)((const char *)w->data + (size_t)(n + r) * w->row_bytes);
        for (int64_t b = 0; b < nb; b++) {
            uint16_t h;
            memcpy(&h, &blk[b].d, 2);
            dw[b * AMX_T + r] = am__f16_table[h];
        }
    }
}

/* acc[r] (lanes i) += C[r][i] * d_w[r] * d_x[i] for one block's C (in cbuf). */
static inline __attribute__((always_inline)) void
scale_block(__m512 acc[AMX_T], const int32_t *cbuf, const float *dw, const float *dx) {
    const __m512 vdx = _mm512_loadu_ps(dx);
#pragma GCC unroll 16
    for (int r = 0; r < AMX_T; r++) {
        const __m512 c = _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(cbuf + r * AMX_T)));
        acc[r] = _mm512_fmadd_ps(c, _mm512_mul_ps(vdx, _mm512_set1_ps(dw[r])), acc[r]);
    }
}

void am__amx_q8_0_gemm(const am_matrix *w, const am__amx_xa *xa, float *y, int64_t m, int64_t n0,
                       int64_t n1, float *dw) {
    const int64_t K = w->cols, N = w->rows, nb = K / AM_QK, groups = (m + AMX_T - 1) / AMX_T;
    int32_t cbuf[2][AMX_T * AMX_T] __attribute__((aligned(64)));
    float out[AMX_T * AMX_T] __attribute__((aligned(64)));
    const size_t ws = w->row_bytes;
    tiles_config();
    for (int64_t n = n0; n + AMX_T <= n1; n += AMX_T) {
        load_dw(w, n, nb, dw);
        const char *wq = (const char *)w->data + (size_t)n * ws + offsetof(am_block_q8_0, qs);
        /* The next 16 rows of W on their way to L2 while these are computed,
         * spread over the first group's blocks: a tile load takes one line
         * from each of 16 rows, 16 short streams that the hardware prefetcher
         * does not run ahead of, and from DRAM every block would wait for
         * them (at M = 8 the kernel ran at a third of its speed on a model's
         * weights). */
        const int64_t nn = n + 2 * AMX_T <= n1 ? AMX_T : 0;
        const char *pf = (const char *)w->data + (size_t)(n + AMX_T) * ws;
        const char *pf_end = pf + (size_t)nn * ws;
        const int64_t pf_step = ((int64_t)(nn * (int64_t)ws) / 64 + nb - 1) / nb;
        for (int64_t g = 0; g < groups; g++) {
            const int8_t *xt = xa->q + g * nb * 512;
            const float *dx = xa->d + g * nb * AMX_T;
            __m512 acc[AMX_T];
            for (int r = 0; r < AMX_T; r++)
                acc[r] = _mm512_setzero_ps();
            int64_t b = 0;
            for (; b + 1 < nb; b += 2) {
                for (int64_t c = 0; g == 0 && c < 2 * pf_step && pf < pf_end; c++, pf += 64)
                    _mm_prefetch(pf, _MM_HINT_T1);
                _tile_zero(0);
                _tile_loadd(2, wq + b * sizeof(am_block_q8_0), ws);
                _tile_loadd(4, xt + b * 512, 64);
                _tile_dpbssd(0, 2, 4);
                _tile_zero(1);
                _tile_loadd(3, wq + (b + 1) * sizeof(am_block_q8_0), ws);
                _tile_loadd(5, xt + (b + 1) * 512, 64);
                _tile_dpbssd(1, 3, 5);
                _tile_stored(0, cbuf[0], 64);
                scale_block(acc, cbuf[0], dw + b * AMX_T, dx + b * AMX_T);
                _tile_stored(1, cbuf[1], 64);
                scale_block(acc, cbuf[1], dw + (b + 1) * AMX_T, dx + (b + 1) * AMX_T);
            }
            if (b < nb) {
                _tile_zero(0);
                _tile_loadd(2, wq + b * sizeof(am_block_q8_0), ws);
                _tile_loadd(4, xt + b * 512, 64);
                _tile_dpbssd(0, 2, 4);
                _tile_stored(0, cbuf[0], 64);
                scale_block(acc, cbuf[0], dw + b * AMX_T, dx + b * AMX_T);
            }
            /* acc[r] lane i is y[16 g + i][n + r] */
            for (int r = 0; r < AMX_T; r++)
                _mm512_store_ps(out + r * AMX_T, acc[r]);
            const int64_t rows = m - g * AMX_T < AMX_T ? m - g * AMX_T : AMX_T;
            for (int64_t i = 0; i < rows; i++) {
                float *yr = y + (g * AMX_T + i) * N + n;
                for (int r = 0; r < AMX_T; r++)
                    yr[r] = out[r * AMX_T + i];
            }
        }
    }
    _tile_release();
}

#pragma GCC pop_options
#else
int am__amx_q8_0_compiled(void) { return 0; }
size_t am__amx_xa_bytes(int64_t m, int64_t k) { return 0 * (size_t)(m + k); }
am__amx_xa am__amx_xa_layout(void *buf, int64_t m, int64_t k) {
    (void)buf, (void)m, (void)k;
    am__amx_xa a = {0};
    return a;
}
void am__amx_pack_x(const am__xq *xq, const am__amx_xa *xa, int64_t m, int64_t k, int64_t g) {
    (void)xq, (void)xa, (void)m, (void)k, (void)g;
}
void am__amx_q8_0_gemm(const am_matrix *w, const am__amx_xa *xa, float *y, int64_t m, int64_t n0,
                       int64_t n1, float *dw) {
    (void)w, (void)xa, (void)y, (void)m, (void)n0, (void)n1, (void)dw;
}
#endif
