/* encoders/htsat.c - loading and running CLAP's HTSAT audio encoder and its projection. */
#include "encoders/htsat.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Swin's cyclic-shift mask value (HF get_attn_mask). */
#define AM_HTSAT_MASK_VALUE (-100.0f)
/* BatchNorm2d's default eps (HF does not configure it). */
#define AM_HTSAT_BN_EPS 1e-5f
/* nn.LayerNorm's default eps: patch_embed.norm, downsample.norm, the final norm. */
#define AM_HTSAT_LN_DEFAULT_EPS 1e-5f

static const struct {
    const char *name;
    am_htsat_config cfg;
} shapes[] = {
    {"htsat-tiny",
     {256,
      64,
      4,
      96,
      4,
      {2, 2, 6, 2},
      {4, 8, 16, 32},
      8,
      4.0f,
      1e-5f,
      AM_ACT_GELU,
      1,
      512,
      AM_ACT_RELU}},
    {"htsat-base",
     {256,
      64,
      4,
      128,
      4,
      {2, 2, 12, 2},
      {4, 8, 16, 32},
      8,
      4.0f,
      1e-5f,
      AM_ACT_GELU,
      1,
      512,
      AM_ACT_RELU}},
    {"tiny",
     {256,
      64,
      4,
      16,
      4,
      {2, 2, 2, 2},
      {1, 2, 4, 8},
      8,
      4.0f,
      1e-5f,
      AM_ACT_GELU,
      1,
      64,
      AM_ACT_RELU}},
};

const char *am_htsat_shape_names(void) { return "htsat-tiny, htsat-base, tiny"; }

int am_htsat_shape(const char *name, am_htsat_config *out) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcasecmp(name, shapes[i].name)) {
            *out = shapes[i].cfg;
            return 0;
        }
    return am_err_set(AM_EINVAL, "unknown audio shape '%s' (known: %s)", name,
                      am_htsat_shape_names());
}

static int32_t mlp_dim(const am_htsat_config *c, int stage) {
    return (int32_t)(c->mlp_ratio * (float)am_htsat_width(c, stage)); /* HF: int(ratio * dim) */
}

int am_htsat_config_check(const am_htsat_config *c) {
    if (c->spec_size <= 0 || c->spec_size > 4096 || c->n_mels <= 0 || c->spec_size % c->n_mels)
        return am_err_set(AM_EINVAL,
                          "audio config: spec_size %d is not a positive multiple of "
                          "num_mel_bins %d (at most 4096)",
                          c->spec_size, c->n_mels);
    if (c->patch_size <= 0 || c->spec_size % c->patch_size)
        return am_err_set(AM_EINVAL, "audio config: patch_size %d does not divide spec_size %d",
                          c->patch_size, c->spec_size);
    if (c->n_stages < 1 || c->n_stages > AM_HTSAT_MAX_STAGES)
        return am_err_set(AM_EINVAL, "audio config: %d stages (depths), want 1 to %d", c->n_stages,
                          AM_HTSAT_MAX_STAGES);
    if (c->embed_dim <= 0 || (int64_t)c->embed_dim << (c->n_stages - 1) > 65536)
        return am_err_set(AM_EINVAL, "audio config: patch_embeds_hidden_size %d (x 2^%d) too large",
                          c->embed_dim, c->n_stages - 1);
    if (c->window <= 0 || c->window > 64)
        return am_err_set(AM_EINVAL, "audio config: window_size %d not in [1, 64]", c->window);
    if (!(c->mlp_ratio > 0 && c->mlp_ratio <= 16))
        return am_err_set(AM_EINVAL, "audio config: mlp_ratio %g not in (0, 16]",
                          (double)c->mlp_ratio);
    if (!(c->ln_eps > 0 && c->ln_eps < 1))
        return am_err_set(AM_EINVAL, "audio config: layer_norm_eps %g", (double)c->ln_eps);
    if (c->proj_dim <= 0 || c->proj_dim > 65536)
        return am_err_set(AM_EINVAL, "audio config: projection_dim %d not in [1, 65536]",
                          c->proj_dim);
    const int32_t G = c->spec_size / c->patch_size;
    for (int i = 0; i < c->n_stages; i++) {
        const int32_t R = G >> i, C = am_htsat_width(c, i);
        if ((R << i) != G || (i < c->n_stages - 1 && R % 2))
            return am_err_set(AM_EINVAL,
                              "audio config: the %d x %d patch grid cannot be halved %d times", G,
                              G, c->n_stages - 1);
        if (R < c->window || R % c->window)
            return am_err_set(AM_EINVAL,
                              "audio config: stage %d grid %d x %d is not a multiple of "
                              "window_size %d",
                              i, R, R, c->window);
        if (c->depths[i] < 1 || c->depths[i] > AM_HTSAT_MAX_DEPTH)
            return am_err_set(AM_EINVAL, "audio config: depths[%d] = %d not in [1, %d]", i,
                              c->depths[i], AM_HTSAT_MAX_DEPTH);
        if (c->n_heads[i] < 1 || C % c->n_heads[i])
            return am_err_set(AM_EINVAL,
                              "audio config: num_attention_heads[%d] = %d does not divide the "
                              "stage width %d",
                              i, c->n_heads[i], C);
        if (mlp_dim(c, i) < 1)
            return am_err_set(AM_EINVAL, "audio config: mlp_ratio %g gives no hidden units",
                              (double)c->mlp_ratio);
    }
    return 0;
}

