/* encoders/enc_internal.h - weight lookup and anymal.json helpers shared by the encoder modules. */
#ifndef AM_ENC_INTERNAL_H
#define AM_ENC_INTERNAL_H

#include "core/backend.h"
#include "core/ckpt.h"
#include "encoders/projector.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* A matrix view of tensor prefix+name with shape (n_dims, shape): rows =
 * shape[0], cols = the product of the rest. Dtype F32/F16/BF16/Q8_0/Q4_0
 * (else AM_EUNSUPPORTED); AM_ENOTFOUND/AM_ESHAPE name the file and tensor. */
int am__enc_matrix(const am_ckpt *ck, const char *prefix, const char *name, int n_dims,
                   const int64_t *shape, am_matrix *out);
/* Copies tensor prefix+name of n elements (any shape with that many
 * elements if n_dims == 0, else exactly shape) to f32 dst. */
int am__enc_vec(const am_ckpt *ck, const char *prefix, const char *name, int n_dims,
                const int64_t *shape, float *dst);
/* 1 if prefix+name exists. */
int am__enc_has(const am_ckpt *ck, const char *prefix, const char *name);

/* *out = a copy of `bytes` host bytes in be's memory, for the caller to free with
 * be->ops->free (it stays set after an upload error). AM_ENOMEM naming the backend,
 * or the upload's error. */
int am__enc_upload(am_backend *be, const void *host, size_t bytes, void **out);
/* upload_matrix of from[i] into to[i] for i < n; the first error. */
int am__enc_upload_matrices(am_backend *be, const am_matrix *const *from, am_matrix *const *to,
                            int n);

/* What the pooled-vector encoders (audio.c, imu.c) share around their towers: the op
 * context, the projector as the backend sees it, one chunk's embeddings (host, and the
 * backend's copy the tower writes) and the tower's scratch in backend memory. */
typedef struct am__pooled {
    am_nn nn;
    int32_t max_batch;
    int64_t width;  /* P: embedding floats */
    am_proj *proj;  /* am_proj_upload's copy */
    float *emb;     /* host (max_batch, P) */
    float *demb;    /* backend (max_batch, P): emb itself on a host-memory backend */
    float *scratch; /* backend, scratch_floats */
} am__pooled;

/* Sets up p for chunks of max_batch items on be (borrowed); `what` names the encoder in
 * messages. AM_EINVAL, AM_ENOMEM, upload errors; am__pooled_fini cleans up after a failure too. */
int am__pooled_init(am__pooled *p, const char *what, const am_proj *proj, am_backend *be,
                    int n_threads, int32_t max_batch, int64_t width, size_t scratch_floats);
void am__pooled_fini(am__pooled *p);
/* After the tower wrote nb embeddings to p->demb: them in p->emb (a download on a device). */
int am__pooled_down(am__pooled *p, int64_t nb);

/* A bump allocator over one f32 block: plan with sizes, then hand out. */
typedef struct {
    float *base;
    size_t used, cap; /* floats */
} am__vec_arena;

static inline float *am__arena_take(am__vec_arena *a, int64_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += ((size_t)n + 15) / 16 * 16; /* 64-byte aligned pieces */
    return p;
}

/* ---- anymal.json (enc_config.c) ---- */

/* Config files are small; anything larger is not ours. */
#define AM_ENC_MAX_CONFIG_BYTES ((size_t)1 << 20)

/* Reads and parses a JSON object file: AM_EIO, AM_ERANGE, AM_EFORMAT (names the file). */
int am__json_read(const char *path, cJSON **out);
/* Reads cfg_path and finds its object `key` (*section points into *root, which the caller
 * frees). A missing or non-object key is AM_ENOTFOUND "cfg_path: no "key" object (this model
 * has no `what` encoder)". On any error *root is NULL. */
int am__json_section(const char *cfg_path, const char *key, const char *what, cJSON **root,
                     const cJSON **section);
/* The model-loading prologue of an encoder: cfg_path = dir/anymal.json (cap bytes),
 * AM_ENOTFOUND "dir: no anymal.json (not an AnyMAL model directory)" when it is not there,
 * then am__json_section(cfg_path, key, what, root, section). */
