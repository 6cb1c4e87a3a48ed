/* proto/proto.c - msgpack bodies of the anymal wire protocol: packing and strict decoding.
 *
 * Packing uses msgpack-c's packer writing straight into an am_buf. Decoding
 * first pre-scans the body with a small bounds-checking walker (every
 * container count must fit in the bytes that remain, nesting and object count
 * are capped, ext types are refused), then lets msgpack-c build its object
 * tree, then checks each field against the table below. The pre-scan is what
 * makes msgpack-c safe on hostile input: it allocates per declared count.
 */
#include "proto/proto.h"

#include "core/alloc.h"
#include "core/error.h"

#include <math.h>
#include <msgpack.h>
#include <string.h>

/* Objects msgpack-c may build for one body (each ~24 bytes of zone memory). */
#define AM_PROTO_MAX_OBJECTS 65536

/* ---------------------------------------------------------------- names */

const char *am_cmd_name(int cmd) {
    static const char *const n[] = {"?",      "READY", "HEARTBEAT", "DISCONNECT",
                                    "ENCODE", "EMBED", "GENERATE",  "TOKEN",
                                    "CANCEL", "ERROR", "HEALTH"};
    return cmd >= 1 && cmd <= AM_CMD_MAX ? n[cmd] : "?";
}

const char *am_role_name(int r) {
    return r == AM_ROLE_ENCODER ? "encoder" : r == AM_ROLE_SHARD ? "shard" : "?";
}

const char *am_fin_name(int f) {
    static const char *const n[] = {"", "length", "eos", "stop", "cancelled"};
    return f >= 0 && f <= AM_FIN_CANCELLED ? n[f] : "?";
}

/* ---------------------------------------------------------------- header */

void am_proto_header(int cmd, uint8_t out[AM_PROTO_HEADER_BYTES]) {
    out[0] = AM_PROTO_ID0;
    out[1] = AM_PROTO_ID1;
    out[2] = AM_PROTO_ID2;
    out[3] = AM_PROTO_VERSION;
    out[4] = (uint8_t)cmd;
}

int am_proto_check_header(const void *hdr, size_t len, int *cmd) {
    const uint8_t *h = hdr;
    if (len != AM_PROTO_HEADER_BYTES)
        return am_err_set(AM_EFORMAT, "header frame has %zu bytes (want %d)", len,
                          AM_PROTO_HEADER_BYTES);
    if (h[0] != AM_PROTO_ID0 || h[1] != AM_PROTO_ID1 || h[2] != AM_PROTO_ID2)
        return am_err_set(AM_EFORMAT, "header does not start with the protocol id 'AMP'");
    if (h[3] != AM_PROTO_VERSION)
        return am_err_set(AM_EUNSUPPORTED, "protocol version %u (this peer speaks %d)", h[3],
                          AM_PROTO_VERSION);
    if (h[4] < 1 || h[4] > AM_CMD_MAX)
        return am_err_set(AM_EFORMAT, "unknown command 0x%02x", h[4]);
    *cmd = h[4];
    return 0;
}

/* ---------------------------------------------------------------- message memory */

typedef struct arena_block {
    struct arena_block *next;
    max_align_t data[];
} arena_block;

static void *arena_alloc(am_msg *m, size_t n) {
    arena_block *b = am_malloc(sizeof *b + (n ? n : 1));
    if (!b) return NULL;
    b->next = m->arena;
    m->arena = b;
    return b->data;
}

void am_msg_init(am_msg *m, int cmd) {
    memset(m, 0, sizeof *m);
    m->cmd = (uint8_t)cmd;
    m->add_bos = 1;
    m->top_p = 1.0f;
    m->repetition_penalty = 1.0f;
}

void am_msg_fini(am_msg *m) {
    if (!m) return;
    arena_block *b = m->arena;
    while (b) {
        arena_block *n = b->next;
        am_free(b);
        b = n;
    }
    memset(m, 0, sizeof *m);
}

void am_buf_fini(am_buf *b) {
    am_free(b->data);
    memset(b, 0, sizeof *b);
}

static int buf_write(void *data, const char *src, size_t len) {
    am_buf *b = data;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len)
            cap *= 2;
        char *d = am_realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, len);
    b->len += len;
    return 0;
}

/* ---------------------------------------------------------------- fields */

enum {
    F_ID,
    F_PART,
    F_ATTEMPT,
    F_ROLE,
    F_NAME,
    F_MODEL,
    F_FP,
    F_CAPACITY,
    F_OUT_DIM,
    F_TP,
    F_MODALITIES,
    F_LOAD,
    F_MODALITY,
    F_FRAMES,
    F_N_ROWS,
    F_DIM,
    F_ENCODE_US,
    F_SEGMENTS,
    F_MAX_TOKENS,
    F_TEMPERATURE,
    F_TOP_P,
    F_TOP_K,
    F_REP_PENALTY,
    F_SEED,
    F_STOP,
    F_DEADLINE,
    F_BOS,
    F_IDS,
    F_TEXT,
    F_FINISH,
    F_PROMPT_TOKENS,
    F_COMPLETION_TOKENS,
    F_CODE,
    F_MESSAGE,
    F_HEALTHY,
    F_SHARDS,
    F_ENCODERS,
    F_ACTIVE,
    F_IGNORE_EOS,
    F_KV_FREE,
    F_KV_TOTAL,
    F_PREEMPT,
    F_DETAIL,
    F_RUNNING,
    F_WAITING,
    F_ENC_JOBS,
    F_ENC_US,
    F_WORKERS,
    F_QUEUE_US,
    F_DRAIN,
    F_COUNT
};

