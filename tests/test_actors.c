/* tests/test_actors.c - the actor system with real processes on loopback TCP.
 *
 * setup starts anymal-coordinator (100 ms heartbeats, liveness 3), two
 * anymal-encoder workers (all modalities) and a P = 2 shard group
 * (mpirun -np 2 anymal-shard-worker) on a tiny AnyMAL model made by
 * `anymal mkmodel --with-encoders`. Then:
 *  - e2e: 50 requests mixing text-only, image, audio and IMU prompts; every
 *    answer equals the in-process engine's greedy answer (am_llama_eval over
 *    the same token ids and encoder rows, one sequence at a time);
 *  - kill_encoder: SIGKILL one encoder with requests in flight: all complete,
 *    each exactly once (a replacement encoder is started afterwards);
 *  - stop_encoder: SIGSTOP an encoder past its liveness, SIGCONT: every
 *    request ends exactly once, the worker registers again;
 *  - hostile: malformed, truncated, oversized and wrong-version messages from
 *    a raw socket get an ERROR/DISCONNECT or a dropped connection; the
 *    coordinator keeps serving;
 *  - kill_shard_rank (docs/reliability.md scenario 3): SIGKILL rank 1 of the group
 *    during generation: every request ends exactly once within 30 s (the
 *    unfinished ones with 503), mpirun ends the group (no hang), HEALTH says
 *    unhealthy, and healthy again once a new group registers;
 *  - restart_coordinator (scenario 4): SIGKILL the coordinator and start it
 *    again on the same port: every worker registers again within its backoff,
 *    requests submitted afterwards (also from a client connected before)
 *    complete exactly once.
 * teardown stops every process (SIGTERM, then SIGKILL) and checks the
 * coordinator's counters.
 */
#include "coordinator/client.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/audio.h"
#include "encoders/image.h"
#include "encoders/imu.h"
#include "encoders/vision.h"
#include "llm_shards/model_files.h"
#include "llm_shards/sampler.h"
#include "cluster_util.h"
#include "test_util.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define HB_MS               AM_TC_HB_MS
#define UNSERVED_WAIT_MS    "3000" /* a request no live worker can serve: 503 after this */
#define CLIENT_MAX_REQUESTS "150"  /* above every batch below (140 at most) */
#define STALL_MS            "3000" /* a shard group with no step for this long is dead */
#define N_E2E               50
#define MAX_TOKENS          8
#define TIMEOUT_MS          60000

static pid_t p_coord, p_enc[3], p_shard;

static am_tc T;
static const char *const coord_extra[] = {"--unserved-wait-ms", UNSERVED_WAIT_MS,
                                          "--client-max-requests", CLIENT_MAX_REQUESTS, NULL};
static const char *const shard_extra[] = {"--stall-ms", STALL_MS, NULL};
static pid_t spawn(char *const argv[], const char *log) { return am_tc_spawn(argv, log); }
static void stop_proc(pid_t *p) { am_tc_stop(p); }
static pid_t start_encoder(int k) { return am_tc_start_encoder(&T, k); }
static pid_t start_shard(int k) { return am_tc_start_shard(&T, k); }
static pid_t start_coordinator(const char *bind) { return am_tc_start_coordinator(&T, bind); }

static void *read_file(const char *rel, size_t *len) {
    char path[700];
    void *d = NULL;
    snprintf(path, sizeof path, "%s/tests/golden/%s", T.src, rel);
    return am_read_file_limited(path, 1 << 26, &d, len) ? NULL : d;
}

/* ---- the in-process reference ---- */
static am_model_files mf;
static am_backend *be;
static am_vision_model *vm;
static am_audio_model *amod;
static am_imu_model *im;
static void *img_data, *aud_data, *imu_data;
static size_t img_len, aud_len, imu_len;

static int32_t *tokens(const char *text, int64_t *n) {
    int32_t *ids = NULL;
    am_tokenizer_encode(mf.tok, text, strlen(text), 0, &ids, n);
    return ids;
}

/* Rows of a media item, encoded in-process. */
static float *media_rows(int mod, int64_t *n_rows) {
    am_backend *b = be;
    float *out = NULL;
    if (mod == AM_MOD_IMAGE) {
        am_vision_encoder *e = NULL;
        am_image_limits lim = am_image_default_limits();
        am_image img;
        float *px = am_aligned_alloc((size_t)am_vision_frame_floats(vm) * sizeof(float));
        CHECK_OK(am_image_decode(img_data, img_len, "img", &lim, &img));
        CHECK_OK(am_vision_preprocess(vm, &img, px));
        am_image_fini(&img);
        *n_rows = am_vision_n_tokens(vm, 1);
        out = am_aligned_alloc((size_t)*n_rows * am_vision_out_dim(vm) * sizeof(float));
        CHECK_OK(am_vision_encoder_new(vm, b, 1, 0, &e));
        am_vision_item it = {px, 1, out};
        CHECK_OK(am_vision_encode(e, &it, 1));
        am_vision_encoder_destroy(&e);
        am_aligned_free(px);
    } else if (mod == AM_MOD_AUDIO) {
        am_audio_encoder *e = NULL;
        am_audio a;
        CHECK_OK(am_audio_decode(aud_data, aud_len, "aud", NULL, am_audio_sample_rate(amod), &a));
        *n_rows = am_audio_n_tokens(amod);
        out = am_aligned_alloc((size_t)*n_rows * am_audio_out_dim(amod) * sizeof(float));
        CHECK_OK(am_audio_encoder_new(amod, b, 1, 0, &e));
        am_audio_item it = {a.samples, a.n, out};
        CHECK_OK(am_audio_encode(e, &it, 1));
        am_audio_encoder_destroy(&e);
        am_audio_fini(&a);
    } else {
        am_imu_encoder *e = NULL;
        am_imu_windows w;
        am_imu_opts io = am_imu_default_opts();
        CHECK_OK(am_imu_prepare(imu_data, imu_len, "imu.npy", AM_IMU_AUTO, &io, &w));
        *n_rows = (int64_t)w.n_windows * am_imu_tokens_per_window(im);
        out = am_aligned_alloc((size_t)*n_rows * am_imu_out_dim(im) * sizeof(float));
        CHECK_OK(am_imu_encoder_new(im, b, 1, 0, &e));
        am_imu_item it = {w.x, w.n_windows, out};
        CHECK_OK(am_imu_encode(e, &it, 1));
        am_imu_encoder_destroy(&e);
        am_imu_windows_fini(&w);
    }
    return out;
}

