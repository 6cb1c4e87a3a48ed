/* tests/test_formats.c - checkpoint readers and writers (core/ckpt.h).
 *
 * Round trips through every writer and reader, fixtures written by the Python
 * reference libraries (tests/golden/formats/gen_formats.py), a table of hostile
 * files (each must fail with a given code and a message naming the file and the
 * field), seeded mutation fuzzing, and allocation-failure injection.
 *
 * AM_FORMATS_FUZZ_SCALE=k multiplies the fuzz mutations by k; AM_FORMATS_VERBOSE=1
 * prints every expected error message.
 *
 * Set AM_FORMATS_KEEP_DIR=dir to keep the round-trip files in dir, then run
 * `python3 tests/golden/formats/gen_formats.py --check dir` to check that the
 * Python safetensors and gguf packages read what our writers produce.
 */
#include "core/alloc.h"
#include "core/ckpt.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/strmap.h"
#include "core/formats/formats_internal.h"
#include "test_util.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- Helpers. ------------------------------------------------------------------ */

static char g_dir[512]; /* scratch directory of this process */

static void rm_rf(const char *dir);
static void remove_scratch(void) { rm_rf(g_dir); }

static const char *scratch(void) {
    if (g_dir[0]) return g_dir;
    const char *keep = getenv("AM_FORMATS_KEEP_DIR");
    if (keep && keep[0]) {
        mkdir(keep, 0755);
        snprintf(g_dir, sizeof g_dir, "%s", keep);
    } else {
        snprintf(g_dir, sizeof g_dir, "/tmp/am_test_formats.XXXXXX");
        if (!mkdtemp(g_dir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(remove_scratch); /* also when a single test is run by name */
    }
    return g_dir;
}

static const char *tpath(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", scratch(), name);
    return buf;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz + 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

static void rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Files in dir whose name contains ".tmp." (a writer's leftovers). */
static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* xorshift64*: deterministic across platforms */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static float rndf(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 4.0 - 2.0); }

static void fill_random(void *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)p)[i] = (uint8_t)rnd();
}

/* Opens path; requires code and a message containing every non-NULL needle. */
static void expect_open_fail(const char *path, int code, const char *n1, const char *n2,
                             const char *label) {
    am_ckpt *c = (am_ckpt *)0x1;
    am_err_clear();
    int rc = am_ckpt_open(path, &c);
    if (rc != code) {
        fprintf(stderr, "[%s] expected %d (%s), got %d: %s\n", label, code, am_strerror(code), rc,
                am_err_msg());
        am_test_failures++;
    }
    CHECK(c == NULL);
    if (rc == 0) am_ckpt_destroy(&c);
    if (getenv("AM_FORMATS_VERBOSE")) printf("     [%s] %s\n", label, am_err_msg());
    const char *needles[2] = {n1, n2};
    for (int i = 0; i < 2; i++) {
        if (needles[i] && !strstr(am_err_msg(), needles[i])) {
            fprintf(stderr, "[%s] message lacks '%s': %s\n", label, needles[i], am_err_msg());
            am_test_failures++;
        }
    }
}

static void check_tensor_equals(const am_ckpt *c, const am_tensor_src *s) {
    const am_ckpt_tensor *t = am_ckpt_find(c, s->name);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "  missing tensor '%s'\n", s->name);
        return;
    }
    CHECK_EQ_INT(t->dtype, s->dtype);
    CHECK_EQ_INT(t->n_dims, s->n_dims);
    for (int d = 0; d < AM_MAX_DIMS; d++)
        CHECK_EQ_INT(t->shape[d], d < s->n_dims ? s->shape[d] : 1);
    CHECK_EQ_INT(t->nbytes, s->nbytes);
    if (t->nbytes == s->nbytes) CHECK(memcmp(t->data, s->data, s->nbytes) == 0);
    /* Elements are naturally aligned, so F32/F64 data can be used in place. */
    size_t elem = am_dtype_block_elems(t->dtype) == 1 ? am_dtype_block_bytes(t->dtype) : 2;
    if (t->nbytes) CHECK((uintptr_t)t->data % elem == 0);
}

/* A tensor with random contents (freed by free_src). */
static am_tensor_src make_src(const char *name, am_dtype dt, int n_dims, int64_t d0, int64_t d1,
                              int64_t d2, int64_t d3) {
    am_tensor_src s = {name, dt, n_dims, {d0, d1, d2, d3}, NULL, 0};
    for (int d = n_dims; d < AM_MAX_DIMS; d++)
        s.shape[d] = 1;
    size_t nb = 0;
    CHECK_OK(am__tensor_nbytes(dt, n_dims, s.shape, &nb));
    s.nbytes = nb;
    void *p = malloc(nb + 1);
    if (dt == AM_DTYPE_Q8_0 || dt == AM_DTYPE_Q4_0 || dt == AM_DTYPE_F16 || dt == AM_DTYPE_BF16 ||
        dt == AM_DTYPE_F32) {
        /* Real quantized blocks (valid f16 scales), row by row. */
        int64_t cols = n_dims ? s.shape[n_dims - 1] : 1, rows = 1;
        for (int d = 0; d < n_dims - 1; d++)
            rows *= s.shape[d];
        float *x = malloc((size_t)cols * 4 + 4);
        size_t rb = am_dtype_row_bytes(dt, cols);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t i = 0; i < cols; i++)
                x[i] = rndf();
            am_quantize_row(dt, x, (uint8_t *)p + r * rb, cols);
        }
        free(x);
    } else {
        fill_random(p, nb);
    }
    if (dt == AM_DTYPE_BOOL)
        for (size_t i = 0; i < nb; i++)
            ((uint8_t *)p)[i] &= 1;
    s.data = p;
    return s;
}

static void free_src(am_tensor_src *s, int n) {
    for (int i = 0; i < n; i++)
        free((void *)s[i].data);
}

/* ---- safetensors. ------------------------------------------------------------------ */

#define N_ST 12
static void make_st_set(am_tensor_src *t) {
    t[0] = make_src("w.f32", AM_DTYPE_F32, 2, 3, 5, 0, 0);
    t[1] = make_src("w.f16", AM_DTYPE_F16, 1, 7, 0, 0, 0);
    t[2] = make_src("w.bf16", AM_DTYPE_BF16, 3, 2, 2, 3, 0);
    t[3] = make_src("w.f64", AM_DTYPE_F64, 1, 2, 0, 0, 0);
    t[4] = make_src("w.i64", AM_DTYPE_I64, 4, 1, 2, 1, 2);
    t[5] = make_src("w.i32", AM_DTYPE_I32, 1, 3, 0, 0, 0);
    t[6] = make_src("w.i16", AM_DTYPE_I16, 1, 5, 0, 0, 0);
    t[7] = make_src("w.i8", AM_DTYPE_I8, 1, 3, 0, 0, 0);
    t[8] = make_src("w.u8", AM_DTYPE_U8, 1, 9, 0, 0, 0);
    t[9] = make_src("w.bool", AM_DTYPE_BOOL, 1, 4, 0, 0, 0);
    t[10] = make_src("scalar", AM_DTYPE_F32, 0, 0, 0, 0, 0);
    t[11] = make_src("empty \"quoted\"\\name", AM_DTYPE_F32, 2, 0, 3, 0, 0);
}

