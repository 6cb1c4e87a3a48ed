/* encoders/imu2clip.c - loading and running IMU2CLIP's MW2StackRNNPooling encoder. */
#include "encoders/imu2clip.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    am_imu2clip_config cfg;
} shapes[] = {
    {"imu2clip", {6, 32, 512, 1000, {10, 5, 5}, 2, 3, 2, 4, 1e-5f}},
    {"tiny", {6, 32, 32, 1000, {10, 5, 5}, 2, 3, 2, 4, 1e-5f}},
};

const char *am_imu2clip_shape_names(void) { return "imu2clip, tiny"; }

int am_imu2clip_shape(const char *name, am_imu2clip_config *out) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcasecmp(name, shapes[i].name)) {
            *out = shapes[i].cfg;
            return 0;
        }
    return am_err_set(AM_EINVAL, "unknown IMU shape '%s' (known: %s)", name,
                      am_imu2clip_shape_names());
}

int64_t am_imu2clip_len(const am_imu2clip_config *c, int block) {
    int64_t L = c->window;
    for (int i = 0; i <= block && i < 3; i++) {
        L -= (int64_t)c->dilation * (c->kernels[i] - 1);
        L = L > 0 ? L / c->pool : 0;
    }
    return L;
}

/* Conv output length of block i (before its pool). */
static int64_t conv_len(const am_imu2clip_config *c, int i) {
    return am_imu2clip_len(c, i - 1) - (int64_t)c->dilation * (c->kernels[i] - 1);
}

int am_imu2clip_config_check(const am_imu2clip_config *c) {
    if (c->in_channels < 1 || c->in_channels > 64 || c->in_groups < 1 ||
        c->in_channels % c->in_groups)
        return am_err_set(AM_EINVAL, "IMU config: %d input channels in %d groups", c->in_channels,
                          c->in_groups);
    if (c->conv_dim < 1 || c->conv_dim > 4096 || c->conv_groups < 1 || c->conv_dim % c->conv_groups)
        return am_err_set(AM_EINVAL, "IMU config: input_dim %d in %d groups", c->conv_dim,
                          c->conv_groups);
    if (c->hidden < 1 || c->hidden > 16384)
        return am_err_set(AM_EINVAL, "IMU config: size_embeddings %d not in [1, 16384]", c->hidden);
    if (c->window < 1 || c->window > 1000000 || c->dilation < 1 || c->pool < 1)
        return am_err_set(AM_EINVAL, "IMU config: window %d, dilation %d, pool %d", c->window,
                          c->dilation, c->pool);
    for (int i = 0; i < 3; i++)
        if (c->kernels[i] < 1 || conv_len(c, i) < c->pool)
            return am_err_set(AM_EINVAL,
                              "IMU config: block %d (kernel %d) leaves no samples of "
                              "a %d-sample window",
                              i + 1, c->kernels[i], c->window);
    if (am_imu2clip_len(c, 2) != c->conv_dim)
        return am_err_set(AM_EINVAL,
                          "IMU config: a %d-sample window pools to %lld positions, but the GRU "
                          "reads them as its %d input features (input_dim)",
                          c->window, (long long)am_imu2clip_len(c, 2), c->conv_dim);
    return 0;
}

double am_imu2clip_flops(const am_imu2clip_config *c) {
    double f = 0, cin = c->in_channels;
    for (int i = 0; i < 3; i++) {
        f += 2.0 * (double)conv_len(c, i) * c->conv_dim * cin * c->kernels[i];
        cin = c->conv_dim;
    }
    const double D = c->conv_dim, H = c->hidden;
    return f + 2.0 * D * 3 * H * D + 2.0 * (D - 1) * 3 * H * H;
}

/* The f32 vectors over one block (a pass with a = {0} sizes it). */
static void layout(am_imu2clip *m, am__vec_arena *a) {
    const int64_t C0 = m->cfg.in_channels, D = m->cfg.conv_dim, H = m->cfg.hidden;
    m->gn0_w = am__arena_take(a, C0);
    m->gn0_b = am__arena_take(a, C0);
    m->gn1_w = am__arena_take(a, D);
    m->gn1_b = am__arena_take(a, D);
    m->ih.b = am__arena_take(a, 3 * H);
    m->hh.b = am__arena_take(a, 3 * H);
}

void am_imu2clip_destroy(am_imu2clip **p) {
    if (!p || !*p) return;
    am_aligned_free((*p)->vecs);
    am_free(*p);
    *p = NULL;
}

