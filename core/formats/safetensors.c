/* core/formats/safetensors.c - safetensors reader (single file, HF sharded
 * directory) and writers (core/ckpt.h, docs/model-spec.md section 8).
 *
 * Layout: u64 LE header length N, N bytes of UTF-8 JSON
 *   {"__metadata__": {str: str}, name: {"dtype": "F16", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the data; offsets are relative to byte 8 + N. Everything in the header
 * is untrusted: every number is checked to be an exact integer, every range to
 * lie inside the file and to match dtype*shape, and tensors must not overlap.
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME  "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

static const struct {
    const char *name;
    am_dtype dtype;
} dtypes[] = {
    {"F64", AM_DTYPE_F64}, {"F32", AM_DTYPE_F32},   {"F16", AM_DTYPE_F16}, {"BF16", AM_DTYPE_BF16},
    {"I64", AM_DTYPE_I64}, {"I32", AM_DTYPE_I32},   {"I16", AM_DTYPE_I16}, {"I8", AM_DTYPE_I8},
    {"U8", AM_DTYPE_U8},   {"BOOL", AM_DTYPE_BOOL},
};

/* Valid safetensors dtypes that anymal has no kernels for. */
static const char *const unsupported_dtypes[] = {
    "U16", "U32", "U64", "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
};

static const char *dtype_str(am_dtype t) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == t) return dtypes[i].name;
    return NULL;
}

/* An exact non-negative integer <= 2^53 (the range where a double is exact). */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= AM_JSON_MAX_EXACT_INT) || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* ---- Reader. ------------------------------------------------------------------ */

static int parse_tensor(am_ckpt *c, const am__mfile *f, const cJSON *j, size_t data_len,
                        const uint8_t *data) {
    const char *name = j->string;
    const char *path = f->path;
    size_t name_len = strlen(name);
    if (name_len > AM_CKPT_MAX_NAME_BYTES)
        return am_err_set(AM_ERANGE, "%s: tensor name of %zu bytes exceeds %d ('%.64s...')", path,
                          name_len, AM_CKPT_MAX_NAME_BYTES, name);
    if (!cJSON_IsObject(j))
        return am_err_set(AM_EFORMAT, "%s: tensor '%s': entry is not an object", path, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(jd))
        return am_err_set(AM_EFORMAT, "%s: tensor '%s': missing or non-string dtype", path, name);
    am_ckpt_tensor *t = am__ckpt_new_tensor(c);
    if (!t) return am_err_prefix(AM_ENOMEM, "%s: tensor '%s'", path, name);
    int found = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (strcmp(jd->valuestring, dtypes[i].name) == 0) {
            t->dtype = dtypes[i].dtype;
            found = 1;
        }
    }
    if (!found) {
        for (size_t i = 0; i < sizeof unsupported_dtypes / sizeof unsupported_dtypes[0]; i++)
            if (strcmp(jd->valuestring, unsupported_dtypes[i]) == 0)
                return am_err_set(AM_EUNSUPPORTED, "%s: tensor '%s': dtype %s is not supported",
                                  path, name, jd->valuestring);
        return am_err_set(AM_EFORMAT, "%s: tensor '%s': unknown dtype '%.32s'", path, name,
                          jd->valuestring);
    }
    if (!cJSON_IsArray(js))
        return am_err_set(AM_EFORMAT, "%s: tensor '%s': missing or non-array shape", path, name);
    int n_dims = cJSON_GetArraySize(js);
    if (n_dims > AM_MAX_DIMS)
        return am_err_set(AM_EUNSUPPORTED, "%s: tensor '%s': shape has %d dims, at most %d", path,
                          name, n_dims, AM_MAX_DIMS);
    t->n_dims = n_dims;
    for (int d = 0; d < AM_MAX_DIMS; d++)
        t->shape[d] = 1;
    int d = 0;
    for (const cJSON *e = js->child; e; e = e->next, d++) {
        uint64_t v;
        if (!json_uint(e, &v))
            return am_err_set(AM_EFORMAT,
                              "%s: tensor '%s': shape[%d] is not a non-negative integer <= 2^53",
                              path, name, d);
        t->shape[d] = (int64_t)v;
    }
    size_t nbytes;
    int rc = am__tensor_nbytes(t->dtype, t->n_dims, t->shape, &nbytes);
    if (rc) {
        char sh[128];
        return am_err_set(AM_ERANGE, "%s: tensor '%s': shape %s is too large", path, name,
                          am__shape_str(t->n_dims, t->shape, sh, sizeof sh));
    }
    uint64_t begin, end;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &begin) ||
        !json_uint(jo->child->next, &end))
        return am_err_set(AM_EFORMAT, "%s: tensor '%s': data_offsets must be [begin, end] integers",
                          path, name);
    if (begin > end || end > data_len)
        return am_err_set(AM_EFORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] outside the %zu data bytes",
                          path, name, (unsigned long long)begin, (unsigned long long)end, data_len);
    if (end - begin != nbytes) {
        char sh[128];
        return am_err_set(AM_EFORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but %s %s "
                          "needs %zu",
                          path, name, (unsigned long long)begin, (unsigned long long)end,
                          (unsigned long long)(end - begin), jd->valuestring,
                          am__shape_str(t->n_dims, t->shape, sh, sizeof sh), nbytes);
    }
    t->name = am__arena_strndup(&c->arena, name, name_len);
    if (!t->name) return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    t->data = data + begin;
    t->nbytes = nbytes;
    t->file = f->path;
    return 0;
}

