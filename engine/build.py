"""Build a :class:`~engine.flashtalk.FlashTalkEngine` (or its FlashHead subclass) from the daemon's engine settings.

``engine.kind: flashhead`` reads its settings from ``engine.flashhead`` (the same fields as ``engine.flashtalk``)
and builds :class:`~engine.flashhead.FlashHeadEngine` from the ``SoulX-FlashHead-1_3B`` folder or, with
``preset: tiny-random``, FlashHead's tiny stack; steps 1, 3 and 4 below are the same for both models.

``build_engine(engine_config)`` takes a ``soulx_live.config.EngineConfig``-shaped object (read by attribute only,
so the engine never imports the daemon) and:

1. selects the attention kernel (``engine.flashtalk.attention``);
2. builds the single-process engine: the released 14B model from ``engine.weights_dir``, or the
   ``tiny-random`` preset (:mod:`engine.tiny`: seeded random tiny models, CPU, fp32, no files);
3. with ``world_size > 1``, joins the torchrun group and splits the models across it (:func:`parallelize_engine`);
4. applies the memory mode and speed levers (FP8 GEMMs, FP8 weight storage, block offload, compiled blocks)
   after the split, so collectives stay outside compiled graphs (:func:`memory_mode`, :mod:`engine.memory`).

Steps 1, 3 and 4 are one code path for both presets, so the tiny group (tests/daemon/test_worker_group.py) runs
what the 14B group runs: the group join, Ulysses x Ring degrees and the ``sp_backend`` choice. The parallel VAE
needs a ``WanVAE``: the tiny preset's default :class:`~engine.tiny.TinyPatchVAE` (per-patch and linear, no
neighbouring rows to exchange) is left whole, while ``engine.flashtalk.tiny_vae: wan`` gives it a tiny random
``WanVAE`` that the group splits into row bands like the 14B model's (the worker-group test runs that way).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.config import FlashTalkConfig, FlashTalkConfigError
from engine.drift import DriftThresholds
from engine.flashtalk import FlashTalkEngine
from engine.memory import MemoryMode
from engine.tiny import TINY_FLASHHEAD_DIT, TINY_PRESET, tiny_components, tiny_config

__all__ = ["build_engine", "build_tiny_engine", "engine_settings", "parallelize_engine"]

log = logging.getLogger(__name__)

# FlashTalkConfig field -> engine.flashtalk setting. Both presets take the sampling settings; only the
# 14B model takes the geometry (the tiny preset has its own).
_SAMPLING = {"sampling_steps": "steps", "shift": "shift", "color_correction_strength": "color_correction", "fps": "fps"}
_GEOMETRY = {name: name for name in ("height", "width", "frame_num", "motion_frames", "audio_buffer_s")}


def build_engine(engine_config: Any) -> FlashTalkEngine:
    """The daemon's entry point: ``soulx_live.config.EngineConfig`` (``kind: flashtalk``) -> engine.

    ``engine.flashtalk.preset: tiny-random`` builds :func:`build_tiny_engine` instead of loading weights:
    CPU only, the preset's own small geometry (``weights_dir``, ``device``, ``dtype`` and size settings are
    ignored); the parallelism and speed settings apply as for the 14B model.
    """
    ft = engine_settings(engine_config)
    flashhead = getattr(engine_config, "kind", "flashtalk") == "flashhead"
    _select_attention(getattr(ft, "attention", "auto"))
    tiny = getattr(ft, "preset", "14b") == TINY_PRESET
    mode = memory_mode(ft)  # settings errors before minutes of loading
    if getattr(ft, "fp8", False):
        _require_fp8_gemms("cpu" if tiny else engine_config.device)
    if tiny:
        engine = _build_tiny(engine_config, flashhead=flashhead)
    else:
        engine = _build_released(engine_config, mode, flashhead=flashhead)
    if ft.world_size != 1:
        parallelize_engine(engine, ft)
    _apply_speedups(engine, ft, mode)
    return engine


def engine_settings(engine_config: Any) -> Any:
    """The model's settings section: ``engine.flashhead`` for ``kind: flashhead``, else ``engine.flashtalk``."""
    return engine_config.flashhead if getattr(engine_config, "kind", "flashtalk") == "flashhead" else engine_config.flashtalk