/* Greedy answer for [BOS] text1 [media] text2, one sequence, contiguous KV. */
static int reference(const char *t1, int mod, const char *t2, int32_t *ids_out) {
    const am_llama_model *m = mf.model;
    am_llama_ctx *ctx = NULL;
    float *logits = am_aligned_alloc((size_t)m->cfg.vocab_size * sizeof(float));
    CHECK_OK(am_llama_ctx_new(m, be, m->cfg.max_seq_len, 64, &ctx));
    int32_t bos = am_tokenizer_bos(mf.tok);
    int64_t n1, n2;
    int32_t *a = tokens(t1, &n1), *b2 = t2 ? tokens(t2, &n2) : NULL;
    int32_t *pre = am_malloc((size_t)(n1 + 1) * sizeof *pre);
    pre[0] = bos;
    memcpy(pre + 1, a, (size_t)n1 * sizeof *a);
    CHECK_OK(am_llama_eval(ctx, pre, NULL, (int32_t)n1 + 1, logits, 0));
    if (mod >= 0) {
        int64_t nr;
        float *rows = media_rows(mod, &nr);
        CHECK_OK(am_llama_eval(ctx, NULL, rows, (int32_t)nr, logits, 0));
        am_aligned_free(rows);
    }
    if (b2 && n2) CHECK_OK(am_llama_eval(ctx, b2, NULL, (int32_t)n2, logits, 0));
    int n = 0;
    for (; n < MAX_TOKENS; n++) {
        int32_t id = am_argmax(logits, m->cfg.vocab_size);
        if (id == am_tokenizer_eos(mf.tok)) break;
        ids_out[n] = id;
        if (n + 1 < MAX_TOKENS) CHECK_OK(am_llama_eval(ctx, &id, NULL, 1, logits, 0));
    }
    am_free(a), am_free(b2), am_free(pre);
    am_aligned_free(logits);
    am_llama_ctx_destroy(&ctx);
    return n;
}

static void setup(void) {
    T.coord_extra = coord_extra;
    T.shard_extra = shard_extra;
    CHECK(am_tc_setup(&T, "am_actors", &p_coord) == 0);
    p_enc[0] = start_encoder(0);
    p_enc[1] = start_encoder(1);
    p_shard = start_shard(0);
    /* In-process engine for the reference answers. */
    CHECK_OK(am_model_files_open(&mf, T.model, NULL, 1));
    CHECK_OK(am_cpu_backend_new(1, &be));
    CHECK_OK(am_vision_model_load(T.model, &vm));
    CHECK_OK(am_audio_model_load(T.model, &amod));
    CHECK_OK(am_imu_model_load(T.model, &im));
    img_data = read_file("vision/images/land_q90.jpg", &img_len);
    aud_data = read_file("audio/speech48.wav", &aud_len);
    imu_data = read_file("imu/imu50.npy", &imu_len);
    CHECK(img_data && aud_data && imu_data);
    /* Wait until the whole cluster answers (the shard group loads under mpirun). */
    CHECK(am_tc_wait_ready(&T, 120000) == 0);
}

static const char *texts[] = {"Once upon a time", "The llama", "Hello world, this is",
                              "What do you see", "zebra"};

typedef struct {
    uint64_t rid;
    int finals, events_after_final, mod;
    int32_t ids[64];
    int n_ids, error;
} track;

/* Submits n requests (mod_of(i) picks each one's media, -1 = text only) and
 * collects every event; calls mid() once after the first `mid_after` finals. */
static void run_batch(int n, int (*mod_of)(int), track *t, int mid_after, void (*mid)(void)) {
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    if (!c) return;
    for (int i = 0; i < n; i++) {
        const char *t1 = texts[i % 5];
        int mod = mod_of(i);
        am_client_part parts[3] = {{.kind = AM_SEG_TEXT, .text = t1, .text_len = strlen(t1)}};
        int np = 1;
        if (mod >= 0) {
            parts[np++] = (am_client_part){.kind = AM_SEG_MEDIA,
                                           .modality = (uint8_t)mod,
                                           .data = mod == AM_MOD_IMAGE   ? img_data
                                                   : mod == AM_MOD_AUDIO ? aud_data
                                                                         : imu_data,
                                           .len = mod == AM_MOD_IMAGE   ? img_len
                                                  : mod == AM_MOD_AUDIO ? aud_len
                                                                        : imu_len};
            parts[np++] =
                (am_client_part){.kind = AM_SEG_TEXT, .text = "describe it", .text_len = 11};
        }
        am_client_params prm = {.max_tokens = MAX_TOKENS, .deadline_ms = 50000};
        memset(&t[i], 0, sizeof t[i]);
        t[i].mod = mod;
        CHECK_OK(am_client_submit(c, parts, np, &prm, &t[i].rid));
    }
    int done = 0, mid_done = 0;
    int64_t end = am_now_ms() + TIMEOUT_MS;
    while (done < n && am_now_ms() < end) {
        am_client_event ev;
        if (am_client_next(c, 1000, &ev)) continue;
        for (int i = 0; i < n; i++) {
            if (t[i].rid != ev.rid) continue;
            if (t[i].finals) t[i].events_after_final++;
            if (ev.cmd == AM_CMD_TOKEN)
                for (uint32_t k = 0; k < ev.msg.n_ids && t[i].n_ids < 64; k++)
                    t[i].ids[t[i].n_ids++] = ev.msg.ids[k];
            if (ev.cmd == AM_CMD_ERROR) {
                t[i].error = ev.msg.code;
                fprintf(stderr, "request %d: error %d %s\n", i, ev.msg.code, ev.msg.message);
            }
            if (am_client_event_final(&ev)) {
                if (!t[i].finals) done++;
                t[i].finals++;
            }
        }
        am_client_event_fini(&ev);
        if (mid && !mid_done && done >= mid_after) mid(), mid_done = 1;
    }
    /* Anything late (a duplicate) would show up now. */
    am_client_event ev;
    while (!am_client_next(c, 300, &ev)) {
        for (int i = 0; i < n; i++)
            if (t[i].rid == ev.rid) t[i].events_after_final++;
        am_client_event_fini(&ev);
    }
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(t[i].finals, 1);
        CHECK_EQ_INT(t[i].events_after_final, 0);
        CHECK_EQ_INT(t[i].error, 0);
    }
    am_client_destroy(&c);
}

static int mod_mix(int i) {
    return i % 5 == 1 ? AM_MOD_IMAGE : i % 10 == 3 ? AM_MOD_AUDIO : i % 10 == 8 ? AM_MOD_IMU : -1;
}
static int mod_text(int i) {
    (void)i;
    return -1;
}
static int mod_media(int i) {
    return i % 3 == 0 ? AM_MOD_IMAGE : i % 3 == 1 ? AM_MOD_AUDIO : AM_MOD_IMU;
}

