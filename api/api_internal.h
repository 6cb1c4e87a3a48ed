/* api/api_internal.h - what api/'s files share: the parse state, owned-storage helpers,
 * and the media part parser (media.c).
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

#endif
