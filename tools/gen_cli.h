/* tools/gen_cli.h - what `anymal generate` and `anymal-shard` share: options, prompt, output.
 *
 * Both commands take the same options and print the same output (the text,
 * or the ids with --print-ids, on stdout; one summary line on stderr), so
 * that `anymal generate --tp P` can hand its arguments to P `anymal-shard`
 * ranks under mpirun unchanged. Parsing errors print a message naming the
 * option and give AM_EXIT_USAGE.
 */
#ifndef AM_GEN_CLI_H
#define AM_GEN_CLI_H

#include "core/dtype.h"
#include "llm_shards/generate.h"
#include "llm_shards/tokenizer.h"

#include <stdint.h>
#include <stdio.h>

#define AM_GENERATE_DEFAULT_MAX_TOKENS 256
#define AM_MAX_PROMPT_IDS              1000000
#define AM_TP_MAX_CLI                  64 /* the largest --tp `anymal generate` launches */

typedef struct am_gen_cli {
    const char *model_path, *tok_path, *prompt, *prompt_ids, *system;
    const char *stops[AM_MAX_STOP_STRINGS];
    am_gen_params gp;
    int print_ids, chat;
    int n_threads;            /* 0: the command's default */
    const char *device;       /* --device cpu|cuda|cuda:N (NULL: cpu), see core/backend_open.h */
    int tp;                   /* --tp P (generate: 1 = in process) */
    am_dtype allreduce_dtype; /* --allreduce-dtype */
    const char *dump_logits;  /* --dump-logits FILE: every step's logits, f32 rows */
    int mem_report;           /* --mem-report: per-rank memory after load and after generating */
    int idle_ms;       /* --idle-ms N: the leader waits N ms after loading (idle-CPU checks) */
    int step_sleep_ms; /* --step-sleep-ms N: the leader sleeps N ms per token (failure tests) */
    /* anymal-shard --bench: prefill/decode throughput instead of a prompt. */
    int bench;
    int64_t bench_prompt_tokens, bench_gen_tokens;
    int64_t bench_batch;     /* --bench-batch B: the batching benchmark (tools/batch_bench.h) */
    int64_t bench_max_batch; /* --max-batch R: its rows per step */
} am_gen_cli;

/* Parses argv (argv[0] is the command). cmd names it in messages; shard != 0
 * accepts the anymal-shard-only options (--bench ...) and refuses --tp.
 * Returns 0, AM_EXIT_USAGE (message printed), or -1 when --help was printed. */
int am_gen_cli_parse(am_gen_cli *o, const char *cmd, int shard, int argc, char **argv);

/* The token ids of the prompt (--prompt-ids, --prompt with or without
 * --chat) checked against the model: vocabulary, context, and --max-tokens
 * (defaulted and clamped here). *ids is owned by the caller (am_free).
 * Returns 0, AM_EXIT_USAGE, or 1 (message printed). */
int am_gen_cli_prompt(am_gen_cli *o, const char *cmd, const am_tokenizer *tok, int32_t vocab_size,
                      int32_t max_seq_len, int32_t **ids, int64_t *n_ids);

/* The am_generate callback (user = the am_gen_cli): streams the text to
 * stdout unless --print-ids, and sleeps --step-sleep-ms. */
int am_gen_cli_print_text(void *user, int32_t id, const char *text, size_t len);

/* Opens --dump-logits and hooks it into o->gp (every step's logits appended
 * as raw f32). *f stays open until the caller closes it. 0 or 1 (printed). */
int am_gen_cli_dump_open(am_gen_cli *o, const char *cmd, FILE **f);

/* Prints the result (ids line or the final newline) on stdout and the summary on stderr. */
void am_gen_cli_report(const am_gen_cli *o, const char *cmd, const am_gen_result *res);

/* Sleeps ms milliseconds. */
void am_gen_cli_sleep_ms(int ms);

#endif
