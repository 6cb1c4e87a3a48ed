#!/usr/bin/env python3
"""Golden fixture: a random-init GQA LLaMA from HF transformers and its logits.

Run once (needs PyPI torch + transformers + safetensors); the output is
committed, so tests never need Python:
    python3 tests/golden/llama/gen_hf_llama.py tests/golden/llama/hf_gqa

Writes into OUT: model.safetensors and config.json (save_pretrained), and
logits.f32 (the logits of every position of the 32-token prompt, little-endian
float32, (32, V) row-major), and golden.json: the prompt ids and the 16 greedy
ids that model.generate() produces after the prompt.

The weights are re-initialised with variance 1/fan_in (embeddings unit
variance, norms 1 + U(-0.1, 0.1)) instead of HF's std 0.02, so that the logits
are well separated and greedy ids are a meaningful comparison.
"""
import json
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else "hf_gqa"
os.makedirs(out, exist_ok=True)
torch.manual_seed(1234)

config = LlamaConfig(
    hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-5,
    rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    attention_bias=False, mlp_bias=False, torch_dtype="float32")
model = LlamaForCausalLM(config).eval().to(torch.float32)

with torch.no_grad():
    for name, p in model.named_parameters():
        if p.dim() == 1:
            p.copy_(1.0 + 0.1 * (2 * torch.rand_like(p) - 1))
        elif "embed_tokens" in name:
            p.copy_((3 ** 0.5) * (2 * torch.rand_like(p) - 1))
        else:
            a = (3.0 / p.shape[1]) ** 0.5
            p.copy_(a * (2 * torch.rand_like(p) - 1))

model.save_pretrained(out, safe_serialization=True)

gen = torch.Generator().manual_seed(99)
prompt = [1] + torch.randint(3, config.vocab_size, (31,), generator=gen).tolist()
ids = torch.tensor([prompt])
with torch.no_grad():
    logits = model(ids).logits[0].to(torch.float32)
    greedy = model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=None,
                            pad_token_id=0, attention_mask=torch.ones_like(ids))
logits.numpy().astype("<f4").tofile(os.path.join(out, "logits.f32"))
with open(os.path.join(out, "golden.json"), "w") as f:
    json.dump({"prompt_ids": prompt, "greedy_ids": greedy[0, len(prompt):].tolist(),
               "vocab_size": config.vocab_size, "positions": len(prompt),
               "transformers": __import__("transformers").__version__,
               "torch": torch.__version__}, f, indent=1)
print("wrote", out)