_Static_assert(F_COUNT <= 64, "the decoder's seen-set is one uint64_t");
#define C(x) (1u << (x))
static const struct {
    const char *key;
    uint32_t cmds;     /* commands that use the field */
    uint32_t required; /* commands that require it */
} fields[F_COUNT] = {
    [F_ID] = {"id",
              C(AM_CMD_ENCODE) | C(AM_CMD_EMBED) | C(AM_CMD_GENERATE) | C(AM_CMD_TOKEN) |
                  C(AM_CMD_CANCEL) | C(AM_CMD_ERROR) | C(AM_CMD_HEALTH),
              C(AM_CMD_ENCODE) | C(AM_CMD_EMBED) | C(AM_CMD_GENERATE) | C(AM_CMD_TOKEN) |
                  C(AM_CMD_CANCEL) | C(AM_CMD_HEALTH)},
    [F_PART] = {"part", C(AM_CMD_ENCODE) | C(AM_CMD_EMBED) | C(AM_CMD_ERROR),
                C(AM_CMD_ENCODE) | C(AM_CMD_EMBED)},
    [F_ATTEMPT] = {"attempt", C(AM_CMD_ENCODE) | C(AM_CMD_EMBED), 0},
    [F_ROLE] = {"role", C(AM_CMD_READY), C(AM_CMD_READY)},
    [F_NAME] = {"name", C(AM_CMD_READY) | C(AM_CMD_ENCODE), C(AM_CMD_READY)},
    [F_MODEL] = {"model",
                 C(AM_CMD_READY) | C(AM_CMD_GENERATE) | C(AM_CMD_ENCODE) | C(AM_CMD_HEALTH),
                 C(AM_CMD_READY)},
    [F_FP] = {"fp", C(AM_CMD_READY), C(AM_CMD_READY)},
    [F_CAPACITY] = {"capacity", C(AM_CMD_READY), C(AM_CMD_READY)},
    [F_OUT_DIM] = {"out_dim", C(AM_CMD_READY), C(AM_CMD_READY)},
    [F_TP] = {"tp", C(AM_CMD_READY), 0},
    [F_MODALITIES] = {"modalities", C(AM_CMD_READY), 0},
    [F_LOAD] = {"load", C(AM_CMD_HEARTBEAT), 0},
    [F_MODALITY] = {"modality", C(AM_CMD_ENCODE) | C(AM_CMD_EMBED), C(AM_CMD_ENCODE)},
    [F_FRAMES] = {"frames", C(AM_CMD_ENCODE), 0},
    [F_N_ROWS] = {"n_rows", C(AM_CMD_EMBED), C(AM_CMD_EMBED)},
    [F_DIM] = {"dim", C(AM_CMD_EMBED), C(AM_CMD_EMBED)},
    [F_ENCODE_US] = {"encode_us", C(AM_CMD_EMBED), 0},
    [F_SEGMENTS] = {"segments", C(AM_CMD_GENERATE), C(AM_CMD_GENERATE)},
    [F_MAX_TOKENS] = {"max_tokens", C(AM_CMD_GENERATE), C(AM_CMD_GENERATE)},
    [F_TEMPERATURE] = {"temperature", C(AM_CMD_GENERATE), 0},
    [F_TOP_P] = {"top_p", C(AM_CMD_GENERATE), 0},
    [F_TOP_K] = {"top_k", C(AM_CMD_GENERATE), 0},
    [F_REP_PENALTY] = {"rep_penalty", C(AM_CMD_GENERATE), 0},
    [F_SEED] = {"seed", C(AM_CMD_GENERATE), 0},
    [F_STOP] = {"stop", C(AM_CMD_GENERATE), 0},
    [F_DEADLINE] = {"deadline_ms", C(AM_CMD_GENERATE), 0},
    [F_BOS] = {"bos", C(AM_CMD_GENERATE), 0},
    [F_IDS] = {"ids", C(AM_CMD_TOKEN), 0},
    [F_TEXT] = {"text", C(AM_CMD_TOKEN), 0},
    [F_FINISH] = {"finish", C(AM_CMD_TOKEN), 0},
    [F_PROMPT_TOKENS] = {"prompt_tokens", C(AM_CMD_TOKEN), 0},
    [F_COMPLETION_TOKENS] = {"completion_tokens", C(AM_CMD_TOKEN), 0},
    [F_CODE] = {"code", C(AM_CMD_ERROR), C(AM_CMD_ERROR)},
    [F_MESSAGE] = {"message", C(AM_CMD_ERROR) | C(AM_CMD_DISCONNECT), C(AM_CMD_ERROR)},
    [F_HEALTHY] = {"healthy", C(AM_CMD_HEALTH), 0},
    [F_SHARDS] = {"shards", C(AM_CMD_HEALTH), 0},
    [F_ENCODERS] = {"encoders", C(AM_CMD_HEALTH), 0},
    [F_ACTIVE] = {"active", C(AM_CMD_HEALTH), 0},
    [F_IGNORE_EOS] = {"ignore_eos", C(AM_CMD_GENERATE), 0},
    [F_KV_FREE] = {"kv_free", C(AM_CMD_HEARTBEAT), 0},
    [F_KV_TOTAL] = {"kv_total", C(AM_CMD_HEARTBEAT), 0},
    [F_PREEMPT] = {"preemptions", C(AM_CMD_HEARTBEAT) | C(AM_CMD_HEALTH), 0},
    [F_DETAIL] = {"detail", C(AM_CMD_HEALTH), 0},
    [F_RUNNING] = {"running", C(AM_CMD_HEALTH), 0},
    [F_WAITING] = {"waiting", C(AM_CMD_HEALTH), 0},
    [F_ENC_JOBS] = {"enc_jobs", C(AM_CMD_HEALTH), 0},
    [F_ENC_US] = {"enc_us", C(AM_CMD_HEALTH), 0},
    [F_WORKERS] = {"workers", C(AM_CMD_HEALTH), 0},
    [F_QUEUE_US] = {"queue_us", C(AM_CMD_TOKEN), 0},
    [F_DRAIN] = {"drain", C(AM_CMD_HEARTBEAT), 0},
};

/* ---------------------------------------------------------------- packing */

typedef struct {
    msgpack_packer pk;
    int err;
} packer;

static void p_key(packer *p, const char *k) {
    size_t n = strlen(k);
    p->err |= msgpack_pack_str(&p->pk, n) | msgpack_pack_str_body(&p->pk, k, n);
}
static void p_str(packer *p, const char *s, size_t n) {
    p->err |= msgpack_pack_str(&p->pk, n) | msgpack_pack_str_body(&p->pk, s ? s : "", n);
}
static void p_u64(packer *p, uint64_t v) { p->err |= msgpack_pack_uint64(&p->pk, v); }
static void p_i64(packer *p, int64_t v) { p->err |= msgpack_pack_int64(&p->pk, v); }
static void p_f32(packer *p, float v) { p->err |= msgpack_pack_float(&p->pk, v); }
/* int32 ids as one bin of little-endian words (x86 and ARM are little-endian;
 * a big-endian host would need a swap here and in the decoder). */
static void p_ids(packer *p, const int32_t *ids, uint32_t n) {
    p->err |= msgpack_pack_bin(&p->pk, (size_t)n * 4);
    if (n) p->err |= msgpack_pack_bin_body(&p->pk, ids, (size_t)n * 4);
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }

static int check_name(const char *what, const char *s, int required) {
    size_t n = slen(s);
    if (required && !n) return am_err_set(AM_EINVAL, "%s is empty", what);
    if (n > AM_PROTO_MAX_NAME_BYTES)
        return am_err_set(AM_ERANGE, "%s has %zu bytes (at most %d)", what, n,
                          AM_PROTO_MAX_NAME_BYTES);
    return 0;
}

uint32_t am_msg_expected_payloads(const am_msg *m) {
    if (m->cmd == AM_CMD_ENCODE || m->cmd == AM_CMD_EMBED) return 1;
    if (m->cmd != AM_CMD_GENERATE) return 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n_segs; i++)
        if (m->segs[i].kind == AM_SEG_MEDIA && m->segs[i].payload != UINT32_MAX) n++;
    return n;
}

