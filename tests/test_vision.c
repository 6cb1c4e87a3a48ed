/* tests/test_vision.c - the vision encoders: ops, ViT, projectors, preprocessing, media decoding.
 *
 * Golden fixtures come from tests/golden/vision/gen_vision_golden.py (HF
 * transformers CLIPVisionModel / LlavaForConditionalGeneration /
 * CLIPImageProcessorPil, Pillow, a PyTorch Perceiver Resampler following
 * OpenFlamingo's helpers.py, ffmpeg-made clips). Stated tolerances:
 *   ViT hidden states, Perceiver, mlp2x_gelu, LLaVA features (f32): max abs 1e-4
 *   decoded RGB: identical to PIL (FNV-1a of the bytes)
 *   resized + cropped uint8: identical to PIL's BICUBIC; pixel_values within 1e-6
 *   batched vs one-at-a-time encoding: identical
 * Bad media (truncated, corrupt, huge, bombs, random mutations) must give an
 * error naming the file, never a crash (run under ASan+UBSan in CI).
 */
#include "core/alloc.h"
#include "core/cpu_backend.h"
#include "core/error.h"
#include "core/file.h"
#include "encoders/image.h"
#include "encoders/mkencoders.h"
#include "encoders/nn_ops.h"
#include "encoders/preprocess.h"
#include "encoders/projector.h"
#include "encoders/video.h"
#include "encoders/vision.h"
#include "encoders/vit.h"
#include "test_util.h"

#define ENC_TEST_RNG_SEED 88172645463325252ull
#include "encoder_test_util.h"

#include <cjson/cJSON.h>
#include <png.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOL_F32 1e-4

/* ---- ops -------------------------------------------------------------------------- */

static void test_ops_vs_reference(void) {
    const int64_t M = 37, C = 96;
    float *x = am_malloc(M * C * 4), *o = am_malloc(M * C * 4), *r = am_malloc(M * C * 4);
    float w[96], b[96];
    for (int64_t i = 0; i < M * C; i++)
        x[i] = 3 * frand() + 0.5f;
    for (int i = 0; i < C; i++)
        w[i] = 1 + 0.1f * frand(), b[i] = 0.1f * frand();
    am_nn_layernorm(&nn, o, x, w, b, M, C, 1e-5f);
    am_nn_ref_layernorm(r, x, w, b, M, C, 1e-5f);
    CHECK(max_abs_diff(o, r, M * C) < 2e-6);
    for (int a = AM_ACT_GELU; a <= AM_ACT_QUICK_GELU; a++) {
        memcpy(o, x, M * C * 4);
        am_nn_bias_act(&nn, o, b, M, C, (am_act)a);
        double md = 0;
        for (int64_t i = 0; i < M * C; i++) {
            double d = fabs(o[i] - am_nn_ref_act(x[i] + b[i % C], (am_act)a));
            md = d > md ? d : md;
        }
        CHECK(md < 2e-6);
    }
    /* Attention with strided q/k/v and output, B = 2, H = 3, D = 8. */
    const int64_t B = 2, TQ = 5, TK = 19, H = 3, D = 8, QS = 30, KS = 40, OS = 28;
    float *q = am_malloc(B * TQ * QS * 4), *k = am_malloc(B * TK * KS * 4),
          *v = am_malloc(B * TK * KS * 4);
    float *ao = am_calloc(B * TQ * OS, 4), *ar = am_calloc(B * TQ * OS, 4);
    for (int64_t i = 0; i < B * TQ * QS; i++)
        q[i] = frand();
    for (int64_t i = 0; i < B * TK * KS; i++)
        k[i] = frand(), v[i] = frand();
    CHECK_OK(am_nn_attention(&nn, ao, OS, q, QS, k, v + 4, KS, B, TQ, TK, (int)H, (int)D, 0.35f));
    am_nn_ref_attention(ar, OS, q, QS, k, v + 4, KS, B, TQ, TK, (int)H, (int)D, 0.35f);
    CHECK(max_abs_diff(ao, ar, B * TQ * OS) < 2e-6);
    /* im2col against a direct convolution. */
    const int S = 12, P = 4, G = S / P;
    float *pix = am_malloc(2 * 3 * S * S * 4), *cols = am_malloc(2 * G * G * 3 * P * P * 4);
    for (int i = 0; i < 2 * 3 * S * S; i++)
        pix[i] = frand();
    am_nn_patchify(&nn, pix, cols, 2, 3, S, P);
    int bad = 0;
    for (int bi = 0; bi < 2; bi++)
        for (int py = 0; py < G; py++)
            for (int px = 0; px < G; px++)
                for (int c = 0; c < 3; c++)
                    for (int ky = 0; ky < P; ky++)
                        for (int kx = 0; kx < P; kx++)
                            bad +=
                                cols[((bi * G + py) * G + px) * 3 * P * P + (c * P + ky) * P +
                                     kx] != pix[((bi * 3 + c) * S + py * P + ky) * S + px * P + kx];
    CHECK_EQ_INT(bad, 0);
    am_free(x), am_free(o), am_free(r), am_free(q), am_free(k), am_free(v), am_free(ao),
        am_free(ar);
    am_free(pix), am_free(cols);
}

