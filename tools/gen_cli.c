/* tools/gen_cli.c - options, prompt and output shared by `anymal generate` and `anymal-shard`. */
#include "tools/gen_cli.h"

#include "core/alloc.h"
#include "core/error.h"
#include "tools/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void help(const char *cmd, int shard) {
    if (shard)
        printf("usage: mpirun -np P anymal-shard --model PATH (--prompt TEXT | --prompt-ids 1,2,3 "
               "| --bench) [options]\n\n"
               "One rank of a tensor-parallel shard group: rank 0 (the leader) tokenizes, samples "
               "and prints;\n"
               "every rank holds 1/P of the weights. Options and output are those of `anymal "
               "generate`\n"
               "(which runs this command for --tp P), plus --bench.\n\n");
    else
        printf(
            "usage: anymal generate --model PATH [--tokenizer PATH] (--prompt TEXT | --prompt-ids "
            "1,2,3)\n"
            "                       [--max-tokens N] [--temperature T] [--top-p P] [--top-k K]\n"
            "                       [--repetition-penalty R] [--seed S] [--stop STR]... [--chat]\n"
            "                       [--system TEXT] [--print-ids] [--threads N] [--device D] [--tp "
            "P]\n\n");
    printf(
        "  --model        safetensors file or directory, GGUF file, or llama2.c checkpoint\n"
        "  --tokenizer    tokenizer.model or tokenizer.bin (default: the GGUF's own, or the one\n"
        "                 beside the model)\n"
        "  --prompt       text, encoded with BOS (with --chat: the user message of a LLaMA-2-chat\n"
        "                 prompt, with --system as the system prompt)\n"
        "  --prompt-ids   comma-separated token ids, used as given\n"
        "  --max-tokens   tokens to generate unless EOS or a stop string comes first (default %d)\n"
        "  --temperature  0 = greedy (default); with --top-k, --top-p, --seed for sampling\n"
        "  --stop         stop when the text contains STR (cut before it); repeatable\n"
        "  --print-ids    print the generated token ids on one line instead of the text\n"
        "  --threads      compute threads (default: online CPUs%s)\n"
        "  --device       cpu (default), cuda or cuda:N: the compute backend%s\n",
        AM_GENERATE_DEFAULT_MAX_TOKENS, shard ? " / ranks on this host" : "",
        shard ? " of every rank (ranks may share one GPU)" : "");
    if (!shard)
        printf("  --tp P         run a tensor-parallel group of P ranks: `mpirun -np P "
               "anymal-shard` with\n"
               "                 these options (anymal-shard must sit next to anymal; AM_MPIRUN "
               "overrides\n"
               "                 the launcher; --threads then counts per rank). 1 = in process "
               "(default)\n");
    printf(
        "  --allreduce-dtype f32|bf16   wire type of the group's all-reduces (default f32)\n"
        "  --dump-logits FILE           write every step's logits (vocab f32 values per step)\n"
        "  --mem-report                 per-rank VmRSS/VmHWM vs weight bytes, after load and at "
        "the end\n"
        "  --idle-ms N, --step-sleep-ms N   test hooks: the leader idles N ms after loading, or\n"
        "                               sleeps N ms per token\n");
    if (shard)
        printf("  --bench        instead of a prompt: prefill --prompt-tokens N (default 512) "
               "pseudo-random\n"
               "                 tokens, decode --gen-tokens M (default 128) greedily, print one "
               "JSON line\n"
               "  --bench-batch B  with --bench: B requests through the continuous-batching "
               "scheduler\n"
               "                 (see `anymal bench batch --help`)\n"
               "  --max-batch R  with --bench-batch: rows per step (default 512)\n");
    (void)cmd;
}

