#!/usr/bin/env python3
"""Golden fixtures for the vision encoders (tests/test_vision.c).

Run once (needs PyPI torch, transformers, safetensors, numpy, Pillow, and the
ffmpeg command for the videos); the output is committed, so tests never need
Python:
    python3 tests/golden/vision/gen_vision_golden.py tests/golden/vision

Writes into OUT:
  clip/          a random-init tiny CLIPVisionModel (save_pretrained: vision_model.*),
                 pixels.f32 (2, 3, 32, 32) inputs and hidden.f32, every hidden state
                 (n_layers + 1, 2, 17, 64) from output_hidden_states=True.
  perceiver/     projector.safetensors (perceiver.* + proj.*) of a PyTorch Perceiver
                 Resampler written from OpenFlamingo's helpers.py description
                 (docs/model-spec.md 4) with frame and media-time embeddings, followed by
                 Linear(64 -> 48); inputs x0.f32 (3 frames, 16, 64) and x1.f32 (1, 16, 64),
                 outputs y0.f32 / y1.f32 (8, 48); mlp.safetensors (linear_{1,2}) and
                 mlp_x.f32 (16, 64) / mlp_y.f32 (16, 48) for LLaVA's mlp2x_gelu.
  llava/         a tiny HF LlavaForConditionalGeneration (config.json, preprocessor_config.json,
                 model.safetensors) and llava_y.f32: get_image_features() of llava_px.f32.
  images/        synthetic photo-like images in several formats and sizes; preprocess.json
                 lists, per image and processor setting, the FNV-1a 64 hash and size of
                 PIL's decoded RGB (Image.open + exif_transpose + convert("RGB")) and the
                 file of the expected uint8 crop (a PNG, lossless) that HF's
                 CLIPImageProcessorPil resized and cropped before rescale/normalize
                 (pixel_values = (u8 / 255 - mean) / std), plus pv_*.f32, full
                 pixel_values for one image to check rescale/normalize.
  video/         tiny clips (mp4/h264, webm/vp9, mkv/mpeg4), 64x48, 20 frames whose
                 colour encodes the frame index.
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
torch.manual_seed(1234)
np.random.seed(1234)


def mkdir(*p):
    d = os.path.join(OUT, *p)
    os.makedirs(d, exist_ok=True)
    return d


def f32(path, t):
    np.ascontiguousarray(t.detach().numpy() if torch.is_tensor(t) else t, dtype="<f4").tofile(path)


def reinit(model):
    """Unit-scale activations: linear weights U with variance 1/fan_in, norms 1 + U(-0.1, 0.1),
    biases U(-0.02, 0.02), embeddings unit variance (HF's std 0.02 would make every layer a no-op)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * (2 * torch.rand_like(p) - 1))
            elif name.endswith("bias"):
                p.copy_(0.02 * (2 * torch.rand_like(p) - 1))
            elif p.dim() >= 2 and "embedding" not in name and "latents" not in name and "embs" not in name:
                fan_in = p[0].numel()
                p.copy_((3.0 / fan_in) ** 0.5 * (2 * torch.rand_like(p) - 1))
            else:
                p.copy_(3 ** 0.5 * (2 * torch.rand_like(p) - 1))


# ---- CLIP vision tower -------------------------------------------------------
from transformers import CLIPVisionConfig, CLIPVisionModel

vcfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                        image_size=32, patch_size=8, num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                        attn_implementation="eager")
clip = CLIPVisionModel(vcfg).eval().float()
reinit(clip)
d = mkdir("clip")
clip.save_pretrained(d, safe_serialization=True)
px = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    hs = clip(pixel_values=px, output_hidden_states=True).hidden_states
f32(os.path.join(d, "pixels.f32"), px)
f32(os.path.join(d, "hidden.f32"), torch.stack(hs))


# ---- Perceiver Resampler (OpenFlamingo layout), mlp2x_gelu ---------------------
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

    def forward(self, x, lat):  # x (n1, D), lat (n2, D)
        x, lat = self.norm_media(x), self.norm_latents(lat)
        q = self.to_q(lat)
        k, v = self.to_kv(torch.cat([x, lat], 0)).chunk(2, -1)
        split = lambda t: t.view(t.shape[0], self.heads, self.dim_head).transpose(0, 1)  # (h, n, d)
        q, k, v = split(q) * self.dim_head ** -0.5, split(k), split(v)
        s = q @ k.transpose(1, 2)
        a = (s - s.amax(-1, keepdim=True)).softmax(-1)
        o = (a @ v).transpose(0, 1).reshape(lat.shape[0], -1)
        return self.to_out(o)


