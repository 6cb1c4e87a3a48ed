/* encoders/imu_input.c - parsing IMU CSV / .npy / raw f32, torchaudio-style sinc resampling to
 * 200 Hz, and 5 s windows. */
#include "encoders/imu_input.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/image.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest CSV field we parse (a double needs < 32 characters). */
#define AM_IMU_CSV_MAX_FIELD 64
/* Longest .npy header we read (numpy writes ~128 bytes). */
#define AM_IMU_NPY_MAX_HEADER 65536

am_imu_opts am_imu_default_opts(void) {
    return (am_imu_opts){AM_IMU_RATE_HZ, 1.0, AM_IMU_MAX_BYTES_DEFAULT, AM_IMU_MAX_WINDOWS_DEFAULT};
}

static am_imu_opts fill_opts(const am_imu_opts *o) {
    am_imu_opts r = o ? *o : am_imu_default_opts();
    if (r.rate_hz <= 0) r.rate_hz = AM_IMU_RATE_HZ;
    if (r.time_scale <= 0) r.time_scale = 1.0;
    if (!r.max_bytes) r.max_bytes = AM_IMU_MAX_BYTES_DEFAULT;
    if (r.max_windows <= 0) r.max_windows = AM_IMU_MAX_WINDOWS_DEFAULT;
    return r;
}

void am_imu_signal_fini(am_imu_signal *s) {
    if (!s) return;
    am_aligned_free(s->x);
    memset(s, 0, sizeof *s);
}

