/* tools/batch_bench.c - the continuous-batching benchmark (see batch_bench.h). */
#include "tools/batch_bench.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "llm_shards/sched.h"

#include <stdlib.h>
#include <string.h>

/* GEMM repetitions: the best of these counts. */
#define AM_BENCH_GEMM_REPS 3

typedef struct req_times {
    double t_submit;
    double *t_tok; /* (M) when each token arrived */
    int32_t n_tok;
    int32_t cap;
    int done, err;
} req_times;

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    (void)text, (void)len;
    req_times *t = user;
    if (id >= 0 && t->n_tok < t->cap) t->t_tok[t->n_tok++] = am_now_s();
    return 0;
}

static void on_done(void *user, uint64_t id, const am_gen_result *r, int err) {
    (void)id, (void)r;
    req_times *t = user;
    t->done = 1;
    t->err = err;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of sorted v (n), nearest rank. */
static double percentile(const double *v, int64_t n, double p) {
    if (n <= 0) return 0.0;
    int64_t k = (int64_t)((p / 100.0) * (double)n + 0.999999) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k];
}

/* Best GFLOP/s of y (m, N) = x (m, K) . W^T on be. */
static int gemm_gflops(am_backend *be, const am_matrix *w, int64_t m, double *out) {
    float *x = be->ops->alloc(be, (size_t)(m * w->cols) * sizeof(float));
    float *y = be->ops->alloc(be, (size_t)(m * w->rows) * sizeof(float));
    float *h = am_malloc((size_t)(m * w->cols) * sizeof(float));
    int rc = x && y && h ? 0 : AM_ENOMEM;
    for (int64_t i = 0; !rc && i < m * w->cols; i++)
        h[i] = (float)((i * 7919) % 2001 - 1000) * 1e-3f;
    if (!rc) rc = be->ops->upload(be, x, h, (size_t)(m * w->cols) * sizeof(float));
    double best = 1e30;
    for (int r = 0; !rc && r <= AM_BENCH_GEMM_REPS; r++) {
        double t0 = am_now_s();
        rc = be->ops->matmul(be, w, x, y, m);
        if (!rc && !be->host_memory)
            rc = be->ops->download(be, h, y, sizeof(float)); /* waits for the device */
        double t = am_now_s() - t0;
        if (r > 0 && t < best) best = t; /* the first run warms up */
    }
    *out = rc ? 0.0 : 2.0 * (double)m * (double)w->rows * (double)w->cols / best / 1e9;
    be->ops->free(be, x);
    be->ops->free(be, y);
    am_free(h);
    return rc;
}

/* An f32 matrix of w's shape, in backend memory (the sgemm peak's operand). */
static int f32_twin(am_backend *be, const am_matrix *w, am_matrix *out, void **owned) {
    size_t n = (size_t)(w->rows * w->cols);
    float *h = am_malloc(n * sizeof(float));
    if (!h) return AM_ENOMEM;
    for (size_t i = 0; i < n; i++)
        h[i] = (float)((int64_t)(i * 2654435761u % 2001) - 1000) * 1e-4f;
    am_matrix host = {.dtype = AM_DTYPE_F32,
                      .rows = w->rows,
                      .cols = w->cols,
                      .data = h,
                      .row_bytes = (size_t)w->cols * sizeof(float)};
    int rc = be->ops->upload_matrix(be, &host, out);
    /* The CPU backend views host memory: keep it; a device backend copied it. */
    if (!rc && be->host_memory)
        *owned = h;
    else
        am_free(h);
    return rc;
}

int32_t am_batch_bench_blocks(const am_batch_bench_opts *o) {
    int64_t per = ((int64_t)o->n_prompt + o->n_gen + o->block_size - 1) / o->block_size;
    return (int32_t)(per * o->batch + 2);
}

