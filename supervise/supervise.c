/* supervise/supervise.c - `anymal-supervise [options] -- CMD ARGS...`: keeps one program
 * running.
 *
 * An actor that dies (a shard group whose rank was killed or stalled, an encoder worker
 * that crashed) is started again without anyone typing (docs/reliability.md). The
 * supervisor starts CMD in a process group of its own, so that a signal reaches all of it
 * (mpirun and its ranks). When CMD ends while the supervisor is not stopping, whatever its
 * status, CMD is started again after a backoff: --backoff-ms MIN (default 500) doubling to
 * MAX (default 30000) on every quick failure, back to MIN once CMD ran --stable-ms
 * (default 60000). --max-restarts N gives up (exit 1) after N quick failures in a row
 * (0 = never). The first SIGTERM/SIGINT is passed to the whole group (the actors drain:
 * finish in flight, then exit) and the supervisor ends with CMD's status once it has
 * ended; after --grace-ms (default 40000) or a second signal the group gets SIGKILL.
 * Every start and end is one line on stderr, so the logs show the time to recovery.
 */
#include "core/cli.h"
#include "core/clock.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CMD                              "supervise"
#define SUPERVISE_BACKOFF_MIN_MS_DEFAULT 500
#define SUPERVISE_BACKOFF_MAX_MS_DEFAULT 30000
#define SUPERVISE_STABLE_MS_DEFAULT      60000
#define SUPERVISE_GRACE_MS_DEFAULT       40000 /* > an actor's default drain (30 s) */
#define SUPERVISE_POLL_MS                20

static volatile sig_atomic_t g_signals;
static void on_signal(int sig) {
    (void)sig;
    g_signals++;
}

static void help(void) {
    printf(
        "usage: anymal-supervise [--name S] [--backoff-ms MIN[,MAX]] [--stable-ms N] "
        "[--max-restarts N]\n"
        "                        [--grace-ms N] -- CMD [ARGS...]\n\n"
        "Runs CMD in a process group of its own and starts it again whenever it ends.\n"
        "  --name         the name in its log lines (default: CMD's base name)\n"
        "  --backoff-ms   wait before a restart: MIN doubling to MAX on quick failures "
        "(default %d,%d)\n"
        "  --stable-ms    a run this long resets the backoff (default %d)\n"
        "  --max-restarts give up (exit 1) after N quick failures in a row (default 0: never)\n"
        "  --grace-ms     SIGTERM/SIGINT go to CMD's group (it drains); after this, or a second\n"
        "                 signal, SIGKILL (default %d). Exit status: CMD's.\n",
        SUPERVISE_BACKOFF_MIN_MS_DEFAULT, SUPERVISE_BACKOFF_MAX_MS_DEFAULT,
        SUPERVISE_STABLE_MS_DEFAULT, SUPERVISE_GRACE_MS_DEFAULT);
}

typedef struct opts {
    const char *name, *backoff;
    int backoff_min_ms, backoff_max_ms, stable_ms, max_restarts, grace_ms;
    char **argv; /* CMD ARGS... NULL-terminated (main's argv) */
} opts;

static pid_t start(const opts *o) {
    pid_t p = fork();
    if (p == 0) {
        setpgid(0, 0);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execvp(o->argv[0], o->argv);
        fprintf(stderr, "anymal-supervise %s: cannot run %s: %s\n", o->name, o->argv[0],
                strerror(errno));
        _exit(127);
    }
    if (p > 0) setpgid(p, p); /* also here: no signal can reach the group before it exists */
    return p;
}

