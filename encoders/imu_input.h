/* encoders/imu_input.h - IMU input: CSV, .npy and raw float32 signals -> 200 Hz -> 5 s windows.
 *
 * An IMU signal is 6 channels: accelerometer x, y, z then gyroscope x, y, z
 * (docs/model-spec.md 6). Accepted inputs:
 *   CSV      one sample per line, 6 numbers, or 7 with a leading timestamp;
 *            fields separated by commas (spaces around them are ignored); an
 *            optional header line (its first field not a number); blank lines
 *            and lines starting with '#' are skipped.
 *   .npy     a 2-D little-endian float32 ('<f4') or float64 ('<f8') array, C or
 *            Fortran order: (T, 6) time-major, (T, 7) with a leading timestamp
 *            column, or (6, T) channel-major (the layout the encoder reads).
 *            Recognised from the magic bytes.
 *   raw f32  little-endian float32 (T, 6), time-major, as a request carries it
 *            (am_imu_from_f32), or a file whose name ends in .f32 / .bin / .raw.
 * Timestamps are in seconds times time_scale (1 = s, 1e-3 = ms, ...) and must
 * increase strictly; the rate is then (n - 1) / (t_last - t_first). Without
 * timestamps the rate is given (default 200 Hz).
 *
 * Resampling to 200 Hz follows IMU2CLIP's preprocessing (its resampleIMU calls
 * torchaudio.functional.resample): the rate is rounded to an integer (IMU2CLIP
 * truncates; we round), and a signal not already at 200 Hz is resampled per
 * channel with torchaudio's windowed-sinc kernel (sinc_interp_hann,
 * lowpass_filter_width 6, rolloff 0.99), output length ceil(200 * n / rate).
 * Windows: 1000 consecutive samples (5 s) each; the last one is zero-padded
 * (IMU2CLIP's padIMU), so a request of n samples gives ceil(n / 1000) windows,
 * each (6, 1000) channel-major.
 *
 * Errors name the file (`name`), and the line/column or index at fault:
 *   AM_EFORMAT  unparsable CSV field, wrong column count, bad .npy header,
 *               size not matching the shape (truncated), NaN/Inf sample,
 *               timestamps not increasing, fewer than AM_IMU_MIN_SAMPLES samples
 *   AM_ERANGE   over max_bytes or max_windows; a rate outside [1, 4000] Hz
 *   AM_EUNSUPPORTED  an .npy dtype other than f4/f8, more than 2 dimensions
 *   AM_EIO, AM_ENOMEM
 */
#ifndef AM_IMU_INPUT_H
#define AM_IMU_INPUT_H

#include <stddef.h>
#include <stdint.h>

#define AM_IMU_CHANNELS       6
#define AM_IMU_RATE_HZ        200
#define AM_IMU_WINDOW_SAMPLES 1000
/* IMU2CLIP drops windows with fewer than 10 samples. */
#define AM_IMU_MIN_SAMPLES         10
#define AM_IMU_MIN_RATE_HZ         1
#define AM_IMU_MAX_RATE_HZ         4000
#define AM_IMU_MAX_BYTES_DEFAULT   ((size_t)64 << 20)
#define AM_IMU_MAX_WINDOWS_DEFAULT 64 /* 320 s per request */
/* torchaudio's defaults, which IMU2CLIP uses. */
#define AM_IMU_SINC_ZERO_CROSSINGS 6
#define AM_IMU_SINC_ROLLOFF        0.99

typedef enum { AM_IMU_AUTO = 0, AM_IMU_CSV, AM_IMU_NPY, AM_IMU_F32 } am_imu_format;

typedef struct am_imu_opts {
    double rate_hz;      /* rate of data without timestamps; 0 = AM_IMU_RATE_HZ */
    double time_scale;   /* seconds per timestamp unit; 0 = 1 (seconds) */
    size_t max_bytes;    /* 0 = AM_IMU_MAX_BYTES_DEFAULT */
    int32_t max_windows; /* 0 = AM_IMU_MAX_WINDOWS_DEFAULT */
} am_imu_opts;

/* A signal before windowing: x (n, 6) time-major at rate_hz. */
typedef struct am_imu_signal {
    float *x; /* owned (am_aligned_free via am_imu_signal_fini) */
    int64_t n;
    double rate_hz;
} am_imu_signal;

/* Windows ready for the encoder. */
typedef struct am_imu_windows {
    float *x; /* (W, 6, 1000) channel-major, owned (am_imu_windows_fini) */
    int32_t n_windows;
    int64_t n_samples; /* at 200 Hz, before padding */
    double src_rate_hz;
} am_imu_windows;

am_imu_opts am_imu_default_opts(void);
/* The format from the bytes (npy magic) or the name's extension; else CSV. */
am_imu_format am_imu_sniff(const void *data, size_t len, const char *name);

/* Parses len bytes of the given format (AM_IMU_AUTO: sniffed) into a signal
 * at its own rate. */
int am_imu_parse(const void *data, size_t len, const char *name, am_imu_format fmt,
                 const am_imu_opts *o, am_imu_signal *out);
/* Raw (n, 6) time-major f32 samples at rate_hz (a request's array). */
int am_imu_from_f32(const float *x, int64_t n, double rate_hz, const char *name,
                    am_imu_signal *out);
/* To AM_IMU_RATE_HZ as described above (a copy when already there). */
int am_imu_resample(const am_imu_signal *in, const char *name, am_imu_signal *out);
/* 200 Hz signal -> ceil(n / 1000) zero-padded windows; AM_ERANGE over max_windows. */
int am_imu_make_windows(const am_imu_signal *s, const char *name, int32_t max_windows,
                        am_imu_windows *out);
/* parse + resample + windows in one call; and the same from a file. */
int am_imu_prepare(const void *data, size_t len, const char *name, am_imu_format fmt,
                   const am_imu_opts *o, am_imu_windows *out);
int am_imu_load(const char *path, am_imu_format fmt, const am_imu_opts *o, am_imu_windows *out);
void am_imu_signal_fini(am_imu_signal *s);
void am_imu_windows_fini(am_imu_windows *w);

/* torchaudio.functional.resample (sinc_interp_hann, 6 zero crossings, rolloff
 * 0.99) of one channel x (n) with stride `stride` floats between samples, from
 * integer rate orig to new: y (ceil(new_r * n / orig_r)) with the rates
 * reduced by their gcd, stride `ystride`. Tests use it directly. AM_ENOMEM. */
int am_imu_sinc_resample(const float *x, int64_t n, int64_t stride, int32_t orig, int32_t new_rate,
                         float *y, int64_t ystride, int64_t *n_out);
/* Output length of am_imu_sinc_resample. */
int64_t am_imu_resampled_len(int64_t n, int32_t orig, int32_t new_rate);

#endif
