/* encoders/audio.h - the audio encoder of an AnyMAL model: config, loading, batched encoding.
 *
 * An audio encoder = decoding and resampling (audio_file.h) + CLAP's log-mel
 * front end (melspec.h) + HTSAT and CLAP's audio projection (htsat.h) + a
 * projector (projector.h; AnyMAL: "linear", one CLAP embedding -> n_tokens
 * rows of the LLM width, docs/model-spec.md 4). One audio item (a clip, cut or
 * repeat-padded to 10 s) gives am_audio_n_tokens rows.
 *
 * am_audio_model_load() reads the "audio" object of an AnyMAL directory's
 * anymal.json (written by `anymal mkmodel --with-encoders`; paths relative to
 * the directory; omitted keys take the values shown, CLAP HTSAT-tiny as in
 * laion/clap-htsat-unfused, HF ClapAudioConfig / ClapFeatureExtractor names):
 *   "audio": {
 *     "weights": "audio_encoder.safetensors",
 *     "prefix": "audio_model.audio_encoder.", "projection_prefix": "audio_projection.",
 *     "spec_size": 256, "num_mel_bins": 64, "patch_size": 4, "patch_stride": 4,
 *     "patch_embeds_hidden_size": 96, "depths": [2, 2, 6, 2],
 *     "num_attention_heads": [4, 8, 16, 32], "window_size": 8, "mlp_ratio": 4.0,
 *     "layer_norm_eps": 1e-5, "hidden_act": "gelu", "projection_dim": 512,
 *     "projection_hidden_act": "relu", "enable_patch_layer_norm": true,
 *     "enable_fusion": false, "normalize": false,
 *     "preprocess": {"sampling_rate": 48000, "fft_window_size": 1024, "hop_length": 480,
 *                    "feature_size": 64, "frequency_min": 50, "frequency_max": 14000,
 *                    "max_length_s": 10, "padding": "repeatpad", "mel_scale": "slaney"},
 *     "projector": {"type": "linear", "weights": "audio_projector.safetensors", "prefix": "",
 *                   "out_dim": <llm.dim>, "tokens_per_row": 8}}
 * The defaults fit a published CLAP checkpoint: "weights" may name
 * laion/clap-htsat-unfused's model.safetensors (ClapModel names) directly.
 * "normalize": true L2-normalizes the CLAP embedding before the projector (as
 * ClapModel.get_audio_features returns it). Feature fusion (the "fused" CLAP
 * models) is not supported (AM_EUNSUPPORTED).
 *
 * Errors name the file and key or tensor at fault (AM_ENOTFOUND, AM_EFORMAT,
 * AM_EINVAL, AM_ESHAPE, AM_EUNSUPPORTED, AM_EIO, AM_ENOMEM).
 */
#ifndef AM_AUDIO_H
#define AM_AUDIO_H

#include "core/backend.h"
#include "core/ckpt.h"
#include "encoders/audio_file.h"
#include "encoders/htsat.h"
#include "encoders/melspec.h"
#include "encoders/projector.h"

#include <stdint.h>

/* Clips per HTSAT forward call; more are run in chunks (HTSAT-tiny needs
 * ~20 MB of activations per clip). */
#define AM_AUDIO_MAX_BATCH_DEFAULT 8
#define AM_AUDIO_MAX_BATCH_LIMIT   64

/* What the "audio" section says, without the weights. */
#define AM__AUDIO_CONFIG_FIELDS                                                                    \
    am_melspec_config fe;                                                                          \
    am_htsat_config enc_cfg;                                                                       \
    am_proj_config proj_cfg;                                                                       \
    int normalize;                                                                                 \
    am_enc_files files; /* HTSAT's and the projector's files */                                    \
    char *clap_prefix;  /* CLAP's audio projection in HTSAT's file ("projection_prefix") */

typedef struct am_audio_config {
    AM__AUDIO_CONFIG_FIELDS
} am_audio_config;

typedef struct am_audio_model {
    union { /* m->fe, ... or the whole m->cfg */
        am_audio_config cfg;
        struct {
            AM__AUDIO_CONFIG_FIELDS
        };
    };
    am_melspec *ms;
    am_htsat *enc;
    am_proj *proj;
    am_ckpt *enc_ck, *proj_ck; /* proj_ck may equal enc_ck */
    char *dir;
} am_audio_model;

int am_audio_model_load(const char *dir, am_audio_model **out);
void am_audio_model_destroy(am_audio_model **p);

/* Reads the "audio" section alone (encoders/audio_config.c: no weights, no
 * FFTW or audio decoders linked; the shard leader sizes audio slots with it).
 * Same errors as am_audio_model_load's config part. c is the caller's;
 * am_audio_config_fini frees its strings (and accepts a zeroed c). */
int am_audio_config_load(const char *dir, am_audio_config *c);
void am_audio_config_fini(am_audio_config *c);
/* Output rows per clip, from the config. */
int64_t am_audio_config_n_tokens(const am_audio_config *c);

/* Output rows per clip, their width, the sample rate the encoder wants, and
 * the CLAP embedding width (projection_dim). */
int64_t am_audio_n_tokens(const am_audio_model *m);
int32_t am_audio_out_dim(const am_audio_model *m);
int32_t am_audio_sample_rate(const am_audio_model *m);
int32_t am_audio_embed_dim(const am_audio_model *m);

typedef struct am_audio_encoder am_audio_encoder;

/* Run-time state for one thread of encoding; model and backend are borrowed.
 * max_batch 0 = default; at most AM_AUDIO_MAX_BATCH_LIMIT. */
int am_audio_encoder_new(const am_audio_model *m, am_backend *be, int n_threads, int32_t max_batch,
                         am_audio_encoder **out);
void am_audio_encoder_destroy(am_audio_encoder **p);
am_nn *am_audio_encoder_nn(am_audio_encoder *e);

/* One clip: mono samples at am_audio_sample_rate (see am_audio_decode). */
typedef struct am_audio_item {
    const float *samples; /* (n) */
    int64_t n;
    float *out; /* (am_audio_n_tokens, out_dim) */
} am_audio_item;

/* Encodes n clips: log-mel per clip, HTSAT over chunks of max_batch clips,
 * then the projector (a linear one four clips per call, am_proj_linear_rows;
 * others per clip). Results equal encoding the clips one at a time. */
int am_audio_encode(am_audio_encoder *e, const am_audio_item *items, int n);
/* Like am_audio_encode but returning the CLAP embeddings emb (n, P) (after
 * the optional normalization) and, if not NULL, the pooled HTSAT outputs
 * pooled (n, C_last) (tests, debugging). items[i].out is not used. */
int am_audio_embed(am_audio_encoder *e, const am_audio_item *items, int n, float *emb,
                   float *pooled);

#endif
