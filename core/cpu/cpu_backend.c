/* core/cpu/cpu_backend.c - the CPU backend: kernel selection and the ops.
 *
 * At creation the backend picks one kernel table (avx512 > avx2 > generic,
 * or what AM_CPU_ISA forces) and starts a pool of n_threads - 1 workers.
 * Matmul lives in cpu_matmul.c. The other ops are light: they run on the
 * calling thread unless their work is large enough (AM_CPU_PAR_MIN_WORK) that
 * splitting it beats the cost of waking the workers. Attention (see the
 * comment above attn_item) hands the threads items of queries that share a kv
 * head and uses an online softmax over chunks of keys, so it needs no scratch
 * proportional to the context length.
 */
#include "core/cpu_backend.h"

#include "core/alloc.h"
#include "core/cpu/cpu_internal.h"
#include "core/error.h"
#include "core/log.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Elements (or multiply-adds, for attention) below which an op stays on one thread. */
#define AM_CPU_PAR_MIN_WORK (1 << 16)
/* A sanity bound on n_threads. */
#define AM_CPU_MAX_THREADS 1024

typedef struct {
    am_backend base;
    am__cpu_ctx ctx;
    char name[32];
} cpu_backend;

/* ---- parallel-for over a range ---- */

typedef void (*range_fn)(void *arg, int64_t begin, int64_t end);

typedef struct {
    range_fn fn;
    void *arg;
    int64_t n, align;
} range_job;

static void range_task(void *p, int ith, int nth) {
    range_job *r = p;
    int64_t b, e;
    am_split_range(r->n, r->align, ith, nth, &b, &e);
    if (b < e) r->fn(r->arg, b, e);
}

/* Runs fn over [0, n) split into aligned chunks, threaded only if work is large. */
static void par_for(am_backend *b, int64_t n, int64_t align, int64_t work, range_fn fn, void *arg) {
    am__cpu_ctx *c = b->ctx;
    if (b->n_threads == 1 || work < AM_CPU_PAR_MIN_WORK || n <= align) {
        if (n > 0) fn(arg, 0, n);
        return;
    }
    range_job r = {fn, arg, n, align};
    am_threadpool_run(c->pool, range_task, &r);
}

/* ---- ops ---- */

static int cpu_matmul(am_backend *b, const am_matrix *w, const float *x, float *y, int64_t m) {
    return am__cpu_matmul(b, w, x, y, m);
}

static void cpu_get_rows(am_backend *b, const am_matrix *w, const int32_t *ids, int64_t m,
                         float *out) {
    am__cpu_ctx *c = b->ctx;
    for (int64_t i = 0; i < m; i++)
        c->k->to_f32(w->dtype, (const char *)w->data + (size_t)ids[i] * w->row_bytes,
                     out + i * w->cols, w->cols);
}

typedef struct {
    const am__cpu_kernels *k;
    float *out;
    const float *x, *weight;
    int64_t k_dim;
    float eps;
} rmsnorm_job;

static void rmsnorm_rows(void *p, int64_t i0, int64_t i1) {
    rmsnorm_job *j = p;
    for (int64_t i = i0; i < i1; i++)
        j->k->rmsnorm(j->out + i * j->k_dim, j->x + i * j->k_dim, j->weight, j->k_dim, j->eps);
}

static void cpu_rmsnorm(am_backend *b, float *out, const float *x, const float *weight, int64_t m,
                        int64_t k, float eps) {
    am__cpu_ctx *c = b->ctx;
    rmsnorm_job j = {c->k, out, x, weight, k, eps};
    par_for(b, m, 1, m * k, rmsnorm_rows, &j);
}

typedef struct {
    float *x; /* (M, H, D) */
    const int32_t *pos;
    int n_heads, head_dim;
    float theta;
    am_rope_layout layout;
} rope_job;

