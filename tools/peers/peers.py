#!/usr/bin/env python3
"""Peer benchmarks of a thermal-edge model bundle, in one process and on the same thread count:

  onnxruntime-f32     onnxruntime (CPU) on BUNDLE/model.onnx
  onnxruntime-int8    onnxruntime (CPU) on BUNDLE/model.int8.onnx
  pytorch-f32         the PyTorch reference of the network (tools/reference/mnad.py), eval mode,
                      torch.inference_mode(), batch 1
  pytorch-train-step  one training step of the reference (train mode, batch --batch: forward,
                      the training losses, backward, Adam lr 2e-4, memory update)

Threads: --threads N sets OMP_NUM_THREADS / MKL_NUM_THREADS = N before torch is imported,
torch.set_num_threads(N), torch.set_num_interop_threads(1), and onnxruntime
intra_op_num_threads = N, inter_op_num_threads = 1, sequential execution, all graph
optimizations. Each onnxruntime session is closed before the next run starts.

Inputs are random frames uniform in [-1, 1] (speed does not depend on them) and the bundle's
memory items (BUNDLE/memory.safetensors; random unit rows when absent). The reference network
is randomly initialised: it has the bundle's configuration, shapes, parameter and MAC counts.

Timing: --warmup untimed calls, then --frames timed calls, each timed alone with
time.perf_counter_ns. Percentiles are nearest-rank on the sorted sample
(p_q = sorted[ceil(q*n) - 1]). fps = 1000 / p50_ms; gflops = 2 * MACs / p50 / 1e9.
peak_rss_mib is the process's peak resident set size during that run (VmHWM after resetting it
through /proc/self/clear_refs; null where that is not possible); it includes the Python
interpreter and both libraries.

--json prints only the JSON document (schema thermal-edge-bench/1, as `edge-cli bench --json`)
on stdout; otherwise a table. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent / "reference"
SCHEMA = "thermal-edge-bench/1"
TOOL = "tools/peers/peers.py"


def die(msg: str, code: int = 2) -> None:
    print(f"peers.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See tools/peers/README.md.",
    )
    ap.add_argument("--bundle", required=True, type=Path, help="model bundle folder")
    ap.add_argument("--threads", type=int, default=1, help="threads per runtime (default 1)")
    ap.add_argument("--frames", type=int, default=50, help="timed inference calls (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed inference calls first (default 5)")
    ap.add_argument("--train-steps", type=int, default=10, help="timed training steps (default 10)")
    ap.add_argument("--train-warmup", type=int, default=2, help="untimed training steps first (default 2)")
    ap.add_argument("--batch", type=int, default=4, help="training batch size (default 4)")
    ap.add_argument("--skip-train", action="store_true", help="no training step")
    ap.add_argument("--json", action="store_true", help="print only the JSON document on stdout")
    args = ap.parse_args(argv)
    for name in ("threads", "frames", "train_steps", "batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("warmup", "train_warmup"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must not be negative")
    return args


def check_bundle(bundle: Path) -> None:
    if not bundle.is_dir():
        die(f"bundle folder {bundle} not found")
    if not (bundle / "bundle.toml").is_file():
        die(f"{bundle / 'bundle.toml'} not found (is {bundle} a model bundle? "
            "write one with: edge-cli export --checkpoint CKPT --calib DATA --out DIR)")
    for f, hint in (("model.onnx", "edge-cli export writes it"),
                    ("model.int8.onnx", "an int8 model needs: edge-cli export ... --calib DATA")):
        if not (bundle / f).is_file():
            die(f"{bundle / f} not found ({hint})")


# --------------------------------------------------------------------------------------------
# Statistics and host facts
# --------------------------------------------------------------------------------------------


def stats(samples_ns: list[int]) -> dict:
    """{n, mean_ms, p50_ms, p99_ms, min_ms, max_ms}; nearest-rank percentiles."""
    ms = sorted(s / 1e6 for s in samples_ns)
    n = len(ms)

    def pct(q: float) -> float:
        return ms[max(math.ceil(q * n), 1) - 1]

    r = lambda v: round(v, 4)  # noqa: E731 (0.1 us)
    return {
        "n": n,
        "mean_ms": r(sum(ms) / n),
        "p50_ms": r(pct(0.50)),
        "p99_ms": r(pct(0.99)),
        "min_ms": r(ms[0]),
        "max_ms": r(ms[-1]),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def timed(fn, warmup: int, n: int) -> tuple[list[int], float | None]:
    """Calls fn warmup times, then n timed times; returns the samples and the peak RSS."""
    can_reset = reset_peak_rss()
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return samples, (peak_rss_mib() if can_reset else None)


# --------------------------------------------------------------------------------------------
# Bundle inputs
# --------------------------------------------------------------------------------------------


def read_safetensors_f32(path: Path) -> dict:
    """The F32 tensors of a .safetensors file, as numpy arrays (no extra package needed)."""
    import numpy as np

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t.get("dtype") != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(t["shape"]).copy()
    return out


def memory_items(bundle: Path, doc: dict, m: int, d: int):
    """The bundle's memory items (M, D), or random unit rows when the file is absent."""
    import numpy as np

    name = doc.get("memory", {}).get("file", "memory.safetensors")
    path = bundle / name
    if path.is_file():
        tensors = read_safetensors_f32(path)
        for a in tensors.values():
            if a.shape == (m, d):
                return a, str(path)
        die(f"{path} holds no f32 tensor of shape [{m}, {d}]")
    rng = np.random.default_rng(0)
    a = rng.random((m, d), dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True), "random unit rows"


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def run_entry(name: str, threads: int, args, samples, macs: int, rss) -> dict:
    s = stats(samples)
    p50 = s["p50_ms"]
    return {
        "name": name,
        "threads": threads,
        "frames": args.frames,
        "warmup": args.warmup,
        "stages": {"inference": s},
        "fps": round(1000.0 / p50, 3) if p50 > 0 else None,
        "gflops": round(2 * macs / (p50 / 1e3) / 1e9, 3) if p50 > 0 else None,
        "fraction_of_peak": None,
        "peak_rss_mib": rss,
    }


