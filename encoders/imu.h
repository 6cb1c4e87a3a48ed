/* encoders/imu.h - the IMU motion encoder of an AnyMAL model: config, loading, batched encoding.
 *
 * An IMU encoder = input parsing, resampling to 200 Hz and 5 s windows
 * (imu_input.h) + IMU2CLIP's MW2StackRNNPooling (imu2clip.h) + a projector
 * (projector.h; AnyMAL: "linear", each window's 512-d embedding -> n_tokens
 * rows of the LLM width). A request of W windows gives W * n_tokens rows, the
 * windows' rows in time order.
 *
 * am_imu_model_load() reads the "imu" object of an AnyMAL directory's
 * anymal.json (omitted keys take the values shown, IMU2CLIP's encoder):
 *   "imu": {
 *     "weights": "imu_encoder.safetensors", "prefix": "imu_encoder.",
 *     "in_channels": 6, "input_dim": 32, "size_embeddings": 512, "window_samples": 1000,
 *     "normalize": false,
 *     "projector": {"type": "linear", "weights": "imu_projector.safetensors", "prefix": "",
 *                   "out_dim": <llm.dim>, "tokens_per_row": 8}}
 * "prefix" "imu_encoder." fits IMU2CLIP's Lightning checkpoints (converted to
 * safetensors); "normalize": true L2-normalizes each window's embedding (the
 * space IMU2CLIP's contrastive loss compares in).
 *
 * Errors name the file and key or tensor at fault.
 */
#ifndef AM_IMU_H
#define AM_IMU_H

#include "core/backend.h"
#include "core/ckpt.h"
#include "encoders/imu2clip.h"
#include "encoders/imu_input.h"
#include "encoders/projector.h"

#include <stdint.h>

/* Windows per encoder forward call (each needs ~0.5 MB of activations). */
#define AM_IMU_MAX_BATCH_DEFAULT 16

typedef struct am_imu_model {
    am_imu2clip_config enc_cfg;
    am_proj_config proj_cfg;
    int normalize;
    am_enc_files files; /* the encoder's and the projector's files */
    am_imu2clip *enc;
    am_proj *proj;
    am_ckpt *enc_ck, *proj_ck; /* proj_ck may equal enc_ck */
    char *dir;
} am_imu_model;

int am_imu_model_load(const char *dir, am_imu_model **out);
void am_imu_model_destroy(am_imu_model **p);

/* Rows per window, their width, and the IMU2CLIP embedding width. */
int64_t am_imu_tokens_per_window(const am_imu_model *m);
int32_t am_imu_out_dim(const am_imu_model *m);
int32_t am_imu_embed_dim(const am_imu_model *m);

typedef struct am_imu_encoder am_imu_encoder;

int am_imu_encoder_new(const am_imu_model *m, am_backend *be, int n_threads, int32_t max_batch,
                       am_imu_encoder **out);
void am_imu_encoder_destroy(am_imu_encoder **p);
am_nn *am_imu_encoder_nn(am_imu_encoder *e);

/* One request: W windows (W, 6, 1000) channel-major (am_imu_windows.x). */
typedef struct am_imu_item {
    const float *windows;
    int32_t n_windows;
    float *out; /* (W * tokens_per_window, out_dim) */
} am_imu_item;

/* Encodes n requests: the windows of all of them go through the encoder in
 * chunks of max_batch, then the projector (a linear one four windows per call,
 * am_proj_linear_rows; others per request). Results equal encoding the
 * requests one at a time. */
int am_imu_encode(am_imu_encoder *e, const am_imu_item *items, int n);
/* The window embeddings emb (sum W, H) of n requests, in order, without the
 * projector (after the optional normalization). */
int am_imu_embed(am_imu_encoder *e, const am_imu_item *items, int n, float *emb);

#endif
