#!/usr/bin/env bash
# tests/test_cli.sh - the `anymal` command as a user runs it: real processes, real files.
#
# Checks exit codes (0 ok, 1 runtime error, 2 usage error), that errors name
# what was wrong, and the output contract of `generate --print-ids`.
set -u
ANYMAL="${AM_BIN_DIR:?}/anymal"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

# expect STATUS PATTERN -- CMD...: runs CMD, checks its exit status and that
# stdout+stderr match the extended regex PATTERN.
expect() {
  local want=$1 pattern=$2
  shift 3
  local out status
  out=$("$@" 2>&1)
  status=$?
  if [ "$status" -ne "$want" ] || ! grep -Eq -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> status $status (want $want), output:"
    echo "$out" | head -5
    fails=$((fails + 1))
  else
    passes=$((passes + 1))
  fi
}

expect 0 "usage: anymal" -- "$ANYMAL" --help
expect 2 "usage: anymal" -- "$ANYMAL"
expect 2 "unknown command 'frobnicate'" -- "$ANYMAL" frobnicate
expect 0 "--shape" -- "$ANYMAL" mkmodel --help
expect 0 "--print-ids" -- "$ANYMAL" generate --help
expect 0 "decode_roofline_frac" -- "$ANYMAL" bench --help
expect 2 "--shape is required" -- "$ANYMAL" mkmodel --format gguf --out "$tmp/x.gguf"
expect 2 "unknown shape 'huge'" -- "$ANYMAL" mkmodel --shape huge --format gguf --out "$tmp/x.gguf"
expect 2 "unknown format 'onnx'" -- "$ANYMAL" mkmodel --shape tiny --format onnx --out "$tmp/x"
expect 2 "unknown dtype 'f8'" -- "$ANYMAL" mkmodel --shape tiny --format gguf --dtype f8 --out "$tmp/x"
expect 1 "q8_0 weights need --format gguf" -- "$ANYMAL" mkmodel --shape tiny --format safetensors --dtype q8_0 --out "$tmp/x"
expect 1 "llama2c checkpoints are f32 only" -- "$ANYMAL" mkmodel --shape tiny --format llama2c --dtype bf16 --out "$tmp/x.bin"
expect 2 "--layers wants an integer" -- "$ANYMAL" mkmodel --shape tiny --layers zero --format gguf --out "$tmp/x"

expect 0 "wrote" -- "$ANYMAL" mkmodel --shape tiny --format gguf --dtype q8_0 --seed 3 --out "$tmp/tiny.gguf"
expect 0 "wrote" -- "$ANYMAL" mkmodel --shape tiny --format safetensors --seed 3 --out "$tmp/tiny"

