/* encoders/vision.c - AnyMAL / LLaVA-hf encoder directories, preprocessing glue and batched
 * encoding. */
#include "encoders/vision.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A size given as an int or as {"height": h, "width": w} / {"shortest_edge": s}. */
static int j_size(const char *file, const cJSON *o, const char *key, int32_t *h, int32_t *w) {
    const cJSON *x = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!x || cJSON_IsNull(x)) return 0;
    if (cJSON_IsNumber(x)) {
        int rc = am__json_int(file, o, key, 1, 8192, h);
        if (!rc) *w = *h;
        return rc;
    }
    if (!cJSON_IsObject(x))
        return am_err_set(AM_EINVAL, "%s: \"%s\" must be a number or an object", file, key);
    int rc;
    if ((rc = am__json_int(file, x, "shortest_edge", 1, 8192, h))) return rc;
    *w = *h;
    if ((rc = am__json_int(file, x, "height", 1, 8192, h)) ||
        (rc = am__json_int(file, x, "width", 1, 8192, w)))
        return rc;
    return 0;
}

void am_vision_model_destroy(am_vision_model **p) {
    if (!p || !*p) return;
    am_vision_model *m = *p;
    am_vit_destroy(&m->vit);
    am_proj_destroy(&m->proj);
    am__close_ckpt_pair(&m->vit_ck, &m->proj_ck);
    am_free(m->dir);
    am_free(m);
    *p = NULL;
}

/* CLIPVisionConfig keys (HF names) into a ViT config. */
static int parse_vit(const char *file, const cJSON *o, am_vit_config *c) {
    const char *act = am_act_name(c->act);
    int rc;
    if ((rc = am__json_int(file, o, "image_size", 1, 4096, &c->image_size)) ||
        (rc = am__json_int(file, o, "patch_size", 1, 4096, &c->patch_size)) ||
        (rc = am__json_int(file, o, "num_channels", 1, 16, &c->channels)) ||
        (rc = am__json_int(file, o, "hidden_size", 1, 65536, &c->width)) ||
        (rc = am__json_int(file, o, "num_hidden_layers", 1, AM_VIT_MAX_LAYERS, &c->n_layers)) ||
        (rc = am__json_int(file, o, "num_attention_heads", 1, 4096, &c->n_heads)) ||
        (rc = am__json_int(file, o, "intermediate_size", 1, 262144, &c->mlp_dim)) ||
        (rc = am__json_float(file, o, "layer_norm_eps", &c->ln_eps)) ||
        (rc = am__json_str(file, o, "hidden_act", &act)))
        return rc;
    if ((rc = am_act_parse(act, &c->act))) return am_err_prefix(rc, "%s: hidden_act", file);
    if ((rc = am_vit_config_check(c))) return am_err_prefix(rc, "%s", file);
    return 0;
}

