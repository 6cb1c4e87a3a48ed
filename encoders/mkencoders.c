/* encoders/mkencoders.c - writing random-init vision, audio and IMU encoders, projectors and
 * anymal.json. */
#include "encoders/mkencoders.h"

#include "core/alloc.h"
#include "core/ckpt.h"
#include "core/error.h"
#include "core/log.h"
#include "encoders/htsat.h"
#include "encoders/imu2clip.h"
#include "encoders/melspec.h"
#include "encoders/preprocess.h"
#include "encoders/video.h"
#include "encoders/vit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) { /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* Uniform in [-1, 1), a pure function of (stream, i). */
static float unit_uniform(uint64_t stream, uint64_t i) {
    uint64_t r = mix64(stream + 0x9e3779b97f4a7c15ull * (i + 1));
    return (float)(int64_t)(r >> 40) / 8388608.0f - 1.0f;
}

float am_mkencoders_uniform(uint64_t seed, const char *name, uint64_t i) {
    return unit_uniform(mix64(seed * 0x100000001b3ull + name_hash(name)), i);
}

typedef enum { INIT_LINEAR, INIT_EMBED, INIT_NORM, INIT_BIAS } init_kind;

typedef struct {
    am_tensor_src *t;
    void **owned;
    int64_t n, cap;
    am_dtype dtype;
    uint64_t seed;
} tlist;

static void tlist_free(tlist *l) {
    for (int64_t i = 0; i < l->n; i++) {
        am_aligned_free(l->owned[i]);
        am_free((char *)l->t[i].name);
    }
    am_free(l->t);
    am_free(l->owned);
    memset(l, 0, sizeof *l);
}

/* Adds tensor `name` of shape dims (outermost first); fan_in for INIT_LINEAR. */
static int add(tlist *l, const char *name, init_kind kind, int n_dims, const int64_t *dims,
               int64_t fan_in) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        am_tensor_src *t = am_realloc(l->t, (size_t)cap * sizeof *t);
        if (t) l->t = t;
        void **o = am_realloc(l->owned, (size_t)cap * sizeof *o);
        if (o) l->owned = o;
        if (!t || !o) return am_err_set(AM_ENOMEM, "mkencoders: out of memory");
        l->cap = cap;
    }
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++)
        n *= dims[i];
    const size_t esz = am_dtype_block_bytes(l->dtype);
    void *data = am_aligned_alloc((size_t)n * esz);
    float *f = l->dtype == AM_DTYPE_F32 ? data : am_aligned_alloc((size_t)n * sizeof(float));
    char *nm = am_strdup(name);
    if (!data || !f || !nm) {
        am_aligned_free(data);
        if (f != data) am_aligned_free(f);
        am_free(nm);
        return am_err_set(AM_ENOMEM, "mkencoders: cannot allocate tensor %s (%lld elements)", name,
                          (long long)n);
    }
    const uint64_t st = mix64(l->seed * 0x100000001b3ull + name_hash(name));
    const float a = kind == INIT_LINEAR  ? sqrtf(3.0f / (float)fan_in)
                    : kind == INIT_EMBED ? sqrtf(3.0f)
                                         : 0.02f;
    for (int64_t i = 0; i < n; i++) {
        float u = unit_uniform(st, (uint64_t)i);
        f[i] = kind == INIT_NORM ? 1.0f + 0.1f * u : a * u;
    }
    if (f != data) {
        am_quantize_row(l->dtype, f, data, n);
        am_aligned_free(f);
    }
    am_tensor_src *t = &l->t[l->n];
    *t = (am_tensor_src){
        .name = nm, .dtype = l->dtype, .n_dims = n_dims, .data = data, .nbytes = (size_t)n * esz};
    for (int i = 0; i < n_dims; i++)
        t->shape[i] = dims[i];
    l->owned[l->n++] = data;
    return 0;
}

#define ADD(name, kind, fan, ...)                                                                  \
    do {                                                                                           \
        const int64_t d_[] = {__VA_ARGS__};                                                        \
        if ((rc = add(l, name, kind, (int)(sizeof d_ / sizeof d_[0]), d_, fan))) return rc;        \
    } while (0)

