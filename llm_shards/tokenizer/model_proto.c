/* llm_shards/tokenizer/model_proto.c - SentencePiece `tokenizer.model`
 * (sentencepiece_model.proto ModelProto) reader and writer, by hand.
 *
 * We read only what tokenization depends on: pieces {piece=1, score=2,
 * type=3}, trainer_spec {model_type=3, byte_fallback=35, pad_id=43,
 * unk_surface=44, bos_piece=46, eos_piece=47, treat_whitespace_as_suffix=24},
 * normalizer_spec {precompiled_charsmap=2, add_dummy_prefix=3,
 * remove_extra_whitespaces=4, escape_whitespaces=5} and denormalizer_spec's
 * charsmap. Every other field is skipped by wire type, so files written by
 * newer sentencepiece versions still load. Every read is bounds-checked: a
 * truncated or hostile file yields AM_EFORMAT naming the file, the field and
 * the byte offset, never a read past the buffer.
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

/* Protobuf wire types. Groups (3, 4) are long deprecated and never appear in
 * a ModelProto, so they are rejected. */
enum { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

typedef struct pb_buf {
    const unsigned char *p, *end;
    const unsigned char *base; /* start of the file, for offsets in messages */
    const char *path;
} pb_buf;

static size_t pb_off(const pb_buf *b) { return (size_t)(b->p - b->base); }

static int pb_varint(pb_buf *b, uint64_t *v, const char *field) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            return am_err_set(AM_EFORMAT, "%s: %s: truncated varint at byte %zu", b->path, field,
                              pb_off(b));
        unsigned char c = *b->p++;
        if (shift == 63 && c > 1)
            return am_err_set(AM_EFORMAT, "%s: %s: varint overflows 64 bits at byte %zu", b->path,
                              field, pb_off(b));
        x |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return am_err_set(AM_EFORMAT, "%s: %s: varint longer than 10 bytes at byte %zu", b->path, field,
                      pb_off(b));
}

