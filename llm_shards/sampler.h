/* llm_shards/sampler.h - choosing the next token from logits.
 *
 * Order of operations (as in HF transformers' logits processors):
 * repetition penalty (CTRL: a seen token's logit is divided by the penalty if
 * positive, multiplied if negative), then greedy argmax when temperature == 0;
 * otherwise temperature, top-k, softmax, top-p (smallest set of tokens whose
 * probability reaches top_p; at least one), and a draw from a seeded
 * xoshiro256** generator, so equal seeds give equal outputs.
 */
#ifndef AM_SAMPLER_H
#define AM_SAMPLER_H

#include <stdint.h>

typedef struct am_sampling_params {
    float temperature;        /* 0 = greedy */
    int32_t top_k;            /* 0 = off */
    float top_p;              /* 1 = off */
    float repetition_penalty; /* 1 = off */
    uint64_t seed;
} am_sampling_params;

/* temperature 0, top_k 0, top_p 1, repetition_penalty 1, seed 0. */
am_sampling_params am_sampling_default(void);
/* Checks ranges; message names the parameter. */
int am_sampling_check(const am_sampling_params *p);

typedef struct am_sampler am_sampler;

int am_sampler_new(const am_sampling_params *p, int32_t n_vocab, am_sampler **out);
void am_sampler_destroy(am_sampler **p);
/* Picks a token from logits (n_vocab, modified in place) given the ids seen
 * so far (prompt and output) for the repetition penalty. */
int32_t am_sampler_sample(am_sampler *s, float *logits, const int32_t *history, int64_t n_history);
/* Index of the largest value; the lowest index on ties. */
int32_t am_argmax(const float *x, int64_t n);

#endif