int am_batch_bench_run(am_llama_ctx *ctx, am_backend *be, const am_batch_bench_opts *o,
                       const char *model_path, const char *extra_json, FILE *out) {
    const am_llama_model *m = am_llama_ctx_model(ctx);
    const int32_t B = o->batch, N = o->n_prompt, M = o->n_gen, V = m->cfg.vocab_size;
    if ((int64_t)N + M > m->cfg.max_seq_len)
        return am_err_set(AM_ERANGE,
                          "--prompt-tokens %d + --gen-tokens %d exceed the model's context of %d",
                          N, M, m->cfg.max_seq_len);
    am_sched *s = NULL;
    req_times *t = am_calloc((size_t)B, sizeof *t);
    int32_t *prompts = am_malloc((size_t)B * (size_t)N * sizeof(int32_t));
    double *ttft = am_malloc((size_t)B * sizeof(double));
    double *itl = am_malloc((size_t)B * (size_t)M * sizeof(double));
    void *twin_owned = NULL;
    int rc = t && prompts && ttft && itl ? 0 : AM_ENOMEM;
    for (int32_t r = 0; !rc && r < B; r++) {
        t[r].cap = M;
        if (!(t[r].t_tok = am_malloc((size_t)M * sizeof(double)))) rc = AM_ENOMEM;
        int32_t *p = prompts + (size_t)r * N;
        p[0] = AM_LLAMA_BOS;
        for (int32_t i = 1; i < N; i++)
            p[i] = (int32_t)(3 + ((int64_t)(i + 131 * r) * 7919) % (V - 3));
    }
    if (!rc) rc = am_sched_new(ctx, NULL, o->max_batch, &s);
    am_gen_params gp = {.sampling = am_sampling_default(), .max_tokens = M, .ignore_eos = 1};

    /* Warm-up: one short request pages in the weights and builds kernels. */
    if (!rc) {
        am_prompt_seg seg = {.kind = AM_SEG_TOKENS, .n = N < 8 ? N : 8, .ids = prompts};
        am_gen_params wp = gp;
        wp.max_tokens = 2;
        am_sched_request w = {.id = (uint64_t)B, .segs = &seg, .n_segs = 1, .params = wp};
        rc = am_sched_submit(s, &w);
        while (!rc && am_sched_n_live(s) > 0) {
            int k = am_sched_step(s);
            if (k < 0) rc = k;
        }
    }
    am_sched_stats st0 = s ? *am_sched_get_stats(s) : (am_sched_stats){0};
    double t0 = am_now_s();
    for (int32_t r = 0; !rc && r < B; r++) {
        am_prompt_seg seg = {.kind = AM_SEG_TOKENS, .n = N, .ids = prompts + (size_t)r * N};
        am_sched_request q = {.id = (uint64_t)r,
                              .segs = &seg,
                              .n_segs = 1,
                              .params = gp,
                              .on_token = on_token,
                              .on_done = on_done,
                              .user = &t[r]};
        t[r].t_submit = t0;
        rc = am_sched_submit(s, &q);
    }
    while (!rc && am_sched_n_live(s) > 0) {
        int k = am_sched_step(s);
        if (k < 0) rc = k;
    }
    double t_end = am_now_s();
    for (int32_t r = 0; !rc && r < B; r++)
        if (!t[r].done || t[r].err || t[r].n_tok != M)
            rc = am_err_set(AM_EINTERNAL, "request %d ended with %d of %d tokens (error %d)", r,
                            t[r].n_tok, M, t[r].err);
    if (rc) goto done;

    /* Prefill window: until the last first token; decode: after it. */
    double t_all_first = t0;
    for (int32_t r = 0; r < B; r++) {
        ttft[r] = t[r].t_tok[0] - t0;
        if (t[r].t_tok[0] > t_all_first) t_all_first = t[r].t_tok[0];
    }
    int64_t n_itl = 0, decode_tokens = 0;
    for (int32_t r = 0; r < B; r++)
        for (int32_t i = 1; i < M; i++) {
            itl[n_itl++] = t[r].t_tok[i] - t[r].t_tok[i - 1];
            decode_tokens += t[r].t_tok[i] > t_all_first;
        }
    qsort(ttft, (size_t)B, sizeof *ttft, cmp_double);
    qsort(itl, (size_t)n_itl, sizeof *itl, cmp_double);
    const double prefill_tps = (double)B * N / (t_all_first - t0);
    const double decode_tps =
        t_end > t_all_first && decode_tokens ? (double)decode_tokens / (t_end - t_all_first) : 0.0;
    const double flops_per_row = 2.0 * (double)am_llama_weight_params(m);
    const am_sched_stats *st = am_sched_get_stats(s);

    /* The GEMMs behind the steps: the gate matrix of layer 0 (this rank's
     * slice), at a decode step's M = B and a prefill step's M = max_batch,
     * and an f32 matrix of the same shape. */
    double g_decode = 0, g_prefill = 0, g_f32 = 0;
    am_matrix gate, twin;
    if ((rc = be->ops->upload_matrix(be, &m->layers[0].w1, &gate)) ||
        (rc = gemm_gflops(be, &gate, B, &g_decode)) ||
        (rc = gemm_gflops(be, &gate, o->max_batch, &g_prefill)) ||
        (rc = f32_twin(be, &gate, &twin, &twin_owned)) ||
        (rc = gemm_gflops(be, &twin, o->max_batch, &g_f32)))
        goto done;

    fprintf(
        out,
        "{%s\"bench\":\"batch\",\"model\":\"%s\",\"dtype\":\"%s\",\"backend\":\"%s\",\"threads\":%"
        "d,"
        "\"batch\":%d,\"prompt_tokens\":%d,\"gen_tokens\":%d,\"max_batch\":%d,\"block_size\":%d,"
        "\"decode_tok_per_s\":%.2f,\"prefill_tok_per_s\":%.2f,"
        "\"ttft_ms_p50\":%.1f,\"ttft_ms_p90\":%.1f,\"ttft_ms_p99\":%.1f,"
        "\"itl_ms_p50\":%.2f,\"itl_ms_p90\":%.2f,\"itl_ms_p99\":%.2f,"
        "\"decode_gflop_per_s\":%.1f,\"prefill_gflop_per_s\":%.1f,"
        "\"gemm_gflop_per_s_m_batch\":%.1f,\"gemm_gflop_per_s_m_max_batch\":%.1f,"
        "\"sgemm_peak_gflop_per_s\":%.1f,\"gemm_shape\":[%lld,%lld],"
        "\"steps\":%lld,\"rows\":%lld,\"max_running\":%d,\"preemptions\":%lld,\"total_s\":%.4f}\n",
        extra_json ? extra_json : "", model_path, am_dtype_name(am_llama_weight_dtype(m)), be->name,
        be->n_threads, B, N, M, o->max_batch, o->block_size, decode_tps, prefill_tps,
        1e3 * percentile(ttft, B, 50), 1e3 * percentile(ttft, B, 90), 1e3 * percentile(ttft, B, 99),
        1e3 * percentile(itl, n_itl, 50), 1e3 * percentile(itl, n_itl, 90),
        1e3 * percentile(itl, n_itl, 99), decode_tps * flops_per_row / 1e9,
        prefill_tps * flops_per_row / 1e9, g_decode, g_prefill, g_f32, (long long)gate.rows,
        (long long)gate.cols, (long long)(st->steps - st0.steps), (long long)(st->rows - st0.rows),
        st->max_running, (long long)(st->preemptions - st0.preemptions), t_end - t0);
    fflush(out);
done:
    am_sched_destroy(&s);
    for (int32_t r = 0; t && r < B; r++)
        am_free(t[r].t_tok);
    am_free(t);
    am_free(prompts);
    am_free(ttft);
    am_free(itl);
    am_free(twin_owned);
    return rc;
}
