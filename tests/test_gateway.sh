#!/usr/bin/env bash
# tests/test_gateway.sh - anymal-gateway over real sockets in front of a real cluster.
#
# A coordinator (--max-requests 6), an encoder, the tiny shard group and a slow one
# (tests/gateway_cluster.sh), and gateways with different options. curl checks SSE framing
# and every error code (400, 401, 404, 405, 408, 413, 429 with Retry-After, 503, 504, 505);
# tests/gateway_robust.py then runs the hostile clients (malformed HTTP, 100 MB body,
# 10,000 idle connections, slow-loris, invalid UTF-8/base64, disconnect mid-stream with
# its KV blocks freed). Also: the binary links no engine or media library.
set -u
cd "$(dirname "$0")/.."
dir=${AM_GW_TEST_DIR:-${AM_BIN_DIR:?}/../gateway-test}
mkdir -p "$dir"
source tests/gateway_cluster.sh
trap gw_cluster_down EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

libs=$(ldd "$B/anymal-gateway")
if grep -Eq "openblas|dnnl|libmpi|libav|sndfile|fftw|jpeg|png|webp|cuda" <<<"$libs"; then
  bad "anymal-gateway links engine or media libraries: $libs"
else
  ok "anymal-gateway links no engine or media library"
fi

GW_SLOW=1 GW_COORD_OPTS="--max-requests 6" gw_cluster_up "$dir" --request-timeout-ms 1000 \
  --max-body-bytes 8388608 || exit 1
H='Content-Type: application/json'

# code METHOD PATH [curl args...]: prints the HTTP status.
code() { local m=$1 p=$2; shift 2; curl -s -o "$dir/body" -D "$dir/head" -w '%{http_code}' -X "$m" "$GW$p" "$@"; }
expect() { # want, label, METHOD PATH [curl args]
  local want=$1 label=$2; shift 2
  local got; got=$(code "$@")
  if [ "$got" = "$want" ] && { [ "$want" -lt 400 ] || grep -q '"error"' "$dir/body"; }; then
    ok "$label -> $got"
  else
    bad "$label -> $got (want $want): $(head -c 300 "$dir/body")"
  fi
}

chat() { echo "{\"model\": \"${2:-tiny}\", \"max_tokens\": ${3:-8}, \"messages\": [{\"role\": \"user\", \"content\": \"$1\"}]${4:-}}"; }

