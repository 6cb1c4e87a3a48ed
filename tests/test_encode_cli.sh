#!/usr/bin/env bash
# tests/test_encode_cli.sh - `anymal mkmodel --with-encoders` and `anymal encode` as a user runs them.
#
# Checks the model directory (decoder usable by `generate`, vision files, anymal.json), that
# encoding images and videos prints one line per file with the token count, that batching
# does not change the checksums, and that bad files give exit status 1 with a message naming
# the file while the good files are still encoded.
set -u
ANYMAL="${AM_BIN_DIR:?}/anymal"
FIX="${AM_SOURCE_DIR:?}/tests/golden/vision"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

# expect STATUS PATTERN -- CMD...: runs CMD, checks its exit status and that stdout+stderr match PATTERN.
expect() {
  local want=$1 pattern=$2
  shift 3
  local out status
  out=$("$@" 2>&1)
  status=$?
  if [ "$status" -ne "$want" ] || ! grep -Eq -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> status $status (want $want), output:"
    echo "$out" | head -8
    fails=$((fails + 1))
  else
    passes=$((passes + 1))
  fi
}

expect 0 "--with-encoders" -- "$ANYMAL" mkmodel --help
expect 0 "--modality" -- "$ANYMAL" encode --help
expect 0 "wrote" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --seed 1 --out "$tmp/m"
for f in anymal.json vision_tower.safetensors vision_projector.safetensors config.json model.safetensors tokenizer.model; do
  if [ -f "$tmp/m/$f" ]; then passes=$((passes + 1)); else echo "FAIL: $tmp/m/$f missing"; fails=$((fails + 1)); fi
done
expect 0 "finish: length" -- "$ANYMAL" generate --model "$tmp/m" --prompt "hi" --max-tokens 3
expect 0 "wrote" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --projector mlp2x_gelu --dtype bf16 --out "$tmp/mlp"

imgs=("$FIX/images/land_q90.jpg" "$FIX/images/rgba.png" "$FIX/images/lossy.webp")
expect 0 "land_q90.jpg: tokens=8 dim=64 sum=" -- "$ANYMAL" encode --modality image --model "$tmp/m" --threads 2 "${imgs[@]}"
expect 0 "rgba.png: tokens=16 dim=64" -- "$ANYMAL" encode --modality image --model "$tmp/mlp" "${imgs[@]}"
# --device cpu prints what the default does; cuda without a GPU (or CUDA build) fails in one line.
a=$("$ANYMAL" encode --modality image --model "$tmp/m" --threads 2 "${imgs[@]}" 2>/dev/null)
b=$("$ANYMAL" encode --modality image --model "$tmp/m" --threads 2 --device cpu "${imgs[@]}" 2>/dev/null)
if [ -z "$a" ] || [ "$a" != "$b" ]; then echo "FAIL: encode --device cpu differs"; fails=$((fails + 1)); else passes=$((passes + 1)); fi
if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  expect 1 "^anymal encode: error: (no CUDA device|device 'cuda': anymal was built without CUDA)" -- \
    "$ANYMAL" encode --modality image --model "$tmp/m" --device cuda "${imgs[@]}"
fi
# Batching (3 files in one batch vs one at a time) prints the same checksums.
a=$("$ANYMAL" encode --modality image --model "$tmp/m" --batch 3 "${imgs[@]}" 2>/dev/null)
b=$("$ANYMAL" encode --modality image --model "$tmp/m" --batch 1 "${imgs[@]}" 2>/dev/null)
if [ -n "$a" ] && [ "$a" = "$b" ] && [ "$(wc -l <<<"$a")" -eq 3 ]; then passes=$((passes + 1));
else echo "FAIL: batched checksums differ:"; echo "$a"; echo "$b"; fails=$((fails + 1)); fi
# Videos: the perceiver gives 8 tokens whatever the frame count.
expect 0 "clip.mp4: tokens=8 dim=64" -- "$ANYMAL" encode --modality video --model "$tmp/m" "$FIX/video/clip.mp4" "$FIX/video/clip.webm" "$FIX/video/clip.mkv"
expect 0 "clip.mkv: tokens=8" -- "$ANYMAL" encode --modality video --model "$tmp/m" --frames 4 "$FIX/video/clip.mkv"
expect 0 "clip.mp4: tokens=64 dim=64" -- "$ANYMAL" encode --modality video --model "$tmp/mlp" --frames 4 "$FIX/video/clip.mp4"

