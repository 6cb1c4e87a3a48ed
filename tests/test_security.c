/* tests/test_security.c - authenticated, encrypted links (issue 18 item 1) with real processes.
 *
 * setup makes keys with `anymal keygen` (the coordinator's; worker keys "enc" and
 * "group" in a list file; client key "alice" in a key directory; "rogue", on no
 * list), and starts (tests/cluster_util.h) anymal-coordinator with them
 * (--max-workers-per-key 1), an anymal-encoder (key enc) and a P = 2 shard group (key
 * group). The group
 * and the clients reach the coordinator through a TCP relay in this process that
 * records every byte both ways. Then:
 *  - keygen: mode 0600, no overwrite; a secret key others can read is refused;
 *  - encrypted: a prompt holding a password is answered (text and image), and the
 *    relay's capture holds neither the password nor the other prompt; the control: the
 *    same request to a coordinator without keys shows the password in the capture;
 *  - table_full: 257 READYs to a coordinator without keys: the last gets 429, and the log
 *    names it;
 *  - worker_refused: an encoder without a key, one with the rogue key and a second
 *    one with key enc (over its limit) never register; the coordinator logs each;
 *  - rogue_registration: READY from a client's key (403) and from the rogue key (no
 *    connection) with a huge capacity: every request goes to the real group, neither
 *    rogue socket receives a single request;
 *  - unauthenticated_client: no key, an unlisted key, or a wrong coordinator key:
 *    no answer at all, and the client names the reason;
 *  - gateway_link: anymal-gateway with its client key answers HTTP; without a key it
 *    answers 503 and logs the refusal;
 *  - bind: a non-loopback bind without keys is refused unless --insecure.
 * teardown stops every process and checks the coordinator's refusal counters.
 */
#include "coordinator/client.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file.h"
#include "proto/curve.h"
#include "cluster_util.h"
#include "test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define TIMEOUT_MS  60000
#define PASSWORD    "hunter2-7c1f-password"
#define PROMPT_TEXT "Please remember my bank password"

static am_tc tc;
static char keys[300], *const dir = tc.dir, *const ep = tc.ep, *const bin = tc.bin,
                              *const coord_log = tc.coord_log;
static pid_t p_coord, p_enc, p_shard;

/* ---- a TCP relay that records what passes ---- */

#define RELAY_MAX_CONNS 16
#define RELAY_CAP       (64u << 20)

typedef struct relay {
    int lfd, port, target_port;
    pthread_t th;
    atomic_int stop;
    pthread_mutex_t mu;
    char *buf;
    size_t len;
} relay;

static void relay_record(relay *r, const char *b, size_t n) {
    pthread_mutex_lock(&r->mu);
    if (r->len + n <= RELAY_CAP) memcpy(r->buf + r->len, b, n), r->len += n;
    pthread_mutex_unlock(&r->mu);
}