expect 200 "chat" POST /v1/chat/completions -H "$H" -d "$(chat Hello)"
grep -q '"usage":{"prompt_tokens":[1-9]' "$dir/body" && ok "usage reported" || bad "no usage: $(cat "$dir/body")"
expect 200 "completions" POST /v1/completions -H "$H" -d '{"model": "tiny", "prompt": "Once", "max_tokens": 4}'
expect 200 "models" GET /v1/models
expect 200 "health" GET /health
expect 200 "metrics" GET /metrics
expect 200 "status page" GET /
expect 400 "malformed JSON body" POST /v1/chat/completions -H "$H" -d '{"model": "tiny", "messages": ['
expect 400 "bad part type" POST /v1/chat/completions -H "$H" -d '{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}'
expect 400 "bad temperature" POST /v1/chat/completions -H "$H" -d "$(chat Hi tiny 4 ', "temperature": "hot"')"
expect 404 "unknown route" GET /v2/everything
expect 404 "unknown model" POST /v1/chat/completions -H "$H" -d "$(chat Hi gpt-17)"
grep -q model_not_found "$dir/body" && ok "404 code model_not_found" || bad "404 body: $(cat "$dir/body")"
expect 405 "GET on a POST route" GET /v1/chat/completions
head -c 9000000 /dev/zero | tr '\0' a >"$dir/big"
expect 413 "body over --max-body-bytes" POST /v1/chat/completions -H "$H" --data-binary @"$dir/big"
expect 431 "headers too large" GET /health -H "X-Big: $(head -c 40000 /dev/zero | tr '\0' b)"
got=$( (printf 'GET /health HTTP/2.0\r\nHost: x\r\n\r\n'; sleep 1) | timeout 5 python3 -c '
import socket,sys; s=socket.create_connection(("127.0.0.1",'"${GW##*:}"')); s.sendall(sys.stdin.buffer.read()); print(s.recv(100).split()[1].decode())')
[ "$got" = 505 ] && ok "HTTP/2.0 request line -> 505" || bad "HTTP/2.0 request line -> $got"
# 408: a request that does not arrive within --request-timeout-ms (1 s).
got=$(timeout 5 python3 -c '
import socket; s=socket.create_connection(("127.0.0.1",'"${GW##*:}"')); s.sendall(b"GET /health HTTP/1.1\r\n"); print(s.recv(100).split()[1].decode())')
[ "$got" = 408 ] && ok "incomplete request -> 408" || bad "incomplete request -> $got"

# SSE framing: every event is "data: JSON\n\n"; the first chunk has the role, then content,
# the last chunk a finish_reason, then the usage chunk (include_usage), then [DONE].
curl -sN -D "$dir/shead" "$GW/v1/chat/completions" -H "$H" \
  -d "$(chat Hello tiny 12 ', "stream": true, "stream_options": {"include_usage": true}')" >"$dir/sse"
python3 - "$dir/sse" "$dir/shead" <<'EOF' && ok "SSE framing, role first, finish, usage, [DONE]" || bad "SSE framing"
import json, sys
raw = open(sys.argv[1], "rb").read().decode()
head = open(sys.argv[2]).read().lower()
assert "content-type: text/event-stream" in head and "transfer-encoding: chunked" in head, head
assert raw.endswith("data: [DONE]\n\n"), raw[-50:]
events = raw.split("\n\n")[:-1]
assert all(e.startswith("data: ") and "\n" not in e for e in events), events
js = [json.loads(e[6:]) for e in events[:-1]]
assert js[0]["choices"][0]["delta"]["role"] == "assistant"
assert all(j["object"] == "chat.completion.chunk" and j["id"] == js[0]["id"] for j in js)
assert js[-2]["choices"][0]["finish_reason"] in ("length", "stop")
assert js[-1]["choices"] == [] and js[-1]["usage"]["completion_tokens"] == 12, js[-1]
text = "".join(j["choices"][0]["delta"].get("content", "") for j in js[:-1])
assert len(js) >= 4 and text, js
EOF
curl -sN "$GW/v1/completions" -H "$H" -d '{"model": "tiny", "prompt": "Once", "max_tokens": 6, "stream": true}' >"$dir/sse2"
tail -c 14 "$dir/sse2" | grep -q 'data: \[DONE\]' && grep -q '"object":"text_completion"' "$dir/sse2" &&
  ok "completions stream" || bad "completions stream: $(head -c 300 "$dir/sse2")"

# 429: the coordinator admits 6 requests at once; 10 long ones at the same moment.
cpids=()
for i in $(seq 10); do
  curl -s -m 60 -o /dev/null -D "$dir/h429.$i" -w '%{http_code}\n' "$GW/v1/chat/completions" -H "$H" \
    -d "$(chat Hi slow 40)" >"$dir/c429.$i" &
  cpids+=($!)
done
wait "${cpids[@]}" # (a plain wait would wait for the cluster too)
n429=$(cat "$dir"/c429.* | grep -c 429)
n200=$(cat "$dir"/c429.* | grep -c 200)
if [ "$n429" -ge 1 ] && [ "$n200" -ge 1 ] && grep -qi "^retry-after: 1" $(grep -l 429 "$dir"/h429.* | head -1); then
  ok "coordinator over capacity -> 429 with Retry-After ($n429 of 10; $n200 answered)"
else
  bad "429: $n429 refused, $n200 answered: $(cat "$dir"/c429.* | tr '\n' ' ')"
fi

# 401: a gateway with API keys (one given, one from a file).
printf '# keys\nfile-key-2\n' >"$dir/keys"
gw_start_gateway keyed --api-key sekrit --api-key-file "$dir/keys" || exit 1
GWK=$GW2
for auth in "" "Authorization: Bearer wrong" "Authorization: Basic c2Vrcml0"; do
  got=$(curl -s -o "$dir/body" -w '%{http_code}' "$GWK/v1/models" ${auth:+-H "$auth"})
  [ "$got" = 401 ] && grep -q '"error"' "$dir/body" && ok "401 for '${auth:-no key}'" || bad "key '$auth' -> $got"
done
for key in sekrit file-key-2; do
  got=$(curl -s -o /dev/null -w '%{http_code}' "$GWK/v1/models" -H "Authorization: Bearer $key")
  [ "$got" = 200 ] && ok "key accepted ($key)" || bad "key $key -> $got"
done
got=$(curl -s -o /dev/null -w '%{http_code}' "$GWK/health")
[ "$got" = 200 ] && ok "/health needs no key" || bad "/health with keys -> $got"
out=$("$B/anymal-gateway" --coordinator "$COORD" --host 0.0.0.0 --port 0 2>&1)
[ $? = 1 ] && grep -q "API key" <<<"$out" && ok "no key on 0.0.0.0 refused" || bad "open bind: $out"

# 504: a deadline of 300 ms for a generation that needs seconds.
gw_start_gateway deadline --deadline-ms 300 || exit 1
got=$(curl -s -o "$dir/body" -w '%{http_code}' "$GW2/v1/chat/completions" -H "$H" -d "$(chat Hi slow 300)")
[ "$got" = 504 ] && ok "past the deadline -> 504" || bad "deadline -> $got $(cat "$dir/body")"

# 503: a coordinator with no shard group.
cport=$(free_port)
gw_start coord-empty "$B/anymal-coordinator" --bind "tcp://127.0.0.1:$cport"
COORD_SAVE=$COORD
COORD="tcp://127.0.0.1:$cport"
gw_start_gateway empty || exit 1
COORD=$COORD_SAVE
sleep 0.6
got=$(curl -s -o "$dir/body" -w '%{http_code}' "$GW2/v1/chat/completions" -H "$H" -d "$(chat Hi)")
hc=$(curl -s -o /dev/null -w '%{http_code}' "$GW2/health")
[ "$got" = 503 ] && [ "$hc" = 503 ] && ok "no shard group -> 503 (and /health 503)" || bad "503: $got, health $hc"

# Metrics after all this: the counters moved, in Prometheus text format.
curl -s "$GW/metrics" >"$dir/metrics"
for m in 'anymal:generation_tokens_total [1-9]' 'anymal:time_to_first_token_seconds_count [1-9]' \
  'anymal:http_responses_total{code="429"} [1-9]' 'anymal:registered_workers{role="shard_group"} 2' \
  'anymal:encoder_requests_total{modality="image"}' 'anymal:e2e_request_latency_seconds_bucket{le="+Inf"}'; do
  grep -q "^$m" "$dir/metrics" && ok "metric $m" || bad "metric $m missing"
done

GW=$GW MODEL=tiny timeout 120 python3 tests/gateway_robust.py || fails=$((fails + 1))
gw_cluster_down # the gateways exit (SIGTERM: a clean shutdown), so LeakSanitizer reports too
grep -q "ERROR: [A-Za-z]*Sanitizer\|runtime error" "$LOGS"/gateway*.log && bad "sanitizer report in the gateway's log"
[ $fails = 0 ] && echo "test_gateway: all passed" || echo "test_gateway: $fails failed"
exit $((fails > 0))
