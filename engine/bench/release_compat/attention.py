"""SDPA stand-ins for the attention kernels the released code calls (flash-attn varlen, xformers, xfuser).

Each computes the same attention as the kernel it replaces (same masks, same scale), in the dtype it is given:
the release casts to bf16 itself before calling flash-attn, so on the GPU the stand-in sees what the kernel would.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["BlockDiagonalMask", "flash_attn_varlen_func", "memory_efficient_attention", "sdpa_blhd"]


def sdpa_blhd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              scale: float | None = None, causal: bool = False) -> torch.Tensor:
    """SDPA on ``[B, L, H, D]`` tensors (the layout flash-attn and xformers use), output ``[B, Lq, H, D]``."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, scale=scale, is_causal=causal)
    return out.transpose(1, 2)


def flash_attn_varlen_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                           cu_seqlens_k: torch.Tensor, max_seqlen_q: int | None = None,
                           max_seqlen_k: int | None = None, dropout_p: float = 0.0,
                           softmax_scale: float | None = None, causal: bool = False,
                           window_size: tuple[int, int] = (-1, -1), deterministic: bool = False,
                           **_: Any) -> torch.Tensor:
    """flash-attn's packed varlen attention: ``q [total_q, H, D]`` split by ``cu_seqlens``; one SDPA per sequence."""
    if tuple(window_size) != (-1, -1):
        raise NotImplementedError("release_compat: sliding-window attention is not stood in (the release uses none)")
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs = [sdpa_blhd(q[None, bounds_q[i]:bounds_q[i + 1]], k[None, bounds_k[i]:bounds_k[i + 1]],
                      v[None, bounds_k[i]:bounds_k[i + 1]], scale=softmax_scale, causal=causal)[0]
            for i in range(len(bounds_q) - 1)]
    return torch.cat(outs, dim=0)


class BlockDiagonalMask:
    """xformers' ``BlockDiagonalMask``: query block i attends only to key block i (batch 1, packed)."""

    def __init__(self, q_seqlen: list[int], kv_seqlen: list[int]) -> None:
        self.q_seqlen, self.kv_seqlen = [int(n) for n in q_seqlen], [int(n) for n in kv_seqlen]

    @classmethod
    def from_seqlens(cls, q_seqlen: list[int], kv_seqlen: list[int] | None = None) -> BlockDiagonalMask:
        return cls(q_seqlen, q_seqlen if kv_seqlen is None else kv_seqlen)

    def materialize(self, device: torch.device) -> torch.Tensor:
        """The boolean ``[Lq, Lk]`` mask (True: may attend)."""
        q_ids = torch.repeat_interleave(torch.arange(len(self.q_seqlen), device=device),
                                        torch.tensor(self.q_seqlen, device=device))
        k_ids = torch.repeat_interleave(torch.arange(len(self.kv_seqlen), device=device),
                                        torch.tensor(self.kv_seqlen, device=device))
        return q_ids[:, None] == k_ids[None, :]


def memory_efficient_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attn_bias: BlockDiagonalMask | torch.Tensor | None = None, p: float = 0.0,
                               scale: float | None = None, op: Any = None) -> torch.Tensor:
    """xformers' attention on ``[B, M, H, K]``; a block-diagonal bias becomes a boolean mask."""
    mask = attn_bias.materialize(query.device) if isinstance(attn_bias, BlockDiagonalMask) else attn_bias
    return sdpa_blhd(query, key, value, mask=mask, scale=scale)


def release_flash_attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 q_lens: torch.Tensor | None = None, k_lens: torch.Tensor | None = None,
                                 dropout_p: float = 0.0, softmax_scale: float | None = None,
                                 q_scale: float | None = None, causal: bool = False,
                                 window_size: tuple[int, int] = (-1, -1), deterministic: bool = False,
                                 dtype: torch.dtype = torch.bfloat16, version: int | None = None) -> torch.Tensor:
    """The release's ``flash_attention`` (``[B, L, N, C]``, keys limited to ``k_lens``) in the input's own dtype.

    The release asserts CUDA and casts to bf16 there; the CPU dry run replaces the whole function so the
    attention runs in float32, as the golden reference did (its README, section 6).
    """
    if q_lens is not None:
        raise NotImplementedError("release_compat: q_lens is not stood in (the release passes None)")
    if q_scale is not None:
        q = q * q_scale
    out_dtype = q.dtype
    outs = []
    for b in range(q.size(0)):
        n = k.size(1) if k_lens is None else int(k_lens[b])
        outs.append(sdpa_blhd(q[b:b + 1], k[b:b + 1, :n].to(q.dtype), v[b:b + 1, :n].to(q.dtype),
                              scale=softmax_scale, causal=causal))
    return torch.cat(outs, dim=0).type(out_dtype)
