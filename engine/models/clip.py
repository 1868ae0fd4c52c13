"""CLIP ViT-H/14 visual tower (open-clip XLM-RoBERTa-large ViT-huge-14), as FlashTalk uses it.

FlashTalk feeds the DiT the tokens after the first 31 of the 32 transformer blocks
(Wan's ``use_31_block=True``): no last block, no post-norm, no head (spec §3.2).

State-dict keys are those of the ``visual.`` part of the released
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (Wan2.1 ``wan/modules/clip.py``
``VisionTransformer``) with the ``visual.`` prefix removed (``engine.loading.encoders`` strips it)::

    patch_embedding.weight                 (1280, 3, 14, 14)   no bias (pre_norm=True)
    cls_embedding                          (1, 1, 1280)
    pos_embedding                          (1, 257, 1280)
    pre_norm.{weight,bias}                 (1280,)
    transformer.{0..31}.norm1.{weight,bias}
    transformer.{i}.attn.to_qkv.{weight,bias}   (3840, 1280) / (3840,)   rows: q | k | v
    transformer.{i}.attn.proj.{weight,bias}     (1280, 1280) / (1280,)
    transformer.{i}.norm2.{weight,bias}
    transformer.{i}.mlp.0.{weight,bias}         (5120, 1280)  GELU (erf)
    transformer.{i}.mlp.2.{weight,bias}         (1280, 5120)
    post_norm.{weight,bias}                (1280,)
    head                                   (1280, 1024)

Block 31, ``post_norm`` and ``head`` are never used by ``forward``; they are kept so the released
key set loads strictly (a wrong file is caught, not half-loaded). They cost ~40 MB for a few seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CLIPVisionConfig:
    """Visual-tower hyper-parameters. Defaults are the released ViT-H/14."""

    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_ratio: int = 4
    num_heads: int = 16
    num_layers: int = 32
    out_dim: int = 1024  # width of the (unused) projection head
    eps: float = 1e-5
    output_layers: int = 31  # forward returns the tokens after this many blocks
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if not 1 <= self.output_layers <= self.num_layers:
            raise ValueError(f"output_layers must be in 1..{self.num_layers}, got {self.output_layers}")

    @property
    def num_tokens(self) -> int:
        """Class token + patch tokens (257 for ViT-H/14 at 224)."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def tiny(cls) -> CLIPVisionConfig:
        """Same structure at toy widths (28 px, patch 14 -> 5 tokens), for CPU tests."""
        return cls(image_size=28, patch_size=14, dim=32, num_heads=4, num_layers=3, out_dim=16, output_layers=2)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back (what the release gets under fp16 autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class CLIPSelfAttention(nn.Module):
    """Fused-QKV multi-head attention, softmax scale 1/sqrt(head_dim), no mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape
        q, k, v = self.to_qkv(x).view(b, s, 3, self.num_heads, c // self.num_heads).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, s, c))


class CLIPBlock(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.norm1 = FP32LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = CLIPSelfAttention(cfg.dim, cfg.num_heads)
        self.norm2 = FP32LayerNorm(cfg.dim, eps=cfg.eps)
        hidden = cfg.dim * cfg.mlp_ratio
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CLIPVisionEncoder(nn.Module):
    """Normalised pixels ``(B, 3, S, S)`` -> tokens ``(B, 1 + (S/P)^2, dim)`` after ``output_layers`` blocks."""

    def __init__(self, cfg: CLIPVisionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CLIPVisionConfig()
        self.patch_embedding = nn.Conv2d(3, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.pre_norm = FP32LayerNorm(cfg.dim, eps=cfg.eps)
        self.transformer = nn.ModuleList(CLIPBlock(cfg) for _ in range(cfg.num_layers))
        self.post_norm = FP32LayerNorm(cfg.dim, eps=cfg.eps)  # unused (see module docstring)
        self.head = nn.Parameter(torch.zeros(cfg.dim, cfg.out_dim))  # unused

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.patch_embedding.weight.dtype)
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pre_norm(x + self.pos_embedding)
        for block in self.transformer[: self.cfg.output_layers]:
            x = block(x)
        return x


def clip_preprocess(video: torch.Tensor, cfg: CLIPVisionConfig) -> torch.Tensor:
    """Reference frames in [-1, 1] -> CLIP input ``(B, 3, S, S)``, in the input's dtype (as released).

    Accepts ``(B, 3, 1, H, W)`` (the pipeline's reference video; the single frame is used) or
    ``(B, 3, H, W)``. Bicubic resize to S x S without keeping the aspect ratio
    (``align_corners=False``), map to [0, 1], then CLIP mean/std with mean/std held in the input dtype
    (torchvision ``Normalize`` semantics).
    """
    if video.dim() == 5:
        if video.shape[2] != 1:
            raise ValueError(f"expected a single-frame video (B, 3, 1, H, W), got {tuple(video.shape)}")
        video = video[:, :, 0]
    if video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) or (B, 3, 1, H, W) RGB in [-1, 1], got {tuple(video.shape)}")
    size = (cfg.image_size, cfg.image_size)
    x = F.interpolate(video, size=size, mode="bicubic", align_corners=False)
    x = x.mul(0.5).add(0.5)
    mean = torch.as_tensor(cfg.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(cfg.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub(mean).div(std)
