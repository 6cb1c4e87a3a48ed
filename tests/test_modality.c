/* tests/test_modality.c - the modality list (core/modality.h) and the modality table
 * (encoders/modality.h).
 *
 * Checks that the names round-trip and an unknown one is refused naming the list; that the
 * config-only rows (what the shard leader sizes slots with) equal the loaded models' rows for
 * every projector type, image and video frame counts, audio, and 0 for IMU, also with the
 * weight files deleted (the config alone is read); that a set serves image and video from
 * one model; and that the table's prepare + encode give the encoders' own results bit for bit.
 */
#include "test_util.h"

#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/modality.h"
#include "encoders/audio.h"
#include "encoders/imu.h"
#include "encoders/mkencoders.h"
#include "encoders/modality.h"
#include "encoders/vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIM 64

static char tmpdir[256];

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/am_test_modality.XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
}

static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void test_names(void) {
    for (int m = 0; m < AM_MOD_COUNT; m++) {
        am_modality back = AM_MOD_COUNT;
        CHECK_OK(am_modality_parse(am_modality_name(m), &back));
        CHECK_EQ_INT(back, m);
    }
    CHECK(!strcmp(am_modality_name(AM_MOD_IMU), "imu"));
    CHECK(!strcmp(am_modality_name(AM_MOD_COUNT), "?"));
    am_modality m;
    CHECK(am_modality_parse("smell", &m) == AM_EINVAL);
    CHECK(strstr(am_err_msg(), "unknown modality 'smell' (want image, video, audio or imu)") !=
          NULL);
}

/* A model directory with every modality and the given vision projector. */
static void make_dir(char *dir, size_t cap, am_proj_type t) {
    snprintf(dir, cap, "%s/m_%s", tmpdir, am_proj_type_name(t));
    mkdir(dir, 0755);
    am_mkencoders_opts o = {.dir = dir,
                            .vision_shape = "tiny",
                            .projector = t,
                            .dtype = AM_DTYPE_F32,
                            .seed = 7,
                            .llm_dim = DIM,
                            .llm_path = ".",
                            .audio_shape = "tiny",
                            .imu_shape = "tiny"};
    CHECK_OK(am_mkencoders_write(&o));
}

static void test_config_rows(void) {
    const am_proj_type types[] = {AM_PROJ_PERCEIVER, AM_PROJ_MLP2X_GELU, AM_PROJ_LINEAR};
    for (int t = 0; t < 3; t++) {
        char dir[400], path[500];
        make_dir(dir, sizeof dir, types[t]);
        am_vision_model *vm = NULL;
        am_audio_model *amod = NULL;
        CHECK_OK(am_vision_model_load(dir, &vm));
        CHECK_OK(am_audio_model_load(dir, &amod));
        if (!vm || !amod) return;
        int64_t want_image = am_vision_n_tokens(vm, 1), want_audio = am_audio_n_tokens(amod);
        int64_t want_video[5];
        for (int f = 1; f <= 4; f++)
            want_video[f] = am_vision_n_tokens(vm, f);
        const int64_t want_default = am_vision_n_tokens(vm, vm->video_frames);
        am_vision_model_destroy(&vm);
        am_audio_model_destroy(&amod);
        /* The config alone: no weight file is opened. */
        const char *weights[] = {"vision_tower.safetensors", "vision_projector.safetensors",
                                 "audio_encoder.safetensors", "audio_projector.safetensors"};
        for (int i = 0; i < 4; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, weights[i]);
            CHECK(unlink(path) == 0);
        }
        am_mod_config *c = NULL;
        CHECK_OK(am_mod_config_load(dir, &c));
        CHECK_EQ_INT(am_mod_config_rows(c, AM_MOD_IMAGE, 0), want_image);
        for (int f = 1; f <= 4; f++)
            CHECK_EQ_INT(am_mod_config_rows(c, AM_MOD_VIDEO, (uint32_t)f), want_video[f]);
        CHECK_EQ_INT(am_mod_config_rows(c, AM_MOD_VIDEO, 0), want_default);
        CHECK_EQ_INT(am_mod_config_rows(c, AM_MOD_AUDIO, 0), want_audio);
        CHECK_EQ_INT(am_mod_config_rows(c, AM_MOD_IMU, 0), 0);
        CHECK_EQ_INT(am_mod_config_rows(c, AM_MOD_COUNT, 0), 0);
        am_mod_config_destroy(&c);
        CHECK(c == NULL);
    }
    /* A directory without encoders: no rows, no error. */
    am_mod_config *c = NULL;
    CHECK_OK(am_mod_config_load(tmpdir, &c));
    CHECK_EQ_INT(am_mod_config_rows(c, AM_MOD_IMAGE, 0), 0);
    am_mod_config_destroy(&c);
}

