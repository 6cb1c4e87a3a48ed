/* workers/shard_worker_main.c - `mpirun -np P anymal-shard-worker --coordinator EP --model PATH`:
 * a shard group serving a coordinator.
 *
 * Every rank loads its slice (llm_shards/shard_group.h). Rank 0 creates the
 * paged group context and runs the shard leader (workers/shard_leader.h):
 * registers the group, feeds GENERATE/EMBED/CANCEL into the scheduler and
 * streams TOKEN messages; the other ranks serve its steps. SIGTERM/SIGINT on
 * the leader stop the group cleanly (followers ignore them and leave when the
 * leader stops the group). Runs without mpirun as a group of one. Options are
 * parsed with core/cli.h, as in every program (docs/glossary.md).
 */
#include "core/cli.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "llm_shards/comm.h"
#include "llm_shards/llama.h"
#include "llm_shards/sched.h"
#include "llm_shards/shard_group.h"
#include "workers/worker_cli.h"
#include "workers/shard_leader.h"
#include "workers/worker_link.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD                             "shard-worker"
#define SHARD_WORKER_MAX_BLOCKS_DEFAULT 4096

static volatile sig_atomic_t g_stop;
/* The first SIGTERM/SIGINT drains (finish what is in flight), a second stops at once. */
static void on_signal(int sig) {
    (void)sig;
    g_stop = g_stop ? 2 : 1;
}

static void help(void) {
    printf("usage: mpirun -np P anymal-shard-worker --coordinator EP --model PATH [--threads N] "
           "[--capacity N]\n"
           "              [--device cpu|cuda|cuda:N]\n"
           "              [--kv-blocks N | --memory-fraction F] [--block-size N] [--max-batch N]\n"
           "              [--name S] [--model-name S]\n"
           "              [--heartbeat-ms N] [--liveness N] [--reconnect-ms MIN[,MAX]] "
           "[--allreduce-bf16]\n"
           "              [--stream-ms N] [--drain-ms N] [--stall-ms N] [--curve-key FILE "
           "--coordinator-key FILE]\n\n"
           "  --device      every rank's compute backend (default cpu; ranks may share one GPU)\n"
           "  --capacity    requests in flight at once (default %d)\n"
           "  --kv-blocks   KV blocks of --block-size positions (default: capacity x context, at "
           "most %d)\n"
           "  --memory-fraction  size the KV cache instead from F (0 < F <= 1) of the device's "
           "memory\n"
           "                (the GPU's, or RAM for cpu) after what is in use, the weights and the\n"
           "                activations, split between the ranks on this node\n"
           "  --max-batch   rows per step (default %d)\n"
           "  --stream-ms   a request's tokens go out together at most this often (default %d;\n"
           "                0 = one TOKEN message per token)\n"
           "  --drain-ms    SIGTERM to the leader: take nothing new, finish the requests in "
           "flight\n"
           "                for at most this (default %d); a second SIGTERM stops at once\n"
           "  --stall-ms    no step for this long (a rank stopped or hung): the leader tells the\n"
           "                coordinator and exits %d, and mpirun ends the group (default %d)\n"
           "  --curve-key   the group's CURVE secret key (anymal keygen), --coordinator-key the\n"
           "                coordinator's public key: required by a coordinator with keys (the\n"
           "                leader rank uses them)\n",
           AM_SHARD_LEADER_CAPACITY_DEFAULT, SHARD_WORKER_MAX_BLOCKS_DEFAULT,
           AM_SCHED_DEFAULT_MAX_BATCH, AM_SHARD_LEADER_STREAM_MS, AM_DRAIN_MS_DEFAULT,
           AM_STALL_EXIT_CODE, AM_STALL_MS_DEFAULT);
}