class Resampler(nn.Module):
    def __init__(self, dim, depth, dim_head, heads, n_latents, max_frames, max_media, ff_mult, out_dim):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, dim))
        self.frame_embs = nn.Parameter(torch.randn(max_frames, dim))
        self.media_time_embs = nn.Parameter(torch.randn(max_media, 1, dim))
        self.layers = nn.ModuleList([
            nn.ModuleList([Attn(dim, dim_head, heads),
                           nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult, bias=False), nn.GELU(),
                                         nn.Linear(dim * ff_mult, dim, bias=False))]) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):  # one media: x (F, v, D) -> (n_latents, D)
        Fr, v, D = x.shape
        x = (x + self.frame_embs[:Fr].unsqueeze(1)).reshape(Fr * v, D) + self.media_time_embs[0]
        lat = self.latents
        for attn, ff in self.layers:
            lat = attn(x, lat) + lat
            lat = ff(lat) + lat
        return self.norm(lat)


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.perceiver = Resampler(64, 2, 16, 2, 8, 4, 1, 2, 48)
        self.proj = nn.Linear(64, 48)

    def forward(self, x):
        return self.proj(self.perceiver(x))


pr = Wrapped().eval()
reinit(pr)
d = mkdir("perceiver")
save_file({k: v.contiguous() for k, v in pr.state_dict().items()}, os.path.join(d, "projector.safetensors"))
x0, x1 = torch.randn(3, 16, 64), torch.randn(1, 16, 64)
with torch.no_grad():
    f32(os.path.join(d, "x0.f32"), x0)
    f32(os.path.join(d, "y0.f32"), pr(x0))
    f32(os.path.join(d, "x1.f32"), x1)
    f32(os.path.join(d, "y1.f32"), pr(x1))

mlp = nn.Sequential(nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 48)).eval()
reinit(mlp)
save_file({"linear_1.weight": mlp[0].weight.detach().contiguous(), "linear_1.bias": mlp[0].bias.detach().contiguous(),
           "linear_2.weight": mlp[2].weight.detach().contiguous(), "linear_2.bias": mlp[2].bias.detach().contiguous()},
          os.path.join(d, "mlp.safetensors"))
mx = torch.randn(16, 64)
with torch.no_grad():
    f32(os.path.join(d, "mlp_x.f32"), mx)
    f32(os.path.join(d, "mlp_y.f32"), mlp(mx))

# ---- tiny HF LLaVA -----------------------------------------------------------------
from transformers import CLIPImageProcessorPil, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

tcfg = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)
lvcfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         image_size=32, patch_size=8, hidden_act="quick_gelu", attn_implementation="eager")
lcfg = LlavaConfig(vision_config=lvcfg.to_dict(), text_config=tcfg.to_dict(), image_token_index=63,
                   vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")
llava = LlavaForConditionalGeneration(lcfg).eval().float()
reinit(llava)
d = mkdir("llava")
llava.save_pretrained(d, safe_serialization=True)
CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d)
lpx = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    feats = llava.model.get_image_features(pixel_values=lpx, vision_feature_layer=-2,
                                           vision_feature_select_strategy="default")
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
f32(os.path.join(d, "llava_px.f32"), lpx)
f32(os.path.join(d, "llava_y.f32"), feats)
for junk in ("generation_config.json",):
    if os.path.exists(os.path.join(d, junk)):
        os.remove(os.path.join(d, junk))


