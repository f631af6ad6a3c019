#!/bin/sh
# Check embq's AArch64 kernels (NEON and SDOT) on any Linux machine: cross-compile
# tests/c/check_kernels.c for AArch64 and run it under qemu-user, once on an emulated CPU with
# the SDOT instructions (-cpu max) and once on one without them (-cpu cortex-a53), so both
# dot-product variants and the run-time choice between them are exercised.
#
# Needs Debian's gcc-aarch64-linux-gnu and qemu-user-static:
#   apt-get install gcc-aarch64-linux-gnu qemu-user-static
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC_AARCH64:-aarch64-linux-gnu-gcc}
qemu=${QEMU_AARCH64:-qemu-aarch64-static}
for tool in "$cc" "$qemu"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check_arm64.sh: $tool not found; install gcc-aarch64-linux-gnu and qemu-user-static" >&2
        exit 2
    fi
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$cc" -O3 -static -Wall -Wno-unused-function -o "$out/check_kernels" \
    "$here/tests/c/check_kernels.c" -lm
for cpu in max cortex-a53; do
    echo "== emulated AArch64 CPU: $cpu"
    "$qemu" -cpu "$cpu" "$out/check_kernels"
done