# --max-tokens N prints exactly N ids (EOS aside) on one line of stdout.
ids=$("$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,5,9 --max-tokens 17 --print-ids 2>/dev/null)
n=$(wc -w <<<"$ids")
lines=$(printf '%s\n' "$ids" | wc -l)
if [ "$n" -ne 17 ] || [ "$lines" -ne 1 ] || ! grep -Eq '^[0-9]+( [0-9]+)*$' <<<"$ids"; then
  echo "FAIL: --print-ids printed '$ids'"; fails=$((fails + 1))
else passes=$((passes + 1)); fi
# The same seed gives the same sampled ids; text prompts work.
a=$("$ANYMAL" generate --model "$tmp/tiny.gguf" --prompt "hello world" --max-tokens 12 --temperature 0.9 --top-p 0.9 --top-k 40 --seed 5 --print-ids 2>/dev/null)
b=$("$ANYMAL" generate --model "$tmp/tiny.gguf" --prompt "hello world" --max-tokens 12 --temperature 0.9 --top-p 0.9 --top-k 40 --seed 5 --print-ids 2>/dev/null)
if [ -z "$a" ] || [ "$a" != "$b" ]; then echo "FAIL: seeded sampling not reproducible: '$a' vs '$b'"; fails=$((fails + 1)); else passes=$((passes + 1)); fi
expect 0 "finish: length" -- "$ANYMAL" generate --model "$tmp/tiny" --chat --system "Be brief." --prompt "Hi" --max-tokens 4

expect 2 "--model is required" -- "$ANYMAL" generate --prompt hi
expect 2 "exactly one of --prompt and --prompt-ids" -- "$ANYMAL" generate --model "$tmp/tiny"
# --prompt-ids is parsed by one function for generate and client: bad ids, empty lists and
# too many ids are usage errors naming the option (the client used to truncate at 4096).
expect 2 "--prompt-ids wants comma-separated non-negative ids, bad at ',2'" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,,2
expect 2 "--prompt-ids wants comma-separated non-negative ids, bad at 'x'" -- "$ANYMAL" client --prompt-ids 1,x
expect 2 "--prompt-ids has more than 4096 ids" -- "$ANYMAL" client --prompt-ids "$(seq -s, 1 4097)"
expect 2 "--prompt-ids is empty" -- "$ANYMAL" client --prompt-ids ""
# The KV cache sized from a memory fraction (bench batch, shard worker): out-of-range
# fractions and two sizings at once are usage errors; a fraction too small for one block
# is a runtime error that says so; a sensible one runs.
expect 2 "--memory-fraction wants a number in \[0.001, 1\], got '1.5'" -- "$ANYMAL" bench batch --model "$tmp/tiny" --memory-fraction 1.5
expect 1 "no room for one block" -- "$ANYMAL" bench batch --model "$tmp/tiny" --memory-fraction 0.001 --batch 2 --prompt-tokens 4 --gen-tokens 2
# What is in use now, the 512 MiB reserve and ~100 MiB of cache: a fraction that takes
# little (1.0 would allocate most of the machine's RAM for the CPU's cache).
frac=$(awk '/^MemTotal:/ {t = $2} /^MemAvailable:/ {a = $2} END {printf "%.4f", (t - a + 630 * 1024) / t}' /proc/meminfo)
expect 0 '"max_running":2' -- "$ANYMAL" bench batch --model "$tmp/tiny" --memory-fraction "$frac" --batch 2 --prompt-tokens 4 --gen-tokens 2
expect 2 "--kv-blocks and --memory-fraction both size the KV cache" -- "$AM_BIN_DIR/anymal-shard-worker" --coordinator tcp://127.0.0.1:1 --model "$tmp/tiny" --kv-blocks 4 --memory-fraction 0.5
# The actor programs parse their options from one table each (core/cli.h am_cli_parse):
# unknown options, missing and out-of-range values, values given to flags and bad
# modality lists are usage errors naming the option; --help exits 0.
expect 0 "usage: anymal-coordinator" -- "$AM_BIN_DIR/anymal-coordinator" --help
expect 2 "unknown option '--bogus'" -- "$AM_BIN_DIR/anymal-coordinator" --bogus
expect 2 "--max-requests wants an integer in \[1, " -- "$AM_BIN_DIR/anymal-coordinator" --max-requests 0
expect 2 "option --endpoint-file needs a value" -- "$AM_BIN_DIR/anymal-coordinator" --endpoint-file
expect 0 "usage: anymal-encoder" -- "$AM_BIN_DIR/anymal-encoder" -h
expect 2 "unknown modality 'smell' \(want image, video, audio, imu or all\)" -- "$AM_BIN_DIR/anymal-encoder" --modality image,smell
expect 2 "--batch-wait-ms wants an integer in \[0, 10000\], got '-1'" -- "$AM_BIN_DIR/anymal-encoder" --batch-wait-ms=-1
expect 2 "--reconnect-ms wants MIN\[,MAX\]" -- "$AM_BIN_DIR/anymal-encoder" --reconnect-ms 5,1
expect 2 "--allreduce-bf16 takes no value" -- "$AM_BIN_DIR/anymal-shard-worker" --allreduce-bf16=1
expect 2 "--coordinator and --model are required" -- "$AM_BIN_DIR/anymal-shard-worker" --stream-ms 0
# Programs sized to their role: the coordinator only routes, so it links neither the
# engine (OpenBLAS, oneDNN, MPI, CUDA) nor the media stack.
coord_libs=$(ldd "$AM_BIN_DIR/anymal-coordinator" 2>&1)
if grep -Eq "libdnnl|libopenblas|libmpi|libcuda|libcublas|libav|libsndfile|libjpeg" <<<"$coord_libs"; then
  echo "FAIL: anymal-coordinator links engine or media libraries:"; echo "$coord_libs"; fails=$((fails + 1))
else passes=$((passes + 1)); fi
# anymal cpu: the levels, a level check, and a bad cap named.
expect 0 "^levels: generic" -- "$ANYMAL" cpu
expect 0 "^generic$" -- "$ANYMAL" cpu --levels
expect 0 "" -- "$ANYMAL" cpu --has generic
expect 2 "--has: 'sse9' is not a level" -- "$ANYMAL" cpu --has sse9
expect 1 "AM_CPU_ISA='sse9': expected generic, avx2, avx512, amx or auto" -- env AM_CPU_ISA=sse9 "$ANYMAL" cpu
expect 0 "in force: generic" -- env AM_CPU_ISA=generic "$ANYMAL" cpu
expect 2 "--prompt-ids wants comma-separated" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,x,3
expect 2 "--temperature wants a number" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt hi --temperature -1
expect 2 "--top-p wants a number" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt hi --top-p 1.5
expect 2 "unknown option '--bogus'" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt hi --bogus
expect 1 "outside the vocabulary of 512" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,512 --print-ids
expect 1 "exceeds the model's context of 512" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt hi --max-tokens 600
expect 1 "$tmp/missing" -- "$ANYMAL" generate --model "$tmp/missing" --prompt hi
# The batching benchmark's JSON contract, and its errors.
expect 0 '"bench":"batch".*"batch":6.*"decode_tok_per_s":[0-9.]+.*"prefill_tok_per_s":[0-9.]+.*"ttft_ms_p50":[0-9.]+.*"itl_ms_p99":[0-9.]+.*"sgemm_peak_gflop_per_s":[0-9.]+' -- \
  "$ANYMAL" bench batch --model "$tmp/tiny.gguf" --batch 6 --prompt-tokens 20 --gen-tokens 5 --threads 1
expect 1 "exceed the model's context of 512" -- "$ANYMAL" bench batch --model "$tmp/tiny.gguf" --prompt-tokens 500 --gen-tokens 20
expect 2 "--batch wants an integer" -- "$ANYMAL" bench batch --model "$tmp/tiny.gguf" --batch 0
# --device: cpu is the default's backend (same ids); cuda on a machine without a GPU or a
# build without CUDA fails with one line naming why (where a GPU is present it may run).
expect_device_error() {
  local out status
  out=$("$@" 2>&1)
  status=$?
  if [ "$status" -eq 0 ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    passes=$((passes + 1))
  elif [ "$status" -eq 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] &&
       grep -Eq -- "error: (no CUDA device|device 'cuda[:0-9]*': anymal was built without CUDA)" <<<"$out"; then
    passes=$((passes + 1))
  else
    echo "FAIL: $* -> status $status (want 1 and one line: no CUDA device / built without CUDA), output:"
    echo "$out" | head -5
    fails=$((fails + 1))
  fi
}
a=$("$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,5,9 --max-tokens 6 --print-ids 2>/dev/null)
b=$("$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,5,9 --max-tokens 6 --print-ids --device cpu 2>/dev/null)
if [ -z "$a" ] || [ "$a" != "$b" ]; then echo "FAIL: --device cpu ids '$b' vs default '$a'"; fails=$((fails + 1)); else passes=$((passes + 1)); fi
expect_device_error "$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,5,9 --max-tokens 6 --print-ids --device cuda
expect_device_error "$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1,5,9 --max-tokens 6 --device cuda:0
expect_device_error "$ANYMAL" bench batch --model "$tmp/tiny.gguf" --batch 2 --prompt-tokens 8 --gen-tokens 2 --device cuda
expect_device_error "$ANYMAL" bench decode --model "$tmp/tiny.gguf" --prompt-tokens 8 --gen-tokens 2 --device cuda
expect 1 "device 'gpu': expected cpu, cuda or cuda:N" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1 --device gpu
expect 1 "device 'cuda:x': expected cpu, cuda or cuda:N" -- "$ANYMAL" bench batch --model "$tmp/tiny.gguf" --device cuda:x
expect 2 "--device" -- "$ANYMAL" generate --model "$tmp/tiny" --prompt-ids 1 --device
printf 'GGUF\003\000\000\000garbage' >"$tmp/bad.gguf"
expect 1 "bad.gguf" -- "$ANYMAL" generate --model "$tmp/bad.gguf" --prompt hi
expect 1 "bad.gguf" -- "$ANYMAL" generate --model "$tmp/tiny" --tokenizer "$tmp/bad.gguf" --prompt hi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
