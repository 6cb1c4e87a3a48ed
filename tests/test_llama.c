/* tests/test_llama.c - the decoder against references (golden) and its error paths (unit).
 *
 * Golden: logits of a random-init GQA LlamaForCausalLM from HF transformers
 * (tests/golden/llama/hf_gqa, made by gen_hf_llama.py), greedy ids of
 * llama2.c's run.c on an `anymal mkmodel` checkpoint, one model in three
 * formats, and the reduced-precision weight paths against f32.
 */
#include "core/alloc.h"
#include "core/backend_open.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "llm_shards/llama.h"
#include "llm_shards/mkmodel.h"
#include "llm_shards/model_files.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_path(const char *name, char *buf, size_t cap) {
    if ((size_t)snprintf(buf, cap, "%s/%s", tmpdir, name) >= cap) abort();
    return buf;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

static int json_ids(const cJSON *root, const char *key, int32_t *ids, int cap) {
    const cJSON *arr = cJSON_GetObjectItem(root, key);
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (n < cap) ids[n++] = (int32_t)v->valuedouble;
    }
    return n;
}

static am_backend *cpu(void) {
    am_backend *be = NULL;
    CHECK_OK(am_cpu_backend_new(2, &be));
    return be;
}

/* Greedy generation of n tokens (EOS ignored) from prompt ids; returns the count. */
static int greedy(const am_llama_model *m, am_backend *be, const int32_t *prompt, int n_prompt,
                  int n_gen, int32_t *out) {
    am_llama_ctx *ctx = NULL;
    CHECK_OK(am_llama_ctx_new(m, be, n_prompt + n_gen, 64, &ctx));
    if (!ctx) return 0;
    am_gen_params gp = {.sampling = am_sampling_default(), .max_tokens = n_gen, .ignore_eos = 1};
    am_gen_result r;
    int n = 0;
    CHECK_OK(am_generate(ctx, NULL, prompt, n_prompt, &gp, NULL, NULL, &r));
    for (int64_t i = 0; i < r.n_ids; i++)
        out[n++] = r.ids[i];
    am_gen_result_fini(&r);
    am_llama_ctx_destroy(&ctx);
    return n;
}

/* ---- HF transformers golden ---------------------------------------------- */

static void test_hf_logits(void) {
    char dir[512], path[600];
    AM_SRC_PATH("tests/golden/llama/hf_gqa", dir);
    snprintf(path, sizeof path, "%s/golden.json", dir);
    char *json = read_file(path, NULL);
    CHECK(json != NULL);
    if (!json) return;
    cJSON *root = cJSON_Parse(json);
    int32_t prompt[64], want[64];
    int n_prompt = json_ids(root, "prompt_ids", prompt, 64);
    int n_want = json_ids(root, "greedy_ids", want, 64);
    CHECK_EQ_INT(n_prompt, 32);
    snprintf(path, sizeof path, "%s/logits.f32", dir);
    size_t nbytes;
    float *ref = (float *)read_file(path, &nbytes);

    am_llama_model *m = NULL;
    CHECK_OK(am_llama_load(dir, &m));
    if (!m || !ref) return;
    CHECK_EQ_INT(m->cfg.n_kv_heads, 2);
    CHECK_EQ_INT(m->rope_layout, AM_ROPE_HALVES);
    int V = m->cfg.vocab_size;
    CHECK_EQ_INT(nbytes, (size_t)n_prompt * V * 4);
    am_backend *be = cpu();
    float *logits = malloc((size_t)n_prompt * V * sizeof(float));

    /* Whole prompt in one chunk, then one token at a time: both match HF at every position. */
    for (int chunk = 0; chunk < 2; chunk++) {
        am_llama_ctx *ctx = NULL;
        CHECK_OK(am_llama_ctx_new(m, be, 128, chunk ? 1 : 32, &ctx));
        CHECK_OK(am_llama_eval(ctx, prompt, NULL, n_prompt, logits, 1));
        double max_err = 0;
        for (int64_t i = 0; i < (int64_t)n_prompt * V; i++)
            max_err = fmax(max_err, fabs(logits[i] - ref[i]));
        printf("  hf logits (chunk %s): max abs err %.3g over %d positions\n", chunk ? "1" : "32",
               max_err, n_prompt);
        CHECK(max_err < 1e-4);
        am_llama_ctx_destroy(&ctx);
    }
    int32_t got[64];
    int n_got = greedy(m, be, prompt, n_prompt, n_want, got);
    CHECK_EQ_INT(n_got, n_want);
    for (int i = 0; i < n_want && i < n_got; i++)
        CHECK_EQ_INT(got[i], want[i]);

    free(logits);
    free(ref);
    free(json);
    cJSON_Delete(root);
    am_backend_destroy(&be);
    am_llama_destroy(&m);
}

