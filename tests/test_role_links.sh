#!/usr/bin/env bash
# tests/test_role_links.sh - each actor program links what its role needs (issue 14).
#
# anymal-shard-worker runs the decoder (and sizes embedding slots from the encoders' configs,
# am_enc_core): no media library (FFmpeg, libsndfile, libsoxr, FFTW, the image codecs) may be
# linked. anymal-encoder decodes media: it links them. Checked with ldd on the built programs.
set -u
BIN="${AM_BIN_DIR:?}"
MEDIA='libav|libsw|sndfile|soxr|fftw|jpeg|libpng|webp'
fails=0
shard=$(ldd "$BIN/anymal-shard-worker" 2>&1) || { echo "FAIL: ldd anymal-shard-worker: $shard"; exit 1; }
if grep -Eq "$MEDIA" <<<"$shard"; then
  echo "FAIL: anymal-shard-worker links media libraries:"; grep -E "$MEDIA" <<<"$shard"; fails=$((fails + 1))
fi
if ! grep -q "libmpi" <<<"$shard"; then echo "FAIL: anymal-shard-worker does not link MPI"; fails=$((fails + 1)); fi
enc=$(ldd "$BIN/anymal-encoder" 2>&1)
for lib in libavformat sndfile; do
  if ! grep -q "$lib" <<<"$enc"; then echo "FAIL: anymal-encoder does not link $lib"; fails=$((fails + 1)); fi
done
echo "test_role_links: $fails failed"
[ "$fails" -eq 0 ]
