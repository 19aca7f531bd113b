#!/usr/bin/env bash
# Builds zoo with the `cuda` feature on any x86_64 Linux machine, GPU or not: installs the CUDA
# 13.0 toolkit from PyPI into .cuda/ (scripts/cuda/setup.sh), then runs cargo with it.
#
#   scripts/cuda/build.sh              # cargo build --release -p zoo --features cuda
#                                      #   -> target/cuda/release/zoo, and the GPU op checks
#                                      #   -> target/cuda/release/zoo-cuda-ops
#   scripts/cuda/build.sh --check      # compiler and headers only, no linking: cargo clippy
#                                      # -D warnings of zoo and zoo-models (with the GPU op
#                                      # checks) with cuda
#   scripts/cuda/build.sh [--check] -- ARGS   # extra cargo arguments
#
# A build's target dir is target/cuda (CARGO_TARGET_DIR overrides), apart from the CPU build's
# target/, so neither binary replaces the other; a check uses target/. Without a GPU the kernels
# are built for CUDA_COMPUTE_CAP=90 (H100/H200); set it for another GPU, e.g. 80 for A100. The
# binary needs the NVIDIA driver (libcuda.so.1, CUDA 13: driver 580 or newer) and the CUDA
# libraries at run time: `. .cuda/env.sh` puts .cuda/root/lib on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=build
if [ "${1:-}" = --check ]; then
  mode=check
  shift
fi
[ "${1:-}" = -- ] && shift

if [ $mode = check ]; then
  scripts/cuda/setup.sh
else
  scripts/cuda/setup.sh --libs
fi
. .cuda/env.sh
# A build writes target/cuda/release/zoo, apart from the CPU build's binary. A check writes no
# binary, so it shares target/ with the CPU clippy: the crates whose features do not change
# (everything outside Candle's tree) are checked once, not twice.
if [ $mode = check ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
fi
echo "cuda build: CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR" >&2

if [ $mode = check ]; then
  # One cargo call for both packages: two would resolve features differently and compile Candle
  # (and nvcc its kernels) twice.
  cargo clippy -p zoo -p zoo-models --features zoo/cuda,zoo-models/cuda --lib --bins \
    --test cuda_ops --locked "$@" -- -D warnings
else
  # The binary and, in the same cargo call (one feature resolution, Candle compiled once), the
  # op checks scripts/gpu-check.sh runs on a GPU, copied to a stable path.
  artifacts=$(cargo build --release -p zoo -p zoo-models --features zoo/cuda,zoo-models/cuda \
    --bins --test cuda_ops --locked --message-format=json-render-diagnostics "$@")
  tests=$(echo "$artifacts" | grep '"name":"cuda_ops"' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
  if [ -z "$tests" ]; then
    echo "cuda build: cargo named no cuda_ops test binary" >&2
    exit 1
  fi
  cp "$tests" "$CARGO_TARGET_DIR/release/zoo-cuda-ops"
  echo "cuda build: $CARGO_TARGET_DIR/release/zoo and zoo-cuda-ops (the GPU op checks);" \
    "run them after . .cuda/env.sh, or with scripts/gpu-check.sh" >&2
fi
