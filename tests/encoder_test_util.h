/* tests/encoder_test_util.h - helpers shared by the encoder tests (test_audio.c, test_imu.c,
 * test_vision.c): the CPU backend + am_nn each test runs on, AM_FUZZ_SCALE, a seeded
 * xorshift frand(), golden .f32 fixture readers, max_abs_diff(), and the temporary
 * AnyMAL directories the tests write with mkencoders.
 *
 * Include after test_util.h. Each test keeps its own tolerances and defines
 * ENC_TEST_RNG_SEED (its frand() seed) before including this header. Everything here is
 * static (inline for functions), so a test that does not use a helper gets no warning.
 */
#ifndef AM_TESTS_ENCODER_TEST_UTIL_H
#define AM_TESTS_ENCODER_TEST_UTIL_H

#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/image.h"
#include "encoders/mkencoders.h"
#include "encoders/nn_ops.h"
#include "test_util.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef ENC_TEST_RNG_SEED
#error "define ENC_TEST_RNG_SEED (the test's frand() seed) before including encoder_test_util.h"
/* A fresh AnyMAL encoder directory, dir = /tmp/am_test_<tag>_<pid>_<sub> (cap bytes),
 * written by am_mkencoders_write(o) with o->dir pointed at it. 0, or the error (counted as
 * a test failure). */
static inline int enc_test_dir_make(char *dir, size_t cap, const char *tag, const char *sub,
                                    am_mkencoders_opts *o) {
    snprintf(dir, cap, "/tmp/am_test_%s_%d_%s", tag, (int)getpid(), sub);
    mkdir(dir, 0755);
    o->dir = dir;
    int rc = am_mkencoders_write(o);
    CHECK_OK(rc);
    return rc;
}

/* Removes the files of a directory enc_test_dir_make made, then the directory. */
static inline void enc_test_dir_remove(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        char p[1024];
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

#endif

static am_backend *be;
static am_nn nn;

/* Test step: a 2-thread CPU backend and the am_nn the tests run their ops on. */
static inline void setup(void) {
    am_cpu_blas_setup(2);
    CHECK_OK(am_cpu_backend_new(2, &be));
    CHECK_OK(am_nn_init(&nn, be, 2));
}

/* Test step: frees what setup() made. */
static inline void teardown(void) {
    am_nn_fini(&nn);
    am_backend_destroy(&be);
}

/* AM_FUZZ_SCALE=N multiplies the random-mutation counts (a longer local or ASan run). */
static inline int fuzz_scale(void) {
    const char *e = getenv("AM_FUZZ_SCALE");
    int s = e ? atoi(e) : 1;
    return s > 0 ? s : 1;
}

static uint64_t rng_state = ENC_TEST_RNG_SEED;
/* xorshift64 from the test's seed: uniform [-1, 1). */
static inline float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

/* Reads the golden fixture rel (under AM_SOURCE_DIR) as exactly n floats; NULL (after a
 * message on stderr) when it cannot be read or has another size. With count_failure set,
 * that also counts as a test failure; without it the caller skips the check. */
static inline float *enc_test_read_f32(const char *rel, int64_t n, int count_failure) {
    char path[4096];
    AM_SRC_PATH(rel, path);
    void *data;
    size_t len;
    if (am_read_file_limited(path, (size_t)1 << 30, &data, &len)) {
        fprintf(stderr, "cannot read %s: %s\n", path, am_err_msg());
        if (count_failure) am_test_failures++;
        return NULL;
    }
    if (len != (size_t)n * 4) {
        fprintf(stderr, "%s: %zu bytes, want %lld floats\n", path, len, (long long)n);
        if (count_failure) am_test_failures++;
        am_free(data);
        return NULL;
    }
    return data;
}

/* A golden fixture that must be there: a missing or wrong-sized file is a failure. */
static inline float *read_f32(const char *rel, int64_t n) { return enc_test_read_f32(rel, n, 1); }

/* A golden fixture whose absence only skips the checks that use it (test_vision.c). */
static inline float *read_f32_optional(const char *rel, int64_t n) {
    return enc_test_read_f32(rel, n, 0);
}

/* Largest |a[i] - b[i]|; a NaN anywhere propagates as a failure (never <= tolerance). */
static inline double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* A fresh AnyMAL encoder directory, dir = /tmp/am_test_<tag>_<pid>_<sub> (cap bytes),
 * written by am_mkencoders_write(o) with o->dir pointed at it. 0, or the error (counted as
 * a test failure). */
static inline int enc_test_dir_make(char *dir, size_t cap, const char *tag, const char *sub,
                                    am_mkencoders_opts *o) {
    snprintf(dir, cap, "/tmp/am_test_%s_%d_%s", tag, (int)getpid(), sub);
    mkdir(dir, 0755);
    o->dir = dir;
    int rc = am_mkencoders_write(o);
    CHECK_OK(rc);
    return rc;
}

/* Removes the files of a directory enc_test_dir_make made, then the directory. */
static inline void enc_test_dir_remove(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        char p[1024];
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

#endif
