/* encoders/modality.h - one table of operations per modality; what workers and tools call.
 *
 * The list of modalities (ids and wire names) is core/modality.h. For every
 * id this module has two tables, split by what they link:
 *
 * - the config-only part (modality_config.c, library am_enc_core: cJSON and
 *   the encoders' config readers, no weights read, no media library linked):
 *   the rows one input gives, from the model directory's config alone. The
 *   shard leader sizes its embedding slots with it.
 * - the encoder part (modality.c, library am_encoders: the decoders and their
 *   libraries): open a model's encoder on a backend, its output width, the
 *   byte limit of one input, prepare (decode + preprocess) one input, encode
 *   a batch of prepared inputs. The encoder worker and `anymal encode` use it.
 *
 * Adding a modality means a line in core/modality.h, an entry in each table
 * (modality_config.c, modality.c) and its encoder: nothing in workers/ or
 * tools/. Modalities whose entries open the same model (image and video: the
 * vision tower) share one loaded model in an am_mod_set and are encoded in one
 * batched call.
 *
 * Errors are core/error.h codes with a message naming the directory, file or
 * input at fault (the encoders' own: AM_ENOTFOUND, AM_EFORMAT, AM_EINVAL,
 * AM_ESHAPE, AM_ERANGE, AM_EUNSUPPORTED, AM_EIO, AM_ENOMEM).
 */
#ifndef AM_ENC_MODALITY_H
#define AM_ENC_MODALITY_H

#include "core/backend.h"
#include "core/modality.h"
#include "encoders/audio_file.h"
#include "encoders/image.h"
#include "encoders/imu_input.h"
#include "encoders/video.h"

#include <stddef.h>
#include <stdint.h>

/* ---- config only (am_enc_core) ---- */

/* The configs of the modalities a model directory has. */
typedef struct am_mod_config am_mod_config;

/* Reads the config of every modality dir has (no weights). A modality whose
 * config is missing or broken is not an error here: it has no rows (0) and
 * its slots are sized by the rows that come. AM_ENOMEM only. */
int am_mod_config_load(const char *dir, am_mod_config **out);
void am_mod_config_destroy(am_mod_config **p);
/* Rows one input of modality m gives; frames: the frames a video asks for (0:
 * the model's default). 0 when the input decides (IMU: rows per 5 s window)
 * or dir has no config for m. */
int64_t am_mod_config_rows(const am_mod_config *c, int m, uint32_t frames);

/* ---- encoders (am_encoders) ---- */

/* What an input may be and how to read it, per modality. */
typedef struct am_mod_opts {
    am_image_limits image;
    am_video_limits video;
    int32_t frames; /* video frames sampled (0: the model's default) */
    am_audio_limits audio;
    am_imu_opts imu;
    int n_threads; /* video decoding */
} am_mod_opts;

am_mod_opts am_mod_default_opts(void);

/* One prepared input (decoded and preprocessed, on the host). */
typedef struct am_mod_input {
    int modality;
    void *x;        /* owned by the entry that prepared it: am_mod_input_fini */
    int64_t n_rows; /* rows its encoding gives */
    int64_t units;  /* frames, clips or windows it holds (throughput) */
    char info[96];  /* what was decoded, for `anymal encode`'s line ("" for nothing) */
} am_mod_input;

void am_mod_input_fini(am_mod_input *in);

/* "frames", "clips", "windows": what am_mod_input.units counts for modality m. */
const char *am_mod_unit(int m);
/* The byte limit of one input of modality m under o. */
size_t am_mod_max_bytes(int m, const am_mod_opts *o);

/* Inputs one am_mod_set_encode call takes (an encoder worker's whole capacity). */
#define AM_MOD_MAX_BATCH 1024

/* The encoders of a set of modalities of one model directory, each model once. */
typedef struct am_mod_set am_mod_set;

/* Loads the encoders of the modalities in `modalities` (bit per am_modality)
 * on be (borrowed, must outlive the set) with n_threads host threads; a
 * modality whose model comes along (video with image) is served as well.
 * Their rows must have one width (AM_ESHAPE naming both); no modality: AM_EINVAL. */
int am_mod_set_open(const char *dir, uint32_t modalities, am_backend *be, int n_threads,
                    am_mod_set **out);
void am_mod_set_destroy(am_mod_set **p);
/* The width of every row the set gives. */
int32_t am_mod_set_out_dim(const am_mod_set *s);
/* Which of the set's models encodes modality m: 0 .. am_mod_set_n_models - 1,
 * models in the order of their first modality; -1 when m is not served. */
int am_mod_set_model_of(const am_mod_set *s, int m);
int am_mod_set_n_models(const am_mod_set *s);

/* Decodes and preprocesses len bytes of modality m (name for messages) into
 * *in (zeroed first; am_mod_input_fini frees it, also after an error). */
int am_mod_set_prepare(const am_mod_set *s, int m, const void *data, size_t len, const char *name,
                       const am_mod_opts *o, am_mod_input *in);
/* Encodes n prepared inputs of model `model` in one batch: in[i] gives
 * in[i]->n_rows rows of out_dim floats at out[i] (host memory). Results equal
 * encoding the inputs one at a time. */
int am_mod_set_encode(am_mod_set *s, int model, const am_mod_input *const *in, float *const *out,
                      int n);

#endif
