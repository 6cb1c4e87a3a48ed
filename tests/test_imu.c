/* tests/test_imu.c - the IMU path: CSV/.npy/raw input, resampling to 200 Hz, windows,
 * IMU2CLIP, batching.
 *
 * Golden fixtures come from tests/golden/imu/gen_imu_golden.py (a PyTorch
 * MW2StackRNNPooling written from facebookresearch/imu2clip's lib/imu_models.py,
 * and torchaudio's resample algorithm). Stated tolerances:
 *   IMU2CLIP (f32) vs PyTorch, small config and the real shape end to end from the CSV: 1e-4
 *   the GRU over the channel axis (the reference's quirk): matched; the time-axis variant differs
 *   resampling 100 / 50 / 333 Hz -> 200 Hz vs the torchaudio algorithm: max abs 2e-5 (signals up
 *     to 11 in magnitude: ~2e-6 relative; the kernel is f32 there, f64 here)
 *   batched vs one-at-a-time encoding: identical
 * Bad inputs (wrong column counts, non-numbers, NaN/Inf, too few samples,
 * timestamps not increasing, bad .npy headers, truncated arrays, limits,
 * random mutations) must give an error naming the file, never a crash.
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/image.h"
#include "encoders/imu.h"
#include "encoders/imu2clip.h"
#include "encoders/imu_input.h"
#include "encoders/mkencoders.h"
#include "encoders/nn_ops.h"
#include "test_util.h"

#define ENC_TEST_RNG_SEED 0x9E3779B97F4A7C15ull
#include "encoder_test_util.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOL_F32      1e-4
#define TOL_RESAMPLE 2e-5

/* ---- ops ------------------------------------------------------------------------------ */

static void test_ops_vs_reference(void) {
    const int64_t B = 2, T = 37, C = 12;
    float *x = am_malloc(B * T * C * 4), *o = am_malloc(B * T * C * 4),
          *r = am_malloc(B * T * C * 4);
    float w[12], b[12];
    for (int64_t i = 0; i < B * T * C; i++)
        x[i] = 3 * frand() + (float)(i % C);
    for (int i = 0; i < C; i++)
        w[i] = 1 + 0.1f * frand(), b[i] = 0.1f * frand();
    am_nn_groupnorm(&nn, o, x, w, b, B, T, C, 4, 1e-5f);
    am_nn_ref_groupnorm(r, x, w, b, B, T, C, 4, 1e-5f);
    CHECK(max_abs_diff(o, r, B * T * C) < 2e-6);
    /* Conv1d (dilation 2, k 3) through im2col + a plain product, against direct loops. */
    const int K = 3, DIL = 2, CO = 5;
    const int64_t TO = T - DIL * (K - 1);
    float *cols = am_malloc(B * TO * C * K * 4), wt[5 * 12 * 3];
    for (int i = 0; i < CO * C * K; i++)
        wt[i] = frand();
    am_nn_im2col_1d(&nn, x, cols, B, T, C, K, DIL);
    double md = 0;
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t t = 0; t < TO; t++)
            for (int co = 0; co < CO; co++) {
                double direct = 0, viacols = 0;
                for (int64_t c = 0; c < C; c++)
                    for (int j = 0; j < K; j++) {
                        direct +=
                            (double)wt[(co * C + c) * K + j] * x[(bi * T + t + j * DIL) * C + c];
                        viacols += (double)wt[(co * C + c) * K + j] *
                                   cols[(bi * TO + t) * C * K + c * K + j];
                    }
                md = fabs(direct - viacols) > md ? fabs(direct - viacols) : md;
            }
    CHECK(md == 0);
    /* MaxPool1d(3) over time. */
    am_nn_maxpool_time(&nn, o, x, B, T, C, 3);
    int bad = 0;
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t i = 0; i < T / 3; i++)
            for (int64_t c = 0; c < C; c++) {
                float m = x[(bi * T + 3 * i) * C + c];
                for (int j = 1; j < 3; j++)
                    m = fmaxf(m, x[(bi * T + 3 * i + j) * C + c]);
                bad += o[(bi * (T / 3) + i) * C + c] != m;
            }
    CHECK_EQ_INT(bad, 0);
    /* GRU: gates with plain products against the double reference. */
    const int64_t S = 7, I = 5, H = 9;
    float xs[7 * 5], wih[27 * 5], whh[27 * 9], bih[27], bhh[27], h[9] = {0}, hr[9];
    for (int i = 0; i < S * I; i++)
        xs[i] = frand();
    for (int i = 0; i < 27 * 5; i++)
        wih[i] = frand();
    for (int i = 0; i < 27 * 9; i++)
        whh[i] = 0.5f * frand();
    for (int i = 0; i < 27; i++)
        bih[i] = 0.1f * frand(), bhh[i] = 0.1f * frand();
    for (int64_t s = 0; s < S; s++) {
        float gi[27], gh[27];
        for (int q = 0; q < 27; q++) {
            double a = bih[q], u = bhh[q];
            for (int k = 0; k < I; k++)
                a += (double)wih[q * I + k] * xs[s * I + k];
            for (int k = 0; k < H; k++)
                u += (double)whh[q * H + k] * h[k];
            gi[q] = (float)a, gh[q] = (float)u;
        }
        am_nn_gru_gates(h, gi, gh, H);
    }
    am_nn_ref_gru(hr, xs, wih, whh, bih, bhh, S, I, H);
    CHECK(max_abs_diff(h, hr, H) < 1e-5);
    am_free(x), am_free(o), am_free(r), am_free(cols);
}

