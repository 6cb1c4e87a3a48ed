/* encoders/image.h - decoding JPEG, PNG and WebP into 8-bit RGB, with limits.
 *
 * The result is what PIL's Image.open(...).convert("RGB") gives after
 * ImageOps.exif_transpose (as transformers' load_image does): grayscale is
 * replicated, alpha is dropped (not composited: PIL's convert("RGB") drops
 * it), palettes are expanded, 16-bit samples keep their high byte, CMYK JPEGs
 * (Adobe-inverted, as PIL assumes) are converted with PIL's cmyk2rgb, and the
 * EXIF orientation of a JPEG (APP1 tag 0x0112, values 2..8) is applied.
 *
 * Input comes from users: every failure is an error whose message names the
 * file (the `name` given) and what was wrong; nothing crashes, nothing reads
 * outside the buffer. Limits are checked on the header before any pixel
 * buffer is allocated (decompression bombs: a few KB of PNG can declare
 * gigapixels):
 *   AM_ERANGE       over max_bytes, max_pixels or max_side (message names the limit)
 *   AM_EFORMAT      not a JPEG/PNG/WebP (magic bytes), corrupt or truncated data
 *   AM_EUNSUPPORTED a valid but unhandled variant (animated WebP, odd JPEG color spaces)
 *   AM_EIO          the file cannot be read; AM_ENOMEM
 */
#ifndef AM_IMAGE_H
#define AM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Defaults: 64 MiB per file (Triton's HTTP input limit), PIL's
 * MAX_IMAGE_PIXELS (89478485, 0.25 GiB of RGBA), and 32768 pixels per side. */
#define AM_IMAGE_MAX_BYTES_DEFAULT  ((size_t)64 << 20)
#define AM_IMAGE_MAX_PIXELS_DEFAULT 89478485ll
#define AM_IMAGE_MAX_SIDE_DEFAULT   32768
/* What an encoder worker accepts unless told (--max-pixels): 4096 x 4096. The towers
 * see 224-336 pixels a side, and a 9000 x 9000 PNG of 236 KB decodes to 243 MB of RGB
 * that delays every image behind it (docs/reliability.md). */
#define AM_IMAGE_SERVE_MAX_PIXELS_DEFAULT 16777216ll
/* A progressive JPEG may carry hundreds of scans that each re-decode the whole
 * image (a CPU bomb); libjpeg-turbo's own tools stop at this many. */
#define AM_JPEG_MAX_SCANS 500

typedef struct am_image_limits {
    size_t max_bytes;   /* encoded size */
    int64_t max_pixels; /* width * height */
    int32_t max_side;   /* width and height each */
} am_image_limits;

/* 8-bit RGB, row-major, no padding. */
typedef struct am_image {
    int32_t width, height;
    uint8_t *rgb; /* (H, W, 3), owned (am_free) */
} am_image;

typedef enum { AM_IMAGE_UNKNOWN = 0, AM_IMAGE_JPEG, AM_IMAGE_PNG, AM_IMAGE_WEBP } am_image_format;

/* The defaults above. */
am_image_limits am_image_default_limits(void);
/* Recognises the format from the first bytes (never from the name). */
am_image_format am_image_sniff(const void *data, size_t len);

/* Decodes len bytes; name is used in messages only. lim NULL = defaults.
 * On success *out owns its pixels (release with am_image_fini); on failure
 * *out is zeroed. */
int am_image_decode(const void *data, size_t len, const char *name, const am_image_limits *lim,
                    am_image *out);
/* Reads the file (at most lim->max_bytes) and decodes it. */
int am_image_load(const char *path, const am_image_limits *lim, am_image *out);
/* Frees the pixels; accepts a zeroed image. */
void am_image_fini(am_image *img);

#endif
