"""The ``tiny-random`` FlashTalk preset: a seeded, weight-free FlashTalk stack small enough for CPU tests.

:func:`engine.build.build_tiny_engine` runs the real streaming loop (``engine.flashtalk``: sampler, colour
correction, motion re-encode, the 8 s audio window, :class:`~engine.flashtalk.FlashTalkSession`) on tiny
stand-ins for the three models, built here without importing the loop:

* **DiT** (:class:`TinyDenoiser`): the real :class:`~engine.models.transformer.WanAudioTransformer`
  architecture at dim 32 / 2 layers with seeded random weights, wrapped so the sampler converges to a
  picture of the avatar. A random DiT alone predicts noise; the wrapper predicts the clean latent
  ``x0 = ref + carry * (motion - ref) + residual * transformer(...)`` (``ref``: the reference latent in ``y``;
  ``motion``: the clean context imposed on latent frame 0), i.e. the velocity ``(x - x0) / sigma``. Like the
  trained model it reproduces the reference, carries the motion context forward (so a corrupted context
  propagates from chunk to chunk, which is what the drift monitor must catch) and moves with the audio
  (the transformer's audio cross-attention drives the residual).
* **VAE** (:class:`TinyPatchVAE`): a linear 8x8-patch autoencoder onto 16 orthonormal low-frequency
  colour/luminance DCT components under a seeded random rotation; time compressed 4x (latent 0 = frame 0,
  latent k = frame 4k, decoded by linear interpolation). ``encode(decode(z)) == z`` up to clamping, so the
  motion loop is stable without trained weights. With ``vae="wan"`` (``engine.flashtalk.tiny_vae: wan``) the
  VAE is instead the real :class:`~engine.models.vae.WanVAE` at width 8 with seeded random weights (the golden
  ``vae_dim8`` shape): pictures are noise-like, but a worker group splits it into row bands like the 14B
  model's (``engine.parallel.vae``), so the group tests exercise the parallel VAE.
* **Audio**: the real :class:`~engine.audio_encoder.AudioEncoder` over a seeded random 2-layer wav2vec2
  (hidden 32), widened to the DiT's fixed 12 x 768 input by a fixed random projection (:class:`WidthAdapter`).
* **Text / CLIP**: fixed seeded tensors (:class:`TinyConditioning`).

The FlashHead preset (``engine.kind: flashhead`` with ``preset: tiny-random``) is the same stack with the DiT's
``flashhead`` variant (:data:`TINY_FLASHHEAD_DIT`: in_dim 32, audio-only cross-attention) and FlashHead's
conditioning (``y`` = the reference latent, no text or CLIP); the wrapper needs no change, since it reads the
reference latent from ``y``'s last 16 channels either way.

Geometry is the preset's own (64x48, 9 frames per chunk with 5 motion frames: 4 new frames = 160 ms at
25 fps); ``steps``, ``shift``, ``color_correction``, ``fps`` and the seed come from the caller's config.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.config import FlashTalkConfig
from engine.models.transformer import CrossContext, DiTConfig, WanAudioTransformer
from engine.models.vae import VAEConfig, WanVAE

__all__ = [
    "TINY_DIT",
    "TINY_FLASHHEAD_DIT",
    "TINY_GEOMETRY",
    "TINY_PRESET",
    "TINY_VAES",
    "TINY_WAN_VAE",
    "TinyComponents",
    "TinyConditioning",
    "TinyDenoiser",
    "TinyPatchVAE",
    "WidthAdapter",
    "tiny_components",
    "tiny_config",
    "tiny_vae",
    "tiny_wav2vec2",
]

#: ``engine.flashtalk.preset`` naming this stack (``engine.build.build_engine`` checks it).
TINY_PRESET = "tiny-random"
#: The preset's fixed geometry (applied over whatever the caller's config says).
TINY_GEOMETRY: dict[str, int | float] = {
    "height": 64,
    "width": 48,
    "frame_num": 9,
    "motion_frames": 5,
    "audio_buffer_s": 2.0,
}
#: ``engine.flashtalk.tiny_vae``: the preset's VAE (``patch``: :class:`TinyPatchVAE`; ``wan``: a tiny random WanVAE).
TINY_VAES = ("patch", "wan")
#: The golden bundle's tiny VAE width (``vae_dim8``), for ``tiny_vae: wan``.
TINY_WAN_VAE = VAEConfig(dim=8)
#: The golden bundle's tiny DiT shape (random weights here).
TINY_DIT = DiTConfig(
    dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_len=16, intermediate_dim=4, output_dim=16, context_tokens=4
)
#: FlashHead's tiny DiT: the golden-flashhead shape at width 32 (random weights here).
TINY_FLASHHEAD_DIT = DiTConfig(
    variant="flashhead", in_dim=32, dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=16,
    intermediate_dim=4, output_dim=32, context_tokens=4,
)
_AUDIO_LAYERS, _AUDIO_CHANNELS = 12, 768  # the DiT's audio projection input, whatever the wav2vec2 size


def tiny_config(base: FlashTalkConfig | None = None) -> FlashTalkConfig:
    """``base`` (default settings when None) with the preset's geometry, on the CPU in fp32."""
    base = base or FlashTalkConfig()
    return replace(base, device="cpu", dtype="fp32", **TINY_GEOMETRY)  # type: ignore[arg-type]


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with torch's global RNG seeded, without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# -- VAE -----------------------------------------------------------------------------------------------------
def _dct_1d(n: int, u: int) -> torch.Tensor:
    x = torch.arange(n, dtype=torch.float64)
    scale = math.sqrt((1.0 if u == 0 else 2.0) / n)
    return scale * torch.cos(math.pi * (2 * x + 1) * u / (2 * n))


