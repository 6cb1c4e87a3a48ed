/* llm_shards/sched.c - continuous batching: which rows go into each step.
 *
 * A sequence's inputs are its prompt rows followed by the tokens it has
 * generated; n_known counts them. Its KV cache holds the first n_computed
 * positions. Prefill and decode are then the same thing: a step computes some
 * of the positions n_computed .. n_known - 1 (a decode step is the one
 * position of the last sampled token), and when a step reaches n_known the
 * last row's logits give the next token. A pending embedding slot caps the
 * rows a sequence can run at the slot's first position until the rows come.
 *
 * Building a step (see sched.h for the policy):
 *   1. decoding sequences (one row each), oldest first;
 *   2. running sequences with more rows (prefill chunks), oldest first;
 *   3. waiting sequences, oldest first, while the budget and blocks last and
 *      no older sequence is short of blocks.
 * A sequence that needs a block when none is free takes one from the newest
 * running sequence not in the step (preempting it), or, in pass 1 when it is
 * itself the newest, preempts itself.
 */
#include "llm_shards/sched.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "llm_shards/kv_blocks.h"
#include "llm_shards/sampler.h"

#include <string.h>

typedef struct seg {
    am_seg_kind kind;
    int32_t n;
    int32_t pos0; /* position of its first row in the sequence */
    int32_t *ids; /* TOKENS: (n) */
    float *rows;  /* EMBD: (n, C); NULL while pending */
} seg;

typedef enum { SEQ_WAITING = 0, SEQ_RUNNING = 1 } seq_state;

typedef struct seq {
    uint64_t id;
    uint64_t arrival; /* submission order: the FCFS key */
    seq_state state;
    seg *segs; /* (n_segs) */
    int32_t n_segs;
    int32_t n_prompt;     /* prompt rows */
    am_gen_params params; /* stop strings point into stop_copy */
    char **stop_copy;     /* (n_stop) owned copies */
    am_token_cb on_token;
    am_sched_done_cb on_done;
    void *user;
    am_sampler *sampler;
    am_gen_stream stream;
    int32_t *history; /* (prompt token ids + max_tokens) for the repetition penalty */
    int64_t n_hist;
    int32_t *blocks;        /* (max_blocks) block table */
    int32_t n_blocks;       /* blocks held */
    int32_t n_computed;     /* positions in the cache */
    int32_t n_computed_max; /* the most it ever had (rows below it are recomputation) */
    int32_t step_slot;      /* index in the step being built or processed, or -1 */
    double t_submit, t_first;
    struct seq *prev, *next; /* in the queue or the running list, by arrival */
} seq;

typedef struct seq_list {
    seq *head, *tail;
    int32_t n;
} seq_list;

/* One sequence's share of the step being built. */
typedef struct step_part {
    seq *s;
    int32_t rows;
    int32_t want_logits;
} step_part;

struct am_sched {
    am_llama_ctx *ctx;
    const am_tokenizer *tok;
    const am_llama_model *m;
    am_kv_blocks *blocks;
    int32_t block_size;
    int32_t max_batch; /* rows per step */
    uint64_t next_arrival;
    seq_list queue;   /* waiting: not admitted, or preempted */
    seq_list running; /* admitted: holding blocks */
    am_sched_stats stats;
    /* The step being built (all (max_batch)). */
    step_part *parts;
    int32_t n_parts;
    int32_t *ids;        /* (max_batch) */
    float *embd;         /* (max_batch, C) */
    am_attn_seq *aseqs;  /* (max_batch) */
    int32_t *n_tables;   /* (max_batch) */
    int32_t *logit_rows; /* (max_batch) */
    float *logits;       /* (logits_cap, V) */
    int32_t logits_cap;
};

/* ---- lists ---- */

static void list_remove(seq_list *l, seq *q) {
    if (q->prev)
        q->prev->next = q->next;
    else
        l->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->tail = q->prev;
    q->prev = q->next = NULL;
    l->n--;
}

