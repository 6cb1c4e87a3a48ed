/* core/formats/gguf.c - GGUF v3 reader and writer (core/ckpt.h, docs/model-spec.md
 * section 8).
 *
 * Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv key/values
 * (u64-length strings, u32 value type 0..12, arrays = u32 elem type + u64
 * count + elements, possibly nested), n_tensors infos (name, u32 n_dims, u64
 * ne[n_dims] innermost first, u32 ggml type, u64 offset), padding to
 * general.alignment (default 32), then the data; offsets are relative to the
 * data start and aligned too.
 *
 * Every count and length is checked against the bytes that remain before it
 * is used to size an allocation or a loop, so a 100-byte hostile file cannot
 * make the reader allocate gigabytes or walk off the mapping.
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <string.h>

/* ggml type ids of the tensor types anymal reads and writes. */
enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q8_0 = 8, GGML_BF16 = 30 };

/* Smallest encodings, for bounding counts by the bytes that remain. */
#define MIN_KV_BYTES    13 /* u64 key length + u32 type + 1-byte value */
#define MIN_TINFO_BYTES 24 /* u64 name length + u32 n_dims + u32 type + u64 offset */
#define MIN_ARRAY_BYTES 12 /* u32 elem type + u64 count */

static int ggml_to_dtype(uint32_t t, am_dtype *out) {
    switch (t) {
    case GGML_F32: *out = AM_DTYPE_F32; return 1;
    case GGML_F16: *out = AM_DTYPE_F16; return 1;
    case GGML_Q4_0: *out = AM_DTYPE_Q4_0; return 1;
    case GGML_Q8_0: *out = AM_DTYPE_Q8_0; return 1;
    case GGML_BF16: *out = AM_DTYPE_BF16; return 1;
    default: return 0;
    }
}

static int dtype_to_ggml(am_dtype t, uint32_t *out) {
    switch (t) {
    case AM_DTYPE_F32: *out = GGML_F32; return 1;
    case AM_DTYPE_F16: *out = GGML_F16; return 1;
    case AM_DTYPE_Q4_0: *out = GGML_Q4_0; return 1;
    case AM_DTYPE_Q8_0: *out = GGML_Q8_0; return 1;
    case AM_DTYPE_BF16: *out = GGML_BF16; return 1;
    default: return 0;
    }
}

/* Bytes of one scalar of a GGUF value type; 0 for string/array/invalid. */
static size_t scalar_size(uint32_t t) {
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t <= AM_GGUF_F64 ? sz[t] : 0;
}

/* ---- Reader. ------------------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *base, *p, *end;
    const char *path;
} cursor;

static size_t left(const cursor *c) { return (size_t)(c->end - c->p); }

/* Fails with a message naming what was being read when fewer than n bytes remain. */
static int need(cursor *c, uint64_t n, const char *what) {
    if (n > left(c))
        return am_err_set(AM_EFORMAT, "%s: truncated: %s needs %llu bytes at offset %zu, %zu left",
                          c->path, what, (unsigned long long)n, (size_t)(c->p - c->base), left(c));
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    int rc = need(c, 4, what);
    if (rc) return rc;
    memcpy(v, c->p, 4);
    c->p += 4;
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    memcpy(v, c->p, 8);
    c->p += 8;
    return 0;
}

/* A u64-length string; *s points into the mapping. */
static int rd_str(cursor *c, const char **s, uint64_t *len, const char *what) {
    int rc = rd_u64(c, len, what);
    if (!rc) rc = need(c, *len, what);
    if (rc) return rc;
    *s = (const char *)c->p;
    c->p += *len;
    return 0;
}

