/* tests/cluster_util.h - a local anymal cluster of real processes for the integration tests
 * (test_actors, test_batch): a coordinator on a loopback port of its choosing, encoder
 * workers and P = 2 shard groups under mpirun, on a tiny AnyMAL model made by
 * `anymal mkmodel --with-encoders`.
 *
 * Every process runs in a process group of its own (so a kill reaches mpirun's ranks
 * too) and am_tc_stop ends it (SIGTERM, then SIGKILL after 5 s). Short heartbeats
 * (100 ms, liveness 3) and reconnect backoffs (50..400 ms) make failures visible fast.
 */
#ifndef AM_TEST_CLUSTER_UTIL_H
#define AM_TEST_CLUSTER_UTIL_H

#include "coordinator/client.h"
#include "core/clock.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define AM_TC_HB_MS "100"

typedef struct am_tc {
    char dir[256], model[300], ep[256], bin[512], src[512], coord_log[300];
    const char *shard_capacity;     /* --capacity of the shard groups ("16" when NULL) */
    const char *const *coord_extra; /* more coordinator options, NULL-terminated, or NULL */
    const char *const *shard_extra; /* more shard-worker options, likewise */
} am_tc;

static inline pid_t am_tc_spawn(char *const argv[], const char *log) {
    pid_t p = fork();
    if (p == 0) {
        setpgid(0, 0); /* its own group: a kill reaches mpirun's ranks too */
        if (log) {
            FILE *f = freopen(log, "w", stderr);
            (void)f;
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return p;
}

static inline void am_tc_stop(pid_t *p) {
    if (*p <= 0) return;
    kill(-*p, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(*p, NULL, WNOHANG) == *p) {
            *p = 0;
            return;
        }
        usleep(50000);
    }
    kill(-*p, SIGKILL);
    waitpid(*p, NULL, 0);
    *p = 0;
}

static inline pid_t am_tc_start_encoder(const am_tc *t, int k) {
    char path[600], name[32], log[320];
    snprintf(path, sizeof path, "%s/anymal-encoder", t->bin);
    snprintf(name, sizeof name, "enc%d", k);
    snprintf(log, sizeof log, "%s/enc%d.log", t->dir, k);
    char *argv[] = {path,
                    "--coordinator",
                    (char *)t->ep,
                    "--model",
                    (char *)t->model,
                    "--modality",
                    "all",
                    "--threads",
                    "1",
                    "--name",
                    name,
                    "--heartbeat-ms",
                    AM_TC_HB_MS,
                    "--liveness",
                    "3",
                    "--reconnect-ms",
                    "50,400",
                    NULL};
    return am_tc_spawn(argv, log);
}

/* A P = 2 shard group under mpirun (its own process group: the returned pid). */
static inline pid_t am_tc_start_shard(const am_tc *t, int k) {
    char mpirun[] = "/usr/bin/mpirun", sw[600], slog[320];
    snprintf(sw, sizeof sw, "%s/anymal-shard-worker", t->bin);
    snprintf(slog, sizeof slog, "%s/shard%d.log", t->dir, k);
    char *sargv[40] = {mpirun,
                       "-np",
                       "2",
                       "--oversubscribe",
                       "--bind-to",
                       "none",
                       sw,
                       "--coordinator",
                       (char *)t->ep,
                       "--model",
                       (char *)t->model,
                       "--threads",
                       "1",
                       "--heartbeat-ms",
                       AM_TC_HB_MS,
                       "--liveness",
                       "3",
                       "--capacity",
                       (char *)(t->shard_capacity ? t->shard_capacity : "16"),
                       "--reconnect-ms",
                       "50,400"};
    int n = 21;
    for (int i = 0; t->shard_extra && t->shard_extra[i] && n < 39; i++)
        sargv[n++] = (char *)t->shard_extra[i];
    sargv[n] = NULL;
    return am_tc_spawn(sargv, slog);
}

static inline pid_t am_tc_start_coordinator(const am_tc *t, const char *bind) {
    char path[600], epf[300];
    snprintf(path, sizeof path, "%s/anymal-coordinator", t->bin);
    snprintf(epf, sizeof epf, "%s/ep", t->dir);
    char *cargv[32] = {path, "--bind",          (char *)bind, "--endpoint-file",
                       epf,  "--heartbeat-ms",  AM_TC_HB_MS,  "--liveness",
                       "3",  "--max-msg-bytes", "1048576"};
    int n = 11;
    for (int i = 0; t->coord_extra && t->coord_extra[i] && n < 31; i++)
        cargv[n++] = (char *)t->coord_extra[i];
    cargv[n] = NULL;
    return am_tc_spawn(cargv, t->coord_log);
}

/* Directories and the model (dir /tmp/<prefix>_<pid>), then a coordinator on a free port
 * (t->ep once it wrote its endpoint file). 0, or -1 with a message on stderr. */
static inline int am_tc_setup(am_tc *t, const char *prefix, pid_t *p_coord) {
    const char *b = getenv("AM_BIN_DIR"), *s = getenv("AM_SOURCE_DIR");
    snprintf(t->bin, sizeof t->bin, "%s", b ? b : "bin");
    snprintf(t->src, sizeof t->src, "%s", s ? s : ".");
    snprintf(t->dir, sizeof t->dir, "/tmp/%s_%d", prefix, (int)getpid());
    snprintf(t->model, sizeof t->model, "%s/tiny", t->dir);
    snprintf(t->coord_log, sizeof t->coord_log, "%s/coord.log", t->dir);
    char cmd[2048], epf[300];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && %s/anymal mkmodel --shape tiny --with-encoders --seed 0 --out %s "
             ">/dev/null",
             t->dir, t->bin, t->model);
    if (system(cmd) != 0) return fprintf(stderr, "cluster: mkmodel failed\n"), -1;
    snprintf(epf, sizeof epf, "%s/ep", t->dir);
    *p_coord = am_tc_start_coordinator(t, "tcp://127.0.0.1:*");
    for (int i = 0; i < 100 && access(epf, R_OK); i++)
        usleep(50000);
    FILE *f = fopen(epf, "r");
    int ok = f && fscanf(f, "%255s", t->ep) == 1;
    if (f) fclose(f);
    return ok ? 0 : (fprintf(stderr, "cluster: the coordinator wrote no endpoint\n"), -1);
}

