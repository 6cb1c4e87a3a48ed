/* tests/test_sched.c - continuous batching (llm_shards/sched.h) against each request run alone.
 *
 * A mixed workload of 40 requests on a tiny f32 model: prompt lengths 1-150,
 * max_tokens 1-40, greedy and sampled (temperature, top-k, top-p, repetition
 * penalty, seeds), stop strings, prompts with embedding slots (rows given up
 * front, or pending and supplied several steps later, one as the very first
 * segment), requests arriving while others run, a request cancelled by its
 * token callback and one cancelled from outside mid-flight. Every request's
 * ids must equal the same request run alone through a fresh scheduler with a
 * large budget (one prefill chunk), which itself equals am_generate on a
 * contiguous context for token-only prompts. Runs with token budgets of 512
 * and 7 (chunked prefill), with a KV cache so small that sequences are
 * preempted and recomputed, and in a tensor-parallel group of 2 thread ranks.
 * After every run all blocks are free and every request ended exactly once.
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "llm_shards/kv_blocks.h"
#include "llm_shards/llama.h"
#include "llm_shards/mkmodel.h"
#include "llm_shards/model_files.h"
#include "llm_shards/sched.h"
#include "test_util.h"
#include "tp_local_group.h"

#include <math.h>
#include <stdint.h>
#include <unistd.h>

#define N_REQ    40
#define MAX_SEGS 4
#define MAX_GEN  40
#define BLOCK    16
#define TOY_DIM  64 /* the tiny shape's model width */

static char tmpdir[256];
static char model_path[300];
static am_model_files mf;
static am_backend *be;

/* ---- the workload ---- */

typedef struct req_spec {
    int n_segs;
    am_seg_kind kind[MAX_SEGS];
    int32_t n[MAX_SEGS];
    int32_t ids[MAX_SEGS][160];
    float *rows[MAX_SEGS];   /* (n, C) for EMBD segments */
    int pending;             /* segment index supplied late, or -1 */
    int supply_after;        /* steps after submission */
    int submit_at;           /* step at which it is submitted */
    int cancel_after_tokens; /* its callback cancels after this many tokens, or -1 */
    int cancel_at_step;      /* am_sched_cancel at this step, or -1 */
    const char *stop[1];
    am_gen_params params;
} req_spec;

typedef struct req_out {
    int32_t ids[MAX_GEN];
    int n_ids;
    int n_done;
    int err;
    am_finish_reason finish;
    int n_tokens_cb; /* token callbacks seen */
    int cancel_after;
    char text[1024];
} req_out;

static req_spec specs[N_REQ];
static req_out alone[N_REQ];

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd_u32(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd_u32() % (uint32_t)(hi - lo + 1)); }

