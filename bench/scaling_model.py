#!/usr/bin/env python3
"""bench/scaling_model.py - per-token latency of tensor-parallel LLaMA-2 decoding at batch 1.

Usage:
    bench/scaling_model.py [--measured DIR]

DIR holds the output of bench/run_tp_bench.sh (this machine's measurements); without it the
numbers recorded in bench/README.md (MEASURED_HERE below) are used. Standard library only.

The model (one decode step, batch 1, P ranks; every symbol is printed with its value):

    t(P) = sum over ops of t_op(P) + L * kappa + 2L * t_ar(P, C * a) + t_gather(P) + t_step

  * t_op = bytes the rank reads for op / B_mem: each weight matrix (q, k, v, o, gate, up, down,
    lm_head) is read once per token and a matrix-vector product is memory-bound. Column-
    parallel ops (q, k, v, gate, up, lm_head when split) read 1/P of the matrix, row-parallel
    ones (o, down) 1/P of every row; k and v read max(Hkv/P, 1) heads (kv heads are replicated
    when P > Hkv).
  * kappa: the fixed cost of one layer besides its weight bytes (kernel launches and gaps,
    norms, RoPE, attention over a short context, synchronisation).
  * t_ar(P, n) = c_coll + min(ring, recursive doubling), the two textbook all-reduce costs:
        ring = 2(P-1) alpha + 2(P-1)/P * n / B_link,   rd = log2(P) * (alpha + n / B_link)
    with alpha the per-message latency of a link, B_link its bandwidth, c_coll the fixed cost
    of starting a collective (kernel launch on a GPU). a = bytes per activation (2 for bf16 on
    GPUs, 4 for our f32 all-reduce). Two all-reduces per layer (after o and after down).
  * t_gather: the leader gathering V/P logits from every rank (only when the lm_head is split).
  * throughput at batch 1 = 1 / t(P).

Calibration (printed below):
  * A100 / NVLink: gpt-fast's published Llama-2-7B numbers at TP 1, 2, 4, 8 on the same 8xA100
    machine and software as its 70B anchors (pytorch-labs/gpt-fast README: 104.9, 168.84,
    254.02, 328.43 tok/s; its tp.py shards the layers and keeps the lm_head replicated) fix
    B_mem, kappa, c_coll and alpha (4 equations, 4 unknowns; B_link = 300 GB/s, NVLink 3 per
    direction, hardly matters at 16 KiB). The 70B predictions at TP 2, 4, 8 are then
    out-of-sample: compared with gpt-fast's 21.32 / 38.01 / 62.50 tok/s.
  * 100 Gb/s: the same GPUs, one per node, all-reduces over a 100 Gb/s network
    (B_link = 12.5 GB/s) with alpha = 5 us (RDMA, GPUDirect) or 25 us (TCP): assumed constants,
    not measurements.
  * This machine: B_mem per rank from `anymal bench decode` at P = 1 with 1 and 2 threads (the
    ranks of one host share its memory bandwidth), alpha and B_link from bench_allreduce's
    fit, kappa folded into B_mem; the prediction for P = 2 (1 thread per rank) is compared
    with the measured P = 2 run (decode and prefill).
"""
import argparse
import glob
import json
import math
import os

SHAPES = {
    "1b": dict(C=2048, L=22, H=32, Hkv=4, D=64, F=5632, V=32000),
    "7b": dict(C=4096, L=32, H=32, Hkv=32, D=128, F=11008, V=32000),
    "70b": dict(C=8192, L=80, H=64, Hkv=8, D=128, F=28672, V=32000),
}

# gpt-fast, 8xA100-80GB (power-limited to 330 W), batch 1, bf16, tok/s by TP degree.
GPT_FAST_7B = {1: 104.9, 2: 168.84, 4: 254.02, 8: 328.43}
GPT_FAST_70B = {2: 21.32, 4: 38.01, 8: 62.50}

# This machine (2-vCPU AMD EPYC VM, AVX2, shared), best runs of bench/run_tp_bench.sh as
# recorded in bench/README.md; --measured DIR overrides.
MEASURED_HERE = {
    "decode.p1.t2.json": {"decode_tok_per_s": 13.75, "prefill_tok_per_s": 64.73, "prompt_tokens": 128},
    "decode.p1.t1.json": {"decode_tok_per_s": 7.57, "prefill_tok_per_s": 34.30, "prompt_tokens": 128},
    "decode.p2.t1.json": {"decode_tok_per_s": 12.48, "prefill_tok_per_s": 67.28, "prompt_tokens": 128,
                          "allreduce_ms_per_token": 7.944},
    "allreduce.p2.f32.txt": {"alpha_us": 0.347, "link_gb_per_s": 2.546},
}


