/* encoders/audio_file.c - decoding audio from memory with libsndfile, mono downmix, libsoxr
 * resampling. */
#include "encoders/audio_file.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/image.h"

#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdio.h>
#include <string.h>

/* Frames decoded per sf_readf_float call. */
#define AM_AUDIO_READ_FRAMES 8192

am_audio_limits am_audio_default_limits(void) {
    return (am_audio_limits){AM_AUDIO_MAX_BYTES_DEFAULT, AM_AUDIO_MAX_SECONDS_DEFAULT};
}

void am_audio_fini(am_audio *a) {
    if (!a) return;
    am_aligned_free(a->samples);
    memset(a, 0, sizeof *a);
}

/* ---- libsndfile virtual I/O over a memory buffer ---- */

typedef struct {
    const unsigned char *data;
    sf_count_t len, pos;
} mem_io;

static sf_count_t io_len(void *u) { return ((mem_io *)u)->len; }

static sf_count_t io_seek(sf_count_t off, int whence, void *u) {
    mem_io *m = u;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->len;
    sf_count_t p = base + off;
    if (p < 0 || p > m->len) return -1;
    m->pos = p;
    return p;
}

static sf_count_t io_read(void *ptr, sf_count_t count, void *u) {
    mem_io *m = u;
    sf_count_t n = count < m->len - m->pos ? count : m->len - m->pos;
    if (n <= 0) return 0;
    memcpy(ptr, m->data + m->pos, (size_t)n);
    m->pos += n;
    return n;
}

static sf_count_t io_write(const void *ptr, sf_count_t count, void *u) {
    (void)ptr, (void)count, (void)u;
    return 0;
}

static sf_count_t io_tell(void *u) { return ((mem_io *)u)->pos; }

static const char *accepted(int format) {
    switch (format & SF_FORMAT_TYPEMASK) {
    case SF_FORMAT_WAV:
    case SF_FORMAT_WAVEX:
    case SF_FORMAT_RF64: return "wav";
    case SF_FORMAT_FLAC: return "flac";
    case SF_FORMAT_OGG: return "ogg";
    case SF_FORMAT_MPEG: return "mp3"; /* libsndfile >= 1.1 */
    default: return NULL;
    }
}

static const char *major_name(int format) {
    static _Thread_local char buf[64];
    SF_FORMAT_INFO fi = {.format = format & SF_FORMAT_TYPEMASK};
    if (sf_command(NULL, SFC_GET_FORMAT_INFO, &fi, sizeof fi) == 0 && fi.name) {
        snprintf(buf, sizeof buf, "%s", fi.name);
        return buf;
    }
    snprintf(buf, sizeof buf, "format 0x%x", format & SF_FORMAT_TYPEMASK);
    return buf;
}

/* libsndfile keeps a log of what it noticed while parsing the header. For a
 * WAV whose data chunk claims more bytes than the file holds it logs
 * "data : <declared> (should be <present>)" and then silently reads what is
 * there. Streaming writers put 0xFFFFFFFF (or 0) there, which is not a truncation. */
static int wav_truncated(SNDFILE *sf) {
    char log[8192];
    log[0] = 0;
    sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log);
    for (const char *p = log; (p = strstr(p, "data : ")) != NULL; p += 7) {
        long long declared = 0, present = 0;
        if (sscanf(p, "data : %lld (should be %lld)", &declared, &present) == 2 &&
            declared > present && declared < 0xFFFFFFFFll)
            return 1;
    }
    return 0;
}

/* Ogg's page checksum: CRC-32, polynomial 0x04c11db7, not reflected, initial 0. */
static uint32_t ogg_crc(const unsigned char *d, size_t n, size_t crc_at) {
    uint32_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char b = i >= crc_at && i < crc_at + 4 ? 0 : d[i];
        crc ^= (uint32_t)b << 24;
        for (int k = 0; k < 8; k++)
            crc = crc & 0x80000000u ? (crc << 1) ^ 0x04c11db7u : crc << 1;
    }
    return crc;
}

/* Ogg is a stream of pages and libsndfile decodes what it finds, so a cut file
 * looks like a shorter one; and libsndfile 1.2.0 leaks libvorbis state when a
 * corrupt Vorbis header makes it fail. So every page is checked before
 * libsndfile sees the bytes: complete, its checksum right, and the last one
 * carrying the end-of-stream flag. Returns 0, or an AM_EFORMAT naming the page. */
