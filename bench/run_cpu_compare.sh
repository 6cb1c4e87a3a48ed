#!/usr/bin/env bash
# bench/run_cpu_compare.sh - anymal against llama.cpp on the CPU, side by side, one dtype at
# a time: the table of bench/README.md "The CPU path against llama.cpp".
#
#   bench/run_cpu_compare.sh MODEL_DIR LLAMA_CPP_BIN_DIR [BUILD_DIR]
#
# MODEL_DIR holds 1b-DTYPE.gguf for each dtype of $DTYPES (default q8_0 f16 bf16 f32; made by
# `anymal mkmodel --shape 1b --format gguf --dtype DTYPE --seed 0`, as run_decode_table.sh
# does). For each dtype, in this order, each line prefixed with the load average at its start:
#   anymal bench decode (prefill $PP = 512, decode $TG = 128), llama-bench -p $PP -n $TG;
#   anymal bench batch at B = 1, 8, 32, 64 (N = $N = 128 prompt tokens, 32 generated),
#   llama-batched-bench -npp $N -ntg 32 -npl 1,8,32,64.
# Both use $THREADS (2) threads. Prints anymal's JSON lines and llama.cpp's tables as they
# come; nothing is summarised here, so every figure in the README can be traced to a line.
set -euo pipefail
models=${1:?usage: run_cpu_compare.sh MODEL_DIR LLAMA_CPP_BIN_DIR [BUILD_DIR]}
llama=${2:?usage: run_cpu_compare.sh MODEL_DIR LLAMA_CPP_BIN_DIR [BUILD_DIR]}
bin=${3:-build}/bin
N=${N:-128}
PP=${PP:-512}
TG=${TG:-128}
T=${THREADS:-2}
load() { printf '# load %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"; }
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) ($(nproc) cores); $("$bin/anymal" cpu | head -1)"
for dt in ${DTYPES:-q8_0 f16 bf16 f32}; do
  m="$models/1b-$dt.gguf"
  [ -f "$m" ] || { echo "missing $m" >&2; exit 1; }
  echo "## $dt"
  load; "$bin/anymal" bench decode --model "$m" --prompt-tokens "$PP" --gen-tokens "$TG" --threads "$T"
  load; "$llama/llama-bench" -m "$m" -p "$PP" -n "$TG" -t "$T" -r 1 2>/dev/null || echo "llama-bench failed on $dt"
  for b in ${BATCHES:-1 8 32 64}; do
    load; "$bin/anymal" bench batch --model "$m" --batch "$b" --prompt-tokens "$N" --gen-tokens 32 --threads "$T"
  done
  load; "$llama/llama-batched-bench" -m "$m" -c $((N * 64 + 32 * 64 + 256)) -b 2048 -ub 512 \
    -npp "$N" -ntg 32 -npl "$(echo "${BATCHES:-1 8 32 64}" | tr ' ' ',')" -t "$T" 2>/dev/null ||
    echo "llama-batched-bench failed on $dt"
done