/* ---- one model, three formats ---------------------------------------------- */

static int make(const char *shape, int layers, am_model_format fmt, am_dtype dt, uint64_t seed,
                const char *out, const char *tokenizer) {
    am_mkmodel_opts o = {.shape = shape,
                         .n_layers = layers,
                         .format = fmt,
                         .dtype = dt,
                         .seed = seed,
                         .out = out,
                         .tokenizer = tokenizer};
    int rc = am_mkmodel_write(&o);
    if (rc) fprintf(stderr, "mkmodel %s: %s\n", out, am_err_msg());
    return rc;
}

static void test_formats_agree(void) {
    char st[300], gg[300], l2[300];
    tmp_path("tiny-st", st, sizeof st);
    tmp_path("tiny.gguf", gg, sizeof gg);
    tmp_path("l2c/tiny.bin", l2, sizeof l2);
    char l2dir[300];
    mkdir(tmp_path("l2c", l2dir, sizeof l2dir), 0755);
    CHECK_OK(make("tiny", 0, AM_FORMAT_SAFETENSORS, AM_DTYPE_F32, 42, st, NULL));
    CHECK_OK(make("tiny", 0, AM_FORMAT_GGUF, AM_DTYPE_F32, 42, gg, NULL));
    CHECK_OK(make("tiny", 0, AM_FORMAT_LLAMA2C, AM_DTYPE_F32, 42, l2, NULL));
    /* The same model split into shards of at most 200 kB (model.safetensors.index.json). */
    char sh[300], index[400];
    am_mkmodel_opts so = {.shape = "tiny",
                          .format = AM_FORMAT_SAFETENSORS,
                          .dtype = AM_DTYPE_F32,
                          .seed = 42,
                          .out = tmp_path("tiny-sharded", sh, sizeof sh),
                          .shard_bytes = 200000};
    CHECK_OK(am_mkmodel_write(&so));
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", sh);
    CHECK(access(index, R_OK) == 0);
    enum { N_FORMATS = 4 };
    const char *paths[N_FORMATS] = {st, gg, l2, sh};
    const am_rope_layout layouts[N_FORMATS] = {AM_ROPE_HALVES, AM_ROPE_ADJACENT, AM_ROPE_ADJACENT,
                                               AM_ROPE_HALVES};
    int32_t prompt[8] = {1, 17, 300, 42, 99, 250, 7, 511};
    int32_t ids[N_FORMATS][48];
    float *last[N_FORMATS] = {0};
    am_backend *be = cpu();
    for (int f = 0; f < N_FORMATS; f++) {
        am_model_files mf;
        CHECK_OK(am_model_files_open(&mf, paths[f], NULL, 1));
        if (!mf.model) return;
        CHECK_EQ_INT(mf.model->rope_layout, layouts[f]);
        CHECK_EQ_INT(am_tokenizer_n_vocab(mf.tok), 512);
        CHECK_EQ_INT(greedy(mf.model, be, prompt, 8, 48, ids[f]), 48);
        am_llama_ctx *ctx = NULL;
        last[f] = malloc(512 * sizeof(float));
        CHECK_OK(am_llama_ctx_new(mf.model, be, 16, 8, &ctx));
        CHECK_OK(am_llama_eval(ctx, prompt, NULL, 8, last[f], 0));
        am_llama_ctx_destroy(&ctx);
        am_model_files_close(&mf);
    }
    for (int f = 1; f < N_FORMATS; f++) {
        for (int i = 0; i < 48; i++)
            CHECK_EQ_INT(ids[f][i], ids[0][i]);
        double err = 0;
        for (int i = 0; i < 512; i++)
            err = fmax(err, fabs(last[f][i] - last[0][i]));
        printf("  format %d vs safetensors: max abs logit diff %.3g\n", f, err);
        CHECK(err < 1e-4);
    }
    for (int f = 0; f < N_FORMATS; f++)
        free(last[f]);
    /* A tokenizer with more pieces than the model has rows is refused. */
    if (!am_test_no_shared_dir("tokenizer larger than the model")) {
        char big_tok[512];
        AM_SHARED_PATH("models/tokenizer.model", big_tok);
        am_model_files mf;
        CHECK_EQ_INT(am_model_files_open(&mf, st, big_tok, 1), AM_ESHAPE);
        CHECK(strstr(am_err_msg(), "32000 pieces") != NULL &&
              strstr(am_err_msg(), "only 512") != NULL);
    }
    am_backend_destroy(&be);
}

