#!/usr/bin/env bash
# Creates .venv-ref (PyTorch, torchvision, timm) at the repository root and regenerates
# tests/fixtures. Needs Python 3 and access to PyPI; zoo itself never needs Python.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ ! -x .venv-ref/bin/python ]; then
    python3 -m venv .venv-ref
fi
.venv-ref/bin/pip install --quiet -r scripts/reference/requirements.txt
.venv-ref/bin/python scripts/reference/make_fixtures.py --out tests/fixtures ${ZOO_DATA:+--data "$ZOO_DATA"}