/* ---- IMU2CLIP vs PyTorch ------------------------------------------------------------------ */

static void test_imu2clip_small_golden(void) {
    char path[4096];
    am_ckpt *ck = NULL;
    am_imu2clip *m = NULL;
    CHECK_OK(am_ckpt_open(AM_SRC_PATH("tests/golden/imu/small/model.safetensors", path), &ck));
    if (!ck) return;
    am_imu2clip_config cfg;
    am_imu2clip_shape("imu2clip", &cfg);
    cfg.hidden = 48;
    CHECK_OK(am_imu2clip_load(ck, "", &cfg, &m));
    float *win = read_f32("tests/golden/imu/small/windows.f32", 3 * 6 * 1000);
    float *ref = read_f32("tests/golden/imu/small/out.f32", 3 * 48);
    float *reft = read_f32("tests/golden/imu/small/out_timeaxis.f32", 3 * 48);
    float out[3 * 48], one[48];
    float *scr = am_aligned_alloc(am_imu2clip_scratch_floats(&cfg, 3) * 4);
    if (m && win && ref && reft) {
        CHECK_EQ_INT(am_imu2clip_len(&cfg, 0), 327);
        CHECK_EQ_INT(am_imu2clip_len(&cfg, 1), 106);
        CHECK_EQ_INT(am_imu2clip_len(&cfg, 2), 32);
        CHECK_OK(am_imu2clip_forward(m, &nn, win, 3, out, scr));
        double d = max_abs_diff(out, ref, 3 * 48), dt = max_abs_diff(out, reft, 3 * 48);
        printf("  MW2StackRNNPooling (D 32, H 48), 3 windows: max abs diff %.3g; vs a GRU over "
               "time instead of channels: %.3g\n",
               d, dt);
        CHECK(d <= TOL_F32);
        CHECK(dt > 1e-2); /* the quirk is reproduced, not the "natural" reading */
        CHECK_OK(am_imu2clip_forward(m, &nn, win + 6000, 1, one, scr));
        CHECK(memcmp(one, out + 48, sizeof one) == 0); /* batched == alone */
    }
    am_imu2clip_config wrong = cfg;
    wrong.hidden = 64;
    am_imu2clip *m2 = NULL;
    CHECK(am_imu2clip_load(ck, "", &wrong, &m2) == AM_ESHAPE);
    CHECK(strstr(am_err_msg(), "net.5.weight_ih_l0") && strstr(am_err_msg(), "model.safetensors"));
    wrong = cfg;
    wrong.window = 900;
    CHECK(am_imu2clip_config_check(&wrong) == AM_EINVAL && strstr(am_err_msg(), "input_dim"));
    am_free(win), am_free(ref), am_free(reft), am_aligned_free(scr);
    am_imu2clip_destroy(&m);
    am_ckpt_destroy(&ck);
}

/* ---- input and resampling vs the torchaudio algorithm -------------------------------------- */

