#!/usr/bin/env bash
# bench/gpu/check.sh - the one script to run on a GPU machine (see bench/gpu/README.md).
#
#  1. configure + build Release with AM_CUDA=ON (CUDA architectures: the local GPU);
#  2. ctest -L gpu (must pass, not skip: this machine has a GPU);
#  3. a 7b-shape fp16 random-weight checkpoint (HF safetensors layout) made by
#     `anymal mkmodel`, once (kept in $MODEL);
#  4. `anymal bench batch --device cuda`: decode at batch 1 (after a 512-token
#     prefill, which is the prefill figure) and at batch 64;
#  5. the same runs in HF transformers (bench/gpu/hf_baseline.py, fp16, eager);
#  6. one table: batch-1 decode as a fraction of the HBM roofline (weight bytes
#     per step / step time vs the GPU's peak bandwidth) and anymal / HF ratios.
# Raw JSON lines and logs go to $OUT. Environment: BUILD (default build), MODEL
# (default /tmp/anymal-gpu/7b-f16), OUT (default $BUILD/gpu-check), CUDA_ARCH
# (default native), PYTHON (default python3), SKIP_HF=1 to leave out the baseline.
# BUNDLE=DIR: a GPU machine without our Debian packages: DIR is an unpacked
# ../shared/tools/gpu-bundle archive of anymal, the gpu-labelled test programs and
# hbm_peak, built elsewhere; stages 1-2 then run its bin/test_* programs and
# tests/test_encode_cuda.sh instead of building and ctest. PROFILE=1 adds a batch-1 and a batch-64 run with
# AM_CUDA_PROFILE=1 (per-op device and host times, core/cuda/cuda_profile.cu).
# EXTRA_RUNS="B:N:M:FRACTION ..." adds runs with --memory-fraction FRACTION.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
MODEL=${MODEL:-/tmp/anymal-gpu/7b-f16}
OUT=${OUT:-$BUILD/gpu-check}
CUDA_ARCH=${CUDA_ARCH:-native}
PYTHON=${PYTHON:-python3}
JOBS=$(nproc)
# Runs: batch:prompt_tokens:gen_tokens. B1 gives the batch-1 decode and the 512 prefill.
RUN_B1=1:512:64
RUN_B64=64:128:32
# Seconds each stage may take before the script gives up on it.
BUILD_TIMEOUT_S=900
TEST_TIMEOUT_S=600
MKMODEL_TIMEOUT_S=600
BENCH_TIMEOUT_S=300

step() { printf '\n== %s\n' "$*" >&2; }

# A failure does not stop the benchmarks (device time is scarce); it sets the exit status.
status=0
if [ -n "${BUNDLE:-}" ]; then
  # shellcheck disable=SC1091
  . "$BUNDLE/env.sh"
  BIN="$BUNDLE/bin"
  mkdir -p "$OUT"
  step "gpu tests from the bundle ($BUNDLE)"
  : >"$OUT/ctest-gpu.log"
  # The gpu-labelled tests (tests/cuda.cmake): the bundled test programs and the scripts.
  for t in "$BIN"/test_* tests/test_encode_cuda.sh; do
    rc=0
    AM_SOURCE_DIR=$PWD AM_SHARED_DIR=$PWD/../shared AM_BIN_DIR=$BIN timeout "$TEST_TIMEOUT_S" bash -c \
      'case $1 in *.sh) exec bash "$1" ;; *) exec "$1" ;; esac' _ "$t" >"$OUT/$(basename "$t").log" 2>&1 || rc=$?
    tail -5 "$OUT/$(basename "$t").log"
    case $rc in
      0) echo "$(basename "$t"): Passed" | tee -a "$OUT/ctest-gpu.log" ;;
      77) echo "$(basename "$t"): Skipped" | tee -a "$OUT/ctest-gpu.log"; status=1 ;;
      *) echo "$(basename "$t"): Failed (exit $rc)" | tee -a "$OUT/ctest-gpu.log"; status=1 ;;
    esac
  done
  step "peak memory bandwidth"
  "$BIN/hbm_peak" | tee "$OUT/hbm_peak.txt"
else
  BIN="$BUILD/bin"
  step "build ($BUILD, Release, AM_CUDA=ON, CUDA architectures $CUDA_ARCH)"
  timeout "$BUILD_TIMEOUT_S" cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DAM_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" >/dev/null
  timeout "$BUILD_TIMEOUT_S" cmake --build "$BUILD" -j "$JOBS"
  mkdir -p "$OUT"

  step "ctest -L gpu"
  (cd "$BUILD" && timeout "$TEST_TIMEOUT_S" ctest -L gpu --output-on-failure) | tee "$OUT/ctest-gpu.log" || status=1
  if grep -q "Skipped" "$OUT/ctest-gpu.log"; then
    echo "check.sh: gpu tests were skipped on a machine that should have a GPU (see above)" >&2
    status=1
  fi

  step "peak memory bandwidth"
  nvcc -O2 -o "$OUT/hbm_peak" bench/gpu/hbm_peak.cu
  "$OUT/hbm_peak" | tee "$OUT/hbm_peak.txt"
fi

ANYMAL="$BIN/anymal"
if [ ! -f "$MODEL/config.json" ]; then
  step "mkmodel: 7b shape, f16, safetensors -> $MODEL"
  mkdir -p "$(dirname "$MODEL")"
  timeout "$MKMODEL_TIMEOUT_S" "$ANYMAL" mkmodel --shape 7b --format safetensors --dtype f16 --out "$MODEL"
fi

