/* llm_shards/generate.c - prefill, sample, stop: the single-sequence loop. */
#include "llm_shards/generate.h"

#include "core/alloc.h"
#include "core/error.h"

#include <string.h>
#include <time.h>

double am_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *am_finish_reason_name(am_finish_reason r) {
    static const char *const names[] = {"length", "eos", "stop", "cancelled"};
    return (unsigned)r < 4 ? names[r] : "unknown";
}

void am_gen_result_fini(am_gen_result *r) {
    am_free(r->ids);
    am_free(r->text);
    memset(r, 0, sizeof *r);
}

/* Growable byte buffer for the output text. */
typedef struct {
    char *data;
    size_t len, cap;
} text_buf;

static int text_append(text_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = am_realloc(b->data, cap);
        if (!d) return AM_ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Position of the first stop string in text[from..], or -1. */
static long find_stop(const am_gen_params *p, const char *text, size_t len, size_t from) {
    long best = -1;
    for (int i = 0; i < p->n_stop; i++) {
        size_t sl = strlen(p->stop[i]);
        for (size_t at = from; at + sl <= len; at++) {
            if (memcmp(text + at, p->stop[i], sl) == 0) {
                if (best < 0 || (long)at < best) best = (long)at;
                break;
            }
        }
    }
    return best;
}

/* Bytes at the end of text that could still grow into a stop string. */
static size_t held_back(const am_gen_params *p, const char *text, size_t len) {
    size_t hold = 0;
    for (int i = 0; i < p->n_stop; i++) {
        size_t sl = strlen(p->stop[i]);
        for (size_t k = sl - 1; k > hold; k--) {
            if (k <= len && memcmp(text + len - k, p->stop[i], k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

static int check_params(const am_gen_params *p) {
    int rc = am_sampling_check(&p->sampling);
    if (rc) return rc;
    if (p->max_tokens < 1) return am_err_set(AM_ERANGE, "max_tokens %d must be >= 1", p->max_tokens);
    if (p->n_stop < 0 || p->n_stop > AM_MAX_STOP_STRINGS)
        return am_err_set(AM_ERANGE, "%d stop strings (at most %d)", p->n_stop, AM_MAX_STOP_STRINGS);
    for (int i = 0; i < p->n_stop; i++) {
        size_t sl = strlen(p->stop[i]);
        if (sl == 0 || sl > AM_MAX_STOP_BYTES)
            return am_err_set(AM_ERANGE, "stop string %d has %zu bytes (want 1..%d)", i, sl, AM_MAX_STOP_BYTES);
    }
    return 0;
}

int am_generate(am_llama_ctx *ctx, const am_tokenizer *tok, const int32_t *prompt, int64_t n_prompt,
                const am_gen_params *p, am_token_cb cb, void *user, am_gen_result *out) {
    memset(out, 0, sizeof *out);
    int rc = check_params(p);
    if (rc) return rc;
    if (p->n_stop && !tok) return am_err_set(AM_EINVAL, "stop strings need a tokenizer");
    if (n_prompt < 1) return am_err_set(AM_EINVAL, "the prompt is empty (it needs at least BOS)");
    /* The context checks positions itself; checking here makes an over-long
     * request fail before any compute. */
    const am_llama_model *m = am_llama_ctx_model(ctx);
    if (n_prompt + p->max_tokens > am_llama_ctx_size(ctx))
        return am_err_set(AM_ERANGE, "prompt (%lld tokens) + max_tokens (%d) exceeds the context of %d",
                          (long long)n_prompt, p->max_tokens, am_llama_ctx_size(ctx));
    const int32_t V = m->cfg.vocab_size;

    am_sampler *sampler = NULL;
    float *logits = am_aligned_alloc((size_t)V * sizeof(float));
    int32_t *history = am_malloc((size_t)(n_prompt + p->max_tokens) * sizeof(int32_t));
    text_buf text = {0};
    if (!logits || !history) {
        rc = AM_ENOMEM;
        goto done;
    }
    if ((rc = am_sampler_new(&p->sampling, V, &sampler))) goto done;
    memcpy(history, prompt, (size_t)n_prompt * sizeof(int32_t));
    int64_t n_hist = n_prompt;
    const int32_t eos = tok ? am_tokenizer_eos(tok) : AM_LLAMA_EOS;

    am_llama_ctx_reset(ctx);
    double t0 = am_now_s();
    if ((rc = am_llama_eval(ctx, prompt, NULL, (int32_t)n_prompt, logits, 0))) goto done;
    double t1 = am_now_s();
    if (p->on_logits) p->on_logits(p->logits_user, logits, V);
    out->prefill_s = t1 - t0;
    out->n_prompt = n_prompt;
    out->finish = AM_FINISH_LENGTH;

    size_t emitted = 0;
    int32_t prev = -1;
    for (int32_t step = 0; step < p->max_tokens; step++) {
        int32_t id = am_sampler_sample(sampler, logits, history, n_hist);
        if (id == eos && !p->ignore_eos) {
            out->finish = AM_FINISH_EOS;
            break;
        }
        history[n_hist++] = id;
        size_t before = text.len;
        /* Ids past the tokenizer (rows a checkpoint pads its embedding table
         * with, e.g. LLaVA-1.5's 32064 for a 32000-piece tokenizer) have no text. */
        if (tok && id < am_tokenizer_n_vocab(tok)) {
            char piece[256];
            int nb = am_tokenizer_token_bytes(tok, prev, id, piece, sizeof piece);
            if (nb < 0) {
                rc = nb;
                goto done;
            }
            if ((rc = text_append(&text, piece, (size_t)nb))) goto done;
        }
        prev = id;
        long stop_at = p->n_stop ? find_stop(p, text.data, text.len, before > AM_MAX_STOP_BYTES ? before - AM_MAX_STOP_BYTES : 0) : -1;
        size_t safe = text.len;
        if (stop_at >= 0) {
            text.len = (size_t)stop_at;
            text.data[text.len] = '\0';
            safe = text.len;
            out->finish = AM_FINISH_STOP;
        } else if (p->n_stop) {
            safe = text.len - held_back(p, text.data, text.len);
        }
        if (cb && cb(user, id, text.data ? text.data + emitted : "", safe - emitted)) {
            emitted = safe;
            out->finish = AM_FINISH_CANCELLED;
            break;
        }
        emitted = safe;
        if (out->finish == AM_FINISH_STOP) break;
        if (step + 1 == p->max_tokens) break; /* no forward pass for a token nobody samples */
        if ((rc = am_llama_eval(ctx, &id, NULL, 1, logits, 0))) goto done;
        if (p->on_logits) p->on_logits(p->logits_user, logits, V);
    }
    /* Bytes held back for a stop string that never came belong to the output. */
    if (cb && emitted < text.len) cb(user, -1, text.data + emitted, text.len - emitted);
    out->decode_s = am_now_s() - t1;
    out->n_ids = n_hist - n_prompt;
    out->ids = am_malloc((size_t)(out->n_ids ? out->n_ids : 1) * sizeof(int32_t));
    if (!out->ids) {
        rc = AM_ENOMEM;
        goto done;
    }
    memcpy(out->ids, history + n_prompt, (size_t)out->n_ids * sizeof(int32_t));
    if (!text.data && (rc = text_append(&text, "", 0))) goto done;
    out->text = text.data;
    out->text_len = text.len;
    text.data = NULL;
done:
    am_free(text.data);
    am_free(history);
    am_aligned_free(logits);
    am_sampler_destroy(&sampler);
    if (rc) am_gen_result_fini(out);
    return rc;
}
