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
#include "encoders/modality.h"
#include "tools/cli.h"
#include "tools/cli_compute.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define AM_ENCODE_MAX_FILES 4096

static void help(void) {
    char mods[128];
    printf(
        "usage: anymal encode --modality %s --model DIR [--threads N] [--device D]\n"
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
        "  --device      cpu (default), cuda or cuda:N: the compute backend of every modality\n"
        "  --batch       files encoded in one batch (default 8; their frames, clips or windows go\n"
        "                through the encoder together)\n"
        "  --print-rows  also print the first 8 values of the first N rows of each file\n"
        "  --frames      frames sampled uniformly from each video (default: the model's, 8)\n"
        "  --max-pixels  largest image accepted, in pixels (default %lld)\n"
        "  --max-seconds longest audio accepted, in seconds (default %g; clips are cut to 10 s)\n"
        "  --imu-rate    sample rate of IMU data without timestamps, Hz (default 200)\n"
        "  --imu-time-unit  unit of IMU timestamps (default s)\n",
        am_modality_list(mods, sizeof mods, "|", "|"), (long long)AM_IMAGE_MAX_PIXELS_DEFAULT,
        AM_AUDIO_MAX_SECONDS_DEFAULT);
}

typedef struct {
    const char *path;
    am_mod_input input; /* decoded and preprocessed */
    float *out;
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

/* Reads and prepares one file; prints the error and returns non-zero if it fails. */
static int prepare(const am_mod_set *enc, int mod, const am_mod_opts *o, job *j) {
    void *data = NULL;
    size_t len = 0;
    int rc = am_read_file_limited(j->path, am_mod_max_bytes(mod, o), &data, &len);
    if (!rc) rc = am_mod_set_prepare(enc, mod, data, len, j->path, o, &j->input);
    am_free(data);
    if (rc) {
        am_mod_input_fini(&j->input);
        am_cli_error("encode", rc);
    }
    return rc;
}

/* Every modality through the table of encoders/modality.h: decode a batch of
 * files, encode it in one call, print in order. */
static int encode_files(am_modality mod, const char *model, const char *device, int n_threads,
                        int batch, int print_rows, const am_mod_opts *o, const char **files,
                        int n_files) {
    am_backend *be = NULL;
    am_mod_set *enc = NULL;
    job *jobs = am_calloc((size_t)batch, sizeof *jobs);
    const am_mod_input **in = am_calloc((size_t)batch, sizeof *in);
    float **out = am_calloc((size_t)batch, sizeof *out);
    int failed = 0, rc = 0;
    int64_t total_units = 0, total_files = 0;
    double t_decode = 0, t_encode = 0;
    if (!jobs || !in || !out) {
        rc = am_cli_error("encode", AM_ENOMEM);
        goto done;
    }
    if ((rc = am_backend_open(device, n_threads, &be)) ||
        (rc = am_mod_set_open(model, 1u << mod, be, n_threads, &enc))) {
        rc = am_cli_error("encode", rc);
        goto done;
    }
    const int32_t D = am_mod_set_out_dim(enc);
    for (int f0 = 0; f0 < n_files; f0 += batch) {
        int nb = 0;
        double t0 = am_now_s();
        for (int i = f0; i < n_files && i < f0 + batch; i++) {
            job *j = &jobs[nb];
            memset(j, 0, sizeof *j);
            j->path = files[i];
            if (prepare(enc, mod, o, j)) {
                failed = 1;
                continue;
            }
            if (!(j->out = am_aligned_alloc((size_t)(j->input.n_rows * D) * sizeof(float)))) {
                am_cli_error("encode", am_err_set(AM_ENOMEM, "%s: out of memory", j->path));
                am_mod_input_fini(&j->input);
                failed = 1;
                continue;
            }
            in[nb] = &j->input;
            out[nb] = j->out;
            nb++;
        }
        double t1 = am_now_s();
        int erc = am_mod_set_encode(enc, 0, in, out, nb);
        double t2 = am_now_s();
        t_decode += t1 - t0;
        t_encode += t2 - t1;
        for (int i = 0; i < nb; i++) {
            job *j = &jobs[i];
            if (!erc) {
                print_result(j->path, j->out, j->input.n_rows, D, print_rows,
                             j->input.info[0] ? j->input.info : NULL);
                total_units += j->input.units;
                total_files++;
            }
            am_mod_input_fini(&j->input);
            am_aligned_free(j->out);
        }
        if (erc) {
            am_cli_error("encode", erc);
            failed = 1;
        }
    }
    print_summary(total_files, n_files, total_units, am_mod_unit(mod), t_decode, t_encode);
    rc = failed ? 1 : 0;
done:
    am_mod_set_destroy(&enc);
    am_backend_destroy(&be);
    am_free(jobs);
    am_free(in);
    am_free(out);
    return rc;
}

int am_cmd_encode(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, "encode", argc, argv);
    const char *model = NULL;
    am_modality mod = AM_MOD_COUNT;
    const char **files = am_calloc(AM_ENCODE_MAX_FILES, sizeof *files);
    int n_files = 0, n_threads = 0, batch = 8, print_rows = 0, rc;
    am_mod_opts mo = am_mod_default_opts();
    const char *opt, *device = NULL;
    if (!files) return am_cli_error("encode", AM_ENOMEM);
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            am_free(files);
            return 0;
        } else if (!strcmp(opt, "--modality")) {
            const char *name = am_cli_value(&cli);
            if (!name) goto usage;
            if (am_modality_parse(name, &mod)) {
                rc = am_cli_fail(&cli, "%s", am_err_msg());
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
            mo.frames = (int32_t)v;
        } else if (!strcmp(opt, "--batch")) {
            if (am_cli_int(&cli, 1, 256, &v)) goto usage;
            batch = (int)v;
        } else if (!strcmp(opt, "--max-pixels")) {
            if (am_cli_int(&cli, 1, (int64_t)1 << 40, &v)) goto usage;
            mo.image.max_pixels = v;
        } else if (!strcmp(opt, "--print-rows")) {
            if (am_cli_int(&cli, 0, 1 << 20, &v)) goto usage;
            print_rows = (int)v;
        } else if (!strcmp(opt, "--max-seconds")) {
            if (am_cli_int(&cli, 1, 86400, &v)) goto usage;
            mo.audio.max_seconds = (double)v;
        } else if (!strcmp(opt, "--imu-rate")) {
            if (am_cli_int(&cli, AM_IMU_MIN_RATE_HZ, AM_IMU_MAX_RATE_HZ, &v)) goto usage;
            mo.imu.rate_hz = (double)v;
        } else if (!strcmp(opt, "--imu-time-unit")) {
            const char *u = am_cli_value(&cli);
            if (!u) goto usage;
            if (!strcmp(u, "s"))
                mo.imu.time_scale = 1.0;
            else if (!strcmp(u, "ms"))
                mo.imu.time_scale = 1e-3;
            else if (!strcmp(u, "us"))
                mo.imu.time_scale = 1e-6;
            else if (!strcmp(u, "ns"))
                mo.imu.time_scale = 1e-9;
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
    if (mod == AM_MOD_COUNT) {
        char mods[128];
        rc = am_cli_fail(&cli, "--modality is required (%s)",
                         am_modality_list(mods, sizeof mods, ", ", " or "));
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

    if (!n_threads) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    am_cli_process_setup(n_threads);
    mo.n_threads = n_threads;
    rc = encode_files(mod, model, device, n_threads, batch, print_rows, &mo, files, n_files);
out:
    am_free(files);
    return rc;
usage:
    am_free(files);
    return AM_EXIT_USAGE;
}