static void *relay_main(void *arg) {
    relay *r = arg;
    int fds[RELAY_MAX_CONNS][2]; /* [client, upstream] */
    int n = 0;
    char b[65536];
    while (!atomic_load(&r->stop)) {
        struct pollfd pf[1 + 2 * RELAY_MAX_CONNS];
        pf[0] = (struct pollfd){r->lfd, POLLIN, 0};
        for (int i = 0; i < n; i++) {
            pf[1 + 2 * i] = (struct pollfd){fds[i][0], POLLIN, 0};
            pf[2 + 2 * i] = (struct pollfd){fds[i][1], POLLIN, 0};
        }
        if (poll(pf, (nfds_t)(1 + 2 * n), 50) <= 0) continue;
        if (pf[0].revents & POLLIN) {
            int c = accept(r->lfd, NULL, NULL);
            int u = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(r->target_port)};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (c >= 0 && u >= 0 && n < RELAY_MAX_CONNS &&
                !connect(u, (struct sockaddr *)&a, sizeof a)) {
                fds[n][0] = c, fds[n][1] = u, n++;
            } else {
                if (c >= 0) close(c);
                if (u >= 0) close(u);
            }
        }
        for (int i = 0; i < n; i++) {
            int dead = 0;
            for (int d = 0; d < 2 && !dead; d++) {
                if (!(pf[1 + 2 * i + d].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                ssize_t k = read(fds[i][d], b, sizeof b);
                if (k <= 0) {
                    dead = 1;
                    break;
                }
                relay_record(r, b, (size_t)k);
                for (ssize_t off = 0; off < k;) {
                    ssize_t w = write(fds[i][1 - d], b + off, (size_t)(k - off));
                    if (w <= 0) {
                        dead = 1;
                        break;
                    }
                    off += w;
                }
            }
            if (dead) {
                close(fds[i][0]), close(fds[i][1]);
                fds[i][0] = fds[n - 1][0], fds[i][1] = fds[n - 1][1];
                n--, i--;
                break; /* pf no longer matches fds: poll again */
            }
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i][0]), close(fds[i][1]);
    return NULL;
}

static int relay_start(relay *r, int target_port) {
    memset(r, 0, sizeof *r);
    r->target_port = target_port;
    r->buf = malloc(RELAY_CAP);
    pthread_mutex_init(&r->mu, NULL);
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (!r->buf || r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&a, sizeof a) ||
        listen(r->lfd, 16) || getsockname(r->lfd, (struct sockaddr *)&a, &al))
        return -1;
    r->port = ntohs(a.sin_port);
    return pthread_create(&r->th, NULL, relay_main, r) ? -1 : 0;
}

static void relay_stop(relay *r) {
    if (!r->buf) return;
    atomic_store(&r->stop, 1);
    pthread_join(r->th, NULL);
    close(r->lfd);
    free(r->buf);
    pthread_mutex_destroy(&r->mu);
    r->buf = NULL;
}

/* Bytes captured so far, and whether s occurs in them. */
static size_t relay_has(relay *r, const char *s, int *found) {
    pthread_mutex_lock(&r->mu);
    size_t n = strlen(s), len = r->len;
    *found = 0;
    for (size_t i = 0; i + n <= len && !*found; i++)
        *found = !memcmp(r->buf + i, s, n);
    pthread_mutex_unlock(&r->mu);
    return len;
}

static relay rel;
static char relay_ep[64];

/* ---- processes ---- */

static void key_path(char *out, size_t cap, const char *name, const char *ext) {
    snprintf(out, cap, "%s/%s.%s", keys, name, ext);
}

/* An encoder worker (images) with a key (NULL: none), logging to enc-<tag>.log. */
static pid_t start_encoder(const char *tag, const char *key) {
    char path[600], log[400], kf[400], cpub[400], name[64];
    snprintf(path, sizeof path, "%s/anymal-encoder", bin);
    snprintf(log, sizeof log, "%s/enc-%s.log", dir, tag);
    snprintf(name, sizeof name, "enc-%s", tag);
    key_path(kf, sizeof kf, key ? key : "", "key");
    key_path(cpub, sizeof cpub, "coordinator", "pub");
    char *argv[] = {path,        "--coordinator",
                    ep,          "--model",
                    tc.model,    "--modality",
                    "image",     "--threads",
                    "1",         "--name",
                    name,        "--heartbeat-ms",
                    AM_TC_HB_MS, "--liveness",
                    "3",         "--reconnect-ms",
                    "50,400",    key ? "--curve-key" : NULL,
                    kf,          "--coordinator-key",
                    cpub,        NULL};
    return am_tc_spawn(argv, log);
}