static int build_vit(tlist *l, const am_vit_config *c) {
    const int64_t C = c->width, F = c->mlp_dim, T = am_vit_n_patches(c) + 1, p = c->patch_size;
    char nm[160];
    int rc;
    ADD("vision_model.embeddings.class_embedding", INIT_EMBED, 0, C);
    ADD("vision_model.embeddings.patch_embedding.weight", INIT_LINEAR, c->channels * p * p, C,
        c->channels, p, p);
    ADD("vision_model.embeddings.position_embedding.weight", INIT_EMBED, 0, T, C);
    ADD("vision_model.pre_layrnorm.weight", INIT_NORM, 0, C);
    ADD("vision_model.pre_layrnorm.bias", INIT_BIAS, 0, C);
    for (int i = 0; i < c->n_layers; i++) {
        static const char *const proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int j = 0; j < 4; j++) {
            snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.self_attn.%s.weight", i,
                     proj[j]);
            ADD(nm, INIT_LINEAR, C, C, C);
            snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.self_attn.%s.bias", i, proj[j]);
            ADD(nm, INIT_BIAS, 0, C);
        }
        for (int j = 1; j <= 2; j++) {
            snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.layer_norm%d.weight", i, j);
            ADD(nm, INIT_NORM, 0, C);
            snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.layer_norm%d.bias", i, j);
            ADD(nm, INIT_BIAS, 0, C);
        }
        snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.mlp.fc1.weight", i);
        ADD(nm, INIT_LINEAR, C, F, C);
        snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.mlp.fc1.bias", i);
        ADD(nm, INIT_BIAS, 0, F);
        snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.mlp.fc2.weight", i);
        ADD(nm, INIT_LINEAR, F, C, F);
        snprintf(nm, sizeof nm, "vision_model.encoder.layers.%d.mlp.fc2.bias", i);
        ADD(nm, INIT_BIAS, 0, C);
    }
    ADD("vision_model.post_layernorm.weight", INIT_NORM, 0, C);
    ADD("vision_model.post_layernorm.bias", INIT_BIAS, 0, C);
    return 0;
}

static int build_proj(tlist *l, const am_proj_config *c) {
    const int64_t D = c->in_dim, O = c->out_dim, I = (int64_t)c->n_heads * c->head_dim,
                  FF = (int64_t)c->ff_mult * D;
    char nm[160];
    int rc;
    if (c->type == AM_PROJ_MLP2X_GELU) {
        ADD("linear_1.weight", INIT_LINEAR, D, O, D);
        ADD("linear_1.bias", INIT_BIAS, 0, O);
        ADD("linear_2.weight", INIT_LINEAR, O, O, O);
        ADD("linear_2.bias", INIT_BIAS, 0, O);
        return 0;
    }
    if (c->type == AM_PROJ_LINEAR) {
        ADD("weight", INIT_LINEAR, D, O * c->tokens_per_row, D);
        ADD("bias", INIT_BIAS, 0, O * c->tokens_per_row);
        return 0;
    }
    ADD("perceiver.latents", INIT_EMBED, 0, c->n_latents, D);
    if (c->max_frames) ADD("perceiver.frame_embs", INIT_EMBED, 0, c->max_frames, D);
    if (c->max_media) ADD("perceiver.media_time_embs", INIT_EMBED, 0, c->max_media, 1, D);
    for (int i = 0; i < c->depth; i++) {
        static const char *const norms[] = {"0.norm_media", "0.norm_latents", "1.0"};
        for (int j = 0; j < 3; j++) {
            snprintf(nm, sizeof nm, "perceiver.layers.%d.%s.weight", i, norms[j]);
            ADD(nm, INIT_NORM, 0, D);
            snprintf(nm, sizeof nm, "perceiver.layers.%d.%s.bias", i, norms[j]);
            ADD(nm, INIT_BIAS, 0, D);
        }
        snprintf(nm, sizeof nm, "perceiver.layers.%d.0.to_q.weight", i);
        ADD(nm, INIT_LINEAR, D, I, D);
        snprintf(nm, sizeof nm, "perceiver.layers.%d.0.to_kv.weight", i);
        ADD(nm, INIT_LINEAR, D, 2 * I, D);
        snprintf(nm, sizeof nm, "perceiver.layers.%d.0.to_out.weight", i);
        ADD(nm, INIT_LINEAR, I, D, I);
        snprintf(nm, sizeof nm, "perceiver.layers.%d.1.1.weight", i);
        ADD(nm, INIT_LINEAR, D, FF, D);
        snprintf(nm, sizeof nm, "perceiver.layers.%d.1.3.weight", i);
        ADD(nm, INIT_LINEAR, FF, D, FF);
    }
    ADD("perceiver.norm.weight", INIT_NORM, 0, D);
    ADD("perceiver.norm.bias", INIT_BIAS, 0, D);
    ADD("proj.weight", INIT_LINEAR, D, O, D);
    ADD("proj.bias", INIT_BIAS, 0, O);
    return 0;
}

