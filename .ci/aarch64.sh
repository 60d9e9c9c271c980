#!/usr/bin/env bash
# Runs an aarch64 edge-cli under qemu-aarch64 (user mode): `--version`, then a short replay of a
# simulated clip with the shipped bundle on tract int8 and f32. CI calls it after cross-building
# with `cargo build --release --target aarch64-unknown-linux-gnu --bin edge-cli`.
#
# Usage: .ci/aarch64.sh [EDGE_CLI]
#   EDGE_CLI  the aarch64 binary
#             (default: $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/edge-cli)
#
# Environment:
#   QEMU_LD_PREFIX  the aarch64 sysroot qemu loads the dynamic linker and libc from
#                   (default: /usr/aarch64-linux-gnu, from Debian's gcc-aarch64-linux-gnu)
#   QEMU_CPU        the emulated CPU (default: cortex-a72, the Raspberry Pi 4's). qemu's own
#                   default, `max`, has SVE, which no Pi or Jetson has: tract would run its SVE
#                   kernels instead of the NEON ones the boards use, several times slower.
#
# Under qemu-user /proc/cpuinfo is the host's, so tract warns that it found no "Features" line
# and tunes for a generic arm64 core; that warning is expected here.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'aarch64: error: %s\n' "$*" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/thermal-edge/target}"
bin="${1:-$target_dir/aarch64-unknown-linux-gnu/release/edge-cli}"
export QEMU_LD_PREFIX="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"
export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
bundle=models/harbor-edge-s
# A handful of frames: with t_length 5 the first 4 only fill the window, so 6 give 2 scored.
frames=6

[ -x "$bin" ] || die "$bin not found (cargo build --release --target aarch64-unknown-linux-gnu --bin edge-cli)"
command -v qemu-aarch64 >/dev/null || die "qemu-aarch64 not found (apt-get install qemu-user)"
[ -d "$QEMU_LD_PREFIX/lib" ] || die "no aarch64 sysroot at $QEMU_LD_PREFIX (apt-get install gcc-aarch64-linux-gnu)"
file_type=$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' ')
[ "$file_type" = "b700" ] || die "$bin is not an aarch64 ELF (e_machine $file_type)"

edge() { qemu-aarch64 "$bin" "$@"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

version=$(edge --version)
echo "$version"
[[ "$version" == "edge-cli "* ]] || die "unexpected --version output: $version"

edge simulate --out "$tmp/sim" --train-clips 0 --test-clips 1 --seed 3 --frames "$frames" --threads 1
clip=$(find "$tmp/sim/test" -mindepth 2 -maxdepth 2 -type d | head -n 1)
[ -n "$clip" ] || die "simulate wrote no test clip"

# The replay: per-frame scores (infer), and the on-device loop (run) below.
replay() {
  local backend=$1 out
  out=$(edge infer --bundle "$bundle" --source "$clip" --backend "$backend" --max-frames "$frames")
  echo "$out"
  grep -q "^$frames frames read, $((frames - 4)) scored" <<<"$out" \
    || die "$backend: expected $frames frames read and $((frames - 4)) scored"
  ! grep -qiwE 'nan|inf' <<<"$out" || die "$backend: non-finite scores"
}

for backend in tract-int8 tract-f32; do
  start=$(date +%s%N)
  replay "$backend"
  ms=$((($(date +%s%N) - start) / 1000000))
  printf '%s under qemu (%s): %d.%01d s\n' "$backend" "$QEMU_CPU" $((ms / 1000)) $((ms % 1000 / 100))
done

# The on-device loop on the same clip: guards, score, events, health record, exit 0.
start=$(date +%s%N)
out=$(edge run --replay "$clip" --backend tract-int8 --speed 0 --json --health-every 1000 \
  --data-dir "$tmp/data")
ms=$((($(date +%s%N) - start) / 1000000))
health=$(grep '"kind":"health"' <<<"$out" | tail -n 1)
echo "$health"
grep -q "\"frames_in\":$frames," <<<"$health" || die "run: expected $frames frames in"
grep -q "\"scored\":$((frames - 4))," <<<"$health" || die "run: expected $((frames - 4)) frames scored"
printf 'edge-cli run (tract-int8) under qemu (%s): %d.%01d s\n' "$QEMU_CPU" $((ms / 1000)) $((ms % 1000 / 100))