static void make_workload(void) {
    for (int r = 0; r < N_REQ; r++) {
        req_spec *q = &specs[r];
        memset(q, 0, sizeof *q);
        q->pending = -1;
        q->cancel_after_tokens = -1;
        q->cancel_at_step = -1;
        q->n_segs = r % 3 == 0 ? 3 : 1;
        for (int i = 0; i < q->n_segs; i++) {
            q->kind[i] = q->n_segs == 3 && i == 1 ? AM_SEG_EMBD : AM_SEG_TOKENS;
            q->n[i] = r % 7 == 0 ? rnd_int(60, 150) : rnd_int(1, 30);
            if (q->n_segs == 3 && i == 1) q->n[i] = rnd_int(4, 24);
            if (q->kind[i] == AM_SEG_TOKENS) {
                for (int k = 0; k < q->n[i]; k++)
                    q->ids[i][k] = rnd_int(3, 511);
                if (i == 0) q->ids[i][0] = 1; /* BOS */
            } else {
                q->rows[i] = malloc((size_t)q->n[i] * TOY_DIM * sizeof(float));
                for (int k = 0; k < q->n[i] * TOY_DIM; k++)
                    q->rows[i][k] = (float)((double)rnd_u32() / 4294967296.0 * 3.4 - 1.7);
            }
        }
        if (r % 6 == 3)
            q->pending = 1, q->supply_after = rnd_int(1, 12); /* r % 3 == 0: 3 segments */
        q->params.sampling = am_sampling_default();
        q->params.max_tokens = rnd_int(1, MAX_GEN);
        if (r % 4 == 1) {
            q->params.sampling.temperature = 0.8f;
            q->params.sampling.top_k = r % 8 == 1 ? 40 : 0;
            q->params.sampling.top_p = 0.9f;
            q->params.sampling.seed = 1000 + (uint64_t)r;
        }
        if (r % 5 == 2) q->params.sampling.repetition_penalty = 1.3f;
        if (r % 9 == 4) {
            q->stop[0] = "e";
            q->params.stop = q->stop;
            q->params.n_stop = 1;
        }
        q->submit_at = r < 24 ? 0 : rnd_int(1, 30);
        if (r == 5) q->cancel_after_tokens = 3, q->params.max_tokens = MAX_GEN;
        if (r == 11) q->cancel_at_step = 6, q->params.max_tokens = MAX_GEN;
    }
    /* A prompt that starts with a pending slot (no text before the image). */
    req_spec *q = &specs[N_REQ - 1];
    q->n_segs = 2;
    q->kind[0] = AM_SEG_EMBD;
    q->n[0] = 8;
    q->rows[0] = malloc(8 * TOY_DIM * sizeof(float));
    for (int k = 0; k < 8 * TOY_DIM; k++)
        q->rows[0][k] = (float)((double)rnd_u32() / 4294967296.0 - 0.5);
    q->kind[1] = AM_SEG_TOKENS;
    q->n[1] = 5;
    for (int k = 0; k < 5; k++)
        q->ids[1][k] = 40 + k;
    q->pending = 0;
    q->supply_after = 9;
}

static void free_workload(void) {
    for (int r = 0; r < N_REQ; r++)
        for (int i = 0; i < MAX_SEGS; i++)
            free(specs[r].rows[i]);
}

/* ---- running a set of requests ---- */

typedef struct run_ctx {
    req_out *out;
    am_sched *s;
} run_ctx;

typedef struct cb_user {
    req_out *o;
} cb_user;

static cb_user users[N_REQ];

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    req_out *o = ((cb_user *)user)->o;
    (void)id;
    size_t have = strlen(o->text);
    if (have + len < sizeof o->text) memcpy(o->text + have, text, len), o->text[have + len] = 0;
    if (id >= 0) o->n_tokens_cb++;
    return o->cancel_after >= 0 && o->n_tokens_cb >= o->cancel_after;
}

static void on_done(void *user, uint64_t id, const am_gen_result *r, int err) {
    req_out *o = ((cb_user *)user)->o;
    (void)id;
    o->n_done++;
    o->err = err;
    o->finish = r->finish;
    o->n_ids = (int)r->n_ids;
    memcpy(o->ids, r->ids, (size_t)r->n_ids * sizeof(int32_t));
}

/* Submits request r (rows of its pending slot withheld when `withhold`). */
static int submit(am_sched *s, int r, req_out *o, int withhold, int honour_cancel) {
    const req_spec *q = &specs[r];
    am_prompt_seg segs[MAX_SEGS];
    for (int i = 0; i < q->n_segs; i++)
        segs[i] = (am_prompt_seg){.kind = q->kind[i],
                                  .n = q->n[i],
                                  .ids = q->ids[i],
                                  .rows = withhold && i == q->pending ? NULL : q->rows[i]};
    memset(o, 0, sizeof *o);
    o->cancel_after = honour_cancel ? q->cancel_after_tokens : -1;
    users[r].o = o;
    am_sched_request req = {.id = 100 + (uint64_t)r,
                            .segs = segs,
                            .n_segs = q->n_segs,
                            .params = q->params,
                            .on_token = on_token,
                            .on_done = on_done,
                            .user = &users[r]};
    return am_sched_submit(s, &req);
}

/* Runs requests [0, n) (or only `only` when >= 0) through one scheduler;
 * checks that every block is free at the end and that each ended once. */