/* CLAP under HF ClapModel names: the HTSAT encoder and the audio projection. */
static int build_audio(tlist *l, const am_htsat_config *c) {
    const char *E = "audio_model.audio_encoder.";
    const int64_t M = c->n_mels, C0 = c->embed_dim, p = c->patch_size, w = c->window;
    const int64_t CL = am_htsat_out_width(c), P = c->proj_dim, span2 = (2 * w - 1) * (2 * w - 1);
    char nm[200];
    int rc;
#define NAME(...) snprintf(nm, sizeof nm, __VA_ARGS__)
    NAME("%sbatch_norm.weight", E);
    ADD(nm, INIT_NORM, 0, M);
    NAME("%sbatch_norm.bias", E);
    ADD(nm, INIT_BIAS, 0, M);
    NAME("%sbatch_norm.running_mean", E);
    ADD(nm, INIT_BIAS, 0, M);
    NAME("%sbatch_norm.running_var", E);
    ADD(nm, INIT_NORM, 0, M);
    NAME("%spatch_embed.proj.weight", E);
    ADD(nm, INIT_LINEAR, p * p, C0, 1, p, p);
    NAME("%spatch_embed.proj.bias", E);
    ADD(nm, INIT_BIAS, 0, C0);
    if (c->patch_norm) {
        NAME("%spatch_embed.norm.weight", E);
        ADD(nm, INIT_NORM, 0, C0);
        NAME("%spatch_embed.norm.bias", E);
        ADD(nm, INIT_BIAS, 0, C0);
    }
    for (int i = 0; i < c->n_stages; i++) {
        const int64_t C = am_htsat_width(c, i), F = (int64_t)(c->mlp_ratio * (float)C),
                      H = c->n_heads[i];
        for (int j = 0; j < c->depths[i]; j++) {
            static const char *const qkv[] = {"self.query", "self.key", "self.value",
                                              "output.dense"};
            NAME("%slayers.%d.blocks.%d.layernorm_before.weight", E, i, j);
            ADD(nm, INIT_NORM, 0, C);
            NAME("%slayers.%d.blocks.%d.layernorm_before.bias", E, i, j);
            ADD(nm, INIT_BIAS, 0, C);
            NAME("%slayers.%d.blocks.%d.attention.self.relative_position_bias_table", E, i, j);
            ADD(nm, INIT_EMBED, 0, span2, H);
            for (int k = 0; k < 4; k++) {
                NAME("%slayers.%d.blocks.%d.attention.%s.weight", E, i, j, qkv[k]);
                ADD(nm, INIT_LINEAR, C, C, C);
                NAME("%slayers.%d.blocks.%d.attention.%s.bias", E, i, j, qkv[k]);
                ADD(nm, INIT_BIAS, 0, C);
            }
            NAME("%slayers.%d.blocks.%d.layernorm_after.weight", E, i, j);
            ADD(nm, INIT_NORM, 0, C);
            NAME("%slayers.%d.blocks.%d.layernorm_after.bias", E, i, j);
            ADD(nm, INIT_BIAS, 0, C);
            NAME("%slayers.%d.blocks.%d.intermediate.dense.weight", E, i, j);
            ADD(nm, INIT_LINEAR, C, F, C);
            NAME("%slayers.%d.blocks.%d.intermediate.dense.bias", E, i, j);
            ADD(nm, INIT_BIAS, 0, F);
            NAME("%slayers.%d.blocks.%d.output.dense.weight", E, i, j);
            ADD(nm, INIT_LINEAR, F, C, F);
            NAME("%slayers.%d.blocks.%d.output.dense.bias", E, i, j);
            ADD(nm, INIT_BIAS, 0, C);
        }
        if (i < c->n_stages - 1) {
            NAME("%slayers.%d.downsample.norm.weight", E, i);
            ADD(nm, INIT_NORM, 0, 4 * C);
            NAME("%slayers.%d.downsample.norm.bias", E, i);
            ADD(nm, INIT_BIAS, 0, 4 * C);
            NAME("%slayers.%d.downsample.reduction.weight", E, i);
            ADD(nm, INIT_LINEAR, 4 * C, 2 * C, 4 * C);
        }
    }
    NAME("%snorm.weight", E);
    ADD(nm, INIT_NORM, 0, CL);
    NAME("%snorm.bias", E);
    ADD(nm, INIT_BIAS, 0, CL);
    ADD("audio_projection.linear1.weight", INIT_LINEAR, CL, P, CL);
    ADD("audio_projection.linear1.bias", INIT_BIAS, 0, P);
    ADD("audio_projection.linear2.weight", INIT_LINEAR, P, P, P);
    ADD("audio_projection.linear2.bias", INIT_BIAS, 0, P);
    return 0;
}