static int load_anymal(am_vision_model *m, const char *dir, const char *cfg_path) {
    cJSON *root = NULL;
    const cJSON *v;
    int rc = am__json_section(cfg_path, "vision", "vision", &root, &v);
    if (rc) return rc;
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(v, "projector");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(v, "preprocess");
    const char *weights = "vision_tower.safetensors", *prefix = "vision_model.", *select = "patch";
    const char *ptype = "perceiver", *pweights = NULL, *pprefix = "";
    int32_t llm_dim = 0, crop_h, crop_w;
    if (!cJSON_IsObject(pj)) {
        rc = am_err_set(AM_ENOTFOUND, "%s: vision has no \"projector\" object", cfg_path);
        goto done;
    }
    const cJSON *llm = cJSON_GetObjectItemCaseSensitive(root, "llm");
    if ((rc = am__json_int(cfg_path, llm, "dim", 1, 65536, &llm_dim))) goto done;
    am_vit_shape("vit-l-14-336", &m->vit_cfg);
    if ((rc = am__json_str(cfg_path, v, "weights", &weights)) ||
        (rc = am__json_str(cfg_path, v, "prefix", &prefix)) ||
        (rc = parse_vit(cfg_path, v, &m->vit_cfg)) ||
        (rc = am__json_int(cfg_path, v, "feature_layer", -AM_VIT_MAX_LAYERS - 1, AM_VIT_MAX_LAYERS,
                           &m->feature_layer)) ||
        (rc = am__json_str(cfg_path, v, "feature_select", &select)) ||
        (rc = am__json_int(cfg_path, v, "video_frames", 1, AM_VIDEO_MAX_SAMPLED_FRAMES,
                           &m->video_frames)))
        goto done;
    if (strcmp(select, "patch") && strcmp(select, "full")) {
        rc =
            am_err_set(AM_EINVAL, "%s: feature_select '%s' (want patch or full)", cfg_path, select);
        goto done;
    }
    m->feature_keep_cls = !strcmp(select, "full");
    m->pp = am_clip_preprocess_default(m->vit_cfg.image_size);
    crop_h = m->pp.crop_h, crop_w = m->pp.crop_w;
    if ((rc = am__json_int(cfg_path, pre, "shortest_edge", 0, 8192, &m->pp.resize_to)) ||
        (rc = j_size(cfg_path, pre, "crop_size", &crop_h, &crop_w)) ||
        (rc = am__json_floats(cfg_path, pre, "image_mean", 3, m->pp.mean)) ||
        (rc = am__json_floats(cfg_path, pre, "image_std", 3, m->pp.std)) ||
        (rc = am__json_bool(cfg_path, pre, "pad_to_square", &m->pp.pad_to_square)))
        goto done;
    m->pp.crop_h = crop_h;
    m->pp.crop_w = crop_w;
    am_proj_config *pc = &m->proj_cfg;
    *pc = (am_proj_config){.type = AM_PROJ_PERCEIVER,
                           .in_dim = m->vit_cfg.width,
                           .out_dim = llm_dim,
                           .n_latents = 64,
                           .depth = 2,
                           .n_heads = 8,
                           .head_dim = 64,
                           .ff_mult = 4,
                           .ln_eps = 1e-5f,
                           .tokens_per_row = 1};
    if ((rc = am__json_str(cfg_path, pj, "type", &ptype)) ||
        (rc = am__json_str(cfg_path, pj, "weights", &pweights)) ||
        (rc = am__json_str(cfg_path, pj, "prefix", &pprefix)) ||
        (rc = am__json_int(cfg_path, pj, "out_dim", 1, 65536, &pc->out_dim)) ||
        (rc = am__json_int(cfg_path, pj, "num_latents", 1, 4096, &pc->n_latents)) ||
        (rc = am__json_int(cfg_path, pj, "depth", 1, AM_PROJ_MAX_DEPTH, &pc->depth)) ||
        (rc = am__json_int(cfg_path, pj, "heads", 1, 4096, &pc->n_heads)) ||
        (rc = am__json_int(cfg_path, pj, "dim_head", 1, 65536, &pc->head_dim)) ||
        (rc = am__json_int(cfg_path, pj, "ff_mult", 1, 16, &pc->ff_mult)) ||
        (rc = am__json_int(cfg_path, pj, "max_frames", 0, 65536, &pc->max_frames)) ||
        (rc = am__json_int(cfg_path, pj, "max_media", 0, 65536, &pc->max_media)) ||
        (rc = am__json_int(cfg_path, pj, "tokens_per_row", 1, 4096, &pc->tokens_per_row)) ||
        (rc = am__json_float(cfg_path, pj, "layer_norm_eps", &pc->ln_eps)))
        goto done;
    if ((rc = am_proj_parse_type(ptype, &pc->type))) {
        am_err_prefix(rc, "%s", cfg_path);
        goto done;
    }
    pc->in_dim = m->vit_cfg.width;
    if (!pc->out_dim) {
        rc =
            am_err_set(AM_EINVAL, "%s: the projector's out_dim (or llm.dim) is required", cfg_path);
        goto done;
    }
    if ((rc = am__open_ckpt_pair(dir, weights, pweights, &m->vit_ck, &m->proj_ck))) goto done;
    if ((rc = am_vit_load(m->vit_ck, prefix, &m->vit_cfg, &m->vit)) ||
        (rc = am_proj_load(m->proj_ck, pprefix, pc, &m->proj)))
        goto done;
    m->proj_cfg = m->proj->cfg;
    m->layout = "anymal";
done:
    cJSON_Delete(root);
    return rc;
}

