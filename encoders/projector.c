/* encoders/projector.c - Perceiver Resampler (OpenFlamingo), LLaVA mlp2x_gelu and linear
 * projectors. */
#include "encoders/projector.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int am_proj_parse_type(const char *name, am_proj_type *out) {
    if (!strcmp(name, "perceiver"))
        *out = AM_PROJ_PERCEIVER;
    else if (!strcmp(name, "mlp2x_gelu"))
        *out = AM_PROJ_MLP2X_GELU;
    else if (!strcmp(name, "linear"))
        *out = AM_PROJ_LINEAR;
    else
        return am_err_set(
            AM_EINVAL, "unknown projector type '%s' (want perceiver, mlp2x_gelu or linear)", name);
    return 0;
}

const char *am_proj_type_name(am_proj_type t) {
    return t == AM_PROJ_PERCEIVER ? "perceiver" : t == AM_PROJ_MLP2X_GELU ? "mlp2x_gelu" : "linear";
}

int am_proj_config_check(const am_proj_config *c) {
    if (c->in_dim <= 0 || c->in_dim > 65536 || c->out_dim <= 0 || c->out_dim > 65536)
        return am_err_set(AM_EINVAL, "projector config: in_dim %d / out_dim %d not in [1, 65536]",
                          c->in_dim, c->out_dim);
    if (c->type == AM_PROJ_PERCEIVER) {
        if (c->n_latents <= 0 || c->n_latents > 4096)
            return am_err_set(AM_EINVAL, "projector config: num_latents %d not in [1, 4096]",
                              c->n_latents);
        if (c->depth <= 0 || c->depth > AM_PROJ_MAX_DEPTH)
            return am_err_set(AM_EINVAL, "projector config: depth %d not in [1, %d]", c->depth,
                              AM_PROJ_MAX_DEPTH);
        if (c->n_heads <= 0 || c->head_dim <= 0 || (int64_t)c->n_heads * c->head_dim > 65536)
            return am_err_set(AM_EINVAL, "projector config: heads %d x dim_head %d", c->n_heads,
                              c->head_dim);
        if (c->ff_mult <= 0 || c->ff_mult > 16)
            return am_err_set(AM_EINVAL, "projector config: ff_mult %d not in [1, 16]", c->ff_mult);
        if (c->max_frames < 0 || c->max_frames > 65536 || c->max_media < 0 || c->max_media > 65536)
            return am_err_set(AM_EINVAL, "projector config: max_frames %d / max_media %d",
                              c->max_frames, c->max_media);
        if (!(c->ln_eps > 0 && c->ln_eps < 1))
            return am_err_set(AM_EINVAL, "projector config: layer_norm_eps %g", (double)c->ln_eps);
    } else if (c->type == AM_PROJ_LINEAR) {
        if (c->tokens_per_row <= 0 || c->tokens_per_row > 4096)
            return am_err_set(AM_EINVAL, "projector config: tokens_per_row %d not in [1, 4096]",
                              c->tokens_per_row);
    } else if (c->type != AM_PROJ_MLP2X_GELU) {
        return am_err_set(AM_EINVAL, "projector config: unknown type %d", (int)c->type);
    }
    return 0;
}

void am_proj_destroy(am_proj **p) {
    if (!p || !*p) return;
    am_aligned_free((*p)->vecs);
    am_free((*p)->layers);
    am_free(*p);
    *p = NULL;
}

