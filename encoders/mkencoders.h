/* encoders/mkencoders.h - random-init vision encoders for an AnyMAL model directory.
 *
 * `anymal mkmodel --with-encoders` writes the decoder (llm_shards/mkmodel.h)
 * into a directory and then calls am_mkencoders_write() to add
 *   vision_tower.safetensors      CLIP ViT under HF names ("vision_model.*")
 *   vision_projector.safetensors  the projector (perceiver / mlp2x_gelu / linear,
 *                                 names in encoders/projector.h)
 *   anymal.json                   the config that names them and the decoder
 *                                 (format in encoders/vision.h)
 * Values are deterministic in (seed, tensor name, element): linear weights
 * uniform with variance 1/fan_in, embeddings (class, positions, latents,
 * frame and time embeddings) unit variance, LayerNorm weights 1 + U(-0.1, 0.1),
 * biases U(-0.02, 0.02), so activations keep unit scale through the layers.
 */
#ifndef AM_MKENCODERS_H
#define AM_MKENCODERS_H

#include "core/dtype.h"
#include "encoders/projector.h"

#include <stdint.h>

typedef struct am_mkencoders_opts {
    const char *dir;          /* existing directory */
    const char *vision_shape; /* am_vit_shape name */
    am_proj_type projector;   /* perceiver (AnyMAL) by default */
    am_dtype dtype;           /* f32, f16 or bf16 */
    uint64_t seed;
    int32_t llm_dim;       /* the decoder's width: the projector's out_dim */
    const char *llm_path;  /* decoder path relative to dir ("." for a safetensors dir) */
    const char *tokenizer; /* tokenizer file relative to dir, or NULL */
    int32_t video_frames;  /* 0 = AM_VIDEO_FRAMES_DEFAULT */
} am_mkencoders_opts;

/* The projector config mkencoders uses for a vision shape (tiny shapes get a
 * tiny resampler; real shapes AnyMAL's 64 latents x 2 layers, 8 heads x 64). */
int am_mkencoders_proj_config(const char *vision_shape, am_proj_type type, int32_t llm_dim,
                              int32_t max_frames, am_proj_config *out);

/* Writes the three files; AM_EINVAL for a bad option (names it), AM_EIO, AM_ENOMEM. */
int am_mkencoders_write(const am_mkencoders_opts *o);

#endif
