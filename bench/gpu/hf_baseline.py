#!/usr/bin/env python3
"""bench/gpu/hf_baseline.py - the HF transformers baseline for bench/gpu/check.sh.

Loads the same checkpoint as `anymal bench batch` (an HF safetensors directory
written by `anymal mkmodel --format safetensors`) into transformers'
LlamaForCausalLM, fp16 on cuda, eager attention, and for each --run B:N:M
times, like anymal's bench: a prefill of B prompts of N random token ids (one
forward), then M greedy decode steps of the B sequences with the KV cache.
Prints one JSON line per run:
  {"bench":"hf","batch":B,"prompt_tokens":N,"gen_tokens":M,
   "prefill_tok_per_s":..., "decode_tok_per_s":..., "decode_step_ms":...}
decode_tok_per_s counts the tokens of all B sequences (B * M / time).
No network: the model directory must hold config.json and the weights.
"""
import argparse
import json
import sys
import time

import torch
from transformers import LlamaForCausalLM

# Prompt tokens of the untimed warm-up pass (cuBLAS handles, allocator pools).
WARMUP_TOKENS = 16


def run(model, vocab, batch, n_prompt, n_gen, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, n_prompt), generator=g).cuda()
    with torch.inference_mode():
        model(ids[:, :WARMUP_TOKENS], use_cache=True)  # warm-up, untimed
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        past = out.past_key_values
        del out
        for _ in range(n_gen):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
    del past
    torch.cuda.empty_cache()
    return {
        "bench": "hf",
        "batch": batch,
        "prompt_tokens": n_prompt,
        "gen_tokens": n_gen,
        "prefill_tok_per_s": batch * n_prompt / (t1 - t0),
        "decode_tok_per_s": batch * n_gen / (t2 - t1) if n_gen else 0.0,
        "decode_step_ms": 1e3 * (t2 - t1) / n_gen if n_gen else 0.0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF safetensors directory")
    ap.add_argument("--run", action="append", required=True, metavar="B:N:M",
                    help="batch:prompt_tokens:gen_tokens (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("hf_baseline: no CUDA device visible to torch", file=sys.stderr)
        return 1
    t = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float16,
                                             attn_implementation="eager").cuda().eval()
    print(f"hf_baseline: loaded {args.model} in {time.perf_counter() - t:.1f} s "
          f"(transformers eager, fp16, {torch.cuda.get_device_name(0)})", file=sys.stderr)
    vocab = model.config.vocab_size
    for spec in args.run:
        b, n, m = (int(v) for v in spec.split(":"))
        print(json.dumps(run(model, vocab, b, n, m, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
