/* workers/shard_leader.c - the shard leader's engine loop: wire messages <-> scheduler. */
#include "workers/shard_leader.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "encoders/modality.h"
#include "llm_shards/sched.h"
#include "proto/transport.h"
#include "workers/model_identity.h"
#include "workers/worker_link.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

typedef struct lreq {
    uint64_t id;
    int submitted, orphan;
    am_msg gen;                                /* GENERATE as received (segments, stop strings) */
    int32_t part_seg[AM_PROTO_MAX_PAYLOADS];   /* part -> scheduler segment */
    uint32_t part_rows[AM_PROTO_MAX_PAYLOADS]; /* 0 = unknown yet */
    float *early[AM_PROTO_MAX_PAYLOADS];       /* rows that came before submission */
    int n_parts;
    double t_held;
    /* Tokens generated since the last TOKEN sent (stream interval). */
    int32_t *pend_ids;
    uint32_t n_pend, cap_pend;
    char *pend_text;
    size_t len_text, cap_text;
    double t_sent; /* when its last TOKEN went out (0: none yet) */
    struct leader *L;
} lreq;

typedef struct leader {
    void *pipe;
    am_sched *s;
    const am_tokenizer *tok;
    int32_t dim;
    lreq **reqs;
    int n_reqs, cap;
    am_mod_config *mods; /* the encoders' configs, for slot sizes (no weights) */
    am_shard_leader_stats st;
    double stream_s; /* a request's tokens go out together at most this often */
    int n_pending;   /* requests with unsent tokens */
    double t_report; /* the last KV report (report()) */
    int32_t rep_free, rep_live;
    int64_t rep_preempt;
} leader;

static lreq *find(leader *L, uint64_t id) {
    for (int i = 0; i < L->n_reqs; i++)
        if (L->reqs[i]->id == id) return L->reqs[i];
    return NULL;
}

static void drop(leader *L, lreq *r) {
    for (int i = 0; i < L->n_reqs; i++)
        if (L->reqs[i] == r) L->reqs[i] = L->reqs[--L->n_reqs];
    for (int p = 0; p < r->n_parts; p++)
        am_free(r->early[p]);
    if (r->n_pend || r->len_text) L->n_pending--;
    am_free(r->pend_ids);
    am_free(r->pend_text);
    am_msg_fini(&r->gen);
    am_free(r);
}

static void send_error(leader *L, uint64_t id, int rc, const char *what) {
    am_msg m;
    am_msg_init(&m, AM_CMD_ERROR);
    m.id = id;
    m.code = am_wire_code(rc);
    m.message = what && what[0] ? what : am_strerror(rc);
    (void)am_wire_send(L->pipe, NULL, 0, &m, NULL, 0, 0);
}

/* Puts r's unsent tokens into m (a TOKEN) and forgets them once m is sent. */
static void take_pending(lreq *r, am_msg *m) {
    m->ids = r->n_pend ? r->pend_ids : NULL;
    m->n_ids = r->n_pend;
    m->text = r->len_text ? r->pend_text : NULL;
    m->text_len = (uint32_t)r->len_text;
}

static void clear_pending(lreq *r, double now) {
    if (r->n_pend || r->len_text) r->L->n_pending--;
    r->n_pend = 0;
    r->len_text = 0;
    r->t_sent = now;
}

static void flush(lreq *r, double now) {
    if (!r->n_pend && !r->len_text) return;
    am_msg m;
    am_msg_init(&m, AM_CMD_TOKEN);
    m.id = r->id;
    take_pending(r, &m);
    (void)am_wire_send(r->L->pipe, NULL, 0, &m, NULL, 0, 0);
    clear_pending(r, now);
}

/* Every token is kept, and a request's kept tokens go out in one TOKEN when
 * its last TOKEN is at least stream_s old: the first token at once, a slow
 * model's every token at once, a fast one's a few per message (per-token
 * messages would cost more than a tiny model's decode step). */
