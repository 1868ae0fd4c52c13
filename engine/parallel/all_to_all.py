"""The collectives of Ulysses sequence parallelism, on plain ``torch.distributed``.

The released code (SPEC-flashtalk.md §7.2) gets them from xDiT (``xfuser``'s ``xFuserLongContextAttention``),
which calls yunchang's ``SeqAllToAll4D``: before self-attention, scatter heads / gather sequence
(``[B, L/P, H, D] -> [B, L, H/P, D]``), attention on the whole sequence with ``H/P`` heads, then the inverse
(``[B, L, H/P, D] -> [B, L/P, H, D]``); the head's output is put together with an all-gather along the sequence.
This module is the same math on ``torch.distributed.all_to_all_single`` and ``all_gather`` (NCCL on GPU, gloo on
CPU), so the project needs neither xfuser nor yunchang. Rank ``r`` holds sequence chunk ``r`` and, between the
two all-to-alls, head group ``r`` (heads ``[r*H/P, (r+1)*H/P)``).

Inference only: the collectives are not differentiable. With a world of one every function returns its input.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["gather_sequence", "group_size", "heads_to_sequence", "sequence_to_heads"]

Group = dist.ProcessGroup | None


def group_size(group: Group) -> int:
    """Ranks in ``group`` (1 when torch.distributed is not initialised)."""
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size(group)


def _exchange(chunks: torch.Tensor, group: Group) -> torch.Tensor:
    """All-to-all over dim 0 of ``[P, ...]``: chunk ``j`` goes to rank ``j``; returns what each rank sent us."""
    chunks = chunks.contiguous()
    received = torch.empty_like(chunks)  # after contiguous(): empty_like keeps a permuted view's strides
    dist.all_to_all_single(received, chunks, group=group)
    return received


def sequence_to_heads(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """Scatter heads, gather sequence: ``[B, s, H, D]`` (this rank's tokens) -> ``[B, P*s, H/P, D]``."""
    world = group_size(group)
    if world == 1:
        return x
    batch, local, heads, dim = x.shape
    if heads % world:
        raise ValueError(f"{heads} heads do not split over {world} ranks; use a Ulysses degree dividing {heads}")
    chunks = x.reshape(batch, local, world, heads // world, dim).permute(2, 0, 1, 3, 4)  # P B s h D
    received = _exchange(chunks, group)  # [source rank = sequence chunk, B, s, h, D]
    return received.permute(1, 0, 2, 3, 4).reshape(batch, world * local, heads // world, dim)


def heads_to_sequence(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """Scatter sequence, gather heads: ``[B, P*s, H/P, D]`` -> ``[B, s, H, D]`` (the inverse of the above)."""
    world = group_size(group)
    if world == 1:
        return x
    batch, length, heads, dim = x.shape
    if length % world:
        raise ValueError(f"sequence of {length} tokens does not split over {world} ranks; pad it first")
    chunks = x.reshape(batch, world, length // world, heads, dim).permute(1, 0, 2, 3, 4)  # P B s h D
    received = _exchange(chunks, group)  # [source rank = head group, B, s, h, D]
    return received.permute(1, 2, 0, 3, 4).reshape(batch, length // world, world * heads, dim)


def gather_sequence(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """All-gather ``[B, s, ...]`` along dim 1 in rank order -> ``[B, P*s, ...]`` (the release's head gather)."""
    world = group_size(group)
    if world == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=1)
