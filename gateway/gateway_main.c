/* gateway/gateway_main.c - `anymal-gateway`: options, file limits, signals, the loop.
 *
 * The process links libuv, http_parser, cJSON, the api/ parser and the native
 * client: no engine, no media library (test_gateway checks its ldd). It raises
 * its soft RLIMIT_NOFILE to the hard limit, since each HTTP connection is a
 * descriptor and idle keep-alive clients are many.
 */
#include "core/cli.h"
#include "core/error.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "proto/proto.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define CMD "gateway"

static void help(void) {
    printf("usage: anymal-gateway [--coordinator EP] [--host ADDR] [--port N] [--api-key KEY]...\n"
           "                      [--api-key-file FILE] [--allow-unauthenticated]\n"
           "                      [--max-body-bytes N] [--request-timeout-ms N] [--idle-timeout-ms "
           "N]\n"
           "                      [--max-connections N] [--max-inflight N] [--deadline-ms N]\n"
           "                      [--allowed-local-media-path DIR] [--port-file FILE]\n"
           "                      [--curve-key FILE --coordinator-key FILE]\n"
           "An OpenAI-compatible HTTP API in front of an anymal coordinator:\n"
           "  POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health,\n"
           "  GET /metrics (Prometheus), GET / (status page and playground).\n"
           "  --coordinator  the coordinator's endpoint (default tcp://127.0.0.1:5555)\n"
           "  --host, --port address to listen on (default 127.0.0.1:8000; port 0 = any free)\n"
           "  --api-key      a key clients must send as 'Authorization: Bearer KEY' (repeatable);\n"
           "  --api-key-file one key per line ('#' comments). Without a key the gateway listens\n"
           "                 on loopback only, unless --allow-unauthenticated\n"
           "  --max-body-bytes      larger request bodies get 413 (default %zu)\n"
           "  --request-timeout-ms  a request's headers and body must arrive within (default %d;\n"
           "                        408 after)\n"
           "  --idle-timeout-ms     keep-alive connections idle this long are closed (default %d)\n"
           "  --max-connections     open connections at most (default %d)\n"
           "  --max-inflight        generations at once; more get 429 (default %d)\n"
           "  --deadline-ms         a request's deadline at the coordinator (default: the\n"
           "                        coordinator's); past it the answer is 504\n"
           "  --allowed-local-media-path  file:// media URLs are read under this directory only\n"
           "  --port-file    write the port listened on to FILE (for --port 0)\n"
           "  --curve-key FILE --coordinator-key FILE  the gateway's CURVE secret key (anymal "
           "keygen;\n"
           "                 its public key on the coordinator's --client-keys) and the "
           "coordinator's\n"
           "                 public key: needed when the coordinator has keys\n",
           AM_HTTP_MAX_BODY_BYTES_DEF, AM_HTTP_REQUEST_TIMEOUT_MS, AM_HTTP_IDLE_TIMEOUT_MS,
           AM_HTTP_MAX_CONNECTIONS_DEF, AM_GW_MAX_INFLIGHT_DEF);
}

static am_gw *g_gw;
static uv_signal_t g_sig[2];

static void on_signal(uv_signal_t *s, int signum) {
    (void)signum;
    fprintf(stderr, "anymal-gateway: stopping\n");
    am_gw_close(g_gw);
    g_gw = NULL;
    for (int i = 0; i < 2; i++)
        if (!uv_is_closing((uv_handle_t *)&g_sig[i])) uv_close((uv_handle_t *)&g_sig[i], NULL);
    (void)s;
}

