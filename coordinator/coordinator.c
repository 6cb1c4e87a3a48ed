/* coordinator/coordinator.c - the broker loop, worker registry, request table and dispatch.
 *
 * Majordomo's structure (services, waiting workers, expiry times) with the
 * two things the reference broker gets wrong done right: nothing asserts on
 * what a peer sends, and the in-flight work of a dead worker is sent again.
 * Request ids on the worker side are the coordinator's own: slot index in the
 * low 16 bits, a sequence number above, so a reply for a slot that has been
 * reused is recognised as stale.
 */
#include "coordinator/coordinator.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/modality.h"
#include "proto/curve.h"
#include "proto/transport.h"

#include <signal.h>
#include <stdarg.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define SLOT_BITS 16
#define SLOT_MASK ((1u << SLOT_BITS) - 1)

typedef struct worker {
    int used;
    uint8_t ident[AM_WIRE_MAX_ROUTING_BYTES];
    size_t ident_len;
    uint8_t role;
    uint32_t mods; /* bit per am_modality */
    char name[AM_PROTO_MAX_NAME_BYTES + 1], model[AM_PROTO_MAX_NAME_BYTES + 1],
        fp[AM_PROTO_MAX_NAME_BYTES + 1];
    uint32_t capacity, out_dim, tp_size, in_flight;
    int draining; /* said so in a HEARTBEAT: gets nothing new, ends with DISCONNECT */
    int64_t expiry_ms, last_sent_ms;
    uint32_t kv_free, kv_total; /* a shard leader's last report (HEARTBEAT) */
    uint64_t preemptions;
    char key[AM_CURVE_NAME_MAX + 1]; /* its CURVE key's name ("" without keys) */
} worker;

enum { P_QUEUED = 1, P_ASSIGNED, P_DONE };
enum { R_GENERATE = 1, R_ENCODE };

typedef struct part {
    uint8_t modality, state;
    uint32_t frames, attempt, n_rows, dim;
    int worker;
    int64_t sent_us; /* when its ENCODE went out (encoder latency per modality) */
    zmq_msg_t media; /* kept until the rows arrive, for retries */
    int has_media;
    zmq_msg_t embed; /* rows that arrived before the GENERATE went out */
    int has_embed;
} part;

typedef struct request {
    uint64_t id; /* 0: free slot */
    uint8_t kind;
    uint8_t client[AM_WIRE_MAX_ROUTING_BYTES];
    size_t client_len;
    uint64_t client_rid;
    am_msg gen; /* GENERATE as decoded (its segments; payload pointers unused) */
    int leader; /* worker index, -1 until dispatched */
    int n_parts;
    part parts[AM_PROTO_MAX_PAYLOADS];
    int64_t deadline_ms;
    int64_t unserved_since_ms; /* 0: some live worker can take what it waits for */
    int group_attempts;        /* groups lost before its first token */
    uint32_t n_tokens;
    int64_t admitted_us, dispatched_us; /* queue time, reported on the final TOKEN */
} request;

/* A ring FIFO of (request id, part) references; stale entries are skipped on pop. */
typedef struct qent {
    uint64_t id;
    uint32_t part;
} qent;
typedef struct queue {
    qent *e;
    size_t head, tail, cap; /* tail = number of entries */
} queue;

/* One client's queued encode jobs of one modality, and its deficit (deficit round robin,
 * M. Shreedhar and G. Varghese, SIGCOMM 1995), in bytes of media. */
typedef struct flow {
    uint8_t client[AM_WIRE_MAX_ROUTING_BYTES];
    size_t client_len;
    queue q;
    int64_t deficit;
} flow;

/* The encode jobs of one modality: a flow per client with jobs queued, served in turn. */
typedef struct drr {
    flow *f;
    int n, cap, cur; /* flows, room, whose turn it is */
} drr;

struct am_coord {
    void *zctx, *sock;
    char endpoint[256];
    am_coord_opts o;
    worker workers[AM_COORD_MAX_WORKERS];
    request *reqs;
    uint32_t seq;
    drr encq[AM_MOD_COUNT]; /* encode jobs, fair across clients by media bytes */
    queue genq;
    atomic_int stop;
    atomic_int drain;      /* am_coord_drain was called */
    int64_t drain_from_ms; /* when the loop saw it (0: not draining) */
    am_coord_stats st;
    int64_t next_tick_ms;
    /* Models some shard group has registered with (a GENERATE for another is 404). */
    char models[AM_COORD_MAX_MODELS][AM_PROTO_MAX_NAME_BYTES + 1];
    int n_models;
    uint64_t enc_jobs[AM_MOD_COUNT], enc_us[AM_MOD_COUNT]; /* encodes answered, their latency */
    /* CURVE (secure): the ZAP handler thread, the socket monitor that reports failed
     * handshakes, and the rate limit of this thread's refusal log lines. */
    int secure;
    am_zap *zap;
    void *mon;
    am_log_limit lim;
};

/* Logs a refusal, rate-limited per offender (proto/curve.h am_log_limit): who names it
 * (NULL: the message itself). A peer without a key retries every 100 ms: its refusals
 * must neither flood the log nor hide another's. */
