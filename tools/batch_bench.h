/* tools/batch_bench.h - `anymal bench batch`: B requests through the continuous-batching scheduler.
 *
 * All B requests (N pseudo-random prompt tokens each, M generated tokens,
 * greedy, EOS ignored) are submitted at once to a scheduler (sched.h) over a
 * paged context; the per-token callbacks time every token. Reported:
 *   prefill_tok_per_s  B * N / the time until the last request had its first
 *                      token (the steps in that window also carry the decode
 *                      rows of requests that started earlier);
 *   decode_tok_per_s   tokens generated after that moment / the time they took
 *                      (all B sequences decoding: the aggregate rate);
 *   ttft_ms_*, itl_ms_* percentiles (p50, p90, p99) of time to first token and
 *                      of the gaps between a request's successive tokens;
 *   the GFLOP/s of those phases (2 FLOPs per weight per row) and, measured in
 *   the same run on the same backend, the GEMM behind them: the model's own
 *   gate matrix at M = B and M = max_batch rows, and an f32 GEMM of the same
 *   shape (the sgemm peak).
 * The same code runs in-process (anymal) and on the leader of a shard group
 * (anymal-shard --bench --bench-batch B).
 */
#ifndef AM_BATCH_BENCH_H
#define AM_BATCH_BENCH_H

#include "core/backend.h"
#include "llm_shards/llama.h"

#include <stdint.h>
#include <stdio.h>

typedef struct am_batch_bench_opts {
    int32_t batch;      /* B requests */
    int32_t n_prompt;   /* N prompt tokens each */
    int32_t n_gen;      /* M generated tokens each */
    int32_t max_batch;  /* rows per step */
    int32_t block_size; /* KV positions per block */
} am_batch_bench_opts;

/* KV blocks the run needs (B full sequences, plus the warm-up's). */
int32_t am_batch_bench_blocks(const am_batch_bench_opts *o);

/* Runs the benchmark on ctx (a paged context of at least
 * am_batch_bench_blocks blocks of o->block_size, max_batch >= o->max_batch;
 * a group context on a shard leader) and prints one JSON line to out, with
 * extra_json (e.g. "\"tp\":2,") spliced in after the opening brace. be is the
 * context's backend (for the GEMM measurements). 0 or an error. */
int am_batch_bench_run(am_llama_ctx *ctx, am_backend *be, const am_batch_bench_opts *o,
                       const char *model_path, const char *extra_json, FILE *out);

#endif
