/* tests/test_audio.c - the audio path: decoding, resampling, CLAP log-mel, HTSAT, batching.
 *
 * Golden fixtures come from tests/golden/audio/gen_audio_golden.py (HF transformers
 * ClapFeatureExtractor and ClapAudioModelWithProjection, espeak-ng/sox/ffmpeg-made
 * clips). Stated tolerances:
 *   log-mel of a 48 kHz WAV vs HF (float64 numpy): max abs 2e-3 dB
 *   log-mel of a 12 s chirp cut to 10 s vs HF: max abs 2e-3 dB
 *   log-mel of 16 kHz stereo (our mean + libsoxr vs numpy mean + sox's rate effect):
 *     mean abs 0.05 dB, max abs 2 dB over bins above -60 dB (resamplers differ ~1e-5)
 *   HTSAT + projection (f32) vs HF at a small config: max abs 1e-4
 *   HTSAT-tiny (real shape, mkencoders weights) end to end from the WAV vs HF: max abs 1e-4
 *   batched vs one-at-a-time encoding: identical
 * Bad audio (empty, text, truncated, NaN/Inf, zero samples, too many channels,
 * unsupported containers, limits, random mutations) must give an error naming
 * the file, never a crash (run under ASan+UBSan in CI).
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/audio.h"
#include "encoders/audio_file.h"
#include "encoders/htsat.h"
#include "encoders/image.h"
#include "encoders/melspec.h"
#include "encoders/mkencoders.h"
#include "encoders/nn_ops.h"
#include "test_util.h"

#define ENC_TEST_RNG_SEED 0x2545F4914F6CDD1Dull
#include "encoder_test_util.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOL_F32       1e-4
#define TOL_LOGMEL_DB 2e-3

static int load_audio(const char *rel, int32_t rate, am_audio *a) {
    char path[4096];
    int rc = am_audio_load(AM_SRC_PATH(rel, path), NULL, rate, a);
    CHECK_OK(rc);
    return rc;
}

/* ---- ops ------------------------------------------------------------------------------ */

static void test_ops_vs_reference(void) {
    /* Windowed attention with a bias per head and a mask per window: 6 windows of 16 tokens,
     * 3 masks (sequence b uses mask b % 3), 2 heads of 8. */
    const int64_t B = 6, T = 16, H = 2, D = 8, C = H * D, NM = 3;
    float *q = am_malloc(B * T * C * 4), *k = am_malloc(B * T * C * 4),
          *v = am_malloc(B * T * C * 4);
    float *bias = am_malloc(H * T * T * 4), *mask = am_malloc(NM * T * T * 4);
    float *o = am_calloc(B * T * C, 4), *r = am_calloc(B * T * C, 4);
    for (int64_t i = 0; i < B * T * C; i++)
        q[i] = frand(), k[i] = frand(), v[i] = frand();
    for (int64_t i = 0; i < H * T * T; i++)
        bias[i] = 2 * frand();
    for (int64_t i = 0; i < NM * T * T; i++)
        mask[i] = frand() > 0.3f ? 0.0f : -100.0f;
    for (int64_t i = 0; i < NM * T; i++)
        mask[i * T + i % T] = 0.0f; /* every row keeps a key */
    CHECK_OK(am_nn_attention_ex(&nn, o, C, q, C, k, v, C, B, T, T, (int)H, (int)D, 0.35f, bias,
                                mask, NM));
    am_nn_ref_attention_ex(r, C, q, C, k, v, C, B, T, T, (int)H, (int)D, 0.35f, bias, mask, NM);
    CHECK(max_abs_diff(o, r, B * T * C) < 2e-6);
    memset(o, 0, B * T * C * 4);
    CHECK_OK(am_nn_attention_short(&nn, o, C, q, C, k, v, C, B, T, T, (int)H, (int)D, 0.35f, bias,
                                   mask, NM));
    CHECK(max_abs_diff(o, r, B * T * C) < 2e-6);
    CHECK(am_nn_attention_short(&nn, o, C, q, C, k, v, C, 1, 300, 300, 1, 8, 1.0f, NULL, NULL, 0) ==
          AM_EINVAL);
    /* ReLU and the row permutations. */
    float x[64], y[64];
    for (int i = 0; i < 64; i++)
        x[i] = y[i] = frand();
    am_nn_bias_act(&nn, y, NULL, 4, 16, AM_ACT_RELU);
    int bad = 0;
    for (int i = 0; i < 64; i++)
        bad += y[i] != am_nn_ref_act(x[i], AM_ACT_RELU) || y[i] < 0;
    CHECK_EQ_INT(bad, 0);
    const int32_t perm[4] = {2, 0, 3, 1}, swap[2] = {1, 0};
    float g[64], acc[64] = {0};
    am_nn_gather_rows(&nn, g, x, swap, 2, 4, 16); /* blocks of 2 rows, each swapped */
    CHECK(memcmp(g, x + 16, 64) == 0 && memcmp(g + 16, x, 64) == 0 &&
          memcmp(g + 32, x + 48, 64) == 0);
    am_nn_gather_rows(&nn, g, x, perm, 4, 4, 16);
    am_nn_scatter_residual(&nn, acc, g, NULL, perm, 4, 4, 16);
    CHECK(memcmp(acc, x, sizeof x) == 0);
    am_free(q), am_free(k), am_free(v), am_free(bias), am_free(mask), am_free(o), am_free(r);
}