static void rope_rows(void *p, int64_t i0, int64_t i1) {
    rope_job *j = p;
    const int H = j->n_heads, D = j->head_dim, half = D / 2;
    for (int64_t i = i0; i < i1; i++) {
        float *xi = j->x + i * H * D; /* (H, D) */
        for (int f = 0; f < half; f++) {
            /* Same formula as am_ref_rope: the angle in double, then the
             * rotation in f32; cos/sin once per (row, frequency) for all heads. */
            double angle = (double)j->pos[i] * pow((double)j->theta, -2.0 * f / D);
            const float cs = (float)cos(angle), sn = (float)sin(angle);
            const int a = j->layout == AM_ROPE_ADJACENT ? 2 * f : f;
            const int bb = j->layout == AM_ROPE_ADJACENT ? 2 * f + 1 : f + half;
            for (int h = 0; h < H; h++) {
                float *xh = xi + h * D; /* (D) */
                float x0 = xh[a], x1 = xh[bb];
                xh[a] = x0 * cs - x1 * sn;
                xh[bb] = x0 * sn + x1 * cs;
            }
        }
    }
}

static void cpu_rope(am_backend *b, float *x, const int32_t *pos, int64_t m, int n_heads,
                     int head_dim, float theta, am_rope_layout layout) {
    rope_job j = {x, pos, n_heads, head_dim, theta, layout};
    /* sincos in double dominates: weigh it as ~16 elementwise operations. */
    par_for(b, m, 1, m * (head_dim / 2) * (16 + n_heads), rope_rows, &j);
}

/* ---- KV cache writes ---- */

static void cpu_kv_store(am_backend *b, const am_kv_pages *pages, const float *k_new,
                         const float *v_new, const am_attn_seq *seqs, int n_seqs) {
    (void)b;
    const int64_t stride = pages->kv_stride;
    for (int s = 0; s < n_seqs; s++) {
        const am_attn_seq *sq = &seqs[s];
        for (int64_t i = 0; i < sq->m; i++) {
            const int64_t row = am_kv_row(sq->blocks, pages->block_size, sq->pos0 + i);
            memcpy(pages->k + row * stride, k_new + (sq->row0 + i) * stride,
                   (size_t)stride * sizeof(float));
            memcpy(pages->v + row * stride, v_new + (sq->row0 + i) * stride,
                   (size_t)stride * sizeof(float));
        }
    }
}

/* ---- attention ----
 *
 * A work item is a set of queries (query row, head) of one sequence that read
 * the same kv head: a block of rows times the heads of one GQA group (or up
 * to AM_CPU_ATTN_ITEM_QUERIES of them), optionally over one part of the keys.
 * It walks the keys in chunks that never cross a cache block, so each chunk
 * is contiguous rows of the paged pool; for each chunk, tiles of up to 8 of
 * its queries go through the kernels' attn_scores / attn_softmax /
 * attn_accum, so each K and V row is loaded once per tile, not once per query
 * head, and the chunk is still in L1/L2 for the item's other tiles. The
 * softmax is online (running maximum and sum per query), so no scratch grows
 * with the context.
 *
 * Items of all sequences are handed out through one atomic counter, each
 * sequence's heaviest (latest rows) first, which also balances causal
 * prefill, whose last rows see the most keys. When a single sequence has too
 * few items to spread evenly over the threads (decode with one or an odd
 * number of kv heads), the keys are split into parts whose partial softmax
 * states (max, sum, unnormalized output) are merged at the end.
 */

/* Queries one item handles together (they share each chunk of K and V). */
#define AM_CPU_ATTN_ITEM_QUERIES 64
/* Bytes of one kv head's K (or V) rows per chunk: each tile of an item reads
 * the chunk, which should still be in L2 for the next tile (K and V: twice
 * this), while the per-chunk costs (softmax bookkeeping, rescaling the
 * outputs) want long chunks. */
#define AM_CPU_ATTN_CHUNK_BYTES (128 << 10)
/* Keys per chunk at most (scores of a tile on the stack: 8 floats per key) and at least. */
#define AM_CPU_ATTN_CHUNK_MAX 256
#define AM_CPU_ATTN_CHUNK_MIN 16
/* Splitting the keys: fewest keys per part, and most parts. */
#define AM_CPU_ATTN_SPLIT_MIN_KEYS 128
#define AM_CPU_ATTN_MAX_SPLITS     16
/* Sequences whose item plans live on the stack; more take the backend's scratch. */
#define AM_CPU_ATTN_STACK_SEQS 64

/* How one sequence's queries are cut into items. */
typedef struct {
    const am_attn_seq *seq;
    int64_t rows_per_item, n_row_blocks;
    int64_t item0; /* its first item in the call's numbering */
} attn_plan;