static void test_e2e(void) {
    static track t[N_E2E];
    run_batch(N_E2E, mod_mix, t, 0, NULL);
    int32_t ref[5][4][MAX_TOKENS];
    int nref[5][4];
    for (int k = 0; k < 5; k++)
        for (int m = -1; m < 3; m++) {
            int mod = m < 0 ? -1 : m == 0 ? AM_MOD_IMAGE : m == 1 ? AM_MOD_AUDIO : AM_MOD_IMU;
            nref[k][m + 1] =
                reference(texts[k], mod, mod >= 0 ? "describe it" : NULL, ref[k][m + 1]);
        }
    int equal = 0;
    for (int i = 0; i < N_E2E; i++) {
        int mod = t[i].mod, col = mod < 0               ? 0
                                  : mod == AM_MOD_IMAGE ? 1
                                  : mod == AM_MOD_AUDIO ? 2
                                                        : 3;
        int same = t[i].n_ids == nref[i % 5][col] &&
                   !memcmp(t[i].ids, ref[i % 5][col], (size_t)t[i].n_ids * 4);
        if (!same)
            fprintf(stderr, "request %d (modality %d): answer differs from the in-process engine\n",
                    i, mod);
        equal += same;
    }
    printf("e2e: %d of %d answers equal the in-process greedy answers\n", equal, N_E2E);
    CHECK_EQ_INT(equal, N_E2E);
}

static void kill_enc0(void) {
    kill(p_enc[0], SIGKILL);
    waitpid(p_enc[0], NULL, 0);
    p_enc[0] = 0;
}

static void test_kill_encoder(void) {
    static track t[30];
    run_batch(30, mod_media, t, 2, kill_enc0);
    p_enc[0] = start_encoder(2); /* back to two encoders */
    usleep(500000);
}

static void stop_enc1(void) {
    kill(p_enc[1], SIGSTOP);
    usleep(800000); /* > liveness 3 x 100 ms: the coordinator declares it dead */
    kill(p_enc[1], SIGCONT);
}

static void test_stop_encoder(void) {
    static track t[30];
    run_batch(30, mod_media, t, 1, stop_enc1);
}

static void test_hostile(void) {
    void *zctx = zmq_ctx_new(), *s = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    CHECK(zmq_connect(s, T.ep) == 0);
    uint8_t hdr[AM_PROTO_HEADER_BYTES];
    am_proto_header(AM_CMD_GENERATE, hdr);
    uint8_t badver[5];
    memcpy(badver, hdr, 5);
    badver[3] = 9;
    static char big[2 << 20];
    am_bytes cases[][2] = {
        {{"garbage", 7}, {"x", 1}},              /* wrong header */
        {{badver, 5}, {"\x80", 1}},              /* wrong version */
        {{hdr, 5}, {"\x82\xa2id", 4}},           /* truncated body */
        {{hdr, 5}, {"\xdd\xff\xff\xff\xff", 5}}, /* a huge declared array */
        {{hdr, 5}, {"\x81\xa2id\x01", 5}},       /* missing required fields */
    };
    const int n_cases = (int)(sizeof cases / sizeof cases[0]);
    int answered = 0;
    for (int k = 0; k < n_cases; k++)
        CHECK_OK(am_wire_send_raw(s, cases[k], 2, 0));
    /* Every case gets its ERROR; a loaded (sanitizer) run may take a while. */
    for (int64_t end = am_now_ms() + 15000; answered < n_cases && am_now_ms() < end;) {
        zmq_pollitem_t pi = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, 500) != 1) continue;
        am_wire_in in;
        while (!am_wire_recv(s, 0, &in)) {
            am_msg m;
            if (!am_wire_decode(&in, &m)) answered += m.cmd == AM_CMD_ERROR, am_msg_fini(&m);
            am_wire_in_close(&in);
        }
    }
    CHECK_EQ_INT(answered, n_cases);
    /* Only a header frame; a frame over ZMQ_MAXMSGSIZE (the peer is dropped). */
    CHECK_OK(am_wire_send_raw(s, (am_bytes[]){{hdr, 5}}, 1, 0));
    CHECK_OK(am_wire_send_raw(s, (am_bytes[]){{hdr, 5}, {big, sizeof big}}, 2, 0));
    usleep(300000);
    zmq_close(s);
    zmq_ctx_term(zctx);
    /* The coordinator keeps serving. */
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    am_client_part p = {.kind = AM_SEG_TEXT, .text = "still there?", .text_len = 12};
    am_client_params prm = {.max_tokens = 4};
    am_client_result r;
    CHECK_OK(am_client_generate(c, &p, 1, &prm, NULL, NULL, 20000, &r));
    CHECK_EQ_INT(r.completion_tokens, r.n_ids);
    am_client_result_fini(&r);
    am_client_destroy(&c);
}

/* ---- admission (issue 18 items 1-2): what cannot be served is refused at once ---- */

/* A rogue encoder on a raw socket: registers for images with the model's row width and
 * a huge capacity (so it is picked); rogue_serve answers every ENCODE with rows of NaN
 * and heartbeats until `until_ms`, returning the ENCODE jobs it got. */
static void rogue_register(void *s, int32_t out_dim) {
    am_msg m;
    am_msg_init(&m, AM_CMD_READY);
    m.role = AM_ROLE_ENCODER;
    m.name = "rogue";
    m.model = "rogue-model";
    m.fingerprint = "rogue";
    m.capacity = 1000;
    m.out_dim = (uint32_t)out_dim;
    m.modalities[0] = AM_MOD_IMAGE;
    m.n_modalities = 1;
    CHECK_OK(am_wire_send(s, NULL, 0, &m, NULL, 0, 0));
}