static int load_llava(am_vision_model *m, const char *dir, const char *cfg_path) {
    cJSON *root = NULL, *pre = NULL;
    int rc = am__json_read(cfg_path, &root);
    if (rc) return rc;
    const char *mt = NULL, *strategy = "default", *pact = "gelu";
    if ((rc = am__json_str(cfg_path, root, "model_type", &mt))) goto done;
    if (!mt || strcmp(mt, "llava")) {
        rc = am_err_set(
            AM_EUNSUPPORTED,
            "%s: model_type '%s' has no vision encoder we know (want llava, or an anymal.json)",
            cfg_path, mt ? mt : "(none)");
        goto done;
    }
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(root, "vision_config");
    /* CLIPVisionConfig defaults. */
    m->vit_cfg = (am_vit_config){224, 32, 3, 768, 12, 12, 3072, 1e-5f, AM_ACT_QUICK_GELU};
    if ((rc = parse_vit(cfg_path, vc, &m->vit_cfg)) ||
        (rc = am__json_int(cfg_path, root, "vision_feature_layer", -AM_VIT_MAX_LAYERS - 1,
                           AM_VIT_MAX_LAYERS, &m->feature_layer)) ||
        (rc = am__json_str(cfg_path, root, "vision_feature_select_strategy", &strategy)) ||
        (rc = am__json_str(cfg_path, root, "projector_hidden_act", &pact)))
        goto done;
    if (strcmp(strategy, "default") && strcmp(strategy, "full")) {
        rc = am_err_set(AM_EUNSUPPORTED, "%s: vision_feature_select_strategy '%s'", cfg_path,
                        strategy);
        goto done;
    }
    if (strcmp(pact, "gelu")) {
        rc = am_err_set(AM_EUNSUPPORTED, "%s: projector_hidden_act '%s' (only gelu)", cfg_path,
                        pact);
        goto done;
    }
    m->feature_keep_cls = !strcmp(strategy, "full");
    m->pp = am_clip_preprocess_default(m->vit_cfg.image_size);
    char pp_path[4096];
    if ((rc = am__path_in(pp_path, sizeof pp_path, dir, "preprocessor_config.json"))) goto done;
    if (am__file_exists(pp_path)) {
        if ((rc = am__json_read(pp_path, &pre))) goto done;
        int32_t sh = m->pp.resize_to, sw = sh, ch = m->pp.crop_h, cw = m->pp.crop_w;
        if ((rc = j_size(pp_path, pre, "size", &sh, &sw)) ||
            (rc = j_size(pp_path, pre, "crop_size", &ch, &cw)) ||
            (rc = am__json_floats(pp_path, pre, "image_mean", 3, m->pp.mean)) ||
            (rc = am__json_floats(pp_path, pre, "image_std", 3, m->pp.std)) ||
            (rc = am__json_bool(pp_path, pre, "do_pad", &m->pp.pad_to_square)))
            goto done;
        m->pp.resize_to = sh;
        m->pp.crop_h = ch;
        m->pp.crop_w = cw;
    }
    if ((rc = am_ckpt_open(dir, &m->vit_ck))) goto done;
    m->proj_ck = m->vit_ck;
    /* Published llava-hf checkpoints use vision_tower.vision_model.*; transformers 5
     * writes vision_tower.* and, with its newer layout, model.vision_tower.*. */
    static const char *const vprefixes[] = {"vision_tower.vision_model.", "vision_tower.",
                                            "model.vision_tower.vision_model.",
                                            "model.vision_tower."};
    const char *vp = NULL, *pp = "multi_modal_projector.";
    for (size_t i = 0; i < sizeof vprefixes / sizeof vprefixes[0] && !vp; i++)
        if (am__enc_has(m->vit_ck, vprefixes[i], "pre_layrnorm.weight")) vp = vprefixes[i];
    if (!vp) {
        rc = am_err_set(AM_ENOTFOUND,
                        "%s: no vision tower tensors (looked for "
                        "vision_tower[.vision_model].pre_layrnorm.weight)",
                        dir);
        goto done;
    }
    if (!strncmp(vp, "model.", 6)) pp = "model.multi_modal_projector.";
    char nm[256];
    snprintf(nm, sizeof nm, "%slinear_1.weight", pp);
    const am_ckpt_tensor *l1 = am_ckpt_find(m->vit_ck, nm);
    if (!l1) {
        rc = am_err_set(AM_ENOTFOUND, "%s: tensor '%s' not found (not a LLaVA checkpoint?)", dir,
                        nm);
        goto done;
    }
    m->proj_cfg = (am_proj_config){.type = AM_PROJ_MLP2X_GELU,
                                   .in_dim = m->vit_cfg.width,
                                   .out_dim = (int32_t)l1->shape[0],
                                   .tokens_per_row = 1};
    if ((rc = am_vit_load(m->vit_ck, vp, &m->vit_cfg, &m->vit)) ||
        (rc = am_proj_load(m->proj_ck, pp, &m->proj_cfg, &m->proj)))
        goto done;
    m->layout = "llava-hf";
done:
    cJSON_Delete(root);
    cJSON_Delete(pre);
    return rc;
}

