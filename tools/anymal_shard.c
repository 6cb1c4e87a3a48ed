/* tools/anymal_shard.c - `mpirun -np P anymal-shard --model PATH ...`: one rank of a shard group.
 *
 * Every rank parses the same options (those of `anymal generate`), loads its
 * slice and joins the group (llm_shards/shard_group.h). Rank 0 tokenizes the
 * prompt, drives the generation and prints exactly what `anymal generate`
 * prints; the other ranks serve its steps and print only errors, prefixed
 * with their rank. --bench measures prefill/decode throughput and the
 * group's all-reduce traffic per token instead (one JSON line).
 */
#include "core/alloc.h"
#include "core/clock.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "llm_shards/sampler.h"
#include "llm_shards/shard_group.h"
#include "llm_shards/sched.h"
#include "tools/batch_bench.h"
#include "tools/cli.h"
#include "tools/gen_cli.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "shard"

/* mpirun tells each process its rank before MPI starts; used only to keep
 * usage errors from being printed once per rank. */
static int env_rank(void) {
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    if (!r) r = getenv("PMIX_RANK");
    return r ? atoi(r) : 0;
}

static int parse_quietly_on_followers(am_gen_cli *o, int argc, char **argv) {
    int saved = -1;
    if (env_rank() != 0) {
        int devnull = open("/dev/null", O_WRONLY);
        saved = dup(STDERR_FILENO);
        if (devnull >= 0 && saved >= 0) dup2(devnull, STDERR_FILENO);
        if (devnull >= 0) close(devnull);
    }
    int rc = am_gen_cli_parse(o, CMD, 1, argc, argv);
    if (saved >= 0) {
        dup2(saved, STDERR_FILENO);
        close(saved);
    }
    return rc;
}

static double stat_per(double x, int64_t n) { return n > 0 ? x / (double)n : 0.0; }

/* Leader, --bench: prefill then greedy decode, timed, with the all-reduce traffic per token. */
static int bench(am_shard_group *g, const am_gen_cli *o) {
    const am_llama_model *m = am_shard_group_model(g);
    const am_llama_config *cfg = &m->cfg;
    am_tp_comm *comm = am_shard_group_comm(g);
    int64_t n_prompt = o->bench_prompt_tokens, n_gen = o->bench_gen_tokens;
    if (n_prompt + n_gen > cfg->max_seq_len)
        return am_cli_error(
            CMD,
            am_err_set(AM_ERANGE,
                       "--prompt-tokens %lld + --gen-tokens %lld exceed the model's context of %d",
                       (long long)n_prompt, (long long)n_gen, cfg->max_seq_len));
    am_llama_ctx *ctx = NULL;
    int32_t *prompt = am_malloc((size_t)n_prompt * sizeof *prompt);
    float *logits = am_aligned_alloc((size_t)cfg->vocab_size * sizeof(float));
    int rc = prompt && logits ? 0 : AM_ENOMEM;
    if (rc || (rc = am_shard_group_ctx_new(g, (int32_t)(n_prompt + n_gen),
                                           (int32_t)(n_prompt < 512 ? n_prompt : 512), &ctx)))
        goto done;
    prompt[0] = AM_LLAMA_BOS;
    for (int64_t i = 1; i < n_prompt; i++)
        prompt[i] = (int32_t)(3 + (i * 7919) % (cfg->vocab_size - 3));
    /* Warm-up: pages in the weights and builds kernels on every rank. */
    if ((rc = am_llama_eval(ctx, prompt, NULL, 1, logits, 0))) goto done;
    am_llama_ctx_reset(ctx);
    am_tp_stats s0 = comm->stats;
    double t0 = am_now_s();
    if ((rc = am_llama_eval(ctx, prompt, NULL, (int32_t)n_prompt, logits, 0))) goto done;
    double t1 = am_now_s();
    am_tp_stats s1 = comm->stats;
    for (int64_t i = 0; i < n_gen; i++) {
        int32_t id = am_argmax(logits, cfg->vocab_size);
        if ((rc = am_llama_eval(ctx, &id, NULL, 1, logits, 0))) goto done;
    }
    double t2 = am_now_s();
    am_tp_stats s2 = comm->stats;
    int64_t nd = n_gen;
    printf(
        "{\"bench\":\"decode\",\"tp\":%d,\"model\":\"%s\",\"dtype\":\"%s\",\"threads_per_rank\":%d,"
        "\"allreduce_dtype\":\"%s\",\"prompt_tokens\":%lld,\"gen_tokens\":%lld,\"prefill_tok_per_"
        "s\":%.2f,"
        "\"decode_tok_per_s\":%.2f,\"decode_ms_per_token\":%.3f,\"weight_bytes_per_rank\":%zu,"
        "\"allreduces_per_token\":%.1f,\"allreduce_bytes_per_token\":%.0f,\"allreduce_ms_per_"
        "token\":%.4f,"
        "\"gather_bytes_per_token\":%.0f,\"gather_ms_per_token\":%.4f,\"prefill_allreduce_ms\":%."
        "3f}\n",
        comm->size, o->model_path, am_dtype_name(am_llama_weight_dtype(m)),
        am_shard_group_threads(g), am_dtype_name(comm->allreduce_dtype), (long long)n_prompt,
        (long long)n_gen, (double)n_prompt / (t1 - t0), (double)n_gen / (t2 - t1),
        1e3 * (t2 - t1) / (double)n_gen, am_llama_weight_bytes(m),
        stat_per((double)(s2.n_allreduce - s1.n_allreduce), nd),
        stat_per((double)(s2.allreduce_bytes - s1.allreduce_bytes), nd),
        1e3 * stat_per(s2.allreduce_s - s1.allreduce_s, nd),
        stat_per((double)(s2.gather_bytes - s1.gather_bytes), nd),
        1e3 * stat_per(s2.gather_s - s1.gather_s, nd), 1e3 * (s1.allreduce_s - s0.allreduce_s));
    fflush(stdout);
done:
    am_llama_ctx_destroy(&ctx);
    am_free(prompt);
    am_aligned_free(logits);
    return rc ? am_cli_error(CMD, rc) : 0;
}