/* Skips (or, when m is set, records) one value of type t. ctx names the key. */
static int rd_value(am_ckpt *ck, cursor *c, uint32_t t, int depth, am__meta *m, const char *ctx) {
    char what[AM_CKPT_MAX_NAME_BYTES + 64];
    snprintf(what, sizeof what, "value of '%s'", ctx);
    size_t sz = scalar_size(t);
    if (sz) {
        int rc = need(c, sz, what);
        if (rc) return rc;
        if (m) m->val = c->p;
        c->p += sz;
        return 0;
    }
    if (t == AM_GGUF_STRING) {
        const char *s;
        uint64_t len;
        int rc = rd_str(c, &s, &len, what);
        if (!rc && m) m->val = s, m->len = len;
        return rc;
    }
    if (t != AM_GGUF_ARRAY)
        return am_err_set(AM_EFORMAT, "%s: metadata '%s': invalid value type %u", c->path, ctx, t);
    if (depth >= AM_GGUF_MAX_ARRAY_DEPTH)
        return am_err_set(AM_EFORMAT, "%s: metadata '%s': arrays nested deeper than %d", c->path,
                          ctx, AM_GGUF_MAX_ARRAY_DEPTH);
    uint32_t et;
    uint64_t n;
    int rc = rd_u32(c, &et, what);
    if (!rc) rc = rd_u64(c, &n, what);
    if (rc) return rc;
    if (et > AM_GGUF_F64)
        return am_err_set(AM_EFORMAT, "%s: metadata '%s': invalid array element type %u", c->path,
                          ctx, et);
    /* The smallest element of this type bounds how many can fit. */
    size_t esz = scalar_size(et) ? scalar_size(et) : et == AM_GGUF_STRING ? 8 : MIN_ARRAY_BYTES;
    if (n > left(c) / esz)
        return am_err_set(AM_EFORMAT,
                          "%s: metadata '%s': array of %llu elements cannot fit in "
                          "the %zu bytes left",
                          c->path, ctx, (unsigned long long)n, left(c));
    if (m) {
        m->elem_type = (am_gguf_type)et;
        m->len = n;
        m->val = c->p;
    }
    if (scalar_size(et)) {
        c->p += n * esz;
        return 0;
    }
    am__strref *strs = NULL;
    if (m && et == AM_GGUF_STRING) {
        /* Bounded by the check above: at most (file bytes / 8) entries. */
        strs = am__arena_alloc(&ck->arena, (size_t)n * sizeof *strs);
        if (!strs) return am_err_set(AM_ENOMEM, "%s: metadata '%s': out of memory", c->path, ctx);
        m->strs = strs;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (et == AM_GGUF_STRING) {
            const char *s;
            uint64_t len;
            rc = rd_str(c, &s, &len, what);
            if (rc) return rc;
            if (strs) strs[i] = (am__strref){s, (size_t)len};
        } else {
            rc = rd_value(ck, c, AM_GGUF_ARRAY, depth + 1, NULL, ctx);
            if (rc) return rc;
        }
    }
    return 0;
}

/* A key or tensor name: bounded, UTF-8, no NUL (names are C strings to callers). */
static int rd_name(am_ckpt *ck, cursor *c, uint64_t max, const char *what, char **out) {
    uint64_t len;
    const char *s;
    int rc = rd_u64(c, &len, what);
    if (rc) return rc;
    if (len > max)
        return am_err_set(AM_ERANGE, "%s: %s: length %llu exceeds %llu", c->path, what,
                          (unsigned long long)len, (unsigned long long)max);
    c->p -= 8;
    rc = rd_str(c, &s, &len, what);
    if (rc) return rc;
    if (memchr(s, 0, (size_t)len) || !am__utf8_valid((const uint8_t *)s, (size_t)len))
        return am_err_set(AM_EFORMAT, "%s: %s is not a valid UTF-8 string", c->path, what);
    *out = am__arena_strndup(&ck->arena, s, (size_t)len);
    if (!*out) return am_err_set(AM_ENOMEM, "%s: out of memory", c->path);
    return 0;
}

static int rd_alignment(am_ckpt *ck, uint64_t *align) {
    *align = AM_GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < ck->n_meta; i++) {
        const am__meta *m = &ck->meta[i];
        if (strcmp(m->key, "general.alignment") != 0) continue;
        uint64_t v = 0;
        size_t sz = scalar_size(m->type);
        if (m->type == AM_GGUF_F32 || m->type == AM_GGUF_F64 || m->type == AM_GGUF_BOOL || !sz)
            return am_err_set(AM_EFORMAT, "%s: general.alignment is not an integer", ck->path);
        memcpy(&v, m->val, sz);
        if (v == 0 || (v & (v - 1)) || v > AM_GGUF_MAX_ALIGNMENT)
            return am_err_set(AM_EFORMAT,
                              "%s: general.alignment = %llu is not a power of two <= %u", ck->path,
                              (unsigned long long)v, AM_GGUF_MAX_ALIGNMENT);
        *align = v;
    }
    return 0;
}

