#!/usr/bin/env python3
"""Golden fixtures for the CLAP audio encoder (tests/test_audio.c).

Run once (needs PyPI torch, transformers, safetensors, numpy, and the Debian
commands espeak-ng, sox and ffmpeg); the output is committed, so tests never
need Python:
    python3 tests/golden/audio/gen_audio_golden.py tests/golden/audio

Writes into OUT:
  speech48.wav            espeak-ng speech resampled by sox to 48 kHz, 16-bit mono PCM
  speech48.flac/.ogg/.mp3 the same clip as FLAC (lossless), OGG/Vorbis and MP3 (ffmpeg)
  speech16k_stereo.flac   16 kHz stereo: left = the speech, right = the speech * 0.5
  logmel_speech48.f32     (1001, 64) HF ClapFeatureExtractor input_features of speech48.wav
                          (samples = int16 / 32768), configured as laion/clap-htsat-unfused's
                          preprocessor_config.json: 48 kHz, n_fft 1024, hop 480, 64 mels
                          50-14000 Hz, truncation rand_trunc (Slaney filters), repeatpad
  logmel_stereo16k.f32    (1001, 64) the same for speech16k_stereo.flac after the mean of the
                          two channels and sox's rate effect to 48 kHz (sox -> libsoxr's
                          algorithm at the same "high" quality the encoder uses)
  logmel_chirp.f32        (143, 64) frames 0, 7, 14, ... of a 12 s chirp, cut to its first
                          10 s (what the encoder does with long clips; HF would crop at random)
  htsat_small/            a random-init HF ClapAudioModelWithProjection at a small config
                          (spec 64, 16 mels, patch 4, embed 8, depths 2-2-2, heads 1-2-4,
                          window 4, projection 24): model.safetensors (its state_dict
                          without buffers), feats50.f32 (2, 50, 16) and feats256.f32
                          (1, 256, 16) log-mel-like inputs, and the outputs pooled50.f32
                          (2, 32), embeds50.f32 (2, 24), embeds256.f32 (1, 24)
  htsat_tiny_embed.f32    (512) audio_embeds of HF ClapAudioModelWithProjection at the real
                          HTSAT-tiny config for logmel_speech48, with the weights that
                          `anymal mkmodel --with-encoders --audio htsat-tiny --seed 11` writes
                          (rebuilt here from the documented formula of encoders/mkencoders.h)
  golden.json             the chirp formula, seeds, configs
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(2024)
np.random.seed(2024)
MKENC_SEED = 11


def path(*p):
    return os.path.join(OUT, *p)


def f32(p, a):
    np.ascontiguousarray(a.detach().numpy() if torch.is_tensor(a) else a, dtype="<f4").tofile(p)


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_f32_raw(p, channels=1):
    return np.fromfile(p, dtype="<f4").reshape(-1, channels)


# ---- audio files ---------------------------------------------------------------
tmp = tempfile.mkdtemp()
raw = os.path.join(tmp, "speech.wav")
run("espeak-ng", "-w", raw, "Hello from the audio encoder.")
run("sox", raw, "-r", "48000", "-b", "16", path("speech48.wav"))
run("sox", path("speech48.wav"), path("speech48.flac"))
run("ffmpeg", "-v", "error", "-y", "-i", path("speech48.wav"), "-c:a", "libvorbis", "-q:a", "3",
    path("speech48.ogg"))
run("ffmpeg", "-v", "error", "-y", "-i", path("speech48.wav"), "-c:a", "libmp3lame", "-b:a", "64k",
    path("speech48.mp3"))
run("sox", raw, "-r", "16000", "-b", "16", "-c", "2", path("speech16k_stereo.flac"), "remix", "1",
    "1v0.5")

# The samples libsndfile gives: int16 / 32768 (read through sox as raw float32: exact).
s48 = os.path.join(tmp, "s48.f32")
run("sox", path("speech48.wav"), "-t", "f32", s48)
speech48 = read_f32_raw(s48)[:, 0]
st = os.path.join(tmp, "st.f32")
run("sox", path("speech16k_stereo.flac"), "-t", "f32", st)
stereo = read_f32_raw(st, 2)
mono16 = stereo.astype(np.float64).mean(axis=1).astype(np.float32)
m16 = os.path.join(tmp, "m16.f32")
mono16.tofile(m16)
m48 = os.path.join(tmp, "m48.f32")
run("sox", "-t", "f32", "-r", "16000", "-c", "1", m16, "-t", "f32", m48, "rate", "48000")
stereo48 = read_f32_raw(m48)[:, 0]

# ---- log-mel (HF ClapFeatureExtractor, laion/clap-htsat-unfused settings) ---------
fe = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                          fft_window_size=1024, frequency_min=50, frequency_max=14000,
                          truncation="rand_trunc", padding="repeatpad")


def logmel(x):
    assert len(x) <= 480000  # longer clips: the caller cuts (rand_trunc would crop at random)
    feats = fe(x.astype(np.float32), sampling_rate=48000, return_tensors="np")["input_features"]
    return feats[0, 0]  # (1001, 64)


mel_speech = logmel(speech48)
f32(path("logmel_speech48.f32"), mel_speech)
f32(path("logmel_stereo16k.f32"), logmel(stereo48))
CHIRP = {"seconds": 12.0, "amp": 0.3, "f0": 200.0, "rate": 300.0,
         "formula": "x[n] = (float)(amp * sin(2*pi*(f0*t + 0.5*rate*t*t))), t = n / 48000"}
n = np.arange(int(CHIRP["seconds"] * 48000), dtype=np.float64)
t = n / 48000.0
chirp = (CHIRP["amp"] * np.sin(2 * np.pi * (CHIRP["f0"] * t + 0.5 * CHIRP["rate"] * t * t))).astype(np.float32)
f32(path("logmel_chirp.f32"), logmel(chirp[:480000])[::7])

# ---- HTSAT at a small config (HF class, random weights) --------------------------
def reinit(model):
    """Unit-scale activations: linear/conv weights U with variance 1/fan_in, norm weights
    1 + U(-0.1, 0.1), biases U(-0.02, 0.02), relative-position tables U(-1, 1), BatchNorm
    running mean U(-0.5, 0.5) and variance U(0.5, 1.5)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(2 * torch.rand_like(p) - 1)
            elif ("norm" in name) and name.endswith("weight"):
                p.copy_(1 + 0.1 * (2 * torch.rand_like(p) - 1))
            elif name.endswith("bias"):
                p.copy_(0.02 * (2 * torch.rand_like(p) - 1))
            else:
                fan_in = p[0].numel()
                p.copy_((3.0 / fan_in) ** 0.5 * (2 * torch.rand_like(p) - 1))
        bn = model.audio_model.audio_encoder.batch_norm
        bn.running_mean.copy_(torch.rand_like(bn.running_mean) - 0.5)
        bn.running_var.copy_(0.5 + torch.rand_like(bn.running_var))


