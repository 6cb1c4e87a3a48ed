/* tools/cmd_encode.c - `anymal encode`: images, videos, audio or IMU motion -> modality-token
 * rows, with checksums.
 *
 * For debugging and benchmarks: prints one line per file with the token count,
 * the row width and checksums of the rows; a file that cannot be decoded is
 * reported (naming the file and what was wrong) and the exit status is 1, the
 * other files are still encoded.
 */
#include "core/alloc.h"
#include "core/backend_open.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/audio.h"
#include "encoders/imu.h"
#include "encoders/vision.h"
#include "tools/cli.h"
#include "tools/cli_compute.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define AM_ENCODE_MAX_FILES 4096

static void help(void) {
    printf(
        "usage: anymal encode --modality image|video|audio|imu --model DIR [--threads N] [--device D]\n"
        "                     [--batch N] [--print-rows N] [--frames F] [--max-pixels N]\n"
        "                     [--max-seconds S] [--imu-rate HZ] [--imu-time-unit s|ms|us|ns] "
        "FILE...\n\n"
        "Encodes each FILE with the model's encoder and projector for that modality and prints,\n"
        "per file, `FILE: tokens=N dim=D sum=S l2=L wsum=W` (W weights each value by its "
        "position,\n"
        "so a permutation of rows changes it; audio and IMU lines end with what was decoded).\n"
        "A file that cannot be decoded gives a message naming it and exit status 1; the others\n"
        "are still encoded.\n"
        "  --modality    image (JPEG, PNG, WebP), video (mp4, webm, mkv, ... via FFmpeg), audio\n"
        "                (WAV, FLAC, OGG/Vorbis, MP3: CLAP, 10 s clips) or imu (CSV with 6 "
        "columns\n"
        "                accel xyz gyro xyz, or 7 with a leading timestamp; .npy float32 (T, 6),\n"
        "                (T, 7) or (6, T); raw little-endian float32 (T, 6) named "
        "*.f32/*.bin/*.raw:\n"
        "                IMU2CLIP, 5 s windows at 200 Hz, each window gives its own tokens)\n"
        "  --model       an AnyMAL model directory (anymal.json) or, for images and videos, an HF\n"
        "                LLaVA-1.5 directory\n"
        "  --threads     compute threads (default: all cores)\n"
        "  --device      cpu (default), cuda or cuda:N: the compute backend (image and video;\n"
        "                audio and imu run on the cpu)\n"
        "  --batch       files encoded in one batch (default 8; their frames, clips or windows go\n"
        "                through the encoder together)\n"
        "  --print-rows  also print the first 8 values of the first N rows of each file\n"
        "  --frames      frames sampled uniformly from each video (default: the model's, 8)\n"
        "  --max-pixels  largest image accepted, in pixels (default %lld)\n"
        "  --max-seconds longest audio accepted, in seconds (default %g; clips are cut to 10 s)\n"
        "  --imu-rate    sample rate of IMU data without timestamps, Hz (default 200)\n"
        "  --imu-time-unit  unit of IMU timestamps (default s)\n",
        (long long)AM_IMAGE_MAX_PIXELS_DEFAULT, AM_AUDIO_MAX_SECONDS_DEFAULT);
}

typedef struct {
    const char *path;
    float *pixels; /* (F, 3, S, S) */
    int32_t n_frames;
    float *out;
    am_audio audio;     /* audio: mono samples at the model's rate */
    am_imu_windows imu; /* imu: (W, 6, 1000) */
} job;

/* Prints one file's line (and rows): the format the vision path prints. */
static void print_result(const char *path, const float *out, int64_t n_tok, int32_t D,
                         int print_rows, const char *extra) {
    double s = 0, l2 = 0, ws = 0;
    for (int64_t k = 0; k < n_tok * D; k++) {
        s += out[k];
        l2 += (double)out[k] * out[k];
        ws += out[k] * (double)((k % 7) - 3);
    }
    printf("%s: tokens=%lld dim=%d sum=%.6e l2=%.6e wsum=%.6e%s\n", path, (long long)n_tok, D, s,
           sqrt(l2), ws, extra ? extra : "");
    for (int r = 0; r < print_rows && r < n_tok; r++) {
        printf("  row %d:", r);
        for (int c = 0; c < 8 && c < D; c++)
            printf(" %.6f", out[(int64_t)r * D + c]);
        printf("\n");
    }
}

typedef struct {
    const char *device;
    int n_threads, batch, print_rows;
    double max_seconds, imu_rate, imu_time_scale;
} pooled_opts;

/* The closing line on stderr: how many of the files were encoded and, when
 * some were, the time taken and the throughput in units (frames, clips,
 * windows) per second of encoding. */
