/* llm_shards/tp.c - the leader/follower step protocol of a shard group (MPI-free).
 *
 * Every step starts with a fixed-size header broadcast by the leader through
 * ops->bcast_step (the one collective an idle follower waits in, so it must
 * not spin). Token ids of a short step travel inside the header; longer id
 * lists and embedding rows follow in one plain broadcast. The header carries
 * the positions (pos0) explicitly, so a leader that resets its context needs
 * no extra message, and a sequence number that a follower checks: a follower
 * that ever saw a step out of order would compute garbage silently, so it
 * ends the group instead.
 */
#include "llm_shards/tp.h"

#include "core/alloc.h"
#include "core/error.h"
#include "llm_shards/generate.h"
#include "llm_shards/llama_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AM_TP_STEP_MAGIC      0x50544d41 /* "AMTP" */
#define AM_TP_STEP_INLINE_IDS 48

enum { AM_TP_OP_STOP = 1, AM_TP_OP_CTX = 2, AM_TP_OP_EVAL_IDS = 3, AM_TP_OP_EVAL_EMBD = 4 };

/* The step header: 256 bytes, the same on every rank. */
typedef struct am_tp_step {
    int32_t magic;
    int32_t op;          /* AM_TP_OP_* */
    int32_t seq;         /* steps since the group started */
    int32_t n;           /* EVAL: input rows */
    int32_t pos0;        /* EVAL: position of the first row (the leader's n_past) */
    int32_t want_logits; /* EVAL: the leader wants logits (the followers take part in the gather) */
    int32_t all_logits;  /* EVAL: of every row rather than the last */
    int32_t n_ctx;       /* CTX: positions */
    int32_t max_batch;   /* CTX: rows per chunk */
    int32_t wire;        /* CTX: all-reduce dtype (am_dtype) */
    int32_t reserved[6];
    int32_t ids[AM_TP_STEP_INLINE_IDS]; /* EVAL_IDS with n <= AM_TP_STEP_INLINE_IDS */
} am_tp_step;

_Static_assert(sizeof(am_tp_step) == 256, "the step header is a fixed 256 bytes");

/* ---- counting wrappers ------------------------------------------------------ */

int am_tp_allreduce(am_tp_comm *c, float *x, int64_t n) {
    if (c->size == 1) return 0;
    double t0 = am_now_s();
    int rc = c->ops->allreduce_sum(c, x, n, c->allreduce_dtype);
    c->stats.allreduce_s += am_now_s() - t0;
    c->stats.n_allreduce++;
    c->stats.allreduce_bytes += n * (c->allreduce_dtype == AM_DTYPE_BF16 ? 2 : 4);
    return rc;
}

int am_tp_bcast(am_tp_comm *c, void *buf, size_t bytes) {
    if (c->size == 1) return 0;
    c->stats.n_bcast++;
    c->stats.bcast_bytes += (int64_t)bytes;
    return c->ops->bcast(c, buf, bytes);
}

int am_tp_gatherv(am_tp_comm *c, const float *send, int64_t n, float *recv, const int64_t *counts) {
    if (c->size == 1) {
        if (recv != send) memcpy(recv, send, (size_t)n * sizeof(float));
        return 0;
    }
    double t0 = am_now_s();
    int rc = c->ops->gatherv(c, send, n, recv, counts);
    c->stats.gather_s += am_now_s() - t0;
    c->stats.n_gather++;
    c->stats.gather_bytes += n * (int64_t)sizeof(float);
    return rc;
}

static int bcast_step(am_tp_comm *c, am_tp_step *s) {
    c->stats.n_bcast++;
    c->stats.bcast_bytes += (int64_t)sizeof *s;
    return c->ops->bcast_step(c, s, sizeof *s);
}

_Noreturn void am_tp_fatal(am_tp_comm *c, int code, const char *what) {
    const char *msg = am_err_msg();
    fprintf(stderr, "anymal rank %d/%d: error: %s: %s; ending the shard group\n", c->rank, c->size,
            what, msg[0] ? msg : am_strerror(code));
    fflush(stderr);
    c->ops->abort(c, code);
    abort(); /* ops->abort does not return; this keeps _Noreturn honest */
}

/* ---- leader ----------------------------------------------------------------- */

static am_tp_step new_step(am_tp_comm *comm, int32_t op) {
    am_tp_step s;
    memset(&s, 0, sizeof s);
    s.magic = AM_TP_STEP_MAGIC;
    s.op = op;
    s.seq = comm->step_seq++;
    return s;
}

