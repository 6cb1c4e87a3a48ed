/* coordinator/coordinator.h - the broker: workers register, clients submit, every request ends
 * once.
 *
 * One ROUTER socket (ZMQ_ROUTER_MANDATORY on, explicit HWMs and
 * ZMQ_MAXMSGSIZE) and one single-threaded zmq_poll loop. Peers:
 *  - encoder workers (READY role=encoder, one or more modalities) get ENCODE
 *    jobs and answer EMBED or ERROR;
 *  - shard leaders (READY role=shard; one per tensor-parallel group; several
 *    groups of one model are data-parallel replicas) get GENERATE, EMBED and
 *    CANCEL and answer TOKEN (streamed) or ERROR;
 *  - clients (any other peer) send GENERATE, ENCODE, CANCEL and HEALTH and
 *    receive TOKEN, EMBED, ERROR and HEALTH (healthy while a live shard group
 *    serves the model asked about; counts of live groups, encoders, requests).
 * Services: one per (modality, model) for encoders and one per model for
 * shard groups; dispatch picks the least-loaded live worker (in-flight work /
 * capacity) and never exceeds a worker's capacity. The rest waits: encode
 * jobs in a queue per modality and client, served by deficit round robin on
 * media bytes, so that one client's many or big media cannot hold another's
 * back; generations in one FIFO.
 *
 * The request table guarantees that every admitted request ends exactly once
 * (a final TOKEN, an EMBED for a client's ENCODE, or an ERROR): on deadline,
 * cancellation, a dead shard group (503: the group is one failure unit),
 * failed media (400), or an encoder that died (its jobs are sent again, with
 * a new attempt number, up to opts.encode_max_attempts); a GENERATE whose
 * group dies before its first token runs again on another group (up to
 * AM_COORD_GENERATE_MAX_ATTEMPTS groups; one that has streamed tokens ends with
 * 503, since its client has seen part of an answer). Replies that arrive
 * for a request that has ended, from a worker that no longer holds the job,
 * or with a stale attempt number are discarded and counted. A worker is dead
 * after opts.liveness heartbeat intervals of silence; its late messages get a
 * DISCONNECT, after which it registers again. Sends never block: a peer at
 * its high-water mark is a counted, logged event (a job goes back to its
 * queue; a client too slow to read its stream loses that request with an
 * error), never a silent drop.
 *
 * Admission refuses at once what cannot be served: a GENERATE naming a model
 * that no shard group has ever registered gets 404; a client over its quota
 * of requests in flight (opts.client_max_requests) or a full table gets 429.
 * A request that no live worker can take (its model's groups or its
 * modality's encoders are all gone) fails with 503 after
 * opts.unserved_wait_ms, not at its deadline. Rows an encoder returns must be
 * finite: a worker that sends NaN or Inf is removed and its jobs go to others.
 */
#ifndef AM_COORDINATOR_H
#define AM_COORDINATOR_H

#include <stdint.h>

#define AM_COORD_MAX_WORKERS          256
#define AM_COORD_MAX_REQUESTS_DEFAULT 1024 /* admitted at once; more get 429 */
#define AM_COORD_MAX_REQUESTS_LIMIT   65535
#define AM_COORD_DEADLINE_DEFAULT_MS  120000
#define AM_COORD_ENCODE_MAX_ATTEMPTS  3
/* Groups a GENERATE may try: one lost before its first token is run again on another. */
#define AM_COORD_GENERATE_MAX_ATTEMPTS 3
#define AM_COORD_TICK_MS               50 /* longest poll wait: deadlines are checked this often */
/* A request that no live worker can serve (no shard group of its model, no encoder of
 * one of its modalities) fails with 503 after this wait, not at its deadline. */
#define AM_COORD_UNSERVED_WAIT_MS_DEFAULT 5000
/* Requests one client (one connection) may have in flight; more get 429. */
#define AM_COORD_CLIENT_MAX_REQUESTS_DEFAULT 256
#define AM_COORD_MAX_MODELS                  64 /* model names remembered for 404s */
/* Encode jobs are shared across clients by deficit round robin on their media bytes: each
 * round gives every client with jobs queued this many bytes of credit. */
#define AM_COORD_DRR_QUANTUM_BYTES (256 * 1024)
#define AM_COORD_DRAIN_MS_DEFAULT  30000 /* am_coord_drain: longest wait for in-flight */
/* Workers one CURVE key may have registered at once (a shard group's leader, an encoder
 * process: each is one); more are refused, so a leaked key cannot fill the table. */
#define AM_COORD_MAX_WORKERS_PER_KEY_DEFAULT 8

