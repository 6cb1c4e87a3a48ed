/* bench/bench_vision.c - throughput of the vision encoder: ViT tower, resampler, video end to end.
 *
 *   bench_vision [--model DIR] [--vision SHAPE] [--dtype bf16|f16|f32] [--threads N]
 *                [--batches 1,8] [--repeats R] [--video FILE] [--frames F] [--keep]
 *
 * Without --model it writes a random-init AnyMAL encoder directory (default
 * ViT-L/14-336 + a 64-latent, 2-layer Perceiver Resampler to a 4096-wide LLM,
 * `--dtype` weights, default bf16) into a temporary directory and loads it
 * through the real loader (mmap'ed safetensors).
 *
 * It measures, in one run on the same backend and threads:
 *   1. the GEMM peak: the backend matmul on the tower's largest GEMM shape
 *      (M = 8 * 577 rows, fc1: N = 4096, K = 1024) with weights in the same
 *      dtype (for reference also f32 weights), best of max(5, repeats) runs
 *      before and again after the tower runs (on a shared machine the best
 *      moment is the closest to the peak);
 *   2. the tower at each batch size: images/s and achieved GFLOP/s (matmul
 *      FLOPs of the blocks actually run: feature layer -2 runs L-1 blocks;
 *      the attention score/value products included) and the fraction of the
 *      GEMM peak;
 *   3. the projector per image (the resampler over one image's 576 patch rows);
 *   4. with --video: frames/s end to end (read file, demux, decode, sample F
 *      frames, preprocess, tower, one resampler call).
 * Prints a table and one JSON line (prefix "json: ").
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/mkencoders.h"
#include "encoders/vision.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AM_BENCH_NAME "bench_vision"
#include "bench_util.h"

static void rm_tree(const char *dir) {
    static const char *const f[] = {"anymal.json", "vision_tower.safetensors",
                                    "vision_projector.safetensors"};
    char p[4096];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, f[i]);
        unlink(p);
    }
    rmdir(dir);
}

int main(int argc, char **argv) {
    const char *model = NULL, *vision = "vit-l-14-336", *video = NULL, *batches_s = "1,8";
    am_dtype dt = AM_DTYPE_BF16;
    int n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN), repeats = 3, keep = 0;
    int32_t frames = 8, llm_dim = 4096;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v)
            model = v, i++;
        else if (!strcmp(a, "--vision") && v)
            vision = v, i++;
        else if (!strcmp(a, "--dtype") && v) {
            if (am_dtype_parse(v, &dt)) die("--dtype", AM_EINVAL);
            i++;
        } else if (!strcmp(a, "--threads") && v)
            n_threads = atoi(v), i++;
        else if (!strcmp(a, "--batches") && v)
            batches_s = v, i++;
        else if (!strcmp(a, "--repeats") && v)
            repeats = atoi(v), i++;
        else if (!strcmp(a, "--video") && v)
            video = v, i++;
        else if (!strcmp(a, "--frames") && v)
            frames = atoi(v), i++;
        else if (!strcmp(a, "--llm-dim") && v)
            llm_dim = atoi(v), i++;
        else if (!strcmp(a, "--keep"))
            keep = 1;
        else {
            fprintf(
                stderr,
                "usage: see the comment at the top of bench/bench_vision.c (bad argument '%s')\n",
                a);
            return 2;
        }
    }
    if (n_threads < 1 || repeats < 1 || frames < 1) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    double load[3] = {0};
    if (getloadavg(load, 3) < 1) load[0] = -1;
    am_cpu_blas_setup(n_threads);
    am_backend *be = NULL;
    int rc = am_cpu_backend_new(n_threads, &be);
    if (rc) die("backend", rc);

    char tmp[256] = "";
    double t_write = 0;
    if (!model) {
        snprintf(tmp, sizeof tmp, "/tmp/bench_vision_%d", (int)getpid());
        if (mkdir(tmp, 0755)) die(tmp, AM_EIO);
        am_mkencoders_opts o = {.dir = tmp,
                                .vision_shape = vision,
                                .projector = AM_PROJ_PERCEIVER,
                                .dtype = dt,
                                .seed = 1,
                                .llm_dim = llm_dim,
                                .llm_path = ".",
                                .video_frames = frames};
        double t0 = now_s();
        if ((rc = am_mkencoders_write(&o))) die("mkencoders", rc);
        t_write = now_s() - t0;
        model = tmp;
    }
    am_vision_model *m = NULL;
    if ((rc = am_vision_model_load(model, &m))) die("load", rc);
    const am_vit_config *vc = &m->vit_cfg;
    const int64_t T = am_vit_n_patches(vc) + 1, FF = am_vision_frame_floats(m);
    const am_dtype wdt = m->vit->layers[0].fc1.w.dtype;
    printf("bench_vision: %s tower (%d px, patch %d, width %d, %d of %d blocks for feature layer "
           "%d), %s weights,"
           " %s projector (%d latents x %d layers) -> %d, backend %s, %d threads%s\n",
           model, vc->image_size, vc->patch_size, vc->width, m->n_run, vc->n_layers,
           m->feature_layer, am_dtype_name(wdt), am_proj_type_name(m->proj_cfg.type),
           m->proj_cfg.n_latents, m->proj_cfg.depth, am_vision_out_dim(m), be->name, n_threads,
           t_write > 0 ? "" : "");
    if (t_write > 0) printf("  (random weights written in %.1f s)\n", t_write);

    printf("  load average at start: %.2f %.2f %.2f (other processes share the cores)\n", load[0],
           load[1], load[2]);
    /* 1. GEMM peak on the fc1 shape. */
    const int64_t Mpk = 8 * T;
    const int prep = repeats < 5 ? 5 : repeats;
    double peak = gemm_gflops(be, wdt, Mpk, vc->mlp_dim, vc->width, prep);
    double peak_f32 = wdt == AM_DTYPE_F32
                          ? peak
                          : gemm_gflops(be, AM_DTYPE_F32, Mpk, vc->mlp_dim, vc->width, prep);
    printf("  GEMM peak before (M=%lld N=%d K=%d): %s weights %.1f GFLOP/s, f32 weights %.1f "
           "GFLOP/s\n",
           (long long)Mpk, vc->mlp_dim, vc->width, am_dtype_name(wdt), peak, peak_f32);

    /* 2. tower throughput per batch size. */
    int batches[8], nb = 0;
    for (const char *p = batches_s; *p && nb < 8;) {
        batches[nb++] = atoi(p);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    int maxb = 1;
    for (int i = 0; i < nb; i++)
        maxb = batches[i] > maxb ? batches[i] : maxb;
    am_vision_encoder *enc = NULL;
    if ((rc = am_vision_encoder_new(m, be, n_threads, maxb, &enc))) die("encoder", rc);
    float *px = am_aligned_alloc((size_t)(maxb * FF) * 4);
    const int32_t R = am_vision_rows_per_frame(m);
    float *feats = am_aligned_alloc((size_t)(maxb * R * vc->width) * 4);
    if (!px || !feats) die("buffers", AM_ENOMEM);
    uint64_t s = 7;
    for (int64_t i = 0; i < maxb * FF; i++)
        px[i] = urand(&s);
    const double flops_img = am_vit_flops(vc, m->n_run);
    char json[2048];
    int jn = snprintf(
        json, sizeof json,
        "{\"bench\":\"vision\",\"vision\":\"%s\",\"dtype\":\"%s\",\"threads\":%d,\"backend\":\"%"
        "s\","
        "\"gemm_peak_gflops\":%.1f,\"gemm_peak_f32_gflops\":%.1f,\"tower_gflop_per_image\":%.1f",
        vision, am_dtype_name(wdt), n_threads, be->name, peak, peak_f32, flops_img / 1e9);
    double tower_s[8];
    for (int bi = 0; bi < nb; bi++) {
        const int b = batches[bi];
        double best = 1e30;
        for (int r = 0; r < repeats; r++) {
            double t0 = now_s();
            if ((rc = am_vision_features(enc, px, b, feats))) die("tower", rc);
            double t = now_s() - t0;
            best = t < best ? t : best;
        }
        tower_s[bi] = best;
        printf("  tower batch %-2d: %8.3f s\n", b, best);
    }
    {
        double p2 = gemm_gflops(be, wdt, Mpk, vc->mlp_dim, vc->width, prep);
        printf("  GEMM peak after: %s weights %.1f GFLOP/s\n", am_dtype_name(wdt), p2);
        peak = p2 > peak ? p2 : peak;
        if (wdt == AM_DTYPE_F32) peak_f32 = peak;
        printf("  GEMM peak (best of both): %.1f GFLOP/s\n", peak);
    }
    jn += snprintf(json + jn, sizeof json - (size_t)jn,
                   ",\"gemm_peak_best_gflops\":%.1f,\"loadavg\":%.2f", peak, load[0]);
    for (int bi = 0; bi < nb; bi++) {
        const int b = batches[bi];
        const double best = tower_s[bi];
        double ips = b / best, gf = flops_img * b / best / 1e9;
        printf("  tower batch %-2d: %8.3f s  %7.3f images/s  %7.1f GFLOP/s  %5.1f%% of the GEMM "
               "peak\n",
               b, best, ips, gf, 100 * gf / peak);
        jn += snprintf(
            json + jn, sizeof json - (size_t)jn,
            ",\"batch%d\":{\"s\":%.4f,\"images_per_s\":%.4f,\"gflops\":%.1f,\"peak_frac\":%.3f}", b,
            best, ips, gf, gf / peak);
    }

    /* 3. projector per image (features of one image). */
    {
        const int64_t nt = am_vision_n_tokens(m, 1);
        float *out = am_aligned_alloc((size_t)(nt * am_vision_out_dim(m)) * 4);
        am_proj_item it = {feats, 1, R, out};
        double best = 1e30;
        for (int r = 0; r < repeats + 1; r++) {
            double t0 = now_s();
            if ((rc = am_proj_forward(m->proj, am_vision_encoder_nn(enc), &it, 1)))
                die("projector", rc);
            double t = now_s() - t0;
            if (r > 0 && t < best) best = t;
        }
        const double pf = am_proj_flops(m->proj, 1, R);
        printf("  projector per image: %.2f ms (%.2f GFLOP, %.1f GFLOP/s) -> %lld tokens\n",
               best * 1e3, pf / 1e9, pf / best / 1e9, (long long)nt);
        jn += snprintf(json + jn, sizeof json - (size_t)jn, ",\"projector_ms_per_image\":%.3f",
                       best * 1e3);
        am_aligned_free(out);
    }

    /* 4. video end to end. */
    if (video) {
        const int64_t nt = am_vision_n_tokens(m, frames);
        float *out = am_aligned_alloc((size_t)(nt * am_vision_out_dim(m)) * 4);
        am_vision_encoder *venc = NULL;
        if ((rc = am_vision_encoder_new(m, be, n_threads, frames, &venc))) die("encoder", rc);
        double best = 1e30, best_dec = 0;
        for (int r = 0; r < repeats; r++) {
            double t0 = now_s();
            void *data;
            size_t len;
            float *vpx = NULL;
            if ((rc = am_read_file_limited(video, (size_t)1 << 31, &data, &len)) ||
                (rc = am_vision_video_pixels(m, data, len, video, frames, n_threads, NULL, &vpx)))
                die("video", rc);
            double t1 = now_s();
            am_vision_item it = {vpx, frames, out};
            if ((rc = am_vision_encode(venc, &it, 1))) die("video encode", rc);
            double t = now_s() - t0;
            if (t < best) best = t, best_dec = t1 - t0;
            am_aligned_free(vpx);
            am_free(data);
        }
        printf("  video %s: %d frames in %.3f s end to end (decode+sample+preprocess %.3f s): %.2f "
               "frames/s\n",
               video, frames, best, best_dec, frames / best);
        jn += snprintf(
            json + jn, sizeof json - (size_t)jn,
            ",\"video\":{\"frames\":%d,\"s\":%.4f,\"decode_s\":%.4f,\"frames_per_s\":%.3f}", frames,
            best, best_dec, frames / best);
        am_vision_encoder_destroy(&venc);
        am_aligned_free(out);
    }
    snprintf(json + jn, sizeof json - (size_t)jn, "}");
    printf("json: %s\n", json);

    am_aligned_free(px);
    am_aligned_free(feats);
    am_vision_encoder_destroy(&enc);
    am_vision_model_destroy(&m);
    am_backend_destroy(&be);
    if (tmp[0] && !keep)
        rm_tree(tmp);
    else if (tmp[0])
        printf("  kept %s\n", tmp);
    return 0;
}
