/* tools/cmd_bench.c - `anymal bench decode`: throughput against the memory roofline.
 *
 * Decode at batch 1 reads every weight once per token, so its ceiling is
 * memory bandwidth / weight bytes per token. The bandwidth is measured in the
 * same run by a STREAM-style triad (a = b + s*c over arrays far larger than
 * the caches, 3 streams counted as STREAM does), and a read-only sweep is
 * reported beside it, because a matrix-vector product only reads.
 */
#include "core/alloc.h"
#include "core/clock.h"
#include "core/backend_open.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "llm_shards/generate.h"
#include "llm_shards/llama.h"
#include "llm_shards/sampler.h"
#include "llm_shards/sched.h"
#include "tools/batch_bench.h"
#include "tools/cli.h"
#include "tools/cli_compute.h"
#include "tools/tp_launch.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define AM_BENCH_STREAM_FLOATS ((size_t)48 << 20) /* 192 MiB per array */
#define AM_BENCH_STREAM_REPS   5

typedef struct {
    float *a, *b, *c; /* (n) each */
    size_t n;
    double sum[64]; /* per-thread partial sums of the read sweep */
} stream_arrays;

static void triad_task(void *arg, int ith, int nth) {
    stream_arrays *s = arg;
    int64_t i0, i1;
    am_split_range((int64_t)s->n, 1024, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++)
        s->a[i] = s->b[i] + 3.0f * s->c[i];
}

static void read_task(void *arg, int ith, int nth) {
    stream_arrays *s = arg;
    int64_t i0, i1;
    am_split_range((int64_t)s->n, 1024, ith, nth, &i0, &i1);
    float acc[16] = {0};
    for (int64_t i = i0; i + 16 <= i1; i += 16)
        for (int j = 0; j < 16; j++)
            acc[j] += s->b[i + j];
    double t = 0;
    for (int j = 0; j < 16; j++)
        t += acc[j];
    s->sum[ith] = t;
}

/* Best of a few repetitions, in GB/s (1e9 bytes). */
static int measure_bandwidth(am_threadpool *tp, double *triad_gbs, double *read_gbs) {
    stream_arrays s = {.n = AM_BENCH_STREAM_FLOATS};
    s.a = am_aligned_alloc(s.n * sizeof(float));
    s.b = am_aligned_alloc(s.n * sizeof(float));
    s.c = am_aligned_alloc(s.n * sizeof(float));
    if (!s.a || !s.b || !s.c) {
        am_aligned_free(s.a);
        am_aligned_free(s.b);
        am_aligned_free(s.c);
        return AM_ENOMEM;
    }
    for (size_t i = 0; i < s.n; i++) {
        s.b[i] = 1.0f;
        s.c[i] = 2.0f;
    }
    double best_triad = 1e30, best_read = 1e30;
    for (int r = 0; r < AM_BENCH_STREAM_REPS; r++) {
        double t0 = am_now_s();
        am_threadpool_run(tp, triad_task, &s);
        double t1 = am_now_s();
        am_threadpool_run(tp, read_task, &s);
        double t2 = am_now_s();
        if (t1 - t0 < best_triad) best_triad = t1 - t0;
        if (t2 - t1 < best_read) best_read = t2 - t1;
    }
    *triad_gbs = 3.0 * (double)s.n * sizeof(float) / best_triad / 1e9;
    *read_gbs = (double)s.n * sizeof(float) / best_read / 1e9;
    am_aligned_free(s.a);
    am_aligned_free(s.b);
    am_aligned_free(s.c);
    return 0;
}

static void help(void) {
    printf("usage: anymal bench batch ... (see anymal bench batch --help)\n"
           "       anymal bench decode --model PATH [--prompt-tokens N] [--gen-tokens M] "
           "[--threads T]\n"
           "                          [--device cpu|cuda|cuda:N] [--tp P [--allreduce-dtype "
           "f32|bf16]]\n\n"
           "Prefills N pseudo-random prompt tokens (default 512), then decodes M tokens greedily\n"
           "(default 128, EOS ignored) and prints one JSON line: prefill_tok_per_s, "
           "decode_tok_per_s,\n"
           "weight_bytes_per_token, bandwidth_gb_per_s (STREAM triad, same run), "
           "read_bandwidth_gb_per_s,\n"
           "and decode_roofline_frac = decode_tok_per_s / (bandwidth / weight bytes per token).\n"
           "With --tp P > 1 a shard group of P ranks (mpirun, see `anymal generate --help`; "
           "--threads per\n"
           "rank) runs the same measurement and reports, instead of the bandwidth, the weight "
           "bytes per\n"
           "rank and the all-reduces per token (count, bytes, time). --device picks the compute "
           "backend\n"
           "(default cpu; the bandwidth columns always measure host memory).\n");
}