static void log_refusal(am_coord *c, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void log_refusal(am_coord *c, const char *who, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int64_t dropped;
    if (!am_log_limit_take(&c->lim, am_now_ms(), who ? who : msg, &dropped)) return;
    AM_LOGW("coordinator: %s", msg);
    if (dropped)
        AM_LOGW("coordinator: and %lld more refusals in the %d s before (not logged)",
                (long long)dropped, AM_CURVE_LOG_WINDOW_MS / 1000);
}

/* ---------------------------------------------------------------- queues */

static int q_push(queue *q, uint64_t id, uint32_t p, int front) {
    if (q->tail == q->cap) { /* tail counts entries; head is the ring's start */
        size_t cap = q->cap ? 2 * q->cap : 64;
        qent *e = am_malloc(cap * sizeof *e);
        if (!e) return AM_ENOMEM;
        for (size_t i = 0; i < q->tail; i++)
            e[i] = q->e[(q->head + i) % q->cap];
        am_free(q->e);
        q->e = e, q->cap = cap, q->head = 0;
    }
    if (front) {
        q->head = (q->head + q->cap - 1) % q->cap;
        q->e[q->head] = (qent){id, p};
    } else {
        q->e[(q->head + q->tail) % q->cap] = (qent){id, p};
    }
    q->tail++;
    return 0;
}

static int q_pop(queue *q, qent *out) {
    if (!q->tail) return 0;
    *out = q->e[q->head];
    q->head = (q->head + 1) % q->cap;
    q->tail--;
    return 1;
}

/* q's head without taking it. */
static int q_peek(const queue *q, qent *out) {
    if (!q->tail) return 0;
    *out = q->e[q->head];
    return 1;
}

/* ---------------------------------------------------------------- helpers */

static request *req_get(am_coord *c, uint64_t id) {
    uint32_t slot = (uint32_t)(id & SLOT_MASK);
    if (!id || slot >= (uint32_t)c->o.max_requests) return NULL;
    request *r = &c->reqs[slot];
    return r->id == id ? r : NULL;
}

static int worker_find(am_coord *c, const void *ident, size_t len) {
    for (int i = 0; i < AM_COORD_MAX_WORKERS; i++)
        if (c->workers[i].used && c->workers[i].ident_len == len &&
            !memcmp(c->workers[i].ident, ident, len))
            return i;
    return -1;
}

static int send_to(am_coord *c, const void *ident, size_t len, const am_msg *m, zmq_msg_t *pay,
                   int n_pay) {
    int rc = am_wire_send(c->sock, ident, len, m, pay, n_pay, ZMQ_DONTWAIT);
    if (!rc) c->st.msgs_out++;
    return rc;
}

static int send_worker(am_coord *c, int w, const am_msg *m, zmq_msg_t *pay, int n_pay) {
    worker *k = &c->workers[w];
    int rc = send_to(c, k->ident, k->ident_len, m, pay, n_pay);
    if (!rc) k->last_sent_ms = am_now_ms();
    return rc;
}

static void send_simple(am_coord *c, const void *ident, size_t len, int cmd, uint64_t id,
                        int32_t code, const char *message) {
    am_msg m;
    am_msg_init(&m, cmd);
    m.id = id;
    m.code = code;
    m.message = message;
    (void)send_to(c, ident, len, &m, NULL, 0);
}

static void worker_remove(am_coord *c, int w, const char *why);

/* ---------------------------------------------------------------- request end */

static void part_release(part *p) {
    if (p->has_media) zmq_msg_close(&p->media);
    if (p->has_embed) zmq_msg_close(&p->embed);
    p->has_media = p->has_embed = 0;
}

/* Frees the slot; every path that ends a request comes through here once. */
static void req_free(am_coord *c, request *r) {
    for (int i = 0; i < r->n_parts; i++) {
        part *p = &r->parts[i];
        if (p->state == P_ASSIGNED && p->worker >= 0 && c->workers[p->worker].used &&
            c->workers[p->worker].in_flight > 0)
            c->workers[p->worker].in_flight--; /* its late EMBED will be discarded */
        part_release(p);
    }
    if (r->leader >= 0 && c->workers[r->leader].used && c->workers[r->leader].in_flight > 0)
        c->workers[r->leader].in_flight--;
    am_msg_fini(&r->gen);
    memset(r, 0, sizeof *r);
    r->leader = -1;
    c->st.n_active--;
}

/* Ends r with an ERROR to its client (and a CANCEL to its leader). */
static void req_fail(am_coord *c, request *r, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void req_fail(am_coord *c, request *r, int32_t code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->leader >= 0 && c->workers[r->leader].used) {
        am_msg m;
        am_msg_init(&m, AM_CMD_CANCEL);
        m.id = r->id;
        (void)send_worker(c, r->leader, &m, NULL, 0);
    }
    AM_LOGI("coordinator: request %llu (client id %llu) failed: %d %s", (unsigned long long)r->id,
            (unsigned long long)r->client_rid, code, msg);
    send_simple(c, r->client, r->client_len, AM_CMD_ERROR, r->client_rid, code, msg);
    c->st.requests_failed++;
    req_free(c, r);
}

/* A send to a client failed: the request cannot reach its end message there. */
static void client_send_failed(am_coord *c, request *r, int rc) {
    if (rc == AM_EAGAIN) {
        c->st.client_too_slow++;
        AM_LOGW("coordinator: client of request %llu is at its high-water mark: the request ends "
                "with an error",
                (unsigned long long)r->client_rid);
        req_fail(c, r, AM_WERR_OVERLOADED,
                 "client too slow: its queue reached the high-water mark");
    } else {
        c->st.client_gone++;
        AM_LOGI("coordinator: client of request %llu is gone; cancelling",
                (unsigned long long)r->client_rid);
        req_fail(c, r, AM_WERR_UNAVAILABLE, "client disconnected");
    }
}

/* ---------------------------------------------------------------- fair encode queues */

/* Queues part `part` of r in its client's flow (front: a job going back, first in line). */
static int enc_push(am_coord *c, const request *r, uint32_t pi, int front) {
    drr *d = &c->encq[r->parts[pi].modality];
    int i = 0;
    while (i < d->n && (d->f[i].client_len != r->client_len ||
                        memcmp(d->f[i].client, r->client, r->client_len)))
        i++;
    if (i == d->n) {
        if (d->n == d->cap) {
            int cap = d->cap ? 2 * d->cap : 16;
            flow *nf = am_realloc(d->f, (size_t)cap * sizeof *nf);
            if (!nf) return AM_ENOMEM;
            d->f = nf, d->cap = cap;
        }
        memset(&d->f[i], 0, sizeof d->f[i]);
        memcpy(d->f[i].client, r->client, r->client_len);
        d->f[i].client_len = r->client_len;
        d->n++;
    }
    return q_push(&d->f[i].q, r->id, pi, front);
}

/* The media bytes of a queued job: its cost. */
static int64_t enc_cost(const request *r, uint32_t pi) {
    const part *p = &r->parts[pi];
    int64_t n = p->has_media ? (int64_t)zmq_msg_size((zmq_msg_t *)&p->media) : 0;
    return n > 0 ? n : 1;
}

/* Deficit round robin: the next job of modality mod (in *e, its flow in *fi), or 0 when
 * none is queued. A flow whose deficit covers its head job's cost is served; when none
 * can be, every flow gets the quanta of the rounds it would take the first of them to
 * afford its head (so a round costs O(flows), however big the media). Stale entries
 * (ended requests, parts no longer queued) are dropped on the way; an empty flow leaves
 * the table with its deficit. */
static int enc_next(am_coord *c, int mod, qent *e, int *fi) {
    drr *d = &c->encq[mod];
    for (;;) {
        int64_t rounds = INT64_MAX;
        for (int k = 0; k < d->n; k++) {
            int i = (d->cur + k) % d->n;
            flow *f = &d->f[i];
            qent h;
            const request *r = NULL;
            while (q_peek(&f->q, &h) &&
                   (!(r = req_get(c, h.id)) || h.part >= (uint32_t)r->n_parts ||
                    r->parts[h.part].state != P_QUEUED || r->parts[h.part].modality != mod))
                q_pop(&f->q, &h), r = NULL;
            if (!r) continue;
            const int64_t cost = enc_cost(r, h.part);
            if (f->deficit >= cost) {
                d->cur = i;
                *e = h;
                *fi = i;
                return 1;
            }
            const int64_t need =
                (cost - f->deficit + AM_COORD_DRR_QUANTUM_BYTES - 1) / AM_COORD_DRR_QUANTUM_BYTES;
            if (need < rounds) rounds = need;
        }
        /* Drop the empty flows (keeping the turn order of the others). */
        for (int i = 0; i < d->n;) {
            if (d->f[i].q.tail) {
                i++;
                continue;
            }
            am_free(d->f[i].q.e);
            memmove(&d->f[i], &d->f[i + 1], (size_t)(d->n - i - 1) * sizeof *d->f);
            d->n--;
            if (d->cur > i) d->cur--;
        }
        if (d->cur >= d->n) d->cur = 0;
        if (rounds == INT64_MAX) return 0; /* nothing queued */
        for (int i = 0; i < d->n; i++)
            d->f[i].deficit += rounds * AM_COORD_DRR_QUANTUM_BYTES;
    }
}

/* ---------------------------------------------------------------- dispatch */

static int model_matches(const request *r, const worker *k) {
    const char *want = r->kind == R_GENERATE ? r->gen.model : NULL;
    return !want || !want[0] || !strcmp(want, k->model);
}

/* The least-loaded live worker of a role (and modality) with room; -1 if none. */
static int pick(am_coord *c, int role, int modality, const request *r) {
    int best = -1;
    double best_load = 2.0;
    for (int i = 0; i < AM_COORD_MAX_WORKERS; i++) {
        worker *k = &c->workers[i];
        if (!k->used || k->draining || k->role != role || k->in_flight >= k->capacity) continue;
        if (modality >= 0 && !(k->mods & (1u << modality))) continue;
        if (!model_matches(r, k)) continue;
        if (r->kind == R_GENERATE && role == AM_ROLE_ENCODER && r->leader >= 0 &&
            c->workers[r->leader].out_dim != k->out_dim)
            continue; /* rows must fit the leader's model width */
        double load = (double)k->in_flight / k->capacity;
        if (load < best_load) best = i, best_load = load;
    }
    return best;
}

static int send_encode(am_coord *c, request *r, int pi, int w) {
    part *p = &r->parts[pi];
    am_msg m;
    am_msg_init(&m, AM_CMD_ENCODE);
    m.id = r->id;
    m.part = (uint32_t)pi;
    m.attempt = p->attempt;
    m.modality = p->modality;
    m.frames = p->frames;
    zmq_msg_t pay;
    zmq_msg_init(&pay);
    zmq_msg_copy(&pay, &p->media); /* shares the buffer: no byte is copied */
    return send_worker(c, w, &m, &pay, 1);
}

static void flush_embed(am_coord *c, request *r, int pi);

static int send_generate(am_coord *c, request *r, int w) {
    am_msg_seg segs[AM_PROTO_MAX_SEGMENTS];
    am_msg m = r->gen;
    m.arena = NULL;
    m.n_payloads = 0;
    m.id = r->id;
    m.deadline_ms = 0;
    uint32_t part_no = 0;
    for (uint32_t i = 0; i < m.n_segs; i++) {
        segs[i] = r->gen.segs[i];
        if (segs[i].kind == AM_SEG_MEDIA) {
            segs[i].part = part_no;
            segs[i].n_rows = r->parts[part_no].state == P_DONE ? r->parts[part_no].n_rows : 0;
            segs[i].payload = UINT32_MAX;
            part_no++;
        }
    }
    m.segs = segs;
    return send_worker(c, w, &m, NULL, 0);
}

static void dispatch(am_coord *c) {
    /* Generation first: a leader that has the prompt prefills its text while the encoders work. */
    queue keep = {0};
    qent e;
    int room = 0;
    for (int i = 0; i < AM_COORD_MAX_WORKERS && !room; i++)
        room = c->workers[i].used && !c->workers[i].draining &&
               c->workers[i].role == AM_ROLE_SHARD &&
               c->workers[i].in_flight < c->workers[i].capacity;
    while (room && q_pop(&c->genq, &e)) {
        request *r = req_get(c, e.id);
        if (!r || r->leader >= 0) continue;
        int w = pick(c, AM_ROLE_SHARD, -1, r);
        if (w < 0) {
            if (q_push(&keep, e.id, 0, 0)) req_fail(c, r, AM_WERR_INTERNAL, "out of memory");
            continue;
        }
        int rc = send_generate(c, r, w);
        if (rc == AM_EAGAIN) {
            c->st.hwm_requeues++;
            if (q_push(&keep, e.id, 0, 0)) req_fail(c, r, AM_WERR_INTERNAL, "out of memory");
            continue;
        }
        if (rc) {
            if (q_push(&keep, e.id, 0, 0)) req_fail(c, r, AM_WERR_INTERNAL, "out of memory");
            worker_remove(c, w, rc == AM_EUNREACH ? "not connected" : am_err_msg());
            continue;
        }
        r->leader = w;
        r->dispatched_us = am_now_us();
        c->workers[w].in_flight++;
        for (int i = 0; i < r->n_parts; i++)
            if (r->parts[i].has_embed) flush_embed(c, r, i);
    }
    while (q_pop(&keep, &e))
        (void)q_push(&c->genq, e.id, 0, 0);
    am_free(keep.e);

    for (int mod = 0; mod < AM_MOD_COUNT; mod++) {
        int fi;
        while (enc_next(c, mod, &e, &fi)) {
            request *r = req_get(c, e.id);
            int w = pick(c, AM_ROLE_ENCODER, mod, r);
            if (w < 0) break; /* it stays first in its flow until a worker frees up */
            int rc = send_encode(c, r, (int)e.part, w);
            if (rc) {
                if (rc == AM_EAGAIN) {
                    c->st.hwm_requeues++;
                    break;
                }
                worker_remove(c, w, rc == AM_EUNREACH ? "not connected" : am_err_msg());
                continue;
            }
            flow *f = &c->encq[mod].f[fi];
            f->deficit -= enc_cost(r, e.part);
            q_pop(&f->q, &e);
            part *p = &r->parts[e.part];
            p->state = P_ASSIGNED;
            p->worker = w;
            p->sent_us = am_now_us();
            c->workers[w].in_flight++;
            c->st.encode_jobs++;
        }
    }
}

/* ---------------------------------------------------------------- workers */

/* r's group died before its first token: queue it for another group, with its parts whose
 * rows went to the dead group encoded again (their media are kept until the request
 * ends). 0, or AM_ENOMEM (then it fails). */
static int regenerate(am_coord *c, request *r) {
    r->group_attempts++;
    c->st.generate_retries++;
    for (int i = 0; i < r->n_parts; i++) {
        part *p = &r->parts[i];
        if (p->state != P_DONE || p->has_embed) continue; /* queued, encoding, or rows kept */
        if (!p->has_media) return AM_ENOMEM;              /* cannot happen: kept above */
        p->state = P_QUEUED;
        p->attempt++;
        if (enc_push(c, r, (uint32_t)i, 1)) return AM_ENOMEM;
    }
    return q_push(&c->genq, r->id, 0, 1);
}

static void worker_remove(am_coord *c, int w, const char *why) {
    worker *k = &c->workers[w];
    if (!k->used) return;
    AM_LOGW("coordinator: %s worker '%s' (%s) removed: %s", am_role_name(k->role), k->name,
            k->model, why);
    k->used = 0; /* first, so nothing below dispatches to it */
    c->st.n_workers--;
    for (uint32_t s = 0; s < (uint32_t)c->o.max_requests; s++) {
        request *r = &c->reqs[s];
        if (!r->id) continue;
        if (r->leader == w) {
            r->leader = -1; /* its in-flight count went with it */
            if (r->n_tokens == 0 && r->group_attempts + 1 < AM_COORD_GENERATE_MAX_ATTEMPTS &&
                !regenerate(c, r)) {
                AM_LOGI("coordinator: request %llu had no token from lost group '%s': it "
                        "runs again on another",
                        (unsigned long long)r->id, k->name);
                continue;
            }
            req_fail(c, r, AM_WERR_UNAVAILABLE, "shard group '%s' lost: %s", k->name, why);
            continue;
        }
        for (int i = 0; i < r->n_parts; i++) {
            part *p = &r->parts[i];
            if (p->state != P_ASSIGNED || p->worker != w) continue;
            p->worker = -1;
            if (p->attempt + 1 >= (uint32_t)c->o.encode_max_attempts) {
                req_fail(c, r, AM_WERR_UNAVAILABLE,
                         "encoding part %d failed on %u workers (last: '%s': %s)", i,
                         p->attempt + 1, k->name, why);
                break;
            }
            p->attempt++;
            p->state = P_QUEUED;
            c->st.encode_retries++;
            (void)enc_push(c, r, (uint32_t)i, 1);
        }
    }
    memset(k, 0, sizeof *k);
}

static int model_known(const am_coord *c, const char *model) {
    for (int i = 0; i < c->n_models; i++)
        if (!strcmp(c->models[i], model)) return 1;
    return 0;
}

static void model_remember(am_coord *c, const char *model) {
    if (model_known(c, model)) return;
    if (c->n_models == AM_COORD_MAX_MODELS) {
        AM_LOGW("coordinator: %d models registered; '%s' is served but a GENERATE naming an "
                "unregistered model waits for it instead of a 404",
                AM_COORD_MAX_MODELS, model);
        return;
    }
    /* model may point into the worker table, never into c->models: copy with bounds. */
    char *dst = c->models[c->n_models++];
    size_t n = strnlen(model, sizeof c->models[0] - 1);
    memcpy(dst, model, n);
    dst[n] = 0;
}

static void on_ready(am_coord *c, const zmq_msg_t *rt, const am_msg *m, const char *key) {
    const void *id = zmq_msg_data((zmq_msg_t *)rt);
    size_t len = zmq_msg_size((zmq_msg_t *)rt);
    char msg[700];
    int w = worker_find(c, id, len);
    if (w >= 0) { /* READY twice on one session is a protocol error (RFC 18) */
        send_simple(c, id, len, AM_CMD_DISCONNECT, 0, 0, "READY on a registered session");
        worker_remove(c, w, "sent READY twice");
        return;
    }
    for (int i = 0; i < AM_COORD_MAX_WORKERS; i++) {
        worker *k = &c->workers[i];
        if (k->used && !strcmp(k->model, m->model) && strcmp(k->fp, m->fingerprint)) {
            snprintf(msg, sizeof msg, "model '%s' fingerprint %s differs from worker '%s' (%s)",
                     m->model, m->fingerprint, k->name, k->fp);
            AM_LOGW("coordinator: refused worker '%s': %s", m->name, msg);
            send_simple(c, id, len, AM_CMD_ERROR, 0, AM_WERR_BAD_REQUEST, msg);
            send_simple(c, id, len, AM_CMD_DISCONNECT, 0, 0, msg);
            return;
        }
    }
    if (key[0]) { /* a key may hold only so many places in the table */
        int n = 0;
        for (int i = 0; i < AM_COORD_MAX_WORKERS; i++)
            n += c->workers[i].used && !strcmp(c->workers[i].key, key);
        if (n >= c->o.max_workers_per_key) {
            snprintf(msg, sizeof msg,
                     "key '%s' has %d workers registered, its limit (--max-workers-per-key)", key,
                     n);
            c->st.key_limit++;
            log_refusal(c, NULL, "refused %s worker '%s' (model %s): %s", am_role_name(m->role),
                        m->name, m->model, msg);
            send_simple(c, id, len, AM_CMD_ERROR, 0, AM_WERR_OVERLOADED, msg);
            send_simple(c, id, len, AM_CMD_DISCONNECT, 0, 0, msg);
            return;
        }
    }
    for (int i = 0; i < AM_COORD_MAX_WORKERS; i++) {
        worker *k = &c->workers[i];
        if (k->used) continue;
        memset(k, 0, sizeof *k);
        snprintf(k->key, sizeof k->key, "%s", key);
        k->used = 1;
        memcpy(k->ident, id, len);
        k->ident_len = len;
        k->role = m->role;
        for (uint32_t j = 0; j < m->n_modalities; j++)
            k->mods |= 1u << m->modalities[j];
        snprintf(k->name, sizeof k->name, "%s", m->name);
        snprintf(k->model, sizeof k->model, "%s", m->model);
        snprintf(k->fp, sizeof k->fp, "%s", m->fingerprint);
        k->capacity = m->capacity;
        k->out_dim = m->out_dim;
        k->tp_size = m->tp_size;
        k->expiry_ms = am_now_ms() + (int64_t)c->o.heartbeat_ms * c->o.liveness;
        k->last_sent_ms = 0; /* heartbeat at once: the worker learns it is registered */
        c->st.n_workers++;
        c->st.workers_registered++;
        if (k->role == AM_ROLE_SHARD) model_remember(c, k->model);
        AM_LOGI("coordinator: %s worker '%s' registered (model %s, capacity %u, out_dim %u%s%s)",
                am_role_name(k->role), k->name, k->model, k->capacity, k->out_dim,
                key[0] ? ", key " : "", key);
        return;
    }
    snprintf(msg, sizeof msg, "the worker table is full (%d workers)", AM_COORD_MAX_WORKERS);
    c->st.table_full++;
    log_refusal(c, NULL, "refused %s worker '%s' (model %s, %s%s): %s", am_role_name(m->role),
                m->name, m->model, key[0] ? "key " : "no key", key, msg);
    send_simple(c, id, len, AM_CMD_ERROR, 0, AM_WERR_OVERLOADED, msg);
    send_simple(c, id, len, AM_CMD_DISCONNECT, 0, 0, msg);
}

static void flush_embed(am_coord *c, request *r, int pi) {
    part *p = &r->parts[pi];
    if (p->dim != c->workers[r->leader].out_dim) {
        req_fail(c, r, AM_WERR_INTERNAL, "part %d has rows of width %u, the model's is %u", pi,
                 p->dim, c->workers[r->leader].out_dim);
        return;
    }
    am_msg m;
    am_msg_init(&m, AM_CMD_EMBED);
    m.id = r->id;
    m.part = (uint32_t)pi;
    m.modality = p->modality;
    m.n_rows = p->n_rows;
    m.dim = p->dim;
    p->has_embed = 0;
    int rc = send_worker(c, r->leader, &m, &p->embed, 1); /* moves the rows: no copy */
    if (rc) {
        int w = r->leader;
        if (rc == AM_EUNREACH)
            worker_remove(c, w, "not connected");
        else
            req_fail(c, r, AM_WERR_OVERLOADED, "shard group '%s' is at its high-water mark",
                     c->workers[w].name);
    }
}

/* 1 when every float of the rows frame is finite. */
static int rows_finite(const zmq_msg_t *rows) {
    const uint8_t *b = zmq_msg_data((zmq_msg_t *)rows);
    size_t n = zmq_msg_size((zmq_msg_t *)rows) / sizeof(float);
    for (size_t i = 0; i < n; i++) {
        float x;
        memcpy(&x, b + i * sizeof x, sizeof x); /* the frame need not be aligned */
        if (!isfinite(x)) return 0;
    }
    return 1;
}

static void on_embed(am_coord *c, int w, am_wire_in *in, const am_msg *m) {
    request *r = req_get(c, m->id);
    part *p = r && m->part < (uint32_t)r->n_parts ? &r->parts[m->part] : NULL;
    if (!p || p->state != P_ASSIGNED || p->worker != w || p->attempt != m->attempt) {
        c->st.stale_replies++;
        return;
    }
    if (!rows_finite(&in->frames[2])) {
        /* A broken or hostile encoder: its jobs (this one included) go to others. */
        c->st.bad_rows++;
        worker_remove(c, w, "returned rows that are not finite (NaN or Inf)");
        return;
    }
    c->workers[w].in_flight--;
    p->state = P_DONE;
    p->worker = -1;
    if (p->modality < AM_MOD_COUNT) {
        c->enc_jobs[p->modality]++;
        c->enc_us[p->modality] += (uint64_t)(am_now_us() - p->sent_us);
    }
    p->n_rows = m->n_rows;
    p->dim = m->dim;
    /* A GENERATE keeps its media until it ends: should its group die before the first
     * token, it runs again on another and its parts are encoded again (worker_remove). */
    if (p->has_media && r->kind == R_ENCODE) zmq_msg_close(&p->media), p->has_media = 0;
    if (r->kind == R_ENCODE) {
        am_msg out;
        am_msg_init(&out, AM_CMD_EMBED);
        out.id = r->client_rid;
        out.part = 0;
        out.modality = p->modality;
        out.n_rows = m->n_rows;
        out.dim = m->dim;
        out.encode_us = m->encode_us;
        zmq_msg_t pay;
        zmq_msg_init(&pay);
        zmq_msg_move(&pay, &in->frames[2]);
        int rc = send_to(c, r->client, r->client_len, &out, &pay, 1);
        if (rc) {
            client_send_failed(c, r, rc);
            return;
        }
        c->st.requests_done++;
        req_free(c, r);
        return;
    }
    if (r->leader >= 0 && c->workers[r->leader].out_dim != m->dim) {
        req_fail(c, r, AM_WERR_INTERNAL,
                 "encoder '%s' returned rows of width %u, the model's is %u", c->workers[w].name,
                 m->dim, c->workers[r->leader].out_dim);
        return;
    }
    zmq_msg_init(&p->embed);
    zmq_msg_move(&p->embed, &in->frames[2]);
    p->has_embed = 1;
    if (r->leader >= 0) flush_embed(c, r, (int)m->part);
}

static void on_token(am_coord *c, int w, const am_msg *m) {
    request *r = req_get(c, m->id);
    if (!r || r->leader != w) {
        c->st.stale_replies++;
        return;
    }
    am_msg out = *m;
    out.arena = NULL;
    out.id = r->client_rid;
    r->n_tokens += m->n_ids;
    if (m->finish != AM_FIN_NONE && r->dispatched_us > r->admitted_us) {
        int64_t q = r->dispatched_us - r->admitted_us;
        out.queue_us = q > UINT32_MAX ? UINT32_MAX : (uint32_t)q;
    }
    int rc = send_to(c, r->client, r->client_len, &out, NULL, 0);
    if (rc) {
        client_send_failed(c, r, rc);
        return;
    }
    if (m->finish != AM_FIN_NONE) {
        if (m->finish == AM_FIN_CANCELLED)
            c->st.requests_cancelled++;
        else
            c->st.requests_done++;
        req_free(c, r);
    }
}

static void on_worker_error(am_coord *c, int w, const am_msg *m) {
    request *r = req_get(c, m->id);
    if (!r) {
        c->st.stale_replies++;
        if (!m->id)
            AM_LOGW("coordinator: worker '%s' reports: %d %s", c->workers[w].name, m->code,
                    m->message);
        return;
    }
    if (r->leader == w) {
        c->workers[w].in_flight--;
        r->leader = -1; /* no CANCEL: the leader ended it itself */
        req_fail(c, r, m->code, "%s", m->message);
        return;
    }
    for (int k = -1; k < r->n_parts; k++) {
        int i = k < 0 ? (int)m->part : k; /* the part the ERROR names first */
        if (i >= r->n_parts) continue;
        part *p = &r->parts[i];
        if (p->state == P_ASSIGNED && p->worker == w) {
            /* The media itself was bad (the worker is fine): not retried. */
            req_fail(c, r, m->code, "part %d (%s): %s", i, am_modality_name(p->modality),
                     m->message);
            return;
        }
    }
    c->st.stale_replies++;
}

/* ---------------------------------------------------------------- clients */

static request *req_new(am_coord *c, const zmq_msg_t *rt, uint64_t client_rid) {
    for (uint32_t s = 0; s < (uint32_t)c->o.max_requests; s++) {
        request *r = &c->reqs[s];
        if (r->id) continue;
        c->seq++;
        if (!c->seq) c->seq = 1;
        memset(r, 0, sizeof *r);
        r->id = ((uint64_t)c->seq << SLOT_BITS) | s;
        r->leader = -1;
        r->client_len = zmq_msg_size((zmq_msg_t *)rt);
        memcpy(r->client, zmq_msg_data((zmq_msg_t *)rt), r->client_len);
        r->client_rid = client_rid;
        r->admitted_us = am_now_us();
        c->st.n_active++;
        c->st.requests_admitted++;
        return r;
    }
    return NULL;
}

/* The client's live request with id rid (NULL if none); *n_live: its live requests. */
static request *req_by_client(am_coord *c, const zmq_msg_t *rt, uint64_t rid, int *n_live) {
    size_t len = zmq_msg_size((zmq_msg_t *)rt);
    const void *id = zmq_msg_data((zmq_msg_t *)rt);
    request *found = NULL;
    *n_live = 0;
    for (uint32_t s = 0; s < (uint32_t)c->o.max_requests; s++) {
        request *r = &c->reqs[s];
        if (!r->id || r->client_len != len || memcmp(r->client, id, len)) continue;
        ++*n_live;
        if (r->client_rid == rid) found = r;
    }
    return found;
}

static void on_submit(am_coord *c, am_wire_in *in, am_msg *m) {
    const void *cid = zmq_msg_data(&in->routing);
    size_t clen = zmq_msg_size(&in->routing);
    if (c->drain_from_ms) {
        send_simple(c, cid, clen, AM_CMD_ERROR, m->id, AM_WERR_UNAVAILABLE,
                    "the coordinator is draining (shutting down): send it elsewhere");
        c->st.requests_rejected++;
        return;
    }
    int n_live = 0;
    if (req_by_client(c, &in->routing, m->id, &n_live)) {
        send_simple(c, cid, clen, AM_CMD_ERROR, m->id, AM_WERR_BAD_REQUEST,
                    "request id already in use");
        c->st.requests_rejected++;
        return;
    }
    char msg[AM_PROTO_MAX_NAME_BYTES + 128];
    if (n_live >= c->o.client_max_requests) {
        snprintf(msg, sizeof msg,
                 "overloaded: this client has %d requests in flight, its quota; retry later",
                 n_live);
        send_simple(c, cid, clen, AM_CMD_ERROR, m->id, AM_WERR_OVERLOADED, msg);
        c->st.client_quota++;
        c->st.requests_rejected++;
        return;
    }
    if (m->cmd == AM_CMD_GENERATE && m->model && m->model[0] && c->n_models < AM_COORD_MAX_MODELS &&
        !model_known(c, m->model)) {
        snprintf(msg, sizeof msg, "model '%s' is not served here", m->model);
        send_simple(c, cid, clen, AM_CMD_ERROR, m->id, AM_WERR_NOT_FOUND, msg);
        c->st.unknown_model++;
        c->st.requests_rejected++;
        return;
    }
    request *r = req_new(c, &in->routing, m->id);
    if (!r) {
        snprintf(msg, sizeof msg, "overloaded: %d requests in flight; retry later",
                 c->o.max_requests);
        send_simple(c, cid, clen, AM_CMD_ERROR, m->id, AM_WERR_OVERLOADED, msg);
        c->st.requests_rejected++;
        return;
    }
    int64_t now = am_now_ms();
    r->kind = m->cmd == AM_CMD_GENERATE ? R_GENERATE : R_ENCODE;
    r->deadline_ms =
        now + (m->cmd == AM_CMD_GENERATE && m->deadline_ms ? (int64_t)m->deadline_ms
                                                           : (int64_t)c->o.deadline_default_ms);
    if (r->kind == R_ENCODE) {
        part *p = &r->parts[0];
        r->n_parts = 1;
        p->modality = m->modality;
        p->frames = m->frames;
        p->state = P_QUEUED;
        p->worker = -1;
        zmq_msg_init(&p->media);
        zmq_msg_move(&p->media, &in->frames[2]);
        p->has_media = 1;
        am_msg_fini(m);
    } else {
        for (uint32_t i = 0; i < m->n_segs; i++) {
            am_msg_seg *s = &m->segs[i];
            if (s->kind != AM_SEG_MEDIA) continue;
            if (s->payload == UINT32_MAX) {
                req_fail(c, r, AM_WERR_BAD_REQUEST,
                         "segments[%u]: a client's media segment needs a payload", i);
                am_msg_fini(m);
                return;
            }
            part *p = &r->parts[r->n_parts++];
            p->modality = s->modality;
            p->frames = s->frames;
            p->state = P_QUEUED;
            p->worker = -1;
            zmq_msg_init(&p->media);
            zmq_msg_move(&p->media, &in->frames[2 + s->payload]);
            p->has_media = 1;
        }
        r->gen = *m; /* takes the decoded message's memory */
        memset(m, 0, sizeof *m);
        if (q_push(&c->genq, r->id, 0, 0)) {
            req_fail(c, r, AM_WERR_INTERNAL, "out of memory");
            return;
        }
    }
    for (int i = 0; i < r->n_parts; i++)
        if (enc_push(c, r, (uint32_t)i, 0)) {
            req_fail(c, r, AM_WERR_INTERNAL, "out of memory");
            return;
        }
}

static void on_cancel(am_coord *c, am_wire_in *in, const am_msg *m) {
    int n_live;
    request *r = req_by_client(c, &in->routing, m->id, &n_live);
    if (!r) return; /* already ended: its end message is on its way */
    if (r->leader >= 0 && c->workers[r->leader].used) {
        /* The leader answers with a final TOKEN (finish "cancelled"), which ends it. */
        am_msg cm;
        am_msg_init(&cm, AM_CMD_CANCEL);
        cm.id = r->id;
        if (!send_worker(c, r->leader, &cm, NULL, 0)) return;
    }
    am_msg t;
    am_msg_init(&t, AM_CMD_TOKEN);
    t.id = r->client_rid;
    t.finish = AM_FIN_CANCELLED;
    t.completion_tokens = r->n_tokens;
    int leader = r->leader;
    r->leader = -1;
    if (leader >= 0 && c->workers[leader].in_flight > 0) c->workers[leader].in_flight--;
    (void)send_to(c, r->client, r->client_len, &t, NULL, 0);
    c->st.requests_cancelled++;
    req_free(c, r);
}

/* HEALTH: healthy while a live shard group serves the model asked about (any
 * model when none is named). A group that died stops counting at once
 * (worker_remove); one that registers counts from its READY. */
static void on_health(am_coord *c, am_wire_in *in, const am_msg *m) {
    am_msg h;
    am_msg_init(&h, AM_CMD_HEALTH);
    h.id = m->id;
    for (int i = 0; i < AM_COORD_MAX_WORKERS; i++) {
        const worker *k = &c->workers[i];
        if (!k->used || k->draining || (m->model && m->model[0] && strcmp(m->model, k->model)))
            continue;
        if (k->role == AM_ROLE_SHARD)
            h.n_shards++;
        else
            h.n_encoders++;
    }
    h.healthy = h.n_shards > 0 && !c->drain_from_ms; /* a draining coordinator takes nothing */
    h.n_active = (uint32_t)c->st.n_active;
    am_msg_worker ws[AM_COORD_MAX_WORKERS];
    if (m->detail) { /* the cluster as a front end shows it (metrics, status page) */
        h.detail = 1;
        for (uint32_t s = 0; s < (uint32_t)c->o.max_requests; s++) {
            const request *r = &c->reqs[s];
            if (r->id && r->kind == R_GENERATE) r->leader >= 0 ? h.n_running++ : h.n_waiting++;
        }
        memcpy(h.enc_jobs, c->enc_jobs, sizeof h.enc_jobs);
        memcpy(h.enc_us, c->enc_us, sizeof h.enc_us);
        for (int i = 0; i < AM_COORD_MAX_WORKERS; i++) {
            const worker *k = &c->workers[i];
            if (!k->used) continue;
            ws[h.n_workers++] = (am_msg_worker){.role = k->role,
                                                .name = k->name,
                                                .model = k->model,
                                                .mods = k->mods,
                                                .load = k->in_flight,
                                                .capacity = k->capacity,
                                                .tp = k->tp_size,
                                                .kv_free = k->kv_free,
                                                .kv_total = k->kv_total,
                                                .preemptions = k->preemptions};
            h.preemptions += k->preemptions;
        }
        h.workers = ws;
    }
    (void)send_to(c, zmq_msg_data(&in->routing), zmq_msg_size(&in->routing), &h, NULL, 0);
}

/* ---------------------------------------------------------------- loop */

/* A message the peer's key may not send: ERROR 403, logged. */
static void refuse_role(am_coord *c, const void *pid, size_t plen, am_peer_role role,
                        const char *key, const am_msg *m, const char *why) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s key '%s' may not send %s: %s",
             role == AM_PEER_WORKER ? "worker" : "client", key, am_cmd_name(m->cmd), why);
    c->st.role_refused++;
    log_refusal(c, NULL, "refused a message: %s", msg);
    send_simple(c, pid, plen, AM_CMD_ERROR, m->id, AM_WERR_FORBIDDEN, msg);
}

