/* llm_shards/tokenizer/llama2c.c - llama2.c's `tokenizer.bin` reader and writer.
 *
 * Layout (karpathy/llama2.c tokenizer.py export, read by run.c
 * build_tokenizer): int32 max_token_length, then for every token f32 score,
 * int32 len, len bytes; no count, no types, little-endian. The export
 * rewrites pieces: '\u2581' becomes ' ', BOS/EOS become "\n<s>\n"/"\n</s>\n",
 * and (only in the newer export) byte pieces "<0xXX>" become the raw byte as a
 * code point, chr(b) in UTF-8. The tokenizer.bin distributed with llama2.c
 * predates that change and keeps "<0xXX>". We undo all of it on read so the
 * vocabulary is the SentencePiece one again, and write the distributed layout.
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

static int32_t rd_i32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static float rd_f32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void wr_u32(unsigned char *p, uint32_t u) {
    p[0] = (unsigned char)u;
    p[1] = (unsigned char)(u >> 8);
    p[2] = (unsigned char)(u >> 16);
    p[3] = (unsigned char)(u >> 24);
}

int am__tok_looks_llama2c(const unsigned char *data, size_t len) {
    if (len < 4 + 8) return 0;
    int32_t max_len = rd_i32(data);
    if (max_len <= 0) return 0;
    size_t off = 4;
    while (off < len) {
        if (len - off < 8) return 0;
        int32_t l = rd_i32(data + off + 4);
        if (l <= 0 || l > max_len || (size_t)l > len - off - 8) return 0;
        off += 8 + (size_t)l;
    }
    return 1;
}

/* UTF-8 of code point b < 256, as python's chr(b).encode('utf-8'). */
static size_t chr_utf8(int b, unsigned char out[2]) {
    if (b < 0x80) {
        out[0] = (unsigned char)b;
        return 1;
    }
    out[0] = (unsigned char)(0xC0 | (b >> 6));
    out[1] = (unsigned char)(0x80 | (b & 0x3F));
    return 2;
}

