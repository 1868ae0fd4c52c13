"""Random-weight models of the benchmark: the released widths (or tiny ones), built directly on the device."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from engine.audio_encoder import AudioEncoder
from engine.bench.config import BenchConfig, torch_dtype
from engine.models.vae import VAEConfig, WanVAE
from engine.models.wav2vec2 import FlashTalkWav2Vec2

__all__ = ["build_models", "build_random", "dit_config", "vae_config", "wav2vec2_config"]

TEXT_DIM = 4096


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


def dit_config(tiny: bool) -> Any:
    """The released 14B DiT config, or tiny widths with the same structure."""
    from engine.models.transformer import DiTConfig

    if not tiny:
        return DiTConfig()
    if hasattr(DiTConfig, "tiny"):
        return DiTConfig.tiny()
    names = {f.name for f in dataclasses.fields(DiTConfig)}
    wanted = {"dim": 64, "ffn_dim": 96, "num_heads": 4, "num_layers": 2, "text_dim": TEXT_DIM}
    return DiTConfig(**{k: v for k, v in wanted.items() if k in names})


def vae_config(tiny: bool) -> VAEConfig:
    return VAEConfig(dim=8) if tiny else VAEConfig()


def wav2vec2_config(tiny: bool) -> Any:
    from transformers import Wav2Vec2Config

    if not tiny:
        return Wav2Vec2Config()  # wav2vec2-base: 12 layers x 768 (chinese-wav2vec2-base has the same shapes)
    # The DiT's audio projection takes 12 layers x 768 channels, so only the CNN and FFN shrink.
    return Wav2Vec2Config(conv_dim=(32,) * 7, intermediate_size=64, num_attention_heads=4,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def build_models(cfg: BenchConfig, device: torch.device) -> tuple[torch.nn.Module, WanVAE, AudioEncoder]:
    """DiT and VAE in ``cfg.dtype``, wav2vec2 in float32 (as released), all random."""
    from engine.models.transformer import WanAudioTransformer

    dtype = torch_dtype(cfg)
    dit = build_random(lambda: WanAudioTransformer(dit_config(cfg.tiny)), device, dtype)
    vae = build_random(lambda: WanVAE(vae_config(cfg.tiny)), device, dtype)
    vae.reset_latent_stats()
    w2v = build_random(lambda: FlashTalkWav2Vec2(wav2vec2_config(cfg.tiny)), device, torch.float32)
    return dit, vae, AudioEncoder(w2v)
