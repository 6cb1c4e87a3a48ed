/* bench/bench_audio.c - throughput of the audio (CLAP HTSAT) and IMU (IMU2CLIP) encoders.
 *
 *   bench_audio [--audio htsat-tiny,htsat-base] [--imu imu2clip] [--dtype f32|bf16|f16]
 *               [--threads N] [--batches 1,16] [--repeats R] [--llm-dim D] [--tokens T]
 *
 * For each shape it writes a random-init AnyMAL encoder directory (mkencoders:
 * the encoder plus a linear projector to a --llm-dim wide LLM, --tokens rows,
 * default 4096 and 8) into a temporary directory and loads it through the real
 * loader (mmap'ed safetensors). It measures, in one run on the same backend and
 * threads:
 *   1. the GEMM peak: the backend matmul at M = 1024, N = 1536, K = 768 with
 *      weights of the same dtype (best of max(5, repeats) runs, before and again
 *      after the encoders run: on a shared machine the best moment is closest to
 *      the peak), and for reference the encoder's own largest GEMMs (HTSAT-tiny
 *      fc1 of stage 0: M = 4096, N = 384, K = 96; IMU2CLIP GRU input: M = 32,
 *      N = 1536, K = 32);
 *   2. audio clips/s at each batch size: 10 s clips of noise at 48 kHz, end to
 *      end from samples (log-mel + HTSAT + CLAP projection + the linear
 *      projector) and without the projector (am_audio_embed); achieved GFLOP/s
 *      = HTSAT matmul FLOPs / encoder time, against the GEMM peak; the log-mel
 *      front end is timed apart;
 *   3. IMU windows/s at each batch size: 5 s windows (6 x 1000) through
 *      IMU2CLIP, with and without the projector (one window per request);
 *      GFLOP/s as above. The linear projector (512 -> tokens x llm-dim, 64 MB
 *      of f32 weights at the defaults) is memory bound: its weights are read
 *      once per four rows (am_proj_linear_rows).
 * Prints a table and one JSON line (prefix "json: ").
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "encoders/audio.h"
#include "encoders/imu.h"
#include "encoders/mkencoders.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AM_BENCH_NAME "bench_audio"
#include "bench_util.h"

static void rm_tree(const char *dir) {
    static const char *const f[] = {"anymal.json", "audio_encoder.safetensors",
                                    "audio_projector.safetensors", "imu_encoder.safetensors",
                                    "imu_projector.safetensors"};
    char p[4096];
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, f[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int parse_list(const char *s, int *v, int max) {
    int n = 0;
    while (s && *s && n < max) {
        v[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

typedef struct {
    char name[32];
    int batch;
    double s, per_s;         /* end to end, with the projector */
    double enc_s, enc_per_s; /* encoder only */
    double gflops;           /* encoder FLOPs / encoder time */
} result;

/* Best time of `reps` calls of fn(arg) after one warm-up call. */
typedef int (*timed_fn)(void *arg);
static double best_of(int reps, timed_fn fn, void *arg, const char *what) {
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now_s();
        int rc = fn(arg);
        if (rc) die(what, rc);
        double t = now_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    return best;
}

typedef struct {
    am_audio_encoder *ae;
    am_audio_item *aitems;
    am_imu_encoder *ie;
    am_imu_item *iitems;
    int b;
    float *emb;
} call_args;

static int audio_all(void *p) {
    call_args *a = p;
    return am_audio_encode(a->ae, a->aitems, a->b);
}
static int audio_enc(void *p) {
    call_args *a = p;
    return am_audio_embed(a->ae, a->aitems, a->b, a->emb, NULL);
}
static int imu_all(void *p) {
    call_args *a = p;
    return am_imu_encode(a->ie, a->iitems, a->b);
}
static int imu_enc(void *p) {
    call_args *a = p;
    return am_imu_embed(a->ie, a->iitems, a->b, a->emb);
}

