/* core/cuda/cuda_attention.cu - KV cache writes and causal GQA attention over a paged cache.
 *
 * The host packs a call's sequences into one int32 array (the same for
 * kv_store and attention, so attention after kv_store reuses the device copy):
 *   rows (R, 3): per query row r of every sequence, {q_row, pos, table}: its
 *                row in q/out/k_new, its position, and where its sequence's
 *                block table starts in ids;
 *   ids:         the block tables of all sequences, one after another.
 *
 * Attention (the flash-decoding scheme): a CUDA block takes one query row, one
 * kv head and up to AM_CUDA_ATTN_MAX_HEADS of the query heads that read it
 * (GQA: they share every K and V tile), over one part of the keys. It walks
 * the keys in tiles that it stages in shared memory (K, V rows gathered
 * through the block table), with an online softmax (running max m and sum l
 * per head) and the output accumulated in shared memory. When there are too
 * few blocks to fill the device (decode of few sequences), the keys are split
 * into S parts whose (m, l, unnormalized output) are merged by a second kernel.
 */
#include "core/cuda/cuda_internal.cuh"

#include <math.h>
#include <type_traits>

/* Query heads one block handles at most (the rest of a GQA group: more blocks). */
#define AM_CUDA_ATTN_MAX_HEADS 8
/* Floats of one K (or V) tile in shared memory: keys per tile = this / D. */
#define AM_CUDA_ATTN_TILE_FLOATS 4096
/* Largest head_dim (shared memory bound: q, output, K and V tiles). */
#define AM_CUDA_ATTN_MAX_HEAD_DIM 256
/* Keys per tile at most (for small D, where TILE_FLOATS / D would be large). */
#define AM_CUDA_ATTN_MAX_TILE 256
#define AM_CUDA_ATTN_THREADS  128
/* Dynamic shared memory a block may use without opting in (cudaFuncSetAttribute). */
#define AM_CUDA_ATTN_MAX_SMEM (48 * 1024)
/* K/V loads each thread has in flight while gathering a tile. */
#define AM_CUDA_ATTN_GATHER_UNROLL 4
/* Splitting the keys: fewest keys per part and most parts. 256 keys per part
 * left a batch-1 decode over 544 keys of a 32-head model with 64 blocks for
 * 132 multiprocessors (~200 us per layer on an H200). */
#define AM_CUDA_ATTN_SPLIT_MIN_KEYS 64
#define AM_CUDA_ATTN_MAX_SPLITS     64

/* Ints per row record in the pack. */
#define AM_CUDA_ROW_INTS 3

/* ---- packing the host seqs ---- */

typedef struct {
    const int32_t *dev; /* the pack on the device */
    int64_t n_rows;     /* R */
    int64_t max_keys;   /* largest pos + 1 over the rows */
} packed_seqs;

static int pack_seqs(am__cuda_ctx *c, const am_attn_seq *seqs, int n_seqs, int64_t block_size,
                     packed_seqs *ps, const char *op) {
    int64_t R = 0, n_ids = 0, max_keys = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int64_t T = seqs[s].pos0 + seqs[s].m;
        if (seqs[s].m <= 0) continue;
        R += seqs[s].m;
        n_ids += (T + block_size - 1) / block_size;
        if (T > max_keys) max_keys = T;
    }
    ps->n_rows = R;
    ps->max_keys = max_keys;
    ps->dev = NULL;
    if (R == 0) return 0;
    if (max_keys > INT32_MAX || R * AM_CUDA_ROW_INTS + n_ids > INT32_MAX) {
        am__cuda_fail(c, op, "more rows or positions than int32 indexes");
        return AM_EIO;
    }
    const size_t need = (size_t)(R * AM_CUDA_ROW_INTS + n_ids);
    if (need > c->pack_cap) {
        int32_t *p = (int32_t *)am_realloc(c->pack, need * sizeof *p);
        if (!p) {
            am__cuda_fail(c, op, "out of host memory packing the sequences");
            return AM_EIO;
        }
        c->pack = p;
        c->pack_cap = need;
    }
    int32_t *rows = c->pack, *ids = c->pack + R * AM_CUDA_ROW_INTS;
    int64_t r = 0, off = 0;
    for (int s = 0; s < n_seqs; s++) {
        const am_attn_seq *sq = &seqs[s];
        if (sq->m <= 0) continue;
        const int64_t nb = (sq->pos0 + sq->m + block_size - 1) / block_size;
        for (int64_t i = 0; i < sq->m; i++, r++) {
            rows[r * AM_CUDA_ROW_INTS + 0] = (int32_t)(sq->row0 + i);
            rows[r * AM_CUDA_ROW_INTS + 1] = (int32_t)(sq->pos0 + i);
            rows[r * AM_CUDA_ROW_INTS + 2] = (int32_t)(R * AM_CUDA_ROW_INTS + off);
        }
        for (int64_t j = 0; j < nb; j++)
            ids[off + j] = sq->blocks[j];
        off += nb;
    }
    ps->dev =
        (const int32_t *)am__cuda_stage(c, &c->seqs_chan, c->pack, need * sizeof(int32_t), op);
    return ps->dev ? 0 : AM_EIO;
}

