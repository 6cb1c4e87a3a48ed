/* encoders/mkencoders.h - random-init encoders and projectors for an AnyMAL model directory.
 *
 * `anymal mkmodel --with-encoders` writes the decoder (llm_shards/mkmodel.h)
 * into a directory and then calls am_mkencoders_write() to add
 *   vision_tower.safetensors      CLIP ViT under HF names ("vision_model.*")
 *   vision_projector.safetensors  the projector (perceiver / mlp2x_gelu / linear,
 *                                 names in encoders/projector.h)
 *   audio_encoder.safetensors     CLAP HTSAT + audio projection under HF ClapModel
 *                                 names ("audio_model.audio_encoder.*", "audio_projection.*")
 *   audio_projector.safetensors   linear projector (weight, bias)
 *   imu_encoder.safetensors       IMU2CLIP MW2StackRNNPooling ("imu_encoder.net.*")
 *   imu_projector.safetensors     linear projector (weight, bias)
 *   anymal.json                   the config that names them and the decoder
 *                                 (formats in encoders/vision.h, audio.h, imu.h)
 * Values are deterministic in (seed, tensor name, element): linear weights
 * uniform with variance 1/fan_in, embeddings (class, positions, latents,
 * frame and time embeddings, Swin relative-position bias tables) unit variance,
 * norm weights (LayerNorm, GroupNorm, BatchNorm, and BatchNorm running_var)
 * 1 + U(-0.1, 0.1), biases (and BatchNorm running_mean) U(-0.02, 0.02), so
 * activations keep unit scale through the layers. Each value is
 * u(seed, name, i) scaled in f32 (see am_mkencoders_uniform), so another
 * language can rebuild the same weights (tests/golden/audio/gen_audio_golden.py does).
 */
#ifndef AM_MKENCODERS_H
#define AM_MKENCODERS_H

#include "core/dtype.h"
#include "encoders/projector.h"

#include <stdint.h>

typedef struct am_mkencoders_opts {
    const char *dir;          /* existing directory */
    const char *vision_shape; /* am_vit_shape name, or NULL: no vision encoder */
    am_proj_type projector;   /* perceiver (AnyMAL) by default */
    am_dtype dtype;           /* f32, f16 or bf16 */
    uint64_t seed;
    int32_t llm_dim;         /* the decoder's width: the projector's out_dim */
    const char *llm_path;    /* decoder path relative to dir ("." for a safetensors dir) */
    const char *tokenizer;   /* tokenizer file relative to dir, or NULL */
    int32_t video_frames;    /* 0 = AM_VIDEO_FRAMES_DEFAULT */
    const char *audio_shape; /* am_htsat_shape name, or NULL: no audio encoder */
    const char *imu_shape;   /* am_imu2clip_shape name, or NULL: no IMU encoder */
    int32_t audio_tokens;    /* linear projector rows per clip; 0 = 8 (4 for "tiny") */
    int32_t imu_tokens;      /* linear projector rows per 5 s window; 0 = 8 (4 for "tiny") */
} am_mkencoders_opts;

/* The value before scaling of element i of tensor `name`: uniform in [-1, 1),
 * exactly representable in f32: (mix64(mix64(seed * 0x100000001b3 + fnv1a64(name))
 * + 0x9e3779b97f4a7c15 * (i + 1)) >> 40) / 2^23 - 1, mix64 = splitmix64's finalizer. */
float am_mkencoders_uniform(uint64_t seed, const char *name, uint64_t i);

/* The projector config mkencoders uses for a vision shape (tiny shapes get a
 * tiny resampler; real shapes AnyMAL's 64 latents x 2 layers, 8 heads x 64). */
int am_mkencoders_proj_config(const char *vision_shape, am_proj_type type, int32_t llm_dim,
                              int32_t max_frames, am_proj_config *out);

/* Writes the files of the encoders asked for and anymal.json; AM_EINVAL for a
 * bad option (names it), AM_EIO, AM_ENOMEM. */
int am_mkencoders_write(const am_mkencoders_opts *o);

#endif