static void setup(void) {
    /* The keys first (in am_tc_setup's directory): the coordinator starts with them. */
    snprintf(keys, sizeof keys, "/tmp/am_security_%d/keys", (int)getpid());
    const char *b = getenv("AM_BIN_DIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/clients && cd %s && for k in coordinator enc group rogue; do "
             "%s/anymal keygen --out $k >/dev/null || exit 1; done && "
             "%s/anymal keygen --out clients/alice >/dev/null && "
             "%s/anymal keygen --out clients/gateway >/dev/null && cat enc.pub group.pub > workers",
             keys, keys, b ? b : "bin", b ? b : "bin", b ? b : "bin");
    CHECK(system(cmd) == 0);
    static char secret[400], wl[400], cl[400], gk[400], cpub[400];
    key_path(secret, sizeof secret, "coordinator", "key");
    snprintf(wl, sizeof wl, "%s/workers", keys);
    snprintf(cl, sizeof cl, "%s/clients", keys);
    key_path(gk, sizeof gk, "group", "key");
    key_path(cpub, sizeof cpub, "coordinator", "pub");
    static const char *coord_extra[] = {"--curve-secret",
                                        secret,
                                        "--worker-keys",
                                        wl,
                                        "--client-keys",
                                        cl,
                                        "--max-workers-per-key",
                                        "1",
                                        NULL};
    static const char *shard_extra[] = {"--curve-key", gk, "--coordinator-key", cpub, NULL};
    tc.coord_extra = coord_extra;
    tc.shard_extra = shard_extra;
    CHECK(am_tc_setup(&tc, "am_security", &p_coord) == 0);
    CHECK(relay_start(&rel, atoi(strrchr(ep, ':') + 1)) == 0);
    snprintf(relay_ep, sizeof relay_ep, "tcp://127.0.0.1:%d", rel.port);
    p_enc = start_encoder("main", "enc");
    /* The group reaches the coordinator through the relay: its link is captured too. */
    char real_ep[256];
    snprintf(real_ep, sizeof real_ep, "%s", ep);
    snprintf(tc.ep, sizeof tc.ep, "%s", relay_ep);
    p_shard = am_tc_start_shard(&tc, 0);
    snprintf(tc.ep, sizeof tc.ep, "%s", real_ep);
}

static am_client *alice(const char *endpoint) {
    char k[400], c[400];
    key_path(k, sizeof k, "clients/alice", "key");
    key_path(c, sizeof c, "coordinator", "pub");
    am_client_opts o = {.endpoint = endpoint, .curve_key = k, .coordinator_key = c};
    am_client *cl = NULL;
    CHECK_OK(am_client_new_opts(&o, &cl));
    return cl;
}

/* Waits until HEALTH says `encoders` encoders and a group are live. */
static int wait_cluster(am_client *c, uint32_t encoders) {
    for (int64_t end = am_now_ms() + TIMEOUT_MS; am_now_ms() < end;) {
        am_client_health h;
        if (!am_client_health_get(c, NULL, 2000, &h) && h.healthy && h.encoders == encoders)
            return 1;
        usleep(100000);
    }
    return 0;
}

static void test_keygen(void) {
    char cmd[4096], kf[400], out[600];
    key_path(kf, sizeof kf, "enc", "key");
    struct stat st;
    CHECK(stat(kf, &st) == 0 && (st.st_mode & 0777) == 0600);
    snprintf(out, sizeof out, "%s/keygen.out", dir);
    snprintf(cmd, sizeof cmd, "%s/anymal keygen --out %s/enc >%s 2>&1", bin, keys, out);
    CHECK(system(cmd) != 0);
    CHECK(am_tc_file_has(out, "refusing to overwrite", 0));
    /* A secret key others can read is refused, naming the fix. */
    snprintf(cmd, sizeof cmd,
             "cp %s %s/open.key && chmod 644 %s/open.key && %s/anymal client --coordinator %s "
             "--health --curve-key %s/open.key --coordinator-key %s/coordinator.pub >%s 2>&1",
             kf, dir, dir, bin, ep, dir, keys, out);
    CHECK(system(cmd) != 0);
    CHECK(am_tc_file_has(out, "chmod 600", 0));
}