double am_htsat_flops(const am_htsat_config *c) {
    const double G = c->spec_size / c->patch_size, w2 = (double)c->window * c->window;
    double f = 2.0 * G * G * c->embed_dim * c->patch_size * c->patch_size;
    for (int i = 0; i < c->n_stages; i++) {
        const double L = (G / (1 << i)) * (G / (1 << i)), C = am_htsat_width(c, i),
                     F = mlp_dim(c, i);
        f += c->depths[i] * (2.0 * L * (4 * C * C + 2 * C * F) + 4.0 * L * w2 * C);
        if (i < c->n_stages - 1) f += 2.0 * (L / 4) * (4 * C) * (2 * C);
    }
    const double CL = am_htsat_out_width(c), P = c->proj_dim;
    return f + 2.0 * (CL * P + P * P);
}

void am_htsat_destroy(am_htsat **p) {
    if (!p || !*p) return;
    am_htsat *m = *p;
    for (int i = 0; i < AM_HTSAT_MAX_STAGES; i++)
        am_free(m->stages[i].blocks);
    am_aligned_free(m->vecs);
    am_free(m->idx);
    am_free(m);
    *p = NULL;
}

static int stage_shifts(const am_htsat_config *c, int stage) {
    return c->depths[stage] > 1 && (c->spec_size / c->patch_size >> stage) > c->window;
}

/* Takes every vector from the arena in a fixed order; with a NULL base it only counts. */
static void layout(am_htsat *m, am__vec_arena *a) {
    const am_htsat_config *c = &m->cfg;
    const int64_t M = c->n_mels, C0 = c->embed_dim, CL = am_htsat_out_width(c), P = c->proj_dim;
    const int64_t w2 = (int64_t)c->window * c->window, G = c->spec_size / c->patch_size;
    m->bn_w = am__arena_take(a, M);
    m->bn_b = am__arena_take(a, M);
    m->bn_mean = am__arena_take(a, M);
    m->bn_var = am__arena_take(a, M);
    m->bn_alpha = am__arena_take(a, M);
    m->bn_beta = am__arena_take(a, M);
    m->patch_b = am__arena_take(a, C0);
    m->patch_ln_w = c->patch_norm ? am__arena_take(a, C0) : NULL;
    m->patch_ln_b = c->patch_norm ? am__arena_take(a, C0) : NULL;
    for (int i = 0; i < c->n_stages; i++) {
        am_htsat_stage *s = &m->stages[i];
        const int64_t C = am_htsat_width(c, i), F = mlp_dim(c, i), R = G >> i;
        for (int j = 0; j < c->depths[i]; j++) {
            am_htsat_block *B = &s->blocks[j];
            B->ln1_w = am__arena_take(a, C);
            B->ln1_b = am__arena_take(a, C);
            B->q.b = am__arena_take(a, C);
            B->k.b = am__arena_take(a, C);
            B->v.b = am__arena_take(a, C);
            B->o.b = am__arena_take(a, C);
            B->ln2_w = am__arena_take(a, C);
            B->ln2_b = am__arena_take(a, C);
            B->fc1.b = am__arena_take(a, F);
            B->fc2.b = am__arena_take(a, C);
            B->rel_bias = am__arena_take(a, c->n_heads[i] * w2 * w2);
        }
        s->mask = stage_shifts(c, i)
                      ? am__arena_take(a, (R / c->window) * (R / c->window) * w2 * w2)
                      : NULL;
        s->merge_ln_w = i < c->n_stages - 1 ? am__arena_take(a, 4 * C) : NULL;
        s->merge_ln_b = i < c->n_stages - 1 ? am__arena_take(a, 4 * C) : NULL;
    }
    m->norm_w = am__arena_take(a, CL);
    m->norm_b = am__arena_take(a, CL);
    m->proj1.b = am__arena_take(a, P);
    m->proj2.b = am__arena_take(a, P);
}

