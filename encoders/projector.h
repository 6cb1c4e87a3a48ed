/* encoders/projector.h - projectors from encoder features to LLM embedding rows.
 *
 * Three kinds (docs/model-spec.md 4):
 *   perceiver    OpenFlamingo's PerceiverResampler at the encoder width D, then
 *                Linear(D -> out_dim) (AnyMAL). One media item of F frames x V
 *                patches gives n_latents rows. Per frame f, frame_embs[f] is
 *                added to its patches (when the checkpoint has frame_embs;
 *                F <= max_frames), the frames are flattened to F*V rows and
 *                media_time_embs[0] is added (every item is one media, T = 1).
 *                Each of `depth` layers: latents += PerceiverAttention(x,
 *                latents); latents += FeedForward(latents); then LayerNorm.
 *                Attention: LN on media and on latents, q = to_q(latents),
 *                k|v = to_kv(concat[x, latents]) (the latents join the keys),
 *                heads x head_dim, q scaled by head_dim^-0.5, no mask. FF:
 *                LN -> Linear(D, ff_mult*D) -> exact GELU -> Linear(ff_mult*D, D).
 *                Bias-free linears; LayerNorms with bias, eps 1e-5.
 *   mlp2x_gelu   LLaVA-1.5: Linear(D, H) -> GELU -> Linear(H, H) per patch row.
 *   linear       Linear(D -> tokens_per_row * out_dim) per row; each input row
 *                gives tokens_per_row output rows (1 for LLaVA-1 style; the
 *                pooled-vector projector of AnyMAL audio/IMU uses > 1).
 *
 * Tensor names under the configured prefix (the AnyMAL projector file):
 *   perceiver:  perceiver.latents (N, D); perceiver.frame_embs (Fmax, D) and
 *               perceiver.media_time_embs (Tmax, 1, D), both optional;
 *               perceiver.layers.{i}.0.{norm_media,norm_latents}.{weight,bias} (D),
 *               perceiver.layers.{i}.0.to_q.weight (h*d, D),
 *               perceiver.layers.{i}.0.to_kv.weight (2*h*d, D) (k rows first),
 *               perceiver.layers.{i}.0.to_out.weight (D, h*d),
 *               perceiver.layers.{i}.1.0.{weight,bias} (D) (FF LayerNorm),
 *               perceiver.layers.{i}.1.1.weight (ff*D, D), perceiver.layers.{i}.1.3.weight (D,
 * ff*D), perceiver.norm.{weight,bias} (D); then proj.weight (out_dim, D) and proj.bias (out_dim,
 * optional). (OpenFlamingo's own names after "perceiver.", so its resampler weights load as-is.)
 *   mlp2x_gelu: linear_1.{weight,bias} (H, D), linear_2.{weight,bias} (H, H)
 *               (HF LLaVA: prefix "multi_modal_projector.").
 *   linear:     weight (tokens_per_row*out_dim, D), bias (optional).
 */
#ifndef AM_PROJECTOR_H
#define AM_PROJECTOR_H

#include "core/ckpt.h"
#include "encoders/nn_ops.h"

#include <stdint.h>

#define AM_PROJ_MAX_DEPTH 64

typedef enum { AM_PROJ_PERCEIVER = 0, AM_PROJ_MLP2X_GELU, AM_PROJ_LINEAR } am_proj_type;

typedef struct am_proj_config {
    am_proj_type type;
    int32_t in_dim;  /* D: encoder width */
    int32_t out_dim; /* LLM width */
    /* perceiver */
    int32_t n_latents, depth, n_heads, head_dim, ff_mult;
    int32_t max_frames, max_media; /* 0 = no frame_embs / media_time_embs tensors */
    float ln_eps;
    int has_proj_bias;
    /* linear */
    int32_t tokens_per_row;
} am_proj_config;

int am_proj_parse_type(const char *name, am_proj_type *out);
const char *am_proj_type_name(am_proj_type t);
int am_proj_config_check(const am_proj_config *c);

typedef struct am_proj_layer {
    float *norm_media_w, *norm_media_b;     /* (D) */
    float *norm_latents_w, *norm_latents_b; /* (D) */
    am_matrix to_q;                         /* (h*d, D) */
    am_matrix to_kv;                        /* (2*h*d, D) */
    am_matrix to_out;                       /* (D, h*d) */
    float *ff_ln_w, *ff_ln_b;               /* (D) */
    am_matrix ff1;                          /* (ff*D, D) */
    am_matrix ff2;                          /* (D, ff*D) */
} am_proj_layer;