# Bad inputs: status 1, the file named, the good file still encoded.
head -c 500 "$FIX/images/land_q90.jpg" >"$tmp/cut.jpg"
printf 'hello' >"$tmp/text.png"
head -c $(($(stat -c %s "$FIX/video/clip.mp4") / 2)) "$FIX/video/clip.mp4" >"$tmp/cut.mp4"
expect 1 "cut.jpg: truncated JPEG" -- "$ANYMAL" encode --modality image --model "$tmp/m" "$tmp/cut.jpg" "${imgs[0]}"
expect 1 "land_q90.jpg: tokens=8" -- "$ANYMAL" encode --modality image --model "$tmp/m" "$tmp/cut.jpg" "${imgs[0]}"
expect 1 "text.png: not a JPEG, PNG or WebP" -- "$ANYMAL" encode --modality image --model "$tmp/m" "$tmp/text.png"
expect 1 "missing.jpg" -- "$ANYMAL" encode --modality image --model "$tmp/m" "$tmp/missing.jpg"
# After an error the closing line says what was encoded, once, and never reads as a result.
for mod in image audio imu; do
  err=$("$ANYMAL" encode --modality "$mod" --model "$tmp/m" "$tmp/missing.jpg" 2>&1 >/dev/null)
  if [ "$(grep -c '^anymal encode:' <<<"$err")" -eq 2 ] && grep -q "none of the 1 files was encoded" <<<"$err" &&
     ! grep -q "0 files" <<<"$err"; then passes=$((passes + 1)); else echo "FAIL: $mod summary after an error: $err"; fails=$((fails + 1)); fi
done
expect 1 "1 of 2 files encoded \(1 failed\)" -- "$ANYMAL" encode --modality image --model "$tmp/m" "$tmp/missing.jpg" "${imgs[0]}"
expect 1 "over the limit of 100 pixels" -- "$ANYMAL" encode --modality image --model "$tmp/m" --max-pixels 100 "${imgs[0]}"
expect 1 "cut.mp4" -- "$ANYMAL" encode --modality video --model "$tmp/m" "$tmp/cut.mp4"
expect 1 "text.png: not a readable video container" -- "$ANYMAL" encode --modality video --model "$tmp/m" "$tmp/text.png"
expect 1 "frame embeddings for 8" -- "$ANYMAL" encode --modality video --model "$tmp/m" --frames 9 "$FIX/video/clip.mp4"
expect 1 "neither anymal.json nor a LLaVA config.json" -- "$ANYMAL" encode --modality image --model "$tmp/plain" "${imgs[0]}"
"$ANYMAL" mkmodel --shape tiny --format safetensors --out "$tmp/plain" >/dev/null 2>&1
expect 1 "model_type 'llama' has no vision encoder" -- "$ANYMAL" encode --modality image --model "$tmp/plain" "${imgs[0]}"
expect 2 "--modality is required" -- "$ANYMAL" encode --model "$tmp/m" "${imgs[0]}"
expect 2 "unknown modality 'smell'" -- "$ANYMAL" encode --modality smell --model "$tmp/m" "${imgs[0]}"
expect 2 "no input files" -- "$ANYMAL" encode --modality image --model "$tmp/m"
expect 2 "--frames wants an integer" -- "$ANYMAL" encode --modality video --model "$tmp/m" --frames 0 x.mp4
expect 2 "unknown vision shape 'vit-h'" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --vision vit-h --out "$tmp/x"
expect 2 "must be safetensors" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --format gguf --out "$tmp/x"
expect 2 "need --with-encoders" -- "$ANYMAL" mkmodel --shape tiny --format gguf --vision tiny --out "$tmp/x"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
