/* encoders/audio.c - the "audio" section of anymal.json and batched CLAP encoding. */
#include "encoders/audio.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void am_audio_model_destroy(am_audio_model **p) {
    if (!p || !*p) return;
    am_audio_model *m = *p;
    am_melspec_destroy(&m->ms);
    am_htsat_destroy(&m->enc);
    am_proj_destroy(&m->proj);
    am__close_ckpt_pair(&m->enc_ck, &m->proj_ck);
    am_free(m->dir);
    am_free(m);
    *p = NULL;
}

/* ClapAudioConfig keys into an HTSAT config. */
static int parse_htsat(const char *file, const cJSON *a, am_htsat_config *c) {
    const char *act = am_act_name(c->act), *pact = am_act_name(c->proj_act);
    int32_t stride = c->patch_size, in_ch = 1, nd = c->n_stages, nh = c->n_stages;
    int fusion = 0, flatten = 1;
    int rc;
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(a, "patch_stride");
    if ((rc = am__json_int(file, a, "spec_size", 1, 4096, &c->spec_size)) ||
        (rc = am__json_int(file, a, "num_mel_bins", 1, 4096, &c->n_mels)) ||
        (rc = am__json_int(file, a, "patch_size", 1, 256, &c->patch_size)) ||
        (rc = am__json_int(file, a, "patch_embeds_hidden_size", 1, 65536, &c->embed_dim)) ||
        (rc = am__json_ints(file, a, "depths", AM_HTSAT_MAX_STAGES, 1, AM_HTSAT_MAX_DEPTH,
                            c->depths, &nd)) ||
        (rc = am__json_ints(file, a, "num_attention_heads", AM_HTSAT_MAX_STAGES, 1, 4096,
                            c->n_heads, &nh)) ||
        (rc = am__json_int(file, a, "window_size", 1, 64, &c->window)) ||
        (rc = am__json_float(file, a, "mlp_ratio", &c->mlp_ratio)) ||
        (rc = am__json_float(file, a, "layer_norm_eps", &c->ln_eps)) ||
        (rc = am__json_str(file, a, "hidden_act", &act)) ||
        (rc = am__json_int(file, a, "projection_dim", 1, 65536, &c->proj_dim)) ||
        (rc = am__json_str(file, a, "projection_hidden_act", &pact)) ||
        (rc = am__json_bool(file, a, "enable_patch_layer_norm", &c->patch_norm)) ||
        (rc = am__json_bool(file, a, "enable_fusion", &fusion)) ||
        (rc = am__json_bool(file, a, "flatten_patch_embeds", &flatten)) ||
        (rc = am__json_int(file, a, "patch_embed_input_channels", 1, 64, &in_ch)))
        return rc;
    if (cJSON_IsArray(ps)) {
        int32_t st[2], n = 0;
        if ((rc = am__json_ints(file, a, "patch_stride", 2, 1, 256, st, &n))) return rc;
        stride = n == 2 && st[0] != st[1] ? -1 : st[0];
    } else if ((rc = am__json_int(file, a, "patch_stride", 1, 256, &stride))) {
        return rc;
    }
    if (fusion)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: audio \"enable_fusion\": the fused CLAP models are not supported "
                          "(use an unfused one, e.g. laion/clap-htsat-unfused)",
                          file);
    if (stride != c->patch_size || in_ch != 1 || !flatten)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: audio patch_stride must equal patch_size, "
                          "patch_embed_input_channels be 1 and flatten_patch_embeds true",
                          file);
    if (nd != nh)
        return am_err_set(AM_EINVAL,
                          "%s: audio \"depths\" has %d stages, \"num_attention_heads\" %d", file,
                          nd, nh);
    c->n_stages = nd;
    if ((rc = am_act_parse(act, &c->act))) return am_err_prefix(rc, "%s: audio hidden_act", file);
    if ((rc = am_act_parse(pact, &c->proj_act)))
        return am_err_prefix(rc, "%s: audio projection_hidden_act", file);
    if ((rc = am_htsat_config_check(c))) return am_err_prefix(rc, "%s", file);
    return 0;
}

