"""Analytic FLOP count of one DiT forward at given shapes (SPEC-flashtalk.md §10.2).

Convention: one multiply-accumulate is 2 FLOP; only matrix products are counted (linear layers, the patch
convolution, the attention cores); norms, RoPE, softmax, modulation and element-wise work are ignored
(well under 1 %). This is the convention of ``torch.utils.flop_counter`` too, which the tests use to check
the count against what the model actually runs.

The count follows ``engine.models.transformer.WanAudioTransformer`` for a batch of one: the text is padded to
``text_len`` tokens and not masked (so 512 + 257 context tokens), each latent frame's tokens attend to that
frame's ``context_tokens`` audio tokens only. FlashHead (``cfg.variant == "flashhead"``) has no text or image
input: its one cross-attention per block projects q and o over the video tokens and k and v over each latent
frame's audio tokens (width ``dim``), whose attention core is frame-local; nothing is cached per session.

What runs per forward is less than that whole count: a session computes the text/CLIP embeddings and every
block's text/image cross-attention K/V once (``WanAudioTransformer.context_kv``, the default; the release
recomputes them every step), so :attr:`DitFlops.context_kv` is that once-per-session part and
:meth:`DitFlops.running` the per-forward figure that utilisation is computed from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["DitFlops", "dit_flops", "latent_grid"]

#: wav2vec2 layers x channels the audio projection takes per window position (SPEC §2.6).
AUDIO_FEATURES = 12 * 768
CLIP_TOKENS, CLIP_DIM = 257, 1280


@dataclass(frozen=True)
class DitFlops:
    """FLOP of one DiT forward (one denoising step), split as SPEC §10.2 tabulates it."""

    self_attn_proj_ffn: int  # q k v o of self-attention + FFN, all blocks
    cross_proj: int  # text/image and audio cross-attention q, o, k, v projections, all blocks
    self_attn_core: int  # QK^T and PV of self-attention (the L^2 term)
    cross_attn_core: int  # QK^T and PV of the text/image and audio cross-attentions
    embed_head: int  # patch embedding, text/time/image embeddings, audio projection, head
    # Of cross_proj + embed_head: the text/CLIP embeddings and every block's text/image K/V projections, which
    # ``WanAudioTransformer.context_kv`` computes once per session when the cross K/V cache is on.
    context_kv: int
    # Of self_attn_proj_ffn + cross_proj: the block linears ``engine.ops.fp8.BLOCK_LINEARS`` runs as e4m3 GEMMs
    # with --fp8 (self-attention q k v o, text/image q o, FFN); the rest stays in the compute dtype.
    fp8_gemms: int

    @property
    def blocks(self) -> int:
        """Everything inside the transformer blocks (what SPEC §10.2's per-step total counts)."""
        return self.self_attn_proj_ffn + self.cross_proj + self.self_attn_core + self.cross_attn_core

    @property
    def total(self) -> int:
        """Everything a forward without a cached cross context computes (SPEC §10.2's count)."""
        return self.blocks + self.embed_head

    def running(self, cross_kv_cache: bool = True) -> int:
        """What one forward computes: :attr:`total` less :attr:`context_kv` when that is cached per session."""
        return self.total - self.context_kv if cross_kv_cache else self.total

    def as_dict(self) -> dict[str, int]:
        return {
            "self_attn_proj_ffn": self.self_attn_proj_ffn,
            "cross_proj": self.cross_proj,
            "self_attn_core": self.self_attn_core,
            "cross_attn_core": self.cross_attn_core,
            "embed_head": self.embed_head,
            "blocks": self.blocks,
            "total": self.total,
            "context_kv": self.context_kv,
            "running_with_cross_kv_cache": self.running(True),
            "fp8_gemms": self.fp8_gemms,
        }


def latent_grid(frames: int, height: int, width: int, *, temporal: int = 4, spatial: int = 8) -> tuple[int, int, int]:
    """Pixel chunk ``frames x height x width`` -> VAE latent ``(F, h, w)`` (Wan VAE: 4x time, 8x space)."""
    if (frames - 1) % temporal or height % spatial or width % spatial:
        raise ValueError(
            f"{frames} frames of {height}x{width} do not map onto the VAE grid: frames must be "
            f"{temporal}k+1, height and width multiples of {spatial}"
        )
    return 1 + (frames - 1) // temporal, height // spatial, width // spatial


def _audio_projection(cfg: Any, grid_f: int) -> int:
    """The audio projection's FLOP: frame 0's window and each later frame's span, two hidden layers, the tokens."""
    inter = cfg.intermediate_dim
    first = 2 * cfg.audio_window * AUDIO_FEATURES * inter
    later = 2 * (grid_f - 1) * (cfg.audio_window + cfg.vae_scale - 1) * AUDIO_FEATURES * inter
    return first + later + 2 * grid_f * inter * inter + 2 * grid_f * inter * cfg.context_tokens * cfg.output_dim


def dit_flops(cfg: Any, latent: tuple[int, int, int]) -> DitFlops:
    """FLOP of one forward of a DiT with config ``cfg`` (an ``engine.models.transformer.DiTConfig``) on a latent
    grid ``(F, h, w)`` (before patching), batch 1."""
    pt, ph, pw = cfg.patch_size
    frames, h, w = latent
    if frames % pt or h % ph or w % pw:
        raise ValueError(f"latent grid {latent} is not divisible by patch_size {cfg.patch_size}")
    grid_f = frames // pt
    tokens_per_frame = (h // ph) * (w // pw)
    n = grid_f * tokens_per_frame  # L
    d, f, layers = cfg.dim, cfg.ffn_dim, cfg.num_layers
    context = cfg.text_len + CLIP_TOKENS  # padded text + CLIP tokens, all attended
    audio_tokens = cfg.context_tokens

    def linear(rows: int, fan_in: int, fan_out: int) -> int:
        return 2 * rows * fan_in * fan_out

    self_proj_ffn = 4 * linear(n, d, d) + linear(n, d, f) + linear(n, f, d)
    audio_proj = _audio_projection(cfg, grid_f)
    head_and_time = (
        linear(n, cfg.in_dim * pt * ph * pw, d)  # patch embedding (a strided conv = a linear over patches)
        + linear(1, cfg.freq_dim, d) + linear(1, d, d) + linear(1, d, 6 * d)  # time embedding + projection
        + audio_proj
        + linear(n, d, math.prod(cfg.patch_size) * cfg.out_dim)  # head
    )
    if cfg.variant == "flashhead":
        cross = 2 * linear(n, d, d) + 2 * linear(grid_f * audio_tokens, cfg.output_dim, d)  # q, o; audio k, v
        return DitFlops(
            self_attn_proj_ffn=layers * self_proj_ffn,
            cross_proj=layers * cross,
            self_attn_core=layers * 4 * n * n * d,
            cross_attn_core=layers * 4 * n * audio_tokens * d,
            embed_head=head_and_time,
            context_kv=0,
            fp8_gemms=layers * (self_proj_ffn + 2 * linear(n, d, d)),  # + cross q, o
        )
    context_kv_proj = 2 * linear(cfg.text_len, d, d) + 2 * linear(CLIP_TOKENS, d, d)  # text k, v; image k, v
    cross = (
        2 * linear(n, d, d)  # text/image q, o
        + context_kv_proj
        + 2 * linear(n, d, d)  # audio q, proj
        + linear(grid_f * audio_tokens, cfg.output_dim, 2 * d)  # audio kv
    )
    self_core = 4 * n * n * d
    cross_core = 4 * n * context * d + 4 * n * audio_tokens * d

    context_embed = (
        linear(cfg.text_len, cfg.text_dim, d) + linear(cfg.text_len, d, d)  # text embedding
        + linear(CLIP_TOKENS, CLIP_DIM, CLIP_DIM) + linear(CLIP_TOKENS, CLIP_DIM, d)  # image projection
    )
    embed_head = head_and_time + context_embed
    return DitFlops(
        self_attn_proj_ffn=layers * self_proj_ffn,
        cross_proj=layers * cross,
        self_attn_core=layers * self_core,
        cross_attn_core=layers * cross_core,
        embed_head=embed_head,
        context_kv=context_embed + layers * context_kv_proj,
        fp8_gemms=layers * (self_proj_ffn + 2 * linear(n, d, d)),  # + text/image q, o
    )