static void test_safetensors_roundtrip(void) {
    am_tensor_src t[N_ST];
    make_st_set(t);
    am_kv_str meta[] = {{"format", "pt"}, {"we\"ird\\key", "line\nbreak\ttab"}};
    char path[600];
    tpath("rt_all.safetensors", path, sizeof path);
    CHECK_OK(am_safetensors_write(path, t, N_ST, meta, 2));
    CHECK_EQ_INT(count_tmp_files(scratch()), 0);

    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(path, &c));
    if (!c) return;
    CHECK_EQ_INT(am_ckpt_get_format(c), AM_CKPT_SAFETENSORS);
    CHECK(strcmp(am_ckpt_path(c), path) == 0);
    CHECK_EQ_INT(am_ckpt_n_tensors(c), N_ST);
    for (int i = 0; i < N_ST; i++)
        check_tensor_equals(c, &t[i]);
    CHECK_OK(am__ckpt_validate(c));
    for (int64_t i = 0; i < am_ckpt_n_tensors(c); i++)
        CHECK(strcmp(am_ckpt_tensor_at(c, i)->file, path) == 0);
    CHECK(am_ckpt_tensor_at(c, -1) == NULL);
    CHECK(am_ckpt_tensor_at(c, N_ST) == NULL);
    CHECK(am_ckpt_find(c, "nope") == NULL);

    /* Metadata: strings only. */
    const char *s;
    size_t len;
    CHECK_OK(am_ckpt_meta_str(c, "format", &s, &len));
    CHECK(len == 2 && memcmp(s, "pt", 2) == 0);
    CHECK_OK(am_ckpt_meta_str(c, "we\"ird\\key", &s, &len));
    CHECK(len == 14 && memcmp(s, "line\nbreak\ttab", 14) == 0);
    int64_t iv;
    double dv;
    am_ckpt_array arr;
    CHECK_EQ_INT(am_ckpt_meta_str(c, "missing", &s, &len), AM_ENOTFOUND);
    CHECK_EQ_INT(am_ckpt_meta_int(c, "format", &iv), AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "format") != NULL);
    CHECK_EQ_INT(am_ckpt_meta_float(c, "format", &dv), AM_EFORMAT);
    CHECK_EQ_INT(am_ckpt_meta_array(c, "format", &arr), AM_EFORMAT);

    /* am_ckpt_get: shapes compare right-aligned with implicit outer 1s. */
    const am_ckpt_tensor *out;
    CHECK_OK(am_ckpt_get(c, "w.f32", 2, (int64_t[]){3, 5}, &out));
    CHECK(out == am_ckpt_find(c, "w.f32"));
    CHECK_EQ_INT(am_ckpt_get(c, "w.i64", 2, (int64_t[]){1, 2}, &out), AM_ESHAPE);
    CHECK_OK(am_ckpt_get(c, "w.i64", 3, (int64_t[]){2, 1, 2}, &out));
    CHECK_OK(am_ckpt_get(c, "w.f16", 2, (int64_t[]){1, 7}, &out));
    CHECK_OK(am_ckpt_get(c, "scalar", 0, NULL, &out));
    CHECK_EQ_INT(am_ckpt_get(c, "w.f32", 2, (int64_t[]){5, 3}, &out), AM_ESHAPE);
    CHECK(out == NULL);
    CHECK(strstr(am_err_msg(), "w.f32") && strstr(am_err_msg(), "[3, 5]") &&
          strstr(am_err_msg(), "[5, 3]") && strstr(am_err_msg(), "rt_all.safetensors"));
    CHECK_EQ_INT(am_ckpt_get(c, "nope", 1, (int64_t[]){1}, &out), AM_ENOTFOUND);
    CHECK(strstr(am_err_msg(), "nope") && strstr(am_err_msg(), "rt_all.safetensors"));
    am_ckpt_destroy(&c);
    CHECK(c == NULL);
    am_ckpt_destroy(&c); /* NULL is fine */
    am_ckpt_destroy(NULL);

    /* Writer argument checks. */
    am_tensor_src q = make_src("q", AM_DTYPE_Q8_0, 1, 32, 0, 0, 0);
    tpath("bad.safetensors", path, sizeof path);
    CHECK_EQ_INT(am_safetensors_write(path, &q, 1, NULL, 0), AM_EUNSUPPORTED);
    free_src(&q, 1);
    am_tensor_src dup[2] = {t[0], t[0]};
    CHECK_EQ_INT(am_safetensors_write(path, dup, 2, NULL, 0), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "duplicate") != NULL);
    am_tensor_src badn = t[0];
    badn.nbytes--;
    CHECK_EQ_INT(am_safetensors_write(path, &badn, 1, NULL, 0), AM_EINVAL);
    badn = t[0];
    badn.name = "__metadata__";
    CHECK_EQ_INT(am_safetensors_write(path, &badn, 1, NULL, 0), AM_EINVAL);
    CHECK(access(path, F_OK) != 0);
    /* Unwritable location: AM_EIO and nothing left behind. */
    CHECK_EQ_INT(am_safetensors_write("/nonexistent-dir/x.safetensors", t, 1, NULL, 0), AM_EIO);
    /* An empty file is valid too. */
    tpath("rt_empty.safetensors", path, sizeof path);
    CHECK_OK(am_safetensors_write(path, NULL, 0, NULL, 0));
    CHECK_OK(am_ckpt_open(path, &c));
    if (c) CHECK_EQ_INT(am_ckpt_n_tensors(c), 0);
    am_ckpt_destroy(&c);
    free_src(t, N_ST);
}

static void test_safetensors_dir(void) {
    am_tensor_src t[N_ST];
    make_st_set(t);
    char dir[600], p[700];
    tpath("sharded", dir, sizeof dir);
    rm_rf(dir);
    mkdir(dir, 0755);
    /* 40-byte shards, filled greedily in order: 6 files, w.f32 (60 bytes) alone
     * in the first. */
    CHECK_OK(am_safetensors_write_dir(dir, t, N_ST, 40));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(access(p, F_OK) != 0);
    snprintf(p, sizeof p, "%s/model-00001-of-00006.safetensors", dir);
    CHECK(access(p, F_OK) == 0);
    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(dir, &c));
    if (c) {
        CHECK_EQ_INT(am_ckpt_n_tensors(c), N_ST);
        for (int i = 0; i < N_ST; i++)
            check_tensor_equals(c, &t[i]);
        CHECK_OK(am__ckpt_validate(c));
        CHECK(strstr(am_ckpt_find(c, "w.f32")->file, "model-00001-of-00006") != NULL);
        CHECK(strstr(am_ckpt_find(c, "w.f16")->file, "model-00002-of-00006") != NULL);
        CHECK(strcmp(am_ckpt_path(c), dir) == 0);
    }
    am_ckpt_destroy(&c);
    /* Each tensor over the limit: one shard each. */
    CHECK_OK(am_safetensors_write_dir(dir, t, 3, 0));
    CHECK_OK(am_ckpt_open(dir, &c));
    if (c) CHECK_EQ_INT(am_ckpt_n_tensors(c), 3);
    am_ckpt_destroy(&c);

    /* Under the limit: model.safetensors, and the stale index goes away. */
    CHECK_OK(am_safetensors_write_dir(dir, t, N_ST, 1 << 20));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(access(p, F_OK) != 0);
    CHECK_OK(am_ckpt_open(dir, &c));
    if (c) {
        CHECK_EQ_INT(am_ckpt_n_tensors(c), N_ST);
        CHECK(strstr(am_ckpt_find(c, "w.u8")->file, "/model.safetensors") != NULL);
    }
    am_ckpt_destroy(&c);
    CHECK_EQ_INT(count_tmp_files(dir), 0);

    /* A directory with one differently named file. */
    char one[600];
    tpath("one", one, sizeof one);
    rm_rf(one);
    mkdir(one, 0755);
    snprintf(p, sizeof p, "%s/weights.safetensors", one);
    CHECK_OK(am_safetensors_write(p, t, 2, NULL, 0));
    CHECK_OK(am_ckpt_open(one, &c));
    if (c) CHECK_EQ_INT(am_ckpt_n_tensors(c), 2);
    am_ckpt_destroy(&c);
    /* Two such files and no index: ambiguous. */
    snprintf(p, sizeof p, "%s/other.safetensors", one);
    CHECK_OK(am_safetensors_write(p, t + 2, 2, NULL, 0));
    expect_open_fail(one, AM_EFORMAT, "one", "index", "two files");
    rm_rf(one);
    mkdir(one, 0755);
    expect_open_fail(one, AM_ENOTFOUND, "one", "safetensors", "empty dir");
    rm_rf(one);
    /* Duplicate names across shards are rejected by the writer. */
    am_tensor_src dup[2] = {t[0], t[0]};
    CHECK_EQ_INT(am_safetensors_write_dir(dir, dup, 2, 1), AM_EINVAL);
    /* A fresh sharded directory (left for gen_formats.py --check under KEEP_DIR). */
    tpath("sharded_keep", dir, sizeof dir);
    rm_rf(dir);
    mkdir(dir, 0755);
    CHECK_OK(am_safetensors_write_dir(dir, t, N_ST, 64));
    CHECK_OK(am_ckpt_open(dir, &c));
    if (c) CHECK_EQ_INT(am_ckpt_n_tensors(c), N_ST);
    am_ckpt_destroy(&c);
    free_src(t, N_ST);
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

static void test_safetensors_index_errors(void) {
    am_tensor_src t[2] = {make_src("a", AM_DTYPE_F32, 1, 4, 0, 0, 0),
                          make_src("b", AM_DTYPE_F16, 1, 4, 0, 0, 0)};
    char dir[600], p[700];
    tpath("badindex", dir, sizeof dir);
    rm_rf(dir);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/s1.safetensors", dir);
    CHECK_OK(am_safetensors_write(p, t, 1, NULL, 0));
    snprintf(p, sizeof p, "%s/s2.safetensors", dir);
    CHECK_OK(am_safetensors_write(p, t + 1, 1, NULL, 0));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);

    write_text(p, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(dir, &c));
    if (c) CHECK_EQ_INT(am_ckpt_n_tensors(c), 2);
    am_ckpt_destroy(&c);

    static const struct {
        const char *json;
        int code;
        const char *n1, *n2;
    } cases[] = {
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"gone.safetensors\"}}", AM_ENOTFOUND,
         "gone.safetensors", "'b'"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}", AM_ENOTFOUND,
         "'b'", "s1.safetensors"},
        {"{\"weight_map\":{\"zz\":\"s1.safetensors\"}}", AM_ENOTFOUND, "'zz'", "s1.safetensors"},
        {"{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", AM_EFORMAT, "'a'", "file name"},
        {"{\"weight_map\":{\"a\":\"..\"}}", AM_EFORMAT, "'a'", "file name"},
        {"{\"weight_map\":{\"a\":7}}", AM_EFORMAT, "'a'", "index.json"},
        {"{\"weight_map\":[]}", AM_EFORMAT, "weight_map", "index.json"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\"", AM_EFORMAT, "JSON", "index.json"},
        {"", AM_EFORMAT, "JSON", "index.json"},
        {"{\"weight_map\":{\"a\":\"s1.safe\xfftensors\"}}", AM_EFORMAT, "UTF-8", "index.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(p, cases[i].json);
        char label[32];
        snprintf(label, sizeof label, "index case %zu", i);
        expect_open_fail(dir, cases[i].code, cases[i].n1, cases[i].n2, label);
    }
    /* The same tensor in two shards. */
    snprintf(p, sizeof p, "%s/s3.safetensors", dir);
    CHECK_OK(am_safetensors_write(p, t, 1, NULL, 0));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s3.safetensors\"}}");
    expect_open_fail(dir, AM_EFORMAT, "'a'", "s3.safetensors", "tensor in two shards");
    rm_rf(dir);
    free_src(t, 2);
}