static int parse_frontend(const char *file, const cJSON *pre, am_melspec_config *f) {
    const char *pad = am_melspec_padding_name(f->padding),
               *scale = am_melspec_scale_name(f->mel_scale);
    float max_s = (float)f->max_samples / (float)f->sample_rate;
    int rc;
    if ((rc = am__json_int(file, pre, "sampling_rate", 1000, 384000, &f->sample_rate)) ||
        (rc = am__json_int(file, pre, "fft_window_size", 16, 65536, &f->n_fft)) ||
        (rc = am__json_int(file, pre, "hop_length", 1, 1 << 20, &f->hop)) ||
        (rc = am__json_int(file, pre, "feature_size", 1, 4096, &f->n_mels)) ||
        (rc = am__json_float(file, pre, "frequency_min", &f->fmin)) ||
        (rc = am__json_float(file, pre, "frequency_max", &f->fmax)) ||
        (rc = am__json_float(file, pre, "max_length_s", &max_s)) ||
        (rc = am__json_str(file, pre, "padding", &pad)) ||
        (rc = am__json_str(file, pre, "mel_scale", &scale)))
        return rc;
    if (!(max_s > 0 && max_s <= 3600))
        return am_err_set(AM_EINVAL, "%s: audio preprocess max_length_s %g not in (0, 3600]", file,
                          (double)max_s);
    f->max_samples = (int32_t)lround((double)max_s * f->sample_rate);
    if ((rc = am_melspec_parse_padding(pad, &f->padding)) ||
        (rc = am_melspec_parse_scale(scale, &f->mel_scale)))
        return am_err_prefix(rc, "%s", file);
    if ((rc = am_melspec_config_check(f))) return am_err_prefix(rc, "%s", file);
    return 0;
}

int am_audio_model_load(const char *dir, am_audio_model **out) {
    *out = NULL;
    am_audio_model *m = am_calloc(1, sizeof *m);
    if (!m || !(m->dir = am_strdup(dir))) {
        am_free(m);
        return am_err_set(AM_ENOMEM, "audio model: out of memory");
    }
    char cfg_path[4096];
    cJSON *root = NULL;
    const cJSON *a;
    int rc = am__config_section(dir, "audio", "audio", cfg_path, sizeof cfg_path, &root, &a);
    if (rc) goto fail;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(a, "preprocess");
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(a, "projector");
    const cJSON *llm = cJSON_GetObjectItemCaseSensitive(root, "llm");
    const char *weights = "audio_encoder.safetensors", *prefix = "audio_model.audio_encoder.",
               *pprefix = "audio_projection.", *proj_weights = NULL, *proj_prefix = "";
    int32_t llm_dim = 0;
    am_htsat_shape("htsat-tiny", &m->enc_cfg);
    m->fe = am_melspec_clap_default();
    if ((rc = am__json_int(cfg_path, llm, "dim", 1, 65536, &llm_dim)) ||
        (rc = am__json_str(cfg_path, a, "weights", &weights)) ||
        (rc = am__json_str(cfg_path, a, "prefix", &prefix)) ||
        (rc = am__json_str(cfg_path, a, "projection_prefix", &pprefix)) ||
        (rc = am__json_bool(cfg_path, a, "normalize", &m->normalize)) ||
        (rc = parse_htsat(cfg_path, a, &m->enc_cfg)) ||
        (rc = parse_frontend(cfg_path, pre, &m->fe)))
        goto fail;
    if (m->fe.n_mels != m->enc_cfg.n_mels) {
        rc = am_err_set(AM_EINVAL, "%s: audio preprocess feature_size %d != num_mel_bins %d",
                        cfg_path, m->fe.n_mels, m->enc_cfg.n_mels);
        goto fail;
    }
    if (am_melspec_frames(&m->fe) > am_htsat_max_frames(&m->enc_cfg)) {
        rc = am_err_set(AM_EINVAL,
                        "%s: %lld log-mel frames per clip do not fit the %d x %d spectrogram "
                        "image (at most %lld)",
                        cfg_path, (long long)am_melspec_frames(&m->fe), m->enc_cfg.spec_size,
                        m->enc_cfg.spec_size, (long long)am_htsat_max_frames(&m->enc_cfg));
        goto fail;
    }
    if (!cJSON_IsObject(pj)) {
        rc = am_err_set(AM_ENOTFOUND, "%s: audio has no \"projector\" object", cfg_path);
        goto fail;
    }
    if ((rc = am__json_projector(cfg_path, pj, AM_PROJ_LINEAR, m->enc_cfg.proj_dim, llm_dim, 8,
                                 &m->proj_cfg, &proj_weights, &proj_prefix)))
        goto fail;
    if ((rc = am__open_ckpt_pair(dir, weights, proj_weights, &m->enc_ck, &m->proj_ck))) goto fail;
    if ((rc = am_melspec_new(&m->fe, &m->ms)) ||
        (rc = am_htsat_load(m->enc_ck, prefix, m->enc_ck, pprefix, &m->enc_cfg, &m->enc)) ||
        (rc = am_proj_load(m->proj_ck, proj_prefix, &m->proj_cfg, &m->proj)))
        goto fail;
    m->proj_cfg = m->proj->cfg;
    cJSON_Delete(root);
    *out = m;
    return 0;
fail:
    cJSON_Delete(root);
    am_audio_model_destroy(&m);
    return rc;
}