def memory_mode(ft: Any) -> MemoryMode:
    """``engine.flashtalk.memory`` (``resident`` | ``offload``) and ``fp8_weights``; the older ``cpu_offload: true``
    means ``memory: offload``. Raises FlashTalkConfigError for a combination that cannot run."""
    memory = getattr(ft, "memory", "resident")
    if getattr(ft, "cpu_offload", False):
        log.warning("engine.flashtalk.cpu_offload is the old name of engine.flashtalk.memory: offload; using offload")
        memory = "offload"
    if memory not in ("resident", "offload"):
        raise FlashTalkConfigError(f"engine.flashtalk.memory must be resident or offload, got {memory!r}")
    mode = MemoryMode(offload=memory == "offload", fp8_weights=bool(getattr(ft, "fp8_weights", False)))
    if mode.offload and getattr(ft, "compile", False):
        raise FlashTalkConfigError(
            "engine.flashtalk.memory=offload swaps each block's weights in and out around its forward, which "
            "torch.compile would trace: set engine.flashtalk.compile=false (or memory=resident)"
        )
    return mode


def build_tiny_engine(
    cfg: FlashTalkConfig | None = None, *, seed: int = 0, drift: DriftThresholds | None = None, vae: str = "patch",
    flashhead: bool = False,
) -> FlashTalkEngine:
    """A :class:`~engine.flashtalk.FlashTalkEngine` on the tiny-random stack (CPU, fp32, no files); ``vae``:
    ``patch`` or ``wan`` (:func:`engine.tiny.tiny_vae`); ``flashhead``: a :class:`~engine.flashhead.FlashHeadEngine`
    on the FlashHead variant of the tiny DiT."""
    from engine.flashhead import FlashHeadEngine

    cfg = tiny_config(cfg)
    kind = FlashHeadEngine if flashhead else FlashTalkEngine
    parts = tiny_components(cfg, seed, vae=vae, **({"dit_config": TINY_FLASHHEAD_DIT} if flashhead else {}))
    engine = kind.from_components(parts.dit, parts.vae, parts.audio, parts.conditioning, cfg, drift=drift)
    engine.name = f"{'flashhead' if flashhead else 'flashtalk'}-tiny-random"
    log.info(
        "%s preset: %dx%d, %d frames per chunk (%d new), %d steps, seed %d, %s VAE, CPU fp32, "
        "no weights", engine.name, cfg.height, cfg.width, cfg.frame_num, cfg.frames_per_chunk, cfg.sampling_steps, seed, vae,
    )
    return engine


def parallelize_engine(engine: FlashTalkEngine, ft: Any) -> None:
    """Join the torchrun group and split the engine across it (every rank calls this with the same settings).

    The DiT (the transformer inside the tiny preset's wrapper) gets Ulysses x Ring sequence parallelism with
    ``ulysses_degree``/``ring_degree``/``sp_backend``; the VAE is split into row bands when ``parallel_vae`` is
    on and it is a ``WanVAE``. Raises FlashTalkConfigError naming the setting to change.
    """
    from engine.models.vae import WanVAE
    from engine.parallel.launch import parallelize

    vae = engine.models.vae if ft.parallel_vae and isinstance(engine.models.vae, WanVAE) else None
    try:
        parallelize(_transformer(engine.models.dit), ft.world_size, timeout_s=ft.nccl_timeout_s,
                    ulysses_degree=ft.ulysses_degree, ring_degree=ft.ring_degree, vae=vae,
                    sp_backend=getattr(ft, "sp_backend", "auto"))
    except ValueError as exc:
        raise FlashTalkConfigError(str(exc)) from exc


