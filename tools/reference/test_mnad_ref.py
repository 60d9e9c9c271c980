#!/usr/bin/env python3
"""Self-checks of the PyTorch reference against the spec's own arithmetic (no Rust involved).

Run: python tools/reference/test_mnad_ref.py   (also works under pytest)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnad_ref  # noqa: E402


def _block_cfg(variant: str = "sspcab", k_prime: int = 1, dilation: int = 1) -> mnad_ref.BlockCfg:
    return mnad_ref.BlockCfg(variant, k_prime, dilation, 64, 4, 2, 128, 1e-6, "mse", 1.0, 0.1, True)


def test_masked_conv_receptive_field() -> None:
    """Spec 1.1: output (i, j) ignores the centre and the gap of d around it, and conv1 sees
    rows i-k'-d .. i-d-1 (likewise for the other corners)."""
    torch.manual_seed(0)
    for k_prime, d in [(1, 1), (2, 1), (1, 2)]:
        block = mnad_ref.SSPCAB(3, _block_cfg(k_prime=k_prime, dilation=d))
        h, w, (y0, x0) = 13, 14, (6, 7)
        x = torch.randn(1, 3, h, w)

        def pre_relu(t: torch.Tensor) -> torch.Tensor:
            # The sum of the four convolutions before the ReLU, through the official slicing.
            b = block.border
            tp = torch.nn.functional.pad(t, (block.pad,) * 4)
            return (
                block.conv1(tp[:, :, :-b, :-b])
                + block.conv2(tp[:, :, b:, :-b])
                + block.conv3(tp[:, :, :-b, b:])
                + block.conv4(tp[:, :, b:, b:])
            )

        base = pre_relu(x)[0, :, y0, x0]
        seen = set()
        for dy in range(-k_prime - d, k_prime + d + 1):
            for dx in range(-k_prime - d, k_prime + d + 1):
                xs = x.clone()
                xs[0, :, y0 + dy, x0 + dx] += 3.0
                if (pre_relu(xs)[0, :, y0, x0] - base).abs().max() > 1e-5:
                    seen.add((dy, dx))
        corner = [o for o in range(-k_prime - d, k_prime + d + 1) if abs(o) > d]
        expected = {(dy, dx) for dy in corner for dx in corner}
        assert seen == expected, (k_prime, d, sorted(seen), sorted(expected))
        assert block.masked_conv(x).shape == x.shape


def test_memory_update_hand_example() -> None:
    """Spec 2.4 on two items e1, e2 and queries e1, (0.6, 0.8), e2."""
    mem = mnad_ref.Memory(2, 2)
    mem.items.copy_(torch.eye(2))
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    new = mem.updated(q)
    # Item 0: only q0 has top-1 = 0, with weight 1 -> (2, 0) -> e1.
    # Item 1: q1 (weight e^0.8 / e^1) and q2 (weight 1) -> e2 + e^-0.2 q1 + q2, normalised.
    w = math.exp(-0.2)
    x, y = 0.6 * w, 2.0 + 0.8 * w
    n = math.hypot(x, y)
    want = torch.tensor([[1.0, 0.0], [x / n, y / n]])
    assert torch.allclose(new, want, atol=1e-6), (new, want)


def test_memory_losses_hand_example() -> None:
    """Compactness = element mean of (q - top1)^2; separateness = triplet, margin 1."""
    mem = mnad_ref.Memory(3, 2)
    mem.items.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    q = torch.tensor([[0.8, 0.6]])
    scores, _, _ = mem.read(q)
    compact, separate = mem.losses(q, scores)
    assert abs(compact.item() - ((0.2**2 + 0.6**2) / 2)) < 1e-6
    d_pos, d_neg = math.hypot(-0.2, 0.6), math.hypot(0.8, -0.4)
    assert abs(separate.item() - max(d_pos - d_neg + 1.0, 0.0)) < 1e-5


def test_summed_heads_equal_a_batched_form() -> None:
    """The per-head loop of the paper layer equals a batched multi-head computation whose
    head outputs are summed (so the loop's slicing is the head-major layout)."""
    torch.manual_seed(1)
    layer = mnad_ref.PaperLayer(_block_cfg("paper"))
    r = torch.randn(2, 5, 64)
    x = layer.ln1(r)
    q = layer.q(x).reshape(2, 5, 4, 16).transpose(1, 2)
    k = layer.k(x).reshape(2, 5, 4, 16).transpose(1, 2)
    v = layer.v(x).reshape(2, 5, 4, 64).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    p = r + (att @ v).sum(1)
    want = p + layer.fc2(torch.relu(layer.fc1(layer.ln2(p))))
    assert torch.allclose(layer(r), want, atol=1e-5)


if __name__ == "__main__":
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    failed = 0
    for t in tests:
        try:
            t()
            print(f"ok   {t.__name__}")
        except AssertionError as e:
            failed += 1
            print(f"FAIL {t.__name__}: {e}")
    print(f"reference self-test: {len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
