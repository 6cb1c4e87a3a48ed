/* gateway/gateway.c - routes, the coordinator link on the loop, streaming, metrics.
 *
 * A generation is a gw_req from its HTTP request to the coordinator's final
 * event; the table maps the client's request id to it. The HTTP side may end
 * first (the client went away): the request is cancelled at the coordinator
 * and stays in the table, without its HTTP half, until the final event says
 * the shard group let it go. Streamed text passes through a UTF-8 filter that
 * holds back a character cut between two TOKEN messages (a byte-fallback
 * token is one byte of a character) and replaces invalid bytes with U+FFFD,
 * since JSON must be valid UTF-8.
 */
#include "gateway/gateway.h"

#include "api/openai.h"
#include "coordinator/client.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "gateway/http.h"
#include "gateway/metrics.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

extern const char am_gw_status_html[]; /* gateway/status.html, built in (status_html.c) */
extern const size_t am_gw_status_html_len;

typedef struct gw_req {
    struct am_gw *g;
    am_http_req *http; /* NULL once the HTTP side has ended */
    uv_work_t work;    /* parsing a large body off the loop */
    am_api_request api;
    am_api_error err;
    int parse_rc, parsing, aborted;
    uint64_t rid; /* 0 until submitted */
    am_api_kind kind;
    int stream, include_usage, head_sent, cancelled;
    char id[48];
    int64_t created;
    char model[257];
    int64_t t_arrive_us, t_submit_us, t_first_us, t_last_us;
    am_sb text;    /* non-streamed answer */
    char carry[4]; /* an incomplete UTF-8 character held back */
    int n_carry;
} gw_req;

typedef struct snap_worker {
    uint8_t role;
    char name[257], model[257];
    uint32_t mods, load, capacity, tp, kv_free, kv_total;
    uint64_t preemptions;
} snap_worker;

typedef struct snapshot {
    int valid;     /* an answer arrived within AM_GW_HEALTH_STALE_MS */
    int64_t at_ms; /* when */
    int healthy;   /* a shard group serves */
    uint32_t shards, encoders, active, running, waiting;
    uint64_t preemptions, enc_jobs[AM_MOD_COUNT], enc_us[AM_MOD_COUNT];
    snap_worker workers[AM_PROTO_MAX_WORKERS];
    int n_workers;
} snapshot;

struct am_gw {
    uv_loop_t *loop;
    am_gw_opts o;
    char *keys[AM_GW_MAX_API_KEYS];
    am_http_server *http;
    am_client *client;
    char endpoint[256];
    uv_poll_t zpoll;
    uv_prepare_t zprep;
    uv_timer_t health_timer;
    int handles_open, closing, n_parsing, free_pending;
    uint64_t health_rid;
    int64_t health_sent_ms;
    char refused[256]; /* the coordinator's last refusal of our link, logged once */
    snapshot snap;
    /* requests in flight, by rid (open addressing, linear probing) */
    gw_req **tab;
    size_t tab_cap, tab_n;
    int n_gen; /* generations admitted and not ended at the HTTP side */
    uint64_t next_id;
    /* metrics */
    am_hist ttft, itl, e2e, queue;
    int64_t prompt_tokens, gen_tokens, req_ok[4], req_failed, req_cancelled;
    am_rate tok_rate, req_rate;
    int64_t started_s;
};

static const double LAT_BUCKETS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06,  0.08,
                                     0.1,   0.25,  0.5,  0.75, 1.0,  2.5,   5.0,
                                     7.5,   10.0,  20.0, 40.0, 80.0, 160.0, 640.0};
static const double ITL_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
                                     0.05,  0.075,  0.1,   0.15, 0.2,   0.3,  0.4,   0.5,  0.75,
                                     1.0,   2.5,    5.0,   7.5,  10.0,  20.0, 40.0,  80.0};
#define NB(a) ((int)(sizeof a / sizeof a[0]))

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s (n bytes left): 1..4; 0 when the bytes
 * are a valid but incomplete start; -1 when invalid (overlong, surrogate, > U+10FFFF). */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return -1;
    }
    return len;
}

/* Offset of the first invalid byte of s, or n when all of it is UTF-8. */
static size_t utf8_check(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k <= 0) return i;
        i += (size_t)k;
    }
    return n;
}

/* Appends text to out as valid UTF-8: the held-back bytes of q first; an incomplete
 * character at the end is held back unless final; invalid bytes become U+FFFD. */
static void utf8_take(gw_req *q, const char *text, size_t len, int final, am_sb *out) {
    char buf[8];
    size_t i = 0;
    /* Finish the held-back character with the first bytes of text. */
    while (q->n_carry) {
        size_t take = 0;
        while (take < len && q->n_carry + take < 4)
            take++;
        memcpy(buf, q->carry, (size_t)q->n_carry);
        memcpy(buf + q->n_carry, text, take);
        int k = utf8_seq((const unsigned char *)buf, (size_t)q->n_carry + take);
        if (k > 0) {
            am_sb_add(out, buf, (size_t)k);
            i = (size_t)k - (size_t)q->n_carry;
            q->n_carry = 0;
        } else if (k == 0 && !final) {
            memcpy(q->carry + q->n_carry, text, take); /* still incomplete */
            q->n_carry += (int)take;
            return;
        } else {
            am_sb_add(out, "\xEF\xBF\xBD", 3);
            memmove(q->carry, q->carry + 1, (size_t)--q->n_carry);
        }
    }
    while (i < len) {
        size_t j = i;
        int k;
        while (j < len && (k = utf8_seq((const unsigned char *)text + j, len - j)) > 0)
            j += (size_t)k;
        am_sb_add(out, text + i, j - i);
        if (j == len) break;
        k = utf8_seq((const unsigned char *)text + j, len - j);
        if (k == 0 && !final) {
            q->n_carry = (int)(len - j);
            memcpy(q->carry, text + j, len - j);
            return;
        }
        am_sb_add(out, "\xEF\xBF\xBD", 3);
        i = j + 1;
    }
    if (final && q->n_carry) {
        am_sb_add(out, "\xEF\xBF\xBD", 3);
        q->n_carry = 0;
    }
}

