/* proto/proto.h - the anymal wire protocol: messages, encoding and strict decoding.
 *
 * A message is a ZeroMQ multipart message of frames (proto/PROTOCOL.md):
 *   [header: 'A' 'M' 'P' version command] [body: one msgpack map] [payload]...
 * Big binary data (media bytes, embedding rows) travel in payload frames of
 * their own so that no layer copies them: the body only says how many there
 * are and what they hold. This module is the codec and knows nothing of
 * ZeroMQ (proto/transport.h moves frames); it is what the fuzzer exercises.
 *
 * Decoding is strict: the header must carry our protocol id and version and a
 * known command; the body must be one msgpack map with string keys, no
 * duplicate keys, every known key of the right type and range, every required
 * key present, and exactly the payload frames the command implies with the
 * sizes the body announces. Unknown keys are skipped (a peer of a later minor
 * revision may add optional fields). Every limit is a named constant below.
 * Before msgpack-c builds its object tree the body is pre-scanned so that no
 * container count can exceed the bytes that remain (a 5-byte body cannot make
 * the unpacker allocate gigabytes). Errors are AM_EFORMAT (malformed),
 * AM_ERANGE (over a limit), AM_EUNSUPPORTED (other protocol version) with a
 * message naming the field; the peer gets an ERROR or a DISCONNECT and the
 * receiver keeps serving.
 *
 * Ownership: a decoded am_msg owns its arrays and strings (am_msg_fini frees
 * them) but borrows the payload bytes, which stay in the frames they came in.
 */
#ifndef AM_PROTO_H
#define AM_PROTO_H

#include "core/modality.h"

#include <stddef.h>
#include <stdint.h>

#define AM_PROTO_ID0          'A'
#define AM_PROTO_ID1          'M'
#define AM_PROTO_ID2          'P'
#define AM_PROTO_VERSION      1
#define AM_PROTO_HEADER_BYTES 5

/* Limits (bytes unless named otherwise). */
#define AM_PROTO_MAX_BODY_BYTES       ((size_t)4 << 20)
#define AM_PROTO_MAX_PAYLOADS         32 /* media items per request */
#define AM_PROTO_MAX_FRAMES           (2 + AM_PROTO_MAX_PAYLOADS)
#define AM_PROTO_MAX_PAYLOAD_BYTES    ((size_t)256 << 20)
#define AM_PROTO_MAX_SEGMENTS         256
#define AM_PROTO_MAX_NAME_BYTES       256 /* names, roles, models, fingerprints */
#define AM_PROTO_MAX_TEXT_BYTES       ((size_t)1 << 20)
#define AM_PROTO_MAX_MESSAGE_BYTES    4096      /* ERROR / DISCONNECT text */
#define AM_PROTO_MAX_IDS              (1 << 20) /* token ids in one segment or TOKEN */
#define AM_PROTO_MAX_STOP             16
#define AM_PROTO_MAX_STOP_BYTES       256
#define AM_PROTO_MAX_MODALITIES       AM_MOD_COUNT /* READY lists every modality a worker serves */
#define AM_PROTO_MAX_CAPACITY         65536
#define AM_PROTO_MAX_ROWS             (1 << 20) /* embedding rows of one item */
#define AM_PROTO_MAX_DIM              65536
#define AM_PROTO_MAX_TOKENS           (1 << 20) /* max_tokens of a request */
#define AM_PROTO_MAX_DEADLINE_MS      (24u * 3600u * 1000u)
#define AM_PROTO_MAX_FRAMES_PER_VIDEO 256
#define AM_PROTO_MAX_DEPTH            8   /* msgpack nesting */
#define AM_PROTO_MAX_WORKERS          256 /* entries of a HEALTH answer's worker list */

typedef enum {
    AM_CMD_READY = 0x01,      /* worker -> coordinator: register */
    AM_CMD_HEARTBEAT = 0x02,  /* both ways */
    AM_CMD_DISCONNECT = 0x03, /* both ways: the session ends */
    AM_CMD_ENCODE = 0x04,     /* client/coordinator -> encoder: one media item */
    AM_CMD_EMBED = 0x05,      /* encoder -> coordinator -> leader/client: its rows */
    AM_CMD_GENERATE = 0x06,   /* client -> coordinator -> leader */
    AM_CMD_TOKEN = 0x07,      /* leader -> coordinator -> client: streamed output */
    AM_CMD_CANCEL = 0x08,     /* client -> coordinator -> leader */
    AM_CMD_ERROR = 0x09,      /* anyone: a request (or a message) failed */
    AM_CMD_HEALTH = 0x0A,     /* client -> coordinator (query), coordinator -> client (answer) */
} am_cmd;
#define AM_CMD_MAX 0x0A