/* Inserts q in arrival order (new arrivals go to the tail in O(1)). */
static void list_insert(seq_list *l, seq *q) {
    seq *after = l->tail;
    while (after && after->arrival > q->arrival)
        after = after->prev;
    q->prev = after;
    q->next = after ? after->next : l->head;
    if (q->next)
        q->next->prev = q;
    else
        l->tail = q;
    if (after)
        after->next = q;
    else
        l->head = q;
    l->n++;
}

static seq *find_live(am_sched *s, uint64_t id) {
    seq_list *lists[] = {&s->running, &s->queue};
    for (int i = 0; i < 2; i++)
        for (seq *q = lists[i]->head; q; q = q->next)
            if (q->id == id) return q;
    return NULL;
}

/* ---- a sequence's inputs ---- */

static int32_t n_known(const seq *q) { return q->n_prompt + (int32_t)q->stream.n_ids; }

/* The first slot whose rows have not come, or -1. */
static int32_t first_pending(const seq *q) {
    for (int32_t i = 0; i < q->n_segs; i++)
        if (q->segs[i].kind == AM_SEG_EMBD && !q->segs[i].rows) return i;
    return -1;
}

/* Positions the sequence could have computed now: its known inputs, up to
 * the first pending slot. */
static int32_t n_available(const seq *q) {
    int32_t i = first_pending(q);
    return i >= 0 ? q->segs[i].pos0 : n_known(q);
}

static int32_t runnable(const seq *q) { return n_available(q) - q->n_computed; }

static int32_t blocks_for(const am_sched *s, int64_t positions) {
    return (int32_t)((positions + s->block_size - 1) / s->block_size);
}

/* ---- ending and preempting ---- */

static void seq_free(seq *q) {
    for (int32_t i = 0; i < q->n_segs; i++) {
        am_free(q->segs[i].ids);
        am_free(q->segs[i].rows);
    }
    am_free(q->segs);
    for (int i = 0; q->stop_copy && i < q->params.n_stop; i++)
        am_free(q->stop_copy[i]);
    am_free(q->stop_copy);
    am_sampler_destroy(&q->sampler);
    am_gen_stream_fini(&q->stream);
    am_free(q->history);
    am_free(q->blocks);
    am_free(q);
}

static void release_blocks(am_sched *s, seq *q) {
    am_kv_blocks_free(s->blocks, q->blocks, q->n_blocks);
    q->n_blocks = 0;
}

/* Takes q out of the scheduler, frees its blocks, calls on_done once. */
static void finish_seq(am_sched *s, seq *q, int err) {
    list_remove(q->state == SEQ_RUNNING ? &s->running : &s->queue, q);
    release_blocks(s, q);
    if (q->step_slot >= 0) s->parts[q->step_slot].s = NULL;
    if (err)
        s->stats.failed++;
    else if (q->stream.finish == AM_FINISH_CANCELLED)
        s->stats.cancelled++;
    else
        s->stats.finished++;
    am_gen_result r;
    int rc = am_gen_stream_result(&q->stream, q->on_token, q->user, &r);
    if (rc) memset(&r, 0, sizeof r);
    r.finish = q->stream.finish;
    r.n_prompt = q->n_prompt;
    double now = am_now_s();
    r.prefill_s = q->t_first > 0 ? q->t_first - q->t_submit : now - q->t_submit;
    r.decode_s = q->t_first > 0 ? now - q->t_first : 0.0;
    if (q->on_done) q->on_done(q->user, q->id, &r, err ? err : rc);
    am_gen_result_fini(&r);
    seq_free(q);
}

static void preempt(am_sched *s, seq *q) {
    list_remove(&s->running, q);
    release_blocks(s, q);
    q->n_computed = 0;
    q->state = SEQ_WAITING;
    list_insert(&s->queue, q);
    s->stats.preemptions++;
}

