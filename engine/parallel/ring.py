"""Ring attention: the sequence split across ranks, K/V shards passed round the ring, partial results merged
exactly with their log-sum-exp (SPEC-flashtalk.md §7.2's "Ring" degree; the release uses yunchang's).

Each rank keeps its query shard. In step ``i`` it attends to the K/V shard that started on rank ``rank - i``
(sending its current K/V to the next rank and receiving the previous rank's), and folds the partial output into
the running one with the standard online-softmax merge: ``lse = logaddexp(lse_a, lse_b)``,
``out = out_a·e^(lse_a-lse) + out_b·e^(lse_b-lse)``. After ``P`` steps every query has seen every key, so the
result equals full attention up to fp32 rounding. Keys past the real token count (the zero padding that makes
the sequence divisible) are left out: they are always the tail of a block, so the block is cut to its valid
prefix (no mask, so the flash kernels apply) and a block of padding alone contributes nothing. The next block is
already on its way while the current one is attended to.

The partial attention is :func:`engine.ops.attention.attention_with_lse` (PyTorch's flash kernels, which return
the LSE, on CUDA and CPU). :mod:`engine.parallel.usp` calls :func:`ring_attention` inside the ring group of the
Ulysses × Ring mesh (pure ring when the Ulysses degree is 1).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from engine.ops.attention import attention_with_lse

__all__ = ["merge_partials", "partial_attention", "ring_attention"]


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid_keys: int | None = None, *,
                      backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``[B, Sq, H, D]`` queries over one K/V block: (output ``[B, Sq, H, D]`` fp32, lse ``[B, H, Sq]``).

    Only the first ``valid_keys`` keys take part (all when None); a block with none gives lse ``-inf`` and zeros.
    """
    if valid_keys is not None and valid_keys < k.shape[1]:
        if valid_keys <= 0:
            lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), float("-inf"), device=q.device)
            return torch.zeros(q.shape, dtype=torch.float32, device=q.device), lse
        k, v = k[:, :valid_keys], v[:, :valid_keys]
    out, lse = attention_with_lse(q, k, v, backend=backend)
    return out.float(), lse.float()


def merge_partials(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
                   lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-exact merge of two partial attentions over disjoint key sets."""
    lse = torch.logaddexp(lse_a, lse_b)
    w_a = torch.exp(lse_a - lse).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)  # [B, Sq, H, 1]
    w_b = torch.exp(lse_b - lse).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)
    return out_a * w_a + out_b * w_b, lse


def _start_exchange(tensor: torch.Tensor, group: dist.ProcessGroup | None) -> tuple[torch.Tensor, list]:
    """Start sending ``tensor`` to the next rank of the ring and receiving the previous rank's (non-blocking)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    received = torch.empty_like(tensor)
    to_next = dist.P2POp(dist.isend, tensor.contiguous(), dist.get_global_rank(group, (rank + 1) % world) if group
                         else (rank + 1) % world, group)
    from_prev = dist.P2POp(dist.irecv, received, dist.get_global_rank(group, (rank - 1) % world) if group
                           else (rank - 1) % world, group)
    return received, dist.batch_isend_irecv([to_next, from_prev])


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, total_tokens: int,
                   group: dist.ProcessGroup | None = None, backend: str | None = None) -> torch.Tensor:
    """This rank's ``[B, s, H, D]`` q/k/v shard -> its ``[B, s, H, D]`` output over the whole (padded) sequence.

    ``total_tokens``: the real token count (keys at or past it are padding and masked).
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    shard = q.shape[1]
    kv = torch.stack([k, v])
    out = lse = None
    for step in range(world):
        # The next block travels while this one is attended to (communication hidden behind compute).
        incoming, requests = _start_exchange(kv, group) if step + 1 < world else (kv, [])
        owner = (rank - step) % world
        valid = min(shard, max(0, total_tokens - owner * shard))  # padding is the tail of the last block(s)
        part, part_lse = partial_attention(q, kv[0], kv[1], valid, backend=backend)
        out, lse = (part, part_lse) if out is None else merge_partials(out, lse, part, part_lse)
        for request in requests:
            request.wait()
        kv = incoming
    assert out is not None
    return out.to(q.dtype)