/* ---------------------------------------------------------------- the table */

static size_t slot_of(const am_gw *g, uint64_t rid) {
    return (size_t)((rid * 0x9E3779B97F4A7C15ull) >> 20) & (g->tab_cap - 1);
}

static int tab_put(am_gw *g, gw_req *q) {
    if ((g->tab_n + 1) * 2 > g->tab_cap) {
        size_t cap = g->tab_cap ? g->tab_cap * 2 : 1024;
        gw_req **old = g->tab;
        size_t old_cap = g->tab_cap;
        gw_req **t = am_calloc(cap, sizeof *t);
        if (!t) return AM_ENOMEM;
        g->tab = t, g->tab_cap = cap, g->tab_n = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i]) tab_put(g, old[i]);
        am_free(old);
    }
    size_t i = slot_of(g, q->rid);
    while (g->tab[i])
        i = (i + 1) & (g->tab_cap - 1);
    g->tab[i] = q;
    g->tab_n++;
    return 0;
}

static gw_req *tab_get(const am_gw *g, uint64_t rid) {
    if (!g->tab_cap) return NULL;
    for (size_t i = slot_of(g, rid); g->tab[i]; i = (i + 1) & (g->tab_cap - 1))
        if (g->tab[i]->rid == rid) return g->tab[i];
    return NULL;
}

static void tab_del(am_gw *g, uint64_t rid) {
    if (!g->tab_cap) return;
    size_t i = slot_of(g, rid), mask = g->tab_cap - 1;
    while (g->tab[i] && g->tab[i]->rid != rid)
        i = (i + 1) & mask;
    if (!g->tab[i]) return;
    g->tab[i] = NULL;
    g->tab_n--;
    /* Backward-shift: re-place the entries after it in the same run. */
    for (size_t j = (i + 1) & mask; g->tab[j]; j = (j + 1) & mask) {
        gw_req *e = g->tab[j];
        g->tab[j] = NULL;
        g->tab_n--;
        (void)tab_put(g, e); /* cannot grow: the count did not rise */
    }
}

/* ---------------------------------------------------------------- responses */

static void send_json(am_http_req *r, int status, const char *extra, const char *json) {
    am_http_respond(r, status, "application/json", extra, json, strlen(json), 0);
}

static void send_error(am_http_req *r, int status, const char *param, const char *msg) {
    am_api_error e;
    (void)am_api_fail(&e, status, param, "%s", msg);
    am_err_clear();
    char *j = am_api_error_json(&e);
    char extra[64] = "";
    if (status == 429 || status == 503)
        snprintf(extra, sizeof extra, "Retry-After: %d\r\n", AM_GW_RETRY_AFTER_S);
    if (status == 401) snprintf(extra, sizeof extra, "WWW-Authenticate: Bearer\r\n");
    send_json(r, status, extra, j ? j : "{\"error\": {\"message\": \"out of memory\"}}");
    am_free(j);
}

static size_t error_body(int status, const char *message, char *buf, size_t cap) {
    am_api_error e;
    (void)am_api_fail(&e, status, "", "%s", message);
    am_err_clear();
    char *j = am_api_error_json(&e);
    int n = snprintf(buf, cap, "%s", j ? j : "{}");
    am_free(j);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The HTTP status for a coordinator's ERROR code (proto.h, AM_WERR_*). */
static int http_status(int32_t wire) {
    switch (wire) {
    case AM_WERR_BAD_REQUEST: return 400;
    case AM_WERR_NOT_FOUND: return 404;
    case AM_WERR_DEADLINE: return 504;
    case AM_WERR_TOO_LARGE: return 413;
    case AM_WERR_OVERLOADED: return 429;
    case AM_WERR_UNAVAILABLE: return 503;
    case AM_WERR_INTERNAL: return 500;
    default: return 502;
    }
}

/* ---------------------------------------------------------------- request end */

static void req_free(gw_req *q) {
    am_api_request_fini(&q->api);
    am_sb_fini(&q->text);
    am_free(q);
}

/* The HTTP side ends (response sent or client gone). */
static void http_done(gw_req *q) {
    if (q->http) { /* (the HTTP layer has freed it once it was finished) */
        q->http = NULL;
        q->g->n_gen--;
    }
}

/* The coordinator side ends: drop it from the table and free it (once both ended). */
static void gen_end(gw_req *q) {
    if (q->rid) tab_del(q->g, q->rid);
    q->rid = 0;
    if (!q->http) req_free(q);
}

static void sse(gw_req *q, const char *json) {
    am_sb b = {0};
    am_sb_printf(&b, "data: %s\n\n", json);
    if (!b.oom) am_http_stream_write(q->http, b.s, b.len);
    am_sb_fini(&b);
}

/* One chunk of a stream: delta text (may be empty), finish reason (NULL while it runs). */
static cJSON *chunk_obj(const gw_req *q, const char *text, size_t len, const char *finish,
                        int role) {
    cJSON *o = cJSON_CreateObject(), *choices = cJSON_CreateArray(), *c = cJSON_CreateObject();
    char *t = am_malloc(len + 1);
    if (!o || !choices || !c || !t) {
        cJSON_Delete(o), cJSON_Delete(choices), cJSON_Delete(c), am_free(t);
        return NULL;
    }
    memcpy(t, text, len);
    t[len] = '\0';
    int chat = q->kind == AM_API_CHAT;
    cJSON_AddStringToObject(o, "id", q->id);
    cJSON_AddStringToObject(o, "object", chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)q->created);
    cJSON_AddStringToObject(o, "model", q->model);
    cJSON_AddNumberToObject(c, "index", 0);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (len || role) cJSON_AddStringToObject(d, "content", t);
        cJSON_AddNullToObject(c, "logprobs");
    } else {
        cJSON_AddStringToObject(c, "text", t);
        cJSON_AddNullToObject(c, "logprobs");
    }
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    cJSON_AddItemToArray(choices, c);
    cJSON_AddItemToObject(o, "choices", choices);
    am_free(t);
    return o;
}

