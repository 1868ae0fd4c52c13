"""Unified sequence parallelism (Ulysses × Ring) layered on the DiT at its seams (ARCHITECTURE.md rule 5,
SPEC-flashtalk.md §7.2).

:func:`apply_sequence_parallel` changes no forward. It sets two seams of ``WanAudioTransformer``:

* ``model.parallel`` -- the model boundary: after the patch embedding the tokens are zero-padded to a multiple of
  the world size and split contiguously (rank ``r`` keeps ``[r*s, (r+1)*s)``); after the head the per-token
  outputs are all-gathered, so every rank unpatchifies the whole latent and stays in lock-step;
* ``block.self_attn.attention_fn`` -- the only layer that needs the whole sequence. Within a Ulysses group
  (``u`` consecutive ranks) an all-to-all scatters heads and gathers the group's ``u`` shards; across the ring
  group (``r`` ranks, one per Ulysses group) the K/V blocks travel round the ring with an exact log-sum-exp
  merge (:mod:`engine.parallel.ring`); a second all-to-all brings the heads back. ``u = world`` is pure Ulysses
  (plain attention, no ring), ``r = world`` pure ring (no all-to-all).

Everything else (embeddings, text/image cross-attention, FFN) is per token and runs on the local slice; the
audio cross-attention gets the rank's :class:`SeqShard` and attends per frame run. RoPE uses the shard's global
positions. Unlike the release, padded keys are excluded from self-attention, so any token count gives the
single-process result (the release's were wrong unless the count divided the world, SPEC §6.7).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from engine.models.audio_attention import SeqShard
from engine.models.transformer import WanAudioTransformer
from engine.ops.attention import attention
from engine.parallel.all_to_all import (
    gather_sequence,
    heads_to_sequence,
    sequence_to_heads,
)
from engine.parallel.mesh import ParallelContext
from engine.parallel.ring import ring_attention
from engine.parallel.sequence import padded_length, shard_for, split_sequence
from engine.parallel.xfuser_attention import SpBackend, XfuserSelfAttention, resolve_sp_backend

__all__ = ["SequenceParallel", "apply_sequence_parallel", "remove_sequence_parallel"]

log = logging.getLogger(__name__)


class SequenceParallel:
    """The boundary split/gather and the Ulysses × Ring self-attention of one rank, built once per model.

    ``split`` records the real token count of the current forward; ``self_attention`` excludes the keys past it.
    """

    def __init__(self, ctx: ParallelContext, *, backend: str | None = None,
                 kernel: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.ctx = ctx
        self.backend = backend
        self.kernel = kernel  # e.g. xfuser's (engine.parallel.xfuser_attention); used when no key is padding
        self._num_tokens: int | None = None

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, SeqShard]:
        """All tokens ``[B, L, dim]`` -> this rank's padded slice and its global range."""
        world, rank = self.ctx.world_size, self.ctx.rank
        self._num_tokens = tokens.shape[1]
        return split_sequence(tokens, rank, world), shard_for(rank, world, tokens.shape[1])

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        """This rank's ``[B, s, C]`` -> ``[B, P*s, C]`` on every rank (padding last; the caller trims it)."""
        return gather_sequence(tokens, self.ctx.group)

    def self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Local ``[B, s, H, D]`` q/k/v -> local ``[B, s, H, D]`` attention over the whole sequence."""
        if self._num_tokens is None:
            raise RuntimeError("SequenceParallel.self_attention ran before split(); call the model's forward")
        if self.kernel is not None and self._num_tokens == padded_length(self._num_tokens, self.ctx.world_size):
            return self.kernel(q, k, v)
        return self._native_attention(q, k, v, self._num_tokens)

    def _native_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Own all-to-all in the Ulysses group, own ring in the ring group; padded keys left out."""
        ctx, batch = self.ctx, q.shape[0]
        if ctx.ulysses_degree > 1:  # one all-to-all for q, k and v: [B, u*s, H/u, D] each
            q, k, v = sequence_to_heads(torch.cat([q, k, v]), ctx.ulysses_group).split(batch)
        if ctx.ring_degree > 1:
            out = ring_attention(q, k, v, total_tokens=num_tokens, group=ctx.ring_group, backend=self.backend)
        else:
            padded = q.shape[1]
            if padded != padded_length(num_tokens, ctx.world_size):
                raise RuntimeError(f"self-attention got {padded} tokens after the all-to-all; expected the split's")
            out = attention(q, k, v, backend=self.backend, k_len=None if padded == num_tokens else num_tokens)
        return heads_to_sequence(out, ctx.ulysses_group) if ctx.ulysses_degree > 1 else out


def apply_sequence_parallel(
    model: WanAudioTransformer, ctx: ParallelContext, *, backend: str | None = None, sp_backend: SpBackend = "native"
) -> SequenceParallel:
    """Install sequence parallelism on ``model`` in place (every rank calls it with its own ``ctx``).

    ``sp_backend``: ``native`` (own all-to-all and ring), ``xfuser`` (xDiT's kernel, CUDA only) or ``auto``.
    """
    heads = model.config.num_heads
    if heads % ctx.ulysses_degree:
        raise ValueError(
            f"Ulysses degree {ctx.ulysses_degree} does not divide the model's {heads} heads; "
            f"use a divisor of {heads} (the ring degree takes the rest of the world)"
        )
    kernel = None
    if ctx.world_size > 1 and resolve_sp_backend(sp_backend) == "xfuser":
        kernel = XfuserSelfAttention(ctx)
    parallel = SequenceParallel(ctx, backend=backend, kernel=kernel)
    model.parallel = parallel
    for block in model.blocks:
        block.self_attn.attention_fn = parallel.self_attention
    log.info("sequence parallel: rank %d of %d (ulysses %d x ring %d)", ctx.rank, ctx.world_size,
             ctx.ulysses_degree, ctx.ring_degree)
    return parallel


def remove_sequence_parallel(model: WanAudioTransformer) -> None:
    """Undo :func:`apply_sequence_parallel`: the model runs every token in this process again."""
    model.parallel = None
    for block in model.blocks:
        block.self_attn.attention_fn = None
