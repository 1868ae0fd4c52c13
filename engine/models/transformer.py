"""The audio-conditioned Wan DiT family: FlashTalk / InfiniteTalk (the release's multitalk ``WanModel``) and
SoulX-FlashHead Pro (the release's ``WanModelAudioProject``), one module chosen by ``DiTConfig.variant``.

SPEC-flashtalk.md §2. An image-to-video Wan2.1 DiT (patchify -> N blocks -> head -> unpatchify) whose blocks
add a frame-local audio cross-attention after the text+image cross-attention. State-dict keys are exactly the
released ones (SPEC §2.8), so the released diffusers folder loads strictly (``engine.loading.dit``).

Precision follows the release, so the same module runs in float32 (parity) or bf16 (GPU):

* the timestep sinusoid is computed in float64, the time embedding/projection and the head in float32 (the
  release runs them under ``autocast(float32)``), whatever the weights' dtype;
* LayerNorms (``norm1/2/3``, ``norm_x``, the head's) and the q/k RMSNorms compute in float32 and return the
  input dtype; adaLN modulation and the gated residuals are float32, then cast back;
* RoPE is computed in float64.

FlashHead (``variant="flashhead"``) is the same network with one per-block difference: no text/CLIP input and
no separate audio branch; the block's cross-attention (``cross_attn``: q/k/v/o with q/k RMSNorm, after the affine
``norm3``, ungated) attends from each latent frame's tokens to that frame's audio tokens (the audio projection's
width is the model's). ``text_embedding`` and ``audio_emb`` are released but unused. Its release computes in the
weights' dtype throughout (``release_fp32`` False): the timestep is cast to it before the sinusoid (bf16 turns
937.5 into 936), modulation, LayerNorms, time embedding and head run in it, and the velocity is returned in it.

RoPE tables are not parameters: they are computed per forward from the token grid and cached by (grid, device)
in a plain dict, so a model built on the meta device and loaded with ``assign=True`` needs no extra step.

Sequence-parallel seam: :meth:`DiTBlock.forward` takes the RoPE tables and a :class:`SeqShard` for the tokens
it holds; only the self-attention's ``attention`` call needs the whole sequence. ``WanAudioTransformer.parallel``
(default ``None``) is the boundary: when set, the forward calls its ``split(tokens)`` after the patch embedding
and its ``gather(out)`` after the head, and ``SelfAttention.attention_fn`` (default ``None``: the facade) replaces
the self-attention kernel. ``engine.parallel.usp.apply_sequence_parallel`` sets both.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.audio_attention import (
    AUDIO_CHANNELS,
    AudioCrossAttention,
    AudioProjection,
    SeqShard,
    frame_local_attention,
)
from engine.ops.attention import attention
from engine.ops.rope import apply_rope, rope_cos_sin

__all__ = [
    "CLIP_DIM",
    "CLIP_TOKENS",
    "FLASHHEAD_CLASS",
    "CrossContext",
    "DiTBlock",
    "DiTConfig",
    "WanAudioTransformer",
    "sinusoidal_embedding",
]

log = logging.getLogger(__name__)

#: CLIP ViT-H/14 width and token count the image projection takes (hard-coded in the release).
CLIP_DIM = 1280
CLIP_TOKENS = 257

# config.json keys written by diffusers or only used at initialisation.
_IGNORED_KEYS = frozenset({"_class_name", "_diffusers_version", "_name_or_path", "weight_init"})
#: The diffusers class name in a FlashHead DiT's config.json.
FLASHHEAD_CLASS = "WanModelAudioProject"
#: The audio projection FlashHead's release hard-codes (its config.json does not carry it).
FLASHHEAD_AUDIO_PROJ = {"intermediate_dim": 512, "output_dim": 1536, "context_tokens": 32}
VARIANTS = ("flashtalk", "flashhead")


@dataclass(frozen=True)
class DiTConfig:
    """Constructor arguments of the DiT. Defaults are the released SoulX-FlashTalk-14B model."""

    model_type: str = "i2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 36
    dim: int = 5120
    ffn_dim: int = 13824
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 40
    num_layers: int = 40
    window_size: tuple[int, int] = (-1, -1)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    audio_window: int = 5
    intermediate_dim: int = 512
    output_dim: int = 768
    context_tokens: int = 32
    vae_scale: int = 4
    norm_input_visual: bool = True
    norm_output_audio: bool = True
    variant: str = "flashtalk"  # "flashhead": audio-only cross-attention, in_dim 32 (see the module docstring)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))
        object.__setattr__(self, "window_size", tuple(int(v) for v in self.window_size))
        if self.model_type != "i2v":
            raise ValueError(
                f"the audio DiT is an image-to-video model: model_type must be 'i2v', got {self.model_type!r}"
            )
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 entries (t, h, w), got {self.patch_size}")
        if self.window_size != (-1, -1):
            raise ValueError(f"only global attention (window_size (-1, -1)) is supported, got {self.window_size}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even size")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "flashhead" and self.output_dim != self.dim:
            raise ValueError(
                f"FlashHead's audio tokens are its cross-attention context: the audio projection's output_dim "
                f"({self.output_dim}) must equal dim ({self.dim})"
            )
        if self.audio_window < 1 or self.vae_scale < 1:
            raise ValueError(f"audio_window and vae_scale must be >= 1, got {self.audio_window}, {self.vae_scale}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def release_fp32(self) -> bool:
        """Whether the release computes time embedding, modulation, LayerNorms and head in float32 (FlashTalk)
        or in the weights' dtype (FlashHead)."""
        return self.variant == "flashtalk"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "DiTConfig":
        """Build from a diffusers config dict; absent keys take the released defaults, unknown keys warn.

        A FlashHead ``config.json`` (class ``WanModelAudioProject``) gives ``variant="flashhead"``, its
        ``vae_stride[0]`` the audio windows' ``vae_scale`` and the release's hard-coded audio projection
        (:data:`FLASHHEAD_AUDIO_PROJ`) unless ``raw`` overrides it.
        """
        if raw.get("_class_name") == FLASHHEAD_CLASS or raw.get("variant") == "flashhead":
            raw = dict(raw)
            if raw.pop("has_image_input", False):
                raise ValueError("has_image_input true: FlashHead Pro takes no CLIP input (the released config says false)")
            stride = raw.pop("vae_stride", None)
            if stride is not None:
                raw.setdefault("vae_scale", int(stride[0]))
            raw = {**FLASHHEAD_AUDIO_PROJ, **raw, "variant": "flashhead"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in raw if k not in known and k not in _IGNORED_KEYS)
        if unknown:
            log.warning("DiT config: ignoring unknown key(s) %s", unknown)
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_json(cls, path: Path | str) -> "DiTConfig":
        """Read a diffusers ``config.json`` (the released DiT folder's)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object")
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


class SequenceSplit(Protocol):
    """The model-boundary seam of sequence parallelism (implemented by ``engine.parallel.usp``)."""

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, SeqShard]:
        """All tokens ``[B, L, dim]`` -> this worker's ``[B, L_local, dim]`` and their global range."""
        ...

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        """This worker's ``[B, L_local, C]`` -> ``[B, >= L, C]`` (all tokens first, padding after)."""
        ...


CrossKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # text k, text v, image k, image v


@dataclass(frozen=True)
class CrossContext:
    """Every block's text and image cross-attention keys/values for one (context, clip_fea) pair.

    They depend on the prompt and the avatar only, so a session computes them once
    (:meth:`WanAudioTransformer.context_kv`) instead of in each of its 4 steps x N chunks: per forward of the 14B
    model that is the text/image embeddings plus 4 projections of 769 tokens in each of 40 blocks (about 3.2
    TFLOP, 0.7 % of a step) for ~0.6 GB of bf16 K/V held per session.
    """

    kv: tuple[CrossKV, ...]
    batch: int


# -- building blocks -------------------------------------------------------------------------------------------
def sinusoidal_embedding(dim: int, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, dim]`` ``[cos(t f_k) | sin(t f_k)]`` with ``f_k = 10000^(-k/(dim/2))``, computed in float64, returned in
    ``dtype`` (one rounding: FlashHead's release casts the float64 result straight to its compute dtype)."""
    half = dim // 2
    position = t.to(torch.float64).reshape(-1)
    freqs = torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=t.device).div(half))
    angles = torch.outer(position, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(dtype)


class FP32Linear(nn.Linear):
    """A Linear computed in float32 whatever its weights' dtype (the release's ``autocast(float32)`` regions).

    ``fp32=False`` (FlashHead's release): a plain Linear in the weights' dtype.
    """

    def __init__(self, *args: Any, fp32: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp32:
            return super().forward(x.to(self.weight.dtype))
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), self.weight.float(), bias)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, returned in the input dtype (the release's ``WanLayerNorm``).

    ``fp32=False`` (FlashHead's release): a plain LayerNorm in the input's dtype.
    """

    def __init__(self, *args: Any, fp32: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp32:
            weight = None if self.weight is None else self.weight.to(x.dtype)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, normalised in float32, cast back, then scaled (the release's ``WanRMSNorm``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _qk_norm(dim: int, eps: float, enabled: bool) -> nn.Module:
    return RMSNorm(dim, eps) if enabled else nn.Identity()


class _AttentionProjections(nn.Module):
    """The projections both attentions start from: keys ``q k v o norm_q norm_k``, in the release's order."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = _qk_norm(cfg.dim, cfg.eps, cfg.qk_norm)
        self.norm_k = _qk_norm(cfg.dim, cfg.eps, cfg.qk_norm)


class SelfAttention(_AttentionProjections):
    """Self-attention with full-width q/k RMSNorm and 3-axis RoPE. Keys ``q k v o norm_q norm_k``."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__(cfg)
        # Not state: the kernel over ``[B, L, H, D]``; None = the attention facade (sequence parallelism swaps it).
        self.attention_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        shape = (*x.shape[:2], self.num_heads, self.head_dim)
        q = apply_rope(self.norm_q(self.q(x)).view(shape), *rope).to(x.dtype)
        k = apply_rope(self.norm_k(self.k(x)).view(shape), *rope).to(x.dtype)
        v = self.v(x).view(shape)
        return self.o((self.attention_fn or attention)(q, k, v).flatten(2))


class TextImageCrossAttention(_AttentionProjections):
    """Cross-attention to the text and the CLIP image tokens, summed before one output projection.

    Keys ``q k v o k_img v_img norm_q norm_k norm_k_img``. No key mask: zero-padded text rows take part.
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__(cfg)
        self.k_img = nn.Linear(cfg.dim, cfg.dim)
        self.v_img = nn.Linear(cfg.dim, cfg.dim)
        self.norm_k_img = _qk_norm(cfg.dim, cfg.eps, cfg.qk_norm)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.num_heads, self.head_dim))

    def project(self, text: torch.Tensor, image: torch.Tensor) -> CrossKV:
        """The keys and values of the text and image tokens (constant while the prompt and avatar are)."""
        return (self._heads(self.norm_k(self.k(text))), self._heads(self.v(text)),
                self._heads(self.norm_k_img(self.k_img(image))), self._heads(self.v_img(image)))

    def forward(self, x: torch.Tensor, text: torch.Tensor | None, image: torch.Tensor | None,
                kv: CrossKV | None = None) -> torch.Tensor:
        q = self._heads(self.norm_q(self.q(x)))
        if kv is None:
            if text is None or image is None:
                raise ValueError("cross-attention needs the text and image tokens or their precomputed K/V")
            kv = self.project(text, image)
        k_text, v_text, k_image, v_image = kv
        text_out = attention(q, k_text, v_text)
        image_out = attention(q, k_image, v_image)
        return self.o(text_out.flatten(2) + image_out.flatten(2))


