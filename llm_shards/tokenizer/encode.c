/* llm_shards/tokenizer/encode.c - SentencePiece BPE encoding and decoding.
 *
 * A C port of what sentencepiece does for a BPE model with identity
 * normalization, step for step, because token ids must match the reference
 * exactly (a model fed different ids sees a different prompt):
 *   1. Normalizer::Normalize: malformed UTF-8 bytes become U+FFFD one byte at
 *      a time; optional whitespace folding; a dummy '\u2581' prefix; ' ' ->
 *      '\u2581'.
 *   2. bpe::Model::SampleEncode: split into characters (USER_DEFINED pieces
 *      matched longest-first and frozen), then repeatedly merge the adjacent
 *      pair whose concatenation is a NORMAL/USER_DEFINED/UNUSED piece with the
 *      highest score, leftmost on ties, using a priority queue with lazy
 *      invalidation (O(n log n)); UNUSED results are split back into the
 *      pair that formed them.
 *   3. SentencePieceProcessor::Encode: unknown symbols go to byte fallback
 *      (<0xXX> per byte) or, without it, runs of them become one <unk>.
 * Decoding follows SentencePieceProcessor::Decode.
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <string.h>

static const char kReplacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* ---- normalization ------------------------------------------------------ */

typedef struct tok_buf {
    char *d;
    size_t n;
} tok_buf;

static void put(tok_buf *b, const void *p, size_t n) {
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

/* out must hold 3 * len + 3 bytes: every input byte becomes at most 3 bytes
 * (' ' -> U+2581, a malformed byte -> U+FFFD), plus the dummy prefix. */
static size_t normalize(const am_tokenizer *t, const unsigned char *in, size_t len, char *out) {
    tok_buf b = {out, 0};
    const char *ws = t->escape_ws ? AM__TOK_SPACE : " ";
    size_t ws_len = t->escape_ws ? AM__TOK_SPACE_LEN : 1;
    size_t i = 0;
    if (t->remove_extra_ws) {
        while (i < len && in[i] == ' ')
            i++;
    }
    if (i == len) return 0; /* empty or only whitespace: no dummy prefix either */
    if (t->add_dummy_prefix) put(&b, ws, ws_len);
    int prev_space = t->remove_extra_ws;
    while (i < len) {
        uint32_t cp;
        int n = am_utf8_decode(in + i, len - i, &cp);
        if (n == 0) {
            put(&b, kReplacement, 3);
            prev_space = 0;
            i++;
            continue;
        }
        if (n == 1 && in[i] == ' ') {
            if (!prev_space) put(&b, ws, ws_len);
            prev_space = t->remove_extra_ws;
        } else {
            put(&b, in + i, (size_t)n);
            prev_space = 0;
        }
        i += (size_t)n;
    }
    if (t->remove_extra_ws) {
        while (b.n >= ws_len && memcmp(b.d + b.n - ws_len, ws, ws_len) == 0)
            b.n -= ws_len;
    }
    return b.n;
}

/* ---- BPE ---------------------------------------------------------------- */

typedef struct sym {
    int32_t prev, next;  /* -1 at the ends */
    uint32_t start, len; /* into the normalized text; len 0 once merged away */
    int freeze;
} sym;

typedef struct pair {
    float score;
    int32_t left, right;
    uint32_t size; /* left.len + right.len when pushed; detects stale entries */
} pair;

/* The order of sentencepiece's SymbolPairComparator: higher score first, then
 * the smaller left index. */
static int pair_before(const pair *a, const pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct heap {
    pair *a;
    size_t n, cap;
} heap;

static int heap_push(heap *h, pair p) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        pair *a = am_realloc(h->a, cap * sizeof *a);
        if (!a) return AM_ENOMEM;
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h->a[parent])) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = p;
    return 0;
}

