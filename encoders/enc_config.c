/* encoders/enc_config.c - reading anymal.json: typed, range-checked keys and paths in a model
 * directory, shared by the vision, audio and IMU loaders. */
#include "encoders/enc_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/image.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int am__json_read(const char *path, cJSON **out) {
    void *data;
    size_t len;
    *out = NULL;
    int rc = am_read_file_limited(path, AM_ENC_MAX_CONFIG_BYTES, &data, &len);
    if (rc) return rc;
    *out = cJSON_ParseWithLength(data, len);
    am_free(data);
    if (!*out || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return am_err_set(AM_EFORMAT, "%s: not a JSON object", path);
    }
    return 0;
}

int am__json_section(const char *cfg_path, const char *key, const char *what, cJSON **root,
                     const cJSON **section) {
    *section = NULL;
    int rc = am__json_read(cfg_path, root);
    if (rc) return rc;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(*root, key);
    if (!cJSON_IsObject(s)) {
        cJSON_Delete(*root);
        *root = NULL;
        return am_err_set(AM_ENOTFOUND, "%s: no \"%s\" object (this model has no %s encoder)",
                          cfg_path, key, what);
    }
    *section = s;
    return 0;
}

int am__config_section(const char *dir, const char *key, const char *what, char *cfg_path,
                       size_t cap, cJSON **root, const cJSON **section) {
    *root = NULL;
    *section = NULL;
    int rc = am__path_in(cfg_path, cap, dir, "anymal.json");
    if (rc) return rc;
    if (!am__file_exists(cfg_path))
        return am_err_set(AM_ENOTFOUND, "%s: no anymal.json (not an AnyMAL model directory)", dir);
    return am__json_section(cfg_path, key, what, root, section);
}

static const cJSON *item(const cJSON *o, const char *key) {
    const cJSON *x = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return x && !cJSON_IsNull(x) ? x : NULL;
}

static int int_ok(const cJSON *x, int64_t lo, int64_t hi) {
    return cJSON_IsNumber(x) && x->valuedouble == (double)(int64_t)x->valuedouble &&
           x->valuedouble >= (double)lo && x->valuedouble <= (double)hi;
}

int am__json_int(const char *file, const cJSON *o, const char *key, int64_t lo, int64_t hi,
                 int32_t *v) {
    const cJSON *x = item(o, key);
    if (!x) return 0;
    if (!int_ok(x, lo, hi))
        return am_err_set(AM_EINVAL, "%s: \"%s\" must be an integer in [%lld, %lld]", file, key,
                          (long long)lo, (long long)hi);
    *v = (int32_t)x->valuedouble;
    return 0;
}

int am__json_float(const char *file, const cJSON *o, const char *key, float *v) {
    const cJSON *x = item(o, key);
    if (!x) return 0;
    if (!cJSON_IsNumber(x)) return am_err_set(AM_EINVAL, "%s: \"%s\" must be a number", file, key);
    *v = (float)x->valuedouble;
    return 0;
}

int am__json_bool(const char *file, const cJSON *o, const char *key, int *v) {
    const cJSON *x = item(o, key);
    if (!x) return 0;
    if (!cJSON_IsBool(x))
        return am_err_set(AM_EINVAL, "%s: \"%s\" must be true or false", file, key);
    *v = cJSON_IsTrue(x);
    return 0;
}

int am__json_str(const char *file, const cJSON *o, const char *key, const char **v) {
    const cJSON *x = item(o, key);
    if (!x) return 0;
    if (!cJSON_IsString(x)) return am_err_set(AM_EINVAL, "%s: \"%s\" must be a string", file, key);
    *v = x->valuestring;
    return 0;
}