static void run(am_llama_ctx *ctx, int budget, int only, req_out *outs, int64_t *preemptions) {
    am_sched *s = NULL;
    CHECK_OK(am_sched_new(ctx, mf.tok, budget, &s));
    if (!s) return;
    const int total = am_sched_free_blocks(s);
    int submitted[N_REQ] = {0}, supplied[N_REQ] = {0}, step_of[N_REQ] = {0};
    const int batch = only < 0;
    for (int step = 0; step < 100000; step++) {
        for (int r = 0; r < N_REQ; r++) {
            if ((!batch && r != only) || submitted[r]) continue;
            if (batch && specs[r].submit_at > step) continue;
            CHECK_OK(submit(s, r, &outs[r], specs[r].pending >= 0 && batch, batch));
            submitted[r] = 1;
            step_of[r] = step;
        }
        for (int r = 0; batch && r < N_REQ; r++) {
            const req_spec *q = &specs[r];
            if (submitted[r] && q->pending >= 0 && !supplied[r] &&
                step >= step_of[r] + q->supply_after) {
                CHECK_OK(am_sched_supply(s, 100 + (uint64_t)r, q->pending, q->rows[q->pending],
                                         q->n[q->pending]));
                supplied[r] = 1;
            }
            if (submitted[r] && q->cancel_at_step == step && outs[r].n_done == 0)
                CHECK_OK(am_sched_cancel(s, 100 + (uint64_t)r));
        }
        int rc = am_sched_step(s);
        CHECK(rc >= 0);
        int all = 1;
        for (int r = 0; r < N_REQ; r++)
            if ((batch || r == only) && !submitted[r]) all = 0;
        if (rc == 0 && all && am_sched_n_live(s) == 0) break;
        if (rc < 0) break;
    }
    CHECK_EQ_INT(am_sched_n_live(s), 0);
    CHECK_EQ_INT(am_sched_free_blocks(s), total);
    for (int r = 0; r < N_REQ; r++)
        if (batch || r == only) {
            CHECK_EQ_INT(outs[r].n_done, 1);
            CHECK_EQ_INT(outs[r].err, 0);
        }
    const am_sched_stats *st = am_sched_get_stats(s);
    if (preemptions) *preemptions = st->preemptions;
    if (batch)
        fprintf(
            stderr,
            "batch budget %d: %lld steps, %lld rows (%lld prefill, %lld decode, %lld recomputed), "
            "up to %d sequences per step, %lld preemptions\n",
            budget, (long long)st->steps, (long long)st->rows, (long long)st->prefill_rows,
            (long long)st->decode_rows, (long long)st->recompute_rows, st->max_running,
            (long long)st->preemptions);
    if (batch && budget >= 64 && am_sched_total_blocks(s) >= 256) CHECK(st->max_running >= 20);
    am_sched_destroy(&s);
}

/* Request r of a batch run against its run alone. */
static int same_as_alone(int r, const req_out *o, const char *label) {
    const req_spec *q = &specs[r];
    const req_out *a = &alone[r];
    int cancelled = q->cancel_after_tokens >= 0 || q->cancel_at_step >= 0;
    int n = cancelled ? o->n_ids : a->n_ids;
    int bad = (!cancelled && o->n_ids != a->n_ids) || n > a->n_ids ||
              memcmp(o->ids, a->ids, (size_t)(n < 0 ? 0 : n) * sizeof(int32_t)) != 0 ||
              (!cancelled && o->finish != a->finish);
    if (q->cancel_after_tokens >= 0)
        bad |= o->finish != AM_FINISH_CANCELLED || o->n_ids != q->cancel_after_tokens;
    if (q->cancel_at_step >= 0) bad |= o->finish != AM_FINISH_CANCELLED;
    if (bad) {
        fprintf(stderr, "%s: request %d differs: %d ids (%s) vs %d alone (%s):", label, r, o->n_ids,
                am_finish_reason_name(o->finish), a->n_ids, am_finish_reason_name(a->finish));
        for (int i = 0; i < o->n_ids && i < 12; i++)
            fprintf(stderr, " %d/%d", o->ids[i], i < a->n_ids ? a->ids[i] : -1);
        fprintf(stderr, "\n");
    }
    return bad;
}

static am_llama_ctx *paged_ctx(int n_blocks, int max_batch) {
    am_llama_ctx *c = NULL;
    CHECK_OK(am_llama_ctx_new_paged(mf.model, be, n_blocks, BLOCK, max_batch, &c));
    return c;
}

