/* coordinator/client.h - the native C client of an anymal coordinator.
 *
 * One DEALER socket connected to the coordinator. A request is a list of
 * parts (text, token ids, or a media item: image/video/audio/IMU file bytes)
 * plus generation parameters; it is submitted asynchronously (many may be in
 * flight) and its output arrives as events: TOKEN messages (the last one has
 * a finish reason and the usage counts), or one ERROR. Every submitted
 * request ends with exactly one final event (the coordinator guarantees it;
 * the client adds a local timeout only in am_client_generate). ENCODE
 * requests (embeddings only) end with one EMBED event.
 *
 * Not thread-safe: one am_client per thread. Errors: AM_EINVAL/AM_ERANGE for
 * parameters (the message names them), AM_EIO for socket failures, AM_EAGAIN
 * when a wait timed out.
 */
#ifndef AM_CLIENT_H
#define AM_CLIENT_H

#include "proto/transport.h"

#include <stddef.h>
#include <stdint.h>

typedef struct am_client am_client;

/* A blocking send (submit, encode, cancel, HEALTH) gives up after this with AM_EAGAIN:
 * the coordinator's queue stayed full, or the link never came up (a refused key). */
#define AM_CLIENT_SEND_TIMEOUT_MS 10000

typedef struct am_client_part {
    uint8_t kind;     /* AM_SEG_TEXT, AM_SEG_IDS or AM_SEG_MEDIA */
    const char *text; /* TEXT */
    size_t text_len;
    const int32_t *ids; /* IDS */
    uint32_t n_ids;
    uint8_t modality; /* MEDIA: am_modality */
    const void *data; /* MEDIA: the file's bytes (copied into the message) */
    size_t len;
    uint32_t frames; /* MEDIA video: frames to sample (0 = the model's default) */
} am_client_part;

typedef struct am_client_params {
    uint32_t max_tokens; /* >= 1 */
    float temperature;   /* 0 = greedy */
    int32_t top_k;
    float top_p, repetition_penalty; /* 0 = off (1) */
    uint64_t seed;
    const char *const *stop;
    uint32_t n_stop;
    uint32_t deadline_ms; /* 0 = the coordinator's default */
    int no_bos;           /* 1: do not prepend BOS */
    int ignore_eos;       /* 1: generate max_tokens, past EOS (benchmarks) */
    const char *model;    /* NULL/"" = any */
} am_client_params;

typedef struct am_client_event {
    uint8_t cmd;  /* AM_CMD_TOKEN, AM_CMD_EMBED, AM_CMD_ERROR, AM_CMD_HEALTH or AM_CMD_DISCONNECT */
    uint64_t rid; /* the request's id as returned by submit */
    am_msg msg;   /* the decoded message (payloads point into the frames below) */
    am_wire_in in;
} am_client_event;

/* A plain link (loopback coordinators without keys). */
int am_client_new(const char *endpoint, am_client **out);
/* With keys, the link is CURVE (proto/curve.h): the coordinator admits this client
 * only when its public key is on its --client-keys list. Key files that cannot be read
 * are the call's error (proto/curve.h's codes, the message naming the file). */
typedef struct am_client_opts {
    const char *endpoint;
    const char *curve_key;       /* this client's secret key file; NULL: a plain link */
    const char *coordinator_key; /* the coordinator's public key file (with curve_key) */
} am_client_opts;
int am_client_new_opts(const am_client_opts *o, am_client **out);
void am_client_destroy(am_client **p);
/* Why the coordinator refused this client's connection, when it did (its last failed
 * handshake: no key, a key it does not list, a wrong --coordinator-key); NULL if none
 * failed. The refused link gets no answer at all: the blocking calls name this reason
 * in their timeout message. */
const char *am_client_refusal(am_client *c);

/* For an event loop that is not ZeroMQ's (anymal-gateway runs libuv): *fd becomes
 * readable when events may be waiting. It is edge-triggered (ZMQ_FD): after it
 * fires, and after every submit or cancel, read with am_client_next(c, 0, ...)
 * until AM_EAGAIN, or it may not fire again. AM_EIO. */
int am_client_fd(am_client *c, int *fd);
/* on != 0: submit, encode, cancel and HEALTH sends never block; when the
 * coordinator's queue is at its high-water mark they fail with AM_EAGAIN
 * (nothing sent) instead of waiting for room. Off by default. */
void am_client_set_nonblocking(am_client *c, int on);

/* Sends a GENERATE; *rid identifies its events. */
int am_client_submit(am_client *c, const am_client_part *parts, int n_parts,
                     const am_client_params *p, uint64_t *rid);
/* Sends an ENCODE of one media item; it ends with one EMBED (or ERROR) event. */
int am_client_encode(am_client *c, const am_client_part *media, uint64_t *rid);
int am_client_cancel(am_client *c, uint64_t rid);

/* Waits up to timeout_ms (-1 = forever) for the next event; AM_EAGAIN on timeout.
 * Malformed messages from the coordinator are skipped (logged). */
int am_client_next(am_client *c, int timeout_ms, am_client_event *ev);
void am_client_event_fini(am_client_event *ev);

/* Is ev the last event of its request? */
int am_client_event_final(const am_client_event *ev);

/* Blocking: submits one request and collects its answer; cb (may be NULL)
 * sees each streamed piece. On an ERROR event returns AM_EIO with the
 * coordinator's code in out->err_code and its message in am_err_msg(). */
typedef int (*am_client_piece_fn)(void *user, const char *text, size_t len, const int32_t *ids,
                                  uint32_t n_ids);
typedef struct am_client_result {
    char *text; /* NUL-terminated (am_free via am_client_result_fini) */
    size_t text_len;
    int32_t *ids;
    uint32_t n_ids;
    uint8_t finish;
    uint32_t prompt_tokens, completion_tokens;
    int32_t err_code;
} am_client_result;
int am_client_generate(am_client *c, const am_client_part *parts, int n_parts,
                       const am_client_params *p, am_client_piece_fn cb, void *user, int timeout_ms,
                       am_client_result *out);
void am_client_result_fini(am_client_result *r);

/* Blocking: asks the coordinator's health (model NULL/"" = any model). Events
 * of other requests that arrive meanwhile are dropped: use a client with
 * nothing else in flight. AM_EAGAIN when no answer came within timeout_ms. */
typedef struct am_client_health {
    int healthy;                       /* a live shard group serves the model */
    uint32_t shards, encoders, active; /* live shard groups (of the model), encoders, requests */
} am_client_health;
int am_client_health_get(am_client *c, const char *model, int timeout_ms, am_client_health *out);
/* Asynchronous: sends a HEALTH query; the answer is an AM_CMD_HEALTH event with
 * rid *rid (the whole message: detail != 0 asks for the cluster's detail too,
 * proto.h's am_msg workers, running, waiting, encoder counters, preemptions). */
int am_client_health_send(am_client *c, const char *model, int detail, uint64_t *rid);

#endif
