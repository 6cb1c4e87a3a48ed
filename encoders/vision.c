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

void am_vision_model_destroy(am_vision_model **p) {
    if (!p || !*p) return;
    am_vision_model *m = *p;
    am_vit_destroy(&m->vit);
    am_proj_destroy(&m->proj);
    am__close_ckpt_pair(&m->vit_ck, &m->proj_ck);
    am_vision_config_fini(&m->cfg);
    am_free(m->dir);
    am_free(m);
    *p = NULL;
}

static int load_vit(const am_ckpt *ck, const char *prefix, void *user) {
    am_vision_model *m = user;
    return am_vit_load(ck, prefix, &m->vit_cfg, &m->vit);
}

static int load_llava(am_vision_model *m, const char *dir) {
    int rc;
    if ((rc = am_ckpt_open(dir, &m->vit_ck))) return rc;
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
        return am_err_set(AM_ENOTFOUND,
                          "%s: no vision tower tensors (looked for "
                          "vision_tower[.vision_model].pre_layrnorm.weight)",
                          dir);
    }
    if (!strncmp(vp, "model.", 6)) pp = "model.multi_modal_projector.";
    char nm[256];
    snprintf(nm, sizeof nm, "%slinear_1.weight", pp);
    const am_ckpt_tensor *l1 = am_ckpt_find(m->vit_ck, nm);
    if (!l1) {
        return am_err_set(AM_ENOTFOUND, "%s: tensor '%s' not found (not a LLaVA checkpoint?)", dir,
                          nm);
    }
    m->proj_cfg.out_dim = (int32_t)l1->shape[0];
    if ((rc = am_vit_load(m->vit_ck, vp, &m->vit_cfg, &m->vit)) ||
        (rc = am_proj_load(m->proj_ck, pp, &m->proj_cfg, &m->proj)))
        return rc;
    return 0;
}

int am_vision_model_load(const char *dir, am_vision_model **out) {
    *out = NULL;
    am_vision_model *m = am_calloc(1, sizeof *m);
    if (!m || !(m->dir = am_strdup(dir))) {
        am_free(m);
        return am_err_set(AM_ENOMEM, "vision model: out of memory");
    }
    int rc = am_vision_config_load(dir, &m->cfg);
    if (!rc)
        rc = !strcmp(m->layout, "anymal")
                 ? am__load_enc_proj(dir, &m->files, load_vit, m, &m->vit_ck, &m->proj_ck,
                                     &m->proj_cfg, &m->proj)
                 : load_llava(m, dir);
    if (rc) {
        am_vision_model_destroy(&m);
        return rc;
    }
    *out = m;
    return 0;
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