static void test_encrypted(void) {
    am_client *c = alice(relay_ep);
    if (!c) return;
    CHECK(wait_cluster(c, 1));
    const char *t = PROMPT_TEXT ": " PASSWORD;
    am_client_part p = {.kind = AM_SEG_TEXT, .text = t, .text_len = strlen(t)};
    am_client_params prm = {.max_tokens = 8, .deadline_ms = 50000};
    am_client_result r;
    CHECK_OK(am_client_generate(c, &p, 1, &prm, NULL, NULL, TIMEOUT_MS, &r));
    CHECK(r.completion_tokens >= 1);
    am_client_result_fini(&r);
    /* An image request: the encoder's link works with keys too. */
    char img[600];
    snprintf(img, sizeof img, "%s/tests/golden/vision/images/land_q90.jpg", tc.src);
    void *data = NULL;
    size_t len = 0;
    CHECK_OK(am_read_file_limited(img, 1 << 26, &data, &len));
    am_client_part ip[2] = {
        {.kind = AM_SEG_TEXT, .text = PASSWORD, .text_len = strlen(PASSWORD)},
        {.kind = AM_SEG_MEDIA, .modality = AM_MOD_IMAGE, .data = data, .len = len}};
    CHECK_OK(am_client_generate(c, ip, 2, &prm, NULL, NULL, TIMEOUT_MS, &r));
    CHECK(r.completion_tokens >= 1);
    am_client_result_fini(&r);
    am_free(data);
    am_client_destroy(&c);
    int pw = 1, text = 1;
    size_t n = relay_has(&rel, PASSWORD, &pw);
    relay_has(&rel, PROMPT_TEXT, &text);
    printf("encrypted: %zu bytes captured between the client/group and the coordinator; the "
           "password %s, the prompt %s\n",
           n, pw ? "FOUND" : "absent", text ? "FOUND" : "absent");
    CHECK(n > 10000); /* the prompts, the image and the answers went through */
    CHECK(!pw);
    CHECK(!text);
}

/* The control: a coordinator without keys, the same request; the capture shows it. */
/* A coordinator without keys on a free loopback port (its endpoint into ep2, log
 * coord-<tag>.log). */
static pid_t start_plain(const char *tag, char *ep2, size_t cap, char *log, size_t log_cap) {
    char path[600], epf[300];
    snprintf(path, sizeof path, "%s/anymal-coordinator", bin);
    snprintf(epf, sizeof epf, "%s/ep-%s", dir, tag);
    snprintf(log, log_cap, "%s/coord-%s.log", dir, tag);
    char *argv[] = {path, "--bind", "tcp://127.0.0.1:*", "--endpoint-file", epf, NULL};
    pid_t p = am_tc_spawn(argv, log);
    for (int i = 0; i < 100 && access(epf, R_OK); i++)
        usleep(50000);
    FILE *f = fopen(epf, "r");
    ep2[0] = 0;
    CHECK(f && fscanf(f, "%255s", ep2) == 1);
    if (f) fclose(f);
    (void)cap;
    return p;
}

static void test_plain_control(void) {
    char ep2[256], log[300];
    pid_t p = start_plain("plain", ep2, sizeof ep2, log, sizeof log);
    relay r2;
    CHECK(relay_start(&r2, atoi(strrchr(ep2, ':') + 1)) == 0);
    char rep[64];
    snprintf(rep, sizeof rep, "tcp://127.0.0.1:%d", r2.port);
    am_client *c = NULL;
    CHECK_OK(am_client_new(rep, &c));
    const char *t = PROMPT_TEXT ": " PASSWORD;
    am_client_part part = {.kind = AM_SEG_TEXT, .text = t, .text_len = strlen(t)};
    am_client_params prm = {.max_tokens = 8, .deadline_ms = 300};
    am_client_result res;
    /* No group serves it: it ends with an error; what matters is what crossed the wire. */
    (void)am_client_generate(c, &part, 1, &prm, NULL, NULL, 5000, &res);
    am_client_destroy(&c);
    int pw = 0;
    size_t n = relay_has(&r2, PASSWORD, &pw);
    printf("control: without keys, %zu bytes captured; the password %s\n", n,
           pw ? "FOUND" : "absent");
    CHECK(pw);
    relay_stop(&r2);
    am_tc_stop(&p);
}

/* 257 READYs (no keys: one coordinator, no per-key limit) fill the table of 256 workers:
 * the last is refused with 429, and the log names it. */
