"""Join the torchrun group the daemon launched and split the engine's models across it.

``engine.flashtalk.world_size = N`` makes the daemon start the engine worker as ``torchrun --nproc_per_node=N``;
every rank builds the same engine and calls :func:`parallelize`: the DiT gets Ulysses × Ring sequence parallelism
(degrees as released -- Ulysses ``gcd(N, heads)``, ring the rest -- or as configured) and the VAE, unless
``parallel_vae`` is off, is split into bands of rows (:mod:`engine.parallel.vae`). nccl on CUDA, gloo on CPU
(tests, the tiny-random preset).
"""
from __future__ import annotations

import logging

import torch

from engine.models.transformer import WanAudioTransformer
from engine.models.vae import WanVAE
from engine.parallel.mesh import ParallelContext, init_parallel, resolve_degrees
from engine.parallel.ranks import torchrun_rank
from engine.parallel.usp import apply_sequence_parallel
from engine.parallel.vae import apply_parallel_vae
from engine.parallel.xfuser_attention import SpBackend

__all__ = ["parallelize"]

log = logging.getLogger(__name__)


def parallelize(dit: WanAudioTransformer, world_size: int, *, timeout_s: float = 120.0, ulysses_degree: int = 0,
                ring_degree: int = 0, vae: WanVAE | None = None, sp_backend: SpBackend = "auto") -> ParallelContext | None:
    """Join the group and split ``dit`` (and ``vae`` when given) across it; None for one process.

    Raises ValueError naming the fix (wrong process count, degrees that do not fit the world or the heads).
    """
    if world_size == 1:
        return None
    rank, env_world = torchrun_rank()
    if env_world != world_size:
        raise ValueError(f"engine.flashtalk.world_size={world_size} needs {world_size} processes started by torchrun "
                         f"(the daemon does this); this process sees WORLD_SIZE={env_world}")
    heads = dit.config.num_heads
    ulysses, ring = resolve_degrees(world_size, heads, ulysses_degree, ring_degree)  # fail before joining
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    ctx = init_parallel(world_size, rank, backend, "env://", timeout_s, num_heads=heads,
                        ulysses_degree=ulysses, ring_degree=ring)
    apply_sequence_parallel(dit, ctx, sp_backend=sp_backend)
    if vae is not None:
        apply_parallel_vae(vae, rank=rank, world=world_size, group=ctx.group)
    return ctx
