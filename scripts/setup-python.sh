#!/usr/bin/env bash
# Creates .venv with the light Python packages the tests use (numpy, gguf-py).
# Reference fixtures (torch, bitsandbytes) need scripts/reference/requirements.txt instead;
# pass --reference to install those too. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
if [ "${1:-}" = "--reference" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/reference/requirements.txt
fi
echo "python env ready: .venv"