static void test_table_full(void) {
    char ep2[256], log[300];
    pid_t p = start_plain("full", ep2, sizeof ep2, log, sizeof log);
    void *zctx = zmq_ctx_new();
    enum { N = 257 };
    static void *s[N];
    char name[N][32];
    int full = 0;
    for (int i = 0; i < N; i++) {
        s[i] = zmq_socket(zctx, ZMQ_DEALER);
        CHECK_OK(am_wire_setup(s[i], 0, 0, 0));
        CHECK(zmq_connect(s[i], ep2) == 0);
        am_msg m;
        am_msg_init(&m, AM_CMD_READY);
        snprintf(name[i], sizeof name[i], "filler-%d", i);
        m.role = AM_ROLE_ENCODER;
        m.name = name[i];
        m.model = "tiny";
        m.fingerprint = "fp";
        m.capacity = 1;
        m.out_dim = 64;
        m.modalities[0] = AM_MOD_IMAGE;
        m.n_modalities = 1;
        CHECK_OK(am_wire_send(s[i], NULL, 0, &m, NULL, 0, 0));
        if (i + 1 < N - 1) continue;
        /* The 256 first (each is registered when the coordinator's first HEARTBEAT comes),
         * then the one too many: connections are accepted in no particular order. */
        int registered = 0;
        for (int k = 0; k < N - 1; k++) {
            zmq_pollitem_t pi = {s[k], 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&pi, 1, 2000) != 1) continue;
            am_wire_in in;
            while (!am_wire_recv(s[k], 0, &in))
                am_wire_in_close(&in);
            registered++;
        }
        CHECK_EQ_INT(registered, N - 1);
    }
    for (int64_t end = am_now_ms() + 10000; !full && am_now_ms() < end;) {
        zmq_pollitem_t pi = {s[N - 1], 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, 100) != 1) continue;
        am_wire_in in;
        while (!am_wire_recv(s[N - 1], 0, &in)) {
            am_msg m;
            if (!am_wire_decode(&in, &m)) {
                full += m.cmd == AM_CMD_ERROR && m.code == AM_WERR_OVERLOADED &&
                        strstr(m.message, "worker table is full");
                am_msg_fini(&m);
            }
            am_wire_in_close(&in);
        }
    }
    printf("table_full: the 257th READY %s\n", full ? "got 429 (table full)" : "got no refusal");
    CHECK(full);
    CHECK(am_tc_file_has(log,
                         "refused encoder worker 'filler-256' (model tiny, no key): the "
                         "worker table is full (256 workers)",
                         5000));
    for (int i = 0; i < N; i++)
        zmq_close(s[i]);
    zmq_ctx_term(zctx);
    am_tc_stop(&p);
}

static void test_worker_refused(void) {
    char rogue_pub[AM_CURVE_KEY_CHARS + 1], pf[400], want[256], elog[400];
    key_path(pf, sizeof pf, "rogue", "pub");
    CHECK_OK(am_curve_load_public(pf, rogue_pub));
    /* Key enc already serves one worker, its limit. */
    pid_t second = start_encoder("second", "enc");
    CHECK(am_tc_file_has(coord_log, "key 'enc' has 1 workers registered, its limit", TIMEOUT_MS));
    am_tc_stop(&second);
    /* A key on no list: the ZAP handler refuses it, naming its key. */
    pid_t rogue = start_encoder("rogue", "rogue");
    snprintf(want, sizeof want, "its CURVE key %s is on neither", rogue_pub);
    CHECK(am_tc_file_has(coord_log, want, TIMEOUT_MS));
    snprintf(elog, sizeof elog, "%s/enc-rogue.log", dir);
    CHECK(am_tc_file_has(elog, "the coordinator refused the session", TIMEOUT_MS));
    am_tc_stop(&rogue);
    /* No key at all: the handshake fails at once (a plain link to a CURVE server). */
    pid_t plain = start_encoder("plain", NULL);
    CHECK(am_tc_file_has(coord_log, "one end has CURVE keys and the other none", TIMEOUT_MS));
    snprintf(elog, sizeof elog, "%s/enc-plain.log", dir);
    CHECK(am_tc_file_has(elog, "one end has CURVE keys and the other none", TIMEOUT_MS));
    am_tc_stop(&plain);
    /* None of them registered: one encoder, the real one. */
    am_client *c = alice(ep);
    am_client_health h = {0};
    if (c) CHECK_OK(am_client_health_get(c, NULL, 5000, &h));
    printf("worker_refused: encoders registered after 3 refused ones tried: %u\n", h.encoders);
    CHECK_EQ_INT(h.encoders, 1);
    am_client_destroy(&c);
}