/* ---- ViT vs HF CLIPVisionModel ---------------------------------------------------- */

static const am_vit_config golden_vit = {32, 8, 3, 64, 3, 4, 128, 1e-5f, AM_ACT_QUICK_GELU};

static void test_vit_golden(void) {
    char path[4096];
    am_ckpt *ck = NULL;
    am_vit *v = NULL;
    CHECK_OK(am_ckpt_open(AM_SRC_PATH("tests/golden/vision/clip/model.safetensors", path), &ck));
    if (!ck) return;
    /* transformers 5 saves CLIPVisionModel without the "vision_model." prefix. */
    const char *prefix =
        am_ckpt_find(ck, "vision_model.pre_layrnorm.weight") ? "vision_model." : "";
    CHECK_OK(am_vit_load(ck, prefix, &golden_vit, &v));
    const int64_t B = 2, T = 17, C = 64;
    float *px = read_f32_optional("tests/golden/vision/clip/pixels.f32", B * 3 * 32 * 32);
    float *hs = read_f32_optional("tests/golden/vision/clip/hidden.f32", 4 * B * T * C);
    float *h = am_malloc(B * T * C * 4),
          *scr = am_aligned_alloc(am_vit_scratch_floats(&golden_vit, B) * 4);
    if (v && px && hs) {
        for (int n_run = 0; n_run <= 3; n_run++) {
            CHECK_OK(am_vit_forward(v, &nn, px, B, n_run, h, scr));
            double d = max_abs_diff(h, hs + n_run * B * T * C, B * T * C);
            printf("  hidden_states[%d]: max abs diff %.3g\n", n_run, d);
            CHECK(d <= TOL_F32);
        }
        int32_t n_run;
        CHECK_OK(am_vit_blocks_for_layer(&golden_vit, -2, &n_run));
        CHECK_EQ_INT(n_run, 2);
        CHECK(am_vit_blocks_for_layer(&golden_vit, -5, &n_run) == AM_ERANGE);
    }
    /* A shape mismatch names the file and tensor. */
    am_vit_config wrong = golden_vit;
    wrong.mlp_dim = 256;
    am_vit *v2 = NULL;
    CHECK(am_vit_load(ck, prefix, &wrong, &v2) == AM_ESHAPE);
    CHECK(strstr(am_err_msg(), "mlp.fc1.weight") && strstr(am_err_msg(), "model.safetensors"));
    CHECK(am_vit_load(ck, "nope.", &golden_vit, &v2) == AM_ENOTFOUND);
    am_free(px), am_free(hs), am_free(h), am_aligned_free(scr);
    am_vit_destroy(&v);
    am_ckpt_destroy(&ck);
}

/* ---- projectors vs PyTorch ---------------------------------------------------------- */

