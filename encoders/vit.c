/* encoders/vit.c - loading and running the CLIP ViT vision tower. */
#include "encoders/vit.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"
#include "encoders/nn_ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    am_vit_config cfg; /* S, p, ch, C, L, H, F, eps, act */
} shapes[] = {
    {"vit-l-14-336", {336, 14, 3, 1024, 24, 16, 4096, 1e-5f, AM_ACT_QUICK_GELU}},
    {"vit-l-14-224", {224, 14, 3, 1024, 24, 16, 4096, 1e-5f, AM_ACT_QUICK_GELU}},
    {"vit-g-14", {224, 14, 3, 1408, 40, 16, 6144, 1e-5f, AM_ACT_GELU}},
    {"vit-bigg-14", {224, 14, 3, 1664, 48, 16, 8192, 1e-5f, AM_ACT_GELU}},
    {"tiny", {32, 8, 3, 64, 3, 4, 128, 1e-5f, AM_ACT_QUICK_GELU}},
};

const char *am_vit_shape_names(void) {
    return "vit-l-14-336, vit-l-14-224, vit-g-14, vit-bigg-14, tiny";
}

int am_vit_shape(const char *name, am_vit_config *out) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcasecmp(name, shapes[i].name)) {
            *out = shapes[i].cfg;
            return 0;
        }
    return am_err_set(AM_EINVAL, "unknown vision shape '%s' (known: %s)", name,
                      am_vit_shape_names());
}

int am_vit_config_check(const am_vit_config *c) {
    if (c->image_size <= 0 || c->image_size > 4096)
        return am_err_set(AM_EINVAL, "vision config: image_size %d not in [1, 4096]",
                          c->image_size);
    if (c->patch_size <= 0 || c->image_size % c->patch_size)
        return am_err_set(AM_EINVAL, "vision config: patch_size %d does not divide image_size %d",
                          c->patch_size, c->image_size);
    if (c->channels != 3)
        return am_err_set(AM_EINVAL, "vision config: num_channels %d (only 3 is supported)",
                          c->channels);
    if (c->width <= 0 || c->width > 65536 || c->n_heads <= 0 || c->width % c->n_heads)
        return am_err_set(
            AM_EINVAL,
            "vision config: hidden_size %d is not a positive multiple of num_attention_heads %d",
            c->width, c->n_heads);
    if (c->n_layers <= 0 || c->n_layers > AM_VIT_MAX_LAYERS)
        return am_err_set(AM_EINVAL, "vision config: num_hidden_layers %d not in [1, %d]",
                          c->n_layers, AM_VIT_MAX_LAYERS);
    if (c->mlp_dim <= 0 || c->mlp_dim > 262144)
        return am_err_set(AM_EINVAL, "vision config: intermediate_size %d", c->mlp_dim);
    if (!(c->ln_eps > 0 && c->ln_eps < 1))
        return am_err_set(AM_EINVAL, "vision config: layer_norm_eps %g", (double)c->ln_eps);
    if (c->act != AM_ACT_GELU && c->act != AM_ACT_QUICK_GELU)
        return am_err_set(AM_EINVAL, "vision config: hidden_act");
    return 0;
}

double am_vit_flops(const am_vit_config *c, int n_run) {
    const double P = (double)am_vit_n_patches(c), T = P + 1, C = c->width, F = c->mlp_dim;
    const double K = (double)c->channels * c->patch_size * c->patch_size;
    return 2.0 * P * C * K + n_run * (2.0 * T * (4 * C * C + 2 * C * F) + 4.0 * T * T * C);
}

int am_vit_blocks_for_layer(const am_vit_config *c, int32_t layer, int32_t *n_run) {
    int32_t n = layer < 0 ? c->n_layers + 1 + layer : layer;
    if (n < 0 || n > c->n_layers)
        return am_err_set(
            AM_ERANGE,
            "vision feature layer %d is outside the %d hidden states of a %d-layer tower", layer,
            c->n_layers + 1, c->n_layers);
    *n_run = n;
    return 0;
}

