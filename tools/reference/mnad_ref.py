"""Independent PyTorch reference of thermal-edge's model: MNAD (Park et al., CVPR 2020) with one
SSMCTB / SSPCAB block (Madan et al., TPAMI 2023; Ristea et al., CVPR 2022).

Written from the model spec (`shared/reference/model.md`) and the official code it describes,
not translated from the Rust (candle) implementation. Where the spec leaves a choice open, this
file takes the one the Rust code documents and says so in a ``Choice:`` comment:

* tensor names (module tree) follow the Rust ``ParamStore`` names, so a Rust
  ``model.safetensors`` loads with ``load_state_dict(strict=True)``;
* paper transformer: per head W_Q, W_K in R^{d_t x d_q} with d_q = d_t / H, W_V in R^{d_t x d_t};
  the heads' rows are stored head-major in one ``q``/``k``/``v`` Linear; heads are summed;
  MLP ``fc1 -> ReLU -> fc2`` of width ``mlp_dim``; LayerNorm eps from the config (1e-6);
* the masked convolution runs as the official code's four sliced convolutions (not as one
  5x5 kernel with a zero centre, which is how the Rust code runs it);
* the BN + ReLU after the block are kept when ``keep_bn_after`` is set (always for ``none``);
* nearest-neighbour x2 + 3x3 conv is the alternative to ConvTranspose2d(k3, s2, p1, op1).

Everything runs in float32 on the CPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# Configuration (the Rust ``ModelConfig`` as serialised to config.json)
# --------------------------------------------------------------------------------------------


@dataclass
class BlockCfg:
    variant: str  # "paper" | "reference-code" | "sspcab" | "none"
    k_prime: int
    dilation: int
    token_dim: int
    heads: int
    layers: int
    mlp_dim: int
    ln_eps: float
    loss_kind: str  # "huber" | "mse"
    huber_delta: float
    loss_weight: float
    keep_bn_after: bool


@dataclass
class Cfg:
    height: int
    width: int
    channels: int
    mode: str  # "prediction" | "reconstruction"
    t_length: int
    width_mult: float
    memory_items: int
    compactness_weight: float
    separateness_weight: float
    upsample: str  # "transpose" | "nearest-conv"
    block: BlockCfg

    @staticmethod
    def from_json(path: Path) -> "Cfg":
        j = json.loads(Path(path).read_text())
        b = j["block"]
        loss = b["loss"]
        block = BlockCfg(
            variant=b["variant"],
            k_prime=b["k_prime"],
            dilation=b["dilation"],
            token_dim=b["token_dim"],
            heads=b["heads"],
            layers=b["layers"],
            mlp_dim=b["mlp_dim"],
            ln_eps=b["ln_eps"],
            loss_kind=loss["kind"],
            huber_delta=loss.get("delta", 1.0),
            loss_weight=b["loss_weight"],
            keep_bn_after=b["keep_bn_after"],
        )
        return Cfg(
            height=j["height"],
            width=j["width"],
            channels=j["channels"],
            mode=j["mode"],
            t_length=j["t_length"],
            width_mult=j["width_mult"],
            memory_items=j["memory_items"],
            compactness_weight=j["compactness_weight"],
            separateness_weight=j["separateness_weight"],
            upsample=j["upsample"],
            block=block,
        )

    def ch(self, base: int) -> int:
        """MNAD's channel count ``base`` scaled by the width multiplier, at least 2.

        Choice: Rust rounds ``base * width_mult`` in f32 (half away from zero); Python's
        ``round`` is half-to-even, so round explicitly.
        """
        return max(int(math.floor(base * self.width_mult + 0.5)), 2)

    def input_channels(self) -> int:
        frames = self.t_length - 1 if self.mode == "prediction" else 1
        return self.channels * frames


# --------------------------------------------------------------------------------------------
# Masked convolution (official SSPCAB/SSMCTB form: four sliced convolutions)
# --------------------------------------------------------------------------------------------


class MaskedConvMixin:
    """Four k'xk' C->C convolutions on slices of the zero-padded input, summed, one ReLU.

    Mixed into the block modules so that the sub-convolutions sit directly under the block
    (``conv1``..``conv4``), exactly as in the official ``SSPCAB`` / ``SSMCTB`` classes.
    """

    def _init_masked(self, c: int, k_prime: int, dilation: int) -> None:
        self.pad = k_prime + dilation
        self.border = k_prime + 2 * dilation + 1
        self.conv1 = nn.Conv2d(c, c, k_prime)  # top-left
        self.conv2 = nn.Conv2d(c, c, k_prime)  # bottom-left
        self.conv3 = nn.Conv2d(c, c, k_prime)  # top-right
        self.conv4 = nn.Conv2d(c, c, k_prime)  # bottom-right

    def masked_conv(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        b = self.border
        xp = F.pad(x, (self.pad,) * 4, mode="constant", value=0.0)
        x1 = self.conv1(xp[:, :, :-b, :-b])
        x2 = self.conv2(xp[:, :, b:, :-b])
        x3 = self.conv3(xp[:, :, :-b, b:])
        x4 = self.conv4(xp[:, :, b:, b:])
        assert x1.shape[-2:] == (h, w), (x1.shape, h, w)
        return F.relu(x1 + x2 + x3 + x4)


# --------------------------------------------------------------------------------------------
# Channel-wise transformer
# --------------------------------------------------------------------------------------------


class PaperLayer(nn.Module):
    """One pre-norm layer of the paper (eqs. 3-5):
    P = sum_h MHA_h(LN(R)) + R;  R = MLP(LN(P)) + P."""

    def __init__(self, cfg: BlockCfg):
        super().__init__()
        dt, h = cfg.token_dim, cfg.heads
        self.heads, self.d_q, self.d_t = h, dt // h, dt
        self.ln1 = nn.LayerNorm(dt, eps=cfg.ln_eps)
        self.q = nn.Linear(dt, h * self.d_q, bias=False)
        self.k = nn.Linear(dt, h * self.d_q, bias=False)
        self.v = nn.Linear(dt, h * dt, bias=False)
        self.ln2 = nn.LayerNorm(dt, eps=cfg.ln_eps)
        self.fc1 = nn.Linear(dt, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, dt)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = self.ln1(r)
        dq, dt = self.d_q, self.d_t
        summed = torch.zeros_like(r)
        # Eq. 4, head by head: each head has its own W_Q, W_K (d_t x d_q) and W_V (d_t x d_t);
        # the head outputs are summed, not concatenated.
        for i in range(self.heads):
            wq = self.q.weight[i * dq : (i + 1) * dq]
            wk = self.k.weight[i * dq : (i + 1) * dq]
            wv = self.v.weight[i * dt : (i + 1) * dt]
            qi, ki, vi = x @ wq.T, x @ wk.T, x @ wv.T  # (B, C, d_q|d_q|d_t)
            att = torch.softmax(qi @ ki.transpose(-1, -2) / math.sqrt(dq), dim=-1)  # (B, C, C)
            summed = summed + att @ vi
        p = summed + r
        return self.fc2(F.relu(self.fc1(self.ln2(p)))) + p


class ChannelTransformer(nn.Module):
    """Tokens from global average pooling (one per channel), Linear(1 -> d_t) + positional
    embedding, the transformer body, mean over d_t, sigmoid: a per-channel gate."""

    def __init__(self, c: int, cfg: BlockCfg):
        super().__init__()
        dt = cfg.token_dim
        self.reference = cfg.variant == "reference-code"
        self.proj = nn.Linear(1, dt)
        self.pos = nn.Parameter(torch.zeros(c, dt))
        if self.reference:
            # Official torch ``Attention``: one layer, qkv without bias, heads concatenated,
            # output projection with bias; no LayerNorm, MLP or residual.
            self.heads, self.dim_head = cfg.heads, dt
            inner = cfg.heads * dt
            self.qkv = nn.Linear(dt, 3 * inner, bias=False)
            self.out = nn.Linear(inner, dt)
        else:
            self.layers = nn.ModuleList(PaperLayer(cfg) for _ in range(cfg.layers))

    def _reference_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, d = self.heads, self.dim_head
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # rearrange 'b n (h d) -> b h n d'
        q, k, v = (t.reshape(b, n, h, d).permute(0, 2, 1, 3) for t in (q, k, v))
        att = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * d**-0.5, dim=-1)
        o = torch.einsum("bhij,bhjd->bhid", att, v)
        # rearrange 'b h n d -> b n (h d)'
        return self.out(o.permute(0, 2, 1, 3).reshape(b, n, h * d))

    def gate(self, z: torch.Tensor) -> torch.Tensor:
        b, c = z.shape[:2]
        tokens = F.adaptive_avg_pool2d(z, 1).reshape(b, c, 1)
        r = self.proj(tokens) + self.pos
        if self.reference:
            r = self._reference_attention(r)
        else:
            for layer in self.layers:
                r = layer(r)
        return torch.sigmoid(r.mean(dim=-1)).reshape(b, c, 1, 1)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class SSMCTB(MaskedConvMixin, nn.Module):
    """Masked convolution gated by the channel transformer (paper or official-code form)."""

    def __init__(self, c: int, cfg: BlockCfg):
        nn.Module.__init__(self)
        self._init_masked(c, cfg.k_prime, cfg.dilation)
        self.attn = ChannelTransformer(c, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.masked_conv(x)
        return z * self.attn.gate(z)


class SELayer(nn.Module):
    """Squeeze-and-excitation, r = 8 (SSPCAB's ``SELayer``)."""

    def __init__(self, c: int, reduction: int = 8):
        super().__init__()
        r = max(c // reduction, 1)
        self.fc1 = nn.Linear(c, r)
        self.fc2 = nn.Linear(r, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        s = x.reshape(b, c, -1).mean(dim=2)
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * g.reshape(b, c, 1, 1)


class SSPCAB(MaskedConvMixin, nn.Module):
    """Masked convolution followed by squeeze-and-excitation."""

    def __init__(self, c: int, cfg: BlockCfg):
        nn.Module.__init__(self)
        self._init_masked(c, cfg.k_prime, cfg.dilation)
        self.se = SELayer(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.masked_conv(x))


def block_loss(output: torch.Tensor, target: torch.Tensor, cfg: BlockCfg) -> torch.Tensor:
    """L_SSMCTB: Huber(delta) or MSE between the block's output and its (not detached) input."""
    if cfg.loss_kind == "huber":
        return F.huber_loss(output, target, delta=cfg.huber_delta, reduction="mean")
    if cfg.loss_kind == "mse":
        return F.mse_loss(output, target, reduction="mean")
    raise ValueError(f"unknown block loss {cfg.loss_kind!r}")


# --------------------------------------------------------------------------------------------
# MNAD encoder / decoder
# --------------------------------------------------------------------------------------------


def batch_norm(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class Basic(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU (``Basic``); without the final BN + ReLU
    when ``tail`` is False (``Basic_``, the encoder's last block)."""

    def __init__(self, cin: int, cout: int, tail: bool = True):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = batch_norm(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.tail = tail
        if tail:
            self.bn2 = batch_norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.c1(x)))
        y = self.c2(y)
        return F.relu(self.bn2(y)) if self.tail else y


class Up(nn.Module):
    """x2 upsampling: ConvTranspose2d(k3, s2, p1, output_padding 1) (or nearest x2 + conv3x3)
    -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "transpose":
            self.t = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        elif kind == "nearest-conv":
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        else:
            raise ValueError(f"unknown upsample kind {kind!r}")
        self.bn = batch_norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "transpose":
            y = self.t(x)
        else:
            y = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return F.relu(self.bn(y))


class Gen(nn.Module):
    """MNAD's output block conv -> BN -> ReLU -> conv -> BN -> ReLU -> conv -> tanh, with the
    middle (channel-preserving) conv replaced by the self-supervised block.

    Returns the prediction and the block's (output, input)."""

    def __init__(self, cin: int, cout: int, nc: int, cfg: BlockCfg):
        super().__init__()
        self.variant = cfg.variant
        self.c1 = nn.Conv2d(cin, nc, 3, padding=1)
        self.bn1 = batch_norm(nc)
        if cfg.variant == "none":
            self.c2 = nn.Conv2d(nc, nc, 3, padding=1)
        elif cfg.variant in ("paper", "reference-code"):
            self.block = SSMCTB(nc, cfg)
        elif cfg.variant == "sspcab":
            self.block = SSPCAB(nc, cfg)
        else:
            raise ValueError(f"unknown block variant {cfg.variant!r}")
        self.keep_bn = cfg.variant == "none" or cfg.keep_bn_after
        if self.keep_bn:
            self.bn2 = batch_norm(nc)
        self.c3 = nn.Conv2d(nc, cout, 3, padding=1)

    def forward(self, x: torch.Tensor):
        y_in = F.relu(self.bn1(self.c1(x)))
        y_out = self.c2(y_in) if self.variant == "none" else self.block(y_in)
        y = F.relu(self.bn2(y_out)) if self.keep_bn else y_out
        return torch.tanh(self.c3(y)), y_out, y_in


class Encoder(nn.Module):
    def __init__(self, cfg: Cfg):
        super().__init__()
        c1, c2, c3, c4 = cfg.ch(64), cfg.ch(128), cfg.ch(256), cfg.ch(512)
        self.b1 = Basic(cfg.input_channels(), c1)
        self.b2 = Basic(c1, c2)
        self.b3 = Basic(c2, c3)
        self.b4 = Basic(c3, c4, tail=False)

    def forward(self, x: torch.Tensor):
        s1 = self.b1(x)
        s2 = self.b2(F.max_pool2d(s1, 2))
        s3 = self.b3(F.max_pool2d(s2, 2))
        fea = self.b4(F.max_pool2d(s3, 2))
        return fea, (s1, s2, s3)


class Decoder(nn.Module):
    def __init__(self, cfg: Cfg):
        super().__init__()
        c1, c2, c3, c4 = cfg.ch(64), cfg.ch(128), cfg.ch(256), cfg.ch(512)
        self.prediction = cfg.mode == "prediction"
        u = cfg.upsample
        self.b0 = Basic(2 * c4, c4)
        if self.prediction:
            # Skips concatenated as [skip, upsampled].
            self.up4, self.b3 = Up(c4, c3, u), Basic(2 * c3, c3)
            self.up3, self.b2 = Up(c3, c2, u), Basic(2 * c2, c2)
            self.up2 = Up(c2, c1, u)
            self.gen = Gen(2 * c1, cfg.channels, c1, cfg.block)
        else:
            # Reconstruction.py: no skips, Upsample keeps the channel count.
            self.up4, self.b3 = Up(c4, c4, u), Basic(c4, c3)
            self.up3, self.b2 = Up(c3, c3, u), Basic(c3, c2)
            self.up2 = Up(c2, c2, u)
            self.gen = Gen(c2, cfg.channels, c1, cfg.block)

    def forward(self, z: torch.Tensor, skips):
        s1, s2, s3 = skips
        y = self.b0(z)
        if self.prediction:
            y = self.b3(torch.cat([s3, self.up4(y)], dim=1))
            y = self.b2(torch.cat([s2, self.up3(y)], dim=1))
            return self.gen(torch.cat([s1, self.up2(y)], dim=1))
        y = self.b3(self.up4(y))
        y = self.b2(self.up3(y))
        return self.gen(self.up2(y))


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


class Memory(nn.Module):
    """MNAD's memory: M unit items (a buffer, never trained by the optimizer)."""

    def __init__(self, items: int, dim: int):
        super().__init__()
        self.register_buffer("items", torch.zeros(items, dim))

    def read(self, q: torch.Tensor):
        """Cosine scores S = Q M^T, weights softmax over items, read = weights.detach() M."""
        keys = self.items
        scores = q @ keys.T
        weights = torch.softmax(scores, dim=1)
        read = weights.detach() @ keys
        return scores, weights, read

    def losses(self, q: torch.Tensor, scores: torch.Tensor):
        """Compactness (MSE to the top-1 item) and separateness (triplet, top-1 positive,
        top-2 negative, margin 1), as MNAD's ``gather_loss`` in training."""
        keys = self.items
        _, idx = torch.topk(scores, 2, dim=1)
        pos, neg = keys[idx[:, 0]].detach(), keys[idx[:, 1]].detach()
        compact = F.mse_loss(q, pos)
        separate = nn.TripletMarginLoss(margin=1.0, p=2)(q, pos, neg)
        return compact, separate

    @torch.no_grad()
    def updated(self, q: torch.Tensor) -> torch.Tensor:
        """MNAD's update (``Memory.update`` + ``get_update_query`` in training): for each item i,
        the queries whose top-1 item is i, weighted by score_query[q, i] / max_q score_query[., i]
        (score_query = softmax over all queries), are added; then rows are L2-normalised."""
        keys = self.items
        score = q @ keys.T
        score_query = torch.softmax(score, dim=0)
        score_memory = torch.softmax(score, dim=1)
        _, gathering = torch.topk(score_memory, 1, dim=1)
        gathering = gathering.squeeze(1)
        m, d = keys.shape
        update = torch.zeros(m, d, dtype=q.dtype)
        for i in range(m):
            idx = torch.nonzero(gathering == i).squeeze(1)
            if idx.numel() == 0:
                continue
            w = score_query[idx, i] / torch.max(score_query[:, i])
            update[i] = torch.sum(w[:, None] * q[idx], dim=0)
        return F.normalize(update + keys, dim=1)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


@dataclass
class RefForward:
    pred: torch.Tensor
    queries: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor
    read: torch.Tensor
    block_output: torch.Tensor
    block_input: torch.Tensor


class MnadRef(nn.Module):
    """MNAD (prediction or reconstruction) with its memory and the configured block."""

    def __init__(self, cfg: Cfg):
        super().__init__()
        self.cfg = cfg
        self.enc = Encoder(cfg)
        self.memory = Memory(cfg.memory_items, cfg.ch(512))
        self.dec = Decoder(cfg)

    def forward(self, x: torch.Tensor) -> RefForward:
        fea, skips = self.enc(x)
        qmap = F.normalize(fea, dim=1)  # over channels, eps 1e-12
        b, d, h, w = qmap.shape
        queries = qmap.permute(0, 2, 3, 1).reshape(b * h * w, d)
        scores, weights, read = self.memory.read(queries)
        read_map = read.reshape(b, h, w, d).permute(0, 3, 1, 2)
        pred, block_out, block_in = self.dec(torch.cat([qmap, read_map], dim=1), skips)
        return RefForward(pred, queries, scores, weights, read, block_out, block_in)

    @property
    def has_block_loss(self) -> bool:
        return self.cfg.block.variant != "none"

    def load_rust_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Loads tensors named as the Rust ``ParamStore`` names them. Every tensor of the file
        must be used and every reference tensor must be given, except BatchNorm's
        ``num_batches_tracked`` counters (PyTorch bookkeeping, unused with a fixed momentum)."""
        own = self.state_dict()
        bookkeeping = {k for k in own if k.endswith("num_batches_tracked")}
        missing = sorted(set(own) - set(tensors) - bookkeeping)
        unexpected = sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise KeyError(f"weight names differ: missing {missing}, unexpected {unexpected}")
        for k, t in tensors.items():
            if tuple(t.shape) != tuple(own[k].shape):
                raise ValueError(
                    f"{k}: file has {tuple(t.shape)}, reference needs {tuple(own[k].shape)}"
                )
        self.load_state_dict(tensors, strict=False)


def load(fixture_dir: Path) -> MnadRef:
    """The reference model of a fixture directory (``config.json`` + ``model.safetensors``)."""
    from safetensors.torch import load_file

    cfg = Cfg.from_json(Path(fixture_dir) / "config.json")
    model = MnadRef(cfg)
    model.load_rust_tensors(load_file(str(Path(fixture_dir) / "model.safetensors")))
    return model
