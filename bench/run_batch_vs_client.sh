#!/usr/bin/env bash
# bench/run_batch_vs_client.sh - `anymal batch` against `anymal client --repeat` at the same
# concurrency on the same local cluster, side by side in one run (issue 16: batch at least
# 90% of client's throughput).
#
# usage: bench/run_batch_vs_client.sh [BIN_DIR]   (default build/bin; see bench/README.md)
# env:   N=640 CONC=64      requests per run, in flight
#        MAX_TOKENS=32      generated tokens per request (greedy)
#        ROUNDS=6           rounds of one run each (client first in odd rounds, batch first in
#                           even ones); medians
#        WORK=/tmp/am_bvc   model, logs, batch files
#        BATCH_ARGS=        more options for anymal batch (e.g. --sync-ms 0)
#
# Cluster as deploy/local: a coordinator, two encoder workers (all modalities, 1 thread
# each) and one shard group of P = 2 ranks (1 thread each, capacity CONC) on the tiny
# AnyMAL model. The request is deploy/local's throughput request, "Describe" + an image
# (tests/golden/vision/images/land_q90.jpg), MAX_TOKENS tokens, as a chat message: the
# batch file holds N copies of it as /v1/chat/completions lines (the image a path under
# --media-root), and the client sends the same parts the batch runner makes of it
# ("[INST] Describe", the image, "[/INST]": 32 prompt tokens on both sides). Both sides
# print requests/s and generated tokens/s over their wall time.
set -euo pipefail
BIN=${1:-build/bin}
SRC=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-640} CONC=${CONC:-64} MAX_TOKENS=${MAX_TOKENS:-32} ROUNDS=${ROUNDS:-6}
WORK=${WORK:-/tmp/am_bvc}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM -- "-$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
json() { sed -n "s/.*\"$2\": *\([0-9.e+-]*\).*/\1/p" <<<"$1" | head -1; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

[ -e "$WORK/tiny/config.json" ] || "$BIN/anymal" mkmodel --shape tiny --with-encoders --seed 0 --out "$WORK/tiny" >/dev/null
rm -f "$WORK/ep"
setsid "$BIN/anymal-coordinator" --bind 'tcp://127.0.0.1:*' --endpoint-file "$WORK/ep" 2>"$WORK/coord.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/ep" ] && break; sleep 0.05; done
EP=$(cat "$WORK/ep")
for k in 0 1; do
  setsid "$BIN/anymal-encoder" --coordinator "$EP" --model "$WORK/tiny" --modality all --threads 1 \
    --name "enc$k" 2>"$WORK/enc$k.log" &
  PIDS+=($!)
done
setsid mpirun -np 2 --bind-to none "$BIN/anymal-shard-worker" --coordinator "$EP" --model "$WORK/tiny" \
  --threads 1 --capacity "$CONC" 2>"$WORK/shard.log" &
PIDS+=($!)
for _ in $(seq 240); do
  "$BIN/anymal" client --coordinator "$EP" --text hi --image "$SRC/tests/golden/vision/images/land_q90.jpg" \
    --max-tokens 1 --timeout-ms 2000 >/dev/null 2>&1 && break
  sleep 0.25
done

line="{\"custom_id\": \"r%d\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Describe\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"vision/images/land_q90.jpg\"}}]}], \"max_tokens\": $MAX_TOKENS, \"temperature\": 0}}\n"
for i in $(seq "$N"); do printf "$line" "$i"; done >"$WORK/in.jsonl"

echo "cpu: $("$BIN/anymal" cpu | sed -n 's/^cpu: //p'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$WORK/client.rps"; : >"$WORK/client.tps"; : >"$WORK/batch.rps"; : >"$WORK/batch.tps"
run_client() {
  local c
  c=$("$BIN/anymal" client --coordinator "$EP" --text "[INST] Describe" \
      --image "$SRC/tests/golden/vision/images/land_q90.jpg" --text "[/INST]" --max-tokens "$MAX_TOKENS" \
      --repeat "$N" --concurrency "$CONC")
  echo "round $1 client: $c"
  json "$c" requests_per_s >>"$WORK/client.rps"; json "$c" tokens_per_s >>"$WORK/client.tps"
}
run_batch() {
  local b
  rm -f "$WORK/out.jsonl" "$WORK/out.jsonl.state"
  b=$("$BIN/anymal" batch --coordinator "$EP" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" \
      --media-root "$SRC/tests/golden" --concurrency "$CONC" --progress-s 600 ${BATCH_ARGS:-} 2>/dev/null)
  echo "round $1 batch:  $b"
  json "$b" requests_per_s >>"$WORK/batch.rps"; json "$b" output_tokens_per_s >>"$WORK/batch.tps"
}
for r in $(seq "$ROUNDS"); do # the order alternates: neither side always runs first
  if [ $((r % 2)) = 1 ]; then run_client "$r"; run_batch "$r"; else run_batch "$r"; run_client "$r"; fi
done
crps=$(median <"$WORK/client.rps"); brps=$(median <"$WORK/batch.rps")
ctps=$(median <"$WORK/client.tps"); btps=$(median <"$WORK/batch.tps")
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| side | requests/s (median of $ROUNDS) | tokens/s |"
echo "|---|---|---|"
echo "| anymal client --repeat $N --concurrency $CONC | $crps | $ctps |"
echo "| anymal batch ($N lines) --concurrency $CONC | $brps | $btps |"
awk -v b="$brps" -v c="$crps" 'BEGIN {printf "batch / client: %.1f%% of requests/s\n", 100 * b / c}'