/* IMU2CLIP's MW2StackRNNPooling as its Lightning module stores it ("imu_encoder.net.*"). */
static int build_imu(tlist *l, const am_imu2clip_config *c) {
    const int64_t C0 = c->in_channels, D = c->conv_dim, H = c->hidden;
    int rc;
    ADD("imu_encoder.net.0.weight", INIT_NORM, 0, C0);
    ADD("imu_encoder.net.0.bias", INIT_BIAS, 0, C0);
    ADD("imu_encoder.net.1.net.0.weight", INIT_LINEAR, C0 * c->kernels[0], D, C0, c->kernels[0]);
    ADD("imu_encoder.net.2.net.0.weight", INIT_LINEAR, D * c->kernels[1], D, D, c->kernels[1]);
    ADD("imu_encoder.net.3.net.0.weight", INIT_LINEAR, D * c->kernels[2], D, D, c->kernels[2]);
    ADD("imu_encoder.net.4.weight", INIT_NORM, 0, D);
    ADD("imu_encoder.net.4.bias", INIT_BIAS, 0, D);
    ADD("imu_encoder.net.5.weight_ih_l0", INIT_LINEAR, D, 3 * H, D);
    ADD("imu_encoder.net.5.weight_hh_l0", INIT_LINEAR, H, 3 * H, H);
    ADD("imu_encoder.net.5.bias_ih_l0", INIT_BIAS, 0, 3 * H);
    ADD("imu_encoder.net.5.bias_hh_l0", INIT_BIAS, 0, 3 * H);
#undef NAME
    return 0;
}
#undef ADD

int am_mkencoders_proj_config(const char *vision_shape, am_proj_type type, int32_t llm_dim,
                              int32_t max_frames, am_proj_config *out) {
    am_vit_config v;
    int rc = am_vit_shape(vision_shape, &v);
    if (rc) return rc;
    const int tiny = v.width < 256;
    *out = (am_proj_config){.type = type,
                            .in_dim = v.width,
                            .out_dim = llm_dim,
                            .n_latents = tiny ? 8 : 64,
                            .depth = 2,
                            .n_heads = tiny ? 2 : 8,
                            .head_dim = tiny ? 16 : 64,
                            .ff_mult = 4,
                            .max_frames = max_frames,
                            .max_media = 1,
                            .ln_eps = 1e-5f,
                            .has_proj_bias = 1,
                            .tokens_per_row = 1};
    return am_proj_config_check(out);
}

static int32_t tokens_or_default(int32_t t, const char *shape) {
    return t > 0 ? t : !strcmp(shape, "tiny") ? 4 : 8;
}

