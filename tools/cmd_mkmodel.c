/* tools/cmd_mkmodel.c - `anymal mkmodel`: write a random-init checkpoint. */
#include "core/error.h"
#include "core/log.h"
#include "llm_shards/mkmodel.h"
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>

static void help(void) {
    printf("usage: anymal mkmodel --shape NAME [--layers N] --format safetensors|gguf|llama2c\n"
           "                      [--dtype f32|f16|bf16|q8_0|q4_0] [--seed S] [--tokenizer PATH]\n"
           "                      [--shard-mb MB] --out PATH\n\n"
           "Writes a deterministic random-init LLaMA checkpoint; the same shape and seed give the\n"
           "same model in every format.\n"
           "  --shape      %s\n"
           "  --layers     override the shape's layer count (e.g. a 2-layer 70b)\n"
           "  --format     safetensors: PATH is a directory (HF layout, config.json, tokenizer.model,\n"
           "               sharded above --shard-mb, default 4096); gguf: PATH is a file (tokenizer in\n"
           "               its metadata); llama2c: PATH is a file, tokenizer.bin goes beside it\n"
           "  --dtype      weights dtype (default f32); q8_0/q4_0 need gguf; llama2c is f32 only\n"
           "  --seed       random seed (default 0)\n"
           "  --tokenizer  a SentencePiece tokenizer.model or llama2.c tokenizer.bin whose vocabulary\n"
           "               size matches the shape (default: a synthetic vocabulary of that size)\n",
           am_mkmodel_shape_names());
}

int am_cmd_mkmodel(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, "mkmodel", argc, argv);
    am_mkmodel_opts o = {.format = AM_FORMAT_SAFETENSORS, .dtype = AM_DTYPE_F32};
    int have_format = 0;
    const char *opt;
    int rc;
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            return 0;
        } else if (!strcmp(opt, "--shape")) {
            am_llama_config shape_cfg;
            if (!(o.shape = am_cli_value(&cli))) return AM_EXIT_USAGE;
            if (am_mkmodel_shape(o.shape, 0, &shape_cfg)) return am_cli_fail(&cli, "%s", am_err_msg());
        } else if (!strcmp(opt, "--layers")) {
            if ((rc = am_cli_int(&cli, 1, 1024, &v))) return rc;
            o.n_layers = (int32_t)v;
        } else if (!strcmp(opt, "--format")) {
            const char *f = am_cli_value(&cli);
            if (!f) return AM_EXIT_USAGE;
            if (am_mkmodel_parse_format(f, &o.format)) return am_cli_fail(&cli, "%s", am_err_msg());
            have_format = 1;
        } else if (!strcmp(opt, "--dtype")) {
            const char *d = am_cli_value(&cli);
            if (!d) return AM_EXIT_USAGE;
            if (am_dtype_parse(d, &o.dtype)) return am_cli_fail(&cli, "%s", am_err_msg());
        } else if (!strcmp(opt, "--seed")) {
            if ((rc = am_cli_u64(&cli, &o.seed))) return rc;
        } else if (!strcmp(opt, "--tokenizer")) {
            if (!(o.tokenizer = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else if (!strcmp(opt, "--shard-mb")) {
            if ((rc = am_cli_int(&cli, 1, 1 << 20, &v))) return rc;
            o.shard_bytes = (size_t)v << 20;
        } else if (!strcmp(opt, "--out")) {
            if (!(o.out = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else {
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        }
    }
    if (!o.shape) return am_cli_fail(&cli, "--shape is required (%s)", am_mkmodel_shape_names());
    if (!have_format) return am_cli_fail(&cli, "--format is required (safetensors, gguf or llama2c)");
    if (!o.out) return am_cli_fail(&cli, "--out is required");
    if ((rc = am_mkmodel_write(&o))) return am_cli_error("mkmodel", rc);
    fprintf(stderr, "anymal mkmodel: wrote %s\n", o.out);
    return 0;
}