static void sse_obj(gw_req *q, cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    if (s) sse(q, s);
    cJSON_free(s);
    cJSON_Delete(o);
}

static void stream_head(gw_req *q) {
    if (q->head_sent || !q->http) return;
    q->head_sent = 1;
    am_http_stream_begin(q->http, 200, "text/event-stream", "X-Accel-Buffering: no\r\n");
    if (q->kind == AM_API_CHAT) sse_obj(q, chunk_obj(q, "", 0, NULL, 1));
}

static void usage_add(cJSON *o, uint32_t prompt, uint32_t completion) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    if (!u) return;
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)prompt + completion);
}

/* The request failed (before or after its stream began). */
static void req_fail(gw_req *q, int status, const char *msg) {
    am_gw *g = q->g;
    g->req_failed++;
    if (!q->http) return;
    if (!q->head_sent) {
        send_error(q->http, status, "", msg);
    } else { /* the status line went out: the error travels as an event (as vLLM sends it) */
        am_api_error e;
        (void)am_api_fail(&e, status, "", "%s", msg);
        am_err_clear();
        char *j = am_api_error_json(&e);
        if (j) sse(q, j);
        am_free(j);
        sse(q, "[DONE]");
        am_http_stream_end(q->http);
    }
    http_done(q);
}

static void on_final(gw_req *q, const am_msg *m) {
    am_gw *g = q->g;
    int64_t now = am_now_us();
    g->prompt_tokens += m->prompt_tokens;
    g->gen_tokens += m->completion_tokens;
    am_hist_observe(&g->e2e, (double)(now - q->t_arrive_us) * 1e-6);
    if (m->queue_us) am_hist_observe(&g->queue, m->queue_us * 1e-6);
    if (m->finish < 4) g->req_ok[m->finish]++;
    if (m->finish == AM_FIN_CANCELLED) g->req_cancelled++;
    am_rate_add(&g->req_rate, now / 1000000, 1);
    if (!q->http) return;
    const char *fin = am_api_finish_reason(m->finish);
    if (q->stream) {
        stream_head(q);
        am_sb tail = {0};
        utf8_take(q, "", 0, 1, &tail);
        sse_obj(q, chunk_obj(q, tail.s ? tail.s : "", tail.len, fin ? fin : "stop", 0));
        am_sb_fini(&tail);
        if (q->include_usage) {
            cJSON *o = cJSON_CreateObject();
            if (o) {
                cJSON_AddStringToObject(o, "id", q->id);
                cJSON_AddStringToObject(o, "object",
                                        q->kind == AM_API_CHAT ? "chat.completion.chunk"
                                                               : "text_completion");
                cJSON_AddNumberToObject(o, "created", (double)q->created);
                cJSON_AddStringToObject(o, "model", q->model);
                cJSON_AddArrayToObject(o, "choices");
                usage_add(o, m->prompt_tokens, m->completion_tokens);
            }
            sse_obj(q, o);
        }
        sse(q, "[DONE]");
        am_http_stream_end(q->http);
    } else {
        utf8_take(q, "", 0, 1, &q->text);
        am_api_result res = {.text = q->text.s ? q->text.s : "",
                             .text_len = q->text.len,
                             .finish = m->finish,
                             .prompt_tokens = m->prompt_tokens,
                             .completion_tokens = m->completion_tokens};
        char *j = am_api_response_json(q->kind, q->id, q->created, q->model, &res);
        if (j)
            send_json(q->http, 200, NULL, j);
        else
            send_error(q->http, 500, "", "out of memory building the response");
        am_free(j);
    }
    http_done(q);
}

static void on_token(gw_req *q, const am_msg *m) {
    am_gw *g = q->g;
    int64_t now = am_now_us();
    if (m->n_ids) {
        if (!q->t_first_us) {
            q->t_first_us = now;
            am_hist_observe(&g->ttft, (double)(now - q->t_arrive_us) * 1e-6);
            for (uint32_t i = 1; i < m->n_ids; i++)
                am_hist_observe(&g->itl, 0);
        } else {
            /* A TOKEN holds the ids made since the last one: spread the gap over them. */
            double dt = (double)(now - q->t_last_us) * 1e-6 / m->n_ids;
            for (uint32_t i = 0; i < m->n_ids; i++)
                am_hist_observe(&g->itl, dt);
        }
        q->t_last_us = now;
        am_rate_add(&g->tok_rate, now / 1000000, m->n_ids);
    }
    int final = m->finish != AM_FIN_NONE;
    if (q->http && m->text_len) {
        if (q->stream) {
            am_sb piece = {0};
            utf8_take(q, m->text, m->text_len, 0, &piece);
            if (piece.len) {
                stream_head(q);
                sse_obj(q, chunk_obj(q, piece.s, piece.len, NULL, 0));
            }
            am_sb_fini(&piece);
        } else {
            utf8_take(q, m->text, m->text_len, 0, &q->text);
        }
    }
    if (final) {
        on_final(q, m);
        gen_end(q);
    }
}