typedef struct {
    const am__cpu_kernels *k;
    float *out;               /* (M, H, D) */
    const float *q;           /* (M, H, D) */
    const am_kv_pages *pages; /* (n_blocks, block_size, kv_stride) K and V */
    const attn_plan *plans;   /* (n_seqs) */
    int n_seqs;
    int n_heads, n_kv_heads, head_dim;
    float scale;
    int64_t chunk; /* keys per chunk at most */
    int heads_per_item, n_head_blocks;
    int n_splits;   /* S: parts of the keys (single sequence only) */
    float *part_o;  /* (S, m, H, D) unnormalized outputs of the sequence, when S > 1 */
    float *part_ml; /* (S, m, H, 2) their running max and sum */
    int64_t n_items;
    atomic_int_fast64_t next; /* the next item to take */
} attn_job;

static void attn_item(attn_job *j, int64_t it) {
    const am__cpu_kernels *k = j->k;
    /* The sequence that owns item `it`: the last plan with item0 <= it. */
    int lo = 0, hi = j->n_seqs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (j->plans[mid].item0 <= it)
            lo = mid;
        else
            hi = mid - 1;
    }
    const attn_plan *pl = &j->plans[lo];
    const am_attn_seq *sq = pl->seq;
    it -= pl->item0;
    const int H = j->n_heads, D = j->head_dim, G = j->n_heads / j->n_kv_heads, S = j->n_splits;
    const int64_t M = sq->m, pos0 = sq->pos0, stride = j->pages->kv_stride,
                  bs = j->pages->block_size;
    /* it -> (row block, kv head, head block, part), the last row block first. */
    const int part = (int)(it % S);
    int64_t rest = it / S;
    const int hb = (int)(rest % j->n_head_blocks);
    rest /= j->n_head_blocks;
    const int kvh = (int)(rest % j->n_kv_heads);
    const int64_t rb = pl->n_row_blocks - 1 - rest / j->n_kv_heads;
    const int64_t i0 = rb * pl->rows_per_item;
    const int64_t i1 = i0 + pl->rows_per_item < M ? i0 + pl->rows_per_item : M;
    const int h0 = kvh * G + hb * j->heads_per_item;
    const int h1 = h0 + j->heads_per_item < (kvh + 1) * G ? h0 + j->heads_per_item : (kvh + 1) * G;
    /* Every row sees keys 0 .. pos0: part p takes its share of those, and the
     * last part also the keys that only the later rows see. */
    const int64_t shared = pos0 + 1;
    const int64_t k0 = shared * part / S;
    const int64_t k1 = part == S - 1 ? INT64_MAX : shared * (part + 1) / S;

    /* The item's queries, row-major: query r = (i, h) is row r = i * H + h of
     * the sequence's q and out (which start at its row0). */
    const float *q_seq = j->q + sq->row0 * H * D;
    float *out_seq = j->out + sq->row0 * H * D;
    const float *qp[AM_CPU_ATTN_ITEM_QUERIES]; /* each (D) */
    float *op[AM_CPU_ATTN_ITEM_QUERIES];       /* each (D): the output row, or the part's */
    int64_t r_of[AM_CPU_ATTN_ITEM_QUERIES];    /* r */
    int64_t lim[AM_CPU_ATTN_ITEM_QUERIES];     /* the query reads keys k0 .. lim - 1 */
    float mx[AM_CPU_ATTN_ITEM_QUERIES], sum[AM_CPU_ATTN_ITEM_QUERIES]; /* online softmax state */
    int nq = 0;
    for (int64_t i = i0; i < i1; i++)
        for (int h = h0; h < h1; h++, nq++) {
            const int64_t r = i * H + h;
            r_of[nq] = r;
            qp[nq] = q_seq + r * D;
            op[nq] = S == 1 ? out_seq + r * D : j->part_o + (part * M * H + r) * D;
            lim[nq] = pos0 + i + 1 < k1 ? pos0 + i + 1 : k1; /* causal */
            mx[nq] = -INFINITY;
            sum[nq] = 0.0f;
            /* attn_accum first scales it by corr = 0: no NaN may be there */
            memset(op[nq], 0, (size_t)D * sizeof(float));
        }
    /* Tiles of 8, 4, 2 and 1 queries: the kernels' register blocking. */
    int tile0[AM_CPU_ATTN_ITEM_QUERIES], tile_n[AM_CPU_ATTN_ITEM_QUERIES], n_tiles = 0;
    int64_t tile_lim[AM_CPU_ATTN_ITEM_QUERIES], kend = 0;
    for (int q0 = 0; q0 < nq; n_tiles++) {
        const int left = nq - q0, n = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        tile0[n_tiles] = q0;
        tile_n[n_tiles] = n;
        tile_lim[n_tiles] = 0;
        for (int jj = q0; jj < q0 + n; jj++)
            if (lim[jj] > tile_lim[n_tiles]) tile_lim[n_tiles] = lim[jj];
        kend = tile_lim[n_tiles] > kend ? tile_lim[n_tiles] : kend;
        q0 += n;
    }

    float s[AM_CPU_ATTN_CHUNK_MAX * 8]; /* (n, tile) scores, then weights, of one chunk */
    float corr[8];
    for (int64_t t0 = k0, t1; t0 < kend; t0 = t1) {
        /* The chunk [t0, t1) stays inside one block: contiguous rows of the pool. */
        const int64_t block_end = (t0 / bs + 1) * bs;
        t1 = t0 + j->chunk < block_end ? t0 + j->chunk : block_end;
        const int64_t row = am_kv_row(sq->blocks, bs, t0);
        const float *kb = j->pages->k + row * stride + kvh * D; /* (n, stride) */
        const float *vb = j->pages->v + row * stride + kvh * D; /* (n, stride) */
        for (int ti = 0; ti < n_tiles; ti++) {
            if (tile_lim[ti] <= t0) continue;
            const int64_t n = (tile_lim[ti] < t1 ? tile_lim[ti] : t1) - t0;
            const int a = tile0[ti], tn = tile_n[ti];
            k->attn_scores(qp + a, tn, kb, stride, n, D, j->scale, s);
            /* The rows of a tile may see different numbers of keys: mask the rest. */
            for (int jj = 0; jj < tn; jj++) {
                const int64_t seen = lim[a + jj] - t0 > 0 ? lim[a + jj] - t0 : 0;
                for (int64_t t = seen; t < n; t++)
                    s[t * tn + jj] = -INFINITY;
            }
            k->attn_softmax(s, n, tn, mx + a, sum + a, corr);
            k->attn_accum(op + a, tn, corr, s, vb, stride, n, D);
        }
    }
    for (int jj = 0; jj < nq; jj++) {
        if (S == 1) {
            k->scale(op[jj], 1.0f / sum[jj], D);
        } else {
            float *ml = j->part_ml + (part * M * H + r_of[jj]) * 2; /* (2) */
            ml[0] = mx[jj];
            ml[1] = sum[jj];
        }
    }
}

