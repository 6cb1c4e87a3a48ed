/* llm_shards/generate.h - one prompt in, tokens out: the single-sequence generation loop.
 *
 * Prefills the prompt, then samples up to max_tokens tokens, stopping early at
 * EOS or when the output text contains one of the stop strings (the text is
 * cut before the stop string). Text is streamed through a callback; bytes that
 * might still turn out to begin a stop string are held back until they cannot.
 */
#ifndef AM_GENERATE_H
#define AM_GENERATE_H

#include "llm_shards/llama.h"
#include "llm_shards/sampler.h"
#include "llm_shards/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#define AM_MAX_STOP_STRINGS 16
#define AM_MAX_STOP_BYTES   256

typedef struct am_gen_params {
    am_sampling_params sampling;
    int32_t max_tokens;      /* >= 1 */
    const char *const *stop; /* n_stop stop strings (not copied) */
    int n_stop;
    int ignore_eos; /* keep going past EOS (benchmarks) */
    /* Optional: sees the logits (n_vocab) of every forward pass, before the
     * sampler modifies them: the prompt's last position, then each step. */
    void (*on_logits)(void *user, const float *logits, int32_t n_vocab);
    void *logits_user;
} am_gen_params;

typedef enum {
    AM_FINISH_LENGTH = 0,
    AM_FINISH_EOS,
    AM_FINISH_STOP,
    AM_FINISH_CANCELLED
} am_finish_reason;
const char *am_finish_reason_name(am_finish_reason r); /* "length", "eos", "stop", "cancelled" */

/* Called with each new piece of output text (may be empty when the token's
 * bytes are held back) and the token id; return non-zero to cancel. */
typedef int (*am_token_cb)(void *user, int32_t id, const char *text, size_t len);

typedef struct am_gen_result {
    int32_t *ids; /* generated ids, EOS excluded (owned; am_free) */
    int64_t n_ids;
    char *text; /* generated text, NUL-terminated, cut at a stop string (owned) */
    size_t text_len;
    am_finish_reason finish;
    int64_t n_prompt;
    double prefill_s; /* wall time of the prompt's forward pass */
    double decode_s;  /* wall time of all later steps */
} am_gen_result;

void am_gen_result_fini(am_gen_result *r);

/* Checks the parameters; the message names the one that is wrong. */
int am_gen_params_check(const am_gen_params *p);

/* The output side of one sequence, shared by am_generate and the batching
 * scheduler: takes each sampled id and decides whether the sequence ends
 * (EOS, max_tokens, a stop string, or the callback asking to cancel), builds
 * the text and streams it, holding back bytes that may begin a stop string. */
typedef struct am_gen_stream {
    const am_gen_params *p;  /* borrowed */
    const am_tokenizer *tok; /* borrowed; may be NULL */
    int32_t eos;
    int32_t prev; /* the previous id (for the tokenizer's leading-space rule) */
    int32_t *ids; /* (max_tokens) generated ids, EOS excluded */
    int64_t n_ids;
    char *text; /* generated text, NUL-terminated */
    size_t text_len, text_cap;
    size_t emitted; /* bytes of text given to the callback */
    int finished;
    am_finish_reason finish;
} am_gen_stream;

/* 0 or AM_ENOMEM. p and tok are borrowed for the stream's life. */
int am_gen_stream_init(am_gen_stream *s, const am_gen_params *p, const am_tokenizer *tok);
void am_gen_stream_fini(am_gen_stream *s);
/* Takes the next sampled id; calls cb with the text that is safe to show.
 * Sets s->finished (and s->finish) when the sequence ends. 0 or an error from
 * the tokenizer / AM_ENOMEM. */
int am_gen_stream_push(am_gen_stream *s, int32_t id, am_token_cb cb, void *user);
/* Ends the stream: bytes held back for a stop string that never came go to
 * cb (id -1), and out receives copies of the ids and text plus the finish
 * reason (prompt and timing fields are left 0). 0 or AM_ENOMEM. */
int am_gen_stream_result(am_gen_stream *s, am_token_cb cb, void *user, am_gen_result *out);

/* Resets ctx and generates. The tokenizer may be NULL (no text, no stop
 * strings: ids only). ctx may be a tensor-parallel group context on its
 * leader (tp.h): the whole group then runs every step. Errors: AM_EINVAL for bad parameters,
 * AM_ERANGE when prompt + max_tokens exceeds the context (checked before any compute). */
int am_generate(am_llama_ctx *ctx, const am_tokenizer *tok, const int32_t *prompt, int64_t n_prompt,
                const am_gen_params *p, am_token_cb cb, void *user, am_gen_result *out);

#endif
