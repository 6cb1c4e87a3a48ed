/* api/media.c - media content parts: data URLs (strict base64), files under the media root,
 * the IMU extension.
 *
 * Files are resolved with realpath and must stay under the media root's realpath, so
 * neither "../" nor a symlink leads out of it. Checks that need no decoder are done here,
 * where the error can name the field: the data URL's mime family, input_audio's declared
 * format against the bytes' magic, size limits. Whether an image or a clip really decodes
 * is the encoder worker's to say (its error comes back through the coordinator).
 */
#include "api/api_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NPY_HEADER_BYTES 128 /* magic .. '\n': a multiple of 64, as numpy writes it */

int am_api_base64_decode(const char *s, size_t n, size_t max_out, void **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (n % 4) return am_err_set(AM_EFORMAT, "base64 of %zu characters: not a multiple of 4", n);
    size_t pad = n && s[n - 1] == '=' ? (n > 1 && s[n - 2] == '=' ? 2 : 1) : 0;
    size_t len = n / 4 * 3 - pad;
    if (len > max_out)
        return am_err_set(AM_ERANGE, "base64 data of %zu bytes is over the limit of %zu bytes", len,
                          max_out);
    unsigned char *d = am_malloc(len + 1);
    if (!d) return am_err_set(AM_ENOMEM, "out of memory for %zu bytes of base64 data", len);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            const unsigned char c = (unsigned char)s[i + k];
            int x = c >= 'A' && c <= 'Z'   ? c - 'A'
                    : c >= 'a' && c <= 'z' ? c - 'a' + 26
                    : c >= '0' && c <= '9' ? c - '0' + 52
                    : c == '+'             ? 62
                    : c == '/'             ? 63
                                           : -1;
            if (c == '=' && i + k >= n - pad) x = 0; /* padding, only at the end */
            if (x < 0) {
                am_free(d);
                return am_err_set(AM_EFORMAT,
                                  "base64: character %s%c%s (byte 0x%02x) at offset %zu",
                                  c >= 0x20 && c < 0x7F ? "'" : "", c >= 0x20 && c < 0x7F ? c : '?',
                                  c >= 0x20 && c < 0x7F ? "'" : "", c, i + k);
            }
            v = v << 6 | (uint32_t)x;
        }
        unsigned char b[3] = {(unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
        const size_t take = i + 4 == n ? 3 - pad : 3;
        if (i + 4 == n && pad && (b[3 - pad] != 0)) {
            am_free(d);
            return am_err_set(AM_EFORMAT, "base64: the last group's unused bits are not zero "
                                          "(not canonical base64)");
        }
        memcpy(d + o, b, take);
        o += take;
    }
    d[o] = '\0';
    *out = d;
    *out_len = o;
    return 0;
}

