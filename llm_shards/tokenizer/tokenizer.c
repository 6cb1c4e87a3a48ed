/* llm_shards/tokenizer/tokenizer.c - the vocabulary: construction, validation,
 * piece lookup tables and accessors, used by every loader and writer. Format
 * detection (am_tokenizer_load) is in load.c, above the loaders, so that the
 * calls run one way: load.c -> model_proto.c / llama2c.c -> tokenizer.c.
 *
 * The validation in am__tok_finish mirrors sentencepiece's
 * ModelInterface::InitializePieces so that a vocabulary we accept is one the
 * reference library accepts too, whichever file format it came from.
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- piece maps (core/strmap.h; keys point into the arena, final by then) ---- */

static int32_t map_find(const am_strmap *m, const char *s, size_t len) {
    return (int32_t)am_strmap_get(m, s, len);
}

int32_t am__tok_find_normal(const am_tokenizer *t, const char *s, size_t len) {
    return map_find(&t->normal, s, len);
}

int32_t am__tok_piece_to_id(const am_tokenizer *t, const char *s, size_t len) {
    int32_t id = map_find(&t->reserved, s, len);
    if (id >= 0) return id;
    id = map_find(&t->normal, s, len);
    return id >= 0 ? id : t->unk;
}

int am__tok_piece_to_byte(const char *s, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *h = strchr(hex, s[3]), *l = strchr(hex, s[4]);
    if (!s[3] || !s[4] || !h || !l) return -1;
    return (int)((h - hex) * 16 + (l - hex));
}

am_piece_type am__tok_infer_type(const char *s, size_t len) {
    if (len == 5 && memcmp(s, "<unk>", 5) == 0) return AM_PIECE_UNKNOWN;
    if ((len == 3 && memcmp(s, "<s>", 3) == 0) || (len == 4 && memcmp(s, "</s>", 4) == 0))
        return AM_PIECE_CONTROL;
    if (am__tok_piece_to_byte(s, len) >= 0) return AM_PIECE_BYTE;
    return AM_PIECE_NORMAL;
}

/* ---- construction ----------------------------------------------------- */

void am__tok_spec_default(am__tok_spec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->byte_fallback = -1;
    spec->add_dummy_prefix = 1;
    spec->remove_extra_ws = 0;
    spec->escape_ws = 1;
    spec->bos_id = spec->eos_id = spec->pad_id = -1;
}

int am__tok_alloc(int32_t n, am_tokenizer **out) {
    *out = NULL;
    if (n <= 0 || n > AM_TOKENIZER_MAX_VOCAB)
        return am_err_set(AM_ERANGE, "tokenizer: %d pieces (limit 1..%d)", (int)n,
                          AM_TOKENIZER_MAX_VOCAB);
    am_tokenizer *t = am_calloc(1, sizeof *t);
    if (!t) return AM_ENOMEM;
    t->n_vocab = n;
    t->off = am_calloc((size_t)n, sizeof *t->off);
    t->len = am_calloc((size_t)n, sizeof *t->len);
    t->scores = am_calloc((size_t)n, sizeof *t->scores);
    t->types = am_calloc((size_t)n, sizeof *t->types);
    t->arena_cap = (size_t)n * 8 + 64;
    t->arena = am_malloc(t->arena_cap);
    t->unk = t->bos = t->eos = t->pad = -1;
    if (!t->off || !t->len || !t->scores || !t->types || !t->arena) {
        am_tokenizer_destroy(&t);
        return am_err_set(AM_ENOMEM, "tokenizer: out of memory for %d pieces", (int)n);
    }
    *out = t;
    return 0;
}

int am__tok_set(am_tokenizer *t, int32_t i, const char *piece, size_t len, float score,
                am_piece_type type) {
    AM_ASSERT(i >= 0 && i < t->n_vocab);
    if (t->arena_len + len + 1 > t->arena_cap) {
        size_t cap = t->arena_cap * 2;
        while (cap < t->arena_len + len + 1)
            cap *= 2;
        char *a = am_realloc(t->arena, cap);
        if (!a) return am_err_set(AM_ENOMEM, "tokenizer: out of memory for pieces");
        t->arena = a;
        t->arena_cap = cap;
    }
    t->off[i] = t->arena_len;
    t->len[i] = (uint32_t)len;
    if (len) memcpy(t->arena + t->arena_len, piece, len);
    t->arena[t->arena_len + len] = '\0';
    t->arena_len += len + 1;
    t->scores[i] = score;
    t->types[i] = (uint8_t)type;
    return 0;
}

static int is_normal_type(int type) {
    return type == AM_PIECE_NORMAL || type == AM_PIECE_USER_DEFINED || type == AM_PIECE_UNUSED;
}

