#!/usr/bin/env bash
# Edge builds (docs/targets.md): cross-builds the crate for the edge targets and runs its tests
# under qemu-user. scripts/test.sh runs this after the native tests.
#
#   aarch64-unknown-linux-gnu     the unit tests and the kernel/format/gradient integration tests,
#                                 under qemu-aarch64 (NEON level included)
#   aarch64-linux-android         the static library (no NDK needed for a .a)
#   armv7-unknown-linux-gnueabihf a subset (unit tests, kernels vs scalar) under qemu-arm
#
# Installs what it needs when missing: Debian's cross gcc + qemu-user (apt-get, as root or via
# sudo) and the rustup targets. Environment:
#   CROSS_ONLY="aarch64 android armv7"  which parts to run (default: all three)
# Cross settings are passed as CARGO_TARGET_<TRIPLE>_{LINKER,RUNNER} variables, so native builds
# are never affected.
set -euo pipefail
cd "$(dirname "$0")/.."

ONLY="${CROSS_ONLY:-aarch64 android armv7}"
A64=aarch64-unknown-linux-gnu
ANDROID=aarch64-linux-android
ARMV7=armv7-unknown-linux-gnueabihf

want() { [[ " $ONLY " == *" $1 "* ]]; }

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ]] || missing+=(libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || missing+=(gcc-arm-linux-gnueabihf)
[[ -e /usr/arm-linux-gnueabihf/lib/libc.so.6 ]] || missing+=(libc6-dev-armhf-cross)
{ command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null; } || missing+=(qemu-user)
if ((${#missing[@]})); then
    echo "cross-test: installing ${missing[*]}"
    sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi
installed="$(rustup target list --installed)"
for t in $A64 $ANDROID $ARMV7; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm -L /usr/arm-linux-gnueabihf"
# No debug info in cross builds: a third less compile and link time; backtraces still name
# functions. (Only these builds: the native ones ran before this script, with their own settings.)
export CARGO_PROFILE_TEST_DEBUG=0 CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0
# Python-backed tests (gguf-py) run the host's python; the models are read from models/.
export EDGETUNE_PYTHON="${EDGETUNE_PYTHON:-$PWD/.venv/bin/python}"

step() { printf '\n=== cross-test: %s (%ds so far)\n' "$*" "$SECONDS"; }

# --- aarch64 Linux (Raspberry Pi 4/5): kernels vs scalar at the NEON level, gradient checks,
# format tests. Left out (docs/targets.md): gguf_fuzz and quant_real_models (2+ minutes each under
# emulation), and the tests that run the real 135M model end to end or the CLI binary; they test
# architecture-independent code that the native run covers.
A64_TESTS=(
    --lib
    --test quant_simd --test quant_gguf_py
    --test nf4_kernels --test nf4_bitsandbytes
    --test backend_gemm
    --test backend_skinny
    --test model_ops --test model_tiny --test model_config --test model_errors
    --test adapters_grad
    --test optim_kernels --test optim_reference --test optim_store
    --test gguf_reader --test gguf_writer
)
if want aarch64; then
    step "aarch64 Linux: tests under qemu-aarch64"
    # The lib's cpu::tests::neon_is_available_on_aarch64 fails if the NEON level is not on the list
    # the kernel tests iterate (so they would compare scalar with scalar).
    cargo test --locked --no-fail-fast --target $A64 "${A64_TESTS[@]}"
fi

# --- aarch64 Android (phones): the static library; no NDK linker is needed for a .a.
if want android; then
    step "aarch64 Android: static library"
    cargo rustc --locked --lib --crate-type staticlib --target $ANDROID
    ls -l "${CARGO_TARGET_DIR:-target}/$ANDROID/debug/libedgetune.a"
fi

# --- armv7 (32-bit Raspberry Pi OS): scalar fallback, 32-bit usize.
ARMV7_TESTS=(--lib --test quant_simd --test nf4_kernels --test backend_gemm --test backend_skinny --test model_ops
    --test optim_kernels --test gguf_reader)
if want armv7; then
    step "armv7 Linux: tests under qemu-arm"
    cargo test --locked --no-fail-fast --target $ARMV7 "${ARMV7_TESTS[@]}"
fi
step "done"