int am__tp_send_eval(am_tp_comm *comm, int32_t pos0, const int32_t *ids, const float *embd,
                     int32_t n, int64_t dim, int want_logits, int all_logits) {
    am_tp_step s = new_step(comm, ids ? AM_TP_OP_EVAL_IDS : AM_TP_OP_EVAL_EMBD);
    s.n = n;
    s.pos0 = pos0;
    s.want_logits = want_logits;
    s.all_logits = all_logits;
    int inline_ids = ids && n <= AM_TP_STEP_INLINE_IDS;
    if (inline_ids) memcpy(s.ids, ids, (size_t)n * sizeof(int32_t));
    int rc = bcast_step(comm, &s);
    if (rc || inline_ids) return rc;
    /* The payload is const for the caller; bcast only reads it at the root. */
    if (ids) return am_tp_bcast(comm, (void *)ids, (size_t)n * sizeof(int32_t));
    return am_tp_bcast(comm, (void *)embd, (size_t)n * (size_t)dim * sizeof(float));
}

/* Sum over the group of a 0/1 failure flag: how many ranks failed. */
static int count_failures(am_tp_comm *comm, int failed, int *n_failed) {
    float f = failed ? 1.0f : 0.0f;
    int rc = comm->ops->allreduce_sum(comm, &f, 1, AM_DTYPE_F32);
    *n_failed = (int)f;
    return rc;
}

int am_llama_ctx_new_tp(const am_llama_model *m, am_backend *be, am_tp_comm *comm, int32_t n_ctx,
                        int32_t max_batch, am_dtype wire, am_llama_ctx **out) {
    *out = NULL;
    if (comm->rank != 0)
        return am_err_set(
            AM_EINVAL,
            "rank %d: only the leader creates group contexts (followers run am_tp_follow)",
            comm->rank);
    if (wire != AM_DTYPE_F32 && wire != AM_DTYPE_BF16)
        return am_err_set(AM_EUNSUPPORTED, "all-reduce dtype %s (want f32 or bf16)",
                          am_dtype_name(wire));
    comm->allreduce_dtype = wire;
    if (comm->size == 1) return am__llama_ctx_create(m, be, comm, n_ctx, max_batch, out);
    /* Check what can be checked before asking the followers for memory. */
    am_llama_ctx *c = NULL;
    int rc = am__llama_ctx_create(m, be, comm, n_ctx, max_batch, &c);
    if (rc) return rc;
    am_tp_step s = new_step(comm, AM_TP_OP_CTX);
    s.n_ctx = n_ctx;
    s.max_batch = max_batch;
    s.wire = (int32_t)wire;
    if ((rc = bcast_step(comm, &s))) am_tp_fatal(comm, rc, "broadcasting a context step");
    int n_failed = 0;
    if ((rc = count_failures(comm, 0, &n_failed))) am_tp_fatal(comm, rc, "context agreement");
    if (n_failed) {
        am_llama_ctx_destroy(&c);
        return am_err_set(
            AM_ENOMEM,
            "%d follower rank(s) could not allocate a context of %d positions (see their messages)",
            n_failed, n_ctx);
    }
    *out = c;
    return 0;
}

int am_tp_stop(am_tp_comm *comm) {
    if (comm->rank != 0)
        return am_err_set(AM_EINVAL, "rank %d: only the leader stops the group", comm->rank);
    if (comm->size == 1) return 0;
    am_tp_step s = new_step(comm, AM_TP_OP_STOP);
    return bcast_step(comm, &s);
}

/* ---- followers -------------------------------------------------------------- */

