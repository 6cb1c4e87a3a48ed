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
#include "encoders/image.h"
#include "proto/proto.h"
#include "workers/worker_cli.h"
#include "workers/encoder_worker.h"
#include "workers/worker_link.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define CMD "encoder"

static volatile sig_atomic_t g_stop;
/* The first SIGTERM/SIGINT drains (finish what is in flight), a second stops at once. */
static void on_signal(int sig) {
    (void)sig;
    g_stop = g_stop ? 2 : 1;
}

static void help(void) {
    char mods[128];
    printf(
        "usage: anymal-encoder --coordinator EP --model DIR --modality LIST [--threads N] "
        "[--max-batch N]\n"
        "                      [--device D] [--batch-wait-ms N] [--capacity N] [--name S] "
        "[--model-name S]\n"
        "                      [--heartbeat-ms N] [--liveness N] [--reconnect-ms MIN[,MAX]] "
        "[--drain-ms N]\n"
        "                      [--max-pixels N] [--stall-ms N] [--curve-key FILE --coordinator-key "
        "FILE]\n\n"
        "Registers with the coordinator and encodes the media of ENCODE jobs into modality-token "
        "rows.\n"
        "  --modality   comma-separated: %s (or all)\n"
        "  --max-batch  jobs encoded together (default %d); --batch-wait-ms: how long the first "
        "job of a\n"
        "               batch waits for more (default %d)\n"
        "  --capacity   jobs accepted at once (default 2 x --max-batch)\n"
        "  --device     cpu (default), cuda or cuda:N: the compute backend of every modality\n"
        "  --heartbeat-ms/--liveness must match the coordinator's; --reconnect-ms: backoff bounds\n"
        "               (default 1000,32000)\n"
        "  --drain-ms   SIGTERM: take nothing new, finish the jobs in flight for at most this "
        "(default %d);\n"
        "               a second SIGTERM stops at once\n"
        "  --max-pixels images (and video frames) over this many pixels are refused with 400 "
        "(default %lld)\n"
        "  --stall-ms   an encode that runs this long means the worker is stuck: it tells the "
        "coordinator\n"
        "               and exits %d, for a supervisor to restart (default %d)\n"
        "  --curve-key  this worker's CURVE secret key (anymal keygen), --coordinator-key the\n"
        "               coordinator's public key: required by a coordinator with keys\n",
        am_modality_list(mods, sizeof mods, ", ", ", "), AM_ENCODER_MAX_BATCH_DEFAULT,
        AM_ENCODER_BATCH_WAIT_MS_DEFAULT, AM_DRAIN_MS_DEFAULT,
        (long long)AM_IMAGE_SERVE_MAX_PIXELS_DEFAULT, AM_STALL_EXIT_CODE, AM_STALL_MS_DEFAULT);
}

/* --modality a,b or all: the one option a table row cannot say. */
static int modality_opt(am_cli *cli, const char *opt, void *user) {
    uint32_t *mask = user;
    if (strcmp(opt, "--modality")) return 0;
    const char *list = am_cli_value(cli);
    if (!list) return AM_EXIT_USAGE;
    char buf[256], mods[128];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        am_modality m;
        if (!strcmp(t, "all"))
            *mask |= (1u << AM_MOD_COUNT) - 1;
        else if (!am_modality_parse(t, &m))
            *mask |= 1u << m;
        else
            return am_cli_fail(cli, "unknown modality '%s' (want %s or all)", t,
                               am_modality_list(mods, sizeof mods, ", ", ", "));
    }
    return 1;
}

int main(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    am_encoder_worker_opts o = {.batch_wait_ms = -1};
    am_cli_link link = {0};
    const am_cli_opt opts[] = {
        AM_WORKER_CLI_ROWS(&o.link.endpoint, &o.model_dir, &o.name, &o.model_name),
        AM_WORKER_CLI_KEY_ROWS(o),
        {"--device", AM_CLI_STR, &o.device, 0, 0},
        {"--threads", AM_CLI_INT, &o.n_threads, 1, 1024},
        {"--max-batch", AM_CLI_INT, &o.max_batch, 1, 256},
        {"--batch-wait-ms", AM_CLI_INT, &o.batch_wait_ms, 0, 10000},
        {"--capacity", AM_CLI_INT, &o.capacity, 1, AM_ENCODER_MAX_CAPACITY},
        {"--drain-ms", AM_CLI_INT, &o.drain_ms, 1, 86400000},
        {"--stall-ms", AM_CLI_INT, &o.link.stall_ms, 100, 86400000},
        {"--max-pixels", AM_CLI_I64, &o.max_pixels, 1, (double)AM_IMAGE_MAX_PIXELS_DEFAULT},
    };
    const am_cli_spec spec = {
        opts, (int)(sizeof opts / sizeof opts[0]), help, &link, 1, modality_opt, &o.modalities};
    int rc = am_cli_parse(&cli, &spec);
    if (rc) return rc == AM_CLI_HELP ? 0 : rc;
    AM_WORKER_CLI_TAKE_LINK(o, link);
    if (!o.link.endpoint || !o.model_dir || !o.modalities)
        return am_cli_fail(&cli, "--coordinator, --model and --modality are required");
    am_cpu_blas_setup(o.n_threads);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = am_encoder_worker_run(&o, &g_stop);
    return rc ? am_cli_error(CMD, rc) : 0;
}