int am_vision_model_load(const char *dir, am_vision_model **out) {
    *out = NULL;
    am_vision_model *m = am_calloc(1, sizeof *m);
    if (!m || !(m->dir = am_strdup(dir))) {
        am_free(m);
        return am_err_set(AM_ENOMEM, "vision model: out of memory");
    }
    m->feature_layer = -2;
    m->video_frames = AM_VIDEO_FRAMES_DEFAULT;
    char p1[4096], p2[4096];
    int rc;
    if ((rc = am__path_in(p1, sizeof p1, dir, "anymal.json")) ||
        (rc = am__path_in(p2, sizeof p2, dir, "config.json")))
        goto fail;
    if (am__file_exists(p1))
        rc = load_anymal(m, dir, p1);
    else if (am__file_exists(p2))
        rc = load_llava(m, dir, p2);
    else
        rc = am_err_set(AM_ENOTFOUND, "%s: neither anymal.json nor a LLaVA config.json is there",
                        dir);
    if (rc) goto fail;
    if ((rc = am_vit_blocks_for_layer(&m->vit_cfg, m->feature_layer, &m->n_run))) goto fail;
    if (m->pp.crop_h != m->vit_cfg.image_size || m->pp.crop_w != m->vit_cfg.image_size) {
        rc = am_err_set(AM_EINVAL, "%s: crop size %d x %d does not match the tower's image_size %d",
                        dir, m->pp.crop_h, m->pp.crop_w, m->vit_cfg.image_size);
        goto fail;
    }
    *out = m;
    return 0;
fail:
    am_vision_model_destroy(&m);
    return rc;
}

int32_t am_vision_rows_per_frame(const am_vision_model *m) {
    return (int32_t)am_vit_n_patches(&m->vit_cfg) + (m->feature_keep_cls ? 1 : 0);
}

int64_t am_vision_n_tokens(const am_vision_model *m, int32_t n_frames) {
    return am_proj_n_tokens(m->proj, n_frames, am_vision_rows_per_frame(m));
}

int32_t am_vision_out_dim(const am_vision_model *m) { return m->proj_cfg.out_dim; }

int64_t am_vision_frame_floats(const am_vision_model *m) {
    return (int64_t)m->vit_cfg.channels * m->vit_cfg.image_size * m->vit_cfg.image_size;
}

int am_vision_preprocess(const am_vision_model *m, const am_image *img, float *pixels) {
    return am_clip_preprocess_run(&m->pp, img, pixels);
}

typedef struct {
    const am_vision_model *m;
    float *pixels;
    const char *name;
} video_ctx;

static int on_frame(void *user, int i, const am_image *frame) {
    video_ctx *v = user;
    int rc =
        am_vision_preprocess(v->m, frame, v->pixels + (int64_t)i * am_vision_frame_floats(v->m));
    return rc ? am_err_prefix(rc, "%s: frame %d", v->name, i) : 0;
}

int am_vision_video_pixels(const am_vision_model *m, const void *data, size_t len, const char *name,
                           int32_t n_frames, int n_threads, const am_video_limits *lim,
                           float **pixels) {
    *pixels = NULL;
    if (n_frames < 1 || n_frames > AM_VIDEO_MAX_SAMPLED_FRAMES)
        return am_err_set(AM_ERANGE, "%s: %d frames requested, not in [1, %d]", name, n_frames,
                          AM_VIDEO_MAX_SAMPLED_FRAMES);
    if (m->proj_cfg.type == AM_PROJ_PERCEIVER && m->proj->frame_embs &&
        n_frames > m->proj_cfg.max_frames)
        return am_err_set(AM_ERANGE,
                          "%s: %d frames requested, but the resampler has frame embeddings for %d",
                          name, n_frames, m->proj_cfg.max_frames);
    float *px = am_aligned_alloc((size_t)(n_frames * am_vision_frame_floats(m)) * sizeof(float));
    if (!px) return am_err_set(AM_ENOMEM, "%s: cannot allocate %d frames", name, n_frames);
    video_ctx v = {m, px, name};
    int rc = am_video_sample(data, len, name, n_frames, n_threads, lim, on_frame, &v, NULL);
    if (rc) {
        am_aligned_free(px);
        return rc;
    }
    *pixels = px;
    return 0;
}

