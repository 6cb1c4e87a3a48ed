/* encoders/audio_file.h - audio input: decoding (libsndfile), downmix, resampling (libsoxr),
 * limits.
 *
 * Accepted containers: WAV (incl. WAVE_FORMAT_EXTENSIBLE and RF64), FLAC,
 * OGG (Vorbis, Opus) and MP3 (libsndfile 1.1+ reads MPEG layer III through
 * mpg123). The format is recognised from the bytes, never from the name.
 * Samples are decoded to f32 (libsndfile's normalization: integer PCM / 2^(bits-1)),
 * downmixed to mono by the mean over channels (as librosa/transformers'
 * load_audio do) and resampled to the encoder's rate with libsoxr (SOXR_HQ,
 * linear phase, one-shot over the whole clip) when the rates differ.
 *
 * Input comes from users: every failure is an error whose message names the
 * file (the `name` given) and what was wrong; nothing crashes:
 *   AM_ERANGE       over max_bytes or max_seconds (checked on the header where
 *                   it declares a length, and while decoding), channel count or
 *                   sample rate outside the limits below
 *   AM_EFORMAT      not a recognised audio file, corrupt data, a truncated file
 *                   (a WAV data chunk longer than the file; an Ogg page that is
 *                   incomplete, fails its checksum, or a last page without the
 *                   end-of-stream flag; FLAC, or MP3 with a Xing/Info/VBRI header,
 *                   decoding to fewer frames than declared: an MP3 without one
 *                   declares no length, so a cut one is just shorter), no
 *                   samples, or a NaN/Inf sample (float WAV)
 *   AM_EUNSUPPORTED a file libsndfile reads but we do not accept (AIFF, AU, ...)
 *   AM_EIO          the file cannot be read; AM_ENOMEM
 */
#ifndef AM_AUDIO_FILE_H
#define AM_AUDIO_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Defaults: 64 MiB per file (Triton's HTTP input limit) and 10 minutes of
 * decoded audio (CLAP uses 10 s; longer clips are cut to their start anyway). */
#define AM_AUDIO_MAX_BYTES_DEFAULT   ((size_t)64 << 20)
#define AM_AUDIO_MAX_SECONDS_DEFAULT 600.0
#define AM_AUDIO_MAX_CHANNELS        64
#define AM_AUDIO_MIN_RATE_HZ         1000
#define AM_AUDIO_MAX_RATE_HZ         384000

typedef struct am_audio_limits {
    size_t max_bytes;   /* encoded size */
    double max_seconds; /* decoded duration */
} am_audio_limits;

/* Mono f32 samples. */
typedef struct am_audio {
    float *samples; /* (n), owned (am_aligned_free via am_audio_fini) */
    int64_t n;
    int32_t rate;         /* of samples */
    int32_t src_rate;     /* of the file */
    int32_t src_channels; /* of the file */
    int64_t src_frames;   /* decoded frames, at src_rate */
    char format[16];      /* "wav", "flac", "ogg", "mp3" */
} am_audio;

am_audio_limits am_audio_default_limits(void);

/* Decodes len bytes, downmixes, and resamples to `rate` (0 = keep the file's).
 * name is for messages. lim NULL = defaults. On failure *out is zeroed. */
int am_audio_decode(const void *data, size_t len, const char *name, const am_audio_limits *lim,
                    int32_t rate, am_audio *out);
/* Reads the file (at most lim->max_bytes) and decodes it. */
int am_audio_load(const char *path, const am_audio_limits *lim, int32_t rate, am_audio *out);
/* Raw mono f32 samples from a request at src_rate: checked (n >= 1, finite,
 * duration, rate) and resampled like a decoded file. */
int am_audio_from_f32(const float *x, int64_t n, int32_t src_rate, const char *name,
                      const am_audio_limits *lim, int32_t rate, am_audio *out);
void am_audio_fini(am_audio *a);

/* libsoxr HQ one-shot resampling: *out (am_aligned_alloc) gets
 * round(n * out_rate / in_rate) samples. AM_EINVAL, AM_ENOMEM. */
int am_audio_resample(const float *in, int64_t n, int32_t in_rate, int32_t out_rate, float **out,
                      int64_t *n_out);

#endif
