#!/usr/bin/env bash
# Our runtimes against their peers, alternating rounds on the same bundle and thread count:
#   ours: edge-cli bench --bundle B --threads N --frames F \
#           --backend tract-f32 --backend tract-int8 --backend candle-cpu --train --json
#   peer: tools/peers/peers.py --bundle B --threads N --frames F --json
# (ours, peer, ours, peer, ...). Every JSON document is kept in the output folder
# (round-NN-ours.json / round-NN-peer.json, with each command's stderr in a .log next to it);
# then tools/peers/ratios.py prints ours/peer per pair and whole-frame / bare-inference for
# our runs (and writes the same table as ratios.json).
#
# Usage: tools/peers/compare.sh [--bundle models/harbor-edge-s] [--threads 1] [--rounds 5]
#                               [--frames 30] [--edge-cli PATH] [--out DIR]
#   --edge-cli  default: edge-cli on PATH, else target/release/edge-cli, else
#               $CARGO_TARGET_DIR/release/edge-cli
#   --out       default: a new temporary folder (printed)
#
# Environment: as tools/peers/setup.sh (THERMAL_EDGE_PEERS_VENV, THERMAL_EDGE_PYTHON,
# THERMAL_EDGE_TORCH_INDEX), which runs first.
#
# Exit status: 0 when every command succeeded, 1 when one failed (the table is printed anyway,
# with n/a for what is missing), 2 on bad arguments.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compare: error: %s\n' "$*" >&2; exit 1; }
usage() {
  sed -n '/^# Usage:/,/^#   --out/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

bundle="models/harbor-edge-s"
threads=1
rounds=5
frames=30
edge_cli=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle | --threads | --rounds | --frames | --edge-cli | --out)
      [ $# -ge 2 ] || { printf 'compare: %s needs a value\n' "$1" >&2; usage; }
      case "$1" in
        --bundle) bundle="$2" ;;
        --threads) threads="$2" ;;
        --rounds) rounds="$2" ;;
        --frames) frames="$2" ;;
        --edge-cli) edge_cli="$2" ;;
        --out) out="$2" ;;
      esac
      shift 2
      ;;
    -h | --help) usage ;;
    *) printf 'compare: unknown argument %s\n' "$1" >&2; usage ;;
  esac
done
for v in threads rounds frames; do
  case "${!v}" in
    '' | *[!0-9]* | 0) printf 'compare: --%s must be a positive integer, got "%s"\n' "$v" "${!v}" >&2; usage ;;
  esac
done

[ -d "$bundle" ] || die "bundle folder $bundle not found"
for f in bundle.toml model.onnx model.int8.onnx; do
  [ -f "$bundle/$f" ] || die "$bundle/$f not found"
done

if [ -n "$edge_cli" ]; then
  [ -x "$edge_cli" ] || die "--edge-cli $edge_cli is not an executable file"
elif command -v edge-cli >/dev/null 2>&1; then
  edge_cli="$(command -v edge-cli)"
elif [ -x target/release/edge-cli ]; then
  edge_cli="target/release/edge-cli"
elif [ -n "${CARGO_TARGET_DIR:-}" ] && [ -x "$CARGO_TARGET_DIR/release/edge-cli" ]; then
  edge_cli="$CARGO_TARGET_DIR/release/edge-cli"
else
  die "edge-cli not found on PATH, in target/release or in \$CARGO_TARGET_DIR/release (build it with: cargo build --release, or pass --edge-cli PATH)"
fi

say "Python environment (tools/peers/setup.sh)"
py="$(tools/peers/setup.sh)" || die "tools/peers/setup.sh failed"

if [ -n "$out" ]; then
  mkdir -p "$out" || die "cannot create $out"
else
  out="$(mktemp -d "${TMPDIR:-/tmp}/thermal-edge-peers.XXXXXX")"
fi
say "results in $out"

ours_cmd=("$edge_cli" bench --bundle "$bundle" --threads "$threads" --frames "$frames"
  --backend tract-f32 --backend tract-int8 --backend candle-cpu --train --json)
peer_cmd=("$py" tools/peers/peers.py --bundle "$bundle" --threads "$threads" --frames "$frames" --json)
{
  printf 'ours:'; printf ' %q' "${ours_cmd[@]}"; printf '\n'
  printf 'peer:'; printf ' %q' "${peer_cmd[@]}"; printf '\n'
  printf 'rounds: %s (ours, peer alternating); host: %s\n' "$rounds" "$(uname -srm)"
} >"$out/commands.txt"

failed=0
# run NAME FILE CMD...: CMD's stdout to FILE.json, stderr to FILE.log; a failure is reported,
# its empty or partial JSON removed, and the comparison goes on.
run() {
  local name="$1" file="$2"
  shift 2
  local t0=$SECONDS
  if "$@" >"$file.json" 2>"$file.log"; then
    say "$name done in $((SECONDS - t0)) s"
  else
    local rc=$?
    failed=1
    rm -f "$file.json"
    printf 'compare: warning: %s failed (exit %s); its stderr, %s.log, ends with:\n' "$name" "$rc" "$file" >&2
    tail -n 5 "$file.log" | sed 's/^/    /' >&2
  fi
}

for ((r = 1; r <= rounds; r++)); do
  nn=$(printf '%02d' "$r")
  say "round $r/$rounds: ours (edge-cli bench)"
  run "round $r ours" "$out/round-$nn-ours" "${ours_cmd[@]}"
  say "round $r/$rounds: peer (peers.py)"
  run "round $r peer" "$out/round-$nn-peer" "${peer_cmd[@]}"
done

echo
shopt -s nullglob
docs=("$out"/round-*-ours.json "$out"/round-*-peer.json)
shopt -u nullglob
[ "${#docs[@]}" -gt 0 ] || die "no run succeeded: see the .log files in $out"
"$py" tools/peers/ratios.py --json "${docs[@]}" >"$out/ratios.json" || failed=1
"$py" tools/peers/ratios.py "${docs[@]}" || failed=1
echo
echo "JSON documents, logs and ratios.json in $out"
exit "$failed"