/* The options both benchmarks take. */
typedef struct bench_opts {
    const char *model_path, *allreduce_dtype, *device;
    int64_t n_prompt, n_gen, n_threads, n_ranks;
    int threads_given;
} bench_opts;

static void bench_opts_init(bench_opts *o, int64_t n_prompt, int64_t n_gen) {
    memset(o, 0, sizeof *o);
    o->n_prompt = n_prompt;
    o->n_gen = n_gen;
    o->n_threads = sysconf(_SC_NPROCESSORS_ONLN);
    o->n_ranks = 1;
}

/* Takes opt when it is one of the shared options: 1 (taken), 0 (not one of
 * them) or a usage exit status (message printed). */
static int bench_opt(am_cli *cli, const char *opt, bench_opts *o) {
    int rc;
    if (!strcmp(opt, "--model")) {
        if (!(o->model_path = am_cli_value(cli))) return AM_EXIT_USAGE;
    } else if (!strcmp(opt, "--prompt-tokens")) {
        if ((rc = am_cli_int(cli, 1, 1 << 20, &o->n_prompt))) return rc;
    } else if (!strcmp(opt, "--gen-tokens")) {
        if ((rc = am_cli_int(cli, 1, 1 << 20, &o->n_gen))) return rc;
    } else if (!strcmp(opt, "--threads")) {
        if ((rc = am_cli_int(cli, 1, 1024, &o->n_threads))) return rc;
        o->threads_given = 1;
    } else if (!strcmp(opt, "--device")) {
        if (!(o->device = am_cli_value(cli))) return AM_EXIT_USAGE;
    } else if (!strcmp(opt, "--tp")) {
        if ((rc = am_cli_int(cli, 1, 64, &o->n_ranks))) return rc;
    } else if (!strcmp(opt, "--allreduce-dtype")) {
        if (!(o->allreduce_dtype = am_cli_value(cli))) return AM_EXIT_USAGE;
        if (strcmp(o->allreduce_dtype, "f32") && strcmp(o->allreduce_dtype, "bf16"))
            return am_cli_fail(cli, "--allreduce-dtype wants f32 or bf16, got '%s'",
                               o->allreduce_dtype);
    } else {
        return 0;
    }
    return 1;
}

/* --tp P > 1: the same measurement by anymal-shard's leader over a group of
 * P ranks; extra (n_extra strings) are the benchmark's own arguments. */
static int bench_launch(const char *cmd, const bench_opts *o, char **extra, int n_extra) {
    char np[24], ng[24], nt[24];
    snprintf(np, sizeof np, "%lld", (long long)o->n_prompt);
    snprintf(ng, sizeof ng, "%lld", (long long)o->n_gen);
    snprintf(nt, sizeof nt, "%lld", (long long)o->n_threads);
    char *args[24] = {"--bench",
                      "--model",
                      (char *)o->model_path,
                      "--prompt-tokens",
                      np,
                      "--gen-tokens",
                      ng,
                      "--allreduce-dtype",
                      (char *)(o->allreduce_dtype ? o->allreduce_dtype : "f32")};
    int n_args = 9;
    for (int i = 0; i < n_extra && n_args < 20; i++)
        args[n_args++] = extra[i];
    if (o->threads_given) { /* else each rank takes its share of the cores (anymal-shard's default)
                             */
        args[n_args++] = "--threads";
        args[n_args++] = nt;
    }
    if (o->device) {
        args[n_args++] = "--device";
        args[n_args++] = (char *)o->device;
    }
    return am_tp_launch(cmd, (int)o->n_ranks, o->threads_given ? (int)o->n_threads : 0, args,
                        n_args);
}