void am_vit_destroy(am_vit **p) {
    if (!p || !*p) return;
    am_aligned_free((*p)->vecs);
    am_free((*p)->layers);
    am_free(*p);
    *p = NULL;
}

/* Takes every vector from the arena in a fixed order; with a NULL base it only counts. */
static void layout(am_vit *v, am__vec_arena *a) {
    const am_vit_config *c = &v->cfg;
    const int64_t C = c->width, F = c->mlp_dim, T = am_vit_n_patches(c) + 1;
    v->cls = am__arena_take(a, C);
    v->pos = am__arena_take(a, T * C);
    v->pre_ln_w = am__arena_take(a, C);
    v->pre_ln_b = am__arena_take(a, C);
    for (int l = 0; l < c->n_layers; l++) {
        am_vit_layer *L = &v->layers[l];
        L->ln1_w = am__arena_take(a, C);
        L->ln1_b = am__arena_take(a, C);
        L->ln2_w = am__arena_take(a, C);
        L->ln2_b = am__arena_take(a, C);
        L->q.b = am__arena_take(a, C);
        L->k.b = am__arena_take(a, C);
        L->v.b = am__arena_take(a, C);
        L->o.b = am__arena_take(a, C);
        L->fc1.b = am__arena_take(a, F);
        L->fc2.b = am__arena_take(a, C);
    }
}

int am_vit_load(const am_ckpt *ck, const char *prefix, const am_vit_config *cfg, am_vit **out) {
    *out = NULL;
    int rc = am_vit_config_check(cfg);
    if (rc) return rc;
    am_vit *v = am_calloc(1, sizeof *v);
    if (!v || !(v->layers = am_calloc((size_t)cfg->n_layers, sizeof *v->layers))) {
        am_free(v);
        return am_err_set(AM_ENOMEM, "vision tower: out of memory");
    }
    v->cfg = *cfg;
    am__vec_arena a = {0};
    layout(v, &a);
    if (!(v->vecs = am_aligned_alloc(a.used * sizeof(float)))) {
        am_vit_destroy(&v);
        return am_err_set(AM_ENOMEM, "vision tower: cannot allocate %zu floats of vectors", a.used);
    }
    a = (am__vec_arena){v->vecs, 0, 0};
    layout(v, &a);
    const int64_t C = cfg->width, F = cfg->mlp_dim, T = am_vit_n_patches(cfg) + 1,
                  p = cfg->patch_size;
    const int64_t sC[1] = {C}, sF[1] = {F}, sTC[2] = {T, C}, sCC[2] = {C, C}, sFC[2] = {F, C},
                  sCF[2] = {C, F};
    const int64_t sConv[4] = {C, cfg->channels, p, p};
    if ((rc = am__enc_vec(ck, prefix, "embeddings.class_embedding", 1, sC, v->cls)) ||
        (rc = am__enc_matrix(ck, prefix, "embeddings.patch_embedding.weight", 4, sConv,
                             &v->patch)) ||
        (rc = am__enc_vec(ck, prefix, "embeddings.position_embedding.weight", 2, sTC, v->pos)) ||
        (rc = am__enc_vec(ck, prefix, "pre_layrnorm.weight", 1, sC, v->pre_ln_w)) ||
        (rc = am__enc_vec(ck, prefix, "pre_layrnorm.bias", 1, sC, v->pre_ln_b)))
        goto fail;
    for (int l = 0; l < cfg->n_layers; l++) {
        am_vit_layer *L = &v->layers[l];
        char nm[128];
#define VEC(field, suffix, shape)                                                                  \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "encoder.layers.%d.%s", l, suffix);                                \
        if ((rc = am__enc_vec(ck, prefix, nm, 1, shape, (float *)(field)))) goto fail;             \
    } while (0)
#define MAT(field, suffix, shape)                                                                  \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "encoder.layers.%d.%s", l, suffix);                                \
        if ((rc = am__enc_matrix(ck, prefix, nm, 2, shape, &(field)))) goto fail;                  \
    } while (0)
        VEC(L->ln1_w, "layer_norm1.weight", sC);
        VEC(L->ln1_b, "layer_norm1.bias", sC);
        MAT(L->q.w, "self_attn.q_proj.weight", sCC);
        VEC(L->q.b, "self_attn.q_proj.bias", sC);
        MAT(L->k.w, "self_attn.k_proj.weight", sCC);
        VEC(L->k.b, "self_attn.k_proj.bias", sC);
        MAT(L->v.w, "self_attn.v_proj.weight", sCC);
        VEC(L->v.b, "self_attn.v_proj.bias", sC);
        MAT(L->o.w, "self_attn.out_proj.weight", sCC);
        VEC(L->o.b, "self_attn.out_proj.bias", sC);
        VEC(L->ln2_w, "layer_norm2.weight", sC);
        VEC(L->ln2_b, "layer_norm2.bias", sC);
        MAT(L->fc1.w, "mlp.fc1.weight", sFC);
        VEC(L->fc1.b, "mlp.fc1.bias", sF);
        MAT(L->fc2.w, "mlp.fc2.weight", sCF);
        VEC(L->fc2.b, "mlp.fc2.bias", sC);
