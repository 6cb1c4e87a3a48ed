/* coordinator/client.c - the native client: a DEALER socket, request ids, event decoding. */
#include "coordinator/client.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "proto/curve.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct am_client {
    void *zctx, *sock;
    void *mon;         /* failed handshakes of sock (am_client_refusal) */
    char refusal[256]; /* the last one, "" if none */
    uint64_t next_rid;
    int send_flags; /* ZMQ_DONTWAIT when non-blocking */
};

const char *am_client_refusal(am_client *c) {
    (void)am_curve_monitor_read(c->mon, c->refusal, sizeof c->refusal);
    return c->refusal[0] ? c->refusal : NULL;
}

/* A send's result: AM_EAGAIN says why (a blocking send waits AM_CLIENT_SEND_TIMEOUT_MS:
 * a refused link never takes a message, and must not hang its caller). */
static int sent(am_client *c, int rc) {
    if (rc != AM_EAGAIN) return rc;
    const char *why = am_client_refusal(c);
    char within[64] = "";
    if (!c->send_flags) snprintf(within, sizeof within, " within %d ms", AM_CLIENT_SEND_TIMEOUT_MS);
    return am_err_set(AM_EAGAIN, "cannot send to the coordinator%s: %s", within,
                      why ? why : "not connected, or its queue is full");
}

/* "no answer within N ms" plus the reason the coordinator refused us, if it did. */
static int timed_out(am_client *c, const char *what, int timeout_ms) {
    const char *why = am_client_refusal(c);
    return am_err_set(AM_EAGAIN, "no %s within %d ms%s%s", what, timeout_ms, why ? ": " : "",
                      why ? why : "");
}

int am_client_fd(am_client *c, int *fd) {
    size_t len = sizeof *fd;
    if (zmq_getsockopt(c->sock, ZMQ_FD, fd, &len))
        return am_err_set(AM_EIO, "ZMQ_FD: %s", zmq_strerror(zmq_errno()));
    return 0;
}

void am_client_set_nonblocking(am_client *c, int on) { c->send_flags = on ? ZMQ_DONTWAIT : 0; }

int am_client_new(const char *endpoint, am_client **out) {
    am_client_opts o = {.endpoint = endpoint};
    return am_client_new_opts(&o, out);
}

