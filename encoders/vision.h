/* encoders/vision.h - the image/video encoder of an AnyMAL model: config, loading, batched
 * encoding.
 *
 * A vision encoder = CLIP preprocessing + ViT tower (encoders/vit.h) + a
 * projector (encoders/projector.h) whose output rows live in the LLM's
 * embedding space. am_vision_model_load() reads one of two directory layouts:
 *
 * 1. An AnyMAL model directory (written by `anymal mkmodel --with-encoders`):
 *    anymal.json names the files, all paths relative to the directory:
 *      {"anymal_version": 1,
 *       "llm": {"path": ".", "tokenizer": "tokenizer.model", "dim": 4096},
 *       "vision": {
 *         "weights": "vision_tower.safetensors", "prefix": "vision_model.",
 *         "image_size": 336, "patch_size": 14, "num_channels": 3, "hidden_size": 1024,
 *         "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
 *         "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu",
 *         "feature_layer": -2, "feature_select": "patch",      ("patch" drops CLS, "full" keeps it)
 *         "video_frames": 8,
 *         "preprocess": {"shortest_edge": 336, "crop_size": 336, "image_mean": [3],
 *                        "image_std": [3], "pad_to_square": false},
 *         "projector": {"type": "perceiver", "weights": "vision_projector.safetensors",
 *                       "prefix": "", "out_dim": 4096, "num_latents": 64, "depth": 2,
 *                       "heads": 8, "dim_head": 64, "ff_mult": 4, "max_frames": 8,
 *                       "max_media": 1, "layer_norm_eps": 1e-5, "tokens_per_row": 1}}}
 *    Omitted keys take the values shown (the ViT-L/14-336 shape).
 * 2. An HF LLaVA-1.5 directory (llava-hf/llava-1.5-7b-hf as published):
 *    config.json with "model_type": "llava", its vision_config (CLIPVisionConfig
 *    defaults for omitted keys), vision_feature_layer, vision_feature_select_strategy
 *    ("default" drops CLS), projector_hidden_act "gelu"; preprocessor_config.json
 *    (shortest_edge, crop_size, image_mean, image_std; do_pad -> pad_to_square);
 *    weights in the directory's safetensors under "vision_tower.vision_model." and
 *    "multi_modal_projector.linear_{1,2}" (or the same under "model.", the layout
 *    of newer transformers). The projector width comes from linear_1's shape.
 *
 * Errors name the file and key or tensor at fault (AM_ENOTFOUND, AM_EFORMAT,
 * AM_EINVAL, AM_ESHAPE, AM_EUNSUPPORTED, AM_EIO, AM_ENOMEM).
 */
#ifndef AM_VISION_H
#define AM_VISION_H

#include "core/backend.h"
#include "core/ckpt.h"
#include "encoders/image.h"
#include "encoders/preprocess.h"
#include "encoders/projector.h"
#include "encoders/video.h"
#include "encoders/vit.h"

#include <stdint.h>

/* Frames per ViT forward call; more frames are run in chunks (bounds the
 * activation memory: ViT-L/14-336 needs ~24 MB per frame). */
#define AM_VISION_MAX_BATCH_FRAMES_DEFAULT 8

/* What the directory's config says, without the weights. */
#define AM__VISION_CONFIG_FIELDS                                                                   \
    am_vit_config vit_cfg;                                                                         \
    am_proj_config proj_cfg; /* llava-hf: out_dim 0 until the weights are read */                  \
    am_clip_preprocess pp;                                                                         \
    int32_t feature_layer; /* -2 */                                                                \
    int feature_keep_cls;  /* 0: patches only */                                                   \
    int32_t video_frames;  /* default frames sampled from a video */                               \
    int32_t n_run;         /* ViT blocks to run for feature_layer */                               \
    const char *layout;    /* "anymal" or "llava-hf" */                                            \
    am_enc_files files;    /* anymal: the tower's and projector's files (llava-hf: the directory) */

typedef struct am_vision_config {
    AM__VISION_CONFIG_FIELDS
} am_vision_config;

typedef struct am_vision_model {
    union { /* m->vit_cfg, ... or the whole m->cfg */
        am_vision_config cfg;
        struct {
            AM__VISION_CONFIG_FIELDS
        };
    };
    am_vit *vit;
    am_proj *proj;
    am_ckpt *vit_ck, *proj_ck; /* proj_ck may equal vit_ck */
    char *dir;
} am_vision_model;

int am_vision_model_load(const char *dir, am_vision_model **out);
void am_vision_model_destroy(am_vision_model **p);

/* Reads the config alone (encoders/vision_config.c: no weights opened, no
 * media libraries linked; the shard leader sizes image and video slots with
 * it). Same errors as am_vision_model_load's config part. c is the caller's;
 * am_vision_config_fini frees its strings (and accepts a zeroed c). */
int am_vision_config_load(const char *dir, am_vision_config *c);
void am_vision_config_fini(am_vision_config *c);
/* Output rows for a media item of n_frames frames (am_vision_n_tokens from the config). */
int64_t am_vision_config_n_tokens(const am_vision_config *c, int32_t n_frames);

/* Patch rows per frame the projector sees (P, or P + 1 with CLS). */
int32_t am_vision_rows_per_frame(const am_vision_model *m);
/* Output rows for a media item of n_frames frames. */
int64_t am_vision_n_tokens(const am_vision_model *m, int32_t n_frames);
int32_t am_vision_out_dim(const am_vision_model *m);
/* Floats of one preprocessed frame: 3 * S * S. */
int64_t am_vision_frame_floats(const am_vision_model *m);

/* pixels (3, S, S) for one decoded image. */
int am_vision_preprocess(const am_vision_model *m, const am_image *img, float *pixels);
/* Decodes video bytes and preprocesses n_frames sampled frames into
 * *pixels (n_frames, 3, S, S), allocated with am_aligned_alloc. */
int am_vision_video_pixels(const am_vision_model *m, const void *data, size_t len, const char *name,
                           int32_t n_frames, int n_threads, const am_video_limits *lim,
                           float **pixels);

typedef struct am_vision_encoder am_vision_encoder;

/* The run-time state (op context, scratch) for one thread of encoding. The
 * model and backend are borrowed and must outlive it. max_batch_frames 0 =
 * default. */
int am_vision_encoder_new(const am_vision_model *m, am_backend *be, int n_threads,
                          int32_t max_batch_frames, am_vision_encoder **out);
void am_vision_encoder_destroy(am_vision_encoder **p);

/* One media item: an image is 1 frame, a video n_frames frames. */
typedef struct am_vision_item {
    const float *pixels; /* (F, 3, S, S) */
    int32_t n_frames;
    float *out; /* (am_vision_n_tokens(F), out_dim) */
} am_vision_item;

/* Encodes n items in one batch: the frames of all items go through the ViT
 * together (in chunks of max_batch_frames), then one projector call over all
 * items. Results equal encoding the items one at a time. */
int am_vision_encode(am_vision_encoder *e, const am_vision_item *items, int n);

/* The encoder's op context (to run a projector alone: benchmarks, tests). */
am_nn *am_vision_encoder_nn(am_vision_encoder *e);

/* Like am_vision_encode for images but returning the selected ViT features
 * (F, rows_per_frame, C) without the projector (tests, debugging). */
int am_vision_features(am_vision_encoder *e, const float *pixels, int32_t n_frames, float *feats);

#endif
