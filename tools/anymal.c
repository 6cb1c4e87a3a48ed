/* tools/anymal.c - the `anymal` command: subcommand dispatch and help. */
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"mkmodel", am_cmd_mkmodel,
     "write a random-init LLaMA checkpoint (or, --with-encoders, an AnyMAL model directory)"},
    {"generate", am_cmd_generate, "generate text (or token ids) from a prompt"},
    {"encode", am_cmd_encode,
     "encode images, videos, audio or IMU motion into modality-token rows (prints checksums)"},
    {"client", am_cmd_client, "send a multimodal request to a coordinator and stream the answer"},
    {"batch", am_cmd_batch,
     "run an OpenAI Batch JSONL file through a coordinator (resumable, exactly once)"},
    {"bench", am_cmd_bench, "measure decode/prefill throughput against the memory roofline"},
    {"cpu", am_cmd_cpu, "show the CPU's model, features and instruction-set levels"},
    {"keygen", am_cmd_keygen, "make a CURVE key pair (PATH.key, PATH.pub) for an anymal link"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: anymal <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`anymal <command> --help` describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return AM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "anymal: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return AM_EXIT_USAGE;
}