static pair heap_pop(heap *h) {
    pair top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->a[c + 1], &h->a[c])) c++;
        if (!pair_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

/* rev_merge of SampleEncode, keyed by the id of an UNUSED piece: the last
 * (left, right) split pushed for it. Allocated only when an UNUSED piece is
 * reachable, which never happens for LLaMA. */
typedef struct rev_entry {
    int32_t id; /* -1 empty */
    uint32_t start, left_len, right_len;
} rev_entry;

typedef struct rev_map {
    rev_entry *e;
    uint32_t mask, n;
} rev_map;

static int rev_put(rev_map *m, int32_t id, uint32_t start, uint32_t ll, uint32_t rl) {
    if (!m->e || (m->n + 1) * 2 > m->mask + 1) {
        uint32_t cap = m->e ? (m->mask + 1) * 2 : 64;
        rev_entry *e = am_malloc((size_t)cap * sizeof *e);
        if (!e) return AM_ENOMEM;
        for (uint32_t i = 0; i < cap; i++)
            e[i].id = -1;
        if (m->e) {
            for (uint32_t i = 0; i <= m->mask; i++) {
                if (m->e[i].id < 0) continue;
                uint32_t j = ((uint32_t)m->e[i].id * 2654435761u) & (cap - 1);
                while (e[j].id >= 0)
                    j = (j + 1) & (cap - 1);
                e[j] = m->e[i];
            }
            am_free(m->e);
        }
        m->e = e;
        m->mask = cap - 1;
    }
    uint32_t j = ((uint32_t)id * 2654435761u) & m->mask;
    while (m->e[j].id >= 0 && m->e[j].id != id)
        j = (j + 1) & m->mask;
    if (m->e[j].id < 0) m->n++;
    m->e[j] = (rev_entry){id, start, ll, rl};
    return 0;
}

static const rev_entry *rev_get(const rev_map *m, int32_t id) {
    if (!m->e) return NULL;
    uint32_t j = ((uint32_t)id * 2654435761u) & m->mask;
    while (m->e[j].id >= 0) {
        if (m->e[j].id == id) return &m->e[j];
        j = (j + 1) & m->mask;
    }
    return NULL;
}

typedef struct bpe_ctx {
    const am_tokenizer *t;
    const char *text;
    sym *s;
    heap h;
    rev_map rev;
} bpe_ctx;

/* MaybeAddNewSymbolPair. */
static int maybe_add(bpe_ctx *c, int32_t l, int32_t r) {
    if (l < 0 || r < 0 || c->s[l].freeze || c->s[r].freeze) return 0;
    uint32_t size = c->s[l].len + c->s[r].len;
    int32_t id = am__tok_find_normal(c->t, c->text + c->s[l].start, size);
    if (id < 0) return 0;
    pair p = {c->t->scores[id], l, r, size};
    if (heap_push(&c->h, p)) return AM_ENOMEM;
    if (c->t->types[id] == AM_PIECE_UNUSED &&
        rev_put(&c->rev, id, c->s[l].start, c->s[l].len, c->s[r].len))
        return AM_ENOMEM;
    return 0;
}

/* Output being built, with Encode's handling of unknown pieces. */
typedef struct ids_out {
    int32_t *ids;
    int64_t n;
    int prev_unk;
} ids_out;

static void emit(const am_tokenizer *t, ids_out *o, const char *w, uint32_t len, int32_t id) {
    int is_unk = id == t->unk;
    if (is_unk && t->byte_fallback) {
        for (uint32_t k = 0; k < len; k++)
            o->ids[o->n++] = t->byte_id[(unsigned char)w[k]];
    } else if (!(is_unk && o->prev_unk)) {
        o->ids[o->n++] = id; /* a run of unknowns is one <unk> */
    }
    o->prev_unk = is_unk;
}

/* resegment(): splits UNUSED pieces back into the pair that formed them. */
static int resegment(bpe_ctx *c, ids_out *o, uint32_t start, uint32_t len) {
    uint32_t stack_local[64][2];
    uint32_t(*stack)[2] = stack_local;
    size_t sp = 0, cap = 64;
    stack[sp][0] = start;
    stack[sp][1] = len;
    sp++;
    int rc = 0;
    while (sp > 0) {
        sp--;
        uint32_t st = stack[sp][0], ln = stack[sp][1];
        const char *w = c->text + st;
        int32_t id = am__tok_piece_to_id(c->t, w, ln);
        const rev_entry *r = NULL;
        if (id >= 0 && c->t->types[id] == AM_PIECE_UNUSED) r = rev_get(&c->rev, id);
        if (!r) {
            emit(c->t, o, w, ln, id);
            continue;
        }
        if (sp + 2 > cap) {
            size_t ncap = cap * 2;
            uint32_t(*ns)[2] = am_malloc(ncap * sizeof *ns);
            if (!ns) {
                rc = AM_ENOMEM;
                break;
            }
            memcpy(ns, stack, sp * sizeof *ns);
            if (stack != stack_local) am_free(stack);
            stack = ns;
            cap = ncap;
        }
        /* The split recorded for this piece may come from another place in
         * the text with the same bytes; take its lengths, our position. */
        stack[sp][0] = st + r->left_len; /* right part, popped second */
        stack[sp][1] = r->right_len;
        sp++;
        stack[sp][0] = st; /* left part, popped first */
        stack[sp][1] = r->left_len;
        sp++;
    }
    if (stack != stack_local) am_free(stack);
    return rc;
}

/* Length of the symbol at p: a USER_DEFINED piece (longest) or one character. */
static uint32_t prefix_match(const am_tokenizer *t, const char *p, size_t left, int *freeze) {
    *freeze = 0;
    for (int k = 0; k < t->n_user_lens; k++) {
        uint32_t l = t->user_lens[k];
        if (l > left) continue;
        int32_t id = am__tok_find_normal(t, p, l);
        if (id >= 0 && t->types[id] == AM_PIECE_USER_DEFINED) {
            *freeze = 1;
            return l;
        }
    }
    /* OneCharLen: the normalized text is valid UTF-8 by construction. */
    static const uint8_t one_char_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    uint32_t n = one_char_len[(unsigned char)p[0] >> 4];
    return n < left ? n : (uint32_t)left;
}

int am_tokenizer_encode(const am_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids, int64_t *n_ids) {
    if (!t || !ids || !n_ids || (!text && len))
        return am_err_set(AM_EINVAL, "am_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (len > AM_TOKENIZER_MAX_TEXT_BYTES)
        return am_err_set(AM_ERANGE, "tokenizer: text of %zu bytes (limit %zu)", len,
                          AM_TOKENIZER_MAX_TEXT_BYTES);
    if (add_bos && t->bos < 0)
        return am_err_set(AM_EINVAL, "tokenizer: add_bos requested but the vocabulary has no BOS");

    int rc = 0;
    bpe_ctx c = {0};
    c.t = t;
    ids_out o = {0};
    char *norm = am_malloc(3 * len + 4);
    if (!norm) return am_err_set(AM_ENOMEM, "tokenizer: out of memory for %zu bytes", len);
    size_t nlen = normalize(t, (const unsigned char *)text, len, norm);
    c.text = norm;
    /* At most one id per normalized byte (byte fallback emits one per byte of
     * an unknown symbol) plus BOS. */
    o.ids = am_malloc((nlen + 2) * sizeof *o.ids);
    c.s = am_malloc((nlen + 1) * sizeof *c.s);
    if (!o.ids || !c.s) {
        rc = AM_ENOMEM;
        goto done;
    }
    if (add_bos) o.ids[o.n++] = t->bos;

    int32_t n_sym = 0;
    for (size_t p = 0; p < nlen;) {
        int freeze;
        uint32_t l = prefix_match(t, norm + p, nlen - p, &freeze);
        sym *s = &c.s[n_sym];
        s->start = (uint32_t)p;
        s->len = l;
        s->freeze = freeze;
        s->prev = n_sym - 1;
        p += l;
        s->next = p < nlen ? n_sym + 1 : -1;
        n_sym++;
    }
    for (int32_t i = 1; i < n_sym; i++)
        if ((rc = maybe_add(&c, i - 1, i))) goto done;

    while (c.h.n > 0) {
        pair top = heap_pop(&c.h);
        sym *l = &c.s[top.left], *r = &c.s[top.right];
        /* Stale: one side was merged away or grew since this pair was pushed. */
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue;
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) c.s[r->next].prev = top.left;
        r->len = 0;
        if ((rc = maybe_add(&c, l->prev, top.left)) || (rc = maybe_add(&c, top.left, l->next)))
            goto done;
    }

    for (int32_t i = n_sym > 0 ? 0 : -1; i >= 0; i = c.s[i].next)
        if ((rc = resegment(&c, &o, c.s[i].start, c.s[i].len))) goto done;

done:
    am_free(norm);
    am_free(c.s);
    am_free(c.h.a);
    am_free(c.rev.e);
    if (rc) {
        am_free(o.ids);
        return am_err_set(rc, "tokenizer: out of memory encoding %zu bytes", len);
    }
    *ids = o.ids;
    *n_ids = o.n;
    return 0;
}

/* ---- decoding ----------------------------------------------------------- */

typedef struct dyn {
    char *d;
    size_t n, cap;
} dyn;

static int dyn_put(dyn *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *d = am_realloc(b->d, cap);
        if (!d) return AM_ENOMEM;
        b->d = d;
        b->cap = cap;
    }
    if (n) memcpy(b->d + b->n, p, n);
    b->n += n;
    b->d[b->n] = '\0';
    return 0;
}

