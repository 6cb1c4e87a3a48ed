/* encoders/modality.c - the encoder table of encoders/modality.h and the set of open encoders.
 *
 * Each entry wraps one encoder module's own API (vision.h, audio.h, imu.h)
 * behind the same five operations, so that the encoder worker and `anymal
 * encode` have no per-modality code. Entries that open the same model
 * (image and video) share it: the set keys models by their open function.
 */
#include "encoders/modality.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/audio.h"
#include "encoders/imu.h"
#include "encoders/vision.h"

#include <stdio.h>
#include <string.h>

typedef struct enc_ops {
    const char *unit;
    /* Model and encoder on be: *enc owned (close). */
    int (*open)(const char *dir, am_backend *be, int n_threads, void **enc);
    void (*close)(void *enc);
    int32_t (*out_dim)(const void *enc);
    size_t (*max_bytes)(const am_mod_opts *o);
    int (*prepare)(const void *enc, const void *data, size_t len, const char *name,
                   const am_mod_opts *o, am_mod_input *in);
    void (*input_fini)(void *x); /* what x owns; am_mod_input_fini frees x itself */
    int (*encode)(void *enc, const am_mod_input *const *in, float *const *out, int n);
} enc_ops;

/* An entry's loaded state: module mod's model and its encoder on a backend
 * (am_<mod>_model_load, am_<mod>_encoder_new and their destroys), as the
 * struct `mod` with mod_open and mod_close. */
