/* core/cuda/cuda_sample.cu - argmax and top-k/top-p sampling of logits rows on the device.
 *
 * One block per row. Argmax is a block reduction keeping the lowest index on
 * ties. Sampling finds the top_k logits by a radix select on order-preserving
 * integer keys (4 passes of 8 bits: the k-th largest key, then every key above
 * it and the lowest-indexed keys equal to it, as a stable sort would keep),
 * sorts those k candidates in shared memory (bitonic, by logit descending then
 * index ascending, llm_shards/sampler.c's order) and then runs the CPU
 * sampler's arithmetic on one thread: same f32 operations in the same order,
 * with expf computed as exp in double rounded to float (what a correctly
 * rounded expf gives; glibc's expf agrees except in rare last-bit cases).
 */
#include "core/cuda/cuda_internal.cuh"

#define AM_CUDA_SAMPLE_THREADS 1024
#define AM_CUDA_RADIX_BINS     256

/* A float's bits turned into an unsigned key with the same order (-0 as +0). */
__device__ __forceinline__ uint32_t order_key(float f) {
    uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* logits (M, N) -> ids (M): index of the largest value, lowest on ties. */
__global__ void argmax_kernel(const float *__restrict__ logits, int64_t N, int32_t *ids) {
    __shared__ float best_v[32];
    __shared__ int64_t best_i[32];
    const float *x = logits + (int64_t)blockIdx.x * N; /* (N) */
    float bv = -INFINITY;
    int64_t bi = -1;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
        if (bi < 0 || x[i] > bv)
            bv = x[i], bi = i; /* strided: indices rise, so '>' keeps the lowest */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, bv, o);
        const int64_t i = __shfl_xor_sync(0xffffffffu, bi, o);
        if (i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi))) bv = v, bi = i;
    }
    if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (best_i[w] >= 0 && (best_i[0] < 0 || best_v[w] > best_v[0] ||
                                   (best_v[w] == best_v[0] && best_i[w] < best_i[0])))
                best_v[0] = best_v[w], best_i[0] = best_i[w];
        ids[blockIdx.x] = (int32_t)(best_i[0] < 0 ? 0 : best_i[0]);
    }
}

/* Exclusive prefix count of flag over the block (in thread order); *total gets the sum.
 * scan: 33 ints of shared memory. */
__device__ int block_exclusive_count(int flag, int *scan, int *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const unsigned ballot = __ballot_sync(0xffffffffu, flag);
    const int before_in_warp = __popc(ballot & ((1u << lane) - 1u));
    __syncthreads();
    if (lane == 0) scan[warp] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int w = 0; w < n_warps; w++) {
            const int c = scan[w];
            scan[w] = run;
            run += c;
        }
        scan[32] = run;
    }
    __syncthreads();
    *total = scan[32];
    return scan[warp] + before_in_warp;
}

/* Candidate a comes before b: larger logit first, then lower index. */
__device__ __forceinline__ bool before(float va, int32_t ia, float vb, int32_t ib) {
    return va > vb || (va == vb && ia < ib);
}

/* logits (M, N), uniform (M) -> ids (M). k <= AM_CUDA_SAMPLE_MAX_K, k <= N. */
__global__ void topk_topp_kernel(const float *__restrict__ logits, int64_t N, int k,
                                 float temperature, float top_p, const float *__restrict__ uniform,
                                 int32_t *ids) {
    __shared__ unsigned hist[AM_CUDA_RADIX_BINS];
    __shared__ int scan[33];
    __shared__ uint32_t prefix_s;
    __shared__ int remaining_s, n_gt_s;
    __shared__ float cand_v[AM_CUDA_SAMPLE_MAX_K];     /* (k) candidate logits */
    __shared__ int32_t cand_i[AM_CUDA_SAMPLE_MAX_K];   /* (k) their ids */
    __shared__ float prob[AM_CUDA_SAMPLE_MAX_K];       /* (k) their probabilities */
    const float *x = logits + (int64_t)blockIdx.x * N; /* (N) */

    /* 1. The k-th largest key, 8 bits at a time from the top. */
    uint32_t prefix = 0, mask = 0;
    int remaining = k; /* how many of the keys matching prefix are still to take */
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < AM_CUDA_RADIX_BINS; i += blockDim.x)
            hist[i] = 0;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
            const uint32_t key = order_key(x[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int above = 0, d = AM_CUDA_RADIX_BINS - 1;
            for (; d > 0 && above + (int)hist[d] < remaining; d--)
                above += (int)hist[d];
            remaining_s = remaining - above;
            prefix_s = prefix | ((uint32_t)d << shift);
        }
        __syncthreads();
        remaining = remaining_s;
        prefix = prefix_s;
        mask |= 255u << shift;
    }
    /* 2. Keys above the threshold (k - remaining of them, any order), then the
     * `remaining` lowest-indexed keys equal to it. */
    const uint32_t thr = prefix;
    if (threadIdx.x == 0) n_gt_s = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
        if (order_key(x[i]) > thr) {
            const int at = atomicAdd(&n_gt_s, 1);
            cand_v[at] = x[i];
            cand_i[at] = (int32_t)i;
        }
    }
    __syncthreads();
    const int n_gt = n_gt_s;
    int taken = 0;
    for (int64_t base = 0; base < N && taken < remaining; base += blockDim.x) {
        const int64_t i = base + threadIdx.x;
        const int eq = i < N && order_key(x[i]) == thr;
        int total;
        const int rank = taken + block_exclusive_count(eq, scan, &total);
        if (eq && rank < remaining) {
            cand_v[n_gt + rank] = x[i];
            cand_i[n_gt + rank] = (int32_t)i;
        }
        taken += total;
    }
    /* 3. Bitonic sort of the k candidates, padded to a power of two with -inf. */
    int P = 1;
    while (P < k)
        P <<= 1;
    for (int i = k + threadIdx.x; i < P; i += blockDim.x)
        cand_v[i] = -INFINITY, cand_i[i] = INT32_MAX;
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < P; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool up = (i & size) == 0; /* this run ascends in "before" order */
                    const bool swap = up ? before(cand_v[j], cand_i[j], cand_v[i], cand_i[i])
                                         : before(cand_v[i], cand_i[i], cand_v[j], cand_i[j]);
                    if (swap) {
                        const float tv = cand_v[i];
                        const int32_t ti = cand_i[i];
                        cand_v[i] = cand_v[j], cand_i[i] = cand_i[j];
                        cand_v[j] = tv, cand_i[j] = ti;
                    }
                }
            }
            __syncthreads();
        }
    }
    /* 4. llm_shards/sampler.c's arithmetic, in its order, on one thread. */
    if (threadIdx.x != 0) return;
    int n = k;
    const float max = cand_v[0];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        prob[i] = (float)exp((double)((cand_v[i] - max) / temperature));
        sum += prob[i];
    }
    for (int i = 0; i < n; i++)
        prob[i] /= sum;
    if (top_p < 1.0f) {
        float cum = 0.0f;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += prob[i];
            if (cum >= top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        float kept = 0.0f;
        for (int i = 0; i < n; i++)
            kept += prob[i];
        for (int i = 0; i < n; i++)
            prob[i] /= kept;
    }
    const float r = uniform[blockIdx.x];
    float cum = 0.0f;
    for (int i = 0; i < n; i++) {
        cum += prob[i];
        if (r < cum) {
            ids[blockIdx.x] = cand_i[i];
            return;
        }
    }
    ids[blockIdx.x] = cand_i[n - 1]; /* rounding left r above the last cumulative sum */
}