/* ---- log-mel vs HF ClapFeatureExtractor --------------------------------------------------- */

static double logmel_vs(const am_melspec *ms, const float *x, int64_t n, const float *ref,
                        int64_t step, int64_t frames_ref) {
    const int64_t T = am_melspec_frames(am_melspec_get_config(ms)), M = 64;
    float *mel = am_malloc((size_t)(T * M) * 4);
    CHECK_OK(am_melspec_run(ms, x, n, nn.tp, mel));
    double d = 0;
    for (int64_t i = 0; i < frames_ref; i++) {
        double di = max_abs_diff(mel + i * step * M, ref + i * M, M);
        d = di > d ? di : d;
    }
    am_free(mel);
    return d;
}

static void test_logmel_golden(void) {
    am_melspec_config cfg = am_melspec_clap_default();
    am_melspec *ms = NULL;
    CHECK_OK(am_melspec_new(&cfg, &ms));
    if (!ms) return;
    CHECK_EQ_INT(am_melspec_frames(&cfg), 1001);
    am_audio a, f;
    float *ref = read_f32("tests/golden/audio/logmel_speech48.f32", 1001 * 64);
    if (!load_audio("tests/golden/audio/speech48.wav", 48000, &a) && ref) {
        CHECK(a.src_rate == 48000 && a.src_channels == 1 && !strcmp(a.format, "wav"));
        double d = logmel_vs(ms, a.samples, a.n, ref, 1, 1001);
        printf("  log-mel, %.2f s of espeak-ng speech at 48 kHz (repeat-padded to 10 s): max abs "
               "diff %.3g dB\n",
               (double)a.n / 48000, d);
        CHECK(d <= TOL_LOGMEL_DB);
        /* FLAC is lossless: the same samples. */
        if (!load_audio("tests/golden/audio/speech48.flac", 48000, &f)) {
            CHECK(f.n == a.n && memcmp(f.samples, a.samples, (size_t)a.n * 4) == 0);
            am_audio_fini(&f);
        }
        /* Lossy codecs: the same speech (encoder delay and padding aside). */
        static const char *const lossy[] = {"tests/golden/audio/speech48.ogg",
                                            "tests/golden/audio/speech48.mp3"};
        for (int i = 0; i < 2; i++) {
            if (load_audio(lossy[i], 48000, &f)) continue;
            double ea = 0, ef = 0;
            for (int64_t k = 0; k < a.n; k++)
                ea += (double)a.samples[k] * a.samples[k];
            for (int64_t k = 0; k < f.n; k++)
                ef += (double)f.samples[k] * f.samples[k];
            printf("  %s: %lld samples (wav %lld), energy ratio %.3f\n", f.format, (long long)f.n,
                   (long long)a.n, ef / ea);
            CHECK(llabs(f.n - a.n) < 4800 && fabs(ef / ea - 1) < 0.15);
            am_audio_fini(&f);
        }
    }
    am_audio_fini(&a);
    am_free(ref);
    /* 16 kHz stereo: downmix (mean) + libsoxr to 48 kHz vs numpy mean + sox's rate effect. */
    ref = read_f32("tests/golden/audio/logmel_stereo16k.f32", 1001 * 64);
    if (!load_audio("tests/golden/audio/speech16k_stereo.flac", 48000, &a) && ref) {
        CHECK(a.src_rate == 16000 && a.src_channels == 2 && a.rate == 48000);
        CHECK_EQ_INT(a.n, a.src_frames * 3);
        float *mel = am_malloc(1001 * 64 * 4);
        CHECK_OK(am_melspec_run(ms, a.samples, a.n, nn.tp, mel));
        double sum = 0, mx = 0;
        int64_t cnt = 0;
        for (int64_t i = 0; i < 1001 * 64; i++) {
            const double d = fabs((double)mel[i] - ref[i]);
            sum += d;
            if (ref[i] > -60 && d > mx) mx = d;
            cnt++;
        }
        printf("  log-mel of 16 kHz stereo resampled to 48 kHz (libsoxr vs sox): mean abs diff "
               "%.3g dB, max %.3g dB above -60 dB\n",
               sum / cnt, mx);
        CHECK(sum / cnt <= 0.05 && mx <= 2.0);
        am_free(mel);
    }
    am_audio_fini(&a);
    am_free(ref);
    /* A 12 s chirp: the encoder keeps the first 10 s (frames 0, 7, 14, ... stored). */
    ref = read_f32("tests/golden/audio/logmel_chirp.f32", 143 * 64);
    const int64_t N = 12 * 48000;
    float *chirp = am_malloc((size_t)N * 4);
    for (int64_t i = 0; i < N; i++) {
        const double t = (double)i / 48000.0;
        chirp[i] = (float)(0.3 * sin(2 * M_PI * (200.0 * t + 0.5 * 300.0 * t * t)));
    }
    if (ref) {
        double d = logmel_vs(ms, chirp, N, ref, 7, 143);
        printf("  log-mel of a 12 s chirp cut to 10 s: max abs diff %.3g dB\n", d);
        CHECK(d <= TOL_LOGMEL_DB);
    }
    /* repeat / pad modes: a clip of exactly 10 s is used as is in every mode. */
    am_melspec_config c2 = cfg;
    c2.padding = AM_AUDIO_PAD_ZERO;
    am_melspec *ms2 = NULL;
    CHECK_OK(am_melspec_new(&c2, &ms2));
    if (ms2 && ref) CHECK(logmel_vs(ms2, chirp, 480000, ref, 7, 143) <= TOL_LOGMEL_DB);
    am_melspec_destroy(&ms2);
    CHECK(am_melspec_run(ms, chirp, 0, NULL, chirp) == AM_EINVAL);
    am_free(chirp);
    am_free(ref);
    am_melspec_destroy(&ms);
    /* Config checks name the field. */
    c2 = cfg;
    c2.fmax = 30000;
    CHECK(am_melspec_new(&c2, &ms2) == AM_EINVAL && strstr(am_err_msg(), "frequency_max"));
    c2 = cfg;
    c2.n_fft = 1023;
    CHECK(am_melspec_new(&c2, &ms2) == AM_EINVAL && strstr(am_err_msg(), "fft_window_size"));
}

