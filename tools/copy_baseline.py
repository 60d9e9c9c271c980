#!/usr/bin/env python3
"""Compares a prediction model with the trivial predictor "the next frame equals the last one".

Reads folders written by `edge-cli infer --dump DIR` (pred.npy, targets.npy, inputs.npy) and
prints, per folder and over all, the model's mean squared error and the last-frame predictor's,
both in MNAD's [0, 1] pixel space. A model above the last-frame line has not yet learned to
reproduce the static scene, so its error maps are dominated by edges and texture rather than
by what moves.

    for c in demo-data/train/*/*; do
        edge-cli infer --bundle B --source $c --dump dumps/$(basename $c) > /dev/null
    done
    python3 tools/copy_baseline.py dumps/*
"""
import sys

import numpy as np


def main(dirs):
    if not dirs:
        sys.exit("usage: copy_baseline.py DUMP_DIR [DUMP_DIR ...]")
    tot_m = tot_c = n = 0
    print(f"{'dump':40s} {'frames':>6s} {'model MSE':>11s} {'last-frame MSE':>15s}")
    for d in dirs:
        try:
            pred = np.load(f"{d}/pred.npy")
            target = np.load(f"{d}/targets.npy")
            inputs = np.load(f"{d}/inputs.npy")
        except OSError as e:
            sys.exit(f"{d}: {e}")
        if pred.shape != target.shape or inputs.shape[:2] != pred.shape[:2]:
            sys.exit(f"{d}: pred {pred.shape}, targets {target.shape}, inputs {inputs.shape} do not match")
        # inputs: (F, 1, C·(t−1), H, W) oldest first; the last frame is the last C channels.
        c = target.shape[2]
        last = inputs[:, :, -c:]
        m = (((pred - target) * 0.5) ** 2).mean(axis=(1, 2, 3, 4))
        k = (((last - target) * 0.5) ** 2).mean(axis=(1, 2, 3, 4))
        print(f"{d[-40:]:40s} {len(m):6d} {m.mean():11.3e} {k.mean():15.3e}")
        tot_m += m.sum()
        tot_c += k.sum()
        n += len(m)
    print(f"{'all':40s} {n:6d} {tot_m / n:11.3e} {tot_c / n:15.3e}")


if __name__ == "__main__":
    main(sys.argv[1:])
