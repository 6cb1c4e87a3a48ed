/* tests/test_sampler.c - sampling and the generation loop's stop rules. */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "llm_shards/mkmodel.h"
#include "llm_shards/model_files.h"
#include "llm_shards/sampler.h"
#include "test_util.h"

#include <unistd.h>

enum { V = 8 };

static int32_t sample_once(am_sampling_params p, const float *logits_in, const int32_t *hist,
                           int n_hist) {
    am_sampler *s = NULL;
    float logits[V];
    memcpy(logits, logits_in, sizeof logits);
    CHECK_OK(am_sampler_new(&p, V, &s));
    int32_t id = s ? am_sampler_sample(s, logits, hist, n_hist) : -1;
    am_sampler_destroy(&s);
    return id;
}

static void test_greedy_and_ties(void) {
    const float l[V] = {0.1f, 3.0f, 3.0f, -1, 0, 2.9f, 0, 0};
    CHECK_EQ_INT(sample_once(am_sampling_default(), l, NULL, 0), 1); /* lowest index on ties */
    am_sampling_params p = am_sampling_default();
    p.temperature = 1.0f;
    p.top_k = 1;
    for (uint64_t seed = 0; seed < 20; seed++) {
        p.seed = seed;
        CHECK_EQ_INT(sample_once(p, l, NULL, 0), 1); /* top-k 1 is greedy */
    }
}

static void test_repetition_penalty(void) {
    const float l[V] = {0, 2.0f, 1.9f, -1, 0, 0, 0, 0};
    am_sampling_params p = am_sampling_default();
    p.repetition_penalty = 1.2f;
    int32_t hist[3] = {1, 1, 4};
    /* 2.0 / 1.2 = 1.67 < 1.9: token 2 wins; a token seen twice is penalised once. */
    CHECK_EQ_INT(sample_once(p, l, hist, 3), 2);
    const float neg[V] = {-0.5f, -0.55f, -5, -5, -5, -5, -5, -5};
    int32_t h0[1] = {0};
    CHECK_EQ_INT(sample_once(p, neg, h0, 1), 1); /* negative logits are multiplied */
}

/* With temperature 1 and no truncation, frequencies follow softmax(logits). */
static void test_distribution_and_seed(void) {
    const float l[V] = {0, 1, 2, 0, -1, 0.5f, 0, 1.5f};
    am_sampling_params p = am_sampling_default();
    p.temperature = 1.0f;
    p.seed = 42;
    am_sampler *s = NULL, *s2 = NULL;
    CHECK_OK(am_sampler_new(&p, V, &s));
    CHECK_OK(am_sampler_new(&p, V, &s2));
    int counts[V] = {0};
    enum { N = 40000 };
    for (int i = 0; i < N; i++) {
        float a[V], b[V];
        memcpy(a, l, sizeof a);
        memcpy(b, l, sizeof b);
        int32_t x = am_sampler_sample(s, a, NULL, 0);
        CHECK_EQ_INT(x, am_sampler_sample(s2, b, NULL, 0)); /* same seed, same draws */
        counts[x]++;
    }
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(l[i]);
    for (int i = 0; i < V; i++)
        CHECK_NEAR((double)counts[i] / N, exp(l[i]) / z, 0.01);
    am_sampler_destroy(&s);
    am_sampler_destroy(&s2);
}

static void test_top_p(void) {
    /* probabilities ~ 0.665, 0.245, 0.09 (plus tiny ones): top_p 0.7 keeps the first two. */
    const float l[V] = {3, 2, 1, -20, -20, -20, -20, -20};
    am_sampling_params p = am_sampling_default();
    p.temperature = 1.0f;
    p.top_p = 0.7f;
    int seen[V] = {0};
    for (uint64_t seed = 0; seed < 400; seed++) {
        p.seed = seed;
        seen[sample_once(p, l, NULL, 0)]++;
    }
    CHECK(seen[0] > 0 && seen[1] > 0);
    CHECK_EQ_INT(seen[2], 0);
    CHECK(seen[0] > seen[1]);
}

static void test_param_errors(void) {
    am_sampling_params p = am_sampling_default();
    p.top_p = 0;
    CHECK_EQ_INT(am_sampling_check(&p), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "top_p") != NULL);
    p = am_sampling_default();
    p.temperature = -1;
    CHECK_EQ_INT(am_sampling_check(&p), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "temperature") != NULL);
    p = am_sampling_default();
    p.repetition_penalty = 0;
    CHECK_EQ_INT(am_sampling_check(&p), AM_ERANGE);
}

/* ---- stop strings, EOS and streaming through am_generate ------------------------ */

