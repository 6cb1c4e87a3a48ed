#!/usr/bin/env bash
# bench/run_tp_bench.sh - the tensor-parallel measurements of bench/README.md, in one go.
#
#   bench/run_tp_bench.sh [BUILD_DIR] [OUT_DIR]     (defaults: build, /tmp/am_tp_bench)
#
# Writes JSON lines into OUT_DIR, which bench/scaling_model.py --measured OUT_DIR reads:
#   allreduce.p2.f32.txt, allreduce.p4.f32.txt, allreduce.p2.bf16.txt  (bench_allreduce: table + JSON fit)
#   decode.p1.t2.json, decode.p1.t1.json, decode.p2.t1.json, decode.p2.t1.bf16.json
#     (`anymal bench decode` of the 1b shape, bf16 safetensors: P = 1 with 2 and 1 threads,
#      P = 2 with 1 thread per rank; f32 and bf16 all-reduces), AM_BENCH_REPEATS (default 3)
#      JSON lines each, the configurations interleaved; readers take the best run, since
#      other jobs on a shared machine only ever slow a run down)
# Needs about 3 GB of disk for the 1b checkpoint (made and deleted) and a few minutes; run
# it on a quiet machine: the numbers are bandwidth- and latency-sensitive. As root, the
# runs use Open MPI's OMPI_ALLOW_RUN_AS_ROOT variables (benchmarks only, as the tests).
set -euo pipefail
BUILD=${1:-build}
OUT=${2:-/tmp/am_tp_bench}
BIN="$BUILD/bin"
PROMPT=${AM_BENCH_PROMPT_TOKENS:-128}
GEN=${AM_BENCH_GEN_TOKENS:-32}
mkdir -p "$OUT"
# On a shared machine (AM_BENCH_WAIT_QUIET=1), each run first waits (up to 5 min) until no
# other process uses more than 15% of a CPU.
quiet() {
  [ "${AM_BENCH_WAIT_QUIET:-0}" = 1 ] || return 0
  local i top
  for i in $(seq 300); do
    top=$(ps -eo pcpu --sort=-pcpu | sed -n 2p | tr -d ' ')
    awk -v t="$top" 'BEGIN { exit !(t < 15) }' && return 0
    sleep 1
  done
}
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
model=$(mktemp -d /tmp/am_tp_bench_1b.XXXXXX)
trap 'rm -rf "$model"' EXIT

for P in 2 4; do
  quiet
  mpirun -np $P --oversubscribe --bind-to none "$BIN/bench_allreduce" --min-bytes 4 --max-bytes $((64 << 20)) \
    | tee "$OUT/allreduce.p$P.f32.txt"
done
quiet
mpirun -np 2 --bind-to none "$BIN/bench_allreduce" --wire bf16 --min-bytes 4096 --max-bytes $((64 << 20)) \
  | tee "$OUT/allreduce.p2.bf16.txt"

"$BIN/anymal" mkmodel --shape 1b --format safetensors --dtype bf16 --out "$model/1b"
common=(--model "$model/1b" --prompt-tokens "$PROMPT" --gen-tokens "$GEN")
rm -f "$OUT"/decode.*.json
for rep in $(seq "${AM_BENCH_REPEATS:-3}"); do
  quiet
  "$BIN/anymal" bench decode "${common[@]}" --threads 2 | tee -a "$OUT/decode.p1.t2.json"
  quiet
  "$BIN/anymal" bench decode "${common[@]}" --threads 1 | tee -a "$OUT/decode.p1.t1.json"
  quiet
  "$BIN/anymal" bench decode "${common[@]}" --tp 2 --threads 1 | tee -a "$OUT/decode.p2.t1.json"
  quiet
  "$BIN/anymal" bench decode "${common[@]}" --tp 2 --threads 1 --allreduce-dtype bf16 | tee -a "$OUT/decode.p2.t1.bf16.json"
done
echo "results in $OUT"