/* Percent-decoding of a file:// URL's path (strict: %XX with two hex digits, no %00). */
static int percent_decode(const char *s, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        if (c == '%') {
            unsigned v;
            if (sscanf(s + i + 1, "%2x", &v) != 1 || !s[i + 1] || !s[i + 2] || v == 0) return -1;
            c = (char)v;
            i += 2;
        }
        if (o + 1 >= cap) return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* out = base + "." + leaf, cut to cap (a field path for messages). */
static void subfield(char *out, size_t cap, const char *base, const char *leaf) {
    if (snprintf(out, cap, "%s.%s", base, leaf) >= (int)cap) out[cap - 1] = '\0';
}

static int is_prefix(const char *p, const char *s) { return !strncmp(p, s, strlen(p)); }

/* Where a media URL's bytes come from. */
typedef struct media_src {
    char mime[96];   /* data URLs: the mime type, lower-case */
    char path[4096]; /* files: the real path under the media root */
} media_src;

static int read_url(am__api_parse *P, const char *url, const char *field, media_src *src,
                    void **data, size_t *len) {
    const size_t max = P->o.max_media_bytes;
    memset(src, 0, sizeof *src);
    if (is_prefix("data:", url)) {
        const char *b64 = strstr(url, ";base64,");
        const char *semi = strchr(url + 5, ';'), *comma = strchr(url + 5, ',');
        if (!b64 || (comma && comma < b64))
            return am_api_fail(P->err, 400, field,
                               "%s: a data URL must be base64 (data:<mime>;base64,...)", field);
        size_t ml = (size_t)((semi ? semi : b64) - (url + 5));
        if (ml >= sizeof src->mime) ml = sizeof src->mime - 1;
        for (size_t i = 0; i < ml; i++)
            src->mime[i] =
                (char)(url[5 + i] >= 'A' && url[5 + i] <= 'Z' ? url[5 + i] + 32 : url[5 + i]);
        const char *d = b64 + 8;
        int rc = am_api_base64_decode(d, strlen(d), max, data, len);
        if (rc == AM_ERANGE) return am_api_fail(P->err, 413, field, "%s: %s", field, am_err_msg());
        if (rc == AM_ENOMEM) return am_api_fail(P->err, 500, field, "%s: %s", field, am_err_msg());
        if (rc) return am_api_fail(P->err, 400, field, "%s: %s", field, am_err_msg());
        if (!*len) return am_api_fail(P->err, 400, field, "%s: the data URL holds no bytes", field);
        return 0;
    }
    const char *colon = strstr(url, "://");
    if (colon && !is_prefix("file://", url))
        return am_api_fail(P->err, 400, field,
                           "%s: '%.*s' URLs are not fetched: give a data: URL, a file:// URL or a "
                           "path under the media root",
                           field, (int)(colon - url), url);
    char want[4096];
    const char *path = url;
    if (is_prefix("file://", url)) {
        path = url + 7;
        if (path[0] != '/')
            return am_api_fail(P->err, 400, field,
                               "%s: a file URL must be file:///absolute/path (no host)", field);
    }
    if (percent_decode(path, want, sizeof want) || !want[0])
        return am_api_fail(P->err, 400, field, "%s: malformed path '%s'", field, path);
    if (!P->root_real)
        return am_api_fail(P->err, 400, field,
                           "%s: '%s' is a file path, and no media root was given (--media-root): "
                           "file paths are refused",
                           field, want);
    char full[8192];
    if (want[0] == '/')
        snprintf(full, sizeof full, "%s", want);
    else
        snprintf(full, sizeof full, "%s/%s", P->root_real, want);
    char *real = realpath(full, NULL);
    if (!real) {
        if (errno == ENOENT || errno == ENOTDIR)
            return am_api_fail(P->err, 400, field, "%s: media file '%s' not found", field, want);
        return am_api_fail(P->err, 400, field, "%s: media file '%s': %s", field, want,
                           strerror(errno));
    }
    const size_t rl = strlen(P->root_real);
    const int inside = !strncmp(real, P->root_real, rl) &&
                       (real[rl] == '/' || (rl == 1 && P->root_real[0] == '/'));
    snprintf(src->path, sizeof src->path, "%s", real);
    free(real); /* realpath's malloc */
    if (!inside)
        return am_api_fail(P->err, 400, field, "%s: '%s' is outside the media root '%s'", field,
                           want, P->root_real);
    int rc = am_read_file_limited(src->path, max, data, len);
    if (rc == AM_ERANGE)
        return am_api_fail(P->err, 413, field, "%s: media file '%s' is over the limit of %zu bytes",
                           field, want, max);
    if (rc) return am_api_fail(P->err, 400, field, "%s: %s", field, am_err_msg());
    if (!*len) return am_api_fail(P->err, 400, field, "%s: media file '%s' is empty", field, want);
    return 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcasecmp(s + n - k, suf);
}

/* Does the data look like the audio format it is declared as? */
static int audio_magic_ok(const char *fmt, const unsigned char *d, size_t n) {
    if (!strcmp(fmt, "wav")) return n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WAVE", 4);
    if (!strcmp(fmt, "flac")) return n >= 4 && !memcmp(d, "fLaC", 4);
    if (!strcmp(fmt, "ogg")) return n >= 4 && !memcmp(d, "OggS", 4);
    /* mp3: an ID3v2 tag or an MPEG audio frame sync */
    return n >= 3 && (!memcmp(d, "ID3", 3) || (d[0] == 0xFF && (d[1] & 0xE0) == 0xE0));
}

/* Raw little-endian float32 (T, 6) -> the same bytes behind a .npy header. */
static int f32_to_npy(am__api_parse *P, const char *field, void **data, size_t *len) {
    const size_t sample = 6 * sizeof(float);
    if (*len % sample)
        return am_api_fail(P->err, 400, field,
                           "%s: %zu bytes of raw float32 IMU data is not a whole number of "
                           "6-channel samples (24 bytes each)",
                           field, *len);
    if (*len > P->o.max_media_bytes - NPY_HEADER_BYTES)
        return am_api_fail(P->err, 413, field, "%s: IMU data over the limit of %zu bytes", field,
                           P->o.max_media_bytes);
    unsigned char *d = am_malloc(*len + NPY_HEADER_BYTES);
    if (!d) return am_api_fail(P->err, 500, field, "%s: out of memory", field);
    char dict[NPY_HEADER_BYTES];
    int n =
        snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, 6), }",
                 *len / sample);
    memset(d, ' ', NPY_HEADER_BYTES);
    memcpy(d, "\x93NUMPY\x01\x00", 8);
    d[8] = (unsigned char)((NPY_HEADER_BYTES - 10) & 0xFF);
    d[9] = (unsigned char)((NPY_HEADER_BYTES - 10) >> 8);
    memcpy(d + 10, dict, (size_t)n);
    d[NPY_HEADER_BYTES - 1] = '\n';
    memcpy(d + NPY_HEADER_BYTES, *data, *len);
    am_free(*data);
    *data = d;
    *len += NPY_HEADER_BYTES;
    return 0;
}