/* Makes q hold blocks for its first `positions` positions, preempting newer
 * running sequences that are not in the step (or q itself when allowed and
 * it is the newest). Returns 1 when q has them, 0 when not (q may then have
 * been preempted: check q->state). */
static int reserve_blocks(am_sched *s, seq *q, int32_t positions, int may_preempt_self) {
    int32_t need = blocks_for(s, positions) - q->n_blocks;
    if (need <= 0) return 1;
    while (am_kv_blocks_n_free(s->blocks) < need) {
        seq *victim = s->running.tail;
        while (victim && victim != q && victim->step_slot >= 0)
            victim = victim->prev;
        if (!victim || (victim == q && !may_preempt_self)) return 0;
        if (victim->arrival < q->arrival) return 0; /* never for a newer sequence */
        preempt(s, victim);
        if (victim == q) return 0;
    }
    am_kv_blocks_alloc(s->blocks, need, q->blocks + q->n_blocks);
    q->n_blocks += need;
    return 1;
}

static void add_part(am_sched *s, seq *q, int32_t rows, int32_t *budget) {
    q->step_slot = s->n_parts;
    /* A part samples when it ends the known inputs, and no slot is pending: a slot of
     * unknown size (n = 0) at the end of the prompt leaves the known inputs ending at
     * the text before it, and sampling there would answer a prompt without its media. */
    const int samples = q->n_computed + rows == n_known(q) && first_pending(q) < 0;
    s->parts[s->n_parts++] = (step_part){q, rows, samples};
    *budget -= rows;
}

/* Chooses the step's parts (see the top of the file). */
static void build_step(am_sched *s) {
    int32_t budget = s->max_batch;
    s->n_parts = 0;
    /* 1. decode rows */
    for (seq *q = s->running.head, *next; q && budget > 0; q = next) {
        if (runnable(q) != 1 || q->n_computed < q->n_prompt) {
            next = q->next;
            continue;
        }
        if (reserve_blocks(s, q, q->n_computed + 1, 1)) add_part(s, q, 1, &budget);
        /* Preemption removed newer sequences from the list; when it took q
         * itself, q was the newest one not in the step: nothing follows. */
        next = q->state == SEQ_RUNNING ? q->next : NULL;
    }
    /* 2. prefill chunks of running sequences */
    int short_of_blocks = 0;
    for (seq *q = s->running.head; q && budget > 0; q = q->next) {
        if (q->step_slot >= 0) continue;
        int32_t rows = runnable(q);
        if (rows <= 0) continue;
        if (rows > budget) rows = budget;
        if (!reserve_blocks(s, q, q->n_computed + rows, 0)) {
            /* Run what the blocks it holds and the free ones cover. */
            int32_t fit =
                (q->n_blocks + am_kv_blocks_n_free(s->blocks)) * s->block_size - q->n_computed;
            short_of_blocks = 1;
            if (fit <= 0) continue;
            rows = fit < rows ? fit : rows;
            reserve_blocks(s, q, q->n_computed + rows, 0);
        }
        add_part(s, q, rows, &budget);
    }
    /* 3. admissions, oldest first; one whose first row is a pending slot
     * cannot run yet and lets the next one go. */
    for (seq *q = s->queue.head, *next; q && !short_of_blocks && budget > 0; q = next) {
        next = q->next;
        int32_t avail = n_available(q);
        if (avail <= 0) continue;
        if (blocks_for(s, avail) > am_kv_blocks_n_free(s->blocks)) break;
        list_remove(&s->queue, q);
        q->state = SEQ_RUNNING;
        list_insert(&s->running, q);
        int32_t rows = avail < budget ? avail : budget;
        reserve_blocks(s, q, rows, 0); /* the blocks were checked above */
        add_part(s, q, rows, &budget);
    }
}

