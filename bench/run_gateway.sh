#!/usr/bin/env bash
# bench/run_gateway.sh - the gateway's overhead: HTTP (wrk, keep-alive, POST through a Lua
# script) against the native ZeroMQ client (`anymal client --repeat --concurrency`) on the
# same cluster, side by side in one run, at the same concurrency and the same request
# (tiny model, text prompt, GW_BENCH_TOKENS tokens). Prints both JSON-ish lines and the
# ratio. Uses tests/gateway_cluster.sh (coordinator, encoder, shard group P = 1, gateway).
# Environment: AM_BIN_DIR (default build/bin), GW_BENCH_CONC (64), GW_BENCH_SECONDS (10),
# GW_BENCH_TOKENS (16).
set -eu
cd "$(dirname "$0")/.."
export AM_BIN_DIR=${AM_BIN_DIR:-$PWD/build/bin}
conc=${GW_BENCH_CONC:-64} secs=${GW_BENCH_SECONDS:-10} ntok=${GW_BENCH_TOKENS:-16}
dir=$(mktemp -d /tmp/anymal-gwbench.XXXXXX)
source tests/gateway_cluster.sh
trap 'gw_cluster_down; rm -rf "$dir"' EXIT
gw_cluster_up "$dir" >/dev/null
cat >"$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "tiny", "max_tokens": $ntok, "messages": [{"role": "user", "content": "Hi"}]}'
done = function(summary, latency, requests)
  io.write(string.format('{"tool": "wrk", "requests": %d, "errors": %d, "requests_per_s": %.1f, "latency_ms_p50": %.2f, "latency_ms_p99": %.2f}\n',
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
# The same prompt as the template makes it (text parts of the LLaMA-2-chat template), so both
# paths generate from the same tokens.
wrk -t2 -c"$conc" -d"${secs}s" -s "$dir/post.lua" "$GW/v1/chat/completions" | grep '"tool"' >"$dir/wrk.json"
n=$(python3 -c "import json; print(int(json.load(open('$dir/wrk.json'))['requests']))")
"$B/anymal" client --coordinator "$COORD" --text "[INST] Hi [/INST]" --max-tokens "$ntok" \
  --repeat "$n" --concurrency "$conc" >"$dir/zmq.json"
echo "http (wrk -c$conc, ${secs}s): $(cat "$dir/wrk.json")"
echo "zmq  (anymal client --repeat $n --concurrency $conc): $(cat "$dir/zmq.json")"
python3 - "$dir/wrk.json" "$dir/zmq.json" <<'PY'
import json, sys
h, z = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(json.dumps({"http_over_zmq_throughput": round(h["requests_per_s"] / z["requests_per_s"], 3),
                  "added_p50_ms": round(h["latency_ms_p50"] - z["latency_ms_p50"], 2)}))
PY
echo "cpu: $("$B/anymal" cpu | sed -n 's/^cpu: //p'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