/* A raw DEALER with a key (NULL: plain) that sends READY as a shard group of the
 * served model with a huge capacity, so it would be picked for every request. */
static void *rogue_ready(void *zctx, const char *key) {
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    CHECK_OK(am_wire_setup(s, 0, 0, 0));
    if (key) {
        char kf[400], cf[400];
        am_curve_client k;
        int on = 0;
        key_path(kf, sizeof kf, key, "key");
        key_path(cf, sizeof cf, "coordinator", "pub");
        CHECK_OK(am_curve_client_load(kf, cf, &k, &on));
        CHECK_OK(am_curve_client_setup(s, &k));
    }
    CHECK(zmq_connect(s, ep) == 0);
    am_msg m;
    am_msg_init(&m, AM_CMD_READY);
    m.role = AM_ROLE_SHARD;
    m.name = "rogue-group";
    m.model = "tiny";
    m.fingerprint = "rogue";
    m.capacity = AM_PROTO_MAX_CAPACITY;
    m.out_dim = 64;
    m.tp_size = 1;
    CHECK_OK(am_wire_send(s, NULL, 0, &m, NULL, 0, ZMQ_DONTWAIT));
    return s;
}

/* Reads what s received (heartbeating as a worker would): requests, and 403 ERRORs. */
static void rogue_read(void *s, int *requests, int *forbidden) {
    am_wire_in in;
    am_msg hb;
    am_msg_init(&hb, AM_CMD_HEARTBEAT);
    (void)am_wire_send(s, NULL, 0, &hb, NULL, 0, ZMQ_DONTWAIT);
    while (!am_wire_recv(s, 0, &in)) {
        am_msg m;
        if (!am_wire_decode(&in, &m)) {
            *requests += m.cmd == AM_CMD_GENERATE || m.cmd == AM_CMD_ENCODE;
            *forbidden += m.cmd == AM_CMD_ERROR && m.code == AM_WERR_FORBIDDEN;
            am_msg_fini(&m);
        }
        am_wire_in_close(&in);
    }
}

static void test_rogue_registration(void) {
    void *zctx = zmq_ctx_new();
    void *as_client = rogue_ready(zctx, "clients/alice"), *unlisted = rogue_ready(zctx, "rogue");
    am_client *c = alice(relay_ep);
    if (!c) return;
    int requests = 0, forbidden = 0, other = 0;
    for (int i = 0; i < 10; i++) {
        rogue_read(as_client, &requests, &forbidden);
        rogue_read(unlisted, &other, &other);
        usleep(50000);
    }
    const int n = 10;
    uint64_t rid[10];
    am_client_params prm = {.max_tokens = 4, .deadline_ms = 50000};
    am_client_part p = {.kind = AM_SEG_TEXT, .text = "Once upon a time", .text_len = 16};
    for (int i = 0; i < n; i++)
        CHECK_OK(am_client_submit(c, &p, 1, &prm, &rid[i]));
    int done = 0, errors = 0;
    for (int64_t end = am_now_ms() + TIMEOUT_MS; done < n && am_now_ms() < end;) {
        am_client_event ev;
        rogue_read(as_client, &requests, &forbidden);
        rogue_read(unlisted, &other, &other);
        if (am_client_next(c, 50, &ev)) continue;
        errors += ev.cmd == AM_CMD_ERROR;
        done += am_client_event_final(&ev);
        am_client_event_fini(&ev);
    }
    rogue_read(as_client, &requests, &forbidden);
    rogue_read(unlisted, &other, &other);
    printf("rogue_registration: %d of %d requests answered (%d errors); the rogues received %d "
           "requests (client key: %d x 403; unlisted key: %d messages)\n",
           done, n, errors, requests, forbidden, other);
    CHECK_EQ_INT(done, n);
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(requests, 0);
    CHECK(forbidden >= 1);
    CHECK_EQ_INT(other, 0);
    CHECK(am_tc_file_has(coord_log, "client key 'alice' may not send READY", 5000));
    am_client_destroy(&c);
    zmq_close(as_client);
    zmq_close(unlisted);
    zmq_ctx_term(zctx);
}