static void on_message(am_coord *c, am_wire_in *in) {
    const void *pid = zmq_msg_data(&in->routing);
    size_t plen = zmq_msg_size(&in->routing);
    int w = worker_find(c, pid, plen);
    am_msg m;
    c->st.msgs_in++;
    /* With keys, every message carries its connection's role, set by the ZAP handler; one
     * without (a connection no handler admitted) is dropped unread. */
    char key[AM_CURVE_NAME_MAX + 1] = "";
    am_peer_role role = AM_PEER_NONE;
    if (c->secure) {
        role = am_curve_peer(&in->frames[0], key, sizeof key);
        if (role == AM_PEER_NONE) {
            c->st.auth_refused++;
            log_refusal(c, NULL, "dropped a message from a connection without an admitted key");
            return;
        }
    }
    int rc = am_wire_decode(in, &m);
    if (rc) {
        c->st.bad_msgs++;
        AM_LOGI("coordinator: bad message from %s: %s", w >= 0 ? c->workers[w].name : "a client",
                am_err_msg());
        send_simple(c, pid, plen, AM_CMD_ERROR, 0,
                    rc == AM_ERANGE ? AM_WERR_TOO_LARGE : AM_WERR_BAD_REQUEST, am_err_msg());
        /* A wrong header or version drops the session; a bad body costs only the message. */
        if (rc == AM_EUNSUPPORTED || w >= 0 ||
            (in->n_frames > 0 && zmq_msg_size(&in->frames[0]) != AM_PROTO_HEADER_BYTES))
            send_simple(c, pid, plen, AM_CMD_DISCONNECT, 0, 0, "protocol error");
        if (w >= 0) worker_remove(c, w, "sent a malformed message");
        return;
    }
    if (w >= 0) c->workers[w].expiry_ms = am_now_ms() + (int64_t)c->o.heartbeat_ms * c->o.liveness;
    if (c->secure) {
        int worker_cmd = m.cmd == AM_CMD_READY || m.cmd == AM_CMD_EMBED || m.cmd == AM_CMD_TOKEN;
        int client_cmd = m.cmd == AM_CMD_GENERATE || m.cmd == AM_CMD_ENCODE ||
                         m.cmd == AM_CMD_CANCEL || m.cmd == AM_CMD_HEALTH;
        /* (A registered worker that sends a client command is removed below, as without
         * keys.) */
        if ((worker_cmd && role != AM_PEER_WORKER) ||
            (client_cmd && role != AM_PEER_CLIENT && w < 0)) {
            refuse_role(c, pid, plen, role, key, &m,
                        worker_cmd ? "only keys on --worker-keys serve as workers"
                                   : "only keys on --client-keys submit requests");
            am_msg_fini(&m);
            return;
        }
        if (role == AM_PEER_CLIENT && w < 0 &&
            (m.cmd == AM_CMD_HEARTBEAT || m.cmd == AM_CMD_ERROR || m.cmd == AM_CMD_DISCONNECT)) {
            am_msg_fini(&m); /* a client's; nothing to do (workers' are handled below) */
            return;
        }
    }
    switch (m.cmd) {
    case AM_CMD_READY: on_ready(c, &in->routing, &m, key); break;
    case AM_CMD_HEARTBEAT:
    case AM_CMD_EMBED:
    case AM_CMD_TOKEN:
        if (w < 0) { /* a worker we declared dead (or never knew): make it register again */
            c->st.unknown_peer_msgs++;
            if (m.cmd != AM_CMD_HEARTBEAT) c->st.stale_replies++;
            send_simple(c, pid, plen, AM_CMD_DISCONNECT, 0, 0, "not registered");
        } else if (m.cmd == AM_CMD_EMBED) {
            on_embed(c, w, in, &m);
        } else if (m.cmd == AM_CMD_TOKEN) {
            on_token(c, w, &m);
        } else {
            if (m.drain && !c->workers[w].draining) {
                c->workers[w].draining = 1;
                AM_LOGI("coordinator: %s worker '%s' is draining (%u in flight)",
                        am_role_name(c->workers[w].role), c->workers[w].name,
                        c->workers[w].in_flight);
            }
            if (m.kv_total) { /* a shard leader's report */
                c->workers[w].kv_free = m.kv_free;
                c->workers[w].kv_total = m.kv_total;
                c->workers[w].preemptions = m.preemptions;
            }
        }
        break;
    case AM_CMD_DISCONNECT:
        if (w >= 0) {
            c->st.workers_disconnected++;
            worker_remove(c, w, "said DISCONNECT");
        }
        break;
    case AM_CMD_ERROR:
        if (w >= 0) on_worker_error(c, w, &m);
        break;
    case AM_CMD_GENERATE:
    case AM_CMD_ENCODE:
        if (w >= 0) {
            send_simple(c, pid, plen, AM_CMD_DISCONNECT, 0, 0, "workers do not submit requests");
            worker_remove(c, w, "sent a client command");
        } else {
            on_submit(c, in, &m);
        }
        break;
    case AM_CMD_CANCEL:
        if (w < 0) on_cancel(c, in, &m);
        break;
    case AM_CMD_HEALTH:
        if (w < 0) on_health(c, in, &m);
        break;
    default: break;
    }
    am_msg_fini(&m);
}

