#!/usr/bin/env bash
# External check of a model bundle's ONNX files: `edge-cli infer --dump` records exactly what
# tract fed and got back (f32 and int8), then tools/check_onnx.py runs onnx.checker (full check)
# on both models and onnxruntime on the same inputs, comparing with tract (f32: max |diff| <=
# 1e-4; int8: the rounding bound documented in check_onnx.py).
#
# Usage: .ci/check_onnx.sh [BUNDLE [SOURCE]]
#   BUNDLE  bundle folder (default: models/harbor-edge-s, the shipped one)
#   SOURCE  any source edge-cli infer reads (default: the test clip of a fresh
#           `edge-cli simulate --train-clips 1 --test-clips 1 --seed 5`)
#
# Environment:
#   THERMAL_EDGE_VENV   virtual environment to create or reuse
#                       (default: $HOME/.cache/thermal-edge/venv, shared with .ci/parity.sh)
#   THERMAL_EDGE_PYTHON Python used to create it (default: python3)
#   CARGO_TARGET_DIR    honoured by cargo as usual (edge-cli is built in release)
#   THERMAL_EDGE_ONNX_FRAMES         frames read per backend (default 12)
#   THERMAL_EDGE_ONNX_KEEP=1         keep the dumps (their folder is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'check_onnx: error: %s\n' "$*" >&2; exit 1; }

bundle="${1:-models/harbor-edge-s}"
source_arg="${2:-}"
frames="${THERMAL_EDGE_ONNX_FRAMES:-12}"
venv="${THERMAL_EDGE_VENV:-$HOME/.cache/thermal-edge/venv}"
python="${THERMAL_EDGE_PYTHON:-python3}"
req="tools/requirements-onnx.txt"
[ -f "$req" ] || die "$req not found"
[ -d "$bundle" ] || die "bundle folder $bundle not found"
[ -f "$bundle/bundle.toml" ] \
  || die "$bundle/bundle.toml not found (write the bundle with: edge-cli export --checkpoint CKPT --calib DATA --out $bundle)"
for f in model.onnx model.int8.onnx; do
  [ -f "$bundle/$f" ] || die "$bundle/$f not found (an int8 model needs: edge-cli export ... --calib DATA)"
done
[ -z "$source_arg" ] || [ -e "$source_arg" ] || die "source $source_arg not found"

say "Python environment ($venv)"
if [ ! -x "$venv/bin/python" ]; then
  command -v "$python" >/dev/null 2>&1 || die "no '$python' to create the virtual environment with"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" \
    || die "could not create a virtual environment at $venv (is python3-venv installed?)"
fi
py="$venv/bin/python"
# Install only when a pinned package is missing or at another version.
if ! "$py" tools/unmet_pins.py "$req" >/dev/null; then
  echo "installing $req"
  "$py" -m pip install --disable-pip-version-check -q -r "$req" || die "pip install -r $req failed"
fi
"$py" -c 'import numpy, onnx, onnxruntime
print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}")' \
  || die "onnx / onnxruntime / numpy do not import"

say "edge-cli (cargo build --release --bin edge-cli)"
cargo build --release --bin edge-cli || die "building edge-cli failed"
cli="${CARGO_TARGET_DIR:-target}/release/edge-cli"
[ -x "$cli" ] || die "$cli not found after the build"

work=$(mktemp -d "${TMPDIR:-/tmp}/thermal-edge-onnx.XXXXXX")
if [ "${THERMAL_EDGE_ONNX_KEEP:-0}" = 1 ]; then
  echo "dumps kept in $work"
else
  trap 'rm -rf "$work"' EXIT
fi

if [ -n "$source_arg" ]; then
  src="$source_arg"
else
  say "source: a simulated test clip (edge-cli simulate --seed 5)"
  "$cli" simulate --out "$work/sim" --train-clips 1 --test-clips 1 --seed 5 \
    || die "edge-cli simulate failed"
  # test/<date>/<clip>/: the clip's folder of frames.
  src=$(find "$work/sim/test" -mindepth 2 -maxdepth 2 -type d | sort | head -n 1)
  [ -n "$src" ] || die "edge-cli simulate wrote no test clip under $work/sim/test"
fi
echo "source: $src"

for backend in tract-f32 tract-int8; do
  say "tract dump: edge-cli infer --backend $backend --max-frames $frames --dump"
  "$cli" infer --bundle "$bundle" --source "$src" --backend "$backend" \
    --max-frames "$frames" --dump "$work/$backend" \
    || die "edge-cli infer --backend $backend failed"
done

say "onnx.checker + onnxruntime vs tract (tools/check_onnx.py)"
"$py" tools/check_onnx.py --bundle "$bundle" --f32-dump "$work/tract-f32" \
  --int8-dump "$work/tract-int8" \
  || die "tools/check_onnx.py failed for $bundle (see above)"
