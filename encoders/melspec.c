/* encoders/melspec.c - CLAP log-mel spectrogram: padding, centered STFT (FFTW), mel filters, dB. */
#include "encoders/melspec.h"

#include "core/alloc.h"
#include "core/error.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

/* FFTW's planner keeps global state; executing a plan on new arrays is thread-safe. */
static pthread_mutex_t fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

struct am_melspec {
    am_melspec_config cfg;
    double *window;   /* (n_fft) periodic Hann */
    double *filters;  /* (n_freq, n_mels), HF layout */
    int32_t *lo, *hi; /* (n_mels) nonzero range [lo, hi) of each filter's column */
    fftw_plan plan;
};

static double hz_to_mel(double f, am_mel_scale s) {
    if (s == AM_MEL_HTK) return 2595.0 * log10(1.0 + f / 700.0);
    if (f < 1000.0) return 3.0 * f / 200.0;
    return 15.0 + log(f / 1000.0) * (27.0 / log(6.4));
}

static double mel_to_hz(double m, am_mel_scale s) {
    if (s == AM_MEL_HTK) return 700.0 * (pow(10.0, m / 2595.0) - 1.0);
    if (m < 15.0) return 200.0 * m / 3.0;
    return 1000.0 * exp((log(6.4) / 27.0) * (m - 15.0));
}

/* numpy.linspace(start, stop, num)[i]: i * step + start, the last one exactly stop. */
static double linspace(double start, double stop, int64_t num, int64_t i) {
    if (i == num - 1) return stop;
    return (double)i * ((stop - start) / (double)(num - 1)) + start;
}

/* HF audio_utils.mel_filter_bank (triangularize_in_mel_space = False); ff (n_mels + 2) scratch. */
static void make_filters(const am_melspec_config *c, double *fb, double *ff) {
    const int64_t nf = c->n_fft / 2 + 1, M = c->n_mels;
    const double mmin = hz_to_mel(c->fmin, c->mel_scale), mmax = hz_to_mel(c->fmax, c->mel_scale);
    for (int64_t i = 0; i < M + 2; i++)
        ff[i] = mel_to_hz(linspace(mmin, mmax, M + 2, i), c->mel_scale);
    for (int64_t k = 0; k < nf; k++) {
        const double fk = linspace(0.0, (double)(c->sample_rate / 2), nf, k);
        for (int64_t m = 0; m < M; m++) {
            const double down = -(ff[m] - fk) / (ff[m + 1] - ff[m]);
            const double up = (ff[m + 2] - fk) / (ff[m + 2] - ff[m + 1]);
            double v = down < up ? down : up;
            v = v > 0.0 ? v : 0.0;
            if (c->mel_scale == AM_MEL_SLANEY) v *= 2.0 / (ff[m + 2] - ff[m]);
            fb[k * M + m] = v;
        }
    }
}

void am_melspec_destroy(am_melspec **p) {
    if (!p || !*p) return;
    am_melspec *m = *p;
    if (m->plan) {
        pthread_mutex_lock(&fftw_planner_lock);
        fftw_destroy_plan(m->plan);
        pthread_mutex_unlock(&fftw_planner_lock);
    }
    am_aligned_free(m->window);
    am_aligned_free(m->filters);
    am_free(m->lo);
    am_free(m);
    *p = NULL;
}

int am_melspec_new(const am_melspec_config *c, am_melspec **out) {
    *out = NULL;
    int rc = am_melspec_config_check(c);
    if (rc) return rc;
    const int64_t N = c->n_fft, nf = N / 2 + 1, M = c->n_mels;
    am_melspec *m = am_calloc(1, sizeof *m);
    double *in = am_aligned_alloc((size_t)N * sizeof(double));
    double *ff = am_malloc((size_t)(M + 2) * sizeof(double));
    fftw_complex *spec = am_aligned_alloc((size_t)nf * sizeof(fftw_complex));
    if (!m || !in || !spec || !ff || !(m->window = am_aligned_alloc((size_t)N * sizeof(double))) ||
        !(m->filters = am_aligned_alloc((size_t)(nf * M) * sizeof(double))) ||
        !(m->lo = am_malloc((size_t)(2 * M) * sizeof(int32_t)))) {
        am_aligned_free(in);
        am_aligned_free(spec);
        am_free(ff);
        am_melspec_destroy(&m);
        return am_err_set(AM_ENOMEM, "log-mel front end: out of memory");
    }
    m->cfg = *c;
    m->hi = m->lo + M;
    /* np.hanning(N + 1)[:-1]: 0.5 - 0.5 cos(2 pi k / N). */
    for (int64_t k = 0; k < N; k++)
        m->window[k] = 0.5 - 0.5 * cos(2.0 * M_PI * (double)k / (double)N);
    make_filters(c, m->filters, ff);
    am_free(ff);
    for (int64_t j = 0; j < M; j++) {
        int64_t lo = nf, hi = 0;
        for (int64_t k = 0; k < nf; k++)
            if (m->filters[k * M + j] != 0.0) {
                lo = k < lo ? k : lo;
                hi = k + 1;
            }
        m->lo[j] = (int32_t)(lo < hi ? lo : 0);
        m->hi[j] = (int32_t)hi;
    }
    pthread_mutex_lock(&fftw_planner_lock);
    m->plan = fftw_plan_dft_r2c_1d((int)N, in, spec, FFTW_ESTIMATE);
    pthread_mutex_unlock(&fftw_planner_lock);
    am_aligned_free(in);
    am_aligned_free(spec);
    if (!m->plan) {
        am_melspec_destroy(&m);
        return am_err_set(AM_ENOMEM, "log-mel front end: FFTW could not plan a %lld-point FFT",
                          (long long)N);
    }
    *out = m;
    return 0;
}

