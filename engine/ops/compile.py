"""``engine.flashtalk.compile``: regional ``torch.compile`` of the DiT.

Each of the DiT's identical blocks is compiled in place (``nn.Module.compile``: state-dict keys unchanged), so
Inductor traces one block and reuses the code for all 40 -- compile time of one block, not of the whole model,
and the fusions that matter here: adaLN modulation, the float32 LayerNorms/RMSNorms, RoPE, the gated residuals
and the GELU between the FFN GEMMs. The self-attention seam of sequence parallelism (collectives) is left out of
the graph. ``mode="reduce-overhead"`` adds CUDA graphs (the launch overhead of a 4-step loop of 40 blocks);
``max-autotune`` searches GEMM/attention configurations (long first chunk).

Shapes are fixed for a session (one resolution, one chunk length), so graphs are static (``dynamic=False``); a
new geometry recompiles once.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

__all__ = ["CompileMode", "compile_dit_blocks"]

log = logging.getLogger(__name__)

CompileMode = Literal["default", "reduce-overhead", "max-autotune"]


def compile_dit_blocks(transformer: nn.Module, mode: CompileMode = "default") -> int:
    """Compile every block of ``transformer`` (a ``WanAudioTransformer``) in place; returns how many."""
    blocks = getattr(transformer, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(transformer).__name__} has no .blocks to compile")
    for block in blocks:
        attention_fn = block.self_attn.attention_fn
        if attention_fn is not None:  # sequence parallelism's collectives stay eager
            block.self_attn.attention_fn = torch.compiler.disable(attention_fn)
        block.compile(mode=mode, dynamic=False, fullgraph=False)
    log.info("compile: %d DiT blocks with torch.compile(mode=%s)", len(blocks), mode)
    return len(blocks)