/* The input of position p of q: a token id, or AM_LLAMA_EMBD_ROW with *row set. */
static int32_t input_at(const seq *q, int32_t p, const float **row, int64_t C) {
    if (p >= q->n_prompt) return q->stream.ids[p - q->n_prompt];
    for (int32_t i = 0; i < q->n_segs; i++) {
        const seg *g = &q->segs[i];
        if (p < g->pos0 + g->n) {
            if (g->kind == AM_SEG_TOKENS) return g->ids[p - g->pos0];
            *row = g->rows + (size_t)(p - g->pos0) * (size_t)C;
            return AM_LLAMA_EMBD_ROW;
        }
    }
    return -1; /* unreachable: p < n_prompt */
}

static int grow_logits(am_sched *s, int32_t rows) {
    if (rows <= s->logits_cap) return 0;
    am_aligned_free(s->logits);
    s->logits_cap = 0;
    s->logits = am_aligned_alloc((size_t)rows * (size_t)s->m->cfg.vocab_size * sizeof(float));
    if (!s->logits) return AM_ENOMEM;
    s->logits_cap = rows;
    return 0;
}

int am_sched_step(am_sched *s) {
    const int64_t C = s->m->cfg.dim, V = s->m->cfg.vocab_size;
    build_step(s);
    if (s->n_parts == 0) return 0;
    int32_t M = 0, n_embd = 0, n_logits = 0;
    for (int32_t i = 0; i < s->n_parts; i++) {
        step_part *pt = &s->parts[i];
        seq *q = pt->s;
        s->aseqs[i] =
            (am_attn_seq){.row0 = M, .m = pt->rows, .pos0 = q->n_computed, .blocks = q->blocks};
        s->n_tables[i] = q->n_blocks;
        for (int32_t r = 0; r < pt->rows; r++) {
            const float *row = NULL;
            int32_t p = q->n_computed + r;
            s->ids[M + r] = input_at(q, p, &row, C);
            if (row)
                memcpy(s->embd + (size_t)(n_embd++) * (size_t)C, row, (size_t)C * sizeof(float));
            if (p < q->n_computed_max) s->stats.recompute_rows++;
            if (p < q->n_prompt)
                s->stats.prefill_rows++;
            else
                s->stats.decode_rows++;
        }
        M += pt->rows;
        if (pt->want_logits) s->logit_rows[n_logits++] = M - 1;
    }
    am_llama_batch b = {.n_rows = M,
                        .ids = s->ids,
                        .embd = n_embd ? s->embd : NULL,
                        .n_seqs = s->n_parts,
                        .seqs = s->aseqs,
                        .n_blocks = s->n_tables,
                        .n_logits = n_logits,
                        .logit_rows = s->logit_rows};
    int rc = grow_logits(s, n_logits);
    if (!rc) rc = am_llama_decode(s->ctx, &b, s->logits);
    s->stats.steps++;
    s->stats.rows += M;
    if (s->n_parts > s->stats.max_running) s->stats.max_running = s->n_parts;
    /* Results, in step order; a callback may end another sequence of the step
     * (its part's s becomes NULL). */
    float *lg = s->logits;
    for (int32_t i = 0; i < s->n_parts; i++) {
        step_part *pt = &s->parts[i];
        seq *q = pt->s;
        if (!q) {
            if (pt->want_logits) lg += V;
            continue;
        }
        q->step_slot = -1;
        if (rc) {
            finish_seq(s, q, rc);
            continue;
        }
        q->n_computed += pt->rows;
        if (q->n_computed > q->n_computed_max) q->n_computed_max = q->n_computed;
        if (!pt->want_logits) continue;
        float *row = lg; /* the sampler modifies its logits in place */
        lg += V;
        int32_t id = am_sampler_sample(q->sampler, row, q->history, q->n_hist);
        if (q->t_first == 0) q->t_first = am_now_s();
        int64_t before = q->stream.n_ids;
        /* Mark the slot so that the callback cancelling q itself is seen. */
        q->step_slot = i;
        int prc = am_gen_stream_push(&q->stream, id, q->on_token, q->user);
        if (!pt->s) continue; /* ended from its own callback */
        q->step_slot = -1;
        if (q->stream.n_ids > before) q->history[q->n_hist++] = id;
        if (prc || q->stream.finished) finish_seq(s, q, prc);
    }
    s->n_parts = 0;
    return rc ? rc : 1;
}