/* Leader, --bench --bench-batch B: the continuous-batching benchmark over the group. */
static int bench_batch(am_shard_group *g, const am_gen_cli *o) {
    am_batch_bench_opts bo = {(int32_t)o->bench_batch, (int32_t)o->bench_prompt_tokens,
                              (int32_t)o->bench_gen_tokens, (int32_t)o->bench_max_batch,
                              AM_SCHED_DEFAULT_BLOCK_SIZE};
    am_llama_ctx *ctx = NULL;
    char extra[96];
    snprintf(extra, sizeof extra, "\"tp\":%d,\"allreduce_dtype\":\"%s\",", am_shard_group_size(g),
             am_dtype_name(o->allreduce_dtype));
    int rc = am_shard_group_paged_ctx_new(g, am_batch_bench_blocks(&bo), bo.block_size,
                                          bo.max_batch, &ctx);
    if (!rc)
        rc = am_batch_bench_run(ctx, am_shard_group_backend(g), &bo, o->model_path, extra, stdout);
    am_llama_ctx_destroy(&ctx);
    return rc ? am_cli_error(CMD, rc) : 0;
}

/* Leader: the prompt, the generation, the output of `anymal generate`. */
static int lead(am_shard_group *g, am_gen_cli *o) {
    const am_llama_model *m = am_shard_group_model(g);
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    am_gen_result res = {0};
    FILE *dump = NULL;
    int status = am_gen_cli_prompt(o, CMD, am_shard_group_tokenizer(g), m->cfg.vocab_size,
                                   m->cfg.max_seq_len, &ids, &n_ids);
    if (status) return status;
    if ((status = am_gen_cli_dump_open(o, CMD, &dump))) goto out;
    if (o->idle_ms) am_gen_cli_sleep_ms(o->idle_ms);
    int rc = am_shard_group_generate(g, ids, n_ids, &o->gp, am_gen_cli_print_text, o, &res);
    if (rc) {
        status = am_cli_error(CMD, rc);
        goto out;
    }
    am_gen_cli_report(o, CMD, &res);
out:
    if (dump && fclose(dump) != 0 && status == 0)
        status =
            am_cli_error(CMD, am_err_set(AM_EIO, "--dump-logits %s: write failed", o->dump_logits));
    am_gen_result_fini(&res);
    am_free(ids);
    return status;
}

int main(int argc, char **argv) {
    am_gen_cli o;
    int rc = parse_quietly_on_followers(&o, argc, argv);
    if (rc) return rc < 0 ? 0 : rc;
    am_cpu_blas_setup(o.n_threads);
    int leader_needs_tok = !o.bench && (o.prompt || !o.print_ids || o.gp.n_stop);
    am_shard_group_opts go = {.model_path = o.model_path,
                              .tok_path = o.tok_path,
                              .need_tok = leader_needs_tok,
                              .n_threads = o.n_threads,
                              .allreduce_dtype = o.allreduce_dtype,
                              .device = o.device};
    am_shard_group *g = NULL;
    if (am_shard_group_new(&argc, &argv, &go, &g)) return 1; /* already reported, naming the rank */
    int status = 0;
    if (o.mem_report && (rc = am_shard_group_mem_report(g, stderr, "load")))
        am_tp_fatal(am_shard_group_comm(g), rc, "memory report");
    if (am_shard_group_rank(g) == 0) {
        status = o.bench ? (o.bench_batch ? bench_batch(g, &o) : bench(g, &o)) : lead(g, &o);
        if ((rc = am_shard_group_stop(g)))
            am_tp_fatal(am_shard_group_comm(g), rc, "stopping the group");
    } else if ((rc = am_shard_group_serve(g))) {
        am_tp_fatal(am_shard_group_comm(g), rc, "serving");
    }
    if (o.mem_report && (rc = am_shard_group_mem_report(g, stderr, "end")))
        am_tp_fatal(am_shard_group_comm(g), rc, "memory report");
    am_shard_group_destroy(&g);
    return status;
}