static int parse_metadata(am_ckpt *c, const am__mfile *f, const cJSON *j, am_strmap *seen) {
    if (!cJSON_IsObject(j))
        return am_err_set(AM_EFORMAT, "%s: __metadata__ is not an object", f->path);
    for (const cJSON *e = j->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return am_err_set(AM_EFORMAT, "%s: __metadata__ '%s' is not a string", f->path,
                              e->string);
        size_t klen = strlen(e->string);
        char *key = am__arena_strndup(&c->arena, e->string, klen);
        if (!key) return am_err_set(AM_ENOMEM, "%s: out of memory", f->path);
        if (seen) {
            /* Shards of one model repeat the same metadata ({"format": "pt"});
             * the first shard's value wins. */
            int rc = am_strmap_put(seen, key, klen, 0, NULL);
            if (rc < 0) return am_err_set(AM_ENOMEM, "%s: out of memory", f->path);
            if (rc == 1) continue;
        }
        am__meta *m = am__ckpt_new_meta(c);
        if (!m) return AM_ENOMEM;
        size_t vlen = strlen(e->valuestring);
        m->key = key;
        m->type = AM_GGUF_STRING;
        m->val = am__arena_strndup(&c->arena, e->valuestring, vlen);
        m->len = vlen;
        if (!m->val) return am_err_set(AM_ENOMEM, "%s: out of memory", f->path);
    }
    return 0;
}

/* Maps path, parses its header and appends its tensors (and metadata) to c.
 * seen_meta: NULL for a single file (duplicate keys are an error), else the
 * keys taken from earlier shards. */
