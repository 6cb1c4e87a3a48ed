/* encoders/vision_config.c - the vision section of a model directory, without its weights.
 *
 * Apart from vision.c so that the config alone (what the shard leader needs
 * to size image and video slots) links without the image and video decoders
 * and their libraries: this file uses cJSON and the tower's and projector's
 * config functions only.
 */
#include "encoders/vision.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

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

/* crop_size, image_mean, image_std and the padding flag (its key: pad_key) of preprocessing
 * object o (AnyMAL's "preprocess", HF's preprocessor_config.json) into pp. */
static int parse_crop_norm_pad(const char *file, const cJSON *o, const char *pad_key,
                               am_clip_preprocess *pp) {
    int32_t ch = pp->crop_h, cw = pp->crop_w;
    int rc;
    if ((rc = j_size(file, o, "crop_size", &ch, &cw)) ||
        (rc = am__json_floats(file, o, "image_mean", 3, pp->mean)) ||
        (rc = am__json_floats(file, o, "image_std", 3, pp->std)) ||
        (rc = am__json_bool(file, o, pad_key, &pp->pad_to_square)))
        return rc;
    pp->crop_h = ch;
    pp->crop_w = cw;
    return 0;
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

static int anymal_config(am_vision_config *m, const char *cfg_path) {
    cJSON *root = NULL;
    const cJSON *v;
    int rc = am__json_section(cfg_path, "vision", "vision", &root, &v);
    if (rc) return rc;
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(v, "projector");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(v, "preprocess");
    const char *weights = "vision_tower.safetensors", *prefix = "vision_model.", *select = "patch";
    const char *pweights = NULL, *pprefix = "";
    int32_t llm_dim = 0;
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
    if ((rc = am__json_int(cfg_path, pre, "shortest_edge", 0, 8192, &m->pp.resize_to)) ||
        (rc = parse_crop_norm_pad(cfg_path, pre, "pad_to_square", &m->pp)))
        goto done;
    /* The pooled modalities' projector keys, plus the resampler's frame and media limits. */
    am_proj_config *pc = &m->proj_cfg;
    if ((rc = am__json_projector(cfg_path, pj, AM_PROJ_PERCEIVER, m->vit_cfg.width, llm_dim, 1, pc,
                                 &pweights, &pprefix)) ||
        (rc = am__json_int(cfg_path, pj, "max_frames", 0, 65536, &pc->max_frames)) ||
        (rc = am__json_int(cfg_path, pj, "max_media", 0, 65536, &pc->max_media)))
        goto done;
    if ((rc = am__enc_files_set(&m->files, weights, prefix, pweights, pprefix))) goto done;
    m->layout = "anymal";
done:
    cJSON_Delete(root);
    return rc;
}

static int llava_config(am_vision_config *m, const char *dir, const char *cfg_path) {
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
        int32_t sh = m->pp.resize_to, sw = sh;
        if ((rc = j_size(pp_path, pre, "size", &sh, &sw)) ||
            (rc = parse_crop_norm_pad(pp_path, pre, "do_pad", &m->pp)))
            goto done;
        m->pp.resize_to = sh;
    }
    /* The projector's width comes from linear_1's shape (vision.c, with the weights). */
    m->proj_cfg = (am_proj_config){
        .type = AM_PROJ_MLP2X_GELU, .in_dim = m->vit_cfg.width, .out_dim = 0, .tokens_per_row = 1};
    m->layout = "llava-hf";
done:
    cJSON_Delete(root);
    cJSON_Delete(pre);
    return rc;
}

int am_vision_config_load(const char *dir, am_vision_config *c) {
    *c = (am_vision_config){.feature_layer = -2, .video_frames = AM_VIDEO_FRAMES_DEFAULT};
    char p1[4096], p2[4096];
    int rc;
    if ((rc = am__path_in(p1, sizeof p1, dir, "anymal.json")) ||
        (rc = am__path_in(p2, sizeof p2, dir, "config.json")))
        goto fail;
    if (am__file_exists(p1))
        rc = anymal_config(c, p1);
    else if (am__file_exists(p2))
        rc = llava_config(c, dir, p2);
    else
        rc = am_err_set(AM_ENOTFOUND, "%s: neither anymal.json nor a LLaVA config.json is there",
                        dir);
    if (rc) goto fail;
    if ((rc = am_vit_blocks_for_layer(&c->vit_cfg, c->feature_layer, &c->n_run))) goto fail;
    if (c->pp.crop_h != c->vit_cfg.image_size || c->pp.crop_w != c->vit_cfg.image_size) {
        rc = am_err_set(AM_EINVAL, "%s: crop size %d x %d does not match the tower's image_size %d",
                        dir, c->pp.crop_h, c->pp.crop_w, c->vit_cfg.image_size);
        goto fail;
    }
    return 0;
fail:
    am_vision_config_fini(c);
    return rc;
}

void am_vision_config_fini(am_vision_config *c) { am__enc_files_fini(&c->files); }

int64_t am_vision_config_n_tokens(const am_vision_config *c, int32_t n_frames) {
    return am_proj_config_n_tokens(&c->proj_cfg, n_frames,
                                   (int32_t)am_vit_n_patches(&c->vit_cfg) +
                                       (c->feature_keep_cls ? 1 : 0));
}

int32_t am_vision_rows_per_frame(const am_vision_model *m) {
    return (int32_t)am_vit_n_patches(&m->vit_cfg) + (m->feature_keep_cls ? 1 : 0);
}

int64_t am_vision_n_tokens(const am_vision_model *m, int32_t n_frames) {
    return am_vision_config_n_tokens(&m->cfg, n_frames);
}

int32_t am_vision_out_dim(const am_vision_model *m) { return m->proj_cfg.out_dim; }

int64_t am_vision_frame_floats(const am_vision_model *m) {
    return (int64_t)m->vit_cfg.channels * m->vit_cfg.image_size * m->vit_cfg.image_size;
}
