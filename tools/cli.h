/* tools/cli.h - shared option parsing for the `anymal` subcommands.
 *
 * Options are `--name value` or `--name=value`; every parse error prints a
 * message naming the option and returns non-zero (exit status 2 = usage).
 */
#ifndef AM_CLI_H
#define AM_CLI_H

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
/* Sets up the process (BLAS core type, log level) before any backend exists. */
void am_cli_process_setup(int n_threads);

int am_cmd_mkmodel(int argc, char **argv);
int am_cmd_generate(int argc, char **argv);
int am_cmd_bench(int argc, char **argv);
int am_cmd_encode(int argc, char **argv);
int am_cmd_client(int argc, char **argv);

#endif