static int parse_file(am_ckpt *c, const char *path, am_strmap *seen_meta) {
    int64_t fi;
    int rc = am__ckpt_add_file(c, path, &fi);
    if (rc) return rc;
    const am__mfile *f = &c->files[fi];
    if (f->size < 8)
        return am_err_set(AM_EFORMAT, "%s: truncated: %zu bytes, need 8 for the header length",
                          path, f->size);
    uint64_t n;
    memcpy(&n, f->data, 8);
    if (n > AM_SAFETENSORS_MAX_HEADER_BYTES)
        return am_err_set(AM_ERANGE, "%s: header length %llu exceeds the limit of %u bytes", path,
                          (unsigned long long)n, AM_SAFETENSORS_MAX_HEADER_BYTES);
    if (n > f->size - 8)
        return am_err_set(AM_EFORMAT,
                          "%s: truncated: header length %llu runs past the end of the file "
                          "(%zu bytes)",
                          path, (unsigned long long)n, f->size);
    const char *hdr = (const char *)f->data + 8;
    if (n < 2 || hdr[0] != '{')
        return am_err_set(AM_EFORMAT, "%s: header does not start with '{'", path);
    size_t bad = am__utf8_bad_at((const uint8_t *)hdr, (size_t)n);
    if (bad != n)
        return am_err_set(AM_EFORMAT, "%s: header is not valid UTF-8 (byte %zu, after \"%.*s\")",
                          path, bad, (int)(bad < 40 ? bad : 40), hdr + (bad < 40 ? 0 : bad - 40));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + n ? (size_t)(end - hdr) : 0;
        return am_err_set(AM_EFORMAT, "%s: header is not valid JSON (near byte %zu)", path, at);
    }
    /* The writers pad the header with spaces; anything else after the JSON
     * value means the header length is wrong. */
    for (const char *p = end; p < hdr + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return am_err_set(AM_EFORMAT, "%s: header has trailing bytes after the JSON at %zu",
                              path, (size_t)(p - hdr));
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return am_err_set(AM_EFORMAT, "%s: header is not a JSON object", path);
    }
    size_t data_len = f->size - 8 - (size_t)n;
    const uint8_t *data = f->data + 8 + n;
    int64_t first = c->n_tensors;
    int seen_md = 0;
    for (const cJSON *j = root->child; j && !rc; j = j->next) {
        if (strcmp(j->string, "__metadata__") == 0) {
            if (seen_md++)
                rc = am_err_set(AM_EFORMAT, "%s: duplicate __metadata__", path);
            else
                rc = parse_metadata(c, f, j, seen_meta);
        } else {
            rc = parse_tensor(c, f, j, data_len, data);
        }
    }
    cJSON_Delete(root);
    if (!rc) rc = am__ckpt_check_overlaps(c, first, c->n_tensors, path);
    return rc;
}

int am__safetensors_open_file(am_ckpt *c, const char *path) {
    c->format = AM_CKPT_SAFETENSORS;
    return parse_file(c, path, NULL);
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = am_malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int open_index(am_ckpt *c, const char *dir, const char *index_path) {
    am__mfile f;
    int rc = am__mfile_open(&f, index_path);
    if (rc) return rc;
    cJSON *root = NULL;
    am_strmap shards = {0}, names = {0}, seen_meta = {0};
    char **shard_paths = NULL;
    int64_t n_shards = 0;
    if (f.size > AM_SAFETENSORS_MAX_HEADER_BYTES) {
        rc = am_err_set(AM_ERANGE, "%s: %zu bytes exceeds the limit of %u", index_path, f.size,
                        AM_SAFETENSORS_MAX_HEADER_BYTES);
        goto out;
    }
    if (!f.size || !am__utf8_valid(f.data, f.size) ||
        !(root = cJSON_ParseWithLength((const char *)f.data, f.size))) {
        rc = am_err_set(AM_EFORMAT, "%s: not valid UTF-8 JSON", index_path);
        goto out;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        rc = am_err_set(AM_EFORMAT, "%s: weight_map is missing or not an object", index_path);
        goto out;
    }
    /* Shards in order of first mention, each validated as a plain file name so
     * that an index cannot point outside its directory. */
    int64_t n_entries = cJSON_GetArraySize(wm);
    shard_paths = am_calloc((size_t)n_entries + 1, sizeof *shard_paths);
    if (!shard_paths) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", index_path);
        goto out;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
            strcmp(e->valuestring, ".") == 0 || strcmp(e->valuestring, "..") == 0) {
            rc = am_err_set(AM_EFORMAT, "%s: weight_map['%s'] is not a file name", index_path,
                            e->string);
            goto out;
        }
        int r = am_strmap_put(&shards, e->valuestring, strlen(e->valuestring), n_shards, NULL);
        if (r < 0) {
            rc = am_err_set(AM_ENOMEM, "%s: out of memory", index_path);
            goto out;
        }
        if (r == 1) continue;
        shard_paths[n_shards] = join(dir, e->valuestring);
        if (!shard_paths[n_shards]) {
            rc = am_err_set(AM_ENOMEM, "%s: out of memory", index_path);
            goto out;
        }
        n_shards++;
        rc = parse_file(c, shard_paths[n_shards - 1], &seen_meta);
        if (rc == AM_ENOTFOUND) {
            rc = am_err_set(AM_ENOTFOUND, "%s: shard %s (for tensor '%s') is missing", index_path,
                            shard_paths[n_shards - 1], e->string);
            goto out;
        }
        if (rc) goto out;
    }
    /* Every weight_map entry must be in the shard it names. */
    for (int64_t i = 0; i < c->n_tensors; i++) {
        const am_ckpt_tensor *t = &c->tensors[i];
        int64_t prev;
        int r = am_strmap_put(&names, t->name, strlen(t->name), i, &prev);
        if (r < 0) {
            rc = am_err_set(AM_ENOMEM, "%s: out of memory", index_path);
            goto out;
        }
        if (r == 1) {
            rc = am_err_set(AM_EFORMAT, "%s: tensor '%s' is in both %s and %s", index_path, t->name,
                            c->tensors[prev].file, t->file);
            goto out;
        }
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        int64_t ti = am_strmap_get(&names, e->string, strlen(e->string));
        int64_t si = am_strmap_get(&shards, e->valuestring, strlen(e->valuestring));
        if (ti < 0 || strcmp(c->tensors[ti].file, shard_paths[si]) != 0) {
            rc = am_err_set(AM_ENOTFOUND, "%s: tensor '%s' is not in its shard %s%s%s", index_path,
                            e->string, shard_paths[si], ti < 0 ? "" : " but in ",
                            ti < 0 ? "" : c->tensors[ti].file);
            goto out;
        }
    }