/* Whether field f is written for m (optional fields at their default are left out). */
static int emits(const am_msg *m, int f) {
    if (!(fields[f].cmds & C(m->cmd))) return 0;
    if (fields[f].required & C(m->cmd)) return 1;
    switch (f) {
    case F_ID: return m->id != 0;
    case F_PART: return m->part != 0;
    case F_ATTEMPT: return m->attempt != 0;
    case F_NAME:
    case F_MODEL: return slen(f == F_NAME ? m->name : m->model) != 0;
    case F_TP: return m->role == AM_ROLE_SHARD;
    case F_MODALITIES: return m->role == AM_ROLE_ENCODER;
    case F_LOAD: return m->load != 0;
    case F_FRAMES: return m->frames != 0;
    case F_ENCODE_US: return m->encode_us != 0;
    case F_MODALITY: return m->cmd == AM_CMD_EMBED;
    case F_TEMPERATURE: return m->temperature != 0.0f;
    case F_TOP_P: return m->top_p != 1.0f;
    case F_TOP_K: return m->top_k != 0;
    case F_REP_PENALTY: return m->repetition_penalty != 1.0f;
    case F_SEED: return m->seed != 0;
    case F_STOP: return m->n_stop != 0;
    case F_DEADLINE: return m->deadline_ms != 0;
    case F_BOS: return m->add_bos != 1;
    case F_IDS: return m->n_ids != 0;
    case F_TEXT: return m->text_len != 0;
    case F_FINISH: return m->finish != AM_FIN_NONE;
    case F_PROMPT_TOKENS:
    case F_COMPLETION_TOKENS: return m->finish != AM_FIN_NONE;
    case F_MESSAGE: return slen(m->message) != 0;
    case F_HEALTHY: return m->healthy != 0;
    case F_SHARDS: return m->n_shards != 0;
    case F_ENCODERS: return m->n_encoders != 0;
    case F_ACTIVE: return m->n_active != 0;
    case F_IGNORE_EOS: return m->ignore_eos != 0;
    case F_DRAIN: return m->drain != 0;
    case F_KV_FREE:
    case F_KV_TOTAL: return m->kv_total != 0;
    case F_PREEMPT: return m->preemptions != 0;
    case F_DETAIL: return m->detail != 0;
    case F_RUNNING: return m->n_running != 0;
    case F_WAITING: return m->n_waiting != 0;
    case F_ENC_JOBS:
    case F_ENC_US:
    case F_WORKERS: return m->n_workers != 0 || m->detail;
    case F_QUEUE_US: return m->queue_us != 0;
    default: return 0;
    }
}

static int check_for_encode(const am_msg *m) {
    int rc;
    switch (m->cmd) {
    case AM_CMD_READY:
        if ((rc = check_name("READY name", m->name, 1)) ||
            (rc = check_name("READY model", m->model, 1)) ||
            (rc = check_name("READY fp", m->fingerprint, 1)))
            return rc;
        if (m->capacity < 1 || m->capacity > AM_PROTO_MAX_CAPACITY || m->out_dim < 1 ||
            m->out_dim > AM_PROTO_MAX_DIM)
            return am_err_set(AM_ERANGE, "READY capacity %u / out_dim %u out of range", m->capacity,
                              m->out_dim);
        if (m->role == AM_ROLE_ENCODER &&
            (m->n_modalities < 1 || m->n_modalities > AM_PROTO_MAX_MODALITIES))
            return am_err_set(AM_ERANGE, "READY of an encoder with %u modalities", m->n_modalities);
        break;
    case AM_CMD_GENERATE:
        if (m->n_segs < 1 || m->n_segs > AM_PROTO_MAX_SEGMENTS)
            return am_err_set(AM_ERANGE, "GENERATE with %u segments (want 1..%d)", m->n_segs,
                              AM_PROTO_MAX_SEGMENTS);
        if (m->n_stop > AM_PROTO_MAX_STOP)
            return am_err_set(AM_ERANGE, "%u stop strings (at most %d)", m->n_stop,
                              AM_PROTO_MAX_STOP);
        if (m->max_tokens < 1 || m->max_tokens > AM_PROTO_MAX_TOKENS)
            return am_err_set(AM_ERANGE, "max_tokens %u (want 1..%d)", m->max_tokens,
                              AM_PROTO_MAX_TOKENS);
        break;
    case AM_CMD_HEALTH:
        if (m->n_workers > AM_PROTO_MAX_WORKERS)
            return am_err_set(AM_ERANGE, "HEALTH with %u workers (at most %d)", m->n_workers,
                              AM_PROTO_MAX_WORKERS);
        for (uint32_t i = 0; i < m->n_workers; i++)
            if ((rc = check_name("HEALTH worker name", m->workers[i].name, 0)) ||
                (rc = check_name("HEALTH worker model", m->workers[i].model, 0)))
                return rc;
        break;
    case AM_CMD_EMBED:
        if (m->n_rows < 1 || m->n_rows > AM_PROTO_MAX_ROWS || m->dim < 1 ||
            m->dim > AM_PROTO_MAX_DIM)
            return am_err_set(AM_ERANGE, "EMBED of %u rows x %u", m->n_rows, m->dim);
        break;
    default: break;
    }
    return 0;
}