/* ---- encoding ----
 *
 * Everything after the pixels runs on the encoder's backend: the tower and
 * projector weights are the backend's views (am_vit_upload, am_proj_upload:
 * copies on a device, the model's own on the CPU), activations, scratch and
 * the selected features live in backend memory, the pixels go up once per
 * chunk (as im2col rows, vit.c) and the projector's rows come down once per
 * call. On a host-memory backend the outputs are written in place. */

struct am_vision_encoder {
    const am_vision_model *m;
    am_nn nn;
    int32_t max_batch;
    am_vit *vit;    /* the tower as the backend sees it */
    am_proj *proj;  /* the projector likewise */
    float *chunk;   /* host (max_batch, 3, S, S) */
    float *hidden;  /* backend (max_batch, T, C) */
    float *scratch; /* backend am_vit_scratch_floats(max_batch) */
};

am_nn *am_vision_encoder_nn(am_vision_encoder *e) { return &e->nn; }

void am_vision_encoder_destroy(am_vision_encoder **p) {
    if (!p || !*p) return;
    am_vision_encoder *e = *p;
    am_backend *be = e->nn.be;
    if (be) {
        be->ops->free(be, e->hidden);
        be->ops->free(be, e->scratch);
        am_vit_release(&e->vit, be);
        am_proj_release(&e->proj, be);
    }
    am_nn_fini(&e->nn);
    am_aligned_free(e->chunk);
    am_free(e);
    *p = NULL;
}

int am_vision_encoder_new(const am_vision_model *m, am_backend *be, int n_threads,
                          int32_t max_batch_frames, am_vision_encoder **out) {
    *out = NULL;
    if (max_batch_frames <= 0) max_batch_frames = AM_VISION_MAX_BATCH_FRAMES_DEFAULT;
    am_vision_encoder *e = am_calloc(1, sizeof *e);
    if (!e) return am_err_set(AM_ENOMEM, "vision encoder: out of memory");
    e->m = m;
    e->max_batch = max_batch_frames;
    int rc = am_nn_init(&e->nn, be, n_threads);
    if (rc) {
        am_free(e);
        return rc;
    }
    if ((rc = am_vit_upload(m->vit, be, &e->vit)) || (rc = am_proj_upload(m->proj, be, &e->proj))) {
        am_vision_encoder_destroy(&e);
        return rc;
    }
    const int64_t T = am_vit_n_patches(&m->vit_cfg) + 1;
    e->chunk =
        am_aligned_alloc((size_t)(max_batch_frames * am_vision_frame_floats(m)) * sizeof(float));
    e->hidden =
        be->ops->alloc(be, (size_t)(max_batch_frames * T * m->vit_cfg.width) * sizeof(float));
    e->scratch =
        be->ops->alloc(be, am_vit_scratch_floats(&m->vit_cfg, max_batch_frames) * sizeof(float));
    if (!e->chunk || !e->hidden || !e->scratch) {
        am_vision_encoder_destroy(&e);
        return am_err_set(AM_ENOMEM, "vision encoder: cannot allocate activations for %d frames",
                          max_batch_frames);
    }
    *out = e;
    return 0;
}

/* Runs the ViT over frames [0, n) taken from items (in order) and writes the
 * selected rows of each frame to feats (n, R, C) in backend memory. */
