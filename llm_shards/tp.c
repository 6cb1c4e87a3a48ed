/* llm_shards/tp.c - the leader/follower step protocol of a shard group (MPI-free).
 *
 * Every step starts with a fixed-size header broadcast by the leader through
 * ops->bcast_step (the one collective an idle follower waits in, so it must
 * not spin). A step's integers (token ids, the sequences' rows, positions and
 * block tables, the logit rows) travel inside the header when they fit, else
 * in one plain broadcast after it; embedding rows follow in another. A
 * follower checks the step exactly as the leader did before computing it,
 * and a sequence number: a follower that ever saw a step out of order would
 * compute garbage silently, so it ends the group instead.
 */
#include "llm_shards/tp.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "llm_shards/llama_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AM_TP_STEP_MAGIC       0x50544d41 /* "AMTP" */
#define AM_TP_STEP_INLINE_INTS 52

enum { AM_TP_OP_STOP = 1, AM_TP_OP_CTX = 2, AM_TP_OP_STEP = 3 };

/* Integers per sequence in a step's payload: row0, m, pos0, table length. */
#define AM_TP_SEQ_INTS 4

/* The step header: 256 bytes, the same on every rank. */
typedef struct am_tp_step {
    int32_t magic;
    int32_t op;         /* AM_TP_OP_* */
    int32_t seq;        /* steps since the group started */
    int32_t n_rows;     /* STEP: M */
    int32_t n_seqs;     /* STEP: sequences */
    int32_t n_logits;   /* STEP: logit rows (the followers take part in the gather) */
    int32_t n_embd;     /* STEP: embedding rows that follow */
    int32_t n_ints;     /* STEP: int32 payload: ids, sequences, tables, logit rows */
    int32_t n_blocks;   /* CTX: KV blocks */
    int32_t block_size; /* CTX: positions per block */
    int32_t max_batch;  /* CTX: rows per step */
    int32_t wire;       /* CTX: all-reduce dtype (am_dtype) */
    int32_t ints[AM_TP_STEP_INLINE_INTS]; /* STEP: the payload when n_ints fits */
} am_tp_step;

_Static_assert(sizeof(am_tp_step) == 256, "the step header is a fixed 256 bytes");

static int bcast_step(am_tp_comm *c, am_tp_step *s) {
    c->stats.n_bcast++;
    c->stats.bcast_bytes += (int64_t)sizeof *s;
    return c->ops->bcast_step(c, s, sizeof *s);
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

/* The int32 payload of a step: ids (M), then per sequence row0, m, pos0 and
 * table length, then the tables, then the logit rows. */
static int64_t step_ints(const am_llama_batch *b) {
    int64_t n = b->n_rows + (int64_t)AM_TP_SEQ_INTS * b->n_seqs + b->n_logits;
    for (int32_t s = 0; s < b->n_seqs; s++)
        n += b->n_blocks[s];
    return n;
}

static void pack_step(const am_llama_batch *b, int32_t *out) {
    memcpy(out, b->ids, (size_t)b->n_rows * sizeof(int32_t));
    out += b->n_rows;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        *out++ = (int32_t)b->seqs[s].row0;
        *out++ = (int32_t)b->seqs[s].m;
        *out++ = (int32_t)b->seqs[s].pos0;
        *out++ = b->n_blocks[s];
    }
    for (int32_t s = 0; s < b->n_seqs; s++) {
        memcpy(out, b->seqs[s].blocks, (size_t)b->n_blocks[s] * sizeof(int32_t));
        out += b->n_blocks[s];
    }
    memcpy(out, b->logit_rows, (size_t)b->n_logits * sizeof(int32_t));
}

/* Broadcasts a step to the followers: the sender a group context hands the decoder. */
static int send_step(am_tp_comm *comm, const am_llama_batch *b, int64_t dim) {
    am_tp_step s = new_step(comm, AM_TP_OP_STEP);
    const int64_t n_ints = step_ints(b);
    int64_t n_embd = 0;
    for (int32_t r = 0; r < b->n_rows; r++)
        n_embd += b->ids[r] == AM_LLAMA_EMBD_ROW;
    if (n_ints > INT32_MAX / (int64_t)sizeof(int32_t))
        return am_err_set(AM_ERANGE, "step payload of %lld integers", (long long)n_ints);
    s.n_rows = b->n_rows;
    s.n_seqs = b->n_seqs;
    s.n_logits = b->n_logits;
    s.n_embd = (int32_t)n_embd;
    s.n_ints = (int32_t)n_ints;
    int32_t *payload = s.ints;
    if (n_ints > AM_TP_STEP_INLINE_INTS && !(payload = am_malloc((size_t)n_ints * sizeof(int32_t))))
        return AM_ENOMEM;
    pack_step(b, payload);
    int rc = bcast_step(comm, &s);
    if (!rc && payload != s.ints) rc = am_tp_bcast(comm, payload, (size_t)n_ints * sizeof(int32_t));
    if (payload != s.ints) am_free(payload);
    /* The rows are const for the caller; bcast only reads them at the root. */
    if (!rc && n_embd > 0)
        rc = am_tp_bcast(comm, (void *)b->embd, (size_t)(n_embd * dim) * sizeof(float));
    return rc;
}