static void pack_field(packer *p, const am_msg *m, int f) {
    p_key(p, fields[f].key);
    switch (f) {
    case F_ID: p_u64(p, m->id); break;
    case F_PART: p_u64(p, m->part); break;
    case F_ATTEMPT: p_u64(p, m->attempt); break;
    case F_ROLE: p_str(p, am_role_name(m->role), slen(am_role_name(m->role))); break;
    case F_NAME: p_str(p, m->name, slen(m->name)); break;
    case F_MODEL: p_str(p, m->model, slen(m->model)); break;
    case F_FP: p_str(p, m->fingerprint, slen(m->fingerprint)); break;
    case F_CAPACITY: p_u64(p, m->capacity); break;
    case F_OUT_DIM: p_u64(p, m->out_dim); break;
    case F_TP: p_u64(p, m->tp_size ? m->tp_size : 1); break;
    case F_MODALITIES:
        p->err |= msgpack_pack_array(&p->pk, m->n_modalities);
        for (uint32_t i = 0; i < m->n_modalities; i++)
            p_str(p, am_modality_name(m->modalities[i]),
                  strlen(am_modality_name(m->modalities[i])));
        break;
    case F_LOAD: p_u64(p, m->load); break;
    case F_MODALITY:
        p_str(p, am_modality_name(m->modality), strlen(am_modality_name(m->modality)));
        break;
    case F_FRAMES: p_u64(p, m->frames); break;
    case F_N_ROWS: p_u64(p, m->n_rows); break;
    case F_DIM: p_u64(p, m->dim); break;
    case F_ENCODE_US: p_u64(p, m->encode_us); break;
    case F_SEGMENTS:
        p->err |= msgpack_pack_array(&p->pk, m->n_segs);
        for (uint32_t i = 0; i < m->n_segs; i++) {
            const am_msg_seg *s = &m->segs[i];
            if (s->kind == AM_SEG_TEXT) {
                p->err |= msgpack_pack_map(&p->pk, 2);
                p_key(p, "t"), p_str(p, "text", 4);
                p_key(p, "text"), p_str(p, s->text, s->text_len);
            } else if (s->kind == AM_SEG_IDS) {
                p->err |= msgpack_pack_map(&p->pk, 2);
                p_key(p, "t"), p_str(p, "ids", 3);
                p_key(p, "ids"), p_ids(p, s->ids, s->n_ids);
            } else {
                const int has_payload = s->payload != UINT32_MAX;
                p->err |=
                    msgpack_pack_map(&p->pk, 3 + (s->frames != 0) + (!has_payload && s->n_rows));
                p_key(p, "t"), p_str(p, "media", 5);
                p_key(p, "mod"),
                    p_str(p, am_modality_name(s->modality), strlen(am_modality_name(s->modality)));
                if (has_payload)
                    p_key(p, "payload"), p_u64(p, s->payload);
                else
                    p_key(p, "part"), p_u64(p, s->part);
                if (s->frames) p_key(p, "frames"), p_u64(p, s->frames);
                if (!has_payload && s->n_rows) p_key(p, "n_rows"), p_u64(p, s->n_rows);
            }
        }
        break;
    case F_MAX_TOKENS: p_u64(p, m->max_tokens); break;
    case F_TEMPERATURE: p_f32(p, m->temperature); break;
    case F_TOP_P: p_f32(p, m->top_p); break;
    case F_TOP_K: p_i64(p, m->top_k); break;
    case F_REP_PENALTY: p_f32(p, m->repetition_penalty); break;
    case F_SEED: p_u64(p, m->seed); break;
    case F_STOP:
        p->err |= msgpack_pack_array(&p->pk, m->n_stop);
        for (uint32_t i = 0; i < m->n_stop; i++)
            p_str(p, m->stop[i], slen(m->stop[i]));
        break;
    case F_DEADLINE: p_u64(p, m->deadline_ms); break;
    case F_BOS:
        p->err |= m->add_bos ? msgpack_pack_true(&p->pk) : msgpack_pack_false(&p->pk);
        break;
    case F_IDS: p_ids(p, m->ids, m->n_ids); break;
    case F_TEXT: p_str(p, m->text, m->text_len); break;
    case F_FINISH: p_str(p, am_fin_name(m->finish), strlen(am_fin_name(m->finish))); break;
    case F_PROMPT_TOKENS: p_u64(p, m->prompt_tokens); break;
    case F_COMPLETION_TOKENS: p_u64(p, m->completion_tokens); break;
    case F_CODE: p_i64(p, m->code); break;
    case F_MESSAGE: {
        size_t n = slen(m->message);
        p_str(p, m->message, n > AM_PROTO_MAX_MESSAGE_BYTES ? AM_PROTO_MAX_MESSAGE_BYTES : n);
        break;
    }
    case F_HEALTHY:
        p->err |= m->healthy ? msgpack_pack_true(&p->pk) : msgpack_pack_false(&p->pk);
        break;
    case F_SHARDS: p_u64(p, m->n_shards); break;
    case F_ENCODERS: p_u64(p, m->n_encoders); break;
    case F_ACTIVE: p_u64(p, m->n_active); break;
    case F_IGNORE_EOS:
    case F_DRAIN: p->err |= msgpack_pack_true(&p->pk); break;
    case F_QUEUE_US: p_u64(p, m->queue_us); break;
    case F_KV_FREE: p_u64(p, m->kv_free); break;
    case F_KV_TOTAL: p_u64(p, m->kv_total); break;
    case F_PREEMPT: p_u64(p, m->preemptions); break;
    case F_DETAIL: p->err |= msgpack_pack_true(&p->pk); break;
    case F_RUNNING: p_u64(p, m->n_running); break;
    case F_WAITING: p_u64(p, m->n_waiting); break;
    case F_ENC_JOBS:
    case F_ENC_US:
        p->err |= msgpack_pack_array(&p->pk, AM_MOD_COUNT);
        for (int i = 0; i < AM_MOD_COUNT; i++)
            p_u64(p, f == F_ENC_JOBS ? m->enc_jobs[i] : m->enc_us[i]);
        break;
    case F_WORKERS:
        p->err |= msgpack_pack_array(&p->pk, m->n_workers);
        for (uint32_t i = 0; i < m->n_workers; i++) {
            const am_msg_worker *w = &m->workers[i];
            p->err |= msgpack_pack_map(&p->pk, 10);
            p_key(p, "role"), p_str(p, am_role_name(w->role), strlen(am_role_name(w->role)));
            p_key(p, "name"), p_str(p, w->name, slen(w->name));
            p_key(p, "model"), p_str(p, w->model, slen(w->model));
            p_key(p, "mods"), p_u64(p, w->mods);
            p_key(p, "load"), p_u64(p, w->load);
            p_key(p, "capacity"), p_u64(p, w->capacity);
            p_key(p, "tp"), p_u64(p, w->tp);
            p_key(p, "kv_free"), p_u64(p, w->kv_free);
            p_key(p, "kv_total"), p_u64(p, w->kv_total);
            p_key(p, "preemptions"), p_u64(p, w->preemptions);
        }
        break;
    default: break;
    }
}

int am_msg_encode(const am_msg *m, am_buf *b) {
    if (m->cmd < 1 || m->cmd > AM_CMD_MAX)
        return am_err_set(AM_EINVAL, "cannot encode command %d", m->cmd);
    int rc = check_for_encode(m);
    if (rc) return rc;
    b->len = 0;
    packer p = {.err = 0};
    msgpack_packer_init(&p.pk, b, buf_write);
    uint32_t n = 0;
    for (int f = 0; f < F_COUNT; f++)
        n += (uint32_t)emits(m, f);
    p.err |= msgpack_pack_map(&p.pk, n);
    for (int f = 0; f < F_COUNT; f++)
        if (emits(m, f)) pack_field(&p, m, f);
    if (p.err) return am_err_set(AM_ENOMEM, "out of memory packing a %s body", am_cmd_name(m->cmd));
    if (b->len > AM_PROTO_MAX_BODY_BYTES)
        return am_err_set(AM_ERANGE, "%s body of %zu bytes exceeds the limit of %zu",
                          am_cmd_name(m->cmd), b->len, AM_PROTO_MAX_BODY_BYTES);
    return 0;
}

/* ---------------------------------------------------------------- pre-scan */

typedef struct {
    const uint8_t *p, *end;
    long objects;
} scan_st;

static int be_len(scan_st *s, int bytes, uint64_t *out) {
    if (s->end - s->p < bytes) return -1;
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | s->p[i];
    s->p += bytes;
    *out = v;
    return 0;
}

