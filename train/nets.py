"""train/nets.py - the embedded default's architectures in PyTorch, in our loaders' layouts.

Each module is the reference the C loaders were checked against (docs/model-spec.md):
  LLM     transformers LlamaForCausalLM (HF names, q/k in HF's rotate_half layout: AM_ROPE_HALVES)
  vision  transformers CLIPVisionModel (vision_model.*), features of the last block, CLS dropped
  vision projector  the Perceiver Resampler of tests/golden/vision/gen_vision_golden.py
                    (OpenFlamingo helpers.py) + Linear -> perceiver.*, proj.*
  audio   transformers ClapAudioModelWithProjection (audio_model.audio_encoder.*, audio_projection.*)
  IMU     IMU2CLIP's MW2StackRNNPooling (imu_encoder.net.*), as tests/golden/imu/gen_imu_golden.py
  audio/IMU projectors  Linear(in, tokens * dim) -> weight, bias
so the state dicts are written unchanged (save_dir) and anymal.json describes them (CONFIG).
"""
import json
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file
from transformers import (ClapAudioConfig, ClapAudioModelWithProjection, CLIPVisionConfig, CLIPVisionModel,
                          LlamaConfig, LlamaForCausalLM)

LLM = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
           num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5,
           rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2)
VISION = dict(image_size=64, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=3,
              num_attention_heads=4, intermediate_size=256, layer_norm_eps=1e-5, hidden_act="quick_gelu")
VIDEO_FRAMES = 4  # frames sampled from a video (docs/model-spec.md section 7): 0, 2, 4, 7 of 8
PERCEIVER = dict(dim=64, depth=2, dim_head=16, heads=2, n_latents=8, max_frames=VIDEO_FRAMES, max_media=1,
                 ff_mult=4)
AUDIO = dict(spec_size=256, num_mel_bins=64, patch_size=4, patch_stride=[4, 4], patch_embeds_hidden_size=16,
             depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 4, 8], window_size=8, hidden_size=128,
             projection_dim=64, mlp_ratio=4.0, hidden_act="gelu", projection_hidden_act="relu",
             enable_fusion=False, enable_patch_layer_norm=True, layer_norm_eps=1e-5)
IMU = dict(input_dim=32, size_embeddings=64)
AUDIO_TOKENS = 4
IMU_TOKENS = 4
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ---- vision projector: Perceiver Resampler ------------------------------------
# Attn/Resampler are tests/golden/vision/gen_vision_golden.py's, batched; Block and
# MW2StackRNNPooling are tests/golden/imu/gen_imu_golden.py's: the modules our loaders were
# checked against (those scripts run on import, so they are written out again here).
class Attn(nn.Module):
    """Cross attention of the latents over [media; latents] (helpers.py PerceiverAttention)."""

    def __init__(self, dim, dim_head, heads):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, lat):  # x (B, n1, D), lat (B, n2, D)
        x, lat = self.norm_media(x), self.norm_latents(lat)
        B = x.shape[0]
        q = self.to_q(lat)
        k, v = self.to_kv(torch.cat([x, lat], 1)).chunk(2, -1)
        split = lambda t: t.view(B, t.shape[1], self.heads, self.dim_head).transpose(1, 2)  # (B, h, n, d)
        q, k, v = split(q) * self.dim_head ** -0.5, split(k), split(v)
        a = (q @ k.transpose(-1, -2)).softmax(-1)
        return self.to_out((a @ v).transpose(1, 2).reshape(B, lat.shape[1], -1))


class Resampler(nn.Module):
    def __init__(self, dim, depth, dim_head, heads, n_latents, max_frames, max_media, ff_mult):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, dim))
        self.frame_embs = nn.Parameter(torch.randn(max_frames, dim))
        self.media_time_embs = nn.Parameter(torch.randn(max_media, 1, dim) * 0.1)
        self.layers = nn.ModuleList([
            nn.ModuleList([Attn(dim, dim_head, heads),
                           nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult, bias=False), nn.GELU(),
                                         nn.Linear(dim * ff_mult, dim, bias=False))]) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):  # x (B, F, v, D) -> (B, n_latents, D)
        B, Fr, v, D = x.shape
        x = (x + self.frame_embs[:Fr].view(1, Fr, 1, D)).reshape(B, Fr * v, D) + self.media_time_embs[0]
        lat = self.latents.unsqueeze(0).expand(B, -1, -1)
        for attn, ff in self.layers:
            lat = attn(x, lat) + lat
            lat = ff(lat) + lat
        return self.norm(lat)