/* Is r waiting for something no live worker can do? Then *why says what: no shard
 * group of its model (before dispatch), or no encoder of a queued part's modality. */
static int unserved(const am_coord *c, const request *r, char *why, size_t cap) {
    int need_group = r->kind == R_GENERATE && r->leader < 0;
    uint32_t need_mods = 0;
    for (int i = 0; i < r->n_parts; i++)
        if (r->parts[i].state == P_QUEUED) need_mods |= 1u << r->parts[i].modality;
    for (int i = 0; i < AM_COORD_MAX_WORKERS && (need_group || need_mods); i++) {
        const worker *k = &c->workers[i];
        if (!k->used || k->draining) continue;
        if (k->role == AM_ROLE_SHARD && model_matches(r, k)) need_group = 0;
        if (k->role == AM_ROLE_ENCODER) need_mods &= ~k->mods;
    }
    if (need_group) {
        const char *model = r->gen.model && r->gen.model[0] ? r->gen.model : NULL;
        snprintf(why, cap, "no shard group serves %s%s%s", model ? "model '" : "any model",
                 model ? model : "", model ? "'" : "");
        return 1;
    }
    for (int m = 0; m < AM_MOD_COUNT; m++)
        if (need_mods & (1u << m)) {
            snprintf(why, cap, "no encoder worker serves %s", am_modality_name(m));
            return 1;
        }
    return 0;
}