/* ---- llama2.c run.c golden ------------------------------------------------- */

static void test_llama2c_runc(void) {
    if (am_test_no_shared_dir("llama2.c run.c golden (needs tokenizer.bin)")) return;
    char fx[512], tok[512], out[300];
    AM_SRC_PATH("tests/golden/llama/llama2c_runc.json", fx);
    AM_SHARED_PATH("models/tokenizer.bin", tok);
    char *json = read_file(fx, NULL);
    CHECK(json != NULL);
    if (!json) return;
    cJSON *root = cJSON_Parse(json);
    const char *shape = cJSON_GetObjectItem(root, "shape")->valuestring;
    uint64_t seed = (uint64_t)cJSON_GetObjectItem(root, "seed")->valuedouble;
    int32_t prompt[256], want[256], got[256];
    int n_prompt = json_ids(root, "prompt_ids", prompt, 256);
    int n_want = json_ids(root, "gen_ids", want, 256);
    CHECK(n_prompt > 0 && n_want > 0);
    char dir[300];
    mkdir(tmp_path("runc", dir, sizeof dir), 0755);
    CHECK_OK(make(shape, 0, AM_FORMAT_LLAMA2C, AM_DTYPE_F32, seed,
                  tmp_path("runc/model.bin", out, sizeof out), tok));
    am_llama_model *m = NULL;
    CHECK_OK(am_llama_load(out, &m));
    if (m) {
        am_backend *be = cpu();
        int n_got = greedy(m, be, prompt, n_prompt, n_want, got);
        CHECK_EQ_INT(n_got, n_want);
        for (int i = 0; i < n_want && i < n_got; i++)
            CHECK_EQ_INT(got[i], want[i]);
        printf("  run.c golden: %d prompt ids, %d generated ids compared\n", n_prompt, n_want);
        am_backend_destroy(&be);
        am_llama_destroy(&m);
    }
    cJSON_Delete(root);
    free(json);
}

/* ---- reduced-precision weights vs f32 -------------------------------------------
 * Teacher-forced over a 64-token sequence: the logits of each dtype against the
 * f32 model's, as the max abs difference relative to the f32 logits' standard
 * deviation, and the rate at which the argmax agrees. The bounds follow the
 * weights' relative rounding error (f16 2^-11, bf16 2^-8, q8_0 ~1/254 of a
 * block's max, q4_0 ~1/16) grown through 2 layers and the lm_head, with
 * about 2x margin over what was measured (f16 0.0025, bf16 0.017, q8_0 0.038,
 * q4_0 0.71). */