/* ---- tests ---- */

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/am_test_sched.XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
    am_cpu_blas_setup(1);
    snprintf(model_path, sizeof model_path, "%s/tiny", tmpdir);
    am_mkmodel_opts o = {.shape = "tiny",
                         .format = AM_FORMAT_SAFETENSORS,
                         .dtype = AM_DTYPE_F32,
                         .seed = 11,
                         .out = model_path};
    CHECK_OK(am_mkmodel_write(&o));
    CHECK_OK(am_model_files_open(&mf, model_path, NULL, 1));
    CHECK_EQ_INT(mf.model->cfg.dim, TOY_DIM);
    CHECK_OK(am_cpu_backend_new(2, &be));
    make_workload();
}

/* Each request alone, one prefill chunk; token-only greedy and sampled
 * prompts also through am_generate on a contiguous context. */
static void test_alone(void) {
    am_llama_ctx *c = paged_ctx(256, 512);
    for (int r = 0; r < N_REQ && c; r++)
        run(c, 512, r, alone, NULL);
    am_llama_ctx_destroy(&c);
    am_llama_ctx *cc = NULL;
    CHECK_OK(am_llama_ctx_new(mf.model, be, 512, 64, &cc));
    int compared = 0;
    for (int r = 0; r < N_REQ && cc; r++) {
        const req_spec *q = &specs[r];
        if (q->n_segs != 1) continue;
        am_gen_result g;
        CHECK_OK(am_generate(cc, mf.tok, q->ids[0], q->n[0], &q->params, NULL, NULL, &g));
        CHECK_EQ_INT((int)g.n_ids, alone[r].n_ids);
        CHECK(memcmp(g.ids, alone[r].ids, (size_t)g.n_ids * sizeof(int32_t)) == 0);
        CHECK_EQ_INT((int)g.finish, (int)alone[r].finish);
        am_gen_result_fini(&g);
        compared++;
    }
    CHECK(compared >= 20);
    am_llama_ctx_destroy(&cc);
    /* The workload exercises what it claims. */
    int stopped = 0, eos_or_len = 0;
    for (int r = 0; r < N_REQ; r++) {
        stopped += alone[r].finish == AM_FINISH_STOP;
        eos_or_len += alone[r].finish == AM_FINISH_LENGTH || alone[r].finish == AM_FINISH_EOS;
    }
    CHECK(stopped >= 1);
    int total = 0;
    for (int r = 0; r < N_REQ; r++)
        total += alone[r].n_ids;
    fprintf(stderr, "alone: %d tokens generated over %d requests, %d stopped by a stop string\n",
            total, N_REQ, stopped);
    CHECK(total >= 300);
    CHECK(eos_or_len >= 20);
}

/* Prefill in chunks of 1, 5 and 33 rows gives the same outputs. */
static void test_chunked_prefill(void) {
    am_llama_ctx *c = paged_ctx(256, 512);
    const int budgets[] = {1, 5, 33};
    for (int b = 0; b < 3 && c; b++)
        for (int r = 0; r < N_REQ; r += 7) {
            req_out o;
            req_out *outs = calloc(N_REQ, sizeof *outs);
            run(c, budgets[b], r, outs, NULL);
            o = outs[r];
            free(outs);
            char label[64];
            snprintf(label, sizeof label, "alone, budget %d", budgets[b]);
            CHECK_EQ_INT(same_as_alone(r, &o, label), 0);
        }
    am_llama_ctx_destroy(&c);
}

static void check_batch(am_llama_ctx *c, int budget, const char *label, int64_t *preemptions) {
    req_out *outs = calloc(N_REQ, sizeof *outs);
    run(c, budget, -1, outs, preemptions);
    int bad = 0;
    for (int r = 0; r < N_REQ; r++)
        bad += same_as_alone(r, &outs[r], label);
    CHECK_EQ_INT(bad, 0);
    free(outs);
}

/* All 40 together (up to 40 sequences per step), with budgets 512 and 7. */
static void test_mixed_batch(void) {
    am_llama_ctx *c = paged_ctx(512, 512);
    if (!c) return;
    check_batch(c, 512, "batch, budget 512", NULL);
    check_batch(c, 7, "batch, budget 7", NULL);
    am_llama_ctx_destroy(&c);
}

