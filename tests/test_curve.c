/* tests/test_curve.c - proto/curve.h in one process: key files (keygen, formats, modes,
 * a .pub that does not match), allow-lists (file, directory, errors with line numbers),
 * endpoints that count as local, the log limiter, and CURVE links on loopback TCP through
 * the ZAP handler: each admitted message carries its key's role, an unlisted key's none.
 */
#include "core/clock.h"
#include "core/error.h"
#include "proto/curve.h"
#include "proto/transport.h"
#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

static void write_file(const char *name, const char *text, int mode) {
    char p[256];
    path(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
    chmod(p, (mode_t)mode);
}

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/am_curve_%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/list", dir, dir);
    CHECK(system(cmd) == 0);
}

static void test_keygen(void) {
    char p[256], kf[256], pf[256];
    path(p, sizeof p, "alpha");
    path(kf, sizeof kf, "alpha.key");
    path(pf, sizeof pf, "alpha.pub");
    CHECK_OK(am_curve_keygen(p));
    struct stat st;
    CHECK(stat(kf, &st) == 0 && (st.st_mode & 0777) == 0600);
    am_curve_pair kp;
    char pub[AM_CURVE_KEY_CHARS + 1];
    CHECK_OK(am_curve_load_secret(kf, &kp));
    CHECK_OK(am_curve_load_public(pf, pub));
    CHECK(!strcmp(kp.pub, pub)); /* derived from the secret = the .pub beside it */
    /* No overwrite. */
    CHECK_EQ_INT(am_curve_keygen(p), AM_EIO);
    CHECK(strstr(am_err_msg(), "refusing to overwrite") != NULL);
    /* A name that cannot be a key's name. */
    path(p, sizeof p, "bad name");
    CHECK_EQ_INT(am_curve_keygen(p), AM_EINVAL);
    /* Readable by others: refused, naming the fix. */
    chmod(kf, 0640);
    CHECK_EQ_INT(am_curve_load_secret(kf, &kp), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "chmod 600") != NULL);
    chmod(kf, 0600);
    /* A .pub beside that is another key's. */
    path(p, sizeof p, "beta");
    CHECK_OK(am_curve_keygen(p));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp %s/beta.pub %s", dir, pf);
    CHECK(system(cmd) == 0);
    CHECK_EQ_INT(am_curve_load_secret(kf, &kp), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "not the public key of") != NULL);
    /* A secret key given where a public one belongs. */
    CHECK_EQ_INT(am_curve_load_public(kf, pub), AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "is a secret key") != NULL);
}

static void test_lists(void) {
    char pub[2][AM_CURVE_KEY_CHARS + 1], sec[AM_CURVE_KEY_CHARS + 1], text[1024], p[256];
    for (int i = 0; i < 2; i++)
        CHECK_OK(zmq_curve_keypair(pub[i], sec));
    /* A file: comments, blank lines, a line without a name (its first 8 characters). */
    snprintf(text, sizeof text, "# workers\n\n%s w-one # the first\n   \n%s\n", pub[0], pub[1]);
    write_file("workers.keys", text, 0644);
    am_curve_list l;
    path(p, sizeof p, "workers.keys");
    CHECK_OK(am_curve_list_load(p, &l));
    CHECK_EQ_INT(l.n, 2);
    const am_curve_key *k = am_curve_list_find(&l, pub[0]);
    CHECK(k && !strcmp(k->name, "w-one"));
    k = am_curve_list_find(&l, pub[1]);
    CHECK(k && !strncmp(k->name, pub[1], 8) && strlen(k->name) == 8);
    CHECK(am_curve_list_find(&l, sec) == NULL);
    am_curve_list_fini(&l);
    /* A directory: each .pub's key named after its file; other files ignored. */
    snprintf(text, sizeof text, "%s\n", pub[0]);
    write_file("list/gw.pub", text, 0644);
    snprintf(text, sizeof text, "%s bob\n", pub[1]);
    write_file("list/b.pub", text, 0644);
    write_file("list/notes.txt", "not a key\n", 0644);
    path(p, sizeof p, "list");
    CHECK_OK(am_curve_list_load(p, &l));
    CHECK_EQ_INT(l.n, 2);
    CHECK((k = am_curve_list_find(&l, pub[0])) && !strcmp(k->name, "gw"));
    CHECK((k = am_curve_list_find(&l, pub[1])) && !strcmp(k->name, "bob"));
    am_curve_list_fini(&l);
    /* Bad lists name the file and the line (blank lines counted). */
    struct {
        const char *text, *want;
        int rc;
    } bad[] = {
        {"# c\n\nnot-a-key x\n", "line 3", AM_EFORMAT},
        {"", "no public key", AM_EFORMAT},
        {NULL, "listed twice", AM_EINVAL}, /* the same key twice */
        {NULL, "two keys are named", AM_EINVAL},
        {NULL, "key name", AM_EFORMAT},
    };
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        if (i == 2) snprintf(text, sizeof text, "%s a\n%s b\n", pub[0], pub[0]);
        if (i == 3) snprintf(text, sizeof text, "%s a\n%s a\n", pub[0], pub[1]);
        if (i == 4) snprintf(text, sizeof text, "%s bad/name\n", pub[0]);
        write_file("bad.keys", bad[i].text ? bad[i].text : text, 0644);
        path(p, sizeof p, "bad.keys");
        CHECK_EQ_INT(am_curve_list_load(p, &l), bad[i].rc);
        if (!strstr(am_err_msg(), bad[i].want)) fprintf(stderr, "case %d: %s\n", i, am_err_msg());
        CHECK(strstr(am_err_msg(), bad[i].want) != NULL);
    }
    /* A key on both lists cannot start a ZAP handler. */
    am_curve_list a = {0}, b = {0};
    snprintf(text, sizeof text, "%s same\n", pub[0]);
    write_file("both.keys", text, 0644);
    path(p, sizeof p, "both.keys");
    CHECK_OK(am_curve_list_load(p, &a));
    CHECK_OK(am_curve_list_load(p, &b));
    void *zctx = zmq_ctx_new();
    am_zap *z = NULL;
    CHECK_EQ_INT(am_zap_start(zctx, &a, &b, &z), AM_EINVAL);
    CHECK(strstr(am_err_msg(), "on both lists") != NULL);
    zmq_ctx_term(zctx);
    am_curve_list_fini(&a);
    am_curve_list_fini(&b);
}

