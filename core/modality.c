/* core/modality.c - names of the modality list (core/modality.h). */
#include "core/modality.h"

#include "core/error.h"

#include <stdio.h>
#include <string.h>

#define AM__MODALITY_NAME(id, name) name,
static const char *const names[AM_MOD_COUNT] = {AM_MODALITY_LIST(AM__MODALITY_NAME)};

const char *am_modality_name(int m) { return m >= 0 && m < AM_MOD_COUNT ? names[m] : "?"; }

const char *am_modality_list(char *buf, size_t cap, const char *sep, const char *last_sep) {
    size_t at = 0;
    if (cap) buf[0] = 0;
    for (int m = 0; m < AM_MOD_COUNT && at < cap; m++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%s",
                               m == 0                  ? ""
                               : m == AM_MOD_COUNT - 1 ? last_sep
                                                       : sep,
                               names[m]);
    return buf;
}

int am_modality_parse(const char *s, am_modality *out) {
    for (int m = 0; m < AM_MOD_COUNT; m++)
        if (!strcmp(s, names[m])) {
            *out = (am_modality)m;
            return 0;
        }
    char want[256];
    return am_err_set(AM_EINVAL, "unknown modality '%s' (want %s)", s,
                      am_modality_list(want, sizeof want, ", ", " or "));
}