static void test_dtypes_vs_f32(void) {
    static const struct {
        am_dtype dt;
        double max_rel, min_agree;
    } cases[] = {
        {AM_DTYPE_F16, 0.01, 0.98},
        {AM_DTYPE_BF16, 0.04, 0.95},
        {AM_DTYPE_Q8_0, 0.08, 0.9},
        {AM_DTYPE_Q4_0, 1.5, 0.7},
    };
    char ref_path[300];
    CHECK_OK(make("tiny", 0, AM_FORMAT_GGUF, AM_DTYPE_F32, 5,
                  tmp_path("dt-f32.gguf", ref_path, sizeof ref_path), NULL));
    enum { T = 64, V = 512 };
    int32_t seq[T];
    seq[0] = 1;
    for (int i = 1; i < T; i++)
        seq[i] = 3 + (i * 131) % (V - 3);
    float *ref = malloc((size_t)T * V * sizeof(float)),
          *got = malloc((size_t)T * V * sizeof(float));
    am_backend *be = cpu();
    am_llama_model *m = NULL;
    am_llama_ctx *ctx = NULL;
    CHECK_OK(am_llama_load(ref_path, &m));
    if (!m) return;
    CHECK_OK(am_llama_ctx_new(m, be, T, T, &ctx));
    CHECK_OK(am_llama_eval(ctx, seq, NULL, T, ref, 1));
    am_llama_ctx_destroy(&ctx);
    am_llama_destroy(&m);
    double mean = 0, var = 0;
    for (int i = 0; i < T * V; i++)
        mean += ref[i];
    mean /= T * V;
    for (int i = 0; i < T * V; i++)
        var += (ref[i] - mean) * (ref[i] - mean);
    double sd = sqrt(var / (T * V));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[300], name[64];
        snprintf(name, sizeof name, "dt-%s.gguf", am_dtype_name(cases[c].dt));
        CHECK_OK(make("tiny", 0, AM_FORMAT_GGUF, cases[c].dt, 5, tmp_path(name, path, sizeof path),
                      NULL));
        CHECK_OK(am_llama_load(path, &m));
        if (!m) continue;
        CHECK_EQ_INT(am_llama_weight_dtype(m), cases[c].dt);
        CHECK_OK(am_llama_ctx_new(m, be, T, T, &ctx));
        CHECK_OK(am_llama_eval(ctx, seq, NULL, T, got, 1));
        double max_err = 0;
        int agree = 0;
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < V; i++)
                max_err = fmax(max_err, fabs(got[t * V + i] - ref[t * V + i]));
            agree += am_argmax(got + t * V, V) == am_argmax(ref + t * V, V);
        }
        printf("  %-5s vs f32: max abs logit diff %.4f (%.4f of the logits' sd %.3f), argmax "
               "agreement %d/%d\n",
               am_dtype_name(cases[c].dt), max_err, max_err / sd, sd, agree, T);
        CHECK(max_err / sd < cases[c].max_rel);
        CHECK((double)agree / T >= cases[c].min_agree);
        am_llama_ctx_destroy(&ctx);
        am_llama_destroy(&m);
    }
    free(ref);
    free(got);
    am_backend_destroy(&be);
}

/* A token's logits do not depend on how many tokens share its step: a
 * 160-token sequence evaluated at once (M = 160: the library GEMM or the tiled
 * int8 kernels), in chunks of 7 (the small-M GEMM) and one token at a time
 * (M = 1: matrix-vector) gives the same logits, at the instruction-set level
 * and precision mode in force (tests/at_isa.sh runs this at each level). The
 * matmul's arithmetic is fixed by the dtype and the mode (core/dtype.h).
 *   - F32, F16, BF16 in precision f32 (no activation is rounded): within 1e-4,
 *     the f32 re-association bound of the TP tests. A path that rounded x by
 *     shape (bf16 above M = 4 on AMX, as before) is off by 1e-2 here.
 *   - Q8_0/Q4_0 (x quantized per block to int8), and BF16 in precision bf16:
 *     the paths round identical x identically (test_cpu_backend checks each
 *     matmul at 1e-5 S against M = 1), but x itself differs between paths by
 *     f32 re-association upstream, and an element within that distance of a
 *     rounding boundary lands on the neighbouring step: the logits then move
 *     by one activation-rounding step (measured up to 0.004 for Q8_0 at
 *     avx2, 0.013 for BF16 in precision bf16, with |logit| up to 4.2). For
 *     these the bound is 0.05 and every argmax must agree. */
