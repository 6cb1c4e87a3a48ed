/* core/cli.h - command-line option parsing shared by every program: the `anymal`
 * subcommands (tools/), anymal-shard, and the actor programs beside their actors
 * (coordinator/coordinator_main.c, workers/encoder_main.c and shard_worker_main.c).
 *
 * Options are `--name value` or `--name=value`; every parse error prints a
 * message naming the option and returns non-zero (exit status 2 = usage).
 * It lives in core (library am_cli, which links am_base alone) because every
 * program's main uses it, whatever its layer: anymal-coordinator links it
 * and still no engine.
 */
#ifndef AM_CORE_CLI_H
#define AM_CORE_CLI_H

#include <stdint.h>

#define AM_EXIT_USAGE 2

typedef struct am_cli {
    int argc;
    char **argv;
    int i;             /* next argument */
    const char *cmd;   /* subcommand name for messages */
    const char *name;  /* current option name, without value */
    const char *value; /* its value when given as --name=value */
} am_cli;

void am_cli_init(am_cli *c, const char *cmd, int argc, char **argv);
/* Next option name (e.g. "--model"); NULL at the end. A positional argument
 * is returned as is. */
const char *am_cli_next(am_cli *c);
/* The value of the current option (the next argument, or after '='); NULL
 * with a message if missing. */
const char *am_cli_value(am_cli *c);
int am_cli_int(am_cli *c, int64_t min, int64_t max, int64_t *out);
int am_cli_float(am_cli *c, double min, double max, double *out);
int am_cli_u64(am_cli *c, uint64_t *out);
/* Prints "anymal CMD: <message>" to stderr and returns AM_EXIT_USAGE. */
int am_cli_fail(const am_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the current error (am_err_msg or am_strerror(rc)) and returns 1. */
int am_cli_error(const char *cmd, int rc);
/* The liveness options of the actor processes (docs/reliability.md): --heartbeat-ms N,
 * --liveness N and, for the workers (reconnect != 0), --reconnect-ms MIN[,MAX]
 * (backoff between reconnects; MAX >= MIN, 0 = the default). Fields left 0
 * mean the defaults. am_cli_link_opt takes opt when it is one of them: 1
 * (taken), 0 (not one of them) or AM_EXIT_USAGE (message printed). */
typedef struct am_cli_link {
    int heartbeat_ms, liveness, reconnect_min_ms, reconnect_max_ms;
} am_cli_link;
int am_cli_link_opt(am_cli *c, const char *opt, int reconnect, am_cli_link *l);
/* A program's options as a table, parsed by am_cli_parse: each row names an option,
 * what kind of value it takes and where that value goes. The bounds are inclusive
 * (AM_CLI_INT/I64/F64; doubles hold every int64 bound in use exactly). */
typedef enum {
    AM_CLI_STR,  /* const char ** (argv's own string) */
    AM_CLI_INT,  /* int * */
    AM_CLI_I64,  /* int64_t * */
    AM_CLI_F64,  /* double * */
    AM_CLI_FLAG, /* int *: set to 1; takes no value */
} am_cli_kind;
typedef struct am_cli_opt {
    const char *name; /* "--model" */
    am_cli_kind kind;
    void *dst;
    double min, max;
} am_cli_opt;
/* What am_cli_parse knows of a program: its table, its help printer, the liveness
 * options (link != NULL: am_cli_link_opt with reconnect), and custom for options a
 * table row cannot say (returns 1 taken, 0 not its option, or AM_EXIT_USAGE). */
typedef struct am_cli_spec {
    const am_cli_opt *opts;
    int n_opts;
    void (*help)(void);
    am_cli_link *link;
    int reconnect;
    int (*custom)(am_cli *c, const char *opt, void *user);
    void *user;
} am_cli_spec;
#define AM_CLI_HELP (-1) /* am_cli_parse printed the help: the program exits 0 */
/* Parses every remaining option of c by s: 0, AM_CLI_HELP (--help/-h), or
 * AM_EXIT_USAGE with a message naming the option (unknown, missing or bad value). */
int am_cli_parse(am_cli *c, const am_cli_spec *s);
/* Parses "1,2,3" (the value of option opt) into a new array of at most max
 * non-negative int32 ids (*ids, free with am_free; *n of them). Returns 0, or
 * with a message printed naming opt: AM_EXIT_USAGE (not a list of ids, empty,
 * more than max) or 1 (out of memory). */
int am_cli_parse_ids(const char *cmd, const char *opt, const char *s, int64_t max, int32_t **ids,
                     int64_t *n);

#endif