/* ---- resampling -------------------------------------------------------------------------- */

static void test_resample(void) {
    /* A 1 kHz sine at 16 kHz -> 48 kHz keeps its frequency and amplitude (passband of SOXR_HQ). */
    const int64_t n = 16000;
    float *x = am_malloc(n * 4), *y = NULL;
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(0.5 * sin(2 * M_PI * 1000.0 * i / 16000.0));
    int64_t ny = 0;
    CHECK_OK(am_audio_resample(x, n, 16000, 48000, &y, &ny));
    CHECK_EQ_INT(ny, 48000);
    double err = 0;
    for (int64_t i = 2000; y && i < 46000; i++) {
        double d = fabs(y[i] - 0.5 * sin(2 * M_PI * 1000.0 * i / 48000.0));
        err = d > err ? d : err;
    }
    printf("  1 kHz sine 16 kHz -> 48 kHz: max deviation %.3g (amplitude 0.5)\n", err);
    CHECK(err < 1e-3);
    am_aligned_free(y);
    am_audio a;
    CHECK_OK(am_audio_from_f32(x, n, 16000, "request", NULL, 48000, &a));
    CHECK(a.n == 48000 && a.rate == 48000 && a.src_rate == 16000);
    am_audio_fini(&a);
    am_free(x);
}

