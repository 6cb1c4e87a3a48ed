"""train/media.py - example media as the model's input tensors, the way our encoder workers
see them (docs/model-spec.md sections 3, 5, 6): images unresized, CLAP log-mel of 10 s at
48 kHz (HF ClapFeatureExtractor, the reference of encoders/melspec.c), IMU windows at 200 Hz.
"""
import numpy as np
import torch
from PIL import Image
from transformers import ClapFeatureExtractor

import nets

_fe = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                           fft_window_size=1024, frequency_min=50, frequency_max=14000,
                           truncation="rand_trunc", padding="repeatpad")


def logmel(int16):
    x = int16.astype(np.float32) / 32768.0  # what libsndfile gives for 16-bit PCM
    assert len(x) <= 480000
    return _fe(x, sampling_rate=48000, return_tensors="np")["input_features"][0, 0].astype(np.float32)


def logmel_batch(int16_list):
    """logmel's function for many clips at once, in float32 with torch's FFT (HF's loops over
    frames in float64): for training, where 2500 clips took minutes; within ~1e-3 dB of logmel
    (train/reference.py uses logmel)."""
    from transformers.audio_utils import window_function
    L = 480000
    xs = []
    for a in int16_list:
        x = a.astype(np.float32) / 32768.0
        if len(x) < L:
            x = np.tile(x, L // len(x))
            x = np.pad(x, (0, L - len(x)))
        xs.append(np.pad(x, (512, 512), mode="reflect"))
    x = torch.from_numpy(np.stack(xs))
    frames = x.unfold(-1, 1024, 480) * torch.tensor(window_function(1024, "hann"), dtype=torch.float32)
    spec = torch.view_as_real(torch.fft.rfft(frames, dim=-1)).square().sum(-1)
    mel = (spec @ torch.tensor(_fe.mel_filters_slaney, dtype=torch.float32)).clamp(min=1e-10)
    return 10.0 * torch.log10(mel)


def pixels(u8_list):
    return nets.normalize_pixels(np.stack(u8_list))


def read_png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def read_gif(path):
    g = Image.open(path)
    out = []
    for i in range(g.n_frames):
        g.seek(i)
        out.append(np.asarray(g.convert("RGB"), dtype=np.uint8))
    return np.stack(out)


def sample_frames(frames, n):
    """Video-LLaVA's uniform sampling as encoders/video.c does it: frames floor(i (N-1) / (n-1))."""
    N = len(frames)
    return [frames[(i * (N - 1)) // (n - 1) if n > 1 else 0] for i in range(n)]


def read_wav(path):
    import wave
    with wave.open(path) as w:
        assert w.getframerate() == 48000 and w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def read_npy(path):
    return np.load(path).astype(np.float32)


def tensor(a):
    return torch.as_tensor(np.asarray(a))
