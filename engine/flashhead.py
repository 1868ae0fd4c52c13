"""The SoulX-FlashHead Pro streaming engine: FlashTalk's loop, session and sinks with FlashHead's models.

FlashHead Pro (Soul-AILab, 1.3B, Apache-2.0 code) streams exactly as FlashTalk does (issue 19; golden-flashhead
README §4): 33 frames per chunk with 5 motion frames (28 new, 1.12 s of audio), the 8 s audio window embedded
each chunk (frames 167..199), 4 steps ``[1000, 750, 500, 250]`` shifted by 5, FlashTalk's re-noising update, no
CFG, decode -> Lab colour match -> re-encode the last 5 frames as the next motion latents. What differs is
configuration, not code:

* the DiT is the ``flashhead`` variant of :class:`~engine.models.transformer.WanAudioTransformer` (no text or
  CLIP input: ``context`` and ``clip_fea`` are None);
* the conditioning ``y`` is the VAE latent of the reference repeated over the chunk (16 channels, no mask;
  :func:`~engine.prepare.prepare_flashhead_reference`), cached on disk per avatar like FlashTalk's;
* the audio front end runs without loudness normalisation, on facebook/wav2vec2-base-960h;
* the released geometry is 512x512.

So :class:`FlashHeadEngine` is a :class:`~engine.flashtalk.FlashTalkEngine` (same ``engine.interface``
session, drift monitor, snapshot/restore, render) that only replaces how it is loaded and how a session's
conditioning is built.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engine.config import FlashTalkConfig, FlashTalkConfigError
from engine.drift import DriftThresholds
from engine.flashtalk import FlashTalkEngine, load_models
from engine.loading.layout import FLASHHEAD_MODEL_DIR, FLASHHEAD_VAE, find_flashhead_wav2vec
from engine.prepare import prepare_flashhead_reference

__all__ = ["FLASHHEAD_GEOMETRY", "FlashHeadEngine", "ReferenceLatentCache", "flashhead_config"]

log = logging.getLogger(__name__)

#: The release's ``infer_params.yaml`` (the rest of FlashTalkConfig's defaults are FlashHead's too).
FLASHHEAD_GEOMETRY: dict[str, int | float] = {"height": 512, "width": 512, "frame_num": 33, "motion_frames": 5}


def flashhead_config(base: FlashTalkConfig | None = None) -> FlashTalkConfig:
    """FlashHead's released streaming settings (512x512, 33 frames, 5 motion frames), over ``base``'s others."""
    return replace(base or FlashTalkConfig(), **FLASHHEAD_GEOMETRY)  # type: ignore[arg-type]


class ReferenceLatentCache:
    """FlashHead's conditioning provider: only reference latents (no prompt, no CLIP), cached on disk per
    avatar image and VAE file (:class:`engine.conditioning.ConditioningCache`)."""

    def __init__(self, vae_path: Path, *, cache_dir: Path | None = None, device: torch.device | str = "cpu") -> None:
        from engine.conditioning import (
            ConditioningCache,
            default_cache_dir,
            file_identity,
        )

        self.device = torch.device(device)
        self.cache = ConditioningCache(cache_dir or default_cache_dir(), vae_model_id=f"flashhead|{file_identity(vae_path)}")

    def text_context(self, prompt: str) -> torch.Tensor:
        raise RuntimeError("FlashHead takes no text prompt")

    def image_tokens(self, image_u8: np.ndarray) -> torch.Tensor:
        raise RuntimeError("FlashHead takes no CLIP tokens")

    def reference_latents(
        self, image_u8: np.ndarray, params: str, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        values = self.cache.get_reference(image_u8, params, compute)
        return {name: t.to(device=self.device) for name, t in values.items()}


@dataclass
class FlashHeadEngine(FlashTalkEngine):
    """The loaded FlashHead Pro models (``engine.interface.AvatarEngine``); sessions are FlashTalk's."""

    name: str = "flashhead"

    @classmethod
    def from_folder(
        cls,
        weights_dir: Path | str,
        cfg: FlashTalkConfig | None = None,
        *,
        wav2vec_dir: Path | str | None = None,
        cache_dir: Path | None = None,
        drift: DriftThresholds | None = None,
        dit_blocks_on_host: bool = False,
    ) -> FlashHeadEngine:
        """Load the released ``SoulX-FlashHead-1_3B`` folder (``Model_Pro/``, ``VAE_Wan/Wan2.1_VAE.pth``) and
        ``wav2vec2-base-960h`` (``wav2vec_dir``, else inside or beside the folder) on ``cfg.device``.

        ``dit_blocks_on_host``: the DiT's blocks stay in host memory for a memory mode / FP8 to place them.
        """
        cfg = cfg or flashhead_config()
        weights = Path(weights_dir)
        try:
            w2v = Path(wav2vec_dir) if wav2vec_dir else find_flashhead_wav2vec(weights)
        except FileNotFoundError as exc:
            raise FlashTalkConfigError(str(exc)) from exc
        loaded = load_models(weights / FLASHHEAD_MODEL_DIR, weights / FLASHHEAD_VAE, w2v, cfg,
                             dit_blocks_on_host=dit_blocks_on_host, loudness_norm=False)
        variant = loaded.models.dit.config.variant  # type: ignore[attr-defined]
        if variant != "flashhead":
            raise FlashTalkConfigError(
                f"{weights / FLASHHEAD_MODEL_DIR} holds a {variant} DiT, not FlashHead's "
                "(engine.kind: flashhead needs the SoulX-FlashHead-1_3B folder)"
            )
        conditioning = ReferenceLatentCache(weights / FLASHHEAD_VAE, cache_dir=cache_dir, device=loaded.device)
        return cls(models=loaded.models, audio_encoder=loaded.audio_encoder, conditioning=conditioning, cfg=cfg,
                   device=loaded.device, dtype=loaded.dtypes.dit, drift=drift)

    def reference_params(self) -> str:
        return f"flashhead;frames={self.cfg.frame_num};dtype={self.dtype}"

    def encode_reference(self, cond_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``y`` = the VAE latent of the reference repeated over the chunk; the first motion latent its frame 0."""
        prepared = prepare_flashhead_reference(cond_image, self.models.vae, self.cfg.frame_num)
        return {"y": prepared.y, "motion_latent": prepared.motion_latent}

    def prompt_context(self, image: np.ndarray, prompt: str) -> tuple[None, None, None]:
        """FlashHead conditions on audio and the reference only: no text context, CLIP tokens or cross K/V."""
        return None, None, None