typedef struct {
    char text[4096];
    size_t len;
    int calls, cancel_after;
} stream;

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
    stream *s = user;
    memcpy(s->text + s->len, text, len);
    s->len += len;
    s->text[s->len] = '\0';
    return ++s->calls == s->cancel_after;
}

static void test_stop_strings(void) {
    char dir[] = "/tmp/am_test_sampler.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    am_mkmodel_opts o = {
        .shape = "tiny", .format = AM_FORMAT_GGUF, .dtype = AM_DTYPE_F32, .seed = 9, .out = path};
    CHECK_OK(am_mkmodel_write(&o));
    am_model_files mf;
    CHECK_OK(am_model_files_open(&mf, path, NULL, 1));
    am_backend *be = NULL;
    CHECK_OK(am_cpu_backend_new(1, &be));
    am_llama_ctx *ctx = NULL;
    CHECK_OK(am_llama_ctx_new(mf.model, be, 128, 16, &ctx));
    int32_t prompt[3] = {1, 100, 200};
    am_gen_params gp = {.sampling = am_sampling_default(), .max_tokens = 40};
    am_gen_result full, cut;
    stream s1 = {0}, s2 = {0};
    CHECK_OK(am_generate(ctx, mf.tok, prompt, 3, &gp, on_token, &s1, &full));
    CHECK_EQ_INT(full.finish, AM_FINISH_LENGTH);
    CHECK_EQ_INT(full.n_ids, 40);
    CHECK_EQ_INT(s1.len, full.text_len); /* the stream carries exactly the text */
    CHECK(memcmp(s1.text, full.text, full.text_len) == 0);

    /* Stop at a string that starts in the middle of the output: cut before it, held back in the
     * stream. */
    CHECK(full.text_len > 12);
    char stop[5];
    memcpy(stop, full.text + full.text_len / 2, 4);
    stop[4] = '\0';
    const char *stops[1] = {stop};
    gp.stop = stops;
    gp.n_stop = 1;
    CHECK_OK(am_generate(ctx, mf.tok, prompt, 3, &gp, on_token, &s2, &cut));
    CHECK_EQ_INT(cut.finish, AM_FINISH_STOP);
    const char *first = strstr(full.text, stop);
    CHECK(first != NULL);
    if (first) CHECK_EQ_INT(cut.text_len, (size_t)(first - full.text));
    CHECK_EQ_INT(s2.len, cut.text_len);
    CHECK(strstr(s2.text, stop) == NULL);
    am_gen_result_fini(&cut);

    /* Cancellation from the callback. */
    stream s3 = {.cancel_after = 5};
    gp.n_stop = 0;
    CHECK_OK(am_generate(ctx, mf.tok, prompt, 3, &gp, on_token, &s3, &cut));
    CHECK_EQ_INT(cut.finish, AM_FINISH_CANCELLED);
    CHECK_EQ_INT(cut.n_ids, 5);
    am_gen_result_fini(&cut);

    /* EOS ends generation and is left out of the output: the run that ignores
     * EOS gives the same ids up to the first EOS. */
    gp.ignore_eos = 1;
    gp.max_tokens = 100;
    am_gen_result all;
    CHECK_OK(am_generate(ctx, mf.tok, prompt, 3, &gp, NULL, NULL, &all));
    gp.ignore_eos = 0;
    CHECK_OK(am_generate(ctx, mf.tok, prompt, 3, &gp, NULL, NULL, &cut));
    int64_t eos_at = -1;
    for (int64_t i = 0; i < all.n_ids && eos_at < 0; i++)
        if (all.ids[i] == 2) eos_at = i;
    if (eos_at >= 0) {
        CHECK_EQ_INT(cut.finish, AM_FINISH_EOS);
        CHECK_EQ_INT(cut.n_ids, eos_at);
    } else {
        CHECK_EQ_INT(cut.n_ids, all.n_ids);
    }
    am_gen_result_fini(&all);
    am_gen_result_fini(&cut);

    /* Parameter errors before any compute. */
    gp.max_tokens = 0;
    CHECK_EQ_INT(am_generate(ctx, mf.tok, prompt, 3, &gp, NULL, NULL, &cut), AM_ERANGE);
    gp.max_tokens = 200;
    CHECK_EQ_INT(am_generate(ctx, mf.tok, prompt, 3, &gp, NULL, NULL, &cut), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "exceeds the context") != NULL);

    am_gen_result_fini(&full);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_model_files_close(&mf);
    unlink(path);
    rmdir(dir);
}

AM_TEST_MAIN(AM_TEST(test_greedy_and_ties), AM_TEST(test_repetition_penalty),
             AM_TEST(test_distribution_and_seed), AM_TEST(test_top_p), AM_TEST(test_param_errors),
             AM_TEST(test_stop_strings))