static void test_perceiver_golden(void) {
    char path[4096];
    am_ckpt *ck = NULL;
    am_proj *p = NULL;
    CHECK_OK(am_ckpt_open(AM_SRC_PATH("tests/golden/vision/perceiver/projector.safetensors", path),
                          &ck));
    if (!ck) return;
    am_proj_config cfg = {.type = AM_PROJ_PERCEIVER,
                          .in_dim = 64,
                          .out_dim = 48,
                          .n_latents = 8,
                          .depth = 2,
                          .n_heads = 2,
                          .head_dim = 16,
                          .ff_mult = 2,
                          .ln_eps = 1e-5f};
    CHECK_OK(am_proj_load(ck, "", &cfg, &p));
    float *x0 = read_f32_optional("tests/golden/vision/perceiver/x0.f32", 3 * 16 * 64);
    float *x1 = read_f32_optional("tests/golden/vision/perceiver/x1.f32", 16 * 64);
    float *y0 = read_f32_optional("tests/golden/vision/perceiver/y0.f32", 8 * 48);
    float *y1 = read_f32_optional("tests/golden/vision/perceiver/y1.f32", 8 * 48);
    float o0[8 * 48], o1[8 * 48], s0[8 * 48];
    if (p && x0 && x1 && y0 && y1) {
        CHECK_EQ_INT(p->cfg.max_frames, 4);
        CHECK_EQ_INT(am_proj_n_tokens(p, 3, 16), 8);
        am_proj_item items[2] = {{x0, 3, 16, o0}, {x1, 1, 16, o1}};
        CHECK_OK(am_proj_forward(p, &nn, items, 2)); /* batched: both media in one call */
        double d0 = max_abs_diff(o0, y0, 8 * 48), d1 = max_abs_diff(o1, y1, 8 * 48);
        printf("  perceiver (3 frames, frame+time embeddings): max abs diff %.3g; (1 frame) %.3g\n",
               d0, d1);
        CHECK(d0 <= TOL_F32 && d1 <= TOL_F32);
        am_proj_item one = {x0, 3, 16, s0};
        CHECK_OK(am_proj_forward(p, &nn, &one, 1));
        CHECK(memcmp(s0, o0, sizeof s0) == 0); /* batching does not change results */
        am_proj_item too_many = {x0, 5, 16, s0};
        CHECK(am_proj_forward(p, &nn, &too_many, 1) == AM_ERANGE);
    }
    am_free(x0), am_free(x1), am_free(y0), am_free(y1);
    am_proj_destroy(&p);
    am_ckpt_destroy(&ck);
    /* mlp2x_gelu */
    CHECK_OK(am_ckpt_open(AM_SRC_PATH("tests/golden/vision/perceiver/mlp.safetensors", path), &ck));
    if (!ck) return;
    am_proj_config mc = {
        .type = AM_PROJ_MLP2X_GELU, .in_dim = 64, .out_dim = 48, .tokens_per_row = 1};
    CHECK_OK(am_proj_load(ck, "", &mc, &p));
    float *mx = read_f32_optional("tests/golden/vision/perceiver/mlp_x.f32", 16 * 64);
    float *my = read_f32_optional("tests/golden/vision/perceiver/mlp_y.f32", 16 * 48);
    float mo[16 * 48];
    if (p && mx && my) {
        am_proj_item it = {mx, 1, 16, mo};
        CHECK_OK(am_proj_forward(p, &nn, &it, 1));
        double d = max_abs_diff(mo, my, 16 * 48);
        printf("  mlp2x_gelu: max abs diff %.3g\n", d);
        CHECK(d <= TOL_F32);
    }
    am_free(mx), am_free(my);
    am_proj_destroy(&p);
    am_ckpt_destroy(&ck);
}

static void test_llava_golden(void) {
    char dir[4096];
    am_vision_model *m = NULL;
    am_vision_encoder *e = NULL;
    CHECK_OK(am_vision_model_load(AM_SRC_PATH("tests/golden/vision/llava", dir), &m));
    if (!m) return;
    CHECK(!strcmp(m->layout, "llava-hf"));
    CHECK_EQ_INT(m->n_run, 1); /* 2 layers, feature layer -2 */
    CHECK_EQ_INT(am_vision_n_tokens(m, 1), 16);
    CHECK_EQ_INT(am_vision_out_dim(m), 48);
    CHECK_OK(am_vision_encoder_new(m, be, 2, 0, &e));
    float *px = read_f32_optional("tests/golden/vision/llava/llava_px.f32", 2 * 3 * 32 * 32);
    float *y = read_f32_optional("tests/golden/vision/llava/llava_y.f32", 2 * 16 * 48);
    float out[2][16 * 48];
    if (e && px && y) {
        am_vision_item items[2] = {{px, 1, out[0]}, {px + 3 * 32 * 32, 1, out[1]}};
        CHECK_OK(am_vision_encode(e, items, 2));
        double d = max_abs_diff(out[0], y, 2 * 16 * 48);
        printf("  llava get_image_features: max abs diff %.3g\n", d);
        CHECK(d <= TOL_F32);
    }
    am_free(px), am_free(y);
    am_vision_encoder_destroy(&e);
    am_vision_model_destroy(&m);
}

/* ---- preprocessing vs PIL / HF -------------------------------------------------------- */