static int cmp_u32_desc(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int am__tok_finish(am_tokenizer *t, const am__tok_spec *spec, const char *src) {
    int rc;
    int any_byte = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (t->types[i] == AM_PIECE_BYTE) any_byte = 1;
    }
    t->byte_fallback = spec->byte_fallback < 0 ? any_byte : spec->byte_fallback;
    t->add_dummy_prefix = spec->add_dummy_prefix;
    t->remove_extra_ws = spec->remove_extra_ws;
    t->escape_ws = spec->escape_ws;

    /* LLaMA has 259 reserved pieces, but a hostile file may make every piece
     * reserved: size each map for its real count. */
    int64_t n_reserved = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        n_reserved += !is_normal_type(t->types[i]);
    if ((rc = am_strmap_reserve(&t->normal, (size_t)(t->n_vocab - n_reserved))) ||
        (rc = am_strmap_reserve(&t->reserved, (size_t)n_reserved)))
        return am_err_set(rc, "%s: out of memory", src);

    int byte_seen[256] = {0};
    int n_user = 0;
    t->max_piece_len = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const char *s = t->arena + t->off[i];
        uint32_t len = t->len[i];
        int type = t->types[i];
        if (type < AM_PIECE_NORMAL || type > AM_PIECE_BYTE)
            return am_err_set(AM_EFORMAT, "%s: piece %d: invalid type %d", src, (int)i, type);
        if (len == 0) return am_err_set(AM_EFORMAT, "%s: piece %d is empty", src, (int)i);
        if (len > AM_TOKENIZER_MAX_PIECE_BYTES)
            return am_err_set(AM_EFORMAT, "%s: piece %d is %u bytes long (limit %d)", src, (int)i,
                              len, AM_TOKENIZER_MAX_PIECE_BYTES);
        if (memchr(s, '\0', len))
            return am_err_set(AM_EFORMAT, "%s: piece %d contains a NUL byte", src, (int)i);
        if (isnan(t->scores[i]))
            return am_err_set(AM_EFORMAT, "%s: piece %d ('%s'): score is NaN", src, (int)i, s);
        if (len > t->max_piece_len) t->max_piece_len = len;
        int64_t dup = -1;
        rc = am_strmap_put(is_normal_type(type) ? &t->normal : &t->reserved, s, len, i, &dup);
        if (rc < 0) return am_err_set(rc, "%s: out of memory", src);
        if (rc == 1)
            return am_err_set(AM_EFORMAT, "%s: piece %d ('%s') is already defined as piece %d", src,
                              (int)i, s, (int)dup);
        if (type == AM_PIECE_USER_DEFINED) n_user++;
        if (type == AM_PIECE_UNKNOWN) {
            if (t->unk >= 0)
                return am_err_set(AM_EFORMAT, "%s: piece %d: a second UNKNOWN piece (first: %d)",
                                  src, (int)i, (int)t->unk);
            t->unk = i;
        }
        if (type == AM_PIECE_BYTE) {
            if (!t->byte_fallback)
                return am_err_set(AM_EFORMAT,
                                  "%s: byte piece %d ('%s') found although byte_fallback is false",
                                  src, (int)i, s);
            int b = am__tok_piece_to_byte(s, len);
            if (b < 0)
                return am_err_set(AM_EFORMAT, "%s: byte piece %d ('%s') is invalid", src, (int)i,
                                  s);
            byte_seen[b] = 1;
        }
    }
    if (t->unk < 0) return am_err_set(AM_EFORMAT, "%s: no UNKNOWN (<unk>) piece", src);
    if (t->byte_fallback) {
        for (int b = 0; b < 256; b++) {
            if (!byte_seen[b])
                return am_err_set(AM_EFORMAT,
                                  "%s: byte_fallback is on but piece <0x%02X> is missing", src, b);
        }
    }
    char bp[8];
    for (int b = 0; b < 256; b++) {
        snprintf(bp, sizeof bp, "<0x%02X>", b);
        t->byte_id[b] = am__tok_piece_to_id(t, bp, 6);
    }

    /* USER_DEFINED pieces are matched longest-first before splitting into
     * characters; keep their distinct lengths. */
    if (n_user) {
        t->user_lens = am_malloc((size_t)n_user * sizeof *t->user_lens);
        if (!t->user_lens) return am_err_set(AM_ENOMEM, "%s: out of memory", src);
        int k = 0;
        for (int32_t i = 0; i < t->n_vocab; i++)
            if (t->types[i] == AM_PIECE_USER_DEFINED) t->user_lens[k++] = t->len[i];
        qsort(t->user_lens, (size_t)k, sizeof *t->user_lens, cmp_u32_desc);
        int m = 0;
        for (int j = 0; j < k; j++)
            if (m == 0 || t->user_lens[m - 1] != t->user_lens[j])
                t->user_lens[m++] = t->user_lens[j];
        t->n_user_lens = m;
    }

    const char *us = spec->unk_surface ? spec->unk_surface : AM__TOK_UNK_SURFACE;
    size_t usl = spec->unk_surface ? spec->unk_surface_len : strlen(AM__TOK_UNK_SURFACE);
    if (usl > AM_TOKENIZER_MAX_PIECE_BYTES)
        return am_err_set(AM_EFORMAT, "%s: unk_surface is %zu bytes long (limit %d)", src, usl,
                          AM_TOKENIZER_MAX_PIECE_BYTES);
    t->unk_surface = am_strndup(us, usl);
    if (!t->unk_surface) return am_err_set(AM_ENOMEM, "%s: out of memory", src);
    t->unk_surface_len = usl;

    /* sentencepiece's bos_id()/eos_id() resolve the bos/eos piece names and
     * accept them only when they are CONTROL pieces. */
    if (spec->bos_id >= 0) {
        if (spec->bos_id >= t->n_vocab)
            return am_err_set(AM_EFORMAT, "%s: bos id %d out of range (vocab %d)", src,
                              (int)spec->bos_id, (int)t->n_vocab);
        t->bos = spec->bos_id;
    } else {
        const char *p = spec->bos_piece ? spec->bos_piece : "<s>";
        size_t pl = spec->bos_piece ? spec->bos_piece_len : 3;
        int32_t id = map_find(&t->reserved, p, pl);
        t->bos = id >= 0 && t->types[id] == AM_PIECE_CONTROL ? id : -1;
    }
    if (spec->eos_id >= 0) {
        if (spec->eos_id >= t->n_vocab)
            return am_err_set(AM_EFORMAT, "%s: eos id %d out of range (vocab %d)", src,
                              (int)spec->eos_id, (int)t->n_vocab);
        t->eos = spec->eos_id;
    } else {
        const char *p = spec->eos_piece ? spec->eos_piece : "</s>";
        size_t pl = spec->eos_piece ? spec->eos_piece_len : 4;
        int32_t id = map_find(&t->reserved, p, pl);
        t->eos = id >= 0 && t->types[id] == AM_PIECE_CONTROL ? id : -1;
    }
    t->pad = spec->pad_id >= 0 && spec->pad_id < t->n_vocab ? spec->pad_id : -1;
    return 0;
}