static int rogue_serve(void *s, int32_t out_dim, int64_t until_ms) {
    int jobs = 0;
    int64_t next_hb = 0;
    while (am_now_ms() < until_ms) {
        if (am_now_ms() >= next_hb) {
            am_msg hb;
            am_msg_init(&hb, AM_CMD_HEARTBEAT);
            (void)am_wire_send(s, NULL, 0, &hb, NULL, 0, ZMQ_DONTWAIT);
            next_hb = am_now_ms() + 50;
        }
        zmq_pollitem_t pi = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, 20) != 1) continue;
        am_wire_in in;
        while (!am_wire_recv(s, 0, &in)) {
            am_msg job;
            if (!am_wire_decode(&in, &job)) {
                if (job.cmd == AM_CMD_ENCODE) {
                    jobs++;
                    int64_t rows = am_vision_n_tokens(vm, 1);
                    size_t n = (size_t)rows * (size_t)out_dim;
                    float *nan_rows = malloc(n * sizeof(float));
                    for (size_t i = 0; i < n; i++)
                        nan_rows[i] = NAN;
                    am_msg e;
                    am_msg_init(&e, AM_CMD_EMBED);
                    e.id = job.id;
                    e.part = job.part;
                    e.attempt = job.attempt;
                    e.modality = job.modality;
                    e.n_rows = (uint32_t)rows;
                    e.dim = (uint32_t)out_dim;
                    am_bytes b = {nan_rows, n * sizeof(float)};
                    (void)am_wire_send_bufs(s, NULL, 0, &e, &b, 1, ZMQ_DONTWAIT);
                    free(nan_rows);
                }
                am_msg_fini(&job);
            }
            am_wire_in_close(&in);
        }
    }
    return jobs;
}

static void test_admission(void) {
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    if (!c) return;
    /* A model no group has registered: 404 at once. */
    am_client_part p = {.kind = AM_SEG_TEXT, .text = "hi", .text_len = 2};
    am_client_params prm = {.max_tokens = 4, .deadline_ms = 50000, .model = "no-such-model"};
    am_client_result r;
    int64_t t0 = am_now_ms();
    CHECK_EQ_INT(am_client_generate(c, &p, 1, &prm, NULL, NULL, 20000, &r), AM_EIO);
    printf("admission: unknown model -> %d in %lld ms: %s\n", r.err_code,
           (long long)(am_now_ms() - t0), am_err_msg());
    CHECK_EQ_INT(r.err_code, AM_WERR_NOT_FOUND);
    CHECK(strstr(am_err_msg(), "model 'no-such-model' is not served here") != NULL);
    CHECK(am_now_ms() - t0 < 2000);
    am_client_result_fini(&r);
    /* A 9000 x 9000 PNG (a few hundred KB, 243 MB decoded) is refused by the encoders'
     * --max-pixels default before it is decoded: 413 naming the limit, at once. */
    {
        char png[400], cmd[1200];
        snprintf(png, sizeof png, "%s/big.png", T.dir);
        snprintf(cmd, sizeof cmd,
                 "python3 -c 'import struct,zlib,sys\n"
                 "def ck(t,d): return struct.pack(\">I\",len(d))+t+d+struct.pack(\">I\","
                 "zlib.crc32(t+d))\n"
                 "w=h=9000\n"
                 "raw=zlib.compress(bytes(w*h+h),9)\n"
                 "sys.stdout.buffer.write(b\"\\x89PNG\\r\\n\\x1a\\n\"+ck(b\"IHDR\","
                 "struct.pack(\">IIBBBBB\",w,h,8,0,0,0,0))+ck(b\"IDAT\",raw)+ck(b\"IEND\","
                 "b\"\"))' > %s",
                 png);
        CHECK(system(cmd) == 0);
        size_t big_len = 0;
        void *big = NULL;
        CHECK_OK(am_read_file_limited(png, 1 << 26, &big, &big_len));
        am_client_part bp[2] = {
            {.kind = AM_SEG_TEXT, .text = "What is this", .text_len = 12},
            {.kind = AM_SEG_MEDIA, .modality = AM_MOD_IMAGE, .data = big, .len = big_len}};
        am_client_params bprm = {.max_tokens = 4, .deadline_ms = 50000};
        t0 = am_now_ms();
        CHECK_EQ_INT(am_client_generate(c, bp, 2, &bprm, NULL, NULL, 20000, &r), AM_EIO);
        printf("admission: a %zu-byte 9000 x 9000 PNG -> %d in %lld ms: %s\n", big_len, r.err_code,
               (long long)(am_now_ms() - t0), am_err_msg());
        CHECK_EQ_INT(r.err_code, AM_WERR_TOO_LARGE);
        CHECK(strstr(am_err_msg(), "over the limit of 16777216 pixels") != NULL);
        am_client_result_fini(&r);
        am_free(big);
    }
    /* A client over its quota of requests in flight gets 429; the others run on. */
    const int quota = atoi(CLIENT_MAX_REQUESTS);
    uint64_t rid[151];
    am_client_params slow = {.max_tokens = 200, .ignore_eos = 1, .deadline_ms = 50000};
    for (int i = 0; i <= quota; i++)
        CHECK_OK(am_client_submit(c, &p, 1, &slow, &rid[i]));
    int quota_errors = 0, finals = 0, cancelled = 0;
    for (int64_t end = am_now_ms() + TIMEOUT_MS; finals <= quota && am_now_ms() < end;) {
        am_client_event ev;
        if (am_client_next(c, 500, &ev)) continue;
        if (ev.cmd == AM_CMD_ERROR && ev.msg.code == AM_WERR_OVERLOADED &&
            strstr(ev.msg.message, "quota"))
            quota_errors += ev.rid == rid[quota];
        if (am_client_event_final(&ev)) finals++;
        if (finals == 1 && !cancelled) /* the refused one: end the rest now */
            for (int i = 0; i < quota; i++)
                cancelled += !am_client_cancel(c, rid[i]);
        am_client_event_fini(&ev);
    }
    CHECK_EQ_INT(quota_errors, 1);
    CHECK_EQ_INT(finals, quota + 1);
    /* A rogue encoder's NaN rows are refused: the worker is removed and its jobs go to
     * the real encoders; every answer is the real one. */
    void *zctx = zmq_ctx_new(), *s = zmq_socket(zctx, ZMQ_DEALER);
    CHECK_OK(am_wire_setup(s, 0, 0, 0));
    CHECK(zmq_connect(s, T.ep) == 0);
    am_client_part ip[2] = {
        {.kind = AM_SEG_TEXT, .text = "What do you see", .text_len = 15},
        {.kind = AM_SEG_MEDIA, .modality = AM_MOD_IMAGE, .data = img_data, .len = img_len}};
    int32_t ref[MAX_TOKENS];
    int nref = reference("What do you see", AM_MOD_IMAGE, NULL, ref);
    am_client_params gp = {.max_tokens = MAX_TOKENS, .deadline_ms = 50000};
    /* The rogue registers first (the coordinator must see it before the jobs). */
    rogue_register(s, am_vision_out_dim(vm));
    int jobs = rogue_serve(s, am_vision_out_dim(vm), am_now_ms() + 300);
    uint64_t irid[6];
    for (int i = 0; i < 6; i++)
        CHECK_OK(am_client_submit(c, ip, 2, &gp, &irid[i]));
    jobs += rogue_serve(s, am_vision_out_dim(vm), am_now_ms() + 1500);
    int ok = 0, done = 0;
    int32_t ids[6][MAX_TOKENS];
    int n_ids[6] = {0};
    for (int64_t end = am_now_ms() + TIMEOUT_MS; done < 6 && am_now_ms() < end;) {
        am_client_event ev;
        if (am_client_next(c, 500, &ev)) continue;
        for (int i = 0; i < 6; i++) {
            if (ev.rid != irid[i]) continue;
            if (ev.cmd == AM_CMD_TOKEN)
                for (uint32_t k = 0; k < ev.msg.n_ids && n_ids[i] < MAX_TOKENS; k++)
                    ids[i][n_ids[i]++] = ev.msg.ids[k];
            if (ev.cmd == AM_CMD_ERROR)
                fprintf(stderr, "admission: image request %d: %d %s\n", i, ev.msg.code,
                        ev.msg.message);
            if (am_client_event_final(&ev)) done++;
        }
        am_client_event_fini(&ev);
    }
    for (int i = 0; i < 6; i++)
        ok += n_ids[i] == nref && !memcmp(ids[i], ref, (size_t)nref * sizeof(int32_t));
    printf("admission: the rogue encoder got %d image jobs and returned NaN; %d of 6 answers are "
           "the real ones\n",
           jobs, ok);
    CHECK(jobs >= 1);
    CHECK_EQ_INT(done, 6);
    CHECK_EQ_INT(ok, 6);
    zmq_close(s);
    zmq_ctx_term(zctx);
    am_client_destroy(&c);
}