const char *am_cmd_name(int cmd); /* "READY"...; "?" for unknown */

/* am_modality, am_modality_name and am_modality_parse: the one list, core/modality.h. */

typedef enum { AM_ROLE_ENCODER = 0, AM_ROLE_SHARD = 1 } am_role;
const char *am_role_name(int r); /* "encoder", "shard" */

/* Why a sequence ended (TOKEN.finish); NONE on every TOKEN but the last. */
typedef enum { AM_FIN_NONE = 0, AM_FIN_LENGTH, AM_FIN_EOS, AM_FIN_STOP, AM_FIN_CANCELLED } am_fin;
const char *am_fin_name(int f); /* "", "length", "eos", "stop", "cancelled" */

/* Liveness defaults of every link (coordinator and workers alike): a peer
 * sends a HEARTBEAT after this long without other traffic, and a peer silent
 * for AM_HEARTBEAT_LIVENESS intervals is dead (docs/reliability.md). */
#define AM_HEARTBEAT_MS       1000
#define AM_HEARTBEAT_LIVENESS 3

/* ERROR codes on the wire (HTTP-like, so a front end can pass them on). */
typedef enum {
    AM_WERR_BAD_REQUEST = 400, /* malformed or invalid message or field */
    AM_WERR_FORBIDDEN = 403,   /* the peer's key may not send this (a client's READY) */
    AM_WERR_NOT_FOUND = 404,   /* no such model / service */
    AM_WERR_DEADLINE = 408,    /* the request's deadline passed */
    AM_WERR_TOO_LARGE = 413,   /* over a size limit */
    AM_WERR_OVERLOADED = 429,  /* admission limit reached: retry later */
    AM_WERR_INTERNAL = 500,    /* a bug or an engine failure */
    AM_WERR_UNAVAILABLE = 503, /* the worker serving it died, retries exhausted */
} am_wire_err;

/* The wire code for an internal error code (core/error.h), the one mapping
 * every worker uses: the request's own content (AM_EINVAL, AM_EFORMAT,
 * AM_ESHAPE, AM_EUNSUPPORTED) 400; a size limit (AM_ERANGE) 413; a missing
 * named thing (AM_ENOTFOUND) 404; anything else, unknown codes included
 * (AM_ENOMEM, AM_EIO, AM_EINTERNAL, transport errors), 500. */
am_wire_err am_wire_code(int rc);

typedef enum { AM_SEG_TEXT = 0, AM_SEG_IDS = 1, AM_SEG_MEDIA = 2 } am_msg_seg_kind;

/* One prompt segment of a GENERATE. */
typedef struct am_msg_seg {
    uint8_t kind;     /* am_seg_kind */
    uint8_t modality; /* MEDIA: am_modality */
    const char *text; /* TEXT: UTF-8, NUL-terminated copy; text_len bytes */
    uint32_t text_len;
    int32_t *ids; /* IDS: n_ids token ids */
    uint32_t n_ids;
    uint32_t payload; /* MEDIA from a client: index of its payload frame;
                         UINT32_MAX = none (a slot, as sent to a leader) */
    uint32_t part;    /* MEDIA slot: the part number its EMBED will carry */
    uint32_t n_rows;  /* MEDIA to a leader: rows when known, 0 = pending */
    uint32_t frames;  /* MEDIA video: frames to sample, 0 = model default */
} am_msg_seg;

/* One worker in a detailed HEALTH answer (the coordinator's view of it). */
typedef struct am_msg_worker {
    uint8_t role;               /* am_role */
    const char *name, *model;   /* NUL-terminated */
    uint32_t mods;              /* encoder: bit per am_modality it serves */
    uint32_t load, capacity;    /* jobs/requests in flight at it, and its capacity */
    uint32_t tp;                /* shard group: ranks */
    uint32_t kv_free, kv_total; /* shard group: KV blocks free / in all, as it last reported */
    uint64_t preemptions;       /* shard group: scheduler preemptions so far, as last reported */
} am_msg_worker;

typedef struct am_bytes {
    const void *data;
    size_t len;
} am_bytes;

/* Every message in one flat struct: a command uses the fields its section of
 * PROTOCOL.md lists; the others stay zero. Strings are NUL-terminated. */
