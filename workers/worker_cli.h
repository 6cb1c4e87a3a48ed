/* workers/worker_cli.h - the options every worker program shares (anymal-encoder,
 * anymal-shard-worker): where the coordinator is, which model, the worker's names,
 * its CURVE keys, and the liveness options (core/cli.h am_cli_link).
 *
 * Header-only because it is two lines of a table and four assignments, used by the
 * two worker mains and linked by no library.
 */
#ifndef AM_WORKER_CLI_H
#define AM_WORKER_CLI_H

#include "core/cli.h"

/* The table rows of --coordinator, --model, --name and --model-name (const char **). */
#define AM_WORKER_CLI_ROWS(endpoint, model, name, model_name)                                      \
    {"--coordinator", AM_CLI_STR, (endpoint), 0, 0}, {"--model", AM_CLI_STR, (model), 0, 0},       \
        {"--name", AM_CLI_STR, (name), 0, 0}, {                                                    \
        "--model-name", AM_CLI_STR, (model_name), 0, 0                                             \
    }

/* The table rows of --curve-key (this worker's secret key file) and --coordinator-key
 * (the coordinator's public key file), into a worker's options struct o (both
 * am_encoder_worker_opts and am_shard_leader_opts hold them in .link; proto/curve.h). */
#define AM_WORKER_CLI_KEY_ROWS(o)                                                                  \
    {"--curve-key", AM_CLI_STR, &(o).link.curve_key, 0, 0}, {                                      \
        "--coordinator-key", AM_CLI_STR, &(o).link.coordinator_key, 0, 0                           \
    }

/* Copies the parsed liveness options into a worker's options struct o (both
 * am_encoder_worker_opts and am_shard_leader_opts hold them in .link). */
#define AM_WORKER_CLI_TAKE_LINK(o, link)                                                           \
    do {                                                                                           \
        (o).link.heartbeat_ms = (link).heartbeat_ms;                                               \
        (o).link.liveness = (link).liveness;                                                       \
        (o).link.reconnect_min_ms = (link).reconnect_min_ms;                                       \
        (o).link.reconnect_max_ms = (link).reconnect_max_ms;                                       \
    } while (0)

#endif