static int on_token(void *user, int32_t id, const char *text, size_t len) {
    lreq *r = user;
    leader *L = r->L;
    if (r->orphan) return 1;
    if (id >= 0 && r->n_pend == r->cap_pend) {
        uint32_t cap = r->cap_pend ? 2 * r->cap_pend : 16;
        int32_t *g = am_realloc(r->pend_ids, cap * sizeof *g);
        if (!g) return 1; /* out of memory: cancelled */
        r->pend_ids = g, r->cap_pend = cap;
    }
    if (len && r->len_text + len > r->cap_text) {
        size_t cap = r->cap_text ? 2 * r->cap_text : 64;
        while (cap < r->len_text + len)
            cap *= 2;
        char *g = am_realloc(r->pend_text, cap);
        if (!g) return 1;
        r->pend_text = g, r->cap_text = cap;
    }
    if (!r->n_pend && !r->len_text && (id >= 0 || len)) L->n_pending++;
    if (id >= 0) r->pend_ids[r->n_pend++] = id, L->st.tokens++;
    if (len) memcpy(r->pend_text + r->len_text, text, len), r->len_text += len;
    double now = am_now_s();
    if (now - r->t_sent >= L->stream_s) flush(r, now);
    return 0;
}

/* Sends what has waited stream_s (a request that stopped getting tokens for a while). */
static void flush_due(leader *L) {
    if (!L->n_pending) return;
    double now = am_now_s();
    for (int i = 0; i < L->n_reqs; i++)
        if (!L->reqs[i]->orphan && now - L->reqs[i]->t_sent >= L->stream_s) flush(L->reqs[i], now);
}

/* ---- Building a request for the scheduler (try_submit). ---- */

/* A growable array of token ids; v is freed with am_free. */
typedef struct id_buf {
    int32_t *v;
    int64_t n, cap;
} id_buf;

/* Appends n ids. 0, or AM_ENOMEM with a message. */
static int ids_append(id_buf *b, const int32_t *ids, int64_t n) {
    if (n <= 0) return 0;
    if (b->n + n > b->cap) {
        int64_t cap = (b->n + n) * 2;
        int32_t *v = am_realloc(b->v, (size_t)cap * sizeof *v);
        if (!v)
            return am_err_set(AM_ENOMEM, "out of memory for the prompt's %lld token ids",
                              (long long)(b->n + n));
        b->v = v, b->cap = cap;
    }
    memcpy(b->v + b->n, ids, (size_t)n * sizeof *ids);
    b->n += n;
    return 0;
}

/* Appends the tokens that segment i of g contributes: BOS before segment 0
 * when asked, a text segment tokenized, token ids as given (i == g->n_segs:
 * only the BOS of an empty prompt). 0 or an AM_E* code with a message. */
static int append_seg_tokens(const leader *L, const am_msg *g, uint32_t i, id_buf *b) {
    if (i == 0 && g->add_bos) {
        const int32_t bos = L->tok ? am_tokenizer_bos(L->tok) : AM_LLAMA_BOS;
        int rc = ids_append(b, &bos, 1);
        if (rc) return rc;
    }
    if (i == g->n_segs) return 0;
    const am_msg_seg *s = &g->segs[i];
    if (s->kind == AM_SEG_IDS) return ids_append(b, s->ids, s->n_ids);
    if (s->kind != AM_SEG_TEXT) return 0;
    if (!L->tok) return am_err_set(AM_EINVAL, "this shard group has no tokenizer: send token ids");
    int32_t *t = NULL;
    int64_t nt = 0;
    int rc = am_tokenizer_encode(L->tok, s->text, s->text_len, 0, &t, &nt);
    if (!rc) rc = ids_append(b, t, nt);
    am_free(t);
    return rc;
}

/* The scheduler's segments of r's prompt in segs (*n of them): adjacent
 * tokens of text, ids and BOS merged into one segment whose ids point into b
 * (the caller frees b->v after submitting), one embedding slot per media part
 * (r->part_seg records which). 0 or an AM_E* code with a message. */