static int finish(am__cuda_ctx *c, am_backend *b, int32_t *ids, const int32_t *dev_ids, int64_t m,
                  const char *op) {
    if (AM_CUDA_LAUNCHED(c, op)) return am_err_set(AM_EIO, "%s", c->error_msg);
    return b->ops->download(b, ids, dev_ids, (size_t)m * sizeof(int32_t));
}

int am_cuda_argmax(am_backend *b, const float *logits, int64_t m, int64_t n, int32_t *ids) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "argmax");
    if (c->error) return am_err_set(AM_EIO, "%s", c->error_msg);
    if (m <= 0 || n <= 0 || m > INT32_MAX)
        return am_err_set(AM_EINVAL, "cuda argmax: %lld rows of %lld logits", (long long)m,
                          (long long)n);
    int32_t *dev_ids = (int32_t *)am__cuda_scratch(c, (size_t)m * sizeof(int32_t), "argmax");
    if (!dev_ids) return am_err_set(AM_EIO, "%s", c->error_msg);
    argmax_kernel<<<(unsigned)m, AM_CUDA_SAMPLE_THREADS, 0, c->stream>>>(logits, n, dev_ids);
    return finish(c, b, ids, dev_ids, m, "argmax");
}

int am_cuda_sample_topk_topp(am_backend *b, const float *logits, int64_t m, int64_t n,
                             float temperature, int32_t top_k, float top_p, const float *uniform,
                             int32_t *ids) {
    am__cuda_ctx *c = am__cuda_ctx_of(b);
    AM_CUDA_PROFILE_OP(c, "sample_topk_topp");
    if (c->error) return am_err_set(AM_EIO, "%s", c->error_msg);
    if (m <= 0 || n <= 0 || m > INT32_MAX || n > INT32_MAX)
        return am_err_set(AM_EINVAL, "cuda sampling: %lld rows of %lld logits", (long long)m,
                          (long long)n);
    if (!(temperature >= 0.0f) || !(top_p > 0.0f && top_p <= 1.0f))
        return am_err_set(AM_EINVAL, "cuda sampling: temperature %g, top_p %g", temperature, top_p);
    if (temperature == 0.0f) return am_cuda_argmax(b, logits, m, n, ids);
    if (top_k <= 0 || top_k > AM_CUDA_SAMPLE_MAX_K)
        return am_err_set(AM_EUNSUPPORTED,
                          "cuda sampling: top_k %d is outside 1..%d (sample on the host)", top_k,
                          AM_CUDA_SAMPLE_MAX_K);
    const int k = top_k < n ? top_k : (int)n;
    const float *dev_u = (const float *)am__cuda_stage(c, &c->ints_chan, uniform,
                                                       (size_t)m * sizeof(float), "sample");
    int32_t *dev_ids = (int32_t *)am__cuda_scratch(c, (size_t)m * sizeof(int32_t), "sample");
    if (!dev_u || !dev_ids) return am_err_set(AM_EIO, "%s", c->error_msg);
    topk_topp_kernel<<<(unsigned)m, AM_CUDA_SAMPLE_THREADS, 0, c->stream>>>(
        logits, n, k, temperature, top_p, dev_u, dev_ids);
    return finish(c, b, ids, dev_ids, m, "sample");
}
