/* llm_shards/synthetic_vocab.c - a deterministic SentencePiece-BPE
 * vocabulary for generated demo models (am_tokenizer_synthetic).
 *
 * Part of am_mkmodel with mkmodel.c, not of the serving libraries: only the
 * model-making tools and the tests train vocabularies. It builds the result
 * through the tokenizer's builder (tok_internal.h), as the file loaders do.
 *
 * Demo checkpoints need a tokenizer whose ids behave like a real one (byte
 * fallback, '\u2581' word starts, merges ranked by score) without shipping
 * LLaMA's. We learn BPE merges from a built-in English text the way
 * sentencepiece's BPE trainer does in spirit: words are whitespace-separated
 * and start with '\u2581', the most frequent adjacent pair is merged first
 * (ties: the lexicographically smallest concatenation, so the result does not
 * depend on hashing), and piece k gets score -k. The same merges come out for
 * every n_vocab, so a smaller vocabulary is a prefix of a larger one.
 *
 * The ids this vocabulary produces are golden data (tests/golden/tokenizer/
 * synth_*.tsv, checked against python sentencepiece): changing kCorpus or the
 * trainer means regenerating them with gen_tokenizer_golden.py, and changes
 * the ids of every demo model made before.
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/strmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Plain ASCII, no '<', so no learned piece can collide with "<unk>", "<s>",
 * "<0xXX>" or the "<unused_N>" fillers. */
static const char kCorpus[] =
    "Anymal is a small serving system for multimodal language models. It reads the weights of "
    "a LLaMA-2 model, splits the layers over several worker processes, and answers requests that "
    "mix text with images, audio and video. Every request starts as plain text: the tokenizer "
    "turns the words into numbers, the encoders turn pictures and sounds into vectors of the same "
    "width, and the decoder reads them all as one long sequence.\n"
    "The tokenizer is the first thing a request meets, so it has to be exact. It cuts the text "
    "into characters, then joins the pair of neighbours that the vocabulary likes best, again and "
    "again, until no known pair is left. A character that the vocabulary does not know is written "
    "as its bytes, so nothing is ever lost, and the same text always gives the same numbers.\n"
    "The coordinator keeps a queue of requests and a list of workers. When a worker is ready, it "
    "takes the next batch, runs the layers it owns, and passes the hidden state to the worker that "
    "holds the following layers. The last worker turns the state into scores over the whole "
    "vocabulary, picks the next token, and sends it back. If a worker stops answering, the "
    "coordinator notices the missing heartbeat within a few seconds and gives its requests to "
    "another worker, which starts again from the last saved state.\n"
    "Speed comes from doing the same work in large pieces. Matrices are multiplied in blocks that "
    "fit the cache, the attention keys and values of earlier tokens are kept instead of computed "
    "again, and many requests share one pass through the weights. On a machine with a graphics "
    "card the heavy loops run there; on a plain computer they run on every core at once. Both "
    "paths are checked against a simple reference version that is slow but easy to read.\n"
    "We test each part on its own and then the whole system together. A test feeds the tokenizer "
    "text in many scripts, spaces, tabs, numbers like 42, 1024 and 3.14, and broken bytes, and "
    "compares every number with the reference library. Another test starts four workers, kills "
    "one in the middle of a long answer, and checks that the answer still arrives in full and "
    "word for word the same.\n"
    "A model file may come in several shapes: one large file, many smaller shards with an index, "
    "a file with quantized blocks, or the simple format of a teaching project. The loader maps "
    "the file into memory and reads only the parts a worker needs, so a worker that holds ten "
    "layers of eighty never touches the other seventy. Every size and offset in the header is "
    "checked before it is used, because a broken or hostile file must give a clear error and "
    "never a crash.\n"
    "The chat format wraps each turn of the user in special markers and puts the instructions of "
    "the system at the start of the first turn. The answer of the assistant follows the closing "
    "marker, and every finished turn ends with the end token. Getting one space wrong here would "
    "change the numbers the model sees, so this code follows the reference exactly, space for "
    "space, and the tests compare it with the original.\n"
    "When you run the demo, the program builds a tiny model with random weights and this very "
    "vocabulary, learned from the text you are reading now. The answers will not make sense, but "
    "every part of the path from the request to the reply is real: the queue, the workers, the "
    "cache, the sampler and the stream of words that comes back to the screen.\n";

