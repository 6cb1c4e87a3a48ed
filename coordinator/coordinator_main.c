/* coordinator/coordinator_main.c - `anymal-coordinator`: the broker process
 * (coordinator/coordinator.h).
 *
 * Binds, prints "anymal-coordinator: listening on ENDPOINT" (and writes the
 * endpoint to --endpoint-file, for scripts that bind port 0), serves until
 * SIGINT/SIGTERM, then ends every active request with an error, says
 * DISCONNECT to the workers and prints its counters as one JSON line. Options
 * are parsed with core/cli.h, as in every program (docs/glossary.md).
 */
#include "coordinator/coordinator.h"
#include "core/cli.h"
#include "core/error.h"
#include "proto/proto.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define CMD "coordinator"

static am_coord *g_coord;
/* The first SIGTERM/SIGINT drains (in-flight requests finish, new ones get 503), a
 * second stops at once. */
static volatile sig_atomic_t g_signals;
static void on_signal(int sig) {
    (void)sig;
    if (!g_coord) return;
    if (g_signals++)
        am_coord_stop(g_coord);
    else
        am_coord_drain(g_coord);
}

static void help(void) {
    printf(
        "usage: anymal-coordinator [--bind EP] [--endpoint-file PATH] [--heartbeat-ms N] "
        "[--liveness N]\n"
        "                          [--max-requests N] [--deadline-ms N] [--encode-attempts N]\n"
        "                          [--unserved-wait-ms N] [--client-max-requests N] [--drain-ms "
        "N]\n"
        "                          [--curve-secret FILE --worker-keys FILE|DIR --client-keys "
        "FILE|DIR]\n"
        "                          [--max-workers-per-key N] [--insecure]\n\n"
        "  --bind           ZeroMQ endpoint (default tcp://127.0.0.1:5555; tcp://127.0.0.1:* = any "
        "free port)\n"
        "  --endpoint-file  write the bound endpoint there once listening\n"
        "  --heartbeat-ms   heartbeat interval (default %d); a worker is dead after --liveness "
        "(default %d)\n"
        "                   silent intervals\n"
        "  --max-requests   requests admitted at once; more are refused with 429 (default %d)\n"
        "  --deadline-ms    deadline of requests that give none (default %d)\n"
        "  --max-msg-bytes  largest frame accepted (ZMQ_MAXMSGSIZE); a bigger one disconnects its "
        "peer\n"
        "  --encode-attempts  workers an ENCODE job may try before its request fails (default "
        "%d)\n"
        "  --unserved-wait-ms  a request no live worker can serve fails with 503 after this "
        "(default %d)\n"
        "  --client-max-requests  requests one client may have in flight; more get 429 "
        "(default %d)\n"
        "  --drain-ms       SIGTERM: refuse new requests (503), let those in flight finish for at "
        "most\n"
        "                   this (default %d), then exit 0; a second SIGTERM stops at once\n"
        "  --curve-secret   this coordinator's CURVE secret key (anymal keygen; its .pub beside "
        "it is\n"
        "                   what workers and clients give as --coordinator-key): every link is "
        "encrypted\n"
        "  --worker-keys    public keys that may register as workers: a file of key lines or a "
        "directory\n"
        "                   of *.pub files\n"
        "  --client-keys    public keys that may submit requests (the gateway's among them)\n"
        "  --max-workers-per-key  workers one key may have registered at once (default %d)\n"
        "  --insecure       allow a non-loopback --bind without keys (anyone who reaches it can "
        "pose as\n"
        "                   a worker and read prompts: docs/security.md)\n",
        AM_HEARTBEAT_MS, AM_HEARTBEAT_LIVENESS, AM_COORD_MAX_REQUESTS_DEFAULT,
        AM_COORD_DEADLINE_DEFAULT_MS, AM_COORD_ENCODE_MAX_ATTEMPTS,
        AM_COORD_UNSERVED_WAIT_MS_DEFAULT, AM_COORD_CLIENT_MAX_REQUESTS_DEFAULT,
        AM_COORD_DRAIN_MS_DEFAULT, AM_COORD_MAX_WORKERS_PER_KEY_DEFAULT);
}