static void print_summary(int64_t encoded, int n_files, int64_t units, const char *unit,
                          double t_decode, double t_encode) {
    fflush(stdout);
    if (encoded == 0) {
        fprintf(stderr, "anymal encode: none of the %d files was encoded\n", n_files);
        return;
    }
    fprintf(stderr,
            "anymal encode: %lld of %d files encoded (%d failed), %lld %s: decode+preprocess "
            "%.3f s, encode %.3f s (%.2f %s/s)\n",
            (long long)encoded, n_files, n_files - (int)encoded, (long long)units, unit, t_decode,
            t_encode, t_encode > 0 ? (double)units / t_encode : 0.0, unit);
}

/* Audio and IMU: decode every file of a batch, encode the batch, print in order. */
static int encode_pooled(const char *model, int audio, const char **files, int n_files,
                         const pooled_opts *po) {
    am_audio_model *am = NULL;
    am_imu_model *im = NULL;
    am_backend *be = NULL;
    am_audio_encoder *ae = NULL;
    am_imu_encoder *ie = NULL;
    job *jobs = am_calloc((size_t)po->batch, sizeof *jobs);
    am_audio_item *aitems = am_calloc((size_t)po->batch, sizeof *aitems);
    am_imu_item *iitems = am_calloc((size_t)po->batch, sizeof *iitems);
    int failed = 0, rc = 0;
    int64_t total_units = 0, total_files = 0;
    double t_decode = 0, t_encode = 0;
    if (!jobs || !aitems || !iitems) {
        rc = am_cli_error("encode", AM_ENOMEM);
        goto done;
    }
    if ((rc = audio ? am_audio_model_load(model, &am) : am_imu_model_load(model, &im)) ||
        (rc = am_backend_open(po->device, po->n_threads, &be)) ||
        (rc = audio ? am_audio_encoder_new(am, be, po->n_threads, 0, &ae)
                    : am_imu_encoder_new(im, be, po->n_threads, 0, &ie))) {
        rc = am_cli_error("encode", rc);
        goto done;
    }
    const int32_t D = audio ? am_audio_out_dim(am) : am_imu_out_dim(im);
    am_audio_limits alim = am_audio_default_limits();
    alim.max_seconds = po->max_seconds;
    am_imu_opts io = am_imu_default_opts();
    io.rate_hz = po->imu_rate;
    io.time_scale = po->imu_time_scale;
    for (int f0 = 0; f0 < n_files; f0 += po->batch) {
        int nb = 0;
        double t0 = am_now_s();
        for (int i = f0; i < n_files && i < f0 + po->batch; i++) {
            job *j = &jobs[nb];
            memset(j, 0, sizeof *j);
            j->path = files[i];
            int64_t n_tok;
            int e = audio ? am_audio_load(j->path, &alim, am_audio_sample_rate(am), &j->audio)
                          : am_imu_load(j->path, AM_IMU_AUTO, &io, &j->imu);
            if (e) {
                am_cli_error("encode", e);
                failed = 1;
                continue;
            }
            n_tok = audio ? am_audio_n_tokens(am)
                          : (int64_t)j->imu.n_windows * am_imu_tokens_per_window(im);
            if (!(j->out = am_aligned_alloc((size_t)(n_tok * D) * sizeof(float)))) {
                am_cli_error("encode", am_err_set(AM_ENOMEM, "%s: out of memory", j->path));
                am_audio_fini(&j->audio);
                am_imu_windows_fini(&j->imu);
                failed = 1;
                continue;
            }
            if (audio)
                aitems[nb] = (am_audio_item){j->audio.samples, j->audio.n, j->out};
            else
                iitems[nb] = (am_imu_item){j->imu.x, j->imu.n_windows, j->out};
            nb++;
        }
        double t1 = am_now_s();
        int erc = !nb ? 0 : audio ? am_audio_encode(ae, aitems, nb) : am_imu_encode(ie, iitems, nb);
        double t2 = am_now_s();
        t_decode += t1 - t0;
        t_encode += t2 - t1;
        for (int i = 0; i < nb; i++) {
            job *j = &jobs[i];
            char extra[128];
            int64_t n_tok;
            if (audio) {
                n_tok = am_audio_n_tokens(am);
                snprintf(extra, sizeof extra, " src=%s/%dHz/%dch/%.2fs", j->audio.format,
                         j->audio.src_rate, j->audio.src_channels,
                         (double)j->audio.src_frames / j->audio.src_rate);
            } else {
                n_tok = (int64_t)j->imu.n_windows * am_imu_tokens_per_window(im);
                snprintf(extra, sizeof extra, " windows=%d src=%.4gHz/%.2fs", j->imu.n_windows,
                         j->imu.src_rate_hz, (double)j->imu.n_samples / AM_IMU_RATE_HZ);
            }
            if (!erc) {
                print_result(j->path, j->out, n_tok, D, po->print_rows, extra);
                total_units += audio ? 1 : j->imu.n_windows;
                total_files++;
            }
            am_audio_fini(&j->audio);
            am_imu_windows_fini(&j->imu);
            am_aligned_free(j->out);
        }
        if (erc) {
            am_cli_error("encode", erc);
            failed = 1;
        }
    }
    print_summary(total_files, n_files, total_units, audio ? "clips" : "windows", t_decode, t_encode);
    rc = failed ? 1 : 0;
done:
    am_audio_encoder_destroy(&ae);
    am_imu_encoder_destroy(&ie);
    am_backend_destroy(&be);
    am_audio_model_destroy(&am);
    am_imu_model_destroy(&im);
    am_free(jobs);
    am_free(aitems);
    am_free(iitems);
    return rc;
}