typedef struct word {
    int32_t *sym; /* symbol ids */
    int32_t n;
    int32_t count;
} word;

typedef struct strtab {
    char **s;
    uint32_t *len;
    int32_t n, cap;
    am_strmap ids; /* symbol bytes (the copies in s) -> id */
} strtab;

static int32_t st_find(const strtab *t, const char *s, size_t n) {
    return (int32_t)am_strmap_get(&t->ids, s, n);
}

/* Returns the id of s, adding it when new; -1 on allocation failure. */
static int32_t st_add(strtab *t, const char *s, size_t n, int *added) {
    *added = 0;
    int32_t id = st_find(t, s, n);
    if (id >= 0) return id;
    if (t->n == t->cap) {
        int32_t cap = t->cap ? t->cap * 2 : 256;
        char **ns = am_realloc(t->s, (size_t)cap * sizeof *ns);
        if (!ns) return -1;
        t->s = ns;
        uint32_t *nl = am_realloc(t->len, (size_t)cap * sizeof *nl);
        if (!nl) return -1;
        t->len = nl;
        t->cap = cap;
    }
    char *copy = am_strndup(s, n);
    if (!copy) return -1;
    if (am_strmap_put(&t->ids, copy, n, t->n, NULL) != 0) {
        am_free(copy);
        return -1;
    }
    id = t->n++;
    t->s[id] = copy;
    t->len[id] = (uint32_t)n;
    *added = 1;
    return id;
}

static void st_free(strtab *t) {
    for (int32_t i = 0; i < t->n; i++)
        am_free(t->s[i]);
    am_free(t->s);
    am_free(t->len);
    am_strmap_free(&t->ids);
}

/* Compares the concatenations a+b and c+d of symbols, bytewise. */
static int cmp_concat(const strtab *t, int32_t a, int32_t b, int32_t c, int32_t d) {
    size_t xl = t->len[a] + t->len[b], yl = t->len[c] + t->len[d];
    for (size_t i = 0; i < xl && i < yl; i++) {
        unsigned char x = (unsigned char)(i < t->len[a] ? t->s[a][i] : t->s[b][i - t->len[a]]);
        unsigned char y = (unsigned char)(i < t->len[c] ? t->s[c][i] : t->s[d][i - t->len[c]]);
        if (x != y) return x < y ? -1 : 1;
    }
    return xl < yl ? -1 : xl > yl ? 1 : 0;
}

typedef struct pair_slot {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int64_t count;
} pair_slot;

typedef struct char_freq {
    int32_t sym;
    int64_t count;
    unsigned char bytes[4]; /* the character, for a hash-independent order */
    uint32_t len;
} char_freq;

