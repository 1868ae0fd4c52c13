"""Put the DiT's blocks where a memory mode wants them, in their final format (:mod:`engine.memory`).

Block by block: onto the device (the FP8 swaps quantise there: milliseconds per block on a GPU instead of minutes
for 18.6 B weights on the CPU), FP8 GEMM layers (``engine.flashtalk.fp8``) then FP8 weight storage for the rest
(``fp8_weights``), and with ``offload`` back to the host, where :func:`~engine.ops.offload.offload_dit` moves them
into pinned memory. Going one block at a time, the GPU never holds more than one bf16 block beyond the mode's own
footprint, so the 14B model can be loaded on the host and placed on a 24 GB GPU.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from engine.memory import MemoryMode
from engine.ops.fp8 import quantize_block_fp8
from engine.ops.fp8_weights import store_fp8_weights
from engine.ops.offload import BlockOffloader, offload_dit

__all__ = ["place_dit"]

log = logging.getLogger(__name__)


def place_dit(
    transformer: nn.Module, device: torch.device | str, mode: MemoryMode, *, fp8_gemms: bool = False
) -> BlockOffloader | None:
    """Convert and place every block of ``transformer`` (a ``WanAudioTransformer``) for ``mode`` on ``device``;
    the non-block layers go to ``device`` too. Returns the offloader when ``mode.offload``."""
    device = torch.device(device)
    host = torch.device("cpu")
    converting = fp8_gemms or mode.fp8_weights
    gemms = weights = 0
    for block in transformer.blocks:  # type: ignore[attr-defined]
        if converting or not mode.offload:
            block.to(device)
        if fp8_gemms:
            gemms += quantize_block_fp8(block)
        if mode.fp8_weights:
            weights += store_fp8_weights(block)
        if mode.offload:
            block.to(host)
    if fp8_gemms:
        log.info("fp8: %d linear layers in e4m3 (per-channel weights, per-token activations)", gemms)
    if mode.fp8_weights:
        log.info("fp8 weights: %d further block linear layers stored in e4m3, computed in %s", weights,
                 transformer.dtype)  # type: ignore[attr-defined]
    if mode.offload:
        return offload_dit(transformer, device)
    transformer.to(device)
    return None