/* ---- scenario 3: one shard rank killed during generation ---- */

static pid_t shard_rank_pid(int rank) { return am_tc_shard_rank_pid(p_shard, rank); }

static int health(am_client *c, am_client_health *h) {
    return am_client_health_get(c, NULL, 2000, h);
}

static int64_t wait_health(am_client *c, int (*ok)(const am_client_health *), int64_t timeout_ms) {
    return am_tc_wait_health(c, ok, timeout_ms);
}
static int is_unhealthy(const am_client_health *h) { return !h->healthy && h->shards == 0; }
static int is_healthy(const am_client_health *h) { return h->healthy && h->shards == 1; }
static int all_back(const am_client_health *h) {
    return h->healthy && h->shards == 1 && h->encoders == 2;
}

#define N_GROUP_KILL          16
#define GROUP_KILL_TOKENS     480
#define GROUP_ERROR_WITHIN_MS 30000

static void test_kill_shard_rank(void) {
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    if (!c) return;
    am_client_health h;
    CHECK_OK(health(c, &h));
    CHECK(h.healthy && h.shards == 1);
    uint64_t rid[N_GROUP_KILL];
    int finals[N_GROUP_KILL] = {0}, late = 0, errors = 0, done = 0, killed = 0;
    uint32_t n_tok[N_GROUP_KILL] = {0};
    for (int i = 0; i < N_GROUP_KILL; i++) {
        am_client_part p = {
            .kind = AM_SEG_TEXT, .text = texts[i % 5], .text_len = strlen(texts[i % 5])};
        am_client_params prm = {
            .max_tokens = GROUP_KILL_TOKENS, .ignore_eos = 1, .deadline_ms = 50000};
        CHECK_OK(am_client_submit(c, &p, 1, &prm, &rid[i]));
    }
    int64_t t_kill = 0, end = am_now_ms() + TIMEOUT_MS;
    while (done < N_GROUP_KILL && am_now_ms() < end) {
        am_client_event ev;
        if (am_client_next(c, 200, &ev)) continue;
        for (int i = 0; i < N_GROUP_KILL; i++) {
            if (rid[i] != ev.rid) continue;
            if (finals[i]) late++;
            if (ev.cmd == AM_CMD_TOKEN) n_tok[i] += ev.msg.n_ids;
            if (ev.cmd == AM_CMD_ERROR) {
                errors++;
                CHECK_EQ_INT(ev.msg.code, AM_WERR_UNAVAILABLE);
            }
            if (am_client_event_final(&ev)) done += !finals[i]++;
        }
        am_client_event_fini(&ev);
        if (!killed) { /* generation is under way: kill rank 1 (not the leader) */
            pid_t r1 = shard_rank_pid(1);
            CHECK(r1 > 0);
            if (r1 > 0) kill(r1, SIGKILL);
            t_kill = am_now_ms();
            killed = 1;
        }
    }
    int64_t t_all = am_now_ms() - t_kill;
    am_client_event ev;
    while (!am_client_next(c, 300, &ev))
        late += ev.rid >= rid[0] && ev.rid <= rid[N_GROUP_KILL - 1], am_client_event_fini(&ev);
    printf("kill_shard_rank: %d of %d requests ended with an error, all ended %lld ms after the "
           "kill\n",
           errors, N_GROUP_KILL, (long long)t_all);
    CHECK_EQ_INT(done, N_GROUP_KILL);
    CHECK(t_all < GROUP_ERROR_WITHIN_MS);
    CHECK(errors >= 1); /* some were in flight */
    CHECK_EQ_INT(late, 0);
    for (int i = 0; i < N_GROUP_KILL; i++) {
        CHECK_EQ_INT(finals[i], 1);
        CHECK(n_tok[i] <= GROUP_KILL_TOKENS);
    }
    /* Unhealthy now; the group's processes are gone (mpirun ends the job: no hang). */
    CHECK(wait_health(c, is_unhealthy, 5000) >= 0);
    int exited = 0;
    for (int i = 0; i < 300 && !exited; i++)
        exited = waitpid(p_shard, NULL, WNOHANG) == p_shard, usleep(exited ? 0 : 50000);
    CHECK(exited);
    if (exited)
        p_shard = 0;
    else
        stop_proc(&p_shard);
    /* With no group at all, a request fails with 503 after the unserved wait, not at its
     * 50 s deadline. */
    {
        am_client_part p = {.kind = AM_SEG_TEXT, .text = "anyone?", .text_len = 7};
        am_client_params prm = {.max_tokens = 4, .deadline_ms = 50000};
        am_client_result r;
        int64_t t0 = am_now_ms();
        CHECK_EQ_INT(am_client_generate(c, &p, 1, &prm, NULL, NULL, 20000, &r), AM_EIO);
        int64_t waited = am_now_ms() - t0;
        printf("kill_shard_rank: with no group, 503 after %lld ms: %s\n", (long long)waited,
               am_err_msg());
        CHECK_EQ_INT(r.err_code, AM_WERR_UNAVAILABLE);
        CHECK(strstr(am_err_msg(), "no shard group serves any model") != NULL);
        CHECK(waited >= atoi(UNSERVED_WAIT_MS) - 100 && waited < atoi(UNSERVED_WAIT_MS) + 5000);
        am_client_result_fini(&r);
    }
    /* A new group registers: healthy again, and it serves. */
    p_shard = start_shard(1);
    int64_t ms = wait_health(c, is_healthy, TIMEOUT_MS);
    printf("kill_shard_rank: healthy again %lld ms after the new group started\n", (long long)ms);
    CHECK(ms >= 0);
    am_client_part p = {.kind = AM_SEG_TEXT, .text = "again", .text_len = 5};
    am_client_params prm = {.max_tokens = 4};
    am_client_result r;
    CHECK_OK(am_client_generate(c, &p, 1, &prm, NULL, NULL, 20000, &r));
    am_client_result_fini(&r);
    am_client_destroy(&c);
}