/* The pool row of position t of the sequence whose block table starts at table. */
__device__ __forceinline__ int64_t kv_row(const int32_t *table, int64_t block_size, int64_t t) {
    return (int64_t)table[t / block_size] * block_size + t % block_size;
}

/* ---- kv_store ---- */

/* Block (r, j) = chunk j of row record r: copies its part of the row's kv_stride floats of
 * k_new and v_new into the pool (VEC: four floats per load; rows 16-byte aligned). A
 * decode step stores one row per sequence: one block per row left it on a single
 * multiprocessor. */
template <int VEC>
__global__ void kv_store_kernel(float *k, float *v, /* (n_blocks * block_size, stride) */
                                const float *k_new, const float *v_new, /* (M, stride) */
                                const int32_t *pack, int64_t block_size, int64_t stride) {
    const int32_t *rec = pack + (int64_t)blockIdx.x * AM_CUDA_ROW_INTS;
    const int64_t src = rec[0], dst = kv_row(pack + rec[2], block_size, rec[1]);
    const int64_t e = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * (VEC ? 4 : 1);
    if (e >= stride) return;
    if (VEC) {
        *(float4 *)(k + dst * stride + e) = *(const float4 *)(k_new + src * stride + e);
        *(float4 *)(v + dst * stride + e) = *(const float4 *)(v_new + src * stride + e);
    } else {
        k[dst * stride + e] = k_new[src * stride + e];
        v[dst * stride + e] = v_new[src * stride + e];
    }
}

void am__cuda_kv_store(am_backend *b, const am_kv_pages *pages, const float *k_new,
                       const float *v_new, const am_attn_seq *seqs, int n_seqs) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "kv_store");
    if (n_seqs <= 0 || c->error) return;
    packed_seqs ps;
    if (pack_seqs(c, seqs, n_seqs, pages->block_size, &ps, "kv_store") || ps.n_rows == 0) return;
    const int64_t S = pages->kv_stride;
    const int vec =
        S % 4 == 0 &&
        ((uintptr_t)pages->k | (uintptr_t)pages->v | (uintptr_t)k_new | (uintptr_t)v_new) % 16 == 0;
    const dim3 grid((unsigned)ps.n_rows, am__cuda_blocks(vec ? S / 4 : S, AM_CUDA_THREADS));
    if (vec)
        kv_store_kernel<1><<<grid, AM_CUDA_THREADS, 0, c->stream>>>(
            pages->k, pages->v, k_new, v_new, ps.dev, pages->block_size, S);
    else
        kv_store_kernel<0><<<grid, AM_CUDA_THREADS, 0, c->stream>>>(
            pages->k, pages->v, k_new, v_new, ps.dev, pages->block_size, S);
    AM_CUDA_LAUNCHED(c, "kv_store");
}

/* ---- attention ---- */

typedef struct {
    float *out;          /* (M, H, D) */
    const float *q;      /* (M, H, D) */
    const float *k, *v;  /* (n_blocks * block_size, stride) pools */
    const int32_t *pack; /* rows (R, 3) then ids */
    int64_t block_size, stride;
    int n_heads, n_kv_heads, head_dim;
    int heads_per_block; /* GB <= AM_CUDA_ATTN_MAX_HEADS */
    int head_blocks;     /* blocks per kv head: ceil(G / GB) */
    int tile;            /* TK: keys per tile */
    int64_t split_keys;  /* keys per part (a multiple of TK) */
    int n_splits;        /* S */
    float scale;         /* 1 / sqrt(D) */
    float *part_o;       /* (S, R, H, D) unnormalized outputs, when S > 1 */
    float *part_ml;      /* (S, R, H, 2) their max and sum */
    int vec;             /* K/V rows 16-byte aligned and D % 4 == 0: float4 gathers */
} attn_args;

/* Copies keys [t0, t0 + n) of kv head kvh into k_s (n, D + 1) and v_s (n, D), W
 * floats per load (W = 4 when rows are 16-byte aligned and D % 4 == 0).
 * AM_CUDA_ATTN_GATHER_UNROLL loads per thread are issued before any is
 * stored: one load-then-store at a time waited a full memory latency per
 * element, which made a batch-1 decode step's attention 80 us per layer on an
 * H200 for 17 MB of keys and values. */
