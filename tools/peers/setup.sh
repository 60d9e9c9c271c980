#!/usr/bin/env bash
# Creates (or reuses) the Python environment of the peer benchmarks and prints its Python on
# stdout (everything else goes to stderr), so that callers can do: py=$(tools/peers/setup.sh)
#
# Usage: tools/peers/setup.sh
#
# Environment:
#   THERMAL_EDGE_PEERS_VENV  the virtual environment to create or reuse
#                            (default: $HOME/.cache/thermal-edge/peers-venv; the parity check's
#                            $HOME/.cache/thermal-edge/venv works too when it has the pins)
#   THERMAL_EDGE_PYTHON      Python (>= 3.11) to create it with (default: python3)
#   THERMAL_EDGE_TORCH_INDEX torch's CPU wheel index (default: https://download.pytorch.org/whl/cpu);
#                            "none" installs torch from the default index (PyPI or its mirror)
#
# Idempotent: nothing is installed when every pin of tools/peers/requirements.txt is there
# (a local version label such as 2.15.0+cpu satisfies 2.15.0).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
venv="${THERMAL_EDGE_PEERS_VENV:-$HOME/.cache/thermal-edge/peers-venv}"
python="${THERMAL_EDGE_PYTHON:-python3}"
torch_index="${THERMAL_EDGE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"

say() { printf 'peers-setup: %s\n' "$*" >&2; }
die() { printf 'peers-setup: error: %s\n' "$*" >&2; exit 1; }

[ -f "$req" ] || die "$req not found"

if [ ! -x "$venv/bin/python" ]; then
  command -v "$python" >/dev/null 2>&1 \
    || die "no '$python' to create the virtual environment with (set THERMAL_EDGE_PYTHON)"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is $("$python" -V 2>&1); the peers need Python >= 3.11 (tomllib)"
  say "creating $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2 \
    || die "could not create a virtual environment at $venv (is python3-venv installed?)"
fi
py="$venv/bin/python"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$venv has $("$py" -V 2>&1); the peers need Python >= 3.11 (tomllib)"

# Prints the unmet pins ("name==version", one a line); exit status 1 when there are any.
missing() {
  "$py" "$here/../unmet_pins.py" "$req"
}

if unmet=$(missing); then
  say "$venv has every pin of $req"
else
  pip=("$py" -m pip install --disable-pip-version-check)
  torch_pin=$(printf '%s\n' "$unmet" | grep '^torch==' || true)
  if [ -n "$torch_pin" ] && [ "$torch_index" != none ]; then
    # Only when the CPU index answers: otherwise pip would wait out its timeouts and retries.
    if "$py" - "$torch_index" <<'PYEOF'
import sys
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10).close()
except Exception as e:  # noqa: BLE001
    print(f"peers-setup: {sys.argv[1]} not reachable ({e}); torch comes from the default index",
          file=sys.stderr)
    sys.exit(1)
PYEOF
    then
      say "installing $torch_pin (CPU wheel) from $torch_index"
      "${pip[@]}" --index-url "$torch_index" "$torch_pin" >&2 \
        || die "pip install --index-url $torch_index $torch_pin failed"
    fi
  fi
  say "installing $req (a first install takes a few minutes)"
  "${pip[@]}" -r "$req" >&2 || die "pip install -r $req failed (into $venv)"
  unmet=$(missing) || die "after installing, $venv still lacks: $(echo "$unmet" | tr '\n' ' ')"
fi

"$py" -c 'import numpy, onnx, onnxruntime, torch' >&2 \
  || die "the packages in $venv do not import (delete $venv and run again)"
printf '%s\n' "$py"
