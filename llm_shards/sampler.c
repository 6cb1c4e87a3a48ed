/* llm_shards/sampler.c - repetition penalty, temperature, top-k, top-p, seeded draws. */
#include "llm_shards/sampler.h"

#include "core/alloc.h"
#include "core/error.h"

#include <math.h>
#include <stdlib.h>

struct am_sampler {
    am_sampling_params p;
    int32_t n_vocab;
    uint64_t rng[4]; /* xoshiro256** state */
    int32_t *idx;    /* (V) candidate ids */
    float *prob;     /* (V) candidate probabilities */
    uint8_t *seen;   /* (V) repetition-penalty marks */
};

am_sampling_params am_sampling_default(void) {
    return (am_sampling_params){
        .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .repetition_penalty = 1.0f};
}

int am_sampling_check(const am_sampling_params *p) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return am_err_set(AM_ERANGE, "temperature %g is outside [0, 100]", p->temperature);
    if (p->top_k < 0) return am_err_set(AM_ERANGE, "top_k %d is negative", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return am_err_set(AM_ERANGE, "top_p %g is outside (0, 1]", p->top_p);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 100.0f))
        return am_err_set(AM_ERANGE, "repetition_penalty %g is outside (0, 100]",
                          p->repetition_penalty);
    return 0;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t *s) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 24 random bits. */
static float rng_uniform(am_sampler *s) {
    return (float)(xoshiro_next(s->rng) >> 40) / 16777216.0f;
}

int am_sampler_new(const am_sampling_params *p, int32_t n_vocab, am_sampler **out) {
    int rc = am_sampling_check(p);
    if (rc) return rc;
    if (n_vocab <= 0) return am_err_set(AM_EINVAL, "sampler: vocabulary size %d", n_vocab);
    am_sampler *s = am_calloc(1, sizeof *s);
    if (!s) return AM_ENOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->idx = am_malloc((size_t)n_vocab * sizeof *s->idx);
    s->prob = am_malloc((size_t)n_vocab * sizeof *s->prob);
    s->seen = am_calloc((size_t)n_vocab, 1);
    if (!s->idx || !s->prob || !s->seen) {
        am_sampler_destroy(&s);
        return AM_ENOMEM;
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return 0;
}

void am_sampler_destroy(am_sampler **p) {
    if (!p || !*p) return;
    am_free((*p)->idx);
    am_free((*p)->prob);
    am_free((*p)->seen);
    am_free(*p);
    *p = NULL;
}

int32_t am_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

static int by_logit_desc(const void *a, const void *b, void *ctx) {
    const float *logits = ctx;
    float la = logits[*(const int32_t *)a], lb = logits[*(const int32_t *)b];
    if (la != lb) return la < lb ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b; /* stable order for equal logits */
}

int32_t am_sampler_sample(am_sampler *s, float *logits, const int32_t *history, int64_t n_history) {
    const int32_t V = s->n_vocab;
    const am_sampling_params *p = &s->p;
    if (p->repetition_penalty != 1.0f) {
        for (int64_t i = 0; i < n_history; i++) {
            int32_t t = history[i];
            if (t < 0 || t >= V || s->seen[t]) continue;
            s->seen[t] = 1;
            logits[t] = logits[t] > 0 ? logits[t] / p->repetition_penalty
                                      : logits[t] * p->repetition_penalty;
        }
        for (int64_t i = 0; i < n_history; i++)
            if (history[i] >= 0 && history[i] < V) s->seen[history[i]] = 0;
    }
    if (p->temperature == 0.0f) return am_argmax(logits, V);

    /* Candidates sorted by logit; top-k keeps the first k. Sorting all V ids is
     * ~1 ms for V = 32000, small next to a decoder step. */
    for (int32_t i = 0; i < V; i++)
        s->idx[i] = i;
    qsort_r(s->idx, (size_t)V, sizeof *s->idx, by_logit_desc, logits);
    int32_t n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    float max = logits[s->idx[0]], sum = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        s->prob[i] = expf((logits[s->idx[i]] - max) / p->temperature);
        sum += s->prob[i];
    }
    for (int32_t i = 0; i < n; i++)
        s->prob[i] /= sum;
    if (p->top_p < 1.0f) {
        float cum = 0.0f;
        int32_t keep = n;
        for (int32_t i = 0; i < n; i++) {
            cum += s->prob[i];
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        float kept = 0.0f;
        for (int32_t i = 0; i < n; i++)
            kept += s->prob[i];
        for (int32_t i = 0; i < n; i++)
            s->prob[i] /= kept;
    }
    float r = rng_uniform(s), cum = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        cum += s->prob[i];
        if (r < cum) return s->idx[i];
    }
    return s->idx[n - 1]; /* rounding left r above the last cumulative sum */
}
