#!/usr/bin/env bash
# The memory acceptance measurements of docs/memory.md, end to end:
#  1. SmolLM2-135M -> NF4 (edgetune quantize); LoRA r8 all-linear, seq 256, --memory-budget 160M:
#     peak RssAnon sampled from outside every 20 ms must stay <= 160 MiB; --memory-budget 32M must
#     be refused before step 0.
#  2. plan vs measured peak over several run shapes (plan_vs_rss.py).
#  3. (BIG=1) a 1.07 B-parameter Llama-3.2-1B-shaped random model -> NF4, LoRA r16 all-linear,
#     seq 256, --memory-budget 512M, 3 steps: s/step and peak RssAnon. Needs ~3 GB of disk.
# Usage: bash scripts/bench/memory_acceptance.sh [WORKDIR]   (BIG=1 for step 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-target/memory-bench}
mkdir -p "$W"
PY=${PY:-python3}
VENV_PY=${VENV_PY:-.venv/bin/python}
cargo build --release --bin edgetune
B=${CARGO_TARGET_DIR:-target}/release/edgetune
cat README.md docs/*.md > "$W/docs.txt"   # ~18k tokens of text, cut into 256-token windows

$B quantize models/SmolLM2-135M-Instruct.Q4_1.gguf -o "$W/smollm2-nf4.gguf" --type nf4 > /dev/null
echo "== 1. SmolLM2 NF4, 160M budget"
$PY scripts/bench/rss_watch.py --budget 160M --json "$W/smollm2-160m.json" -- \
    $B train "$W/smollm2-nf4.gguf" --data "$W/docs.txt" -o "$W/r160" --targets all-linear --rank 8 \
    --seq-len 256 --memory-budget 160M --steps 4
echo "== 1b. 32M budget (must be refused)"
if $B train "$W/smollm2-nf4.gguf" --data "$W/docs.txt" -o "$W/r32" --targets all-linear --rank 8 \
    --seq-len 256 --memory-budget 32M; then echo "NOT REFUSED"; exit 1; fi

echo "== 2. plan vs measured"
$PY scripts/bench/plan_vs_rss.py --bin "$B" --model "$W/smollm2-nf4.gguf" --data "$W/docs.txt" \
    --json "$W/plan_vs_rss.json"

if [ "${BIG:-0}" = 1 ]; then
  echo "== 3. 1B random Llama, NF4, 512M budget"
  [ -f "$W/rand1b-f16.gguf" ] || $VENV_PY scripts/make_random_model.py \
      --donor models/SmolLM2-135M-Instruct.Q4_1.gguf -o "$W/rand1b-f16.gguf"
  [ -f "$W/rand1b-nf4.gguf" ] || $B quantize "$W/rand1b-f16.gguf" -o "$W/rand1b-nf4.gguf" --type nf4
  $PY scripts/bench/rss_watch.py --budget 512M --json "$W/rand1b-512m.json" -- \
      $B train "$W/rand1b-nf4.gguf" --data "$W/docs.txt" -o "$W/r1b" --targets all-linear \
      --rank 16 --alpha 32 --seq-len 256 --memory-budget 512M --steps 3
  $PY -c "import json,sys; [print(m['step'], round(256/m['tokens_per_sec'],1), 's/step') for m in map(json.loads, open(sys.argv[1]))]" "$W/r1b/metrics.jsonl"
fi
