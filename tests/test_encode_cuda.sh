#!/usr/bin/env bash
# tests/test_encode_cuda.sh - `anymal encode --device cuda` for every modality against the CPU
# (label gpu).
#
# Encodes the golden images, audio clips (WAV, FLAC, 16 kHz stereo) and
# IMU files (CSV, .npy) with the tiny model on the CPU and on the GPU, batched, and compares
# each file's line: the same token count and width, checksums within 1e-3 of the rows' L2
# norm (f32 on both sides; the GPU sums in another order, cuBLAS GEMMs, CUDA's expf/erff), and
# the first values of the first rows within 1e-3. Exits 77 (skipped) when anymal was built
# without CUDA or no GPU is present.
set -u
ANYMAL="${AM_BIN_DIR:?}/anymal"
AUD="${AM_SOURCE_DIR:?}/tests/golden/audio"
IMU="${AM_SOURCE_DIR:?}/tests/golden/imu"
VIS="${AM_SOURCE_DIR:?}/tests/golden/vision"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

"$ANYMAL" mkmodel --shape tiny --with-encoders --seed 2 --out "$tmp/m" >/dev/null 2>&1 || {
  echo "FAIL: mkmodel"; exit 1; }
probe=$("$ANYMAL" encode --modality imu --model "$tmp/m" --device cuda "$IMU/imu333.npy" 2>&1)
if grep -Eq "no CUDA device|built without CUDA" <<<"$probe"; then
  echo "SKIP test_encode_cuda: $(head -1 <<<"$probe")"
  exit 77
fi

# compare NAME CPU_OUTPUT GPU_OUTPUT: line by line as described above.
compare() {
  local name=$1 out
  if [ -z "$2" ] || [ "$(wc -l <<<"$2")" != "$(wc -l <<<"$3")" ]; then
    echo "FAIL: $name: cpu and cuda printed different line counts"; echo "$2"; echo "$3"
    fails=$((fails + 1)); return
  fi
  out=$(paste -d '\n' <(echo "$2") <(echo "$3") | awk '
    function abs(x) { return x < 0 ? -x : x }
    function field(line, key,   i, n, parts) {
      n = split(line, parts, " ")
      for (i = 1; i <= n; i++) if (index(parts[i], key "=") == 1) return substr(parts[i], length(key) + 2)
      return ""
    }
    NR % 2 == 1 { c = $0; next }
    {
      g = $0
      if (c ~ /^  row/) {
        n = split(c, a, " "); split(g, b, " ")
        for (i = 3; i <= n; i++) if (abs(a[i] - b[i]) > 1e-3) { print "row value " a[i] " vs " b[i] ": " c; bad++ }
        next
      }
      if (field(c, "tokens") != field(g, "tokens") || field(c, "dim") != field(g, "dim")) { print "shape: " c " | " g; bad++; next }
      l2 = field(c, "l2") + 0
      if (abs(field(c, "l2") - field(g, "l2")) > 1e-4 * l2 + 1e-6) { print "l2: " c " | " g; bad++ }
      if (abs(field(c, "sum") - field(g, "sum")) > 1e-3 * l2 + 1e-6) { print "sum: " c " | " g; bad++ }
      if (abs(field(c, "wsum") - field(g, "wsum")) > 3e-3 * l2 + 1e-6) { print "wsum: " c " | " g; bad++ }
    }
    END { exit bad > 0 }')
  if [ $? -ne 0 ]; then echo "FAIL: $name:"; echo "$out" | head -8; fails=$((fails + 1)); else passes=$((passes + 1)); fi
}

run() { # run MODALITY DEVICE ARGS...
  local mod=$1 dev=$2
  shift 2
  "$ANYMAL" encode --modality "$mod" --model "$tmp/m" --threads 2 --device "$dev" --print-rows 3 "$@" 2>/dev/null
}

imgs=("$VIS/images/land_q90.jpg" "$VIS/images/rgba.png" "$VIS/images/lossy.webp")
clips=("$AUD/speech48.wav" "$AUD/speech48.flac" "$AUD/speech16k_stereo.flac")
# 12 s of 6 sines at 200 Hz (3 windows, the last padded).
awk 'BEGIN { for (i = 0; i < 2400; i++) { t = i / 200; printf "%.6f,%.6f,%.6f,%.6f,%.6f,%.6f\n",
  sin(t), cos(2 * t), 9.8 + sin(3 * t), 0.1 * sin(5 * t), 0.2 * cos(7 * t), 0.05 * t } }' >"$tmp/sines.csv"
imus=("$IMU/imu100.csv" "$IMU/imu333.npy" "$tmp/sines.csv")
compare "image" "$(run image cpu --batch 3 "${imgs[@]}")" "$(run image cuda --batch 3 "${imgs[@]}")"
compare "audio" "$(run audio cpu --batch 3 "${clips[@]}")" "$(run audio cuda --batch 3 "${clips[@]}")"
compare "audio, one clip per batch" "$(run audio cpu --batch 1 "${clips[@]}")" "$(run audio cuda --batch 1 "${clips[@]}")"
compare "imu" "$(run imu cpu --imu-time-unit ms --batch 3 "${imus[@]}")" "$(run imu cuda --imu-time-unit ms --batch 3 "${imus[@]}")"
# Batching on the GPU: the same lines whatever the batch (per-item GEMMs there too).
a=$(run audio cuda --batch 3 "${clips[@]}")
b=$(run audio cuda --batch 1 "${clips[@]}")
compare "audio on cuda, batch 3 vs 1" "$a" "$b"

echo "test_encode_cuda: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