def _patch_basis(patch: int) -> torch.Tensor:
    """16 orthonormal vectors ``[16, 3, p, p]``: per-channel DC and first gradients, 7 luminance patterns."""
    vectors = []
    for channel in range(3):
        for u, v in ((0, 0), (0, 1), (1, 0)):
            b = torch.zeros(3, patch, patch, dtype=torch.float64)
            b[channel] = torch.outer(_dct_1d(patch, u), _dct_1d(patch, v))
            vectors.append(b)
    for u, v in ((1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (0, 3), (3, 0)):
        pattern = torch.outer(_dct_1d(patch, u), _dct_1d(patch, v))
        vectors.append(pattern.expand(3, patch, patch) / math.sqrt(3))
    return torch.stack(vectors)


class TinyPatchVAE(nn.Module):
    """A linear, seeded stand-in for the Wan VAE with its interface (``engine.prepare.VideoVAE``).

    ``encode([B,3,T,H,W] in [-1,1]) -> [B,16,(T-1)//4+1,H/8,W/8]``; ``decode`` inverts it (clamped).
    """

    z_dim = 16
    patch = 8
    temporal = 4

    def __init__(self, seed: int = 0, scale: float = 0.25) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        rotation, _ = torch.linalg.qr(torch.randn(self.z_dim, self.z_dim, generator=g, dtype=torch.float64))
        basis = torch.einsum("zk,kcyx->zcyx", rotation, _patch_basis(self.patch))
        self.register_buffer("basis", basis.float())  # [16, 3, p, p], orthonormal rows
        self.scale = scale

    def _to_latent(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B,3,T,H,W] -> [B,16,T,h,w]`` (per frame)."""
        b, c, t, h, w = frames.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"TinyPatchVAE needs H and W multiples of {p}, got {h}x{w}")
        x = frames.float().reshape(b, c, t, h // p, p, w // p, p)
        return torch.einsum("bctiyjx,zcyx->bztij", x, self.basis) * self.scale

    def _to_pixels(self, z: torch.Tensor) -> torch.Tensor:
        """``[B,16,T,h,w] -> [B,3,T,H,W]`` (per frame, unclamped)."""
        b, _, t, h, w = z.shape
        p = self.patch
        x = torch.einsum("bztij,zcyx->bctiyjx", z.float() / self.scale, self.basis)
        return x.reshape(b, 3, t, h * p, w * p)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"encode expects a video [B, 3, T, H, W], got {list(video.shape)}")
        t = video.shape[2]
        picks = [0] + [min(self.temporal * k, t - 1) for k in range(1, (t - 1) // self.temporal + 1)]
        return self._to_latent(video[:, :, picks])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 5 or z.shape[1] != self.z_dim:
            raise ValueError(f"decode expects a latent [B, {self.z_dim}, T, h, w], got {list(z.shape)}")
        keys = self._to_pixels(z)
        frames = [keys[:, :, :1]]
        for k in range(1, keys.shape[2]):
            for j in range(1, self.temporal + 1):
                a = j / self.temporal
                frames.append(torch.lerp(keys[:, :, k - 1 : k], keys[:, :, k : k + 1], a))
        return torch.cat(frames, dim=2).clamp_(-1.0, 1.0)


# -- DiT -----------------------------------------------------------------------------------------------------
class TinyDenoiser(nn.Module):
    """A random tiny WanAudioTransformer inside an analytic x0 predictor (see the module docstring).

    ``forward(x, t, context, clip_fea, y, audio, seq_len)`` as the DiT; returns the float32 velocity
    ``(x - x0) / sigma`` with ``sigma = t / num_timesteps``.
    """

    def __init__(
        self,
        transformer: WanAudioTransformer,
        *,
        carry: float = 0.8,
        residual: float = 0.1,
        num_timesteps: int = 1000,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.carry = carry
        self.residual = residual
        self.num_timesteps = num_timesteps

    def context_kv(self, context: torch.Tensor, clip_fea: torch.Tensor) -> CrossContext:
        """The transformer's per-session cross-attention K/V (see :class:`CrossContext`)."""
        return self.transformer.context_kv(context, clip_fea)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, clip_fea: torch.Tensor,
                y: torch.Tensor, audio: torch.Tensor, **options: Any) -> torch.Tensor:
        """The velocity; ``options`` (``seq_len``, ``cross``) go to the transformer unchanged."""
        r = self.transformer(x, t, context, clip_fea, y, audio, **options)
        ref = y[:, -x.shape[1] :, :1].float()  # y = [mask (4), reference latent (16)]; frame 0 is the reference
        motion = x[:, :, :1].float()  # the clean motion context the sampler imposes
        r = r / r.std().clamp_min(1e-6)
        x0 = ref + self.carry * (motion - ref) + self.residual * ref.std() * r
        sigma = (torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1) / self.num_timesteps)
        sigma = sigma.clamp_min(1e-4).reshape(-1, 1, 1, 1, 1)
        return (x.float() - x0) / sigma