/* The IMU format: "format" when given, else the mime type or the extension. */
static int imu_format(am__api_parse *P, const cJSON *obj, const char *field, const media_src *src,
                      char *fmt) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, "format");
    char fp[AM_API_MAX_PARAM_BYTES];
    subfield(fp, sizeof fp, field, "format");
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsString(f) || (strcmp(f->valuestring, "csv") && strcmp(f->valuestring, "npy") &&
                                   strcmp(f->valuestring, "f32")))
            return am_api_fail(P->err, 400, fp, "%s must be \"csv\", \"npy\" or \"f32\"", fp);
        strcpy(fmt, f->valuestring);
        return 0;
    }
    if (src->mime[0]) {
        if (!strcmp(src->mime, "text/csv")) return strcpy(fmt, "csv"), 0;
        if (!strcmp(src->mime, "application/x-npy") || !strcmp(src->mime, "application/npy"))
            return strcpy(fmt, "npy"), 0;
        if (!strcmp(src->mime, "application/octet-stream")) return strcpy(fmt, "f32"), 0;
        return am_api_fail(P->err, 400, field,
                           "%s: IMU data of type '%s': use text/csv, application/x-npy or "
                           "application/octet-stream (raw float32), or give \"format\"",
                           field, src->mime);
    }
    if (ends_with(src->path, ".csv")) return strcpy(fmt, "csv"), 0;
    if (ends_with(src->path, ".npy")) return strcpy(fmt, "npy"), 0;
    if (ends_with(src->path, ".f32") || ends_with(src->path, ".bin") ||
        ends_with(src->path, ".raw"))
        return strcpy(fmt, "f32"), 0;
    return am_api_fail(P->err, 400, field,
                       "%s: cannot tell the IMU format of '%s' (.csv, .npy, .f32/.bin/.raw), give "
                       "\"format\"",
                       field, src->path);
}