static int run_tower(am_vision_encoder *e, const float *const *frame_px, int64_t n, float *feats) {
    const am_vision_model *m = e->m;
    am_backend *be = e->nn.be;
    const int64_t FF = am_vision_frame_floats(m), C = m->vit_cfg.width,
                  T = am_vit_n_patches(&m->vit_cfg) + 1;
    const int64_t R = am_vision_rows_per_frame(m), skip = T - R;
    for (int64_t f0 = 0; f0 < n; f0 += e->max_batch) {
        const int64_t b = n - f0 < e->max_batch ? n - f0 : e->max_batch;
        for (int64_t i = 0; i < b; i++)
            memcpy(e->chunk + i * FF, frame_px[f0 + i], (size_t)FF * sizeof(float));
        int rc = am_vit_forward(e->vit, &e->nn, e->chunk, b, m->n_run, e->hidden, e->scratch);
        if (rc) return rc;
        for (int64_t i = 0; i < b; i++)
            be->ops->copy(be, feats + (f0 + i) * R * C, e->hidden + (i * T + skip) * C,
                          (size_t)(R * C) * sizeof(float));
    }
    return 0;
}

int am_vision_features(am_vision_encoder *e, const float *pixels, int32_t n_frames, float *feats) {
    am_backend *be = e->nn.be;
    const size_t bytes = (size_t)(n_frames * am_vision_rows_per_frame(e->m)) *
                         (size_t)e->m->vit_cfg.width * sizeof(float);
    const float **px = am_malloc((size_t)n_frames * sizeof *px);
    float *dev = be->host_memory ? feats : be->ops->alloc(be, bytes);
    int rc = 0;
    if (!px || !dev) {
        rc = am_err_set(AM_ENOMEM, "vision encoder: out of memory");
        goto done;
    }
    for (int32_t i = 0; i < n_frames; i++)
        px[i] = pixels + i * am_vision_frame_floats(e->m);
    rc = run_tower(e, px, n_frames, dev);
    if (!rc && dev != feats) rc = be->ops->download(be, feats, dev, bytes);
done:
    if (dev != feats) be->ops->free(be, dev);
    am_free(px);
    return rc;
}

int am_vision_encode(am_vision_encoder *e, const am_vision_item *items, int n) {
    const am_vision_model *m = e->m;
    am_backend *be = e->nn.be;
    const int64_t FF = am_vision_frame_floats(m), R = am_vision_rows_per_frame(m),
                  C = m->vit_cfg.width, O = am_vision_out_dim(m);
    int64_t frames = 0, tokens = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].n_frames < 1 || items[i].n_frames > AM_VIDEO_MAX_SAMPLED_FRAMES)
            return am_err_set(AM_EINVAL, "vision encoder: item %d has %d frames", i,
                              items[i].n_frames);
        frames += items[i].n_frames;
        tokens += am_vision_n_tokens(m, items[i].n_frames);
    }
    if (frames == 0) return 0;
    const float **px = am_malloc((size_t)frames * sizeof *px);
    am_proj_item *pi = am_malloc((size_t)n * sizeof *pi);
    /* (frames, R, C) features; on a device also the (tokens, O) outputs, downloaded at the end. */
    float *feats = be->ops->alloc(be, (size_t)(frames * R * C) * sizeof(float));
    float *outs = be->host_memory ? NULL : be->ops->alloc(be, (size_t)(tokens * O) * sizeof(float));
    int rc = 0;
    if (!px || !pi || !feats || (!be->host_memory && !outs)) {
        rc = am_err_set(AM_ENOMEM, "vision encoder: cannot allocate features of %lld frames",
                        (long long)frames);
        goto done;
    }
    int64_t f = 0, t = 0;
    for (int i = 0; i < n; i++) {
        float *out = outs ? outs + t * O : items[i].out;
        pi[i] = (am_proj_item){feats + f * R * C, items[i].n_frames, (int32_t)R, out};
        t += am_vision_n_tokens(m, items[i].n_frames);
        for (int32_t j = 0; j < items[i].n_frames; j++)
            px[f++] = items[i].pixels + j * FF;
    }
    if ((rc = run_tower(e, px, frames, feats))) goto done;
    if ((rc = am_proj_forward(e->proj, &e->nn, pi, n))) goto done;
    for (int i = 0; outs && !rc && i < n; i++)
        rc = be->ops->download(be, items[i].out, pi[i].out,
                               (size_t)(am_vision_n_tokens(m, items[i].n_frames) * O) *
                                   sizeof(float));
done:
    am_free(px);
    am_free(pi);
    be->ops->free(be, feats);
    be->ops->free(be, outs);
    return rc;
}
