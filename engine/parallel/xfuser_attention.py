"""xDiT (``xfuser``) as the sequence-parallel attention kernel -- the only module that imports xfuser.

The release computes the DiT's self-attention with ``xFuserLongContextAttention`` (yunchang's Ulysses all-to-all
plus its flash-attn ring, SPEC-flashtalk.md §7.2) after ``init_distributed_environment`` and
``initialize_model_parallel(sequence_parallel_degree, ring_degree, ulysses_degree)``. With the ``multigpu``
extra installed on CUDA, :class:`XfuserSelfAttention` does exactly that inside our seams: same contiguous split,
same "Ulysses low" rank mesh as :mod:`engine.parallel.mesh`, so it is a drop-in for the native path of
:mod:`engine.parallel.usp`. xfuser does not exclude padded keys, so the native path keeps any forward whose
token count does not divide the world.

xfuser cannot be imported without a GPU (research/integration.md §6: it needs triton and raises "No
Accelerators available" at import), so on CPU the probe reports why and the native path (own all-to-all and ring
over torch.distributed) runs; the CPU tests cover that math.
"""
from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Literal

import torch

from engine.parallel.mesh import ParallelContext

__all__ = ["SpBackend", "XfuserSelfAttention", "resolve_sp_backend", "xfuser_probe"]

log = logging.getLogger(__name__)

SpBackend = Literal["auto", "native", "xfuser"]
INSTALL_HINT = 'pip install "soulx-live[multigpu]" (needs CUDA)'


@functools.cache
def xfuser_probe() -> tuple[tuple[ModuleType, ModuleType] | None, str]:
    """Import xfuser's distributed state and long-context attention once: ``(modules, reason)``."""
    if not torch.cuda.is_available():
        return None, f"xfuser needs CUDA, which is not available here ({INSTALL_HINT} on a GPU machine)"
    try:
        state = importlib.import_module("xfuser.core.distributed")
        attn = importlib.import_module("xfuser.core.long_ctx_attention")
    except Exception as exc:  # ImportError, or xfuser's own NotImplementedError/RuntimeError at import
        return None, f"xfuser is not usable: {type(exc).__name__}: {exc} ({INSTALL_HINT})"
    return (state, attn), "using xfuser's xFuserLongContextAttention"


def resolve_sp_backend(requested: SpBackend) -> Literal["native", "xfuser"]:
    """``auto`` -> xfuser when it imports on CUDA, else native (reason logged once); ``xfuser`` insists."""
    if requested == "native":
        return "native"
    modules, reason = xfuser_probe()
    if modules is None:
        if requested == "xfuser":
            raise ValueError(f"engine.flashtalk.sp_backend=xfuser: {reason}; or set sp_backend=native")
        log.info("sequence parallel: native all-to-all/ring (%s)", reason)
        return "native"
    log.info("sequence parallel: %s", reason)
    return "xfuser"


class XfuserSelfAttention:
    """Ulysses × Ring self-attention by xfuser on ``ctx``'s mesh: local ``[B, s, H, D]`` in and out."""

    def __init__(self, ctx: ParallelContext) -> None:
        modules, reason = xfuser_probe()
        if modules is None:
            raise ValueError(f"engine.flashtalk.sp_backend=xfuser: {reason}")
        state, attn = modules
        # xfuser keeps its own groups (yunchang's "Ulysses low" layout, as ours) on top of the initialised world.
        state.init_distributed_environment(rank=ctx.rank, world_size=ctx.world_size)
        state.initialize_model_parallel(sequence_parallel_degree=ctx.world_size, ring_degree=ctx.ring_degree,
                                        ulysses_degree=ctx.ulysses_degree)
        self._attention = attn.xFuserLongContextAttention()
        log.info("xfuser attention: ulysses %d x ring %d", ctx.ulysses_degree, ctx.ring_degree)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        half = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16  # flash-attn kernels
        out = self._attention(None, query=q.to(half), key=k.to(half), value=v.to(half))
        return out.to(q.dtype)
