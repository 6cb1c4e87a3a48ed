/* tools/cmd_keygen.c - `anymal keygen --out PATH`: a CURVE key pair for an anymal link.
 *
 * Writes PATH.key (the secret key, mode 0600) and PATH.pub (the public key, named
 * after PATH's last component) in the formats of proto/curve.h, and refuses to
 * overwrite either: a key replaced by mistake locks its worker or client out, and a
 * secret key should be made where it is used, never copied around. docs/security.md
 * says where each file goes.
 */
#include "core/error.h"
#include "proto/curve.h"
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>

#define CMD "keygen"

static void help(void) {
    printf("usage: anymal keygen --out PATH\n\n"
           "Makes a CURVE key pair for the coordinator, a worker or a client (the gateway is a "
           "client):\n"
           "  PATH.key  the secret key (mode 0600): give it to that program as --curve-key "
           "(the\n"
           "            coordinator's: --curve-secret); keep it on that machine\n"
           "  PATH.pub  the public key, named after PATH's last component: put it in the\n"
           "            coordinator's --worker-keys or --client-keys (a file of such lines, or a\n"
           "            directory of .pub files); the coordinator's own .pub is every peer's\n"
           "            --coordinator-key\n"
           "Existing files are never overwritten. See docs/security.md.\n");
}

int am_cmd_keygen(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    const char *out = NULL;
    const am_cli_opt opts[] = {{"--out", AM_CLI_STR, &out, 0, 0}};
    const am_cli_spec spec = {.opts = opts, .n_opts = 1, .help = help};
    int rc = am_cli_parse(&cli, &spec);
    if (rc) return rc == AM_CLI_HELP ? 0 : rc;
    if (!out) return am_cli_fail(&cli, "--out PATH is required (writes PATH.key and PATH.pub)");
    if ((rc = am_curve_keygen(out))) return am_cli_error(CMD, rc);
    printf("%s.key: secret key (mode 0600)\n%s.pub: public key\n", out, out);
    return 0;
}
