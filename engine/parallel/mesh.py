"""Process-group set-up and the parallel degrees of sequence parallelism (SPEC-flashtalk.md §7.1).

The release's ``get_parallel_degree(world, 40)``: Ulysses degree ``gcd(world, heads)``, ring degree
``world // ulysses`` (1->(1,1), 2->(2,1), 4->(4,1), 6->(2,3), 8->(8,1), 16->(8,2)). Only the Ulysses part is
built here, so a world whose ring degree would exceed 1 is refused with the sizes that work.

Unlike the release (``init_process_group(timeout=7 days)``) the timeout is the caller's (from config): a rank that
died must fail its peers within minutes, not hang them for a week.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "ParallelContext",
    "destroy_parallel",
    "init_parallel",
    "supported_world_sizes",
    "ulysses_degree_for",
]

log = logging.getLogger(__name__)

#: Heads of the released DiT (the release's hard-coded ``get_parallel_degree(world, 40)``).
RELEASED_HEADS = 40
DEFAULT_TIMEOUT_S = 600.0


def ulysses_degree_for(world_size: int, num_heads: int = RELEASED_HEADS) -> int:
    """``gcd(world_size, num_heads)``: the largest Ulysses degree that divides both."""
    if world_size < 1 or num_heads < 1:
        raise ValueError(f"world_size and num_heads must be >= 1, got {world_size}, {num_heads}")
    return math.gcd(world_size, num_heads)


def supported_world_sizes(num_heads: int = RELEASED_HEADS, limit: int = 64) -> list[int]:
    """World sizes up to ``limit`` that are pure Ulysses (ring degree 1): the divisors of ``num_heads``."""
    return [w for w in range(1, limit + 1) if num_heads % w == 0]


@dataclass(frozen=True)
class ParallelContext:
    """Where this process sits: its rank, the degrees, the Ulysses process group and its device."""

    rank: int
    world_size: int
    ulysses_degree: int
    ring_degree: int
    group: dist.ProcessGroup | None
    device: torch.device

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world of {self.world_size}")
        if self.ulysses_degree * self.ring_degree != self.world_size:
            raise ValueError(
                f"ulysses {self.ulysses_degree} x ring {self.ring_degree} must equal world {self.world_size}"
            )

    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> ParallelContext:
        """One process, no process group: sequence parallelism of degree 1 (for tests and uniform code paths)."""
        return cls(rank=0, world_size=1, ulysses_degree=1, ring_degree=1, group=None, device=torch.device(device))


def _device_for(backend: str, rank: int) -> torch.device:
    if backend != "nccl":
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count == 0:
        raise RuntimeError("backend 'nccl' needs CUDA devices; use backend='gloo' on CPU")
    device = torch.device("cuda", rank % count)  # single node, as the release (device cuda:<rank>)
    torch.cuda.set_device(device)
    return device


def init_parallel(
    world_size: int,
    rank: int,
    backend: str = "gloo",
    init_method: str = "env://",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    num_heads: int = RELEASED_HEADS,
) -> ParallelContext:
    """Join the process group (when ``world_size > 1``) and return this rank's :class:`ParallelContext`.

    ``init_method`` is ``env://`` (torchrun), ``tcp://host:port`` or ``file:///path``. Raises when the world
    would need ring attention (``gcd(world, num_heads) < world``), which is not implemented.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    ulysses = ulysses_degree_for(world_size, num_heads)
    if ulysses != world_size:
        raise ValueError(
            f"world size {world_size} needs ring degree {world_size // ulysses} over {num_heads} heads; only "
            f"Ulysses is implemented: use one of {supported_world_sizes(num_heads, limit=max(world_size, 8))}"
        )
    device = _device_for(backend, rank)
    if world_size == 1:
        return ParallelContext(rank, 1, 1, 1, None, device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend, init_method=init_method, world_size=world_size, rank=rank, timeout=timedelta(seconds=timeout_s)
        )
    elif dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise RuntimeError(
            f"torch.distributed is already initialised as rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"not {rank} of {world_size}; call destroy_parallel() first"
        )
    log.info("parallel: rank %d/%d, ulysses %d, ring 1, backend %s, %s", rank, world_size, ulysses, backend, device)
    return ParallelContext(rank, world_size, ulysses, 1, dist.group.WORLD, device)


def destroy_parallel(ctx: ParallelContext) -> None:
    """Leave the process group (no-op for a single process).

    Barrier first: a rank that tears gloo down while a peer still finishes the last collective aborts that peer
    ("terminate called without an active exception", seen in about a third of the CPU test runs without it).
    """
    if ctx.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