int am__tok_load_llama2c(const unsigned char *data, size_t len, const char *path,
                         am_tokenizer **out) {
    *out = NULL;
    if (len < 4)
        return am_err_set(AM_EFORMAT, "%s: max_token_length: file is only %zu bytes", path, len);
    int32_t max_len = rd_i32(data);
    if (max_len <= 0 || max_len > AM_TOKENIZER_MAX_PIECE_BYTES)
        return am_err_set(AM_EFORMAT, "%s: max_token_length is %d (expected 1..%d)", path,
                          (int)max_len, AM_TOKENIZER_MAX_PIECE_BYTES);

    /* Pass 1: walk the records to count them and check every length. */
    int64_t n = 0;
    size_t off = 4;
    while (off < len) {
        if (len - off < 8)
            return am_err_set(
                AM_EFORMAT, "%s: token %lld: record header truncated at byte %zu (%zu bytes left)",
                path, (long long)n, off, len - off);
        int32_t l = rd_i32(data + off + 4);
        if (l <= 0 || l > max_len)
            return am_err_set(AM_EFORMAT,
                              "%s: token %lld: length %d at byte %zu (max_token_length %d)", path,
                              (long long)n, (int)l, off + 4, (int)max_len);
        if ((size_t)l > len - off - 8)
            return am_err_set(AM_EFORMAT, "%s: token %lld: %d bytes at byte %zu run past the end",
                              path, (long long)n, (int)l, off + 8);
        off += 8 + (size_t)l;
        if (++n > AM_TOKENIZER_MAX_VOCAB)
            return am_err_set(AM_ERANGE, "%s: more than %d tokens", path, AM_TOKENIZER_MAX_VOCAB);
    }
    if (n == 0) return am_err_set(AM_EFORMAT, "%s: no tokens", path);

    /* The newer export stores byte b at id 3+b as chr(b); detect the whole
     * block rather than guessing per token, since single characters are also
     * ordinary pieces elsewhere in the vocabulary. */
    int raw_bytes = n >= 259;
    off = 4;
    for (int64_t i = 0; i < 259 && raw_bytes; i++) {
        int32_t l = rd_i32(data + off + 4);
        if (i >= 3) {
            unsigned char u[2];
            size_t ul = chr_utf8((int)(i - 3), u);
            if ((size_t)l != ul || memcmp(data + off + 8, u, ul) != 0) raw_bytes = 0;
        }
        off += 8 + (size_t)l;
    }

    am_tokenizer *t;
    int rc = am__tok_alloc((int32_t)n, &t);
    if (rc) return am_err_prefix(rc, "%s", path);
    char *buf = am_malloc((size_t)max_len * 3 + 8); /* ' ' (1 byte) -> U+2581 (3 bytes) */
    if (!buf) {
        am_tokenizer_destroy(&t);
        return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    }
    off = 4;
    for (int32_t i = 0; i < (int32_t)n; i++) {
        float score = rd_f32(data + off);
        int32_t l = rd_i32(data + off + 4);
        const char *s = (const char *)data + off + 8;
        off += 8 + (size_t)l;
        size_t bl = 0;
        am_piece_type type;
        if (raw_bytes && i >= 3 && i < 259) {
            bl = (size_t)snprintf(buf, 8, "<0x%02X>", (int)(i - 3));
            type = AM_PIECE_BYTE;
        } else if ((l == 5 && memcmp(s, "\n<s>\n", 5) == 0) ||
                   (l == 6 && memcmp(s, "\n</s>\n", 6) == 0)) {
            memcpy(buf, s + 1, (size_t)l - 2);
            bl = (size_t)l - 2;
            type = AM_PIECE_CONTROL;
        } else {
            for (int32_t k = 0; k < l; k++) {
                if (s[k] == ' ') {
                    memcpy(buf + bl, AM__TOK_SPACE, AM__TOK_SPACE_LEN);
                    bl += AM__TOK_SPACE_LEN;
                } else {
                    buf[bl++] = s[k];
                }
            }
            type = am__tok_infer_type(buf, bl);
        }
        if (bl > AM_TOKENIZER_MAX_PIECE_BYTES) {
            rc = am_err_set(AM_EFORMAT, "%s: token %d: %zu bytes after ' ' -> U+2581 (limit %d)",
                            path, (int)i, bl, AM_TOKENIZER_MAX_PIECE_BYTES);
            break;
        }
        if ((rc = am__tok_set(t, i, buf, bl, score, type))) break;
    }
    am_free(buf);
    if (!rc) {
        am__tok_spec spec;
        am__tok_spec_default(&spec); /* LLaMA's normalizer: llama2.c has no other */
        rc = am__tok_finish(t, &spec, path);
    }
    if (rc) {
        am_tokenizer_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

int am_tokenizer_write_llama2c(const am_tokenizer *t, const char *path) {
    if (!t || !path) return am_err_set(AM_EINVAL, "am_tokenizer_write_llama2c: NULL argument");
    if (!t->add_dummy_prefix || t->remove_extra_ws || !t->escape_ws)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: llama2.c's tokenizer.bin cannot express this normalizer "
                          "(needs add_dummy_prefix, no whitespace folding, escaped spaces)",
                          path);
    if ((t->bos >= 0 && strcmp(t->arena + t->off[t->bos], "<s>") != 0) ||
        (t->eos >= 0 && strcmp(t->arena + t->off[t->eos], "</s>") != 0))
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: llama2.c's tokenizer.bin needs BOS/EOS pieces named <s>/</s>", path);
    /* Worst case per piece: 8 header bytes plus the piece (U+2581 -> ' ' only
     * shrinks it) plus the two '\n' around BOS/EOS. */
    size_t cap = 4 + (size_t)t->n_vocab * 10 + t->arena_len;
    unsigned char *d = am_malloc(cap);
    if (!d) return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    size_t off = 4;
    uint32_t max_len = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const char *s = t->arena + t->off[i];
        size_t l = t->len[i];
        uint32_t u;
        memcpy(&u, &t->scores[i], 4);
        wr_u32(d + off, u);
        unsigned char *p = d + off + 8, *q = p;
        if (i == t->bos || i == t->eos) {
            *q++ = '\n';
            memcpy(q, s, l);
            q += l;
            *q++ = '\n';
        } else if (t->types[i] == AM_PIECE_BYTE) {
            memcpy(q, s, l);
            q += l;
        } else {
            for (size_t k = 0; k < l;) {
                if (l - k >= AM__TOK_SPACE_LEN &&
                    memcmp(s + k, AM__TOK_SPACE, AM__TOK_SPACE_LEN) == 0) {
                    *q++ = ' ';
                    k += AM__TOK_SPACE_LEN;
                } else {
                    *q++ = (unsigned char)s[k++];
                }
            }
        }
        uint32_t pl = (uint32_t)(q - p);
        wr_u32(d + off + 4, pl);
        if (pl > max_len) max_len = pl;
        off += 8 + pl;
    }
    wr_u32(d, max_len);
    int rc = am__tok_write_file(path, d, off);
    am_free(d);
    return rc;
}