/* ---- requests ---- */

/* prompt + max_tokens within the model's context and the whole KV pool. */
static int check_fits(const am_sched *s, uint64_t id, int64_t n_prompt, int32_t max_tokens) {
    const int64_t positions = n_prompt + max_tokens;
    if (positions > s->m->cfg.max_seq_len)
        return am_err_set(
            AM_ERANGE,
            "request %llu: prompt (%lld rows) + max_tokens (%d) exceeds the context of %d",
            (unsigned long long)id, (long long)n_prompt, max_tokens, s->m->cfg.max_seq_len);
    if (blocks_for(s, positions - 1) > am_kv_blocks_n_total(s->blocks))
        return am_err_set(
            AM_ERANGE, "request %llu: prompt + max_tokens needs %d KV blocks but the cache has %d",
            (unsigned long long)id, blocks_for(s, positions - 1), am_kv_blocks_n_total(s->blocks));
    return 0;
}

static int check_request(am_sched *s, const am_sched_request *r, int64_t *n_prompt,
                         int64_t *n_tokens) {
    const int64_t V = s->m->cfg.vocab_size;
    int rc = am_gen_params_check(&r->params);
    if (rc) return rc;
    if (r->params.n_stop && !s->tok)
        return am_err_set(AM_EINVAL, "request %llu: stop strings need a tokenizer",
                          (unsigned long long)r->id);
    if (r->n_segs < 1 || r->n_segs > AM_SCHED_MAX_SEGMENTS || !r->segs)
        return am_err_set(AM_EINVAL, "request %llu: %d prompt segments (want 1..%d)",
                          (unsigned long long)r->id, r->n_segs, AM_SCHED_MAX_SEGMENTS);
    *n_prompt = *n_tokens = 0;
    for (int32_t i = 0; i < r->n_segs; i++) {
        const am_prompt_seg *g = &r->segs[i];
        if (g->kind != AM_SEG_TOKENS && g->kind != AM_SEG_EMBD)
            return am_err_set(AM_EINVAL, "request %llu: segment %d has kind %d",
                              (unsigned long long)r->id, i, (int)g->kind);
        const int unsized = g->kind == AM_SEG_EMBD && !g->rows && g->n == 0;
        if ((g->n < 1 && !unsized) || g->n > s->m->cfg.max_seq_len)
            return am_err_set(
                AM_ERANGE,
                "request %llu: segment %d has %d rows (want 1..%d; 0 only for a pending slot)",
                (unsigned long long)r->id, i, g->n, s->m->cfg.max_seq_len);
        if (g->kind == AM_SEG_TOKENS) {
            if (!g->ids)
                return am_err_set(AM_EINVAL, "request %llu: segment %d has no ids",
                                  (unsigned long long)r->id, i);
            for (int32_t k = 0; k < g->n; k++)
                if (g->ids[k] < 0 || g->ids[k] >= V)
                    return am_err_set(AM_EINVAL,
                                      "request %llu: segment %d token %d is %d, outside [0, %lld)",
                                      (unsigned long long)r->id, i, k, g->ids[k], (long long)V);
            *n_tokens += g->n;
        }
        *n_prompt += g->n;
    }
    if (*n_prompt < 1)
        return am_err_set(AM_EINVAL, "request %llu: the prompt has no rows",
                          (unsigned long long)r->id);
    int rc2 = check_fits(s, r->id, *n_prompt, r->params.max_tokens);
    if (rc2) return rc2;
    if (find_live(s, r->id))
        return am_err_set(AM_EINVAL, "request %llu is already live", (unsigned long long)r->id);
    return 0;
}

