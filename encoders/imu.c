/* encoders/imu.c - the "imu" section of anymal.json and batched IMU2CLIP encoding. */
#include "encoders/imu.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <stdio.h>
#include <string.h>

void am_imu_model_destroy(am_imu_model **p) {
    if (!p || !*p) return;
    am_imu_model *m = *p;
    am_imu2clip_destroy(&m->enc);
    am_proj_destroy(&m->proj);
    am__close_ckpt_pair(&m->enc_ck, &m->proj_ck);
    am__enc_files_fini(&m->files);
    am_free(m->dir);
    am_free(m);
    *p = NULL;
}

static int load_imu2clip(const am_ckpt *ck, const char *prefix, void *user) {
    am_imu_model *m = user;
    return am_imu2clip_load(ck, prefix, &m->enc_cfg, &m->enc);
}

int am_imu_model_load(const char *dir, am_imu_model **out) {
    *out = NULL;
    am_imu_model *m = am_calloc(1, sizeof *m);
    if (!m || !(m->dir = am_strdup(dir))) {
        am_free(m);
        return am_err_set(AM_ENOMEM, "IMU model: out of memory");
    }
    char cfg_path[4096];
    cJSON *root = NULL;
    const cJSON *u;
    int rc = am__config_section(dir, "imu", "IMU", cfg_path, sizeof cfg_path, &root, &u);
    if (rc) goto fail;
    am_imu2clip_config *c = &m->enc_cfg;
    am_imu2clip_shape("imu2clip", c);
    if ((rc = am__json_bool(cfg_path, u, "normalize", &m->normalize)) ||
        (rc = am__json_int(cfg_path, u, "in_channels", 1, 64, &c->in_channels)) ||
        (rc = am__json_int(cfg_path, u, "input_dim", 1, 4096, &c->conv_dim)) ||
        (rc = am__json_int(cfg_path, u, "size_embeddings", 1, 16384, &c->hidden)) ||
        (rc = am__json_int(cfg_path, u, "window_samples", 1, 1000000, &c->window)))
        goto fail;
    if (c->in_channels != AM_IMU_CHANNELS || c->window != AM_IMU_WINDOW_SAMPLES) {
        rc =
            am_err_set(AM_EUNSUPPORTED,
                       "%s: imu in_channels %d / window_samples %d (the input pipeline makes %d "
                       "channels x %d samples)",
                       cfg_path, c->in_channels, c->window, AM_IMU_CHANNELS, AM_IMU_WINDOW_SAMPLES);
        goto fail;
    }
    if ((rc = am_imu2clip_config_check(c))) {
        am_err_prefix(rc, "%s", cfg_path);
        goto fail;
    }
    if ((rc = am__json_pooled_section(cfg_path, root, u, "imu", "imu_encoder.safetensors",
                                      "imu_encoder.", c->hidden, &m->proj_cfg, &m->files)) ||
        (rc = am__load_enc_proj(dir, &m->files, load_imu2clip, m, &m->enc_ck, &m->proj_ck,
                                &m->proj_cfg, &m->proj)))
        goto fail;
    cJSON_Delete(root);
    *out = m;
    return 0;
fail:
    cJSON_Delete(root);
    am_imu_model_destroy(&m);
    return rc;
}

int64_t am_imu_tokens_per_window(const am_imu_model *m) {
    return am_proj_config_n_tokens(&m->proj_cfg, 1, 1);
}
int32_t am_imu_out_dim(const am_imu_model *m) { return m->proj_cfg.out_dim; }
int32_t am_imu_embed_dim(const am_imu_model *m) { return m->enc_cfg.hidden; }

/* ---- encoding ---- */

struct am_imu_encoder {
    const am_imu_model *m;
    am__pooled p;     /* op context, projector, embeddings (H), scratch */
    am_imu2clip *enc; /* the encoder as the backend sees it */
    float *win;       /* host (max_batch, 6, T) */
    float *dwin;      /* backend (max_batch, 6, T): win itself on a host-memory backend */
};

am_nn *am_imu_encoder_nn(am_imu_encoder *e) { return &e->p.nn; }

void am_imu_encoder_destroy(am_imu_encoder **p) {
    if (!p || !*p) return;
    am_imu_encoder *e = *p;
    am_backend *be = e->p.nn.be;
    if (be) {
        if (e->dwin != e->win) be->ops->free(be, e->dwin);
        am_imu2clip_release(&e->enc, be);
    }
    am__pooled_fini(&e->p);
    am_aligned_free(e->win);
    am_free(e);
    *p = NULL;
}

