/* llm_shards/tokenizer/tok_internal.h - the tokenizer's private structure and
 * the helpers shared by its source files (loaders, writers, encoder) and by the
 * synthetic-vocabulary trainer (llm_shards/synthetic_vocab.c, in am_mkmodel).
 *
 * Every loader fills a builder-created am_tokenizer with pieces, then calls
 * am__tok_finish(), which applies the same validation the sentencepiece
 * library applies when it loads a model (unique pieces, one <unk>, 256 byte
 * pieces under byte fallback, no empty pieces, no NUL) and builds the lookup
 * tables. That keeps the semantics identical whatever file the vocabulary
 * came from.
 */
#ifndef AM_TOK_INTERNAL_H
#define AM_TOK_INTERNAL_H

#include "core/strmap.h"
#include "core/text.h"
#include "llm_shards/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* "\xE2\x96\x81" (U+2581), sentencepiece's visible space. */
#define AM__TOK_SPACE     "\xE2\x96\x81"
#define AM__TOK_SPACE_LEN 3
/* sentencepiece's default unk_surface: " \xE2\x81\x87 " (" U+2047 "). */
#define AM__TOK_UNK_SURFACE " \xE2\x81\x87 "

struct am_tokenizer {
    int32_t n_vocab;
    char *arena;      /* all pieces, each NUL-terminated */
    size_t arena_len; /* bytes used */
    size_t arena_cap;
    size_t *off;    /* (n_vocab,) piece start in arena */
    uint32_t *len;  /* (n_vocab,) piece length in bytes */
    float *scores;  /* (n_vocab,) */
    uint8_t *types; /* (n_vocab,) am_piece_type */

    int32_t unk, bos, eos, pad; /* -1 when absent */
    int32_t byte_id[256];       /* id of "<0xXX>" via PieceToId (unk if absent) */
    int byte_fallback;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    char *unk_surface; /* what DecodeIds prints for <unk> */
    size_t unk_surface_len;
    uint32_t max_piece_len; /* longest piece in bytes */

    /* sentencepiece keeps two maps: NORMAL/USER_DEFINED/UNUSED pieces take
     * part in merging; UNKNOWN/CONTROL/BYTE pieces only resolve whole
     * symbols (PieceToId looks them up first). */
    am_strmap normal, reserved; /* piece bytes (in arena) -> id */
    /* Lengths of USER_DEFINED pieces, longest first, for the prefix matcher. */
    uint32_t *user_lens;
    int n_user_lens;
};

/* Settings a loader passes to am__tok_finish. Strings may be NULL (defaults). */
typedef struct am__tok_spec {
    int byte_fallback; /* 1, 0, or -1: on when any BYTE piece exists */
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    const char *unk_surface; /* NULL: sentencepiece's default */
    size_t unk_surface_len;
    const char *bos_piece, *eos_piece; /* NULL: "<s>", "</s>" */
    size_t bos_piece_len, eos_piece_len;
    int32_t bos_id, eos_id; /* >= 0: explicit ids (GGUF); -1: look up the pieces */
    int32_t pad_id;         /* -1: none */
} am__tok_spec;

/* Fills spec with LLaMA's defaults (byte fallback inferred, dummy prefix,
 * no whitespace folding, escaped spaces, bos/eos by piece). */
void am__tok_spec_default(am__tok_spec *spec);

/* Allocates a tokenizer for n pieces, all unset. AM_ENOMEM. */
int am__tok_alloc(int32_t n, am_tokenizer **out);
/* Sets piece i (bytes copied). Pieces must be set in increasing id order.
 * AM_ENOMEM. */
int am__tok_set(am_tokenizer *t, int32_t i, const char *piece, size_t len, float score,
                am_piece_type type);
/* Validates the vocabulary like sentencepiece's model loader and builds the
 * lookup tables. src names the file in error messages. AM_EFORMAT / AM_ENOMEM. */
int am__tok_finish(am_tokenizer *t, const am__tok_spec *spec, const char *src);

/* sentencepiece's PieceToId: reserved pieces first, then normal ones; unk
 * (possibly -1) when absent. */
int32_t am__tok_piece_to_id(const am_tokenizer *t, const char *s, size_t len);
/* Lookup in the normal (mergeable) map only; -1 when absent. */
int32_t am__tok_find_normal(const am_tokenizer *t, const char *s, size_t len);
/* 0..255 for a "<0xXX>" piece (upper-case hex, as sentencepiece writes it), else -1. */
int am__tok_piece_to_byte(const char *s, size_t len);

/* Writes len bytes to path through a temporary name and a rename, so a failed
 * write leaves no partial file. AM_EIO. */
int am__tok_write_file(const char *path, const void *data, size_t len);

/* Format-specific loaders (data is the whole file; path only for messages),
 * called by am_tokenizer_load (load.c). */
int am__tok_load_model_proto(const unsigned char *data, size_t len, const char *path,
                             am_tokenizer **out);
int am__tok_load_llama2c(const unsigned char *data, size_t len, const char *path,
                         am_tokenizer **out);
/* Whether data walks as a llama2.c tokenizer.bin exactly to its end. */
int am__tok_looks_llama2c(const unsigned char *data, size_t len);

/* Infers piece types for vocabularies that carry none (llama2.c, GGUF without
 * token_type): "<unk>" UNKNOWN, "<s>"/"</s>" CONTROL, "<0xXX>" BYTE, else NORMAL. */
am_piece_type am__tok_infer_type(const char *s, size_t len);

#endif