static void write_vision(FILE *f, const am_mkencoders_opts *o, const am_vit_config *v,
                         const am_proj_config *p) {
    /* OpenAI CLIP mean/std as HF writes them (am_clip_preprocess_default). */
    am_clip_preprocess pp = am_clip_preprocess_default(v->image_size);
    fprintf(
        f,
        "  \"vision\": {\n"
        "    \"weights\": \"vision_tower.safetensors\", \"prefix\": \"vision_model.\", \"shape\": "
        "\"%s\",\n"
        "    \"image_size\": %d, \"patch_size\": %d, \"num_channels\": %d, \"hidden_size\": %d,\n"
        "    \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"intermediate_size\": %d,\n"
        "    \"layer_norm_eps\": %g, \"hidden_act\": \"%s\",\n"
        "    \"feature_layer\": -2, \"feature_select\": \"patch\", \"video_frames\": %d,\n"
        "    \"preprocess\": {\"shortest_edge\": %d, \"crop_size\": %d,\n"
        "                   \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n"
        "                   \"image_std\": [0.26862954, 0.26130258, 0.27577711], "
        "\"pad_to_square\": false},\n",
        o->vision_shape, v->image_size, v->patch_size, v->channels, v->width, v->n_layers,
        v->n_heads, v->mlp_dim, (double)v->ln_eps, am_act_name(v->act),
        o->video_frames ? o->video_frames : AM_VIDEO_FRAMES_DEFAULT, pp.resize_to, pp.crop_h);
    fprintf(f,
            "    \"projector\": {\"type\": \"%s\", \"weights\": \"vision_projector.safetensors\", "
            "\"prefix\": \"\",\n"
            "                  \"out_dim\": %d, \"num_latents\": %d, \"depth\": %d, \"heads\": %d, "
            "\"dim_head\": %d,\n"
            "                  \"ff_mult\": %d, \"max_frames\": %d, \"max_media\": %d, "
            "\"layer_norm_eps\": %g,\n"
            "                  \"tokens_per_row\": %d}\n  }",
            am_proj_type_name(p->type), p->out_dim, p->n_latents, p->depth, p->n_heads, p->head_dim,
            p->ff_mult, p->max_frames, p->max_media, (double)p->ln_eps, p->tokens_per_row);
}

static void write_ints(FILE *f, const int32_t *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? ", " : "", v[i]);
    fputc(']', f);
}

static void write_audio(FILE *f, const am_mkencoders_opts *o, const am_htsat_config *c) {
    const am_melspec_config fe = am_melspec_clap_default();
    fprintf(
        f,
        "  \"audio\": {\n"
        "    \"weights\": \"audio_encoder.safetensors\", \"prefix\": "
        "\"audio_model.audio_encoder.\",\n"
        "    \"projection_prefix\": \"audio_projection.\", \"shape\": \"%s\",\n"
        "    \"spec_size\": %d, \"num_mel_bins\": %d, \"patch_size\": %d, \"patch_stride\": %d,\n"
        "    \"patch_embeds_hidden_size\": %d, \"depths\": ",
        o->audio_shape, c->spec_size, c->n_mels, c->patch_size, c->patch_size, c->embed_dim);
    write_ints(f, c->depths, c->n_stages);
    fprintf(f, ", \"num_attention_heads\": ");
    write_ints(f, c->n_heads, c->n_stages);
    fprintf(
        f,
        ",\n    \"window_size\": %d, \"mlp_ratio\": %g, \"layer_norm_eps\": %g, "
        "\"hidden_act\": \"%s\",\n"
        "    \"projection_dim\": %d, \"projection_hidden_act\": \"%s\", "
        "\"enable_patch_layer_norm\": %s,\n"
        "    \"enable_fusion\": false, \"normalize\": false,\n"
        "    \"preprocess\": {\"sampling_rate\": %d, \"fft_window_size\": %d, \"hop_length\": "
        "%d, \"feature_size\": %d,\n"
        "                   \"frequency_min\": %g, \"frequency_max\": %g, \"max_length_s\": %g, "
        "\"padding\": \"%s\",\n"
        "                   \"mel_scale\": \"%s\"},\n"
        "    \"projector\": {\"type\": \"linear\", \"weights\": \"audio_projector.safetensors\", "
        "\"prefix\": \"\",\n"
        "                  \"out_dim\": %d, \"tokens_per_row\": %d}\n  }",
        c->window, (double)c->mlp_ratio, (double)c->ln_eps, am_act_name(c->act), c->proj_dim,
        am_act_name(c->proj_act), c->patch_norm ? "true" : "false", fe.sample_rate, fe.n_fft,
        fe.hop, c->n_mels, (double)fe.fmin, (double)fe.fmax,
        (double)fe.max_samples / fe.sample_rate, am_melspec_padding_name(fe.padding),
        am_melspec_scale_name(fe.mel_scale), o->llm_dim,
        tokens_or_default(o->audio_tokens, o->audio_shape));
}

