"""Process-group set-up and the parallel degrees of sequence parallelism (SPEC-flashtalk.md §7.1).

The release's ``get_parallel_degree(world, 40)``: Ulysses degree ``gcd(world, heads)``, ring degree
``world // ulysses`` (1->(1,1), 2->(2,1), 4->(4,1), 6->(2,3), 8->(8,1), 16->(8,2)); either degree may be set
explicitly instead (``engine.flashtalk.ulysses_degree`` / ``ring_degree``). The ranks form a 2-D mesh as
xDiT/yunchang lay it out ("Ulysses low"): Ulysses groups are ``u`` consecutive ranks (``[i*u, (i+1)*u)``), ring
groups take one rank from each (``{j, j+u, j+2u, ...}``), so the all-to-alls stay between neighbouring GPUs and
only the ring's K/V hops cross the larger distance.

Unlike the release (``init_process_group(timeout=7 days)``) the timeout is the caller's (from config): a rank that
died must fail its peers within minutes, not hang them for a week.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "ParallelContext",
    "destroy_parallel",
    "init_parallel",
    "resolve_degrees",
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


def resolve_degrees(world_size: int, num_heads: int = RELEASED_HEADS, ulysses: int = 0, ring: int = 0) -> tuple[int, int]:
    """``(ulysses, ring)`` for ``world_size``: the release's gcd rule where both are 0, else the given one(s).

    Raises ValueError naming the fix when the degrees do not multiply to the world or Ulysses does not divide
    the heads.
    """
    if world_size < 1 or ulysses < 0 or ring < 0:
        raise ValueError(f"need world_size >= 1 and degrees >= 0, got {world_size}, {ulysses}, {ring}")
    if ulysses == 0 and ring == 0:
        ulysses = ulysses_degree_for(world_size, num_heads)
    if ulysses == 0:
        ulysses = world_size // ring if world_size % ring == 0 else 0
    if ring == 0:
        ring = world_size // ulysses if ulysses and world_size % ulysses == 0 else 0
    if ulysses * ring != world_size:
        raise ValueError(f"engine.flashtalk.ulysses_degree ({ulysses}) x ring_degree ({ring}) must equal world_size "
                         f"({world_size}); set both to 0 for the release's choice")
    if num_heads % ulysses:
        raise ValueError(f"Ulysses degree {ulysses} does not divide the model's {num_heads} heads; use a divisor of "
                         f"{num_heads} (ring degree takes the rest), or 0 for gcd(world, heads)")
    return ulysses, ring


@dataclass(frozen=True)
class ParallelContext:
    """Where this process sits: its rank, the degrees, its process groups and its device.

    ``group`` spans every sequence-parallel rank (the model-boundary split and gather); ``ulysses_group`` the ``u``
    ranks that exchange heads (the all-to-alls); ``ring_group`` the ``r`` ranks that pass K/V round the ring. A
    degree-1 axis needs no group; a full-world axis defaults to ``group``.
    """

    rank: int
    world_size: int
    ulysses_degree: int
    ring_degree: int
    group: dist.ProcessGroup | None
    device: torch.device
    ulysses_group: dist.ProcessGroup | None = None
    ring_group: dist.ProcessGroup | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world of {self.world_size}")
        if self.ulysses_degree * self.ring_degree != self.world_size:
            raise ValueError(
                f"ulysses {self.ulysses_degree} x ring {self.ring_degree} must equal world {self.world_size}"
            )
        if self.ulysses_group is None and self.ring_degree == 1:
            object.__setattr__(self, "ulysses_group", self.group)
        if self.ring_group is None and self.ulysses_degree == 1:
            object.__setattr__(self, "ring_group", self.group)

    @property
    def ulysses_rank(self) -> int:
        """This rank's place in its Ulysses group (its head group between the all-to-alls)."""
        return self.rank % self.ulysses_degree

    @property
    def ring_rank(self) -> int:
        """This rank's place in its ring group (which block of ``u`` sequence shards it gathers)."""
        return self.rank // self.ulysses_degree

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
    local = int(os.environ.get("LOCAL_RANK", rank))  # torchrun's per-node index; the release's cuda:<rank> otherwise
    device = torch.device("cuda", local % count)
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
    ulysses_degree: int = 0,
    ring_degree: int = 0,
) -> ParallelContext:
    """Join the process group (when ``world_size > 1``) and return this rank's :class:`ParallelContext`.

    ``init_method`` is ``env://`` (torchrun), ``tcp://host:port`` or ``file:///path``. The degrees follow
    :func:`resolve_degrees`; with both above 1 the 2-D mesh's groups are created (every rank creates every group,
    in the same order, as torch.distributed requires).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    ulysses, ring = resolve_degrees(world_size, num_heads, ulysses_degree, ring_degree)
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
    world = dist.group.WORLD
    ulysses_group, ring_group = _mesh_groups(rank, ulysses, ring) if ulysses > 1 and ring > 1 else (None, None)
    log.info("parallel: rank %d/%d, ulysses %d x ring %d, backend %s, %s", rank, world_size, ulysses, ring, backend,
             device)
    return ParallelContext(rank, world_size, ulysses, ring, world, device, ulysses_group, ring_group)


def _mesh_groups(rank: int, ulysses: int, ring: int) -> tuple[dist.ProcessGroup, dist.ProcessGroup]:
    """This rank's Ulysses and ring groups of the ``ring x ulysses`` mesh (all groups made on every rank)."""
    mine_u = mine_r = None
    for i in range(ring):
        group = dist.new_group([i * ulysses + j for j in range(ulysses)])
        if rank // ulysses == i:
            mine_u = group
    for j in range(ulysses):
        group = dist.new_group([j + i * ulysses for i in range(ring)])
        if rank % ulysses == j:
            mine_r = group
    assert mine_u is not None and mine_r is not None
    return mine_u, mine_r


def destroy_parallel(ctx: ParallelContext) -> None:
    """Leave the process group (no-op for a single process).

    Barrier first: a rank that tears gloo down while a peer still finishes the last collective aborts that peer
    ("terminate called without an active exception", seen in about a third of the CPU test runs without it).
    """
    if ctx.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
