/* encoders/melspec.h - CLAP's log-mel front end (HF ClapFeatureExtractor) with FFTW.
 *
 * For mono samples at sample_rate (docs/model-spec.md 5; defaults = laion/clap-htsat-unfused's
 * preprocessor_config.json):
 *  1. Length: shorter than max_samples (10 s) -> "repeatpad" (tile floor(max/n)
 *     times, then zeros), "repeat" (tile, cut) or "pad" (zeros); longer -> the
 *     first max_samples samples. (HF's "rand_trunc" takes a random crop there;
 *     a server must be deterministic, so we take the start.)
 *  2. STFT: centered (n_fft/2 reflect padding each side, numpy's "reflect"),
 *     periodic Hann window of n_fft, hop, real FFT of n_fft (FFTW, double),
 *     power |X|^2 with X rounded to complex64 as HF does -> frames
 *     T = 1 + max_samples / hop (1001).
 *  3. Mel: n_mels triangular filters between fmin and fmax on the Slaney
 *     scale with Slaney area normalization (librosa's, HF mel_filters_slaney,
 *     used by the rand_trunc models), or the HTK scale without normalization
 *     (HF mel_filters, used by the fusion models); FFT bin k at k * (sr/2) /
 *     (n_fft/2).
 *  4. 10 * log10(max(mel, 1e-10)) -> f32 (T, n_mels).
 * Computed in double, so the result is within float rounding of HF's numpy
 * float64 pipeline.
 */
#ifndef AM_MELSPEC_H
#define AM_MELSPEC_H

#include "core/threadpool.h"

#include <stdint.h>

/* Floor of the power spectrum before the log (HF mel_floor / min_value). */
#define AM_MELSPEC_POWER_FLOOR 1e-10

typedef enum { AM_MEL_SLANEY = 0, AM_MEL_HTK } am_mel_scale;
typedef enum {
    AM_AUDIO_PAD_REPEATPAD = 0,
    AM_AUDIO_PAD_REPEAT,
    AM_AUDIO_PAD_ZERO
} am_audio_padding;

typedef struct am_melspec_config {
    int32_t sample_rate;      /* 48000 */
    int32_t n_fft;            /* 1024 (fft_window_size; the window is as long) */
    int32_t hop;              /* 480 (hop_length) */
    int32_t n_mels;           /* 64 (feature_size) */
    float fmin, fmax;         /* 50, 14000 (frequency_min, frequency_max) */
    int32_t max_samples;      /* 480000 (max_length_s * sample_rate) */
    am_audio_padding padding; /* repeatpad */
    am_mel_scale mel_scale;   /* slaney */
} am_melspec_config;

/* CLAP's settings (above). */
am_melspec_config am_melspec_clap_default(void);
/* Parses "repeatpad" / "repeat" / "pad" and "slaney" / "htk" (AM_EINVAL naming the value). */
int am_melspec_parse_padding(const char *s, am_audio_padding *out);
int am_melspec_parse_scale(const char *s, am_mel_scale *out);
const char *am_melspec_padding_name(am_audio_padding p);
const char *am_melspec_scale_name(am_mel_scale s);
/* Validates: n_fft even in [16, 65536], hop >= 1, 0 <= fmin < fmax <= sr/2,
 * n_mels in [1, n_fft/2], max_samples > n_fft/2 (reflect padding). AM_EINVAL. */
int am_melspec_config_check(const am_melspec_config *c);
/* Frames of the output: 1 + max_samples / hop. */
static inline int64_t am_melspec_frames(const am_melspec_config *c) {
    return 1 + (int64_t)c->max_samples / c->hop;
}

typedef struct am_melspec am_melspec;

/* Precomputes the window, the filter bank and the FFTW plan (planning is
 * serialized internally: FFTW's planner is not thread-safe). AM_EINVAL, AM_ENOMEM. */
int am_melspec_new(const am_melspec_config *c, am_melspec **out);
void am_melspec_destroy(am_melspec **p);
const am_melspec_config *am_melspec_get_config(const am_melspec *m);

/* mel (T, n_mels) for n >= 1 samples (steps 1-4). Frames are split over tp
 * (NULL: the calling thread). Safe to call from several threads at once on
 * one am_melspec. AM_EINVAL (n < 1), AM_ENOMEM. */
int am_melspec_run(const am_melspec *m, const float *samples, int64_t n, am_threadpool *tp,
                   float *mel);

/* The filter bank (n_fft/2 + 1, n_mels), f64, as HF's mel_filter_bank (tests). */
const double *am_melspec_filters(const am_melspec *m);

#endif