/* '#' inside a key is part of it; a word that starts with '#' is a comment. */
static void test_hash_key(void) {
    char pub[AM_CURVE_KEY_CHARS + 1], sec[AM_CURVE_KEY_CHARS + 1], text[256], p[256];
    int found = 0;
    for (int i = 0; i < 1000 && !found; i++) {
        CHECK_OK(zmq_curve_keypair(pub, sec));
        found = pub[0] != '#' && strchr(pub, '#') != NULL;
    }
    CHECK(found);
    snprintf(text, sizeof text, "# a comment\n  # another\n%s hashy # a note\n", pub);
    write_file("hash.pub", text, 0644);
    path(p, sizeof p, "hash.pub");
    am_curve_list l;
    CHECK_OK(am_curve_list_load(p, &l));
    CHECK_EQ_INT(l.n, 1);
    CHECK(l.n == 1 && !strcmp(l.keys[0].z85, pub) && !strcmp(l.keys[0].name, "hashy"));
    am_curve_list_fini(&l);
}

static void test_endpoints(void) {
    struct {
        const char *ep;
        int local;
    } t[] = {{"tcp://127.0.0.1:5555", 1}, {"tcp://127.0.0.1:*", 1},      {"tcp://127.1.2.3:1", 1},
             {"tcp://localhost:5555", 1}, {"tcp://[::1]:5555", 1},       {"ipc:///tmp/x", 1},
             {"inproc://x", 1},           {"tcp://0.0.0.0:5555", 0},     {"tcp://*:5555", 0},
             {"tcp://10.0.0.1:5555", 0},  {"tcp://127.0.0.1.evil:1", 0}, {"tcp://eth0:5555", 0},
             {"tcp://[::]:5555", 0},      {"udp://127.0.0.1:1", 0}};
    for (int i = 0; i < (int)(sizeof t / sizeof t[0]); i++) {
        if (am_endpoint_is_local(t[i].ep) != t[i].local) fprintf(stderr, "%s\n", t[i].ep);
        CHECK_EQ_INT(am_endpoint_is_local(t[i].ep), t[i].local);
    }
}

static void test_log_limit(void) {
    am_log_limit l = {0};
    int64_t dropped, now = 1000000;
    int a = 0, b = 0;
    for (int i = 0; i < 50; i++)
        a += am_log_limit_take(&l, now, "peer-a", &dropped);
    b += am_log_limit_take(&l, now, "peer-b", &dropped); /* a's flood does not hide b */
    CHECK_EQ_INT(a, AM_CURVE_LOG_PER_WINDOW);
    CHECK_EQ_INT(b, 1);
    /* The next window says how many were dropped. */
    CHECK_EQ_INT(am_log_limit_take(&l, now + AM_CURVE_LOG_WINDOW_MS, "peer-a", &dropped), 1);
    CHECK_EQ_INT(dropped, 50 - AM_CURVE_LOG_PER_WINDOW);
    /* Many offenders: the total is bounded too. */
    int total = 0;
    char who[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(who, sizeof who, "peer-%d", i);
        total += am_log_limit_take(&l, now + 2 * AM_CURVE_LOG_WINDOW_MS, who, &dropped);
    }
    CHECK(total <= AM_CURVE_LOG_TOTAL_PER_WINDOW);
}