static int build_segs(const leader *L, lreq *r, id_buf *b, am_prompt_seg *segs, int *n) {
    const am_msg *g = &r->gen;
    /* b->v moves as it grows: token segments keep offsets until the end. */
    int64_t starts[AM_PROTO_MAX_SEGMENTS + 2];
    int tok_seg[AM_PROTO_MAX_SEGMENTS + 2];
    int n_tok = 0, part = 0;
    *n = 0;
    for (uint32_t i = 0; i <= g->n_segs; i++) {
        const int64_t start = b->n;
        int rc = append_seg_tokens(L, g, i, b);
        if (rc) return rc;
        const int64_t n_piece = b->n - start;
        if (n_piece && *n && segs[*n - 1].kind == AM_SEG_TOKENS) {
            segs[*n - 1].n += (int32_t)n_piece;
        } else if (n_piece) {
            starts[n_tok] = start;
            tok_seg[n_tok++] = *n;
            segs[(*n)++] = (am_prompt_seg){.kind = AM_SEG_TOKENS, .n = (int32_t)n_piece};
        }
        if (i < g->n_segs && g->segs[i].kind == AM_SEG_MEDIA) {
            /* n = 0: a pending slot of unknown size (IMU), sized by its rows when they come. */
            r->part_seg[part] = *n;
            segs[(*n)++] = (am_prompt_seg){
                .kind = AM_SEG_EMBD, .n = (int32_t)r->part_rows[part], .rows = r->early[part]};
            part++;
        }
    }
    for (int k = 0; k < n_tok; k++)
        segs[tok_seg[k]].ids = b->v + starts[k];
    return 0;
}

/* Sampling, length and stop strings of a GENERATE. */
static am_gen_params gen_params(const am_msg *g) {
    am_gen_params p = {.sampling = am_sampling_default()};
    p.sampling.temperature = g->temperature;
    p.sampling.top_k = g->top_k;
    p.sampling.top_p = g->top_p;
    p.sampling.repetition_penalty = g->repetition_penalty;
    p.sampling.seed = g->seed;
    p.max_tokens = (int32_t)g->max_tokens;
    p.ignore_eos = g->ignore_eos;
    p.stop = g->stop;
    p.n_stop = (int)g->n_stop;
    return p;
}

static void on_done(void *user, uint64_t id, const am_gen_result *res, int err) {
    lreq *r = user;
    leader *L = r->L;
    (void)id;
    if (!r->orphan) {
        if (err) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", am_err_msg());
            flush(r, am_now_s()); /* what was generated before the error */
            send_error(L, r->id, err, msg);
        } else {
            static const uint8_t fin[] = {AM_FIN_LENGTH, AM_FIN_EOS, AM_FIN_STOP, AM_FIN_CANCELLED};
            am_msg m;
            am_msg_init(&m, AM_CMD_TOKEN);
            m.id = r->id;
            take_pending(r, &m); /* the final TOKEN carries the last tokens */
            m.finish = (unsigned)res->finish < 4 ? fin[res->finish] : AM_FIN_LENGTH;
            m.prompt_tokens = (uint32_t)res->n_prompt;
            m.completion_tokens = (uint32_t)res->n_ids;
            (void)am_wire_send(L->pipe, NULL, 0, &m, NULL, 0, 0);
        }
    }
    drop(L, r);
}

/* Rows a media slot will have, when the model directory says (0 = not known before encoding). */
static uint32_t slot_rows(leader *L, const am_msg_seg *s) {
    return (uint32_t)am_mod_config_rows(L->mods, s->modality, s->frames);
}

/* Builds the scheduler's segments and submits; 0, or an error already reported to the coordinator.
 */
