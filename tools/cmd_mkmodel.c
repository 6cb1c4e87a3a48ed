/* tools/cmd_mkmodel.c - `anymal mkmodel`: write a random-init checkpoint or AnyMAL model directory.
 */
#include "core/error.h"
#include "core/log.h"
#include "encoders/htsat.h"
#include "encoders/imu2clip.h"
#include "encoders/mkencoders.h"
#include "encoders/vit.h"
#include "llm_shards/mkmodel.h"
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>

static void help(void) {
    printf(
        "usage: anymal mkmodel --shape NAME [--layers N] --format safetensors|gguf|llama2c\n"
        "                      [--dtype f32|f16|bf16|q8_0|q4_0] [--seed S] [--tokenizer PATH]\n"
        "                      [--shard-mb MB] --out PATH\n"
        "       anymal mkmodel --shape NAME --with-encoders [--vision SHAPE] [--projector TYPE]\n"
        "                      [--frames F] [--audio SHAPE] [--imu SHAPE] [--audio-tokens N]\n"
        "                      [--imu-tokens N] [--dtype f32|f16|bf16] [--seed S] --out DIR\n\n"
        "Writes a deterministic random-init LLaMA checkpoint; the same shape and seed give the\n"
        "same model in every format.\n"
        "  --shape      %s\n"
        "  --layers     override the shape's layer count (e.g. a 2-layer 70b)\n"
        "  --format     safetensors: PATH is a directory (HF layout, config.json, "
        "tokenizer.model,\n"
        "               sharded above --shard-mb, default 4096); gguf: PATH is a file (tokenizer "
        "in\n"
        "               its metadata); llama2c: PATH is a file, tokenizer.bin goes beside it\n"
        "  --dtype      weights dtype (default f32); q8_0/q4_0 need gguf; llama2c is f32 only\n"
        "  --seed       random seed (default 0)\n"
        "  --tokenizer  a SentencePiece tokenizer.model or llama2.c tokenizer.bin whose "
        "vocabulary\n"
        "               size matches the shape (default: a synthetic vocabulary of that size)\n"
        "  --with-encoders  a complete AnyMAL model directory: the decoder (safetensors, the "
        "default\n"
        "               format here) plus random-init encoders and projectors for every modality\n"
        "               (vision_*, audio_*, imu_*.safetensors) and anymal.json naming them (see\n"
        "               encoders/vision.h, audio.h, imu.h)\n"
        "  --vision     vision tower shape: %s, or none\n"
        "               (default: tiny for the tiny decoder, else vit-l-14-336)\n"
        "  --audio      CLAP audio encoder shape: %s, or none\n"
        "               (default: tiny for the tiny decoder, else htsat-tiny)\n"
        "  --imu        IMU2CLIP encoder shape: %s, or none\n"
        "               (default: tiny for the tiny decoder, else imu2clip)\n"
        "  --audio-tokens, --imu-tokens  rows the linear projector makes per audio clip / per 5 s\n"
        "               IMU window (default 8; 4 for the tiny shapes)\n"
        "  --projector  perceiver (AnyMAL: 64 latents x 2 layers, then Linear to the decoder "
        "width;\n"
        "               default), mlp2x_gelu (LLaVA-1.5) or linear\n"
        "  --frames     video frames sampled per clip and frame embeddings of the resampler "
        "(default 8)\n",
        am_mkmodel_shape_names(), am_vit_shape_names(), am_htsat_shape_names(),
        am_imu2clip_shape_names());
}

