/* llm_shards/shard_group.c - MPI start-up, sharded loading with agreement, the leader's generate.
 */
#include "llm_shards/shard_group.h"

#include "core/alloc.h"
#include "core/backend_open.h"
#include "core/error.h"
#include "llm_shards/comm.h"
#include "llm_shards/model_files.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct am_shard_group {
    am_tp_comm *comm;
    am_model_files mf;
    am_backend *be;
    am_dtype wire;
    int n_threads;
    int stopped;
};

int32_t am_shard_group_rank(const am_shard_group *g) { return g->comm->rank; }
int32_t am_shard_group_size(const am_shard_group *g) { return g->comm->size; }
int am_shard_group_threads(const am_shard_group *g) { return g->n_threads; }
const am_llama_model *am_shard_group_model(const am_shard_group *g) { return g->mf.model; }
const am_tokenizer *am_shard_group_tokenizer(const am_shard_group *g) { return g->mf.tok; }
am_tp_comm *am_shard_group_comm(am_shard_group *g) { return g->comm; }

/* Loads this rank's part. Returns 0 or the error (message set). */
static int load_rank(am_shard_group *g, const am_shard_group_opts *o) {
    am_tp_comm *c = g->comm;
    const char *fail = getenv(AM_SHARD_FAIL_LOAD_ENV);
    if (fail && atoi(fail) == c->rank)
        return am_err_set(AM_EIO, "injected load failure (%s=%s)", AM_SHARD_FAIL_LOAD_ENV, fail);
    int rc = am_model_files_open_shard(&g->mf, o->model_path, o->tok_path, o->need_tok, c->rank,
                                       c->size);
    if (rc) return rc;
    g->n_threads = o->n_threads;
    if (g->n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int local = am_comm_local_size(c);
        g->n_threads = cpus > 0 && local > 0 ? (int)(cpus / local) : 1;
        if (g->n_threads < 1) g->n_threads = 1;
    }
    return am_backend_open(o->device, g->n_threads, &g->be);
}

int am_shard_group_new(int *argc, char ***argv, const am_shard_group_opts *o,
                       am_shard_group **out) {
    *out = NULL;
    if (o->allreduce_dtype != AM_DTYPE_F32 && o->allreduce_dtype != AM_DTYPE_BF16)
        return am_err_set(AM_EUNSUPPORTED, "all-reduce dtype %s (want f32 or bf16)",
                          am_dtype_name(o->allreduce_dtype));
    am_shard_group *g = am_calloc(1, sizeof *g);
    if (!g) return AM_ENOMEM;
    g->wire = o->allreduce_dtype;
    int rc = am_comm_new(argc, argv, &g->comm);
    if (rc) {
        fprintf(stderr, "anymal: error: starting MPI: %s\n",
                am_err_msg()[0] ? am_err_msg() : am_strerror(rc));
        am_free(g);
        return rc;
    }
    am_tp_comm *c = g->comm;
    int my_rc = load_rank(g, o);
    char my_msg[1024];
    snprintf(my_msg, sizeof my_msg, "%s",
             my_rc ? (am_err_msg()[0] ? am_err_msg() : am_strerror(my_rc)) : "");
    /* Everyone learns how many ranks failed, so that nobody is left waiting
     * for a rank that will never take part in a step. */
    float n_failed = my_rc ? 1.0f : 0.0f;
    if (c->size > 1 && (rc = c->ops->allreduce_sum(c, &n_failed, 1, AM_DTYPE_F32)))
        am_tp_fatal(c, rc, "load agreement");
    if (n_failed == 0) {
        *out = g;
        return 0;
    }
    /* A failure every rank shares (a missing file, a split the model does
     * not allow) is told once, by the leader; a rank's own failure by that rank. */
    int everyone = (int)n_failed == c->size;
    if (my_rc) {
        if (!everyone || c->rank == 0)
            fprintf(stderr, "anymal rank %d/%d: error: %s\n", c->rank, c->size, my_msg);
        rc = am_err_set(my_rc, "%s", my_msg);
    } else {
        rc = am_err_set(AM_EIO, "%d of the %d ranks failed to load %s", (int)n_failed, c->size,
                        o->model_path);
        if (c->rank == 0) fprintf(stderr, "anymal rank 0/%d: error: %s\n", c->size, am_err_msg());
    }
    fflush(stderr);
    g->stopped = 1; /* the followers never entered serve */
    am_shard_group_destroy(&g);
    return rc;
}