void am_imu_windows_fini(am_imu_windows *w) {
    if (!w) return;
    am_aligned_free(w->x);
    memset(w, 0, sizeof *w);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

am_imu_format am_imu_sniff(const void *data, size_t len, const char *name) {
    if (len >= 6 && !memcmp(data, "\x93NUMPY", 6)) return AM_IMU_NPY;
    if (name && (ends_with(name, ".f32") || ends_with(name, ".bin") || ends_with(name, ".raw")))
        return AM_IMU_F32;
    return AM_IMU_CSV;
}

/* Checks the samples and timestamps, and sets the rate. t (n) may be NULL. */
static int finish_signal(const char *name, const am_imu_opts *o, const double *t,
                         am_imu_signal *s) {
    if (s->n < AM_IMU_MIN_SAMPLES)
        return am_err_set(AM_EFORMAT, "%s: %lld IMU samples, at least %d are needed", name,
                          (long long)s->n, AM_IMU_MIN_SAMPLES);
    for (int64_t i = 0; i < s->n * AM_IMU_CHANNELS; i++)
        if (!isfinite(s->x[i]))
            return am_err_set(AM_EFORMAT, "%s: sample %lld, channel %d is %s", name,
                              (long long)(i / AM_IMU_CHANNELS), (int)(i % AM_IMU_CHANNELS),
                              isnan(s->x[i]) ? "NaN" : "infinite");
    if (t) {
        for (int64_t i = 0; i < s->n; i++) {
            if (!isfinite(t[i]))
                return am_err_set(AM_EFORMAT, "%s: timestamp %lld is not a finite number", name,
                                  (long long)i);
            if (i > 0 && !(t[i] > t[i - 1]))
                return am_err_set(AM_EFORMAT,
                                  "%s: timestamp %lld (%.9g) is not after the previous one (%.9g)",
                                  name, (long long)i, t[i], t[i - 1]);
        }
        s->rate_hz = (double)(s->n - 1) / ((t[s->n - 1] - t[0]) * o->time_scale);
    } else {
        s->rate_hz = o->rate_hz;
    }
    if (!(s->rate_hz >= AM_IMU_MIN_RATE_HZ && s->rate_hz <= AM_IMU_MAX_RATE_HZ))
        return am_err_set(AM_ERANGE, "%s: IMU rate %.6g Hz not in [%d, %d]%s", name, s->rate_hz,
                          AM_IMU_MIN_RATE_HZ, AM_IMU_MAX_RATE_HZ,
                          t ? " (from the timestamps: check their unit)" : "");
    return 0;
}

/* ---- CSV ---- */

static int parse_field(const char *p, size_t n, double *v) {
    while (n && isspace((unsigned char)*p))
        p++, n--;
    while (n && isspace((unsigned char)p[n - 1]))
        n--;
    if (!n || n >= AM_IMU_CSV_MAX_FIELD) return -1;
    char buf[AM_IMU_CSV_MAX_FIELD];
    memcpy(buf, p, n);
    buf[n] = 0;
    char *end;
    *v = strtod(buf, &end);
    return *end == 0 ? 0 : -1;
}

static int parse_csv(const char *d, size_t len, const char *name, const am_imu_opts *o,
                     am_imu_signal *out) {
    int64_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += d[i] == '\n';
    float *x = am_aligned_alloc((size_t)lines * AM_IMU_CHANNELS * sizeof(float)); /* (n, 6) */
    double *t = am_malloc((size_t)lines * sizeof(double));                        /* (n) */
    if (!x || !t) {
        am_aligned_free(x);
        am_free(t);
        return am_err_set(AM_ENOMEM, "%s: cannot allocate %lld IMU rows", name, (long long)lines);
    }
    int rc = 0, ncol = 0, seen_any = 0;
    int64_t n = 0, line_no = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && d[end] != '\n')
            end++;
        line_no++;
        const char *ln = d + pos;
        size_t ll = end - pos;
        pos = end + 1;
        while (ll && (ln[ll - 1] == '\r' || isspace((unsigned char)ln[ll - 1])))
            ll--;
        size_t lead = 0;
        while (lead < ll && isspace((unsigned char)ln[lead]))
            lead++;
        if (lead == ll || ln[lead] == '#') continue;
        double v[8];
        int nf = 0;
        size_t f0 = 0;
        int bad_col = -1;
        for (size_t i = 0; i <= ll; i++) {
            if (i < ll && ln[i] != ',') continue;
            if (nf < 8 && parse_field(ln + f0, i - f0, &v[nf]) && bad_col < 0) bad_col = nf;
            nf++;
            f0 = i + 1;
        }
        if (bad_col >= 0) {
            if (!seen_any && bad_col == 0) { /* a header line */
                seen_any = 1;
                continue;
            }
            rc = am_err_set(AM_EFORMAT, "%s: line %lld, column %d is not a number", name,
                            (long long)line_no, bad_col + 1);
            goto fail;
        }
        seen_any = 1;
        if (!ncol) {
            if (nf != 6 && nf != 7) {
                rc = am_err_set(AM_EFORMAT,
                                "%s: line %lld has %d columns (want 6: accel xyz, gyro xyz; or 7 "
                                "with a leading timestamp)",
                                name, (long long)line_no, nf);
                goto fail;
            }
            ncol = nf;
        } else if (nf != ncol) {
            rc = am_err_set(AM_EFORMAT, "%s: line %lld has %d columns, the first data line %d",
                            name, (long long)line_no, nf, ncol);
            goto fail;
        }
        const int off = ncol - 6;
        for (int c = 0; c < 6; c++) {
            if (!isfinite(v[off + c])) {
                rc = am_err_set(AM_EFORMAT, "%s: line %lld, column %d is %s", name,
                                (long long)line_no, off + c + 1,
                                isnan(v[off + c]) ? "NaN" : "infinite");
                goto fail;
            }
            x[n * AM_IMU_CHANNELS + c] = (float)v[off + c];
        }
        t[n] = off ? v[0] : 0.0;
        n++;
    }
    *out = (am_imu_signal){x, n, 0};
    rc = finish_signal(name, o, ncol == 7 ? t : NULL, out);
    am_free(t);
    if (rc) am_imu_signal_fini(out);
    return rc;
fail:
    am_aligned_free(x);
    am_free(t);
    return rc;
}

/* ---- .npy ---- */

