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

#include <string.h>

#define B_INST "[INST]"
#define E_INST "[/INST]"
#define B_SYS  "<<SYS>>\n"
#define E_SYS  "\n<</SYS>>\n\n"

/* Python's str.isspace(), all 29 code points: Unicode White_Space plus the
 * information separators U+001C..U+001F that Python also counts. */
static int py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python's str.strip() on UTF-8 bytes: a malformed byte is not whitespace. */
static void py_strip(const char *s, size_t len, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, j = len;
    while (i < j) {
        uint32_t cp;
        int n = am__utf8_decode(u + i, j - i, &cp);
        if (n == 0 || !py_isspace(cp)) break;
        i += (size_t)n;
    }
    while (j > i) {
        /* Find the start of the last code point (at most 4 bytes back). */
        size_t k = j - 1;
        while (k > i && j - k < 4 && (u[k] & 0xC0) == 0x80)
            k--;
        uint32_t cp;
        int n = am__utf8_decode(u + k, j - k, &cp);
        if (n == 0 || (size_t)n != j - k || !py_isspace(cp)) break;
        j = k;
    }
    *b = i;
    *e = j;
}

typedef struct chat_buf {
    char *d;
    size_t n, cap;
    int oom;
} chat_buf;

static void cb_put(chat_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *d = am_realloc(b->d, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->n, s, n);
    b->n += n;
}

static void cb_put_stripped(chat_buf *b, const char *s, size_t len) {
    size_t i, j;
    py_strip(s, len, &i, &j);
    cb_put(b, s + i, j - i);
}

typedef struct id_buf {
    int32_t *d;
    int64_t n, cap;
} id_buf;

/* Appends [BOS] + encode(text) (+ [EOS]). */
static int encode_turn(const am_tokenizer *t, const chat_buf *text, int add_eos, id_buf *out) {
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
    chat_buf text = {0};
    int rc = 0;
    for (int i = first; i < n && !rc; i += 2) {
        int last = i == n - 1;
        text.n = 0;
        cb_put(&text, B_INST " ", strlen(B_INST " "));
        if (i == first && first) {
            /* The folded message is stripped as a whole, like generation.py
             * strips B_SYS + system + E_SYS + user. */
            chat_buf merged = {0};
            cb_put(&merged, B_SYS, strlen(B_SYS));
            cb_put(&merged, msgs[0].content, strlen(msgs[0].content));
            cb_put(&merged, E_SYS, strlen(E_SYS));
            cb_put(&merged, msgs[i].content, strlen(msgs[i].content));
            if (merged.oom)
                text.oom = 1;
            else
                cb_put_stripped(&text, merged.d, merged.n);
            am_free(merged.d);
        } else {
            cb_put_stripped(&text, msgs[i].content, strlen(msgs[i].content));
        }
        cb_put(&text, " " E_INST, strlen(" " E_INST));
        if (!last) {
            cb_put(&text, " ", 1);
            cb_put_stripped(&text, msgs[i + 1].content, strlen(msgs[i + 1].content));
            cb_put(&text, " ", 1);
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
    static const char *const tags[] = {B_INST, E_INST, "<<SYS>>", "<</SYS>>"};
    for (int i = 0; i < n; i++) {
        if (!msgs[i].content) continue;
        for (size_t k = 0; k < sizeof tags / sizeof tags[0]; k++)
            if (strstr(msgs[i].content, tags[k])) return 1;
    }
    return 0;
}