out:
    if (shard_paths)
        for (int64_t i = 0; i < n_shards; i++)
            am_free(shard_paths[i]);
    am_free(shard_paths);
    am_strmap_free(&shards);
    am_strmap_free(&names);
    am_strmap_free(&seen_meta);
    cJSON_Delete(root);
    am__mfile_close(&f);
    return rc;
}

int am__safetensors_open_dir(am_ckpt *c, const char *dir) {
    c->format = AM_CKPT_SAFETENSORS;
    char *p = join(dir, SINGLE_NAME);
    if (!p) return am_err_set(AM_ENOMEM, "%s: out of memory", dir);
    if (is_file(p)) {
        int rc = parse_file(c, p, NULL);
        am_free(p);
        return rc;
    }
    am_free(p);
    p = join(dir, INDEX_NAME);
    if (!p) return am_err_set(AM_ENOMEM, "%s: out of memory", dir);
    if (is_file(p)) {
        int rc = open_index(c, dir, p);
        am_free(p);
        return rc;
    }
    am_free(p);
    /* Neither: accept a directory holding exactly one *.safetensors file. */
    DIR *d = opendir(dir);
    if (!d) return am_err_set(AM_EIO, "%s: cannot list: %s", dir, strerror(errno));
    char *only = NULL;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n <= 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0) continue;
        if (++count == 1) only = join(dir, e->d_name);
    }
    closedir(d);
    int rc;
    if (count == 0)
        rc = am_err_set(AM_ENOTFOUND, "%s: no %s, %s or *.safetensors file", dir, SINGLE_NAME,
                        INDEX_NAME);
    else if (count > 1)
        rc = am_err_set(AM_EFORMAT, "%s: %d *.safetensors files but no %s", dir, count, INDEX_NAME);
    else if (!only)
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", dir);
    else
        rc = parse_file(c, only, NULL);
    am_free(only);
    return rc;
}

/* ---- Writers. ----------------------------------------------------------------- */

static int check_src(const char *path, const am_tensor_src *t) {
    const char *name = t->name ? t->name : "(null)";
    if (!t->name || !t->name[0] || strlen(t->name) > AM_CKPT_MAX_NAME_BYTES ||
        !am__utf8_valid((const uint8_t *)t->name, strlen(t->name)) ||
        strcmp(t->name, "__metadata__") == 0)
        return am_err_set(AM_EINVAL, "%s: bad tensor name '%.64s'", path, name);
    if (!dtype_str(t->dtype))
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: tensor '%s': dtype %s cannot be stored in "
                          "safetensors",
                          path, name, am_dtype_name(t->dtype));
    if (t->n_dims < 0 || t->n_dims > AM_MAX_DIMS)
        return am_err_set(AM_EINVAL, "%s: tensor '%s': n_dims %d", path, name, t->n_dims);
    size_t nb;
    if (am__tensor_nbytes(t->dtype, t->n_dims, t->shape, &nb) || nb != t->nbytes ||
        (nb && !t->data))
        return am_err_set(AM_EINVAL, "%s: tensor '%s': nbytes %zu does not match dtype*shape", path,
                          name, t->nbytes);
    return 0;
}

