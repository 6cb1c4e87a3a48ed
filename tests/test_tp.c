/* tests/test_tp.c - tensor-parallel slicing and the step protocol, without MPI.
 *
 * Each rank of a group is a thread with its own slice (am_llama_load_shard),
 * backend and, through a thread-based am_tp_comm (a barrier and shared
 * pointers; sums taken in rank order, so every rank gets the same bits), the
 * same protocol the MPI group runs (tp.h). Rank 0 runs the leader's calls;
 * the others sit in am_tp_follow. Against the single-process engine: logits
 * of every prompt position (multi-row gathers, chunked prefill), embedding-row
 * input, and greedy ids, for HF/GGUF/llama2.c layouts, GQA with split and with
 * replicated kv heads, MHA, an uneven vocab split, q8_0 slices, and the bf16
 * all-reduce; plus the plan's errors. The real MPI group is tests/test_mpi.sh.
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "llm_shards/llama.h"
#include "llm_shards/mkmodel.h"
#include "llm_shards/tp.h"
#include "test_util.h"
#include "tp_local_group.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_PROMPT 12
#define N_GEN    24
#define MAX_V    32000

static char tmpdir[256];

/* ---- one group run ---------------------------------------------------------------- */

typedef struct run_args {
    local_group *g;
    int rank;
    const char *path;
    am_dtype wire;
    int max_batch;
    int rc; /* load or run failure */
    /* Leader outputs. */
    float *logits_all;  /* (N_PROMPT, V) */
    float *logits_embd; /* (V) last position, embedding-row input */
    int32_t ids[N_GEN];
    int n_ids;
    am_tp_mem mem[MAX_P];
} run_args;

static const int32_t prompt[N_PROMPT] = {1, 17, 300, 42, 99, 250, 7, 411, 5, 8, 13, 21};

static void *rank_main(void *arg) {
    run_args *a = arg;
    local_rank lr = {.g = a->g};
    lr.comm = (am_tp_comm){.ops = &local_ops,
                           .rank = a->rank,
                           .size = a->g->P,
                           .allreduce_dtype = AM_DTYPE_F32,
                           .impl = &lr};
    am_llama_model *m = NULL;
    am_backend *be = NULL;
    int rc = am_llama_load_shard(a->path, a->rank, a->g->P, &m);
    if (!rc) rc = am_cpu_backend_new(1, &be);
    if (rc) fprintf(stderr, "rank %d: %s\n", a->rank, am_err_msg());
    /* Agreement, as am_shard_group_new does. */
    float failed = rc ? 1.0f : 0.0f;
    l_allreduce(&lr.comm, &failed, 1, AM_DTYPE_F32);
    if (failed > 0) {
        a->rc = rc ? rc : AM_EIO;
        goto done;
    }
    if (a->rank != 0) {
        a->rc = am_tp_follow(m, be, &lr.comm);
        am_tp_mem_gather(&lr.comm, m, NULL);
        goto done;
    }
    const int V = m->cfg.vocab_size, C = m->cfg.dim;
    am_llama_ctx *ctx = NULL;
    if ((rc = am_llama_ctx_new_tp(m, be, &lr.comm, N_PROMPT + N_GEN, a->max_batch, a->wire, &ctx)))
        goto lead_done;
    a->logits_all = malloc((size_t)N_PROMPT * V * sizeof(float));
    a->logits_embd = malloc((size_t)V * sizeof(float));
    if ((rc = am_llama_eval(ctx, prompt, NULL, N_PROMPT, a->logits_all, 1))) goto lead_done;
    /* The modality-token path: the last 5 positions as embedding rows. */
    float *rows = malloc(5 * (size_t)C * sizeof(float));
    be->ops->get_rows(be, &m->tok_embeddings, prompt + N_PROMPT - 5, 5, rows);
    am_llama_ctx_reset(ctx);
    if (!(rc = am_llama_eval(ctx, prompt, NULL, N_PROMPT - 5, NULL, 0)))
        rc = am_llama_eval(ctx, NULL, rows, 5, a->logits_embd, 0);
    free(rows);
    if (rc) goto lead_done;
    am_gen_params gp = {.sampling = am_sampling_default(), .max_tokens = N_GEN, .ignore_eos = 1};
    am_gen_result r;
    if ((rc = am_generate(ctx, NULL, prompt, N_PROMPT, &gp, NULL, NULL, &r))) goto lead_done;
    a->n_ids = (int)r.n_ids;
    memcpy(a->ids, r.ids, (size_t)r.n_ids * sizeof(int32_t));
    am_gen_result_fini(&r);
lead_done:
    if (rc) fprintf(stderr, "leader: %s\n", am_err_msg());
    a->rc = rc;
    am_llama_ctx_destroy(&ctx);
    am_tp_stop(&lr.comm);
    am_tp_mem_gather(&lr.comm, m, a->mem);
done:
    free(lr.tmp);
    am_backend_destroy(&be);
    am_llama_destroy(&m);
    return NULL;
}