/* A cache of 14 blocks (224 positions; the largest request needs 12):
 * sequences are preempted and recomputed, and all complete unchanged. */
static void test_out_of_blocks(void) {
    am_llama_ctx *c = paged_ctx(14, 512);
    if (!c) return;
    int64_t pre = 0;
    check_batch(c, 64, "tiny cache", &pre);
    fprintf(stderr, "tiny cache: %lld preemptions\n", (long long)pre);
    CHECK(pre > 0);
    am_llama_ctx_destroy(&c);
}

/* Errors at submission, supply and cancel name what was wrong; nothing leaks. */
static void test_errors(void) {
    am_llama_ctx *c = paged_ctx(8, 64);
    am_sched *s = NULL;
    CHECK_OK(am_sched_new(c, mf.tok, 0, &s));
    if (!s) return;
    int32_t ids[3] = {1, 2, 600};
    am_prompt_seg seg = {.kind = AM_SEG_TOKENS, .n = 3, .ids = ids};
    am_sched_request req = {.id = 1,
                            .segs = &seg,
                            .n_segs = 1,
                            .params = {.sampling = am_sampling_default(), .max_tokens = 4}};
    CHECK_EQ_INT(am_sched_submit(s, &req), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "600") != NULL);
    ids[2] = 5;
    req.params.max_tokens = 0;
    CHECK_EQ_INT(am_sched_submit(s, &req), AM_ERANGE);
    req.params.max_tokens = 200; /* 203 positions: 13 blocks of 16, the cache has 8 */
    CHECK_EQ_INT(am_sched_submit(s, &req), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "KV blocks") != NULL);
    req.params.max_tokens = 600;
    CHECK_EQ_INT(am_sched_submit(s, &req), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "context") != NULL);
    req.params.max_tokens = 4;
    seg.n = 0;
    CHECK_EQ_INT(am_sched_submit(s, &req), AM_ERANGE);
    seg.n = 3;
    req.n_segs = 0;
    CHECK_EQ_INT(am_sched_submit(s, &req), AM_EINVAL);
    req.n_segs = 1;
    CHECK_OK(am_sched_submit(s, &req));
    CHECK_EQ_INT(am_sched_submit(s, &req), AM_EINVAL); /* duplicate id */
    CHECK(strstr(am_err_msg(), "already live") != NULL);
    CHECK_EQ_INT(am_sched_supply(s, 1, 0, NULL, 3), AM_EINVAL);
    CHECK_EQ_INT(am_sched_supply(s, 77, 0, NULL, 3), AM_ENOTFOUND);
    CHECK_EQ_INT(am_sched_cancel(s, 77), AM_ENOTFOUND);
    /* A pending slot of 4 rows: wrong row count. */
    float rows[4 * TOY_DIM] = {0};
    am_prompt_seg segs2[2] = {{.kind = AM_SEG_TOKENS, .n = 1, .ids = ids},
                              {.kind = AM_SEG_EMBD, .n = 4}};
    am_sched_request r2 = {.id = 2, .segs = segs2, .n_segs = 2, .params = req.params};
    CHECK_OK(am_sched_submit(s, &r2));
    CHECK_EQ_INT(am_sched_supply(s, 2, 1, rows, 3), AM_EINVAL);
    CHECK_EQ_INT(am_sched_step(s), 1);
    /* Request 2 waits for its rows; cancelling it returns its block at once. */
    int before = am_sched_free_blocks(s);
    CHECK_OK(am_sched_cancel(s, 2));
    CHECK(am_sched_free_blocks(s) > before);
    /* Destroy with request 1 live: it ends (cancelled) and frees everything. */
    am_sched_destroy(&s);
    am_llama_ctx_destroy(&c);
}

/* A pending slot of unknown size (n = 0) sized when its rows come: the same
 * ids as the slot given up front; a size that overflows the context ends the
 * request with the error. */