static void write_imu(FILE *f, const am_mkencoders_opts *o, const am_imu2clip_config *c) {
    fprintf(f,
            "  \"imu\": {\n"
            "    \"weights\": \"imu_encoder.safetensors\", \"prefix\": \"imu_encoder.\", "
            "\"shape\": \"%s\",\n"
            "    \"in_channels\": %d, \"input_dim\": %d, \"size_embeddings\": %d, "
            "\"window_samples\": %d,\n"
            "    \"normalize\": false,\n"
            "    \"projector\": {\"type\": \"linear\", \"weights\": \"imu_projector.safetensors\", "
            "\"prefix\": \"\",\n"
            "                  \"out_dim\": %d, \"tokens_per_row\": %d}\n  }",
            o->imu_shape, c->in_channels, c->conv_dim, c->hidden, c->window, o->llm_dim,
            tokens_or_default(o->imu_tokens, o->imu_shape));
}

static int write_config(const am_mkencoders_opts *o, const am_vit_config *v,
                        const am_proj_config *p, const am_htsat_config *ac,
                        const am_imu2clip_config *ic) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/anymal.json", o->dir) >= sizeof path)
        return am_err_set(AM_ERANGE, "path too long: %s/anymal.json", o->dir);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return am_err_set(AM_EIO, "%s: %s", tmp, strerror(errno));
    fprintf(f, "{\n  \"anymal_version\": 1,\n");
    fprintf(f, "  \"llm\": {\"path\": \"%s\", ", o->llm_path ? o->llm_path : ".");
    if (o->tokenizer) fprintf(f, "\"tokenizer\": \"%s\", ", o->tokenizer);
    fprintf(f, "\"dim\": %d}", o->llm_dim);
    if (v) fputs(",\n", f), write_vision(f, o, v, p);
    if (ac) fputs(",\n", f), write_audio(f, o, ac);
    if (ic) fputs(",\n", f), write_imu(f, o, ic);
    fputs("\n}\n", f);
    if (fclose(f) != 0) {
        remove(tmp);
        return am_err_set(AM_EIO, "%s: write failed", tmp);
    }
    if (rename(tmp, path) != 0) return am_err_set(AM_EIO, "%s: %s", path, strerror(errno));
    return 0;
}

static int write_list(const char *dir, const char *file, tlist *l) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
        return am_err_set(AM_ERANGE, "path too long: %s/%s", dir, file);
    am_kv_str meta[1] = {{"format", "pt"}};
    return am_safetensors_write(path, l->t, l->n, meta, 1);
}

/* A linear projector (weight, bias) from in_dim to tokens rows of out_dim. */
static int build_linear(tlist *l, int64_t in_dim, int64_t out_dim, int64_t tokens) {
    int rc;
    if ((rc =
             add(l, "weight", INIT_LINEAR, 2, (const int64_t[]){tokens * out_dim, in_dim}, in_dim)))
        return rc;
    return add(l, "bias", INIT_BIAS, 1, (const int64_t[]){tokens * out_dim}, 0);
}