static int bench_decode(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, "bench decode", argc, argv);
    bench_opts o;
    bench_opts_init(&o, 512, 128);
    const char *opt;
    int rc;
    while ((opt = am_cli_next(&cli))) {
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            return 0;
        }
        if ((rc = bench_opt(&cli, opt, &o)) == 0)
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        if (rc != 1) return rc;
    }
    if (!o.model_path) return am_cli_fail(&cli, "--model is required");
    if (o.n_ranks > 1) return bench_launch("bench decode", &o, NULL, 0);
    const char *model_path = o.model_path, *device = o.device;
    const int64_t n_prompt = o.n_prompt, n_gen = o.n_gen, n_threads = o.n_threads;
    am_cli_process_setup((int)n_threads);

    am_llama_model *m = NULL;
    am_backend *be = NULL;
    am_llama_ctx *ctx = NULL;
    am_threadpool *tp = NULL;
    int32_t *prompt = NULL;
    float *logits = NULL;
    int status = 1;
    /* A device first, so that a missing one fails before the load and the bandwidth runs
     * (the CPU backend comes after them: its threads must not compete with the triad's). */
    if (device && strcmp(device, "cpu") && (rc = am_backend_open(device, (int)n_threads, &be)))
        goto fail;
    if ((rc = am_llama_load(model_path, &m))) goto fail;
    const am_llama_config *cfg = &m->cfg;
    if (n_prompt + n_gen > cfg->max_seq_len) {
        rc = am_err_set(AM_ERANGE,
                        "--prompt-tokens %lld + --gen-tokens %lld exceed the model's context of %d",
                        (long long)n_prompt, (long long)n_gen, cfg->max_seq_len);
        goto fail;
    }
    if ((rc = am_threadpool_new((int)n_threads, &tp))) goto fail;
    double triad_gbs, read_gbs;
    if ((rc = measure_bandwidth(tp, &triad_gbs, &read_gbs))) goto fail;
    am_threadpool_destroy(&tp); /* its threads must not compete with the backend's */

    if (!be && (rc = am_backend_open(device, (int)n_threads, &be))) goto fail;
    if ((rc = am_llama_ctx_new(m, be, (int32_t)(n_prompt + n_gen),
                               (int32_t)(n_prompt < 512 ? n_prompt : 512), &ctx)))
        goto fail;
    prompt = am_malloc((size_t)n_prompt * sizeof *prompt);
    logits = am_aligned_alloc((size_t)cfg->vocab_size * sizeof(float));
    if (!prompt || !logits) {
        rc = AM_ENOMEM;
        goto fail;
    }
    prompt[0] = AM_LLAMA_BOS;
    for (int64_t i = 1; i < n_prompt; i++)
        prompt[i] = (int32_t)(3 + (i * 7919) % (cfg->vocab_size - 3));

    /* Warm-up: one short forward pass pages in the weights and builds kernels. */
    if ((rc = am_llama_eval(ctx, prompt, NULL, 1, logits, 0))) goto fail;
    am_llama_ctx_reset(ctx);

    double t0 = am_now_s();
    if ((rc = am_llama_eval(ctx, prompt, NULL, (int32_t)n_prompt, logits, 0))) goto fail;
    double t1 = am_now_s();
    for (int64_t i = 0; i < n_gen; i++) {
        int32_t id = am_argmax(logits, cfg->vocab_size);
        if ((rc = am_llama_eval(ctx, &id, NULL, 1, logits, 0))) goto fail;
    }
    double t2 = am_now_s();

    double prefill_tps = (double)n_prompt / (t1 - t0), decode_tps = (double)n_gen / (t2 - t1);
    size_t wbytes = am_llama_weight_bytes(m);
    printf("{\"bench\":\"decode\",\"model\":\"%s\",\"dtype\":\"%s\",\"backend\":\"%s\",\"threads\":"
           "%lld,"
           "\"prompt_tokens\":%lld,\"gen_tokens\":%lld,\"prefill_tok_per_s\":%.2f,\"decode_tok_per_"
           "s\":%.2f,"
           "\"weight_bytes_per_token\":%zu,\"bandwidth_gb_per_s\":%.2f,\"read_bandwidth_gb_per_s\":"
           "%.2f,"
           "\"decode_roofline_frac\":%.3f,\"decode_read_roofline_frac\":%.3f,"
           "\"prefill_gflop_per_s\":%.1f}\n",
           model_path, am_dtype_name(am_llama_weight_dtype(m)), be->name, (long long)n_threads,
           (long long)n_prompt, (long long)n_gen, prefill_tps, decode_tps, wbytes, triad_gbs,
           read_gbs, decode_tps / (triad_gbs * 1e9 / (double)wbytes),
           decode_tps / (read_gbs * 1e9 / (double)wbytes),
           prefill_tps * 2.0 * (double)am_llama_weight_params(m) / 1e9);
    status = 0;
    goto out;
fail:
    status = am_cli_error("bench decode", rc);
out:
    am_free(prompt);
    am_aligned_free(logits);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_threadpool_destroy(&tp);
    am_llama_destroy(&m);
    return status;
}

