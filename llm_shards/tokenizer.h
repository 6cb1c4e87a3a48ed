/* llm_shards/tokenizer.h - SentencePiece BPE tokenizer with byte fallback (LLaMA-2).
 *
 * Loads the vocabulary (pieces, scores, types) from a SentencePiece
 * `tokenizer.model` (protobuf ModelProto, parsed by hand), from llama2.c's
 * `tokenizer.bin`, or from GGUF metadata (tokenizer.ggml.*). Encoding and
 * decoding are identical to the `sentencepiece` library with LLaMA-2's
 * settings (add_dummy_prefix, no whitespace folding, '\u2581' for spaces,
 * byte fallback <0x00>..<0xFF>, BPE merging the highest-scoring pair first,
 * leftmost on ties). Malformed UTF-8 in the input becomes U+FFFD, one per
 * byte, exactly as sentencepiece's normalizer does (it is not byte-fallback).
 *
 * Ownership: am_tokenizer_* output arrays/strings are allocated with am_malloc
 * and owned by the caller (am_free). Errors: AM_EIO / AM_EFORMAT with a message
 * naming the file and field (AM_ERANGE for a limit, AM_EUNSUPPORTED for a
 * valid model we cannot reproduce exactly); AM_ENOMEM; AM_EINVAL for bad ids.
 * A loaded tokenizer is immutable: any number of threads may encode/decode
 * with it concurrently.
 */
#ifndef AM_TOKENIZER_H
#define AM_TOKENIZER_H

#include "core/ckpt.h"

#include <stddef.h>
#include <stdint.h>

/* Limits for files from outside: a vocabulary, one piece (sentencepiece
 * refuses pieces of 8000 bytes or more), a tokenizer file. */
#define AM_TOKENIZER_MAX_VOCAB       (1 << 22)
#define AM_TOKENIZER_MAX_PIECE_BYTES 7999
#define AM_TOKENIZER_MAX_FILE_BYTES  ((size_t)1 << 30)
/* The longest text one am_tokenizer_encode call takes. */
#define AM_TOKENIZER_MAX_TEXT_BYTES ((size_t)1 << 28)
/* The smallest vocabulary am_tokenizer_synthetic makes: <unk>, <s>, </s>, 256
 * byte pieces and at least one learned piece. */
#define AM_TOKENIZER_MIN_SYNTHETIC_VOCAB 260

typedef struct am_tokenizer am_tokenizer;

/* SentencePiece piece types (sentencepiece_model.proto). */
typedef enum {
    AM_PIECE_NORMAL = 1,
    AM_PIECE_UNKNOWN = 2,
    AM_PIECE_CONTROL = 3,
    AM_PIECE_USER_DEFINED = 4,
    AM_PIECE_UNUSED = 5,
    AM_PIECE_BYTE = 6
} am_piece_type;

/* Detects tokenizer.model (protobuf) or tokenizer.bin (llama2.c) by content.
 * A ModelProto must be BPE with identity normalization (no precompiled
 * charsmap, no whitespace-as-suffix): anything else is AM_EUNSUPPORTED rather
 * than silently tokenized differently. llama2.c files carry no piece types:
 * "<unk>" is UNKNOWN, "\n<s>\n"/"\n</s>\n" are CONTROL "<s>"/"</s>", "<0xXX>"
 * pieces (and, in the newer export, ids 3..258 holding the raw bytes) are
 * BYTE, everything else NORMAL with ' ' read back as '\u2581'. */
int am_tokenizer_load(const char *path, am_tokenizer **out);
/* From GGUF metadata tokenizer.ggml.{model="llama",tokens,scores,token_type,
 * bos_token_id,eos_token_id} (optional: scores (0), token_type (inferred as
 * for llama2.c), the ids (by piece), add_space_prefix, remove_extra_whitespaces).
 * AM_ENOTFOUND without tokenizer.ggml.tokens; AM_EUNSUPPORTED for another
 * tokenizer.ggml.model; AM_EFORMAT for bad arrays (message names the key). */
int am_tokenizer_from_ckpt(const am_ckpt *c, am_tokenizer **out);
/* A deterministic SentencePiece-BPE vocabulary of exactly n_vocab pieces
 * (AM_TOKENIZER_MIN_SYNTHETIC_VOCAB..AM_TOKENIZER_MAX_VOCAB, else AM_ERANGE):
 * <unk>, <s>, </s>, the 256 byte pieces, then pieces learned by BPE from a
 * built-in English text (score -rank), then the text's single characters,
 * then UNUSED "<unused_N>" filler pieces if the text runs out of merges.
 * Used by `anymal mkmodel` when no tokenizer is given. Defined in am_mkmodel
 * (llm_shards/synthetic_vocab.c), not in am_tokenizer: link am_mkmodel to use it. */
