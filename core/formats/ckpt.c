/* core/formats/ckpt.c - am_ckpt: format detection, lifetime, lookups and the
 * metadata getters shared by every reader (core/ckpt.h).
 *
 * The readers (safetensors.c, gguf.c, llama2c.c) only parse and validate; the
 * table building, duplicate detection, overlap checks and typed metadata
 * access live here so that every format behaves the same to callers.
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- Table building. ------------------------------------------------------ */

/* Grows an array of elem-sized items so that one more fits. */
static int grow(void **arr, int64_t *cap, int64_t n, size_t elem) {
    if (n < *cap) return 0;
    int64_t ncap = *cap ? *cap * 2 : 16;
    if ((uint64_t)ncap > SIZE_MAX / elem) return AM_ENOMEM;
    void *p = am_realloc(*arr, (size_t)ncap * elem);
    if (!p) return AM_ENOMEM;
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
    *arr = p;
    *cap = ncap;
    return 0;
}

int am__ckpt_add_file(am_ckpt *c, const char *path, int64_t *index) {
    if (grow((void **)&c->files, &c->cap_files, c->n_files, sizeof *c->files))
        return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    int rc = am__mfile_open(&c->files[c->n_files], path);
    if (rc) return rc;
    *index = c->n_files++;
    return 0;
}

am_ckpt_tensor *am__ckpt_new_tensor(am_ckpt *c) {
    if (c->n_tensors >= AM_CKPT_MAX_TENSORS) {
        am_err_set(AM_ERANGE, "%s: more than %d tensors", c->path, AM_CKPT_MAX_TENSORS);
        return NULL;
    }
    if (grow((void **)&c->tensors, &c->cap_tensors, c->n_tensors, sizeof *c->tensors)) {
        am_err_set(AM_ENOMEM, "%s: out of memory for the tensor table", c->path);
        return NULL;
    }
    return &c->tensors[c->n_tensors++];
}

am__meta *am__ckpt_new_meta(am_ckpt *c) {
    if (grow((void **)&c->meta, &c->cap_meta, c->n_meta, sizeof *c->meta)) {
        am_err_set(AM_ENOMEM, "%s: out of memory for metadata", c->path);
        return NULL;
    }
    return &c->meta[c->n_meta++];
}

int am__ckpt_finish(am_ckpt *c) {
    for (int64_t i = 0; i < c->n_tensors; i++) {
        const am_ckpt_tensor *t = &c->tensors[i];
        int64_t prev;
        int rc = am_strmap_put(&c->tensor_index, t->name, strlen(t->name), i, &prev);
        if (rc < 0) return am_err_set(AM_ENOMEM, "%s: out of memory", c->path);
        if (rc == 1 && strcmp(t->file, c->tensors[prev].file) == 0)
            return am_err_set(AM_EFORMAT, "%s: duplicate tensor name '%s'", t->file, t->name);
        if (rc == 1)
            return am_err_set(AM_EFORMAT, "%s: duplicate tensor name '%s' (also in %s)", t->file,
                              t->name, c->tensors[prev].file);
    }
    for (int64_t i = 0; i < c->n_meta; i++) {
        int rc = am_strmap_put(&c->meta_index, c->meta[i].key, strlen(c->meta[i].key), i, NULL);
        if (rc < 0) return am_err_set(AM_ENOMEM, "%s: out of memory", c->path);
        if (rc == 1)
            return am_err_set(AM_EFORMAT, "%s: duplicate metadata key '%s'", c->path,
                              c->meta[i].key);
    }
    return 0;
}

int am__tensor_nbytes(am_dtype dtype, int n_dims, const int64_t *shape, size_t *out) {
    if (n_dims == 0) {
        /* A scalar: one element, which a block type cannot hold. */
        if (am_dtype_block_elems(dtype) != 1) return AM_ESHAPE;
        *out = am_dtype_block_bytes(dtype);
        return 0;
    }
    int64_t last = shape[n_dims - 1];
    int64_t be = am_dtype_block_elems(dtype);
    if (last < 0) return AM_ERANGE;
    if (last % be) return AM_ESHAPE;
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)(last / be), (uint64_t)am_dtype_block_bytes(dtype),
                               &bytes))
        return AM_ERANGE;
    for (int i = 0; i < n_dims - 1; i++) {
        if (shape[i] < 0) return AM_ERANGE;
        if (__builtin_mul_overflow(bytes, (uint64_t)shape[i], &bytes)) return AM_ERANGE;
    }
    /* Element counts must also fit int64 for callers that multiply dims. */
    uint64_t elems = 1;
    for (int i = 0; i < n_dims; i++)
        if (__builtin_mul_overflow(elems, (uint64_t)shape[i], &elems)) return AM_ERANGE;
    if (elems > INT64_MAX || bytes > SIZE_MAX) return AM_ERANGE;
    *out = (size_t)bytes;
    return 0;
}

