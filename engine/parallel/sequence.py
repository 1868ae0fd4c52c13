"""Pure sequence-split arithmetic of Ulysses sequence parallelism (SPEC-flashtalk.md §7.2).

The release splits the DiT tokens contiguously with ``torch.chunk(dim=1)`` after zero-padding them to a
multiple of the world size (``seq_len`` rounded up): rank ``r`` of ``P`` holds global tokens
``[r*s, (r+1)*s)`` with ``s = ceil(L / P)``. Positions past the last real token are padding; they belong to
no latent frame and are masked out of self-attention here (the release does not mask them, SPEC §6.7).

Nothing in this module communicates: these are the shapes and slices the collectives and the tests share.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.models.audio_attention import SeqShard

__all__ = [
    "gather_shards",
    "pad_sequence",
    "padded_length",
    "shard_for",
    "split_sequence",
    "tokens_per_rank",
]


def _check_world(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size and world_size >= 1, got rank {rank}, world {world_size}")


def tokens_per_rank(total_tokens: int, world_size: int) -> int:
    """``ceil(total / world)``: the tokens every rank holds after padding."""
    if total_tokens < 0 or world_size < 1:
        raise ValueError(f"need total_tokens >= 0 and world_size >= 1, got {total_tokens}, {world_size}")
    return math.ceil(total_tokens / world_size)


def padded_length(total_tokens: int, world_size: int) -> int:
    """The sequence length rounded up to a multiple of the world size (the release's ``seq_len``)."""
    return tokens_per_rank(total_tokens, world_size) * world_size


def shard_for(rank: int, world_size: int, total_tokens: int) -> SeqShard:
    """The contiguous global token range rank ``rank`` holds; it may run past ``total_tokens`` (padding)."""
    _check_world(rank, world_size)
    size = tokens_per_rank(total_tokens, world_size)
    return SeqShard(rank * size, (rank + 1) * size)


def pad_sequence(x: torch.Tensor, world_size: int, dim: int = 1) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` to a multiple of ``world_size`` (returned as is when already one)."""
    length = x.shape[dim]
    extra = padded_length(length, world_size) - length
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, extra]
    return F.pad(x, pad)


def split_sequence(x: torch.Tensor, rank: int, world_size: int, dim: int = 1) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of ``x`` along ``dim`` after padding (a view when no padding is needed)."""
    shard = shard_for(rank, world_size, x.shape[dim])
    return pad_sequence(x, world_size, dim).narrow(dim, shard.start, shard.stop - shard.start)


def gather_shards(shards: list[torch.Tensor], total_tokens: int | None = None, dim: int = 1) -> torch.Tensor:
    """Concatenate the ranks' slices in rank order and drop the padding past ``total_tokens`` (if given)."""
    if not shards:
        raise ValueError("gather_shards needs at least one shard")
    sizes = {s.shape[dim] for s in shards}
    if len(sizes) != 1:
        raise ValueError(f"every rank must hold the same number of tokens, got sizes {sorted(sizes)}")
    full = torch.cat(shards, dim=dim)
    if total_tokens is None:
        return full
    if total_tokens > full.shape[dim]:
        raise ValueError(f"total_tokens {total_tokens} exceeds the {full.shape[dim]} gathered tokens")
    return full.narrow(dim, 0, total_tokens)
