/* core/ckpt.h - read-only, memory-mapped model checkpoints in any supported format.
 *
 * am_ckpt_open() recognises:
 *   - a safetensors file (*.safetensors),
 *   - a directory holding model.safetensors, or model.safetensors.index.json
 *     (sharded HF layout: {"weight_map": {tensor: file}}), or a single *.safetensors,
 *   - a GGUF v3 file (magic "GGUF"; v2, identical in layout, is accepted too),
 *   - a llama2.c checkpoint (7 int32 header + fp32 tensors, see docs/model-spec.md 8).
 * Files are mmap'ed read-only; tensor data pointers point into the mappings
 * (zero-copy) and stay valid until am_ckpt_destroy(). Nothing is read eagerly
 * beyond headers, so a process that touches only some byte ranges keeps only
 * those pages resident.
 *
 * Tensor shapes are outermost-first (PyTorch order): an HF linear weight is
 * [out_features, in_features]; GGUF's ne[] (innermost first) is reversed on read.
 *
 * Names are those of the file, except for llama2.c checkpoints, which have no
 * names: they are exposed under Meta's names, one tensor per layer (views into
 * the stacked arrays): "tok_embeddings.weight", "layers.N.attention_norm.weight",
 * "layers.N.attention.{wq,wk,wv,wo}.weight", "layers.N.ffn_norm.weight",
 * "layers.N.feed_forward.{w1,w2,w3}.weight", "norm.weight", "output.weight"
 * ("output.weight" aliases tok_embeddings when the classifier is shared), and the
 * header as metadata ints "llama2c.{dim,hidden_dim,n_layers,n_heads,n_kv_heads,
 * vocab_size,seq_len,shared_classifier}" (vocab_size is positive; the sign is in
 * shared_classifier). The unused freq_cis tables are not exposed.
 *
 * Errors: every open failure returns a negative AM_E* code with am_err_msg()
 * naming the file and the tensor or field at fault. A truncated, inconsistent
 * or hostile file (bad magic, absurd header sizes or counts, overlapping or
 * out-of-file offsets, sizes that do not match dtype*shape, duplicate names,
 * bad UTF-8/JSON, misaligned GGUF data) is rejected; it never crashes and never
 * reads outside the mapping.
 *   AM_EFORMAT      malformed or inconsistent content (also: no format matched)
 *   AM_ERANGE       a limit exceeded: header > AM_SAFETENSORS_MAX_HEADER_BYTES,
 *                   more than AM_CKPT_MAX_TENSORS tensors, a name longer than
 *                   AM_CKPT_MAX_NAME_BYTES, dtype*shape overflowing
 *   AM_EUNSUPPORTED valid but not handled: a GGUF tensor type other than F32,
 *                   F16, Q4_0, Q8_0, BF16 (message names tensor and type number),
 *                   a safetensors F8/U16/U32/U64/C64 tensor, > AM_MAX_DIMS dims,
 *                   GGUF versions other than 2 and 3, big-endian GGUF
 *   AM_ENOTFOUND    path missing; a shard named by the index is missing or does
 *                   not hold a tensor the index maps to it (names both)
 *   AM_EIO          open/stat/mmap failed (errno text in the message)
 *   AM_ENOMEM       allocation failed (nothing leaks)
 *
 * Detection: "GGUF" magic -> GGUF; byte 8 == '{' after a u64 below 2^32 ->
 * safetensors; otherwise a name ending in .safetensors / .gguf picks that
 * parser (for its error messages), anything else is tried as llama2.c, whose
 * header must be plausible (dims > 0, n_heads | dim, n_kv_heads | n_heads,
 * even head size) and whose file size must match it exactly.
 *
 * Data pointers are as aligned as the file makes them: GGUF data is aligned to
 * general.alignment, our safetensors writer aligns every tensor to its element
 * size, llama2.c floats are 4-aligned. The mapped files must not be truncated
 * while open (the kernel would raise SIGBUS on access).
 */
#ifndef AM_CKPT_H
#define AM_CKPT_H

#include "core/dtype.h"

#include <stddef.h>
#include <stdint.h>

#define AM_MAX_DIMS                     4
#define AM_SAFETENSORS_MAX_HEADER_BYTES (100u * 1024 * 1024)
#define AM_CKPT_MAX_TENSORS             1000000
#define AM_CKPT_MAX_NAME_BYTES          512

typedef enum { AM_CKPT_SAFETENSORS, AM_CKPT_GGUF, AM_CKPT_LLAMA2C } am_ckpt_format;