/* ProcessBytePieces: a run of byte pieces becomes its bytes, a malformed
 * UTF-8 byte becomes U+FFFD. */
static int flush_bytes(dyn *out, const unsigned char *run, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = am_utf8_decode(run + i, n - i, &cp);
        int rc = k ? dyn_put(out, run + i, (size_t)k) : dyn_put(out, kReplacement, 3);
        if (rc) return rc;
        i += k ? (size_t)k : 1;
    }
    return 0;
}

/* Appends piece with U+2581 -> ' ', optionally dropping one leading U+2581.
 * Returns whether it dropped one (has_bos_ws), or a negative error. */
static int put_piece(dyn *out, const char *s, size_t len, int strip_ws) {
    int dropped = 0;
    if (strip_ws && len >= AM__TOK_SPACE_LEN && memcmp(s, AM__TOK_SPACE, AM__TOK_SPACE_LEN) == 0) {
        s += AM__TOK_SPACE_LEN;
        len -= AM__TOK_SPACE_LEN;
        dropped = 1;
    }
    size_t i = 0, run = 0;
    while (i < len) {
        if (len - i >= AM__TOK_SPACE_LEN && memcmp(s + i, AM__TOK_SPACE, AM__TOK_SPACE_LEN) == 0) {
            if (dyn_put(out, s + run, i - run) || dyn_put(out, " ", 1)) return AM_ENOMEM;
            i += AM__TOK_SPACE_LEN;
            run = i;
        } else {
            i++;
        }
    }
    if (dyn_put(out, s + run, len - run)) return AM_ENOMEM;
    return dropped;
}

