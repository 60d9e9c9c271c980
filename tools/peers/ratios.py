#!/usr/bin/env python3
"""Pairs our benchmark runs (`edge-cli bench --json`) with the peers' (`tools/peers/peers.py
--json`) and prints ours/peer ratios.

Inputs: JSON files of schema thermal-edge-bench/1, or folders holding them (`*.json`, as
tools/peers/compare.sh writes them: round-NN-ours.json, round-NN-peer.json). A document is the
peer's when its "tool" is tools/peers/peers.py, ours otherwise. Round i's ours is paired with
round i's peer: the round is the NN of a round-NN-... file name, else the file's position among
its side's files in name order.

Rows (p50 in ms; "n/a" where a run is missing on either side):
  tract-f32              vs onnxruntime-f32     stages.inference
  tract-int8             vs onnxruntime-int8    stages.inference
  candle-cpu             vs pytorch-f32         stages.inference
  candle-cpu-train-step  vs pytorch-train-step  train step
ours p50 and peer p50 are medians over the rounds; the ratio ours/peer is given as
min - median - max over the per-round ratios (< 1: ours is faster). Then, for each of our runs,
whole frame / bare inference: stages.frame.p50 / stages.inference.p50 (median over rounds, and
min - max).

Usage: ratios.py [--json] PATH...
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

SCHEMA = "thermal-edge-bench/1"
PEER_TOOL = "tools/peers/peers.py"
PAIRS = [
    ("inference", "tract-f32", "onnxruntime-f32"),
    ("inference", "tract-int8", "onnxruntime-int8"),
    ("inference", "candle-cpu", "pytorch-f32"),
    ("train", "candle-cpu-train-step", "pytorch-train-step"),
]


def warn(msg: str) -> None:
    print(f"ratios.py: warning: {msg}", file=sys.stderr)


def load(paths: list[Path]) -> tuple[dict, dict]:
    """{round: doc} for ours and for the peer."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} not found")
    sides: dict[str, list[tuple[int | None, Path, dict]]] = {"ours": [], "peer": []}
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            warn(f"{f}: not readable JSON ({e}); skipped")
            continue
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            if not (isinstance(doc, dict) and "pairs" in doc):  # our own --json output: quiet
                warn(f"{f}: schema is not {SCHEMA}; skipped")
            continue
        side = "peer" if doc.get("tool") == PEER_TOOL else "ours"
        m = re.search(r"round-(\d+)", f.name)
        sides[side].append((int(m.group(1)) if m else None, f, doc))
    out = {}
    for side, docs in sides.items():
        by_round = {}
        for i, (rnd, f, doc) in enumerate(docs, start=1):
            key = rnd if rnd is not None else i
            if key in by_round:
                warn(f"{f}: a second {side} document for round {key}; skipped")
                continue
            by_round[key] = doc
        out[side] = by_round
    return out["ours"], out["peer"]


def p50(doc: dict, kind: str, name: str, stage: str = "inference") -> float | None:
    """p50_ms of a run's stage (kind "inference") or of a training entry's step."""
    try:
        if kind == "train":
            for t in doc.get("train") or []:
                if t.get("name") == name:
                    return float(t["step"]["p50_ms"])
            return None
        for r in doc.get("runs") or []:
            if r.get("name") == name:
                return float(r["stages"][stage]["p50_ms"])
    except (KeyError, TypeError, ValueError):
        return None
    return None


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def table(ours: dict, peer: dict) -> dict:
    pairs = []
    for kind, o_name, p_name in PAIRS:
        o_all = [v for d in ours.values() if (v := p50(d, kind, o_name)) is not None]
        p_all = [v for d in peer.values() if (v := p50(d, kind, p_name)) is not None]
        ratios = []
        for rnd in sorted(set(ours) & set(peer)):
            o, p = p50(ours[rnd], kind, o_name), p50(peer[rnd], kind, p_name)
            if o is not None and p is not None and p > 0:
                ratios.append(o / p)
        pairs.append({
            "kind": kind,
            "ours": o_name,
            "peer": p_name,
            "ours_p50_ms": statistics.median(o_all) if o_all else None,
            "peer_p50_ms": statistics.median(p_all) if p_all else None,
            "rounds": {"ours": len(o_all), "peer": len(p_all)},
            "ratio": spread(ratios),
        })
    names: list[str] = []
    for d in ours.values():
        for r in d.get("runs") or []:
            if isinstance(r, dict) and r.get("name") not in names:
                names.append(r.get("name"))
    overhead = []
    for name in names:
        ratios, frames, infs = [], [], []
        for d in ours.values():
            f, i = p50(d, "inference", name, "frame"), p50(d, "inference", name, "inference")
            if f is not None:
                frames.append(f)
            if i is not None:
                infs.append(i)
            if f is not None and i is not None and i > 0:
                ratios.append(f / i)
        overhead.append({
            "run": name,
            "frame_p50_ms": statistics.median(frames) if frames else None,
            "inference_p50_ms": statistics.median(infs) if infs else None,
            "ratio": spread(ratios),
        })
    return {
        "rounds": {"ours": len(ours), "peer": len(peer), "paired": len(set(ours) & set(peer))},
        "pairs": pairs,
        "frame_over_inference": overhead,
    }