typedef struct am_ckpt_tensor {
    const char *name;
    am_dtype dtype;
    int n_dims;
    int64_t shape[AM_MAX_DIMS]; /* outermost first; unused dims are 1 */
    const void *data;           /* into the mapping */
    size_t nbytes;
    const char *file; /* path of the file that holds it */
} am_ckpt_tensor;

typedef struct am_ckpt am_ckpt;

/* Opens path (file or directory, format detected). On success *out owns the
 * mappings; release with am_ckpt_destroy(). */
int am_ckpt_open(const char *path, am_ckpt **out);
/* Unmaps everything; accepts NULL and *p == NULL; sets *p = NULL. */
void am_ckpt_destroy(am_ckpt **p);

am_ckpt_format am_ckpt_get_format(const am_ckpt *c);
/* The path given to am_ckpt_open. */
const char *am_ckpt_path(const am_ckpt *c);
int64_t am_ckpt_n_tensors(const am_ckpt *c);
const am_ckpt_tensor *am_ckpt_tensor_at(const am_ckpt *c, int64_t i);
/* NULL if absent (no error message set). */
const am_ckpt_tensor *am_ckpt_find(const am_ckpt *c, const char *name);
/* Like am_ckpt_find, but checks dtype-independent shape: returns AM_ENOTFOUND
 * or AM_ESHAPE with a message naming the file and tensor. n_dims may be less
 * than the tensor's only if the extra outer dims are 1 (and, symmetrically, more
 * if the extra requested outer dims are 1). *out is NULL on failure. */
int am_ckpt_get(const am_ckpt *c, const char *name, int n_dims, const int64_t *shape,
                const am_ckpt_tensor **out);

/* Metadata: GGUF key/values, safetensors "__metadata__" (strings only),
 * llama2.c header ints. Each returns 0, AM_ENOTFOUND (no message set) or
 * AM_EFORMAT (present with another type; message set). Integer getters accept
 * any GGUF integer type (and bool) that fits int64 (a U64 above INT64_MAX gives
 * AM_ERANGE, message set); float getters accept F32/F64. */
int am_ckpt_meta_int(const am_ckpt *c, const char *key, int64_t *out);
int am_ckpt_meta_float(const am_ckpt *c, const char *key, double *out);
/* String value: not NUL-terminated in GGUF, so a pointer and a length. */
int am_ckpt_meta_str(const am_ckpt *c, const char *key, const char **s, size_t *len);

/* GGUF arrays. elem_type is one of the am_gguf types below. */
typedef enum {
    AM_GGUF_U8 = 0,
    AM_GGUF_I8 = 1,
    AM_GGUF_U16 = 2,
    AM_GGUF_I16 = 3,
    AM_GGUF_U32 = 4,
    AM_GGUF_I32 = 5,
    AM_GGUF_F32 = 6,
    AM_GGUF_BOOL = 7,
    AM_GGUF_STRING = 8,
    AM_GGUF_ARRAY = 9,
    AM_GGUF_U64 = 10,
    AM_GGUF_I64 = 11,
    AM_GGUF_F64 = 12
} am_gguf_type;

typedef struct am_ckpt_array {
    am_gguf_type elem_type;
    uint64_t n;
    const void *data; /* numeric arrays: n packed little-endian elements in the mapping;
                         arrays of arrays (AM_GGUF_ARRAY): the first nested array's raw
                         bytes (parsed for validation only, not exposed further) */
    const void *priv; /* string arrays: reader-private index */
} am_ckpt_array;

/* 0, AM_ENOTFOUND (no message) or AM_EFORMAT (not an array; message set). The
 * array stays valid until am_ckpt_destroy(). */
int am_ckpt_meta_array(const am_ckpt *c, const char *key, am_ckpt_array *out);
/* i-th string of a string array (0 or AM_ERANGE); the string is not
 * NUL-terminated. AM_EINVAL (message set) if a is not a string array. */
int am_ckpt_array_str(const am_ckpt_array *a, uint64_t i, const char **s, size_t *len);

/* ---- Writers (used by `anymal mkmodel` and tests). ---------------------
 * All write to a temporary name and rename, so a failed write leaves no
 * half-written file at path. Tensors are given outermost-first like above;
 * data must hold nbytes = row_bytes(dtype, shape[last]) * prod(other dims). */
typedef struct am_tensor_src {
    const char *name;
    am_dtype dtype;
    int n_dims;
    int64_t shape[AM_MAX_DIMS];
    const void *data;
    size_t nbytes;
} am_tensor_src;

typedef struct am_kv_str {
    const char *key;
    const char *value;
} am_kv_str;