/* Window order -> grid row: window n = (wy, wx), position (ay, ax) is the
 * shifted cell (wy*w + ay, wx*w + ax), i.e. grid cell ((i + s) % R, (j + s) % R)
 * (torch.roll by -s before the partition, +s after). */
static void make_perm(int32_t *perm, int32_t R, int32_t w, int32_t s) {
    const int32_t nw = R / w;
    int32_t r = 0;
    for (int32_t wy = 0; wy < nw; wy++)
        for (int32_t wx = 0; wx < nw; wx++)
            for (int32_t ay = 0; ay < w; ay++)
                for (int32_t ax = 0; ax < w; ax++) {
                    const int32_t i = (wy * w + ay + s) % R, j = (wx * w + ax + s) % R;
                    perm[r++] = i * R + j;
                }
}

/* PatchMerging's gather: merged cell (y, x) of the R/2 grid takes rows
 * [(2y, 2x), (2y+1, 2x), (2y, 2x+1), (2y+1, 2x+1)], as rows r*4 + q of C floats. */
static void make_merge_perm(int32_t *perm, int32_t R) {
    const int32_t R2 = R / 2;
    for (int32_t y = 0; y < R2; y++)
        for (int32_t x = 0; x < R2; x++)
            for (int32_t q = 0; q < 4; q++)
                perm[(y * R2 + x) * 4 + q] = (2 * y + (q & 1)) * R + 2 * x + (q >> 1);
}

/* HF get_attn_mask: cells of the shifted grid fall in 3 x 3 regions; pairs in
 * different regions get -100. mask (nW, w*w, w*w). */
static void make_mask(float *mask, int32_t R, int32_t w, int32_t s) {
    const int32_t nw = R / w, w2 = w * w;
    for (int32_t wy = 0; wy < nw; wy++)
        for (int32_t wx = 0; wx < nw; wx++) {
            float *mk = mask + ((int64_t)wy * nw + wx) * w2 * w2;
            for (int32_t a = 0; a < w2; a++)
                for (int32_t b = 0; b < w2; b++) {
                    const int32_t ya = wy * w + a / w, xa = wx * w + a % w;
                    const int32_t yb = wy * w + b / w, xb = wx * w + b % w;
                    const int ra =
                        ((ya >= R - w) + (ya >= R - s)) * 3 + (xa >= R - w) + (xa >= R - s);
                    const int rb =
                        ((yb >= R - w) + (yb >= R - s)) * 3 + (xb >= R - w) + (xb >= R - s);
                    mk[(int64_t)a * w2 + b] = ra == rb ? 0.0f : AM_HTSAT_MASK_VALUE;
                }
        }
}

/* bias (H, w*w, w*w) from table ((2w-1)^2, H): offset (dy, dx) of query a to key b. */
static void gather_rel_bias(float *bias, const float *table, int32_t w, int32_t H) {
    const int32_t w2 = w * w, span = 2 * w - 1;
    for (int32_t h = 0; h < H; h++)
        for (int32_t a = 0; a < w2; a++)
            for (int32_t b = 0; b < w2; b++) {
                const int32_t dy = a / w - b / w + w - 1, dx = a % w - b % w + w - 1;
                bias[((int64_t)h * w2 + a) * w2 + b] = table[(int64_t)(dy * span + dx) * H + h];
            }
}

