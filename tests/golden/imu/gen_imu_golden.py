#!/usr/bin/env python3
"""Golden fixtures for the IMU2CLIP motion encoder and IMU input (tests/test_imu.c).

Run once (needs PyPI torch, safetensors, numpy); the output is committed:
    python3 tests/golden/imu/gen_imu_golden.py tests/golden/imu

The PyTorch reference below is written from facebookresearch/imu2clip's
lib/imu_models.py (MW2StackRNNPooling and its Block), keeping the reference's
module layout so that the state_dict names are the ones its checkpoints use:
  net = Sequential(GroupNorm(2, 6), Block(6, D, 10), Block(D, D, 5), Block(D, D, 5),
                   GroupNorm(4, D), GRU(batch_first, input D, hidden H))
  Block = Sequential(Conv1d(dilation 2, no bias), MaxPool1d(3)) under ".net"
  forward(x) = net(x)[1][0]: the GRU reads the (N, D, 32) tensor as D steps of 32 features.
The resampler is torchaudio.functional.resample (which IMU2CLIP's resampleIMU calls) written
out from torchaudio's _get_sinc_resample_kernel / _apply_sinc_resample_kernel
(sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99), since torchaudio is not installed.

Writes into OUT:
  small/model.safetensors  a random-init encoder with D = 32, H = 48 (names "net.*")
  small/windows.f32        (3, 6, 1000) inputs with different scales per channel
  small/out.f32            (3, 48) last hidden states
  small/out_timeaxis.f32   (3, 48) what a GRU over the time axis would give (must differ)
  imu100.csv               7.3 s at 100 Hz with a leading timestamp column in milliseconds
  imu100_200hz.f32         (1460, 6) its resampled signal at 200 Hz
  imu50.npy                (6, 260) channel-major float32 at 50 Hz (no timestamps)
  imu50_200hz.f32          (1040, 6)
  imu333.npy               (999, 7) float64 with timestamps in seconds at 333 Hz
  imu333_200hz.f32         (600, 6)
  imu2clip_real_out.f32    (2, 512) the real-shape encoder with the weights
                           `anymal mkmodel --with-encoders --imu imu2clip --seed 11` writes (rebuilt
                           from encoders/mkencoders.h's formula) on the two windows of imu100.csv
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(os.path.join(OUT, "small"), exist_ok=True)
torch.manual_seed(7)
np.random.seed(7)
MKENC_SEED = 11


def path(*p):
    return os.path.join(OUT, *p)


def f32(p, a):
    np.ascontiguousarray(a.detach().numpy() if torch.is_tensor(a) else a, dtype="<f4").tofile(p)


class Block(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(cin, cout, kernel_size=k, dilation=2, bias=False),
                                 nn.MaxPool1d(kernel_size=3))

    def forward(self, x):
        return self.net(x)


class MW2StackRNNPooling(nn.Module):
    def __init__(self, input_dim=32, size_embeddings=512):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(2, 6), Block(6, input_dim, 10), Block(input_dim, input_dim, 5),
                                 Block(input_dim, input_dim, 5), nn.GroupNorm(4, input_dim),
                                 nn.GRU(batch_first=True, input_size=input_dim, hidden_size=size_embeddings))

    def forward(self, x):
        return self.net(x)[1][0]

    def forward_time_axis(self, x):  # NOT the reference: the GRU over time (for the quirk check)
        h = self.net[:5](x)
        return self.net[5](h.transpose(1, 2))[1][0]


def reinit(m):
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in ("net.0.weight", "net.4.weight"):
                p.copy_(1 + 0.1 * (2 * torch.rand_like(p) - 1))
            elif "bias" in name:
                p.copy_(0.1 * (2 * torch.rand_like(p) - 1))
            else:
                fan_in = p[0].numel()
                p.copy_((3.0 / fan_in) ** 0.5 * (2 * torch.rand_like(p) - 1))


# ---- small encoder ------------------------------------------------------------------
small = MW2StackRNNPooling(32, 48).eval()
reinit(small)
save_file({k: v.contiguous() for k, v in small.state_dict().items()}, path("small", "model.safetensors"),
          metadata={"format": "pt"})
t = torch.arange(1000) / 200.0
windows = torch.stack([torch.stack([torch.sin(2 * math.pi * (0.5 + c + 3 * b) * t) * (1 + 2 * c) + 9.8 * (c == 2)
                                    + 0.3 * torch.randn(1000) for c in range(6)]) for b in range(3)])
with torch.no_grad():
    out = small(windows)
    out_t = small.forward_time_axis(windows)
assert (out - out_t).abs().max() > 1e-2, "the quirk must matter"
f32(path("small", "windows.f32"), windows)
f32(path("small", "out.f32"), out)
f32(path("small", "out_timeaxis.f32"), out_t)


# ---- torchaudio.functional.resample (sinc_interp_hann) --------------------------------
def ta_resample(x, orig, new, lowpass_filter_width=6, rolloff=0.99):
    """x (channels, n) float32 -> (channels, ceil(new*n/orig)), as torchaudio computes it."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    tt = torch.arange(0, -new, -1)[:, None, None] / new + idx  # int arange / int -> f32, + f64
    tt = tt * base
    tt = tt.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(tt * math.pi / lowpass_filter_width / 2) ** 2
    tt = tt * math.pi
    kernels = torch.where(tt == 0, torch.tensor(1.0).to(tt), tt.sin() / tt)
    kernels = (kernels * window * (base / orig)).to(torch.float32)
    n = x.shape[-1]
    xp = torch.nn.functional.pad(x[:, None], (width, width + orig))
    y = torch.nn.functional.conv1d(xp, kernels, stride=orig)  # (C, new, frames)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    return y[:, : int(math.ceil(new * n / orig))]


