#!/usr/bin/env bash
# Installs a CUDA 13.0 toolkit from PyPI wheels into .cuda/ (gitignored), for building zoo's
# `cuda` feature on a machine with no system CUDA and no GPU. x86_64 Linux; needs python3 with
# pip, and gcc (nvcc's host compiler; gcc 12 works).
#
#   scripts/cuda/setup.sh          # compiler + headers (scripts/cuda/toolkit.txt, ~100 MB of
#                                  # wheels): enough for `cargo check --features cuda`
#   scripts/cuda/setup.sh --libs   # also the libraries a build links and a run loads
#                                  # (scripts/cuda/libs.txt, ~570 MB) and a libcuda.so link stub
#   . .cuda/env.sh                 # then: nvcc on PATH, CUDA_ROOT, CUDA_COMPUTE_CAP, ...
#
# Layout: .cuda/wheels/ caches the downloaded wheels (hash-checked by pip); .cuda/root/ is the
# toolkit tree (bin/nvcc, nvvm/, include/, lib/, lib/stubs/libcuda.so) that CUDA_ROOT, CUDA_HOME
# and CUDA_PATH name. A second run with the same pins reuses both and touches no network.
# scripts/cuda/build.sh calls this and then cargo.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
libs=0
case "${1:-}" in
  --libs) libs=1 ;;
  "") ;;
  *) echo "usage: scripts/cuda/setup.sh [--libs]" >&2; exit 2 ;;
esac

if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
  echo "scripts/cuda/setup.sh: the pinned wheels are for x86_64 Linux, not $(uname -s)-$(uname -m)" >&2
  exit 1
fi
PYTHON=${PYTHON:-python3}
cache=$repo/.cuda
root=$cache/root
mkdir -p "$cache/wheels"

# The wheel file names of a requirements file's pins (name==version), as pip saves them.
wheel_globs() {
  sed -n 's/^\([A-Za-z0-9_.-]*\)==\([^ ]*\).*/\1 \2/p' "$1" | while read -r name version; do
    echo "${name//-/_}-${version}-*.whl"
  done
}

# Downloads the wheels of requirements file $1 unless all are cached; prints their paths.
fetch() {
  local req=$1 missing=0 g
  for g in $(wheel_globs "$req"); do
    compgen -G "$cache/wheels/$g" >/dev/null || missing=1
  done
  if [ $missing = 1 ]; then
    echo "cuda setup: downloading $(basename "$req") wheels into .cuda/wheels" >&2
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
      -r "$req" -d "$cache/wheels" >&2
  fi
  for g in $(wheel_globs "$req"); do
    compgen -G "$cache/wheels/$g"
  done
}

# Unpacks wheels into directory $1, keeping the executable bits (zipfile alone drops them).
unpack() {
  "$PYTHON" - "$@" <<'PY'
import os, sys, zipfile
dest = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(path, mode)
PY
}

# Moves the unpacked wheels' nvidia/cu13 tree from staging dir $1 into $root.
merge() {
  local stage=$1
  if [ ! -d "$stage/nvidia/cu13" ]; then
    echo "cuda setup: the wheels did not unpack to nvidia/cu13" >&2
    exit 1
  fi
  mkdir -p "$root"
  cp -a "$stage/nvidia/cu13/." "$root/"
  rm -rf "$stage"
}

stamp() { sha256sum "$1" | cut -c1-64; }

if [ ! -x "$root/bin/nvcc" ] || [ "$(cat "$root/.toolkit" 2>/dev/null)" != "$(stamp scripts/cuda/toolkit.txt)" ]; then
  mapfile -t wheels < <(fetch scripts/cuda/toolkit.txt)
  rm -rf "$root" "$cache/stage"
  unpack "$cache/stage" "${wheels[@]}"
  merge "$cache/stage"
  stamp scripts/cuda/toolkit.txt > "$root/.toolkit"
fi

if [ $libs = 1 ] && [ "$(cat "$root/.libs" 2>/dev/null)" != "$(stamp scripts/cuda/libs.txt)" ]; then
  mapfile -t wheels < <(fetch scripts/cuda/libs.txt)
  rm -rf "$cache/stage"
  unpack "$cache/stage" "${wheels[@]}"
  merge "$cache/stage"
  # The wheels ship only versioned sonames (libcublas.so.13); the linker's -lcublas wants the
  # plain name.
  for lib in "$root"/lib/lib*.so.*; do
    plain=${lib%%.so.*}.so
    [ -e "$plain" ] || ln -s "$(basename "$lib")" "$plain"
  done
  # cudarc links libcuda (the driver, which no wheel carries) dynamically: a stub with its
  # symbols, under lib/stubs where cudarc's build looks, satisfies the linker; at run time the
  # loader finds the driver's own libcuda.so.1 (the stub is never on the library path).
  ver=$(sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p}' Cargo.lock)
  sys_rs() { compgen -G "${CARGO_HOME:-$HOME/.cargo}/registry/src/*/cudarc-$ver/src/driver/sys/mod.rs" | head -n1; }
  src=$(sys_rs || true)
  if [ -z "$src" ]; then
    cargo fetch --locked --quiet
    src=$(sys_rs)
  fi
  mkdir -p "$root/lib/stubs"
  sed -n 's/^pub unsafe fn \(cu[A-Za-z0-9_]*\)(.*/void \1(void) {}/p' "$src" | sort -u > "$cache/libcuda-stub.c"
  gcc -shared -fPIC -nostdlib -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$cache/libcuda-stub.c"
  rm -f "$cache/libcuda-stub.c"
  stamp scripts/cuda/libs.txt > "$root/.libs"
fi

cat > "$cache/env.sh" <<EOF
# Written by scripts/cuda/setup.sh: source it before cargo builds with --features cuda.
export CUDA_ROOT="$root" CUDA_HOME="$root" CUDA_PATH="$root" NVCC="$root/bin/nvcc"
export PATH="$root/bin:\$PATH"
export LD_LIBRARY_PATH="$root/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# Candle's kernels are compiled for one GPU architecture: the visible GPU's, else H100/H200 (90).
if [ -z "\${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP=\$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d . || true)
  export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
fi
EOF
"$root/bin/nvcc" --version | tail -n2 | head -n1 | sed 's/^/cuda setup: /' >&2
echo "cuda setup: toolkit in .cuda/root$([ $libs = 1 ] && echo ' (with libraries)'); source .cuda/env.sh" >&2