/* ---- HTSAT vs HF ClapAudioModelWithProjection ------------------------------------------ */

static const am_htsat_config small_cfg = {64, 16,   4,     8,           3, {2, 2, 2}, {1, 2, 4},
                                          4,  4.0f, 1e-5f, AM_ACT_GELU, 1, 24,        AM_ACT_RELU};

static void test_htsat_small_golden(void) {
    char path[4096];
    am_ckpt *ck = NULL;
    am_htsat *m = NULL;
    CHECK_OK(
        am_ckpt_open(AM_SRC_PATH("tests/golden/audio/htsat_small/model.safetensors", path), &ck));
    if (!ck) return;
    CHECK_OK(
        am_htsat_load(ck, "audio_model.audio_encoder.", ck, "audio_projection.", &small_cfg, &m));
    float *f50 = read_f32("tests/golden/audio/htsat_small/feats50.f32", 2 * 50 * 16);
    float *f256 = read_f32("tests/golden/audio/htsat_small/feats256.f32", 256 * 16);
    float *p50 = read_f32("tests/golden/audio/htsat_small/pooled50.f32", 2 * 32);
    float *e50 = read_f32("tests/golden/audio/htsat_small/embeds50.f32", 2 * 24);
    float *e256 = read_f32("tests/golden/audio/htsat_small/embeds256.f32", 24);
    float *img = am_aligned_alloc(2 * 64 * 64 * 4);
    float *scr = am_aligned_alloc(am_htsat_scratch_floats(&small_cfg, 2) * 4);
    float pooled[64], emb[48], one[24];
    if (m && f50 && f256 && p50 && e50 && e256) {
        CHECK(m->stages[0].blocks[1].shift == 2 && m->stages[2].blocks[1].shift == 0);
        CHECK_OK(am_htsat_prepare(m, f50, 50, img));
        CHECK_OK(am_htsat_prepare(m, f50 + 50 * 16, 50, img + 64 * 64));
        CHECK_OK(am_htsat_forward(m, &nn, img, 2, pooled, emb, scr));
        double dp = max_abs_diff(pooled, p50, 64), de = max_abs_diff(emb, e50, 48);
        printf("  HTSAT (3 stages, shifted windows) + projection, 50 frames resized to 256: pooled "
               "max abs diff %.3g, embeds %.3g\n",
               dp, de);
        CHECK(dp <= TOL_F32 && de <= TOL_F32);
        /* The second clip alone gives the same bits as in the batch. */
        CHECK_OK(am_htsat_forward(m, &nn, img + 64 * 64, 1, NULL, one, scr));
        CHECK(memcmp(one, emb + 24, sizeof one) == 0);
        CHECK_OK(am_htsat_prepare(m, f256, 256, img));
        CHECK_OK(am_htsat_forward(m, &nn, img, 1, NULL, one, scr));
        de = max_abs_diff(one, e256, 24);
        printf("  256 frames (no resize): embeds max abs diff %.3g\n", de);
        CHECK(de <= TOL_F32);
        CHECK(am_htsat_prepare(m, f256, 257, img) == AM_ERANGE);
    }
    /* A wrong config names the file and tensor. */
    am_htsat_config wrong = small_cfg;
    wrong.mlp_ratio = 2.0f;
    am_htsat *m2 = NULL;
    CHECK(am_htsat_load(ck, "audio_model.audio_encoder.", ck, "audio_projection.", &wrong, &m2) ==
          AM_ESHAPE);
    CHECK(strstr(am_err_msg(), "intermediate.dense.weight") &&
          strstr(am_err_msg(), "model.safetensors"));
    wrong = small_cfg;
    wrong.window = 3;
    CHECK(am_htsat_config_check(&wrong) == AM_EINVAL && strstr(am_err_msg(), "window_size"));
    CHECK(am_htsat_load(ck, "nope.", ck, "audio_projection.", &small_cfg, &m2) == AM_ENOTFOUND);
    am_free(f50), am_free(f256), am_free(p50), am_free(e50), am_free(e256);
    am_aligned_free(img), am_aligned_free(scr);
    am_htsat_destroy(&m);
    am_ckpt_destroy(&ck);
}