static uint64_t fnv64(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void test_preprocess_golden(void) {
    char path[4096];
    void *js;
    size_t jl;
    CHECK_OK(am_read_file_limited(AM_SRC_PATH("tests/golden/vision/images/preprocess.json", path),
                                  1 << 20, &js, &jl));
    cJSON *root = js ? cJSON_ParseWithLength(js, jl) : NULL;
    am_free(js);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases"), *c;
    CHECK(cJSON_GetArraySize(cases) >= 15);
    int worst_u8 = 0, n_cases = 0;
    cJSON_ArrayForEach(c, cases) {
        const char *file = cJSON_GetObjectItem(c, "file")->valuestring;
        const int size = cJSON_GetObjectItem(c, "size")->valueint,
                  pad = cJSON_IsTrue(cJSON_GetObjectItem(c, "pad"));
        char rel[512], rel2[512];
        snprintf(rel, sizeof rel, "tests/golden/vision/images/%s", file);
        am_image img, exp;
        int rc = am_image_load(AM_SRC_PATH(rel, path), NULL, &img);
        CHECK_OK(rc);
        if (rc) continue;
        char h[17];
        snprintf(h, sizeof h, "%016llx",
                 (unsigned long long)fnv64(img.rgb, (size_t)img.width * img.height * 3));
        if (img.width != cJSON_GetObjectItem(c, "width")->valueint ||
            img.height != cJSON_GetObjectItem(c, "height")->valueint ||
            strcmp(h, cJSON_GetObjectItem(c, "rgb_fnv64")->valuestring)) {
            fprintf(stderr, "%s: decoded %dx%d %s differs from PIL's\n", file, img.width,
                    img.height, h);
            am_test_failures++;
        }
        snprintf(rel2, sizeof rel2, "tests/golden/vision/images/%s",
                 cJSON_GetObjectItem(c, "expected")->valuestring);
        CHECK_OK(am_image_load(AM_SRC_PATH(rel2, path), NULL, &exp));
        am_clip_preprocess pp = am_clip_preprocess_default(size);
        pp.pad_to_square = pad;
        float *pv = am_malloc((size_t)3 * size * size * 4);
        CHECK_OK(am_clip_preprocess_run(&pp, &img, pv));
        /* Compare as uint8 (recovered exactly from the float) and as floats. */
        int worst = 0;
        double fd = 0;
        for (int ch = 0; ch < 3; ch++)
            for (int i = 0; i < size * size; i++) {
                float got = pv[ch * size * size + i];
                int u = (int)lrint(((double)got * pp.std[ch] + pp.mean[ch]) * 255);
                int want = exp.rgb ? exp.rgb[i * 3 + ch] : -1000;
                worst = abs(u - want) > worst ? abs(u - want) : worst;
                float wf = ((float)(want * (1.0 / 255.0)) - pp.mean[ch]) / pp.std[ch];
                fd = fabs(got - wf) > fd ? fabs(got - wf) : fd;
            }
        if (worst > 0 || fd > 1e-6) {
            fprintf(stderr, "%s (%d%s): max uint8 diff %d, float diff %.3g vs HF\n", file, size,
                    pad ? " pad" : "", worst, fd);
            am_test_failures++;
        }
        worst_u8 = worst > worst_u8 ? worst : worst_u8;
        n_cases++;
        if (size == 64 && !strcmp(file, "small_up.png")) {
            float *ref =
                read_f32_optional("tests/golden/vision/images/pv_s64_small_up.f32", 3 * 64 * 64);
            if (ref) {
                double d = max_abs_diff(pv, ref, 3 * 64 * 64);
                printf("  pixel_values (97x61 upscaled to 64): max abs diff %.3g\n", d);
                CHECK(d <= 1e-6);
            }
            am_free(ref);
        }
        am_free(pv);
        am_image_fini(&img);
        am_image_fini(&exp);
    }
    printf("  %d preprocessing cases: decoded RGB identical to PIL, max uint8 diff after "
           "resize/crop %d\n",
           n_cases, worst_u8);
    cJSON_Delete(root);
}

/* ---- bad images ---------------------------------------------------------------------- */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = (uint8_t)v;
}

/* A PNG signature + IHDR (w x h, 8-bit RGB) with a valid CRC and nothing else. */
static size_t png_header(uint8_t *b, uint32_t w, uint32_t h) {
    memcpy(b, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
    put32(b + 16, w);
    put32(b + 20, h);
    memcpy(b + 24, "\x08\x02\0\0\0", 5);
    put32(b + 29, crc32_of(b + 12, 17));
    return 33;
}

typedef struct {
    uint8_t *p;
    size_t n, cap;
} membuf;

static void png_write_mem(png_structp png, png_bytep d, size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, d, n);
    m->n += n;
}
static void png_flush_mem(png_structp png) { (void)png; }

