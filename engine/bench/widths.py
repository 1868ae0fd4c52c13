"""The benchmark models' widths: the released shapes, or tiny ones with the same structure (``--tiny``).

Kept apart from :mod:`engine.bench.models` (which builds the models from a :class:`~engine.bench.config.BenchConfig`)
so the config can check its parallel degrees against the DiT's heads without importing the builders.
"""
from __future__ import annotations

from typing import Any

from engine.models.transformer import FLASHHEAD_CLASS, DiTConfig
from engine.models.vae import VAEConfig

__all__ = ["FLASHHEAD_PRO", "TEXT_DIM", "dit_config", "vae_config", "wav2vec2_config"]

TEXT_DIM = 4096


#: SoulX-FlashHead Pro's DiT (``Model_Pro/config.json``: Wan2.1 T2V-1.3B widths, in_dim 32, audio-only cross-attention).
FLASHHEAD_PRO = {"_class_name": FLASHHEAD_CLASS, "dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30,
                 "in_dim": 32, "out_dim": 16, "text_dim": TEXT_DIM, "freq_dim": 256, "eps": 1e-6,
                 "patch_size": [1, 2, 2], "vae_stride": [4, 8, 8], "has_image_input": False}


def dit_config(tiny: bool, model: str = "flashtalk") -> DiTConfig:
    """The released DiT config (FlashTalk 14B or FlashHead Pro), or tiny widths with the same structure."""
    if model == "flashhead":
        if not tiny:
            return DiTConfig.from_dict(FLASHHEAD_PRO)
        return DiTConfig.from_dict({**FLASHHEAD_PRO, "dim": 64, "ffn_dim": 96, "num_heads": 4, "num_layers": 2,
                                    "intermediate_dim": 16, "output_dim": 64, "context_tokens": 4})
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
