/* encoders/image.c - JPEG (libjpeg-turbo), PNG (libpng) and WebP (libwebp) to 8-bit RGB.
 *
 * Both libjpeg and libpng report fatal errors through a callback that must not
 * return; we longjmp back to the decode function, which frees what it
 * allocated (variables changed after setjmp are volatile) and returns an error
 * with the library's own message.
 */
#include "encoders/image.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>

am_image_limits am_image_default_limits(void) {
    return (am_image_limits){AM_IMAGE_MAX_BYTES_DEFAULT, AM_IMAGE_MAX_PIXELS_DEFAULT,
                             AM_IMAGE_MAX_SIDE_DEFAULT};
}

am_image_format am_image_sniff(const void *data, size_t len) {
    const uint8_t *p = data;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return AM_IMAGE_JPEG;
    if (len >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return AM_IMAGE_PNG;
    if (len >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return AM_IMAGE_WEBP;
    return AM_IMAGE_UNKNOWN;
}

void am_image_fini(am_image *img) {
    if (!img) return;
    am_free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* Checks the header's size against the limits before anything is allocated. */
static int check_dims(const char *name, const char *fmt, int64_t w, int64_t h,
                      const am_image_limits *lim) {
    if (w <= 0 || h <= 0)
        return am_err_set(AM_EFORMAT, "%s: %s header declares an empty image (%lld x %lld)", name,
                          fmt, (long long)w, (long long)h);
    if (w > lim->max_side || h > lim->max_side)
        return am_err_set(AM_ERANGE,
                          "%s: image is %lld x %lld pixels, over the limit of %d pixels per side",
                          name, (long long)w, (long long)h, lim->max_side);
    if (w * h > lim->max_pixels)
        return am_err_set(AM_ERANGE,
                          "%s: image is %lld x %lld = %lld pixels, over the limit of %lld pixels "
                          "(decompression bomb?)",
                          name, (long long)w, (long long)h, (long long)(w * h),
                          (long long)lim->max_pixels);
    return 0;
}

/* ---- EXIF orientation ---- */

static uint32_t rd16(const uint8_t *p, int le) { return le ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }
static uint32_t rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The orientation tag (1..8) of an APP1 Exif payload; 1 when absent or malformed
 * (a broken EXIF block is no reason to reject a photo; PIL ignores it too). */
static int exif_orientation(const uint8_t *d, size_t n) {
    if (n < 14 || memcmp(d, "Exif\0\0", 6)) return 1;
    const uint8_t *t = d + 6;
    size_t tn = n - 6;
    int le;
    if (!memcmp(t, "II", 2))
        le = 1;
    else if (!memcmp(t, "MM", 2))
        le = 0;
    else
        return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > tn || tn - ifd < 2) return 1;
    uint32_t count = rd16(t + ifd, le);
    for (uint32_t i = 0; i < count; i++) {
        size_t off = (size_t)ifd + 2 + (size_t)i * 12;
        if (off + 12 > tn) return 1;
        if (rd16(t + off, le) == 0x0112) {
            uint32_t type = rd16(t + off + 2, le);
            uint32_t v = type == 3 ? rd16(t + off + 8, le) : type == 4 ? rd32(t + off + 8, le) : 1;
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

/* Applies orientation o like PIL's ImageOps.exif_transpose. */
static int apply_orientation(am_image *img, int o) {
    if (o <= 1) return 0;
    const int64_t W = img->width, H = img->height;
    const int swap = o >= 5;
    const int64_t W2 = swap ? H : W, H2 = swap ? W : H;
    uint8_t *dst = am_malloc((size_t)(W * H * 3));
    if (!dst)
        return am_err_set(AM_ENOMEM, "cannot allocate %lld x %lld pixels", (long long)W,
                          (long long)H);
    for (int64_t y2 = 0; y2 < H2; y2++)
        for (int64_t x2 = 0; x2 < W2; x2++) {
            int64_t x, y;
            switch (o) {
            case 2:
                x = W - 1 - x2;
                y = y2;
                break; /* FLIP_LEFT_RIGHT */
            case 3:
                x = W - 1 - x2;
                y = H - 1 - y2;
                break; /* ROTATE_180 */
            case 4:
                x = x2;
                y = H - 1 - y2;
                break; /* FLIP_TOP_BOTTOM */
            case 5:
                x = y2;
                y = x2;
                break; /* TRANSPOSE */
            case 6:
                x = y2;
                y = H - 1 - x2;
                break; /* ROTATE_270 (90 clockwise) */
            case 7:
                x = W - 1 - y2;
                y = H - 1 - x2;
                break; /* TRANSVERSE */
            default:
                x = W - 1 - y2;
                y = x2;
                break; /* 8: ROTATE_90 (counter-clockwise) */
            }
            memcpy(dst + (y2 * W2 + x2) * 3, img->rgb + (y * W + x) * 3, 3);
        }
    am_free(img->rgb);
    img->rgb = dst;
    img->width = (int32_t)W2;
    img->height = (int32_t)H2;
    return 0;
}

/* ---- JPEG ---- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 64];
    int truncated;
} jpeg_err;

static void jpeg_error_exit(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    if (!e->msg[0]) c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_emit(j_common_ptr c, int level) {
    jpeg_err *e = (jpeg_err *)c->err;
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
}

static void jpeg_progress(j_common_ptr c) {
    if (!c->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (d->input_scan_number > AM_JPEG_MAX_SCANS) {
        jpeg_err *e = (jpeg_err *)c->err;
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans (CPU bomb?)",
                 AM_JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

/* PIL's MULDIV255 and cmyk2rgb (Convert.c), on PIL's CMYK = 255 - Adobe's stored values. */
static inline uint8_t muldiv255(int a, int b) {
    int t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static int decode_jpeg(const uint8_t *data, size_t len, const char *name,
                       const am_image_limits *lim, am_image *out) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    struct jpeg_progress_mgr prog = {.progress_monitor = jpeg_progress};
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile row = NULL;
    volatile int rc = 0;
    memset(&err, 0, sizeof err);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_error_exit;
    err.pub.emit_message = jpeg_emit;
    if (setjmp(err.jb)) {
        if (!rc && err.truncated)
            rc = am_err_set(AM_EFORMAT, "%s: truncated JPEG (premature end of data; then: %s)",
                            name, err.msg);
        else if (!rc)
            rc = am_err_set(AM_EFORMAT, "%s: corrupt JPEG: %s", name, err.msg);
        goto done;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &prog;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    if ((rc = check_dims(name, "JPEG", cinfo.image_width, cinfo.image_height, lim))) goto done;
    int cmyk = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB: cinfo.out_color_space = JCS_RGB; break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default:
        rc = am_err_set(AM_EUNSUPPORTED, "%s: JPEG color space %d is not supported", name,
                        (int)cinfo.jpeg_color_space);
        goto done;
    }
    int orient = 1;
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && (orient = exif_orientation(m->data, m->data_length)) != 1)
            break;
    jpeg_start_decompress(&cinfo);
    const int64_t W = cinfo.output_width, H = cinfo.output_height;
    if (!(rgb = am_malloc((size_t)(W * H * 3))) || (cmyk && !(row = am_malloc((size_t)W * 4)))) {
        rc = am_err_set(AM_ENOMEM, "%s: cannot allocate %lld x %lld pixels", name, (long long)W,
                        (long long)H);
        goto done;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        int64_t y = cinfo.output_scanline;
        JSAMPROW r = cmyk ? (JSAMPROW)row : (JSAMPROW)(rgb + y * W * 3);
        if (jpeg_read_scanlines(&cinfo, &r, 1) != 1) break;
        if (cmyk) {
            uint8_t *o = rgb + y * W * 3;
            for (int64_t x = 0; x < W; x++) {
                const uint8_t *s = row + x * 4;
                int nk = s[3]; /* 255 - PIL's K */
                for (int c = 0; c < 3; c++) {
                    int v = nk - muldiv255(255 - s[c], nk);
                    o[x * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
        }
    }
    if (err.truncated || cinfo.output_scanline < cinfo.output_height) {
        rc =
            am_err_set(AM_EFORMAT, "%s: truncated JPEG (premature end of data after %u of %u rows)",
                       name, cinfo.output_scanline, cinfo.output_height);
        goto done;
    }
    jpeg_finish_decompress(&cinfo);
    if (err.truncated) {
        rc = am_err_set(AM_EFORMAT, "%s: truncated JPEG (premature end of data)", name);
        goto done;
    }
    out->width = (int32_t)W;
    out->height = (int32_t)H;
    out->rgb = rgb;
    rgb = NULL;
    rc = apply_orientation(out, orient);
done:
    jpeg_destroy_decompress(&cinfo);
    am_free(rgb);
    am_free(row);
    return rc;
}

/* ---- PNG ---- */

typedef struct {
    const uint8_t *data;
    size_t len, pos;
    char msg[256];
} png_src;

static void png_read_mem(png_structp png, png_bytep dst, size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) png_error(png, "truncated PNG (premature end of data)");
    memcpy(dst, s->data + s->pos, n);
    s->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    if (!s->msg[0]) snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    AM_LOGD("png warning: %s", msg);
}

/* Per-chunk allocation cap for ancillary chunks (text, ICC): 8 MiB. */
#define AM_PNG_MAX_CHUNK_BYTES (8u << 20)

static int decode_png(const uint8_t *data, size_t len, const char *name, const am_image_limits *lim,
                      am_image *out) {
    /* The first chunk must be IHDR: check the declared size before libpng reads
     * anything else, so a bomb is reported as one even when its data is cut. */
    if (len >= 24 && !memcmp(data + 12, "IHDR", 4)) {
        int64_t w = (int64_t)data[16] << 24 | data[17] << 16 | data[18] << 8 | data[19];
        int64_t h = (int64_t)data[20] << 24 | data[21] << 16 | data[22] << 8 | data[23];
        int rc0 = check_dims(name, "PNG", w, h, lim);
        if (rc0) return rc0;
    }
    png_src src = {data, len, 0, ""};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile rgb = NULL;
    png_bytep *volatile rows = NULL;
    volatile int rc = 0;
    if (!png || !info) {
        rc = am_err_set(AM_ENOMEM, "%s: cannot create a PNG reader", name);
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        if (!rc) rc = am_err_set(AM_EFORMAT, "%s: corrupt PNG: %s", name, src.msg);
        goto done;
    }
    png_set_read_fn(png, &src, png_read_mem);
    /* Our limits are checked on the IHDR before libpng reads further (below and in
     * am_image_decode); libpng's own width/height caps are lifted so that the error
     * is ours, naming the limit. */
    png_set_user_limits(png, 0x7fffffffu, 0x7fffffffu);
    png_set_chunk_malloc_max(png, AM_PNG_MAX_CHUNK_BYTES);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((rc = check_dims(name, "PNG", w, h, lim))) goto done;
    int ct = png_get_color_type(png, info);
    /* Palette -> RGB, gray < 8 bits -> 8, tRNS -> alpha (then dropped), 16 -> 8
     * bits keeping the high byte (as PIL's "RGB;16B" unpacker), gray -> RGB. */
    png_set_expand(png);
    png_set_strip_16(png);
    if (ct & PNG_COLOR_MASK_ALPHA || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if (!(ct & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3 || png_get_channels(png, info) != 3) {
        rc = am_err_set(AM_EINTERNAL, "%s: PNG transforms did not give 8-bit RGB", name);
        goto done;
    }
    rgb = am_malloc((size_t)w * h * 3);
    rows = am_malloc((size_t)h * sizeof(png_bytep));
    if (!rgb || !rows) {
        rc = am_err_set(AM_ENOMEM, "%s: cannot allocate %u x %u pixels", name, w, h);
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = rgb + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    out->width = (int32_t)w;
    out->height = (int32_t)h;
    out->rgb = rgb;
    rgb = NULL;
done:
    if (png) png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    am_free(rgb);
    am_free(rows);
    return rc;
}

/* ---- WebP ---- */

static int decode_webp(const uint8_t *data, size_t len, const char *name,
                       const am_image_limits *lim, am_image *out) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, len, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA) return am_err_set(AM_EFORMAT, "%s: truncated WebP", name);
    if (st != VP8_STATUS_OK)
        return am_err_set(AM_EFORMAT, "%s: corrupt WebP header (status %d)", name, (int)st);
    if (f.has_animation)
        return am_err_set(AM_EUNSUPPORTED, "%s: animated WebP is not supported", name);
    int rc = check_dims(name, "WebP", f.width, f.height, lim);
    if (rc) return rc;
    size_t n = (size_t)f.width * (size_t)f.height * 3;
    uint8_t *rgb = am_malloc(n);
    if (!rgb)
        return am_err_set(AM_ENOMEM, "%s: cannot allocate %d x %d pixels", name, f.width, f.height);
    if (!WebPDecodeRGBInto(data, len, rgb, n, f.width * 3)) {
        am_free(rgb);
        return am_err_set(AM_EFORMAT, "%s: corrupt or truncated WebP data", name);
    }
    out->width = f.width;
    out->height = f.height;
    out->rgb = rgb;
    return 0;
}

int am_image_decode(const void *data, size_t len, const char *name, const am_image_limits *lim,
                    am_image *out) {
    memset(out, 0, sizeof *out);
    am_image_limits dl = am_image_default_limits();
    if (!lim) lim = &dl;
    if (!name) name = "<image>";
    if (len > lim->max_bytes)
        return am_err_set(AM_ERANGE, "%s: %zu bytes, over the limit of %zu bytes per image", name,
                          len, lim->max_bytes);
    if (len == 0) return am_err_set(AM_EFORMAT, "%s: empty file", name);
    int rc;
    switch (am_image_sniff(data, len)) {
    case AM_IMAGE_JPEG: rc = decode_jpeg(data, len, name, lim, out); break;
    case AM_IMAGE_PNG: rc = decode_png(data, len, name, lim, out); break;
    case AM_IMAGE_WEBP: rc = decode_webp(data, len, name, lim, out); break;
    default:
        return am_err_set(AM_EFORMAT,
                          "%s: not a JPEG, PNG or WebP image (unrecognised first bytes)", name);
    }
    if (rc) am_image_fini(out);
    return rc;
}

int am_image_load(const char *path, const am_image_limits *lim, am_image *out) {
    memset(out, 0, sizeof *out);
    am_image_limits dl = am_image_default_limits();
    if (!lim) lim = &dl;
    void *data;
    size_t len;
    int rc = am_read_file_limited(path, lim->max_bytes, &data, &len);
    if (rc) return rc;
    rc = am_image_decode(data, len, path, lim, out);
    am_free(data);
    return rc;
}