static void test_safetensors_python_fixture(void) {
    char path[1024];
    AM_SRC_PATH("tests/golden/formats/py_tensors.safetensors", path);
    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(path, &c));
    if (!c) return;
    CHECK_OK(am__ckpt_validate(c));
    CHECK_EQ_INT(am_ckpt_n_tensors(c), 11);
    const am_ckpt_tensor *t;
    CHECK_OK(am_ckpt_get(c, "a.f32", 2, (int64_t[]){2, 3}, &t));
    if (t) {
        CHECK_EQ_INT(t->dtype, AM_DTYPE_F32);
        for (int i = 0; i < 6; i++)
            CHECK_NEAR(((const float *)t->data)[i], 0.5 * i, 0);
    }
    CHECK_OK(am_ckpt_get(c, "b.f16", 1, (int64_t[]){4}, &t));
    if (t) {
        const uint16_t *h = t->data;
        CHECK_NEAR(am_f16_to_f32(h[0]), 1.0, 0);
        CHECK_NEAR(am_f16_to_f32(h[1]), -2.0, 0);
        CHECK_NEAR(am_f16_to_f32(h[2]), 0.25, 0);
        CHECK_NEAR(am_f16_to_f32(h[3]), 65504.0, 0);
    }
    CHECK_OK(am_ckpt_get(c, "c.bf16", 2, (int64_t[]){2, 2}, &t));
    if (t) {
        const uint16_t *h = t->data;
        CHECK_NEAR(am_bf16_to_f32(h[1]), -1.5, 0);
        CHECK_NEAR(am_bf16_to_f32(h[3]), 256.0, 0);
    }
    t = am_ckpt_find(c, "d.f64");
    CHECK(t && t->dtype == AM_DTYPE_F64 && ((const double *)t->data)[0] == 3.25);
    t = am_ckpt_find(c, "e.i64");
    CHECK(t && t->dtype == AM_DTYPE_I64 && ((const int64_t *)t->data)[2] == (int64_t)1 << 40);
    t = am_ckpt_find(c, "f.i32");
    CHECK(t && t->dtype == AM_DTYPE_I32 && ((const int32_t *)t->data)[1] == -7);
    t = am_ckpt_find(c, "g.i16");
    CHECK(t && t->dtype == AM_DTYPE_I16 && ((const int16_t *)t->data)[0] == -300);
    t = am_ckpt_find(c, "h.i8");
    CHECK(t && t->dtype == AM_DTYPE_I8 && t->n_dims == 2 && ((const int8_t *)t->data)[0] == -5);
    t = am_ckpt_find(c, "i.u8");
    CHECK(t && t->dtype == AM_DTYPE_U8 && ((const uint8_t *)t->data)[0] == 200);
    t = am_ckpt_find(c, "j.bool");
    CHECK(t && t->dtype == AM_DTYPE_BOOL && t->nbytes == 3 && ((const uint8_t *)t->data)[1] == 0);
    t = am_ckpt_find(c, "k.empty");
    CHECK(t && t->nbytes == 0 && t->shape[0] == 0 && t->shape[1] == 4);
    const char *s;
    size_t len;
    CHECK_OK(am_ckpt_meta_str(c, "note", &s, &len));
    CHECK(len == 14 && memcmp(s, "gen_formats.py", 14) == 0);
    am_ckpt_destroy(&c);
}

/* ---- GGUF. ----------------------------------------------------------------------------- */

#define N_GG 7
static void make_gguf_set(am_tensor_src *t) {
    t[0] = make_src("token_embd.weight", AM_DTYPE_F32, 2, 5, 64, 0, 0);
    t[1] = make_src("blk.0.attn_norm.weight", AM_DTYPE_F16, 1, 33, 0, 0, 0);
    t[2] = make_src("blk.0.attn_q.weight", AM_DTYPE_BF16, 2, 3, 32, 0, 0);
    t[3] = make_src("blk.0.ffn_up.weight", AM_DTYPE_Q8_0, 2, 3, 64, 0, 0);
    t[4] = make_src("blk.0.ffn_down.weight", AM_DTYPE_Q4_0, 2, 2, 96, 0, 0);
    t[5] = make_src("q4.3d", AM_DTYPE_Q4_0, 3, 2, 3, 32, 0);
    t[6] = make_src("f32.4d", AM_DTYPE_F32, 4, 2, 1, 3, 5);
}

static const char *const g_tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81hi", ""};

static int write_gguf_set(const char *path, am_tensor_src *t, int n) {
    am_gguf_writer *w = NULL;
    int rc = am_gguf_writer_new(&w);
    if (rc) return rc;
    const float scores[] = {0.0f, -1.0f, -2.5f, 3.0f, 0.0f};
    const int32_t types[] = {2, 3, 3, 1, 1};
    if (!rc) rc = am_gguf_set_str(w, "general.architecture", "llama");
    if (!rc) rc = am_gguf_set_u32(w, "llama.block_count", 1);
    if (!rc) rc = am_gguf_set_i32(w, "llama.neg", -42);
    if (!rc) rc = am_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (!rc) rc = am_gguf_set_arr_str(w, "tokenizer.ggml.tokens", g_tokens, NULL, 5);
    if (!rc) rc = am_gguf_set_arr_f32(w, "tokenizer.ggml.scores", scores, 5);
    if (!rc) rc = am_gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, 5);
    const char *pair[] = {"abXYZ", "cd"};
    const size_t lens[] = {2, 2};
    if (!rc) rc = am_gguf_set_arr_str(w, "t.lens", pair, lens, 2);
    if (!rc) rc = am_gguf_set_arr_str(w, "t.empty", NULL, NULL, 0);
    for (int i = 0; i < n && !rc; i++)
        rc = am_gguf_add_tensor(w, &t[i]);
    if (!rc) rc = am_gguf_writer_write(w, path);
    am_gguf_writer_destroy(&w);
    return rc;
}

static void test_gguf_roundtrip(void) {
    am_tensor_src t[N_GG];
    make_gguf_set(t);
    char path[600];
    tpath("rt_all.gguf", path, sizeof path);
    CHECK_OK(write_gguf_set(path, t, N_GG));
    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(path, &c));
    if (!c) return;
    CHECK_EQ_INT(am_ckpt_get_format(c), AM_CKPT_GGUF);
    CHECK_EQ_INT(am_ckpt_n_tensors(c), N_GG);
    for (int i = 0; i < N_GG; i++)
        check_tensor_equals(c, &t[i]);
    for (int i = 0; i < N_GG; i++)
        CHECK((uintptr_t)am_ckpt_tensor_at(c, i)->data % 32 == 0);
    CHECK(strcmp(am_ckpt_tensor_at(c, 0)->name, "token_embd.weight") == 0);
    CHECK_OK(am__ckpt_validate(c));
    /* Quantized data decodes to what was quantized (tolerance of the format). */
    const am_ckpt_tensor *q = am_ckpt_find(c, "blk.0.ffn_up.weight");
    float row[64];
    am_dequantize_row(q->dtype, q->data, row, 64);
    CHECK(fabsf(row[0]) <= 2.0f);

    int64_t iv;
    double dv;
    const char *s;
    size_t len;
    CHECK_OK(am_ckpt_meta_str(c, "general.architecture", &s, &len));
    CHECK(len == 5 && memcmp(s, "llama", 5) == 0);
    CHECK_OK(am_ckpt_meta_int(c, "llama.block_count", &iv));
    CHECK_EQ_INT(iv, 1);
    CHECK_OK(am_ckpt_meta_int(c, "llama.neg", &iv));
    CHECK_EQ_INT(iv, -42);
    CHECK_OK(am_ckpt_meta_float(c, "llama.attention.layer_norm_rms_epsilon", &dv));
    CHECK_NEAR(dv, 1e-5, 1e-12);
    CHECK_EQ_INT(am_ckpt_meta_float(c, "llama.block_count", &dv), AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "llama.block_count") && strstr(am_err_msg(), "rt_all.gguf"));
    CHECK_EQ_INT(am_ckpt_meta_int(c, "general.architecture", &iv), AM_EFORMAT);
    CHECK_EQ_INT(am_ckpt_meta_int(c, "nope", &iv), AM_ENOTFOUND);
    am_ckpt_array a;
    CHECK_OK(am_ckpt_meta_array(c, "tokenizer.ggml.tokens", &a));
    CHECK_EQ_INT(a.elem_type, AM_GGUF_STRING);
    CHECK_EQ_INT(a.n, 5);
    for (uint64_t i = 0; i < 5; i++) {
        CHECK_OK(am_ckpt_array_str(&a, i, &s, &len));
        CHECK(len == strlen(g_tokens[i]) && memcmp(s, g_tokens[i], len) == 0);
    }
    CHECK_EQ_INT(am_ckpt_array_str(&a, 5, &s, &len), AM_ERANGE);
    CHECK_OK(am_ckpt_meta_array(c, "t.lens", &a));
    CHECK_OK(am_ckpt_array_str(&a, 0, &s, &len));
    CHECK(len == 2 && memcmp(s, "ab", 2) == 0);
    CHECK_OK(am_ckpt_meta_array(c, "t.empty", &a));
    CHECK_EQ_INT(a.n, 0);
    CHECK_EQ_INT(am_ckpt_array_str(&a, 0, &s, &len), AM_ERANGE);
    CHECK_OK(am_ckpt_meta_array(c, "tokenizer.ggml.scores", &a));
    CHECK_EQ_INT(a.elem_type, AM_GGUF_F32);
    CHECK_EQ_INT(a.n, 5);
    float f3;
    memcpy(&f3, (const char *)a.data + 12, 4);
    CHECK_NEAR(f3, 3.0, 0);
    CHECK_EQ_INT(am_ckpt_array_str(&a, 0, &s, &len), AM_EINVAL);
    CHECK_OK(am_ckpt_meta_array(c, "tokenizer.ggml.token_type", &a));
    CHECK_EQ_INT(a.elem_type, AM_GGUF_I32);
    int32_t i3;
    memcpy(&i3, (const char *)a.data + 12, 4);
    CHECK_EQ_INT(i3, 1);
    CHECK_EQ_INT(am_ckpt_meta_array(c, "llama.neg", &a), AM_EFORMAT);
    am_ckpt_destroy(&c);

    /* Writer argument checks. */
    am_gguf_writer *w = NULL;
    CHECK_OK(am_gguf_writer_new(&w));
    CHECK_OK(am_gguf_set_u32(w, "k", 1));
    CHECK_EQ_INT(am_gguf_set_i32(w, "k", 1), AM_EINVAL);
    CHECK_EQ_INT(am_gguf_set_str(w, "", "x"), AM_EINVAL);
    CHECK_OK(am_gguf_add_tensor(w, &t[0]));
    CHECK_EQ_INT(am_gguf_add_tensor(w, &t[0]), AM_EINVAL);
    am_tensor_src bad = make_src("i8", AM_DTYPE_I8, 1, 4, 0, 0, 0);
    CHECK_EQ_INT(am_gguf_add_tensor(w, &bad), AM_EUNSUPPORTED);
    free_src(&bad, 1);
    bad = t[3];
    bad.name = "odd";
    bad.shape[1] = 48; /* not a multiple of 32 */
    CHECK_EQ_INT(am_gguf_add_tensor(w, &bad), AM_EINVAL);
    CHECK_EQ_INT(am_gguf_writer_write(w, "/nonexistent-dir/x.gguf"), AM_EIO);
    am_gguf_writer_destroy(&w);
    CHECK(w == NULL);
    am_gguf_writer_destroy(&w);
    free_src(t, N_GG);
}