/* A real gray PNG of w x h zeros: a few KB that decode to w*h*3 bytes (a bomb at large sizes). */
static membuf zero_png(uint32_t w, uint32_t h) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_set_write_fn(png, &m, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, w, h, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 9);
    png_write_info(png, info);
    uint8_t *row = calloc(w, 1);
    for (uint32_t y = 0; y < h; y++)
        png_write_row(png, row);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    return m;
}

static int expect_error(const void *d, size_t n, const char *name, const am_image_limits *lim,
                        int want) {
    am_image img;
    int rc = am_image_decode(d, n, name, lim, &img);
    int ok = rc != 0 && (want == 0 || rc == want) && strstr(am_err_msg(), name) && img.rgb == NULL;
    if (!ok) fprintf(stderr, "  %s: rc %d (want %d), message '%s'\n", name, rc, want, am_err_msg());
    am_image_fini(&img);
    return ok;
}

static void test_bad_images(void) {
    char path[4096];
    static const char *const files[] = {"land_q90.jpg", "port_prog.jpg", "rgba.png",
                                        "lossy.webp",   "lossless.webp", "cmyk.jpg"};
    CHECK(expect_error("", 0, "empty.jpg", NULL, AM_EFORMAT));
    CHECK(expect_error("GIF89a......", 12, "anim.gif", NULL, AM_EFORMAT));
    CHECK(expect_error("\xff\xd8\xff\xe0garbage-after-soi", 20, "garbage.jpg", NULL, AM_EFORMAT));
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/golden/vision/images/%s", files[f]);
        void *d;
        size_t n;
        CHECK_OK(am_read_file_limited(AM_SRC_PATH(rel, path), 1 << 24, &d, &n));
        if (!d) continue;
        /* Truncations: every one must fail (PIL refuses them too). */
        const size_t cuts[] = {1, 7, 30, 100, n / 3, n / 2, n - 40, n - 2};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
            if (cuts[i] < n) CHECK(expect_error(d, cuts[i], files[f], NULL, 0));
        /* Byte limit. */
        am_image_limits lim = am_image_default_limits();
        lim.max_bytes = n - 1;
        CHECK(expect_error(d, n, files[f], &lim, AM_ERANGE));
        lim = am_image_default_limits();
        lim.max_pixels = 1000;
        CHECK(expect_error(d, n, files[f], &lim, AM_ERANGE));
        CHECK(strstr(am_err_msg(), "1000"));
        /* Random mutations: decode or fail, never crash or leak. */
        uint8_t *m = am_malloc(n);
        int n_ok = 0, n_err = 0;
        const int n_mut = 150 * fuzz_scale();
        for (int it = 0; it < n_mut; it++) {
            memcpy(m, d, n);
            int flips = 1 + (int)((frand() + 1) * 4);
            for (int k = 0; k < flips; k++)
                m[(size_t)((frand() + 1) * 0.5 * (double)n) % n] = (uint8_t)((frand() + 1) * 128);
            am_image img;
            int rc = am_image_decode(m, n, files[f], NULL, &img);
            if (rc == 0) {
                n_ok++;
                CHECK(img.rgb && img.width > 0);
            } else {
                n_err++;
                CHECK(strstr(am_err_msg(), files[f]) != NULL);
            }
            am_image_fini(&img);
        }
        printf("  %s: %d mutations -> %d decoded, %d rejected\n", files[f], n_mut, n_ok, n_err);
        am_free(m);
        am_free(d);
    }
    /* Huge declared sizes are rejected from the header, before any allocation. */
    uint8_t hdr[64];
    size_t hn = png_header(hdr, 100000, 100000);
    CHECK(expect_error(hdr, hn, "huge.png", NULL, AM_ERANGE));
    hn = png_header(hdr, 30000, 30000);
    CHECK(expect_error(hdr, hn, "bomb_header.png", NULL, AM_ERANGE));
    CHECK(strstr(am_err_msg(), "decompression bomb"));
    /* A real decompression bomb: 4000 x 4000 zeros in a few KB. */
    membuf bomb = zero_png(4000, 4000);
    printf("  bomb: %zu bytes of PNG declaring 16 Mpixel\n", bomb.n);
    am_image_limits lim = am_image_default_limits();
    lim.max_pixels = 4000000;
    CHECK(bomb.n < 100000);
    CHECK(expect_error(bomb.p, bomb.n, "bomb.png", &lim, AM_ERANGE));
    am_image ok;
    CHECK_OK(
        am_image_decode(bomb.p, bomb.n, "bomb.png", NULL, &ok)); /* fine under the default limit */
    CHECK(ok.width == 4000 && ok.rgb && ok.rgb[12345] == 0);
    am_image_fini(&ok);
    free(bomb.p);
    /* A JPEG whose SOF declares 60000 x 60000: patch a real one. */
    void *d;
    size_t n;
    CHECK_OK(am_read_file_limited(AM_SRC_PATH("tests/golden/vision/images/land_q90.jpg", path),
                                  1 << 24, &d, &n));
    uint8_t *j = d;
    for (size_t i = 2; j && i + 9 < n; i++)
        if (j[i] == 0xFF && (j[i + 1] == 0xC0 || j[i + 1] == 0xC2)) {
            j[i + 5] = 0xEA, j[i + 6] = 0x60, j[i + 7] = 0xEA, j[i + 8] = 0x60;
            break;
        }
    CHECK(expect_error(d, n, "huge.jpg", NULL, AM_ERANGE));
    am_free(d);
    /* Missing and unreadable files. */
    am_image img;
    CHECK(am_image_load("/nonexistent/x.png", NULL, &img) == AM_EIO &&
          strstr(am_err_msg(), "/nonexistent/x.png"));
    CHECK(am_image_load("/tmp", NULL, &img) == AM_EIO);
}

