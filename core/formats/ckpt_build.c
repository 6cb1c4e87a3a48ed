/* core/formats/ckpt_build.c - building an am_ckpt's tables: mapped files, the
 * tensor and metadata slots, the name indexes (duplicates rejected), tensor byte
 * sizes and overlap checks, and the test hook that checks every invariant.
 *
 * The readers (safetensors.c, gguf.c, llama2c.c) only parse and validate; what
 * they fill in goes through these helpers so that every format behaves the same
 * to callers. They sit in their own file, below the readers, so that the calls
 * run one way: ckpt.c (open, lookups) -> readers -> ckpt_build.c. In ckpt.c they
 * made a circle with the readers that am_ckpt_open dispatches to.
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
