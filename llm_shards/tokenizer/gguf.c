/* llm_shards/tokenizer/gguf.c - the tokenizer in GGUF metadata
 * (tokenizer.ggml.*, llama.cpp's keys), read through core/ckpt.h.
 *
 * llama.cpp stores SentencePiece pieces as they are ('\u2581' for spaces,
 * "<0x0A>" for byte pieces) and token types with the sentencepiece enum
 * values, so the vocabulary maps one to one. Kept in its own file so that the
 * rest of the tokenizer does not depend on the GGUF code.
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <string.h>

static int elem_int(const am_ckpt_array *a, uint64_t i, int64_t *v) {
    const unsigned char *p = a->data;
    switch (a->elem_type) {
    case AM_GGUF_U8: *v = p[i]; return 0;
    case AM_GGUF_I8: *v = (int8_t)p[i]; return 0;
    case AM_GGUF_U16: *v = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8); return 0;
    case AM_GGUF_I16: *v = (int16_t)(uint16_t)(p[2 * i] | p[2 * i + 1] << 8); return 0;
    case AM_GGUF_U32:
    case AM_GGUF_I32: {
        uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                     (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        *v = a->elem_type == AM_GGUF_U32 ? (int64_t)u : (int64_t)(int32_t)u;
        return 0;
    }
    default: return -1;
    }
}

int am_tokenizer_from_ckpt(const am_ckpt *c, am_tokenizer **out) {
    if (!c || !out) return am_err_set(AM_EINVAL, "am_tokenizer_from_ckpt: NULL argument");
    *out = NULL;
    const char *path = am_ckpt_path(c);
    int rc;
    const char *model;
    size_t model_len;
    rc = am_ckpt_meta_str(c, "tokenizer.ggml.model", &model, &model_len);
    if (rc && rc != AM_ENOTFOUND) return rc;
    if (!rc && !(model_len == 5 && memcmp(model, "llama", 5) == 0))
        return am_err_set(AM_EUNSUPPORTED, "%s: tokenizer.ggml.model is '%.*s' (only 'llama')",
                          path, (int)(model_len > 64 ? 64 : model_len), model);

    am_ckpt_array toks, scores, types;
    rc = am_ckpt_meta_array(c, "tokenizer.ggml.tokens", &toks);
    if (rc == AM_ENOTFOUND)
        return am_err_set(AM_ENOTFOUND, "%s: no tokenizer.ggml.tokens (no tokenizer in the file)",
                          path);
    if (rc) return rc;
    if (toks.elem_type != AM_GGUF_STRING)
        return am_err_set(AM_EFORMAT, "%s: tokenizer.ggml.tokens: element type %d, expected string",
                          path, (int)toks.elem_type);
    if (toks.n == 0 || toks.n > AM_TOKENIZER_MAX_VOCAB)
        return am_err_set(AM_EFORMAT, "%s: tokenizer.ggml.tokens: %llu tokens (expected 1..%d)",
                          path, (unsigned long long)toks.n, AM_TOKENIZER_MAX_VOCAB);
    int has_scores = 0, has_types = 0;
    rc = am_ckpt_meta_array(c, "tokenizer.ggml.scores", &scores);
    if (rc && rc != AM_ENOTFOUND) return rc;
    if (!rc) {
        if (scores.elem_type != AM_GGUF_F32 || scores.n != toks.n)
            return am_err_set(
                AM_EFORMAT,
                "%s: tokenizer.ggml.scores: %llu elements of type %d, expected %llu f32", path,
                (unsigned long long)scores.n, (int)scores.elem_type, (unsigned long long)toks.n);
        has_scores = 1;
    }
    rc = am_ckpt_meta_array(c, "tokenizer.ggml.token_type", &types);
    if (rc && rc != AM_ENOTFOUND) return rc;
    if (!rc) {
        int64_t probe;
        if (types.n != toks.n || (types.n && elem_int(&types, 0, &probe) != 0))
            return am_err_set(AM_EFORMAT,
                              "%s: tokenizer.ggml.token_type: %llu elements of type %d, expected "
                              "%llu integers",
                              path, (unsigned long long)types.n, (int)types.elem_type,
                              (unsigned long long)toks.n);
        has_types = 1;
    }

    am__tok_spec spec;
    am__tok_spec_default(&spec);
    int64_t v;
    static const char *const id_keys[2] = {"tokenizer.ggml.bos_token_id",
                                           "tokenizer.ggml.eos_token_id"};
    int32_t *id_dst[2] = {&spec.bos_id, &spec.eos_id};
    for (int k = 0; k < 2; k++) {
        rc = am_ckpt_meta_int(c, id_keys[k], &v);
        if (rc && rc != AM_ENOTFOUND) return rc;
        if (!rc) {
            if (v < 0 || (uint64_t)v >= toks.n)
                return am_err_set(AM_EFORMAT, "%s: %s = %lld is out of range (vocab %llu)", path,
                                  id_keys[k], (long long)v, (unsigned long long)toks.n);
            *id_dst[k] = (int32_t)v;
        }
    }
    rc = am_ckpt_meta_int(c, "tokenizer.ggml.padding_token_id", &v);
    if (rc && rc != AM_ENOTFOUND) return rc;
    if (!rc && v >= 0 && (uint64_t)v < toks.n) spec.pad_id = (int32_t)v;
    rc = am_ckpt_meta_int(c, "tokenizer.ggml.add_space_prefix", &v);
    if (rc && rc != AM_ENOTFOUND) return rc;
    if (!rc) spec.add_dummy_prefix = v != 0;
    rc = am_ckpt_meta_int(c, "tokenizer.ggml.remove_extra_whitespaces", &v);
    if (rc && rc != AM_ENOTFOUND) return rc;
    if (!rc) spec.remove_extra_ws = v != 0;

    am_tokenizer *t;
    if ((rc = am__tok_alloc((int32_t)toks.n, &t))) return am_err_prefix(rc, "%s", path);
    for (uint64_t i = 0; i < toks.n; i++) {
        const char *s;
        size_t len;
        if ((rc = am_ckpt_array_str(&toks, i, &s, &len))) {
            rc = am_err_set(AM_EFORMAT, "%s: tokenizer.ggml.tokens[%llu]: unreadable", path,
                            (unsigned long long)i);
            goto fail;
        }
        if (len > AM_TOKENIZER_MAX_PIECE_BYTES) {
            rc = am_err_set(AM_EFORMAT, "%s: tokenizer.ggml.tokens[%llu]: %zu bytes (limit %d)",
                            path, (unsigned long long)i, len, AM_TOKENIZER_MAX_PIECE_BYTES);
            goto fail;
        }
        float score = 0.0f;
        if (has_scores) {
            const unsigned char *p = (const unsigned char *)scores.data + 4 * i;
            uint32_t u =
                (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            memcpy(&score, &u, 4);
        }
        am_piece_type type;
        if (has_types) {
            int64_t ty = 0;
            elem_int(&types, i, &ty);
            if (ty == 0) ty = AM_PIECE_NORMAL; /* llama.cpp's UNDEFINED */
            if (ty < AM_PIECE_NORMAL || ty > AM_PIECE_BYTE) {
                rc = am_err_set(AM_EFORMAT, "%s: tokenizer.ggml.token_type[%llu] = %lld is invalid",
                                path, (unsigned long long)i, (long long)ty);
                goto fail;
            }
            type = (am_piece_type)ty;
        } else {
            type = am__tok_infer_type(s, len);
        }
        if ((rc = am__tok_set(t, (int32_t)i, s, len, score, type))) goto fail;
    }
    if ((rc = am__tok_finish(t, &spec, path))) goto fail;
    *out = t;
    return 0;
