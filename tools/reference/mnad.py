#!/usr/bin/env python3
"""PyTorch model of thermal-edge's network for the peer benchmarks (tools/peers/).

MNAD (prediction or reconstruction) with one SSMCTB / SSPCAB block, built from a preset name
(`paper`, `edge-m`, `edge-s`, `tiny`, as `src/model/config.rs`) or from a bundle's
`bundle.toml` `[model]` table, with the same layer shapes, parameter count and
multiply-accumulate (MAC) count as the Rust model in `src/model/`.

The layers are the parity-tested reference of `mnad_ref.py` (same folder; checked against the
Rust model tensor by tensor by `.ci/parity.sh`). This file adds what a benchmark needs:

* configurations from presets and bundles (`preset_config`, `bundle_config`);
* a randomly initialised network (`Mnad`): memory items uniform[0,1) with unit rows as the
  Rust `Init::UnitRows`, positional embedding N(0,1) as the Rust `Init::Normal(1.0)`, PyTorch's
  default init elsewhere (speed does not depend on the weights; trained weights can still be
  loaded with `load_rust_tensors`);
* the paper transformer's heads computed batched (as the Rust code computes them) instead of
  head by head as `mnad_ref.PaperLayer` does: the same function (`--check` compares them);
* the training loss of `src/model/train.rs::loss` and one training step as the Rust training
  loop runs it (forward, loss, backward, Adam, memory update);
* `rust_cost`: the parameter and MAC formula of `src/model/cost.rs`, ported line by line, and
  `count_macs`: the reference's own count (torch's FlopCounterMode for every convolution and
  matrix product, plus batch-norm and gate elements as cost.rs counts them);
* `python tools/reference/mnad.py --check [--bundle DIR]`: both counts for every preset (and
  every block variant, mode and upsampling of `tiny` and `edge-s`), compared; with a bundle,
  also the ONNX initializer count explained from the Rust count.

Usage:
    mnad.py [--preset NAME | --bundle DIR]      summary: shapes, parameters, MACs
    mnad.py --check [--bundle DIR [--weights model.safetensors]]
                                                self-check (exit status 1 on a mismatch)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnad_ref  # noqa: E402
from mnad_ref import BlockCfg, RefForward  # noqa: E402

#: (height, width, width multiplier) of each `ModelConfig::preset` (src/model/config.rs).
PRESETS: dict[str, tuple[int, int, float]] = {
    "paper": (256, 256, 1.0),
    "edge-m": (192, 256, 0.5),
    "edge-s": (128, 160, 0.25),
    "tiny": (32, 32, 0.125),
}
VARIANTS = ("paper", "reference-code", "sspcab", "none")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Cfg(mnad_ref.Cfg):
    """`mnad_ref.Cfg` with the preset name and the Rust channel rounding."""

    preset: str | None = None

    def ch(self, base: int) -> int:
        """`ModelConfig::ch`: `(base as f32 * width_mult).round()` (half away from zero), at
        least 2. The product is taken in float32 as the Rust code does."""
        p = float(np.float32(base) * np.float32(self.width_mult))
        return max(int(math.floor(p + 0.5)), 2)

    def memory_dim(self) -> int:
        return self.ch(512)

    def input_shape(self, batch: int = 1) -> list[int]:
        return [batch, self.input_channels(), self.height, self.width]


def block_config(variant: str) -> BlockCfg:
    """`BlockConfig::for_variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SSMCTB variant {variant!r} (expected {', '.join(VARIANTS)})")
    heads, layers, loss = {
        "paper": (4, 2, "huber"),
        "reference-code": (5, 1, "huber"),
    }.get(variant, (4, 2, "mse"))
    return BlockCfg(
        variant=variant,
        k_prime=1,
        dilation=1,
        token_dim=64,
        heads=heads,
        layers=layers,
        mlp_dim=128,
        ln_eps=1e-6,
        loss_kind=loss,
        huber_delta=1.0,
        loss_weight=0.1,
        keep_bn_after=True,
    )


def preset_config(
    name: str,
    variant: str = "paper",
    mode: str = "prediction",
    upsample: str = "transpose",
) -> Cfg:
    """`ModelConfig::preset(name)` (optionally `.with_block(variant)`, `.reconstruction()` and
    another upsampling)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (expected {', '.join(PRESETS)})")
    h, w, wm = PRESETS[name]
    recon = mode == "reconstruction"
    if mode not in ("prediction", "reconstruction"):
        raise ValueError(f"unknown mode {mode!r}")
    return Cfg(
        height=h,
        width=w,
        channels=1,
        mode=mode,
        t_length=1 if recon else 5,
        width_mult=wm,
        memory_items=10,
        compactness_weight=0.01 if recon else 0.1,
        separateness_weight=0.01 if recon else 0.1,
        upsample=upsample,
        block=block_config(variant),
        preset=name,
    )


def config_from_model_table(m: dict, origin: str = "[model]") -> Cfg:
    """A configuration from a `[model]` table (bundle.toml) or the Rust config.json object."""
    try:
        b = m["block"]
        loss = b["loss"]
        block = BlockCfg(
            variant=b["variant"],
            k_prime=int(b["k_prime"]),
            dilation=int(b["dilation"]),
            token_dim=int(b["token_dim"]),
            heads=int(b["heads"]),
            layers=int(b["layers"]),
            mlp_dim=int(b["mlp_dim"]),
            ln_eps=float(b["ln_eps"]),
            loss_kind=loss["kind"],
            huber_delta=float(loss.get("delta", 1.0)),
            loss_weight=float(b["loss_weight"]),
            keep_bn_after=bool(b["keep_bn_after"]),
        )
        cfg = Cfg(
            height=int(m["height"]),
            width=int(m["width"]),
            channels=int(m["channels"]),
            mode=m["mode"],
            t_length=int(m["t_length"]),
            width_mult=float(m["width_mult"]),
            memory_items=int(m["memory_items"]),
            compactness_weight=float(m["compactness_weight"]),
            separateness_weight=float(m["separateness_weight"]),
            upsample=m["upsample"],
            block=block,
            preset=m.get("preset"),
        )
    except KeyError as e:
        raise ValueError(f"{origin}: missing key {e}") from None
    validate(cfg, origin)
    return cfg


def bundle_config(bundle: str | Path) -> Cfg:
    """The configuration in `BUNDLE/bundle.toml`'s `[model]` table."""
    path = Path(bundle) / "bundle.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (is {bundle} a model bundle folder?)")
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    if "model" not in doc:
        raise ValueError(f"{path} has no [model] table")
    return config_from_model_table(doc["model"], f"{path} [model]")


def validate(cfg: Cfg, origin: str = "config") -> None:
    """The checks of `ModelConfig::validate` that matter for building the network."""
    bad = []
    if cfg.height <= 0 or cfg.width <= 0 or cfg.height % 8 or cfg.width % 8:
        bad.append(f"input {cfg.height}x{cfg.width} must be non-zero multiples of 8")
    if cfg.mode == "prediction" and cfg.t_length < 2:
        bad.append(f"prediction needs t_length >= 2, got {cfg.t_length}")
    if cfg.mode == "reconstruction" and cfg.t_length != 1:
        bad.append(f"reconstruction uses t_length 1, got {cfg.t_length}")
    if cfg.mode not in ("prediction", "reconstruction"):
        bad.append(f"unknown mode {cfg.mode!r}")
    if cfg.upsample not in ("transpose", "nearest-conv"):
        bad.append(f"unknown upsample {cfg.upsample!r}")
    if cfg.memory_items < 2:
        bad.append("memory needs at least 2 items")
    b = cfg.block
    if b.variant not in VARIANTS:
        bad.append(f"unknown block variant {b.variant!r}")
    if b.variant == "paper" and (b.heads == 0 or b.token_dim % b.heads):
        bad.append(f"token dim {b.token_dim} must be divisible by {b.heads} heads")
    if bad:
        raise ValueError(f"{origin}: " + "; ".join(bad))


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class BatchedPaperLayer(mnad_ref.PaperLayer):
    """`mnad_ref.PaperLayer` with all heads in one batched product (as the Rust code runs
    them): heads (B, H, C, d) from the head-major rows of `q`/`k`/`v`, summed after `att @ v`."""

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        b, c, dt = r.shape
        h, dq = self.heads, self.d_q
        x = self.ln1(r)
        q = self.q(x).reshape(b, c, h, dq).transpose(1, 2)
        k = self.k(x).reshape(b, c, h, dq).transpose(1, 2)
        v = self.v(x).reshape(b, c, h, dt).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dq), dim=-1)  # (B, H, C, C)
        p = r + (att @ v).sum(dim=1)
        return self.fc2(F.relu(self.fc1(self.ln2(p)))) + p


class Mnad(mnad_ref.MnadRef):
    """thermal-edge's network, randomly initialised like the Rust `Mnad::new`.

    `forward(x)` returns `mnad_ref.RefForward`: `pred` (B, c, H, W), `queries` (B*h*w, D),
    `scores`, `weights` (the read weights, (B*h*w, M)), `read`, and the block's output and
    input (the block-loss target)."""

    def __init__(self, cfg: Cfg, batched_heads: bool = True):
        super().__init__(cfg)
        with torch.no_grad():
            items = self.memory.items
            items.uniform_(0.0, 1.0)
            items.copy_(F.normalize(items, dim=1))
            attn = getattr(getattr(self.dec.gen, "block", None), "attn", None)
            if attn is not None:
                nn.init.normal_(attn.pos, 0.0, 1.0)
        if batched_heads:
            for m in self.modules():
                if type(m) is mnad_ref.PaperLayer:
                    m.__class__ = BatchedPaperLayer

    def param_count(self) -> int:
        """Trainable parameters (the memory items and batch-norm statistics are buffers)."""
        return sum(p.numel() for p in self.parameters())

    def loss(self, fwd: RefForward, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """`train.rs::loss`: pixel MSE + w_c * compactness + w_s * separateness + lambda * block
        loss (Huber with the configured delta, or MSE; none for the plain-conv variant)."""
        cfg = self.cfg
        pixel = F.mse_loss(fwd.pred, target)
        compact, separate = self.memory.losses(fwd.queries, fwd.scores)
        total = pixel + cfg.compactness_weight * compact + cfg.separateness_weight * separate
        block = torch.zeros(())
        if self.has_block_loss:
            block = mnad_ref.block_loss(fwd.block_output, fwd.block_input, cfg.block)
            total = total + cfg.block.loss_weight * block
        terms = {
            "total": total.detach(),
            "pixel": pixel.detach(),
            "compact": compact.detach(),
            "separate": separate.detach(),
            "block": block.detach(),
        }
        return total, terms

    def train_step(self, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One step of the Rust training loop (`train.rs::train`): train-mode forward, loss,
        backward, optimizer step, then the memory update with this step's queries against the
        memory as it was during the step."""
        self.train()
        fwd = self(x)
        total, terms = self.loss(fwd, y)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            self.memory.items.copy_(self.memory.updated(fwd.queries.detach()))
        return terms


def adam(model: Mnad, lr: float = 2e-4) -> torch.optim.Adam:
    """Adam as the Rust `optim::Adam` (default betas, eps 1e-8, no weight decay), MNAD's lr."""
    return torch.optim.Adam(model.parameters(), lr=lr)


def random_input(cfg: Cfg, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Frames (batch, c*(t-1), H, W) uniform in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(cfg.input_shape(batch), generator=g) * 2 - 1


# --------------------------------------------------------------------------------------------
# Cost: the Rust formula and the reference's own count
# --------------------------------------------------------------------------------------------


def rust_cost(cfg: Cfg) -> tuple[int, int]:
    """(parameters, MACs per frame) exactly as `src/model/cost.rs::cost` counts them."""
    params = 0
    macs = 0

    def conv(h: int, w: int, cin: int, cout: int, k: int) -> None:
        nonlocal params, macs
        macs += h * w * cin * cout * k * k
        params += cin * cout * k * k + cout

    def other(m: int, p: int) -> None:
        nonlocal params, macs
        macs += m
        params += p

    def bn(h: int, w: int, c: int) -> None:
        other(h * w * c, 2 * c)

    def basic(h: int, w: int, cin: int, cout: int, tail: bool) -> None:
        conv(h, w, cin, cout, 3)
        bn(h, w, cout)
        conv(h, w, cout, cout, 3)
        if tail:
            bn(h, w, cout)

    def up(h: int, w: int, cin: int, cout: int) -> None:
        if cfg.upsample == "transpose":
            conv(h, w, cin, cout, 3)  # a transposed conv does its 3x3 work on the input grid
        else:
            conv(2 * h, 2 * w, cin, cout, 3)
        bn(2 * h, 2 * w, cout)

    h, w = cfg.height, cfg.width
    c1, c2, c3, c4 = cfg.ch(64), cfg.ch(128), cfg.ch(256), cfg.ch(512)
    basic(h, w, cfg.input_channels(), c1, True)
    basic(h // 2, w // 2, c1, c2, True)
    basic(h // 4, w // 4, c2, c3, True)
    basic(h // 8, w // 8, c3, c4, False)
    n = h // 8 * w // 8
    other(2 * n * cfg.memory_items * c4, 0)  # memory read: scores + weighted sum
    basic(h // 8, w // 8, 2 * c4, c4, True)
    if cfg.mode == "prediction":
        up(h // 8, w // 8, c4, c3)
        basic(h // 4, w // 4, 2 * c3, c3, True)
        up(h // 4, w // 4, c3, c2)
        basic(h // 2, w // 2, 2 * c2, c2, True)
        up(h // 2, w // 2, c2, c1)
        gen_in = 2 * c1
    else:
        up(h // 8, w // 8, c4, c4)
        basic(h // 4, w // 4, c4, c3, True)
        up(h // 4, w // 4, c3, c3)
        basic(h // 2, w // 2, c3, c2, True)
        up(h // 2, w // 2, c2, c2)
        gen_in = c2
    nc = c1
    conv(h, w, gen_in, nc, 3)
    bn(h, w, nc)
    b = cfg.block
    hw = h * w
    if b.variant == "none":
        conv(h, w, nc, nc, 3)
    else:
        kp = b.k_prime
        other(hw * 4 * nc * nc * kp * kp, 4 * (nc * nc * kp * kp + nc))
        dt, cc = b.token_dim, nc
        if b.variant == "sspcab":
            r = max(nc // 8, 1)
            m, p = 2 * cc * r, 2 * cc * r + r + cc
        elif b.variant == "reference-code":
            hd = b.heads * dt
            m = cc * dt + cc * dt * 3 * hd + 2 * b.heads * cc * cc * dt + cc * hd * dt
            p = dt * 2 + cc * dt + dt * 3 * hd + hd * dt + dt
        else:
            hq, hv, mlp = dt, b.heads * dt, b.mlp_dim
            per_layer = (
                cc * dt * (2 * hq + hv)
                + b.heads * cc * cc * (dt // b.heads + dt)
                + 2 * cc * dt * mlp
            )
            per_params = dt * (2 * hq + hv) + 2 * dt * mlp + mlp + dt + 4 * dt
            m = cc * dt + b.layers * per_layer
            p = dt * 2 + cc * dt + b.layers * per_params
        other(m + hw * cc, p)
    if b.variant == "none" or b.keep_bn_after:
        bn(h, w, nc)
    conv(h, w, nc, cfg.channels, 3)
    return params, macs


def count_macs(model: Mnad) -> int:
    """MACs of one frame counted on the model itself: torch's FlopCounterMode (2 FLOPs per MAC
    of every convolution, transposed convolution and matrix product; biases not counted) plus
    one MAC per batch-norm output element and per element of the block's gating product, the
    two element-wise costs `cost.rs` includes. Runs on whatever device the model is on (the
    "meta" device computes nothing)."""
    from torch.utils.flop_counter import FlopCounterMode

    extra = 0

    def per_output_element(_m, _inp, out):
        nonlocal extra
        extra += out.numel()

    gated = (mnad_ref.SSMCTB, mnad_ref.SSPCAB)
    hooks = [
        m.register_forward_hook(per_output_element)
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d) or isinstance(m, gated)
    ]
    dev = next(model.parameters()).device
    x = torch.zeros(model.cfg.input_shape(1), device=dev)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2 + extra


def meta_model(cfg: Cfg) -> Mnad:
    """The network on the meta device: shapes only, no memory, no arithmetic."""
    with torch.device("meta"):
        return Mnad(cfg)


# --------------------------------------------------------------------------------------------
# The bundle's ONNX model against the Rust parameter count
# --------------------------------------------------------------------------------------------


def onnx_initializer_check(bundle: Path, cfg: Cfg) -> tuple[bool, list[str]]:
    """Explains `model.onnx`'s float initializer count from the Rust parameter count.

    The exporter folds every batch norm that directly follows a convolution into it (its 2c
    affine parameters disappear; the conv keeps c biases) and writes the one that follows the
    block (after a ReLU and the gate) as a per-channel scale and shift (2c, the same count);
    the masked convolution becomes one k x k kernel with a zero centre and one summed bias;
    Linear weights are stored transposed (same count). Everything else is a constant (shape,
    axes, epsilon, scale), not a parameter."""
    import onnx
    from onnx import numpy_helper

    path = bundle / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    float_params, consts = 0, 0
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        is_param = a.dtype.kind == "f" and a.ndim >= 1 and init.name.split(".")[0] in {
            "enc",
            "dec",
            "bn2",
        }
        if is_param:
            float_params += a.size
        else:
            consts += a.size
    rust, _ = rust_cost(cfg)
    c1, c2, c3, c4 = cfg.ch(64), cfg.ch(128), cfg.ch(256), cfg.ch(512)
    # Batch norms directly after a conv / transposed conv (folded): every one but the block's.
    if cfg.mode == "prediction":
        bn_channels = [c1, c1, c2, c2, c3, c3, c4] + [c4, c4] + [c3, c3, c3] + [c2, c2, c2] + [c1]
    else:
        bn_channels = [c1, c1, c2, c2, c3, c3, c4] + [c4, c4] + [c4, c3, c3] + [c3, c2, c2] + [c2]
    bn_channels.append(c1)  # dec.gen.bn1
    folded = sum(2 * c for c in bn_channels)
    b = cfg.block
    nc = c1
    lines = []
    expected = rust - folded
    if b.variant == "none":
        expected -= 2 * nc  # dec.gen.bn2 follows the plain conv: folded too
    else:
        four = 4 * (nc * nc * b.k_prime**2 + nc)
        if b.k_prime == 1:
            # The exporter writes a 2x2 kernel dilated to the corners (src/export/graph.rs).
            span = 2 * (b.k_prime + b.dilation)
            one = nc * nc * 4 + nc
            form = f"one 2x2 kernel (dilation {span}) + bias"
        else:
            k = 2 * b.k_prime + 2 * b.dilation + 1
            one = nc * nc * k * k + nc
            form = f"one {k}x{k} kernel + bias"
        expected += one - four
        lines.append(f"masked conv: 4 sub-kernels {four} params -> {form} {one}")
    lines.insert(0, f"Rust/reference parameters {rust}; batch norms folded into convs: -{folded}")
    ok = expected == float_params
    lines.append(
        f"expected ONNX float parameters {expected}, model.onnx has {float_params} "
        f"(+ {consts} constant elements: shapes, axes, eps, scales) -> {'OK' if ok else 'MISMATCH'}"
    )
    return ok, lines


def onnx_output_check(bundle: Path, cfg: Cfg, weights: Path, tol: float = 1e-4) -> tuple[bool, str]:
    """The reference with trained weights (a Rust `model.safetensors`, e.g. the checkpoint the
    bundle was exported from) against onnxruntime on the bundle's `model.onnx`: same frames,
    same memory items, every output within `tol`."""
    import onnxruntime as ort
    from safetensors.torch import load_file

    model = Mnad(cfg)
    model.load_rust_tensors(load_file(str(weights)))
    model.eval()
    x = random_input(cfg, 1, seed=3)
    with torch.inference_mode():
        fwd = model(x)
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    frames = next(i.name for i in sess.get_inputs() if len(i.shape) == 4)
    memory = next(i.name for i in sess.get_inputs() if len(i.shape) == 2)
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, {frames: x.numpy(), memory: model.memory.items.numpy()})
    mine = {"pred": fwd.pred, "queries": fwd.queries, "read_weights": fwd.weights}
    diffs = {n: float(np.abs(o - mine[n].numpy()).max()) for n, o in zip(names, outs) if n in mine}
    ok = len(diffs) == 3 and max(diffs.values()) <= tol
    text = ", ".join(f"{n} {d:.1e}" for n, d in diffs.items())
    return ok, (f"reference with {weights} vs onnxruntime on model.onnx, max |diff|: {text} "
                f"(bound {tol:g}) -> {'OK' if ok else 'MISMATCH'}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def describe(cfg: Cfg) -> str:
    b = cfg.block
    return (
        f"{cfg.preset or 'custom'} {cfg.height}x{cfg.width} {cfg.mode} t={cfg.t_length} "
        f"width x{cfg.width_mult} memory {cfg.memory_items}x{cfg.memory_dim()} "
        f"block {b.variant} (k'={b.k_prime} d={b.dilation} d_t={b.token_dim} H={b.heads} "
        f"L={b.layers} mlp={b.mlp_dim}) upsample {cfg.upsample}"
    )


def check(bundle: Path | None, weights: Path | None = None) -> bool:
    ok = True
    print("presets (block paper, prediction, transposed-conv upsampling):")
    print(f"  {'preset':8} {'input':>18} {'params':>10} {'cost.rs':>10} {'GMAC':>9} {'cost.rs':>9}")
    for name in PRESETS:
        cfg = preset_config(name)
        model = meta_model(cfg)
        params, macs = model.param_count(), count_macs(model)
        rp, rm = rust_cost(cfg)
        same = params == rp and macs == rm
        ok &= same
        shape = "x".join(map(str, cfg.input_shape()))
        print(
            f"  {name:8} {shape:>18} {params:>10} {rp:>10} {macs / 1e9:>9.4f} {rm / 1e9:>9.4f}"
            f"  {'OK' if same else 'MISMATCH'} (MACs {macs} vs {rm})"
        )

    n, bad = 0, []
    for name in ("tiny", "edge-s"):
        for variant in VARIANTS:
            for mode in ("prediction", "reconstruction"):
                for upsample in ("transpose", "nearest-conv"):
                    cfg = preset_config(name, variant, mode, upsample)
                    for keep in (True, False):
                        if not keep and variant == "none":
                            continue
                        cfg.block.keep_bn_after = keep
                        model = meta_model(cfg)
                        got = (model.param_count(), count_macs(model))
                        want = rust_cost(cfg)
                        n += 1
                        if got != want:
                            bad.append(f"{name} {variant} {mode} {upsample} keep_bn={keep}: "
                                       f"reference {got}, cost.rs {want}")
    ok &= not bad
    print(f"variants x modes x upsampling x keep_bn_after of tiny and edge-s: {n} configurations, "
          f"params and MACs {'all equal cost.rs' if not bad else 'DIFFER:'}")
    for line in bad:
        print("  " + line)

    # Batched heads == head by head (the parity-tested form), eval and train mode.
    torch.manual_seed(0)
    cfg = preset_config("tiny")
    ref = Mnad(cfg, batched_heads=False)
    fast = Mnad(cfg)
    fast.load_state_dict(ref.state_dict())
    x = random_input(cfg, 2)
    diffs = []
    for train in (False, True):
        ref.train(train)
        fast.train(train)
        with torch.no_grad():
            a, b = ref(x), fast(x)
        diffs.append(max((a.pred - b.pred).abs().max().item(),
                         (a.block_output - b.block_output).abs().max().item()))
    same = max(diffs) < 1e-5
    ok &= same
    print(f"batched heads vs head-by-head (mnad_ref.PaperLayer), tiny: max |diff| {max(diffs):.2e} "
          f"{'OK' if same else 'MISMATCH'}")

    # Loss and one training step: finite, and every parameter gets a gradient.
    model = Mnad(cfg)
    opt = adam(model)
    xb = random_input(cfg, 4, seed=1)
    yb = random_input(cfg, 4, seed=2)[:, : cfg.channels]
    model.train()
    total, terms = model.loss(model(xb), yb)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    items_before = model.memory.items.clone()
    model.train_step(opt, xb, yb)
    moved = not torch.equal(items_before, model.memory.items)
    unit = torch.allclose(model.memory.items.norm(dim=1), torch.ones(cfg.memory_items), atol=1e-5)
    good = math.isfinite(total.item()) and not no_grad and moved and unit
    ok &= good
    print("loss (tiny, batch 4): " + ", ".join(f"{k} {v.item():.4f}" for k, v in terms.items())
          + f"; params without gradient: {no_grad or 'none'}; memory updated to unit rows: "
          f"{moved and unit} -> {'OK' if good else 'FAIL'}")

    if bundle is not None:
        cfg = bundle_config(bundle)
        model = meta_model(cfg)
        params, macs = model.param_count(), count_macs(model)
        rp, rm = rust_cost(cfg)
        same = (params, macs) == (rp, rm)
        ok &= same
        print(f"bundle {bundle}: {describe(cfg)}")
        print(f"  reference params {params}, MACs {macs}; cost.rs params {rp}, MACs {rm} "
              f"{'OK' if same else 'MISMATCH'}")
        onnx_ok, lines = onnx_initializer_check(bundle, cfg)
        ok &= onnx_ok
        for line in lines:
            print("  " + line)
        if weights is not None:
            same, line = onnx_output_check(bundle, cfg, weights)
            ok &= same
            print("  " + line)
    print("check " + ("passed" if ok else "FAILED"))
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=list(PRESETS), help="build from a preset (default edge-s)")
    src.add_argument("--bundle", type=Path, help="build from BUNDLE/bundle.toml's [model] table")
    ap.add_argument("--check", action="store_true",
                    help="compare parameter and MAC counts with cost.rs's formula (exit 1 if not equal)")
    ap.add_argument("--weights", type=Path,
                    help="with --check --bundle: a Rust model.safetensors (the checkpoint the bundle "
                         "was exported from) to run the reference with and compare with "
                         "onnxruntime on BUNDLE/model.onnx (needs the safetensors package)")
    args = ap.parse_args(argv)
    if args.weights is not None and not (args.check and args.bundle):
        ap.error("--weights needs --check and --bundle")
    if args.weights is not None and not args.weights.is_file():
        ap.error(f"{args.weights} not found")
    try:
        if args.check:
            return 0 if check(args.bundle, args.weights) else 1
        cfg = bundle_config(args.bundle) if args.bundle else preset_config(args.preset or "edge-s")
    except (OSError, ValueError) as e:
        print(f"mnad.py: error: {e}", file=sys.stderr)
        return 2
    model = meta_model(cfg)
    rp, rm = rust_cost(cfg)
    print(describe(cfg))
    print(f"input {cfg.input_shape()}  params {model.param_count()} (cost.rs {rp})  "
          f"MACs {count_macs(model)} (cost.rs {rm})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
