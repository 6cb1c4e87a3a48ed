/* tools/cmd_generate.c - `anymal generate`: one prompt through the decoder. */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "tools/cli.h"
#include "llm_shards/model_files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AM_GENERATE_DEFAULT_MAX_TOKENS 256
#define AM_MAX_PROMPT_IDS 1000000

static void help(void) {
    printf("usage: anymal generate --model PATH [--tokenizer PATH] (--prompt TEXT | --prompt-ids 1,2,3)\n"
           "                       [--max-tokens N] [--temperature T] [--top-p P] [--top-k K]\n"
           "                       [--repetition-penalty R] [--seed S] [--stop STR]... [--chat]\n"
           "                       [--system TEXT] [--print-ids] [--threads N]\n\n"
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
           "  --threads      compute threads (default: online CPUs)\n",
           AM_GENERATE_DEFAULT_MAX_TOKENS);
}

static int parse_ids(am_cli *cli, const char *s, int32_t **ids, int64_t *n) {
    int64_t cap = 16, count = 0;
    int32_t *v = am_malloc((size_t)cap * sizeof *v);
    if (!v) return AM_ENOMEM;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            am_free(v);
            return am_cli_fail(cli, "--prompt-ids wants comma-separated non-negative ids, bad at '%s'", p);
        }
        if (count == cap) {
            if (cap >= AM_MAX_PROMPT_IDS) {
                am_free(v);
                return am_cli_fail(cli, "--prompt-ids has more than %d ids", AM_MAX_PROMPT_IDS);
            }
            int32_t *nv = am_realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!nv) {
                am_free(v);
                return AM_ENOMEM;
            }
            v = nv;
        }
        v[count++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (!count) {
        am_free(v);
        return am_cli_fail(cli, "--prompt-ids is empty");
    }
    *ids = v;
    *n = count;
    return 0;
}

