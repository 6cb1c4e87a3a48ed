#!/usr/bin/env bash
# deploy/demo.sh - the README's main job: build anymal and generate text with the
# embedded default model.
#
# The default model is `anymal mkmodel --shape tiny --with-encoders` (random
# weights, a synthetic vocabulary: the text is gibberish, the pipeline is
# real): a decoder plus vision, audio and IMU encoders and projectors. It is
# generated once into models/tiny. Extra arguments go to `anymal generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target anymal >/dev/null
if [ ! -f models/tiny/anymal.json ]; then
  mkdir -p models
  build/bin/anymal mkmodel --shape tiny --with-encoders --seed 0 --out models/tiny
fi
build/bin/anymal generate --model models/tiny --prompt "Once upon a time" --max-tokens 64 "$@"
