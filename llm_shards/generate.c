/* llm_shards/generate.c - prefill, sample, stop: the single-sequence loop. */
#include "llm_shards/generate.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"

#include <string.h>
#include <time.h>

const char *am_finish_reason_name(am_finish_reason r) {
    static const char *const names[] = {"length", "eos", "stop", "cancelled"};
    return (unsigned)r < 4 ? names[r] : "unknown";
}

void am_gen_result_fini(am_gen_result *r) {
    am_free(r->ids);
    am_free(r->text);
    memset(r, 0, sizeof *r);
}

static int text_append(am_gen_stream *s, const char *src, size_t n) {
    if (s->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap ? s->text_cap : 256;
        while (cap < s->text_len + n + 1)
            cap *= 2;
        char *d = am_realloc(s->text, cap);
        if (!d) return AM_ENOMEM;
        s->text = d;
        s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, src, n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
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

int am_gen_params_check(const am_gen_params *p) {
    int rc = am_sampling_check(&p->sampling);
    if (rc) return rc;
    if (p->max_tokens < 1)
        return am_err_set(AM_ERANGE, "max_tokens %d must be >= 1", p->max_tokens);
    if (p->n_stop < 0 || p->n_stop > AM_MAX_STOP_STRINGS)
        return am_err_set(AM_ERANGE, "%d stop strings (at most %d)", p->n_stop,
                          AM_MAX_STOP_STRINGS);
    for (int i = 0; i < p->n_stop; i++) {
        size_t sl = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (sl == 0 || sl > AM_MAX_STOP_BYTES)
            return am_err_set(AM_ERANGE, "stop string %d has %zu bytes (want 1..%d)", i, sl,
                              AM_MAX_STOP_BYTES);
    }
    return 0;
}

int am_gen_stream_init(am_gen_stream *s, const am_gen_params *p, const am_tokenizer *tok) {
    memset(s, 0, sizeof *s);
    s->p = p;
    s->tok = tok;
    s->eos = tok ? am_tokenizer_eos(tok) : AM_LLAMA_EOS;
    s->prev = -1;
    s->finish = AM_FINISH_LENGTH;
    s->ids = am_malloc((size_t)p->max_tokens * sizeof(int32_t));
    if (!s->ids || text_append(s, "", 0)) {
        am_gen_stream_fini(s);
        return AM_ENOMEM;
    }
    return 0;
}

void am_gen_stream_fini(am_gen_stream *s) {
    am_free(s->ids);
    am_free(s->text);
    memset(s, 0, sizeof *s);
}

int am_gen_stream_push(am_gen_stream *s, int32_t id, am_token_cb cb, void *user) {
    const am_gen_params *p = s->p;
    if (s->finished) return 0;
    if (id == s->eos && !p->ignore_eos) {
        s->finished = 1;
        s->finish = AM_FINISH_EOS;
        return 0;
    }
    s->ids[s->n_ids++] = id;
    size_t before = s->text_len;
    /* Ids past the tokenizer (rows a checkpoint pads its embedding table
     * with, e.g. LLaVA-1.5's 32064 for a 32000-piece tokenizer) have no text. */
    if (s->tok && id < am_tokenizer_n_vocab(s->tok)) {
        char piece[256];
        int nb = am_tokenizer_token_bytes(s->tok, s->prev, id, piece, sizeof piece);
        if (nb < 0) return nb;
        int rc = text_append(s, piece, (size_t)nb);
        if (rc) return rc;
    }
    s->prev = id;
    long stop_at = p->n_stop
                       ? find_stop(p, s->text, s->text_len,
                                   before > AM_MAX_STOP_BYTES ? before - AM_MAX_STOP_BYTES : 0)
                       : -1;
    size_t safe = s->text_len;
    if (stop_at >= 0) {
        s->text_len = (size_t)stop_at;
        s->text[s->text_len] = '\0';
        safe = s->text_len;
        s->finished = 1;
        s->finish = AM_FINISH_STOP;
    } else if (p->n_stop) {
        safe = s->text_len - held_back(p, s->text, s->text_len);
    }
    int cancel = cb && cb(user, id, s->text + s->emitted, safe - s->emitted);
    s->emitted = safe;
    if (cancel && !s->finished) {
        s->finished = 1;
        s->finish = AM_FINISH_CANCELLED;
    }
    if (!s->finished && s->n_ids == p->max_tokens) s->finished = 1; /* AM_FINISH_LENGTH */
    return 0;
}

int am_gen_stream_result(am_gen_stream *s, am_token_cb cb, void *user, am_gen_result *out) {
    memset(out, 0, sizeof *out);
    /* Bytes held back for a stop string that never came belong to the output. */
    if (cb && s->emitted < s->text_len)
        cb(user, -1, s->text + s->emitted, s->text_len - s->emitted);
    s->emitted = s->text_len;
    out->ids = am_malloc((size_t)(s->n_ids ? s->n_ids : 1) * sizeof(int32_t));
    out->text = am_malloc(s->text_len + 1);
    if (!out->ids || !out->text) {
        am_gen_result_fini(out);
        return AM_ENOMEM;
    }
    memcpy(out->ids, s->ids, (size_t)s->n_ids * sizeof(int32_t));
    memcpy(out->text, s->text, s->text_len + 1);
    out->n_ids = s->n_ids;
    out->text_len = s->text_len;
    out->finish = s->finish;
    return 0;
}

int am_generate(am_llama_ctx *ctx, const am_tokenizer *tok, const int32_t *prompt, int64_t n_prompt,
                const am_gen_params *p, am_token_cb cb, void *user, am_gen_result *out) {
    memset(out, 0, sizeof *out);
    int rc = am_gen_params_check(p);
    if (rc) return rc;
    if (p->n_stop && !tok) return am_err_set(AM_EINVAL, "stop strings need a tokenizer");
    if (n_prompt < 1) return am_err_set(AM_EINVAL, "the prompt is empty (it needs at least BOS)");
    /* The context checks positions itself; checking here makes an over-long
     * request fail before any compute. */
    const am_llama_model *m = am_llama_ctx_model(ctx);
    if (n_prompt + p->max_tokens > am_llama_ctx_size(ctx))
        return am_err_set(AM_ERANGE,
                          "prompt (%lld tokens) + max_tokens (%d) exceeds the context of %d",
                          (long long)n_prompt, p->max_tokens, am_llama_ctx_size(ctx));
    const int32_t V = m->cfg.vocab_size;

    am_sampler *sampler = NULL;
    am_gen_stream st;
    float *logits = am_aligned_alloc((size_t)V * sizeof(float));
    int32_t *history = am_malloc((size_t)(n_prompt + p->max_tokens) * sizeof(int32_t));
    if ((rc = am_gen_stream_init(&st, p, tok))) goto done;
    if (!logits || !history) {
        rc = AM_ENOMEM;
        goto done;
    }
    if ((rc = am_sampler_new(&p->sampling, V, &sampler))) goto done;
    memcpy(history, prompt, (size_t)n_prompt * sizeof(int32_t));
    int64_t n_hist = n_prompt;

    am_llama_ctx_reset(ctx);
    double t0 = am_now_s();
    if ((rc = am_llama_eval(ctx, prompt, NULL, (int32_t)n_prompt, logits, 0))) goto done;
    double t1 = am_now_s();
    if (p->on_logits) p->on_logits(p->logits_user, logits, V);
    for (;;) {
        int32_t id = am_sampler_sample(sampler, logits, history, n_hist);
        if ((rc = am_gen_stream_push(&st, id, cb, user))) goto done;
        if (st.n_ids > n_hist - n_prompt) history[n_hist++] = id;
        if (st.finished) break; /* no forward pass for a token nobody samples */
        if ((rc = am_llama_eval(ctx, &id, NULL, 1, logits, 0))) goto done;
        if (p->on_logits) p->on_logits(p->logits_user, logits, V);
    }
    double t2 = am_now_s();
    if ((rc = am_gen_stream_result(&st, cb, user, out))) goto done;
    out->n_prompt = n_prompt;
    out->prefill_s = t1 - t0;
    out->decode_s = t2 - t1;
done:
    am_gen_stream_fini(&st);
    am_free(history);
    am_aligned_free(logits);
    am_sampler_destroy(&sampler);
    if (rc) am_gen_result_fini(out);
    return rc;
}
