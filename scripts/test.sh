#!/usr/bin/env bash
# The one command that runs every check (README "Test"). CI runs exactly this via .ci/run.
# Installs what the tests need first: the light Python env (numpy, gguf-py) and the real models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
bash scripts/fetch-models.sh
export EDGETUNE_PYTHON="$PWD/.venv/bin/python"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# --all-targets also builds every criterion bench and runs each one once (test mode).
cargo test --all-targets --locked
# The C ABI from C: static + shared builds, ABI == CLI adapter, valgrind (docs/capi.md).
bash scripts/capi-test.sh
echo "all checks passed"