/* qsort has no context argument; the comparators read the array through this
 * (thread-local so that concurrent writers do not race). */
static _Thread_local const am_tensor_src *sort_base;

static int cmp_name(const void *a, const void *b) {
    return strcmp(sort_base[*(const int64_t *)a].name, sort_base[*(const int64_t *)b].name);
}

/* Data order: widest elements first, then by name, as the Python library does,
 * so every tensor starts at an offset aligned to its element size. */
static int cmp_layout(const void *a, const void *b) {
    const am_tensor_src *x = &sort_base[*(const int64_t *)a], *y = &sort_base[*(const int64_t *)b];
    size_t bx = am_dtype_block_bytes(x->dtype), by = am_dtype_block_bytes(y->dtype);
    if (bx != by) return bx > by ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Indexes of t sorted with cmp; with cmp_name, AM_EINVAL on a duplicate name. */
static int sorted(const char *path, const am_tensor_src *t, int64_t n,
                  int (*cmp)(const void *, const void *), int64_t **out) {
    int64_t *idx = am_calloc((size_t)n + 1, sizeof *idx);
    if (!idx) return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    sort_base = t;
    qsort(idx, (size_t)n, sizeof *idx, cmp);
    if (cmp == cmp_name) {
        for (int64_t i = 1; i < n; i++) {
            const char *name = t[idx[i]].name;
            if (strcmp(t[idx[i - 1]].name, name) == 0) {
                am_free(idx);
                return am_err_set(AM_EINVAL, "%s: duplicate tensor name '%s'", path, name);
            }
        }
    }
    *out = idx;
    return 0;
}

int am_safetensors_write(const char *path, const am_tensor_src *t, int64_t n, const am_kv_str *meta,
                         int64_t n_meta) {
    if (n < 0 || n > AM_CKPT_MAX_TENSORS || n_meta < 0 || (n && !t) || (n_meta && !meta))
        return am_err_set(AM_EINVAL, "%s: bad tensor or metadata count", path);
    for (int64_t i = 0; i < n; i++) {
        int rc = check_src(path, &t[i]);
        if (rc) return rc;
    }
    for (int64_t i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value ||
            !am__utf8_valid((const uint8_t *)meta[i].key, strlen(meta[i].key)) ||
            !am__utf8_valid((const uint8_t *)meta[i].value, strlen(meta[i].value)))
            return am_err_set(AM_EINVAL, "%s: metadata entry %lld is NULL or not UTF-8", path,
                              (long long)i);
    }
    int64_t *by_name = NULL, *by_layout = NULL;
    int rc = sorted(path, t, n, cmp_name, &by_name);
    if (!rc) rc = sorted(path, t, n, cmp_layout, &by_layout);
    if (rc) {
        am_free(by_name);
        return rc;
    }
    /* Offsets follow the layout order; the header lists tensors by name. */
    uint64_t *begin = am_calloc((size_t)n + 1, sizeof *begin);
    am__buf h = {0};
    if (!begin) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    uint64_t off = 0;
    for (int64_t k = 0; k < n; k++) {
        begin[by_layout[k]] = off;
        off += t[by_layout[k]].nbytes;
    }
    am__buf_put(&h, "{", 1);
    if (n_meta) {
        am__buf_put(&h, "\"__metadata__\":{", 16);
        for (int64_t i = 0; i < n_meta; i++) {
            if (i) am__buf_put(&h, ",", 1);
            am__buf_json_str(&h, meta[i].key);
            am__buf_put(&h, ":", 1);
            am__buf_json_str(&h, meta[i].value);
        }
        am__buf_put(&h, "}", 1);
    }
    for (int64_t k = 0; k < n; k++) {
        const am_tensor_src *s = &t[by_name[k]];
        if (k || n_meta) am__buf_put(&h, ",", 1);
        am__buf_json_str(&h, s->name);
        am__buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_str(s->dtype));
        for (int d = 0; d < s->n_dims; d++)
            am__buf_printf(&h, "%s%lld", d ? "," : "", (long long)s->shape[d]);
        uint64_t b = begin[by_name[k]];
        am__buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)b,
                       (unsigned long long)(b + s->nbytes));
    }
    am__buf_put(&h, "}", 1);
    /* Pad with spaces so the data starts 8-byte aligned (8 + N = 0 mod 8). */
    while (!h.err && h.n % 8)
        am__buf_put(&h, " ", 1);
    if (h.err) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (h.n > AM_SAFETENSORS_MAX_HEADER_BYTES) {
        rc = am_err_set(AM_ERANGE, "%s: header of %zu bytes exceeds %u", path, h.n,
                        AM_SAFETENSORS_MAX_HEADER_BYTES);
        goto out;
    }
    am__wfile w;
    rc = am__wfile_open(&w, path);
    if (rc) goto out;
    uint64_t hn = h.n;
    am__wfile_write(&w, &hn, 8);
    am__wfile_write(&w, h.p, h.n);
    for (int64_t k = 0; k < n; k++)
        am__wfile_write(&w, t[by_layout[k]].data, t[by_layout[k]].nbytes);
    rc = am__wfile_commit(&w);
