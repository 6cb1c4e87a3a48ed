/* workers/encoder_main.c - `anymal-encoder`: an encoder worker process (workers/encoder_worker.h).
 *
 * A program's main sits beside its actor (docs/glossary.md); like every
 * program it parses its options with core/cli.h. Before any backend exists it
 * loads OpenBLAS for the CPU's level (am_cpu_blas_setup), as the `anymal`
 * commands that compute do.
 */
#include "core/cli.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "proto/proto.h"
#include "workers/encoder_worker.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define CMD "encoder"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void help(void) {
    char mods[128];
    printf(
        "usage: anymal-encoder --coordinator EP --model DIR --modality LIST [--threads N] "
        "[--max-batch N]\n"
        "                      [--device D] [--batch-wait-ms N] [--capacity N] [--name S] "
        "[--model-name S]\n"
        "                      [--heartbeat-ms N] [--liveness N] [--reconnect-ms MIN[,MAX]]\n\n"
        "Registers with the coordinator and encodes the media of ENCODE jobs into modality-token "
        "rows.\n"
        "  --modality   comma-separated: %s (or all)\n"
        "  --max-batch  jobs encoded together (default %d); --batch-wait-ms: how long the first "
        "job of a\n"
        "               batch waits for more (default %d)\n"
        "  --capacity   jobs accepted at once (default 2 x --max-batch)\n"
        "  --device     cpu (default), cuda or cuda:N: the compute backend of every modality\n"
        "  --heartbeat-ms/--liveness must match the coordinator's; --reconnect-ms: backoff bounds\n"
        "               (default 1000,32000)\n",
        am_modality_list(mods, sizeof mods, ", ", ", "), AM_ENCODER_MAX_BATCH_DEFAULT,
        AM_ENCODER_BATCH_WAIT_MS_DEFAULT);
}

int main(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    am_encoder_worker_opts o = {.batch_wait_ms = -1};
    const char *opt, *device = NULL;
    am_cli_link link = {0};
    int rc_link;
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            return 0;
        } else if (!strcmp(opt, "--coordinator")) {
            if (!(o.endpoint = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--model")) {
            if (!(o.model_dir = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--name")) {
            if (!(o.name = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--model-name")) {
            if (!(o.model_name = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--modality")) {
            const char *list = am_cli_value(&cli);
            if (!list) return AM_EXIT_USAGE;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", list);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t;
                 t = strtok_r(NULL, ",", &save)) {
                am_modality m;
                if (!strcmp(t, "all")) {
                    o.modalities |= (1u << AM_MOD_COUNT) - 1;
                } else if (am_modality_parse(t, &m)) {
                    char mods[128];
                    return am_cli_fail(&cli, "unknown modality '%s' (want %s or all)", t,
                                       am_modality_list(mods, sizeof mods, ", ", ", "));
                } else {
                    o.modalities |= 1u << m;
                }
            }
        } else if (!strcmp(opt, "--threads")) {
            if (am_cli_int(&cli, 1, 1024, &v)) return AM_EXIT_USAGE;
            o.n_threads = (int)v;
        } else if (!strcmp(opt, "--device")) {
            if (!(device = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--max-batch")) {
            if (am_cli_int(&cli, 1, 256, &v)) return AM_EXIT_USAGE;
            o.max_batch = (int)v;
        } else if (!strcmp(opt, "--batch-wait-ms")) {
            if (am_cli_int(&cli, 0, 10000, &v)) return AM_EXIT_USAGE;
            o.batch_wait_ms = (int)v;
        } else if (!strcmp(opt, "--capacity")) {
            if (am_cli_int(&cli, 1, AM_ENCODER_MAX_CAPACITY, &v)) return AM_EXIT_USAGE;
            o.capacity = (int)v;
        } else if ((rc_link = am_cli_link_opt(&cli, opt, 1, &link)) != 0) {
            if (rc_link != 1) return rc_link;
        } else {
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        }
    }
    o.heartbeat_ms = link.heartbeat_ms;
    o.liveness = link.liveness;
    o.reconnect_min_ms = link.reconnect_min_ms;
    o.reconnect_max_ms = link.reconnect_max_ms;
    if (!o.endpoint || !o.model_dir || !o.modalities)
        return am_cli_fail(&cli, "--coordinator, --model and --modality are required");
    o.device = device;
    am_cpu_blas_setup(o.n_threads);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = am_encoder_worker_run(&o, &g_stop);
    return rc ? am_cli_error(CMD, rc) : 0;
}