static int pb_key(pb_buf *b, uint32_t *field, int *wire, const char *msg) {
    uint64_t k;
    int rc = pb_varint(b, &k, msg);
    if (rc) return rc;
    if ((k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF)
        return am_err_set(AM_EFORMAT, "%s: %s: invalid field number %llu at byte %zu", b->path, msg,
                          (unsigned long long)(k >> 3), pb_off(b));
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    return 0;
}

/* A length-delimited payload: *sub covers it and b moves past it. */
static int pb_len(pb_buf *b, pb_buf *sub, const char *field) {
    uint64_t n;
    int rc = pb_varint(b, &n, field);
    if (rc) return rc;
    if (n > (uint64_t)(b->end - b->p))
        return am_err_set(
            AM_EFORMAT, "%s: %s: length %llu at byte %zu runs past the end (%zu bytes left)",
            b->path, field, (unsigned long long)n, pb_off(b), (size_t)(b->end - b->p));
    *sub = *b;
    sub->end = b->p + n;
    b->p += n;
    return 0;
}

static int pb_skip(pb_buf *b, int wire, uint32_t field, const char *msg) {
    uint64_t v;
    pb_buf sub;
    size_t n;
    switch (wire) {
    case PB_VARINT: return pb_varint(b, &v, msg);
    case PB_LEN: return pb_len(b, &sub, msg);
    case PB_I64: n = 8; break;
    case PB_I32: n = 4; break;
    default:
        return am_err_set(AM_EFORMAT, "%s: %s: field %u has unsupported wire type %d at byte %zu",
                          b->path, msg, field, wire, pb_off(b));
    }
    if ((size_t)(b->end - b->p) < n)
        return am_err_set(AM_EFORMAT, "%s: %s: field %u truncated at byte %zu", b->path, msg, field,
                          pb_off(b));
    b->p += n;
    return 0;
}

static int pb_expect(const pb_buf *b, int wire, int want, const char *field) {
    if (wire == want) return 0;
    return am_err_set(AM_EFORMAT, "%s: %s: wire type %d (expected %d) at byte %zu", b->path, field,
                      wire, want, pb_off(b));
}

/* An int32 field: protobuf sign-extends negative values to 64 bits. */
static int pb_int32(pb_buf *b, int wire, int32_t *out, const char *field) {
    uint64_t v;
    int rc = pb_expect(b, wire, PB_VARINT, field);
    if (rc || (rc = pb_varint(b, &v, field))) return rc;
    int64_t s = (int64_t)v;
    if (s < INT32_MIN || s > INT32_MAX)
        return am_err_set(AM_EFORMAT, "%s: %s: value %lld does not fit int32", b->path, field,
                          (long long)s);
    *out = (int32_t)s;
    return 0;
}

static int pb_bool(pb_buf *b, int wire, int *out, const char *field) {
    uint64_t v;
    int rc = pb_expect(b, wire, PB_VARINT, field);
    if (rc || (rc = pb_varint(b, &v, field))) return rc;
    *out = v != 0;
    return 0;
}

static int pb_bytes(pb_buf *b, int wire, const unsigned char **s, size_t *n, const char *field) {
    pb_buf sub;
    int rc = pb_expect(b, wire, PB_LEN, field);
    if (rc || (rc = pb_len(b, &sub, field))) return rc;
    *s = sub.p;
    *n = (size_t)(sub.end - sub.p);
    return 0;
}

/* ---- reader ----------------------------------------------------------- */

typedef struct proto_info {
    int model_type; /* 1 unigram (default), 2 BPE */
    int byte_fallback;
    int ws_suffix;
    int32_t pad_id;
    const unsigned char *unk_surface, *bos_piece, *eos_piece;
    size_t unk_surface_len, bos_piece_len, eos_piece_len;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    size_t charsmap_len, denorm_charsmap_len;
} proto_info;

static int parse_trainer(pb_buf b, proto_info *in) {
    while (b.p < b.end) {
        uint32_t f;
        int w, rc;
        int32_t v;
        if ((rc = pb_key(&b, &f, &w, "trainer_spec"))) return rc;
        switch (f) {
        case 3:
            if ((rc = pb_int32(&b, w, &v, "trainer_spec.model_type"))) return rc;
            in->model_type = v;
            break;
        case 24:
            if ((rc = pb_bool(&b, w, &in->ws_suffix, "trainer_spec.treat_whitespace_as_suffix")))
                return rc;
            break;
        case 35:
            if ((rc = pb_bool(&b, w, &in->byte_fallback, "trainer_spec.byte_fallback"))) return rc;
            break;
        case 43:
            if ((rc = pb_int32(&b, w, &in->pad_id, "trainer_spec.pad_id"))) return rc;
            break;
        case 44:
            if ((rc = pb_bytes(&b, w, &in->unk_surface, &in->unk_surface_len,
                               "trainer_spec.unk_surface")))
                return rc;
            break;
        case 46:
            if ((rc =
                     pb_bytes(&b, w, &in->bos_piece, &in->bos_piece_len, "trainer_spec.bos_piece")))
                return rc;
            break;
        case 47:
            if ((rc =
                     pb_bytes(&b, w, &in->eos_piece, &in->eos_piece_len, "trainer_spec.eos_piece")))
                return rc;
            break;
        default:
            if ((rc = pb_skip(&b, w, f, "trainer_spec"))) return rc;
        }
    }
    return 0;
}

static int parse_normalizer(pb_buf b, proto_info *in, int denorm) {
    const char *msg = denorm ? "denormalizer_spec" : "normalizer_spec";
    while (b.p < b.end) {
        uint32_t f;
        int w, rc;
        const unsigned char *s;
        size_t n;
        if ((rc = pb_key(&b, &f, &w, msg))) return rc;
        if (f == 2) {
            if ((rc = pb_bytes(&b, w, &s, &n,
                               denorm ? "denormalizer_spec.precompiled_charsmap"
                                      : "normalizer_spec.precompiled_charsmap")))
                return rc;
            *(denorm ? &in->denorm_charsmap_len : &in->charsmap_len) = n;
        } else if (f == 3 && !denorm) {
            if ((rc = pb_bool(&b, w, &in->add_dummy_prefix, "normalizer_spec.add_dummy_prefix")))
                return rc;
        } else if (f == 4 && !denorm) {
            if ((rc = pb_bool(&b, w, &in->remove_extra_ws,
                              "normalizer_spec.remove_extra_whitespaces")))
                return rc;
        } else if (f == 5 && !denorm) {
            if ((rc = pb_bool(&b, w, &in->escape_ws, "normalizer_spec.escape_whitespaces")))
                return rc;
        } else if ((rc = pb_skip(&b, w, f, msg))) {
            return rc;
        }
    }
    return 0;
}

/* One SentencePiece message. Unknown fields (extensions 200+) are skipped. */
static int parse_piece(pb_buf b, int32_t index, const unsigned char **s, size_t *n, float *score,
                       int *type) {
    char field[64];
    *s = NULL;
    *n = 0;
    *score = 0.0f;
    *type = AM_PIECE_NORMAL;
    while (b.p < b.end) {
        uint32_t f;
        int w, rc;
        uint64_t v;
        snprintf(field, sizeof field, "pieces[%d]", (int)index);
        if ((rc = pb_key(&b, &f, &w, field))) return rc;
        switch (f) {
        case 1:
            snprintf(field, sizeof field, "pieces[%d].piece", (int)index);
            if ((rc = pb_bytes(&b, w, s, n, field))) return rc;
            break;
        case 2:
            snprintf(field, sizeof field, "pieces[%d].score", (int)index);
            if ((rc = pb_expect(&b, w, PB_I32, field))) return rc;
            if (b.end - b.p < 4)
                return am_err_set(AM_EFORMAT, "%s: %s: truncated at byte %zu", b.path, field,
                                  pb_off(&b));
            {
                uint32_t u = (uint32_t)b.p[0] | (uint32_t)b.p[1] << 8 | (uint32_t)b.p[2] << 16 |
                             (uint32_t)b.p[3] << 24;
                memcpy(score, &u, 4);
            }
            b.p += 4;
            break;
        case 3:
            snprintf(field, sizeof field, "pieces[%d].type", (int)index);
            if ((rc = pb_expect(&b, w, PB_VARINT, field)) || (rc = pb_varint(&b, &v, field)))
                return rc;
            /* proto2 would silently keep an unknown enum value as an unknown
             * field (type NORMAL); a file like that is corrupt, so say so. */
            if (v < AM_PIECE_NORMAL || v > AM_PIECE_BYTE)
                return am_err_set(AM_EFORMAT, "%s: %s: invalid value %llu", b.path, field,
                                  (unsigned long long)v);
            *type = (int)v;
            break;
        default:
            if ((rc = pb_skip(&b, w, f, field))) return rc;
        }
    }
    return 0;
}

int am__tok_load_model_proto(const unsigned char *data, size_t len, const char *path,
                             am_tokenizer **out) {
    *out = NULL;
    pb_buf top = {data, data + len, data, path};
    proto_info in = {0};
    in.model_type = 1;
    in.pad_id = -1;
    in.add_dummy_prefix = in.remove_extra_ws = in.escape_ws = 1; /* proto defaults */
    int rc;

    /* Pass 1: count pieces and read the specs. */
    int64_t n = 0;
    while (top.p < top.end) {
        uint32_t f;
        int w;
        pb_buf sub;
        if ((rc = pb_key(&top, &f, &w, "ModelProto"))) return rc;
        if (f == 1) {
            if ((rc = pb_expect(&top, w, PB_LEN, "pieces")) || (rc = pb_len(&top, &sub, "pieces")))
                return rc;
            if (++n > AM_TOKENIZER_MAX_VOCAB)
                return am_err_set(AM_ERANGE, "%s: pieces: more than %d", path,
                                  AM_TOKENIZER_MAX_VOCAB);
        } else if (f == 2) {
            if ((rc = pb_expect(&top, w, PB_LEN, "trainer_spec")) ||
                (rc = pb_len(&top, &sub, "trainer_spec")) || (rc = parse_trainer(sub, &in)))
                return rc;
        } else if (f == 3 || f == 5) {
            const char *name = f == 3 ? "normalizer_spec" : "denormalizer_spec";
            if ((rc = pb_expect(&top, w, PB_LEN, name)) || (rc = pb_len(&top, &sub, name)) ||
                (rc = parse_normalizer(sub, &in, f == 5)))
                return rc;
        } else if ((rc = pb_skip(&top, w, f, "ModelProto"))) {
            return rc;
        }
    }
    if (n == 0) return am_err_set(AM_EFORMAT, "%s: pieces: none (not a tokenizer.model?)", path);
    if (in.model_type != 2)
        return am_err_set(AM_EUNSUPPORTED, "%s: trainer_spec.model_type is %d (only BPE = 2)", path,
                          in.model_type);
    if (in.charsmap_len)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: normalizer_spec.precompiled_charsmap is not empty (only identity "
                          "normalization is supported)",
                          path);
    if (in.denorm_charsmap_len)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: denormalizer_spec.precompiled_charsmap is not supported", path);
    if (in.ws_suffix)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: trainer_spec.treat_whitespace_as_suffix is not supported", path);

    /* Pass 2: the pieces. */
    am_tokenizer *t;
    if ((rc = am__tok_alloc((int32_t)n, &t))) return am_err_prefix(rc, "%s", path);
    top.p = data;
    int32_t i = 0;
    while (top.p < top.end) {
        uint32_t f;
        int w;
        pb_buf sub;
        /* Pass 1 validated the framing, so these cannot fail. */
        if ((rc = pb_key(&top, &f, &w, "ModelProto"))) goto fail;
        if (f != 1) {
            if ((rc = pb_skip(&top, w, f, "ModelProto"))) goto fail;
            continue;
        }
        if ((rc = pb_len(&top, &sub, "pieces"))) goto fail;
        const unsigned char *s;
        size_t sl;
        float score;
        int type;
        if ((rc = parse_piece(sub, i, &s, &sl, &score, &type))) goto fail;
        if (sl > AM_TOKENIZER_MAX_PIECE_BYTES) {
            rc = am_err_set(AM_EFORMAT, "%s: pieces[%d].piece: %zu bytes (limit %d)", path, (int)i,
                            sl, AM_TOKENIZER_MAX_PIECE_BYTES);
            goto fail;
        }
        if ((rc = am__tok_set(t, i, (const char *)s, sl, score, (am_piece_type)type))) goto fail;
        i++;
    }
    am__tok_spec spec;
    am__tok_spec_default(&spec);
    spec.byte_fallback = in.byte_fallback;
    spec.add_dummy_prefix = in.add_dummy_prefix;
    spec.remove_extra_ws = in.remove_extra_ws;
    spec.escape_ws = in.escape_ws;
    spec.pad_id = in.pad_id;
    if (in.unk_surface) {
        spec.unk_surface = (const char *)in.unk_surface;
        spec.unk_surface_len = in.unk_surface_len;
    }
    /* An empty bos_piece means the default, as in ModelInterface::bos_piece(). */
    if (in.bos_piece && in.bos_piece_len) {
        spec.bos_piece = (const char *)in.bos_piece;
        spec.bos_piece_len = in.bos_piece_len;
    }
    if (in.eos_piece && in.eos_piece_len) {
        spec.eos_piece = (const char *)in.eos_piece;
        spec.eos_piece_len = in.eos_piece_len;
    }
    if ((rc = am__tok_finish(t, &spec, path))) goto fail;
    *out = t;
    return 0;
fail:
    am_tokenizer_destroy(&t);
    return rc;
}

/* ---- writer ----------------------------------------------------------- */

typedef struct pb_out {
    unsigned char *d;
    size_t n, cap;
    int oom;
} pb_out;

static void out_bytes(pb_out *o, const void *p, size_t n) {
    if (o->oom) return;
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 4096;
        while (cap < o->n + n)
            cap *= 2;
        unsigned char *d = am_realloc(o->d, cap);
        if (!d) {
            o->oom = 1;
            return;
        }
        o->d = d;
        o->cap = cap;
    }
    if (n) memcpy(o->d + o->n, p, n);
    o->n += n;
}