int main(int argc, char **argv) {
    const char *audio_s = "htsat-tiny,htsat-base", *imu_s = "imu2clip", *batches_s = "1,16";
    am_dtype dt = AM_DTYPE_F32;
    int n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN), repeats = 2;
    int32_t llm_dim = 4096, tokens = 8;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--audio") && v)
            audio_s = v, i++;
        else if (!strcmp(a, "--imu") && v)
            imu_s = v, i++;
        else if (!strcmp(a, "--dtype") && v) {
            if (am_dtype_parse(v, &dt)) die("--dtype", AM_EINVAL);
            i++;
        } else if (!strcmp(a, "--threads") && v)
            n_threads = atoi(v), i++;
        else if (!strcmp(a, "--batches") && v)
            batches_s = v, i++;
        else if (!strcmp(a, "--repeats") && v)
            repeats = atoi(v), i++;
        else if (!strcmp(a, "--llm-dim") && v)
            llm_dim = atoi(v), i++;
        else if (!strcmp(a, "--tokens") && v)
            tokens = atoi(v), i++;
        else {
            fprintf(
                stderr,
                "usage: see the comment at the top of bench/bench_audio.c (bad argument '%s')\n",
                a);
            return 2;
        }
    }
    if (n_threads < 1 || repeats < 1 || llm_dim < 1 || tokens < 1) return 2;
    int batches[8];
    const int nb = parse_list(batches_s, batches, 8);
    int maxb = 1;
    for (int i = 0; i < nb; i++)
        maxb = batches[i] > maxb ? batches[i] : maxb;
    setvbuf(stdout, NULL, _IOLBF, 0);
    double load[3] = {0};
    if (getloadavg(load, 3) < 1) load[0] = -1;
    am_cpu_blas_setup(n_threads);
    am_backend *be = NULL;
    int rc = am_cpu_backend_new(n_threads, &be);
    if (rc) die("backend", rc);
    printf("bench_audio: %s weights, backend %s, %d threads, linear projector -> %d tokens x %d\n",
           am_dtype_name(dt), be->name, n_threads, tokens, llm_dim);
    printf("  load average at start: %.2f %.2f %.2f (other processes share the cores)\n", load[0],
           load[1], load[2]);
    const int prep = repeats < 5 ? 5 : repeats;
    double peak = gemm_gflops(be, dt, 1024, 1536, 768, prep);
    const double g_htsat = gemm_gflops(be, dt, 4096, 384, 96, prep);
    const double g_gru = gemm_gflops(be, dt, 32, 1536, 32, prep);
    printf("  GEMM peak before (M=1024 N=1536 K=768): %.1f GFLOP/s; HTSAT-tiny fc1 of stage 0 "
           "(4096x384x96): %.1f; IMU2CLIP GRU input (32x1536x32): %.1f\n",
           peak, g_htsat, g_gru);

    char tmp[256];
    snprintf(tmp, sizeof tmp, "/tmp/bench_audio_%d", (int)getpid());
    result res[32];
    int nres = 0;
    uint64_t seed = 7;

    /* ---- audio ---- */
    char shapes[256];
    snprintf(shapes, sizeof shapes, "%s", audio_s);
    for (char *sh = strtok(shapes, ","); sh; sh = strtok(NULL, ",")) {
        if (mkdir(tmp, 0755)) die(tmp, AM_EIO);
        am_mkencoders_opts o = {.dir = tmp,
                                .dtype = dt,
                                .seed = 1,
                                .llm_dim = llm_dim,
                                .llm_path = ".",
                                .audio_shape = sh,
                                .audio_tokens = tokens};
        double t0 = now_s();
        if ((rc = am_mkencoders_write(&o))) die("mkencoders", rc);
        const double t_write = now_s() - t0;
        am_audio_model *m = NULL;
        am_audio_encoder *e = NULL;
        if ((rc = am_audio_model_load(tmp, &m)) ||
            (rc = am_audio_encoder_new(m, be, n_threads, maxb, &e)))
            die("audio model", rc);
        const double flops = am_htsat_flops(&m->enc_cfg);
        printf("  %s: width %d, depths", sh, m->enc_cfg.embed_dim);
        for (int i = 0; i < m->enc_cfg.n_stages; i++)
            printf(" %d", m->enc_cfg.depths[i]);
        printf(", %.1f GFLOP per 10 s clip (written in %.1f s)\n", flops / 1e9, t_write);
        const int64_t N = 480000, T = am_melspec_frames(&m->fe);
        float *x = am_aligned_alloc((size_t)(maxb * N) * 4);
        float *out = am_aligned_alloc((size_t)(maxb * am_audio_n_tokens(m) * llm_dim) * 4);
        float *mel = am_aligned_alloc((size_t)(T * m->fe.n_mels) * 4);
        am_audio_item *items = am_calloc((size_t)maxb, sizeof *items);
        if (!x || !out || !mel || !items) die("buffers", AM_ENOMEM);
        for (int64_t i = 0; i < maxb * N; i++)
            x[i] = 0.1f * urand(&seed);
        for (int i = 0; i < maxb; i++)
            items[i] = (am_audio_item){x + i * N, N, out + i * am_audio_n_tokens(m) * llm_dim};
        double fe_best = 1e30;
        for (int r = 0; r < repeats + 1; r++) {
            t0 = now_s();
            if ((rc = am_melspec_run(m->ms, x, N, am_audio_encoder_nn(e)->tp, mel)))
                die("log-mel", rc);
            const double t = now_s() - t0;
            fe_best = t < fe_best ? t : fe_best;
        }
        float *emb = am_aligned_alloc((size_t)(maxb * am_audio_embed_dim(m)) * 4);
        if (!emb) die("buffers", AM_ENOMEM);
        for (int bi = 0; bi < nb; bi++) {
            const int b = batches[bi];
            call_args ca = {.ae = e, .aitems = items, .b = b, .emb = emb};
            const double t_all = best_of(repeats, audio_all, &ca, "audio encode");
            const double t_enc = best_of(repeats, audio_enc, &ca, "audio embed");
            result *q = &res[nres++];
            *q = (result){.batch = b,
                          .s = t_all,
                          .per_s = b / t_all,
                          .enc_s = t_enc,
                          .enc_per_s = b / t_enc,
                          .gflops = flops * b / t_enc / 1e9};
            snprintf(q->name, sizeof q->name, "%s", sh);
            printf("  %s batch %-2d: %8.3f s  %7.2f clips/s (encoder only %7.2f clips/s, %6.1f "
                   "GFLOP/s; log-mel %.1f ms per clip)\n",
                   sh, b, t_all, q->per_s, q->enc_per_s, q->gflops, fe_best * 1e3);
        }
        am_aligned_free(emb);
        am_aligned_free(x), am_aligned_free(out), am_aligned_free(mel), am_free(items);
        am_audio_encoder_destroy(&e);
        am_audio_model_destroy(&m);
        rm_tree(tmp);
    }

    /* ---- IMU ---- */
    snprintf(shapes, sizeof shapes, "%s", imu_s);
    for (char *sh = strtok(shapes, ","); sh; sh = strtok(NULL, ",")) {
        if (mkdir(tmp, 0755)) die(tmp, AM_EIO);
        am_mkencoders_opts o = {.dir = tmp,
                                .dtype = dt,
                                .seed = 1,
                                .llm_dim = llm_dim,
                                .llm_path = ".",
                                .imu_shape = sh,
                                .imu_tokens = tokens};
        if ((rc = am_mkencoders_write(&o))) die("mkencoders", rc);
        am_imu_model *m = NULL;
        am_imu_encoder *e = NULL;
        if ((rc = am_imu_model_load(tmp, &m)) ||
            (rc = am_imu_encoder_new(m, be, n_threads, maxb, &e)))
            die("IMU model", rc);
        const double flops = am_imu2clip_flops(&m->enc_cfg);
        printf("  %s: D %d, H %d, %.1f MFLOP per 5 s window\n", sh, m->enc_cfg.conv_dim,
               m->enc_cfg.hidden, flops / 1e6);
        const int64_t WF = 6 * 1000, tok = am_imu_tokens_per_window(m);
        float *x = am_aligned_alloc((size_t)(maxb * WF) * 4);
        float *out = am_aligned_alloc((size_t)(maxb * tok * llm_dim) * 4);
        am_imu_item *items = am_calloc((size_t)maxb, sizeof *items);
        if (!x || !out || !items) die("buffers", AM_ENOMEM);
        for (int64_t i = 0; i < maxb * WF; i++)
            x[i] = urand(&seed);
        for (int i = 0; i < maxb; i++) /* one window per request */
            items[i] = (am_imu_item){x + i * WF, 1, out + i * tok * llm_dim};
        float *emb = am_aligned_alloc((size_t)(maxb * am_imu_embed_dim(m)) * 4);
        if (!emb) die("buffers", AM_ENOMEM);
        for (int bi = 0; bi < nb; bi++) {
            const int b = batches[bi], reps = 5 * repeats; /* windows are fast: more repeats */
            call_args ca = {.ie = e, .iitems = items, .b = b, .emb = emb};
            const double t_all = best_of(reps, imu_all, &ca, "IMU encode");
            const double t_enc = best_of(reps, imu_enc, &ca, "IMU embed");
            result *q = &res[nres++];
            *q = (result){.batch = b,
                          .s = t_all,
                          .per_s = b / t_all,
                          .enc_s = t_enc,
                          .enc_per_s = b / t_enc,
                          .gflops = flops * b / t_enc / 1e9};
            snprintf(q->name, sizeof q->name, "%s", sh);
            printf("  %s batch %-2d: %8.4f s  %8.1f windows/s (encoder only %8.1f windows/s, "
                   "%6.1f GFLOP/s)\n",
                   sh, b, t_all, q->per_s, q->enc_per_s, q->gflops);
        }
        am_aligned_free(emb);
        am_aligned_free(x), am_aligned_free(out), am_free(items);
        am_imu_encoder_destroy(&e);
        am_imu_model_destroy(&m);
        rm_tree(tmp);
    }

    const double peak2 = gemm_gflops(be, dt, 1024, 1536, 768, prep);
    printf("  GEMM peak after: %.1f GFLOP/s; best of both: %.1f GFLOP/s\n", peak2,
           peak2 > peak ? peak2 : peak);
    peak = peak2 > peak ? peak2 : peak;
    char json[4096];
    int jn = snprintf(json, sizeof json,
                      "{\"bench\":\"audio_imu\",\"dtype\":\"%s\",\"threads\":%d,\"backend\":\"%s\","
                      "\"loadavg\":%.2f,\"gemm_peak_gflops\":%.1f,\"gemm_htsat_fc1_gflops\":%.1f,"
                      "\"gemm_gru_ih_gflops\":%.1f",
                      am_dtype_name(dt), n_threads, be->name, load[0], peak, g_htsat, g_gru);
    printf("  %-12s %5s %10s %12s %14s %9s %7s\n", "encoder", "batch", "s", "items/s",
           "encoder-only/s", "GFLOP/s", "%peak");
    for (int i = 0; i < nres; i++) {
        printf("  %-12s %5d %10.4f %12.2f %14.2f %9.1f %6.1f%%\n", res[i].name, res[i].batch,
               res[i].s, res[i].per_s, res[i].enc_per_s, res[i].gflops, 100 * res[i].gflops / peak);
        jn += snprintf(json + jn, sizeof json - (size_t)jn,
                       ",\"%s_b%d\":{\"s\":%.5f,\"per_s\":%.3f,\"encoder_per_s\":%.3f,"
                       "\"gflops\":%.2f,\"peak_frac\":%.3f}",
                       res[i].name, res[i].batch, res[i].s, res[i].per_s, res[i].enc_per_s,
                       res[i].gflops, res[i].gflops / peak);
    }
    snprintf(json + jn, sizeof json - (size_t)jn, "}");
    printf("json: %s\n", json);
    am_backend_destroy(&be);
    return 0;
}
