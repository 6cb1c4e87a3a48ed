/* tools/cmd_encode.c - `anymal encode`: images or videos -> modality-token rows, with checksums.
 *
 * For debugging and benchmarks: prints one line per file with the token count,
 * the row width and checksums of the rows; a file that cannot be decoded is
 * reported (naming the file and what was wrong) and the exit status is 1, the
 * other files are still encoded.
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "encoders/vision.h"
#include "tools/cli.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define AM_ENCODE_MAX_FILES 4096

static void help(void) {
    printf(
        "usage: anymal encode --modality image|video --model DIR [--threads N] [--frames F]\n"
        "                     [--batch N] [--max-pixels N] [--print-rows N] FILE...\n\n"
        "Encodes each FILE with the model's vision encoder and projector and prints, per file,\n"
        "`FILE: tokens=N dim=D sum=S l2=L wsum=W` (W weights each value by its position, so a\n"
        "permutation of rows changes it). A file that cannot be decoded gives a message naming it\n"
        "and exit status 1; the others are still encoded.\n"
        "  --modality    image (JPEG, PNG, WebP) or video (mp4, webm, mkv, ... via FFmpeg)\n"
        "  --model       an AnyMAL model directory (anymal.json) or an HF LLaVA-1.5 directory\n"
        "  --threads     compute threads (default: all cores)\n"
        "  --frames      frames sampled uniformly from each video (default: the model's, 8)\n"
        "  --batch       files encoded in one batch (default 8; all their frames go through the\n"
        "                vision tower together)\n"
        "  --max-pixels  largest image accepted, in pixels (default %lld)\n"
        "  --print-rows  also print the first 8 values of the first N rows of each file\n",
        (long long)AM_IMAGE_MAX_PIXELS_DEFAULT);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    const char *path;
    float *pixels; /* (F, 3, S, S) */
    int32_t n_frames;
    float *out;
} job;

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
    am_image_limits lim = am_image_default_limits();
    const char *opt;
    if (!files) return am_cli_error("encode", AM_ENOMEM);
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            am_free(files);
            return 0;
        } else if (!strcmp(opt, "--modality")) {
            if (!(modality = am_cli_value(&cli))) goto usage;
            if (strcmp(modality, "image") && strcmp(modality, "video")) {
                rc = am_cli_fail(&cli, "unknown modality '%s' (want image or video)", modality);
                goto out;
            }
        } else if (!strcmp(opt, "--model")) {
            if (!(model = am_cli_value(&cli))) goto usage;
        } else if (!strcmp(opt, "--threads")) {
            if (am_cli_int(&cli, 1, 1024, &v)) goto usage;
            n_threads = (int)v;
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
        rc = am_cli_fail(&cli, "--modality is required (image or video)");
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
    if ((rc = am_vision_model_load(model, &m)) || (rc = am_cpu_backend_new(n_threads, &be)) ||
        (rc = am_vision_encoder_new(m, be, n_threads, 0, &enc))) {
        rc = am_cli_error("encode", rc);
        goto done;
    }
    if (!frames) frames = m->video_frames;
    const int32_t D = am_vision_out_dim(m);
    for (int f0 = 0; f0 < n_files; f0 += batch) {
        int nb = 0;
        double t0 = now_s();
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
        double t1 = now_s();
        int erc = nb ? am_vision_encode(enc, items, nb) : 0;
        double t2 = now_s();
        t_decode += t1 - t0;
        t_encode += t2 - t1;
        for (int i = 0; i < nb; i++) {
            job *j = &jobs[i];
            const int64_t n_tok = am_vision_n_tokens(m, j->n_frames);
            if (!erc) {
                double s = 0, l2 = 0, ws = 0;
                for (int64_t k = 0; k < n_tok * D; k++) {
                    s += j->out[k];
                    l2 += (double)j->out[k] * j->out[k];
                    ws += j->out[k] * (double)((k % 7) - 3);
                }
                printf("%s: tokens=%lld dim=%d sum=%.6e l2=%.6e wsum=%.6e\n", j->path,
                       (long long)n_tok, D, s, sqrt(l2), ws);
                for (int r = 0; r < print_rows && r < n_tok; r++) {
                    printf("  row %d:", r);
                    for (int c = 0; c < 8 && c < D; c++)
                        printf(" %.6f", j->out[(int64_t)r * D + c]);
                    printf("\n");
                }
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
    fflush(stdout);
    fprintf(stderr,
            "anymal encode: %lld files, %lld frames: decode+preprocess %.3f s, encode %.3f s (%.2f "
            "frames/s)\n",
            (long long)total_files, (long long)total_frames, t_decode, t_encode,
            t_encode > 0 ? (double)total_frames / t_encode : 0.0);
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
