#!/usr/bin/env bash
# Instructions per frame of tract f32 and tract int8 on aarch64, counted under qemu-user with a
# small TCG plugin (tools/qemu/icount.c): counts of executed guest instructions, not times (qemu
# does not model a Cortex-A's pipeline). docs/performance.md has the figures.
#
# Each backend runs `edge-cli bench` twice, with F1 and F2 timed frames on the same 8-frame
# clip, and the difference over F2 − F1 frames is the per-frame count: model loading, warm-up
# and start-up cancel out. bench runs the on-device loop on one thread, so a "frame" is the
# whole frame (preprocessing, forward pass, scores, events).
#
# Usage: tools/aarch64_icount.sh [EDGE_CLI_AARCH64] [BUNDLE] [F1] [F2]
#   EDGE_CLI_AARCH64 default: $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/edge-cli
#                    (cargo build --release --target aarch64-unknown-linux-gnu --bin edge-cli)
#   BUNDLE default models/harbor-edge-s; F1 default 1, F2 default 4.
# Needs gcc, qemu-user (with plugin support, as Debian's) and /usr/aarch64-linux-gnu.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/aarch64-unknown-linux-gnu/release/edge-cli}"
bundle="${2:-$root/models/harbor-edge-s}"
f1="${3:-1}"
f2="${4:-4}"
[ -x "$bin" ] || { echo "aarch64_icount: no aarch64 edge-cli at $bin (build it first)" >&2; exit 1; }
[ -f "$bundle/bundle.toml" ] || { echo "aarch64_icount: no bundle at $bundle" >&2; exit 1; }
[ "$f2" -gt "$f1" ] || { echo "aarch64_icount: F2 ($f2) must exceed F1 ($f1)" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
gcc -shared -fPIC -O2 -o "$tmp/libicount.so" "$root/tools/qemu/icount.c"
# An 8-frame 8-bit clip (a warm blob drifting over a gradient) as .npy, written with the standard
# library only: every run reads the same frames, whatever F.
python3 - "$tmp/clip.npy" <<'PY'
import math, struct, sys
n, h, w = 8, 120, 160
hdr = "{'descr': '<u2', 'fortran_order': False, 'shape': (%d, %d, %d), }" % (n, h, w)
hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    for i in range(n):
        cx, cy = 30 + 12 * i, 60
        row = []
        for y in range(h):
            for x in range(w):
                r2 = (x - cx) ** 2 + (y - cy) ** 2
                row.append(int(50 + 0.8 * y + 150 * math.exp(-r2 / 60.0)))
        f.write(struct.pack("<%dH" % len(row), *row))
PY
count() { # backend frames
  qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin "$tmp/libicount.so,out=$tmp/ic" \
    "$bin" bench --bundle "$bundle" --source "$tmp/clip.npy" --backend "$1" \
    --frames "$2" --warmup 1 --threads 1 --json > "$tmp/bench.json" 2> "$tmp/bench.log" || {
      echo "aarch64_icount: edge-cli bench failed under qemu:" >&2; tail -5 "$tmp/bench.log" >&2; exit 1; }
  awk '{print $2}' "$tmp/ic"
}
printf '%-11s %16s %16s %18s\n' backend "insns F1=$f1" "insns F2=$f2" "per frame"
for b in tract-f32 tract-int8; do
  a=$(count "$b" "$f1")
  c=$(count "$b" "$f2")
  per=$(( (c - a) / (f2 - f1) ))
  printf '%-11s %16d %16d %18d\n' "$b" "$a" "$c" "$per"
done
