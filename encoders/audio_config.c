/* encoders/audio_config.c - the "audio" section of anymal.json, without the weights.
 *
 * Apart from audio.c so that the config alone (what the shard leader needs to
 * size audio slots) links without FFTW and the audio decoders.
 */
#include "encoders/audio.h"

#include "core/alloc.h"
#include "core/error.h"
#include "encoders/enc_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ClapAudioConfig keys into an HTSAT config. */
static int parse_htsat(const char *file, const cJSON *a, am_htsat_config *c) {
    const char *act = am_act_name(c->act), *pact = am_act_name(c->proj_act);
    int32_t stride = c->patch_size, in_ch = 1, nd = c->n_stages, nh = c->n_stages;
    int fusion = 0, flatten = 1;
    int rc;
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(a, "patch_stride");
    if ((rc = am__json_int(file, a, "spec_size", 1, 4096, &c->spec_size)) ||
        (rc = am__json_int(file, a, "num_mel_bins", 1, 4096, &c->n_mels)) ||
        (rc = am__json_int(file, a, "patch_size", 1, 256, &c->patch_size)) ||
        (rc = am__json_int(file, a, "patch_embeds_hidden_size", 1, 65536, &c->embed_dim)) ||
        (rc = am__json_ints(file, a, "depths", AM_HTSAT_MAX_STAGES, 1, AM_HTSAT_MAX_DEPTH,
                            c->depths, &nd)) ||
        (rc = am__json_ints(file, a, "num_attention_heads", AM_HTSAT_MAX_STAGES, 1, 4096,
                            c->n_heads, &nh)) ||
        (rc = am__json_int(file, a, "window_size", 1, 64, &c->window)) ||
        (rc = am__json_float(file, a, "mlp_ratio", &c->mlp_ratio)) ||
        (rc = am__json_float(file, a, "layer_norm_eps", &c->ln_eps)) ||
        (rc = am__json_str(file, a, "hidden_act", &act)) ||
        (rc = am__json_int(file, a, "projection_dim", 1, 65536, &c->proj_dim)) ||
        (rc = am__json_str(file, a, "projection_hidden_act", &pact)) ||
        (rc = am__json_bool(file, a, "enable_patch_layer_norm", &c->patch_norm)) ||
        (rc = am__json_bool(file, a, "enable_fusion", &fusion)) ||
        (rc = am__json_bool(file, a, "flatten_patch_embeds", &flatten)) ||
        (rc = am__json_int(file, a, "patch_embed_input_channels", 1, 64, &in_ch)))
        return rc;
    if (cJSON_IsArray(ps)) {
        int32_t st[2], n = 0;
        if ((rc = am__json_ints(file, a, "patch_stride", 2, 1, 256, st, &n))) return rc;
        stride = n == 2 && st[0] != st[1] ? -1 : st[0];
    } else if ((rc = am__json_int(file, a, "patch_stride", 1, 256, &stride))) {
        return rc;
    }
    if (fusion)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: audio \"enable_fusion\": the fused CLAP models are not supported "
                          "(use an unfused one, e.g. laion/clap-htsat-unfused)",
                          file);
    if (stride != c->patch_size || in_ch != 1 || !flatten)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: audio patch_stride must equal patch_size, "
                          "patch_embed_input_channels be 1 and flatten_patch_embeds true",
                          file);
    if (nd != nh)
        return am_err_set(AM_EINVAL,
                          "%s: audio \"depths\" has %d stages, \"num_attention_heads\" %d", file,
                          nd, nh);
    c->n_stages = nd;
    if ((rc = am_act_parse(act, &c->act))) return am_err_prefix(rc, "%s: audio hidden_act", file);
    if ((rc = am_act_parse(pact, &c->proj_act)))
        return am_err_prefix(rc, "%s: audio projection_hidden_act", file);
    if ((rc = am_htsat_config_check(c))) return am_err_prefix(rc, "%s", file);
    return 0;
}