def op_bytes(s, P, wbytes, lm_head_split=True):
    """Bytes per rank of each weight op of one layer, and of the lm_head, at P ranks."""
    C, H, Hkv, D, F, V = s["C"], s["H"], s["Hkv"], s["D"], s["F"], s["V"]
    kv_heads = Hkv // P if P <= Hkv else 1
    layer = {
        "q": H * D * C / P, "k": kv_heads * D * C, "v": kv_heads * D * C, "o": C * H * D / P,
        "gate": F * C / P, "up": F * C / P, "down": C * F / P,
    }
    layer = {k: v * wbytes for k, v in layer.items()}
    head = V * C * wbytes / (P if lm_head_split else 1)
    return layer, head


def rank_weight_bytes(s, P, wbytes, lm_head_split=True):
    layer, head = op_bytes(s, P, wbytes, lm_head_split)
    return s["L"] * sum(layer.values()) + head


def rank_params(s, P):
    return rank_weight_bytes(s, P, 1.0)


def t_allreduce(P, n, hw):
    """c_coll + the cheaper of ring and recursive doubling (ring only where hw says so:
    the NVLink constants were fitted with the ring formula)."""
    if P == 1:
        return 0.0
    ring = 2 * (P - 1) * hw["alpha"] + 2 * (P - 1) / P * n / hw["link"]
    rd = math.log2(P) * (hw["alpha"] + n / hw["link"]) if P & (P - 1) == 0 else ring
    return hw["c_coll"] + (ring if hw.get("ring_only") else min(ring, rd))


def t_gather(P, n_total, hw):
    if P == 1:
        return 0.0
    return hw["c_coll"] + (P - 1) * hw["alpha"] + (P - 1) / P * n_total / hw["link"]


def decode_time(s, P, hw, parts=False):
    """Seconds per token at batch 1, and its parts."""
    split = hw.get("lm_head_split", True)
    w = rank_weight_bytes(s, P, hw["wbytes"], split) / hw["mem_bw"](P)
    layers = s["L"] * hw["kappa"]
    comm = 2 * s["L"] * t_allreduce(P, s["C"] * hw["act_bytes"], hw)
    gather = t_gather(P, s["V"] * 4, hw) if split else 0.0
    total = w + layers + comm + gather + hw.get("t_step", 0.0)
    if parts:
        return total, dict(weights=w, layers=layers, allreduce=comm, gather=gather)
    return total