int am_imu2clip_load(const am_ckpt *ck, const char *prefix, const am_imu2clip_config *cfg,
                     am_imu2clip **out) {
    *out = NULL;
    int rc = am_imu2clip_config_check(cfg);
    if (rc) return rc;
    if (!prefix) prefix = "";
    am_imu2clip *m = am_calloc(1, sizeof *m);
    if (!m) return am_err_set(AM_ENOMEM, "IMU encoder: out of memory");
    const int64_t C0 = cfg->in_channels, D = cfg->conv_dim, H = cfg->hidden;
    m->cfg = *cfg;
    am__vec_arena a = {0};
    layout(m, &a);
    if (!(m->vecs = am_aligned_alloc(a.used * sizeof(float)))) {
        am_imu2clip_destroy(&m);
        return am_err_set(AM_ENOMEM, "IMU encoder: out of memory");
    }
    a = (am__vec_arena){m->vecs, 0, 0};
    layout(m, &a);
    const int64_t sC0[1] = {C0}, sD[1] = {D}, s3H[1] = {3 * H}, sIH[2] = {3 * H, D},
                  sHH[2] = {3 * H, H};
    if ((rc = am__enc_vec(ck, prefix, "net.0.weight", 1, sC0, m->gn0_w)) ||
        (rc = am__enc_vec(ck, prefix, "net.0.bias", 1, sC0, m->gn0_b)))
        goto fail;
    for (int i = 0; i < 3; i++) {
        char nm[64];
        const int64_t sW[3] = {D, i == 0 ? C0 : D, cfg->kernels[i]};
        snprintf(nm, sizeof nm, "net.%d.net.0.weight", i + 1);
        if ((rc = am__enc_matrix(ck, prefix, nm, 3, sW, &m->conv[i]))) goto fail;
    }
    if ((rc = am__enc_vec(ck, prefix, "net.4.weight", 1, sD, m->gn1_w)) ||
        (rc = am__enc_vec(ck, prefix, "net.4.bias", 1, sD, m->gn1_b)) ||
        (rc = am__enc_matrix(ck, prefix, "net.5.weight_ih_l0", 2, sIH, &m->ih.w)) ||
        (rc = am__enc_vec(ck, prefix, "net.5.bias_ih_l0", 1, s3H, (float *)m->ih.b)) ||
        (rc = am__enc_matrix(ck, prefix, "net.5.weight_hh_l0", 2, sHH, &m->hh.w)) ||
        (rc = am__enc_vec(ck, prefix, "net.5.bias_hh_l0", 1, s3H, (float *)m->hh.b)))
        goto fail;
    *out = m;
    return 0;
fail:
    am_imu2clip_destroy(&m);
    return rc;
}

void am_imu2clip_release(am_imu2clip **p, am_backend *be) {
    if (!p || !*p) return;
    if ((*p)->vecs) be->ops->free(be, (*p)->vecs);
    am_free(*p);
    *p = NULL;
}

int am_imu2clip_upload(const am_imu2clip *m, am_backend *be, am_imu2clip **out) {
    *out = NULL;
    am_imu2clip *d = am_calloc(1, sizeof *d);
    if (!d) return am_err_set(AM_ENOMEM, "IMU encoder: out of memory");
    if (be->host_memory) { /* the host views as they are; d->vecs stays NULL (not owned) */
        *d = *m;
        d->vecs = NULL;
        *out = d;
        return 0;
    }
    d->cfg = m->cfg;
    am__vec_arena a = {0};
    layout(d, &a);
    const am_matrix *from[] = {&m->conv[0], &m->conv[1], &m->conv[2], &m->ih.w, &m->hh.w};
    am_matrix *const to[] = {&d->conv[0], &d->conv[1], &d->conv[2], &d->ih.w, &d->hh.w};
    int rc = am__enc_upload(be, m->vecs, a.used * sizeof(float), (void **)&d->vecs);
    if (rc || (rc = am__enc_upload_matrices(be, from, to, 5))) goto fail;
    a = (am__vec_arena){d->vecs, 0, 0};
    layout(d, &a);
    *out = d;
    return 0;
fail:
    am_imu2clip_release(&d, be);
    return am_err_prefix(rc, "IMU encoder: weights to the %s backend", be->name);
}

/* Largest per-window im2col and conv-output sizes. */
static void sizes(const am_imu2clip_config *c, int64_t *cols, int64_t *conv) {
    *cols = *conv = 0;
    int64_t cin = c->in_channels;
    for (int i = 0; i < 3; i++) {
        const int64_t to = conv_len(c, i);
        *cols = to * cin * c->kernels[i] > *cols ? to * cin * c->kernels[i] : *cols;
        *conv = to * c->conv_dim > *conv ? to * c->conv_dim : *conv;
        cin = c->conv_dim;
    }
}

