/* core/formats/ckpt.c - am_ckpt: format detection, lifetime, lookups and the
 * typed metadata getters shared by every reader (core/ckpt.h).
 *
 * am_ckpt_open picks the reader (safetensors.c, gguf.c, llama2c.c), which fills
 * the tables through ckpt_build.c, then builds the indexes; the getters here
 * are the same for every format.
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
