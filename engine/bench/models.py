"""Random-weight models of the benchmark: the released widths (or tiny ones), built directly on the device."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from engine.audio_encoder import AudioEncoder
from engine.bench.config import BenchConfig, torch_dtype
from engine.bench.widths import dit_config, vae_config, wav2vec2_config
from engine.models.vae import WanVAE
from engine.models.wav2vec2 import FlashTalkWav2Vec2

__all__ = ["build_models", "build_random"]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_random(factory: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Construct directly on ``device`` in ``dtype`` (no fp32 copy of 18.9 B parameters), default init."""
    with torch.device(device), _default_dtype(dtype):
        module = factory()
    return module.to(dtype).eval().requires_grad_(False)


def build_models(cfg: BenchConfig, device: torch.device) -> tuple[torch.nn.Module, WanVAE, AudioEncoder]:
    """DiT and VAE in ``cfg.dtype``, wav2vec2 in float32 (as released), all random."""
    from engine.models.transformer import WanAudioTransformer

    dtype = torch_dtype(cfg)
    # Offload exists for GPUs the bf16 DiT does not fit: build it on the host, engine.placement streams its blocks.
    dit_device = torch.device("cpu") if cfg.offload else device
    dit = build_random(lambda: WanAudioTransformer(dit_config(cfg.tiny, cfg.model)), dit_device, dtype)
    vae = build_random(lambda: WanVAE(vae_config(cfg.tiny)), device, dtype)
    vae.reset_latent_stats()
    w2v = build_random(lambda: FlashTalkWav2Vec2(wav2vec2_config(cfg.tiny)), device, torch.float32)
    return dit, vae, AudioEncoder(w2v, loudness_norm=cfg.model == "flashtalk")  # FlashHead's release skips it