/* 11 s of six sines at 200 Hz as CSV: three 5 s windows. */
static char *sines_csv(size_t *len) {
    size_t cap = 2200 * 80, n = 0;
    char *s = am_malloc(cap);
    if (!s) abort();
    for (int i = 0; i < 2200; i++) {
        const double t = i / 200.0;
        n += (size_t)snprintf(s + n, cap - n, "%.5f,%.5f,%.5f,%.5f,%.5f,%.5f\n", sin(t), cos(2 * t),
                              9.8 + sin(3 * t), 0.1 * sin(5 * t), 0.2 * cos(7 * t), 0.01 * t);
    }
    *len = n;
    return s;
}

static void test_set(void) {
    char dir[400];
    make_dir(dir, sizeof dir, AM_PROJ_LINEAR);
    am_backend *be = NULL;
    CHECK_OK(am_cpu_backend_new(2, &be));
    am_mod_set *s = NULL;
    const uint32_t all = (1u << AM_MOD_COUNT) - 1;
    CHECK_OK(am_mod_set_open(dir, all, be, 2, &s));
    if (!s) return;
    /* image and video share the vision model; audio and IMU have their own. */
    CHECK_EQ_INT(am_mod_set_n_models(s), 3);
    CHECK_EQ_INT(am_mod_set_model_of(s, AM_MOD_IMAGE), am_mod_set_model_of(s, AM_MOD_VIDEO));
    CHECK_EQ_INT(am_mod_set_out_dim(s), DIM);
    CHECK(!strcmp(am_mod_unit(AM_MOD_AUDIO), "clips") &&
          !strcmp(am_mod_unit(AM_MOD_IMU), "windows"));
    /* IMU through the table equals am_imu_encode. */
    size_t len;
    char *csv = sines_csv(&len);
    const am_mod_opts o = am_mod_default_opts();
    am_mod_input in;
    CHECK_OK(am_mod_set_prepare(s, AM_MOD_IMU, csv, len, "sines.csv", &o, &in));
    CHECK_EQ_INT(in.units, 3);
    CHECK(strstr(in.info, "windows=3") != NULL);
    float *a = am_aligned_alloc((size_t)(in.n_rows * DIM) * sizeof(float));
    float *b = am_aligned_alloc((size_t)(in.n_rows * DIM) * sizeof(float));
    const am_mod_input *ins[1] = {&in};
    float *outs[1] = {a};
    CHECK_OK(am_mod_set_encode(s, am_mod_set_model_of(s, AM_MOD_IMU), ins, outs, 1));
    am_imu_model *im = NULL;
    am_imu_encoder *ie = NULL;
    CHECK_OK(am_imu_model_load(dir, &im));
    CHECK_OK(am_imu_encoder_new(im, be, 2, 0, &ie));
    am_imu_windows w;
    CHECK_OK(am_imu_prepare(csv, len, "sines.csv", AM_IMU_AUTO, &o.imu, &w));
    const am_imu_item item = {w.x, w.n_windows, b};
    CHECK_OK(am_imu_encode(ie, &item, 1));
    CHECK_EQ_INT((int64_t)w.n_windows * am_imu_tokens_per_window(im), in.n_rows);
    CHECK(memcmp(a, b, (size_t)(in.n_rows * DIM) * sizeof(float)) == 0);
    /* Errors: a bad input names itself; a modality the set does not serve is refused. */
    am_mod_input bad;
    CHECK(am_mod_set_prepare(s, AM_MOD_AUDIO, "RIFF", 4, "bad.wav", &o, &bad) != 0);
    CHECK(strstr(am_err_msg(), "bad.wav") != NULL);
    am_mod_input_fini(&bad);
    am_mod_set *only_imu = NULL;
    CHECK_OK(am_mod_set_open(dir, 1u << AM_MOD_IMU, be, 1, &only_imu));
    CHECK(am_mod_set_prepare(only_imu, AM_MOD_AUDIO, csv, len, "x.wav", &o, &bad) == AM_EINVAL);
    am_mod_input_fini(&bad);
    am_mod_set_destroy(&only_imu);
    /* Asked for image, the vision model serves video too (the worker always did). */
    CHECK_OK(am_mod_set_open(dir, 1u << AM_MOD_IMAGE, be, 1, &only_imu));
    CHECK(only_imu && am_mod_set_model_of(only_imu, AM_MOD_VIDEO) == 0 &&
          am_mod_set_model_of(only_imu, AM_MOD_AUDIO) < 0);
    am_mod_set_destroy(&only_imu);
    CHECK(am_mod_set_open(dir, 0, be, 1, &only_imu) == AM_EINVAL && only_imu == NULL);
    am_imu_windows_fini(&w);
    am_imu_encoder_destroy(&ie);
    am_imu_model_destroy(&im);
    am_mod_input_fini(&in);
    am_aligned_free(a);
    am_aligned_free(b);
    am_free(csv);
    am_mod_set_destroy(&s);
    CHECK(s == NULL);
    am_backend_destroy(&be);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_names), AM_TEST(test_config_rows), AM_TEST(test_set),
             AM_TEST(teardown))