typedef struct am_msg {
    uint8_t cmd;
    uint64_t id;      /* request id (ENCODE, EMBED, GENERATE, TOKEN, CANCEL, ERROR) */
    uint32_t part;    /* ENCODE, EMBED (and an encoder's ERROR): media part of the request */
    uint32_t attempt; /* ENCODE, EMBED: dispatch attempt, echoed back */
    /* READY */
    uint8_t role;
    const char *name, *model, *fingerprint;
    uint32_t capacity, out_dim, tp_size;
    uint8_t modalities[AM_PROTO_MAX_MODALITIES];
    uint32_t n_modalities;
    /* HEARTBEAT: the sender's in-flight work (optional); a shard leader adds its
     * KV cache (blocks free, in all) and its preemptions so far (all optional) */
    uint32_t load;
    uint8_t drain; /* the worker is draining: send it nothing new (it ends with DISCONNECT) */
    uint32_t kv_free, kv_total;
    uint64_t preemptions; /* also HEALTH answer: the sum over live shard groups */
    /* ENCODE / EMBED */
    uint8_t modality;
    uint32_t frames;      /* ENCODE video */
    uint32_t n_rows, dim; /* EMBED: payload 0 = n_rows * dim f32 little-endian */
    uint32_t encode_us;   /* EMBED: compute time (stats) */
    /* GENERATE */
    am_msg_seg *segs;
    uint32_t n_segs;
    uint32_t max_tokens;
    float temperature, top_p, repetition_penalty;
    int32_t top_k;
    uint64_t seed;
    const char *stop[AM_PROTO_MAX_STOP];
    uint32_t n_stop;
    uint32_t deadline_ms; /* relative; 0 = the coordinator's default */
    uint8_t add_bos;      /* default 1 */
    uint8_t ignore_eos;   /* 1: generate max_tokens, past EOS (benchmarks) */
    /* TOKEN */
    int32_t *ids;
    uint32_t n_ids;
    const char *text;
    uint32_t text_len;
    uint8_t finish; /* am_fin */
    uint32_t prompt_tokens, completion_tokens;
    uint32_t queue_us; /* final TOKEN from the coordinator: admitted -> sent to a shard group */
    /* HEALTH answer (a field left out is false / 0) */
    uint8_t healthy; /* a live shard group serves the model asked about (any model if none) */
    uint32_t n_shards, n_encoders,
        n_active;                  /* live shard groups (of that model), encoders, requests */
    uint8_t detail;                /* HEALTH query: also send the fields below */
    uint32_t n_running, n_waiting; /* generations at a shard group / queued for one */
    uint64_t enc_jobs[AM_MOD_COUNT],
        enc_us[AM_MOD_COUNT]; /* encodes done, their us, per modality */
    am_msg_worker *workers;   /* every live worker */
    uint32_t n_workers;
    /* ERROR (code, message), DISCONNECT (message = reason) */
    int32_t code;
    const char *message;
    /* payload frames (borrowed) */
    am_bytes payloads[AM_PROTO_MAX_PAYLOADS];
    uint32_t n_payloads;
    /* decoder's allocations */
    void *arena;
} am_msg;

/* Zeroes m and sets the defaults of optional fields (add_bos 1, top_p 1, repetition_penalty 1). */
void am_msg_init(am_msg *m, int cmd);
/* Frees what decoding allocated; zeroes m. NULL-safe. */
void am_msg_fini(am_msg *m);

/* The 5 header bytes of cmd. */
void am_proto_header(int cmd, uint8_t out[AM_PROTO_HEADER_BYTES]);
/* Checks a header frame; *cmd on success. AM_EFORMAT (wrong size or id),
 * AM_EUNSUPPORTED (other version: the message names both), AM_EFORMAT for an
 * unknown command. */
int am_proto_check_header(const void *hdr, size_t len, int *cmd);

/* A growable byte buffer. */
typedef struct am_buf {
    char *data;
    size_t len, cap;
} am_buf;
void am_buf_fini(am_buf *b);

/* Packs m's body (msgpack) into b (appended after b->len = 0). The payloads
 * are not part of the body: the caller sends them as frames, in order. Checks
 * m against the same limits the decoder enforces: AM_ERANGE / AM_EINVAL naming
 * the field; AM_ENOMEM. */
int am_msg_encode(const am_msg *m, am_buf *b);

/* Decodes a whole message: header, body and the sizes of the payload frames.
 * On success *out owns its allocations (am_msg_fini) and points at the payload
 * bytes given. On failure *out is empty and the message names what was wrong. */
int am_msg_decode(const void *hdr, size_t hdr_len, const void *body, size_t body_len,
                  const am_bytes *payloads, size_t n_payloads, am_msg *out);

/* Payload frames a message of this command and body must carry (for the
 * encoder's and the transport's checks). */
uint32_t am_msg_expected_payloads(const am_msg *m);

#endif