/* One safetensors file; F32/F16/BF16/F64/I64/I32/I16/I8/U8/BOOL only
 * (block types -> AM_EUNSUPPORTED). meta may be NULL. The header lists tensors
 * by name; the data is laid out widest element first, then by name (as the
 * Python library does), so every tensor is aligned to its element size.
 * Duplicate or empty names, names that are not UTF-8 and nbytes that do not
 * match dtype*shape give AM_EINVAL; I/O errors AM_EIO. */
int am_safetensors_write(const char *path, const am_tensor_src *t, int64_t n, const am_kv_str *meta,
                         int64_t n_meta);
/* Into directory dir: model.safetensors when the total is <= max_shard_bytes,
 * else model-0000i-of-0000N.safetensors files of at most max_shard_bytes each
 * (a single larger tensor gets its own shard) plus model.safetensors.index.json
 * with {"metadata":{"total_size":...},"weight_map":{...}}. dir must exist.
 * Shards are filled greedily in the given tensor order. The index is written
 * last; then a stale model.safetensors (which readers would prefer) is removed,
 * and in the single-file case a stale index is removed. Older shard files with
 * other names are left alone. All tensors are validated before anything is
 * written (AM_EINVAL, AM_EUNSUPPORTED). */
int am_safetensors_write_dir(const char *dir, const am_tensor_src *t, int64_t n,
                             size_t max_shard_bytes);

/* GGUF v3 writer. Keys keep insertion order; tensors are aligned to 32 bytes
 * (general.alignment is written when not 32... it is simply 32). Setters return
 * AM_EINVAL for an empty, non-UTF-8 or duplicate key (the writer stays usable)
 * and AM_ENOMEM (then _write fails too; only destroy remains). Tensors: F32, F16, BF16, Q8_0, Q4_0
 * (else AM_EUNSUPPORTED), 1..AM_MAX_DIMS dims, unique names (else AM_EINVAL). */
typedef struct am_gguf_writer am_gguf_writer;
int am_gguf_writer_new(am_gguf_writer **out);
void am_gguf_writer_destroy(am_gguf_writer **p);
int am_gguf_set_u32(am_gguf_writer *w, const char *key, uint32_t v);
int am_gguf_set_i32(am_gguf_writer *w, const char *key, int32_t v);
int am_gguf_set_f32(am_gguf_writer *w, const char *key, float v);
int am_gguf_set_str(am_gguf_writer *w, const char *key, const char *v);
/* lens may be NULL: the strings are then NUL-terminated. */
int am_gguf_set_arr_str(am_gguf_writer *w, const char *key, const char *const *v,
                        const size_t *lens, uint64_t n);
int am_gguf_set_arr_f32(am_gguf_writer *w, const char *key, const float *v, uint64_t n);
int am_gguf_set_arr_i32(am_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
/* The data is referenced, not copied: it must stay valid until _write. */
int am_gguf_add_tensor(am_gguf_writer *w, const am_tensor_src *t);
int am_gguf_writer_write(am_gguf_writer *w, const char *path);

/* llama2.c checkpoint: header then, in run.c order, token_embedding_table,
 * rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real,
 * freq_cis_imag (seq_len*head_size/2 each, written as run.c's export does),
 * then wcls unless shared. All fp32, Meta (adjacent-pair RoPE) layout. */
typedef struct am_llama2c_config {
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;
} am_llama2c_config;

typedef struct am_llama2c_weights {
    const float *token_embedding_table; /* (vocab, dim) */
    const float *rms_att_weight;        /* (layer, dim) */
    const float *wq;                    /* (layer, dim, n_heads * head_size) as [out,in] rows */
    const float *wk;                    /* (layer, n_kv_heads * head_size, dim) */
    const float *wv;                    /* (layer, n_kv_heads * head_size, dim) */
    const float *wo;                    /* (layer, dim, n_heads * head_size) */
    const float *rms_ffn_weight;        /* (layer, dim) */
    const float *w1;                    /* (layer, hidden_dim, dim) */
    const float *w2;                    /* (layer, dim, hidden_dim) */
    const float *w3;                    /* (layer, hidden_dim, dim) */
    const float *rms_final_weight;      /* (dim,) */
    const float *wcls;                  /* (vocab, dim); ignored when shared */
} am_llama2c_weights;

/* AM_EINVAL for a config the reader would reject (non-positive dims, n_heads
 * not dividing dim, n_kv_heads not dividing n_heads, odd head size) or a NULL
 * weight (wcls only when unshared). */
int am_llama2c_write(const char *path, const am_llama2c_config *cfg, const am_llama2c_weights *w);

#endif