static void tick(am_coord *c, int64_t now) {
    for (int i = 0; i < AM_COORD_MAX_WORKERS; i++) {
        worker *k = &c->workers[i];
        if (!k->used) continue;
        if (now > k->expiry_ms) {
            c->st.workers_expired++;
            worker_remove(c, i, "missed its heartbeats");
            continue;
        }
        if (now - k->last_sent_ms >= c->o.heartbeat_ms) {
            am_msg m;
            am_msg_init(&m, AM_CMD_HEARTBEAT);
            int rc = send_worker(c, i, &m, NULL, 0);
            if (rc == AM_EUNREACH) worker_remove(c, i, "not connected");
        }
    }
    if (now < c->next_tick_ms) return;
    c->next_tick_ms = now + AM_COORD_TICK_MS;
    for (uint32_t s = 0; s < (uint32_t)c->o.max_requests; s++) {
        request *r = &c->reqs[s];
        if (!r->id) continue;
        if (now > r->deadline_ms) {
            c->st.deadlines++;
            req_fail(c, r, AM_WERR_DEADLINE, "deadline passed");
            continue;
        }
        char why[AM_PROTO_MAX_NAME_BYTES + 64];
        if (!unserved(c, r, why, sizeof why)) {
            r->unserved_since_ms = 0;
        } else if (!r->unserved_since_ms) {
            r->unserved_since_ms = now;
        } else if (now - r->unserved_since_ms >= c->o.unserved_wait_ms) {
            c->st.unserved++;
            req_fail(c, r, AM_WERR_UNAVAILABLE, "%s (waited %d ms)", why, c->o.unserved_wait_ms);
        }
    }
}