int main(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    am_coord_opts o = {.endpoint = "tcp://127.0.0.1:5555"};
    const char *endpoint_file = NULL;
    am_cli_link link = {0};
    const am_cli_opt opts[] = {
        {"--bind", AM_CLI_STR, &o.endpoint, 0, 0},
        {"--endpoint-file", AM_CLI_STR, &endpoint_file, 0, 0},
        {"--max-requests", AM_CLI_INT, &o.max_requests, 1, AM_COORD_MAX_REQUESTS_LIMIT},
        {"--deadline-ms", AM_CLI_INT, &o.deadline_default_ms, 1, 86400000},
        {"--max-msg-bytes", AM_CLI_I64, &o.max_msg_bytes, 1024,
         (double)AM_PROTO_MAX_PAYLOAD_BYTES + 4096},
        {"--encode-attempts", AM_CLI_INT, &o.encode_max_attempts, 1, 100},
        {"--unserved-wait-ms", AM_CLI_INT, &o.unserved_wait_ms, 1, 86400000},
        {"--drain-ms", AM_CLI_INT, &o.drain_ms, 1, 86400000},
        {"--client-max-requests", AM_CLI_INT, &o.client_max_requests, 1,
         AM_COORD_MAX_REQUESTS_LIMIT},
        {"--curve-secret", AM_CLI_STR, &o.curve_secret, 0, 0},
        {"--worker-keys", AM_CLI_STR, &o.worker_keys, 0, 0},
        {"--client-keys", AM_CLI_STR, &o.client_keys, 0, 0},
        {"--max-workers-per-key", AM_CLI_INT, &o.max_workers_per_key, 1, AM_COORD_MAX_WORKERS},
        {"--insecure", AM_CLI_FLAG, &o.insecure, 0, 0},
    };
    const am_cli_spec spec = {
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]), .help = help, .link = &link};
    int rc = am_cli_parse(&cli, &spec);
    if (rc) return rc == AM_CLI_HELP ? 0 : rc;
    o.heartbeat_ms = link.heartbeat_ms;
    o.liveness = link.liveness;
    rc = am_coord_new(&o, &g_coord);
    if (rc) return am_cli_error(CMD, rc);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "anymal-coordinator: listening on %s%s\n", am_coord_endpoint(g_coord),
            o.curve_secret ? " (CURVE: keys required)" : "");
    if (endpoint_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", endpoint_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", am_coord_endpoint(g_coord)) < 0 || fclose(f) ||
            rename(tmp, endpoint_file)) {
            am_coord_destroy(&g_coord);
            return am_cli_error(
                CMD, am_err_set(AM_EIO, "--endpoint-file %s: cannot write it", endpoint_file));
        }
    }
    rc = am_coord_run(g_coord);
    am_coord_stats s = am_coord_get_stats(g_coord);
    am_coord *c = g_coord;
    g_coord = NULL;
    am_coord_destroy(&c);
    fprintf(stderr,
            "{\"coordinator\": {\"msgs_in\": %lld, \"msgs_out\": %lld, \"bad_msgs\": %lld, "
            "\"admitted\": %lld, "
            "\"done\": %lld, \"failed\": %lld, \"cancelled\": %lld, \"rejected\": %lld, "
            "\"encode_jobs\": %lld, "
            "\"encode_retries\": %lld, \"stale_replies\": %lld, \"workers_registered\": %lld, "
            "\"workers_expired\": %lld, \"hwm_requeues\": %lld, \"client_gone\": %lld, "
            "\"deadlines\": %lld, \"unknown_model\": %lld, \"unserved\": %lld, \"client_quota\": "
            "%lld, \"bad_rows\": %lld, \"generate_retries\": %lld, \"auth_refused\": %lld, "
            "\"role_refused\": %lld, \"key_limit\": %lld, \"table_full\": %lld}}\n",
            (long long)s.msgs_in, (long long)s.msgs_out, (long long)s.bad_msgs,
            (long long)s.requests_admitted, (long long)s.requests_done,
            (long long)s.requests_failed, (long long)s.requests_cancelled,
            (long long)s.requests_rejected, (long long)s.encode_jobs, (long long)s.encode_retries,
            (long long)s.stale_replies, (long long)s.workers_registered,
            (long long)s.workers_expired, (long long)s.hwm_requeues, (long long)s.client_gone,
            (long long)s.deadlines, (long long)s.unknown_model, (long long)s.unserved,
            (long long)s.client_quota, (long long)s.bad_rows, (long long)s.generate_retries,
            (long long)s.auth_refused, (long long)s.role_refused, (long long)s.key_limit,
            (long long)s.table_full);
    return rc ? am_cli_error(CMD, rc) : 0;
}