static void test_imu_input_golden(void) {
    char path[4096];
    static const struct {
        const char *file, *ref;
        double rate, time_scale;
        int64_t n_ref;
        double src_rate;
    } cases[] = {
        {"tests/golden/imu/imu100.csv", "tests/golden/imu/imu100_200hz.f32", 0, 1e-3, 1460, 100},
        {"tests/golden/imu/imu50.npy", "tests/golden/imu/imu50_200hz.f32", 50, 0, 1040, 50},
        {"tests/golden/imu/imu333.npy", "tests/golden/imu/imu333_200hz.f32", 0, 1, 600, 333},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        void *d;
        size_t len;
        CHECK_OK(am_read_file_limited(AM_SRC_PATH(cases[i].file, path), 1 << 24, &d, &len));
        float *ref = read_f32(cases[i].ref, cases[i].n_ref * 6);
        if (!d || !ref) {
            am_free(d), am_free(ref);
            continue;
        }
        am_imu_opts o = am_imu_default_opts();
        if (cases[i].rate > 0) o.rate_hz = cases[i].rate;
        if (cases[i].time_scale > 0) o.time_scale = cases[i].time_scale;
        am_imu_signal raw, rs;
        CHECK_OK(am_imu_parse(d, len, cases[i].file, AM_IMU_AUTO, &o, &raw));
        CHECK_NEAR(raw.rate_hz, cases[i].src_rate, 1e-6);
        CHECK_OK(am_imu_resample(&raw, cases[i].file, &rs));
        CHECK_EQ_INT(rs.n, cases[i].n_ref);
        if (rs.n == cases[i].n_ref) {
            double md = max_abs_diff(rs.x, ref, rs.n * 6);
            printf("  %s (%.0f Hz) -> 200 Hz: %lld samples, max abs diff %.3g vs torchaudio's "
                   "algorithm\n",
                   strrchr(cases[i].file, '/') + 1, raw.rate_hz, (long long)rs.n, md);
            CHECK(md <= TOL_RESAMPLE);
        }
        am_imu_windows w;
        CHECK_OK(am_imu_prepare(d, len, cases[i].file, AM_IMU_AUTO, &o, &w));
        CHECK_EQ_INT(w.n_windows, (cases[i].n_ref + 999) / 1000);
        if (w.x && rs.x) { /* channel-major windows, zero-padded after the last sample */
            int bad = 0;
            for (int64_t t = 0; t < (int64_t)w.n_windows * 1000; t++)
                for (int c = 0; c < 6; c++) {
                    float want = t < rs.n ? rs.x[t * 6 + c] : 0.0f;
                    bad += w.x[((t / 1000) * 6 + c) * 1000 + t % 1000] != want;
                }
            CHECK_EQ_INT(bad, 0);
        }
        am_imu_windows_fini(&w);
        am_imu_signal_fini(&raw);
        am_imu_signal_fini(&rs);
        am_free(d), am_free(ref);
    }
    /* A raw request already at 200 Hz is used as is. */
    float x[20 * 6];
    for (int i = 0; i < 120; i++)
        x[i] = frand();
    am_imu_signal s, r;
    CHECK_OK(am_imu_from_f32(x, 20, 200, "req", &s));
    CHECK_OK(am_imu_resample(&s, "req", &r));
    CHECK(r.n == 20 && memcmp(r.x, x, sizeof x) == 0);
    am_imu_signal_fini(&s), am_imu_signal_fini(&r);
}

/* ---- AnyMAL directories ---------------------------------------------------------------------- */

static char tmpdir[256];

static void rm_dir(void) { enc_test_dir_remove(tmpdir); }

static int make_dir(const char *shape, uint64_t seed, const char *sub) {
    am_mkencoders_opts o = {
        .dtype = AM_DTYPE_F32, .seed = seed, .llm_dim = 64, .llm_path = ".", .imu_shape = shape};
    return enc_test_dir_make(tmpdir, sizeof tmpdir, "imu", sub, &o);
}