/* ---- AnyMAL directories ------------------------------------------------------------------ */

static char tmpdir[256];

static void rm_dir(void) { enc_test_dir_remove(tmpdir); }

static int make_dir(const char *audio_shape, uint64_t seed, const char *sub) {
    am_mkencoders_opts o = {.dtype = AM_DTYPE_F32,
                            .seed = seed,
                            .llm_dim = 64,
                            .llm_path = ".",
                            .audio_shape = audio_shape};
    return enc_test_dir_make(tmpdir, sizeof tmpdir, "audio", sub, &o);
}

/* The real HTSAT-tiny shape with the weights mkencoders writes (seed 11), end to end from
 * the WAV file, against HF on HF's log-mel of the same file. */
static void test_htsat_tiny_golden(void) {
    if (make_dir("htsat-tiny", 11, "tiny")) return;
    am_audio_model *m = NULL;
    am_audio_encoder *e = NULL;
    am_audio a;
    float *ref = read_f32("tests/golden/audio/htsat_tiny_embed.f32", 512);
    float emb[512];
    CHECK_OK(am_audio_model_load(tmpdir, &m));
    if (m && ref && !load_audio("tests/golden/audio/speech48.wav", am_audio_sample_rate(m), &a)) {
        CHECK_EQ_INT(am_audio_embed_dim(m), 512);
        CHECK_EQ_INT(am_htsat_out_width(&m->enc_cfg), 768);
        CHECK_OK(am_audio_encoder_new(m, be, 2, 1, &e));
        am_audio_item it = {a.samples, a.n, NULL};
        if (e) {
            CHECK_OK(am_audio_embed(e, &it, 1, emb, NULL));
            double d = max_abs_diff(emb, ref, 512);
            printf("  HTSAT-tiny (CLAP shape, %.0f GFLOP) + projection from the WAV: max abs diff "
                   "%.3g vs HF\n",
                   am_htsat_flops(&m->enc_cfg) / 1e9, d);
            CHECK(d <= TOL_F32);
        }
        am_audio_fini(&a);
    }
    am_free(ref);
    am_audio_encoder_destroy(&e);
    am_audio_model_destroy(&m);
    rm_dir();
}

