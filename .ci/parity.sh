#!/usr/bin/env bash
# Parity check: the Rust (candle) model against the independent PyTorch reference in
# tools/reference/. Writes fixtures with `cargo test --release --test parity_fixture`, then runs
# tools/reference/check_parity.py on them (max abs diff <= 1e-4 for every compared tensor).
#
# Environment:
#   THERMAL_EDGE_VENV   virtual environment to create or reuse
#                       (default: $HOME/.cache/thermal-edge/venv)
#   THERMAL_EDGE_PYTHON Python used to create it (default: python3)
#   CARGO_TARGET_DIR    honoured by cargo as usual
#   THERMAL_EDGE_PARITY_KEEP=1       keep the fixture directory (its path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'parity: error: %s\n' "$*" >&2; exit 1; }

venv="${THERMAL_EDGE_VENV:-$HOME/.cache/thermal-edge/venv}"
python="${THERMAL_EDGE_PYTHON:-python3}"
req="tools/reference/requirements.txt"
[ -f "$req" ] || die "$req not found"

say "Python environment ($venv)"
if [ ! -x "$venv/bin/python" ]; then
  command -v "$python" >/dev/null 2>&1 || die "no '$python' to create the virtual environment with"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" \
    || die "could not create a virtual environment at $venv (is python3-venv installed?)"
fi
py="$venv/bin/python"
# Install only when a pinned package is missing or at another version (torch is ~5 GB with the
# CUDA libraries its PyPI wheel pulls in, so never reinstall needlessly).
if ! "$py" tools/unmet_pins.py "$req" >/dev/null; then
  echo "installing $req (first run: a few minutes)"
  "$py" -m pip install --disable-pip-version-check -q -r "$req" || die "pip install -r $req failed"
fi
"$py" -c 'import numpy, safetensors, torch
print(f"torch {torch.__version__}, numpy {numpy.__version__}, safetensors {safetensors.__version__}")' \
  || die "the reference's Python packages do not import"

fixtures=$(mktemp -d "${TMPDIR:-/tmp}/thermal-edge-parity.XXXXXX")
if [ "${THERMAL_EDGE_PARITY_KEEP:-0}" = 1 ]; then
  echo "fixtures kept in $fixtures"
else
  trap 'rm -rf "$fixtures"' EXIT
fi

say "reference self-test (tools/reference/test_mnad_ref.py)"
"$py" tools/reference/test_mnad_ref.py || die "the PyTorch reference fails its own checks"

say "Rust fixtures (cargo test --release --test parity_fixture)"
THERMAL_EDGE_PARITY_DIR="$fixtures" cargo test --release --test parity_fixture -- --nocapture \
  || die "the Rust fixture writer failed"

say "PyTorch reference vs Rust (tools/reference/check_parity.py)"
"$py" tools/reference/check_parity.py "$fixtures" \
  || die "Rust and the PyTorch reference disagree (see the table above)"