static void test_gguf_python_fixture(void) {
    char path[1024];
    AM_SRC_PATH("tests/golden/formats/py_all.gguf", path);
    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(path, &c));
    if (!c) return;
    CHECK_OK(am__ckpt_validate(c));
    int64_t iv;
    double dv;
    const char *s;
    size_t len;
    static const struct {
        const char *key;
        int64_t v;
    } ints[] = {{"t.u8", 250},     {"t.i8", -100},        {"t.u16", 60000},
                {"t.i16", -30000}, {"t.u32", 4000000000}, {"t.i32", -2000000000},
                {"t.bool", 1},     {"t.u64", 1ll << 62},  {"t.i64", -(1ll << 62)}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        CHECK_OK(am_ckpt_meta_int(c, ints[i].key, &iv));
        CHECK_EQ_INT(iv, ints[i].v);
    }
    CHECK_EQ_INT(am_ckpt_meta_int(c, "t.u64_big", &iv), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "t.u64_big") != NULL);
    CHECK_OK(am_ckpt_meta_float(c, "t.f32", &dv));
    CHECK_NEAR(dv, 1.5, 0);
    CHECK_OK(am_ckpt_meta_float(c, "t.f64", &dv));
    CHECK_NEAR(dv, -2.25, 0);
    CHECK_EQ_INT(am_ckpt_meta_int(c, "t.f64", &iv), AM_EFORMAT);
    CHECK_OK(am_ckpt_meta_str(c, "t.str", &s, &len));
    CHECK(len == 6 && memcmp(s, "h\xc3\xa9llo", 6) == 0);
    CHECK_OK(am_ckpt_meta_str(c, "general.architecture", &s, &len));
    CHECK(len == 5 && memcmp(s, "llama", 5) == 0);
    am_ckpt_array a;
    CHECK_OK(am_ckpt_meta_array(c, "tokenizer.ggml.tokens", &a));
    CHECK_EQ_INT(a.n, 4);
    CHECK_OK(am_ckpt_array_str(&a, 3, &s, &len));
    CHECK(len == 5 && memcmp(s, "\xe2\x96\x81hi", 5) == 0);
    CHECK_OK(am_ckpt_meta_array(c, "t.arr_u16", &a));
    CHECK_EQ_INT(a.elem_type, AM_GGUF_U16);
    uint16_t u16;
    memcpy(&u16, (const char *)a.data + 4, 2);
    CHECK_EQ_INT(u16, 65535);
    CHECK_OK(am_ckpt_meta_array(c, "t.arr_f32", &a));
    CHECK_EQ_INT(a.n, 3);
    CHECK_OK(am_ckpt_meta_array(c, "t.nested", &a));
    CHECK_EQ_INT(a.elem_type, AM_GGUF_ARRAY);
    CHECK_EQ_INT(a.n, 3);
    CHECK_OK(am_ckpt_meta_array(c, "t.nested_str", &a));
    CHECK_EQ_INT(a.elem_type, AM_GGUF_ARRAY);
    CHECK_EQ_INT(a.n, 2);
    CHECK_EQ_INT(am_ckpt_array_str(&a, 0, &s, &len), AM_EINVAL);

    const am_ckpt_tensor *t;
    CHECK_OK(am_ckpt_get(c, "f32", 2, (int64_t[]){2, 64}, &t));
    CHECK_OK(am_ckpt_get(c, "f16", 1, (int64_t[]){64}, &t));
    if (t) {
        CHECK_NEAR(am_f16_to_f32(((const uint16_t *)t->data)[0]), -4.0, 0);
        CHECK_NEAR(am_f16_to_f32(((const uint16_t *)t->data)[63]), 4.0, 0);
    }
    /* bf16 and the quantized tensors decode to what the Python side computed. */
    const am_ckpt_tensor *x = am_ckpt_find(c, "f32");
    CHECK_OK(am_ckpt_get(c, "bf16", 2, (int64_t[]){1, 32}, &t));
    if (t && x) {
        float d[32];
        am_dequantize_row(AM_DTYPE_BF16, t->data, d, 32);
        for (int i = 0; i < 32; i++) {
            float want = ((const float *)x->data)[i];
            CHECK_NEAR(d[i], want, fabsf(want) / 256 + 1e-30);
        }
    }
    static const char *const qn[2][2] = {{"q8_0", "q8_0.ref"}, {"q4_0", "q4_0.ref"}};
    for (int k = 0; k < 2; k++) {
        const am_ckpt_tensor *qt = am_ckpt_find(c, qn[k][0]), *ref = am_ckpt_find(c, qn[k][1]);
        CHECK(qt && ref);
        if (!qt || !ref) continue;
        CHECK_EQ_INT(qt->dtype, k == 0 ? AM_DTYPE_Q8_0 : AM_DTYPE_Q4_0);
        CHECK(qt->shape[0] == 2 && qt->shape[1] == 64 && ref->shape[1] == 64);
        float d[128];
        size_t rb = am_dtype_row_bytes(qt->dtype, 64);
        for (int r = 0; r < 2; r++)
            am_dequantize_row(qt->dtype, (const uint8_t *)qt->data + r * rb, d + r * 64, 64);
        int bad = 0;
        for (int i = 0; i < 128; i++)
            bad += d[i] != ((const float *)ref->data)[i];
        CHECK_EQ_INT(bad, 0);
        /* Our quantizer matches ggml's bit for bit on the same input. */
        uint8_t mine[2 * 2 * 34]; /* 2 rows of 2 blocks */
        for (int r = 0; r < 2; r++)
            am_quantize_row(qt->dtype, (const float *)x->data + r * 64, mine + r * rb, 64);
        CHECK(memcmp(mine, qt->data, 2 * rb) == 0);
    }
    am_ckpt_destroy(&c);
}

/* ---- llama2.c. ------------------------------------------------------------------------ */

static void test_llama2c_python_fixture(void) {
    char path[1024];
    AM_SRC_PATH("tests/golden/formats/py_llama2c.bin", path);
    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(path, &c));
    if (!c) return;
    CHECK_OK(am__ckpt_validate(c));
    CHECK_EQ_INT(am_ckpt_get_format(c), AM_CKPT_LLAMA2C);
    /* dim 8, hidden 16, 2 layers, 2 heads (hs 4), 1 kv head, vocab 10 unshared,
     * seq_len 4. Every float holds its index in the body. */
    int64_t v;
    CHECK_OK(am_ckpt_meta_int(c, "llama2c.vocab_size", &v));
    CHECK_EQ_INT(v, 10);
    CHECK_OK(am_ckpt_meta_int(c, "llama2c.shared_classifier", &v));
    CHECK_EQ_INT(v, 0);
    CHECK_OK(am_ckpt_meta_int(c, "llama2c.n_kv_heads", &v));
    CHECK_EQ_INT(v, 1);
    CHECK_EQ_INT(am_ckpt_n_tensors(c), 2 + 9 * 2 + 1);
    static const struct {
        const char *name;
        int n_dims;
        int64_t shape[2];
        float first;
    } want[] = {
        {"tok_embeddings.weight", 2, {10, 8}, 0},
        {"layers.0.attention_norm.weight", 1, {8}, 80},
        {"layers.1.attention_norm.weight", 1, {8}, 88},
        {"layers.0.attention.wq.weight", 2, {8, 8}, 96},
        {"layers.1.attention.wq.weight", 2, {8, 8}, 160},
        {"layers.0.attention.wk.weight", 2, {4, 8}, 224},
        {"layers.1.attention.wk.weight", 2, {4, 8}, 256},
        {"layers.0.attention.wv.weight", 2, {4, 8}, 288},
        {"layers.0.attention.wo.weight", 2, {8, 8}, 352},
        {"layers.0.ffn_norm.weight", 1, {8}, 480},
        {"layers.0.feed_forward.w1.weight", 2, {16, 8}, 496},
        {"layers.1.feed_forward.w1.weight", 2, {16, 8}, 624},
        {"layers.0.feed_forward.w2.weight", 2, {8, 16}, 752},
        {"layers.0.feed_forward.w3.weight", 2, {16, 8}, 1008},
        {"layers.1.feed_forward.w3.weight", 2, {16, 8}, 1136},
        {"norm.weight", 1, {8}, 1264},
        /* freq_cis: 2 * 4 * 2 floats skipped */
        {"output.weight", 2, {10, 8}, 1288},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const am_ckpt_tensor *t;
        CHECK_OK(am_ckpt_get(c, want[i].name, want[i].n_dims, want[i].shape, &t));
        if (t) {
            CHECK_EQ_INT(t->dtype, AM_DTYPE_F32);
            CHECK_NEAR(((const float *)t->data)[0], want[i].first, 0);
        }
    }
    const am_ckpt_tensor *o = am_ckpt_find(c, "output.weight");
    CHECK(o && ((const float *)o->data)[79] == 1288 + 79);
    am_ckpt_destroy(&c);
}