out:
    am__buf_free(&h);
    am_free(begin);
    am_free(by_name);
    am_free(by_layout);
    return rc;
}

int am_safetensors_write_dir(const char *dir, const am_tensor_src *t, int64_t n,
                             size_t max_shard_bytes) {
    if (n < 0 || n > AM_CKPT_MAX_TENSORS || (n && !t))
        return am_err_set(AM_EINVAL, "%s: bad tensor count", dir);
    /* Validate everything before writing anything, so that a bad tensor does
     * not leave a half-written set of shards. */
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        int rc = check_src(dir, &t[i]);
        if (rc) return rc;
        total += t[i].nbytes;
    }
    int64_t *by_name = NULL;
    int rc = sorted(dir, t, n, cmp_name, &by_name);
    if (rc) return rc;
    char *single = join(dir, SINGLE_NAME), *index = join(dir, INDEX_NAME);
    int64_t *shard_of = am_calloc((size_t)n + 1, sizeof *shard_of);
    char *shard_path = NULL;
    am__buf h = {0};
    if (!single || !index || !shard_of) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    if (total <= max_shard_bytes) {
        rc = am_safetensors_write(single, t, n, NULL, 0);
        /* A stale index would not be read (model.safetensors wins) but would mislead. */
        if (!rc) unlink(index);
        goto out;
    }
    /* Greedy, in the caller's order: a new shard starts when the next tensor
     * would push the current one over the limit. */
    int64_t n_shards = 0;
    uint64_t cur = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || (cur > 0 && cur + t[i].nbytes > max_shard_bytes)) {
            n_shards++;
            cur = 0;
        }
        cur += t[i].nbytes;
        shard_of[i] = n_shards - 1;
    }
    size_t cap = strlen(dir) + 64;
    shard_path = am_malloc(cap);
    if (!shard_path) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    for (int64_t s = 0, i = 0; s < n_shards && !rc; s++) {
        int64_t j = i;
        while (j < n && shard_of[j] == s)
            j++;
        snprintf(shard_path, cap, "%s/model-%05lld-of-%05lld.safetensors", dir, (long long)s + 1,
                 (long long)n_shards);
        rc = am_safetensors_write(shard_path, t + i, j - i, NULL, 0);
        i = j;
    }
    if (rc) goto out;
    am__buf_printf(&h, "{\"metadata\":{\"total_size\":%llu},\"weight_map\":{",
                   (unsigned long long)total);
    for (int64_t k = 0; k < n; k++) {
        int64_t i = by_name[k];
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05lld-of-%05lld.safetensors",
                 (long long)shard_of[i] + 1, (long long)n_shards);
        if (k) am__buf_put(&h, ",", 1);
        am__buf_json_str(&h, t[i].name);
        am__buf_put(&h, ":", 1);
        am__buf_json_str(&h, fname);
    }
    am__buf_put(&h, "}}\n", 3);
    if (h.err) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    am__wfile w;
    rc = am__wfile_open(&w, index);
    if (rc) goto out;
    am__wfile_write(&w, h.p, h.n);
    rc = am__wfile_commit(&w);
    /* model.safetensors would take precedence over the new index. */
    if (!rc) unlink(single);
out:
    am__buf_free(&h);
    am_free(shard_path);
    am_free(shard_of);
    am_free(single);
    am_free(index);
    am_free(by_name);
    return rc;
}
