/* tests/cluster_util.h - starting and stopping the real processes of a test cluster.
 *
 * Each process gets a process group of its own, so that a stop reaches
 * mpirun's ranks too; a stop is SIGTERM, then SIGKILL after 5 s, and always
 * reaps, so a failing test leaves nothing behind. Header-only: static helpers
 * for one test program each.
 */
#ifndef AM_TEST_CLUSTER_UTIL_H
#define AM_TEST_CLUSTER_UTIL_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts argv (argv[0] a path) with stderr (and stdout) into log (NULL: inherited). */
static pid_t am_spawn(char *const argv[], const char *log) {
    pid_t p = fork();
    if (p == 0) {
        setpgid(0, 0);
        if (log) {
            FILE *f = freopen(log, "w", stderr);
            if (f) dup2(fileno(stderr), STDOUT_FILENO);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return p;
}

/* Stops *p's process group (SIGTERM, SIGKILL after 5 s), reaps it, sets *p = 0. */
static void am_stop_proc(pid_t *p) {
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

/* 1 when the file contains needle (a fixed string), within timeout_ms. */
static int am_file_has(const char *path, const char *needle, int timeout_ms) {
    for (int waited = 0;; waited += 100) {
        FILE *f = fopen(path, "r");
        if (f) {
            char line[4096];
            int found = 0;
            while (!found && fgets(line, sizeof line, f))
                found = strstr(line, needle) != NULL;
            fclose(f);
            if (found) return 1;
        }
        if (waited >= timeout_ms) return 0;
        usleep(100000);
    }
}

#endif