def _build_released(engine_config: Any, mode: MemoryMode, *, flashhead: bool = False) -> FlashTalkEngine:
    """The released model from ``engine.weights_dir`` (SoulX-FlashTalk-14B, or SoulX-FlashHead-1_3B with
    ``flashhead``) on ``engine.device`` (this rank's GPU under torchrun); with a memory mode or FP8 the DiT's blocks
    are loaded on the host and placed by :func:`_apply_speedups`."""
    from engine.flashhead import FlashHeadEngine

    ft = engine_settings(engine_config)
    if engine_config.weights_dir is None:
        folder = "models/SoulX-FlashHead-1_3B" if flashhead else "models/SoulX-FlashTalk-14B"
        raise FlashTalkConfigError(f"engine.weights_dir is not set (--set engine.weights_dir={folder})")
    cfg = FlashTalkConfig(**_settings(ft, _SAMPLING | _GEOMETRY), device=engine_config.device, dtype=ft.dtype)
    if ft.world_size != 1:
        _select_rank_device()  # before loading: every rank loads onto its own GPU
    drift = getattr(engine_config, "drift", None)
    on_host = not (mode.resident_bf16 and not getattr(ft, "fp8", False))  # placed block by block later
    kind = FlashHeadEngine if flashhead else FlashTalkEngine
    return kind.from_folder(Path(engine_config.weights_dir), cfg, drift=drift, dit_blocks_on_host=on_host)


def _build_tiny(engine_config: Any, *, flashhead: bool = False) -> FlashTalkEngine:
    """The tiny-random preset with the caller's sampler, colour and frame-rate settings (seed 0)."""
    ft = engine_settings(engine_config)
    device = (engine_config.device or "cpu").strip().lower()
    if device != "cpu" and device != "auto":
        log.warning("engine preset %s runs on the CPU; ignoring engine.device=%s", TINY_PRESET, device)
    cfg = FlashTalkConfig(**_settings(ft, _SAMPLING))  # the preset's geometry replaces the rest
    return build_tiny_engine(cfg, seed=0, drift=getattr(engine_config, "drift", None),
                             vae=getattr(ft, "tiny_vae", "patch"), flashhead=flashhead)


def _settings(ft: Any, fields: dict[str, str]) -> dict[str, Any]:
    """``FlashTalkConfig`` keyword arguments read from the ``engine.flashtalk`` settings named in ``fields``."""
    return {field: getattr(ft, setting) for field, setting in fields.items()}


def _transformer(dit: nn.Module) -> nn.Module:
    """The ``WanAudioTransformer`` itself: the tiny preset wraps it in :class:`~engine.tiny.TinyDenoiser`."""
    return getattr(dit, "transformer", dit)


def _apply_speedups(engine: FlashTalkEngine, ft: Any, mode: MemoryMode) -> None:
    """The memory mode and the speed levers, after sequence parallelism is installed (its collectives stay outside
    compiled graphs): FP8 block GEMMs (``fp8``), FP8 weight storage (``fp8_weights``) and block offload
    (``memory``), placed block by block (:func:`engine.placement.place_dit`); then compiled DiT blocks."""
    transformer = _transformer(engine.models.dit)
    fp8_gemms = bool(getattr(ft, "fp8", False))
    if fp8_gemms or not mode.resident_bf16:
        from engine.placement import place_dit

        place_dit(transformer, engine.device, mode, fp8_gemms=fp8_gemms)
    if ft.compile:
        from engine.ops.compile import compile_dit_blocks

        compile_dit_blocks(transformer, getattr(ft, "compile_mode", "default"))


def _require_fp8_gemms(device: str | None) -> None:
    """``engine.flashtalk.fp8`` on a GPU without FP8 tensor cores would emulate every GEMM in float32: refuse."""
    from engine.config import resolve_device
    from engine.ops.fp8 import Fp8UnsupportedError, require_fp8_gemms

    try:
        require_fp8_gemms(resolve_device(device)[0])
    except Fp8UnsupportedError as exc:
        raise FlashTalkConfigError(str(exc)) from exc


def _select_attention(name: str) -> None:
    """``engine.flashtalk.attention``: force one kernel of the facade (``auto`` keeps the probed choice)."""
    from engine.ops.attention import set_attention_backend

    try:
        set_attention_backend(None if name == "auto" else name)
    except RuntimeError as exc:  # e.g. flash asked for where flash-attn does not load: the reason names the extra
        raise FlashTalkConfigError(f"engine.flashtalk.attention={name}: {exc}") from exc


def _select_rank_device() -> None:
    """Under torchrun, make ``cuda`` mean this rank's GPU (LOCAL_RANK) so models load there, not all on GPU 0."""
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