small = dict(spec_size=64, num_mel_bins=16, patch_size=4, patch_stride=[4, 4], patch_embeds_hidden_size=8,
             depths=[2, 2, 2], num_attention_heads=[1, 2, 4], window_size=4, hidden_size=32,
             projection_dim=24, mlp_ratio=4.0, hidden_act="gelu", projection_hidden_act="relu",
             enable_fusion=False, enable_patch_layer_norm=True, layer_norm_eps=1e-5)
model = ClapAudioModelWithProjection(ClapAudioConfig(**small)).eval()
reinit(model)
os.makedirs(path("htsat_small"), exist_ok=True)
sd = {k: v.contiguous() for k, v in model.state_dict().items()
      if "relative_position_index" not in k and "num_batches_tracked" not in k}
save_file(sd, path("htsat_small", "model.safetensors"), metadata={"format": "pt"})
feats50 = torch.randn(2, 1, 50, 16)
feats256 = torch.randn(1, 1, 256, 16)
with torch.no_grad():
    pooled50 = model.audio_model(input_features=feats50).pooler_output
    emb50 = model(input_features=feats50).audio_embeds
    emb256 = model(input_features=feats256).audio_embeds
f32(path("htsat_small", "feats50.f32"), feats50[:, 0])
f32(path("htsat_small", "feats256.f32"), feats256[:, 0])
f32(path("htsat_small", "pooled50.f32"), pooled50)
f32(path("htsat_small", "embeds50.f32"), emb50)
f32(path("htsat_small", "embeds256.f32"), emb256)


# ---- HTSAT-tiny with `anymal mkmodel` weights --------------------------------------
M64 = (1 << 64) - 1


def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix64_int(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def mk_uniform(seed, name, count):
    """am_mkencoders_uniform(seed, name, i) for i < count, as float32."""
    stream = mix64_int((seed * 0x100000001B3 + fnv1a(name)) & M64)
    i = np.arange(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        r = mix64(np.uint64(stream) + np.uint64(0x9E3779B97F4A7C15) * (i + np.uint64(1)))
    return (r >> np.uint64(40)).astype(np.float32) / np.float32(8388608.0) - np.float32(1.0)


def mk_tensor(seed, name, kind, shape, fan_in=0):
    u = mk_uniform(seed, name, int(np.prod(shape)))
    if kind == "linear":
        v = np.sqrt(np.float32(3.0) / np.float32(fan_in)).astype(np.float32) * u
    elif kind == "embed":
        v = np.sqrt(np.float32(3.0)).astype(np.float32) * u
    elif kind == "norm":
        v = np.float32(1.0) + np.float32(0.1) * u
    else:
        v = np.float32(0.02) * u
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def mk_kind(name, shape):
    """The init kind and fan-in encoders/mkencoders.c build_audio uses for each HF name."""
    if "relative_position_bias_table" in name:
        return "embed", 0
    if "batch_norm" in name:
        return ("norm" if name.endswith(("weight", "running_var")) else "bias"), 0
    if name.endswith("bias"):
        return "bias", 0
    if "norm" in name or "layernorm" in name:
        return "norm", 0
    return "linear", int(np.prod(shape[1:]))


tiny_cfg = ClapAudioConfig(enable_fusion=False, projection_dim=512, hidden_size=768)
tiny = ClapAudioModelWithProjection(tiny_cfg).eval()
state = {}
for name, p in tiny.state_dict().items():
    if "relative_position_index" in name or "num_batches_tracked" in name:
        continue
    kind, fan = mk_kind(name, tuple(p.shape))
    state[name] = mk_tensor(MKENC_SEED, name, kind, tuple(p.shape), fan)
missing, unexpected = tiny.load_state_dict(state, strict=False)
assert not unexpected and all("relative_position_index" in k or "num_batches_tracked" in k for k in missing), (missing, unexpected)
with torch.no_grad():
    emb = tiny(input_features=torch.from_numpy(mel_speech)[None, None]).audio_embeds[0]
f32(path("htsat_tiny_embed.f32"), emb)

json.dump({"chirp": CHIRP, "chirp_frame_step": 7, "mkencoders_seed": MKENC_SEED,
           "htsat_small": small, "htsat_tiny": "ClapAudioConfig defaults (laion/clap-htsat-unfused)",
           "speech_samples": int(len(speech48)), "stereo16k_samples": int(len(stereo)),
           "versions": {"torch": torch.__version__, "numpy": np.__version__,
                        "transformers": __import__("transformers").__version__}},
          open(path("golden.json"), "w"), indent=1)
print("wrote", OUT)