static void test_logits_independent_of_step(void) {
    static const am_dtype dts[] = {AM_DTYPE_F32, AM_DTYPE_F16, AM_DTYPE_BF16, AM_DTYPE_Q8_0,
                                   AM_DTYPE_Q4_0};
    enum { T = 160, V = 512 };
    int32_t seq[T];
    seq[0] = 1;
    for (int i = 1; i < T; i++)
        seq[i] = 3 + (i * 197) % (V - 3);
    float *once = malloc((size_t)T * V * sizeof(float)),
          *got = malloc((size_t)T * V * sizeof(float));
    am_backend *be = cpu();
    am_precision precision = AM_PRECISION_F32;
    const char *mode = getenv("AM_CPU_PRECISION");
    if (mode && mode[0]) CHECK_OK(am_precision_parse(mode, &precision));
    const int chunks[] = {7, 1};
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
        char path[300], name[64];
        snprintf(name, sizeof name, "step-%s.gguf", am_dtype_name(dts[d]));
        CHECK_OK(
            make("tiny", 0, AM_FORMAT_GGUF, dts[d], 9, tmp_path(name, path, sizeof path), NULL));
        am_llama_model *m = NULL;
        am_llama_ctx *ctx = NULL;
        CHECK_OK(am_llama_load(path, &m));
        if (!m) continue;
        CHECK_OK(am_llama_ctx_new(m, be, T, T, &ctx));
        CHECK_OK(am_llama_eval(ctx, seq, NULL, T, once, 1));
        am_llama_ctx_destroy(&ctx);
        for (size_t c = 0; c < 2; c++) {
            CHECK_OK(am_llama_ctx_new(m, be, T, T, &ctx));
            for (int t = 0; t < T; t += chunks[c]) {
                int n = T - t < chunks[c] ? T - t : chunks[c];
                CHECK_OK(am_llama_eval(ctx, seq + t, NULL, n, got + (size_t)t * V, 1));
            }
            am_llama_ctx_destroy(&ctx);
            double max_err = 0, max_abs = 0;
            for (int i = 0; i < T * V; i++) {
                max_err = fmax(max_err, fabs(got[i] - once[i]));
                max_abs = fmax(max_abs, fabs(once[i]));
            }
            int agree = 0;
            for (int t = 0; t < T; t++)
                agree += am_argmax(got + (size_t)t * V, V) == am_argmax(once + (size_t)t * V, V);
            const int rounds_x = am_matmul_x_precision(dts[d], precision) != AM_XPREC_F32;
            printf("  %-5s %3d tokens at once vs %d at a time (%s, precision %s): max abs logit "
                   "diff %.3g "
                   "(max |logit| %.3g), argmax agreement %d/%d\n",
                   am_dtype_name(dts[d]), T, chunks[c], be->name, am_precision_name(precision),
                   max_err, max_abs, agree, T);
            CHECK(max_err <= (rounds_x ? 0.05 : 1e-4));
            CHECK_EQ_INT(agree, T);
        }
        am_llama_destroy(&m);
    }
    free(once);
    free(got);
    am_backend_destroy(&be);
}

/* ---- error paths ---------------------------------------------------------------- */

static void test_load_errors(void) {
    am_llama_model *m = NULL;
    CHECK(am_llama_load("/nonexistent/model.gguf", &m) != 0);
    CHECK(strstr(am_err_msg(), "/nonexistent/model.gguf") != NULL);
    CHECK(m == NULL);

    /* A safetensors model without its config.json. */
    char st[300], cfg[400];
    CHECK_OK(make("tiny", 1, AM_FORMAT_SAFETENSORS, AM_DTYPE_F32, 1,
                  tmp_path("nocfg", st, sizeof st), NULL));
    snprintf(cfg, sizeof cfg, "%s/config.json", st);
    char *saved = read_file(cfg, NULL);
    unlink(cfg);
    CHECK(am_llama_load(st, &m) != 0);
    CHECK(strstr(am_err_msg(), "config.json") != NULL);

    /* A config that disagrees with the weights: more layers than stored. */
    FILE *f = fopen(cfg, "w");
    char *p = strstr(saved, "\"num_hidden_layers\": 1");
    CHECK(p != NULL);
    if (p) p[21] = '3';
    fputs(saved, f);
    fclose(f);
    CHECK_EQ_INT(am_llama_load(st, &m), AM_ENOTFOUND);
    CHECK(strstr(am_err_msg(), "model.layers.1.self_attn.q_proj.weight") != NULL);
    printf("  missing tensor: %s\n", am_err_msg());

    /* Fewer layers than stored. */
    if (p) p[21] = '0';
    f = fopen(cfg, "w");
    fputs(saved, f);
    fclose(f);
    CHECK(am_llama_load(st, &m) != 0);
    CHECK(strstr(am_err_msg(), "n_layers") != NULL);

    /* A wrong shape: the hidden size differs from the weights. */
    if (p) p[21] = '1';
    char *h = strstr(saved, "\"hidden_size\": 64");
    CHECK(h != NULL);
    if (h) memcpy(h + 15, "32", 2);
    f = fopen(cfg, "w");
    fputs(saved, f);
    fclose(f);
    CHECK_EQ_INT(am_llama_load(st, &m), AM_ESHAPE);
    printf("  wrong shape: %s\n", am_err_msg());
    free(saved);
}

/* A tiny f32 GGUF model made in the test's directory as `file`, loaded (NULL on failure). */
static am_llama_model *tiny_model(const char *file) {
    char path[300];
    CHECK_OK(
        make("tiny", 1, AM_FORMAT_GGUF, AM_DTYPE_F32, 3, tmp_path(file, path, sizeof path), NULL));
    am_llama_model *m = NULL;
    CHECK_OK(am_llama_load(path, &m));
    return m;
}