int am__gguf_open(am_ckpt *ck, const char *path) {
    ck->format = AM_CKPT_GGUF;
    int64_t fi;
    int rc = am__ckpt_add_file(ck, path, &fi);
    if (rc) return rc;
    const am__mfile *f = &ck->files[fi];
    cursor c = {f->data, f->data, f->data + f->size, f->path};
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if ((rc = need(&c, 24, "header"))) return rc;
    if (memcmp(c.p, "GGUF", 4) != 0)
        return am_err_set(AM_EFORMAT, "%s: bad magic (not \"GGUF\")", path);
    c.p += 4;
    rd_u32(&c, &version, "version");
    if (version != 2 && version != 3) {
        if ((version & 0xffff) == 0)
            return am_err_set(AM_EUNSUPPORTED, "%s: big-endian GGUF is not supported", path);
        return am_err_set(AM_EUNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3)", path,
                          version);
    }
    rd_u64(&c, &n_tensors, "n_tensors");
    rd_u64(&c, &n_kv, "n_kv");
    if (n_tensors > AM_CKPT_MAX_TENSORS)
        return am_err_set(AM_ERANGE, "%s: n_tensors = %llu exceeds %d", path,
                          (unsigned long long)n_tensors, AM_CKPT_MAX_TENSORS);
    if (n_kv > left(&c) / MIN_KV_BYTES || n_tensors > left(&c) / MIN_TINFO_BYTES ||
        n_kv * MIN_KV_BYTES + n_tensors * MIN_TINFO_BYTES > left(&c))
        return am_err_set(AM_EFORMAT,
                          "%s: n_kv = %llu and n_tensors = %llu cannot fit in the %zu-byte file",
                          path, (unsigned long long)n_kv, (unsigned long long)n_tensors, f->size);
    for (uint64_t i = 0; i < n_kv; i++) {
        char what[64];
        snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)i);
        am__meta *m = am__ckpt_new_meta(ck);
        if (!m) return AM_ENOMEM;
        char *key;
        uint32_t t;
        if ((rc = rd_name(ck, &c, AM_GGUF_MAX_KEY_BYTES, what, &key))) return rc;
        m->key = key;
        snprintf(what, sizeof what, "type of key '%.32s'", key);
        if ((rc = rd_u32(&c, &t, what))) return rc;
        m->type = (am_gguf_type)t;
        if ((rc = rd_value(ck, &c, t, 0, m, key))) return rc;
    }
    if (n_tensors > left(&c) / MIN_TINFO_BYTES)
        return am_err_set(AM_EFORMAT, "%s: n_tensors = %llu cannot fit in the %zu-byte file", path,
                          (unsigned long long)n_tensors, f->size);
    uint64_t align;
    if ((rc = rd_alignment(ck, &align))) return rc;
    /* Infos first (offsets are relative to a data start that follows them). */
    uint64_t *offsets = am_calloc((size_t)n_tensors + 1, sizeof *offsets);
    if (!offsets) return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    int64_t first = ck->n_tensors;
    for (uint64_t i = 0; i < n_tensors && !rc; i++) {
        char what[64];
        snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)i);
        am_ckpt_tensor *t = am__ckpt_new_tensor(ck);
        char *name;
        uint32_t n_dims, type;
        if (!t) {
            rc = AM_ENOMEM;
            break;
        }
        if ((rc = rd_name(ck, &c, AM_CKPT_MAX_NAME_BYTES, what, &name))) break;
        t->name = name;
        t->file = f->path;
        snprintf(what, sizeof what, "info of tensor %llu", (unsigned long long)i);
        if ((rc = rd_u32(&c, &n_dims, what))) break;
        if (n_dims > AM_MAX_DIMS) {
            rc = am_err_set(AM_EFORMAT, "%s: tensor '%s': n_dims = %u exceeds %d", path, name,
                            n_dims, AM_MAX_DIMS);
            break;
        }
        t->n_dims = (int)n_dims;
        for (int d = 0; d < AM_MAX_DIMS; d++)
            t->shape[d] = 1;
        for (uint32_t d = 0; d < n_dims && !rc; d++) {
            uint64_t ne;
            if ((rc = rd_u64(&c, &ne, what))) break;
            if (ne > INT64_MAX)
                rc = am_err_set(AM_EFORMAT, "%s: tensor '%s': ne[%u] = %llu is negative", path,
                                name, d, (unsigned long long)ne);
            t->shape[n_dims - 1 - d] = (int64_t)ne; /* ne[0] is innermost */
        }
        if (rc) break;
        if ((rc = rd_u32(&c, &type, what))) break;
        if ((rc = rd_u64(&c, &offsets[i], what))) break;
        if (!ggml_to_dtype(type, &t->dtype)) {
            rc = am_err_set(AM_EUNSUPPORTED,
                            "%s: tensor '%s': ggml type %u is not supported (F32, F16, Q4_0, "
                            "Q8_0, BF16)",
                            path, name, type);
            break;
        }
        rc = am__tensor_nbytes(t->dtype, t->n_dims, t->shape, &t->nbytes);
        if (rc == AM_ESHAPE && n_dims == 0)
            rc = am_err_set(AM_EFORMAT, "%s: tensor '%s': a scalar cannot be %s", path, name,
                            am_dtype_name(t->dtype));
        else if (rc == AM_ESHAPE)
            rc = am_err_set(AM_EFORMAT,
                            "%s: tensor '%s': ne[0] = %lld is not a multiple of the "
                            "%s block (%d)",
                            path, name, (long long)t->shape[n_dims - 1], am_dtype_name(t->dtype),
                            AM_QK);
        else if (rc) {
            char sh[128];
            rc = am_err_set(AM_ERANGE, "%s: tensor '%s': shape %s is too large", path, name,
                            am__shape_str(t->n_dims, t->shape, sh, sizeof sh));
        }
    }
    if (!rc) {
        uint64_t pos = (uint64_t)(c.p - c.base);
        uint64_t data_start = (pos + align - 1) / align * align;
        uint64_t data_len = data_start <= f->size ? f->size - data_start : 0;
        if (n_tensors && data_start > f->size)
            rc = am_err_set(AM_EFORMAT,
                            "%s: truncated: data section starts at %llu, past the end "
                            "(%zu bytes)",
                            path, (unsigned long long)data_start, f->size);
        for (uint64_t i = 0; i < n_tensors && !rc; i++) {
            am_ckpt_tensor *t = &ck->tensors[first + (int64_t)i];
            if (offsets[i] % align)
                rc = am_err_set(AM_EFORMAT,
                                "%s: tensor '%s': offset %llu is not a multiple of the "
                                "alignment %llu",
                                path, t->name, (unsigned long long)offsets[i],
                                (unsigned long long)align);
            else if (offsets[i] > data_len || t->nbytes > data_len - offsets[i])
                rc = am_err_set(AM_EFORMAT,
                                "%s: tensor '%s': data [%llu, +%zu) runs past the end "
                                "of the data section (%llu bytes)",
                                path, t->name, (unsigned long long)offsets[i], t->nbytes,
                                (unsigned long long)data_len);
            else
                t->data = f->data + data_start + offsets[i];
        }
    }
    am_free(offsets);
    if (!rc) rc = am__ckpt_check_overlaps(ck, first, ck->n_tensors, path);
    return rc;
}