#undef VEC
#undef MAT
    }
    *out = v;
    return 0;
fail:
    am_vit_destroy(&v);
    return rc;
}

void am_vit_release(am_vit **p, am_backend *be) {
    if (!p || !*p) return;
    if ((*p)->vecs) be->ops->free(be, (*p)->vecs);
    am_free((*p)->layers);
    am_free(*p);
    *p = NULL;
}

int am_vit_upload(const am_vit *v, am_backend *be, am_vit **out) {
    *out = NULL;
    const am_vit_config *c = &v->cfg;
    am_vit *d = am_calloc(1, sizeof *d);
    if (!d || !(d->layers = am_calloc((size_t)c->n_layers, sizeof *d->layers))) {
        am_free(d);
        return am_err_set(AM_ENOMEM, "vision tower: out of memory");
    }
    d->cfg = *c;
    if (be->host_memory) { /* the host views as they are; d->vecs stays NULL (not owned) */
        d->patch = v->patch, d->cls = v->cls, d->pos = v->pos;
        d->pre_ln_w = v->pre_ln_w, d->pre_ln_b = v->pre_ln_b;
        memcpy(d->layers, v->layers, (size_t)c->n_layers * sizeof *d->layers);
        *out = d;
        return 0;
    }
    /* The vectors: one backend block laid out like v->vecs, so one upload fills it. */
    am__vec_arena a = {0};
    layout(d, &a);
    int rc = 0;
    if (!(d->vecs = be->ops->alloc(be, a.used * sizeof(float)))) {
        rc = am_err_set(AM_ENOMEM, "vision tower: cannot allocate %zu bytes of %s memory",
                        a.used * sizeof(float), be->name);
        goto fail;
    }
    if ((rc = be->ops->upload(be, d->vecs, v->vecs, a.used * sizeof(float)))) goto fail;
    a = (am__vec_arena){d->vecs, 0, 0};
    layout(d, &a);
    if ((rc = be->ops->upload_matrix(be, &v->patch, &d->patch))) goto fail;
    for (int l = 0; l < c->n_layers; l++) {
        const am_vit_layer *S = &v->layers[l];
        am_vit_layer *L = &d->layers[l];
        const am_matrix *from[] = {&S->q.w, &S->k.w, &S->v.w, &S->o.w, &S->fc1.w, &S->fc2.w};
        am_matrix *to[] = {&L->q.w, &L->k.w, &L->v.w, &L->o.w, &L->fc1.w, &L->fc2.w};
        for (int i = 0; i < 6; i++)
            if ((rc = be->ops->upload_matrix(be, from[i], to[i]))) goto fail;
    }
    *out = d;
    return 0;
fail:
    am_vit_release(&d, be);
    return am_err_prefix(rc, "vision tower: weights to the %s backend", be->name);
}

size_t am_vit_scratch_floats(const am_vit_config *c, int64_t b) {
    const int64_t T = am_vit_n_patches(c) + 1, C = c->width;
    const int64_t K = (int64_t)c->channels * c->patch_size * c->patch_size;
    const int64_t F = c->mlp_dim > K ? c->mlp_dim : K;
    return (size_t)(b * T) * (size_t)(6 * C + F) + 64;
}

