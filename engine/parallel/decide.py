"""One decision for the whole group: rank 0 decides, every rank acts on rank 0's answer.

Control flow that leads into collectives (the DiT's all-to-alls, the parallel VAE's halo exchanges) must be
taken by every rank of a group, or the ranks' collectives stop lining up and the group hangs until the NCCL
timeout (or, worse, pairs one rank's regeneration pass with another's next chunk). A choice that reads a
per-rank input -- a wall clock, or floating-point metrics that are bit-equal only as long as every kernel is
deterministic -- is therefore made by rank 0 and broadcast with :func:`rank0_decides`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["group_size", "rank0_decides"]


def group_size(group: dist.ProcessGroup | None = None) -> int:
    """Ranks in ``group`` (the default group when None); 1 when no process group is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def rank0_decides(flags: Sequence[bool], group: dist.ProcessGroup | None = None) -> tuple[bool, ...]:
    """Rank 0's ``flags`` on every rank of ``group`` (the default group when None); ``flags`` as they are in a
    single process. Every rank of the group must call it at the same point (it is a collective)."""
    mine = tuple(bool(flag) for flag in flags)
    if group_size(group) == 1:
        return mine
    box = torch.tensor(mine, dtype=torch.uint8, device=_collective_device(group))
    dist.broadcast(box, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    return tuple(bool(value) for value in box.tolist())


def _collective_device(group: dist.ProcessGroup | None) -> torch.device:
    """Where a tensor for ``group``'s backend must live: this rank's GPU for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