const am_melspec_config *am_melspec_get_config(const am_melspec *m) { return &m->cfg; }
const double *am_melspec_filters(const am_melspec *m) { return m->filters; }

typedef struct {
    const am_melspec *m;
    const float *x; /* (L + n_fft) padded clip */
    float *mel;     /* (T, M) */
    int64_t frames;
    double *bufs; /* per thread: n_fft reals, (n_fft/2+1) complex, (n_fft/2+1) power */
    size_t off_spec, off_pw, buf_stride; /* doubles; multiples of 8 (64 bytes, FFTW's alignment) */
} run_ctx;

static void run_task(void *arg, int ith, int nth) {
    run_ctx *a = arg;
    const am_melspec *m = a->m;
    const int64_t N = m->cfg.n_fft, nf = N / 2 + 1, M = m->cfg.n_mels, hop = m->cfg.hop;
    double *in = a->bufs + (size_t)ith * a->buf_stride;      /* (N) */
    fftw_complex *spec = (fftw_complex *)(in + a->off_spec); /* (nf) */
    double *pw = in + a->off_pw;                             /* (nf) */
    int64_t t0, t1;
    am_split_range(a->frames, 1, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const float *fr = a->x + t * hop;
        for (int64_t k = 0; k < N; k++)
            in[k] = (double)fr[k] * m->window[k];
        fftw_execute_dft_r2c(m->plan, in, spec);
        for (int64_t k = 0; k < nf; k++) {
            /* HF keeps the spectrum as complex64 before |X|^2 in float64. */
            const double re = (float)spec[k][0], im = (float)spec[k][1];
            pw[k] = re * re + im * im;
        }
        float *o = a->mel + t * M;
        for (int64_t j = 0; j < M; j++) {
            double s = 0;
            for (int64_t k = m->lo[j]; k < m->hi[j]; k++)
                s += m->filters[k * M + j] * pw[k];
            s = s > AM_MELSPEC_POWER_FLOOR ? s : AM_MELSPEC_POWER_FLOOR;
            o[j] = (float)(10.0 * log10(s));
        }
    }
}

int am_melspec_run(const am_melspec *m, const float *samples, int64_t n, am_threadpool *tp,
                   float *mel) {
    const am_melspec_config *c = &m->cfg;
    if (n < 1) return am_err_set(AM_EINVAL, "log-mel front end: no samples");
    const int64_t L = c->max_samples, N = c->n_fft, half = N / 2, nf = N / 2 + 1;
    float *x = am_malloc((size_t)(L + N) * sizeof(float)); /* (L + N) centered clip */
    const int nth = tp ? am_threadpool_size(tp) : 1;
    const size_t off_spec = (size_t)(N + 7) / 8 * 8,
                 off_pw = off_spec + (size_t)(2 * nf + 7) / 8 * 8;
    const size_t stride = off_pw + (size_t)(nf + 7) / 8 * 8;
    double *bufs = am_aligned_alloc((size_t)nth * stride * sizeof(double));
    if (!x || !bufs) {
        am_free(x);
        am_aligned_free(bufs);
        return am_err_set(AM_ENOMEM, "log-mel front end: out of memory");
    }
    /* 1. pad or truncate into x[half .. half + L) */
    float *clip = x + half;
    if (n >= L) {
        memcpy(clip, samples, (size_t)L * sizeof(float));
    } else {
        int64_t filled = 0;
        if (c->padding != AM_AUDIO_PAD_ZERO) {
            const int64_t reps = L / n + (c->padding == AM_AUDIO_PAD_REPEAT ? 1 : 0);
            for (int64_t r = 0; r < reps && filled < L; r++) {
                const int64_t k = n < L - filled ? n : L - filled;
                memcpy(clip + filled, samples, (size_t)k * sizeof(float));
                filled += k;
            }
        } else {
            memcpy(clip, samples, (size_t)n * sizeof(float));
            filled = n;
        }
        memset(clip + filled, 0, (size_t)(L - filled) * sizeof(float));
    }
    /* 2. reflect padding (numpy "reflect": the edge sample is not repeated) */
    for (int64_t i = 1; i <= half; i++) {
        x[half - i] = clip[i];
        x[half + L - 1 + i] = clip[L - 1 - i];
    }
    run_ctx a = {m, x, mel, am_melspec_frames(c), bufs, off_spec, off_pw, stride};
    if (tp && nth > 1)
        am_threadpool_run(tp, run_task, &a);
    else
        run_task(&a, 0, 1);
    am_free(x);
    am_aligned_free(bufs);
    return 0;
}