int main(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    am_shard_leader_opts lo = {0};
    am_shard_group_opts go = {.need_tok = 1, .allreduce_dtype = AM_DTYPE_F32};
    int64_t n_blocks = 0, block_size = AM_SCHED_DEFAULT_BLOCK_SIZE,
            max_batch = AM_SCHED_DEFAULT_MAX_BATCH;
    double mem_fraction = 0.0; /* 0: n_blocks, or the capacity-based default */
    int stream_ms = -1, allreduce_bf16 = 0;
    am_cli_link link = {0};
    const am_cli_opt opts[] = {
        AM_WORKER_CLI_ROWS(&lo.link.endpoint, &lo.model_path, &lo.name, &lo.model_name),
        AM_WORKER_CLI_KEY_ROWS(lo),
        {"--device", AM_CLI_STR, &go.device, 0, 0},
        {"--threads", AM_CLI_INT, &go.n_threads, 1, 1024},
        {"--capacity", AM_CLI_INT, &lo.capacity, 1, 65536},
        {"--kv-blocks", AM_CLI_I64, &n_blocks, 1, 1 << 24},
        {"--memory-fraction", AM_CLI_F64, &mem_fraction, 1e-3, 1.0},
        {"--block-size", AM_CLI_I64, &block_size, 1, 4096},
        {"--max-batch", AM_CLI_I64, &max_batch, 1, 1 << 16},
        {"--stream-ms", AM_CLI_INT, &stream_ms, 0, 60000},
        {"--allreduce-bf16", AM_CLI_FLAG, &allreduce_bf16, 0, 0},
        {"--drain-ms", AM_CLI_INT, &lo.drain_ms, 1, 86400000},
        {"--stall-ms", AM_CLI_INT, &lo.link.stall_ms, 100, 86400000},
    };
    const am_cli_spec spec = {.opts = opts,
                              .n_opts = (int)(sizeof opts / sizeof opts[0]),
                              .help = help,
                              .link = &link,
                              .reconnect = 1};
    int rc = am_cli_parse(&cli, &spec);
    if (rc) return rc == AM_CLI_HELP ? 0 : rc;
    go.model_path = lo.model_path;
    /* --stream-ms 0 means one TOKEN message per token: the leader's -1; not given, its default. */
    lo.stream_ms = stream_ms < 0 ? 0 : stream_ms ? stream_ms : -1;
    if (allreduce_bf16) go.allreduce_dtype = AM_DTYPE_BF16;
    AM_WORKER_CLI_TAKE_LINK(lo, link);
    if (!lo.link.endpoint || !lo.model_path)
        return am_cli_fail(&cli, "--coordinator and --model are required");
    if (n_blocks && mem_fraction > 0.0)
        return am_cli_fail(&cli,
                           "--kv-blocks and --memory-fraction both size the KV cache: give one");
    am_cpu_blas_setup(go.n_threads);
    /* A serving group shares its cores with its link thread (and often the coordinator
     * and encoders): a rank waiting in an all-reduce yields the core instead of busy
     * polling through the others' time slices (100x slower steps on 2 cores without
     * it, bench/README.md). Set before MPI starts; the environment's value wins. */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    am_shard_group *g = NULL;
    rc = am_shard_group_new(&argc, &argv, &go, &g);
    if (rc) return 1; /* already printed, naming the rank */
    struct sigaction sa = {.sa_handler = am_shard_group_rank(g) == 0 ? on_signal : SIG_IGN};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int status = 0;
    if (am_shard_group_rank(g) == 0) {
        const am_llama_model *m = am_shard_group_model(g);
        lo.tp_size = am_shard_group_size(g);
        lo.max_batch = (int32_t)max_batch;
        if (!n_blocks) {
            int cap = lo.capacity ? lo.capacity : AM_SHARD_LEADER_CAPACITY_DEFAULT;
            n_blocks = (int64_t)cap * ((m->cfg.max_seq_len + block_size - 1) / block_size);
            if (n_blocks > SHARD_WORKER_MAX_BLOCKS_DEFAULT)
                n_blocks = SHARD_WORKER_MAX_BLOCKS_DEFAULT;
        }
        if (mem_fraction > 0.0) {
            /* The ranks of this node share its device (they all open the same --device). */
            int32_t fit = 0;
            const int local = am_comm_local_size(am_shard_group_comm(g));
            rc = am_llama_kv_blocks_fit(m, am_shard_group_backend(g), mem_fraction,
                                        (int32_t)block_size, (int32_t)max_batch, &fit);
            n_blocks = local > 1 ? fit / local : fit;
            if (!rc && n_blocks < 1)
                rc = am_err_set(
                    AM_ENOMEM, "--memory-fraction %g: %d KV blocks shared by %d ranks on this node",
                    mem_fraction, fit, local);
        }
        am_llama_ctx *ctx = NULL;
        am_shard_leader_stats st = {0};
        if (!rc)
            rc = am_shard_group_paged_ctx_new(g, (int32_t)n_blocks, (int32_t)block_size,
                                              (int32_t)max_batch, &ctx);
        if (!rc) rc = am_shard_leader_run(ctx, am_shard_group_tokenizer(g), &lo, &g_stop, &st);
        if (rc)
            status = am_cli_error(CMD, rc);
        else
            fprintf(
                stderr,
                "{\"shard_leader\": {\"tp\": %d, \"requests\": %lld, \"tokens\": %lld, \"steps\": "
                "%lld, "
                "\"busy_s\": %.3f, \"idle_s\": %.3f, \"wait_rows_s\": %.3f, \"held_s\": %.3f}}\n",
                lo.tp_size, (long long)st.requests, (long long)st.tokens, (long long)st.steps,
                st.busy_s, st.idle_s, st.wait_rows_s, st.held_s);
        am_llama_ctx_destroy(&ctx);
        if ((rc = am_shard_group_stop(g)))
            am_tp_fatal(am_shard_group_comm(g), rc, "stopping the group");
    } else if ((rc = am_shard_group_serve(g))) {
        status = 1;
    }
    am_shard_group_destroy(&g);
    return status;
}