static void test_eval_errors(void) {
    am_llama_model *m = tiny_model("err.gguf");
    if (!m) return;
    am_backend *be = cpu();
    am_llama_ctx *ctx = NULL;
    CHECK_EQ_INT(am_llama_ctx_new(m, be, 100000, 8, &ctx), AM_ERANGE);
    CHECK_OK(am_llama_ctx_new(m, be, 8, 4, &ctx));
    int32_t ids[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    int32_t bad[2] = {1, 512};
    CHECK_EQ_INT(am_llama_eval(ctx, bad, NULL, 2, NULL, 0), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "512") != NULL);
    CHECK_EQ_INT(am_llama_eval(ctx, ids, NULL, 10, NULL, 0), AM_ERANGE);
    CHECK_EQ_INT(am_llama_ctx_n_past(ctx), 0);
    CHECK_OK(am_llama_eval(ctx, ids, NULL, 8, NULL, 0));
    CHECK_EQ_INT(am_llama_ctx_n_past(ctx), 8);
    am_gen_params gp = {.sampling = am_sampling_default(), .max_tokens = 8};
    am_gen_result r;
    CHECK_EQ_INT(am_generate(ctx, NULL, ids, 4, &gp, NULL, NULL, &r), AM_ERANGE);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_llama_destroy(&m);
}

/* The KV cache sized from a memory fraction: more memory, more blocks; a context
 * with that many blocks can be made; nonsense fractions and too little memory are
 * errors that say so. */
static void test_kv_blocks_fit(void) {
    am_llama_model *m = tiny_model("fit.gguf");
    if (!m) return;
    am_backend *be = cpu();
    size_t free_b = 0, total_b = 0;
    CHECK_OK(am_backend_memory(be, &free_b, &total_b));
    CHECK(free_b > 0 && free_b <= total_b);
    /* What is in use now, the reserve, and 64 MiB for a small cache. */
    const double in_use = (double)(total_b - free_b) / (double)total_b;
    const double some =
        in_use + (double)(AM_LLAMA_KV_RESERVE_BYTES + ((size_t)64 << 20)) / (double)total_b;
    int32_t small = 0, big = 0;
    CHECK_OK(am_llama_kv_blocks_fit(m, be, some < 1.0 ? some : 1.0, 16, 8, &small));
    CHECK_OK(am_llama_kv_blocks_fit(m, be, 1.0, 16, 8, &big));
    CHECK(small >= 1 && big > small);
    am_llama_ctx *ctx = NULL;
    const int32_t n = small < 4096 ? small : 4096;
    CHECK_OK(am_llama_ctx_new_paged(m, be, n, 16, 8, &ctx));
    CHECK(ctx && am_llama_ctx_n_blocks(ctx) == n);
    am_llama_ctx_destroy(&ctx);
    int32_t none = -1;
    CHECK_EQ_INT(am_llama_kv_blocks_fit(m, be, 0.0, 16, 8, &none), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "fraction") != NULL);
    CHECK_EQ_INT(am_llama_kv_blocks_fit(m, be, 1.5, 16, 8, &none), AM_EINVAL);
    if (in_use > 0.002) { /* a fraction below what is already in use leaves nothing */
        CHECK_EQ_INT(am_llama_kv_blocks_fit(m, be, in_use / 2, 16, 8, &none), AM_ENOMEM);
        CHECK(strstr(am_err_msg(), "no room") != NULL);
        CHECK_EQ_INT(none, 0);
    }
    am_backend_destroy(&be);
    am_llama_destroy(&m);
}

/* Embedding rows (the modality-token path) give the same result as the ids they embed. */
static void test_embedding_rows(void) {
    char path[300];
    CHECK_OK(make("tiny", 0, AM_FORMAT_GGUF, AM_DTYPE_F32, 11,
                  tmp_path("embd.gguf", path, sizeof path), NULL));
    am_llama_model *m = NULL;
    CHECK_OK(am_llama_load(path, &m));
    if (!m) return;
    am_backend *be = cpu();
    int C = m->cfg.dim, V = m->cfg.vocab_size;
    int32_t ids[6] = {1, 10, 20, 30, 40, 50};
    float *rows = malloc(6 * (size_t)C * sizeof(float)), *a = malloc((size_t)V * 4),
          *b = malloc((size_t)V * 4);
    be->ops->get_rows(be, &m->tok_embeddings, ids, 6, rows);
    am_llama_ctx *ctx = NULL;
    CHECK_OK(am_llama_ctx_new(m, be, 16, 8, &ctx));
    CHECK_OK(am_llama_eval(ctx, ids, NULL, 6, a, 0));
    am_llama_ctx_reset(ctx);
    CHECK_OK(am_llama_eval(ctx, ids, NULL, 2, NULL, 0));
    CHECK_OK(am_llama_eval(ctx, NULL, rows + 2 * C, 4, b, 0));
    for (int i = 0; i < V; i++)
        CHECK_NEAR(a[i], b[i], 1e-5);
    free(rows);
    free(a);
    free(b);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_llama_destroy(&m);
}