/* The real IMU2CLIP shape with mkencoders' weights (seed 11), end to end from the 100 Hz CSV. */
static void test_imu2clip_real_golden(void) {
    char path[4096];
    if (make_dir("imu2clip", 11, "real")) return;
    am_imu_model *m = NULL;
    am_imu_encoder *e = NULL;
    float *ref = read_f32("tests/golden/imu/imu2clip_real_out.f32", 2 * 512);
    CHECK_OK(am_imu_model_load(tmpdir, &m));
    am_imu_opts o = am_imu_default_opts();
    o.time_scale = 1e-3;
    am_imu_windows w;
    CHECK_OK(am_imu_load(AM_SRC_PATH("tests/golden/imu/imu100.csv", path), AM_IMU_AUTO, &o, &w));
    if (m && ref && w.x) {
        CHECK_EQ_INT(am_imu_embed_dim(m), 512);
        CHECK_EQ_INT(w.n_windows, 2);
        CHECK_OK(am_imu_encoder_new(m, be, 2, 0, &e));
        float emb[2 * 512];
        am_imu_item it = {w.x, w.n_windows, NULL};
        if (e) {
            CHECK_OK(am_imu_embed(e, &it, 1, emb));
            double d = max_abs_diff(emb, ref, 2 * 512);
            printf("  IMU2CLIP (D 32, H 512, %.0f MFLOP per window) from the CSV: max abs diff "
                   "%.3g vs PyTorch\n",
                   am_imu2clip_flops(&m->enc_cfg) / 1e6, d);
            CHECK(d <= TOL_F32);
        }
    }
    am_imu_windows_fini(&w);
    am_free(ref);
    am_imu_encoder_destroy(&e);
    am_imu_model_destroy(&m);
    rm_dir();
}

static void test_batched_encode(void) {
    if (make_dir("tiny", 5, "batch")) return;
    am_imu_model *m = NULL;
    am_imu_encoder *eb = NULL, *e1 = NULL;
    CHECK_OK(am_imu_model_load(tmpdir, &m));
    if (!m) {
        rm_dir();
        return;
    }
    const int64_t tok = am_imu_tokens_per_window(m), D = am_imu_out_dim(m);
    CHECK_EQ_INT(tok, 4);
    CHECK_OK(am_imu_encoder_new(m, be, 2, 3, &eb)); /* a chunk of 3 windows spans requests */
    CHECK_OK(am_imu_encoder_new(m, be, 2, 1, &e1));
    const int32_t nw[4] = {1, 2, 1, 3};
    float *win = am_malloc(7 * 6000 * 4);
    for (int i = 0; i < 7 * 6000; i++)
        win[i] = 2 * frand();
    float *outb[4], *out1 = am_malloc(3 * tok * D * 4);
    am_imu_item items[4];
    int64_t off = 0;
    for (int i = 0; i < 4; i++) {
        outb[i] = am_malloc((size_t)(nw[i] * tok * D) * 4);
        items[i] = (am_imu_item){win + off * 6000, nw[i], outb[i]};
        off += nw[i];
    }
    if (eb && e1) {
        CHECK_OK(am_imu_encode(eb, items, 4));
        int same = 1;
        for (int i = 0; i < 4; i++) {
            am_imu_item one = items[i];
            one.out = out1;
            CHECK_OK(am_imu_encode(e1, &one, 1));
            if (memcmp(out1, outb[i], (size_t)(nw[i] * tok * D) * 4)) same = 0;
        }
        CHECK(same);
        printf("  4 requests of 1, 2, 1, 3 windows batched in chunks of 3 == one at a time: %s\n",
               same ? "identical" : "DIFFERENT");
    }
    for (int i = 0; i < 4; i++)
        am_free(outb[i]);
    am_free(out1), am_free(win);
    am_imu_encoder_destroy(&eb);
    am_imu_encoder_destroy(&e1);
    am_imu_model_destroy(&m);
    /* Directory errors. */
    char p[512];
    snprintf(p, sizeof p, "%s/anymal.json", tmpdir);
    FILE *f = fopen(p, "w");
    fputs("{\"llm\": {\"dim\": 64}, \"imu\": {\"input_dim\": 16, \"projector\": {}}}", f);
    fclose(f);
    CHECK(am_imu_model_load(tmpdir, &m) == AM_EINVAL && strstr(am_err_msg(), "input_dim"));
    f = fopen(p, "w");
    fputs("{\"llm\": {\"dim\": 64}, \"audio\": {}}", f);
    fclose(f);
    CHECK(am_imu_model_load(tmpdir, &m) == AM_ENOTFOUND && strstr(am_err_msg(), "\"imu\""));
    rm_dir();
}

