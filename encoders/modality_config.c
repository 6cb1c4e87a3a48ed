/* encoders/modality_config.c - the config-only table of encoders/modality.h: rows per input.
 *
 * In am_enc_core with the config readers it calls (vision_config.c,
 * audio_config.c): the shard leader links this without any media library.
 */
#include "core/alloc.h"
#include "core/error.h"
#include "encoders/audio.h"
#include "encoders/modality.h"
#include "encoders/vision.h"

typedef struct cfg_ops {
    /* *cfg owned (free); NULL load: the modality has no config-only rows. */
    int (*load)(const char *dir, void **cfg);
    void (*free)(void *cfg);
    int64_t (*rows)(const void *cfg, uint32_t frames);
} cfg_ops;

/* load and free of a config type am_<mod>_config (am_<mod>_config_load / _fini). */
#define AM__MOD_CONFIG(mod)                                                                        \
    static int mod##_load(const char *dir, void **cfg) {                                           \
        am_##mod##_config *c = am_calloc(1, sizeof *c);                                            \
        if (!c) return am_err_set(AM_ENOMEM, "out of memory");                                     \
        int rc = am_##mod##_config_load(dir, c);                                                   \
        if (rc)                                                                                    \
            am_free(c);                                                                            \
        else                                                                                       \
            *cfg = c;                                                                              \
        return rc;                                                                                 \
    }                                                                                              \
    static void mod##_free(void *cfg) {                                                            \
        if (cfg) am_##mod##_config_fini(cfg);                                                      \
        am_free(cfg);                                                                              \
    }

AM__MOD_CONFIG(vision)
AM__MOD_CONFIG(audio)

static int64_t image_rows(const void *cfg, uint32_t frames) {
    (void)frames;
    return am_vision_config_n_tokens(cfg, 1);
}

static int64_t video_rows(const void *cfg, uint32_t frames) {
    const am_vision_config *c = cfg;
    return am_vision_config_n_tokens(c, frames ? (int32_t)frames : c->video_frames);
}

static int64_t audio_rows(const void *cfg, uint32_t frames) {
    (void)frames;
    return am_audio_config_n_tokens(cfg);
}

/* IMU: a request gives rows per 5 s window, and the signal decides the windows. */
static const cfg_ops table[AM_MOD_COUNT] = {
    [AM_MOD_IMAGE] = {vision_load, vision_free, image_rows},
    [AM_MOD_VIDEO] = {vision_load, vision_free, video_rows},
    [AM_MOD_AUDIO] = {audio_load, audio_free, audio_rows},
    [AM_MOD_IMU] = {0},
};

struct am_mod_config {
    void *cfg[AM_MOD_COUNT];
    int owns[AM_MOD_COUNT]; /* 0: shares an earlier modality's cfg (same load) */
};

int am_mod_config_load(const char *dir, am_mod_config **out) {
    *out = NULL;
    am_mod_config *c = am_calloc(1, sizeof *c);
    if (!c) return am_err_set(AM_ENOMEM, "modality configs: out of memory");
    for (int m = 0; m < AM_MOD_COUNT; m++) {
        if (!table[m].load) continue;
        for (int k = 0; k < m && !c->cfg[m]; k++)
            if (table[k].load == table[m].load) c->cfg[m] = c->cfg[k];
        if (c->cfg[m]) continue;
        /* Absent or broken: no rows from the config (see the header). */
        if (!table[m].load(dir, &c->cfg[m]))
            c->owns[m] = 1;
        else
            c->cfg[m] = NULL;
        am_err_clear();
    }
    *out = c;
    return 0;
}

void am_mod_config_destroy(am_mod_config **p) {
    if (!p || !*p) return;
    for (int m = 0; m < AM_MOD_COUNT; m++)
        if ((*p)->owns[m]) table[m].free((*p)->cfg[m]);
    am_free(*p);
    *p = NULL;
}

int64_t am_mod_config_rows(const am_mod_config *c, int m, uint32_t frames) {
    if (!c || m < 0 || m >= AM_MOD_COUNT || !c->cfg[m]) return 0;
    return table[m].rows(c->cfg[m], frames);
}