static void test_batched_encode(void) {
    if (make_dir("tiny", 3, "batch")) return;
    am_audio_model *m = NULL;
    am_audio_encoder *eb = NULL, *e1 = NULL;
    CHECK_OK(am_audio_model_load(tmpdir, &m));
    if (!m) {
        rm_dir();
        return;
    }
    CHECK_EQ_INT(am_audio_n_tokens(m), 4);
    CHECK_EQ_INT(am_audio_out_dim(m), 64);
    CHECK_OK(am_audio_encoder_new(m, be, 2, 3, &eb)); /* chunks of 3: a chunk spans clips */
    CHECK_OK(am_audio_encoder_new(m, be, 2, 1, &e1));
    static const char *const files[] = {
        "tests/golden/audio/speech48.wav", "tests/golden/audio/speech16k_stereo.flac",
        "tests/golden/audio/speech48.ogg", "tests/golden/audio/speech48.mp3"};
    am_audio a[5] = {0};
    am_audio_item items[5];
    float outb[5][4 * 64] = {{0}}, out1[4 * 64];
    for (int i = 0; i < 4; i++) {
        load_audio(files[i], 48000, &a[i]);
        items[i] = (am_audio_item){a[i].samples, a[i].n, outb[i]};
    }
    /* An 11 s request of raw samples (cut to 10 s). */
    float *longx = am_malloc(11 * 48000 * 4);
    for (int64_t i = 0; i < 11 * 48000; i++)
        longx[i] = 0.2f * frand();
    CHECK_OK(am_audio_from_f32(longx, 11 * 48000, 48000, "request", NULL, 48000, &a[4]));
    items[4] = (am_audio_item){a[4].samples, a[4].n, outb[4]};
    int ok = eb && e1 && a[0].samples && a[1].samples && a[2].samples && a[3].samples;
    if (ok) {
        CHECK_OK(am_audio_encode(eb, items, 5));
        int same = 1;
        for (int i = 0; i < 5; i++) {
            am_audio_item one = items[i];
            one.out = out1;
            CHECK_OK(am_audio_encode(e1, &one, 1));
            if (memcmp(out1, outb[i], sizeof out1)) same = 0;
        }
        CHECK(same);
        printf("  5 clips (wav, 16 kHz stereo flac, ogg, mp3, 11 s raw) batched in chunks of 3 == "
               "one at a time: %s\n",
               same ? "identical" : "DIFFERENT");
    }
    for (int i = 0; i < 5; i++)
        am_audio_fini(&a[i]);
    am_free(longx);
    am_audio_encoder_destroy(&eb);
    am_audio_encoder_destroy(&e1);
    am_audio_model_destroy(&m);
    rm_dir();
}

