/* core/cli.c - option parsing helpers shared by every program (core/cli.h). */
#include "core/cli.h"

#include "core/alloc.h"
#include "core/error.h"

#include <errno.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void am_cli_init(am_cli *c, const char *cmd, int argc, char **argv) {
    *c = (am_cli){.argc = argc, .argv = argv, .i = 1, .cmd = cmd};
}

const char *am_cli_next(am_cli *c) {
    static _Thread_local char name[128];
    if (c->i >= c->argc) return NULL;
    const char *a = c->argv[c->i++];
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    if (eq && (size_t)(eq - a) < sizeof name) {
        snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
        c->name = name;
        c->value = eq + 1;
    } else {
        c->name = a;
        c->value = NULL;
    }
    return c->name;
}

int am_cli_fail(const am_cli *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "anymal %s: ", c->cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see anymal %s --help)\n", c->cmd);
    va_end(ap);
    return AM_EXIT_USAGE;
}

const char *am_cli_value(am_cli *c) {
    if (c->value) return c->value;
    if (c->i >= c->argc) {
        am_cli_fail(c, "option %s needs a value", c->name);
        return NULL;
    }
    return c->argv[c->i++];
}

int am_cli_int(am_cli *c, int64_t min, int64_t max, int64_t *out) {
    const char *v = am_cli_value(c);
    if (!v) return AM_EXIT_USAGE;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        return am_cli_fail(c, "%s wants an integer in [%lld, %lld], got '%s'", c->name,
                           (long long)min, (long long)max, v);
    *out = x;
    return 0;
}

int am_cli_u64(am_cli *c, uint64_t *out) {
    const char *v = am_cli_value(c);
    if (!v) return AM_EXIT_USAGE;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-')
        return am_cli_fail(c, "%s wants a non-negative integer, got '%s'", c->name, v);
    *out = x;
    return 0;
}

int am_cli_float(am_cli *c, double min, double max, double *out) {
    const char *v = am_cli_value(c);
    if (!v) return AM_EXIT_USAGE;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= min && x <= max))
        return am_cli_fail(c, "%s wants a number in [%g, %g], got '%s'", c->name, min, max, v);
    *out = x;
    return 0;
}

int am_cli_error(const char *cmd, int rc) {
    const char *msg = am_err_msg();
    fprintf(stderr, "anymal %s: error: %s\n", cmd, msg[0] ? msg : am_strerror(rc));
    return 1;
}

int am_cli_parse_ids(const char *cmd, const char *opt, const char *s, int64_t max, int32_t **ids,
                     int64_t *n) {
    am_cli cli;
    am_cli_init(&cli, cmd, 0, NULL);
    int64_t cap = 16, count = 0;
    int32_t *v = am_malloc((size_t)cap * sizeof *v);
    if (!v) return am_cli_error(cmd, AM_ENOMEM);
    for (const char *p = s; *p;) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            am_free(v);
            return am_cli_fail(&cli, "%s wants comma-separated non-negative ids, bad at '%s'", opt,
                               p);
        }
        if (count == max) {
            am_free(v);
            return am_cli_fail(&cli, "%s has more than %lld ids", opt, (long long)max);
        }
        if (count == cap) {
            int32_t *nv = am_realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!nv) {
                am_free(v);
                return am_cli_error(cmd, am_err_set(AM_ENOMEM, "%s: out of memory for %lld ids",
                                                    opt, (long long)cap));
            }
            v = nv;
        }
        v[count++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (!count) {
        am_free(v);
        return am_cli_fail(&cli, "%s is empty", opt);
    }
    *ids = v;
    *n = count;
    return 0;
}

int am_cli_link_opt(am_cli *c, const char *opt, int reconnect, am_cli_link *l) {
    int64_t v;
    if (!strcmp(opt, "--heartbeat-ms")) {
        if (am_cli_int(c, 10, 600000, &v)) return AM_EXIT_USAGE;
        l->heartbeat_ms = (int)v;
    } else if (!strcmp(opt, "--liveness")) {
        if (am_cli_int(c, 1, 100, &v)) return AM_EXIT_USAGE;
        l->liveness = (int)v;
    } else if (reconnect && !strcmp(opt, "--reconnect-ms")) {
        const char *s = am_cli_value(c);
        int a = 0, b = 0;
        if (!s || sscanf(s, "%d,%d", &a, &b) < 1 || a < 1 || (b && b < a))
            return am_cli_fail(c, "--reconnect-ms wants MIN[,MAX] in ms (MAX >= MIN)");
        l->reconnect_min_ms = a;
        l->reconnect_max_ms = b;
    } else {
        return 0;
    }
    return 1;
}

static int table_opt(am_cli *c, const am_cli_opt *o) {
    int64_t v;
    double f;
    switch (o->kind) {
    case AM_CLI_STR: return (*(const char **)o->dst = am_cli_value(c)) ? 0 : AM_EXIT_USAGE;
    case AM_CLI_INT:
    case AM_CLI_I64:
        if (am_cli_int(c, (int64_t)o->min, (int64_t)o->max, &v)) return AM_EXIT_USAGE;
        if (o->kind == AM_CLI_INT)
            *(int *)o->dst = (int)v;
        else
            *(int64_t *)o->dst = v;
        return 0;
    case AM_CLI_F64:
        if (am_cli_float(c, o->min, o->max, &f)) return AM_EXIT_USAGE;
        *(double *)o->dst = f;
        return 0;
    case AM_CLI_FLAG:
        if (c->value) return am_cli_fail(c, "%s takes no value", c->name);
        *(int *)o->dst = 1;
        return 0;
    }
    return am_cli_fail(c, "%s: option table row of unknown kind %d", c->name, (int)o->kind);
}

int am_cli_parse(am_cli *c, const am_cli_spec *s) {
    const char *opt;
    while ((opt = am_cli_next(c))) {
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            if (s->help) s->help();
            return AM_CLI_HELP;
        }
        int i = 0;
        while (i < s->n_opts && strcmp(opt, s->opts[i].name))
            i++;
        int rc = 0;
        if (i < s->n_opts) rc = table_opt(c, &s->opts[i]) ? AM_EXIT_USAGE : 1;
        if (!rc && s->link) rc = am_cli_link_opt(c, opt, s->reconnect, s->link);
        if (!rc && s->custom) rc = s->custom(c, opt, s->user);
        if (!rc) return am_cli_fail(c, "unknown option '%s'", opt);
        if (rc != 1) return AM_EXIT_USAGE;
    }
    return 0;
}