static int ogg_check(const unsigned char *d, size_t len, const char *name) {
    size_t pos = 0, page = 0;
    int last_eos = 0;
    while (pos < len) {
        if (len - pos < 27 || memcmp(d + pos, "OggS", 4) != 0)
            return am_err_set(AM_EFORMAT,
                              "%s: truncated or corrupt ogg file (page %zu at byte %zu)", name,
                              page, pos);
        const size_t nseg = d[pos + 26];
        size_t body = 0;
        if (len - pos < 27 + nseg)
            return am_err_set(AM_EFORMAT, "%s: truncated ogg file (page %zu)", name, page);
        for (size_t i = 0; i < nseg; i++)
            body += d[pos + 27 + i];
        if (len - pos < 27 + nseg + body)
            return am_err_set(AM_EFORMAT, "%s: truncated ogg file (page %zu is incomplete)", name,
                              page);
        const size_t n = 27 + nseg + body;
        const uint32_t want = (uint32_t)d[pos + 22] | (uint32_t)d[pos + 23] << 8 |
                              (uint32_t)d[pos + 24] << 16 | (uint32_t)d[pos + 25] << 24;
        if (ogg_crc(d + pos, n, 22) != want)
            return am_err_set(AM_EFORMAT, "%s: corrupt ogg file (page %zu fails its checksum)",
                              name, page);
        last_eos = (d[pos + 5] & 0x04) != 0;
        pos += n;
        page++;
    }
    if (!last_eos)
        return am_err_set(AM_EFORMAT,
                          "%s: truncated ogg file (the last page is not the end of the stream)",
                          name);
    return 0;
}

/* An MP3 declares its length only in a Xing/Info (LAME) or VBRI header in its
 * first frame; without one libsndfile estimates the frame count from the file
 * size (often a frame or two too many), so a shortfall proves nothing. */
static int mp3_has_length_header(const unsigned char *d, size_t len) {
    size_t pos = 0;
    if (len >= 10 && !memcmp(d, "ID3", 3)) /* ID3v2: a 10-byte header + syncsafe size */
        pos = 10 + ((size_t)(d[6] & 0x7f) << 21 | (size_t)(d[7] & 0x7f) << 14 |
                    (size_t)(d[8] & 0x7f) << 7 | (size_t)(d[9] & 0x7f));
    const size_t end = pos + 2048 < len ? pos + 2048 : len;
    for (size_t i = pos; i + 4 <= end; i++)
        if (!memcmp(d + i, "Xing", 4) || !memcmp(d + i, "Info", 4) || !memcmp(d + i, "VBRI", 4))
            return 1;
    return 0;
}

static int finish(float *mono, int64_t n, int32_t src_rate, int32_t rate, const char *name,
                  am_audio *out) {
    if (rate > 0 && rate != src_rate) {
        float *rs = NULL;
        int64_t nr = 0;
        int rc = am_audio_resample(mono, n, src_rate, rate, &rs, &nr);
        am_aligned_free(mono);
        if (rc) return am_err_prefix(rc, "%s", name);
        out->samples = rs;
        out->n = nr;
        out->rate = rate;
    } else {
        out->samples = mono;
        out->n = n;
        out->rate = src_rate;
    }
    return 0;
}

