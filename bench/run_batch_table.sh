#!/usr/bin/env bash
# bench/run_batch_table.sh - the continuous-batching table of bench/README.md.
#
#   bench/run_batch_table.sh MODEL_DIR [LLAMA_CPP_BIN_DIR]
#
# For each 1b-shape model in MODEL_DIR (1b-q8_0.gguf, 1b-f16.gguf, 1b-f32.gguf; made by
# bench/run_decode_table.sh) runs `anymal bench batch` at B = 1, 8, 32, 64 (N = 64 prompt
# tokens, 32 generated, 2 threads; N from the environment) and a 512-token prefill at B = 1,
# plus `anymal bench decode` (the single-request engine) with the same N/32 for the B = 1
# comparison. With
# llama.cpp's binaries, llama-batched-bench runs the same shapes on the same files. Prints
# the JSON lines and llama.cpp's tables; bench/README.md has the resulting table.
set -euo pipefail
models=${1:?usage: run_batch_table.sh MODEL_DIR [LLAMA_CPP_BIN_DIR]}
llama=${2:-}
bin="$(dirname "$0")/../build/bin"
N=${N:-64}
dtypes=${DTYPES:-q8_0 f16 f32}
for dt in $dtypes; do
  m="$models/1b-$dt.gguf"
  [ -f "$m" ] || { echo "missing $m (bench/run_decode_table.sh makes it)" >&2; exit 1; }
  "$bin/anymal" bench decode --model "$m" --prompt-tokens "$N" --gen-tokens 32 --threads 2
  for b in 1 8 32 64; do
    "$bin/anymal" bench batch --model "$m" --batch "$b" --prompt-tokens "$N" --gen-tokens 32 --threads 2
  done
  "$bin/anymal" bench batch --model "$m" --batch 1 --prompt-tokens 512 --gen-tokens 8 --threads 2
  if [ -n "$llama" ]; then
    "$llama/llama-batched-bench" -m "$m" -c 10496 -b 2048 -ub 512 -npp "$N" -ntg 32 -npl 1,8,32,64 -t 2 2>/dev/null
  fi
done