size_t am_imu2clip_scratch_floats(const am_imu2clip_config *c, int64_t b) {
    int64_t cols, conv;
    sizes(c, &cols, &conv);
    const int64_t T = c->window, D = c->conv_dim, H = c->hidden;
    return (size_t)(b * (T * c->in_channels + cols + 3 * conv + D * D + D * 3 * H) +
                    AM_IMU2CLIP_GRU_ROWS * 4 * H + 64);
}

int am_imu2clip_forward(const am_imu2clip *m, am_nn *nn, const float *x, int64_t b, float *out,
                        float *scratch) {
    const am_imu2clip_config *c = &m->cfg;
    const int64_t T = c->window, C0 = c->in_channels, D = c->conv_dim, H = c->hidden;
    int64_t ncols, nconv;
    sizes(c, &ncols, &nconv);
    float *x0 = scratch;                           /* (B, T, C0) time-major input */
    float *cols = x0 + b * T * C0;                 /* (B, To, Cin*k) */
    float *y = cols + b * ncols;                   /* (B, To, D) conv output */
    float *pa = y + b * nconv;                     /* (B, L, D) pooled, ping */
    float *pb = pa + b * nconv;                    /* (B, L, D) pooled, pong */
    float *gin = pb + b * nconv;                   /* (B, D steps, D features): the GRU's input */
    float *gi = gin + b * D * D;                   /* (B, D, 3H) input gates */
    float *gh = gi + b * D * 3 * H;                /* (G, 3H) recurrent gates */
    float *hg = gh + AM_IMU2CLIP_GRU_ROWS * 3 * H; /* (G, H) hidden states of a group */
    int rc;
    am_backend *be = nn->be;
    /* Channel-major windows to time-major: (B, C0, T) -> (B, T, C0). */
    be->ops->transpose(be, x0, x, b, C0, T);
    am_nn_groupnorm(nn, x0, x0, m->gn0_w, m->gn0_b, b, T, C0, c->in_groups, c->eps);
    const float *cur = x0;
    int64_t L = T, cin = C0;
    float *dst = pa;
    for (int i = 0; i < 3; i++) {
        const int64_t to = L - (int64_t)c->dilation * (c->kernels[i] - 1);
        am_nn_im2col_1d(nn, cur, cols, b, L, cin, c->kernels[i], c->dilation);
        /* One GEMM per window (M = To): a batch gives the bits of one window alone. */
        if ((rc = am_nn_matmul_rows(nn, &m->conv[i], cols, y, b * to, to))) return rc;
        am_nn_maxpool_time(nn, dst, y, b, to, D, c->pool);
        cur = dst;
        dst = dst == pa ? pb : pa;
        L = to / c->pool;
        cin = D;
    }
    float *pooled = (float *)cur; /* (B, D positions, D channels) */
    am_nn_groupnorm(nn, pooled, pooled, m->gn1_w, m->gn1_b, b, L, D, c->conv_groups, c->eps);
    /* The quirk: the GRU's sequence is the channel axis, its features the time axis. */
    be->ops->transpose(be, gin, pooled, b, L, D);
    if ((rc = am_nn_linear_rows(nn, &m->ih, gin, gi, b * D, D))) return rc;
    /* The recurrence, AM_IMU2CLIP_GRU_ROWS windows at a time: h (G, H), zero rows pad the
     * last group so that every call has the same M (see imu2clip.h). */
    const int64_t G = AM_IMU2CLIP_GRU_ROWS;
    for (int64_t g0 = 0; g0 < b; g0 += G) {
        const int64_t ng = b - g0 < G ? b - g0 : G;
        if ((rc = am_nn_zero(nn, hg, G * H))) return rc;
        for (int64_t st = 0; st < D; st++) {
            if (st == 0) { /* h = 0: W_hh h + b_hh is exactly b_hh */
                for (int64_t r = 0; r < G; r++)
                    be->ops->copy(be, gh + r * 3 * H, m->hh.b, (size_t)(3 * H) * sizeof(float));
            } else if ((rc = am_nn_linear(nn, &m->hh, hg, gh, G))) {
                return rc;
            }
            am_nn_gru_rows(nn, hg, gi + (g0 * D + st) * 3 * H, D * 3 * H, gh, ng, H);
        }
        be->ops->copy(be, out + g0 * H, hg, (size_t)(ng * H) * sizeof(float));
    }
    return 0;
}