int am_sched_submit(am_sched *s, const am_sched_request *r) {
    const size_t C = (size_t)s->m->cfg.dim;
    int64_t n_prompt = 0, n_tokens = 0;
    int rc = check_request(s, r, &n_prompt, &n_tokens);
    if (rc) return rc;
    seq *q = am_calloc(1, sizeof *q);
    if (!q) return AM_ENOMEM;
    q->id = r->id;
    q->step_slot = -1;
    q->params = r->params;
    q->on_token = r->on_token;
    q->on_done = r->on_done;
    q->user = r->user;
    q->n_prompt = (int32_t)n_prompt;
    q->segs = am_calloc((size_t)r->n_segs, sizeof *q->segs);
    q->history = am_malloc((size_t)(n_tokens + r->params.max_tokens) * sizeof(int32_t));
    q->blocks = am_malloc((size_t)blocks_for(s, n_prompt + r->params.max_tokens) * sizeof(int32_t));
    q->stop_copy = r->params.n_stop ? am_calloc((size_t)r->params.n_stop, sizeof(char *)) : NULL;
    int ok = q->segs && q->history && q->blocks && (!r->params.n_stop || q->stop_copy);
    if (ok) q->n_segs = r->n_segs;
    int32_t pos = 0;
    for (int32_t i = 0; ok && i < r->n_segs; i++) {
        const am_prompt_seg *g = &r->segs[i];
        seg *d = &q->segs[i];
        d->kind = g->kind;
        d->n = g->n;
        d->pos0 = pos;
        pos += g->n;
        if (g->kind == AM_SEG_TOKENS) {
            ok = (d->ids = am_malloc((size_t)g->n * sizeof(int32_t))) != NULL;
            if (ok) memcpy(d->ids, g->ids, (size_t)g->n * sizeof(int32_t));
            if (ok) memcpy(q->history + q->n_hist, g->ids, (size_t)g->n * sizeof(int32_t));
            q->n_hist += g->n;
        } else if (g->rows) {
            ok = (d->rows = am_malloc((size_t)g->n * C * sizeof(float))) != NULL;
            if (ok) memcpy(d->rows, g->rows, (size_t)g->n * C * sizeof(float));
        }
    }
    for (int i = 0; ok && i < r->params.n_stop; i++)
        ok = (q->stop_copy[i] = am_strdup(r->params.stop[i])) != NULL;
    if (ok) q->params.stop = (const char *const *)q->stop_copy;
    if (!ok || am_gen_stream_init(&q->stream, &q->params, s->tok) ||
        am_sampler_new(&q->params.sampling, s->m->cfg.vocab_size, &q->sampler)) {
        seq_free(q);
        return am_err_set(AM_ENOMEM, "request %llu: out of memory", (unsigned long long)r->id);
    }
    q->arrival = s->next_arrival++;
    q->t_submit = am_now_s();
    q->state = SEQ_WAITING;
    list_insert(&s->queue, q);
    return 0;
}

int am_sched_supply(am_sched *s, uint64_t id, int32_t segi, const float *rows, int32_t n) {
    seq *q = find_live(s, id);
    if (!q) return am_err_set(AM_ENOTFOUND, "request %llu is not live", (unsigned long long)id);
    if (segi < 0 || segi >= q->n_segs || q->segs[segi].kind != AM_SEG_EMBD || q->segs[segi].rows)
        return am_err_set(AM_EINVAL, "request %llu: segment %d is not a pending embedding slot",
                          (unsigned long long)id, segi);
    seg *g = &q->segs[segi];
    if (!rows || n < 1 || (g->n != 0 && n != g->n))
        return am_err_set(AM_EINVAL, "request %llu: slot %d holds %d rows, got %d",
                          (unsigned long long)id, segi, g->n, n);
    if (g->n == 0) {
        /* The slot's size is known now: the positions after it move, and the
         * prompt must still fit (nothing at or after the slot has run yet). */
        int rc = check_fits(s, id, (int64_t)q->n_prompt + n, q->params.max_tokens);
        int32_t need = blocks_for(s, (int64_t)q->n_prompt + n + q->params.max_tokens);
        int32_t *grown = rc ? NULL : am_realloc(q->blocks, (size_t)need * sizeof(int32_t));
        if (!rc && !grown)
            rc = am_err_set(AM_ENOMEM, "request %llu: out of memory", (unsigned long long)id);
        if (rc) {
            finish_seq(s, q, rc);
            return rc;
        }
        q->blocks = grown;
        g->n = n;
        q->n_prompt += n;
        for (int32_t i = segi + 1; i < q->n_segs; i++)
            q->segs[i].pos0 += n;
    }
    size_t bytes = (size_t)n * (size_t)s->m->cfg.dim * sizeof(float);
    float *copy = am_malloc(bytes);
    if (!copy) return AM_ENOMEM;
    memcpy(copy, rows, bytes);
    g->rows = copy;
    return 0;
}

