/* encoders/melspec_config.c - CLAP front-end defaults, names and checks, without FFTW.
 *
 * Apart from melspec.c so that reading an audio config (audio_config.c, which
 * the shard leader links to size audio slots) does not link FFTW.
 */
#include "encoders/melspec.h"

#include "core/error.h"

#include <string.h>

am_melspec_config am_melspec_clap_default(void) {
    return (am_melspec_config){.sample_rate = 48000,
                               .n_fft = 1024,
                               .hop = 480,
                               .n_mels = 64,
                               .fmin = 50.0f,
                               .fmax = 14000.0f,
                               .max_samples = 480000,
                               .padding = AM_AUDIO_PAD_REPEATPAD,
                               .mel_scale = AM_MEL_SLANEY};
}

int am_melspec_parse_padding(const char *s, am_audio_padding *out) {
    if (!strcmp(s, "repeatpad"))
        *out = AM_AUDIO_PAD_REPEATPAD;
    else if (!strcmp(s, "repeat"))
        *out = AM_AUDIO_PAD_REPEAT;
    else if (!strcmp(s, "pad"))
        *out = AM_AUDIO_PAD_ZERO;
    else
        return am_err_set(AM_EINVAL, "audio padding '%s' (want repeatpad, repeat or pad)", s);
    return 0;
}

int am_melspec_parse_scale(const char *s, am_mel_scale *out) {
    if (!strcmp(s, "slaney"))
        *out = AM_MEL_SLANEY;
    else if (!strcmp(s, "htk"))
        *out = AM_MEL_HTK;
    else
        return am_err_set(AM_EINVAL, "mel scale '%s' (want slaney or htk)", s);
    return 0;
}

const char *am_melspec_padding_name(am_audio_padding p) {
    return p == AM_AUDIO_PAD_REPEATPAD ? "repeatpad" : p == AM_AUDIO_PAD_REPEAT ? "repeat" : "pad";
}

const char *am_melspec_scale_name(am_mel_scale s) { return s == AM_MEL_HTK ? "htk" : "slaney"; }

int am_melspec_config_check(const am_melspec_config *c) {
    if (c->sample_rate < 1000 || c->sample_rate > 384000)
        return am_err_set(AM_EINVAL, "audio config: sampling_rate %d not in [1000, 384000]",
                          c->sample_rate);
    if (c->n_fft < 16 || c->n_fft > 65536 || c->n_fft % 2)
        return am_err_set(AM_EINVAL, "audio config: fft_window_size %d is not even in [16, 65536]",
                          c->n_fft);
    if (c->hop < 1 || c->hop > c->n_fft * 16)
        return am_err_set(AM_EINVAL, "audio config: hop_length %d", c->hop);
    if (c->n_mels < 1 || c->n_mels > c->n_fft / 2)
        return am_err_set(AM_EINVAL, "audio config: feature_size %d not in [1, %d]", c->n_mels,
                          c->n_fft / 2);
    if (!(c->fmin >= 0 && c->fmin < c->fmax && c->fmax <= c->sample_rate / 2))
        return am_err_set(AM_EINVAL,
                          "audio config: frequency_min %g / frequency_max %g not in [0, %d]",
                          (double)c->fmin, (double)c->fmax, c->sample_rate / 2);
    if (c->max_samples <= c->n_fft / 2 || c->max_samples > 64 * c->sample_rate * 60)
        return am_err_set(AM_EINVAL, "audio config: %d samples per clip (max_length_s)",
                          c->max_samples);
    return 0;
}
