/* llm_shards/tokenizer/chat.c - the LLaMA-2-chat prompt template.
 *
 * A transcription of meta-llama/llama llama/generation.py chat_completion:
 * an optional system message is folded into the first user message as
 * "<<SYS>>\n{system}\n<</SYS>>\n\n{user}"; each finished (user, assistant)
 * pair is encoded as BOS + "[INST] {user.strip()} [/INST] {answer.strip()} "
 * + EOS and the final user message as BOS + "[INST] {user.strip()} [/INST]".
 * BOS/EOS are ids, never text, so a user cannot forge them by typing "<s>".
 * strip() is Python's, i.e. it removes Unicode whitespace, not just ASCII.
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/text.h"

#include <string.h>

/* Appends s[0..len) stripped as Python's str.strip() does. */
static void put_stripped(am_strbuf *b, const char *s, size_t len) {
    size_t i, j;
    am_py_strip(s, len, &i, &j);
    am_strbuf_put(b, s + i, j - i);
}

typedef struct id_buf {
    int32_t *d;
    int64_t n, cap;
} id_buf;

/* Appends [BOS] + encode(text) (+ [EOS]). */
static int encode_turn(const am_tokenizer *t, const am_strbuf *text, int add_eos, id_buf *out) {
    int32_t *ids;
    int64_t n;
    int rc = am_tokenizer_encode(t, text->d, text->n, 1, &ids, &n);
    if (rc) return rc;
    if (out->n + n + 1 > out->cap) {
        int64_t cap = out->cap ? out->cap * 2 : 256;
        while (cap < out->n + n + 1)
            cap *= 2;
        int32_t *d = am_realloc(out->d, (size_t)cap * sizeof *d);
        if (!d) {
            am_free(ids);
            return am_err_set(AM_ENOMEM, "chat: out of memory");
        }
        out->d = d;
        out->cap = cap;
    }
    memcpy(out->d + out->n, ids, (size_t)n * sizeof *ids);
    out->n += n;
    if (add_eos) out->d[out->n++] = t->eos;
    am_free(ids);
    return 0;
}

int am_chat_encode(const am_tokenizer *t, const am_chat_msg *msgs, int n, int32_t **ids,
                   int64_t *n_ids) {
    if (!t || !ids || !n_ids || (!msgs && n)) return am_err_set(AM_EINVAL, "chat: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (t->bos < 0 || t->eos < 0)
        return am_err_set(AM_EINVAL, "chat: the vocabulary has no BOS/EOS pieces");
    if (n <= 0) return am_err_set(AM_EINVAL, "chat: empty dialog");
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return am_err_set(AM_EINVAL, "chat: message %d has no role or content", i);
    }
    /* The same checks generation.py asserts, after folding in the system
     * message: users at even positions, assistants at odd ones, a user last. */
    int first = strcmp(msgs[0].role, "system") == 0 ? 1 : 0;
    if (first && n == 1)
        return am_err_set(AM_EINVAL, "chat: a system message must be followed by a user message");
    for (int i = first; i < n; i++) {
        const char *want = (i - first) % 2 == 0 ? "user" : "assistant";
        if (strcmp(msgs[i].role, want) != 0)
            return am_err_set(AM_EINVAL,
                              "chat: message %d has role '%s', expected '%s' (roles must be an "
                              "optional 'system', then 'user' and 'assistant' alternating)",
                              i, msgs[i].role, want);
    }
    if ((n - first) % 2 == 0)
        return am_err_set(AM_EINVAL, "chat: the last message must be from 'user', got '%s'",
                          msgs[n - 1].role);

    id_buf out = {0};
    am_strbuf text = {0};
    int rc = 0;
    for (int i = first; i < n && !rc; i += 2) {
        int last = i == n - 1;
        text.n = 0;
        am_strbuf_puts(&text, AM_CHAT_B_INST " ");
        if (i == first && first) {
            /* The folded message is stripped as a whole, like generation.py
             * strips B_SYS + system + E_SYS + user. */
            am_strbuf merged = {0};
            am_strbuf_puts(&merged, AM_CHAT_B_SYS);
            am_strbuf_puts(&merged, msgs[0].content);
            am_strbuf_puts(&merged, AM_CHAT_E_SYS);
            am_strbuf_puts(&merged, msgs[i].content);
            if (merged.oom)
                text.oom = 1;
            else
                put_stripped(&text, merged.d, merged.n);
            am_free(merged.d);
        } else {
            put_stripped(&text, msgs[i].content, strlen(msgs[i].content));
        }
        am_strbuf_puts(&text, " " AM_CHAT_E_INST);
        if (!last) {
            am_strbuf_puts(&text, " ");
            put_stripped(&text, msgs[i + 1].content, strlen(msgs[i + 1].content));
            am_strbuf_puts(&text, " ");
        }
        if (text.oom) {
            rc = am_err_set(AM_ENOMEM, "chat: out of memory");
            break;
        }
        rc = encode_turn(t, &text, !last, &out);
    }
    am_free(text.d);
    if (rc) {
        am_free(out.d);
        return rc;
    }
    *ids = out.d;
    *n_ids = out.n;
    return 0;
}

int am_chat_has_special_tags(const am_chat_msg *msgs, int n) {
    for (int i = 0; i < n; i++)
        if (msgs[i].content && am_chat_has_tag(msgs[i].content)) return 1;
    return 0;
}
