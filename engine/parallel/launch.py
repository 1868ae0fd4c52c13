"""Join the torchrun group the daemon launched and install sequence parallelism on the DiT.

``engine.flashtalk.world_size = N`` makes the daemon start the engine worker as ``torchrun --nproc_per_node=N``;
every rank builds the same engine and calls :func:`parallelize` on its DiT. The degrees follow the release: Ulysses
over ``gcd(N, heads)``; a world that the heads do not divide at all runs pure ring attention; mixed Ulysses × Ring
is refused with the sizes that work. nccl on CUDA, gloo on CPU (tests, the tiny-random preset).
"""
from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from engine.models.transformer import WanAudioTransformer
from engine.parallel.mesh import (
    ParallelContext,
    init_parallel,
    supported_world_sizes,
    ulysses_degree_for,
)
from engine.parallel.ring import apply_ring_parallel
from engine.parallel.usp import apply_sequence_parallel

__all__ = ["parallelize", "torchrun_rank"]

log = logging.getLogger(__name__)


def torchrun_rank() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment; ``(0, 1)`` outside a group."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def parallelize(dit: WanAudioTransformer, world_size: int, *, timeout_s: float = 120.0) -> ParallelContext | None:
    """Join the group and split ``dit`` across it; None for one process. Raises ValueError naming the fix."""
    if world_size == 1:
        return None
    rank, env_world = torchrun_rank()
    if env_world != world_size:
        raise ValueError(f"engine.flashtalk.world_size={world_size} needs {world_size} processes started by torchrun "
                         f"(the daemon does this); this process sees WORLD_SIZE={env_world}")
    heads = dit.config.num_heads
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    ulysses = ulysses_degree_for(world_size, heads)
    if ulysses == world_size:
        ctx = init_parallel(world_size, rank, backend, "env://", timeout_s, num_heads=heads)
        apply_sequence_parallel(dit, ctx)
        return ctx
    if ulysses == 1:
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method="env://", world_size=world_size, rank=rank,
                                    timeout=timedelta(seconds=timeout_s))
        device = torch.device("cuda", rank % torch.cuda.device_count()) if backend == "nccl" else torch.device("cpu")
        ctx = ParallelContext(rank, world_size, 1, world_size, dist.group.WORLD, device)
        apply_ring_parallel(dit, ctx)
        return ctx
    raise ValueError(f"world size {world_size} needs Ulysses {ulysses} x Ring {world_size // ulysses} over {heads} "
                     f"heads, which is not implemented; use one of {supported_world_sizes(heads, limit=16)}")
