/* encoders/htsat.h - the CLAP audio encoder: HTSAT (a Swin transformer over the log-mel
 * spectrogram) and CLAP's audio projection, as HF ClapAudioModel / ClapModel compute them.
 *
 * Computation (docs/model-spec.md 5; HF modeling_clap.py, enable_fusion = False):
 *  1. BatchNorm over the M mel bins (eval: running statistics, eps 1e-5) of the
 *     log-mel (T, M) (encoders/melspec.h: T = 1001 for 10 s).
 *  2. reshape_mel2img: T < S*r frames (r = S / M, the freq_ratio) are resized
 *     to S*r with PyTorch's bicubic (align_corners=True, A = -0.75; the mel
 *     axis keeps its size, which bicubic leaves exact), then folded into an
 *     S x S image: row k*M + f, column t holds frame k*S + t, bin f.
 *  3. Patch embedding: Conv2d(1, C0, p, stride p) + bias (im2col + GEMM), then
 *     LayerNorm (patch_embed.norm; optional), tokens in raster order on a G x G
 *     grid, G = S / p.
 *  4. Stages i = 0..n-1 at width C_i = C0 * 2^i on a R_i = G / 2^i grid, each
 *     of depths[i] Swin blocks
 *        x = x + out(WindowAttention(LN_before(x)))   (windows of w x w tokens)
 *        x = x + fc2(act(fc1(LN_after(x))))           (act = exact GELU)
 *     Odd blocks shift the grid by w/2 (torch.roll) and mask pairs of tokens
 *     from different regions with -100 (Swin's cyclic-shift mask); a stage whose
 *     grid is no larger than the window (R_i == w) uses one window and no shift
 *     (HF's set_shift_and_window_size). Attention: biased q/k/v, heads
 *     n_heads[i], scores / sqrt(head_dim) + a learned relative-position bias
 *     (table ((2w-1)^2, heads) indexed by the token offsets). Between stages,
 *     PatchMerging: 2x2 neighbours concatenated [(0,0), (1,0), (0,1), (1,1)]
 *     (row, col), LayerNorm(4C), Linear(4C -> 2C, no bias).
 *  5. LayerNorm (audio_encoder.norm), mean over all tokens -> pooler_output (C_last).
 *  6. audio_projection: Linear(C_last, P) + bias -> ReLU -> Linear(P, P) + bias
 *     -> audio_embeds (P) (ClapAudioModelWithProjection; ClapModel's
 *     get_audio_features also L2-normalizes, see am_audio in audio.h).
 *
 * Weights are HF names under two prefixes: the encoder's ("audio_encoder."
 * for ClapAudioModel, "audio_model.audio_encoder." for ClapModel and
 * ClapAudioModelWithProjection) holds batch_norm.{weight,bias,running_mean,
 * running_var}, patch_embed.proj.{weight,bias}, patch_embed.norm.*,
 * layers.{i}.blocks.{j}.{layernorm_before, attention.self.{query,key,value,
 * relative_position_bias_table}, attention.output.dense, layernorm_after,
 * intermediate.dense, output.dense}.*, layers.{i}.downsample.{norm.*,
 * reduction.weight}, norm.*; the projection's ("audio_projection.") holds
 * linear1.* and linear2.*. relative_position_index is recomputed, not read.
 * Matrices stay views into the mapped checkpoint (F32/F16/BF16); vectors are
 * copied to f32. Every shape is checked; errors name the file and tensor.
 */
#ifndef AM_HTSAT_H
#define AM_HTSAT_H

#include "core/ckpt.h"
#include "encoders/nn_ops.h"

#include <stdint.h>

#define AM_HTSAT_MAX_STAGES 8
#define AM_HTSAT_MAX_DEPTH  64

typedef struct am_htsat_config {
    int32_t spec_size;                    /* S: 256 */
    int32_t n_mels;                       /* M: 64 (num_mel_bins); r = S / M */
    int32_t patch_size;                   /* p: 4 (= patch_stride) */
    int32_t embed_dim;                    /* C0: 96 (patch_embeds_hidden_size) */
    int32_t n_stages;                     /* 4 */
    int32_t depths[AM_HTSAT_MAX_STAGES];  /* 2, 2, 6, 2 */
    int32_t n_heads[AM_HTSAT_MAX_STAGES]; /* 4, 8, 16, 32 */
    int32_t window;                       /* w: 8 */
    float mlp_ratio;                      /* 4 */
    float ln_eps;                         /* 1e-5 (blocks; the other norms use PyTorch's 1e-5) */
    am_act act;                           /* gelu */
    int patch_norm;                       /* enable_patch_layer_norm: 1 */
    int32_t proj_dim;                     /* P: 512 (projection_dim) */
    am_act proj_act;                      /* relu */
} am_htsat_config;

/* Named shapes: "htsat-tiny" (CLAP's HTSAT-tiny, 768 -> 512), "htsat-base"
 * (embed 128, depths 2-2-12-2, 1024 -> 512) and "tiny" (embed 16, depths
 * 2-2-2-2, heads 1-2-4-8, 128 -> 64: same input geometry, for tests). */