template <int W>
__device__ __forceinline__ void gather_tile(float *k_s, float *v_s, const attn_args &a,
                                            const int32_t *table, int kvh, int64_t t0, int n) {
    typedef typename std::conditional<W == 4, float4, float>::type vec_t;
    const int D = a.head_dim, DW = D / W, total = n * DW;
    constexpr int U = AM_CUDA_ATTN_GATHER_UNROLL;
    for (int i0 = threadIdx.x; i0 < total; i0 += blockDim.x * U) {
        vec_t kr[U], vr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + u * blockDim.x;
            if (i < total) {
                const int j = i / DW, d = (i % DW) * W;
                const int64_t off =
                    kv_row(table, a.block_size, t0 + j) * a.stride + (int64_t)kvh * D + d;
                kr[u] = *(const vec_t *)(a.k + off);
                vr[u] = *(const vec_t *)(a.v + off);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + u * blockDim.x;
            if (i < total) {
                const int j = i / DW, d = (i % DW) * W;
                const float *kf = (const float *)&kr[u];
#pragma unroll
                for (int e = 0; e < W; e++)
                    k_s[j * (D + 1) + d + e] = kf[e]; /* padded rows: not 16-byte aligned */
                *(vec_t *)(v_s + j * D + d) = vr[u];
            }
        }
    }
}

/* grid (R, Hkv * head_blocks, S), AM_CUDA_ATTN_THREADS threads. Shared memory:
 *   q_s (GB, D), o_s (GB, D), k_s (TK, D + 1), v_s (TK, D), s_s (GB, TK), ml_s (GB, 3). */