int am_imu_encoder_new(const am_imu_model *m, am_backend *be, int n_threads, int32_t max_batch,
                       am_imu_encoder **out) {
    *out = NULL;
    if (max_batch <= 0) max_batch = AM_IMU_MAX_BATCH_DEFAULT;
    am_imu_encoder *e = am_calloc(1, sizeof *e);
    if (!e) return am_err_set(AM_ENOMEM, "IMU encoder: out of memory");
    e->m = m;
    const size_t win_bytes = (size_t)max_batch * (size_t)m->enc_cfg.in_channels *
                             (size_t)m->enc_cfg.window * sizeof(float);
    int rc = am__pooled_init(&e->p, "IMU encoder", m->proj, be, n_threads, max_batch,
                             m->enc_cfg.hidden, am_imu2clip_scratch_floats(&m->enc_cfg, max_batch));
    if (!rc) rc = am_imu2clip_upload(m->enc, be, &e->enc);
    if (!rc) {
        e->win = am_aligned_alloc(win_bytes);
        e->dwin = be->host_memory ? e->win : be->ops->alloc(be, win_bytes);
        if (!e->win || !e->dwin)
            rc = am_err_set(AM_ENOMEM, "IMU encoder: cannot allocate activations for %d windows",
                            max_batch);
    }
    if (rc) {
        am_imu_encoder_destroy(&e);
        return rc;
    }
    *out = e;
    return 0;
}

int am_imu_embed(am_imu_encoder *e, const am_imu_item *items, int n, float *emb) {
    const am_imu_model *m = e->m;
    am_backend *be = e->p.nn.be;
    const int64_t WF = (int64_t)m->enc_cfg.in_channels * m->enc_cfg.window, H = m->enc_cfg.hidden;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!items[i].windows || items[i].n_windows < 1)
            return am_err_set(AM_EINVAL, "IMU encoder: request %d has no windows", i);
        total += items[i].n_windows;
    }
    /* Windows of all requests in order, in chunks of max_batch (a chunk may span requests);
     * on a device each chunk goes up and its embeddings come down. */
    int item = 0, w_in_item = 0;
    for (int64_t w0 = 0; w0 < total; w0 += e->p.max_batch) {
        const int64_t b = total - w0 < e->p.max_batch ? total - w0 : e->p.max_batch;
        for (int64_t j = 0; j < b; j++) {
            memcpy(e->win + j * WF, items[item].windows + (int64_t)w_in_item * WF,
                   (size_t)WF * sizeof(float));
            if (++w_in_item == items[item].n_windows) item++, w_in_item = 0;
        }
        int rc = 0;
        if (e->dwin != e->win)
            rc = be->ops->upload(be, e->dwin, e->win, (size_t)(b * WF) * sizeof(float));
        if (rc ||
            (rc = am_imu2clip_forward(e->enc, &e->p.nn, e->dwin, b, e->p.demb, e->p.scratch)) ||
            (rc = am__pooled_down(&e->p, b)))
            return rc;
        memcpy(emb + w0 * H, e->p.emb, (size_t)(b * H) * sizeof(float));
    }
    if (m->normalize) am__l2_normalize_rows(emb, total, H);
    return 0;
}

int am_imu_encode(am_imu_encoder *e, const am_imu_item *items, int n) {
    const int64_t H = e->m->enc_cfg.hidden;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += items[i].n_windows > 0 ? items[i].n_windows : 0;
    float *emb = am_aligned_alloc((size_t)(total > 0 ? total * H : 1) * sizeof(float));
    int32_t *rows = am_malloc((size_t)(n > 0 ? n : 1) * sizeof *rows);
    float **outs = am_malloc((size_t)(n > 0 ? n : 1) * sizeof *outs);
    int rc = 0;
    if (!emb || !rows || !outs) rc = am_err_set(AM_ENOMEM, "IMU encoder: out of memory");
    if (!rc) rc = am_imu_embed(e, items, n, emb);
    for (int i = 0; !rc && i < n; i++)
        rows[i] = items[i].n_windows, outs[i] = items[i].out;
    /* Linear: four windows per call; others: one call per request (M = its windows). */
    if (!rc) rc = am_proj_pooled(e->p.proj, &e->p.nn, emb, rows, n, outs);
    am_aligned_free(emb);
    am_free(rows);
    am_free(outs);
    return rc;
}