/* ---------------------------------------------------------------- the coordinator link */

static void snapshot_take(am_gw *g, const am_msg *m) {
    snapshot *s = &g->snap;
    s->valid = 1;
    s->at_ms = am_now_ms();
    s->healthy = m->healthy;
    s->shards = m->n_shards, s->encoders = m->n_encoders, s->active = m->n_active;
    s->running = m->n_running, s->waiting = m->n_waiting, s->preemptions = m->preemptions;
    memcpy(s->enc_jobs, m->enc_jobs, sizeof s->enc_jobs);
    memcpy(s->enc_us, m->enc_us, sizeof s->enc_us);
    s->n_workers = 0;
    for (uint32_t i = 0; i < m->n_workers && i < AM_PROTO_MAX_WORKERS; i++) {
        const am_msg_worker *w = &m->workers[i];
        snap_worker *d = &s->workers[s->n_workers++];
        d->role = w->role;
        snprintf(d->name, sizeof d->name, "%s", w->name ? w->name : "");
        snprintf(d->model, sizeof d->model, "%s", w->model ? w->model : "");
        d->mods = w->mods, d->load = w->load, d->capacity = w->capacity, d->tp = w->tp;
        d->kv_free = w->kv_free, d->kv_total = w->kv_total, d->preemptions = w->preemptions;
    }
}

static int snap_fresh(const am_gw *g) {
    return g->snap.valid && am_now_ms() - g->snap.at_ms <= AM_GW_HEALTH_STALE_MS;
}

static void on_event(am_gw *g, am_client_event *ev) {
    if (ev->cmd == AM_CMD_HEALTH) {
        if (ev->rid == g->health_rid) snapshot_take(g, &ev->msg);
        return;
    }
    if (ev->cmd == AM_CMD_DISCONNECT) {
        AM_LOGW("gateway: the coordinator said DISCONNECT: %s",
                ev->msg.message ? ev->msg.message : "");
        return;
    }
    gw_req *q = tab_get(g, ev->rid);
    if (!q) return;
    if (ev->cmd == AM_CMD_TOKEN) {
        on_token(q, &ev->msg);
    } else if (ev->cmd == AM_CMD_ERROR) {
        req_fail(q, http_status(ev->msg.code), ev->msg.message ? ev->msg.message : "error");
        gen_end(q);
    }
}

static void drain(am_gw *g) {
    if (!g->client) return;
    for (int k = 0; k < 100000; k++) {
        am_client_event ev;
        int rc = am_client_next(g->client, 0, &ev);
        if (rc == AM_EAGAIN) return;
        if (rc) {
            AM_LOGW("gateway: reading from the coordinator: %s", am_err_msg());
            return;
        }
        on_event(g, &ev);
        am_client_event_fini(&ev);
    }
}

static void on_zpoll(uv_poll_t *h, int status, int events) {
    (void)status, (void)events;
    drain(h->data);
}
static void on_zprep(uv_prepare_t *h) { drain(h->data); }

static void on_health_timer(uv_timer_t *t) {
    am_gw *g = t->data;
    int64_t now = am_now_ms();
    (void)am_client_health_send(g->client, NULL, 1, &g->health_rid);
    g->health_sent_ms = now;
    const char *why = am_client_refusal(g->client); /* a wrong key: say so, not just 503 */
    if (why && strcmp(why, g->refused)) {
        AM_LOGW("gateway: the coordinator %s refused this gateway's link: %s", g->endpoint, why);
        snprintf(g->refused, sizeof g->refused, "%s", why);
    }
    /* Requests the coordinator never ended (it restarted, say): 504 after the deadline. */
    int64_t limit_us = (int64_t)(g->o.deadline_ms ? g->o.deadline_ms : 120000) * 1000 +
                       (int64_t)AM_GW_DEADLINE_GRACE_MS * 1000;
    for (size_t i = 0; i < g->tab_cap; i++) {
        gw_req *q = g->tab[i];
        if (!q || am_now_us() - q->t_submit_us <= limit_us) continue;
        (void)am_client_cancel(g->client, q->rid);
        req_fail(q, 504, "no answer from the cluster within the request's deadline");
        gen_end(q);
        i = (size_t)-1; /* the table moved: start over */
    }
}

/* ---------------------------------------------------------------- generation requests */