int am_cmd_mkmodel(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, "mkmodel", argc, argv);
    am_mkmodel_opts o = {.format = AM_FORMAT_SAFETENSORS, .dtype = AM_DTYPE_F32};
    int have_format = 0, with_encoders = 0;
    const char *vision = NULL, *audio = NULL, *imu = NULL;
    int32_t audio_tokens = 0, imu_tokens = 0;
    am_proj_type projector = AM_PROJ_PERCEIVER;
    int32_t frames = 0;
    int projector_given = 0;
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
            if (am_mkmodel_shape(o.shape, 0, &shape_cfg))
                return am_cli_fail(&cli, "%s", am_err_msg());
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
        } else if (!strcmp(opt, "--with-encoders")) {
            with_encoders = 1;
        } else if (!strcmp(opt, "--vision")) {
            am_vit_config vc;
            if (!(vision = am_cli_value(&cli))) return AM_EXIT_USAGE;
            if (strcmp(vision, "none") && am_vit_shape(vision, &vc))
                return am_cli_fail(&cli, "%s", am_err_msg());
        } else if (!strcmp(opt, "--audio")) {
            am_htsat_config ac;
            if (!(audio = am_cli_value(&cli))) return AM_EXIT_USAGE;
            if (strcmp(audio, "none") && am_htsat_shape(audio, &ac))
                return am_cli_fail(&cli, "%s", am_err_msg());
        } else if (!strcmp(opt, "--imu")) {
            am_imu2clip_config ic;
            if (!(imu = am_cli_value(&cli))) return AM_EXIT_USAGE;
            if (strcmp(imu, "none") && am_imu2clip_shape(imu, &ic))
                return am_cli_fail(&cli, "%s", am_err_msg());
        } else if (!strcmp(opt, "--audio-tokens") || !strcmp(opt, "--imu-tokens")) {
            const int is_audio = !strcmp(opt, "--audio-tokens");
            if ((rc = am_cli_int(&cli, 1, 4096, &v))) return rc;
            *(is_audio ? &audio_tokens : &imu_tokens) = (int32_t)v;
        } else if (!strcmp(opt, "--projector")) {
            const char *p = am_cli_value(&cli);
            if (!p) return AM_EXIT_USAGE;
            if (am_proj_parse_type(p, &projector)) return am_cli_fail(&cli, "%s", am_err_msg());
            projector_given = 1;
        } else if (!strcmp(opt, "--frames")) {
            if ((rc = am_cli_int(&cli, 1, 256, &v))) return rc;
            frames = (int32_t)v;
        } else if (!strcmp(opt, "--out")) {
            if (!(o.out = am_cli_value(&cli))) return AM_EXIT_USAGE;
        } else {
            return am_cli_fail(&cli, "unknown option '%s'", opt);
        }
    }
    if (!o.shape) return am_cli_fail(&cli, "--shape is required (%s)", am_mkmodel_shape_names());
    if (with_encoders && have_format && o.format != AM_FORMAT_SAFETENSORS)
        return am_cli_fail(
            &cli, "--with-encoders writes a model directory: --format must be safetensors");
    if (!with_encoders &&
        (vision || frames || projector_given || audio || imu || audio_tokens || imu_tokens))
        return am_cli_fail(&cli, "--vision, --projector, --frames, --audio, --imu and the token "
                                 "counts need --with-encoders");
    if (with_encoders) have_format = 1; /* safetensors */
    if (!have_format)
        return am_cli_fail(&cli, "--format is required (safetensors, gguf or llama2c)");
    if (!o.out) return am_cli_fail(&cli, "--out is required");
    if ((rc = am_mkmodel_write(&o))) return am_cli_error("mkmodel", rc);
    if (with_encoders) {
        am_llama_config cfg;
        if ((rc = am_mkmodel_shape(o.shape, o.n_layers, &cfg))) return am_cli_error("mkmodel", rc);
        const int tiny = !strcmp(o.shape, "tiny");
        if (!vision) vision = tiny ? "tiny" : "vit-l-14-336";
        if (!audio) audio = tiny ? "tiny" : "htsat-tiny";
        if (!imu) imu = tiny ? "tiny" : "imu2clip";
        am_mkencoders_opts eo = {.dir = o.out,
                                 .vision_shape = strcmp(vision, "none") ? vision : NULL,
                                 .projector = projector,
                                 .dtype = o.dtype,
                                 .seed = o.seed,
                                 .llm_dim = cfg.dim,
                                 .llm_path = ".",
                                 .tokenizer = "tokenizer.model",
                                 .video_frames = frames,
                                 .audio_shape = strcmp(audio, "none") ? audio : NULL,
                                 .imu_shape = strcmp(imu, "none") ? imu : NULL,
                                 .audio_tokens = audio_tokens,
                                 .imu_tokens = imu_tokens};
        if ((rc = am_mkencoders_write(&eo))) return am_cli_error("mkmodel", rc);
    }
    fprintf(stderr, "anymal mkmodel: wrote %s\n", o.out);
    return 0;
}