int am__json_floats(const char *file, const cJSON *o, const char *key, int n, float *v) {
    const cJSON *x = item(o, key);
    if (!x) return 0;
    if (!cJSON_IsArray(x) || cJSON_GetArraySize(x) != n)
        return am_err_set(AM_EINVAL, "%s: \"%s\" must be an array of %d numbers", file, key, n);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(x, i);
        if (!cJSON_IsNumber(e))
            return am_err_set(AM_EINVAL, "%s: \"%s\" must be an array of %d numbers", file, key, n);
        v[i] = (float)e->valuedouble;
    }
    return 0;
}

int am__json_ints(const char *file, const cJSON *o, const char *key, int max_n, int64_t lo,
                  int64_t hi, int32_t *v, int32_t *n) {
    const cJSON *x = item(o, key);
    if (!x) return 0;
    const int cnt = cJSON_IsArray(x) ? cJSON_GetArraySize(x) : -1;
    if (cnt < 1 || cnt > max_n)
        return am_err_set(AM_EINVAL, "%s: \"%s\" must be an array of 1 to %d integers", file, key,
                          max_n);
    for (int i = 0; i < cnt; i++) {
        const cJSON *e = cJSON_GetArrayItem(x, i);
        if (!int_ok(e, lo, hi))
            return am_err_set(AM_EINVAL, "%s: \"%s\"[%d] must be an integer in [%lld, %lld]", file,
                              key, i, (long long)lo, (long long)hi);
        v[i] = (int32_t)e->valuedouble;
    }
    *n = cnt;
    return 0;
}

int am__path_in(char *buf, size_t cap, const char *dir, const char *rel) {
    if (rel[0] == '/') {
        if ((size_t)snprintf(buf, cap, "%s", rel) >= cap)
            return am_err_set(AM_ERANGE, "path too long: %s", rel);
    } else if ((size_t)snprintf(buf, cap, "%s/%s", dir, rel) >= cap) {
        return am_err_set(AM_ERANGE, "path too long: %s/%s", dir, rel);
    }
    return 0;
}

int am__file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int am__open_ckpt(const char *dir, const char *rel, am_ckpt **out) {
    char path[4096];
    int rc = am__path_in(path, sizeof path, dir, rel);
    return rc ? rc : am_ckpt_open(path, out);
}

int am__open_ckpt_pair(const char *dir, const char *enc_rel, const char *proj_rel, am_ckpt **enc,
                       am_ckpt **proj) {
    int rc = am__open_ckpt(dir, enc_rel, enc);
    if (rc) return rc;
    if (proj_rel && strcmp(proj_rel, enc_rel)) return am__open_ckpt(dir, proj_rel, proj);
    *proj = *enc;
    return 0;
}

void am__close_ckpt_pair(am_ckpt **enc, am_ckpt **proj) {
    if (*proj != *enc) am_ckpt_destroy(proj);
    *proj = NULL;
    am_ckpt_destroy(enc);
}

int am__json_projector(const char *file, const cJSON *pj, am_proj_type def_type, int32_t in_dim,
                       int32_t llm_dim, int32_t def_tokens, am_proj_config *pc,
                       const char **weights, const char **prefix) {
    const char *ptype = am_proj_type_name(def_type);
    *weights = NULL;
    *prefix = "";
    *pc = (am_proj_config){.type = def_type,
                           .in_dim = in_dim,
                           .out_dim = llm_dim,
                           .n_latents = 64,
                           .depth = 2,
                           .n_heads = 8,
                           .head_dim = 64,
                           .ff_mult = 4,
                           .ln_eps = 1e-5f,
                           .tokens_per_row = def_tokens};
    int rc;
    if ((rc = am__json_str(file, pj, "type", &ptype)) ||
        (rc = am__json_str(file, pj, "weights", weights)) ||
        (rc = am__json_str(file, pj, "prefix", prefix)) ||
        (rc = am__json_int(file, pj, "out_dim", 1, 65536, &pc->out_dim)) ||
        (rc = am__json_int(file, pj, "num_latents", 1, 4096, &pc->n_latents)) ||
        (rc = am__json_int(file, pj, "depth", 1, AM_PROJ_MAX_DEPTH, &pc->depth)) ||
        (rc = am__json_int(file, pj, "heads", 1, 4096, &pc->n_heads)) ||
        (rc = am__json_int(file, pj, "dim_head", 1, 65536, &pc->head_dim)) ||
        (rc = am__json_int(file, pj, "ff_mult", 1, 16, &pc->ff_mult)) ||
        (rc = am__json_int(file, pj, "tokens_per_row", 1, 4096, &pc->tokens_per_row)) ||
        (rc = am__json_float(file, pj, "layer_norm_eps", &pc->ln_eps)))
        return rc;
    if ((rc = am_proj_parse_type(ptype, &pc->type))) return am_err_prefix(rc, "%s", file);
    if (pc->out_dim <= 0)
        return am_err_set(AM_EINVAL, "%s: the projector's out_dim (or llm.dim) is required", file);
    return 0;
}