/* Describes a wait status: "exited 70", "killed by signal 9". */
static const char *status_text(int st, char *buf, size_t cap) {
    if (WIFEXITED(st))
        snprintf(buf, cap, "exited %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, cap, "ended (status %d)", st);
    return buf;
}

/* Sleeps ms, or less when a signal comes. */
static void nap(int ms) {
    for (int64_t end = am_now_ms() + ms; !g_signals && am_now_ms() < end;)
        usleep(SUPERVISE_POLL_MS * 1000);
}

static int supervise(const opts *o) {
    int backoff = o->backoff_min_ms, quick_failures = 0, restarts = 0;
    for (;;) {
        const int64_t t0 = am_now_ms();
        pid_t child = start(o);
        if (child < 0) {
            fprintf(stderr, "anymal-supervise %s: fork: %s\n", o->name, strerror(errno));
            return 1;
        }
        fprintf(stderr, "anymal-supervise %s: started %s (pid %d, start %d)\n", o->name, o->argv[0],
                (int)child, restarts + 1);
        int st = 0, forwarded = 0;
        int64_t kill_at = 0;
        for (;;) {
            pid_t w = waitpid(child, &st, WNOHANG);
            if (w == child) break;
            if (w < 0 && errno != EINTR) return 1;
            if (g_signals && !forwarded) {
                kill(-child, SIGTERM);
                forwarded = 1;
                kill_at = am_now_ms() + o->grace_ms;
                fprintf(stderr, "anymal-supervise %s: stopping: SIGTERM to the group of %d\n",
                        o->name, (int)child);
            }
            if (forwarded && (g_signals > 1 || am_now_ms() >= kill_at) && kill_at) {
                kill(-child, SIGKILL);
                kill_at = 0;
                fprintf(stderr, "anymal-supervise %s: SIGKILL to the group of %d\n", o->name,
                        (int)child);
            }
            usleep(SUPERVISE_POLL_MS * 1000);
        }
        kill(-child, SIGKILL); /* whatever of the group outlived its leader */
        char why[64];
        const int64_t ran_ms = am_now_ms() - t0;
        if (g_signals) {
            fprintf(stderr, "anymal-supervise %s: %s %s; stopped\n", o->name, o->argv[0],
                    status_text(st, why, sizeof why));
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        }
        if (ran_ms >= o->stable_ms) {
            backoff = o->backoff_min_ms;
            quick_failures = 0;
        } else if (o->max_restarts && ++quick_failures > o->max_restarts) {
            fprintf(stderr,
                    "anymal-supervise %s: %s %s after %lld ms, the %d-th quick failure in a "
                    "row: giving up\n",
                    o->name, o->argv[0], status_text(st, why, sizeof why), (long long)ran_ms,
                    quick_failures);
            return 1;
        }
        fprintf(stderr, "anymal-supervise %s: %s %s after %lld ms; restarting in %d ms\n", o->name,
                o->argv[0], status_text(st, why, sizeof why), (long long)ran_ms, backoff);
        nap(backoff);
        if (g_signals) return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        backoff = backoff * 2 > o->backoff_max_ms ? o->backoff_max_ms : backoff * 2;
        restarts++;
    }
}

int main(int argc, char **argv) {
    int sep = 1;
    while (sep < argc && strcmp(argv[sep], "--"))
        sep++;
    am_cli cli;
    am_cli_init(&cli, CMD, sep, argv); /* the options before "--" */
    opts o = {.backoff_min_ms = SUPERVISE_BACKOFF_MIN_MS_DEFAULT,
              .backoff_max_ms = SUPERVISE_BACKOFF_MAX_MS_DEFAULT,
              .stable_ms = SUPERVISE_STABLE_MS_DEFAULT,
              .grace_ms = SUPERVISE_GRACE_MS_DEFAULT};
    const am_cli_opt table[] = {
        {"--name", AM_CLI_STR, &o.name, 0, 0},
        {"--backoff-ms", AM_CLI_STR, &o.backoff, 0, 0},
        {"--stable-ms", AM_CLI_INT, &o.stable_ms, 0, 86400000},
        {"--max-restarts", AM_CLI_INT, &o.max_restarts, 0, 1000000},
        {"--grace-ms", AM_CLI_INT, &o.grace_ms, 0, 86400000},
    };
    const am_cli_spec spec = {
        .opts = table, .n_opts = (int)(sizeof table / sizeof table[0]), .help = help};
    int rc = am_cli_parse(&cli, &spec);
    if (rc) return rc == AM_CLI_HELP ? 0 : rc;
    if (o.backoff) {
        int a = 0, b = 0;
        if (sscanf(o.backoff, "%d,%d", &a, &b) < 1 || a < 1 || (b && b < a))
            return am_cli_fail(&cli, "--backoff-ms wants MIN[,MAX] in ms (MAX >= MIN)");
        o.backoff_min_ms = a;
        o.backoff_max_ms = b ? b : (a > o.backoff_max_ms ? a : o.backoff_max_ms);
    }
    if (sep + 1 >= argc) return am_cli_fail(&cli, "no program to run: give -- CMD [ARGS...]");
    o.argv = argv + sep + 1;
    if (!o.name) {
        const char *slash = strrchr(o.argv[0], '/');
        o.name = slash ? slash + 1 : o.argv[0];
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    return supervise(&o);
}
