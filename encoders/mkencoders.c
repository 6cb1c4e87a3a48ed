/* encoders/mkencoders.c - writing random-init vision towers, projectors and anymal.json. */
#include "encoders/mkencoders.h"

#include "core/alloc.h"
#include "core/ckpt.h"
#include "core/error.h"
#include "core/log.h"
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

static int write_config(const am_mkencoders_opts *o, const am_vit_config *v,
                        const am_proj_config *p) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/anymal.json", o->dir) >= sizeof path)
        return am_err_set(AM_ERANGE, "path too long: %s/anymal.json", o->dir);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return am_err_set(AM_EIO, "%s: %s", tmp, strerror(errno));
    /* OpenAI CLIP mean/std as HF writes them (am_clip_preprocess_default). */
    am_clip_preprocess pp = am_clip_preprocess_default(v->image_size);
    fprintf(f, "{\n  \"anymal_version\": 1,\n");
    fprintf(f, "  \"llm\": {\"path\": \"%s\", ", o->llm_path ? o->llm_path : ".");
    if (o->tokenizer) fprintf(f, "\"tokenizer\": \"%s\", ", o->tokenizer);
    fprintf(f, "\"dim\": %d},\n", o->llm_dim);
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
            "                  \"tokens_per_row\": %d}\n  }\n}\n",
            am_proj_type_name(p->type), p->out_dim, p->n_latents, p->depth, p->n_heads, p->head_dim,
            p->ff_mult, p->max_frames, p->max_media, (double)p->ln_eps, p->tokens_per_row);
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

int am_mkencoders_write(const am_mkencoders_opts *o) {
    if (o->dtype != AM_DTYPE_F32 && o->dtype != AM_DTYPE_F16 && o->dtype != AM_DTYPE_BF16)
        return am_err_set(AM_EUNSUPPORTED, "encoder weights are f32, f16 or bf16 (asked for %s)",
                          am_dtype_name(o->dtype));
    am_vit_config v;
    am_proj_config p;
    const int32_t frames = o->video_frames ? o->video_frames : AM_VIDEO_FRAMES_DEFAULT;
    int rc = am_vit_shape(o->vision_shape, &v);
    if (rc ||
        (rc = am_mkencoders_proj_config(o->vision_shape, o->projector, o->llm_dim, frames, &p)))
        return rc;
    if (p.type != AM_PROJ_PERCEIVER) p.max_frames = p.max_media = 0;
    tlist l = {.dtype = o->dtype, .seed = o->seed};
    AM_LOGI("mkencoders: writing %s vision tower and %s projector into %s", o->vision_shape,
            am_proj_type_name(p.type), o->dir);
    if ((rc = build_vit(&l, &v)) || (rc = write_list(o->dir, "vision_tower.safetensors", &l)))
        goto done;
    tlist_free(&l);
    l = (tlist){.dtype = o->dtype, .seed = o->seed};
    if ((rc = build_proj(&l, &p)) || (rc = write_list(o->dir, "vision_projector.safetensors", &l)))
        goto done;
    rc = write_config(o, &v, &p);
done:
    tlist_free(&l);
    return rc;
}
