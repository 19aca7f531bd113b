#!/usr/bin/env bash
# zoo against PyTorch eager at the same shapes, on the same cores, in one run: the shapes of
# issue 7 (AlexNet-224 inference at batch 1 and 32, a training step at 32; alexnet-cifar at its
# recipe's batch of 128). Prints a Markdown table with the ratio.
#
#   scripts/speed/compare.sh            # builds zoo (release), uses .venv-ref's Python if present
#   ZOO=path/to/zoo PYTHON=python3 scripts/speed/compare.sh
#   PRECISION=bf16 scripts/speed/compare.sh   # zoo's bf16 mode against PyTorch's bf16 autocast
#   PYTORCH_MALLOC=default scripts/speed/compare.sh  # PyTorch with glibc's default malloc
#   ROUNDS=3 scripts/speed/compare.sh   # zoo and PyTorch in turn, 3 times; then medians and
#                                       # ranges (this box moves 10-15% between runs)
#
# Without torch it prints zoo's numbers alone and says how to get the comparison.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${ZOO:-}" ]; then
  cargo build --release -p zoo --quiet
  ZOO=target/release/zoo
fi
PYTHON=${PYTHON:-$( [ -x .venv-ref/bin/python ] && echo .venv-ref/bin/python || echo python3 )}
RUNS=${RUNS:-5}
PRECISION=${PRECISION:-f32}

ROUNDS=${ROUNDS:-1}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
zoo_speed() {
  "$ZOO" speed alexnet --batch 1,32 --train-batch 32 --runs "$RUNS" --precision "$PRECISION" --json > "$tmp/alexnet.json"
  "$ZOO" speed alexnet-cifar --batch 128 --train-batch 128 --runs "$RUNS" --precision "$PRECISION" --json > "$tmp/cifar.json"
}

if "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
  # The glibc malloc settings zoo applies to itself (crates/cli/src/allocator.rs: no mmap per
  # buffer, no trimming), so that both sides reuse their pages: with glibc's defaults PyTorch's
  # alexnet-cifar ran 393 against 573 images/s (inference) and 200 against 229 (training) here.
  # A user's own GLIBC_TUNABLES wins, as it does for zoo; PYTORCH_MALLOC=default runs PyTorch
  # with glibc's defaults (as a plain `python` does).
  if [ "${PYTORCH_MALLOC:-zoo}" = default ]; then
    tunables=${GLIBC_TUNABLES:-}
  else
    tunables=${GLIBC_TUNABLES:-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647}
  fi
  for round in $(seq "$ROUNDS"); do
    [ "$ROUNDS" -gt 1 ] && echo "Round $round of $ROUNDS:"
    zoo_speed
    GLIBC_TUNABLES=$tunables "$PYTHON" scripts/speed/compare.py --precision "$PRECISION" \
      --record "$tmp/rounds.tsv" "$tmp/alexnet.json" "$tmp/cifar.json"
  done
  if [ "$ROUNDS" -gt 1 ]; then
    "$PYTHON" scripts/speed/compare.py --summary "$tmp/rounds.tsv"
  fi
else
  echo "PyTorch not found for $PYTHON (scripts/reference/setup.sh installs it into .venv-ref); zoo alone:"
  zoo_speed
  cat "$tmp/alexnet.json" "$tmp/cifar.json"
fi