int am_tokenizer_decode(const am_tokenizer *t, const int32_t *ids, int64_t n, char **text,
                        size_t *len) {
    if (!t || !text || !len || (!ids && n) || n < 0)
        return am_err_set(AM_EINVAL, "am_tokenizer_decode: bad argument");
    *text = NULL;
    *len = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return am_err_set(AM_EINVAL,
                              "tokenizer: id %d at position %lld is out of range [0, %d)",
                              (int)ids[i], (long long)i, (int)t->n_vocab);
    }
    dyn out = {0};
    unsigned char *run = am_malloc((size_t)n + 1);
    int rc = run ? dyn_put(&out, "", 0) : AM_ENOMEM;
    size_t n_run = 0;
    int is_bos_ws = 1, bos_ws_seen = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        int type = t->types[id];
        if (type == AM_PIECE_BYTE) {
            run[n_run++] = (unsigned char)am__tok_piece_to_byte(t->arena + t->off[id], t->len[id]);
            continue;
        }
        if ((rc = flush_bytes(&out, run, n_run))) break;
        n_run = 0;
        if (bos_ws_seen || out.n > 0) is_bos_ws = 0;
        if (type == AM_PIECE_CONTROL) {
            bos_ws_seen = 0;
        } else if (type == AM_PIECE_UNKNOWN) {
            rc = dyn_put(&out, t->unk_surface, t->unk_surface_len);
            bos_ws_seen = 0;
        } else {
            int strip = is_bos_ws && (t->add_dummy_prefix || t->remove_extra_ws);
            int r = put_piece(&out, t->arena + t->off[id], t->len[id], strip);
            if (r < 0) rc = r;
            /* With whitespace folding every leading space goes, not just one. */
            bos_ws_seen = r > 0 && !t->remove_extra_ws;
        }
    }
    if (!rc) rc = flush_bytes(&out, run, n_run);
    am_free(run);
    if (rc) {
        am_free(out.d);
        return am_err_set(AM_ENOMEM, "tokenizer: out of memory decoding %lld ids", (long long)n);
    }
    *text = out.d;
    *len = out.n;
    return 0;
}