# ---- images --------------------------------------------------------------------------
def photo(w, h, seed):
    """A photo-like picture: smooth sky/ground gradients, blurred shapes, sensor noise."""
    r = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([80 + 120 * y / h + 30 * np.sin(x / w * 6 + seed),
                     120 + 60 * np.cos(y / h * 3) + 20 * x / w,
                     200 - 100 * y / h + 25 * np.sin((x + y) / (w + h) * 9)], -1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    dr = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = r.randint(0, w), r.randint(0, h)
        s = r.randint(4, max(5, min(w, h) // 3))
        col = tuple(int(c) for c in r.randint(0, 256, 3))
        (dr.ellipse if r.rand() < 0.5 else dr.rectangle)([x0, y0, x0 + s, y0 + s], fill=col)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    a = np.asarray(img).astype(np.float32) + r.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def fnv64(b):
    h = 0xcbf29ce484222325
    for byte in b:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


d = mkdir("images")
files = []


def save(name, img, **kw):
    img.save(os.path.join(d, name), **kw)
    files.append(name)


save("land_q90.jpg", photo(400, 300, 1), quality=90)
save("port_prog.jpg", photo(240, 320, 2), quality=85, progressive=True)
save("wide_444.jpg", photo(360, 120, 3), quality=92, subsampling=0)
save("gray.jpg", photo(200, 150, 4).convert("L"), quality=90)
save("cmyk.jpg", photo(160, 120, 5).convert("CMYK"), quality=90)
save("small_up.png", photo(97, 61, 6))
save("rgba.png", Image.merge("RGBA", (*photo(150, 200, 7).split(), Image.linear_gradient("L").resize((150, 200)))))
save("palette.png", photo(180, 140, 8).quantize(64))
save("gray16.png", Image.fromarray((np.asarray(photo(120, 90, 9).convert("L")).astype(np.uint16) * 257)))
save("lossless.webp", photo(210, 150, 10), lossless=True)
save("lossy.webp", photo(200, 160, 11), quality=80)
save("square.png", photo(64, 64, 12))
for o in (3, 6, 8):
    ex = Image.Exif()
    ex[0x0112] = o
    save("exif%d.jpg" % o, photo(90, 60, 20 + o), quality=90, exif=ex.tobytes())

settings = {"s64": dict(size=64, pad=False), "s336": dict(size=336, pad=False), "p224": dict(size=224, pad=True)}
which = {"s64": files, "s336": ["land_q90.jpg"], "p224": ["port_prog.jpg"]}
mean = np.array([0.48145466, 0.4578275, 0.40821073])
std = np.array([0.26862954, 0.26130258, 0.27577711])
cases = []
for sname, s in settings.items():
    proc = CLIPImageProcessorPil(size={"shortest_edge": s["size"]}, crop_size={"height": s["size"], "width": s["size"]})
    for f in which[sname]:
        img = ImageOps.exif_transpose(Image.open(os.path.join(d, f)))
        if img.mode == "I;16":
            # PIL's I;16 -> RGB clips every value above 255 to white; we keep the high
            # byte (as PIL does for 16-bit RGB), so the reference is that.
            img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
        img = img.convert("RGB")
        if s["pad"]:  # LLaVA-1.5 expand2square
            w, h = img.size
            bg = tuple(int(x * 255) for x in mean)
            sq = Image.new("RGB", (max(w, h),) * 2, bg)
            sq.paste(img, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
            src = sq
        else:
            src = img
        pv = proc(images=src, return_tensors="np")["pixel_values"][0]  # (3, S, S)
        u8 = np.rint((pv.transpose(1, 2, 0) * std + mean) * 255).astype(np.uint8)
        back = ((u8.astype(np.float64) / 255).astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
        assert np.abs(back.transpose(2, 0, 1) - pv).max() < 1e-5, "pixel_values are not (u8/255 - mean)/std"
        exp = "exp_%s_%s.png" % (sname, f.replace(".", "_"))
        Image.fromarray(u8).save(os.path.join(d, exp))
        raw = np.asarray(img)
        cases.append({"file": f, "setting": sname, "size": s["size"], "pad": s["pad"], "expected": exp,
                      "width": img.size[0], "height": img.size[1], "rgb_fnv64": fnv64(raw.tobytes())})
        if sname == "s64" and f == "small_up.png":
            f32(os.path.join(d, "pv_s64_small_up.f32"), pv)
with open(os.path.join(d, "preprocess.json"), "w") as fh:
    json.dump({"cases": cases, "transformers": __import__("transformers").__version__,
               "pillow": Image.__version__}, fh, indent=1)

# ---- videos -------------------------------------------------------------------------------
d = mkdir("video")
frames = np.zeros((20, 48, 64, 3), np.uint8)
for i in range(20):
    frames[i] = (i * 12, 255 - i * 12, 128)
for name, args in (("clip.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"]),
                   ("clip.webm", ["-c:v", "libvpx-vp9", "-b:v", "200k"]),
                   ("clip.mkv", ["-c:v", "mpeg4", "-q:v", "2"])):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48", "-r", "10",
                    "-i", "-", *args, "-g", "5", os.path.join(d, name)], input=frames.tobytes(), check=True)
print("wrote", OUT)