/* ---- scenario 4: coordinator killed and restarted ---- */

/* Data-parallel replicas: a second shard group of the same model (one process,
 * P = 1, no mpirun) registers beside the P = 2 one; 32 text requests at once
 * are spread over both (least-loaded dispatch, 16 in flight per group), every
 * answer still equals the in-process engine's. The second group's exit line
 * counts the requests it served. */
static int two_shards(const am_client_health *h) { return h->healthy && h->shards == 2; }

static void test_replicas(void) {
    char sw[600], slog[320];
    snprintf(sw, sizeof sw, "%s/anymal-shard-worker", T.bin);
    snprintf(slog, sizeof slog, "%s/replica.log", T.dir);
    char *argv[] = {sw,  "--coordinator", T.ep,        "--model",        T.model,  "--threads",
                    "1", "--name",        "replica-b", "--heartbeat-ms", HB_MS,    "--liveness",
                    "3", "--capacity",    "16",        "--reconnect-ms", "50,400", NULL};
    pid_t p_b = spawn(argv, slog);
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    if (!c) return;
    CHECK(wait_health(c, two_shards, 20000) >= 0);
    static track t[32];
    run_batch(32, mod_text, t, 0, NULL);
    int32_t ref[5][MAX_TOKENS];
    int nref[5], equal = 0;
    for (int k = 0; k < 5; k++)
        nref[k] = reference(texts[k], -1, NULL, ref[k]);
    for (int i = 0; i < 32; i++)
        equal += t[i].n_ids == nref[i % 5] && !memcmp(t[i].ids, ref[i % 5], (size_t)t[i].n_ids * 4);
    CHECK_EQ_INT(equal, 32);
    /* A group that dies before its requests' first tokens: they run again on the other
     * (issue 18 item 5). SIGSTOP the P = 2 group's leader (link and engine): requests sent
     * now go half to it; 300 ms later the coordinator declares it dead and moves them. */
    pid_t leader = shard_rank_pid(0);
    CHECK(leader > 0);
    if (leader > 0) {
        kill(leader, SIGSTOP);
        static track t2[16];
        run_batch(16, mod_text, t2, 0, NULL); /* every one ends once, without an error */
        equal = 0;
        for (int i = 0; i < 16; i++)
            equal += t2[i].n_ids == nref[i % 5] &&
                     !memcmp(t2[i].ids, ref[i % 5], (size_t)nref[i % 5] * 4);
        printf("replicas: 16 requests sent while one group's leader was stopped: %d answered "
               "right by the other\n",
               equal);
        CHECK_EQ_INT(equal, 16);
        kill(leader, SIGCONT); /* it registers again */
        CHECK(wait_health(c, two_shards, 20000) >= 0);
    }
    stop_proc(&p_b); /* SIGTERM: it says DISCONNECT and prints its counts */
    CHECK(wait_health(c, is_healthy, 10000) >= 0);
    am_client_destroy(&c);
    size_t len = 0;
    char *log = NULL;
    FILE *f = fopen(slog, "r");
    if (f) {
        log = calloc(1, 1 << 16);
        len = fread(log, 1, (1 << 16) - 1, f);
        fclose(f);
    }
    const char *at = log ? strstr(log, "\"requests\": ") : NULL;
    long served = at ? strtol(at + 12, NULL, 10) : -1;
    printf("replicas: the P = 1 replica served %ld of 48 requests, the P = 2 group the others\n",
           served);
    CHECK(served >= 16 && served < 48); /* the 16 sent while the other's leader was stopped */
    (void)len;
    free(log);
}

static void test_restart_coordinator(void) {
    am_client *old = NULL;
    CHECK_OK(am_client_new(T.ep, &old)); /* connected before the restart: its socket reconnects */
    kill(p_coord, SIGKILL);
    waitpid(p_coord, NULL, 0);
    p_coord = start_coordinator(T.ep); /* the same port */
    int64_t t0 = am_now_ms();
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    if (!c || !old) return;
    /* Every worker registers again within its backoff (50 ms doubling to 400 ms) plus the
     * 300 ms it takes to notice the silence. */
    int64_t ms = wait_health(c, all_back, 10000);
    printf("restart_coordinator: the group and both encoders registered again %lld ms after the "
           "restart\n",
           (long long)(ms < 0 ? -1 : am_now_ms() - t0));
    CHECK(ms >= 0 && am_now_ms() - t0 < 5000);
    am_client_destroy(&c);
    /* Requests submitted after the restart complete, each exactly once (run_batch checks). */
    static track t[20];
    run_batch(20, mod_mix, t, 0, NULL);
    am_client_part p = {.kind = AM_SEG_TEXT, .text = "old client", .text_len = 10};
    am_client_params prm = {.max_tokens = 4};
    am_client_result r;
    CHECK_OK(am_client_generate(old, &p, 1, &prm, NULL, NULL, 20000, &r));
    CHECK_EQ_INT(r.n_ids, 4);
    am_client_result_fini(&r);
    am_client_destroy(&old);
}

/* ---- fair admission (issue 18 item 2): one client's backlog does not hold another back ---- */

/* Client A queues 140 image ENCODEs while the encoders pause (they hold 32 at a time),
 * then client B sends one. Deficit round robin on media bytes serves B at the next free slot: its
 * EMBED comes back while most of A's are still queued (first in, first out it would come
 * after all 140). */