typedef struct am_proj {
    am_proj_config cfg;
    /* perceiver */
    float *latents;    /* (N, D) */
    float *frame_embs; /* (Fmax, D) or NULL */
    float *media_time; /* (Tmax, D) or NULL */
    am_proj_layer *layers;
    float *norm_w, *norm_b; /* (D) */
    am_linear proj;         /* (out_dim, D) */
    /* mlp2x_gelu: l1, l2; linear: l1 */
    am_linear l1, l2;
    float *vecs; /* owns the f32 vectors */
} am_proj;

/* Loads the projector from ck with tensor names under prefix. If the config
 * says max_frames/max_media > 0 the tensors must exist; with 0 they are used
 * when present (their first dimension sets the limit). */
int am_proj_load(const am_ckpt *ck, const char *prefix, const am_proj_config *cfg, am_proj **out);
void am_proj_destroy(am_proj **p);

/* Rows a media item of n_frames x n_patches gives: n_latents (perceiver),
 * n_frames*n_patches (mlp2x_gelu), n_frames*n_patches*tokens_per_row (linear).
 * The config alone decides it (the shard leader sizes slots without weights). */
int64_t am_proj_config_n_tokens(const am_proj_config *c, int32_t n_frames, int32_t n_patches);
int64_t am_proj_n_tokens(const am_proj *p, int32_t n_frames, int32_t n_patches);

/* Where an encoder and its projector come from, as a model directory's
 * config names them: paths relative to the directory, tensor-name prefixes.
 * All owned (am_free; am__enc_files_fini in encoders/enc_internal.h). */
typedef struct am_enc_files {
    char *weights, *prefix;           /* the encoder's checkpoint and tensor prefix */
    char *proj_weights, *proj_prefix; /* the projector's; proj_weights NULL: the encoder's file */
} am_enc_files;

/* The projector's weights as backend be sees them (matrices through
 * upload_matrix, vectors in one allocation of be's memory); on a host-memory
 * backend views of p's own. p must outlive it; release with am_proj_release
 * on the same backend. AM_ENOMEM or upload errors. */
int am_proj_upload(const am_proj *p, am_backend *be, am_proj **out);
void am_proj_release(am_proj **p, am_backend *be);

/* One media item: x (F, V, D) encoder features; out (n_tokens, out_dim); both
 * in the backend's memory (host memory on the CPU backend). */
typedef struct am_proj_item {
    const float *x;
    int32_t n_frames, n_patches;
    float *out;
} am_proj_item;

/* Runs the projector p (the backend's view: am_proj_upload, or the model's
 * own on a host-memory backend) over n items in one batch (the GEMMs see the rows of all
 * items). AM_ERANGE when an item has more frames than frame_embs rows; AM_ENOMEM;
 * matmul errors. */
int am_proj_forward(const am_proj *p, am_nn *nn, const am_proj_item *items, int n);

/* Matmul FLOPs of one item. */
double am_proj_flops(const am_proj *p, int32_t n_frames, int32_t n_patches);

/* Rows per backend call of am_proj_linear_rows: the CPU backend's largest
 * matrix-vector M (core/cpu_backend.h). */
#define AM_PROJ_ROW_GROUP 4

/* The linear projector over m independent rows x (m, D): outs[r] (tokens_per_row,
 * out_dim) for row r. The rows go AM_PROJ_ROW_GROUP at a time through one
 * matrix-vector call with M = AM_PROJ_ROW_GROUP (the last group padded with
 * zero rows), so the weights (out_dim * tokens_per_row * D, 64 MB for AnyMAL's
 * 512 -> 8 x 4096 in f32) are read once per group, and since the backend's
 * matrix-vector kernels compute each row with the same code whatever the other
 * rows hold, a row gives the same bits in any batch. For the pooled-vector
 * modalities (audio clips, IMU windows). x and outs are host memory; p is the
 * backend's copy (am_proj_upload), and on a device each group goes up and its
 * rows come down. AM_EINVAL unless p is linear; AM_ENOMEM; upload/download errors. */
int am_proj_linear_rows(const am_proj *p, am_nn *nn, const float *x, int64_t m, float *const *outs);

/* The projector of a pooled-vector modality over n items: item i has n_rows[i]
 * rows of x (sum n_rows, D) (an audio clip 1, an IMU request its windows) and
 * gets outs[i] (n_rows[i] * tokens_per_row rows of out_dim for a linear
 * projector, am_proj_n_tokens(n_rows[i], 1) otherwise). Linear: every row
 * through am_proj_linear_rows; others: one call per item. x and outs are host
 * memory, p the backend's copy. Results do not depend on the batch. */
int am_proj_pooled(const am_proj *p, am_nn *nn, const float *x, const int32_t *n_rows, int n,
                   float *const *outs);

#endif