/* Runs a group of P threads on path; returns the leader's outputs in *out. */
static int run_group(const char *path, int P, am_dtype wire, int max_batch, run_args *out) {
    local_group g = {.P = P};
    pthread_barrier_init(&g.bar, NULL, (unsigned)P);
    run_args args[MAX_P] = {0};
    pthread_t th[MAX_P];
    for (int r = 0; r < P; r++) {
        args[r] =
            (run_args){.g = &g, .rank = r, .path = path, .wire = wire, .max_batch = max_batch};
        pthread_create(&th[r], NULL, rank_main, &args[r]);
    }
    int rc = 0;
    for (int r = 0; r < P; r++) {
        pthread_join(th[r], NULL);
        if (args[r].rc && !rc) rc = args[r].rc;
    }
    pthread_barrier_destroy(&g.bar);
    *out = args[0];
    return rc;
}

/* ---- the reference: one process ----------------------------------------------------- */

typedef struct reference {
    float *logits_all, *logits_embd;
    int32_t ids[N_GEN];
    size_t weight_bytes;
    int V;
} reference;

static void make_reference(const char *path, reference *ref) {
    am_llama_model *m = NULL;
    am_backend *be = NULL;
    CHECK_OK(am_llama_load(path, &m));
    CHECK_OK(am_cpu_backend_new(1, &be));
    if (!m || !be) return;
    int V = m->cfg.vocab_size, C = m->cfg.dim;
    ref->V = V;
    ref->weight_bytes = am_llama_weight_bytes(m);
    ref->logits_all = malloc((size_t)N_PROMPT * V * sizeof(float));
    ref->logits_embd = malloc((size_t)V * sizeof(float));
    am_llama_ctx *ctx = NULL;
    CHECK_OK(am_llama_ctx_new(m, be, N_PROMPT + N_GEN, 64, &ctx));
    CHECK_OK(am_llama_eval(ctx, prompt, NULL, N_PROMPT, ref->logits_all, 1));
    float *rows = malloc(5 * (size_t)C * sizeof(float));
    be->ops->get_rows(be, &m->tok_embeddings, prompt + N_PROMPT - 5, 5, rows);
    am_llama_ctx_reset(ctx);
    CHECK_OK(am_llama_eval(ctx, prompt, NULL, N_PROMPT - 5, NULL, 0));
    CHECK_OK(am_llama_eval(ctx, NULL, rows, 5, ref->logits_embd, 0));
    free(rows);
    am_gen_params gp = {.sampling = am_sampling_default(), .max_tokens = N_GEN, .ignore_eos = 1};
    am_gen_result r;
    CHECK_OK(am_generate(ctx, NULL, prompt, N_PROMPT, &gp, NULL, NULL, &r));
    for (int i = 0; i < N_GEN && i < r.n_ids; i++)
        ref->ids[i] = r.ids[i];
    am_gen_result_fini(&r);
    am_llama_ctx_destroy(&ctx);
    am_backend_destroy(&be);
    am_llama_destroy(&m);
}