/* ---- Writer. ------------------------------------------------------------------ */

struct am_gguf_writer {
    am__buf kv; /* serialized key/values, in insertion order */
    uint64_t n_kv;
    am_strmap keys, names;
    am__arena arena; /* key and tensor name copies */
    am_tensor_src *tensors;
    int64_t n_tensors, cap_tensors;
};

int am_gguf_writer_new(am_gguf_writer **out) {
    *out = am_calloc(1, sizeof **out);
    return *out ? 0 : am_err_set(AM_ENOMEM, "gguf writer: out of memory");
}

void am_gguf_writer_destroy(am_gguf_writer **p) {
    if (!p || !*p) return;
    am_gguf_writer *w = *p;
    am__buf_free(&w->kv);
    am_strmap_free(&w->keys);
    am_strmap_free(&w->names);
    am__arena_free(&w->arena);
    am_free(w->tensors);
    am_free(w);
    *p = NULL;
}

static void put_u32(am__buf *b, uint32_t v) { am__buf_put(b, &v, 4); }
static void put_u64(am__buf *b, uint64_t v) { am__buf_put(b, &v, 8); }
static void put_str(am__buf *b, const char *s, size_t n) {
    put_u64(b, n);
    am__buf_put(b, s, n);
}

/* Validates and records key, then writes its name and value type. The value
 * follows; on ENOMEM the buffer is poisoned and _write fails. */
