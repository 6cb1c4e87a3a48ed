/* core/log.c - leveled logging to stderr with a timestamp. */
#include "core/log.h"

#include "core/error.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};
static atomic_int log_level = -1; /* -1: not yet read from the environment */

int am_log_parse_level(const char *name, am_log_level *out) {
    for (int i = 0; i <= AM_LOG_TRACE; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (am_log_level)i;
            return 0;
        }
    }
    return am_err_set(AM_EINVAL, "unknown log level '%s' (want error|warn|info|debug|trace)", name);
}

void am_log_set_level(am_log_level level) { atomic_store(&log_level, (int)level); }

am_log_level am_log_get_level(void) {
    int level = atomic_load(&log_level);
    if (level < 0) {
        am_log_level parsed = AM_LOG_WARN;
        const char *env = getenv("AM_LOG_LEVEL");
        if (env && am_log_parse_level(env, &parsed) != 0) am_err_clear();
        level = (int)parsed;
        atomic_store(&log_level, level);
    }
    return (am_log_level)level;
}

void am_log(am_log_level level, const char *fmt, ...) {
    if (level > am_log_get_level()) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld anymal %s: ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); /* one write per line keeps lines whole */
}