static void layout(am_proj *p, am__vec_arena *a) {
    const am_proj_config *c = &p->cfg;
    const int64_t D = c->in_dim;
    if (c->type == AM_PROJ_PERCEIVER) {
        p->latents = am__arena_take(a, (int64_t)c->n_latents * D);
        p->frame_embs = c->max_frames ? am__arena_take(a, (int64_t)c->max_frames * D) : NULL;
        p->media_time = c->max_media ? am__arena_take(a, (int64_t)c->max_media * D) : NULL;
        for (int i = 0; i < c->depth; i++) {
            am_proj_layer *L = &p->layers[i];
            L->norm_media_w = am__arena_take(a, D);
            L->norm_media_b = am__arena_take(a, D);
            L->norm_latents_w = am__arena_take(a, D);
            L->norm_latents_b = am__arena_take(a, D);
            L->ff_ln_w = am__arena_take(a, D);
            L->ff_ln_b = am__arena_take(a, D);
        }
        p->norm_w = am__arena_take(a, D);
        p->norm_b = am__arena_take(a, D);
        p->proj.b = c->has_proj_bias ? am__arena_take(a, c->out_dim) : NULL;
    } else if (c->type == AM_PROJ_MLP2X_GELU) {
        p->l1.b = am__arena_take(a, c->out_dim);
        p->l2.b = am__arena_take(a, c->out_dim);
    } else if (c->has_proj_bias) {
        p->l1.b = am__arena_take(a, (int64_t)c->out_dim * c->tokens_per_row);
    }
}

void am_proj_release(am_proj **p, am_backend *be) {
    if (!p || !*p) return;
    if ((*p)->vecs) be->ops->free(be, (*p)->vecs);
    am_free((*p)->layers);
    am_free(*p);
    *p = NULL;
}

int am_proj_upload(const am_proj *p, am_backend *be, am_proj **out) {
    *out = NULL;
    const am_proj_config *c = &p->cfg;
    am_proj *d = am_calloc(1, sizeof *d);
    if (!d || (c->type == AM_PROJ_PERCEIVER &&
               !(d->layers = am_calloc((size_t)c->depth, sizeof *d->layers)))) {
        am_free(d);
        return am_err_set(AM_ENOMEM, "projector: out of memory");
    }
    d->cfg = *c;
    if (be->host_memory) { /* the host views as they are; d->vecs stays NULL (not owned) */
        am_proj_layer *layers = d->layers;
        *d = *p;
        d->vecs = NULL;
        d->layers = layers;
        if (layers) memcpy(layers, p->layers, (size_t)c->depth * sizeof *layers);
        *out = d;
        return 0;
    }
    am__vec_arena a = {0};
    layout(d, &a);
    int rc = 0;
    if (a.used && !(d->vecs = be->ops->alloc(be, a.used * sizeof(float)))) {
        rc = am_err_set(AM_ENOMEM, "projector: cannot allocate %zu bytes of %s memory",
                        a.used * sizeof(float), be->name);
        goto fail;
    }
    if (a.used && (rc = be->ops->upload(be, d->vecs, p->vecs, a.used * sizeof(float)))) goto fail;
    a = (am__vec_arena){d->vecs, 0, 0};
    layout(d, &a);
    if (c->type == AM_PROJ_PERCEIVER) {
        for (int i = 0; i < c->depth; i++) {
            const am_proj_layer *S = &p->layers[i];
            am_proj_layer *L = &d->layers[i];
            const am_matrix *from[] = {&S->to_q, &S->to_kv, &S->to_out, &S->ff1, &S->ff2};
            am_matrix *to[] = {&L->to_q, &L->to_kv, &L->to_out, &L->ff1, &L->ff2};
            for (int k = 0; k < 5; k++)
                if ((rc = be->ops->upload_matrix(be, from[k], to[k]))) goto fail;
        }
        if ((rc = be->ops->upload_matrix(be, &p->proj.w, &d->proj.w))) goto fail;
    } else {
        if ((rc = be->ops->upload_matrix(be, &p->l1.w, &d->l1.w))) goto fail;
        if (c->type == AM_PROJ_MLP2X_GELU && (rc = be->ops->upload_matrix(be, &p->l2.w, &d->l2.w)))
            goto fail;
    }
    *out = d;
    return 0;
fail:
    am_proj_release(&d, be);
    return am_err_prefix(rc, "projector: weights to the %s backend", be->name);
}

