"""``engine.flashtalk.compile``: regional ``torch.compile`` of the DiT.

Each of the DiT's identical blocks is compiled in place (``nn.Module.compile``: state-dict keys unchanged), so
Inductor traces one block and reuses the code for all 40 -- compile time of one block, not of the whole model,
and the fusions that matter here: adaLN modulation, the float32 LayerNorms/RMSNorms, RoPE, the gated residuals
and the GELU between the FFN GEMMs. The self-attention seam of sequence parallelism (collectives) is left out of
the graph.

Each block is one graph with no breaks (``tests/engine/test_compile_graph_breaks.py``): the attention kernel and
the FP8 GEMM are chosen outside the compiled code (:func:`engine.ops.attention.prepare_attention`, here before
compiling; ``Fp8Linear.scaled_mm``, when the layer is placed), so the forward only reads their results.

Modes, per block:

* ``default`` -- Inductor's fused kernels, no CUDA graphs.
* ``max-autotune`` -- also searches GEMM/attention configurations (long first chunk); compiled as
  ``max-autotune-no-cudagraphs``, because plain ``max-autotune`` turns on CUDA graphs too.
* ``reduce-overhead`` -- accepted, compiled as ``default`` with a warning. CUDA graphs per block do not work for a
  chain of blocks: each block's graph replays into the memory that holds its previous outputs, which the next
  block (or the next step) still reads -- PyTorch's open bug "accessing tensor output of CUDAGraphs that has been
  overwritten" (pytorch#152887). CUDA graphs belong only where the whole forward is captured as one graph, which
  this engine does not do; the name is kept so existing configs still start.

Shapes are fixed for a session (one resolution, one chunk length), so graphs are static (``dynamic=False``); a
new geometry recompiles once.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from engine.ops.attention import prepare_attention

__all__ = ["COMPILE_MODES", "CompileMode", "block_compile_mode", "compile_dit_blocks"]

log = logging.getLogger(__name__)

CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")

#: The ``torch.compile`` mode each configured mode becomes for per-block compilation: never one with CUDA graphs.
_BLOCK_MODES = {"default": "default", "reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def block_compile_mode(mode: str) -> str:
    """The ``torch.compile`` mode per-block compilation uses for the configured ``mode`` (warns for
    ``reduce-overhead``, which becomes ``default``); ``ValueError`` for an unknown mode."""
    if mode not in _BLOCK_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    if mode == "reduce-overhead":
        log.warning(
            "compile: mode reduce-overhead (CUDA graphs) is compiled as 'default': CUDA graphs per DiT block "
            "overwrite outputs the next block still reads (pytorch#152887). Set compile_mode: default "
            "(bench: --compile-mode default) to silence this."
        )
    return _BLOCK_MODES[mode]


def compile_dit_blocks(transformer: nn.Module, mode: CompileMode | str = "default") -> int:
    """Compile every block of ``transformer`` (a ``WanAudioTransformer``) in place; returns how many."""
    blocks = getattr(transformer, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(transformer).__name__} has no .blocks to compile")
    torch_mode = block_compile_mode(mode)
    prepare_attention()  # the flash-attn import probe, now: inside the graph it would break it at every call
    for block in blocks:
        attention_fn = block.self_attn.attention_fn
        if attention_fn is not None:  # sequence parallelism's collectives stay eager (a deliberate break)
            block.self_attn.attention_fn = torch.compiler.disable(attention_fn)
        block.compile(mode=torch_mode, dynamic=False, fullgraph=False)
    log.info("compile: %d DiT blocks with torch.compile(mode=%s)", len(blocks), torch_mode)
    return len(blocks)