typedef struct am_coord_opts {
    const char *endpoint;    /* e.g. "tcp://127.0.0.1:5555", or "tcp://127.0.0.1:*" for any port */
    int heartbeat_ms;        /* 0 = AM_HEARTBEAT_MS */
    int liveness;            /* 0 = AM_HEARTBEAT_LIVENESS */
    int hwm;                 /* 0 = AM_WIRE_HWM_MSGS */
    int64_t max_msg_bytes;   /* ZMQ_MAXMSGSIZE; 0 = AM_WIRE_MAX_MSG_BYTES */
    int max_requests;        /* 0 = AM_COORD_MAX_REQUESTS_DEFAULT */
    int deadline_default_ms; /* 0 = AM_COORD_DEADLINE_DEFAULT_MS */
    int encode_max_attempts; /* 0 = AM_COORD_ENCODE_MAX_ATTEMPTS */
    int unserved_wait_ms;    /* 0 = AM_COORD_UNSERVED_WAIT_MS_DEFAULT */
    int client_max_requests; /* 0 = AM_COORD_CLIENT_MAX_REQUESTS_DEFAULT (at most max_requests) */
    int drain_ms;            /* 0 = AM_COORD_DRAIN_MS_DEFAULT */
    /* Authentication (proto/curve.h, docs/security.md): all three, or none. */
    const char *curve_secret; /* the coordinator's secret key file */
    const char *worker_keys;  /* allow-list of worker public keys (file or directory) */
    const char *client_keys;  /* allow-list of client public keys (the gateway is a client) */
    int insecure;             /* no keys on a non-loopback endpoint: refused unless set */
    int max_workers_per_key;  /* 0 = AM_COORD_MAX_WORKERS_PER_KEY_DEFAULT */
} am_coord_opts;

typedef struct am_coord_stats {
    int64_t msgs_in, msgs_out, bad_msgs;
    int64_t requests_admitted, requests_done, requests_failed, requests_cancelled,
        requests_rejected;
    int64_t encode_jobs, encode_retries, stale_replies, unknown_peer_msgs;
    int64_t workers_registered, workers_expired, workers_disconnected;
    int64_t hwm_requeues, client_gone, client_too_slow, deadlines;
    int64_t unknown_model, unserved, client_quota, bad_rows, generate_retries;
    /* Refused: connections (no key, a wrong one, or one on no allow-list), messages of
     * the other role (a client key's READY, a worker key's GENERATE), registrations
     * over a key's limit or into a full table. */
    int64_t auth_refused, role_refused, key_limit, table_full;
    int n_workers, n_active;
} am_coord_stats;

typedef struct am_coord am_coord;

/* Creates the socket and binds it. With keys (curve_secret, worker_keys, client_keys)
 * every link is CURVE: a ZAP handler thread admits a connection only when its public key
 * is on one of the lists and tags it with that role ("worker:NAME", "client:NAME"); every
 * message is checked against its connection's role: only worker keys may send READY,
 * EMBED, TOKEN and a worker's HEARTBEAT, ERROR or DISCONNECT, only client keys GENERATE,
 * ENCODE, CANCEL and HEALTH (others get ERROR 403 and are logged). Each refusal is
 * logged (rate-limited per offender: proto/curve.h am_log_limit) and counted.
 * Without keys a non-loopback endpoint is AM_EINVAL unless opts.insecure. AM_EIO naming
 * the endpoint; AM_EINVAL for options; the key files' errors (proto/curve.h). */
int am_coord_new(const am_coord_opts *o, am_coord **out);
/* Fails every active request (503 "coordinator shutting down"), says
 * DISCONNECT to every worker, closes the socket. NULL-safe. */
void am_coord_destroy(am_coord **p);
/* The bound endpoint with the real port ("tcp://127.0.0.1:40123"). */
const char *am_coord_endpoint(const am_coord *c);
/* Serves until am_coord_stop. Returns 0, or AM_EIO on a socket failure. */
int am_coord_run(am_coord *c);
/* Makes am_coord_run return within AM_COORD_TICK_MS; async-signal-safe and thread-safe. */
void am_coord_stop(am_coord *c);
/* Graceful drain; async-signal-safe and thread-safe. New requests get 503 ("draining"),
 * HEALTH says unhealthy, what is in flight runs on; am_coord_run returns once nothing
 * is in flight or after opts.drain_ms (am_coord_destroy then ends the rest with 503). A
 * worker that says it drains (HEARTBEAT drain) gets nothing new, and HEALTH stops
 * counting it. */
void am_coord_drain(am_coord *c);
/* A snapshot of the counters (call from the loop's thread, or after run returned). */
am_coord_stats am_coord_get_stats(const am_coord *c);

#endif