int am__api_media(am__api_parse *P, const cJSON *part, const char *type, const char *path,
                  am_client_part *out) {
    am_api_request *r = P->r;
    char field[AM_API_MAX_PARAM_BYTES], ufield[AM_API_MAX_PARAM_BYTES];
    subfield(field, sizeof field, path, type);
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(part, type);
    if (!cJSON_IsObject(obj)) return am_api_fail(P->err, 400, field, "%s must be an object", field);
    void **slot = &r->media[r->n_media];
    size_t len = 0;
    media_src src;
    am_modality mod;
    uint32_t frames = 0;
    int rc;
    if (!strcmp(type, "input_audio")) {
        mod = AM_MOD_AUDIO;
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(obj, "data");
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(obj, "format");
        subfield(ufield, sizeof ufield, field, "format");
        if (!cJSON_IsString(fmt) ||
            (strcmp(fmt->valuestring, "wav") && strcmp(fmt->valuestring, "mp3") &&
             strcmp(fmt->valuestring, "flac") && strcmp(fmt->valuestring, "ogg")))
            return am_api_fail(P->err, 400, ufield,
                               "%s must be \"wav\", \"mp3\", \"flac\" or \"ogg\"", ufield);
        subfield(ufield, sizeof ufield, field, "data");
        if (!cJSON_IsString(data))
            return am_api_fail(P->err, 400, ufield, "%s must be a base64 string", ufield);
        rc = am_api_base64_decode(data->valuestring, strlen(data->valuestring),
                                  P->o.max_media_bytes, slot, &len);
        if (rc)
            return am_api_fail(P->err,
                               rc == AM_ERANGE   ? 413
                               : rc == AM_ENOMEM ? 500
                                                 : 400,
                               ufield, "%s: %s", ufield, am_err_msg());
        if (!audio_magic_ok(fmt->valuestring, *slot, len))
            return am_api_fail(P->err, 400, ufield, "%s is not %s audio (its first bytes say so)",
                               ufield, fmt->valuestring);
    } else {
        const cJSON *url = cJSON_GetObjectItemCaseSensitive(obj, "url");
        subfield(ufield, sizeof ufield, field, "url");
        if (!cJSON_IsString(url) || !url->valuestring[0])
            return am_api_fail(P->err, 400, ufield, "%s must be a non-empty string", ufield);
        const char *family = "image/";
        mod = AM_MOD_IMAGE;
        if (!strcmp(type, "audio_url")) mod = AM_MOD_AUDIO, family = "audio/";
        if (!strcmp(type, "video_url")) mod = AM_MOD_VIDEO, family = "video/";
        if (!strcmp(type, "imu_url")) mod = AM_MOD_IMU, family = NULL;
        if ((rc = read_url(P, url->valuestring, ufield, &src, slot, &len))) return rc;
        if (family && src.mime[0] && !is_prefix(family, src.mime))
            return am_api_fail(P->err, 400, ufield,
                               "%s: a data URL of type '%s' where %s* is wanted", ufield, src.mime,
                               family);
        if (mod == AM_MOD_IMU) {
            char fmt[8];
            if ((rc = imu_format(P, obj, field, &src, fmt))) return rc;
            if (!strcmp(fmt, "f32") && (rc = f32_to_npy(P, ufield, slot, &len))) return rc;
            if (!strcmp(fmt, "npy") && (len < 6 || memcmp(*slot, "\x93NUMPY", 6)))
                return am_api_fail(P->err, 400, ufield,
                                   "%s is not a .npy file (no \\x93NUMPY magic)", ufield);
        }
        if (mod == AM_MOD_VIDEO) {
            double v = 0;
            const cJSON *fr = cJSON_GetObjectItemCaseSensitive(obj, "frames");
            subfield(ufield, sizeof ufield, field, "frames");
            if (fr && !cJSON_IsNull(fr)) {
                v = cJSON_IsNumber(fr) ? fr->valuedouble : -1;
                if (v != (double)(uint32_t)v || v < 1 || v > AM_PROTO_MAX_FRAMES_PER_VIDEO)
                    return am_api_fail(P->err, 400, ufield, "%s must be an integer in 1..%d",
                                       ufield, AM_PROTO_MAX_FRAMES_PER_VIDEO);
                frames = (uint32_t)v;
            }
        }
    }
    r->media_bytes += len;
    *out = (am_client_part){.kind = AM_SEG_MEDIA,
                            .modality = (uint8_t)mod,
                            .data = *slot,
                            .len = len,
                            .frames = frames};
    return 0;
}