/* A client the coordinator does not admit gets no answer at all, and says why. */
static void no_answer(const char *key, const char *server_key, const char *why) {
    char kf[400], cf[400];
    if (key) key_path(kf, sizeof kf, key, "key");
    if (server_key) key_path(cf, sizeof cf, server_key, "pub");
    am_client_opts o = {
        .endpoint = ep, .curve_key = key ? kf : NULL, .coordinator_key = server_key ? cf : NULL};
    am_client *c = NULL;
    CHECK_OK(am_client_new_opts(&o, &c));
    if (!c) return;
    am_client_part p = {.kind = AM_SEG_TEXT, .text = PASSWORD, .text_len = strlen(PASSWORD)};
    am_client_params prm = {.max_tokens = 4, .deadline_ms = 50000};
    am_client_result r;
    /* Nothing comes back: the submit itself may time out (a link refused for good takes
     * no message), or the answer does. */
    int64_t t0 = am_now_ms();
    int rc = am_client_generate(c, &p, 1, &prm, NULL, NULL, 1500, &r);
    printf("unauthenticated (%s): after %lld ms: %s\n", key ? key : "no key",
           (long long)(am_now_ms() - t0), am_err_msg());
    CHECK_EQ_INT(rc, AM_EAGAIN);
    CHECK(strstr(am_err_msg(), why) != NULL);
    am_client_destroy(&c);
}

static void test_unauthenticated_client(void) {
    /* Which end notices a plain link first varies: either reason is a handshake's. */
    no_answer(NULL, NULL, "CURVE keys and the other none");
    no_answer("rogue", "coordinator", "refused this key");
    no_answer("clients/alice", "rogue", "the handshake failed");
}

/* anymal-gateway's coordinator link: with its client key an HTTP request is answered;
 * without a key the gateway gets nowhere, says so in its log, and /health is 503. */
static int gateway_status(const char *key, const char *tag, char *log, size_t cap) {
    char path[600], pf[400], kf[400], cpub[400], cmd[2048], out[400];
    snprintf(path, sizeof path, "%s/anymal-gateway", bin);
    snprintf(pf, sizeof pf, "%s/gw-%s.port", dir, tag);
    snprintf(log, cap, "%s/gw-%s.log", dir, tag);
    snprintf(out, sizeof out, "%s/gw-%s.out", dir, tag);
    key_path(kf, sizeof kf, key ? key : "", "key");
    key_path(cpub, sizeof cpub, "coordinator", "pub");
    char *argv[] = {path, "--coordinator",     ep,   "--port",
                    "0",  "--port-file",       pf,   key ? "--curve-key" : NULL,
                    kf,   "--coordinator-key", cpub, NULL};
    pid_t p = am_tc_spawn(argv, log);
    int port = 0, status = 0;
    for (int i = 0; i < 100 && !port; i++) {
        FILE *f = fopen(pf, "r");
        if (!f || fscanf(f, "%d", &port) != 1) port = 0, usleep(50000);
        if (f) fclose(f);
    }
    CHECK(port > 0);
    snprintf(cmd, sizeof cmd,
             "sleep 0.5; curl -s -o %s -w '%%{http_code}' --max-time 20 "
             "http://127.0.0.1:%d/v1/completions -H 'Content-Type: application/json' "
             "-d '{\"model\": \"tiny\", \"prompt\": \"%s\", \"max_tokens\": 4}'",
             out, port, PASSWORD);
    /* 503 until its first HEALTH answer (every 250 ms): the keyed one gets a few tries. */
    for (int tries = key ? 20 : 2; tries-- > 0 && status != 200;) {
        FILE *c = popen(cmd, "r");
        if (!c || fscanf(c, "%d", &status) != 1) status = 0;
        if (c) pclose(c);
    }
    am_tc_stop(&p);
    return status;
}