int am_tokenizer_token_bytes(const am_tokenizer *t, int32_t prev, int32_t id, char *buf,
                             size_t cap) {
    if (!t || !buf) return am_err_set(AM_EINVAL, "am_tokenizer_token_bytes: NULL argument");
    if (id < 0 || id >= t->n_vocab)
        return am_err_set(AM_EINVAL, "tokenizer: id %d out of range [0, %d)", (int)id,
                          (int)t->n_vocab);
    const char *s = t->arena + t->off[id];
    size_t len = t->len[id];
    size_t n = 0;
    switch (t->types[id]) {
    case AM_PIECE_CONTROL: return 0;
    case AM_PIECE_BYTE:
        if (cap < 1)
            return am_err_set(AM_ERANGE, "tokenizer: token_bytes buffer of %zu bytes", cap);
        buf[0] = (char)am__tok_piece_to_byte(s, len);
        return 1;
    case AM_PIECE_UNKNOWN:
        if (cap < t->unk_surface_len)
            return am_err_set(AM_ERANGE, "tokenizer: token_bytes buffer of %zu bytes", cap);
        memcpy(buf, t->unk_surface, t->unk_surface_len);
        return (int)t->unk_surface_len;
    default: break;
    }
    if ((prev < 0 || prev == t->bos) && t->add_dummy_prefix && len >= AM__TOK_SPACE_LEN &&
        memcmp(s, AM__TOK_SPACE, AM__TOK_SPACE_LEN) == 0) {
        s += AM__TOK_SPACE_LEN;
        len -= AM__TOK_SPACE_LEN;
    }
    for (size_t i = 0; i < len;) {
        const char *c = s + i;
        size_t cl = 1;
        if (len - i >= AM__TOK_SPACE_LEN && memcmp(c, AM__TOK_SPACE, AM__TOK_SPACE_LEN) == 0) {
            c = " ";
            cl = AM__TOK_SPACE_LEN;
        }
        if (n >= cap)
            return am_err_set(AM_ERANGE, "tokenizer: token_bytes buffer of %zu bytes", cap);
        buf[n++] = *c;
        i += cl;
    }
    return (int)n;
}