/* ---- bad inputs ----------------------------------------------------------------------------- */

static int expect_error(const char *text, size_t n, const char *name, am_imu_format fmt, int want,
                        const char *msg) {
    am_imu_windows w;
    am_imu_opts o = am_imu_default_opts();
    int rc = am_imu_prepare(text, n, name, fmt, &o, &w);
    int ok = rc != 0 && (want == 0 || rc == want) && strstr(am_err_msg(), name) &&
             (!msg || strstr(am_err_msg(), msg)) && w.x == NULL;
    if (!ok)
        fprintf(stderr, "  %s: rc %d (want %d), message '%s' (want '%s')\n", name, rc, want,
                am_err_msg(), msg ? msg : "");
    am_imu_windows_fini(&w);
    return ok;
}

/* n rows of a CSV with `cols` columns; row `bad` gets `bad_text` in column 2. */
static char *csv(int n, int cols, int bad, const char *bad_text) {
    char *s = am_malloc((size_t)n * 120 + 200), *p = s;
    p += sprintf(p, "t,ax,ay,az,gx,gy,gz\n");
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < cols; c++)
            p += sprintf(p, "%s%s", c ? "," : "",
                         i == bad && c == 1 ? bad_text
                         : c == 0           ? "0.5"
                                            : "1.25");
        p += sprintf(p, "\n");
    }
    return s;
}

