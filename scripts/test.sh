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
# Edge builds (aarch64 + NEON under qemu, Android static lib, armv7); docs/targets.md. For a quick
# local run EDGETUNE_SKIP_CROSS=1 skips them; CI (CI=true) always runs them.
if [[ "${EDGETUNE_SKIP_CROSS:-0}" == 1 && "${CI:-}" != true ]]; then
    echo "skipping scripts/cross-test.sh (EDGETUNE_SKIP_CROSS=1)"
else
    bash scripts/cross-test.sh
fi
# The C ABI from C: static + shared builds, ABI == CLI adapter, valgrind (docs/capi.md).
bash scripts/capi-test.sh
echo "all checks passed"