int am_gen_cli_parse(am_gen_cli *o, const char *cmd, int shard, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->gp.sampling = am_sampling_default();
    o->tp = 1;
    o->allreduce_dtype = AM_DTYPE_F32;
    o->bench_prompt_tokens = 512;
    o->bench_gen_tokens = 128;
    o->bench_max_batch = 512;
    am_cli cli;
    am_cli_init(&cli, cmd, argc, argv);
    const char *opt;
    int rc;
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        double d;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help(cmd, shard);
            return -1;
        } else if (!strcmp(opt, "--model")) {
            if (!(o->model_path = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--tokenizer")) {
            if (!(o->tok_path = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--prompt")) {
            if (!(o->prompt = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--prompt-ids")) {
            if (!(o->prompt_ids = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--system")) {
            if (!(o->system = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--max-tokens")) {
            if ((rc = am_cli_int(&cli, 1, 1 << 20, &v))) return rc;
            o->gp.max_tokens = (int32_t)v;
        } else if (!strcmp(opt, "--temperature")) {
            if ((rc = am_cli_float(&cli, 0, 100, &d))) return rc;
            o->gp.sampling.temperature = (float)d;
        } else if (!strcmp(opt, "--top-p")) {
            if ((rc = am_cli_float(&cli, 1e-6, 1, &d))) return rc;
            o->gp.sampling.top_p = (float)d;
        } else if (!strcmp(opt, "--top-k")) {
            if ((rc = am_cli_int(&cli, 0, 1 << 24, &v))) return rc;
            o->gp.sampling.top_k = (int32_t)v;
        } else if (!strcmp(opt, "--repetition-penalty")) {
            if ((rc = am_cli_float(&cli, 1e-3, 100, &d))) return rc;
            o->gp.sampling.repetition_penalty = (float)d;
        } else if (!strcmp(opt, "--seed")) {
            if ((rc = am_cli_u64(&cli, &o->gp.sampling.seed))) return rc;
        } else if (!strcmp(opt, "--stop")) {
            const char *s = am_cli_value(&cli);
            if (!s) return AM_EXIT_USAGE;
            if (o->gp.n_stop == AM_MAX_STOP_STRINGS)
                return am_cli_fail(&cli, "at most %d --stop strings", AM_MAX_STOP_STRINGS);
            if (!s[0]) return am_cli_fail(&cli, "--stop wants a non-empty string");
            o->stops[o->gp.n_stop++] = s;
        } else if (!strcmp(opt, "--print-ids")) {
            o->print_ids = 1;
        } else if (!strcmp(opt, "--chat")) {
            o->chat = 1;
        } else if (!strcmp(opt, "--threads")) {
            if ((rc = am_cli_int(&cli, 1, 1024, &v))) return rc;
            o->n_threads = (int)v;
        } else if (!strcmp(opt, "--device")) {
            if (!(o->device = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--tp") && !shard) {
            if ((rc = am_cli_int(&cli, 1, AM_TP_MAX_CLI, &v))) return rc;
            o->tp = (int)v;
        } else if (!strcmp(opt, "--allreduce-dtype")) {
            const char *s = am_cli_value(&cli);
            if (!s) return AM_EXIT_USAGE;
            if (!strcmp(s, "f32"))
                o->allreduce_dtype = AM_DTYPE_F32;
            else if (!strcmp(s, "bf16"))
                o->allreduce_dtype = AM_DTYPE_BF16;
            else
                return am_cli_fail(&cli, "--allreduce-dtype wants f32 or bf16, got '%s'", s);
        } else if (!strcmp(opt, "--dump-logits")) {
            if (!(o->dump_logits = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--mem-report")) {
            o->mem_report = 1;
        } else if (!strcmp(opt, "--idle-ms")) {
            if ((rc = am_cli_int(&cli, 0, 3600 * 1000, &v))) return rc;
            o->idle_ms = (int)v;
        } else if (!strcmp(opt, "--step-sleep-ms")) {
            if ((rc = am_cli_int(&cli, 0, 60 * 1000, &v))) return rc;
            o->step_sleep_ms = (int)v;
        } else if (!strcmp(opt, "--bench") && shard) {
            o->bench = 1;
        } else if (!strcmp(opt, "--bench-batch") && shard) {
            if ((rc = am_cli_int(&cli, 1, 4096, &o->bench_batch))) return rc;
        } else if (!strcmp(opt, "--max-batch") && shard) {
            if ((rc = am_cli_int(&cli, 1, 65536, &o->bench_max_batch))) return rc;
        } else if (!strcmp(opt, "--prompt-tokens") && shard) {
            if ((rc = am_cli_int(&cli, 1, 1 << 20, &o->bench_prompt_tokens))) return rc;
        } else if (!strcmp(opt, "--gen-tokens") && shard) {
            if ((rc = am_cli_int(&cli, 1, 1 << 20, &o->bench_gen_tokens))) return rc;
        } else {
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        }
    }
    if (!o->model_path) return am_cli_fail(&cli, "--model is required");
    if (o->bench) {
        if (o->prompt || o->prompt_ids) return am_cli_fail(&cli, "--bench makes its own prompt");
    } else {
        if (!o->prompt == !o->prompt_ids)
            return am_cli_fail(&cli, "give exactly one of --prompt and --prompt-ids");
    }
    if (o->chat && !o->prompt) return am_cli_fail(&cli, "--chat needs --prompt");
    if (o->system && !o->chat) return am_cli_fail(&cli, "--system needs --chat");
    o->gp.stop = o->stops;
    return 0;
}

int am_gen_cli_prompt(am_gen_cli *o, const char *cmd, const am_tokenizer *tok, int32_t vocab_size,
                      int32_t max_seq_len, int32_t **ids_out, int64_t *n_out) {
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    int rc;
    if (o->prompt_ids) {
        if ((rc = am_cli_parse_ids(cmd, "--prompt-ids", o->prompt_ids, AM_MAX_PROMPT_IDS, &ids,
                                   &n_ids)))
            return rc;
    } else if (o->chat) {
        am_chat_msg msgs[2] = {{"system", o->system}, {"user", o->prompt}};
        if ((rc =
                 am_chat_encode(tok, o->system ? msgs : msgs + 1, o->system ? 2 : 1, &ids, &n_ids)))
            return am_cli_error(cmd, rc);
    } else if ((rc = am_tokenizer_encode(tok, o->prompt, strlen(o->prompt), 1, &ids, &n_ids))) {
        return am_cli_error(cmd, rc);
    }
    for (int64_t i = 0; i < n_ids; i++) {
        if (ids[i] >= vocab_size) {
            fprintf(stderr,
                    "anymal %s: error: prompt token id %d (position %lld) is outside the "
                    "vocabulary of %d\n",
                    cmd, ids[i], (long long)i, vocab_size);
            am_free(ids);
            return 1;
        }
    }
    if (n_ids >= max_seq_len) {
        am_err_set(AM_ERANGE, "the prompt has %lld tokens; the model's context is %d",
                   (long long)n_ids, max_seq_len);
        am_free(ids);
        return am_cli_error(cmd, AM_ERANGE);
    }
    if (!o->gp.max_tokens) {
        o->gp.max_tokens = AM_GENERATE_DEFAULT_MAX_TOKENS;
        if (n_ids + o->gp.max_tokens > max_seq_len) o->gp.max_tokens = max_seq_len - (int32_t)n_ids;
    } else if (n_ids + o->gp.max_tokens > max_seq_len) {
        am_err_set(AM_ERANGE,
                   "prompt (%lld tokens) + --max-tokens %d exceeds the model's context of %d",
                   (long long)n_ids, o->gp.max_tokens, max_seq_len);
        am_free(ids);
        return am_cli_error(cmd, AM_ERANGE);
    }
    *ids_out = ids;
    *n_out = n_ids;
    return 0;
}

int am_gen_cli_print_text(void *user, int32_t id, const char *text, size_t len) {
    const am_gen_cli *o = user;
    (void)id;
    if (o && o->step_sleep_ms) am_gen_cli_sleep_ms(o->step_sleep_ms);
    if (o && o->print_ids) return 0;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void dump_logits(void *user, const float *logits, int32_t n_vocab) {
    FILE *f = user;
    fwrite(logits, sizeof(float), (size_t)n_vocab, f);
}

int am_gen_cli_dump_open(am_gen_cli *o, const char *cmd, FILE **f) {
    *f = NULL;
    if (!o->dump_logits) return 0;
    if (!(*f = fopen(o->dump_logits, "wb"))) {
        fprintf(stderr, "anymal %s: error: --dump-logits %s: cannot create: %s\n", cmd,
                o->dump_logits, strerror(errno));
        return 1;
    }
    o->gp.on_logits = dump_logits;
    o->gp.logits_user = *f;
    return 0;
}

void am_gen_cli_report(const am_gen_cli *o, const char *cmd, const am_gen_result *res) {
    if (o->print_ids) {
        for (int64_t i = 0; i < res->n_ids; i++)
            printf(i ? " %d" : "%d", res->ids[i]);
    }
    printf("\n");
    fflush(stdout);
    fprintf(
        stderr,
        "anymal %s: %lld prompt tokens in %.3f s, %lld tokens in %.3f s (%.2f tok/s), finish: %s\n",
        cmd, (long long)res->n_prompt, res->prefill_s, (long long)res->n_ids, res->decode_s,
        res->decode_s > 0 ? (double)(res->n_ids > 1 ? res->n_ids - 1 : 0) / res->decode_s : 0.0,
        am_finish_reason_name(res->finish));
}

void am_gen_cli_sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
