#!/usr/bin/env bash
# Regenerates include/edgetune.h from src/capi with cbindgen (settings: cbindgen.toml).
# tests/capi_header.rs fails when the committed header is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGETUNE_UPDATE_HEADER=1 cargo test --test capi_header committed_header_matches_the_source
echo "wrote include/edgetune.h"