static int try_submit(leader *L, lreq *r) {
    am_prompt_seg segs[AM_PROTO_MAX_SEGMENTS + 2];
    id_buf ids = {0};
    int n = 0;
    int rc = build_segs(L, r, &ids, segs, &n);
    int64_t known_rows = 0;
    for (int k = 0; k < n && !rc; k++)
        known_rows += segs[k].n;
    if (!rc &&
        !known_rows) { /* only slots of unknown size: nothing could run; held until rows come */
        am_free(ids.v);
        return 0;
    }
    if (!rc && n > AM_SCHED_MAX_SEGMENTS)
        rc = am_err_set(AM_ERANGE, "the prompt has %d segments after merging text (at most %d)", n,
                        AM_SCHED_MAX_SEGMENTS);
    if (!rc) {
        am_sched_request q = {.id = r->id,
                              .segs = segs,
                              .n_segs = n,
                              .on_token = on_token,
                              .on_done = on_done,
                              .user = r,
                              .params = gen_params(&r->gen)};
        rc = am_sched_submit(L->s, &q);
    }
    am_free(ids.v);
    if (rc) {
        send_error(L, r->id, rc, am_err_msg());
        drop(L, r);
        return rc;
    }
    r->submitted = 1;
    if (r->t_held > 0) L->st.held_s += am_now_s() - r->t_held;
    for (int p = 0; p < r->n_parts; p++)
        am_free(r->early[p]), r->early[p] = NULL;
    L->st.requests++;
    return 0;
}

static void on_generate(leader *L, am_msg *m) {
    if (find(L, m->id)) {
        send_error(L, m->id, AM_EINVAL, "request id already live on this shard group");
        return;
    }
    lreq *r = am_calloc(1, sizeof *r);
    lreq **grown = L->n_reqs == L->cap
                       ? am_realloc(L->reqs, (size_t)(L->cap ? 2 * L->cap : 64) * sizeof *grown)
                       : L->reqs;
    if (!r || !grown) {
        am_free(r);
        if (grown) L->reqs = grown;
        send_error(L, m->id, AM_ENOMEM, "out of memory");
        return;
    }
    if (L->n_reqs == L->cap) L->cap = L->cap ? 2 * L->cap : 64;
    L->reqs = grown;
    L->reqs[L->n_reqs++] = r;
    r->id = m->id;
    r->L = L;
    r->gen = *m;
    memset(m, 0, sizeof *m);
    for (uint32_t i = 0; i < r->gen.n_segs; i++) {
        const am_msg_seg *s = &r->gen.segs[i];
        if (s->kind != AM_SEG_MEDIA) continue;
        if (r->n_parts == AM_PROTO_MAX_PAYLOADS) {
            send_error(L, r->id, AM_ERANGE, "too many media parts");
            drop(L, r);
            return;
        }
        r->part_rows[r->n_parts] = s->n_rows ? s->n_rows : slot_rows(L, s);
        r->n_parts++;
    }
    r->t_held = am_now_s();
    (void)try_submit(L, r);
}