/* Keys: load them, start the ZAP handler (before the bind: libzmq admits every CURVE
 * client while no handler is bound) and the monitor of failed handshakes. Without keys,
 * refuse an endpoint other machines can reach unless told. */
static int secure_setup(am_coord *c) {
    const am_coord_opts *o = &c->o;
    if (!o->curve_secret && !o->worker_keys && !o->client_keys) {
        if (o->insecure || am_endpoint_is_local(o->endpoint)) return 0;
        return am_err_set(AM_EINVAL,
                          "refusing to bind %s without keys: anyone who can reach it could "
                          "register as a worker and read users' prompts. Give --curve-secret, "
                          "--worker-keys and --client-keys (docs/security.md), bind a loopback "
                          "address, or say --insecure",
                          o->endpoint);
    }
    if (!o->curve_secret || !o->worker_keys || !o->client_keys)
        return am_err_set(AM_EINVAL,
                          "--curve-secret, --worker-keys and --client-keys go together: %s is "
                          "missing",
                          !o->curve_secret  ? "--curve-secret"
                          : !o->worker_keys ? "--worker-keys"
                                            : "--client-keys");
    am_curve_pair me;
    am_curve_list wl = {0}, cl = {0};
    int rc = am_curve_load_secret(o->curve_secret, &me);
    if (!rc && (rc = am_curve_list_load(o->worker_keys, &wl))) am_err_prefix(rc, "--worker-keys");
    if (!rc && (rc = am_curve_list_load(o->client_keys, &cl))) am_err_prefix(rc, "--client-keys");
    if (!rc) rc = am_zap_start(c->zctx, &wl, &cl, &c->zap);
    if (!rc) rc = am_curve_server_setup(c->sock, &me);
    memset(&me, 0, sizeof me);
    if (!rc) AM_LOGI("coordinator: CURVE on: %d worker keys, %d client keys", wl.n, cl.n);
    am_curve_list_fini(&wl);
    am_curve_list_fini(&cl);
    if (rc) return rc;
    if ((rc = am_curve_monitor_open(c->zctx, c->sock, 1, &c->mon))) return rc;
    c->secure = 1;
    return 0;
}