def solve(a, b):
    """Least squares a x = b (normal equations, Gaussian elimination; small and dense)."""
    n = len(a[0])
    m = [[sum(a[k][i] * a[k][j] for k in range(len(a))) for j in range(n)] +
         [sum(a[k][i] * b[k] for k in range(len(a)))] for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def calibrate_a100(link=300e9, overhead="layer"):
    """B_mem, kappa (or a per-token constant), c_coll, alpha from gpt-fast's 7B TP series."""
    s = SHAPES["7b"]
    rows, rhs = [], []
    for P, tps in GPT_FAST_7B.items():
        w = rank_weight_bytes(s, P, 2, lm_head_split=False)
        n_ar = 2 * s["L"] if P > 1 else 0
        bw_term = 2 * (P - 1) / P * s["C"] * 2 / link if P > 1 else 0.0
        # unknowns: 1/B_mem, fixed cost (kappa*L or t_step), c_coll, alpha
        rows.append([w, s["L"] if overhead == "layer" else 1.0, n_ar, n_ar * 2 * (P - 1)])
        rhs.append(1.0 / tps - n_ar * bw_term)
    inv_b, fixed, c_coll, alpha = solve(rows, rhs)
    # Fitted with the ring formula, so it predicts with it too (ring_only).
    return dict(mem_bw=lambda P, b=1.0 / inv_b: b, wbytes=2, act_bytes=2, link=link, alpha=alpha, c_coll=c_coll,
                kappa=fixed if overhead == "layer" else 0.0, t_step=fixed if overhead == "token" else 0.0,
                lm_head_split=False, ring_only=True)


def load_measured(d):
    """The JSON lines of each file; for repeated runs, the best decode and the best prefill
    (other jobs on a shared machine only ever slow a run down)."""
    def lines(path):
        with open(path) as f:
            return [json.loads(x) for x in f if x.startswith("{")]
    m = {}
    for p in glob.glob(os.path.join(d, "*.json")) + glob.glob(os.path.join(d, "*.txt")):
        runs = lines(p)
        if not runs:
            raise SystemExit(f"{p}: no JSON line")
        best = dict(max(runs, key=lambda r: r.get("decode_tok_per_s", 0)))
        if "prefill_tok_per_s" in best:
            best["prefill_tok_per_s"] = max(r["prefill_tok_per_s"] for r in runs)
        best["runs"] = len(runs)
        m[os.path.basename(p)] = best
    for n in ["decode.p1.t2.json", "decode.p1.t1.json", "decode.p2.t1.json", "allreduce.p2.f32.txt"]:
        if n not in m:
            raise SystemExit(f"{d}: missing {n} (run bench/run_tp_bench.sh)")
    return m


def fmt_ms(t):
    return f"{t * 1e3:7.2f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measured", help="directory written by bench/run_tp_bench.sh")
    args = ap.parse_args()

    # ---- A100 / NVLink, calibrated on gpt-fast 7B ----------------------------------------
    print("# LLaMA-2-70B, batch 1, bf16: tensor-parallel per-token latency model\n")
    hw = calibrate_a100()
    s7, s70 = SHAPES["7b"], SHAPES["70b"]
    print("## Calibration on gpt-fast Llama-2-7B (8xA100-80GB, TP 1/2/4/8)")
    print(f"B_mem = {hw['mem_bw'](1) / 1e9:.0f} GB/s per GPU, kappa = {hw['kappa'] * 1e6:.1f} us per layer, "
          f"c_coll = {hw['c_coll'] * 1e6:.2f} us, alpha = {hw['alpha'] * 1e6:.3f} us, B_link = {hw['link'] / 1e9:.0f} GB/s")
    for P, tps in GPT_FAST_7B.items():
        print(f"  7B TP{P}: model {1 / decode_time(s7, P, hw):7.2f} tok/s, gpt-fast {tps:7.2f} (fitted)")
    print("\n## Prediction: LLaMA-2-70B on the same 8xA100 (out of sample) vs gpt-fast")
    print("| TP | weights/GPU | weights | layers | all-reduces | latency | tok/s | gpt-fast | error |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for P, tps in GPT_FAST_70B.items():
        wb = rank_weight_bytes(s70, P, 2, False)
        tw = wb / hw["mem_bw"](P)
        tl = s70["L"] * hw["kappa"]
        tc = 2 * s70["L"] * t_allreduce(P, s70["C"] * 2, hw)
        t = tw + tl + tc
        print(f"| {P} | {wb / 1e9:.2f} GB | {fmt_ms(tw)} | {fmt_ms(tl)} | {fmt_ms(tc)} | {fmt_ms(t)} | "
              f"{1 / t:6.2f} | {tps:6.2f} | {100 * (1 / t - tps) / tps:+5.1f}% |")
    ours = dict(hw, lm_head_split=True)
    print("(anymal's layout, lm_head split over the ranks and the logits gathered at the leader: " +
          ", ".join(f"TP{P} {1 / decode_time(s70, P, ours):.2f} tok/s" for P in GPT_FAST_70B) + ")")
    print("\nper-op costs of one 70B layer at TP8 (bytes read per GPU / B_mem):")
    layer, head = op_bytes(s70, 8, 2)
    print("  " + ", ".join(f"{k} {v / 2**20:.0f} MiB {v / hw['mem_bw'](8) * 1e6:.1f} us" for k, v in layer.items()) +
          f"; + kappa {hw['kappa'] * 1e6:.1f} us + 2 all-reduces {2 * t_allreduce(8, s70['C'] * 2, hw) * 1e6:.1f} us;"
          f" lm_head {head / 8 / 2**20:.0f} MiB split / {head / 2**20:.0f} MiB replicated")
    hw_tok = calibrate_a100(overhead="token")
    errs = ", ".join(f"TP{P} {100 * (1 / decode_time(s70, P, hw_tok) - t) / t:+.1f}%" for P, t in GPT_FAST_70B.items())
    print(f"(variant with the fixed cost per token instead of per layer: {errs}; a per-layer cost is what "
          f"kernel launches are, and fits)")

    # ---- 8 GPUs: NVLink vs 100 Gb/s -------------------------------------------------------
    print("\n## Prediction: LLaMA-2-70B, 8 GPUs (A100 constants above), by interconnect")
    print("| interconnect | alpha | B_link | per all-reduce (16 KiB) | all-reduces/token | latency | tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    nets = [("NVLink (fitted, ~300 GB/s)", hw["alpha"], 300e9, hw["c_coll"]),
            ("100 Gb/s RDMA (1 GPU/node)", 5e-6, 12.5e9, hw["c_coll"]),
            ("100 Gb/s TCP (1 GPU/node)", 25e-6, 12.5e9, hw["c_coll"])]
    for name, alpha, link, c in nets:
        for P in (2, 4, 8):
            h = dict(hw, alpha=alpha, link=link, c_coll=c, ring_only="NVLink" in name)
            tar = t_allreduce(P, s70["C"] * 2, h)
            t = decode_time(s70, P, h)
            if P == 8 or "NVLink" not in name:
                print(f"| {name}, TP{P} | {alpha * 1e6:.2f} us | {link / 1e9:.1f} GB/s | {tar * 1e6:.1f} us | "
                      f"{2 * s70['L']} ({2 * s70['L'] * s70['C'] * 2 / 2**20:.1f} MiB) | {fmt_ms(t)} | {1 / t:.1f} |")

    # ---- this machine -----------------------------------------------------------------------
    m = load_measured(args.measured) if args.measured else MEASURED_HERE
    if not m:
        print("\n(no measurements of this machine: run bench/run_tp_bench.sh and pass --measured DIR)")
        return
    s1 = SHAPES["1b"]
    d2, d1, dp2, ar = m["decode.p1.t2.json"], m["decode.p1.t1.json"], m["decode.p2.t1.json"], m["allreduce.p2.f32.txt"]
    W = rank_weight_bytes(s1, 1, 2)
    bw2 = W * d2["decode_tok_per_s"]  # effective, all per-token costs folded in
    bw1 = W * d1["decode_tok_per_s"]
    here = dict(mem_bw=lambda P: min(bw1, bw2 / P), wbytes=2, act_bytes=4, link=ar["link_gb_per_s"] * 1e9,
                alpha=ar["alpha_us"] * 1e-6, c_coll=0.0, kappa=0.0, lm_head_split=True)
    t, parts = decode_time(s1, 2, here, parts=True)
    print("\n## Check against this machine (1b shape, bf16; P = 2 ranks with 1 thread each)")
    print(f"inputs: effective B_mem {bw2 / 1e9:.2f} GB/s (P=1, 2 threads), {bw1 / 1e9:.2f} GB/s (1 thread); "
          f"alpha {ar['alpha_us']:.2f} us, B_link {ar['link_gb_per_s']:.2f} GB/s (bench_allreduce P=2 fit)")
    meas = dp2["decode_tok_per_s"]
    print(f"decode P=2: model {1 / t:.2f} tok/s ({fmt_ms(t)}: weights {fmt_ms(parts['weights'])}, "
          f"all-reduces {fmt_ms(parts['allreduce'])}, gather {fmt_ms(parts['gather'])}); measured {meas:.2f} tok/s "
          f"(all-reduces {dp2['allreduce_ms_per_token']:.3f} ms/token); error {100 * (1 / t - meas) / meas:+.1f}%")
    n = d2["prompt_tokens"]
    f2 = 2 * rank_params(s1, 1) * d2["prefill_tok_per_s"]
    f1 = 2 * rank_params(s1, 1) * d1["prefill_tok_per_s"]
    chunks = math.ceil(n / 512)
    tp_ = 2 * rank_params(s1, 2) * n / min(f1, f2 / 2) + 2 * s1["L"] * chunks * t_allreduce(2, min(n, 512) * s1["C"] * 4, here)
    measp = dp2["prefill_tok_per_s"]
    print(f"prefill P=2 ({n} tokens): model {n / tp_:.1f} tok/s (F {f2 / 1e9:.1f} GFLOP/s with 2 threads, {f1 / 1e9:.1f} "
          f"with 1); measured {measp:.1f} tok/s; error {100 * (n / tp_ - measp) / measp:+.1f}%")
    print(f"measured P=1 (2 threads): decode {d2['decode_tok_per_s']:.2f} tok/s, prefill {d2['prefill_tok_per_s']:.1f} tok/s")


if __name__ == "__main__":
    main()
