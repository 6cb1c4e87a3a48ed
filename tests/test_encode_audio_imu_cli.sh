#!/usr/bin/env bash
# tests/test_encode_audio_imu_cli.sh - `anymal mkmodel --with-encoders` and `anymal encode
# --modality audio|imu` as a user runs them.
#
# Checks that the model directory has every modality (tiny and real encoder shapes), that
# encoding audio (WAV, FLAC, OGG, MP3, 16 kHz stereo) and IMU files (CSV with timestamps,
# .npy, raw float32) prints one line per file with the token count, that batching does not
# change the checksums, and that bad files give exit status 1 with a message naming the file
# while the good files are still encoded.
set -u
ANYMAL="${AM_BIN_DIR:?}/anymal"
AUD="${AM_SOURCE_DIR:?}/tests/golden/audio"
IMU="${AM_SOURCE_DIR:?}/tests/golden/imu"
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

same() { # same NAME A B: A and B are equal, non-empty stdout captures
  if [ -n "$2" ] && [ "$2" = "$3" ]; then passes=$((passes + 1)); else
    echo "FAIL: $1 differ:"; echo "$2"; echo "$3"; fails=$((fails + 1)); fi
}

expect 0 "--audio" -- "$ANYMAL" mkmodel --help
expect 0 "imu" -- "$ANYMAL" encode --help
expect 0 "wrote" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --seed 2 --out "$tmp/m"
for f in anymal.json vision_tower.safetensors audio_encoder.safetensors audio_projector.safetensors \
         imu_encoder.safetensors imu_projector.safetensors model.safetensors; do
  if [ -f "$tmp/m/$f" ]; then passes=$((passes + 1)); else echo "FAIL: $tmp/m/$f missing"; fails=$((fails + 1)); fi
done
expect 0 "finish: length" -- "$ANYMAL" generate --model "$tmp/m" --prompt "hi" --max-tokens 3

# Audio: every container, 4 tokens per clip of the tiny model (64 wide).
clips=("$AUD/speech48.wav" "$AUD/speech48.flac" "$AUD/speech48.ogg" "$AUD/speech48.mp3" "$AUD/speech16k_stereo.flac")
expect 0 "speech48.wav: tokens=4 dim=64 sum=.* src=wav/48000Hz/1ch/1.84s" -- "$ANYMAL" encode --modality audio --model "$tmp/m" --threads 2 "${clips[@]}"
expect 0 "speech16k_stereo.flac: tokens=4 dim=64 .* src=flac/16000Hz/2ch" -- "$ANYMAL" encode --modality audio --model "$tmp/m" "${clips[@]}"
a=$("$ANYMAL" encode --modality audio --model "$tmp/m" --batch 5 "${clips[@]}" 2>/dev/null)
b=$("$ANYMAL" encode --modality audio --model "$tmp/m" --batch 1 "${clips[@]}" 2>/dev/null)
same "batched audio checksums" "$a" "$b"
# FLAC is lossless: the same rows as the WAV.
w=$(grep "speech48.wav" <<<"$a" | sed 's/.*tokens=//; s/ src=.*//')
f=$(grep "speech48.flac" <<<"$a" | sed 's/.*tokens=//; s/ src=.*//')
same "wav vs flac rows" "$w" "$f"

# IMU: CSV with millisecond timestamps (2 windows), channel-major .npy at 50 Hz, raw f32.
expect 0 "imu100.csv: tokens=8 dim=64 .* windows=2 src=100Hz/7.30s" -- "$ANYMAL" encode --modality imu --model "$tmp/m" --imu-time-unit ms "$IMU/imu100.csv"
expect 0 "imu50.npy: tokens=8 dim=64 .* windows=2 src=50Hz" -- "$ANYMAL" encode --modality imu --model "$tmp/m" --imu-rate 50 "$IMU/imu50.npy"
expect 0 "imu333.npy: tokens=4 dim=64 .* windows=1 src=333Hz" -- "$ANYMAL" encode --modality imu --model "$tmp/m" "$IMU/imu333.npy"
head -c $((1000 * 24)) /dev/zero >"$tmp/still.f32"
expect 0 "still.f32: tokens=4 dim=64 .* windows=1 src=200Hz/5.00s" -- "$ANYMAL" encode --modality imu --model "$tmp/m" "$tmp/still.f32"
imus=("$IMU/imu100.csv" "$IMU/imu333.npy" "$tmp/still.f32")
a=$("$ANYMAL" encode --modality imu --model "$tmp/m" --imu-time-unit ms --batch 3 "${imus[@]}" 2>/dev/null)
b=$("$ANYMAL" encode --modality imu --model "$tmp/m" --imu-time-unit ms --batch 1 "${imus[@]}" 2>/dev/null)
same "batched IMU checksums" "$a" "$b"