int am_htsat_shape(const char *name, am_htsat_config *out);
const char *am_htsat_shape_names(void);
/* Validates sizes: S a multiple of M and of p; every stage grid even (for the
 * merge) and a multiple of the window, at least the window; heads divide
 * widths; limits. AM_EINVAL naming the field. */
int am_htsat_config_check(const am_htsat_config *c);
/* Widths: C_i and the pooled width C_last. */
static inline int32_t am_htsat_width(const am_htsat_config *c, int stage) {
    return c->embed_dim << stage;
}
static inline int32_t am_htsat_out_width(const am_htsat_config *c) {
    return am_htsat_width(c, c->n_stages - 1);
}
/* Frames the image holds: S * r (1024 for CLAP); longer log-mels are rejected. */
static inline int64_t am_htsat_max_frames(const am_htsat_config *c) {
    return (int64_t)c->spec_size * (c->spec_size / c->n_mels);
}
/* Matmul FLOPs of one clip (patch embedding, blocks with attention products,
 * merges, projection). */
double am_htsat_flops(const am_htsat_config *c);

typedef struct am_htsat_block {
    float *ln1_w, *ln1_b; /* (C) layernorm_before */
    am_linear q, k, v, o; /* (C, C) + (C) */
    float *ln2_w, *ln2_b; /* (C) layernorm_after */
    am_linear fc1;        /* (F, C) + (F), F = mlp_ratio * C */
    am_linear fc2;        /* (C, F) + (C) */
    float *rel_bias;      /* (H, w*w, w*w) gathered from the table */
    int32_t shift;        /* 0 or w/2 */
} am_htsat_block;

typedef struct am_htsat_stage {
    int32_t dim, res, n_heads; /* C, R, H */
    am_htsat_block *blocks;
    float *mask;                    /* (nW, w*w, w*w) cyclic-shift mask; NULL if no block shifts */
    int32_t *perm0, *perm_shift;    /* (R*R) window order -> grid row, without / with the shift */
    int32_t *perm_merge;            /* (R*R) merged row r*4 + q -> its q-th neighbour's grid row */
    float *merge_ln_w, *merge_ln_b; /* (4C), all but the last stage */
    am_matrix merge;                /* (2C, 4C) */
} am_htsat_stage;

typedef struct am_htsat {
    am_htsat_config cfg;
    float *bn_w, *bn_b, *bn_mean, *bn_var; /* (M) batch_norm.* as stored */
    float *bn_alpha, *bn_beta;             /* (M) eval BatchNorm: y = x * alpha + beta */
    am_matrix patch;                       /* (C0, p*p) view of the conv weight */
    float *patch_b;                        /* (C0) */
    float *patch_ln_w, *patch_ln_b;        /* (C0) or NULL */
    am_htsat_stage stages[AM_HTSAT_MAX_STAGES];
    float *norm_w, *norm_b; /* (C_last) */
    am_linear proj1;        /* (P, C_last) + (P) */
    am_linear proj2;        /* (P, P) + (P) */
    float *vecs;            /* owns the f32 vectors */
    int32_t *idx;           /* owns the permutations */
    size_t n_idx;           /* ints at idx */
} am_htsat;

/* Resolves the encoder from ck under enc_prefix and the projection from
 * proj_ck under proj_prefix (they may be the same checkpoint). The checkpoints
 * must outlive the model. */
int am_htsat_load(const am_ckpt *ck, const char *enc_prefix, const am_ckpt *proj_ck,
                  const char *proj_prefix, const am_htsat_config *cfg, am_htsat **out);
void am_htsat_destroy(am_htsat **p);

/* The encoder's weights as backend be sees them (matrices through
 * upload_matrix, vectors and permutations in one allocation each of be's
 * memory); on a host-memory backend views of m's own. m must outlive it;
 * release with am_htsat_release on the same backend. AM_ENOMEM or upload errors. */
int am_htsat_upload(const am_htsat *m, am_backend *be, am_htsat **out);
void am_htsat_release(am_htsat **p, am_backend *be);

/* Steps 1-2 for one clip: log-mel (T, M) -> img (S, S). AM_ERANGE when T is 0
 * or more than am_htsat_max_frames. */
int am_htsat_prepare(const am_htsat *m, const float *mel, int64_t t, float *img);

/* Scratch floats am_htsat_forward needs for b clips. */
size_t am_htsat_scratch_floats(const am_htsat_config *c, int64_t b);

/* Steps 3-6 for b images (B, S, S) in host memory (patchified on the host,
 * then uploaded): pooled (B, C_last) in host memory (may be NULL) and embeds
 * (B, P) and scratch in the backend's; m is am_htsat_upload's copy on a
 * device. GEMMs run per clip (M = one clip's rows), so a batch gives the same
 * bits as one clip at a time. AM_ENOMEM, errors from the backend's matmul and
 * copies. */
int am_htsat_forward(const am_htsat *m, am_nn *nn, const float *img, int64_t b, float *pooled,
                     float *embeds, float *scratch);

#endif
