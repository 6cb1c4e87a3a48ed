/* tests/test_device_clean.c - the decoder, a tensor-parallel group and the encoders on a
 * backend that behaves like a device (tests/strict_device.h), against the CPU backend.
 *
 * The strict device runs the CPU backend's arithmetic but hands out only its
 * own tracked memory and aborts when an op gets a host pointer, so these
 * runs prove the code paths device-clean (every activation, scratch buffer,
 * KV page and weight in backend memory; inputs uploaded, outputs downloaded,
 * all-reduces staged through the host) without a GPU. Results must equal the
 * CPU backend's bit for bit:
 *   - am_llama_eval on a contiguous context: one prefill, chunked prefill
 *     (max_batch 7), decode steps, embedding-row input;
 *   - am_llama_decode: a prefill step of three sequences over scattered
 *     blocks (one with embedding rows) and a decode step;
 *   - the scheduler: several requests at once (greedy and sampled), one with
 *     an embedding slot and one with a pending slot supplied later, token
 *     budgets 64 and 5 (chunked prefill): the same ids;
 *   - a 2-rank tensor-parallel group of threads (host-staged all-reduce and
 *     logits gather), eval and greedy decode, against the same group on CPU;
 *   - the vision encoder (ViT + perceiver / mlp2x_gelu / linear projectors),
 *     images and a multi-frame item, and am_vision_features;
 *   - the audio (HTSAT) and IMU (IMU2CLIP) encoders with linear projectors,
 *     batches in chunks that span items.
 * Afterwards every allocation the contexts made has been freed.
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "encoders/audio.h"
#include "encoders/imu.h"
#include "encoders/mkencoders.h"
#include "encoders/vision.h"
#include "llm_shards/llama.h"
#include "llm_shards/mkmodel.h"
#include "llm_shards/sched.h"
#include "llm_shards/tp.h"
#include "strict_device.h"
#include "test_util.h"
#include "tp_local_group.h"

#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DIM   64 /* the tiny shape's model width */
#define N_CTX 128
#define BLOCK 16

static char tmpdir[256];
static char model_path[300];
static am_llama_model *model;
static am_backend *cpu, *dev;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd_u32(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}
static float rnd_f(void) { return (float)(rnd_u32() >> 8) / (float)(1 << 24) * 2.0f - 1.0f; }

static int same_floats(const float *a, const float *b, size_t n, const char *what) {
    if (memcmp(a, b, n * sizeof(float)) == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            fprintf(stderr, "%s: first difference at %zu: cpu %.9g, device %.9g\n", what, i, a[i],
                    b[i]);
            break;
        }
    return 0;
}

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/am_test_device_clean.XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
    am_cpu_blas_setup(1);
    snprintf(model_path, sizeof model_path, "%s/tiny", tmpdir);
    am_mkmodel_opts o = {.shape = "tiny",
                         .format = AM_FORMAT_SAFETENSORS,
                         .dtype = AM_DTYPE_F32,
                         .seed = 5,
                         .out = model_path};
    CHECK_OK(am_mkmodel_write(&o));
    CHECK_OK(am_llama_load(model_path, &model));
    CHECK_OK(am_cpu_backend_new(2, &cpu));
    CHECK_OK(am_strict_device_new(2, &dev));
    if (!model || !cpu || !dev) abort();
    CHECK_EQ_INT(model->cfg.dim, DIM);
    CHECK_EQ_INT(dev->host_memory, 0);
}

/* ---- the strict device itself ---- */