/* ---- video ------------------------------------------------------------------------------- */

typedef struct {
    int n;
    int r[64], g[64], w, h;
} frames_seen;

static int on_frame(void *user, int i, const am_image *f) {
    frames_seen *s = user;
    CHECK_EQ_INT(i, s->n);
    double r = 0, g = 0;
    int64_t np = (int64_t)f->width * f->height;
    for (int64_t k = 0; k < np; k++)
        r += f->rgb[k * 3], g += f->rgb[k * 3 + 1];
    s->r[s->n] = (int)lrint(r / np);
    s->g[s->n] = (int)lrint(g / np);
    s->w = f->width, s->h = f->height;
    s->n++;
    return 0;
}

static void test_video(void) {
    static const char *const clips[] = {"clip.mp4", "clip.webm", "clip.mkv"};
    char path[4096], rel[256];
    for (size_t c = 0; c < 3; c++) {
        snprintf(rel, sizeof rel, "tests/golden/vision/video/%s", clips[c]);
        void *d;
        size_t n;
        CHECK_OK(am_read_file_limited(AM_SRC_PATH(rel, path), 1 << 24, &d, &n));
        if (!d) continue;
        for (int F = 1; F <= 25; F += 7) { /* 1, 8, 15, 22 (more than the 20 frames: repeats) */
            frames_seen s = {0};
            int64_t total = 0, idx[32];
            CHECK_OK(am_video_sample(d, n, clips[c], F, 1, NULL, on_frame, &s, &total));
            CHECK_EQ_INT(total, 20);
            CHECK_EQ_INT(s.n, F);
            CHECK(s.w == 64 && s.h == 48);
            am_video_sample_indices(20, F, idx);
            int worst = 0;
            for (int i = 0; i < s.n; i++) {
                int dr = abs(s.r[i] - (int)idx[i] * 12),
                    dg = abs(s.g[i] - (255 - (int)idx[i] * 12));
                worst = dr > worst ? dr : worst;
                worst = dg > worst ? dg : worst;
            }
            if (worst > 6) {
                fprintf(stderr, "%s F=%d: sampled frame colours off by %d\n", clips[c], F, worst);
                am_test_failures++;
            }
        }
        /* Limits. */
        am_video_limits lim = am_video_default_limits();
        frames_seen s = {0};
        lim.max_frames = 10;
        CHECK(am_video_sample(d, n, clips[c], 8, 1, &lim, on_frame, &s, NULL) == AM_ERANGE);
        lim = am_video_default_limits();
        lim.max_frame_pixels = 1000;
        s.n = 0;
        CHECK(am_video_sample(d, n, clips[c], 8, 1, &lim, on_frame, &s, NULL) == AM_ERANGE);
        CHECK(strstr(am_err_msg(), clips[c]) && strstr(am_err_msg(), "1000"));
        lim = am_video_default_limits();
        lim.max_bytes = n / 2;
        CHECK(am_video_sample(d, n, clips[c], 8, 1, &lim, on_frame, &s, NULL) == AM_ERANGE);
        /* Truncated: an error naming the file, or (streamable containers) fewer frames decoded,
         * never a crash. */
        for (int k = 1; k <= 3; k++) {
            frames_seen t = {0};
            int rc = am_video_sample(d, n * k / 4, clips[c], 8, 1, NULL, on_frame, &t, NULL);
            CHECK(rc == 0 ? t.n == 8 : strstr(am_err_msg(), clips[c]) != NULL);
        }
        /* Mutations. */
        uint8_t *m = am_malloc(n);
        int n_ok = 0, n_err = 0;
        const int n_mut = 40 * fuzz_scale();
        for (int it = 0; it < n_mut; it++) {
            memcpy(m, d, n);
            for (int k = 0; k < 4; k++)
                m[(size_t)((frand() + 1) * 0.5 * (double)n) % n] = (uint8_t)((frand() + 1) * 128);
            frames_seen t = {0};
            int rc = am_video_sample(m, n, clips[c], 8, 1, NULL, on_frame, &t, NULL);
            if (rc == 0) {
                n_ok++;
                CHECK_EQ_INT(t.n, 8);
            } else {
                n_err++;
                CHECK(strstr(am_err_msg(), clips[c]) != NULL);
            }
        }
        printf("  %s: %d mutations -> %d decoded, %d rejected\n", clips[c], n_mut, n_ok, n_err);
        am_free(m);
        am_free(d);
    }
    frames_seen s = {0};
    CHECK(am_video_sample("not a video at all, just some text bytes here", 44, "notes.mp4", 8, 1,
                          NULL, on_frame, &s, NULL) == AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "notes.mp4") != NULL);
    CHECK(am_video_sample("", 0, "empty.mp4", 8, 1, NULL, on_frame, &s, NULL) == AM_EFORMAT);
    CHECK(am_video_sample("x", 1, "zero.mp4", 0, 1, NULL, on_frame, &s, NULL) == AM_ERANGE);
}