int am__config_section(const char *dir, const char *key, const char *what, char *cfg_path,
                       size_t cap, cJSON **root, const cJSON **section);
/* Optional keys of object o (o may be NULL): an absent or null key keeps *v;
 * a present one of the wrong type or range is AM_EINVAL naming file and key.
 * Strings point into the JSON tree. */
int am__json_int(const char *file, const cJSON *o, const char *key, int64_t lo, int64_t hi,
                 int32_t *v);
int am__json_float(const char *file, const cJSON *o, const char *key, float *v);
int am__json_bool(const char *file, const cJSON *o, const char *key, int *v);
int am__json_str(const char *file, const cJSON *o, const char *key, const char **v);
/* An array of exactly n numbers. */
int am__json_floats(const char *file, const cJSON *o, const char *key, int n, float *v);
/* An array of 1..max_n integers in [lo, hi]; *n gets the count. */
int am__json_ints(const char *file, const cJSON *o, const char *key, int max_n, int64_t lo,
                  int64_t hi, int32_t *v, int32_t *n);
/* buf = dir/rel (rel as is when absolute); AM_ERANGE when it does not fit. */
int am__path_in(char *buf, size_t cap, const char *dir, const char *rel);
int am__file_exists(const char *path);
/* Opens the checkpoint dir/rel. */
int am__open_ckpt(const char *dir, const char *rel, am_ckpt **out);
/* Opens an encoder's weights dir/enc_rel and its projector's dir/proj_rel;
 * *proj is the same mapping as *enc when proj_rel is NULL or names the same
 * file. Release both with am__close_ckpt_pair (also after a failed open). */
int am__open_ckpt_pair(const char *dir, const char *enc_rel, const char *proj_rel, am_ckpt **enc,
                       am_ckpt **proj);
/* Closes what am__open_ckpt_pair opened, a shared mapping once. */
void am__close_ckpt_pair(am_ckpt **enc, am_ckpt **proj);
/* The "projector" object pj of a modality (audio, IMU; vision adds its own keys): keys
 * type (default def_type), weights, prefix (default ""), out_dim (default
 * llm_dim), tokens_per_row (default def_tokens) and the perceiver keys as in
 * vision.h. *weights stays NULL when absent (the encoder's file then). */
int am__json_projector(const char *file, const cJSON *pj, am_proj_type def_type, int32_t in_dim,
                       int32_t llm_dim, int32_t def_tokens, am_proj_config *pc,
                       const char **weights, const char **prefix);
/* Sets f to copies of the strings (proj_weights may be NULL); AM_ENOMEM. */
int am__enc_files_set(am_enc_files *f, const char *weights, const char *prefix,
                      const char *proj_weights, const char *proj_prefix);
void am__enc_files_fini(am_enc_files *f);
/* The part every pooled-vector section (audio, IMU) of anymal.json shares:
 * "weights" and "prefix" of section sec (defaults def_weights, def_prefix)
 * and its "projector" object (am__json_projector, llm_dim from root's "llm"
 * object) into pc and f. `what` names the section in messages. */
int am__json_pooled_section(const char *cfg_path, const cJSON *root, const cJSON *sec,
                            const char *what, const char *def_weights, const char *def_prefix,
                            int32_t in_dim, am_proj_config *pc, am_enc_files *f);
/* Opens f's checkpoints under dir (*enc_ck, *proj_ck, which may be one),
 * runs load_enc(*enc_ck, f->prefix, user) and loads the projector; *pc
 * becomes the loaded projector's config. On error the caller closes the
 * pair (am__close_ckpt_pair) and destroys *proj. */
int am__load_enc_proj(const char *dir, const am_enc_files *f,
                      int (*load_enc)(const am_ckpt *ck, const char *prefix, void *user),
                      void *user, am_ckpt **enc_ck, am_ckpt **proj_ck, am_proj_config *pc,
                      am_proj **proj);
/* L2-normalizes each of m rows (n) in place: x / max(|x|, 1e-12) (F.normalize). */
void am__l2_normalize_rows(float *x, int64_t m, int64_t n);

#endif
