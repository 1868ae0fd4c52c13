"""FP8 (e4m3) weight storage for the DiT blocks (``engine.flashtalk.fp8_weights``): half the memory, bf16 maths.

The 40 blocks hold 18.57 B of the DiT's 18.88 B parameters (SPEC-flashtalk.md §2.8), almost all of them in the 15
linear layers of each block. :class:`Fp8WeightLinear` keeps such a layer's weight as e4m3 with one float32 scale
per output channel (the same quantisation as :mod:`engine.ops.fp8`) and, at each call, dequantises it to the
activation dtype and runs the ordinary GEMM. So:

* the weights need 1 byte per element (+ 4 bytes per output row) instead of 2: the 14B DiT drops from ~37.8 GB to
  ~19.2 GB (table: :func:`engine.memory.memory_table`);
* it runs on any device: no FP8 tensor cores needed (Ampere GPUs, the CPU in tests); the cost is one transient
  dequantised weight (at most the FFN's 13824x5120, 142 MB in bf16) and an element-wise pass per layer per call;
* only the weights are rounded (activations stay bf16), so the error is that of e4m3 weights alone.

Layers already swapped to FP8 GEMMs (:class:`~engine.ops.fp8.Fp8Linear`, ``engine.flashtalk.fp8``) keep their
faster path; this converts the remaining ``nn.Linear`` layers of the blocks. Embeddings, the float32 time layers,
the head and the audio projection (0.31 B together) stay in their precision: they are small, and the release keeps
the time path in float32 for a reason (SPEC §2.3).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from engine.ops.fp8 import quantize_rows

__all__ = ["Fp8WeightLinear", "store_block_weights_fp8", "store_fp8_weights"]

log = logging.getLogger(__name__)


class Fp8WeightLinear(nn.Module):
    """``nn.Linear`` whose weight is stored e4m3 (per output channel scale) and dequantised at each call."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)  # [out, in] e4m3
        self.register_buffer("weight_scale", scale)  # [out, 1] float32
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight in ``dtype``: every e4m3 value is exact in bf16/fp16/fp32, so the one rounding (to ``dtype``)
        is that of the product with the scale."""
        return self.weight_fp8.to(dtype) * self.weight_scale.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 weights"


def store_fp8_weights(module: nn.Module) -> int:
    """Replace every plain ``nn.Linear`` inside ``module`` (one DiT block) with :class:`Fp8WeightLinear`; how many.

    In place and one way (the original weights are released). Subclasses of ``nn.Linear`` (float32 layers) and
    layers already in FP8 are left alone. Quantisation runs where the weights are, so a block moved to the GPU
    first quantises there in milliseconds.
    """
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:  # exact type: FP32Linear must keep its float32 weights
                setattr(parent, name, Fp8WeightLinear(child))
                count += 1
    return count


def store_block_weights_fp8(transformer: nn.Module) -> int:
    """:func:`store_fp8_weights` on every block of ``transformer``; how many layers."""
    count = sum(store_fp8_weights(block) for block in transformer.blocks)  # type: ignore[attr-defined]
    log.info("fp8 weights: %d block linear layers stored in e4m3 (per-channel scales), computed in bf16", count)
    return count