class FrameAudioCrossAttention(_AttentionProjections):
    """FlashHead's cross-attention: each latent frame's tokens attend to that frame's audio tokens.

    Keys ``q k v o norm_q norm_k`` (the text cross-attention's, without the image branch); q and k are
    RMS-normalised over the full width; no RoPE. Works on a sequence-parallel shard like the FlashTalk audio branch.
    """

    def _kv(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heads = (self.num_heads, self.head_dim)
        return self.norm_k(self.k(frames)).unflatten(-1, heads), self.v(frames).unflatten(-1, heads)

    def forward(
        self, x: torch.Tensor, audio_tokens: torch.Tensor, tokens_per_frame: int, shard: SeqShard | None = None
    ) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, self.head_dim))
        return self.o(frame_local_attention(q, audio_tokens, self._kv, tokens_per_frame, shard))


class DiTBlock(nn.Module):
    """One ``WanAttentionBlock``: adaLN self-attention, conditioning cross-attention(s), adaLN FFN.

    FlashTalk conditions on text+image then (separately, from ``norm_x``) on audio; FlashHead's single
    ``cross_attn`` is the frame-local audio attention (``audio_cross_attn`` is then None).
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        fp32 = self.fp32 = cfg.release_fp32
        self.norm1 = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False, fp32=fp32)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = (
            FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True, fp32=fp32) if cfg.cross_attn_norm
            else nn.Identity()
        )
        self.cross_attn: nn.Module = (
            FrameAudioCrossAttention(cfg) if cfg.variant == "flashhead" else TextImageCrossAttention(cfg)
        )
        self.norm2 = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False, fp32=fp32)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, cfg.dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)
        self.audio_cross_attn: AudioCrossAttention | None = None
        self.norm_x: nn.Module | None = None
        if cfg.variant == "flashtalk":
            self.audio_cross_attn = AudioCrossAttention(cfg.dim, cfg.output_dim, cfg.num_heads)
            self.norm_x = (
                FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True) if cfg.norm_input_visual else nn.Identity()
            )

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        text: torch.Tensor | None,
        image: torch.Tensor | None,
        audio_tokens: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        tokens_per_frame: int,
        shard: SeqShard | None = None,
        cross_kv: CrossKV | None = None,
    ) -> torch.Tensor:
        """``x [B, L, dim]``; ``e0 [B, 6, dim]`` float32; ``audio_tokens [B, F, n, audio_dim]``; rope for x's tokens.

        ``cross_kv``: this block's precomputed text/image K/V (then ``text``/``image`` may be None).
        """
        dtype = x.dtype
        mod = torch.float32 if self.fp32 else dtype
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.modulation.to(mod) + e0.to(mod)
        ).chunk(6, dim=1)
        y = self.self_attn((self.norm1(x).to(mod) * (1 + scale_msa) + shift_msa).to(dtype), rope)
        x = (x + y * gate_msa).to(dtype)
        if self.audio_cross_attn is None:  # FlashHead: the audio tokens are the (ungated) cross-attention context
            x = x + self.cross_attn(self.norm3(x), audio_tokens, tokens_per_frame, shard)
        else:
            x = x + self.cross_attn(self.norm3(x), text, image, cross_kv)
            x = x + self.audio_cross_attn(self.norm_x(x), audio_tokens, tokens_per_frame, shard)
        y = self.ffn((self.norm2(x).to(mod) * (1 + scale_mlp) + shift_mlp).to(dtype))
        return (x + y * gate_mlp).to(dtype)


class Head(nn.Module):
    """Output head in float32: 2-row modulation from the time embedding e, LayerNorm, Linear.

    Keys ``head``, ``modulation``.
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False, fp32=cfg.release_fp32)
        self.head = FP32Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim, fp32=cfg.release_fp32)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.to(e.dtype) + e.unsqueeze(1)).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


