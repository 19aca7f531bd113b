#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, runs the prebuilt `cuda` build of zoo (from
# scripts/cuda/build.sh, which also builds the op-check test) and writes reports/gpu/:
#
#   1. environment: GPU, driver, the binary's libraries (a missing one stops here, said plainly);
#   2. op checks: zoo's CUDA kernels (max-pooling, LRN; forward and backward; f64/f32/f16/bf16)
#      against the CPU kernels (crates/models/tests/cuda_ops.rs);
#   3. `zoo speed` of every card: inference at batch 1 and 32, training at 32, on cuda;
#   4. AlexNet at 224 in f32, TF32 and bf16 mixed precision, batch 256, beside the published
#      anchors, with the GPU memory high-water mark of each measurement;
#   5. a short CIFAR-10 training of alexnet-cifar on cuda, in f32 and in bf16 mixed precision,
#      and `zoo bench` of it (its result holds the GPU memory high-water mark); skipped, said
#      so, without $ZOO_DATA.
#
#   scripts/gpu-check.sh
#   ZOO=path/to/zoo OPS_TEST=path/to/cuda_ops-test LIMIT=6400 EPOCHS=1 scripts/gpu-check.sh
#
# Libraries: the binary needs libcuda.so.1 (the driver, 580 or newer for CUDA 13) and CUDA 13's
# cudart, cuBLAS, cuBLASLt, cuRAND and NVRTC. It looks for them in .cuda/root/lib (the build's
# toolkit), then in Python's nvidia/cu13/lib (pip's CUDA wheels, e.g. a PyTorch cu13 install),
# then in /usr/local/cuda/lib64. Exits non-zero if any step failed; the report says which.
set -uo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-target/cuda/release/zoo}
OPS_TEST=${OPS_TEST:-target/cuda/release/zoo-cuda-ops}
LIMIT=${LIMIT:-6400}
EPOCHS=${EPOCHS:-1}
DEVICE=${DEVICE:-cuda}
out=reports/gpu
mkdir -p "$out/speed" "$out/logs"
report=$out/report.md
failed=()

# --- libraries -------------------------------------------------------------------------------
libdirs=()
[ -d .cuda/root/lib ] && libdirs+=("$PWD/.cuda/root/lib")
for py in python3 .venv-ref/bin/python; do
  d=$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null) || continue
  [ -d "$d" ] && libdirs+=("$d")
done
[ -d /usr/local/cuda/lib64 ] && libdirs+=(/usr/local/cuda/lib64)
for d in "${libdirs[@]}"; do
  LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH

elapsed() { echo $(( $(date +%s) - $1 ))s; }

{
  echo "# GPU check"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- GPU: $(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n1 || echo 'nvidia-smi failed')"
  echo "- binary: \`$ZOO\`"
  echo "- library path: \`${LD_LIBRARY_PATH:-}\`"
  echo
} > "$report"

if [ ! -x "$ZOO" ]; then
  echo "- **no binary** at \`$ZOO\`: build it with scripts/cuda/build.sh" >> "$report"
  cat "$report"
  exit 1
fi
missing=$(ldd "$ZOO" 2>&1 | grep 'not found' || true)
if [ -n "$missing" ]; then
  { echo "- **missing libraries** (the steps below cannot run):"; echo; echo '```'; echo "$missing"; echo '```'; } >> "$report"
  cat "$report"
  exit 1
fi

# --- 1. op checks ----------------------------------------------------------------------------
echo "## Op checks (CUDA vs CPU)" >> "$report"
echo >> "$report"
t=$(date +%s)
if [ -x "$OPS_TEST" ]; then
  if "$OPS_TEST" --test-threads=1 --nocapture > "$out/logs/ops.log" 2>&1; then
    echo "passed in $(elapsed "$t"):" >> "$report"
  else
    failed+=(ops)
    echo "**FAILED** in $(elapsed "$t") (log: \`$out/logs/ops.log\`):" >> "$report"
  fi
  { echo; echo '```'; grep -E 'max_pool2d|lrn|skipping|test |panicked|FAILED|test result' "$out/logs/ops.log"; echo '```'; } >> "$report"
else
  failed+=(ops)
  echo "**not run**: no test binary at \`$OPS_TEST\` (scripts/cuda/build.sh builds it)" >> "$report"
fi
echo >> "$report"

# --- 2. speed of every card ------------------------------------------------------------------
echo "## zoo speed (batch 1, 32; training 32; $DEVICE)" >> "$report"
echo >> "$report"
cards=$("$ZOO" list --json | sed -n 's/^ *"card": "\(.*\)",$/\1/p')
echo '| card | result | time |' >> "$report"
echo '|---|---|---|' >> "$report"
for card in $cards; do
  t=$(date +%s)
  if "$ZOO" speed "$card" --batch 1,32 --train-batch 32 --device "$DEVICE" --json \
      > "$out/speed/$card.json" 2> "$out/logs/speed-$card.log"; then
    echo "| $card | ok (\`speed/$card.json\`) | $(elapsed "$t") |" >> "$report"
  else
    failed+=("speed:$card")
    echo "| $card | **FAILED**: $(tail -n1 "$out/logs/speed-$card.log" | tr '|' '/') | $(elapsed "$t") |" >> "$report"
  fi