static void test_unsized_slot(void) {
    am_llama_ctx *c = paged_ctx(64, 64);
    am_sched *s = NULL;
    CHECK_OK(am_sched_new(c, mf.tok, 0, &s));
    if (!s) return;
    const req_spec *q = &specs[3]; /* tokens, a 4..24-row slot, tokens */
    CHECK(q->n_segs == 3 && q->kind[1] == AM_SEG_EMBD);
    am_prompt_seg segs[3];
    for (int i = 0; i < 3; i++)
        segs[i] = (am_prompt_seg){.kind = q->kind[i], .n = q->n[i], .ids = q->ids[i]};
    segs[1].n = 0; /* unknown until supplied */
    req_out o;
    memset(&o, 0, sizeof o);
    o.cancel_after = -1;
    cb_user u = {&o};
    am_sched_request r = {.id = 9,
                          .segs = segs,
                          .n_segs = 3,
                          .params = q->params,
                          .on_token = on_token,
                          .on_done = on_done,
                          .user = &u};
    CHECK_OK(am_sched_submit(s, &r));
    for (int i = 0; i < 3; i++)
        CHECK(am_sched_step(s) >= 0); /* prefills the text before the slot */
    CHECK_EQ_INT(o.n_done, 0);
    CHECK_OK(am_sched_supply(s, 9, 1, q->rows[1], q->n[1]));
    while (am_sched_n_live(s) > 0)
        CHECK(am_sched_step(s) >= 0);
    CHECK_EQ_INT(o.n_done, 1);
    CHECK_EQ_INT(same_as_alone(3, &o, "unsized slot"), 0);
    /* 600 rows cannot fit the model's 512 positions. */
    memset(&o, 0, sizeof o);
    o.cancel_after = -1;
    r.id = 10;
    CHECK_OK(am_sched_submit(s, &r));
    float *big = calloc(600 * TOY_DIM, sizeof(float));
    CHECK_EQ_INT(am_sched_supply(s, 10, 1, big, 600), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "exceeds the context") != NULL);
    CHECK_EQ_INT(o.n_done, 1);
    CHECK_EQ_INT(o.err, AM_ERANGE);
    CHECK_EQ_INT(am_sched_n_live(s), 0);
    CHECK_EQ_INT(am_sched_free_blocks(s), am_sched_total_blocks(s));
    free(big);
    am_sched_destroy(&s);
    am_llama_ctx_destroy(&c);
}

/* A request whose last input is a slot of unknown size (text, then an IMU clip
 * whose rows have not come): the text before it is prefilled, but nothing is
 * sampled until the slot is filled, since the prompt does not end at the text.
 * The first token then equals that of the whole prompt given up front. */
static void test_unsized_slot_last(void) {
    am_llama_ctx *c = paged_ctx(64, 64);
    am_sched *s = NULL;
    CHECK_OK(am_sched_new(c, mf.tok, 0, &s));
    if (!s) return;
    const req_spec *q = &specs[3]; /* tokens, a 4..24-row slot, tokens */
    am_prompt_seg whole[2], pending[2];
    for (int i = 0; i < 2; i++)
        whole[i] = pending[i] = (am_prompt_seg){.kind = q->kind[i], .n = q->n[i], .ids = q->ids[i]};
    whole[1].rows = q->rows[1];
    pending[1].n = 0;
    am_gen_params params = q->params;
    params.max_tokens = 2;
    req_out o[2];
    memset(o, 0, sizeof o);
    cb_user u[2] = {{&o[0]}, {&o[1]}};
    for (int k = 0; k < 2; k++) {
        o[k].cancel_after = -1;
        am_sched_request r = {.id = 20 + (uint64_t)k,
                              .segs = k ? pending : whole,
                              .n_segs = 2,
                              .params = params,
                              .on_token = on_token,
                              .on_done = on_done,
                              .user = &u[k]};
        CHECK_OK(am_sched_submit(s, &r));
        if (k == 0)
            while (am_sched_n_live(s) > 0)
                CHECK(am_sched_step(s) >= 0);
    }
    for (int i = 0; i < 4; i++)
        CHECK(am_sched_step(s) >= 0); /* the text is prefilled; the slot is not there */
    CHECK_EQ_INT(o[1].n_tokens_cb, 0);
    CHECK_EQ_INT(o[1].n_done, 0);
    CHECK_OK(am_sched_supply(s, 21, 1, q->rows[1], q->n[1]));
    while (am_sched_n_live(s) > 0)
        CHECK(am_sched_step(s) >= 0);
    CHECK_EQ_INT(o[1].n_done, 1);
    CHECK_EQ_INT(o[1].n_ids, o[0].n_ids);
    for (int i = 0; i < o[0].n_ids && i < o[1].n_ids; i++)
        CHECK_EQ_INT(o[1].ids[i], o[0].ids[i]);
    am_sched_destroy(&s);
    am_llama_ctx_destroy(&c);
}

