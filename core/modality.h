/* core/modality.h - the one list of modalities: ids (the wire's, proto/PROTOCOL.md) and names.
 *
 * The list lives in core because both sides of the layering need it: proto/
 * puts the ids and names on the wire, encoders/modality.h keeps one table of
 * operations per id. Adding a modality adds one line here (its id is its
 * position, so new ones go at the end) and one entry in each of the tables
 * of encoders/modality.h; nothing in workers/ or tools/.
 */
#ifndef AM_MODALITY_H
#define AM_MODALITY_H

#include <stddef.h>

/* X(ID, "name") for every modality, in id order. */
#define AM_MODALITY_LIST(X)                                                                        \
    X(AM_MOD_IMAGE, "image")                                                                       \
    X(AM_MOD_VIDEO, "video")                                                                       \
    X(AM_MOD_AUDIO, "audio")                                                                       \
    X(AM_MOD_IMU, "imu")

#define AM__MODALITY_ID(id, name) id,
typedef enum { AM_MODALITY_LIST(AM__MODALITY_ID) AM_MOD_COUNT } am_modality;
#undef AM__MODALITY_ID

/* The wire name ("image", "video", ...), "?" for an id outside the list. */
const char *am_modality_name(int m);
/* Writes the names in id order into buf (cap bytes, truncated to fit), sep between them
 * and last_sep before the last: (", ", " or ") gives "image, video, audio or imu".
 * Messages and help texts list the modalities with it, so a new one needs no edit there. */
const char *am_modality_list(char *buf, size_t cap, const char *sep, const char *last_sep);
/* The id of a wire name; AM_EINVAL naming s and the names there are. */
int am_modality_parse(const char *s, am_modality *out);

#endif