/* Walks one object; -1 on any violation (truncation, ext, depth, counts). */
static int scan_obj(scan_st *s, int depth) {
    if (depth > AM_PROTO_MAX_DEPTH || ++s->objects > AM_PROTO_MAX_OBJECTS || s->p >= s->end)
        return -1;
    const uint8_t b = *s->p++;
    uint64_t n = 0, skip = 0;
    int container = 0; /* 1 array, 2 map */
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;
    if ((b & 0xf0) == 0x80)
        n = b & 0x0f, container = 2;
    else if ((b & 0xf0) == 0x90)
        n = b & 0x0f, container = 1;
    else if ((b & 0xe0) == 0xa0)
        skip = b & 0x1f;
    else {
        switch (b) {
        case 0xc4:
        case 0xd9:
            if (be_len(s, 1, &skip)) return -1;
            break;
        case 0xc5:
        case 0xda:
            if (be_len(s, 2, &skip)) return -1;
            break;
        case 0xc6:
        case 0xdb:
            if (be_len(s, 4, &skip)) return -1;
            break;
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc:
        case 0xd0: skip = 1; break;
        case 0xcd:
        case 0xd1: skip = 2; break;
        case 0xce:
        case 0xd2: skip = 4; break;
        case 0xcf:
        case 0xd3: skip = 8; break;
        case 0xdc:
            if (be_len(s, 2, &n)) return -1;
            container = 1;
            break;
        case 0xdd:
            if (be_len(s, 4, &n)) return -1;
            container = 1;
            break;
        case 0xde:
            if (be_len(s, 2, &n)) return -1;
            container = 2;
            break;
        case 0xdf:
            if (be_len(s, 4, &n)) return -1;
            container = 2;
            break;
        default: return -1; /* 0xc1 (never used) and every ext type */
        }
    }
    if (!container) {
        if ((uint64_t)(s->end - s->p) < skip) return -1;
        s->p += skip;
        return 0;
    }
    const uint64_t elems = container == 2 ? 2 * n : n;
    if (elems > (uint64_t)(s->end - s->p)) return -1; /* each element needs >= 1 byte */
    for (uint64_t i = 0; i < elems; i++)
        if (scan_obj(s, depth + 1)) return -1;
    return 0;
}

/* ---------------------------------------------------------------- decoding */

typedef struct {
    am_msg *m;
    const char *where; /* command name for messages */
} dec;

static int bad(dec *d, const char *key, const char *what) {
    return am_err_set(AM_EFORMAT, "%s: field '%s' %s", d->where, key, what);
}

static int get_uint(dec *d, const msgpack_object *o, const char *key, uint64_t min, uint64_t max,
                    uint64_t *out) {
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return am_err_set(AM_ERANGE, "%s: field '%s' is negative", d->where, key);
        return bad(d, key, "is not an unsigned integer");
    }
    if (o->via.u64 < min || o->via.u64 > max)
        return am_err_set(AM_ERANGE, "%s: field '%s' = %llu is outside [%llu, %llu]", d->where, key,
                          (unsigned long long)o->via.u64, (unsigned long long)min,
                          (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

static int get_u32(dec *d, const msgpack_object *o, const char *key, uint32_t min, uint32_t max,
                   uint32_t *out) {
    uint64_t v = 0;
    int rc = get_uint(d, o, key, min, max, &v);
    if (!rc) *out = (uint32_t)v;
    return rc;
}

static int get_int(dec *d, const msgpack_object *o, const char *key, int64_t min, int64_t max,
                   int64_t *out) {
    int64_t v = 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return am_err_set(AM_ERANGE, "%s: field '%s' is too large", d->where, key);
        v = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        v = o->via.i64;
    } else {
        return bad(d, key, "is not an integer");
    }
    if (v < min || v > max)
        return am_err_set(AM_ERANGE, "%s: field '%s' = %lld is outside [%lld, %lld]", d->where, key,
                          (long long)v, (long long)min, (long long)max);
    *out = v;
    return 0;
}

static int get_float(dec *d, const msgpack_object *o, const char *key, double min, double max,
                     float *out) {
    double v;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        v = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        v = (double)o->via.u64;
    else
        return bad(d, key, "is not a number");
    if (!isfinite(v) || v < min || v > max)
        return am_err_set(AM_ERANGE, "%s: field '%s' = %g is outside [%g, %g]", d->where, key, v,
                          min, max);
    *out = (float)v;
    return 0;
}

/* A string (or bin, for text) copied NUL-terminated into the arena. no_nul:
 * names may not contain NUL bytes. */
static int get_str(dec *d, const msgpack_object *o, const char *key, size_t max, int allow_bin,
                   int no_nul, const char **out, uint32_t *len_out) {
    const char *p;
    size_t n;
    if (o->type == MSGPACK_OBJECT_STR)
        p = o->via.str.ptr, n = o->via.str.size;
    else if (allow_bin && o->type == MSGPACK_OBJECT_BIN)
        p = o->via.bin.ptr, n = o->via.bin.size;
    else
        return bad(d, key, "is not a string");
    if (n > max)
        return am_err_set(AM_ERANGE, "%s: field '%s' has %zu bytes (at most %zu)", d->where, key, n,
                          max);
    if (no_nul && n && memchr(p, 0, n)) return bad(d, key, "contains a NUL byte");
    char *c = arena_alloc(d->m, n + 1);
    if (!c) return am_err_set(AM_ENOMEM, "%s: out of memory", d->where);
    if (n) memcpy(c, p, n);
    c[n] = '\0';
    *out = c;
    if (len_out) *len_out = (uint32_t)n;
    return 0;
}

static int get_ids(dec *d, const msgpack_object *o, const char *key, int32_t **out,
                   uint32_t *n_out) {
    if (o->type != MSGPACK_OBJECT_BIN) return bad(d, key, "is not a bin of int32 ids");
    size_t n = o->via.bin.size;
    if (n % 4) return bad(d, key, "is not a whole number of int32 ids");
    if (n / 4 > AM_PROTO_MAX_IDS)
        return am_err_set(AM_ERANGE, "%s: field '%s' has %zu ids (at most %d)", d->where, key,
                          n / 4, AM_PROTO_MAX_IDS);
    int32_t *ids = arena_alloc(d->m, n);
    if (!ids) return am_err_set(AM_ENOMEM, "%s: out of memory", d->where);
    if (n) memcpy(ids, o->via.bin.ptr, n);
    for (size_t i = 0; i < n / 4; i++)
        if (ids[i] < 0)
            return am_err_set(AM_ERANGE, "%s: field '%s': id %zu is negative", d->where, key, i);
    *out = ids;
    *n_out = (uint32_t)(n / 4);
    return 0;
}

static int key_is(const msgpack_object *k, const char *s) {
    size_t n = strlen(s);
    return k->via.str.size == n && !memcmp(k->via.str.ptr, s, n);
}

static int get_modality(dec *d, const msgpack_object *o, const char *key, uint8_t *out) {
    const char *s;
    int rc = get_str(d, o, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &s, NULL);
    if (rc) return rc;
    am_modality mod = AM_MOD_IMAGE;
    if (am_modality_parse(s, &mod))
        return am_err_prefix(AM_EFORMAT, "%s: field '%s'", d->where, key);
    *out = (uint8_t)mod;
    return 0;
}

static int dec_segment(dec *d, const msgpack_object *o, uint32_t i, am_msg_seg *s) {
    char key[32];
    snprintf(key, sizeof key, "segments[%u]", i);
    if (o->type != MSGPACK_OBJECT_MAP) return bad(d, key, "is not a map");
    s->payload = UINT32_MAX;
    const msgpack_object *t = NULL, *text = NULL, *ids = NULL, *mod = NULL, *payload = NULL,
                         *part = NULL, *rows = NULL, *frames = NULL;
    for (uint32_t k = 0; k < o->via.map.size; k++) {
        const msgpack_object *kk = &o->via.map.ptr[k].key, *v = &o->via.map.ptr[k].val;
        if (kk->type != MSGPACK_OBJECT_STR) return bad(d, key, "has a key that is not a string");
        const msgpack_object **slot = key_is(kk, "t")         ? &t
                                      : key_is(kk, "text")    ? &text
                                      : key_is(kk, "ids")     ? &ids
                                      : key_is(kk, "mod")     ? &mod
                                      : key_is(kk, "payload") ? &payload
                                      : key_is(kk, "part")    ? &part
                                      : key_is(kk, "n_rows")  ? &rows
                                      : key_is(kk, "frames")  ? &frames
                                                              : NULL;
        if (!slot) continue; /* unknown keys: skipped */
        if (*slot) return bad(d, key, "has a duplicate key");
        *slot = v;
    }
    const char *kind;
    int rc;
    if (!t) return bad(d, key, "has no 't' (text, ids or media)");
    if ((rc = get_str(d, t, key, 16, 0, 1, &kind, NULL))) return rc;
    if (!strcmp(kind, "text")) {
        s->kind = AM_SEG_TEXT;
        if (!text) return bad(d, key, "(text) has no 'text'");
        return get_str(d, text, key, AM_PROTO_MAX_TEXT_BYTES, 0, 0, &s->text, &s->text_len);
    }
    if (!strcmp(kind, "ids")) {
        s->kind = AM_SEG_IDS;
        if (!ids) return bad(d, key, "(ids) has no 'ids'");
        return get_ids(d, ids, key, &s->ids, &s->n_ids);
    }
    if (strcmp(kind, "media"))
        return bad(d, key, "has an unknown kind 't' (want text, ids or media)");
    s->kind = AM_SEG_MEDIA;
    if (!mod) return bad(d, key, "(media) has no 'mod'");
    if ((rc = get_modality(d, mod, key, &s->modality))) return rc;
    if (!payload == !part) return bad(d, key, "(media) needs exactly one of 'payload' and 'part'");
    if (payload && (rc = get_u32(d, payload, key, 0, AM_PROTO_MAX_PAYLOADS - 1, &s->payload)))
        return rc;
    if (part && (rc = get_u32(d, part, key, 0, AM_PROTO_MAX_SEGMENTS, &s->part))) return rc;
    if (rows && (rc = get_u32(d, rows, key, 0, AM_PROTO_MAX_ROWS, &s->n_rows))) return rc;
    if (frames && (rc = get_u32(d, frames, key, 1, AM_PROTO_MAX_FRAMES_PER_VIDEO, &s->frames)))
        return rc;
    return 0;
}

/* One entry of a HEALTH answer's 'workers': a map of known keys (others skipped). */
static int dec_worker(dec *d, const msgpack_object *o, uint32_t i, am_msg_worker *w) {
    char key[32];
    snprintf(key, sizeof key, "workers[%u]", i);
    if (o->type != MSGPACK_OBJECT_MAP) return bad(d, key, "is not a map");
    int rc = 0;
    for (uint32_t k = 0; k < o->via.map.size && !rc; k++) {
        const msgpack_object *kk = &o->via.map.ptr[k].key, *v = &o->via.map.ptr[k].val;
        uint64_t u = 0;
        if (kk->type != MSGPACK_OBJECT_STR) return bad(d, key, "has a key that is not a string");
        if (key_is(kk, "role")) {
            const char *s;
            if ((rc = get_str(d, v, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &s, NULL))) break;
            if (!strcmp(s, "shard"))
                w->role = AM_ROLE_SHARD;
            else if (strcmp(s, "encoder"))
                rc = bad(d, key, "has a role neither 'encoder' nor 'shard'");
        } else if (key_is(kk, "name")) {
            rc = get_str(d, v, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &w->name, NULL);
        } else if (key_is(kk, "model")) {
            rc = get_str(d, v, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &w->model, NULL);
        } else if (key_is(kk, "preemptions")) {
            rc = get_uint(d, v, key, 0, UINT64_MAX, &w->preemptions);
        } else {
            uint32_t *dst = key_is(kk, "mods")       ? &w->mods
                            : key_is(kk, "load")     ? &w->load
                            : key_is(kk, "capacity") ? &w->capacity
                            : key_is(kk, "tp")       ? &w->tp
                            : key_is(kk, "kv_free")  ? &w->kv_free
                            : key_is(kk, "kv_total") ? &w->kv_total
                                                     : NULL;
            if (dst && !(rc = get_uint(d, v, key, 0, UINT32_MAX, &u))) *dst = (uint32_t)u;
        }
    }
    if (!rc && (!w->name || !w->model)) rc = bad(d, key, "lacks 'name' or 'model'");
    return rc;
}

/* A per-modality array of AM_MOD_COUNT unsigned counters. */
static int dec_mod_counts(dec *d, const msgpack_object *v, const char *key, uint64_t *out) {
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != AM_MOD_COUNT)
        return bad(d, key, "is not an array of one counter per modality");
    int rc = 0;
    for (uint32_t k = 0; k < AM_MOD_COUNT && !rc; k++)
        rc = get_uint(d, &v->via.array.ptr[k], key, 0, UINT64_MAX, &out[k]);
    return rc;
}

