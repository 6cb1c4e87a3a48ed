/* api/api_internal.h - what api/'s files share: the parse state, owned-storage helpers,
 * UTF-8 helpers and the media part parser (media.c).
 */
#ifndef AM_API_INTERNAL_H
#define AM_API_INTERNAL_H

#include "api/openai.h"

/* One parse: the request being filled, where errors go, the options in force. */
typedef struct am__api_parse {
    am_api_request *r;
    am_api_error *err;
    am_api_opts o;   /* defaults filled in */
    char *root_real; /* realpath of o.media_root, NULL when none (owned) */
} am__api_parse;

/* Keeps s (heap, am_free) in the request; returns s, or NULL (and frees s) when out of
 * memory. */
char *am__api_keep(am_api_request *r, char *s);

/* The media part of type `type` ("image_url", "input_audio", ...) in part (a content
 * part object) at JSON path `path` into *out, its bytes owned by the request. */
int am__api_media(am__api_parse *P, const cJSON *part, const char *type, const char *path,
                  am_client_part *out);

/* Bytes [*b, *e) of s[0..len) without Python's str.isspace() code points at either end
 * (malformed UTF-8 is not whitespace). */
void am__api_strip(const char *s, size_t len, size_t *b, size_t *e);

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when malformed or truncated. */
int am__api_utf8_len(const unsigned char *s, size_t n, uint32_t *cp);

#endif