/* ---- HF LLaVA-1.5 layout: the decoder under language_model.*, config in text_config ---- */

static void test_llava_decoder(void) {
    char dir[512], path[600];
    AM_SRC_PATH("tests/golden/vision/llava", dir);
    char gold[512];
    AM_SRC_PATH("tests/golden/llama/llava_text/golden.json", gold);
    char *json = read_file(gold, NULL);
    CHECK(json != NULL);
    if (!json) return;
    cJSON *root = cJSON_Parse(json);
    int32_t prompt[32];
    int n = json_ids(root, "prompt_ids", prompt, 32);
    AM_SRC_PATH("tests/golden/llama/llava_text/logits.f32", path);
    size_t nbytes;
    float *ref = (float *)read_file(path, &nbytes);
    am_llama_model *m = NULL;
    CHECK_OK(am_llama_load(dir, &m));
    if (m && ref) {
        CHECK_EQ_INT(m->cfg.dim, 48);
        CHECK_EQ_INT(m->cfg.vocab_size, 64);
        CHECK_NEAR(m->cfg.norm_eps, 1e-6, 1e-12);
        int V = m->cfg.vocab_size;
        CHECK_EQ_INT(nbytes, (size_t)n * V * 4);
        am_backend *be = cpu();
        am_llama_ctx *ctx = NULL;
        float *logits = malloc((size_t)n * V * sizeof(float));
        CHECK_OK(am_llama_ctx_new(m, be, 32, 32, &ctx));
        CHECK_OK(am_llama_eval(ctx, prompt, NULL, n, logits, 1));
        double err = 0;
        for (int64_t i = 0; i < (int64_t)n * V; i++)
            err = fmax(err, fabs(logits[i] - ref[i]));
        printf("  llava decoder vs HF LlavaForConditionalGeneration: max abs err %.3g over %d "
               "positions\n",
               err, n);
        CHECK(err < 1e-4);
        free(logits);
        am_llama_ctx_destroy(&ctx);
        am_backend_destroy(&be);
    }
    am_llama_destroy(&m);

    /* A text_config that stores only what differs from LlamaConfig's defaults (as
     * llava-1.5-7b-hf does) gets those defaults: here they disagree with the tiny
     * weights, and the error says what was expected. */
    char tdir[300], cfg[400], cmd[1200];
    tmp_path("llava-partial", tdir, sizeof tdir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/model.safetensors %s/", tdir, dir, tdir);
    CHECK(system(cmd) == 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", tdir);
    FILE *f = fopen(cfg, "w");
    fputs("{\"model_type\": \"llava\", \"text_config\": {\"vocab_size\": 64, \"rms_norm_eps\": "
          "1e-05}}",
          f);
    fclose(f);
    CHECK_EQ_INT(am_llama_load(tdir, &m), AM_ESHAPE);
    CHECK(strstr(am_err_msg(), "language_model.model.embed_tokens.weight") != NULL);
    CHECK(strstr(am_err_msg(), "4096") != NULL);
    printf("  partial text_config: %s\n", am_err_msg());
    free(ref);
    free(json);
    cJSON_Delete(root);
}

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/am_test_llama.XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
    am_cpu_blas_setup(2);
}

static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_hf_logits), AM_TEST(test_formats_agree),
             AM_TEST(test_llama2c_runc), AM_TEST(test_dtypes_vs_f32),
             AM_TEST(test_logits_independent_of_step), AM_TEST(test_load_errors),
             AM_TEST(test_eval_errors), AM_TEST(test_kv_blocks_fit), AM_TEST(test_embedding_rows),
             AM_TEST(test_llava_decoder), AM_TEST(teardown))