static void submit(gw_req *q) {
    am_gw *g = q->g;
    if (q->parse_rc) {
        char *j = am_api_error_json(&q->err);
        send_json(q->http, q->err.status ? q->err.status : 400, NULL, j ? j : "{}");
        am_free(j);
        http_done(q);
        req_free(q);
        return;
    }
    q->kind = q->api.kind;
    q->stream = q->api.stream;
    snprintf(q->model, sizeof q->model, "%s", q->api.model ? q->api.model : "");
    /* The model must be one a live shard group serves. */
    int known = 0, any = 0;
    for (int i = 0; i < g->snap.n_workers; i++)
        if (g->snap.workers[i].role == AM_ROLE_SHARD) {
            any = 1;
            if (!q->model[0] || !strcmp(g->snap.workers[i].model, q->model)) known = 1;
        }
    const char *fail = NULL;
    int status = 0;
    char msg[512];
    if (!snap_fresh(g))
        status = 503, fail = "the coordinator does not answer";
    else if (!g->snap.healthy || !any)
        status = 503, fail = "no shard group serves a model now";
    else if (!known) {
        snprintf(msg, sizeof msg, "the model '%s' does not exist (GET /v1/models lists them)",
                 q->model);
        am_api_error e;
        (void)am_api_fail(&e, 404, "model", "%s", msg);
        am_err_clear();
        char *j = am_api_error_json(&e);
        send_json(q->http, 404, NULL, j ? j : "{}");
        am_free(j);
        http_done(q);
        req_free(q);
        return;
    } else if (g->n_gen > g->o.max_inflight)
        status = 429, fail = "the gateway is at its --max-inflight requests; retry later";
    if (fail) {
        send_error(q->http, status, "", fail);
        http_done(q);
        req_free(q);
        return;
    }
    if (!q->api.params.deadline_ms) q->api.params.deadline_ms = g->o.deadline_ms;
    int rc = am_client_submit(g->client, q->api.parts, q->api.n_parts, &q->api.params, &q->rid);
    if (rc) {
        q->rid = 0;
        if (rc == AM_EAGAIN)
            send_error(q->http, 429, "", "the coordinator's queue is full; retry later");
        else if (rc == AM_ERANGE || rc == AM_EINVAL)
            send_error(q->http, rc == AM_ERANGE ? 413 : 400, "", am_err_msg());
        else
            send_error(q->http, 502, "", am_err_msg());
        http_done(q);
        req_free(q);
        return;
    }
    am_api_request_drop_media(&q->api); /* the message has its own copy */
    q->t_submit_us = am_now_us();
    if (tab_put(g, q)) {
        (void)am_client_cancel(g->client, q->rid);
        q->rid = 0;
        send_error(q->http, 500, "", "out of memory");
        http_done(q);
        req_free(q);
    }
}