const char *am__shape_str(int n_dims, const int64_t *shape, char *buf, size_t cap) {
    size_t n = 0;
    n += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n_dims && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

typedef struct span {
    uintptr_t begin;
    int64_t i;
} span;

static int cmp_span(const void *a, const void *b) {
    uintptr_t x = ((const span *)a)->begin, y = ((const span *)b)->begin;
    return x < y ? -1 : x > y;
}

int am__ckpt_check_overlaps(am_ckpt *c, int64_t first, int64_t last, const char *file) {
    int64_t n = 0;
    span *s = am_calloc((size_t)(last - first) + 1, sizeof *s);
    if (!s) return am_err_set(AM_ENOMEM, "%s: out of memory", file);
    for (int64_t i = first; i < last; i++)
        if (c->tensors[i].nbytes) s[n++] = (span){(uintptr_t)c->tensors[i].data, i};
    /* Sorted by start, tensors overlap iff one starts before its predecessor ends. */
    qsort(s, (size_t)n, sizeof *s, cmp_span);
    int rc = 0;
    for (int64_t k = 1; k < n; k++) {
        const am_ckpt_tensor *a = &c->tensors[s[k - 1].i], *b = &c->tensors[s[k].i];
        if ((const uint8_t *)a->data + a->nbytes > (const uint8_t *)b->data) {
            rc =
                am_err_set(AM_EFORMAT, "%s: tensors '%s' and '%s' overlap", file, a->name, b->name);
            break;
        }
    }
    am_free(s);
    return rc;
}

/* 1 if [p, p + n) lies inside one of c's mappings. */
static int in_files(const am_ckpt *c, const void *p, uint64_t n) {
    const uint8_t *b = p;
    for (int64_t k = 0; k < c->n_files; k++) {
        const am__mfile *f = &c->files[k];
        if (f->data && b >= f->data && (size_t)(b - f->data) <= f->size &&
            n <= f->size - (size_t)(b - f->data))
            return 1;
    }
    return 0;
}

int am__ckpt_validate(const am_ckpt *c) {
    for (int64_t i = 0; i < c->n_tensors; i++) {
        const am_ckpt_tensor *t = &c->tensors[i];
        const am__mfile *f = NULL;
        for (int64_t k = 0; k < c->n_files; k++)
            if (t->file == c->files[k].path) f = &c->files[k];
        if (!f || !t->name || (unsigned)t->dtype >= AM_DTYPE_COUNT || t->n_dims < 0 ||
            t->n_dims > AM_MAX_DIMS)
            return am_err_set(AM_EINTERNAL, "tensor %lld: bad file/name/dtype", (long long)i);
        size_t nb;
        if (am__tensor_nbytes(t->dtype, t->n_dims, t->shape, &nb) || nb != t->nbytes)
            return am_err_set(AM_EINTERNAL, "tensor '%s': nbytes mismatch", t->name);
        for (int d = t->n_dims; d < AM_MAX_DIMS; d++)
            if (t->shape[d] != 1)
                return am_err_set(AM_EINTERNAL, "tensor '%s': unused dim not 1", t->name);
        const uint8_t *p = t->data;
        if (t->nbytes && (!f->data || p < f->data || (size_t)(p - f->data) > f->size ||
                          t->nbytes > f->size - (size_t)(p - f->data)))
            return am_err_set(AM_EINTERNAL, "tensor '%s': data outside the mapping", t->name);
    }
    /* GGUF values point into the file; safetensors and llama2.c ones are copies. */
    if (c->format != AM_CKPT_GGUF) return 0;
    for (int64_t i = 0; i < c->n_meta; i++) {
        const am__meta *m = &c->meta[i];
        static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        uint64_t len = 0;
        if (m->type == AM_GGUF_STRING)
            len = m->len;
        else if (m->type == AM_GGUF_ARRAY && m->elem_type <= AM_GGUF_F64)
            len = m->len * sz[m->elem_type]; /* 0 for string and nested arrays */
        else if (m->type <= AM_GGUF_F64)
            len = sz[m->type];
        if (len && !in_files(c, m->val, len))
            return am_err_set(AM_EINTERNAL, "key '%s': value outside the mapping", m->key);
        if (m->type == AM_GGUF_ARRAY && m->elem_type == AM_GGUF_STRING)
            for (uint64_t k = 0; k < m->len; k++)
                if (m->strs[k].len && !in_files(c, m->strs[k].s, m->strs[k].len))
                    return am_err_set(AM_EINTERNAL, "key '%s': string %llu outside the mapping",
                                      m->key, (unsigned long long)k);
    }
    return 0;
}

/* ---- Open / destroy. ------------------------------------------------------ */

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Format of a single file from its first bytes (see core/ckpt.h). */
static am_ckpt_format detect(const char *path, const uint8_t *p, size_t size) {
    if (size >= 4 && memcmp(p, "GGUF", 4) == 0) return AM_CKPT_GGUF;
    if (size >= 9 && p[8] == '{') {
        uint64_t n;
        memcpy(&n, p, 8);
        /* A safetensors header length never reaches 2^32, whereas the same 8
         * bytes of a llama2.c file are dim | hidden_dim << 32 with hidden_dim > 0. */
        if (n < (1ull << 32)) return AM_CKPT_SAFETENSORS;
    }
    /* Content did not decide: a name ending in .safetensors/.gguf gets that
     * parser, whose errors are more useful than llama2.c's. */
    if (has_suffix(path, ".safetensors")) return AM_CKPT_SAFETENSORS;
    if (has_suffix(path, ".gguf")) return AM_CKPT_GGUF;
    return AM_CKPT_LLAMA2C;
}

int am_ckpt_open(const char *path, am_ckpt **out) {
    AM_ASSERT(path && out);
    *out = NULL;
    am_ckpt *c = am_calloc(1, sizeof *c);
    if (!c) return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    c->path = am_strdup(path);
    if (!c->path) {
        am_free(c);
        return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    }
    int rc;
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        rc = am_err_set(e == ENOENT ? AM_ENOTFOUND : AM_EIO, "%s: %s", path, strerror(e));
    } else if (S_ISDIR(st.st_mode)) {
        c->format = AM_CKPT_SAFETENSORS;
        rc = am__safetensors_open_dir(c, path);
    } else {
        /* Map once to sniff the format; the reader maps it again through
         * am__ckpt_add_file, which is cheap (no data is read). */
        am__mfile f;
        rc = am__mfile_open(&f, path);
        if (!rc) {
            c->format = detect(path, f.data, f.size);
            am__mfile_close(&f);
            switch (c->format) {
            case AM_CKPT_SAFETENSORS: rc = am__safetensors_open_file(c, path); break;
            case AM_CKPT_GGUF: rc = am__gguf_open(c, path); break;
            case AM_CKPT_LLAMA2C: rc = am__llama2c_open(c, path); break;
            }
        }
    }
    if (!rc) rc = am__ckpt_finish(c);
    if (rc) {
        am_ckpt_destroy(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void am_ckpt_destroy(am_ckpt **p) {
    if (!p || !*p) return;
    am_ckpt *c = *p;
    for (int64_t i = 0; i < c->n_files; i++)
        am__mfile_close(&c->files[i]);
    am_free(c->files);
    am_free(c->tensors);
    am_free(c->meta);
    am_strmap_free(&c->tensor_index);
    am_strmap_free(&c->meta_index);
    am__arena_free(&c->arena);
    am_free(c->path);
    am_free(c);
    *p = NULL;
}

/* ---- Tensor access. ------------------------------------------------------- */

am_ckpt_format am_ckpt_get_format(const am_ckpt *c) { return c->format; }
const char *am_ckpt_path(const am_ckpt *c) { return c->path; }
int64_t am_ckpt_n_tensors(const am_ckpt *c) { return c->n_tensors; }

const am_ckpt_tensor *am_ckpt_tensor_at(const am_ckpt *c, int64_t i) {
    return i >= 0 && i < c->n_tensors ? &c->tensors[i] : NULL;
}

const am_ckpt_tensor *am_ckpt_find(const am_ckpt *c, const char *name) {
    int64_t i = am_strmap_get(&c->tensor_index, name, strlen(name));
    return i < 0 ? NULL : &c->tensors[i];
}

int am_ckpt_get(const am_ckpt *c, const char *name, int n_dims, const int64_t *shape,
                const am_ckpt_tensor **out) {
    AM_ASSERT(n_dims >= 0 && n_dims <= AM_MAX_DIMS && out);
    *out = NULL;
    const am_ckpt_tensor *t = am_ckpt_find(c, name);
    if (!t) return am_err_set(AM_ENOTFOUND, "%s: tensor '%s' not found", c->path, name);
    /* Compare right-aligned (innermost dims first); a dim missing on either
     * side counts as 1, so [1, 4096] matches [4096] both ways. */
    int n = t->n_dims > n_dims ? t->n_dims : n_dims;
    for (int k = 1; k <= n; k++) {
        int64_t a = k <= t->n_dims ? t->shape[t->n_dims - k] : 1;
        int64_t b = k <= n_dims ? shape[n_dims - k] : 1;
        if (a != b) {
            char got[128], want[128];
            return am_err_set(AM_ESHAPE, "%s: tensor '%s' has shape %s, expected %s", t->file, name,
                              am__shape_str(t->n_dims, t->shape, got, sizeof got),
                              am__shape_str(n_dims, shape, want, sizeof want));
        }
    }
    *out = t;
    return 0;
}

/* ---- Metadata. ------------------------------------------------------------- */

static const char *gguf_type_name(am_gguf_type t) {
    static const char *names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t <= AM_GGUF_F64 ? names[t] : "invalid";
}

static const am__meta *find_meta(const am_ckpt *c, const char *key) {
    int64_t i = am_strmap_get(&c->meta_index, key, strlen(key));
    return i < 0 ? NULL : &c->meta[i];
}

static int wrong_type(const am_ckpt *c, const am__meta *m, const char *want) {
    return am_err_set(AM_EFORMAT, "%s: metadata '%s' is %s, not %s", c->path, m->key,
                      gguf_type_name(m->type), want);
}

int am_ckpt_meta_int(const am_ckpt *c, const char *key, int64_t *out) {
    const am__meta *m = find_meta(c, key);
    if (!m) return AM_ENOTFOUND;
    const void *v = m->val;
    switch (m->type) {
    case AM_GGUF_U8: *out = *(const uint8_t *)v; return 0;
    case AM_GGUF_I8: *out = *(const int8_t *)v; return 0;
    case AM_GGUF_BOOL: *out = *(const uint8_t *)v != 0; return 0;
    case AM_GGUF_U16: {
        uint16_t x;
        memcpy(&x, v, 2);
        *out = x;
        return 0;
    }
    case AM_GGUF_I16: {
        int16_t x;
        memcpy(&x, v, 2);
        *out = x;
        return 0;
    }
    case AM_GGUF_U32: {
        uint32_t x;
        memcpy(&x, v, 4);
        *out = x;
        return 0;
    }
    case AM_GGUF_I32: {
        int32_t x;
        memcpy(&x, v, 4);
        *out = x;
        return 0;
    }
    case AM_GGUF_I64: {
        int64_t x;
        memcpy(&x, v, 8);
        *out = x;
        return 0;
    }
    case AM_GGUF_U64: {
        uint64_t x;
        memcpy(&x, v, 8);
        if (x > INT64_MAX)
            return am_err_set(AM_ERANGE, "%s: metadata '%s' = %llu does not fit int64", c->path,
                              key, (unsigned long long)x);
        *out = (int64_t)x;
        return 0;
    }
    default: return wrong_type(c, m, "an integer");
    }
}

int am_ckpt_meta_float(const am_ckpt *c, const char *key, double *out) {
    const am__meta *m = find_meta(c, key);
    if (!m) return AM_ENOTFOUND;
    if (m->type == AM_GGUF_F32) {
        float x;
        memcpy(&x, m->val, 4);
        *out = x;
        return 0;
    }
    if (m->type == AM_GGUF_F64) {
        memcpy(out, m->val, 8);
        return 0;
    }
    return wrong_type(c, m, "a float");
}

int am_ckpt_meta_str(const am_ckpt *c, const char *key, const char **s, size_t *len) {
    const am__meta *m = find_meta(c, key);
    if (!m) return AM_ENOTFOUND;
    if (m->type != AM_GGUF_STRING) return wrong_type(c, m, "a string");
    *s = m->val;
    *len = (size_t)m->len;
    return 0;
}

int am_ckpt_meta_array(const am_ckpt *c, const char *key, am_ckpt_array *out) {
    const am__meta *m = find_meta(c, key);
    if (!m) return AM_ENOTFOUND;
    if (m->type != AM_GGUF_ARRAY) return wrong_type(c, m, "an array");
    out->elem_type = m->elem_type;
    out->n = m->len;
    out->data = m->val;
    out->priv = m->strs;
    return 0;
}

int am_ckpt_array_str(const am_ckpt_array *a, uint64_t i, const char **s, size_t *len) {
    if (a->elem_type != AM_GGUF_STRING || (!a->priv && a->n))
        return am_err_set(AM_EINVAL, "array of %s is not a string array",
                          gguf_type_name(a->elem_type));
    if (i >= a->n) return AM_ERANGE;
    const am__strref *r = (const am__strref *)a->priv + i;
    *s = r->s;
    *len = r->len;
    return 0;
}