/* Finds 'key': in the header dict and returns the text after the colon. */
static const char *npy_key(const char *h, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(h, pat);
    if (!p) {
        snprintf(pat, sizeof pat, "\"%s\"", key);
        p = strstr(h, pat);
    }
    if (!p) return NULL;
    p = strchr(p + strlen(pat), ':');
    if (!p) return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static int parse_npy(const unsigned char *d, size_t len, const char *name, const am_imu_opts *o,
                     am_imu_signal *out) {
    if (len < 10 || memcmp(d, "\x93NUMPY", 6))
        return am_err_set(AM_EFORMAT, "%s: not a .npy file (no \\x93NUMPY magic)", name);
    const int major = d[6];
    size_t hl, off;
    if (major == 1) {
        hl = (size_t)d[8] | (size_t)d[9] << 8;
        off = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return am_err_set(AM_EFORMAT, "%s: truncated .npy header", name);
        hl = (size_t)d[8] | (size_t)d[9] << 8 | (size_t)d[10] << 16 | (size_t)d[11] << 24;
        off = 12;
    } else {
        return am_err_set(AM_EUNSUPPORTED, "%s: .npy format version %d", name, major);
    }
    if (hl > AM_IMU_NPY_MAX_HEADER || hl > len - off)
        return am_err_set(AM_EFORMAT, "%s: truncated or oversized .npy header (%zu bytes)", name,
                          hl);
    char *h = am_malloc(hl + 1);
    if (!h) return am_err_set(AM_ENOMEM, "%s: out of memory", name);
    memcpy(h, d + off, hl);
    h[hl] = 0;
    int rc = 0;
    const char *descr = npy_key(h, "descr"), *fo = npy_key(h, "fortran_order"),
               *shape = npy_key(h, "shape");
    int item = 0, fortran = 0;
    long long dims[3] = {0};
    int nd = 0;
    if (!descr || !fo || !shape) {
        rc = am_err_set(AM_EFORMAT, "%s: .npy header lacks descr, fortran_order or shape", name);
        goto done;
    }
    if (!strncmp(descr + 1, "<f4", 3))
        item = 4;
    else if (!strncmp(descr + 1, "<f8", 3))
        item = 8;
    else {
        rc = am_err_set(AM_EUNSUPPORTED, "%s: .npy dtype %.8s (want '<f4' float32 or '<f8')", name,
                        descr);
        goto done;
    }
    fortran = !strncmp(fo, "True", 4);
    if (*shape != '(') {
        rc = am_err_set(AM_EFORMAT, "%s: .npy shape is not a tuple", name);
        goto done;
    }
    for (const char *p = shape + 1; *p && *p != ')';) {
        char *e;
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')') break;
        long long v = strtoll(p, &e, 10);
        if (e == p || v < 0 || nd == 3) {
            rc = am_err_set(AM_EFORMAT, "%s: bad .npy shape %.40s", name, shape);
            goto done;
        }
        dims[nd++] = v;
        p = e;
    }
    if (nd != 2) {
        rc = am_err_set(AM_EUNSUPPORTED,
                        "%s: .npy array has %d dimensions (want 2: (T, 6), "
                        "(T, 7) or (6, T))",
                        name, nd);
        goto done;
    }
    const long long a = dims[0], b = dims[1];
    const size_t data_off = off + hl, avail = len - data_off;
    if (a > (long long)(avail / item + 1) || b > (long long)(avail / item + 1) ||
        (size_t)a * (size_t)b * (size_t)item != avail) {
        rc = am_err_set(AM_EFORMAT,
                        "%s: .npy data is %zu bytes but shape (%lld, %lld) of %d-byte floats "
                        "needs %lld (truncated?)",
                        name, avail, a, b, item, a * b * item);
        goto done;
    }
    int layout; /* 0: (T, 6), 1: (T, 7), 2: (6, T) */
    if (b == 6)
        layout = 0;
    else if (b == 7)
        layout = 1;
    else if (a == 6)
        layout = 2;
    else {
        rc = am_err_set(AM_EFORMAT, "%s: .npy shape (%lld, %lld): want (T, 6), (T, 7) or (6, T)",
                        name, a, b);
        goto done;
    }
    const int64_t n = layout == 2 ? b : a;
    float *x = am_aligned_alloc((size_t)(n > 0 ? n : 1) * AM_IMU_CHANNELS * sizeof(float));
    double *t = layout == 1 ? am_malloc((size_t)(n > 0 ? n : 1) * sizeof(double)) : NULL;
    if (!x || (layout == 1 && !t)) {
        am_aligned_free(x);
        am_free(t);
        rc = am_err_set(AM_ENOMEM, "%s: cannot allocate %lld IMU samples", name, (long long)n);
        goto done;
    }
    const unsigned char *data = d + data_off;
    for (int64_t i = 0; i < a; i++)
        for (int64_t j = 0; j < b; j++) {
            const size_t e = fortran ? (size_t)(j * a + i) : (size_t)(i * b + j);
            double v;
            if (item == 4) {
                float f;
                memcpy(&f, data + e * 4, 4);
                v = f;
            } else {
                memcpy(&v, data + e * 8, 8);
            }
            if (layout == 0)
                x[i * 6 + j] = (float)v;
            else if (layout == 1 && j == 0)
                t[i] = v;
            else if (layout == 1)
                x[i * 6 + j - 1] = (float)v;
            else
                x[j * 6 + i] = (float)v;
        }
    *out = (am_imu_signal){x, n, 0};
    rc = finish_signal(name, o, t, out);
    am_free(t);
    if (rc) am_imu_signal_fini(out);
done:
    am_free(h);
    return rc;
}