def signal(n, rate):
    tt = np.arange(n) / rate
    return np.stack([np.sin(2 * np.pi * (0.7 + 1.3 * c) * tt) * (1 + c) + 0.2 * np.cos(2 * np.pi * 31 * tt)
                     + (9.81 if c == 2 else 0) for c in range(6)], 1).astype(np.float32)  # (n, 6)


def resampled(x, rate):
    return ta_resample(torch.from_numpy(np.ascontiguousarray(x.T)), rate, 200).numpy().T  # (m, 6)


# 100 Hz CSV with millisecond timestamps (starting at an arbitrary clock value).
x100 = signal(730, 100)
with open(path("imu100.csv"), "w") as f:
    f.write("timestamp_ms,accel_x,accel_y,accel_z,gyro_x,gyro_y,gyro_z\n")
    for i in range(730):
        f.write("%.3f," % (123456.0 + 10.0 * i) + ",".join("%.9g" % v for v in x100[i]) + "\n")
x100 = np.loadtxt(path("imu100.csv"), delimiter=",", skiprows=1)[:, 1:].astype(np.float32)  # as parsed
r100 = resampled(x100, 100)
f32(path("imu100_200hz.f32"), r100)
# 50 Hz, channel-major (6, T) float32 .npy.
x50 = signal(260, 50)
np.save(path("imu50.npy"), np.ascontiguousarray(x50.T))
f32(path("imu50_200hz.f32"), resampled(x50, 50))
# 333 Hz, (T, 7) float64 with timestamps in seconds.
x333 = signal(999, 333)
ts = 5.0 + np.arange(999) / 333.0
np.save(path("imu333.npy"), np.concatenate([ts[:, None], x333.astype(np.float64)], 1))
f32(path("imu333_200hz.f32"), resampled(x333, 333))

# ---- real-shape encoder with `anymal mkmodel` weights ----------------------------------
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


def mk_tensor(seed, name, kind, shape, fan_in=0):
    stream = mix64_int((seed * 0x100000001B3 + fnv1a(name)) & M64)
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        r = mix64(np.uint64(stream) + np.uint64(0x9E3779B97F4A7C15) * (i + np.uint64(1)))
    u = (r >> np.uint64(40)).astype(np.float32) / np.float32(8388608.0) - np.float32(1.0)
    if kind == "linear":
        v = np.sqrt(np.float32(3.0) / np.float32(fan_in)).astype(np.float32) * u
    elif kind == "norm":
        v = np.float32(1.0) + np.float32(0.1) * u
    else:
        v = np.float32(0.02) * u
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


real = MW2StackRNNPooling(32, 512).eval()
state = {}
for name, p in real.state_dict().items():
    full = "imu_encoder." + name
    if name in ("net.0.weight", "net.4.weight"):
        kind, fan = "norm", 0
    elif "bias" in name:
        kind, fan = "bias", 0
    else:
        kind, fan = "linear", int(np.prod(p.shape[1:]))
    state[name] = mk_tensor(MKENC_SEED, full, kind, tuple(p.shape), fan)
real.load_state_dict(state)
w = np.zeros((2, 6, 1000), np.float32)  # the two zero-padded windows of imu100.csv
w[0] = r100[:1000].T
w[1, :, : len(r100) - 1000] = r100[1000:].T
with torch.no_grad():
    f32(path("imu2clip_real_out.f32"), real(torch.from_numpy(w)))
print("wrote", OUT)