int am_tokenizer_synthetic(int32_t n_vocab, am_tokenizer **out);
/* Frees; accepts NULL and *p == NULL; sets *p = NULL. */
void am_tokenizer_destroy(am_tokenizer **p);

int32_t am_tokenizer_n_vocab(const am_tokenizer *t);
/* Special ids; bos/eos are -1 when the vocabulary has no such CONTROL piece
 * ("<s>"/"</s>", or the names in trainer_spec / the GGUF ids). */
int32_t am_tokenizer_bos(const am_tokenizer *t); /* 1 for LLaMA */
int32_t am_tokenizer_eos(const am_tokenizer *t); /* 2 for LLaMA */
int32_t am_tokenizer_unk(const am_tokenizer *t); /* 0 for LLaMA */
/* Id of a piece (exact bytes, e.g. "\xE2\x96\x81the"), -1 if absent. */
int32_t am_tokenizer_find(const am_tokenizer *t, const char *piece, size_t len);
/* The most bytes am_tokenizer_token_bytes can write for one token. */
size_t am_tokenizer_max_token_bytes(const am_tokenizer *t);
/* Piece text (with '\u2581' for spaces, "<0x41>" for byte pieces), NULL if out of range. */
const char *am_tokenizer_piece(const am_tokenizer *t, int32_t id);
/* Score and type of a piece; 0 and (am_piece_type)0 if out of range. */
float am_tokenizer_score(const am_tokenizer *t, int32_t id);
am_piece_type am_tokenizer_type(const am_tokenizer *t, int32_t id);

/* Encodes len bytes of text; prepends BOS when add_bos (AM_EINVAL if there is
 * no BOS piece). *ids is allocated (also for zero ids). Malformed UTF-8 bytes
 * become U+FFFD, one per byte, as sentencepiece's normalizer does; U+FFFD
 * then takes the piece "\xEF\xBF\xBD" if the vocabulary has one, else byte
 * fallback. AM_ERANGE if len exceeds AM_TOKENIZER_MAX_TEXT_BYTES. */
int am_tokenizer_encode(const am_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids, int64_t *n_ids);
/* Decodes like sentencepiece's DecodeIds: control tokens vanish, runs of byte
 * pieces become their bytes (each malformed UTF-8 byte becomes U+FFFD),
 * '\u2581' becomes ' ', <unk> becomes " \u2047 ", and the first non-control
 * piece loses one leading '\u2581' if it is a normal piece (with whitespace
 * folding: every piece until some text appears). *text is NUL-terminated,
 * *len excludes the NUL. AM_EINVAL for an id outside [0, n_vocab). */
int am_tokenizer_decode(const am_tokenizer *t, const int32_t *ids, int64_t n, char **text,
                        size_t *len);

/* Streaming decode for generation: the bytes that token id adds after the
 * tokens already emitted (prev = previous id, or -1 at the start of the
 * output). Returns the number of bytes written to buf, or a negative error
 * (AM_EINVAL bad id, AM_ERANGE cap too small). cap >= 64 is enough for LLaMA;
 * am_tokenizer_max_token_bytes() is enough for any vocabulary. A multi-byte
 * UTF-8 character split over byte tokens is emitted byte by byte (the caller
 * may buffer). Control pieces write nothing; a piece's leading '\u2581' is
 * dropped when prev is -1 or BOS (llama2.c's rule). Concatenated from prev =
 * -1, the output equals am_tokenizer_decode for any encoder output. */
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
/* 1 if any content holds "[INST]", "[/INST]", "<<SYS>>" or "<</SYS>>":
 * generation.py still encodes such a dialog but answers with
 * "Error: special tags are not allowed as part of the prompt." */
int am_chat_has_special_tags(const am_chat_msg *msgs, int n);

/* Writers: a SentencePiece ModelProto (loadable by the python sentencepiece
 * library), llama2.c's tokenizer.bin (the layout of the tokenizer.bin
 * distributed with llama2.c: byte pieces kept as "<0xXX>", BOS/EOS as
 * "\n<s>\n"/"\n</s>\n", '\u2581' written as ' '), and the GGUF
 * tokenizer.ggml.* keys (model "llama", tokens, scores, token_type,
 * bos/eos/unknown ids). Files are written to a temporary name and renamed.
 * AM_EIO; AM_EUNSUPPORTED when the format cannot express the tokenizer
 * (llama2.c and GGUF need add_dummy_prefix and no whitespace folding). */
int am_tokenizer_write_model(const am_tokenizer *t, const char *path);
int am_tokenizer_write_llama2c(const am_tokenizer *t, const char *path);
int am_tokenizer_write_gguf(const am_tokenizer *t, am_gguf_writer *w);

#endif
