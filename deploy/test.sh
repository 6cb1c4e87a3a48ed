#!/usr/bin/env bash
# deploy/test.sh - the README's test command: install deps, build, run every test.
#
# 0. cppcheck (warning class) over every C source; clang-format --dry-run -Werror over
#    every C/CUDA source (.clang-format).
# 1. A release build in build/ and its whole ctest suite.
# 2. An ASan+UBSan build (AM_SANITIZE=ON) in build-asan/ and the same suite
#    (set AM_SKIP_SANITIZE=1 to skip it locally).
# Tests labelled `gpu` skip themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh

jobs=$(nproc)
# Every folder of C/CUDA sources: what cppcheck and clang-format check.
src_dirs=(core llm_shards encoders proto coordinator api gateway workers supervise tools tests bench)
# Static analysis first: cppcheck's warning class must be clean (docs/style.md).
cppcheck --quiet --enable=warning --std=c11 -I . -I tests -D_GNU_SOURCE -j "$jobs" \
  --suppress=missingIncludeSystem --error-exitcode=1 "${src_dirs[@]}"
echo "cppcheck: clean"
# Formatting: every C/CUDA source as the repository's .clang-format (clang-format 14) has it.
find "${src_dirs[@]}" \
  \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print0 | xargs -0 clang-format --dry-run -Werror
echo "clang-format: clean"

echo "test.sh: stage 1, the release suite (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAM_WERROR=ON
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs")

# libFuzzer on the wire-protocol decoder, bounded to 30 s; built with clang directly because
# the main build uses gcc. Only the decoder (proto.c) is instrumented; what it calls in
# am_base comes from the release build's own library, so this list never restates CMake's.
if command -v clang >/dev/null; then
  mkdir -p build/fuzz
  clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I . tests/fuzz_proto.c proto/proto.c \
    build/lib/libam_base.a -lmsgpackc -lm -lpthread -o build/fuzz/fuzz_proto
  build/fuzz/fuzz_proto -max_total_time=30 -rss_limit_mb=1024 -print_final_stats=0 2>&1 | tail -2
  # The HTTP gateway's and the batch runner's request parser (api/), likewise: instrumented
  # itself, the client and base libraries from the release build.
  clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I . tests/fuzz_api.c api/*.c \
    build/lib/libam_client.a build/lib/libam_transport.a build/lib/libam_proto.a \
    build/lib/libam_base.a -lcjson -lzmq -lmsgpackc -lm -lpthread -o build/fuzz/fuzz_api
  build/fuzz/fuzz_api -max_total_time=30 -rss_limit_mb=1024 -print_final_stats=0 2>&1 | tail -2
fi

if [ "${AM_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "test.sh: stage 2, the ASan+UBSan suite (build-asan/)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAM_SANITIZE=ON -DAM_WERROR=ON
  cmake --build build-asan -j "$jobs"
  # LeakSanitizer reports leaks as failures; OpenBLAS/oneDNN thread pools are process-lifetime.
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j "$jobs")
fi