static void free_reference(reference *ref) {
    free(ref->logits_all);
    free(ref->logits_embd);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double e = 0;
    for (size_t i = 0; i < n; i++)
        e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

/* Group of P vs the reference: ids identical, logits within tol. */
static void check_group(const char *label, const char *path, const reference *ref, int P,
                        am_dtype wire, int max_batch, double tol) {
    run_args out;
    int rc = run_group(path, P, wire, max_batch, &out);
    CHECK_OK(rc);
    if (rc || !out.logits_all) {
        free(out.logits_all);
        free(out.logits_embd);
        return;
    }
    int V = ref->V;
    double e_all = max_abs_diff(out.logits_all, ref->logits_all, (size_t)N_PROMPT * V);
    double e_embd = max_abs_diff(out.logits_embd, ref->logits_embd, (size_t)V);
    int same = out.n_ids == N_GEN;
    for (int i = 0; i < out.n_ids && i < N_GEN; i++)
        same &= out.ids[i] == ref->ids[i];
    int64_t wsum = 0;
    for (int r = 0; r < P; r++)
        wsum += out.mem[r].weight_bytes;
    printf("  %-22s P=%d wire=%-4s batch=%2d: logits max abs diff %.3g (all %d positions), %.3g "
           "(embedding rows); "
           "greedy ids %s; weight bytes per rank %lld (1/P of the whole: %zu)\n",
           label, P, am_dtype_name(wire), max_batch, e_all, N_PROMPT, e_embd,
           same ? "identical" : "DIFFER", (long long)out.mem[0].weight_bytes,
           ref->weight_bytes / (size_t)P);
    CHECK(e_all <= tol);
    CHECK(e_embd <= tol);
    if (wire == AM_DTYPE_F32) CHECK(same);
    /* The slices add up to the whole, replicated kv heads aside. */
    CHECK(wsum >= (int64_t)ref->weight_bytes);
    free(out.logits_all);
    free(out.logits_embd);
}

static int make(const char *shape, int layers, am_model_format fmt, am_dtype dt, const char *name,
                char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", tmpdir, name);
    am_mkmodel_opts o = {
        .shape = shape, .n_layers = layers, .format = fmt, .dtype = dt, .seed = 7, .out = out};
    int rc = am_mkmodel_write(&o);
    if (rc) fprintf(stderr, "mkmodel %s: %s\n", out, am_err_msg());
    return rc;
}

/* ---- tests ------------------------------------------------------------------------- */

/* GQA (H 4, Hkv 2): kv heads split at P = 2, replicated at P = 4. HF layout. */
static void test_gqa_hf(void) {
    char path[300];
    CHECK_OK(make("tiny", 0, AM_FORMAT_SAFETENSORS, AM_DTYPE_F32, "tiny-st", path, sizeof path));
    reference ref = {0};
    make_reference(path, &ref);
    for (int P = 1; P <= 4; P *= 2)
        check_group("tiny gqa hf f32", path, &ref, P, AM_DTYPE_F32, 64, 1e-4);
    /* Chunked prefill (4 rows per chunk) and one row per chunk. */
    check_group("tiny gqa hf f32", path, &ref, 2, AM_DTYPE_F32, 4, 1e-4);
    check_group("tiny gqa hf f32", path, &ref, 4, AM_DTYPE_F32, 1, 1e-4);
    /* bf16 on the wire: each partial rounded to 8 bits of mantissa. */
    check_group("tiny gqa hf f32", path, &ref, 2, AM_DTYPE_BF16, 64, 0.1);
    free_reference(&ref);
}

/* MHA (H = Hkv = 6), llama2.c layout (adjacent RoPE), vocab 32000 split 3 and 6 ways (uneven). */
static void test_mha_llama2c(void) {
    char path[300];
    mkdir(strcat(strcpy(path, tmpdir), "/l2c"), 0755);
    CHECK_OK(make("15m", 2, AM_FORMAT_LLAMA2C, AM_DTYPE_F32, "l2c/15m.bin", path, sizeof path));
    reference ref = {0};
    make_reference(path, &ref);
    int Ps[] = {2, 3, 6};
    for (int i = 0; i < 3; i++)
        check_group("15m-2l mha llama2c", path, &ref, Ps[i], AM_DTYPE_F32, 64, 1e-4);
    free_reference(&ref);
}

/* GGUF q8_0: the o/down column slices fall on 32-element blocks at P = 2. */
static void test_q8_gguf(void) {
    char path[300];
    CHECK_OK(make("tiny", 0, AM_FORMAT_GGUF, AM_DTYPE_Q8_0, "tiny-q8.gguf", path, sizeof path));
    reference ref = {0};
    make_reference(path, &ref);
    check_group("tiny gqa gguf q8_0", path, &ref, 2, AM_DTYPE_F32, 64, 1e-4);
    free_reference(&ref);
    /* P = 4 would cut o_proj (H*D 64 -> 16 columns) and down_proj (F 192 -> 48) inside a block. */
    am_llama_model *m = NULL;
    CHECK_EQ_INT(am_llama_load_shard(path, 1, 4, &m), AM_EUNSUPPORTED);
    printf("  q8_0 at P=4: %s\n", am_err_msg());
    CHECK(strstr(am_err_msg(), "blk.0.attn_output.weight") != NULL);
    CHECK(m == NULL);
}

static void test_plan_errors(void) {
    am_llama_config cfg;
    CHECK_OK(am_mkmodel_shape("70b", 2, &cfg));
    am_llama_shard s;
    /* 70B: H 64, Hkv 8, F 28672. */
    CHECK_OK(am_llama_shard_plan(&cfg, 7, 8, &s));
    CHECK_EQ_INT(s.n_heads, 8);
    CHECK_EQ_INT(s.head0, 56);
    CHECK_EQ_INT(s.n_kv_heads, 1);
    CHECK_EQ_INT(s.kv_head0, 7);
    CHECK_EQ_INT(s.ffn_dim, 3584);
    CHECK_EQ_INT(s.n_vocab, 4000);
    CHECK_OK(am_llama_shard_plan(&cfg, 13, 16,
                                 &s)); /* kv heads replicated: ranks 12, 13 share kv head 6 */
    CHECK_EQ_INT(s.kv_head0, 6);
    CHECK_EQ_INT(s.head0, 52);
    CHECK_EQ_INT(am_llama_shard_plan(&cfg, 0, 3, &s), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "n_heads 64 is not a multiple of the 3") != NULL);
    printf("  P=3 on 70b: %s\n", am_err_msg());
    CHECK_EQ_INT(am_llama_shard_plan(&cfg, 0, 0, &s), AM_ERANGE);
    CHECK_EQ_INT(am_llama_shard_plan(&cfg, 4, 4, &s), AM_ERANGE);
    CHECK_EQ_INT(am_llama_shard_plan(&cfg, 0, 512, &s), AM_ERANGE);
    /* Hkv 6 and P 4: neither divides the other. */
    am_llama_config c2 = cfg;
    c2.n_heads = 24;
    c2.n_kv_heads = 6;
    CHECK_EQ_INT(am_llama_shard_plan(&c2, 0, 4, &s), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "n_kv_heads 6") != NULL);
    /* Uneven vocab: 32000 over 6 ranks is 5334 x 2 + 5333 x 4, contiguous. */
    am_llama_config c3;
    CHECK_OK(am_mkmodel_shape("15m", 2, &c3));
    int32_t next = 0;
    for (int r = 0; r < 6; r++) {
        CHECK_OK(am_llama_shard_plan(&c3, r, 6, &s));
        CHECK_EQ_INT(s.vocab0, next);
        next += s.n_vocab;
    }
    CHECK_EQ_INT(next, 32000);
    /* The loader checks before touching weights, and names the file. */
    char path[300];
    CHECK_OK(make("tiny", 1, AM_FORMAT_GGUF, AM_DTYPE_F32, "plan.gguf", path, sizeof path));
    am_llama_model *m = NULL;
    CHECK_EQ_INT(am_llama_load_shard(path, 0, 3, &m), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "plan.gguf") != NULL);
    /* A sharded model needs a group context. */
    CHECK_OK(am_llama_load_shard(path, 0, 2, &m));
    am_backend *be = NULL;
    CHECK_OK(am_cpu_backend_new(1, &be));
    am_llama_ctx *ctx = NULL;
    CHECK_EQ_INT(am_llama_ctx_new(m, be, 8, 8, &ctx), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "group context") != NULL);
    am_backend_destroy(&be);
    am_llama_destroy(&m);
}

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/am_test_tp.XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
    am_cpu_blas_setup(1);
}

static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_plan_errors), AM_TEST(test_gqa_hf),
             AM_TEST(test_mha_llama2c), AM_TEST(test_q8_gguf), AM_TEST(teardown))
