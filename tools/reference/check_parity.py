#!/usr/bin/env python3
"""Parity check: the Rust (candle) model against the independent PyTorch reference.

Usage: check_parity.py FIXTURE_DIR [--tol 1e-4] [--float64]

FIXTURE_DIR is what ``tests/parity_fixture.rs`` writes with ``THERMAL_EDGE_PARITY_DIR`` set: a
``manifest.json`` and one directory per fixture holding ``config.json``, ``model.safetensors``
(weights and buffers before any train-mode pass), ``input.npy``, the Rust outputs
(``eval_*.npy`` / ``train_*.npy``), ``running_after_train.safetensors`` and
``memory_updated.npy``.

For each fixture the reference loads the same weights, runs the eval-mode forward (running
BN statistics), then the train-mode forward (batch statistics, which also moves the running
statistics), computes the memory and block losses of both, and applies one memory update with
the train-mode queries. Every Rust array is compared by its maximum absolute difference; an
array of the fixture that the check does not know fails the run, so nothing goes unchecked.
Prints a table and exits 1 on any failure (2 on a malformed fixture directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnad_ref  # noqa: E402


def reference_outputs(fixture: Path, float64: bool) -> dict[str, np.ndarray]:
    """Everything the reference computes for one fixture, under the Rust file names."""
    model = mnad_ref.load(fixture)
    dtype = torch.float64 if float64 else torch.float32
    model = model.to(dtype)
    x = torch.from_numpy(np.load(fixture / "input.npy")).to(dtype)
    out: dict[str, np.ndarray] = {}

    def record(prefix: str, f: mnad_ref.RefForward) -> None:
        tensors = {
            "pred": f.pred,
            "queries": f.queries,
            "scores": f.scores,
            "weights": f.weights,
            "read": f.read,
            "block_output": f.block_output,
        }
        compact, separate = model.memory.losses(f.queries, f.scores)
        tensors["compactness"] = compact
        tensors["separateness"] = separate
        if model.has_block_loss:
            tensors["block_input"] = f.block_input
            tensors["block_loss"] = mnad_ref.block_loss(
                f.block_output, f.block_input, model.cfg.block
            )
        for k, t in tensors.items():
            out[f"{prefix}_{k}"] = t.detach().numpy()

    with torch.no_grad():
        model.eval()
        record("eval", model(x))
        model.train()
        train = model(x)
        record("train", train)
        out["memory_updated"] = model.memory.updated(train.queries).numpy()
    for name, buf in model.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            out[f"running_after_train/{name}"] = buf.numpy()
    return out


def rust_outputs(fixture: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays the Rust fixture writer recorded."""
    arrays = {n: np.load(fixture / f"{n}.npy") for n in names}
    for name, a in load_numpy(str(fixture / "running_after_train.safetensors")).items():
        arrays[f"running_after_train/{name}"] = a
    return arrays


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="fixture directory written by tests/parity_fixture.rs")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs difference allowed (1e-4)")
    ap.add_argument(
        "--float64",
        action="store_true",
        help="run the reference in float64 (to see which side carries the rounding error)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    manifest_path = args.dir / "manifest.json"
    if not manifest_path.is_file():
        print(f"error: {manifest_path} not found (run the fixture writer first)", file=sys.stderr)
        return 2
    fixtures = json.loads(manifest_path.read_text())["fixtures"]
    if not fixtures:
        print("error: the manifest lists no fixtures", file=sys.stderr)
        return 2

    rows: list[tuple[str, str, str, float, float, bool]] = []
    failures = 0
    for name, names in fixtures.items():
        fdir = args.dir / name
        try:
            ours = reference_outputs(fdir, args.float64)
            theirs = rust_outputs(fdir, names)
        except Exception as e:  # a fixture the reference cannot even load is a failure
            print(f"error: fixture {name}: {type(e).__name__}: {e}", file=sys.stderr)
            failures += 1
            continue
        cfg = json.loads((fdir / "config.json").read_text())
        desc = f"{cfg['block']['variant']}/{cfg['mode']}/{cfg['upsample']}"
        for key in sorted(set(ours) | set(theirs)):
            if key not in theirs or key not in ours:
                side = "Rust" if key not in theirs else "reference"
                print(f"error: {name}: {key} missing on the {side} side", file=sys.stderr)
                rows.append((name, desc, key, float("nan"), float("nan"), False))
                failures += 1
                continue
            a, b = ours[key].astype(np.float64), theirs[key].astype(np.float64)
            if a.shape != b.shape:
                print(f"error: {name}: {key} shape {b.shape} (Rust) vs {a.shape}", file=sys.stderr)
                rows.append((name, desc, key, float("nan"), float("nan"), False))
                failures += 1
                continue
            diff = float(np.max(np.abs(a - b))) if a.size else 0.0
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            ok = bool(np.isfinite(diff) and diff <= args.tol)
            failures += not ok
            rows.append((name, desc, key, diff, scale, ok))

    w_fix = max((len(r[0]) for r in rows), default=7)
    w_key = max((len(r[2]) for r in rows), default=6)
    header = (
        f"{'fixture':<{w_fix}}  {'tensor':<{w_key}}  {'max abs diff':>12}  {'max |ref|':>10}  result"
    )
    print(header)
    print("-" * len(header))
    for fix, _, key, diff, scale, ok in rows:
        result = "pass" if ok else "FAIL"
        print(f"{fix:<{w_fix}}  {key:<{w_key}}  {diff:>12.3e}  {scale:>10.3e}  {result}")
    print()
    w_desc = max((len(r[1]) for r in rows), default=6)
    print("per fixture (worst tensor):")
    for fix in fixtures:
        mine = [r for r in rows if r[0] == fix]
        if not mine:
            print(f"  {fix:<{w_fix}}  not checked  FAIL")
            continue
        worst = max(mine, key=lambda r: (not r[5], r[3] if np.isfinite(r[3]) else np.inf))
        status = "pass" if all(r[5] for r in mine) else "FAIL"
        print(f"  {fix:<{w_fix}}  {mine[0][1]:<{w_desc}}  {worst[3]:.3e} ({worst[2]})  {status}")
    checked = len(rows)
    print()
    print(f"tolerance: max abs diff <= {args.tol:g}")
    print(f"parity: {checked - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