static void attn_task(void *p, int ith, int nth) {
    (void)ith, (void)nth;
    attn_job *j = p;
    for (;;) {
        const int64_t it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (it >= j->n_items) break;
        attn_item(j, it);
    }
}

/* The single sequence's output = its parts' outputs weighted by
 * exp(m_p - max m) / (sum over parts of the same * l_p). */
static void attn_merge(const attn_job *j) {
    const am_attn_seq *sq = j->plans[0].seq;
    const int S = j->n_splits, D = j->head_dim;
    const int64_t MH = sq->m * j->n_heads;
    for (int64_t r = 0; r < MH; r++) { /* r = (i, h) */
        float top = -INFINITY, w[AM_CPU_ATTN_MAX_SPLITS], den = 0.0f;
        for (int p = 0; p < S; p++)
            top = fmaxf(top, j->part_ml[(p * MH + r) * 2]);
        for (int p = 0; p < S; p++) {
            w[p] = expf(j->part_ml[(p * MH + r) * 2] - top);
            den += w[p] * j->part_ml[(p * MH + r) * 2 + 1];
        }
        float *o = j->out + (sq->row0 * j->n_heads + r) * D; /* (D) */
        memset(o, 0, (size_t)D * sizeof(float));
        for (int p = 0; p < S; p++)
            j->k->axpy(o, w[p] / den, j->part_o + (p * MH + r) * D, D);
    }
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static void cpu_attention(am_backend *b, float *out, const float *q, const am_kv_pages *pages,
                          const am_attn_seq *seqs, int n_seqs, int n_heads, int n_kv_heads,
                          int head_dim) {
    am__cpu_ctx *c = b->ctx;
    AM_ASSERT(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && head_dim > 0 && pages->block_size > 0);
    if (n_seqs <= 0) return;
    const int G = n_heads / n_kv_heads, D = head_dim;
    attn_plan stack_plans[AM_CPU_ATTN_STACK_SEQS];
    attn_plan *plans = stack_plans;
    if (n_seqs > AM_CPU_ATTN_STACK_SEQS) {
        /* The plans are a small fraction of what the split scratch would need;
         * they never share the scratch with it (splits are single-sequence). */
        if (am__cpu_scratch_reserve(c, (size_t)n_seqs * sizeof *plans) != 0) {
            /* Without memory for the plans, run the sequences one call each. */
            for (int s = 0; s < n_seqs; s++)
                cpu_attention(b, out, q, pages, &seqs[s], 1, n_heads, n_kv_heads, head_dim);
            return;
        }
        plans = c->scratch;
    }
    /* Work: 2 * D multiply-adds per (query, head, key); keys average pos0 + m/2. */
    int64_t work = 0;
    for (int s = 0; s < n_seqs; s++)
        work += seqs[s].m * n_heads * (seqs[s].pos0 + seqs[s].m / 2 + 1) * 2 * head_dim;
    const int nth = b->n_threads > 1 && work >= AM_CPU_PAR_MIN_WORK ? b->n_threads : 1;

    attn_job j = {.k = c->k,
                  .out = out,
                  .q = q,
                  .pages = pages,
                  .plans = plans,
                  .n_seqs = n_seqs,
                  .n_heads = n_heads,
                  .n_kv_heads = n_kv_heads,
                  .head_dim = head_dim,
                  .scale = (float)(1.0 / sqrt((double)D)),
                  .n_splits = 1};
    j.chunk = AM_CPU_ATTN_CHUNK_BYTES / ((int64_t)D * (int64_t)sizeof(float));
    j.chunk = j.chunk < AM_CPU_ATTN_CHUNK_MIN   ? AM_CPU_ATTN_CHUNK_MIN
              : j.chunk > AM_CPU_ATTN_CHUNK_MAX ? AM_CPU_ATTN_CHUNK_MAX
                                                : j.chunk;
    j.heads_per_item = G < AM_CPU_ATTN_ITEM_QUERIES ? G : AM_CPU_ATTN_ITEM_QUERIES;
    j.n_head_blocks = (G + j.heads_per_item - 1) / j.heads_per_item;
    /* As many rows per item as fit the query budget (rows share K/V too),
     * unless that leaves fewer than two items per thread. */
    const int64_t per_row_block = (int64_t)n_kv_heads * j.n_head_blocks;
    const int64_t max_rows = AM_CPU_ATTN_ITEM_QUERIES / j.heads_per_item;
    int64_t total_rows = 0;
    for (int s = 0; s < n_seqs; s++)
        total_rows += seqs[s].m;
    const int64_t want_blocks = (2 * nth + per_row_block - 1) / per_row_block;
    for (int s = 0; s < n_seqs; s++) {
        attn_plan *pl = &plans[s];
        pl->seq = &seqs[s];
        /* A sequence's share of the wanted row blocks follows its share of the rows. */
        const int64_t m = seqs[s].m;
        int64_t blocks = (want_blocks * m + total_rows - 1) / (total_rows > 0 ? total_rows : 1);
        if (blocks < 1) blocks = 1;
        const int64_t rows = m > 0 ? (m + blocks - 1) / blocks : 1;
        pl->rows_per_item = rows < max_rows ? rows : max_rows;
        pl->n_row_blocks = m > 0 ? (m + pl->rows_per_item - 1) / pl->rows_per_item : 0;
        pl->item0 = j.n_items;
        j.n_items += pl->n_row_blocks * per_row_block;
    }
    /* Too few items to even out over the threads (one sequence decoding with
     * 1 or an odd number of kv heads): split the keys so the item count is a
     * multiple of the thread count, if each part keeps enough keys to be worth it. */
    if (n_seqs == 1 && nth > 1 && j.n_items % nth != 0 && j.n_items < 4 * nth) {
        const int64_t m = seqs[0].m, pos0 = seqs[0].pos0;
        int64_t S = nth / gcd64(j.n_items, nth);
        if (S > AM_CPU_ATTN_MAX_SPLITS) S = AM_CPU_ATTN_MAX_SPLITS;
        const int64_t max_parts = (pos0 + 1) / AM_CPU_ATTN_SPLIT_MIN_KEYS;
        if (S > max_parts) S = max_parts;
        const size_t o_floats = (size_t)(S * m * n_heads * D);
        const size_t bytes = (o_floats + (size_t)(S * m * n_heads * 2)) * sizeof(float);
        /* Without the scratch, one part per item is slower but just as right. */
        if (S > 1 && am__cpu_scratch_reserve(c, bytes) == 0) {
            j.n_splits = (int)S;
            j.part_o = c->scratch;
            j.part_ml = j.part_o + o_floats;
            j.n_items *= S;
        }
    }
    atomic_init(&j.next, 0);
    if (nth == 1)
        attn_task(&j, 0, 1);
    else
        am_threadpool_run(c->pool, attn_task, &j);
    if (j.n_splits > 1) attn_merge(&j);
}

/* ---- memory: host memory is backend memory ---- */

static void *cpu_alloc(am_backend *b, size_t bytes) {
    (void)b;
    return am_aligned_alloc(bytes ? bytes : 1);
}

static void cpu_free(am_backend *b, void *p) {
    (void)b;
    am_aligned_free(p);
}

static int cpu_copy(am_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static void cpu_copy_dev(am_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes) memcpy(dst, src, bytes);
}

static int cpu_upload_matrix(am_backend *b, const am_matrix *w, am_matrix *out) {
    (void)b;
    *out = *w;
    return 0;
}

typedef struct {
    const am__cpu_kernels *k;
    float *x; /* (M, N) */
    int64_t n;
} softmax_job;

static void softmax_rows(void *p, int64_t i0, int64_t i1) {
    softmax_job *j = p;
    for (int64_t i = i0; i < i1; i++) {
        float *xi = j->x + i * j->n; /* (N) */
        float sum = j->k->exp_sum(xi, j->k->max(xi, j->n), j->n);
        j->k->scale(xi, 1.0f / sum, j->n);
    }
}

static void cpu_softmax(am_backend *b, float *x, int64_t m, int64_t n) {
    am__cpu_ctx *c = b->ctx;
    if (n <= 0) return;
    softmax_job j = {c->k, x, n};
    par_for(b, m, 1, m * n * 8, softmax_rows, &j);
}

typedef struct {
    const am__cpu_kernels *k;
    float *y;
    const float *x;
} binary_job;

static void silu_mul_range(void *p, int64_t i0, int64_t i1) {
    binary_job *j = p;
    j->k->silu_mul(j->y + i0, j->x + i0, i1 - i0);
}

static void add_range(void *p, int64_t i0, int64_t i1) {
    binary_job *j = p;
    j->k->add(j->y + i0, j->x + i0, i1 - i0);
}

static void cpu_silu_mul(am_backend *b, float *gate, const float *up, int64_t n) {
    am__cpu_ctx *c = b->ctx;
    binary_job j = {c->k, gate, up};
    par_for(b, n, 64, n * 4, silu_mul_range, &j);
}

static void cpu_add(am_backend *b, float *y, const float *x, int64_t n) {
    am__cpu_ctx *c = b->ctx;
    binary_job j = {c->k, y, x};
    /* Memory bound: threads help only once the arrays leave the caches. */
    par_for(b, n, 64, n / 4, add_range, &j);
}

static void cpu_destroy(am_backend *b) {
    cpu_backend *cb = (cpu_backend *)b;
    am__cpu_ctx *c = &cb->ctx;
    am_threadpool_destroy(&c->pool);
    if (c->dnnl)
        for (int i = 0; i < b->n_threads; i++)
            am__dnnl_thread_destroy(&c->dnnl[i]);
    am_free(c->dnnl);
    am_aligned_free(c->scratch);
    am_aligned_free(c->attn_scratch);
    am_free(cb);
}

static const am_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .upload_matrix = cpu_upload_matrix,
    .matmul = cpu_matmul,
    .get_rows = cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .softmax = cpu_softmax,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .copy = cpu_copy_dev,
    .layernorm = am__cpu_layernorm,
    .bias_act = am__cpu_bias_act,
    .add_bias = am__cpu_add_bias,
    .attention_dense = am__cpu_attention_dense,
    .attention_short = am__cpu_attention_short,
    .gather_rows = am__cpu_gather_rows,
    .scatter_add = am__cpu_scatter_add,
    .groupnorm = am__cpu_groupnorm,
    .im2col_1d = am__cpu_im2col_1d,
    .maxpool_time = am__cpu_maxpool_time,
    .mean_rows = am__cpu_mean_rows,
    .transpose = am__cpu_transpose,
    .gru_gates = am__cpu_gru_gates,
};