/* Sum over the group of a 0/1 failure flag: how many ranks failed. */
static int count_failures(am_tp_comm *comm, int failed, int *n_failed) {
    float f = failed ? 1.0f : 0.0f;
    int rc = comm->ops->allreduce_sum(comm, &f, 1, AM_DTYPE_F32);
    *n_failed = (int)f;
    return rc;
}

int am_llama_ctx_new_paged_tp(const am_llama_model *m, am_backend *be, am_tp_comm *comm,
                              int32_t n_blocks, int32_t block_size, int32_t max_batch,
                              am_dtype wire, am_llama_ctx **out) {
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
    if (comm->size == 1)
        return am__llama_ctx_create(m, be, comm, n_blocks, block_size, max_batch, out);
    /* Check what can be checked before asking the followers for memory. */
    am_llama_ctx *c = NULL;
    int rc = am__llama_ctx_create(m, be, comm, n_blocks, block_size, max_batch, &c);
    if (rc) return rc;
    am__llama_ctx_set_step_sender(c, send_step);
    am_tp_step s = new_step(comm, AM_TP_OP_CTX);
    s.n_blocks = n_blocks;
    s.block_size = block_size;
    s.max_batch = max_batch;
    s.wire = (int32_t)wire;
    if ((rc = bcast_step(comm, &s))) am_tp_fatal(comm, rc, "broadcasting a context step");
    int n_failed = 0;
    if ((rc = count_failures(comm, 0, &n_failed))) am_tp_fatal(comm, rc, "context agreement");
    if (n_failed) {
        am_llama_ctx_destroy(&c);
        return am_err_set(AM_ENOMEM,
                          "%d follower rank(s) could not allocate a context of %d x %d positions "
                          "(see their messages)",
                          n_failed, n_blocks, block_size);
    }
    *out = c;
    return 0;
}

int am_llama_ctx_new_tp(const am_llama_model *m, am_backend *be, am_tp_comm *comm, int32_t n_ctx,
                        int32_t max_batch, am_dtype wire, am_llama_ctx **out) {
    *out = NULL;
    if (n_ctx <= 0 || n_ctx > m->cfg.max_seq_len)
        return am_err_set(AM_ERANGE,
                          "context length %d is outside [1, %d] (the model's max_seq_len)", n_ctx,
                          m->cfg.max_seq_len);
    return am_llama_ctx_new_paged_tp(m, be, comm, 1, n_ctx, max_batch, wire, out);
}

int am_tp_stop(am_tp_comm *comm) {
    if (comm->rank != 0)
        return am_err_set(AM_EINVAL, "rank %d: only the leader stops the group", comm->rank);
    if (comm->size == 1) return 0;
    am_tp_step s = new_step(comm, AM_TP_OP_STOP);
    return bcast_step(comm, &s);
}

/* ---- followers -------------------------------------------------------------- */

/* A received step's payload as a batch; checks the counts against each other
 * (the batch's own checks follow in am__llama_check_batch). */