: >"$OUT/anymal.jsonl"
for spec in "$RUN_B1" "$RUN_B64"; do
  IFS=: read -r b n m <<<"$spec"
  step "anymal bench batch --device cuda --batch $b --prompt-tokens $n --gen-tokens $m"
  timeout "$BENCH_TIMEOUT_S" "$ANYMAL" bench batch --device cuda --model "$MODEL" --batch "$b" \
    --prompt-tokens "$n" --gen-tokens "$m" | tee -a "$OUT/anymal.jsonl"
done

for spec in ${EXTRA_RUNS:-}; do
  IFS=: read -r b n m f <<<"$spec"
  step "anymal bench batch --device cuda --batch $b --prompt-tokens $n --gen-tokens $m --memory-fraction $f"
  timeout "$BENCH_TIMEOUT_S" "$ANYMAL" bench batch --device cuda --model "$MODEL" --batch "$b" \
    --prompt-tokens "$n" --gen-tokens "$m" --max-batch "$((b > 512 ? b : 512))" --memory-fraction "$f" \
    | tee "$OUT/extra-$b.jsonl"
done

if [ "${PROFILE:-0}" = 1 ]; then
  for spec in 1:512:32 64:128:16; do
    IFS=: read -r b n m <<<"$spec"
    step "profile: AM_CUDA_PROFILE=1 anymal bench batch --batch $b --prompt-tokens $n --gen-tokens $m"
    AM_CUDA_PROFILE=1 timeout "$BENCH_TIMEOUT_S" "$ANYMAL" bench batch --device cuda --model "$MODEL" \
      --batch "$b" --prompt-tokens "$n" --gen-tokens "$m" 2>&1 | tee "$OUT/profile-$b.txt"
  done
fi

: >"$OUT/hf.jsonl"
if [ "${SKIP_HF:-0}" != 1 ]; then
  step "HF transformers baseline (fp16, eager)"
  timeout "$BENCH_TIMEOUT_S" "$PYTHON" bench/gpu/hf_baseline.py --model "$MODEL" --run "$RUN_B1" \
    --run "$RUN_B64" | tee "$OUT/hf.jsonl"
fi

step "summary"
"$PYTHON" - "$MODEL" "$OUT" "$RUN_B1" "$RUN_B64" <<'EOF'
import glob, json, os, struct, sys

model, out, run_b1, run_b64 = sys.argv[1:5]

def runs(path):
    """JSON lines of a file, keyed by (batch, prompt_tokens, gen_tokens)."""
    res = {}
    for line in open(path) if os.path.exists(path) else []:
        line = line.strip()
        if line.startswith("{"):
            j = json.loads(line)
            k = (j.get("batch"), j.get("prompt_tokens"), j.get("gen_tokens"))
            res[k if None not in k else ("line", len(res))] = j
    return res

def key(spec):
    return tuple(int(v) for v in spec.split(":"))

def pick(res, spec, index):
    """The run for spec; else the index-th line (output without batch/token fields)."""
    if key(spec) in res:
        return res[key(spec)]
    vals = list(res.values())
    return vals[index] if index < len(vals) else {}

def weight_bytes(d):
    """Bytes of the matrices one decode step reads: every tensor but the
    embedding table (one row per token), unless lm_head is tied to it."""
    sizes = {}
    for f in glob.glob(os.path.join(d, "*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
        for name, t in hdr.items():
            if name != "__metadata__":
                sizes[name] = t["data_offsets"][1] - t["data_offsets"][0]
    tied = not any(n.endswith("lm_head.weight") for n in sizes)
    return sum(v for n, v in sizes.items() if tied or not n.endswith("embed_tokens.weight"))

name, peak = open(os.path.join(out, "hbm_peak.txt")).read().strip().split("\t")
peak = float(peak)
am, hf = runs(os.path.join(out, "anymal.jsonl")), runs(os.path.join(out, "hf.jsonl"))
a1, a64 = pick(am, run_b1, 0), pick(am, run_b64, 1)
h1, h64 = pick(hf, run_b1, 0), pick(hf, run_b64, 1)
wb = a1.get("weight_bytes_per_token") or weight_bytes(model)

def f(v, fmt="%.1f"):
    return fmt % v if isinstance(v, (int, float)) and v else "-"

def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"

rows = []
d1, hd1 = a1.get("decode_tok_per_s"), h1.get("decode_tok_per_s")
frac = d1 * wb / peak if d1 else None
rows.append(("decode batch 1 (tok/s)", f(d1), f(hd1), ratio(d1, hd1),
             "step %.2f ms, %.2f GB/step, %.0f GB/s = %.2f of HBM peak" % (1e3 / d1, wb / 1e9, d1 * wb / 1e9, frac)
             if d1 else "-"))
d64, hd64 = a64.get("decode_tok_per_s"), h64.get("decode_tok_per_s")
rows.append(("decode batch 64 (tok/s, all sequences)", f(d64), f(hd64), ratio(d64, hd64), ""))
p, hp = a1.get("prefill_tok_per_s"), h1.get("prefill_tok_per_s")
rows.append(("prefill 512 (tok/s)", f(p), f(hp), ratio(p, hp), ""))

print("GPU: %s, HBM peak %.0f GB/s (memory clock x bus width x 2); model %s" % (name, peak / 1e9, model))
hdr = ("", "anymal", "HF eager fp16", "anymal/HF", "")
w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(5)]
for r in [hdr] + rows:
    print("| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |")
if frac is not None:
    print("batch-1 decode HBM roofline fraction: %.3f" % frac)
if d64 and hd64:
    print("batch-64 decode vs HF: %.2fx" % (d64 / hd64))
EOF
exit "$status"