fail:
    am_tokenizer_destroy(&t);
    return rc;
}

int am_tokenizer_write_gguf(const am_tokenizer *t, am_gguf_writer *w) {
    if (!t || !w) return am_err_set(AM_EINVAL, "am_tokenizer_write_gguf: NULL argument");
    if (!t->add_dummy_prefix || t->remove_extra_ws || !t->escape_ws)
        return am_err_set(AM_EUNSUPPORTED,
                          "tokenizer: the GGUF writer cannot express this normalizer (needs "
                          "add_dummy_prefix, no whitespace folding, escaped spaces)");
    size_t n = (size_t)t->n_vocab;
    const char **strs = am_malloc(n * sizeof *strs);
    size_t *lens = am_malloc(n * sizeof *lens);
    int32_t *types = am_malloc(n * sizeof *types);
    int rc = 0;
    if (!strs || !lens || !types) {
        rc = am_err_set(AM_ENOMEM, "tokenizer: out of memory writing GGUF keys");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        strs[i] = t->arena + t->off[i];
        lens[i] = t->len[i];
        types[i] = t->types[i];
    }
    if ((rc = am_gguf_set_str(w, "tokenizer.ggml.model", "llama")) ||
        (rc = am_gguf_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, n)) ||
        (rc = am_gguf_set_arr_f32(w, "tokenizer.ggml.scores", t->scores, n)) ||
        (rc = am_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, n)))
        goto done;
    if (t->bos >= 0 && (rc = am_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos)))
        goto done;
    if (t->eos >= 0 && (rc = am_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos)))
        goto done;
    if ((rc = am_gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk))) goto done;
    if (t->pad >= 0) rc = am_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)t->pad);
done:
    am_free(strs);
    am_free(lens);
    am_free(types);
    return rc;
}