/* The block free list on its own. */
static void test_kv_blocks(void) {
    am_kv_blocks *b = NULL;
    CHECK_EQ_INT(am_kv_blocks_new(0, &b), AM_ERANGE);
    CHECK_OK(am_kv_blocks_new(5, &b));
    int32_t a[5], c[2];
    CHECK_OK(am_kv_blocks_alloc(b, 3, a));
    CHECK_EQ_INT(a[0], 0);
    CHECK_EQ_INT(am_kv_blocks_n_free(b), 2);
    CHECK_EQ_INT(am_kv_blocks_alloc(b, 3, c), AM_ENOMEM);
    CHECK_EQ_INT(am_kv_blocks_n_free(b), 2); /* all or none */
    am_kv_blocks_free(b, a + 1, 1);
    CHECK_OK(am_kv_blocks_alloc(b, 1, c));
    CHECK_EQ_INT(c[0], a[1]); /* last freed, first reused */
    am_kv_blocks_destroy(&b);
    CHECK(b == NULL);
}

/* On the 15m shape (dim 288, vocab 32000): 33 greedy f32 requests, each alone
 * and all 33 at once (budget 512 and 16): equal ids. A step's rows then go
 * through the matrix-vector, the tiled small-M and the library GEMM paths. */
typedef struct ids_out {
    int32_t ids[32];
    int n;
} ids_out;

static void collect(void *user, uint64_t id, const am_gen_result *r, int err) {
    ids_out *o = (ids_out *)user + id;
    o->n = err ? -1 : (int)r->n_ids;
    memcpy(o->ids, r->ids, (size_t)r->n_ids * sizeof(int32_t));
}

static void run_15m(am_llama_ctx *c, int budget, int only, ids_out *out) {
    am_sched *s = NULL;
    CHECK_OK(am_sched_new(c, NULL, budget, &s));
    if (!s) return;
    for (int r = 0; r < 33; r++) {
        if (only >= 0 && r != only) continue;
        int32_t ids[64];
        int n = 1 + (r * 13) % 24; /* prompts of 1..24: budget 16 still splits some */
        ids[0] = 1;
        for (int i = 1; i < n; i++)
            ids[i] = 3 + (r * 7919 + i * 104729) % 31990;
        am_prompt_seg seg = {.kind = AM_SEG_TOKENS, .n = n, .ids = ids};
        am_sched_request q = {.id = (uint64_t)r,
                              .segs = &seg,
                              .n_segs = 1,
                              .params = {.sampling = am_sampling_default(),
                                         .max_tokens = 6 + r % 12,
                                         .ignore_eos = 1},
                              .on_done = collect,
                              .user = out};
        CHECK_OK(am_sched_submit(s, &q));
    }
    while (am_sched_n_live(s) > 0)
        CHECK(am_sched_step(s) >= 0);
    if (only < 0) {
        fprintf(stderr, "15m, budget %d: up to %d sequences per step\n", budget,
                am_sched_get_stats(s)->max_running);
        CHECK(am_sched_get_stats(s)->max_running >= (budget >= 33 ? 24 : 6));
    }
    CHECK_EQ_INT(am_sched_free_blocks(s), am_sched_total_blocks(s));
    am_sched_destroy(&s);
}