static void on_embed(leader *L, const am_msg *m) {
    lreq *r = find(L, m->id);
    if (!r || m->part >= (uint32_t)r->n_parts) return; /* ended meanwhile */
    const float *rows = m->payloads[0].data;
    if ((int32_t)m->dim != L->dim ||
        (r->part_rows[m->part] && r->part_rows[m->part] != m->n_rows)) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "part %u: %u rows of width %u, the slot wants %u rows of width %d", m->part,
                 m->n_rows, m->dim, r->part_rows[m->part], L->dim);
        if (r->submitted) {
            r->orphan = 1; /* the ERROR below is its end */
            (void)am_sched_cancel(L->s, r->id);
            send_error(L, m->id, AM_EINVAL, msg);
        } else {
            send_error(L, m->id, AM_EINVAL, msg);
            drop(L, r);
        }
        return;
    }
    if (r->submitted) {
        const uint64_t id = r->id;
        r->part_rows[m->part] = m->n_rows; /* a slot of unknown size is sized now */
        int rc = am_sched_supply(L->s, id, r->part_seg[m->part], rows, (int32_t)m->n_rows);
        if (!rc) return;
        /* A slot sized now that makes the prompt too long has already ended
         * the request (on_done sent the ERROR and freed r). Anything else
         * (out of memory) ends it here. */
        AM_LOGW("shard leader: rows of request %llu part %u: %s", (unsigned long long)id, m->part,
                am_err_msg());
        if ((r = find(L, id))) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", am_err_msg());
            r->orphan = 1;
            (void)am_sched_cancel(L->s, id);
            send_error(L, id, rc, msg);
        }
        return;
    }
    size_t bytes = (size_t)m->n_rows * m->dim * sizeof(float);
    am_free(r->early[m->part]);
    if (!(r->early[m->part] = am_malloc(bytes))) {
        send_error(L, r->id, AM_ENOMEM, "out of memory for rows");
        drop(L, r);
        return;
    }
    memcpy(r->early[m->part], rows, bytes);
    r->part_rows[m->part] = m->n_rows;
    (void)try_submit(L, r);
}

static void on_cancel(leader *L, uint64_t id) {
    lreq *r = find(L, id);
    if (!r) return;
    if (r->submitted) {
        (void)am_sched_cancel(L->s, id); /* on_done sends the final TOKEN */
        return;
    }
    am_msg m;
    am_msg_init(&m, AM_CMD_TOKEN);
    m.id = id;
    m.finish = AM_FIN_CANCELLED;
    (void)am_wire_send(L->pipe, NULL, 0, &m, NULL, 0, 0);
    drop(L, r);
}

static void session_lost(leader *L) {
    while (L->n_reqs) {
        lreq *r = L->reqs[L->n_reqs - 1];
        r->orphan = 1;
        if (r->submitted) {
            if (am_sched_cancel(L->s, r->id)) drop(L, r);
        } else {
            drop(L, r);
        }
    }
}

static void drain(leader *L) {
    for (;;) {
        am_wire_in in;
        if (am_wire_recv(L->pipe, 0, &in)) return;
        am_msg m;
        if (am_wire_decode(&in, &m)) {
            AM_LOGW("shard leader: dropped a malformed message: %s", am_err_msg());
        } else if (m.cmd == AM_CMD_GENERATE) {
            on_generate(L, &m);
        } else if (m.cmd == AM_CMD_EMBED) {
            on_embed(L, &m);
        } else if (m.cmd == AM_CMD_CANCEL) {
            on_cancel(L, m.id);
        } else if (m.cmd == AM_CMD_DISCONNECT) {
            session_lost(L);
        }
        am_msg_fini(&m);
        am_wire_in_close(&in);
    }
}

/* Reports the KV cache and preemptions to the coordinator in a HEARTBEAT (which the
 * link forwards as is), when they changed and at most every AM_SHARD_LEADER_REPORT_MS,
 * and at least every second: front ends show them (/metrics) and tests check that a
 * cancelled request's blocks came back. */
static void report(leader *L, double now) {
    int32_t free_b = am_sched_free_blocks(L->s), live = am_sched_n_live(L->s);
    int64_t pre = am_sched_get_stats(L->s)->preemptions;
    int changed = free_b != L->rep_free || live != L->rep_live || pre != L->rep_preempt;
    if (now - L->t_report < (changed ? AM_SHARD_LEADER_REPORT_MS * 1e-3 : 1.0)) return;
    am_msg m;
    am_msg_init(&m, AM_CMD_HEARTBEAT);
    m.load = (uint32_t)live;
    m.kv_free = (uint32_t)free_b;
    m.kv_total = (uint32_t)am_sched_total_blocks(L->s);
    m.preemptions = (uint64_t)pre;
    if (am_wire_send(L->pipe, NULL, 0, &m, NULL, 0, ZMQ_DONTWAIT)) return;
    L->t_report = now;
    L->rep_free = free_b, L->rep_live = live, L->rep_preempt = pre;
}