/* ---- AnyMAL directory: mkencoders, load, batched encode -------------------------------------- */

static char tmpdir[256];

static void make_dir_model(am_proj_type type, const char *sub) {
    am_mkencoders_opts o = {.vision_shape = "tiny",
                            .projector = type,
                            .dtype = AM_DTYPE_F32,
                            .seed = 7,
                            .llm_dim = 64,
                            .llm_path = ".",
                            .tokenizer = NULL};
    enc_test_dir_make(tmpdir, sizeof tmpdir, "vision", sub, &o);
}

static void rm_dir_model(void) { enc_test_dir_remove(tmpdir); }

static void test_batched_encode(void) {
    char path[4096];
    const am_proj_type types[] = {AM_PROJ_PERCEIVER, AM_PROJ_MLP2X_GELU, AM_PROJ_LINEAR};
    for (int t = 0; t < 3; t++) {
        make_dir_model(types[t], am_proj_type_name(types[t]));
        am_vision_model *m = NULL;
        am_vision_encoder *e = NULL, *e1 = NULL;
        CHECK_OK(am_vision_model_load(tmpdir, &m));
        if (!m) {
            rm_dir_model();
            continue;
        }
        CHECK(!strcmp(m->layout, "anymal"));
        const int64_t FF = am_vision_frame_floats(m), D = am_vision_out_dim(m);
        /* 3 images and a 4-frame video; chunks of 3 frames so a chunk spans items. */
        CHECK_OK(am_vision_encoder_new(m, be, 2, 3, &e));
        CHECK_OK(am_vision_encoder_new(m, be, 2, 1, &e1));
        static const char *const imgs[] = {"land_q90.jpg", "rgba.png", "lossy.webp"};
        float *px = am_aligned_alloc((size_t)(7 * FF) * 4);
        for (int i = 0; i < 3; i++) {
            char rel[256];
            am_image img;
            snprintf(rel, sizeof rel, "tests/golden/vision/images/%s", imgs[i]);
            CHECK_OK(am_image_load(AM_SRC_PATH(rel, path), NULL, &img));
            CHECK_OK(am_vision_preprocess(m, &img, px + i * FF));
            am_image_fini(&img);
        }
        void *vd;
        size_t vn;
        float *vpx = NULL;
        CHECK_OK(am_read_file_limited(AM_SRC_PATH("tests/golden/vision/video/clip.mp4", path),
                                      1 << 24, &vd, &vn));
        CHECK_OK(am_vision_video_pixels(m, vd, vn, "clip.mp4", 4, 1, NULL, &vpx));
        if (vpx) memcpy(px + 3 * FF, vpx, (size_t)(4 * FF) * 4);
        const int32_t nf[4] = {1, 1, 1, 4};
        float *outb[4], *out1[4];
        am_vision_item items[4];
        int64_t off = 0;
        for (int i = 0; i < 4; i++) {
            int64_t nt = am_vision_n_tokens(m, nf[i]);
            outb[i] = am_calloc((size_t)(nt * D), 4);
            out1[i] = am_calloc((size_t)(nt * D), 4);
            items[i] = (am_vision_item){px + off * FF, nf[i], outb[i]};
            off += nf[i];
        }
        CHECK_OK(am_vision_encode(e, items, 4));
        int same = 1;
        for (int i = 0; i < 4; i++) {
            am_vision_item one = items[i];
            one.out = out1[i];
            CHECK_OK(am_vision_encode(e1, &one, 1));
            int64_t nt = am_vision_n_tokens(m, nf[i]);
            double dd = max_abs_diff(outb[i], out1[i], nt * D);
            if (dd != 0) {
                fprintf(stderr, "  %s item %d: batched vs alone differ by %.3g\n",
                        am_proj_type_name(types[t]), i, dd);
                same = 0;
            }
        }
        CHECK(same);
        printf("  %s: 3 images + 4-frame video batched == one at a time (tokens per image %lld)\n",
               am_proj_type_name(types[t]), (long long)am_vision_n_tokens(m, 1));
        for (int i = 0; i < 4; i++)
            am_free(outb[i]), am_free(out1[i]);
        am_aligned_free(px);
        am_aligned_free(vpx);
        am_free(vd);
        am_vision_encoder_destroy(&e);
        am_vision_encoder_destroy(&e1);
        am_vision_model_destroy(&m);
        rm_dir_model();
    }
}