__global__ void attention_kernel(attn_args a) {
    extern __shared__ float smem[];
    const int D = a.head_dim, G = a.n_heads / a.n_kv_heads, TK = a.tile, H = a.n_heads;
    const int64_t r = blockIdx.x;
    const int kvh = blockIdx.y / a.head_blocks;
    const int h0 = kvh * G + (blockIdx.y % a.head_blocks) * a.heads_per_block;
    const int GB = min(a.heads_per_block, (kvh + 1) * G - h0); /* heads of this block */
    const int part = blockIdx.z;
    const int32_t *rec = a.pack + r * AM_CUDA_ROW_INTS;
    const int64_t q_row = rec[0], pos = rec[1];
    const int32_t *table = a.pack + rec[2];

    float *q_s = smem;                          /* (GB, D) */
    float *o_s = q_s + a.heads_per_block * D;   /* (GB, D) */
    float *k_s = o_s + a.heads_per_block * D;   /* (TK, D + 1): padded against bank conflicts */
    float *v_s = k_s + TK * (D + 1);            /* (TK, D) */
    float *s_s = v_s + TK * D;                  /* (GB, TK) scores, then weights */
    float *ml_s = s_s + a.heads_per_block * TK; /* (GB, 3): running max, sum, correction */

    for (int i = threadIdx.x; i < GB * D; i += blockDim.x) {
        q_s[i] = a.q[(q_row * H + h0) * D + i] * a.scale; /* heads h0.. are adjacent in q */
        o_s[i] = 0.0f;
    }
    for (int g = threadIdx.x; g < GB; g += blockDim.x) {
        ml_s[g * 3 + 0] = -INFINITY;
        ml_s[g * 3 + 1] = 0.0f;
    }
    /* This part's keys: [k0, k1) intersected with the causal range [0, pos]. */
    const int64_t k0 = (int64_t)part * a.split_keys;
    const int64_t k1 = min(k0 + a.split_keys, pos + 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;

    for (int64_t t0 = k0; t0 < k1; t0 += TK) {
        const int n = (int)min((int64_t)TK, k1 - t0);
        __syncthreads(); /* the previous tile is consumed (and q_s/o_s are set) */
        if (a.vec)
            gather_tile<4>(k_s, v_s, a, table, kvh, t0, n);
        else
            gather_tile<1>(k_s, v_s, a, table, kvh, t0, n);
        __syncthreads();
        /* s (GB, n) = q k^T (scaled: q_s carries 1/sqrt(D)): a thread per
         * (head, key) pair when there are enough pairs for every thread, else
         * a warp per pair with the lanes splitting D (MHA decode: GB = 1). */
        if (GB * TK >= (int)blockDim.x) {
            for (int i = threadIdx.x; i < GB * TK; i += blockDim.x) {
                const int g = i / TK, j = i % TK;
                float s = -INFINITY;
                if (j < n) {
                    const float *qg = q_s + g * D, *kj = k_s + j * (D + 1);
                    s = 0.0f;
                    for (int d = 0; d < D; d++)
                        s += qg[d] * kj[d];
                }
                s_s[i] = s;
            }
        } else {
            for (int i = warp; i < GB * TK; i += n_warps) {
                const int g = i / TK, j = i % TK;
                float s = 0.0f;
                if (j < n)
                    for (int d = lane; d < D; d += 32)
                        s += q_s[g * D + d] * k_s[j * (D + 1) + d];
                s = am__warp_sum(s);
                if (lane == 0) s_s[i] = j < n ? s : -INFINITY;
            }
        }
        __syncthreads();
        /* Online softmax, one warp per head: m' = max(m, max_j s), p = exp(s - m'),
         * l' = l * exp(m - m') + sum_j p. */
        for (int g = warp; g < GB; g += n_warps) {
            float mx = -INFINITY;
            for (int j = lane; j < n; j += 32)
                mx = fmaxf(mx, s_s[g * TK + j]);
            mx = am__warp_max(mx);
            const float m_old = ml_s[g * 3], m_new = fmaxf(m_old, mx);
            float sum = 0.0f;
            for (int j = lane; j < TK; j += 32) {
                const float p = j < n ? expf(s_s[g * TK + j] - m_new) : 0.0f;
                s_s[g * TK + j] = p;
                sum += p;
            }
            sum = am__warp_sum(sum);
            if (lane == 0) {
                const float corr = expf(m_old - m_new); /* 0 on the first tile (m_old = -inf) */
                ml_s[g * 3 + 0] = m_new;
                ml_s[g * 3 + 1] = ml_s[g * 3 + 1] * corr + sum;
                ml_s[g * 3 + 2] = corr;
            }
        }
        __syncthreads();
        /* o (GB, D) = o * corr + p (GB, n) . v (n, D). */
        for (int i = threadIdx.x; i < GB * D; i += blockDim.x) {
            const int g = i / D, d = i % D;
            const float *pg = s_s + g * TK;
            float o = o_s[i] * ml_s[g * 3 + 2];
            for (int j = 0; j < n; j++)
                o += pg[j] * v_s[j * D + d];
            o_s[i] = o;
        }
    }
    __syncthreads();
    const int64_t R = gridDim.x;
    for (int i = threadIdx.x; i < GB * D; i += blockDim.x) {
        const int g = i / D;
        const int64_t qi = (q_row * H + h0) * D + i; /* out index of (q_row, h0 + g, d) */
        if (a.n_splits == 1) {
            a.out[qi] = o_s[i] / ml_s[g * 3 + 1];
        } else {
            a.part_o[((part * R + r) * H + h0) * D + i] = o_s[i];
            if (i % D == 0) {
                a.part_ml[((part * R + r) * H + h0 + g) * 2 + 0] = ml_s[g * 3 + 0];
                a.part_ml[((part * R + r) * H + h0 + g) * 2 + 1] = ml_s[g * 3 + 1];
            }
        }
    }
}

/* grid (R, H), D threads (up to 1024 by a loop): out = sum_p w_p o_p / sum_p w_p l_p,
 * w_p = exp(m_p - max_p m_p); parts with no keys have m = -inf, l = 0, o = 0. */
__global__ void attention_merge_kernel(attn_args a, int64_t R) {
    const int64_t r = blockIdx.x;
    const int h = blockIdx.y, H = a.n_heads, D = a.head_dim, S = a.n_splits;
    const int64_t q_row = a.pack[r * AM_CUDA_ROW_INTS];
    float top = -INFINITY;
    for (int p = 0; p < S; p++)
        top = fmaxf(top, a.part_ml[((p * R + r) * H + h) * 2]);
    float den = 0.0f;
    for (int p = 0; p < S; p++) {
        const float m = a.part_ml[((p * R + r) * H + h) * 2];
        if (m != -INFINITY) den += expf(m - top) * a.part_ml[((p * R + r) * H + h) * 2 + 1];
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.0f;
        for (int p = 0; p < S; p++) {
            const float m = a.part_ml[((p * R + r) * H + h) * 2];
            if (m != -INFINITY) o += expf(m - top) * a.part_o[((p * R + r) * H + h) * D + d];
        }
        a.out[(q_row * H + h) * D + d] = o / den;
    }
}

/* Shared memory of attention_kernel for these arguments (see its layout). */
static size_t attention_smem(const attn_args &a) {
    const size_t D = (size_t)a.head_dim, GB = (size_t)a.heads_per_block, TK = (size_t)a.tile;
    return sizeof(float) * (2 * GB * D + TK * (D + 1) + TK * D + GB * TK + GB * 3);
}

void am__cuda_attention(am_backend *b, float *out, const float *q, const am_kv_pages *pages,
                        const am_attn_seq *seqs, int n_seqs, int n_heads, int n_kv_heads,
                        int head_dim) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    int64_t n_rows = 0; /* one row per sequence: a decode step (counted only when profiling) */
    for (int s = 0; c->prof && s < n_seqs; s++)
        n_rows += seqs[s].m;
    AM_CUDA_PROFILE_OP(c, n_rows == n_seqs ? "attention (decode)" : "attention (prefill)");
    if (n_seqs <= 0 || c->error) return;
    if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 ||
        head_dim > AM_CUDA_ATTN_MAX_HEAD_DIM || pages->block_size <= 0) {
        am__cuda_fail(c, "attention", "heads, head_dim (at most 256) or block_size out of range");
        return;
    }
    packed_seqs ps;
    if (pack_seqs(c, seqs, n_seqs, pages->block_size, &ps, "attention") || ps.n_rows == 0) return;

    const int G = n_heads / n_kv_heads, D = head_dim;
    attn_args a;
    a.out = out, a.q = q, a.k = pages->k, a.v = pages->v, a.pack = ps.dev;
    a.block_size = pages->block_size, a.stride = pages->kv_stride;
    a.n_heads = n_heads, a.n_kv_heads = n_kv_heads, a.head_dim = D;
    a.heads_per_block = G < AM_CUDA_ATTN_MAX_HEADS ? G : AM_CUDA_ATTN_MAX_HEADS;
    a.head_blocks = (G + a.heads_per_block - 1) / a.heads_per_block;
    a.tile = AM_CUDA_ATTN_TILE_FLOATS / D;
    if (a.tile > AM_CUDA_ATTN_MAX_TILE) a.tile = AM_CUDA_ATTN_MAX_TILE; /* tiny D: bound s_s */
    while (attention_smem(a) > AM_CUDA_ATTN_MAX_SMEM && a.tile > 1)
        a.tile /= 2; /* big D and GB */
    a.scale = (float)(1.0 / sqrt((double)D));
    a.part_o = a.part_ml = NULL;
    a.vec = D % 4 == 0 && pages->kv_stride % 4 == 0 &&
            ((uintptr_t)pages->k | (uintptr_t)pages->v) % 16 == 0;

    /* Split the keys when the blocks would not fill the device twice over. */
    const int64_t base = ps.n_rows * n_kv_heads * a.head_blocks;
    int64_t S = 1;
    if (base < 2 * (int64_t)c->n_sm) {
        S = (2 * c->n_sm + base - 1) / base;
        const int64_t by_keys = ps.max_keys / AM_CUDA_ATTN_SPLIT_MIN_KEYS;
        if (S > by_keys) S = by_keys;
        if (S > AM_CUDA_ATTN_MAX_SPLITS) S = AM_CUDA_ATTN_MAX_SPLITS;
        if (S < 1) S = 1;
    }
    a.split_keys = (ps.max_keys + S - 1) / S;
    a.split_keys = (a.split_keys + a.tile - 1) / a.tile * a.tile;
    S = (ps.max_keys + a.split_keys - 1) / a.split_keys;
    a.n_splits = (int)S;
    if (S > 1) {
        const size_t n_o = (size_t)(S * ps.n_rows * n_heads) * (size_t)D,
                     n_ml = (size_t)(S * ps.n_rows * n_heads) * 2;
        float *scratch = (float *)am__cuda_scratch(c, (n_o + n_ml) * sizeof(float), "attention");
        if (!scratch) return;
        a.part_o = scratch;
        a.part_ml = scratch + n_o;
    }
    const size_t smem = attention_smem(a);
    const dim3 grid((unsigned)ps.n_rows, (unsigned)(n_kv_heads * a.head_blocks), (unsigned)S);
    attention_kernel<<<grid, AM_CUDA_ATTN_THREADS, smem, c->stream>>>(a);
    if (AM_CUDA_LAUNCHED(c, "attention")) return;
    if (S > 1) {
        const dim3 mgrid((unsigned)ps.n_rows, (unsigned)n_heads);
        const int mthreads = (D + 31) / 32 * 32; /* D <= AM_CUDA_ATTN_MAX_HEAD_DIM */
        attention_merge_kernel<<<mgrid, mthreads, 0, c->stream>>>(a, ps.n_rows);
        AM_CUDA_LAUNCHED(c, "attention (merge)");
    }
}