static int read_keys(const char *path, char ***keys, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) return am_err_set(AM_EIO, "--api-key-file %s: cannot open it", path);
    char line[1024];
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#') continue;
        if (*n == AM_GW_MAX_API_KEYS) {
            rc = am_err_set(AM_ERANGE, "--api-key-file %s: more than %d keys", path,
                            AM_GW_MAX_API_KEYS);
            break;
        }
        (*keys)[(*n)++] = strdup(s);
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    am_gw_opts o = {.coordinator = "tcp://127.0.0.1:5555", .host = "127.0.0.1", .port = 8000};
    static char *keys[AM_GW_MAX_API_KEYS];
    char **kp = keys;
    int n_keys = 0, rc;
    const char *port_file = NULL, *opt;
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            return 0;
        } else if (!strcmp(opt, "--coordinator")) {
            if (!(o.coordinator = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--host")) {
            if (!(o.host = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--port")) {
            if (am_cli_int(&cli, 0, 65535, &v)) return AM_EXIT_USAGE;
            o.port = (int)v;
        } else if (!strcmp(opt, "--api-key")) {
            const char *k = am_cli_value(&cli);
            if (!k) return AM_EXIT_USAGE;
            if (!k[0] || n_keys == AM_GW_MAX_API_KEYS)
                return am_cli_fail(&cli, "--api-key: empty, or more than %d keys",
                                   AM_GW_MAX_API_KEYS);
            keys[n_keys++] = strdup(k);
        } else if (!strcmp(opt, "--api-key-file")) {
            const char *f = am_cli_value(&cli);
            if (!f) return AM_EXIT_USAGE;
            if ((rc = read_keys(f, &kp, &n_keys))) return am_cli_error(CMD, rc);
        } else if (!strcmp(opt, "--allow-unauthenticated")) {
            o.allow_open = 1;
        } else if (!strcmp(opt, "--max-body-bytes")) {
            if (am_cli_int(&cli, 1024, (int64_t)1 << 32, &v)) return AM_EXIT_USAGE;
            o.max_body_bytes = (size_t)v;
        } else if (!strcmp(opt, "--request-timeout-ms")) {
            if (am_cli_int(&cli, 10, 3600000, &v)) return AM_EXIT_USAGE;
            o.request_timeout_ms = (int)v;
        } else if (!strcmp(opt, "--idle-timeout-ms")) {
            if (am_cli_int(&cli, 10, 86400000, &v)) return AM_EXIT_USAGE;
            o.idle_timeout_ms = (int)v;
        } else if (!strcmp(opt, "--max-connections")) {
            if (am_cli_int(&cli, 1, 1000000, &v)) return AM_EXIT_USAGE;
            o.max_connections = (int)v;
        } else if (!strcmp(opt, "--max-inflight")) {
            if (am_cli_int(&cli, 1, 1000000, &v)) return AM_EXIT_USAGE;
            o.max_inflight = (int)v;
        } else if (!strcmp(opt, "--deadline-ms")) {
            if (am_cli_int(&cli, 1, AM_PROTO_MAX_DEADLINE_MS, &v)) return AM_EXIT_USAGE;
            o.deadline_ms = (uint32_t)v;
        } else if (!strcmp(opt, "--allowed-local-media-path")) {
            if (!(o.media_root = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--curve-key")) {
            if (!(o.curve_key = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--coordinator-key")) {
            if (!(o.coordinator_key = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--port-file")) {
            if (!(port_file = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else {
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        }
    }
    o.api_keys = (const char *const *)keys;
    o.n_api_keys = n_keys;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    rc = am_gw_new(loop, &o, &g_gw);
    for (int i = 0; i < n_keys; i++)
        free(keys[i]);
    if (rc) return am_cli_error(CMD, rc);
    int port = am_gw_port(g_gw);
    fprintf(stderr, "anymal-gateway: listening on http://%s%s%s:%d (coordinator %s)%s\n",
            strchr(o.host, ':') ? "[" : "", o.host, strchr(o.host, ':') ? "]" : "", port,
            o.coordinator, n_keys ? ", API key required" : "");
    if (port_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) || rename(tmp, port_file)) {
            am_gw_close(g_gw);
            uv_run(loop, UV_RUN_DEFAULT);
            return am_cli_error(CMD,
                                am_err_set(AM_EIO, "--port-file %s: cannot write it", port_file));
        }
    }
    for (int i = 0; i < 2; i++) {
        uv_signal_init(loop, &g_sig[i]);
        uv_signal_start(&g_sig[i], on_signal, i ? SIGTERM : SIGINT);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
