"""The benchmark models' widths: the released shapes, or tiny ones with the same structure (``--tiny``).

Kept apart from :mod:`engine.bench.models` (which builds the models from a :class:`~engine.bench.config.BenchConfig`)
so the config can check its parallel degrees against the DiT's heads without importing the builders.
"""
from __future__ import annotations

from typing import Any

from engine.models.transformer import DiTConfig
from engine.models.vae import VAEConfig

__all__ = ["TEXT_DIM", "dit_config", "vae_config", "wav2vec2_config"]

TEXT_DIM = 4096


def dit_config(tiny: bool) -> DiTConfig:
    """The released 14B DiT config, or tiny widths with the same structure."""
    if not tiny:
        return DiTConfig()
    return DiTConfig(dim=64, ffn_dim=96, num_heads=4, num_layers=2, text_dim=TEXT_DIM)


def vae_config(tiny: bool) -> VAEConfig:
    """The released VAE config, or the same structure at width 8."""
    return VAEConfig(dim=8) if tiny else VAEConfig()


def wav2vec2_config(tiny: bool) -> Any:
    """wav2vec2-base's config (a ``transformers.Wav2Vec2Config``), or a smaller CNN and FFN."""
    from transformers import Wav2Vec2Config

    if not tiny:
        return Wav2Vec2Config()  # wav2vec2-base: 12 layers x 768 (chinese-wav2vec2-base has the same shapes)
    # The DiT's audio projection takes 12 layers x 768 channels, so only the CNN and FFN shrink.
    return Wav2Vec2Config(conv_dim=(32,) * 7, intermediate_size=64, num_attention_heads=4,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
