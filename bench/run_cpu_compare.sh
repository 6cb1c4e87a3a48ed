#!/usr/bin/env bash
# bench/run_cpu_compare.sh - anymal against llama.cpp on the CPU, side by side, one dtype at
# a time: the table of bench/README.md "The CPU path against llama.cpp".
#
#   bench/run_cpu_compare.sh MODEL_DIR LLAMA_CPP_BIN_DIR [BUILD_DIR]
#
# MODEL_DIR holds 1b-DTYPE.gguf for each dtype of $DTYPES (default q8_0 f16 bf16 f32; made by
# `anymal mkmodel --shape 1b --format gguf --dtype DTYPE --seed 0`, as run_decode_table.sh
# does). For each dtype, $REPEAT (1) times, anymal then llama.cpp right after it on the same
# shape, so that each pair shares the machine's load (printed before every run):
#   anymal bench decode (prefill $PP = 512, decode $TG = 128) | llama-bench -p $PP -n $TG;
#   for B in $BATCHES (1 8 32 64): anymal bench batch (N = $N = 128 prompt tokens, $G = 32
#   generated) | llama-batched-bench -npp $N -ntg $G -npl B.
# Both use $THREADS (2) threads. Prints anymal's JSON lines and llama.cpp's tables as they
# come; nothing is summarised here, so every figure in the README can be traced to a line.
set -euo pipefail
models=${1:?usage: run_cpu_compare.sh MODEL_DIR LLAMA_CPP_BIN_DIR [BUILD_DIR]}
llama=${2:?usage: run_cpu_compare.sh MODEL_DIR LLAMA_CPP_BIN_DIR [BUILD_DIR]}
bin=${3:-build}/bin
N=${N:-128}
G=${G:-32}
PP=${PP:-512}
TG=${TG:-128}
T=${THREADS:-2}
load() { printf '# load %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"; }
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) ($(nproc) cores); $("$bin/anymal" cpu | sed -n 3p)"
for rep in $(seq "${REPEAT:-1}"); do
  for dt in ${DTYPES:-q8_0 f16 bf16 f32}; do
    m="$models/1b-$dt.gguf"
    [ -f "$m" ] || { echo "missing $m" >&2; exit 1; }
    echo "## $dt (run $rep)"
    if [ "${SKIP_DECODE:-0}" != 1 ]; then
      load; "$bin/anymal" bench decode --model "$m" --prompt-tokens "$PP" --gen-tokens "$TG" --threads "$T"
      load; "$llama/llama-bench" -m "$m" -p "$PP" -n "$TG" -t "$T" -r 1 2>/dev/null | grep -E '^\| llama' ||
        echo "llama-bench failed on $dt"
    fi
    for b in ${BATCHES:-1 8 32 64}; do
      load; "$bin/anymal" bench batch --model "$m" --batch "$b" --prompt-tokens "$N" --gen-tokens "$G" --threads "$T"
      load; "$llama/llama-batched-bench" -m "$m" -c $((b * (N + G) + 256)) -b 2048 -ub 512 \
        -npp "$N" -ntg "$G" -npl "$b" -t "$T" 2>/dev/null | grep -E '^\|  *[0-9]' ||
        echo "llama-batched-bench failed on $dt"
    done
  done
done
