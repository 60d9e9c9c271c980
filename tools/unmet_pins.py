"""Which `name==version` pins of a requirements file the running Python does not satisfy.

Prints each unmet pin on stdout (one a line, as pip takes them) and what is installed instead
on stderr; exits 1 when any pin is unmet. A local version label (2.15.0+cpu) satisfies the
public pin (2.15.0), as in pip. Used by tools/peers/setup.sh, .ci/parity.sh and
.ci/check_onnx.sh so that a venv is only reinstalled when it has to be (torch with its CUDA
libraries is about 5 GB).

Usage: python tools/unmet_pins.py REQUIREMENTS.txt
"""

import sys
from importlib.metadata import PackageNotFoundError, version


def main(path: str) -> int:
    bad = 0
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, want = (s.strip() for s in line.partition("=="))
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have is None or (want and have.split("+", 1)[0] != want):
            print(f"{name}=={want}" if want else name)
            print(f"  {name}: want {want or 'any'}, have {have or 'none'}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: unmet_pins.py REQUIREMENTS.txt")
    sys.exit(main(sys.argv[1]))