static int dec_field(dec *d, int f, const msgpack_object *v) {
    am_msg *m = d->m;
    const char *key = fields[f].key;
    uint64_t u = 0;
    int64_t i = 0;
    int rc = 0;
    switch (f) {
    case F_ID: rc = get_uint(d, v, key, m->cmd == AM_CMD_ERROR ? 0 : 1, UINT64_MAX, &m->id); break;
    case F_PART: rc = get_u32(d, v, key, 0, AM_PROTO_MAX_SEGMENTS, &m->part); break;
    case F_ATTEMPT: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->attempt); break;
    case F_ROLE: {
        const char *s;
        if ((rc = get_str(d, v, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &s, NULL))) break;
        if (!strcmp(s, "encoder"))
            m->role = AM_ROLE_ENCODER;
        else if (!strcmp(s, "shard"))
            m->role = AM_ROLE_SHARD;
        else
            rc = bad(d, key, "is neither 'encoder' nor 'shard'");
        break;
    }
    case F_NAME: rc = get_str(d, v, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &m->name, NULL); break;
    case F_MODEL: rc = get_str(d, v, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &m->model, NULL); break;
    case F_FP: rc = get_str(d, v, key, AM_PROTO_MAX_NAME_BYTES, 0, 1, &m->fingerprint, NULL); break;
    case F_CAPACITY: rc = get_u32(d, v, key, 1, AM_PROTO_MAX_CAPACITY, &m->capacity); break;
    case F_OUT_DIM: rc = get_u32(d, v, key, 1, AM_PROTO_MAX_DIM, &m->out_dim); break;
    case F_TP: rc = get_u32(d, v, key, 1, 4096, &m->tp_size); break;
    case F_MODALITIES:
        if (v->type != MSGPACK_OBJECT_ARRAY) return bad(d, key, "is not an array");
        if (v->via.array.size < 1 || v->via.array.size > AM_PROTO_MAX_MODALITIES)
            return am_err_set(AM_ERANGE, "%s: field '%s' has %u entries (want 1..%d)", d->where,
                              key, v->via.array.size, AM_PROTO_MAX_MODALITIES);
        for (uint32_t k = 0; k < v->via.array.size && !rc; k++) {
            rc = get_modality(d, &v->via.array.ptr[k], key, &m->modalities[k]);
            for (uint32_t j = 0; j < k && !rc; j++)
                if (m->modalities[j] == m->modalities[k])
                    rc = bad(d, key, "names a modality twice");
        }
        m->n_modalities = v->via.array.size;
        break;
    case F_LOAD: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->load); break;
    case F_MODALITY: rc = get_modality(d, v, key, &m->modality); break;
    case F_FRAMES: rc = get_u32(d, v, key, 1, AM_PROTO_MAX_FRAMES_PER_VIDEO, &m->frames); break;
    case F_N_ROWS: rc = get_u32(d, v, key, 1, AM_PROTO_MAX_ROWS, &m->n_rows); break;
    case F_DIM: rc = get_u32(d, v, key, 1, AM_PROTO_MAX_DIM, &m->dim); break;
    case F_ENCODE_US: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->encode_us); break;
    case F_SEGMENTS:
        if (v->type != MSGPACK_OBJECT_ARRAY) return bad(d, key, "is not an array");
        if (v->via.array.size < 1 || v->via.array.size > AM_PROTO_MAX_SEGMENTS)
            return am_err_set(AM_ERANGE, "%s: field '%s' has %u entries (want 1..%d)", d->where,
                              key, v->via.array.size, AM_PROTO_MAX_SEGMENTS);
        m->n_segs = v->via.array.size;
        if (!(m->segs = arena_alloc(m, m->n_segs * sizeof *m->segs)))
            return am_err_set(AM_ENOMEM, "out of memory");
        memset(m->segs, 0, m->n_segs * sizeof *m->segs);
        for (uint32_t k = 0; k < m->n_segs && !rc; k++)
            rc = dec_segment(d, &v->via.array.ptr[k], k, &m->segs[k]);
        break;
    case F_MAX_TOKENS: rc = get_u32(d, v, key, 1, AM_PROTO_MAX_TOKENS, &m->max_tokens); break;
    case F_TEMPERATURE: rc = get_float(d, v, key, 0.0, 100.0, &m->temperature); break;
    case F_TOP_P:
        rc = get_float(d, v, key, 0.0, 1.0, &m->top_p);
        if (!rc && m->top_p <= 0.0f)
            rc = am_err_set(AM_ERANGE, "%s: field 'top_p' must be > 0", d->where);
        break;
    case F_TOP_K: rc = get_int(d, v, key, 0, INT32_MAX, &i), m->top_k = (int32_t)i; break;
    case F_REP_PENALTY:
        rc = get_float(d, v, key, 0.0, 100.0, &m->repetition_penalty);
        if (!rc && m->repetition_penalty <= 0.0f)
            rc = am_err_set(AM_ERANGE, "%s: field 'rep_penalty' must be > 0", d->where);
        break;
    case F_SEED: rc = get_uint(d, v, key, 0, UINT64_MAX, &m->seed); break;
    case F_STOP:
        if (v->type != MSGPACK_OBJECT_ARRAY) return bad(d, key, "is not an array");
        if (v->via.array.size > AM_PROTO_MAX_STOP)
            return am_err_set(AM_ERANGE, "%s: %u stop strings (at most %d)", d->where,
                              v->via.array.size, AM_PROTO_MAX_STOP);
        for (uint32_t k = 0; k < v->via.array.size && !rc; k++) {
            uint32_t n;
            rc = get_str(d, &v->via.array.ptr[k], key, AM_PROTO_MAX_STOP_BYTES, 0, 1, &m->stop[k],
                         &n);
            if (!rc && !n) rc = bad(d, key, "holds an empty stop string");
        }
        m->n_stop = v->via.array.size;
        break;
    case F_DEADLINE: rc = get_u32(d, v, key, 0, AM_PROTO_MAX_DEADLINE_MS, &m->deadline_ms); break;
    case F_BOS:
        if (v->type != MSGPACK_OBJECT_BOOLEAN) return bad(d, key, "is not a boolean");
        m->add_bos = v->via.boolean ? 1 : 0;
        break;
    case F_IDS: rc = get_ids(d, v, key, &m->ids, &m->n_ids); break;
    case F_TEXT:
        rc = get_str(d, v, key, AM_PROTO_MAX_TEXT_BYTES, 1, 0, &m->text, &m->text_len);
        break;
    case F_FINISH: {
        const char *s;
        if ((rc = get_str(d, v, key, 16, 0, 1, &s, NULL))) break;
        int found = -1;
        for (int k = 0; k <= AM_FIN_CANCELLED; k++)
            if (!strcmp(s, am_fin_name(k))) found = k;
        if (found < 0)
            rc = bad(d, key, "is not one of '', length, eos, stop, cancelled");
        else
            m->finish = (uint8_t)found;
        break;
    }
    case F_PROMPT_TOKENS:
        rc = get_uint(d, v, key, 0, UINT32_MAX, &u), m->prompt_tokens = (uint32_t)u;
        break;
    case F_COMPLETION_TOKENS:
        rc = get_uint(d, v, key, 0, UINT32_MAX, &u), m->completion_tokens = (uint32_t)u;
        break;
    case F_CODE: rc = get_int(d, v, key, INT32_MIN, INT32_MAX, &i), m->code = (int32_t)i; break;
    case F_MESSAGE:
        rc = get_str(d, v, key, AM_PROTO_MAX_MESSAGE_BYTES, 1, 1, &m->message, NULL);
        break;
    case F_HEALTHY:
        if (v->type != MSGPACK_OBJECT_BOOLEAN) return bad(d, key, "is not a boolean");
        m->healthy = v->via.boolean ? 1 : 0;
        break;
    case F_SHARDS: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->n_shards); break;
    case F_ENCODERS: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->n_encoders); break;
    case F_ACTIVE: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->n_active); break;
    case F_IGNORE_EOS:
        if (v->type != MSGPACK_OBJECT_BOOLEAN) return bad(d, key, "is not a boolean");
        m->ignore_eos = v->via.boolean ? 1 : 0;
        break;
    case F_DRAIN:
        if (v->type != MSGPACK_OBJECT_BOOLEAN) return bad(d, key, "is not a boolean");
        m->drain = v->via.boolean ? 1 : 0;
        break;
    case F_QUEUE_US: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->queue_us); break;
    case F_KV_FREE: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->kv_free); break;
    case F_KV_TOTAL: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->kv_total); break;
    case F_PREEMPT: rc = get_uint(d, v, key, 0, UINT64_MAX, &m->preemptions); break;
    case F_DETAIL:
        if (v->type != MSGPACK_OBJECT_BOOLEAN) return bad(d, key, "is not a boolean");
        m->detail = v->via.boolean ? 1 : 0;
        break;
    case F_RUNNING: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->n_running); break;
    case F_WAITING: rc = get_u32(d, v, key, 0, UINT32_MAX, &m->n_waiting); break;
    case F_ENC_JOBS: rc = dec_mod_counts(d, v, key, m->enc_jobs); break;
    case F_ENC_US: rc = dec_mod_counts(d, v, key, m->enc_us); break;
    case F_WORKERS:
        if (v->type != MSGPACK_OBJECT_ARRAY) return bad(d, key, "is not an array");
        if (v->via.array.size > AM_PROTO_MAX_WORKERS)
            return am_err_set(AM_ERANGE, "%s: field '%s' has %u entries (at most %d)", d->where,
                              key, v->via.array.size, AM_PROTO_MAX_WORKERS);
        m->n_workers = v->via.array.size;
        if (m->n_workers && !(m->workers = arena_alloc(m, m->n_workers * sizeof *m->workers)))
            return am_err_set(AM_ENOMEM, "out of memory");
        if (m->n_workers) memset(m->workers, 0, m->n_workers * sizeof *m->workers);
        for (uint32_t k = 0; k < m->n_workers && !rc; k++)
            rc = dec_worker(d, &v->via.array.ptr[k], k, &m->workers[k]);
        break;
    default: break;
    }
    return rc;
}

