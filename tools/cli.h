/* tools/cli.h - the `anymal` subcommands (tools/cmd_*.c), dispatched by
 * tools/anymal.c. Their option parsing is core/cli.h, included here because
 * every subcommand uses it.
 */
#ifndef AM_CLI_H
#define AM_CLI_H

#include "core/cli.h"

int am_cmd_mkmodel(int argc, char **argv);
int am_cmd_generate(int argc, char **argv);
int am_cmd_bench(int argc, char **argv);
int am_cmd_encode(int argc, char **argv);
int am_cmd_client(int argc, char **argv);
int am_cmd_batch(int argc, char **argv);
int am_cmd_cpu(int argc, char **argv);
int am_cmd_keygen(int argc, char **argv);

#endif
