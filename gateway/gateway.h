/* gateway/gateway.h - anymal-gateway: the OpenAI-compatible HTTP front door of a coordinator.
 *
 * One libuv loop serves HTTP (gateway/http.h) and talks to the coordinator
 * through the native client (coordinator/client.h) on the same thread: the
 * client's ZeroMQ socket is watched through its ZMQ_FD (uv_poll) and drained
 * before every blocking poll (uv_prepare), so there is no second thread and no
 * lock between an HTTP connection and its generation. It is not an engine: it
 * parses requests (api/openai.h, shared with `anymal batch`), submits them,
 * and turns TOKEN/ERROR events into responses or Server-Sent Events.
 *
 * Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
 * GET /health, GET /metrics (Prometheus text), GET /status.json and GET / (the
 * status page, built into the binary). The /v1/ routes need an API key
 * (Authorization: Bearer) when keys are configured; the others never do.
 *
 * Request bodies larger than AM_GW_INLINE_PARSE_BYTES are parsed (JSON,
 * strict base64 of the media) on libuv's thread pool, so a large upload never
 * stalls the loop; media are decoded by the encoder workers, never here.
 * A request whose HTTP client goes away is cancelled at the coordinator at
 * once (am_client_cancel), which frees its KV blocks in the shard group.
 * The gateway polls the coordinator's HEALTH (with the cluster's detail)
 * every AM_GW_HEALTH_POLL_MS; /health, /v1/models, 503s and the cluster
 * metrics answer from that snapshot without a round trip.
 */
#ifndef AM_GATEWAY_H
#define AM_GATEWAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define AM_GW_HEALTH_POLL_MS     250
#define AM_GW_HEALTH_STALE_MS    3000 /* no HEALTH answer for this long: coordinator unreachable */
#define AM_GW_INLINE_PARSE_BYTES ((size_t)64 << 10)
#define AM_GW_MAX_INFLIGHT_DEF   4096
#define AM_GW_DEADLINE_GRACE_MS  5000 /* past the deadline + this, the gateway gives up (504) */
#define AM_GW_RETRY_AFTER_S      1
#define AM_GW_MAX_API_KEYS       64
#define AM_GW_MAX_MODELS         16

typedef struct am_gw_opts {
    const char *coordinator; /* endpoint, e.g. tcp://127.0.0.1:5555 */
    const char *host;        /* address to listen on */
    int port;                /* 0 = any free port */
    const char *const *api_keys;
    int n_api_keys; /* 0: no key needed (then only a loopback host unless allow_open) */
    int allow_open; /* listen on a non-loopback address without keys */
    size_t max_body_bytes;
    int request_timeout_ms, idle_timeout_ms, max_connections; /* gateway/http.h; 0 = defaults */
    uint32_t deadline_ms;   /* a request's deadline at the coordinator; 0 = the coordinator's */
    const char *media_root; /* --allowed-local-media-path: file:// URLs under it; NULL: none */
    int max_inflight;       /* generations at once; more get 429; 0 = AM_GW_MAX_INFLIGHT_DEF */
    /* The coordinator link's CURVE keys (coordinator/client.h am_client_opts): the
     * gateway's secret key file and the coordinator's public key file; NULL: plain. */
    const char *curve_key, *coordinator_key;
} am_gw_opts;

typedef struct am_gw am_gw;

/* Connects to the coordinator (asynchronously: an absent one makes /health 503)
 * and listens. AM_EINVAL (options: an open address without keys), AM_EIO. */
int am_gw_new(uv_loop_t *loop, const am_gw_opts *o, am_gw **out);
int am_gw_port(const am_gw *g);
/* Stops listening, cancels every request in flight, closes the handles; the
 * memory goes when the loop has run their close callbacks (uv_run after). */
void am_gw_close(am_gw *g);

#endif