static void test_fair(void) {
    am_client *a = NULL, *b = NULL;
    CHECK_OK(am_client_new(T.ep, &a));
    CHECK_OK(am_client_new(T.ep, &b));
    if (!a || !b) return;
    enum { N_A = 140 };
    am_client_part img = {
        .kind = AM_SEG_MEDIA, .modality = AM_MOD_IMAGE, .data = img_data, .len = img_len};
    uint64_t rid, brid;
    /* The encoders pause (for less than their 300 ms liveness) so that a backlog builds. */
    kill(p_enc[0], SIGSTOP);
    kill(p_enc[1], SIGSTOP);
    for (int i = 0; i < N_A; i++)
        CHECK_OK(am_client_encode(a, &img, &rid));
    usleep(60000); /* A's jobs are queued at the coordinator before B's */
    CHECK_OK(am_client_encode(b, &img, &brid));
    usleep(40000);
    kill(p_enc[0], SIGCONT);
    kill(p_enc[1], SIGCONT);
    int a_done = 0, a_before_b = -1, errors = 0;
    for (int64_t end = am_now_ms() + TIMEOUT_MS;
         (a_done < N_A || a_before_b < 0) && am_now_ms() < end;) {
        am_client_event ev;
        if (a_before_b < 0 && !am_client_next(b, 0, &ev)) {
            errors += ev.cmd != AM_CMD_EMBED;
            a_before_b = a_done;
            am_client_event_fini(&ev);
        }
        if (!am_client_next(a, 20, &ev)) {
            errors += ev.cmd != AM_CMD_EMBED;
            a_done++;
            am_client_event_fini(&ev);
        }
    }
    printf("fair: client B's image came back after %d of client A's %d queued before it\n",
           a_before_b, N_A);
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(a_done, N_A);
    CHECK(a_before_b >= 0 && a_before_b < N_A / 2);
    am_client_destroy(&a);
    am_client_destroy(&b);
}

/* ---- liveness by progress (issue 18 item 3): a stopped rank ends its group ---- */

/* SIGSTOP rank 1 (not the leader) during generation: the leader's next collective never
 * returns, its link still heartbeats; after --stall-ms without a step the leader tells
 * the coordinator and exits, every request ends (503), HEALTH says unhealthy, mpirun ends
 * the stopped rank too, and a new group serves. */
static void test_stall_rank(void) {
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    if (!c) return;
    CHECK(wait_health(c, is_healthy, 20000) >= 0);
    uint64_t rid[8];
    for (int i = 0; i < 8; i++) {
        am_client_part p = {.kind = AM_SEG_TEXT, .text = "The llama", .text_len = 9};
        am_client_params prm = {.max_tokens = 400, .ignore_eos = 1, .deadline_ms = 50000};
        CHECK_OK(am_client_submit(c, &p, 1, &prm, &rid[i]));
    }
    int finals = 0, errors = 0, stopped = 0;
    int64_t t_stop = 0;
    pid_t r1 = 0;
    for (int64_t end = am_now_ms() + TIMEOUT_MS; finals < 8 && am_now_ms() < end;) {
        am_client_event ev;
        if (am_client_next(c, 200, &ev)) continue;
        if (!stopped && ev.cmd == AM_CMD_TOKEN) {
            r1 = shard_rank_pid(1);
            CHECK(r1 > 0);
            if (r1 > 0) kill(r1, SIGSTOP);
            t_stop = am_now_ms();
            stopped = 1;
        }
        if (ev.cmd == AM_CMD_ERROR) {
            errors++;
            CHECK_EQ_INT(ev.msg.code, AM_WERR_UNAVAILABLE);
        }
        if (am_client_event_final(&ev)) finals++;
        am_client_event_fini(&ev);
    }
    int64_t ended_ms = am_now_ms() - t_stop;
    int st = -1;
    for (int i = 0; i < 1000 && st < 0; i++) {
        int w;
        if (waitpid(p_shard, &w, WNOHANG) == p_shard)
            st = WIFEXITED(w) ? WEXITSTATUS(w) : 128;
        else
            usleep(20000);
    }
    printf("stall_rank: rank 1 stopped; %d of 8 requests ended with 503, all ended %lld ms after "
           "the stop (--stall-ms %s); mpirun exited %d\n",
           errors, (long long)ended_ms, STALL_MS, st);
    CHECK_EQ_INT(finals, 8);
    CHECK(errors >= 1);
    CHECK(ended_ms >= atoi(STALL_MS) - 500 && ended_ms < atoi(STALL_MS) + 10000);
    CHECK(st > 0); /* the group ended (not a clean exit) */
    CHECK(wait_health(c, is_unhealthy, 5000) >= 0);
    if (st >= 0)
        p_shard = 0;
    else
        stop_proc(&p_shard);
    /* mpirun ends the stopped rank (SIGKILL after odls_base_sigkill_timeout, 1 s). */
    for (int i = 0; i < 250 && r1 > 0 && kill(r1, 0) == 0; i++)
        usleep(20000);
    if (r1 > 0 && kill(r1, 0) == 0) {
        fprintf(stderr, "stall_rank: the stopped rank %d is still there\n", (int)r1);
        CHECK(0);
        kill(r1, SIGKILL);
    }
    p_shard = start_shard(3);
    CHECK(wait_health(c, is_healthy, TIMEOUT_MS) >= 0);
    am_client_destroy(&c);
}

/* ---- graceful drain (issue 18 item 6): SIGTERM finishes what is in flight ---- */

/* Submits n requests (mod: -1 text, else that modality) of `tokens` tokens each, calls
 * mid() once the first token of any has come, then collects them: returns how many ended
 * with an error (their codes printed); *finals counts the ends. */
static int drain_batch(am_client *c, int n, int mod, int tokens, void (*mid)(void), int *finals) {
    uint64_t rid[8];
    int errors = 0, fired = 0;
    *finals = 0;
    for (int i = 0; i < n; i++) {
        am_client_part parts[2] = {{.kind = AM_SEG_TEXT, .text = "The llama", .text_len = 9}};
        int np = 1;
        if (mod >= 0)
            parts[np++] = (am_client_part){.kind = AM_SEG_MEDIA,
                                           .modality = (uint8_t)mod,
                                           .data = mod == AM_MOD_IMAGE ? img_data : aud_data,
                                           .len = mod == AM_MOD_IMAGE ? img_len : aud_len};
        am_client_params prm = {
            .max_tokens = (uint32_t)tokens, .ignore_eos = 1, .deadline_ms = 50000};
        CHECK_OK(am_client_submit(c, parts, np, &prm, &rid[i]));
    }
    if (mod >= 0 && mid) mid(), fired = 1; /* the encodes are under way */
    for (int64_t end = am_now_ms() + TIMEOUT_MS; *finals < n && am_now_ms() < end;) {
        am_client_event ev;
        if (am_client_next(c, 500, &ev)) continue;
        if (ev.cmd == AM_CMD_ERROR) {
            errors++;
            fprintf(stderr, "drain: request ended with %d %s\n", ev.msg.code, ev.msg.message);
        }
        if (!fired && mid && ev.cmd == AM_CMD_TOKEN) mid(), fired = 1;
        if (am_client_event_final(&ev)) ++*finals;
        am_client_event_fini(&ev);
    }
    return errors;
}