# Bad inputs: status 1, the file named, the good file still encoded.
head -c 30000 "$AUD/speech48.wav" >"$tmp/cut.wav"
head -c 20000 "$AUD/speech48.flac" >"$tmp/cut.flac"
printf 'hello' >"$tmp/text.wav"
printf '1,2,3,4,5\n1,2,3,4,5\n' >"$tmp/five.csv"
printf '1,2,3,4,5,nan\n' >"$tmp/nan.csv"
head -c 100 "$IMU/imu50.npy" >"$tmp/cut.npy"
expect 1 "cut.wav: truncated wav file" -- "$ANYMAL" encode --modality audio --model "$tmp/m" "$tmp/cut.wav" "${clips[0]}"
expect 1 "speech48.wav: tokens=4" -- "$ANYMAL" encode --modality audio --model "$tmp/m" "$tmp/cut.wav" "${clips[0]}"
expect 1 "cut.flac: (corrupt or )?truncated flac" -- "$ANYMAL" encode --modality audio --model "$tmp/m" "$tmp/cut.flac"
expect 1 "text.wav: not a readable audio file" -- "$ANYMAL" encode --modality audio --model "$tmp/m" "$tmp/text.wav"
expect 1 "missing.wav" -- "$ANYMAL" encode --modality audio --model "$tmp/m" "$tmp/missing.wav"
expect 1 "over the limit of 1.0 s" -- "$ANYMAL" encode --modality audio --model "$tmp/m" --max-seconds 1 "${clips[0]}"
expect 1 "five.csv: line 1 has 5 columns \\(want 6" -- "$ANYMAL" encode --modality imu --model "$tmp/m" "$tmp/five.csv"
expect 1 "nan.csv: line 1, column 6 is NaN" -- "$ANYMAL" encode --modality imu --model "$tmp/m" "$tmp/nan.csv"
expect 1 "cut.npy: .*truncated" -- "$ANYMAL" encode --modality imu --model "$tmp/m" "$tmp/cut.npy" "$IMU/imu333.npy"
expect 1 "imu333.npy: tokens=4" -- "$ANYMAL" encode --modality imu --model "$tmp/m" "$tmp/cut.npy" "$IMU/imu333.npy"
expect 1 "check their unit" -- "$ANYMAL" encode --modality imu --model "$tmp/m" "$IMU/imu100.csv"
expect 2 "unknown --imu-time-unit 'h'" -- "$ANYMAL" encode --modality imu --model "$tmp/m" --imu-time-unit h "$IMU/imu100.csv"
expect 2 "unknown modality 'smell'" -- "$ANYMAL" encode --modality smell --model "$tmp/m" x
expect 2 "unknown audio shape 'htsat-huge'" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --audio htsat-huge --out "$tmp/x"
expect 2 "need --with-encoders" -- "$ANYMAL" mkmodel --shape tiny --format gguf --imu tiny --out "$tmp/x"

# A directory without audio and IMU encoders.
expect 0 "wrote" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --audio none --imu none --out "$tmp/v"
if [ ! -e "$tmp/v/audio_encoder.safetensors" ] && [ -f "$tmp/v/vision_tower.safetensors" ]; then passes=$((passes + 1)); else echo "FAIL: --audio none"; fails=$((fails + 1)); fi
expect 1 "no \"audio\" object" -- "$ANYMAL" encode --modality audio --model "$tmp/v" "${clips[0]}"
expect 1 "no \"imu\" object" -- "$ANYMAL" encode --modality imu --model "$tmp/v" "$IMU/imu333.npy"

# Real encoder shapes (CLAP HTSAT-tiny, IMU2CLIP) beside the tiny decoder, 16 tokens each.
expect 0 "wrote" -- "$ANYMAL" mkmodel --shape tiny --with-encoders --vision none --audio htsat-tiny --imu imu2clip --audio-tokens 16 --imu-tokens 16 --dtype bf16 --out "$tmp/real"
expect 0 "speech48.wav: tokens=16 dim=64" -- "$ANYMAL" encode --modality audio --model "$tmp/real" "${clips[0]}"
expect 0 "imu100.csv: tokens=32 dim=64 .* windows=2" -- "$ANYMAL" encode --modality imu --model "$tmp/real" --imu-time-unit ms "$IMU/imu100.csv"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