/* First dimension of an optional tensor, or 0 when absent. */
static int64_t dim0(const am_ckpt *ck, const char *prefix, const char *name) {
    char nm[AM_CKPT_MAX_NAME_BYTES];
    snprintf(nm, sizeof nm, "%s%s", prefix, name);
    const am_ckpt_tensor *t = am_ckpt_find(ck, nm);
    return t ? t->shape[0] : 0;
}

int am_proj_load(const am_ckpt *ck, const char *prefix, const am_proj_config *cfg_in,
                 am_proj **out) {
    *out = NULL;
    am_proj_config cfg = *cfg_in;
    if (!prefix) prefix = "";
    if (cfg.type == AM_PROJ_PERCEIVER) {
        if (!cfg.max_frames) cfg.max_frames = (int32_t)dim0(ck, prefix, "perceiver.frame_embs");
        if (!cfg.max_media) cfg.max_media = (int32_t)dim0(ck, prefix, "perceiver.media_time_embs");
        if (!cfg.has_proj_bias) cfg.has_proj_bias = am__enc_has(ck, prefix, "proj.bias");
    } else {
        const char *b = cfg.type == AM_PROJ_LINEAR ? "bias" : "linear_1.bias";
        if (cfg.type == AM_PROJ_LINEAR && !cfg.has_proj_bias)
            cfg.has_proj_bias = am__enc_has(ck, prefix, b);
    }
    int rc = am_proj_config_check(&cfg);
    if (rc) return rc;
    am_proj *p = am_calloc(1, sizeof *p);
    if (!p || (cfg.type == AM_PROJ_PERCEIVER &&
               !(p->layers = am_calloc((size_t)cfg.depth, sizeof *p->layers)))) {
        am_free(p);
        return am_err_set(AM_ENOMEM, "projector: out of memory");
    }
    p->cfg = cfg;
    am__vec_arena a = {0};
    layout(p, &a);
    if (!(p->vecs = am_aligned_alloc((a.used + 16) * sizeof(float)))) {
        am_proj_destroy(&p);
        return am_err_set(AM_ENOMEM, "projector: cannot allocate vectors");
    }
    a = (am__vec_arena){p->vecs, 0, 0};
    layout(p, &a);
    const int64_t D = cfg.in_dim, O = cfg.out_dim, I = (int64_t)cfg.n_heads * cfg.head_dim,
                  FF = (int64_t)cfg.ff_mult * D;
    const int64_t sD[1] = {D}, sO[1] = {O};
    char nm[160];
    if (cfg.type == AM_PROJ_PERCEIVER) {
        const int64_t sLat[2] = {cfg.n_latents, D}, sFr[2] = {cfg.max_frames, D},
                      sMt[3] = {cfg.max_media, 1, D};
        const int64_t sQ[2] = {I, D}, sKV[2] = {2 * I, D}, sOut[2] = {D, I}, sF1[2] = {FF, D},
                      sF2[2] = {D, FF};
        const int64_t sP[2] = {O, D};
        if ((rc = am__enc_vec(ck, prefix, "perceiver.latents", 2, sLat, p->latents))) goto fail;
        if (p->frame_embs &&
            (rc = am__enc_vec(ck, prefix, "perceiver.frame_embs", 2, sFr, p->frame_embs)))
            goto fail;
        if (p->media_time &&
            (rc = am__enc_vec(ck, prefix, "perceiver.media_time_embs", 3, sMt, p->media_time)))
            goto fail;
        for (int i = 0; i < cfg.depth; i++) {
            am_proj_layer *L = &p->layers[i];
#define VEC(field, suffix)                                                                         \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "perceiver.layers.%d.%s", i, suffix);                              \
        if ((rc = am__enc_vec(ck, prefix, nm, 1, sD, field))) goto fail;                           \
    } while (0)
#define MAT(field, suffix, shape)                                                                  \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "perceiver.layers.%d.%s", i, suffix);                              \
        if ((rc = am__enc_matrix(ck, prefix, nm, 2, shape, &(field)))) goto fail;                  \
    } while (0)
            VEC(L->norm_media_w, "0.norm_media.weight");
            VEC(L->norm_media_b, "0.norm_media.bias");
            VEC(L->norm_latents_w, "0.norm_latents.weight");
            VEC(L->norm_latents_b, "0.norm_latents.bias");
            MAT(L->to_q, "0.to_q.weight", sQ);
            MAT(L->to_kv, "0.to_kv.weight", sKV);
            MAT(L->to_out, "0.to_out.weight", sOut);
            VEC(L->ff_ln_w, "1.0.weight");
            VEC(L->ff_ln_b, "1.0.bias");
            MAT(L->ff1, "1.1.weight", sF1);
            MAT(L->ff2, "1.3.weight", sF2);
#undef VEC
#undef MAT
        }
        if ((rc = am__enc_vec(ck, prefix, "perceiver.norm.weight", 1, sD, p->norm_w)) ||
            (rc = am__enc_vec(ck, prefix, "perceiver.norm.bias", 1, sD, p->norm_b)) ||
            (rc = am__enc_matrix(ck, prefix, "proj.weight", 2, sP, &p->proj.w)))
            goto fail;
        if (p->proj.b && (rc = am__enc_vec(ck, prefix, "proj.bias", 1, sO, (float *)p->proj.b)))
            goto fail;
    } else if (cfg.type == AM_PROJ_MLP2X_GELU) {
        const int64_t s1[2] = {O, D}, s2[2] = {O, O};
        if ((rc = am__enc_matrix(ck, prefix, "linear_1.weight", 2, s1, &p->l1.w)) ||
            (rc = am__enc_vec(ck, prefix, "linear_1.bias", 1, sO, (float *)p->l1.b)) ||
            (rc = am__enc_matrix(ck, prefix, "linear_2.weight", 2, s2, &p->l2.w)) ||
            (rc = am__enc_vec(ck, prefix, "linear_2.bias", 1, sO, (float *)p->l2.b)))
            goto fail;
    } else {
        const int64_t s1[2] = {O * cfg.tokens_per_row, D}, sb[1] = {O * cfg.tokens_per_row};
        if ((rc = am__enc_matrix(ck, prefix, "weight", 2, s1, &p->l1.w))) goto fail;
        if (p->l1.b && (rc = am__enc_vec(ck, prefix, "bias", 1, sb, (float *)p->l1.b))) goto fail;
    }
    *out = p;
    return 0;