int am_tp_follow(const am_llama_model *m, am_backend *be, am_tp_comm *comm) {
    if (comm->rank == 0) return am_err_set(AM_EINVAL, "the leader does not follow");
    am_llama_ctx *ctx = NULL;
    int32_t *ids = NULL;
    float *embd = NULL;
    int rc = 0;
    char what[128];
    for (;;) {
        am_tp_step s;
        memset(&s, 0, sizeof s);
        if ((rc = comm->ops->bcast_step(comm, &s, sizeof s)))
            am_tp_fatal(comm, rc, "waiting for the next step");
        snprintf(what, sizeof what, "step %d (op %d)", s.seq, s.op);
        if (s.magic != AM_TP_STEP_MAGIC || s.seq != comm->step_seq)
            am_tp_fatal(comm,
                        am_err_set(AM_EFORMAT,
                                   "bad step header (magic %#x, seq %d, expected seq %d)",
                                   (unsigned)s.magic, s.seq, comm->step_seq),
                        "protocol");
        comm->step_seq++;
        if (s.op == AM_TP_OP_STOP) break;
        if (s.op == AM_TP_OP_CTX) {
            am_llama_ctx_destroy(&ctx);
            am_free(ids);
            am_aligned_free(embd);
            ids = NULL;
            embd = NULL;
            comm->allreduce_dtype = (am_dtype)s.wire;
            int failed = am__llama_ctx_create(m, be, comm, s.n_ctx, s.max_batch, &ctx) != 0;
            if (failed)
                fprintf(stderr, "anymal rank %d/%d: error: context of %d positions: %s\n",
                        comm->rank, comm->size, s.n_ctx, am_err_msg());
            int n_failed;
            if ((rc = count_failures(comm, failed, &n_failed)))
                am_tp_fatal(comm, rc, "context agreement");
            if (n_failed) am_llama_ctx_destroy(&ctx);
            continue;
        }
        if (s.op != AM_TP_OP_EVAL_IDS && s.op != AM_TP_OP_EVAL_EMBD)
            am_tp_fatal(comm, am_err_set(AM_EFORMAT, "unknown op %d", s.op), what);
        if (!ctx)
            am_tp_fatal(comm, am_err_set(AM_EFORMAT, "an eval step before any context"), what);
        if (s.n < 1 || s.pos0 < 0 || (int64_t)s.pos0 + s.n > am_llama_ctx_size(ctx))
            am_tp_fatal(comm,
                        am_err_set(AM_EFORMAT,
                                   "rows %d at position %d do not fit the context of %d", s.n,
                                   s.pos0, am_llama_ctx_size(ctx)),
                        what);
        const int32_t *in_ids = NULL;
        const float *in_embd = NULL;
        if (s.op == AM_TP_OP_EVAL_IDS && s.n <= AM_TP_STEP_INLINE_IDS) {
            in_ids = s.ids;
        } else {
            /* The payload buffer grows to the largest step seen (at most n_ctx rows). */
            size_t bytes = s.op == AM_TP_OP_EVAL_IDS
                               ? (size_t)s.n * sizeof(int32_t)
                               : (size_t)s.n * (size_t)m->cfg.dim * sizeof(float);
            if (s.op == AM_TP_OP_EVAL_IDS) {
                am_free(ids);
                if (!(ids = am_malloc(bytes))) am_tp_fatal(comm, AM_ENOMEM, what);
                in_ids = ids;
            } else {
                am_aligned_free(embd);
                if (!(embd = am_aligned_alloc(bytes))) am_tp_fatal(comm, AM_ENOMEM, what);
                in_embd = embd;
            }
            if ((rc = am_tp_bcast(comm, s.op == AM_TP_OP_EVAL_IDS ? (void *)ids : (void *)embd,
                                  bytes)))
                am_tp_fatal(comm, rc, what);
        }
        am__llama_ctx_set_n_past(ctx, s.pos0);
        if ((rc = am__llama_check_input(ctx, in_ids, in_embd, s.n))) am_tp_fatal(comm, rc, what);
        if ((rc = am__llama_run(ctx, in_ids, in_embd, s.n, NULL, s.want_logits, s.all_logits)))
            am_tp_fatal(comm, rc, what);
    }
    am_llama_ctx_destroy(&ctx);
    am_free(ids);
    am_aligned_free(embd);
    return 0;
}

/* ---- memory ----------------------------------------------------------------- */

int am_proc_mem_read(am_proc_mem *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return am_err_set(AM_EIO, "/proc/self/status: cannot open");
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
            out->vm_rss = kb * 1024;
        else if (sscanf(line, "VmHWM: %lld kB", &kb) == 1)
            out->vm_hwm = kb * 1024;
        else if (sscanf(line, "RssAnon: %lld kB", &kb) == 1)
            out->rss_anon = kb * 1024;
        else if (sscanf(line, "RssFile: %lld kB", &kb) == 1)
            out->rss_file = kb * 1024;
    }
    fclose(f);
    return 0;
}

int am_tp_mem_gather(am_tp_comm *c, const am_llama_model *m, am_tp_mem *all) {
    am_tp_mem mine;
    memset(&mine, 0, sizeof mine);
    int rc = am_proc_mem_read(&mine.mem);
    if (rc) return rc;
    mine.weight_bytes = (int64_t)am_llama_weight_bytes(m);
    mine.slices_bytes = (int64_t)m->slices_bytes;
    mine.rank = c->rank;
    if (c->size == 1) {
        all[0] = mine;
        return 0;
    }
    return c->ops->gather(c, &mine, sizeof mine, all);
}