int am_client_new_opts(const am_client_opts *o, am_client **out) {
    *out = NULL;
    const char *endpoint = o->endpoint;
    am_curve_client keys;
    int on = 0;
    int rc = am_curve_client_load(o->curve_key, o->coordinator_key, &keys, &on);
    if (rc) return rc;
    am_client *c = am_calloc(1, sizeof *c);
    if (!c) return AM_ENOMEM;
    c->next_rid = 1;
    c->zctx = zmq_ctx_new();
    c->sock = c->zctx ? zmq_socket(c->zctx, ZMQ_DEALER) : NULL;
    if (!c->sock) {
        rc = am_err_set(AM_EIO, "cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if ((rc = am_wire_setup(c->sock, 0, 0, 0))) goto fail;
    if (on && (rc = am_curve_client_setup(c->sock, &keys))) goto fail;
    int sndtimeo = AM_CLIENT_SEND_TIMEOUT_MS;
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    if ((rc = am_curve_monitor_open(c->zctx, c->sock, 0, &c->mon))) goto fail;
    if (zmq_connect(c->sock, endpoint)) {
        rc = am_err_set(AM_EIO, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    memset(&keys, 0, sizeof keys);
    *out = c;
    return 0;
fail:
    memset(&keys, 0, sizeof keys);
    am_client_destroy(&c);
    return rc;
}

void am_client_destroy(am_client **p) {
    am_client *c = p ? *p : NULL;
    if (!c) return;
    am_curve_monitor_close(c->sock, &c->mon);
    if (c->sock) zmq_close(c->sock);
    if (c->zctx) zmq_ctx_term(c->zctx);
    am_free(c);
    *p = NULL;
}

int am_client_submit(am_client *c, const am_client_part *parts, int n_parts,
                     const am_client_params *p, uint64_t *rid) {
    if (n_parts < 1 || n_parts > AM_PROTO_MAX_SEGMENTS)
        return am_err_set(AM_ERANGE, "%d parts (want 1..%d)", n_parts, AM_PROTO_MAX_SEGMENTS);
    am_msg_seg *segs = am_calloc((size_t)n_parts, sizeof *segs);
    am_bytes pay[AM_PROTO_MAX_PAYLOADS];
    int n_pay = 0, rc = 0;
    if (!segs) return AM_ENOMEM;
    for (int i = 0; i < n_parts; i++) {
        const am_client_part *q = &parts[i];
        am_msg_seg *s = &segs[i];
        s->kind = q->kind;
        s->payload = UINT32_MAX;
        if (q->kind == AM_SEG_TEXT) {
            if (q->text_len > AM_PROTO_MAX_TEXT_BYTES) {
                rc = am_err_set(AM_ERANGE, "part %d: text of %zu bytes (at most %zu)", i,
                                q->text_len, AM_PROTO_MAX_TEXT_BYTES);
                goto done;
            }
            s->text = q->text;
            s->text_len = (uint32_t)q->text_len;
        } else if (q->kind == AM_SEG_IDS) {
            s->ids = (int32_t *)q->ids;
            s->n_ids = q->n_ids;
        } else if (q->kind == AM_SEG_MEDIA) {
            if (n_pay == AM_PROTO_MAX_PAYLOADS || !q->len || q->len > AM_PROTO_MAX_PAYLOAD_BYTES ||
                q->modality >= AM_MOD_COUNT) {
                rc = am_err_set(
                    AM_ERANGE,
                    "part %d: media item %d of %zu bytes (at most %d items of 1..%zu bytes)", i,
                    n_pay, q->len, AM_PROTO_MAX_PAYLOADS, AM_PROTO_MAX_PAYLOAD_BYTES);
                goto done;
            }
            s->modality = q->modality;
            s->frames = q->frames;
            s->payload = (uint32_t)n_pay;
            pay[n_pay++] = (am_bytes){q->data, q->len};
        } else {
            rc = am_err_set(AM_EINVAL, "part %d: unknown kind %d", i, q->kind);
            goto done;
        }
    }
    am_msg m;
    am_msg_init(&m, AM_CMD_GENERATE);
    m.id = c->next_rid++;
    m.segs = segs;
    m.n_segs = (uint32_t)n_parts;
    m.max_tokens = p->max_tokens;
    m.temperature = p->temperature;
    m.top_k = p->top_k;
    if (p->top_p > 0) m.top_p = p->top_p;
    if (p->repetition_penalty > 0) m.repetition_penalty = p->repetition_penalty;
    m.seed = p->seed;
    if (p->n_stop > AM_PROTO_MAX_STOP) {
        rc = am_err_set(AM_ERANGE, "%u stop strings (at most %d)", p->n_stop, AM_PROTO_MAX_STOP);
        goto done;
    }
    for (uint32_t i = 0; i < p->n_stop; i++)
        m.stop[i] = p->stop[i];
    m.n_stop = p->n_stop;
    m.deadline_ms = p->deadline_ms;
    m.add_bos = p->no_bos ? 0 : 1;
    m.ignore_eos = p->ignore_eos ? 1 : 0;
    m.model = p->model;
    if ((rc = sent(c, am_wire_send_bufs(c->sock, NULL, 0, &m, pay, n_pay, c->send_flags))))
        goto done;
    *rid = m.id;
done:
    am_free(segs);
    return rc;
}

int am_client_encode(am_client *c, const am_client_part *media, uint64_t *rid) {
    if (media->kind != AM_SEG_MEDIA || !media->len || media->modality >= AM_MOD_COUNT)
        return am_err_set(AM_EINVAL, "ENCODE needs one non-empty media item");
    am_msg m;
    am_msg_init(&m, AM_CMD_ENCODE);
    m.id = c->next_rid++;
    m.modality = media->modality;
    m.frames = media->frames;
    am_bytes pay = {media->data, media->len};
    int rc = sent(c, am_wire_send_bufs(c->sock, NULL, 0, &m, &pay, 1, c->send_flags));
    if (!rc) *rid = m.id;
    return rc;
}

int am_client_cancel(am_client *c, uint64_t rid) {
    am_msg m;
    am_msg_init(&m, AM_CMD_CANCEL);
    m.id = rid;
    return sent(c, am_wire_send(c->sock, NULL, 0, &m, NULL, 0, c->send_flags));
}

int am_client_next(am_client *c, int timeout_ms, am_client_event *ev) {
    memset(ev, 0, sizeof *ev);
    int64_t end = timeout_ms < 0 ? -1 : am_now_ms() + timeout_ms;
    for (;;) {
        int left = end < 0 ? -1 : (int)(end - am_now_ms());
        if (end >= 0 && left < 0) left = 0;
        zmq_pollitem_t pi = {c->sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&pi, 1, left);
        if (n < 0) {
            if (zmq_errno() == EINTR) continue;
            return am_err_set(AM_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        if (n == 0) return AM_EAGAIN;
        int rc = am_wire_recv(c->sock, 0, &ev->in);
        if (rc == AM_EAGAIN) continue;
        if (rc) return rc;
        rc = am_wire_decode(&ev->in, &ev->msg);
        if (rc) {
            AM_LOGW("client: skipped a malformed message from the coordinator: %s", am_err_msg());
            am_wire_in_close(&ev->in);
            continue;
        }
        ev->cmd = ev->msg.cmd;
        ev->rid = ev->msg.id;
        if (ev->cmd == AM_CMD_HEARTBEAT) {
            am_client_event_fini(ev);
            continue;
        }
        return 0;
    }
}

void am_client_event_fini(am_client_event *ev) {
    am_msg_fini(&ev->msg);
    am_wire_in_close(&ev->in);
    memset(ev, 0, sizeof *ev);
}

int am_client_event_final(const am_client_event *ev) {
    return ev->cmd == AM_CMD_ERROR || ev->cmd == AM_CMD_EMBED || ev->cmd == AM_CMD_DISCONNECT ||
           (ev->cmd == AM_CMD_TOKEN && ev->msg.finish != AM_FIN_NONE);
}

void am_client_result_fini(am_client_result *r) {
    am_free(r->text);
    am_free(r->ids);
    memset(r, 0, sizeof *r);
}

static int append(void **buf, size_t *len, size_t *cap, const void *src, size_t n, size_t extra) {
    if (*len + n + extra > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n + extra)
            nc *= 2;
        void *d = am_realloc(*buf, nc);
        if (!d) return AM_ENOMEM;
        *buf = d;
        *cap = nc;
    }
    if (n) memcpy((char *)*buf + *len, src, n);
    *len += n;
    return 0;
}

int am_client_generate(am_client *c, const am_client_part *parts, int n_parts,
                       const am_client_params *p, am_client_piece_fn cb, void *user, int timeout_ms,
                       am_client_result *out) {
    memset(out, 0, sizeof *out);
    uint64_t rid;
    int rc = am_client_submit(c, parts, n_parts, p, &rid);
    if (rc) return rc;
    size_t tlen = 0, tcap = 0, ilen = 0, icap = 0;
    void *text = NULL, *ids = NULL;
    int64_t end = timeout_ms < 0 ? -1 : am_now_ms() + timeout_ms;
    for (;;) {
        am_client_event ev;
        int left = end < 0 ? -1 : (int)(end - am_now_ms());
        rc = am_client_next(c, end < 0 ? -1 : (left > 0 ? left : 0), &ev);
        if (rc == AM_EAGAIN) {
            int flags = c->send_flags; /* best effort: a link that is down takes nothing */
            c->send_flags = ZMQ_DONTWAIT;
            (void)am_client_cancel(c, rid);
            c->send_flags = flags;
            rc = timed_out(c, "answer", timeout_ms);
            break;
        }
        if (rc) break;
        if (ev.rid != rid && ev.cmd != AM_CMD_DISCONNECT) {
            am_client_event_fini(&ev);
            continue;
        }
        if (ev.cmd == AM_CMD_TOKEN) {
            const am_msg *m = &ev.msg;
            if ((rc = append(&text, &tlen, &tcap, m->text, m->text_len, 1)) ||
                (rc = append(&ids, &ilen, &icap, m->ids, (size_t)m->n_ids * 4, 0))) {
                am_client_event_fini(&ev);
                break;
            }
            if (cb && (m->text_len || m->n_ids) &&
                cb(user, m->text ? m->text : "", m->text_len, m->ids, m->n_ids))
                (void)am_client_cancel(c, rid);
            if (m->finish != AM_FIN_NONE) {
                out->finish = m->finish;
                out->prompt_tokens = m->prompt_tokens;
                out->completion_tokens = m->completion_tokens;
                am_client_event_fini(&ev);
                rc = 0;
                break;
            }
        } else if (ev.cmd == AM_CMD_ERROR || ev.cmd == AM_CMD_DISCONNECT) {
            out->err_code = ev.msg.code;
            rc = am_err_set(AM_EIO, "coordinator: %d %s", ev.msg.code,
                            ev.msg.message ? ev.msg.message : "disconnected");
            am_client_event_fini(&ev);
            break;
        }
        am_client_event_fini(&ev);
    }
    if (!rc && !(rc = append(&text, &tlen, &tcap, "", 0, 1))) {
        ((char *)text)[tlen] = '\0';
        out->text = text;
        out->text_len = tlen;
        out->ids = ids;
        out->n_ids = (uint32_t)(ilen / 4);
        return 0;
    }
    am_free(text);
    am_free(ids);
    return rc;
}

int am_client_health_send(am_client *c, const char *model, int detail, uint64_t *rid) {
    am_msg m;
    am_msg_init(&m, AM_CMD_HEALTH);
    m.id = c->next_rid++;
    m.model = model;
    m.detail = detail ? 1 : 0;
    int rc = sent(c, am_wire_send(c->sock, NULL, 0, &m, NULL, 0, c->send_flags));
    if (!rc) *rid = m.id;
    return rc;
}

int am_client_health_get(am_client *c, const char *model, int timeout_ms, am_client_health *out) {
    memset(out, 0, sizeof *out);
    am_msg m;
    am_msg_init(&m, AM_CMD_HEALTH);
    int rc = am_client_health_send(c, model, 0, &m.id);
    if (rc) return rc;
    int64_t end = timeout_ms < 0 ? -1 : am_now_ms() + timeout_ms;
    for (;;) {
        am_client_event ev;
        int left = end < 0 ? -1 : (int)(end - am_now_ms());
        rc = am_client_next(c, end < 0 ? -1 : (left > 0 ? left : 0), &ev);
        if (rc == AM_EAGAIN) return timed_out(c, "HEALTH answer", timeout_ms);
        if (rc) return rc;
        if (ev.cmd == AM_CMD_ERROR && ev.rid == m.id) { /* e.g. 403: a worker's key */
            rc = am_err_set(AM_EIO, "coordinator: %d %s", ev.msg.code,
                            ev.msg.message ? ev.msg.message : "");
            am_client_event_fini(&ev);
            return rc;
        }
        int mine = ev.cmd == AM_CMD_HEALTH && ev.rid == m.id;
        if (mine) {
            out->healthy = ev.msg.healthy;
            out->shards = ev.msg.n_shards;
            out->encoders = ev.msg.n_encoders;
            out->active = ev.msg.n_active;
        }
        am_client_event_fini(&ev);
        if (mine) return 0;
    }
}