done
echo >> "$report"

# --- 3. AlexNet at 224 in each precision, beside the anchors -----------------------------------
echo "## AlexNet at 224, batch 256: f32, TF32, bf16 mixed precision ($DEVICE)" >> "$report"
echo >> "$report"
echo "Anchors (A100, TensorFlow): training about 10,200 img/s in TF32 and 16,500 img/s in fp16;" >> "$report"
echo "inference about 28,000 and 34,700 img/s. Rows: zoo's median images/s; the JSON files also" >> "$report"
echo "hold the GPU memory high-water mark of each row (\`peak_device_mib\`)." >> "$report"
echo >> "$report"
for precision in f32 tf32 bf16; do
  case $precision in
    f32) flags=() ;;
    tf32) flags=(--tf32) ;;
    bf16) flags=(--precision bf16) ;;
  esac
  t=$(date +%s)
  if "$ZOO" speed alexnet --batch 1,32,256 --train-batch 32,256 --device "$DEVICE" "${flags[@]}" \
      --json > "$out/speed/alexnet-$precision.json" 2> "$out/logs/alexnet-$precision.log" \
    && "$ZOO" speed alexnet --batch 1,32,256 --train-batch 32,256 --device "$DEVICE" "${flags[@]}" \
      > "$out/logs/alexnet-$precision.table" 2>> "$out/logs/alexnet-$precision.log"; then
    { echo "$precision ($(elapsed "$t")):"; echo; echo '```'; cat "$out/logs/alexnet-$precision.table"; echo '```'; echo; } >> "$report"
  else
    failed+=("alexnet:$precision")
    echo "$precision: **FAILED**: $(tail -n1 "$out/logs/alexnet-$precision.log")" >> "$report"
    echo >> "$report"
  fi
done

# --- 4. short CIFAR-10 trainings and a bench -------------------------------------------------
if [ -z "${ZOO_DATA:-}" ] && [ -d ../shared/datasets ]; then
  ZOO_DATA="$(cd ../shared/datasets && pwd)"
  export ZOO_DATA
fi
for precision in f32 bf16; do
  echo "## Training: alexnet-cifar, $EPOCHS epoch(s), --limit $LIMIT, $DEVICE, $precision" >> "$report"
  echo >> "$report"
  if [ -z "${ZOO_DATA:-}" ]; then
    echo "skipped: no \$ZOO_DATA (CIFAR-10 under it, see datasets/README.md)" >> "$report"
    echo >> "$report"
    continue
  fi
  run=$(mktemp -d)
  t=$(date +%s)
  if "$ZOO" train alexnet-cifar --device "$DEVICE" --precision "$precision" --epochs "$EPOCHS" \
      --limit "$LIMIT" --out "$run" --quiet > "$out/logs/train-$precision.log" 2>&1; then
    echo "passed in $(elapsed "$t"); metrics (\`train-$precision-metrics.jsonl\`):" >> "$report"
  else
    failed+=("train:$precision")
    echo "**FAILED** in $(elapsed "$t") (log: \`$out/logs/train-$precision.log\`):" >> "$report"
  fi
  cp "$run/metrics.jsonl" "$out/train-$precision-metrics.jsonl" 2>/dev/null || true
  { echo; echo '```'; tail -n 5 "$out/train-$precision-metrics.jsonl" 2>/dev/null || tail -n 5 "$out/logs/train-$precision.log"; echo '```'; } >> "$report"
  rm -rf "$run"
  echo >> "$report"
done
if [ -n "${ZOO_DATA:-}" ]; then
  echo "## zoo bench alexnet-cifar (quick profile, $DEVICE)" >> "$report"
  echo >> "$report"
  t=$(date +%s)
  if "$ZOO" bench alexnet-cifar --device "$DEVICE" --out "$out/bench" > "$out/logs/bench.log" 2>&1 \
      && "$ZOO" report --out "$out/bench" >> "$out/logs/bench.log" 2>&1; then
    echo "passed in $(elapsed "$t"): \`bench/cifar10/results.json\`, \`bench/cifar10/report.md\`" >> "$report"
    grep -o '"peak_device_bytes": *[0-9]*' "$out/bench/cifar10/results.json" >> "$report" || true
  else
    failed+=(bench)
    echo "**FAILED** in $(elapsed "$t") (log: \`$out/logs/bench.log\`)" >> "$report"
  fi
  echo >> "$report"
fi

if [ ${#failed[@]} -eq 0 ]; then
  echo "All steps passed." >> "$report"
else
  echo "Failed: ${failed[*]}" >> "$report"
fi
cat "$report"
[ ${#failed[@]} -eq 0 ]