fail:
    am_proj_destroy(&p);
    return rc;
}

int64_t am_proj_config_n_tokens(const am_proj_config *c, int32_t n_frames, int32_t n_patches) {
    switch (c->type) {
    case AM_PROJ_PERCEIVER: return c->n_latents;
    case AM_PROJ_MLP2X_GELU: return (int64_t)n_frames * n_patches;
    default: return (int64_t)n_frames * n_patches * c->tokens_per_row;
    }
}

int64_t am_proj_n_tokens(const am_proj *p, int32_t n_frames, int32_t n_patches) {
    return am_proj_config_n_tokens(&p->cfg, n_frames, n_patches);
}

double am_proj_flops(const am_proj *p, int32_t n_frames, int32_t n_patches) {
    const am_proj_config *c = &p->cfg;
    const double D = c->in_dim, O = c->out_dim, R = (double)n_frames * n_patches;
    if (c->type == AM_PROJ_MLP2X_GELU) return 2.0 * R * (D * O + O * O);
    if (c->type == AM_PROJ_LINEAR) return 2.0 * R * D * O * c->tokens_per_row;
    const double L = c->n_latents, I = (double)c->n_heads * c->head_dim,
                 FF = (double)c->ff_mult * D;
    const double per_layer = 2.0 * ((R + L) * D * 2 * I + L * D * I + L * I * D + 2 * L * D * FF) +
                             4.0 * L * (R + L) * I;
    return c->depth * per_layer + 2.0 * L * D * O;
}

