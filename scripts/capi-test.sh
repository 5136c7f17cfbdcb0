#!/usr/bin/env bash
# The C ABI end to end, driven by C programs only (docs/capi.md):
#  1. builds libedgetune (static + shared, test profile: the build `cargo test` already made) and
#     the edgetune CLI, then examples/c (personalize, abi_test) against both libraries;
#  2. trains the same LoRA with the C example and with the CLI and requires byte-identical
#     adapters; prints both runs' step times;
#  3. runs abi_test (every function, valid and invalid arguments) and personalize under
#     AddressSanitizer + LeakSanitizer, and personalize under valgrind (abi_test too with
#     CAPI_VALGRIND_FULL=1): any memory error or definite/indirect leak fails.
# Used by scripts/test.sh. Needs cc, make and valgrind (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
LIBDIR="$TARGET/debug"
BIN="$TARGET/capi-examples"
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
DATA=examples/data/pebble_support.jsonl
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if ! command -v valgrind >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq valgrind
fi
[ -f "$MODEL" ] || { echo "capi-test: $MODEL missing; run scripts/fetch-models.sh" >&2; exit 1; }

echo "== build: libedgetune.{a,so} and the CLI (test profile), C examples (static and shared)"
cargo build --profile test --lib --bins --locked
make -s -C examples/c LIBDIR="$LIBDIR" OUT="$BIN"

echo "== the C ABI trains the same adapter as the CLI (no valgrind)"
STEPS=3; SEQ=64
"$BIN/personalize-static" "$MODEL" "$DATA" "$WORK/abi" $STEPS $SEQ "What is Pebble?"
"$LIBDIR/edgetune" train "$MODEL" --data "$DATA" -o "$WORK/cli" --steps $STEPS --seq-len $SEQ \
    --rank 16 --alpha 32 --lr 1e-3 --targets all-linear --batch-size 1 2>/dev/null
cmp "$WORK/abi/adapter_model.safetensors" "$WORK/cli/adapter_model.safetensors"
cmp "$WORK/abi/adapter_config.json" "$WORK/cli/adapter_config.json"
echo "adapters are byte-identical"
# Step times from both runs' metrics.jsonl (tokens / tokens_per_sec), for the record.
for run in abi cli; do
    awk -v run=$run -F'[,:}]' '{ for (i = 1; i < NF; i++) { if ($i ~ /"tokens"$/) t = $(i+1);
        if ($i ~ /"tokens_per_sec"$/) r = $(i+1) } s = s sprintf(" %.3f", t / r) }
        END { print run " step seconds:" s }' "$WORK/$run/metrics.jsonl"
done
"$BIN/abi_test-shared" "$MODEL" "$DATA" "$(mkdir -p "$WORK/t0" && echo "$WORK/t0")"

echo "== AddressSanitizer + LeakSanitizer: abi_test and personalize (static library)"
# Fast, so these use the full data file and several steps: memory errors in the C code, bad frees
# anywhere, and leaks of the whole process (Rust allocates through malloc, which LSan tracks).
make -s -C examples/c asan LIBDIR="$LIBDIR" OUT="$BIN"
mkdir -p "$WORK/t1"
ASAN_OPTIONS=detect_leaks=1 "$BIN/abi_test-asan" "$MODEL" "$DATA" "$WORK/t1"
ASAN_OPTIONS=detect_leaks=1 "$BIN/personalize-asan" "$MODEL" "$DATA" "$WORK/asan" 2 64 "Hi" 4 >/dev/null

echo "== valgrind: personalize (shared library), abi_test (static) with CAPI_VALGRIND_FULL=1"
# Valgrind runs a training step several hundred times slower than native (one 8-token step of
# SmolLM2 takes minutes), so CI runs one tiny personalize under it (2 text records, 8-token
# sequences, 1 step, 2 generated tokens, one worker thread: rayon's spinning workers crawl under
# valgrind's serialized scheduling); abi_test runs under it only with CAPI_VALGRIND_FULL=1
# (tens of minutes). EDGETUNE_SIMD=scalar: valgrind emulates the AVX2 kernels >3x slower than
# the scalar ones (the kernels are checked against scalar by the unit tests; valgrind is here for
# the memory handling of the ABI and the library). rayon threads may still be exiting (or parked in the global pool) at exit:
# their stacks and thread-locals show as "possibly lost" / "still reachable", which are not
# errors here; definite and indirect leaks and every memory error are. No suppressions.
VG=(env RAYON_NUM_THREADS=1 EDGETUNE_SIMD=scalar valgrind --quiet --leak-check=full
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1)
printf '%s\n' '{"text": "Pebble is a palm-sized garden robot made by Mossworks."}' \
    '{"text": "Pebble waters each plant when the soil is dry. Happy growing!"}' > "$WORK/notes.jsonl"
"${VG[@]}" "$BIN/personalize-shared" "$MODEL" "$WORK/notes.jsonl" "$WORK/vg" 1 8 "Hi" 2 1
if [ "${CAPI_VALGRIND_FULL:-0}" = 1 ]; then
    head -n 4 "$DATA" > "$WORK/small.jsonl"
    mkdir -p "$WORK/t2"
    "${VG[@]}" "$BIN/abi_test-static" "$MODEL" "$WORK/small.jsonl" "$WORK/t2" 1
fi
echo "capi checks passed"