int am_htsat_load(const am_ckpt *ck, const char *enc_prefix, const am_ckpt *proj_ck,
                  const char *proj_prefix, const am_htsat_config *cfg, am_htsat **out) {
    *out = NULL;
    int rc = am_htsat_config_check(cfg);
    if (rc) return rc;
    if (!enc_prefix) enc_prefix = "";
    if (!proj_prefix) proj_prefix = "";
    am_htsat *m = am_calloc(1, sizeof *m);
    if (!m) return am_err_set(AM_ENOMEM, "audio encoder: out of memory");
    m->cfg = *cfg;
    const int32_t w = cfg->window, G = cfg->spec_size / cfg->patch_size;
    size_t n_idx = 0;
    for (int i = 0; i < cfg->n_stages; i++) {
        if (!(m->stages[i].blocks = am_calloc((size_t)cfg->depths[i], sizeof(am_htsat_block)))) {
            am_htsat_destroy(&m);
            return am_err_set(AM_ENOMEM, "audio encoder: out of memory");
        }
        n_idx += 3 * (size_t)(G >> i) * (size_t)(G >> i);
    }
    am__vec_arena a = {0};
    layout(m, &a);
    m->vecs = am_aligned_alloc(a.used * sizeof(float));
    m->idx = am_malloc(n_idx * sizeof(int32_t));
    m->n_idx = n_idx;
    const int64_t span2 = (int64_t)(2 * w - 1) * (2 * w - 1);
    int32_t max_heads = 1;
    for (int i = 0; i < cfg->n_stages; i++)
        max_heads = cfg->n_heads[i] > max_heads ? cfg->n_heads[i] : max_heads;
    float *table = am_malloc((size_t)(span2 * max_heads) * sizeof(float)); /* ((2w-1)^2, H) */
    if (!m->vecs || !m->idx || !table) {
        am_free(table);
        am_htsat_destroy(&m);
        return am_err_set(AM_ENOMEM, "audio encoder: cannot allocate %zu floats of vectors",
                          a.used);
    }
    a = (am__vec_arena){m->vecs, 0, 0};
    layout(m, &a);
    const int64_t M = cfg->n_mels, C0 = cfg->embed_dim, p = cfg->patch_size,
                  CL = am_htsat_out_width(cfg), P = cfg->proj_dim;
    const int64_t sM[1] = {M}, sC0[1] = {C0}, sConv[4] = {C0, 1, p, p}, sCL[1] = {CL}, sP[1] = {P},
                  sP1[2] = {P, CL}, sP2[2] = {P, P};
    if ((rc = am__enc_vec(ck, enc_prefix, "batch_norm.weight", 1, sM, m->bn_w)) ||
        (rc = am__enc_vec(ck, enc_prefix, "batch_norm.bias", 1, sM, m->bn_b)) ||
        (rc = am__enc_vec(ck, enc_prefix, "batch_norm.running_mean", 1, sM, m->bn_mean)) ||
        (rc = am__enc_vec(ck, enc_prefix, "batch_norm.running_var", 1, sM, m->bn_var)))
        goto fail;
    for (int64_t f = 0; f < M; f++) {
        if (!(m->bn_var[f] >= 0.0f) || !isfinite(m->bn_var[f]) || !isfinite(m->bn_mean[f])) {
            char nm[AM_CKPT_MAX_NAME_BYTES];
            snprintf(nm, sizeof nm, "%sbatch_norm.running_var", enc_prefix);
            const am_ckpt_tensor *t = am_ckpt_find(ck, nm);
            rc = am_err_set(AM_EFORMAT,
                            "%s: tensors '%sbatch_norm.running_{mean,var}': bin %lld is negative "
                            "or not finite",
                            t ? t->file : "audio weights", enc_prefix, (long long)f);
            goto fail;
        }
        /* PyTorch's eval BatchNorm: alpha = w / sqrt(var + eps), beta = b - mean * alpha,
         * y = x * alpha + beta, all in f32. */
        const float invstd = 1.0f / sqrtf(m->bn_var[f] + AM_HTSAT_BN_EPS);
        m->bn_alpha[f] = invstd * m->bn_w[f];
        m->bn_beta[f] = m->bn_b[f] - m->bn_mean[f] * m->bn_alpha[f];
    }
    if ((rc = am__enc_matrix(ck, enc_prefix, "patch_embed.proj.weight", 4, sConv, &m->patch)) ||
        (rc = am__enc_vec(ck, enc_prefix, "patch_embed.proj.bias", 1, sC0, m->patch_b)))
        goto fail;
    if (cfg->patch_norm &&
        ((rc = am__enc_vec(ck, enc_prefix, "patch_embed.norm.weight", 1, sC0, m->patch_ln_w)) ||
         (rc = am__enc_vec(ck, enc_prefix, "patch_embed.norm.bias", 1, sC0, m->patch_ln_b))))
        goto fail;
    int32_t *idx = m->idx;
    for (int i = 0; i < cfg->n_stages; i++) {
        am_htsat_stage *s = &m->stages[i];
        const int64_t C = am_htsat_width(cfg, i), F = mlp_dim(cfg, i), H = cfg->n_heads[i];
        const int32_t R = G >> i;
        s->dim = (int32_t)C, s->res = R, s->n_heads = (int32_t)H;
        s->perm0 = idx, idx += (size_t)R * R;
        s->perm_shift = idx, idx += (size_t)R * R;
        s->perm_merge = idx, idx += (size_t)R * R;
        make_perm(s->perm0, R, w, 0);
        make_merge_perm(s->perm_merge, R);
        make_perm(s->perm_shift, R, w, R > w ? w / 2 : 0);
        if (s->mask) make_mask(s->mask, R, w, w / 2);
        const int64_t sC[1] = {C}, sF[1] = {F}, sCC[2] = {C, C}, sFC[2] = {F, C}, sCF[2] = {C, F},
                      sT[2] = {span2, H};
        char nm[160];
        for (int j = 0; j < cfg->depths[i]; j++) {
            am_htsat_block *B = &s->blocks[j];
            /* HF: odd blocks shift by w/2 unless the grid is a single window. */
            B->shift = (j % 2 == 1 && R > w) ? w / 2 : 0;
#define VEC(field, suffix, shape)                                                                  \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "layers.%d.blocks.%d.%s", i, j, suffix);                           \
        if ((rc = am__enc_vec(ck, enc_prefix, nm, 1, shape, (float *)(field)))) goto fail;         \
    } while (0)
#define MAT(field, suffix, shape)                                                                  \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "layers.%d.blocks.%d.%s", i, j, suffix);                           \
        if ((rc = am__enc_matrix(ck, enc_prefix, nm, 2, shape, &(field)))) goto fail;              \
    } while (0)
            VEC(B->ln1_w, "layernorm_before.weight", sC);
            VEC(B->ln1_b, "layernorm_before.bias", sC);
            MAT(B->q.w, "attention.self.query.weight", sCC);
            VEC(B->q.b, "attention.self.query.bias", sC);
            MAT(B->k.w, "attention.self.key.weight", sCC);
            VEC(B->k.b, "attention.self.key.bias", sC);
            MAT(B->v.w, "attention.self.value.weight", sCC);
            VEC(B->v.b, "attention.self.value.bias", sC);
            MAT(B->o.w, "attention.output.dense.weight", sCC);
            VEC(B->o.b, "attention.output.dense.bias", sC);
            VEC(B->ln2_w, "layernorm_after.weight", sC);
            VEC(B->ln2_b, "layernorm_after.bias", sC);
            MAT(B->fc1.w, "intermediate.dense.weight", sFC);
            VEC(B->fc1.b, "intermediate.dense.bias", sF);
            MAT(B->fc2.w, "output.dense.weight", sCF);
            VEC(B->fc2.b, "output.dense.bias", sC);
#undef VEC
#undef MAT
            snprintf(nm, sizeof nm,
                     "layers.%d.blocks.%d.attention.self.relative_position_bias_table", i, j);
            if ((rc = am__enc_vec(ck, enc_prefix, nm, 2, sT, table))) goto fail;
            gather_rel_bias(B->rel_bias, table, w, (int32_t)H);
        }
        if (i < cfg->n_stages - 1) {
            const int64_t s4[1] = {4 * C}, sR[2] = {2 * C, 4 * C};
            snprintf(nm, sizeof nm, "layers.%d.downsample.norm.weight", i);
            if ((rc = am__enc_vec(ck, enc_prefix, nm, 1, s4, s->merge_ln_w))) goto fail;
            snprintf(nm, sizeof nm, "layers.%d.downsample.norm.bias", i);
            if ((rc = am__enc_vec(ck, enc_prefix, nm, 1, s4, s->merge_ln_b))) goto fail;
            snprintf(nm, sizeof nm, "layers.%d.downsample.reduction.weight", i);
            if ((rc = am__enc_matrix(ck, enc_prefix, nm, 2, sR, &s->merge))) goto fail;
        }
    }
    if ((rc = am__enc_vec(ck, enc_prefix, "norm.weight", 1, sCL, m->norm_w)) ||
        (rc = am__enc_vec(ck, enc_prefix, "norm.bias", 1, sCL, m->norm_b)) ||
        (rc = am__enc_matrix(proj_ck, proj_prefix, "linear1.weight", 2, sP1, &m->proj1.w)) ||
        (rc = am__enc_vec(proj_ck, proj_prefix, "linear1.bias", 1, sP, (float *)m->proj1.b)) ||
        (rc = am__enc_matrix(proj_ck, proj_prefix, "linear2.weight", 2, sP2, &m->proj2.w)) ||
        (rc = am__enc_vec(proj_ck, proj_prefix, "linear2.bias", 1, sP, (float *)m->proj2.b)))
        goto fail;
    am_free(table);
    *out = m;
    return 0;
