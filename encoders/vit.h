/* encoders/vit.h - the CLIP ViT vision tower (HF CLIPVisionModel) for any config.
 *
 * Computation (docs/model-spec.md 3): a Conv2d(3, C, p, stride p, bias=False) patch
 * embedding (im2col + GEMM), the class embedding prepended, learned position
 * embeddings, pre_layrnorm, then L pre-LN blocks
 *   x = x + out_proj(attn(q_proj(LN1 x), k_proj(.), v_proj(.)))   (biased, no mask)
 *   x = x + fc2(act(fc1(LN2 x)))                                  (act = quick_gelu for OpenAI
 * CLIP) and post_layernorm, which only the pooled output uses (not loaded here). hidden_states[i]
 * of HF is the output after i blocks (0 = embeddings after pre_layrnorm); the feature LLaVA-style
 * models use is hidden_states[-2] without the CLS row.
 *
 * Weights are HF names under a prefix ("vision_model." for CLIPVisionModel,
 * "vision_tower.vision_model." for LLaVA-1.5-hf): embeddings.class_embedding
 * (C), embeddings.patch_embedding.weight (C, 3, p, p), embeddings.
 * position_embedding.weight (T, C), pre_layrnorm.{weight,bias},
 * encoder.layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc1, mlp.fc2,
 * layer_norm2}.{weight,bias}. Matrices stay zero-copy views into the mapped
 * checkpoint (F32, F16 or BF16); vectors are copied to f32. Every shape is
 * checked; errors name the file and tensor.
 */
#ifndef AM_VIT_H
#define AM_VIT_H

#include "core/ckpt.h"
#include "encoders/nn_ops.h"

#include <stdint.h>

#define AM_VIT_MAX_LAYERS 256

typedef struct am_vit_config {
    int32_t image_size; /* S: 336 */
    int32_t patch_size; /* p: 14 */
    int32_t channels;   /* 3 */
    int32_t width;      /* C: 1024 */
    int32_t n_layers;   /* L: 24 */
    int32_t n_heads;    /* H: 16 */
    int32_t mlp_dim;    /* F: 4096 */
    float ln_eps;       /* 1e-5 */
    am_act act;         /* quick_gelu */
} am_vit_config;

/* Named shapes: "vit-l-14-336", "vit-l-14-224", "vit-g-14", "vit-bigg-14", "tiny". */
int am_vit_shape(const char *name, am_vit_config *out);
const char *am_vit_shape_names(void);
/* Validates sizes (positive, patch divides image, heads divide width, limits). */
int am_vit_config_check(const am_vit_config *cfg);
/* Patches P = (S/p)^2; positions T = P + 1. */
static inline int64_t am_vit_n_patches(const am_vit_config *c) {
    return (int64_t)(c->image_size / c->patch_size) * (c->image_size / c->patch_size);
}
/* Matmul FLOPs of one image through n_run blocks (patch embedding included). */
double am_vit_flops(const am_vit_config *c, int n_run);

typedef struct am_vit_layer {
    float *ln1_w, *ln1_b; /* (C) */
    am_linear q, k, v, o; /* (C, C) + (C) */
    float *ln2_w, *ln2_b; /* (C) */
    am_linear fc1;        /* (F, C) + (F) */
    am_linear fc2;        /* (C, F) + (C) */
} am_vit_layer;

typedef struct am_vit {
    am_vit_config cfg;
    am_matrix patch;            /* (C, 3*p*p) view of the conv weight */
    float *cls;                 /* (C) */
    float *pos;                 /* (T, C) */
    float *pre_ln_w, *pre_ln_b; /* (C) */
    am_vit_layer *layers;       /* (L) */
    float *vecs;                /* owns every f32 vector above */
} am_vit;

/* Resolves the tower from ck under prefix (the checkpoint must outlive it). */
int am_vit_load(const am_ckpt *ck, const char *prefix, const am_vit_config *cfg, am_vit **out);
void am_vit_destroy(am_vit **p);

/* Which block's output a feature is: layer < 0 counts from the end like
 * Python (-1 = last block, -2 = the one before); 0 = the embeddings. Returns
 * the number of blocks to run, or AM_ERANGE. */
int am_vit_blocks_for_layer(const am_vit_config *c, int32_t layer, int32_t *n_run);

/* The tower's weights as backend be sees them: a new am_vit whose matrices
 * come from be's upload_matrix and whose f32 vectors are one allocation of
 * be's memory. On a backend whose memory is host memory it only views v's
 * (nothing is copied). v (and its checkpoint) must outlive it; release it
 * with am_vit_release on the same backend. AM_ENOMEM or upload errors. */
int am_vit_upload(const am_vit *v, am_backend *be, am_vit **out);
void am_vit_release(am_vit **p, am_backend *be);

/* Scratch floats am_vit_forward needs for b images. */
size_t am_vit_scratch_floats(const am_vit_config *c, int64_t b);

/* hidden (B, T, C) = the residual stream after n_run blocks for pixels
 * (B, 3, S, S). v is the backend's view (am_vit_upload; the model's own on a
 * host-memory backend); pix is host memory (patchified on the host, then
 * uploaded when backend memory is not host memory); hidden and scratch
 * (am_vit_scratch_floats(b) floats) are backend memory. Errors from the
 * backend's matmul or upload, AM_ENOMEM. */
int am_vit_forward(const am_vit *v, am_nn *nn, const float *pix, int64_t b, int32_t n_run,
                   float *hidden, float *scratch);

#endif