/* ---- creation ---- */

float am__f16_table[1 << 16];
static pthread_once_t g_tables_once = PTHREAD_ONCE_INIT;

static void tables_fill(void) {
    for (uint32_t h = 0; h < (1u << 16); h++)
        am__f16_table[h] = am_f16_to_f32((uint16_t)h);
}

void am__cpu_tables_init(void) { pthread_once(&g_tables_once, tables_fill); }

/* The kernel table of a level (amx runs the avx512 kernels; AMX is oneDNN's).
 * AVX512-VNNI is not a level of its own: every AMX CPU has it, and at the
 * avx512 level it is used where CPUID reports it. */
static const am__cpu_kernels *level_kernels(am_cpu_isa level) {
    if (level >= AM_CPU_ISA_AVX512)
        return am_cpu_get_features()->avx512vnni ? am__cpu_kernels_avx512_vnni()
                                                 : am__cpu_kernels_avx512();
    if (level == AM_CPU_ISA_AVX2) return am__cpu_kernels_avx2();
    return am__cpu_kernels_generic();
}

int am_cpu_backend_new(int n_threads, am_backend **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > AM_CPU_MAX_THREADS)
        return am_err_set(AM_EINVAL, "cpu backend: n_threads = %d, need 1..%d", n_threads,
                          AM_CPU_MAX_THREADS);
    am_cpu_isa level;
    int rc = am_cpu_isa_active(&level);
    if (rc != 0) return rc;
    am_precision precision = AM_PRECISION_F32;
    const char *mode = getenv("AM_CPU_PRECISION");
    if (mode && mode[0] && (rc = am_precision_parse(mode, &precision)) != 0)
        return am_err_set(rc, "AM_CPU_PRECISION='%s': expected f32 or bf16", mode);
    const am__cpu_kernels *k = level_kernels(level);
    am__cpu_tables_init();
    cpu_backend *cb = am_calloc(1, sizeof *cb);
    if (!cb) return AM_ENOMEM;
    am_backend *b = &cb->base;
    am__cpu_ctx *c = &cb->ctx;
    snprintf(cb->name, sizeof cb->name, "cpu-%s", k->name);
    b->ops = &cpu_ops;
    b->name = cb->name;
    b->n_threads = n_threads;
    b->host_memory = 1;
    b->ctx = c;
    c->k = k;
    rc = am_threadpool_new(n_threads, &c->pool);
    if (rc != 0) {
        am_free(cb);
        return rc;
    }
    c->precision = precision;
    const am_cpu_features *f = am_cpu_get_features();
    c->cls = level == AM_CPU_ISA_GENERIC                                         ? AM__CLS_GENERIC
             : level == AM_CPU_ISA_AMX && f->amx_int8 && am__amx_q8_0_compiled() ? AM__CLS_AMX
                                                                                 : AM__CLS_SIMD;
    c->amx_int8 = c->cls == AM__CLS_AMX;
    /* oneDNN for BF16 W: in precision bf16 on AVX512-BF16/AMX, in precision f32 on AMX (x split
     * into three exact bf16 terms, cpu_matmul.c). */
    if ((precision == AM_PRECISION_BF16 || c->cls == AM__CLS_AMX) && level >= AM_CPU_ISA_AVX512 &&
        am__dnnl_bf16_available()) {
        c->dnnl = am_calloc((size_t)n_threads, sizeof *c->dnnl);
        c->use_bf16_gemm = c->dnnl != NULL;
        for (int i = 0; i < n_threads && c->use_bf16_gemm; i++)
            if (am__dnnl_thread_new(&c->dnnl[i]) != 0) c->use_bf16_gemm = 0;
    }
    AM_LOGD("cpu backend: %s (level %s), %d threads, precision %s, bf16 GEMM %s, int8 tiles %s",
            b->name, am_cpu_isa_name(level), n_threads, am_precision_name(precision),
            c->use_bf16_gemm ? "oneDNN" : "off", c->amx_int8 ? "AMX" : "off");
    *out = b;
    return 0;
}