/* Runs fn in a child process; 1 if it died of SIGABRT (the strict device's verdict). */
static int aborts(void (*fn)(void)) {
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(1); /* the abort message is expected */
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static float host_buf[256];
static void add_host_y(void) {
    float *x = dev->ops->alloc(dev, sizeof host_buf);
    dev->ops->add(dev, host_buf, x, 256);
}
static void add_past_end(void) {
    float *x = dev->ops->alloc(dev, 100 * sizeof(float)),
          *y = dev->ops->alloc(dev, sizeof host_buf);
    dev->ops->add(dev, y, x, 256);
}
static void matmul_host_weight(void) {
    float *x = dev->ops->alloc(dev, 64 * sizeof(float)),
          *y = dev->ops->alloc(dev, 4 * sizeof(float));
    am_matrix w = {AM_DTYPE_F32, 1, 64, host_buf, 64 * sizeof(float)};
    (void)dev->ops->matmul(dev, &w, x, y, 1);
}
static void download_to_device(void) {
    float *x = dev->ops->alloc(dev, sizeof host_buf), *y = dev->ops->alloc(dev, sizeof host_buf);
    (void)dev->ops->download(dev, y, x, sizeof host_buf);
}
static void rope_host_pos(void) {
    float *x = dev->ops->alloc(dev, 64 * sizeof(float));
    const int32_t pos[1] = {0};
    dev->ops->rope(dev, x, pos, 1, 1, 64, 10000.0f, AM_ROPE_ADJACENT);
}
static void fine(void) {
    float *x = dev->ops->alloc(dev, sizeof host_buf), *y = dev->ops->alloc(dev, sizeof host_buf);
    (void)dev->ops->upload(dev, x, host_buf, sizeof host_buf);
    dev->ops->copy(dev, y, x, sizeof host_buf);
    dev->ops->add(dev, y, x, 256);
    (void)dev->ops->download(dev, host_buf, y, sizeof host_buf);
    dev->ops->free(dev, x);
    dev->ops->free(dev, y);
}

/* A host pointer, a range past an allocation's end or the wrong direction of a copy aborts. */
static void test_strict(void) {
    CHECK(aborts(add_host_y));
    CHECK(aborts(add_past_end));
    CHECK(aborts(matmul_host_weight));
    CHECK(aborts(download_to_device));
    CHECK(aborts(rope_host_pos));
    CHECK(!aborts(fine));
    fine();
    CHECK_EQ_INT(am_strict_device_live(dev), 0);
}

/* ---- am_llama_eval on a contiguous context ---- */

/* One scripted session: a prompt (all logits), decode steps, embedding rows. */
static void eval_session(am_backend *be, int32_t max_batch, float *out, size_t *n_out) {
    const int64_t V = model->cfg.vocab_size;
    am_llama_ctx *c = NULL;
    CHECK_OK(am_llama_ctx_new(model, be, N_CTX, max_batch, &c));
    if (!c) return;
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = (int32_t)(1 + (i * 37 + 11) % (V - 1));
    size_t n = 0;
    CHECK_OK(am_llama_eval(c, prompt, NULL, 40, out + n, 1));
    n += 40 * (size_t)V;
    for (int s = 0; s < 5; s++) {
        int32_t id = (int32_t)((s * 13 + 3) % V);
        CHECK_OK(am_llama_eval(c, &id, NULL, 1, out + n, 0));
        n += (size_t)V;
    }
    float embd[9 * DIM];
    uint64_t keep = rng;
    rng = 42;
    for (int i = 0; i < 9 * DIM; i++)
        embd[i] = rnd_f();
    rng = keep;
    CHECK_OK(am_llama_eval(c, NULL, embd, 9, out + n, 1));
    n += 9 * (size_t)V;
    int32_t tail[3] = {7, 8, 9};
    CHECK_OK(am_llama_eval(c, tail, NULL, 3, out + n, 0)); /* last row only */
    n += (size_t)V;
    am_llama_ctx_destroy(&c);
    *n_out = n;
}

static void test_eval(void) {
    const size_t cap = 60 * (size_t)model->cfg.vocab_size;
    float *a = am_malloc(cap * sizeof(float)), *b = am_malloc(cap * sizeof(float));
    const int32_t batches[] = {64, 7, 1};
    for (int k = 0; k < 3; k++) {
        size_t na = 0, nb = 0;
        eval_session(cpu, batches[k], a, &na);
        const int64_t ops0 = am_strict_device_n_ops(dev);
        eval_session(dev, batches[k], b, &nb);
        CHECK(na > 0 && na == nb);
        char what[64];
        snprintf(what, sizeof what, "eval, max_batch %d", batches[k]);
        CHECK(same_floats(a, b, na, what));
        CHECK(am_strict_device_n_ops(dev) > ops0);
        CHECK_EQ_INT(am_strict_device_live(dev), 0);
    }
    am_free(a);
    am_free(b);
}

/* ---- am_llama_decode: batched steps over a paged cache ---- */

/* Two steps of three sequences: prefill (tokens; embedding rows between
 * tokens; tokens in blocks 5, 1) with logits of several rows, then one decode
 * row each. logits: (7 + 3, V). */
static void decode_steps(am_backend *be, float *logits) {
    const int64_t V = model->cfg.vocab_size;
    am_llama_ctx *c = NULL;
    CHECK_OK(am_llama_ctx_new_paged(model, be, 8, BLOCK, 64, &c));
    if (!c) return;
    static const int32_t tables[3][2] = {{2, 3}, {0, 6}, {5, 1}};
    int32_t ids[40], n_blocks[3] = {2, 2, 2};
    for (int i = 0; i < 40; i++)
        ids[i] = (int32_t)(2 + (i * 17) % (V - 2));
    for (int i = 12; i < 17; i++)
        ids[i] = AM_LLAMA_EMBD_ROW; /* sequence 1, rows 2..6 */
    float embd[5 * DIM];
    for (int i = 0; i < 5 * DIM; i++)
        embd[i] = (float)((i * 7919) % 200) / 100.0f - 1.0f;
    am_attn_seq seqs[3] = {{.row0 = 0, .m = 10, .pos0 = 0, .blocks = tables[0]},
                           {.row0 = 10, .m = 9, .pos0 = 0, .blocks = tables[1]},
                           {.row0 = 19, .m = 21, .pos0 = 0, .blocks = tables[2]}};
    const int32_t rows[7] = {3, 9, 11, 16, 18, 30, 39};
    am_llama_batch b = {.n_rows = 40,
                        .ids = ids,
                        .embd = embd,
                        .n_seqs = 3,
                        .seqs = seqs,
                        .n_blocks = n_blocks,
                        .n_logits = 7,
                        .logit_rows = rows};
    CHECK_OK(am_llama_decode(c, &b, logits));
    int32_t next[3] = {4, 5, 6};
    const int32_t all[3] = {0, 1, 2};
    am_attn_seq dec[3] = {{.row0 = 0, .m = 1, .pos0 = 10, .blocks = tables[0]},
                          {.row0 = 1, .m = 1, .pos0 = 9, .blocks = tables[1]},
                          {.row0 = 2, .m = 1, .pos0 = 21, .blocks = tables[2]}};
    am_llama_batch d = {.n_rows = 3,
                        .ids = next,
                        .n_seqs = 3,
                        .seqs = dec,
                        .n_blocks = n_blocks,
                        .n_logits = 3,
                        .logit_rows = all};
    CHECK_OK(am_llama_decode(c, &d, logits + 7 * V));
    am_llama_ctx_destroy(&c);
}

static void test_decode(void) {
    const size_t n = 10 * (size_t)model->cfg.vocab_size;
    float *a = am_malloc(n * sizeof(float)), *b = am_malloc(n * sizeof(float));
    decode_steps(cpu, a);
    decode_steps(dev, b);
    CHECK(same_floats(a, b, n, "decode steps"));
    CHECK_EQ_INT(am_strict_device_live(dev), 0);
    am_free(a);
    am_free(b);
}

/* ---- the scheduler ---- */

#define N_REQ   5
#define MAX_GEN 24

typedef struct {
    int32_t ids[MAX_GEN];
    int n_ids, done, err;
} req_out;

static void on_done(void *user, uint64_t id, const am_gen_result *r, int err) {
    req_out *o = user;
    (void)id;
    o->done++;
    o->err = err;
    o->n_ids = (int)r->n_ids;
    memcpy(o->ids, r->ids, (size_t)r->n_ids * sizeof(int32_t));
}

static void run_sched(am_backend *be, int budget, req_out *outs) {
    am_llama_ctx *c = NULL;
    am_sched *s = NULL;
    CHECK_OK(am_llama_ctx_new_paged(model, be, 64, BLOCK, 64, &c));
    if (c) CHECK_OK(am_sched_new(c, NULL, budget, &s));
    if (!s) {
        am_llama_ctx_destroy(&c);
        return;
    }
    static int32_t ids[N_REQ][50];
    static float rows[2][6 * DIM];
    uint64_t keep = rng;
    rng = 7;
    for (int r = 0; r < N_REQ; r++)
        for (int i = 0; i < 50; i++)
            ids[r][i] = (int32_t)(3 + rnd_u32() % (uint32_t)(model->cfg.vocab_size - 3));
    for (int i = 0; i < 6 * DIM; i++)
        rows[0][i] = rnd_f(), rows[1][i] = rnd_f();
    rng = keep;
    memset(outs, 0, N_REQ * sizeof *outs);
    for (int r = 0; r < N_REQ; r++) {
        am_prompt_seg segs[3];
        int n_segs = 0;
        segs[n_segs++] = (am_prompt_seg){.kind = AM_SEG_TOKENS, .n = 5 + 9 * r, .ids = ids[r]};
        if (r == 1) segs[n_segs++] = (am_prompt_seg){.kind = AM_SEG_EMBD, .n = 6, .rows = rows[0]};
        if (r == 3) segs[n_segs++] = (am_prompt_seg){.kind = AM_SEG_EMBD, .n = 6, .rows = NULL};
        if (r == 1 || r == 3)
            segs[n_segs++] = (am_prompt_seg){.kind = AM_SEG_TOKENS, .n = 4, .ids = ids[r] + 40};
        am_gen_params p = {
            .sampling = am_sampling_default(), .max_tokens = 8 + 4 * r, .ignore_eos = 1};
        if (r == 4) p.sampling.temperature = 0.8f, p.sampling.top_k = 20, p.sampling.seed = 99;
        am_sched_request q = {.id = 10 + (uint64_t)r,
                              .segs = segs,
                              .n_segs = n_segs,
                              .params = p,
                              .on_done = on_done,
                              .user = &outs[r]};
        CHECK_OK(am_sched_submit(s, &q));
    }
    for (int step = 0; step < 10000; step++) {
        if (step == 3) CHECK_OK(am_sched_supply(s, 13, 1, rows[1], 6));
        int rc = am_sched_step(s);
        CHECK(rc >= 0);
        if (rc <= 0 && am_sched_n_live(s) == 0) break;
    }
    for (int r = 0; r < N_REQ; r++) {
        CHECK_EQ_INT(outs[r].done, 1);
        CHECK_EQ_INT(outs[r].err, 0);
        CHECK_EQ_INT(outs[r].n_ids, 8 + 4 * r);
    }
    am_sched_destroy(&s);
    am_llama_ctx_destroy(&c);
}

static void test_sched(void) {
    const int budgets[] = {64, 5};
    for (int k = 0; k < 2; k++) {
        req_out a[N_REQ], b[N_REQ];
        run_sched(cpu, budgets[k], a);
        run_sched(dev, budgets[k], b);
        for (int r = 0; r < N_REQ; r++) {
            CHECK_EQ_INT(a[r].n_ids, b[r].n_ids);
            CHECK(memcmp(a[r].ids, b[r].ids, sizeof a[r].ids) == 0);
        }
        CHECK_EQ_INT(am_strict_device_live(dev), 0);
    }
}

/* ---- a 2-rank tensor-parallel group of threads ---- */

#define TP_PROMPT 30
#define TP_GEN    10

typedef struct {
    local_group *g;
    int rank, on_device;
    float *logits; /* leader: (TP_PROMPT, V) prompt logits, then (TP_GEN, V) decode logits */
    int32_t ids[TP_GEN];
    int64_t live;   /* device allocations left after the context is gone */
    int64_t staged; /* bytes downloaded by this rank's device (all-reduce staging) */
} tp_args;

static void *tp_rank(void *arg) {
    tp_args *a = arg;
    local_rank lr = {.g = a->g};
    lr.comm = (am_tp_comm){.ops = &local_ops, .rank = a->rank, .size = a->g->P, .impl = &lr};
    am_llama_model *m = NULL;
    am_backend *be = NULL;
    if (am_llama_load_shard(model_path, a->rank, a->g->P, &m) ||
        (a->on_device ? am_strict_device_new(1, &be) : am_cpu_backend_new(1, &be)))
        abort();
    if (a->rank == 0) {
        const int64_t V = m->cfg.vocab_size;
        am_llama_ctx *c = NULL;
        if (am_llama_ctx_new_tp(m, be, &lr.comm, N_CTX, 8, AM_DTYPE_F32, &c)) abort();
        int32_t prompt[TP_PROMPT];
        for (int i = 0; i < TP_PROMPT; i++)
            prompt[i] = (int32_t)(1 + (i * 29 + 5) % (V - 1));
        CHECK_OK(am_llama_eval(c, prompt, NULL, TP_PROMPT, a->logits, 1)); /* 4 chunks of 8 */
        int32_t next = 0;
        const float *last = a->logits + (size_t)(TP_PROMPT - 1) * V;
        for (int g = 0; g < TP_GEN; g++) {
            for (int64_t j = 1; j < V; j++)
                if (last[j] > last[next]) next = (int32_t)j;
            a->ids[g] = next;
            float *row = a->logits + (size_t)(TP_PROMPT + g) * V;
            CHECK_OK(am_llama_eval(c, &next, NULL, 1, row, 0));
            last = row;
            next = 0;
        }
        am_llama_ctx_destroy(&c);
        am_tp_stop(&lr.comm);
    } else {
        CHECK_OK(am_tp_follow(m, be, &lr.comm));
    }
    if (a->on_device) {
        a->live = am_strict_device_live(be);
        a->staged = am_strict_device_downloaded(be);
    }
    am_backend_destroy(&be);
    am_llama_destroy(&m);
    free(lr.tmp);
    return NULL;
}

static void run_group(int on_device, tp_args *lead) {
    local_group g = {.P = 2};
    pthread_barrier_init(&g.bar, NULL, 2);
    pthread_t th[2];
    tp_args args[2];
    for (int r = 0; r < 2; r++) {
        args[r] = r == 0 ? *lead : (tp_args){0};
        args[r].g = &g, args[r].rank = r, args[r].on_device = on_device;
        pthread_create(&th[r], NULL, tp_rank, &args[r]);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    pthread_barrier_destroy(&g.bar);
    *lead = args[0];
    if (on_device) {
        CHECK_EQ_INT(args[0].live, 0);
        CHECK_EQ_INT(args[1].live, 0);
        CHECK(args[1].staged > 0); /* the follower's all-reduces went through host memory */
    }
}

static void test_group(void) {
    const size_t n = (size_t)(TP_PROMPT + TP_GEN) * (size_t)model->cfg.vocab_size;
    tp_args a = {.logits = am_malloc(n * sizeof(float))},
            b = {.logits = am_malloc(n * sizeof(float))};
    run_group(0, &a);
    run_group(1, &b);
    CHECK(same_floats(a.logits, b.logits, n, "group P=2"));
    CHECK(memcmp(a.ids, b.ids, sizeof a.ids) == 0);
    am_free(a.logits);
    am_free(b.logits);
}

/* ---- the vision encoder ---- */

static void test_vision(void) {
    const am_proj_type types[] = {AM_PROJ_PERCEIVER, AM_PROJ_MLP2X_GELU, AM_PROJ_LINEAR};
    for (int t = 0; t < 3; t++) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/enc_%s", tmpdir, am_proj_type_name(types[t]));
        mkdir(dir, 0755);
        am_mkencoders_opts o = {.dir = dir,
                                .vision_shape = "tiny",
                                .projector = types[t],
                                .dtype = AM_DTYPE_F32,
                                .seed = 3,
                                .llm_dim = DIM,
                                .llm_path = "."};
        CHECK_OK(am_mkencoders_write(&o));
        am_vision_model *m = NULL;
        CHECK_OK(am_vision_model_load(dir, &m));
        if (!m) continue;
        const int64_t FF = am_vision_frame_floats(m), O = am_vision_out_dim(m);
        const int32_t nf[3] = {1, 3, 1};
        float *px = am_aligned_alloc((size_t)(5 * FF) * sizeof(float));
        for (int64_t i = 0; i < 5 * FF; i++)
            px[i] = rnd_f() * 2.0f;
        int64_t tokens = 0;
        for (int i = 0; i < 3; i++)
            tokens += am_vision_n_tokens(m, nf[i]);
        const int64_t R = am_vision_rows_per_frame(m), C = m->vit_cfg.width;
        float *out[2], *feat[2];
        for (int k = 0; k < 2; k++) {
            am_backend *be = k == 0 ? cpu : dev;
            out[k] = am_aligned_alloc((size_t)(tokens * O) * sizeof(float));
            feat[k] = am_aligned_alloc((size_t)(2 * R * C) * sizeof(float));
            am_vision_encoder *e = NULL;
            CHECK_OK(am_vision_encoder_new(m, be, 2, 2, &e)); /* chunks of 2 frames span items */
            if (!e) continue;
            am_vision_item items[3];
            int64_t f = 0, tok = 0;
            for (int i = 0; i < 3; i++) {
                items[i] = (am_vision_item){px + f * FF, nf[i], out[k] + tok * O};
                f += nf[i];
                tok += am_vision_n_tokens(m, nf[i]);
            }
            CHECK_OK(am_vision_encode(e, items, 3));
            CHECK_OK(am_vision_features(e, px, 2, feat[k]));
            am_vision_encoder_destroy(&e);
        }
        char what[64];
        snprintf(what, sizeof what, "vision encode (%s)", am_proj_type_name(types[t]));
        CHECK(same_floats(out[0], out[1], (size_t)(tokens * O), what));
        CHECK(same_floats(feat[0], feat[1], (size_t)(2 * R * C), "vision features"));
        CHECK_EQ_INT(am_strict_device_live(dev), 0);
        for (int k = 0; k < 2; k++) {
            am_aligned_free(out[k]);
            am_aligned_free(feat[k]);
        }
        am_aligned_free(px);
        am_vision_model_destroy(&m);
    }
}

/* ---- the audio and IMU encoders ---- */

/* HTSAT (tiny) with its linear projector over 3 clips in chunks of 2, and IMU2CLIP (tiny) over
 * requests of 2 and 3 windows in chunks of 4: bit-identical on the strict device and the CPU. */
static void test_audio_imu(void) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/enc_audio_imu", tmpdir);
    mkdir(dir, 0755);
    am_mkencoders_opts o = {.dir = dir,
                            .projector = AM_PROJ_LINEAR,
                            .dtype = AM_DTYPE_F32,
                            .seed = 5,
                            .llm_dim = DIM,
                            .llm_path = ".",
                            .audio_shape = "tiny",
                            .imu_shape = "tiny"};
    CHECK_OK(am_mkencoders_write(&o));
    am_audio_model *am = NULL;
    am_imu_model *im = NULL;
    CHECK_OK(am_audio_model_load(dir, &am));
    CHECK_OK(am_imu_model_load(dir, &im));
    if (!am || !im) return;
    const int64_t NS = 48000 * 3, AT = am_audio_n_tokens(am), AO = am_audio_out_dim(am);
    const int64_t WF = AM_IMU_CHANNELS * AM_IMU_WINDOW_SAMPLES, IT = am_imu_tokens_per_window(im),
                  IO = am_imu_out_dim(im);
    float *wav = am_aligned_alloc((size_t)(3 * NS) * sizeof(float));
    float *win = am_aligned_alloc((size_t)(5 * WF) * sizeof(float));
    for (int64_t i = 0; i < 3 * NS; i++)
        wav[i] = rnd_f() * 0.5f;
    for (int64_t i = 0; i < 5 * WF; i++)
        win[i] = rnd_f() * 2.0f;
    float *aout[2], *iout[2];
    for (int k = 0; k < 2; k++) {
        am_backend *be = k == 0 ? cpu : dev;
        aout[k] = am_aligned_alloc((size_t)(3 * AT * AO) * sizeof(float));
        iout[k] = am_aligned_alloc((size_t)(5 * IT * IO) * sizeof(float));
        am_audio_encoder *ae = NULL;
        am_imu_encoder *ie = NULL;
        CHECK_OK(am_audio_encoder_new(am, be, 2, 2, &ae));
        CHECK_OK(am_imu_encoder_new(im, be, 2, 4, &ie));
        if (ae) {
            am_audio_item items[3];
            for (int i = 0; i < 3; i++)
                items[i] = (am_audio_item){wav + i * NS, NS - i * 1000, aout[k] + i * AT * AO};
            CHECK_OK(am_audio_encode(ae, items, 3));
        }
        if (ie) {
            const am_imu_item items[2] = {{win, 2, iout[k]},
                                          {win + 2 * WF, 3, iout[k] + 2 * IT * IO}};
            CHECK_OK(am_imu_encode(ie, items, 2));
        }
        am_audio_encoder_destroy(&ae);
        am_imu_encoder_destroy(&ie);
    }
    CHECK(same_floats(aout[0], aout[1], (size_t)(3 * AT * AO), "audio encode"));
    CHECK(same_floats(iout[0], iout[1], (size_t)(5 * IT * IO), "imu encode"));
    CHECK_EQ_INT(am_strict_device_live(dev), 0);
    for (int k = 0; k < 2; k++) {
        am_aligned_free(aout[k]);
        am_aligned_free(iout[k]);
    }
    am_aligned_free(wav);
    am_aligned_free(win);
    am_audio_model_destroy(&am);
    am_imu_model_destroy(&im);
}

static void teardown(void) {
    am_llama_destroy(&model);
    am_backend_destroy(&cpu);
    am_backend_destroy(&dev);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_strict), AM_TEST(test_eval), AM_TEST(test_decode),
             AM_TEST(test_sched), AM_TEST(test_group), AM_TEST(test_vision),
             AM_TEST(test_audio_imu), AM_TEST(teardown))
