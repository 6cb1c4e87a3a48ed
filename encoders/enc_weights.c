/* encoders/enc_weights.c - resolving encoder tensors from a checkpoint by name and shape. */
#include "encoders/enc_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

static int full_name(char *buf, size_t cap, const char *prefix, const char *name) {
    if ((size_t)snprintf(buf, cap, "%s%s", prefix ? prefix : "", name) >= cap)
        return am_err_set(AM_ERANGE, "tensor name too long: %s%s", prefix ? prefix : "", name);
    return 0;
}

int am__enc_has(const am_ckpt *ck, const char *prefix, const char *name) {
    char nm[AM_CKPT_MAX_NAME_BYTES];
    if (full_name(nm, sizeof nm, prefix, name)) return 0;
    return am_ckpt_find(ck, nm) != NULL;
}

int am__enc_matrix(const am_ckpt *ck, const char *prefix, const char *name, int n_dims,
                   const int64_t *shape, am_matrix *out) {
    char nm[AM_CKPT_MAX_NAME_BYTES];
    const am_ckpt_tensor *t;
    int rc = full_name(nm, sizeof nm, prefix, name);
    if (rc || (rc = am_ckpt_get(ck, nm, n_dims, shape, &t))) return rc;
    switch (t->dtype) {
    case AM_DTYPE_F32:
    case AM_DTYPE_F16:
    case AM_DTYPE_BF16:
    case AM_DTYPE_Q8_0:
    case AM_DTYPE_Q4_0: break;
    default:
        return am_err_set(AM_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (want f32, f16 or bf16)",
                          t->file, nm, am_dtype_name(t->dtype));
    }
    int64_t cols = 1;
    for (int i = 1; i < n_dims; i++)
        cols *= shape[i];
    size_t rb = am_dtype_row_bytes(t->dtype, cols);
    if (!rb || rb * (size_t)shape[0] != t->nbytes)
        return am_err_set(AM_ESHAPE, "%s: tensor '%s': %zu bytes do not hold (%lld, %lld) %s",
                          t->file, nm, t->nbytes, (long long)shape[0], (long long)cols,
                          am_dtype_name(t->dtype));
    *out = (am_matrix){t->dtype, shape[0], cols, t->data, rb};
    return 0;
}

int am__enc_vec(const am_ckpt *ck, const char *prefix, const char *name, int n_dims,
                const int64_t *shape, float *dst) {
    char nm[AM_CKPT_MAX_NAME_BYTES];
    const am_ckpt_tensor *t;
    int rc = full_name(nm, sizeof nm, prefix, name);
    if (rc || (rc = am_ckpt_get(ck, nm, n_dims, shape, &t))) return rc;
    if (t->dtype != AM_DTYPE_F32 && t->dtype != AM_DTYPE_F16 && t->dtype != AM_DTYPE_BF16)
        return am_err_set(AM_EUNSUPPORTED, "%s: tensor '%s' has dtype %s (want f32, f16 or bf16)",
                          t->file, nm, am_dtype_name(t->dtype));
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++)
        n *= shape[i];
    if ((size_t)n * am_dtype_block_bytes(t->dtype) != t->nbytes)
        return am_err_set(AM_ESHAPE, "%s: tensor '%s': %zu bytes for %lld elements", t->file, nm,
                          t->nbytes, (long long)n);
    am_dequantize_row(t->dtype, t->data, dst, n);
    return 0;
}

int am__enc_upload(am_backend *be, const void *host, size_t bytes, void **out) {
    if (!(*out = be->ops->alloc(be, bytes)))
        return am_err_set(AM_ENOMEM, "cannot allocate %zu bytes of %s memory", bytes, be->name);
    return be->ops->upload(be, *out, host, bytes);
}

int am__enc_upload_matrices(am_backend *be, const am_matrix *const *from, am_matrix *const *to,
                            int n) {
    int rc = 0;
    for (int i = 0; i < n && !rc; i++)
        rc = be->ops->upload_matrix(be, from[i], to[i]);
    return rc;
}

int am__pooled_init(am__pooled *p, const char *what, const am_proj *proj, am_backend *be,
                    int n_threads, int32_t max_batch, int64_t width, size_t scratch_floats) {
    memset(p, 0, sizeof *p);
    int rc = am_nn_init(&p->nn, be, n_threads);
    if (rc || (rc = am_proj_upload(proj, be, &p->proj))) return rc;
    const size_t emb_bytes = (size_t)(max_batch * width) * sizeof(float);
    p->max_batch = max_batch;
    p->width = width;
    p->emb = am_aligned_alloc(emb_bytes);
    p->demb = be->host_memory ? p->emb : be->ops->alloc(be, emb_bytes);
    p->scratch = be->ops->alloc(be, scratch_floats * sizeof(float));
    if (!p->emb || !p->demb || !p->scratch)
        return am_err_set(AM_ENOMEM, "%s: cannot allocate activations for %d items", what,
                          max_batch);
    return 0;
}

void am__pooled_fini(am__pooled *p) {
    am_backend *be = p->nn.be;
    if (be) {
        if (p->demb != p->emb) be->ops->free(be, p->demb);
        be->ops->free(be, p->scratch);
        am_proj_release(&p->proj, be);
    }
    am_nn_fini(&p->nn);
    am_aligned_free(p->emb);
    memset(p, 0, sizeof *p);
}

int am__pooled_down(am__pooled *p, int64_t nb) {
    am_backend *be = p->nn.be;
    if (p->demb == p->emb) return 0;
    return be->ops->download(be, p->emb, p->demb, (size_t)(nb * p->width) * sizeof(float));
}