class ImageProjection(nn.Module):
    """CLIP tokens -> model width (the release's ``MLPProj``): LN, Linear, GELU (erf), Linear, LN. Keys ``proj.*``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(),
            nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim),
        )

    def forward(self, clip_fea: torch.Tensor) -> torch.Tensor:
        return self.proj(clip_fea)


# -- the model -------------------------------------------------------------------------------------------------
class WanAudioTransformer(nn.Module):
    """The FlashTalk DiT: ``forward(x, t, context, clip_fea, y, audio) -> velocity [B, out_dim, F, H, W]`` (float32)."""

    _ROPE_CACHE_SIZE = 8

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        fp32 = cfg.release_fp32
        self.time_embedding = nn.Sequential(
            FP32Linear(cfg.freq_dim, cfg.dim, fp32=fp32), nn.SiLU(), FP32Linear(cfg.dim, cfg.dim, fp32=fp32)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), FP32Linear(cfg.dim, 6 * cfg.dim, fp32=fp32))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        if cfg.variant == "flashtalk":
            self.img_emb = ImageProjection(CLIP_DIM, cfg.dim)
        else:  # released in FlashHead's checkpoint, never called by its forward
            self.audio_emb = ImageProjection(AUDIO_CHANNELS, cfg.dim)
        self.audio_proj = AudioProjection(
            audio_window=cfg.audio_window,
            vae_scale=cfg.vae_scale,
            intermediate_dim=cfg.intermediate_dim,
            output_dim=cfg.output_dim,
            context_tokens=cfg.context_tokens,
            norm_output_audio=cfg.norm_output_audio,
        )
        # Not state: (grid, device, token range) -> float64 RoPE (cos, sin); rebuilt on demand after meta construction.
        self._rope_cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        # Not state: the sequence-parallel boundary (None = one process holds every token).
        self.parallel: SequenceSplit | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the weights."""
        return self.patch_embedding.weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None,
        clip_fea: torch.Tensor | None,
        y: torch.Tensor,
        audio: torch.Tensor,
        seq_len: int | None = None,
        cross: CrossContext | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity.

        FlashHead (``variant="flashhead"``): ``context`` and ``clip_fea`` are None, ``y`` is the 16-channel
        reference latent, and the velocity is returned in the weights' dtype (the release updates in it).

        Args:
            x: noisy latent ``[B, 16, F, H, W]``.
            t: timesteps ``[B]`` (or ``[1]``, shared) in [0, 1000], kept unrounded (float64 sinusoid).
            context: T5 tokens ``[B, Lt, text_dim]``, ``Lt <= text_len``; zero-padded to text_len, not masked.
            clip_fea: CLIP tokens ``[B, 257, 1280]``.
            y: conditioning ``[B, 20, F, H, W]`` (4 mask channels + 16 reference-latent channels).
            audio: wav2vec2 windows ``[B, 1 + vae_scale*(F-1), audio_window, 12, 768]``.
            seq_len: the release's padded token count; only checked (``>= F*H*W/4``). Padding tokens cannot
                change real tokens (they are masked out of self-attention, everything else is per token), so
                they are not materialised.
            cross: :meth:`context_kv` of this ``context``/``clip_fea`` (skips recomputing their K/V); the caller
                keeps them together.

        Returns:
            float32 ``[B, out_dim, F, H, W]``.
        """
        cfg = self.config
        dtype = self.dtype
        self._check_inputs(x, y, context, clip_fea)
        tokens = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = (tokens.shape[2], tokens.shape[3], tokens.shape[4])
        tokens = tokens.flatten(2).transpose(1, 2)
        num_tokens = math.prod(grid)
        if seq_len is not None and int(seq_len) < num_tokens:
            raise ValueError(f"seq_len {int(seq_len)} is smaller than the {num_tokens} tokens of grid {grid}")

        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        sinusoid_dtype = torch.float32
        if not cfg.release_fp32:  # FlashHead rounds the timestep to the compute dtype first (bf16: 937.5 -> 936)
            t, sinusoid_dtype = t.to(dtype), dtype
        e = self.time_embedding(sinusoidal_embedding(cfg.freq_dim, t, sinusoid_dtype))
        e0 = self.time_projection(e).unflatten(1, (6, cfg.dim))

        if cfg.variant == "flashhead":
            text = image = None
            block_kv: tuple[CrossKV | None, ...] = (None,) * len(self.blocks)
        elif cross is None:
            text, image = self._embed_context(context, clip_fea)
            block_kv = (None,) * len(self.blocks)
        else:
            if cross.batch != x.shape[0] or len(cross.kv) != len(self.blocks):
                raise ValueError(f"cross K/V for batch {cross.batch} and {len(cross.kv)} blocks do not fit batch "
                                 f"{x.shape[0]} and {len(self.blocks)} blocks; rebuild it with context_kv()")
            text = image = None
            block_kv = cross.kv
        audio_tokens = self.audio_proj(audio).to(dtype)
        if audio_tokens.shape[1] != grid[0]:
            raise ValueError(
                f"audio covers {audio_tokens.shape[1]} latent frames but x has {grid[0]}: pass "
                f"1 + {cfg.vae_scale}*({grid[0]}-1) = {1 + cfg.vae_scale * (grid[0] - 1)} audio frames"
            )

        shard = SeqShard.full(num_tokens)
        if self.parallel is not None:
            tokens, shard = self.parallel.split(tokens)
        rope = self.rope(grid, tokens.device, shard)
        for block, kv in zip(self.blocks, block_kv):
            tokens = block(tokens, e0, text, image, audio_tokens, rope, grid[1] * grid[2], shard, kv)
        out = self.head(tokens, e)
        if self.parallel is not None:
            out = self.parallel.gather(out)
        out = self.unpatchify(out, grid)
        return out.float() if cfg.release_fp32 else out

    def _embed_context(self, context: torch.Tensor, clip_fea: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.variant != "flashtalk":
            raise ValueError("FlashHead has no text/image cross-attention: it takes no context or CLIP tokens")
        dtype = self.dtype
        text = self.text_embedding(F.pad(context.to(dtype), (0, 0, 0, self.config.text_len - context.shape[1])))
        return text, self.img_emb(clip_fea.to(dtype))

    def context_kv(self, context: torch.Tensor, clip_fea: torch.Tensor) -> CrossContext:
        """Every block's text/image cross-attention K/V for ``context [B, Lt, text_dim]`` and ``clip_fea``: pass it
        as ``forward(..., cross=)`` for as long as both stay the same (a session)."""
        text, image = self._embed_context(context, clip_fea)
        return CrossContext(tuple(block.cross_attn.project(text, image) for block in self.blocks), context.shape[0])

    def rope(
        self, grid: tuple[int, int, int], device: torch.device, shard: SeqShard | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 RoPE ``(cos, sin)`` for a token grid (or a shard of it), cached by (grid, device, range)."""
        token_range = None if shard is None or shard == SeqShard.full(math.prod(grid)) else (shard.start, shard.stop)
        key = (tuple(grid), str(device), token_range)
        if key not in self._rope_cache:
            if len(self._rope_cache) >= self._ROPE_CACHE_SIZE:
                self._rope_cache.pop(next(iter(self._rope_cache)))
            self._rope_cache[key] = rope_cos_sin(grid, self.config.head_dim, device=device, token_range=token_range)
        return self._rope_cache[key]

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """``[B, L, p_t*p_h*p_w*c]`` tokens -> ``[B, c, F, H, W]`` (channel index ``((p*q_n + q)*r_n + r)*c_n + c``)."""
        p = self.config.patch_size
        c = self.config.out_dim
        u = out[:, : math.prod(grid)].reshape(out.shape[0], *grid, *p, c)
        u = torch.einsum("bfhwpqrc->bcfphqwr", u)
        return u.reshape(out.shape[0], c, *(g * s for g, s in zip(grid, p)))

    def _check_inputs(
        self, x: torch.Tensor, y: torch.Tensor, context: torch.Tensor | None, clip_fea: torch.Tensor | None
    ) -> None:
        cfg = self.config
        if x.dim() != 5 or y.dim() != 5 or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
            raise ValueError(f"x [B,C,F,H,W] and y [B,C',F,H,W] must agree, got {list(x.shape)} and {list(y.shape)}")
        if x.shape[1] + y.shape[1] != cfg.in_dim:
            raise ValueError(f"x and y channels ({x.shape[1]} + {y.shape[1]}) must sum to in_dim {cfg.in_dim}")
        if any(size % p for size, p in zip(x.shape[2:], cfg.patch_size)):
            raise ValueError(f"latent size {list(x.shape[2:])} is not divisible by patch_size {cfg.patch_size}")
        if cfg.variant == "flashhead":
            if context is not None or clip_fea is not None:
                raise ValueError("FlashHead conditions on audio only: pass context=None and clip_fea=None")
            return
        if context is None or clip_fea is None:
            raise ValueError("FlashTalk's DiT needs the T5 context and the CLIP tokens")
        if context.dim() != 3 or context.shape[1] > cfg.text_len or context.shape[2] != cfg.text_dim:
            raise ValueError(f"context must be [B, <= {cfg.text_len}, {cfg.text_dim}], got {list(context.shape)}")
        if tuple(clip_fea.shape[1:]) != (CLIP_TOKENS, CLIP_DIM):
            raise ValueError(f"clip_fea must be [B, {CLIP_TOKENS}, {CLIP_DIM}], got {list(clip_fea.shape)}")
        if context.shape[0] != x.shape[0] or clip_fea.shape[0] != x.shape[0]:
            raise ValueError(
                f"batch sizes differ: x {x.shape[0]}, context {context.shape[0]}, clip_fea {clip_fea.shape[0]}"
            )