static int begin_kv(am_gguf_writer *w, const char *key, uint32_t type) {
    size_t n = key ? strlen(key) : 0;
    if (!n || n > AM_GGUF_MAX_KEY_BYTES || !am__utf8_valid((const uint8_t *)key, n))
        return am_err_set(AM_EINVAL, "gguf writer: bad key '%.64s'", key ? key : "(null)");
    char *copy = am__arena_strndup(&w->arena, key, n);
    if (!copy) return am_err_set(AM_ENOMEM, "gguf writer: out of memory");
    int rc = am_strmap_put(&w->keys, copy, n, 0, NULL);
    if (rc < 0) return am_err_set(AM_ENOMEM, "gguf writer: out of memory");
    if (rc == 1) return am_err_set(AM_EINVAL, "gguf writer: duplicate key '%s'", key);
    put_str(&w->kv, key, n);
    put_u32(&w->kv, type);
    w->n_kv++;
    return 0;
}

static int end_kv(am_gguf_writer *w, const char *key) {
    return w->kv.err ? am_err_set(AM_ENOMEM, "gguf writer: key '%s': out of memory", key) : 0;
}

int am_gguf_set_u32(am_gguf_writer *w, const char *key, uint32_t v) {
    int rc = begin_kv(w, key, AM_GGUF_U32);
    if (rc) return rc;
    put_u32(&w->kv, v);
    return end_kv(w, key);
}

int am_gguf_set_i32(am_gguf_writer *w, const char *key, int32_t v) {
    int rc = begin_kv(w, key, AM_GGUF_I32);
    if (rc) return rc;
    am__buf_put(&w->kv, &v, 4);
    return end_kv(w, key);
}

int am_gguf_set_f32(am_gguf_writer *w, const char *key, float v) {
    int rc = begin_kv(w, key, AM_GGUF_F32);
    if (rc) return rc;
    am__buf_put(&w->kv, &v, 4);
    return end_kv(w, key);
}

int am_gguf_set_str(am_gguf_writer *w, const char *key, const char *v) {
    if (!v) return am_err_set(AM_EINVAL, "gguf writer: key '%s': NULL string", key ? key : "");
    int rc = begin_kv(w, key, AM_GGUF_STRING);
    if (rc) return rc;
    put_str(&w->kv, v, strlen(v));
    return end_kv(w, key);
}

int am_gguf_set_arr_str(am_gguf_writer *w, const char *key, const char *const *v,
                        const size_t *lens, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (!v[i])
            return am_err_set(AM_EINVAL, "gguf writer: key '%s': string %llu is NULL",
                              key ? key : "", (unsigned long long)i);
    int rc = begin_kv(w, key, AM_GGUF_ARRAY);
    if (rc) return rc;
    put_u32(&w->kv, AM_GGUF_STRING);
    put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++)
        put_str(&w->kv, v[i], lens ? lens[i] : strlen(v[i]));
    return end_kv(w, key);
}

static int set_arr(am_gguf_writer *w, const char *key, uint32_t et, const void *v, uint64_t n) {
    if (n > SIZE_MAX / 4) return am_err_set(AM_EINVAL, "gguf writer: key '%s': too long", key);
    int rc = begin_kv(w, key, AM_GGUF_ARRAY);
    if (rc) return rc;
    put_u32(&w->kv, et);
    put_u64(&w->kv, n);
    am__buf_put(&w->kv, v, (size_t)n * 4);
    return end_kv(w, key);
}

