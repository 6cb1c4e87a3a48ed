/* encoders/enc_internal.h - weight lookup helpers shared by the encoder modules. */
#ifndef AM_ENC_INTERNAL_H
#define AM_ENC_INTERNAL_H

#include "core/backend.h"
#include "core/ckpt.h"

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

#endif