int am_imu_from_f32(const float *x, int64_t n, double rate_hz, const char *name,
                    am_imu_signal *out) {
    memset(out, 0, sizeof *out);
    if (n < 0) n = 0;
    float *c = am_aligned_alloc((size_t)(n > 0 ? n : 1) * AM_IMU_CHANNELS * sizeof(float));
    if (!c) return am_err_set(AM_ENOMEM, "%s: out of memory", name);
    if (n) memcpy(c, x, (size_t)n * AM_IMU_CHANNELS * sizeof(float));
    *out = (am_imu_signal){c, n, 0};
    am_imu_opts o = am_imu_default_opts();
    o.rate_hz = rate_hz > 0 ? rate_hz : AM_IMU_RATE_HZ;
    int rc = finish_signal(name, &o, NULL, out);
    if (rc) am_imu_signal_fini(out);
    return rc;
}

int am_imu_parse(const void *data, size_t len, const char *name, am_imu_format fmt,
                 const am_imu_opts *o_in, am_imu_signal *out) {
    memset(out, 0, sizeof *out);
    const am_imu_opts o = fill_opts(o_in);
    if (len > o.max_bytes)
        return am_err_set(AM_ERANGE, "%s: %zu bytes is over the limit of %zu bytes", name, len,
                          o.max_bytes);
    if (len == 0) return am_err_set(AM_EFORMAT, "%s: empty IMU file", name);
    if (fmt == AM_IMU_AUTO) fmt = am_imu_sniff(data, len, name);
    if (fmt == AM_IMU_NPY) return parse_npy(data, len, name, &o, out);
    if (fmt == AM_IMU_CSV) return parse_csv(data, len, name, &o, out);
    if (len % (AM_IMU_CHANNELS * sizeof(float)))
        return am_err_set(AM_EFORMAT,
                          "%s: %zu bytes is not a whole number of 6-channel float32 samples "
                          "(24 bytes each)",
                          name, len);
    const int64_t n = (int64_t)(len / (AM_IMU_CHANNELS * sizeof(float)));
    float *x = am_aligned_alloc((size_t)n * AM_IMU_CHANNELS * sizeof(float));
    if (!x) return am_err_set(AM_ENOMEM, "%s: out of memory", name);
    memcpy(x, data, len); /* little-endian host */
    *out = (am_imu_signal){x, n, 0};
    int rc = finish_signal(name, &o, NULL, out);
    if (rc) am_imu_signal_fini(out);
    return rc;
}

/* ---- resampling (torchaudio.functional.resample, sinc_interp_hann) ---- */

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

int64_t am_imu_resampled_len(int64_t n, int32_t orig, int32_t new_rate) {
    const int64_t g = gcd64(orig, new_rate), o = orig / g, w = new_rate / g;
    return (w * n + o - 1) / o;
}

int am_imu_sinc_resample(const float *x, int64_t n, int64_t stride, int32_t orig, int32_t new_rate,
                         float *y, int64_t ystride, int64_t *n_out) {
    const int64_t g = gcd64(orig, new_rate), o = orig / g, nw = new_rate / g;
    const double lpw = AM_IMU_SINC_ZERO_CROSSINGS;
    const double base = (double)(o < nw ? o : nw) * AM_IMU_SINC_ROLLOFF;
    const int64_t width = (int64_t)ceil(lpw * (double)o / base), K = 2 * width + o;
    const int64_t n_y = (nw * n + o - 1) / o;
    float *kern = am_malloc((size_t)(nw * K) * sizeof(float)); /* (nw, K) */
    if (!kern)
        return am_err_set(AM_ENOMEM, "resample: cannot allocate a %lld-tap kernel",
                          (long long)(nw * K));
    for (int64_t j = 0; j < nw; j++)
        for (int64_t k = 0; k < K; k++) {
            double t = (-(double)j / (double)nw + (double)(k - width) / (double)o) * base;
            t = t < -lpw ? -lpw : t > lpw ? lpw : t;
            const double win = cos(t * M_PI / lpw / 2) * cos(t * M_PI / lpw / 2);
            t *= M_PI;
            kern[j * K + k] = (float)((t == 0.0 ? 1.0 : sin(t) / t) * win * (base / (double)o));
        }
    /* Output q = i * nw + j reads the zero-padded input [i*o - width, i*o - width + K). */
    for (int64_t q = 0; q < n_y; q++) {
        const int64_t i = q / nw, j = q % nw, p0 = i * o - width;
        const float *kj = kern + j * K;
        double acc = 0;
        const int64_t k0 = p0 < 0 ? -p0 : 0, k1 = p0 + K > n ? n - p0 : K;
        for (int64_t k = k0; k < k1; k++)
            acc += (double)kj[k] * x[(p0 + k) * stride];
        y[q * ystride] = (float)acc;
    }
    am_free(kern);
    *n_out = n_y;
    return 0;
}