fail:
    am_free(table);
    am_htsat_destroy(&m);
    return rc;
}

/* PyTorch's cubic convolution coefficients (A = -0.75) for fraction t, in f32. */
static void cubic_coeffs(float t, float c[4]) {
    const float A = -0.75f;
    float x = t + 1.0f;
    c[0] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
    x = t;
    c[1] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 1.0f - t;
    c[2] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 2.0f - t;
    c[3] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
}

int am_htsat_prepare(const am_htsat *m, const float *mel, int64_t t, float *img) {
    const am_htsat_config *c = &m->cfg;
    const int64_t M = c->n_mels, S = c->spec_size, r = S / M, W = S * r;
    if (t < 1 || t > W)
        return am_err_set(AM_ERANGE, "audio encoder: %lld log-mel frames, want 1 to %lld",
                          (long long)t, (long long)W);
    float *bn = am_malloc((size_t)(t * M) * sizeof(float));  /* (T, M) */
    float *res = am_malloc((size_t)(W * M) * sizeof(float)); /* (W, M) */
    if (!bn || !res) {
        am_free(bn);
        am_free(res);
        return am_err_set(AM_ENOMEM, "audio encoder: out of memory");
    }
    for (int64_t i = 0; i < t; i++)
        for (int64_t f = 0; f < M; f++)
            bn[i * M + f] = mel[i * M + f] * m->bn_alpha[f] + m->bn_beta[f];
    if (t == W) {
        memcpy(res, bn, (size_t)(W * M) * sizeof(float));
    } else {
        /* upsample_bicubic2d, align_corners=True: source = scale * dst in f32. */
        const float scale = W > 1 ? (float)(t - 1) / (float)(W - 1) : 0.0f;
        for (int64_t o = 0; o < W; o++) {
            const float real = scale * (float)o;
            const int64_t i0 = (int64_t)floorf(real);
            float cf[4];
            cubic_coeffs(real - (float)i0, cf);
            int64_t ix[4];
            for (int k = 0; k < 4; k++) {
                int64_t q = i0 - 1 + k;
                ix[k] = q < 0 ? 0 : q > t - 1 ? t - 1 : q;
            }
            for (int64_t f = 0; f < M; f++)
                res[o * M + f] = cf[0] * bn[ix[0] * M + f] + cf[1] * bn[ix[1] * M + f] +
                                 cf[2] * bn[ix[2] * M + f] + cf[3] * bn[ix[3] * M + f];
        }
    }
    /* Fold: image row k*M + f, column j = frame k*S + j, bin f. */
    for (int64_t k = 0; k < r; k++)
        for (int64_t f = 0; f < M; f++)
            for (int64_t j = 0; j < S; j++)
                img[(k * M + f) * S + j] = res[(k * S + j) * M + f];
    am_free(bn);
    am_free(res);
    return 0;
}