/* Cross-field checks once every field is in. */
static int dec_check(dec *d, const am_bytes *payloads, size_t n_payloads) {
    am_msg *m = d->m;
    if (m->cmd == AM_CMD_READY && m->role == AM_ROLE_ENCODER && m->n_modalities == 0)
        return am_err_set(AM_EFORMAT, "READY: an encoder must list its 'modalities'");
    if (m->cmd == AM_CMD_READY && !m->tp_size) m->tp_size = 1;
    uint32_t want = am_msg_expected_payloads(m);
    if (n_payloads != want)
        return am_err_set(AM_EFORMAT, "%s: %zu payload frames (the body implies %u)", d->where,
                          n_payloads, want);
    for (size_t k = 0; k < n_payloads; k++)
        if (payloads[k].len > AM_PROTO_MAX_PAYLOAD_BYTES)
            return am_err_set(AM_ERANGE, "%s: payload %zu has %zu bytes (at most %zu)", d->where, k,
                              payloads[k].len, AM_PROTO_MAX_PAYLOAD_BYTES);
    if (m->cmd == AM_CMD_ENCODE && payloads[0].len == 0)
        return am_err_set(AM_EFORMAT, "ENCODE: the media payload is empty");
    if (m->cmd == AM_CMD_EMBED && payloads[0].len != (size_t)m->n_rows * m->dim * sizeof(float))
        return am_err_set(AM_EFORMAT, "EMBED: payload has %zu bytes, %u rows x %u f32 need %zu",
                          payloads[0].len, m->n_rows, m->dim,
                          (size_t)m->n_rows * m->dim * sizeof(float));
    if (m->cmd == AM_CMD_GENERATE) {
        uint32_t seen = 0; /* bit per payload index (AM_PROTO_MAX_PAYLOADS <= 32) */
        for (uint32_t k = 0; k < m->n_segs; k++) {
            const am_msg_seg *s = &m->segs[k];
            if (s->kind != AM_SEG_MEDIA || s->payload == UINT32_MAX) continue;
            if (s->payload >= want || (seen & (1u << s->payload)))
                return am_err_set(
                    AM_EFORMAT,
                    "GENERATE: segments[%u] names payload %u (payloads are 0..%u, each once)", k,
                    s->payload, want ? want - 1 : 0);
            seen |= 1u << s->payload;
            if (payloads[s->payload].len == 0)
                return am_err_set(AM_EFORMAT, "GENERATE: the payload of segments[%u] is empty", k);
        }
        if (m->n_stop > AM_PROTO_MAX_STOP)
            return am_err_set(AM_ERANGE, "GENERATE: too many stop strings");
    }
    for (uint32_t k = 0; k < n_payloads; k++)
        m->payloads[k] = payloads[k];
    m->n_payloads = (uint32_t)n_payloads;
    return 0;
}