void am_tokenizer_destroy(am_tokenizer **p) {
    if (!p || !*p) return;
    am_tokenizer *t = *p;
    am_free(t->arena);
    am_free(t->off);
    am_free(t->len);
    am_free(t->scores);
    am_free(t->types);
    am_free(t->unk_surface);
    am_strmap_free(&t->normal);
    am_strmap_free(&t->reserved);
    am_free(t->user_lens);
    am_free(t);
    *p = NULL;
}

/* ---- accessors -------------------------------------------------------- */

int32_t am_tokenizer_n_vocab(const am_tokenizer *t) { return t->n_vocab; }
int32_t am_tokenizer_bos(const am_tokenizer *t) { return t->bos; }
int32_t am_tokenizer_eos(const am_tokenizer *t) { return t->eos; }
int32_t am_tokenizer_unk(const am_tokenizer *t) { return t->unk; }

const char *am_tokenizer_piece(const am_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    return t->arena + t->off[id];
}

float am_tokenizer_score(const am_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return 0.0f;
    return t->scores[id];
}

am_piece_type am_tokenizer_type(const am_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return (am_piece_type)0;
    return (am_piece_type)t->types[id];
}

int32_t am_tokenizer_find(const am_tokenizer *t, const char *piece, size_t len) {
    int32_t id = map_find(&t->reserved, piece, len);
    return id >= 0 ? id : map_find(&t->normal, piece, len);
}

size_t am_tokenizer_max_token_bytes(const am_tokenizer *t) {
    size_t n = t->max_piece_len;
    return n > t->unk_surface_len ? n : t->unk_surface_len;
}

/* ---- files ------------------------------------------------------------ */

int am__tok_write_file(const char *path, const void *data, size_t len) {
    size_t pl = strlen(path);
    char *tmp = am_malloc(pl + 32);
    if (!tmp) return AM_ENOMEM;
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int rc = am_err_set(AM_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        am_free(tmp);
        return rc;
    }
    size_t put = len ? fwrite(data, 1, len, f) : 0;
    int bad = put != len || fflush(f) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int rc = am_err_set(AM_EIO, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        am_free(tmp);
        return rc;
    }
    am_free(tmp);
    return 0;
}