int64_t am_audio_n_tokens(const am_audio_model *m) { return am_proj_n_tokens(m->proj, 1, 1); }
int32_t am_audio_out_dim(const am_audio_model *m) { return m->proj_cfg.out_dim; }
int32_t am_audio_sample_rate(const am_audio_model *m) { return m->fe.sample_rate; }
int32_t am_audio_embed_dim(const am_audio_model *m) { return m->enc_cfg.proj_dim; }

/* ---- encoding ---- */

struct am_audio_encoder {
    const am_audio_model *m;
    am_nn nn;
    int32_t max_batch;
    float *mel;     /* (T, M) one clip */
    float *img;     /* (max_batch, S, S) */
    float *emb;     /* (max_batch, P) */
    float *scratch; /* am_htsat_scratch_floats(max_batch) */
};

am_nn *am_audio_encoder_nn(am_audio_encoder *e) { return &e->nn; }

void am_audio_encoder_destroy(am_audio_encoder **p) {
    if (!p || !*p) return;
    am_nn_fini(&(*p)->nn);
    am_aligned_free((*p)->mel);
    am_aligned_free((*p)->img);
    am_aligned_free((*p)->emb);
    am_aligned_free((*p)->scratch);
    am_free(*p);
    *p = NULL;
}

int am_audio_encoder_new(const am_audio_model *m, am_backend *be, int n_threads, int32_t max_batch,
                         am_audio_encoder **out) {
    *out = NULL;
    if (max_batch <= 0) max_batch = AM_AUDIO_MAX_BATCH_DEFAULT;
    if (max_batch > AM_AUDIO_MAX_BATCH_LIMIT) max_batch = AM_AUDIO_MAX_BATCH_LIMIT;
    /* Its Swin/GRU kernels (encoders/nn_ops.h) are host code: host-memory backends only. */
    if (be && !be->host_memory)
        return am_err_set(AM_EUNSUPPORTED, "audio encoder: runs on the cpu device only, not %s",
                          be->name);
    am_audio_encoder *e = am_calloc(1, sizeof *e);
    if (!e) return am_err_set(AM_ENOMEM, "audio encoder: out of memory");
    e->m = m;
    e->max_batch = max_batch;
    int rc = am_nn_init(&e->nn, be, n_threads);
    if (rc) {
        am_free(e);
        return rc;
    }
    const int64_t S = m->enc_cfg.spec_size, T = am_melspec_frames(&m->fe);
    e->mel = am_aligned_alloc((size_t)(T * m->fe.n_mels) * sizeof(float));
    e->img = am_aligned_alloc((size_t)(max_batch * S * S) * sizeof(float));
    e->emb = am_aligned_alloc((size_t)(max_batch * m->enc_cfg.proj_dim) * sizeof(float));
    e->scratch = am_aligned_alloc(am_htsat_scratch_floats(&m->enc_cfg, max_batch) * sizeof(float));
    if (!e->mel || !e->img || !e->emb || !e->scratch) {
        am_audio_encoder_destroy(&e);
        return am_err_set(AM_ENOMEM, "audio encoder: cannot allocate activations for %d clips",
                          max_batch);
    }
    *out = e;
    return 0;
}