int am_msg_decode(const void *hdr, size_t hdr_len, const void *body, size_t body_len,
                  const am_bytes *payloads, size_t n_payloads, am_msg *out) {
    int cmd, rc;
    memset(out, 0, sizeof *out);
    if ((rc = am_proto_check_header(hdr, hdr_len, &cmd))) return rc;
    am_msg_init(out, cmd);
    dec d = {out, am_cmd_name(cmd)};
    if (body_len > AM_PROTO_MAX_BODY_BYTES)
        return am_err_set(AM_ERANGE, "%s: body of %zu bytes exceeds the limit of %zu", d.where,
                          body_len, AM_PROTO_MAX_BODY_BYTES);
    if (n_payloads > AM_PROTO_MAX_PAYLOADS)
        return am_err_set(AM_ERANGE, "%s: %zu payload frames (at most %d)", d.where, n_payloads,
                          AM_PROTO_MAX_PAYLOADS);
    scan_st s = {(const uint8_t *)body, (const uint8_t *)body + body_len, 0};
    if (!body_len || scan_obj(&s, 0) || s.p != s.end)
        return am_err_set(AM_EFORMAT,
                          "%s: the body is not one well-formed msgpack object within the limits "
                          "(depth %d, %d objects, no ext types)",
                          d.where, AM_PROTO_MAX_DEPTH, AM_PROTO_MAX_OBJECTS);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, body, body_len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != body_len) {
        rc = am_err_set(ur == MSGPACK_UNPACK_NOMEM_ERROR ? AM_ENOMEM : AM_EFORMAT,
                        "%s: msgpack body did not unpack (%d)", d.where, (int)ur);
        goto done;
    }
    const msgpack_object *root = &up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        rc = am_err_set(AM_EFORMAT, "%s: the body is not a msgpack map", d.where);
        goto done;
    }
    uint64_t seen = 0;
    for (uint32_t k = 0; k < root->via.map.size && !rc; k++) {
        const msgpack_object *key = &root->via.map.ptr[k].key;
        if (key->type != MSGPACK_OBJECT_STR) {
            rc = am_err_set(AM_EFORMAT, "%s: body key %u is not a string", d.where, k);
            break;
        }
        int f = -1;
        for (int j = 0; j < F_COUNT; j++)
            if ((fields[j].cmds & C(cmd)) && key_is(key, fields[j].key)) f = j;
        if (f < 0) continue; /* unknown field: skipped (PROTOCOL.md, "Compatibility") */
        if (seen & (1ull << f)) {
            rc = am_err_set(AM_EFORMAT, "%s: field '%s' appears twice", d.where, fields[f].key);
            break;
        }
        seen |= 1ull << f;
        rc = dec_field(&d, f, &root->via.map.ptr[k].val);
    }
    for (int f = 0; f < F_COUNT && !rc; f++)
        if ((fields[f].required & C(cmd)) && !(seen & (1ull << f)))
            rc = am_err_set(AM_EFORMAT, "%s: required field '%s' is missing", d.where,
                            fields[f].key);
    if (!rc) rc = dec_check(&d, payloads, n_payloads);
done:
    msgpack_unpacked_destroy(&up);
    if (rc) am_msg_fini(out);
    return rc;
}

am_wire_err am_wire_code(int rc) {
    switch (rc) {
    case AM_EINVAL:
    case AM_EFORMAT:
    case AM_ESHAPE:
    case AM_EUNSUPPORTED: return AM_WERR_BAD_REQUEST;
    case AM_ERANGE: return AM_WERR_TOO_LARGE;
    case AM_ENOTFOUND: return AM_WERR_NOT_FOUND;
    default: return AM_WERR_INTERNAL;
    }
}