def consistency(ours: dict, peer: dict) -> list[str]:
    """Differences between the two sides that make a ratio meaningless."""
    notes = []
    o_models = {json.dumps((d.get("model") or {}).get("input")) for d in ours.values()}
    p_models = {json.dumps((d.get("model") or {}).get("input")) for d in peer.values()}
    if ours and peer and o_models != p_models:
        notes.append(f"model inputs differ: ours {sorted(o_models)}, peer {sorted(p_models)}")
    o_par = {(d.get("model") or {}).get("params") for d in ours.values()}
    p_par = {(d.get("model") or {}).get("params") for d in peer.values()}
    if ours and peer and o_par != p_par:
        notes.append(f"parameter counts differ: ours {sorted(map(str, o_par))}, "
                     f"peer {sorted(map(str, p_par))}")
    threads = set()
    for d in list(ours.values()) + list(peer.values()):
        for r in (d.get("runs") or []) + (d.get("train") or []):
            if isinstance(r, dict) and "threads" in r:
                threads.add(r["threads"])
    if len(threads) > 1:
        notes.append(f"runs use different thread counts: {sorted(threads)}")
    return notes


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def fmt_spread(s: dict | None) -> str:
    if s is None:
        return "n/a"
    return f"{s['min']:.3f} - {s['median']:.3f} - {s['max']:.3f}  (n={s['n']})"


def print_table(t: dict, notes: list[str]) -> None:
    r = t["rounds"]
    print(f"rounds: ours {r['ours']}, peer {r['peer']}, paired {r['paired']}")
    print(f"{'ours':29} {'peer':20} {'ours p50 ms':>12} {'peer p50 ms':>12}   "
          "ours/peer min - median - max")
    for p in t["pairs"]:
        label = p["ours"] + ("" if p["kind"] == "inference" else " (step)")
        print(f"{label:29} {p['peer']:20} {fmt_ms(p['ours_p50_ms']):>12} "
              f"{fmt_ms(p['peer_p50_ms']):>12}   {fmt_spread(p['ratio'])}")
    print()
    print(f"{'whole frame / bare inference':30} {'frame p50 ms':>12} {'infer p50 ms':>12}   "
          "ratio min - median - max")
    if not t["frame_over_inference"]:
        print(f"{'(no runs of ours)':30} {'n/a':>12} {'n/a':>12}   n/a")
    for o in t["frame_over_inference"]:
        print(f"{o['run']:30} {fmt_ms(o['frame_p50_ms']):>12} {fmt_ms(o['inference_p50_ms']):>12}"
              f"   {fmt_spread(o['ratio'])}")
    for n in notes:
        print(f"note: {n}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="JSON files or folders of them")
    ap.add_argument("--json", action="store_true", help="print the table as JSON")
    args = ap.parse_args(argv)
    try:
        ours, peer = load(args.paths)
    except FileNotFoundError as e:
        print(f"ratios.py: error: {e}", file=sys.stderr)
        return 2
    if not ours and not peer:
        print(f"ratios.py: error: no {SCHEMA} documents in {' '.join(map(str, args.paths))}",
              file=sys.stderr)
        return 2
    t = table(ours, peer)
    notes = consistency(ours, peer)
    if args.json:
        t["notes"] = notes
        json.dump(t, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(t, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