int am_vit_forward(const am_vit *v, am_nn *nn, const float *pix, int64_t b, int32_t n_run,
                   float *hidden, float *scratch) {
    const am_vit_config *c = &v->cfg;
    const int64_t P = am_vit_n_patches(c), T = P + 1, C = c->width, M = b * T;
    const int H = c->n_heads, D = (int)(C / H);
    float *x = hidden;        /* (B, T, C) residual stream */
    float *h = scratch;       /* (M, C) normed input of a branch */
    float *q = h + M * C;     /* (M, C) */
    float *k = q + M * C;     /* (M, C) */
    float *vv = k + M * C;    /* (M, C) */
    float *att = vv + M * C;  /* (M, C) */
    float *tmp = att + M * C; /* (M, C) branch output */
    float *f = tmp + M * C;   /* (M, F) MLP hidden; also the im2col buffer (B*P, 3*p*p) */
    int rc;
    if (n_run < 0 || n_run > c->n_layers) return am_err_set(AM_EINVAL, "vit: n_run %d", n_run);
    am_backend *be = nn->be;
    const int64_t K = (int64_t)c->channels * c->patch_size * c->patch_size;
    if (be->host_memory) {
        am_nn_patchify(nn, pix, f, b, c->channels, c->image_size, c->patch_size);
    } else {
        /* im2col of the host pixels on the host, then one upload: the input's staging. */
        float *cols = am_aligned_alloc((size_t)(b * P * K) * sizeof(float)); /* (B*P, K) */
        if (!cols) return am_err_set(AM_ENOMEM, "vit: cannot allocate the patch staging buffer");
        am_nn_patchify(nn, pix, cols, b, c->channels, c->image_size, c->patch_size);
        rc = be->ops->upload(be, f, cols, (size_t)(b * P * K) * sizeof(float));
        am_aligned_free(cols);
        if (rc) return rc;
    }
    /* Per image (M = P rows, see am_nn_matmul_rows): the patch embeddings go
     * straight to rows 1..T-1, row 0 is the class embedding; then the
     * positions are added (cls + pos[0], e + pos[t]). */
    for (int64_t bi = 0; bi < b; bi++) {
        float *xb = x + bi * T * C; /* (T, C) */
        if ((rc = am_nn_matmul_rows(nn, &v->patch, f + bi * P * K, xb + C, P, P))) return rc;
        be->ops->copy(be, xb, v->cls, (size_t)C * sizeof(float));
        be->ops->add(be, xb, v->pos, T * C);
    }
    am_nn_layernorm(nn, x, x, v->pre_ln_w, v->pre_ln_b, M, C, c->ln_eps);
    const float scale = 1.0f / sqrtf((float)D);
    for (int l = 0; l < n_run; l++) {
        const am_vit_layer *L = &v->layers[l];
        am_nn_layernorm(nn, h, x, L->ln1_w, L->ln1_b, M, C, c->ln_eps);
        if ((rc = am_nn_linear_rows(nn, &L->q, h, q, M, T)) ||
            (rc = am_nn_linear_rows(nn, &L->k, h, k, M, T)) ||
            (rc = am_nn_linear_rows(nn, &L->v, h, vv, M, T)))
            return rc;
        if ((rc = am_nn_attention(nn, att, C, q, C, k, vv, C, b, T, T, H, D, scale))) return rc;
        if ((rc = am_nn_matmul_rows(nn, &L->o.w, att, tmp, M, T))) return rc;
        am_nn_residual(nn, x, tmp, L->o.b, M, C);
        am_nn_layernorm(nn, h, x, L->ln2_w, L->ln2_b, M, C, c->ln_eps);
        if ((rc = am_nn_matmul_rows(nn, &L->fc1.w, h, f, M, T))) return rc;
        am_nn_bias_act(nn, f, L->fc1.b, M, c->mlp_dim, c->act);
        if ((rc = am_nn_matmul_rows(nn, &L->fc2.w, f, tmp, M, T))) return rc;
        am_nn_residual(nn, x, tmp, L->fc2.b, M, C);
    }
    return 0;
}
