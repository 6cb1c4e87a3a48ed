#!/usr/bin/env python3
"""Golden fixture: the decoder of the tiny HF LLaVA checkpoint in tests/golden/vision/llava.

That directory (written by tests/golden/vision/gen_vision_golden.py) keeps the decoder
under the names of the published llava-1.5-7b-hf (language_model.model.layers.N...,
language_model.lm_head.weight) and its config in "text_config". This script runs
LlavaForConditionalGeneration on a text-only prompt and writes, into
tests/golden/llama/llava_text/: logits.f32 (little-endian float32, (T, V)) and
golden.json (the prompt ids). Run once with PyPI torch + transformers:
    python3 tests/golden/llama/gen_hf_llava_text.py
"""
import json
import os

import torch
from transformers import LlavaForConditionalGeneration

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "..", "vision", "llava")
out = os.path.join(here, "llava_text")
os.makedirs(out, exist_ok=True)

model = LlavaForConditionalGeneration.from_pretrained(src, torch_dtype=torch.float32).eval()
gen = torch.Generator().manual_seed(7)
prompt = [1] + torch.randint(3, 63, (15,), generator=gen).tolist()  # 63 is the image token
with torch.no_grad():
    logits = model(input_ids=torch.tensor([prompt])).logits[0].to(torch.float32)
logits.numpy().astype("<f4").tofile(os.path.join(out, "logits.f32"))
with open(os.path.join(out, "golden.json"), "w") as f:
    json.dump({"prompt_ids": prompt, "vocab_size": int(logits.shape[1])}, f)
print("wrote", out, tuple(logits.shape))
