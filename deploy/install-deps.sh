#!/usr/bin/env bash
# deploy/install-deps.sh - install every Debian 12 package anymal needs to build and test.
#
# Idempotent: asks dpkg what is missing and runs apt-get only for that, so the
# README's commands can call it every time. Needs root (or sudo) when
# something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  cppcheck          # static analysis step of deploy/test.sh
  clang-format      # its formatting check (Debian 12: clang-format 14, as .clang-format expects)
  libopenblas-dev   # BLAS GEMM (loaded at run time with the right core type)
  libdnnl-dev       # oneDNN: bf16 GEMM on AMX
  libcjson-dev      # JSON: safetensors headers, HF config.json
  openmpi-bin libopenmpi-dev   # Open MPI: tensor-parallel shard groups (mpirun, anymal-shard)
  libjpeg62-turbo-dev libpng-dev libwebp-dev   # image decoding (encoders/image.c)
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev   # video decoding (encoders/video.c)
  libsndfile1-dev libsoxr-dev   # audio decoding (WAV/FLAC/OGG/MP3) and resampling (encoders/audio_file.c)
  libfftw3-dev      # FFT of CLAP's log-mel front end (encoders/melspec.c)
  libzmq3-dev libmsgpack-dev   # the actor system: ZeroMQ sockets, msgpack bodies (proto/, coordinator/, workers/)
  libuv1-dev libhttp-parser-dev curl   # anymal-gateway: event loop, HTTP/1.1 parser; curl for deploy/local and its tests
  python3-venv      # the gateway tests install the real openai SDK (PyPI) in a venv
  wrk               # HTTP load tool of the gateway's overhead benchmark (bench/run_gateway.sh)
  chromium          # headless browser of the gateway's status-page test
  slurmctld slurmd slurm-client munge   # deploy/slurm and its test on a real Slurm (tests/test_slurm.sh):
                    # what the metapackage slurm-wlm depends on, plus munge (slurm-wlm-basic-plugins
                    # comes with them: mpi/pmix, task/affinity, select/cons_tres)
  libpmix-dev       # srun --mpi=pmix: Slurm's mpi/pmix plugin dlopens libpmix.so, which only -dev ships
  iproute2          # ip netns / ss: the Slurm test's nodes are network namespaces
  clang libclang-rt-14-dev   # libFuzzer build of the protocol decoder (deploy/test.sh): clang only
                            # recommends its fuzzer/ASan runtimes, which --no-install-recommends skips
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