static int print_text(void *user, int32_t id, const char *text, size_t len) {
    (void)user;
    (void)id;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int am_cmd_generate(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, "generate", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *prompt_ids = NULL, *system = NULL;
    const char *stops[AM_MAX_STOP_STRINGS];
    am_gen_params gp = {.sampling = am_sampling_default(), .max_tokens = 0};
    int print_ids = 0, chat = 0, n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    const char *opt;
    int rc;
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        double d;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            return 0;
        } else if (!strcmp(opt, "--model")) {
            if (!(model_path = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--tokenizer")) {
            if (!(tok_path = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--prompt")) {
            if (!(prompt = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--prompt-ids")) {
            if (!(prompt_ids = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--system")) {
            if (!(system = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--max-tokens")) {
            if ((rc = am_cli_int(&cli, 1, 1 << 20, &v))) return rc;
            gp.max_tokens = (int32_t)v;
        } else if (!strcmp(opt, "--temperature")) {
            if ((rc = am_cli_float(&cli, 0, 100, &d))) return rc;
            gp.sampling.temperature = (float)d;
        } else if (!strcmp(opt, "--top-p")) {
            if ((rc = am_cli_float(&cli, 1e-6, 1, &d))) return rc;
            gp.sampling.top_p = (float)d;
        } else if (!strcmp(opt, "--top-k")) {
            if ((rc = am_cli_int(&cli, 0, 1 << 24, &v))) return rc;
            gp.sampling.top_k = (int32_t)v;
        } else if (!strcmp(opt, "--repetition-penalty")) {
            if ((rc = am_cli_float(&cli, 1e-3, 100, &d))) return rc;
            gp.sampling.repetition_penalty = (float)d;
        } else if (!strcmp(opt, "--seed")) {
            if ((rc = am_cli_u64(&cli, &gp.sampling.seed))) return rc;
        } else if (!strcmp(opt, "--stop")) {
            const char *s = am_cli_value(&cli);
            if (!s) return AM_EXIT_USAGE;
            if (gp.n_stop == AM_MAX_STOP_STRINGS) return am_cli_fail(&cli, "at most %d --stop strings", AM_MAX_STOP_STRINGS);
            if (!s[0]) return am_cli_fail(&cli, "--stop wants a non-empty string");
            stops[gp.n_stop++] = s;
        } else if (!strcmp(opt, "--print-ids")) {
            print_ids = 1;
        } else if (!strcmp(opt, "--chat")) {
            chat = 1;
        } else if (!strcmp(opt, "--threads")) {
            if ((rc = am_cli_int(&cli, 1, 1024, &v))) return rc;
            n_threads = (int)v;
        } else {
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        }
    }
    if (!model_path) return am_cli_fail(&cli, "--model is required");
    if (!prompt == !prompt_ids) return am_cli_fail(&cli, "give exactly one of --prompt and --prompt-ids");
    if (chat && !prompt) return am_cli_fail(&cli, "--chat needs --prompt");
    if (system && !chat) return am_cli_fail(&cli, "--system needs --chat");
    gp.stop = stops;

    am_cli_process_setup(n_threads);
    am_model_files mf = {0};
    am_backend *be = NULL;
    am_llama_ctx *ctx = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    am_gen_result res = {0};
    int status = 1;
    /* Token ids printed as ids need no tokenizer; everything else does. */
    int need_tok = prompt || !print_ids || gp.n_stop;
    if ((rc = am_model_files_open(&mf, model_path, tok_path, need_tok))) goto fail;
    if (prompt_ids) {
        if ((rc = parse_ids(&cli, prompt_ids, &ids, &n_ids))) {
            status = rc == AM_ENOMEM ? 1 : AM_EXIT_USAGE;
            goto out;
        }
    } else if (chat) {
        am_chat_msg msgs[2] = {{"system", system}, {"user", prompt}};
        if ((rc = am_chat_encode(mf.tok, system ? msgs : msgs + 1, system ? 2 : 1, &ids, &n_ids))) goto fail;
    } else if ((rc = am_tokenizer_encode(mf.tok, prompt, strlen(prompt), 1, &ids, &n_ids))) {
        goto fail;
    }
    const am_llama_config *cfg = &mf.model->cfg;
    for (int64_t i = 0; i < n_ids; i++) {
        if (ids[i] >= cfg->vocab_size) {
            fprintf(stderr, "anymal generate: error: prompt token id %d (position %lld) is outside the vocabulary of %d\n",
                    ids[i], (long long)i, cfg->vocab_size);
            goto out;
        }
    }
    if (n_ids >= cfg->max_seq_len) {
        am_err_set(AM_ERANGE, "the prompt has %lld tokens; the model's context is %d", (long long)n_ids, cfg->max_seq_len);
        rc = AM_ERANGE;
        goto fail;
    }
    if (!gp.max_tokens) {
        gp.max_tokens = AM_GENERATE_DEFAULT_MAX_TOKENS;
        if (n_ids + gp.max_tokens > cfg->max_seq_len) gp.max_tokens = cfg->max_seq_len - (int32_t)n_ids;
    } else if (n_ids + gp.max_tokens > cfg->max_seq_len) {
        am_err_set(AM_ERANGE, "prompt (%lld tokens) + --max-tokens %d exceeds the model's context of %d",
                   (long long)n_ids, gp.max_tokens, cfg->max_seq_len);
        rc = AM_ERANGE;
        goto fail;
    }
    if ((rc = am_cpu_backend_new(n_threads, &be))) goto fail;
    int32_t n_ctx = (int32_t)n_ids + gp.max_tokens;
    if ((rc = am_llama_ctx_new(mf.model, be, n_ctx, n_ids < 512 ? (int32_t)n_ids : 512, &ctx))) goto fail;
    if ((rc = am_generate(ctx, mf.tok, ids, n_ids, &gp, print_ids ? NULL : print_text, NULL, &res))) goto fail;
    if (print_ids) {
        for (int64_t i = 0; i < res.n_ids; i++) printf(i ? " %d" : "%d", res.ids[i]);
    }
    printf("\n");
    fprintf(stderr, "anymal generate: %lld prompt tokens in %.3f s, %lld tokens in %.3f s (%.2f tok/s), finish: %s\n",
            (long long)res.n_prompt, res.prefill_s, (long long)res.n_ids, res.decode_s,
            res.decode_s > 0 ? (double)(res.n_ids > 1 ? res.n_ids - 1 : 0) / res.decode_s : 0.0,
            am_finish_reason_name(res.finish));
    status = 0;
    goto out;
fail:
    status = am_cli_error("generate", rc);
out:
    am_gen_result_fini(&res);
    am_free(ids);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_model_files_close(&mf);
    return status;
}