/* Failed CURVE handshakes, from the socket monitor (the peer's address is not in its
 * events: libzmq names the bound endpoint; the ZAP handler logs the addresses it refuses). */
static void on_monitor(am_coord *c) {
    char why[256] = "";
    int n = am_curve_monitor_read(c->mon, why, sizeof why);
    if (!n) return;
    c->st.auth_refused += n;
    log_refusal(c, why, "refused %d connection%s to %s: %s", n, n > 1 ? "s" : "", c->endpoint, why);
}

int am_coord_new(const am_coord_opts *o, am_coord **out) {
    *out = NULL;
    am_coord *c = am_calloc(1, sizeof *c);
    if (!c) return AM_ENOMEM;
    c->o = *o;
    if (!c->o.heartbeat_ms) c->o.heartbeat_ms = AM_HEARTBEAT_MS;
    if (!c->o.liveness) c->o.liveness = AM_HEARTBEAT_LIVENESS;
    if (!c->o.max_requests) c->o.max_requests = AM_COORD_MAX_REQUESTS_DEFAULT;
    if (!c->o.deadline_default_ms) c->o.deadline_default_ms = AM_COORD_DEADLINE_DEFAULT_MS;
    if (!c->o.encode_max_attempts) c->o.encode_max_attempts = AM_COORD_ENCODE_MAX_ATTEMPTS;
    if (!c->o.unserved_wait_ms) c->o.unserved_wait_ms = AM_COORD_UNSERVED_WAIT_MS_DEFAULT;
    if (!c->o.drain_ms) c->o.drain_ms = AM_COORD_DRAIN_MS_DEFAULT;
    if (!c->o.client_max_requests) c->o.client_max_requests = AM_COORD_CLIENT_MAX_REQUESTS_DEFAULT;
    if (c->o.client_max_requests > c->o.max_requests) c->o.client_max_requests = c->o.max_requests;
    if (!c->o.max_workers_per_key) c->o.max_workers_per_key = AM_COORD_MAX_WORKERS_PER_KEY_DEFAULT;
    int rc = 0;
    if (c->o.heartbeat_ms < 10 || c->o.liveness < 1 || c->o.max_requests < 1 ||
        c->o.max_requests > AM_COORD_MAX_REQUESTS_LIMIT || c->o.encode_max_attempts < 1) {
        rc = am_err_set(
            AM_EINVAL,
            "coordinator options out of range (heartbeat %d ms >= 10, liveness %d >= 1, "
            "max requests %d in 1..%d)",
            c->o.heartbeat_ms, c->o.liveness, c->o.max_requests, AM_COORD_MAX_REQUESTS_LIMIT);
        goto fail;
    }
    c->reqs = am_calloc((size_t)c->o.max_requests, sizeof *c->reqs);
    if (!c->reqs) {
        rc = AM_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < c->o.max_requests; i++)
        c->reqs[i].leader = -1;
    c->zctx = zmq_ctx_new();
    c->sock = c->zctx ? zmq_socket(c->zctx, ZMQ_ROUTER) : NULL;
    if (!c->sock) {
        rc = am_err_set(AM_EIO, "cannot create a ZeroMQ ROUTER socket: %s",
                        zmq_strerror(zmq_errno()));
        goto fail;
    }
    if ((rc = am_wire_setup(c->sock, 1, c->o.hwm, c->o.max_msg_bytes))) goto fail;
    if ((rc = secure_setup(c))) goto fail;
    if (zmq_bind(c->sock, o->endpoint)) {
        rc = am_err_set(AM_EIO, "cannot bind %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t len = sizeof c->endpoint;
    zmq_getsockopt(c->sock, ZMQ_LAST_ENDPOINT, c->endpoint, &len);
    *out = c;
    return 0;
fail:
    am_coord_destroy(&c);
    return rc;
}

const char *am_coord_endpoint(const am_coord *c) { return c->endpoint; }
void am_coord_stop(am_coord *c) { atomic_store(&c->stop, 1); }
void am_coord_drain(am_coord *c) { atomic_store(&c->drain, 1); }
am_coord_stats am_coord_get_stats(const am_coord *c) {
    am_coord_stats st = c->st;
    st.auth_refused += am_zap_refused(c->zap);
    return st;
}

int am_coord_run(am_coord *c) {
    while (!atomic_load(&c->stop)) {
        zmq_pollitem_t pis[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->mon, 0, ZMQ_POLLIN, 0}};
        int timeout =
            c->o.heartbeat_ms / 4 < AM_COORD_TICK_MS ? c->o.heartbeat_ms / 4 : AM_COORD_TICK_MS;
        int n = zmq_poll(pis, c->mon ? 2 : 1, timeout);
        if (n < 0) {
            if (zmq_errno() == EINTR) continue;
            return am_err_set(AM_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        zmq_pollitem_t pi = pis[0];
        if (c->mon && (pis[1].revents & ZMQ_POLLIN)) on_monitor(c);
        /* Drain what is waiting (bounded, so timers still run under load). */
        for (int k = 0; k < 1024 && (pi.revents & ZMQ_POLLIN); k++) {
            am_wire_in in;
            int rc = am_wire_recv(c->sock, 1, &in);
            if (rc == AM_EAGAIN) break;
            if (rc == AM_ETERM) return 0;
            if (rc) {
                c->st.bad_msgs++;
                continue;
            }
            on_message(c, &in);
            am_wire_in_close(&in);
        }
        dispatch(c);
        const int64_t now = am_now_ms();
        tick(c, now);
        if (atomic_load(&c->drain) && !c->drain_from_ms) {
            c->drain_from_ms = now;
            AM_LOGI("coordinator: draining: %d requests in flight, at most %d ms", c->st.n_active,
                    c->o.drain_ms);
        }
        if (c->drain_from_ms && (c->st.n_active == 0 || now - c->drain_from_ms >= c->o.drain_ms)) {
            if (c->st.n_active)
                AM_LOGW("coordinator: drain time is up with %d requests in flight: they end "
                        "with 503",
                        c->st.n_active);
            break;
        }
    }
    return 0;
}

void am_coord_destroy(am_coord **p) {
    am_coord *c = p ? *p : NULL;
    if (!c) return;
    if (c->reqs)
        for (uint32_t s = 0; s < (uint32_t)c->o.max_requests; s++)
            if (c->reqs[s].id)
                req_fail(c, &c->reqs[s], AM_WERR_UNAVAILABLE, "coordinator shutting down");
    if (c->sock)
        for (int i = 0; i < AM_COORD_MAX_WORKERS; i++)
            if (c->workers[i].used)
                send_simple(c, c->workers[i].ident, c->workers[i].ident_len, AM_CMD_DISCONNECT, 0,
                            0, "coordinator shutting down");
    for (int i = 0; i < AM_MOD_COUNT; i++) {
        for (int k = 0; k < c->encq[i].n; k++)
            am_free(c->encq[i].f[k].q.e);
        am_free(c->encq[i].f);
    }
    am_free(c->genq.e);
    am_free(c->reqs);
    am_curve_monitor_close(c->sock, &c->mon);
    if (c->sock) zmq_close(c->sock);
    am_zap_stop(&c->zap); /* after the socket it guards */
    if (c->zctx) zmq_ctx_term(c->zctx);
    am_free(c);
    *p = NULL;
}