int am_mkencoders_write(const am_mkencoders_opts *o) {
    if (o->dtype != AM_DTYPE_F32 && o->dtype != AM_DTYPE_F16 && o->dtype != AM_DTYPE_BF16)
        return am_err_set(AM_EUNSUPPORTED, "encoder weights are f32, f16 or bf16 (asked for %s)",
                          am_dtype_name(o->dtype));
    if (o->llm_dim <= 0 || o->llm_dim > 65536)
        return am_err_set(AM_EINVAL, "mkencoders: llm_dim %d not in [1, 65536]", o->llm_dim);
    am_vit_config v;
    am_proj_config p;
    am_htsat_config ac;
    am_imu2clip_config ic;
    const int32_t frames = o->video_frames ? o->video_frames : AM_VIDEO_FRAMES_DEFAULT;
    int rc = 0;
    if (o->vision_shape &&
        ((rc = am_vit_shape(o->vision_shape, &v)) ||
         (rc = am_mkencoders_proj_config(o->vision_shape, o->projector, o->llm_dim, frames, &p))))
        return rc;
    if (o->audio_shape && (rc = am_htsat_shape(o->audio_shape, &ac))) return rc;
    if (o->imu_shape && (rc = am_imu2clip_shape(o->imu_shape, &ic))) return rc;
    if ((o->audio_tokens < 0 || o->audio_tokens > 4096) ||
        (o->imu_tokens < 0 || o->imu_tokens > 4096))
        return am_err_set(AM_EINVAL, "mkencoders: audio/IMU tokens %d / %d not in [1, 4096]",
                          o->audio_tokens, o->imu_tokens);
    tlist l = {.dtype = o->dtype, .seed = o->seed};
    if (o->vision_shape) {
        if (p.type != AM_PROJ_PERCEIVER) p.max_frames = p.max_media = 0;
        AM_LOGI("mkencoders: writing %s vision tower and %s projector into %s", o->vision_shape,
                am_proj_type_name(p.type), o->dir);
        if ((rc = build_vit(&l, &v)) || (rc = write_list(o->dir, "vision_tower.safetensors", &l)))
            goto done;
        tlist_free(&l);
        l = (tlist){.dtype = o->dtype, .seed = o->seed};
        if ((rc = build_proj(&l, &p)) ||
            (rc = write_list(o->dir, "vision_projector.safetensors", &l)))
            goto done;
        tlist_free(&l);
    }
    if (o->audio_shape) {
        AM_LOGI("mkencoders: writing %s audio encoder and linear projector into %s", o->audio_shape,
                o->dir);
        l = (tlist){.dtype = o->dtype, .seed = o->seed};
        if ((rc = build_audio(&l, &ac)) ||
            (rc = write_list(o->dir, "audio_encoder.safetensors", &l)))
            goto done;
        tlist_free(&l);
        l = (tlist){.dtype = o->dtype, .seed = o->seed ^ 0x61756469ull}; /* "audi" */
        if ((rc = build_linear(&l, ac.proj_dim, o->llm_dim,
                               tokens_or_default(o->audio_tokens, o->audio_shape))) ||
            (rc = write_list(o->dir, "audio_projector.safetensors", &l)))
            goto done;
        tlist_free(&l);
    }
    if (o->imu_shape) {
        AM_LOGI("mkencoders: writing %s IMU encoder and linear projector into %s", o->imu_shape,
                o->dir);
        l = (tlist){.dtype = o->dtype, .seed = o->seed};
        if ((rc = build_imu(&l, &ic)) || (rc = write_list(o->dir, "imu_encoder.safetensors", &l)))
            goto done;
        tlist_free(&l);
        l = (tlist){.dtype = o->dtype, .seed = o->seed ^ 0x696d75ull}; /* "imu" */
        if ((rc = build_linear(&l, ic.hidden, o->llm_dim,
                               tokens_or_default(o->imu_tokens, o->imu_shape))) ||
            (rc = write_list(o->dir, "imu_projector.safetensors", &l)))
            goto done;
        tlist_free(&l);
    }
    rc = write_config(o, o->vision_shape ? &v : NULL, &p, o->audio_shape ? &ac : NULL,
                      o->imu_shape ? &ic : NULL);
done:
    tlist_free(&l);
    return rc;
}
