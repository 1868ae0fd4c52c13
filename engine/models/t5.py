"""umT5-XXL text encoder (encoder stack only), as FlashTalk runs it once per prompt.

Same module tree and state-dict keys as the released ``models_t5_umt5-xxl-enc-bf16.pth``
(Wan2.1 ``wan/modules/t5.py`` ``T5Encoder``, built by ``umt5_xxl(encoder_only=True)``)::

    token_embedding.weight                          (256384, 4096)
    blocks.{0..23}.norm1.weight                     (4096,)
    blocks.{i}.attn.{q,k,v,o}.weight                (4096, 4096)      no biases
    blocks.{i}.norm2.weight                         (4096,)
    blocks.{i}.ffn.gate.0.weight                    (10240, 4096)     GELU branch
    blocks.{i}.ffn.fc1.weight                       (10240, 4096)     linear branch
    blocks.{i}.ffn.fc2.weight                       (4096, 10240)
    blocks.{i}.pos_embedding.embedding.weight       (32, 64)          per-layer bias (umT5)
    norm.weight                                     (4096,)

What makes it umT5 rather than T5 (spec §3.1; same maths as transformers' ``UMT5EncoderModel``):
every layer owns its relative-position bias (32 buckets, bidirectional, max distance 128),
attention logits are **not** scaled by 1/sqrt(d), the norms are scale-only RMS norms computed
in fp32, and the FFN is gated: ``fc2(fc1(x) * gelu_tanh(gate(x)))``.

Numerics follow the release op for op (the output feeds the DiT for a whole session): logits and
bias are summed in the activation dtype, the softmax runs in fp32 and is cast back, and the tanh
GELU is the explicit formula evaluated in the activation dtype (not ``F.gelu``, which rounds once).
Dropout is omitted (inference only; it has no weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class T5Config:
    """Encoder hyper-parameters. Defaults are the released umT5-XXL encoder."""

    vocab_size: int = 256_384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10_240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    text_len: int = 512  # tokenizer pads/truncates to this many tokens

    def __post_init__(self) -> None:
        if self.dim_attn % self.num_heads:
            raise ValueError(f"dim_attn {self.dim_attn} is not divisible by num_heads {self.num_heads}")
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise ValueError(f"num_buckets must be an even number >= 4, got {self.num_buckets}")

    @classmethod
    def tiny(cls) -> T5Config:
        """A few-kilobyte configuration with the same structure, for CPU tests."""
        return cls(vocab_size=64, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2, text_len=16)


def _fp16_clamp(x: torch.Tensor) -> torch.Tensor:
    # The release clamps fp16 activations that overflowed (no-op for bf16/fp32).
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(x.dtype).max - 1000
        x = x.clamp(-limit, limit)
    return x


class T5RMSNorm(nn.Module):
    """Scale-only RMS norm ("T5LayerNorm"), statistics in fp32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.type_as(self.weight)
        return self.weight * x


class TanhGELU(nn.Module):
    """tanh-approximated GELU written out as the release does (each op in the input dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class T5RelativeBias(nn.Module):
    """Bucketed relative-position bias for one layer: ``(1, heads, Lq, Lk)``."""

    def __init__(self, num_buckets: int, num_heads: int, max_distance: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def buckets(self, rel_pos: torch.Tensor) -> torch.Tensor:
        """Bidirectional T5 bucketing of ``key_pos - query_pos``."""
        half = self.num_buckets // 2
        out = (rel_pos > 0).long() * half
        dist = rel_pos.abs()
        max_exact = half // 2
        # clamp(min=1) only avoids log(0); those entries take the exact branch below.
        log_ratio = torch.log(dist.clamp(min=1).float() / max_exact) / math.log(self.max_distance / max_exact)
        large = max_exact + (log_ratio * (half - max_exact)).long()
        large = large.clamp(max=half - 1)
        return out + torch.where(dist < max_exact, dist, large)

    def forward(self, len_q: int, len_k: int) -> torch.Tensor:
        device = self.embedding.weight.device
        rel_pos = torch.arange(len_k, device=device)[None, :] - torch.arange(len_q, device=device)[:, None]
        bias = self.embedding(self.buckets(rel_pos))  # (Lq, Lk, heads)
        return bias.permute(2, 0, 1).unsqueeze(0).contiguous()


class T5Attention(nn.Module):
    """Unscaled multi-head self-attention with an additive position bias and a key padding mask."""

    def __init__(self, dim: int, dim_attn: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim_attn // num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape[0], self.num_heads, self.head_dim
        q = self.q(x).view(b, -1, n, c)
        k = self.k(x).view(b, -1, n, c)
        v = self.v(x).view(b, -1, n, c)
        bias = pos_bias.to(x.dtype).expand(b, -1, -1, -1)
        if mask is not None:
            bias = bias.masked_fill(mask.view(b, 1, 1, -1) == 0, torch.finfo(x.dtype).min)
        logits = torch.einsum("binc,bjnc->bnij", q, k) + bias  # T5: no 1/sqrt(d) scaling
        probs = F.softmax(logits.float(), dim=-1).type_as(logits)
        out = torch.einsum("bnij,bjnc->binc", probs, v).reshape(b, -1, n * c)
        return self.o(out)


class T5GatedFFN(nn.Module):
    """``fc2(fc1(x) * gelu_tanh(gate(x)))``; ``gate`` is a Sequential so its key is ``gate.0``."""

    def __init__(self, dim: int, dim_ffn: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), TanhGELU())
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class T5Block(nn.Module):
    """Pre-norm self-attention + pre-norm gated FFN, with this layer's own position bias."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.norm1 = T5RMSNorm(cfg.dim, cfg.eps)
        self.attn = T5Attention(cfg.dim, cfg.dim_attn, cfg.num_heads)
        self.norm2 = T5RMSNorm(cfg.dim, cfg.eps)
        self.ffn = T5GatedFFN(cfg.dim, cfg.dim_ffn)
        self.pos_embedding = T5RelativeBias(cfg.num_buckets, cfg.num_heads, cfg.max_distance)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bias = self.pos_embedding(x.shape[1], x.shape[1])
        x = _fp16_clamp(x + self.attn(self.norm1(x), bias, mask))
        return _fp16_clamp(x + self.ffn(self.norm2(x)))


class UMT5Encoder(nn.Module):
    """umT5 encoder stack: token ids ``(B, L)`` + mask ``(B, L)`` -> hidden states ``(B, L, dim)``."""

    def __init__(self, cfg: T5Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or T5Config()
        self.token_embedding = nn.Embedding(self.cfg.vocab_size, self.cfg.dim)
        self.blocks = nn.ModuleList(T5Block(self.cfg) for _ in range(self.cfg.num_layers))
        self.norm = T5RMSNorm(self.cfg.dim, self.cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.token_embedding(ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    @torch.no_grad()
    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Encode padded prompts and trim each to its real token count (incl. EOS), as the release does.

        Returns one ``(L_real, dim)`` tensor per row of ``ids``.
        """
        states = self(ids, mask)
        lengths = mask.gt(0).sum(dim=1).tolist()
        return [row[:n] for row, n in zip(states, lengths)]