/* A CURVE DEALER with key_base's key that sends one frame. */
static void *curve_dealer(void *zctx, const char *ep, const char *server_pub,
                          const char *key_base) {
    char kf[256];
    am_curve_client k;
    int on = 0;
    path(kf, sizeof kf, key_base);
    strcat(kf, ".key");
    char spf[256];
    path(spf, sizeof spf, server_pub);
    CHECK_OK(am_curve_client_load(kf, spf, &k, &on));
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    CHECK_OK(am_wire_setup(s, 0, 0, 0));
    CHECK_OK(am_curve_client_setup(s, &k));
    CHECK(zmq_connect(s, ep) == 0);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_send(s, "hello", 5, ZMQ_DONTWAIT);
    return s;
}

/* A worker key and a client key are admitted with their roles, an unlisted key is not,
 * and the ZAP handler counts the refusal. */

static void test_zap(void) {
    char p[256];
    for (int i = 0; i < 4; i++) {
        const char *n[] = {"server", "wk", "cl", "rogue"};
        path(p, sizeof p, n[i]);
        CHECK_OK(am_curve_keygen(p));
    }
    char wl[256], cl[256], sk[256];
    path(wl, sizeof wl, "wk.pub");
    path(cl, sizeof cl, "cl.pub");
    path(sk, sizeof sk, "server.key");
    am_curve_list w, c;
    am_curve_pair me;
    CHECK_OK(am_curve_list_load(wl, &w));
    CHECK_OK(am_curve_list_load(cl, &c));
    CHECK_OK(am_curve_load_secret(sk, &me));
    void *zctx = zmq_ctx_new();
    am_zap *z = NULL;
    CHECK_OK(am_zap_start(zctx, &w, &c, &z));
    void *srv = zmq_socket(zctx, ZMQ_ROUTER);
    CHECK_OK(am_wire_setup(srv, 1, 0, 0));
    CHECK_OK(am_curve_server_setup(srv, &me));
    CHECK(zmq_bind(srv, "tcp://127.0.0.1:*") == 0);
    char ep[128];
    size_t len = sizeof ep;
    zmq_getsockopt(srv, ZMQ_LAST_ENDPOINT, ep, &len);
    void *cz = zmq_ctx_new();
    const char *who[] = {"wk", "cl", "rogue"};
    void *d[3];
    for (int i = 0; i < 3; i++)
        d[i] = curve_dealer(cz, ep, "server.pub", who[i]);
    int roles[3] = {0};
    for (int64_t end = am_now_ms() + 5000; am_now_ms() < end && roles[0] + roles[1] < 2;) {
        zmq_pollitem_t pi = {srv, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, 100) != 1) continue;
        am_wire_in in;
        while (!am_wire_recv(srv, 1, &in)) {
            char name[AM_CURVE_NAME_MAX + 1];
            am_peer_role r = am_curve_peer(&in.frames[0], name, sizeof name);
            if (r == AM_PEER_WORKER && !strcmp(name, "wk")) roles[0]++;
            if (r == AM_PEER_CLIENT && !strcmp(name, "cl")) roles[1]++;
            if (r == AM_PEER_NONE) roles[2]++;
            am_wire_in_close(&in);
        }
    }
    usleep(200000);
    CHECK_EQ_INT(roles[0], 1);
    CHECK_EQ_INT(roles[1], 1);
    CHECK_EQ_INT(roles[2], 0); /* the unlisted key's message never arrives */
    CHECK(am_zap_refused(z) >= 1);
    for (int i = 0; i < 3; i++)
        zmq_close(d[i]);
    zmq_ctx_term(cz);
    zmq_close(srv);
    am_zap_stop(&z);
    zmq_ctx_term(zctx);
    am_curve_list_fini(&w);
    am_curve_list_fini(&c);
}

static void teardown(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_keygen), AM_TEST(test_lists), AM_TEST(test_hash_key),
             AM_TEST(test_endpoints), AM_TEST(test_log_limit), AM_TEST(test_zap), AM_TEST(teardown))
