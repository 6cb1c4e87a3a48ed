/* encoders/enc_weights.c - resolving encoder tensors from a checkpoint by name and shape. */
#include "encoders/enc_internal.h"

#include "core/error.h"

#include <stdio.h>

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