int am_gguf_set_arr_f32(am_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    return set_arr(w, key, AM_GGUF_F32, v, n);
}

int am_gguf_set_arr_i32(am_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    return set_arr(w, key, AM_GGUF_I32, v, n);
}

int am_gguf_add_tensor(am_gguf_writer *w, const am_tensor_src *t) {
    const char *name = t->name ? t->name : "(null)";
    size_t n = t->name ? strlen(t->name) : 0;
    uint32_t type;
    if (!n || n > AM_CKPT_MAX_NAME_BYTES || !am__utf8_valid((const uint8_t *)name, n))
        return am_err_set(AM_EINVAL, "gguf writer: bad tensor name '%.64s'", name);
    if (!dtype_to_ggml(t->dtype, &type))
        return am_err_set(AM_EUNSUPPORTED, "gguf writer: tensor '%s': dtype %s is not supported",
                          name, am_dtype_name(t->dtype));
    if (t->n_dims < 1 || t->n_dims > AM_MAX_DIMS)
        return am_err_set(AM_EINVAL, "gguf writer: tensor '%s': n_dims %d", name, t->n_dims);
    size_t nb;
    if (am__tensor_nbytes(t->dtype, t->n_dims, t->shape, &nb) || nb != t->nbytes ||
        (nb && !t->data))
        return am_err_set(AM_EINVAL, "gguf writer: tensor '%s': nbytes %zu does not match %s %s",
                          name, t->nbytes, am_dtype_name(t->dtype), "and its shape");
    if (w->n_tensors >= AM_CKPT_MAX_TENSORS)
        return am_err_set(AM_ERANGE, "gguf writer: more than %d tensors", AM_CKPT_MAX_TENSORS);
    /* Grow the table first so that a failure leaves the name index unchanged. */
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? w->cap_tensors * 2 : 16;
        am_tensor_src *p = am_realloc(w->tensors, (size_t)cap * sizeof *p);
        if (!p) return am_err_set(AM_ENOMEM, "gguf writer: out of memory");
        w->tensors = p;
        w->cap_tensors = cap;
    }
    char *copy = am__arena_strndup(&w->arena, name, n);
    if (!copy) return am_err_set(AM_ENOMEM, "gguf writer: out of memory");
    int rc = am_strmap_put(&w->names, copy, n, 0, NULL);
    if (rc < 0) return am_err_set(AM_ENOMEM, "gguf writer: out of memory");
    if (rc == 1) return am_err_set(AM_EINVAL, "gguf writer: duplicate tensor '%s'", name);
    am_tensor_src *d = &w->tensors[w->n_tensors++];
    *d = *t;
    d->name = copy;
    return 0;
}

int am_gguf_writer_write(am_gguf_writer *w, const char *path) {
    if (w->kv.err) return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    const uint64_t align = AM_GGUF_DEFAULT_ALIGNMENT;
    am__buf h = {0};
    am__buf_put(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, (uint64_t)w->n_tensors);
    put_u64(&h, w->n_kv);
    am__buf_put(&h, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        const am_tensor_src *t = &w->tensors[i];
        uint32_t type = 0;
        dtype_to_ggml(t->dtype, &type);
        put_str(&h, t->name, strlen(t->name));
        put_u32(&h, (uint32_t)t->n_dims);
        for (int d = t->n_dims - 1; d >= 0; d--)
            put_u64(&h, (uint64_t)t->shape[d]);
        put_u32(&h, type);
        put_u64(&h, off);
        off = (off + t->nbytes + align - 1) / align * align;
    }
    if (h.err) {
        am__buf_free(&h);
        return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    }
    am__wfile f;
    int rc = am__wfile_open(&f, path);
    if (rc) {
        am__buf_free(&h);
        return rc;
    }
    am__wfile_write(&f, h.p, h.n);
    am__buf_free(&h);
    am__wfile_pad(&f, align);
    for (int64_t i = 0; i < w->n_tensors; i++) {
        am__wfile_write(&f, w->tensors[i].data, w->tensors[i].nbytes);
        am__wfile_pad(&f, align);
    }
    return am__wfile_commit(&f);
}