int am_audio_decode(const void *data, size_t len, const char *name, const am_audio_limits *lim,
                    int32_t rate, am_audio *out) {
    memset(out, 0, sizeof *out);
    am_audio_limits L = lim ? *lim : am_audio_default_limits();
    if (len > L.max_bytes)
        return am_err_set(AM_ERANGE, "%s: %zu bytes is over the limit of %zu bytes", name, len,
                          L.max_bytes);
    if (len == 0) return am_err_set(AM_EFORMAT, "%s: empty file", name);
    if (len >= 4 && !memcmp(data, "OggS", 4)) {
        int rc = ogg_check(data, len, name);
        if (rc) return rc;
    }
    mem_io m = {data, (sf_count_t)len, 0};
    SF_VIRTUAL_IO io = {io_len, io_seek, io_read, io_write, io_tell};
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &info, &m);
    if (!sf)
        return am_err_set(AM_EFORMAT,
                          "%s: not a readable audio file (want WAV, FLAC, OGG/Vorbis or MP3): %s",
                          name, sf_strerror(NULL));
    int rc = 0;
    float *buf = NULL, *mono = NULL;
    const char *fmt = accepted(info.format);
    if (!fmt) {
        rc = am_err_set(AM_EUNSUPPORTED,
                        "%s: %s audio is not accepted (want WAV, FLAC, OGG/Vorbis or MP3)", name,
                        major_name(info.format));
        goto done;
    }
    if (info.channels < 1 || info.channels > AM_AUDIO_MAX_CHANNELS) {
        rc = am_err_set(AM_ERANGE, "%s: %d channels (at most %d)", name, info.channels,
                        AM_AUDIO_MAX_CHANNELS);
        goto done;
    }
    if (info.samplerate < AM_AUDIO_MIN_RATE_HZ || info.samplerate > AM_AUDIO_MAX_RATE_HZ) {
        rc = am_err_set(AM_ERANGE, "%s: sample rate %d Hz not in [%d, %d]", name, info.samplerate,
                        AM_AUDIO_MIN_RATE_HZ, AM_AUDIO_MAX_RATE_HZ);
        goto done;
    }
    const int64_t max_frames = (int64_t)(L.max_seconds * info.samplerate);
    const int known = info.frames > 0 && info.frames < SF_COUNT_MAX;
    const int exact = known && (strcmp(fmt, "mp3") || mp3_has_length_header(data, len));
    if (known && info.frames > max_frames) {
        rc = am_err_set(AM_ERANGE, "%s: %.1f s of audio is over the limit of %.1f s", name,
                        (double)info.frames / info.samplerate, L.max_seconds);
        goto done;
    }
    if (!strcmp(fmt, "wav") && wav_truncated(sf)) {
        rc = am_err_set(AM_EFORMAT,
                        "%s: truncated wav file (the header declares more data than the file "
                        "holds)",
                        name);
        goto done;
    }
    const int C = info.channels;
    int64_t cap = known ? info.frames : AM_AUDIO_READ_FRAMES, n = 0;
    buf = am_malloc((size_t)AM_AUDIO_READ_FRAMES * (size_t)C * sizeof(float)); /* (F, C) */
    mono = am_aligned_alloc((size_t)cap * sizeof(float));
    if (!buf || !mono) {
        rc = am_err_set(AM_ENOMEM, "%s: cannot allocate %lld frames", name, (long long)cap);
        goto done;
    }
    for (;;) {
        sf_count_t got = sf_readf_float(sf, buf, AM_AUDIO_READ_FRAMES);
        if (got <= 0) break;
        if (n + got > max_frames) {
            rc = am_err_set(AM_ERANGE, "%s: more than the limit of %.1f s of audio", name,
                            L.max_seconds);
            goto done;
        }
        if (n + got > cap) {
            int64_t nc = cap * 2 > n + got ? cap * 2 : n + got;
            float *nm = am_aligned_alloc((size_t)nc * sizeof(float));
            if (!nm) {
                rc = am_err_set(AM_ENOMEM, "%s: cannot allocate %lld frames", name, (long long)nc);
                goto done;
            }
            memcpy(nm, mono, (size_t)n * sizeof(float));
            am_aligned_free(mono);
            mono = nm, cap = nc;
        }
        for (sf_count_t i = 0; i < got; i++) {
            double s = 0;
            for (int c = 0; c < C; c++) {
                const float v = buf[i * C + c];
                if (!isfinite(v)) {
                    rc = am_err_set(AM_EFORMAT, "%s: sample %lld of channel %d is %s", name,
                                    (long long)(n + i), c, isnan(v) ? "NaN" : "infinite");
                    goto done;
                }
                s += v;
            }
            mono[n + i] = (float)(s / C);
        }
        n += got;
    }
    if (sf_error(sf) != SF_ERR_NO_ERROR) {
        rc = am_err_set(AM_EFORMAT, "%s: corrupt or truncated %s data after %lld frames: %s", name,
                        fmt, (long long)n, sf_strerror(sf));
        goto done;
    }
    if (exact && n < info.frames) {
        rc = am_err_set(AM_EFORMAT,
                        "%s: truncated %s file: the header declares %lld frames, %lld "
                        "could be decoded",
                        name, fmt, (long long)info.frames, (long long)n);
        goto done;
    }
    if (n == 0) {
        rc = am_err_set(AM_EFORMAT, "%s: no audio samples", name);
        goto done;
    }
    out->src_rate = info.samplerate;
    out->src_channels = C;
    out->src_frames = n;
    snprintf(out->format, sizeof out->format, "%s", fmt);
    rc = finish(mono, n, info.samplerate, rate, name, out);
    mono = NULL;
    if (rc) memset(out, 0, sizeof *out);