int am_shard_leader_run(am_llama_ctx *ctx, const am_tokenizer *tok, const am_shard_leader_opts *o,
                        volatile sig_atomic_t *stop, am_shard_leader_stats *st) {
    leader L = {.tok = tok,
                .stream_s = (o->stream_ms > 0   ? o->stream_ms
                             : o->stream_ms < 0 ? 0
                                                : AM_SHARD_LEADER_STREAM_MS) *
                            1e-3};
    am_link *link = NULL;
    const am_llama_model *model = am_llama_ctx_model(ctx);
    L.dim = model->cfg.dim;
    char mname[AM_PROTO_MAX_NAME_BYTES + 1], fp[17], name[64];
    int rc = am_model_identity(o->model_path, mname, sizeof mname, fp);
    if (!rc) rc = am_sched_new(ctx, tok, o->max_batch, &L.s);
    if (rc) goto done;
    /* Slot sizes come from the encoder configs alone (encoders/modality.h). */
    if ((rc = am_mod_config_load(o->model_path, &L.mods))) goto done;
    am_err_clear();
    snprintf(name, sizeof name, "shard-%d", (int)getpid());
    am_link_opts lo = o->link;
    am_msg_init(&lo.ready, AM_CMD_READY);
    lo.ready.role = AM_ROLE_SHARD;
    lo.ready.name = o->name ? o->name : name;
    lo.ready.model = o->model_name ? o->model_name : mname;
    lo.ready.fingerprint = fp;
    lo.ready.capacity =
        (uint32_t)(o->capacity > 0 ? o->capacity : AM_SHARD_LEADER_CAPACITY_DEFAULT);
    lo.ready.out_dim = (uint32_t)L.dim;
    lo.ready.tp_size = (uint32_t)(o->tp_size > 0 ? o->tp_size : 1);
    if ((rc = am_link_new(&lo, &link))) goto done;
    L.pipe = am_link_pipe(link);
    double t_last = am_now_s();
    am_drain drain_state = {0};
    while (*stop < 2) {
        am_link_alive(link);
        if (*stop == 1 && am_drain_poll(&drain_state, L.pipe, L.n_reqs, o->drain_ms)) break;
        drain(&L);
        int s = am_sched_step(L.s);
        double now = am_now_s();
        if (s > 0) {
            L.st.busy_s += now - t_last;
            L.st.steps++;
            t_last = now;
            flush_due(&L);
            report(&L, now);
            continue;
        }
        flush_due(&L);
        report(&L, now);
        if (s < 0) AM_LOGW("shard leader: a step failed: %s", am_err_msg());
        int live = am_sched_n_live(L.s) > 0;
        zmq_pollitem_t pi = {L.pipe, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, AM_SHARD_LEADER_IDLE_POLL_MS) < 0 && zmq_errno() != EINTR) break;
        now = am_now_s();
        if (live)
            L.st.wait_rows_s += now - t_last;
        else
            L.st.idle_s += now - t_last;
        t_last = now;
    }
    AM_LOGI("shard leader: %lld requests, %lld tokens, %lld steps; busy %.3f s, idle %.3f s, "
            "waiting for rows %.3f s",
            (long long)L.st.requests, (long long)L.st.tokens, (long long)L.st.steps, L.st.busy_s,
            L.st.idle_s, L.st.wait_rows_s);
done:
    if (L.s) {
        for (int i = 0; i < L.n_reqs; i++)
            L.reqs[i]->orphan = 1;
        am_sched_destroy(&L.s); /* cancels what is live (on_done frees those) */
    }
    while (L.n_reqs)
        drop(&L, L.reqs[L.n_reqs - 1]);
    am_free(L.reqs);
    am_link_destroy(&link);
    am_mod_config_destroy(&L.mods);
    if (st) *st = L.st;
    return rc;
}