static void test_determinism_15m(void) {
    char path[320];
    snprintf(path, sizeof path, "%s/15m.gguf", tmpdir);
    am_mkmodel_opts o = {
        .shape = "15m", .format = AM_FORMAT_GGUF, .dtype = AM_DTYPE_F32, .seed = 5, .out = path};
    CHECK_OK(am_mkmodel_write(&o));
    am_llama_model *m = NULL;
    CHECK_OK(am_llama_load(path, &m));
    am_llama_ctx *c = NULL;
    if (m) CHECK_OK(am_llama_ctx_new_paged(m, be, 33 * 6 + 2, BLOCK, 512, &c));
    if (!c) {
        am_llama_destroy(&m);
        return;
    }
    ids_out *alone15 = calloc(33, sizeof *alone15), *all = calloc(33, sizeof *all);
    for (int r = 0; r < 33; r++)
        run_15m(c, 512, r, alone15);
    const int budgets[] = {512, 16};
    for (int b = 0; b < 2; b++) {
        memset(all, 0, 33 * sizeof *all);
        run_15m(c, budgets[b], -1, all);
        int bad = 0;
        for (int r = 0; r < 33; r++)
            bad += all[r].n != alone15[r].n || all[r].n != 6 + r % 12 ||
                   memcmp(all[r].ids, alone15[r].ids,
                          (size_t)(all[r].n > 0 ? all[r].n : 0) * sizeof(int32_t)) != 0;
        if (bad)
            fprintf(stderr, "15m, budget %d: %d of 33 requests differ from their runs alone\n",
                    budgets[b], bad);
        CHECK_EQ_INT(bad, 0);
    }
    free(alone15);
    free(all);
    am_llama_ctx_destroy(&c);
    am_llama_destroy(&m);
}

/* ---- a group of 2 thread ranks ---- */

typedef struct group_args {
    local_group *g;
    int rank;
    req_out *outs;
} group_args;

static void *group_rank(void *arg) {
    group_args *a = arg;
    local_rank lr = {.g = a->g};
    lr.comm = (am_tp_comm){.ops = &local_ops, .rank = a->rank, .size = a->g->P, .impl = &lr};
    am_model_files sm = {0};
    am_backend *rbe = NULL;
    if (am_model_files_open_shard(&sm, model_path, NULL, a->rank == 0, a->rank, a->g->P) ||
        am_cpu_backend_new(1, &rbe))
        abort();
    if (a->rank == 0) {
        am_llama_ctx *c = NULL;
        if (am_llama_ctx_new_paged_tp(sm.model, rbe, &lr.comm, 40, BLOCK, 128, AM_DTYPE_F32, &c))
            abort();
        /* The shared model files of the test are the leader's tokenizer's twin. */
        am_model_files keep = mf;
        mf.tok = sm.tok;
        run(c, 48, -1, a->outs, NULL);
        mf = keep;
        am_llama_ctx_destroy(&c);
        am_tp_stop(&lr.comm);
    } else {
        am_tp_follow(sm.model, rbe, &lr.comm);
    }
    am_backend_destroy(&rbe);
    am_model_files_close(&sm);
    free(lr.tmp);
    return NULL;
}

/* The workload at P = 2 (a cache of 40 blocks: some preemption too); greedy
 * requests must match their single-process runs exactly (sampled ones draw
 * from logits that differ in the last bits, so they are not compared). */
static void test_group(void) {
    local_group g = {.P = 2};
    pthread_barrier_init(&g.bar, NULL, 2);
    req_out *outs = calloc(N_REQ, sizeof *outs);
    pthread_t th[2];
    group_args args[2];
    for (int r = 0; r < 2; r++) {
        args[r] = (group_args){&g, r, outs};
        pthread_create(&th[r], NULL, group_rank, &args[r]);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    pthread_barrier_destroy(&g.bar);
    int bad = 0, compared = 0;
    for (int r = 0; r < N_REQ; r++) {
        if (specs[r].params.sampling.temperature > 0) continue;
        bad += same_as_alone(r, &outs[r], "group P=2");
        compared++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(compared >= 25);
    free(outs);
}

static void teardown(void) {
    free_workload();
    am_model_files_close(&mf);
    am_backend_destroy(&be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_kv_blocks), AM_TEST(test_alone),
             AM_TEST(test_chunked_prefill), AM_TEST(test_mixed_batch), AM_TEST(test_out_of_blocks),
             AM_TEST(test_errors), AM_TEST(test_unsized_slot), AM_TEST(test_unsized_slot_last),
             AM_TEST(test_determinism_15m), AM_TEST(test_group), AM_TEST(teardown))