int am_imu_resample(const am_imu_signal *in, const char *name, am_imu_signal *out) {
    memset(out, 0, sizeof *out);
    const int32_t r = (int32_t)lround(in->rate_hz);
    if (r < AM_IMU_MIN_RATE_HZ || r > AM_IMU_MAX_RATE_HZ)
        return am_err_set(AM_ERANGE, "%s: IMU rate %.6g Hz not in [%d, %d]", name, in->rate_hz,
                          AM_IMU_MIN_RATE_HZ, AM_IMU_MAX_RATE_HZ);
    const int64_t n = r == AM_IMU_RATE_HZ ? in->n : am_imu_resampled_len(in->n, r, AM_IMU_RATE_HZ);
    float *y = am_aligned_alloc((size_t)(n > 0 ? n : 1) * AM_IMU_CHANNELS * sizeof(float));
    if (!y)
        return am_err_set(AM_ENOMEM, "%s: cannot allocate %lld IMU samples", name, (long long)n);
    if (r == AM_IMU_RATE_HZ) {
        if (n) memcpy(y, in->x, (size_t)n * AM_IMU_CHANNELS * sizeof(float));
    } else {
        for (int c = 0; c < AM_IMU_CHANNELS; c++) {
            int64_t got;
            int rc = am_imu_sinc_resample(in->x + c, in->n, AM_IMU_CHANNELS, r, AM_IMU_RATE_HZ,
                                          y + c, AM_IMU_CHANNELS, &got);
            if (rc) {
                am_aligned_free(y);
                return am_err_prefix(rc, "%s", name);
            }
        }
    }
    *out = (am_imu_signal){y, n, AM_IMU_RATE_HZ};
    return 0;
}

int am_imu_make_windows(const am_imu_signal *s, const char *name, int32_t max_windows,
                        am_imu_windows *out) {
    memset(out, 0, sizeof *out);
    if (max_windows <= 0) max_windows = AM_IMU_MAX_WINDOWS_DEFAULT;
    const int64_t T = AM_IMU_WINDOW_SAMPLES, W = (s->n + T - 1) / T;
    if (W < 1) return am_err_set(AM_EFORMAT, "%s: no IMU samples", name);
    if (W > max_windows)
        return am_err_set(
            AM_ERANGE, "%s: %lld samples at %d Hz make %lld windows of 5 s, over the limit of %d",
            name, (long long)s->n, AM_IMU_RATE_HZ, (long long)W, max_windows);
    float *x = am_aligned_alloc((size_t)(W * AM_IMU_CHANNELS * T) * sizeof(float));
    if (!x) return am_err_set(AM_ENOMEM, "%s: out of memory", name);
    for (int64_t w = 0; w < W; w++)
        for (int64_t c = 0; c < AM_IMU_CHANNELS; c++) {
            float *dst = x + (w * AM_IMU_CHANNELS + c) * T; /* (T) */
            for (int64_t t = 0; t < T; t++) {
                const int64_t i = w * T + t;
                dst[t] = i < s->n ? s->x[i * AM_IMU_CHANNELS + c] : 0.0f; /* padIMU */
            }
        }
    *out = (am_imu_windows){x, (int32_t)W, s->n, s->rate_hz};
    return 0;
}

int am_imu_prepare(const void *data, size_t len, const char *name, am_imu_format fmt,
                   const am_imu_opts *o_in, am_imu_windows *out) {
    memset(out, 0, sizeof *out);
    const am_imu_opts o = fill_opts(o_in);
    am_imu_signal raw, rs;
    int rc = am_imu_parse(data, len, name, fmt, &o, &raw);
    if (rc) return rc;
    rc = am_imu_resample(&raw, name, &rs);
    if (!rc) {
        rc = am_imu_make_windows(&rs, name, o.max_windows, out);
        if (!rc) out->src_rate_hz = raw.rate_hz;
        am_imu_signal_fini(&rs);
    }
    am_imu_signal_fini(&raw);
    return rc;
}

int am_imu_load(const char *path, am_imu_format fmt, const am_imu_opts *o_in, am_imu_windows *out) {
    memset(out, 0, sizeof *out);
    const am_imu_opts o = fill_opts(o_in);
    void *data;
    size_t len;
    int rc = am_read_file_limited(path, o.max_bytes, &data, &len);
    if (rc) return rc;
    rc = am_imu_prepare(data, len, path, fmt, &o, out);
    am_free(data);
    return rc;
}