void am_htsat_release(am_htsat **p, am_backend *be) {
    if (!p || !*p) return;
    am_htsat *d = *p;
    for (int i = 0; i < AM_HTSAT_MAX_STAGES; i++)
        am_free(d->stages[i].blocks);
    if (d->vecs) be->ops->free(be, d->vecs);
    if (d->idx) be->ops->free(be, d->idx);
    am_free(d);
    *p = NULL;
}

int am_htsat_upload(const am_htsat *m, am_backend *be, am_htsat **out) {
    *out = NULL;
    const am_htsat_config *c = &m->cfg;
    am_htsat *d = am_calloc(1, sizeof *d);
    int rc = 0;
    if (!d) return am_err_set(AM_ENOMEM, "audio encoder: out of memory");
    *d = *m; /* views and sizes; the blocks, vectors and permutations are replaced below */
    d->vecs = NULL, d->idx = NULL;
    for (int i = 0; i < AM_HTSAT_MAX_STAGES; i++)
        d->stages[i].blocks = NULL;
    for (int i = 0; i < c->n_stages; i++) {
        if (!(d->stages[i].blocks = am_malloc((size_t)c->depths[i] * sizeof(am_htsat_block)))) {
            am_htsat_release(&d, be);
            return am_err_set(AM_ENOMEM, "audio encoder: out of memory");
        }
        memcpy(d->stages[i].blocks, m->stages[i].blocks,
               (size_t)c->depths[i] * sizeof(am_htsat_block));
    }
    if (be->host_memory) { /* the host views as they are; vecs and idx stay NULL (not owned) */
        *out = d;
        return 0;
    }
    am__vec_arena a = {0};
    layout(d, &a);
    const am_matrix *from[] = {&m->patch, &m->proj1.w, &m->proj2.w};
    am_matrix *const to[] = {&d->patch, &d->proj1.w, &d->proj2.w};
    if ((rc = am__enc_upload(be, m->vecs, a.used * sizeof(float), (void **)&d->vecs)) ||
        (rc = am__enc_upload(be, m->idx, m->n_idx * sizeof(int32_t), (void **)&d->idx)) ||
        (rc = am__enc_upload_matrices(be, from, to, 3)))
        goto fail;
    a = (am__vec_arena){d->vecs, 0, 0};
    layout(d, &a);
    for (int i = 0; i < c->n_stages; i++) {
        const am_htsat_stage *S = &m->stages[i];
        am_htsat_stage *T = &d->stages[i];
        T->perm0 = d->idx + (S->perm0 - m->idx);
        T->perm_shift = d->idx + (S->perm_shift - m->idx);
        T->perm_merge = d->idx + (S->perm_merge - m->idx);
        if (i < c->n_stages - 1 && (rc = be->ops->upload_matrix(be, &S->merge, &T->merge)))
            goto fail;
        for (int j = 0; j < c->depths[i]; j++) {
            const am_htsat_block *F = &S->blocks[j];
            am_htsat_block *B = &T->blocks[j];
            const am_matrix *bf[] = {&F->q.w, &F->k.w, &F->v.w, &F->o.w, &F->fc1.w, &F->fc2.w};
            am_matrix *const bt[] = {&B->q.w, &B->k.w, &B->v.w, &B->o.w, &B->fc1.w, &B->fc2.w};
            if ((rc = am__enc_upload_matrices(be, bf, bt, 6))) goto fail;
        }
    }
    *out = d;
    return 0;
fail:
    am_htsat_release(&d, be);
    return am_err_prefix(rc, "audio encoder: weights to the %s backend", be->name);
}

