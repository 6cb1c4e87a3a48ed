/* tools/tp_launch.c - spawning mpirun for `anymal generate --tp P` and `anymal bench decode --tp
 * P`. */
#include "tools/tp_launch.h"

#include "core/alloc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define AM_TP_LAUNCH_FIXED_ARGS 10

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig) {
    if (child_pid > 0) kill((pid_t)child_pid, sig);
}

static int env_is_1(const char *name) {
    const char *v = getenv(name);
    return v && !strcmp(v, "1");
}

int am_tp_strip_args(int argc, char **argv, char **out) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tp")) {
            i++; /* and its value */
            continue;
        }
        if (!strncmp(argv[i], "--tp=", 5)) continue;
        out[n++] = argv[i];
    }
    return n;
}

int am_tp_launch(const char *cmd, int tp, int threads_per_rank, char *const *shard_args,
                 int n_shard_args) {
    char exe[4096], shard[4200];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        fprintf(stderr, "anymal %s: error: /proc/self/exe: %s (needed to find anymal-shard)\n", cmd,
                strerror(errno));
        return 1;
    }
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(shard, sizeof shard, "%s/anymal-shard", slash ? exe : ".");
    if (access(shard, X_OK) != 0) {
        fprintf(stderr,
                "anymal %s: error: --tp %d needs the anymal-shard program next to anymal (%s): %s "
                "(it is built only when CMake finds MPI)\n",
                cmd, tp, shard, strerror(errno));
        return 1;
    }
    if (geteuid() == 0 &&
        !(env_is_1("OMPI_ALLOW_RUN_AS_ROOT") && env_is_1("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"))) {
        fprintf(stderr,
                "anymal %s: error: refusing to run mpirun as root; run as a normal user, or (tests "
                "only) set "
                "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n",
                cmd);
        return 1;
    }
    const char *mpirun = getenv("AM_MPIRUN");
    if (!mpirun || !mpirun[0]) mpirun = "mpirun";
    char np[16];
    snprintf(np, sizeof np, "%d", tp);
    char **args = am_calloc((size_t)n_shard_args + AM_TP_LAUNCH_FIXED_ARGS + 1, sizeof *args);
    if (!args) {
        fprintf(stderr, "anymal %s: error: out of memory\n", cmd);
        return 1;
    }
    int n = 0;
    args[n++] = (char *)mpirun;
    args[n++] = "-np";
    args[n++] = np;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long per_rank = threads_per_rank > 0 ? threads_per_rank : (cpus > tp ? cpus / tp : 1);
    char pe[32];
    snprintf(pe, sizeof pe, "slot:PE=%ld", per_rank);
    if (cpus > 0 && (long)tp * per_rank <= cpus) {
        args[n++] = "--use-hwthread-cpus";
        args[n++] = "--map-by";
        args[n++] = pe;
        args[n++] = "--bind-to";
        args[n++] = "hwthread";
    } else {
        if (cpus > 0 && tp > cpus) args[n++] = "--oversubscribe";
        args[n++] = "--bind-to";
        args[n++] = "none";
    }
    args[n++] = shard;
    for (int i = 0; i < n_shard_args; i++)
        args[n++] = shard_args[i];
    args[n] = NULL;

    fflush(stdout);
    fflush(stderr);
    struct sigaction sa, old_int, old_term, old_hup;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "anymal %s: error: fork: %s\n", cmd, strerror(errno));
        am_free(args);
        return 1;
    }
    if (pid == 0) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGHUP, &old_hup, NULL);
        execvp(mpirun, args);
        fprintf(stderr,
                "anymal %s: error: cannot run %s: %s (install openmpi-bin or set AM_MPIRUN)\n", cmd,
                mpirun, strerror(errno));
        _exit(127);
    }
    child_pid = pid;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "anymal %s: error: waitpid: %s\n", cmd, strerror(errno));
            status = 1 << 8;
            break;
        }
    }
    child_pid = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    am_free(args);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return 1; /* exec failed: already said */
    if (WIFEXITED(status))
        fprintf(stderr,
                "anymal %s: error: the shard group of %d ranks failed (mpirun exit status %d)\n",
                cmd, tp, WEXITSTATUS(status));
    else
        fprintf(stderr, "anymal %s: error: mpirun ended by signal %d\n", cmd,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 2 : 1;
}