/* Embeddings of clips [i0, i0 + nb) into e->emb (and pooled when not NULL). */
static int embed_chunk(am_audio_encoder *e, const am_audio_item *items, int nb, float *pooled) {
    const am_audio_model *m = e->m;
    const int64_t S = m->enc_cfg.spec_size, T = am_melspec_frames(&m->fe);
    for (int i = 0; i < nb; i++) {
        if (!items[i].samples || items[i].n < 1)
            return am_err_set(AM_EINVAL, "audio encoder: clip %d has no samples", i);
        int rc = am_melspec_run(m->ms, items[i].samples, items[i].n, e->nn.tp, e->mel);
        if (rc || (rc = am_htsat_prepare(m->enc, e->mel, T, e->img + i * S * S))) return rc;
    }
    int rc = am_htsat_forward(m->enc, &e->nn, e->img, nb, pooled, e->emb, e->scratch);
    if (rc) return rc;
    if (m->normalize) am__l2_normalize_rows(e->emb, nb, m->enc_cfg.proj_dim);
    return 0;
}

int am_audio_embed(am_audio_encoder *e, const am_audio_item *items, int n, float *emb,
                   float *pooled) {
    const int64_t P = e->m->enc_cfg.proj_dim, CL = am_htsat_out_width(&e->m->enc_cfg);
    for (int i0 = 0; i0 < n; i0 += e->max_batch) {
        const int nb = n - i0 < e->max_batch ? n - i0 : e->max_batch;
        int rc = embed_chunk(e, items + i0, nb, pooled ? pooled + i0 * CL : NULL);
        if (rc) return rc;
        memcpy(emb + i0 * P, e->emb, (size_t)(nb * P) * sizeof(float));
    }
    return 0;
}

int am_audio_encode(am_audio_encoder *e, const am_audio_item *items, int n) {
    const am_audio_model *m = e->m;
    const int64_t P = m->enc_cfg.proj_dim;
    for (int i0 = 0; i0 < n; i0 += e->max_batch) {
        const int nb = n - i0 < e->max_batch ? n - i0 : e->max_batch;
        int rc = embed_chunk(e, items + i0, nb, NULL);
        if (rc) return rc;
        if (m->proj_cfg.type == AM_PROJ_LINEAR) { /* rows in groups of 4: projector.h */
            float *outs[AM_AUDIO_MAX_BATCH_LIMIT];
            for (int i = 0; i < nb; i++)
                outs[i] = items[i0 + i].out;
            if ((rc = am_proj_linear_rows(m->proj, &e->nn, e->emb, nb, outs))) return rc;
            continue;
        }
        /* Other projectors: one call per clip (M = one row), the same bits in any batch. */
        for (int i = 0; i < nb; i++) {
            const am_proj_item pi = {e->emb + i * P, 1, 1, items[i0 + i].out};
            if ((rc = am_proj_forward(m->proj, &e->nn, &pi, 1))) return rc;
        }
    }
    return 0;
}