static int cmp_char_freq(const void *pa, const void *pb) {
    const char_freq *a = pa, *b = pb;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    int r = memcmp(a->bytes, b->bytes, a->len < b->len ? a->len : b->len);
    return r ? r : (int)a->len - (int)b->len;
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int am_tokenizer_synthetic(int32_t n_vocab, am_tokenizer **out) {
    if (!out) return am_err_set(AM_EINVAL, "am_tokenizer_synthetic: NULL argument");
    *out = NULL;
    if (n_vocab < AM_TOKENIZER_MIN_SYNTHETIC_VOCAB || n_vocab > AM_TOKENIZER_MAX_VOCAB)
        return am_err_set(AM_ERANGE, "synthetic tokenizer: n_vocab %d (expected %d..%d)",
                          (int)n_vocab, AM_TOKENIZER_MIN_SYNTHETIC_VOCAB, AM_TOKENIZER_MAX_VOCAB);
    int rc = AM_ENOMEM;
    strtab st = {0};
    char **raw = NULL;
    int32_t n_raw = 0, cap_raw = 0;
    word *words = NULL;
    int32_t n_words = 0;
    int64_t total_syms = 0;
    char_freq *chars = NULL;
    int32_t n_chars = 0, chars_in = 0, want = 0;
    int32_t *learned = NULL, n_learned = 0;
    pair_slot *pairs = NULL;
    uint64_t pcap = 64;
    am_tokenizer *t = NULL;
    char piece[32];
    int32_t id = 0;
    am__tok_spec spec;

    /* Words: whitespace-separated, each prefixed with U+2581 as the
     * normalizer would (dummy prefix + escaped spaces); counted by sorting. */
    for (const char *p = kCorpus; *p;) {
        while (*p == ' ' || *p == '\n')
            p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\n')
            e++;
        if (n_raw == cap_raw) {
            int32_t nc = cap_raw ? cap_raw * 2 : 1024;
            char **nr = am_realloc(raw, (size_t)nc * sizeof *nr);
            if (!nr) goto done;
            raw = nr;
            cap_raw = nc;
        }
        char *w = am_malloc((size_t)(e - p) + AM__TOK_SPACE_LEN + 1);
        if (!w) goto done;
        memcpy(w, AM__TOK_SPACE, AM__TOK_SPACE_LEN);
        memcpy(w + AM__TOK_SPACE_LEN, p, (size_t)(e - p));
        w[AM__TOK_SPACE_LEN + (e - p)] = '\0';
        raw[n_raw++] = w;
        p = e;
    }
    qsort(raw, (size_t)n_raw, sizeof *raw, cmp_cstr);
    words = am_calloc((size_t)n_raw, sizeof *words);
    if (!words) goto done;
    for (int32_t i = 0; i < n_raw;) {
        int32_t j = i;
        while (j < n_raw && strcmp(raw[i], raw[j]) == 0)
            j++;
        size_t wl = strlen(raw[i]);
        word *w = &words[n_words++];
        w->count = j - i;
        w->sym = am_malloc(wl * sizeof *w->sym);
        if (!w->sym) goto done;
        for (size_t k = 0; k < wl;) {
            uint32_t cp;
            int cl = am_utf8_decode((const unsigned char *)raw[i] + k, wl - k, &cp);
            if (cl == 0) cl = 1; /* the corpus is ASCII; be safe anyway */
            int added;
            int32_t sid = st_add(&st, raw[i] + k, (size_t)cl, &added);
            if (sid < 0) goto done;
            w->sym[w->n++] = sid;
            k += (size_t)cl;
        }
        total_syms += w->n;
        i = j;
    }

    /* Single characters, most frequent first. */
    n_chars = st.n;
    chars = am_calloc((size_t)n_chars, sizeof *chars);
    if (!chars) goto done;
    for (int32_t k = 0; k < n_chars; k++) {
        chars[k].sym = k;
        chars[k].len = st.len[k];
        memcpy(chars[k].bytes, st.s[k], st.len[k]);
    }
    for (int32_t i = 0; i < n_words; i++)
        for (int32_t k = 0; k < words[i].n; k++)
            chars[words[i].sym[k]].count += words[i].count;
    qsort(chars, (size_t)n_chars, sizeof *chars, cmp_char_freq);

    chars_in = n_vocab - 259 < n_chars ? n_vocab - 259 : n_chars;
    want = n_vocab - 259 - chars_in;

    /* BPE training: count pairs, merge the most frequent, repeat. */
    learned = am_malloc((size_t)(want > 0 ? want : 1) * sizeof *learned);
    while (pcap < (uint64_t)total_syms * 2 + 2)
        pcap <<= 1;
    pairs = am_malloc(pcap * sizeof *pairs);
    if (!learned || !pairs) goto done;
    while (n_learned < want) {
        memset(pairs, 0, pcap * sizeof *pairs);
        for (int32_t i = 0; i < n_words; i++) {
            const word *w = &words[i];
            for (int32_t k = 0; k + 1 < w->n; k++) {
                uint64_t key = ((uint64_t)(uint32_t)w->sym[k] << 32 | (uint32_t)w->sym[k + 1]) + 1;
                uint64_t s = (key * 0x9E3779B97F4A7C15ull >> 20) & (pcap - 1);
                while (pairs[s].key && pairs[s].key != key)
                    s = (s + 1) & (pcap - 1);
                pairs[s].key = key;
                pairs[s].count += w->count;
            }
        }
        int64_t best = 0;
        int32_t ba = -1, bb = -1;
        for (uint64_t s = 0; s < pcap; s++) {
            if (!pairs[s].key || pairs[s].count < best) continue;
            int32_t a = (int32_t)((pairs[s].key - 1) >> 32);
            int32_t b = (int32_t)((pairs[s].key - 1) & 0xFFFFFFFFu);
            if (pairs[s].count > best || cmp_concat(&st, a, b, ba, bb) < 0) {
                best = pairs[s].count;
                ba = a;
                bb = b;
            }
        }
        if (best == 0) break; /* every word is one symbol: the corpus ran out */
        size_t nl = (size_t)st.len[ba] + st.len[bb];
        char buf[1024];
        if (nl >= sizeof buf) break; /* cannot happen with this corpus */
        memcpy(buf, st.s[ba], st.len[ba]);
        memcpy(buf + st.len[ba], st.s[bb], st.len[bb]);
        int added;
        int32_t m = st_add(&st, buf, nl, &added);
        if (m < 0) goto done;
        /* A string reached by a second route is merged but not listed twice. */
        if (added) learned[n_learned++] = m;
        for (int32_t i = 0; i < n_words; i++) {
            word *w = &words[i];
            int32_t o = 0;
            for (int32_t k = 0; k < w->n; k++) {
                if (k + 1 < w->n && w->sym[k] == ba && w->sym[k + 1] == bb) {
                    w->sym[o++] = m;
                    k++;
                } else {
                    w->sym[o++] = w->sym[k];
                }
            }
            w->n = o;
        }
    }

    if ((rc = am__tok_alloc(n_vocab, &t))) goto done;
    if ((rc = am__tok_set(t, id++, "<unk>", 5, 0.0f, AM_PIECE_UNKNOWN)) ||
        (rc = am__tok_set(t, id++, "<s>", 3, 0.0f, AM_PIECE_CONTROL)) ||
        (rc = am__tok_set(t, id++, "</s>", 4, 0.0f, AM_PIECE_CONTROL)))
        goto done;
    for (int b = 0; b < 256; b++) {
        int n = snprintf(piece, sizeof piece, "<0x%02X>", b);
        if ((rc = am__tok_set(t, id++, piece, (size_t)n, 0.0f, AM_PIECE_BYTE))) goto done;
    }
    for (int32_t k = 0; k < n_learned; k++)
        if ((rc = am__tok_set(t, id++, st.s[learned[k]], st.len[learned[k]], -(float)k,
                              AM_PIECE_NORMAL)))
            goto done;
    for (int32_t k = 0; k < chars_in; k++)
        if ((rc = am__tok_set(t, id++, st.s[chars[k].sym], st.len[chars[k].sym],
                              -(float)(n_learned + k), AM_PIECE_NORMAL)))
            goto done;
    for (int32_t k = 0; id < n_vocab; k++) {
        int n = snprintf(piece, sizeof piece, "<unused_%d>", (int)k);
        if ((rc = am__tok_set(t, id++, piece, (size_t)n, 0.0f, AM_PIECE_UNUSED))) goto done;
    }
    am__tok_spec_default(&spec);
    spec.byte_fallback = 1;
    rc = am__tok_finish(t, &spec, "synthetic tokenizer");

done:
    if (rc == AM_ENOMEM) am_err_set(rc, "synthetic tokenizer: out of memory");
    if (rc) am_tokenizer_destroy(&t);
    *out = t;
    for (int32_t i = 0; i < n_raw; i++)
        am_free(raw[i]);
    am_free(raw);
    for (int32_t i = 0; i < n_words; i++)
        am_free(words[i].sym);
    am_free(words);
    am_free(chars);
    am_free(learned);
    am_free(pairs);
    st_free(&st);
    return rc;
}
