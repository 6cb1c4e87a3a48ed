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
    am_audio_config_fini(&m->cfg);
    am_free(m->dir);
    am_free(m);
    *p = NULL;
}

static int load_htsat(const am_ckpt *ck, const char *prefix, void *user) {
    am_audio_model *m = user;
    return am_htsat_load(ck, prefix, ck, m->clap_prefix, &m->enc_cfg, &m->enc);
}

int am_audio_model_load(const char *dir, am_audio_model **out) {
    *out = NULL;
    am_audio_model *m = am_calloc(1, sizeof *m);
    if (!m || !(m->dir = am_strdup(dir))) {
        am_free(m);
        return am_err_set(AM_ENOMEM, "audio model: out of memory");
    }
    int rc;
    if ((rc = am_audio_config_load(dir, &m->cfg)) || (rc = am_melspec_new(&m->fe, &m->ms)) ||
        (rc = am__load_enc_proj(dir, &m->files, load_htsat, m, &m->enc_ck, &m->proj_ck,
                                &m->proj_cfg, &m->proj))) {
        am_audio_model_destroy(&m);
        return rc;
    }
    *out = m;
    return 0;
}

int64_t am_audio_n_tokens(const am_audio_model *m) { return am_audio_config_n_tokens(&m->cfg); }
int32_t am_audio_out_dim(const am_audio_model *m) { return m->proj_cfg.out_dim; }
int32_t am_audio_sample_rate(const am_audio_model *m) { return m->fe.sample_rate; }
int32_t am_audio_embed_dim(const am_audio_model *m) { return m->enc_cfg.proj_dim; }

/* ---- encoding ---- */

struct am_audio_encoder {
    const am_audio_model *m;
    am__pooled p;  /* op context, projector, embeddings (P), scratch */
    am_htsat *enc; /* HTSAT as the backend sees it */
    float *mel;    /* host (T, M) one clip */
    float *img;    /* host (max_batch, S, S) */
};

am_nn *am_audio_encoder_nn(am_audio_encoder *e) { return &e->p.nn; }

void am_audio_encoder_destroy(am_audio_encoder **p) {
    if (!p || !*p) return;
    am_audio_encoder *e = *p;
    if (e->p.nn.be) am_htsat_release(&e->enc, e->p.nn.be);
    am__pooled_fini(&e->p);
    am_aligned_free(e->mel);
    am_aligned_free(e->img);
    am_free(e);
    *p = NULL;
}

int am_audio_encoder_new(const am_audio_model *m, am_backend *be, int n_threads, int32_t max_batch,
                         am_audio_encoder **out) {
    *out = NULL;
    if (max_batch <= 0) max_batch = AM_AUDIO_MAX_BATCH_DEFAULT;
    if (max_batch > AM_AUDIO_MAX_BATCH_LIMIT) max_batch = AM_AUDIO_MAX_BATCH_LIMIT;
    am_audio_encoder *e = am_calloc(1, sizeof *e);
    if (!e) return am_err_set(AM_ENOMEM, "audio encoder: out of memory");
    e->m = m;
    const int64_t S = m->enc_cfg.spec_size, T = am_melspec_frames(&m->fe);
    int rc = am__pooled_init(&e->p, "audio encoder", m->proj, be, n_threads, max_batch,
                             m->enc_cfg.proj_dim, am_htsat_scratch_floats(&m->enc_cfg, max_batch));
    if (!rc) rc = am_htsat_upload(m->enc, be, &e->enc);
    if (!rc && (!(e->mel = am_aligned_alloc((size_t)(T * m->fe.n_mels) * sizeof(float))) ||
                !(e->img = am_aligned_alloc((size_t)(max_batch * S * S) * sizeof(float)))))
        rc = am_err_set(AM_ENOMEM, "audio encoder: cannot allocate activations for %d clips",
                        max_batch);
    if (rc) {
        am_audio_encoder_destroy(&e);
        return rc;
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
        int rc = am_melspec_run(m->ms, items[i].samples, items[i].n, e->p.nn.tp, e->mel);
        if (rc || (rc = am_htsat_prepare(m->enc, e->mel, T, e->img + i * S * S))) return rc;
    }
    /* The log-mel and its image are host work; HTSAT runs on the backend. */
    int rc = am_htsat_forward(e->enc, &e->p.nn, e->img, nb, pooled, e->p.demb, e->p.scratch);
    if (rc || (rc = am__pooled_down(&e->p, nb))) return rc;
    if (m->normalize) am__l2_normalize_rows(e->p.emb, nb, m->enc_cfg.proj_dim);
    return 0;
}

int am_audio_embed(am_audio_encoder *e, const am_audio_item *items, int n, float *emb,
                   float *pooled) {
    const int64_t P = e->m->enc_cfg.proj_dim, CL = am_htsat_out_width(&e->m->enc_cfg);
    for (int i0 = 0; i0 < n; i0 += e->p.max_batch) {
        const int nb = n - i0 < e->p.max_batch ? n - i0 : e->p.max_batch;
        int rc = embed_chunk(e, items + i0, nb, pooled ? pooled + i0 * CL : NULL);
        if (rc) return rc;
        memcpy(emb + i0 * P, e->p.emb, (size_t)(nb * P) * sizeof(float));
    }
    return 0;
}

int am_audio_encode(am_audio_encoder *e, const am_audio_item *items, int n) {
    for (int i0 = 0; i0 < n; i0 += e->p.max_batch) {
        const int nb = n - i0 < e->p.max_batch ? n - i0 : e->p.max_batch;
        int rc = embed_chunk(e, items + i0, nb, NULL);
        if (rc) return rc;
        /* One row per clip: linear projectors four clips per call, others one (projector.h). */
        int32_t rows[AM_AUDIO_MAX_BATCH_LIMIT];
        float *outs[AM_AUDIO_MAX_BATCH_LIMIT];
        for (int i = 0; i < nb; i++)
            rows[i] = 1, outs[i] = items[i0 + i].out;
        if ((rc = am_proj_pooled(e->p.proj, &e->p.nn, e->p.emb, rows, nb, outs))) return rc;
    }
    return 0;
}
