/* llm_shards/tokenizer.h - SentencePiece BPE tokenizer with byte fallback (LLaMA-2).
 *
 * Loads the vocabulary (pieces, scores, types) from a SentencePiece
 * `tokenizer.model` (protobuf ModelProto, parsed by hand), from llama2.c's
 * `tokenizer.bin`, or from GGUF metadata (tokenizer.ggml.*). Encoding and
 * decoding are identical to the `sentencepiece` library with LLaMA-2's
 * settings (add_dummy_prefix, no whitespace folding, '\u2581' for spaces,
 * byte fallback <0x00>..<0xFF>, BPE merging the highest-scoring pair first,
 * leftmost on ties). Invalid UTF-8 in the input goes through byte fallback.
 *
 * Ownership: am_tokenizer_* output arrays/strings are allocated with am_malloc
 * and owned by the caller (am_free). Errors: AM_EIO / AM_EFORMAT with a message
 * naming the file and field; AM_ENOMEM; AM_EINVAL for bad ids.
 */
#ifndef AM_TOKENIZER_H
#define AM_TOKENIZER_H

#include "core/ckpt.h"

#include <stddef.h>
#include <stdint.h>

typedef struct am_tokenizer am_tokenizer;

/* SentencePiece piece types (sentencepiece_model.proto). */
typedef enum {
    AM_PIECE_NORMAL = 1, AM_PIECE_UNKNOWN = 2, AM_PIECE_CONTROL = 3,
    AM_PIECE_USER_DEFINED = 4, AM_PIECE_UNUSED = 5, AM_PIECE_BYTE = 6
} am_piece_type;

/* Detects tokenizer.model (protobuf) or tokenizer.bin (llama2.c) by content. */
int am_tokenizer_load(const char *path, am_tokenizer **out);
/* From GGUF metadata tokenizer.ggml.{model="llama",tokens,scores,token_type,
 * bos_token_id,eos_token_id}. */
int am_tokenizer_from_ckpt(const am_ckpt *c, am_tokenizer **out);
/* A deterministic SentencePiece-BPE vocabulary of exactly n_vocab pieces
 * (n_vocab >= 259+some): <unk>, <s>, </s>, the 256 byte pieces, then pieces
 * learned by BPE from a built-in English text, then filler pieces if needed.
 * Used by `anymal mkmodel` when no tokenizer is given. */
int am_tokenizer_synthetic(int32_t n_vocab, am_tokenizer **out);
void am_tokenizer_destroy(am_tokenizer **p);

int32_t am_tokenizer_n_vocab(const am_tokenizer *t);
int32_t am_tokenizer_bos(const am_tokenizer *t); /* 1 for LLaMA */
int32_t am_tokenizer_eos(const am_tokenizer *t); /* 2 for LLaMA */
/* Piece text (with '\u2581' for spaces, "<0x41>" for byte pieces), NULL if out of range. */
const char *am_tokenizer_piece(const am_tokenizer *t, int32_t id);
float am_tokenizer_score(const am_tokenizer *t, int32_t id);
am_piece_type am_tokenizer_type(const am_tokenizer *t, int32_t id);

/* Encodes len bytes of text; prepends BOS when add_bos. *ids is allocated. */
int am_tokenizer_encode(const am_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids, int64_t *n_ids);
/* Decodes like sentencepiece's DecodeIds: control tokens vanish, byte pieces
 * become bytes, '\u2581' becomes ' ', the leading space of the first piece is
 * dropped. *text is NUL-terminated, *len excludes the NUL. */
int am_tokenizer_decode(const am_tokenizer *t, const int32_t *ids, int64_t n, char **text,
                        size_t *len);

/* Streaming decode for generation: the bytes that token id adds after the
 * tokens already emitted (prev = previous id, or -1 at the start of the
 * output). Returns the number of bytes written to buf (cap >= 64 is enough),
 * or a negative error. A multi-byte UTF-8 character split over byte tokens is
 * emitted byte by byte (the caller may buffer). */
int am_tokenizer_token_bytes(const am_tokenizer *t, int32_t prev, int32_t id, char *buf,
                             size_t cap);

/* LLaMA-2-chat prompt (meta-llama generation.py): dialog of n messages with
 * roles "system" (optional, first), then alternating "user"/"assistant",
 * ending with "user". Output: BOS "[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{user} [/INST]"
 * ... with each finished turn as BOS "[INST] {u} [/INST] {a} " EOS. The texts
 * are stripped of surrounding whitespace as generation.py does. AM_EINVAL for
 * a malformed dialog (message names what). */
typedef struct am_chat_msg {
    const char *role;
    const char *content;
} am_chat_msg;
int am_chat_encode(const am_tokenizer *t, const am_chat_msg *msgs, int n, int32_t **ids,
                   int64_t *n_ids);

/* Writers: a SentencePiece ModelProto (loadable by the python sentencepiece
 * library), llama2.c's tokenizer.bin, and the GGUF tokenizer.ggml.* keys. */
int am_tokenizer_write_model(const am_tokenizer *t, const char *path);
int am_tokenizer_write_llama2c(const am_tokenizer *t, const char *path);
int am_tokenizer_write_gguf(const am_tokenizer *t, am_gguf_writer *w);

#endif