int am_sched_cancel(am_sched *s, uint64_t id) {
    seq *q = find_live(s, id);
    if (!q) return am_err_set(AM_ENOTFOUND, "request %llu is not live", (unsigned long long)id);
    q->stream.finished = 1;
    q->stream.finish = AM_FINISH_CANCELLED;
    finish_seq(s, q, 0);
    return 0;
}

/* ---- lifetime ---- */

int am_sched_new(am_llama_ctx *ctx, const am_tokenizer *tok, int32_t max_batch, am_sched **out) {
    *out = NULL;
    const am_llama_model *m = am_llama_ctx_model(ctx);
    int32_t ctx_batch = am_llama_ctx_max_batch(ctx);
    if (max_batch == 0) max_batch = ctx_batch;
    if (max_batch < 1 || max_batch > ctx_batch)
        return am_err_set(AM_ERANGE,
                          "scheduler token budget %d is outside [1, %d] (the context's max_batch)",
                          max_batch, ctx_batch);
    am_sched *s = am_calloc(1, sizeof *s);
    if (!s) return AM_ENOMEM;
    s->ctx = ctx;
    s->tok = tok;
    s->m = m;
    s->block_size = am_llama_ctx_block_size(ctx);
    s->max_batch = max_batch;
    const size_t B = (size_t)max_batch;
    int rc = am_kv_blocks_new(am_llama_ctx_n_blocks(ctx), &s->blocks);
    s->parts = am_calloc(B, sizeof *s->parts);
    s->ids = am_malloc(B * sizeof(int32_t));
    s->embd = am_aligned_alloc(B * (size_t)m->cfg.dim * sizeof(float));
    s->aseqs = am_calloc(B, sizeof *s->aseqs);
    s->n_tables = am_malloc(B * sizeof(int32_t));
    s->logit_rows = am_malloc(B * sizeof(int32_t));
    if (rc || !s->parts || !s->ids || !s->embd || !s->aseqs || !s->n_tables || !s->logit_rows) {
        am_sched_destroy(&s);
        return rc ? rc : AM_ENOMEM;
    }
    *out = s;
    return 0;
}

void am_sched_destroy(am_sched **p) {
    if (!p || !*p) return;
    am_sched *s = *p;
    while (s->running.head)
        am_sched_cancel(s, s->running.head->id);
    while (s->queue.head)
        am_sched_cancel(s, s->queue.head->id);
    am_kv_blocks_destroy(&s->blocks);
    am_free(s->parts);
    am_free(s->ids);
    am_aligned_free(s->embd);
    am_free(s->aseqs);
    am_free(s->n_tables);
    am_free(s->logit_rows);
    am_aligned_free(s->logits);
    am_free(s);
    *p = NULL;
}

int32_t am_sched_n_live(const am_sched *s) { return s->running.n + s->queue.n; }

int32_t am_sched_free_blocks(const am_sched *s) { return am_kv_blocks_n_free(s->blocks); }

int32_t am_sched_total_blocks(const am_sched *s) { return am_kv_blocks_n_total(s->blocks); }

const am_sched_stats *am_sched_get_stats(const am_sched *s) { return &s->stats; }