static void test_model_dir_errors(void) {
    am_vision_model *m = NULL;
    CHECK(am_vision_model_load("/nonexistent-dir", &m) == AM_ENOTFOUND);
    CHECK(strstr(am_err_msg(), "/nonexistent-dir") != NULL);
    make_dir_model(AM_PROJ_PERCEIVER, "err");
    char p[512];
    snprintf(p, sizeof p, "%s/anymal.json", tmpdir);
    FILE *f = fopen(p, "w");
    fputs("{\"vision\": {\"image_size\": 32, \"patch_size\": 8, \"hidden_size\": 64, "
          "\"num_hidden_layers\": 3,"
          " \"num_attention_heads\": 4, \"intermediate_size\": 128, \"projector\": {\"type\": "
          "\"perceiver\","
          " \"out_dim\": 64, \"num_latents\": 8, \"heads\": 2, \"dim_head\": 16, \"depth\": "
          "\"two\"}}}",
          f);
    fclose(f);
    CHECK(am_vision_model_load(tmpdir, &m) == AM_EINVAL);
    CHECK(strstr(am_err_msg(), "depth") && strstr(am_err_msg(), "anymal.json"));
    f = fopen(p, "w");
    fputs("{\"vision\": {\"image_size\": 32, \"patch_size\": 8, \"hidden_size\": 64, "
          "\"num_hidden_layers\": 3,"
          " \"num_attention_heads\": 4, \"intermediate_size\": 256, \"projector\": {\"out_dim\": "
          "64}}}",
          f);
    fclose(f);
    CHECK(am_vision_model_load(tmpdir, &m) == AM_ESHAPE);
    CHECK(strstr(am_err_msg(), "vision_tower.safetensors") && strstr(am_err_msg(), "fc1"));
    f = fopen(p, "w");
    fputs("{not json", f);
    fclose(f);
    CHECK(am_vision_model_load(tmpdir, &m) == AM_EFORMAT);
    rm_dir_model();
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_ops_vs_reference), AM_TEST(test_vit_golden),
             AM_TEST(test_perceiver_golden), AM_TEST(test_llava_golden),
             AM_TEST(test_preprocess_golden), AM_TEST(test_bad_images), AM_TEST(test_video),
             AM_TEST(test_batched_encode), AM_TEST(test_model_dir_errors), AM_TEST(teardown))