static void help_batch(void) {
    printf(
        "usage: anymal bench batch --model PATH [--batch B] [--prompt-tokens N] [--gen-tokens M]\n"
        "                         [--max-batch R] [--block-size S] [--threads T] "
        "[--memory-fraction F]\n"
        "                         [--device cpu|cuda|cuda:N] [--tp P [--allreduce-dtype "
        "f32|bf16]]\n\n"
        "Submits B requests (default 32) of N pseudo-random prompt tokens (default 512) at once "
        "to\n"
        "the continuous-batching scheduler, each generating M tokens (default 128, greedy, EOS\n"
        "ignored), R rows per step (default 512), KV blocks of S positions (default %d), and\n"
        "prints one JSON line: decode_tok_per_s (aggregate over the batch, once every request has\n"
        "its first token), prefill_tok_per_s, ttft_ms_p50/p90/p99, itl_ms_p50/p90/p99 "
        "(inter-token\n"
        "latency), the GFLOP/s of both phases and of the GEMM behind them measured in the same "
        "run\n"
        "(the model's gate matrix at M = B and M = R, and an f32 GEMM of the same shape).\n"
        "The KV cache holds all B sequences at their full length, or with --memory-fraction F\n"
        "(0 < F <= 1) whatever fits in F of the device's memory after the weights and activations\n"
        "(as a serving shard sizes it); max_running in the output tells how many ran at once.\n"
        "With --tp P > 1 the leader of a shard group of P ranks runs it (mpirun).\n",
        AM_SCHED_DEFAULT_BLOCK_SIZE);
}

static int bench_batch(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, "bench batch", argc, argv);
    bench_opts o;
    bench_opts_init(&o, 512, 128);
    int64_t batch = 32, max_batch = 512, block = AM_SCHED_DEFAULT_BLOCK_SIZE;
    double mem_fraction = 0.0; /* 0: a cache sized for the whole batch */
    int rc;
    const char *opt;
    while ((opt = am_cli_next(&cli))) {
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help_batch();
            return 0;
        } else if (!strcmp(opt, "--batch")) {
            if ((rc = am_cli_int(&cli, 1, 4096, &batch))) return rc;
        } else if (!strcmp(opt, "--max-batch")) {
            if ((rc = am_cli_int(&cli, 1, 65536, &max_batch))) return rc;
        } else if (!strcmp(opt, "--block-size")) {
            if ((rc = am_cli_int(&cli, 1, 65536, &block))) return rc;
        } else if (!strcmp(opt, "--memory-fraction")) {
            if ((rc = am_cli_float(&cli, 1e-3, 1.0, &mem_fraction))) return rc;
        } else if ((rc = bench_opt(&cli, opt, &o)) == 0) {
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        } else if (rc != 1) {
            return rc;
        }
    }
    if (!o.model_path) return am_cli_fail(&cli, "--model is required");
    if (o.n_ranks > 1) {
        if (mem_fraction > 0.0)
            return am_cli_fail(&cli, "--memory-fraction is not supported with --tp yet");
        char nb[24], nr[24];
        snprintf(nb, sizeof nb, "%lld", (long long)batch);
        snprintf(nr, sizeof nr, "%lld", (long long)max_batch);
        char *extra[] = {"--bench-batch", nb, "--max-batch", nr};
        return bench_launch("bench batch", &o, extra, 4);
    }
    const char *model_path = o.model_path, *device = o.device;
    const int64_t n_prompt = o.n_prompt, n_gen = o.n_gen, n_threads = o.n_threads;
    am_cli_process_setup((int)n_threads);
    am_llama_model *m = NULL;
    am_backend *be = NULL;
    am_llama_ctx *ctx = NULL;
    am_batch_bench_opts bo = {(int32_t)batch, (int32_t)n_prompt, (int32_t)n_gen, (int32_t)max_batch,
                              (int32_t)block};
    int32_t n_blocks = am_batch_bench_blocks(&bo);
    if ((rc = am_llama_load(model_path, &m)) ||
        (rc = am_backend_open(device, (int)n_threads, &be)) ||
        (mem_fraction > 0.0 && (rc = am_llama_kv_blocks_fit(m, be, mem_fraction, (int32_t)block,
                                                            (int32_t)max_batch, &n_blocks))) ||
        (rc = am_llama_ctx_new_paged(m, be, n_blocks, (int32_t)block, (int32_t)max_batch, &ctx)) ||
        (rc = am_batch_bench_run(ctx, be, &bo, model_path, NULL, stdout)))
        rc = am_cli_error("bench batch", rc);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_llama_destroy(&m);
    return rc ? 1 : 0;
}

int am_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help();
        return argc < 2 ? AM_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "decode")) return bench_decode(argc - 1, argv + 1);
    if (!strcmp(argv[1], "batch")) return bench_batch(argc - 1, argv + 1);
    fprintf(stderr, "anymal bench: unknown benchmark '%s' (want: decode, batch)\n", argv[1]);
    return AM_EXIT_USAGE;
}