/* GEMMs over the latents run per item (M = n_latents), see am_nn_matmul_rows. */
static int mm(am_nn *nn, const am_matrix *w, const float *x, float *y, int64_t m, int64_t chunk) {
    return am_nn_matmul_rows(nn, w, x, y, m, chunk);
}

static int perceiver_forward(const am_proj *p, am_nn *nn, const am_proj_item *items, int n) {
    const am_proj_config *c = &p->cfg;
    const int64_t D = c->in_dim, L = c->n_latents, I = (int64_t)c->n_heads * c->head_dim;
    const int64_t FF = (int64_t)c->ff_mult * D, NL = (int64_t)n * L;
    int64_t media_rows = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].n_frames <= 0 || items[i].n_patches <= 0)
            return am_err_set(AM_EINVAL, "projector: item %d has %d frames x %d patches", i,
                              items[i].n_frames, items[i].n_patches);
        if (p->frame_embs && items[i].n_frames > c->max_frames)
            return am_err_set(AM_ERANGE,
                              "projector: %d frames, but the resampler has frame embeddings for %d",
                              items[i].n_frames, c->max_frames);
        media_rows += (int64_t)items[i].n_frames * items[i].n_patches;
    }
    const int64_t kv_rows = media_rows + NL;
    /* One block for all buffers. */
    const size_t floats =
        (size_t)(media_rows * D + kv_rows * D + kv_rows * 2 * I + NL * (3 * D + 2 * I + FF)) + 256;
    am_backend *be = nn->be;
    float *buf = be->ops->alloc(be, floats * sizeof(float));
    if (!buf)
        return am_err_set(AM_ENOMEM, "projector: cannot allocate %zu bytes",
                          floats * sizeof(float));
    float *xs = buf;                   /* (media_rows, D) media + frame/time embeddings */
    float *kvin = xs + media_rows * D; /* (kv_rows, D) per item [LN(x_i); LN(lat_i)] */
    float *kv = kvin + kv_rows * D;    /* (kv_rows, 2I) k | v */
    float *lat = kv + kv_rows * 2 * I; /* (NL, D) */
    float *latn = lat + NL * D;        /* (NL, D) */
    float *tmp = latn + NL * D;        /* (NL, D) */
    float *q = tmp + NL * D;           /* (NL, I) */
    float *ao = q + NL * I;            /* (NL, I) */
    float *ffh = ao + NL * I;          /* (NL, FF) */
    int rc = 0;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        /* xs rows of frame f = (x + frame_embs[f]) + media_time[0], in that order. */
        const int64_t V = items[i].n_patches, rows = (int64_t)items[i].n_frames * V;
        float *dst = xs + off * D; /* (F*V, D) */
        be->ops->copy(be, dst, items[i].x, (size_t)(rows * D) * sizeof(float));
        for (int32_t f = 0; p->frame_embs && f < items[i].n_frames; f++)
            be->ops->bias_act(be, dst + (int64_t)f * V * D, p->frame_embs + (int64_t)f * D, V, D,
                              AM_ACT_NONE);
        if (p->media_time) be->ops->bias_act(be, dst, p->media_time, rows, D, AM_ACT_NONE);
        off += rows;
        be->ops->copy(be, lat + (int64_t)i * L * D, p->latents, (size_t)(L * D) * sizeof(float));
    }
    const float scale = 1.0f / sqrtf((float)c->head_dim);
    for (int l = 0; l < c->depth; l++) {
        const am_proj_layer *Ly = &p->layers[l];
        am_nn_layernorm(nn, latn, lat, Ly->norm_latents_w, Ly->norm_latents_b, NL, D, c->ln_eps);
        int64_t mo = 0, ko = 0;
        for (int i = 0; i < n; i++) {
            const int64_t Ni = (int64_t)items[i].n_frames * items[i].n_patches;
            am_nn_layernorm(nn, kvin + ko * D, xs + mo * D, Ly->norm_media_w, Ly->norm_media_b, Ni,
                            D, c->ln_eps);
            be->ops->copy(be, kvin + (ko + Ni) * D, latn + (int64_t)i * L * D,
                          (size_t)(L * D) * sizeof(float));
            mo += Ni;
            ko += Ni + L;
        }
        ko = 0;
        for (int i = 0; i < n; i++) {
            const int64_t tk = (int64_t)items[i].n_frames * items[i].n_patches + L;
            if ((rc = mm(nn, &Ly->to_kv, kvin + ko * D, kv + ko * 2 * I, tk, tk))) goto done;
            ko += tk;
        }
        if ((rc = mm(nn, &Ly->to_q, latn, q, NL, L))) goto done;
        ko = 0;
        for (int i = 0; i < n; i++) {
            const int64_t tk = (int64_t)items[i].n_frames * items[i].n_patches + L;
            const float *kb = kv + ko * 2 * I;
            if ((rc = am_nn_attention(nn, ao + (int64_t)i * L * I, I, q + (int64_t)i * L * I, I, kb,
                                      kb + I, 2 * I, 1, L, tk, c->n_heads, c->head_dim, scale)))
                goto done;
            ko += tk;
        }
        if ((rc = mm(nn, &Ly->to_out, ao, tmp, NL, L))) goto done;
        am_nn_residual(nn, lat, tmp, NULL, NL, D);
        am_nn_layernorm(nn, latn, lat, Ly->ff_ln_w, Ly->ff_ln_b, NL, D, c->ln_eps);
        if ((rc = mm(nn, &Ly->ff1, latn, ffh, NL, L))) goto done;
        am_nn_bias_act(nn, ffh, NULL, NL, FF, AM_ACT_GELU);
        if ((rc = mm(nn, &Ly->ff2, ffh, tmp, NL, L))) goto done;
        am_nn_residual(nn, lat, tmp, NULL, NL, D);
    }
    am_nn_layernorm(nn, latn, lat, p->norm_w, p->norm_b, NL, D, c->ln_eps);
    for (int i = 0; i < n; i++)
        if ((rc = am_nn_linear(nn, &p->proj, latn + (int64_t)i * L * D, items[i].out, L)))
            goto done;