done:
    sf_close(sf);
    am_free(buf);
    am_aligned_free(mono);
    return rc;
}

int am_audio_load(const char *path, const am_audio_limits *lim, int32_t rate, am_audio *out) {
    memset(out, 0, sizeof *out);
    am_audio_limits L = lim ? *lim : am_audio_default_limits();
    void *data;
    size_t len;
    int rc = am_read_file_limited(path, L.max_bytes, &data, &len);
    if (rc) return rc;
    rc = am_audio_decode(data, len, path, &L, rate, out);
    am_free(data);
    return rc;
}

int am_audio_from_f32(const float *x, int64_t n, int32_t src_rate, const char *name,
                      const am_audio_limits *lim, int32_t rate, am_audio *out) {
    memset(out, 0, sizeof *out);
    am_audio_limits L = lim ? *lim : am_audio_default_limits();
    if (src_rate < AM_AUDIO_MIN_RATE_HZ || src_rate > AM_AUDIO_MAX_RATE_HZ)
        return am_err_set(AM_ERANGE, "%s: sample rate %d Hz not in [%d, %d]", name, src_rate,
                          AM_AUDIO_MIN_RATE_HZ, AM_AUDIO_MAX_RATE_HZ);
    if (n < 1) return am_err_set(AM_EFORMAT, "%s: no audio samples", name);
    if ((double)n > L.max_seconds * src_rate)
        return am_err_set(AM_ERANGE, "%s: %.1f s of audio is over the limit of %.1f s", name,
                          (double)n / src_rate, L.max_seconds);
    if ((size_t)n * sizeof(float) > L.max_bytes)
        return am_err_set(AM_ERANGE, "%s: %zu bytes is over the limit of %zu bytes", name,
                          (size_t)n * sizeof(float), L.max_bytes);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return am_err_set(AM_EFORMAT, "%s: sample %lld is %s", name, (long long)i,
                              isnan(x[i]) ? "NaN" : "infinite");
    float *mono = am_aligned_alloc((size_t)n * sizeof(float));
    if (!mono) return am_err_set(AM_ENOMEM, "%s: out of memory", name);
    memcpy(mono, x, (size_t)n * sizeof(float));
    out->src_rate = src_rate;
    out->src_channels = 1;
    out->src_frames = n;
    snprintf(out->format, sizeof out->format, "f32");
    int rc = finish(mono, n, src_rate, rate, name, out);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

int am_audio_resample(const float *in, int64_t n, int32_t in_rate, int32_t out_rate, float **out,
                      int64_t *n_out) {
    *out = NULL;
    *n_out = 0;
    if (n < 1 || in_rate < 1 || out_rate < 1)
        return am_err_set(AM_EINVAL, "resample: %lld samples from %d Hz to %d Hz", (long long)n,
                          in_rate, out_rate);
    const int64_t no = (int64_t)llround((double)n * out_rate / in_rate);
    float *o = am_aligned_alloc((size_t)(no > 0 ? no : 1) * sizeof(float));
    if (!o) return am_err_set(AM_ENOMEM, "resample: cannot allocate %lld samples", (long long)no);
    soxr_io_spec_t ios = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t qs = soxr_quality_spec(SOXR_HQ, 0);
    soxr_runtime_spec_t rs = soxr_runtime_spec(1);
    size_t idone = 0, odone = 0;
    soxr_error_t err = soxr_oneshot((double)in_rate, (double)out_rate, 1, in, (size_t)n, &idone, o,
                                    (size_t)no, &odone, &ios, &qs, &rs);
    if (err) {
        am_aligned_free(o);
        return am_err_set(AM_EINVAL, "resample %d Hz -> %d Hz: libsoxr: %s", in_rate, out_rate,
                          err);
    }
    /* soxr_oneshot flushes; a short count would only come from rounding at the end. */
    for (int64_t i = (int64_t)odone; i < no; i++)
        o[i] = 0.0f;
    *out = o;
    *n_out = no;
    return 0;
}