static int parse_frontend(const char *file, const cJSON *pre, am_melspec_config *f) {
    const char *pad = am_melspec_padding_name(f->padding),
               *scale = am_melspec_scale_name(f->mel_scale);
    float max_s = (float)f->max_samples / (float)f->sample_rate;
    int rc;
    if ((rc = am__json_int(file, pre, "sampling_rate", 1000, 384000, &f->sample_rate)) ||
        (rc = am__json_int(file, pre, "fft_window_size", 16, 65536, &f->n_fft)) ||
        (rc = am__json_int(file, pre, "hop_length", 1, 1 << 20, &f->hop)) ||
        (rc = am__json_int(file, pre, "feature_size", 1, 4096, &f->n_mels)) ||
        (rc = am__json_float(file, pre, "frequency_min", &f->fmin)) ||
        (rc = am__json_float(file, pre, "frequency_max", &f->fmax)) ||
        (rc = am__json_float(file, pre, "max_length_s", &max_s)) ||
        (rc = am__json_str(file, pre, "padding", &pad)) ||
        (rc = am__json_str(file, pre, "mel_scale", &scale)))
        return rc;
    if (!(max_s > 0 && max_s <= 3600))
        return am_err_set(AM_EINVAL, "%s: audio preprocess max_length_s %g not in (0, 3600]", file,
                          (double)max_s);
    f->max_samples = (int32_t)lround((double)max_s * f->sample_rate);
    if ((rc = am_melspec_parse_padding(pad, &f->padding)) ||
        (rc = am_melspec_parse_scale(scale, &f->mel_scale)))
        return am_err_prefix(rc, "%s", file);
    if ((rc = am_melspec_config_check(f))) return am_err_prefix(rc, "%s", file);
    return 0;
}

int am_audio_config_load(const char *dir, am_audio_config *c) {
    *c = (am_audio_config){0};
    char cfg_path[4096];
    cJSON *root = NULL;
    const cJSON *a;
    int rc = am__config_section(dir, "audio", "audio", cfg_path, sizeof cfg_path, &root, &a);
    if (rc) return rc;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(a, "preprocess");
    const char *clap_prefix = "audio_projection.";
    am_htsat_shape("htsat-tiny", &c->enc_cfg);
    c->fe = am_melspec_clap_default();
    if ((rc = am__json_str(cfg_path, a, "projection_prefix", &clap_prefix)) ||
        (rc = am__json_bool(cfg_path, a, "normalize", &c->normalize)) ||
        (rc = parse_htsat(cfg_path, a, &c->enc_cfg)) ||
        (rc = parse_frontend(cfg_path, pre, &c->fe)))
        goto fail;
    if (c->fe.n_mels != c->enc_cfg.n_mels) {
        rc = am_err_set(AM_EINVAL, "%s: audio preprocess feature_size %d != num_mel_bins %d",
                        cfg_path, c->fe.n_mels, c->enc_cfg.n_mels);
        goto fail;
    }
    if (am_melspec_frames(&c->fe) > am_htsat_max_frames(&c->enc_cfg)) {
        rc = am_err_set(AM_EINVAL,
                        "%s: %lld log-mel frames per clip do not fit the %d x %d spectrogram "
                        "image (at most %lld)",
                        cfg_path, (long long)am_melspec_frames(&c->fe), c->enc_cfg.spec_size,
                        c->enc_cfg.spec_size, (long long)am_htsat_max_frames(&c->enc_cfg));
        goto fail;
    }
    if ((rc = am__json_pooled_section(cfg_path, root, a, "audio", "audio_encoder.safetensors",
                                      "audio_model.audio_encoder.", c->enc_cfg.proj_dim,
                                      &c->proj_cfg, &c->files)))
        goto fail;
    if (!(c->clap_prefix = am_strdup(clap_prefix))) {
        rc = am_err_set(AM_ENOMEM, "%s: out of memory", cfg_path);
        goto fail;
    }
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    am_audio_config_fini(c);
    return rc;
}

void am_audio_config_fini(am_audio_config *c) {
    am__enc_files_fini(&c->files);
    am_free(c->clap_prefix);
    c->clap_prefix = NULL;
}

int64_t am_audio_config_n_tokens(const am_audio_config *c) {
    return am_proj_config_n_tokens(&c->proj_cfg, 1, 1);
}
