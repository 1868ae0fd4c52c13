"""The engine named by ``engine.kind``, and the avatar portrait it starts from.

Used by the daemon (in-process isolation), by the engine worker process and by offline ``render``; so this
module imports nothing that hosts sinks or the daemon. Heavy imports (torch, the FlashTalk models) happen
inside :func:`build_engine`, not at module import.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.extras import require
from engine.interface import AvatarEngine, SessionRequest
from soulx_live.config import SoulxConfig
from soulx_live.errors import DaemonError

__all__ = ["alpha_wanted", "build_engine", "check_matte_model", "diffusion_problems", "load_avatar", "session_request"]


def load_avatar(path: Path | None) -> np.ndarray | None:
    """Read a portrait as uint8 RGB ``(H, W, 3)``; None stays None (the engine's built-in avatar)."""
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except FileNotFoundError:
        raise DaemonError(f"avatar image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DaemonError(f"cannot read avatar image {path}: {exc}") from exc


def session_request(config: SoulxConfig, avatar: np.ndarray | None, *, realtime: bool) -> SessionRequest:
    """What a session starts from: the portrait, ``engine.prompt`` and ``engine.seed``, and whether it runs in
    real time (``extra["realtime"]``: offline, a drifting chunk is always generated again; live, only when the
    second attempt fits the chunk's play-out time)."""
    return SessionRequest(session_id=uuid.uuid4().hex[:12], avatar=avatar, prompt=config.engine.prompt,
                          seed=config.engine.seed, extra={"realtime": realtime})


def alpha_wanted(config: SoulxConfig) -> bool:
    """An enabled sink asked for the person cut out (``sinks.obs.alpha``, ``sinks.virtualcam.alpha``,
    ``sinks.recorder.alpha``)."""
    sinks = config.sinks
    return any(s.enabled and s.alpha for s in (sinks.obs, sinks.virtualcam, sinks.recorder))


def build_engine(config: SoulxConfig) -> AvatarEngine:
    """The engine named by ``engine.kind``; raises :class:`DaemonError` naming what is missing. When a sink wants
    alpha, its chunks carry the person matte (``engine.matting.stage``), computed here, once, for every sink."""
    kind = config.engine.kind
    if kind == "lite":
        engine = _build_lite(config)
    elif kind in ("flashtalk", "flashhead"):
        engine = _build_diffusion(config)
    else:
        raise DaemonError(f"unknown engine.kind {kind!r}; use 'lite', 'flashtalk' or 'flashhead'")
    if not alpha_wanted(config):
        return engine
    from engine.matting.stage import AlphaEngine

    check_matte_model()
    return AlphaEngine(engine)


def check_matte_model() -> None:
    """Fail at start (not at the first chunk) when alpha is wanted and the model is missing, naming the install."""
    from engine.matting.model import MatteModelMissing, find_model

    try:
        find_model()
    except MatteModelMissing as exc:
        raise DaemonError(str(exc)) from None


def _build_lite(config: SoulxConfig) -> AvatarEngine:
    from engine.lite.engine import LiteConfig, LiteEngine

    lite = config.engine.lite
    return LiteEngine(LiteConfig(width=lite.width, height=lite.height, fps=lite.fps,
                                 frames_per_chunk=lite.frames_per_chunk, sample_rate=config.audio.sample_rate,
                                 blinks=lite.blinks, idle_motion=lite.idle_motion))


def _build_diffusion(config: SoulxConfig) -> AvatarEngine:
    """FlashTalk 14B (``engine.flashtalk``) or FlashHead Pro (``engine.flashhead``): the released weights, or the
    model's tiny-random preset (random tiny models on the CPU: no weights, no GPU)."""
    kind = config.engine.kind
    if getattr(config.engine, kind).preset == "tiny-random":
        require("torch", "engine")
        return _flashtalk_builder()(config.engine)
    problems = diffusion_problems(config)
    if problems:
        raise DaemonError(f"the {kind} engine cannot start: " + "; ".join(problems))
    return _flashtalk_builder()(config.engine)


#: kind -> (the released folder the weights_dir names, whether the model needs a GPU by default)
_RELEASES = {"flashtalk": ("models/SoulX-FlashTalk-14B", True), "flashhead": ("models/SoulX-FlashHead-1_3B", False)}


def diffusion_problems(config: SoulxConfig) -> list[str]:
    """What keeps the released FlashTalk / FlashHead model from starting here: weights, packages, a GPU."""
    from engine.loading.layout import flashhead_weights_problems, weights_problems

    kind = config.engine.kind
    folder, needs_gpu = _RELEASES[kind]
    problems = []
    weights = config.engine.weights_dir
    if weights is None:
        problems.append(f"engine.weights_dir is not set (--set engine.weights_dir={folder})")
    else:
        check = flashhead_weights_problems if kind == "flashhead" else weights_problems
        problems += [f"weights: {p}" for p in check(weights)]
    try:
        require("transformers", "engine", "the audio encoder")
    except ImportError as exc:
        problems.append(str(exc))
    torch = require("torch", "engine")
    device = config.engine.device or ("cuda" if needs_gpu else "auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"no CUDA GPU is usable (engine.device={device}; `soulx-live doctor` shows why)")
    return problems


def _flashtalk_builder() -> Callable[[Any], AvatarEngine]:
    try:
        from engine import build  # the GPU engine (torch); imported only when asked for
    except ImportError as exc:
        raise DaemonError(f"the flashtalk engine is not available in this build: {exc}") from exc
    return build.build_engine