done:
    be->ops->free(be, buf);
    return rc;
}

int am_proj_forward(const am_proj *p, am_nn *nn, const am_proj_item *items, int n) {
    if (n <= 0) return 0;
    if (p->cfg.type == AM_PROJ_PERCEIVER) return perceiver_forward(p, nn, items, n);
    for (int i = 0; i < n; i++) {
        const int64_t R = (int64_t)items[i].n_frames * items[i].n_patches;
        int rc;
        if (R <= 0) return am_err_set(AM_EINVAL, "projector: item %d is empty", i);
        if (p->cfg.type == AM_PROJ_LINEAR) {
            if ((rc = am_nn_linear(nn, &p->l1, items[i].x, items[i].out, R))) return rc;
            continue;
        }
        am_backend *be = nn->be;
        float *h = be->ops->alloc(be, (size_t)(R * p->cfg.out_dim) * sizeof(float)); /* (R, H) */
        if (!h) return am_err_set(AM_ENOMEM, "projector: out of memory");
        rc = am_nn_linear(nn, &p->l1, items[i].x, h, R);
        if (!rc) {
            am_nn_bias_act(nn, h, NULL, R, p->cfg.out_dim, AM_ACT_GELU);
            rc = am_nn_linear(nn, &p->l2, h, items[i].out, R);
        }
        be->ops->free(be, h);
        if (rc) return rc;
    }
    return 0;
}