class VisionProjector(nn.Module):
    def __init__(self, out_dim):
        super().__init__()
        self.perceiver = Resampler(**PERCEIVER)
        self.proj = nn.Linear(PERCEIVER["dim"], out_dim)

    def forward(self, feats):  # (B, F, 64 patches, D) -> (B, n_latents, out_dim)
        return self.proj(self.perceiver(feats))


# ---- IMU2CLIP ------------------------------------------------------------------------
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

    def forward(self, x):  # (B, 6, 1000) -> (B, size_embeddings); the GRU runs over channels
        return self.net(x)[1][0]


class ImuEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.imu_encoder = MW2StackRNNPooling(**IMU)

    def forward(self, x):
        return self.imu_encoder(x)


# ---- the whole model -------------------------------------------------------------------
class Anymal(nn.Module):
    def __init__(self):
        super().__init__()
        C = LLM["hidden_size"]
        self.llm = LlamaForCausalLM(LlamaConfig(**LLM))
        self.vision = CLIPVisionModel(CLIPVisionConfig(**VISION))
        init_positions(self.vision)
        self.vision_proj = VisionProjector(C)
        self.audio = ClapAudioModelWithProjection(ClapAudioConfig(**AUDIO))
        self.audio_proj = nn.Linear(AUDIO["projection_dim"], AUDIO_TOKENS * C)
        self.imu = ImuEncoder()
        self.imu_proj = nn.Linear(IMU["size_embeddings"], IMU_TOKENS * C)

    # encoders: the rows our encoder workers compute before the projector
    def vision_features(self, pixels):  # (N, 3, 64, 64) normalized -> (N, 64, 64): last block, no CLS
        return self.vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]

    def audio_features(self, mel):  # (N, 1001, 64) log-mel -> (N, 64)
        return self.audio(input_features=mel[:, None]).audio_embeds

    def imu_features(self, x):  # (N, 1000, 6) -> (N, 64)
        return self.imu(x.transpose(1, 2))

    # projectors: rows of the LLM width
    def vision_rows(self, feats):  # (N, F, 64, 64) -> (N, 8, C); F = 1 (image) or VIDEO_FRAMES
        return self.vision_proj(feats)

    def audio_rows(self, f):
        return self.audio_proj(f).view(f.shape[0], AUDIO_TOKENS, -1)

    def imu_rows(self, f):
        return self.imu_proj(f).view(f.shape[0], IMU_TOKENS, -1)


