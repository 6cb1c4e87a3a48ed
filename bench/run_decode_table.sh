#!/usr/bin/env bash
# bench/run_decode_table.sh - the decode/prefill table of bench/README.md.
#
# Writes `anymal mkmodel` 1b-shape checkpoints (seed 0) in each weight dtype
# into $MODELS (default /tmp/anymal-models, ~12 GB in all) unless present, then runs
# `anymal bench decode` on each and prints one JSON line per model.
# Usage: bench/run_decode_table.sh [BUILD_DIR] [SHAPE]
set -euo pipefail
build=${1:-build}
shape=${2:-1b}
models=${MODELS:-/tmp/anymal-models}
threads=${THREADS:-2}
anymal="$build/bin/anymal"
mkdir -p "$models"

make_model() { # dtype format path
  [ -e "$3" ] || "$anymal" mkmodel --shape "$shape" --format "$2" --dtype "$1" --seed 0 --out "$3" >&2
}

for spec in q8_0:gguf q4_0:gguf f16:gguf bf16:safetensors f32:gguf; do
  dtype=${spec%%:*}
  format=${spec##*:}
  path="$models/$shape-$dtype"
  [ "$format" = gguf ] && path="$path.gguf"
  make_model "$dtype" "$format" "$path"
  "$anymal" bench decode --model "$path" --prompt-tokens "${PROMPT:-512}" --gen-tokens "${GEN:-128}" --threads "$threads"
done