static float *rand_floats(size_t n) {
    float *p = malloc(n * 4 + 4);
    for (size_t i = 0; i < n; i++)
        p[i] = rndf();
    return p;
}

static void llama2c_roundtrip(int shared) {
    am_llama2c_config cfg = {.dim = 16,
                             .hidden_dim = 40,
                             .n_layers = 3,
                             .n_heads = 4,
                             .n_kv_heads = 2,
                             .vocab_size = 11,
                             .seq_len = 6,
                             .shared_classifier = shared};
    int64_t D = 16, H = 40, L = 3, KV = 2 * 4, V = 11;
    am_llama2c_weights w = {
        .token_embedding_table = rand_floats((size_t)(V * D)),
        .rms_att_weight = rand_floats((size_t)(L * D)),
        .wq = rand_floats((size_t)(L * D * D)),
        .wk = rand_floats((size_t)(L * KV * D)),
        .wv = rand_floats((size_t)(L * KV * D)),
        .wo = rand_floats((size_t)(L * D * D)),
        .rms_ffn_weight = rand_floats((size_t)(L * D)),
        .w1 = rand_floats((size_t)(L * H * D)),
        .w2 = rand_floats((size_t)(L * D * H)),
        .w3 = rand_floats((size_t)(L * H * D)),
        .rms_final_weight = rand_floats((size_t)D),
        .wcls = rand_floats((size_t)(V * D)),
    };
    char path[600];
    tpath(shared ? "rt_shared.bin" : "rt_unshared.bin", path, sizeof path);
    CHECK_OK(am_llama2c_write(path, &cfg, &w));
    struct stat st;
    CHECK(stat(path, &st) == 0);
    int64_t floats = V * D + L * D * 2 + L * D * D * 2 + L * KV * D * 2 + L * H * D * 3 + D +
                     2 * 6 * 2 + (shared ? 0 : V * D);
    CHECK_EQ_INT(st.st_size, 28 + 4 * floats);
    am_ckpt *c = NULL;
    CHECK_OK(am_ckpt_open(path, &c));
    if (!c) return;
    CHECK_OK(am__ckpt_validate(c));
    CHECK_EQ_INT(am_ckpt_n_tensors(c), 2 + 9 * L + 1);
    int64_t v;
    CHECK_OK(am_ckpt_meta_int(c, "llama2c.shared_classifier", &v));
    CHECK_EQ_INT(v, shared);
    CHECK_OK(am_ckpt_meta_int(c, "llama2c.hidden_dim", &v));
    CHECK_EQ_INT(v, 40);
    static const struct {
        const char *fmt;
        int rows, cols; /* 0 = D, 1 = H, 2 = KV, 3 = V, -1 = vector */
    } per_layer[] = {
        {"layers.%d.attention_norm.weight", 0, -1}, {"layers.%d.attention.wq.weight", 0, 0},
        {"layers.%d.attention.wk.weight", 2, 0},    {"layers.%d.attention.wv.weight", 2, 0},
        {"layers.%d.attention.wo.weight", 0, 0},    {"layers.%d.ffn_norm.weight", 0, -1},
        {"layers.%d.feed_forward.w1.weight", 1, 0}, {"layers.%d.feed_forward.w2.weight", 0, 1},
        {"layers.%d.feed_forward.w3.weight", 1, 0},
    };
    const float *src[9] = {w.rms_att_weight, w.wq, w.wk, w.wv, w.wo,
                           w.rms_ffn_weight, w.w1, w.w2, w.w3};
    int64_t dimv[4] = {D, H, KV, V};
    for (int k = 0; k < 9; k++) {
        for (int l = 0; l < L; l++) {
            char name[96];
            snprintf(name, sizeof name, per_layer[k].fmt, l);
            int64_t rows = dimv[per_layer[k].rows];
            int64_t cols = per_layer[k].cols < 0 ? 1 : dimv[per_layer[k].cols];
            const am_ckpt_tensor *t;
            if (per_layer[k].cols < 0)
                CHECK_OK(am_ckpt_get(c, name, 1, (int64_t[]){rows}, &t));
            else
                CHECK_OK(am_ckpt_get(c, name, 2, (int64_t[]){rows, cols}, &t));
            if (t) CHECK(memcmp(t->data, src[k] + l * rows * cols, (size_t)(rows * cols) * 4) == 0);
        }
    }
    const am_ckpt_tensor *tok = am_ckpt_find(c, "tok_embeddings.weight");
    const am_ckpt_tensor *out = am_ckpt_find(c, "output.weight");
    const am_ckpt_tensor *norm = am_ckpt_find(c, "norm.weight");
    CHECK(tok && out && norm);
    if (tok && out && norm) {
        CHECK(memcmp(tok->data, w.token_embedding_table, (size_t)(V * D) * 4) == 0);
        CHECK(memcmp(norm->data, w.rms_final_weight, (size_t)D * 4) == 0);
        CHECK_EQ_INT(out->shape[0], V);
        CHECK_EQ_INT(out->shape[1], D);
        if (shared)
            CHECK(out->data == tok->data);
        else
            CHECK(memcmp(out->data, w.wcls, (size_t)(V * D) * 4) == 0);
    }
    am_ckpt_destroy(&c);
    const float *all[] = {w.token_embedding_table,
                          w.rms_att_weight,
                          w.wq,
                          w.wk,
                          w.wv,
                          w.wo,
                          w.rms_ffn_weight,
                          w.w1,
                          w.w2,
                          w.w3,
                          w.rms_final_weight,
                          w.wcls};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free((void *)all[i]);
}

static void test_llama2c_roundtrip(void) {
    llama2c_roundtrip(1);
    llama2c_roundtrip(0);
    /* Writer refuses what the reader would refuse. */
    am_llama2c_config bad = {8, 16, 1, 3, 1, 10, 4, 1};
    am_llama2c_weights w = {0};
    char path[600];
    tpath("bad.bin", path, sizeof path);
    CHECK_EQ_INT(am_llama2c_write(path, &bad, &w), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "n_heads") != NULL);
    bad.n_heads = 2;
    CHECK_EQ_INT(am_llama2c_write(path, &bad, &w), AM_EINVAL); /* NULL weights */
    CHECK(access(path, F_OK) != 0);
}

/* ---- Hostile files. ----------------------------------------------------------------- */