/* JSON and base64: on the loop for small bodies, on the thread pool for large ones. */
static void parse_work(uv_work_t *w) {
    gw_req *q = w->data;
    am_api_opts o = {.media_root = q->g->o.media_root};
    am_api_kind kind;
    if ((q->parse_rc = am_api_url_kind(q->http->path, &kind, &q->err))) return;
    cJSON *j = cJSON_ParseWithLength(q->http->body, q->http->body_len);
    if (!j) {
        q->parse_rc = am_api_fail(&q->err, 400, "", "the request body is not valid JSON");
        return;
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    q->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    q->parse_rc = am_api_parse_body(j, kind, &o, &q->api, &q->err);
    cJSON_Delete(j);
}

static void gw_free(am_gw *g);

static void parse_done(uv_work_t *w, int status) {
    gw_req *q = w->data;
    am_gw *g = q->g;
    q->parsing = 0;
    g->n_parsing--;
    if (q->aborted || g->closing) { /* the client went away meanwhile */
        am_http_respond(q->http, 503, "text/plain", NULL, "", 0, 1);
        http_done(q);
        req_free(q);
        if (g->free_pending && !g->n_parsing) gw_free(g);
        return;
    }
    if (status) q->parse_rc = am_api_fail(&q->err, 500, "", "the parse was cancelled");
    submit(q);
}

static void handle_generate(am_gw *g, am_http_req *r) {
    size_t bad = utf8_check(r->body, r->body_len);
    if (bad < r->body_len) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is not valid UTF-8 (byte %zu)", bad);
        send_error(r, 400, "", msg);
        return;
    }
    gw_req *q = am_calloc(1, sizeof *q);
    if (!q) {
        send_error(r, 500, "", "out of memory");
        return;
    }
    q->g = g;
    q->http = r;
    r->user = q;
    g->n_gen++;
    q->t_arrive_us = r->t_start_us;
    q->created = (int64_t)time(NULL);
    int chat = !strcmp(r->path, "/v1/chat/completions");
    snprintf(q->id, sizeof q->id, "%s-%llx%06llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)q->created, (unsigned long long)++g->next_id);
    q->work.data = q;
    if (r->body_len > AM_GW_INLINE_PARSE_BYTES) {
        q->parsing = 1;
        g->n_parsing++;
        if (!uv_queue_work(g->loop, &q->work, parse_work, parse_done)) return;
        q->parsing = 0;
        g->n_parsing--;
    }
    parse_work(&q->work);
    submit(q);
}

/* ---------------------------------------------------------------- other routes */

static void handle_models(am_gw *g, am_http_req *r) {
    cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data");
    cJSON_AddStringToObject(o, "object", "list");
    for (int i = 0; i < g->snap.n_workers; i++) {
        const snap_worker *w = &g->snap.workers[i];
        int dup = 0;
        for (int j = 0; j < i; j++)
            dup |= g->snap.workers[j].role == AM_ROLE_SHARD &&
                   !strcmp(g->snap.workers[j].model, w->model);
        if (w->role != AM_ROLE_SHARD || dup) continue;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", w->model);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)g->started_s);
        cJSON_AddStringToObject(m, "owned_by", "anymal");
        cJSON_AddItemToArray(data, m);
    }
    char *s = cJSON_PrintUnformatted(o);
    send_json(r, 200, NULL, s ? s : "{}");
    cJSON_free(s);
    cJSON_Delete(o);
}

static void handle_health(am_gw *g, am_http_req *r) {
    int fresh = snap_fresh(g), ok = fresh && g->snap.healthy;
    char body[512];
    snprintf(body, sizeof body,
             "{\"status\": \"%s\", \"coordinator\": \"%s\", \"shard_groups\": %u, "
             "\"encoders\": %u, \"active_requests\": %u}",
             ok ? "ok" : "unavailable", fresh ? "reachable" : "unreachable",
             fresh ? g->snap.shards : 0, fresh ? g->snap.encoders : 0, fresh ? g->snap.active : 0);
    send_json(r, ok ? 200 : 503, NULL, body);
}

static const char *mod_label(int m) { return am_modality_name((am_modality)m); }

static void handle_metrics(am_gw *g, am_http_req *r) {
    am_sb b = {0};
    const snapshot *s = &g->snap;
    int fresh = snap_fresh(g);
    am_sb_printf(&b,
                 "# HELP anymal:num_requests_running Generations at a shard group now.\n"
                 "# TYPE anymal:num_requests_running gauge\nanymal:num_requests_running %u\n"
                 "# HELP anymal:num_requests_waiting Generations queued at the coordinator.\n"
                 "# TYPE anymal:num_requests_waiting gauge\nanymal:num_requests_waiting %u\n"
                 "# HELP anymal:gateway_requests_in_flight Generations of this gateway not yet "
                 "answered.\n"
                 "# TYPE anymal:gateway_requests_in_flight gauge\n"
                 "anymal:gateway_requests_in_flight %zu\n",
                 fresh ? s->running : 0, fresh ? s->waiting : 0, g->tab_n);
    am_sb_printf(&b,
                 "# HELP anymal:prompt_tokens_total Prompt tokens of finished requests.\n"
                 "# TYPE anymal:prompt_tokens_total counter\nanymal:prompt_tokens_total %lld\n"
                 "# HELP anymal:generation_tokens_total Tokens generated.\n"
                 "# TYPE anymal:generation_tokens_total counter\n"
                 "anymal:generation_tokens_total %lld\n",
                 (long long)g->prompt_tokens, (long long)g->gen_tokens);
    am_sb_printf(&b, "# HELP anymal:request_success_total Finished requests by finish reason.\n"
                     "# TYPE anymal:request_success_total counter\n");
    static const char *fin[4] = {"none", "length", "eos", "stop"};
    for (int i = 1; i < 4; i++)
        am_sb_printf(&b, "anymal:request_success_total{finished_reason=\"%s\"} %lld\n", fin[i],
                     (long long)g->req_ok[i]);
    am_sb_printf(&b,
                 "# HELP anymal:request_failure_total Requests that ended with an error.\n"
                 "# TYPE anymal:request_failure_total counter\nanymal:request_failure_total "
                 "%lld\n"
                 "# HELP anymal:request_cancelled_total Requests cancelled (client gone).\n"
                 "# TYPE anymal:request_cancelled_total counter\nanymal:request_cancelled_total "
                 "%lld\n",
                 (long long)g->req_failed, (long long)g->req_cancelled);
    am_hist_render(&b, "anymal:time_to_first_token_seconds", "Time to first token.", "", &g->ttft,
                   1);
    am_hist_render(&b, "anymal:inter_token_latency_seconds", "Time between output tokens.", "",
                   &g->itl, 1);
    am_hist_render(&b, "anymal:e2e_request_latency_seconds", "End-to-end request latency.", "",
                   &g->e2e, 1);
    am_hist_render(&b, "anymal:request_queue_time_seconds",
                   "Time a generation waited at the coordinator for a shard group.", "", &g->queue,
                   1);
    am_sb_printf(&b, "# HELP anymal:encoder_requests_total Media items encoded, by modality.\n"
                     "# TYPE anymal:encoder_requests_total counter\n");
    for (int m = 0; m < AM_MOD_COUNT; m++)
        am_sb_printf(&b, "anymal:encoder_requests_total{modality=\"%s\"} %llu\n", mod_label(m),
                     (unsigned long long)s->enc_jobs[m]);
    am_sb_printf(&b, "# HELP anymal:encoder_latency_seconds Encoding latency (dispatch to rows) by "
                     "modality.\n# TYPE anymal:encoder_latency_seconds summary\n");
    for (int m = 0; m < AM_MOD_COUNT; m++)
        am_sb_printf(&b,
                     "anymal:encoder_latency_seconds_sum{modality=\"%s\"} %.6f\n"
                     "anymal:encoder_latency_seconds_count{modality=\"%s\"} %llu\n",
                     mod_label(m), s->enc_us[m] * 1e-6, mod_label(m),
                     (unsigned long long)s->enc_jobs[m]);
    uint64_t kv_free = 0, kv_total = 0;
    for (int i = 0; i < s->n_workers; i++)
        kv_free += s->workers[i].kv_free, kv_total += s->workers[i].kv_total;
    am_sb_printf(
        &b,
        "# HELP anymal:registered_workers Live workers at the coordinator, by role.\n"
        "# TYPE anymal:registered_workers gauge\nanymal:registered_workers{role=\"encoder\"} %u\n"
        "anymal:registered_workers{role=\"shard_group\"} %u\n"
        "# HELP anymal:shard_groups Live shard groups.\n# TYPE anymal:shard_groups gauge\n"
        "anymal:shard_groups %u\n"
        "# HELP anymal:num_preemptions_total Scheduler preemptions in the live shard groups.\n"
        "# TYPE anymal:num_preemptions_total counter\nanymal:num_preemptions_total %llu\n"
        "# HELP anymal:kv_cache_usage_perc KV cache in use, 0..1, over the shard groups.\n"
        "# TYPE anymal:kv_cache_usage_perc gauge\nanymal:kv_cache_usage_perc %.4f\n"
        "# HELP anymal:coordinator_up 1 while the coordinator answers.\n"
        "# TYPE anymal:coordinator_up gauge\nanymal:coordinator_up %d\n",
        fresh ? s->encoders : 0, fresh ? s->shards : 0, fresh ? s->shards : 0,
        (unsigned long long)s->preemptions,
        kv_total ? 1.0 - (double)kv_free / (double)kv_total : 0.0, fresh);
    am_http_stats hs = am_http_server_stats(g->http);
    am_sb_printf(&b,
                 "# HELP anymal:http_connections Open HTTP connections.\n"
                 "# TYPE anymal:http_connections gauge\nanymal:http_connections %lld\n"
                 "# HELP anymal:http_responses_total HTTP responses by status code.\n"
                 "# TYPE anymal:http_responses_total counter\n",
                 (long long)hs.connections_open);
    /* This response counts as 200 already: a scrape sees itself. */
    for (int code = 100; code < 600; code++) {
        int64_t n = am_http_server_code_count(g->http, code) + (code == 200);
        if (n)
            am_sb_printf(&b, "anymal:http_responses_total{code=\"%d\"} %lld\n", code, (long long)n);
    }
    if (b.oom)
        send_error(r, 500, "", "out of memory");
    else
        am_http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.s, b.len, 0);
    am_sb_fini(&b);
}

