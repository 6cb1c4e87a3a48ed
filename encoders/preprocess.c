/* encoders/preprocess.c - resize (Pillow's bicubic), crop, rescale and normalize for CLIP. */
#include "encoders/preprocess.h"

#include "core/alloc.h"
#include "core/error.h"

#include <math.h>
#include <string.h>

/* Pillow's fixed point: 8 bits of result, 2 spare bits for the negative lobes. */
#define PIL_PRECISION_BITS (32 - 8 - 2)

static double bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis: in_size ->
 * out_size over the box [0, in_size). kk (out_size, ksize) fixed-point
 * coefficients, bounds (out_size, 2) = (first input index, count). */
static int coeffs(int in_size, int out_size, int32_t **kk_out, int **bounds_out, int *ksize_out) {
    const double support_f = 2.0; /* bicubic */
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = support_f * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *pre = am_malloc((size_t)out_size * ksize * sizeof(double));
    int32_t *kk = am_malloc((size_t)out_size * ksize * sizeof(int32_t));
    int *bounds = am_malloc((size_t)out_size * 2 * sizeof(int));
    if (!pre || !kk || !bounds) {
        am_free(pre);
        am_free(kk);
        am_free(bounds);
        return am_err_set(AM_ENOMEM, "resize: cannot allocate coefficients");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = pre + (size_t)xx * ksize;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0;
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * ksize; i++)
        kk[i] = pre[i] < 0 ? (int32_t)(-0.5 + pre[i] * (1 << PIL_PRECISION_BITS))
                           : (int32_t)(0.5 + pre[i] * (1 << PIL_PRECISION_BITS));
    am_free(pre);
    *kk_out = kk;
    *bounds_out = bounds;
    *ksize_out = ksize;
    return 0;
}

