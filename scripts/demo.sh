#!/usr/bin/env bash
# The main job in one command: fine-tune SmolLM2-135M-Instruct with LoRA on the bundled example
# dataset (examples/data/pebble_support.jsonl: support answers about "Pebble", a made-up garden
# robot), then ask the tuned model, and the base model for comparison, about it.
# About 2 minutes on 2 cores. Usage: scripts/demo.sh [OUT_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/pebble-lora}
STEPS=${2:-60}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
bash scripts/fetch-models.sh smollm2
cargo build --release --quiet
BIN=target/release/edgetune
$BIN train "$MODEL" --data examples/data/pebble_support.jsonl -o "$OUT" \
  --steps "$STEPS" --batch-size 4 --lr 1e-3 --targets all-linear --rank 16 --alpha 32 --seq-len 256
for q in "What is Pebble?" "How many plants can Pebble look after?"; do
  echo
  echo "Q: $q"
  echo -n "tuned: "
  $BIN generate "$MODEL" --adapter "$OUT" --chat -p "$q" -n 60 2>/dev/null
  echo -n "base:  "
  $BIN generate "$MODEL" --chat -p "$q" -n 60 2>/dev/null
done