static void handle_status(am_gw *g, am_http_req *r) {
    const snapshot *s = &g->snap;
    int64_t now_s = am_now_us() / 1000000;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "coordinator", g->endpoint);
    cJSON_AddBoolToObject(o, "reachable", snap_fresh(g));
    cJSON_AddBoolToObject(o, "healthy", snap_fresh(g) && s->healthy);
    cJSON_AddNumberToObject(o, "running", s->running);
    cJSON_AddNumberToObject(o, "waiting", s->waiting);
    cJSON_AddNumberToObject(o, "preemptions", (double)s->preemptions);
    cJSON *ws = cJSON_AddArrayToObject(o, "workers");
    for (int i = 0; i < s->n_workers; i++) {
        const snap_worker *w = &s->workers[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "role", w->role == AM_ROLE_SHARD ? "shard group" : "encoder");
        cJSON_AddStringToObject(j, "name", w->name);
        cJSON_AddStringToObject(j, "model", w->model);
        cJSON_AddNumberToObject(j, "load", w->load);
        cJSON_AddNumberToObject(j, "capacity", w->capacity);
        cJSON_AddNumberToObject(j, "tp", w->tp);
        cJSON_AddNumberToObject(j, "kv_free", w->kv_free);
        cJSON_AddNumberToObject(j, "kv_total", w->kv_total);
        cJSON *mods = cJSON_AddArrayToObject(j, "modalities");
        for (int m = 0; m < AM_MOD_COUNT; m++)
            if (w->mods & (1u << m)) cJSON_AddItemToArray(mods, cJSON_CreateString(mod_label(m)));
        cJSON_AddItemToArray(ws, j);
    }
    double tok[AM_RATE_SLOTS], req[AM_RATE_SLOTS];
    am_rate_series(&g->tok_rate, now_s, tok);
    am_rate_series(&g->req_rate, now_s, req);
    cJSON *t = cJSON_AddObjectToObject(o, "last_minute");
    cJSON_AddNumberToObject(t, "tokens_per_s", am_rate_sum(&g->tok_rate, now_s) / AM_RATE_SLOTS);
    cJSON_AddNumberToObject(t, "requests_per_s", am_rate_sum(&g->req_rate, now_s) / AM_RATE_SLOTS);
    cJSON_AddItemToObject(t, "tokens", cJSON_CreateDoubleArray(tok, AM_RATE_SLOTS));
    cJSON_AddItemToObject(t, "requests", cJSON_CreateDoubleArray(req, AM_RATE_SLOTS));
    cJSON *gw = cJSON_AddObjectToObject(o, "gateway");
    cJSON_AddNumberToObject(gw, "connections",
                            (double)am_http_server_stats(g->http).connections_open);
    cJSON_AddNumberToObject(gw, "in_flight", (double)g->tab_n);
    cJSON_AddBoolToObject(gw, "api_key_required", g->o.n_api_keys > 0);
    char *str = cJSON_PrintUnformatted(o);
    send_json(r, 200, "Cache-Control: no-store\r\n", str ? str : "{}");
    cJSON_free(str);
    cJSON_Delete(o);
}

/* Constant-time comparison: the time of a refusal does not tell how much of a key matched. */
static int key_eq(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < na; i++)
        d |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return !d;
}

static int authorized(am_gw *g, am_http_req *r) {
    if (!g->o.n_api_keys) return 1;
    const char *h = am_http_header_get(r, "authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ')
        h++;
    int ok = 0;
    for (int i = 0; i < g->o.n_api_keys; i++)
        ok |= key_eq(h, g->keys[i]);
    return ok;
}

static void on_request(void *user, am_http_req *r) {
    am_gw *g = user;
    int get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
    const char *p = r->path;
    if (!strncmp(p, "/v1/", 4) && !authorized(g, r)) {
        send_error(r, 401, "", "a valid API key is needed (Authorization: Bearer KEY)");
        return;
    }
    if (!strcmp(p, "/v1/chat/completions") || !strcmp(p, "/v1/completions")) {
        if (post)
            handle_generate(g, r);
        else
            send_error(r, 405, "", "this endpoint takes POST");
    } else if (!strcmp(p, "/v1/models") && get) {
        handle_models(g, r);
    } else if ((!strcmp(p, "/health") || !strcmp(p, "/ready")) && get) {
        handle_health(g, r);
    } else if (!strcmp(p, "/metrics") && get) {
        handle_metrics(g, r);
    } else if (!strcmp(p, "/status.json") && get) {
        handle_status(g, r);
    } else if ((!strcmp(p, "/") || !strcmp(p, "/index.html")) && get) {
        am_http_respond(r, 200, "text/html; charset=utf-8", "Cache-Control: no-store\r\n",
                        am_gw_status_html, am_gw_status_html_len, 0);
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "no route %s %.200s", r->method, p);
        send_error(r, 404, "", msg);
    }
}