def init_positions(vision):
    """2-D sine/cosine position embeddings of unit amplitude as the ViT's starting point (HF's
    init is N(0, 0.02)): the Perceiver reads where a shape is from its patch rows only, and with
    the small init too little position survived training for it to learn which way a shape
    moves (chance after 600 steps; with these, 96% after ~1000 in a probe)."""
    pe = vision.vision_model.embeddings.position_embedding.weight
    g = VISION["image_size"] // VISION["patch_size"]
    d = pe.shape[1]
    ys, xs = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    freq = 1.0 / (100 ** (torch.arange(d // 4) / (d // 4)))
    enc = lambda p: torch.cat([torch.sin(p[:, None] * freq), torch.cos(p[:, None] * freq)], 1)
    with torch.no_grad():
        pe[0] = 0
        pe[1:] = torch.cat([enc(xs.flatten().float()), enc(ys.flatten().float())], 1)


def normalize_pixels(u8):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float: /255 then CLIP mean/std (no resize, no crop)."""
    x = torch.as_tensor(u8).float().permute(0, 3, 1, 2) / 255.0
    m = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - m) / s


def _save(path, sd):
    save_file({k: v.detach().contiguous().float() for k, v in sd.items()}, path, metadata={"format": "pt"})


def save_dir(model, out, tokenizer_path):
    """Writes the model directory deploy/local serves: anymal.json, the LLM (HF safetensors),
    the encoders and projectors, the tokenizer."""
    os.makedirs(out, exist_ok=True)
    C = LLM["hidden_size"]
    _save(os.path.join(out, "model.safetensors"), model.llm.state_dict())
    cfg = dict(LLM, architectures=["LlamaForCausalLM"], model_type="llama", torch_dtype="float32")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    _save(os.path.join(out, "vision_tower.safetensors"), model.vision.state_dict())
    _save(os.path.join(out, "vision_projector.safetensors"), model.vision_proj.state_dict())
    _save(os.path.join(out, "audio_encoder.safetensors"),
          {k: v for k, v in model.audio.state_dict().items()
           if "relative_position_index" not in k and "num_batches_tracked" not in k})
    _save(os.path.join(out, "audio_projector.safetensors"), model.audio_proj.state_dict())
    _save(os.path.join(out, "imu_encoder.safetensors"), model.imu.state_dict())
    _save(os.path.join(out, "imu_projector.safetensors"), model.imu_proj.state_dict())
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(out, "tokenizer.model")):
        with open(tokenizer_path, "rb") as src, open(os.path.join(out, "tokenizer.model"), "wb") as dst:
            dst.write(src.read())
    V, P, A = VISION, PERCEIVER, AUDIO
    js = {
        "anymal_version": 1,
        "llm": {"path": ".", "tokenizer": "tokenizer.model", "dim": C},
        "vision": {
            "weights": "vision_tower.safetensors", "prefix": "vision_model.",
            "image_size": V["image_size"], "patch_size": V["patch_size"], "num_channels": 3,
            "hidden_size": V["hidden_size"], "num_hidden_layers": V["num_hidden_layers"],
            "num_attention_heads": V["num_attention_heads"], "intermediate_size": V["intermediate_size"],
            "layer_norm_eps": V["layer_norm_eps"], "hidden_act": V["hidden_act"],
            "feature_layer": -1, "feature_select": "patch", "video_frames": VIDEO_FRAMES,
            "preprocess": {"shortest_edge": 0, "crop_size": V["image_size"], "image_mean": CLIP_MEAN,
                           "image_std": CLIP_STD, "pad_to_square": False},
            "projector": {"type": "perceiver", "weights": "vision_projector.safetensors", "prefix": "",
                          "out_dim": C, "num_latents": P["n_latents"], "depth": P["depth"], "heads": P["heads"],
                          "dim_head": P["dim_head"], "ff_mult": P["ff_mult"], "max_frames": P["max_frames"],
                          "max_media": P["max_media"], "layer_norm_eps": 1e-5, "tokens_per_row": 1}},
        "audio": {
            "weights": "audio_encoder.safetensors", "prefix": "audio_model.audio_encoder.",
            "projection_prefix": "audio_projection.",
            "spec_size": A["spec_size"], "num_mel_bins": A["num_mel_bins"], "patch_size": A["patch_size"],
            "patch_stride": A["patch_stride"][0], "patch_embeds_hidden_size": A["patch_embeds_hidden_size"],
            "depths": A["depths"], "num_attention_heads": A["num_attention_heads"],
            "window_size": A["window_size"], "mlp_ratio": A["mlp_ratio"], "layer_norm_eps": A["layer_norm_eps"],
            "hidden_act": A["hidden_act"], "projection_dim": A["projection_dim"],
            "projection_hidden_act": A["projection_hidden_act"], "enable_patch_layer_norm": True,
            "enable_fusion": False, "normalize": False,
            "preprocess": {"sampling_rate": 48000, "fft_window_size": 1024, "hop_length": 480, "feature_size": 64,
                           "frequency_min": 50, "frequency_max": 14000, "max_length_s": 10,
                           "padding": "repeatpad", "mel_scale": "slaney"},
            "projector": {"type": "linear", "weights": "audio_projector.safetensors", "prefix": "",
                          "out_dim": C, "tokens_per_row": AUDIO_TOKENS}},
        "imu": {
            "weights": "imu_encoder.safetensors", "prefix": "imu_encoder.",
            "in_channels": 6, "input_dim": IMU["input_dim"], "size_embeddings": IMU["size_embeddings"],
            "window_samples": 1000, "normalize": False,
            "projector": {"type": "linear", "weights": "imu_projector.safetensors", "prefix": "",
                          "out_dim": C, "tokens_per_row": IMU_TOKENS}},
    }
    with open(os.path.join(out, "anymal.json"), "w") as f:
        json.dump(js, f, indent=1)
        f.write("\n")


def load_dir(d):
    """The PyTorch model from a directory save_dir wrote (for the reference answers)."""
    from safetensors.torch import load_file
    m = Anymal()
    m.llm.load_state_dict(load_file(os.path.join(d, "model.safetensors")))
    m.vision.load_state_dict(load_file(os.path.join(d, "vision_tower.safetensors")))
    m.vision_proj.load_state_dict(load_file(os.path.join(d, "vision_projector.safetensors")))
    m.audio.load_state_dict(load_file(os.path.join(d, "audio_encoder.safetensors")), strict=False)
    m.audio_proj.load_state_dict(load_file(os.path.join(d, "audio_projector.safetensors")))
    m.imu.load_state_dict(load_file(os.path.join(d, "imu_encoder.safetensors")))
    m.imu_proj.load_state_dict(load_file(os.path.join(d, "imu_projector.safetensors")))
    return m.eval()