static inline uint8_t clip8(int v) {
    if (v >= (1 << PIL_PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PIL_PRECISION_BITS);
}

int am_resize_bicubic_pil(const uint8_t *src, int32_t w, int32_t h, uint8_t *dst, int32_t w2,
                          int32_t h2) {
    if (w <= 0 || h <= 0 || w2 <= 0 || h2 <= 0) return am_err_set(AM_EINVAL, "resize: empty image");
    if (w == w2 && h == h2) {
        memcpy(dst, src, (size_t)w * h * 3);
        return 0;
    }
    int32_t *kh = NULL, *kv = NULL;
    int *bh = NULL, *bv = NULL, ksh = 0, ksv = 0, rc;
    uint8_t *tmp = NULL;
    if ((rc = coeffs(w, w2, &kh, &bh, &ksh)) || (rc = coeffs(h, h2, &kv, &bv, &ksv))) goto done;
    /* Horizontal pass over the source rows the vertical pass will read. */
    const int need_h = w2 != w, need_v = h2 != h;
    const int y_first = bv[0], y_last = bv[(h2 - 1) * 2] + bv[(h2 - 1) * 2 + 1];
    const uint8_t *vin = src; /* (rows, w2, 3) input of the vertical pass */
    int row0 = 0;             /* first source row held by vin */
    if (need_h) {
        const int rows = need_v ? y_last - y_first : h;
        row0 = need_v ? y_first : 0;
        if (!(tmp = am_malloc((size_t)rows * w2 * 3))) {
            rc = am_err_set(AM_ENOMEM, "resize: cannot allocate %d x %d", w2, rows);
            goto done;
        }
        for (int y = 0; y < rows; y++) {
            const uint8_t *in = src + (size_t)(y + row0) * w * 3;
            uint8_t *o = tmp + (size_t)y * w2 * 3;
            for (int xx = 0; xx < w2; xx++) {
                const int xmin = bh[xx * 2], xmax = bh[xx * 2 + 1];
                const int32_t *k = kh + (size_t)xx * ksh;
                int s0 = 1 << (PIL_PRECISION_BITS - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < xmax; x++) {
                    const uint8_t *p = in + (size_t)(x + xmin) * 3;
                    s0 += p[0] * k[x];
                    s1 += p[1] * k[x];
                    s2 += p[2] * k[x];
                }
                o[xx * 3] = clip8(s0);
                o[xx * 3 + 1] = clip8(s1);
                o[xx * 3 + 2] = clip8(s2);
            }
        }
        vin = tmp;
        if (!need_v) {
            memcpy(dst, tmp, (size_t)w2 * h2 * 3);
            goto done;
        }
    }
    /* Vertical pass: vin has width w2 (== w when no horizontal pass). */
    for (int yy = 0; yy < h2; yy++) {
        const int ymin = bv[yy * 2] - row0, ymax = bv[yy * 2 + 1];
        const int32_t *k = kv + (size_t)yy * ksv;
        uint8_t *o = dst + (size_t)yy * w2 * 3;
        for (int xx = 0; xx < w2; xx++) {
            int s0 = 1 << (PIL_PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < ymax; y++) {
                const uint8_t *p = vin + ((size_t)(y + ymin) * w2 + xx) * 3;
                s0 += p[0] * k[y];
                s1 += p[1] * k[y];
                s2 += p[2] * k[y];
            }
            o[xx * 3] = clip8(s0);
            o[xx * 3 + 1] = clip8(s1);
            o[xx * 3 + 2] = clip8(s2);
        }
    }
done:
    am_free(kh);
    am_free(kv);
    am_free(bh);
    am_free(bv);
    am_free(tmp);
    return rc;
}

int am_image_pad_to_square(const am_image *img, const uint8_t fill[3], am_image *out) {
    memset(out, 0, sizeof *out);
    const int64_t W = img->width, H = img->height, S = W > H ? W : H;
    uint8_t *p = am_malloc((size_t)(S * S * 3));
    if (!p)
        return am_err_set(AM_ENOMEM, "pad to square: cannot allocate %lld^2 pixels", (long long)S);
    for (int64_t i = 0; i < S * S; i++)
        memcpy(p + i * 3, fill, 3);
    const int64_t x0 = W < H ? (H - W) / 2 : 0, y0 = W > H ? (W - H) / 2 : 0;
    for (int64_t y = 0; y < H; y++)
        memcpy(p + ((y + y0) * S + x0) * 3, img->rgb + y * W * 3, (size_t)W * 3);
    out->width = out->height = (int32_t)S;
    out->rgb = p;
    return 0;
}

int am_clip_preprocess_run(const am_clip_preprocess *pp, const am_image *img, float *pixels) {
    if (pp->crop_h <= 0 || pp->crop_w <= 0 || pp->resize_to < 0)
        return am_err_set(AM_EINVAL, "preprocess: bad sizes (resize %d, crop %d x %d)",
                          pp->resize_to, pp->crop_h, pp->crop_w);
    am_image padded = {0};
    const am_image *src = img;
    int rc = 0;
    if (pp->pad_to_square && img->width != img->height) {
        uint8_t fill[3];
        for (int c = 0; c < 3; c++)
            fill[c] = (uint8_t)(int)(pp->mean[c] * 255); /* int(x*255) truncates */
        if ((rc = am_image_pad_to_square(img, fill, &padded))) return rc;
        src = &padded;
    }
    int32_t w = src->width, h = src->height;
    uint8_t *resized = NULL;
    const uint8_t *px = src->rgb;
    if (pp->resize_to > 0) {
        /* HF: short side -> resize_to, long side -> int(resize_to * long / short). */
        int32_t short_s = w <= h ? w : h, long_s = w <= h ? h : w;
        int32_t new_long = (int32_t)((double)pp->resize_to * long_s / short_s);
        int32_t w2 = w <= h ? pp->resize_to : new_long, h2 = w <= h ? new_long : pp->resize_to;
        if (w2 < 1) w2 = 1;
        if (h2 < 1) h2 = 1;
        if (!(resized = am_malloc((size_t)w2 * h2 * 3))) {
            rc = am_err_set(AM_ENOMEM, "preprocess: cannot allocate %d x %d", w2, h2);
            goto done;
        }
        if ((rc = am_resize_bicubic_pil(src->rgb, w, h, resized, w2, h2))) goto done;
        px = resized;
        w = w2;
        h = h2;
    }
    /* HF center_crop: top/left by floor division; pads with zeros if the image is smaller. */
    const int32_t CH = pp->crop_h, CW = pp->crop_w;
    const int64_t top = ((int64_t)h - CH) >= 0 ? (h - CH) / 2 : -(int64_t)((CH - h + 1) / 2);
    const int64_t left = ((int64_t)w - CW) >= 0 ? (w - CW) / 2 : -(int64_t)((CW - w + 1) / 2);
    for (int c = 0; c < 3; c++) {
        float *plane = pixels + (size_t)c * CH * CW; /* (CH, CW) */
        const float mean = pp->mean[c], std = pp->std[c];
        for (int32_t y = 0; y < CH; y++)
            for (int32_t x = 0; x < CW; x++) {
                int64_t sy = y + top, sx = x + left;
                double v = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                               ? px[((size_t)sy * w + sx) * 3 + c]
                               : 0;
                float r = (float)(v * (1.0 / 255.0));
                plane[(size_t)y * CW + x] = (r - mean) / std;
            }
    }
done:
    am_free(resized);
    am_image_fini(&padded);
    return rc;
}