static void on_abort(void *user, am_http_req *r) {
    am_gw *g = user;
    gw_req *q = r->user;
    if (!q) {
        am_http_respond(r, 499, "text/plain", NULL, "", 0, 1); /* only frees it */
        return;
    }
    if (q->parsing) { /* the parse reads r: parse_done ends it */
        q->aborted = 1;
        return;
    }
    if (q->rid && !q->cancelled) {
        q->cancelled = 1;
        if (am_client_cancel(g->client, q->rid))
            AM_LOGW("gateway: cancelling request %llu: %s", (unsigned long long)q->rid,
                    am_err_msg());
    }
    am_http_respond(r, 499, "text/plain", NULL, "", 0, 1);
    http_done(q);
    if (!q->rid) req_free(q);
}

/* ---------------------------------------------------------------- life */

static int loopback(const char *host) {
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost");
}

int am_gw_new(uv_loop_t *loop, const am_gw_opts *o, am_gw **out) {
    *out = NULL;
    const char *host = o->host ? o->host : "127.0.0.1";
    if (!o->n_api_keys && !o->allow_open && !loopback(host))
        return am_err_set(AM_EINVAL,
                          "--host %s without an API key would serve anyone on the network: give "
                          "--api-key or --api-key-file, or --allow-unauthenticated",
                          host);
    if (o->n_api_keys > AM_GW_MAX_API_KEYS)
        return am_err_set(AM_ERANGE, "%d API keys (at most %d)", o->n_api_keys, AM_GW_MAX_API_KEYS);
    am_gw *g = am_calloc(1, sizeof *g);
    if (!g) return AM_ENOMEM;
    g->loop = loop;
    g->o = *o;
    g->o.host = host;
    if (!g->o.max_inflight) g->o.max_inflight = AM_GW_MAX_INFLIGHT_DEF;
    g->started_s = (int64_t)time(NULL);
    snprintf(g->endpoint, sizeof g->endpoint, "%s", o->coordinator);
    for (int i = 0; i < o->n_api_keys; i++) {
        size_t n = strlen(o->api_keys[i]) + 1;
        if (!(g->keys[i] = am_malloc(n))) {
            for (int k = 0; k < i; k++)
                am_free(g->keys[k]);
            am_free(g);
            return AM_ENOMEM;
        }
        memcpy(g->keys[i], o->api_keys[i], n);
    }
    g->o.api_keys = NULL;
    am_hist_init(&g->ttft, LAT_BUCKETS, NB(LAT_BUCKETS));
    am_hist_init(&g->e2e, LAT_BUCKETS, NB(LAT_BUCKETS));
    am_hist_init(&g->queue, LAT_BUCKETS, NB(LAT_BUCKETS));
    am_hist_init(&g->itl, ITL_BUCKETS, NB(ITL_BUCKETS));
    am_client_opts co = {.endpoint = o->coordinator,
                         .curve_key = o->curve_key,
                         .coordinator_key = o->coordinator_key};
    int fd, rc = am_client_new_opts(&co, &g->client);
    if (!rc) rc = am_client_fd(g->client, &fd);
    if (rc) {
        am_client_destroy(&g->client);
        gw_free(g);
        return rc;
    }
    am_client_set_nonblocking(g->client, 1);
    am_http_opts ho = {.host = host,
                       .port = o->port,
                       .max_body_bytes = o->max_body_bytes,
                       .request_timeout_ms = o->request_timeout_ms,
                       .idle_timeout_ms = o->idle_timeout_ms,
                       .max_connections = o->max_connections,
                       .handler = on_request,
                       .on_abort = on_abort,
                       .error_body = error_body,
                       .user = g};
    if ((rc = am_http_server_new(loop, &ho, &g->http))) {
        gw_free(g);
        return rc;
    }
    uv_poll_init(loop, &g->zpoll, fd);
    uv_prepare_init(loop, &g->zprep);
    uv_timer_init(loop, &g->health_timer);
    g->zpoll.data = g->zprep.data = g->health_timer.data = g;
    uv_poll_start(&g->zpoll, UV_READABLE, on_zpoll);
    uv_prepare_start(&g->zprep, on_zprep);
    uv_timer_start(&g->health_timer, on_health_timer, 0, AM_GW_HEALTH_POLL_MS);
    g->handles_open = 3;
    *out = g;
    return 0;
}

int am_gw_port(const am_gw *g) { return am_http_server_port(g->http); }

static void gw_free(am_gw *g) {
    for (size_t i = 0; i < g->tab_cap; i++)
        if (g->tab[i]) {
            g->tab[i]->http = NULL;
            req_free(g->tab[i]);
        }
    am_free(g->tab);
    am_client_destroy(&g->client);
    for (int i = 0; i < AM_GW_MAX_API_KEYS; i++)
        am_free(g->keys[i]);
    am_free(g);
}

static void on_closed(uv_handle_t *h) {
    am_gw *g = h->data;
    if (--g->handles_open) return;
    if (g->n_parsing)
        g->free_pending = 1; /* the last parse_done frees it */
    else
        gw_free(g);
}

void am_gw_close(am_gw *g) {
    if (!g || g->closing) return;
    g->closing = 1;
    /* Cancel what runs: the shard groups free those KV blocks now, not at the deadline. */
    for (size_t i = 0; i < g->tab_cap; i++)
        if (g->tab[i] && g->client) (void)am_client_cancel(g->client, g->tab[i]->rid);
    if (g->http) am_http_server_close(g->http); /* aborts the HTTP side of each */
    uv_close((uv_handle_t *)&g->zpoll, on_closed);
    uv_close((uv_handle_t *)&g->zprep, on_closed);
    uv_close((uv_handle_t *)&g->health_timer, on_closed);
}