static void test_gateway_link(void) {
    char log[400];
    int with = gateway_status("clients/gateway", "keyed", log, sizeof log);
    int without = gateway_status(NULL, "plain", log, sizeof log);
    printf("gateway: with its client key HTTP %d; without a key HTTP %d\n", with, without);
    CHECK_EQ_INT(with, 200);
    CHECK_EQ_INT(without, 503);
    CHECK(am_tc_file_has(log, "refused this gateway's link", 0));
}

static void test_bind(void) {
    char cmd[2048], out[400];
    snprintf(out, sizeof out, "%s/bind.out", dir);
    snprintf(cmd, sizeof cmd, "%s/anymal-coordinator --bind 'tcp://0.0.0.0:*' >%s 2>&1", bin, out);
    CHECK(system(cmd) != 0);
    CHECK(am_tc_file_has(out, "refusing to bind tcp://0.0.0.0:* without keys", 0));
    CHECK(am_tc_file_has(out, "--insecure", 0));
    /* With --insecure it binds (stopped at once). */
    char path[600], *argv[] = {path, "--bind", "tcp://0.0.0.0:*", "--insecure", NULL};
    snprintf(path, sizeof path, "%s/anymal-coordinator", bin);
    pid_t p = am_tc_spawn(argv, out);
    CHECK(am_tc_file_has(out, "listening on tcp://0.0.0.0:", 10000));
    am_tc_stop(&p);
    /* Half the keys is an error naming the missing option. */
    snprintf(cmd, sizeof cmd,
             "%s/anymal-coordinator --bind 'tcp://127.0.0.1:*' --curve-secret "
             "%s/coordinator.key --worker-keys %s/workers >%s 2>&1",
             bin, keys, keys, out);
    CHECK(system(cmd) != 0);
    CHECK(am_tc_file_has(out, "--client-keys is missing", 0));
}

static void teardown(void) {
    am_tc_stop(&p_shard);
    am_tc_stop(&p_enc);
    am_tc_stop(&p_coord);
    relay_stop(&rel);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "grep -o '\"auth_refused\": [0-9]*, \"role_refused\": [0-9]*, \"key_limit\": [0-9]*' "
             "%s",
             coord_log);
    CHECK(system(cmd) == 0);
    CHECK(!am_tc_file_has(coord_log, "\"auth_refused\": 0,", 0));
    CHECK(!am_tc_file_has(coord_log, "\"role_refused\": 0,", 0));
    CHECK(!am_tc_file_has(coord_log, "\"key_limit\": 0,", 0));
    /* Under ASan/UBSan the programs' own reports land in their logs. */
    snprintf(cmd, sizeof cmd, "! grep -l 'Sanitizer\\|runtime error' %s/*.log", dir);
    CHECK(system(cmd) == 0);
    if (!am_test_failures) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK(system(cmd) == 0);
    } else {
        fprintf(stderr, "logs kept in %s\n", dir);
    }
}

/* worker_refused first: the refusals it looks for in the log are rate-limited
 * (AM_CURVE_LOG_PER_WINDOW per window), and the later cases add refusals of their own. */
AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_keygen), AM_TEST(test_encrypted),
             AM_TEST(test_plain_control), AM_TEST(test_table_full), AM_TEST(test_worker_refused),
             AM_TEST(test_rogue_registration), AM_TEST(test_unauthenticated_client),
             AM_TEST(test_gateway_link), AM_TEST(test_bind), AM_TEST(teardown))