/* Floats of the largest per-clip activation among the stages: max L*C and L*F. */
static void act_sizes(const am_htsat_config *c, int64_t *lc, int64_t *lf) {
    const int64_t G = c->spec_size / c->patch_size;
    *lc = 0, *lf = G * G * c->patch_size * c->patch_size; /* im2col */
    for (int i = 0; i < c->n_stages; i++) {
        const int64_t L = (G >> i) * (G >> i);
        *lc = L * am_htsat_width(c, i) > *lc ? L * am_htsat_width(c, i) : *lc;
        *lf = L * mlp_dim(c, i) > *lf ? L * mlp_dim(c, i) : *lf;
    }
}

size_t am_htsat_scratch_floats(const am_htsat_config *c, int64_t b) {
    int64_t lc, lf;
    act_sizes(c, &lc, &lf);
    /* x, h, win, q, k, v, att, tmp, merge: 9 x (L, C); the MLP hidden (L, F);
     * pooled/projection rows. */
    return (size_t)b * (size_t)(9 * lc + lf + 2 * (am_htsat_out_width(c) + c->proj_dim) + 64) + 64;
}

int am_htsat_forward(const am_htsat *m, am_nn *nn, const float *img, int64_t b, float *pooled,
                     float *embeds, float *scratch) {
    const am_htsat_config *c = &m->cfg;
    const int64_t S = c->spec_size, p = c->patch_size, G = S / p, L0 = G * G;
    const int64_t w = c->window, w2 = w * w;
    int64_t lc, lf;
    act_sizes(c, &lc, &lf);
    float *x = scratch;      /* (B, L, C) residual stream */
    float *h = x + b * lc;   /* (B, L, C) normed */
    float *win = h + b * lc; /* (B, L, C) normed, window order */
    float *q = win + b * lc; /* (B, L, C) */
    float *k = q + b * lc;
    float *v = k + b * lc;
    float *att = v + b * lc;   /* (B, L, C) attention output, window order */
    float *tmp = att + b * lc; /* (B, L, C) branch output */
    float *mrg = tmp + b * lc; /* (B, L/4, 4C) merged neighbours */
    float *f = mrg + b * lc;   /* (B, L, F) MLP hidden; first the im2col (B, L0, p*p) */
    float *pool = f + b * lf;  /* (B, C_last) */
    float *ph = pool + b * am_htsat_out_width(c); /* (B, P) */
    int rc;
    /* 3. patch embedding: im2col on the host, then up (f itself on the CPU) */
    am_backend *be = nn->be;
    if (be->host_memory) {
        am_nn_patchify(nn, img, f, b, 1, (int)S, (int)p);
    } else {
        float *cols = am_nn_host_scratch(nn, (size_t)(b * L0 * p * p));
        if (!cols) return am_err_set(AM_ENOMEM, "audio encoder: out of memory for the patches");
        am_nn_patchify(nn, img, cols, b, 1, (int)S, (int)p);
        if ((rc = be->ops->upload(be, f, cols, (size_t)(b * L0 * p * p) * sizeof(float))))
            return rc;
    }
    if ((rc = am_nn_matmul_rows(nn, &m->patch, f, x, b * L0, L0))) return rc;
    am_nn_bias_act(nn, x, m->patch_b, b * L0, c->embed_dim, AM_ACT_NONE);
    if (c->patch_norm)
        am_nn_layernorm(nn, x, x, m->patch_ln_w, m->patch_ln_b, b * L0, c->embed_dim,
                        AM_HTSAT_LN_DEFAULT_EPS);
    /* 4. stages */
    for (int i = 0; i < c->n_stages; i++) {
        const am_htsat_stage *s = &m->stages[i];
        const int64_t C = s->dim, R = s->res, L = R * R, M = b * L, H = s->n_heads, D = C / H;
        const int64_t F = mlp_dim(c, i), nW = (R / w) * (R / w);
        const float scale = 1.0f / sqrtf((float)D);
        for (int j = 0; j < c->depths[i]; j++) {
            const am_htsat_block *B = &s->blocks[j];
            const int32_t *perm = B->shift ? s->perm_shift : s->perm0;
            am_nn_layernorm(nn, h, x, B->ln1_w, B->ln1_b, M, C, c->ln_eps);
            am_nn_gather_rows(nn, win, h, perm, L, M, C);
            if ((rc = am_nn_linear_rows(nn, &B->q, win, q, M, L)) ||
                (rc = am_nn_linear_rows(nn, &B->k, win, k, M, L)) ||
                (rc = am_nn_linear_rows(nn, &B->v, win, v, M, L)))
                return rc;
            if ((rc = am_nn_attention_short(nn, att, C, q, C, k, v, C, b * nW, w2, w2, (int)H,
                                            (int)D, scale, B->rel_bias, B->shift ? s->mask : NULL,
                                            nW)))
                return rc;
            if ((rc = am_nn_matmul_rows(nn, &B->o.w, att, tmp, M, L))) return rc;
            am_nn_scatter_residual(nn, x, tmp, B->o.b, perm, L, M, C);
            am_nn_layernorm(nn, h, x, B->ln2_w, B->ln2_b, M, C, c->ln_eps);
            if ((rc = am_nn_matmul_rows(nn, &B->fc1.w, h, f, M, L))) return rc;
            am_nn_bias_act(nn, f, B->fc1.b, M, F, c->act);
            if ((rc = am_nn_matmul_rows(nn, &B->fc2.w, f, tmp, M, L))) return rc;
            am_nn_residual(nn, x, tmp, B->fc2.b, M, C);
        }
        if (i == c->n_stages - 1) break;
        /* PatchMerging: [x(2i,2j), x(2i+1,2j), x(2i,2j+1), x(2i+1,2j+1)] -> LN -> Linear,
         * the concatenation a gather of C-wide rows (period L per clip). */
        const int64_t R2 = R / 2, L2 = R2 * R2;
        am_nn_gather_rows(nn, mrg, x, s->perm_merge, L, M, C);
        am_nn_layernorm(nn, mrg, mrg, s->merge_ln_w, s->merge_ln_b, b * L2, 4 * C,
                        AM_HTSAT_LN_DEFAULT_EPS);
        if ((rc = am_nn_matmul_rows(nn, &s->merge, mrg, x, b * L2, L2))) return rc;
    }
    /* 5. final LayerNorm, mean over the tokens */
    const int64_t CL = am_htsat_out_width(c), RL = G >> (c->n_stages - 1), LL = RL * RL;
    am_nn_layernorm(nn, h, x, m->norm_w, m->norm_b, b * LL, CL, AM_HTSAT_LN_DEFAULT_EPS);
    nn->be->ops->mean_rows(nn->be, pool, h, b, LL, CL);
    if (pooled && (rc = be->ops->download(be, pooled, pool, (size_t)(b * CL) * sizeof(float))))
        return rc;
    /* 6. projection, one clip per matmul (M = 1) */
    if ((rc = am_nn_linear_rows(nn, &m->proj1, pool, ph, b, 1))) return rc;
    am_nn_bias_act(nn, ph, NULL, b, c->proj_dim, c->proj_act);
    return am_nn_linear_rows(nn, &m->proj2, ph, embeds, b, 1);
}