int am_proj_linear_rows(const am_proj *p, am_nn *nn, const float *x, int64_t m,
                        float *const *outs) {
    if (p->cfg.type != AM_PROJ_LINEAR)
        return am_err_set(AM_EINVAL, "projector: %s is not a linear projector",
                          am_proj_type_name(p->cfg.type));
    am_backend *be = nn->be;
    const int64_t G = AM_PROJ_ROW_GROUP, D = p->cfg.in_dim,
                  N = (int64_t)p->cfg.out_dim * p->cfg.tokens_per_row;
    float *xg = am_aligned_alloc((size_t)(G * D) * sizeof(float)); /* (G, D) */
    float *yg = am_aligned_alloc((size_t)(G * N) * sizeof(float)); /* (G, N) */
    /* On a device the group goes up and its rows come down; on the host these are xg, yg. */
    float *dx = be->host_memory ? xg : be->ops->alloc(be, (size_t)(G * D) * sizeof(float));
    float *dy = be->host_memory ? yg : be->ops->alloc(be, (size_t)(G * N) * sizeof(float));
    int rc = 0;
    if (!xg || !yg || !dx || !dy) rc = am_err_set(AM_ENOMEM, "projector: out of memory");
    for (int64_t r0 = 0; !rc && r0 < m; r0 += G) {
        const int64_t ng = m - r0 < G ? m - r0 : G;
        memcpy(xg, x + r0 * D, (size_t)(ng * D) * sizeof(float));
        memset(xg + ng * D, 0, (size_t)((G - ng) * D) * sizeof(float));
        if (dx != xg && (rc = be->ops->upload(be, dx, xg, (size_t)(G * D) * sizeof(float)))) break;
        if ((rc = am_nn_linear(nn, &p->l1, dx, dy, G))) break;
        if (dy != yg && (rc = be->ops->download(be, yg, dy, (size_t)(ng * N) * sizeof(float))))
            break;
        for (int64_t r = 0; r < ng; r++)
            memcpy(outs[r0 + r], yg + r * N, (size_t)N * sizeof(float));
    }
    if (dx != xg) be->ops->free(be, dx);
    if (dy != yg) be->ops->free(be, dy);
    am_aligned_free(xg);
    am_aligned_free(yg);
    return rc;
}

int am_proj_pooled(const am_proj *p, am_nn *nn, const float *x, const int32_t *n_rows, int n,
                   float *const *outs) {
    am_backend *be = nn->be;
    const int64_t D = p->cfg.in_dim, O = p->cfg.out_dim;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += n_rows[i];
    int rc = 0;
    if (p->cfg.type == AM_PROJ_LINEAR) { /* every row on its own, in groups of 4 */
        const int64_t row = (int64_t)p->cfg.tokens_per_row * O;
        float **ro = am_malloc((size_t)(total > 0 ? total : 1) * sizeof *ro);
        if (!ro) return am_err_set(AM_ENOMEM, "projector: out of memory");
        for (int i = 0, k = 0; i < n; i++)
            for (int32_t w = 0; w < n_rows[i]; w++)
                ro[k++] = outs[i] + w * row;
        rc = am_proj_linear_rows(p, nn, x, total, ro);
        am_free(ro);
        return rc;
    }
    /* Other projectors: one call per item (M = its rows), the same bits in any batch; on a
     * device its rows go up and its tokens come down. */
    int64_t off = 0;
    for (int i = 0; !rc && i < n; i++) {
        const int64_t nt = am_proj_n_tokens(p, n_rows[i], 1);
        float *dx = (float *)(x + off * D), *dy = outs[i];
        if (!be->host_memory) {
            dx = be->ops->alloc(be, (size_t)(n_rows[i] * D) * sizeof(float));
            dy = be->ops->alloc(be, (size_t)(nt * O) * sizeof(float));
            if (!dx || !dy) rc = am_err_set(AM_ENOMEM, "projector: out of %s memory", be->name);
            if (!rc)
                rc = be->ops->upload(be, dx, x + off * D, (size_t)(n_rows[i] * D) * sizeof(float));
        }
        const am_proj_item pi = {dx, n_rows[i], 1, dy};
        if (!rc) rc = am_proj_forward(p, nn, &pi, 1);
        if (!rc && dy != outs[i])
            rc = be->ops->download(be, outs[i], dy, (size_t)(nt * O) * sizeof(float));
        if (!be->host_memory) {
            be->ops->free(be, dx);
            be->ops->free(be, dy);
        }
        off += n_rows[i];
    }
    return rc;
}