#define AM__MOD_MODEL_ENCODER(mod, what)                                                           \
    typedef struct mod {                                                                           \
        am_##mod##_model *m;                                                                       \
        am_##mod##_encoder *e;                                                                     \
    } mod;                                                                                         \
    static void mod##_close(void *p) {                                                             \
        mod *x = p;                                                                                \
        if (!x) return;                                                                            \
        am_##mod##_encoder_destroy(&x->e);                                                         \
        am_##mod##_model_destroy(&x->m);                                                           \
        am_free(x);                                                                                \
    }                                                                                              \
    static int mod##_open(const char *dir, am_backend *be, int n_threads, void **out) {            \
        mod *x = am_calloc(1, sizeof *x);                                                          \
        if (!x) return am_err_set(AM_ENOMEM, what ": out of memory");                              \
        int rc;                                                                                    \
        if ((rc = am_##mod##_model_load(dir, &x->m)) ||                                            \
            (rc = am_##mod##_encoder_new(x->m, be, n_threads, 0, &x->e))) {                        \
            mod##_close(x);                                                                        \
            return rc;                                                                             \
        }                                                                                          \
        *out = x;                                                                                  \
        return 0;                                                                                  \
    }

/* mod_encode: the batch as am_<mod>_item's {fields of the prepared input x..., out}. */
#define AM__MOD_ENCODE(mod, input_type, ...)                                                       \
    static int mod##_encode(void *p, const am_mod_input *const *in, float *const *out, int n) {    \
        am_##mod##_item items[AM_MOD_MAX_BATCH];                                                   \
        for (int i = 0; i < n; i++) {                                                              \
            const input_type *x = in[i]->x;                                                        \
            items[i] = (am_##mod##_item){__VA_ARGS__, out[i]};                                     \
        }                                                                                          \
        return am_##mod##_encode(((mod *)p)->e, items, n);                                         \
    }

/* in->x = a zeroed input of `bytes`. */
static int input_alloc(am_mod_input *in, size_t bytes) {
    return (in->x = am_calloc(1, bytes)) ? 0 : am_err_set(AM_ENOMEM, "out of memory");
}

/* ---- vision (image, video) ---- */

AM__MOD_MODEL_ENCODER(vision, "vision encoder")

typedef struct vision_input {
    float *pixels; /* (F, 3, S, S) */
    int32_t n_frames;
} vision_input;

static int32_t vision_out_dim(const void *p) { return am_vision_out_dim(((const vision *)p)->m); }

static size_t image_max_bytes(const am_mod_opts *o) { return o->image.max_bytes; }
static size_t video_max_bytes(const am_mod_opts *o) { return o->video.max_bytes; }

static void vision_input_fini(void *x) { am_aligned_free(((vision_input *)x)->pixels); }

static int vision_input_new(const vision *v, am_mod_input *in, int32_t n_frames, vision_input **x) {
    int rc = input_alloc(in, sizeof **x);
    if (rc) return rc;
    *x = in->x;
    (*x)->n_frames = n_frames;
    in->n_rows = am_vision_n_tokens(v->m, n_frames);
    in->units = n_frames;
    return 0;
}

static int image_prepare(const void *p, const void *data, size_t len, const char *name,
                         const am_mod_opts *o, am_mod_input *in) {
    const vision *v = p;
    vision_input *x;
    am_image img;
    int rc = am_image_decode(data, len, name, &o->image, &img);
    if (rc) return rc;
    if (!(rc = vision_input_new(v, in, 1, &x))) {
        if (!(x->pixels = am_aligned_alloc((size_t)am_vision_frame_floats(v->m) * sizeof(float))))
            rc = am_err_set(AM_ENOMEM, "%s: out of memory", name);
        else
            rc = am_vision_preprocess(v->m, &img, x->pixels);
    }
    am_image_fini(&img);
    return rc;
}

static int video_prepare(const void *p, const void *data, size_t len, const char *name,
                         const am_mod_opts *o, am_mod_input *in) {
    const vision *v = p;
    vision_input *x;
    const int32_t frames = o->frames ? o->frames : v->m->video_frames;
    int rc = vision_input_new(v, in, frames, &x);
    return rc ? rc
              : am_vision_video_pixels(v->m, data, len, name, frames, o->n_threads, &o->video,
                                       &x->pixels);
}

AM__MOD_ENCODE(vision, vision_input, x->pixels, x->n_frames)

/* ---- audio ---- */

AM__MOD_MODEL_ENCODER(audio, "audio encoder")

static int32_t audio_out_dim(const void *p) { return am_audio_out_dim(((const audio *)p)->m); }
static size_t audio_max_bytes(const am_mod_opts *o) { return o->audio.max_bytes; }

static void audio_input_fini(void *x) { am_audio_fini(x); }

static int audio_prepare(const void *p, const void *data, size_t len, const char *name,
                         const am_mod_opts *o, am_mod_input *in) {
    const audio *a = p;
    int rc = input_alloc(in, sizeof(am_audio));
    am_audio *x = in->x;
    if (rc || (rc = am_audio_decode(data, len, name, &o->audio, am_audio_sample_rate(a->m), x)))
        return rc;
    in->n_rows = am_audio_n_tokens(a->m);
    in->units = 1;
    snprintf(in->info, sizeof in->info, " src=%s/%dHz/%dch/%.2fs", x->format, x->src_rate,
             x->src_channels, (double)x->src_frames / x->src_rate);
    return 0;
}

AM__MOD_ENCODE(audio, am_audio, x->samples, x->n)

/* ---- IMU ---- */

AM__MOD_MODEL_ENCODER(imu, "IMU encoder")

static int32_t imu_out_dim(const void *p) { return am_imu_out_dim(((const imu *)p)->m); }

static size_t imu_max_bytes(const am_mod_opts *o) {
    return o->imu.max_bytes ? o->imu.max_bytes : AM_IMU_MAX_BYTES_DEFAULT;
}

static void imu_input_fini(void *x) { am_imu_windows_fini(x); }

static int imu_prepare(const void *p, const void *data, size_t len, const char *name,
                       const am_mod_opts *o, am_mod_input *in) {
    const imu *u = p;
    int rc = input_alloc(in, sizeof(am_imu_windows));
    am_imu_windows *x = in->x;
    if (rc || (rc = am_imu_prepare(data, len, name, AM_IMU_AUTO, &o->imu, x))) return rc;
    in->n_rows = (int64_t)x->n_windows * am_imu_tokens_per_window(u->m);
    in->units = x->n_windows;
    snprintf(in->info, sizeof in->info, " windows=%d src=%.4gHz/%.2fs", x->n_windows,
             x->src_rate_hz, (double)x->n_samples / AM_IMU_RATE_HZ);
    return 0;
}

AM__MOD_ENCODE(imu, am_imu_windows, x->x, x->n_windows)

/* ---- the table ---- */

static const enc_ops table[AM_MOD_COUNT] = {
    [AM_MOD_IMAGE] = {"frames", vision_open, vision_close, vision_out_dim, image_max_bytes,
                      image_prepare, vision_input_fini, vision_encode},
    [AM_MOD_VIDEO] = {"frames", vision_open, vision_close, vision_out_dim, video_max_bytes,
                      video_prepare, vision_input_fini, vision_encode},
    [AM_MOD_AUDIO] = {"clips", audio_open, audio_close, audio_out_dim, audio_max_bytes,
                      audio_prepare, audio_input_fini, audio_encode},
    [AM_MOD_IMU] = {"windows", imu_open, imu_close, imu_out_dim, imu_max_bytes, imu_prepare,
                    imu_input_fini, imu_encode},
};

am_mod_opts am_mod_default_opts(void) {
    return (am_mod_opts){.image = am_image_default_limits(),
                         .video = am_video_default_limits(),
                         .audio = am_audio_default_limits(),
                         .imu = am_imu_default_opts(),
                         .n_threads = 1};
}

void am_mod_input_fini(am_mod_input *in) {
    if (in->x && in->modality >= 0 && in->modality < AM_MOD_COUNT)
        table[in->modality].input_fini(in->x);
    am_free(in->x);
    memset(in, 0, sizeof *in);
}

const char *am_mod_unit(int m) { return m >= 0 && m < AM_MOD_COUNT ? table[m].unit : "?"; }

size_t am_mod_max_bytes(int m, const am_mod_opts *o) {
    return m >= 0 && m < AM_MOD_COUNT ? table[m].max_bytes(o) : 0;
}

struct am_mod_set {
    void *enc[AM_MOD_COUNT]; /* per model, in the order of their first modality */
    int model_of[AM_MOD_COUNT];
    int first_mod[AM_MOD_COUNT]; /* a modality of each model: its table entry */
    int n_models;
    int32_t out_dim;
};

int am_mod_set_open(const char *dir, uint32_t modalities, am_backend *be, int n_threads,
                    am_mod_set **out) {
    *out = NULL;
    am_mod_set *s = am_calloc(1, sizeof *s);
    if (!s) return am_err_set(AM_ENOMEM, "encoders: out of memory");
    int rc = 0, first = -1;
    for (int m = 0; m < AM_MOD_COUNT && !rc; m++) {
        s->model_of[m] = -1;
        if (!(modalities & (1u << m))) continue;
        for (int k = 0; k < s->n_models && s->model_of[m] < 0; k++)
            if (table[s->first_mod[k]].open == table[m].open) s->model_of[m] = k;
        if (s->model_of[m] >= 0) continue;
        const int k = s->n_models;
        if ((rc = table[m].open(dir, be, n_threads, &s->enc[k]))) break;
        s->first_mod[k] = m;
        s->model_of[m] = k;
        s->n_models++;
        const int32_t d = table[m].out_dim(s->enc[k]);
        if (first >= 0 && d != s->out_dim)
            rc = am_err_set(AM_ESHAPE, "%s: %s rows are %d wide, %s rows %d", dir,
                            am_modality_name(m), d, am_modality_name(first), s->out_dim);
        if (first < 0) first = m, s->out_dim = d;
    }
    if (!rc && !s->n_models) rc = am_err_set(AM_EINVAL, "no modality to serve");
    /* A modality whose model is loaded anyway is served too (image and video come with
     * the vision tower, whichever of them was asked for). */
    for (int m = 0; m < AM_MOD_COUNT && !rc; m++)
        for (int k = 0; k < s->n_models && s->model_of[m] < 0; k++)
            if (table[s->first_mod[k]].open == table[m].open) s->model_of[m] = k;
    if (rc) {
        am_mod_set_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void am_mod_set_destroy(am_mod_set **p) {
    if (!p || !*p) return;
    am_mod_set *s = *p;
    for (int k = 0; k < s->n_models; k++)
        table[s->first_mod[k]].close(s->enc[k]);
    am_free(s);
    *p = NULL;
}

int32_t am_mod_set_out_dim(const am_mod_set *s) { return s->out_dim; }

int am_mod_set_model_of(const am_mod_set *s, int m) {
    return m >= 0 && m < AM_MOD_COUNT ? s->model_of[m] : -1;
}

int am_mod_set_n_models(const am_mod_set *s) { return s->n_models; }

int am_mod_set_prepare(const am_mod_set *s, int m, const void *data, size_t len, const char *name,
                       const am_mod_opts *o, am_mod_input *in) {
    memset(in, 0, sizeof *in);
    in->modality = m;
    const int k = am_mod_set_model_of(s, m);
    if (k < 0)
        return am_err_set(AM_EINVAL, "%s: these encoders do not serve %s", name,
                          am_modality_name(m));
    return table[m].prepare(s->enc[k], data, len, name, o, in);
}

int am_mod_set_encode(am_mod_set *s, int model, const am_mod_input *const *in, float *const *out,
                      int n) {
    if (model < 0 || model >= s->n_models || n < 0 || n > AM_MOD_MAX_BATCH)
        return am_err_set(AM_EINVAL, "encoders: batch of %d for model %d (at most %d)", n, model,
                          AM_MOD_MAX_BATCH);
    return n ? table[s->first_mod[model]].encode(s->enc[model], in, out, n) : 0;
}