int am_shard_group_stop(am_shard_group *g) {
    if (g->stopped || g->comm->rank != 0) return 0;
    g->stopped = 1;
    return am_tp_stop(g->comm);
}

void am_shard_group_destroy(am_shard_group **p) {
    if (!p || !*p) return;
    am_shard_group *g = *p;
    if (g->comm && g->comm->rank == 0 && !g->stopped) {
        int rc = am_shard_group_stop(g);
        if (rc) am_tp_fatal(g->comm, rc, "stopping the group");
    }
    am_backend_destroy(&g->be);
    am_model_files_close(&g->mf);
    am_comm_destroy(&g->comm);
    am_free(g);
    *p = NULL;
}

int am_shard_group_ctx_new(am_shard_group *g, int32_t n_ctx, int32_t max_batch,
                           am_llama_ctx **out) {
    return am_llama_ctx_new_tp(g->mf.model, g->be, g->comm, n_ctx, max_batch, g->wire, out);
}

int am_shard_group_paged_ctx_new(am_shard_group *g, int32_t n_blocks, int32_t block_size,
                                 int32_t max_batch, am_llama_ctx **out) {
    return am_llama_ctx_new_paged_tp(g->mf.model, g->be, g->comm, n_blocks, block_size, max_batch,
                                     g->wire, out);
}

am_backend *am_shard_group_backend(am_shard_group *g) { return g->be; }

int am_shard_group_generate(am_shard_group *g, const int32_t *prompt, int64_t n_prompt,
                            const am_gen_params *p, am_token_cb cb, void *user,
                            am_gen_result *out) {
    memset(out, 0, sizeof *out);
    if (g->comm->rank != 0)
        return am_err_set(AM_EINVAL, "rank %d: only the leader generates", g->comm->rank);
    if (g->stopped) return am_err_set(AM_EINVAL, "the shard group was stopped");
    const am_llama_config *cfg = &g->mf.model->cfg;
    if (n_prompt < 1 || p->max_tokens < 1 || n_prompt + p->max_tokens > cfg->max_seq_len)
        return am_err_set(
            AM_ERANGE,
            "prompt (%lld tokens) + max_tokens (%d) must be within the model's context of %d",
            (long long)n_prompt, p->max_tokens, cfg->max_seq_len);
    am_llama_ctx *ctx = NULL;
    int32_t n_ctx = (int32_t)n_prompt + p->max_tokens;
    int rc = am_shard_group_ctx_new(g, n_ctx, n_prompt < 512 ? (int32_t)n_prompt : 512, &ctx);
    if (rc) return rc;
    rc = am_generate(ctx, g->mf.tok, prompt, n_prompt, p, cb, user, out);
    am_llama_ctx_destroy(&ctx);
    return rc;
}

int am_shard_group_serve(am_shard_group *g) {
    if (g->comm->rank == 0) return am_err_set(AM_EINVAL, "the leader does not serve");
    return am_tp_follow(g->mf.model, g->be, g->comm);
}

int am_shard_group_mem_report(am_shard_group *g, FILE *f, const char *label) {
    am_tp_comm *c = g->comm;
    am_tp_mem *all = NULL;
    if (c->rank == 0 && !(all = am_calloc((size_t)c->size, sizeof *all))) return AM_ENOMEM;
    int rc = am_tp_mem_gather(c, g->mf.model, all);
    if (rc == 0 && c->rank == 0) {
        for (int r = 0; r < c->size; r++) {
            const am_tp_mem *m = &all[r];
            fprintf(f,
                    "anymal shard-mem %s rank=%d/%d vm_rss=%lld vm_hwm=%lld rss_anon=%lld "
                    "rss_file=%lld "
                    "weight_bytes=%lld slices_bytes=%lld\n",
                    label, m->rank, c->size, (long long)m->mem.vm_rss, (long long)m->mem.vm_hwm,
                    (long long)m->mem.rss_anon, (long long)m->mem.rss_file,
                    (long long)m->weight_bytes, (long long)m->slices_bytes);
        }
        fflush(f);
    }
    am_free(all);
    return rc;
}
