/* encoders/preprocess.h - CLIP image preprocessing, bit-compatible with PIL and HF.
 *
 * Reproduces transformers' CLIPImageProcessor (PIL backend) on an RGB image:
 *   1. optional LLaVA-1.5 pad-to-square (expand2square): the image is pasted
 *      centred ((side - w) // 2 or (side - h) // 2) on a square filled with
 *      int(mean * 255) per channel;
 *   2. resize so the shortest side is `resize_to` and the long side is
 *      int(resize_to * long / short) (HF get_resize_output_image_size), with
 *      PIL's BICUBIC (a = -0.5, antialiased support scaled by the reduction
 *      factor, separable horizontal-then-vertical passes in 22-bit fixed point
 *      with uint8 rounding between passes: Pillow's Resample.c, so the uint8
 *      result is identical to Image.resize);
 *   3. center crop to crop_h x crop_w at top = (h - crop_h) // 2,
 *      left = (w - crop_w) // 2 (HF's center_crop; pads with 0 when smaller);
 *   4. x / 255 (rescale in double, then f32), then (x - mean) / std in f32.
 * The output is channel-first f32 pixels (3, crop_h, crop_w).
 */
#ifndef AM_PREPROCESS_H
#define AM_PREPROCESS_H

#include "encoders/image.h"

#include <stdint.h>

typedef struct am_clip_preprocess {
    int32_t resize_to;      /* shortest edge after resizing (336 for ViT-L/14-336); 0 = no resize */
    int32_t crop_h, crop_w; /* center crop (336 x 336) */
    float mean[3], std[3];  /* OPENAI_CLIP_MEAN / STD */
    int pad_to_square;      /* LLaVA-1.5 expand2square before resizing */
} am_clip_preprocess;

/* ViT-style defaults for an image size S: resize_to = crop = S, OpenAI CLIP mean/std, no padding.
 * Inline: the config-only reader (vision_config.c) uses it without linking the
 * image code (and its libjpeg/libpng/libwebp). */
static inline am_clip_preprocess am_clip_preprocess_default(int32_t image_size) {
    return (am_clip_preprocess){
        .resize_to = image_size,
        .crop_h = image_size,
        .crop_w = image_size,
        .mean = {0.48145466f, 0.4578275f, 0.40821073f},
        .std = {0.26862954f, 0.26130258f, 0.27577711f},
    };
}

/* pixels (3, crop_h, crop_w) from img. AM_ENOMEM; AM_EINVAL for a bad config. */
int am_clip_preprocess_run(const am_clip_preprocess *pp, const am_image *img, float *pixels);

/* PIL's Image.resize(size, BICUBIC) on 8-bit RGB: dst (h2, w2, 3). Exposed for tests. */
int am_resize_bicubic_pil(const uint8_t *src, int32_t w, int32_t h, uint8_t *dst, int32_t w2,
                          int32_t h2);

/* LLaVA's expand2square: *out is a new square image (am_image_fini it). */
int am_image_pad_to_square(const am_image *img, const uint8_t fill[3], am_image *out);

#endif