static pid_t drained_pid;
static void term_drained(void) { kill(drained_pid, SIGTERM); }

/* SIGTERM to the coordinator, then a new request from another client: refused (503). */
static int32_t probe_code;
static char probe_msg[256];
static am_client *probe; /* connected before the SIGTERM: no connection setup in the race */
static void term_coordinator_and_probe(void) {
    usleep(50000); /* the requests are admitted (their encoders are paused: they stay) */
    kill(drained_pid, SIGTERM);
    usleep(60000); /* > the coordinator's 50 ms poll: it has seen the signal */
    am_client *c = probe;
    am_client_part p = {.kind = AM_SEG_TEXT, .text = "late", .text_len = 4};
    am_client_params prm = {.max_tokens = 2};
    am_client_result r = {0};
    /* Answered means the coordinator had not yet turned to draining: ask again. */
    int rc = 0;
    for (int k = 0; k < 10 && rc == 0; k++) {
        rc = c ? am_client_generate(c, &p, 1, &prm, NULL, NULL, 5000, &r) : AM_EIO;
        probe_code = rc == AM_EIO ? r.err_code : 0;
        snprintf(probe_msg, sizeof probe_msg, "(rc %d) %s", rc, am_err_msg());
        if (rc == 0) am_client_result_fini(&r), usleep(20000);
    }
    am_client_result_fini(&r);
    kill(p_enc[0], SIGCONT); /* the drain's requests go on */
    kill(p_enc[1], SIGCONT);
}

/* Waits for pid (a child of ours: an encoder, mpirun, the coordinator) and returns its
 * exit status, or -1 when it did not exit within ms. */
static int exit_status(pid_t pid, int ms) {
    for (int i = 0; i < ms / 20; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        usleep(20000);
    }
    return -1;
}

static void test_drain(void) {
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    if (!c) return;
    CHECK(wait_health(c, all_back, 20000) >= 0);
    int finals, errors;
    /* An encoder: SIGTERM with image jobs in flight; they finish there, it exits 0. */
    drained_pid = p_enc[0];
    errors = drain_batch(c, 8, AM_MOD_IMAGE, 4, term_drained, &finals);
    int st = exit_status(p_enc[0], 20000);
    printf("drain: encoder SIGTERMed with 8 image requests in flight: %d ended, %d errors, exit "
           "%d\n",
           finals, errors, st);
    CHECK_EQ_INT(finals, 8);
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(st, 0);
    p_enc[0] = st < 0 ? p_enc[0] : 0;
    stop_proc(&p_enc[0]);
    p_enc[0] = start_encoder(3);
    /* The shard group: SIGTERM its leader with 8 generations under way; every one finishes
     * (no 503), the group stops and mpirun exits 0. */
    drained_pid = shard_rank_pid(0);
    CHECK(drained_pid > 0);
    int64_t t0 = am_now_ms();
    errors = drain_batch(c, 8, -1, 400, term_drained, &finals);
    st = exit_status(p_shard, 30000);
    printf("drain: shard leader SIGTERMed with 8 generations under way: %d ended, %d errors, "
           "group exit %d after %lld ms\n",
           finals, errors, st, (long long)(am_now_ms() - t0));
    CHECK_EQ_INT(finals, 8);
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(st, 0);
    p_shard = st < 0 ? p_shard : 0;
    stop_proc(&p_shard);
    p_shard = start_shard(2);
    CHECK(wait_health(c, all_back, TIMEOUT_MS) >= 0);
    /* The coordinator: SIGTERM with generations under way; they finish, a new request is
     * refused with 503 naming the drain, and it exits 0. */
    drained_pid = p_coord;
    CHECK_OK(am_client_new(T.ep, &probe));
    am_client_health ph;
    CHECK_OK(am_client_health_get(probe, NULL, 5000, &ph)); /* its connection is up */
    /* The tiny model answers 8 x 400 tokens in tens of ms: the requests are held in flight
     * by pausing the encoders of their images (for less than their 300 ms liveness). */
    kill(p_enc[0], SIGSTOP);
    kill(p_enc[1], SIGSTOP);
    errors = drain_batch(c, 8, AM_MOD_IMAGE, 8, term_coordinator_and_probe, &finals);
    printf("drain: a request sent while the coordinator drains: %d %s\n", probe_code, probe_msg);
    CHECK_EQ_INT(probe_code, AM_WERR_UNAVAILABLE);
    CHECK(strstr(probe_msg, "draining") != NULL);
    am_client_destroy(&probe);
    CHECK_EQ_INT(finals, 8);
    CHECK_EQ_INT(errors, 0);
    st = exit_status(p_coord, 20000);
    printf("drain: coordinator SIGTERMed with 8 generations under way: %d ended, %d errors, exit "
           "%d\n",
           finals, errors, st);
    CHECK_EQ_INT(st, 0);
    p_coord = st < 0 ? p_coord : 0;
    am_client_destroy(&c);
}

static void teardown(void) {
    stop_proc(&p_shard);
    for (int i = 0; i < 3; i++)
        stop_proc(&p_enc[i]);
    stop_proc(&p_coord);
    char cmd[700];
    snprintf(cmd, sizeof cmd,
             "grep -o '\"workers_registered\": [0-9]*' %s; grep -o '\"bad_msgs\": [0-9]*' %s",
             T.coord_log, T.coord_log);
    CHECK(system(cmd) == 0);
    am_vision_model_destroy(&vm);
    am_audio_model_destroy(&amod);
    am_imu_model_destroy(&im);
    am_backend_destroy(&be);
    am_model_files_close(&mf);
    am_free(img_data), am_free(aud_data), am_free(imu_data);
    if (!am_test_failures) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", T.dir);
        CHECK(system(cmd) == 0);
    } else {
        fprintf(stderr, "logs kept in %s\n", T.dir);
    }
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_e2e), AM_TEST(test_kill_encoder),
             AM_TEST(test_stop_encoder), AM_TEST(test_hostile), AM_TEST(test_admission),
             AM_TEST(test_fair), AM_TEST(test_replicas), AM_TEST(test_kill_shard_rank),
             AM_TEST(test_restart_coordinator), AM_TEST(test_stall_rank), AM_TEST(test_drain),
             AM_TEST(teardown))