static void test_bad_imu(void) {
    char *c = csv(20, 5, -1, NULL);
    CHECK(expect_error(c, strlen(c), "five.csv", AM_IMU_CSV, AM_EFORMAT, "5 columns"));
    am_free(c);
    c = csv(20, 6, 7, "abc");
    CHECK(expect_error(c, strlen(c), "word.csv", AM_IMU_CSV, AM_EFORMAT, "line 9, column 2"));
    am_free(c);
    c = csv(20, 6, 4, "nan");
    CHECK(expect_error(c, strlen(c), "nan.csv", AM_IMU_CSV, AM_EFORMAT, "NaN"));
    am_free(c);
    c = csv(20, 6, 4, "-inf");
    CHECK(expect_error(c, strlen(c), "inf.csv", AM_IMU_CSV, AM_EFORMAT, "infinite"));
    am_free(c);
    c = csv(5, 6, -1, NULL);
    CHECK(expect_error(c, strlen(c), "short.csv", AM_IMU_CSV, AM_EFORMAT, "at least 10"));
    am_free(c);
    const char *mixed = "1,2,3,4,5,6\n1,2,3,4,5,6,7\n";
    CHECK(expect_error(mixed, strlen(mixed), "mixed.csv", AM_IMU_CSV, AM_EFORMAT,
                       "line 2 has 7 columns"));
    CHECK(expect_error("", 0, "empty.csv", AM_IMU_AUTO, AM_EFORMAT, "empty"));
    CHECK(expect_error("t,ax\n", 5, "header.csv", AM_IMU_CSV, AM_EFORMAT, "at least 10"));
    /* Timestamps going back. */
    char buf[2048], *p = buf;
    for (int i = 0; i < 12; i++)
        p += sprintf(p, "%d,1,2,3,4,5,6\n", i == 6 ? 3 : i);
    CHECK(expect_error(buf, strlen(buf), "clock.csv", AM_IMU_CSV, AM_EFORMAT,
                       "timestamp 6 (3) is not after"));
    /* Milliseconds read as seconds: 0.1 Hz is outside the rate range (with a hint). */
    p = buf;
    for (int i = 0; i < 12; i++)
        p += sprintf(p, "%d,1,2,3,4,5,6\n", i * 10);
    CHECK(expect_error(buf, strlen(buf), "ms.csv", AM_IMU_CSV, AM_ERANGE, "check their unit"));
    /* Raw float32: not whole samples; NaN. */
    float raw[12 * 6];
    for (int i = 0; i < 72; i++)
        raw[i] = (float)i;
    CHECK(expect_error((const char *)raw, sizeof raw - 4, "req.f32", AM_IMU_F32, AM_EFORMAT,
                       "24 bytes"));
    raw[13] = NAN;
    CHECK(expect_error((const char *)raw, sizeof raw, "req.f32", AM_IMU_F32, AM_EFORMAT,
                       "sample 2, channel 1 is NaN"));
    /* .npy: wrong shape, wrong dtype, truncated, 3-D. */
    char npy[4096];
    const char *hdrs[] = {"{'descr': '<f4', 'fortran_order': False, 'shape': (5, 100), }",
                          "{'descr': '<i4', 'fortran_order': False, 'shape': (100, 6), }",
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (100, 6), }",
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 50, 6), }"};
    const char *want[] = {"want (T, 6)", "dtype", "truncated", "3 dimensions"};
    const int rc_want[] = {AM_EFORMAT, AM_EUNSUPPORTED, AM_EFORMAT, AM_EUNSUPPORTED};
    for (int i = 0; i < 4; i++) {
        const size_t hl = 118; /* header padded to a 128-byte preamble */
        memcpy(npy, "\x93NUMPY\x01\x00", 8);
        npy[8] = (char)hl, npy[9] = 0;
        memset(npy + 10, ' ', hl);
        memcpy(npy + 10, hdrs[i], strlen(hdrs[i]));
        npy[10 + hl - 1] = '\n';
        const size_t data = i == 0 ? 2000 : i == 2 ? 1000 : 2400; /* (100, 6) f4 needs 2400 */
        memset(npy + 128, 0, data);
        CHECK(expect_error(npy, 128 + data, "bad.npy", AM_IMU_AUTO, rc_want[i], want[i]));
    }
    CHECK(expect_error("\x93NUMPY\x09", 7, "v9.npy", AM_IMU_AUTO, 0, NULL));
    /* Too many windows. */
    float *lots = am_calloc(3000 * 6, 4);
    am_imu_signal s;
    am_imu_windows w;
    CHECK_OK(am_imu_from_f32(lots, 3000, 200, "long", &s));
    CHECK(am_imu_make_windows(&s, "long", 2, &w) == AM_ERANGE &&
          strstr(am_err_msg(), "3 windows of 5 s, over the limit of 2"));
    am_imu_signal_fini(&s);
    am_free(lots);
    /* Mutations of the real fixtures: parse or fail naming the file, never crash. */
    static const char *const files[] = {"imu100.csv", "imu50.npy", "imu333.npy"};
    char path[4096];
    for (size_t fi = 0; fi < 3; fi++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/golden/imu/%s", files[fi]);
        void *d;
        size_t len;
        CHECK_OK(am_read_file_limited(AM_SRC_PATH(rel, path), 1 << 24, &d, &len));
        if (!d) continue;
        uint8_t *mu = am_malloc(len);
        int n_ok = 0, n_err = 0;
        const int n_mut = 60 * fuzz_scale();
        am_imu_opts o = am_imu_default_opts();
        o.time_scale = fi == 0 ? 1e-3 : 1;
        o.rate_hz = 50;
        for (int it = 0; it < n_mut; it++) {
            memcpy(mu, d, len);
            const int flips = 1 + it % 4;
            for (int k = 0; k < flips; k++)
                mu[(size_t)((frand() + 1) * 0.5 * (double)len) % len] =
                    (uint8_t)((frand() + 1) * 128);
            const size_t cut = it % 5 == 4 ? len * 2 / 3 : len;
            int rc = am_imu_prepare(mu, cut, files[fi], AM_IMU_AUTO, &o, &w);
            if (rc == 0) {
                n_ok++;
                CHECK(w.n_windows >= 1 && w.x);
            } else {
                n_err++;
                CHECK(strstr(am_err_msg(), files[fi]) != NULL);
            }
            am_imu_windows_fini(&w);
        }
        printf("  %s: %d mutations/truncations -> %d parsed, %d rejected\n", files[fi], n_mut, n_ok,
               n_err);
        am_free(mu);
        am_free(d);
    }
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_ops_vs_reference), AM_TEST(test_imu2clip_small_golden),
             AM_TEST(test_imu_input_golden), AM_TEST(test_imu2clip_real_golden),
             AM_TEST(test_batched_encode), AM_TEST(test_bad_imu), AM_TEST(teardown))