# -- audio and conditioning ----------------------------------------------------------------------------------
def tiny_wav2vec2(seed: int = 0) -> nn.Module:
    """A seeded random 2-layer wav2vec2 (hidden 32) with FlashTalk's forward."""
    from transformers import Wav2Vec2Config

    from engine.models.wav2vec2 import FlashTalkWav2Vec2

    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_bias=False,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
    )
    return _seeded(seed, lambda: FlashTalkWav2Vec2(config)).eval().requires_grad_(False)


class WidthAdapter:
    """A small wav2vec2's windows ``[1,F,5,L,C]`` -> the DiT's ``[1,F,5,12,768]`` by a fixed random projection."""

    def __init__(self, encoder: object, seed: int = 5) -> None:
        self.encoder = encoder
        self.seed = seed
        self._weight: torch.Tensor | None = None

    def embed_window(self, window: object, frame_num: int) -> tuple[torch.Tensor, torch.Tensor]:
        emb, hidden = self.encoder.embed_window(window, frame_num)  # type: ignore[attr-defined]
        b, f, k, layers, channels = emb.shape
        if self._weight is None or self._weight.shape[0] != layers * channels:
            g = torch.Generator().manual_seed(self.seed)
            width = _AUDIO_LAYERS * _AUDIO_CHANNELS
            self._weight = torch.randn(layers * channels, width, generator=g) / (layers * channels) ** 0.5
        out = emb.reshape(b, f, k, layers * channels) @ self._weight.to(emb.device, emb.dtype)
        return out.reshape(b, f, k, _AUDIO_LAYERS, _AUDIO_CHANNELS), hidden


class TinyConditioning:
    """Fixed seeded text context ``[10, 4096]`` and CLIP tokens ``[1, 257, 1280]``; no cache."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.context = torch.randn(10, 4096, generator=g)
        self.clip = torch.randn(1, 257, 1280, generator=g)

    def text_context(self, prompt: str) -> torch.Tensor:
        return self.context

    def image_tokens(self, image_u8: np.ndarray) -> torch.Tensor:
        return self.clip

    def reference_latents(
        self, image_u8: np.ndarray, params: str, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        return compute()


# -- the stack -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyComponents:
    """The preset's four stand-ins, ready for ``FlashTalkEngine.from_components`` (see the module docstring)."""

    dit: TinyDenoiser
    vae: TinyPatchVAE | WanVAE
    audio: WidthAdapter
    conditioning: TinyConditioning


def tiny_vae(kind: str = "patch", seed: int = 3) -> TinyPatchVAE | WanVAE:
    """The preset's VAE: ``patch`` (:class:`TinyPatchVAE`) or ``wan`` (seeded random :data:`TINY_WAN_VAE`)."""
    if kind == "patch":
        return TinyPatchVAE(seed)
    if kind == "wan":
        return _seeded(seed, lambda: WanVAE(TINY_WAN_VAE)).eval().requires_grad_(False)  # type: ignore[return-value]
    raise ValueError(f"engine.flashtalk.tiny_vae must be one of {', '.join(TINY_VAES)}, got {kind!r}")


def tiny_components(
    cfg: FlashTalkConfig, seed: int = 0, *, vae: str = "patch", dit_config: DiTConfig = TINY_DIT
) -> TinyComponents:
    """Seeded tiny models for ``cfg`` (already through :func:`tiny_config`): each part has its own seed offset,
    so adding a part never changes another part's weights. ``vae``: see :func:`tiny_vae`; ``dit_config``
    :data:`TINY_FLASHHEAD_DIT` for FlashHead (whose audio front end skips loudness normalisation)."""
    from engine.audio_encoder import AudioEncoder

    transformer = _seeded(seed, lambda: WanAudioTransformer(dit_config))
    dit = TinyDenoiser(transformer.eval().requires_grad_(False), num_timesteps=cfg.num_timesteps)
    encoder = AudioEncoder(
        tiny_wav2vec2(seed + 1), sample_rate=cfg.sample_rate, fps=cfg.fps,
        loudness_norm=dit_config.variant == "flashtalk",
    )
    audio = WidthAdapter(encoder, seed=seed + 2)
    return TinyComponents(dit, tiny_vae(vae, seed + 3), audio, TinyConditioning(seed + 4))