static int unpack_step(const am_tp_step *s, const int32_t *ints, am_attn_seq *seqs,
                       int32_t *n_blocks, am_llama_batch *b) {
    if (s->n_rows < 1 || s->n_seqs < 1 || s->n_seqs > s->n_rows || s->n_logits < 0 ||
        s->n_logits > s->n_rows || s->n_embd < 0 || s->n_embd > s->n_rows)
        return am_err_set(AM_EFORMAT,
                          "step counts: %d rows, %d sequences, %d logit rows, %d embedding rows",
                          s->n_rows, s->n_seqs, s->n_logits, s->n_embd);
    int64_t used = s->n_rows + (int64_t)AM_TP_SEQ_INTS * s->n_seqs + s->n_logits;
    const int32_t *rec = ints + s->n_rows;
    for (int32_t i = 0; i < s->n_seqs; i++, rec += AM_TP_SEQ_INTS) {
        if (rec[3] < 0 || used + rec[3] > s->n_ints)
            return am_err_set(AM_EFORMAT,
                              "step: sequence %d's table of %d blocks overruns the payload", i,
                              rec[3]);
        used += rec[3];
    }
    if (used != s->n_ints)
        return am_err_set(AM_EFORMAT, "step payload: %d integers, the counts need %lld", s->n_ints,
                          (long long)used);
    rec = ints + s->n_rows;
    const int32_t *table = ints + s->n_rows + (int64_t)AM_TP_SEQ_INTS * s->n_seqs;
    for (int32_t i = 0; i < s->n_seqs; i++, rec += AM_TP_SEQ_INTS) {
        seqs[i] = (am_attn_seq){.row0 = rec[0], .m = rec[1], .pos0 = rec[2], .blocks = table};
        n_blocks[i] = rec[3];
        table += rec[3];
    }
    *b = (am_llama_batch){.n_rows = s->n_rows,
                          .ids = ints,
                          .n_seqs = s->n_seqs,
                          .seqs = seqs,
                          .n_blocks = n_blocks,
                          .n_logits = s->n_logits,
                          .logit_rows = table};
    return 0;
}

int am_tp_follow(const am_llama_model *m, am_backend *be, am_tp_comm *comm) {
    if (comm->rank == 0) return am_err_set(AM_EINVAL, "the leader does not follow");
    am_llama_ctx *ctx = NULL;
    /* Payload buffers grow to the largest step seen. */
    void *ints = NULL, *embd = NULL, *seqs = NULL, *tables = NULL;
    size_t ints_cap = 0, embd_cap = 0, seqs_cap = 0, tables_cap = 0;
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
            comm->allreduce_dtype = (am_dtype)s.wire;
            int failed =
                am__llama_ctx_create(m, be, comm, s.n_blocks, s.block_size, s.max_batch, &ctx) != 0;
            if (failed)
                fprintf(stderr, "anymal rank %d/%d: error: context of %d x %d positions: %s\n",
                        comm->rank, comm->size, s.n_blocks, s.block_size, am_err_msg());
            int n_failed;
            if ((rc = count_failures(comm, failed, &n_failed)))
                am_tp_fatal(comm, rc, "context agreement");
            if (n_failed) am_llama_ctx_destroy(&ctx);
            continue;
        }
        if (s.op != AM_TP_OP_STEP)
            am_tp_fatal(comm, am_err_set(AM_EFORMAT, "unknown op %d", s.op), what);
        if (!ctx) am_tp_fatal(comm, am_err_set(AM_EFORMAT, "a step before any context"), what);
        if (s.n_ints < 0 || s.n_rows < 1 || s.n_rows > am_llama_ctx_max_batch(ctx))
            am_tp_fatal(comm,
                        am_err_set(AM_EFORMAT, "step of %d rows, %d integers", s.n_rows, s.n_ints),
                        what);
        const int32_t *in = s.ints;
        if (s.n_ints > AM_TP_STEP_INLINE_INTS) {
            if ((rc = am_aligned_reserve(&ints, &ints_cap, (size_t)s.n_ints * sizeof(int32_t))) ||
                (rc = am_tp_bcast(comm, ints, (size_t)s.n_ints * sizeof(int32_t))))
                am_tp_fatal(comm, rc, what);
            in = ints;
        }
        if ((rc = am_aligned_reserve(&seqs, &seqs_cap, (size_t)s.n_rows * sizeof(am_attn_seq))) ||
            (rc = am_aligned_reserve(&tables, &tables_cap, (size_t)s.n_rows * sizeof(int32_t))))
            am_tp_fatal(comm, rc, what);
        am_llama_batch b;
        if ((rc = unpack_step(&s, in, seqs, tables, &b))) am_tp_fatal(comm, rc, what);
        if (s.n_embd > 0) {
            size_t bytes = (size_t)s.n_embd * (size_t)m->cfg.dim * sizeof(float);
            if ((rc = am_aligned_reserve(&embd, &embd_cap, bytes)) ||
                (rc = am_tp_bcast(comm, embd, bytes)))
                am_tp_fatal(comm, rc, what);
            b.embd = embd;
        }
        if ((rc = am__llama_check_batch(ctx, &b, s.n_embd))) am_tp_fatal(comm, rc, what);
        if ((rc = am__llama_forward(ctx, &b, NULL))) am_tp_fatal(comm, rc, what);
    }
    am_llama_ctx_destroy(&ctx);
    am_aligned_free(ints);
    am_aligned_free(embd);
    am_aligned_free(seqs);
    am_aligned_free(tables);
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