/* A growable byte buffer for building files by hand. */
typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;
static void bb_put(bb *b, const void *p, size_t n) {
    if (n == 0) return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void bb_u32(bb *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(bb *b, const char *s) {
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}
static void bb_zeros(bb *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        bb_put(b, "", 1);
}
static void bb_pad(bb *b, size_t align) {
    while (b->n % align)
        bb_put(b, "", 1);
}

/* safetensors from a header string and data_len zero bytes (header not padded). */
static void st_file(bb *b, const char *json, size_t data_len) {
    bb_u64(b, strlen(json));
    bb_put(b, json, strlen(json));
    bb_zeros(b, data_len);
}

/* GGUF file description: up to 2 tensors, optional raw extra key/values. */
typedef struct gt {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    uint64_t offset;
} gt;
typedef struct gspec {
    const char *magic; /* default "GGUF" */
    uint32_t version;  /* default 3 */
    int n_tensors;
    gt t[2];
    uint64_t n_tensors_field, n_kv_field; /* 0 = the real counts */
    void (*extra_kv)(bb *);               /* appends raw key/values after "general.name" */
    int n_extra_kv;
    size_t data_bytes;
} gspec;

static void gguf_file(bb *b, const gspec *g) {
    bb_put(b, g->magic ? g->magic : "GGUF", 4);
    bb_u32(b, g->version ? g->version : 3);
    bb_u64(b, g->n_tensors_field ? g->n_tensors_field : (uint64_t)g->n_tensors);
    bb_u64(b, g->n_kv_field ? g->n_kv_field : (uint64_t)(1 + g->n_extra_kv));
    bb_str(b, "general.name");
    bb_u32(b, AM_GGUF_STRING);
    bb_str(b, "hostile");
    if (g->extra_kv) g->extra_kv(b);
    for (int i = 0; i < g->n_tensors; i++) {
        const gt *t = &g->t[i];
        bb_u64(b, strlen(t->name) + (t->name[0] == 0 ? 3 : 0)); /* "" -> "\0ab" */
        bb_put(b, t->name[0] ? t->name : "\0ab", strlen(t->name) + (t->name[0] == 0 ? 3 : 0));
        bb_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            bb_u64(b, t->ne[d]);
        bb_u32(b, t->type);
        bb_u64(b, t->offset);
    }
    bb_pad(b, 32);
    bb_zeros(b, g->data_bytes);
}

static void kv_key_len_huge(bb *b) { bb_u64(b, 1ull << 63); }
static void kv_key_len_past_end(bb *b) {
    bb_u64(b, 1000);
    bb_put(b, "k", 1);
}
static void kv_str_len_huge(bb *b) {
    bb_str(b, "k.str");
    bb_u32(b, AM_GGUF_STRING);
    bb_u64(b, 1ull << 50);
}
static void kv_arr_len_huge(bb *b) {
    bb_str(b, "k.arr");
    bb_u32(b, AM_GGUF_ARRAY);
    bb_u32(b, AM_GGUF_U32);
    bb_u64(b, 1ull << 61);
}
static void kv_str_arr_len_huge(bb *b) {
    bb_str(b, "k.strs");
    bb_u32(b, AM_GGUF_ARRAY);
    bb_u32(b, AM_GGUF_STRING);
    bb_u64(b, 1ull << 40);
}
static void kv_str_arr_elem_past_end(bb *b) {
    bb_str(b, "k.strs");
    bb_u32(b, AM_GGUF_ARRAY);
    bb_u32(b, AM_GGUF_STRING);
    bb_u64(b, 2);
    bb_str(b, "ok");
    bb_u64(b, 4096);
}
static void kv_bad_type(bb *b) {
    bb_str(b, "k.type");
    bb_u32(b, 13);
    bb_u32(b, 0);
}
static void kv_bad_elem_type(bb *b) {
    bb_str(b, "k.elem");
    bb_u32(b, AM_GGUF_ARRAY);
    bb_u32(b, 99);
    bb_u64(b, 0);
}
static void kv_nested_deep(bb *b) {
    bb_str(b, "k.deep");
    bb_u32(b, AM_GGUF_ARRAY);
    for (int i = 0; i < 12; i++) {
        bb_u32(b, AM_GGUF_ARRAY);
        bb_u64(b, 1);
    }
    bb_u32(b, AM_GGUF_U8);
    bb_u64(b, 1);
    bb_put(b, "x", 1);
    bb_zeros(b, 64);
}
static void kv_align3(bb *b) {
    bb_str(b, "general.alignment");
    bb_u32(b, AM_GGUF_U32);
    bb_u32(b, 3);
}
static void kv_align_str(bb *b) {
    bb_str(b, "general.alignment");
    bb_u32(b, AM_GGUF_STRING);
    bb_str(b, "32");
}
static void kv_dup_key(bb *b) {
    bb_str(b, "general.name");
    bb_u32(b, AM_GGUF_U8);
    bb_put(b, "x", 1);
}
static void kv_key_bad_utf8(bb *b) {
    bb_str(b, "k\xc0\xafz");
    bb_u32(b, AM_GGUF_U8);
    bb_put(b, "x", 1);
}
static void kv_align64(bb *b) {
    bb_str(b, "general.alignment");
    bb_u32(b, AM_GGUF_U32);
    bb_u32(b, 64);
}

static char g_long_name[AM_CKPT_MAX_NAME_BYTES + 2];

/* llama2.c: header then body_floats zero floats. */
static void l2c_file(bb *b, const int32_t h[7], int64_t body_floats) {
    bb_put(b, h, 28);
    bb_zeros(b, (size_t)body_floats * 4);
}

/* Floats after the header for dim 8, hidden 16, 1 layer, 2 heads, 1 kv head,
 * vocab 10, seq_len 4: emb 80, rms 8, wq 64, wk 32, wv 32, wo 64, rms 8,
 * w1 128, w2 128, w3 128, final 8, freq 2*4*2 = 16; wcls 80 if unshared. */
#define L2C_SHARED_FLOATS (80 + 8 + 64 + 32 + 32 + 64 + 8 + 128 * 3 + 8 + 16)

typedef struct hostile {
    const char *label;
    const char *file;
    int kind; /* 0 safetensors json, 1 gguf, 2 llama2.c, 3 raw bytes */
    const char *json;
    size_t data_len;
    gspec g;
    int32_t h[7];
    int64_t body_floats;
    const char *raw;
    size_t raw_len;
    int code;
    const char *field;
} hostile;

#define ST(lbl, js, dl, c, fld)                                                                    \
    { lbl, lbl ".safetensors", 0, js, dl, {0}, {0}, 0, NULL, 0, c, fld }
#define GG(lbl, c, fld, ...)                                                                       \
    { lbl, lbl ".gguf", 1, NULL, 0, __VA_ARGS__, {0}, 0, NULL, 0, c, fld }
#define L2(lbl, c, fld, h, nf)                                                                     \
    { lbl, lbl ".bin", 2, NULL, 0, {0}, h, nf, NULL, 0, c, fld }
#define W8(n)                                                                                      \
    { "w", 1, {n}, 0, 0 }
#define HDR(a, b, c, d, e, f, g)                                                                   \
    { a, b, c, d, e, f, g }

static const hostile hostile_cases[] = {
    /* safetensors */
    ST("st_bad_json", "{\"w\":{\"dtype\":\"F32\",", 0, AM_EFORMAT, "JSON"),
    ST("st_trailing", "{} x", 0, AM_EFORMAT, "trailing"),
    ST("st_not_object", "{\"w\":5}", 0, AM_EFORMAT, "'w'"),
    ST("st_unknown_dtype", "{\"w\":{\"dtype\":\"X9\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       AM_EFORMAT, "'w'"),
    ST("st_fp8", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
       AM_EUNSUPPORTED, "'w'"),
    ST("st_no_dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, AM_EFORMAT, "dtype"),
    ST("st_neg_dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,2],\"data_offsets\":[0,4]}}", 4,
       AM_EFORMAT, "shape[0]"),
    ST("st_frac_dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
       AM_EFORMAT, "shape[0]"),
    ST("st_str_dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
       AM_EFORMAT, "shape[0]"),
    ST("st_big_dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4,
       AM_EFORMAT, "shape[0]"),
    ST("st_dims_overflow",
       "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
       "\"data_offsets\":[0,4]}}",
       4, AM_ERANGE, "'w'"),
    ST("st_5_dims", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
       AM_EUNSUPPORTED, "'w'"),
    ST("st_size_mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
       AM_EFORMAT, "data_offsets"),
    ST("st_out_of_file", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
       AM_EFORMAT, "data_offsets"),
    ST("st_reversed", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
       AM_EFORMAT, "'w'"),
    ST("st_offsets_huge",
       "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,0]}}", 8,
       AM_EFORMAT, "data_offsets"),
    ST("st_offsets_short", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 8,
       AM_EFORMAT, "data_offsets"),
    ST("st_overlap",
       "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
       12, AM_EFORMAT, "'a' and 'b' overlap"),
    ST("st_duplicate",
       "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
       8, AM_EFORMAT, "duplicate tensor name 'a'"),
    ST("st_bad_utf8", "{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       AM_EFORMAT, "UTF-8"),
    ST("st_overlong_utf8", "{\"w\xc0\xaf\":{}}", 0, AM_EFORMAT, "UTF-8"),
    ST("st_meta_nonstring", "{\"__metadata__\":{\"k\":1}}", 0, AM_EFORMAT, "'k'"),
    ST("st_meta_not_object", "{\"__metadata__\":[]}", 0, AM_EFORMAT, "__metadata__"),
    ST("st_meta_dup", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, AM_EFORMAT, "'k'"),
    ST("st_root_array", "[]", 0, AM_EFORMAT, "'{'"),
    {"st_len_too_big",
     "st_len_too_big.safetensors",
     3,
     NULL,
     0,
     {0},
     {0},
     0,
     "\x00\x00\x00\x10\x00\x00\x00\x00{}",
     10,
     AM_ERANGE,
     "header length"},
    {"st_len_past_end",
     "st_len_past_end.safetensors",
     3,
     NULL,
     0,
     {0},
     {0},
     0,
     "\xe8\x03\x00\x00\x00\x00\x00\x00{}",
     10,
     AM_EFORMAT,
     "header length"},
    {"st_truncated",
     "st_truncated.safetensors",
     3,
     NULL,
     0,
     {0},
     {0},
     0,
     "\x02\x00\x00",
     3,
     AM_EFORMAT,
     "truncated"},
    {"st_empty", "st_empty.safetensors", 3, NULL, 0, {0}, {0}, 0, "", 0, AM_EFORMAT, "truncated"},
    /* GGUF */
    GG("gg_bad_magic", AM_EFORMAT, "magic", {.magic = "GGUX"}),
    GG("gg_version1", AM_EUNSUPPORTED, "version", {.version = 1}),
    GG("gg_big_endian", AM_EUNSUPPORTED, "big-endian", {.version = 0x03000000}),
    GG("gg_n_tensors_huge", AM_ERANGE, "n_tensors", {.n_tensors_field = 1ull << 40}),
    GG("gg_n_tensors_absurd", AM_EFORMAT, "n_tensors", {.n_tensors_field = 5000}),
    GG("gg_n_kv_absurd", AM_EFORMAT, "n_kv", {.n_kv_field = 1ull << 60}),
    GG("gg_n_kv_short", AM_EFORMAT, "n_kv", {.n_kv_field = 4}),
    GG("gg_key_len_huge", AM_ERANGE, "metadata key 1",
       {.extra_kv = kv_key_len_huge, .n_extra_kv = 1, .data_bytes = 64}),
    GG("gg_key_past_end", AM_EFORMAT, "metadata key 1",
       {.extra_kv = kv_key_len_past_end, .n_extra_kv = 1, .data_bytes = 64}),
    GG("gg_str_len_huge", AM_EFORMAT, "'k.str'", {.extra_kv = kv_str_len_huge, .n_extra_kv = 1}),
    GG("gg_arr_len_huge", AM_EFORMAT, "'k.arr'", {.extra_kv = kv_arr_len_huge, .n_extra_kv = 1}),
    GG("gg_str_arr_huge", AM_EFORMAT, "'k.strs'",
       {.extra_kv = kv_str_arr_len_huge, .n_extra_kv = 1}),
    GG("gg_str_arr_elem", AM_EFORMAT, "'k.strs'",
       {.extra_kv = kv_str_arr_elem_past_end, .n_extra_kv = 1}),
    GG("gg_bad_type", AM_EFORMAT, "'k.type'", {.extra_kv = kv_bad_type, .n_extra_kv = 1}),
    GG("gg_bad_elem_type", AM_EFORMAT, "'k.elem'", {.extra_kv = kv_bad_elem_type, .n_extra_kv = 1}),
    GG("gg_nested_deep", AM_EFORMAT, "'k.deep'", {.extra_kv = kv_nested_deep, .n_extra_kv = 1}),
    GG("gg_align3", AM_EFORMAT, "general.alignment", {.extra_kv = kv_align3, .n_extra_kv = 1}),
    GG("gg_align_str", AM_EFORMAT, "general.alignment",
       {.extra_kv = kv_align_str, .n_extra_kv = 1}),
    GG("gg_dup_key", AM_EFORMAT, "'general.name'", {.extra_kv = kv_dup_key, .n_extra_kv = 1}),
    GG("gg_key_utf8", AM_EFORMAT, "metadata key 1", {.extra_kv = kv_key_bad_utf8, .n_extra_kv = 1}),
    GG("gg_unsupported_type", AM_EUNSUPPORTED, "'w'",
       {.n_tensors = 1, .t = {{"w", 1, {32}, 12, 0}}, .data_bytes = 256}),
    GG("gg_misaligned", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 1, {8}, 0, 4}}, .data_bytes = 64}),
    GG("gg_misaligned64", AM_EFORMAT, "'w'",
       {.n_tensors = 1,
        .t = {{"w", 1, {8}, 0, 32}},
        .data_bytes = 128,
        .extra_kv = kv_align64,
        .n_extra_kv = 1}),
    GG("gg_offset_past_end", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 1, {8}, 0, 1024}}, .data_bytes = 32}),
    GG("gg_data_past_end", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 1, {16}, 0, 0}}, .data_bytes = 32}),
    GG("gg_offset_huge", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 1, {8}, 0, 0xffffffffffffffe0ull}}, .data_bytes = 32}),
    GG("gg_n_dims", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 5, {1, 1, 1, 1, 8}, 0, 0}}, .data_bytes = 32}),
    GG("gg_q8_ne0", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 1, {30}, 8, 0}}, .data_bytes = 64}),
    GG("gg_scalar_q8", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 0, {0}, 8, 0}}, .data_bytes = 64}),
    GG("gg_scalar_f32_ok_but_dup", AM_EFORMAT, "duplicate tensor name 'w'",
       {.n_tensors = 2, .t = {{"w", 0, {0}, 0, 0}, {"w", 1, {8}, 0, 32}}, .data_bytes = 64}),
    GG("gg_neg_dim", AM_EFORMAT, "'w'",
       {.n_tensors = 1, .t = {{"w", 1, {1ull << 63}, 0, 0}}, .data_bytes = 64}),
    GG("gg_dims_overflow", AM_ERANGE, "'w'",
       {.n_tensors = 1, .t = {{"w", 2, {1ull << 62, 1ull << 62}, 0, 0}}, .data_bytes = 64}),
    GG("gg_overlap", AM_EFORMAT, "overlap",
       {.n_tensors = 2, .t = {W8(8), {"v", 1, {8}, 0, 0}}, .data_bytes = 64}),
    GG("gg_dup_tensor", AM_EFORMAT, "duplicate tensor name 'w'",
       {.n_tensors = 2, .t = {W8(8), {"w", 1, {8}, 0, 32}}, .data_bytes = 64}),
    GG("gg_name_nul", AM_EFORMAT, "tensor 0",
       {.n_tensors = 1, .t = {{"", 1, {8}, 0, 0}}, .data_bytes = 32}),
    GG("gg_name_long", AM_ERANGE, "tensor 0",
       {.n_tensors = 1, .t = {{g_long_name, 1, {8}, 0, 0}}, .data_bytes = 32}),
    {"gg_truncated",
     "gg_truncated.gguf",
     3,
     NULL,
     0,
     {0},
     {0},
     0,
     "GGUF\x03\x00\x00\x00\x01",
     9,
     AM_EFORMAT,
     "truncated"},
    /* llama2.c */
    L2("l2_dim0", AM_EFORMAT, "dim = 0", HDR(0, 16, 1, 2, 1, 10, 4), 100),
    L2("l2_neg_hidden", AM_EFORMAT, "hidden_dim", HDR(8, -16, 1, 2, 1, 10, 4), 100),
    L2("l2_layers0", AM_EFORMAT, "n_layers", HDR(8, 16, 0, 2, 1, 10, 4), 100),
    L2("l2_vocab0", AM_EFORMAT, "vocab_size", HDR(8, 16, 1, 2, 1, 0, 4), 100),
    L2("l2_heads", AM_EFORMAT, "n_heads = 3", HDR(8, 16, 1, 3, 1, 10, 4), 100),
    L2("l2_kv_heads", AM_EFORMAT, "n_kv_heads = 3", HDR(8, 16, 1, 4, 3, 10, 4), 100),
    L2("l2_kv_gt_heads", AM_EFORMAT, "n_kv_heads = 4", HDR(8, 16, 1, 2, 4, 10, 4), 100),
    L2("l2_odd_head", AM_EFORMAT, "head_size", HDR(9, 16, 1, 3, 1, 10, 4), 100),
    L2("l2_short", AM_EFORMAT, "file size", HDR(8, 16, 1, 2, 1, 10, 4), L2C_SHARED_FLOATS - 1),
    L2("l2_long", AM_EFORMAT, "file size", HDR(8, 16, 1, 2, 1, 10, 4), L2C_SHARED_FLOATS + 1),
    L2("l2_unshared_short", AM_EFORMAT, "unshared", HDR(8, 16, 1, 2, 1, -10, 4), L2C_SHARED_FLOATS),
    L2("l2_huge", AM_EFORMAT, "file size",
       HDR(0x7ffffffc, 0x7fffffff, 0x7fffffff, 2, 1, 0x7fffffff, 0x7fffffff), 16),
    {"l2_tiny",
     "l2_tiny.bin",
     3,
     NULL,
     0,
     {0},
     {0},
     0,
     "\x08\x00\x00\x00",
     4,
     AM_EFORMAT,
     "too short"},
};