def ort_run(path: Path, args, frames, memory, expect_frames: list[int]):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    four = [i for i in inputs if len(i.shape) == 4]
    two = [i for i in inputs if len(i.shape) == 2]
    if len(inputs) != 2 or len(four) != 1 or len(two) != 1:
        die(f"{path}: expected two inputs, frames [1, F*C, H, W] and memory [M, D]; got "
            + ", ".join(f"{i.name} {i.shape}" for i in inputs))
    fi, mi = four[0], two[0]

    def fits(shape, want) -> bool:
        return all(not isinstance(s, int) or s == w for s, w in zip(shape, want))

    if not fits(fi.shape, expect_frames):
        die(f"{path}: input '{fi.name}' is {fi.shape}, bundle.toml's model needs {expect_frames}")
    if not fits(mi.shape, list(memory.shape)):
        die(f"{path}: input '{mi.name}' is {mi.shape}, the memory is {list(memory.shape)}")
    feeds = {fi.name: frames, mi.name: memory}
    outputs = [o.name for o in sess.get_outputs()]
    return sess, (lambda: sess.run(outputs, feeds)), f"{fi.name} {fi.shape}, {mi.name} {mi.shape}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_bundle(args.bundle)
    n = str(args.threads)
    # Before numpy / torch load their OpenMP and MKL runtimes.
    os.environ["OMP_NUM_THREADS"] = n
    os.environ["MKL_NUM_THREADS"] = n

    try:
        import numpy as np
        import onnxruntime as ort
        import torch
    except ImportError as e:
        die(f"{e.name} is not installed: run tools/peers/setup.sh and use its Python "
            "(see tools/peers/README.md)")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    sys.path.insert(0, str(REFERENCE))
    import mnad  # tools/reference/mnad.py
    import tomllib

    with open(args.bundle / "bundle.toml", "rb") as f:
        doc = tomllib.load(f)
    try:
        cfg = mnad.bundle_config(args.bundle)
    except ValueError as e:
        die(str(e))
    shape = cfg.input_shape(1)
    macs = mnad.count_macs(mnad.meta_model(cfg))
    params, macs_rs = mnad.rust_cost(cfg)
    if macs != macs_rs:
        die(f"the reference counts {macs} MACs, cost.rs's formula {macs_rs}: run "
            f"tools/reference/mnad.py --check --bundle {args.bundle}")
    log(f"peers: {mnad.describe(cfg)}")
    log(f"peers: input {shape}, {params} params, {macs / 1e9:.4f} GMAC; threads {args.threads}; "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    frames = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    memory, mem_src = memory_items(args.bundle, doc, cfg.memory_items, cfg.memory_dim())
    log(f"peers: memory from {mem_src}")

    runs = []
    for name, file in (("onnxruntime-f32", "model.onnx"), ("onnxruntime-int8", "model.int8.onnx")):
        sess, call, desc = ort_run(args.bundle / file, args, frames, memory, shape)
        log(f"peers: {name}: {file} ({desc}), {args.warmup} warmup + {args.frames} timed")
        samples, rss = timed(call, args.warmup, args.frames)
        runs.append(run_entry(name, args.threads, args, samples, macs, rss))
        del sess, call

    torch.manual_seed(0)
    model = mnad.Mnad(cfg)
    with torch.no_grad():
        model.memory.items.copy_(torch.from_numpy(memory))
    model.eval()
    x = torch.from_numpy(frames)
    log(f"peers: pytorch-f32: reference forward, {args.warmup} warmup + {args.frames} timed")
    with torch.inference_mode():
        samples, rss = timed(lambda: model(x), args.warmup, args.frames)
    runs.append(run_entry("pytorch-f32", args.threads, args, samples, macs, rss))

    train = []
    if not args.skip_train:
        torch.manual_seed(1)
        opt = mnad.adam(model, lr=2e-4)
        xb = mnad.random_input(cfg, args.batch, seed=1)
        yb = mnad.random_input(cfg, args.batch, seed=2)[:, : cfg.channels].contiguous()
        log(f"peers: pytorch-train-step: batch {args.batch}, {args.train_warmup} warmup + "
            f"{args.train_steps} timed")
        samples, _ = timed(lambda: model.train_step(opt, xb, yb), args.train_warmup, args.train_steps)
        train.append({
            "name": "pytorch-train-step",
            "threads": args.threads,
            "batch": args.batch,
            "steps": args.train_steps,
            "warmup": args.train_warmup,
            "step": stats(samples),
        })

    result = {
        "schema": SCHEMA,
        "tool": TOOL,
        "host": {"cpu": cpu_model(), "logical_cpus": os.cpu_count() or 0},
        "model": {
            "bundle": str(args.bundle),
            "preset": cfg.preset or "custom",
            "input": shape,
            "macs": macs,
            "params": params,
        },
        "peak": None,
        "runs": runs,
        "train": train,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(result)
    return 0


def print_table(r: dict) -> None:
    m = r["model"]
    print(f"{r['host']['cpu']} ({r['host']['logical_cpus']} logical CPUs)")
    print(f"bundle {m['bundle']}: preset {m['preset']}, input {m['input']}, "
          f"{m['params']} params, {m['macs'] / 1e9:.4f} GMAC/frame")
    head = f"{'run':20} {'thr':>3} {'n':>4} {'mean':>9} {'p50':>9} {'p99':>9} {'min':>9} {'max':>9}"
    print(head + f" {'fps':>8} {'GFLOP/s':>8} {'RSS MiB':>8}")
    for run in r["runs"]:
        s = run["stages"]["inference"]
        rss = "n/a" if run["peak_rss_mib"] is None else f"{run['peak_rss_mib']:.0f}"
        print(f"{run['name']:20} {run['threads']:>3} {s['n']:>4} {s['mean_ms']:>9.3f} "
              f"{s['p50_ms']:>9.3f} {s['p99_ms']:>9.3f} {s['min_ms']:>9.3f} {s['max_ms']:>9.3f} "
              f"{run['fps']:>8.1f} {run['gflops']:>8.2f} {rss:>8}")
    for t in r["train"]:
        s = t["step"]
        print(f"{t['name']:20} {t['threads']:>3} {s['n']:>4} {s['mean_ms']:>9.3f} "
              f"{s['p50_ms']:>9.3f} {s['p99_ms']:>9.3f} {s['min_ms']:>9.3f} {s['max_ms']:>9.3f}"
              f"   (batch {t['batch']}; ms per step)")
    print("times in ms; percentiles nearest-rank")


if __name__ == "__main__":
    sys.exit(main())