/* Decodes and preprocesses one file; prints the error and returns non-zero if it fails. */
static int prepare(const am_vision_model *m, int video, int32_t frames, int n_threads,
                   const am_image_limits *lim, job *j) {
    void *data = NULL;
    size_t len = 0;
    am_video_limits vl = am_video_default_limits();
    int rc = am_read_file_limited(j->path, video ? vl.max_bytes : lim->max_bytes, &data, &len);
    if (!rc && video) {
        rc = am_vision_video_pixels(m, data, len, j->path, frames, n_threads, &vl, &j->pixels);
        j->n_frames = frames;
    } else if (!rc) {
        am_image img;
        rc = am_image_decode(data, len, j->path, lim, &img);
        if (!rc) {
            j->n_frames = 1;
            if (!(j->pixels = am_aligned_alloc((size_t)am_vision_frame_floats(m) * sizeof(float))))
                rc = am_err_set(AM_ENOMEM, "%s: out of memory", j->path);
            else
                rc = am_vision_preprocess(m, &img, j->pixels);
            am_image_fini(&img);
        }
    }
    am_free(data);
    if (rc) am_cli_error("encode", rc);
    return rc;
}

int am_cmd_encode(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, "encode", argc, argv);
    const char *modality = NULL, *model = NULL;
    const char **files = am_calloc(AM_ENCODE_MAX_FILES, sizeof *files);
    int n_files = 0, n_threads = 0, batch = 8, print_rows = 0, rc;
    int32_t frames = 0;
    double max_seconds = AM_AUDIO_MAX_SECONDS_DEFAULT, imu_rate = AM_IMU_RATE_HZ, time_scale = 1.0;
    am_image_limits lim = am_image_default_limits();
    const char *opt, *device = NULL;
    if (!files) return am_cli_error("encode", AM_ENOMEM);
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            am_free(files);
            return 0;
        } else if (!strcmp(opt, "--modality")) {
            if (!(modality = am_cli_value(&cli))) goto usage;
            if (strcmp(modality, "image") && strcmp(modality, "video") &&
                strcmp(modality, "audio") && strcmp(modality, "imu")) {
                rc = am_cli_fail(&cli, "unknown modality '%s' (want image, video, audio or imu)",
                                 modality);
                goto out;
            }
        } else if (!strcmp(opt, "--model")) {
            if (!(model = am_cli_value(&cli))) goto usage;
        } else if (!strcmp(opt, "--threads")) {
            if (am_cli_int(&cli, 1, 1024, &v)) goto usage;
            n_threads = (int)v;
        } else if (!strcmp(opt, "--device")) {
            if (!(device = am_cli_value(&cli))) goto usage;
        } else if (!strcmp(opt, "--frames")) {
            if (am_cli_int(&cli, 1, AM_VIDEO_MAX_SAMPLED_FRAMES, &v)) goto usage;
            frames = (int32_t)v;
        } else if (!strcmp(opt, "--batch")) {
            if (am_cli_int(&cli, 1, 256, &v)) goto usage;
            batch = (int)v;
        } else if (!strcmp(opt, "--max-pixels")) {
            if (am_cli_int(&cli, 1, (int64_t)1 << 40, &v)) goto usage;
            lim.max_pixels = v;
        } else if (!strcmp(opt, "--print-rows")) {
            if (am_cli_int(&cli, 0, 1 << 20, &v)) goto usage;
            print_rows = (int)v;
        } else if (!strcmp(opt, "--max-seconds")) {
            if (am_cli_int(&cli, 1, 86400, &v)) goto usage;
            max_seconds = (double)v;
        } else if (!strcmp(opt, "--imu-rate")) {
            if (am_cli_int(&cli, AM_IMU_MIN_RATE_HZ, AM_IMU_MAX_RATE_HZ, &v)) goto usage;
            imu_rate = (double)v;
        } else if (!strcmp(opt, "--imu-time-unit")) {
            const char *u = am_cli_value(&cli);
            if (!u) goto usage;
            if (!strcmp(u, "s"))
                time_scale = 1.0;
            else if (!strcmp(u, "ms"))
                time_scale = 1e-3;
            else if (!strcmp(u, "us"))
                time_scale = 1e-6;
            else if (!strcmp(u, "ns"))
                time_scale = 1e-9;
            else {
                rc = am_cli_fail(&cli, "unknown --imu-time-unit '%s' (want s, ms, us or ns)", u);
                goto out;
            }
        } else if (opt[0] == '-' && opt[1]) {
            rc = am_cli_fail(&cli, "unknown option '%s'", opt);
            goto out;
        } else {
            if (n_files == AM_ENCODE_MAX_FILES) {
                rc = am_cli_fail(&cli, "more than %d files", AM_ENCODE_MAX_FILES);
                goto out;
            }
            files[n_files++] = opt;
        }
    }
    if (!modality) {
        rc = am_cli_fail(&cli, "--modality is required (image, video, audio or imu)");
        goto out;
    }
    if (!model) {
        rc = am_cli_fail(&cli, "--model is required");
        goto out;
    }
    if (!n_files) {
        rc = am_cli_fail(&cli, "no input files");
        goto out;
    }

    const int video = !strcmp(modality, "video");
    if (!n_threads) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    am_cli_process_setup(n_threads);
    if (!strcmp(modality, "audio") || !strcmp(modality, "imu")) {
        const pooled_opts po = {device, n_threads, batch, print_rows, max_seconds, imu_rate, time_scale};
        rc = encode_pooled(model, !strcmp(modality, "audio"), files, n_files, &po);
        goto out;
    }
    am_vision_model *m = NULL;
    am_backend *be = NULL;
    am_vision_encoder *enc = NULL;
    job *jobs = am_calloc((size_t)batch, sizeof *jobs);
    am_vision_item *items = am_calloc((size_t)batch, sizeof *items);
    int failed = 0;
    int64_t total_frames = 0, total_files = 0;
    double t_decode = 0, t_encode = 0;
    rc = 0;
    if (!jobs || !items) {
        rc = am_cli_error("encode", AM_ENOMEM);
        goto done;
    }
    if ((rc = am_vision_model_load(model, &m)) || (rc = am_backend_open(device, n_threads, &be)) ||
        (rc = am_vision_encoder_new(m, be, n_threads, 0, &enc))) {
        rc = am_cli_error("encode", rc);
        goto done;
    }
    if (!frames) frames = m->video_frames;
    const int32_t D = am_vision_out_dim(m);
    for (int f0 = 0; f0 < n_files; f0 += batch) {
        int nb = 0;
        double t0 = am_now_s();
        for (int i = f0; i < n_files && i < f0 + batch; i++) {
            job *j = &jobs[nb];
            memset(j, 0, sizeof *j);
            j->path = files[i];
            if (prepare(m, video, frames, n_threads, &lim, j)) {
                failed = 1;
                continue;
            }
            const int64_t n_tok = am_vision_n_tokens(m, j->n_frames);
            if (!(j->out = am_aligned_alloc((size_t)(n_tok * D) * sizeof(float)))) {
                am_cli_error("encode", am_err_set(AM_ENOMEM, "%s: out of memory", j->path));
                am_aligned_free(j->pixels);
                failed = 1;
                continue;
            }
            items[nb] = (am_vision_item){j->pixels, j->n_frames, j->out};
            nb++;
        }
        double t1 = am_now_s();
        int erc = nb ? am_vision_encode(enc, items, nb) : 0;
        double t2 = am_now_s();
        t_decode += t1 - t0;
        t_encode += t2 - t1;
        for (int i = 0; i < nb; i++) {
            job *j = &jobs[i];
            const int64_t n_tok = am_vision_n_tokens(m, j->n_frames);
            if (!erc) {
                print_result(j->path, j->out, n_tok, D, print_rows, NULL);
                total_frames += j->n_frames;
                total_files++;
            }
            am_aligned_free(j->pixels);
            am_aligned_free(j->out);
        }
        if (erc) {
            am_cli_error("encode", erc);
            failed = 1;
        }
    }
    print_summary(total_files, n_files, total_frames, "frames", t_decode, t_encode);
    rc = failed ? 1 : 0;
done:
    am_vision_encoder_destroy(&enc);
    am_backend_destroy(&be);
    am_vision_model_destroy(&m);
    am_free(jobs);
    am_free(items);
out:
    am_free(files);
    return rc;
usage:
    am_free(files);
    return AM_EXIT_USAGE;
}