static void test_hostile_files(void) {
    memset(g_long_name, 'n', sizeof g_long_name - 1);
    /* Sanity: the llama2.c baseline (shared) is valid. */
    {
        bb b = {0};
        int32_t h[7] = {8, 16, 1, 2, 1, 10, 4};
        l2c_file(&b, h, L2C_SHARED_FLOATS);
        char p[600];
        write_bytes(tpath("l2_ok.bin", p, sizeof p), b.p, b.n);
        am_ckpt *c = NULL;
        CHECK_OK(am_ckpt_open(p, &c));
        am_ckpt_destroy(&c);
        free(b.p);
        /* And the GGUF baseline. */
        b = (bb){0};
        gspec g = {.n_tensors = 2, .t = {W8(8), {"v", 1, {8}, 0, 32}}, .data_bytes = 64};
        gguf_file(&b, &g);
        write_bytes(tpath("gg_ok.gguf", p, sizeof p), b.p, b.n);
        CHECK_OK(am_ckpt_open(p, &c));
        if (c) CHECK_EQ_INT(am_ckpt_n_tensors(c), 2);
        am_ckpt_destroy(&c);
        free(b.p);
    }
    int n = (int)(sizeof hostile_cases / sizeof hostile_cases[0]);
    for (int i = 0; i < n; i++) {
        const hostile *h = &hostile_cases[i];
        bb b = {0};
        switch (h->kind) {
        case 0: st_file(&b, h->json, h->data_len); break;
        case 1: gguf_file(&b, &h->g); break;
        case 2: l2c_file(&b, h->h, h->body_floats); break;
        default: bb_put(&b, h->raw, h->raw_len); break;
        }
        char p[600];
        tpath(h->file, p, sizeof p);
        CHECK(write_bytes(p, b.p ? b.p : (uint8_t *)"", b.n) == 0);
        free(b.p);
        expect_open_fail(p, h->code, h->file, h->field, h->label);
        unlink(p);
    }
    printf("     %d hostile files rejected as expected\n", n);
    /* Not a file at all. */
    expect_open_fail("/nonexistent/model.gguf", AM_ENOTFOUND, "/nonexistent/model.gguf", NULL,
                     "missing");
    expect_open_fail("/dev/null", AM_EFORMAT, "/dev/null", "regular", "device");
    char fifo[600];
    tpath("fifo.gguf", fifo, sizeof fifo);
    unlink(fifo);
    if (mkfifo(fifo, 0600) == 0) {
        expect_open_fail(fifo, AM_EFORMAT, "fifo.gguf", "regular", "fifo");
        unlink(fifo);
    }
}

/* ---- Fuzzing. ------------------------------------------------------------------------ */

/* Opens path; on success every tensor must lie in its mapping and be readable. */
static int open_and_touch(const char *path, int *ok_count) {
    am_ckpt *c = NULL;
    am_err_clear();
    int rc = am_ckpt_open(path, &c);
    if (rc == 0) {
        (*ok_count)++;
        if (am__ckpt_validate(c) != 0) {
            fprintf(stderr, "validate failed: %s\n", am_err_msg());
            am_test_failures++;
        }
        volatile uint8_t sink = 0;
        for (int64_t i = 0; i < am_ckpt_n_tensors(c); i++) {
            const am_ckpt_tensor *t = am_ckpt_tensor_at(c, i);
            const uint8_t *d = t->data;
            for (size_t k = 0; k < t->nbytes; k += 512)
                sink ^= d[k];
            if (t->nbytes) sink ^= d[t->nbytes - 1];
        }
        (void)sink;
        /* Metadata getters on every key type must not fault either. */
        am_ckpt_array a;
        const char *s;
        size_t len;
        if (am_ckpt_meta_array(c, "tokenizer.ggml.tokens", &a) == 0)
            for (uint64_t k = 0; k < a.n; k++)
                am_ckpt_array_str(&a, k, &s, &len);
        am_ckpt_destroy(&c);
    } else if (rc >= 0 || !am_err_msg()[0]) {
        fprintf(stderr, "open returned %d without a message\n", rc);
        am_test_failures++;
    }
    return rc;
}

