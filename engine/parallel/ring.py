"""Ring attention: the sequence split across ranks, K/V shards passed round the ring, partial results merged
exactly with their log-sum-exp (SPEC-flashtalk.md §7.2's "Ring" degree; the release uses yunchang's).

Each rank keeps its query shard. In step ``i`` it attends to the K/V shard that started on rank ``rank - i``
(sending its current K/V to the next rank and receiving the previous rank's), and folds the partial output into
the running one with the standard online-softmax merge: ``lse = logaddexp(lse_a, lse_b)``,
``out = out_a·e^(lse_a-lse) + out_b·e^(lse_b-lse)``. After ``P`` steps every query has seen every key, so the
result equals full attention up to fp32 rounding. Keys past the real token count (the zero padding that makes
the sequence divisible) are masked, as :mod:`engine.parallel.usp` does.

The partial attention here is the fp32 math path (it needs the log-sum-exp, which SDPA does not return); on
GPUs flash-attn's LSE-returning kernel belongs in :func:`partial_attention`. Layered on the DiT's seams like
Ulysses: :func:`apply_ring_parallel` sets ``model.parallel`` (split/gather) and every block's ``attention_fn``.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.distributed as dist

from engine.models.audio_attention import SeqShard
from engine.models.transformer import WanAudioTransformer
from engine.parallel.all_to_all import gather_sequence
from engine.parallel.mesh import ParallelContext
from engine.parallel.sequence import shard_for, split_sequence

__all__ = ["RingSequenceParallel", "apply_ring_parallel", "merge_partials", "partial_attention", "ring_attention"]

log = logging.getLogger(__name__)


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      key_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``[B, Sq, H, D]`` queries over one K/V block: (output ``[B, Sq, H, D]`` fp32, lse ``[B, H, Sq]``).

    ``key_valid`` (``[Sk]`` bool) masks keys; a block with no valid key gives lse ``-inf`` and a zero output.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid.view(1, 1, 1, -1), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - lse.unsqueeze(-1)).nan_to_num(0.0)  # all-masked rows: exp(-inf - -inf) = nan -> 0
    out = torch.einsum("bhqk,bkhd->bqhd", weights, v.float())
    return out, lse


def merge_partials(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
                   lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-exact merge of two partial attentions over disjoint key sets."""
    lse = torch.logaddexp(lse_a, lse_b)
    w_a = torch.exp(lse_a - lse).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)  # [B, Sq, H, 1]
    w_b = torch.exp(lse_b - lse).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)
    return out_a * w_a + out_b * w_b, lse


def _exchange(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Send ``tensor`` to the next rank of the ring and receive the previous rank's."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    received = torch.empty_like(tensor)
    to_next = dist.P2POp(dist.isend, tensor.contiguous(), dist.get_global_rank(group, (rank + 1) % world) if group
                         else (rank + 1) % world, group)
    from_prev = dist.P2POp(dist.irecv, received, dist.get_global_rank(group, (rank - 1) % world) if group
                           else (rank - 1) % world, group)
    for request in dist.batch_isend_irecv([to_next, from_prev]):
        request.wait()
    return received


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, total_tokens: int,
                   group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """This rank's ``[B, s, H, D]`` q/k/v shard -> its ``[B, s, H, D]`` output over the whole (padded) sequence.

    ``total_tokens``: the real token count (keys at or past it are padding and masked).
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    shard = q.shape[1]
    kv = torch.stack([k, v])
    out = lse = None
    for step in range(world):
        owner = (rank - step) % world
        positions = torch.arange(owner * shard, (owner + 1) * shard, device=q.device)
        valid = positions < total_tokens
        part, part_lse = partial_attention(q, kv[0], kv[1], None if bool(valid.all()) else valid)
        out, lse = (part, part_lse) if out is None else merge_partials(out, lse, part, part_lse)
        if step + 1 < world:
            kv = _exchange(kv, group)
    assert out is not None
    return out.to(q.dtype)


class RingSequenceParallel:
    """The boundary split/gather and the ring self-attention of one rank (pure ring: ``ulysses_degree == 1``)."""

    def __init__(self, ctx: ParallelContext) -> None:
        if ctx.ulysses_degree != 1 or ctx.ring_degree != ctx.world_size:
            raise ValueError(f"RingSequenceParallel needs ring degree = world ({ctx.world_size}) and Ulysses 1; "
                             f"got ulysses {ctx.ulysses_degree} x ring {ctx.ring_degree}")
        self.ctx = ctx
        self._num_tokens: int | None = None

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, SeqShard]:
        world, rank = self.ctx.ring_degree, self.ctx.rank
        self._num_tokens = tokens.shape[1]
        return split_sequence(tokens, rank, world), shard_for(rank, world, tokens.shape[1])

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        return gather_sequence(tokens, self.ctx.group)

    def self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._num_tokens is None:
            raise RuntimeError("RingSequenceParallel.self_attention ran before split(); call the model's forward")
        return ring_attention(q, k, v, total_tokens=self._num_tokens, group=self.ctx.group)


def apply_ring_parallel(model: WanAudioTransformer, ctx: ParallelContext) -> RingSequenceParallel:
    """Install ring sequence parallelism on ``model`` in place (every rank calls it with its own ``ctx``)."""
    parallel = RingSequenceParallel(ctx)
    model.parallel = parallel  # type: ignore[assignment]
    for block in model.blocks:
        block.self_attn.attention_fn = parallel.self_attention
    log.info("sequence parallel: rank %d of %d (ring %d)", ctx.rank, ctx.world_size, ctx.ring_degree)
    return parallel