static void out_varint(pb_out *o, uint64_t v) {
    unsigned char b[10];
    int k = 0;
    do {
        b[k] = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v) b[k] |= 0x80;
        k++;
    } while (v);
    out_bytes(o, b, (size_t)k);
}

static void out_key(pb_out *o, uint32_t field, int wire) {
    out_varint(o, (uint64_t)field << 3 | (uint64_t)wire);
}

static void out_int(pb_out *o, uint32_t field, int64_t v) {
    out_key(o, field, PB_VARINT);
    out_varint(o, (uint64_t)v); /* negative int32 -> 10-byte sign extension, as protobuf does */
}

static void out_str(pb_out *o, uint32_t field, const void *s, size_t n) {
    out_key(o, field, PB_LEN);
    out_varint(o, n);
    out_bytes(o, s, n);
}

int am_tokenizer_write_model(const am_tokenizer *t, const char *path) {
    if (!t || !path) return am_err_set(AM_EINVAL, "am_tokenizer_write_model: NULL argument");
    pb_out o = {0}, sub = {0};
    for (int32_t i = 0; i < t->n_vocab; i++) {
        sub.n = 0;
        out_str(&sub, 1, t->arena + t->off[i], t->len[i]);
        out_key(&sub, 2, PB_I32);
        uint32_t u;
        memcpy(&u, &t->scores[i], 4);
        unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                               (unsigned char)(u >> 24)};
        out_bytes(&sub, le, 4);
        if (t->types[i] != AM_PIECE_NORMAL) out_int(&sub, 3, t->types[i]);
        out_key(&o, 1, PB_LEN);
        out_varint(&o, sub.n);
        out_bytes(&o, sub.d, sub.n);
    }
    /* trainer_spec: what the loader (ours and sentencepiece's) consults.
     * bos/eos/unk ids and piece names are written so that sentencepiece's
     * bos_id()/eos_id() find the same pieces we use. */
    sub.n = 0;
    out_int(&sub, 3, 2); /* model_type = BPE */
    out_int(&sub, 4, t->n_vocab);
    out_int(&sub, 35, t->byte_fallback ? 1 : 0);
    out_int(&sub, 40, t->unk);
    out_int(&sub, 41, t->bos);
    out_int(&sub, 42, t->eos);
    out_int(&sub, 43, t->pad);
    out_str(&sub, 44, t->unk_surface, t->unk_surface_len);
    out_str(&sub, 45, t->arena + t->off[t->unk], t->len[t->unk]);
    if (t->bos >= 0) out_str(&sub, 46, t->arena + t->off[t->bos], t->len[t->bos]);
    if (t->eos >= 0) out_str(&sub, 47, t->arena + t->off[t->eos], t->len[t->eos]);
    out_key(&o, 2, PB_LEN);
    out_varint(&o, sub.n);
    out_bytes(&o, sub.d, sub.n);
    /* normalizer_spec: identity (no charsmap). */
    sub.n = 0;
    out_str(&sub, 1, "identity", 8);
    out_int(&sub, 3, t->add_dummy_prefix);
    out_int(&sub, 4, t->remove_extra_ws);
    out_int(&sub, 5, t->escape_ws);
    out_key(&o, 3, PB_LEN);
    out_varint(&o, sub.n);
    out_bytes(&o, sub.d, sub.n);

    int rc;
    if (o.oom || sub.oom)
        rc = am_err_set(AM_ENOMEM, "%s: out of memory building the ModelProto", path);
    else
        rc = am__tok_write_file(path, o.d, o.n);
    am_free(o.d);
    am_free(sub.d);
    return rc;
}