static void fuzz_one(const char *label, const char *src, const char *ext, int iters) {
    /* AM_FORMATS_FUZZ_SCALE=k runs k times as many mutations (for long soak runs). */
    const char *scale = getenv("AM_FORMATS_FUZZ_SCALE");
    if (scale && atoi(scale) > 1) iters *= atoi(scale);
    size_t n;
    uint8_t *orig = read_bytes(src, &n);
    CHECK(orig != NULL);
    if (!orig) return;
    uint8_t *buf = malloc(n + 64);
    char p[600], name[64];
    snprintf(name, sizeof name, "fuzz.%s", ext);
    tpath(name, p, sizeof p);
    int ok = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, orig, n);
        size_t len = n;
        /* Mutations concentrate on the first bytes, where the headers are. */
        size_t hot = n < 1024 ? n : 1024;
        switch (rnd() % 4) {
        case 0: /* flip 1..4 bits */
            for (int k = 0, m = 1 + (int)(rnd() % 4); k < m; k++)
                buf[rnd() % hot] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1: /* truncate */ len = (size_t)(rnd() % n); break;
        case 2: { /* an interesting 8-, 4- or 1-byte value somewhere in the header */
            static const uint64_t vals[] = {0,
                                            1,
                                            0xff,
                                            0x7fffffff,
                                            0x80000000,
                                            0xffffffff,
                                            1ull << 32,
                                            1ull << 62,
                                            0x7fffffffffffffffull,
                                            0xffffffffffffffffull,
                                            31,
                                            33,
                                            1000};
            uint64_t v = vals[rnd() % (sizeof vals / sizeof vals[0])];
            size_t w = (size_t[]){1, 4, 8}[rnd() % 3];
            if (hot > w) memcpy(buf + rnd() % (hot - w), &v, w);
            break;
        }
        default: /* random bytes over a short run */
            for (size_t k = rnd() % hot, m = 1 + rnd() % 16; m-- && k < n; k++)
                buf[k] = (uint8_t)rnd();
            break;
        }
        write_bytes(p, buf, len);
        open_and_touch(p, &ok);
    }
    printf("     fuzz %s: %d mutations, %d opened, %d rejected\n", label, iters, ok, iters - ok);
    unlink(p);
    free(buf);
    free(orig);
}

static void test_fuzz(void) {
    rng_state = 0x5eed5eed5eedull;
    char st[600], gg[600], l2[600], py[1024];
    am_tensor_src t[N_ST];
    make_st_set(t);
    am_kv_str meta[] = {{"format", "pt"}};
    CHECK_OK(am_safetensors_write(tpath("fz.safetensors", st, sizeof st), t, N_ST, meta, 1));
    free_src(t, N_ST);
    am_tensor_src g[N_GG];
    make_gguf_set(g);
    CHECK_OK(write_gguf_set(tpath("fz.gguf", gg, sizeof gg), g, N_GG));
    free_src(g, N_GG);
    AM_SRC_PATH("tests/golden/formats/py_llama2c.bin", l2);
    fuzz_one("safetensors", st, "safetensors", 1500);
    fuzz_one("gguf", gg, "gguf", 1500);
    AM_SRC_PATH("tests/golden/formats/py_all.gguf", py);
    fuzz_one("python gguf", py, "gguf", 1000);
    fuzz_one("llama2.c", l2, "bin", 500);
    /* No extension: detection by content only. */
    fuzz_one("safetensors (no ext)", st, "dat", 500);
    unlink(st);
    unlink(gg);
}

/* ---- Allocation failures. ---------------------------------------------------------- */

static void alloc_fail_open(const char *label, const char *path) {
    int k, clean = 0;
    for (k = 0; k < 2000; k++) {
        am_ckpt *c = NULL;
        am_alloc_fail_after(k);
        int rc = am_ckpt_open(path, &c);
        am_alloc_fail_after(-1);
        if (rc == 0) {
            am_ckpt_destroy(&c);
            break;
        }
        if (rc != AM_ENOMEM) {
            fprintf(stderr, "[%s] fail_after(%d): %d %s\n", label, k, rc, am_err_msg());
            am_test_failures++;
        } else {
            clean++;
        }
    }
    CHECK(k < 2000);
    printf("     %s: %d injected failures, all clean\n", label, clean);
}

static void test_alloc_failures(void) {
    char st[600], dir[600], gg[600], l2[1024], py[1024];
    am_tensor_src t[N_ST];
    make_st_set(t);
    CHECK_OK(am_safetensors_write(tpath("af.safetensors", st, sizeof st), t, N_ST, NULL, 0));
    tpath("af_dir", dir, sizeof dir);
    rm_rf(dir);
    mkdir(dir, 0755);
    CHECK_OK(am_safetensors_write_dir(dir, t, N_ST, 64));
    am_tensor_src g[N_GG];
    make_gguf_set(g);
    CHECK_OK(write_gguf_set(tpath("af.gguf", gg, sizeof gg), g, N_GG));
    AM_SRC_PATH("tests/golden/formats/py_llama2c.bin", l2);
    AM_SRC_PATH("tests/golden/formats/py_all.gguf", py);
    alloc_fail_open("safetensors", st);
    alloc_fail_open("sharded dir", dir);
    alloc_fail_open("gguf", gg);
    alloc_fail_open("python gguf", py);
    alloc_fail_open("llama2.c", l2);

    /* Writers: fail cleanly and leave no temporary files. */
    char out[600];
    int k;
    for (k = 0; k < 1000; k++) {
        am_alloc_fail_after(k);
        int rc = am_safetensors_write_dir(dir, t, N_ST, 64);
        am_alloc_fail_after(-1);
        if (rc == 0) break;
        CHECK_EQ_INT(rc, AM_ENOMEM);
    }
    CHECK(k < 1000);
    for (k = 0; k < 1000; k++) {
        am_alloc_fail_after(k);
        int rc = write_gguf_set(tpath("af_w.gguf", out, sizeof out), g, N_GG);
        am_alloc_fail_after(-1);
        if (rc == 0) break;
        CHECK_EQ_INT(rc, AM_ENOMEM);
    }
    CHECK(k < 1000);
    CHECK_EQ_INT(count_tmp_files(scratch()), 0);
    CHECK_EQ_INT(count_tmp_files(dir), 0);
    rm_rf(dir);
    free_src(t, N_ST);
    free_src(g, N_GG);
}

/* The string map (core/strmap.h) the checkpoint readers index names with: 20,000
 * keys through several doublings, keys that are prefixes of each other and
 * embedded NULs, duplicates refused with the first value, misses. */
static void test_strmap(void) {
    enum { N = 20000 };
    char *keys = malloc((size_t)N * 16);
    am_strmap m = {0};
    CHECK_EQ_INT((int)am_strmap_get(&m, "x", 1), -1); /* empty */
    for (int i = 0; i < N; i++) {
        snprintf(keys + i * 16, 16, "k%d", i);
        CHECK_EQ_INT(am_strmap_put(&m, keys + i * 16, strlen(keys + i * 16), i, NULL), 0);
    }
    CHECK(m.n == N && m.cap >= 2 * N);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += am_strmap_get(&m, keys + i * 16, strlen(keys + i * 16)) != i;
    CHECK_EQ_INT(bad, 0);
    int64_t first = -1;
    CHECK_EQ_INT(am_strmap_put(&m, "k17", 3, 99, &first), 1);
    CHECK(first == 17 && am_strmap_get(&m, "k17", 3) == 17 && m.n == N);
    CHECK(am_strmap_get(&m, "k1", 2) == 1 && am_strmap_get(&m, "k", 1) == -1 &&
          am_strmap_get(&m, "k20000", 6) == -1);
    const char nul[] = {'a', 0, 'b'};
    CHECK_EQ_INT(am_strmap_put(&m, nul, 3, -7, NULL), 0);
    CHECK(am_strmap_get(&m, nul, 3) == -7 && am_strmap_get(&m, nul, 1) == -1);
    am_strmap_free(&m);
    CHECK(m.slots == NULL && m.n == 0);
    am_strmap_free(&m); /* twice is fine */
    CHECK_OK(am_strmap_reserve(&m, 1000));
    const size_t cap = m.cap;
    for (int i = 0; i < 1000; i++)
        CHECK_EQ_INT(am_strmap_put(&m, keys + i * 16, strlen(keys + i * 16), i, NULL), 0);
    CHECK(m.cap == cap); /* reserved: no growth */
    am_strmap_free(&m);
    free(keys);
}

AM_TEST_MAIN(AM_TEST(test_strmap), AM_TEST(test_safetensors_roundtrip),
             AM_TEST(test_safetensors_dir), AM_TEST(test_safetensors_index_errors),
             AM_TEST(test_safetensors_python_fixture), AM_TEST(test_gguf_roundtrip),
             AM_TEST(test_gguf_python_fixture), AM_TEST(test_llama2c_python_fixture),
             AM_TEST(test_llama2c_roundtrip), AM_TEST(test_hostile_files), AM_TEST(test_fuzz),
             AM_TEST(test_alloc_failures))