/* Sends one-token text requests until one is answered (the shard group loads under
 * mpirun), at most timeout_ms. 0 when the cluster answers. */
static inline int am_tc_wait_ready(const am_tc *t, int timeout_ms) {
    am_client *c = NULL;
    if (am_client_new(t->ep, &c)) return -1;
    int ok = 0;
    for (int64_t t0 = am_now_ms(); !ok && am_now_ms() - t0 < timeout_ms;) {
        am_client_part p = {.kind = AM_SEG_TEXT, .text = "hi", .text_len = 2};
        am_client_params prm = {.max_tokens = 1, .deadline_ms = 1000};
        am_client_result r;
        if (!am_client_generate(c, &p, 1, &prm, NULL, NULL, 2000, &r))
            ok = 1, am_client_result_fini(&r);
        else
            usleep(200000);
    }
    am_client_destroy(&c);
    return ok ? 0 : -1;
}

/* The pid of rank `rank` of the group whose mpirun is mpirun_pid (its children; mpirun
 * gives each rank a process group of its own). 0 if not found. */
static inline pid_t am_tc_shard_rank_pid(pid_t mpirun_pid, int rank) {
    char cmd[256], want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    snprintf(cmd, sizeof cmd, "pgrep -P %d", (int)mpirun_pid);
    FILE *f = popen(cmd, "r");
    pid_t found = 0;
    int pid;
    while (f && !found && fscanf(f, "%d", &pid) == 1) {
        char path[64], env[1 << 16];
        snprintf(path, sizeof path, "/proc/%d/environ", pid);
        FILE *e = fopen(path, "rb");
        size_t n = e ? fread(env, 1, sizeof env - 1, e) : 0;
        if (e) fclose(e);
        for (size_t i = 0; i < n && !found; i += strlen(env + i) + 1) {
            env[n] = 0;
            if (!strcmp(env + i, want)) found = pid;
        }
    }
    if (f) pclose(f);
    return found;
}

/* 1 when the file (a log) holds the fixed string needle, within timeout_ms. */
static inline int am_tc_file_has(const char *path, const char *needle, int timeout_ms) {
    for (int64_t t0 = am_now_ms();; usleep(100000)) {
        FILE *f = fopen(path, "r");
        char line[4096];
        int found = 0;
        while (f && !found && fgets(line, sizeof line, f))
            found = strstr(line, needle) != NULL;
        if (f) fclose(f);
        if (found) return 1;
        if (am_now_ms() - t0 >= timeout_ms) return 0;
    }
}

/* Polls HEALTH until ok(h) or timeout_ms; returns the ms it took, or -1. */
static inline int64_t am_tc_wait_health(am_client *c, int (*ok)(const am_client_health *),
                                        int64_t timeout_ms) {
    int64_t t0 = am_now_ms();
    while (am_now_ms() - t0 < timeout_ms) {
        am_client_health h;
        if (!am_client_health_get(c, NULL, 2000, &h) && ok(&h)) return am_now_ms() - t0;
        usleep(20000);
    }
    return -1;
}

#endif