static void write_file(const char *p, const char *text) {
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static void test_model_dir_errors(void) {
    am_audio_model *m = NULL;
    CHECK(am_audio_model_load("/nonexistent-dir", &m) == AM_ENOTFOUND);
    CHECK(strstr(am_err_msg(), "/nonexistent-dir") != NULL);
    if (make_dir("tiny", 1, "err")) return;
    char p[512];
    snprintf(p, sizeof p, "%s/anymal.json", tmpdir);
    write_file(p, "{\"llm\": {\"dim\": 64}, \"vision\": {}}");
    CHECK(am_audio_model_load(tmpdir, &m) == AM_ENOTFOUND);
    CHECK(strstr(am_err_msg(), "no \"audio\" object") && strstr(am_err_msg(), "anymal.json"));
    write_file(p,
               "{\"llm\": {\"dim\": 64}, \"audio\": {\"enable_fusion\": true, \"projector\": {}}}");
    CHECK(am_audio_model_load(tmpdir, &m) == AM_EUNSUPPORTED);
    CHECK(strstr(am_err_msg(), "enable_fusion"));
    write_file(p, "{\"llm\": {\"dim\": 64}, \"audio\": {\"depths\": [2, 2], \"projector\": {}}}");
    CHECK(am_audio_model_load(tmpdir, &m) == AM_EINVAL);
    CHECK(strstr(am_err_msg(), "num_attention_heads"));
    write_file(p, "{\"llm\": {\"dim\": 64}, \"audio\": {\"preprocess\": {\"padding\": \"wrap\"}, "
                  "\"projector\": {}}}");
    CHECK(am_audio_model_load(tmpdir, &m) == AM_EINVAL && strstr(am_err_msg(), "wrap"));
    /* The tiny files with the default (HTSAT-tiny) shape: a tensor of the wrong shape. */
    write_file(p, "{\"llm\": {\"dim\": 64}, \"audio\": {\"projector\": {\"type\": \"linear\", "
                  "\"weights\": \"audio_projector.safetensors\", \"tokens_per_row\": 4}}}");
    CHECK(am_audio_model_load(tmpdir, &m) == AM_ESHAPE);
    CHECK(strstr(am_err_msg(), "audio_encoder.safetensors") &&
          strstr(am_err_msg(), "patch_embed.proj.weight"));
    write_file(p, "{not json");
    CHECK(am_audio_model_load(tmpdir, &m) == AM_EFORMAT);
    CHECK(m == NULL);
    rm_dir();
}

/* ---- bad audio ----------------------------------------------------------------------------- */

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

/* A canonical WAV header + data: fmt 1 (PCM) or 3 (float), `bits`, `ch` channels, 48 kHz. */
static size_t wav(uint8_t *b, int fmt, int bits, int ch, const void *data, uint32_t bytes) {
    memcpy(b, "RIFF", 4);
    put32le(b + 4, 36 + bytes);
    memcpy(b + 8, "WAVEfmt ", 8);
    put32le(b + 16, 16);
    put16(b + 20, (uint32_t)fmt);
    put16(b + 22, (uint32_t)ch);
    put32le(b + 24, 48000);
    put32le(b + 28, 48000u * (uint32_t)(ch * bits / 8));
    put16(b + 32, (uint32_t)(ch * bits / 8));
    put16(b + 34, (uint32_t)bits);
    memcpy(b + 36, "data", 4);
    put32le(b + 40, bytes);
    if (bytes) memcpy(b + 44, data, bytes);
    return 44 + bytes;
}

static int expect_error(const void *d, size_t n, const char *name, const am_audio_limits *lim,
                        int want, const char *text) {
    am_audio a;
    int rc = am_audio_decode(d, n, name, lim, 48000, &a);
    int ok = rc != 0 && (want == 0 || rc == want) && strstr(am_err_msg(), name) &&
             (!text || strstr(am_err_msg(), text)) && a.samples == NULL;
    if (!ok)
        fprintf(stderr, "  %s: rc %d (want %d), message '%s' (want '%s')\n", name, rc, want,
                am_err_msg(), text ? text : "");
    am_audio_fini(&a);
    return ok;
}

static void test_bad_audio(void) {
    char path[4096];
    uint8_t *b = am_malloc(1 << 20);
    CHECK(expect_error("", 0, "empty.wav", NULL, AM_EFORMAT, "empty"));
    CHECK(expect_error("hello, this is text", 19, "notes.wav", NULL, AM_EFORMAT,
                       "not a readable audio file"));
    float fl[16];
    for (int i = 0; i < 16; i++)
        fl[i] = 0.1f * (float)i;
    fl[5] = NAN;
    size_t n = wav(b, 3, 32, 1, fl, sizeof fl);
    CHECK(expect_error(b, n, "nan.wav", NULL, AM_EFORMAT, "sample 5 of channel 0 is NaN"));
    fl[5] = INFINITY;
    n = wav(b, 3, 32, 1, fl, sizeof fl);
    CHECK(expect_error(b, n, "inf.wav", NULL, AM_EFORMAT, "infinite"));
    n = wav(b, 1, 16, 1, NULL, 0);
    CHECK(expect_error(b, n, "zero.wav", NULL, AM_EFORMAT, "no audio samples"));
    int16_t pcm[200] = {0};
    n = wav(b, 1, 16, 100, pcm, sizeof pcm);
    CHECK(expect_error(b, n, "many.wav", NULL, 0, "100 channels"));
    /* An AU file: libsndfile reads it, we do not accept it. */
    memcpy(b, ".snd", 4);
    const uint32_t au[5] = {24, 400, 3, 48000, 1}; /* offset, size, 16-bit PCM, rate, channels */
    for (int i = 0; i < 5; i++)
        b[4 + 4 * i] = (uint8_t)(au[i] >> 24), b[5 + 4 * i] = (uint8_t)(au[i] >> 16),
                  b[6 + 4 * i] = (uint8_t)(au[i] >> 8), b[7 + 4 * i] = (uint8_t)au[i];
    memset(b + 24, 0, 400);
    CHECK(expect_error(b, 424, "sound.au", NULL, AM_EUNSUPPORTED, "not accepted"));
    /* Requests of raw samples. */
    am_audio a;
    CHECK(am_audio_from_f32(fl, 16, 48000, "req", NULL, 48000, &a) == AM_EFORMAT &&
          strstr(am_err_msg(), "req: sample 5 is infinite"));
    CHECK(am_audio_from_f32(fl, 0, 48000, "req", NULL, 48000, &a) == AM_EFORMAT);
    CHECK(am_audio_from_f32(fl, 4, 12, "req", NULL, 48000, &a) == AM_ERANGE);
    /* Truncations, limits and mutations of every real file. */
    static const char *const files[] = {"speech48.wav", "speech48.flac", "speech48.ogg",
                                        "speech48.mp3", "speech16k_stereo.flac"};
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/golden/audio/%s", files[fi]);
        void *d;
        size_t len;
        CHECK_OK(am_read_file_limited(AM_SRC_PATH(rel, path), 1 << 24, &d, &len));
        if (!d) continue;
        const size_t cuts[] = {len / 4, len / 2, len * 3 / 4, len - 100};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
            CHECK(expect_error(d, cuts[i], files[fi], NULL, AM_EFORMAT, NULL));
        am_audio_limits lim = am_audio_default_limits();
        lim.max_bytes = len - 1;
        CHECK(expect_error(d, len, files[fi], &lim, AM_ERANGE, "bytes"));
        lim = am_audio_default_limits();
        lim.max_seconds = 1.0;
        CHECK(expect_error(d, len, files[fi], &lim, AM_ERANGE, "1.0 s"));
        uint8_t *mu = am_malloc(len);
        int n_ok = 0, n_err = 0;
        const int n_mut = 25 * fuzz_scale();
        for (int it = 0; it < n_mut; it++) {
            memcpy(mu, d, len);
            for (int k = 0; k < 4; k++)
                mu[(size_t)((frand() + 1) * 0.5 * (double)len) % len] =
                    (uint8_t)((frand() + 1) * 128);
            am_audio r;
            int rc = am_audio_decode(mu, len, files[fi], NULL, 48000, &r);
            if (rc == 0) {
                n_ok++;
                CHECK(r.n > 0 && r.samples);
            } else {
                n_err++;
                CHECK(strstr(am_err_msg(), files[fi]) != NULL);
            }
            am_audio_fini(&r);
        }
        printf("  %s: 4 truncations rejected; %d mutations -> %d decoded, %d rejected\n", files[fi],
               n_mut, n_ok, n_err);
        am_free(mu);
        am_free(d);
    }
    /* An MP3 without a Xing/Info header declares no length: it decodes, and a cut copy is
     * just a shorter stream (not an error). */
    void *mp;
    size_t mn;
    CHECK_OK(am_read_file_limited(AM_SRC_PATH("tests/golden/audio/speech48.mp3", path), 1 << 24,
                                  &mp, &mn));
    if (mp) {
        uint8_t *m8 = mp;
        int tags = 0;
        for (size_t i = 0; i + 4 <= mn && i < 4096; i++)
            if (!memcmp(m8 + i, "Xing", 4) || !memcmp(m8 + i, "Info", 4))
                memcpy(m8 + i, "Zzzz", 4), tags++;
        CHECK_EQ_INT(tags, 1);
        am_audio full, cut;
        CHECK_OK(am_audio_decode(mp, mn, "untagged.mp3", NULL, 48000, &full));
        CHECK_OK(am_audio_decode(mp, mn / 2, "untagged.mp3", NULL, 48000, &cut));
        CHECK(full.n > 80000 && cut.n > 0 && cut.n < full.n);
        am_audio_fini(&full), am_audio_fini(&cut);
        am_free(mp);
    }
    CHECK(am_audio_load("/nonexistent/x.wav", NULL, 48000, &a) == AM_EIO &&
          strstr(am_err_msg(), "/nonexistent/x.wav"));
    am_free(b);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_ops_vs_reference), AM_TEST(test_logmel_golden),
             AM_TEST(test_resample), AM_TEST(test_htsat_small_golden),
             AM_TEST(test_htsat_tiny_golden), AM_TEST(test_batched_encode),
             AM_TEST(test_model_dir_errors), AM_TEST(test_bad_audio), AM_TEST(teardown))