int am__enc_files_set(am_enc_files *f, const char *weights, const char *prefix,
                      const char *proj_weights, const char *proj_prefix) {
    am__enc_files_fini(f);
    if (!(f->weights = am_strdup(weights)) || !(f->prefix = am_strdup(prefix)) ||
        (proj_weights && !(f->proj_weights = am_strdup(proj_weights))) ||
        !(f->proj_prefix = am_strdup(proj_prefix))) {
        am__enc_files_fini(f);
        return am_err_set(AM_ENOMEM, "out of memory");
    }
    return 0;
}

void am__enc_files_fini(am_enc_files *f) {
    am_free(f->weights);
    am_free(f->prefix);
    am_free(f->proj_weights);
    am_free(f->proj_prefix);
    *f = (am_enc_files){0};
}

int am__json_pooled_section(const char *cfg_path, const cJSON *root, const cJSON *sec,
                            const char *what, const char *def_weights, const char *def_prefix,
                            int32_t in_dim, am_proj_config *pc, am_enc_files *f) {
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(sec, "projector");
    const cJSON *llm = cJSON_GetObjectItemCaseSensitive(root, "llm");
    const char *weights = def_weights, *prefix = def_prefix, *pw = NULL, *pp = "";
    int32_t llm_dim = 0;
    int rc;
    if ((rc = am__json_int(cfg_path, llm, "dim", 1, 65536, &llm_dim)) ||
        (rc = am__json_str(cfg_path, sec, "weights", &weights)) ||
        (rc = am__json_str(cfg_path, sec, "prefix", &prefix)))
        return rc;
    if (!cJSON_IsObject(pj))
        return am_err_set(AM_ENOTFOUND, "%s: %s has no \"projector\" object", cfg_path, what);
    if ((rc = am__json_projector(cfg_path, pj, AM_PROJ_LINEAR, in_dim, llm_dim, 8, pc, &pw, &pp)))
        return rc;
    return am__enc_files_set(f, weights, prefix, pw, pp);
}

int am__load_enc_proj(const char *dir, const am_enc_files *f,
                      int (*load_enc)(const am_ckpt *ck, const char *prefix, void *user),
                      void *user, am_ckpt **enc_ck, am_ckpt **proj_ck, am_proj_config *pc,
                      am_proj **proj) {
    int rc;
    if ((rc = am__open_ckpt_pair(dir, f->weights, f->proj_weights, enc_ck, proj_ck)) ||
        (rc = load_enc(*enc_ck, f->prefix, user)) ||
        (rc = am_proj_load(*proj_ck, f->proj_prefix, pc, proj)))
        return rc;
    *pc = (*proj)->cfg;
    return 0;
}

void am__l2_normalize_rows(float *x, int64_t m, int64_t n) {
    for (int64_t r = 0; r < m; r++) {
        double s = 0;
        for (int64_t i = 0; i < n; i++)
            s += (double)x[r * n + i] * x[r * n + i];
        const double d = sqrt(s) > 1e-12 ? sqrt(s) : 1e-12;
        for (int64_t i = 0; i < n; i++)
            x[r * n + i] = (float)(x[r * n + i] / d);
    }
}
